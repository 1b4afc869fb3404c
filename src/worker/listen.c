/*
 * worker/listen.c: a pool's listening socket in one worker. Every worker
 * binds its own socket with SO_REUSEPORT so the kernel spreads connections;
 * before the first of them binds, the address is tried without
 * SO_REUSEPORT, so an address another process already serves is an error
 * (otherwise the kernel would silently split clients between two
 * processes). Runs on the main thread at creation; the listener is then the
 * worker's.
 */
#include "protocol.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static void on_connection(wn_acceptor_t *a, int fd)
{
    const listener_t *l = a->data;
    /* its own kind of socket: a pool whose listen moved from TCP to unix (or
     * back) serves its old listener's backlog before closing it */
    wn_client_accept(l->pool, fd, l->addr->is_unix);
}

/* As validation quotes names: the reason must fit after a long one. */
#define NAME_MAX_SHOWN 80

/* err = "file:line: pool 'name': " and the rest, for an operator to find
 * the listen key in question. */
static void listen_fail(const wn_conf_pool_t *conf, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void listen_fail(const wn_conf_pool_t *conf, char *err, size_t errlen, const char *fmt, ...)
{
    int n = snprintf(err, errlen,
                     "%s: pool '%.*s': ", conf->listen_where != NULL ? conf->listen_where : "?",
                     NAME_MAX_SHOWN, conf->name);
    if (n < 0 || (size_t)n >= errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Remove a unix socket's file if it is still the one bound (id): another
 * process may have replaced it since (a new instance started before this
 * one stopped), and its clients must still find it, as with nutcracker. */
static void unlink_own(const char *path, dev_t dev, ino_t ino)
{
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == dev && st.st_ino == ino)
        unlink(path);
}

/* What tells one socket from another (copies of one share it), 0 if
 * nothing: the kernel's socket cookie, which never repeats while the system
 * runs (an inode number, 32 bits, wraps after enough sockets). */
static uint64_t sock_id(int fd)
{
    uint64_t cookie = 0;
    socklen_t len = sizeof(cookie);
    if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) == 0 && len == sizeof(cookie))
        return cookie;
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* The pool's listener on listening socket fd, accepting; on an error fd is
 * closed (and a unix socket's file, bound as unix_id, removed). */
static int listener_start(pool_rt_t *p, int fd, bool keep_fd, const char *unix_path,
                          const struct stat *unix_id)
{
    const wn_conf_pool_t *conf = p->conf;
    listener_t *l = calloc(1, sizeof(*l));
    char what[96];
    snprintf(what, sizeof(what), "pool '%.*s'", NAME_MAX_SHOWN, conf->name);
    int rc = l != NULL ? 0 : WN_ENOMEM;
    if (rc == 0 && unix_path != NULL && (l->unix_path = strdup(unix_path)) == NULL)
        rc = WN_ENOMEM;
    if (rc == 0)
        rc = wn_acceptor_init(&p->w->loop, &l->acc, fd, what, on_connection, NULL);
    if (rc < 0) {
        if (!keep_fd)
            close(fd);
        if (unix_path != NULL)
            unlink_own(unix_path, unix_id->st_dev, unix_id->st_ino);
        if (l != NULL)
            free(l->unix_path);
        free(l);
        return rc;
    }
    l->acc.data = l;
    l->acc.keep_fd = keep_fd;
    l->sock_id = sock_id(fd);
    if (unix_path != NULL) {
        l->unix_dev = unix_id->st_dev;
        l->unix_ino = unix_id->st_ino;
    }
    l->pool = p;
    l->addr = &conf->listen;
    if (!conf->listen.is_unix)
        l->sa = conf->listen_sa;
    p->listener = l;
    wn_acceptor_start(&l->acc);
    return 0;
}

static int tcp_socket(const struct sockaddr_storage *ss, socklen_t len, bool reuseport)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, zero = 0;
    /* The IPv6 wildcard takes IPv4 connections too, as nutcracker's `:::P`
     * does on Linux's default (net.ipv6.bindv6only 0), whatever that
     * setting says; other IPv6 addresses receive only IPv6 anyway (an
     * IPv4-mapped one, ::ffff:a.b.c.d, only IPv4). */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        (ss->ss_family == AF_INET6 &&
         IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr) &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0) ||
        bind(fd, (const struct sockaddr *)ss, len) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

/* A unix socket path with its directory resolved (symlinks, ".", "..",
 * "//"), so that two spellings of one socket file compare equal; the path
 * as written when its directory cannot be resolved. */
static void unix_canon(const char *path, char *out, size_t size)
{
    char dir[PATH_MAX], real[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    if (realpath(dir, real) == NULL) {
        snprintf(out, size, "%s", path);
        return;
    }
    snprintf(out, size, "%s%s%s", real, strcmp(real, "/") == 0 ? "" : "/",
             slash != NULL ? slash + 1 : path);
}

/* A resolved directory and a name. */
#define UNIX_CANON_MAX (2 * PATH_MAX)

static bool unix_same(const char *a, const char *b)
{
    char ca[UNIX_CANON_MAX], cb[UNIX_CANON_MAX];
    unix_canon(a, ca, sizeof(ca));
    unix_canon(b, cb, sizeof(cb));
    return strcmp(ca, cb) == 0;
}

/* One of walnut's own listening sockets is bound to ss, or to an address
 * that overlaps it, with SO_REUSEPORT (TCP; a socket systemd handed over
 * has none, and a worker's bind could not share its port), or to path
 * (unix): a listener a worker kept when
 * a reload could not bind the address that replaced it (reconf.c), or the
 * one a pool moves from (0.0.0.0:P to [::]:P, which holds the IPv4 port
 * too). No conflict: walnut's listeners share their port (SO_REUSEPORT). */
static bool own_listener(const struct sockaddr_storage *ss, const char *path)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return false;
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end != '\0' || end == e->d_name || fd == dirfd(d))
            continue;
        int acc = 0;
        socklen_t alen = sizeof(acc);
        struct sockaddr_storage b;
        socklen_t blen = sizeof(b);
        memset(&b, 0, sizeof(b));
        if (getsockopt((int)fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &alen) < 0 || !acc ||
            getsockname((int)fd, (struct sockaddr *)&b, &blen) < 0)
            continue;
        int reuse = 0;
        socklen_t rlen = sizeof(reuse);
        if (path != NULL) {
            char bound[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
            snprintf(bound, sizeof(bound), "%.*s", (int)sizeof(((struct sockaddr_un *)0)->sun_path),
                     ((struct sockaddr_un *)&b)->sun_path);
            found = b.ss_family == AF_UNIX && unix_same(bound, path);
        } else {
            /* one a worker's bind can share the port with */
            found = wn_sockaddr_overlap(&b, ss) &&
                    getsockopt((int)fd, SOL_SOCKET, SO_REUSEPORT, &reuse, &rlen) == 0 && reuse;
        }
    }
    closedir(d);
    return found;
}

