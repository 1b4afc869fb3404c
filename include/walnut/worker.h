/*
 * worker: one thread with its own libuv loop, its own listening sockets (one
 * per pool, SO_REUSEPORT), its own client connections, buffer pool and
 * backend connection pools. Created and stopped by the main/control thread;
 * everything inside runs on the worker's thread only.
 */
#ifndef WALNUT_WORKER_H
#define WALNUT_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "walnut/config.h"
#include "walnut/stats.h"

typedef struct wn_worker wn_worker_t;

/* A connection or listener handle that is TCP or a unix socket. */
typedef union wn_stream {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_stream_t stream;
    uv_handle_t handle;
} wn_stream_t;

/*
 * Control's pace after a failure, by which a worker sizes how long its
 * clients wait for a verdict (worker/ctl.c): a failed probe is followed by
 * another this soon, each allowed the pool's timeout or, with none, the
 * default below.
 */
#define WN_HEALTH_CONFIRM_MS 100
#define WN_HEALTH_PROBE_TIMEOUT_MS 1000

/*
 * Messages between the control thread and a worker, one SPSC ring per
 * direction per worker. A message is copied into the ring; a pointer in it
 * (a ring) is handed over with the message: the receiver owns that reference.
 */
typedef enum wn_msg_type {
    /* control -> worker */
    WN_MSG_RING = 1,    /* ring: the pool's new ring (one reference handed over) */
    WN_MSG_HEALTHY,     /* server answered control's probe: stop holding requests for it;
                           err != 0: a failed request still counts, report the next answer */
    WN_MSG_PING,        /* epoch: a heartbeat to answer with PONG (the loop is alive) */
    WN_MSG_WEDGE,       /* test hook (WALNUT_TEST_HOOKS=1): block the loop for good */
    WN_MSG_STATS_REPLY, /* epoch: the asking id; text/len: the memcached `stats` reply
                           (malloc'd, handed over) */
    WN_MSG_CONFIG,      /* gen: a reload. conf (one reference handed over), rings[nrings]
                           (the new pools' rings, array and one reference each handed
                           over), block: the counters to write from now on (borrowed) */
    /* worker -> control */
    WN_MSG_FAIL,        /* a request or connection to the server failed with err */
    WN_MSG_OK,          /* the server answered again after a reported failure */
    WN_MSG_RING_DONE,   /* ring: the worker no longer uses it (reference handed back);
                           epoch: the one it now routes the pool with */
    WN_MSG_PONG,        /* epoch: the PING answered */
    WN_MSG_STATS,       /* pool, epoch (an id): compose the memcached `stats` reply */
    WN_MSG_CONFIG_DONE, /* gen: the worker runs that configuration now */
} wn_msg_type_t;

struct wn_ring;

typedef struct wn_msg {
    uint32_t type;     /* wn_msg_type_t */
    uint32_t pool;     /* index in the config's pools */
    uint32_t server;   /* index in the pool's (sorted) servers */
    int32_t err;       /* FAIL: what failed; HEALTHY: see there */
    struct wn_ring *ring; /* RING, RING_DONE */
    uint64_t epoch;    /* RING: the ring's epoch; PING, PONG, STATS*: an id */
    uint64_t gen;      /* the configuration generation pool and server count in
                          (worker -> control: the sender's; RING, HEALTHY: control's,
                          dropped by a worker that runs another); CONFIG: the new one;
                          CONFIG_DONE: the one the worker runs (epoch: the one sent) */
    char *text;        /* STATS_REPLY */
    size_t len;
    struct wn_conf *conf;     /* CONFIG */
    struct wn_ring **rings;   /* CONFIG */
    uint32_t nrings;
    wn_stats_block_t *block;  /* CONFIG */
    int worker;        /* worker -> control: the sender */
} wn_msg_t;

