/*
 * worker/mc_dispatch.c: where a parsed memcached request goes. Keyed
 * commands go to their key's server; a get whose keys live on several
 * servers is split into one fragment per server (one arena for the split's
 * bookkeeping; a long gat/gats line into several per server, each under
 * memcached's 2 KiB line limit); flush_all and verbosity go to every server;
 * version to the server of the key "placeholder"; stats and quit are
 * answered here. Lines memcached could not take as sent are rebuilt from
 * their tokens. The request being dispatched holds a reference; nothing here
 * writes, connects or closes. Worker thread only.
 */
#include "mc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A request of c's, in its FIFO; counted under cmd unless it is a part of
 * a streamed line (the line counts once). */
static mc_req_t *make_req(mc_client_t *c, req_kind_t kind, wn_mc_cmd_t cmd, bool counted)
{
    mc_req_t *r = (mc_req_t *)wn_req_create(c->c.pool, &c->c, kind);
    if (r == NULL)
        return NULL;
    r->cmd = (uint8_t)cmd;
    r->r.cmd = (uint16_t)cmd;
    if (counted)
        wn_stat_add(&c->c.pool->stats->cmds[cmd], 1);
    wn_req_enqueue_client(&c->c, &r->r);
    return r;
}

static mc_req_t *new_req(mc_client_t *c, req_kind_t kind, wn_mc_cmd_t cmd)
{
    return make_req(c, kind, cmd, true);
}

mc_req_t *wn_mc_local(mc_client_t *c, wn_mc_cmd_t cmd)
{
    return new_req(c, REQ_LOCAL, cmd);
}

mc_req_t *wn_mc_request(mc_client_t *c, req_kind_t kind, wn_mc_cmd_t cmd)
{
    return new_req(c, kind, cmd);
}

static void out_of_memory(mc_client_t *c)
{
    c->c.broken = true;
    wn_client_mark(&c->c);
}

/* The line as the server gets it: as sent, or without its noreply token
 * (walnut drops the reply itself: memcached still answers some errors to
 * noreply, and a reply nobody expects would shift every later reply), or
 * rebuilt from its tokens when memcached could not take it as sent. */
static int push_line(mc_req_t *r, wn_buf_t *b, uint32_t pos, const wn_mc_request_t *q)
{
    if (q->noreply)
        r->r.swallow = true;
    if (q->line_len > WN_MC_SERVER_LINE_MAX) {
        char line[WN_MC_CANONICAL_MAX];
        int len = wn_mc_compose_canonical(line, sizeof(line), b->data + pos, q);
        return len < 0 ? len : wn_req_out_scratch(&r->r, line, (size_t)len);
    }
    if (!q->noreply)
        return wn_req_out_push(&r->r, b, pos, q->line_len);
    char head[WN_MC_SERVER_LINE_MAX + 2];
    int len = wn_mc_compose_without_noreply(head, sizeof(head), b->data + pos, q);
    return len < 0 ? len : wn_req_out_scratch(&r->r, head, (size_t)len);
}

/*
 * A storage command larger than the client may hold (half its
 * client_buffer_limit, line and data block together: wn_mc_storage_fits):
 * walnut cannot forward it, so it answers as
 * memcached answers an item over its size limit: SERVER_ERROR object too
 * large for cache (nothing under noreply), the data block swallowed, and for
 * set the old value unlinked: the key's server is sent a delete whose reply
 * is dropped, queued like any request of this client, so order holds.
 */
