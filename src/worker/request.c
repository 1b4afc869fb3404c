/*
 * worker/request.c: a request's life: created by the client side, queued on
 * the client's FIFO and (for forwarded ones) on a server connection's FIFO,
 * completed by a reply or a failure, freed when the last holder lets go.
 * A request whose client has gone stays valid until the server side is done
 * with it; its reply is then dropped. Worker thread only.
 */
#include "worker_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

req_t *req_create(client_t *c, req_kind_t kind, wn_mc_cmd_t cmd)
{
    req_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->refs = 1;
    r->kind = kind;
    r->cmd = cmd;
    r->client = c;
    segv_init(&r->out);
    segv_init(&r->rsp);
    return r;
}

void req_ref(req_t *r)
{
    r->refs++;
}

void req_unref(req_t *r)
{
    if (r == NULL || --r->refs > 0)
        return;
    segv_clear(&r->out);
    segv_clear(&r->rsp);
    if (r->frags != NULL) {
        for (uint32_t i = 0; i < r->nfrag_slots; i++) {
            if (r->frags[i] != NULL) {
                r->frags[i]->parent = NULL;
                req_unref(r->frags[i]);
            }
        }
        free(r->frags);
    }
    free(r->key_frag);
    free(r->keys);
    free(r->items);
    free(r->vkeys);
    free(r->vlens);
    free(r);
}

int req_reply_local(req_t *r, const char *text, size_t len)
{
    wn_worker_t *w = r->client != NULL ? r->client->w : NULL;
    int rc = 0;
    segv_clear(&r->rsp);
    if (w != NULL && len > 0)
        rc = scratch_push(w, &r->rsp, text, len);
    req_done(r);
    return rc;
}

static void parent_fragment_done(req_t *parent)
{
    if (parent->nfrags > 0 && --parent->nfrags > 0)
        return;
    if (parent->client == NULL) {
        parent->done = true;
        return;
    }
    int rc = parent->kind == REQ_SPLIT ? mc_merge_split(parent) : mc_merge_broadcast(parent);
    if (rc < 0) {
        req_fail(parent, rc);
        return;
    }
    req_done(parent);
}

void req_done(req_t *r)
{
    if (r->done)
        return;
    r->done = true;
    if (r->kind == REQ_FRAGMENT) {
        if (r->parent != NULL)
            parent_fragment_done(r->parent);
        return;
    }
    if (r->client != NULL)
        client_mark_ready(r->client);
}

/* twemproxy answers a request it could not complete with the system's text
 * for the error: "SERVER_ERROR Connection refused" and friends. */
static const char *fail_text(int err)
{
    switch (err) {
    case 0:
    case UV_EOF:
    case UV_ECONNRESET:
        return "Connection reset by peer";
    case UV_ECONNREFUSED:
    case WN_ENOSERVER:
        return "Connection refused";
    case UV_ETIMEDOUT:
        return "Connection timed out";
    case UV_ENOMEM:
    case WN_ENOMEM:
        return "Out of memory";
    default:
        return wn_strerror(err);
    }
}

void req_fail(req_t *r, int err)
{
    if (r->done)
        return;
    char line[160];
    int n = snprintf(line, sizeof(line), "SERVER_ERROR %s\r\n", fail_text(err));
    r->failed = true;
    segv_clear(&r->rsp);
    if (r->kind == REQ_FRAGMENT) {
        /* The parent's merge sees `failed` and answers with this line. */
        wn_worker_t *w = r->parent && r->parent->client ? r->parent->client->w : NULL;
        if (w != NULL)
            scratch_push(w, &r->rsp, line, (size_t)n);
        req_done(r);
        return;
    }
    if (r->client != NULL)
        STAT_INC(r->client->w, forward_error);
    req_reply_local(r, line, (size_t)n);
}
