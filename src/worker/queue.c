/*
 * worker/queue.c: the request FIFOs. Every client keeps its requests in
 * arrival order (replies go back in that order); every server connection
 * keeps what it must send and what it waits replies for, oldest first, and
 * a reply always answers the head. Enqueueing only queues and marks: the
 * flush connects and writes. Worker thread only.
 */
#include "core_types.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* A server failing every request (a connection refused or closed each
 * time, with auto_eject_hosts off) would log a line per request: each kind
 * of its warnings is logged at most once per WN_SERVER_WARN_MS, the next one
 * saying how many were left out. Another kind (a refused SELECT after a
 * refused AUTH) is limited on its own, not hidden by the first. */
#define WN_SERVER_WARN_MS 10000u

bool wn_server_warn_at(server_rt_t *s, wn_server_warn_kind_t kind, const char *file, int line,
                       const char *fmt, ...)
{
    uint32_t left_out;
    uint64_t since;
    if (!wn_log_enabled(WN_LOG_WARN) ||
        !wn_log_limit_pass(&s->warned[kind], uv_now(&s->pool->w->loop), WN_SERVER_WARN_MS,
                           &left_out, &since))
        return false;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (left_out > 0)
        wn_log_write(WN_LOG_WARN, file, line,
                     "%s (and %u more like it in the last %u s, not logged)", text, left_out,
                     (unsigned)(since / 1000));
    else
        wn_log_write(WN_LOG_WARN, file, line, "%s", text);
    return true;
}

void wn_req_enqueue_client(client_t *c, req_t *r)
{
    wn_req_ref(r);
    r->next = NULL;
    if (c->tail != NULL)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->inflight++;
    wn_client_recount(c);
}

sconn_t *wn_server_conn(server_rt_t *s, uint32_t slot)
{
    uint32_t i = slot % s->nconns;
    if (s->conns[i] == NULL) {
        sconn_t *c = calloc(1, s->pool->sconn_size);
        if (c == NULL)
            return NULL;
        c->server = s;
        c->state = SCONN_IDLE;
        s->conns[i] = c;
    }
    return s->conns[i];
}

static void queue_stats(req_t *r, int64_t dir)
{
    server_rt_t *s = r->server;
    if (s == NULL)
        return;
    if (r->sent) {
        wn_stat_add(WN_SSTAT(s, out_queue), (uint64_t)dir);
        wn_stat_add(WN_SSTAT(s, out_queue_bytes), (uint64_t)(dir * (int64_t)r->out_bytes));
    } else {
        wn_stat_add(WN_SSTAT(s, in_queue), (uint64_t)dir);
        wn_stat_add(WN_SSTAT(s, in_queue_bytes), (uint64_t)(dir * (int64_t)r->out_bytes));
    }
}

/*
 * A client's bytes count against it until the server's socket takes them;
 * but a client may leave, or half-close and wait, and another come. So a
 * server also bounds what waits for it, whoever sent it: past the pool's
 * client_buffer_limit (a server that has stopped reading), requests for it
 * are refused at once, until it reads again. Likewise for what it holds
 * unanswered (`held`: a server that reads and does not answer, such as
 * redis-server under CLIENT PAUSE), past the limit or WN_SERVER_HELD_MIN,
 * whichever is larger: a small limit must not refuse a healthy server's
 * ordinary pipelines (480 text gets in flight are 390 KB of bookkeeping,
 * binary ones, each a parent and its part, about twice that). Nor must a
 * burst: clients' requests count against them too, each slot about 0.6 KB,
 * and 100 clients pipelining 720 gets read in one turn are 45 MB for one
 * server (all but 27,236 refused before). So while the server answers
 * (every connection of it that waits for a reply has completed one within
 * WN_SERVER_ANSWER_MS, and none is stalled on writing), `held` may pass the
 * bound by WN_SERVER_HELD_BURST, what such bursts take (they grow with the
 * clients, not with the limit): a server that answers a request now and
 * then, for clients that leave their requests behind, pins that much more
 * at most; one that never completes a reply is refused at the bound once
 * its first request has waited WN_SERVER_ANSWER_MS.
 */
#define WN_SERVER_HELD_MIN (16u << 20)
#define WN_SERVER_HELD_BURST (48u << 20)

/* Have requests written to c waited WN_SERVER_ANSWER_MS for a reply (since
 * the last one was complete, or since the oldest of them was written)? A
 * worker that took longer than that over a turn may not have read a reply
 * that came: the bound is then the smaller one, as it always was. (Bytes
 * unread in the socket, FIONREAD, cannot say so: a server trickling a reply
 * it never ends has some there whenever the worker is slow.) */
static bool unanswering(const sconn_t *c)
{
    return c->state == SCONN_CONNECTED && c->head != NULL && c->head != c->unsent &&
           uv_now(&c->server->pool->w->loop) - c->answer_ms >= WN_SERVER_ANSWER_MS;
}