static void too_large(mc_client_t *c, wn_buf_t *b, uint32_t pos, const wn_mc_request_t *q)
{
    size_t len;
    const char *text = wn_mc_reply_text(WN_MC_REPLY_TOO_LARGE, &len);
    mc_req_t *r = new_req(c, REQ_LOCAL, q->cmd);
    if (r == NULL) {
        out_of_memory(c);
        return;
    }
    r->r.noreply = q->noreply;
    wn_stat_add(WN_PSTAT(c->c.pool, request_errors), 1);
    wn_req_reply(&r->r, text, len);
    wn_req_unref(&r->r);
    c->data_left = q->data_len;
    c->data_swallow = true;
    if (q->cmd != WN_MC_SET)
        return;
    /* the delete: in the client's order, answering nobody */
    mc_req_t *d = (mc_req_t *)wn_req_create(c->c.pool, &c->c, REQ_FORWARD);
    if (d == NULL) {
        out_of_memory(c);
        return;
    }
    d->cmd = WN_MC_DELETE;
    d->r.cmd = WN_MC_DELETE;
    d->r.noreply = true;
    d->r.swallow = true;
    wn_req_enqueue_client(&c->c, &d->r);
    const char *key = b->data + pos + q->key.off;
    d->r.server = wn_pool_route(c->c.pool, key, q->key.len);
    char line[WN_MC_KEY_MAX + 16];
    int n = snprintf(line, sizeof(line), "delete %.*s\r\n", (int)q->key.len, key);
    if (wn_req_out_scratch(&d->r, line, (size_t)n) < 0)
        wn_mc_fail(&d->r, WN_ENOMEM);
    else
        wn_mc_forward(&c->c, d->r.server, &d->r);
    wn_req_unref(&d->r);
}

/* set add replace append prepend cas incr decr touch delete: by key. */
static void dispatch_keyed(mc_client_t *c, wn_buf_t *b, uint32_t pos, const wn_mc_request_t *q)
{
    wn_worker_t *w = c->c.w;
    if (wn_mc_cmd_is_storage(q->cmd))
        wn_stat_add(WN_GSTAT(w, cmd_set), 1);
    if (q->data_len > 0 && !wn_mc_storage_fits(c->c.pool, q->line_len, q->data_len)) {
        too_large(c, b, pos, q);
        return;
    }
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
        if (wn_mc_expect_data(c, r, b->data + pos + q->key.off, q->key.len) < 0) {
            c->data_swallow = true;
            wn_mc_fail(&r->r, WN_ENOMEM);
            wn_req_unref(&r->r);
        }
        return;
    }
    if (rc < 0)
        wn_mc_fail(&r->r, rc);
    else
        wn_mc_forward(&c->c, r->r.server, &r->r);
    wn_req_unref(&r->r);
}

/* ---- retrieval ------------------------------------------------------------ */

/* Bytes of a split's bookkeeping: 28 a key, more than a short key's own. */
static size_t split_size(uint32_t nkeys, uint32_t nservers, uint32_t maxf)
{
    return sizeof(mc_split_t) + sizeof(wn_mc_span_t) * nkeys +
           sizeof(uint32_t) * (2 * (size_t)nkeys + maxf + 1 + nservers) +
           sizeof(mc_item_t) * nkeys;
}

/* The split's bookkeeping, in memory the parent keeps (r->keep), `size`
 * bytes from split_size. A streamed line's part keeps it until the line
 * answers: a buffer of its own (`own`), not a share of a scratch chunk. */
