/*
 * control/control.c: start-up and the control thread. Runs on the main
 * thread, which becomes the control thread: builds each pool's first ring,
 * creates and starts the workers, writes the pid file once they run, then
 * runs the control loop: worker messages (health.c decides on them), signals, and at
 * the end a clean stop. It reaches workers only through their message rings.
 */
#include "control_priv.h"
#include "fds.h"
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "walnut/core.h"

/* Messages that did not fit a worker's ring are retried this often. */
#define OUTBOX_RETRY_MS 10

void wn_control_log_convergence(control_t *ctl, uint32_t pool)
{
    hpool_t *p = ctl->pools[pool];
    if (p->converged_epoch == p->epoch)
        return;
    for (int i = 0; i < ctl->nworkers; i++)
        if (p->worker_epoch[i] != p->epoch)
            return;
    p->converged_epoch = p->epoch;
    wn_log_notice("pool '%s': all %d workers on ring epoch %llu", p->conf->name, ctl->nworkers,
                  (unsigned long long)p->epoch);
}

/* Push what waits in the outboxes; true while something still waits. */
static bool flush_outboxes(control_t *ctl)
{
    size_t waiting = 0;
    for (int i = 0; i < ctl->nworkers; i++)
        waiting += wn_worker_flush_outbox(ctl->workers[i]);
    return waiting > 0;
}

static void on_outbox_timer(uv_timer_t *t)
{
    control_t *ctl = t->data;
    if (!ctl->stopping && flush_outboxes(ctl))
        uv_timer_start(&ctl->outbox_timer, on_outbox_timer, OUTBOX_RETRY_MS, 0);
}

void wn_control_outbox_retry(control_t *ctl)
{
    /* A worker's ring was full: retry on a timer, since that worker may
     * have nothing to tell us and so never wake us to do it. */
    if (!ctl->stopping && !uv_is_active((uv_handle_t *)&ctl->outbox_timer))
        uv_timer_start(&ctl->outbox_timer, on_outbox_timer, OUTBOX_RETRY_MS, 0);
}

/* Messages taken from one worker per turn: a worker whose clients keep
 * asking (memcached `stats`, answered at once) refills its ring as fast as
 * control drains it, and must not starve the others. */
#define MAX_MSGS_PER_TURN 64

static void on_wakeup(uv_async_t *a)
{
    control_t *ctl = a->data;
    bool more = false;
    for (int i = 0; i < ctl->nworkers; i++) {
        wn_msg_t m;
        int taken = 0;
        while (taken < MAX_MSGS_PER_TURN && wn_worker_receive(ctl->workers[i], &m) == 0) {
            taken++;
            switch (m.type) {
            case WN_MSG_RING_DONE:
                wn_ring_unref(m.ring);
                /* Pool indexes are those of the configuration it names. */
                if (m.gen == ctl->gen && m.pool < ctl->npools && m.worker == i) {
                    ctl->pools[m.pool]->worker_epoch[i] = m.epoch;
                    wn_control_log_convergence(ctl, m.pool);
                }
                break;
            case WN_MSG_FAIL:
            case WN_MSG_OK:
                if (wn_control_report_current(ctl, &m))
                    health_on_message(ctl, &m);
                break;
            case WN_MSG_CONFIG_DONE:
                wn_control_config_done(ctl, &m);
                wn_control_mc_stats_end_turn(ctl); /* a reload may have moved on */
                break;
            case WN_MSG_PONG:
                wn_control_pong(ctl, &m);
                break;
            case WN_MSG_STATS:
                /* asked before the worker took the last reload: the pool of
                 * that name now (none if the reload removed it) */
                m.pool = wn_control_pool_current(ctl, m.gen, m.pool);
                wn_control_mc_stats(ctl, &m);
                break;
            default:
                break;
            }
        }
        more = more || taken == MAX_MSGS_PER_TURN;
        wn_worker_flush_outbox(ctl->workers[i]);
    }
    wn_control_mc_stats_end_turn(ctl);
    /* The rest on the next turn, after every other worker's. */
    if (more && !ctl->stopping)
        uv_async_send(&ctl->wakeup);
}

