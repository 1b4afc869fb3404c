/*
 * control/pools.c: control's pools and servers as objects: made from the
 * configuration at start, kept, added or retired by a reload (a kept server,
 * same name and address, keeps its health state; a retired one closes its
 * probe and is freed in the close callbacks), and freed at stop. The health
 * decisions about them are health.c's. Control thread only.
 */
#include "control_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"

/* Looks the server's address up (the first address wins, as in twemproxy)
 * into sc->sa: the one address control probes and every worker connects to.
 * A reload's names were looked up ahead, on threads (ahead.c); at start,
 * blocking, on the control thread only; workers never ask DNS. */
static int resolve(const control_t *ctl, wn_conf_server_t *sc)
{
    int rc = wn_ahead_answer(ctl, &sc->addr, &sc->sa, NULL);
    if (rc == WN_AHEAD_UNASKED)
        rc = wn_conf_addr_lookup(&sc->addr, false, &sc->sa, NULL);
    sc->has_sa = rc == 0;
    return rc;
}

/* A server whose name did not resolve is kept without an address: its
 * requests and probes fail ("Host is down", as twemproxy answers) until a
 * lookup in the background (dns.c) or a reload finds it. */
static void unresolved(const wn_conf_pool_t *pc, const wn_conf_server_t *sc, int rc)
{
    char until[96];
    if (pc->dns_refresh_interval == 0)
        snprintf(until, sizeof(until), "a reload finds its address (dns_refresh_interval is 0)");
    else if ((unsigned)pc->dns_refresh_interval >= WN_DNS_FAILING_MS)
        snprintf(until, sizeof(until), "its name resolves (looked up again every second)");
    else
        snprintf(until, sizeof(until), "its name resolves (looked up again every %u ms)",
                 (unsigned)pc->dns_refresh_interval);
    wn_log_warn("pool '%s': server %s: cannot resolve '%s' (%s): its requests fail until %s",
                pc->name, sc->label, sc->addr.host, wn_strerror(rc), until);
}

/* A server's state, without handles yet (server_open adds them): NULL with
 * a line in err when memory is short, or when its address does not resolve
 * and must (a server a reload adds: the reload is refused, saying why; one
 * in the configuration walnut starts with is kept, as twemproxy keeps it). */
static hserver_t *server_new(const control_t *ctl, const wn_conf_pool_t *pc, wn_conf_server_t *sc,
                             bool must_resolve, char *err, size_t errlen)
{
    hserver_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "pool '%s': out of memory", pc->name);
        return NULL;
    }
    s->conf = sc;
    int rc = sc->addr.is_unix ? 0 : resolve(ctl, sc);
    if (rc < 0 && must_resolve) {
        snprintf(err, errlen, "pool '%s': server %s: cannot resolve '%s'", pc->name, sc->label,
                 sc->addr.host);
        free(s);
        return NULL;
    }
    if (rc < 0)
        unresolved(pc, sc, rc);
    return s;
}

/* A kept server keeps the address it was looked up to, or the one a
 * lookup in the background moved it to (dns.c): a reload asks DNS only for
 * servers it adds. Looking every name up here would block control's loop
 * (and its watchdog pings) for the resolver's timeout per server while DNS
 * is down. */
static bool kept_asks_dns(const wn_conf_pool_t *pc, const wn_conf_server_t *sc, const hserver_t *s,
                          bool ask_dns)
{
    /* It never had one (DNS failed at start): a SIGHUP asks again when no
     * lookups run in the background (they ask every second); an address
     * change never does, it must not wait on DNS. */
    return !sc->addr.is_unix && !s->dns.moved && !s->conf->has_sa &&
           pc->dns_refresh_interval == 0 && ask_dns;
}

static void keep_address(const control_t *ctl, const wn_conf_pool_t *pc, wn_conf_server_t *sc,
                         const hserver_t *s, bool ask_dns)
{
    bool ask = kept_asks_dns(pc, sc, s, ask_dns);
    sc->sa = s->dns.moved ? s->dns.sa : s->conf->sa;
    sc->has_sa = s->dns.moved || s->conf->has_sa;
    if (ask) {
        int rc = resolve(ctl, sc);
        if (rc < 0)
            unresolved(pc, sc, rc);
    }
}

