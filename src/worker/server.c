/*
 * worker/server.c: a worker's connections to one backend server. Requests
 * from many clients are queued on a connection in order, written in batches
 * (one uv_write per loop turn per connection) and matched to replies in FIFO
 * order. Connection failures and timeouts fail every request on that
 * connection with twemproxy's SERVER_ERROR strings and count toward
 * ejection. Worker thread only.
 */
#include "worker_priv.h"

#include <stdlib.h>
#include <string.h>

static void sconn_fail_all(sconn_t *c, int err);
static void sconn_close(sconn_t *c, int err);

int server_rt_init(server_rt_t *s, pool_rt_t *pool, uint32_t idx)
{
    s->pool = pool;
    s->conf = &pool->conf->servers[idx];
    s->idx = idx;
    s->nconns = (uint32_t)pool->conf->server_connections;
    s->conns = calloc(s->nconns, sizeof(*s->conns));
    return s->conns == NULL ? WN_ENOMEM : 0;
}

void server_rt_deinit(server_rt_t *s)
{
    for (uint32_t i = 0; i < s->nconns; i++)
        free(s->conns[i]); /* closed by server_close_all before the loop ended */
    free(s->conns);
    s->conns = NULL;
}

static int sconn_connect(sconn_t *c);

static void on_handle_closed(uv_handle_t *h)
{
    sconn_t *c = h->data;
    if (--c->closes > 0 || c->state != SCONN_CLOSING)
        return;
    c->state = SCONN_IDLE;
    /* Requests that came while the old connection was closing go on a new one. */
    if (c->head != NULL && !c->server->pool->w->stopping)
        sconn_connect(c);
}

static void on_timer(uv_timer_t *t);

/* The deadline that matters now: the connect's while connecting, else the
 * oldest sent request's. 0: none. */
static uint64_t deadline(const sconn_t *c)
{
    int timeout = c->server->pool->conf->timeout;
    if (timeout <= 0)
        return 0;
    if (c->state == SCONN_CONNECTING)
        return c->connect_ms + (uint64_t)timeout;
    if (c->head == NULL || c->head == c->unsent)
        return 0;
    return c->head->sent_ms + (uint64_t)timeout;
}

static void arm_timer(sconn_t *c)
{
    uint64_t due = deadline(c);
    if (due == 0)
        return;
    uint64_t now = uv_now(c->timer.loop);
    uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
    sconn_t *c = t->data;
    uint64_t due = deadline(c);
    if (due == 0)
        return;
    if (uv_now(t->loop) < due) {
        arm_timer(c);
        return;
    }
    wn_worker_t *w = c->server->pool->w;
    STAT_INC(w, server_timedout);
    wn_log_warn("pool '%s': server %s: %s within %d ms, closing its connection",
                c->server->pool->conf->name, c->server->conf->name,
                c->state == SCONN_CONNECTING ? "no connection" : "no reply",
                c->server->pool->conf->timeout);
    sconn_close(c, UV_ETIMEDOUT);
}

static void on_read_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    sconn_t *c = h->data;
    if (instream_alloc(c->server->pool->w, &c->in, c->data_left == 0, buf) < 0)
        *buf = uv_buf_init(NULL, 0);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    sconn_t *c = s->data;
    wn_worker_t *w = c->server->pool->w;
    if (nread == 0)
        return;
    if (nread < 0) {
        int err = (int)nread;
        if (err == UV_EOF) {
            STAT_INC(w, server_eof);
            err = UV_ECONNRESET;
        } else {
            STAT_INC(w, server_err);
        }
        if (c->head != NULL)
            wn_log_warn("pool '%s': server %s closed with %u request(s) in flight: %s",
                        c->server->pool->conf->name, c->server->conf->name, c->nqueued,
                        uv_strerror((int)nread));
        sconn_close(c, err);
        return;
    }
    c->in.buf->len += (uint32_t)nread;
    STAT_ADD(w, bytes_read, (uint64_t)nread);
    int rc = mc_server_process(c);
    if (rc < 0) {
        STAT_INC(w, server_err);
        wn_log_warn("pool '%s': server %s sent a reply walnut cannot frame (%s); closing",
                    c->server->pool->conf->name, c->server->conf->name, wn_strerror(rc));
        sconn_close(c, UV_ECONNRESET);
        return;
    }
    if (c->head != NULL && c->head != c->unsent)
        arm_timer(c);
    else
        uv_timer_stop(&c->timer);
}

static void mark_dirty(sconn_t *c)
{
    if (c->dirty)
        return;
    wn_worker_t *w = c->server->pool->w;
    c->dirty = true;
    c->dirty_next = w->dirty_servers;
    w->dirty_servers = c;
}

static void on_connect(uv_connect_t *req, int status)
{
    sconn_t *c = req->data;
    pool_rt_t *pool = c->server->pool;
    if (c->state != SCONN_CONNECTING)
        return;
    if (status < 0) {
        STAT_INC(pool->w, server_err);
        wn_log_warn("pool '%s': cannot connect to server %s: %s", pool->conf->name,
                    c->server->conf->name, uv_strerror(status));
        sconn_close(c, status);
        return;
    }
    c->state = SCONN_CONNECTED;
    uv_timer_stop(&c->timer);
    STAT_INC(pool->w, server_connections);
    if (!c->server->conf->addr.is_unix)
        uv_tcp_nodelay(&c->h.tcp, 1);
    uv_read_start(&c->h.stream, on_read_alloc, on_read);
    if (c->unsent != NULL)
        mark_dirty(c);
}

