/*
 * proto/mc_request.c: frames and parses memcached ASCII request lines from
 * clients, accepting and rejecting exactly what memcached 1.6 does and
 * naming the reply it would send. Pure: no I/O, no allocation, no logging;
 * called on the worker thread that owns the connection.
 */
#include "walnut/proto.h"

#include "proto/mc_lex.h"
#include "walnut/core.h"

#include <string.h>

/* memcached's MAX_TOKENS (24) counts a terminal token: 23 real ones at most. */
#define MC_MAX_TOKENS 23

/* The tokens of one line as memcached's tokenizer sees them. */
typedef struct line_tokens {
    const char *buf;
    uint32_t end; /* end of the content: before "\r\n" or the first NUL */
    wn_mc_span_t t[MC_MAX_TOKENS];
    uint32_t n;  /* real tokens, at most MC_MAX_TOKENS */
    uint32_t nt; /* memcached's ntokens: n + 1 for the terminal */
} line_tokens_t;

static void tokenize(line_tokens_t *lt, const char *buf, uint32_t end)
{
    lt->buf = buf;
    lt->end = end;
    lt->n = 0;
    uint32_t pos = 0;
    wn_mc_span_t tok;
    while (lt->n < MC_MAX_TOKENS && mc_token_next(buf, &pos, end, &tok))
        lt->t[lt->n++] = tok;
    lt->nt = lt->n + 1;
}

static bool tok_is(const line_tokens_t *lt, uint32_t i, const char *s)
{
    return i < lt->n && mc_span_eq(lt->buf, lt->t[i], s);
}

/* memcached's set_noreply_maybe: the last token is exactly "noreply". */
static bool last_is_noreply(const line_tokens_t *lt)
{
    return lt->n >= 1 && tok_is(lt, lt->n - 1, "noreply");
}

static bool read_u32(const line_tokens_t *lt, uint32_t i, uint32_t *out)
{
    return mc_read_u32(lt->buf + lt->t[i].off, lt->t[i].len, out);
}

static bool read_i32(const line_tokens_t *lt, uint32_t i, int32_t *out)
{
    return mc_read_i32(lt->buf + lt->t[i].off, lt->t[i].len, out);
}

static bool read_u64(const line_tokens_t *lt, uint32_t i, uint64_t *out)
{
    return mc_read_u64(lt->buf + lt->t[i].off, lt->t[i].len, out);
}

static int reject(wn_mc_request_t *r, wn_mc_reply_t reply, wn_mc_after_t after)
{
    r->reply = reply;
    r->after = after;
    return reply == WN_MC_REPLY_TOO_LARGE ? WN_ETOOBIG : WN_EPROTO;
}

static void set_one_key(wn_mc_request_t *r, wn_mc_span_t key)
{
    r->nkeys = 1;
    r->key = key;
    r->keys = key;
}

/* The value length of set/add/.../cas/ms: memcached reads it as an int32 and
 * refuses < 0 or > INT_MAX - 2 as bad format, larger than an item as too
 * large (swallowing the data block). */
static int value_length(const wn_mc_limits_t *lim, wn_mc_request_t *r, int32_t vlen)
{
    if (vlen < 0 || vlen > INT32_MAX - 2)
        return reject(r, WN_MC_REPLY_BAD_FORMAT, WN_MC_AFTER_CONTINUE);
    r->bytes = (uint32_t)vlen;
    r->data_len = (uint32_t)vlen + 2;
    if ((uint32_t)vlen > lim->max_value)
        return reject(r, WN_MC_REPLY_TOO_LARGE, WN_MC_AFTER_SWALLOW);
    return 0;
}

/* get/gets/gat/gats: every token from `first` on is a key; none may exceed
 * the key limit (memcached then answers only the error, no partial hits).
 * memcached has looked up (gat: touched) the keys before a long one by then:
 * on that rejection nkeys, key and keys describe those keys. */
