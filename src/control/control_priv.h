/*
 * control_priv.h: the control thread's private state. Everything here is
 * owned by the control thread; workers are reached only through
 * wn_worker_post / wn_worker_receive.
 */
#ifndef WALNUT_CONTROL_PRIV_H
#define WALNUT_CONTROL_PRIV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

#include "walnut/config.h"
#include "walnut/control.h"
#include "walnut/core.h"
#include "walnut/route.h"
#include "walnut/stats.h"
#include "walnut/worker.h"

typedef struct control control_t;
/* A state notification (sd.c) waiting for the manager's queue. */
#define WN_SD_MSG_MAX 512
typedef struct wn_sd_pending {
    char msg[WN_SD_MSG_MAX];
    size_t len;
    bool reloading; /* RELOADING=1, else READY=1 */
} wn_sd_pending_t;
typedef struct hpool hpool_t;

/* Listening sockets systemd handed over for one pool (socket activation). */
#define WN_MAX_INHERITED 64
typedef struct wn_inherited {
    int fds[WN_MAX_INHERITED];
    uint32_t n;
    char where[128]; /* the first socket's address, as logged */
} wn_inherited_t;

/* Control's own connection to one server, for active health probes. */
typedef struct probe {
    wn_stream_t h;
    uv_connect_t connect_req;
    uv_write_t write_req;
    uv_timer_t timer;   /* next probe, or the current probe's deadline */
    bool handle_open;
    bool closing;       /* uv_close called, its callback not yet run */
    bool connected;
    bool busy;          /* a probe is outstanding */
    bool late_granted;  /* its deadline passed with the socket ready: one more wait */
    bool fresh;         /* new connection: redis auth/select go first */
    char rbuf[512];
    size_t rlen;
    uint32_t lines_left;
    bool ok;            /* every reply line so far was good */
    bool auth_line;     /* the next line answers AUTH (not judged) */
    char said[WN_PROBE_SAID_MAX]; /* the first line that was no good answer, printable */
    char *wbuf;         /* owned: sized for the pool's AUTH/SELECT/PING */
    size_t wcap;
} probe_t;

typedef struct hserver {
    hpool_t *pool;                /* borrowed */
    const wn_conf_server_t *conf; /* borrowed from the config */
    uint32_t idx;
    uint32_t failures;            /* consecutive, counted once per event */
    bool data_failed;             /* the last failure came from real traffic, and no real
                                     request has succeeded since: a good probe does not
                                     clear it (a server may answer probes and fail requests) */
    uint64_t ejected_at_us;       /* wall clock of the last ejection (twemproxy's
                                     server_ejected_at), 0 if never */
    int last_probe_err;           /* 0 or the last probe's error */
    char last_probe_said[WN_PROBE_SAID_MAX]; /* its server's refusal, or "" */
    uint64_t last_probe_ms;       /* loop time the last probe finished; 0: never */
    uint64_t last_fail_ms;        /* when the last failure was counted */
    bool suspected;               /* a worker reported a failure, no verdict sent yet */
    bool verdict_due;             /* suspected, with no probe to decide: tell the workers
                                   * once the reload is sent (health_verdicts_due) */
    bool ejected;
    uint64_t retry_at_ms;         /* ejected: earliest rejoin */
    bool guard_logged;            /* max_ejected_fraction stopped an ejection */
    bool retired;                 /* gone from the config: freed when its handles close */
    uint32_t closes;              /* retired: close callbacks still to come */
    probe_t probe;
    struct { /* dns.c: its name looked up again */
        struct dns_lookup *lookup; /* the one out, or NULL */
        bool named;                /* its host is a name (not an address, not a path) */
        bool failed;      /* the last lookup failed (logged once) */
        bool moved;       /* sa: where a lookup found it, not yet in ctl->conf */
        uint64_t last_ms; /* when the last lookup started or ended */
        struct sockaddr_storage sa;
        /* counted for the stats since the server was added */
        uint64_t lookups;  /* answered, failed ones included */
        uint64_t failures; /* lookups that failed */
        uint64_t moves;    /* answers that moved it to another address */
    } dns;
} hserver_t;

