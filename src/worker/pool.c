/*
 * worker/pool.c: a pool as one worker runs it: its servers, the ring it
 * routes with (built by the control thread, which alone decides ejection)
 * and its protocol. Its listener is listen.c's. Created on the main thread, then
 * used only by the worker's thread.
 */
#include "protocol.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* getaddrinfo for a server; the first address wins, as in twemproxy. */
static int resolve(const char *host, uint16_t port, struct sockaddr_storage *out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0)
        return rc == EAI_SYSTEM ? -errno : UV_EAI_NONAME;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

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
    atomic_store_explicit(&p->epoch, 1, memory_order_relaxed);
    return 0;
}

int wn_pool_rt_init(pool_rt_t *p, wn_worker_t *w, const wn_conf_pool_t *conf, uint32_t idx,
                    char *err, size_t errlen)
{
    *p = (pool_rt_t){.w = w, .conf = conf, .idx = idx};
    p->proto = (uint8_t)wn_proto_of(conf);
    p->client_size = wn_proto_client_size(p->proto);
    p->sconn_size = wn_proto_sconn_size(p->proto);
    p->buffer_limit = conf->client_buffer_limit;
    p->stats = &w->stats->pools[idx];
    p->servers = calloc(conf->nservers ? conf->nservers : 1, sizeof(*p->servers));
    if (p->servers == NULL) {
        snprintf(err, errlen, "pool '%s': out of memory", conf->name);
        return WN_ENOMEM;
    }
    for (uint32_t i = 0; i < conf->nservers; i++) {
        p->nservers++;
        int rc = wn_server_rt_init(&p->servers[i], p, i);
        if (rc < 0) {
            snprintf(err, errlen, "pool '%s': out of memory", conf->name);
            return rc;
        }
        if (conf->servers[i].addr.is_unix)
            continue;
        rc = resolve(conf->servers[i].addr.host, conf->servers[i].addr.port,
                     &p->servers[i].addr);
        if (rc < 0) {
            snprintf(err, errlen, "pool '%s': server %s: cannot resolve '%s': %s", conf->name,
                     conf->servers[i].name, conf->servers[i].addr.host,
                     rc == UV_EAI_NONAME ? "unknown host" : wn_strerror(rc));
            return rc;
        }
    }
    int rc = default_ring(p);
    if (rc < 0) {
        snprintf(err, errlen, "pool '%s': cannot build its ring: %s", conf->name,
                 wn_strerror(rc));
        return rc;
    }
    return 0;
}

void wn_pool_rt_deinit(pool_rt_t *p)
{
    for (uint32_t i = 0; p->servers != NULL && i < p->nservers; i++)
        wn_server_rt_deinit(&p->servers[i]);
    free(p->servers);
    p->servers = NULL;
    p->nservers = 0;
    wn_ring_unref(p->ring);
    p->ring = NULL;
}
