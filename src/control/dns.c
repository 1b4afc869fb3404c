/*
 * control/dns.c: servers' host names looked up again while walnut runs, so
 * a name that moves (a cloud cache node replaced, a container rescheduled)
 * is followed, as twemproxy follows it when it reconnects.
 *
 * Control alone asks DNS, as at start: every worker and control's probes
 * use the one address it found. Each lookup runs on a thread of its own
 * (at most two at once), so a DNS server that does not answer never holds
 * control's loop, nor its stop: a lookup still out when walnut stops is
 * left to finish alone (libuv's thread pool would be waited for). A server
 * given by name (not an address literal, not a unix path) is looked up
 * every dns_refresh_interval while it answers, and every second (or
 * every dns_refresh_interval, when shorter) while it has no address or is failing (that is when a
 * moved name shows). An answer that still lists the address in use changes nothing (a name with
 * several addresses in rotating order does not move walnut about); otherwise the first address is
 * taken, as at start, and the server moves there through a new generation (reload.c), exactly as if
 * its server line had changed: workers open connections to the new address and let the old ones
 * finish. A failed lookup keeps the address the server has. Control thread only.
 */
#include "control_priv.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"

/* The soonest the timer looks again. */
#define DNS_TICK_MS 100
/* The timer looks at least every WN_DNS_FAILING_MS (control_priv.h), as
 * a server may start failing between its lookups. */
/* Lookup threads at once, those of servers gone since included: a resolver
 * that hangs while reloads add and remove servers holds this many at most. */
#define DNS_MAX_THREADS 2
#define DNS_MAX_ADDRS 16    /* addresses of one answer compared with the one in use */
#define ADDR_TEXT 80        /* "[IPv6]:port" */

/* One lookup: made by control, filled in by its thread, handed back to
 * control through the hub. `s` is control's alone (the thread never reads
 * it): NULL once the server is gone. */
typedef struct dns_lookup {
    struct dns_lookup *next; /* in the hub's list of answers */
    hserver_t *s;
    int n; /* how many addrs, or a UV_EAI_* / negative errno */
    struct sockaddr_storage addrs[DNS_MAX_ADDRS];
    uint16_t port;
    char host[]; /* the name, copied: the thread never reads the configuration */
} dns_lookup_t;

/* Where lookup threads leave their answers. One control per process; a
 * thread that finishes after control stopped frees its own lookup. */
static struct {
    pthread_mutex_t mu;
    uint32_t threads;  /* lookup threads running */
    bool alive;        /* control takes answers */
    uv_async_t *async; /* control's, woken for each answer (only while alive) */
    dns_lookup_t *done;
} hub = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *lookup_main(void *arg)
{
    dns_lookup_t *l = arg;
    wn_conf_addr_t a = {.host = l->host, .port = l->port};
    l->n = wn_conf_addr_lookup_all(&a, false, l->addrs, NULL, DNS_MAX_ADDRS);
    pthread_mutex_lock(&hub.mu);
    hub.threads--;
    if (hub.alive) {
        l->next = hub.done;
        hub.done = l;
        uv_async_send(hub.async);
        l = NULL;
    }
    pthread_mutex_unlock(&hub.mu);
    free(l); /* control stopped */
    return NULL;
}

bool wn_dns_named(const wn_conf_addr_t *a)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return !a->is_unix && a->host[0] != '\0' && inet_pton(AF_INET, a->host, buf) != 1 &&
           inet_pton(AF_INET6, a->host, buf) != 1;
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
    return failing(s) ? WN_MIN(every, WN_DNS_FAILING_MS) : every;
}

bool wn_dns_thread(void *(*main)(void *), void *arg)
{
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0)
        return false;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_t t;
    int rc = pthread_create(&t, &attr, main, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc == 0;
}

static void lookup_start(control_t *ctl, hserver_t *s)
{
    const wn_conf_server_t *sc = s->conf;
    size_t len = strlen(sc->addr.host);
    s->dns.last_ms = uv_now(&ctl->loop);
    dns_lookup_t *l = calloc(1, sizeof(*l) + len + 1);
    if (l == NULL)
        return; /* asked again at its next turn */
    l->s = s;
    memcpy(l->host, sc->addr.host, len + 1);
    l->port = sc->addr.port;
    pthread_mutex_lock(&hub.mu);
    hub.threads++; /* before it runs: it takes itself off when done */
    pthread_mutex_unlock(&hub.mu);
    if (!wn_dns_thread(lookup_main, l)) {
        pthread_mutex_lock(&hub.mu);
        hub.threads--;
        pthread_mutex_unlock(&hub.mu);
        free(l);
        return;
    }
    s->dns.lookup = l;
}

static uint32_t threads_running(void)
{
    pthread_mutex_lock(&hub.mu);
    uint32_t n = hub.threads;
    pthread_mutex_unlock(&hub.mu);
    return n;
}

static void on_timer(uv_timer_t *t);

/* Starts the lookups that are due, while fewer than DNS_MAX_THREADS run:
 * round the servers of every pool from where the last scan stopped, so
 * that with more due than can run, each has its turn. Then sets the timer
 * for the next one due. */
