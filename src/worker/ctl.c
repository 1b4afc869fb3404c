/*
 * worker/ctl.c: the worker's end of the control channel. Reports backend
 * failures and recoveries to the control thread, which alone decides
 * ejection; takes new rings and health verdicts from it. While a server is
 * suspect (a connection to it just failed) clients about to send it a
 * request wait for control's verdict instead of failing: an ejection
 * re-routes them with the new ring, a good probe sends them on. The wait is
 * bounded. Worker thread only, except the wn_worker_* calls marked control.
 */
#include "core_types.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Ring sizes: messages are rare (failures, ejections), a burst fits easily. */
#define CTL_RING_CAPACITY 1024
/* How long a client waits at most for control's verdict on a suspect
 * server before its request is tried anyway. */
#define HOLD_MIN_MS 1000
#define HOLD_MAX_MS 5000
/* A full ring to control is retried this often until it drains. */
#define OUTBOX_RETRY_MS 10

static void release(server_rt_t *s);
static void send_to_control(wn_worker_t *w, wn_msg_t *m);
static void arm_hold_timer(wn_worker_t *w);

int wn_ctl_init(wn_worker_t *w)
{
    int rc = wn_spsc_create(CTL_RING_CAPACITY, sizeof(wn_msg_t), &w->from_control);
    if (rc < 0)
        return rc;
    rc = wn_spsc_create(CTL_RING_CAPACITY, sizeof(wn_msg_t), &w->to_control);
    if (rc < 0) {
        wn_spsc_destroy(w->from_control);
        w->from_control = NULL;
        return rc;
    }
    wn_spsc_outbox_init(&w->outbox, w->to_control);
    wn_spsc_outbox_init(&w->control_outbox, w->from_control);
    uv_timer_init(&w->loop, &w->hold_timer);
    w->hold_timer.data = w;
    w->hold_timer_open = true;
    return 0;
}

void wn_ctl_close(wn_worker_t *w)
{
    if (w->hold_timer_open) {
        uv_close((uv_handle_t *)&w->hold_timer, NULL);
        w->hold_timer_open = false;
    }
    /* Stopping: a stats answer still on its way finds nobody. */
    while (w->nstats_waiting > 0) {
        req_t *r = w->stats_waiting[--w->nstats_waiting];
        wn_req_reply(r, "", 0);
        wn_req_unref(r);
    }
    free(w->stats_waiting);
    free(w->stats_ids);
    w->stats_waiting = NULL;
    w->stats_ids = NULL;
}

static void drop_msg(void *msg, void *arg)
{
    (void)arg;
    const wn_msg_t *m = msg;
    if (m->type == WN_MSG_RING || m->type == WN_MSG_RING_DONE)
        wn_ring_unref(m->ring);
    if (m->type == WN_MSG_STATS_REPLY)
        free(m->text);
    if (m->type == WN_MSG_CONFIG) {
        for (uint32_t i = 0; i < m->nrings; i++)
            wn_ring_unref(m->rings[i]);
        free(m->rings);
        wn_conf_unref(m->conf);
    }
}

bool wn_ctl_ask_stats(req_t *r)
{
    wn_worker_t *w = r->pool->w;
    if (w->control_wakeup == NULL || w->stopping)
        return false;
    req_t **reqs = realloc(w->stats_waiting, sizeof(*reqs) * (w->nstats_waiting + 1));
    if (reqs != NULL)
        w->stats_waiting = reqs;
    uint64_t *ids = realloc(w->stats_ids, sizeof(*ids) * (w->nstats_waiting + 1));
    if (ids != NULL)
        w->stats_ids = ids;
    if (reqs == NULL || ids == NULL)
        return false;
    uint64_t id = ++w->stats_seq;
    wn_req_ref(r);
    w->stats_waiting[w->nstats_waiting] = r;
    w->stats_ids[w->nstats_waiting++] = id;
    wn_msg_t m = {.type = WN_MSG_STATS, .pool = r->pool->retired ? UINT32_MAX : r->pool->idx,
                  .epoch = id};
    send_to_control(w, &m);
    return true;
}

req_t *wn_ctl_stats_take(wn_worker_t *w, uint64_t id)
{
    for (uint32_t i = 0; i < w->nstats_waiting; i++) {
        if (w->stats_ids[i] != id)
            continue;
        req_t *r = w->stats_waiting[i];
        w->stats_waiting[i] = w->stats_waiting[w->nstats_waiting - 1];
        w->stats_ids[i] = w->stats_ids[w->nstats_waiting - 1];
        w->nstats_waiting--;
        return r;
    }
    return NULL;
}

