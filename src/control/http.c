/*
 * control/http.c: the stats server (see http.h): its listening socket,
 * accepting within max_conns, start and stop. Each connection is
 * http_conn.c's. The server frees itself once stopped and every handle's
 * close callback has run. Loop thread only.
 */
#include "http_priv.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "walnut/core.h"

void wn_http_limits_default(wn_http_limits_t *l)
{
    *l = (wn_http_limits_t){
        .first_byte_ms = WN_HTTP_FIRST_BYTE_MS,
        .request_ms = 5000,
        .idle_ms = 30000,
        .write_ms = 10000,
        .linger_ms = 1000,
        .max_head = 8192,
        .max_headers = 64,
        .max_url = 2048,
        .max_body = 4096,
        .max_conns = WN_HTTP_MAX_CONNS,
        .max_pending = 1,
        .max_held = (size_t)32 << 20,
    };
}

void wn_http_listen_error(char *err, size_t errlen, const char *addr, uint16_t port, int rc)
{
    bool v6 = strchr(addr, ':') != NULL;
    snprintf(err, errlen, "stats: cannot listen on %s%s%s:%u: %s", v6 ? "[" : "", addr,
             v6 ? "]" : "", (unsigned)port, wn_strerror(rc));
}

void http_server_maybe_free(wn_http_t *srv)
{
    if (srv->stopping && !srv->listener_open && !srv->turn_open && srv->nconns == 0) {
        http_bodies_drop(srv);
        free(srv);
    }
}

/* ---- accepting ------------------------------------------------------------------ */

static void on_connection(wn_acceptor_t *a, int fd)
{
    wn_http_t *srv = a->data;
    int rc = http_conn_open(srv, fd);
    if (rc == 0)
        return;
    /* No memory for it: closed at once, so the listener goes on. */
    close(fd);
    if (rc == WN_ENOMEM) {
        srv->counters.refused++;
        wn_log_error("stats: out of memory: a stats connection was closed");
    } else {
        wn_log_info("stats: accept: %s", wn_strerror(rc));
    }
}

/*
 * At the cap, the acceptor stops watching the listener: the connections
 * wait in the kernel's backlog; the next one to close lets them in
 * (http_server_slot_freed). A burst of scrapers waits a few milliseconds
 * instead of being dropped, and what the server holds stays bounded by
 * max_conns.
 */
static bool room_for_one(wn_acceptor_t *a)
{
    wn_http_t *srv = a->data;
    if (srv->stopping)
        return false;
    if (srv->nconns >= srv->lim.max_conns) {
        srv->waiting = true;
        http_server_make_room(srv);
        return false;
    }
    return true;
}

void http_server_slot_freed(wn_http_t *srv)
{
    if (!srv->waiting || srv->stopping || srv->nconns >= srv->lim.max_conns)
        return;
    srv->waiting = false;
    wn_acceptor_start(&srv->acc);
}
/* ---- the server ----------------------------------------------------------------- */

void http_body_unref(http_body_t *b)
{
    if (b == NULL || --b->refs > 0)
        return;
    b->srv->held -= b->len;
    free(b->text);
    free(b);
}

void http_bodies_drop(wn_http_t *srv)
{
    for (size_t k = 0; k < WN_ARRAY_SIZE(srv->bodies); k++) {
        http_body_unref(srv->bodies[k]);
        srv->bodies[k] = NULL;
    }
}

/* The end of a loop turn: a body kept for sharing goes once no write holds
 * it; one still being written stays on offer, as it costs nothing more. */
static void on_turn(uv_check_t *p)
{
    wn_http_t *srv = p->data;
    srv->turns++;
    for (size_t k = 0; k < WN_ARRAY_SIZE(srv->bodies); k++) {
        if (srv->bodies[k] != NULL && srv->bodies[k]->refs == 1) {
            http_body_unref(srv->bodies[k]);
            srv->bodies[k] = NULL;
        }
    }
}

static void on_turn_closed(uv_handle_t *h)
{
    wn_http_t *srv = h->data;
    srv->turn_open = false;
    http_server_maybe_free(srv);
}

static void on_listener_closed(wn_acceptor_t *a)
{
    wn_http_t *srv = a->data;
    srv->listener_open = false;
    http_server_maybe_free(srv);
}

/* A listening socket for addr:port with plain system calls, so that a bad
 * address leaves no libuv handle behind to close. */
