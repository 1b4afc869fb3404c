/*
 * config/validate.c: from libcyaml's typed pools to wn_conf_pool_t. Applies
 * twemproxy's defaults to absent keys and its rules (plus walnut's, a little
 * stricter), naming file, line, pool and key in every message. Control or
 * main thread; builds a snapshot nobody else sees yet.
 */
#include "conf_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"

typedef struct ctx {
    const char *file;
    char *err;
    size_t errlen;
    const wn_conf_src_pool_t *sp;
} ctx_t;

static int key_line(const ctx_t *c, const char *key)
{
    int k = wn_conf_schema_key_index(key, strlen(key));
    if (k >= 0 && c->sp->key_line[k] > 0)
        return c->sp->key_line[k];
    return c->sp->line;
}

static int int_or(const int *v, int def)
{
    return v != NULL ? *v : def;
}

static bool bool_or(const int *v, bool def)
{
    return v != NULL ? *v != 0 : def;
}

/* The pool's ring, every server live, within what wn_ring_create builds:
 * refused here so that -t, --locate, start and reload all say why. */
static int check_ring_size(const ctx_t *c, const wn_conf_pool_t *pool)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < pool->nservers; i++)
        total += pool->servers[i].weight;
    uint64_t points = wn_ring_capacity(pool->distribution, pool->nservers, total);
    int line = key_line(c, "servers");
    if (total > WN_RING_MAX_TOTAL_WEIGHT) {
        wn_conf_errf(c->err, c->errlen, c->file, line, c->sp->name,
                     "servers' weights add up to %llu; at most %llu in all (lower the weights "
                     "in proportion)",
                     (unsigned long long)total, (unsigned long long)WN_RING_MAX_TOTAL_WEIGHT);
        return WN_ECONFIG;
    }
    if (points <= WN_RING_MAX_POINTS)
        return 0;
    if (pool->distribution == WN_DIST_MODULA)
        wn_conf_errf(c->err, c->errlen, c->file, line, c->sp->name,
                     "servers' weights add up to %llu; modula takes one ring slot per unit of "
                     "weight, at most %u in all (lower the weights in proportion)",
                     (unsigned long long)total, WN_RING_MAX_POINTS);
    else
        wn_conf_errf(c->err, c->errlen, c->file, line, c->sp->name,
                     "%u servers need %llu ring points; at most %u in all", pool->nservers,
                     (unsigned long long)points, WN_RING_MAX_POINTS);
    return WN_ECONFIG;
}

static int build_servers(const ctx_t *c, const wn_conf_raw_pool_t *raw, wn_conf_pool_t *pool)
{
    const wn_conf_src_pool_t *sp = c->sp;
    char why[256];

    if (raw->servers == NULL || raw->servers_count == 0) {
        wn_conf_errf(c->err, c->errlen, c->file, sp->line, sp->name,
                     "servers is missing (want 'servers:' followed by '- host:port:weight "
                     "[name]' lines)");
        return WN_ECONFIG;
    }
    pool->servers = calloc(raw->servers_count, sizeof(*pool->servers));
    if (pool->servers == NULL)
        goto oom;
    for (unsigned i = 0; i < raw->servers_count; i++) {
        int line = i < sp->nserver_line ? sp->server_line[i] : key_line(c, "servers");
        int rc = wn_conf_server_parse(raw->servers[i], &pool->servers[i], why, sizeof(why));
        if (rc == WN_ENOMEM)
            goto oom;
        if (rc != 0) {
            wn_conf_errf(c->err, c->errlen, c->file, line, sp->name, "servers[%u] '%.*s' %s", i,
                         WN_CONF_QUOTE_MAX, raw->servers[i], why);
            return rc;
        }
        pool->servers[i].line = line;
        pool->nservers++;
    }

    qsort(pool->servers, pool->nservers, sizeof(*pool->servers), wn_conf_server_cmp);
    for (uint32_t i = 0; i + 1 < pool->nservers; i++) {
        const wn_conf_server_t *a = &pool->servers[i], *b = &pool->servers[i + 1];
        if (wn_conf_server_cmp(a, b) != 0)
            continue;
        if (a->line > b->line) {
            const wn_conf_server_t *t = a;
            a = b;
            b = t;
        }
        wn_conf_errf(
            c->err, c->errlen, c->file, b->line, sp->name,
            "servers entry '%.*s' has the same name '%.*s' as '%.*s' (line %d); server names "
            "must be unique, give one an explicit name ('host:port:weight name')",
            WN_CONF_QUOTE_MAX, b->pname, WN_CONF_QUOTE_MAX, b->name, WN_CONF_QUOTE_MAX, a->pname,
            a->line);
        return WN_ECONFIG;
    }
    return check_ring_size(c, pool);

oom:
    wn_conf_errf(c->err, c->errlen, c->file, 0, NULL, "out of memory");
    return WN_ENOMEM;
}

