/*
 * worker/redis_server.c: RESP2 replies from a Redis server. Every reply is
 * one RESP value, framed to its end (nested arrays to any depth; a status or
 * error line too long to hold whole in pieces, as a bulk's bytes) and
 * relayed byte for byte to the request at the head of the connection. RESP
 * has no request ids, so a reply is the head's by position only: bytes where
 * no request waits, and a reply of a type the head's command never answers
 * (a shifted reply), are protocol errors. A split command's parts are
 * collected element by element (MGET) or by value (DEL's integer, MSET's
 * +OK) for redis_merge.c. A new connection first sends AUTH <redis_auth>
 * and SELECT <redis_db>; their replies are checked. -LOADING and
 * -MASTERDOWN are relayed and count as server failures, a split command's
 * parts' too (unless a script returned them). Worker thread only.
 */
#include "redis.h"

#include <stdio.h>
#include <string.h>

void wn_redis_sconn_reset(sconn_t *sc)
{
    redis_sconn_t *s = (redis_sconn_t *)sc;
    wn_resp_rsp_parser_init(&s->rsp, NULL);
    s->data_left = 0;
    s->done_after_data = false;
    s->auth_refused = false;
    s->text_ok = true;
    s->replied = false;
}

void wn_redis_server_read_plan(const sconn_t *sc, uint32_t *keep, uint64_t *ahead)
{
    wn_instream_plan(&sc->in, ((const redis_sconn_t *)sc)->data_left, keep, ahead);
}

/* AUTH or SELECT, sent by walnut ahead of any request on a new connection. */
static void internal(sconn_t *sc, const char *name, const char *arg, bool select)
{
    pool_rt_t *pool = sc->server->pool;
    redis_req_t *r = (redis_req_t *)wn_req_create(pool, NULL, REQ_INTERNAL);
    if (r == NULL)
        return;
    r->internal_select = select;
    char head[64];
    int n = wn_resp_compose_cmd_head(head, sizeof(head), name, strlen(name), 1);
    size_t alen = strlen(arg), size = wn_resp_bulk_size(alen);
    char *bulk = wn_scratch_alloc(pool->w, &r->r.keep, size);
    int m = bulk != NULL ? wn_resp_compose_bulk(bulk, size, arg, alen) : -1;
    if (n < 0 || m < 0 || wn_req_out_scratch(&r->r, head, (size_t)n) < 0 ||
        wn_req_out_scratch(&r->r, bulk, (size_t)m) < 0) {
        wn_req_unref(&r->r);
        return;
    }
    wn_sconn_enqueue(sc, &r->r);
    wn_req_unref(&r->r);
}

void wn_redis_sconn_hello(sconn_t *sc)
{
    const wn_conf_pool_t *conf = sc->server->pool->conf;
    /* Each goes to the front: SELECT first, then AUTH before it. */
    if (conf->redis_db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", conf->redis_db);
        internal(sc, "SELECT", db, true);
    }
    if (conf->redis_auth != NULL)
        internal(sc, "AUTH", conf->redis_auth, false);
}

static bool starts(const char *p, size_t n, const char *word)
{
    size_t len = strlen(word);
    return n >= len && memcmp(p, word, len) == 0;
}

/* The head's reply is complete. */
static void complete_head(redis_sconn_t *s, bool server_ok)
{
    req_t *r = s->s.head;
    s->replied = true;
    wn_req_ref(r);
    wn_sconn_pop(&s->s);
    if (server_ok)
        wn_ctl_server_ok(s->s.server);
    wn_req_done(r);
    if (r->kind == REQ_FRAGMENT && r->parent != NULL)
        wn_redis_parent_progress(r->parent);
    wn_req_unref(r);
}

/* A server without a password refusing AUTH: redis 6 and later say
 * "-ERR AUTH <password> called without any password configured for the
 * default user...", earlier ones "-ERR Client sent AUTH, but no password is
 * set". */
static bool no_password_set(const char *line, size_t len)
{
    return memmem(line, len, "without any password configured", 31) != NULL ||
           memmem(line, len, "no password is set", 18) != NULL;
}

