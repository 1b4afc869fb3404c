/*
 * proto/resp_lex.c: limits, line ends and numbers for the RESP parsers.
 * Pure: no I/O, no allocation, no logging; any thread.
 */
#include "proto/resp_lex.h"

#include "walnut/core.h"

#include <string.h>

static uint32_t clamp32(uint32_t v, uint32_t dflt, uint32_t lo, uint32_t hi)
{
    if (v == 0)
        v = dflt;
    return v < lo ? lo : v > hi ? hi : v;
}

wn_resp_limits_t wn_resp_limits_resolve(const wn_resp_limits_t *lim)
{
    wn_resp_limits_t l = {0};
    if (lim != NULL)
        l = *lim;
    /* Lines are returned as int and span offsets are 32-bit: keep every
     * line under INT32_MAX; bulk_len + 2 must not overflow. */
    l.max_args = clamp32(l.max_args, WN_RESP_MAX_ARGS, 1, INT32_MAX);
    if (l.max_bulk == 0)
        l.max_bulk = WN_RESP_MAX_BULK;
    if (l.max_bulk > (uint64_t)INT64_MAX - 2)
        l.max_bulk = (uint64_t)INT64_MAX - 2;
    l.max_inline = clamp32(l.max_inline, WN_RESP_MAX_INLINE, 1, INT32_MAX - 1);
    l.max_line = clamp32(l.max_line, WN_RESP_MAX_LINE, WN_RESP_LINE_MIN, INT32_MAX);
    l.max_text = clamp32(l.max_text, WN_RESP_MAX_TEXT, WN_RESP_LINE_MIN, INT32_MAX);
    l.max_elems = clamp32(l.max_elems, WN_RESP_MAX_ELEMS, 1, UINT32_MAX);
    l.max_depth = clamp32(l.max_depth, WN_RESP_MAX_DEPTH, 1, WN_RESP_MAX_DEPTH);
    return l;
}

resp_line_rc_t resp_line_find(const resp_line_scan_t *s, const char *buf, size_t n, uint32_t *at)
{
    size_t window = n < s->window ? n : s->window;
    size_t from = *s->scanned;
    if (from > window)
        from = 0; /* the caller shrank the buffer: start over rather than trust it */
    bool stuck = s->stuck != NULL && *s->stuck;
    /* Most lines are a few bytes ("$3", ":1", "+OK"): look at them byte by
     * byte before paying for memchr. Anything unusual goes the long way. */
    size_t quick = window - from < 32 ? window : from + 32;
    for (; !stuck && from < quick; from++) {
        char c = buf[from];
        if (c == s->stop) {
            *at = (uint32_t)from;
            *s->scanned = *at;
            return RESP_LINE_FOUND;
        }
        if (c == '\0' || c == '\n')
            break;
    }
    if (!stuck && window > from) {
        const char *base = buf + from;
        size_t len = window - from;
        const char *t = memchr(base, s->stop, len);
        size_t upto = t != NULL ? (size_t)(t - base) : len;
        if (s->no_lf && memchr(base, '\n', upto) != NULL)
            return RESP_LINE_BAD;
        if (s->stuck != NULL && memchr(base, '\0', upto) != NULL) {
            *s->stuck = stuck = true;
        } else if (t != NULL) {
            *at = (uint32_t)(t - buf);
            *s->scanned = *at; /* resume at the terminator if the byte after it is missing */
            return RESP_LINE_FOUND;
        }
    }
    if (!stuck)
        *s->scanned = (uint32_t)window;
    return n >= s->window ? RESP_LINE_TOO_BIG : RESP_LINE_AGAIN;
}

bool wn_resp_parse_int(const char *s, size_t len, int64_t *out)
{
    return resp_read_i64(s, len, out);
}
