/*
 * worker/reconf.c: a reload, as one worker applies it. Control sends the new
 * configuration (an immutable snapshot), the new rings and a fresh counter
 * block; the worker applies all of it between two events of its loop, so no
 * request sees half of it:
 *   - a pool still listed (same name) is kept: its clients, its listener if
 *     the address is the same, and every server connection to a server that
 *     is the same backend (name, address, connection count, AUTH, SELECT);
 *   - a pool whose address changed listens on the new one before the old
 *     listener closes; clients that came in on the old address keep being
 *     served until they leave;
 *   - a server no longer listed is retired: nothing new is routed to it, it
 *     answers what is queued on it, then its connections close; a server
 *     for the same backend (new connections) writes nothing until it has
 *     drained, so a client's requests keep their order (server.c);
 *   - a pool no longer listed stops accepting; its clients get what they
 *     asked for and are closed as their requests complete (as at stop), then
 *     its servers close;
 *   - new pools and servers start as at start-up.
 * Requests already parsed keep the pool and server they were routed to.
 * Retired objects, and the configurations they point into, are freed once
 * they are done (checked on a timer). Worker thread only.
 */
#include "protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How often retired pools and servers are checked for being done. */
#define REAP_MS 100
/* How long a retired server may take to answer what is queued on it (a
 * server with no timeout may never answer) before it is closed anyway; a
 * retired pool's clients likewise. */
#define RETIRE_GRACE_MS 30000

uint64_t wn_reconf_grace_ms(void)
{
    /* tests only (WALNUT_TEST_HOOKS=1): a shorter grace, so that what
     * happens past it is seen without waiting 30 s */
    const char *ms = wn_test_hooks() ? getenv("WALNUT_TEST_RETIRE_GRACE_MS") : NULL;
    long v = ms != NULL ? strtol(ms, NULL, 10) : 0;
    return v > 0 ? (uint64_t)v : RETIRE_GRACE_MS;
}

static void on_reap(uv_timer_t *t)
{
    wn_worker_t *w = t->data;
    wn_worker_tick(w);
    if (wn_reconf_reap(w))
        uv_timer_stop(t);
}

static void arm_reap(wn_worker_t *w)
{
    if (!w->reap_timer_open) {
        uv_timer_init(&w->loop, &w->reap_timer);
        w->reap_timer.data = w;
        w->reap_timer_open = true;
    }
    if (!uv_is_active((uv_handle_t *)&w->reap_timer))
        uv_timer_start(&w->reap_timer, on_reap, REAP_MS, REAP_MS);
}

static pool_rt_t *find_pool(wn_worker_t *w, const char *name)
{
    for (uint32_t i = 0; i < w->npools; i++)
        if (strcmp(w->pools[i]->conf->name, name) == 0)
            return w->pools[i];
    return NULL;
}

static bool listed(server_rt_t *const *v, uint32_t n, const server_rt_t *s)
{
    for (uint32_t i = 0; i < n; i++)
        if (v[i] == s)
            return true;
    return false;
}

/* p's server of that name, or NULL. */
static const server_rt_t *same_name(const pool_rt_t *p, const char *name)
{
    for (uint32_t j = 0; j < p->nservers; j++)
        if (strcmp(p->servers[j]->conf->name, name) == 0)
            return p->servers[j];
    return NULL;
}

/* A kept pool's server for sc that can go on as it is, or NULL. */
static server_rt_t *find_server(pool_rt_t *p, const wn_conf_pool_t *pc,
                                const wn_conf_server_t *sc, server_rt_t *const *taken,
                                uint32_t ntaken)
{
    for (uint32_t j = 0; j < p->nservers; j++) {
        server_rt_t *s = p->servers[j];
        if (wn_conf_server_conns_same(p->conf, s->conf, pc, sc) && !listed(taken, ntaken, s))
            return s;
    }
    return NULL;
}

/* What a retired server counts goes to the same-named server of its pool's
 * new configuration (so gauges it holds come down where they went up), or
 * nowhere, for good. */
