/*
 * control/stats_server.c: what the stats server reports, built on the
 * control thread at the moment a client asks: the workers' and control's
 * counter blocks summed (stats_view.c), control's health view laid over it,
 * and /healthz's verdict. Also the workers' heartbeat: control PINGs every
 * worker through its ring and each answers from its own loop, so a wedged
 * worker shows in /healthz (and, later, stops the systemd watchdog).
 * Control thread only.
 */
#include "control_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http.h"
#include "walnut/proto.h"
#include "walnut/proto_resp.h"
#include "stats_view.h"
#include "walnut/core.h"

/* A worker that has not answered a heartbeat (sent every ctl->heartbeat_ms)
 * for WORKER_LATE_MS is reported as not serving. */
#define WORKER_LATE_MS 3000

/* The command names a pool's per-command counters are indexed by: the
 * worker's protocol unit counts cmds[] by these tables' indexes. */
static const char *const *mc_cmd_names(uint32_t *n)
{
    static const char *names[WN_MC_CMD_COUNT];
    for (uint32_t i = 0; i < WN_MC_CMD_COUNT; i++)
        names[i] = wn_mc_cmd_name((wn_mc_cmd_t)i);
    *n = WN_MC_CMD_COUNT;
    return names;
}

static const char *const *redis_cmd_names(uint32_t *n)
{
    static const char *names[WN_RCMD_STAT_UNKNOWN + 1];
    for (uint32_t i = 0; i < WN_RCMD_COUNT; i++)
        names[i] = wn_rcmd_by_id((uint16_t)i)->name;
    names[WN_RCMD_STAT_UNKNOWN] = "unknown"; /* as memcached pools name theirs */
    *n = WN_RCMD_STAT_UNKNOWN + 1;
    return names;
}

static int build_view(wn_stats_view_t *v, void *arg)
{
    control_t *ctl = arg;
    wn_stats_view_opts_t o = {
        .nworkers = (uint32_t)ctl->nworkers,
        .start_us = ctl->start_us,
        .listeners_opened = ctl->listeners_opened,
        .cmds = ctl->cmd_tables,
    };
    /* During a reload a worker may write its next block already. */
    wn_stats_block_t *blocks[2 * (WN_MAX_WORKERS + 1)];
    size_t n = 0;
    for (uint32_t i = 0; i < ctl->nblocks; i++) {
        blocks[n++] = ctl->blocks[i];
        if (ctl->next_blocks[i] != NULL)
            blocks[n++] = ctl->next_blocks[i];
    }
    int rc = wn_stats_view_build(v, ctl->conf, blocks, n, &o);
    if (rc < 0)
        return rc;
    v->generation = ctl->gen;
    v->client_limit = atomic_load_explicit(&ctl->budget.limit, memory_order_relaxed);
    v->generation_converged =
        ctl->reload_acks == 0 && wn_control_workers_current(ctl) == ctl->nworkers;
    snprintf(v->last_reload, sizeof(v->last_reload), "%s", ctl->last_reload);
    uint64_t now = uv_now(&ctl->loop);
    for (uint32_t p = 0; p < ctl->npools && p < v->npools; p++) {
        hpool_t *hp = ctl->pools[p];
        wn_stats_pool_view_t *pv = &v->pools[p];
        pv->epoch = hp->epoch;
        for (int w = 0; w < ctl->nworkers; w++)
            pv->worker_epoch[w] = hp->worker_epoch[w];
        for (uint32_t s = 0; s < hp->nservers && s < pv->nservers; s++) {
            const hserver_t *hs = hp->servers[s];
            wn_stats_server_view_t *sv = &pv->servers[s];
            sv->ejected = hs->ejected;
            sv->state = hs->ejected                      ? WN_HEALTH_EJECTED
                        : (hs->suspected || hs->failures) ? WN_HEALTH_SUSPECT
                                                          : WN_HEALTH_UP;
            sv->failures = hs->failures;
            sv->ejected_at_us = hs->ejected_at_us;
            sv->probed = hs->last_probe_ms != 0;
            sv->last_probe_err = hs->last_probe_err;
            memcpy(sv->last_probe_said, hs->last_probe_said, sizeof(sv->last_probe_said));
            sv->last_probe_age_ms = sv->probed ? now - hs->last_probe_ms : 0;
            sv->dns_named = hs->dns.named;
            sv->dns[WN_DNS_LOOKUPS] = hs->dns.lookups;
            sv->dns[WN_DNS_FAILURES] = hs->dns.failures;
            sv->dns[WN_DNS_MOVES] = hs->dns.moves;
        }
    }
    return 0;
}

