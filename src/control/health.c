/*
 * control/health.c: one view of server health for the whole process. The
 * control thread probes every server on its own connection (memcached
 * `version`, Redis `PING` after AUTH/SELECT), hears the failures and
 * recoveries workers report, counts consecutive failures once per event,
 * ejects at server_failure_limit, rejoins only after a good probe once
 * server_retry_timeout has passed, and rebuilds a pool's ring once per
 * change (rate-limited), broadcasting it to every worker with an epoch.
 * Control thread only.
 */
#include "control_priv.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"

/* Reports from several workers within this window are one event. */
#define DEDUPE_MS 100
/* After a failure, check again this soon (rather than a whole interval). */
#define CONFIRM_MS 100
/* At most one ring rebuild per pool this often; changes in between are batched. */
#define MIN_REBUILD_MS 100
/* Probe deadline when the pool has no timeout. */
#define DEFAULT_PROBE_TIMEOUT_MS 1000

static void probe_schedule(hserver_t *s, uint64_t delay_ms);
static void request_rebuild(hpool_t *p);

static uint64_t now_ms(const control_t *ctl)
{
    return uv_now(&ctl->loop);
}

static bool probing(const hpool_t *p)
{
    return p->conf->health_check_interval > 0;
}

static uint64_t probe_timeout(const hpool_t *p)
{
    return p->conf->timeout > 0 ? (uint64_t)p->conf->timeout : DEFAULT_PROBE_TIMEOUT_MS;
}

static void broadcast(control_t *ctl, const wn_msg_t *m)
{
    for (int i = 0; i < ctl->nworkers; i++) {
        if (m->type == WN_MSG_RING)
            wn_ring_ref(m->ring);
        if (wn_worker_post(ctl->workers[i], m) < 0) {
            wn_log_error("cannot queue a message for worker %d: out of memory", i);
            if (m->type == WN_MSG_RING)
                wn_ring_unref(m->ring);
        }
    }
}

/* Tell workers holding requests for s to stop waiting. */
static void send_verdict(hserver_t *s)
{
    if (!s->suspected)
        return;
    s->suspected = false;
    wn_msg_t m = {.type = WN_MSG_HEALTHY,
                  .pool = s->pool->idx,
                  .server = s->idx,
                  .gen = s->pool->ctl->gen};
    broadcast(s->pool->ctl, &m);
}

/* ---- the ring ------------------------------------------------------------- */

static int build_ring(hpool_t *p)
{
    bool *live = calloc(p->nservers, sizeof(*live));
    wn_ring_server_t *rs = calloc(p->nservers, sizeof(*rs));
    if (live == NULL || rs == NULL) {
        free(live);
        free(rs);
        return WN_ENOMEM;
    }
    wn_conf_ring_servers(p->conf, rs);
    for (uint32_t i = 0; i < p->nservers; i++)
        live[i] = !p->servers[i]->ejected;
    wn_ring_params_t params = {
        .dist = p->conf->distribution,
        .hash = p->conf->hash,
        .hash_tag = p->conf->has_hash_tag ? p->conf->hash_tag : NULL,
        .epoch = p->epoch + 1,
    };
    wn_ring_t *ring;
    int rc = wn_ring_create(&params, rs, p->nservers, live, &ring);
    free(live);
    free(rs);
    if (rc < 0)
        return rc;
    wn_ring_unref(p->ring);
    p->ring = ring;
    p->epoch++;
    p->last_build_ms = now_ms(p->ctl);
    return 0;
}

static void rebuild_now(hpool_t *p)
{
    p->rebuild_pending = false;
    int rc = build_ring(p);
    if (rc < 0) {
        wn_log_error("pool '%s': cannot build its ring: %s", p->conf->name, wn_strerror(rc));
        return;
    }
    wn_log_notice("pool '%s': ring epoch %llu: %u of %u servers live", p->conf->name,
                  (unsigned long long)p->epoch, wn_ring_nlive(p->ring), p->nservers);
    wn_msg_t m = {
        .type = WN_MSG_RING, .pool = p->idx, .ring = p->ring, .epoch = p->epoch, .gen = p->ctl->gen};
    broadcast(p->ctl, &m);
}

