/*
 * http_priv.h: the stats server's insides, shared by http.c (the listener,
 * accepting, start and stop), http_conn.c (one connection: parsing,
 * responses, deadlines) and http_route.c (what each path answers). Loop thread only, like http.h.
 */
#ifndef WALNUT_CONTROL_HTTP_PRIV_H
#define WALNUT_CONTROL_HTTP_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include <http_parser.h>
#include <uv.h>

#include "http.h"
#include "walnut/accept.h"

typedef struct conn conn_t;
typedef struct http_body http_body_t;

/* What a stats path renders, each kind's body shared within a loop turn
 * (http_route.c): /stats and twemproxy's JSON, /servers, /metrics. */
enum { HTTP_BODY_JSON, HTTP_BODY_SERVERS, HTTP_BODY_PROM, HTTP_BODY_KINDS };

struct wn_http {
    uv_loop_t *loop;          /* borrowed */
    wn_acceptor_t acc;        /* the listener */
    wn_http_handlers_t h;
    void *arg;                /* borrowed: the handlers' */
    wn_http_limits_t lim;
    conn_t *conns;            /* owned: open connections, a doubly linked list */
    uint32_t nconns;          /* in the list: counts until the close callbacks ran */
    bool listener_open;       /* acc not closed yet */
    bool stopping;
    bool waiting; /* a connection waits to be accepted (max_conns were open):
                   * acc watches the listener no more until a slot is freed */
    uint32_t nclosing; /* of nconns, closing: their slots are being freed */
    uint16_t port;
    wn_http_counters_t counters;
    /* Loop turns, counted after each poll (http.c), and the bodies
     * rendered in one, per kind (http_route.c). */
    uv_check_t turn;
    bool turn_open;
    uint64_t turns;
    http_body_t *bodies[HTTP_BODY_KINDS]; /* a reference each, or NULL */
    uint64_t bodies_turn[HTTP_BODY_KINDS];
    size_t held; /* bytes of every body alive (lim.max_held) */
};

typedef enum mode {
    MODE_FIRST, /* nothing received yet: HTTP or twemproxy is still open */
    MODE_HTTP,
    MODE_RAW,   /* twemproxy's protocol: one JSON, then close */
} mode_t_;

/* What made the paused parser stop. */
typedef enum event {
    EV_NONE,
    EV_HEADERS,
    EV_MESSAGE,
} event_t;

struct conn {
    wn_http_t *srv;           /* borrowed: the server outlives its connections */
    conn_t *prev, *next;      /* srv->conns */
    uv_tcp_t tcp;
    uv_timer_t timer;         /* the connection's one deadline (see rearm) */
    uv_shutdown_t shutdown_req;
    int handles;              /* open handles; freed when the last close callback ran */
    bool closing_handles;     /* uv_close called */
    mode_t_ mode;
    http_parser parser;
    event_t event;
    bool reading;             /* uv_read_start in effect */
    bool in_request;          /* a request's first byte came; its response is not queued */
    bool head_done;
    bool in_field;            /* the parser is inside a header name */
    bool in_expect;           /* ... whose name is Expect (its value being read) */
    bool want_continue;       /* Expect: 100-continue, and a body is to come */
    bool done;                /* no further request: a closing response is queued */
    bool shut;                /* uv_shutdown called */
    bool lingering;           /* shut down; draining the client's input until EOF */
    bool eof;                 /* the client half-closed */
    bool word_only;           /* HTTP so far only for want of a space: nothing but
                               * upper-case letters came (`STATS`, or a method) */
    int error_status;         /* a parser callback's verdict (413, 414, 431) */
    uint32_t head_bytes, nheaders, body_bytes;
    uint8_t name_len, value_len; /* of the header being read, capped (see on_header_field) */
    char name[8], value[16];     /* its first bytes: enough to know Expect: 100-continue */
    uint32_t pending;         /* writes queued, callbacks not run */
    uint64_t accepted_ms, req_start_ms, idle_since_ms, write_progress_ms, linger_start_ms;
    uint64_t word_ms;          /* word_only: when its last letters came */
    size_t queued_at_progress; /* bytes libuv still had to write at write_progress_ms */
    size_t url_len;
    char *url;                /* owned, [lim.max_url] */
    size_t off, len, cap;     /* buf[off, len): received, not yet parsed */
    char *buf;                /* owned, [cap] */
};

/* http.c: free the server once stopped and every handle is closed. */
void http_server_maybe_free(wn_http_t *srv);
/* http.c: a connection is gone (unlinked, nconns counted down): accept the
 * one waiting, if any. */
void http_server_slot_freed(wn_http_t *srv);

/* http_conn.c: every slot is taken and a client waits: connections idle
 * between keep-alive requests, or whose request trickles in, give their
 * slot up after a second of it (the client of a closed keep-alive
 * connection reconnects, as HTTP allows). */
void http_server_make_room(wn_http_t *srv);
/* http_conn.c: a connection for socket fd, just accepted; 0, or an error
 * (WN_ENOMEM...): fd is still the caller's. */
int http_conn_open(wn_http_t *srv, int fd);
/* Close c's handles; it is freed (and unlinked) in their close callbacks. */
void http_conn_close(conn_t *c);

/* A rendered stats body, shared by the responses of one loop turn that ask
 * for the same thing: a scrape storm renders once per turn, not once per
 * client, and holds one copy, however many clients do not read it. Past
 * lim.max_held, later turns share it too (http_route.c). */
struct http_body {
    wn_http_t *srv; /* borrowed: bodies go before their server (held) */
    uint64_t made_ms; /* the loop's time when rendered */
    uint32_t refs;
    size_t len;
    char *text; /* owned */
};

/* http.c: one reference less; the last frees. NULL is fine. */
void http_body_unref(http_body_t *b);
/* http.c: drop the bodies kept for sharing (the turn ended, or the server is
 * freed). */
void http_bodies_drop(wn_http_t *srv);

/* An answer to one request: body malloc'd and handed to the one who sends
 * it, or (shared set) a reference to a shared body whose text body is. */
typedef struct http_answer {
    int status;
    const char *type;          /* static */
    char *body;                /* owned, unless shared */
    size_t len;
    http_body_t *shared;       /* a reference, or NULL */
    const char *extra_headers; /* static, "Name: value\r\n" lines, or NULL */
} http_answer_t;

/* http_route.c: the answer to GET/HEAD of path[plen]; 0, or WN_ENOMEM with
 * no body (the caller closes the connection). Errors in making the stats
 * are answers (500). */
int http_route(wn_http_t *srv, const char *path, size_t plen, http_answer_t *a);
/* http_route.c: the answer for an error status (404, 405 with Allow, ...). */
int http_error_answer(http_answer_t *a, int status);
/* http_route.c: twemproxy's JSON and a newline (a reference); NULL with *err. */
http_body_t *http_render_raw(wn_http_t *srv, int *err);

#endif
