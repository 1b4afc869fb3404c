/*
 * worker/mc_server.c: memcached ASCII replies from a server, classic and
 * meta. Frames each reply line and data block and attaches it to the
 * request at the head of the connection. A reply must match its request:
 * bytes where no request is waiting, a line that is no valid answer to the
 * command, or a VALUE for a key the request did not ask for (or asked for
 * fewer times) is a protocol error, and the core closes the connection and
 * fails what was on it. No client ever receives bytes meant for another.
 * Worker thread only.
 */
#include "mc.h"

#include <string.h>

void wn_mc_sconn_reset(sconn_t *sc)
{
    mc_sconn_t *s = (mc_sconn_t *)sc;
    /* Whatever a client of the pool may store must read back. */
    uint64_t limit = WN_MAX((uint64_t)WN_MC_MAX_SERVER_VALUE, sc->server->pool->buffer_limit);
    wn_mc_limits_t lim = {.max_line = WN_MC_MAX_LINE,
                          .max_value = (uint32_t)WN_MIN(limit, (uint64_t)INT32_MAX - 2)};
    wn_mc_rsp_parser_init(&s->rsp, &lim);
    s->data_left = 0;
    s->done_after_data = false;
}

void wn_mc_server_read_plan(const sconn_t *sc, uint32_t *keep, uint64_t *ahead)
{
    wn_instream_plan(&sc->in, ((const mc_sconn_t *)sc)->data_left, keep, ahead);
}

static bool is_fragment_of_split(const mc_req_t *r)
{
    return r->r.kind == REQ_FRAGMENT && r->split != NULL;
}

/* The head's reply is complete. */
static void complete_head(mc_sconn_t *s)
{
    req_t *r = s->s.head;
    mc_req_t *m = mc_req(r);
    wn_worker_t *w = s->s.server->pool->w;
    wn_req_ref(r);
    wn_sconn_pop(&s->s);
    wn_ctl_server_ok(s->s.server);
    if (m->is_get && (m->cmd == WN_MC_GAT || m->cmd == WN_MC_GATS)) {
        wn_stat_add(WN_GSTAT(w, touch_hits), m->hits);
        wn_stat_add(WN_GSTAT(w, touch_misses), m->nkeys - WN_MIN(m->nkeys, m->hits));
    } else if (m->is_get) {
        wn_stat_add(WN_GSTAT(w, get_hits), m->hits);
        wn_stat_add(WN_GSTAT(w, get_misses), m->nkeys - WN_MIN(m->nkeys, m->hits));
    }
    wn_req_done(r);
    if (r->kind == REQ_FRAGMENT && r->parent != NULL)
        wn_mc_parent_progress(r->parent);
    wn_req_unref(r);
}

/* Which key does this VALUE answer? -1: none (a reply for someone else). */
static int32_t match_value(mc_req_t *m, const char *key, uint32_t len)
{
    if (is_fragment_of_split(m)) {
        mc_split_t *sp = m->split;
        const uint32_t *order = sp->frag_keys + sp->frag_first[m->frag];
        mc_req_t *p = mc_req(m->r.parent);
        int32_t j = wn_mc_match_key(p->line, sp->keys, order, m->nkeys, &m->match, key, len);
        return j < 0 ? -1 : (int32_t)order[j];
    }
    if (m->line == NULL)
        return -1;
    if (m->nkeys == 1) {
        /* The common case, one key: it may be answered once. */
        if (m->match != 0 || m->keys.len != len || memcmp(m->line + m->keys.off, key, len) != 0)
            return -1;
        m->match = 1;
        return 0;
    }
    return wn_mc_match_line_key(m->line, m->keys, &m->match, key, len) ? 0 : -1;
}

/*
 * Keep bytes of m's reply. A split get's part keeps its items until their
 * turn in the client's key order comes (mc_merge.c): past the client's
 * limit (wn_req_part_push) the get ends with an error (split_progress) and
 * the client is not cut; a part of a streamed line that failed so keeps
 * nothing.
 */
