/*
 * control/sd.c: telling systemd the truth (sd_notify's protocol, sent
 * without waiting; libsystemd for the watchdog and socket activation):
 * READY=1 once every listener is bound and every worker runs, STATUS= kept
 * current, RELOADING=1/READY=1 around a reload, STOPPING=1 at shutdown, and
 * WATCHDOG=1 at half the watchdog interval, but only while every worker's
 * loop answers control's heartbeat (a wedged worker makes systemd restart
 * walnut). Also the listening sockets systemd hands over (socket
 * activation). Without NOTIFY_SOCKET / LISTEN_FDS nothing changes.
 * Control thread only.
 */
#include "control_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "walnut/core.h"

/* Failed notifications are logged at most this often. */
#define NOTIFY_WARN_EVERY_MS 60000
/* How often a state change the manager's queue refused is sent again. */
#define NOTIFY_RETRY_MS 50

/*
 * NOTIFY_SOCKET as an AF_UNIX address: a path, or "@name" in the abstract
 * namespace. Notifications are sent here rather than through libsystemd's
 * sd_notify, which waits when the manager's queue is full: a manager that
 * stops reading would stop control's loop (stats, reloads, SIGTERM) with it.
 * What cannot go at once is logged, and dropped, or, for a state change,
 * sent again (wn_sd_state).
 */
static void notify_addr(control_t *ctl, const char *ns)
{
    size_t len = strlen(ns);
    struct sockaddr_un *a = &ctl->notify_addr;
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    if ((ns[0] != '/' && ns[0] != '@') || len >= sizeof(a->sun_path)) {
        wn_log_warn("NOTIFY_SOCKET '%s' is not a unix socket address walnut can use; systemd "
                    "will not hear from it",
                    ns);
        return;
    }
    memcpy(a->sun_path, ns, len);
    if (ns[0] == '@')
        a->sun_path[0] = '\0'; /* abstract: the length says where it ends */
    else
        len++; /* a path: with its terminating NUL */
    ctl->notify_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
}

void wn_sd_init(control_t *ctl)
{
    ctl->notify_fd = -1;
    ctl->notify_addrlen = 0;
    const char *ns = getenv("NOTIFY_SOCKET");
    ctl->sd_notify = ns != NULL && ns[0] != '\0';
    if (ctl->sd_notify) {
        notify_addr(ctl, ns);
        ctl->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    }
    uint64_t usec = 0;
    /* WATCHDOG_USEC (and WATCHDOG_PID, if set, naming us); kept in the
     * environment for a child that may need it. */
    if (sd_watchdog_enabled(0, &usec) > 0)
        ctl->watchdog_usec = usec;
}

void wn_sd_deinit(control_t *ctl)
{
    if (ctl->notify_fd >= 0)
        close(ctl->notify_fd);
    ctl->notify_fd = -1;
    for (uint32_t i = 0; i < ctl->activated.n; i++) {
        close(ctl->activated.socks[i].fd);
        free(ctl->activated.socks[i].name);
    }
    free(ctl->activated.socks);
    ctl->activated.socks = NULL;
    ctl->activated.n = 0;
}

static int notify_send(const control_t *ctl, const char *msg, size_t len)
{
    if (ctl->notify_addrlen == 0)
        return 0; /* said at start */
    if (ctl->notify_fd < 0)
        return -EBADF;
    ssize_t n;
    do
        n = sendto(ctl->notify_fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL,
                   (const struct sockaddr *)&ctl->notify_addr, ctl->notify_addrlen);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : 0;
}

/* Failed notifications, logged once a minute at most (a socket that is
 * gone stays gone: not at every STATUS and watchdog ping). */
static void notify_failed(control_t *ctl, int rc, bool again)
{
    uint32_t left_out;
    if (!wn_log_limit_pass(&ctl->notify_warned, wn_time_ms(), NOTIFY_WARN_EVERY_MS, &left_out,
                           NULL))
        return;
    const char *why = rc != -EAGAIN ? ""
                      : again ? " (the service manager is not reading; sent again when it does)"
                              : " (the service manager is not reading; dropped)";
    if (left_out > 0)
        wn_log_warn("sd_notify: %s%s (%u more failure(s) not logged)", strerror(-rc), why,
                    left_out);
    else
        wn_log_warn("sd_notify: %s%s", strerror(-rc), why);
}

__attribute__((format(printf, 3, 0))) static int format(char *msg, size_t size, const char *fmt,
                                                         va_list ap)
{
    int len = vsnprintf(msg, size, fmt, ap);
    return len < 0 ? -1 : (int)WN_MIN((size_t)len, size - 1);
}

