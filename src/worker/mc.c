/*
 * worker/mc.c: memcached's ASCII protocol through a worker. Client side:
 * frame requests, route each key, split multi-key gets per server, fan out
 * flush_all/verbosity, answer version/stats/quit and rejected lines locally.
 * Backend side: frame replies and attach them to the request at the head of
 * the connection. Values travel by reference; only command heads and local
 * replies are composed. Worker thread only.
 */
#include "worker_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char version_line[] = "VERSION " WN_VERSION "-walnut\r\n";

static void fifo_append(client_t *c, req_t *r)
{
    r->next = NULL;
    if (c->tail != NULL)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->inflight++;
}

/* A request answered by walnut: queued in order like any other. */
static req_t *local_req(client_t *c, wn_mc_cmd_t cmd)
{
    req_t *r = req_create(c, REQ_LOCAL, cmd);
    if (r != NULL)
        fifo_append(c, r);
    return r;
}

static void reply_canned(client_t *c, wn_mc_cmd_t cmd, wn_mc_reply_t reply, bool noreply,
                         bool close_after)
{
    req_t *r = local_req(c, cmd);
    if (r == NULL) {
        client_close(c);
        return;
    }
    size_t len;
    const char *text = wn_mc_reply_text(reply, &len);
    r->noreply = noreply;
    r->close_after = close_after;
    if (reply != WN_MC_REPLY_NONE && reply != WN_MC_REPLY_END)
        STAT_INC(c->w, request_errors);
    req_reply_local(r, text, len);
}

static void track_trailer(char trailer[2], const char *p, uint32_t n)
{
    if (n >= 2) {
        trailer[0] = p[n - 2];
        trailer[1] = p[n - 1];
    } else if (n == 1) {
        trailer[0] = trailer[1];
        trailer[1] = p[0];
    }
}

/*
 * A noreply request is sent without its noreply token and its reply is
 * swallowed here: memcached still answers some errors despite noreply, and
 * a reply nobody expects would shift every later reply on the connection
 * to the wrong request. noreply is always the last token of the line.
 */
static int push_head(client_t *c, req_t *r, wn_buf_t *b, uint32_t pos, const wn_mc_request_t *q)
{
    const char *line = b->data + pos;
    if (!q->noreply)
        return segv_push(&r->out, b, pos, q->line_len);
    uint32_t end = q->line_len;
    while (end > 0 && (line[end - 1] == '\n' || line[end - 1] == '\r'))
        end--;
    const char *nul = memchr(line, '\0', end);
    if (nul != NULL)
        end = (uint32_t)(nul - line);
    while (end > 0 && line[end - 1] == ' ')
        end--;
    if (end < 7 || memcmp(line + end - 7, "noreply", 7) != 0)
        return WN_EPROTO;
    end -= 7;
    while (end > 0 && line[end - 1] == ' ')
        end--;
    char head[WN_MC_KEY_MAX + 128];
    if (end + 2 > sizeof(head))
        return WN_ETOOBIG;
    memcpy(head, line, end);
    memcpy(head + end, "\r\n", 2);
    r->swallow = true;
    return scratch_push(c->w, &r->out, head, end + 2);
}

static void forward(client_t *c, req_t *r)
{
    if (r->server == NULL) {
        req_fail(r, WN_ENOSERVER);
        return;
    }
    server_enqueue(r->server, c->slot, r);
}

