/*
 * worker/pool.c: a pool as one worker runs it: its servers, the ring it
 * routes with (built by the control thread, which alone decides ejection)
 * and its protocol. Its listener is listen.c's. Created on the main thread, then
 * used only by the worker's thread.
 */
#include "protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A ring with every server live, until control hands over its own. */
static int default_ring(pool_rt_t *p)
{
    wn_ring_server_t *rs = calloc(p->nservers ? p->nservers : 1, sizeof(*rs));
    if (rs == NULL)
        return WN_ENOMEM;
    wn_conf_ring_servers(p->conf, rs);
    wn_ring_params_t params = {
        .dist = p->conf->distribution,
        .hash = p->conf->hash,
        .hash_tag = p->conf->has_hash_tag ? p->conf->hash_tag : NULL,
        .epoch = 1,
    };
    wn_ring_t *ring;
    int rc = wn_ring_create(&params, rs, p->nservers, NULL, &ring);
    free(rs);
    if (rc < 0)
        return rc;
    wn_ring_unref(p->ring);
    p->ring = ring;
    p->epoch = 1;
    return 0;
}

pool_rt_t *wn_pool_rt_create(wn_worker_t *w, const wn_conf_pool_t *conf, uint32_t idx,
                             char *err, size_t errlen)
{
    pool_rt_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "pool '%s': out of memory", conf->name);
        return NULL;
    }
    *p = (pool_rt_t){.w = w, .conf = conf, .idx = idx};
    p->proto = (uint8_t)wn_proto_of(conf);
    p->client_size = wn_proto_client_size(p->proto);
    p->sconn_size = wn_proto_sconn_size(p->proto);
    p->buffer_limit = conf->client_buffer_limit;
    p->clients = w->budget != NULL ? wn_client_budget_pool(w->budget, conf->name) : NULL;
    p->servers = calloc(conf->nservers ? conf->nservers : 1, sizeof(*p->servers));
    if (p->servers == NULL) {
        snprintf(err, errlen, "pool '%s': out of memory", conf->name);
        free(p);
        return NULL;
    }
    for (uint32_t i = 0; i < conf->nservers; i++) {
        p->servers[i] = wn_server_rt_create(p, conf, i, err, errlen);
        if (p->servers[i] == NULL) {
            wn_pool_rt_destroy(p);
            return NULL;
        }
        p->nservers++;
    }
    wn_pool_rt_count_in(p, w->stats);
    int rc = default_ring(p);
    if (rc < 0) {
        snprintf(err, errlen, "pool '%s': cannot build its ring: %s", conf->name,
                 wn_strerror(rc));
        wn_pool_rt_destroy(p);
        return NULL;
    }
    return p;
}

void wn_pool_rt_count_in(pool_rt_t *p, wn_stats_block_t *b)
{
    p->stats = &b->pools[p->idx];
    for (uint32_t i = 0; i < p->nservers; i++)
        p->servers[i]->stats = wn_stats_server(b, p->idx, i);
}

void wn_pool_rt_destroy(pool_rt_t *p)
{
    if (p == NULL)
        return;
    for (uint32_t i = 0; i < p->nservers; i++)
        wn_server_rt_destroy(p->servers[i]);
    free(p->servers);
    wn_ring_unref(p->ring);
    free(p);
}
