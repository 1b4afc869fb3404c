/*
 * worker/mcbin_reply.c: the packet memcached would send, made from the text
 * reply a binary request's fragment received (or the error walnut failed it
 * with): status, flags, CAS and key echo by opcode, the value by reference
 * to the server's buffers, quiet opcodes' replies dropped as memcached drops
 * them. Also walnut's `stats` as binary STAT packets. Worker thread only;
 * runs from a server's reply parser or failure path (via mc_merge.c), so it
 * only marks requests done.
 */
#include "mcbin.h"

#include <stdlib.h>
#include <string.h>

/* The first line of r's reply: contiguous in its first segment (a server's
 * line is pushed whole, walnut's own error too). */
static bool first_line(const req_t *r, const char **line, uint32_t *line_len,
                       uint32_t *content_len)
{
    if (r->rsp.n == 0 || r->rsp.v[0].buf == NULL)
        return false;
    const seg_t *s = &r->rsp.v[0];
    const char *p = s->buf->data + s->off;
    const char *nl = memchr(p, '\n', s->len);
    if (nl == NULL)
        return false;
    *line = p;
    *line_len = (uint32_t)(nl - p) + 1;
    *content_len = *line_len - 1;
    if (*content_len > 0 && p[*content_len - 1] == '\r')
        (*content_len)--;
    return true;
}

/* Walk bytes [from, from + len) of r's reply: pushed by reference onto
 * `to` (when not NULL) or copied into `copy`. */
static bool take_range(const req_t *r, uint64_t from, uint64_t len, segv_t *to, char *copy)
{
    uint64_t at = 0;
    for (uint32_t i = 0; i < r->rsp.n && len > 0; i++) {
        const seg_t *s = &r->rsp.v[i];
        if (from >= at + s->len || s->buf == NULL) {
            at += s->len;
            continue;
        }
        uint32_t off = (uint32_t)(from - at);
        uint32_t take = (uint32_t)WN_MIN((uint64_t)(s->len - off), len);
        if (to != NULL) {
            /* Counted against the client when they arrived: not again. */
            if (wn_segv_push(to, s->buf, s->off + off, take) < 0)
                return false;
        } else {
            memcpy(copy, s->buf->data + s->off + off, take);
            copy += take;
        }
        from += take;
        len -= take;
        at += s->len;
    }
    return len == 0;
}

/* An error packet with a text of walnut's or the server's as its body. */
static void reply_error_text(mcbin_req_t *p, uint16_t status, const char *text, size_t len)
{
    if (wn_mcbin_quiet_drops(p->op, status)) {
        wn_req_reply(&p->m.r, "", 0);
        return;
    }
    char buf[WN_MCBIN_HEADER_LEN + 256];
    len = WN_MIN(len, sizeof(buf) - WN_MCBIN_HEADER_LEN);
    wn_mcbin_compose_header((uint8_t *)buf, sizeof(buf), p->op, status, 0, 0, (uint32_t)len,
                            p->opaque, 0);
    memcpy(buf + WN_MCBIN_HEADER_LEN, text, len);
    wn_req_reply(&p->m.r, buf, WN_MCBIN_HEADER_LEN + len);
}

/* memcached's text when it has no memory for an item being stored (its
 * other out-of-memory errors say "Out of memory"). */
#define OOM_STORING "Out of memory allocating item"

/* A success with a text value (VERSION). */
static void reply_text(mcbin_req_t *p, const char *text, size_t len)
{
    char buf[WN_MCBIN_HEADER_LEN + 256];
    len = WN_MIN(len, sizeof(buf) - WN_MCBIN_HEADER_LEN);
    wn_mcbin_compose_header((uint8_t *)buf, sizeof(buf), p->op, WN_MCBIN_OK, 0, 0,
                            (uint32_t)len, p->opaque, 0);
    memcpy(buf + WN_MCBIN_HEADER_LEN, text, len);
    wn_req_reply(&p->m.r, buf, WN_MCBIN_HEADER_LEN + len);
}

/* A fragment walnut failed (server down, timed out, out of memory): its
 * reply is "SERVER_ERROR <twemproxy's text>". */
static void reply_failed(mcbin_req_t *p, const char *line, uint32_t len)
{
    static const char prefix[] = "SERVER_ERROR ";
    const char *text = line;
    if (len >= sizeof(prefix) - 1 && memcmp(line, prefix, sizeof(prefix) - 1) == 0) {
        text += sizeof(prefix) - 1;
        len -= (uint32_t)(sizeof(prefix) - 1);
    }
    const char *oom = wn_req_fail_text(WN_ENOMEM);
    bool is_oom = len == strlen(oom) && memcmp(text, oom, len) == 0;
    if (is_oom)
        wn_mcbin_reply_error(p, WN_MCBIN_ENOMEM);
    else
        reply_error_text(p, WN_MCBIN_ETMPFAIL, text, len);
}

