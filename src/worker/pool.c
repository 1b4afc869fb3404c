/*
 * worker/pool.c: a pool as one worker runs it: its listening socket (its own,
 * bound with SO_REUSEPORT so the kernel spreads connections across workers),
 * its servers and the ring it routes with (built by the control thread, which
 * alone decides ejection). Created on the main thread, then used only by the
 * worker's thread.
 */
#include "worker_priv.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void on_connection(uv_stream_t *listener, int status)
{
    pool_rt_t *pool = listener->data;
    if (status < 0) {
        wn_log_warn("pool '%s': accept failed: %s", pool->conf->name, uv_strerror(status));
        return;
    }
    client_accept(pool, listener);
}

/* getaddrinfo for a host and port; the first address wins, as in twemproxy. */
static int resolve(const char *host, uint16_t port, int socktype, struct sockaddr_storage *out,
                   socklen_t *outlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = socktype};
    struct addrinfo *res = NULL;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    if (socktype == SOCK_STREAM && host[0] == '\0')
        hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host[0] ? host : NULL, portstr, &hints, &res);
    if (rc != 0)
        return rc == EAI_SYSTEM ? -errno : UV_EAI_NONAME;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    if (outlen != NULL)
        *outlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int listen_tcp(pool_rt_t *p)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int rc = resolve(p->conf->listen.host, p->conf->listen.port, SOCK_STREAM, &ss, &sslen);
    if (rc < 0)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    /* libuv 1.44 has no reuseport bind flag: set it on our own socket. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        (ss.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, (struct sockaddr *)&ss, sslen) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    uv_tcp_init(&p->w->loop, &p->listener.tcp);
    rc = uv_tcp_open(&p->listener.tcp, fd);
    if (rc < 0) {
        close(fd);
        uv_close(&p->listener.handle, NULL);
        return rc;
    }
    p->listener.handle.data = p;
    p->listening = true;
    rc = uv_listen(&p->listener.stream, p->conf->backlog, on_connection);
    return rc;
}

static int listen_unix(pool_rt_t *p)
{
    const char *path = p->conf->listen.host;
    struct stat st;
    /* A socket file left by an earlier run would make bind fail; replace it,
     * but never remove anything that is not a socket. */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    uv_pipe_init(&p->w->loop, &p->listener.pipe, 0);
    p->listener.handle.data = p;
    p->listening = true;
    int rc = uv_pipe_bind(&p->listener.pipe, path);
    if (rc < 0)
        return rc;
    if (p->conf->listen.perm != 0 && chmod(path, p->conf->listen.perm) < 0)
        return -errno;
    return uv_listen(&p->listener.stream, p->conf->backlog, on_connection);
}

int pool_rt_default_ring(pool_rt_t *p)
{
    wn_ring_server_t *rs = calloc(p->nservers, sizeof(*rs));
    if (rs == NULL)
        return WN_ENOMEM;
    wn_conf_ring_servers(p->conf, rs);
    wn_ring_params_t params = {
        .dist = p->conf->distribution,
        .hash = p->conf->hash,
        .hash_tag = p->conf->has_hash_tag ? p->conf->hash_tag : NULL,
        .epoch = 1,
    };
    wn_ring_t *ring;
    int rc = wn_ring_create(&params, rs, p->nservers, NULL, &ring);
    free(rs);
    if (rc < 0)
        return rc;
    wn_ring_unref(p->ring);
    p->ring = ring;
    atomic_store_explicit(&p->epoch, 1, memory_order_relaxed);
    return 0;
}

int pool_rt_init(pool_rt_t *p, wn_worker_t *w, const wn_conf_pool_t *conf, uint32_t idx)
{
    *p = (pool_rt_t){.w = w, .conf = conf, .idx = idx};
    p->servers = calloc(conf->nservers, sizeof(*p->servers));
    if (p->servers == NULL)
        return WN_ENOMEM;
    for (uint32_t i = 0; i < conf->nservers; i++) {
        int rc = server_rt_init(&p->servers[i], p, i);
        if (rc < 0)
            return rc;
        p->nservers++;
        if (!conf->servers[i].addr.is_unix) {
            rc = resolve(conf->servers[i].addr.host, conf->servers[i].addr.port, SOCK_STREAM,
                         &p->servers[i].addr, NULL);
            if (rc < 0) {
                wn_log_error("pool '%s': server %s: cannot resolve '%s': %s", conf->name,
                             conf->servers[i].name, conf->servers[i].addr.host,
                             rc == UV_EAI_NONAME ? "unknown host" : wn_strerror(rc));
                return rc;
            }
        }
    }
    int rc = pool_rt_default_ring(p);
    if (rc < 0)
        return rc;
    if (conf->listen.is_unix)
        return w->accept_unix ? listen_unix(p) : 0;
    return listen_tcp(p);
}

void pool_rt_deinit(pool_rt_t *p)
{
    for (uint32_t i = 0; i < p->nservers; i++)
        server_rt_deinit(&p->servers[i]);
    free(p->servers);
    p->servers = NULL;
    p->nservers = 0;
    wn_ring_unref(p->ring);
    p->ring = NULL;
}

server_rt_t *pool_route(pool_rt_t *p, const char *key, size_t len)
{
    uint32_t idx = wn_ring_lookup(p->ring, key, len);
    return idx == WN_RING_NONE ? NULL : &p->servers[idx];
}
