/*
 * worker/worker.c: a worker's thread, loop and life cycle. Created on the
 * main thread (listening sockets are opened there, so address errors are
 * reported before anything starts), then run on its own thread; the only
 * thing another thread may do is ask it to stop (uv_async_send).
 */
#include "worker_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How long a stopping worker waits for in-flight requests before it closes
 * their connections anyway. */
#define STOP_GRACE_MS 5000

static void finish_stop(wn_worker_t *w)
{
    for (uint32_t p = 0; p < w->npools; p++)
        for (uint32_t s = 0; s < w->pools[p].nservers; s++)
            server_close_all(&w->pools[p].servers[s]);
    if (!uv_is_closing((uv_handle_t *)&w->wakeup))
        uv_close((uv_handle_t *)&w->wakeup, NULL);
    if (w->stop_timer_open) {
        uv_close((uv_handle_t *)&w->stop_timer, NULL);
        w->stop_timer_open = false;
    }
    if (w->hold_timer_open) {
        uv_close((uv_handle_t *)&w->hold_timer, NULL);
        w->hold_timer_open = false;
    }
    if (!uv_is_closing((uv_handle_t *)&w->flusher))
        uv_close((uv_handle_t *)&w->flusher, NULL);
}

void worker_client_gone(wn_worker_t *w)
{
    if (w->stopping && w->clients == NULL)
        finish_stop(w);
}

void worker_flush(wn_worker_t *w)
{
    /* Flushing clients can parse more requests (a client under its bounds
     * again), which makes servers dirty again: go until both are quiet. */
    while (w->dirty_servers != NULL || w->dirty_clients != NULL) {
        server_flush_all(w);
        client_flush_all(w);
    }
}

static void on_check(uv_check_t *h)
{
    worker_flush(h->data);
}

static void on_stop_grace(uv_timer_t *t)
{
    wn_worker_t *w = t->data;
    wn_log_warn("stop: %u client connection(s) still busy after %d ms, closing them",
                w->nclients, STOP_GRACE_MS);
    for (client_t *c = w->clients, *next; c != NULL; c = next) {
        next = c->next;
        client_close(c);
    }
}

static void begin_stop(wn_worker_t *w)
{
    if (w->stopping)
        return;
    w->stopping = true;
    for (uint32_t p = 0; p < w->npools; p++) {
        pool_rt_t *pool = &w->pools[p];
        if (pool->listening) {
            uv_close(&pool->listener.handle, NULL);
            pool->listening = false;
        }
    }
    /* Stop taking requests; a client whose requests are all answered closes now. */
    for (client_t *c = w->clients, *next; c != NULL; c = next) {
        next = c->next;
        if (c->reading) {
            uv_read_stop(&c->h.stream);
            c->reading = false;
        }
        c->eof = true;
        client_mark_ready(c);
    }
    client_flush_all(w);
    if (w->clients == NULL) {
        finish_stop(w);
        return;
    }
    uv_timer_init(&w->loop, &w->stop_timer);
    w->stop_timer.data = w;
    w->stop_timer_open = true;
    uv_timer_start(&w->stop_timer, on_stop_grace, STOP_GRACE_MS, 0);
}

static void on_wakeup(uv_async_t *a)
{
    wn_worker_t *w = a->data;
    ctl_receive(w);
    if (atomic_load_explicit(&w->stop_requested, memory_order_acquire))
        begin_stop(w);
}

