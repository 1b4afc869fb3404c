/*
 * worker/redis_client.c: RESP2 from clients. Frames multibulk requests one
 * line at a time and takes bulk payloads by count, so values travel by
 * reference however large; inline requests (`PING` from telnet) are turned
 * into the same multibulk form. Each argument's place is recorded, with its
 * value when walnut must read it (keys, local commands' args). A request
 * walnut answers itself with an error (unknown command, wrong arity, not
 * authenticated) has its remaining arguments read and dropped. A protocol
 * error gets redis-server's text, then the connection closes, as
 * redis-server does. Worker thread only; never writes or closes.
 */
#include "redis.h"

#include <stdlib.h>
#include <string.h>

static uint64_t client_id(client_t *c)
{
    /* Unique in the process: the worker in the top bits, its own count below
     * (each worker counts for itself: no counter is shared between threads). */
    return ((uint64_t)(uint32_t)c->w->id << 48) | (++c->w->next_client_id & 0xffffffffffffull);
}

void wn_redis_client_init(client_t *cl)
{
    redis_client_t *c = (redis_client_t *)cl;
    wn_resp_req_parser_init(&c->parser, NULL);
    c->authed = cl->pool->conf->redis_auth == NULL;
    wn_resp_req_parser_set_unauth(&c->parser, !c->authed);
    c->id = client_id(cl);
    c->born_ms = uv_now(&cl->w->loop);
}

static void drop_cur(redis_client_t *c)
{
    if (c->cur != NULL) {
        redis_req_t *r = c->cur;
        c->cur = NULL;
        /* It holds its place in the FIFO: answered with nothing, so the
         * replies before it still go out. */
        r->r.kind = REQ_LOCAL;
        r->r.noreply = true;
        wn_req_out_written(&r->r);
        wn_req_reply(&r->r, "", 0);
        wn_req_unref(&r->r);
    }
    c->data_left = 0;
    c->cur_swallow = false;
}

void wn_redis_client_deinit(client_t *cl)
{
    redis_client_t *c = (redis_client_t *)cl;
    drop_cur(c);
    if (c->pending != NULL) {
        wn_req_unref(&c->pending->r);
        c->pending = NULL;
    }
    free(c->client_name);
    c->client_name = NULL;
}

void wn_redis_client_eof(client_t *cl)
{
    /* A request that never arrived whole is dropped, never forwarded. */
    drop_cur((redis_client_t *)cl);
    cl->mid_request = false;
    cl->reading_queued = false;
}

bool wn_redis_client_has_pending(const client_t *cl)
{
    return ((const redis_client_t *)cl)->pending != NULL;
}

void wn_redis_client_read_plan(const client_t *cl, uint32_t *keep, uint64_t *ahead)
{
    wn_instream_plan(&cl->in, ((const redis_client_t *)cl)->data_left, keep, ahead);
}

/* No line walnut writes on its own is longer (refuse()'s are under 256). */
#define OWN_LINE_MAX 256

void wn_redis_reply(redis_req_t *r, const char *text, size_t len)
{
    /* Answered here, or failed before it was written: nothing of the
     * request goes to a server, so its bytes stop counting before the
     * answer's do. Counted on top of them, an error for a request near the
     * limit took the client past it: cut, not answered. */
    if (!r->r.sent && r->r.out.n > 0)
        wn_req_out_written(&r->r);
    /* An answer that still does not fit (an error showing a long argument,
     * beside what the request keeps): the limit's own line instead. */
    const client_t *c = wn_req_client(&r->r);
    if (c != NULL && len > OWN_LINE_MAX && c->held + len > c->pool->buffer_limit) {
        wn_redis_refuse_over_limit(r, true);
        return;
    }
    wn_req_reply(&r->r, text, len);
}

void wn_redis_refuse_over_limit(redis_req_t *r, bool reply)
{
    char line[160];
    int n = snprintf(line, sizeof(line),
                     reply ? "-ERR walnut: the reply would take the client past the pool's "
                             "client_buffer_limit (%llu bytes)\r\n"
                           : "-ERR walnut: the request is larger than the pool's "
                             "client_buffer_limit (%llu bytes)\r\n",
                     (unsigned long long)r->r.pool->buffer_limit);
    wn_stat_add(WN_PSTAT(r->r.pool, request_errors), 1);
    wn_redis_reply(r, line, n > 0 ? (size_t)n : 0);
}

