/*
 * worker/mcbin_dispatch.c: where a binary packet goes. Keyed opcodes become
 * one text (meta) command to the key's server, routed on the key's bytes
 * exactly as the text protocol routes them; FLUSH goes to every server;
 * VERSION to the server of the key "placeholder", as the text version (and
 * twemproxy's); NOOP, QUIT and STAT are answered here, in order with the rest.
 * The request being dispatched holds a reference; nothing here writes,
 * connects or closes. Worker thread only.
 */
#include "mcbin.h"

#include <string.h>

/* Counted under the text command with the same effect (per-command stats). */
static wn_mc_cmd_t cmd_of(uint8_t loud)
{
    switch (loud) {
    case WN_MCBIN_OP_GET:
    case WN_MCBIN_OP_GETK:
        return WN_MC_GET;
    case WN_MCBIN_OP_GAT:
    case WN_MCBIN_OP_GATK:
        return WN_MC_GAT;
    case WN_MCBIN_OP_TOUCH:
        return WN_MC_TOUCH;
    case WN_MCBIN_OP_SET:
        return WN_MC_SET;
    case WN_MCBIN_OP_ADD:
        return WN_MC_ADD;
    case WN_MCBIN_OP_REPLACE:
        return WN_MC_REPLACE;
    case WN_MCBIN_OP_APPEND:
        return WN_MC_APPEND;
    case WN_MCBIN_OP_PREPEND:
        return WN_MC_PREPEND;
    case WN_MCBIN_OP_DELETE:
        return WN_MC_DELETE;
    case WN_MCBIN_OP_INCREMENT:
        return WN_MC_INCR;
    case WN_MCBIN_OP_DECREMENT:
        return WN_MC_DECR;
    case WN_MCBIN_OP_FLUSH:
        return WN_MC_FLUSH_ALL;
    case WN_MCBIN_OP_VERSION:
        return WN_MC_VERSION;
    case WN_MCBIN_OP_STAT:
        return WN_MC_STATS;
    case WN_MCBIN_OP_QUIT:
        return WN_MC_QUIT;
    case WN_MCBIN_OP_NOOP:
        return WN_MC_META; /* as its text counterpart, mn, counts */
    default:
        return WN_MC_UNKNOWN;
    }
}

/* The meta command a keyed opcode is sent as (mc_server.c checks the reply
 * against it). */
static wn_meta_cmd_t meta_of(uint8_t loud)
{
    switch (loud) {
    case WN_MCBIN_OP_SET:
    case WN_MCBIN_OP_ADD:
    case WN_MCBIN_OP_REPLACE:
    case WN_MCBIN_OP_APPEND:
    case WN_MCBIN_OP_PREPEND:
        return WN_META_MS;
    case WN_MCBIN_OP_DELETE:
        return WN_META_MD;
    case WN_MCBIN_OP_INCREMENT:
    case WN_MCBIN_OP_DECREMENT:
        return WN_META_MA;
    default:
        return WN_META_MG; /* GET GETK GAT GATK TOUCH */
    }
}

static mcbin_req_t *new_req(mcbin_client_t *c, req_kind_t kind, uint8_t op, uint32_t opaque,
                            wn_mc_cmd_t cmd)
{
    mcbin_req_t *r = (mcbin_req_t *)wn_req_create(c->mc.c.pool, &c->mc.c, kind);
    if (r == NULL)
        return NULL;
    r->binary = true;
    r->op = op;
    r->opaque = opaque;
    if (cmd < WN_MC_CMD_COUNT) {
        r->m.cmd = (uint8_t)cmd;
        r->m.r.cmd = (uint16_t)cmd;
        wn_stat_add(&c->mc.c.pool->stats->cmds[cmd], 1);
    }
    wn_req_enqueue_client(&c->mc.c, &r->m.r);
    return r;
}

mcbin_req_t *wn_mcbin_local(mcbin_client_t *c, uint8_t op, uint32_t opaque, wn_mc_cmd_t cmd)
{
    return new_req(c, REQ_LOCAL, op, opaque, cmd);
}

static void out_of_memory(mcbin_client_t *c)
{
    c->mc.c.broken = true;
    wn_client_mark(&c->mc.c);
}

void wn_mcbin_reply_error(mcbin_req_t *r, uint16_t status)
{
    if (wn_mcbin_quiet_drops(r->op, status)) {
        wn_req_reply(&r->m.r, "", 0);
        return;
    }
    uint8_t buf[WN_MCBIN_ERROR_MAX];
    int n = wn_mcbin_compose_error(buf, sizeof(buf), r->op, r->opaque, status);
    wn_req_reply(&r->m.r, (const char *)buf, n > 0 ? (size_t)n : 0);
}