static int build_pool(const ctx_t *c, const wn_conf_raw_pool_t *raw, wn_conf_pool_t *pool)
{
    const wn_conf_src_pool_t *sp = c->sp;
    char why[256];
    int rc;

    pool->line = sp->line;
    pool->name = strdup(sp->name);
    if (pool->name == NULL)
        goto oom;

    if (raw->listen == NULL) {
        wn_conf_errf(c->err, c->errlen, c->file, sp->line, sp->name,
                     "listen is missing (want e.g. 'listen: 127.0.0.1:22121')");
        return WN_ECONFIG;
    }
    pool->listen_text = strdup(raw->listen);
    size_t where_len = strlen(c->file) + 16;
    pool->listen_where = malloc(where_len);
    if (pool->listen_text == NULL || pool->listen_where == NULL)
        goto oom;
    snprintf(pool->listen_where, where_len, "%s:%d", c->file, key_line(c, "listen"));
    rc = wn_conf_listen_parse(raw->listen, &pool->listen, why, sizeof(why));
    if (rc == WN_ENOMEM)
        goto oom;
    if (rc != 0) {
        wn_conf_errf(c->err, c->errlen, c->file, key_line(c, "listen"), sp->name,
                     "listen '%.*s' %s", WN_CONF_QUOTE_MAX, raw->listen, why);
        return rc;
    }

    pool->hash = raw->hash ? (wn_hash_t)*raw->hash : WN_CONF_DEFAULT_HASH;
    pool->distribution = raw->distribution ? (wn_dist_t)*raw->distribution : WN_CONF_DEFAULT_DIST;
    if (raw->hash_tag != NULL) {
        size_t n = strlen(raw->hash_tag);
        if (n != 2) {
            wn_conf_errf(c->err, c->errlen, c->file, key_line(c, "hash_tag"), sp->name,
                         "hash_tag '%.*s' is %zu byte%s; want exactly two, the opening and "
                         "closing character, e.g. \"{}\"%s",
                         WN_CONF_QUOTE_MAX, raw->hash_tag, n, n == 1 ? "" : "s",
                         n == 0 ? " (a '#' after a space starts a YAML comment: quote a tag "
                                  "with one, as in \"##\")"
                                : "");
            return WN_ECONFIG;
        }
        memcpy(pool->hash_tag, raw->hash_tag, 2);
        pool->has_hash_tag = true;
    }

    pool->timeout = int_or(raw->timeout, WN_CONF_DEFAULT_TIMEOUT);
    pool->backlog = int_or(raw->backlog, WN_CONF_DEFAULT_BACKLOG);
    pool->preconnect = bool_or(raw->preconnect, false);
    pool->redis = bool_or(raw->redis, false);
    pool->redis_db = int_or(raw->redis_db, WN_CONF_DEFAULT_REDIS_DB);
    pool->server_connections = int_or(raw->server_connections, WN_CONF_DEFAULT_SERVER_CONNECTIONS);
    pool->auto_eject_hosts = bool_or(raw->auto_eject_hosts, false);
    pool->server_retry_timeout =
        int_or(raw->server_retry_timeout, WN_CONF_DEFAULT_SERVER_RETRY_TIMEOUT);
    pool->server_failure_limit =
        int_or(raw->server_failure_limit, WN_CONF_DEFAULT_SERVER_FAILURE_LIMIT);
    pool->client_connections = int_or(raw->client_connections, WN_CONF_DEFAULT_CLIENT_CONNECTIONS);
    pool->tcpkeepalive = bool_or(raw->tcpkeepalive, false);
    pool->reuseport = bool_or(raw->reuseport, false);
    pool->health_check_interval =
        int_or(raw->health_check_interval, WN_CONF_DEFAULT_HEALTH_CHECK_INTERVAL);
    pool->max_ejected_fraction = raw->max_ejected_fraction ? *raw->max_ejected_fraction
                                                           : WN_CONF_DEFAULT_MAX_EJECTED_FRACTION;
    if (pool->health_check_interval > 0 &&
        pool->health_check_interval < WN_CONF_MIN_HEALTH_CHECK_INTERVAL) {
        wn_conf_errf(c->err, c->errlen, c->file, key_line(c, "health_check_interval"), sp->name,
                     "health_check_interval %d is too short: it counts milliseconds (want 0 to "
                     "turn probes off, or at least %d; the default is %d)",
                     pool->health_check_interval, WN_CONF_MIN_HEALTH_CHECK_INTERVAL,
                     WN_CONF_DEFAULT_HEALTH_CHECK_INTERVAL);
        return WN_ECONFIG;
    }

    pool->dns_refresh_interval =
        int_or(raw->dns_refresh_interval, WN_CONF_DEFAULT_DNS_REFRESH_INTERVAL);
    if (pool->dns_refresh_interval > 0 &&
        pool->dns_refresh_interval < WN_CONF_MIN_DNS_REFRESH_INTERVAL) {
        wn_conf_errf(c->err, c->errlen, c->file, key_line(c, "dns_refresh_interval"), sp->name,
                     "dns_refresh_interval %d is too short: it counts milliseconds (want 0 to "
                     "look names up only when a server is added, or at least %d; the default "
                     "is %d)",
                     pool->dns_refresh_interval, WN_CONF_MIN_DNS_REFRESH_INTERVAL,
                     WN_CONF_DEFAULT_DNS_REFRESH_INTERVAL);
        return WN_ECONFIG;
    }

    pool->client_buffer_limit = raw->client_buffer_limit
                                    ? (uint64_t)(uint32_t)*raw->client_buffer_limit
                                    : WN_CONF_DEFAULT_CLIENT_BUFFER_LIMIT;
    if (raw->client_buffer_limit &&
        (*raw->client_buffer_limit < 0 ||
         pool->client_buffer_limit < WN_CONF_MIN_CLIENT_BUFFER_LIMIT)) {
        wn_conf_errf(c->err, c->errlen, c->file, key_line(c, "client_buffer_limit"), sp->name,
                     "client_buffer_limit %d is too small (want at least %u bytes; the "
                     "default is %u)",
                     *raw->client_buffer_limit, WN_CONF_MIN_CLIENT_BUFFER_LIMIT,
                     WN_CONF_DEFAULT_CLIENT_BUFFER_LIMIT);
        return WN_ECONFIG;
    }
    if (pool->server_connections == 0) {
        wn_conf_errf(c->err, c->errlen, c->file, key_line(c, "server_connections"), sp->name,
                     "server_connections is 0; want 1 or more connections per server");
        return WN_ECONFIG;
    }
    if (!(pool->max_ejected_fraction >= 0.0 && pool->max_ejected_fraction <= 1.0)) {
        wn_conf_errf(c->err, c->errlen, c->file, key_line(c, "max_ejected_fraction"), sp->name,
                     "max_ejected_fraction '%.*s' is out of range (want 0.0 to 1.0)",
                     WN_CONF_QUOTE_MAX,
                     sp->key_text[wn_conf_schema_key_index("max_ejected_fraction", 20)]);
        return WN_ECONFIG;
    }
    /* twemproxy refuses an empty one ("syntax is invalid"); most likely a
     * template's variable that was not set, so it is not taken for none */
    if (raw->redis_auth != NULL && raw->redis_auth[0] == '\0') {
        wn_conf_errf(c->err, c->errlen, c->file, key_line(c, "redis_auth"), sp->name,
                     "redis_auth is empty; give the servers' password, or remove redis_auth "
                     "for servers without one");
        return WN_ECONFIG;
    }
    if (raw->redis_auth != NULL) {
        if (!pool->redis) {
            wn_conf_errf(c->err, c->errlen, c->file, key_line(c, "redis_auth"), sp->name,
                         "redis_auth is only valid in a redis pool; add 'redis: true' or "
                         "remove redis_auth (memcached has no AUTH)");
            return WN_ECONFIG;
        }
        pool->redis_auth = strdup(raw->redis_auth);
        if (pool->redis_auth == NULL)
            goto oom;
    }

    return build_servers(c, raw, pool);

oom:
    wn_conf_errf(c->err, c->errlen, c->file, 0, NULL, "out of memory");
    return WN_ENOMEM;
}

