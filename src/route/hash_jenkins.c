/*
 * route/hash_jenkins.c: Bob Jenkins' lookup3 hashlittle() with initval 13, as
 * twemproxy runs it. Any thread; pure. twemproxy picks a word, half-word or
 * byte reader by key alignment; on a little-endian host all three give the
 * same value, so only the byte reader is kept: it never reads past the key
 * (twemproxy's word reader does, then masks) and needs no aligned loads.
 */
#include "route/hash.h"

#define JENKINS_INITVAL 13u

static uint32_t rot(uint32_t x, unsigned k)
{
    return (x << k) | (x >> (32 - k));
}

/* Little-endian word of up to 4 key bytes (n = 1..4); missing bytes are 0. */
static uint32_t word_le(const unsigned char *p, size_t n)
{
    uint32_t w = 0;

    for (size_t i = 0; i < n; i++)
        w |= (uint32_t)p[i] << (8 * i);
    return w;
}

/* lookup3's mixing rounds, laid out as in Jenkins' lookup3.c. */
/* clang-format off */
static void mix(uint32_t *a, uint32_t *b, uint32_t *c)
{
    *a -= *c;  *a ^= rot(*c, 4);   *c += *b;
    *b -= *a;  *b ^= rot(*a, 6);   *a += *c;
    *c -= *b;  *c ^= rot(*b, 8);   *b += *a;
    *a -= *c;  *a ^= rot(*c, 16);  *c += *b;
    *b -= *a;  *b ^= rot(*a, 19);  *a += *c;
    *c -= *b;  *c ^= rot(*b, 4);   *b += *a;
}

static uint32_t final(uint32_t a, uint32_t b, uint32_t c)
{
    c ^= b;  c -= rot(b, 14);
    a ^= c;  a -= rot(c, 11);
    b ^= a;  b -= rot(a, 25);
    c ^= b;  c -= rot(b, 16);
    a ^= c;  a -= rot(c, 4);
    b ^= a;  b -= rot(a, 14);
    c ^= b;  c -= rot(b, 24);
    return c;
}
/* clang-format on */

uint32_t wn_hash_jenkins(const char *key, size_t len)
{
    const unsigned char *k = (const unsigned char *)key;
    uint32_t a, b, c;

    a = b = c = UINT32_C(0xdeadbeef) + (uint32_t)len + JENKINS_INITVAL;
    if (len == 0)
        return c; /* no mixing at all for the empty key */

    /* Whole 12-byte blocks, always leaving 1..12 bytes for the last one. */
    for (; len > 12; len -= 12, k += 12) {
        a += word_le(k, 4);
        b += word_le(k + 4, 4);
        c += word_le(k + 8, 4);
        mix(&a, &b, &c);
    }

    /* The last block: 1..12 bytes, zero-padded, spread over a, b, c. */
    a += word_le(k, len < 4 ? len : 4);
    if (len > 4)
        b += word_le(k + 4, len < 8 ? len - 4 : 4);
    if (len > 8)
        c += word_le(k + 8, len - 8);
    return final(a, b, c);
}
