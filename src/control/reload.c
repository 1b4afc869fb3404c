/*
 * control/reload.c: SIGHUP re-reads the configuration file. A file that does
 * not validate, or asks for what cannot change live (a pool's protocol), or
 * names a listen address another process serves, changes nothing: walnut
 * keeps serving the configuration it has and logs why, as -t would print it.
 *
 * A good one is applied in two steps. Control first takes it itself
 * (pools.c: kept servers keep their health, every ring is rebuilt), moves
 * its own counters to a block laid out for it, and sends every worker the
 * configuration as an immutable refcounted snapshot with the new rings and
 * a fresh counter block, under a new generation. Each worker applies it
 * between two events of its loop and says so; control then folds the
 * worker's old block into its own (counters carry over by name) and, once
 * every worker has answered, logs how many run it and tells systemd
 * READY=1. A worker that could not apply it (out of memory) stays on the
 * generation it had: the reload is then not converged (stats say so) until
 * a later one reaches it. A SIGHUP that comes meanwhile is applied right
 * after.
 *
 * A server whose name a lookup in the background found elsewhere (dns.c)
 * moves the same way: a generation that is the configuration in force,
 * copied in memory (the file is not read: it may have changed without a
 * SIGHUP), with the new address. Workers take it as a reload that changed
 * that server's line; systemd is not told of a reload.
 * Control thread only.
 */
#include "control_priv.h"
#include "fds.h"
#include "stats_view.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "walnut/core.h"
#include "walnut/route.h"

static void finish(control_t *ctl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reload_acked(control_t *ctl);
static void reload_looked_up(control_t *ctl, wn_conf_t *nc);

static void finish(control_t *ctl, const char *fmt, ...)
{
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime_r(&now, &tm));
    char what[120];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(ctl->last_reload, sizeof(ctl->last_reload), "last reload %s: %s", when, what);
    /* shown as JSON and in systemd's STATUS=, both UTF-8: a name cut in
     * the middle of a character must not make them invalid */
    wn_utf8_scrub(ctl->last_reload);
    wn_sd_state(ctl, "READY=1");
    wn_sd_status(ctl);
}

/* A new listen address nobody served yet: walnut's pools, compared as
 * configured (a kept one keeps the address its listener is bound to). */
static bool listen_new(const control_t *ctl, const wn_conf_pool_t *np)
{
    for (uint32_t j = 0; j < ctl->conf->npools; j++)
        if (wn_conf_addr_same(&np->listen, &ctl->conf->pools[j].listen))
            return false;
    return !np->listen.is_unix;
}

/* Every name a reload to nc asks for: its new listen addresses, and
 * (health_reload_names) its servers. */
static int reload_names(control_t *ctl, const wn_conf_t *nc, wn_ahead_t *b)
{
    int rc = 0;
    for (uint32_t i = 0; i < nc->npools && rc == 0; i++)
        if (listen_new(ctl, &nc->pools[i]))
            rc = wn_ahead_add(b, &nc->pools[i].listen);
    return rc < 0 ? rc : health_reload_names(ctl, nc, b);
}

/* The pool's listen address, looked up ahead (ahead.c) or now. */
static int listen_lookup(const control_t *ctl, wn_conf_pool_t *np, char *err, size_t errlen)
{
    int rc = wn_ahead_answer(ctl, &np->listen, &np->listen_sa, &np->listen_salen);
    return rc == WN_AHEAD_UNASKED ? wn_listen_resolve(np, err, errlen)
                                  : wn_listen_resolved(np, rc, err, errlen);
}

/* A pool listening where no pool listened before: is the address free?
 * (Looked up here, as every listen address: a kept one keeps the address
 * its listener is bound to.) Two pools of the file on one address, or a
 * pool on the stats server's, are refused before any address is probed:
 * the probe would blame another process. */
