/*
 * route: key placement. The twelve hash functions of twemproxy 0.5.0, bit-exact
 * on x86-64, and the distributions (ketama, modula, random) over an immutable,
 * refcounted ring. Rings are built on the control thread and read by workers;
 * lookup never allocates and never blocks. Knows nothing of libuv or threads
 * beyond the atomic refcount.
 */
#ifndef WALNUT_ROUTE_H
#define WALNUT_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Order and names are twemproxy's (nc_hashkit.h HASH_CODEC). */
#define WN_HASH_MAP(XX)                                                                           \
    XX(ONE_AT_A_TIME, one_at_a_time)                                                              \
    XX(MD5, md5)                                                                                  \
    XX(CRC16, crc16)                                                                              \
    XX(CRC32, crc32)                                                                              \
    XX(CRC32A, crc32a)                                                                            \
    XX(FNV1_64, fnv1_64)                                                                          \
    XX(FNV1A_64, fnv1a_64)                                                                        \
    XX(FNV1_32, fnv1_32)                                                                          \
    XX(FNV1A_32, fnv1a_32)                                                                        \
    XX(HSIEH, hsieh)                                                                              \
    XX(MURMUR, murmur)                                                                            \
    XX(JENKINS, jenkins)

typedef enum wn_hash {
#define WN_HASH_ENUM(up, low) WN_HASH_##up,
    WN_HASH_MAP(WN_HASH_ENUM)
#undef WN_HASH_ENUM
    WN_HASH_COUNT
} wn_hash_t;

#define WN_DIST_MAP(XX)                                                                           \
    XX(KETAMA, ketama)                                                                            \
    XX(MODULA, modula)                                                                            \
    XX(RANDOM, random)

typedef enum wn_dist {
#define WN_DIST_ENUM(up, low) WN_DIST_##up,
    WN_DIST_MAP(WN_DIST_ENUM)
#undef WN_DIST_ENUM
    WN_DIST_COUNT
} wn_dist_t;

/* Hash `len` bytes of `key` with `h`, exactly as twemproxy 0.5.0 does on x86-64. */
uint32_t wn_hash(wn_hash_t h, const char *key, size_t len);
/* "fnv1a_64" etc.; NULL for an out-of-range value. */
const char *wn_hash_name(wn_hash_t h);
/* 0 and *out set, or WN_EINVAL when `name` (len bytes) names no hash. */
int wn_hash_parse(const char *name, size_t len, wn_hash_t *out);
/* Comma-separated list of all names, for error messages. */
const char *wn_hash_names(void);

const char *wn_dist_name(wn_dist_t d);
int wn_dist_parse(const char *name, size_t len, wn_dist_t *out);
const char *wn_dist_names(void);

/* MD5 of `len` bytes into `digest` (libmd). */
void wn_md5(const void *data, size_t len, unsigned char digest[16]);

/* One server as the ring sees it: its name (what ketama hashes) and weight. */
typedef struct wn_ring_server {
    const char *name; /* borrowed for the duration of wn_ring_create */
    size_t name_len;
    uint32_t weight; /* > 0 */
} wn_ring_server_t;

typedef struct wn_ring wn_ring_t;

#define WN_RING_NONE UINT32_MAX

typedef struct wn_ring_params {
    wn_dist_t dist;
    wn_hash_t hash;
    const char *hash_tag; /* NULL, or exactly two bytes: open and close */
    uint64_t epoch;       /* recorded, returned by wn_ring_epoch */
} wn_ring_params_t;

/* The most points (ketama) or slots (modula: one per unit of weight) one
 * ring holds: 2^26, 512 MiB of them. Live weights must also add up to at
 * most UINT32_MAX (twemproxy keeps the total in 32 bits). */
#define WN_RING_MAX_POINTS (1u << 26)
#define WN_RING_MAX_TOTAL_WEIGHT UINT32_MAX

/* Points a ring over `nlive` live servers whose weights add up to
 * `total_weight` is sized for; wn_ring_create refuses (WN_ETOOBIG) more than
 * WN_RING_MAX_POINTS, or a total weight over WN_RING_MAX_TOTAL_WEIGHT. The
 * configuration checks both with all servers live, the most a ring needs. */
uint64_t wn_ring_capacity(wn_dist_t dist, uint32_t nlive, uint64_t total_weight);

/*
 * Build a ring over `n` servers in the pool's (sorted) order. `live` is NULL
 * (all servers live) or n flags; dead servers get no points. With no live
 * server, the ring answers WN_RING_NONE. Returns 0 and a ring with one
 * reference in *out, or a negative error (out untouched).
 */
int wn_ring_create(const wn_ring_params_t *params, const wn_ring_server_t *servers, uint32_t n,
                   const bool *live, wn_ring_t **out);
void wn_ring_ref(wn_ring_t *ring);
/* Drop a reference; the last one frees. NULL is fine. */
void wn_ring_unref(wn_ring_t *ring);

/*
 * Index (into the servers given to wn_ring_create) of the server for `key`,
 * or WN_RING_NONE when no server is live. Applies hash_tag, the one-server
 * shortcut and the empty-key rule as twemproxy does. O(log points), no
 * allocation. Random distribution draws from a per-thread generator.
 */
uint32_t wn_ring_lookup(const wn_ring_t *ring, const char *key, size_t len);
/* The key bytes that are hashed after hash_tag is applied (a sub-span of key). */
void wn_ring_hash_span(const wn_ring_t *ring, const char *key, size_t len, const char **span,
                       size_t *span_len);

uint64_t wn_ring_epoch(const wn_ring_t *ring);
uint32_t wn_ring_nservers(const wn_ring_t *ring);
/* Which of the first n servers are live (have points): n flags into live.
 * One pass over the points: for rare requests, not per key. */
void wn_ring_live(const wn_ring_t *ring, bool *live, uint32_t n);
uint32_t wn_ring_nlive(const wn_ring_t *ring);
/* Number of points on the continuum (ketama: 160 per live server, scaled by
 * weight; modula: total live weight). For tests and logs. */
uint32_t wn_ring_npoints(const wn_ring_t *ring);

#endif