void wn_control_stop(control_t *ctl)
{
    ctl->stopping = true;
    wn_sd_notify(ctl, "STOPPING=1");
    wn_sd_stop(ctl);
    wn_control_stats_stop(ctl);
    for (int i = 0; i < ctl->nworkers; i++)
        wn_worker_stop(ctl->workers[i]);
    /* Workers finish what is in flight (bounded by their grace period);
     * they may still post to our wakeup meanwhile, so it stays open. */
    for (int i = 0; i < ctl->nworkers; i++) {
        wn_worker_join(ctl->workers[i]);
        ctl->workers[i] = NULL;
    }
    ctl->nworkers = 0;
    health_stop(ctl);
    uv_close((uv_handle_t *)&ctl->outbox_timer, NULL);
    uv_close((uv_handle_t *)&ctl->wakeup, NULL);
    wn_signals_close(ctl);
}

/*
 * -d: the process that was started waits until the daemon has bound every
 * listener and written its pid file, and exits 0 then, or 1 if the daemon
 * failed or died first. A script or Type=forking unit that starts walnut
 * -d learns from the exit status whether walnut serves (the parent used to
 * exit 0 at once, even when the port was taken).
 */
static int daemon_ready_fd = -1;

/* Standard descriptor std now reads and writes /dev/null (0-2 are open:
 * main made sure, so the new descriptor is above them). */
static int to_dev_null(int std)
{
    int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fd == std)
        return 0; /* std was closed after all: it is /dev/null now */
    int rc = dup2(fd, std) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static int daemonize(void)
{
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int err = -errno;
        close(ready[0]);
        close(ready[1]);
        return err;
    }
    if (pid > 0) {
        close(ready[1]);
        char status = 1;
        ssize_t n;
        do
            n = read(ready[0], &status, 1);
        while (n < 0 && errno == EINTR);
        _exit(n == 1 && status == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
    }
    close(ready[0]);
    daemon_ready_fd = ready[1]; /* the middle process's copy closes as it exits */
    if (setsid() < 0)
        return -errno;
    pid = fork();
    if (pid < 0)
        return -errno;
    if (pid > 0)
        _exit(0);
    if (chdir("/") < 0)
        return -errno;
    umask(0);
    int rc = to_dev_null(STDIN_FILENO);
    return rc < 0 ? rc : to_dev_null(STDOUT_FILENO);
}

/*
 * Tells the waiting parent of -d how the start went (once; a no-op without
 * -d). A daemon that dies before this closes the pipe: failure. Start-up
 * errors went to the caller's standard error too; once serving with a log
 * file, the daemon lets go of it (a caller reading it to its end would wait
 * for the daemon to exit). Without -o the log is standard error: kept.
 */
static void daemon_report(int rc, bool log_to_file)
{
    if (daemon_ready_fd < 0)
        return;
    char status = rc == 0 ? 0 : 1;
    if (rc == 0 && log_to_file)
        (void)to_dev_null(STDERR_FILENO); /* if it cannot, it stays the caller's */
    ssize_t n;
    do
        n = write(daemon_ready_fd, &status, 1);
    while (n < 0 && errno == EINTR);
    close(daemon_ready_fd);
    daemon_ready_fd = -1;
}

/* Written only once start-up has succeeded: a second instance that fails
 * to start (its port taken by the first) must not touch the first's file. */
static int write_pid_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    ssize_t w = write(fd, buf, (size_t)n);
    int err = w == n ? 0 : w < 0 ? -errno : WN_EIO;
    close(fd);
    return err;
}

/* Remove the pid file at exit if it still holds our pid: an instance
 * started later with the same -p owns it now. */
