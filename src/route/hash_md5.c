/*
 * route/hash_md5.c: wn_md5() over libmd, and the md5 key hash built on it
 * (ketama hashes server names with wn_md5 too). Any thread; the MD5 context
 * lives on the caller's stack.
 */
#include "walnut/route.h"

#include <md5.h>

#include "route/hash.h"

void wn_md5(const void *data, size_t len, unsigned char digest[16])
{
    MD5_CTX ctx;

    MD5Init(&ctx);
    MD5Update(&ctx, data, len);
    MD5Final(digest, &ctx);
}

/* The first four digest bytes read little-endian, whatever the host order. */
uint32_t wn_hash_md5(const char *key, size_t len)
{
    unsigned char d[16];

    wn_md5(key, len, d);
    return (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
}
