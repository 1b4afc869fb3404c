/*
 * proto/mc_lex.c: line framing, tokens and numbers for the memcached ASCII
 * parsers. Pure: no I/O, no allocation, no logging; any thread.
 */
#include "proto/mc_lex.h"

#include "walnut/core.h"

#include <string.h>

wn_mc_limits_t mc_limits(const wn_mc_limits_t *lim)
{
    wn_mc_limits_t l = {WN_MC_LINE_MAX, WN_MC_VALUE_MAX, 0};
    if (lim != NULL)
        l = *lim;
    if (l.max_line < WN_MC_LINE_MIN)
        l.max_line = WN_MC_LINE_MIN;
    /* Line lengths are returned as int; bytes + 2 must fit in 31 bits. */
    if (l.max_line > (uint32_t)INT32_MAX)
        l.max_line = (uint32_t)INT32_MAX;
    if (l.max_value > (uint32_t)INT32_MAX - 2)
        l.max_value = (uint32_t)INT32_MAX - 2;
    if (l.max_retrieval_line < l.max_line)
        l.max_retrieval_line = l.max_line;
    if (l.max_retrieval_line > (uint32_t)INT32_MAX)
        l.max_retrieval_line = (uint32_t)INT32_MAX;
    return l;
}

int mc_line_find(uint32_t *scanned, const char *buf, size_t n, uint32_t max_line,
                 uint32_t *line_len, uint32_t *content_len)
{
    /* Only the first max_line bytes may hold the line end; never look past
     * them, so a client streaming junk costs at most max_line bytes. */
    size_t window = n < max_line ? n : max_line;
    size_t from = *scanned;
    if (from > window)
        from = 0; /* the caller shrank the buffer: start over rather than trust it */
    const char *nl = window > from ? memchr(buf + from, '\n', window - from) : NULL;
    if (nl == NULL) {
        if (n >= max_line)
            return WN_ETOOBIG;
        *scanned = (uint32_t)window;
        return WN_EAGAIN;
    }
    uint32_t end = (uint32_t)(nl - buf);
    *line_len = end + 1;
    *content_len = (end > 0 && buf[end - 1] == '\r') ? end - 1 : end;
    *scanned = 0;
    return 0;
}

bool mc_token_next(const char *buf, uint32_t *pos, uint32_t end, wn_mc_span_t *tok)
{
    uint32_t i = *pos;
    while (i < end && buf[i] == ' ')
        i++;
    if (i >= end) {
        *pos = end;
        return false;
    }
    uint32_t start = i;
    while (i < end && buf[i] != ' ')
        i++;
    tok->off = start;
    tok->len = i - start;
    *pos = i;
    return true;
}

bool mc_span_eq(const char *buf, wn_mc_span_t t, const char *s)
{
    size_t len = strlen(s);
    return t.len == len && memcmp(buf + t.off, s, len) == 0;
}

/* isspace() in the C locale. */
static bool c_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* wn_mc_num_t's phases */
enum { NUM_LEAD, NUM_FIRST, NUM_DIGITS, NUM_GOOD, NUM_BAD };

/* strtol/strtoul's scan in base 10: white space, a sign, digits, then the
 * token's end or white space (memcached's endptr test; what follows it is
 * not looked at here). Past 64 bits n->overflow is set, and n->mag means
 * nothing. */
void mc_num_feed(wn_mc_num_t *n, const char *s, size_t len)
{
    size_t i = 0;
    if (n->phase == NUM_LEAD) {
        while (i < len && c_space(s[i]))
            i++;
        if (i == len)
            return;
        if (s[i] == '+' || s[i] == '-')
            n->neg = s[i++] == '-';
        n->phase = NUM_FIRST;
    }
    if (n->phase == NUM_FIRST) {
        if (i == len)
            return;
        n->phase = s[i] >= '0' && s[i] <= '9' ? NUM_DIGITS : NUM_BAD;
    }
    if (n->phase == NUM_DIGITS) {
        uint64_t v = n->mag;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            unsigned d = (unsigned)(s[i] - '0');
            if (v > (UINT64_MAX - d) / 10)
                n->overflow = true;
            else
                v = v * 10 + d;
            i++;
        }
        n->mag = v;
        if (i < len)
            n->phase = c_space(s[i]) ? NUM_GOOD : NUM_BAD;
    }
}

/* At the token's end: digits were read, and nothing but white space after. */
static bool num_read(const wn_mc_num_t *n)
{
    return n->phase == NUM_DIGITS || n->phase == NUM_GOOD;
}

bool mc_read_u64(const char *s, size_t len, uint64_t *out)
{
    wn_mc_num_t n = {0};
    mc_num_feed(&n, s, len);
    if (!num_read(&n) || n.overflow)
        return false;
    uint64_t v = n.neg ? (uint64_t)0 - n.mag : n.mag;
    /* When the result looks negative as signed, memcached's safe_strtoul/l
     * refuse a '-' anywhere in the token (strchr), not only before the
     * digits: "9223372036854775808\t-" is no number to it. */
    if (v > (uint64_t)INT64_MAX && memchr(s, '-', len) != NULL)
        return false;
    *out = v;
    return true;
}

bool mc_read_u32(const char *s, size_t len, uint32_t *out)
{
    uint64_t v;
    if (!mc_read_u64(s, len, &v))
        return false;
    *out = (uint32_t)v; /* memcached stores an unsigned long into a uint32_t */
    return true;
}

bool mc_read_i32(const char *s, size_t len, int32_t *out)
{
    wn_mc_num_t n = {0};
    mc_num_feed(&n, s, len);
    return mc_num_i32(&n, out);
}

bool mc_num_i32(const wn_mc_num_t *n, int32_t *out)
{
    if (!num_read(n) || n->overflow)
        return false;
    bool neg = n->neg;
    uint64_t mag = n->mag;
    /* strtol's range on LP64 */
    if (!neg && mag > (uint64_t)INT64_MAX)
        return false;
    if (neg && mag > (uint64_t)INT64_MAX + 1)
        return false;
    /* memcached stores the long into an int32_t: keep the low 32 bits. */
    uint32_t low = (uint32_t)(neg ? (uint64_t)0 - mag : mag);
    *out = low <= (uint32_t)INT32_MAX ? (int32_t)low : -(int32_t)(UINT32_MAX - low) - 1;
    return true;
}

bool mc_read_digits(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}
