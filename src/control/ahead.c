/*
 * control/ahead.c: the names a reload must look up (servers it adds, a new
 * listen address given by name), asked on threads of their own before the
 * reload is prepared, so that control's loop goes on meanwhile: systemd's
 * watchdog pings, the stats server, a stop, the probes. A resolver that
 * takes its timeout (5 s per try with glibc, while a DNS server does not
 * answer) once blocked control for it, per name: past WatchdogSec, systemd
 * killed walnut in the middle of a reload.
 *
 * Each distinct host is asked once (AHEAD_THREADS at once at most); when
 * the last answers, control's async wakes and the reload goes on
 * (reload.c), reading the answers here instead of asking DNS. A stop drops
 * the batch: threads still asking free it when the last one ends, and never
 * touch control again. Control thread only, but for ahead_main and what it
 * reads and writes under the batch's mutex.
 */
#include "control_priv.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"

#define AHEAD_THREADS 4

typedef struct ahead_name {
    char *host; /* owned copy: threads never read the configuration */
    uint16_t port;
    int rc; /* 0, or the lookup's error */
    struct sockaddr_storage sa;
    uint32_t salen;
} ahead_name_t;

struct wn_ahead {
    pthread_mutex_t mu;
    uint32_t refs;     /* control's (until it drops it) and one per thread */
    bool wanted;       /* control waits: its async may be woken */
    uv_async_t *async; /* control's */
    uint32_t next;     /* the next name a thread takes */
    uint32_t left;     /* names not yet answered */
    uint32_t n, cap;
    ahead_name_t *names;
    wn_conf_t *conf; /* control's: the configuration the reload reads */
    wn_ahead_done_cb done;
};

static void ahead_free(wn_ahead_t *b)
{
    for (uint32_t i = 0; i < b->n; i++)
        free(b->names[i].host);
    free(b->names);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

static void ahead_unref(wn_ahead_t *b)
{
    pthread_mutex_lock(&b->mu);
    bool last = --b->refs == 0;
    pthread_mutex_unlock(&b->mu);
    if (last)
        ahead_free(b);
}

static void *ahead_main(void *arg)
{
    wn_ahead_t *b = arg;
    pthread_setname_np(pthread_self(), "reload-dns");
    for (;;) {
        pthread_mutex_lock(&b->mu);
        uint32_t i = b->next < b->n ? b->next++ : b->n;
        pthread_mutex_unlock(&b->mu);
        if (i == b->n)
            break;
        ahead_name_t *x = &b->names[i];
        wn_conf_addr_t a = {.host = x->host, .port = x->port};
        int rc = wn_conf_addr_lookup_all(&a, false, &x->sa, &x->salen, 1);
        pthread_mutex_lock(&b->mu);
        x->rc = rc < 0 ? rc : 0;
        if (--b->left == 0 && b->wanted)
            uv_async_send(b->async);
        pthread_mutex_unlock(&b->mu);
    }
    ahead_unref(b);
    return NULL;
}

static ahead_name_t *find(const wn_ahead_t *b, const char *host)
{
    for (uint32_t i = 0; b != NULL && i < b->n; i++)
        if (strcmp(b->names[i].host, host) == 0)
            return &b->names[i];
    return NULL;
}

int wn_ahead_add(wn_ahead_t *b, const wn_conf_addr_t *a)
{
    if (!wn_dns_named(a) || find(b, a->host) != NULL)
        return 0;
    if (b->n == b->cap) {
        uint32_t cap = b->cap ? b->cap * 2 : 8;
        ahead_name_t *names = realloc(b->names, cap * sizeof(*names));
        if (names == NULL)
            return WN_ENOMEM;
        b->names = names;
        b->cap = cap;
    }
    ahead_name_t *x = &b->names[b->n];
    memset(x, 0, sizeof(*x));
    if ((x->host = strdup(a->host)) == NULL)
        return WN_ENOMEM;
    x->port = a->port;
    b->n++;
    return 0;
}

static void on_answered(uv_async_t *h)
{
    control_t *ctl = h->data;
    wn_ahead_t *b = ctl->ahead;
    if (b == NULL)
        return;
    pthread_mutex_lock(&b->mu);
    bool done = b->left == 0;
    pthread_mutex_unlock(&b->mu);
    if (done) {
        wn_conf_t *nc = b->conf; /* the reload's now */
        b->conf = NULL;
        b->done(ctl, nc);
    }
}

void wn_ahead_init(control_t *ctl)
{
    uv_async_init(&ctl->loop, &ctl->ahead_async, on_answered);
    ctl->ahead_async.data = ctl;
}

wn_ahead_t *wn_ahead_new(void)
{
    wn_ahead_t *b = calloc(1, sizeof(*b));
    if (b != NULL && pthread_mutex_init(&b->mu, NULL) != 0) {
        free(b);
        b = NULL;
    }
    return b;
}

void wn_ahead_free(wn_ahead_t *b)
{
    if (b != NULL)
        ahead_free(b);
}

int wn_ahead_start(control_t *ctl, wn_ahead_t *b, wn_conf_t *nc, wn_ahead_done_cb done)
{
    if (b->n == 0) {
        ahead_free(b);
        return 0;
    }
    b->done = done;
    b->conf = nc;
    b->async = &ctl->ahead_async;
    b->wanted = true;
    b->left = b->n;
    b->refs = 1;
    ctl->ahead = b;
    uint32_t want = WN_MIN(b->n, (uint32_t)AHEAD_THREADS), started = 0;
    for (uint32_t i = 0; i < want; i++) {
        pthread_mutex_lock(&b->mu);
        b->refs++; /* before it runs: it drops its own */
        pthread_mutex_unlock(&b->mu);
        if (wn_dns_thread(ahead_main, b)) {
            started++;
        } else {
            pthread_mutex_lock(&b->mu);
            b->refs--;
            pthread_mutex_unlock(&b->mu);
        }
    }
    if (started == 0) {
        /* no thread: the reload asks DNS itself, blocking, as it once did */
        ctl->ahead = NULL;
        ahead_unref(b);
        return 0;
    }
    return (int)b->n;
}

int wn_ahead_answer(const control_t *ctl, const wn_conf_addr_t *a, struct sockaddr_storage *sa,
                    uint32_t *salen)
{
    const wn_ahead_t *b = ctl->ahead;
    const ahead_name_t *x = wn_dns_named(a) ? find(b, a->host) : NULL;
    if (x == NULL)
        return WN_AHEAD_UNASKED;
    if (x->rc < 0)
        return x->rc;
    *sa = x->sa;
    if (salen != NULL)
        *salen = x->salen;
    /* one lookup per host: the port is this address's own */
    if (sa->ss_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons(a->port);
    else if (sa->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons(a->port);
    return 0;
}

void wn_ahead_drop(control_t *ctl)
{
    wn_ahead_t *b = ctl->ahead;
    if (b == NULL)
        return;
    ctl->ahead = NULL;
    pthread_mutex_lock(&b->mu);
    b->wanted = false;
    pthread_mutex_unlock(&b->mu);
    wn_conf_unref(b->conf);
    ahead_unref(b);
}

void wn_ahead_close(control_t *ctl)
{
    if (ctl->ahead != NULL) {
        wn_log_notice("reload: stopping with names still being looked up; that reload is not "
                      "applied");
        wn_ahead_drop(ctl);
    }
    uv_close((uv_handle_t *)&ctl->ahead_async, NULL);
}
