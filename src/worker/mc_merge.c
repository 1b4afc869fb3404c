/*
 * worker/mc_merge.c: putting split memcached requests back together, and
 * the error replies walnut makes. A split get's VALUE blocks are merged in
 * the client's key order as soon as their turn comes (each one knows which
 * key it answers), so a long multi-get streams to the client instead of
 * being held whole; one END closes it. flush_all and verbosity answer OK
 * when every server did, else the first other answer. Worker thread only.
 */
#include "mc.h"
#include "mcbin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void part_failed(mc_req_t *p, const char *line, size_t n);

void wn_mc_fail(req_t *r, int err)
{
    if (!wn_req_failed(r, err))
        return;
    char line[160];
    int n = snprintf(line, sizeof(line), "SERVER_ERROR %s\r\n", wn_req_fail_text(err));
    if (r->kind != REQ_FRAGMENT && mc_req(r)->part_of != NULL) {
        part_failed(mc_req(r), line, (size_t)n);
        return;
    }
    if (r->kind == REQ_FRAGMENT) {
        /* The parent's merge answers for the whole request. */
        mc_req(r)->error_line = true;
        mc_req(r)->error_seg = 0;
        wn_segv_clear(&r->rsp);
        wn_req_rsp_scratch(r, line, (size_t)n);
        wn_req_done(r);
        if (r->parent != NULL)
            wn_mc_parent_progress(r->parent);
        return;
    }
    wn_req_reply(r, line, (size_t)n);
}

void wn_mc_forward(client_t *c, server_rt_t *s, req_t *r)
{
    if (s == NULL)
        wn_mc_fail(r, WN_ENOSERVER);
    else if (wn_server_enqueue(s, c->slot, r) < 0)
        wn_mc_fail(r, WN_ENOMEM);
}

/* Move a complete item's segments from its fragment to the parent's reply.
 * The bytes were counted against the client when they arrived. */
static int emit_item(mc_req_t *p, mc_req_t *f, const mc_item_t *it)
{
    for (uint32_t j = 0; j < it->nsegs; j++) {
        seg_t *sg = &f->r.rsp.v[it->seg_first + j];
        if (wn_segv_push(&p->r.rsp, sg->buf, sg->off, sg->len) < 0)
            return WN_ENOMEM;
        wn_buf_unref(sg->buf);
        sg->buf = NULL;
    }
    return 0;
}

/* p's reply ends with an error line. A split's items are merged whole, so
 * once some have gone out the line follows them, as memcached ends a get
 * it fails part-way (`SERVER_ERROR out of memory writing get response`
 * after the hits it wrote), and the client is served on; before that, the
 * line answers alone, as twemproxy's. Anything else already under way
 * (one server's reply, streamed as it came) may have stopped inside a
 * value: wn_req_reply closes the client after it. */
static void reply_error(mc_req_t *p, const char *line, size_t n)
{
    wn_req_let_go_frags(&p->r);
    if (p->split != NULL && !p->torn && p->r.rsp_sent > 0)
        wn_req_reply_after(&p->r, line, n);
    else
        wn_req_reply(&p->r, line, n);
}

/* A failed fragment answers for the whole: its error line (a server's
 * CLIENT_ERROR/SERVER_ERROR, or walnut's own), the client's other parts
 * dropped. Only the line: the hits a server sent before it (memcached
 * failing a get part-way, or a walnut in front of it) that the merge has
 * not taken wait for keys before them, and go with the rest (review: they
 * went out with the line, before those keys' hits, a block cut at 512
 * bytes taking the client's next reply for its data). */