/*
 * Client connections of the whole process against a limit that keeps
 * descriptors for what walnut itself must open (server connections, probes,
 * listeners, the stats server's connections), as twemproxy keeps them: a
 * client past it is accepted and closed at once. Control sets the limit at
 * start and at each reload (0: none); workers count their clients in it.
 * Shared by every thread; relaxed atomics (workers accepting at the same
 * moment may pass it by one each).
 */
/* What one worker's clients hold, as it last published it (once a loop
 * turn), on a cache line of its own. */
typedef struct wn_client_held {
    _Alignas(64) atomic_uint_fast64_t bytes;
} wn_client_held_t;

typedef struct wn_client_budget {
    atomic_uint open;
    atomic_uint limit;
    /* Each pool's clients over every worker, for its client_connections
     * (pool names ever configured: control adds, workers look up). */
    _Atomic(struct wn_pool_clients *) pools;
    /* --client-memory: what all clients together may hold (0: no bound),
     * and what each worker's hold ([nworkers]; NULL: no bound). Set by
     * control before the workers start. */
    uint64_t memory_limit;
    wn_client_held_t *held;
} wn_client_budget_t;

/*
 * One pool's open client connections, counted over every worker, so its
 * client_connections holds for the process as twemproxy's does, however
 * SO_REUSEPORT spreads the clients (and a unix socket, which worker 0 alone
 * accepts on). Found by the pool's name: a pool a reload keeps keeps its
 * count; one it drops keeps its entry while its clients drain (entries live
 * as long as the budget).
 */
typedef struct wn_pool_clients {
    struct wn_pool_clients *next;
    atomic_uint open;
    char name[];
} wn_pool_clients_t;

/* Control: an entry for every pool of conf (before workers see conf); the
 * one control thread adds, workers only look up. WN_ENOMEM: some pool has
 * none (its workers count their own share instead). */
int wn_client_budget_add_pools(wn_client_budget_t *b, const wn_conf_t *conf);
/* The entry for pool `name`, or NULL. Any thread. */
wn_pool_clients_t *wn_client_budget_pool(wn_client_budget_t *b, const char *name);
/* Control, once every worker is joined. */
void wn_client_budget_free(wn_client_budget_t *b);

/* Every listening socket systemd handed over (socket activation), kept
 * open by control for walnut's whole run, so that a pool a reload adds on
 * one of them (one removed before, one no pool took at start) serves on it:
 * systemd keeps its own copy, which walnut could not bind beside. Made at
 * start, read-only after; owned by control. */
typedef struct wn_activated_sock {
    int fd;
    char *name;                 /* FileDescriptorName=, or NULL */
    struct sockaddr_storage sa; /* where it listens (zeroed: unknown) */
} wn_activated_sock_t;
typedef struct wn_activated {
    uint32_t n;
    wn_activated_sock_t *socks;
} wn_activated_t;

typedef struct wn_worker_options {
    int id;
    int nworkers;
    size_t mbuf_size;
    bool accept_unix; /* this worker accepts on unix-socket listeners */
    /* Counters: this worker's block (it is the only writer). Borrowed:
     * owned by control, freed only after the worker is done with it. */
    wn_stats_block_t *stats;
    /* Listening sockets handed over by systemd, one per pool (-1: the
     * worker binds its own); each fd becomes the worker's. NULL: none. */
    const int *listen_fds;
    /* Every socket systemd handed over, for pools a reload adds (borrowed;
     * outlives the worker). NULL: none. */
    const wn_activated_t *activated;
    /* Where failures go: the control thread's wakeup (borrowed). NULL: no
     * control thread; failures are not reported and nothing is ever ejected. */
    uv_async_t *control_wakeup;
    /* The process's client count and limit (borrowed; outlives the worker).
     * NULL: clients are not counted there. */
    wn_client_budget_t *budget;
    /* --batch-wait: after a busy turn (flush.c says which), the worker sleeps
     * this long before it polls again (0: it polls at once). */
    int batch_wait_us;
} wn_worker_options_t;