/* A line walnut answers with, queued in order like any other reply. */
static void answer_line(redis_client_t *c, const char *text, size_t len, bool close_after)
{
    redis_req_t *r = (redis_req_t *)wn_req_create(c->c.pool, &c->c, REQ_LOCAL);
    if (r == NULL) {
        c->c.broken = true;
        wn_client_mark(&c->c);
        return;
    }
    wn_req_enqueue_client(&c->c, &r->r);
    r->r.close_after = close_after;
    wn_req_reply(&r->r, text, len);
    wn_req_unref(&r->r);
}

/* redis-server answers a protocol error and closes; so does walnut. */
static void protocol_error(redis_client_t *c, wn_resp_req_parser_t *p)
{
    char line[WN_RESP_REQERR_MAX];
    int n = wn_resp_req_error(p, line, sizeof(line));
    drop_cur(c);
    c->c.stop_parsing = true;
    c->c.in.pos = c->c.in.buf != NULL ? c->c.in.buf->len : 0;
    wn_stat_add(WN_PSTAT(c->c.pool, request_errors), 1);
    answer_line(c, line, n > 0 ? (size_t)n : 0, true);
}

/* An argument that would take its request past the client's buffer limit
 * (the client would be disconnected there, with no word): the rest of the
 * request is read and dropped, and it is answered with an error naming the
 * limit (wn_redis_local); the connection stays. */
static void refuse_over_limit(redis_client_t *c, redis_req_t *r)
{
    r->over_limit = true;
    c->cur_swallow = true;
    r->r.kind = REQ_LOCAL;
    wn_req_out_written(&r->r);
}

/* A "*N" line at b, pos: a request of N arguments begins. */
static bool start_request(redis_client_t *c, uint32_t nargs, wn_buf_t *b, uint32_t pos,
                          uint32_t line_len)
{
    redis_req_t *r = (redis_req_t *)wn_req_create(c->c.pool, &c->c, REQ_FORWARD);
    if (r == NULL)
        return false;
    wn_req_enqueue_client(&c->c, &r->r);
    if (wn_req_out_push(&r->r, b, pos, line_len) < 0) {
        wn_req_unref(&r->r);
        return false;
    }
    r->nargs = nargs;
    r->args = r->inl;
    r->args_cap = WN_REDIS_INLINE_ARGS;
    c->cur = r;
    c->name_len = 0;
    c->errargs_len = 0;
    c->nerrargs = 0;
    c->errshown = 0;
    c->errroom = 0;
    c->cur_swallow = false;
    return true;
}

/* ---- arguments ------------------------------------------------------------- */

/* Does walnut need to read argument i of the request (a key, a numkeys, a
 * local command's argument)? Values it only forwards are never copied. */
static bool arg_needed(const redis_req_t *r, uint32_t i)
{
    const wn_rcmd_t *cmd = r->cmd;
    if (cmd == NULL)
        return false;
    switch (cmd->cls) {
    case WN_RCMD_LOCAL:
        /* ECHO's and PING's argument goes back by reference (reply_arg) */
        return cmd->id != WN_RCMD_ID_ECHO && cmd->id != WN_RCMD_ID_PING;
    case WN_RCMD_MULTI_KEY:
        return i >= 1;
    case WN_RCMD_MULTI_KV:
        return i % 2 == 1;
    case WN_RCMD_EVERY_SERVER:
        return i == 1; /* the subcommand; a script goes by reference */
    default:
        break;
    }
    uint32_t first, last, step;
    if (wn_rcmd_key_range(cmd, r->nargs, &first, &last, &step) && i >= first && i <= last &&
        (i - first) % step == 0)
        return true;
    if (cmd->numkeys_at > 0 && i >= (uint32_t)cmd->numkeys_at) {
        /* numkeys itself, and the keys after it (numkeys is read by then);
         * the first of them whatever numkeys says: ZDIFF and its kind go by
         * it (a count of 0 is the server's to refuse), and a copy of it
         * not made when it came split over buffers read as a key too long */
        if (i <= (uint32_t)cmd->numkeys_at + 1)
            return true;
        const redis_arg_t *nk = &r->args[cmd->numkeys_at];
        uint64_t numkeys = 0;
        for (uint32_t k = 0; nk->val != NULL && k < nk->len && k < 10; k++)
            numkeys = numkeys * 10 + (uint64_t)(nk->val[k] - '0');
        return i - (uint32_t)cmd->numkeys_at <= numkeys;
    }
    return false;
}