static int keep(mc_req_t *m, wn_buf_t *b, uint32_t pos, uint32_t len, bool split)
{
    if (!is_fragment_of_split(m))
        return wn_req_rsp_push(&m->r, b, pos, len, split);
    if (wn_mc_part_of_failed_line(m))
        m->r.swallow = true;
    int rc = wn_req_part_push(&m->r, b, pos, len, split);
    if (rc == 1) {
        wn_mc_part_over_limit(m);
        return 0;
    }
    return rc;
}

/* A VALUE line of a fragment starts an item (merged later by key). */
static int start_item(mc_req_t *m, int32_t key, wn_buf_t *b, uint32_t pos, uint32_t len)
{
    mc_split_t *sp = m->split;
    mc_item_t *it = &sp->items[sp->frag_first[m->frag] + m->nitems];
    it->key = (uint32_t)key;
    it->seg_first = m->r.rsp.n;
    it->nsegs = 0;
    m->nitems++;
    int rc = keep(m, b, pos, len, true);
    it->nsegs = m->r.swallow ? 0 : m->r.rsp.n - it->seg_first; /* (let go: nothing kept) */
    return rc;
}

static void item_grew(mc_req_t *m)
{
    if (is_fragment_of_split(m) && m->nitems > 0 && !m->r.swallow) {
        mc_item_t *it = &m->split->items[m->split->frag_first[m->frag] + m->nitems - 1];
        it->nsegs = m->r.rsp.n - it->seg_first;
    }
}

/* A VALUE block's data is all in: a fragment's item is complete; a
 * forwarded reply may stream to its client. */
static void value_done(mc_req_t *m)
{
    if (is_fragment_of_split(m)) {
        m->ncomplete++;
        if (m->r.parent != NULL && !m->r.parent->done)
            wn_mc_parent_progress(m->r.parent);
    }
}

static int take_data(mc_sconn_t *s, req_t *r, wn_buf_t *b)
{
    mc_req_t *m = mc_req(r);
    uint32_t pos = s->s.in.pos;
    uint32_t take = WN_MIN(b->len - pos, s->data_left);
    if (keep(m, b, pos, take, false) < 0)
        return WN_ENOMEM;
    item_grew(m);
    wn_mc_track_trailer(s->trailer, b->data + pos, take);
    s->s.in.pos += take;
    s->data_left -= take;
    if (s->data_left > 0) {
        if (r->kind == REQ_FORWARD && r->client != NULL)
            wn_client_stream(r->client, r);
        return 0;
    }
    if (!wn_mc_data_trailer_ok(s->trailer[0], s->trailer[1]))
        return WN_EPROTO;
    value_done(m);
    if (s->done_after_data) {
        s->done_after_data = false;
        complete_head(s);
    } else if (r->kind == REQ_FORWARD && r->client != NULL) {
        wn_client_stream(r->client, r);
    }
    return 0;
}

/* One framed reply line for the head request. */
static int take_line(mc_sconn_t *s, req_t *r, wn_buf_t *b, uint32_t pos,
                     const wn_mc_response_t *rsp)
{
    mc_req_t *m = mc_req(r);
    int rc = 0;
    if (rsp->type == WN_MC_RSP_VALUE) {
        int32_t key = match_value(m, b->data + pos + rsp->key.off, rsp->key.len);
        if (key < 0)
            return WN_EPROTO; /* not a key this request asked for */
        m->hits++;
        if (is_fragment_of_split(m))
            rc = start_item(m, key, b, pos, rsp->line_len);
        else
            rc = wn_req_rsp_push(r, b, pos, rsp->line_len, false);
    } else if (is_fragment_of_split(m)) {
        if (rsp->type != WN_MC_RSP_END) {
            /* An error line instead of VALUE/END: the merge answers with it. */
            m->error_line = true;
            m->error_seg = m->r.rsp.n;
            rc = keep(m, b, pos, rsp->line_len, true);
        }
    } else {
        if (m->cmd == WN_MC_TOUCH && rsp->type == WN_MC_RSP_TOUCHED)
            wn_stat_add(WN_GSTAT(s->s.server->pool->w, touch_hits), 1);
        else if (m->cmd == WN_MC_TOUCH && rsp->type == WN_MC_RSP_NOT_FOUND)
            wn_stat_add(WN_GSTAT(s->s.server->pool->w, touch_misses), 1);
        rc = wn_req_rsp_push(r, b, pos, rsp->line_len, false);
    }
    s->s.in.pos += rsp->line_len;
    if (rc < 0)
        return rc;
    if (rsp->data_len > 0) {
        s->data_left = rsp->data_len;
        s->done_after_data = rsp->done;
        s->trailer[0] = s->trailer[1] = 0;
        return 0;
    }
    if (rsp->done)
        complete_head(s);
    return 0;
}

