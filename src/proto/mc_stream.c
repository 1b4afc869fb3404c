/*
 * proto/mc_stream.c: a get/gets/gat/gats line too long to hold whole,
 * parsed as it arrives: complete keys are handed out in runs while the rest
 * of the line is still coming, and the line's verdict (what memcached would
 * answer: its hits then END, or one error line alone) is known at its end.
 * Tokens, line end, NUL and key limits are those of wn_mc_request_parse, so
 * a line parsed this way asks for the same keys and gets the same verdict
 * as the same line parsed whole. Pure: no I/O, no allocation.
 */
#include "walnut/proto.h"

#include "proto/mc_lex.h"
#include "walnut/core.h"

#include <string.h>

int wn_mc_stream_begin(wn_mc_stream_t *s, const char *buf, size_t n, uint32_t max_keys)
{
    static const struct {
        const char *word;
        wn_mc_cmd_t cmd;
    } words[] = {{"get ", WN_MC_GET}, {"gets ", WN_MC_GETS}, {"gat ", WN_MC_GAT},
                 {"gats ", WN_MC_GATS}};
    memset(s, 0, sizeof(*s));
    s->max_keys = max_keys;
    size_t i = 0;
    while (i < n && i < 64 && buf[i] == ' ')
        i++;
    for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
        size_t len = strlen(words[w].word);
        if (n - i >= len && memcmp(buf + i, words[w].word, len) == 0) {
            s->cmd = (uint8_t)words[w].cmd;
            s->want_arg = words[w].cmd == WN_MC_GAT || words[w].cmd == WN_MC_GATS;
            return (int)(i + len);
        }
    }
    return WN_EPROTO;
}

/* The line is over: what memcached answers, as wn_mc_request_parse would. */
static void finish(wn_mc_stream_t *s)
{
    s->ended = true;
    if (s->verdict != WN_MC_REPLY_NONE)
        return;
    bool gat = s->cmd == WN_MC_GAT || s->cmd == WN_MC_GATS;
    if (s->want_arg) /* no exptime token: fewer than three tokens */
        s->verdict = WN_MC_REPLY_ERROR;
    else if (s->nkeys == 0)
        s->verdict = gat ? WN_MC_REPLY_END : WN_MC_REPLY_ERROR;
}

/* One complete token of the line's content. */
static void token(wn_mc_stream_t *s, const char *t, uint32_t len, uint32_t off,
                  wn_mc_span_t *keys, uint32_t *nkeys)
{
    if (s->want_arg) {
        s->want_arg = false;
        if (!mc_read_i32(t, len, &s->exptime))
            s->verdict = WN_MC_REPLY_BAD_EXPTIME;
        return;
    }
    if (len > WN_MC_KEY_MAX) {
        s->verdict = WN_MC_REPLY_BAD_FORMAT;
        return;
    }
    if (s->nkeys >= s->max_keys) {
        s->verdict = WN_MC_REPLY_TOO_MANY_KEYS;
        return;
    }
    if (*nkeys == 0)
        keys->off = off;
    keys->len = off + len - keys->off;
    (*nkeys)++;
    s->nkeys++;
}

/* Where the token at i ends: at a space, NUL, "\n", or a "\r" right before
 * "\n" (or at the end of what arrived, where a "\r" waits for the next byte). */
static uint32_t token_end(const char *buf, uint32_t i, uint32_t len)
{
    while (i < len && buf[i] != ' ' && buf[i] != '\n' && buf[i] != '\0' &&
           !(buf[i] == '\r' && (i + 1 == len || buf[i + 1] == '\n')))
        i++;
    return i;
}

int wn_mc_stream_take(wn_mc_stream_t *s, const char *buf, size_t n, wn_mc_span_t *keys,
                      uint32_t *nkeys)
{
    keys->off = keys->len = 0;
    *nkeys = 0;
    if (n > UINT32_MAX / 2)
        n = UINT32_MAX / 2;
    uint32_t i = 0, len = (uint32_t)n;
    while (i < len && !s->ended) {
        if (s->verdict != WN_MC_REPLY_NONE || s->nul) {
            /* Nothing more is looked at: on to the line's end. */
            const char *nl = memchr(buf + i, '\n', len - i);
            if (nl == NULL)
                return (int)len;
            i = (uint32_t)(nl - buf) + 1;
            finish(s);
            break;
        }
        char c = buf[i];
        if (s->in_exptime) {
            /* on to the token's end, reading it as it comes */
            uint32_t t = i;
            i = token_end(buf, i, len);
            mc_num_feed(&s->num, buf + t, i - t);
            if (i == len || (buf[i] == '\r' && i + 1 == len))
                return (int)i;
            s->in_exptime = false;
            if (!mc_num_i32(&s->num, &s->exptime))
                s->verdict = WN_MC_REPLY_BAD_EXPTIME;
            continue;
        }
        if (c == ' ') {
            i++;
            continue;
        }
        if (c == '\n' || c == '\0') {
            i++;
            if (c == '\n')
                finish(s);
            else
                s->nul = true;
            continue;
        }
        if (c == '\r') {
            if (i + 1 == len)
                break; /* "\r\n" or part of a token: the next byte says */
            if (buf[i + 1] == '\n') {
                i += 2;
                finish(s);
                continue;
            }
        }
        uint32_t t = i;
        i = token_end(buf, i, len);
        if (i == len || (buf[i] == '\r' && i + 1 == len)) {
            /* Cut by the end of what arrived: taken later, whole, unless it
             * is too long to be a key (or an exptime) already. */
            if (i - t > WN_MC_KEY_MAX && s->want_arg) {
                /* An exptime too long to wait for whole (white space or
                 * zeros before its digits, or anything after white space
                 * that follows them): read as it arrives, as strtol reads
                 * it whole. */
                s->want_arg = false;
                s->in_exptime = true;
                mc_num_feed(&s->num, buf + t, i - t);
                continue;
            }
            if (i - t > WN_MC_KEY_MAX) {
                s->verdict = WN_MC_REPLY_BAD_FORMAT;
                continue;
            }
            return (int)t;
        }
        token(s, buf + t, i - t, t, keys, nkeys);
    }
    return (int)i;
}
