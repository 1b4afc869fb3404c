/*
 * config/conf.c: the public face of the config module. Reads the file, runs
 * bridge -> libcyaml -> validation, and owns the refcounted snapshot. Loading
 * runs on the control (or main) thread; ref/unref and lookups on any thread.
 */
#include "walnut/config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf_priv.h"

#include <uv.h>
#include "walnut/core.h"

void wn_conf_errf(char *err, size_t errlen, const char *file, int line, const char *pool,
                  const char *fmt, ...)
{
    size_t used;
    int n;
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    if (line > 0)
        n = snprintf(err, errlen, "%s:%d: ", file, line);
    else
        n = snprintf(err, errlen, "%s: ", file);
    used = n > 0 ? WN_MIN((size_t)n, errlen - 1) : 0;
    if (pool != NULL && used < errlen - 1) {
        n = snprintf(err + used, errlen - used, "pool '%.*s': ", WN_CONF_QUOTE_MAX, pool);
        used = n > 0 ? WN_MIN(used + (size_t)n, errlen - 1) : used;
    }
    va_start(ap, fmt);
    vsnprintf(err + used, errlen - used, fmt, ap);
    va_end(ap);
}

static void conf_free(wn_conf_t *conf)
{
    for (uint32_t i = 0; i < conf->npools; i++)
        wn_conf_pool_deinit(&conf->pools[i]);
    free(conf->pools);
    free(conf->path);
    free(conf);
}

int wn_conf_parse(const char *text, size_t len, const char *name, wn_conf_t **out, char *err,
                  size_t errlen)
{
    wn_conf_src_t src = {0};
    wn_conf_raw_pool_t *raw = NULL;
    wn_conf_t *conf = NULL;
    int rc;

    if (name == NULL)
        name = "<string>";
    if (text == NULL || out == NULL) {
        wn_conf_errf(err, errlen, name, 0, NULL, "no text to parse");
        return WN_EINVAL;
    }

    rc = wn_conf_bridge(text, len, name, &src, err, errlen);
    if (rc != 0)
        goto fail;
    rc = wn_conf_schema_load(&src, name, &raw, err, errlen);
    if (rc != 0)
        goto fail;

    conf = calloc(1, sizeof(*conf));
    if (conf == NULL || (conf->path = strdup(name)) == NULL) {
        wn_conf_errf(err, errlen, name, 0, NULL, "out of memory");
        rc = WN_ENOMEM;
        goto fail;
    }
    atomic_init(&conf->refs, 1);
    rc = wn_conf_build(conf, &src, raw, name, err, errlen);
    if (rc != 0)
        goto fail;

    wn_conf_schema_free(raw, src.npools);
    wn_conf_src_deinit(&src);
    *out = conf;
    return 0;

fail:
    if (conf != NULL)
        conf_free(conf);
    wn_conf_schema_free(raw, src.npools);
    wn_conf_src_deinit(&src);
    return rc;
}

static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISCHR(mode) || S_ISBLK(mode))
        return "a device";
    return "a special file";
}

int wn_conf_load(const char *path, wn_conf_t **out, char *err, size_t errlen)
{
    FILE *fp = NULL;
    char *text = NULL;
    size_t len = 0, cap = 0;
    int rc;

    if (path == NULL || out == NULL) {
        wn_conf_errf(err, errlen, "(null)", 0, NULL, "no configuration file given");
        return WN_EINVAL;
    }
    /* O_NONBLOCK: a FIFO put where the file was would block open (and the
     * control thread with it) until something writes; only a regular file
     * is read. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        wn_conf_errf(err, errlen, path, 0, NULL, "cannot open: %s", strerror(errno));
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        wn_conf_errf(err, errlen, path, 0, NULL, "cannot read: %s", strerror(errno));
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        wn_conf_errf(err, errlen, path, 0, NULL, "cannot read: it is %s, not a regular file",
                     file_kind(st.st_mode));
        close(fd);
        return WN_EINVAL;
    }
    fp = fdopen(fd, "rb");
    if (fp == NULL) {
        rc = -errno;
        wn_conf_errf(err, errlen, path, 0, NULL, "cannot open: %s", strerror(errno));
        close(fd);
        return rc;
    }
    errno = 0;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *p;
            /* Exactly WN_CONF_FILE_MAX bytes are fine: larger only if
             * one more byte is there. */
            char more;
            if (cap >= WN_CONF_FILE_MAX && fread(&more, 1, 1, fp) == 0)
                break;
            if (cap >= WN_CONF_FILE_MAX) {
                wn_conf_errf(err, errlen, path, 0, NULL, "file is larger than %u bytes",
                             WN_CONF_FILE_MAX);
                rc = WN_ECONFIG;
                goto fail;
            }
            p = realloc(text, ncap);
            if (p == NULL) {
                wn_conf_errf(err, errlen, path, 0, NULL, "out of memory");
                rc = WN_ENOMEM;
                goto fail;
            }
            text = p;
            cap = ncap;
        }
        size_t n = fread(text + len, 1, cap - len, fp);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(fp)) {
        rc = errno != 0 ? -errno : WN_EIO;
        wn_conf_errf(err, errlen, path, 0, NULL, "cannot read: %s",
                     errno != 0 ? strerror(errno) : "read error");
        goto fail;
    }
    rc = wn_conf_parse(text, len, path, out, err, errlen);

