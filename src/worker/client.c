/*
 * worker/client.c: client connections. Reads hand bytes to the pool's
 * protocol unit; replies are written strictly in request order by the flush
 * (wn_client_flush), which alone writes, resumes and closes. Bounded: a
 * client with too many requests in flight or too many bytes held is not read
 * until it drains, and one over its pool's client_buffer_limit is
 * disconnected. Worker thread only.
 */
#include "protocol.h"

#include <linux/sockios.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static bool input_waiting(const client_t *c);

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    client_t *c = h->data;
    uint32_t keep = 0;
    uint64_t ahead = 0;
    if (!c->lingering) /* else read only to be dropped */
        wn_proto_client_read_plan(c, &keep, &ahead);
    if (wn_instream_alloc(c->w, &c->in, keep, ahead, buf) < 0)
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
}

static void start_reading(client_t *c)
{
    if (!c->reading && uv_read_start(&c->h.stream, on_alloc, on_read) == 0)
        c->reading = true;
}

/* ---- pacing (WN_CLIENT_STALL_MS) ----------------------------------------- */

/* Not read for its soft bounds alone, with a reply write under way. */
static bool paused_on_a_write(const client_t *c)
{
    return !c->reading && !c->unpaced && c->writes > 0 && !c->eof && !c->closing && !c->broken &&
           !c->overlimit && !c->stop_parsing && c->held_by == NULL && !c->mid_request &&
           (wn_client_inflight_full(c) || c->held >= c->soft_limit);
}

static void on_pace(uv_timer_t *t)
{
    wn_worker_t *w = t->data;
    uint64_t now = uv_now(&w->loop);
    bool watching = false;
    for (client_t *c = w->clients; c != NULL; c = c->next) {
        if (c->lingering) { /* the flush looks at its socket (linger) */
            watching = true;
            wn_client_mark(c);
            continue;
        }
        if (!paused_on_a_write(c)) {
            c->stall_ms = 0;
            continue;
        }
        watching = true;
        size_t queued = uv_stream_get_write_queue_size(&c->h.stream);
        if (c->stall_ms == 0 || queued != c->stall_queue) {
            c->stall_ms = now;
            c->stall_queue = queued;
        } else if (now - c->stall_ms >= WN_CLIENT_STALL_MS) {
            c->unpaced = true;
            c->stall_ms = 0;
            wn_client_mark(c);
        }
    }
    if (!watching)
        uv_timer_stop(t);
}

void wn_client_pace_init(wn_worker_t *w)
{
    uv_timer_init(&w->loop, &w->pace_timer);
    w->pace_timer.data = w;
    uv_unref((uv_handle_t *)&w->pace_timer);
}

static void pace_timer_on(wn_worker_t *w)
{
    uv_timer_t *t = &w->pace_timer;
    if (!uv_is_active((uv_handle_t *)t))
        uv_timer_start(t, on_pace, WN_CLIENT_STALL_MS / 4, WN_CLIENT_STALL_MS / 4);
}

/* c stopped reading: watch it if a write of its is under way. */
static void pace_watch(client_t *c)
{
    if (paused_on_a_write(c))
        pace_timer_on(c->w);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    client_t *c = s->data;
    if (nread == 0)
        return;
    wn_worker_tick(c->w);
    if (nread < 0) {
        uv_read_stop(s);
        c->reading = false;
        c->eof = true;
        if (nread != UV_EOF) {
            c->broken = true;
        } else if (!c->lingering) {
            /* Answer what was asked in full; a half-sent request is dropped. */
            wn_proto_client_eof(c);
        } /* else the client closes after its last reply: a close like any */
        wn_client_mark(c);
        return;
    }
    c->in.buf->len += (uint32_t)nread;
    wn_stat_add(WN_GSTAT(c->w, bytes_read), (uint64_t)nread);
    if (c->stop_parsing) {
        /* After quit or lost framing nothing more is looked at. */
        c->in.pos = c->in.buf->len;
    } else {
        wn_proto_client_parse(c);
    }
    if (c->reading && !c->lingering && !wn_client_can_parse(c)) {
        uv_read_stop(s);
        c->reading = false;
        pace_watch(c);
    }
}