/* Without SO_REUSEPORT a bind fails if anyone listens there. */
static int probe_tcp(const wn_conf_pool_t *conf, const struct sockaddr_storage *ss,
                     socklen_t sslen, char *err, size_t errlen)
{
    int probe = tcp_socket(ss, sslen, false);
    if (probe == UV_EADDRINUSE && own_listener(ss, NULL))
        return 0;
    if (probe < 0) {
        listen_fail(conf, err, errlen, "cannot listen on %s: %s%s", conf->listen_text,
                    wn_strerror(probe),
                    probe == UV_EADDRINUSE ? " (another process serves it, or a connection "
                                             "has it as its local port: a port in "
                                             "net.ipv4.ip_local_port_range may be taken so)"
                                           : "");
        return probe;
    }
    close(probe);
    return 0;
}

int wn_listen_resolved(const wn_conf_pool_t *conf, int rc, char *err, size_t errlen)
{
    if (rc < 0)
        listen_fail(conf, err, errlen, "cannot resolve listen address %s: %s", conf->listen_text,
                    rc == UV_EAI_NONAME ? "unknown host" : wn_strerror(rc));
    return rc;
}

int wn_listen_resolve(wn_conf_pool_t *conf, char *err, size_t errlen)
{
    if (conf->listen.is_unix)
        return 0;
    return wn_listen_resolved(
        conf, wn_conf_addr_lookup(&conf->listen, false, &conf->listen_sa, &conf->listen_salen), err,
        errlen);
}

