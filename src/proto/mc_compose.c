/*
 * proto/mc_compose.c: what the proxy writes itself in memcached's ASCII
 * protocol: command names, its local reply lines, and the retrieval heads of
 * the per-server fragments of a multi-key get. Pure; caller memory only.
 */
#include "walnut/proto.h"

#include "proto/mc_lex.h"
#include "walnut/core.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *const cmd_names[] = {
#define WN_MC_CMD_NAME(up, name) name,
    WN_MC_CMD_MAP(WN_MC_CMD_NAME)
#undef WN_MC_CMD_NAME
};

const char *wn_mc_cmd_name(wn_mc_cmd_t cmd)
{
    if ((unsigned)cmd >= WN_MC_CMD_COUNT)
        return NULL;
    return cmd_names[cmd];
}

bool wn_mc_cmd_is_retrieval(wn_mc_cmd_t cmd)
{
    return cmd == WN_MC_GET || cmd == WN_MC_GETS || cmd == WN_MC_GAT || cmd == WN_MC_GATS;
}

bool wn_mc_cmd_is_storage(wn_mc_cmd_t cmd)
{
    return cmd == WN_MC_SET || cmd == WN_MC_ADD || cmd == WN_MC_REPLACE || cmd == WN_MC_APPEND ||
           cmd == WN_MC_PREPEND || cmd == WN_MC_CAS;
}

typedef struct reply_line {
    const char *text;
    size_t len;
} reply_line_t;

static const reply_line_t replies[] = {
#define WN_MC_REPLY_LINE(up, text)                                                                 \
    {sizeof(text) > 1 ? text "\r\n" : "", sizeof(text) > 1 ? sizeof(text) + 1 : 0},
    WN_MC_REPLY_MAP(WN_MC_REPLY_LINE)
#undef WN_MC_REPLY_LINE
};

const char *wn_mc_reply_text(wn_mc_reply_t reply, size_t *len)
{
    reply_line_t r = {"", 0};
    if ((unsigned)reply < WN_MC_REPLY_COUNT)
        r = replies[reply];
    if (len != NULL)
        *len = r.len;
    return r.text;
}

/* An int32 in decimal, as memcached read it (a gat's exptime may arrive as
 * "+0100" or with 3,000 leading zeros: the server gets the number). */
static int i32_text(char out[12], int32_t v)
{
    return snprintf(out, 12, "%" PRId32, v);
}

static bool is_touch(wn_mc_cmd_t cmd)
{
    return cmd == WN_MC_GAT || cmd == WN_MC_GATS;
}

size_t wn_mc_retrieval_head_size(const char *line, const wn_mc_request_t *req,
                                 const wn_mc_span_t *keys, const uint32_t *order, size_t nkeys)
{
    (void)line;
    if (!wn_mc_cmd_is_retrieval(req->cmd))
        return 0;
    size_t size = strlen(wn_mc_cmd_name(req->cmd));
    if (is_touch(req->cmd)) {
        char num[12];
        size += 1 + (size_t)i32_text(num, req->exptime);
    }
    for (size_t i = 0; i < nkeys; i++)
        size += 1 + keys[order != NULL ? order[i] : i].len;
    return size + 2;
}

static char *put(char *d, const void *s, size_t len)
{
    memcpy(d, s, len);
    return d + len;
}

int wn_mc_retrieval_head_compose(char *dst, size_t cap, const char *line,
                                 const wn_mc_request_t *req, const wn_mc_span_t *keys,
                                 const uint32_t *order, size_t nkeys)
{
    if (!wn_mc_cmd_is_retrieval(req->cmd) || nkeys == 0)
        return WN_EINVAL;
    size_t size = wn_mc_retrieval_head_size(line, req, keys, order, nkeys);
    if (size > cap || size > (size_t)INT32_MAX)
        return WN_ETOOBIG;
    const char *name = wn_mc_cmd_name(req->cmd);
    char *d = put(dst, name, strlen(name));
    if (is_touch(req->cmd)) {
        char num[12];
        int n = i32_text(num, req->exptime);
        *d++ = ' ';
        d = put(d, num, (size_t)n);
    }
    for (size_t i = 0; i < nkeys; i++) {
        wn_mc_span_t k = keys[order != NULL ? order[i] : i];
        *d++ = ' ';
        d = put(d, line + k.off, k.len);
    }
    d = put(d, "\r\n", 2);
    return (int)(d - dst);
}

