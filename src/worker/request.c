/*
 * worker/request.c: a request's life. Created by a protocol unit from the
 * worker's free list, queued on its client's FIFO and (forwarded ones) on a
 * server connection's FIFO, completed by a reply or a failure, freed when the
 * last holder lets go. A request whose client has gone keeps going until the
 * server side is done with it; its reply is dropped as it arrives. Every byte
 * held for a client is counted against its pool's client_buffer_limit.
 * Completing or failing only marks: clients are written by the flush.
 * Worker thread only.
 */
#include "core_types.h"

#include <stdlib.h>
#include <string.h>

void wn_split_group(const uint32_t *key_frag, uint32_t nkeys, uint32_t nfrags, uint32_t *first,
                    uint32_t *next, uint32_t *frag_keys)
{
    /* Counted, then prefix-summed. */
    memset(first, 0, sizeof(uint32_t) * (nfrags + 1));
    for (uint32_t k = 0; k < nkeys; k++)
        first[key_frag[k] + 1]++;
    for (uint32_t f = 0; f < nfrags; f++)
        first[f + 1] += first[f];
    memcpy(next, first, sizeof(uint32_t) * nfrags);
    for (uint32_t k = 0; k < nkeys; k++)
        frag_keys[next[key_frag[k]]++] = k;
}

req_t *wn_req_create(pool_rt_t *pool, client_t *c, req_kind_t kind)
{
    wn_worker_t *w = pool->w;
    req_t *r = w->free_reqs;
    if (r != NULL) {
        w->free_reqs = r->next;
        w->nfree_reqs--;
    } else {
        r = malloc(w->req_size);
        if (r == NULL)
            return NULL;
    }
    memset(r, 0, w->req_size);
    r->refs = 1;
    r->kind = (uint8_t)kind;
    r->pool = pool;
    r->client = c;
    r->start_us = wn_worker_now_us(w);
    wn_segv_init(&r->out);
    wn_segv_init(&r->rsp);
    wn_segv_init(&r->keep);
    return r;
}

void wn_req_ref(req_t *r)
{
    r->refs++;
}

req_t *wn_req_root(req_t *r)
{
    return r->kind == REQ_FRAGMENT && r->parent != NULL ? r->parent : r;
}

client_t *wn_req_client(const req_t *r)
{
    const req_t *root = r->kind == REQ_FRAGMENT ? r->parent : r;
    if (root == NULL || root->client == NULL || root->client->overlimit)
        return NULL;
    return root->client;
}

/* Count n more (or fewer) bytes held for r's client. Inline: it runs a
 * few times per request. */
WN_INLINE void account(req_t *r, int64_t n)
{
    req_t *root = wn_req_root(r);
    client_t *c = root->client;
    if (c == NULL || n == 0)
        return;
    if (n < 0 && (uint64_t)-n > root->acct)
        n = -(int64_t)root->acct;
    root->acct += (uint64_t)n;
    c->held += (uint64_t)n; /* either way: n < 0 wraps, as much as acct had */
    c->w->clients_held += (uint64_t)n;
    if (n > 0 && c->held > c->pool->buffer_limit && !c->overlimit) {
        /* The flush disconnects it; from now on its replies are dropped. */
        c->overlimit = true;
        c->held_over = c->held;
        wn_client_mark(c);
    } else if (n < 0 && !c->reading && c->held < c->soft_limit &&
               c->held + (uint64_t)-n >= c->soft_limit) {
        wn_client_mark(c); /* under its soft bound again: the flush reads it on */
    }
}

/* A parent lets go of its fragments once its reply is settled: each
 * fragment holds a reference on its parent, so holding them longer would be
 * a cycle. Fragments still in flight live on in their server's queue. */
static void release_frags(req_t *r)
{
    for (uint32_t i = 0; i < r->nfrags; i++) {
        if (r->frags[i] != NULL) {
            req_t *f = r->frags[i];
            r->frags[i] = NULL;
            wn_req_unref(f);
        }
    }
}

void wn_req_let_go_frags(req_t *p)
{
    for (uint32_t i = 0; p->frags != NULL && i < p->nfrags; i++) {
        if (p->frags[i] != NULL) {
            wn_req_rsp_drop(p->frags[i]);
            p->frags[i]->swallow = true;
        }
    }
}

void wn_req_frags_let_go(req_t *r)
{
    if (r->kind == REQ_FRAGMENT && r->parent != NULL)
        wn_req_let_go_frags(r->parent);
    wn_req_rsp_drop(r); /* (listed above, unless its parent let go of its parts) */
    r->swallow = true;
}

int wn_req_part_push(req_t *r, wn_buf_t *buf, uint32_t off, uint32_t len, bool split)
{
    const client_t *c = wn_req_client(r);
    if (c != NULL && !r->swallow && c->held + len > c->pool->buffer_limit) {
        wn_req_frags_let_go(r);
        return 1;
    }
    return wn_req_rsp_push(r, buf, off, len, split);
}

int wn_req_frags_alloc(req_t *r, uint32_t n)
{
    r->frags = calloc(n ? n : 1, sizeof(*r->frags));
    if (r->frags == NULL)
        return WN_ENOMEM;
    r->nfrags = n;
    return 0;
}

