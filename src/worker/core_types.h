/*
 * core_types.h: the worker core's private structures. The core (worker.c,
 * listen.c, client.c, server.c, request.c, flush.c, stream.c, pool.c,
 * ctl.c) knows no protocol; it reaches the protocol units (mc_*.c, ...) only
 * through the entry points in protocol.h. Everything here is owned by one
 * worker thread, except the stats blocks (relaxed atomics, read by anyone).
 *
 * One event flow, downward only:
 *   - read callbacks parse and enqueue: client bytes become requests queued on
 *     server connections; server bytes complete requests;
 *   - completing or failing a request only marks it done and its client dirty;
 *     a failing connection is only marked failed and dirty;
 *   - only the per-turn flush (flush.c, a uv_check) connects, writes and
 *     closes, and it alone may parse a client's buffered bytes again;
 *   - nothing called from below the flush calls back up into parsing,
 *     writing or closing. A request being dispatched holds a reference.
 */
#ifndef WALNUT_WORKER_CORE_TYPES_H
#define WALNUT_WORKER_CORE_TYPES_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <uv.h>

#include "walnut/accept.h"
#include "walnut/config.h"
#include "walnut/core.h"
#include "walnut/route.h"
#include "walnut/spsc.h"
#include "walnut/stats.h"
#include "walnut/worker.h"

/* Per-client bounds. A client with this many requests in flight, or holding
 * a quarter of its buffer limit, is not read until it drains; one holding
 * more than its limit (client_buffer_limit) is disconnected. Fewer in
 * flight when its replies are large: see wn_client_can_parse. */
#define WN_CLIENT_MAX_INFLIGHT 1024
/* Before its first reply a client may have this many requests in flight. */
#define WN_CLIENT_FIRST_INFLIGHT 32
/* Largest buffer a read is sized to when more bytes are known to be coming
 * (a value); the rest of a larger value arrives in further buffers. */
#define WN_READ_AHEAD_MAX (1u << 20)
/* Free buffer bytes a worker keeps for reuse; more go back to malloc. */
#define WN_BUFPOOL_FREE_BYTES (4u << 20)
/* Free request slots a worker keeps for reuse. */
#define WN_REQ_FREE_MAX 4096

typedef struct wn_worker wn_worker_t;
typedef struct pool_rt pool_rt_t;
typedef struct server_rt server_rt_t;
typedef struct sconn sconn_t;
typedef struct client client_t;
typedef struct req req_t;

/* ---- byte spans over buffers (stream.c) ----------------------------------- */

/* A reference-holding span of a buffer (buf NULL: already written, released). */
typedef struct seg {
    wn_buf_t *buf;
    uint32_t off;
    uint32_t len;
} seg_t;

/* A growable list of segments; the first few live inline. */
typedef struct segv {
    seg_t *v; /* points at inl or at owned heap memory */
    uint32_t n;
    uint32_t cap;
    seg_t inl[3];
} segv_t;

void wn_segv_init(segv_t *sv);
/* Append [off, off+len) of buf, taking a reference; adjacent bytes of the
 * same buffer extend the last segment unless it is at index `frozen` or
 * before (already handed to a write). 0 or WN_ENOMEM. */
int wn_segv_push(segv_t *sv, wn_buf_t *buf, uint32_t off, uint32_t len);
/* The same without merging (segment boundaries mark items). */
int wn_segv_push_split(segv_t *sv, wn_buf_t *buf, uint32_t off, uint32_t len);
void wn_segv_clear(segv_t *sv);

/* What one flush writes to a socket: iovecs over buffers. */
#define OUTV_INLINE 32
typedef struct outv {
    uv_buf_t *iov;
    wn_buf_t **bufs;
    uint32_t n;
    uint32_t cap;
    uint64_t bytes;
    uv_buf_t iov_inl[OUTV_INLINE];
    wn_buf_t *bufs_inl[OUTV_INLINE];
} outv_t;

typedef void (*outv_done_cb)(void *arg, int status, uint64_t bytes);

void wn_outv_init(outv_t *o);
/* Append a span; 0 or WN_ENOMEM (the outv grows). */
int wn_outv_add(outv_t *o, wn_buf_t *buf, uint32_t off, uint32_t len);
/*
 * Write o to st: as much as the socket takes now (uv_try_write), the rest
 * through uv_write with buffer references held until it is written (or a
 * compact copy of it, when the buffers it points into are more than twice
 * its bytes), then cb(arg, status, bytes queued). Returns the bytes left
 * queued (0: all written, cb is not called) or a negative error (nothing
 * queued).
 */
int64_t wn_outv_write(outv_t *o, uv_stream_t *st, outv_done_cb cb, void *arg);
/* wn_outv_write in two steps, for a caller that must know what the socket
 * took before it queues the rest: the bytes written now (or an error), then
 * the rest from `done` queued as wn_outv_write does. */
int64_t wn_outv_try(outv_t *o, uv_stream_t *st);
int64_t wn_outv_queue(outv_t *o, uv_stream_t *st, uint64_t done, outv_done_cb cb, void *arg);
void wn_outv_deinit(outv_t *o);

/* Read side of a connection: the buffer being filled and how far it has been
 * parsed. Bytes before `pos` belong to requests/replies (which hold their own
 * references); the stream holds one reference on `buf`. */
typedef struct instream {
    wn_buf_t *buf;
    uint32_t pos;
} instream_t;

/* Space for the next read. `keep` bytes before the end (an incomplete line)
 * move to a new buffer with them, so a line is always contiguous; `ahead` is
 * how many bytes are known to be coming (a value), to size the buffer. */
int wn_instream_alloc(wn_worker_t *w, instream_t *in, uint32_t keep, uint64_t ahead, uv_buf_t *out);
/* The keep/ahead a protocol asks of wn_instream_alloc: with `data_left`
 * payload bytes known to be coming, nothing kept and that much ahead; else
 * the unparsed bytes kept (an incomplete line or head stays contiguous). */
void wn_instream_plan(const instream_t *in, uint64_t data_left, uint32_t *keep, uint64_t *ahead);
/* Give the buffer back when everything in it is parsed and nothing else
 * holds it (an idle connection keeps no buffer). */