static client_t *client_new(pool_rt_t *pool)
{
    wn_worker_t *w = pool->w;
    client_t *c = calloc(1, pool->client_size);
    if (c == NULL)
        return NULL;
    c->w = w;
    c->pool = pool;
    c->soft_limit = pool->buffer_limit / 4;
    c->reply_est = c->soft_limit / WN_CLIENT_FIRST_INFLIGHT;
    wn_segv_init(&c->backlog);
    c->h.handle.data = c;
    return c;
}

static void client_attach(client_t *c)
{
    wn_worker_t *w = c->w;
    pool_rt_t *pool = c->pool;
    wn_proto_client_init(c);
    c->slot = w->next_slot++;
    c->next = w->clients;
    if (w->clients != NULL)
        w->clients->prev = c;
    w->clients = c;
    w->nclients++;
    pool->nclients++;
    if (w->budget != NULL)
        atomic_fetch_add_explicit(&w->budget->open, 1, memory_order_relaxed);
    wn_stat_add(WN_GSTAT(w, curr_connections), 1);
    wn_stat_add(WN_GSTAT(w, total_connections), 1);
    wn_stat_add(WN_PSTAT(pool, client_connections), 1);
    start_reading(c);
    if (!c->reading) {
        c->broken = true;
        wn_client_mark(c);
    }
}

#define WN_BUDGET_WARN_MS 60000u

/* Is there room for one more client in the process's descriptor budget?
 * If not, say so (once a minute at most). */
static bool budget_room(wn_worker_t *w)
{
    wn_client_budget_t *b = w->budget;
    if (b == NULL)
        return true;
    unsigned limit = atomic_load_explicit(&b->limit, memory_order_relaxed);
    unsigned open = atomic_load_explicit(&b->open, memory_order_relaxed);
    if (limit == 0 || open < limit)
        return true;
    uint32_t left_out;
    if (wn_log_limit_pass(&w->budget_warned, uv_now(&w->loop), WN_BUDGET_WARN_MS, &left_out, NULL))
        wn_log_warn("%u client connections open, the most the descriptor limit leaves room for "
                    "beside server connections: new ones are closed at once (%u more since the "
                    "last warning); raise RLIMIT_NOFILE (LimitNOFILE=, ulimit -n)",
                    open, left_out);
    return false;
}

/* Is there room for one more client in the pool's client_connections? It
 * is a limit for the process, as in twemproxy: counted over every worker
 * (a client let in is counted; the caller counts it out if it cannot open). */
static bool pool_room(pool_rt_t *pool)
{
    wn_worker_t *w = pool->w;
    int limit = pool->conf->client_connections;
    wn_pool_clients_t *pc = pool->clients;
    unsigned open;
    if (pc != NULL) {
        if (limit <= 0) {
            atomic_fetch_add_explicit(&pc->open, 1, memory_order_relaxed);
            return true;
        }
        /* Counted only if under the limit: two workers taking the last
         * place at once must not both be refused (an add then a subtract
         * would refuse both). */
        open = atomic_load_explicit(&pc->open, memory_order_relaxed);
        while (open < (unsigned)limit)
            if (atomic_compare_exchange_weak_explicit(&pc->open, &open, open + 1,
                                                      memory_order_relaxed, memory_order_relaxed))
                return true;
    } else {
        /* No shared count (out of memory at its reload): this worker's share. */
        open = pool->nclients;
        if (limit <= 0 || open < (unsigned)((limit + w->nworkers - 1) / w->nworkers))
            return true;
    }
    uint32_t left_out;
    if (wn_log_limit_pass(&pool->clients_warned, uv_now(&w->loop), WN_BUDGET_WARN_MS, &left_out,
                          NULL))
        wn_log_warn("pool '%s': %u client connections open, its client_connections: new ones "
                    "are closed at once (%u more since the last warning)",
                    pool->conf->name, open, left_out);
    return false;
}

void wn_client_accept(pool_rt_t *pool, int fd, bool is_unix)
{
    wn_worker_t *w = pool->w;
    if (!budget_room(w) || !pool_room(pool)) {
        wn_stat_add(WN_GSTAT(w, rejected_connections), 1);
        close(fd);
        return;
    }
    client_t *c = NULL;
    if (wn_client_open(pool, fd, is_unix, &c) < 0) {
        if (pool->clients != NULL)
            atomic_fetch_sub_explicit(&pool->clients->open, 1, memory_order_relaxed);
        close(fd);
        return;
    }
    c->pool_counted = pool->clients != NULL;
    if (!is_unix) {
        uv_tcp_nodelay(&c->h.tcp, 1);
        if (pool->conf->tcpkeepalive)
            uv_tcp_keepalive(&c->h.tcp, 1, 60);
    }
}