static void on_rebuild_timer(uv_timer_t *t)
{
    rebuild_now(t->data);
}

static void request_rebuild(hpool_t *p)
{
    if (p->rebuild_pending)
        return;
    uint64_t now = now_ms(p->ctl);
    if (now >= p->last_build_ms + MIN_REBUILD_MS) {
        rebuild_now(p);
        return;
    }
    p->rebuild_pending = true;
    wn_log_info("pool '%s': ring changes coming fast; rebuilding in %llu ms", p->conf->name,
                (unsigned long long)(p->last_build_ms + MIN_REBUILD_MS - now));
    uv_timer_start(&p->rebuild_timer, on_rebuild_timer, p->last_build_ms + MIN_REBUILD_MS - now,
                   0);
}

/* ---- decisions ------------------------------------------------------------ */

static void eject(hserver_t *s, int err, const char *how)
{
    hpool_t *p = s->pool;
    uint32_t ejected = 0;
    for (uint32_t i = 0; i < p->nservers; i++)
        ejected += p->servers[i]->ejected;
    if ((double)(ejected + 1) > p->conf->max_ejected_fraction * (double)p->nservers + 1e-9) {
        if (!s->guard_logged)
            wn_log_warn("pool '%s': server %s is failing (%s) but stays in: %u of %u servers "
                        "are out and max_ejected_fraction is %.2f",
                        p->conf->name, s->conf->name, wn_strerror(err), ejected, p->nservers,
                        p->conf->max_ejected_fraction);
        s->guard_logged = true;
        send_verdict(s);
        /* It stays in: keep checking it, so a recovery is seen. */
        if (probing(p))
            probe_schedule(s, (uint64_t)p->conf->health_check_interval);
        return;
    }
    s->ejected = true;
    s->failures = 0;
    s->data_failed = false;
    s->retry_at_ms = now_ms(p->ctl) + (uint64_t)p->conf->server_retry_timeout;
    s->ejected_at_us = wn_wall_us();
    wn_stat_add(&p->ctl->blocks[p->ctl->nblocks - 1]->pools[p->idx].v[WN_P_server_ejects], 1);
    s->suspected = false; /* the new ring is the verdict */
    wn_log_warn("pool '%s': server %s ejected after %d consecutive failures (last: %s, %s); "
                "retry in %d ms",
                p->conf->name, s->conf->name, p->conf->server_failure_limit, wn_strerror(err),
                how, p->conf->server_retry_timeout);
    request_rebuild(p);
    probe_schedule(s, (uint64_t)p->conf->server_retry_timeout);
    wn_sd_status(p->ctl);
}

static void rejoin(hserver_t *s, const char *how)
{
    hpool_t *p = s->pool;
    s->ejected = false;
    s->failures = 0;
    s->guard_logged = false;
    wn_log_notice("pool '%s': server %s rejoins (%s)", p->conf->name, s->conf->name, how);
    request_rebuild(p);
    wn_sd_status(p->ctl);
}

static void count_failure(hserver_t *s, int err, const char *how)
{
    hpool_t *p = s->pool;
    /* Past the limit (kept in by max_ejected_fraction) the count stays there. */
    if (s->failures < (uint32_t)p->conf->server_failure_limit)
        s->failures++;
    s->last_fail_ms = now_ms(p->ctl);
    wn_log_info("pool '%s': server %s failure %u of %d (%s, %s)", p->conf->name, s->conf->name,
                s->failures, p->conf->server_failure_limit, wn_strerror(err), how);
    if (!p->conf->auto_eject_hosts) {
        send_verdict(s);
        /* Nothing is ejected, but keep looking: the view shows when it is back. */
        if (probing(p))
            probe_schedule(s, (uint64_t)p->conf->health_check_interval);
        return;
    }
    if (s->failures >= (uint32_t)p->conf->server_failure_limit) {
        eject(s, err, how);
        return;
    }
    if (probing(p))
        probe_schedule(s, CONFIRM_MS);
    else
        send_verdict(s); /* nothing will confirm it: let requests try again */
}