void wn_instream_trim(instream_t *in);
void wn_instream_deinit(instream_t *in);
/* Copy `len` bytes into the worker's scratch buffer and append them to sv. */
int wn_scratch_push(wn_worker_t *w, segv_t *sv, const char *data, size_t len);
/* `size` bytes of memory (8-aligned, uninitialised) that live as long as
 * `keep` holds them: a reference is appended to keep. NULL on ENOMEM. */
void *wn_scratch_alloc(wn_worker_t *w, segv_t *keep, size_t size);
/* The same in a buffer of its own: for memory kept long (a streamed line's
 * part), which would otherwise pin a whole shared scratch chunk. */
void *wn_keep_alloc_own(wn_worker_t *w, segv_t *keep, size_t size);

/* ---- requests (request.c) ------------------------------------------------- */

typedef enum req_kind {
    REQ_FORWARD,  /* to one server; its reply goes to the client */
    REQ_PARENT,   /* split into fragments; the protocol merges their replies */
    REQ_FRAGMENT, /* part of a PARENT */
    REQ_LOCAL,    /* answered by walnut */
    REQ_INTERNAL, /* sent by walnut itself on a new server connection (AUTH, SELECT) */
} req_kind_t;

/*
 * A request. Protocol units embed it as the first member of their own
 * request type (mc_req_t, ...) and allocate it from the worker's slots.
 * References: the client FIFO, the server connection FIFO, a fragment's
 * link to its parent and a parent's links to its fragments each hold one;
 * so does whoever is dispatching it.
 */
struct req {
    uint32_t refs;
    uint8_t kind;       /* req_kind_t */
    bool noreply;       /* the client wants no reply at all */
    bool swallow;       /* the server's reply is read and dropped */
    bool close_after;   /* close the client after this reply (quit, framing lost) */
    bool done;          /* the reply is complete (or failed) */
    bool failed;        /* answered with an error made by walnut */
    bool keep_out;      /* the protocol still needs `out` after it is written */
    bool out_shared;    /* a copy: `out` is not counted against the client, its
                           parent's count covers the bytes until every copy is written */
    bool rsp_held;      /* its reply goes out only once it is done, not as it grows
                           (the protocol may still drop it) */
    bool sent;          /* written to its server connection */
    bool more_here;     /* fragments: a later fragment of its parent goes to the same
                           server (a gat's 2 KB lines) and counts the parent there */
    uint16_t cmd;       /* the protocol's command index, for per-command counters */
    pool_rt_t *pool;    /* borrowed: outlives every request */
    client_t *client;   /* borrowed; NULL for fragments and once the client is gone */
    req_t *next;        /* client FIFO */
    req_t *snext;       /* server connection FIFO */
    sconn_t *conn;      /* borrowed: the connection it is queued on, or NULL */
    server_rt_t *server; /* where it goes (forward, fragment) */
    req_t *parent;      /* fragments: one reference held */
    req_t **frags;      /* parents: fragments (owned array), one reference each until
                           the parent is done; NULL entries after that */
    uint32_t nfrags;
    uint32_t frags_left; /* parents: fragments not yet done */
    uint32_t copies_left; /* parents of copies: copies not yet written (one that fails
                             unwritten never counts down: the count goes with the reply) */
    uint64_t start_us;  /* received (latency) */
    uint64_t out_bytes; /* bytes of `out` */
    uint64_t acct;      /* bytes counted in the client's held total (root requests) */
    uint64_t waiting;   /* bytes counted in its server's `waiting` (wn_server_enqueue) */
    uint64_t held;      /* bytes counted in its server's `held` (wn_server_enqueue) */
    uint32_t rsp_sent;  /* segments of rsp already written to the client (streaming) */
    uint32_t owned_size; /* bytes of `owned` */
    segv_t out;         /* bytes for the server */
    segv_t rsp;         /* bytes for the client */
    segv_t keep;        /* memory a protocol unit keeps for the request (a split's
                           bookkeeping, copied args): references the core drops at free */
    void *owned;        /* one heap block a protocol unit grows for the request (Redis:
                           a long request's argument array); freed with it */
};

/* A slot from the worker's free list, zeroed, refs 1, with `pool` and
 * `client` set and kind given. NULL on ENOMEM. */
req_t *wn_req_create(pool_rt_t *pool, client_t *c, req_kind_t kind);
void wn_req_ref(req_t *r);
/* A split request's keys grouped by fragment, key order kept within each:
 * given key_frag[k] (key k's fragment), fills first[0..nfrags] (fragment f's
 * keys are frag_keys[first[f] .. first[f+1])) and frag_keys[nkeys]; `next`
 * is scratch room for nfrags entries. */
void wn_split_group(const uint32_t *key_frag, uint32_t nkeys, uint32_t nfrags, uint32_t *first,
                    uint32_t *next, uint32_t *frag_keys);
/* Room for n fragments in a parent (r->frags, r->nfrags). 0 or WN_ENOMEM. */
int wn_req_frags_alloc(req_t *r, uint32_t n);
void wn_req_unref(req_t *r);
/* The request in the client's FIFO this one answers to (itself, or the parent). */
req_t *wn_req_root(req_t *r);
/* The client r's reply is for, or NULL (gone, over its limit). */
client_t *wn_req_client(const req_t *r);
/* Append the client's FIFO (takes a reference). */
void wn_req_enqueue_client(client_t *c, req_t *r);
/* What a parent keeps until it is answered: its slot and its fragments'
 * (answered ones are kept too), its `out` when kept (a get's line), and its
 * protocol's kept memory (a split's bookkeeping, copied keys, a Redis
 * argument array). Not what it lets go of once written. */
uint64_t wn_req_kept(const req_t *r);
/* Count `bytes` more held for r's client (memory a unit keeps for it). */
void wn_req_hold(req_t *r, uint64_t bytes);
/* `bytes` counted for `from` are held on for `to`, a later request of the
 * same client: released when `to` is answered, not `from`. Nothing happens
 * once `from` is no longer counted (answered, or its client gone). */
void wn_req_hold_move(req_t *from, req_t *to, uint64_t bytes);
/* Request bytes for the server; counted against the client's limit. */
int wn_req_out_push(req_t *r, wn_buf_t *buf, uint32_t off, uint32_t len);
int wn_req_out_scratch(req_t *r, const char *data, size_t len);
/* The same for a copy of its parent's bytes: not counted; the parent's
 * count (and `out`) stays until its last copy is written (copies_left). */