static wn_server_stats_t *retired_server_stats(wn_worker_t *w, const server_rt_t *s)
{
    const pool_rt_t *p = s->pool;
    const char *name = s->conf->name;
    /* Once counted nowhere, always: control folds blocks by name, so what it
     * counted before went with the configuration that dropped its name; a
     * same-named server a later reload brings back must not take the
     * decrements (its gauges would go below zero). */
    if (p->retired || s->stats == w->sink_server)
        return w->sink_server;
    const wn_conf_server_t *sc = wn_conf_server_find(p->conf, name);
    if (sc == NULL)
        return w->sink_server;
    return wn_stats_server(w->stats, p->idx, (uint32_t)(sc - p->conf->servers));
}

static void retire_server(wn_worker_t *w, server_rt_t *s, bool replaced)
{
    wn_ctl_release(s); /* its waiters route with the new configuration */
    s->replaced = replaced;
    /* It points into the configuration it came with: it keeps it. */
    wn_conf_ref(w->conf);
    s->retired_conf = w->conf;
    s->retired = true;
    s->retired_ms = uv_now(&w->loop);
    s->retired_next = w->retired_servers;
    w->retired_servers = s;
}

static void retire_pool(wn_worker_t *w, pool_rt_t *p)
{
    wn_ctl_release_pool(p);
    wn_conf_ref(w->conf);
    p->retired_conf = w->conf;
    p->retired = true;
    p->retired_ms = uv_now(&w->loop);
    p->stats = w->sink_pool;
    for (uint32_t j = 0; j < p->nservers; j++)
        p->servers[j]->stats = w->sink_server;
    for (client_t *c = w->clients; c != NULL; c = c->next)
        if (c->pool == p)
            wn_client_shutdown(c);
    p->retired_next = w->retired_pools;
    w->retired_pools = p;
    wn_log_info("pool '%s': removed; %u client(s) finish what they asked", p->conf->name,
                p->nclients);
}

typedef struct plan {
    pool_rt_t **pools;     /* [npools]: kept or new */
    server_rt_t ***servers; /* [npools]: kept pools' new server lists */
    bool *fresh;           /* [npools] */
    listener_t **claimed;  /* [npools]: an old listener on the same address */
    listener_t **old_l;    /* [old npools]: old pools' listeners */
    uint32_t npools;
} plan_t;

static void plan_free(plan_t *pl)
{
    free(pl->pools);
    free(pl->servers);
    free(pl->fresh);
    free(pl->claimed);
    free(pl->old_l);
}

/* Every allocation and address lookup, before anything changes. */
static int plan_make(wn_worker_t *w, const wn_conf_t *nc, plan_t *pl, char *err, size_t errlen)
{
    size_t n = nc->npools ? nc->npools : 1;
    pl->npools = nc->npools;
    pl->pools = calloc(n, sizeof(*pl->pools));
    pl->servers = calloc(n, sizeof(*pl->servers));
    pl->fresh = calloc(n, sizeof(*pl->fresh));
    pl->claimed = calloc(n, sizeof(*pl->claimed));
    pl->old_l = calloc(w->npools ? w->npools : 1, sizeof(*pl->old_l));
    if (pl->pools == NULL || pl->servers == NULL || pl->fresh == NULL || pl->claimed == NULL ||
        pl->old_l == NULL) {
        snprintf(err, errlen, "out of memory");
        return WN_ENOMEM;
    }
    for (uint32_t i = 0; i < nc->npools; i++) {
        const wn_conf_pool_t *pc = &nc->pools[i];
        pool_rt_t *old = find_pool(w, pc->name);
        if (old == NULL) {
            pl->pools[i] = wn_pool_rt_create(w, pc, i, err, errlen);
            if (pl->pools[i] == NULL)
                return WN_EINVAL;
            pl->fresh[i] = true;
            continue;
        }
        pl->pools[i] = old;
        server_rt_t **v = calloc(pc->nservers ? pc->nservers : 1, sizeof(*v));
        if (v == NULL) {
            snprintf(err, errlen, "out of memory");
            return WN_ENOMEM;
        }
        pl->servers[i] = v;
        for (uint32_t j = 0; j < pc->nservers; j++) {
            v[j] = find_server(old, pc, &pc->servers[j], v, j);
            if (v[j] == NULL) {
                v[j] = wn_server_rt_create(old, pc, j, err, errlen);
                if (v[j] == NULL)
                    return WN_EINVAL;
                /* New connections to a kept server (server_connections,
                 * redis_auth changed): control's count of its failures goes
                 * on, and so does the duty to report its next answer. */
                const server_rt_t *was = same_name(old, pc->servers[j].name);
                v[j]->reported = was != NULL && was->reported;
                v[j]->hold_spent = was != NULL && was->hold_spent; /* no verdict yet */
                v[j]->added = true;
            }
        }
    }
    return 0;
}