/* A client's mg answered (mc_count_t). */
static void count_mg(wn_worker_t *w, uint8_t counts, wn_meta_rsp_type_t type)
{
    bool hit = type == WN_META_RSP_VA || type == WN_META_RSP_HD;
    if (counts == MC_COUNT_GET_OR_TOUCH && hit) {
        wn_stat_add(WN_GSTAT(w, cmd_touch), 1);
        wn_stat_add(WN_GSTAT(w, touch_hits), 1);
    } else if (counts == MC_COUNT_GET_OR_TOUCH && type == WN_META_RSP_EN) {
        wn_stat_add(WN_GSTAT(w, cmd_get), 1);
        wn_stat_add(WN_GSTAT(w, get_misses), 1);
    } else if (hit) {
        wn_stat_add(WN_GSTAT(w, get_hits), 1);
    } else if (type == WN_META_RSP_EN) {
        wn_stat_add(WN_GSTAT(w, get_misses), 1);
    }
}

/* Does the line's O token (span `o`) say tag? */
static bool tag_is(const char *line, wn_mc_span_t o, uint32_t tag)
{
    char want[WN_MC_TAG_MAX];
    size_t n = wn_mc_tag_text(tag, want);
    return o.len == n && memcmp(line + o.off, want, n) == 0;
}

/* A tagged request's reply line as its client gets it: the tag out (with
 * the space before it), the client's own O token back in its place. */
static int push_reply_untagged(mc_req_t *m, wn_buf_t *b, uint32_t pos,
                               const wn_meta_response_t *rsp)
{
    uint32_t at = rsp->opaque.off, after = at + rsp->opaque.len;
    int rc;
    if (m->opaque_len > 0) {
        rc = wn_req_rsp_push(&m->r, b, pos, at, false);
        if (rc == 0)
            rc = wn_req_rsp_scratch(&m->r, m->opaque, m->opaque_len);
    } else {
        rc = wn_req_rsp_push(&m->r, b, pos, at - 1, false);
    }
    if (rc == 0)
        rc = wn_req_rsp_push(&m->r, b, pos + after, rsp->line_len - after, false);
    return rc;
}

/* The key an ME line (or a k flag) names is the one asked for: as it is, or in base64
 * (how memcached prints a key stored with b, whatever spelling asked). */
static bool reply_key_is(const char *line, wn_mc_span_t key, const mc_req_t *m)
{
    if (key.len == m->route_key_len && memcmp(line + key.off, m->route_key, key.len) == 0)
        return true;
    uint8_t decoded[WN_META_KEY_DECODED_MAX];
    int n = wn_meta_base64_decode(line + key.off, key.len, decoded, sizeof decoded);
    return n == (int)m->route_key_len && memcmp(decoded, m->route_key, (size_t)n) == 0;
}

/* One reply line for a meta request: HD VA EN NF NS EX ME or an error, as
 * its command allows. A quiet request's reply that memcached would not have
 * sent (a miss of mg, the HD of ms md ma, ...) is read and dropped. */
