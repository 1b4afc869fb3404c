/*
 * worker/mcbin_client.c: memcached binary packets from clients. Picks the
 * protocol from a connection's first byte, frames packets (the head must be
 * contiguous; a value is taken by reference as it arrives, in any number of
 * buffers), answers refused packets with memcached's error and skips or
 * closes as it would, and hands the rest to mcbin_dispatch.c. After QUIT or
 * lost framing nothing more is parsed. Worker thread only; never writes or
 * closes (the flush does).
 */
#include "mcbin.h"

#include <string.h>

bool wn_mcbin_client_decide(client_t *cl)
{
    mcbin_client_t *c = (mcbin_client_t *)cl;
    if (cl->in.buf == NULL || cl->in.pos == cl->in.buf->len)
        return false;
    if ((uint8_t)cl->in.buf->data[cl->in.pos] != WN_MCBIN_REQ_MAGIC) {
        c->mode = MCBIN_TEXT;
        return false;
    }
    c->mode = MCBIN_BINARY;
    return true;
}

/* A value is held until it is forwarded: one that would take more than half
 * of what the client may hold (client_buffer_limit, which a reload may
 * change) is refused up front (E2BIG, swallowed) rather than disconnecting
 * the client later. With the default limit, memcached's 1 MiB item is the
 * bound. */
static void refresh_limits(mcbin_client_t *c)
{
    uint64_t half = c->mc.c.pool->buffer_limit / 2;
    c->lim.max_value = half < WN_MCBIN_VALUE_MAX ? (uint32_t)half : WN_MCBIN_VALUE_MAX;
}

/* A request whose value never came in full was not forwarded: it is
 * answered with nothing (memcached closes without a reply), which also lets
 * go of its unsent fragment (the two hold each other until then). It stays
 * in the FIFO, if it still is, so the client's earlier replies go out. */
static void drop_value_req(mcbin_client_t *c)
{
    if (c->value_req != NULL) {
        req_t *r = &c->value_req->m.r;
        r->noreply = true;
        wn_req_reply(r, "", 0);
        wn_req_unref(r);
        c->value_req = NULL;
    }
    c->value_left = 0;
}

void wn_mcbin_client_deinit(client_t *cl)
{
    drop_value_req((mcbin_client_t *)cl);
}

void wn_mcbin_client_eof(client_t *cl)
{
    mcbin_client_t *c = (mcbin_client_t *)cl;
    drop_value_req(c);
    c->skip_left = 0;
    cl->mid_request = false;
    cl->reading_queued = false;
}

void wn_mcbin_client_read_plan(const client_t *cl, uint32_t *keep, uint64_t *ahead)
{
    const mcbin_client_t *c = (const mcbin_client_t *)cl;
    /* A value or a refused packet's rest is read by count; otherwise an
     * incomplete head (at most 24 + 255 + 250 bytes) stays contiguous. */
    wn_instream_plan(&cl->in,
                     c->value_left > 0 ? c->value_left : WN_MIN(c->skip_left, WN_READ_AHEAD_MAX),
                     keep, ahead);
}

static void out_of_memory(mcbin_client_t *c)
{
    c->mc.c.broken = true; /* no way to answer in order any more */
    wn_client_mark(&c->mc.c);
}

/* A storing request's value is all in: "\r\n" after it, and off it goes. */
static void value_done(mcbin_client_t *c)
{
    mcbin_req_t *r = c->value_req;
    c->value_req = NULL;
    if (r == NULL)
        return;
    req_t *f = r->m.r.done ? NULL : r->m.r.frags[0];
    if (f != NULL) {
        mc_req_t *fm = mc_req(f);
        if (fm->route_gen != c->mc.c.w->gen && f->server != NULL)
            f->server = wn_pool_route(c->mc.c.pool, fm->route_key, fm->route_key_len);
        if (wn_req_out_scratch(f, "\r\n", 2) < 0)
            wn_mc_fail(f, WN_ENOMEM);
        else
            wn_mc_forward(&c->mc.c, f->server, f);
    }
    wn_req_unref(&r->m.r);
}

static void take_value(mcbin_client_t *c, wn_buf_t *b)
{
    client_t *cl = &c->mc.c;
    uint32_t pos = cl->in.pos;
    uint32_t take = WN_MIN(b->len - pos, c->value_left);
    mcbin_req_t *r = c->value_req;
    if (r != NULL && !r->m.r.done && wn_req_out_push(r->m.r.frags[0], b, pos, take) < 0) {
        out_of_memory(c);
        return;
    }
    cl->in.pos += take;
    c->value_left -= take;
    if (c->value_left == 0)
        value_done(c);
}