/* A unix socket path is free when nothing is there, or a socket nobody
 * accepts on (a file an earlier run left, which listen_unix replaces), and
 * its directory takes a new entry. */
static int check_unix(const wn_conf_pool_t *conf, char *err, size_t errlen)
{
    const char *path = conf->listen.host;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            listen_fail(conf, err, errlen, "cannot listen on %s: it exists and is not a socket",
                        path);
            return WN_EINVAL;
        }
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
        int rc = connect(fd, (const struct sockaddr *)&un, sizeof(un));
        bool served = rc == 0 || errno == EAGAIN || errno == EINPROGRESS;
        close(fd);
        if (served && !own_listener(NULL, path)) {
            listen_fail(conf, err, errlen, "cannot listen on %s: %s (another process serves it)",
                        path, wn_strerror(UV_EADDRINUSE));
            return UV_EADDRINUSE;
        }
    }
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    if (access(slash != NULL ? dir : ".", W_OK | X_OK) < 0) {
        int rc = -errno;
        listen_fail(conf, err, errlen, "cannot listen on %s: %s", path, wn_strerror(rc));
        return rc;
    }
    return 0;
}

int wn_listen_check(wn_conf_pool_t *conf, char *err, size_t errlen)
{
    if (conf->listen.is_unix)
        return check_unix(conf, err, errlen);
    int rc = conf->listen_salen != 0 ? 0 : wn_listen_resolve(conf, err, errlen);
    return rc < 0 ? rc : probe_tcp(conf, &conf->listen_sa, conf->listen_salen, err, errlen);
}

static int listen_tcp(pool_rt_t *p, bool first, char *err, size_t errlen)
{
    const wn_conf_pool_t *conf = p->conf;
    if (conf->listen_salen == 0) {
        listen_fail(conf, err, errlen, "listen address %s was not looked up", conf->listen_text);
        return WN_EINVAL;
    }
    const struct sockaddr_storage *ss = &conf->listen_sa;
    socklen_t sslen = conf->listen_salen;
    int rc;
    if (first && (rc = probe_tcp(conf, ss, sslen, err, errlen)) < 0)
        return rc;
    int fd = tcp_socket(ss, sslen, true);
    if (fd >= 0 && listen(fd, conf->backlog) < 0) {
        rc = -errno;
        close(fd);
        fd = rc;
    }
    rc = fd < 0 ? fd : listener_start(p, fd, false, NULL, NULL);
    if (rc < 0)
        listen_fail(conf, err, errlen, "cannot listen on %s: %s", conf->listen_text,
                    wn_strerror(rc));
    return rc;
}

static int listen_unix(pool_rt_t *p, char *err, size_t errlen)
{
    const wn_conf_pool_t *conf = p->conf;
    const char *path = conf->listen.host;
    struct stat st;
    /* A socket file left by an earlier run would make bind fail; replace it,
     * but never remove anything that is not a socket. */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    int rc = 0;
    if (strlen(path) >= sizeof(un.sun_path)) {
        rc = UV_ENAMETOOLONG;
        listen_fail(conf, err, errlen, "cannot listen on %s: %s", path, wn_strerror(rc));
        return rc;
    }
    memcpy(un.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
    } else if (bind(fd, (const struct sockaddr *)&un, sizeof(un)) < 0) {
        rc = -errno;
        close(fd);
    } else if (lstat(path, &st) < 0) {
        rc = -errno;
        close(fd);
    } else {
        if ((conf->listen.perm != 0 && chmod(path, conf->listen.perm) < 0) ||
            listen(fd, conf->backlog) < 0) {
            rc = -errno;
            close(fd);
            unlink_own(path, st.st_dev, st.st_ino);
        } else {
            rc = listener_start(p, fd, false, path, &st);
        }
    }
    if (rc < 0)
        listen_fail(conf, err, errlen, "cannot listen on %s: %s", path, wn_strerror(rc));
    return rc;
}

