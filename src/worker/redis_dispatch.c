/*
 * worker/redis_dispatch.c: where a complete Redis request goes. Commands
 * with a key go to its server unchanged (bytes by reference); MGET, DEL,
 * UNLINK, TOUCH, EXISTS and MSET whose keys live on several servers are split
 * into one sub-command per server, keys in their relative order; commands
 * that must see all their keys on one server (MSETNX, RENAME, ...) are
 * forwarded when they do and refused when they do not; keyless commands
 * (COMMAND, LOLWUT, a script without keys in a pool of one server) go to
 * the server of the key "placeholder", as in twemproxy; SCRIPT LOAD, EXISTS
 * and FLUSH go to every live server; local ones are answered in
 * redis_local.c. The request being dispatched holds a reference; nothing
 * here writes. Worker thread only.
 */
#include "redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wn_redis_forward(client_t *c, server_rt_t *s, req_t *r)
{
    if (s == NULL)
        wn_redis_fail(r, WN_ENOSERVER);
    else if (s->noauth_until_ms != 0 && uv_now(&c->w->loop) < s->noauth_until_ms)
        wn_redis_fail(r, WN_ENOAUTH); /* redis_server.c: tried again after a while */
    else if (wn_server_enqueue(s, c->slot, r) < 0)
        wn_redis_fail(r, WN_ENOMEM);
}

/* Answer r with "-ERR <a><b><c>\r\n" (walnut's own refusals). */
static void refuse(redis_req_t *r, const char *a, const char *b, const char *c)
{
    char line[256];
    int n = snprintf(line, sizeof(line), "-ERR %s%s%s\r\n", a, b, c);
    if (n < 0 || (size_t)n >= sizeof(line)) { /* cut, still one line */
        n = (int)sizeof(line) - 1;
        memcpy(line + n - 2, "\r\n", 2);
    }
    wn_stat_add(WN_PSTAT(r->r.pool, request_errors), 1);
    wn_redis_reply(r, line, (size_t)n);
}

/* The server of argument i, a key; NULL with *bad set when it is too long
 * to route (or nothing is live: *bad stays false). The length decides, not
 * whether the key was copied: a long key that arrived in one buffer chunk
 * (-m over 64 KiB) is readable in place, and was routed. */
static server_rt_t *key_server(redis_req_t *r, uint32_t i, bool *bad)
{
    const redis_arg_t *a = &r->args[i];
    if (a->val == NULL || a->len > WN_REDIS_MAX_KEY) {
        *bad = true;
        return NULL;
    }
    return wn_pool_route(r->r.pool, a->val, a->len);
}

/* Forward r whole to s, unless s is suspect (then c waits: false). */
static bool forward_whole(redis_client_t *c, redis_req_t *r, server_rt_t *s)
{
    if (s != NULL && wn_server_is_suspect(s) && wn_ctl_hold(&c->c, s))
        return false;
    wn_redis_forward(&c->c, s, &r->r);
    return true;
}

static bool too_long(redis_req_t *r)
{
    refuse(r, "key too long: walnut routes keys of up to ", "65536", " bytes");
    return true;
}

/* numkeys of a script-like command, read as twemproxy reads it (digits,
 * leading zeros too: a count redis-server refuses still routes as there);
 * -1 when it is no number. */
static int64_t numkeys(const redis_req_t *r)
{
    const redis_arg_t *a = &r->args[r->cmd->numkeys_at];
    if (a->val == NULL || a->len == 0 || a->len > 10)
        return -1;
    int64_t n = 0;
    for (uint32_t i = 0; i < a->len; i++) {
        if (a->val[i] < '0' || a->val[i] > '9')
            return -1;
        n = n * 10 + (a->val[i] - '0');
    }
    return n;
}

