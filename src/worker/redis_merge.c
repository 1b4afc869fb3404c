/*
 * worker/redis_merge.c: a split Redis command answered as one. When every
 * part has answered: MGET is one array of the elements in the client's key
 * order (by reference, not copied), DEL/UNLINK/TOUCH/EXISTS the sum of the
 * parts' integers, MSET +OK. If any part failed (walnut could not reach its
 * server) or its server answered an error, the client gets one error line
 * for the whole command and its connection stays usable; no part's result
 * is ever given to another client. Also walnut's own error replies.
 * Worker thread only.
 */
#include "redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wn_redis_fail(req_t *r, int err)
{
    if (!wn_req_failed(r, err))
        return;
    char line[160];
    /* redis-server's words for these */
    int n = err == WN_ESRVFULL ? snprintf(line, sizeof(line), "%s", WN_RESP_FULL_LINE)
            : err == WN_ENOAUTH
                ? snprintf(line, sizeof(line), "%s", WN_RESP_NOAUTH_LINE)
                : snprintf(line, sizeof(line), "-ERR %s\r\n", wn_req_fail_text(err));
    if (r->kind == REQ_FRAGMENT) {
        /* Never to be written: its bytes stop counting (a copy's, shared
         * with its parent, when the last copy is out or failed). */
        if (!r->sent && r->out.n > 0)
            wn_req_out_written(r);
        /* The parent answers for the whole command. */
        redis_req(r)->error_reply = true;
        redis_req(r)->unreached = wn_req_err_unreached(err);
        wn_segv_clear(&r->rsp);
        wn_req_rsp_scratch(r, line, (size_t)n);
        wn_req_done(r);
        if (r->parent != NULL)
            wn_redis_parent_progress(r->parent);
        return;
    }
    if (r->kind == REQ_INTERNAL) {
        wn_req_done(r);
        return;
    }
    wn_redis_reply(redis_req(r), line, (size_t)n);
}

/* The whole command answered with one fragment's error line, whole and by
 * reference (counted against the client when it arrived). */
static void answer_error(redis_req_t *p, redis_req_t *f)
{
    if (!f->r.failed)
        wn_stat_add(&p->r.pool->stats->errors[WN_CAUSE_server_error], 1);
    wn_stat_add(WN_PSTAT(p->r.pool, forward_error), 1);
    p->r.failed = true;
    for (uint32_t i = 0; i < f->r.rsp.n; i++) {
        const seg_t *sg = &f->r.rsp.v[i];
        if (wn_segv_push(&p->r.rsp, sg->buf, sg->off, sg->len) < 0) {
            wn_redis_fail(&p->r, WN_ENOMEM);
            return;
        }
    }
    wn_req_done(&p->r);
}

static void answer_array(redis_req_t *p)
{
    redis_split_t *s = p->split;
    char head[WN_RESP_ARRAY_HEAD_MAX];
    int n = wn_resp_array_head(head, sizeof(head), s->nkeys);
    if (n < 0 || wn_req_rsp_scratch(&p->r, head, (size_t)n) < 0) {
        wn_redis_fail(&p->r, WN_ENOMEM);
        return;
    }
    /* Key k is element j of its fragment, j counting that fragment's keys
     * in order; the bytes were counted against the client on arrival. */
    for (uint32_t k = 0; k < s->nkeys; k++) {
        redis_req_t *f = redis_req(p->r.frags[s->key_frag[k]]);
        const redis_item_t *it = &s->items[s->frag_first[f->frag] + f->taken++];
        for (uint32_t j = 0; j < it->nsegs; j++) {
            const seg_t *sg = &f->r.rsp.v[it->seg_first + j];
            if (wn_segv_push(&p->r.rsp, sg->buf, sg->off, sg->len) < 0) {
                wn_redis_fail(&p->r, WN_ENOMEM);
                return;
            }
        }
    }
    wn_req_done(&p->r);
}

/* The bytes of a reply kept in segments, into out (at most cap): its length,
 * or cap + 1 when longer. */
static size_t flatten(const segv_t *sv, char *out, size_t cap)
{
    size_t n = 0;
    for (uint32_t i = 0; i < sv->n; i++) {
        const seg_t *sg = &sv->v[i];
        if (n + sg->len > cap)
            return cap + 1;
        memcpy(out + n, sg->buf->data + sg->off, sg->len);
        n += sg->len;
    }
    return n;
}

/* SCRIPT LOAD: every server that answered gave the same SHA1 (`first`
 * answered); the client gets it. */
