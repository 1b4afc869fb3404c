/*
 * proto/resp_request.c: frames RESP2 requests from clients one line at a
 * time, multibulk and inline, accepting and rejecting what redis-server 7
 * does and naming the error it would send. Bulk payloads are the caller's:
 * it takes them by count. Pure: no I/O, no allocation, no logging; called on
 * the worker thread that owns the connection.
 */
#include "walnut/proto_resp.h"

#include "proto/resp_lex.h"
#include "walnut/core.h"

#include <string.h>

void wn_resp_req_parser_init(wn_resp_req_parser_t *p, const wn_resp_limits_t *lim)
{
    memset(p, 0, sizeof(*p));
    p->lim = wn_resp_limits_resolve(lim);
}

/* Forget the pending line: the next call starts a new one. */
static void line_done(wn_resp_req_parser_t *p)
{
    p->scanned = 0;
    p->stuck = false;
}

static int fail(wn_resp_req_parser_t *p, wn_resp_req_err_t err)
{
    line_done(p);
    p->args_left = 0;
    p->nargs = 0;
    p->err = (uint8_t)err;
    return WN_EPROTO;
}

/*
 * Find the "\r" of a "*N" or "$N" line and make sure the byte after it has
 * arrived. 0 with *cr; WN_EAGAIN; or WN_EPROTO for `too_big`. As
 * redis-server, the line may run to the inline bound (64 KiB) before it is
 * too big: a longer number in it is then merely not one it takes
 * ("invalid bulk length"); max_line, if larger, for the longest valid one.
 */
static int find_cr(wn_resp_req_parser_t *p, const char *buf, size_t n, wn_resp_req_err_t too_big,
                   uint32_t *cr)
{
    uint32_t most = WN_MAX(p->lim.max_inline, p->lim.max_line - 2);
    resp_line_scan_t s = {&p->scanned, &p->stuck, most + 1, '\r', false};
    switch (resp_line_find(&s, buf, n, cr)) {
    case RESP_LINE_FOUND:
        return (size_t)*cr + 1 < n ? 0 : WN_EAGAIN;
    case RESP_LINE_TOO_BIG:
        return fail(p, too_big);
    default:
        return WN_EAGAIN;
    }
}

/* No part of the pending line has been looked at yet. */
static bool fresh(const wn_resp_req_parser_t *p)
{
    return p->scanned == 0 && !p->stuck;
}

static void tok_init(wn_resp_req_tok_t *t, wn_resp_req_tok_type_t type, uint32_t line_len)
{
    memset(t, 0, sizeof(*t));
    t->type = type;
    t->line_len = line_len;
}

/*
 * The number of a "*N" or "$N" line (lead '*' or '$'): the quick read of a
 * canonical line, else the careful one. 0 with *v and *line_len; WN_EAGAIN;
 * or WN_EPROTO for `too_big` (no end within the limit), EXPECTED_DOLLAR (a
 * bulk line that is not one) or `bad` (not a number redis-server takes).
 */
WN_INLINE int number_line(wn_resp_req_parser_t *p, const char *buf, size_t n, char lead,
                          wn_resp_req_err_t too_big, wn_resp_req_err_t bad, int64_t *v,
                          uint32_t *line_len)
{
    uint64_t quick = 0;
    *line_len = fresh(p) ? resp_quick_line(buf, n, lead, &quick) : 0;
    *v = (int64_t)quick;
    if (*line_len != 0)
        return 0;
    uint32_t cr;
    int rc = find_cr(p, buf, n, too_big, &cr);
    if (rc != 0)
        return rc;
    /* redis-server looks at the first byte only once the line is complete */
    if (buf[0] != lead) {
        p->got = (uint8_t)buf[0];
        return fail(p, WN_RESP_REQERR_EXPECTED_DOLLAR);
    }
    if (buf[cr + 1] != '\n' || !resp_read_i64(buf + 1, cr - 1, v))
        return fail(p, bad);
    *line_len = cr + 2;
    return 0;
}

/* "*N\r\n": N >= 1 starts a request; N <= 0 is an empty one. */
static int multibulk_line(wn_resp_req_parser_t *p, const char *buf, size_t n,
                          wn_resp_req_tok_t *tok)
{
    int64_t count;
    uint32_t line_len;
    int rc = number_line(p, buf, n, '*', WN_RESP_REQERR_MBULK_TOO_BIG, WN_RESP_REQERR_MBULK_LEN,
                         &count, &line_len);
    if (rc != 0)
        return rc;
    /* redis-server's order: past INT_MAX, then the unauthenticated bound,
     * then walnut's own (max_args, lower than INT_MAX) */
    if (count > INT32_MAX)
        return fail(p, WN_RESP_REQERR_MBULK_LEN);
    if (p->unauth && count > (int64_t)WN_RESP_UNAUTH_MAX_ARGS)
        return fail(p, WN_RESP_REQERR_MBULK_UNAUTH);
    if (count > (int64_t)p->lim.max_args)
        return fail(p, WN_RESP_REQERR_MBULK_LEN);
    line_done(p);
    if (count <= 0) {
        tok_init(tok, WN_RESP_REQ_EMPTY, line_len);
        return (int)line_len;
    }
    p->nargs = p->args_left = (uint32_t)count;
    tok_init(tok, WN_RESP_REQ_ARRAY, line_len);
    tok->nargs = p->nargs;
    return (int)line_len;
}