static int retrieval_keys(const line_tokens_t *lt, uint32_t first, wn_mc_request_t *r)
{
    uint32_t pos = lt->t[first - 1].off + lt->t[first - 1].len;
    r->keys.off = pos;
    r->keys.len = lt->end - pos;
    uint32_t last_end = pos;
    wn_mc_span_t tok;
    while (mc_token_next(lt->buf, &pos, lt->end, &tok)) {
        if (tok.len > WN_MC_KEY_MAX) {
            r->keys.len = last_end - r->keys.off;
            return reject(r, WN_MC_REPLY_BAD_FORMAT, WN_MC_AFTER_CONTINUE);
        }
        if (r->nkeys == 0)
            r->key = tok;
        r->nkeys++;
        last_end = tok.off + tok.len;
    }
    return 0;
}

static int parse_retrieval(const line_tokens_t *lt, wn_mc_request_t *r)
{
    /* bget: memcached's undocumented alias of get (same checks, same reply) */
    if (tok_is(lt, 0, "get") || tok_is(lt, 0, "bget"))
        r->cmd = WN_MC_GET;
    else if (tok_is(lt, 0, "gets"))
        r->cmd = WN_MC_GETS;
    else if (tok_is(lt, 0, "gat"))
        r->cmd = WN_MC_GAT;
    else if (tok_is(lt, 0, "gats"))
        r->cmd = WN_MC_GATS;
    /* memcached wants a second token before it even looks at the word */
    if (r->cmd == WN_MC_UNKNOWN || lt->nt < 3)
        return reject(r, WN_MC_REPLY_ERROR, WN_MC_AFTER_CONTINUE);

    if (r->cmd == WN_MC_GET || r->cmd == WN_MC_GETS)
        return retrieval_keys(lt, 1, r);

    if (!read_i32(lt, 1, &r->exptime))
        return reject(r, WN_MC_REPLY_BAD_EXPTIME, WN_MC_AFTER_CONTINUE);
    r->arg = lt->t[1];
    int rc = retrieval_keys(lt, 2, r);
    if (rc == 0 && r->nkeys == 0) /* "gat 10": memcached answers END */
        return reject(r, WN_MC_REPLY_END, WN_MC_AFTER_CONTINUE);
    return rc;
}

/*
 * A rejected storage line whose value length still reads as a length has
 * announced a data block: it is swallowed (data_len set, after SWALLOW).
 * memcached 1.6 runs such a block as commands instead ("set k x 0 18" then
 * "delete important"), which lets a client's data smuggle commands; walnut
 * deliberately does not. Without a readable length there is nothing to
 * swallow and the next line is parsed, as memcached does.
 */
static int reject_storage(const line_tokens_t *lt, wn_mc_request_t *r, wn_mc_reply_t reply)
{
    int32_t vlen;
    if (lt->n >= 5 && read_i32(lt, 4, &vlen) && vlen >= 0 && vlen <= INT32_MAX - 2) {
        r->data_len = (uint32_t)vlen + 2;
        return reject(r, reply, WN_MC_AFTER_SWALLOW);
    }
    return reject(r, reply, WN_MC_AFTER_CONTINUE);
}

/* set add replace append prepend: <cmd> <key> <flags> <exptime> <bytes> [noreply]
 * cas: <cmd> <key> <flags> <exptime> <bytes> <cas unique> [noreply]
 * A sixth (seventh) token that is not "noreply" is ignored, as memcached does. */
