/*
 * fuzz_resp_request.c: libFuzzer target for the RESP request parser. The
 * first input byte picks the limits and a reveal schedule; the rest is a
 * client byte stream, played as the worker plays it (frame a line, take a
 * bulk payload by count). Checks: nothing outside the input is read (ASan;
 * every call sees an exactly-sized copy), every token is self-consistent,
 * a line decided on a prefix is decided the same on the whole, the stream
 * revealed in pieces gives the same tokens, and every complete request
 * composed back into multibulk frames to the same args.
 */
#include "walnut/proto_resp.h"

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

static char *copy(const char *s, size_t n)
{
    char *b = malloc(n == 0 ? 1 : n);
    CHECK(b != NULL);
    memcpy(b, s, n);
    return b;
}

/* The parser on an exact copy of s[0, n). */
static int next(wn_resp_req_parser_t *p, const char *s, size_t n, wn_resp_req_tok_t *tok)
{
    char *b = copy(s, n);
    int rc = wn_resp_request_next(p, b, n, tok);
    free(b);
    return rc;
}

/* The same, at the end of the input: libFuzzer's buffer ends exactly there,
 * so no copy is needed for ASan to see an over-read. */
static int next_at(wn_resp_req_parser_t *p, const char *s, size_t n, bool at_end,
                   wn_resp_req_tok_t *tok)
{
    return at_end ? wn_resp_request_next(p, s, n, tok) : next(p, s, n, tok);
}

static bool same_tok(const wn_resp_req_tok_t *a, const wn_resp_req_tok_t *b)
{
    return a->type == b->type && a->line_len == b->line_len && a->nargs == b->nargs &&
           a->arg == b->arg && a->last == b->last && a->bulk_len == b->bulk_len &&
           a->content_len == b->content_len;
}

static bool same_state(const wn_resp_req_parser_t *a, const wn_resp_req_parser_t *b)
{
    return a->scanned == b->scanned && a->nargs == b->nargs && a->args_left == b->args_left &&
           a->err == b->err && a->got == b->got && a->stuck == b->stuck && a->unauth == b->unauth;
}

/* A line of this token: where it ends and what it may hold. */
static void check_line(const wn_resp_limits_t *lim, bool unauth, const char *s,
                       const wn_resp_req_tok_t *t)
{
    uint32_t n = t->line_len;
    CHECK(n >= 1);
    CHECK(memchr(s, '\0', n) == NULL);
    bool resp = t->type == WN_RESP_REQ_ARRAY || t->type == WN_RESP_REQ_BULK ||
                (t->type == WN_RESP_REQ_EMPTY && s[0] == '*');
    if (resp) {
        CHECK(n >= 4 && n <= lim->max_line);
        CHECK(s[0] == (t->type == WN_RESP_REQ_BULK ? '$' : '*'));
        CHECK(s[n - 2] == '\r' && s[n - 1] == '\n');
        CHECK(memchr(s, '\r', n - 2) == NULL);
    } else {
        CHECK(n <= lim->max_inline + 1);
        CHECK(s[n - 1] == '\n' && memchr(s, '\n', n - 1) == NULL);
        CHECK(s[0] != '*');
    }
    switch (t->type) {
    case WN_RESP_REQ_ARRAY:
        CHECK(t->nargs >= 1 && t->nargs <= lim->max_args);
        CHECK(!unauth || t->nargs <= WN_RESP_UNAUTH_MAX_ARGS);
        break;
    case WN_RESP_REQ_BULK:
        CHECK(t->bulk_len <= lim->max_bulk && t->arg < t->nargs);
        CHECK(!unauth || t->bulk_len <= WN_RESP_UNAUTH_MAX_BULK);
        CHECK(t->last == (t->arg + 1 == t->nargs));
        break;
    case WN_RESP_REQ_INLINE:
        CHECK(t->nargs >= 1 && t->last);
        CHECK(t->content_len == n - 1 || (t->content_len == n - 2 && s[n - 2] == '\r'));
        break;
    default:
        break;
    }
}

/*
 * The same call, first on a prefix: undecided (EAGAIN), then on the whole
 * it must give the whole's answer and leave the same state; or decided on
 * the prefix, then the same answer. Short lines are grown byte by byte.
 */
