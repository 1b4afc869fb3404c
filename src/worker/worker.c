/*
 * worker/worker.c: a worker's thread, loop and life cycle. Created on the
 * main thread (listening sockets are opened there, so address errors are
 * reported before anything starts), then run on its own thread; another
 * thread may only post messages to it and ask it to stop. At stop it closes
 * its listeners and idle clients at once, gives clients with requests in
 * flight a grace period, then closes everything and ends its loop.
 */
#include "protocol.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <string.h>
#include <time.h>

/* How long a stopping worker waits for in-flight requests before it closes
 * their connections anyway. */
#define STOP_GRACE_MS 5000
/* How long a stopping worker keeps serving every client, idle or not,
 * before it closes those with nothing in flight. */
#define STOP_LINGER_MS 200

static void close_if_open(uv_handle_t *h)
{
    if (h->loop != NULL && !uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_stop_grace(uv_timer_t *t)
{
    wn_worker_t *w = t->data;
    wn_log_warn("stop: %u client connection(s) still busy after %d ms, closing them",
                w->nclients, STOP_GRACE_MS);
    for (client_t *c = w->clients; c != NULL; c = c->next) {
        c->broken = true;
        wn_client_mark(c);
    }
}

/* The linger is over: every client closes as soon as nothing of it is in
 * flight; the rest get the grace period. */
static void on_stop_linger(uv_timer_t *t)
{
    wn_worker_t *w = t->data;
    for (client_t *c = w->clients; c != NULL; c = c->next)
        wn_client_shutdown(c);
    uv_timer_start(&w->stop_timer, on_stop_grace, STOP_GRACE_MS - STOP_LINGER_MS, 0);
}

static void begin_stop(wn_worker_t *w)
{
    if (w->stopping)
        return;
    w->stopping = true;
    /* Control took the signal before telling us and answers nothing more:
     * what waits for it is settled here. A `stats` gets this worker's own
     * counters; a client held for a verdict on a suspect server routes
     * anew, as it would once the hold timed out. */
    for (req_t *r; (r = wn_ctl_stats_take_any(w)) != NULL;) {
        wn_proto_stats_local(r);
        wn_req_unref(r);
    }
    for (uint32_t p = 0; p < w->npools; p++) {
        wn_ctl_release_pool(w->pools[p]);
        wn_listen_close(w->pools[p]);
    }
    if (w->clients == NULL) {
        wn_worker_finish_stop(w);
        return;
    }
    /* A client accepted a moment ago may not have sent its request yet:
     * closing it now would lose that request (a socket handed over by
     * systemd would have queued it for the next walnut instead). */
    uv_timer_init(&w->loop, &w->stop_timer);
    w->stop_timer.data = w;
    w->stop_timer_open = true;
    uv_timer_start(&w->stop_timer, on_stop_linger, STOP_LINGER_MS, 0);
}

/* A message from control that the layers below hand up. */
static void on_control_message(wn_worker_t *w, wn_msg_t *m)
{
    switch (m->type) {
    case WN_MSG_CONFIG:
        wn_ctl_config_done(w, m->gen, wn_reconf_apply(w, m));
        break;
    case WN_MSG_STATS_REPLY: {
        /* The text control made for a `stats` request. */
        req_t *r = wn_ctl_stats_take(w, m->epoch);
        if (r != NULL) {
            wn_proto_stats_reply(r, m->text, m->len);
            wn_req_unref(r);
        }
        free(m->text);
        break;
    }
    default:
        wn_log_error("worker %d: control message %d handed up by mistake; dropped", w->id,
                     (int)m->type);
        break;
    }
}

static void on_wakeup(uv_async_t *a)
{
    wn_worker_t *w = a->data;
    wn_msg_t m;
    while (wn_ctl_receive(w, &m))
        on_control_message(w, &m);
    if (atomic_load_explicit(&w->stop_requested, memory_order_acquire))
        begin_stop(w);
}

/* Undo a partial wn_worker_create: close what was opened, run the loop until
 * the close callbacks ran, free. */
static void destroy(wn_worker_t *w)
{
    for (uint32_t p = 0; p < w->npools; p++)
        wn_listen_close(w->pools[p]);
    close_if_open((uv_handle_t *)&w->wakeup);
    wn_ctl_close(w);
    wn_reconf_close_all(w);
    close_if_open((uv_handle_t *)&w->flusher);
    close_if_open((uv_handle_t *)&w->kick);
    close_if_open((uv_handle_t *)&w->trim_timer);
    close_if_open((uv_handle_t *)&w->pace_timer);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    for (uint32_t p = 0; p < w->npools; p++)
        wn_pool_rt_destroy(w->pools[p]);
    free(w->pools);
    wn_reconf_free_all(w);
    if (uv_loop_close(&w->loop) != 0)
        wn_log_error("worker %d: loop closed with handles still open", w->id);
    wn_ctl_deinit(w);
    wn_buf_unref(w->scratch);
    wn_req_free_all(w);
    wn_bufpool_deinit(&w->bufs);
    free(w->sink_pool);
    free(w->sink_server);
    wn_conf_unref(w->conf);
    free(w);
}

int wn_worker_create(wn_conf_t *conf, const wn_worker_options_t *opts, wn_worker_t **out,
                     char *err, size_t errlen)
{
    wn_worker_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "worker %d: out of memory", opts->id);
        return WN_ENOMEM;
    }
    w->id = opts->id;
    w->nworkers = opts->nworkers;
    w->accept_unix = opts->accept_unix;
    w->activated = opts->activated;
    w->stats = opts->stats;
    w->control_wakeup = opts->control_wakeup;
    w->budget = opts->budget;
    w->batch_wait_ns = (uint64_t)opts->batch_wait_us * 1000;
    w->start_time = (uint64_t)time(NULL);
    w->retire_grace_ms = wn_reconf_grace_ms();
    snprintf(w->name, sizeof(w->name), "worker %d", opts->id);
    wn_conf_ref(conf);
    w->conf = conf;
    wn_bufpool_init(&w->bufs, opts->mbuf_size, WN_BUFPOOL_FREE_BYTES);
    w->req_size = wn_proto_req_slot_size();

    int rc = uv_loop_init(&w->loop);
    if (rc < 0) {
        snprintf(err, errlen, "worker %d: cannot create its loop: %s", w->id, uv_strerror(rc));
        wn_conf_unref(conf);
        free(w);
        return rc;
    }
    rc = uv_async_init(&w->loop, &w->wakeup, on_wakeup);
    if (rc < 0) {
        snprintf(err, errlen, "worker %d: cannot create its wakeup: %s", w->id, uv_strerror(rc));
        goto fail;
    }
    w->wakeup.data = w;
    wn_worker_flush_init(w);
    rc = wn_ctl_init(w);
    if (rc < 0) {
        snprintf(err, errlen, "worker %d: cannot create its control channel: %s", w->id,
                 wn_strerror(rc));
        goto fail;
    }
    w->pools = calloc(conf->npools ? conf->npools : 1, sizeof(*w->pools));
    w->sink_pool = calloc(1, sizeof(*w->sink_pool));
    w->sink_server = calloc(1, sizeof(*w->sink_server));
    if (w->pools == NULL || w->sink_pool == NULL || w->sink_server == NULL) {
        rc = WN_ENOMEM;
        snprintf(err, errlen, "worker %d: out of memory", w->id);
        goto fail;
    }
    for (uint32_t p = 0; p < conf->npools; p++) {
        w->pools[p] = wn_pool_rt_create(w, &conf->pools[p], p, err, errlen);
        if (w->pools[p] == NULL) {
            rc = WN_EINVAL;
            goto fail;
        }
        w->npools++;
        /* A socket systemd handed over; else one worker accepts on a unix
         * socket and every one binds its own on TCP. */
        int fd = opts->listen_fds != NULL ? opts->listen_fds[p] : -1;
        if (fd >= 0)
            rc = wn_listen_adopt(w->pools[p], fd, false, err, errlen);
        else if (!conf->pools[p].listen.is_unix || w->accept_unix)
            rc = wn_listen_open(w->pools[p], w->id == 0, err, errlen);
        if (rc < 0)
            goto fail;
    }
    *out = w;
    return 0;

fail:
    destroy(w);
    return rc;
}

