/*
 * proto/mc_meta.c: frames and validates memcached meta request lines (mg ms
 * md ma mn me) exactly as memcached 1.6.18 does, and writes a request line
 * without its quiet flag. Pure: no I/O, no allocation, no logging; called on
 * the worker thread that owns the client connection.
 */
#include "walnut/proto_meta.h"

#include "proto/mc_lex.h"
#include "walnut/core.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Tokens counted; one more than memcached's limit is enough to refuse. */
#define META_TOKENS_SEEN (WN_META_TOKENS_MAX + 1)

typedef struct meta_line {
    const char *buf;
    uint32_t end; /* end of the content: before "\r\n" or the first NUL */
    wn_mc_span_t t[META_TOKENS_SEEN];
    uint32_t n; /* tokens seen, at most META_TOKENS_SEEN */
} meta_line_t;

static const char *const cmd_names[] = {
    "none",
#define WN_META_CMD_NAME(up, name) name,
    WN_META_CMD_MAP(WN_META_CMD_NAME)
#undef WN_META_CMD_NAME
};

const char *wn_meta_cmd_name(wn_meta_cmd_t cmd)
{
    if ((unsigned)cmd >= WN_META_CMD_COUNT)
        return NULL;
    return cmd_names[cmd];
}

static const char *const err_texts[] = {
#define WN_META_ERR_TEXT(up, text) text "\r\n",
    WN_META_ERR_MAP(WN_META_ERR_TEXT)
#undef WN_META_ERR_TEXT
};

const char *wn_meta_err_text(wn_meta_err_t err, size_t *len)
{
    const char *t = (unsigned)err < WN_META_ERR_COUNT && err != WN_META_ERR_NONE ? err_texts[err] : "";
    if (len != NULL)
        *len = strlen(t);
    return t;
}

static int reject(wn_meta_request_t *r, wn_meta_err_t err)
{
    r->err = err;
    r->after = r->data_len > 0 ? WN_MC_AFTER_SWALLOW : WN_MC_AFTER_CONTINUE;
    return err == WN_META_ERR_TOO_LARGE ? WN_ETOOBIG : WN_EPROTO;
}

static const char *tok_at(const meta_line_t *ml, uint32_t i)
{
    return ml->buf + ml->t[i].off;
}

/* ---- flags ------------------------------------------------------------- */

/* What memcached's flag pass concluded: the message of the last failing
 * flag (BAD_FORMAT when only F failed), or NONE. */
typedef struct flag_pass {
    wn_meta_err_t err;
    bool failed;
} flag_pass_t;

static void fail(flag_pass_t *fp, wn_meta_err_t err)
{
    fp->failed = true;
    if (err != WN_META_ERR_NONE)
        fp->err = err;
}

/* A numeric flag argument: the bytes after the letter, read the way
 * memcached's safe_strto* read them. */
static void check_number(flag_pass_t *fp, const char *s, uint32_t len, char letter)
{
    uint64_t u64;
    uint32_t u32;
    int32_t i32;
    switch (letter) {
    case 'N':
    case 'T':
    case 'R':
        if (!mc_read_i32(s, len, &i32))
            fail(fp, WN_META_ERR_BAD_TOKEN);
        break;
    case 'F':
        if (!mc_read_u32(s, len, &u32))
            fail(fp, WN_META_ERR_NONE); /* memcached sets no message for F */
        break;
    case 'C':
        if (!mc_read_u64(s, len, &u64))
            fail(fp, WN_META_ERR_BAD_TOKEN);
        break;
    case 'J':
        if (!mc_read_u64(s, len, &u64))
            fail(fp, WN_META_ERR_BAD_INITIAL);
        break;
    case 'D':
        if (!mc_read_u64(s, len, &u64))
            fail(fp, WN_META_ERR_BAD_DELTA);
        break;
    default:
        break;
    }
}

