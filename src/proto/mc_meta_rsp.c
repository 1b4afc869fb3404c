/*
 * proto/mc_meta_rsp.c: frames memcached meta reply lines from a server,
 * says which replies can answer which meta command, and which of them a
 * client that asked with q must not see (memcached 1.6.18, measured). Pure:
 * no I/O, no allocation, no logging; called on the worker thread that owns
 * the server connection.
 */
#include "walnut/proto_meta.h"

#include "proto/mc_lex.h"
#include "walnut/core.h"

#include <string.h>

static const char *const rsp_names[] = {
#define WN_META_RSP_NAME(up) #up,
    WN_META_RSP_MAP(WN_META_RSP_NAME)
#undef WN_META_RSP_NAME
};

const char *wn_meta_rsp_type_name(wn_meta_rsp_type_t type)
{
    if ((unsigned)type >= WN_META_RSP_COUNT)
        return NULL;
    return rsp_names[type];
}

/* Does the content start with word w, followed by its end or a space? On a
 * match *rest is the offset after the word and its space. */
static bool word_is(const char *c, uint32_t len, const char *w, uint32_t *rest)
{
    uint32_t wl = (uint32_t)strlen(w);
    if (len < wl || memcmp(c, w, wl) != 0 || (len > wl && c[wl] != ' '))
        return false;
    *rest = len > wl ? wl + 1 : wl;
    return true;
}

/* The returned flags from `pos`: note k, O and b. Two O tokens are no
 * reply memcached sends: the one not checked would reach the client with
 * whatever it carries (walnut's own tag, say), so the line is refused. */
static int scan_flags(const char *c, uint32_t len, uint32_t pos, wn_meta_response_t *r)
{
    r->flags.off = pos;
    r->flags.len = len - pos;
    wn_mc_span_t tok;
    bool opaque = false;
    while (mc_token_next(c, &pos, len, &tok)) {
        char f = c[tok.off];
        if (f == 'k') {
            r->key.off = tok.off + 1;
            r->key.len = tok.len - 1;
        } else if (f == 'O') {
            if (opaque)
                return WN_EPROTO;
            opaque = true;
            r->opaque = tok;
        } else if (f == 'b' && tok.len == 1) {
            r->base64 = true;
        }
    }
    return 0;
}

static int parse_va(const wn_mc_limits_t *lim, const char *c, uint32_t len, uint32_t pos,
                    wn_meta_response_t *r)
{
    wn_mc_span_t tok;
    uint64_t bytes;
    if (!mc_token_next(c, &pos, len, &tok) || tok.off != 3 ||
        !mc_read_digits(c + tok.off, tok.len, &bytes))
        return WN_EPROTO;
    if (bytes > lim->max_value)
        return WN_ETOOBIG;
    r->type = WN_META_RSP_VA;
    r->bytes = (uint32_t)bytes;
    r->data_len = (uint32_t)bytes + 2;
    return scan_flags(c, len, pos < len ? pos + 1 : pos, r);
}

typedef struct code {
    const char *word;
    wn_meta_rsp_type_t type;
} code_t;

static const code_t flag_codes[] = {
    {"HD", WN_META_RSP_HD}, {"EN", WN_META_RSP_EN}, {"NF", WN_META_RSP_NF},
    {"NS", WN_META_RSP_NS}, {"EX", WN_META_RSP_EX},
};

static const code_t text_codes[] = {
    {"ERROR", WN_META_RSP_ERROR},
    {"CLIENT_ERROR", WN_META_RSP_CLIENT_ERROR},
    {"SERVER_ERROR", WN_META_RSP_SERVER_ERROR},
};