/* Has a connection of s stalled: bytes in its socket's queue taken none of,
 * or requests not written, for WN_SERVER_STALL_MS, or (with `answers`)
 * requests written to it unanswered for WN_SERVER_ANSWER_MS? */
static bool server_stalled(server_rt_t *s, bool answers)
{
    for (uint32_t i = 0; i < s->nconns; i++) {
        sconn_t *c = s->conns[i];
        if (c != NULL && (wn_sconn_stalled(c) || (answers && unanswering(c))))
            return true;
    }
    return false;
}

/* The end of a bound's refusals is logged when their start was: a server
 * that answers as fast as clients send would otherwise log a pair of lines
 * per request (wn_server_warn logs each kind once per 10 s). */
static void bound_left(server_rt_t *s, bool *warned, bool *logged, const char *what)
{
    if (!*warned)
        return;
    *warned = false;
    if (*logged)
        wn_log_notice("pool '%s': server %s %s again: taking requests for it", s->pool->conf->name,
                      s->conf->label, what);
    *logged = false;
}

static bool over_held(server_rt_t *s)
{
    pool_rt_t *p = s->pool;
    uint64_t bound = WN_MAX(p->buffer_limit, (uint64_t)WN_SERVER_HELD_MIN);
    if (s->held <= bound || (s->held - bound <= WN_SERVER_HELD_BURST && !server_stalled(s, true))) {
        bound_left(s, &s->held_warned, &s->held_logged, "answers");
        return false;
    }
    if (!s->held_warned) {
        s->held_warned = true;
        s->held_logged = wn_server_warn(
            s, WN_SWARN_HELD,
            "pool '%s': server %s has not answered requests holding %llu bytes of walnut's "
            "memory (over client_buffer_limit or 16 MiB, the larger, with no reply for %d ms; "
            "or over that and 48 MiB): refusing requests for it until it answers",
            p->conf->name, s->conf->label, (unsigned long long)s->held, WN_SERVER_ANSWER_MS);
    }
    return true;
}

void wn_count_underflow(const server_rt_t *s, const char *what, uint64_t have, uint64_t n)
{
    wn_log_error("internal: pool '%s': server %s counts %llu bytes %s and %llu leave",
                 s->pool->conf->name, s->conf->label, (unsigned long long)have, what,
                 (unsigned long long)n);
}

void wn_server_check_counts(const server_rt_t *s)
{
    if (wn_server_idle(s) && (s->waiting | s->unoffered | s->held) != 0)
        wn_log_error("internal: pool '%s': server %s has nothing queued and still counts %llu "
                     "bytes waiting, %llu unoffered, %llu held",
                     s->pool->conf->name, s->conf->label, (unsigned long long)s->waiting,
                     (unsigned long long)s->unoffered, (unsigned long long)s->held);
}

/* Does what waits for s fit `bound`? Bytes no write has offered to a
 * socket yet say nothing of the server: when one turn reads many clients,
 * or while its connection is being made or its handshake answered, they
 * alone may pass the bound while the server reads fine; what is left once
 * they were offered says whether it stopped. One bound's worth at most is
 * let through so: a worker that fell behind (descheduled, stopped) reads
 * hundreds of clients in one turn, and a server that does not read, or
 * never connects, would be queued all of it. So a server holds at most
 * twice the bound. */
static bool waiting_fits(const server_rt_t *s, uint64_t bound)
{
    uint64_t excused = WN_MIN(s->unoffered, bound);
    return s->waiting <= excused || s->waiting - excused <= bound;
}

static bool over_waiting(server_rt_t *s)
{
    pool_rt_t *p = s->pool;
    /* Its sockets take what they are given: a burst of many clients leaves
     * more than a small limit in them while the server reads fine. The bound
     * is then the limit or 16 MiB, the larger (as for `held`); once it is
     * seen stalled, the limit. */
    if (waiting_fits(s, p->buffer_limit) ||
        (p->buffer_limit < WN_SERVER_HELD_MIN && waiting_fits(s, WN_SERVER_HELD_MIN) &&
         !server_stalled(s, false))) {
        bound_left(s, &s->over_warned, &s->over_logged, "reads");
        return false;
    }
    if (!s->over_warned) {
        s->over_warned = true;
        s->over_logged = wn_server_warn(
            s, WN_SWARN_WAITING,
            "pool '%s': server %s has not taken %llu bytes queued for it (over "
            "client_buffer_limit with a socket taking nothing for %d ms, or over the larger of "
            "client_buffer_limit and 16 MiB): refusing requests for it until it reads",
            p->conf->name, s->conf->label, (unsigned long long)s->waiting, WN_SERVER_STALL_MS);
    }
    return true;
}

/* A server that has stopped reading says so first: its unsent requests
 * count in `held` too. */
static bool over_bound(server_rt_t *s)
{
    return over_waiting(s) || over_held(s);
}

