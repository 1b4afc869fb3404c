/*
 * route/hash_fnv.c: the four FNV key hashes with twemproxy's semantics. Any
 * thread; pure. Every variant sign-extends key bytes, and fnv1a_64 is not
 * 64-bit at all: twemproxy runs it in 32 bits with the 64-bit constants
 * truncated, so it is kept that way here.
 */
#include "route/hash.h"

#define FNV64_OFFSET UINT64_C(0xcbf29ce484222325)
#define FNV64_PRIME UINT64_C(0x100000001b3)
#define FNV32_OFFSET UINT32_C(0x811c9dc5)
#define FNV32_PRIME UINT32_C(0x01000193)

/* Full 64-bit state, low 32 bits returned. The sign-extended byte reaches the
 * high half too, but those bits never flow down into the returned ones. */
uint32_t wn_hash_fnv1_64(const char *key, size_t len)
{
    uint64_t h = FNV64_OFFSET;

    for (size_t i = 0; i < len; i++) {
        h *= FNV64_PRIME;
        h ^= (uint64_t)(int64_t)(signed char)key[i];
    }
    return (uint32_t)h;
}

uint32_t wn_hash_fnv1a_64(const char *key, size_t len)
{
    uint32_t h = (uint32_t)FNV64_OFFSET;

    for (size_t i = 0; i < len; i++) {
        h ^= wn_hash_sbyte(key, i);
        h *= (uint32_t)FNV64_PRIME;
    }
    return h;
}

uint32_t wn_hash_fnv1_32(const char *key, size_t len)
{
    uint32_t h = FNV32_OFFSET;

    for (size_t i = 0; i < len; i++) {
        h *= FNV32_PRIME;
        h ^= wn_hash_sbyte(key, i);
    }
    return h;
}

uint32_t wn_hash_fnv1a_32(const char *key, size_t len)
{
    uint32_t h = FNV32_OFFSET;

    for (size_t i = 0; i < len; i++) {
        h ^= wn_hash_sbyte(key, i);
        h *= FNV32_PRIME;
    }
    return h;
}
