/*
 * route/ring.c: the immutable ring (continuum) for one pool and its lookup.
 * Built on the control thread from (servers, live set), then only read, by
 * any number of workers; freed when the last reference goes. Placement is
 * twemproxy 0.5.0's to the bit: same point counts (single-precision float),
 * same MD5 points, same order of ties, same lower-bound search with wrap.
 */
#include "walnut/route.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"

#define KETAMA_POINTS_PER_SERVER 160
#define KETAMA_POINTS_PER_HASH 4
/* twemproxy formats "name-N" into a 273-byte buffer and hashes at most 272 bytes. */
#define KETAMA_MAX_HOSTLEN 273

typedef struct point {
    uint32_t value;
    uint32_t server; /* index into the pool's servers */
} point_t;

struct wn_ring {
    atomic_int refs;
    wn_dist_t dist;
    wn_hash_t hash;
    bool has_tag;
    char tag[2];
    uint64_t epoch;
    uint32_t nservers;
    uint32_t nlive;
    uint32_t npoints;
    point_t points[]; /* owned: sorted by value for ketama; slots for modula/random */
};

/* twemproxy sorts points with glibc qsort, which is a stable merge sort for
 * arrays this size: equal values keep insertion order. Sort on (value, order)
 * so ties land the same way whatever qsort this libc has. */
typedef struct sort_point {
    point_t p;
    uint32_t order;
} sort_point_t;

static int sort_point_cmp(const void *a, const void *b)
{
    const sort_point_t *x = a, *y = b;
    if (x->p.value != y->p.value)
        return x->p.value < y->p.value ? -1 : 1;
    return x->order < y->order ? -1 : (x->order > y->order);
}

/* Points for one server, computed exactly as twemproxy does: the product in
 * float, the tiny addend in double, floorf back in float. Gives 156 instead
 * of 160 for some pool sizes; that quirk is part of placement. */
static uint32_t ketama_points(uint32_t weight, uint32_t total_weight, uint32_t nlive)
{
    float pct = (float)weight / (float)total_weight;
    float scaled = pct * KETAMA_POINTS_PER_SERVER / 4 * (float)nlive;
    double nudged = (double)scaled + 0.0000000001;
    float points = floorf((float)nudged) * 4;
    return (uint32_t)points;
}

static int build_ketama(wn_ring_t *ring, const wn_ring_server_t *servers, const bool *live,
                        uint32_t total_weight, uint32_t capacity)
{
    sort_point_t *tmp = malloc(sizeof(*tmp) * (capacity ? capacity : 1));
    if (tmp == NULL)
        return WN_ENOMEM;

    uint32_t n = 0;
    for (uint32_t s = 0; s < ring->nservers; s++) {
        if (live != NULL && !live[s])
            continue;
        uint32_t per_server = ketama_points(servers[s].weight, total_weight, ring->nlive);
        for (uint32_t i = 0; i < per_server / KETAMA_POINTS_PER_HASH; i++) {
            char host[KETAMA_MAX_HOSTLEN];
            int len = snprintf(host, sizeof(host), "%.*s-%u", (int)servers[s].name_len,
                               servers[s].name, i);
            size_t hostlen = (size_t)len >= sizeof(host) ? sizeof(host) - 1 : (size_t)len;
            unsigned char digest[16];
            wn_md5(host, hostlen, digest);
            for (uint32_t x = 0; x < KETAMA_POINTS_PER_HASH && n < capacity; x++) {
                const unsigned char *d = digest + 4 * x;
                tmp[n].p.value = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 |
                                 (uint32_t)d[3] << 24;
                tmp[n].p.server = s;
                tmp[n].order = n;
                n++;
            }
        }
    }
    qsort(tmp, n, sizeof(*tmp), sort_point_cmp);
    for (uint32_t i = 0; i < n; i++)
        ring->points[i] = tmp[i].p;
    ring->npoints = n;
    free(tmp);
    return 0;
}

uint64_t wn_ring_capacity(wn_dist_t dist, uint32_t nlive, uint64_t total_weight)
{
    /* Upper bound on points: ketama gives each server at most 160 * nlive *
     * weight/total points; modula one per unit of weight; random one each. */
    switch (dist) {
    case WN_DIST_KETAMA:
        return (uint64_t)nlive * (KETAMA_POINTS_PER_SERVER + KETAMA_POINTS_PER_HASH);
    case WN_DIST_MODULA:
        return total_weight;
    default:
        return nlive;
    }
}