/*
 * How probes and real traffic combine: every failure counts toward
 * server_failure_limit (a worker's report of a failed request or connection,
 * or a failed probe). A real request answered again clears the count. A good
 * probe clears it only when the failures came from probes: a server that
 * answers probes but fails real requests keeps its count, so it is ejected
 * after server_failure_limit failed requests even while its probe answers.
 * Either success ends the hold on the server's clients.
 */
static void count_success(hserver_t *s, bool from_traffic)
{
    if (from_traffic || !s->data_failed) {
        s->failures = 0;
        s->data_failed = false;
        s->guard_logged = false;
    }
    send_verdict(s);
}

void health_on_message(control_t *ctl, const wn_msg_t *m)
{
    if (m->pool >= ctl->npools || m->server >= ctl->pools[m->pool]->nservers)
        return;
    hserver_t *s = ctl->pools[m->pool]->servers[m->server];
    if (s->ejected) {
        /* Out already; a worker still finishing old requests is no news. */
        send_verdict(s);
        return;
    }
    if (m->type == WN_MSG_OK) {
        count_success(s, true);
        return;
    }
    s->suspected = true;
    s->data_failed = true;
    if (now_ms(ctl) < s->last_fail_ms + DEDUPE_MS && s->failures > 0) {
        /* The same event, seen by another worker or connection. A verdict
         * is on its way from the confirming probe, unless nothing will
         * change: the server is failing but kept in. */
        if (s->failures >= (uint32_t)s->pool->conf->server_failure_limit || !probing(s->pool))
            send_verdict(s);
        return;
    }
    char how[32];
    snprintf(how, sizeof(how), "reported by worker %d", m->worker);
    count_failure(s, m->err, how);
}

/* ---- probes --------------------------------------------------------------- */

static void server_release(hserver_t *s);

static void probe_closed(uv_handle_t *h)
{
    hserver_t *s = h->data;
    s->probe.closing = false;
    if (s->retired)
        server_release(s);
}

static void probe_close(hserver_t *s)
{
    probe_t *pr = &s->probe;
    if (pr->handle_open) {
        pr->handle_open = false;
        pr->closing = true;
        uv_close(&pr->h.handle, probe_closed);
    }
    pr->connected = false;
    pr->busy = false;
    pr->rlen = 0;
}

static void probe_done(hserver_t *s, int err)
{
    hpool_t *p = s->pool;
    probe_t *pr = &s->probe;
    pr->busy = false;
    uv_timer_stop(&pr->timer);
    s->last_probe_err = err;
    s->last_probe_ms = now_ms(p->ctl);
    if (p->ctl->stopping)
        return;
    uint64_t interval = (uint64_t)p->conf->health_check_interval;
    if (err == 0) {
        if (s->ejected) {
            if (now_ms(p->ctl) >= s->retry_at_ms) {
                rejoin(s, "answered a probe after server_retry_timeout");
            } else {
                probe_schedule(s, s->retry_at_ms - now_ms(p->ctl));
                return;
            }
        } else {
            count_success(s, false);
        }
        if (probing(p))
            probe_schedule(s, interval);
        return;
    }
    probe_close(s);
    if (s->ejected) {
        uint64_t again = probing(p) ? interval : (uint64_t)p->conf->server_retry_timeout;
        wn_log_info("pool '%s': ejected server %s still failing (%s); next check in %llu ms",
                    p->conf->name, s->conf->name, wn_strerror(err), (unsigned long long)again);
        probe_schedule(s, again);
        return;
    }
    count_failure(s, err, "health probe");
    if (!s->ejected && probing(p) && s->failures == 0)
        probe_schedule(s, interval);
}

