/*
 * worker/mc_client.c: memcached ASCII from clients. Frames request lines and
 * data blocks from the client's buffer, answers what walnut answers itself
 * (rejected lines, quit) in order with everything else, and hands routable
 * requests to mc_dispatch.c. After quit, or once framing is lost (a line too
 * long, an HTTP request), nothing more is parsed; a rejected request's data
 * block is always swallowed, never run. A get/gets/gat/gats line longer than
 * WN_MC_MAX_LINE is not held whole: it is streamed, its keys sent on in
 * parts as they arrive (mc_line_t in mc.h).
 * Worker thread only; never writes or closes (the flush does).
 */
#include "mc.h"

#include <stdio.h>
#include <stdlib.h>
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

/* The streamed line is over: it answers once its parts are in. `term`:
 * the request that answers END or the error, in order (NULL: nobody reads
 * the answer, the client left mid-line). */
static void line_close(mc_client_t *c, mc_req_t *term)
{
    mc_line_t *l = c->line;
    c->line = NULL;
    if (l == NULL)
        return;
    l->verdict = term != NULL ? c->stream.verdict : WN_MC_REPLY_NONE;
    l->term = term;
    wn_mc_line_closed(l);
}

void wn_mc_client_deinit(client_t *cl)
{
    drop_data_req((mc_client_t *)cl);
    line_close((mc_client_t *)cl, NULL);
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
    /* A streamed line whose end has not arrived never will (what arrived
     * was parsed: a hold stops reading, so EOF is not seen meanwhile): its
     * parts are dropped, unanswered. */
    line_close(c, NULL);
    cl->mid_request = false;
    cl->reading_queued = false;
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

/* ---- streamed retrieval lines ------------------------------------------------ */

static void broken(mc_client_t *c)
{
    c->c.broken = true; /* out of memory: no way to answer in order */
    wn_client_mark(&c->c);
}

/* A retrieval line WN_MC_MAX_LINE long with no end yet: stream it. False
 * if the line does not start like one (it is then too long). */
WN_COLD static bool stream_start(mc_client_t *c, wn_buf_t *b)
{
    uint32_t pos = c->c.in.pos;
    int took = wn_mc_stream_begin(&c->stream, b->data + pos, b->len - pos, WN_MC_MAX_KEYS);
    if (took < 0)
        return false;
    c->line = calloc(1, sizeof(*c->line));
    if (c->line == NULL) {
        broken(c);
        return false;
    }
    wn_stat_add(WN_PSTAT(c->c.pool, requests), 1);
    c->parser.scanned = 0; /* the next line is searched from its start */
    c->c.in.pos += (uint32_t)took;
    return true;
}

/* Keys taken from the client's bytes join the next part, one space apart. */
static int gather(mc_line_t *l, const char *p, uint32_t len, uint32_t nkeys)
{
    if (l->acc_len + len + 1 > l->acc_cap) {
        uint32_t cap = WN_MAX(2 * l->acc_cap, l->acc_len + len + 1);
        char *acc = realloc(l->acc, cap);
        if (acc == NULL)
            return WN_ENOMEM;
        l->acc = acc;
        l->acc_cap = cap;
    }
    for (uint32_t i = 0; i < len;) {
        while (i < len && p[i] == ' ')
            i++;
        uint32_t k = i;
        while (i < len && p[i] != ' ')
            i++;
        if (i > k) {
            if (l->acc_len > 0)
                l->acc[l->acc_len++] = ' ';
            memcpy(l->acc + l->acc_len, p + k, i - k);
            l->acc_len += i - k;
        }
    }
    l->acc_keys += nkeys;
    return 0;
}

static bool part_due(const mc_client_t *c)
{
    const mc_line_t *l = c->line;
    return l->acc_keys > 0 &&
           (l->acc_keys >= WN_MC_PART_MIN_KEYS || l->acc_len >= WN_MC_PART_MIN_BYTES ||
            c->stream.ended || c->stream.verdict != WN_MC_REPLY_NONE);
}

bool wn_mc_client_has_pending(const client_t *cl)
{
    const mc_client_t *c = (const mc_client_t *)cl;
    return c->line != NULL && (part_due(c) || c->stream.ended);
}

/* The gathered keys as a part: a retrieval line of its own ("gat <exptime>"
 * and the keys), parsed like any line and dispatched as a part of the
 * streamed one. False when c is held for a suspect server (the part waits;
 * sent when the hold ends). */
static bool send_part(mc_client_t *c)
{
    mc_line_t *l = c->line;
    const wn_mc_stream_t *st = &c->stream;
    char head[32];
    int hn = st->cmd == WN_MC_GAT || st->cmd == WN_MC_GATS
                 ? snprintf(head, sizeof(head), "%s %ld ", wn_mc_cmd_name(st->cmd),
                            (long)st->exptime)
                 : snprintf(head, sizeof(head), "%s ", wn_mc_cmd_name(st->cmd));
    size_t need = (size_t)hn + l->acc_len + 2;
    /* Held until the line answers: a buffer of its own size, not a chunk. */
    wn_buf_t *hb = wn_buf_get_exact(&c->c.w->bufs, need);
    if (hb == NULL) {
        broken(c);
        return true;
    }
    memcpy(hb->data, head, (size_t)hn);
    memcpy(hb->data + hn, l->acc, l->acc_len);
    memcpy(hb->data + hn + l->acc_len, "\r\n", 2);
    hb->len = (uint32_t)need;
    wn_mc_limits_t lim = {.max_line = hb->len + 1, .max_retrieval_line = hb->len + 1};
    wn_mc_req_parser_t parser;
    wn_mc_req_parser_init(&parser, &lim);
    wn_mc_request_t q;
    int rc = wn_mc_request_parse(&parser, hb->data, hb->len, &q);
    if (rc > 0 && c->c.pool->nsuspect > 0 && wn_mc_must_wait(c, hb->data, &q)) {
        wn_buf_unref(hb);
        return false;
    }
    if (rc > 0)
        wn_mc_dispatch_part(c, hb, &q);
    else if (c->stream.verdict == WN_MC_REPLY_NONE)
        c->stream.verdict = WN_MC_REPLY_BAD_FORMAT; /* cannot be: both parsers agree */
    wn_buf_unref(hb);
    l->acc_len = 0;
    l->acc_keys = 0;
    return true;
}

/* Go on with the streamed line: send a part that is due, answer its end,
 * or take what arrived. False when more bytes are needed, or a hold stops
 * parsing. */
WN_COLD static bool stream_more(mc_client_t *c, wn_buf_t *b)
{
    if (part_due(c))
        return send_part(c) && !c->c.broken;
    if (c->stream.ended) {
        mc_req_t *term = wn_mc_local(c, (wn_mc_cmd_t)c->stream.cmd);
        if (term == NULL)
            broken(c);
        line_close(c, term);
        return !c->c.broken;
    }
    uint32_t pos = c->c.in.pos;
    if (b == NULL || pos == b->len)
        return false;
    wn_mc_span_t keys;
    uint32_t nkeys;
    int took = wn_mc_stream_take(&c->stream, b->data + pos, b->len - pos, &keys, &nkeys);
    if (nkeys > 0 && gather(c->line, b->data + pos + keys.off, keys.len, nkeys) < 0) {
        broken(c);
        return false;
    }
    c->c.in.pos += (uint32_t)took;
    return took > 0 || part_due(c) || c->stream.ended;
}

void wn_mc_client_parse(client_t *cl)
{
    mc_client_t *c = (mc_client_t *)cl;
    for (;;) {
        /* Between requests the client's bounds apply; inside one (a partial
         * line, a data block) reading goes on, or it could never complete. */
        cl->mid_request = c->data_left > 0 || c->line != NULL;
        cl->reading_queued = cl->mid_request; /* a value or a streamed line */
        if (!wn_client_can_parse(cl))
            break;
        wn_buf_t *b = cl->in.buf;
        if (c->line != NULL) {
            if (!stream_more(c, b))
                break;
            continue;
        }
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
            if (b->len - pos >= WN_MC_MAX_LINE && stream_start(c, b))
                continue;
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