req_t *wn_ctl_stats_take_any(wn_worker_t *w)
{
    return w->nstats_waiting > 0 ? wn_ctl_stats_take(w, w->stats_ids[0]) : NULL;
}

/* After both threads have stopped. */
void wn_ctl_deinit(wn_worker_t *w)
{
    wn_msg_t m;
    wn_spsc_outbox_deinit(&w->outbox, drop_msg, NULL);
    wn_spsc_outbox_deinit(&w->control_outbox, drop_msg, NULL);
    if (w->from_control != NULL)
        while (wn_spsc_pop(w->from_control, &m) == 0)
            drop_msg(&m, NULL);
    if (w->to_control != NULL)
        while (wn_spsc_pop(w->to_control, &m) == 0)
            drop_msg(&m, NULL);
    wn_spsc_destroy(w->from_control);
    wn_spsc_destroy(w->to_control);
    w->from_control = w->to_control = NULL;
}

static void send_to_control(wn_worker_t *w, wn_msg_t *m)
{
    if (w->control_wakeup == NULL) {
        drop_msg(m, NULL);
        return;
    }
    m->worker = w->id;
    m->gen = w->gen;
    if (wn_spsc_outbox_push(&w->outbox, m) < 0) {
        wn_log_error("cannot queue a message for control: out of memory");
        drop_msg(m, NULL);
        return;
    }
    uv_async_send(w->control_wakeup);
    /* Spilled into the outbox: retry on a timer, since control may have
     * nothing to tell us and so never wake us to flush it. */
    if (wn_spsc_outbox_pending(&w->outbox) > 0)
        arm_hold_timer(w);
}

static void flush_outbox(wn_worker_t *w)
{
    if (wn_spsc_outbox_pending(&w->outbox) > 0 && wn_spsc_outbox_flush(&w->outbox) > 0 &&
        w->control_wakeup != NULL)
        uv_async_send(w->control_wakeup);
}

/*
 * How long clients wait for control's verdict on a suspect server, 0: not
 * at all. Control ejects at server_failure_limit failures: the one reported,
 * then one a probe, each probe WN_HEALTH_CONFIRM_MS after the last failed,
 * failing at once (refused) or at its deadline (silent). The wait covers
 * the silent case up to HOLD_MAX_MS. Where even the fast case takes longer
 * (a limit over 50: 100 takes ten seconds) a wait would end with no verdict
 * and the request would fail all the same, seconds late, each request in
 * turn (an adversarial helper's find): no wait then; the requests fail as
 * they come, as under twemproxy, and count towards the limit.
 */
static uint64_t hold_ms(const server_rt_t *s)
{
    const wn_conf_pool_t *c = s->pool->conf;
    uint64_t more = c->server_failure_limit > 1 ? (uint64_t)c->server_failure_limit - 1 : 0;
    if (more * WN_HEALTH_CONFIRM_MS >= HOLD_MAX_MS)
        return 0;
    uint64_t probe = c->timeout > 0 ? (uint64_t)c->timeout : WN_HEALTH_PROBE_TIMEOUT_MS;
    uint64_t ms = more * (WN_HEALTH_CONFIRM_MS + probe) + 500;
    return WN_MAX(HOLD_MIN_MS, WN_MIN(HOLD_MAX_MS, ms));
}

static void on_hold_timer(uv_timer_t *t);

static void arm_hold_timer(wn_worker_t *w)
{
    uint64_t now = uv_now(&w->loop), next = 0;
    for (uint32_t p = 0; p < w->npools; p++)
        for (uint32_t i = 0; i < w->pools[p]->nservers; i++) {
            uint64_t u = w->pools[p]->servers[i]->suspect_until_ms;
            if (u != 0 && (next == 0 || u < next))
                next = u;
        }
    if (wn_spsc_outbox_pending(&w->outbox) > 0 && (next == 0 || next > now + OUTBOX_RETRY_MS))
        next = now + OUTBOX_RETRY_MS;
    if (!w->hold_timer_open)
        return;
    if (next == 0)
        uv_timer_stop(&w->hold_timer);
    else
        uv_timer_start(&w->hold_timer, on_hold_timer, next > now ? next - now : 0, 0);
}

