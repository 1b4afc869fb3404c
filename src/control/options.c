/*
 * control/options.c: the command line, with twemproxy's flags and meanings
 * plus walnut's own (--workers, --locate). Main thread, before threads start;
 * reports errors through the caller's buffer and never exits.
 */
#include "walnut/control.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "walnut/core.h"

enum { OPT_LOCATE = 1000, OPT_CLIENT_MEMORY, OPT_BATCH_WAIT };

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {"test-conf", no_argument, NULL, 't'},
    {"daemonize", no_argument, NULL, 'd'},
    {"describe-stats", no_argument, NULL, 'D'},
    {"verbose", required_argument, NULL, 'v'},
    {"verbosity", required_argument, NULL, 'v'},
    {"output", required_argument, NULL, 'o'},
    {"conf-file", required_argument, NULL, 'c'},
    {"stats-port", required_argument, NULL, 's'},
    {"stats-interval", required_argument, NULL, 'i'},
    {"stats-addr", required_argument, NULL, 'a'},
    {"pid-file", required_argument, NULL, 'p'},
    {"mbuf-size", required_argument, NULL, 'm'},
    {"workers", required_argument, NULL, 'T'},
    {"locate", no_argument, NULL, OPT_LOCATE},
    {"client-memory", required_argument, NULL, OPT_CLIENT_MEMORY},
    {"batch-wait", required_argument, NULL, OPT_BATCH_WAIT},
    {NULL, 0, NULL, 0},
};

static const char short_options[] = "hVtdDv:o:c:s:i:a:p:m:T:";

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return WN_EINVAL;
}

/* "-m/--mbuf-size": the option in both spellings, whichever the user typed. */
static const char *opt_name(int c)
{
    static _Thread_local char buf[48];
    for (const struct option *o = long_options; o->name != NULL; o++) {
        if (o->val == c) {
            if (c < 256)
                snprintf(buf, sizeof(buf), "-%c/--%s", c, o->name);
            else
                snprintf(buf, sizeof(buf), "--%s", o->name);
            return buf;
        }
    }
    snprintf(buf, sizeof(buf), "-%c", c);
    return buf;
}

/* A whole decimal number in [min, max]; anything else is rejected. */
static int parse_num(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (s[0] == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* A size in bytes: decimal digits with an optional K, M or G (powers of
 * 1024, either case), at most 2^50; anything else is rejected. */
static int parse_size(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > (1ull << 50))
            return -1;
    }
    unsigned shift = 0;
    switch (*p) {
    case '\0':
        break;
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    default:
        return -1;
    }
    if (*p != '\0' && p[1] != '\0')
        return -1;
    if (v > ((1ull << 50) >> shift))
        return -1;
    *out = v << shift;
    return 0;
}

void wn_options_usage(FILE *out)
{
    fprintf(out,
            "Usage: walnut [-hVdDt] [-v verbosity level] [-o output file]\n"
            "              [-c conf file] [-s stats port] [-a stats addr]\n"
            "              [-i stats interval] [-p pid file] [-m mbuf size]\n"
            "              [-T workers] [--client-memory bytes] [--batch-wait usec]\n"
            "              [--locate KEY...]\n"
            "\n"
            "Options:\n"
            "  -h, --help             : this help\n"
            "  -V, --version          : show version and exit\n"
            "  -t, --test-conf        : test configuration for syntax errors and exit\n"
            "  -d, --daemonize        : run as a daemon\n"
            "  -D, --describe-stats   : print stats description and exit\n"
            "  -v, --verbose=N        : set logging level (default: %d, min: 0, max: %d)\n"
            "  -o, --output=S         : set logging file (default: stderr)\n"
            "  -c, --conf-file=S      : set configuration file (default: %s)\n"
            "  -s, --stats-port=N     : set stats monitoring port (default: %d)\n"
            "  -a, --stats-addr=S     : set stats monitoring ip (default: %s)\n"
            "  -i, --stats-interval=N : set stats aggregation interval in msec (default: %d)\n"
            "  -p, --pid-file=S       : set pid file (default: off)\n"
            "  -m, --mbuf-size=N      : set size of buffer chunk (default: %d, min: %d, max: %d)\n"
            "  -T, --workers=N        : set number of worker threads (default: one per CPU\n"
            "                           walnut may use, by affinity and cgroup quota; max: %d)\n"
            "      --client-memory=N  : bytes all clients together may hold, at least 1M;\n"
            "                           K, M or G suffix; past it the clients holding the\n"
            "                           most are disconnected; 0: no bound (default: half\n"
            "                           the memory walnut may use)\n"
            "      --batch-wait=N     : after a busy loop turn (one that flushed 8 or more\n"
            "                           clients, or 2 or more connections while 8 or more\n"
            "                           clients wait for replies), a worker sleeps N usec\n"
            "                           (up to 5 N while the waiting clients pipeline and\n"
            "                           their replies are long)\n"
            "                           before it polls again, so what comes meanwhile is\n"
            "                           read and written in one turn: fewer wakeups and\n"
            "                           system calls for it, the servers and the clients;\n"
            "                           adds up to the wait to what comes in it\n"
            "                           (default: 0, off; max: %d)\n"
            "      --locate KEY...    : print the server each KEY lands on in every pool of\n"
            "                           the configuration, then exit\n",
            WN_LOG_NOTICE, WN_LOG_LEVEL_MAX, WN_DEFAULT_CONF_FILE, WN_DEFAULT_STATS_PORT,
            WN_DEFAULT_STATS_ADDR, WN_DEFAULT_STATS_INTERVAL, WN_DEFAULT_MBUF_SIZE,
            WN_MIN_MBUF_SIZE, WN_MAX_MBUF_SIZE, WN_MAX_WORKERS, WN_MAX_BATCH_WAIT_US);
}