/* A sleep of control's loop this much past its heartbeat interval (the
 * longest any of its timers lets it sleep) is a stall. */
#define STALL_SLACK_MS 250

/* Control's loop slept past every timer it has: the whole process was
 * stopped (SIGSTOP, a CPU quota, a paused VM), or control alone could not
 * run. The heartbeats out then went out before it, and the workers cannot
 * be blamed for that time (if they were stopped too) nor control seen their
 * answers (if not): the send times move forward by it. Called before a
 * verdict, and as the loop goes to sleep. */
static void note_stall(control_t *ctl)
{
    uint64_t now = uv_now(&ctl->loop);
    if (ctl->asleep_ms != 0 && now > ctl->asleep_ms + ctl->heartbeat_ms + STALL_SLACK_MS) {
        uint64_t stall = now - ctl->asleep_ms - ctl->heartbeat_ms;
        for (size_t i = 0; i < WN_HEARTBEATS_KEPT; i++)
            ctl->heartbeat_sent_ms[i] = WN_MIN(ctl->heartbeat_sent_ms[i] + stall, now);
    }
    ctl->asleep_ms = now;
}

static void on_asleep(uv_prepare_t *p)
{
    control_t *ctl = p->data;
    uv_update_time(&ctl->loop); /* callbacks of this turn may have taken a while */
    note_stall(ctl);
}

bool wn_control_workers_alive(control_t *ctl, uint64_t within_ms, int *late, uint64_t *late_ms)
{
    note_stall(ctl);
    uint64_t now = uv_now(&ctl->loop);
    for (int i = 0; i < ctl->nworkers; i++) {
        /* Late: a PING it has not answered went out more than within_ms
         * ago (PINGs go out more often than that). Past the PINGs kept, the
         * oldest kept is the bound (later than the real one). */
        uint64_t behind = ctl->heartbeat_seq - ctl->pong_seq[i];
        if (behind == 0)
            continue;
        uint64_t first = behind < WN_HEARTBEATS_KEPT ? ctl->pong_seq[i] + 1
                                                     : ctl->heartbeat_seq - WN_HEARTBEATS_KEPT + 1;
        if (now - ctl->heartbeat_sent_ms[first % WN_HEARTBEATS_KEPT] > within_ms) {
            *late = i;
            *late_ms = now - ctl->pong_ms[i];
            return false;
        }
    }
    return true;
}

/* For /healthz: not ejected, and not failing: server_failure_limit
 * failures in a row (where a pool without auto_eject_hosts, or one that
 * max_ejected_fraction keeps from ejecting, leaves a dead server) and its
 * last probe failed too. A good probe makes it live again even where only
 * a good request clears the count (failures from traffic): a readiness
 * probe's 503 stops the traffic that would. Without probes control cannot
 * tell, and only ejection counts. */
static bool server_live(const hserver_t *s)
{
    if (s->ejected)
        return false;
    /* (a limit of 0 or less counts nothing: the probe alone says) */
    int limit = s->pool->conf->server_failure_limit;
    return (limit > 0 && s->failures < (uint32_t)limit) || !health_probing(s->pool) ||
           s->last_probe_ms == 0 || s->last_probe_err == 0;
}

static int health(char *reason, size_t len, void *arg)
{
    control_t *ctl = arg;
    int late;
    uint64_t late_ms;
    if (ctl->stopping) {
        snprintf(reason, len, "walnut is stopping");
        return 1;
    }
    if (!wn_control_workers_alive(ctl, WORKER_LATE_MS, &late, &late_ms)) {
        snprintf(reason, len, "worker %d has not answered for %llu ms", late,
                 (unsigned long long)late_ms);
        return 1;
    }
    for (uint32_t p = 0; p < ctl->npools; p++) {
        const hpool_t *hp = ctl->pools[p];
        uint32_t live = 0;
        for (uint32_t s = 0; s < hp->nservers; s++)
            live += server_live(hp->servers[s]);
        if (live == 0) {
            snprintf(reason, len, "pool '%s' has no live server", ctl->pools[p]->conf->name);
            return 1;
        }
    }
    return 0;
}