static void remove_pid_file(const char *path)
{
    char buf[32] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    char *end;
    long pid = n > 0 ? strtol(buf, &end, 10) : 0;
    if (n > 0 && end != buf && (*end == '\n' || *end == '\0') && pid == (long)getpid())
        unlink(path);
}

/* Every worker's counter block and control's own, laid out for the config. */
static int create_blocks(control_t *ctl)
{
    ctl->nblocks = (uint32_t)ctl->nworkers + 1;
    ctl->blocks = calloc(ctl->nblocks, sizeof(*ctl->blocks));
    ctl->next_blocks = calloc(ctl->nblocks, sizeof(*ctl->next_blocks));
    if (ctl->blocks == NULL || ctl->next_blocks == NULL)
        return WN_ENOMEM;
    for (uint32_t i = 0; i < ctl->nblocks; i++) {
        ctl->blocks[i] = wn_stats_block_create(ctl->conf);
        if (ctl->blocks[i] == NULL)
            return WN_ENOMEM;
    }
    return 0;
}

static void destroy_blocks(control_t *ctl)
{
    for (uint32_t i = 0; ctl->blocks != NULL && i < ctl->nblocks; i++) {
        wn_stats_block_destroy(ctl->blocks[i]);
        wn_stats_block_destroy(ctl->next_blocks[i]);
    }
    free(ctl->blocks);
    free(ctl->next_blocks);
    ctl->blocks = NULL;
    ctl->next_blocks = NULL;
}

int wn_control_check_listen(wn_conf_t *conf, const char *stats_addr, uint16_t stats_port, char *err,
                            size_t errlen)
{
    for (uint32_t p = 0; p < conf->npools; p++) {
        int rc = wn_listen_resolve(&conf->pools[p], err, errlen);
        if (rc < 0)
            return rc;
    }
    /* The stats server's address as the start would bind it (port 0 is
     * any port: nothing to clash with); one the start could not listen on
     * fails here, as it would there. */
    struct sockaddr_storage ss;
    uint32_t sslen = 0;
    wn_conf_addr_t sa = {.host = (char *)stats_addr, .port = stats_port};
    if (stats_addr != NULL) {
        int rc = wn_conf_addr_lookup(&sa, false, &ss, &sslen);
        if (rc < 0) {
            wn_http_listen_error(err, errlen, stats_addr, stats_port, rc);
            return rc;
        }
    }
    return wn_listen_apart(conf, sslen != 0 && stats_port != 0 ? &ss : NULL, err, errlen);
}

/* What all clients together may hold: --client-memory, or half the memory
 * walnut may use. Each worker publishes what its clients hold in the
 * budget; one holding more than its even share disconnects the clients
 * holding the most while the total is over. */
static int client_memory_bound(control_t *ctl, const wn_options_t *opts)
{
    const char *how = "--client-memory";
    uint64_t limit = opts->client_memory;
    if (!opts->client_memory_set) {
        limit = wn_mem_limit("") / 2;
        how = "half the memory walnut may use; --client-memory sets it";
    }
    if (limit == 0) {
        wn_log_notice("what clients hold is bounded per client only (client_buffer_limit): %s",
                      opts->client_memory_set ? "--client-memory 0"
                                              : "how much memory walnut may use is unknown");
        return 0;
    }
    size_t size = (size_t)ctl->nworkers * sizeof(wn_client_held_t);
    ctl->budget.held = aligned_alloc(_Alignof(wn_client_held_t), size);
    if (ctl->budget.held == NULL)
        return WN_ENOMEM;
    for (int i = 0; i < ctl->nworkers; i++)
        atomic_init(&ctl->budget.held[i].bytes, 0);
    ctl->budget.memory_limit = limit;
    wn_log_notice("clients may hold %llu MiB in all (%s); past it, the workers holding more "
                  "than their share disconnect the clients holding the most",
                  (unsigned long long)(limit >> 20), how);
    return 0;
}

