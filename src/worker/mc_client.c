/*
 * worker/mc_client.c: memcached ASCII from clients. Frames request lines and
 * data blocks from the client's buffer, answers what walnut answers itself
 * (rejected lines, quit) in order with everything else, and hands routable
 * requests to mc_dispatch.c. After quit, or once framing is lost (a line too
 * long, an HTTP request), nothing more is parsed; a rejected request's data
 * block is always swallowed, never run.
 * Worker thread only; never writes or closes (the flush does).
 */
#include "mc.h"

#include <string.h>

void wn_mc_client_init(client_t *cl)
{
    mc_client_t *c = (mc_client_t *)cl;
    /* No value limit in the parser: the pool's client_buffer_limit (which a
     * reload may change) is checked at dispatch. */
    wn_mc_limits_t lim = {.max_line = WN_MC_MAX_LINE,
                          .max_value = (uint32_t)INT32_MAX - 2,
                          .max_retrieval_line = WN_MC_MAX_RETRIEVAL_LINE};
    wn_mc_req_parser_init(&c->parser, &lim);
}

int wn_mc_expect_data(mc_client_t *c, mc_req_t *r, const char *key, size_t len)
{
    /* Routed now, queued once the block is in. A reload meanwhile may retire
     * (and free) that server: the key is kept to route it again. */
    char *k = wn_scratch_alloc(c->c.w, &r->r.keep, len > 0 ? len : 1);
    if (k == NULL)
        return WN_ENOMEM;
    memcpy(k, key, len);
    r->route_key = k;
    r->route_key_len = (uint16_t)len;
    r->route_gen = c->c.w->gen;
    c->data_req = r;
    return 0;
}

static void drop_data_req(mc_client_t *c)
{
    if (c->data_req != NULL) {
        wn_req_unref(&c->data_req->r);
        c->data_req = NULL;
    }
    c->data_left = 0;
    c->data_swallow = false;
}

void wn_mc_client_deinit(client_t *cl)
{
    drop_data_req((mc_client_t *)cl);
}

void wn_mc_client_eof(client_t *cl)
{
    /* A request whose data block never came in full is dropped: it was not
     * forwarded, and nobody waits for its answer. It is still in the FIFO
     * (answered locally as nothing) so the client's earlier replies go out. */
    mc_client_t *c = (mc_client_t *)cl;
    if (c->data_req != NULL) {
        mc_req_t *r = c->data_req;
        r->r.kind = REQ_LOCAL;
        r->r.noreply = true;
        wn_req_reply(&r->r, "", 0);
    }
    drop_data_req(c);
    cl->mid_request = false;
}

void wn_mc_client_read_plan(const client_t *cl, uint32_t *keep, uint64_t *ahead)
{
    wn_instream_plan(&cl->in, ((const mc_client_t *)cl)->data_left, keep, ahead);
}

/* Answer with one of memcached's canned lines, in order. */
static void reply_canned(mc_client_t *c, wn_mc_cmd_t cmd, wn_mc_reply_t reply, bool noreply,
                         bool close_after)
{
    mc_req_t *r = wn_mc_local(c, cmd);
    if (r == NULL) {
        c->c.broken = true; /* out of memory: no way to answer in order */
        wn_client_mark(&c->c);
        return;
    }
    size_t len;
    const char *text = wn_mc_reply_text(reply, &len);
    r->r.noreply = noreply;
    r->r.close_after = close_after;
    if (reply != WN_MC_REPLY_NONE && reply != WN_MC_REPLY_END)
        wn_stat_add(WN_PSTAT(c->c.pool, request_errors), 1);
    wn_req_reply(&r->r, text, len);
    wn_req_unref(&r->r);
}