static void scan(control_t *ctl)
{
    uint64_t now = uv_now(&ctl->loop);
    uint32_t total = 0;
    for (uint32_t i = 0; i < ctl->npools; i++)
        total += ctl->pools[i]->nservers;
    uint32_t p = 0, j = 0, start = total > 0 ? ctl->dns_cursor % total : 0;
    if (total > 0) { /* the cursor, as pool and server */
        uint32_t k = start;
        while (k >= ctl->pools[p]->nservers)
            k -= ctl->pools[p++]->nservers;
        j = k;
    }
    uint64_t next = WN_DNS_FAILING_MS;
    bool any = false;
    uint32_t running = threads_running(); /* threads only end meanwhile: fewer, never more */
    for (uint32_t n = 0; n < total; n++) {
        hserver_t *s = ctl->pools[p]->servers[j];
        uint64_t every = period(s);
        if (every > 0) {
            any = true;
            uint64_t due = s->dns.last_ms + every;
            if (s->dns.lookup == NULL && due <= now && running < DNS_MAX_THREADS) {
                lookup_start(ctl, s);
                running += s->dns.lookup != NULL;
                ctl->dns_cursor = start + n + 1;
            } else if (s->dns.lookup == NULL) {
                next = WN_MIN(next, due > now ? due - now : DNS_TICK_MS);
            }
        }
        for (j++; j >= ctl->pools[p]->nservers; j = 0)
            p = (p + 1) % ctl->npools;
    }
    if (any)
        uv_timer_start(&ctl->dns_timer, on_timer, WN_MAX(next, DNS_TICK_MS), 0);
    else
        uv_timer_stop(&ctl->dns_timer);
}

static void on_timer(uv_timer_t *t)
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

/* s's lookup answered. */
static void answered(control_t *ctl, hserver_t *s, const dns_lookup_t *l)
{
    s->dns.last_ms = uv_now(&ctl->loop);
    const wn_conf_pool_t *pc = s->pool->conf;
    const wn_conf_server_t *sc = s->conf;
    const struct sockaddr_storage *cur = in_use(s);
    char was[ADDR_TEXT] = "no address";
    if (cur != NULL)
        wn_sockaddr_format(cur, was, sizeof(was));
    s->dns.lookups++;
    if (l->n < 0) {
        s->dns.failures++;
        if (!s->dns.failed && cur != NULL)
            wn_log_warn("pool '%s': server %s: cannot look '%s' up again (%s): it stays at %s",
                        pc->name, sc->label, sc->addr.host, wn_strerror(l->n), was);
        s->dns.failed = true;
        return;
    }
    s->dns.failed = false;
    for (int i = 0; cur != NULL && i < l->n; i++) {
        if (wn_sockaddr_same(&l->addrs[i], cur)) {
            /* still listed: stays (and a move not yet made, for want of
             * memory, is tried again) */
            if (s->dns.moved)
                wn_control_readdress(ctl);
            return;
        }
    }
    const struct sockaddr_storage *first = &l->addrs[0];
    char now_at[ADDR_TEXT];
    wn_sockaddr_format(first, now_at, sizeof(now_at));
    if (sc->has_sa && wn_sockaddr_same(first, &sc->sa)) {
        s->dns.moved = false; /* back where the configuration in force has it */
    } else {
        s->dns.sa = *first;
        s->dns.moved = true;
    }
    if (cur != NULL) /* a name found at last is no move */
        s->dns.moves++;
    wn_log_notice("pool '%s': server %s: '%s' now resolves to %s (was %s); moving it there",
                  pc->name, sc->label, sc->addr.host, now_at, was);
    wn_control_readdress(ctl);
}

/* Lookup threads left answers: each goes to its server (if it is still
 * there), then the next lookups due start. */
static void on_answers(uv_async_t *a)
{
    control_t *ctl = a->data;
    pthread_mutex_lock(&hub.mu);
    dns_lookup_t *l = hub.done;
    hub.done = NULL;
    pthread_mutex_unlock(&hub.mu);
    while (l != NULL) {
        dns_lookup_t *next = l->next;
        hserver_t *s = l->s;
        if (s != NULL) {
            s->dns.lookup = NULL;
            answered(ctl, s, l);
        }
        free(l);
        l = next;
    }
    scan(ctl);
}

void wn_dns_init(control_t *ctl)
{
    uv_timer_init(&ctl->loop, &ctl->dns_timer);
    ctl->dns_timer.data = ctl;
    uv_async_init(&ctl->loop, &ctl->dns_async, on_answers);
    ctl->dns_async.data = ctl;
    pthread_mutex_lock(&hub.mu);
    hub.alive = true;
    hub.async = &ctl->dns_async;
    pthread_mutex_unlock(&hub.mu);
}

void wn_dns_start(control_t *ctl)
{
    scan(ctl);
}

void wn_dns_stop(control_t *ctl)
{
    pthread_mutex_lock(&hub.mu);
    hub.alive = false;
    hub.async = NULL;
    dns_lookup_t *l = hub.done;
    hub.done = NULL;
    pthread_mutex_unlock(&hub.mu);
    while (l != NULL) { /* answers not yet taken: their servers are gone */
        dns_lookup_t *next = l->next;
        free(l);
        l = next;
    }
    uv_close((uv_handle_t *)&ctl->dns_timer, NULL);
    uv_close((uv_handle_t *)&ctl->dns_async, NULL);
}

void wn_dns_server_new(control_t *ctl, hserver_t *s)
{
    s->dns.last_ms = uv_now(&ctl->loop);
    s->dns.named = wn_dns_named(&s->conf->addr);
}

void wn_dns_server_retire(hserver_t *s)
{
    if (s->dns.lookup == NULL)
        return;
    /* its answer is dropped when it comes (or by its thread, after a stop);
     * its thread counts against DNS_MAX_THREADS until then */
    s->dns.lookup->s = NULL;
    s->dns.lookup = NULL;
}
