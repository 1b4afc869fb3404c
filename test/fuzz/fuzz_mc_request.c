/*
 * fuzz_mc_request.c: libFuzzer target for the memcached request parser.
 * The first input byte picks the limits; the rest is a client byte stream,
 * played as the worker plays it. Checks: nothing outside the input is read
 * (ASan), every result is self-consistent, a line fed byte by byte or split
 * in two parses exactly as it does whole, a retrieval head composed from
 * the parsed keys parses back to the same keys, a line rebuilt from its
 * tokens parses back as the same request, stats groups get framed replies,
 * a retrieval line streamed in pieces (mc_stream.c) asks for the same keys
 * and gets the same verdict as parsed whole.
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

static bool same(const wn_mc_request_t *a, const wn_mc_request_t *b)
{
    return a->cmd == b->cmd && a->meta == b->meta && a->noreply == b->noreply &&
           a->line_len == b->line_len && a->data_len == b->data_len && a->bytes == b->bytes &&
           a->flags == b->flags && a->exptime == b->exptime && a->cas == b->cas &&
           a->delta == b->delta && a->nkeys == b->nkeys && a->key.off == b->key.off &&
           a->key.len == b->key.len && a->keys.off == b->keys.off && a->keys.len == b->keys.len &&
           a->arg.off == b->arg.off && a->arg.len == b->arg.len && a->reply == b->reply &&
           a->after == b->after;
}

static void check_request(const char *line, size_t avail, const wn_mc_limits_t *lim, int rc,
                          const wn_mc_request_t *r)
{
    CHECK(rc == WN_EPROTO || rc == WN_ETOOBIG || rc > 0);
    CHECK((unsigned)r->cmd < WN_MC_CMD_COUNT);
    CHECK((unsigned)r->reply < WN_MC_REPLY_COUNT);
    uint32_t most = WN_MAX(lim->max_line, lim->max_retrieval_line);
    if (rc == WN_ETOOBIG && r->after == WN_MC_AFTER_CLOSE) {
        CHECK(r->line_len == 0 && r->reply == WN_MC_REPLY_LINE_TOO_LONG);
        CHECK(avail >= lim->max_line);
        CHECK(memchr(line, '\n', lim->max_line) == NULL);
        return;
    }
    /* a complete line: it ends at its first "\n", within the limit (a
     * retrieval line's may be larger) */
    CHECK(r->line_len >= 1 && r->line_len <= avail && r->line_len <= most);
    if (r->line_len > lim->max_line)
        CHECK(r->cmd == WN_MC_GET || r->cmd == WN_MC_GETS || r->cmd == WN_MC_GAT ||
              r->cmd == WN_MC_GATS || r->cmd == WN_MC_UNKNOWN);
    CHECK(line[r->line_len - 1] == '\n');
    CHECK(memchr(line, '\n', r->line_len - 1) == NULL);
    if (rc < 0) {
        CHECK(r->reply != WN_MC_REPLY_NONE || r->after == WN_MC_AFTER_CLOSE);
        if (r->reply == WN_MC_REPLY_TOO_LARGE) {
            CHECK(rc == WN_ETOOBIG && r->after == WN_MC_AFTER_SWALLOW);
            CHECK(r->bytes > lim->max_value && r->data_len == r->bytes + 2);
        }
        if (r->after == WN_MC_AFTER_SWALLOW) /* a rejected storage line: its block goes */
            CHECK(r->data_len >= 2 && r->data_len <= (uint32_t)INT32_MAX);
        return;
    }
    CHECK((uint32_t)rc == r->line_len);
    CHECK(r->reply == WN_MC_REPLY_NONE && r->cmd != WN_MC_UNKNOWN);
    bool data = wn_mc_cmd_is_storage(r->cmd) || (r->cmd == WN_MC_META && r->meta == 's');
    if (data)
        CHECK(r->bytes <= lim->max_value && r->data_len == r->bytes + 2);
    else
        CHECK(r->data_len == 0);
    if (wn_mc_cmd_is_retrieval(r->cmd))
        CHECK(r->nkeys >= 1);
    CHECK(r->arg.off + r->arg.len <= r->line_len);
    CHECK(r->keys.off + r->keys.len <= r->line_len);

    uint32_t cursor = 0, count = 0;
    wn_mc_span_t k;
    while (wn_mc_key_next(line, r, &cursor, &k)) {
        CHECK(k.len >= 1 && k.len <= WN_MC_KEY_MAX);
        CHECK(k.off >= r->keys.off && k.off + k.len <= r->keys.off + r->keys.len);
        CHECK(memchr(line + k.off, ' ', k.len) == NULL);
        CHECK(memchr(line + k.off, '\n', k.len) == NULL);
        CHECK(memchr(line + k.off, '\0', k.len) == NULL);
        if (count == 0)
            CHECK(k.off == r->key.off && k.len == r->key.len);
        count++;
    }
    CHECK(count == r->nkeys);
}

