/*
 * control/health.c: one view of server health for the whole process. The
 * control thread probes every server on its own connection (memcached
 * `version`, Redis `PING` after AUTH/SELECT), hears the failures and
 * recoveries workers report, counts consecutive failures once per event,
 * ejects at server_failure_limit, rejoins only after a good probe once
 * server_retry_timeout has passed, and rebuilds a pool's ring once per
 * change (rate-limited), broadcasting it to every worker with an epoch.
 * The pools and servers themselves (made, kept, retired) are pools.c's.
 * Control thread only.
 */
#include "control_priv.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"
#include "walnut/proto.h"
#include "walnut/proto_resp.h"

/* Reports from several workers within this window are one event. */
#define DEDUPE_MS 100
/* After a failure, check again this soon (rather than a whole interval). */
#define CONFIRM_MS WN_HEALTH_CONFIRM_MS
/* At most one ring rebuild per pool this often; changes in between are batched. */
#define MIN_REBUILD_MS 100
/* Probe deadline when the pool has no timeout. */
#define DEFAULT_PROBE_TIMEOUT_MS WN_HEALTH_PROBE_TIMEOUT_MS

static void request_rebuild(hpool_t *p);

static uint64_t now_ms(const control_t *ctl)
{
    return uv_now(&ctl->loop);
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
    /* A failed request still counts until a request is answered again, on
     * any worker: every worker reports its next answer from s (only the
     * one that failed would, and it may never use s again). */
    wn_msg_t m = {.type = WN_MSG_HEALTHY,
                  .pool = s->pool->idx,
                  .server = s->idx,
                  .gen = s->pool->ctl->gen,
                  .err = s->data_failed && s->failures > 0};
    broadcast(s->pool->ctl, &m);
}

/* ---- the ring ------------------------------------------------------------- */

/* How many of pc's servers may be out at once (eject's guard). */
static uint32_t ejected_cap(const wn_conf_pool_t *pc)
{
    return (uint32_t)(pc->max_ejected_fraction * (double)pc->nservers + 1e-9);
}

static uint32_t ejected_count(const hpool_t *p)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < p->nservers; i++)
        n += p->servers[i]->ejected;
    return n;
}

/* The server ejected last among n, of those not already back in the ring
 * (in[i], when in is given); there must be one. */
static uint32_t latest_ejected(hserver_t *const *servers, uint32_t n, const bool *in)
{
    uint32_t best = UINT32_MAX;
    for (uint32_t i = 0; i < n; i++)
        if (servers[i]->ejected && (in == NULL || !in[i]) &&
            (best == UINT32_MAX || servers[i]->ejected_at_us > servers[best]->ejected_at_us))
            best = i;
    return best;
}

int health_ring_make(const wn_conf_pool_t *pc, hserver_t *const *servers, uint64_t epoch,
                     wn_ring_t **out)
{
    bool *live = calloc(pc->nservers ? pc->nservers : 1, sizeof(*live));
    wn_ring_server_t *rs = calloc(pc->nservers ? pc->nservers : 1, sizeof(*rs));
    if (live == NULL || rs == NULL) {
        free(live);
        free(rs);
        return WN_ENOMEM;
    }
    wn_conf_ring_servers(pc, rs);
    /* Without auto_eject_hosts nothing is out (a reload that turns it off
     * brings ejected servers back: health_reload_rejoin). */
    uint32_t nout = 0;
    for (uint32_t i = 0; i < pc->nservers; i++) {
        live[i] = !servers[i]->ejected || !pc->auto_eject_hosts;
        nout += !live[i];
    }
    /* Never more out than max_ejected_fraction allows (a reload lowered
     * it): the same servers health_reload_cap brings back. */
    for (; nout > ejected_cap(pc); nout--)
        live[latest_ejected(servers, pc->nservers, live)] = true;
    wn_ring_params_t params = {
        .dist = pc->distribution,
        .hash = pc->hash,
        .hash_tag = pc->has_hash_tag ? pc->hash_tag : NULL,
        .epoch = epoch,
    };
    int rc = wn_ring_create(&params, rs, pc->nservers, live, out);
    free(live);
    free(rs);
    return rc;
}

void health_ring_install(hpool_t *p, wn_ring_t *ring)
{
    wn_ring_unref(p->ring);
    p->ring = ring;
    p->epoch = wn_ring_epoch(ring);
    p->last_build_ms = now_ms(p->ctl);
}

