/*
 * control/dns.c: servers' host names looked up again while walnut runs, so
 * a name that moves (a cloud cache node replaced, a container rescheduled)
 * is followed, as twemproxy follows it when it reconnects.
 *
 * Control alone asks DNS, as at start: every worker and control's probes
 * use the one address it found. The lookups run on libuv's thread pool, so
 * a DNS server that does not answer never holds control's loop. A server
 * given by name (not an address literal, not a unix path) is looked up
 * every dns_refresh_interval while it answers, and at most every second
 * while it has no address or is failing (that is when a moved name shows).
 * An answer that still lists the address in use changes nothing (a name
 * with several addresses in rotating order does not move walnut about);
 * otherwise the first address is taken, as at start, and the server moves
 * there through a new generation (reload.c), exactly as if its server line
 * had changed: workers open connections to the new address and let the old
 * ones finish. A failed lookup keeps the address the server has.
 * Control thread only.
 */
#include "control_priv.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#include "walnut/core.h"

#define DNS_TICK_MS 100
#define DNS_FAILING_MS 1000 /* a failing server's name, looked up this often at most */
#define DNS_MAX_INFLIGHT 2  /* lookups at once: the rest of the thread pool stays free */
#define ADDR_TEXT 80        /* "[IPv6]:port" */

/* A host name, not an address literal or a unix path. */
static bool named(const wn_conf_server_t *sc)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return !sc->addr.is_unix && sc->addr.host[0] != '\0' &&
           inet_pton(AF_INET, sc->addr.host, buf) != 1 &&
           inet_pton(AF_INET6, sc->addr.host, buf) != 1;
}

static bool failing(const hserver_t *s)
{
    return !s->conf->has_sa || s->failures > 0 || s->ejected || s->suspected;
}

/* How long after its last lookup s is looked up again; 0: never. */
static uint64_t period(const hserver_t *s)
{
    uint64_t every = (uint64_t)s->pool->conf->dns_refresh_interval;
    if (every == 0 || !s->dns.named)
        return 0;
    return failing(s) ? WN_MIN(every, DNS_FAILING_MS) : every;
}

static void lookup_done(uv_getaddrinfo_t *req, int status, struct addrinfo *res);

static void lookup_start(control_t *ctl, hserver_t *s)
{
    const wn_conf_server_t *sc = s->conf;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    char port[8];
    snprintf(port, sizeof(port), "%u", sc->addr.port);
    s->dns.req.data = s;
    s->dns.last_ms = uv_now(&ctl->loop);
    /* the name is the configuration's: it outlives the lookup, which copies it */
    if (uv_getaddrinfo(&ctl->loop, &s->dns.req, lookup_done, sc->addr.host, port, &hints) == 0) {
        s->dns.busy = true;
        ctl->dns_inflight++;
    }
}

/* Starts the lookups that are due, while fewer than DNS_MAX_INFLIGHT are
 * out: round the servers of every pool from where the last scan stopped, so
 * that with more due than can run, each has its turn. */
static void scan(control_t *ctl)
{
    uint64_t now = uv_now(&ctl->loop);
    uint32_t total = 0;
    for (uint32_t i = 0; i < ctl->npools; i++)
        total += ctl->pools[i]->nservers;
    uint32_t p = 0, j = 0;
    if (total > 0) { /* the cursor, as pool and server */
        uint32_t k = ctl->dns_cursor % total;
        while (k >= ctl->pools[p]->nservers)
            k -= ctl->pools[p++]->nservers;
        j = k;
    }
    for (uint32_t n = 0; n < total && ctl->dns_inflight < DNS_MAX_INFLIGHT; n++) {
        hserver_t *s = ctl->pools[p]->servers[j];
        uint64_t every = period(s);
        if (every > 0 && !s->dns.busy && now - s->dns.last_ms >= every)
            lookup_start(ctl, s);
        ctl->dns_cursor++;
        for (j++; p < ctl->npools && j >= ctl->pools[p]->nservers; j = 0)
            p = (p + 1) % ctl->npools;
    }
}