static void worker_main(void *arg)
{
    wn_worker_t *w = arg;
    wn_log_set_thread(w->name);
    /* "wn-worker-3" in top -H, ps -L and /proc (at most 15 characters) */
    char comm[16];
    snprintf(comm, sizeof(comm), "wn-worker-%d", w->id);
    pthread_setname_np(pthread_self(), comm);
    /* --batch-wait sleeps tens of microseconds: without this the kernel
     * may stretch each sleep by the default timer slack, 50 usec. */
    if (w->batch_wait_ns > 0)
        prctl(PR_SET_TIMERSLACK, 1000UL);
    wn_log_debug("started");
    for (uint32_t p = 0; p < w->npools; p++) {
        if (!w->pools[p]->conf->preconnect)
            continue;
        for (uint32_t s = 0; s < w->pools[p]->nservers; s++)
            wn_server_preconnect(w->pools[p]->servers[s]);
    }
    uv_run(&w->loop, UV_RUN_DEFAULT);
    wn_log_debug("stopped");
}

void wn_worker_destroy(wn_worker_t *w)
{
    if (w != NULL)
        destroy(w);
}

/*
 * Signals are control's (control/signals.c): a worker blocks every one sent
 * to the process, so the kernel hands them to the control thread and never
 * interrupts a worker's system calls with them. The ones a fault raises, and
 * SIGPROF for profilers, stay with the thread that runs. Blocked here, in
 * the creating thread, around the creation: the worker inherits the mask and
 * is born with it.
 */