static int check_listeners(const control_t *ctl, wn_conf_t *nc, uint32_t *nnew, char *err,
                           size_t errlen)
{
    *nnew = 0;
    bool *fresh = calloc(nc->npools ? nc->npools : 1, sizeof(*fresh));
    if (fresh == NULL)
        return WN_ENOMEM;
    int rc = 0;
    for (uint32_t i = 0; i < nc->npools && rc == 0; i++) {
        wn_conf_pool_t *np = &nc->pools[i];
        const wn_conf_pool_t *served = NULL;
        for (uint32_t j = 0; j < ctl->conf->npools && served == NULL; j++)
            if (wn_conf_addr_same(&np->listen, &ctl->conf->pools[j].listen))
                served = &ctl->conf->pools[j];
        /* The same address spelled otherwise (localhost for 127.0.0.1): a
         * new listener joins walnut's own (SO_REUSEPORT), as for a move. */
        if (served == NULL && !np->listen.is_unix) {
            rc = listen_lookup(ctl, np, err, errlen);
            for (uint32_t j = 0; rc == 0 && j < ctl->conf->npools && served == NULL; j++)
                if (!ctl->conf->pools[j].listen.is_unix &&
                    wn_sockaddr_same(&ctl->conf->pools[j].listen_sa, &np->listen_sa))
                    served = &ctl->conf->pools[j];
        }
        if (served != NULL) {
            np->listen_sa = served->listen_sa;
            np->listen_salen = served->listen_salen;
        } else {
            fresh[i] = true;
        }
    }
    if (rc == 0)
        rc = wn_listen_apart(nc, ctl->stats_salen ? &ctl->stats_sa : NULL, err, errlen);
    for (uint32_t i = 0; i < nc->npools && rc == 0; i++) {
        if (!fresh[i])
            continue;
        /* as at start (sd.c): each socket needs a worker accepting on it,
         * or the kernel's share of clients for it waits forever */
        uint32_t nsock =
            wn_listen_activated_count(ctl->activated.n > 0 ? &ctl->activated : NULL, nc, i);
        if (nsock > (uint32_t)ctl->nworkers) {
            snprintf(err, errlen,
                     "pool '%s': systemd handed over %u sockets for it but walnut runs %d "
                     "worker(s), and each socket needs a worker of its own",
                     nc->pools[i].name, nsock, ctl->nworkers);
            rc = WN_EINVAL;
            break;
        }
        /* a socket systemd handed over is walnut's own: nothing to probe */
        if (nsock == 0)
            rc = wn_listen_check(&nc->pools[i], err, errlen);
        (*nnew)++;
    }
    free(fresh);
    return rc;
}

/* The next counter blocks: one per worker, and control's own with what it
 * counted so far carried over. */
static int make_blocks(control_t *ctl, wn_conf_t *nc, wn_stats_block_t **mine)
{
    *mine = wn_stats_block_create(nc);
    if (*mine == NULL)
        return WN_ENOMEM;
    for (int i = 0; i < ctl->nworkers; i++) {
        ctl->next_blocks[i] = wn_stats_block_create(nc);
        if (ctl->next_blocks[i] == NULL) {
            for (int j = 0; j <= i; j++) {
                wn_stats_block_destroy(ctl->next_blocks[j]);
                ctl->next_blocks[j] = NULL;
            }
            wn_stats_block_destroy(*mine);
            return WN_ENOMEM;
        }
    }
    return 0;
}

static void send_config(control_t *ctl, int worker)
{
    wn_ring_t **rings = calloc(ctl->npools ? ctl->npools : 1, sizeof(*rings));
    wn_msg_t m = {
        .type = WN_MSG_CONFIG,
        .gen = ctl->gen,
        .conf = ctl->conf,
        .rings = rings,
        .nrings = ctl->npools,
        .block = ctl->next_blocks[worker],
    };
    if (rings != NULL) {
        for (uint32_t p = 0; p < ctl->npools; p++) {
            rings[p] = ctl->pools[p]->ring;
            wn_ring_ref(rings[p]);
        }
        wn_conf_ref(ctl->conf);
        if (wn_worker_post(ctl->workers[worker], &m) == 0)
            return;
        for (uint32_t p = 0; p < ctl->npools; p++)
            wn_ring_unref(rings[p]);
        wn_conf_unref(ctl->conf);
        free(rings);
    }
    /* Only memory can fail here. That worker stays on the configuration it
     * has; its reports count for servers the new one keeps (by name), until
     * the next reload. */
    wn_log_error("reload: cannot send the configuration to worker %d: out of memory", worker);
    wn_stats_block_destroy(ctl->next_blocks[worker]);
    ctl->next_blocks[worker] = NULL;
    ctl->reload_failed = true;
    ctl->reload_acks--;
}

/* Everything a new configuration needs made before it is committed: its
 * listeners checked, counter blocks, control's pools and servers (ask_dns:
 * see health_reload). 0, or an error in err with nothing changed. */
