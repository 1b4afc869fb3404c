/*
 * control/http_conn.c: one stats connection (see http.h). Requests are parsed
 * with http-parser, paused at the end of each head and each message, so that
 * sizes are checked before anything is kept and responses go out in request
 * order, one queued at a time. A response is made whole (a fresh view,
 * rendered) and handed to uv_write; its memory goes in the write callback,
 * the connection's in its handles' close callbacks. A connection has one
 * deadline at a time (rearm). Loop thread only; never blocks.
 *
 * Why http-parser (Debian's libhttp-parser-dev 2.9): a pure, incremental,
 * callback parser with no I/O of its own, so it sits on a libuv stream as
 * it was made to (Node used it over libuv for years); it can pause inside a
 * callback, which is how heads and bodies are bounded here. llhttp, its
 * successor with the same callback shape, has no C package in Debian 12;
 * libmicrohttpd brings its own event loop and threads.
 */
#include "http_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "walnut/core.h"

/* A response on its way: the head inside, the body the renderer's. */
typedef struct wreq {
    uv_write_t req;
    conn_t *c;                /* borrowed: a handle outlives its write requests */
    char *body;               /* owned (malloc'd by a renderer or here), unless shared */
    http_body_t *shared;      /* a reference, or NULL */
    size_t head_len;
    char head[512];
} wreq_t;

static void drive(conn_t *c);

static uint64_t now_ms(const conn_t *c)
{
    return uv_now(c->srv->loop);
}

/* ---- freeing ---------------------------------------------------------------- */

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->handles > 0)
        return;
    wn_http_t *srv = c->srv;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    srv->nconns--;
    srv->nclosing--;
    free(c->buf);
    free(c->url);
    free(c);
    http_server_slot_freed(srv);
    http_server_maybe_free(srv);
}

void http_conn_close(conn_t *c)
{
    if (c->closing_handles)
        return;
    c->closing_handles = true;
    c->srv->nclosing++;
    /* Pending writes and the shutdown complete with UV_ECANCELED before the
     * close callbacks run; their callbacks see closing_handles and only free. */
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

/* ---- writing ------------------------------------------------------------------ */

/* A body let go of: a reference to a shared one, or one of its own. */
static void body_drop(http_body_t *shared, char *body)
{
    if (shared != NULL)
        http_body_unref(shared);
    else
        free(body);
}

static void wreq_free(wreq_t *w)
{
    body_drop(w->shared, w->body);
    free(w);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    if (c->closing_handles)
        return;
    if (status < 0 || c->eof) {
        http_conn_close(c);
        return;
    }
    /* Our side is done. Closing now with unread input would make the kernel
     * send a reset, which can destroy the response before the client read
     * it; so drain until the client closes too, for linger_ms at most. */
    c->lingering = true;
    c->linger_start_ms = now_ms(c);
    drive(c);
}

static size_t queued(const conn_t *c)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
}

/* A write was queued, or taken whole: the client's reading is on time. The
 * clock is read afresh: the loop's time is its turn's start, and a turn
 * that rendered a slow view before this write would count the render
 * against the client (a kept-alive connection answered after a 300 ms
 * render was closed as idle for 300 ms before it could ask again). */
static void write_progressed(conn_t *c)
{
    uv_update_time(c->srv->loop);
    c->write_progress_ms = now_ms(c);
    c->queued_at_progress = queued(c);
}

static void on_write(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    conn_t *c = w->c;
    wreq_free(w);
    c->pending--;
    if (c->closing_handles)
        return;
    if (status < 0) {
        http_conn_close(c);
        return;
    }
    write_progressed(c);
    c->idle_since_ms = c->write_progress_ms;
    drive(c);
}

/* Queue w behind c's earlier writes; false (w freed, c closing) if libuv
 * refused it. */
static bool queue_write(conn_t *c, wreq_t *w, uv_buf_t *bufs, unsigned nbufs)
{
    bool first = c->pending == 0;
    size_t before = queued(c);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nbufs, on_write) < 0) {
        wreq_free(w);
        http_conn_close(c);
        return false;
    }
    if (first)
        write_progressed(c);
    else
        c->queued_at_progress += queued(c) - before; /* more to write, none of it late yet */
    c->pending++;
    return true;
}