/* What r pins while it waits for s: its slot, and a line it keeps to check
 * the reply (counted here, before the bound is asked, not once written: 400
 * clients' 300 gets of 240-byte keys for a server not yet connected put
 * 26 MB of lines past a bound that had counted only their slots). A
 * fragment (or copy) pins its parent, counted against the client while it
 * is there and nowhere once it has gone: the parent's last fragment for s
 * carries it (with its own slot), so a parent counts once per server
 * however many parts s gets (a gat split into 2 KB lines sends one server
 * dozens). */
static uint64_t pinned(const req_t *r, const server_rt_t *s)
{
    if (r->parent == NULL || r->more_here)
        return s->pool->w->req_size + (r->keep_out ? r->out_bytes : 0);
    return wn_req_kept(r->parent);
}

int wn_server_enqueue(server_rt_t *s, uint32_t slot, req_t *r)
{
    if (over_bound(s))
        return WN_ENOMEM;
    sconn_t *c = wn_server_conn(s, slot);
    if (c == NULL)
        return WN_ENOMEM;
    wn_req_ref(r);
    r->conn = c;
    r->server = s;
    r->snext = NULL;
    if (c->tail != NULL)
        c->tail->snext = r;
    else
        c->head = r;
    c->tail = r;
    if (c->unsent == NULL) {
        c->unsent = r;
        c->unsent_ms = uv_now(&s->pool->w->loop);
    }
    c->nqueued++;
    r->waiting = r->out_bytes;
    s->waiting += r->waiting;
    r->held = pinned(r, s);
    s->held += r->held;
    s->unoffered += r->waiting;
    queue_stats(r, 1);
    /* CONNECTING: on_connect marks it; CLOSING: the close callback does. */
    if (c->state == SCONN_IDLE || c->state == SCONN_CONNECTED)
        wn_sconn_mark(c);
    return 0;
}

void wn_sconn_enqueue(sconn_t *c, req_t *r)
{
    /* A new connection: nothing is written yet, so the front is unsent. */
    wn_req_ref(r);
    r->conn = c;
    r->server = c->server;
    r->snext = c->head;
    c->head = r;
    if (c->tail == NULL)
        c->tail = r;
    c->unsent = r;
    c->unsent_ms = uv_now(&c->server->pool->w->loop);
    c->nqueued++;
}

static void sconn_unlink(sconn_t *c, bool answered);

void wn_sconn_pop(sconn_t *c)
{
    sconn_unlink(c, true);
}

void wn_sconn_drop(sconn_t *c)
{
    sconn_unlink(c, false);
}

static void sconn_unlink(sconn_t *c, bool answered)
{
    req_t *r = c->head;
    c->head = r->snext;
    if (c->head == NULL)
        c->tail = NULL;
    if (c->unsent == r)
        c->unsent = c->head;
    r->snext = NULL;
    r->conn = NULL;
    wn_req_not_waiting(r);
    if (r->held != 0) { /* answered, or dropped: its server holds it no more */
        wn_count_sub(c->server, &c->server->held, r->held, "held");
        r->held = 0;
    }
    c->nqueued--;
    if (c->head == NULL && c->server->retired)
        wn_server_wake_successors(c->server);
    if (r->kind != REQ_INTERNAL) {
        queue_stats(r, -1);
        if (r->sent && answered) {
            wn_stat_add(WN_SSTAT(c->server, responses), 1);
            /* From the request's arrival (a fragment's: its parent's
             * split) to its server's reply being complete. */
            wn_hist_record(&c->server->stats->latency,
                           wn_worker_now_us(c->server->pool->w) - r->start_us);
        }
    }
    if (answered)
        c->answer_ms = uv_now(&c->server->pool->w->loop);
    if (c->head != NULL && c->head != c->unsent) {
        /* The timeout's clock (server.c): the worker's at the reply read
         * just now, never behind the loop's, which may be the turn's start
         * before a pause. */
        wn_worker_t *w = c->server->pool->w;
        c->progress_ms = WN_MAX(uv_now(&w->loop), wn_worker_now_us(w) / 1000);
    }
    /* A handshake request answered: what waited behind it may go. The last
     * written request of a connection to open anew: the flush does it. */
    if ((r->kind == REQ_INTERNAL && answered && c->unsent != NULL) ||
        (c->recycle && c->head == c->unsent))
        wn_sconn_mark(c);
    wn_req_unref(r);
}

void wn_queue_sent(req_t *r)
{
    if (r->kind != REQ_INTERNAL) {
        wn_req_offered(r);
        queue_stats(r, -1);
        r->sent = true;
        queue_stats(r, 1);
        wn_stat_add(WN_SSTAT(r->server, requests), 1);
        wn_stat_add(WN_SSTAT(r->server, request_bytes), r->out_bytes);
    } else {
        r->sent = true;
    }
}