static int prepare(control_t *ctl, wn_conf_t *nc, bool ask_dns, wn_stats_block_t **mine,
                   uint32_t *nnew, char *err, size_t errlen)
{
    int rc = check_listeners(ctl, nc, nnew, err, errlen);
    if (rc == 0 && make_blocks(ctl, nc, mine) < 0) {
        snprintf(err, errlen, "out of memory");
        rc = WN_ENOMEM;
    }
    if (rc == 0) {
        rc = health_reload(ctl, nc, ask_dns, err, errlen);
        if (rc < 0) {
            wn_stats_block_destroy(*mine);
            for (int i = 0; i < ctl->nworkers; i++) {
                wn_stats_block_destroy(ctl->next_blocks[i]);
                ctl->next_blocks[i] = NULL;
            }
        }
    }
    return rc;
}

/* Control runs nc (its reference taken) from here on, as generation gen + 1,
 * and sends it to every worker. */
static void commit(control_t *ctl, wn_conf_t *nc, wn_stats_block_t *mine, uint32_t nnew)
{
    wn_stats_block_t **own = &ctl->blocks[ctl->nblocks - 1];
    wn_stats_block_fold(mine, *own);
    wn_stats_block_destroy(*own);
    *own = mine;
    wn_conf_unref(ctl->prev_conf);
    ctl->prev_conf = ctl->conf;
    ctl->conf = nc;
    ctl->gen++;
    ctl->listeners_opened += nnew;
    wn_fds_budget(&ctl->budget, &ctl->budget_said, ctl->conf, ctl->nworkers);
    if (wn_client_budget_add_pools(&ctl->budget, ctl->conf) < 0)
        wn_log_error("reload: out of memory; a new pool's client_connections is counted per "
                     "worker (its share of it)");
    if (wn_control_stats_reconf(ctl) < 0)
        wn_log_error("reload: out of memory; command counters are not reported until a "
                     "reload can allocate their names");
    for (uint32_t p = 0; p < ctl->npools; p++)
        ctl->pools[p]->config_epoch = ctl->pools[p]->epoch;
    ctl->reload_start_ms = uv_now(&ctl->loop);
    ctl->reload_acks = ctl->nworkers;
    ctl->reload_failed = false;
}

static void run_deferred(control_t *ctl);

static void send_all(control_t *ctl)
{
    for (int i = 0; i < ctl->nworkers; i++)
        send_config(ctl, i);
    health_verdicts_due(ctl); /* behind the configuration, in its generation */
    if (ctl->reload_acks > 0)
        return; /* reload_acked ends it */
    if (!ctl->gen_by_dns)
        finish(ctl, "applied, but not every worker could take it");
    run_deferred(ctl); /* no answer will come to run them */
}

/* Applies the reload to nc (its reference given), or fails it saying why:
 * false then. */
static bool reload_apply(control_t *ctl, wn_conf_t *nc)
{
    char err[512];
    wn_stats_block_t *mine = NULL;
    uint32_t nnew = 0; /* pools listening where none did */
    int rc = prepare(ctl, nc, true, &mine, &nnew, err, sizeof(err));
    wn_ahead_drop(ctl); /* its answers were read */
    if (rc < 0) {
        wn_log_error("reload: %s; still serving the configuration loaded before", err);
        wn_conf_unref(nc);
        finish(ctl, "failed: %.96s", err);
        return false;
    }
    commit(ctl, nc, mine, nnew);
    ctl->gen_by_dns = false;
    wn_log_notice("reload: '%s' applied (generation %llu, %u pool(s)); sending it to %d "
                  "worker(s)",
                  ctl->conf_path, (unsigned long long)ctl->gen, ctl->npools, ctl->nworkers);
    send_all(ctl);
    return true;
}

void wn_control_reload(control_t *ctl)
{
    if (ctl->stopping || ctl->conf_path == NULL)
        return;
    if (ctl->reload_acks > 0 || ctl->ahead != NULL) {
        wn_log_notice("reload: the previous %s is still %s; this one follows it",
                      ctl->ahead != NULL ? "reload"
                      : ctl->gen_by_dns  ? "address change"
                                         : "reload",
                      ctl->ahead != NULL ? "looking names up" : "reaching the workers");
        ctl->reload_again = true;
        return;
    }
    wn_sd_state(ctl, "RELOADING=1\nMONOTONIC_USEC=%llu",
                (unsigned long long)wn_sd_monotonic_usec());
    char err[512];
    wn_conf_t *nc = NULL;
    int rc = wn_conf_load(ctl->conf_path, &nc, err, sizeof(err));
    if (rc == 0) {
        wn_ahead_t *b = wn_ahead_new();
        rc = b != NULL ? reload_names(ctl, nc, b) : WN_ENOMEM;
        if (rc < 0)
            wn_ahead_free(b);
        else if ((rc = wn_ahead_start(ctl, b, nc, reload_looked_up)) > 0) {
            wn_log_notice("reload: looking up %d name(s) first", rc);
            return; /* reload_looked_up goes on */
        }
    }
    if (rc < 0) {
        if (rc == WN_ENOMEM && nc != NULL)
            snprintf(err, sizeof(err), "out of memory");
        wn_log_error("reload: %s; still serving the configuration loaded before", err);
        wn_conf_unref(nc);
        finish(ctl, "failed: %.96s", err);
        return;
    }
    reload_apply(ctl, nc);
}

