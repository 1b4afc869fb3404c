/*
 * control/stats_json.c: twemproxy's stats JSON and the /servers JSON, made
 * with jansson from a stats view. twemproxy's field names, nesting and order
 * come first at every level; walnut's own fields follow them (see the
 * WN_JSON_*_EXTRA_MAP tables in stats_view.h, which -D prints too).
 * Pure functions of the view; any thread.
 */
#include "stats_view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "walnut/core.h"

/* Insertion order is the output order (jansson >= 2.8 always keeps it; the
 * flag says so for older ones). Compact, as twemproxy's "k":v. */
#define DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER)

/* Builders record failure (only ENOMEM is possible: every key and string is
 * valid UTF-8, the view made sure) in *ok and go on; the caller checks once. */
static void put(json_t *o, const char *key, json_t *val, bool *ok)
{
    /* A later key replaces an earlier one of the same name in place, which
     * is what a JSON reader of twemproxy's output (where a server may be
     * named like a pool field) ends up with too. */
    if (json_object_set_new(o, key, val) != 0)
        *ok = false;
}

static json_t *jint(uint64_t x)
{
    return json_integer(x > (uint64_t)INT64_MAX ? (json_int_t)INT64_MAX : (json_int_t)x);
}

static void put_u64(json_t *o, const char *key, uint64_t x, bool *ok)
{
    put(o, key, jint(x), ok);
}

/*
 * A pool or server may be named like one of walnut's own fields ("workers",
 * "epoch", "cmd_get"). twemproxy has no such field, so the pool or server
 * keeps the name: the field is left out, rather than the object landing in
 * the field's place (out of twemproxy's order) or the field's value
 * replacing the object.
 */
static bool pool_named(const wn_stats_view_t *v, const char *key)
{
    for (uint32_t i = 0; i < v->npools; i++)
        if (strcmp(v->pools[i].name, key) == 0)
            return true;
    return false;
}

static bool server_named(const wn_stats_pool_view_t *p, const char *key)
{
    for (uint32_t s = 0; s < p->nservers; s++)
        if (strcmp(p->servers[s].name, key) == 0)
            return true;
    return false;
}

/* A walnut-only field of pool p, unless a server has its name. */
static void put_pool_extra(json_t *o, const wn_stats_pool_view_t *p, const char *key, json_t *val,
                           bool *ok)
{
    if (server_named(p, key)) {
        json_decref(val);
        return;
    }
    put(o, key, val, ok);
}

static json_t *server_object(const wn_stats_server_view_t *s, bool *ok)
{
    json_t *o = json_object();
    if (o == NULL) {
        *ok = false;
        return NULL;
    }
    for (unsigned i = 0; i < WN_SERVER_STAT_COUNT; i++) {
        put_u64(o, wn_server_stat_desc[i].name, s->v[i], ok);
        if (i == WN_SERVER_EJECTED_AT_AFTER)
            put_u64(o, "server_ejected_at", s->ejected_at_us, ok);
    }
    /* WN_JSON_SERVER_EXTRA_MAP, in its order. */
    put(o, "ejected", json_boolean(s->ejected), ok);
    put(o, "health", json_string(wn_health_state_name(s->state)), ok);
    put_u64(o, "failures", s->failures, ok);
    put(o, "last_probe",
        json_string(!s->probed ? "none" : s->last_probe_err == 0 ? "ok"
                                                                  : wn_strerror(s->last_probe_err)),
        ok);
    put(o, "last_probe_age_ms",
        s->probed ? jint(s->last_probe_age_ms) : json_integer(-1), ok);
    return o;
}

static json_t *pool_object(const wn_stats_pool_view_t *p, bool *ok)
{
    json_t *o = json_object();
    if (o == NULL) {
        *ok = false;
        return NULL;
    }
    /* twemproxy's six come first in the map; then walnut's pool stats. */
    for (unsigned i = 0; i < WN_POOL_STAT_COUNT; i++) {
        if (i <= WN_P_fragments) /* twemproxy's own: always there */
            put_u64(o, wn_pool_stat_desc[i].name, p->v[i], ok);
        else
            put_pool_extra(o, p, wn_pool_stat_desc[i].name, jint(p->v[i]), ok);
    }
    put_pool_extra(o, p, "protocol", json_string(p->protocol), ok);
    put_pool_extra(o, p, "epoch", jint(p->epoch), ok);
    char key[128];
    for (unsigned i = 0; i < WN_CAUSE_COUNT; i++) {
        snprintf(key, sizeof(key), "forward_error_%s", wn_error_cause_desc[i].name);
        put_pool_extra(o, p, key, jint(p->errors[i]), ok);
    }
    for (uint32_t i = 0; i < p->ncmds; i++) {
        if (p->cmd_names[i] == NULL)
            continue;
        snprintf(key, sizeof(key), "cmd_%s", p->cmd_names[i]);
        put_pool_extra(o, p, key, jint(p->cmds[i]), ok);
    }
    for (uint32_t s = 0; s < p->nservers; s++)
        put(o, p->servers[s].name, server_object(&p->servers[s], ok), ok);
    return o;
}

static char *dump(json_t *root, bool ok, size_t *len)
{
    char *text = ok && root != NULL ? json_dumps(root, DUMP_FLAGS) : NULL;
    json_decref(root);
    if (text != NULL && len != NULL)
        *len = strlen(text);
    return text;
}