/*
 * The server's line for the log (its CRLF left out, cut to fit out, bytes
 * outside printable ASCII as '?'), walnut's password masked wherever it
 * shows: whole, or cut short by a quote or the line's end (redis-server
 * echoes the arguments of a command it does not know, cut at 128 bytes, as
 * for an AUTH renamed away).
 */
static void quote_reply(char *out, size_t cap, const char *line, size_t len, const char *secret)
{
    size_t slen = secret != NULL ? strlen(secret) : 0, o = 0;
    for (size_t i = 0; i < len && o + 1 < cap;) {
        size_t m = 0;
        while (m < slen && i + m < len && line[i + m] == secret[m])
            m++;
        if (m > 0 && (m == slen || (m >= 4 && (i + m == len || line[i + m] == '\'')))) {
            if (o + 5 > cap)
                break;
            memcpy(out + o, "****", 4);
            o += 4;
            i += m;
            continue;
        }
        out[o++] = line[i] >= 0x20 && line[i] < 0x7f ? line[i] : '?';
        i++;
    }
    out[o] = '\0';
}

/* How often a server that refused walnut's AUTH is tried again (below). */
#define WN_REDIS_REAUTH_MS 1000u

/*
 * An internal request's reply: AUTH/SELECT must say +OK; true when it did.
 * A refusal is logged here, with the server's line (its CRLF left out), at
 * most once per 10 s per kind (wn_server_warn): a refused SELECT closes the
 * connection and every request opens another. In the wrong database every
 * request would be wrong: a refused SELECT fails the connection (its
 * requests get an error saying so), whatever the reason, a database out of
 * range or the -NOAUTH that follows a refused AUTH (that one logged and
 * counted with the AUTH). A refused AUTH alone (redis_db 0) does not:
 * requests get the server's own -NOAUTH, which says what is wrong.
 */
static bool internal_reply(redis_sconn_t *s, redis_req_t *r, const char *line,
                           const wn_resp_rsp_tok_t *tok)
{
    if (tok->type == '+')
        return true;
    server_rt_t *srv = s->s.server;
    if (r->internal_select && s->auth_refused && starts(line, tok->line_len, "-NOAUTH")) {
        /* Said and counted already: the AUTH's refusal. But not selected:
         * once the server stops asking for a password (its requirepass
         * removed) a request written here would run in database 0
         * (an adversarial helper: it did, silently). The connection fails,
         * its requests unrun with the server's -NOAUTH; so do the server's
         * next requests for WN_REDIS_REAUTH_MS (wn_redis_forward), and
         * then a connection tries AUTH and SELECT again. */
        srv->noauth_until_ms = uv_now(&srv->pool->w->loop) + WN_REDIS_REAUTH_MS;
        wn_sconn_fail(&s->s, WN_ENOAUTH);
        return false;
    }
    char said[201];
    quote_reply(said, sizeof(said), line, tok->line_len - 2,
                r->internal_select ? NULL : srv->pool->conf->redis_auth);
    if (!r->internal_select && no_password_set(line, tok->line_len)) {
        /* Not a failure: such a server serves every request (the probe's
         * PING agrees). Said once per connection, at most once per 10 s. */
        wn_server_warn(srv, WN_SWARN_AUTH,
                       "pool '%s': server %s has no password and refused walnut's AUTH (%s); "
                       "serving it without",
                       srv->pool->conf->name, srv->conf->label, said);
        s->auth_refused = true;
        return false;
    }
    wn_server_warn(srv, r->internal_select ? WN_SWARN_SELECT : WN_SWARN_AUTH,
                   "pool '%s': server %s answered walnut's %s with: %s%s", srv->pool->conf->name,
                   srv->conf->label, r->internal_select ? "SELECT" : "AUTH", said,
                   r->internal_select ? "; closing the connection" : "");
    wn_ctl_server_failed(srv, WN_EPROTO);
    if (r->internal_select) {
        wn_sconn_fail(&s->s, WN_ESELECT);
    } else {
        s->auth_refused = true;
        s->auth_refused_ms = uv_now(&srv->pool->w->loop);
    }
    return false;
}