int wn_worker_start(wn_worker_t *w)
{
    sigset_t set, old;
    sigfillset(&set);
    int own[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS, SIGPROF};
    for (size_t i = 0; i < WN_ARRAY_SIZE(own); i++)
        sigdelset(&set, own[i]);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    int rc = uv_thread_create(&w->thread, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    w->started = rc == 0;
    return rc;
}

void wn_worker_stop(wn_worker_t *w)
{
    atomic_store_explicit(&w->stop_requested, 1, memory_order_release);
    uv_async_send(&w->wakeup);
}

int wn_worker_join(wn_worker_t *w)
{
    if (w == NULL)
        return 0;
    if (w->started)
        uv_thread_join(&w->thread);
    /* Anything left (close callbacks) finishes here, on this thread, now
     * that the worker's is gone. */
    uv_run(&w->loop, UV_RUN_DEFAULT);
    for (uint32_t p = 0; p < w->npools; p++)
        wn_pool_rt_destroy(w->pools[p]);
    wn_reconf_free_all(w);
    int rc = uv_loop_close(&w->loop);
    if (rc != 0)
        wn_log_error("worker %d: loop closed with handles still open: %s", w->id,
                     uv_strerror(rc));
    wn_buf_unref(w->scratch);
    w->scratch = NULL;
    wn_req_free_all(w);
    wn_ctl_deinit(w);
    size_t live = wn_bufpool_deinit(&w->bufs);
    if (live != 0) {
        wn_log_error("worker %d: %zu buffers still referenced at exit", w->id, live);
        if (rc == 0)
            rc = WN_EIO;
    }
    free(w->pools);
    free(w->sink_pool);
    free(w->sink_server);
    wn_conf_unref(w->conf);
    free(w);
    return rc;
}
