/*
 * worker/server.c: a worker's connections to one backend server. Requests
 * from many clients queue on a connection in order, are written by the flush
 * (one write per connection per loop turn) and are matched to replies in
 * FIFO order by the pool's protocol unit. A connection that breaks (read
 * error, a reply that does not match, no progress within `timeout`) is only
 * marked here; the flush closes it, fails what was queued on it with the
 * protocol's error reply, and reports the failure to control.
 * Worker thread only.
 */
#include "protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void sconn_close(sconn_t *c, int err);

/* A TCP server's address: the one control looked up (sc->sa), or, for a
 * configuration control never saw (the worker's unit tests), a numeric
 * address. Never DNS: a lookup would stall every client of this worker. */
static int server_addr(const wn_conf_server_t *sc, struct sockaddr_storage *out)
{
    if (sc->has_sa) {
        *out = sc->sa;
        return 0;
    }
    return wn_conf_addr_lookup(&sc->addr, true, out, NULL);
}

server_rt_t *wn_server_rt_create(pool_rt_t *pool, const wn_conf_pool_t *pc, uint32_t idx,
                                 char *err, size_t errlen)
{
    const wn_conf_server_t *sc = &pc->servers[idx];
    server_rt_t *s = calloc(1, sizeof(*s));
    if (s != NULL) {
        s->nconns = (uint32_t)pc->server_connections;
        s->conns = calloc(s->nconns, sizeof(*s->conns));
    }
    if (s == NULL || s->conns == NULL) {
        free(s);
        snprintf(err, errlen, "pool '%s': out of memory", pc->name);
        return NULL;
    }
    s->pool = pool;
    s->conf = sc;
    s->idx = idx;
    s->stats = pool->w->sink_server; /* until wn_pool_rt_count_in */
    /* No address (control could not resolve the name): connections fail
     * at once, as twemproxy's do ("Host is down"). */
    if (!sc->addr.is_unix && server_addr(sc, &s->addr) < 0)
        s->resolve_err = UV_EHOSTDOWN;
    return s;
}

void wn_server_rt_destroy(server_rt_t *s)
{
    if (s == NULL)
        return;
    for (uint32_t i = 0; i < s->nconns; i++) {
        if (s->conns[i] != NULL)
            wn_instream_deinit(&s->conns[i]->in);
        free(s->conns[i]); /* closed by wn_server_close_all before the loop ended */
    }
    free(s->conns);
    free(s);
}

bool wn_server_idle(const server_rt_t *s)
{
    for (uint32_t i = 0; i < s->nconns; i++)
        if (s->conns[i] != NULL && s->conns[i]->head != NULL)
            return false;
    return true;
}

/* Closed, and on no list: a connection marked after the turn's flush (by a
 * close callback: requests came while it closed) is still on the worker's
 * dirty list, which the next flush walks, and the reaper runs before it. */
bool wn_server_closed(const server_rt_t *s)
{
    for (uint32_t i = 0; i < s->nconns; i++) {
        const sconn_t *c = s->conns[i];
        if (c != NULL && (c->handle_open || c->timer_open || c->closes > 0 || c->dirty))
            return false;
    }
    return true;
}

static bool outstanding(const sconn_t *c)
{
    return c->head != NULL && c->head != c->unsent;
}

/* ---- timeouts: the longest wait for the next byte of progress ------------- */

static int timeout_ms(const sconn_t *c)
{
    return c->server->pool->conf->timeout;
}

static void on_timer(uv_timer_t *t);