static void answer_with_error(mc_req_t *p, mc_req_t *f)
{
    char line[512];
    size_t n = 0;
    for (uint32_t i = f->error_seg; i < f->r.rsp.n && n < sizeof(line); i++) {
        seg_t *sg = &f->r.rsp.v[i];
        if (sg->buf == NULL)
            continue;
        size_t take = WN_MIN((size_t)sg->len, sizeof(line) - n);
        memcpy(line + n, sg->buf->data + sg->off, take);
        n += take;
    }
    if (n == 0 || line[n - 1] != '\n')
        n = (size_t)snprintf(line, sizeof(line), "SERVER_ERROR %s\r\n", wn_req_fail_text(0));
    /* One error for the whole request; a fragment walnut failed counted
     * its cause already, a server's own error line counts here. */
    if (!f->r.failed)
        wn_stat_add(&p->r.pool->stats->errors[WN_CAUSE_server_error], 1);
    wn_stat_add(WN_PSTAT(p->r.pool, forward_error), 1);
    p->r.failed = true;
    if (p->part_of != NULL)
        part_failed(p, line, n);
    else
        reply_error(p, line, n);
}

/* ---- streamed lines --------------------------------------------------------- */

/* Every part is in and the line is over: it answers as one (or, released,
 * its parts have answered: the line adds its END). */
static void line_answer(mc_line_t *l)
{
    size_t len = 0;
    const char *text = "";
    if (l->released) {
        if (!l->failed) /* else a part's error line ended the reply */
            text = wn_mc_reply_text(WN_MC_REPLY_END, &len);
    } else if (l->verdict != WN_MC_REPLY_NONE) {
        text = wn_mc_reply_text(l->verdict, &len);
    } else if (l->err_len > 0) {
        text = l->err;
        len = l->err_len;
    }
    for (uint32_t i = 0; i < l->nparts; i++) {
        req_t *r = &l->parts[i]->r;
        /* A part over by its error may still have fragments out, whose
         * replies come after the line is gone: they keep nothing (before
         * its reply, which lets go of its list of them). */
        l->parts[i]->part_of = NULL;
        wn_req_let_go_frags(r);
        if (!r->done)
            wn_req_reply(r, "", 0); /* its hits dropped: the line answers alone */
        wn_req_unref(r);
    }
    if (l->term != NULL) {
        if (l->verdict != WN_MC_REPLY_NONE && l->verdict != WN_MC_REPLY_END)
            wn_stat_add(WN_PSTAT(l->term->r.pool, request_errors), 1);
        wn_req_reply(&l->term->r, text, len);
        wn_req_unref(&l->term->r);
    }
    free(l->parts);
    free(l->acc);
    free(l);
}

/* A released part's reply is settled: it goes out, and the part's count
 * would go with it, but the line keeps the part (its line, its split) until
 * every part is in. That stays counted, on the line's term, answered after
 * every part. */
static void keep_counted(mc_line_t *l, mc_req_t *p)
{
    if (l->term != NULL && p->kept > 0) {
        wn_req_hold_move(&p->r, &l->term->r, p->kept);
        p->kept = 0;
    }
}

/* A part's merge is over; once every part is and the line has ended, the
 * line answers. */
static void part_over(mc_req_t *p)
{
    mc_line_t *l = p->part_of;
    p->part_done = true;
    if (l->released) {
        /* After a later part's error line (drop_later_replies held the
         * parts after it): nothing. A part before it ends as it is, its
         * hits then the error line, unless it failed itself where an
         * item may be cut: then nothing coherent can follow it. */
        bool cut = p->r.failed && (p->split == NULL || p->torn);
        if (!p->r.done && l->failed && (p->r.rsp_held || cut))
            wn_req_reply(&p->r, "", 0);
        else if (!p->r.done)
            wn_req_done(&p->r);
        keep_counted(l, p);
    }
    if (--l->pending == 0 && l->closed)
        line_answer(l);
}

/* Parts after p may have hits ready, unsent (p is before them and was not
 * done): p's error line ends the reply, so they answer nothing, or the
 * client would take them for its next reply. A part whose merge is over
 * answers nothing now; one still merging is held, and answers nothing when
 * its merge is over (part_over). */