static int sconn_connect(sconn_t *c)
{
    server_rt_t *s = c->server;
    uv_loop_t *loop = &s->pool->w->loop;
    int rc;
    if (!c->timer_open) {
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        c->timer_open = true;
    }
    c->connect_req.data = c;
    c->connect_ms = uv_now(loop);
    mc_sconn_reset(c);
    if (s->conf->addr.is_unix) {
        uv_pipe_init(loop, &c->h.pipe, 0);
        c->h.handle.data = c;
        c->handle_open = true;
        c->state = SCONN_CONNECTING;
        uv_pipe_connect(&c->connect_req, &c->h.pipe, s->conf->addr.host, on_connect);
        arm_timer(c);
        return 0;
    }
    uv_tcp_init(loop, &c->h.tcp);
    c->h.handle.data = c;
    c->handle_open = true;
    c->state = SCONN_CONNECTING;
    rc = uv_tcp_connect(&c->connect_req, &c->h.tcp, (const struct sockaddr *)&s->addr,
                        on_connect);
    if (rc < 0) {
        sconn_close(c, rc);
        return rc;
    }
    arm_timer(c);
    return 0;
}

static sconn_t *get_conn(server_rt_t *s, uint32_t slot)
{
    uint32_t i = slot % s->nconns;
    if (s->conns[i] == NULL) {
        sconn_t *c = calloc(1, sizeof(*c));
        if (c == NULL)
            return NULL;
        c->server = s;
        c->state = SCONN_IDLE;
        s->conns[i] = c;
    }
    return s->conns[i];
}

void server_enqueue(server_rt_t *s, uint32_t slot, req_t *r)
{
    sconn_t *c = get_conn(s, slot);
    if (c == NULL) {
        req_fail(r, WN_ENOMEM);
        return;
    }
    req_ref(r);
    r->snext = NULL;
    if (c->tail != NULL)
        c->tail->snext = r;
    else
        c->head = r;
    c->tail = r;
    if (c->unsent == NULL)
        c->unsent = r;
    c->nqueued++;
    /* CLOSING: the request waits in the queue; the close callback reconnects. */
    if (c->state == SCONN_IDLE) {
        if (sconn_connect(c) < 0)
            return;
    }
    if (c->state == SCONN_CONNECTED)
        mark_dirty(c);
}

static void flush_conn(sconn_t *c)
{
    wn_worker_t *w = c->server->pool->w;
    uint32_t nsegs = 0;
    for (req_t *r = c->unsent; r != NULL; r = r->snext)
        nsegs += r->out.n;
    if (nsegs == 0)
        return;
    outv_t o;
    if (outv_init(&o, nsegs) < 0) {
        sconn_close(c, WN_ENOMEM);
        return;
    }
    uint64_t now = uv_now(&w->loop);
    for (req_t *r = c->unsent; r != NULL; r = r->snext) {
        for (uint32_t i = 0; i < r->out.n; i++)
            outv_add(&o, r->out.v[i].buf, r->out.v[i].off, r->out.v[i].len);
        r->sent_ms = now;
    }
    c->unsent = NULL;
    /* A failed write shows up as a read error or a timeout: no callback needed. */
    int64_t rc = outv_write(&o, &c->h.stream, NULL, NULL);
    STAT_ADD(w, bytes_written, o.bytes);
    outv_deinit(&o);
    if (rc < 0) {
        sconn_close(c, (int)rc);
        return;
    }
    arm_timer(c);
}

void server_flush_all(wn_worker_t *w)
{
    while (w->dirty_servers != NULL) {
        sconn_t *c = w->dirty_servers;
        w->dirty_servers = c->dirty_next;
        c->dirty = false;
        c->dirty_next = NULL;
        if (c->state == SCONN_CONNECTED)
            flush_conn(c);
    }
}

/* Pop the head request: its reply is complete (or it failed). */
void sconn_pop(sconn_t *c)
{
    req_t *r = c->head;
    c->head = r->snext;
    if (c->head == NULL)
        c->tail = NULL;
    if (c->unsent == r)
        c->unsent = c->head;
    r->snext = NULL;
    c->nqueued--;
    c->data_left = 0;
    req_unref(r);
}

static void sconn_fail_all(sconn_t *c, int err)
{
    while (c->head != NULL) {
        req_t *r = c->head;
        req_ref(r);
        sconn_pop(c);
        req_fail(r, err);
        req_unref(r);
    }
}

static void sconn_close(sconn_t *c, int err)
{
    server_rt_t *s = c->server;
    bool had_requests = c->head != NULL;
    if (c->state == SCONN_CONNECTED)
        STAT_DEC(s->pool->w, server_connections);
    c->state = SCONN_CLOSING;
    mc_sconn_reset(c);
    instream_deinit(&c->in);
    if (c->handle_open) {
        c->handle_open = false;
        c->closes++;
        uv_close(&c->h.handle, on_handle_closed);
    }
    if (c->timer_open) {
        uv_timer_stop(&c->timer);
    }
    if (c->closes == 0)
        c->state = SCONN_IDLE;
    sconn_fail_all(c, err);
    if (err != 0 && (had_requests || err == UV_ECONNREFUSED || err == UV_ETIMEDOUT))
        ctl_server_failed(s, err);
    client_flush_all(s->pool->w);
}

void server_preconnect(server_rt_t *s)
{
    for (uint32_t i = 0; i < s->nconns; i++) {
        sconn_t *c = get_conn(s, i);
        if (c != NULL && c->state == SCONN_IDLE)
            sconn_connect(c);
    }
}

void server_close_all(server_rt_t *s)
{
    for (uint32_t i = 0; i < s->nconns; i++) {
        sconn_t *c = s->conns[i];
        if (c == NULL)
            continue;
        if (c->state != SCONN_IDLE && c->state != SCONN_CLOSING)
            sconn_close(c, 0);
        if (c->timer_open) {
            c->timer_open = false;
            c->closes++;
            uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        }
    }
}
