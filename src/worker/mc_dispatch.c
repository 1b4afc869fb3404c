/*
 * worker/mc_dispatch.c: where a parsed memcached request goes. Keyed
 * commands go to their key's server; a get whose keys live on several
 * servers is split into one fragment per server (one arena for the split's
 * bookkeeping); flush_all and verbosity go to every server; version, stats
 * and quit are answered here. The request being dispatched holds a
 * reference; nothing here writes, connects or closes. Worker thread only.
 */
#include "mc.h"

#include <stdlib.h>
#include <string.h>

static const char version_line[] = "VERSION " WN_VERSION "-walnut\r\n";

static mc_req_t *new_req(mc_client_t *c, req_kind_t kind, wn_mc_cmd_t cmd)
{
    mc_req_t *r = (mc_req_t *)wn_req_create(c->c.pool, &c->c, kind);
    if (r == NULL)
        return NULL;
    r->cmd = (uint8_t)cmd;
    r->r.cmd = (uint16_t)cmd;
    wn_stat_add(&c->c.pool->stats->cmds[cmd], 1);
    wn_req_enqueue_client(&c->c, &r->r);
    return r;
}

mc_req_t *wn_mc_local(mc_client_t *c, wn_mc_cmd_t cmd)
{
    return new_req(c, REQ_LOCAL, cmd);
}

static void out_of_memory(mc_client_t *c)
{
    c->c.broken = true;
    wn_client_mark(&c->c);
}

/* The line as the server gets it: as sent, or without its noreply token
 * (walnut drops the reply itself: memcached still answers some errors to
 * noreply, and a reply nobody expects would shift every later reply). */
static int push_line(mc_req_t *r, wn_buf_t *b, uint32_t pos, const wn_mc_request_t *q)
{
    if (!q->noreply)
        return wn_req_out_push(&r->r, b, pos, q->line_len);
    r->r.swallow = true;
    size_t cap = (size_t)q->line_len + 2;
    char small[512];
    char *head = cap <= sizeof(small) ? small : malloc(cap);
    if (head == NULL)
        return WN_ENOMEM;
    int len = wn_mc_compose_without_noreply(head, cap, b->data + pos, q);
    int rc = len < 0 ? len : wn_req_out_scratch(&r->r, head, (size_t)len);
    if (head != small)
        free(head);
    return rc;
}

/* set add replace append prepend cas incr decr touch delete: by key. */
static void dispatch_keyed(mc_client_t *c, wn_buf_t *b, uint32_t pos, const wn_mc_request_t *q)
{
    wn_worker_t *w = c->c.w;
    if (wn_mc_cmd_is_storage(q->cmd))
        wn_stat_add(WN_GSTAT(w, cmd_set), 1);
    if (q->cmd == WN_MC_TOUCH)
        wn_stat_add(WN_GSTAT(w, cmd_touch), 1);
    mc_req_t *r = new_req(c, REQ_FORWARD, q->cmd);
    if (r == NULL) {
        out_of_memory(c);
        return;
    }
    r->r.noreply = q->noreply;
    r->r.server = wn_pool_route(c->c.pool, b->data + pos + q->key.off, q->key.len);
    int rc = push_line(r, b, pos, q);
    if (q->data_len > 0) {
        /* The data block follows; mc_client.c forwards once it is in. */
        c->data_left = q->data_len;
        c->trailer[0] = c->trailer[1] = 0;
        if (rc < 0) {
            c->data_swallow = true;
            wn_mc_fail(&r->r, rc);
            wn_req_unref(&r->r);
            return;
        }
        r->route_gen = w->gen;
        r->route_key = q->key;
        c->data_req = r; /* our reference passes to it */
        return;
    }
    if (rc < 0)
        wn_mc_fail(&r->r, rc);
    else
        wn_mc_forward(&c->c, r->r.server, &r->r);
    wn_req_unref(&r->r);
}

/* ---- retrieval ------------------------------------------------------------ */

