/*
 * fuzz_mc_meta.c: libFuzzer target for the meta protocol parsers. The first
 * byte picks the direction (bit 0: server replies) and the limits; the rest
 * is a byte stream played as the worker plays it. Checks: nothing outside
 * the input is read (ASan), results are self-consistent, a line fed as a
 * growing buffer parses as it does whole, the classic parser and this one
 * agree on which lines are meta, the line without q (and the line rebuilt
 * from its tokens, and the line tagged for a server) parses back as the
 * same request, and a base64 key
 * decodes within its bound.
 */
#include "walnut/proto_meta.h"

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

static bool in_line(wn_mc_span_t s, uint32_t line_len)
{
    return s.off <= line_len && s.len <= line_len - s.off;
}

/* Rebuilt from its tokens (what a server gets for a line over 2 KiB): the
 * same request without q, every other flag kept in order. */
static void check_canonical(const char *line, const wn_meta_request_t *r,
                            const wn_mc_limits_t *lim)
{
    char out[WN_META_CANONICAL_MAX];
    int n = wn_meta_compose_canonical(out, sizeof out, line, r);
    if (r->cmd == WN_META_MN) {
        CHECK(n == WN_EINVAL);
        return;
    }
    CHECK(n > 0 && out[n - 2] == '\r' && out[n - 1] == '\n');
    CHECK(wn_meta_compose_canonical(out, (size_t)n - 1, line, r) == WN_ETOOBIG);
    wn_meta_request_t back;
    CHECK(wn_meta_line_parse(lim, out, (uint32_t)n, &back) == n);
    CHECK(back.cmd == r->cmd && !back.quiet && back.base64 == r->base64);
    CHECK(back.nflags == r->nflags - (r->quiet ? 1 : 0));
    CHECK(back.data_len == r->data_len && back.mode == r->mode);
    CHECK(back.key.len == r->key.len && memcmp(out + back.key.off, line + r->key.off, r->key.len) == 0);
    /* an O too long for memcached is cut, and too long still */
    uint32_t olen =
        r->opaque.len < WN_META_CANONICAL_OPAQUE ? r->opaque.len : WN_META_CANONICAL_OPAQUE;
    CHECK(back.opaque.len == olen &&
          memcmp(out + back.opaque.off, line + r->opaque.off, olen) == 0);
    CHECK(back.opaque_too_long == r->opaque_too_long);
    uint32_t j = 0;
    for (uint32_t i = 0; i < r->nflags; i++) {
        if (r->quiet && r->flags[i].off == r->quiet_flag.off)
            continue;
        CHECK(out[back.flags[j].off] == line[r->flags[i].off]);
        j++;
    }
}

/* Tagged for a server (as sent and canonical, q kept or not): parses back
 * as the same command and key, with the tag as its opaque, the client's q
 * only when kept, one flag more when it had no O (unless over the limit). */
static void check_tagged(const char *line, const wn_meta_request_t *r, const wn_mc_limits_t *lim)
{
    static const char tag[] = "O7fffffff";
    for (int v = 0; v < 4; v++) {
        bool keep_quiet = v & 1, canonical = v & 2;
        size_t cap = (size_t)r->line_len + WN_META_CANONICAL_MAX + sizeof tag;
        char *out = malloc(cap);
        CHECK(out != NULL);
        int n =
            wn_meta_compose_tagged(out, cap, line, r, keep_quiet, canonical, tag, sizeof tag - 1);
        if (r->cmd == WN_META_MN || r->cmd == WN_META_ME) {
            CHECK(n == WN_EINVAL);
        } else if (n == WN_EFULL) {
            CHECK(r->opaque.len == 0);
        } else {
            CHECK(n > 0 && (size_t)n <= cap && out[n - 2] == '\r' && out[n - 1] == '\n');
            wn_meta_request_t back;
            CHECK(wn_meta_line_parse(lim, out, (uint32_t)n, &back) == n);
            CHECK(back.cmd == r->cmd && back.quiet == (r->quiet && keep_quiet));
            CHECK(back.key.len == r->key.len &&
                  memcmp(out + back.key.off, line + r->key.off, r->key.len) == 0);
            CHECK(back.opaque.len == sizeof tag - 1 &&
                  memcmp(out + back.opaque.off, tag, sizeof tag - 1) == 0);
            CHECK(back.data_len == r->data_len && back.base64 == r->base64);
            uint32_t want = r->nflags - (r->quiet && !keep_quiet) + (r->opaque.len == 0);
            CHECK(back.nflags == want);
            CHECK(wn_meta_compose_tagged(out, (size_t)n - 1, line, r, keep_quiet, canonical, tag,
                                         sizeof tag - 1) == WN_ETOOBIG);
        }
        free(out);
    }
}

