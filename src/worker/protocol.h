/*
 * protocol.h: the seam between the worker core and the protocol units. The
 * core calls a protocol only through these named entry points; protocol.c
 * picks the unit by the pool's protocol with a switch (no function pointers
 * per connection). A unit owns its parse state (embedded in its client,
 * server-connection and request types, which start with the core's), its
 * key routing, splitting and merging, and its error replies. Worker thread.
 *
 * What a unit may call in the core: the request life cycle (request.c), the
 * client FIFO and queues (wn_req_enqueue_client, wn_server_enqueue,
 * wn_sconn_pop), routing (wn_pool_route), holds (wn_ctl_hold), and
 * wn_sconn_fail, which only marks a connection for the flush to close (a
 * failure the unit has logged itself). Never the flush, never a write or a
 * close.
 */
#ifndef WALNUT_WORKER_PROTOCOL_H
#define WALNUT_WORKER_PROTOCOL_H

#include "core_types.h"

typedef enum wn_proto {
    WN_PROTO_MC = 0, /* memcached ASCII */
    WN_PROTO_REDIS,  /* RESP2 */
} wn_proto_t;

/* The protocol a pool's configuration asks for. */
wn_proto_t wn_proto_of(const wn_conf_pool_t *conf);
const char *wn_proto_name(wn_proto_t proto);

/* Bytes of a client / server connection / request of the unit (each starts
 * with the core's struct). Request slots have one size for every unit. */
size_t wn_proto_client_size(wn_proto_t proto);
size_t wn_proto_sconn_size(wn_proto_t proto);
size_t wn_proto_req_slot_size(void);

/* A new client: set up the parse state (the core struct is filled). */
void wn_proto_client_init(client_t *c);
/* Frame and dispatch c's buffered bytes, as far as wn_client_can_parse
 * allows. Called from the read callback and from the flush. */
void wn_proto_client_parse(client_t *c);
/* Does the unit keep a complete request of c whose bytes it has already
 * consumed (Redis: read whole, then held while its server was suspect)?
 * The flush parses again when a hold ends if so, even with no bytes left
 * unparsed. memcached leaves a held request's line unparsed instead. */
bool wn_proto_client_has_pending(const client_t *c);
/* The client sent EOF: drop a half-received request (never forwarded). */
void wn_proto_client_eof(client_t *c);
/* The client is closing: release what the parse state holds. */
void wn_proto_client_deinit(client_t *c);
/* For the next read: bytes at the end of the buffer that must stay
 * contiguous with what comes (an incomplete line), and bytes known to be
 * coming (a value being received). */
void wn_proto_client_read_plan(const client_t *c, uint32_t *keep, uint64_t *ahead);

/* A server connection (re)starts: reset reply framing. */
void wn_proto_sconn_reset(sconn_t *s);
/* A new connection to s is up: queue what it needs before any request
 * (Redis AUTH/SELECT), with wn_sconn_enqueue. */
void wn_proto_sconn_hello(sconn_t *s);
/* Frame the replies buffered on s and complete their requests; < 0 when the
 * server broke the protocol (the core fails the connection). */
int wn_proto_server_parse(sconn_t *s);
void wn_proto_server_read_plan(const sconn_t *s, uint32_t *keep, uint64_t *ahead);
/* The line ("\r\n" included) a server of the protocol writes before closing
 * a connection it accepted past its limit (WN_ESRVFULL), for the log. */
const char *wn_proto_full_line(wn_proto_t proto);

/* r could not be completed (its connection failed): count it, and answer it
 * with the protocol's error reply; a fragment's parent hears of it. */
void wn_proto_fail(req_t *r, int err);
/* r's client is gone while r waits for its server's reply (or r, a parent,
 * was answered while a part still waits): let go of what it need not keep
 * pinned (a memcached get's line: its client's input buffer). */
void wn_proto_req_orphaned(req_t *r);

/* Answer r, a memcached `stats` request, with control's text (binary
 * clients get it as STAT packets). */
void wn_proto_stats_reply(req_t *r, const char *text, size_t len);
/* Answer r, a `stats` request that waited for control, with this worker's
 * own counters (control stopped answering). */
void wn_proto_stats_local(req_t *r);

/* Number and names of the unit's commands (per-command counters). */
uint32_t wn_proto_ncmds(wn_proto_t proto);
const char *wn_proto_cmd_name(wn_proto_t proto, uint32_t cmd);

#endif