/* Undo plan_make: only what it created goes. */
static void plan_undo(const wn_conf_t *nc, plan_t *pl)
{
    for (uint32_t i = 0; pl->pools != NULL && i < nc->npools; i++) {
        if (pl->pools[i] == NULL)
            continue; /* not planned (nor anything after it) */
        if (pl->fresh[i]) {
            wn_pool_rt_destroy(pl->pools[i]);
            continue;
        }
        server_rt_t **v = pl->servers[i];
        for (uint32_t j = 0; v != NULL && j < nc->pools[i].nservers; j++)
            if (v[j] != NULL && !listed(pl->pools[i]->servers, pl->pools[i]->nservers, v[j]))
                wn_server_rt_destroy(v[j]);
        free(v);
    }
}

/* A listener serves pc's address: as written, or as looked up (localhost
 * for 127.0.0.1), so a respelled address keeps its socket and the
 * connections waiting in its accept queue. */
static bool same_listen(const listener_t *l, const wn_conf_pool_t *pc)
{
    return wn_conf_addr_same(l->addr, &pc->listen) ||
           (!pc->listen.is_unix && wn_sockaddr_same(&l->sa, &pc->listen_sa));
}

/* An old listener serves pool p (pc) from now on. */
static void give_listener(listener_t *l, pool_rt_t *p, const wn_conf_pool_t *pc)
{
    l->pool = p;
    l->addr = &pc->listen;
    if (l->addr_conf != NULL) {
        wn_conf_unref(l->addr_conf); /* its address is this configuration's too */
        l->addr_conf = NULL;
    }
    p->listener = l;
}

/* Old listeners go to the new pools on their addresses; the rest open new
 * sockets; only then do old listeners nobody took close. */