/* A data block is complete: forward its request, or answer a bad chunk. */
static void data_done(mc_client_t *c)
{
    mc_req_t *r = c->data_req;
    c->data_req = NULL;
    if (r == NULL)
        return;
    if (!wn_mc_data_trailer_ok(c->trailer[0], c->trailer[1])) {
        /* The block does not end in CRLF at its length. memcached answers
         * (nothing under noreply), stores nothing, and reads on right after
         * the bytes + 2 it took: so does walnut. The item never reaches a
         * server. */
        size_t len;
        const char *text = wn_mc_reply_text(WN_MC_REPLY_BAD_CHUNK, &len);
        r->r.kind = REQ_LOCAL;
        r->r.swallow = false;
        wn_stat_add(WN_PSTAT(c->c.pool, request_errors), 1);
        wn_req_reply(&r->r, text, len);
    } else if (!r->r.done) {
        if (r->route_gen != c->c.w->gen && r->r.server != NULL)
            r->r.server = wn_pool_route(c->c.pool, r->route_key, r->route_key_len);
        wn_mc_forward(&c->c, r->r.server, &r->r);
    }
    wn_req_unref(&r->r);
}

/* Take data block bytes; false when the buffer is used up. */
static void take_data(mc_client_t *c, wn_buf_t *b)
{
    uint32_t pos = c->c.in.pos;
    uint32_t take = WN_MIN(b->len - pos, c->data_left);
    if (c->data_req != NULL && !c->data_swallow &&
        wn_req_out_push(&c->data_req->r, b, pos, take) < 0) {
        c->c.broken = true;
        wn_client_mark(&c->c);
        return;
    }
    wn_mc_track_trailer(c->trailer, b->data + pos, take);
    c->c.in.pos += take;
    c->data_left -= take;
    if (c->data_left == 0) {
        c->data_swallow = false;
        data_done(c);
    }
}

/* The parser rejected the line: answer in order, then go on as memcached. */
static bool rejected(mc_client_t *c, wn_buf_t *b, const wn_mc_request_t *q)
{
    wn_stat_add(WN_PSTAT(c->c.pool, requests), 1);
    switch (q->after) {
    case WN_MC_AFTER_CONTINUE:
        if ((q->cmd == WN_MC_GAT || q->cmd == WN_MC_GATS) && q->reply == WN_MC_REPLY_BAD_FORMAT &&
            q->nkeys > 0) {
            /* memcached touched the keys before the one over 250 bytes */
            wn_mc_dispatch_touch_only(c, b, c->c.in.pos, q);
        }
        c->c.in.pos += q->line_len;
        reply_canned(c, q->cmd, q->reply, q->noreply, false);
        return true;
    case WN_MC_AFTER_SWALLOW:
        c->c.in.pos += q->line_len;
        c->data_left = q->data_len;
        c->data_swallow = true;
        reply_canned(c, q->cmd, q->reply, q->noreply, false);
        return true;
    case WN_MC_AFTER_CLOSE:
    default:
        c->c.in.pos = b->len;
        c->c.stop_parsing = true;
        reply_canned(c, q->cmd, q->reply, false, true);
        return false;
    }
}

void wn_mc_client_parse(client_t *cl)
{
    mc_client_t *c = (mc_client_t *)cl;
    for (;;) {
        /* Between requests the client's bounds apply; inside one (a partial
         * line, a data block) reading goes on, or it could never complete. */
        cl->mid_request = c->data_left > 0;
        if (!wn_client_can_parse(cl))
            break;
        wn_buf_t *b = cl->in.buf;
        if (b == NULL || cl->in.pos == b->len)
            break;
        if (c->data_left > 0) {
            take_data(c, b);
            continue;
        }
        uint32_t pos = cl->in.pos;
        wn_mc_request_t q;
        int rc = wn_mc_request_parse(&c->parser, b->data + pos, b->len - pos, &q);
        if (rc == WN_EAGAIN) {
            cl->mid_request = true;
            break;
        }
        if (q.cmd == WN_MC_META && q.line_len > 0) {
            if (!wn_mc_meta_line(c, b, &q))
                break; /* parsed again when the hold ends */
            continue;
        }
        if (rc < 0) {
            if (!rejected(c, b, &q))
                break;
            continue;
        }
        if (cl->pool->nsuspect > 0 && wn_mc_must_wait(c, b->data + pos, &q))
            break; /* parsed again when the hold ends */
        cl->in.pos += q.line_len;
        wn_mc_dispatch(c, b, pos, &q);
    }
}
