/*
 * stats_view.h: a plain snapshot of every stat walnut reports, and the
 * renderers that turn it into twemproxy's JSON, the /servers JSON and the
 * Prometheus text exposition. A view is built on the control thread at the
 * moment a stats client asks, by summing the counter blocks (workers' and
 * control's own) with relaxed loads; it owns everything it points to, so a
 * renderer never touches a block, the config or control's health state.
 */
#ifndef WALNUT_STATS_VIEW_H
#define WALNUT_STATS_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "walnut/config.h"
#include "walnut/stats.h"

/*
 * Fields of the twemproxy JSON that twemproxy does not have. They follow
 * twemproxy's own fields at each level (header, pool, server) and come before
 * the nested objects, so a collector that tells pools and servers apart by
 * "value is an object" keeps working. -D prints these tables too.
 */
#define WN_JSON_HEADER_EXTRA_MAP(XX) XX(workers, "worker threads")
/* Per pool: the pool map's fields past twemproxy's six, then these, then one
 * forward_error_<cause> per error cause, then one cmd_<command> per command. */
#define WN_JSON_POOL_EXTRA_MAP(XX)                                                                \
    XX(protocol, "the pool's protocol: memcache or redis")                                        \
    XX(epoch, "epoch of the ring control built last for the pool")
/* Per server, after twemproxy's 13 fields. Filled in from control's health view. */
#define WN_JSON_SERVER_EXTRA_MAP(XX)                                                              \
    XX(ejected, "true while the server is out of the ring")                                       \
    XX(health, "control's verdict: up, suspect or ejected")                                       \
    XX(failures, "consecutive failures control counted")                                          \
    XX(last_probe, "result of control's last probe: ok or the error; none before the first")      \
    XX(last_probe_age_ms, "milliseconds since control's last probe finished; -1 before the first")

/* twemproxy's server_ejected_at sits right after server_connections. */
#define WN_SERVER_EJECTED_AT_AFTER WN_S_server_connections
#define WN_SERVER_EJECTED_AT_TEXT "when the server was last ejected, usec since the epoch; 0: never"

/* Global stats that share a name with a twemproxy header field but mean
 * something else (client connections only) are not repeated in the header. */
bool wn_stats_global_in_json(wn_global_stat_t i);

typedef enum wn_health_state {
    WN_HEALTH_UP = 0,
    WN_HEALTH_SUSPECT, /* a failure was reported, no verdict yet */
    WN_HEALTH_EJECTED,
} wn_health_state_t;

/* "up", "suspect", "ejected". */
const char *wn_health_state_name(wn_health_state_t s);

/* Names of the commands a pool counts: names[i] names cmds[i] of the block's
 * pool stats (NULL entries are skipped). Borrowed; n <= WN_STATS_MAX_CMDS. */
typedef struct wn_stats_cmd_table {
    const char *const *names;
    uint32_t n;
} wn_stats_cmd_table_t;

/* What control counts of a named server's lookups (dns.c). */
typedef enum wn_dns_stat {
    WN_DNS_LOOKUPS = 0, /* answered, failed ones included */
    WN_DNS_FAILURES,    /* lookups that failed */
    WN_DNS_MOVES,       /* answers that moved the server to another address */
    WN_DNS_STAT_COUNT
} wn_dns_stat_t;

typedef struct wn_stats_server_view {
    char *name;    /* owned: twemproxy's server name (the JSON key), valid UTF-8 */
    char *address; /* owned: "host:port" ("[v6]:port") or the unix path */
    /* owned: the address control looked the host up to, which workers
     * connect to ("ip:port", "[ip]:port"; the path), or NULL: none yet */
    char *resolved;
    uint64_t v[WN_SERVER_STAT_COUNT];
    wn_hist_sum_t latency;
    /* Control's health view: zero after build, filled in by the caller. */
    wn_health_state_t state;
    uint32_t failures;      /* consecutive */
    bool ejected;
    uint64_t ejected_at_us; /* twemproxy's server_ejected_at: wall clock usec; 0: never */
    bool probed;            /* a probe has finished at least once */
    int last_probe_err;     /* 0 or a negative error (text: wn_strerror) */
    char last_probe_said[WN_PROBE_SAID_MAX]; /* the server's line that failed it, or "" */
    uint64_t last_probe_age_ms;
    /* Control's lookups of the server's name while walnut runs (dns.c):
     * named false for an address literal or a unix path, which are never
     * looked up (with dns_refresh_interval 0 the counts stay 0). */
    bool dns_named;
    uint64_t dns[WN_DNS_STAT_COUNT];
} wn_stats_server_view_t;

