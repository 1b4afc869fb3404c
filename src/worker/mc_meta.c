/*
 * worker/mc_meta.c: memcached's meta protocol (mg ms md ma mn me) from
 * clients, on the same connections as the classic commands. A line is
 * checked as memcached's meta parser checks it (its errors answered here, in
 * order, always sent), then routed by its key (a base64 key decoded first,
 * so it lands where the plain key would) with every flag passed through
 * but O: walnut's own tag takes its place (its reply must echo it; the
 * client's O goes back into the reply, mc_server.c). A quiet request (q)
 * goes to its server without q: a proxy could not tell
 * when a quiet reply is due otherwise; mc_server.c drops what memcached
 * would not have sent. mn is answered here: the client FIFO already puts it
 * after every earlier reply, whichever servers they come from.
 * Worker thread only; never writes or closes (the flush does).
 */
#include "mc.h"

#include <stdio.h>
#include <string.h>

/* The value limit is half the pool's client_buffer_limit, checked at dispatch
 * (wn_mc_storage_fits). */
static const wn_mc_limits_t meta_limits = {.max_line = WN_MC_MAX_LINE,
                                           .max_value = (uint32_t)INT32_MAX - 2,
                                           .max_retrieval_line = 0};

static void out_of_memory(mc_client_t *c)
{
    c->c.broken = true; /* no way to answer in order */
    wn_client_mark(&c->c);
}

/* Answer with a line of walnut's (copied), in order. */
static void reply(mc_client_t *c, const char *text, size_t len, bool error)
{
    mc_req_t *r = wn_mc_local(c, WN_MC_META);
    if (r == NULL) {
        out_of_memory(c);
        return;
    }
    if (error)
        wn_stat_add(WN_PSTAT(c->c.pool, request_errors), 1);
    wn_req_reply(&r->r, text, len);
    wn_req_unref(&r->r);
}

/* The key as it is hashed: a base64 key (b flag) decoded into buf. Its
 * length, or <= 0 when it does not decode. */
static int routing_key(const char *line, const wn_meta_request_t *mq, uint8_t *buf, size_t cap,
                       const char **key)
{
    if (!mq->base64) {
        *key = line + mq->key.off;
        return (int)mq->key.len;
    }
    *key = (const char *)buf;
    return wn_meta_key_decode(line, mq, buf, cap);
}

/* The server of the request's key; NULL when none is live (or mn). */
static server_rt_t *route(mc_client_t *c, const char *line, const wn_meta_request_t *mq)
{
    if (mq->cmd == WN_META_MN)
        return NULL;
    uint8_t buf[WN_META_KEY_DECODED_MAX];
    const char *key;
    int n = routing_key(line, mq, buf, sizeof buf, &key);
    return n > 0 ? wn_pool_route(c->c.pool, key, (size_t)n) : NULL;
}

/*
 * An ma with q and N: memcached sends the reply of one that created the item
 * and drops that of one that found it, and nothing in the reply tells them
 * apart. Such a request goes with its q and an mn after it, so the server
 * itself says whether it answers: whatever comes before MN is the reply.
 */
static bool has_flag(const char *line, const wn_meta_request_t *mq, char letter)
{
    for (uint32_t i = 0; i < mq->nflags; i++)
        if (line[mq->flags[i].off] == letter)
            return true;
    return false;
}

static bool needs_mn(const char *line, const wn_meta_request_t *mq)
{
    return mq->cmd == WN_META_MA && mq->quiet && has_flag(line, mq, 'N');
}

size_t wn_mc_tag_text(uint32_t tag, char *buf)
{
    static const char hex[] = "0123456789abcdef";
    char digits[8];
    size_t n = 0;
    for (uint32_t v = tag; v != 0 && n < sizeof digits; v >>= 4)
        digits[n++] = hex[v & 15];
    buf[0] = 'O';
    for (size_t i = 0; i < n; i++)
        buf[1 + i] = digits[n - 1 - i];
    return n + 1;
}

size_t wn_mc_meta_tag(wn_worker_t *w, mc_req_t *r, char *buf)
{
    if (++w->meta_tags == 0)
        w->meta_tags = 1;
    r->tag = w->meta_tags;
    return wn_mc_tag_text(r->tag, buf);
}