static void check_forwarded(const char *line, const wn_meta_request_t *r, const wn_mc_limits_t *lim)
{
    CHECK(r->cmd > WN_META_NONE && r->cmd < WN_META_CMD_COUNT && r->err == WN_META_ERR_NONE);
    CHECK(in_line(r->key, r->line_len) && in_line(r->opaque, r->line_len));
    CHECK(r->nflags <= WN_META_FLAGS_MAX);
    /* an O over memcached's limit is forwarded only on mg and ma (memcached
     * runs them, then answers the error), and then marked */
    CHECK(r->opaque_too_long == (r->opaque.len > WN_META_OPAQUE_MAX));
    CHECK(!r->opaque_too_long || r->cmd == WN_META_MG || r->cmd == WN_META_MA);
    if (r->cmd == WN_META_MS)
        CHECK(r->bytes <= lim->max_value && r->data_len == r->bytes + 2);
    else
        CHECK(r->data_len == 0);
    if (r->cmd != WN_META_MN) {
        CHECK(r->key.len >= 1 && r->key.len <= WN_MC_KEY_MAX);
        CHECK(memchr(line + r->key.off, ' ', r->key.len) == NULL);
        uint8_t key[WN_MC_KEY_MAX];
        int n = wn_meta_key_decode(line, r, key, sizeof key);
        CHECK(n >= 1 && (uint32_t)n == r->key_decoded_len);
        if (r->base64)
            CHECK(n <= WN_META_KEY_DECODED_MAX);
    }
    for (uint32_t i = 0; i < r->nflags; i++)
        CHECK(r->flags[i].len >= 1 && r->flags[i].off + r->flags[i].len <= r->line_len);
    check_canonical(line, r, lim);
    check_tagged(line, r, lim);
    if (!r->quiet)
        return;
    char *out = malloc(r->line_len);
    CHECK(out != NULL);
    int n = wn_meta_compose_without_quiet(out, r->line_len, line, r);
    uint32_t shorter = r->line_len - 1 - r->quiet_flag.len;
    CHECK(n > 0 && ((uint32_t)n == shorter || (uint32_t)n == shorter + 1));
    wn_meta_request_t back;
    CHECK(wn_meta_line_parse(lim, out, (uint32_t)n, &back) == n);
    CHECK(back.cmd == r->cmd && !back.quiet && back.nflags == r->nflags - 1);
    CHECK(back.key.len == r->key.len && memcmp(out + back.key.off, line + r->key.off, r->key.len) == 0);
    CHECK(back.data_len == r->data_len);
    free(out);
}

/* The same line as a growing buffer (byte by byte when short, else in two
 * pieces) gives the same answer, and only once its "\n" is in. */
static void check_incremental(const char *line, size_t avail, const wn_mc_limits_t *lim, int rc,
                              const wn_meta_request_t *whole, size_t split)
{
    size_t end = whole->line_len ? whole->line_len : lim->max_line;
    wn_mc_req_parser_t p;
    wn_mc_req_parser_init(&p, lim);
    wn_meta_request_t r;
    if (end <= 200) {
        for (size_t n = 0; n < end; n++) {
            char *b = malloc(n ? n : 1);
            CHECK(b != NULL);
            memcpy(b, line, n);
            CHECK(wn_meta_request_parse(&p, b, n, &r) == WN_EAGAIN);
            free(b);
        }
    } else {
        CHECK(wn_meta_request_parse(&p, line, split % end, &r) == WN_EAGAIN);
    }
    CHECK(wn_meta_request_parse(&p, line, avail, &r) == rc);
    CHECK(memcmp(&r, whole, sizeof r) == 0);
}