/* get/gets/gat/gats: one server gets the line as is; several get fragments. */
static void dispatch_retrieval(client_t *c, wn_buf_t *b, uint32_t pos, const wn_mc_request_t *q)
{
    wn_worker_t *w = c->w;
    const char *line = b->data + pos;
    STAT_ADD(w, cmd_get, q->nkeys);
    if (q->cmd == WN_MC_GAT || q->cmd == WN_MC_GATS)
        STAT_ADD(w, cmd_touch, q->nkeys);

    req_t *r = req_create(c, REQ_FORWARD, q->cmd);
    if (r == NULL) {
        client_close(c);
        return;
    }
    fifo_append(c, r);
    r->nkeys = q->nkeys;
    if (q->nkeys == 1) {
        r->server = pool_route(c->pool, line + q->key.off, q->key.len);
        if (segv_push(&r->out, b, pos, q->line_len) < 0) {
            req_fail(r, WN_ENOMEM);
            return;
        }
        forward(c, r);
        return;
    }

    wn_mc_span_t *keys = malloc(sizeof(*keys) * q->nkeys);
    server_rt_t **where = malloc(sizeof(*where) * q->nkeys);
    uint32_t *key_frag = malloc(sizeof(*key_frag) * q->nkeys);
    server_rt_t **distinct = malloc(sizeof(*distinct) * q->nkeys);
    wn_mc_span_t *fkeys = malloc(sizeof(*fkeys) * q->nkeys);
    char *head = NULL;
    if (keys == NULL || where == NULL || key_frag == NULL || distinct == NULL || fkeys == NULL)
        goto fail_nomem;

    uint32_t cursor = 0, n = 0, ndistinct = 0;
    bool unroutable = false;
    while (n < q->nkeys && wn_mc_key_next(line, q, &cursor, &keys[n])) {
        where[n] = pool_route(c->pool, line + keys[n].off, keys[n].len);
        if (where[n] == NULL)
            unroutable = true;
        uint32_t f = 0;
        while (f < ndistinct && distinct[f] != where[n])
            f++;
        if (f == ndistinct)
            distinct[ndistinct++] = where[n];
        key_frag[n] = f;
        n++;
    }
    if (unroutable || ndistinct == 1) {
        r->server = unroutable ? NULL : distinct[0];
        if (segv_push(&r->out, b, pos, q->line_len) < 0)
            goto fail_nomem;
        forward(c, r);
        goto done;
    }

    /* Split: one fragment per server, each a "get k.. \r\n" of its keys. */
    r->kind = REQ_SPLIT;
    r->frags = calloc(ndistinct, sizeof(*r->frags));
    if (r->frags == NULL)
        goto fail_nomem;
    r->nfrag_slots = ndistinct;
    /* The parent keeps the request line (and so its buffer) to compare keys at merge. */
    if (segv_push(&r->out, b, pos, q->line_len) < 0)
        goto fail_nomem;
    r->line = line;
    r->keys = keys;
    r->key_frag = key_frag;
    keys = NULL;
    key_frag = NULL;
    for (uint32_t f = 0; f < ndistinct; f++) {
        uint32_t nf = 0;
        for (uint32_t k = 0; k < n; k++)
            if (r->key_frag[k] == f)
                fkeys[nf++] = r->keys[k];
        req_t *frag = req_create(NULL, REQ_FRAGMENT, q->cmd);
        if (frag == NULL)
            goto fail_nomem;
        frag->parent = r;
        frag->server = distinct[f];
        frag->nkeys = nf;
        r->frags[f] = frag;
        size_t need = wn_mc_retrieval_head_size(line, q, fkeys, nf);
        head = realloc(head, need);
        if (head == NULL)
            goto fail_nomem;
        int len = wn_mc_retrieval_head_compose(head, need, line, q, fkeys, nf);
        if (len < 0 || scratch_push(w, &frag->out, head, (size_t)len) < 0)
            goto fail_nomem;
    }
    r->nfrags = ndistinct;
    STAT_ADD(w, fragments, ndistinct);
    for (uint32_t f = 0; f < ndistinct; f++)
        server_enqueue(r->frags[f]->server, c->slot, r->frags[f]);
    goto done;

fail_nomem:
    if (r->frags != NULL) {
        for (uint32_t f = 0; f < r->nfrag_slots; f++) {
            if (r->frags[f] != NULL) {
                r->frags[f]->parent = NULL;
                req_unref(r->frags[f]);
                r->frags[f] = NULL;
            }
        }
    }
    r->kind = REQ_FORWARD;
    req_fail(r, WN_ENOMEM);
done:
    free(head);
    free(keys);
    free(where);
    free(key_frag);
    free(distinct);
    free(fkeys);
}