int wn_mc_compose_without_noreply(char *dst, size_t cap, const char *line,
                                  const wn_mc_request_t *req)
{
    /* The content ends before "\r\n" / "\n", or at a NUL (memcached's view). */
    uint32_t end = req->line_len;
    while (end > 0 && (line[end - 1] == '\n' || line[end - 1] == '\r'))
        end--;
    const char *nul = memchr(line, '\0', end);
    if (nul != NULL)
        end = (uint32_t)(nul - line);
    wn_mc_span_t tok, last = {0, 0};
    uint32_t pos = 0, ntok = 0;
    while (mc_token_next(line, &pos, end, &tok)) {
        last = tok;
        ntok++;
    }
    if (ntok < 2 || !mc_span_eq(line, last, "noreply"))
        return WN_EINVAL;
    size_t size = 2;
    pos = 0;
    for (uint32_t i = 0; i + 1 < ntok && mc_token_next(line, &pos, end, &tok); i++)
        size += tok.len + (i > 0);
    if (size > cap || size > (size_t)INT32_MAX)
        return WN_ETOOBIG;
    char *d = dst;
    pos = 0;
    for (uint32_t i = 0; i + 1 < ntok && mc_token_next(line, &pos, end, &tok); i++) {
        if (i > 0)
            *d++ = ' ';
        d = put(d, line + tok.off, tok.len);
    }
    d = put(d, "\r\n", 2);
    return (int)(d - dst);
}

int wn_mc_compose_canonical(char *dst, size_t cap, const char *line, const wn_mc_request_t *req)
{
    char buf[WN_MC_CANONICAL_MAX];
    const char *name = wn_mc_cmd_name(req->cmd);
    int klen = (int)req->key.len;
    const char *key = line + req->key.off;
    int n;
    switch (req->cmd) {
    case WN_MC_SET:
    case WN_MC_ADD:
    case WN_MC_REPLACE:
    case WN_MC_APPEND:
    case WN_MC_PREPEND:
        n = snprintf(buf, sizeof(buf), "%s %.*s %" PRIu32 " %" PRId32 " %" PRIu32 "\r\n", name,
                     klen, key, req->flags, req->exptime, req->bytes);
        break;
    case WN_MC_CAS:
        n = snprintf(buf, sizeof(buf), "cas %.*s %" PRIu32 " %" PRId32 " %" PRIu32 " %" PRIu64 "\r\n",
                     klen, key, req->flags, req->exptime, req->bytes, req->cas);
        break;
    case WN_MC_INCR:
    case WN_MC_DECR:
        n = snprintf(buf, sizeof(buf), "%s %.*s %" PRIu64 "\r\n", name, klen, key, req->delta);
        break;
    case WN_MC_TOUCH:
        n = snprintf(buf, sizeof(buf), "touch %.*s %" PRId32 "\r\n", klen, key, req->exptime);
        break;
    case WN_MC_DELETE:
        n = snprintf(buf, sizeof(buf), "delete %.*s\r\n", klen, key);
        break;
    case WN_MC_FLUSH_ALL:
        if (req->arg.len > 0)
            n = snprintf(buf, sizeof(buf), "flush_all %" PRId32 "\r\n", req->exptime);
        else
            n = snprintf(buf, sizeof(buf), "flush_all\r\n");
        break;
    case WN_MC_VERBOSITY: {
        uint32_t level = 0;
        if (!mc_read_u32(line + req->arg.off, req->arg.len, &level))
            return WN_EINVAL;
        n = snprintf(buf, sizeof(buf), "verbosity %" PRIu32 "\r\n", level);
        break;
    }
    case WN_MC_VERSION:
        n = snprintf(buf, sizeof(buf), "version\r\n");
        break;
    default:
        return WN_EINVAL;
    }
    if (n < 0 || (size_t)n >= sizeof(buf))
        return WN_EINVAL;
    if ((size_t)n > cap)
        return WN_ETOOBIG;
    memcpy(dst, buf, (size_t)n);
    return n;
}