int wn_mc_meta_tag_line(wn_worker_t *w, mc_req_t *r, char *buf, int len, size_t cap)
{
    if (len < 2 || (size_t)len + 1 + WN_MC_TAG_MAX > cap)
        return len;
    buf[len - 2] = ' ';
    size_t n = wn_mc_meta_tag(w, r, buf + len - 1);
    memcpy(buf + len - 1 + n, "\r\n", 2);
    return len + 1 + (int)n;
}

/* A line memcached could not take as sent (over 2 KiB) goes rebuilt from
 * what memcached reads in it (wn_meta_compose_canonical). */
static bool rebuilt(const wn_meta_request_t *mq)
{
    return mq->line_len > WN_MC_SERVER_LINE_MAX;
}

/* The line untagged (me, which memcached echoes nothing of; mg, ma with an O
 * over 32 bytes, which it answers with an error): as sent, without q
 * (unless until_mn), or, when memcached could not take it as sent (over
 * 2 KiB), rebuilt as memcached reads it. */
static int push_line_untagged(mc_req_t *r, wn_buf_t *b, uint32_t pos, const wn_meta_request_t *mq,
                              char *out, size_t cap)
{
    const char *line = b->data + pos;
    int len;
    if (rebuilt(mq)) {
        len = wn_meta_compose_canonical(out, cap, line, mq);
        if (len > 0 && r->until_mn) /* put the q back */
            len += snprintf(out + len - 2, cap - (size_t)len + 2, " q\r\n") - 2;
    } else if (!mq->quiet || r->until_mn) {
        return wn_req_out_push(&r->r, b, pos, mq->line_len);
    } else {
        len = wn_meta_compose_without_quiet(out, cap, line, mq);
    }
    return len < 0 ? len : wn_req_out_scratch(&r->r, out, (size_t)len);
}

/* The client's O token (its first len bytes: as its server gets it), kept
 * with the request (r.keep owns the copy). */
static int keep_opaque(mc_client_t *c, mc_req_t *r, const char *line, const wn_meta_request_t *mq,
                       uint32_t len)
{
    char *o = wn_scratch_alloc(c->c.w, &r->r.keep, len);
    if (o == NULL)
        return WN_ENOMEM;
    memcpy(o, line + mq->opaque.off, len);
    r->opaque = o;
    r->opaque_len = (uint16_t)len;
    return 0;
}

/* The line as its server gets it: rebuilt from its tokens with walnut's tag
 * in place of the client's O (kept, to put back in the reply), without q
 * (unless until_mn), as sent or, over 2 KiB, as memcached reads it; me, and
 * mg or ma with an O over 32 bytes, untagged (below); then mn for until_mn. */
static int push_line(mc_client_t *c, mc_req_t *r, wn_buf_t *b, uint32_t pos,
                     const wn_meta_request_t *mq)
{
    static const char mn[] = "mn\r\n";
    const char *line = b->data + pos;
    char out[WN_MC_SERVER_LINE_MAX + WN_MC_TAG_MAX + 8];
    char tag[WN_MC_TAG_MAX];
    int len = WN_EFULL, rc;
    /* me echoes nothing; an mg or ma with an O over 32 bytes goes with that
     * O, as memcached runs it and then answers only its error, which echoes
     * nothing either (a tag would have it run differently: a W token sent
     * to walnut is not sent again): untagged, each as memcached sees it from
     * a client (without q, which changes nothing for them) */
    if (mq->cmd != WN_META_ME && !mq->opaque_too_long) {
        size_t taglen = wn_mc_meta_tag(c->c.w, r, tag);
        bool canonical = rebuilt(mq);
        len =
            wn_meta_compose_tagged(out, sizeof out, line, mq, r->until_mn, canonical, tag, taglen);
        if (!canonical && (len == WN_ETOOBIG || len > (int)WN_MC_SERVER_LINE_MAX))
            len = wn_meta_compose_tagged(out, sizeof out, line, mq, r->until_mn, true, tag, taglen);
    }
    if (len == WN_EFULL) {
        r->tag = 0;
        /* a long O: its reply must echo it, unless an error */
        r->long_o = mq->opaque_too_long;
        /* rebuilt, the O is cut (wn_meta_compose_canonical) */
        uint32_t sent =
            rebuilt(mq) ? WN_MIN(mq->opaque.len, WN_META_CANONICAL_OPAQUE) : mq->opaque.len;
        rc = r->long_o ? keep_opaque(c, r, line, mq, sent) : 0;
        if (rc == 0)
            rc = push_line_untagged(r, b, pos, mq, out, sizeof out);
    } else if (len < 0) {
        rc = len;
    } else {
        r->tag_relay = true;
        rc = mq->opaque.len > 0 ? keep_opaque(c, r, line, mq, mq->opaque.len) : 0;
        if (rc == 0)
            rc = wn_req_out_scratch(&r->r, out, (size_t)len);
    }
    if (rc == 0 && r->until_mn)
        rc = wn_req_out_scratch(&r->r, mn, sizeof(mn) - 1);
    return rc;
}