int wn_redis_arg_pieces(const redis_req_t *r, uint32_t i, uint64_t from, uint64_t count,
                        redis_piece_fn fn, void *ctx)
{
    const redis_arg_t *a = &r->args[i];
    uint64_t skip = a->skip + from;
    for (uint32_t j = a->seg; j < a->seg + a->nsegs && count > 0; j++) {
        const seg_t *sg = &r->r.out.v[j];
        if (skip >= sg->len) {
            skip -= sg->len;
            continue;
        }
        uint32_t take = (uint32_t)WN_MIN((uint64_t)sg->len - skip, count);
        int rc = fn(ctx, sg->buf, sg->off + (uint32_t)skip, take);
        if (rc < 0)
            return rc;
        count -= take;
        skip = 0;
    }
    return 0;
}

typedef struct copy_ctx {
    char *dst;
} copy_ctx_t;

static int copy_piece(void *ctx, wn_buf_t *buf, uint32_t off, uint32_t len)
{
    copy_ctx_t *cc = ctx;
    memcpy(cc->dst, buf->data + off, len);
    cc->dst += len;
    return 0;
}

/* Make argument i's value readable: a pointer into its buffer when it lies
 * in one segment, else a copy walnut keeps (up to WN_REDIS_MAX_KEY bytes). */
static void settle_value(redis_req_t *r, uint32_t i)
{
    redis_arg_t *a = &r->args[i];
    a->val = NULL;
    const seg_t *sg = &r->r.out.v[a->seg];
    if ((uint64_t)sg->len >= (uint64_t)a->skip + a->hdr + a->len) {
        a->val = sg->buf->data + sg->off + a->skip + a->hdr;
        return;
    }
    if (!arg_needed(r, i) || a->len > WN_REDIS_MAX_KEY)
        return;
    char *copy = wn_scratch_alloc(r->r.pool->w, &r->r.keep, a->len);
    if (copy == NULL)
        return;
    wn_req_hold(&r->r, a->len);
    copy_ctx_t cc = {copy};
    wn_redis_arg_pieces(r, i, a->hdr, a->len, copy_piece, &cc);
    a->val = copy;
}

/* Arg 0 is in: which command, and will walnut answer it itself? */
static void command_known(redis_client_t *c, redis_req_t *r)
{
    r->cmd = c->name_len < WN_REDIS_NAME_MAX ? wn_rcmd_lookup(c->name, c->name_len) : NULL;
    const wn_rcmd_t *cmd = r->cmd;
    r->reply_type = cmd != NULL ? wn_rcmd_reply_type(cmd, r->nargs) : 0;
    bool answered_here = cmd == NULL || !wn_rcmd_argc_ok(cmd, r->nargs) ||
                         cmd->cls == WN_RCMD_UNSUPPORTED || wn_redis_needs_auth(c, cmd) ||
                         c->tx_refused; /* the body of a refused transaction runs nowhere */
    wn_stat_add(&c->c.pool->stats->cmds[cmd != NULL ? cmd->id : WN_RCMD_STAT_UNKNOWN], 1);
    if (answered_here && !c->cur_swallow) {
        /* Read the rest and drop it: nothing of it is forwarded. */
        c->cur_swallow = true;
        r->r.kind = REQ_LOCAL;
        wn_req_out_written(&r->r);
    }
}

/*
 * Keep what redis-server's unknown-command error shows of the arguments
 * (n bytes at p of the current one; first_bytes: it begins here). It appends
 * "'<arg>' " per arg while its text is under 128 bytes, each arg shown up to
 * a NUL and to what is left of those 128: so all shown args together hold at
 * most 128 bytes, in at most 43 args.
 */