/* As nutcracker weighs them, whatever their order: -h, then -V, then -D,
 * then -t (-h and -V print the stats description too when -D is given). */
static void take_action(wn_options_t *opts, wn_action_t a)
{
    static const wn_action_t rank[] = {WN_ACTION_TEST_CONF, WN_ACTION_DESCRIBE_STATS,
                                       WN_ACTION_VERSION, WN_ACTION_HELP};
    int have = -1, want = -1;
    for (int i = 0; i < (int)(sizeof(rank) / sizeof(rank[0])); i++) {
        if (rank[i] == opts->action)
            have = i;
        if (rank[i] == a)
            want = i;
    }
    if (want > have)
        opts->action = a;
}

int wn_options_parse(int argc, char **argv, wn_options_t *opts, char *err, size_t errlen)
{
    *opts = (wn_options_t){
        .action = WN_ACTION_RUN,
        .verbosity = WN_LOG_NOTICE,
        .conf_file = WN_DEFAULT_CONF_FILE,
        .stats_port = WN_DEFAULT_STATS_PORT,
        .stats_addr = WN_DEFAULT_STATS_ADDR,
        .stats_interval = WN_DEFAULT_STATS_INTERVAL,
        .mbuf_size = WN_DEFAULT_MBUF_SIZE,
    };
    bool locate = false;
    long v;

    optind = 0; /* 0 makes glibc reinitialise, so parsing twice works (tests) */
    opterr = 0; /* we word the errors ourselves */
    for (;;) {
        int c = getopt_long(argc, argv, short_options, long_options, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'h':
            take_action(opts, WN_ACTION_HELP);
            break;
        case 'V':
            take_action(opts, WN_ACTION_VERSION);
            break;
        case 't':
            take_action(opts, WN_ACTION_TEST_CONF);
            break;
        case 'd':
            opts->daemonize = true;
            break;
        case 'D':
            take_action(opts, WN_ACTION_DESCRIBE_STATS);
            opts->describe_stats = true;
            break;
        case 'v':
            /* above the most verbose level: that level, as twemproxy clamps it */
            if (parse_num(optarg, 0, LONG_MAX, &v) < 0)
                return fail(err, errlen, "option %s requires a number from 0 to %d, not '%s'",
                            opt_name('v'), WN_LOG_LEVEL_MAX, optarg);
            opts->verbosity = (int)WN_MIN(v, (long)WN_LOG_LEVEL_MAX);
            break;
        case 'o':
            opts->log_file = optarg;
            break;
        case 'c':
            opts->conf_file = optarg;
            break;
        case 's':
            if (parse_num(optarg, 1, 65535, &v) < 0)
                return fail(err, errlen, "option %s requires a port from 1 to 65535, not '%s'",
                            opt_name('s'), optarg);
            opts->stats_port = (uint16_t)v;
            break;
        case 'i':
            /* accepted as twemproxy accepts it (0 too); stats are always current */
            if (parse_num(optarg, 0, INT_MAX, &v) < 0)
                return fail(err, errlen, "option %s requires a number of milliseconds, not '%s'",
                            opt_name('i'), optarg);
            opts->stats_interval = (int)v;
            break;
        case 'a':
            if (optarg[0] == '\0') /* the stats server could not listen there */
                return fail(err, errlen, "option %s requires an address, not ''", opt_name('a'));
            opts->stats_addr = optarg;
            break;
        case 'p':
            opts->pid_file = optarg;
            break;
        case 'm':
            if (parse_num(optarg, WN_MIN_MBUF_SIZE, WN_MAX_MBUF_SIZE, &v) < 0)
                return fail(err, errlen, "option %s requires a size from %d to %d bytes, not '%s'",
                            opt_name('m'), WN_MIN_MBUF_SIZE, WN_MAX_MBUF_SIZE, optarg);
            opts->mbuf_size = (size_t)v;
            break;
        case 'T':
            if (parse_num(optarg, 1, WN_MAX_WORKERS, &v) < 0)
                return fail(err, errlen, "option %s requires a number from 1 to %d, not '%s'",
                            opt_name('T'), WN_MAX_WORKERS, optarg);
            opts->workers = (int)v;
            break;
        case OPT_LOCATE:
            locate = true;
            break;
        case OPT_CLIENT_MEMORY:
            if (parse_size(optarg, &opts->client_memory) < 0 ||
                (opts->client_memory > 0 && opts->client_memory < WN_MIN_CLIENT_MEMORY))
                return fail(err, errlen,
                            "option %s requires a size in bytes (K, M or G for 1024, 1024^2 or "
                            "1024^3 of them) of at least %u (1M), or 0 for no bound, not '%s'",
                            opt_name(OPT_CLIENT_MEMORY), WN_MIN_CLIENT_MEMORY, optarg);
            opts->client_memory_set = true;
            break;
        case OPT_BATCH_WAIT:
            if (parse_num(optarg, 0, WN_MAX_BATCH_WAIT_US, &v) < 0)
                return fail(err, errlen, "option %s requires microseconds from 0 to %d, not '%s'",
                            opt_name(OPT_BATCH_WAIT), WN_MAX_BATCH_WAIT_US, optarg);
            opts->batch_wait_us = (int)v;
            break;
        case ':':
        case '?':
        default:
            /* A flag given a value (--test-conf=1): getopt names the flag. */
            if (optopt == OPT_LOCATE)
                return fail(err, errlen, "option --locate takes no value (the KEYs follow it)");
            if (optopt > 0 && optopt < 256 && strchr(short_options, optopt) != NULL &&
                strchr(short_options, optopt)[1] != ':')
                return fail(err, errlen, "option %s takes no value", opt_name(optopt));
            if (optopt > 0 && optopt < 256 && strchr(short_options, optopt) != NULL)
                return fail(err, errlen, "option %s requires a value", opt_name(optopt));
            if (optopt != 0)
                return fail(err, errlen, "unknown option -%c (see walnut -h)", optopt);
            return fail(err, errlen, "unknown option '%s' (see walnut -h)", argv[optind - 1]);
        }
    }

    if (locate) {
        if (optind >= argc)
            return fail(err, errlen, "option --locate requires at least one KEY");
        if (opts->action == WN_ACTION_RUN)
            opts->action = WN_ACTION_LOCATE;
        opts->locate_keys = argv + optind;
        opts->nlocate_keys = argc - optind;
    } else if (optind < argc) {
        return fail(err, errlen, "unexpected argument '%s' (see walnut -h)", argv[optind]);
    }
    return 0;
}