int wn_client_open(pool_rt_t *pool, uv_file fd, bool is_pipe, client_t **out)
{
    wn_worker_t *w = pool->w;
    client_t *c = client_new(pool);
    if (c == NULL)
        return WN_ENOMEM;
    int rc = is_pipe ? uv_pipe_init(&w->loop, &c->h.pipe, 0) : uv_tcp_init(&w->loop, &c->h.tcp);
    if (rc == 0)
        rc = is_pipe ? uv_pipe_open(&c->h.pipe, fd) : uv_tcp_open(&c->h.tcp, fd);
    c->h.handle.data = c;
    if (rc < 0) {
        c->closing = true;
        uv_close(&c->h.handle, (uv_close_cb)free);
        return rc;
    }
    client_attach(c);
    if (out != NULL)
        *out = c;
    return 0;
}

static void on_client_closed(uv_handle_t *h)
{
    client_t *c = h->data;
    wn_worker_t *w = c->w;
    free(c);
    wn_worker_kick(w); /* a stopping worker may be done: the flush looks */
}

static void unlink_dirty(client_t *c)
{
    if (!c->dirty)
        return;
    client_t **pp = &c->w->dirty_clients;
    while (*pp != NULL && *pp != c)
        pp = &(*pp)->dirty_next;
    if (*pp == c)
        *pp = c->dirty_next;
    c->dirty = false;
}

static void unlink_deferred(client_t *c)
{
    if (!c->deferring)
        return;
    client_t **pp = &c->w->deferred_clients;
    while (*pp != NULL && *pp != c)
        pp = &(*pp)->defer_next;
    if (*pp == c)
        *pp = c->defer_next;
    c->deferring = false;
}

/* Only the flush (and the worker's last-resort stop) close a client. */
static void client_close(client_t *c, bool error)
{
    if (c->closing)
        return;
    wn_worker_t *w = c->w;
    pool_rt_t *pool = c->pool;
    wn_ctl_forget(c);
    /* Requests still in flight stay with their servers; their replies are
     * dropped when they come, never sent to anyone else. */
    while (c->head != NULL) {
        req_t *r = c->head;
        c->head = r->next;
        r->next = NULL;
        wn_req_detach(r);
        if (r->conn != NULL || (r->kind == REQ_PARENT && !r->done))
            wn_proto_req_orphaned(r);
        wn_req_unref(r);
    }
    c->tail = NULL;
    c->inflight = 0;
    if (c->waiting) {
        c->waiting = false;
        w->clients_waiting--;
    }
    w->reqs_waiting -= c->waiting_reqs;
    c->waiting_reqs = 0;
    wn_segv_clear(&c->backlog);
    wn_buf_unref(c->backlog_buf);
    c->backlog_buf = NULL;
    wn_proto_client_deinit(c);
    wn_instream_deinit(&c->in);
    w->clients_held -= WN_MIN(c->held, w->clients_held); /* what it held goes with it */
    c->closing = true;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    w->nclients--;
    pool->nclients--;
    if (w->budget != NULL)
        atomic_fetch_sub_explicit(&w->budget->open, 1, memory_order_relaxed);
    if (c->pool_counted)
        atomic_fetch_sub_explicit(&pool->clients->open, 1, memory_order_relaxed);
    wn_stat_sub(WN_GSTAT(w, curr_connections), 1);
    wn_stat_sub(WN_PSTAT(pool, client_connections), 1);
    wn_stat_add(error ? WN_PSTAT(pool, client_err) : WN_PSTAT(pool, client_eof), 1);
    unlink_dirty(c);
    unlink_deferred(c);
    uv_close(&c->h.handle, on_client_closed);
}

static void on_written(void *arg, int status, uint64_t bytes)
{
    client_t *c = arg; /* valid: libuv runs write callbacks before close callbacks */
    c->writes--;
    c->unpaced = false; /* it reads: its bounds apply again */
    c->stall_ms = 0;
    c->pending -= bytes;
    if (c->closing) /* cancelled: its bytes left the worker's sum at the close */
        c->held -= WN_MIN(bytes, c->held);
    else
        wn_client_held_sub(c, bytes);
    if (status < 0)
        c->broken = true;
    wn_client_mark(c);
}

