/*
 * proto/resp_lex.h: the lexical pieces shared by the RESP request and reply
 * parsers: resolving limits, finding a line's end resumably, and reading
 * numbers as strictly as redis-server does. Module-private; pure.
 */
#ifndef WALNUT_PROTO_RESP_LEX_H
#define WALNUT_PROTO_RESP_LEX_H

#include "walnut/proto_resp.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Where a line's terminator is. A line is searched from *scanned for `stop`
 * ('\r' for RESP lines, '\n' for inline lines), within the first `window`
 * bytes only (the limit); a NUL before it hides it and so does, when
 * no_lf is set, a '\n' (reported as RESP_LINE_BAD).
 */
typedef enum resp_line_rc {
    RESP_LINE_FOUND,   /* *at: the terminator's index */
    RESP_LINE_AGAIN,   /* not yet: more bytes may bring it */
    RESP_LINE_TOO_BIG, /* `window` bytes are here and hold no terminator */
    RESP_LINE_BAD,     /* no_lf: a '\n' came before any '\r' */
} resp_line_rc_t;

typedef struct resp_line_scan {
    uint32_t *scanned; /* resumable search position (parser state) */
    bool *stuck;       /* NULL: NULs are ordinary bytes; else set when one hides the end */
    uint32_t window;   /* the terminator must be at an index < window */
    char stop;
    bool no_lf;
} resp_line_scan_t;

resp_line_rc_t resp_line_find(const resp_line_scan_t *s, const char *buf, size_t n, uint32_t *at);

/*
 * The common line, whole in buf: `lead`, 1 to 18 digits without a leading
 * zero, "\r\n". Its length with *v, or 0 for anything else ("$0", a sign,
 * a long or cut line, a NUL...), which the careful path (resp_line_find,
 * resp_read_i64) takes and judges; both read such a line the same. For a
 * fresh line only: one whose search has not begun.
 */
static inline uint32_t resp_quick_line(const char *buf, size_t n, char lead, uint64_t *v)
{
    if (n < 4 || buf[0] != lead || buf[1] < '1' || buf[1] > '9')
        return 0;
    size_t end = n < 19 ? n : 19; /* digits at [1, 19): at most 18 */
    uint64_t x = (uint64_t)(buf[1] - '0');
    size_t i = 2;
    while (i < end && buf[i] >= '0' && buf[i] <= '9')
        x = x * 10 + (uint64_t)(buf[i++] - '0');
    if (i + 1 >= n || buf[i] != '\r' || buf[i + 1] != '\n')
        return 0;
    *v = x;
    return (uint32_t)i + 2;
}

/* redis-server's string2ll over s[0, len): an optional '-', then "0" or a
 * digit string without a leading zero, within int64_t; "-0" is refused. */
static inline bool resp_read_i64(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > 20)
        return false;
    size_t i = 0;
    bool neg = s[0] == '-';
    if (neg && ++i == len)
        return false;
    if (s[i] == '0') {
        if (neg || len != 1)
            return false; /* "-0", "01" */
        *out = 0;
        return true;
    }
    uint64_t v = 0;
    for (; i < len; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    uint64_t max = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    if (v > max)
        return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

/*
 * The next inline arg of line[0, end) from *cursor: 1 with *arg (and, when
 * out is not NULL, its value written there), 0 when no arg is left, -1 on
 * unbalanced quotes. See wn_resp_inline_next for the rules.
 */
int resp_inline_scan(const char *line, uint32_t end, uint32_t *cursor, wn_resp_inline_arg_t *arg,
                     char *out);

/* C isspace() in the "C" locale. */
static inline bool resp_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

#endif
