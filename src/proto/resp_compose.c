/*
 * proto/resp_compose.c: what the proxy writes itself in RESP2: the heads of
 * the sub-commands a split sends, merged replies, and the error replies
 * redis-server would give (unknown command, wrong number of arguments).
 * Pure; caller memory only; dst untouched on error.
 */
#include "walnut/proto_resp.h"

#include "walnut/core.h"

#include <string.h>

/* Decimal digits of v. */
static size_t u64_digits(uint64_t v)
{
    size_t d = 1;
    while (v >= 10) {
        v /= 10;
        d++;
    }
    return d;
}

/* Write v's digits ending just before `end`; returns where they start. */
static char *u64_write(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return end;
}

static char *put(char *d, const void *s, size_t len)
{
    memcpy(d, s, len);
    return d + len;
}

static bool fits(size_t size, size_t cap)
{
    return size <= cap && size <= (size_t)INT32_MAX;
}

/* "<type><v>\r\n" with v unsigned, optionally negative. */
static int number_line(char *dst, size_t cap, char type, bool neg, uint64_t v)
{
    size_t size = 1 + neg + u64_digits(v) + 2;
    if (!fits(size, cap))
        return WN_ETOOBIG;
    dst[0] = type;
    if (neg)
        dst[1] = '-';
    u64_write(dst + size - 2, v);
    memcpy(dst + size - 2, "\r\n", 2);
    return (int)size;
}

size_t wn_resp_array_head_size(uint32_t n)
{
    return 1 + u64_digits(n) + 2;
}

int wn_resp_array_head(char *dst, size_t cap, uint32_t n)
{
    return number_line(dst, cap, '*', false, n);
}

size_t wn_resp_bulk_head_size(uint64_t len)
{
    return 1 + u64_digits(len) + 2;
}

int wn_resp_bulk_head(char *dst, size_t cap, uint64_t len)
{
    return number_line(dst, cap, '$', false, len);
}

size_t wn_resp_bulk_size(size_t len)
{
    return wn_resp_bulk_head_size(len) + len + 2;
}

int wn_resp_compose_bulk(char *dst, size_t cap, const char *s, size_t len)
{
    size_t size = wn_resp_bulk_size(len);
    if (len > (size_t)INT32_MAX || !fits(size, cap))
        return WN_ETOOBIG;
    int head = wn_resp_bulk_head(dst, cap, len);
    char *d = put(dst + head, s, len);
    put(d, "\r\n", 2);
    return (int)size;
}

/* |v| as unsigned, INT64_MIN included. */
static uint64_t magnitude(int64_t v)
{
    return v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
}

size_t wn_resp_int_size(int64_t v)
{
    return 1 + (v < 0) + u64_digits(magnitude(v)) + 2;
}

int wn_resp_compose_int(char *dst, size_t cap, int64_t v)
{
    return number_line(dst, cap, ':', v < 0, magnitude(v));
}

/* "<type><s>\r\n"; with `sanitize` CR and LF become spaces. */
static int text_line(char *dst, size_t cap, char type, const char *s, size_t len, bool sanitize)
{
    size_t size = 1 + len + 2;
    if (len > (size_t)INT32_MAX || !fits(size, cap))
        return WN_ETOOBIG;
    dst[0] = type;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        dst[1 + i] = sanitize && (c == '\r' || c == '\n') ? ' ' : c;
    }
    memcpy(dst + 1 + len, "\r\n", 2);
    return (int)size;
}

int wn_resp_compose_simple(char *dst, size_t cap, const char *s, size_t len)
{
    if (memchr(s, '\r', len) != NULL || memchr(s, '\n', len) != NULL)
        return WN_EINVAL;
    return text_line(dst, cap, '+', s, len, false);
}

int wn_resp_compose_error(char *dst, size_t cap, const char *s, size_t len)
{
    return text_line(dst, cap, '-', s, len, true);
}

size_t wn_resp_cmd_head_size(size_t name_len, uint32_t nargs)
{
    return 1 + u64_digits((uint64_t)nargs + 1) + 2 + wn_resp_bulk_size(name_len);
}

int wn_resp_compose_cmd_head(char *dst, size_t cap, const char *name, size_t name_len,
                             uint32_t nargs)
{
    size_t size = wn_resp_cmd_head_size(name_len, nargs);
    if (name_len > (size_t)INT32_MAX || !fits(size, cap))
        return WN_ETOOBIG;
    int head = number_line(dst, cap, '*', false, (uint64_t)nargs + 1);
    wn_resp_compose_bulk(dst + head, cap - (size_t)head, name, name_len);
    return (int)size;
}

/* ---- redis-server's error replies -------------------------------------- */

/* A bounded text builder: appends never pass `cap`. */
typedef struct text {
    char *d;
    size_t len, cap;
} text_t;

static void text_add(text_t *t, const char *s, size_t len)
{
    for (size_t i = 0; i < len && t->len < t->cap; i++)
        t->d[t->len++] = s[i];
}

/* Append at most `max` bytes of s as redis-server's "%.*s" shows them: a NUL
 * ends it, CR and LF become spaces. Returns the bytes appended. */
static size_t text_add_cstr(text_t *t, const char *s, size_t len, size_t max)
{
    size_t n = 0;
    while (n < len && n < max && s[n] != '\0') {
        char c = s[n] == '\r' || s[n] == '\n' ? ' ' : s[n];
        text_add(t, &c, 1);
        n++;
    }
    return n;
}

#define LIT(s) (s), sizeof(s) - 1

int wn_resp_compose_unknown_cmd(char *dst, size_t cap, const char *name, size_t name_len,
                                const wn_resp_str_t *args, size_t nargs)
{
    char buf[WN_RESP_UNKNOWN_CMD_MAX];
    text_t t = {buf, 0, sizeof(buf)};
    text_add(&t, LIT("-ERR unknown command '"));
    text_add_cstr(&t, name, name_len, 128);
    text_add(&t, LIT("', with args beginning with: "));
    size_t shown = 0; /* bytes of the args text so far */
    for (size_t i = 0; i < nargs && shown < WN_RESP_UNKNOWN_ARG_BYTES; i++) {
        text_add(&t, LIT("'"));
        shown += 3 + text_add_cstr(&t, args[i].s, args[i].len, WN_RESP_UNKNOWN_ARG_BYTES - shown);
        text_add(&t, LIT("' "));
    }
    text_add(&t, LIT("\r\n"));
    if (t.len > cap)
        return WN_ETOOBIG;
    memcpy(dst, buf, t.len);
    return (int)t.len;
}

int wn_resp_compose_arity_error(char *dst, size_t cap, const char *name, size_t name_len)
{
    char buf[WN_RESP_ARITY_ERR_MAX];
    text_t t = {buf, 0, sizeof(buf)};
    text_add(&t, LIT("-ERR wrong number of arguments for '"));
    for (size_t i = 0; i < name_len && i < 64; i++) {
        char c = name[i];
        c = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c == '\r' || c == '\n' ? ' ' : c;
        text_add(&t, &c, 1);
    }
    text_add(&t, LIT("' command\r\n"));
    if (t.len > cap)
        return WN_ETOOBIG;
    memcpy(dst, buf, t.len);
    return (int)t.len;
}
