/*
 * fuzz_resp_reply.c: libFuzzer target for the RESP reply parser. The first
 * input byte picks the limits and a reveal schedule; the rest is a server
 * byte stream, played as the worker plays it (frame a line, skip a bulk
 * payload by count). Checks: nothing outside the input is read (ASan), every
 * accepted line is exactly what walnut's composers would write for it (so
 * the parser is as strict as claimed), the depths and done flags agree with
 * a recursive reading of the token sequence, and the stream revealed in
 * pieces gives the same tokens. A long '+' or '-' line that comes in pieces
 * counts as one token, at its last piece (where the pieces fall depends on
 * the reveal schedule; what they hold does not).
 */
#include "walnut/proto_resp.h"

#include "walnut/core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

typedef struct tok_rec {
    char type;
    bool done;
    uint32_t depth;
    int64_t number;
} tok_rec_t;

/* The canonical line for a token: the parser accepts nothing else. */
static void check_canonical(const char *line, const wn_resp_rsp_tok_t *t)
{
    char buf[WN_RESP_BULK_HEAD_MAX + 8];
    int n;
    switch (t->type) {
    case '+':
    case '-':
        CHECK(t->text.off == (t->cont ? 0u : 1u));
        CHECK(t->text.off + t->text.len + (t->partial ? 0u : 2u) == t->line_len);
        CHECK(memchr(line + t->text.off, '\r', t->text.len) == NULL);
        CHECK(memchr(line + t->text.off, '\n', t->text.len) == NULL);
        CHECK(t->partial || (line[t->line_len - 2] == '\r' && line[t->line_len - 1] == '\n'));
        return;
    case ':':
        n = wn_resp_compose_int(buf, sizeof buf, t->number);
        break;
    case '$':
        n = t->number < 0 ? 5 : wn_resp_bulk_head(buf, sizeof buf, (uint64_t)t->number);
        if (t->number < 0)
            memcpy(buf, WN_RESP_NULL_BULK, 5);
        CHECK(t->number >= -1 && t->bulk_len == (t->number < 0 ? 0 : (uint64_t)t->number));
        break;
    case '*':
        CHECK(t->number >= -1 && t->number <= UINT32_MAX);
        n = t->number < 0 ? 5 : wn_resp_array_head(buf, sizeof buf, (uint32_t)t->number);
        if (t->number < 0)
            memcpy(buf, WN_RESP_NULL_ARRAY, 5);
        break;
    default:
        abort();
    }
    CHECK(n > 0 && (uint32_t)n == t->line_len && memcmp(buf, line, (size_t)n) == 0);
}

/* One value of the token sequence from *i at `depth`; checks each token's
 * depth (tracked one by one up to `cap`, reported as cap + 1 beyond) and
 * that done marks exactly the last token of a top-level value. False if the
 * sequence ends inside the value. */
static bool read_value(const tok_rec_t *t, size_t n, size_t *i, uint32_t depth, uint32_t cap)
{
    if (*i >= n)
        return false;
    const tok_rec_t *v = &t[(*i)++];
    CHECK(v->depth == WN_MIN(depth, cap + 1));
    if (v->type == '*' && v->number > 0) {
        CHECK(!v->done);
        for (int64_t k = 0; k < v->number; k++)
            if (!read_value(t, n, i, depth + 1, cap))
                return false;
        if (depth == 0)
            CHECK(t[*i - 1].done);
        return true;
    }
    if (depth == 0)
        CHECK(v->done);
    return true;
}

static void check_structure(const tok_rec_t *t, size_t n, uint32_t cap)
{
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        if (!read_value(t, n, &i, 0, cap)) {
            /* an unfinished reply: no token of it may say done */
            for (size_t k = start; k < n; k++)
                CHECK(!t[k].done);
            return;
        }
        for (size_t k = start; k + 1 < i; k++)
            CHECK(!t[k].done);
    }
}

static void mix(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        *h = (*h ^ b[i]) * 1099511628211ull;
}

/* Play the stream, revealing `step` more bytes when the parser wants more
 * (0: all at once, with the per-token checks). Returns a hash of the play. */