/*
 * c's last reply is written: may it close now, or is it worth lingering
 * (WN_CLIENT_LINGER_MS)? Not when the client closed its side (it sent
 * all it will, walnut read it all), nor when its socket holds nothing
 * unacknowledged and nothing unread (close(2) sends FIN). Else FIN, and read
 * on until the client closes, or has acknowledged everything, the FIN too
 * (its kernel has every reply and the end: a reset for what it sends after
 * cannot take them away, and it reads EOF), or no progress.
 */
static bool linger(client_t *c)
{
    uv_os_fd_t fd;
    int unacked;
    if (c->eof || uv_fileno(&c->h.handle, &fd) < 0 || ioctl(fd, SIOCOUTQ, &unacked) < 0)
        return false;
    uint64_t now = uv_now(&c->w->loop);
    if (!c->lingering) {
        if ((unacked <= 0 && !input_waiting(c)) || shutdown(fd, SHUT_WR) < 0)
            return false;
        c->lingering = true;
        c->stall_ms = now;
        c->stall_queue = (size_t)unacked;
        start_reading(c);
        pace_timer_on(c->w);
        return true;
    }
    if (unacked <= 0)
        return false;
    if ((size_t)unacked != c->stall_queue) {
        c->stall_queue = (size_t)unacked;
        c->stall_ms = now;
    }
    return now - c->stall_ms < WN_CLIENT_LINGER_MS;
}

/* Nothing more will be asked or answered. */
static bool finished(const client_t *c)
{
    return c->eof && c->head == NULL && c->held_by == NULL && c->writes == 0 && c->backlog.n == 0;
}

/* c's head request is answered (its reply written, queued or copied): it
 * leaves c. Returns what it held, for the caller to release. */
static uint64_t pop_answered(client_t *c)
{
    req_t *r = c->head;
    c->head = r->next;
    if (c->head == NULL)
        c->tail = NULL;
    r->next = NULL;
    uint64_t held = r->acct;
    r->acct = 0;
    r->client = NULL;
    c->inflight--;
    wn_client_recount(c);
    c->w->answered++;
    /* What its replies hold, a maximum that decays by an eighth a reply
     * (wn_client_inflight_full): after a large one, a few dozen small ones
     * let it have 1024 in flight again. */
    c->reply_est = WN_MAX(held, c->reply_est - c->reply_est / 8);
    /* Answered while a part still waits (another part failed): the part
     * keeps it, and its line, as long as its server does not answer. */
    if (r->kind == REQ_PARENT && r->refs > 1)
        wn_proto_req_orphaned(r);
    wn_req_unref(r);
    return held;
}

/* A backlog buffer's size at least (the pool's chunk when not larger). */
#define WN_BACKLOG_CHUNK 16384u

/* Room for n more bytes in c's backlog buffer (a new one when it is full:
 * the one filled so far stays referenced by the backlog's segments). A new
 * buffer's whole size is added to *taken: a reply just over half a chunk
 * leaves the rest of its chunk unused, and what the backlog holds is what
 * counts against the client. */
static wn_buf_t *backlog_room(client_t *c, size_t n, uint64_t *taken)
{
    wn_buf_t *b = c->backlog_buf;
    if (b != NULL && b->cap - b->len >= n)
        return b;
    /* The pool's chunks (-m) may be large: then a buffer of about what it
     * will hold, not a chunk counted whole for a few bytes. */
    wn_bufpool_t *pool = &c->w->bufs;
    wn_buf_t *nb = pool->chunk_size <= WN_BACKLOG_CHUNK
                       ? wn_buf_get(pool, n)
                       : wn_buf_get_exact(pool, WN_MAX(n, (size_t)WN_BACKLOG_CHUNK));
    if (nb == NULL)
        return NULL;
    wn_buf_unref(b);
    c->backlog_buf = nb;
    *taken += nb->cap;
    return nb;
}

/* A write under way (the socket did not take the last one: the client
 * reads slowly, or not at all): the replies of the requests done at the
 * head of c's FIFO are copied into its backlog, in order, and the requests
 * let go. Held with its request, each reply would keep alive the server
 * read buffer it points into (16 KiB, shared with other clients' replies)
 * for a few bytes counted; the backlog counts what it takes. Stops at one
 * not done, at a close (quit: written by write_ready), or when memory runs
 * out (the rest wait with their requests). */