static int create_workers(control_t *ctl, const wn_options_t *opts)
{
    /* Listen addresses are looked up here, once (servers' in health_init),
     * but for pools serving on sockets systemd handed over. */
    for (uint32_t p = 0; p < ctl->conf->npools; p++) {
        if (ctl->inherited != NULL && ctl->inherited[p].n > 0)
            continue;
        char err[512];
        int rc = wn_listen_resolve(&ctl->conf->pools[p], err, sizeof(err));
        if (rc < 0) {
            wn_log_error("%s", err);
            return rc;
        }
    }
    char err[512];
    int rc = wn_listen_apart(ctl->conf, ctl->stats_salen ? &ctl->stats_sa : NULL, err, sizeof(err));
    if (rc < 0) {
        wn_log_error("%s", err);
        return rc;
    }
    /* A unix path is checked as a reload checks it: the worker that binds
     * it replaces a socket file, which must not be one another process
     * accepts on. (TCP addresses are probed by the first worker's bind.) */
    for (uint32_t p = 0; p < ctl->conf->npools; p++) {
        if (!ctl->conf->pools[p].listen.is_unix ||
            (ctl->inherited != NULL && ctl->inherited[p].n > 0))
            continue;
        rc = wn_listen_check(&ctl->conf->pools[p], err, sizeof(err));
        if (rc < 0) {
            wn_log_error("%s", err);
            return rc;
        }
    }
    wn_ring_t **rings = calloc(ctl->npools ? ctl->npools : 1, sizeof(*rings));
    if (rings == NULL)
        return WN_ENOMEM;
    for (uint32_t p = 0; p < ctl->npools; p++)
        rings[p] = ctl->pools[p]->ring;
    int *fds = calloc(ctl->npools ? ctl->npools : 1, sizeof(int));
    if (fds == NULL) {
        free(rings);
        return WN_ENOMEM;
    }
    if (client_memory_bound(ctl, opts) < 0) {
        free(fds);
        free(rings);
        return WN_ENOMEM;
    }
    for (int i = 0; i < ctl->nworkers; i++) {
        for (uint32_t p = 0; p < ctl->npools; p++) {
            fds[p] = wn_sd_fd_for_worker(ctl, p, i);
            if (fds[p] < -1) {
                wn_log_error("cannot share an inherited socket with worker %d: %s", i,
                             wn_strerror(fds[p]));
                fds[p] = -1;
            }
        }
        wn_worker_options_t wo = {
            .id = i,
            .nworkers = ctl->nworkers,
            .mbuf_size = opts->mbuf_size,
            .accept_unix = i == 0,
            .stats = ctl->blocks[i],
            .listen_fds = fds,
            .activated = ctl->activated.n > 0 ? &ctl->activated : NULL,
            .control_wakeup = &ctl->wakeup,
            .budget = &ctl->budget,
            .batch_wait_us = opts->batch_wait_us,
        };
        rc = wn_worker_create(ctl->conf, &wo, &ctl->workers[i], err, sizeof(err));
        if (rc < 0) {
            wn_log_error("%s", err);
            break;
        }
        wn_worker_set_rings(ctl->workers[i], rings);
    }
    free(fds);
    free(rings);
    return rc;
}

/* What the process does before anything else (before any thread exists,
 * for fork's sake): detach, SIGPIPE. */