/* A packet of walnut's own: header (status OK) and body. */
static void reply_ok(mcbin_req_t *r, const char *body, size_t len)
{
    uint8_t buf[WN_MCBIN_HEADER_LEN + 64];
    wn_mcbin_compose_header(buf, sizeof(buf), r->op, WN_MCBIN_OK, 0, 0, (uint32_t)len, r->opaque,
                            0);
    memcpy(buf + WN_MCBIN_HEADER_LEN, body, len);
    wn_req_reply(&r->m.r, (const char *)buf, WN_MCBIN_HEADER_LEN + len);
}

/* Fragment i of p, a text command for server s. */
static req_t *make_fragment(mcbin_req_t *p, uint32_t i, server_rt_t *s, wn_mc_cmd_t cmd)
{
    mc_req_t *f = (mc_req_t *)wn_req_create(p->m.r.pool, NULL, REQ_FRAGMENT);
    if (f == NULL)
        return NULL;
    f->cmd = (uint8_t)cmd;
    f->r.cmd = (uint16_t)cmd;
    f->frag = i;
    f->r.server = s;
    wn_req_ref(&p->m.r);
    f->r.parent = &p->m.r;
    p->m.r.frags[i] = &f->r;
    return &f->r;
}

void wn_mcbin_unlink(mcbin_client_t *c, const uint8_t *key, uint16_t keylen)
{
    char line[WN_MCBIN_TEXT_LINE_MAX + WN_MC_TAG_MAX + 1];
    int n = wn_mcbin_text_unlink(line, WN_MCBIN_TEXT_LINE_MAX, key, keylen);
    if (n < 0)
        return;
    mc_req_t *d = (mc_req_t *)wn_req_create(c->mc.c.pool, &c->mc.c, REQ_FORWARD);
    if (d == NULL)
        return;
    n = wn_mc_meta_tag_line(c->mc.c.w, d, line, n, sizeof(line));
    d->cmd = WN_MC_META;
    d->meta = WN_META_MD;
    d->r.cmd = WN_MC_DELETE;
    d->r.noreply = true; /* its reply is read and dropped */
    d->r.swallow = true;
    wn_req_enqueue_client(&c->mc.c, &d->r);
    d->r.server = wn_pool_route(c->mc.c.pool, (const char *)key, keylen);
    if (wn_req_out_scratch(&d->r, line, (size_t)n) < 0)
        wn_mc_fail(&d->r, WN_ENOMEM);
    else
        wn_mc_forward(&c->mc.c, d->r.server, &d->r);
    wn_req_unref(&d->r);
}

static void count_keyed(wn_worker_t *w, uint8_t loud)
{
    switch (loud) {
    case WN_MCBIN_OP_GET:
    case WN_MCBIN_OP_GETK:
        wn_stat_add(WN_GSTAT(w, cmd_get), 1);
        break;
    case WN_MCBIN_OP_GAT:
    case WN_MCBIN_OP_GATK:
    case WN_MCBIN_OP_TOUCH:
        wn_stat_add(WN_GSTAT(w, cmd_touch), 1);
        break;
    default:
        if (wn_mcbin_op_stores(loud))
            wn_stat_add(WN_GSTAT(w, cmd_set), 1);
        break;
    }
}