/* A connection whose AUTH was refused serves on unauthenticated (requests
 * get the server's -NOAUTH), but not for good: the password may be right
 * again (rotated back, a server restarted with it), and the probe, on its
 * own connection, would say the server is fine while every request fails.
 * When the server says -NOAUTH again, at most once a second, the connection
 * is opened anew, its AUTH (and SELECT) sent first again. */
static void reauth_due(redis_sconn_t *s)
{
    uint64_t now = uv_now(&s->s.server->pool->w->loop);
    if (!s->s.recycle && now - s->auth_refused_ms >= WN_REDIS_REAUTH_MS)
        wn_sconn_recycle(&s->s);
}

/* A part's reply bytes (wn_req_part_push): past the client's limit, the
 * command is refused (wn_redis_parent_progress) and the client, which has
 * done nothing wrong, is not cut. */
static int frag_push(redis_req_t *f, wn_buf_t *b, uint32_t pos, uint32_t len, bool split)
{
    int rc = wn_req_part_push(&f->r, b, pos, len, split);
    if (rc == 1) {
        f->reply_over_limit = true;
        return 0;
    }
    return rc;
}

/* A fragment's element begins (depth 1 of an MGET reply). */
static int start_item(redis_req_t *f, wn_buf_t *b, uint32_t pos, uint32_t len)
{
    if (f->nitems >= f->nkeys)
        return WN_EPROTO; /* more elements than keys asked */
    redis_item_t *it = &f->split->items[f->split->frag_first[f->frag] + f->nitems++];
    it->seg_first = f->r.rsp.n;
    int rc = frag_push(f, b, pos, len, true);
    it->nsegs = f->r.swallow ? 0 : f->r.rsp.n - it->seg_first; /* (let go: nothing kept) */
    return rc;
}

static void item_grew(redis_req_t *f)
{
    if (f->nitems > 0 && !f->r.swallow) {
        redis_item_t *it = &f->split->items[f->split->frag_first[f->frag] + f->nitems - 1];
        it->nsegs = f->r.rsp.n - it->seg_first;
    }
}

/*
 * One reply line for a fragment. Its sub-command always answers one shape
 * (MGET: an array of as many strings or nulls as keys; DEL and the like: an
 * integer; MSET: +OK) or an error: any other reply is not its own but one
 * shifted onto it, a protocol error.
 */
static int fragment_line(redis_req_t *f, wn_buf_t *b, uint32_t pos,
                         const wn_resp_rsp_tok_t *tok)
{
    if (tok->depth == 0 && tok->type == '-') {
        f->error_reply = true;
        return frag_push(f, b, pos, tok->line_len, true);
    }
    switch (f->merge) {
    case RMERGE_ARRAY:
        if (tok->depth == 0)
            return tok->type == '*' && tok->number == (int64_t)f->nkeys ? 0 : WN_EPROTO;
        if (tok->depth != 1 || tok->type != '$')
            return WN_EPROTO; /* MGET's elements are strings or nulls */
        return start_item(f, b, pos, tok->line_len);
    case RMERGE_SUM:
        /* a count of this part's keys: anything else is not its reply (and
         * could overflow the sum) */
        if (tok->type != ':' || tok->number < 0 || tok->number > (int64_t)f->nkeys)
            return WN_EPROTO;
        f->split->sum += tok->number;
        return 0;
    case RMERGE_ALL: /* SCRIPT EXISTS: an array of one 0 or 1 per SHA1 */
        if (tok->depth == 0)
            return tok->type == '*' && tok->number == (int64_t)f->nkeys ? 0 : WN_EPROTO;
        if (tok->depth != 1 || tok->type != ':' || tok->number < 0 || tok->number > 1 ||
            f->nitems >= f->nkeys)
            return WN_EPROTO;
        f->split->yes[(size_t)f->frag * f->nkeys + f->nitems++] = (uint8_t)tok->number;
        return 0;
    case RMERGE_SAME: /* SCRIPT LOAD: one bulk, kept to compare and answer */
        return tok->depth == 0 && tok->type == '$' && tok->number >= 0
                   ? frag_push(f, b, pos, tok->line_len, true)
                   : WN_EPROTO;
    default: /* RMERGE_OK: exactly +OK (a +QUEUED, say, is no MSET's) */
        return tok->type == '+' && tok->done && tok->line_len == 5 &&
                       memcmp(b->data + pos, "+OK\r\n", 5) == 0
                   ? 0
                   : WN_EPROTO;
    }
}

