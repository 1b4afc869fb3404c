/*
 * worker_priv.h: the worker module's private structures. Everything here is
 * owned by one worker thread and never touched by another, except the stats
 * counters (relaxed atomics, read by anyone).
 */
#ifndef WALNUT_WORKER_PRIV_H
#define WALNUT_WORKER_PRIV_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "walnut/config.h"
#include "walnut/core.h"
#include "walnut/proto.h"
#include "walnut/route.h"
#include "walnut/spsc.h"
#include "walnut/worker.h"

/* Per-client bounds: stop reading a client while it has this many requests
 * in flight or this many reply bytes waiting to be written. */
#define WN_CLIENT_MAX_INFLIGHT 1024
#define WN_CLIENT_MAX_PENDING_BYTES (8u << 20)
/* Largest request line (a multi-key get); longer lines are rejected. */
#define WN_MAX_LINE (64u * 1024u)
/* Values a client may store: memcached's default item size limit (-I 1m). */
#define WN_MAX_VALUE (1024u * 1024u)
/* Values a backend may return (one started with a larger -I). */
#define WN_MAX_SERVER_VALUE (64u * 1024u * 1024u)

#define STAT_ADD(w, name, n)                                                                      \
    atomic_store_explicit(&(w)->stats.name,                                                       \
                          atomic_load_explicit(&(w)->stats.name, memory_order_relaxed) + (n),     \
                          memory_order_relaxed)
#define STAT_INC(w, name) STAT_ADD(w, name, 1)
#define STAT_DEC(w, name) STAT_ADD(w, name, (uint64_t)-1)

typedef struct wn_worker wn_worker_t;
typedef struct pool_rt pool_rt_t;
typedef struct server_rt server_rt_t;
typedef struct sconn sconn_t;
typedef struct client client_t;
typedef struct req req_t;