static void keep_errarg(redis_client_t *c, const char *p, uint32_t n, bool first_bytes)
{
    if (first_bytes) {
        c->errroom = 0;
        if (c->errshown >= WN_RESP_UNKNOWN_ARG_BYTES || c->nerrargs >= WN_RESP_UNKNOWN_ARGS)
            return; /* redis-server shows no more args */
        c->errroom = WN_RESP_UNKNOWN_ARG_BYTES - c->errshown;
        c->errarg_len[c->nerrargs++] = 0;
        c->errshown += 3; /* the quotes and the space */
    }
    uint32_t take = WN_MIN(n, c->errroom);
    take = WN_MIN(take, (uint32_t)sizeof(c->errargs) - c->errargs_len);
    const char *nul = memchr(p, '\0', take);
    if (nul != NULL)
        take = (uint32_t)(nul - p);
    memcpy(c->errargs + c->errargs_len, p, take);
    c->errargs_len += take;
    c->errarg_len[c->nerrargs - 1] += (uint8_t)take;
    c->errshown += take;
    c->errroom = nul != NULL ? 0 : c->errroom - take; /* a NUL ends what is shown */
}

static void request_done(redis_client_t *c);

/* The bytes after an argument's payload are in: check them, settle it. */
static bool arg_done(redis_client_t *c, wn_resp_req_parser_t *p)
{
    if (wn_resp_request_bulk_end(p, c->trailer[0], c->trailer[1]) < 0) {
        protocol_error(c, p);
        return false;
    }
    redis_req_t *r = c->cur;
    uint32_t i = r->got++;
    if (i == 0) {
        command_known(c, r);
    } else if (!c->cur_swallow) {
        r->args[i].nsegs = r->r.out.n - r->args[i].seg;
        settle_value(r, i);
    }
    if (r->got == r->nargs)
        request_done(c);
    return true;
}

/*
 * Room for one more argument: the array (r.owned once past the inline ones)
 * doubles, up to the request's count, as arguments arrive, so what it takes
 * follows what the client sent, not what its "*N" line announced. Counted
 * against the client as it grows.
 */
static uint32_t args_next_cap(const redis_req_t *r)
{
    return WN_MIN(r->nargs, WN_MAX(r->args_cap * 2, 64u));
}

static uint64_t args_growth(const redis_req_t *r)
{
    return sizeof(redis_arg_t) * (uint64_t)(args_next_cap(r) - r->args_cap);
}

static bool args_grow(redis_req_t *r)
{
    uint32_t cap = args_next_cap(r);
    redis_arg_t *args = realloc(r->r.owned, sizeof(redis_arg_t) * cap);
    if (args == NULL)
        return false;
    if (r->r.owned == NULL)
        memcpy(args, r->inl, sizeof(r->inl));
    wn_req_hold(&r->r, sizeof(redis_arg_t) * (cap - r->args_cap));
    r->r.owned = r->args = args;
    r->r.owned_size = (uint32_t)(sizeof(redis_arg_t) * cap);
    r->args_cap = cap;
    return true;
}

