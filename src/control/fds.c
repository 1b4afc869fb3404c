/*
 * control/fds.c: file descriptors. At start the soft RLIMIT_NOFILE is raised
 * to the hard one (walnut polls with epoll: no select() limit to keep), and
 * clients are given what is left of it once walnut has kept what it opens
 * itself: every worker's server connections and listeners, control's probes,
 * the stats server's connections, and a margin for loops, logs and files.
 * twemproxy keeps descriptors the same way (its limit: RLIMIT_NOFILE less its
 * server connections less 32), so a flood of clients cannot leave it unable
 * to reach its servers. The limit is set again at each reload (servers come
 * and go); workers count their clients against it (wn_client_budget_t).
 * Control thread (and the main thread before any other starts).
 */
#include "fds.h"

#include <stdatomic.h>
#include <sys/resource.h>

#include "http.h"
#include "walnut/core.h"

/* stdin/out/err, the log, the pid file, a configuration being read, the
 * control loop's own (epoll, eventfd, signal pipe), the /proc scan of a
 * reload's listener check. */
#define FD_BASE 32u
/* Each worker's loop: epoll, its wakeup eventfd, the signal pipe pair, and
 * a margin (measured: 4 with no client and no listener). */
#define FD_PER_WORKER 8u

uint64_t wn_fds_reserved(const wn_conf_t *conf, int nworkers)
{
    uint64_t n = (uint64_t)(nworkers > 0 ? nworkers : 1);
    uint64_t per_worker = FD_PER_WORKER + conf->npools; /* + a listener per pool */
    uint64_t probes = 0;
    for (uint32_t p = 0; p < conf->npools; p++) {
        const wn_conf_pool_t *pool = &conf->pools[p];
        per_worker += (uint64_t)pool->nservers * (uint64_t)pool->server_connections;
        probes += pool->nservers; /* one probe at a time per server */
    }
    return FD_BASE + WN_HTTP_MAX_CONNS + 1 + probes + n * per_worker;
}

void wn_fds_raise(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        wn_log_info("descriptor limit raised from %llu to the hard limit, %llu",
                    (unsigned long long)was, (unsigned long long)rl.rlim_max);
}

void wn_fds_budget(wn_client_budget_t *budget, bool *said, const wn_conf_t *conf, int nworkers)
{
    struct rlimit rl;
    uint64_t reserved = wn_fds_reserved(conf, nworkers);
    uint64_t limit = 0; /* none */
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY) {
        rl.rlim_cur = RLIM_INFINITY;
    } else if (rl.rlim_cur > reserved) {
        limit = WN_MIN((uint64_t)rl.rlim_cur - reserved, (uint64_t)UINT32_MAX);
    }
    unsigned old = atomic_exchange_explicit(&budget->limit, (unsigned)limit, memory_order_relaxed);
    unsigned open = atomic_load_explicit(&budget->open, memory_order_relaxed);
    if (limit != 0 && open > limit)
        wn_log_warn("descriptors: %u clients are open, more than the %llu the limit now leaves "
                    "room for: none is closed, new ones are, and a server connection may fail "
                    "for want of a descriptor until %llu of them leave",
                    open, (unsigned long long)limit, (unsigned long long)(open - limit));
    if (old == limit && *said)
        return;
    *said = true;
    if (rl.rlim_cur == RLIM_INFINITY)
        wn_log_notice("descriptors: no limit; clients are not limited");
    else if (limit == 0)
        wn_log_warn("descriptors: the limit, %llu (RLIMIT_NOFILE), leaves no room for clients "
                    "beside the %llu walnut keeps for its own server connections, listeners, "
                    "probes and stats: clients are not limited, and when they take every "
                    "descriptor a server connection cannot open; raise it (LimitNOFILE=, "
                    "ulimit -n)",
                    (unsigned long long)rl.rlim_cur, (unsigned long long)reserved);
    else
        wn_log_notice("descriptors: up to %llu (RLIMIT_NOFILE); clients up to %llu, %llu kept "
                      "for server connections, listeners, probes and stats",
                      (unsigned long long)rl.rlim_cur, (unsigned long long)limit,
                      (unsigned long long)reserved);
}