static void server_open(hserver_t *s, hpool_t *p, uint32_t idx)
{
    s->pool = p;
    s->idx = idx;
    wn_dns_server_new(p->ctl, s);
    uv_timer_init(&p->ctl->loop, &s->probe.timer);
    s->probe.timer.data = s;
}

void health_server_release(hserver_t *s)
{
    if (--s->closes > 0)
        return;
    free(s->probe.wbuf);
    free(s);
}

static void server_handle_closed(uv_handle_t *h)
{
    health_server_release(h->data);
}

/* The server leaves (a reload dropped it, or walnut stops): its probe and
 * timer close, then it is freed. A server never opened is freed at once. */
static void server_retire(hserver_t *s)
{
    s->retired = true;
    s->closes = 1;
    health_probe_close(s);
    if (s->probe.closing)
        s->closes++; /* probe_closed releases it */
    wn_dns_server_retire(s);
    if (s->probe.timer.loop != NULL)
        uv_close((uv_handle_t *)&s->probe.timer, server_handle_closed);
    else
        health_server_release(s);
}

/* A pool's state with room for its servers, without handles yet: NULL with
 * a line in err. */
static hpool_t *pool_new(control_t *ctl, const wn_conf_pool_t *pc, char *err, size_t errlen)
{
    hpool_t *p = calloc(1, sizeof(*p));
    if (p != NULL) {
        p->servers = calloc(pc->nservers ? pc->nservers : 1, sizeof(*p->servers));
        p->worker_epoch = calloc(ctl->nworkers > 0 ? (size_t)ctl->nworkers : 1,
                                 sizeof(*p->worker_epoch));
    }
    if (p == NULL || p->servers == NULL || p->worker_epoch == NULL) {
        if (p != NULL) {
            free(p->servers);
            free(p->worker_epoch);
        }
        free(p);
        snprintf(err, errlen, "pool '%s': out of memory", pc->name);
        return NULL;
    }
    p->ctl = ctl;
    p->conf = pc;
    return p;
}

static void pool_free(hpool_t *p)
{
    wn_ring_unref(p->ring);
    free(p->servers);
    free(p->worker_epoch);
    free(p);
}

static void pool_timer_closed(uv_handle_t *h)
{
    pool_free(h->data);
}

/* A pool a reload prepared but could not commit: nothing was opened. */
static void pool_discard(hpool_t *p)
{
    for (uint32_t j = 0; j < p->nservers; j++)
        free(p->servers[j]);
    pool_free(p);
}

static void pool_open(hpool_t *p, uint32_t idx)
{
    p->idx = idx;
    uv_timer_init(&p->ctl->loop, &p->rebuild_timer);
    p->rebuild_timer.data = p;
    for (uint32_t j = 0; j < p->nservers; j++)
        server_open(p->servers[j], p, j);
}

/* The pool is gone from the config: freed when its timer closes. */
static void pool_retire(hpool_t *p)
{
    for (uint32_t j = 0; j < p->nservers; j++)
        if (p->servers[j] != NULL)
            server_retire(p->servers[j]);
    p->nservers = 0;
    if (p->rebuild_timer.loop != NULL)
        uv_close((uv_handle_t *)&p->rebuild_timer, pool_timer_closed);
    else
        pool_free(p);
}

/* Live servers' probes spread over one interval from now; a probe already
 * due sooner (a confirmation, a server just added) is not put off. */
static void schedule_probes(hpool_t *p)
{
    if (!health_probing(p))
        return;
    for (uint32_t j = 0; j < p->nservers; j++) {
        hserver_t *s = p->servers[j];
        uint64_t at =
            (uint64_t)p->conf->health_check_interval * j / (p->nservers ? p->nservers : 1);
        if (s->ejected || (uv_is_active((uv_handle_t *)&s->probe.timer) &&
                           uv_timer_get_due_in(&s->probe.timer) <= at))
            continue;
        health_probe_schedule(s, at);
    }
}