/* A "$len" line of argument tok->arg (its bytes at b, pos). */
static bool start_arg(redis_client_t *c, wn_buf_t *b, uint32_t pos, const wn_resp_req_tok_t *tok)
{
    redis_req_t *r = c->cur;
    c->data_left = tok->bulk_len + 2;
    c->trailer[0] = c->trailer[1] = 0;
    if (r->over_limit)
        return true; /* read and dropped: nothing of it is kept */
    c->arg_start = true;
    if (c->cur_swallow)
        return true; /* answered here: nothing of it is kept, not even its place */
    bool grow = tok->arg >= r->args_cap;
    /* What it will hold with this argument: its line, its bytes, the
     * array's growth, and a copy of it if it is one walnut reads (a key)
     * and it is split over buffers (settle_value). Which arguments walnut
     * reads is asked only near the limit: it costs more than the sum. */
    uint64_t need = r->r.acct + tok->line_len + tok->bulk_len + 2 + (grow ? args_growth(r) : 0);
    uint64_t limit = c->c.pool->buffer_limit;
    if (need + WN_MIN(tok->bulk_len, WN_REDIS_MAX_KEY) > limit &&
        (need > limit || arg_needed(r, tok->arg))) {
        refuse_over_limit(c, r);
        return true;
    }
    if (grow && !args_grow(r))
        return false;
    redis_arg_t *a = &r->args[tok->arg];
    a->len = (uint32_t)WN_MIN(tok->bulk_len, UINT32_MAX);
    a->val = NULL;
    a->hdr = tok->line_len;
    a->nsegs = 0;
    /* Joins the segment of the bytes before it when it follows them in the
     * same buffer: a request read whole is one segment. */
    if (wn_req_out_push(&r->r, b, pos, tok->line_len) < 0)
        return false;
    a->seg = r->r.out.n - 1;
    a->skip = r->r.out.v[a->seg].len - tok->line_len;
    return true;
}

/* Payload bytes of the current argument at b[pos..pos+avail). */
static uint32_t take_payload(redis_client_t *c, wn_resp_req_parser_t *p, wn_buf_t *b,
                             uint32_t pos, uint32_t avail)
{
    redis_req_t *r = c->cur;
    uint32_t take = (uint32_t)WN_MIN((uint64_t)avail, c->data_left);
    const char *d = b->data + pos;
    uint64_t payload_left = c->data_left > 2 ? c->data_left - 2 : 0;
    uint32_t payload = (uint32_t)WN_MIN((uint64_t)take, payload_left);
    if (r->got == 0) {
        uint32_t room = WN_REDIS_NAME_MAX - c->name_len;
        memcpy(c->name + c->name_len, d, WN_MIN(payload, room));
        c->name_len += WN_MIN(payload, room);
    } else if (r->cmd == NULL && !r->over_limit) {
        keep_errarg(c, d, payload, c->arg_start);
    }
    c->arg_start = false;
    if (!c->cur_swallow && wn_req_out_push(&r->r, b, pos, take) < 0) {
        c->c.broken = true;
        wn_client_mark(&c->c);
        return take;
    }
    if (take >= 2) {
        c->trailer[0] = d[take - 2];
        c->trailer[1] = d[take - 1];
    } else if (take == 1) {
        c->trailer[0] = c->trailer[1];
        c->trailer[1] = d[0];
    }
    c->data_left -= take;
    if (c->data_left == 0)
        arg_done(c, p);
    return take;
}

/* ---- inline requests: the same request in multibulk form ------------------ */

static void inline_request(redis_client_t *c, const char *line, const wn_resp_req_tok_t *tok)
{
    /* Compose "*N\r\n$len\r\narg\r\n..." into a buffer of its own, sized
     * to it, and play it: the request's segments keep the buffer until it
     * is written, and only the bytes are counted, so a pooled chunk (16
     * KiB for a 20-byte GET) would hold 800 times what the client's bound
     * sees while a server does not read. */
    size_t size = WN_RESP_ARRAY_HEAD_MAX;
    uint32_t cursor = 0;
    wn_resp_inline_arg_t arg;
    while (wn_resp_inline_next(line, tok, &cursor, &arg))
        size += WN_RESP_BULK_HEAD_MAX + arg.len + 2;
    wn_buf_t *mb = wn_buf_get_exact(&c->c.w->bufs, size);
    if (mb == NULL) {
        c->c.broken = true;
        wn_client_mark(&c->c);
        return;
    }
    int n = wn_resp_array_head(mb->data, size, tok->nargs);
    mb->len = (uint32_t)n;
    cursor = 0;
    while (wn_resp_inline_next(line, tok, &cursor, &arg)) {
        mb->len += (uint32_t)wn_resp_bulk_head(mb->data + mb->len, size - mb->len, arg.len);
        mb->len += (uint32_t)wn_resp_inline_unescape(line, &arg, mb->data + mb->len);
        memcpy(mb->data + mb->len, "\r\n", 2);
        mb->len += 2;
    }
    wn_resp_req_parser_t p;
    wn_resp_req_parser_init(&p, NULL);
    uint32_t pos = 0;
    while (pos < mb->len && !c->c.stop_parsing) {
        if (c->data_left > 0) {
            pos += take_payload(c, &p, mb, pos, mb->len - pos);
            continue;
        }
        wn_resp_req_tok_t t;
        int rc = wn_resp_request_next(&p, mb->data + pos, mb->len - pos, &t);
        if (rc <= 0)
            break; /* cannot happen: walnut composed it */
        if (t.type == WN_RESP_REQ_ARRAY && !start_request(c, t.nargs, mb, pos, t.line_len)) {
            c->c.broken = true;
            wn_client_mark(&c->c);
            break;
        }
        if (t.type == WN_RESP_REQ_BULK && !start_arg(c, mb, pos, &t)) {
            c->c.broken = true; /* out of memory, as in the parse loop */
            wn_client_mark(&c->c);
            break;
        }
        pos += (uint32_t)rc;
    }
    wn_buf_unref(mb);
}