/* Queue one response. a's body is taken over; with head_only the body
 * only gives its length (HEAD). */
static void send_response(conn_t *c, http_answer_t *a, bool head_only)
{
    int status = a->status;
    const char *type = a->type, *extra_headers = a->extra_headers;
    char *body = a->body;
    size_t body_len = a->len;
    wreq_t *w = malloc(sizeof(*w));
    if (w == NULL) {
        body_drop(a->shared, a->body); /* unsent */
        http_conn_close(c);
        return;
    }
    w->c = c;
    w->body = body;
    w->shared = a->shared;
    char date[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    const char *conn_hdr = "";
    if (c->done)
        conn_hdr = "Connection: close\r\n";
    else if (c->parser.http_major == 1 && c->parser.http_minor == 0)
        conn_hdr = "Connection: keep-alive\r\n"; /* 1.0 asked for it, or we'd be done */
    int n = snprintf(w->head, sizeof(w->head),
                     "HTTP/1.1 %d %s\r\n"
                     "Server: walnut/%s\r\n"
                     "Date: %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n"
                     "%s%s\r\n",
                     status, http_status_str((enum http_status)status), WN_VERSION, date, type,
                     body_len, extra_headers != NULL ? extra_headers : "", conn_hdr);
    w->head_len = (size_t)n < sizeof(w->head) ? (size_t)n : sizeof(w->head) - 1;
    uv_buf_t bufs[2] = {uv_buf_init(w->head, (unsigned)w->head_len),
                        uv_buf_init(body, (unsigned)body_len)};
    unsigned nbufs = head_only || body_len == 0 ? 1 : 2;
    if (queue_write(c, w, bufs, nbufs))
        c->srv->counters.requests++;
}

/* The interim answer to Expect: 100-continue, queued before the response. */
static void send_continue(conn_t *c)
{
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    wreq_t *w = malloc(sizeof(*w));
    if (w == NULL) {
        http_conn_close(c);
        return;
    }
    w->c = c;
    w->body = NULL;
    w->shared = NULL;
    w->head_len = sizeof(line) - 1;
    memcpy(w->head, line, w->head_len);
    uv_buf_t buf = uv_buf_init(w->head, (unsigned)w->head_len);
    queue_write(c, w, &buf, 1);
}

/* No more requests on c: shut our side down once what is queued is written. */
static void finish(conn_t *c)
{
    if (c->shut || c->closing_handles)
        return;
    c->shut = true;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        http_conn_close(c);
}

static void send_answer(conn_t *c, int rc, http_answer_t *a, bool head_only)
{
    if (rc < 0) {
        body_drop(a->shared, a->body); /* unsent */
        http_conn_close(c);
        return;
    }
    send_response(c, a, head_only);
}

static void send_error(conn_t *c, int status, bool head_only)
{
    http_answer_t a = {0};
    int rc = http_error_answer(&a, status);
    send_answer(c, rc, &a, head_only);
}

/* A request whose form we refuse: answer, then no more from this client. */
static void reject(conn_t *c, int status)
{
    c->srv->counters.rejected++;
    c->done = true;
    send_error(c, status, false);
    finish(c);
}

static void respond(conn_t *c)
{
    bool head = c->parser.method == HTTP_HEAD;
    if (c->parser.method != HTTP_GET && !head) {
        send_error(c, 405, false);
        return;
    }
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (c->url_len == 0 || http_parser_parse_url(c->url, c->url_len, 0, &u) != 0) {
        c->done = true;
        send_error(c, 400, head);
        return;
    }
    const char *path = "/";
    size_t plen = 1;
    if (u.field_set & (1u << UF_PATH)) {
        path = c->url + u.field_data[UF_PATH].off;
        plen = u.field_data[UF_PATH].len;
    }

    http_answer_t a;
    int rc = http_route(c->srv, path, plen, &a);
    send_answer(c, rc, &a, head);
}

/* twemproxy's protocol: the JSON and a newline, then close. */
static void respond_raw(conn_t *c)
{
    c->mode = MODE_RAW;
    c->done = true;
    c->word_only = false;
    c->srv->counters.twemproxy++;
    int err = 0;
    http_body_t *body = http_render_raw(c->srv, &err);
    if (body == NULL) {
        wn_log_warn("stats: cannot make the stats: %s", wn_strerror(err));
        http_conn_close(c);
        return;
    }
    wreq_t *w = malloc(sizeof(*w));
    if (w == NULL) {
        http_body_unref(body);
        http_conn_close(c);
        return;
    }
    w->c = c;
    w->body = body->text;
    w->shared = body;
    w->head_len = 0;
    uv_buf_t buf = uv_buf_init(body->text, (unsigned)body->len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) < 0) {
        wreq_free(w);
        http_conn_close(c);
        return;
    }
    write_progressed(c);
    c->pending++;
    finish(c);
}