/* MGET sent whole answers what its parts do: an array of one string or
 * null per key (or an error); anything else is another request's reply. */
static bool mget_shape_ok(const redis_req_t *rr, const wn_resp_rsp_tok_t *tok)
{
    if (tok->depth == 0)
        return tok->type == '-' || (tok->type == '*' && tok->number == (int64_t)rr->nargs - 1);
    return tok->depth == 1 && tok->type == '$';
}

/* The client's reply so far goes out while the rest is still to come. */
static void stream(req_t *r)
{
    if (r->kind == REQ_FORWARD && r->client != NULL)
        wn_client_stream(r->client, r);
}

/*
 * More of a long '+' or '-' line that came in pieces: its start went through
 * take_line's checks, and its bytes go where the start's went (a fragment
 * keeps an error line or an MGET element; nothing else of a fragment's).
 */
static int take_text_piece(redis_sconn_t *s, req_t *r, wn_buf_t *b, uint32_t pos,
                           const wn_resp_rsp_tok_t *tok)
{
    redis_req_t *rr = redis_req(r);
    int rc = 0;
    if (r->kind == REQ_FORWARD ||
        (r->kind == REQ_FRAGMENT && ((tok->depth == 0 && rr->error_reply) ||
                                     (tok->depth == 1 && rr->merge == RMERGE_ARRAY)))) {
        if (r->kind == REQ_FRAGMENT) {
            rc = frag_push(rr, b, pos, tok->line_len, false);
            item_grew(rr);
        } else {
            rc = wn_req_rsp_push(r, b, pos, tok->line_len, false);
        }
    }
    s->s.in.pos += tok->line_len;
    if (rc < 0)
        return rc;
    if (tok->done)
        complete_head(s, s->text_ok);
    else
        stream(r);
    return 0;
}

/*
 * -LOADING or -MASTERDOWN: the server cannot serve now, whether it answered a
 * whole command or a split command's part. A script's error is whatever the
 * script said, not the server's.
 */
static bool cannot_serve(const redis_req_t *rr, const char *line, const wn_resp_rsp_tok_t *tok)
{
    return tok->depth == 0 && tok->type == '-' &&
           (rr->cmd == NULL || rr->cmd->cls != WN_RCMD_SCRIPT) &&
           (starts(line + 1, tok->line_len - 1, "LOADING") ||
            starts(line + 1, tok->line_len - 1, "MASTERDOWN"));
}

static int take_line(redis_sconn_t *s, req_t *r, wn_buf_t *b, uint32_t pos,
                     const wn_resp_rsp_tok_t *tok)
{
    if (tok->cont)
        return take_text_piece(s, r, b, pos, tok);
    redis_req_t *rr = redis_req(r);
    const char *line = b->data + pos;
    int rc = 0;
    bool ok = true;
    if (r->kind == REQ_INTERNAL) {
        /* AUTH and SELECT answer a status or an error: anything else is
         * not their reply (shifted, or not a Redis server). */
        if (tok->depth != 0 || (tok->type != '+' && tok->type != '-'))
            return WN_EPROTO;
        ok = internal_reply(s, rr, line, tok);
    } else if (r->kind == REQ_FRAGMENT) {
        rc = fragment_line(rr, b, pos, tok);
    } else {
        /* A reply of a type its command never answers (an error aside) is
         * another request's: the connection's replies have shifted. */
        if (tok->depth == 0 && rr->reply_type != 0 && tok->type != rr->reply_type &&
            tok->type != '-')
            return WN_EPROTO;
        if (rr->cmd != NULL && rr->cmd->id == WN_RCMD_ID_MGET && !mget_shape_ok(rr, tok))
            return WN_EPROTO;
        rc = wn_req_rsp_push(r, b, pos, tok->line_len, false);
    }
    if (r->kind != REQ_INTERNAL && cannot_serve(rr, line, tok)) {
        /* Relayed as the server said it; health hears of it. */
        wn_ctl_server_failed(s->s.server, UV_EAGAIN);
        ok = false;
    }
    s->s.in.pos += tok->line_len;
    if (rc < 0)
        return rc;
    if (tok->type == '$' && tok->number >= 0) {
        s->data_left = tok->bulk_len + 2;
        s->done_after_data = tok->done;
        s->trailer[0] = s->trailer[1] = 0;
        return 0;
    }
    if (tok->partial) {
        s->text_ok = ok; /* for its last piece */
        stream(r);
    } else if (tok->done) {
        bool noauth = s->auth_refused && r->kind != REQ_INTERNAL && tok->depth == 0 &&
                      tok->type == '-' && starts(line, tok->line_len, "-NOAUTH");
        complete_head(s, ok);
        if (noauth)
            reauth_due(s);
    } else {
        stream(r); /* an array's header or element: integers flow as strings do */
    }
    return 0;
}