void wn_req_unref(req_t *r)
{
    if (r == NULL || --r->refs > 0)
        return;
    account(r, -(int64_t)r->acct);
    wn_segv_clear(&r->keep);
    wn_segv_clear(&r->out);
    wn_segv_clear(&r->rsp);
    release_frags(r);
    free(r->frags);
    if (r->owned != NULL)
        free(r->owned);
    if (r->parent != NULL) {
        req_t *p = r->parent;
        r->parent = NULL;
        wn_req_unref(p);
    }
    wn_worker_t *w = r->pool->w;
    if (w->nfree_reqs < WN_REQ_FREE_MAX) {
        r->next = w->free_reqs;
        w->free_reqs = r;
        w->nfree_reqs++;
        return;
    }
    free(r);
}

void wn_req_free_all(wn_worker_t *w)
{
    while (w->free_reqs != NULL) {
        req_t *r = w->free_reqs;
        w->free_reqs = r->next;
        free(r);
    }
    w->nfree_reqs = 0;
}

uint64_t wn_req_kept(const req_t *r)
{
    uint64_t slot = r->pool->w->req_size;
    uint64_t n = slot + (uint64_t)r->nfrags * (slot + sizeof(req_t *)) + r->owned_size;
    if (r->keep_out)
        n += r->out_bytes;
    for (uint32_t i = 0; i < r->keep.n; i++)
        n += r->keep.v[i].len;
    return n;
}

void wn_req_hold(req_t *r, uint64_t bytes)
{
    account(r, (int64_t)bytes);
}

void wn_req_hold_move(req_t *from, req_t *to, uint64_t bytes)
{
    req_t *a = wn_req_root(from), *b = wn_req_root(to);
    if (a->client == NULL || a->client != b->client)
        return; /* gone, or answered already: nothing is counted any more */
    bytes = WN_MIN(bytes, a->acct);
    a->acct -= bytes;
    b->acct += bytes; /* the client's total is unchanged */
}

int wn_req_out_push(req_t *r, wn_buf_t *buf, uint32_t off, uint32_t len)
{
    int rc = wn_segv_push(&r->out, buf, off, len);
    if (rc == 0) {
        r->out_bytes += len;
        account(r, len);
    }
    return rc;
}

int wn_req_out_scratch(req_t *r, const char *data, size_t len)
{
    int rc = wn_scratch_push(r->pool->w, &r->out, data, len);
    if (rc == 0) {
        r->out_bytes += len;
        account(r, (int64_t)len);
    }
    return rc;
}

int wn_req_out_push_shared(req_t *r, wn_buf_t *buf, uint32_t off, uint32_t len)
{
    int rc = wn_segv_push(&r->out, buf, off, len);
    if (rc == 0)
        r->out_bytes += len;
    r->out_shared = true;
    return rc;
}

int wn_req_out_scratch_shared(req_t *r, const char *data, size_t len)
{
    int rc = wn_scratch_push(r->pool->w, &r->out, data, len);
    if (rc == 0)
        r->out_bytes += len;
    r->out_shared = true;
    return rc;
}

void wn_req_out_uncount(req_t *r)
{
    account(r, -(int64_t)r->out_bytes);
    r->out_bytes = 0;
}

void wn_req_offered(req_t *r)
{
    if (r->waiting == 0 || r->sent)
        return;
    wn_count_sub(r->server, &r->server->unoffered, r->waiting, "unoffered");
}

void wn_req_not_waiting(req_t *r)
{
    if (r->waiting == 0)
        return;
    wn_req_offered(r); /* dropped before a write offered it */
    wn_count_sub(r->server, &r->server->waiting, r->waiting, "waiting");
    r->waiting = 0;
}

void wn_req_out_written(req_t *r)
{
    wn_req_not_waiting(r);
    if (r->keep_out) {
        /* kept until the reply: its server holds them (once, if written again;
         * held is set, and the server with it, from when r is queued) */
        uint64_t want = r->pool->w->req_size + r->out_bytes;
        if (r->held != 0 && r->held < want) {
            r->server->held += want - r->held;
            r->held = want;
        }
        return;
    }
    if (!r->out_shared)
        account(r, -(int64_t)r->out_bytes);
    else if (r->parent != NULL && r->parent->copies_left > 0 && --r->parent->copies_left == 0)
        wn_req_out_written(r->parent); /* the last copy is out: its count goes */
    wn_segv_clear(&r->out);
}

int wn_req_rsp_push(req_t *r, wn_buf_t *buf, uint32_t off, uint32_t len, bool split)
{
    if (r->swallow || wn_req_client(r) == NULL)
        return 0;
    int rc = split ? wn_segv_push_split(&r->rsp, buf, off, len)
                   : wn_segv_push(&r->rsp, buf, off, len);
    if (rc == 0)
        account(r, len);
    return rc;
}

int wn_req_rsp_scratch(req_t *r, const char *data, size_t len)
{
    if (len == 0 || r->swallow || wn_req_client(r) == NULL)
        return 0;
    int rc = wn_scratch_push(r->pool->w, &r->rsp, data, len);
    if (rc == 0)
        account(r, (int64_t)len);
    return rc;
}