/* ---- parsing ---------------------------------------------------------------- */

static conn_t *conn_of(http_parser *p)
{
    return p->data;
}

static int on_message_begin(http_parser *p)
{
    conn_t *c = conn_of(p);
    c->url_len = 0;
    c->nheaders = 0;
    c->body_bytes = 0;
    c->in_field = false;
    c->in_expect = false;
    c->want_continue = false;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    conn_t *c = conn_of(p);
    if (c->url_len + n > c->srv->lim.max_url) {
        c->error_status = 414;
        return -1;
    }
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    return 0;
}

/* The first bytes of a header's name or value, up to cap; a length of
 * cap + 1 stands for anything longer. */
static void keep_prefix(char *dst, uint8_t *len, size_t cap, const char *at, size_t n)
{
    if (*len > cap)
        return;
    size_t room = cap - *len;
    memcpy(dst + *len, at, WN_MIN(n, room));
    *len = n > room ? (uint8_t)(cap + 1) : (uint8_t)(*len + n);
}

/* The value of an Expect header is complete: note a 100-continue. */
static void expect_done(conn_t *c)
{
    if (!c->in_expect)
        return;
    c->in_expect = false;
    uint8_t n = c->value_len;
    while (n > 0 && n <= sizeof(c->value) && (c->value[n - 1] == ' ' || c->value[n - 1] == '\t'))
        n--; /* the parser hands trailing whitespace over; it is no part of the value */
    if (n == 12 && strncasecmp(c->value, "100-continue", 12) == 0)
        c->want_continue = true;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    conn_t *c = conn_of(p);
    if (!c->in_field) {
        expect_done(c);
        c->in_field = true;
        c->name_len = 0;
        if (++c->nheaders > c->srv->lim.max_headers) {
            c->error_status = 431;
            return -1;
        }
    }
    keep_prefix(c->name, &c->name_len, sizeof(c->name), at, n);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    conn_t *c = conn_of(p);
    if (c->in_field) {
        c->in_field = false;
        c->in_expect = c->name_len == 6 && strncasecmp(c->name, "expect", 6) == 0;
        c->value_len = 0;
    }
    if (c->in_expect)
        keep_prefix(c->value, &c->value_len, sizeof(c->value), at, n);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    conn_t *c = conn_of(p);
    expect_done(c);
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->srv->lim.max_body) {
        c->error_status = 413;
        return -1;
    }
    /* A client asking before it sends a body waits for "100 Continue" (curl a
     * second, others for good). Only a body that is to come is asked for. */
    bool body_to_come =
        (p->flags & F_CHUNKED) || ((p->flags & F_CONTENTLENGTH) && p->content_length > 0);
    c->want_continue = c->want_continue && body_to_come && p->http_major == 1 && p->http_minor >= 1;
    c->event = EV_HEADERS;
    http_parser_pause(p, 1);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    (void)at;
    conn_t *c = conn_of(p);
    /* Chunked bodies have no length up front: count what comes. */
    c->body_bytes += (uint32_t)WN_MIN(n, (size_t)UINT32_MAX);
    if (c->body_bytes > c->srv->lim.max_body) {
        c->error_status = 413;
        return -1;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn_t *c = conn_of(p);
    c->event = EV_MESSAGE;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* A complete request: answer it, and decide whether another may follow. */
static void request_done(conn_t *c)
{
    c->in_request = false;
    c->head_done = false;
    c->head_bytes = 0;
    c->idle_since_ms = now_ms(c);
    /* HTTP/1.0 without keep-alive, Connection: close, or an upgrade we do
     * not speak: this is the last response. */
    if (!http_should_keep_alive(&c->parser) || c->parser.upgrade)
        c->done = true;
    respond(c);
    if (c->done)
        finish(c);
}

/* Parse what is buffered, as far as the bounds allow. */
static void parse(conn_t *c)
{
    const wn_http_limits_t *lim = &c->srv->lim;
    while (!c->done && !c->closing_handles && c->off < c->len && c->pending < lim->max_pending) {
        if (!c->in_request) {
            c->in_request = true;
            c->req_start_ms = now_ms(c);
            c->error_status = 0;
        }
        if (c->word_only)
            return; /* a method or twemproxy's word: the next byte says */
        size_t n = c->len - c->off;
        bool in_head = !c->head_done;
        if (in_head) {
            if (c->head_bytes >= lim->max_head) {
                reject(c, 431);
                return;
            }
            n = WN_MIN(n, (size_t)(lim->max_head - c->head_bytes));
        }
        c->event = EV_NONE;
        size_t used = http_parser_execute(&c->parser, &settings, c->buf + c->off, n);
        c->off += used;
        if (in_head)
            c->head_bytes += (uint32_t)used;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            if (c->event == EV_HEADERS) {
                c->head_done = true;
                if (c->want_continue)
                    send_continue(c);
            } else if (c->event == EV_MESSAGE)
                request_done(c);
            continue;
        }
        if (e != HPE_OK) {
            /* A method the parser does not know is malformed input to us
             * (400); known methods other than GET and HEAD get 405. */
            reject(c, c->error_status != 0 ? c->error_status
                      : e == HPE_HEADER_OVERFLOW ? 431
                                                 : 400);
            return;
        }
        if (c->parser.upgrade) {
            /* The parser stops at an upgrade (CONNECT); nothing we serve. */
            reject(c, 405);
            return;
        }
    }
}