/* The positions of r's keys: *first, every *step up to *last. */
static bool key_positions(const redis_req_t *r, uint32_t *first, uint32_t *last, uint32_t *step)
{
    const wn_rcmd_t *cmd = r->cmd;
    if (cmd->numkeys_at > 0 && cmd->first_key <= 0) {
        int64_t nk = numkeys(r);
        if (nk <= 0 || (uint64_t)cmd->numkeys_at + (uint64_t)nk >= r->nargs)
            return false;
        *first = (uint32_t)cmd->numkeys_at + 1;
        *last = *first + (uint32_t)nk - 1;
        *step = 1;
        return true;
    }
    return wn_rcmd_key_range(cmd, r->nargs, first, last, step);
}

/* ---- splitting ------------------------------------------------------------- */

/* The split's bookkeeping, kept by r. A request held (a suspect server)
 * and dispatched again reuses what it made the first time. */
static size_t split_size(uint32_t nkeys, uint32_t nservers)
{
    uint32_t maxf = WN_MIN(nkeys, nservers);
    return sizeof(redis_split_t) + sizeof(uint32_t) * (2 * (size_t)nkeys + maxf + 1 + nservers) +
           sizeof(redis_item_t) * nkeys;
}

/* Bookkeeping of `size` bytes for r (a split's, SCRIPT EXISTS's table)
 * and `more` bytes besides (a split's parts' heads) leave it within its
 * client's limit; the bookkeeping may be there already (`reusable`,
 * counted when made). Else the command is refused, not the client cut. */
static bool bookkeeping_fits(const redis_req_t *r, bool reusable, size_t size, size_t more)
{
    return r->r.acct + (reusable ? 0 : size) + more <= r->r.pool->buffer_limit;
}

/* The most a part's head ("*<n>\r\n$<len>\r\n<name>\r\n") takes (fragment_new). */
#define FRAG_HEAD_MAX (WN_RESP_ARRAY_HEAD_MAX + WN_RESP_BULK_HEAD_MAX + 32)

/* r's bookkeeping from an earlier try (held for a suspect server) fits
 * this one: it is used again, not made (and counted) anew. */
static bool split_reusable(const redis_req_t *r, uint32_t nkeys, uint32_t nservers)
{
    return r->split != NULL && r->split->nkeys == nkeys && r->split->nservers == nservers;
}

static redis_split_t *split_alloc(redis_req_t *r, uint32_t nkeys, uint32_t nservers)
{
    redis_split_t *s = r->split;
    if (!split_reusable(r, nkeys, nservers)) {
        size_t size = split_size(nkeys, nservers);
        s = wn_scratch_alloc(r->r.pool->w, &r->r.keep, size);
        if (s == NULL)
            return NULL;
        wn_req_hold(&r->r, size);
        r->split = s;
    }
    memset(s, 0, sizeof(*s));
    s->nservers = nservers;
    char *m = (char *)(s + 1);
    s->items = (redis_item_t *)m;
    m += sizeof(redis_item_t) * nkeys;
    s->key_frag = (uint32_t *)m;
    s->frag_keys = s->key_frag + nkeys;
    s->frag_first = s->frag_keys + nkeys;
    s->nkeys = nkeys;
    return s;
}

/* Route each key (at positions first + k * step, with `per` args each);
 * fill key_frag; where[f] is fragment f's server. -1: a key too long. */
static int route_keys(redis_req_t *r, redis_split_t *s, uint32_t first, uint32_t step,
                      uint32_t *fos, server_rt_t **where)
{
    pool_rt_t *pool = r->r.pool;
    for (uint32_t i = 0; i < pool->nservers; i++)
        fos[i] = UINT32_MAX;
    for (uint32_t k = 0; k < s->nkeys; k++) {
        bool bad = false;
        server_rt_t *srv = key_server(r, first + k * step, &bad);
        if (bad)
            return -1;
        if (srv == NULL)
            return 0;
        if (fos[srv->idx] == UINT32_MAX) {
            where[s->nfrags] = srv;
            fos[srv->idx] = s->nfrags++;
        }
        s->key_frag[k] = fos[srv->idx];
    }
    return 1;
}

