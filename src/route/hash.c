/*
 * route/hash.c: wn_hash(), the dispatch from a configured wn_hash_t to one of
 * the twelve key hashes, plus one_at_a_time. Any thread; pure and allocation
 * free. The other hashes live in hash_<family>.c.
 */
#include "walnut/route.h"

#include "route/hash.h"

uint32_t wn_hash(wn_hash_t h, const char *key, size_t len)
{
    switch (h) {
    case WN_HASH_ONE_AT_A_TIME:
        return wn_hash_one_at_a_time(key, len);
    case WN_HASH_MD5:
        return wn_hash_md5(key, len);
    case WN_HASH_CRC16:
        return wn_hash_crc16(key, len);
    case WN_HASH_CRC32:
        return wn_hash_crc32(key, len);
    case WN_HASH_CRC32A:
        return wn_hash_crc32a(key, len);
    case WN_HASH_FNV1_64:
        return wn_hash_fnv1_64(key, len);
    case WN_HASH_FNV1A_64:
        return wn_hash_fnv1a_64(key, len);
    case WN_HASH_FNV1_32:
        return wn_hash_fnv1_32(key, len);
    case WN_HASH_FNV1A_32:
        return wn_hash_fnv1a_32(key, len);
    case WN_HASH_HSIEH:
        return wn_hash_hsieh(key, len);
    case WN_HASH_MURMUR:
        return wn_hash_murmur(key, len);
    case WN_HASH_JENKINS:
        return wn_hash_jenkins(key, len);
    case WN_HASH_COUNT:
        break;
    }
    /* Config parsing only yields valid values; an invalid one still gets a
     * deterministic answer rather than undefined behaviour. */
    return 0;
}

/* Bob Jenkins' one-at-a-time hash, bytes sign-extended as twemproxy reads them. */
uint32_t wn_hash_one_at_a_time(const char *key, size_t len)
{
    uint32_t h = 0;

    for (size_t i = 0; i < len; i++) {
        h += wn_hash_sbyte(key, i);
        h += h << 10;
        h ^= h >> 6;
    }
    h += h << 3;
    h ^= h >> 11;
    h += h << 15;
    return h;
}