/* ---- the connection's state machine ------------------------------------------- */

/* Only line ends: what `echo | nc host 22222` sends. twemproxy answers any
 * client with its JSON, so such a client is still a silent one. */
static bool only_line_ends(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != '\r' && p[i] != '\n')
            return false;
    return true;
}

/* Whether a client's first bytes (line ends aside) can start an HTTP
 * request: a method (upper-case letters) and a space, or as much of that
 * as has come. Anything else (`echo stats | nc host 22222`, as collectors
 * of twemproxy's stats send) gets twemproxy's JSON, as twemproxy answers
 * any client. */
static size_t upper_letters(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && p[i] >= 'A' && p[i] <= 'Z')
        i++;
    return i;
}

static bool http_start(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && (p[i] == '\r' || p[i] == '\n'))
        i++;
    size_t letters = upper_letters(p + i, n - i);
    i += letters;
    return i == n || (letters > 0 && p[i] == ' ');
}

/* Bytes from the client other than line ends wait in the socket, not yet
 * read. The loop runs timers before it polls, so after the control thread
 * was held up (a long turn, a CPU quota's throttling, SIGSTOP) the
 * first-byte timer can fire while a request that came long before it is
 * still unread. */
static bool input_waiting(conn_t *c)
{
    uv_os_fd_t fd;
    char peek[64];
    if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) != 0)
        return false;
    ssize_t n = recv(fd, peek, sizeof(peek), MSG_PEEK | MSG_DONTWAIT);
    return n > 0 && !only_line_ends(peek, (size_t)n);
}

static void on_timer(uv_timer_t *t);

/* While a client waits for a slot (every one taken), a connection idle
 * between keep-alive requests, whose request has trickled in, or whose
 * client has not read its response on, for this long gives its slot up (its
 * client reconnects, as HTTP allows); one silent since it connected gets
 * twemproxy's JSON then (twemproxy answers at once). A client of its own
 * sends a whole request, and reads its answer, sooner: the slots turn over
 * fast enough that a probe queued behind a thousand such connections is
 * served within about a second. */
