/*
 * control/stats_view.c: builds a stats view, the snapshot every renderer
 * reads, by summing counter blocks at the moment of a request, and reads the
 * process's own metrics from the kernel. Control thread (any thread that
 * may read the blocks); it never writes a block and never blocks on I/O
 * beyond reading a few /proc files.
 */
#include "stats_view.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "walnut/core.h"

bool wn_stats_global_in_json(wn_global_stat_t i)
{
    return i != WN_G_curr_connections && i != WN_G_total_connections;
}

const char *wn_health_state_name(wn_health_state_t s)
{
    switch (s) {
    case WN_HEALTH_UP:
        return "up";
    case WN_HEALTH_SUSPECT:
        return "suspect";
    case WN_HEALTH_EJECTED:
        return "ejected";
    }
    return "unknown";
}

/* ---- names ---------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    /* Overlong forms, surrogates and past U+10FFFF are not UTF-8. */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/*
 * A copy of s that is valid UTF-8: every byte that does not start a valid
 * sequence becomes U+FFFD. JSON and the exposition format both require UTF-8,
 * and a name is shown, not parsed, so a replaced byte loses nothing.
 */
static char *utf8_dup(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n * 3 + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq((const unsigned char *)s + i, n - i);
        if (len == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        }
    }
    out[o] = '\0';
    return out;
}

void wn_utf8_scrub(char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq((const unsigned char *)s + i, n - i);
        if (len == 0 || (unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
            s[i++] = '?';
        } else {
            i += len;
        }
    }
}

static char *address_dup(const wn_conf_addr_t *a)
{
    char buf[1100];
    if (a->is_unix)
        snprintf(buf, sizeof(buf), "%s", a->host);
    else if (strchr(a->host, ':') != NULL)
        snprintf(buf, sizeof(buf), "[%s]:%u", a->host, (unsigned)a->port);
    else
        snprintf(buf, sizeof(buf), "%s:%u", a->host, (unsigned)a->port);
    return utf8_dup(buf);
}

static char *resolved_dup(const wn_conf_server_t *sc)
{
    if (sc->addr.is_unix)
        return utf8_dup(sc->addr.host);
    char buf[128];
    wn_sockaddr_format(&sc->sa, buf, sizeof(buf));
    return strdup(buf);
}

/* twemproxy's pool order in its JSON: shorter name first, then bytewise.
 * qsort_r (glibc) so that nothing global holds the config. */
static int pool_order(const void *a, const void *b, void *arg)
{
    const wn_conf_t *conf = arg;
    const char *na = conf->pools[*(const uint32_t *)a].name;
    const char *nb = conf->pools[*(const uint32_t *)b].name;
    size_t la = strlen(na), lb = strlen(nb);
    if (la != lb)
        return la < lb ? -1 : 1;
    return memcmp(na, nb, la);
}

/* ---- the process ---------------------------------------------------------- */

static int read_small_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0 ? 0 : -1;
}

/* Process start in unix seconds from /proc: starttime (ticks since boot)
 * in /proc/self/stat plus the boot time in /proc/stat. 0 if unreadable. */
static double proc_start_time(void)
{
    char buf[4096];
    if (read_small_file("/proc/self/stat", buf, sizeof(buf)) < 0)
        return 0;
    /* The command name may hold spaces and parentheses: skip to the last ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return 0;
    p++;
    unsigned long long ticks = 0;
    /* Fields 3..21 precede starttime (22). */
    for (int field = 3; field <= 22; field++) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            return 0;
        if (field == 22)
            ticks = strtoull(p, NULL, 10);
        while (*p != ' ' && *p != '\0')
            p++;
    }
    char stat[8192];
    if (read_small_file("/proc/stat", stat, sizeof(stat)) < 0)
        return 0;
    char *bt = strstr(stat, "\nbtime ");
    long hz = sysconf(_SC_CLK_TCK);
    if (bt == NULL || hz <= 0)
        return 0;
    unsigned long long btime = strtoull(bt + 7, NULL, 10);
    return (double)btime + (double)ticks / (double)hz;
}