static void arm_timer(sconn_t *c, uint64_t due)
{
    uint64_t now = uv_now(c->timer.loop);
    uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

/* Has the server moved (bytes or its close to read; its connect done) where
 * the worker has not looked yet? A loop turn runs its timers before it
 * polls, so a worker that was not running for longer than the timeout (a
 * long turn, a loaded or stopped host) would take a reply waiting in the
 * socket for the server's silence. Once per `stamp` (the progress or
 * connect time the deadline counts from): a socket that stays ready and is
 * not read still times out, a timeout later. */
static bool ready_unseen(sconn_t *c, uint64_t stamp)
{
    uv_os_fd_t fd;
    if ((c->late_checked && c->late_stamp == stamp) ||
        uv_fileno((const uv_handle_t *)&c->h.stream, &fd) != 0 ||
        !wn_fd_ready(fd, c->state == SCONN_CONNECTING))
        return false;
    c->late_checked = true;
    c->late_stamp = stamp;
    return true;
}

static void on_timer(uv_timer_t *t)
{
    sconn_t *c = t->data;
    wn_worker_tick(c->server->pool->w);
    uint64_t now = uv_now(t->loop);
    int timeout = timeout_ms(c);
    uint64_t due, stamp;
    if (timeout <= 0 || c->fail_err != 0)
        return;
    if (c->state == SCONN_CONNECTING)
        stamp = c->connect_ms;
    else if (c->state == SCONN_CONNECTED && outstanding(c))
        stamp = c->progress_ms;
    else
        return;
    due = stamp + (uint64_t)timeout;
    if (now < due) {
        arm_timer(c, due); /* there was progress since: wait on */
        return;
    }
    if (ready_unseen(c, stamp)) {
        arm_timer(c, now + (uint64_t)timeout); /* this turn's poll reads it */
        return;
    }
    server_rt_t *s = c->server;
    wn_stat_add(WN_SSTAT(s, server_timedout), 1);
    wn_server_warn(s, WN_SWARN_TIMEOUT,
                   "pool '%s': server %s: %s for %d ms; closing its connection",
                   s->pool->conf->name, s->conf->label,
                   c->state == SCONN_CONNECTING ? "no connection" : "no reply", timeout);
    wn_sconn_fail(c, UV_ETIMEDOUT);
}

/* The pool's timeout changed (a reload): a connection waiting already
 * (connecting, or a request without a reply) gets a deadline by it now; a
 * timer armed before sees the new value when it fires. */
void wn_server_timeout_changed(server_rt_t *s)
{
    int timeout = s->pool->conf->timeout;
    if (timeout <= 0)
        return;
    for (uint32_t i = 0; i < s->nconns; i++) {
        sconn_t *c = s->conns[i];
        if (c == NULL || !c->timer_open || c->fail_err != 0)
            continue;
        if (c->state == SCONN_CONNECTING)
            arm_timer(c, c->connect_ms + (uint64_t)timeout);
        else if (c->state == SCONN_CONNECTED && outstanding(c))
            arm_timer(c, c->progress_ms + (uint64_t)timeout);
    }
}

/* ---- reading -------------------------------------------------------------- */

static void on_read_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    sconn_t *c = h->data;
    uint32_t keep = 0;
    uint64_t ahead = 0;
    wn_proto_server_read_plan(c, &keep, &ahead);
    if (wn_instream_alloc(c->server->pool->w, &c->in, keep, ahead, buf) < 0)
        *buf = uv_buf_init(NULL, 0);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    sconn_t *c = st->data;
    server_rt_t *s = c->server;
    wn_worker_t *w = s->pool->w;
    if (nread == 0 || c->fail_err != 0)
        return;
    wn_worker_tick(w);
    if (nread < 0) {
        int err = (int)nread;
        if (err == UV_EOF) {
            wn_stat_add(WN_SSTAT(s, server_eof), 1);
            err = UV_ECONNRESET;
        } else {
            wn_stat_add(WN_SSTAT(s, server_err), 1);
        }
        if (c->head != NULL)
            wn_server_warn(
                s, WN_SWARN_CLOSED, "pool '%s': server %s closed with %u request(s) in flight: %s",
                s->pool->conf->name, s->conf->label, c->nqueued, uv_strerror((int)nread));
        wn_sconn_fail(c, err);
        return;
    }
    c->in.buf->len += (uint32_t)nread;
    /* This read's own time (wn_worker_tick's, above), not the loop's: that
     * is the poll's return, and a worker paused since (a long turn, a
     * loaded or stopped host) would stamp the progress in the past, the
     * next turn's timers counting the pause as the server's silence. It is
     * never behind the loop's clock, so a deadline from it is never early. */
    c->progress_ms = w->now_us / 1000;
    wn_stat_add(WN_GSTAT(w, bytes_read), (uint64_t)nread);
    wn_stat_add(WN_SSTAT(s, response_bytes), (uint64_t)nread);
    int rc = wn_proto_server_parse(c);
    if (rc == WN_ESRVFULL) {
        const char *said = wn_proto_full_line(s->pool->proto);
        wn_stat_add(WN_SSTAT(s, server_err), 1);
        wn_server_warn(s, WN_SWARN_FULL,
                       "pool '%s': server %s is at its connection limit (it said '%.*s' and "
                       "closed); the requests on the connection fail",
                       s->pool->conf->name, s->conf->label, (int)strlen(said) - 2, said);
        wn_sconn_fail(c, rc);
        return;
    }
    if (rc < 0) {
        wn_stat_add(WN_SSTAT(s, server_err), 1);
        wn_server_warn(s, WN_SWARN_MISMATCH,
                       "pool '%s': server %s sent a reply that does not match its request "
                       "(%s); closing the connection",
                       s->pool->conf->name, s->conf->label, wn_strerror(rc));
        wn_sconn_fail(c, WN_EPROTO);
        return;
    }
    wn_instream_trim(&c->in);
    /* Clients over --client-memory with what this read brought: the rest of
     * the turn's reads wait for the flush, which disconnects the clients
     * holding the most first (libuv reads a ready socket up to 32 times a
     * turn: one client got 13 MiB past a 1 MiB bound so, measured). */
    if (wn_client_memory_over(w) && uv_read_stop(st) == 0) {
        c->read_paused = true;
        wn_sconn_mark(c);
    }
}