fail:
    free(text);
    fclose(fp);
    return rc;
}

/* strdup of an owned string that may be NULL; false when memory is short. */
static bool dup_str(char **dst, const char *src)
{
    *dst = src != NULL ? strdup(src) : NULL;
    return src == NULL || *dst != NULL;
}

static bool dup_addr(wn_conf_addr_t *dst, const wn_conf_addr_t *src)
{
    *dst = *src;
    return dup_str(&dst->host, src->host);
}

/* Copies one pool into zeroed *dst; on failure what was copied stays for
 * wn_conf_pool_deinit. */
static bool dup_pool(wn_conf_pool_t *dst, const wn_conf_pool_t *src)
{
    *dst = *src;
    dst->name = dst->listen_text = dst->listen_where = dst->redis_auth = NULL;
    dst->listen.host = NULL;
    dst->servers = NULL;
    dst->nservers = 0;
    if (!dup_str(&dst->name, src->name) || !dup_str(&dst->listen_text, src->listen_text) ||
        !dup_str(&dst->listen_where, src->listen_where) || !dup_addr(&dst->listen, &src->listen) ||
        !dup_str(&dst->redis_auth, src->redis_auth))
        return false;
    dst->servers = calloc(src->nservers ? src->nservers : 1, sizeof(*dst->servers));
    if (dst->servers == NULL)
        return false;
    for (uint32_t j = 0; j < src->nservers; j++) {
        wn_conf_server_t *d = &dst->servers[j];
        const wn_conf_server_t *x = &src->servers[j];
        dst->nservers++;
        *d = *x;
        d->pname = d->name = d->label = NULL;
        d->addr.host = NULL;
        if (!dup_str(&d->pname, x->pname) || !dup_str(&d->name, x->name) ||
            !dup_str(&d->label, x->label) || !dup_addr(&d->addr, &x->addr))
            return false;
    }
    return true;
}

wn_conf_t *wn_conf_dup(const wn_conf_t *conf)
{
    wn_conf_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    atomic_init(&c->refs, 1);
    c->pools = calloc(conf->npools ? conf->npools : 1, sizeof(*c->pools));
    bool ok = c->pools != NULL && dup_str(&c->path, conf->path);
    for (uint32_t i = 0; ok && i < conf->npools; i++) {
        c->npools++;
        ok = dup_pool(&c->pools[i], &conf->pools[i]);
    }
    if (!ok) {
        conf_free(c);
        return NULL;
    }
    return c;
}

void wn_conf_ref(wn_conf_t *conf)
{
    if (conf != NULL)
        atomic_fetch_add_explicit(&conf->refs, 1, memory_order_relaxed);
}

void wn_conf_unref(wn_conf_t *conf)
{
    if (conf == NULL)
        return;
    /* acq_rel: every holder's reads happen before the free */
    if (atomic_fetch_sub_explicit(&conf->refs, 1, memory_order_acq_rel) == 1)
        conf_free(conf);
}

const wn_conf_pool_t *wn_conf_pool_find(const wn_conf_t *conf, const char *name)
{
    if (conf == NULL || name == NULL)
        return NULL;
    for (uint32_t i = 0; i < conf->npools; i++) {
        if (strcmp(conf->pools[i].name, name) == 0)
            return &conf->pools[i];
    }
    return NULL;
}

/* getaddrinfo's failure as walnut's errors say it. */
static int lookup_error(int rc)
{
    switch (rc) {
    case EAI_AGAIN:
        return UV_EAI_AGAIN; /* a DNS server did not answer: not the name's fault */
    case EAI_MEMORY:
        return UV_EAI_MEMORY;
    case EAI_SYSTEM:
        return errno > 0 ? -errno : UV_EAI_FAIL;
    default:
        return UV_EAI_NONAME;
    }
}

int wn_conf_addr_lookup_all(const wn_conf_addr_t *a, bool numeric, struct sockaddr_storage *out,
                            uint32_t *outlen, uint32_t max)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (a->host[0] == '\0')
        hints.ai_flags |= AI_PASSIVE;
    if (numeric)
        hints.ai_flags |= AI_NUMERICHOST | AI_NUMERICSERV;
    struct addrinfo *res = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", a->port);
    int rc = getaddrinfo(a->host[0] ? a->host : NULL, port, &hints, &res);
    if (rc != 0)
        return lookup_error(rc);
    uint32_t n = 0;
    for (const struct addrinfo *ai = res; ai != NULL && n < max; ai = ai->ai_next, n++) {
        size_t len = WN_MIN((size_t)ai->ai_addrlen, sizeof(out[n]));
        memset(&out[n], 0, sizeof(out[n]));
        memcpy(&out[n], ai->ai_addr, len);
        if (outlen != NULL)
            outlen[n] = (uint32_t)len;
    }
    freeaddrinfo(res);
    return n > 0 ? (int)n : UV_EAI_NONAME;
}