static void skip_bytes(mcbin_client_t *c, wn_buf_t *b)
{
    client_t *cl = &c->mc.c;
    uint64_t take = WN_MIN((uint64_t)(b->len - cl->in.pos), c->skip_left);
    cl->in.pos += (uint32_t)take;
    c->skip_left -= take;
}

/* The parser refused the packet: answer in order (quiet opcodes too: an
 * error is always sent), then skip the packet or close, as memcached does. */
static bool refused(mcbin_client_t *c, wn_buf_t *b, const wn_mcbin_request_t *q)
{
    client_t *cl = &c->mc.c;
    wn_stat_add(WN_PSTAT(cl->pool, requests), 1);
    wn_stat_add(WN_PSTAT(cl->pool, request_errors), 1);
    mcbin_req_t *r = wn_mcbin_local(c, q->h.opcode, q->h.opaque, WN_MC_UNKNOWN);
    if (r == NULL) {
        out_of_memory(c);
        return false;
    }
    bool skip = q->after == WN_MCBIN_AFTER_SKIP;
    bool unlink = q->status == WN_MCBIN_E2BIG &&
                  wn_mcbin_opcode_loud(q->h.opcode) == WN_MCBIN_OP_SET;
    const uint8_t *key = (const uint8_t *)b->data + cl->in.pos + q->key_off;
    if (skip) {
        c->skip_left = q->skip_len;
    } else {
        /* Framing is lost (or memcached closes here): what came before is
         * answered, then this, then the connection closes. */
        cl->in.pos = b->len;
        cl->stop_parsing = true;
        r->m.r.close_after = true;
    }
    uint8_t buf[WN_MCBIN_ERROR_MAX];
    int n = q->status == WN_MCBIN_NONE
                ? 0
                : wn_mcbin_compose_error(buf, sizeof(buf), q->h.opcode, q->h.opaque, q->status);
    wn_req_reply(&r->m.r, (const char *)buf, n > 0 ? (size_t)n : 0);
    wn_req_unref(&r->m.r);
    if (unlink)
        wn_mcbin_unlink(c, key, q->h.keylen); /* the head is in (see below) */
    if (skip)
        skip_bytes(c, b);
    return skip;
}

void wn_mcbin_client_parse(client_t *cl)
{
    mcbin_client_t *c = (mcbin_client_t *)cl;
    for (;;) {
        /* Between packets the client's bounds apply; inside one (a partial
         * head, a value, a refused body) reading goes on, or it could never
         * complete. */
        cl->mid_request = c->value_left > 0 || c->skip_left > 0;
        cl->reading_queued = cl->mid_request; /* a value, or a refused body's reply */
        if (!wn_client_can_parse(cl))
            break;
        wn_buf_t *b = cl->in.buf;
        if (b == NULL || cl->in.pos == b->len)
            break;
        if (c->skip_left > 0) {
            skip_bytes(c, b);
            continue;
        }
        if (c->value_left > 0) {
            take_value(c, b);
            continue;
        }
        uint32_t pos = cl->in.pos;
        const uint8_t *pkt = (const uint8_t *)b->data + pos;
        wn_mcbin_request_t q;
        refresh_limits(c);
        int rc = wn_mcbin_request_parse(&c->lim, pkt, b->len - pos, &q);
        if (rc == WN_EAGAIN) {
            cl->mid_request = true;
            break;
        }
        if (rc == WN_ETOOBIG && wn_mcbin_opcode_loud(q.h.opcode) == WN_MCBIN_OP_SET &&
            b->len - pos < q.head_len) {
            /* A SET too large unlinks its key: wait for the key (the head
             * is at most 24 + 8 + 250 bytes). */
            cl->mid_request = true;
            break;
        }
        if (rc < 0) {
            if (!refused(c, b, &q))
                break;
            continue;
        }
        if (cl->pool->nsuspect > 0 && wn_mcbin_must_wait(c, pkt, &q))
            break; /* parsed again when the hold ends */
        cl->in.pos += q.head_len;
        wn_mcbin_dispatch(c, b, pos, &q);
    }
}