/* A reference-holding span of a buffer. */
typedef struct seg {
    wn_buf_t *buf; /* one reference held */
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

void segv_init(segv_t *sv);
/* Append [off, off+len) of buf, taking a reference. 0 or WN_ENOMEM. */
int segv_push(segv_t *sv, wn_buf_t *buf, uint32_t off, uint32_t len);
/* Append all of src's segments (taking references). */
int segv_append(segv_t *sv, const segv_t *src);
void segv_clear(segv_t *sv);
uint64_t segv_bytes(const segv_t *sv);

/* What one flush writes to a socket: iovecs over buffers (no references
 * taken until part of it must wait for uv_write). */
#define OUTV_INLINE 32
typedef struct outv {
    uv_buf_t *iov;
    wn_buf_t **bufs;
    uint32_t n;
    uint64_t bytes;
    uv_buf_t iov_inl[OUTV_INLINE];
    wn_buf_t *bufs_inl[OUTV_INLINE];
} outv_t;

typedef void (*outv_done_cb)(void *arg, int status, uint64_t bytes);

/* Room for `need` segments. 0 or WN_ENOMEM. */
int outv_init(outv_t *o, uint32_t need);
void outv_add(outv_t *o, wn_buf_t *buf, uint32_t off, uint32_t len);
/*
 * Write o to st: as much as the socket takes at once (uv_try_write), the
 * rest through uv_write with buffer references held until it is written,
 * then cb(arg, status, bytes queued). Returns the bytes left queued (0: all
 * written, cb is not called) or a negative error (nothing queued).
 */
int64_t outv_write(outv_t *o, uv_stream_t *st, outv_done_cb cb, void *arg);
void outv_deinit(outv_t *o);

/* Read side of a connection: the buffer being filled and how far it has been
 * parsed. Bytes before `pos` belong to requests/responses (which hold their
 * own references); the stream holds one reference on `buf`. */
typedef struct instream {
    wn_buf_t *buf;
    uint32_t pos;
} instream_t;

/* One item of a get-family response from a fragment: a VALUE block. Its key
 * is kept in parallel arrays (req_t.vkeys/vlens) for wn_mc_merge_take. */
typedef struct value_item {
    uint32_t seg_first; /* index into the response's segv */
    uint32_t nsegs;
} value_item_t;

typedef enum req_kind {
    REQ_FORWARD,   /* whole request to one server; reply relayed as is */
    REQ_SPLIT,     /* multi-key get split into fragments; reply merged */
    REQ_BROADCAST, /* flush_all / verbosity to every server; one reply */
    REQ_FRAGMENT,  /* part of a SPLIT or BROADCAST */
    REQ_LOCAL,     /* answered by walnut itself */
} req_kind_t;

struct req {
    uint32_t refs;      /* client FIFO, server FIFO, parent: each holds one */
    req_kind_t kind;
    wn_mc_cmd_t cmd;
    client_t *client;   /* borrowed; NULL once the client is gone */
    req_t *next;        /* client's FIFO */
    req_t *snext;       /* server connection's FIFO */
    req_t *parent;      /* fragments: the request they are part of (ref held) */
    uint32_t nfrags;    /* parents: fragments not yet done */
    req_t **frags;      /* SPLIT parents: fragments by server order (owned array, refs held) */
    uint32_t nfrag_slots;
    uint32_t *key_frag; /* SPLIT parents: fragment slot of each key, in key order (owned) */
    uint32_t nkeys;
    bool noreply;       /* the client wants no reply */
    bool swallow;       /* the backend replies, the client does not get it */
    bool close_after;   /* quit, or framing lost: close the client after this reply */
    bool done;
    bool failed;        /* answered with an error made by walnut */
    uint64_t sent_ms;
    server_rt_t *server; /* where it goes (forward/fragment) */
    segv_t out;         /* bytes to send to the server */
    segv_t rsp;         /* bytes to send to the client */
    value_item_t *items; /* fragments of a SPLIT: VALUE blocks in rsp (owned) */
    uint32_t nitems;
    uint32_t items_cap;
    const char **vkeys; /* VALUE keys, borrowed from buffers rsp references (owned array) */
    uint32_t *vlens;    /* (owned array) */
    uint32_t hits;      /* get family: VALUE blocks seen */
    const char *line;   /* SPLIT parents: the request line (its buffer is held in out) */
    wn_mc_span_t *keys; /* SPLIT parents: key spans in the line, in key order (owned) */
};

typedef enum sconn_state {
    SCONN_IDLE,       /* not connected */
    SCONN_CONNECTING,
    SCONN_CONNECTED,
    SCONN_CLOSING,
} sconn_state_t;

struct sconn {
    wn_stream_t h;
    uv_connect_t connect_req;
    uv_timer_t timer;
    server_rt_t *server;  /* borrowed: outlives the connection */
    sconn_state_t state;
    uint64_t connect_ms;  /* when the connect started */
    bool handle_open;     /* h is initialised and needs closing */
    bool timer_open;
    bool dirty;           /* on the worker's flush list */
    sconn_t *dirty_next;
    req_t *head;          /* FIFO: sent or waiting to be sent, oldest first (refs held) */
    req_t *tail;
    req_t *unsent;        /* first request of the FIFO not yet written */
    uint32_t nqueued;
    instream_t in;
    wn_mc_rsp_parser_t rsp; /* response framing state for the head request */
    uint32_t data_left;   /* bytes of a VALUE data block still to come */
    bool done_after_data; /* the head's reply is complete once the data block is in */
    char trailer[2];      /* last two bytes of the data block seen so far */
    uint32_t closes;      /* close callbacks outstanding */
};

struct server_rt {
    pool_rt_t *pool;                 /* borrowed */
    const wn_conf_server_t *conf;    /* borrowed from the worker's config */
    uint32_t idx;
    sconn_t **conns;                 /* owned: server_connections of them */
    uint32_t nconns;
    struct sockaddr_storage addr;    /* resolved at start (TCP servers) */
    uint64_t suspect_until_ms;       /* a connection failed: hold new requests until
                                        control decides or this passes; 0: not suspect */
    bool reported;                   /* a failure was reported and no success since */
    client_t *waiters;               /* clients held until the suspicion is resolved */
};

struct pool_rt {
    wn_worker_t *w;                  /* borrowed */
    const wn_conf_pool_t *conf;      /* borrowed from the worker's config */
    uint32_t idx;
    wn_ring_t *ring;                 /* one reference held */
    server_rt_t *servers;            /* owned */
    uint32_t nservers;
    wn_stream_t listener;
    bool listening;
    _Atomic uint64_t epoch;          /* epoch of `ring`, readable by any thread */
    uint32_t nsuspect;               /* servers with suspect_until_ms set */
    uint32_t nclients;               /* this worker's open clients of the pool */
};

struct client {
    wn_stream_t h;
    wn_worker_t *w;      /* borrowed */
    pool_rt_t *pool;     /* borrowed */
    client_t *prev, *next; /* worker's client list */
    instream_t in;
    req_t *data_req;     /* request whose data block is being collected */
    uint32_t data_left;
    req_t *head, *tail;  /* FIFO of requests in arrival order (refs held) */
    uint32_t inflight;
    uint64_t pending_bytes; /* reply bytes handed to uv_write and not yet written */
    uint32_t writes;     /* uv_write calls outstanding */
    bool reading;
    bool eof;            /* peer closed its side or we stopped reading for good */
    bool closing;
    bool dirty;
    bool paused;         /* reading stopped by the per-client bounds */
    client_t *dirty_next;
    uint32_t slot;       /* picks this client's connection to each server */
    server_rt_t *held_by; /* waiting for control's verdict on this server */
    client_t *wait_next; /* held_by's waiter list */
    wn_mc_req_parser_t parser;
    char trailer[2];     /* last two bytes of the data block seen so far */
    bool close_on_write; /* close once the queued writes are done */
};

struct wn_worker {
    int id;
    int nworkers;
    wn_conf_t *conf;     /* one reference held */
    uv_loop_t loop;
    uv_async_t wakeup;   /* stop requests */
    uv_thread_t thread;
    atomic_int stop_requested;
    bool stopping;
    bool accept_unix;
    uv_timer_t stop_timer; /* grace period for in-flight requests at stop */
    bool stop_timer_open;
    wn_bufpool_t bufs;
    pool_rt_t *pools;    /* owned */
    uint32_t npools;
    client_t *clients;   /* list */
    uint32_t nclients;
    sconn_t *dirty_servers;
    client_t *dirty_clients;
    uint64_t start_time; /* unix seconds */
    uint32_t next_slot;
    wn_buf_t *scratch;   /* composed heads and local replies are cut from here */
    wn_worker_t *const *all;
    wn_worker_stats_t stats;
    char name[24];
    /* The control channel (ctl.c). */
    wn_spsc_t *from_control;       /* owned; control produces, we consume */
    wn_spsc_t *to_control;         /* owned; we produce, control consumes */
    wn_spsc_outbox_t outbox;       /* ours, in front of to_control */
    wn_spsc_outbox_t control_outbox; /* control's, in front of from_control (control thread only) */
    uv_async_t *control_wakeup;    /* borrowed; NULL: no control thread */
    uv_timer_t hold_timer;         /* ends holds whose time is up */
    uv_check_t flusher;            /* one batched flush per loop turn */
    bool hold_timer_open;
};

/* request.c */
req_t *req_create(client_t *c, req_kind_t kind, wn_mc_cmd_t cmd);
void req_ref(req_t *r);
void req_unref(req_t *r);
/* Finish r with a reply made by walnut (copied). */
int req_reply_local(req_t *r, const char *text, size_t len);
/* r's reply is complete (rsp filled, or failed): propagate to parent/client. */
void req_done(req_t *r);
/* Fail r (and, for fragments, its part of the parent) with `err` as
 * "SERVER_ERROR <strerror>". */
void req_fail(req_t *r, int err);

/* client.c */
void client_accept(pool_rt_t *pool, uv_stream_t *listener);
/* A request of c finished; write out whatever is ready in order. */
void client_mark_ready(client_t *c);
void client_flush_all(wn_worker_t *w);
/* Flush what this loop turn made ready (called once per turn, from a check handle). */
void worker_flush(wn_worker_t *w);
void client_close(client_t *c);
/* Read and parse again if nothing holds c back (bounds, a hold, eof). */
void client_resume(client_t *c);
/* c holds as many requests or unwritten reply bytes as it may. */
bool client_over_bounds(const client_t *c);

/* worker.c: a client went away; while stopping, the last one ends the loop. */
void worker_client_gone(wn_worker_t *w);

/* server.c */
int server_rt_init(server_rt_t *s, pool_rt_t *pool, uint32_t idx);
void server_rt_deinit(server_rt_t *s);
/* Queue r on the server's connection for client slot `slot`. */
void server_enqueue(server_rt_t *s, uint32_t slot, req_t *r);
void server_flush_all(wn_worker_t *w);
void server_preconnect(server_rt_t *s);
/* Idle servers close when the worker stops. */
void server_close_all(server_rt_t *s);

/* route glue (pool.c) */
int pool_rt_init(pool_rt_t *p, wn_worker_t *w, const wn_conf_pool_t *conf, uint32_t idx);
void pool_rt_deinit(pool_rt_t *p);
/* Build a ring with every server live (no control thread gave one). */
int pool_rt_default_ring(pool_rt_t *p);
/* The server for key, or NULL when none is live. */
server_rt_t *pool_route(pool_rt_t *p, const char *key, size_t len);

/* ctl.c: the worker's end of the control channel. */
int ctl_init(wn_worker_t *w);
void ctl_deinit(wn_worker_t *w);
/* Drain control's messages (on the worker's wakeup). */
void ctl_receive(wn_worker_t *w);
/* A request or connection to s failed / s answered. */
void ctl_server_failed(server_rt_t *s, int err);
void ctl_server_ok(server_rt_t *s);
/* s is suspect: c must wait before sending it anything. True when c was put on hold. */
bool ctl_hold(client_t *c, server_rt_t *s);
/* Let every client held on s go on. */
void ctl_release(server_rt_t *s);
/* c is closing: take it off any waiter list. */
void ctl_forget(client_t *c);
bool server_is_suspect(const server_rt_t *s);

/* mc.c: the memcached request path. */
/* Parse and dispatch what c has buffered. */
void mc_client_process(client_t *c);
/* Build the client's reply of a SPLIT parent from its fragments. */
int mc_merge_split(req_t *parent);
/* Build a BROADCAST parent's single reply. */
int mc_merge_broadcast(req_t *parent);
/* Answer `stats` with this process's counters. */
int mc_reply_stats(req_t *r);

/* mc.c, backend side: frame the replies buffered on c; < 0 on a protocol error. */
int mc_server_process(sconn_t *c);
/* Forget a half-framed reply (the connection is closing). */
void mc_sconn_reset(sconn_t *c);

/* server.c: the head request of c is complete; unlink it. */
void sconn_pop(sconn_t *c);

/* The stream helpers (stream.c). */
/* Cut `len` bytes from the worker's scratch buffer, copy `data` there and
 * append them to sv. 0 or WN_ENOMEM. */
int scratch_push(wn_worker_t *w, segv_t *sv, const char *data, size_t len);
/* Append without merging into the previous segment (segment boundaries mark items). */
int segv_push_split(segv_t *sv, wn_buf_t *buf, uint32_t off, uint32_t len);
/* Space for the next read: keep the unparsed tail contiguous with what comes. */
int instream_alloc(wn_worker_t *w, instream_t *in, bool keep_line, uv_buf_t *out);
void instream_deinit(instream_t *in);

#endif