/* flush_all and verbosity: every server of the pool, one reply. */
static void dispatch_broadcast(client_t *c, wn_buf_t *b, uint32_t pos, const wn_mc_request_t *q)
{
    pool_rt_t *pool = c->pool;
    req_t *r = req_create(c, REQ_BROADCAST, q->cmd);
    if (r == NULL) {
        client_close(c);
        return;
    }
    fifo_append(c, r);
    r->noreply = q->noreply;
    r->frags = calloc(pool->nservers, sizeof(*r->frags));
    if (r->frags == NULL) {
        r->kind = REQ_FORWARD;
        req_fail(r, WN_ENOMEM);
        return;
    }
    r->nfrag_slots = pool->nservers;
    for (uint32_t s = 0; s < pool->nservers; s++) {
        req_t *frag = req_create(NULL, REQ_FRAGMENT, q->cmd);
        if (frag == NULL || push_head(c, frag, b, pos, q) < 0) {
            req_unref(frag);
            for (uint32_t f = 0; f < s; f++) {
                r->frags[f]->parent = NULL;
                req_unref(r->frags[f]);
                r->frags[f] = NULL;
            }
            r->kind = REQ_FORWARD;
            req_fail(r, WN_ENOMEM);
            return;
        }
        frag->parent = r;
        frag->server = &pool->servers[s];
        r->frags[s] = frag;
    }
    r->nfrags = pool->nservers;
    for (uint32_t s = 0; s < pool->nservers; s++)
        server_enqueue(r->frags[s]->server, c->slot, r->frags[s]);
}

static void handle_request(client_t *c, wn_buf_t *b, uint32_t pos, const wn_mc_request_t *q)
{
    wn_worker_t *w = c->w;
    const char *line = b->data + pos;
    req_t *r;
    STAT_INC(w, requests);

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
        if (wn_mc_cmd_is_storage(q->cmd))
            STAT_INC(w, cmd_set);
        if (q->cmd == WN_MC_TOUCH)
            STAT_INC(w, cmd_touch);
        r = req_create(c, REQ_FORWARD, q->cmd);
        if (r == NULL) {
            client_close(c);
            return;
        }
        fifo_append(c, r);
        r->noreply = q->noreply;
        r->server = pool_route(c->pool, line + q->key.off, q->key.len);
        if (push_head(c, r, b, pos, q) < 0) {
            req_fail(r, WN_ENOMEM);
            if (q->data_len > 0)
                c->data_left = q->data_len; /* swallow the block */
            return;
        }
        if (q->data_len > 0) {
            /* The data block follows; forward once it is complete. */
            req_ref(r);
            c->data_req = r;
            c->data_left = q->data_len;
            c->trailer[0] = c->trailer[1] = 0;
            return;
        }
        forward(c, r);
        return;
    case WN_MC_FLUSH_ALL:
    case WN_MC_VERBOSITY:
        dispatch_broadcast(c, b, pos, q);
        return;
    case WN_MC_VERSION:
        r = local_req(c, q->cmd);
        if (r == NULL) {
            client_close(c);
            return;
        }
        req_reply_local(r, version_line, sizeof(version_line) - 1);
        return;
    case WN_MC_STATS:
        if (q->arg.len > 0) {
            /* stats subcommands describe one memcached, not the pool. */
            reply_canned(c, q->cmd, WN_MC_REPLY_ERROR, false, false);
            return;
        }
        r = local_req(c, q->cmd);
        if (r == NULL) {
            client_close(c);
            return;
        }
        mc_reply_stats(r);
        return;
    case WN_MC_QUIT:
        reply_canned(c, q->cmd, WN_MC_REPLY_NONE, false, true);
        return;
    default:
        /* Meta commands and unknown words: not routable (yet). */
        reply_canned(c, q->cmd, WN_MC_REPLY_ERROR, false, false);
        return;
    }
}

/* Would this request go to a server that is suspect right now? Then the
 * client waits (ctl.c) rather than have it fail. */