static int take_data(redis_sconn_t *s, req_t *r, wn_buf_t *b)
{
    uint32_t pos = s->s.in.pos;
    uint32_t take = (uint32_t)WN_MIN((uint64_t)(b->len - pos), s->data_left);
    bool keep = r->kind != REQ_INTERNAL &&
                (r->kind != REQ_FRAGMENT || redis_req(r)->merge == RMERGE_ARRAY ||
                 redis_req(r)->merge == RMERGE_SAME);
    if (keep && (r->kind == REQ_FRAGMENT ? frag_push(redis_req(r), b, pos, take, false)
                                         : wn_req_rsp_push(r, b, pos, take, false)) < 0)
        return WN_ENOMEM;
    if (r->kind == REQ_FRAGMENT)
        item_grew(redis_req(r));
    const char *d = b->data + pos;
    if (take >= 2) {
        s->trailer[0] = d[take - 2];
        s->trailer[1] = d[take - 1];
    } else if (take == 1) {
        s->trailer[0] = s->trailer[1];
        s->trailer[1] = d[0];
    }
    s->s.in.pos += take;
    s->data_left -= take;
    if (s->data_left > 0) {
        stream(r);
        return 0;
    }
    if (!wn_resp_crlf_ok(s->trailer[0], s->trailer[1]))
        return WN_EPROTO;
    if (s->done_after_data) {
        s->done_after_data = false;
        complete_head(s, true);
    } else {
        stream(r);
    }
    return 0;
}

/* redis-server's refusal past its maxclients (WN_RESP_FULL_LINE) at pos: 1
 * whole, -1 its start so far, 0 not. redis-server writes it before it reads
 * anything, so it can only be a connection's first reply (whatever its head
 * asked: a script's first reply that says the same is taken for it). */
static int server_full(const redis_sconn_t *s, const wn_buf_t *b, uint32_t pos)
{
    if (s->replied || s->data_left != 0 || s->rsp.depth != 0 || s->rsp.text != 0)
        return 0;
    return wn_full_line_at(b->data + pos, b->len - pos, WN_RESP_FULL_LINE,
                           sizeof(WN_RESP_FULL_LINE) - 1);
}

int wn_redis_server_parse(sconn_t *sc)
{
    redis_sconn_t *s = (redis_sconn_t *)sc;
    for (;;) {
        wn_buf_t *b = sc->in.buf;
        if (b == NULL || sc->in.pos == b->len)
            return 0;
        if (sc->fail_err != 0)
            return 0; /* failed here (a refused SELECT): nothing more is read */
        int full = server_full(s, b, sc->in.pos);
        if (full > 0)
            return WN_ESRVFULL; /* asked or not (a preconnected connection) */
        req_t *r = sc->head;
        if (r == NULL || r == sc->unsent)
            return full < 0 ? 0 : WN_EPROTO; /* bytes nobody asked for */
        int rc;
        if (s->data_left > 0) {
            rc = take_data(s, r, b);
        } else {
            uint32_t pos = sc->in.pos;
            wn_resp_rsp_tok_t tok;
            rc = wn_resp_reply_next(&s->rsp, b->data + pos, b->len - pos, &tok);
            if (rc == WN_EAGAIN)
                return 0;
            if (rc > 0)
                rc = take_line(s, r, b, pos, &tok);
        }
        if (rc < 0)
            return rc;
    }
}