static bool line_ok(const hpool_t *p, const char *line, size_t len)
{
    if (p->conf->redis)
        return len >= 1 && line[0] == '+';
    return len >= 8 && memcmp(line, "VERSION ", 8) == 0;
}

static void probe_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    hserver_t *s = h->data;
    probe_t *pr = &s->probe;
    *buf = uv_buf_init(pr->rbuf + pr->rlen, (unsigned)(sizeof(pr->rbuf) - pr->rlen));
}

static void probe_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    hserver_t *s = st->data;
    probe_t *pr = &s->probe;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (pr->busy)
            probe_done(s, nread == UV_EOF ? UV_ECONNRESET : (int)nread);
        else
            probe_close(s);
        return;
    }
    if (!pr->busy) {
        probe_close(s); /* bytes nobody asked for */
        return;
    }
    pr->rlen += (size_t)nread;
    for (;;) {
        char *nl = memchr(pr->rbuf, '\n', pr->rlen);
        if (nl == NULL)
            break;
        size_t len = (size_t)(nl - pr->rbuf) + 1;
        if (!line_ok(s->pool, pr->rbuf, len))
            pr->ok = false;
        memmove(pr->rbuf, pr->rbuf + len, pr->rlen - len);
        pr->rlen -= len;
        if (--pr->lines_left == 0) {
            probe_done(s, pr->ok ? 0 : WN_EPROTO);
            return;
        }
    }
    if (pr->rlen == sizeof(pr->rbuf))
        probe_done(s, WN_EPROTO);
}

static void probe_written(uv_write_t *req, int status)
{
    hserver_t *s = req->data;
    if (status < 0 && s->probe.busy)
        probe_done(s, status);
}

/* Append a RESP command of two words to the probe's buffer; false if it
 * does not fit (a very long redis_auth). */
static bool put_command(probe_t *pr, size_t *n, const char *cmd, const char *arg)
{
    size_t room = pr->wcap - *n;
    int len = snprintf(pr->wbuf + *n, room, "*2\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n", strlen(cmd),
                       cmd, strlen(arg), arg);
    if (len < 0 || (size_t)len >= room)
        return false;
    *n += (size_t)len;
    return true;
}

static void probe_send(hserver_t *s)
{
    probe_t *pr = &s->probe;
    const wn_conf_pool_t *c = s->pool->conf;
    size_t n = 0;
    bool fits = true;
    pr->lines_left = 0;
    pr->ok = true;
    pr->rlen = 0;
    /* Room for AUTH <password>, SELECT <db> and the ping, whatever their size. */
    size_t need = 128 + (c->redis_auth != NULL ? strlen(c->redis_auth) : 0);
    if (pr->wcap < need) {
        char *nb = realloc(pr->wbuf, need);
        if (nb == NULL) {
            probe_done(s, WN_ENOMEM);
            return;
        }
        pr->wbuf = nb;
        pr->wcap = need;
    }
    if (c->redis) {
        if (pr->fresh && c->redis_auth != NULL) {
            fits = fits && put_command(pr, &n, "AUTH", c->redis_auth);
            pr->lines_left++;
        }
        if (pr->fresh && c->redis_db != 0) {
            char db[16];
            snprintf(db, sizeof(db), "%d", c->redis_db);
            fits = fits && put_command(pr, &n, "SELECT", db);
            pr->lines_left++;
        }
    }
    const char *ping = c->redis ? "PING\r\n" : "version\r\n";
    if (fits && strlen(ping) < pr->wcap - n) {
        memcpy(pr->wbuf + n, ping, strlen(ping));
        n += strlen(ping);
    } else {
        fits = false;
    }
    pr->lines_left++;
    pr->fresh = false;
    if (!fits) {
        probe_done(s, WN_ETOOBIG);
        return;
    }
    uv_buf_t b = uv_buf_init(pr->wbuf, (unsigned)n);
    pr->write_req.data = s;
    int rc = uv_write(&pr->write_req, &pr->h.stream, &b, 1, probe_written);
    if (rc < 0)
        probe_done(s, rc);
}