int wn_req_out_push_shared(req_t *r, wn_buf_t *buf, uint32_t off, uint32_t len);
int wn_req_out_scratch_shared(req_t *r, const char *data, size_t len);
/* r's bytes stop counting against its client (its fragments, made from
 * them, count them instead); `out` itself stays until wn_req_out_written. */
void wn_req_out_uncount(req_t *r);
/* Reply bytes for the client; dropped when nobody will read them; counted
 * against the client's limit (which may mark the client over it). `split`
 * keeps the bytes a segment of their own. */
int wn_req_rsp_push(req_t *r, wn_buf_t *buf, uint32_t off, uint32_t len, bool split);
int wn_req_rsp_scratch(req_t *r, const char *data, size_t len);
/* r's reply is complete: parents hear of fragments, clients get dirty. */
void wn_req_done(req_t *r);
/* r could not be completed: count it (by cause) and mark it failed; the
 * protocol unit then composes its error reply (wn_proto_fail does both).
 * False when r was done already. */
bool wn_req_failed(req_t *r, int err);
/* err says the server could not be reached or did not answer (refused,
 * timed out, reset, unreachable), not that it answered wrongly. */
bool wn_req_err_unreached(int err);
/* What a failed request is answered with, as twemproxy words it (strerror
 * of the cause): "Connection refused", "Connection timed out", ... */
const char *wn_req_fail_text(int err);
/* Answer r with a line walnut wrote (copied), in place of what it had
 * gathered; if some of that has gone out already, nothing can follow it and
 * the client is closed after it. */
void wn_req_reply(req_t *r, const char *text, size_t len);
/* Let go of what r's reply has gathered and not sent (no longer counted;
 * segments a fragment gave its parent, their buf NULL, stay counted). */
void wn_req_rsp_drop(req_t *r);
/* Every fragment p still lists: let go of what their replies gathered, and
 * drop the rest as it comes (p's reply is settled without them: an error,
 * or the limit's). */
void wn_req_let_go_frags(req_t *p);
/* r, a fragment, and every other part of its parent, as above. */
void wn_req_frags_let_go(req_t *r);
/* wn_req_rsp_push for a part of a split command. Its reply waits for the
 * other parts' (the client's is made of them all), so it counts against
 * the client whole however fast the client reads: bytes that would take
 * the client past client_buffer_limit are not kept and every part lets go
 * (wn_req_frags_let_go). 1: so; the protocol answers the command with the
 * limit's error instead of the client being cut. */
int wn_req_part_push(req_t *r, wn_buf_t *buf, uint32_t off, uint32_t len, bool split);
/* End r's reply with a line walnut wrote (copied), after what it gathered,
 * sent or not: for a reply whose segments end where a line may follow (a
 * split get's whole items). */
void wn_req_reply_after(req_t *r, const char *text, size_t len);
/* The client is going away: its requests keep going but answer nobody. */
void wn_req_detach(req_t *r);
/* The request bytes were written to the server: release them unless kept. */
void wn_req_out_written(req_t *r);

/* r's bytes were offered to a socket (or dropped unwritten): they leave
 * its server's `unoffered`. Once; before r->sent is set. */
void wn_req_offered(req_t *r);
/* r's bytes no longer wait for its server: its socket took them, or r left
 * the queue unsent. */
void wn_req_not_waiting(req_t *r);
void wn_req_free_all(wn_worker_t *w);

/* ---- server connections (server.c) ---------------------------------------- */

typedef enum sconn_state {
    SCONN_IDLE, /* not connected */
    SCONN_CONNECTING,
    SCONN_CONNECTED,
    SCONN_CLOSING, /* uv_close called, callbacks outstanding */
} sconn_state_t;

/* A connection to a server. Protocol units embed it first in their own type. */
struct sconn {
    wn_stream_t h;
    uv_connect_t connect_req;
    uv_timer_t timer;
    server_rt_t *server;  /* borrowed: outlives the connection */
    uint8_t state;        /* sconn_state_t */
    bool handle_open;
    bool timer_open;
    bool dirty;           /* on the worker's flush list */
    int fail_err;         /* failed: close at the next flush with this error */
    bool recycle;         /* close once nothing written waits for a reply; what is
                             unsent goes on a new connection (wn_sconn_recycle) */
    bool read_paused;     /* not read for the rest of the turn: clients over
                             --client-memory (server.c's on_read); the flush reads on */
    sconn_t *dirty_next;
    req_t *head;          /* FIFO: sent or waiting to be sent, oldest first (refs held) */
    req_t *tail;
    req_t *unsent;        /* first request not yet written */
    uint64_t unsent_ms;   /* since when `unsent` has waited (queued, or held back behind
                             the connect, a handshake or a retired predecessor) */
    uint32_t nqueued;
    uint64_t connect_ms;  /* when the connect started */
    uint64_t progress_ms; /* last time the server sent bytes (or was sent the oldest request) */
    /* (both by the worker's clock at that moment, never behind the loop's:
     * a timeout counts from them; the other stamps are the loop's) */
    uint64_t answer_ms;   /* last time it completed a reply (or was sent the oldest request) */
    uint64_t late_stamp;  /* the deadline's start for which the timer found the socket ready */
    bool late_checked;    /* late_stamp is set (server.c's ready_unseen) */
    /* Whether its socket takes bytes (looked at by each write and past the
     * bound): bytes handed to libuv's write queue since the connect, how
     * many of them had gone at the last look, and when that last changed or
     * the queue was empty. */
    uint64_t handed;
    uint64_t drained_seen;
    uint64_t drained_ms;
    uint32_t closes; /* close callbacks outstanding */
    instream_t in;
};

/* Queue r on the server's connection for client slot `slot` (takes a
 * reference). The flush connects and writes. 0, or WN_ENOMEM (r untouched). */
int wn_server_enqueue(server_rt_t *s, uint32_t slot, req_t *r);
/* The connection of s that client slot `slot` uses (created idle on first
 * use); NULL on ENOMEM. */
sconn_t *wn_server_conn(server_rt_t *s, uint32_t slot);
/* r was written to its connection: it now waits for its reply. */
void wn_queue_sent(req_t *r);
/* A socket that took nothing for this long, with bytes waiting for it in
 * its queue, has stopped reading (queue.c's bound). */
