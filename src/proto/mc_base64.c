/*
 * proto/mc_base64.c: base64 decoding of meta keys (the b flag), accepting
 * exactly what memcached 1.6.18 accepts so that every spelling it takes for
 * a key routes like that key. Pure: no I/O, no allocation; any thread.
 */
#include "walnut/proto_meta.h"

#include "walnut/core.h"

/* The 6-bit value of an alphabet byte ('=' counts as 0), or -1 for a byte
 * memcached skips. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    if (c == '=')
        return 0;
    return -1;
}

/* Walk the input group by group, writing the bytes that fit in cap (out
 * may be NULL with cap 0). Returns the decoded length or WN_EPROTO. */
static int decode(const char *src, size_t len, uint8_t *out, size_t cap)
{
    size_t count = 0;
    for (size_t i = 0; i < len; i++)
        count += b64_value((unsigned char)src[i]) >= 0;
    if (count == 0 || count % 4 != 0)
        return WN_EPROTO;

    uint32_t group = 0;
    unsigned have = 0, pad = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)src[i]);
        if (v < 0)
            continue;
        pad += src[i] == '=';
        group = group << 6 | (uint32_t)v;
        if (++have < 4)
            continue;
        for (unsigned j = 0; j < 3; j++, o++) {
            if (o < cap)
                out[o] = (uint8_t)(group >> (16 - 8 * j));
        }
        have = 0;
        group = 0;
        if (pad > 2)
            return WN_EPROTO;
        if (pad > 0)
            return (int)(o - pad); /* memcached stops after the first padded group */
    }
    return (int)o;
}

int wn_meta_base64_decode(const char *src, size_t len, uint8_t *dst, size_t cap)
{
    if (len > (size_t)INT32_MAX)
        return WN_ETOOBIG;
    int n = decode(src, len, NULL, 0);
    if (n < 0 || dst == NULL)
        return n;
    if ((size_t)n > cap)
        return WN_ETOOBIG;
    return decode(src, len, dst, cap);
}
