/*
 * worker/client.c: client connections: accept, read, hand bytes to the
 * protocol (mc.c), and write replies strictly in request order. Bounded:
 * a client with too many requests in flight or too many reply bytes
 * unwritten is not read until it drains. Worker thread only.
 */
#include "worker_priv.h"

#include <stdlib.h>
#include <string.h>

typedef struct cwrite {
    uv_write_t req;
    client_t *c;
    uint64_t bytes;
    uint32_t n;
    wn_buf_t **bufs; /* references held until the write completes */
    uv_buf_t *iov;
} cwrite_t;

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
        server_flush_all(c->w);
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
        client_flush_all(w);
        return;
    }
    c->in.buf->len += (uint32_t)nread;
    STAT_ADD(w, bytes_read, (uint64_t)nread);
    mc_client_process(c);
    server_flush_all(w);
    client_flush_all(w);
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
        uint32_t mine = 0;
        for (client_t *o = w->clients; o != NULL; o = o->next)
            mine += o->pool == pool;
        if (mine >= share) {
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

static void on_write(uv_write_t *req, int status)
{
    cwrite_t *wr = req->data;
    client_t *c = wr->c;
    for (uint32_t i = 0; i < wr->n; i++)
        wn_buf_unref(wr->bufs[i]);
    c->writes--;
    c->pending_bytes -= wr->bytes;
    free(wr);
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
    server_flush_all(c->w);
    client_flush_all(c->w);
}

/* Write every reply that is ready at the head of c's FIFO, in one uv_write. */
static void flush_client(client_t *c)
{
    uint32_t nsegs = 0;
    bool close_after = false;
    for (req_t *r = c->head; r != NULL && r->done; r = r->next) {
        if (!r->noreply && !r->swallow)
            nsegs += r->rsp.n;
        if (r->close_after)
            break;
    }
    cwrite_t *wr = NULL;
    if (nsegs > 0) {
        wr = malloc(sizeof(*wr) + nsegs * (sizeof(wn_buf_t *) + sizeof(uv_buf_t)));
        if (wr == NULL) {
            client_close(c);
            return;
        }
        wr->iov = (uv_buf_t *)(wr + 1);
        wr->bufs = (wn_buf_t **)(wr->iov + nsegs);
        wr->n = 0;
        wr->bytes = 0;
        wr->c = c;
    }
    while (c->head != NULL && c->head->done) {
        req_t *r = c->head;
        if (!r->noreply && !r->swallow) {
            for (uint32_t i = 0; i < r->rsp.n; i++) {
                seg_t *sg = &r->rsp.v[i];
                wn_buf_ref(sg->buf);
                wr->bufs[wr->n] = sg->buf;
                wr->iov[wr->n++] = uv_buf_init(sg->buf->data + sg->off, sg->len);
                wr->bytes += sg->len;
            }
        }
        c->head = r->next;
        if (c->head == NULL)
            c->tail = NULL;
        r->next = NULL;
        r->client = NULL;
        c->inflight--;
        close_after = r->close_after;
        req_unref(r);
        if (close_after)
            break;
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
    if (wr != NULL) {
        wr->req.data = wr;
        c->writes++;
        c->pending_bytes += wr->bytes;
        STAT_ADD(c->w, bytes_written, wr->bytes);
        int rc = uv_write(&wr->req, &c->h.stream, wr->iov, wr->n, on_write);
        if (rc < 0) {
            wr->req.data = wr;
            on_write(&wr->req, rc);
            return;
        }
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