static void compact_ready(client_t *c)
{
    uint64_t released = 0, taken = 0;
    while (c->head != NULL && c->head->done && !c->head->close_after) {
        req_t *r = c->head;
        uint64_t len = 0;
        if (!r->noreply)
            for (uint32_t i = r->rsp_sent; i < r->rsp.n; i++)
                len += r->rsp.v[i].len;
        if (len > 0) {
            wn_buf_t *b = len <= UINT32_MAX ? backlog_room(c, len, &taken) : NULL;
            if (b == NULL)
                break;
            uint32_t at = b->len;
            for (uint32_t i = r->rsp_sent; i < r->rsp.n; i++) {
                const seg_t *s = &r->rsp.v[i];
                memcpy(b->data + b->len, s->buf->data + s->off, s->len);
                b->len += s->len;
            }
            if (wn_segv_push(&c->backlog, b, at, (uint32_t)len) < 0) {
                b->len = at;
                break;
            }
        }
        released += pop_answered(c);
    }
    c->backlog_bytes += taken;
    wn_client_held_sub(c, released);
    wn_client_held_add(c, taken);
    /* As a request's bytes are counted (request.c): past the limit, the
     * flush disconnects it. */
    if (c->held > c->pool->buffer_limit && !c->overlimit) {
        c->overlimit = true;
        c->held_over = c->held;
        wn_client_mark(c);
    }
}

/* Write every reply ready at the head of c's FIFO, in order, in one write;
 * an incomplete head's bytes so far go too (a large value streams), unless
 * its reply is held until done. */
static int write_ready(client_t *c)
{
    outv_t o;
    wn_outv_init(&o);
    uint64_t released = 0;
    bool close_after = false;
    int rc = 0;
    for (uint32_t i = 0; i < c->backlog.n && rc == 0; i++)
        rc = wn_outv_add(&o, c->backlog.v[i].buf, c->backlog.v[i].off, c->backlog.v[i].len);
    req_t *r = c->head;
    while (r != NULL && rc == 0) {
        if (!r->done && r->rsp_held)
            break;
        if (!r->noreply) {
            for (uint32_t i = r->rsp_sent; i < r->rsp.n && rc == 0; i++)
                rc = wn_outv_add(&o, r->rsp.v[i].buf, r->rsp.v[i].off, r->rsp.v[i].len);
        }
        if (!r->done)
            break;
        if (r->close_after) {
            close_after = true;
            break;
        }
        r = r->next;
    }
    if (rc < 0) {
        wn_outv_deinit(&o);
        return rc;
    }
    int64_t queued = wn_outv_write(&o, &c->h.stream, on_written, c);
    wn_stat_add(WN_GSTAT(c->w, bytes_written), o.bytes);
    wn_outv_deinit(&o);
    if (queued < 0)
        return (int)queued;
    c->w->answered_bytes += o.bytes; /* a failed write answers nothing */
    /* Written or queued with references of their own: the backlog and the
     * requests can go, and a streaming head lets go of what it has sent. */
    if (c->backlog_buf != NULL) {
        released += c->backlog_bytes;
        c->backlog_bytes = 0;
        wn_segv_clear(&c->backlog);
        wn_buf_unref(c->backlog_buf); /* not held while there is no backlog */
        c->backlog_buf = NULL;
    }
    while (c->head != NULL) {
        r = c->head;
        if (!r->done) {
            for (uint32_t i = r->rsp_sent; i < r->rsp.n && !r->rsp_held; i++) {
                wn_buf_unref(r->rsp.v[i].buf);
                r->rsp.v[i].buf = NULL;
                released += r->rsp.v[i].len;
                if (r->acct >= r->rsp.v[i].len)
                    r->acct -= r->rsp.v[i].len;
                else
                    r->acct = 0;
            }
            if (!r->rsp_held)
                r->rsp_sent = r->rsp.n;
            break;
        }
        bool last = r->close_after;
        released += pop_answered(c);
        if (last)
            break;
    }
    wn_client_held_sub(c, released);
    if (queued > 0) {
        c->writes++;
        c->pending += (uint64_t)queued;
        wn_client_held_add(c, (uint64_t)queued);
    }
    if (close_after) {
        /* Nothing after a quit or lost framing is answered. */
        c->stop_parsing = true;
        c->close_on_write = true;
    }
    return 0;
}