struct hpool {
    control_t *ctl;               /* borrowed */
    const wn_conf_pool_t *conf;   /* borrowed */
    uint32_t idx;
    hserver_t **servers;          /* owned, each owned: probes' handles never move */
    uint32_t nservers;
    wn_ring_t *ring;              /* one reference held: the current ring */
    uint64_t epoch;
    uint64_t last_build_ms;
    bool rebuild_pending;
    uv_timer_t rebuild_timer;     /* a rate-limited rebuild waits here */
    uint64_t converged_epoch;     /* last epoch every worker was seen on */
    uint64_t config_epoch;        /* the epoch of the ring sent with the last reload */
    uint64_t *worker_epoch;       /* owned, [nworkers]: the ring epoch each worker
                                     reported it routes with */
};

#define WN_NSIGNALS 7

struct control {
    uv_loop_t loop;
    uv_signal_t signals[WN_NSIGNALS]; /* signals.c */
    int nsignals;
    uv_async_t wakeup;            /* workers have messages */
    wn_conf_t *conf;              /* one reference: the configuration in force */
    uint64_t gen;                 /* its generation: 0 at start, one more per reload
                                     or address change (dns.c) */
    wn_conf_t *prev_conf;         /* one reference, or NULL: generation gen - 1's, which
                                     reports a worker sent before it took `conf` name */
    wn_worker_t **workers;        /* owned */
    int nworkers;
    hpool_t **pools;              /* owned, each owned: a reload keeps them in place */
    uint32_t npools;
    bool stopping;
    /* Counter blocks: one per worker, then control's own (ejections). Owned;
     * freed only after every worker is joined. */
    wn_stats_block_t **blocks;
    uint32_t nblocks;
    /* During a reload: the block each worker writes once it runs the new
     * configuration; it replaces blocks[i] (folded into control's) when the
     * worker says so. */
    wn_stats_block_t **next_blocks;
    int reload_acks;              /* workers yet to answer the configuration of `gen` */
    uint64_t worker_gen[WN_MAX_WORKERS]; /* the generation each worker runs: one that
                                     could not apply a reload stays behind */
    bool reload_again;            /* SIGHUP came during a reload: one more after it */
    bool reload_failed;           /* a worker could not apply all of it */
    uint64_t reload_start_ms;
    uv_timer_t outbox_timer;      /* retries messages that did not fit a worker's ring */
    /* The stats server (stats_server.c) and what it reports. */
    struct wn_http *http;
    struct sockaddr_storage stats_sa; /* where it listens (stats_salen 0: not yet) */
    uint32_t stats_salen;
    uint64_t start_us;            /* wall clock at start */
    uint64_t listeners_opened;    /* pool listeners ever opened (total_connections counts them) */
    struct wn_stats_cmd_table *cmd_tables; /* owned, [npools] */
    /* The view this turn's memcached `stats` replies share (NULL until the
     * first asks): one per turn, however many a client pipelines. */
    struct wn_stats_view *turn_view;
    /* Heartbeats: every worker answers control's PING from its loop. */
    uv_timer_t heartbeat_timer;
    uint64_t heartbeat_seq;
    /* When each of the last PINGs went out, by seq % WN_HEARTBEATS_KEPT:
     * a worker is late by its oldest unanswered one, so that one sent just
     * after a pause of the whole process (which held every thread) is not
     * counted from before the pause. */
#define WN_HEARTBEATS_KEPT 512
    uint64_t heartbeat_sent_ms[WN_HEARTBEATS_KEPT];
    uint64_t heartbeat_ms;        /* how often */
    /* When control's loop last went to sleep (or last saw it had not
     * slept too long): a sleep past every timer is a stall (stats_server.c). */
    uv_prepare_t asleep_watch;
    uint64_t asleep_ms;
    uint64_t *pong_seq;           /* owned, [nworkers]: last PING each answered */
    uint64_t *pong_ms;            /* owned, [nworkers]: when */
    /* systemd (sd.c) */
    bool sd_notify;               /* NOTIFY_SOCKET is set */
    int notify_fd;                /* datagram socket to it, non-blocking; -1: none */
    struct sockaddr_un notify_addr;
    socklen_t notify_addrlen;   /* 0: NOTIFY_SOCKET is no address walnut can use */
    wn_sd_pending_t pending[2]; /* states the manager's full queue refused, in order */
    uint32_t npending;
    uv_timer_t notify_timer;      /* sends them again; initialised when first needed */
    wn_log_limit_t notify_warned; /* failed sd_notify calls, logged once a minute at most */
    uint64_t watchdog_usec;       /* WATCHDOG_USEC; 0: none */
    uv_timer_t watchdog_timer;
    bool watchdog_held;           /* a worker is late: WATCHDOG=1 withheld (logged once) */
    char last_reload[200];        /* for STATUS=: how the last reload went ("" before one) */
    wn_inherited_t *inherited;    /* owned, [npools], or NULL: no socket activation */
    wn_activated_t activated;     /* every socket systemd handed over, open until exit */
    const char *conf_path;        /* borrowed from the options: what SIGHUP re-reads */
    wn_client_budget_t budget;    /* clients of every worker against the descriptors (fds.c) */
    bool budget_said;             /* its limit was logged */
    uv_timer_t dns_timer;         /* dns.c: names looked up again */
    uv_async_t dns_async;         /* lookup threads answered */
    uint32_t dns_cursor;          /* where the next scan for due lookups starts */
    bool gen_by_dns;              /* the generation `gen` moved servers, no file was read */
    bool readdress_again;         /* a server moved during a reload: one more after it */
    struct wn_ahead *ahead;       /* ahead.c: a reload's names being looked up, or NULL */
    uv_async_t ahead_async;       /* their threads answered */
};