static int move_listeners(wn_worker_t *w, const wn_conf_t *nc, plan_t *pl, char *err,
                          size_t errlen)
{
    for (uint32_t k = 0; k < w->npools; k++) {
        pl->old_l[k] = w->pools[k]->listener;
        w->pools[k]->listener = NULL;
    }
    for (uint32_t i = 0; i < nc->npools; i++)
        for (uint32_t k = 0; k < w->npools && pl->claimed[i] == NULL; k++)
            if (pl->old_l[k] != NULL && same_listen(pl->old_l[k], &nc->pools[i])) {
                pl->claimed[i] = pl->old_l[k];
                pl->old_l[k] = NULL;
            }
    int rc = 0;
    /* the sockets other pools serve on, for systemd's (out of memory: none taken) */
    uint64_t *taken =
        w->activated != NULL ? calloc(nc->npools ? nc->npools : 1, sizeof(*taken)) : NULL;
    for (uint32_t i = 0; i < nc->npools; i++) {
        pool_rt_t *p = pl->pools[i];
        const wn_conf_pool_t *pc = &nc->pools[i];
        listener_t *l = pl->claimed[i];
        if (l != NULL) {
            give_listener(l, p, pc);
            continue;
        }
        /* A socket systemd handed over for it (and no other pool's now):
         * walnut could not bind beside systemd's own copy (no SO_REUSEPORT
         * there). */
        int fd = -1;
        if (taken != NULL) {
            uint32_t ntaken = 0;
            for (uint32_t k = 0; k < nc->npools; k++) {
                const listener_t *o = k < i ? pl->pools[k]->listener : pl->claimed[k];
                if (o != NULL)
                    taken[ntaken++] = o->sock_id;
            }
            fd = wn_listen_activated(w->activated, nc, i, w->id, taken, ntaken);
        }
        /* A listener of a pool this reload drops may serve on that very
         * descriptor: it goes on, for this pool (one descriptor, one watch
         * in the loop). */
        for (uint32_t k = 0; fd >= 0 && l == NULL && k < w->npools; k++)
            if (pl->old_l[k] != NULL && pl->old_l[k]->acc.keep_fd && pl->old_l[k]->acc.fd == fd) {
                l = pl->old_l[k];
                pl->old_l[k] = NULL;
            }
        if (l != NULL) {
            give_listener(l, p, pc);
            continue;
        }
        if (fd < 0 && pc->listen.is_unix && !w->accept_unix)
            continue;
        char why[256];
        int r = fd >= 0 ? wn_listen_adopt(p, fd, true, why, sizeof(why))
                        : wn_listen_open(p, false, why, sizeof(why));
        if (r < 0) {
            wn_listen_close(p);
            /* The pool's old listener, if it had one, serves on (the new
             * address is bound before the old one closes, or not at all);
             * the next reload tries the new address again. */
            listener_t *kept = NULL;
            for (uint32_t k = 0; k < w->npools && kept == NULL; k++)
                if (pl->old_l[k] != NULL && strcmp(w->pools[k]->conf->name, pc->name) == 0) {
                    kept = pl->old_l[k];
                    pl->old_l[k] = NULL;
                }
            if (kept != NULL) {
                /* Its address is the old configuration's: held with it. */
                if (kept->addr_conf == NULL) {
                    wn_conf_ref(w->conf);
                    kept->addr_conf = w->conf;
                }
                kept->pool = p;
                p->listener = kept;
            }
            wn_log_error("reload: %s%s", why,
                         kept != NULL ? "; the pool listens where it did until a reload can "
                                        "bind the new address"
                                      : "");
            if (rc == 0)
                snprintf(err, errlen, "%s", why);
            rc = r;
        }
    }
    free(taken);
    /* A pool that goes on at a new address serves the clients whose
     * connections the kernel took on the old one (as the README promises);
     * a retired pool's would be closed at once anyway. */
    for (uint32_t k = 0; k < w->npools; k++) {
        if (w->pools[k]->retired)
            wn_listener_close(pl->old_l[k]);
        else
            wn_listener_close_serving(pl->old_l[k]);
    }
    return rc;
}

/* The message is not applied: what it carries is given back. */
static void drop_msg(const wn_msg_t *m)
{
    for (uint32_t i = 0; i < m->nrings; i++)
        wn_ring_unref(m->rings[i]);
    free(m->rings);
    wn_conf_unref(m->conf);
}

/* A kept pool takes its new server list and settings: servers no longer
 * listed retire, timers follow a changed timeout. */
static void commit_kept(wn_worker_t *w, pool_rt_t *p, const wn_conf_pool_t *pc, uint32_t idx,
                        server_rt_t **ns)
{
    for (uint32_t j = 0; j < p->nservers; j++)
        if (!listed(ns, pc->nservers, p->servers[j]))
            retire_server(w, p->servers[j],
                          wn_conf_server_find(pc, p->servers[j]->conf->name) != NULL);
    free(p->servers);
    p->servers = ns;
    p->nservers = pc->nservers;
    for (uint32_t j = 0; j < pc->nservers; j++) {
        p->servers[j]->conf = &pc->servers[j];
        p->servers[j]->idx = j;
    }
    int old_timeout = p->conf->timeout;
    p->conf = pc;
    p->idx = idx;
    p->buffer_limit = pc->client_buffer_limit;
    if (pc->timeout == old_timeout)
        return;
    /* Timers were armed (or not) by the old one. */
    for (uint32_t j = 0; j < p->nservers; j++)
        wn_server_timeout_changed(p->servers[j]);
    for (server_rt_t *s = w->retired_servers; s != NULL; s = s->retired_next)
        if (s->pool == p)
            wn_server_timeout_changed(s);
}

/* Every hold ends: held clients route with the configuration in force. */
static void release_all(wn_worker_t *w)
{
    for (uint32_t k = 0; k < w->npools; k++)
        wn_ctl_release_pool(w->pools[k]);
}

