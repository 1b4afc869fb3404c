/*
 * proto/mc_response.c: frames memcached ASCII replies from a backend, one
 * line at a time, and decides whether each line is a valid reply to the
 * command it answers and whether the reply is complete. Data blocks are
 * skipped by the caller by count. Pure: no I/O, no allocation, no logging;
 * called on the worker thread that owns the backend connection.
 */
#include "walnut/proto.h"

#include "proto/mc_lex.h"
#include "walnut/core.h"

#include <string.h>

enum { PHASE_FIRST = 0, PHASE_MORE = 1 };

static const char *const rsp_names[] = {
#define WN_MC_RSP_NAME(up) #up,
    WN_MC_RSP_MAP(WN_MC_RSP_NAME)
#undef WN_MC_RSP_NAME
};

const char *wn_mc_rsp_type_name(wn_mc_rsp_type_t type)
{
    if ((unsigned)type >= WN_MC_RSP_COUNT)
        return NULL;
    return rsp_names[type];
}

void wn_mc_rsp_parser_init(wn_mc_rsp_parser_t *p, const wn_mc_limits_t *lim)
{
    p->lim = mc_limits(lim);
    p->scanned = 0;
    p->phase = PHASE_FIRST;
}

/* Does the line start with word `w` followed by its end or a space? On a
 * match, *rest is the offset just after the word and one space. */
static bool word_is(const char *c, uint32_t len, const char *w, uint32_t *rest)
{
    size_t wl = strlen(w);
    if (len < wl || memcmp(c, w, wl) != 0)
        return false;
    if (len == wl) {
        *rest = (uint32_t)wl;
        return true;
    }
    if (c[wl] != ' ')
        return false;
    *rest = (uint32_t)wl + 1;
    return true;
}

static bool line_is(const char *c, uint32_t len, const char *w)
{
    return len == strlen(w) && memcmp(c, w, len) == 0;
}

/* VALUE <key> <flags> <bytes> [<cas unique>] */
static int parse_value(const wn_mc_limits_t *lim, const char *c, uint32_t len, uint32_t pos,
                       wn_mc_response_t *r)
{
    wn_mc_span_t t[5];
    uint32_t nt = 0;
    wn_mc_span_t tok;
    while (mc_token_next(c, &pos, len, &tok)) {
        if (nt == WN_ARRAY_SIZE(t))
            return WN_EPROTO;
        t[nt++] = tok;
    }
    if (nt != 3 && nt != 4)
        return WN_EPROTO;
    if (t[0].len > WN_MC_KEY_MAX)
        return WN_EPROTO;
    uint64_t flags, bytes;
    if (!mc_read_digits(c + t[1].off, t[1].len, &flags) || flags > UINT32_MAX)
        return WN_EPROTO;
    if (!mc_read_digits(c + t[2].off, t[2].len, &bytes))
        return WN_EPROTO;
    if (bytes > lim->max_value)
        return WN_ETOOBIG;
    if (nt == 4) {
        if (!mc_read_digits(c + t[3].off, t[3].len, &r->cas))
            return WN_EPROTO;
        r->has_cas = true;
    }
    r->type = WN_MC_RSP_VALUE;
    r->key = t[0];
    r->flags = (uint32_t)flags;
    r->bytes = (uint32_t)bytes;
    r->data_len = (uint32_t)bytes + 2;
    return 0;
}

/* VA <bytes> <flags>* */
static int parse_va(const wn_mc_limits_t *lim, const char *c, uint32_t len, uint32_t pos,
                    wn_mc_response_t *r)
{
    wn_mc_span_t tok;
    uint64_t bytes;
    if (!mc_token_next(c, &pos, len, &tok) || !mc_read_digits(c + tok.off, tok.len, &bytes))
        return WN_EPROTO;
    if (bytes > lim->max_value)
        return WN_ETOOBIG;
    r->type = WN_MC_RSP_META_VA;
    r->bytes = (uint32_t)bytes;
    r->data_len = (uint32_t)bytes + 2;
    r->text.off = 0;
    r->text.len = len;
    return 0;
}

typedef struct exact {
    const char *line;
    wn_mc_rsp_type_t type;
} exact_t;

static const exact_t exact_lines[] = {
    {"END", WN_MC_RSP_END},
    {"STORED", WN_MC_RSP_STORED},
    {"NOT_STORED", WN_MC_RSP_NOT_STORED},
    {"EXISTS", WN_MC_RSP_EXISTS},
    {"NOT_FOUND", WN_MC_RSP_NOT_FOUND},
    {"DELETED", WN_MC_RSP_DELETED},
    {"TOUCHED", WN_MC_RSP_TOUCHED},
    {"OK", WN_MC_RSP_OK},
    {"RESET", WN_MC_RSP_RESET},
};

typedef struct texty {
    const char *word;
    wn_mc_rsp_type_t type;
} texty_t;

/* Words followed by free text; the word alone is accepted too. */
static const texty_t text_words[] = {
    {"VERSION", WN_MC_RSP_VERSION},
    {"CLIENT_ERROR", WN_MC_RSP_CLIENT_ERROR},
    {"SERVER_ERROR", WN_MC_RSP_SERVER_ERROR},
    {"STAT", WN_MC_RSP_STAT},
    {"ITEM", WN_MC_RSP_ITEM},
    {"PREFIX", WN_MC_RSP_PREFIX},
};

static const char *const meta_codes[] = {"HD", "EN", "NF", "NS", "EX", "MN", "ME"};

