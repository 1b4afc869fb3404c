/*
 * route/hash_murmur.c: MurmurHash2 (32-bit) as twemproxy runs it. Any thread;
 * pure. twemproxy has no fixed seed: it uses 0xdeadbeef times the key length,
 * so the initial state is (0xdeadbeef * len) ^ len. Key words are read
 * little-endian byte by byte, which is what x86-64's word loads gave it.
 */
#include "route/hash.h"

#define MURMUR_M UINT32_C(0x5bd1e995)
#define MURMUR_R 24

uint32_t wn_hash_murmur(const char *key, size_t len)
{
    uint32_t len32 = (uint32_t)len;
    uint32_t h = (UINT32_C(0xdeadbeef) * len32) ^ len32;
    size_t i = 0;

    for (; len - i >= 4; i += 4) {
        uint32_t k = wn_hash_ubyte(key, i) | wn_hash_ubyte(key, i + 1) << 8 |
                     wn_hash_ubyte(key, i + 2) << 16 | wn_hash_ubyte(key, i + 3) << 24;
        k *= MURMUR_M;
        k ^= k >> MURMUR_R;
        k *= MURMUR_M;
        h *= MURMUR_M;
        h ^= k;
    }

    switch (len - i) {
    case 3:
        h ^= wn_hash_ubyte(key, i + 2) << 16;
        /* fall through */
    case 2:
        h ^= wn_hash_ubyte(key, i + 1) << 8;
        /* fall through */
    case 1:
        h ^= wn_hash_ubyte(key, i);
        h *= MURMUR_M;
        break;
    default:
        break;
    }

    h ^= h >> 13;
    h *= MURMUR_M;
    h ^= h >> 15;
    return h;
}