int wn_reconf_apply(wn_worker_t *w, const wn_msg_t *m)
{
    wn_conf_t *nc = m->conf;
    char err[256] = "";
    plan_t pl = {0};
    if (w->stopping || m->nrings != nc->npools) {
        release_all(w);
        drop_msg(m);
        return UV_ECANCELED;
    }
    /* New pools and servers count in the new block from their start. */
    wn_stats_block_t *old_block = w->stats;
    w->stats = m->block;
    int rc;
    if (wn_test_fault("WALNUT_TEST_REFUSE_CONFIG")) { /* as if out of memory */
        snprintf(err, sizeof(err), "out of memory (test hook)");
        rc = WN_ENOMEM;
    } else {
        rc = plan_make(w, nc, &pl, err, sizeof(err));
    }
    if (rc < 0) {
        wn_log_error("reload: cannot apply generation %llu: %s; serving the configuration "
                     "it had",
                     (unsigned long long)m->gen, err);
        plan_undo(nc, &pl);
        plan_free(&pl);
        w->stats = old_block;
        drop_msg(m);
        release_all(w); /* control's verdicts now name a generation it has not */
        return rc;
    }

    /* Commit; nothing below allocates except listeners. */
    for (uint32_t k = 0; k < w->npools; k++)
        if (wn_conf_pool_find(nc, w->pools[k]->conf->name) == NULL)
            retire_pool(w, w->pools[k]);
    for (uint32_t i = 0; i < nc->npools; i++) {
        pool_rt_t *p = pl.pools[i];
        if (!pl.fresh[i]) {
            commit_kept(w, p, &nc->pools[i], i, pl.servers[i]);
            pl.servers[i] = NULL;
        }
        wn_ring_unref(p->ring);
        p->ring = m->rings[i];
        p->epoch = wn_ring_epoch(p->ring);
        wn_pool_rt_count_in(p, w->stats);
        /* A kept server still on the ring stays suspect: control kept what
         * it knows of it, and its verdict is still to come. */
        wn_ctl_release_unrouted(p);
    }
    /* Nothing may count in the old block once control is told (it frees it). */
    for (server_rt_t *s = w->retired_servers; s != NULL; s = s->retired_next)
        s->stats = retired_server_stats(w, s);
    free(m->rings);
    rc = move_listeners(w, nc, &pl, err, sizeof(err));
    free(w->pools);
    w->pools = pl.pools;
    w->npools = nc->npools;
    pl.pools = NULL;
    for (client_t *c = w->clients; c != NULL; c = c->next)
        if (!c->pool->retired)
            wn_client_limits(c);
    /* What still points into the old configuration holds its own reference. */
    wn_conf_unref(w->conf);
    w->conf = nc;
    w->gen = m->gen;
    /* A gauge the worker sets (not adds to) must not count twice once its
     * old block is folded into control's: every one of them (flush.c). */
    wn_stat_set(&old_block->global[WN_G_buffer_bytes], 0);
    wn_stat_set(&old_block->global[WN_G_client_bytes], 0);
    /* preconnect: every server of a new pool, and those new to a kept one
     * (added, or made anew: moved, server_connections or redis_auth changed) */
    for (uint32_t i = 0; i < w->npools; i++) {
        pool_rt_t *p = w->pools[i];
        for (uint32_t j = 0; j < p->nservers; j++) {
            if (p->conf->preconnect && (pl.fresh[i] || p->servers[j]->added))
                wn_server_preconnect(p->servers[j]);
            p->servers[j]->added = false;
        }
    }
    plan_free(&pl);
    arm_reap(w);
    wn_log_info("now on configuration generation %llu (%u pool(s))", (unsigned long long)w->gen,
                w->npools);
    return rc;
}

static void close_server(server_rt_t *s)
{
    s->closing = true;
    wn_server_close_all(s);
}

static bool stats_waiting_on(const wn_worker_t *w, const pool_rt_t *p)
{
    for (uint32_t i = 0; i < w->nstats_waiting; i++)
        if (w->stats_waiting[i]->pool == p)
            return true;
    return false;
}