int wn_ring_create(const wn_ring_params_t *params, const wn_ring_server_t *servers, uint32_t n,
                   const bool *live, wn_ring_t **out)
{
    if (params == NULL || (n > 0 && servers == NULL) || out == NULL ||
        (unsigned)params->dist >= WN_DIST_COUNT || (unsigned)params->hash >= WN_HASH_COUNT)
        return WN_EINVAL;

    uint64_t total_weight = 0;
    uint32_t nlive = 0;
    for (uint32_t s = 0; s < n; s++) {
        if (servers[s].weight == 0)
            return WN_EINVAL;
        if (live != NULL && !live[s])
            continue;
        nlive++;
        total_weight += servers[s].weight;
    }
    if (total_weight > WN_RING_MAX_TOTAL_WEIGHT)
        return WN_ETOOBIG;
    uint64_t capacity = wn_ring_capacity(params->dist, nlive, total_weight);
    if (capacity > WN_RING_MAX_POINTS)
        return WN_ETOOBIG;

    wn_ring_t *ring = calloc(1, sizeof(*ring) + sizeof(point_t) * (size_t)capacity);
    if (ring == NULL)
        return WN_ENOMEM;
    atomic_init(&ring->refs, 1);
    ring->dist = params->dist;
    ring->hash = params->hash;
    ring->epoch = params->epoch;
    ring->nservers = n;
    ring->nlive = nlive;
    if (params->hash_tag != NULL) {
        ring->has_tag = true;
        memcpy(ring->tag, params->hash_tag, 2);
    }

    if (nlive > 0) {
        if (params->dist == WN_DIST_KETAMA) {
            int rc = build_ketama(ring, servers, live, (uint32_t)total_weight, (uint32_t)capacity);
            if (rc < 0) {
                free(ring);
                return rc;
            }
        } else {
            uint32_t k = 0;
            for (uint32_t s = 0; s < n; s++) {
                if (live != NULL && !live[s])
                    continue;
                uint32_t slots = params->dist == WN_DIST_MODULA ? servers[s].weight : 1;
                for (uint32_t w = 0; w < slots; w++)
                    ring->points[k++] = (point_t){.value = 0, .server = s};
            }
            ring->npoints = k;
        }
    }
    *out = ring;
    return 0;
}

void wn_ring_ref(wn_ring_t *ring)
{
    atomic_fetch_add_explicit(&ring->refs, 1, memory_order_relaxed);
}

void wn_ring_unref(wn_ring_t *ring)
{
    if (ring == NULL)
        return;
    if (atomic_fetch_sub_explicit(&ring->refs, 1, memory_order_acq_rel) == 1)
        free(ring);
}

void wn_ring_hash_span(const wn_ring_t *ring, const char *key, size_t len, const char **span,
                       size_t *span_len)
{
    *span = key;
    *span_len = len;
    if (!ring->has_tag || len == 0)
        return;
    /* twemproxy: the first open byte, then the first close byte after it;
     * used only when the tag encloses at least one byte. */
    const char *open = memchr(key, ring->tag[0], len);
    if (open == NULL)
        return;
    const char *end = key + len;
    const char *close = memchr(open + 1, ring->tag[1], (size_t)(end - open - 1));
    if (close == NULL || close - open <= 1)
        return;
    *span = open + 1;
    *span_len = (size_t)(close - open - 1);
}

/* xorshift64*, one state per thread, seeded from the thread's address and
 * the clock: random distribution only needs spread, not secrecy. */
static uint32_t random_next(void)
{
    static _Thread_local uint64_t state;
    if (state == 0) {
        state = (uint64_t)(uintptr_t)&state ^ (wn_time_us() * 0x9E3779B97F4A7C15ull);
        if (state == 0)
            state = 0x9E3779B97F4A7C15ull;
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return (uint32_t)((state * 0x2545F4914F6CDD1Dull) >> 32);
}

static uint32_t ketama_find(const wn_ring_t *ring, uint32_t hash)
{
    /* First point with value >= hash; past the end wraps to the first. */
    uint32_t lo = 0, hi = ring->npoints;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ring->points[mid].value < hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == ring->npoints)
        lo = 0;
    return ring->points[lo].server;
}

uint32_t wn_ring_lookup(const wn_ring_t *ring, const char *key, size_t len)
{
    if (ring->npoints == 0)
        return WN_RING_NONE;
    /* twemproxy skips hashing when the pool has one server (live or not). */
    if (ring->nservers == 1)
        return 0;

    if (ring->dist == WN_DIST_RANDOM)
        return ring->points[random_next() % ring->npoints].server;

    const char *span;
    size_t span_len;
    wn_ring_hash_span(ring, key, len, &span, &span_len);
    uint32_t hash = span_len == 0 ? 0 : wn_hash(ring->hash, span, span_len);

    if (ring->dist == WN_DIST_MODULA)
        return ring->points[hash % ring->npoints].server;
    return ketama_find(ring, hash);
}

uint64_t wn_ring_epoch(const wn_ring_t *ring)
{
    return ring->epoch;
}

void wn_ring_live(const wn_ring_t *ring, bool *live, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        live[i] = false;
    for (uint32_t p = 0; p < ring->npoints; p++)
        if (ring->points[p].server < n)
            live[ring->points[p].server] = true;
}

uint32_t wn_ring_nservers(const wn_ring_t *ring)
{
    return ring->nservers;
}

uint32_t wn_ring_nlive(const wn_ring_t *ring)
{
    return ring->nlive;
}

uint32_t wn_ring_npoints(const wn_ring_t *ring)
{
    return ring->npoints;
}