static void on_heartbeat(uv_timer_t *t)
{
    control_t *ctl = t->data;
    if (ctl->stopping)
        return;
    note_stall(ctl); /* before this one goes out: it is not part of a stall */
    ctl->heartbeat_seq++;
    ctl->heartbeat_sent_ms[ctl->heartbeat_seq % WN_HEARTBEATS_KEPT] = uv_now(&ctl->loop);
    wn_msg_t m = {.type = WN_MSG_PING, .epoch = ctl->heartbeat_seq};
    bool spilled = false;
    for (int i = 0; i < ctl->nworkers; i++) {
        if (wn_worker_post(ctl->workers[i], &m) < 0)
            wn_log_error("cannot queue a heartbeat for worker %d: out of memory", i);
        spilled |= wn_worker_flush_outbox(ctl->workers[i]) > 0;
    }
    if (spilled)
        wn_control_outbox_retry(ctl);
}

/* The memcached `stats` reply for a pool: walnut's counters as STAT lines,
 * from the same sums the HTTP stats serve. Every reply of one control turn
 * comes from one view: a client pipelining `stats` (with thousands of
 * connections open, each view reads /proc/self/fd) costs a view per turn. */
static char *mc_stats_text(control_t *ctl, uint32_t pool, size_t *len)
{
    if (ctl->turn_view == NULL) {
        wn_stats_view_t *tv = malloc(sizeof(*tv));
        if (tv == NULL)
            return NULL;
        if (build_view(tv, ctl) < 0) {
            free(tv);
            return NULL;
        }
        ctl->turn_view = tv;
    }
    const wn_stats_view_t *v = ctl->turn_view;
    size_t cap = 8192, n = 0;
    char *text = malloc(cap);
    if (text == NULL)
        return NULL;
#define LINE(...)                                                                                 \
    do {                                                                                          \
        int m_ = snprintf(text + n, cap - n, __VA_ARGS__);                                        \
        if (m_ > 0 && (size_t)m_ < cap - n)                                                       \
            n += (size_t)m_;                                                                      \
    } while (0)
    LINE("STAT pid %ld\r\n", (long)getpid());
    LINE("STAT uptime %llu\r\n", (unsigned long long)v->uptime);
    LINE("STAT time %llu\r\n", (unsigned long long)v->timestamp);
    LINE("STAT version %s-walnut\r\n", WN_VERSION);
    LINE("STAT threads %d\r\n", ctl->nworkers);
    for (int i = 0; i < WN_GLOBAL_STAT_COUNT; i++)
        LINE("STAT %s %llu\r\n", wn_global_stat_desc[i].name, (unsigned long long)v->global[i]);
    if (pool < v->npools) {
        const wn_stats_pool_view_t *pv = &v->pools[pool];
        for (int i = 0; i < WN_POOL_STAT_COUNT; i++) {
            if (i == WN_P_client_connections)
                continue; /* curr_connections says it, process-wide */
            LINE("STAT %s %llu\r\n", wn_pool_stat_desc[i].name, (unsigned long long)pv->v[i]);
        }
        /* The pool's servers together; names that are not already server_*
         * get the prefix (requests above are what clients asked). */
        for (int i = 0; i < WN_SERVER_STAT_COUNT; i++) {
            uint64_t sum = 0;
            for (uint32_t s = 0; s < pv->nservers; s++)
                sum += pv->servers[s].v[i];
            const char *name = wn_server_stat_desc[i].name;
            LINE("STAT %s%s %llu\r\n", strncmp(name, "server_", 7) == 0 ? "" : "server_", name,
                 (unsigned long long)sum);
        }
    }
    LINE("END\r\n");
#undef LINE
    *len = n;
    return text;
}

void wn_control_mc_stats(control_t *ctl, const wn_msg_t *m)
{
    if (m->worker < 0 || m->worker >= ctl->nworkers)
        return;
    wn_msg_t reply = {.type = WN_MSG_STATS_REPLY, .epoch = m->epoch};
    reply.text = mc_stats_text(ctl, m->pool, &reply.len);
    if (reply.text == NULL) {
        static const char oom[] = "SERVER_ERROR out of memory\r\n";
        reply.text = strdup(oom);
        reply.len = sizeof(oom) - 1;
    }
    if (reply.text == NULL || wn_worker_post(ctl->workers[m->worker], &reply) < 0)
        free(reply.text);
}