#define WN_SERVER_STALL_MS 500
/* Has c's socket queue held bytes it took none of for WN_SERVER_STALL_MS,
 * or have requests waited that long to be written (its connect, handshake
 * or a retired predecessor not done)? */
bool wn_sconn_stalled(sconn_t *c);
/* A server that has completed no reply for this long since it was given a
 * request is not answering (queue.c's bound). */
#define WN_SERVER_ANSWER_MS 100
/* At a stop: a server with nothing queued must count nothing (queue.c). */
void wn_server_check_counts(const server_rt_t *s);
/* *count -= n for a server's count, logging an internal error if n is more
 * than it has (counted out twice somewhere). */
void wn_count_underflow(const server_rt_t *s, const char *what, uint64_t have, uint64_t n);
WN_INLINE void wn_count_sub(const server_rt_t *s, uint64_t *count, uint64_t n, const char *what)
{
    if (__builtin_expect(n > *count, 0)) {
        wn_count_underflow(s, what, *count, n);
        n = *count;
    }
    *count -= n;
}
/* Queue an internal request at the front of a new connection (AUTH/SELECT). */
void wn_sconn_enqueue(sconn_t *c, req_t *r);
/* The head request of c is complete: unlink it (its reference is dropped). */
void wn_sconn_pop(sconn_t *c);
/* The same for a request that got no reply (its connection failed): it is
 * not counted as a response. */
void wn_sconn_drop(sconn_t *c);
/* c broke (read error, protocol error, timeout): mark it, the flush closes it. */
void wn_sconn_fail(sconn_t *c, int err);
/* c is to be opened anew (a protocol's first requests refused, and the
 * server may take them now): nothing more is written on it; once what was
 * written is answered, the flush closes it, and what is queued goes on a
 * new connection, after the protocol's first requests, failing nothing. */
void wn_sconn_recycle(sconn_t *c);
/* Flush: connect, write, or close c as its state asks. */
void wn_sconn_flush(sconn_t *c);
/* What a warning about one server says; each kind is limited on its own
 * (queue.c, wn_server_warn). */
typedef enum wn_server_warn_kind {
    WN_SWARN_CONNECT,  /* cannot connect */
    WN_SWARN_TIMEOUT,  /* no progress within timeout */
    WN_SWARN_CLOSED,   /* closed with requests in flight */
    WN_SWARN_MISMATCH, /* a reply that does not match its request */
    WN_SWARN_AUTH,     /* refused walnut's AUTH */
    WN_SWARN_SELECT,   /* refused walnut's SELECT */
    WN_SWARN_FULL,     /* at its connection limit */
    WN_SWARN_WAITING,  /* over its bound of bytes not taken (queue.c) */
    WN_SWARN_HELD,     /* over its bound of what it has not answered (queue.c) */
    WN_SWARN_KINDS
} wn_server_warn_kind_t;

/* Server `idx` of pc (pool's configuration, or the one a reload brings),
 * its address resolved: NULL with a line in err. It counts nowhere until
 * wn_pool_rt_count_in. */
server_rt_t *wn_server_rt_create(pool_rt_t *pool, const wn_conf_pool_t *pc, uint32_t idx,
                                 char *err, size_t errlen);
/* Free s once its connections are closed (wn_server_closed). */
void wn_server_rt_destroy(server_rt_t *s);
void wn_server_preconnect(server_rt_t *s);
/* A warning about s, logged at most once per 10 s per worker and kind (a
 * server that fails every request would otherwise log a line per request);
 * the next one logged says how many were left out. Whether it was logged. */
__attribute__((format(printf, 5, 6))) bool wn_server_warn_at(server_rt_t *s,
                                                             wn_server_warn_kind_t kind,
                                                             const char *file, int line,
                                                             const char *fmt, ...);
#define wn_server_warn(s, kind, ...) wn_server_warn_at((s), (kind), __FILE__, __LINE__, __VA_ARGS__)
/* Stop: close every connection of s, failing what is queued. */
void wn_server_close_all(server_rt_t *s);
/* Its pool's timeout changed: connections waiting already get a deadline. */
void wn_server_timeout_changed(server_rt_t *s);
/* Nothing is queued on any connection of s. */
bool wn_server_idle(const server_rt_t *s);
/* Every connection of s is closed, its callbacks done. */
bool wn_server_closed(const server_rt_t *s);

struct server_rt {
    pool_rt_t *pool;                 /* borrowed */
    const wn_conf_server_t *conf;    /* borrowed from the worker's config */
    uint32_t idx;
    sconn_t **conns;                 /* owned: server_connections of them */
    uint32_t nconns;
    struct sockaddr_storage addr;    /* resolved at start (TCP servers) */
    int resolve_err;                 /* the address did not resolve: fail requests with it */
    uint64_t suspect_until_ms;       /* a connection failed: hold new requests until
                                        control decides or this passes; 0: not suspect */
    bool reported;                   /* a failure was reported and no success since */
    uint64_t noauth_until_ms;        /* Redis: refused walnut's AUTH, with a redis_db:
                                        its requests fail until then (redis_server.c) */
    bool hold_spent;                 /* a hold ran out with no verdict: none again
                                        until control says something of it (ctl.c) */
    bool added;                      /* a reload made it in a kept pool: no connection yet
                                        (preconnect) */
    client_t *waiters;               /* clients held until the suspicion is resolved */
    wn_server_stats_t *stats;        /* borrowed: this worker's block */
    bool retired;                    /* a reload dropped it: it finishes what is queued,
                                        then closes (reconf.c) */
    bool closing;                    /* retired and drained: its connections close */
    bool replaced;                   /* retired, and its name stays in the pool (its address
                                        moved or its connection settings changed) */
    uint64_t retired_ms;
    wn_conf_t *retired_conf;         /* retired: a reference to the configuration its conf
                                        points into */
    server_rt_t *retired_next;       /* the worker's list of retired servers */
    uint64_t waiting;                /* bytes queued for it that its sockets have not
                                        taken, whoever sent them (clients that left too) */
    /* Requests it has not answered, whoever sent them: each one's slot from
     * the moment it is queued, and once written the bytes the protocol keeps
     * to check the reply (a memcached get's line). A server that reads and
     * does not answer is bounded by this, as one that stops reading is by
     * `waiting`. */
    uint64_t held;
    bool over_warned;                /* `waiting` went over its bound */
    bool held_warned;                /* `held` went over its bound */
    bool over_logged, held_logged;   /* ... and the warning was logged (not left out by
                                        wn_server_warn's limit): so is its end */
    uint64_t unoffered;              /* of `waiting`, what no write has offered a socket
                                        yet (queued this turn, while connecting, behind
                                        a handshake or a retired predecessor) */
    wn_log_limit_t warned[WN_SWARN_KINDS]; /* queue.c: each kind at most once per
                                              WN_SERVER_WARN_MS */
};