static int out_piece(void *ctx, wn_buf_t *buf, uint32_t off, uint32_t len)
{
    return wn_req_out_push(ctx, buf, off, len);
}

static int out_piece_shared(void *ctx, wn_buf_t *buf, uint32_t off, uint32_t len)
{
    return wn_req_out_push_shared(ctx, buf, off, len);
}

/* Push argument i's bytes (header, payload, CRLF) onto fragment f's out. */
static int push_arg(redis_req_t *p, redis_req_t *f, uint32_t i)
{
    return wn_redis_arg_pieces(p, i, 0, wn_redis_arg_bytes(&p->args[i]),
                               f->r.out_shared ? out_piece_shared : out_piece, &f->r);
}

/* Fragment f of p, answering nkeys elements (keys, or SHA1s), tied to p,
 * with its head "*<nargs+1>\r\n$<len>\r\n<name>\r\n"; a copy's bytes are
 * counted by p (shared). NULL: out of memory (p frees what was made). */
static redis_req_t *fragment_new(redis_req_t *p, uint32_t f, uint32_t nkeys, uint32_t nargs,
                                 bool shared)
{
    redis_req_t *fr = (redis_req_t *)wn_req_create(p->r.pool, NULL, REQ_FRAGMENT);
    if (fr == NULL)
        return NULL;
    fr->cmd = p->cmd;
    fr->merge = p->merge;
    fr->split = p->split;
    fr->frag = f;
    fr->nkeys = nkeys;
    wn_req_ref(&p->r);
    fr->r.parent = &p->r;
    p->r.frags[f] = &fr->r;
    char head[FRAG_HEAD_MAX];
    int n = wn_resp_compose_cmd_head(head, sizeof(head), p->cmd->name, strlen(p->cmd->name), nargs);
    if (n < 0)
        return NULL;
    int rc = shared ? wn_req_out_scratch_shared(&fr->r, head, (size_t)n)
                    : wn_req_out_scratch(&fr->r, head, (size_t)n);
    return rc == 0 ? fr : NULL;
}

/* Fragment f of a split: its keys' arguments (with their values for MSET:
 * `per` args from each key on). */