static int parse_storage(const wn_mc_limits_t *lim, const line_tokens_t *lt, wn_mc_request_t *r)
{
    bool cas = r->cmd == WN_MC_CAS;
    uint32_t want = cas ? 7 : 6;
    if (lt->nt != want && lt->nt != want + 1)
        return reject_storage(lt, r, WN_MC_REPLY_ERROR);
    r->noreply = last_is_noreply(lt);
    if (lt->t[1].len > WN_MC_KEY_MAX)
        return reject_storage(lt, r, WN_MC_REPLY_BAD_FORMAT);
    set_one_key(r, lt->t[1]);
    int32_t vlen;
    if (!read_u32(lt, 2, &r->flags) || !read_i32(lt, 3, &r->exptime) || !read_i32(lt, 4, &vlen))
        return reject_storage(lt, r, WN_MC_REPLY_BAD_FORMAT);
    if (cas && !read_u64(lt, 5, &r->cas))
        return reject_storage(lt, r, WN_MC_REPLY_BAD_FORMAT);
    return value_length(lim, r, vlen);
}

/* incr/decr <key> <delta> [noreply]; touch <key> <exptime> [noreply] */
static int parse_key_number(const line_tokens_t *lt, wn_mc_request_t *r)
{
    if (lt->nt != 4 && lt->nt != 5)
        return reject(r, WN_MC_REPLY_ERROR, WN_MC_AFTER_CONTINUE);
    r->noreply = last_is_noreply(lt);
    if (lt->t[1].len > WN_MC_KEY_MAX)
        return reject(r, WN_MC_REPLY_BAD_FORMAT, WN_MC_AFTER_CONTINUE);
    set_one_key(r, lt->t[1]);
    if (r->cmd == WN_MC_TOUCH) {
        if (!read_i32(lt, 2, &r->exptime))
            return reject(r, WN_MC_REPLY_BAD_EXPTIME, WN_MC_AFTER_CONTINUE);
    } else if (!read_u64(lt, 2, &r->delta)) {
        return reject(r, WN_MC_REPLY_BAD_DELTA, WN_MC_AFTER_CONTINUE);
    }
    return 0;
}

/* delete <key> [0] [noreply]: the legacy hold time is accepted only as "0". */
static int parse_delete(const line_tokens_t *lt, wn_mc_request_t *r)
{
    if (lt->nt < 3 || lt->nt > 5)
        return reject(r, WN_MC_REPLY_ERROR, WN_MC_AFTER_CONTINUE);
    if (lt->nt > 3) {
        bool zero = tok_is(lt, 2, "0");
        r->noreply = last_is_noreply(lt);
        bool valid = (lt->nt == 4 && (zero || r->noreply)) || (lt->nt == 5 && zero && r->noreply);
        if (!valid)
            return reject(r, WN_MC_REPLY_BAD_DELETE, WN_MC_AFTER_CONTINUE);
    }
    if (lt->t[1].len > WN_MC_KEY_MAX)
        return reject(r, WN_MC_REPLY_BAD_FORMAT, WN_MC_AFTER_CONTINUE);
    set_one_key(r, lt->t[1]);
    return 0;
}

/* flush_all [exptime] [noreply] */
static int parse_flush_all(const line_tokens_t *lt, wn_mc_request_t *r)
{
    if (lt->nt < 2 || lt->nt > 4)
        return reject(r, WN_MC_REPLY_ERROR, WN_MC_AFTER_CONTINUE);
    r->noreply = last_is_noreply(lt);
    if (lt->nt != (r->noreply ? 3u : 2u)) {
        if (!read_i32(lt, 1, &r->exptime))
            return reject(r, WN_MC_REPLY_BAD_EXPTIME, WN_MC_AFTER_CONTINUE);
        r->arg = lt->t[1];
    }
    return 0;
}

/* verbosity <level> [noreply]; "verbosity noreply" is an (unsent) ERROR. */
static int parse_verbosity(const line_tokens_t *lt, wn_mc_request_t *r)
{
    if (lt->nt != 3 && lt->nt != 4)
        return reject(r, WN_MC_REPLY_ERROR, WN_MC_AFTER_CONTINUE);
    r->noreply = last_is_noreply(lt);
    if (r->noreply && lt->nt == 3)
        return reject(r, WN_MC_REPLY_ERROR, WN_MC_AFTER_CONTINUE);
    uint32_t level;
    if (!read_u32(lt, 1, &level))
        return reject(r, WN_MC_REPLY_BAD_FORMAT, WN_MC_AFTER_CONTINUE);
    r->arg = lt->t[1];
    return 0;
}