/* "$len\r\n" inside a multibulk request. */
static int bulk_line(wn_resp_req_parser_t *p, const char *buf, size_t n, wn_resp_req_tok_t *tok)
{
    int64_t len;
    uint32_t line_len;
    int rc = number_line(p, buf, n, '$', WN_RESP_REQERR_BULK_TOO_BIG, WN_RESP_REQERR_BULK_LEN, &len,
                         &line_len);
    if (rc != 0)
        return rc;
    if (len < 0 || (uint64_t)len > p->lim.max_bulk)
        return fail(p, WN_RESP_REQERR_BULK_LEN);
    if (p->unauth && len > (int64_t)WN_RESP_UNAUTH_MAX_BULK)
        return fail(p, WN_RESP_REQERR_BULK_UNAUTH);
    line_done(p);
    tok_init(tok, WN_RESP_REQ_BULK, line_len);
    tok->nargs = p->nargs;
    tok->arg = p->nargs - p->args_left;
    tok->last = p->args_left == 1;
    tok->bulk_len = (uint64_t)len;
    if (--p->args_left == 0)
        p->nargs = 0;
    return (int)line_len;
}

/* Validates the args of an inline line and counts them; -1 on unbalanced quotes. */
static int64_t inline_count(const char *line, const wn_resp_req_tok_t *tok)
{
    uint32_t cursor = 0;
    int64_t count = 0;
    wn_resp_inline_arg_t arg;
    for (;;) {
        int rc = resp_inline_scan(line, tok->content_len, &cursor, &arg, NULL);
        if (rc <= 0)
            return rc < 0 ? -1 : count;
        count++;
    }
}

static int inline_line(wn_resp_req_parser_t *p, const char *buf, size_t n, wn_resp_req_tok_t *tok)
{
    resp_line_scan_t s = {&p->scanned, &p->stuck, p->lim.max_inline + 1, '\n', false};
    uint32_t lf;
    switch (resp_line_find(&s, buf, n, &lf)) {
    case RESP_LINE_FOUND:
        break;
    case RESP_LINE_TOO_BIG:
        return fail(p, WN_RESP_REQERR_INLINE_TOO_BIG);
    default:
        return WN_EAGAIN;
    }
    wn_resp_req_tok_t t;
    tok_init(&t, WN_RESP_REQ_INLINE, lf + 1);
    t.content_len = lf > 0 && buf[lf - 1] == '\r' ? lf - 1 : lf;
    t.last = true;
    int64_t count = inline_count(buf, &t);
    if (count < 0)
        return fail(p, WN_RESP_REQERR_UNBALANCED_QUOTES);
    line_done(p);
    if (count == 0) {
        tok_init(&t, WN_RESP_REQ_EMPTY, lf + 1);
    } else {
        t.nargs = (uint32_t)count; /* at most max_inline / 2 */
    }
    *tok = t;
    return (int)t.line_len;
}

int wn_resp_request_next(wn_resp_req_parser_t *p, const char *buf, size_t n, wn_resp_req_tok_t *tok)
{
    if (p->args_left > 0)
        return bulk_line(p, buf, n, tok);
    if (n == 0)
        return WN_EAGAIN;
    if (buf[0] == '*')
        return multibulk_line(p, buf, n, tok);
    return inline_line(p, buf, n, tok);
}

int wn_resp_request_bulk_end(wn_resp_req_parser_t *p, char a, char b)
{
    if (wn_resp_crlf_ok(a, b))
        return 0;
    return fail(p, WN_RESP_REQERR_BULK_CRLF);
}

static const char *const err_texts[] = {
#define WN_RESP_REQERR_TEXT(up, text) text,
    WN_RESP_REQERR_MAP(WN_RESP_REQERR_TEXT)
#undef WN_RESP_REQERR_TEXT
};

int wn_resp_req_error(const wn_resp_req_parser_t *p, char *dst, size_t cap)
{
    const char *text = p->err < WN_RESP_REQERR_COUNT ? err_texts[p->err] : "";
    size_t len = strlen(text);
    if (len == 0)
        return 0;
    if (len + 2 > cap)
        return WN_ETOOBIG;
    memcpy(dst, text, len);
    if (p->err == WN_RESP_REQERR_EXPECTED_DOLLAR) {
        /* the '?' placeholder: redis-server turns CR and LF into spaces */
        char c = (char)p->got;
        dst[len - 2] = c == '\r' || c == '\n' ? ' ' : c;
    }
    memcpy(dst + len, "\r\n", 2);
    return (int)(len + 2);
}