/* ---- connecting ----------------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status)
{
    sconn_t *c = req->data;
    server_rt_t *s = c->server;
    if (c->state != SCONN_CONNECTING || c->fail_err != 0)
        return;
    if (status < 0) {
        wn_stat_add(WN_SSTAT(s, server_err), 1);
        /* A unix socket whose accept queue is full refuses a non-blocking
         * connect with EAGAIN, whose text says nothing of the server. */
        bool backlog = status == UV_EAGAIN && s->conf->addr.is_unix;
        wn_server_warn(
            s, WN_SWARN_CONNECT, "pool '%s': cannot connect to server %s: %s%s",
            s->pool->conf->name, s->conf->label, uv_strerror(status),
            backlog ? " (its listen backlog is full: it accepts too slowly, or not at all)" : "");
        wn_sconn_fail(c, status);
        return;
    }
    c->state = SCONN_CONNECTED;
    uv_timer_stop(&c->timer);
    wn_stat_add(WN_SSTAT(s, server_connections), 1);
    if (!s->conf->addr.is_unix)
        uv_tcp_nodelay(&c->h.tcp, 1);
    int rc = uv_read_start(&c->h.stream, on_read_alloc, on_read);
    if (rc < 0) {
        wn_sconn_fail(c, rc);
        return;
    }
    wn_proto_sconn_hello(c);
    wn_sconn_mark(c);
}

static void on_handle_closed(uv_handle_t *h);

static int sconn_connect(sconn_t *c)
{
    server_rt_t *s = c->server;
    uv_loop_t *loop = &s->pool->w->loop;
    if (!c->timer_open) {
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        c->timer_open = true;
    }
    c->connect_req.data = c;
    wn_worker_tick(s->pool->w); /* the connect's own time (see write_unsent) */
    c->connect_ms = s->pool->w->now_us / 1000;
    c->fail_err = 0;
    c->handed = c->drained_seen = 0;
    c->drained_ms = uv_now(loop); /* the stall's clock: the loop's */
    wn_stat_add(WN_GSTAT(s->pool->w, total_server_connections), 1);
    wn_proto_sconn_reset(c);
    int rc;
    if (s->conf->addr.is_unix) {
        uv_pipe_init(loop, &c->h.pipe, 0);
        c->h.handle.data = c;
        c->handle_open = true;
        c->state = SCONN_CONNECTING;
        uv_pipe_connect(&c->connect_req, &c->h.pipe, s->conf->addr.host, on_connect);
        rc = 0;
    } else {
        uv_tcp_init(loop, &c->h.tcp);
        c->h.handle.data = c;
        c->handle_open = true;
        c->state = SCONN_CONNECTING;
        rc = s->resolve_err != 0 ? s->resolve_err
                                 : uv_tcp_connect(&c->connect_req, &c->h.tcp,
                                                  (const struct sockaddr *)&s->addr, on_connect);
    }
    if (rc < 0) {
        /* Failed at once (unreachable, out of descriptors): the same as a
         * failed connect, handled by this same flush. */
        wn_stat_add(WN_SSTAT(s, server_err), 1);
        wn_server_warn(s, WN_SWARN_CONNECT, "pool '%s': cannot connect to server %s: %s",
                       s->pool->conf->name, s->conf->label, uv_strerror(rc));
        c->fail_err = rc;
        return rc;
    }
    if (timeout_ms(c) > 0)
        arm_timer(c, c->connect_ms + (uint64_t)timeout_ms(c));
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    sconn_t *c = h->data;
    if (--c->closes > 0 || c->state != SCONN_CLOSING)
        return;
    c->state = SCONN_IDLE;
    /* Requests that came while the old connection was closing go on a new
     * one (a stopping worker's too: its clients' requests are answered). */
    if (c->head != NULL)
        wn_sconn_mark(c);
}

