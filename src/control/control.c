/*
 * control/control.c: start-up and the control thread's run loop. Main thread.
 * The worker runtime (listeners, client and backend connections) is not built
 * yet; until it is, run reports the pools the configuration describes and
 * stops, so nobody mistakes a validated configuration for a running proxy.
 */
#include "walnut/control.h"

#include "walnut/core.h"

int wn_control_run(wn_conf_t *conf, const wn_options_t *opts)
{
    (void)opts;
    for (uint32_t p = 0; p < conf->npools; p++) {
        const wn_conf_pool_t *pool = &conf->pools[p];
        wn_log_notice("pool '%s': listen %s, %u servers, %s/%s, %s", pool->name,
                      pool->listen_text, pool->nservers, wn_hash_name(pool->hash),
                      wn_dist_name(pool->distribution), pool->redis ? "redis" : "memcache");
    }
    wn_log_error("configuration '%s' is valid, but the proxy data path is not built yet: "
                 "walnut can check configurations (-t) and placement (--locate) only",
                 conf->path);
    return WN_EINVAL;
}