int wn_conf_addr_lookup(const wn_conf_addr_t *a, bool numeric, struct sockaddr_storage *out,
                        uint32_t *outlen)
{
    int n = wn_conf_addr_lookup_all(a, numeric, out, outlen, 1);
    return n < 0 ? n : 0;
}

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 one it is: a
 * listener on it takes IPv4 connections (listen.c). Others as they are. */
static const struct sockaddr_storage *plain(const struct sockaddr_storage *a,
                                            struct sockaddr_storage *tmp)
{
    const struct sockaddr_in6 *x = (const void *)a;
    if (a->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&x->sin6_addr))
        return a;
    struct sockaddr_in *v4 = (void *)tmp;
    memset(tmp, 0, sizeof(*tmp));
    v4->sin_family = AF_INET;
    v4->sin_port = x->sin6_port;
    memcpy(&v4->sin_addr, &x->sin6_addr.s6_addr[12], 4);
    return tmp;
}

bool wn_sockaddr_same(const struct sockaddr_storage *a0, const struct sockaddr_storage *b0)
{
    struct sockaddr_storage ta, tb;
    const struct sockaddr_storage *a = plain(a0, &ta), *b = plain(b0, &tb);
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

/* The IPv6 wildcard, which walnut's listeners bind dual-stack. */
static bool any6(const struct sockaddr_storage *a)
{
    return a->ss_family == AF_INET6 &&
           IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)a)->sin6_addr);
}

static uint16_t port_of(const struct sockaddr_storage *a)
{
    return a->ss_family == AF_INET ? ((const struct sockaddr_in *)a)->sin_port
                                   : ((const struct sockaddr_in6 *)a)->sin6_port;
}

bool wn_sockaddr_overlap(const struct sockaddr_storage *a0, const struct sockaddr_storage *b0)
{
    struct sockaddr_storage ta, tb;
    const struct sockaddr_storage *a = plain(a0, &ta), *b = plain(b0, &tb);
    if (wn_sockaddr_same(a, b))
        return true;
    if (a->ss_family != b->ss_family) {
        const struct sockaddr_storage *v4 = a->ss_family == AF_INET ? a : b;
        const struct sockaddr_storage *v6 = v4 == a ? b : a;
        return v4->ss_family == AF_INET && any6(v6) && port_of(v4) == port_of(v6);
    }
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port &&
               (x->sin_addr.s_addr == htonl(INADDR_ANY) || y->sin_addr.s_addr == htonl(INADDR_ANY));
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               (IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
    }
    return false;
}

void wn_sockaddr_format(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_UNIX) {
        snprintf(buf, len, "%s", ((const struct sockaddr_un *)ss)->sun_path);
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%u", host, (unsigned)ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
    } else {
        snprintf(buf, len, "an address of family %d", (int)ss->ss_family);
    }
}

bool wn_conf_addr_same(const wn_conf_addr_t *a, const wn_conf_addr_t *b)
{
    return a->is_unix == b->is_unix && a->port == b->port && strcmp(a->host, b->host) == 0;
}

const wn_conf_server_t *wn_conf_server_find(const wn_conf_pool_t *pool, const char *name)
{
    for (uint32_t i = 0; i < pool->nservers; i++)
        if (strcmp(pool->servers[i].name, name) == 0)
            return &pool->servers[i];
    return NULL;
}

bool wn_conf_server_same(const wn_conf_server_t *a, const wn_conf_server_t *b)
{
    return strcmp(a->name, b->name) == 0 && wn_conf_addr_same(&a->addr, &b->addr);
}

static bool str_same(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Both looked up to the same address (or neither looked up). */
static bool sa_same(const wn_conf_server_t *a, const wn_conf_server_t *b)
{
    if (a->has_sa != b->has_sa)
        return false;
    if (!a->has_sa || a->sa.ss_family != b->sa.ss_family)
        return !a->has_sa;
    if (a->sa.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->sa, *y = (const void *)&b->sa;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)&a->sa, *y = (const void *)&b->sa;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

bool wn_conf_server_conns_same(const wn_conf_pool_t *pa, const wn_conf_server_t *a,
                               const wn_conf_pool_t *pb, const wn_conf_server_t *b)
{
    return wn_conf_server_same(a, b) && sa_same(a, b) && pa->redis == pb->redis &&
           pa->server_connections == pb->server_connections &&
           str_same(pa->redis_auth, pb->redis_auth) && pa->redis_db == pb->redis_db;
}

void wn_conf_ring_servers(const wn_conf_pool_t *pool, wn_ring_server_t *out)
{
    for (uint32_t i = 0; i < pool->nservers; i++) {
        out[i].name = pool->servers[i].name;
        out[i].name_len = pool->servers[i].name_len;
        out[i].weight = pool->servers[i].weight;
    }
}