/* ---- the flush's part: write, connect, close ------------------------------- */

/* What may be written now: everything unsent, but while walnut's own first
 * requests on a new connection (a protocol's AUTH, SELECT) are unanswered,
 * only those: a refused SELECT fails the requests behind it unrun, instead
 * of the server running them in another database. Called when the head is
 * such a request: the first request that must wait, or NULL. */
WN_COLD static req_t *write_stop(const sconn_t *c)
{
    req_t *r = c->unsent;
    while (r != NULL && r->kind == REQ_INTERNAL)
        r = r->snext;
    return r;
}

/* Requests whose bytes a queued write still holds: each stays counted
 * against its client's limit until the socket has taken them, so a server
 * that stops reading cannot make walnut read its clients on without bound. */
typedef struct inwrite {
    uint32_t n;
    req_t *reqs[];
} inwrite_t;

static void on_taken(void *arg, int status, uint64_t bytes)
{
    (void)status; /* a failed write shows up as a read error or a timeout */
    (void)bytes;
    inwrite_t *q = arg;
    for (uint32_t i = 0; i < q->n; i++) {
        wn_req_out_written(q->reqs[i]);
        wn_req_unref(q->reqs[i]);
    }
    free(q);
}

static uint64_t out_len(const req_t *r)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < r->out.n; i++)
        n += r->out.v[i].len;
    return n;
}

/* The requests from `from` to `stop` that the first `done` bytes did not
 * cover, referenced; NULL when there are none or no memory (then they are
 * let go as if written: uncounted, not lost). */
WN_COLD static inwrite_t *still_in_write(req_t *from, req_t *stop, uint64_t done)
{
    uint32_t n = 0;
    uint64_t end = 0;
    for (req_t *r = from; r != stop; r = r->snext) {
        end += out_len(r);
        if (end > done)
            n++;
    }
    inwrite_t *q = n > 0 ? malloc(sizeof(*q) + n * sizeof(req_t *)) : NULL;
    if (q == NULL)
        return NULL;
    q->n = 0;
    end = 0;
    for (req_t *r = from; r != stop; r = r->snext) {
        end += out_len(r);
        if (end > done) {
            wn_req_ref(r);
            q->reqs[q->n++] = r;
        }
    }
    return q;
}

/* What c's socket has taken of what was queued for it: looked at before
 * each write and by the bound. Returns the bytes still in the queue. */
static uint64_t sample_drain(sconn_t *c, uint64_t now)
{
    uint64_t queued = c->h.stream.write_queue_size;
    uint64_t drained = c->handed > queued ? c->handed - queued : 0;
    if (drained != c->drained_seen || queued == 0) {
        c->drained_seen = drained;
        c->drained_ms = now;
    }
    return queued;
}

bool wn_sconn_stalled(sconn_t *c)
{
    uint64_t now = uv_now(&c->server->pool->w->loop);
    if (c->unsent != NULL && (c->state == SCONN_CONNECTING || c->state == SCONN_CONNECTED) &&
        now - c->unsent_ms >= WN_SERVER_STALL_MS)
        return true; /* not written: the connect, a handshake or a predecessor holds them */
    if (c->state != SCONN_CONNECTED)
        return false;
    return sample_drain(c, now) > 0 && now - c->drained_ms >= WN_SERVER_STALL_MS;
}