static void check_prefixes(const wn_resp_req_parser_t *before, const char *s, size_t avail, int rc,
                           const wn_resp_req_tok_t *tok, const wn_resp_req_parser_t *after,
                           size_t split)
{
    size_t end = rc > 0 ? (size_t)rc : avail;
    size_t from = end <= 80 ? 0 : split % end, to = end <= 80 ? end : from + 1;
    wn_resp_req_parser_t p = *before;
    for (size_t k = from; k < to; k++) {
        wn_resp_req_tok_t t;
        int r = next(&p, s, k, &t);
        if (r != WN_EAGAIN) {
            CHECK(r == rc && same_state(&p, after));
            if (rc > 0)
                CHECK(same_tok(&t, tok));
            return;
        }
        if (end > 80)
            break;
    }
    wn_resp_req_tok_t t;
    int r = next(&p, s, avail, &t);
    CHECK(r == rc && same_state(&p, after));
    if (rc > 0)
        CHECK(same_tok(&t, tok));
}

/* Args of one request, as (offset, length) in `store`. */
typedef struct req_args {
    char *store;
    size_t used, cap;
    uint32_t off[64], len[64];
    uint32_t n;
    bool overflow;
} req_args_t;

static void args_add(req_args_t *a, const char *s, size_t len)
{
    if (a->n >= 64 || a->used + len > a->cap) {
        a->overflow = true;
        return;
    }
    memcpy(a->store + a->used, s, len);
    a->off[a->n] = (uint32_t)a->used;
    a->len[a->n++] = (uint32_t)len;
    a->used += len;
}

/* Compose the request as multibulk and frame it back. */
static void check_roundtrip(const req_args_t *a)
{
    if (a->overflow || a->n == 0)
        return;
    size_t size = wn_resp_cmd_head_size(a->len[0], a->n - 1);
    for (uint32_t i = 1; i < a->n; i++)
        size += wn_resp_bulk_size(a->len[i]);
    char *buf = malloc(size);
    CHECK(buf != NULL);
    int rc = wn_resp_compose_cmd_head(buf, size, a->store + a->off[0], a->len[0], a->n - 1);
    CHECK(rc > 0);
    size_t pos = (size_t)rc;
    for (uint32_t i = 1; i < a->n; i++) {
        rc = wn_resp_compose_bulk(buf + pos, size - pos, a->store + a->off[i], a->len[i]);
        CHECK(rc > 0);
        pos += (size_t)rc;
    }
    CHECK(pos == size);

    wn_resp_req_parser_t p;
    wn_resp_req_parser_init(&p, NULL);
    wn_resp_req_tok_t t;
    pos = 0;
    CHECK(wn_resp_request_next(&p, buf, size, &t) > 0 && t.type == WN_RESP_REQ_ARRAY);
    CHECK(t.nargs == a->n);
    pos += t.line_len;
    for (uint32_t i = 0; i < a->n; i++) {
        CHECK(wn_resp_request_next(&p, buf + pos, size - pos, &t) > 0);
        CHECK(t.type == WN_RESP_REQ_BULK && t.arg == i && t.bulk_len == a->len[i]);
        pos += t.line_len;
        CHECK(memcmp(buf + pos, a->store + a->off[i], a->len[i]) == 0);
        pos += a->len[i];
        CHECK(wn_resp_request_bulk_end(&p, buf[pos], buf[pos + 1]) == 0);
        pos += 2;
    }
    CHECK(pos == size && p.args_left == 0);
    free(buf);
}

static void inline_args(const char *line, const wn_resp_req_tok_t *t, req_args_t *a)
{
    uint32_t cursor = 0, count = 0;
    wn_resp_inline_arg_t arg;
    char *v = malloc(t->content_len + 1);
    CHECK(v != NULL);
    while (wn_resp_inline_next(line, t, &cursor, &arg)) {
        CHECK(arg.raw.len >= 1 && arg.raw.off + arg.raw.len <= t->content_len);
        CHECK(arg.len <= arg.raw.len);
        CHECK(wn_resp_inline_unescape(line, &arg, v) == arg.len);
        if (arg.direct)
            CHECK(arg.val.len == arg.len && arg.val.off >= arg.raw.off &&
                  memcmp(line + arg.val.off, v, arg.len) == 0);
        args_add(a, v, arg.len);
        count++;
    }
    CHECK(count == t->nargs);
    free(v);
}