static void probe_connected(uv_connect_t *req, int status)
{
    hserver_t *s = req->data;
    probe_t *pr = &s->probe;
    if (!pr->busy)
        return;
    if (status < 0) {
        probe_done(s, status);
        return;
    }
    pr->connected = true;
    pr->fresh = true;
    uv_read_start(&pr->h.stream, probe_alloc, probe_read);
    probe_send(s);
}

static void on_probe_timer(uv_timer_t *t);

static void probe_start(hserver_t *s)
{
    probe_t *pr = &s->probe;
    uv_loop_t *loop = &s->pool->ctl->loop;
    if (pr->closing) {
        /* The old connection's handle is still closing; its memory is ours again soon. */
        uv_timer_start(&pr->timer, on_probe_timer, 10, 0);
        return;
    }
    pr->busy = true;
    uv_timer_start(&pr->timer, on_probe_timer, probe_timeout(s->pool), 0);
    if (pr->connected) {
        probe_send(s);
        return;
    }
    if (pr->handle_open) {
        probe_close(s); /* connecting, not yet connected: start over shortly */
        pr->busy = false;
        uv_timer_start(&pr->timer, on_probe_timer, 10, 0);
        return;
    }
    int rc;
    pr->connect_req.data = s;
    if (s->conf->addr.is_unix) {
        uv_pipe_init(loop, &pr->h.pipe, 0);
        pr->h.handle.data = s;
        pr->handle_open = true;
        uv_pipe_connect(&pr->connect_req, &pr->h.pipe, s->conf->addr.host, probe_connected);
        return;
    }
    uv_tcp_init(loop, &pr->h.tcp);
    pr->h.handle.data = s;
    pr->handle_open = true;
    uv_tcp_nodelay(&pr->h.tcp, 1);
    rc = uv_tcp_connect(&pr->connect_req, &pr->h.tcp, (const struct sockaddr *)&s->addr,
                        probe_connected);
    if (rc < 0)
        probe_done(s, rc);
}

static void on_probe_timer(uv_timer_t *t)
{
    hserver_t *s = t->data;
    if (s->pool->ctl->stopping)
        return;
    if (s->probe.busy) {
        probe_done(s, UV_ETIMEDOUT);
        return;
    }
    if (!probing(s->pool) && s->ejected) {
        /* Probes off: rejoin after the retry timeout, as twemproxy does. */
        rejoin(s, "server_retry_timeout passed; health checks are off");
        return;
    }
    probe_start(s);
}

static void probe_schedule(hserver_t *s, uint64_t delay_ms)
{
    if (s->probe.busy || s->pool->ctl->stopping)
        return; /* the outstanding probe decides what comes next */
    uv_timer_start(&s->probe.timer, on_probe_timer, delay_ms, 0);
}

/* ---- life cycle ----------------------------------------------------------- */

static int resolve(const wn_conf_server_t *sc, struct sockaddr_storage *out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", sc->addr.port);
    int rc = getaddrinfo(sc->addr.host, port, &hints, &res);
    if (rc != 0)
        return rc == EAI_SYSTEM ? -errno : UV_EAI_NONAME;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* A server's state, without handles yet (server_open adds them): NULL with
 * a line in err when its address does not resolve or memory is short. */
static hserver_t *server_new(const wn_conf_pool_t *pc, const wn_conf_server_t *sc, char *err,
                             size_t errlen)
{
    hserver_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "pool '%s': out of memory", pc->name);
        return NULL;
    }
    s->conf = sc;
    if (!sc->addr.is_unix) {
        int rc = resolve(sc, &s->addr);
        if (rc < 0) {
            snprintf(err, errlen, "pool '%s': server %s: cannot resolve '%s'", pc->name,
                     sc->name, sc->addr.host);
            free(s);
            return NULL;
        }
    }
    return s;
}

static void server_open(hserver_t *s, hpool_t *p, uint32_t idx)
{
    s->pool = p;
    s->idx = idx;
    uv_timer_init(&p->ctl->loop, &s->probe.timer);
    s->probe.timer.data = s;
}