static void write_unsent(sconn_t *c)
{
    server_rt_t *s = c->server;
    wn_worker_t *w = s->pool->w;
    req_t *stop = c->head != NULL && c->head->kind == REQ_INTERNAL ? write_stop(c) : NULL;
    if (c->unsent == stop)
        return; /* written again once the handshake is answered */
    outv_t o;
    wn_outv_init(&o);
    for (req_t *r = c->unsent; r != stop; r = r->snext)
        for (uint32_t i = 0; i < r->out.n; i++)
            if (wn_outv_add(&o, r->out.v[i].buf, r->out.v[i].off, r->out.v[i].len) < 0) {
                wn_outv_deinit(&o);
                sconn_close(c, WN_ENOMEM);
                return;
            }
    uint64_t now = uv_now(&w->loop);
    bool was_idle = !outstanding(c);
    sample_drain(c, now);
    /* A failed write shows up as a read error or a timeout. */
    int64_t rc = wn_outv_try(&o, &c->h.stream);
    uint64_t taken = rc > 0 ? (uint64_t)rc : 0;
    inwrite_t *q = NULL;
    if (rc >= 0 && taken < o.bytes) {
        q = still_in_write(c->unsent, stop, taken);
        rc = wn_outv_queue(&o, &c->h.stream, taken, q != NULL ? on_taken : NULL, q);
        if (rc < 0 && q != NULL)
            on_taken(q, (int)rc, 0);
        if (rc >= 0)
            c->handed += o.bytes - taken;
    }
    wn_stat_add(WN_GSTAT(w, bytes_written), o.bytes);
    wn_outv_deinit(&o);
    if (rc < 0) {
        sconn_close(c, (int)rc);
        return;
    }
    uint64_t end = 0;
    for (req_t *r = c->unsent; r != stop; r = r->snext) {
        wn_queue_sent(r);
        if (q != NULL && (end += out_len(r)) > taken)
            continue; /* let go by on_taken */
        wn_req_out_written(r);
    }
    c->unsent = stop;
    c->unsent_ms = now; /* what is left waits for the handshake from now */
    if (was_idle) {
        /* The timeout counts from this write: the write's own time, not the
         * loop's (the poll's return): a worker paused in between (a long
         * turn, a loaded or stopped host) stamped it in the past, and the
         * next turn's timers failed a request sent a moment ago (seen: the
         * stamp 1.5 s before the write; test_pauses). */
        wn_worker_tick(w);
        c->progress_ms = w->now_us / 1000;
        c->answer_ms = now; /* the bound's clock: the loop's (queue.c) */
        if (timeout_ms(c) > 0 && !uv_is_active((uv_handle_t *)&c->timer))
            arm_timer(c, c->progress_ms + (uint64_t)timeout_ms(c));
    }
}

/* Fail everything queued on c with err (the protocol writes the replies). */
static void fail_queued(sconn_t *c, int err)
{
    while (c->head != NULL) {
        req_t *r = c->head;
        wn_req_ref(r);
        wn_sconn_drop(c);
        wn_proto_fail(r, err);
        wn_req_unref(r);
    }
}

/* The connection goes; its queue stays (the caller fails it, or keeps it
 * for the next connection). */
static void sconn_shut(sconn_t *c)
{
    server_rt_t *s = c->server;
    if (c->state == SCONN_CONNECTED)
        wn_stat_sub(WN_SSTAT(s, server_connections), 1);
    c->recycle = false;
    c->read_paused = false;
    c->state = SCONN_CLOSING;
    wn_proto_sconn_reset(c);
    wn_instream_deinit(&c->in);
    if (c->handle_open) {
        c->handle_open = false;
        c->closes++;
        uv_close(&c->h.handle, on_handle_closed);
    }
    if (c->timer_open)
        uv_timer_stop(&c->timer);
    if (c->closes == 0)
        c->state = SCONN_IDLE;
    c->fail_err = 0;
}