static void on_hold_timer(uv_timer_t *t)
{
    wn_worker_t *w = t->data;
    uint64_t now = uv_now(&w->loop);
    for (uint32_t p = 0; p < w->npools; p++)
        for (uint32_t i = 0; i < w->pools[p]->nservers; i++) {
            server_rt_t *s = w->pools[p]->servers[i];
            if (s->suspect_until_ms != 0 && s->suspect_until_ms <= now) {
                wn_log_info("pool '%s': no verdict on server %s in time; trying it again, "
                            "with no more waits until there is one",
                            w->pools[p]->conf->name, s->conf->label);
                release(s);
                s->hold_spent = true;
            }
        }
    flush_outbox(w);
    arm_hold_timer(w);
}

void wn_ctl_server_failed(server_rt_t *s, int err)
{
    wn_worker_t *w = s->pool->w;
    /* Dropped by a reload: control no longer watches it. Out of descriptors
     * or memory here: the server is not at fault (ejecting it would move its
     * keys for nothing). */
    if (s->retired || s->pool->retired || wn_err_local(err))
        return;
    s->reported = true;
    wn_msg_t m = {.type = WN_MSG_FAIL, .pool = s->pool->idx, .server = s->idx, .err = err};
    send_to_control(w, &m);
    /* Hold new requests only where control may eject: otherwise there is no
     * verdict worth waiting for. */
    uint64_t ms;
    if (w->control_wakeup != NULL && s->pool->conf->auto_eject_hosts && s->suspect_until_ms == 0 &&
        !s->hold_spent && (ms = hold_ms(s)) > 0) {
        s->suspect_until_ms = uv_now(&w->loop) + ms;
        s->pool->nsuspect++;
        arm_hold_timer(w);
    }
}

void wn_ctl_server_ok(server_rt_t *s)
{
    if (!s->reported || s->retired || s->pool->retired)
        return;
    s->reported = false;
    wn_msg_t m = {.type = WN_MSG_OK, .pool = s->pool->idx, .server = s->idx};
    send_to_control(s->pool->w, &m);
}

bool wn_ctl_hold(client_t *c, server_rt_t *s)
{
    /* Stopping: control has taken the signal and gives no more verdicts. */
    if (s->suspect_until_ms == 0 || c->w->stopping)
        return false;
    if (c->held_by == NULL) {
        c->held_by = s;
        c->wait_next = s->waiters;
        s->waiters = c;
    }
    /* wn_client_can_parse is false while held: the client is not read
     * meanwhile, and the flush parses on once the hold ends. */
    return true;
}

void wn_ctl_forget(client_t *c)
{
    server_rt_t *s = c->held_by;
    if (s == NULL)
        return;
    client_t **pp = &s->waiters;
    while (*pp != NULL && *pp != c)
        pp = &(*pp)->wait_next;
    if (*pp == c)
        *pp = c->wait_next;
    c->held_by = NULL;
    c->wait_next = NULL;
}

static void release(server_rt_t *s)
{
    if (s->suspect_until_ms != 0)
        s->pool->nsuspect--;
    s->suspect_until_ms = 0;
    client_t *c = s->waiters;
    s->waiters = NULL;
    while (c != NULL) {
        client_t *next = c->wait_next;
        c->held_by = NULL;
        c->wait_next = NULL;
        wn_client_mark(c); /* the flush parses what it holds */
        c = next;
    }
}

void wn_ctl_config_done(wn_worker_t *w, uint64_t gen, int err)
{
    wn_msg_t done = {.type = WN_MSG_CONFIG_DONE, .epoch = gen, .err = err};
    send_to_control(w, &done);
}

void wn_ctl_release(server_rt_t *s)
{
    s->hold_spent = false;
    if (s->suspect_until_ms != 0 || s->waiters != NULL)
        release(s);
}

void wn_ctl_release_pool(pool_rt_t *p)
{
    for (uint32_t i = 0; i < p->nservers; i++)
        wn_ctl_release(p->servers[i]);
}

void wn_ctl_release_unrouted(pool_rt_t *p)
{
    /* Also with no server suspect: one whose hold ran out (hold_spent) and
     * is ejected now has its verdict, and holds again after it rejoins
     * (review: with a shortcut here it never did). Rings are rare. */
    bool some[64];
    bool *live = p->nservers <= 64 ? some : malloc(p->nservers * sizeof(*live));
    if (live == NULL) {
        wn_ctl_release_pool(p); /* they route anew: a second error at worst */
        return;
    }
    wn_ring_live(p->ring, live, p->nservers);
    for (uint32_t i = 0; i < p->nservers; i++)
        if (!live[i])
            wn_ctl_release(p->servers[i]);
    if (live != some)
        free(live);
}