int health_build_ring(hpool_t *p)
{
    wn_ring_t *ring;
    int rc = health_ring_make(p->conf, p->servers, p->epoch + 1, &ring);
    if (rc == 0)
        health_ring_install(p, ring);
    return rc;
}

static void rebuild_now(hpool_t *p)
{
    p->rebuild_pending = false;
    int rc = health_build_ring(p);
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
    uint32_t ejected = ejected_count(p);
    if (ejected + 1 > ejected_cap(p->conf)) {
        if (!s->guard_logged)
            wn_log_warn("pool '%s': server %s is failing (%s) but stays in: %u of %u servers "
                        "are out and max_ejected_fraction is %.2f",
                        p->conf->name, s->conf->label, wn_strerror(err), ejected, p->nservers,
                        p->conf->max_ejected_fraction);
        s->guard_logged = true;
        send_verdict(s);
        /* It stays in: keep checking it, so a recovery is seen. */
        if (health_probing(p))
            health_probe_schedule(s, (uint64_t)p->conf->health_check_interval);
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
                p->conf->name, s->conf->label, p->conf->server_failure_limit, wn_strerror(err), how,
                p->conf->server_retry_timeout);
    request_rebuild(p);
    health_probe_schedule(s, (uint64_t)p->conf->server_retry_timeout);
    wn_sd_status(p->ctl);
}

static void rejoin_state(hserver_t *s, const char *how)
{
    s->ejected = false;
    s->failures = 0;
    s->guard_logged = false;
    wn_log_notice("pool '%s': server %s rejoins (%s)", s->pool->conf->name, s->conf->label, how);
    wn_sd_status(s->pool->ctl);
}

static void rejoin(hserver_t *s, const char *how)
{
    rejoin_state(s, how);
    request_rebuild(s->pool);
}

static void reload_rejoin(hserver_t *s, const char *how)
{
    if (!s->ejected)
        return;
    s->data_failed = false;
    rejoin_state(s, how);
    if (!health_probing(s->pool))
        uv_timer_stop(&s->probe.timer); /* its rejoin timer */
    else if (!s->pool->ctl->stopping)
        health_probe_schedule(s, (uint64_t)s->pool->conf->health_check_interval);
}

void health_reload_rejoin(hserver_t *s)
{
    reload_rejoin(s, "auto_eject_hosts is off now");
}

void health_probes_off(hserver_t *s)
{
    health_probe_close(s);
    uv_timer_stop(&s->probe.timer);
    if (s->pool->ctl->stopping)
        return;
    if (s->ejected) {
        uint64_t now = now_ms(s->pool->ctl);
        health_probe_schedule(s, s->retry_at_ms > now ? s->retry_at_ms - now : 0);
    } else if (s->suspected) {
        /* No probe will confirm the suspicion: the verdict goes once the
         * new configuration is sent (this runs inside the reload's commit:
         * new indices, old generation), so workers holding clients for s
         * let them go then. */
        s->verdict_due = true;
    }
}

void health_verdicts_due(control_t *ctl)
{
    for (uint32_t p = 0; p < ctl->npools; p++)
        for (uint32_t i = 0; i < ctl->pools[p]->nservers; i++) {
            hserver_t *s = ctl->pools[p]->servers[i];
            if (s->verdict_due) {
                s->verdict_due = false;
                send_verdict(s);
            }
        }
}

void health_reload_cap(hpool_t *p)
{
    if (!p->conf->auto_eject_hosts || p->nservers == 0)
        return;
    for (uint32_t out = ejected_count(p); out > ejected_cap(p->conf); out--)
        reload_rejoin(p->servers[latest_ejected(p->servers, p->nservers, NULL)],
                      "max_ejected_fraction is lower now");
}