static bool same_addr(const wn_conf_addr_t *a, const wn_conf_addr_t *b)
{
    return a->is_unix == b->is_unix && a->port == b->port && strcmp(a->host, b->host) == 0;
}

int wn_conf_build(wn_conf_t *conf, const wn_conf_src_t *src, const wn_conf_raw_pool_t *raw,
                  const char *file, char *err, size_t errlen)
{
    ctx_t c = {.file = file, .err = err, .errlen = errlen, .sp = NULL};

    conf->pools = calloc(src->npools, sizeof(*conf->pools));
    if (conf->pools == NULL) {
        wn_conf_errf(err, errlen, file, 0, NULL, "out of memory");
        return WN_ENOMEM;
    }
    for (uint32_t i = 0; i < src->npools; i++) {
        c.sp = &src->pools[i];
        conf->npools = i + 1; /* so a half-built pool is freed too */
        int rc = build_pool(&c, &raw[i], &conf->pools[i]);
        if (rc != 0)
            return rc;
    }

    /* twemproxy compares the text; the same socket written twice is caught too */
    for (uint32_t j = 1; j < conf->npools; j++) {
        for (uint32_t i = 0; i < j; i++) {
            const wn_conf_pool_t *a = &conf->pools[i], *b = &conf->pools[j];
            if (!same_addr(&a->listen, &b->listen))
                continue;
            c.sp = &src->pools[j];
            wn_conf_errf(err, errlen, file, key_line(&c, "listen"), b->name,
                         "listen '%.*s' is already the listen address of pool '%.*s' (line %d); "
                         "each pool needs its own",
                         WN_CONF_QUOTE_MAX, b->listen_text, WN_CONF_QUOTE_MAX, a->name, a->line);
            return WN_ECONFIG;
        }
    }
    return 0;
}

void wn_conf_pool_deinit(wn_conf_pool_t *pool)
{
    if (pool == NULL)
        return;
    free(pool->name);
    free(pool->listen_text);
    free(pool->listen_where);
    wn_conf_addr_deinit(&pool->listen);
    free(pool->redis_auth);
    for (uint32_t i = 0; i < pool->nservers; i++)
        wn_conf_server_deinit(&pool->servers[i]);
    free(pool->servers);
    memset(pool, 0, sizeof(*pool));
}