/* One flag token; false ends the pass at once (unknown letter). */
static bool check_flag(const meta_line_t *ml, uint32_t i, wn_meta_request_t *r, flag_pass_t *fp)
{
    const char *s = tok_at(ml, i);
    uint32_t len = ml->t[i].len;
    switch (s[0]) {
    case 'b':
        r->base64 = true;
        if (wn_meta_base64_decode(tok_at(ml, 1), ml->t[1].len, NULL, 0) < 0)
            fail(fp, WN_META_ERR_DECODE_KEY);
        return true;
    case 'q':
        r->quiet = true;
        r->quiet_flag = ml->t[i];
        return true;
    case 'k':
        r->want_key = true;
        return true;
    case 'O':
        r->opaque = ml->t[i];
        return true;
    case 'M':
        if (len != 2)
            fail(fp, WN_META_ERR_M_LENGTH);
        else
            r->mode = s[1];
        return true;
    case 'N': case 'T': case 'R': case 'F': case 'C': case 'J': case 'D':
        check_number(fp, s + 1, len - 1, s[0]);
        return true;
    case 'l': case 'P': case 'L': case 's': case 't': case 'c': case 'f': case 'v':
    case 'h': case 'u': case 'I':
        return true;
    default:
        fail(fp, WN_META_ERR_INVALID_FLAG);
        return false;
    }
}

/* memcached's flag pass over tokens [first, n): records every flag; a
 * repeated first byte (or one >= 0x7f) or an unknown letter stops it. */
static wn_meta_err_t check_flags(const meta_line_t *ml, uint32_t first, wn_meta_request_t *r)
{
    flag_pass_t fp = {WN_META_ERR_BAD_FORMAT, false};
    bool seen[128] = {false};
    for (uint32_t i = first; i < ml->n; i++) {
        unsigned char o = (unsigned char)tok_at(ml, i)[0];
        r->flags[r->nflags].off = ml->t[i].off;
        r->flags[r->nflags].len = ml->t[i].len;
        r->nflags++;
        if (o >= 127 || seen[o]) {
            fail(&fp, WN_META_ERR_DUPLICATE);
            break;
        }
        seen[o] = true;
        if (!check_flag(ml, i, r, &fp))
            break;
    }
    return fp.failed ? fp.err : WN_META_ERR_NONE;
}

/* ---- commands ---------------------------------------------------------- */

static bool opaque_too_long(const wn_meta_request_t *r)
{
    return r->opaque.len > WN_META_OPAQUE_MAX;
}

/* mg md ma: <cmd> <key> <flags>* */
static int parse_keyed(const meta_line_t *ml, wn_meta_request_t *r)
{
    if (ml->n < 2)
        return reject(r, WN_META_ERR_ERROR);
    if (ml->t[1].len > WN_MC_KEY_MAX)
        return reject(r, WN_META_ERR_BAD_FORMAT);
    if (ml->n > WN_META_TOKENS_MAX)
        return reject(r, r->cmd == WN_META_MG ? WN_META_ERR_MG_TOO_MANY : WN_META_ERR_TOO_MANY);
    wn_meta_err_t err = check_flags(ml, 2, r);
    if (err != WN_META_ERR_NONE)
        return reject(r, r->cmd == WN_META_MG ? err : WN_META_ERR_INVALID_OR_DUP);
    if (r->cmd == WN_META_MA && r->mode != 0 && strchr("I+D-", r->mode) == NULL)
        return reject(r, WN_META_ERR_MA_MODE);
    if (opaque_too_long(r) && r->cmd == WN_META_MD)
        return reject(r, WN_META_ERR_OPAQUE_TOO_LONG);
    r->opaque_too_long = opaque_too_long(r);
    return 0;
}

/* ms <key> <datalen> <flags>* */
static int parse_ms(const wn_mc_limits_t *lim, const meta_line_t *ml, wn_meta_request_t *r)
{
    if (ml->n < 2)
        return reject(r, WN_META_ERR_ERROR);
    int32_t vlen = -1;
    bool readable = ml->n >= 3 && mc_read_i32(tok_at(ml, 2), ml->t[2].len, &vlen) && vlen >= 0 &&
                    vlen <= INT32_MAX - 2;
    if (readable) {
        /* From here on every rejection swallows the announced block. */
        r->bytes = (uint32_t)vlen;
        r->data_len = (uint32_t)vlen + 2;
    }
    if (ml->t[1].len > WN_MC_KEY_MAX || ml->n == 2)
        return reject(r, WN_META_ERR_BAD_FORMAT);
    if (ml->n > WN_META_TOKENS_MAX)
        return reject(r, WN_META_ERR_TOO_MANY);
    if (!readable)
        return reject(r, WN_META_ERR_BAD_FORMAT);
    wn_meta_err_t err = check_flags(ml, 3, r);
    if (err != WN_META_ERR_NONE)
        return reject(r, err);
    if (r->mode != 0 && strchr("EAPRS", r->mode) == NULL)
        return reject(r, WN_META_ERR_MS_MODE);
    if (opaque_too_long(r))
        return reject(r, WN_META_ERR_OPAQUE_TOO_LONG);
    if (r->bytes > lim->max_value)
        return reject(r, WN_META_ERR_TOO_LARGE);
    return 0;
}