static void count_failure(hserver_t *s, int err, const char *how)
{
    hpool_t *p = s->pool;
    /* Past the limit (kept in by max_ejected_fraction) the count stays there. */
    if (s->failures < (uint32_t)p->conf->server_failure_limit)
        s->failures++;
    s->last_fail_ms = now_ms(p->ctl);
    wn_log_info("pool '%s': server %s failure %u of %d (%s, %s)", p->conf->name, s->conf->label,
                s->failures, p->conf->server_failure_limit, wn_strerror(err), how);
    if (!p->conf->auto_eject_hosts) {
        send_verdict(s);
        /* Nothing is ejected, but keep looking: the view shows when it is back. */
        if (health_probing(p))
            health_probe_schedule(s, (uint64_t)p->conf->health_check_interval);
        return;
    }
    if (s->failures >= (uint32_t)p->conf->server_failure_limit) {
        eject(s, err, how);
        return;
    }
    if (health_probing(p))
        health_probe_schedule(s, CONFIRM_MS);
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
        /* Out already; a worker still finishing old requests is no news. It
         * may hold clients for s all the same (its ring had s when that
         * request failed): the verdict lets them go, behind the ring that
         * ejected s, so they route without it. */
        if (m->type != WN_MSG_OK)
            s->suspected = true;
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
        if (s->failures >= (uint32_t)s->pool->conf->server_failure_limit || !health_probing(s->pool))
            send_verdict(s);
        return;
    }
    char how[32];
    snprintf(how, sizeof(how), "reported by worker %d", m->worker);
    count_failure(s, m->err, how);
}

/* ---- probes --------------------------------------------------------------- */

static void probe_closed(uv_handle_t *h)
{
    hserver_t *s = h->data;
    s->probe.closing = false;
    if (s->retired)
        health_server_release(s);
}

void health_probe_close(hserver_t *s)
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
    /* The server's own words, when its answer is what failed the probe. */
    const char *said = err == WN_EPROTO || err == WN_ESRVFULL ? pr->said : "";
    snprintf(s->last_probe_said, sizeof(s->last_probe_said), "%s", said);
    char how[WN_PROBE_SAID_MAX + 48] = "health probe";
    if (said[0] != '\0')
        snprintf(how, sizeof(how), "health probe, which it answered '%s'", said);
    if (p->ctl->stopping)
        return;
    uint64_t interval = (uint64_t)p->conf->health_check_interval;
    if (err == 0) {
        if (s->ejected) {
            if (now_ms(p->ctl) >= s->retry_at_ms) {
                rejoin(s, "answered a probe after server_retry_timeout");
            } else {
                health_probe_schedule(s, s->retry_at_ms - now_ms(p->ctl));
                return;
            }
        } else {
            count_success(s, false);
        }
        if (health_probing(p))
            health_probe_schedule(s, interval);
        return;
    }
    health_probe_close(s);
    if (wn_err_local(err)) {
        /* walnut is out of descriptors or memory: says nothing of the server. */
        wn_log_info("pool '%s': cannot probe server %s: %s", p->conf->name, s->conf->label,
                    wn_strerror(err));
        health_probe_schedule(s, health_probing(p) ? interval
                                                   : (uint64_t)p->conf->server_retry_timeout);
        return;
    }
    if (s->ejected) {
        uint64_t again = health_probing(p) ? interval : (uint64_t)p->conf->server_retry_timeout;
        wn_log_info("pool '%s': ejected server %s still failing (%s, %s); next check in %llu ms",
                    p->conf->name, s->conf->label, wn_strerror(err), how,
                    (unsigned long long)again);
        health_probe_schedule(s, again);
        return;
    }
    count_failure(s, err, how);
    if (!s->ejected && health_probing(p) && s->failures == 0)
        health_probe_schedule(s, interval);
}

static bool line_ok(const hpool_t *p, const char *line, size_t len)
{
    if (p->conf->redis)
        return len >= 1 && line[0] == '+';
    return len >= 8 && memcmp(line, "VERSION ", 8) == 0;
}

/* What a server writes on a connection it accepted past its limit (memcached
 * -c, redis-server maxclients), before it closes it. */
static bool line_full(const hpool_t *p, const char *line, size_t len)
{
    /* the line without its "\r\n", ended by "\n" or "\r\n" */
    const char *full = p->conf->redis ? WN_RESP_FULL_LINE : WN_MC_FULL_LINE;
    size_t n = p->conf->redis ? sizeof(WN_RESP_FULL_LINE) - 3 : sizeof(WN_MC_FULL_LINE) - 3;
    return len >= n && memcmp(line, full, n) == 0 && (len == n + 1 || len == n + 2);
}

/* The first line that failed the probe, kept for the log and /servers: its
 * line end left out, bytes outside printable ASCII as '?' (it goes into JSON
 * and log lines), cut to WN_PROBE_SAID_MAX. */