int wn_worker_create(wn_conf_t *conf, const wn_worker_options_t *opts, wn_worker_t **out,
                     char *err, size_t errlen)
{
    wn_worker_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return WN_ENOMEM;
    }
    w->id = opts->id;
    w->nworkers = opts->nworkers;
    w->accept_unix = opts->accept_unix;
    w->all = opts->all;
    w->control_wakeup = opts->control_wakeup;
    w->start_time = (uint64_t)time(NULL);
    snprintf(w->name, sizeof(w->name), "worker %d", opts->id);
    wn_conf_ref(conf);
    w->conf = conf;
    wn_bufpool_init(&w->bufs, opts->mbuf_size, 4096);

    int rc = uv_loop_init(&w->loop);
    if (rc < 0) {
        snprintf(err, errlen, "worker %d: cannot create its loop: %s", w->id, uv_strerror(rc));
        goto fail_loop;
    }
    rc = uv_async_init(&w->loop, &w->wakeup, on_wakeup);
    if (rc < 0) {
        snprintf(err, errlen, "worker %d: %s", w->id, uv_strerror(rc));
        goto fail_async;
    }
    w->wakeup.data = w;
    /* Runs after every poll phase: the end of a loop turn. */
    uv_check_init(&w->loop, &w->flusher);
    w->flusher.data = w;
    uv_check_start(&w->flusher, on_check);
    uv_unref((uv_handle_t *)&w->flusher);
    rc = ctl_init(w);
    if (rc < 0) {
        snprintf(err, errlen, "worker %d: cannot create its control channel: %s", w->id,
                 wn_strerror(rc));
        goto fail_ctl;
    }

    w->pools = calloc(conf->npools, sizeof(*w->pools));
    if (w->pools == NULL) {
        rc = WN_ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto fail_pools;
    }
    for (uint32_t p = 0; p < conf->npools; p++) {
        rc = pool_rt_init(&w->pools[p], w, &conf->pools[p], p);
        if (rc < 0) {
            snprintf(err, errlen, "pool '%s': cannot listen on %s: %s", conf->pools[p].name,
                     conf->pools[p].listen_text, wn_strerror(rc));
            goto fail_pool;
        }
        w->npools++;
    }
    *out = w;
    return 0;

fail_pool:
    for (uint32_t p = 0; p < w->npools; p++) {
        if (w->pools[p].listening)
            uv_close(&w->pools[p].listener.handle, NULL);
    }
fail_pools:
    uv_close((uv_handle_t *)&w->hold_timer, NULL);
    w->hold_timer_open = false;
fail_ctl:
    uv_close((uv_handle_t *)&w->flusher, NULL);
    uv_close((uv_handle_t *)&w->wakeup, NULL);
fail_async:
    uv_run(&w->loop, UV_RUN_DEFAULT);
    for (uint32_t p = 0; p < w->npools; p++)
        pool_rt_deinit(&w->pools[p]);
    free(w->pools);
    uv_loop_close(&w->loop);
    ctl_deinit(w);
fail_loop:
    wn_conf_unref(w->conf);
    free(w);
    return rc;
}

static void worker_main(void *arg)
{
    wn_worker_t *w = arg;
    wn_log_set_thread(w->name);
    wn_log_debug("started");
    for (uint32_t p = 0; p < w->npools; p++) {
        for (uint32_t s = 0; s < w->pools[p].nservers; s++) {
            if (w->pools[p].conf->preconnect)
                server_preconnect(&w->pools[p].servers[s]);
        }
    }
    uv_run(&w->loop, UV_RUN_DEFAULT);
    wn_log_debug("stopped");
}

int wn_worker_start(wn_worker_t *w)
{
    return uv_thread_create(&w->thread, worker_main, w);
}

void wn_worker_stop(wn_worker_t *w)
{
    atomic_store_explicit(&w->stop_requested, 1, memory_order_release);
    uv_async_send(&w->wakeup);
}

void wn_worker_join(wn_worker_t *w)
{
    if (w == NULL)
        return;
    uv_thread_join(&w->thread);
    for (uint32_t p = 0; p < w->npools; p++)
        pool_rt_deinit(&w->pools[p]);
    /* Anything left (closing handles) finishes here. */
    uv_run(&w->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&w->loop);
    if (rc != 0)
        wn_log_error("worker %d: loop closed with handles still open: %s", w->id,
                     uv_strerror(rc));
    wn_buf_unref(w->scratch);
    w->scratch = NULL;
    ctl_deinit(w);
    size_t live = wn_bufpool_deinit(&w->bufs);
    if (live != 0)
        wn_log_error("worker %d: %zu buffers still referenced at exit", w->id, live);
    free(w->pools);
    wn_conf_unref(w->conf);
    free(w);
}

const wn_worker_stats_t *wn_worker_stats(const wn_worker_t *w)
{
    return &w->stats;
}