/* path made absolute against cwd, into *owned (malloc'ed); NULL paths and
 * absolute ones are left as they are. */
static int absolute(const char **path, char **owned, const char *cwd)
{
    if (*path == NULL || (*path)[0] == '/')
        return 0;
    size_t n = strlen(cwd) + 1 + strlen(*path) + 1;
    char *abs = malloc(n);
    if (abs == NULL)
        return WN_ENOMEM;
    snprintf(abs, n, "%s%s%s", cwd, cwd[strlen(cwd) - 1] == '/' ? "" : "/", *path);
    *owned = abs;
    *path = abs;
    return 0;
}

int wn_options_absolute_paths(wn_options_t *opts)
{
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return -errno;
    int rc = absolute(&opts->conf_file, &opts->owned[0], cwd);
    if (rc == 0)
        rc = absolute(&opts->pid_file, &opts->owned[1], cwd);
    if (rc == 0 && wn_log_names_file(opts->log_file))
        rc = absolute(&opts->log_file, &opts->owned[2], cwd);
    return rc;
}

void wn_options_deinit(wn_options_t *opts)
{
    for (size_t i = 0; i < sizeof(opts->owned) / sizeof(opts->owned[0]); i++) {
        free(opts->owned[i]);
        opts->owned[i] = NULL;
    }
}
