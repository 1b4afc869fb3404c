/*
 * worker/mc_stats.c: the memcached `stats` command, answered with walnut's
 * own counters: the process-wide ones and those of the client's pool. Control
 * composes the reply from every worker's counters (the same sums as the HTTP
 * stats; it alone reads other threads' blocks); the request waits for it in
 * order like any other. With no control thread (unit tests) this worker's
 * own block answers. Worker thread.
 */
#include "mc.h"
#include "mcbin.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void wn_mc_stats_text(req_t *r, const char *text, size_t len)
{
    if (wn_mcbin_req_is(r))
        wn_mcbin_stats_reply(r, text, len);
    else
        wn_req_reply(r, text, len);
}

void wn_mc_reply_stats(mc_req_t *r)
{
    if (!wn_ctl_ask_stats(&r->r))
        wn_mc_stats_local(&r->r);
}

void wn_mc_stats_local(req_t *r)
{
    wn_worker_t *w = r->pool->w;
    uint64_t g[WN_GLOBAL_STAT_COUNT] = {0}, pv[WN_POOL_STAT_COUNT] = {0};
    uint64_t sv[WN_SERVER_STAT_COUNT] = {0};
    /* Through the pool's and servers' own pointers, not the block's index:
     * a pool a reload dropped (its clients drain; a stopping worker answers
     * their stats too) has no place in the current block. */
    for (int i = 0; i < WN_GLOBAL_STAT_COUNT; i++)
        g[i] = wn_stat_get(&w->stats->global[i]);
    for (int i = 0; i < WN_POOL_STAT_COUNT; i++)
        pv[i] = wn_stat_get(&r->pool->stats->v[i]);
    for (uint32_t s = 0; s < r->pool->nservers; s++)
        for (int i = 0; i < WN_SERVER_STAT_COUNT; i++)
            sv[i] += wn_stat_get(&r->pool->servers[s]->stats->v[i]);
    char text[4096];
    size_t n = 0;
    uint64_t now = (uint64_t)time(NULL);
#define LINE(...)                                                                                 \
    do {                                                                                          \
        int m_ = snprintf(text + n, sizeof(text) - n, __VA_ARGS__);                               \
        if (m_ > 0 && (size_t)m_ < sizeof(text) - n)                                              \
            n += (size_t)m_;                                                                      \
    } while (0)
    LINE("STAT pid %ld\r\n", (long)getpid());
    LINE("STAT uptime %llu\r\n", (unsigned long long)(now - w->start_time));
    LINE("STAT time %llu\r\n", (unsigned long long)now);
    LINE("STAT version %s-walnut\r\n", WN_VERSION);
    LINE("STAT threads %d\r\n", w->nworkers);
    for (int i = 0; i < WN_GLOBAL_STAT_COUNT; i++)
        LINE("STAT %s %llu\r\n", wn_global_stat_desc[i].name, (unsigned long long)g[i]);
    for (int i = 0; i < WN_POOL_STAT_COUNT; i++) {
        if (i == WN_P_client_connections)
            continue; /* curr_connections says it, process-wide */
        LINE("STAT %s %llu\r\n", wn_pool_stat_desc[i].name, (unsigned long long)pv[i]);
    }
    /* The pool's servers together; names that are not already server_* get
     * the prefix (requests here are what clients asked, above). */
    for (int i = 0; i < WN_SERVER_STAT_COUNT; i++) {
        const char *name = wn_server_stat_desc[i].name;
        LINE("STAT %s%s %llu\r\n", strncmp(name, "server_", 7) == 0 ? "" : "server_", name,
             (unsigned long long)sv[i]);
    }
    LINE("END\r\n");
#undef LINE
    wn_mc_stats_text(r, text, n);
}