typedef struct wn_stats_pool_view {
    char *name;           /* owned, valid UTF-8 */
    const char *protocol; /* static: "memcache" or "redis" */
    uint64_t v[WN_POOL_STAT_COUNT];
    uint64_t errors[WN_CAUSE_COUNT];
    const char *const *cmd_names; /* borrowed from the caller's table */
    uint32_t ncmds;
    uint64_t cmds[WN_STATS_MAX_CMDS]; /* [ncmds] used */
    wn_hist_sum_t latency;
    /* Filled in by the caller: */
    uint64_t epoch;         /* control's ring epoch */
    uint64_t *worker_epoch; /* owned, [view.nworkers], zeroed */
    wn_stats_server_view_t *servers; /* owned, [nservers], the pool's sorted order */
    uint32_t nservers;
} wn_stats_pool_view_t;

typedef struct wn_stats_process {
    double cpu_seconds;      /* user + system, getrusage */
    double start_time;       /* unix seconds */
    uint64_t resident_bytes; /* /proc/self/statm */
    uint64_t open_fds;       /* /proc/self/fd */
    uint64_t max_fds;        /* RLIMIT_NOFILE soft limit */
    bool have_resident, have_fds, have_max_fds;
} wn_stats_process_t;

typedef struct wn_stats_view {
    const char *service; /* static "walnut" */
    char source[256];    /* gethostname() */
    const char *version; /* static WN_VERSION */
    uint64_t uptime;     /* seconds */
    uint64_t timestamp;  /* unix seconds */
    /*
     * twemproxy's header counts: client + server connections + one per pool
     * listener (a pool counts once however many workers listen on its
     * address with SO_REUSEPORT). total adds the connections ever opened:
     * clients accepted + server connections opened + pool listeners opened
     * (opts.listeners_opened: a reload that removes a pool keeps its count).
     * Server connections are the blocks' server_connections (workers' backend
     * connections; control's probe connections only if control counts them
     * in its own block).
     */
    uint64_t total_connections;
    uint64_t curr_connections;
    uint64_t global[WN_GLOBAL_STAT_COUNT];
    uint32_t nworkers;
    /* Reloads (filled in by control): the configuration generation, whether
     * every worker runs it, how the last reload went ("" before one). */
    uint64_t generation;
    uint64_t client_limit; /* clients the descriptors leave room for; 0: no limit */
    bool generation_converged;
    char last_reload[200];
    wn_stats_pool_view_t *pools; /* owned, [npools], config order */
    uint32_t npools;
    uint32_t *sorted;            /* owned, [npools]: pool indexes in twemproxy's JSON order */
    wn_stats_process_t process;
} wn_stats_view_t;

typedef struct wn_stats_view_opts {
    uint32_t nworkers;  /* worker_epoch arrays get this many entries */
    uint64_t start_us;  /* process start, wall clock usec; 0: read from /proc */
    /* pool listeners ever opened (a reload that removes pools does not take
     * them back: total_connections is a counter); 0: the pools in force */
    uint64_t listeners_opened;
    const wn_stats_cmd_table_t *cmds; /* [conf->npools], or NULL: no per-command counts */
} wn_stats_view_opts_t;

/*
 * Fill *v from conf and the sum of blocks[0..nblocks) (each laid out for conf
 * by wn_stats_block_create; NULL entries are skipped). Counters and gauges
 * sum; histograms merge by addition. Health fields, epochs and worker epochs
 * are left zero for the caller. Returns 0, WN_EINVAL (a block laid out for
 * another config) or WN_ENOMEM; on error *v is left empty (free is still
 * fine). Any thread that may read the blocks; in walnut, control.
 */
int wn_stats_view_build(wn_stats_view_t *v, const wn_conf_t *conf,
                        wn_stats_block_t *const *blocks, size_t nblocks,
                        const wn_stats_view_opts_t *opts);
/* Release what build allocated; leaves *v empty. NULL is fine. */
void wn_stats_view_free(wn_stats_view_t *v);

/* s made valid UTF-8 in place, its length kept: every byte that does not
 * start a valid sequence (a character cut by truncation, say), and every
 * control byte (a line break would start a new line of an sd_notify
 * message), becomes '?'. */
void wn_utf8_scrub(char *s);

/* ---- renderers: malloc'd NUL-terminated text, *len without the NUL; NULL
 * on ENOMEM. Release with free(). Pure functions of the view. ------------- */

/* twemproxy's stats JSON (no trailing newline). */
char *wn_stats_json_render(const wn_stats_view_t *v, size_t *len);
/* GET /servers: control's health view per pool and server, ring epochs. */
char *wn_stats_json_servers(const wn_stats_view_t *v, size_t *len);
/* Prometheus text exposition format 0.0.4. */
char *wn_stats_prom_render(const wn_stats_view_t *v, size_t *len);

#define WN_STATS_JSON_CONTENT_TYPE "application/json"
#define WN_STATS_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