static void server_release(hserver_t *s)
{
    if (--s->closes > 0)
        return;
    free(s->probe.wbuf);
    free(s);
}

static void server_handle_closed(uv_handle_t *h)
{
    server_release(h->data);
}

/* The server leaves (a reload dropped it, or walnut stops): its probe and
 * timer close, then it is freed. A server never opened is freed at once. */
static void server_retire(hserver_t *s)
{
    s->retired = true;
    s->closes = 1;
    probe_close(s);
    if (s->probe.closing)
        s->closes++; /* probe_closed releases it */
    if (s->probe.timer.loop != NULL)
        uv_close((uv_handle_t *)&s->probe.timer, server_handle_closed);
    else
        server_release(s);
}

/* A pool's state and its servers', without handles yet: NULL with a line in
 * err. Servers of `reuse` that are the same backend are taken over (their
 * health carries on) and marked in `taken`. */
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

static void pool_retire(hpool_t *p)
{
    p->retired = true;
    for (uint32_t j = 0; j < p->nservers; j++)
        if (p->servers[j] != NULL)
            server_retire(p->servers[j]);
    p->nservers = 0;
    if (p->rebuild_timer.loop != NULL)
        uv_close((uv_handle_t *)&p->rebuild_timer, pool_timer_closed);
    else
        pool_free(p);
}

/* First probes of a pool's servers, spread over the interval. */
static void schedule_probes(hpool_t *p)
{
    if (!probing(p))
        return;
    for (uint32_t j = 0; j < p->nservers; j++)
        if (!p->servers[j]->ejected)
            probe_schedule(p->servers[j], (uint64_t)p->conf->health_check_interval * j /
                                              (p->nservers ? p->nservers : 1));
}