/*
 * An ms larger than the client may hold: answered as memcached answers an
 * item over its size (always sent, q or not), the data block swallowed, and
 * the key unlinked as memcached unlinks it (any mode): an md to the key's
 * server in the client's order, its reply dropped.
 */
static void too_large(mc_client_t *c, const char *line, const wn_meta_request_t *mq,
                      server_rt_t *srv)
{
    size_t len;
    const char *text = wn_meta_err_text(WN_META_ERR_TOO_LARGE, &len);
    reply(c, text, len, true);
    c->data_left = mq->data_len;
    c->data_swallow = true;
    mc_req_t *d = (mc_req_t *)wn_req_create(c->c.pool, &c->c, REQ_FORWARD);
    if (d == NULL) {
        out_of_memory(c);
        return;
    }
    d->cmd = WN_MC_META;
    d->r.cmd = WN_MC_META;
    d->meta = WN_META_MD;
    d->r.noreply = true;
    d->r.swallow = true;
    d->r.server = srv;
    wn_req_enqueue_client(&c->c, &d->r);
    char md[WN_MC_KEY_MAX + 16 + WN_MC_TAG_MAX];
    int n = snprintf(md, sizeof md, "md %.*s%s\r\n", (int)mq->key.len, line + mq->key.off,
                     mq->base64 ? " b" : "");
    n = wn_mc_meta_tag_line(c->c.w, d, md, n, sizeof md);
    if (wn_req_out_scratch(&d->r, md, (size_t)n) < 0)
        wn_mc_fail(&d->r, WN_ENOMEM);
    else
        wn_mc_forward(&c->c, srv, &d->r);
    wn_req_unref(&d->r);
}

