/*
 * proto/mc_compose.c: what the proxy writes itself in memcached's ASCII
 * protocol: command names, its local reply lines, and the retrieval heads of
 * the per-server fragments of a multi-key get. Pure; caller memory only.
 */
#include "walnut/proto.h"

#include "proto/mc_lex.h"
#include "walnut/core.h"

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

size_t wn_mc_retrieval_head_size(const char *line, const wn_mc_request_t *req,
                                 const wn_mc_span_t *keys, const uint32_t *order, size_t nkeys)
{
    (void)line;
    if (!wn_mc_cmd_is_retrieval(req->cmd))
        return 0;
    size_t size = strlen(wn_mc_cmd_name(req->cmd));
    if (req->cmd == WN_MC_GAT || req->cmd == WN_MC_GATS)
        size += 1 + req->arg.len;
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
    if (req->cmd == WN_MC_GAT || req->cmd == WN_MC_GATS) {
        *d++ = ' ';
        d = put(d, line + req->arg.off, req->arg.len);
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