/* ---- pools (pool.c, listen.c) ---------------------------------------------- */

/* A listening socket. Its own object, so that a reload can hand it from
 * one pool to another that listens on the same address. */
typedef struct listener {
    wn_acceptor_t acc;
    char *unix_path; /* owned: a unix socket's file, removed at close
                        while it is still the one bound (unix_dev, unix_ino) */
    dev_t unix_dev;  /* the file's device and inode after bind */
    ino_t unix_ino;
    pool_rt_t *pool;                 /* borrowed: whose clients it accepts */
    const wn_conf_addr_t *addr;      /* borrowed from pool's configuration, or addr_conf */
    wn_conf_t *addr_conf;            /* a reference: the configuration addr is in, when it
                                        is not the pool's (kept by a reload that could
                                        not bind the new address) */
    struct sockaddr_storage sa;      /* TCP: the address bound (zeroed: unix) */
    uint64_t sock_id;                /* the socket's cookie: copies of one socket share it */
} listener_t;

struct pool_rt {
    wn_worker_t *w;                  /* borrowed */
    const wn_conf_pool_t *conf;      /* borrowed from the worker's config */
    uint32_t idx;
    uint8_t proto;                   /* wn_proto_t: which protocol unit serves it */
    wn_ring_t *ring;                 /* one reference held */
    server_rt_t **servers;           /* owned, each owned: requests point at them */
    uint32_t nservers;
    listener_t *listener;            /* owned; NULL: not listening (here) */
    uint64_t epoch;                  /* epoch of `ring` */
    bool retired;                    /* a reload dropped it: its clients drain, then it
                                        closes (reconf.c) */
    pool_rt_t *retired_next;         /* the worker's list of retired pools */
    uint64_t retired_ms;
    wn_conf_t *retired_conf;         /* retired: a reference to the configuration its conf
                                        points into */
    uint32_t nsuspect;               /* servers with suspect_until_ms set */
    uint32_t nclients;               /* this worker's open clients of the pool */
    wn_pool_clients_t *clients;      /* borrowed: the pool's clients over every worker (its
                                        client_connections); NULL: this worker takes its
                                        share of the limit instead */
    wn_log_limit_t clients_warned;   /* clients refused for client_connections */
    uint64_t buffer_limit;           /* client_buffer_limit */
    size_t client_size;              /* bytes of the protocol unit's client */
    size_t sconn_size;               /* bytes of the protocol unit's server connection */
    wn_pool_stats_t *stats;          /* borrowed: this worker's block */
};

/* Pool `idx` of conf, with its servers and a ring of its own (every
 * server live) until control's arrives: NULL with a line in err. */
pool_rt_t *wn_pool_rt_create(wn_worker_t *w, const wn_conf_pool_t *conf, uint32_t idx,
                             char *err, size_t errlen);
/* Free p and its servers once their connections are closed. */
void wn_pool_rt_destroy(pool_rt_t *p);
/* Count p and its servers in block b, at p->idx and their indexes. */
void wn_pool_rt_count_in(pool_rt_t *p, wn_stats_block_t *b);
/* The server for key, or NULL when none is live. */
static inline server_rt_t *wn_pool_route(pool_rt_t *p, const char *key, size_t len)
{
    uint32_t idx = wn_ring_lookup(p->ring, key, len);
    return idx == WN_RING_NONE ? NULL : p->servers[idx];
}
/* Open the pool's listening socket (listen.c); `first`: no other worker of
 * this process has bound it yet, so a process already serving it is found. */
int wn_listen_open(pool_rt_t *p, bool first, char *err, size_t errlen);
/* Listen on a socket systemd handed over: it becomes the pool's, or with
 * keep_fd stays its owner's (control's), left open when the listener
 * closes. */
int wn_listen_adopt(pool_rt_t *p, int fd, bool keep_fd, char *err, size_t errlen);
/* Close a listener (freed by its close callback); NULL is fine. */
void wn_listener_close(listener_t *l);
/* Close l, whose pool goes on (its listen address moved): the connections
 * waiting in its backlog are accepted first, and served on the pool. */
void wn_listener_close_serving(listener_t *l);
/* Close the pool's listener. */
void wn_listen_close(pool_rt_t *p);

/* ---- clients (client.c) ---------------------------------------------------- */

/* A client connection. Protocol units embed it first in their own type. */
struct client {
    wn_stream_t h;
    wn_worker_t *w;        /* borrowed */
    pool_rt_t *pool;       /* borrowed */
    client_t *prev, *next; /* worker's client list */
    instream_t in;
    req_t *head, *tail;    /* FIFO of requests in arrival order (refs held) */
    uint32_t inflight;
    uint64_t held;         /* bytes held for it: requests unsent, replies unwritten */
    uint64_t held_over;    /* `held` when it went over its limit (what the warning says:
                              by the flush, written requests may have lowered it) */
    uint64_t soft_limit;   /* a quarter of the pool's buffer limit: stop reading past it */
    uint64_t reply_est;    /* what its recent replies held, a decaying maximum: its requests
                              in flight times this stay under soft_limit */
    uint64_t pending;      /* of which handed to uv_write and not yet written */
    uint32_t writes;       /* uv_write calls outstanding */
    bool reading;
    bool eof;              /* the peer closed its side: answer what was asked, then close */
    bool broken;           /* the socket failed: close at the next flush */
    bool overlimit;        /* held more than the pool's buffer limit: close at the next flush */
    bool evicted;          /* overlimit for the worker's bound (--client-memory) instead */
    bool stop_parsing;     /* quit, or framing lost: nothing more is read or parsed */
    bool draining;         /* the worker is stopping: close once nothing is in flight */
    bool mid_request;      /* the protocol is inside a request: keep reading (see
                              wn_client_can_parse); set by the protocol unit */
    bool reading_queued;   /* the request being read is queued already (in inflight); a
                              partial first line or head is not: set by the protocol unit */
    bool waiting;          /* counted in its worker's clients_waiting (wn_client_recount) */
    uint32_t waiting_reqs; /* its requests read whole and unanswered (up to
                              WN_BATCH_DEPTH_FULL), as counted in its worker's
                              reqs_waiting (wn_client_recount) */
    bool close_on_write;   /* close once the queued writes are done */
    bool lingering;        /* closing: FIN sent, reading on (see WN_CLIENT_LINGER_MS) */
    bool unpaced;          /* read past the soft bounds (see WN_CLIENT_STALL_MS) */
    segv_t backlog;        /* replies copied out of their requests while a write was under
                              way (compact_ready), next to write */
    uint64_t backlog_bytes; /* the sizes of the buffers it took, counted in held */
    wn_buf_t *backlog_buf; /* the one being filled (a reference), or NULL */
    uint64_t stall_ms;     /* paused with a write that has not moved since (0: not) */
    size_t stall_queue;    /* that write's bytes libuv still had then */
    bool closing;
    bool pool_counted; /* counted in pool->clients */
    bool dirty;
    client_t *dirty_next;
    bool deferring; /* on its worker's deferred list: flushed again next turn */
    bool deferred;  /* its last flush held its replies back a turn (client.c,
                       hold_for_pipeline): the next one writes them */
    client_t *defer_next;
    uint32_t slot;         /* picks this client's connection to each server */
    server_rt_t *held_by;  /* waiting for control's verdict on this server */
    client_t *wait_next;   /* held_by's waiter list */
};