int wn_listen_open(pool_rt_t *p, bool first, char *err, size_t errlen)
{
    if (p->conf->listen.is_unix)
        return listen_unix(p, err, errlen);
    return listen_tcp(p, first, err, errlen);
}

int wn_listen_adopt(pool_rt_t *p, int fd, bool keep_fd, char *err, size_t errlen)
{
    int rc = listen(fd, p->conf->backlog) < 0 ? -errno : 0;
    if (rc < 0 && !keep_fd)
        close(fd);
    else if (rc == 0)
        rc = listener_start(p, fd, keep_fd, NULL, NULL);
    if (rc == 0 && !p->conf->listen.is_unix) {
        /* where systemd's socket listens, which a reload compares with a
         * respelled address (the configuration's was never looked up) */
        socklen_t len = sizeof(p->listener->sa);
        memset(&p->listener->sa, 0, sizeof(p->listener->sa));
        if (getsockname(fd, (struct sockaddr *)&p->listener->sa, &len) < 0)
            memset(&p->listener->sa, 0, sizeof(p->listener->sa));
    }
    if (rc < 0)
        listen_fail(p->conf, err, errlen, "cannot listen on the socket systemd handed over: %s",
                    wn_strerror(rc));
    return rc;
}

/* Does socket x listen where pc does? */
static bool activated_at(const wn_activated_sock_t *x, const wn_conf_pool_t *pc)
{
    if (pc->listen.is_unix)
        return x->sa.ss_family == AF_UNIX &&
               strncmp(((const struct sockaddr_un *)&x->sa)->sun_path, pc->listen.host,
                       sizeof(((struct sockaddr_un *)0)->sun_path)) == 0;
    return pc->listen_salen != 0 && wn_sockaddr_same(&x->sa, &pc->listen_sa);
}

/* Pass 0: x is named for pc; pass 1: x listens where pc does and is named
 * for no pool of nc. */
static bool activated_for(const wn_activated_sock_t *x, const wn_conf_t *nc,
                          const wn_conf_pool_t *pc, int pass)
{
    if (pass == 0)
        return x->name != NULL && strcmp(x->name, pc->name) == 0;
    return (x->name == NULL || wn_conf_pool_find(nc, x->name) == NULL) && activated_at(x, pc);
}

/* Is x free: no listener of taken (another pool's) serves on it? */
static bool activated_free(const wn_activated_sock_t *x, const uint64_t *taken, uint32_t ntaken)
{
    uint64_t id = sock_id(x->fd);
    if (id == 0)
        return false;
    for (uint32_t k = 0; k < ntaken; k++)
        if (taken[k] == id)
            return false;
    return true;
}

uint32_t wn_listen_activated_count(const wn_activated_t *a, const wn_conf_t *nc, uint32_t i)
{
    for (int pass = 0; a != NULL && pass < 2; pass++) {
        uint32_t n = 0;
        for (uint32_t k = 0; k < a->n; k++)
            n += activated_for(&a->socks[k], nc, &nc->pools[i], pass);
        if (n > 0)
            return n;
    }
    return 0;
}

int wn_listen_activated(const wn_activated_t *a, const wn_conf_t *nc, uint32_t i, int worker,
                        const uint64_t *taken, uint32_t ntaken)
{
    if (a == NULL)
        return -1;
    const wn_conf_pool_t *pc = &nc->pools[i];
    for (int pass = 0; pass < 2; pass++) {
        uint32_t all = 0, n = 0;
        for (uint32_t k = 0; k < a->n; k++) {
            bool match = activated_for(&a->socks[k], nc, pc, pass);
            all += match;
            n += match && activated_free(&a->socks[k], taken, ntaken);
        }
        /* the pass wn_listen_activated_count counts, whoever serves on
         * its sockets: sockets named for the pool, all taken, leave it
         * none (never those at its address instead) */
        if (all > 0 && n == 0)
            return -1;
        uint32_t want = n > 0 ? (uint32_t)worker % n : 0;
        for (uint32_t k = 0; k < a->n && n > 0; k++)
            if (activated_for(&a->socks[k], nc, pc, pass) &&
                activated_free(&a->socks[k], taken, ntaken) && want-- == 0)
                return a->socks[k].fd;
    }
    return -1;
}

