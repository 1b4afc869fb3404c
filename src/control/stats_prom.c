/*
 * control/stats_prom.c: the Prometheus text exposition (format 0.0.4) of a
 * stats view, written by hand (Debian has no C client library). Every family
 * gets # HELP and # TYPE; counters end in _total, gauges do not; units are
 * base units (_bytes, _seconds); latencies are Prometheus histograms with
 * cumulative buckets. Pure function of the view; any thread.
 */
#include "stats_view.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"

/* ---- a growing text buffer ---------------------------------------------- */

typedef struct sbuf {
    char *p;    /* owned */
    size_t len;
    size_t cap;
    bool oom;   /* an append failed: the text is incomplete */
} sbuf_t;

static bool reserve(sbuf_t *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void put(sbuf_t *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(sbuf_t *b, const char *s)
{
    put(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void putf(sbuf_t *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof(tmp)) {
        put(b, tmp, (size_t)n);
        return;
    }
    if (!reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A label value: backslash, double quote and line feed are escaped. */
static void put_label_value(sbuf_t *b, const char *s)
{
    for (const char *r = s; *r != '\0'; r++) {
        switch (*r) {
        case '\\':
            put(b, "\\\\", 2);
            break;
        case '"':
            put(b, "\\\"", 2);
            break;
        case '\n':
            put(b, "\\n", 2);
            break;
        default:
            put(b, r, 1);
        }
    }
}

/* HELP text: backslash and line feed are escaped. */
static void put_help_text(sbuf_t *b, const char *s)
{
    for (const char *r = s; *r != '\0'; r++) {
        if (*r == '\\')
            put(b, "\\\\", 2);
        else if (*r == '\n')
            put(b, "\\n", 2);
        else
            put(b, r, 1);
    }
}

/* Microseconds as exact decimal seconds ("0.00001", "2.5", "10"): no
 * floating point, so bucket bounds print the same everywhere. */
static size_t fmt_seconds_us(char *out, size_t size, uint64_t us)
{
    uint64_t frac = us % 1000000u;
    int n = snprintf(out, size, "%llu", (unsigned long long)(us / 1000000u));
    if (frac != 0) {
        n += snprintf(out + n, size - (size_t)n, ".%06llu", (unsigned long long)frac);
        while (out[n - 1] == '0')
            n--;
        out[n] = '\0';
    }
    return (size_t)n;
}

static void put_seconds_us(sbuf_t *b, uint64_t us)
{
    char tmp[48];
    put(b, tmp, fmt_seconds_us(tmp, sizeof(tmp), us));
}

static void family(sbuf_t *b, const char *name, const char *type, const char *help)
{
    putf(b, "# HELP %s ", name);
    put_help_text(b, help);
    putf(b, "\n# TYPE %s %s\n", name, type);
}

/* Labels: up to three (name, value) pairs; NULL names end the list. */
typedef struct labels {
    const char *k[3];
    const char *v[3];
} labels_t;

static void put_labels(sbuf_t *b, const labels_t *l, const char *extra_k, const char *extra_v)
{
    bool any = false;
    for (int i = 0; i < 3 && l != NULL && l->k[i] != NULL; i++) {
        put(b, any ? "," : "{", 1);
        putf(b, "%s=\"", l->k[i]);
        put_label_value(b, l->v[i]);
        put(b, "\"", 1);
        any = true;
    }
    if (extra_k != NULL) {
        put(b, any ? "," : "{", 1);
        putf(b, "%s=\"%s\"", extra_k, extra_v);
        any = true;
    }
    if (any)
        put(b, "}", 1);
}

static void sample_u64(sbuf_t *b, const char *name, const labels_t *l, uint64_t x)
{
    puts_(b, name);
    put_labels(b, l, NULL, NULL);
    putf(b, " %llu\n", (unsigned long long)x);
}

static void sample_us(sbuf_t *b, const char *name, const labels_t *l, uint64_t us)
{
    puts_(b, name);
    put_labels(b, l, NULL, NULL);
    put(b, " ", 1);
    put_seconds_us(b, us);
    put(b, "\n", 1);
}

static void sample_double(sbuf_t *b, const char *name, const labels_t *l, double x)
{
    puts_(b, name);
    put_labels(b, l, NULL, NULL);
    putf(b, " %.6f\n", x);
}

/* One histogram's samples: cumulative buckets with le in seconds, +Inf,
 * then _sum (seconds) and _count. */
static void histogram(sbuf_t *b, const char *name, const labels_t *l, const wn_hist_sum_t *h)
{
    uint64_t cum = 0;
    char le[48];
    for (unsigned i = 0; i < WN_HIST_BUCKETS; i++) {
        cum += h->bucket[i];
        if (i + 1 < WN_HIST_BUCKETS)
            fmt_seconds_us(le, sizeof(le), wn_hist_bounds_us[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        putf(b, "%s_bucket", name);
        put_labels(b, l, "le", le);
        putf(b, " %llu\n", (unsigned long long)cum);
    }
    putf(b, "%s_sum", name);
    put_labels(b, l, NULL, NULL);
    put(b, " ", 1);
    put_seconds_us(b, h->sum_us);
    putf(b, "\n%s_count", name);
    put_labels(b, l, NULL, NULL);
    /* The buckets are the count: a reader racing the writer may see
     * count and buckets one observation apart; +Inf must equal _count. */
    putf(b, " %llu\n", (unsigned long long)cum);
}

/* ---- names ----------------------------------------------------------------- */

/* Prometheus names of the stats in stats.h's maps. A stat without an entry
 * here gets walnut_<scope>_<name>, with _total for counters. */
static const char *const global_names[WN_GLOBAL_STAT_COUNT] = {
    [WN_G_curr_connections] = "walnut_client_connections",
    [WN_G_total_connections] = "walnut_client_connections_accepted_total",
    [WN_G_rejected_connections] = "walnut_client_connections_rejected_total",
    [WN_G_bytes_read] = "walnut_read_bytes_total",
    [WN_G_bytes_written] = "walnut_written_bytes_total",
    [WN_G_total_server_connections] = "walnut_server_connections_opened_total",
    [WN_G_batch_wait_usec] = "walnut_batch_wait_seconds_total", /* in seconds (sample_us) */
};
static const char *const pool_names[WN_POOL_STAT_COUNT] = {
    [WN_P_forward_error] = "walnut_pool_forward_errors_total",
};

static void stat_name(char *out, size_t size, const char *scope, const char *override,
                      const wn_stat_desc_t *d)
{
    if (override != NULL) {
        snprintf(out, size, "%s", override);
        return;
    }
    const char *n = d->name;
    /* Server stats named server_* drop the prefix the scope already says. */
    if (strcmp(scope, "server") == 0 && strncmp(n, "server_", 7) == 0)
        n += 7;
    snprintf(out, size, "walnut_%s%s%s%s", scope, scope[0] ? "_" : "", n,
             d->kind == WN_STAT_COUNTER ? "_total" : "");
}

static const char *kind_type(wn_stat_kind_t k)
{
    return k == WN_STAT_COUNTER ? "counter" : "gauge";
}

static labels_t pool_labels(const wn_stats_pool_view_t *p)
{
    labels_t l = {.k = {"pool"}, .v = {p->name}};
    return l;
}

static labels_t server_labels(const wn_stats_pool_view_t *p, const wn_stats_server_view_t *s)
{
    labels_t l = {.k = {"pool", "server"}, .v = {p->name, s->name}};
    return l;
}

/* ---- families --------------------------------------------------------------- */

static void render_header(sbuf_t *b, const wn_stats_view_t *v)
{
    labels_t l = {.k = {"version"}, .v = {v->version}};
    family(b, "walnut_build_info", "gauge", "walnut's version, as a label; always 1");
    sample_u64(b, "walnut_build_info", &l, 1);
    family(b, "walnut_workers", "gauge", "worker threads");
    sample_u64(b, "walnut_workers", NULL, v->nworkers);
    family(b, "walnut_config_generation", "gauge",
           "configuration generation: 0 at start, one more per applied reload or server "
           "address change");
    sample_u64(b, "walnut_config_generation", NULL, v->generation);
    family(b, "walnut_client_connections_limit", "gauge",
           "client connections the descriptor limit leaves room for beside walnut's own "
           "(server connections, listeners, probes, stats); 0: not limited (no descriptor "
           "limit, or one too low to keep any room: the log warns)");
    sample_u64(b, "walnut_client_connections_limit", NULL, v->client_limit);
    family(b, "walnut_uptime_seconds", "gauge", "seconds since walnut started");
    sample_u64(b, "walnut_uptime_seconds", NULL, v->uptime);
    family(b, "walnut_connections", "gauge",
           "open connections as twemproxy's curr_connections counts them: clients, servers "
           "and one per pool listener");
    sample_u64(b, "walnut_connections", NULL, v->curr_connections);
    family(b, "walnut_connections_opened_total", "counter",
           "connections ever opened as twemproxy's total_connections counts them: clients "
           "accepted, server connections opened and one per pool listener");
    sample_u64(b, "walnut_connections_opened_total", NULL, v->total_connections);

    char name[160];
    for (unsigned i = 0; i < WN_GLOBAL_STAT_COUNT; i++) {
        const wn_stat_desc_t *d = &wn_global_stat_desc[i];
        stat_name(name, sizeof(name), "", global_names[i], d);
        family(b, name, kind_type(d->kind), d->text);
        if (i == WN_G_batch_wait_usec)
            sample_us(b, name, NULL, v->global[i]);
        else
            sample_u64(b, name, NULL, v->global[i]);
    }
}

static void render_pools(sbuf_t *b, const wn_stats_view_t *v)
{
    char name[160];
    if (v->npools == 0)
        return;

    family(b, "walnut_pool_info", "gauge", "a pool and its protocol, as labels; always 1");
    for (uint32_t p = 0; p < v->npools; p++) {
        labels_t l = {.k = {"pool", "protocol"}, .v = {v->pools[p].name, v->pools[p].protocol}};
        sample_u64(b, "walnut_pool_info", &l, 1);
    }
    for (unsigned i = 0; i < WN_POOL_STAT_COUNT; i++) {
        const wn_stat_desc_t *d = &wn_pool_stat_desc[i];
        stat_name(name, sizeof(name), "pool", pool_names[i], d);
        family(b, name, kind_type(d->kind), d->text);
        for (uint32_t p = 0; p < v->npools; p++) {
            labels_t l = pool_labels(&v->pools[p]);
            sample_u64(b, name, &l, v->pools[p].v[i]);
        }
    }

    family(b, "walnut_pool_forward_errors_by_cause_total", "counter",
           "requests and per-server parts of split or copied requests that walnut failed, by "
           "cause (the client's reply may still succeed: SCRIPT LOAD leaves out a server it "
           "cannot reach)");
    for (uint32_t p = 0; p < v->npools; p++) {
        for (unsigned c = 0; c < WN_CAUSE_COUNT; c++) {
            labels_t l = {.k = {"pool", "cause"},
                          .v = {v->pools[p].name, wn_error_cause_desc[c].name}};
            sample_u64(b, "walnut_pool_forward_errors_by_cause_total", &l, v->pools[p].errors[c]);
        }
    }

    bool any_cmds = false;
    for (uint32_t p = 0; p < v->npools; p++)
        any_cmds = any_cmds || v->pools[p].ncmds > 0;
    if (any_cmds) {
        family(b, "walnut_pool_commands_total", "counter", "requests received, by command");
        for (uint32_t p = 0; p < v->npools; p++) {
            const wn_stats_pool_view_t *pv = &v->pools[p];
            for (uint32_t c = 0; c < pv->ncmds; c++) {
                if (pv->cmd_names[c] == NULL)
                    continue;
                labels_t l = {.k = {"pool", "command"}, .v = {pv->name, pv->cmd_names[c]}};
                sample_u64(b, "walnut_pool_commands_total", &l, pv->cmds[c]);
            }
        }
    }

    family(b, "walnut_pool_ring_epoch", "gauge", "epoch of the ring control built last");
    for (uint32_t p = 0; p < v->npools; p++) {
        labels_t l = pool_labels(&v->pools[p]);
        sample_u64(b, "walnut_pool_ring_epoch", &l, v->pools[p].epoch);
    }
    if (v->nworkers > 0) {
        family(b, "walnut_pool_worker_ring_epoch", "gauge",
               "epoch of the ring each worker uses for the pool");
        for (uint32_t p = 0; p < v->npools; p++) {
            for (uint32_t w = 0; w < v->nworkers; w++) {
                char wid[16];
                snprintf(wid, sizeof(wid), "%u", w);
                labels_t l = {.k = {"pool", "worker"}, .v = {v->pools[p].name, wid}};
                sample_u64(b, "walnut_pool_worker_ring_epoch", &l, v->pools[p].worker_epoch[w]);
            }
        }
    }
    family(b, "walnut_pool_servers", "gauge", "servers configured for the pool");
    for (uint32_t p = 0; p < v->npools; p++) {
        labels_t l = pool_labels(&v->pools[p]);
        sample_u64(b, "walnut_pool_servers", &l, v->pools[p].nservers);
    }
    family(b, "walnut_pool_servers_ejected", "gauge", "servers of the pool out of its ring now");
    for (uint32_t p = 0; p < v->npools; p++) {
        uint32_t n = 0;
        for (uint32_t s = 0; s < v->pools[p].nservers; s++)
            n += v->pools[p].servers[s].ejected;
        labels_t l = pool_labels(&v->pools[p]);
        sample_u64(b, "walnut_pool_servers_ejected", &l, n);
    }

    family(b, "walnut_pool_request_duration_seconds", "histogram",
           "time from a request's arrival to its reply being ready, every request of the pool");
    for (uint32_t p = 0; p < v->npools; p++) {
        labels_t l = pool_labels(&v->pools[p]);
        histogram(b, "walnut_pool_request_duration_seconds", &l, &v->pools[p].latency);
    }
}

/* Every server of every pool, pools in config order, servers in the pool's. */
#define FOR_EACH_SERVER(v, pv, sv)                                                                \
    for (const wn_stats_pool_view_t *pv = (v)->pools; pv < (v)->pools + (v)->npools; pv++)        \
        for (const wn_stats_server_view_t *sv = pv->servers; sv < pv->servers + pv->nservers; sv++)

static void render_servers(sbuf_t *b, const wn_stats_view_t *v)
{
    char name[160];
    uint32_t total = 0;
    for (uint32_t p = 0; p < v->npools; p++)
        total += v->pools[p].nservers;
    if (total == 0)
        return;

    family(b, "walnut_server_info", "gauge", "a server's address, as a label; always 1");
    FOR_EACH_SERVER(v, pv, sv)
    {
        labels_t l = {.k = {"pool", "server", "address"}, .v = {pv->name, sv->name, sv->address}};
        sample_u64(b, "walnut_server_info", &l, 1);
    }
    for (unsigned i = 0; i < WN_SERVER_STAT_COUNT; i++) {
        const wn_stat_desc_t *d = &wn_server_stat_desc[i];
        stat_name(name, sizeof(name), "server", NULL, d);
        family(b, name, kind_type(d->kind), d->text);
        FOR_EACH_SERVER(v, pv, sv)
        {
            labels_t l = server_labels(pv, sv);
            sample_u64(b, name, &l, sv->v[i]);
        }
    }

    family(b, "walnut_server_ejected", "gauge", "1 while the server is out of the ring");
    FOR_EACH_SERVER(v, pv, sv)
    {
        labels_t l = server_labels(pv, sv);
        sample_u64(b, "walnut_server_ejected", &l, sv->ejected);
    }
    family(b, "walnut_server_last_ejected_timestamp_seconds", "gauge",
           "when the server was last ejected, unix seconds (twemproxy's server_ejected_at); "
           "0: never");
    FOR_EACH_SERVER(v, pv, sv)
    {
        labels_t l = server_labels(pv, sv);
        sample_us(b, "walnut_server_last_ejected_timestamp_seconds", &l, sv->ejected_at_us);
    }
    family(b, "walnut_server_health", "gauge",
           "control's verdict on the server: 1 for the state it is in (up, suspect, ejected)");
    static const wn_health_state_t states[] = {WN_HEALTH_UP, WN_HEALTH_SUSPECT, WN_HEALTH_EJECTED};
    FOR_EACH_SERVER(v, pv, sv)
    {
        for (size_t i = 0; i < WN_ARRAY_SIZE(states); i++) {
            labels_t l = {.k = {"pool", "server", "state"},
                          .v = {pv->name, sv->name, wn_health_state_name(states[i])}};
            sample_u64(b, "walnut_server_health", &l, sv->state == states[i]);
        }
    }
    family(b, "walnut_server_consecutive_failures", "gauge",
           "consecutive failures control counted for the server");
    FOR_EACH_SERVER(v, pv, sv)
    {
        labels_t l = server_labels(pv, sv);
        sample_u64(b, "walnut_server_consecutive_failures", &l, sv->failures);
    }
    /* Probe results exist only once a probe has finished. */
    family(b, "walnut_server_probe_success", "gauge",
           "1 if control's last health probe of the server succeeded");
    FOR_EACH_SERVER(v, pv, sv)
    {
        if (!sv->probed)
            continue;
        labels_t l = server_labels(pv, sv);
        sample_u64(b, "walnut_server_probe_success", &l, sv->last_probe_err == 0);
    }
    family(b, "walnut_server_probe_age_seconds", "gauge",
           "seconds since control's last health probe of the server finished");
    FOR_EACH_SERVER(v, pv, sv)
    {
        if (!sv->probed)
            continue;
        labels_t l = server_labels(pv, sv);
        sample_us(b, "walnut_server_probe_age_seconds", &l, sv->last_probe_age_ms * 1000u);
    }
    /* Servers given by name only: an address is never looked up. */
    static const char *const dns[WN_DNS_STAT_COUNT][2] = {
        [WN_DNS_LOOKUPS] = {"walnut_server_dns_lookups_total",
                            "lookups of the server's name while walnut runs "
                            "(dns_refresh_interval), failed ones included"},
        [WN_DNS_FAILURES] = {"walnut_server_dns_lookup_failures_total",
                             "lookups of the server's name that failed"},
        [WN_DNS_MOVES] =
            {"walnut_server_address_changes_total",
             "times a lookup found the server's name at another address than the one in use and "
             "walnut moved the server there"},
    };
    for (unsigned i = 0; i < WN_DNS_STAT_COUNT; i++) {
        family(b, dns[i][0], "counter", dns[i][1]);
        FOR_EACH_SERVER(v, pv, sv)
        {
            if (!sv->dns_named)
                continue;
            labels_t l = server_labels(pv, sv);
            sample_u64(b, dns[i][0], &l, sv->dns[i]);
        }
    }
    family(b, "walnut_server_request_duration_seconds", "histogram",
           "time from a request's arrival to its server's reply being complete");
    FOR_EACH_SERVER(v, pv, sv)
    {
        labels_t l = server_labels(pv, sv);
        histogram(b, "walnut_server_request_duration_seconds", &l, &sv->latency);
    }
}

static void render_process(sbuf_t *b, const wn_stats_view_t *v)
{
    const wn_stats_process_t *pr = &v->process;
    family(b, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    sample_double(b, "process_cpu_seconds_total", NULL, pr->cpu_seconds);
    if (pr->have_resident) {
        family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        sample_u64(b, "process_resident_memory_bytes", NULL, pr->resident_bytes);
    }
    if (pr->have_fds) {
        family(b, "process_open_fds", "gauge", "Number of open file descriptors.");
        sample_u64(b, "process_open_fds", NULL, pr->open_fds);
    }
    if (pr->have_max_fds) {
        family(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        sample_u64(b, "process_max_fds", NULL, pr->max_fds);
    }
    if (pr->start_time > 0) {
        family(b, "process_start_time_seconds", "gauge",
               "Start time of the process since unix epoch in seconds.");
        sample_double(b, "process_start_time_seconds", NULL, pr->start_time);
    }
}

char *wn_stats_prom_render(const wn_stats_view_t *v, size_t *len)
{
    sbuf_t b = {0};
    render_header(&b, v);
    render_pools(&b, v);
    render_servers(&b, v);
    render_process(&b, v);
    if (b.oom || b.p == NULL) {
        free(b.p);
        return NULL;
    }
    if (len != NULL)
        *len = b.len;
    return b.p;
}
