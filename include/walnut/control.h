/*
 * control: the process's command line and start-up, and (as it grows) the
 * control thread: health, ejection, ring epochs, stats, signals, reload.
 * Options are parsed on the main thread before any other thread starts.
 */
#ifndef WALNUT_CONTROL_H
#define WALNUT_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "walnut/config.h"

/* twemproxy's defaults for its flags. */
#define WN_DEFAULT_CONF_FILE "/etc/walnut/walnut.yml"
#define WN_DEFAULT_STATS_PORT 22222
#define WN_DEFAULT_STATS_ADDR "0.0.0.0"
#define WN_DEFAULT_STATS_INTERVAL 30000 /* ms */
#define WN_DEFAULT_MBUF_SIZE 16384
#define WN_MIN_MBUF_SIZE 512
#define WN_MAX_MBUF_SIZE 16777216
#define WN_MAX_WORKERS 256
#define WN_MIN_CLIENT_MEMORY (1u << 20) /* --client-memory, when not 0 */
#define WN_MAX_BATCH_WAIT_US 1000       /* --batch-wait */

typedef enum wn_action {
    WN_ACTION_RUN,
    WN_ACTION_HELP,
    WN_ACTION_VERSION,
    WN_ACTION_TEST_CONF,
    WN_ACTION_DESCRIBE_STATS,
    WN_ACTION_LOCATE,
} wn_action_t;

typedef struct wn_options {
    wn_action_t action;  /* -h, then -V, -D, -t, whatever their order */
    bool describe_stats; /* -D given (with -h or -V too: they print it after) */
    bool daemonize;
    int verbosity;          /* -v: log level 0..11 */
    const char *log_file;   /* -o: borrowed from argv; NULL = stderr */
    const char *conf_file;  /* -c: borrowed from argv or the default */
    uint16_t stats_port;    /* -s */
    const char *stats_addr; /* -a */
    int stats_interval;     /* -i, ms */
    const char *pid_file;   /* -p; NULL = none */
    size_t mbuf_size;       /* -m: buffer chunk size */
    int workers;            /* -T/--workers: 0 = one per online CPU */
    /* --client-memory: bytes every client together may hold (requests unsent,
     * replies unwritten), split evenly between the workers; 0: no bound */
    uint64_t client_memory;
    bool client_memory_set; /* given; otherwise half the memory walnut may use */
    int batch_wait_us;      /* --batch-wait: a worker's sleep after a busy turn */
    char **locate_keys;     /* --locate: borrowed from argv */
    int nlocate_keys;
    char *owned[3]; /* owned: paths made absolute by wn_options_absolute_paths */
} wn_options_t;

/*
 * Parse argv into *opts (defaults first). Returns 0, or WN_EINVAL with a line
 * in err naming the option and what it needs. Does not print or exit.
 */
int wn_options_parse(int argc, char **argv, wn_options_t *opts, char *err, size_t errlen);
void wn_options_usage(FILE *out);
/* Make relative -c, -p and -o paths absolute against the current directory
 * (a daemon chdirs to /, and reload, the pid file and the log reopened on
 * SIGHUP must still find them). 0 or a negative error; on error some may
 * be done. Free with wn_options_deinit. */
int wn_options_absolute_paths(wn_options_t *opts);
/* Free what wn_options_absolute_paths made; opts' paths then dangle. */
void wn_options_deinit(wn_options_t *opts);

/* Print, for each key and each pool of `conf`, the server the key lands on:
 * "pool<TAB>key<TAB>server-name<TAB>address". Returns 0 or a negative error. */
int wn_locate_print(const wn_conf_t *conf, char *const *keys, int nkeys, FILE *out);

/*
 * Run the proxy for `conf` until told to stop. Main thread; returns 0 on a
 * clean stop or a negative error. (Until the worker runtime lands this only
 * reports the pools it would serve and returns WN_EINVAL.)
 */
int wn_control_run(wn_conf_t *conf, const wn_options_t *opts);
/* -t's checks beyond the file (as nutcracker -t): every TCP listen address
 * looks up, no two pools listen on one, and none on the stats server's (-a,
 * -s; NULL or port 0: not checked). 0, or a negative error with err saying
 * which pool. Blocking (DNS). */
int wn_control_check_listen(wn_conf_t *conf, const char *stats_addr, uint16_t stats_port, char *err,
                            size_t errlen);

/* Print the stats walnut reports with their descriptions (-D). */
void wn_stats_describe(FILE *out);

#endif