void wn_control_mc_stats_end_turn(control_t *ctl)
{
    if (ctl->turn_view != NULL) {
        wn_stats_view_free(ctl->turn_view);
        free(ctl->turn_view);
        ctl->turn_view = NULL;
    }
}

void wn_control_pong(control_t *ctl, const wn_msg_t *m)
{
    if (m->worker < 0 || m->worker >= ctl->nworkers)
        return;
    if (m->epoch > ctl->pong_seq[m->worker]) {
        ctl->pong_seq[m->worker] = m->epoch;
        ctl->pong_ms[m->worker] = uv_now(&ctl->loop);
    }
}

int wn_control_stats_reconf(control_t *ctl)
{
    struct wn_stats_cmd_table *t =
        wn_test_fault("WALNUT_TEST_NO_CMD_TABLES")
            ? NULL /* as if out of memory */
            : calloc(ctl->conf->npools ? ctl->conf->npools : 1, sizeof(*t));
    if (t == NULL) {
        /* The old table has an entry per old pool: read for the new
         * pools, it would be read past its end. None until a reload can. */
        free(ctl->cmd_tables);
        ctl->cmd_tables = NULL;
        return WN_ENOMEM;
    }
    for (uint32_t p = 0; p < ctl->conf->npools; p++) {
        if (ctl->conf->pools[p].redis)
            t[p].names = redis_cmd_names(&t[p].n);
        else
            t[p].names = mc_cmd_names(&t[p].n);
    }
    free(ctl->cmd_tables);
    ctl->cmd_tables = t;
    return 0;
}

int wn_control_stats_start(control_t *ctl, const char *addr, uint16_t port)
{
    ctl->start_us = wn_wall_us();
    ctl->listeners_opened = ctl->conf->npools;
    ctl->pong_seq = calloc((size_t)ctl->nworkers, sizeof(uint64_t));
    ctl->pong_ms = calloc((size_t)ctl->nworkers, sizeof(uint64_t));
    if (wn_control_stats_reconf(ctl) < 0 || ctl->pong_seq == NULL || ctl->pong_ms == NULL)
        return WN_ENOMEM;
    uint64_t now = uv_now(&ctl->loop);
    for (int i = 0; i < ctl->nworkers; i++)
        ctl->pong_ms[i] = now;
    uv_timer_init(&ctl->loop, &ctl->heartbeat_timer);
    ctl->heartbeat_timer.data = ctl;
    uv_timer_start(&ctl->heartbeat_timer, on_heartbeat, 0, ctl->heartbeat_ms);
    uv_prepare_init(&ctl->loop, &ctl->asleep_watch);
    ctl->asleep_watch.data = ctl;
    uv_prepare_start(&ctl->asleep_watch, on_asleep);
    uv_unref((uv_handle_t *)&ctl->asleep_watch);

    char err[256];
    wn_http_handlers_t h = {.build_view = build_view, .health = health};
    int rc = wn_http_start(&ctl->http, &ctl->loop, addr, port, &h, ctl, err, sizeof(err));
    if (rc < 0)
        wn_log_error("%s", err); /* err says "stats: ..." */
    if (rc == 0 && wn_http_address(ctl->http, &ctl->stats_sa) == 0)
        ctl->stats_salen = sizeof(ctl->stats_sa);
    return rc;
}

void wn_control_stats_stop(control_t *ctl)
{
    if (ctl->heartbeat_timer.loop != NULL && !uv_is_closing((uv_handle_t *)&ctl->heartbeat_timer))
        uv_close((uv_handle_t *)&ctl->heartbeat_timer, NULL);
    if (ctl->asleep_watch.loop != NULL && !uv_is_closing((uv_handle_t *)&ctl->asleep_watch))
        uv_close((uv_handle_t *)&ctl->asleep_watch, NULL);
    wn_http_stop(ctl->http);
    ctl->http = NULL;
}

void wn_control_stats_deinit(control_t *ctl)
{
    free(ctl->cmd_tables);
    free(ctl->pong_seq);
    free(ctl->pong_ms);
    ctl->cmd_tables = NULL;
    ctl->pong_seq = ctl->pong_ms = NULL;
}