static void drop_later_replies(mc_line_t *l, const mc_req_t *p)
{
    uint32_t i = 0;
    while (i < l->nparts && l->parts[i] != p)
        i++;
    for (i++; i < l->nparts; i++) {
        req_t *r = &l->parts[i]->r;
        if (r->done)
            wn_req_reply(r, "", 0);
        else
            r->rsp_held = true;
    }
}

/* A part failed. Before the line has ended nothing has gone out: the line
 * answers with the first error line alone. After (its parts released and
 * streaming), this part answers with the error and the parts after it with
 * nothing: the hits of the parts before it, and its own, end with the
 * error line (reply_error), and the client is served on. */
static void part_failed(mc_req_t *p, const char *line, size_t n)
{
    mc_line_t *l = p->part_of;
    if (p->part_done)
        return;
    if (l->released && !l->failed) {
        l->failed = true;
        reply_error(p, line, n);
        drop_later_replies(l, p);
    } else if (!l->released && l->err_len == 0) {
        n = WN_MIN(n, sizeof(l->err));
        memcpy(l->err, line, n);
        if (n == sizeof(l->err)) /* cut short: still a line */
            memcpy(l->err + n - 2, "\r\n", 2);
        l->err_len = (uint32_t)n;
    }
    part_over(p);
}

void wn_mc_line_closed(mc_line_t *l)
{
    l->closed = true;
    if (l->term != NULL && l->verdict == WN_MC_REPLY_NONE && l->err_len == 0) {
        /* The line is good: nothing can make it answer alone any more. Its
         * parts answer in order, streaming like any split get. */
        l->released = true;
        for (uint32_t i = 0; i < l->nparts; i++) {
            mc_req_t *p = l->parts[i];
            p->r.rsp_held = false;
            if (p->part_done) {
                wn_req_done(&p->r);
                keep_counted(l, p);
            } else if (p->r.client != NULL) {
                wn_client_stream(p->r.client, &p->r);
            }
        }
    }
    if (l->pending == 0)
        line_answer(l);
}

static int over_limit_line(const pool_rt_t *pool, char *line, size_t cap)
{
    return snprintf(line, cap,
                    "SERVER_ERROR walnut: the reply would take the client past the pool's "
                    "client_buffer_limit (%llu bytes)\r\n",
                    (unsigned long long)pool->buffer_limit);
}

bool wn_mc_part_of_failed_line(const mc_req_t *f)
{
    const mc_req_t *p = (const mc_req_t *)f->r.parent; /* (mc_req, const) */
    return p != NULL && p->part_of != NULL && p->part_of->over_limit;
}

void wn_mc_part_over_limit(mc_req_t *f)
{
    f->over_limit = true;
    mc_req_t *p = f->r.parent != NULL ? mc_req(f->r.parent) : NULL;
    mc_line_t *l = p != NULL ? p->part_of : NULL;
    if (l == NULL || l->released || l->over_limit)
        return;
    /* Open: the line will answer this error alone (it cannot be released
     * good now), so nothing its parts hold will be sent. */
    l->over_limit = true;
    if (l->err_len == 0)
        l->err_len = (uint32_t)WN_MAX(0, over_limit_line(p->r.pool, l->err, sizeof(l->err)));
    for (uint32_t i = 0; i < l->nparts; i++) {
        req_t *q = &l->parts[i]->r;
        wn_req_rsp_drop(q);
        wn_req_let_go_frags(q);
    }
}

/* A part's items would have taken the client past its limit (mc_server.c
 * keep): the get ends with an error line, after the items that went out. */
static void answer_over_limit(mc_req_t *p)
{
    char line[160];
    int n = over_limit_line(p->r.pool, line, sizeof(line));
    wn_stat_add(WN_PSTAT(p->r.pool, request_errors), 1);
    p->r.failed = true;
    if (p->part_of != NULL)
        part_failed(p, line, (size_t)n);
    else
        reply_error(p, line, (size_t)n);
}

