/*
 * stats: the counters walnut keeps, per worker, and how they are summed.
 * Every worker owns one wn_stats_block_t and is its only writer (relaxed
 * atomic load + store, no read-modify-write); control owns one more for what
 * it decides (ejections). Any thread reads any block with relaxed loads;
 * totals are sums over blocks, taken at the moment they are asked for.
 * Blocks are created by control before the workers start and destroyed only
 * after every worker has been joined, so a reader never sees freed memory.
 * Latency histograms use fixed log-spaced buckets and merge by addition.
 * The stats module: above config (a block is laid out for a configuration),
 * below worker and control; no libuv, no threads of its own.
 */
#ifndef WALNUT_STATS_H
#define WALNUT_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wn_conf;

typedef enum wn_stat_kind {
    WN_STAT_COUNTER, /* only grows */
    WN_STAT_GAUGE,   /* goes up and down; the sum over blocks is the value */
} wn_stat_kind_t;

/* Process-wide counters (memcached's `stats` names where memcached has one). */
#define WN_GLOBAL_STATS_MAP(XX)                                                                    \
    XX(curr_connections, GAUGE, "open client connections")                                         \
    XX(total_connections, COUNTER, "client connections accepted")                                  \
    XX(rejected_connections, COUNTER,                                                              \
       "client connections closed at once (client_connections, descriptors)")                      \
    XX(cmd_get, COUNTER, "keys asked for by get, gets and mg, as memcached counts them")           \
    XX(cmd_set, COUNTER, "storage commands")                                                       \
    XX(cmd_touch, COUNTER, "keys asked for by touch, gat and gats, as memcached counts them")      \
    XX(get_hits, COUNTER, "keys found by get, gets and mg")                                        \
    XX(get_misses, COUNTER, "keys not found by get, gets and mg")                                  \
    XX(touch_hits, COUNTER, "keys found by touch, gat and gats (and mg with T)")                   \
    XX(touch_misses, COUNTER, "keys not found by touch, gat and gats")                             \
    XX(bytes_read, COUNTER, "bytes read from clients and servers")                                 \
    XX(bytes_written, COUNTER, "bytes written to clients and servers")                             \
    XX(buffer_bytes, GAUGE, "bytes of buffers in use, free ones included")                         \
    XX(client_bytes, GAUGE, "bytes held for clients: requests unsent, replies unwritten")          \
    XX(total_server_connections, COUNTER, "server connections opened (connect attempts)")          \
    XX(batch_waits, COUNTER, "sleeps after a busy loop turn (--batch-wait)")                       \
    XX(batch_wait_usec, COUNTER,                                                                   \
       "time asked for by those sleeps (it grows with pipelining and reply size)")                 \
    XX(batch_holds, COUNTER, "client writes held a turn for the rest of a pipeline (--batch-wait)")

/* Per pool. The first six are twemproxy's, in twemproxy's order. */
#define WN_POOL_STATS_MAP(XX)                                                                      \
    XX(client_eof, COUNTER, "client connections closed by the client")                             \
    XX(client_err, COUNTER, "client connections closed on an error")                               \
    XX(client_connections, GAUGE, "open client connections")                                       \
    XX(server_ejects, COUNTER, "times a server of the pool was ejected")                           \
    XX(forward_error, COUNTER, "requests answered with an error made by walnut")                   \
    XX(fragments, COUNTER, "fragments made by splitting multi-key requests")                       \
    XX(client_overlimit, COUNTER, "clients disconnected for holding more than the buffer limit")   \
    XX(client_evicted, COUNTER,                                                                    \
       "clients disconnected because all clients together held more than --client-memory")         \
    XX(requests, COUNTER, "requests received from clients")                                        \
    XX(request_errors, COUNTER, "requests rejected by walnut (bad syntax, unknown command)")

/* Why walnut failed a request or one per-server part of a split or copied
 * one (each part counts: the client's reply may still succeed, as SCRIPT
 * LOAD's does without a server it cannot reach; forward_error counts the
 * client's requests answered with an error, once each). */
#define WN_ERROR_CAUSE_MAP(XX)                                                                    \
    XX(refused, "connection refused, or no server live")                                          \
    XX(timeout, "no progress from the server within timeout")                                     \
    XX(reset, "server closed or reset the connection")                                            \
    XX(protocol, "server sent a reply that does not match the request")                           \
    XX(unreachable, "server address unreachable or unresolvable")                                 \
    XX(server_error, "a part of a split request was answered with an error")                      \
    XX(other, "anything else (out of memory, ...)")

/* Per server, twemproxy's names and order (server_ejected_at is control's). */
#define WN_SERVER_STATS_MAP(XX)                                                                   \
    XX(server_eof, COUNTER, "server connections closed by the server")                            \
    XX(server_err, COUNTER, "server connections closed on an error")                              \
    XX(server_timedout, COUNTER, "server connections closed by the request timeout")              \
    XX(server_connections, GAUGE, "open server connections")                                      \
    XX(requests, COUNTER, "requests sent to the server")                                          \
    XX(request_bytes, COUNTER, "request bytes sent to the server")                                \
    XX(responses, COUNTER, "responses received from the server")                                  \
    XX(response_bytes, COUNTER, "response bytes received from the server")                        \
    XX(in_queue, GAUGE, "requests waiting to be sent to the server")                              \
    XX(in_queue_bytes, GAUGE, "bytes of requests waiting to be sent")                             \
    XX(out_queue, GAUGE, "requests sent and waiting for a response")                              \
    XX(out_queue_bytes, GAUGE, "bytes of requests sent and waiting for a response")