static int make_fragment(redis_req_t *p, uint32_t f, uint32_t first, uint32_t step, uint32_t per)
{
    const redis_split_t *s = p->split;
    uint32_t nkeys = s->frag_first[f + 1] - s->frag_first[f];
    redis_req_t *fr = fragment_new(p, f, nkeys, nkeys * per, false);
    if (fr == NULL)
        return WN_ENOMEM;
    for (uint32_t j = s->frag_first[f]; j < s->frag_first[f + 1]; j++) {
        uint32_t at = first + s->frag_keys[j] * step;
        for (uint32_t k = 0; k < per; k++) {
            int rc = push_arg(p, fr, at + k);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

static bool split_send(redis_client_t *c, redis_req_t *r, redis_split_t *s, server_rt_t **where,
                       uint32_t *scratch, uint32_t first, uint32_t step, uint32_t per)
{
    for (uint32_t f = 0; f < s->nfrags; f++)
        if (wn_server_is_suspect(where[f]) && wn_ctl_hold(&c->c, where[f]))
            return false;
    wn_split_group(s->key_frag, s->nkeys, s->nfrags, s->frag_first, scratch, s->frag_keys);
    r->r.kind = REQ_PARENT;
    r->split = s;
    wn_req_out_uncount(&r->r); /* the fragments count the bytes: not twice */
    if (wn_req_frags_alloc(&r->r, s->nfrags) < 0) {
        wn_redis_fail(&r->r, WN_ENOMEM);
        return true;
    }
    for (uint32_t f = 0; f < s->nfrags; f++) {
        if (make_fragment(r, f, first, step, per) < 0) {
            wn_redis_fail(&r->r, WN_ENOMEM);
            return true;
        }
    }
    r->r.frags_left = s->nfrags;
    wn_stat_add(WN_PSTAT(c->c.pool, fragments), s->nfrags);
    /* The fragments hold the arguments' bytes now. */
    wn_req_out_written(&r->r);
    for (uint32_t f = 0; f < s->nfrags && r->r.frags[f] != NULL; f++)
        wn_redis_forward(&c->c, where[f], r->r.frags[f]);
    return true;
}

/* MGET DEL UNLINK TOUCH EXISTS MSET: keys from `first` on, `per` args each. */
static bool dispatch_split(redis_client_t *c, redis_req_t *r, uint32_t per, redis_merge_t merge)
{
    pool_rt_t *pool = c->c.pool;
    uint32_t first = 1, nkeys = (r->nargs - 1) / per;
    if (nkeys > WN_REDIS_MAX_KEYS) {
        refuse(r, "too many keys: walnut splits up to ", "1000000", " keys");
        return true;
    }
    /* Its bookkeeping would take it past the limit (the client would be
     * cut with no word): refused. Also when made again after a hold, for a
     * reload that changed the server count meanwhile. */
    if (!bookkeeping_fits(r, split_reusable(r, nkeys, pool->nservers),
                          split_size(nkeys, pool->nservers),
                          (size_t)WN_MIN(nkeys, pool->nservers) * FRAG_HEAD_MAX)) {
        wn_redis_refuse_over_limit(r, false);
        return true;
    }
    uint32_t maxf = WN_MIN(nkeys, pool->nservers);
    redis_split_t *s = split_alloc(r, nkeys, pool->nservers);
    server_rt_t *where_inl[16];
    server_rt_t **where = maxf <= 16 ? where_inl : malloc(sizeof(*where) * maxf);
    if (s == NULL || where == NULL) {
        if (where != where_inl)
            free(where); /* NULL, or allocated while s was not */
        wn_redis_fail(&r->r, WN_ENOMEM);
        return true;
    }
    uint32_t *fos = s->frag_first + maxf + 1;
    r->merge = (uint8_t)merge;
    int routed = route_keys(r, s, first, per, fos, where);
    bool sent = true;
    if (routed < 0)
        sent = too_long(r);
    else if (routed == 0)
        wn_redis_forward(&c->c, NULL, &r->r);
    else if (s->nfrags == 1)
        sent = forward_whole(c, r, where[0]); /* one server: as the client sent it */
    else
        sent = split_send(c, r, s, where, fos, first, per, per);
    if (where != where_inl)
        free(where);
    return sent;
}

/* ---- every server ----------------------------------------------------------- */

/* Fragment f of p: p as the client sent it, for one of the servers (SCRIPT
 * EXISTS: p->split counts the answers). Its bytes are p's: p's count covers
 * them until the last copy is written. */
static int make_copy(redis_req_t *p, uint32_t f)
{
    redis_req_t *fr =
        fragment_new(p, f, p->split != NULL ? p->split->nkeys : 0, p->nargs - 1, true);
    if (fr == NULL)
        return WN_ENOMEM;
    for (uint32_t i = 1; i < p->nargs; i++) {
        int rc = push_arg(p, fr, i);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* SCRIPT EXISTS's table: for each of its n SHA1s, what each of nf servers
 * said (kept apart, so a server that fails half-way through its reply
 * leaves no trace in the answer). */
static size_t counts_size(uint32_t n, uint32_t nf)
{
    return sizeof(redis_split_t) + (size_t)n * nf;
}

static bool counts_reusable(const redis_req_t *r, uint32_t n, uint32_t nf)
{
    const redis_split_t *s = r->split;
    return s != NULL && s->yes != NULL && s->nkeys == n && s->nfrags == nf;
}

/* The table made (or kept from before a hold) and counted; false: no memory. */
static bool counts_alloc(redis_req_t *r, uint32_t n, uint32_t nf)
{
    redis_split_t *s = r->split;
    size_t size = counts_size(n, nf);
    if (!counts_reusable(r, n, nf)) { /* else made before a hold */
        s = wn_scratch_alloc(r->r.pool->w, &r->r.keep, size);
        if (s == NULL)
            return false;
        wn_req_hold(&r->r, size);
    }
    memset(s, 0, size);
    s->nkeys = n;
    s->nfrags = nf;
    s->yes = (uint8_t *)(s + 1);
    r->split = s;
    return true;
}

/* r to each of the nf servers in where, answered once all have. */
static bool send_to_all(redis_client_t *c, redis_req_t *r, server_rt_t **where, uint32_t nf)
{
    for (uint32_t f = 0; f < nf; f++)
        if (wn_server_is_suspect(where[f]) && wn_ctl_hold(&c->c, where[f]))
            return false;
    r->r.kind = REQ_PARENT;
    if (wn_req_frags_alloc(&r->r, nf) < 0) {
        wn_redis_fail(&r->r, WN_ENOMEM);
        return true;
    }
    for (uint32_t f = 0; f < nf; f++) {
        if (make_copy(r, f) < 0) {
            wn_redis_fail(&r->r, WN_ENOMEM);
            return true;
        }
    }
    r->r.frags_left = nf;
    /* r keeps its bytes, and its count, until the last copy is written */
    r->r.copies_left = nf;
    wn_stat_add(WN_PSTAT(c->c.pool, fragments), nf);
    for (uint32_t f = 0; f < nf && r->r.frags[f] != NULL; f++)
        wn_redis_forward(&c->c, where[f], r->r.frags[f]);
    return true;
}

/*
 * SCRIPT LOAD, EXISTS and FLUSH go to every live server: EVALSHA goes to
 * its key's server, which must have the script (redis-py's Script and Lock
 * load it this way after a NOSCRIPT; its pipelines ask EXISTS first). LOAD
 * is answered with the SHA1 they all gave, EXISTS with 1 for a script every
 * server has, FLUSH with +OK; an error reply answers the whole command, and
 * so does a server walnut cannot reach, except for LOAD and EXISTS when
 * another server answered (redis_merge.c). KILL and DEBUG are refused
 * (they are about one server); other subcommands (HELP, a wrong one, a
 * wrong count) get one server's answer.
 */
static bool dispatch_every_server(redis_client_t *c, redis_req_t *r)
{
    pool_rt_t *pool = c->c.pool;
    if (wn_redis_arg_is(r, 1, "LOAD") && r->nargs == 3)
        r->merge = RMERGE_SAME;
    else if (wn_redis_arg_is(r, 1, "FLUSH") && r->nargs <= 3)
        r->merge = RMERGE_OK;
    else if (wn_redis_arg_is(r, 1, "EXISTS") && r->nargs >= 3)
        r->merge = RMERGE_ALL;
    else if (wn_redis_arg_is(r, 1, "KILL") || wn_redis_arg_is(r, 1, "DEBUG")) {
        refuse(r, "unsupported command 'script ", wn_redis_arg_is(r, 1, "KILL") ? "kill" : "debug",
               "': it is about one server (walnut sends SCRIPT LOAD, EXISTS and FLUSH to every "
               "server)");
        return true;
    } else {
        return forward_whole(c, r, wn_pool_route(pool, "placeholder", 11));
    }
    uint32_t n = WN_MIN(pool->nservers, wn_ring_nservers(pool->ring)), nf = 0;
    bool live_inl[16];
    server_rt_t *where_inl[16];
    bool *live = n <= 16 ? live_inl : malloc(sizeof(*live) * n);
    server_rt_t **where = n <= 16 ? where_inl : malloc(sizeof(*where) * n);
    bool sent = true;
    if (live == NULL || where == NULL) {
        wn_redis_fail(&r->r, WN_ENOMEM);
    } else {
        wn_ring_live(pool->ring, live, n);
        for (uint32_t i = 0; i < n; i++)
            if (live[i])
                where[nf++] = pool->servers[i];
        if (nf == 0)
            wn_redis_fail(&r->r, WN_ENOSERVER);
        else if (nf == 1)
            sent = forward_whole(c, r, where[0]);
        else if (r->merge == RMERGE_ALL &&
                 !bookkeeping_fits(r, counts_reusable(r, r->nargs - 2, nf),
                                   counts_size(r->nargs - 2, nf), 0))
            wn_redis_refuse_over_limit(r, false);
        else if (r->merge == RMERGE_ALL && !counts_alloc(r, r->nargs - 2, nf))
            wn_redis_fail(&r->r, WN_ENOMEM);
        else
            sent = send_to_all(c, r, where, nf);
    }
    if (live != live_inl)
        free(live);
    if (where != where_inl)
        free(where);
    return sent;
}

/* MSETNX, RENAME, ...: forwarded when every key is on one server. */
static bool dispatch_one_server(redis_client_t *c, redis_req_t *r)
{
    uint32_t first, last, step;
    if (!key_positions(r, &first, &last, &step)) {
        /* No key to go by (numkeys 0, say): the server answers the error. */
        return forward_whole(c, r, wn_pool_route(c->c.pool, "placeholder", 11));
    }
    server_rt_t *one = NULL;
    for (uint32_t i = first; i <= last; i += step) {
        bool bad = false;
        server_rt_t *s = key_server(r, i, &bad);
        if (bad)
            return too_long(r);
        if (one != NULL && s != one) {
            refuse(r, "walnut cannot run '", r->cmd->name,
                   "' across servers: its keys map to different servers (give them one hash "
                   "tag)");
            return true;
        }
        one = s;
    }
    return forward_whole(c, r, one);
}

bool wn_redis_dispatch(redis_client_t *c, redis_req_t *r)
{
    const wn_rcmd_t *cmd = r->cmd;
    pool_rt_t *pool = c->c.pool;
    bool bad = false;
    switch ((wn_rcmd_class_t)cmd->cls) {
    case WN_RCMD_LOCAL:
        wn_redis_local(c, r);
        return true;
    case WN_RCMD_MULTI_KEY:
        if (r->nargs > 2)
            return dispatch_split(c, r, 1,
                                  cmd->id == WN_RCMD_ID_MGET ? RMERGE_ARRAY : RMERGE_SUM);
        break;
    case WN_RCMD_MULTI_KV:
        if (r->nargs > 3)
            return dispatch_split(c, r, 2, RMERGE_OK);
        break;
    case WN_RCMD_ALL_KEYS_ONE_SERVER:
        return dispatch_one_server(c, r);
    case WN_RCMD_SCRIPT: {
        int64_t nk = numkeys(r);
        if (nk == 0 && pool->nservers > 1) {
            /* It may touch any key (named in ARGV): which server would be
             * a guess (twemproxy closes the connection). */
            refuse(r, "walnut routes '", cmd->name,
                   "' by its keys: with numkeys 0 its server cannot be known (pass the keys "
                   "the script uses as keys, under one hash tag)");
            return true;
        }
        if (nk <= 0 || (uint64_t)cmd->numkeys_at + 1 >= r->nargs)
            /* One server, or no count: the server answers (its error). */
            return forward_whole(c, r, wn_pool_route(pool, "placeholder", 11));
        server_rt_t *s = key_server(r, (uint32_t)cmd->numkeys_at + 1, &bad);
        return bad ? too_long(r) : forward_whole(c, r, s);
    }
    case WN_RCMD_KEYLESS:
        return forward_whole(c, r, wn_pool_route(pool, "placeholder", 11));
    case WN_RCMD_EVERY_SERVER:
        return dispatch_every_server(c, r);
    default:
        break;
    }
    /* One key decides: the routing argument. */
    uint32_t at = wn_rcmd_route_arg(cmd);
    if (at == 0 || at >= r->nargs)
        return forward_whole(c, r, wn_pool_route(pool, "placeholder", 11));
    server_rt_t *s = key_server(r, at, &bad);
    return bad ? too_long(r) : forward_whole(c, r, s);
}