static void swap_ring(wn_worker_t *w, const wn_msg_t *m)
{
    /* A ring for another configuration (one this worker could not take)
     * indexes other servers: never route with it. */
    if (m->gen != w->gen || m->pool >= w->npools) {
        wn_ring_unref(m->ring);
        return;
    }
    pool_rt_t *p = w->pools[m->pool];
    wn_ring_t *old = p->ring;
    p->ring = m->ring;
    p->epoch = m->epoch;
    wn_log_info("pool '%s': now on ring epoch %llu (%u of %u servers live)", p->conf->name,
                (unsigned long long)m->epoch, wn_ring_nlive(p->ring), wn_ring_nservers(p->ring));
    wn_msg_t back = {.type = WN_MSG_RING_DONE, .pool = m->pool, .ring = old, .epoch = m->epoch};
    send_to_control(w, &back);
    /* Holds on servers the ring no longer routes to end: their clients route
     * with it. A server still on it stays suspect until control's verdict on
     * it: another server's ejection or return says nothing of it (its
     * clients, let go, met it again and failed twice). */
    wn_ctl_release_unrouted(p);
}

bool wn_ctl_receive(wn_worker_t *w, wn_msg_t *out)
{
    wn_msg_t m;
    while (wn_spsc_pop(w->from_control, &m) == 0) {
        switch (m.type) {
        case WN_MSG_RING:
            swap_ring(w, &m);
            break;
        case WN_MSG_CONFIG:
            /* The worker applies it (reconf.c: holds on servers it retires,
             * or its new rings do not route to, end there) and calls
             * wn_ctl_config_done. */
            *out = m;
            return true;
        case WN_MSG_HEALTHY:
            if (m.gen == w->gen && m.pool < w->npools &&
                m.server < w->pools[m.pool]->nservers) {
                server_rt_t *s = w->pools[m.pool]->servers[m.server];
                wn_ctl_release(s);
                if (m.err != 0)
                    s->reported = true; /* its next answer clears control's count */
            }
            break;
        case WN_MSG_PING: {
            /* Answered from the loop itself: a wedged loop never answers. */
            wn_msg_t pong = {.type = WN_MSG_PONG, .epoch = m.epoch};
            send_to_control(w, &pong);
            break;
        }
        case WN_MSG_STATS_REPLY:
            /* The reply is the protocol's: the worker hands it on. */
            *out = m;
            return true;
        case WN_MSG_WEDGE: {
            /* Only sent when the process runs with WALNUT_TEST_HOOKS=1: a
             * stuck loop, as a bug would make it, for the watchdog tests;
             * with WALNUT_TEST_WEDGE_MS, a loop busy for that much of its
             * own CPU time (which a stop of the process does not use up),
             * then going on. */
            const char *ms = getenv("WALNUT_TEST_WEDGE_MS");
            wn_log_warn("wedged by the test hook");
            if (ms != NULL) {
                struct timespec t0, t;
                clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
                long want = atol(ms);
                do
                    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
                while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < want);
                wn_log_warn("the test hook's wedge is over");
                break;
            }
            for (;;)
                sleep(3600);
        }
        default:
            drop_msg(&m, NULL);
            break;
        }
    }
    /* Messages that did not fit earlier go now. */
    flush_outbox(w);
    arm_hold_timer(w);
    return false;
}

/* ---- the control thread's side ------------------------------------------- */

int wn_worker_post(wn_worker_t *w, const wn_msg_t *msg)
{
    int rc = wn_spsc_outbox_push(&w->control_outbox, msg);
    if (rc == 0)
        uv_async_send(&w->wakeup);
    return rc;
}

size_t wn_worker_flush_outbox(wn_worker_t *w)
{
    if (wn_spsc_outbox_pending(&w->control_outbox) == 0)
        return 0;
    if (wn_spsc_outbox_flush(&w->control_outbox) > 0)
        uv_async_send(&w->wakeup);
    return wn_spsc_outbox_pending(&w->control_outbox);
}

int wn_worker_receive(wn_worker_t *w, wn_msg_t *msg)
{
    return wn_spsc_pop(w->to_control, msg);
}

void wn_worker_set_rings(wn_worker_t *w, wn_ring_t *const *rings)
{
    for (uint32_t p = 0; p < w->npools; p++) {
        wn_ring_ref(rings[p]);
        wn_ring_unref(w->pools[p]->ring);
        w->pools[p]->ring = rings[p];
        w->pools[p]->epoch = wn_ring_epoch(rings[p]);
    }
}
