/*
 * proto/mcbin_text.c: a binary request as the text (meta) command that has
 * its semantics, a text reply as the status, flags and CAS memcached's
 * binary protocol would answer, and walnut's `stats` text as binary STAT
 * packets. The tables in walnut/proto_mcbin.h say what maps to what. Pure:
 * no I/O, no allocation, no logging; any thread.
 */
#include "walnut/proto_mcbin.h"

#include "walnut/core.h"
#include "mc_lex.h"

#include <stdio.h>
#include <string.h>

/* ---- request lines ---------------------------------------------------- */

typedef struct out {
    char *p;
    size_t cap;
    size_t n;
    bool full;
} out_t;

static void put(out_t *o, const char *s, size_t len)
{
    if (o->full || o->cap - o->n < len) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->n, s, len);
    o->n += len;
}

static void put_str(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

/* " <letter><number>" */
static void put_num(out_t *o, char flag, uint64_t v)
{
    char tmp[32];
    int len = flag != 0 ? snprintf(tmp, sizeof(tmp), " %c%llu", flag, (unsigned long long)v)
                        : snprintf(tmp, sizeof(tmp), " %llu", (unsigned long long)v);
    put(o, tmp, (size_t)len);
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void put_b64(out_t *o, const uint8_t *s, size_t len)
{
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < len)
            v |= s[i + 2];
        char q[4] = {b64_alphabet[v >> 18 & 63], b64_alphabet[v >> 12 & 63],
                     i + 1 < len ? b64_alphabet[v >> 6 & 63] : '=',
                     i + 2 < len ? b64_alphabet[v & 63] : '='};
        put(o, q, 4);
    }
}

bool wn_mcbin_key_needs_b64(const uint8_t *key, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (key[i] == '\0' || key[i] == '\n' || key[i] == ' ')
            return true;
    }
    return false;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

/* memcached reads meta's T (and flush_all's delay) as a signed 32-bit
 * number; the binary protocol's exptime is unsigned. */
static uint64_t exptime_of(uint32_t v)
{
    return v > INT32_MAX ? INT32_MAX : v;
}

/* "<verb> <key>[ b]": the flags that must follow the key come after. For ms
 * the length token sits between the key and the flags, so b is put by the
 * caller there (b_after false). */
static bool put_head(out_t *o, const char *verb, const uint8_t *key, size_t len, bool b_after)
{
    bool b64 = wn_mcbin_key_needs_b64(key, len);
    if (b64 && len > WN_MCBIN_TEXT_B64_KEY_MAX)
        return false;
    put_str(o, verb);
    put(o, " ", 1);
    if (b64)
        put_b64(o, key, len);
    else
        put(o, (const char *)key, len);
    if (b64 && b_after)
        put(o, " b", 2);
    return true;
}

int wn_mcbin_text_request(char *dst, size_t cap, const uint8_t *pkt,
                          const wn_mcbin_request_t *req)
{
    const wn_mcbin_header_t *h = &req->h;
    const uint8_t *ext = pkt + req->extras_off;
    const uint8_t *key = pkt + req->key_off;
    uint64_t cas = h->cas;
    out_t o = {dst, cap, 0, false};
    uint8_t op = wn_mcbin_opcode_loud(h->opcode);
    bool ok = true;
    switch (op) {
    case WN_MCBIN_OP_GET:
    case WN_MCBIN_OP_GETK:
        ok = put_head(&o, "mg", key, h->keylen, true);
        put_str(&o, " v f c");
        break;
    case WN_MCBIN_OP_GAT:
    case WN_MCBIN_OP_GATK:
    case WN_MCBIN_OP_TOUCH:
        ok = put_head(&o, "mg", key, h->keylen, true);
        put_num(&o, 'T', exptime_of(rd32(ext)));
        put_str(&o, op == WN_MCBIN_OP_TOUCH ? " f c" : " v f c");
        break;
    case WN_MCBIN_OP_SET:
    case WN_MCBIN_OP_ADD:
    case WN_MCBIN_OP_REPLACE:
    case WN_MCBIN_OP_APPEND:
    case WN_MCBIN_OP_PREPEND: {
        bool b64 = wn_mcbin_key_needs_b64(key, h->keylen);
        ok = put_head(&o, "ms", key, h->keylen, false);
        put_num(&o, 0, req->value_len);
        if (b64)
            put_str(&o, " b");
        if (op == WN_MCBIN_OP_APPEND || op == WN_MCBIN_OP_PREPEND) {
            /* The item keeps its flags and exptime. */
            put_str(&o, op == WN_MCBIN_OP_APPEND ? " MA" : " MP");
        } else {
            put_num(&o, 'T', exptime_of(rd32(ext + 4)));
            put_num(&o, 'F', rd32(ext));
            if (cas == 0 && op == WN_MCBIN_OP_ADD)
                put_str(&o, " ME");
            else if (cas == 0 && op == WN_MCBIN_OP_REPLACE)
                put_str(&o, " MR");
        }
        if (cas != 0)
            put_num(&o, 'C', cas);
        put_str(&o, " c");
        break;
    }
    case WN_MCBIN_OP_DELETE:
        ok = put_head(&o, "md", key, h->keylen, true);
        if (cas != 0)
            put_num(&o, 'C', cas);
        break;
    case WN_MCBIN_OP_INCREMENT:
    case WN_MCBIN_OP_DECREMENT: {
        uint32_t exptime = rd32(ext + 16);
        ok = put_head(&o, "ma", key, h->keylen, true);
        if (exptime != 0xffffffffu) {
            /* Created with the initial value on a miss, as memcached does. */
            put_num(&o, 'N', exptime_of(exptime));
            put_num(&o, 'J', rd64(ext + 8));
        }
        put_num(&o, 'D', rd64(ext));
        if (op == WN_MCBIN_OP_DECREMENT)
            put_str(&o, " MD");
        if (cas != 0)
            put_num(&o, 'C', cas);
        put_str(&o, " v c");
        break;
    }
    case WN_MCBIN_OP_FLUSH:
        put_str(&o, "flush_all");
        if (h->extlen == 4)
            put_num(&o, 0, exptime_of(rd32(ext)));
        break;
    case WN_MCBIN_OP_VERSION:
        put_str(&o, "version");
        break;
    default:
        return WN_EINVAL;
    }
    if (!ok)
        return WN_EINVAL;
    put(&o, "\r\n", 2);
    return o.full ? WN_ETOOBIG : (int)o.n;
}

