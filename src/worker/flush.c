/*
 * worker/flush.c: the per-turn flush, the only place that connects, writes
 * and closes. Everything that happens in a loop turn (reads, replies,
 * failures, timers, control messages) only marks server connections and
 * clients dirty; a uv_check handle then flushes them once, after the poll
 * phase. Work marked outside the poll phase (timers, close callbacks) starts
 * an idle handle so the loop does not sleep before flushing. Worker thread.
 */
#include "protocol.h"

#include <errno.h>
#include <malloc.h>
#include <time.h>

/* Give freed memory back to the system once this much went back to malloc. */
#define TRIM_AFTER_BYTES (16u << 20)
#define TRIM_DELAY_MS 1000

static void on_trim(uv_timer_t *t)
{
    wn_worker_t *w = t->data;
    w->trimmed_at = w->bufs.freed;
    malloc_trim(0);
}

/* Once per flush: publish the buffer gauge, and when much memory went back
 * to malloc since the last trim, trim a little later (glibc keeps freed
 * chunks in its arenas otherwise, and RSS never shrinks). */
static void after_flush(wn_worker_t *w)
{
    /* Gauges set here are zeroed in a reload's old block (reconf.c). */
    wn_stat_set(WN_GSTAT(w, buffer_bytes), w->bufs.bytes);
    wn_stat_set(WN_GSTAT(w, client_bytes), w->clients_held);
    if (w->bufs.freed - w->trimmed_at >= TRIM_AFTER_BYTES && !w->stopped &&
        !uv_is_active((uv_handle_t *)&w->trim_timer))
        uv_timer_start(&w->trim_timer, on_trim, TRIM_DELAY_MS, 0);
}

/* Closing a server fails its requests (clients become dirty); flushing a
 * client may parse more requests (servers become dirty): go on until both
 * lists are empty. Counts the connections flushed, and in *nclients the
 * clients among them. */
static uint32_t flush_dirty(wn_worker_t *w, uint32_t *nclients)
{
    uint32_t n = 0;
    while (w->dirty_servers != NULL || w->dirty_clients != NULL) {
        while (w->dirty_servers != NULL) {
            n++;
            sconn_t *c = w->dirty_servers;
            w->dirty_servers = c->dirty_next;
            c->dirty = false;
            c->dirty_next = NULL;
            wn_sconn_flush(c);
        }
        while (w->dirty_clients != NULL) {
            n++;
            (*nclients)++;
            client_t *c = w->dirty_clients;
            w->dirty_clients = c->dirty_next;
            c->dirty = false;
            c->dirty_next = NULL;
            wn_client_flush(c);
        }
    }
    return n;
}

/* Flush what this turn made dirty; how many connections that was, and in
 * *nclients how many clients. */
static uint32_t flush(wn_worker_t *w, uint32_t *nclients)
{
    w->flushing = true;
    wn_worker_undefer(w);
    if (w->dirty_servers != NULL || w->dirty_clients != NULL)
        wn_worker_tick(w);
    uint32_t n = flush_dirty(w, nclients);
    /* With this turn's replies handed to the sockets (a client that reads
     * has let go of them), what clients hold is weighed against
     * --client-memory; the clients it marks to go are closed now. */
    if (wn_client_memory_check(w))
        flush_dirty(w, nclients);
    w->flushing = false;
    uv_idle_stop(&w->kick);
    if (w->deferred_clients != NULL)
        wn_worker_kick(w); /* the next turn is theirs: the poll must not sleep */
    after_flush(w);
    /* Stopping and the last client has gone: the worker ends. */
    if (w->stopping && w->clients == NULL && !w->stopped)
        wn_worker_finish_stop(w);
    return n;
}

static void close_if_open(uv_handle_t *h)
{
    if (h->loop != NULL && !uv_is_closing(h))
        uv_close(h, NULL);
}

void wn_worker_finish_stop(wn_worker_t *w)
{
    if (w->stopped)
        return;
    w->stopped = true;
    if (w->clients == NULL && w->clients_held != 0)
        wn_log_error("internal: %llu bytes still counted for clients with none left",
                     (unsigned long long)w->clients_held);
    if (w->clients == NULL && (w->clients_waiting != 0 || w->reqs_waiting != 0))
        wn_log_error("internal: %u clients (%llu requests) still counted as waiting with none left",
                     w->clients_waiting, (unsigned long long)w->reqs_waiting);
    for (uint32_t p = 0; p < w->npools; p++)
        for (uint32_t s = 0; s < w->pools[p]->nservers; s++) {
            wn_server_check_counts(w->pools[p]->servers[s]);
            wn_server_close_all(w->pools[p]->servers[s]);
        }
    wn_reconf_close_all(w);
    close_if_open((uv_handle_t *)&w->wakeup);
    if (w->stop_timer_open) {
        uv_close((uv_handle_t *)&w->stop_timer, NULL);
        w->stop_timer_open = false;
    }
    wn_ctl_close(w);
    close_if_open((uv_handle_t *)&w->flusher);
    close_if_open((uv_handle_t *)&w->kick);
    close_if_open((uv_handle_t *)&w->trim_timer);
    close_if_open((uv_handle_t *)&w->pace_timer);
}