static int process_setup(const wn_options_t *opts)
{
    int rc;
    if (opts->daemonize && (rc = daemonize()) < 0) {
        wn_log_error("cannot daemonize: %s", wn_strerror(rc));
        return rc;
    }
    /* A peer that closes while we write must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    wn_fds_raise();
    wn_log_set_thread("control");
    return 0;
}

/* Without --workers, a worker per CPU walnut may use: those it may run on
 * (taskset, systemd's CPUAffinity=, a container's cpuset), or fewer if its
 * cgroup has a CPU quota (CPUQuota=, docker --cpus), rounded up. */
static int default_workers(void)
{
    uint32_t cpus = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        cpus = (uint32_t)CPU_COUNT(&set);
    if (cpus == 0) { /* more CPUs than a cpu_set_t holds */
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cpus = n > 0 ? (uint32_t)WN_MIN(n, (long)UINT32_MAX) : 1;
    }
    uint32_t n = wn_cpu_limit("", cpus);
    int workers = (int)WN_MIN(WN_MAX(n, 1u), (uint32_t)WN_MAX_WORKERS);
    const char *s = workers == 1 ? "" : "s";
    if (n < cpus)
        wn_log_notice("%d worker%s: walnut's cgroup has a CPU quota of %u CPU%s (it may run on "
                      "%u); --workers sets it",
                      workers, s, n, n == 1 ? "" : "s", cpus);
    else
        wn_log_notice("%d worker%s: one per CPU walnut may run on; --workers sets it", workers, s);
    return workers;
}

/* Control's loop and its own handles, signals and systemd's environment. */
static int control_init(control_t *ctl, const wn_options_t *opts)
{
    ctl->nworkers = opts->workers > 0 ? opts->workers : default_workers();
    ctl->workers = calloc((size_t)ctl->nworkers, sizeof(*ctl->workers));
    if (ctl->workers == NULL || uv_loop_init(&ctl->loop) < 0) {
        free(ctl->workers);
        ctl->workers = NULL;
        return WN_ENOMEM;
    }
    uv_async_init(&ctl->loop, &ctl->wakeup, on_wakeup);
    ctl->wakeup.data = ctl;
    uv_timer_init(&ctl->loop, &ctl->outbox_timer);
    ctl->outbox_timer.data = ctl;
    /* Handlers first: workers serve as soon as they start, so a stop signal
     * may come before this thread reaches its loop; it is queued until then. */
    wn_signals_start(ctl);
    wn_sd_init(ctl);
    /* Heartbeats often enough that a worker late for half the watchdog
     * interval is seen. */
    ctl->heartbeat_ms = 1000;
    if (ctl->watchdog_usec > 0 && ctl->watchdog_usec / 4000 < ctl->heartbeat_ms)
        ctl->heartbeat_ms = WN_MAX(ctl->watchdog_usec / 4000, 10);
    return 0;
}

/* Stats blocks, pools, inherited sockets, the stats port, then the workers
 * (each binds its pools' ports) and each started: the stats port listens
 * before any pool port does, so a client that reached a pool can reach the
 * stats. On failure *started says how many workers run. */
static int control_start(control_t *ctl, const wn_options_t *opts, int *started)
{
    int rc = create_blocks(ctl);
    if (rc == 0)
        rc = health_init(ctl);
    if (rc == 0) {
        int n = wn_sd_listen_fds(ctl);
        if (n < 0)
            wn_log_error("cannot take the sockets systemd handed over: %s", wn_strerror(n));
        rc = n < 0 ? n : 0;
    }
    if (rc == 0)
        rc = wn_control_stats_start(ctl, opts->stats_addr, opts->stats_port);
    if (rc == 0) {
        wn_fds_budget(&ctl->budget, &ctl->budget_said, ctl->conf, ctl->nworkers);
        rc = wn_client_budget_add_pools(&ctl->budget, ctl->conf);
        if (rc < 0)
            wn_log_error("out of memory");
        else
            rc = create_workers(ctl, opts);
    }
    while (rc == 0 && *started < ctl->nworkers) {
        rc = wn_worker_start(ctl->workers[*started]);
        if (rc < 0)
            wn_log_error("cannot start worker %d: %s", *started, wn_strerror(rc));
        else
            (*started)++;
    }
    return rc;
}

/* A start that failed: stop what started, free what was only created, and
 * let the loop close its handles. */
static void control_abort(control_t *ctl, int started)
{
    wn_control_stats_stop(ctl);
    for (int i = 0; i < started; i++)
        wn_worker_stop(ctl->workers[i]);
    for (int i = 0; i < started; i++)
        wn_worker_join(ctl->workers[i]);
    for (int i = started; i < ctl->nworkers; i++)
        wn_worker_destroy(ctl->workers[i]);
    ctl->nworkers = 0;
    ctl->stopping = true;
    if (ctl->pools != NULL)
        health_stop(ctl);
    uv_close((uv_handle_t *)&ctl->outbox_timer, NULL);
    uv_close((uv_handle_t *)&ctl->wakeup, NULL);
    wn_signals_close(ctl);
    uv_run(&ctl->loop, UV_RUN_DEFAULT);
}

static void log_started(const control_t *ctl, const wn_options_t *opts)
{
    for (uint32_t p = 0; p < ctl->conf->npools; p++) {
        const wn_conf_pool_t *pool = &ctl->conf->pools[p];
        /* on the socket systemd handed over, wherever that listens */
        const char *where = ctl->inherited != NULL && ctl->inherited[p].n > 0
                                ? ctl->inherited[p].where
                                : pool->listen_text;
        wn_log_notice("pool '%s': listening on %s, %u server(s), %s/%s, %s", pool->name, where,
                      pool->nservers, wn_hash_name(pool->hash), wn_dist_name(pool->distribution),
                      pool->redis ? "redis" : "memcache");
    }
    if (opts->batch_wait_us > 0)
        wn_log_notice("walnut-%s started on pid %ld with %d worker(s), each sleeping %d usec "
                      "(up to 5 times that for pipelines) after a busy turn (--batch-wait)",
                      WN_VERSION, (long)getpid(), ctl->nworkers, opts->batch_wait_us);
    else
        wn_log_notice("walnut-%s started on pid %ld with %d worker(s)", WN_VERSION, (long)getpid(),
                      ctl->nworkers);
}

int wn_control_run(wn_conf_t *conf, const wn_options_t *opts)
{
    control_t ctl = {.conf = conf, .conf_path = opts->conf_file, .notify_fd = -1};
    /* Control's own reference: a reload replaces it. */
    wn_conf_ref(conf);
    int rc = process_setup(opts);
    if (rc < 0) {
        wn_conf_unref(ctl.conf);
        return rc;
    }
    rc = control_init(&ctl, opts);
    if (rc < 0) {
        wn_conf_unref(ctl.conf);
        return rc;
    }
    int started = 0;
    bool pid_written = false;
    rc = control_start(&ctl, opts, &started);
    /* Every listener is bound: the pid file names a process that serves. */
    if (rc == 0 && opts->pid_file != NULL) {
        rc = write_pid_file(opts->pid_file);
        if (rc < 0)
            wn_log_error("cannot write pid file '%s': %s", opts->pid_file, wn_strerror(rc));
        pid_written = rc == 0;
    }
    daemon_report(rc, wn_log_names_file(opts->log_file));
    if (rc < 0) {
        control_abort(&ctl, started);
    } else {
        health_start(&ctl);
        log_started(&ctl, opts);
        /* Every listener is bound and every worker runs. */
        wn_sd_watchdog_start(&ctl);
        wn_sd_state(&ctl, "READY=1\nMAINPID=%ld", (long)getpid());
        wn_sd_status(&ctl);
        uv_run(&ctl.loop, UV_RUN_DEFAULT);
        wn_log_notice("stopped");
    }
    if (uv_loop_close(&ctl.loop) != 0)
        wn_log_error("control loop closed with handles still open");
    health_deinit(&ctl);
    /* Every worker is joined and the stats server is gone: nobody reads
     * the blocks any more. */
    destroy_blocks(&ctl);
    wn_client_budget_free(&ctl.budget);
    wn_control_stats_deinit(&ctl);
    wn_sd_deinit(&ctl);
    free(ctl.inherited);
    free(ctl.workers);
    wn_conf_unref(ctl.prev_conf);
    wn_conf_unref(ctl.conf);
    if (pid_written)
        remove_pid_file(opts->pid_file);
    return rc;
}
