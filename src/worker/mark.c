/*
 * worker/mark.c: marking work for the flush. Whatever happens in a loop turn
 * (a read, a reply, a failure, a timer, a message from control) only puts
 * clients and server connections on the worker's dirty lists; the flush
 * (flush.c) does the work. The bottom of the core: it calls nothing but
 * libuv. Worker thread only.
 */
#include "core_types.h"

static void on_kick(uv_idle_t *h)
{
    (void)h; /* its only job is to keep the poll phase from sleeping */
}

void wn_worker_kick(wn_worker_t *w)
{
    if (!w->flushing && !w->stopped)
        uv_idle_start(&w->kick, on_kick);
}

void wn_client_mark(client_t *c)
{
    if (c->dirty || c->closing)
        return;
    c->dirty = true;
    c->dirty_next = c->w->dirty_clients;
    c->w->dirty_clients = c;
    wn_worker_kick(c->w);
}

void wn_client_defer(client_t *c)
{
    if (c->deferring || c->closing)
        return;
    c->deferring = true;
    c->defer_next = c->w->deferred_clients;
    c->w->deferred_clients = c;
}

void wn_worker_undefer(wn_worker_t *w)
{
    while (w->deferred_clients != NULL) {
        client_t *c = w->deferred_clients;
        w->deferred_clients = c->defer_next;
        c->deferring = false;
        c->defer_next = NULL;
        wn_client_mark(c);
    }
}

void wn_sconn_mark(sconn_t *c)
{
    if (c->dirty)
        return;
    wn_worker_t *w = c->server->pool->w;
    c->dirty = true;
    c->dirty_next = w->dirty_servers;
    w->dirty_servers = c;
    wn_worker_kick(w);
}

static void mark_unsent(server_rt_t *s)
{
    for (uint32_t i = 0; i < s->nconns; i++)
        if (s->conns[i] != NULL && s->conns[i]->unsent != NULL)
            wn_sconn_mark(s->conns[i]);
}

void wn_server_wake_successors(server_rt_t *s)
{
    pool_rt_t *p = s->pool;
    for (uint32_t i = 0; i < p->nservers; i++)
        mark_unsent(p->servers[i]);
    for (server_rt_t *o = p->w->retired_servers; o != NULL && o != s; o = o->retired_next)
        if (o->pool == p)
            mark_unsent(o); /* retired after s: newer */
}

void wn_sconn_recycle(sconn_t *c)
{
    c->recycle = true;
    wn_sconn_mark(c);
}

void wn_sconn_fail(sconn_t *c, int err)
{
    if (c->fail_err != 0)
        return;
    c->fail_err = err;
    if (c->handle_open && c->state == SCONN_CONNECTED)
        uv_read_stop(&c->h.stream);
    if (c->timer_open)
        uv_timer_stop(&c->timer);
    wn_sconn_mark(c);
}

void wn_client_stream(client_t *c, req_t *r)
{
    if (c->head == r)
        wn_client_mark(c);
}