int health_init(control_t *ctl)
{
    char err[256];
    ctl->pools = calloc(ctl->conf->npools ? ctl->conf->npools : 1, sizeof(*ctl->pools));
    if (ctl->pools == NULL)
        return WN_ENOMEM;
    wn_dns_init(ctl);
    wn_ahead_init(ctl);
    for (uint32_t i = 0; i < ctl->conf->npools; i++) {
        wn_conf_pool_t *pc = &ctl->conf->pools[i];
        hpool_t *p = pool_new(ctl, pc, err, sizeof(err));
        if (p == NULL) {
            wn_log_error("%s", err);
            return WN_ENOMEM;
        }
        ctl->pools[ctl->npools++] = p;
        for (uint32_t j = 0; j < pc->nservers; j++) {
            p->servers[j] = server_new(ctl, pc, &pc->servers[j], false, err, sizeof(err));
            if (p->servers[j] == NULL) {
                wn_log_error("%s", err);
                return WN_EINVAL; /* health_stop frees what was made */
            }
            p->nservers++;
        }
        pool_open(p, i);
        int rc = health_build_ring(p);
        if (rc < 0) {
            wn_log_error("pool '%s': cannot build its ring: %s", pc->name, wn_strerror(rc));
            return rc;
        }
        p->converged_epoch = p->epoch;
        for (int w = 0; w < ctl->nworkers; w++)
            p->worker_epoch[w] = p->epoch;
    }
    return 0;
}

void health_start(control_t *ctl)
{
    for (uint32_t i = 0; i < ctl->npools; i++)
        schedule_probes(ctl->pools[i]);
    wn_dns_start(ctl);
}

void health_stop(control_t *ctl)
{
    for (uint32_t i = 0; i < ctl->npools; i++)
        pool_retire(ctl->pools[i]);
    ctl->npools = 0;
    wn_ahead_close(ctl);
    wn_dns_stop(ctl);
}

void health_deinit(control_t *ctl)
{
    free(ctl->pools);
    ctl->pools = NULL;
}

/* ---- reload ---------------------------------------------------------------- */

static hpool_t *find_pool(control_t *ctl, const char *name)
{
    for (uint32_t i = 0; i < ctl->npools; i++)
        if (strcmp(ctl->pools[i]->conf->name, name) == 0)
            return ctl->pools[i];
    return NULL;
}

static hserver_t *find_server(hpool_t *p, const wn_conf_server_t *sc)
{
    for (uint32_t j = 0; j < p->nservers; j++)
        if (!p->servers[j]->retired && wn_conf_server_same(p->servers[j]->conf, sc))
            return p->servers[j];
    return NULL;
}

/* A kept server under its new config: connections to it for probes that
 * were set up for other AUTH/SELECT start over. */
static void server_carry(hserver_t *s, const wn_conf_pool_t *pc, uint32_t idx,
                         const wn_conf_server_t *sc)
{
    if (!wn_conf_server_conns_same(s->pool->conf, s->conf, pc, sc))
        health_probe_close(s);
    s->conf = sc;
    s->idx = idx;
    s->dns.moved = false; /* sc has the address it moved to */
}

/* What can only change with a restart: refused before anything is touched. */
static int check_fixed(control_t *ctl, const wn_conf_t *nc, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < nc->npools; i++) {
        hpool_t *old = find_pool(ctl, nc->pools[i].name);
        if (old != NULL && old->conf->redis != nc->pools[i].redis) {
            snprintf(err, errlen,
                     "pool '%s': its protocol cannot change while walnut runs (redis: %s -> "
                     "%s); restart walnut for that",
                     nc->pools[i].name, old->conf->redis ? "true" : "false",
                     nc->pools[i].redis ? "true" : "false");
            return WN_EINVAL;
        }
    }
    return 0;
}

/* A reload prepared: for the new config's pool i, the pool (a new one, or
 * the kept one), for a kept pool its new server list (kept servers and new
 * ones not yet opened), and the pool's new ring. Every allocation and
 * address lookup happens here, so the commit cannot fail half-way. */
typedef struct plan {
    bool ask_dns; /* a kept server without an address is looked up (a SIGHUP) */
    uint32_t n;
    hpool_t **pool;
    hserver_t ***servers;
    bool *fresh;
    wn_ring_t **ring;
} plan_t;