static bool must_wait(client_t *c, const char *line, const wn_mc_request_t *q)
{
    if (q->nkeys == 0)
        return false;
    if (q->nkeys == 1) {
        server_rt_t *s = pool_route(c->pool, line + q->key.off, q->key.len);
        return s != NULL && server_is_suspect(s) && ctl_hold(c, s);
    }
    uint32_t cursor = 0;
    wn_mc_span_t key;
    while (wn_mc_key_next(line, q, &cursor, &key)) {
        server_rt_t *s = pool_route(c->pool, line + key.off, key.len);
        if (s != NULL && server_is_suspect(s))
            return ctl_hold(c, s);
    }
    return false;
}

void mc_client_process(client_t *c)
{
    while (!c->closing && !c->close_on_write && c->held_by == NULL) {
        wn_buf_t *b = c->in.buf;
        if (b == NULL)
            return;
        uint32_t pos = c->in.pos;
        uint32_t avail = b->len - pos;
        if (avail == 0)
            return;

        if (c->data_left > 0) {
            uint32_t take = WN_MIN(avail, c->data_left);
            req_t *r = c->data_req;
            if (r != NULL && segv_push(&r->out, b, pos, take) < 0) {
                client_close(c);
                return;
            }
            track_trailer(c->trailer, b->data + pos, take);
            c->in.pos += take;
            c->data_left -= take;
            if (c->data_left > 0 || r == NULL)
                continue;
            c->data_req = NULL;
            if (!wn_mc_data_trailer_ok(c->trailer[0], c->trailer[1])) {
                /* The block is not where its length said: framing is lost.
                 * Answer, flush what came before, close. */
                size_t len;
                const char *text = wn_mc_reply_text(WN_MC_REPLY_BAD_CHUNK, &len);
                r->kind = REQ_LOCAL;
                r->noreply = false;
                r->swallow = false;
                r->close_after = true;
                STAT_INC(c->w, request_errors);
                req_reply_local(r, text, len);
            } else if (!r->done) {
                forward(c, r);
            }
            req_unref(r);
            continue;
        }

        if (client_over_bounds(c))
            return; /* resumed when replies drain */
        wn_mc_request_t q;
        int rc = wn_mc_request_parse(&c->parser, b->data + pos, avail, &q);
        if (rc == WN_EAGAIN)
            return;
        if (rc > 0) {
            if (c->pool->nsuspect > 0 && must_wait(c, b->data + pos, &q))
                return; /* parsed again when the hold ends */
            c->in.pos += q.line_len;
            handle_request(c, b, pos, &q);
            continue;
        }
        /* Rejected by the parser: answer in order, then go on as memcached would. */
        STAT_INC(c->w, requests);
        switch (q.after) {
        case WN_MC_AFTER_CONTINUE:
            c->in.pos += q.line_len;
            reply_canned(c, q.cmd, q.reply, q.noreply, false);
            break;
        case WN_MC_AFTER_SWALLOW:
            c->in.pos += q.line_len;
            c->data_left = q.data_len; /* dropped as it comes: data_req is NULL */
            reply_canned(c, q.cmd, q.reply, q.noreply, false);
            break;
        case WN_MC_AFTER_CLOSE:
        default:
            c->in.pos = b->len;
            reply_canned(c, q.cmd, q.reply, false, true);
            return;
        }
    }
}

/* ---- replies from a server ------------------------------------------------ */

void mc_sconn_reset(sconn_t *c)
{
    wn_mc_limits_t lim = {.max_line = WN_MAX_LINE, .max_value = WN_MAX_SERVER_VALUE};
    wn_mc_rsp_parser_init(&c->rsp, &lim);
    c->data_left = 0;
    c->done_after_data = false;
}

static bool is_split_fragment(const req_t *r)
{
    return r->kind == REQ_FRAGMENT && r->parent != NULL && r->parent->kind == REQ_SPLIT;
}

static void complete_head(sconn_t *c)
{
    req_t *r = c->head;
    wn_worker_t *w = c->server->pool->w;
    req_ref(r);
    sconn_pop(c);
    ctl_server_ok(c->server);
    if (wn_mc_cmd_is_retrieval(r->cmd)) {
        STAT_ADD(w, get_hits, r->hits);
        if (r->nkeys > r->hits)
            STAT_ADD(w, get_misses, r->nkeys - r->hits);
    }
    req_done(r);
    req_unref(r);
}