int health_init(control_t *ctl)
{
    char err[256];
    ctl->pools = calloc(ctl->conf->npools ? ctl->conf->npools : 1, sizeof(*ctl->pools));
    if (ctl->pools == NULL)
        return WN_ENOMEM;
    for (uint32_t i = 0; i < ctl->conf->npools; i++) {
        const wn_conf_pool_t *pc = &ctl->conf->pools[i];
        hpool_t *p = pool_new(ctl, pc, err, sizeof(err));
        if (p == NULL) {
            wn_log_error("%s", err);
            return WN_ENOMEM;
        }
        ctl->pools[ctl->npools++] = p;
        for (uint32_t j = 0; j < pc->nservers; j++) {
            p->servers[j] = server_new(pc, &pc->servers[j], err, sizeof(err));
            if (p->servers[j] == NULL) {
                wn_log_error("%s", err);
                return WN_EINVAL; /* health_stop frees what was made */
            }
            p->nservers++;
        }
        pool_open(p, i);
        int rc = build_ring(p);
        if (rc < 0)
            return rc;
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
}

void health_stop(control_t *ctl)
{
    for (uint32_t i = 0; i < ctl->npools; i++)
        pool_retire(ctl->pools[i]);
    ctl->npools = 0;
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
        probe_close(s);
    s->conf = sc;
    s->idx = idx;
}

int health_reload(control_t *ctl, const wn_conf_t *nc, char *err, size_t errlen)
{
    /* Refuse what cannot change live before touching anything. */
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
    /* Prepare: every allocation and address lookup, so the commit below
     * cannot fail half-way. np[i] is a new pool, or a kept one with its new
     * server list in ns[i]. */
    hpool_t **np = calloc(nc->npools ? nc->npools : 1, sizeof(*np));
    hserver_t ***ns = calloc(nc->npools ? nc->npools : 1, sizeof(*ns));
    bool *fresh = calloc(nc->npools ? nc->npools : 1, sizeof(*fresh));
    int rc = 0;
    if (np == NULL || ns == NULL || fresh == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = WN_ENOMEM;
        goto fail;
    }
    for (uint32_t i = 0; i < nc->npools && rc == 0; i++) {
        const wn_conf_pool_t *pc = &nc->pools[i];
        hpool_t *old = find_pool(ctl, pc->name);
        if (old == NULL) {
            np[i] = pool_new(ctl, pc, err, errlen);
            if (np[i] == NULL) {
                rc = WN_ENOMEM;
                break;
            }
            fresh[i] = true;
            ns[i] = np[i]->servers;
        } else {
            np[i] = old;
            ns[i] = calloc(pc->nservers ? pc->nservers : 1, sizeof(**ns));
            if (ns[i] == NULL) {
                snprintf(err, errlen, "out of memory");
                rc = WN_ENOMEM;
                break;
            }
        }
        for (uint32_t j = 0; j < pc->nservers; j++) {
            hserver_t *s = fresh[i] ? NULL : find_server(old, &pc->servers[j]);
            if (s == NULL)
                s = server_new(pc, &pc->servers[j], err, errlen);
            if (s == NULL) {
                rc = WN_EINVAL;
                break;
            }
            ns[i][j] = s;
        }
    }
    if (rc < 0)
        goto fail;

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
        hpool_t *p = np[i];
        if (fresh[i]) {
            p->nservers = pc->nservers;
            pool_open(p, i);
        } else {
            /* Servers no longer listed go; kept ones keep their health. */
            for (uint32_t j = 0; j < p->nservers; j++) {
                bool kept = false;
                for (uint32_t k = 0; k < pc->nservers && !kept; k++)
                    kept = ns[i][k] == p->servers[j];
                if (!kept) {
                    wn_log_notice("pool '%s': server %s removed", pc->name,
                                  p->servers[j]->conf->name);
                    server_retire(p->servers[j]);
                }
            }
            free(p->servers);
            p->servers = ns[i];
            p->nservers = pc->nservers;
            p->idx = i;
            bool was_probing = probing(p);
            for (uint32_t j = 0; j < pc->nservers; j++) {
                hserver_t *s = p->servers[j];
                if (s->pool == NULL) {
                    server_open(s, p, j);
                    wn_log_notice("pool '%s': server %s added", pc->name, pc->servers[j].name);
                    if (pc->health_check_interval > 0 && !ctl->stopping)
                        probe_schedule(s, 0);
                } else {
                    server_carry(s, pc, j, &pc->servers[j]);
                }
            }
            p->conf = pc;
            if (!was_probing && !ctl->stopping)
                schedule_probes(p);
            /* The ring is rebuilt now, whatever was pending. */
            uv_timer_stop(&p->rebuild_timer);
            p->rebuild_pending = false;
        }
        ns[i] = NULL;
        rc = build_ring(p);
        if (rc < 0) {
            /* Only memory can fail here; the pool keeps its old ring. */
            wn_log_error("pool '%s': cannot build its ring: %s", pc->name, wn_strerror(rc));
            rc = 0;
        }
        if (fresh[i]) {
            for (int w = 0; w < ctl->nworkers; w++)
                p->worker_epoch[w] = 0;
            wn_log_notice("pool '%s': added, listening on %s, %u server(s)", pc->name,
                          pc->listen_text, pc->nservers);
            if (!ctl->stopping)
                schedule_probes(p);
        }
    }
    free(ctl->pools);
    ctl->pools = np;
    ctl->npools = nc->npools;
    free(ns);
    free(fresh);
    return 0;

fail:
    for (uint32_t i = 0; np != NULL && i < nc->npools; i++) {
        if (np[i] == NULL)
            continue;
        if (fresh[i]) {
            np[i]->nservers = nc->pools[i].nservers;
            pool_discard(np[i]);
        } else if (ns[i] != NULL) {
            for (uint32_t j = 0; j < nc->pools[i].nservers; j++)
                if (ns[i][j] != NULL && ns[i][j]->pool == NULL)
                    free(ns[i][j]);
            free(ns[i]);
        }
    }
    free(np);
    free(ns);
    free(fresh);
    return rc;
}