int wn_mcbin_text_unlink(char *dst, size_t cap, const uint8_t *key, size_t keylen)
{
    out_t o = {dst, cap, 0, false};
    if (keylen == 0 || keylen > WN_MCBIN_KEY_MAX || !put_head(&o, "md", key, keylen, true))
        return WN_EINVAL;
    put(&o, "\r\n", 2);
    return o.full ? WN_ETOOBIG : (int)o.n;
}

/* ---- reply lines -------------------------------------------------------- */

static bool code_is(const char *line, wn_mc_span_t t, const char *code)
{
    return mc_span_eq(line, t, code);
}

/* The f and c flags of a meta reply (others ignored). */
static bool read_flags(const char *line, uint32_t pos, uint32_t end, wn_mcbin_text_reply_t *rep)
{
    wn_mc_span_t t;
    while (mc_token_next(line, &pos, end, &t)) {
        uint64_t v;
        char f = line[t.off];
        if (f != 'f' && f != 'c')
            continue;
        if (!mc_read_digits(line + t.off + 1, t.len - 1, &v))
            return false;
        if (f == 'f') {
            if (v > UINT32_MAX)
                return false;
            rep->has_flags = true;
            rep->flags = (uint32_t)v;
        } else {
            rep->cas = v;
        }
    }
    return true;
}

static bool starts_with(const char *line, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(line, prefix, n) == 0;
}

/* An error line: what memcached's binary protocol says for the same case. */
static uint16_t error_status(const char *line, size_t len)
{
    if (starts_with(line, len, "CLIENT_ERROR cannot increment or decrement non-numeric value"))
        return WN_MCBIN_DELTA_BADVAL;
    if (starts_with(line, len, "SERVER_ERROR object too large for cache"))
        return WN_MCBIN_E2BIG;
    if (starts_with(line, len, "SERVER_ERROR out of memory"))
        return WN_MCBIN_ENOMEM;
    return WN_MCBIN_EINTERNAL;
}

static bool is_error_line(const char *line, size_t len)
{
    return starts_with(line, len, "CLIENT_ERROR") || starts_with(line, len, "SERVER_ERROR") ||
           (starts_with(line, len, "ERROR") && (len == 5 || line[5] == ' ' || line[5] == ':'));
}