char *wn_stats_json_render(const wn_stats_view_t *v, size_t *len)
{
    bool ok = true;
    json_t *root = json_object();
    if (root == NULL)
        return NULL;
    put(root, "service", json_string(v->service), &ok);
    put(root, "source", json_string(v->source), &ok);
    put(root, "version", json_string(v->version), &ok);
    put_u64(root, "uptime", v->uptime, &ok);
    put_u64(root, "timestamp", v->timestamp, &ok);
    put_u64(root, "total_connections", v->total_connections, &ok);
    put_u64(root, "curr_connections", v->curr_connections, &ok);
    /* WN_JSON_HEADER_EXTRA_MAP, then the global stats; not where a pool
     * has the name (pool_named). */
    if (!pool_named(v, "workers"))
        put_u64(root, "workers", v->nworkers, &ok);
    for (unsigned i = 0; i < WN_GLOBAL_STAT_COUNT; i++)
        if (wn_stats_global_in_json((wn_global_stat_t)i) &&
            !pool_named(v, wn_global_stat_desc[i].name))
            put_u64(root, wn_global_stat_desc[i].name, v->global[i], &ok);
    for (uint32_t i = 0; i < v->npools; i++) {
        const wn_stats_pool_view_t *p = &v->pools[v->sorted[i]];
        put(root, p->name, pool_object(p, &ok), &ok);
    }
    return dump(root, ok, len);
}

/* ---- /servers ------------------------------------------------------------- */

static json_t *health_object(const wn_stats_server_view_t *s, bool *ok)
{
    json_t *o = json_object();
    if (o == NULL) {
        *ok = false;
        return NULL;
    }
    put(o, "name", json_string(s->name), ok);
    put(o, "address", json_string(s->address), ok);
    put(o, "resolved", s->resolved != NULL ? json_string(s->resolved) : json_null(), ok);
    if (s->dns_named) {
        json_t *d = json_object();
        if (d == NULL)
            *ok = false;
        put_u64(d, "lookups", s->dns[WN_DNS_LOOKUPS], ok);
        put_u64(d, "failures", s->dns[WN_DNS_FAILURES], ok);
        put_u64(d, "moves", s->dns[WN_DNS_MOVES], ok);
        put(o, "dns", d, ok);
    } else {
        put(o, "dns", json_null(), ok);
    }
    put(o, "health", json_string(wn_health_state_name(s->state)), ok);
    put(o, "ejected", json_boolean(s->ejected), ok);
    put_u64(o, "failures", s->failures, ok);
    put_u64(o, "ejected_at", s->ejected_at_us, ok);
    if (s->probed) {
        put(o, "last_probe", json_string(s->last_probe_err == 0 ? "ok"
                                                                : wn_strerror(s->last_probe_err)),
            ok);
        put(o, "last_probe_code",
            s->last_probe_err == 0 ? json_null() : json_string(wn_err_name(s->last_probe_err)),
            ok);
        put(o, "last_probe_said",
            s->last_probe_said[0] != '\0' ? json_string(s->last_probe_said) : json_null(), ok);
        put_u64(o, "last_probe_age_ms", s->last_probe_age_ms, ok);
    } else {
        put(o, "last_probe", json_null(), ok);
        put(o, "last_probe_code", json_null(), ok);
        put(o, "last_probe_said", json_null(), ok);
        put(o, "last_probe_age_ms", json_null(), ok);
    }
    return o;
}

static json_t *health_pool(const wn_stats_pool_view_t *p, uint32_t nworkers, bool *ok)
{
    json_t *o = json_object(), *epochs = json_array(), *servers = json_array();
    if (o == NULL || epochs == NULL || servers == NULL) {
        json_decref(o);
        json_decref(epochs);
        json_decref(servers);
        *ok = false;
        return NULL;
    }
    bool converged = true;
    for (uint32_t w = 0; w < nworkers; w++) {
        if (json_array_append_new(epochs, jint(p->worker_epoch[w])) != 0)
            *ok = false;
        converged = converged && p->worker_epoch[w] == p->epoch;
    }
    uint32_t ejected = 0;
    for (uint32_t s = 0; s < p->nservers; s++) {
        ejected += p->servers[s].ejected;
        if (json_array_append_new(servers, health_object(&p->servers[s], ok)) != 0)
            *ok = false;
    }
    put(o, "name", json_string(p->name), ok);
    put(o, "protocol", json_string(p->protocol), ok);
    put_u64(o, "epoch", p->epoch, ok);
    put(o, "worker_epochs", epochs, ok);
    put(o, "converged", json_boolean(converged), ok);
    put_u64(o, "servers_total", p->nservers, ok);
    put_u64(o, "servers_ejected", ejected, ok);
    put(o, "servers", servers, ok);
    return o;
}

char *wn_stats_json_servers(const wn_stats_view_t *v, size_t *len)
{
    bool ok = true;
    json_t *root = json_object(), *pools = json_array();
    if (root == NULL || pools == NULL) {
        json_decref(root);
        json_decref(pools);
        return NULL;
    }
    put(root, "service", json_string(v->service), &ok);
    put(root, "source", json_string(v->source), &ok);
    put(root, "version", json_string(v->version), &ok);
    put_u64(root, "timestamp", v->timestamp, &ok);
    put_u64(root, "workers", v->nworkers, &ok);
    put_u64(root, "generation", v->generation, &ok);
    put(root, "generation_converged", json_boolean(v->generation_converged), &ok);
    put(root, "last_reload", v->last_reload[0] ? json_string(v->last_reload) : json_null(), &ok);
    for (uint32_t p = 0; p < v->npools; p++)
        if (json_array_append_new(pools, health_pool(&v->pools[p], v->nworkers, &ok)) != 0)
            ok = false;
    put(root, "pools", pools, &ok);
    return dump(root, ok, len);
}