static void plan_free(plan_t *pl)
{
    free(pl->pool);
    free(pl->servers);
    free(pl->fresh);
    free(pl->ring);
}

/* The reload failed: what the plan made is freed, nothing else is touched. */
static void plan_discard(plan_t *pl, const wn_conf_t *nc)
{
    for (uint32_t i = 0; pl->ring != NULL && i < pl->n; i++)
        wn_ring_unref(pl->ring[i]);
    for (uint32_t i = 0; pl->pool != NULL && i < pl->n; i++) {
        if (pl->pool[i] == NULL)
            continue;
        if (pl->fresh[i]) {
            pl->pool[i]->nservers = nc->pools[i].nservers;
            pool_discard(pl->pool[i]);
        } else if (pl->servers[i] != NULL) {
            for (uint32_t j = 0; j < nc->pools[i].nservers; j++)
                if (pl->servers[i][j] != NULL && pl->servers[i][j]->pool == NULL)
                    free(pl->servers[i][j]);
            free(pl->servers[i]);
        }
    }
    plan_free(pl);
}

static int plan_pool(control_t *ctl, plan_t *pl, uint32_t i, wn_conf_pool_t *pc, char *err,
                     size_t errlen)
{
    hpool_t *old = find_pool(ctl, pc->name);
    if (old == NULL) {
        pl->pool[i] = pool_new(ctl, pc, err, errlen);
        if (pl->pool[i] == NULL)
            return WN_ENOMEM;
        pl->fresh[i] = true;
        pl->servers[i] = pl->pool[i]->servers;
    } else {
        pl->pool[i] = old;
        pl->servers[i] = calloc(pc->nservers ? pc->nservers : 1, sizeof(**pl->servers));
        if (pl->servers[i] == NULL) {
            snprintf(err, errlen, "out of memory");
            return WN_ENOMEM;
        }
    }
    for (uint32_t j = 0; j < pc->nservers; j++) {
        hserver_t *s = old == NULL ? NULL : find_server(old, &pc->servers[j]);
        if (s != NULL)
            keep_address(ctl, pc, &pc->servers[j], s, pl->ask_dns);
        else
            s = server_new(ctl, pc, &pc->servers[j], true, err, errlen);
        if (s == NULL)
            return WN_EINVAL;
        pl->servers[i][j] = s;
    }
    /* The ring now: kept servers keep their ejected state, new ones are live. */
    int rc = health_ring_make(pc, pl->servers[i], (old != NULL ? old->epoch : 0) + 1,
                              &pl->ring[i]);
    if (rc < 0)
        snprintf(err, errlen, "pool '%s': out of memory", pc->name);
    return rc;
}

int health_reload_names(control_t *ctl, const wn_conf_t *nc, wn_ahead_t *b)
{
    int rc = 0;
    for (uint32_t i = 0; i < nc->npools && rc == 0; i++) {
        const wn_conf_pool_t *pc = &nc->pools[i];
        hpool_t *old = find_pool(ctl, pc->name);
        for (uint32_t j = 0; j < pc->nservers && rc == 0; j++) {
            const wn_conf_server_t *sc = &pc->servers[j];
            const hserver_t *s = old == NULL ? NULL : find_server(old, sc);
            if (s == NULL || kept_asks_dns(pc, sc, s, true))
                rc = wn_ahead_add(b, &sc->addr);
        }
    }
    return rc;
}

