/*
 * proto/resp_inline.c: splits inline requests ("GET key\r\n") into args as
 * redis-server's sdssplitargs does: quotes, escapes, and the unbalanced
 * quotes that make it a protocol error. Pure; any thread.
 */
#include "walnut/proto_resp.h"

#include "proto/resp_lex.h"

#include <string.h>

/* Builds one arg's value: counts it, checks whether it is a plain span of
 * the line, and writes it when asked. */
typedef struct arg_out {
    wn_resp_inline_arg_t *arg;
    char *out; /* NULL: count only */
} arg_out_t;

/* Append the byte c; `at` is where it was in the line, or UINT32_MAX when it
 * came from an escape (then the value is no longer a span of the line). */
static void put(arg_out_t *o, char c, uint32_t at)
{
    wn_resp_inline_arg_t *a = o->arg;
    if (at == UINT32_MAX)
        a->direct = false;
    else if (a->len == 0)
        a->val.off = at;
    else if (at != a->val.off + a->len)
        a->direct = false;
    if (o->out != NULL)
        o->out[a->len] = c;
    a->len++;
}

static int hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static char unescape(char c)
{
    switch (c) {
    case 'n':
        return '\n';
    case 'r':
        return '\r';
    case 't':
        return '\t';
    case 'b':
        return '\b';
    case 'a':
        return '\a';
    default:
        return c;
    }
}

/* A closing quote at i must be followed by white space or the line's end. */
static bool close_ok(const char *s, uint32_t end, uint32_t i)
{
    return i + 1 >= end || resp_space(s[i + 1]);
}

/* Inside "...": from *i (after the opening quote) through the closing one. */
static bool double_quoted(const char *s, uint32_t end, uint32_t *i, arg_out_t *o)
{
    while (*i < end) {
        uint32_t k = *i;
        char c = s[k];
        if (c == '\\' && k + 3 < end && s[k + 1] == 'x' && hex(s[k + 2]) >= 0 &&
            hex(s[k + 3]) >= 0) {
            put(o, (char)(hex(s[k + 2]) * 16 + hex(s[k + 3])), UINT32_MAX);
            *i = k + 4;
        } else if (c == '\\' && k + 1 < end) {
            put(o, unescape(s[k + 1]), UINT32_MAX);
            *i = k + 2;
        } else if (c == '"') {
            *i = k + 1;
            return close_ok(s, end, k);
        } else {
            put(o, c, k);
            *i = k + 1;
        }
    }
    return false; /* no closing quote */
}

/* Inside '...': only \' is an escape. */
static bool single_quoted(const char *s, uint32_t end, uint32_t *i, arg_out_t *o)
{
    while (*i < end) {
        uint32_t k = *i;
        char c = s[k];
        if (c == '\\' && k + 1 < end && s[k + 1] == '\'') {
            put(o, '\'', UINT32_MAX);
            *i = k + 2;
        } else if (c == '\'') {
            *i = k + 1;
            return close_ok(s, end, k);
        } else {
            put(o, c, k);
            *i = k + 1;
        }
    }
    return false;
}

int resp_inline_scan(const char *line, uint32_t end, uint32_t *cursor, wn_resp_inline_arg_t *arg,
                     char *out)
{
    uint32_t i = *cursor;
    while (i < end && resp_space(line[i]))
        i++;
    if (i >= end) {
        *cursor = end;
        return 0;
    }
    memset(arg, 0, sizeof(*arg));
    arg->direct = true;
    arg->raw.off = i;
    arg->val.off = i;
    arg_out_t o = {arg, out};
    /* An unquoted run ends at space, \t, \r, \n (not at \v or \f); a quote
     * inside it opens a quoted part of the same arg, after which it ends. */
    bool ok = true;
    while (i < end) {
        char c = line[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            break;
        i++;
        if (c == '"' || c == '\'') {
            if (arg->len == 0)
                arg->val.off = i; /* a value that is the whole quoted part is a span */
            ok = c == '"' ? double_quoted(line, end, &i, &o) : single_quoted(line, end, &i, &o);
            break;
        }
        put(&o, c, i - 1);
    }
    if (!ok)
        return -1;
    arg->raw.len = i - arg->raw.off;
    if (!arg->direct)
        arg->val.len = 0;
    else
        arg->val.len = arg->len;
    *cursor = i;
    return 1;
}

bool wn_resp_inline_next(const char *line, const wn_resp_req_tok_t *tok, uint32_t *cursor,
                         wn_resp_inline_arg_t *arg)
{
    if (tok->type != WN_RESP_REQ_INLINE)
        return false;
    return resp_inline_scan(line, tok->content_len, cursor, arg, NULL) > 0;
}

size_t wn_resp_inline_unescape(const char *line, const wn_resp_inline_arg_t *arg, char *dst)
{
    uint32_t cursor = arg->raw.off;
    wn_resp_inline_arg_t again;
    (void)resp_inline_scan(line, arg->raw.off + arg->raw.len, &cursor, &again, dst);
    return again.len;
}