/* Compose a head for every key, parse it back, compare the keys. */
static void check_roundtrip(const char *line, const wn_mc_request_t *r)
{
    if (!wn_mc_cmd_is_retrieval(r->cmd))
        return;
    wn_mc_span_t *keys = malloc(r->nkeys * sizeof(*keys));
    CHECK(keys != NULL);
    uint32_t cursor = 0, i = 0;
    while (i < r->nkeys && wn_mc_key_next(line, r, &cursor, &keys[i]))
        i++;
    CHECK(i == r->nkeys);
    size_t size = wn_mc_retrieval_head_size(line, r, keys, NULL, r->nkeys);
    char *head = malloc(size);
    CHECK(head != NULL);
    CHECK(wn_mc_retrieval_head_compose(head, size - 1, line, r, keys, NULL, r->nkeys) == WN_ETOOBIG);
    int n = wn_mc_retrieval_head_compose(head, size, line, r, keys, NULL, r->nkeys);
    CHECK(n > 0 && (size_t)n == size);

    wn_mc_limits_t big = {(uint32_t)size, WN_MC_VALUE_MAX, 0};
    wn_mc_req_parser_t p;
    wn_mc_req_parser_init(&p, &big);
    wn_mc_request_t back;
    int rc = wn_mc_request_parse(&p, head, (size_t)n, &back);
    CHECK(rc == n && back.cmd == r->cmd && back.nkeys == r->nkeys && back.exptime == r->exptime);
    cursor = 0;
    wn_mc_span_t k;
    for (i = 0; i < r->nkeys; i++) {
        CHECK(wn_mc_key_next(head, &back, &cursor, &k));
        CHECK(k.len == keys[i].len && memcmp(head + k.off, line + keys[i].off, k.len) == 0);
    }
    free(head);
    free(keys);
}

/* A non-retrieval request rebuilt from its tokens (what a server gets for
 * a line over 2 KiB) parses back as the same request, without noreply; a
 * stats group's answer is a framed reply; a retrieval refused for a long
 * key names keys of the line. */
static void check_canonical(const char *line, int rc, const wn_mc_request_t *r)
{
    if (rc > 0 && r->cmd == WN_MC_STATS && r->arg.len > 0) {
        size_t len;
        const char *text = wn_mc_stats_args_reply(line + r->arg.off, r->arg.len, &len);
        CHECK(len >= 2 && text[len - 2] == '\r' && text[len - 1] == '\n');
    }
    if (rc < 0 && wn_mc_cmd_is_retrieval(r->cmd)) {
        uint32_t cursor = 0, count = 0;
        wn_mc_span_t k;
        while (wn_mc_key_next(line, r, &cursor, &k)) {
            CHECK(k.len >= 1 && k.len <= WN_MC_KEY_MAX && k.off + k.len <= r->line_len);
            count++;
        }
        CHECK(count == r->nkeys);
    }
    if (rc <= 0 || wn_mc_cmd_is_retrieval(r->cmd) || r->cmd == WN_MC_META ||
        r->cmd == WN_MC_STATS || r->cmd == WN_MC_QUIT)
        return;
    char out[WN_MC_CANONICAL_MAX];
    CHECK(wn_mc_compose_canonical(out, 1, line, r) == WN_ETOOBIG);
    int n = wn_mc_compose_canonical(out, sizeof out, line, r);
    CHECK(n > 0 && out[n - 2] == '\r' && out[n - 1] == '\n');
    wn_mc_limits_t lim = {WN_MC_LINE_MAX, (uint32_t)INT32_MAX - 2, 0};
    wn_mc_req_parser_t p;
    wn_mc_req_parser_init(&p, &lim);
    wn_mc_request_t back;
    CHECK(wn_mc_request_parse(&p, out, (size_t)n, &back) == n);
    CHECK(back.cmd == r->cmd && !back.noreply && back.flags == r->flags &&
          back.exptime == r->exptime && back.bytes == r->bytes && back.cas == r->cas &&
          back.delta == r->delta && back.nkeys == r->nkeys);
    if (r->nkeys == 1)
        CHECK(back.key.len == r->key.len &&
              memcmp(out + back.key.off, line + r->key.off, r->key.len) == 0);
}

/* The same line, fed as a growing buffer (byte by byte for short lines, in
 * two pieces otherwise), must give the same answer, and only at its end. */