/* The split's bookkeeping, in memory the parent keeps (r->keep). */
static mc_split_t *split_alloc(wn_worker_t *w, uint32_t nkeys, uint32_t nservers, segv_t *keep)
{
    uint32_t maxf = WN_MIN(nkeys, nservers);
    size_t size = sizeof(mc_split_t) + sizeof(wn_mc_span_t) * nkeys +
                  sizeof(uint32_t) * (2 * (size_t)nkeys + maxf + 1 + nservers) +
                  sizeof(mc_item_t) * nkeys;
    mc_split_t *s = wn_scratch_alloc(w, keep, size);
    if (s == NULL)
        return NULL;
    char *m = (char *)(s + 1);
    s->keys = (wn_mc_span_t *)m;
    m += sizeof(wn_mc_span_t) * nkeys;
    s->items = (mc_item_t *)m;
    m += sizeof(mc_item_t) * nkeys;
    s->key_frag = (uint32_t *)m;
    s->frag_keys = s->key_frag + nkeys;
    s->frag_first = s->frag_keys + nkeys;
    s->nkeys = nkeys;
    s->nfrags = 0;
    s->merged = 0;
    return s;
}

/* Route every key; fill the split's keys and key_frag; count fragments.
 * where[f] is fragment f's server. Returns false if a key has no server. */
static bool route_keys(mc_client_t *c, const char *line, const wn_mc_request_t *q, mc_split_t *s,
                       uint32_t *frag_of_server, server_rt_t **where)
{
    pool_rt_t *pool = c->c.pool;
    for (uint32_t i = 0; i < pool->nservers; i++)
        frag_of_server[i] = UINT32_MAX;
    uint32_t cursor = 0, n = 0;
    while (n < q->nkeys && wn_mc_key_next(line, q, &cursor, &s->keys[n])) {
        server_rt_t *srv = wn_pool_route(pool, line + s->keys[n].off, s->keys[n].len);
        if (srv == NULL)
            return false;
        if (frag_of_server[srv->idx] == UINT32_MAX) {
            where[s->nfrags] = srv;
            frag_of_server[srv->idx] = s->nfrags++;
        }
        s->key_frag[n++] = frag_of_server[srv->idx];
    }
    s->nkeys = n;
    return true;
}

/* Group key indexes by fragment, key order kept within each; `next` has
 * room for nfrags entries. */
static void group_keys(mc_split_t *s, uint32_t *next)
{
    uint32_t *first = s->frag_first; /* [nfrags + 1]: counted, then prefix-summed */
    memset(first, 0, sizeof(uint32_t) * (s->nfrags + 1));
    for (uint32_t k = 0; k < s->nkeys; k++)
        first[s->key_frag[k] + 1]++;
    for (uint32_t f = 0; f < s->nfrags; f++)
        first[f + 1] += first[f];
    memcpy(next, first, sizeof(uint32_t) * s->nfrags);
    for (uint32_t k = 0; k < s->nkeys; k++)
        s->frag_keys[next[s->key_frag[k]]++] = k;
}

/* One fragment: "get k1 k2\r\n" of its keys, to its server. */
static int make_fragment(mc_req_t *p, uint32_t f, server_rt_t *srv, const wn_mc_request_t *q)
{
    mc_split_t *s = p->split;
    mc_req_t *fr = (mc_req_t *)wn_req_create(p->r.pool, NULL, REQ_FRAGMENT);
    if (fr == NULL)
        return WN_ENOMEM;
    fr->cmd = p->cmd;
    fr->is_get = true;
    fr->split = s;
    fr->frag = f;
    fr->nkeys = s->frag_first[f + 1] - s->frag_first[f];
    fr->r.server = srv;
    wn_req_ref(&p->r);
    fr->r.parent = &p->r;
    p->r.frags[f] = &fr->r;
    /* The head, composed straight into a buffer of its own size. */
    const uint32_t *order = s->frag_keys + s->frag_first[f];
    size_t need = wn_mc_retrieval_head_size(p->line, q, s->keys, order, fr->nkeys);
    wn_buf_t *hb = wn_buf_get(&p->r.pool->w->bufs, need);
    if (hb == NULL)
        return WN_ENOMEM;
    int len = wn_mc_retrieval_head_compose(hb->data, need, p->line, q, s->keys, order, fr->nkeys);
    int rc = len;
    if (len >= 0) {
        hb->len = (uint32_t)len;
        rc = wn_req_out_push(&fr->r, hb, 0, (uint32_t)len);
    }
    wn_buf_unref(hb);
    return rc < 0 ? rc : 0;
}