static void listener_closed(wn_acceptor_t *a)
{
    listener_t *l = a->data;
    /* As libuv did for a pipe it bound: the socket file goes with it. */
    if (l->unix_path != NULL)
        unlink_own(l->unix_path, l->unix_dev, l->unix_ino);
    free(l->unix_path);
    if (l->addr_conf != NULL)
        wn_conf_unref(l->addr_conf);
    free(l);
}

void wn_listener_close(listener_t *l)
{
    if (l != NULL)
        wn_acceptor_close(&l->acc, listener_closed);
}

void wn_listener_close_serving(listener_t *l)
{
    if (l == NULL)
        return;
    /* A socket systemd handed over stays open (acc.keep_fd): what waits in
     * it is for whoever serves it next (a reload that adds its pool again). */
    if (!l->acc.keep_fd)
        wn_acceptor_drain(&l->acc);
    wn_listener_close(l);
}

void wn_listen_close(pool_rt_t *p)
{
    wn_listener_close(p->listener);
    p->listener = NULL;
}

/* No two pools on one unix socket file, however it is spelt ("./s", "//",
 * a symlinked directory): the second bind would take the first's clients.
 * Each path is resolved once. */
static int unix_apart(const wn_conf_t *conf, char *err, size_t errlen)
{
    char **canon = calloc(conf->npools ? conf->npools : 1, sizeof(*canon));
    char buf[UNIX_CANON_MAX];
    int rc = canon != NULL ? 0 : WN_ENOMEM;
    for (uint32_t i = 0; rc == 0 && i < conf->npools; i++) {
        const wn_conf_pool_t *p = &conf->pools[i];
        if (!p->listen.is_unix)
            continue;
        unix_canon(p->listen.host, buf, sizeof(buf));
        if ((canon[i] = strdup(buf)) == NULL)
            rc = WN_ENOMEM;
        for (uint32_t j = 0; rc == 0 && j < i; j++) {
            const wn_conf_pool_t *q = &conf->pools[j];
            if (canon[j] == NULL || strcmp(canon[i], canon[j]) != 0)
                continue;
            listen_fail(p, err, errlen, "cannot listen on %s: pool '%.*s' listens there (%s)",
                        p->listen_text, NAME_MAX_SHOWN, q->name, q->listen_text);
            rc = UV_EADDRINUSE;
        }
    }
    if (rc == WN_ENOMEM)
        snprintf(err, errlen, "out of memory");
    for (uint32_t i = 0; canon != NULL && i < conf->npools; i++)
        free(canon[i]);
    free(canon);
    return rc;
}

int wn_listen_apart(const wn_conf_t *conf, const struct sockaddr_storage *stats, char *err,
                    size_t errlen)
{
    int rc = unix_apart(conf, err, errlen);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < conf->npools; i++) {
        const wn_conf_pool_t *p = &conf->pools[i];
        if (p->listen.is_unix || p->listen_salen == 0)
            continue;
        if (stats != NULL && wn_sockaddr_overlap(&p->listen_sa, stats)) {
            listen_fail(p, err, errlen,
                        "cannot listen on %s: walnut's stats server listens there (-a, -s)",
                        p->listen_text);
            return UV_EADDRINUSE;
        }
        for (uint32_t j = 0; j < i; j++) {
            const wn_conf_pool_t *q = &conf->pools[j];
            if (q->listen.is_unix || q->listen_salen == 0 ||
                !wn_sockaddr_overlap(&p->listen_sa, &q->listen_sa))
                continue;
            listen_fail(p, err, errlen, "cannot listen on %s: pool '%.*s' listens there (%s, %s)",
                        p->listen_text, NAME_MAX_SHOWN, q->name, q->listen_text,
                        q->listen_where != NULL ? q->listen_where : "?");
            return UV_EADDRINUSE;
        }
    }
    return 0;
}