/*
 * Has c as many requests in flight as it may? 1024, and fewer when its
 * replies are large: a server builds the replies to what it has read before
 * it writes them, so a few small requests for large values (a client that
 * pipelines GETs of 512 KB and never reads) would make it build gigabytes
 * for walnut's connection, and every other client of that connection would
 * wait behind them. Its requests in flight times what its recent replies
 * held (reply_est; before the first, the soft bound over
 * WN_CLIENT_FIRST_INFLIGHT) stay under the soft bound; one is always let in.
 */
static inline bool wn_client_inflight_full(const client_t *c)
{
    return c->inflight >= WN_CLIENT_MAX_INFLIGHT ||
           (c->inflight > 0 && (uint64_t)c->inflight * c->reply_est >= c->soft_limit);
}

/*
 * May c be read and parsed further? Not once it is closing, broken, over its
 * limit, done (quit, lost framing) or held for control's verdict. Between
 * requests the soft bounds apply too: its requests in flight (above), or a
 * quarter of the buffer limit held; inside a request (the unit sets
 * mid_request) they wait for its end, or a half-received request could
 * never complete.
 */
static inline bool wn_client_can_parse(const client_t *c)
{
    if (c->closing || c->broken || c->overlimit || c->stop_parsing || c->held_by != NULL)
        return false;
    return c->mid_request ||
           (!wn_client_inflight_full(c) && (c->unpaced || c->held < c->soft_limit));
}

/*
 * A client paused by its soft bounds whose reply write has not moved for
 * WN_CLIENT_STALL_MS is most likely blocked sending the rest of a pipeline
 * it writes whole before reading any reply (redis-py's pipeline, most
 * clients' batches): pausing it would wait for it forever, and it for
 * walnut. It is read on, "unpaced", until its next write completes. As for
 * any client with a write under way, the replies of its requests done are
 * copied into a backlog of its own and the requests let go (compact_ready:
 * held, each would keep alive a server read buffer it points into, 16 KiB
 * shared with other clients' replies, for a few bytes of its own): the
 * 1,024 requests in flight still bound its reading, at the servers' pace,
 * and the pool's buffer limit what it holds, the backlog counted with the
 * rest (a client that never reads is disconnected there).
 * Watched by a worker timer while such a client exists.
 */
#define WN_CLIENT_STALL_MS 1000
/*
 * A client that sent more than walnut read (bytes after `quit`, after a
 * request it cannot frame) would get a reset from close(2), and a reset
 * throws away what its socket had not delivered yet: the replies it asked
 * for first. Once its last reply is written walnut sends FIN instead and
 * reads on, dropping what comes, until the client has taken everything
 * (nothing unacknowledged), closes, or takes nothing for this long. Taking
 * is seen as the unacknowledged bytes going down, which a slow reader's
 * receive window lets happen in steps (32 KB every 4 s for one reading
 * 8 KB/s: 2 s cut it off, a review found).
 */
#define WN_CLIENT_LINGER_MS 10000
void wn_client_pace_init(wn_worker_t *w);

/* A connection accepted on the pool's listener: fd is the client's, a unix
 * socket's or a TCP one's (is_unix: the listener's, which may not be the
 * pool's listen address now). */
void wn_client_accept(pool_rt_t *pool, int fd, bool is_unix);
/* The pool's limits changed (a reload): c takes them on. */
void wn_client_limits(client_t *c);
/* Adopt an already connected stream fd (tests, socket handover). */
int wn_client_open(pool_rt_t *pool, uv_file fd, bool is_pipe, client_t **out);
/* Queue c for the next flush. */
void wn_client_mark(client_t *c);
/* Queue c for the next turn's flush, not this one's. */
void wn_client_defer(client_t *c);
/* The start of a flush: the clients deferred last turn are due. */
void wn_worker_undefer(wn_worker_t *w);
/* Flush: write what is ready, close or resume reading as c's state asks. */
void wn_client_flush(client_t *c);
/* All clients together hold more than --client-memory, and this worker's
 * more than its share: publishes what they hold, and marks the clients
 * holding the most to be disconnected by this flush until the excess is
 * shed. true if it marked any. */
bool wn_client_memory_check(wn_worker_t *w);
/* Clients over --client-memory now, as this worker sees the total (its own
 * hold now, the others' as last published); false with no bound. */
bool wn_client_memory_over(const wn_worker_t *w);
/* Stop: answer what is in flight (and on its way); close once drained. */
void wn_client_shutdown(client_t *c);

/* Reply bytes became ready for c's FIFO head while it is incomplete. */
void wn_client_stream(client_t *c, req_t *r);

/* ---- the worker (worker.c, flush.c) ---------------------------------------- */