static void dispatch_split(mc_client_t *c, mc_req_t *r, mc_split_t *s, server_rt_t **where,
                           uint32_t *scratch, const wn_mc_request_t *q)
{
    group_keys(s, scratch);
    r->r.kind = REQ_PARENT;
    r->split = s;
    if (wn_req_frags_alloc(&r->r, s->nfrags) < 0) {
        wn_mc_fail(&r->r, WN_ENOMEM);
        return;
    }
    for (uint32_t f = 0; f < s->nfrags; f++) {
        int rc = make_fragment(r, f, where[f], q);
        if (rc < 0) {
            wn_mc_fail(&r->r, rc);
            return;
        }
    }
    r->r.frags_left = s->nfrags;
    wn_stat_add(WN_PSTAT(c->c.pool, fragments), s->nfrags);
    /* A fragment that fails at once may settle the parent, which then lets
     * go of the rest: those are not sent. */
    for (uint32_t f = 0; f < s->nfrags && r->r.frags[f] != NULL; f++)
        wn_mc_forward(&c->c, where[f], r->r.frags[f]);
}

static void dispatch_retrieval(mc_client_t *c, wn_buf_t *b, uint32_t pos,
                               const wn_mc_request_t *q)
{
    pool_rt_t *pool = c->c.pool;
    const char *line = b->data + pos;
    wn_stat_add(WN_GSTAT(c->c.w, cmd_get), q->nkeys);
    if (q->cmd == WN_MC_GAT || q->cmd == WN_MC_GATS)
        wn_stat_add(WN_GSTAT(c->c.w, cmd_touch), q->nkeys);
    mc_req_t *r = new_req(c, REQ_FORWARD, q->cmd);
    if (r == NULL) {
        out_of_memory(c);
        return;
    }
    r->is_get = true;
    r->nkeys = q->nkeys;
    r->line = line;
    r->keys = q->nkeys == 1 ? q->key : q->keys; /* one key: its own span */
    /* The line stays held (by `out`) to match VALUE keys, or for the split. */
    r->r.keep_out = true;
    if (wn_req_out_push(&r->r, b, pos, q->line_len) < 0) {
        wn_mc_fail(&r->r, WN_ENOMEM);
        wn_req_unref(&r->r);
        return;
    }
    if (q->nkeys == 1) {
        r->r.server = wn_pool_route(pool, line + q->key.off, q->key.len);
    } else if (q->nkeys > WN_MC_MAX_KEYS) {
        r->r.kind = REQ_LOCAL;
        wn_stat_add(WN_PSTAT(pool, request_errors), 1);
        static const char too_many[] = "CLIENT_ERROR too many keys\r\n";
        wn_req_reply(&r->r, too_many, sizeof(too_many) - 1);
        wn_req_unref(&r->r);
        return;
    } else {
        uint32_t maxf = WN_MIN(q->nkeys, pool->nservers);
        mc_split_t *s = split_alloc(pool->w, q->nkeys, pool->nservers, &r->r.keep);
        server_rt_t **where = s != NULL ? malloc(sizeof(*where) * maxf) : NULL;
        uint32_t *fos = s != NULL ? s->frag_first + maxf + 1 : NULL;
        if (s == NULL || where == NULL) {
            free(where);
            wn_mc_fail(&r->r, WN_ENOMEM);
            wn_req_unref(&r->r);
            return;
        }
        bool routed = route_keys(c, line, q, s, fos, where);
        if (routed && s->nfrags > 1) {
            dispatch_split(c, r, s, where, fos, q);
            free(where);
            wn_req_unref(&r->r);
            return;
        }
        r->r.server = routed ? where[0] : NULL;
        free(where);
        wn_segv_clear(&r->r.keep);
    }
    wn_mc_forward(&c->c, r->r.server, &r->r);
    wn_req_unref(&r->r);
}

/* ---- flush_all and verbosity: every server, one reply -------------------- */