static void check_incremental(const char *line, size_t avail, const wn_mc_limits_t *lim, int rc,
                              const wn_mc_request_t *whole, size_t split)
{
    size_t end = whole->line_len ? whole->line_len : lim->max_line;
    wn_mc_req_parser_t p;
    wn_mc_req_parser_init(&p, lim);
    wn_mc_request_t r;
    if (end <= 300) {
        for (size_t n = 0; n < end; n++) {
            char *b = malloc(n ? n : 1);
            CHECK(b != NULL);
            memcpy(b, line, n);
            CHECK(wn_mc_request_parse(&p, b, n, &r) == WN_EAGAIN);
            free(b);
        }
    } else {
        split %= end;
        CHECK(wn_mc_request_parse(&p, line, split, &r) == WN_EAGAIN);
    }
    int rc2 = wn_mc_request_parse(&p, line, avail, &r);
    CHECK(rc2 == rc && same(&r, whole));
}

/* A complete retrieval line, streamed in three pieces cut at a and b. */
static void check_streamed(const char *line, int rc, const wn_mc_request_t *whole, size_t a,
                           size_t b)
{
    size_t n = whole->line_len;
    wn_mc_stream_t st;
    int took = wn_mc_stream_begin(&st, line, n, UINT32_MAX);
    if (took < 0)
        return;
    CHECK((size_t)took <= n);
    size_t cuts[3] = {a % (n + 1), b % (n + 1), n};
    if (cuts[1] < cuts[0]) {
        size_t x = cuts[0];
        cuts[0] = cuts[1];
        cuts[1] = x;
    }
    size_t pos = (size_t)took;
    uint32_t cursor = 0, nkeys = 0;
    for (int c = 0; c < 3 && !st.ended; c++) {
        size_t avail = WN_MAX(cuts[c], pos);
        for (;;) {
            wn_mc_span_t span;
            uint32_t nk;
            int t = wn_mc_stream_take(&st, line + pos, avail - pos, &span, &nk);
            CHECK(t >= 0 && (size_t)t <= avail - pos);
            /* each key handed out is the whole parse's next one */
            size_t i = pos + span.off, end = pos + span.off + span.len;
            for (uint32_t k = 0; k < nk; k++) {
                while (i < end && line[i] == ' ')
                    i++;
                size_t s = i;
                while (i < end && line[i] != ' ')
                    i++;
                wn_mc_span_t w;
                CHECK(nkeys < whole->nkeys && wn_mc_key_next(line, whole, &cursor, &w));
                CHECK(w.off == s && w.len == i - s);
                nkeys++;
            }
            pos += (size_t)t;
            if (st.ended || t == 0)
                break;
        }
    }
    CHECK(st.ended && pos == n && nkeys == whole->nkeys);
    CHECK(st.verdict == (rc > 0 ? WN_MC_REPLY_NONE : whole->reply));
    /* and the same exptime: the servers are sent the number read */
    if (rc > 0 && (st.cmd == WN_MC_GAT || st.cmd == WN_MC_GATS))
        CHECK(st.exptime == whole->exptime);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    wn_mc_limits_t lim = {
        .max_line = (mode & 3) == 0 ? WN_MC_LINE_MAX : 64u << (mode & 3), /* 16K, 128..512 */
        .max_value = (mode & 4) ? 16 : WN_MC_VALUE_MAX,
        /* retrieval lines may be longer than other lines */
        .max_retrieval_line = (mode & 8) ? (64u << (mode & 3)) * 4 : 0,
    };
    wn_mc_req_parser_t p;
    wn_mc_req_parser_init(&p, &lim);
    size_t pos = 0;
    while (pos < n) {
        wn_mc_request_t r;
        const char *line = in + pos;
        size_t avail = n - pos;
        int rc = wn_mc_request_parse(&p, line, avail, &r);
        if (rc == WN_EAGAIN) {
            /* a retrieval line may wait past max_line, up to its own limit */
            uint32_t most = WN_MAX(lim.max_line, lim.max_retrieval_line);
            CHECK(memchr(line, '\n', WN_MIN(avail, lim.max_line)) == NULL);
            CHECK(avail < most);
            break;
        }
        check_request(line, avail, &lim, rc, &r);
        check_incremental(line, avail, &lim, rc, &r, (size_t)mode * 7 + pos);
        if (rc > 0)
            check_roundtrip(line, &r);
        if ((rc > 0 || rc == WN_EPROTO) && wn_mc_cmd_is_retrieval(r.cmd))
            check_streamed(line, rc, &r, (size_t)mode * 13 + pos, n - pos);
        if (rc != WN_ETOOBIG || r.after != WN_MC_AFTER_CLOSE)
            check_canonical(line, rc, &r);
        if (rc < 0 && r.after == WN_MC_AFTER_CLOSE)
            break;
        pos += r.line_len;
        if (rc > 0 || r.after == WN_MC_AFTER_SWALLOW) {
            if (n - pos < r.data_len)
                break;
            if (rc > 0 && r.data_len >= 2)
                (void)wn_mc_data_trailer_ok(in[pos + r.data_len - 2], in[pos + r.data_len - 1]);
            pos += r.data_len;
        }
    }
    return 0;
}