static void on_tick(uv_timer_t *t)
{
    scan(t->data);
}

/* The address s uses, or will once the generation it moved in reaches it. */
static const struct sockaddr_storage *in_use(const hserver_t *s)
{
    if (s->dns.moved)
        return &s->dns.sa;
    return s->conf->has_sa ? &s->conf->sa : NULL;
}

static void lookup_done(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    hserver_t *s = req->data;
    s->dns.busy = false;
    if (s->retired) { /* its pool may be gone: only s is left to free */
        uv_freeaddrinfo(res);
        health_server_release(s);
        return;
    }
    control_t *ctl = s->pool->ctl;
    ctl->dns_inflight--;
    s->dns.last_ms = uv_now(&ctl->loop);
    scan(ctl); /* the next due, without waiting for the tick */
    const wn_conf_pool_t *pc = s->pool->conf;
    const wn_conf_server_t *sc = s->conf;
    const struct sockaddr_storage *cur = in_use(s);
    char was[ADDR_TEXT] = "no address";
    if (cur != NULL)
        wn_sockaddr_format(cur, was, sizeof(was));
    if (status < 0 || res == NULL) {
        if (status != UV_ECANCELED && !s->dns.failed && cur != NULL)
            wn_log_warn("pool '%s': server %s: cannot look '%s' up again (%s): it stays at %s",
                        pc->name, sc->name, sc->addr.host, wn_strerror(status), was);
        s->dns.failed = status != UV_ECANCELED;
        uv_freeaddrinfo(res);
        return;
    }
    s->dns.failed = false;
    for (const struct addrinfo *a = res; cur != NULL && a != NULL; a = a->ai_next) {
        struct sockaddr_storage ss = {0};
        memcpy(&ss, a->ai_addr, WN_MIN((size_t)a->ai_addrlen, sizeof(ss)));
        if (wn_sockaddr_same(&ss, cur)) {
            uv_freeaddrinfo(res);
            return; /* still listed: stays */
        }
    }
    struct sockaddr_storage first = {0};
    memcpy(&first, res->ai_addr, WN_MIN((size_t)res->ai_addrlen, sizeof(first)));
    uv_freeaddrinfo(res);
    char now_at[ADDR_TEXT];
    wn_sockaddr_format(&first, now_at, sizeof(now_at));
    if (sc->has_sa && wn_sockaddr_same(&first, &sc->sa)) {
        s->dns.moved = false; /* back where the configuration in force has it */
    } else {
        s->dns.sa = first;
        s->dns.moved = true;
    }
    wn_log_notice("pool '%s': server %s: '%s' now resolves to %s (was %s); moving it there",
                  pc->name, sc->name, sc->addr.host, now_at, was);
    wn_control_readdress(ctl);
}

void wn_dns_start(control_t *ctl)
{
    bool any = false; /* a name to look up: else control's loop is not woken for it */
    for (uint32_t i = 0; i < ctl->npools && !any; i++) {
        hpool_t *p = ctl->pools[i];
        for (uint32_t j = 0; j < p->nservers && !any; j++)
            any = p->conf->dns_refresh_interval > 0 && p->servers[j]->dns.named;
    }
    if (!any)
        uv_timer_stop(&ctl->dns_timer);
    else if (!uv_is_active((uv_handle_t *)&ctl->dns_timer))
        uv_timer_start(&ctl->dns_timer, on_tick, DNS_TICK_MS, DNS_TICK_MS);
}

void wn_dns_server_new(control_t *ctl, hserver_t *s)
{
    s->dns.last_ms = uv_now(&ctl->loop);
    s->dns.named = named(s->conf);
}

void wn_dns_server_retire(hserver_t *s)
{
    if (!s->dns.busy)
        return;
    s->pool->ctl->dns_inflight--;
    s->closes++; /* lookup_done releases it, cancelled or not */
    uv_cancel((uv_req_t *)&s->dns.req);
}