/* me <key> [b]: memcached looks at nothing else. */
static int parse_me(const meta_line_t *ml, wn_meta_request_t *r)
{
    if (ml->n < 2 || ml->t[1].len > WN_MC_KEY_MAX)
        return reject(r, WN_META_ERR_BAD_FORMAT);
    if (ml->n >= 3 && ml->t[2].len == 1 && tok_at(ml, 2)[0] == 'b') {
        r->base64 = true;
        if (wn_meta_base64_decode(tok_at(ml, 1), ml->t[1].len, NULL, 0) < 0)
            return reject(r, WN_META_ERR_BAD_FORMAT);
    }
    return 0;
}

static wn_meta_cmd_t command_of(const meta_line_t *ml)
{
    if (ml->n == 0 || ml->t[0].len != 2 || tok_at(ml, 0)[0] != 'm')
        return WN_META_NONE;
    const char *letters = "gsdane";
    const char *at = strchr(letters, tok_at(ml, 0)[1]);
    if (at == NULL || *at == '\0')
        return WN_META_NONE;
    return (wn_meta_cmd_t)(WN_META_MG + (at - letters));
}

static void tokenize(meta_line_t *ml, const char *buf, uint32_t end)
{
    ml->buf = buf;
    ml->end = end;
    ml->n = 0;
    uint32_t pos = 0;
    wn_mc_span_t tok;
    while (ml->n < META_TOKENS_SEEN && mc_token_next(buf, &pos, end, &tok))
        ml->t[ml->n++] = tok;
}

static int parse_content(const wn_mc_limits_t *lim, const meta_line_t *ml, wn_meta_request_t *r)
{
    r->cmd = command_of(ml);
    if (r->cmd == WN_META_NONE) {
        bool meta_word = ml->n > 0 && ml->t[0].len == 2 && tok_at(ml, 0)[0] == 'm';
        if (!meta_word)
            return WN_EINVAL;
        return reject(r, WN_META_ERR_ERROR); /* "mx": memcached says ERROR */
    }
    if (ml->n >= 2)
        r->key = ml->t[1];
    switch (r->cmd) {
    case WN_META_MN:
        r->key.len = 0;
        return 0;
    case WN_META_ME:
        return parse_me(ml, r);
    case WN_META_MS:
        return parse_ms(lim, ml, r);
    default:
        return parse_keyed(ml, r);
    }
}

int wn_meta_line_parse(const wn_mc_limits_t *lim, const char *line, uint32_t line_len,
                       wn_meta_request_t *req)
{
    wn_mc_limits_t l = mc_limits(lim);
    wn_meta_request_t r;
    memset(&r, 0, sizeof(r));
    r.line_len = line_len;
    uint32_t end = line_len;
    if (end > 0 && line[end - 1] == '\n')
        end--;
    if (end > 0 && line[end - 1] == '\r')
        end--;
    const char *nul = memchr(line, '\0', end);
    if (nul != NULL)
        end = (uint32_t)(nul - line);

    meta_line_t ml;
    tokenize(&ml, line, end);
    int rc = parse_content(&l, &ml, &r);
    if (rc == 0 && r.cmd != WN_META_MN) {
        r.key_decoded_len = r.key.len;
        if (r.base64)
            r.key_decoded_len = (uint32_t)wn_meta_base64_decode(line + r.key.off, r.key.len, NULL, 0);
    }
    if (rc == 0 && r.cmd != WN_META_MS)
        r.bytes = r.data_len = 0;
    *req = r;
    return rc == 0 ? (int)line_len : rc;
}