#define WN_HTTP_YIELD_MS 50u

/* The one deadline a connection has at any time (UINT64_MAX: none). */
static uint64_t deadline_of(const conn_t *c)
{
    const wn_http_limits_t *lim = &c->srv->lim;
    /* Once a slot is being freed (a close under way), the waiting client
     * has it: others idle as long as they may. */
    uint32_t yield = c->srv->waiting && c->srv->nclosing == 0 ? WN_HTTP_YIELD_MS : UINT32_MAX;
    if (c->lingering)
        return c->linger_start_ms + WN_MIN(lim->linger_ms, yield);
    if (c->mode == MODE_FIRST)
        return c->accepted_ms + WN_MIN(lim->first_byte_ms, yield);
    if (c->word_only)
        return c->word_ms + WN_MIN(lim->first_byte_ms, yield);
    /* A request must arrive whole within request_ms of its first byte,
     * however slowly it trickles in; a response must make progress every
     * write_ms (on_timer looks at what is still queued); an idle keep-alive
     * connection lasts idle_ms. */
    uint64_t d = UINT64_MAX;
    if (c->in_request)
        d = WN_MIN(d, c->req_start_ms + WN_MIN(lim->request_ms, yield));
    if (c->pending > 0)
        d = WN_MIN(d, c->write_progress_ms + WN_MIN(lim->write_ms, yield));
    if (!c->in_request && c->pending == 0 && !c->done)
        d = WN_MIN(d, c->idle_since_ms + WN_MIN(lim->idle_ms, yield));
    return d;
}

static void rearm(conn_t *c)
{
    uint64_t d = deadline_of(c);
    if (d == UINT64_MAX) {
        /* Only between the last write and the shutdown's callback. */
        uv_timer_stop(&c->timer);
        return;
    }
    uint64_t now = now_ms(c);
    uv_timer_start(&c->timer, on_timer, d > now ? d - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->closing_handles)
        return;
    if (c->mode == MODE_FIRST) {
        if (input_waiting(c)) {
            /* It did speak: HTTP. The read callback brings the bytes. */
            c->mode = MODE_HTTP;
            c->idle_since_ms = now_ms(c);
            drive(c);
            return;
        }
        /* Silent since it connected: twemproxy's stats protocol. */
        respond_raw(c);
        drive(c);
        return;
    }
    if (c->word_only && now_ms(c) >= deadline_of(c)) {
        if (input_waiting(c)) {
            /* More came, still unread (the loop was busy): the read
             * callback says what it is. */
            c->word_ms = now_ms(c);
            rearm(c);
            return;
        }
        /* One word and silence (`STATS` with no line end, no EOF): an HTTP
         * client sends its request line whole. twemproxy's protocol. */
        respond_raw(c);
        drive(c);
        return;
    }
    if (now_ms(c) < deadline_of(c)) {
        rearm(c); /* shortened while a client waited, and nobody waits now */
        return;
    }
    if (c->reading && !c->lingering && !c->in_request && c->pending == 0 && !c->done &&
        input_waiting(c)) {
        /* Idle past its time only because the loop was busy (a render, a
         * stall): its next request is here, unread. The read callback
         * brings it; the request's own deadline counts from there. */
        c->idle_since_ms = now_ms(c);
        rearm(c);
        return;
    }
    if (c->pending > 0 && !c->lingering && queued(c) < c->queued_at_progress) {
        /* The client reads, slowly but on: a large body is not cut off. (It
         * must keep reading within write_ms, or while another client waits
         * for a slot, within the yield.) */
        write_progressed(c);
        rearm(c);
        return;
    }
    if (!c->lingering)
        c->srv->counters.timeouts++;
    http_conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn_t *c = h->data;
    if (c->done)
        c->off = c->len = 0; /* input after the last request is only dropped */
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    conn_t *c = s->data;
    if (c->closing_handles || nread == 0)
        return;
    if (nread == UV_EOF) {
        c->eof = true;
        uv_read_stop(s);
        c->reading = false;
        if (c->lingering) {
            http_conn_close(c);
            return;
        }
        if (c->mode == MODE_FIRST || c->word_only)
            respond_raw(c); /* sent nothing, or one word (`STATS`), and half-closed */
        drive(c);
        return;
    }
    if (nread < 0) {
        http_conn_close(c);
        return;
    }
    if (c->done) {
        c->off = c->len = 0;
        return;
    }
    bool raw = false;
    if (c->mode == MODE_FIRST) {
        if (only_line_ends(c->buf + c->len, (size_t)nread)) {
            drive(c); /* dropped: still silent, the first-byte wait goes on */
            return;
        }
        if (!http_start(c->buf + c->len, (size_t)nread)) {
            respond_raw(c); /* not HTTP: twemproxy's protocol */
            drive(c);
            return;
        }
        c->mode = MODE_HTTP;
        c->word_only = memchr(c->buf + c->len, ' ', (size_t)nread) == NULL;
    } else if (c->word_only) {
        /* The word goes on, a space makes it a method, anything else ends
         * it: `STATS` and a line end in a later packet are twemproxy's. */
        size_t letters = upper_letters(c->buf + c->len, (size_t)nread);
        raw = letters < (size_t)nread && c->buf[c->len + letters] != ' ';
        c->word_only = letters == (size_t)nread;
    }
    if (c->word_only)
        c->word_ms = now_ms(c);
    /* (no method is this long) */
    if (raw || (c->word_only && c->len + (size_t)nread > 32)) {
        respond_raw(c);
        drive(c);
        return;
    }
    c->len += (size_t)nread;
    drive(c);
}