/* FNV-1a over what the stream produced, to compare two plays. */
static void mix(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        *h = (*h ^ b[i]) * 1099511628211ull;
}

/*
 * Play the stream revealing `step` more bytes whenever the parser wants
 * more (0: all at once, with the per-line checks). Returns the hash of the
 * tokens, payloads and the final outcome.
 */
static uint64_t play(const char *in, size_t n, const wn_resp_limits_t *lim, size_t step,
                     uint8_t mode)
{
    wn_resp_req_parser_t p;
    wn_resp_req_parser_init(&p, lim);
    wn_resp_req_parser_set_unauth(&p, (mode & 0x88) == 0x88);
    uint64_t h = 14695981039346656037ull;
    size_t pos = 0, vis = step == 0 ? n : 0;
    req_args_t args = {.store = malloc(n + 1), .cap = n};
    CHECK(args.store != NULL);
    for (;;) {
        wn_resp_req_parser_t before = p;
        wn_resp_req_tok_t tok;
        int rc = next_at(&p, in + pos, vis - pos, vis == n, &tok);
        if (rc == WN_EAGAIN) {
            if (vis < n) {
                vis = WN_MIN(n, vis + step);
                continue;
            }
            break;
        }
        mix(&h, &rc, sizeof rc);
        if (rc < 0) {
            CHECK(rc == WN_EPROTO && p.err > 0 && p.err < WN_RESP_REQERR_COUNT);
            CHECK(p.args_left == 0 && p.scanned == 0);
            char e[WN_RESP_REQERR_MAX];
            CHECK(wn_resp_req_error(&p, e, sizeof e) > 2);
            if (step == 0)
                check_prefixes(&before, in + pos, vis - pos, rc, &tok, &p, pos + mode);
            break;
        }
        CHECK((uint32_t)rc == tok.line_len && (size_t)rc <= vis - pos);
        mix(&h, &tok.type, sizeof tok.type);
        mix(&h, &tok.nargs, sizeof tok.nargs);
        mix(&h, &tok.bulk_len, sizeof tok.bulk_len);
        if (step == 0) {
            check_line(&p.lim, p.unauth, in + pos, &tok);
            check_prefixes(&before, in + pos, vis - pos, rc, &tok, &p, pos * 7 + mode);
        }
        if (tok.type == WN_RESP_REQ_ARRAY) {
            args.n = 0;
            args.used = 0;
            args.overflow = false;
        } else if (tok.type == WN_RESP_REQ_INLINE) {
            args.n = 0;
            args.used = 0;
            args.overflow = false;
            if (step == 0) {
                inline_args(in + pos, &tok, &args);
                check_roundtrip(&args);
            }
        }
        pos += (size_t)rc;
        if (tok.type != WN_RESP_REQ_BULK)
            continue;
        uint64_t need = tok.bulk_len + 2;
        while (vis - pos < need && vis < n)
            vis = step == 0 ? n : WN_MIN(n, vis + step);
        if (vis - pos < need)
            break;
        mix(&h, in + pos, tok.bulk_len);
        args_add(&args, in + pos, tok.bulk_len);
        size_t end = pos + tok.bulk_len;
        if (wn_resp_request_bulk_end(&p, in[end], in[end + 1]) != 0) {
            CHECK(p.err == WN_RESP_REQERR_BULK_CRLF);
            mix(&h, "!", 1);
            break;
        }
        pos = end + 2;
        if (tok.last && step == 0)
            check_roundtrip(&args);
    }
    mix(&h, &pos, sizeof pos);
    free(args.store);
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    wn_resp_limits_t lim = {
        .max_args = (mode & 1) ? 3 : 0,
        .max_bulk = (mode & 2) ? 16 : 0,
        .max_inline = (mode & 4) ? 48 : 0,
        .max_line = (mode & 8) ? WN_RESP_LINE_MIN : 0,
    };
    uint64_t whole = play(in, n, &lim, 0, mode);
    size_t step = 1 + (mode >> 4) * 13; /* 1 .. 196 */
    CHECK(play(in, n, &lim, step, mode) == whole);
    return 0;
}