static int plan_make(control_t *ctl, wn_conf_t *nc, plan_t *pl, char *err, size_t errlen)
{
    size_t n = nc->npools ? nc->npools : 1;
    pl->n = nc->npools;
    pl->pool = calloc(n, sizeof(*pl->pool));
    pl->servers = calloc(n, sizeof(*pl->servers));
    pl->fresh = calloc(n, sizeof(*pl->fresh));
    pl->ring = calloc(n, sizeof(*pl->ring));
    if (pl->pool == NULL || pl->servers == NULL || pl->fresh == NULL || pl->ring == NULL) {
        snprintf(err, errlen, "out of memory");
        return WN_ENOMEM;
    }
    for (uint32_t i = 0; i < nc->npools; i++) {
        int rc = plan_pool(ctl, pl, i, &nc->pools[i], err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* A kept pool takes its new server list: servers no longer listed go, kept
 * ones keep their health, new ones open and are probed at once. */
static void commit_kept(control_t *ctl, hpool_t *p, const wn_conf_pool_t *pc, uint32_t idx,
                        hserver_t **ns)
{
    for (uint32_t j = 0; j < p->nservers; j++) {
        bool kept = false;
        for (uint32_t k = 0; k < pc->nservers && !kept; k++)
            kept = ns[k] == p->servers[j];
        if (!kept) {
            wn_log_notice("pool '%s': server %s removed", pc->name, p->servers[j]->conf->label);
            server_retire(p->servers[j]);
        }
    }
    free(p->servers);
    p->servers = ns;
    p->nservers = pc->nservers;
    p->idx = idx;
    bool was_probing = health_probing(p);
    int old_interval = p->conf->health_check_interval;
    for (uint32_t j = 0; j < pc->nservers; j++) {
        hserver_t *s = p->servers[j];
        if (s->pool != NULL) {
            server_carry(s, pc, j, &pc->servers[j]);
            continue;
        }
        server_open(s, p, j);
        wn_log_notice("pool '%s': server %s added", pc->name, pc->servers[j].label);
        if (pc->health_check_interval > 0 && !ctl->stopping)
            health_probe_schedule(s, 0);
    }
    p->conf = pc;
    if (!pc->auto_eject_hosts)
        for (uint32_t j = 0; j < p->nservers; j++)
            health_reload_rejoin(p->servers[j]);
    else
        health_reload_cap(p);
    if (!ctl->stopping && (!was_probing || pc->health_check_interval < old_interval))
        schedule_probes(p); /* at the new interval from now (not the old one's turn) */
    if (was_probing && !health_probing(p))
        for (uint32_t j = 0; j < p->nservers; j++)
            health_probes_off(p->servers[j]);
    /* The ring is rebuilt now, whatever was pending. */
    uv_timer_stop(&p->rebuild_timer);
    p->rebuild_pending = false;
}

static void commit_fresh(hpool_t *p, const wn_conf_pool_t *pc, uint32_t idx)
{
    p->nservers = pc->nservers;
    pool_open(p, idx); /* worker_epoch starts zeroed (pool_new) */
}

int health_reload(control_t *ctl, wn_conf_t *nc, bool ask_dns, char *err, size_t errlen)
{
    plan_t pl = {.ask_dns = ask_dns};
    int rc = check_fixed(ctl, nc, err, errlen);
    if (rc == 0)
        rc = plan_make(ctl, nc, &pl, err, errlen);
    if (rc < 0) {
        plan_discard(&pl, nc);
        return rc;
    }
    /* Commit. Pools and servers that are gone close and free themselves. */
    for (uint32_t i = 0; i < ctl->npools; i++) {
        hpool_t *p = ctl->pools[i];
        if (wn_conf_pool_find(nc, p->conf->name) == NULL) {
            wn_log_notice("pool '%s': removed", p->conf->name);
            pool_retire(p);
        }
    }
    for (uint32_t i = 0; i < nc->npools; i++) {
        const wn_conf_pool_t *pc = &nc->pools[i];
        hpool_t *p = pl.pool[i];
        if (pl.fresh[i])
            commit_fresh(p, pc, i);
        else
            commit_kept(ctl, p, pc, i, pl.servers[i]);
        health_ring_install(p, pl.ring[i]);
        pl.ring[i] = NULL;
        if (pl.fresh[i]) {
            wn_log_notice("pool '%s': added, listening on %s, %u server(s)", pc->name,
                          pc->listen_text, pc->nservers);
            if (!ctl->stopping)
                schedule_probes(p);
        }
    }
    free(ctl->pools);
    ctl->pools = pl.pool;
    ctl->npools = nc->npools;
    pl.pool = NULL;
    plan_free(&pl);
    if (!ctl->stopping)
        wn_dns_start(ctl); /* names added or gone, intervals changed */
    return 0;
}