static int take_meta_line(mc_sconn_t *s, req_t *r, wn_buf_t *b)
{
    mc_req_t *m = mc_req(r);
    uint32_t pos = s->s.in.pos;
    wn_meta_response_t rsp;
    int rc = wn_meta_response_parse(&s->rsp, b->data + pos, b->len - pos, &rsp);
    if (rc < 0)
        return rc;
    if (m->until_mn && rsp.type == WN_META_RSP_MN) {
        /* the end of what the server answered (maybe nothing) */
        s->s.in.pos += rsp.line_len;
        complete_head(s);
        return 0;
    }
    if (!wn_meta_reply_allowed((wn_meta_cmd_t)m->meta, rsp.type))
        return WN_EPROTO;
    if (m->until_mn && r->rsp.n > 0)
        return WN_EPROTO; /* one reply before MN at most */
    bool tagged = m->tag != 0 && wn_meta_rsp_echoes_opaque(rsp.type);
    if (tagged && !tag_is(b->data + pos, rsp.opaque, m->tag))
        return WN_EPROTO; /* the reply to another request */
    /* Sent untagged (me), so with no O at all (one of the client's would
     * have been replaced by a tag): a reply that has one answers another
     * request. An mg or ma sent with the client's own O, over 32 bytes
     * (long_o), is answered with an error by memcached; a server that took
     * it would echo that O: nothing else is its reply. */
    if (m->long_o && wn_meta_rsp_echoes_opaque(rsp.type) &&
        (rsp.opaque.len != m->opaque_len ||
         memcmp(b->data + pos + rsp.opaque.off, m->opaque, m->opaque_len) != 0))
        return WN_EPROTO;
    if (m->tag == 0 && !m->long_o && rsp.opaque.len > 0 && wn_meta_rsp_echoes_opaque(rsp.type))
        return WN_EPROTO;
    /* me cannot be tagged; its ME line names the key instead. A reply with
     * a k flag names it too: another key's item is not this request's
     * reply, whatever its tag (a server that mixed them up). */
    if ((rsp.type == WN_META_RSP_ME || rsp.key.len > 0) && m->route_key != NULL &&
        !reply_key_is(b->data + pos, rsp.key, m))
        return WN_EPROTO;
    if (m->quiet && wn_meta_quiet_drops((wn_meta_cmd_t)m->meta, rsp.type))
        r->swallow = true;
    if (m->counts != MC_COUNT_NONE)
        count_mg(s->s.server->pool->w, m->counts, rsp.type);
    if (tagged && m->tag_relay)
        rc = push_reply_untagged(m, b, pos, &rsp);
    else
        rc = wn_req_rsp_push(r, b, pos, rsp.line_len, false);
    s->s.in.pos += rsp.line_len;
    if (rc < 0)
        return rc;
    if (rsp.data_len > 0) {
        s->data_left = rsp.data_len;
        s->done_after_data = !m->until_mn;
        s->trailer[0] = s->trailer[1] = 0;
        return 0;
    }
    if (!m->until_mn)
        complete_head(s);
    return 0;
}

/* memcached's refusal past its -c (WN_MC_FULL_LINE) at pos: 1 whole, -1
 * its start so far, 0 not. */
static int server_full(const wn_buf_t *b, uint32_t pos)
{
    return wn_full_line_at(b->data + pos, b->len - pos, WN_MC_FULL_LINE,
                           sizeof(WN_MC_FULL_LINE) - 1);
}

int wn_mc_server_parse(sconn_t *sc)
{
    mc_sconn_t *s = (mc_sconn_t *)sc;
    for (;;) {
        wn_buf_t *b = sc->in.buf;
        if (b == NULL || sc->in.pos == b->len)
            return 0;
        int full = s->data_left == 0 ? server_full(b, sc->in.pos) : 0;
        if (full > 0)
            return WN_ESRVFULL; /* asked or not (a preconnected connection) */
        req_t *r = sc->head;
        if (r == NULL || r == sc->unsent)
            return full < 0 ? 0 : WN_EPROTO; /* bytes nobody asked for */
        int rc;
        if (s->data_left > 0) {
            rc = take_data(s, r, b);
        } else if (mc_req(r)->cmd == WN_MC_META) {
            rc = take_meta_line(s, r, b);
            if (rc == WN_EAGAIN)
                return 0;
        } else {
            uint32_t pos = sc->in.pos;
            wn_mc_response_t rsp;
            rc = wn_mc_response_parse(&s->rsp, (wn_mc_cmd_t)mc_req(r)->cmd, b->data + pos,
                                      b->len - pos, &rsp);
            if (rc == WN_EAGAIN)
                return 0;
            if (rc > 0)
                rc = take_line(s, r, b, pos, &rsp);
        }
        if (rc < 0)
            return rc;
    }
}