/* Indexes: WN_G_<name>, WN_P_<name>, WN_S_<name>, WN_CAUSE_<name>. */
#define WN_G_ENUM_(name, kind, text) WN_G_##name,
#define WN_P_ENUM_(name, kind, text) WN_P_##name,
#define WN_S_ENUM_(name, kind, text) WN_S_##name,
typedef enum { WN_GLOBAL_STATS_MAP(WN_G_ENUM_) WN_GLOBAL_STAT_COUNT } wn_global_stat_t;
typedef enum { WN_POOL_STATS_MAP(WN_P_ENUM_) WN_POOL_STAT_COUNT } wn_pool_stat_t;
typedef enum { WN_SERVER_STATS_MAP(WN_S_ENUM_) WN_SERVER_STAT_COUNT } wn_server_stat_t;
#undef WN_G_ENUM_
#undef WN_P_ENUM_
#undef WN_S_ENUM_
#define WN_CAUSE_ENUM_(name, text) WN_CAUSE_##name,
typedef enum { WN_ERROR_CAUSE_MAP(WN_CAUSE_ENUM_) WN_CAUSE_COUNT } wn_error_cause_t;
#undef WN_CAUSE_ENUM_

typedef struct wn_stat_desc {
    const char *name;
    wn_stat_kind_t kind;
    const char *text;
} wn_stat_desc_t;

extern const wn_stat_desc_t wn_global_stat_desc[WN_GLOBAL_STAT_COUNT];
extern const wn_stat_desc_t wn_pool_stat_desc[WN_POOL_STAT_COUNT];
extern const wn_stat_desc_t wn_server_stat_desc[WN_SERVER_STAT_COUNT];
extern const wn_stat_desc_t wn_error_cause_desc[WN_CAUSE_COUNT]; /* kind unused */

/* ---- latency histograms ---------------------------------------------------- */

/* Upper bounds in microseconds of buckets 0 .. WN_HIST_BUCKETS-2; the last
 * bucket is +Inf. 10 us .. 10 s in a 1-2.5-5 series. */
#define WN_HIST_BUCKETS 20
extern const uint64_t wn_hist_bounds_us[WN_HIST_BUCKETS - 1];

/* Written by one thread, read by any (relaxed). Buckets are not cumulative. */
typedef struct wn_hist {
    _Atomic uint64_t bucket[WN_HIST_BUCKETS];
    _Atomic uint64_t sum_us;
    _Atomic uint64_t count;
} wn_hist_t;

/* A plain copy, for sums. */
typedef struct wn_hist_sum {
    uint64_t bucket[WN_HIST_BUCKETS];
    uint64_t sum_us;
    uint64_t count;
} wn_hist_sum_t;

/* Bucket index for a latency in microseconds. */
unsigned wn_hist_bucket(uint64_t us);
/* Record one observation. The block's owner thread only. */
void wn_hist_record(wn_hist_t *h, uint64_t us);
/* dst += src (relaxed loads). Any thread. */
void wn_hist_add(wn_hist_sum_t *dst, const wn_hist_t *src);

/* Bytes kept (NUL included) of the line a server answered a health probe
 * with when that line failed it (control's /servers shows it). */
#define WN_PROBE_SAID_MAX 96

/* ---- one block: everything one thread counts ---------------------------- */

/* Commands counted per pool: index from the pool's protocol command table. */
#define WN_STATS_MAX_CMDS 256

typedef struct wn_pool_stats {
    _Atomic uint64_t v[WN_POOL_STAT_COUNT];
    _Atomic uint64_t errors[WN_CAUSE_COUNT];
    _Atomic uint64_t cmds[WN_STATS_MAX_CMDS];
    wn_hist_t latency; /* request received -> reply ready, every request of the pool */
} wn_pool_stats_t;

typedef struct wn_server_stats {
    _Atomic uint64_t v[WN_SERVER_STAT_COUNT];
    wn_hist_t latency; /* sent to the server -> reply complete */
} wn_server_stats_t;

typedef struct wn_stats_block {
    struct wn_conf *conf;       /* one reference: the configuration it is laid out for */
    _Atomic uint64_t global[WN_GLOBAL_STAT_COUNT];
    uint32_t npools;
    wn_pool_stats_t *pools;     /* [npools], inside this allocation */
    uint32_t *server_base;      /* [npools]: index of the pool's first server in servers */
    uint32_t nservers;          /* over all pools */
    wn_server_stats_t *servers; /* [nservers], inside this allocation */
} wn_stats_block_t;

/* One block laid out for conf's pools and servers, zeroed; it holds a
 * reference on conf. NULL on ENOMEM. */
wn_stats_block_t *wn_stats_block_create(struct wn_conf *conf);
void wn_stats_block_destroy(wn_stats_block_t *b);
/*
 * dst += src, pools matched by name and servers by name within them, so a
 * block laid out for one configuration carries into a block for another
 * (a reload). What has no match in dst is dropped. src is read with relaxed
 * loads (its owner may still be writing); dst must have no other writer.
 */
void wn_stats_block_fold(wn_stats_block_t *dst, const wn_stats_block_t *src);

static inline wn_server_stats_t *wn_stats_server(wn_stats_block_t *b, uint32_t pool,
                                                 uint32_t server)
{
    return &b->servers[b->server_base[pool] + server];
}

/* Owner-thread updates: a relaxed load and a relaxed store (single writer). */
static inline void wn_stat_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}
static inline void wn_stat_sub(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - n,
                          memory_order_relaxed);
}
static inline void wn_stat_set(_Atomic uint64_t *c, uint64_t v)
{
    atomic_store_explicit(c, v, memory_order_relaxed);
}
static inline uint64_t wn_stat_get(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

#endif
