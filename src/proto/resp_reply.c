/*
 * proto/resp_reply.c: frames RESP2 replies from redis servers one line at a
 * time, tracking nested arrays so the proxy knows where each reply ends and
 * at which depth every element sits. Strict: what redis-server never sends
 * is a protocol error. Pure: no I/O, no allocation, no logging; called on
 * the worker thread that owns the server connection.
 */
#include "walnut/proto_resp.h"

#include "proto/resp_lex.h"
#include "walnut/core.h"

#include <string.h>

void wn_resp_rsp_parser_init(wn_resp_rsp_parser_t *p, const wn_resp_limits_t *lim)
{
    p->lim = wn_resp_limits_resolve(lim);
    p->scanned = 0;
    p->depth = 0;
    p->deep = 0;
    p->text = 0;
    p->text_len = 0;
}

static int fail(wn_resp_rsp_parser_t *p, int rc)
{
    p->scanned = 0;
    p->depth = 0;
    p->deep = 0;
    p->text = 0;
    p->text_len = 0;
    return rc;
}

/* Find the line's "\r\n". 0 with *line_len, WN_EAGAIN, or an error. */
static int find_line(wn_resp_rsp_parser_t *p, const char *buf, size_t n, uint32_t limit,
                     uint32_t *line_len)
{
    resp_line_scan_t s = {&p->scanned, NULL, limit - 1, '\r', true};
    uint32_t cr;
    switch (resp_line_find(&s, buf, n, &cr)) {
    case RESP_LINE_FOUND:
        if ((size_t)cr + 1 >= n)
            return WN_EAGAIN;
        if (buf[cr + 1] != '\n')
            return fail(p, WN_EPROTO);
        *line_len = cr + 2;
        return 0;
    case RESP_LINE_AGAIN:
        return WN_EAGAIN;
    case RESP_LINE_TOO_BIG:
        return WN_ETOOBIG; /* the caller decides: a piece, or fail() */
    default:
        return fail(p, WN_EPROTO); /* a bare '\n' */
    }
}

/* A length of '$' or '*': -1 (null) or 0..max. `quick`: already read. */
static int read_len(wn_resp_rsp_parser_t *p, const char *buf, uint32_t line_len, uint64_t max,
                    bool quick, int64_t *out)
{
    if (!quick && (!resp_read_i64(buf + 1, line_len - 3, out) || *out < -1))
        return fail(p, WN_EPROTO);
    if (*out > 0 && (uint64_t)*out > max)
        return fail(p, WN_ETOOBIG);
    return 0;
}

/* Parse the line into t; 1 when it opens an array with elements, 0 for a
 * complete item, or a negative error. `quick`: t->number is read already. */
static int parse_item(wn_resp_rsp_parser_t *p, const char *buf, uint32_t line_len, bool quick,
                      wn_resp_rsp_tok_t *t)
{
    int rc;
    switch (t->type) {
    case '+':
    case '-':
        t->text.off = 1;
        t->text.len = line_len - 3;
        return 0;
    case ':':
        return quick || resp_read_i64(buf + 1, line_len - 3, &t->number) ? 0 : fail(p, WN_EPROTO);
    case '$':
        rc = read_len(p, buf, line_len, p->lim.max_bulk, quick, &t->number);
        if (rc == 0 && t->number > 0)
            t->bulk_len = (uint64_t)t->number;
        return rc;
    default: /* '*' */
        rc = read_len(p, buf, line_len, p->lim.max_elems, quick, &t->number);
        if (rc != 0 || t->number <= 0)
            return rc;
        return 1;
    }
}

/*
 * The element whose line is t has started (opens: it is an array with
 * elements): its array has one fewer to come. Sets t's depth and done.
 */
static int finish(wn_resp_rsp_parser_t *p, wn_resp_rsp_tok_t *t, int opens, wn_resp_rsp_tok_t *tok)
{
    p->scanned = 0;
    if (p->deep > 0) {
        /* Inside arrays beyond the stack: their elements are counted
         * together, and each is reported one level below the stack. */
        t->depth = p->depth + 1;
        p->deep--;
        if (opens) {
            if (p->deep > UINT64_MAX - (uint64_t)t->number)
                return fail(p, WN_ETOOBIG); /* cannot be: 2^33 lines first */
            p->deep += (uint64_t)t->number;
        }
        if (p->deep > 0) {
            *tok = *t;
            return (int)t->line_len;
        }
        opens = 0; /* the deep arrays are all complete: close the stack's */
    } else if (p->depth > 0) {
        p->left[p->depth - 1]--;
    }
    if (opens && p->depth == p->lim.max_depth) {
        p->deep = (uint64_t)t->number; /* the stack is full: count from here */
    } else if (opens) {
        p->left[p->depth++] = (uint32_t)t->number;
    } else {
        /* complete: close every array that has nothing more to come */
        while (p->depth > 0 && p->left[p->depth - 1] == 0)
            p->depth--;
        t->done = p->depth == 0;
    }
    *tok = *t;
    return (int)t->line_len;
}

