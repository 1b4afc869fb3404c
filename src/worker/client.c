/*
 * worker/client.c: client connections: accept, read, hand bytes to the
 * protocol (mc.c), and write replies strictly in request order. Bounded:
 * a client with too many requests in flight or too many reply bytes
 * unwritten is not read until it drains. Worker thread only.
 */
#include "worker_priv.h"

#include <stdlib.h>
#include <string.h>

static void on_client_closed(uv_handle_t *h)
{
    client_t *c = h->data;
    wn_worker_t *w = c->w;
    instream_deinit(&c->in);
    free(c);
    worker_client_gone(w);
}

void client_close(client_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    wn_worker_t *w = c->w;
    ctl_forget(c);
    /* Requests still in flight stay with their servers; their replies are
     * dropped when they come, never sent to anyone else. */
    while (c->head != NULL) {
        req_t *r = c->head;
        c->head = r->next;
        r->next = NULL;
        r->client = NULL;
        req_unref(r);
    }
    c->tail = NULL;
    c->inflight = 0;
    if (c->data_req != NULL) {
        c->data_req->client = NULL;
        req_unref(c->data_req);
        c->data_req = NULL;
    }
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    w->nclients--;
    c->pool->nclients--;
    STAT_DEC(w, curr_connections);
    if (c->dirty) {
        client_t **pp = &w->dirty_clients;
        while (*pp != NULL && *pp != c)
            pp = &(*pp)->dirty_next;
        if (*pp == c)
            *pp = c->dirty_next;
        c->dirty = false;
    }
    uv_close(&c->h.handle, on_client_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    client_t *c = h->data;
    if (instream_alloc(c->w, &c->in, c->data_left == 0, buf) < 0)
        *buf = uv_buf_init(NULL, 0);
}

/* Nothing more will be asked or answered: the peer is done and so are we. */
static bool finished(const client_t *c)
{
    return c->eof && c->head == NULL && c->held_by == NULL && c->writes == 0;
}

bool client_over_bounds(const client_t *c)
{
    return c->inflight >= WN_CLIENT_MAX_INFLIGHT ||
           c->pending_bytes >= WN_CLIENT_MAX_PENDING_BYTES;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void update_reading(client_t *c)
{
    if (c->closing)
        return;
    bool want = !c->eof && !client_over_bounds(c) && c->held_by == NULL;
    if (want && !c->reading) {
        c->paused = false;
        /* Requests already buffered go first. */
        mc_client_process(c);
        if (c->closing || c->eof || client_over_bounds(c) || c->held_by != NULL)
            return;
        if (uv_read_start(&c->h.stream, on_alloc, on_read) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop(&c->h.stream);
        c->reading = false;
        c->paused = !c->eof;
    }
}

void client_resume(client_t *c)
{
    update_reading(c);
    if (!c->closing && c->held_by == NULL && c->eof)
        mc_client_process(c); /* a held request may still be waiting in the buffer */
    if (!c->closing && finished(c))
        client_close(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    client_t *c = s->data;
    wn_worker_t *w = c->w;
    if (nread == 0)
        return;
    if (nread < 0) {
        /* EOF: answer what was asked, then close; errors: close now. */
        uv_read_stop(s);
        c->reading = false;
        c->eof = true;
        if (nread != UV_EOF || finished(c))
            client_close(c);
        else
            client_mark_ready(c);
        return;
    }
    c->in.buf->len += (uint32_t)nread;
    STAT_ADD(w, bytes_read, (uint64_t)nread);
    mc_client_process(c);
    /* Writes to servers and clients go out once per loop turn (worker_flush). */
    if (!c->closing)
        update_reading(c);
}

void client_accept(pool_rt_t *pool, uv_stream_t *listener)
{
    wn_worker_t *w = pool->w;
    client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->w = w;
    c->pool = pool;
    if (pool->conf->listen.is_unix)
        uv_pipe_init(&w->loop, &c->h.pipe, 0);
    else
        uv_tcp_init(&w->loop, &c->h.tcp);
    c->h.handle.data = c;
    if (uv_accept(listener, &c->h.stream) < 0) {
        c->closing = true;
        uv_close(&c->h.handle, (uv_close_cb)free);
        return;
    }
    /* client_connections is a process-wide limit in twemproxy; each worker
     * takes its share of it. */
    int limit = pool->conf->client_connections;
    if (limit > 0) {
        uint32_t share = (uint32_t)((limit + w->nworkers - 1) / w->nworkers);
        if (pool->nclients >= share) {
            STAT_INC(w, rejected_connections);
            c->closing = true;
            uv_close(&c->h.handle, (uv_close_cb)free);
            return;
        }
    }
    if (!pool->conf->listen.is_unix) {
        uv_tcp_nodelay(&c->h.tcp, 1);
        if (pool->conf->tcpkeepalive)
            uv_tcp_keepalive(&c->h.tcp, 1, 60);
    }
    wn_mc_limits_t lim = {.max_line = WN_MAX_LINE, .max_value = WN_MAX_VALUE};
    wn_mc_req_parser_init(&c->parser, &lim);
    c->slot = w->next_slot++;
    c->next = w->clients;
    if (w->clients != NULL)
        w->clients->prev = c;
    w->clients = c;
    w->nclients++;
    pool->nclients++;
    STAT_INC(w, curr_connections);
    STAT_INC(w, total_connections);
    if (uv_read_start(&c->h.stream, on_alloc, on_read) == 0)
        c->reading = true;
    else
        client_close(c);
}

void client_mark_ready(client_t *c)
{
    if (c->dirty || c->closing)
        return;
    c->dirty = true;
    c->dirty_next = c->w->dirty_clients;
    c->w->dirty_clients = c;
}

static void on_written(void *arg, int status, uint64_t bytes)
{
    client_t *c = arg; /* still valid: libuv runs write callbacks before close callbacks */
    c->writes--;
    c->pending_bytes -= bytes;
    if (c->closing)
        return;
    if (status < 0) {
        client_close(c);
        return;
    }
    if (c->close_on_write && c->writes == 0) {
        client_close(c);
        return;
    }
    if (finished(c)) {
        client_close(c);
        return;
    }
    update_reading(c);
}

/* Write every reply that is ready at the head of c's FIFO, in one write. */
static void flush_client(client_t *c)
{
    uint32_t nsegs = 0, nreqs = 0;
    bool close_after = false;
    for (req_t *r = c->head; r != NULL && r->done; r = r->next) {
        if (!r->noreply && !r->swallow)
            nsegs += r->rsp.n;
        nreqs++;
        if (r->close_after) {
            close_after = true;
            break;
        }
    }
    if (nreqs == 0)
        return;
    outv_t o;
    if (outv_init(&o, nsegs) < 0) {
        client_close(c);
        return;
    }
    req_t *r = c->head;
    for (uint32_t k = 0; k < nreqs; k++, r = r->next) {
        if (r->noreply || r->swallow)
            continue;
        for (uint32_t i = 0; i < r->rsp.n; i++)
            outv_add(&o, r->rsp.v[i].buf, r->rsp.v[i].off, r->rsp.v[i].len);
    }
    int64_t queued = outv_write(&o, &c->h.stream, on_written, c);
    STAT_ADD(c->w, bytes_written, o.bytes);
    outv_deinit(&o);
    /* Written or queued (with references of its own): the requests can go. */
    for (uint32_t k = 0; k < nreqs; k++) {
        r = c->head;
        c->head = r->next;
        if (c->head == NULL)
            c->tail = NULL;
        r->next = NULL;
        r->client = NULL;
        c->inflight--;
        req_unref(r);
    }
    if (queued < 0) {
        client_close(c);
        return;
    }
    if (queued > 0) {
        c->writes++;
        c->pending_bytes += (uint64_t)queued;
    }
    if (close_after) {
        /* Nothing after a quit or a framing error is answered. */
        c->close_on_write = true;
        if (c->reading) {
            uv_read_stop(&c->h.stream);
            c->reading = false;
        }
        c->eof = true;
    }
    if (c->writes == 0 && (c->close_on_write || finished(c))) {
        client_close(c);
        return;
    }
    update_reading(c);
}

void client_flush_all(wn_worker_t *w)
{
    while (w->dirty_clients != NULL) {
        client_t *c = w->dirty_clients;
        w->dirty_clients = c->dirty_next;
        c->dirty = false;
        c->dirty_next = NULL;
        if (!c->closing)
            flush_client(c);
    }
}