static uint64_t play(const char *in, size_t n, const wn_resp_limits_t *lim, size_t step)
{
    wn_resp_rsp_parser_t *p = malloc(sizeof(*p));
    tok_rec_t *recs = malloc((n / 3 + 1) * sizeof(*recs)); /* a line is >= 3 bytes */
    CHECK(p != NULL && recs != NULL);
    wn_resp_rsp_parser_init(p, lim);
    size_t pos = 0, vis = step == 0 ? n : 0, nrec = 0;
    uint64_t h = 14695981039346656037ull;
    int rc = 0;
    char text_type = 0; /* inside a long line that comes in pieces: its type and depth */
    uint32_t text_depth = 0;
    size_t text_start = 0;
    for (;;) {
        /* at the end of the input libFuzzer's own buffer is exactly sized;
         * before it, an exact copy lets ASan catch a read past vis */
        bool copied = vis < n;
        char *b = copied ? malloc(vis - pos == 0 ? 1 : vis - pos) : (char *)in + pos;
        CHECK(b != NULL);
        if (copied)
            memcpy(b, in + pos, vis - pos);
        wn_resp_rsp_tok_t tok;
        rc = wn_resp_reply_next(p, b, vis - pos, &tok);
        if (rc == WN_EAGAIN) {
            if (copied)
                free(b);
            if (vis < n) {
                vis = WN_MIN(n, vis + step);
                continue;
            }
            break;
        }
        if (rc < 0) {
            if (copied)
                free(b);
            CHECK(rc == WN_EPROTO || rc == WN_ETOOBIG);
            CHECK(wn_resp_reply_idle(p));
            break;
        }
        CHECK((uint32_t)rc == tok.line_len && (size_t)rc <= vis - pos);
        CHECK(tok.depth <= p->lim.max_depth + 1 && p->depth <= p->lim.max_depth);
        bool text = tok.type == '+' || tok.type == '-';
        CHECK(text || (!tok.partial && !tok.cont));
        CHECK(!text || tok.cont || tok.line_len <= p->lim.max_text - (tok.partial ? 1 : 0));
        CHECK(!tok.partial || tok.cont || tok.line_len == p->lim.max_text - 1);
        CHECK(text || tok.line_len <= p->lim.max_line);
        CHECK(tok.cont == (text_type != 0));
        CHECK(!tok.cont || (tok.type == text_type && tok.depth == text_depth));
        CHECK(!tok.partial || !tok.done);
        if (tok.partial && !tok.cont)
            text_start = pos;
        text_type = tok.partial ? tok.type : 0;
        text_depth = tok.depth;
        if (step == 0)
            check_canonical(b, &tok);
        if (copied)
            free(b);
        pos += (size_t)rc;
        if (tok.partial)
            continue; /* the line's token is its last piece */
        recs[nrec++] = (tok_rec_t){tok.type, tok.done, tok.depth, tok.number};
        mix(&h, &tok.type, sizeof tok.type);
        mix(&h, &tok.done, sizeof tok.done);
        mix(&h, &tok.depth, sizeof tok.depth);
        mix(&h, &tok.number, sizeof tok.number);
        if (tok.type != '$' || tok.number < 0)
            continue;
        CHECK(tok.bulk_len <= p->lim.max_bulk);
        while (vis - pos < tok.bulk_len + 2 && vis < n)
            vis = step == 0 ? n : WN_MIN(n, vis + step);
        if (vis - pos < tok.bulk_len + 2)
            break;
        pos += tok.bulk_len;
        if (!wn_resp_crlf_ok(in[pos], in[pos + 1])) {
            rc = 1;
            break;
        }
        pos += 2;
    }
    if (step == 0)
        check_structure(recs, nrec, p->lim.max_depth);
    mix(&h, &rc, sizeof rc);
    if (text_type != 0)
        pos = text_start; /* how much of the long line was taken depends on the schedule */
    mix(&h, &pos, sizeof pos);
    free(recs);
    free(p);
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    wn_resp_limits_t lim = {
        .max_depth = (mode & 1) ? 3 : 0,
        .max_elems = (mode & 2) ? 4 : 0,
        .max_bulk = (mode & 4) ? 8 : 0,
        .max_line = (mode & 8) ? WN_RESP_LINE_MIN : 0,
        .max_text = (mode & 8) ? 40 : 0,
    };
    uint64_t whole = play(in, n, &lim, 0);
    size_t step = 1 + (mode >> 4) * 13;
    CHECK(play(in, n, &lim, step) == whole);
    return 0;
}