static void play_requests(const char *in, size_t n, const wn_mc_limits_t *lim, uint8_t mode)
{
    wn_mc_req_parser_t p, classic;
    wn_mc_req_parser_init(&p, lim);
    size_t pos = 0;
    while (pos < n) {
        const char *line = in + pos;
        size_t avail = n - pos;
        wn_meta_request_t r;
        memset(&r, 0, sizeof r);
        int rc = wn_meta_request_parse(&p, line, avail, &r);
        if (rc == WN_EAGAIN)
            break;
        if (rc == WN_ETOOBIG && r.after == WN_MC_AFTER_CLOSE) {
            CHECK(r.err == WN_META_ERR_LINE_TOO_LONG && avail >= lim->max_line);
            break;
        }
        CHECK(r.line_len >= 1 && r.line_len <= avail && line[r.line_len - 1] == '\n');
        check_incremental(line, avail, lim, rc, &r, (size_t)mode * 13 + pos);
        /* the classic parser calls exactly these lines meta */
        wn_mc_req_parser_init(&classic, lim);
        wn_mc_request_t cr;
        int crc = wn_mc_request_parse(&classic, line, r.line_len, &cr);
        CHECK(crc != WN_EAGAIN);
        CHECK((cr.cmd == WN_MC_META) == (r.cmd != WN_META_NONE));
        if (rc > 0)
            check_forwarded(line, &r, lim);
        else if (rc != WN_EINVAL)
            CHECK(r.err != WN_META_ERR_NONE && wn_meta_err_text(r.err, NULL)[0] != '\0');
        pos += r.line_len;
        if (rc > 0 || r.after == WN_MC_AFTER_SWALLOW) {
            if (n - pos < r.data_len)
                break;
            pos += r.data_len;
        }
    }
}

static void play_replies(const char *in, size_t n, const wn_mc_limits_t *lim)
{
    wn_mc_rsp_parser_t p;
    wn_mc_rsp_parser_init(&p, lim);
    size_t pos = 0;
    while (pos < n) {
        wn_meta_response_t r;
        int rc = wn_meta_response_parse(&p, in + pos, n - pos, &r);
        if (rc < 0)
            break;
        CHECK((uint32_t)rc == r.line_len && r.line_len <= n - pos);
        CHECK((unsigned)r.type < WN_META_RSP_COUNT);
        CHECK(in_line(r.flags, r.line_len) && in_line(r.key, r.line_len) &&
              in_line(r.opaque, r.line_len));
        CHECK(r.data_len == (r.type == WN_META_RSP_VA ? r.bytes + 2 : 0));
        CHECK(r.bytes <= lim->max_value);
        for (int c = WN_META_MG; c < WN_META_CMD_COUNT; c++) {
            bool allowed = wn_meta_reply_allowed((wn_meta_cmd_t)c, r.type);
            if (wn_meta_quiet_drops((wn_meta_cmd_t)c, r.type))
                CHECK(allowed);
        }
        pos += r.line_len;
        if (n - pos < r.data_len)
            break;
        pos += r.data_len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    wn_mc_limits_t lim = {
        .max_line = (mode & 6) == 0 ? WN_MC_LINE_MAX : 64u << ((mode >> 1) & 3),
        .max_value = (mode & 8) ? 16 : WN_MC_VALUE_MAX,
        .max_retrieval_line = 0,
    };
    if (mode & 1)
        play_replies((const char *)data + 1, size - 1, &lim);
    else
        play_requests((const char *)data + 1, size - 1, &lim, mode);
    return 0;
}