static void keep_said(probe_t *pr, const char *line, size_t len)
{
    if (pr->said[0] != '\0')
        return;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    size_t n = WN_MIN(len, sizeof(pr->said) - 1);
    for (size_t i = 0; i < n; i++)
        pr->said[i] = line[i] >= 0x20 && line[i] < 0x7f ? line[i] : '?';
    pr->said[n] = '\0';
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
            health_probe_close(s);
        return;
    }
    if (!pr->busy) {
        health_probe_close(s); /* bytes nobody asked for */
        return;
    }
    pr->rlen += (size_t)nread;
    for (;;) {
        char *nl = memchr(pr->rbuf, '\n', pr->rlen);
        if (nl == NULL)
            break;
        size_t len = (size_t)(nl - pr->rbuf) + 1;
        /* AUTH's answer is not the verdict: a server without a password
         * refuses AUTH and serves every request (and the request path keeps
         * such a connection); a wrong password shows in PING's -NOAUTH. */
        if (line_full(s->pool, pr->rbuf, len)) {
            /* Whichever line it comes as: the server closes next. */
            keep_said(pr, pr->rbuf, len);
            probe_done(s, WN_ESRVFULL);
            return;
        }
        if (pr->auth_line) {
            pr->auth_line = false;
        } else if (!line_ok(s->pool, pr->rbuf, len)) {
            pr->ok = false;
            keep_said(pr, pr->rbuf, len);
        }
        memmove(pr->rbuf, pr->rbuf + len, pr->rlen - len);
        pr->rlen -= len;
        if (--pr->lines_left == 0) {
            probe_done(s, pr->ok ? 0 : WN_EPROTO);
            return;
        }
    }
    if (pr->rlen == sizeof(pr->rbuf)) {
        /* A line longer than any good answer; its start is kept, unless
         * it answers AUTH (it might echo the password). */
        if (!pr->auth_line)
            keep_said(pr, pr->rbuf, pr->rlen);
        probe_done(s, WN_EPROTO);
    }
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
    pr->auth_line = false;
    pr->said[0] = '\0';
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
            pr->auth_line = true;
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
    pr->late_granted = false;
    /* The deadline from now, not from the turn's poll (a control thread
     * paused since would start it in the past). */
    uv_update_time(loop);
    uv_timer_start(&pr->timer, on_probe_timer, probe_timeout(s->pool), 0);
    if (pr->connected) {
        probe_send(s);
        return;
    }
    if (pr->handle_open) {
        health_probe_close(s); /* connecting, not yet connected: start over shortly */
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
    /* no address (its name did not resolve): it cannot serve */
    rc = s->conf->has_sa ? uv_tcp_connect(&pr->connect_req, &pr->h.tcp,
                                          (const struct sockaddr *)&s->conf->sa, probe_connected)
                         : UV_EHOSTDOWN;
    if (rc < 0)
        probe_done(s, rc);
}

static void on_probe_timer(uv_timer_t *t)
{
    hserver_t *s = t->data;
    if (s->pool->ctl->stopping)
        return;
    if (s->probe.busy) {
        /* Its answer (or its connect) may be waiting unread: this turn's
         * poll comes after its timers, and the control thread may have
         * been off the CPU for longer than the deadline. Once a probe. */
        probe_t *pr = &s->probe;
        uv_os_fd_t fd;
        if (!pr->late_granted && pr->handle_open &&
            uv_fileno((const uv_handle_t *)&pr->h.stream, &fd) == 0 &&
            wn_fd_ready(fd, !pr->connected)) {
            pr->late_granted = true;
            uv_timer_start(&pr->timer, on_probe_timer, probe_timeout(s->pool), 0);
            return;
        }
        probe_done(s, UV_ETIMEDOUT);
        return;
    }
    if (!health_probing(s->pool)) {
        /* Probes off: rejoin after the retry timeout, as twemproxy does
         * (a timer left from before a reload turned probes off probes
         * nothing). */
        if (s->ejected)
            rejoin(s, "server_retry_timeout passed; health checks are off");
        return;
    }
    probe_start(s);
}

void health_probe_schedule(hserver_t *s, uint64_t delay_ms)
{
    if (s->probe.busy || s->pool->ctl->stopping)
        return; /* the outstanding probe decides what comes next */
    uv_timer_start(&s->probe.timer, on_probe_timer, delay_ms, 0);
}