static int classify(const wn_mc_limits_t *lim, const char *c, uint32_t len, wn_meta_response_t *r)
{
    uint32_t rest;
    if (len == 2 && memcmp(c, "MN", 2) == 0) {
        r->type = WN_META_RSP_MN;
        r->flags.off = 2;
        return 0;
    }
    if (word_is(c, len, "VA", &rest) && rest < len)
        return parse_va(lim, c, len, rest, r);
    for (size_t i = 0; i < WN_ARRAY_SIZE(flag_codes); i++) {
        if (word_is(c, len, flag_codes[i].word, &rest)) {
            r->type = flag_codes[i].type;
            return scan_flags(c, len, rest, r);
        }
    }
    if (word_is(c, len, "ME", &rest) && rest < len) {
        r->type = WN_META_RSP_ME;
        r->flags.off = rest;
        r->flags.len = len - rest;
        uint32_t pos = rest;
        return mc_token_next(c, &pos, len, &r->key) ? 0 : WN_EPROTO;
    }
    for (size_t i = 0; i < WN_ARRAY_SIZE(text_codes); i++) {
        if (word_is(c, len, text_codes[i].word, &rest)) {
            r->type = text_codes[i].type;
            r->flags.off = rest;
            r->flags.len = len - rest;
            return 0;
        }
    }
    return WN_EPROTO;
}

int wn_meta_response_parse(wn_mc_rsp_parser_t *p, const char *buf, size_t n,
                           wn_meta_response_t *rsp)
{
    uint32_t line_len = 0, content_len = 0;
    int rc = mc_line_find(&p->scanned, buf, n, p->lim.max_line, &line_len, &content_len);
    if (rc == WN_EAGAIN)
        return rc;
    if (rc == 0 && content_len + 2 != line_len)
        rc = WN_EPROTO; /* a bare "\n": not memcached (wn_mc_response_parse) */
    if (rc == 0) {
        wn_meta_response_t r;
        memset(&r, 0, sizeof(r));
        r.line_len = line_len;
        rc = classify(&p->lim, buf, content_len, &r);
        if (rc == 0) {
            *rsp = r;
            return (int)line_len;
        }
    }
    p->scanned = 0;
    return rc;
}

static bool is_error(wn_meta_rsp_type_t t)
{
    return t == WN_META_RSP_ERROR || t == WN_META_RSP_CLIENT_ERROR ||
           t == WN_META_RSP_SERVER_ERROR;
}

/* One bit per reply type. */
#define B(t) (1u << WN_META_RSP_##t)

static uint32_t allowed_set(wn_meta_cmd_t cmd)
{
    switch (cmd) {
    case WN_META_MG:
        return B(HD) | B(VA) | B(EN);
    case WN_META_MS:
        return B(HD) | B(NS) | B(EX) | B(NF);
    case WN_META_MD:
        return B(HD) | B(NF) | B(EX);
    case WN_META_MA:
        return B(HD) | B(VA) | B(NF) | B(NS) | B(EX);
    case WN_META_MN:
        return B(MN);
    case WN_META_ME:
        return B(ME) | B(EN);
    default:
        return 0;
    }
}

/* The replies memcached withholds from a request with q. */
static uint32_t quiet_set(wn_meta_cmd_t cmd)
{
    switch (cmd) {
    case WN_META_MG:
        return B(EN);
    case WN_META_MS:
    case WN_META_MD:
        return B(HD);
    case WN_META_MA:
        return B(HD) | B(VA);
    default:
        return 0;
    }
}

bool wn_meta_reply_allowed(wn_meta_cmd_t cmd, wn_meta_rsp_type_t type)
{
    if ((unsigned)type >= WN_META_RSP_COUNT || cmd == WN_META_NONE ||
        (unsigned)cmd >= WN_META_CMD_COUNT)
        return false;
    return is_error(type) || (allowed_set(cmd) & (1u << type)) != 0;
}

bool wn_meta_rsp_echoes_opaque(wn_meta_rsp_type_t type)
{
    switch (type) {
    case WN_META_RSP_HD:
    case WN_META_RSP_VA:
    case WN_META_RSP_EN:
    case WN_META_RSP_NF:
    case WN_META_RSP_NS:
    case WN_META_RSP_EX:
        return true;
    default:
        return false;
    }
}

bool wn_meta_quiet_drops(wn_meta_cmd_t cmd, wn_meta_rsp_type_t type)
{
    if ((unsigned)type >= WN_META_RSP_COUNT)
        return false;
    return (quiet_set(cmd) & (1u << type)) != 0;
}