int wn_meta_request_parse(wn_mc_req_parser_t *p, const char *buf, size_t n,
                          wn_meta_request_t *req)
{
    uint32_t line_len = 0, content_len = 0;
    int rc = mc_line_find(&p->scanned, buf, n, p->lim.max_line, &line_len, &content_len);
    if (rc == WN_EAGAIN)
        return rc;
    if (rc == WN_ETOOBIG) {
        p->scanned = 0;
        memset(req, 0, sizeof(*req));
        req->err = WN_META_ERR_LINE_TOO_LONG;
        req->after = WN_MC_AFTER_CLOSE;
        return WN_ETOOBIG;
    }
    return wn_meta_line_parse(&p->lim, buf, line_len, req);
}

int wn_meta_key_decode(const char *line, const wn_meta_request_t *req, uint8_t *dst, size_t cap)
{
    if (req->base64)
        return wn_meta_base64_decode(line + req->key.off, req->key.len, dst, cap);
    if (req->key.len > cap)
        return WN_ETOOBIG;
    memcpy(dst, line + req->key.off, req->key.len);
    return (int)req->key.len;
}

int wn_meta_compose_without_quiet(char *dst, size_t cap, const char *line,
                                  const wn_meta_request_t *req)
{
    wn_mc_span_t q = req->quiet_flag;
    if (!req->quiet || q.len == 0 || q.off == 0 || q.off + q.len > req->line_len)
        return WN_EINVAL;
    /* the q token goes with the space before it (flags follow the key, so
     * there is one) */
    uint32_t cut = q.off - 1;
    uint32_t rest = req->line_len - (q.off + q.len);
    /* "mg k\r q\n": the key ends in a CR; with only the bare LF after it,
     * that CR would become the line end and leave the key: add one. */
    uint32_t guard = rest == 1 && cut > 0 && line[cut - 1] == '\r';
    uint32_t total = cut + guard + rest;
    if (total > cap)
        return WN_ETOOBIG;
    memcpy(dst, line, cut);
    if (guard)
        dst[cut] = '\r';
    memcpy(dst + cut + guard, line + q.off + q.len, rest);
    return (int)total;
}

/* One flag as memcached takes it, after a space; false if it does not read
 * (never for an accepted request). */
static int canonical_flag(char *out, size_t cap, const char *tok, uint32_t len)
{
    const char *num = tok + 1;
    uint32_t nlen = len - 1;
    int32_t i32;
    uint32_t u32;
    uint64_t u64;
    switch (tok[0]) {
    case 'N':
    case 'T':
    case 'R':
        if (!mc_read_i32(num, nlen, &i32))
            return WN_EINVAL;
        return snprintf(out, cap, " %c%" PRId32, tok[0], i32);
    case 'F':
        if (!mc_read_u32(num, nlen, &u32))
            return WN_EINVAL;
        return snprintf(out, cap, " F%" PRIu32, u32);
    case 'C':
    case 'J':
    case 'D':
        if (!mc_read_u64(num, nlen, &u64))
            return WN_EINVAL;
        return snprintf(out, cap, " %c%" PRIu64, tok[0], u64);
    case 'O':
        /* one over memcached's bound is refused as any longer one is */
        return snprintf(out, cap, " %.*s", (int)WN_MIN(len, WN_META_CANONICAL_OPAQUE), tok);
    case 'M':
        return snprintf(out, cap, " %.*s", (int)len, tok);
    default:
        return snprintf(out, cap, " %c", tok[0]);
    }
}

