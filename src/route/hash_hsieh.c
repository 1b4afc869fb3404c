/*
 * route/hash_hsieh.c: Paul Hsieh's SuperFastHash as twemproxy runs it. Any
 * thread; pure. Two departures from Hsieh's original are twemproxy's and kept:
 * the state starts at 0 rather than at the key length, and in the three-byte
 * tail the last byte is sign-extended.
 */
#include "route/hash.h"

/* Two key bytes, little-endian. twemproxy reads them as unsigned bytes on
 * x86-64 (its word read is i386-only). */
static uint32_t get16(const char *p)
{
    return wn_hash_ubyte(p, 0) | wn_hash_ubyte(p, 1) << 8;
}

uint32_t wn_hash_hsieh(const char *key, size_t len)
{
    uint32_t h = 0;
    size_t blocks = len / 4;

    if (len == 0)
        return 0;

    for (size_t i = 0; i < blocks; i++, key += 4) {
        h += get16(key);
        h = (h << 16) ^ (get16(key + 2) << 11) ^ h;
        h += h >> 11;
    }

    switch (len % 4) {
    case 3:
        h += get16(key);
        h ^= h << 16;
        h ^= wn_hash_sbyte(key, 2) << 18;
        h += h >> 11;
        break;
    case 2:
        h += get16(key);
        h ^= h << 11;
        h += h >> 17;
        break;
    case 1:
        h += wn_hash_ubyte(key, 0);
        h ^= h << 10;
        h += h >> 1;
        break;
    default:
        break;
    }

    /* Final avalanche. */
    h ^= h << 3;
    h += h >> 5;
    h ^= h << 4;
    h += h >> 17;
    h ^= h << 25;
    h += h >> 6;
    return h;
}