int wn_mcbin_text_reply(uint8_t op, const char *line, size_t len, wn_mcbin_text_reply_t *rep)
{
    wn_mcbin_text_reply_t r;
    memset(&r, 0, sizeof(r));
    if (len > UINT32_MAX)
        return WN_EPROTO;
    uint32_t end = (uint32_t)len, pos = 0;
    if (is_error_line(line, len)) {
        r.status = error_status(line, len);
        *rep = r;
        return 0;
    }
    wn_mc_span_t code;
    if (!mc_token_next(line, &pos, end, &code))
        return WN_EPROTO;
    uint8_t loud = wn_mcbin_opcode_loud(op);
    bool hd = code_is(line, code, "HD"), va = code_is(line, code, "VA");
    bool ok = false;
    switch (loud) {
    case WN_MCBIN_OP_GET:
    case WN_MCBIN_OP_GETK:
    case WN_MCBIN_OP_GAT:
    case WN_MCBIN_OP_GATK:
    case WN_MCBIN_OP_TOUCH:
        if (code_is(line, code, "EN")) {
            r.status = WN_MCBIN_KEY_ENOENT;
            ok = true;
        } else {
            ok = loud == WN_MCBIN_OP_TOUCH ? hd : va;
        }
        break;
    case WN_MCBIN_OP_SET:
    case WN_MCBIN_OP_ADD:
    case WN_MCBIN_OP_REPLACE:
    case WN_MCBIN_OP_APPEND:
    case WN_MCBIN_OP_PREPEND:
        ok = true;
        if (code_is(line, code, "EX"))
            r.status = WN_MCBIN_KEY_EEXISTS;
        else if (code_is(line, code, "NF"))
            r.status = WN_MCBIN_KEY_ENOENT;
        else if (code_is(line, code, "NS"))
            r.status = loud == WN_MCBIN_OP_ADD       ? WN_MCBIN_KEY_EEXISTS
                       : loud == WN_MCBIN_OP_REPLACE ? WN_MCBIN_KEY_ENOENT
                                                     : WN_MCBIN_NOT_STORED;
        else
            ok = hd;
        break;
    case WN_MCBIN_OP_DELETE:
        ok = true;
        if (code_is(line, code, "EX"))
            r.status = WN_MCBIN_KEY_EEXISTS;
        else if (code_is(line, code, "NF"))
            r.status = WN_MCBIN_KEY_ENOENT;
        else
            ok = hd;
        break;
    case WN_MCBIN_OP_INCREMENT:
    case WN_MCBIN_OP_DECREMENT:
        ok = true;
        if (code_is(line, code, "EX"))
            r.status = WN_MCBIN_KEY_EEXISTS;
        else if (code_is(line, code, "NF"))
            r.status = WN_MCBIN_KEY_ENOENT;
        else if (code_is(line, code, "NS"))
            r.status = WN_MCBIN_NOT_STORED;
        else
            ok = va;
        break;
    case WN_MCBIN_OP_FLUSH:
        ok = code_is(line, code, "OK") && pos >= end;
        break;
    case WN_MCBIN_OP_VERSION:
        /* "VERSION 1.6.18": the rest of the line, as memcached sends it */
        ok = code_is(line, code, "VERSION");
        if (ok && pos < end) {
            r.text_off = pos + 1;
            r.text_len = end - pos - 1;
        }
        break;
    default:
        break;
    }
    if (!ok)
        return WN_EPROTO;
    if (va) {
        wn_mc_span_t t;
        uint64_t n;
        if (!mc_token_next(line, &pos, end, &t) || !mc_read_digits(line + t.off, t.len, &n) ||
            n > UINT32_MAX)
            return WN_EPROTO;
        r.value = true;
        r.value_len = (uint32_t)n;
    }
    if (loud != WN_MCBIN_OP_FLUSH && loud != WN_MCBIN_OP_VERSION &&
        !read_flags(line, pos, end, &r))
        return WN_EPROTO;
    if (r.status != WN_MCBIN_OK) {
        /* memcached's error packets carry neither flags nor a CAS. */
        r.has_flags = false;
        r.flags = 0;
        r.cas = 0;
    }
    *rep = r;
    return 0;
}

bool wn_mcbin_text_number(const char *s, size_t len, uint64_t *out)
{
    return mc_read_digits(s, len, out);
}

/* ---- stats ---------------------------------------------------------------- */

/* STAT lines as packets; END (or, with end_optional, the end of the text)
 * ends them, END with the empty packet. */
