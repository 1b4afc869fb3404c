/*
 * control/http_route.c: what each stats path answers (/stats, /, /servers,
 * /metrics, /healthz, and twemproxy's raw JSON), as a status, a type and a
 * body made whole from a fresh view. Knows nothing of connections: the
 * caller (http_conn.c) sends the answer. Loop thread only; never blocks.
 */
#include "http_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"

#define TEXT_PLAIN "text/plain; charset=utf-8"

typedef char *(*render_fn)(const wn_stats_view_t *v, size_t *len);

static int text_answer(http_answer_t *a, int status, const char *text)
{
    a->status = status;
    a->type = TEXT_PLAIN;
    a->len = strlen(text);
    a->body = strdup(text);
    return a->body != NULL ? 0 : WN_ENOMEM;
}

int http_error_answer(http_answer_t *a, int status)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "%s\n", http_status_str((enum http_status)status));
    a->extra_headers = status == 405 ? "Allow: GET, HEAD\r\n" : NULL;
    return text_answer(a, status, msg);
}

static const struct {
    render_fn render;
    bool newline;
} kinds[] = {
    [HTTP_BODY_JSON] = {wn_stats_json_render, true},
    [HTTP_BODY_SERVERS] = {wn_stats_json_servers, true},
    [HTTP_BODY_PROM] = {wn_stats_prom_render, false},
};

/* A fresh view rendered as `kind` (a reference): the one rendered earlier
 * in this loop turn if there is one (the same moment's counters), else a
 * new one, kept for the rest of the turn and while a write holds it. When
 * another copy would take the bodies held past lim.max_held (clients that
 * do not read their responses, or read them slowly), the one kept is
 * answered again, with its older counters, if it is younger than
 * HTTP_BODY_REUSE_MS: memory stays bounded, and a scrape still gets stats.
 * An older one is not: stats that stop moving would mislead, so a slow
 * reader holding on costs one more copy per HTTP_BODY_REUSE_MS at most
 * (and its slot). NULL on error (*err). */
#define HTTP_BODY_REUSE_MS 5000

static http_body_t *rendered(wn_http_t *srv, int kind, int *err)
{
    http_body_t *kept = srv->bodies[kind];
    uint64_t now = uv_now(srv->loop);
    if (kept != NULL &&
        (srv->bodies_turn[kind] == srv->turns ||
         (srv->held + kept->len > srv->lim.max_held && now - kept->made_ms < HTTP_BODY_REUSE_MS))) {
        kept->refs++;
        return kept;
    }
    wn_stats_view_t v;
    memset(&v, 0, sizeof(v));
    int rc = srv->h.build_view(&v, srv->arg);
    if (rc < 0) {
        wn_stats_view_free(&v);
        *err = rc;
        return NULL;
    }
    size_t len = 0;
    char *text = kinds[kind].render(&v, &len);
    wn_stats_view_free(&v);
    if (text != NULL && kinds[kind].newline) {
        char *t = realloc(text, len + 2);
        if (t == NULL) {
            free(text);
            text = NULL;
        } else {
            text = t;
            text[len++] = '\n';
            text[len] = '\0';
        }
    }
    http_body_t *b = text != NULL ? malloc(sizeof(*b)) : NULL;
    if (b == NULL) {
        free(text);
        *err = WN_ENOMEM;
        return NULL;
    }
    b->srv = srv;
    b->made_ms = now;
    b->refs = 2; /* the caller's and the turn's */
    b->len = len;
    b->text = text;
    srv->held += len;
    http_body_unref(srv->bodies[kind]);
    srv->bodies[kind] = b;
    srv->bodies_turn[kind] = srv->turns;
    return b;
}

http_body_t *http_render_raw(wn_http_t *srv, int *err)
{
    return rendered(srv, HTTP_BODY_JSON, err);
}

static int healthz(wn_http_t *srv, http_answer_t *a)
{
    char reason[256] = "";
    int bad = srv->h.health != NULL ? srv->h.health(reason, sizeof(reason), srv->arg) : 0;
    if (bad == 0)
        return text_answer(a, 200, "ok\n");
    /* One line, whatever the handler wrote. */
    reason[sizeof(reason) - 1] = '\0';
    for (char *p = reason; *p != '\0'; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    char line[300];
    snprintf(line, sizeof(line), "%s\n", reason[0] != '\0' ? reason : "unhealthy");
    return text_answer(a, 503, line);
}

static bool path_is(const char *path, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(path, want, n) == 0;
}

int http_route(wn_http_t *srv, const char *path, size_t plen, http_answer_t *a)
{
    memset(a, 0, sizeof(*a));
    int kind;
    const char *type = WN_STATS_JSON_CONTENT_TYPE;
    /* "/": `curl host:22222`, which twemproxy answers with its JSON too. */
    if (path_is(path, plen, "/stats") || path_is(path, plen, "/")) {
        kind = HTTP_BODY_JSON;
    } else if (path_is(path, plen, "/servers")) {
        kind = HTTP_BODY_SERVERS;
    } else if (path_is(path, plen, "/metrics")) {
        kind = HTTP_BODY_PROM;
        type = WN_STATS_PROM_CONTENT_TYPE;
    } else if (path_is(path, plen, "/healthz")) {
        return healthz(srv, a);
    } else {
        return http_error_answer(a, 404);
    }
    int err = 0;
    a->shared = rendered(srv, kind, &err);
    if (a->shared == NULL) {
        char msg[200];
        snprintf(msg, sizeof(msg), "cannot make the stats: %s\n", wn_strerror(err));
        return text_answer(a, 500, msg);
    }
    a->body = a->shared->text;
    a->len = a->shared->len;
    a->status = 200;
    a->type = type;
    return 0;
}