static int add_item(req_t *r, const char *key, uint32_t key_len)
{
    if (r->nitems == r->items_cap) {
        uint32_t cap = r->items_cap ? r->items_cap * 2 : 8;
        value_item_t *items = realloc(r->items, sizeof(*items) * cap);
        if (items != NULL)
            r->items = items;
        const char **vkeys = realloc(r->vkeys, sizeof(*vkeys) * cap);
        if (vkeys != NULL)
            r->vkeys = vkeys;
        uint32_t *vlens = realloc(r->vlens, sizeof(*vlens) * cap);
        if (vlens != NULL)
            r->vlens = vlens;
        if (items == NULL || vkeys == NULL || vlens == NULL)
            return WN_ENOMEM;
        r->items_cap = cap;
    }
    r->items[r->nitems] = (value_item_t){.seg_first = r->rsp.n, .nsegs = 0};
    r->vkeys[r->nitems] = key;
    r->vlens[r->nitems] = key_len;
    r->nitems++;
    return 0;
}

int mc_server_process(sconn_t *c)
{
    for (;;) {
        wn_buf_t *b = c->in.buf;
        if (b == NULL)
            return 0;
        uint32_t pos = c->in.pos;
        uint32_t avail = b->len - pos;
        if (avail == 0)
            return 0;
        req_t *r = c->head;
        if (r == NULL || r == c->unsent)
            return WN_EPROTO; /* bytes nobody asked for */

        if (c->data_left > 0) {
            uint32_t take = WN_MIN(avail, c->data_left);
            if (!r->swallow && segv_push(&r->rsp, b, pos, take) < 0)
                return WN_ENOMEM;
            if (is_split_fragment(r) && r->nitems > 0) {
                value_item_t *it = &r->items[r->nitems - 1];
                it->nsegs = r->rsp.n - it->seg_first;
            }
            track_trailer(c->trailer, b->data + pos, take);
            c->in.pos += take;
            c->data_left -= take;
            if (c->data_left > 0)
                continue;
            if (!wn_mc_data_trailer_ok(c->trailer[0], c->trailer[1]))
                return WN_EPROTO;
            if (c->done_after_data) {
                c->done_after_data = false;
                complete_head(c);
            }
            continue;
        }

        wn_mc_response_t rsp;
        int rc = wn_mc_response_parse(&c->rsp, r->cmd, b->data + pos, avail, &rsp);
        if (rc == WN_EAGAIN)
            return 0;
        if (rc < 0)
            return rc;
        if (rsp.type == WN_MC_RSP_VALUE)
            r->hits++;
        if (is_split_fragment(r)) {
            if (rsp.type == WN_MC_RSP_VALUE) {
                if (add_item(r, b->data + pos + rsp.key.off, rsp.key.len) < 0 ||
                    segv_push_split(&r->rsp, b, pos, rsp.line_len) < 0)
                    return WN_ENOMEM;
                r->items[r->nitems - 1].nsegs = r->rsp.n - r->items[r->nitems - 1].seg_first;
            } else if (rsp.type != WN_MC_RSP_END) {
                /* An error line instead of VALUE/END: the merge answers with it. */
                r->failed = true;
                if (segv_push_split(&r->rsp, b, pos, rsp.line_len) < 0)
                    return WN_ENOMEM;
            }
        } else if (!r->swallow) {
            if (segv_push(&r->rsp, b, pos, rsp.line_len) < 0)
                return WN_ENOMEM;
        }
        c->in.pos += rsp.line_len;
        if (rsp.data_len > 0) {
            c->data_left = rsp.data_len;
            c->done_after_data = rsp.done;
            c->trailer[0] = c->trailer[1] = 0;
            continue;
        }
        if (rsp.done)
            complete_head(c);
    }
}

/* ---- merging -------------------------------------------------------------- */