/* ---- the parse loop ------------------------------------------------------- */

static void request_done(redis_client_t *c)
{
    redis_req_t *r = c->cur;
    c->cur = NULL;
    bool swallowed = c->cur_swallow;
    c->cur_swallow = false;
    if (swallowed || r->r.kind == REQ_LOCAL) {
        wn_redis_local(c, r); /* errors and local commands */
        wn_req_unref(&r->r);
        return;
    }
    if (!wn_redis_dispatch(c, r)) {
        c->pending = r; /* held: dispatched again when the hold ends */
        return;
    }
    wn_req_unref(&r->r);
}

void wn_redis_client_parse(client_t *cl)
{
    redis_client_t *c = (redis_client_t *)cl;
    for (;;) {
        /* A request held for control's verdict was read whole: when the
         * hold ends it goes out whatever the client's soft bounds say (one
         * larger than they are would wait for itself forever). */
        cl->mid_request = c->cur != NULL || c->pending != NULL;
        cl->reading_queued = c->cur != NULL; /* queued at its *N line */
        if (!wn_client_can_parse(cl))
            break;
        if (!c->authed && cl->pool->conf->redis_auth == NULL) {
            /* A reload took the pool's redis_auth away: nothing to pass now,
             * as on a redis-server whose requirepass is removed (review: such
             * a client was refused for good). */
            c->authed = true;
            wn_resp_req_parser_set_unauth(&c->parser, false);
        }
        if (c->pending != NULL) {
            redis_req_t *r = c->pending;
            c->pending = NULL;
            if (!wn_redis_dispatch(c, r)) {
                c->pending = r;
                break;
            }
            wn_req_unref(&r->r);
            continue;
        }
        wn_buf_t *b = cl->in.buf;
        if (b == NULL || cl->in.pos == b->len)
            break;
        uint32_t pos = cl->in.pos;
        if (c->data_left > 0) {
            cl->in.pos += take_payload(c, &c->parser, b, pos, b->len - pos);
            continue;
        }
        wn_resp_req_tok_t tok;
        int rc = wn_resp_request_next(&c->parser, b->data + pos, b->len - pos, &tok);
        if (rc == WN_EAGAIN) {
            cl->mid_request = true;
            break;
        }
        if (rc < 0) {
            protocol_error(c, &c->parser);
            break;
        }
        cl->in.pos += tok.line_len;
        switch (tok.type) {
        case WN_RESP_REQ_EMPTY:
            break;
        case WN_RESP_REQ_INLINE:
            wn_stat_add(WN_PSTAT(cl->pool, requests), 1);
            inline_request(c, b->data + pos, &tok);
            break;
        case WN_RESP_REQ_ARRAY:
            wn_stat_add(WN_PSTAT(cl->pool, requests), 1);
            if (!start_request(c, tok.nargs, b, pos, tok.line_len)) {
                cl->broken = true;
                wn_client_mark(cl);
                return;
            }
            break;
        case WN_RESP_REQ_BULK:
            if (!start_arg(c, b, pos, &tok)) {
                cl->broken = true;
                wn_client_mark(cl);
                return;
            }
            break;
        }
    }
}