static void dispatch_keyed(mcbin_client_t *c, const uint8_t *pkt, const wn_mcbin_request_t *q)
{
    client_t *cl = &c->mc.c;
    pool_rt_t *pool = cl->pool;
    uint8_t op = q->h.opcode, loud = wn_mcbin_opcode_loud(op);
    const uint8_t *key = pkt + q->key_off;
    count_keyed(cl->w, loud);
    mcbin_req_t *r = new_req(c, REQ_PARENT, op, q->h.opaque, cmd_of(loud));
    if (r == NULL) {
        out_of_memory(c);
        return;
    }
    char line[WN_MCBIN_TEXT_LINE_MAX + WN_MC_TAG_MAX + 1];
    int n = wn_mcbin_text_request(line, WN_MCBIN_TEXT_LINE_MAX, pkt, q);
    if (n < 0) {
        /* A key the text protocol cannot carry, even base64-encoded. The
         * value (if any) is skipped, never run. */
        c->skip_left = q->value_len;
        wn_stat_add(WN_PSTAT(pool, request_errors), 1);
        wn_mcbin_reply_error(r, WN_MCBIN_EINVAL);
        wn_req_unref(&r->m.r);
        return;
    }
    if (loud == WN_MCBIN_OP_GETK || loud == WN_MCBIN_OP_GATK) {
        uint8_t *copy = wn_scratch_alloc(cl->w, &r->m.r.keep, q->h.keylen);
        if (copy == NULL) {
            c->skip_left = q->value_len;
            wn_mcbin_reply_error(r, WN_MCBIN_ENOMEM);
            wn_req_unref(&r->m.r);
            return;
        }
        memcpy(copy, key, q->h.keylen);
        r->key = copy;
        r->keylen = q->h.keylen;
    }
    server_rt_t *s = wn_pool_route(pool, (const char *)key, q->h.keylen);
    req_t *f = NULL;
    if (wn_req_frags_alloc(&r->m.r, 1) == 0)
        f = make_fragment(r, 0, s, WN_MC_META);
    if (f != NULL) {
        mc_req(f)->meta = (uint8_t)meta_of(loud); /* loud: q is walnut's business */
        n = wn_mc_meta_tag_line(cl->w, mc_req(f), line, n, sizeof(line));
    }
    if (f == NULL || wn_req_out_scratch(f, line, (size_t)n) < 0) {
        c->skip_left = q->value_len;
        wn_mcbin_reply_error(r, WN_MCBIN_ENOMEM); /* lets go of the fragment */
        wn_req_unref(&r->m.r);
        return;
    }
    r->m.r.frags_left = 1;
    if (q->value_len > 0) {
        /* The value follows; mcbin_client.c forwards once it is in. A reload
         * meanwhile may retire (and free) the server: the key is kept to
         * route it again, as the text path does. */
        mc_req_t *fm = mc_req(f);
        char *k = wn_scratch_alloc(cl->w, &f->keep, q->h.keylen);
        if (k == NULL) {
            c->skip_left = q->value_len;
            wn_mcbin_reply_error(r, WN_MCBIN_ENOMEM);
            wn_req_unref(&r->m.r);
            return;
        }
        memcpy(k, key, q->h.keylen);
        fm->route_key = k;
        fm->route_key_len = q->h.keylen;
        fm->route_gen = cl->w->gen;
        c->value_req = r; /* our reference passes to it */
        c->value_left = q->value_len;
        return;
    }
    if (wn_mcbin_op_stores(loud)) {
        /* An empty value: its data block is just the line end. */
        if (wn_req_out_scratch(f, "\r\n", 2) < 0) {
            wn_mc_fail(f, WN_ENOMEM);
            wn_req_unref(&r->m.r);
            return;
        }
    }
    wn_mc_forward(cl, s, f);
    wn_req_unref(&r->m.r);
}

/* FLUSH(Q): flush_all to every server, one answer. */
static void dispatch_flush(mcbin_client_t *c, const uint8_t *pkt, const wn_mcbin_request_t *q)
{
    client_t *cl = &c->mc.c;
    pool_rt_t *pool = cl->pool;
    mcbin_req_t *r = new_req(c, REQ_PARENT, q->h.opcode, q->h.opaque, WN_MC_FLUSH_ALL);
    if (r == NULL) {
        out_of_memory(c);
        return;
    }
    char line[WN_MCBIN_TEXT_LINE_MAX];
    int n = wn_mcbin_text_request(line, sizeof(line), pkt, q);
    int rc = n < 0 ? n : wn_req_frags_alloc(&r->m.r, pool->nservers);
    for (uint32_t i = 0; i < pool->nservers && rc == 0; i++) {
        req_t *f = make_fragment(r, i, pool->servers[i], WN_MC_FLUSH_ALL);
        rc = f == NULL ? WN_ENOMEM : wn_req_out_scratch(f, line, (size_t)n);
    }
    if (rc < 0) {
        wn_mcbin_reply_error(r, WN_MCBIN_ENOMEM); /* lets go of the fragments */
        wn_req_unref(&r->m.r);
        return;
    }
    r->m.r.frags_left = pool->nservers;
    /* A fragment failing at once may settle the parent, which then lets go
     * of the rest: those are not sent. */
    for (uint32_t i = 0; i < pool->nservers && r->m.r.frags[i] != NULL; i++)
        wn_mc_forward(cl, pool->servers[i], r->m.r.frags[i]);
    wn_req_unref(&r->m.r);
}

/* VERSION: forwarded, as the text version is (and as twemproxy does), to
 * the server the key "placeholder" maps to: clients see a real memcached's
 * version (libmemcached refuses a major version 0, as walnut's own would be). */