void wn_req_done(req_t *r)
{
    if (r->done)
        return;
    r->done = true;
    if (r->kind == REQ_FRAGMENT) {
        /* The protocol unit merges; it hears of this from whoever completed
         * the fragment (its reply parser, or its error path). */
        req_t *p = r->parent;
        if (p != NULL && !p->done && p->frags_left > 0)
            p->frags_left--;
        return;
    }
    if (r->kind == REQ_INTERNAL)
        return;
    if (r->kind == REQ_PARENT)
        release_frags(r);
    wn_hist_record(&r->pool->stats->latency, wn_worker_now_us(r->pool->w) - r->start_us);
    if (r->client != NULL)
        wn_client_mark(r->client);
}

static wn_error_cause_t cause_of(int err)
{
    switch (err) {
    case UV_ECONNREFUSED:
    case WN_ENOSERVER:
        return WN_CAUSE_refused;
    case UV_ETIMEDOUT:
        return WN_CAUSE_timeout;
    case UV_ECONNRESET:
    case UV_EOF:
    case UV_EPIPE:
    case UV_ECONNABORTED:
        return WN_CAUSE_reset;
    case WN_EPROTO:
    case WN_ESELECT: /* the server's answer to walnut's SELECT was not +OK */
    case WN_ENOAUTH: /* nor to its AUTH, and the connection is not selected */
        return WN_CAUSE_protocol;
    case UV_ENETUNREACH:
    case UV_EHOSTUNREACH:
    case UV_EHOSTDOWN:
    case UV_EAI_NONAME:
    case UV_EADDRNOTAVAIL:
        return WN_CAUSE_unreachable;
    default:
        return WN_CAUSE_other;
    }
}

bool wn_req_err_unreached(int err)
{
    wn_error_cause_t c = cause_of(err);
    return c == WN_CAUSE_refused || c == WN_CAUSE_timeout || c == WN_CAUSE_reset ||
           c == WN_CAUSE_unreachable;
}

/* twemproxy answers a request it could not complete with the system's text
 * for the error: "SERVER_ERROR Connection refused" and friends. */
const char *wn_req_fail_text(int err)
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
    case WN_EPROTO:
        return "Invalid argument"; /* twemproxy's EINVAL for a reply it cannot parse */
    case WN_ESELECT:
        return "the server refused SELECT of the pool's redis_db (see walnut's log)";
    case WN_ESRVFULL:
        return "Too many open connections"; /* memcached's words for it */
    case UV_ENOMEM:
    case WN_ENOMEM:
        return "Out of memory";
    default:
        /* A system error (libuv's codes are negated errno values on Unix;
         * its own are -3000 and below): the system's text, as twemproxy's
         * strerror ("Broken pipe"), not libuv's lower-case one.
         * strerrordesc_np is strerror's text, thread-safe. */
        if (err < 0 && err > -1000) {
            const char *text = strerrordesc_np(-err);
            if (text != NULL)
                return text;
        }
        return wn_strerror(err);
    }
}

bool wn_req_failed(req_t *r, int err)
{
    if (r->done)
        return false;
    r->failed = true;
    if (r->kind != REQ_INTERNAL) {
        /* Each failed request or fragment counts its cause; the client's
         * request counts once as a forward error. */
        wn_stat_add(&r->pool->stats->errors[cause_of(err)], 1);
        if (r->kind != REQ_FRAGMENT)
            wn_stat_add(WN_PSTAT(r->pool, forward_error), 1);
    }
    return true;
}

void wn_req_rsp_drop(req_t *r)
{
    uint64_t had = 0;
    for (uint32_t i = r->rsp_sent; i < r->rsp.n; i++)
        if (r->rsp.v[i].buf != NULL) /* else moved to the parent, and counted there */
            had += r->rsp.v[i].len;
    account(r, -(int64_t)had);
    wn_segv_clear(&r->rsp);
}

void wn_req_reply(req_t *r, const char *text, size_t len)
{
    if (r->rsp.n > 0) {
        /* Replace what was gathered (a failed merge, say). */
        wn_req_rsp_drop(r);
        if (r->rsp_sent > 0) {
            /* Part of the reply is on its way already: nothing coherent can
             * follow it, so the client is closed after it. */
            r->close_after = true;
            wn_req_done(r);
            return;
        }
    }
    if (wn_req_rsp_scratch(r, text, len) < 0 && r->client != NULL) {
        /* No memory for even an error line: this client cannot be answered
         * in order any more; it is closed after what came before. */
        r->close_after = true;
    }
    wn_req_done(r);
}

void wn_req_reply_after(req_t *r, const char *text, size_t len)
{
    if (wn_req_rsp_scratch(r, text, len) < 0 && r->client != NULL)
        r->close_after = true; /* as wn_req_reply: it cannot be answered in order */
    wn_req_done(r);
}

void wn_req_detach(req_t *r)
{
    account(r, -(int64_t)r->acct);
    r->client = NULL;
}