static int listen_socket(const char *addr, uint16_t port, uv_loop_t *loop, int *out_fd,
                         uint16_t *bound_port)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    memset(&ss, 0, sizeof(ss));
    if (uv_ip4_addr(addr, port, in4) == 0) {
        sslen = sizeof(*in4);
    } else if (uv_ip6_addr(addr, port, in6) == 0) {
        sslen = sizeof(*in6);
    } else {
        /* A host name: resolved once, at start-up (synchronous: no callback). */
        uv_getaddrinfo_t req;
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        int rc = uv_getaddrinfo(loop, &req, NULL, addr, NULL, &hints);
        if (rc < 0)
            return rc;
        if (req.addrinfo == NULL)
            return UV_EAI_NONAME;
        memcpy(&ss, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
        sslen = req.addrinfo->ai_addrlen;
        uv_freeaddrinfo(req.addrinfo);
        if (ss.ss_family == AF_INET)
            in4->sin_port = htons(port);
        else
            in6->sin6_port = htons(port);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, SOMAXCONN) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    *bound_port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                                   : ((struct sockaddr_in6 *)&bound)->sin6_port);
    *out_fd = fd;
    return 0;
}

int wn_http_start(wn_http_t **out, uv_loop_t *loop, const char *addr, uint16_t port,
                  const wn_http_handlers_t *h, void *arg, char *err, size_t errlen)
{
    if (out == NULL || loop == NULL || addr == NULL || h == NULL || h->build_view == NULL) {
        if (err != NULL)
            snprintf(err, errlen, "stats: no address or no view handler");
        return WN_EINVAL;
    }
    wn_http_limits_t lim;
    if (h->limits != NULL)
        lim = *h->limits;
    else
        wn_http_limits_default(&lim);
    if (lim.max_head < 64 || lim.max_url == 0 || lim.max_conns == 0 || lim.max_pending == 0) {
        if (err != NULL)
            snprintf(err, errlen, "stats: limits too small to serve a request");
        return WN_EINVAL;
    }
    wn_http_t *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        if (err != NULL)
            snprintf(err, errlen, "stats: out of memory");
        return WN_ENOMEM;
    }
    int fd = -1;
    int rc = listen_socket(addr, port, loop, &fd, &srv->port);
    if (rc < 0) {
        if (err != NULL)
            wn_http_listen_error(err, errlen, addr, port, rc);
        free(srv);
        return rc;
    }
    srv->loop = loop;
    srv->h = *h;
    srv->arg = arg;
    srv->lim = lim;
    rc = wn_acceptor_init(loop, &srv->acc, fd, "stats", on_connection, room_for_one);
    if (rc < 0) {
        if (err != NULL)
            snprintf(err, errlen, "stats: cannot listen on %s:%u: %s", addr, (unsigned)port,
                     wn_strerror(rc));
        close(fd);
        free(srv);
        return rc;
    }
    srv->acc.data = srv;
    srv->listener_open = true;
    wn_acceptor_start(&srv->acc);
    /* Ends each loop turn (shared bodies live one); never keeps the loop
     * alive. */
    uv_check_init(loop, &srv->turn);
    srv->turn.data = srv;
    uv_check_start(&srv->turn, on_turn);
    uv_unref((uv_handle_t *)&srv->turn);
    srv->turn_open = true;
    *out = srv;
    return 0;
}

void wn_http_stop(wn_http_t *srv)
{
    if (srv == NULL || srv->stopping)
        return;
    srv->stopping = true;
    if (srv->listener_open)
        wn_acceptor_close(&srv->acc, on_listener_closed);
    if (srv->turn_open && !uv_is_closing((uv_handle_t *)&srv->turn))
        uv_close((uv_handle_t *)&srv->turn, on_turn_closed);
    for (conn_t *c = srv->conns; c != NULL; c = c->next)
        http_conn_close(c);
    http_server_maybe_free(srv);
}

uint16_t wn_http_port(const wn_http_t *srv)
{
    return srv->port;
}

int wn_http_address(const wn_http_t *srv, struct sockaddr_storage *out)
{
    if (srv == NULL)
        return WN_EINVAL;
    socklen_t len = sizeof(*out);
    memset(out, 0, sizeof(*out));
    return getsockname(srv->acc.fd, (struct sockaddr *)out, &len) < 0 ? -errno : 0;
}

uint32_t wn_http_connections(const wn_http_t *srv)
{
    return srv->nconns;
}

const wn_http_counters_t *wn_http_counters(const wn_http_t *srv)
{
    return &srv->counters;
}