void wn_sd_notify(control_t *ctl, const char *fmt, ...)
{
    if (!ctl->sd_notify)
        return;
    char msg[WN_SD_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = format(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    int rc = n < 0 ? 0 : notify_send(ctl, msg, (size_t)n);
    if (rc < 0)
        notify_failed(ctl, rc, false);
}

static void on_notify_retry(uv_timer_t *t)
{
    control_t *ctl = t->data;
    while (ctl->npending > 0) {
        int rc = notify_send(ctl, ctl->pending[0].msg, ctl->pending[0].len);
        if (rc == -EAGAIN)
            return; /* next time */
        if (rc < 0)
            notify_failed(ctl, rc, false);
        ctl->pending[0] = ctl->pending[1];
        ctl->npending--;
    }
    uv_timer_stop(t);
}

static void notify_timer_arm(control_t *ctl)
{
    if (ctl->notify_timer.loop == NULL) {
        uv_timer_init(&ctl->loop, &ctl->notify_timer);
        ctl->notify_timer.data = ctl;
    }
    if (!uv_is_active((uv_handle_t *)&ctl->notify_timer))
        uv_timer_start(&ctl->notify_timer, on_notify_retry, NOTIFY_RETRY_MS, NOTIFY_RETRY_MS);
}

/*
 * READY=1 and RELOADING=1 are states the manager must not miss (it would
 * stay "reloading"): refused by its full queue, they wait, in order, and go
 * again every NOTIFY_RETRY_MS; a state that comes meanwhile waits behind
 * them. The states alternate, so what waits is kept to its first and last:
 * RELOADING, READY, RELOADING tells the manager no more than RELOADING.
 * (STATUS= and WATCHDOG=1 are only dropped: the next ones say as much. At
 * stop nothing is retried: STOPPING=1 goes once.)
 */
void wn_sd_state(control_t *ctl, const char *fmt, ...)
{
    if (!ctl->sd_notify)
        return;
    wn_sd_pending_t m;
    va_list ap;
    va_start(ap, fmt);
    int n = format(m.msg, sizeof(m.msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    m.len = (size_t)n;
    m.reloading = strncmp(fmt, "RELOADING=1", 11) == 0;
    if (ctl->npending > 0) {
        if (m.reloading == ctl->pending[0].reloading) {
            ctl->npending = 1; /* back where the first leaves the manager */
        } else {
            ctl->pending[1] = m;
            ctl->npending = 2;
        }
        return;
    }
    int rc = notify_send(ctl, m.msg, m.len);
    if (rc == 0)
        return;
    bool again = rc == -EAGAIN && !ctl->stopping;
    if (again) {
        ctl->pending[0] = m;
        ctl->npending = 1;
        notify_timer_arm(ctl);
    }
    notify_failed(ctl, rc, again);
}

void wn_sd_status(control_t *ctl)
{
    if (!ctl->sd_notify)
        return;
    uint32_t servers = 0, ejected = 0;
    for (uint32_t p = 0; p < ctl->npools; p++)
        for (uint32_t s = 0; s < ctl->pools[p]->nservers; s++) {
            servers++;
            ejected += ctl->pools[p]->servers[s]->ejected;
        }
    wn_sd_notify(ctl, "STATUS=%u pool(s), %d worker(s), %u of %u server(s) ejected%s%s",
                 ctl->npools, ctl->nworkers, ejected, servers,
                 ctl->last_reload[0] ? "; " : "", ctl->last_reload);
}

static void on_watchdog(uv_timer_t *t)
{
    control_t *ctl = t->data;
    int late;
    uint64_t late_ms;
    /* A worker that has not answered within the half interval holds the
     * watchdog back: systemd restarts walnut when the full one passes. */
    if (wn_control_workers_alive(ctl, ctl->watchdog_usec / 2000, &late, &late_ms)) {
        wn_sd_notify(ctl, "WATCHDOG=1");
        ctl->watchdog_held = false;
    } else if (!ctl->watchdog_held) {
        wn_log_error("worker %d has not answered for %llu ms: no WATCHDOG=1 for systemd", late,
                     (unsigned long long)late_ms);
        ctl->watchdog_held = true;
    }
}

void wn_sd_watchdog_start(control_t *ctl)
{
    if (ctl->watchdog_usec == 0 || !ctl->sd_notify)
        return;
    uint64_t half_ms = ctl->watchdog_usec / 2000;
    uv_timer_init(&ctl->loop, &ctl->watchdog_timer);
    ctl->watchdog_timer.data = ctl;
    uv_timer_start(&ctl->watchdog_timer, on_watchdog, half_ms ? half_ms : 1, half_ms ? half_ms : 1);
}

static void close_timer(uv_timer_t *t)
{
    if (t->loop != NULL && !uv_is_closing((uv_handle_t *)t))
        uv_close((uv_handle_t *)t, NULL);
}

void wn_sd_stop(control_t *ctl)
{
    close_timer(&ctl->watchdog_timer);
    close_timer(&ctl->notify_timer);
}

uint64_t wn_sd_monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- socket activation ------------------------------------------------------ */

/* Is fd a listening socket on the pool's address? */
static bool fd_matches(int fd, const wn_conf_pool_t *pool)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return false;
    if (pool->listen.is_unix) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
        return ss.ss_family == AF_UNIX && strcmp(un->sun_path, pool->listen.host) == 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", pool->listen.port);
    if (getaddrinfo(pool->listen.host[0] ? pool->listen.host : NULL, port, &hints, &res) != 0)
        return false;
    bool same = false;
    for (struct addrinfo *a = res; a != NULL && !same; a = a->ai_next)
        same = a->ai_addrlen == len && memcmp(a->ai_addr, &ss, len) == 0;
    freeaddrinfo(res);
    return same;
}

/* The address a socket listens on, as an operator reads it. */
static void sock_text(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        snprintf(buf, len, "an unknown address");
    else
        wn_sockaddr_format(&ss, buf, len);
}

/* systemd's name for a socket it was not told a name for (no
 * FileDescriptorName=, no LISTEN_FDNAMES): no name at all. */
static bool named(const char *name)
{
    return name != NULL && name[0] != '\0' && strcmp(name, "unknown") != 0;
}

int wn_sd_listen_fds(control_t *ctl)
{
    char **names = NULL;
    int n = sd_listen_fds_with_names(1, &names);
    if (n <= 0)
        return n < 0 ? n : 0;
    uint32_t np = ctl->conf->npools;
    ctl->inherited = calloc(np ? np : 1, sizeof(*ctl->inherited));
    ctl->activated.socks = calloc((size_t)n, sizeof(*ctl->activated.socks));
    if (ctl->inherited == NULL || ctl->activated.socks == NULL)
        return WN_ENOMEM;
    for (int i = 0; i < n; i++) {
        /* Kept for walnut's whole run (wn_sd_deinit closes them): each
         * worker serves on a copy, and a pool a reload adds on one of
         * them (one removed before, or one no pool takes now) takes one. */
        wn_activated_sock_t *x = &ctl->activated.socks[ctl->activated.n++];
        x->fd = SD_LISTEN_FDS_START + i;
        x->name = named(names[i]) ? strdup(names[i]) : NULL;
        socklen_t len = sizeof(x->sa);
        if (getsockname(x->fd, (struct sockaddr *)&x->sa, &len) < 0)
            memset(&x->sa, 0, sizeof(x->sa));
    }
    bool *used = calloc((size_t)n, sizeof(bool));
    if (used == NULL)
        return WN_ENOMEM;
    int rc = 0;
    for (uint32_t p = 0; p < np; p++) {
        const wn_conf_pool_t *pool = &ctl->conf->pools[p];
        wn_inherited_t *in = &ctl->inherited[p];
        /* By FileDescriptorName= = the pool's name; else by address. */
        for (int pass = 0; pass < 2 && in->n == 0; pass++)
            for (int i = 0; i < n && in->n < WN_MAX_INHERITED; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                bool match = pass == 0 ? named(names[i]) && strcmp(names[i], pool->name) == 0
                                       : fd_matches(fd, pool);
                if (!used[i] && match) {
                    used[i] = true;
                    in->fds[in->n++] = fd;
                }
            }
        if (in->n > 0) {
            sock_text(in->fds[0], in->where, sizeof(in->where));
            wn_log_notice("pool '%s': serving on %u socket(s) systemd handed over (%s)", pool->name,
                          in->n, in->where);
            /* Taken by its name: the name wins, but an address other than
             * the file's is most likely a mix-up worth a word. */
            if (!fd_matches(in->fds[0], pool))
                wn_log_warn("pool '%s': the socket systemd named '%s' listens on %s, not on the "
                            "configured listen address %s: serving on systemd's socket",
                            pool->name, pool->name, in->where, pool->listen_text);
        }
        if (in->n > (uint32_t)ctl->nworkers && rc == 0) {
            /* Each socket is accepted on by one worker; with ReusePort the
             * kernel gives every socket its share of connections, and those
             * of a socket nobody accepts on would wait forever. */
            wn_log_error("pool '%s': systemd handed over %u sockets but walnut runs %d "
                         "worker(s), and each socket needs a worker of its own: start at least "
                         "%u workers (--workers) or list the address fewer times",
                         pool->name, in->n, ctl->nworkers, in->n);
            rc = WN_EINVAL;
        }
    }
    for (int i = 0; i < n; i++) {
        if (!used[i])
            wn_log_warn("systemd handed over socket %d ('%s') that no pool listens on; kept "
                        "for a pool a reload may add there (its connections wait until then)",
                        SD_LISTEN_FDS_START + i, names[i] ? names[i] : "");
        free(names[i]);
    }
    free(names);
    free(used);
    return rc < 0 ? rc : n;
}

int wn_sd_fd_for_worker(const control_t *ctl, uint32_t pool, int worker)
{
    if (ctl->inherited == NULL || ctl->inherited[pool].n == 0)
        return -1;
    const wn_inherited_t *in = &ctl->inherited[pool];
    /* One socket per worker (ListenStream= repeated with ReusePort=yes), or
     * all workers accept on the same one(s). Each worker owns its copy;
     * control keeps the socket (ctl->activated). */
    int fd = in->fds[(uint32_t)worker % in->n];
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    return copy < 0 ? -errno : copy;
}