static int stat_lines(uint8_t *dst, size_t cap, uint32_t opaque, const char *text, size_t len,
                      bool end_optional)
{
    size_t pos = 0, n = 0;
    for (;;) {
        if (pos >= len && end_optional)
            return (int)n;
        const char *nl = pos < len ? memchr(text + pos, '\n', len - pos) : NULL;
        size_t end = nl != NULL ? (size_t)(nl - text) : len;
        size_t content = end;
        if (content > pos && text[content - 1] == '\r')
            content--;
        const char *line = text + pos;
        size_t llen = content - pos;
        if (llen == 3 && memcmp(line, "END", 3) == 0) {
            if (dst != NULL &&
                wn_mcbin_compose_header(dst + n, cap - n, WN_MCBIN_OP_STAT, WN_MCBIN_OK, 0, 0, 0,
                                        opaque, 0) < 0)
                return WN_ETOOBIG;
            return (int)(n + WN_MCBIN_HEADER_LEN);
        }
        if (nl == NULL || llen < 5 || memcmp(line, "STAT ", 5) != 0)
            return WN_EPROTO;
        const char *name = line + 5;
        const char *sp = memchr(name, ' ', llen - 5);
        size_t nlen = sp != NULL ? (size_t)(sp - name) : llen - 5;
        const char *value = sp != NULL ? sp + 1 : name + nlen;
        size_t vlen = (size_t)(line + llen - value);
        if (nlen == 0 || nlen > UINT16_MAX)
            return WN_EPROTO;
        size_t pkt = WN_MCBIN_HEADER_LEN + nlen + vlen;
        if (n + pkt > INT32_MAX - WN_MCBIN_HEADER_LEN)
            return WN_ETOOBIG;
        if (dst != NULL) {
            if (cap - n < pkt)
                return WN_ETOOBIG;
            wn_mcbin_compose_header(dst + n, cap - n, WN_MCBIN_OP_STAT, WN_MCBIN_OK, 0,
                                    (uint16_t)nlen, (uint32_t)vlen, opaque, 0);
            memcpy(dst + n + WN_MCBIN_HEADER_LEN, name, nlen);
            memcpy(dst + n + WN_MCBIN_HEADER_LEN + nlen, value, vlen);
        }
        n += pkt;
        pos = end + 1;
    }
}

int wn_mcbin_stats_compose(uint8_t *dst, size_t cap, uint32_t opaque, const char *text,
                           size_t len)
{
    return stat_lines(dst, cap, opaque, text, len, false);
}

static bool has_prefix(const char *s, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len >= n && memcmp(s, word, n) == 0;
}

/* The group a binary STAT key names, as memcached 1.6.18 reads the key: not
 * as the words of a text line but reset, settings and detail by their first
 * bytes (detail's dump, on and off likewise, after one space: "resetfoo"
 * resets, "detail dumpx" dumps), the others by the key's exact bytes
 * ("slabs " is no group). NULL: none (conns, extstore, cachedump are text
 * only). */
static const char *binary_group(const char *key, size_t len)
{
    static const char *const exact[] = {"items", "slabs", "sizes", "sizes_enable", "sizes_disable"};
    if (has_prefix(key, len, "reset"))
        return "reset";
    if (has_prefix(key, len, "settings"))
        return "settings";
    if (has_prefix(key, len, "detail")) {
        static const char *const sub[][2] = {
            {" dump", "detail dump"}, {" on", "detail on"}, {" off", "detail off"}};
        for (size_t i = 0; i < WN_ARRAY_SIZE(sub); i++)
            if (has_prefix(key + 6, len - 6, sub[i][0]))
                return sub[i][1];
        return NULL;
    }
    for (size_t i = 0; i < WN_ARRAY_SIZE(exact); i++)
        if (len == strlen(exact[i]) && memcmp(key, exact[i], len) == 0)
            return exact[i];
    return NULL;
}

int wn_mcbin_stats_group(uint8_t *dst, size_t cap, uint32_t opaque, const char *key, size_t len)
{
    const char *group = binary_group(key, len);
    if (group == NULL)
        return 0;
    size_t tlen;
    const char *text = wn_mc_stats_args_reply(group, strlen(group), &tlen);
    if (strcmp(group, "detail dump") == 0) {
        /* detail dump: memcached's binary sends the (empty) dump as one stat,
         * "detailed" = "END\r\n", then the empty packet */
        size_t need = 2 * WN_MCBIN_HEADER_LEN + 8 + 5;
        if (dst != NULL) {
            if (cap < need)
                return WN_ETOOBIG;
            wn_mcbin_compose_header(dst, cap, WN_MCBIN_OP_STAT, WN_MCBIN_OK, 0, 8, 5, opaque, 0);
            memcpy(dst + WN_MCBIN_HEADER_LEN, "detailedEND\r\n", 13);
            wn_mcbin_compose_header(dst + need - WN_MCBIN_HEADER_LEN, WN_MCBIN_HEADER_LEN,
                                    WN_MCBIN_OP_STAT, WN_MCBIN_OK, 0, 0, 0, opaque, 0);
        }
        return (int)need;
    }
    if (strcmp(text, "RESET\r\n") == 0 || strcmp(text, "OK\r\n") == 0)
        return wn_mcbin_stats_compose(dst, cap, opaque, "END\r\n", 5);
    if (strncmp(text, "STAT ", 5) != 0 && strcmp(text, "END\r\n") != 0)
        return 0; /* ERROR, CLIENT_ERROR: a group memcached does not have */
    return stat_lines(dst, cap, opaque, text, tlen, true);
}