/* A server retired from p still drains: p must outlive it. */
static bool has_retired_server(const wn_worker_t *w, const pool_rt_t *p)
{
    for (const server_rt_t *s = w->retired_servers; s != NULL; s = s->retired_next)
        if (s->pool == p)
            return true;
    return false;
}

static void destroy_retired_server(server_rt_t *s)
{
    wn_conf_t *conf = s->retired_conf;
    wn_server_rt_destroy(s);
    wn_conf_unref(conf);
}

static void destroy_retired_pool(pool_rt_t *p)
{
    wn_conf_t *conf = p->retired_conf;
    wn_pool_rt_destroy(p);
    wn_conf_unref(conf);
}

/* The grace is over for a removed pool: clients still there (a request
 * never finished, a pipeline that never pauses) are closed, as at stop. */
static void end_clients(wn_worker_t *w, pool_rt_t *p)
{
    for (client_t *c = w->clients; c != NULL; c = c->next)
        if (c->pool == p && !c->broken) {
            c->broken = true;
            wn_client_mark(c);
        }
}

bool wn_reconf_reap(wn_worker_t *w)
{
    uint64_t now = uv_now(&w->loop);
    for (server_rt_t **sp = &w->retired_servers; *sp != NULL;) {
        server_rt_t *s = *sp;
        if (!s->closing && (wn_server_idle(s) || now >= s->retired_ms + w->retire_grace_ms))
            close_server(s);
        if (s->closing && wn_server_closed(s)) {
            *sp = s->retired_next;
            if (!s->replaced) {
                wn_log_info("pool '%s': removed server %s closed", s->pool->conf->name,
                            s->conf->label);
            } else {
                char addr[128] = "its unix socket";
                if (!s->conf->addr.is_unix)
                    wn_sockaddr_format(&s->addr, addr, sizeof(addr));
                wn_log_info("pool '%s': server %s: its earlier connections (to %s) closed; "
                            "new ones serve it",
                            s->pool->conf->name, s->conf->label, addr);
            }
            destroy_retired_server(s);
            continue;
        }
        sp = &s->retired_next;
    }
    for (pool_rt_t **pp = &w->retired_pools; *pp != NULL;) {
        pool_rt_t *p = *pp;
        bool idle = p->nclients == 0 && !stats_waiting_on(w, p) && !has_retired_server(w, p);
        bool late = now >= p->retired_ms + w->retire_grace_ms;
        if (late && p->nclients > 0)
            end_clients(w, p);
        bool closed = true;
        for (uint32_t j = 0; j < p->nservers; j++) {
            server_rt_t *s = p->servers[j];
            /* A client still there after the grace may send on: its request
             * opens a connection to the closed server again, so once the last
             * client is gone, what is open closes again. */
            if ((!s->closing && (idle || late)) || (idle && !wn_server_closed(s)))
                close_server(s);
            closed = closed && s->closing && wn_server_closed(s);
        }
        if (idle && closed) {
            *pp = p->retired_next;
            wn_log_info("pool '%s': removed, its clients and servers closed", p->conf->name);
            destroy_retired_pool(p);
            continue;
        }
        pp = &p->retired_next;
    }
    return w->retired_servers == NULL && w->retired_pools == NULL;
}

void wn_reconf_close_all(wn_worker_t *w)
{
    for (server_rt_t *s = w->retired_servers; s != NULL; s = s->retired_next) {
        wn_server_check_counts(s);
        close_server(s);
    }
    for (pool_rt_t *p = w->retired_pools; p != NULL; p = p->retired_next)
        for (uint32_t j = 0; j < p->nservers; j++) {
            wn_server_check_counts(p->servers[j]);
            close_server(p->servers[j]);
        }
    if (w->reap_timer_open) {
        uv_close((uv_handle_t *)&w->reap_timer, NULL);
        w->reap_timer_open = false;
    }
}

void wn_reconf_free_all(wn_worker_t *w)
{
    while (w->retired_servers != NULL) {
        server_rt_t *s = w->retired_servers;
        w->retired_servers = s->retired_next;
        destroy_retired_server(s);
    }
    while (w->retired_pools != NULL) {
        pool_rt_t *p = w->retired_pools;
        w->retired_pools = p->retired_next;
        destroy_retired_pool(p);
    }
}