static void dispatch_version(mcbin_client_t *c, const uint8_t *pkt,
                             const wn_mcbin_request_t *q)
{
    client_t *cl = &c->mc.c;
    mcbin_req_t *r = new_req(c, REQ_PARENT, q->h.opcode, q->h.opaque, WN_MC_VERSION);
    if (r == NULL) {
        out_of_memory(c);
        return;
    }
    char line[WN_MCBIN_TEXT_LINE_MAX];
    int n = wn_mcbin_text_request(line, sizeof(line), pkt, q);
    server_rt_t *s = wn_pool_route(cl->pool, "placeholder", 11);
    req_t *f = NULL;
    if (n > 0 && wn_req_frags_alloc(&r->m.r, 1) == 0)
        f = make_fragment(r, 0, s, WN_MC_VERSION);
    if (f == NULL || wn_req_out_scratch(f, line, (size_t)n) < 0) {
        wn_mcbin_reply_error(r, WN_MCBIN_ENOMEM);
        wn_req_unref(&r->m.r);
        return;
    }
    r->m.r.frags_left = 1;
    wn_mc_forward(cl, s, f);
    wn_req_unref(&r->m.r);
}

static void stat_group(mcbin_req_t *r, const char *group, size_t len)
{
    uint8_t buf[512];
    int n = wn_mcbin_stats_group(buf, sizeof(buf), r->opaque, group, len);
    if (n == 0)
        wn_mcbin_reply_error(r, WN_MCBIN_KEY_ENOENT);
    else if (n < 0)
        wn_mcbin_reply_error(r, WN_MCBIN_ENOMEM);
    else
        wn_req_reply(&r->m.r, (const char *)buf, (size_t)n);
}

static void dispatch_local(mcbin_client_t *c, const uint8_t *pkt, const wn_mcbin_request_t *q)
{
    uint8_t op = q->h.opcode, loud = wn_mcbin_opcode_loud(op);
    mcbin_req_t *r = wn_mcbin_local(c, op, q->h.opaque, cmd_of(loud));
    if (r == NULL) {
        out_of_memory(c);
        return;
    }
    switch (loud) {
    case WN_MCBIN_OP_QUIT:
        /* Nothing after it is looked at; QUITQ closes without a word. */
        c->mc.c.stop_parsing = true;
        r->m.r.close_after = true;
        if (op == WN_MCBIN_OP_QUITQ)
            wn_req_reply(&r->m.r, "", 0);
        else
            reply_ok(r, "", 0);
        break;
    case WN_MCBIN_OP_STAT:
        if (q->h.keylen > 0) {
            /* Groups (settings, items, slabs ...) describe one memcached,
             * not the pool: answered as the text `stats <group>` is, as a
             * memcached holding nothing answers them in binary. */
            stat_group(r, (const char *)pkt + q->key_off, q->h.keylen);
            break;
        }
        wn_mc_reply_stats(&r->m); /* the same counters as the text `stats` */
        break;
    case WN_MCBIN_OP_NOOP:
    default:
        reply_ok(r, "", 0);
        break;
    }
    wn_req_unref(&r->m.r);
}

void wn_mcbin_dispatch(mcbin_client_t *c, wn_buf_t *b, uint32_t pos,
                       const wn_mcbin_request_t *q)
{
    wn_stat_add(WN_PSTAT(c->mc.c.pool, requests), 1);
    const uint8_t *pkt = (const uint8_t *)b->data + pos;
    switch (wn_mcbin_opcode_loud(q->h.opcode)) {
    case WN_MCBIN_OP_NOOP:
    case WN_MCBIN_OP_QUIT:
    case WN_MCBIN_OP_STAT:
        dispatch_local(c, pkt, q);
        return;
    case WN_MCBIN_OP_FLUSH:
        dispatch_flush(c, pkt, q);
        return;
    case WN_MCBIN_OP_VERSION:
        dispatch_version(c, pkt, q);
        return;
    default:
        dispatch_keyed(c, pkt, q);
        return;
    }
}

bool wn_mcbin_must_wait(mcbin_client_t *c, const uint8_t *pkt, const wn_mcbin_request_t *q)
{
    if (q->h.keylen == 0 || wn_mcbin_opcode_loud(q->h.opcode) == WN_MCBIN_OP_STAT)
        return false;
    server_rt_t *s = wn_pool_route(c->mc.c.pool, (const char *)pkt + q->key_off, q->h.keylen);
    return s != NULL && wn_server_is_suspect(s) && wn_ctl_hold(&c->mc.c, s);
}