/* control.c: some message to a worker is waiting in an outbox; retry soon. */
void wn_control_outbox_retry(control_t *ctl);

/* signals.c: INT/TERM stop, HUP reloads, TTIN/TTOU change the log level,
 * and (WALNUT_TEST_HOOKS=1 only) USR2 wedges worker 0 for tests. */
void wn_signals_start(control_t *ctl);
void wn_signals_close(control_t *ctl);
/* control.c */
void wn_control_stop(control_t *ctl);
/* Log once when every worker routes `pool` with its newest ring. */
void wn_control_log_convergence(control_t *ctl, uint32_t pool);
/* reload.c */
void wn_control_reload(control_t *ctl);
/* A lookup (dns.c) moved a server: a generation that is the configuration
 * in force with the new addresses (pools.c takes them from the servers'
 * dns.sa); after the reload in flight, if one is. */
void wn_control_readdress(control_t *ctl);
/* A worker runs the reloaded configuration now. */
void wn_control_config_done(control_t *ctl, const wn_msg_t *m);

/* sd.c: systemd's notify protocol, watchdog and socket activation. */
void wn_sd_init(control_t *ctl);
/* Closes what wn_sd_init opened. */
void wn_sd_deinit(control_t *ctl);
void wn_sd_notify(control_t *ctl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* READY=1 or RELOADING=1 (fmt starts with it): sent again, in order, if refused. */
void wn_sd_state(control_t *ctl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* STATUS=: pools, workers, servers ejected, the last reload. */
void wn_sd_status(control_t *ctl);
void wn_sd_watchdog_start(control_t *ctl);
/* At stop: the watchdog's and the notification retry's timers close. */
void wn_sd_stop(control_t *ctl);
uint64_t wn_sd_monotonic_usec(void);
/* Take the sockets systemd handed over and match them to pools (by
 * FileDescriptorName=, else by address); returns how many, or < 0. */
int wn_sd_listen_fds(control_t *ctl);
/* The inherited socket worker `worker` serves pool `pool` on (its own fd),
 * -1 when the pool binds its own, or a negative error. */
int wn_sd_fd_for_worker(const control_t *ctl, uint32_t pool, int worker);

/* stats_server.c: the stats server, and the workers' heartbeat it reports on. */
int wn_control_stats_start(control_t *ctl, const char *addr, uint16_t port);
void wn_control_stats_stop(control_t *ctl);
void wn_control_stats_deinit(control_t *ctl);
/* What the stats report depends on the configuration (ctl->conf): set it up again. */
int wn_control_stats_reconf(control_t *ctl);
/* A worker answered a PING. */
void wn_control_pong(control_t *ctl, const wn_msg_t *m);
/* A worker's FAIL or OK sent under the previous generation (before it took
 * the reload, or by a worker that could not): its pool and server indexes
 * moved to the configuration in force, matched by name. False when that
 * server is not in it (or the message is older): the message is dropped. */
bool wn_control_report_current(const control_t *ctl, wn_msg_t *m);
/* Pool index `pool` of generation gen, in the configuration in force: the
 * pool of that name (gen the previous generation: a worker that asked
 * before it took the reload), UINT32_MAX if there is none or gen is older. */
uint32_t wn_control_pool_current(const control_t *ctl, uint64_t gen, uint32_t pool);
/* Workers that run control's generation (all of them once converged). */
int wn_control_workers_current(const control_t *ctl);
/* A worker asks for the memcached `stats` reply (answered at once, from
 * the turn's view); the turn is over: free that view. */
void wn_control_mc_stats(control_t *ctl, const wn_msg_t *m);
void wn_control_mc_stats_end_turn(control_t *ctl);
/* Every worker answered the last heartbeat within `within_ms`; otherwise
 * the first that did not, in *late (and how long it has been, *late_ms). */
bool wn_control_workers_alive(control_t *ctl, uint64_t within_ms, int *late, uint64_t *late_ms);

/* health.c: decisions and probes */
static inline bool health_probing(const hpool_t *p)
{
    return p->conf->health_check_interval > 0;
}
/* Build p's ring from its servers' state (the epoch moves on); 0 or WN_ENOMEM. */
int health_build_ring(hpool_t *p);
/* The ring of pool config pc over servers[pc->nservers] (their ejected
 * state), with the given epoch; 0 or WN_ENOMEM. Touches no pool. */
int health_ring_make(const wn_conf_pool_t *pc, hserver_t *const *servers, uint64_t epoch,
                     wn_ring_t **out);
/* p takes ring (and its epoch), dropping the one it had. */
void health_ring_install(hpool_t *p, wn_ring_t *ring);
void health_probe_close(hserver_t *s);
/* Probe s after delay_ms, unless a probe is outstanding (its end decides). */
void health_probe_schedule(hserver_t *s, uint64_t delay_ms);
/* A reload turned auto_eject_hosts off: an ejected s is back (the ring the
 * reload installs has it already). */
void health_reload_rejoin(hserver_t *s);
/* A reload lowered max_ejected_fraction below what is out: the servers
 * ejected last come back until it holds, as a fresh start would have kept
 * them in (the ring the reload installs has them already). */
void health_reload_cap(hpool_t *p);
/* A reload turned health checks off: s's probe connection closes (a fresh
 * start opens none), a probe in flight is forgotten, a suspicion ends (no
 * probe will confirm it: health_verdicts_due tells the workers once the new
 * configuration is sent),
 * and an ejected s rejoins when its server_retry_timeout has passed, as
 * twemproxy does. */
void health_probes_off(hserver_t *s);
/* After a new configuration went to the workers: the verdicts health_probes_off
 * left due. */
void health_verdicts_due(control_t *ctl);
/* A worker's message about a server. */
void health_on_message(control_t *ctl, const wn_msg_t *m);

/* dns.c: a failing server's name is looked up this often (ms), or every
 * dns_refresh_interval when that is shorter. */
#define WN_DNS_FAILING_MS 1000u
/* dns.c: servers' names looked up again in the background. At start and
 * after each new generation: the lookups' timer runs while a pool has a
 * server given by name and a dns_refresh_interval. */
void wn_dns_start(control_t *ctl);
/* Its handles (with the pools, before any server opens), and their close:
 * after the servers retired, lookups still out are left to their threads. */
void wn_dns_init(control_t *ctl);
void wn_dns_stop(control_t *ctl);
/* s was just made (its name looked up, or not a name). */
void wn_dns_server_new(control_t *ctl, hserver_t *s);
/* s leaves: a lookup out forgets it (its answer is dropped). */
void wn_dns_server_retire(hserver_t *s);
/* A host name, not an address literal, a unix path or the wildcard. */
bool wn_dns_named(const wn_conf_addr_t *a);
/* A lookup thread running main(arg), detached, with every signal blocked
 * (control's thread takes them all). false when none could be made. */
bool wn_dns_thread(void *(*main)(void *), void *arg);

/* ahead.c: a reload's names looked up on threads before it is prepared. */
typedef struct wn_ahead wn_ahead_t;
typedef void (*wn_ahead_done_cb)(control_t *ctl, wn_conf_t *nc);
void wn_ahead_init(control_t *ctl);
/* An empty batch of names (NULL: out of memory); wn_ahead_add fills it. */
wn_ahead_t *wn_ahead_new(void);
/* a's host is to be looked up (if it is a name, and not yet in b). */
int wn_ahead_add(wn_ahead_t *b, const wn_conf_addr_t *a);
/* A batch not started. NULL is fine. */
void wn_ahead_free(wn_ahead_t *b);
/* Starts looking up b's names for the reload to nc, b taken: 0 when there
 * is none (or no thread could start: the reload asks DNS itself), or how
 * many are being looked up; then nc's reference is held, and done(ctl, nc)
 * gets it back once all have answered. */
int wn_ahead_start(control_t *ctl, wn_ahead_t *b, wn_conf_t *nc, wn_ahead_done_cb done);
/* a looked up ahead: 0 with *sa (and *salen) the first address with a's
 * port, a negative lookup error, or WN_AHEAD_UNASKED. */
#define WN_AHEAD_UNASKED 1
int wn_ahead_answer(const control_t *ctl, const wn_conf_addr_t *a, struct sockaddr_storage *sa,
                    uint32_t *salen);
/* The reload is done with its answers (or walnut stops): threads still out
 * finish alone and free them. */
void wn_ahead_drop(control_t *ctl);
/* At stop: drops a batch still out, closes the async. */
void wn_ahead_close(control_t *ctl);

/* pools.c: the pools and servers themselves */
/* A retired server's close callback came (its last one frees it). */
void health_server_release(hserver_t *s);
int health_init(control_t *ctl);
/* Start probing (after the workers run). */
void health_start(control_t *ctl);
/* Close every probe handle (stop). */
void health_stop(control_t *ctl);
void health_deinit(control_t *ctl);
/* Take the pools and servers of `nc` (which the caller keeps alive, and
 * shares with workers only after this): kept ones keep their health state
 * and address, new ones are looked up (into nc) and start probing, gone
 * ones close; every pool's ring is rebuilt. Nothing changes unless it
 * returns 0; else err says why (a protocol change, a new server's address
 * that does not resolve). `ask_dns`: a kept server that has no address is
 * looked up too, in a pool without lookups in the background (a SIGHUP;
 * never an address change, which must not wait on DNS). */
int health_reload(control_t *ctl, wn_conf_t *nc, bool ask_dns, char *err, size_t errlen);
/* Adds to b every server name health_reload(ctl, nc, true, ...) would look
 * up: servers it adds, and kept ones without an address under ask_dns. */
int health_reload_names(control_t *ctl, const wn_conf_t *nc, wn_ahead_t *b);

#endif
