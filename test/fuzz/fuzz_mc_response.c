/*
 * fuzz_mc_response.c: libFuzzer target for the memcached reply parser. The
 * first input byte picks the command being answered and the limits; the rest
 * is a backend byte stream, framed reply after reply as the worker does
 * (data blocks skipped by count). Checks: no out-of-bounds read (ASan),
 * self-consistent results, the same answers when bytes arrive one at a time.
 */
#include "walnut/proto.h"

#include "walnut/core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

#define MAX_EVENTS 4096

typedef struct event {
    int rc;
    wn_mc_response_t r;
} event_t;

static bool same(const wn_mc_response_t *a, const wn_mc_response_t *b)
{
    return a->type == b->type && a->line_len == b->line_len && a->data_len == b->data_len &&
           a->bytes == b->bytes && a->flags == b->flags && a->has_cas == b->has_cas &&
           a->cas == b->cas && a->number == b->number && a->key.off == b->key.off &&
           a->key.len == b->key.len && a->text.off == b->text.off && a->text.len == b->text.len &&
           a->done == b->done;
}

/*
 * Frame `in` revealing `step` bytes at a time (0: all at once), each call on
 * an exactly-sized copy. Records every result until an error or the end.
 */
static size_t frame(wn_mc_cmd_t cmd, const char *in, size_t n, const wn_mc_limits_t *lim,
                    size_t step, event_t *ev)
{
    wn_mc_rsp_parser_t p;
    wn_mc_rsp_parser_init(&p, lim);
    size_t pos = 0, avail = step ? WN_MIN(step, n) : n, count = 0;
    while (pos < n && count < MAX_EVENTS) {
        wn_mc_response_t r;
        size_t len = avail - pos;
        char *b = malloc(len ? len : 1);
        CHECK(b != NULL);
        memcpy(b, in + pos, len);
        int rc = wn_mc_response_parse(&p, cmd, b, len, &r);
        free(b);
        if (rc == WN_EAGAIN) {
            if (avail == n)
                break;
            avail = step ? WN_MIN(avail + step, n) : n;
            continue;
        }
        ev[count].rc = rc;
        if (rc < 0) {
            CHECK(rc == WN_EPROTO || rc == WN_ETOOBIG);
            count++;
            break;
        }
        /* a line ends at its first "\n", within the limit */
        CHECK((uint32_t)rc == r.line_len && r.line_len <= len && r.line_len <= lim->max_line);
        CHECK(in[pos + r.line_len - 1] == '\n');
        CHECK(memchr(in + pos, '\n', r.line_len - 1) == NULL);
        CHECK((unsigned)r.type < WN_MC_RSP_COUNT);
        CHECK(r.key.off + r.key.len <= r.line_len && r.text.off + r.text.len <= r.line_len);
        if (r.type == WN_MC_RSP_VALUE || r.type == WN_MC_RSP_META_VA) {
            CHECK(r.bytes <= lim->max_value && r.data_len == r.bytes + 2);
        } else {
            CHECK(r.data_len == 0);
        }
        if (r.type == WN_MC_RSP_VALUE) {
            CHECK(r.key.len >= 1 && r.key.len <= WN_MC_KEY_MAX);
            CHECK(memchr(in + pos + r.key.off, ' ', r.key.len) == NULL);
            CHECK(!r.done);
        }
        if (r.type == WN_MC_RSP_END || r.type == WN_MC_RSP_ERROR ||
            r.type == WN_MC_RSP_CLIENT_ERROR || r.type == WN_MC_RSP_SERVER_ERROR)
            CHECK(r.done);
        CHECK(cmd != WN_MC_QUIT);
        ev[count].r = r;
        count++;
        pos += r.line_len;
        if (r.data_len > 0) {
            while (avail - pos < r.data_len && avail < n)
                avail = step ? WN_MIN(avail + step, n) : n;
            if (avail - pos < r.data_len)
                break;
            const char *d = in + pos + r.data_len - 2;
            if (!wn_mc_data_trailer_ok(d[0], d[1]))
                break; /* the worker closes the backend */
            pos += r.data_len;
        }
    }
    return count;
}

static event_t ev_whole[MAX_EVENTS], ev_step[MAX_EVENTS];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    wn_mc_cmd_t cmd = (wn_mc_cmd_t)(mode % WN_MC_CMD_COUNT);
    wn_mc_limits_t lim = {
        .max_line = (mode & 0x40) ? 64 : WN_MC_LINE_MAX,
        .max_value = (mode & 0x80) ? 16 : WN_MC_VALUE_MAX,
    };
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    size_t a = frame(cmd, in, n, &lim, 0, ev_whole);
    size_t step = n <= 512 ? 1 : 1 + n / 64;
    size_t b = frame(cmd, in, n, &lim, step, ev_step);
    CHECK(a == b);
    for (size_t i = 0; i < a; i++) {
        CHECK(ev_whole[i].rc == ev_step[i].rc);
        if (ev_whole[i].rc > 0)
            CHECK(same(&ev_whole[i].r, &ev_step[i].r));
    }
    return 0;
}