static mc_split_t *split_alloc(wn_worker_t *w, uint32_t nkeys, size_t size, segv_t *keep, bool own)
{
    mc_split_t *s = own ? wn_keep_alloc_own(w, keep, size) : wn_scratch_alloc(w, keep, size);
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

/* Where a split's fragments go, and (gat, gats) the size of each one's line
 * so far: scratch for routing, freed once they are made. */
typedef struct frag_plan {
    server_rt_t **where;   /* [maxf] */
    uint32_t *size;        /* [maxf] */
    uint32_t *of_server;   /* [nservers] the server's open fragment */
    uint32_t head;         /* a line's bytes without keys */
    bool bounded;          /* no line over WN_MC_SERVER_LINE_MAX */
} frag_plan_t;

/* Route every key; fill the split's keys and key_frag; count fragments:
 * one per server, or (bounded) as many per server as keep each line under
 * memcached's limit. Returns false if a key has no server. */
static bool route_keys(mc_client_t *c, const char *line, const wn_mc_request_t *q, mc_split_t *s,
                       frag_plan_t *plan)
{
    pool_rt_t *pool = c->c.pool;
    for (uint32_t i = 0; i < pool->nservers; i++)
        plan->of_server[i] = UINT32_MAX;
    uint32_t cursor = 0, n = 0;
    while (n < q->nkeys && wn_mc_key_next(line, q, &cursor, &s->keys[n])) {
        wn_mc_span_t k = s->keys[n];
        server_rt_t *srv = wn_pool_route(pool, line + k.off, k.len);
        if (srv == NULL)
            return false;
        uint32_t f = plan->of_server[srv->idx];
        if (f == UINT32_MAX ||
            (plan->bounded && plan->size[f] + 1 + k.len > WN_MC_SERVER_LINE_MAX)) {
            f = s->nfrags++;
            plan->where[f] = srv;
            plan->size[f] = plan->head;
            plan->of_server[srv->idx] = f;
        }
        plan->size[f] += 1 + k.len;
        s->key_frag[n++] = f;
    }
    s->nkeys = n;
    return true;
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
    fr->r.swallow = p->r.noreply; /* a touch nobody reads (wn_mc_dispatch_touch_only) */
    wn_req_ref(&p->r);
    fr->r.parent = &p->r;
    p->r.frags[f] = &fr->r;
    /* The head, composed straight into a buffer of its own size. */
    const uint32_t *order = s->frag_keys + s->frag_first[f];
    size_t need = wn_mc_retrieval_head_size(p->line, q, s->keys, order, fr->nkeys);
    wn_buf_t *hb = wn_buf_get_exact(&p->r.pool->w->bufs, need);
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

/* `bytes`: the split's bookkeeping (split_size); last_of[server index]: the
 * server's last fragment. */
static void dispatch_split(mc_client_t *c, mc_req_t *r, mc_split_t *s, size_t bytes,
                           server_rt_t **where, const uint32_t *last_of, uint32_t *scratch,
                           const wn_mc_request_t *q)
{
    wn_split_group(s->key_frag, s->nkeys, s->nfrags, s->frag_first, scratch, s->frag_keys);
    r->r.kind = REQ_PARENT;
    r->split = s;
    if (wn_req_frags_alloc(&r->r, s->nfrags) < 0) {
        wn_mc_fail(&r->r, WN_ENOMEM);
        return;
    }
    /* The split's memory is held for the client until the request is
     * freed: its bookkeeping and each fragment's slot. The line and the
     * fragments' lines count as they are pushed. */
    uint64_t held = bytes + (uint64_t)s->nfrags * (c->c.w->req_size + sizeof(req_t *));
    wn_req_hold(&r->r, held);
    if (r->part_of != NULL)
        r->kept += held;
    for (uint32_t f = 0; f < s->nfrags; f++) {
        int rc = make_fragment(r, f, where[f], q);
        if (rc < 0) {
            wn_mc_fail(&r->r, rc);
            return;
        }
        r->r.frags[f]->more_here = last_of[where[f]->idx] != f;
    }
    r->r.frags_left = s->nfrags;
    wn_stat_add(WN_PSTAT(c->c.pool, fragments), s->nfrags);
    /* A fragment that fails at once may settle the parent, which then lets
     * go of the rest: those are not sent. */
    for (uint32_t f = 0; f < s->nfrags && r->r.frags[f] != NULL; f++)
        wn_mc_forward(&c->c, where[f], r->r.frags[f]);
}

/* May the line go to a server as the client sent it? */
static bool retrieval_as_is(const char *line, const wn_mc_request_t *q)
{
    if (q->line_len <= WN_MC_SERVER_LINE_MAX)
        return true;
    /* memcached reads on past 2 KiB only for a line starting "get "/"gets "
     * (bget, leading spaces: rebuilt) */
    if (q->cmd == WN_MC_GET)
        return memcmp(line, "get ", 4) == 0;
    if (q->cmd == WN_MC_GETS)
        return memcmp(line, "gets ", 5) == 0;
    return false;
}

/* Route a retrieval with more than one key, or one that must be rebuilt:
 * split, or forward whole when every key goes to one server and the line
 * may go as it is. */
static void dispatch_keys(mc_client_t *c, mc_req_t *r, const char *line, const wn_mc_request_t *q,
                          bool as_is)
{
    pool_rt_t *pool = c->c.pool;
    bool bounded = q->cmd == WN_MC_GAT || q->cmd == WN_MC_GATS;
    uint32_t maxf = bounded ? q->nkeys : WN_MIN(q->nkeys, pool->nservers);
    size_t bytes = split_size(q->nkeys, pool->nservers, maxf);
    mc_split_t *s = split_alloc(pool->w, q->nkeys, bytes, &r->r.keep, r->part_of != NULL);
    frag_plan_t plan = {.bounded = bounded};
    plan.where = s != NULL ? malloc((sizeof(*plan.where) + sizeof(*plan.size)) * maxf) : NULL;
    if (s == NULL || plan.where == NULL) {
        free(plan.where);
        wn_mc_fail(&r->r, WN_ENOMEM);
        return;
    }
    plan.size = (uint32_t *)(plan.where + maxf);
    plan.of_server = s->frag_first + maxf + 1;
    plan.head = (uint32_t)wn_mc_retrieval_head_size(line, q, NULL, NULL, 0);
    bool routed = route_keys(c, line, q, s, &plan);
    if (routed && (s->nfrags > 1 || !as_is)) {
        /* the sizes are done with: scratch for grouping (nfrags entries) */
        dispatch_split(c, r, s, bytes, plan.where, plan.of_server, plan.size, q);
        free(plan.where);
        return;
    }
    r->r.server = routed ? plan.where[0] : NULL;
    free(plan.where);
    wn_segv_clear(&r->r.keep);
    wn_mc_forward(&c->c, r->r.server, &r->r);
}

/* A part of a streamed line joins it: the line holds a reference, and
 * waits for its merge. The part's slot is counted against the client (the
 * line is one request, but its parts are not bounded by the client's
 * requests in flight); so are its line and split, as they are made. */
WN_COLD static int join_line(mc_line_t *l, mc_req_t *r)
{
    if (l->nparts == l->cap) {
        uint32_t cap = l->cap ? 2 * l->cap : 16;
        mc_req_t **v = realloc(l->parts, cap * sizeof(*v));
        if (v == NULL)
            return WN_ENOMEM;
        l->parts = v;
        l->cap = cap;
    }
    wn_req_ref(&r->r);
    l->parts[l->nparts++] = r;
    l->pending++;
    r->part_of = l;
    r->r.rsp_held = true; /* the line may still answer with one error line alone */
    r->kept = r->r.pool->w->req_size + sizeof(mc_req_t *);
    wn_req_hold(&r->r, r->kept);
    return 0;
}

/* get gets gat gats (and bget, a get). `touch_only`: the keys of a gat
 * memcached has touched before refusing the line; nobody reads the reply.
 * `part`: the streamed line this is a part of (always split: its merge
 * holds the reply for the line). */
static void dispatch_retrieval(mc_client_t *c, wn_buf_t *b, uint32_t pos,
                               const wn_mc_request_t *q, bool touch_only, mc_line_t *part)
{
    pool_rt_t *pool = c->c.pool;
    const char *line = b->data + pos;
    if (q->cmd == WN_MC_GAT || q->cmd == WN_MC_GATS)
        wn_stat_add(WN_GSTAT(c->c.w, cmd_touch), q->nkeys);
    else
        wn_stat_add(WN_GSTAT(c->c.w, cmd_get), q->nkeys);
    mc_req_t *r = make_req(c, REQ_FORWARD, q->cmd, part == NULL);
    if (r == NULL || (part != NULL && join_line(part, r) < 0)) {
        if (r != NULL)
            wn_req_unref(&r->r);
        out_of_memory(c);
        return;
    }
    r->is_get = true;
    r->nkeys = q->nkeys;
    r->line = line;
    r->keys = q->nkeys == 1 ? q->key : q->keys; /* one key: its own span */
    r->r.noreply = touch_only;
    r->r.swallow = touch_only;
    /* The line stays held (by `out`) to match VALUE keys, or for the split. */
    r->r.keep_out = true;
    if (wn_req_out_push(&r->r, b, pos, q->line_len) < 0) {
        wn_mc_fail(&r->r, WN_ENOMEM);
        wn_req_unref(&r->r);
        return;
    }
    if (part != NULL)
        r->kept += q->line_len;
    bool as_is = !touch_only && part == NULL && retrieval_as_is(line, q);
    if (q->nkeys == 1 && as_is) {
        r->r.server = wn_pool_route(pool, line + q->key.off, q->key.len);
        wn_mc_forward(&c->c, r->r.server, &r->r);
    } else if (q->nkeys > WN_MC_MAX_KEYS) {
        r->r.kind = REQ_LOCAL;
        wn_stat_add(WN_PSTAT(pool, request_errors), 1);
        size_t len;
        const char *text = wn_mc_reply_text(WN_MC_REPLY_TOO_MANY_KEYS, &len);
        wn_req_reply(&r->r, text, len);
    } else {
        dispatch_keys(c, r, line, q, as_is);
    }
    wn_req_unref(&r->r);
}

void wn_mc_dispatch_touch_only(mc_client_t *c, wn_buf_t *b, uint32_t pos,
                               const wn_mc_request_t *q)
{
    dispatch_retrieval(c, b, pos, q, true, NULL);
}

void wn_mc_dispatch_part(mc_client_t *c, wn_buf_t *hb, const wn_mc_request_t *q)
{
    dispatch_retrieval(c, hb, 0, q, false, c->line);
}

/* ---- version ------------------------------------------------------------------ */

/* Forwarded, as twemproxy does, to the server the key "placeholder" maps to:
 * clients see a real memcached's version line (libmemcached refuses to talk
 * to a server whose major version reads as 0). Any tokens after the word are
 * dropped: memcached ignores them. */
static void dispatch_version(mc_client_t *c, const wn_mc_request_t *q)
{
    static const char line[] = "version\r\n";
    mc_req_t *r = new_req(c, REQ_FORWARD, q->cmd);
    if (r == NULL) {
        out_of_memory(c);
        return;
    }
    r->r.server = wn_pool_route(c->c.pool, "placeholder", 11);
    if (wn_req_out_scratch(&r->r, line, sizeof(line) - 1) < 0)
        wn_mc_fail(&r->r, WN_ENOMEM);
    else
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
    if (text == NULL)
        wn_mc_reply_stats(r);
    else
        wn_req_reply(&r->r, text, len);
    wn_req_unref(&r->r);
}

void wn_mc_dispatch(mc_client_t *c, wn_buf_t *b, uint32_t pos, const wn_mc_request_t *q)
{
    wn_stat_add(WN_PSTAT(c->c.pool, requests), 1);
    if (wn_mc_cmd_is_retrieval(q->cmd)) {
        dispatch_retrieval(c, b, pos, q, false, NULL);
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
        dispatch_version(c, q);
        return;
    case WN_MC_STATS:
        if (q->arg.len > 0) {
            /* A group describes one memcached's internals: answered as a
             * memcached holding nothing would (walnut cannot merge them). */
            size_t len;
            const char *text = wn_mc_stats_args_reply(b->data + pos + q->arg.off, q->arg.len, &len);
            if (strncmp(text, "ERROR", 5) == 0 || strncmp(text, "CLIENT_ERROR", 12) == 0)
                wn_stat_add(WN_PSTAT(c->c.pool, request_errors), 1);
            reply_local(c, q->cmd, text, len, false);
            return;
        }
        reply_local(c, q->cmd, NULL, 0, false);
        return;
    case WN_MC_QUIT:
        c->c.stop_parsing = true; /* nothing after quit is looked at */
        reply_local(c, q->cmd, "", 0, true);
        return;
    default:
        /* Unknown words (meta commands go to mc_meta.c). A data block it
         * announced is swallowed, never run as commands. */
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

/*
 * A get waiting for its server keeps its line (`out`) to match the reply's
 * keys; so does a split get's parent while a fragment waits (the fragments
 * match against it, even once the parent is answered because another
 * failed). Its client gone, that would keep the client's whole
 * input buffer alive (a 16 KiB chunk for a line of a few dozen bytes) until
 * the server answers, which one that reads and does not answer never does,
 * and only the line's bytes count in the server's bound: the line moves to
 * a buffer of its own. Only a written line of a get of its own, or a split
 * parent's (never written itself); streamed lines' parts point into others'
 * buffers, and a line still in a write stays.
 */
void wn_mc_req_orphaned(req_t *req)
{
    mc_req_t *r = (mc_req_t *)req;
    bool parent = req->kind == REQ_PARENT;
    if (!req->keep_out || req->waiting != 0 || req->out.n != 1 || !r->is_get ||
        (r->split != NULL) != parent || r->part_of != NULL || r->line == NULL)
        return;
    seg_t *s = &req->out.v[0];
    if (r->line != s->buf->data + s->off || s->buf->cap / 2 <= s->len)
        return;
    wn_buf_t *own = wn_buf_get_exact(&req->pool->w->bufs, s->len);
    if (own == NULL)
        return; /* it stays where it is */
    memcpy(own->data, r->line, s->len);
    own->len = s->len;
    wn_buf_unref(s->buf);
    s->buf = own;
    s->off = 0;
    r->line = own->data;
}