static void dispatch_broadcast(mc_client_t *c, wn_buf_t *b, uint32_t pos,
                               const wn_mc_request_t *q)
{
    pool_rt_t *pool = c->c.pool;
    mc_req_t *r = new_req(c, REQ_PARENT, q->cmd);
    if (r == NULL) {
        out_of_memory(c);
        return;
    }
    r->r.noreply = q->noreply;
    if (wn_req_frags_alloc(&r->r, pool->nservers) < 0) {
        wn_mc_fail(&r->r, WN_ENOMEM);
        wn_req_unref(&r->r);
        return;
    }
    for (uint32_t i = 0; i < pool->nservers; i++) {
        mc_req_t *f = (mc_req_t *)wn_req_create(pool, NULL, REQ_FRAGMENT);
        if (f == NULL || push_line(f, b, pos, q) < 0) {
            if (f != NULL)
                wn_req_unref(&f->r);
            wn_mc_fail(&r->r, WN_ENOMEM);
            wn_req_unref(&r->r);
            return;
        }
        f->cmd = (uint8_t)q->cmd;
        f->frag = i;
        f->r.server = pool->servers[i];
        wn_req_ref(&r->r);
        f->r.parent = &r->r;
        r->r.frags[i] = &f->r;
    }
    r->r.frags_left = pool->nservers;
    for (uint32_t i = 0; i < pool->nservers && r->r.frags[i] != NULL; i++)
        wn_mc_forward(&c->c, pool->servers[i], r->r.frags[i]);
    wn_req_unref(&r->r);
}

static void reply_local(mc_client_t *c, wn_mc_cmd_t cmd, const char *text, size_t len,
                        bool close_after)
{
    mc_req_t *r = wn_mc_local(c, cmd);
    if (r == NULL) {
        out_of_memory(c);
        return;
    }
    r->r.close_after = close_after;
    if (cmd == WN_MC_STATS)
        wn_mc_reply_stats(r);
    else
        wn_req_reply(&r->r, text, len);
    wn_req_unref(&r->r);
}

void wn_mc_dispatch(mc_client_t *c, wn_buf_t *b, uint32_t pos, const wn_mc_request_t *q)
{
    wn_stat_add(WN_PSTAT(c->c.pool, requests), 1);
    if (wn_mc_cmd_is_retrieval(q->cmd)) {
        dispatch_retrieval(c, b, pos, q);
        return;
    }
    switch (q->cmd) {
    case WN_MC_SET:
    case WN_MC_ADD:
    case WN_MC_REPLACE:
    case WN_MC_APPEND:
    case WN_MC_PREPEND:
    case WN_MC_CAS:
    case WN_MC_INCR:
    case WN_MC_DECR:
    case WN_MC_TOUCH:
    case WN_MC_DELETE:
        dispatch_keyed(c, b, pos, q);
        return;
    case WN_MC_FLUSH_ALL:
    case WN_MC_VERBOSITY:
        dispatch_broadcast(c, b, pos, q);
        return;
    case WN_MC_VERSION:
        reply_local(c, q->cmd, version_line, sizeof(version_line) - 1, false);
        return;
    case WN_MC_STATS:
        if (q->arg.len > 0) {
            /* stats subcommands describe one memcached, not the pool. */
            reply_local(c, q->cmd, "ERROR\r\n", 7, false);
            return;
        }
        reply_local(c, q->cmd, NULL, 0, false);
        return;
    case WN_MC_QUIT:
        c->c.stop_parsing = true; /* nothing after quit is looked at */
        reply_local(c, q->cmd, "", 0, true);
        return;
    default:
        /* Meta commands and unknown words: not routable (yet). A data block
         * it announced (ms) is swallowed, never run as commands. */
        if (q->data_len > 0) {
            c->data_left = q->data_len;
            c->data_swallow = true;
        }
        wn_stat_add(WN_PSTAT(c->c.pool, request_errors), 1);
        reply_local(c, q->cmd, "ERROR\r\n", 7, false);
        return;
    }
}

/* ---- holds ----------------------------------------------------------------- */

bool wn_mc_must_wait(mc_client_t *c, const char *line, const wn_mc_request_t *q)
{
    if (q->nkeys == 0)
        return false;
    if (q->nkeys == 1) {
        server_rt_t *s = wn_pool_route(c->c.pool, line + q->key.off, q->key.len);
        return s != NULL && wn_server_is_suspect(s) && wn_ctl_hold(&c->c, s);
    }
    uint32_t cursor = 0;
    wn_mc_span_t key;
    while (wn_mc_key_next(line, q, &cursor, &key)) {
        server_rt_t *s = wn_pool_route(c->c.pool, line + key.off, key.len);
        if (s != NULL && wn_server_is_suspect(s))
            return wn_ctl_hold(&c->c, s);
    }
    return false;
}