/*
 * mg ms md ma mn me: classified and framed only (key, and ms's data block),
 * with the checks memcached makes before looking at flags. Flags are left to
 * the backend. Meta errors are always sent, so noreply stays false.
 */
static int parse_meta(const wn_mc_limits_t *lim, const line_tokens_t *lt, wn_mc_request_t *r)
{
    char m = lt->buf[lt->t[0].off + 1];
    r->cmd = WN_MC_META;
    r->meta = m;
    switch (m) {
    case 'n':
        return 0;
    case 'e':
        if (lt->nt < 3)
            return reject(r, WN_MC_REPLY_BAD_FORMAT, WN_MC_AFTER_CONTINUE);
        break;
    case 'g':
    case 's':
    case 'd':
    case 'a':
        if (lt->nt < 3)
            return reject(r, WN_MC_REPLY_ERROR, WN_MC_AFTER_CONTINUE);
        break;
    default:
        r->cmd = WN_MC_UNKNOWN;
        r->meta = 0;
        return reject(r, WN_MC_REPLY_ERROR, WN_MC_AFTER_CONTINUE);
    }
    if (lt->t[1].len > WN_MC_KEY_MAX)
        return reject(r, WN_MC_REPLY_BAD_FORMAT, WN_MC_AFTER_CONTINUE);
    set_one_key(r, lt->t[1]);
    if (m != 's')
        return 0;
    int32_t vlen;
    if (lt->nt < 4 || !read_i32(lt, 2, &vlen))
        return reject(r, WN_MC_REPLY_BAD_FORMAT, WN_MC_AFTER_CONTINUE);
    return value_length(lim, r, vlen);
}

typedef struct word {
    const char *name;
    wn_mc_cmd_t cmd;
} word_t;

static const word_t words[] = {
    {"set", WN_MC_SET},
    {"add", WN_MC_ADD},
    {"replace", WN_MC_REPLACE},
    {"append", WN_MC_APPEND},
    {"prepend", WN_MC_PREPEND},
    {"cas", WN_MC_CAS},
    {"incr", WN_MC_INCR},
    {"decr", WN_MC_DECR},
    {"touch", WN_MC_TOUCH},
    {"delete", WN_MC_DELETE},
    {"quit", WN_MC_QUIT},
    {"version", WN_MC_VERSION},
    {"flush_all", WN_MC_FLUSH_ALL},
    {"verbosity", WN_MC_VERBOSITY},
    {"stats", WN_MC_STATS},
};