struct wn_worker {
    int id;
    int nworkers;
    wn_conf_t *conf;     /* one reference held */
    uv_loop_t loop;
    uv_async_t wakeup;   /* control messages and stop requests */
    uv_thread_t thread;
    bool started;        /* the thread runs (tests may drive the loop themselves) */
    atomic_int stop_requested;
    bool stopping;
    bool stopped;        /* finish_stop ran */
    bool accept_unix;
    const wn_activated_t *activated; /* borrowed: systemd's sockets, for reloads */
    uv_timer_t stop_timer; /* grace period for in-flight requests at stop */
    bool stop_timer_open;
    uv_timer_t trim_timer; /* gives freed memory back to the system now and then */
    uv_timer_t pace_timer; /* watches paused clients whose writes do not move (client.c) */
    wn_bufpool_t bufs;
    uint64_t trimmed_at;   /* bufs.freed at the last malloc_trim */
    pool_rt_t **pools;   /* owned, each owned: clients and requests point at them */
    uint32_t npools;
    uint64_t gen;        /* the configuration generation it runs (control's count) */
    /* Reloads (reconf.c): what the new configuration dropped, until it is
     * done with, and the configurations they still point into. */
    pool_rt_t *retired_pools;
    server_rt_t *retired_servers;
    uint64_t retire_grace_ms; /* how long they may take (reconf.c) */
    uv_timer_t reap_timer;
    bool reap_timer_open;
    /* Counters of what was dropped go here: nobody reads them. */
    wn_pool_stats_t *sink_pool;     /* owned */
    wn_server_stats_t *sink_server; /* owned */
    client_t *clients;   /* list */
    uint32_t nclients;
    uint32_t clients_waiting; /* with --batch-wait: clients with a whole request unanswered */
    uint64_t reqs_waiting;    /* and their whole requests unanswered, together (each
                                 client's up to WN_BATCH_DEPTH_FULL) */
    uint64_t answered;        /* requests its clients had answered since the last wait */
    uint64_t answered_bytes;  /* and bytes written to them (reply_average, flush.c) */
    uint64_t reply_avg;       /* --batch-wait: bytes written a request answered, averaged */
    /* Bytes its clients hold together (their `held`, closing ones left
     * out), published in budget->held once a turn for --client-memory. */
    uint64_t clients_held;
    wn_log_limit_t evict_warned;  /* clients disconnected for it: said once a minute at most */
    wn_client_budget_t *budget;   /* borrowed; NULL: none (wn_worker_options_t) */
    wn_log_limit_t budget_warned; /* clients refused for it: said once a minute at most */
    sconn_t *dirty_servers;
    client_t *dirty_clients;
    client_t *deferred_clients; /* flushed again next turn: replies held back for the rest of
                                   a pipeline (wn_client_defer) */
    uv_check_t flusher;  /* one flush per loop turn */
    uv_idle_t kick;      /* keeps the loop from sleeping while a flush is due */
    uint64_t batch_wait_ns; /* --batch-wait: the sleep after a busy turn for request-reply
                               clients; longer for pipelines (wn_batch_wait_ns, flush.c) */
    bool flushing;
    uint32_t meta_tags; /* the last O token walnut tagged a meta request with (mc.h) */
    uint32_t next_slot;
    uint64_t next_client_id; /* the last client id handed out here (Redis CLIENT ID) */
    uint64_t now_us;     /* wn_worker_tick's clock */
    size_t req_size;     /* request slots: the largest protocol unit's request */
    wn_buf_t *scratch;   /* composed heads and local replies are cut from here */
    req_t *free_reqs;    /* request slots for reuse */
    uint32_t nfree_reqs;
    uint64_t start_time; /* unix seconds */
    char name[24];
    /* Counters: this worker writes only its own block (owned by control;
     * it outlives the worker). The memcached `stats` command is answered by
     * control, which alone reads every block: requests wait here for it. */
    wn_stats_block_t *stats;
    req_t **stats_waiting;         /* owned array: requests waiting for control's stats */
    uint64_t *stats_ids;           /* their ids */
    uint32_t nstats_waiting;
    uint64_t stats_seq;
    /* The control channel (ctl.c). */
    wn_spsc_t *from_control;       /* owned; control produces, we consume */
    wn_spsc_t *to_control;         /* owned; we produce, control consumes */
    wn_spsc_outbox_t outbox;       /* ours, in front of to_control */
    wn_spsc_outbox_t control_outbox; /* control's, in front of from_control (control thread only) */
    uv_async_t *control_wakeup;    /* borrowed; NULL: no control thread */
    uv_timer_t hold_timer;         /* ends holds whose time is up */
    bool hold_timer_open;
};

/* A client's `held` changes through these, so its worker's sum follows.
 * Not once it is closing: its bytes left the sum when it closed, and only
 * its cancelled writes' callbacks change its count after that (client.c). */
static inline void wn_client_held_add(client_t *c, uint64_t n)
{
    c->held += n;
    c->w->clients_held += n;
}

static inline void wn_client_held_sub(client_t *c, uint64_t n)
{
    n = WN_MIN(n, c->held);
    c->held -= n;
    c->w->clients_held -= n;
}

/* flush.c: how long --batch-wait sleeps after a busy turn (base_ns: the
 * option) while `clients` clients wait for `reqs` whole requests (each
 * client's counted up to WN_BATCH_DEPTH_FULL), their replies `reply_bytes`
 * long on average: the longest from an average of WN_BATCH_DEPTH_FULL and
 * replies of WN_BATCH_REPLY_FULL bytes. */
#define WN_BATCH_DEPTH_FULL 8u
#define WN_BATCH_REPLY_FULL 1024u
uint64_t wn_batch_wait_ns(uint64_t base_ns, uint64_t reqs, uint32_t clients, uint64_t reply_bytes);
/* flush.c: the average reply_bytes above, moved by n requests answered with
 * `bytes` written to their clients since the last wait. */
uint64_t wn_batch_reply_avg(uint64_t avg, uint64_t bytes, uint64_t n);

/* Is c waiting for a reply: a request read whole and not yet answered? One
 * being read does not count: a protocol unit queues a request once its first
 * line or head is read (Redis at its *N line, memcached at its command line
 * or binary head), and says so in reading_queued while the rest comes; a
 * partial first line is not queued and takes nothing off. So clients that
 * send half a request and stop do not make turns busy for --batch-wait
 * (flush.c), and a client with a request unanswered still waits while its
 * next one arrives. Called where its requests in flight or reading_queued
 * change: a request queued or answered, and after each parse or EOF. Only
 * --batch-wait reads the count: without it, none is kept (the option is the
 * worker's for life). Its requests so counted go into reqs_waiting, for the
 * length of the wait. */