/*
 * --batch-wait: after a busy turn, sleep a while before polling again. What
 * comes meanwhile waits in the kernel's socket queues, and is read in one
 * turn and answered in one flush: fewer, larger reads and writes for the
 * worker, and for the servers and clients it talks to, whose threads it
 * then wakes less often. A sleeping thread is not in epoll_wait, so what
 * arrives does not wake it (on a VM each such wakeup is a trap to the host
 * on both CPUs); only its own timer does. The cost is the delay, up to the
 * wait, added to what comes in it.
 *
 * A turn is busy when it flushed BUSY_CLIENTS clients or more, or two
 * connections or more while BUSY_CLIENTS clients or more have requests
 * unanswered (read whole: wn_client_recount). The first half alone never
 * started in front of memcached, which answers so fast that each turn
 * carried a request or two; the second alone misses the big turns, which
 * answer every client they read from. Connections of any kind would not
 * do for the first half: one client's MGET over eight servers flushes
 * eight, and a lone client would pay the wait on every such request. A
 * few clients never make a turn busy, nor does a turn that flushed one
 * connection; a stopping worker does not wait. worker_main sets the
 * thread's timer slack so the sleep is as long as asked, not up to 50
 * usec longer.
 */
#define BUSY_CLIENTS 8

/*
 * The wait is the option's for clients that send a request and wait for its
 * reply: each pays it once a request. A client that pipelines d requests
 * pays it once for the d, so while the waiting clients have more requests
 * unanswered each, on average, the wait is longer, to gather more of what
 * they send, and longer again while the replies are long: each request is
 * then more work for the servers and clients, whose turns the wait is to
 * gather, and a short wait answers them in more, smaller batches. From an
 * average of DEPTH_FULL requests each the wait is 1.7 times the option with
 * replies of a few bytes (1.8 with 32-byte values), 5 times with replies of
 * REPLY_FULL bytes or more, linearly between (measured, bench/README.md: at
 * 1 KiB pipeline 16, 5 times served more than 2.5 and as much as 7.5; at
 * 32 B, 5 times served a quarter less than 2.5, and 1.7 2-9 % more with
 * the client's hold, 14 % without it). An average of 1 (or no client
 * waiting: a busy turn of replies only) keeps the option's value, whatever
 * the replies. The sleep is the worker's, every client of it waits it, so
 * each client's requests count up to DEPTH_FULL: one pipelining thousands,
 * or stuck on a slow server, does not make the average.
 */
#define DEPTH_FULL WN_BATCH_DEPTH_FULL
#define REPLY_FULL WN_BATCH_REPLY_FULL

uint64_t wn_batch_wait_ns(uint64_t base_ns, uint64_t reqs, uint32_t clients, uint64_t reply_bytes)
{
    uint64_t depth = clients > 0 ? reqs / clients : 1;
    depth = WN_MAX(depth, 1);
    depth = WN_MIN(depth, DEPTH_FULL);
    uint64_t reply = WN_MIN(reply_bytes, REPLY_FULL);
    /* at DEPTH_FULL: base_ns and 0.7 times it more, 4 times with long replies */
    return base_ns + base_ns * (depth - 1) * (7 * REPLY_FULL + 33 * reply) /
                         (10 * REPLY_FULL * (DEPTH_FULL - 1));
}

/* The bytes written to clients a request answered, `bytes` for `n` since the
 * last wait, into an average over the last few waits: an eighth of the way
 * to each sample, rounded towards it, so a steady size is reached exactly
 * (the first sample is the average). Each sample counts up to REPLY_FULL,
 * past which the wait is the same: one 4 MiB reply among 16 would otherwise
 * hold the longest wait for 27 busy turns (review). */
uint64_t wn_batch_reply_avg(uint64_t avg, uint64_t bytes, uint64_t n)
{
    if (n == 0)
        return avg;
    uint64_t now = WN_MIN(bytes / n, REPLY_FULL);
    if (avg == 0)
        return now;
    return now >= avg ? avg + (now - avg + 7) / 8 : avg - (avg - now + 7) / 8;
}

static uint64_t reply_average(wn_worker_t *w)
{
    w->reply_avg = wn_batch_reply_avg(w->reply_avg, w->answered_bytes, w->answered);
    if (w->answered > 0)
        w->answered = w->answered_bytes = 0;
    return w->reply_avg;
}

static void batch_wait(wn_worker_t *w)
{
    uint64_t ns =
        wn_batch_wait_ns(w->batch_wait_ns, w->reqs_waiting, w->clients_waiting, reply_average(w));
    wn_stat_add(WN_GSTAT(w, batch_waits), 1);
    wn_stat_add(WN_GSTAT(w, batch_wait_usec), ns / 1000);
    struct timespec left = {.tv_sec = (time_t)(ns / 1000000000u),
                            .tv_nsec = (long)(ns % 1000000000u)};
    while (nanosleep(&left, &left) < 0 && errno == EINTR)
        ;
}

static void on_check(uv_check_t *h)
{
    wn_worker_t *w = h->data;
    uint32_t nclients = 0;
    uint32_t n = flush(w, &nclients);
    bool busy = nclients >= BUSY_CLIENTS || (n >= 2 && w->clients_waiting >= BUSY_CLIENTS);
    if (busy && w->batch_wait_ns > 0 && !w->stopping)
        batch_wait(w);
}

void wn_worker_flush_init(wn_worker_t *w)
{
    uv_check_init(&w->loop, &w->flusher);
    w->flusher.data = w;
    uv_check_start(&w->flusher, on_check);
    uv_unref((uv_handle_t *)&w->flusher);
    uv_idle_init(&w->loop, &w->kick);
    w->kick.data = w;
    uv_unref((uv_handle_t *)&w->kick);
    uv_timer_init(&w->loop, &w->trim_timer);
    w->trim_timer.data = w;
    uv_unref((uv_handle_t *)&w->trim_timer);
    wn_client_pace_init(w);
}
