/*
 * stats/stats.c: counter blocks and latency histograms. A block is written by
 * one thread and read by any; nothing here locks. See walnut/stats.h.
 */
#include "walnut/stats.h"

#include <stdlib.h>
#include <string.h>

#include "walnut/config.h"

#define WN_DESC_(name, kind, text) {#name, WN_STAT_##kind, text},
const wn_stat_desc_t wn_global_stat_desc[WN_GLOBAL_STAT_COUNT] = {WN_GLOBAL_STATS_MAP(WN_DESC_)};
const wn_stat_desc_t wn_pool_stat_desc[WN_POOL_STAT_COUNT] = {WN_POOL_STATS_MAP(WN_DESC_)};
const wn_stat_desc_t wn_server_stat_desc[WN_SERVER_STAT_COUNT] = {WN_SERVER_STATS_MAP(WN_DESC_)};
#undef WN_DESC_
#define WN_CAUSE_DESC_(name, text) {#name, WN_STAT_COUNTER, text},
const wn_stat_desc_t wn_error_cause_desc[WN_CAUSE_COUNT] = {WN_ERROR_CAUSE_MAP(WN_CAUSE_DESC_)};
#undef WN_CAUSE_DESC_

const uint64_t wn_hist_bounds_us[WN_HIST_BUCKETS - 1] = {
    10,     25,     50,      100,     250,     500,     1000,    2500,    5000,    10000,
    25000,  50000,  100000,  250000,  500000,  1000000, 2500000, 5000000, 10000000,
};

/* For a value of bit length k (2^(k-1) <= us < 2^k), the first bucket whose
 * bound is >= 2^(k-1); from there at most two bounds need comparing, as the
 * bounds at least double every two steps. Derived from wn_hist_bounds_us
 * (the unit test checks every bound and its neighbours). */
static const uint8_t first_bucket[65] = {
    0,  0,  0,  0,  0,  1,  2,  3,  4,  5,  6,  7,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
    16, 17, 18, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19,
    19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19,
};

unsigned wn_hist_bucket(uint64_t us)
{
    unsigned k = us == 0 ? 0 : 64 - (unsigned)__builtin_clzll(us);
    unsigned i = first_bucket[k];
    while (i < WN_HIST_BUCKETS - 1 && us > wn_hist_bounds_us[i])
        i++;
    return i;
}

void wn_hist_record(wn_hist_t *h, uint64_t us)
{
    wn_stat_add(&h->bucket[wn_hist_bucket(us)], 1);
    wn_stat_add(&h->sum_us, us);
    wn_stat_add(&h->count, 1);
}

void wn_hist_add(wn_hist_sum_t *dst, const wn_hist_t *src)
{
    for (unsigned i = 0; i < WN_HIST_BUCKETS; i++)
        dst->bucket[i] += wn_stat_get(&src->bucket[i]);
    dst->sum_us += wn_stat_get(&src->sum_us);
    dst->count += wn_stat_get(&src->count);
}

wn_stats_block_t *wn_stats_block_create(struct wn_conf *conf)
{
    uint32_t npools = conf->npools, nservers = 0;
    for (uint32_t p = 0; p < npools; p++)
        nservers += conf->pools[p].nservers;
    /* One allocation: the block, its pools, the server index, its servers. */
    size_t off_pools = (sizeof(wn_stats_block_t) + 63) & ~(size_t)63;
    size_t off_base = off_pools + sizeof(wn_pool_stats_t) * npools;
    size_t off_servers = (off_base + sizeof(uint32_t) * npools + 63) & ~(size_t)63;
    size_t size = off_servers + sizeof(wn_server_stats_t) * nservers;
    char *mem = aligned_alloc(64, (size + 63) & ~(size_t)63);
    if (mem == NULL)
        return NULL;
    memset(mem, 0, size);
    wn_stats_block_t *b = (wn_stats_block_t *)mem;
    wn_conf_ref(conf);
    b->conf = conf;
    b->npools = npools;
    b->pools = (wn_pool_stats_t *)(mem + off_pools);
    b->server_base = (uint32_t *)(mem + off_base);
    b->nservers = nservers;
    b->servers = (wn_server_stats_t *)(mem + off_servers);
    uint32_t base = 0;
    for (uint32_t p = 0; p < npools; p++) {
        b->server_base[p] = base;
        base += conf->pools[p].nservers;
    }
    return b;
}

void wn_stats_block_destroy(wn_stats_block_t *b)
{
    if (b == NULL)
        return;
    wn_conf_unref(b->conf);
    free(b);
}

static void add_all(_Atomic uint64_t *dst, const _Atomic uint64_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        wn_stat_add(&dst[i], wn_stat_get(&src[i]));
}

static void add_hist(wn_hist_t *dst, const wn_hist_t *src)
{
    add_all(dst->bucket, src->bucket, WN_HIST_BUCKETS);
    wn_stat_add(&dst->sum_us, wn_stat_get(&src->sum_us));
    wn_stat_add(&dst->count, wn_stat_get(&src->count));
}

static int32_t find_pool(const wn_conf_t *conf, const char *name)
{
    for (uint32_t p = 0; p < conf->npools; p++)
        if (strcmp(conf->pools[p].name, name) == 0)
            return (int32_t)p;
    return -1;
}

static int32_t find_server(const wn_conf_pool_t *pool, const char *name)
{
    for (uint32_t s = 0; s < pool->nservers; s++)
        if (strcmp(pool->servers[s].name, name) == 0)
            return (int32_t)s;
    return -1;
}

void wn_stats_block_fold(wn_stats_block_t *dst, const wn_stats_block_t *src)
{
    add_all(dst->global, src->global, WN_GLOBAL_STAT_COUNT);
    const wn_conf_t *sc = src->conf, *dc = dst->conf;
    for (uint32_t sp = 0; sp < src->npools; sp++) {
        int32_t dp = sc == dc ? (int32_t)sp : find_pool(dc, sc->pools[sp].name);
        if (dp < 0)
            continue;
        const wn_pool_stats_t *ps = &src->pools[sp];
        wn_pool_stats_t *pd = &dst->pools[dp];
        add_all(pd->v, ps->v, WN_POOL_STAT_COUNT);
        add_all(pd->errors, ps->errors, WN_CAUSE_COUNT);
        add_all(pd->cmds, ps->cmds, WN_STATS_MAX_CMDS);
        add_hist(&pd->latency, &ps->latency);
        const wn_conf_pool_t *spc = &sc->pools[sp], *dpc = &dc->pools[dp];
        for (uint32_t ss = 0; ss < spc->nservers; ss++) {
            int32_t ds = sc == dc ? (int32_t)ss : find_server(dpc, spc->servers[ss].name);
            if (ds < 0)
                continue;
            const wn_server_stats_t *from = &src->servers[src->server_base[sp] + ss];
            wn_server_stats_t *to = &dst->servers[dst->server_base[dp] + (uint32_t)ds];
            add_all(to->v, from->v, WN_SERVER_STAT_COUNT);
            add_hist(&to->latency, &from->latency);
        }
    }
}
