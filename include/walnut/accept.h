/*
 * walnut/accept.h: a listening socket watched with uv_poll and accepted
 * from with accept4, a bounded batch per wakeup.
 *
 * Not uv_listen: libuv's accept loop retries at once when accept fails with
 * EMFILE or ENFILE, after closing a spare descriptor it keeps per loop to
 * accept and drop the waiting connections. Every worker's loop shares the
 * process's descriptors, so another thread can take the one freed: the
 * spare is lost and the loop retries for ever, the thread spinning and
 * deaf to everything else (walnut was wedged that way, SIGTERM unheard).
 * Here running out of descriptors, or of memory, stops the watch for
 * WN_ACCEPT_REST_MS, with a warning at most every WN_ACCEPT_WARN_MS; the
 * connections wait in the kernel's backlog, as behind any busy server.
 *
 * One loop's thread only, like the handles it holds.
 */
#ifndef WALNUT_ACCEPT_H
#define WALNUT_ACCEPT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define WN_ACCEPT_REST_MS 100u
#define WN_ACCEPT_WARN_MS 10000u
#define WN_ACCEPT_BATCH 64

typedef struct wn_acceptor wn_acceptor_t;

/* A connection: fd (non-blocking, close-on-exec) is the callee's. */
typedef void (*wn_accept_cb)(wn_acceptor_t *a, int fd);
/* When set, called while a connection waits, before it is accepted: false
 * stops the watch until the owner calls wn_acceptor_start, the connection
 * waiting in the backlog meanwhile. */
typedef bool (*wn_accept_room_cb)(wn_acceptor_t *a);
typedef void (*wn_acceptor_closed_cb)(wn_acceptor_t *a);

struct wn_acceptor {
    uv_poll_t poll;
    uv_timer_t rest;
    int fd;
    uint8_t handles; /* open handles (the fd is closed with the close call) */
    bool keep_fd;    /* the fd is not the acceptor's: left open at close */
    bool watching;   /* the owner wants connections */
    bool resting;    /* out of descriptors or memory: the timer runs */
    bool closing;
    wn_accept_cb on_accept;
    wn_accept_room_cb room;
    wn_acceptor_closed_cb on_closed;
    void *data;         /* the owner's */
    uint64_t warned_ms; /* the last warning (0: none yet) */
    uint64_t unsaid;    /* rests since the last warning */
    char what[96];      /* who listens, for the log ("pool 'a'", "stats") */
};

/* Watch listening socket fd (listen() done) on loop; it starts stopped.
 * 0: fd is the acceptor's now, closed by wn_acceptor_close; an error: fd is
 * still the caller's and there is nothing to close. */
int wn_acceptor_init(uv_loop_t *loop, wn_acceptor_t *a, int fd, const char *what,
                     wn_accept_cb on_accept, wn_accept_room_cb room);
void wn_acceptor_start(wn_acceptor_t *a);
void wn_acceptor_stop(wn_acceptor_t *a);
/* Accept the connections waiting in the backlog now, as the watch would
 * (at most WN_ACCEPT_DRAIN_MAX tries): for an owner about to close a socket
 * while it still serves the socket's clients, whose handshakes the kernel
 * completed already and would reset at the close. Stops at the first error
 * that is not one connection's (no connection left, out of descriptors).
 * Returns how many were accepted. */
#define WN_ACCEPT_DRAIN_MAX 65536u
uint32_t wn_acceptor_drain(wn_acceptor_t *a);
/* Stop watching and close the fd now (unless keep_fd), the handles, then
 * call closed (may be NULL) from the loop once they are closed: the
 * acceptor's memory must live until then. */
void wn_acceptor_close(wn_acceptor_t *a, wn_acceptor_closed_cb closed);

#endif