/* A piece of a '+' or '-' line too long to return whole: len bytes of it
 * (the type byte too when it is the first), no line end among them. */
static int text_piece(wn_resp_rsp_parser_t *p, char type, uint32_t len, wn_resp_rsp_tok_t *tok)
{
    bool cont = p->text != 0;
    uint64_t text = p->text_len + len - (cont ? 0 : 1);
    if (text > p->lim.max_bulk)
        return fail(p, WN_ETOOBIG);
    memset(tok, 0, sizeof(*tok));
    tok->type = type;
    tok->line_len = len;
    tok->depth = p->deep > 0 ? p->depth + 1 : p->depth;
    tok->text.off = cont ? 0 : 1;
    tok->text.len = cont ? len : len - 1;
    tok->partial = true;
    tok->cont = cont;
    p->text = type;
    p->text_len = text;
    p->scanned = 0;
    return (int)len;
}

/* More of a long '+' or '-' line: a piece, or its last one. */
static int text_more(wn_resp_rsp_parser_t *p, const char *buf, size_t n, wn_resp_rsp_tok_t *tok)
{
    uint32_t scanned = 0, cr;
    uint32_t window = n < INT32_MAX ? (uint32_t)n : INT32_MAX;
    resp_line_scan_t s = {&scanned, NULL, window, '\r', true};
    switch (resp_line_find(&s, buf, n, &cr)) {
    case RESP_LINE_FOUND:
        break;
    case RESP_LINE_TOO_BIG:
        return text_piece(p, p->text, window, tok); /* no line end in any of it */
    default: /* a bare '\n' (AGAIN cannot be: the window is all of buf) */
        return fail(p, WN_EPROTO);
    }
    if ((size_t)cr + 1 >= n) /* the '\r' is last: wait for its '\n' */
        return cr > 0 ? text_piece(p, p->text, cr, tok) : WN_EAGAIN;
    if (buf[cr + 1] != '\n')
        return fail(p, WN_EPROTO);
    if (p->text_len + cr > p->lim.max_bulk)
        return fail(p, WN_ETOOBIG);
    wn_resp_rsp_tok_t t;
    memset(&t, 0, sizeof(t));
    t.type = p->text;
    t.depth = p->depth;
    t.line_len = cr + 2;
    t.text.len = cr;
    t.cont = true;
    p->text = 0;
    p->text_len = 0;
    return finish(p, &t, 0, tok);
}

int wn_resp_reply_next(wn_resp_rsp_parser_t *p, const char *buf, size_t n, wn_resp_rsp_tok_t *tok)
{
    if (n == 0)
        return WN_EAGAIN;
    if (p->text != 0)
        return text_more(p, buf, n, tok);
    char type = buf[0];
    uint32_t limit;
    if (type == '+' || type == '-')
        limit = p->lim.max_text;
    else if (type == ':' || type == '$' || type == '*')
        limit = p->lim.max_line;
    else
        return fail(p, WN_EPROTO); /* RESP3 and anything else */

    uint64_t quick = 0;
    uint32_t line_len =
        p->scanned == 0 && type != '+' && type != '-' ? resp_quick_line(buf, n, type, &quick) : 0;
    if (line_len == 0) {
        int rc = find_line(p, buf, n, limit, &line_len);
        if (rc == WN_ETOOBIG && (type == '+' || type == '-'))
            return text_piece(p, type, limit - 1, tok); /* limit - 1 bytes, no line end */
        if (rc == WN_ETOOBIG)
            return fail(p, rc);
        if (rc != 0)
            return rc;
    }
    wn_resp_rsp_tok_t t;
    memset(&t, 0, sizeof(t));
    t.type = type;
    t.line_len = line_len;
    t.depth = p->depth;
    t.number = (int64_t)quick;
    int opens = parse_item(p, buf, line_len, quick != 0, &t);
    if (opens < 0)
        return opens;

    return finish(p, &t, opens, tok);
}