static void answer_same(redis_req_t *p, uint32_t first)
{
    char a[128], b[128];
    size_t na = flatten(&redis_req(p->r.frags[first])->r.rsp, a, sizeof(a));
    for (uint32_t f = first + 1; f < p->r.nfrags; f++) {
        if (redis_req(p->r.frags[f])->unreached)
            continue;
        size_t nb = flatten(&redis_req(p->r.frags[f])->r.rsp, b, sizeof(b));
        if (na > sizeof(a) || nb != na || memcmp(a, b, na) != 0) {
            wn_stat_add(&p->r.pool->stats->errors[WN_CAUSE_protocol], 1);
            wn_stat_add(WN_PSTAT(p->r.pool, forward_error), 1);
            wn_redis_reply(p, "-ERR Invalid argument\r\n", 23);
            return;
        }
    }
    const segv_t *sv = &redis_req(p->r.frags[first])->r.rsp;
    for (uint32_t i = 0; i < sv->n; i++) {
        if (wn_segv_push(&p->r.rsp, sv->v[i].buf, sv->v[i].off, sv->v[i].len) < 0) {
            wn_redis_fail(&p->r, WN_ENOMEM);
            return;
        }
    }
    wn_req_done(&p->r);
}

/* SCRIPT EXISTS: 1 for each script every server that answered has. */
static void answer_all(redis_req_t *p)
{
    const redis_split_t *s = p->split;
    char head[WN_RESP_ARRAY_HEAD_MAX];
    int n = wn_resp_array_head(head, sizeof(head), s->nkeys);
    char *text = malloc((size_t)s->nkeys * 4 + (n > 0 ? (size_t)n : 0));
    if (n < 0 || text == NULL) {
        free(text);
        wn_redis_fail(&p->r, WN_ENOMEM);
        return;
    }
    memcpy(text, head, (size_t)n);
    size_t len = (size_t)n;
    for (uint32_t k = 0; k < s->nkeys; k++, len += 4) {
        bool all = true;
        for (uint32_t f = 0; f < p->r.nfrags && all; f++)
            all = redis_req(p->r.frags[f])->unreached || s->yes[(size_t)f * s->nkeys + k] == 1;
        memcpy(text + len, all ? ":1\r\n" : ":0\r\n", 4);
    }
    int rc = wn_req_rsp_scratch(&p->r, text, len);
    free(text);
    if (rc < 0) {
        wn_redis_fail(&p->r, WN_ENOMEM);
        return;
    }
    wn_req_done(&p->r);
}

void wn_redis_parent_progress(req_t *parent)
{
    redis_req_t *p = redis_req(parent);
    if (parent->done || parent->frags_left > 0)
        return;
    /* SCRIPT LOAD and EXISTS leave out a server walnut got no answer from
     * (refused, timed out, reset) when another answered: its keys fail
     * anyway while it is away, and a server that comes back without the
     * script answers EVALSHA with NOSCRIPT, which clients handle by loading
     * it again (as after any server restart). */
    uint32_t first = parent->nfrags;
    for (uint32_t f = parent->nfrags; f-- > 0;)
        if (!redis_req(parent->frags[f])->unreached)
            first = f;
    bool skip = (p->merge == RMERGE_SAME || p->merge == RMERGE_ALL) && first < parent->nfrags;
    for (uint32_t f = 0; f < parent->nfrags; f++) {
        if (redis_req(parent->frags[f])->reply_over_limit) {
            wn_redis_refuse_over_limit(p, true);
            return;
        }
    }
    for (uint32_t f = 0; f < parent->nfrags; f++) {
        redis_req_t *fr = redis_req(parent->frags[f]);
        if (fr->error_reply && !(skip && fr->unreached)) {
            answer_error(p, fr);
            return;
        }
    }
    for (uint32_t f = 0; f < parent->nfrags; f++) {
        redis_req_t *fr = redis_req(parent->frags[f]);
        if ((p->merge == RMERGE_ARRAY || p->merge == RMERGE_ALL) && fr->nitems != fr->nkeys &&
            !(skip && fr->unreached)) {
            /* twemproxy's text for a part it cannot merge */
            wn_stat_add(&p->r.pool->stats->errors[WN_CAUSE_protocol], 1);
            wn_stat_add(WN_PSTAT(p->r.pool, forward_error), 1);
            wn_redis_reply(p, "-ERR Invalid argument\r\n", 23);
            return;
        }
    }
    char line[WN_RESP_INT_MAX];
    int n;
    switch (p->merge) {
    case RMERGE_ARRAY:
        answer_array(p);
        return;
    case RMERGE_SAME:
        answer_same(p, first);
        return;
    case RMERGE_ALL:
        answer_all(p);
        return;
    case RMERGE_SUM:
        n = wn_resp_compose_int(line, sizeof(line), p->split->sum);
        wn_req_rsp_scratch(&p->r, line, n > 0 ? (size_t)n : 0);
        wn_req_done(&p->r);
        return;
    default:
        wn_req_rsp_scratch(&p->r, "+OK\r\n", 5);
        wn_req_done(&p->r);
        return;
    }
}