int wn_meta_compose_canonical(char *dst, size_t cap, const char *line,
                              const wn_meta_request_t *req)
{
    if (req->cmd == WN_META_NONE || req->cmd == WN_META_MN || req->cmd >= WN_META_CMD_COUNT)
        return WN_EINVAL;
    char buf[WN_META_CANONICAL_MAX];
    size_t o = 0;
    int n = snprintf(buf, sizeof buf, "%s %.*s", wn_meta_cmd_name(req->cmd), (int)req->key.len,
                     line + req->key.off);
    if (n < 0 || (size_t)n >= sizeof buf)
        return WN_EINVAL;
    o = (size_t)n;
    if (req->cmd == WN_META_MS) {
        n = snprintf(buf + o, sizeof buf - o, " %" PRIu32, req->bytes);
        o += (size_t)n;
    } else if (req->cmd == WN_META_ME && req->base64) {
        n = snprintf(buf + o, sizeof buf - o, " b");
        o += (size_t)n;
    }
    for (uint32_t i = 0; i < req->nflags; i++) {
        const char *tok = line + req->flags[i].off;
        uint32_t len = req->flags[i].len;
        if (req->quiet && req->flags[i].off == req->quiet_flag.off)
            continue;
        n = canonical_flag(buf + o, sizeof buf - o, tok, len);
        if (n < 0 || (size_t)n >= sizeof buf - o)
            return WN_EINVAL;
        o += (size_t)n;
    }
    if (o + 2 > sizeof buf)
        return WN_EINVAL;
    memcpy(buf + o, "\r\n", 2);
    o += 2;
    if (o > cap)
        return WN_ETOOBIG;
    memcpy(dst, buf, o);
    return (int)o;
}

bool wn_meta_tag_fits(const wn_meta_request_t *req, bool keep_quiet)
{
    bool drop_q = req->quiet && !keep_quiet;
    uint32_t tokens = 2 + (req->cmd == WN_META_MS) + req->nflags - drop_q;
    return req->opaque.len > 0 || tokens + 1 <= WN_META_TOKENS_MAX;
}

int wn_meta_compose_tagged(char *dst, size_t cap, const char *line, const wn_meta_request_t *req,
                           bool keep_quiet, bool canonical, const char *tag, size_t taglen)
{
    if (req->cmd != WN_META_MG && req->cmd != WN_META_MS && req->cmd != WN_META_MD &&
        req->cmd != WN_META_MA)
        return WN_EINVAL;
    if (taglen < 2 || taglen > WN_META_OPAQUE_MAX || tag[0] != 'O' ||
        memchr(tag, ' ', taglen) != NULL)
        return WN_EINVAL;
    bool drop_q = req->quiet && !keep_quiet;
    if (!wn_meta_tag_fits(req, keep_quiet))
        return WN_EFULL;
    char num[WN_META_OPAQUE_MAX + 16];
    size_t o = 0;
    const char *name = wn_meta_cmd_name(req->cmd);
    /* tokens in order; a NULL tok ends the line */
    for (uint32_t i = 0;; i++) {
        const char *tok;
        size_t len;
        if (i == 0) {
            tok = name;
            len = strlen(name);
        } else if (i == 1) {
            tok = line + req->key.off;
            len = req->key.len;
        } else if (i == 2 && req->cmd == WN_META_MS) {
            int n = snprintf(num, sizeof num, "%" PRIu32, req->bytes);
            tok = num;
            len = (size_t)n;
        } else {
            uint32_t f = i - 2 - (req->cmd == WN_META_MS);
            if (f > req->nflags || (f == req->nflags && req->opaque.len > 0))
                break;
            if (f == req->nflags) {
                tok = tag; /* no O of the client's: the tag goes last */
                len = taglen;
            } else if (drop_q && req->flags[f].off == req->quiet_flag.off) {
                continue;
            } else if (req->opaque.len > 0 && req->flags[f].off == req->opaque.off) {
                tok = tag;
                len = taglen;
            } else if (canonical) {
                int n =
                    canonical_flag(num, sizeof num, line + req->flags[f].off, req->flags[f].len);
                if (n < 2 || (size_t)n >= sizeof num)
                    return WN_EINVAL;
                tok = num + 1; /* after its space */
                len = (size_t)n - 1;
            } else {
                tok = line + req->flags[f].off;
                len = req->flags[f].len;
            }
        }
        if (o + (i > 0) + len > cap)
            return WN_ETOOBIG;
        if (i > 0)
            dst[o++] = ' ';
        memcpy(dst + o, tok, len);
        o += len;
    }
    if (o + 2 > cap)
        return WN_ETOOBIG;
    memcpy(dst + o, "\r\n", 2);
    return (int)(o + 2);
}