int mc_merge_split(req_t *p)
{
    wn_worker_t *w = p->client->w;
    segv_clear(&p->rsp);
    for (uint32_t f = 0; f < p->nfrag_slots; f++) {
        req_t *frag = p->frags[f];
        if (frag->failed)
            return segv_append(&p->rsp, &frag->rsp);
    }
    /* VALUE blocks in the client's key order (wn_mc_merge_take's rule). */
    wn_mc_frag_values_t *fv = calloc(p->nfrag_slots, sizeof(*fv));
    if (fv == NULL)
        return WN_ENOMEM;
    for (uint32_t f = 0; f < p->nfrag_slots; f++)
        fv[f] = (wn_mc_frag_values_t){
            .keys = p->frags[f]->vkeys, .lens = p->frags[f]->vlens, .n = p->frags[f]->nitems};
    for (uint32_t k = 0; k < p->nkeys; k++) {
        req_t *frag = p->frags[p->key_frag[k]];
        int32_t i = wn_mc_merge_take(&fv[p->key_frag[k]], p->line + p->keys[k].off,
                                     p->keys[k].len);
        if (i < 0)
            continue; /* a miss */
        const value_item_t *it = &frag->items[i];
        for (uint32_t j = 0; j < it->nsegs; j++) {
            seg_t *sg = &frag->rsp.v[it->seg_first + j];
            int rc = segv_push(&p->rsp, sg->buf, sg->off, sg->len);
            if (rc < 0) {
                free(fv);
                return rc;
            }
        }
    }
    free(fv);
    size_t len;
    const char *end = wn_mc_reply_text(WN_MC_REPLY_END, &len);
    return scratch_push(w, &p->rsp, end, len);
}

int mc_merge_broadcast(req_t *p)
{
    wn_worker_t *w = p->client->w;
    segv_clear(&p->rsp);
    for (uint32_t f = 0; f < p->nfrag_slots; f++) {
        req_t *frag = p->frags[f];
        char first[4] = {0};
        uint32_t got = 0;
        for (uint32_t i = 0; i < frag->rsp.n && got < sizeof(first); i++) {
            seg_t *sg = &frag->rsp.v[i];
            uint32_t take = WN_MIN(sg->len, (uint32_t)sizeof(first) - got);
            memcpy(first + got, sg->buf->data + sg->off, take);
            got += take;
        }
        bool ok = !frag->failed && segv_bytes(&frag->rsp) == 4 && memcmp(first, "OK\r\n", 4) == 0;
        /* A swallowed (noreply) fragment keeps no bytes: nothing to judge. */
        if (!ok && !(frag->swallow && !frag->failed))
            return segv_append(&p->rsp, &frag->rsp);
    }
    return scratch_push(w, &p->rsp, "OK\r\n", 4);
}

/* ---- stats ---------------------------------------------------------------- */

int mc_reply_stats(req_t *r)
{
    wn_worker_t *w = r->client->w;
    wn_worker_stats_t sum;
    memset(&sum, 0, sizeof(sum));
    for (int i = 0; i < w->nworkers; i++) {
        const wn_worker_stats_t *s = wn_worker_stats(w->all[i]);
#define WN_STAT_SUM(name)                                                                         \
    sum.name += atomic_load_explicit(&s->name, memory_order_relaxed);
        WN_WORKER_STATS_MAP(WN_STAT_SUM)
#undef WN_STAT_SUM
    }
    char text[4096];
    size_t n = 0;
    uint64_t now = (uint64_t)time(NULL);
#define LINE(...) n += (size_t)snprintf(text + n, sizeof(text) - n, __VA_ARGS__)
    LINE("STAT pid %ld\r\n", (long)getpid());
    LINE("STAT uptime %llu\r\n", (unsigned long long)(now - w->start_time));
    LINE("STAT time %llu\r\n", (unsigned long long)now);
    LINE("STAT version %s-walnut\r\n", WN_VERSION);
    LINE("STAT threads %d\r\n", w->nworkers);
#define WN_STAT_LINE(name) LINE("STAT " #name " %llu\r\n", (unsigned long long)sum.name);
    WN_WORKER_STATS_MAP(WN_STAT_LINE)
#undef WN_STAT_LINE
    LINE("END\r\n");
#undef LINE
    if (n >= sizeof(text))
        n = sizeof(text) - 1;
    return req_reply_local(r, text, n);
}