static void split_progress(mc_req_t *p)
{
    mc_split_t *s = p->split;
    /* A part over the limit before any part's error: it let go of every
     * part, so another part's error line, kept by none, would answer with
     * no text of its own (an adversarial helper: `Connection reset by
     * peer`, for a server's SERVER_ERROR or a timeout). */
    mc_req_t *failed = NULL;
    for (uint32_t f = 0; f < p->r.nfrags; f++) {
        mc_req_t *fr = mc_req(p->r.frags[f]);
        if (fr->over_limit) {
            /* Nothing more is merged: its item under way may be cut. */
            if (fr->r.done)
                answer_over_limit(p);
            return;
        }
        if (failed == NULL && fr->error_line && fr->r.done)
            failed = fr;
    }
    if (failed != NULL) {
        answer_with_error(p, failed);
        return;
    }
    if (p->part_of != NULL && p->part_of->over_limit) {
        /* Another part of its line went over the limit: the hits this one
         * held were let go, and the line answers that error alone. */
        if (p->r.frags_left == 0)
            part_over(p);
        return;
    }
    bool grew = false;
    while (s->merged < s->nkeys) {
        uint32_t k = s->merged;
        mc_req_t *fr = mc_req(p->r.frags[s->key_frag[k]]);
        if (fr->taken < fr->ncomplete) {
            const mc_item_t *it = &s->items[s->frag_first[fr->frag] + fr->taken];
            if (it->key == k) {
                if (emit_item(p, fr, it) < 0) {
                    p->torn = true;
                    wn_mc_fail(&p->r, WN_ENOMEM);
                    return;
                }
                fr->taken++;
                grew = true;
            }
        } else if (!fr->r.done) {
            break; /* its answer for this key may still come */
        }
        s->merged++;
    }
    if (s->merged == s->nkeys && p->r.frags_left == 0) {
        if (p->part_of != NULL) {
            part_over(p); /* the line says END, once */
            return;
        }
        size_t len;
        const char *end = wn_mc_reply_text(WN_MC_REPLY_END, &len);
        wn_req_rsp_scratch(&p->r, end, len);
        wn_req_done(&p->r);
        return;
    }
    if (grew && p->r.client != NULL && (p->part_of == NULL || p->part_of->released))
        wn_client_stream(p->r.client, &p->r);
}

static bool first_bytes_are(const req_t *r, const char *want, size_t n)
{
    char got[8];
    size_t have = 0;
    for (uint32_t i = 0; i < r->rsp.n && have < n; i++) {
        const seg_t *sg = &r->rsp.v[i];
        size_t take = WN_MIN((size_t)sg->len, n - have);
        memcpy(got + have, sg->buf->data + sg->off, take);
        have += take;
    }
    uint64_t total = 0;
    for (uint32_t i = 0; i < r->rsp.n; i++)
        total += r->rsp.v[i].len;
    return have == n && total == n && memcmp(got, want, n) == 0;
}

static void broadcast_done(mc_req_t *p)
{
    if (p->r.frags_left > 0)
        return;
    for (uint32_t f = 0; f < p->r.nfrags; f++) {
        req_t *fr = p->r.frags[f];
        /* A swallowed (noreply) fragment keeps no bytes: nothing to judge. */
        if (fr->swallow && !fr->failed)
            continue;
        if (!first_bytes_are(fr, "OK\r\n", 4)) {
            for (uint32_t i = 0; i < fr->rsp.n; i++)
                wn_segv_push(&p->r.rsp, fr->rsp.v[i].buf, fr->rsp.v[i].off, fr->rsp.v[i].len);
            wn_req_done(&p->r);
            return;
        }
    }
    wn_req_rsp_scratch(&p->r, "OK\r\n", 4);
    wn_req_done(&p->r);
}

void wn_mc_parent_progress(req_t *parent)
{
    mc_req_t *p = mc_req(parent);
    if (parent->done || p->part_done)
        return;
    if (wn_mcbin_req_is(parent)) {
        wn_mcbin_progress(parent); /* a binary client's: its reply is a packet */
        return;
    }
    if (p->split != NULL)
        split_progress(p);
    else
        broadcast_done(p);
}