/* Create a worker for `conf` (a reference is taken). Main thread. Opens the
 * worker's listening sockets, so address errors show up here: returns 0, or a
 * negative error with a line in err. */
int wn_worker_create(wn_conf_t *conf, const wn_worker_options_t *opts, wn_worker_t **out,
                     char *err, size_t errlen);
/* Initial rings: the worker takes one reference of rings[p] for each pool p
 * (control builds them). Main thread, before start. Without this call the
 * worker uses rings it built itself with every server live. */
void wn_worker_set_rings(wn_worker_t *w, struct wn_ring *const *rings);

/* Control thread: send msg to the worker (wakes it). Never blocks and never
 * loses a message: a full ring spills into control's outbox for this worker,
 * flushed on the next wn_worker_flush_outbox. 0 or WN_ENOMEM. */
int wn_worker_post(wn_worker_t *w, const wn_msg_t *msg);
/* Control thread: retry messages that did not fit; returns how many still wait. */
size_t wn_worker_flush_outbox(wn_worker_t *w);
/* Control thread: take the next message the worker sent; 0 or WN_EAGAIN. */
int wn_worker_receive(wn_worker_t *w, wn_msg_t *msg);

/* Look a TCP pool's listen address up into conf->listen_sa (nothing for a
 * unix socket): control does, before a worker sees the configuration;
 * workers never ask DNS. 0 or a negative error with a line in err. */
int wn_listen_resolve(wn_conf_pool_t *conf, char *err, size_t errlen);
/* Worker: for pool i of nc, a socket systemd handed over (by the pool's
 * name, else by its address and named for no other pool of nc; with
 * several, the worker's share) that no listener of `taken` (socket inodes:
 * the other pools') serves on, or -1: none. The descriptor is control's:
 * a listener on it leaves it open (a copy made on a worker would take a
 * number another worker just closed, unseen by ThreadSanitizer). */
int wn_listen_activated(const wn_activated_t *a, const wn_conf_t *nc, uint32_t i, int worker,
                        const uint64_t *taken, uint32_t ntaken);
/* Control: how many handed-over sockets pool i of nc would take (by name,
 * else by address), whoever serves on them now. */
uint32_t wn_listen_activated_count(const wn_activated_t *a, const wn_conf_t *nc, uint32_t i);
/* As wn_listen_resolve, for a lookup made elsewhere (rc: its result): the
 * line in err for a failed one. Returns rc. */
int wn_listen_resolved(const wn_conf_pool_t *conf, int rc, char *err, size_t errlen);
/* Could a pool listen on its address now (looked up as above, unless it was
 * already)? A TCP address another process serves, or a unix path something
 * accepts on, is an error (start checks unix paths with it, a reload every
 * new address). Any thread; 0 or a negative error with a line in err. */
int wn_listen_check(wn_conf_pool_t *conf, char *err, size_t errlen);
/* No two of conf's pools listen on one looked-up address (validation
 * compares them as written: 127.1 is 127.0.0.1, 0.0.0.0 overlaps every
 * IPv4 address of its port), nor a pool where `stats` (walnut's stats
 * server; NULL: none) does. Addresses not looked up are skipped. 0, or
 * UV_EADDRINUSE with err naming who listens there. Any thread. */
int wn_listen_apart(const wn_conf_t *conf, const struct sockaddr_storage *stats, char *err,
                    size_t errlen);

/* Start the worker's thread. */
int wn_worker_start(wn_worker_t *w);
/* Ask the worker to stop: it closes its listeners, answers what is in flight,
 * closes its connections and ends its loop. Any thread; returns at once. */
void wn_worker_stop(wn_worker_t *w);
/* Wait for the thread to end (if it was started; a test may run the loop
 * itself), then free the worker. Main thread. Returns 0, or the error of
 * closing its loop (a handle left open). */
int wn_worker_join(wn_worker_t *w);
/* Free a worker that was created but never started. Main thread; NULL is fine. */
void wn_worker_destroy(wn_worker_t *w);

#endif
