/*
 * route/hash.h: the twelve key hashes behind wn_hash(), one entry point each,
 * private to the route module. Pure functions of (key, len): any thread, no
 * allocation, no state, and never a read outside key[0..len).
 */
#ifndef WALNUT_ROUTE_HASH_H
#define WALNUT_ROUTE_HASH_H

#include <stddef.h>
#include <stdint.h>

/*
 * Each returns what twemproxy 0.5.0's hash of the same name returns on x86-64,
 * quirks included. Where twemproxy reads key bytes through plain `char`, the
 * byte is sign-extended here on purpose (x86-64 char is signed), so walnut
 * places keys with bytes >= 0x80 where twemproxy does, on any platform.
 */
uint32_t wn_hash_one_at_a_time(const char *key, size_t len);
uint32_t wn_hash_md5(const char *key, size_t len);
uint32_t wn_hash_crc16(const char *key, size_t len);
uint32_t wn_hash_crc32(const char *key, size_t len);
uint32_t wn_hash_crc32a(const char *key, size_t len);
uint32_t wn_hash_fnv1_64(const char *key, size_t len);
uint32_t wn_hash_fnv1a_64(const char *key, size_t len);
uint32_t wn_hash_fnv1_32(const char *key, size_t len);
uint32_t wn_hash_fnv1a_32(const char *key, size_t len);
uint32_t wn_hash_hsieh(const char *key, size_t len);
uint32_t wn_hash_murmur(const char *key, size_t len);
uint32_t wn_hash_jenkins(const char *key, size_t len);

/* A key byte as twemproxy sees it through signed `char`: 0x80 becomes 0xffffff80. */
static inline uint32_t wn_hash_sbyte(const char *key, size_t i)
{
    return (uint32_t)(int32_t)(signed char)key[i];
}

/* A key byte as an unsigned value 0..255. */
static inline uint32_t wn_hash_ubyte(const char *key, size_t i)
{
    return (uint32_t)(unsigned char)key[i];
}

#endif