/* What waited for the reload (or address change) that just ended. */
static void run_deferred(control_t *ctl)
{
    if (ctl->reload_again) {
        ctl->reload_again = false;
        wn_control_reload(ctl);
    }
    if (ctl->readdress_again && ctl->reload_acks == 0 && ctl->ahead == NULL) {
        ctl->readdress_again = false;
        wn_control_readdress(ctl);
    }
}

/* The names the reload to nc looked up ahead have all answered: it goes on. */
static void reload_looked_up(control_t *ctl, wn_conf_t *nc)
{
    if (ctl->stopping) {
        wn_ahead_drop(ctl);
        wn_conf_unref(nc);
    } else if (!reload_apply(ctl, nc)) {
        run_deferred(ctl);
    }
}

void wn_control_readdress(control_t *ctl)
{
    if (ctl->stopping)
        return;
    if (ctl->reload_acks > 0 || ctl->ahead != NULL) {
        ctl->readdress_again = true; /* after it: it may even take the address itself */
        return;
    }
    bool moved = false;
    for (uint32_t p = 0; p < ctl->npools && !moved; p++)
        for (uint32_t j = 0; j < ctl->pools[p]->nservers && !moved; j++)
            moved = ctl->pools[p]->servers[j]->dns.moved;
    if (!moved)
        return; /* a reload took the addresses meanwhile */
    char err[512] = "out of memory";
    wn_stats_block_t *mine = NULL;
    uint32_t nnew = 0;
    /* the configuration in force, read again from memory, not from the file
     * (which may have changed without a SIGHUP); kept servers take the
     * addresses their lookups found (pools.c, keep_address) */
    wn_conf_t *nc = wn_conf_dup(ctl->conf);
    int rc = nc != NULL ? prepare(ctl, nc, false, &mine, &nnew, err, sizeof(err)) : WN_ENOMEM;
    if (rc < 0) {
        /* only memory can fail here: the next lookup tries again */
        wn_log_error("cannot move servers to their new addresses: %s", err);
        wn_conf_unref(nc);
        return;
    }
    commit(ctl, nc, mine, nnew);
    ctl->gen_by_dns = true;
    wn_log_notice("servers moved to their new addresses (generation %llu); sending it to %d "
                  "worker(s)",
                  (unsigned long long)ctl->gen, ctl->nworkers);
    send_all(ctl);
}

void wn_control_config_done(control_t *ctl, const wn_msg_t *m)
{
    int i = m->worker;
    /* epoch: the generation answered; gen: the one the worker now runs. */
    if (m->epoch != ctl->gen || i < 0 || i >= ctl->nworkers || ctl->next_blocks[i] == NULL)
        return;
    if (m->gen != m->epoch) {
        /* Out of memory in that worker: it serves what it had; its reports
         * count for servers the new configuration keeps, until the next
         * reload (wn_control_report_current). */
        wn_log_error("reload: worker %d could not apply generation %llu (%s); it keeps "
                     "serving generation %llu",
                     i, (unsigned long long)m->epoch, wn_strerror(m->err),
                     (unsigned long long)m->gen);
        wn_stats_block_destroy(ctl->next_blocks[i]);
        ctl->next_blocks[i] = NULL;
        ctl->reload_failed = true;
        reload_acked(ctl);
        return;
    }
    if (m->err < 0)
        ctl->reload_failed = true; /* a listener did not open: that worker logged why */
    /* The worker writes its new block only: its old counters carry over in
     * control's block, matched by pool and server name. */
    wn_stats_block_t *own = ctl->blocks[ctl->nblocks - 1];
    wn_stats_block_fold(own, ctl->blocks[i]);
    wn_stats_block_destroy(ctl->blocks[i]);
    ctl->blocks[i] = ctl->next_blocks[i];
    ctl->next_blocks[i] = NULL;
    for (uint32_t p = 0; p < ctl->npools; p++) {
        hpool_t *hp = ctl->pools[p];
        if (hp->worker_epoch[i] < hp->config_epoch)
            hp->worker_epoch[i] = hp->config_epoch;
    }
    ctl->worker_gen[i] = ctl->gen;
    reload_acked(ctl);
}