/* Recognise the line, whatever command it answers. */
static int classify(const wn_mc_limits_t *lim, const char *c, uint32_t len, wn_mc_response_t *r)
{
    uint32_t rest;
    if (len == 0)
        return WN_EPROTO;
    if (c[0] >= '0' && c[0] <= '9') {
        if (!mc_read_digits(c, len, &r->number))
            return WN_EPROTO;
        r->type = WN_MC_RSP_NUMBER;
        return 0;
    }
    for (size_t i = 0; i < WN_ARRAY_SIZE(exact_lines); i++) {
        if (line_is(c, len, exact_lines[i].line)) {
            r->type = exact_lines[i].type;
            return 0;
        }
    }
    if (word_is(c, len, "VALUE", &rest) && rest < len)
        return parse_value(lim, c, len, rest, r);
    for (size_t i = 0; i < WN_ARRAY_SIZE(text_words); i++) {
        if (word_is(c, len, text_words[i].word, &rest)) {
            r->type = text_words[i].type;
            r->text.off = rest;
            r->text.len = len - rest;
            return 0;
        }
    }
    /* "ERROR", "ERROR <text>" and memcached's own "ERROR: <text>". */
    if (len >= 5 && memcmp(c, "ERROR", 5) == 0 && (len == 5 || c[5] == ' ' || c[5] == ':')) {
        r->type = WN_MC_RSP_ERROR;
        rest = 5;
        if (rest < len && c[rest] == ':')
            rest++;
        if (rest < len && c[rest] == ' ')
            rest++;
        r->text.off = rest;
        r->text.len = len - rest;
        return 0;
    }
    if (word_is(c, len, "VA", &rest) && rest < len)
        return parse_va(lim, c, len, rest, r);
    for (size_t i = 0; i < WN_ARRAY_SIZE(meta_codes); i++) {
        if (word_is(c, len, meta_codes[i], &rest)) {
            r->type = WN_MC_RSP_META;
            r->text.off = 0;
            r->text.len = len;
            return 0;
        }
    }
    return WN_EPROTO;
}

static bool is_error(wn_mc_rsp_type_t t)
{
    return t == WN_MC_RSP_ERROR || t == WN_MC_RSP_CLIENT_ERROR || t == WN_MC_RSP_SERVER_ERROR;
}

/* Is `t` a valid next line of the reply to `cmd`; sets *done. */
static bool allowed(wn_mc_cmd_t cmd, int phase, wn_mc_rsp_type_t t, bool *done)
{
    *done = true;
    if (cmd == WN_MC_QUIT)
        return false; /* memcached closes; any byte is out of place */
    if (is_error(t))
        return true;
    switch (cmd) {
    case WN_MC_GET:
    case WN_MC_GETS:
    case WN_MC_GAT:
    case WN_MC_GATS:
        if (t == WN_MC_RSP_VALUE) {
            *done = false;
            return true;
        }
        return t == WN_MC_RSP_END;
    case WN_MC_SET:
    case WN_MC_ADD:
    case WN_MC_REPLACE:
    case WN_MC_APPEND:
    case WN_MC_PREPEND:
        return t == WN_MC_RSP_STORED || t == WN_MC_RSP_NOT_STORED;
    case WN_MC_CAS:
        return t == WN_MC_RSP_STORED || t == WN_MC_RSP_NOT_STORED || t == WN_MC_RSP_EXISTS ||
               t == WN_MC_RSP_NOT_FOUND;
    case WN_MC_INCR:
    case WN_MC_DECR:
        return t == WN_MC_RSP_NUMBER || t == WN_MC_RSP_NOT_FOUND;
    case WN_MC_TOUCH:
        return t == WN_MC_RSP_TOUCHED || t == WN_MC_RSP_NOT_FOUND;
    case WN_MC_DELETE:
        return t == WN_MC_RSP_DELETED || t == WN_MC_RSP_NOT_FOUND;
    case WN_MC_VERSION:
        return t == WN_MC_RSP_VERSION;
    case WN_MC_FLUSH_ALL:
    case WN_MC_VERBOSITY:
        return t == WN_MC_RSP_OK;
    case WN_MC_STATS:
        if (t == WN_MC_RSP_STAT || t == WN_MC_RSP_ITEM || t == WN_MC_RSP_PREFIX) {
            *done = false;
            return true;
        }
        if (t == WN_MC_RSP_END)
            return true;
        return phase == PHASE_FIRST && (t == WN_MC_RSP_RESET || t == WN_MC_RSP_OK);
    case WN_MC_META:
        return t == WN_MC_RSP_META || t == WN_MC_RSP_META_VA;
    default:
        return false;
    }
}

int wn_mc_response_parse(wn_mc_rsp_parser_t *p, wn_mc_cmd_t cmd, const char *buf, size_t n,
                         wn_mc_response_t *rsp)
{
    uint32_t line_len = 0, content_len = 0;
    int rc = mc_line_find(&p->scanned, buf, n, p->lim.max_line, &line_len, &content_len);
    if (rc == WN_EAGAIN)
        return rc;
    /* memcached ends every line with "\r\n"; a bare "\n" is not memcached
     * (and would reach the client as it came). */
    if (rc == 0 && content_len + 2 != line_len)
        rc = WN_EPROTO;
    if (rc == 0) {
        wn_mc_response_t r;
        memset(&r, 0, sizeof(r));
        r.line_len = line_len;
        rc = classify(&p->lim, buf, content_len, &r);
        if (rc == 0 && !allowed(cmd, p->phase, r.type, &r.done))
            rc = WN_EPROTO;
        if (rc == 0) {
            p->phase = r.done ? PHASE_FIRST : PHASE_MORE;
            *rsp = r;
            return (int)line_len;
        }
    }
    /* The connection is unusable after an error; leave the parser clean. */
    p->scanned = 0;
    p->phase = PHASE_FIRST;
    return rc;
}