static void dispatch(mc_client_t *c, wn_buf_t *b, uint32_t pos, const wn_meta_request_t *mq,
                     server_rt_t *srv)
{
    static const char mn[] = "MN\r\n";
    if (mq->cmd == WN_META_MN) {
        reply(c, mn, sizeof(mn) - 1, false);
        return;
    }
    const char *line = b->data + pos;
    if (mq->cmd == WN_META_MS) {
        wn_stat_add(WN_GSTAT(c->c.w, cmd_set), 1);
        if (!wn_mc_storage_fits(c->c.pool, mq->line_len, mq->data_len)) {
            too_large(c, line, mq, srv);
            return;
        }
    }
    mc_count_t counts = mq->cmd != WN_META_MG     ? MC_COUNT_NONE
                        : has_flag(line, mq, 'T') ? MC_COUNT_GET_OR_TOUCH
                                                  : MC_COUNT_GET;
    if (counts == MC_COUNT_GET)
        wn_stat_add(WN_GSTAT(c->c.w, cmd_get), 1);
    mc_req_t *r = wn_mc_request(c, REQ_FORWARD, WN_MC_META);
    if (r == NULL) {
        out_of_memory(c);
        return;
    }
    r->meta = (uint8_t)mq->cmd;
    r->counts = (uint8_t)counts;
    /* An O over 32 bytes: memcached answers an error, q or not */
    r->until_mn = needs_mn(line, mq) && !mq->opaque_too_long;
    r->quiet = mq->quiet && !r->until_mn && !mq->opaque_too_long;
    r->r.server = srv;
    /* me: its ME line names the key; mg md ma with k: the reply does.
     * Either is checked against the key asked for (mc_server.c), as a
     * classic get's VALUE lines are. (ms keeps its key below.) */
    if (mq->cmd == WN_META_ME || (mq->want_key && mq->cmd != WN_META_MS)) {
        uint8_t buf[WN_META_KEY_DECODED_MAX];
        const char *key;
        int n = routing_key(line, mq, buf, sizeof buf, &key);
        char *copy = n > 0 ? wn_scratch_alloc(c->c.w, &r->r.keep, (size_t)n) : NULL;
        if (copy == NULL) {
            wn_mc_fail(&r->r, WN_ENOMEM);
            wn_req_unref(&r->r);
            return;
        }
        memcpy(copy, key, (size_t)n);
        r->route_key = copy;
        r->route_key_len = (uint16_t)n;
    }
    int rc = push_line(c, r, b, pos, mq);
    if (mq->cmd == WN_META_MS) {
        /* The data block follows; mc_client.c forwards once it is in (a bad
         * chunk is answered there, always sent). */
        c->data_left = mq->data_len;
        c->trailer[0] = c->trailer[1] = 0;
        if (rc < 0) {
            c->data_swallow = true;
            wn_mc_fail(&r->r, rc);
            wn_req_unref(&r->r);
            return;
        }
        uint8_t buf[WN_META_KEY_DECODED_MAX];
        const char *key;
        int n = routing_key(line, mq, buf, sizeof buf, &key);
        if (wn_mc_expect_data(c, r, key, n > 0 ? (size_t)n : 0) < 0) {
            c->data_swallow = true;
            wn_mc_fail(&r->r, WN_ENOMEM);
            wn_req_unref(&r->r);
        }
        return;
    }
    if (rc < 0)
        wn_mc_fail(&r->r, rc);
    else
        wn_mc_forward(&c->c, srv, &r->r);
    wn_req_unref(&r->r);
}

bool wn_mc_meta_line(mc_client_t *c, wn_buf_t *b, const wn_mc_request_t *q)
{
    client_t *cl = &c->c;
    uint32_t pos = cl->in.pos;
    const char *line = b->data + pos;
    wn_meta_request_t mq;
    int rc = wn_meta_line_parse(&meta_limits, line, q->line_len, &mq);
    if (rc >= 0 && mq.cmd != WN_META_ME && mq.cmd != WN_META_MN &&
        !wn_meta_tag_fits(&mq, needs_mn(line, &mq))) {
        /* No room for walnut's O token (a line at memcached's token limit
         * with no O of its own): untagged, a server that drops or repeats
         * a reply could hand another client's value to this one. Refused
         * as memcached refuses one token more. */
        rc = WN_EINVAL;
        mq.err = mq.cmd == WN_META_MG ? WN_META_ERR_MG_TOO_MANY : WN_META_ERR_TOO_MANY;
        mq.after = WN_MC_AFTER_SWALLOW;
    }
    if (rc < 0) {
        /* memcached's error, always sent (q or not); a block it announced
         * is swallowed, never run */
        wn_stat_add(WN_PSTAT(cl->pool, requests), 1);
        size_t len;
        const char *text = wn_meta_err_text(mq.err, &len);
        if (len == 0)
            text = wn_meta_err_text(WN_META_ERR_ERROR, &len);
        cl->in.pos += q->line_len;
        if (mq.after == WN_MC_AFTER_SWALLOW && mq.data_len > 0) {
            c->data_left = mq.data_len;
            c->data_swallow = true;
        }
        reply(c, text, len, true);
        return true;
    }
    server_rt_t *srv = route(c, line, &mq);
    if (srv != NULL && cl->pool->nsuspect > 0 && wn_server_is_suspect(srv) &&
        wn_ctl_hold(cl, srv))
        return false;
    wn_stat_add(WN_PSTAT(cl->pool, requests), 1);
    cl->in.pos += q->line_len;
    dispatch(c, b, pos, &mq, srv);
    return true;
}