uint32_t wn_control_pool_current(const control_t *ctl, uint64_t gen, uint32_t pool)
{
    if (gen == ctl->gen)
        return pool < ctl->conf->npools ? pool : UINT32_MAX;
    const wn_conf_t *prev = ctl->prev_conf;
    if (prev == NULL || gen + 1 != ctl->gen || pool >= prev->npools)
        return UINT32_MAX;
    const wn_conf_pool_t *pc = wn_conf_pool_find(ctl->conf, prev->pools[pool].name);
    return pc != NULL ? (uint32_t)(pc - ctl->conf->pools) : UINT32_MAX;
}

bool wn_control_report_current(const control_t *ctl, wn_msg_t *m)
{
    if (m->gen == ctl->gen)
        return true;
    uint32_t p = wn_control_pool_current(ctl, m->gen, m->pool);
    if (p == UINT32_MAX || m->server >= ctl->prev_conf->pools[m->pool].nservers)
        return false;
    const wn_conf_pool_t *pp = &ctl->prev_conf->pools[m->pool];
    const wn_conf_pool_t *pc = &ctl->conf->pools[p];
    for (uint32_t i = 0; i < pc->nservers; i++) {
        if (wn_conf_server_same(&pc->servers[i], &pp->servers[m->server])) {
            const wn_conf_server_t *now = &pc->servers[i], *then = &pp->servers[m->server];
            if (then->has_sa && (!now->has_sa || !wn_sockaddr_same(&now->sa, &then->sa)))
                return false; /* about the address it moved from (dns.c) */
            m->pool = p;
            m->server = i;
            return true;
        }
    }
    return false;
}

int wn_control_workers_current(const control_t *ctl)
{
    int n = 0;
    for (int i = 0; i < ctl->nworkers; i++)
        n += ctl->worker_gen[i] == ctl->gen;
    return n;
}

/* One more worker answered; the last one ends the reload. */
static void reload_acked(control_t *ctl)
{
    if (--ctl->reload_acks > 0)
        return;
    int current = wn_control_workers_current(ctl);
    unsigned long long ms = uv_now(&ctl->loop) - ctl->reload_start_ms;
    if (ctl->gen_by_dns) {
        if (current == ctl->nworkers)
            wn_log_notice("all %d worker(s) run generation %llu, with the new addresses "
                          "(%llu ms)",
                          ctl->nworkers, (unsigned long long)ctl->gen, ms);
        else
            wn_log_warn("%d of %d worker(s) run generation %llu, with the new addresses (%llu "
                        "ms); the others use the old ones until a generation reaches them",
                        current, ctl->nworkers, (unsigned long long)ctl->gen, ms);
    } else if (current == ctl->nworkers && ctl->reload_failed)
        wn_log_warn("reload: all %d worker(s) run generation %llu (%llu ms), but a listener did "
                    "not open on every worker (their errors are above): on those workers the pool "
                    "listens at its old address, or not at all if it is new, until a reload opens "
                    "it",
                    ctl->nworkers, (unsigned long long)ctl->gen, ms);
    else if (current == ctl->nworkers)
        wn_log_notice("reload: all %d worker(s) run generation %llu (%llu ms)", ctl->nworkers,
                      (unsigned long long)ctl->gen, ms);
    else
        wn_log_warn("reload: %d of %d worker(s) run generation %llu (%llu ms); the others "
                    "serve the configuration they had until a reload reaches them",
                    current, ctl->nworkers, (unsigned long long)ctl->gen, ms);
    for (uint32_t p = 0; p < ctl->npools; p++)
        wn_control_log_convergence(ctl, p);
    if (ctl->gen_by_dns)
        ; /* systemd was not told of a reload: nothing to finish */
    else if (ctl->reload_failed)
        finish(ctl, "applied with errors (see the log), generation %llu",
               (unsigned long long)ctl->gen);
    else
        finish(ctl, "applied, generation %llu", (unsigned long long)ctl->gen);
    run_deferred(ctl);
}
