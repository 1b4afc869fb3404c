/*
 * http.h: the stats server on the control thread's loop (twemproxy's -a:-s
 * port). A client that sends nothing (or only line ends) for
 * WN_HTTP_FIRST_BYTE_MS, or half-closes first, gets twemproxy's JSON, a
 * newline, and the connection closes (twemproxy's stats protocol:
 * `nc host 22222`, `echo | nc host 22222`). A client that sends an HTTP
 * request gets HTTP/1.1: GET or HEAD of /stats (also /, so that
 * `curl host:22222` still shows the stats), /metrics, /healthz, /servers, with
 * keep-alive and pipelining. Every resource a client can make the server
 * hold is bounded (wn_http_limits_t). Everything here runs on the thread of
 * the loop given to wn_http_start, and only there.
 */
#ifndef WALNUT_CONTROL_HTTP_H
#define WALNUT_CONTROL_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "stats_view.h"

/* How long a new connection may stay silent before it is served as
 * twemproxy's stats protocol. An HTTP client's request reaches the server
 * together with (or right after) the handshake's last ACK, whatever the round
 * trip time, so 100 ms tells the two kinds of client apart without making a
 * twemproxy collector wait noticeably. */
#define WN_HTTP_FIRST_BYTE_MS 100
/* Stats connections open at once by default; more wait in the backlog. */
#define WN_HTTP_MAX_CONNS 64

typedef struct wn_http_limits {
    uint32_t first_byte_ms; /* silent this long: twemproxy mode (WN_HTTP_FIRST_BYTE_MS) */
    uint32_t request_ms;    /* a whole request (head and body) must arrive within this
                             * from its first byte; else the connection is closed */
    uint32_t idle_ms;       /* a keep-alive connection waits this long for its next request */
    uint32_t write_ms;      /* a response that makes no progress for this long: closed */
    uint32_t linger_ms;     /* after the last response, unread input is drained this long
                             * (so the kernel does not reset the response away) */
    uint32_t max_head;      /* request line and headers, bytes: past it 431 */
    uint32_t max_headers;   /* header fields: past it 431 */
    uint32_t max_url;       /* request target, bytes: past it 414 */
    uint32_t max_body;      /* request body, bytes (read and dropped): past it 413 */
    uint32_t max_conns;     /* open stats connections; more wait in the listen backlog
                             * (not accepted) until one of these closes */
    uint32_t max_pending;   /* responses queued and not yet written, per connection; while
                             * at it, no further pipelined request is read */
    size_t max_held;        /* rendered stats bodies held by responses not yet written,
                             * bytes: past it, a request gets the newest body of its kind
                             * still held (older counters, at most 5 s) instead of a new
                             * copy */
} wn_http_limits_t;

/* The defaults: 100 ms, 5 s, 30 s, 10 s, 1 s, 8 KiB, 64, 2 KiB, 4 KiB, 64, 1,
 * 32 MiB. */
void wn_http_limits_default(wn_http_limits_t *l);

typedef struct wn_http_handlers {
    /*
     * Build a fresh view for a request (/stats, /metrics, /servers and the
     * twemproxy mode): wn_stats_view_build over the live blocks, then fill
     * health, epochs and worker epochs. Return 0, or a negative error (the
     * client gets 500, or in twemproxy mode a closed connection). The server
     * frees the view with wn_stats_view_free once rendered. Required.
     */
    int (*build_view)(wn_stats_view_t *v, void *arg);
    /*
     * /healthz: return 0 when healthy (200 "ok"), or non-zero after writing
     * a one-line reason into reason[len] (503 with that reason). NULL: always
     * healthy.
     */
    int (*health)(char *reason, size_t len, void *arg);
    /* NULL: wn_http_limits_default. Copied by wn_http_start. */
    const wn_http_limits_t *limits;
} wn_http_handlers_t;

/* What the server has done, for logs and tests. */
typedef struct wn_http_counters {
    uint64_t accepted;  /* connections served */
    uint64_t refused;   /* accepted and closed at once: no memory for the connection */
    uint64_t requests;  /* HTTP responses queued, errors included */
    uint64_t twemproxy; /* JSON written to a client that sent nothing */
    uint64_t timeouts;  /* connections closed by a request, idle or write timeout */
    uint64_t rejected;  /* requests answered 4xx for their form (400, 413, 414, 431) */
} wn_http_counters_t;

typedef struct wn_http wn_http_t;

/*
 * Listen on addr:port (an IPv4 or IPv6 literal, or a host name resolved once
 * here, synchronously) on `loop`. port 0 picks a free port (wn_http_port).
 * h is copied; arg is passed to the handlers and must outlive the server.
 * Returns 0 with *out set, or a negative error with a line in err naming the
 * address; *out is untouched on error.
 */
int wn_http_start(wn_http_t **out, uv_loop_t *loop, const char *addr, uint16_t port,
                  const wn_http_handlers_t *h, void *arg, char *err, size_t errlen);
/* The line wn_http_start gives when it cannot listen on addr:port (rc, a
 * negative error): "stats: cannot listen on [::1]:22222: ..."; -t words a
 * failed lookup of the stats address the same way. */
void wn_http_listen_error(char *err, size_t errlen, const char *addr, uint16_t port, int rc);
/*
 * Stop listening and close every connection (responses not yet written are
 * dropped). The server frees itself in the last close callback, so the loop
 * must run afterwards (uv_run) for it to go; after that uv_loop_close
 * succeeds. No handler is called after this. NULL is fine.
 */
void wn_http_stop(wn_http_t *srv);

/* The port the server listens on. */
uint16_t wn_http_port(const wn_http_t *srv);
/* The address the server listens on: 0, or a negative error (NULL srv:
 * WN_EINVAL). */
int wn_http_address(const wn_http_t *srv, struct sockaddr_storage *out);
/* Open connections (accepted, not yet freed). */
uint32_t wn_http_connections(const wn_http_t *srv);
const wn_http_counters_t *wn_http_counters(const wn_http_t *srv);

#endif