void wn_client_limits(client_t *c)
{
    c->soft_limit = c->pool->buffer_limit / 4;
    wn_client_mark(c); /* a higher limit may let it be read again */
}

void wn_client_shutdown(client_t *c)
{
    /* Read on: requests already on their way are answered; the flush
     * closes the client as soon as it has nothing in flight. */
    c->draining = true;
    wn_client_mark(c);
}

/* Bytes the client sent that walnut has not read yet (a stopping worker
 * must not close over them: the client would get a reset, not a reply). */
static bool input_waiting(const client_t *c)
{
    uv_os_fd_t fd;
    char b;
    if (uv_fileno(&c->h.handle, &fd) < 0)
        return false;
    return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

/* Stopping: nothing in flight, nothing buffered, nothing on its way. */
static bool drained(const client_t *c)
{
    return c->head == NULL && c->writes == 0 && c->backlog.n == 0 && c->held_by == NULL &&
           !c->mid_request && (c->in.buf == NULL || c->in.pos == c->in.buf->len) &&
           !input_waiting(c);
}

/* Work for the parser: bytes not framed yet, or a complete request the unit
 * kept while c was held (its bytes are consumed: nothing else would resume
 * it until the client sent more). */
static bool parse_due(const client_t *c)
{
    return (c->in.buf != NULL && c->in.pos < c->in.buf->len) || wn_proto_client_has_pending(c);
}

/* At most this many clients are picked in one flush: each pick looks at
 * every client; the next turn picks more if need be. */
#define EVICT_MAX_PER_TURN 64
#define EVICT_WARN_MS 60000

/* Marks the clients holding the most to go until `shed` bytes are. */
static bool evict(wn_worker_t *w, uint64_t shed, uint64_t total)
{
    uint64_t going = 0;
    for (client_t *c = w->clients; c != NULL; c = c->next)
        if (c->overlimit) /* going already */
            going += c->held;
    bool any = false;
    for (int n = 0; n < EVICT_MAX_PER_TURN && going < shed; n++) {
        client_t *big = NULL;
        for (client_t *c = w->clients; c != NULL; c = c->next)
            if (!c->overlimit && !c->closing && (big == NULL || c->held > big->held))
                big = c;
        if (big == NULL || big->held == 0)
            break;
        uint32_t left_out;
        if (wn_log_limit_pass(&w->evict_warned, uv_now(&w->loop), EVICT_WARN_MS, &left_out, NULL))
            wn_log_warn("pool '%s': clients hold %llu bytes in all, over --client-memory (%llu), "
                        "and this worker's %llu; disconnecting the client holding the most (%llu "
                        "bytes; %u more since the last warning)",
                        big->pool->conf->name, (unsigned long long)total,
                        (unsigned long long)w->budget->memory_limit,
                        (unsigned long long)w->clients_held, (unsigned long long)big->held,
                        left_out);
        going += big->held;
        big->overlimit = true;
        big->evicted = true;
        big->held_over = big->held;
        wn_client_mark(big);
        any = true;
    }
    return any;
}

/* The total w sees, when w is over its share (else 0): within its share a
 * worker never looks further: the total is the others' to bring down, and
 * a client alone may hold more than the share while the total is under the
 * bound. */
static uint64_t total_over_share(const wn_worker_t *w, uint64_t *share)
{
    const wn_client_budget_t *b = w->budget;
    *share = b->memory_limit / (uint64_t)w->nworkers;
    if (w->clients_held <= *share)
        return 0;
    uint64_t total = w->clients_held;
    for (int i = 0; i < w->nworkers; i++)
        if (i != w->id)
            total += atomic_load_explicit(&b->held[i].bytes, memory_order_relaxed);
    return total;
}

bool wn_client_memory_over(const wn_worker_t *w)
{
    /* after each server read: within its share (the common case) at the
     * cost of a multiplication */
    uint64_t share;
    return w->budget != NULL && w->budget->held != NULL &&
           w->clients_held * (uint64_t)w->nworkers > w->budget->memory_limit &&
           total_over_share(w, &share) > w->budget->memory_limit;
}

bool wn_client_memory_check(wn_worker_t *w)
{
    wn_client_budget_t *b = w->budget;
    if (b == NULL || b->held == NULL)
        return false;
    atomic_store_explicit(&b->held[w->id].bytes, w->clients_held, memory_order_relaxed);
    uint64_t share;
    uint64_t total = total_over_share(w, &share);
    if (total <= b->memory_limit)
        return false;
    return evict(w, WN_MIN(total - b->memory_limit, w->clients_held - share), total);
}

/*
 * --batch-wait: a client with replies ready and more of its requests
 * unanswered (at the servers, or still coming) has them written a turn
 * later, with what came meanwhile. A pipeline's requests go to several
 * servers, whose replies come in different turns, and the client was
 * written once for each: one write, and one wakeup of the client, for a
 * few replies where it sent them in one (memtier, pipeline 16 over two
 * servers: 1.4 writes a batch). Held one turn at most, whatever its
 * requests do next: a client whose last request never gets an answer
 * still gets the replies before it, and one that pipelines without end is
 * written every other turn. Not while the worker stops, nor for a client
 * that will not send more (its replies then end it), nor where memory is
 * short: the client holds its soft bound (what it reads meanwhile would
 * take it towards its limit), or the worker half its share of
 * --client-memory (the check after the flush counts what is held).
 */
static bool memory_short(const client_t *c)
{
    if (c->held >= c->soft_limit)
        return true;
    const wn_client_budget_t *b = c->w->budget;
    return b != NULL && b->held != NULL &&
           c->w->clients_held >= b->memory_limit / (uint64_t)c->w->nworkers / 2;
}

static bool hold_for_pipeline(client_t *c)
{
    if (c->deferred || c->w->batch_wait_ns == 0 || c->w->stopping || c->backlog.n > 0 || c->eof ||
        c->close_on_write || c->draining || c->head == NULL || !c->head->done || c->tail->done ||
        memory_short(c)) {
        c->deferred = false;
        return false;
    }
    wn_stat_add(WN_GSTAT(c->w, batch_holds), 1);
    c->deferred = true;
    wn_client_defer(c);
    return true;
}

void wn_client_flush(client_t *c)
{
    if (c->closing)
        return;
    if (c->overlimit && c->evicted) {
        wn_stat_add(WN_PSTAT(c->pool, client_evicted), 1);
        client_close(c, true);
        return;
    }
    if (c->overlimit) {
        wn_log_warn("pool '%s': client holds %llu bytes, over client_buffer_limit %llu; "
                    "disconnecting it",
                    c->pool->conf->name, (unsigned long long)WN_MAX(c->held, c->held_over),
                    (unsigned long long)c->pool->buffer_limit);
        wn_stat_add(WN_PSTAT(c->pool, client_overlimit), 1);
        client_close(c, true);
        return;
    }
    if (c->broken) {
        client_close(c, true);
        return;
    }
    /* One write at a time: while the socket has not taken the last one,
     * replies stay with their requests, where the client's bounds (requests
     * in flight, bytes held) count them and stop its reading; queued writes
     * would cost memory per reply that no bound sees. */
    if (c->writes == 0 &&
        (c->backlog.n > 0 ||
         (c->head != NULL &&
          (c->head->done || (!c->head->rsp_held && c->head->rsp.n > c->head->rsp_sent)))) &&
        !hold_for_pipeline(c)) {
        if (write_ready(c) < 0) {
            client_close(c, true);
            return;
        }
    } else if (c->writes > 0) {
        compact_ready(c);
    }
    if (c->close_on_write) {
        if (c->writes > 0 && c->reading) {
            uv_read_stop(&c->h.stream);
            c->reading = false;
        }
        if (c->writes == 0 && !linger(c))
            client_close(c, false);
        return;
    }
    if (finished(c) || (c->draining && drained(c))) {
        client_close(c, false);
        return;
    }
    /* Under its bounds again: parse what is buffered, then read on. */
    if (!c->eof && wn_client_can_parse(c)) {
        if (parse_due(c))
            wn_proto_client_parse(c);
        if (wn_client_can_parse(c))
            start_reading(c);
    } else if (c->eof && c->held_by == NULL && !c->stop_parsing && parse_due(c) &&
               wn_client_can_parse(c)) {
        /* Half-closed with complete requests still buffered (held earlier). */
        wn_proto_client_parse(c);
    }
    if (c->reading && !wn_client_can_parse(c)) {
        uv_read_stop(&c->h.stream);
        c->reading = false;
    }
    if (!c->reading)
        pace_watch(c);
    wn_instream_trim(&c->in);
    if (finished(c) || (c->draining && drained(c)))
        client_close(c, false);
}