static int parse_line(const wn_mc_limits_t *lim, const char *buf, uint32_t end, wn_mc_request_t *r)
{
    line_tokens_t lt;
    tokenize(&lt, buf, end);
    /* No token, or a one-byte word: no command is that short. */
    if (lt.n == 0 || lt.t[0].len < 2)
        return reject(r, WN_MC_REPLY_ERROR, WN_MC_AFTER_CONTINUE);

    char first = buf[lt.t[0].off];
    if (first == 'm' && lt.t[0].len == 2)
        return parse_meta(lim, &lt, r);
    if (first == 'g' || tok_is(&lt, 0, "bget"))
        return parse_retrieval(&lt, r);

    for (size_t i = 0; i < WN_ARRAY_SIZE(words); i++) {
        if (!tok_is(&lt, 0, words[i].name))
            continue;
        r->cmd = words[i].cmd;
        switch (r->cmd) {
        case WN_MC_SET:
        case WN_MC_ADD:
        case WN_MC_REPLACE:
        case WN_MC_APPEND:
        case WN_MC_PREPEND:
        case WN_MC_CAS:
            return parse_storage(lim, &lt, r);
        case WN_MC_INCR:
        case WN_MC_DECR:
        case WN_MC_TOUCH:
            return parse_key_number(&lt, r);
        case WN_MC_DELETE:
            return parse_delete(&lt, r);
        case WN_MC_FLUSH_ALL:
            return parse_flush_all(&lt, r);
        case WN_MC_VERBOSITY:
            return parse_verbosity(&lt, r);
        case WN_MC_STATS:
            if (lt.n > 1) {
                r->arg.off = lt.t[1].off;
                r->arg.len = end - lt.t[1].off;
            }
            return 0;
        default: /* quit, version: memcached ignores any further tokens */
            return 0;
        }
    }

    /* Unknown word. memcached closes silently on what looks like HTTP, but
     * only for words outside its first-letter dispatch (s a c i d t g). */
    r->cmd = WN_MC_UNKNOWN;
    if (strchr("sacidt", first) == NULL) {
        wn_mc_span_t last = lt.t[lt.n - 1];
        if (last.len >= 5 && memcmp(buf + last.off, "HTTP/", 5) == 0)
            return reject(r, WN_MC_REPLY_NONE, WN_MC_AFTER_CLOSE);
    }
    return reject(r, WN_MC_REPLY_ERROR, WN_MC_AFTER_CONTINUE);
}

void wn_mc_req_parser_init(wn_mc_req_parser_t *p, const wn_mc_limits_t *lim)
{
    p->lim = mc_limits(lim);
    p->scanned = 0;
}

/* Does the line start like a retrieval ("get ", "gets ", "gat ", "gats "
 * after any spaces)? Those may be as long as max_retrieval_line. */
static bool looks_like_retrieval(const char *buf, size_t n)
{
    size_t i = 0;
    while (i < n && i < 64 && buf[i] == ' ')
        i++;
    static const char *const starts[] = {"get ", "gets ", "gat ", "gats "};
    for (size_t w = 0; w < WN_ARRAY_SIZE(starts); w++) {
        size_t len = strlen(starts[w]);
        if (n - i >= len && memcmp(buf + i, starts[w], len) == 0)
            return true;
    }
    return false;
}

int wn_mc_request_parse(wn_mc_req_parser_t *p, const char *buf, size_t n, wn_mc_request_t *req)
{
    uint32_t line_len = 0, content_len = 0;
    uint32_t max_line = p->lim.max_line;
    if (n > max_line / 2 && p->lim.max_retrieval_line > max_line && looks_like_retrieval(buf, n))
        max_line = p->lim.max_retrieval_line;
    int rc = mc_line_find(&p->scanned, buf, n, max_line, &line_len, &content_len);
    if (rc == WN_EAGAIN)
        return rc;

    wn_mc_request_t r;
    memset(&r, 0, sizeof(r));
    if (rc == WN_ETOOBIG) {
        p->scanned = 0;
        r.reply = WN_MC_REPLY_LINE_TOO_LONG;
        r.after = WN_MC_AFTER_CLOSE;
        *req = r;
        return WN_ETOOBIG;
    }
    r.line_len = line_len;
    /* memcached hands the line to strlen(): a NUL ends its content. */
    const char *nul = memchr(buf, '\0', content_len);
    uint32_t end = nul != NULL ? (uint32_t)(nul - buf) : content_len;
    rc = parse_line(&p->lim, buf, end, &r);
    *req = r;
    return rc == 0 ? (int)line_len : rc;
}

bool wn_mc_key_next(const char *line, const wn_mc_request_t *req, uint32_t *cursor,
                    wn_mc_span_t *key)
{
    if (req->nkeys == 0)
        return false;
    uint32_t end = req->keys.off + req->keys.len;
    uint32_t pos = *cursor == 0 ? req->keys.off : *cursor;
    if (pos < req->keys.off || pos > end)
        return false;
    bool more = mc_token_next(line, &pos, end, key);
    *cursor = pos;
    return more;
}