static void sconn_close(sconn_t *c, int err)
{
    server_rt_t *s = c->server;
    bool had_requests = c->head != NULL;
    sconn_shut(c);
    fail_queued(c, err);
    /* A server closing an idle connection has not failed; one sending
     * bytes nobody asked for (WN_EPROTO with nothing in flight), or saying
     * it is full, has. */
    if (err != 0 && err != UV_ECANCELED &&
        (had_requests || err == UV_ECONNREFUSED || err == UV_ETIMEDOUT || err == WN_EPROTO ||
         err == WN_ESRVFULL))
        wn_ctl_server_failed(s, err);
}

/* The same backend: the same address as written, or the same one looked up. */
static bool same_backend(const server_rt_t *a, const server_rt_t *b)
{
    return wn_conf_addr_same(&a->conf->addr, &b->conf->addr) ||
           (!a->conf->addr.is_unix && !b->conf->addr.is_unix &&
            wn_sockaddr_same(&a->addr, &b->addr));
}

/*
 * A reload replaced this backend's server (new server_connections, AUTH or
 * SELECT; or removed it and added it back) while the one it replaced still
 * has requests out. A client's later request must not overtake its earlier
 * ones on the old connections (a get after a set would read the old value),
 * so nothing is written until every older server for the backend drained:
 * the last reply (or failure) there wakes it (wn_server_wake_successors).
 * The retired list is newest first: a retired server waits for older ones.
 */
static bool behind_predecessor(const sconn_t *c)
{
    const server_rt_t *s = c->server;
    const server_rt_t *o = s->retired ? s->retired_next : s->pool->w->retired_servers;
    for (; o != NULL; o = o->retired_next)
        if (o->pool == s->pool && !o->closing && same_backend(o, s) && !wn_server_idle(o))
            return true;
    return false;
}

void wn_sconn_flush(sconn_t *c)
{
    if (c->fail_err != 0) {
        sconn_close(c, c->fail_err);
        return;
    }
    if (c->read_paused) {
        /* The clients' memory is weighed after the servers are flushed, and
         * reading resumes only at the next poll: one read each in between. */
        c->read_paused = false;
        int rc =
            c->state == SCONN_CONNECTED ? uv_read_start(&c->h.stream, on_read_alloc, on_read) : 0;
        if (rc < 0) {
            wn_sconn_fail(c, rc);
            sconn_close(c, c->fail_err);
            return;
        }
    }
    if (c->recycle && c->state == SCONN_CONNECTED) {
        if (c->head != c->unsent)
            return; /* written requests wait for their replies: the last one marks it */
        sconn_shut(c);
        if (c->state == SCONN_IDLE && c->head != NULL)
            wn_sconn_mark(c); /* closed at once: connect again now */
        return;
    }
    switch (c->state) {
    case SCONN_IDLE:
        /* A stopping worker connects too: a request that came during the
         * stop is answered (the grace period bounds the wait). */
        if (c->head == NULL)
            return;
        if (sconn_connect(c) < 0)
            sconn_close(c, c->fail_err);
        return;
    case SCONN_CONNECTED:
        if (c->unsent != NULL &&
            (c->server->pool->w->retired_servers == NULL || !behind_predecessor(c)))
            write_unsent(c);
        return;
    default: /* connecting or closing: their callbacks mark it again */
        return;
    }
}

void wn_server_preconnect(server_rt_t *s)
{
    /* One connection, as twemproxy opens one per server: the others open
     * when clients use them. All server_connections of every worker at
     * once filled a server's connection limit. */
    sconn_t *c = s->nconns > 0 ? wn_server_conn(s, 0) : NULL;
    if (c != NULL && c->state == SCONN_IDLE && sconn_connect(c) < 0)
        sconn_close(c, c->fail_err);
}

void wn_server_close_all(server_rt_t *s)
{
    for (uint32_t i = 0; i < s->nconns; i++) {
        sconn_t *c = s->conns[i];
        if (c == NULL)
            continue;
        if (c->state != SCONN_IDLE && c->state != SCONN_CLOSING)
            sconn_close(c, UV_ECANCELED);
        else
            fail_queued(c, UV_ECANCELED);
        if (c->timer_open) {
            c->timer_open = false;
            c->closes++;
            if (c->state == SCONN_IDLE)
                c->state = SCONN_CLOSING;
            uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        }
    }
}