static inline void wn_client_recount(client_t *c)
{
    if (c->w->batch_wait_ns == 0)
        return;
    uint32_t whole = c->inflight > 0 && c->reading_queued ? c->inflight - 1 : c->inflight;
    bool now = whole > 0;
    /* counted up to WN_BATCH_DEPTH_FULL: one deep client (a pipeline of
     * thousands, a slow server's) cannot make every client's wait longest */
    whole = WN_MIN(whole, WN_BATCH_DEPTH_FULL);
    if (now != c->waiting) {
        c->waiting = now;
        if (now)
            c->w->clients_waiting++;
        else
            c->w->clients_waiting--;
    }
    c->w->reqs_waiting += whole;
    c->w->reqs_waiting -= c->waiting_reqs;
    c->waiting_reqs = whole;
}

/* flush.c */
void wn_worker_flush_init(wn_worker_t *w);
/* Queue a server connection for the next flush. */
void wn_sconn_mark(sconn_t *c);
/* Make sure a flush runs soon even if nothing else wakes the loop. */
void wn_worker_kick(wn_worker_t *w);
/* A retired server's connection has nothing left: the servers of its pool
 * that wait for it to drain (server.c) may write again. */
void wn_server_wake_successors(server_rt_t *s);
/* Stopping, and no client is left: close servers and the worker's own
 * handles so its loop ends. */
void wn_worker_finish_stop(wn_worker_t *w);

/* ---- reloads (reconf.c) --------------------------------------------------- */

/* Apply a WN_MSG_CONFIG; its references become the worker's. No client is
 * held for a verdict when it is called. 0, or why (some of) it could not be
 * applied: a listener that would not open, or nothing at all (out of memory,
 * stopping: the worker keeps its configuration and generation). */
int wn_reconf_apply(wn_worker_t *w, const wn_msg_t *m);
/* Free what retired and is done; false while something is left. */
bool wn_reconf_reap(wn_worker_t *w);
/* How long what retired may take before it is closed: 30 s (tests may set
 * WALNUT_TEST_RETIRE_GRACE_MS with WALNUT_TEST_HOOKS=1). */
uint64_t wn_reconf_grace_ms(void);
/* Stopping: close what retired pools and servers still hold. */
void wn_reconf_close_all(wn_worker_t *w);
/* After the loop ended: free everything retired, and the old configurations. */
void wn_reconf_free_all(wn_worker_t *w);

/* ---- the control channel and holds (ctl.c) --------------------------------- */

int wn_ctl_init(wn_worker_t *w);
void wn_ctl_deinit(wn_worker_t *w);
void wn_ctl_close(wn_worker_t *w);
/* Drain control's messages (on the worker's wakeup). Stops at one the
 * worker must handle above this layer, true with it in *out, then call
 * again: a new configuration (WN_MSG_CONFIG) to apply
 * and answer with wn_ctl_config_done, or the text of a `stats` request
 * (WN_MSG_STATS_REPLY; take its request with wn_ctl_stats_take, free the
 * text). */
bool wn_ctl_receive(wn_worker_t *w, wn_msg_t *out);
/* The request waiting for the stats asked as `id`, off the list, with the
 * reference the list held (NULL: none; its client may have gone). */
req_t *wn_ctl_stats_take(wn_worker_t *w, uint64_t id);
/* Any request still waiting for its stats, as wn_ctl_stats_take gives it
 * (NULL: none): a stopping worker answers them itself, since control, which
 * takes the signal first, answers nothing more. */
req_t *wn_ctl_stats_take_any(wn_worker_t *w);
/* Tell control the worker applied generation gen (err: 0, or what failed). */
void wn_ctl_config_done(wn_worker_t *w, uint64_t gen, int err);
/* A request or connection to s failed / s answered. */
void wn_ctl_server_failed(server_rt_t *s, int err);
void wn_ctl_server_ok(server_rt_t *s);
/* s is suspect: c must wait before sending it anything. True when c waits
 * (never while the worker stops: no verdict would come). */
bool wn_ctl_hold(client_t *c, server_rt_t *s);
/* Ask control for the memcached `stats` reply to r (r waits, holding a
 * reference); false when there is no control thread to ask. */
bool wn_ctl_ask_stats(req_t *r);
/* c is closing: take it off any waiter list. */
void wn_ctl_forget(client_t *c);
/* Holds end: on s (its waiters parse on, routing anew); on every server of p;
 * on the servers of p its ring gives no points (ejected, or gone), a server
 * still on the ring staying suspect until control's verdict on it. */
void wn_ctl_release(server_rt_t *s);
void wn_ctl_release_pool(pool_rt_t *p);
void wn_ctl_release_unrouted(pool_rt_t *p);
/* Bytes p[0..n) against a server's refusal line (len bytes, WN_*_FULL_LINE):
 * 1 when they start with it whole, -1 when they are a strict prefix of it
 * (the rest may be on its way), 0 otherwise. */
static inline int wn_full_line_at(const char *p, size_t n, const char *line, size_t len)
{
    if (n == 0 || p[0] != line[0])
        return 0;
    if (n < len)
        return memcmp(p, line, n) == 0 ? -1 : 0;
    return memcmp(p, line, len) == 0 ? 1 : 0;
}

static inline bool wn_server_is_suspect(const server_rt_t *s)
{
    return s->suspect_until_ms != 0;
}

/* Stats helpers for the owning worker. */
#define WN_GSTAT(w, name) (&(w)->stats->global[WN_G_##name])
#define WN_PSTAT(p, name) (&(p)->stats->v[WN_P_##name])
#define WN_SSTAT(s, name) (&(s)->stats->v[WN_S_##name])

/* The time in microseconds for latency (monotonic), read once per event
 * (a read, a timer, a flush) rather than per request: requests that arrive
 * or complete together share it. */
static inline uint64_t wn_worker_now_us(const wn_worker_t *w)
{
    return w->now_us;
}
static inline void wn_worker_tick(wn_worker_t *w)
{
    w->now_us = wn_time_us();
}

#endif