static void set_reading(conn_t *c, bool want)
{
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
            http_conn_close(c);
            return;
        }
        c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* After anything happened to c: parse what can be parsed, decide whether to
 * read on, set the deadline. */
static void drive(conn_t *c)
{
    if (c->closing_handles)
        return;
    if (!c->done)
        parse(c);
    if (c->closing_handles)
        return;
    if (c->off == c->len) {
        c->off = c->len = 0;
    } else if (c->off > 0) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    /* The client half-closed and everything it sent is answered (a request
     * cut short gets nothing): no more responses. */
    if (c->eof && !c->done && c->len == 0) {
        c->done = true;
        finish(c);
        if (c->closing_handles)
            return;
    }
    /* Read on unless the client sent no EOF yet and either a pipelined
     * request waits for its turn (max_pending responses queued) or the
     * buffer is full. After the last request input is read to be dropped. */
    bool want = !c->eof && (c->done || (c->pending < c->srv->lim.max_pending && c->len < c->cap));
    set_reading(c, want);
    if (!c->closing_handles)
        rearm(c);
}

/* ---- making room ---------------------------------------------------------------- */

void http_server_make_room(wn_http_t *srv)
{
    for (conn_t *c = srv->conns; c != NULL; c = c->next)
        if (!c->closing_handles)
            rearm(c);
}

/* ---- opening ------------------------------------------------------------------ */

int http_conn_open(wn_http_t *srv, int fd)
{
    conn_t *c = calloc(1, sizeof(*c));
    if (c != NULL) {
        c->cap = srv->lim.max_head;
        c->buf = malloc(c->cap);
        c->url = malloc(srv->lim.max_url);
    }
    if (c == NULL || c->buf == NULL || c->url == NULL) {
        if (c != NULL) {
            free(c->buf);
            free(c->url);
            free(c);
        }
        return WN_ENOMEM;
    }
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->handles = 2;
    c->tcp.data = c->timer.data = c;
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->mode = MODE_FIRST;
    /* The first-byte wait counts from now, not from the start of this loop
     * turn (uv_now), which may be long past when many clients came at once. */
    uv_update_time(srv->loop);
    c->accepted_ms = c->idle_since_ms = now_ms(c);
    int rc = uv_tcp_open(&c->tcp, fd);
    if (rc < 0) {
        http_conn_close(c);
        return rc;
    }
    srv->counters.accepted++;
    uv_tcp_nodelay(&c->tcp, 1);
    drive(c); /* read, and wait first_byte_ms for a first byte */
    return 0;
}