static void read_process(wn_stats_process_t *pr, uint64_t start_us)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        pr->cpu_seconds = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                          (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    pr->start_time = start_us != 0 ? (double)start_us / 1e6 : proc_start_time();

    char buf[256];
    unsigned long long size, resident;
    long page = sysconf(_SC_PAGESIZE);
    if (read_small_file("/proc/self/statm", buf, sizeof(buf)) == 0 &&
        sscanf(buf, "%llu %llu", &size, &resident) == 2 && page > 0) {
        pr->resident_bytes = (uint64_t)resident * (uint64_t)page;
        pr->have_resident = true;
    }

    /* open + fdopendir rather than opendir: the descriptor number may have
     * been a worker's socket a moment ago, and ThreadSanitizer only sees it
     * start a new life through open(). */
    int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (d == NULL && dfd >= 0)
        close(dfd);
    if (d != NULL) {
        int self = dirfd(d);
        uint64_t n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            /* The directory being read is not one of the process's own. */
            if (atoi(e->d_name) == self)
                continue;
            n++;
        }
        closedir(d);
        pr->open_fds = n;
        pr->have_fds = true;
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        pr->max_fds = (uint64_t)rl.rlim_cur;
        pr->have_max_fds = true;
    }
}

/* ---- summing -------------------------------------------------------------- */

static bool block_fits(const wn_stats_block_t *b, const wn_conf_t *conf)
{
    if (b->conf == conf)
        return true;
    if (b->conf != NULL || b->npools != conf->npools)
        return false;
    uint32_t base = 0;
    for (uint32_t p = 0; p < conf->npools; p++) {
        if (b->server_base[p] != base)
            return false;
        base += conf->pools[p].nservers;
    }
    return b->nservers == base;
}

static void sum_block(wn_stats_view_t *v, wn_stats_block_t *b)
{
    for (unsigned i = 0; i < WN_GLOBAL_STAT_COUNT; i++)
        v->global[i] += wn_stat_get(&b->global[i]);
    for (uint32_t p = 0; p < v->npools; p++) {
        wn_stats_pool_view_t *pv = &v->pools[p];
        const wn_pool_stats_t *ps = &b->pools[p];
        for (unsigned i = 0; i < WN_POOL_STAT_COUNT; i++)
            pv->v[i] += wn_stat_get(&ps->v[i]);
        for (unsigned i = 0; i < WN_CAUSE_COUNT; i++)
            pv->errors[i] += wn_stat_get(&ps->errors[i]);
        for (uint32_t i = 0; i < pv->ncmds; i++)
            pv->cmds[i] += wn_stat_get(&ps->cmds[i]);
        wn_hist_add(&pv->latency, &ps->latency);
        for (uint32_t s = 0; s < pv->nservers; s++) {
            wn_stats_server_view_t *sv = &pv->servers[s];
            const wn_server_stats_t *ss = wn_stats_server(b, p, s);
            for (unsigned i = 0; i < WN_SERVER_STAT_COUNT; i++)
                sv->v[i] += wn_stat_get(&ss->v[i]);
            wn_hist_add(&sv->latency, &ss->latency);
        }
    }
}