/* A reply line walnut cannot translate, as an internal error's body: the
 * server's words without walnut's O token, which the client never sent. */
static void reply_unreadable(mcbin_req_t *p, req_t *f, const char *line, uint32_t len)
{
    char text[256], tag[WN_MC_TAG_MAX];
    uint32_t t = mc_req(f)->tag;
    size_t tn = t != 0 ? wn_mc_tag_text(t, tag) : 0;
    size_t n = 0;
    for (uint32_t i = 0; i < len && n < sizeof(text);) {
        uint32_t after = i + 1 + (uint32_t)tn;
        if (tn > 0 && line[i] == ' ' && after <= len && memcmp(line + i + 1, tag, tn) == 0 &&
            (after == len || line[after] == ' ')) {
            i = after;
            continue;
        }
        text[n++] = line[i++];
    }
    reply_error_text(p, WN_MCBIN_EINTERNAL, text, n);
}

static bool gets_value(uint8_t loud)
{
    return loud == WN_MCBIN_OP_GET || loud == WN_MCBIN_OP_GETK || loud == WN_MCBIN_OP_GAT ||
           loud == WN_MCBIN_OP_GATK;
}

static bool echoes_key(uint8_t loud)
{
    return loud == WN_MCBIN_OP_GETK || loud == WN_MCBIN_OP_GATK;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A success, or a miss that echoes the key (GETK GATK). */
static void reply_packet(mcbin_req_t *p, const req_t *f, const wn_mcbin_text_reply_t *rep,
                         uint32_t line_len)
{
    uint8_t loud = wn_mcbin_opcode_loud(p->op);
    uint8_t head[WN_MCBIN_HEADER_LEN + 4 + WN_MCBIN_KEY_MAX + 8];
    uint8_t extlen = 0;
    uint16_t keylen = echoes_key(loud) ? p->keylen : 0;
    uint32_t value_len = 0;
    bool by_ref = false;
    uint8_t *body = head + WN_MCBIN_HEADER_LEN;
    if (rep->status == WN_MCBIN_OK &&
        (gets_value(loud) || loud == WN_MCBIN_OP_TOUCH)) {
        extlen = 4;
        put32(body, rep->flags);
    }
    if (keylen > 0)
        memcpy(body + extlen, p->key, keylen);
    size_t n = WN_MCBIN_HEADER_LEN + extlen + keylen;
    if (rep->status == WN_MCBIN_OK && gets_value(loud)) {
        value_len = rep->value_len;
        by_ref = true;
    } else if (rep->status == WN_MCBIN_OK &&
               (loud == WN_MCBIN_OP_INCREMENT || loud == WN_MCBIN_OP_DECREMENT)) {
        char digits[24];
        uint64_t v;
        if (rep->value_len > 20 || !take_range(f, line_len, rep->value_len, NULL, digits) ||
            !wn_mcbin_text_number(digits, rep->value_len, &v)) {
            reply_error_text(p, WN_MCBIN_EINTERNAL, "", 0);
            return;
        }
        put32(head + n, (uint32_t)(v >> 32));
        put32(head + n + 4, (uint32_t)v);
        n += 8;
        value_len = 8;
    }
    wn_mcbin_compose_header(head, sizeof(head), p->op, rep->status, extlen, keylen, value_len,
                            p->opaque, rep->cas);
    req_t *r = &p->m.r;
    if (wn_req_rsp_scratch(r, (const char *)head, n) < 0 ||
        (by_ref && !take_range(f, line_len, value_len, &r->rsp, NULL))) {
        wn_req_reply(r, "", 0);
        r->close_after = true; /* no memory to answer in order: close after */
        return;
    }
    wn_req_done(r);
}

/* Hits and misses as memcached counts them: GAT and TOUCH are touches. */
static void count_reply(wn_worker_t *w, uint8_t loud, uint16_t status)
{
    bool hit = status == WN_MCBIN_OK;
    if (!hit && status != WN_MCBIN_KEY_ENOENT)
        return;
    switch (loud) {
    case WN_MCBIN_OP_GET:
    case WN_MCBIN_OP_GETK:
        wn_stat_add(hit ? WN_GSTAT(w, get_hits) : WN_GSTAT(w, get_misses), 1);
        break;
    case WN_MCBIN_OP_GAT:
    case WN_MCBIN_OP_GATK:
    case WN_MCBIN_OP_TOUCH:
        wn_stat_add(hit ? WN_GSTAT(w, touch_hits) : WN_GSTAT(w, touch_misses), 1);
        break;
    default:
        break;
    }
}

static void keyed_done(mcbin_req_t *p, req_t *f)
{
    uint8_t loud = wn_mcbin_opcode_loud(p->op);
    const char *line;
    uint32_t line_len, len;
    if (!first_line(f, &line, &line_len, &len)) {
        reply_error_text(p, WN_MCBIN_EINTERNAL, "", 0);
        return;
    }
    if (f->failed) {
        reply_failed(p, line, len);
        return;
    }
    wn_mcbin_text_reply_t rep;
    if (wn_mcbin_text_reply(p->op, line, len, &rep) < 0) {
        reply_unreadable(p, f, line, len);
        return;
    }
    count_reply(p->m.r.pool->w, loud, rep.status);
    if (wn_mcbin_quiet_drops(p->op, rep.status)) {
        wn_req_reply(&p->m.r, "", 0);
        return;
    }
    if (rep.status == WN_MCBIN_OK && loud == WN_MCBIN_OP_VERSION) {
        reply_text(p, line + rep.text_off, rep.text_len);
        return;
    }
    if (rep.status == WN_MCBIN_OK ||
        (rep.status == WN_MCBIN_KEY_ENOENT && echoes_key(loud))) {
        reply_packet(p, f, &rep, line_len);
        return;
    }
    if (rep.status == WN_MCBIN_EINTERNAL)
        reply_error_text(p, rep.status, line, len);
    else if (rep.status == WN_MCBIN_ENOMEM && wn_mcbin_op_stores(loud))
        reply_error_text(p, rep.status, OOM_STORING, sizeof(OOM_STORING) - 1);
    else
        wn_mcbin_reply_error(p, rep.status);
}

/* FLUSH: OK when every server said OK, else the first other answer. */
static void flush_done(mcbin_req_t *p)
{
    for (uint32_t i = 0; i < p->m.r.nfrags; i++) {
        req_t *f = p->m.r.frags[i];
        const char *line;
        uint32_t line_len, len;
        if (f == NULL)
            continue;
        if (!first_line(f, &line, &line_len, &len)) {
            reply_error_text(p, WN_MCBIN_EINTERNAL, "", 0);
            return;
        }
        if (f->failed) {
            reply_failed(p, line, len);
            return;
        }
        wn_mcbin_text_reply_t rep;
        if (wn_mcbin_text_reply(p->op, line, len, &rep) < 0)
            rep.status = WN_MCBIN_EINTERNAL;
        if (rep.status != WN_MCBIN_OK) {
            reply_error_text(p, WN_MCBIN_EINTERNAL, line, len);
            return;
        }
    }
    wn_mcbin_text_reply_t ok = {.status = WN_MCBIN_OK};
    if (wn_mcbin_quiet_drops(p->op, WN_MCBIN_OK))
        wn_req_reply(&p->m.r, "", 0);
    else
        reply_packet(p, NULL, &ok, 0);
}

void wn_mcbin_progress(req_t *parent)
{
    mcbin_req_t *p = mcbin_req(parent);
    if (parent->done || parent->frags_left > 0)
        return;
    if (wn_req_client(parent) == NULL) {
        /* Nobody reads it (gone, or over its limit): nothing was kept. */
        wn_req_done(parent);
        return;
    }
    if (wn_mcbin_opcode_loud(p->op) == WN_MCBIN_OP_FLUSH)
        flush_done(p);
    else if (parent->nfrags > 0 && parent->frags[0] != NULL)
        keyed_done(p, parent->frags[0]);
    else
        wn_req_done(parent);
}

void wn_mcbin_stats_reply(req_t *r, const char *text, size_t len)
{
    mcbin_req_t *b = mcbin_req(r);
    int n = wn_mcbin_stats_compose(NULL, 0, b->opaque, text, len);
    uint8_t *buf = n > 0 ? malloc((size_t)n) : NULL;
    if (buf == NULL ||
        wn_mcbin_stats_compose(buf, (size_t)n, b->opaque, text, len) != n) {
        free(buf);
        if (n > 0)
            wn_mcbin_reply_error(b, WN_MCBIN_ENOMEM);
        else
            reply_error_text(b, WN_MCBIN_EINTERNAL, "", 0);
        return;
    }
    wn_req_reply(r, (const char *)buf, (size_t)n);
    free(buf);
}
