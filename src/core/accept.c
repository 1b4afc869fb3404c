/*
 * core/accept.c: accepting connections without libuv's accept loop (see
 * walnut/accept.h for why).
 */
#include "walnut/accept.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "walnut/core.h"

static void on_poll(uv_poll_t *p, int status, int events);

/* Errors of one connection (gone before it was taken, or refused by the
 * network): the next may be fine. */
static bool one_connection(int e)
{
    return e == EINTR || e == ECONNABORTED || e == EPROTO || e == ENETDOWN || e == ENOPROTOOPT ||
           e == EHOSTDOWN || e == ENONET || e == EHOSTUNREACH || e == EOPNOTSUPP ||
           e == ENETUNREACH || e == EPERM || e == ETIMEDOUT;
}

/* A connection waits to be accepted on listening socket fd. */
static bool pending(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0 && (p.revents & POLLIN) != 0;
}

static void watch(wn_acceptor_t *a)
{
    if (a->watching && !a->resting && !a->closing)
        uv_poll_start(&a->poll, UV_READABLE, on_poll);
}

static void on_rest_over(uv_timer_t *t)
{
    wn_acceptor_t *a = t->data;
    a->resting = false;
    watch(a);
}

/* Out of descriptors or memory: the next accept would fail the same way. */
static void rest(wn_acceptor_t *a, int err)
{
    uv_poll_stop(&a->poll);
    a->resting = true;
    uv_timer_start(&a->rest, on_rest_over, WN_ACCEPT_REST_MS, 0);
    uint64_t now = uv_now(a->rest.loop);
    if (a->warned_ms != 0 && now - a->warned_ms < WN_ACCEPT_WARN_MS) {
        a->unsaid++;
        return;
    }
    char more[64] = "";
    if (a->unsaid > 0)
        snprintf(more, sizeof(more), " (and %llu times since the last warning)",
                 (unsigned long long)a->unsaid);
    wn_log_warn("%s: cannot accept a connection: %s; trying again every %u ms, connections wait "
                "in the listen backlog%s",
                a->what, wn_strerror(err), WN_ACCEPT_REST_MS, more);
    a->warned_ms = now != 0 ? now : 1;
    a->unsaid = 0;
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)events;
    wn_acceptor_t *a = p->data;
    if (status < 0) {
        rest(a, status);
        return;
    }
    for (int i = 0; i < WN_ACCEPT_BATCH && a->watching && !a->closing; i++) {
        /* room is asked only while a connection waits: the wakeup says so
         * for the first; for the next, a look at the socket. */
        if (a->room != NULL && i > 0 && !pending(a->fd))
            return;
        if (a->room != NULL && !a->room(a)) {
            wn_acceptor_stop(a);
            return;
        }
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            a->on_accept(a, fd);
            continue;
        }
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK)
            return;
        if (!one_connection(e)) {
            rest(a, -e);
            return;
        }
    }
}

int wn_acceptor_init(uv_loop_t *loop, wn_acceptor_t *a, int fd, const char *what,
                     wn_accept_cb on_accept, wn_accept_room_cb room)
{
    int rc = uv_poll_init_socket(loop, &a->poll, fd);
    if (rc < 0)
        return rc;
    uv_timer_init(loop, &a->rest);
    a->poll.data = a->rest.data = a;
    a->fd = fd;
    a->handles = 2;
    a->watching = a->resting = a->closing = a->keep_fd = false;
    a->on_accept = on_accept;
    a->room = room;
    a->on_closed = NULL;
    a->warned_ms = a->unsaid = 0;
    snprintf(a->what, sizeof(a->what), "%s", what);
    return 0;
}

void wn_acceptor_start(wn_acceptor_t *a)
{
    a->watching = true;
    watch(a);
}

void wn_acceptor_stop(wn_acceptor_t *a)
{
    a->watching = false;
    if (!a->closing)
        uv_poll_stop(&a->poll);
}

uint32_t wn_acceptor_drain(wn_acceptor_t *a)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < WN_ACCEPT_DRAIN_MAX && !a->closing; i++) {
        if (a->room != NULL && (!pending(a->fd) || !a->room(a)))
            break;
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            n++;
            a->on_accept(a, fd);
        } else if (!one_connection(errno)) {
            break;
        }
    }
    return n;
}

static void on_handle_closed(uv_handle_t *h)
{
    wn_acceptor_t *a = h->data;
    if (--a->handles > 0)
        return;
    a->fd = -1; /* closed by wn_acceptor_close, or not the acceptor's */
    if (a->on_closed != NULL)
        a->on_closed(a);
}

void wn_acceptor_close(wn_acceptor_t *a, wn_acceptor_closed_cb closed)
{
    if (a->closing)
        return;
    a->closing = true;
    a->watching = false;
    a->on_closed = closed;
    uv_poll_stop(&a->poll);
    uv_timer_stop(&a->rest);
    uv_close((uv_handle_t *)&a->poll, on_handle_closed);
    uv_close((uv_handle_t *)&a->rest, on_handle_closed);
    /* Now, not when the handles' close completes (the next loop turn):
     * connections the kernel completes meanwhile would wait in the backlog
     * to be reset, and an owner that drained it (wn_acceptor_drain) just
     * before would lose them. uv_close took the fd out of the loop's poll
     * set already, so its number may be reused at once. */
    if (!a->keep_fd) {
        close(a->fd);
        a->fd = -1;
    }
}