int wn_stats_view_build(wn_stats_view_t *v, const wn_conf_t *conf,
                        wn_stats_block_t *const *blocks, size_t nblocks,
                        const wn_stats_view_opts_t *opts)
{
    static const wn_stats_view_opts_t no_opts;
    if (opts == NULL)
        opts = &no_opts;
    memset(v, 0, sizeof(*v));
    /* Blocks laid out for another configuration (a reload under way) are
     * folded by name into one laid out for this one. */
    wn_stats_block_t *folded = NULL;
    for (size_t i = 0; i < nblocks; i++) {
        if (blocks[i] == NULL || block_fits(blocks[i], conf))
            continue;
        if (folded == NULL && (folded = wn_stats_block_create((wn_conf_t *)conf)) == NULL)
            return WN_ENOMEM;
        wn_stats_block_fold(folded, blocks[i]);
    }

    v->service = "walnut";
    v->version = WN_VERSION;
    if (gethostname(v->source, sizeof(v->source)) != 0)
        snprintf(v->source, sizeof(v->source), "unknown");
    v->source[sizeof(v->source) - 1] = '\0';
    /* Host names are ASCII; anything else would make the JSON invalid. */
    for (char *p = v->source; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    v->nworkers = opts->nworkers;

    uint32_t np = conf->npools;
    v->pools = calloc(np ? np : 1, sizeof(*v->pools));
    v->sorted = calloc(np ? np : 1, sizeof(*v->sorted));
    if (v->pools == NULL || v->sorted == NULL)
        goto nomem;
    v->npools = np;
    for (uint32_t p = 0; p < np; p++) {
        const wn_conf_pool_t *cp = &conf->pools[p];
        wn_stats_pool_view_t *pv = &v->pools[p];
        pv->protocol = cp->redis ? "redis" : "memcache";
        if (opts->cmds != NULL) {
            pv->cmd_names = opts->cmds[p].names;
            pv->ncmds = WN_MIN(opts->cmds[p].n, (uint32_t)WN_STATS_MAX_CMDS);
        }
        pv->name = utf8_dup(cp->name);
        pv->worker_epoch = calloc(v->nworkers ? v->nworkers : 1, sizeof(*pv->worker_epoch));
        pv->servers = calloc(cp->nservers ? cp->nservers : 1, sizeof(*pv->servers));
        if (pv->name == NULL || pv->worker_epoch == NULL || pv->servers == NULL)
            goto nomem;
        pv->nservers = cp->nservers;
        for (uint32_t s = 0; s < cp->nservers; s++) {
            pv->servers[s].name = utf8_dup(cp->servers[s].name);
            pv->servers[s].address = address_dup(&cp->servers[s].addr);
            if (pv->servers[s].name == NULL || pv->servers[s].address == NULL)
                goto nomem;
            if (cp->servers[s].addr.is_unix || cp->servers[s].has_sa) {
                pv->servers[s].resolved = resolved_dup(&cp->servers[s]);
                if (pv->servers[s].resolved == NULL)
                    goto nomem;
            }
        }
        v->sorted[p] = p;
    }
    qsort_r(v->sorted, np, sizeof(*v->sorted), pool_order, (void *)conf);

    for (size_t i = 0; i < nblocks; i++)
        if (blocks[i] != NULL && block_fits(blocks[i], conf))
            sum_block(v, blocks[i]);
    if (folded != NULL)
        sum_block(v, folded);
    wn_stats_block_destroy(folded);
    folded = NULL;

    /* The header, as twemproxy counts it (see stats_view.h). */
    uint64_t server_conns = 0;
    for (uint32_t p = 0; p < np; p++)
        for (uint32_t s = 0; s < v->pools[p].nservers; s++)
            server_conns += v->pools[p].servers[s].v[WN_S_server_connections];
    v->curr_connections = v->global[WN_G_curr_connections] + server_conns + np;
    v->total_connections = v->global[WN_G_total_connections] +
                           v->global[WN_G_total_server_connections] +
                           (opts->listeners_opened != 0 ? opts->listeners_opened : np);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t now_us = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
    v->timestamp = (uint64_t)tv.tv_sec;
    read_process(&v->process, opts->start_us);
    uint64_t start_us = opts->start_us != 0 ? opts->start_us
                                            : (uint64_t)(v->process.start_time * 1e6);
    v->uptime = start_us != 0 && now_us > start_us ? (now_us - start_us) / 1000000u : 0;
    return 0;

nomem:
    wn_stats_block_destroy(folded);
    wn_stats_view_free(v);
    return WN_ENOMEM;
}

void wn_stats_view_free(wn_stats_view_t *v)
{
    if (v == NULL)
        return;
    if (v->pools != NULL) {
        /* After a failed build npools may be 0 with pools partly filled:
         * calloc'd, so every pointer not yet set is NULL. */
        uint32_t np = v->npools;
        for (uint32_t p = 0; p < np; p++) {
            wn_stats_pool_view_t *pv = &v->pools[p];
            if (pv->servers != NULL)
                for (uint32_t s = 0; s < pv->nservers; s++) {
                    free(pv->servers[s].name);
                    free(pv->servers[s].address);
                    free(pv->servers[s].resolved);
                }
            free(pv->servers);
            free(pv->worker_epoch);
            free(pv->name);
        }
    }
    free(v->pools);
    free(v->sorted);
    memset(v, 0, sizeof(*v));
}
