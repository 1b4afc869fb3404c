/*
 * proto/mc_merge.c: which key of a retrieval request a VALUE line answers.
 * memcached answers get/gets/gat/gats with one VALUE per key found, in the
 * order the keys were asked (a key asked twice is answered twice), so each
 * VALUE must name one of the keys still to come; the first such key is the
 * one it answers. Anything else is not an answer to this request. The proxy
 * merges split replies by these positions, so every VALUE lands at its own
 * key's place in the client's order. Pure; any thread.
 */
#include "walnut/proto.h"

#include "proto/mc_lex.h"

#include <string.h>

int32_t wn_mc_match_key(const char *line, const wn_mc_span_t *keys, const uint32_t *order,
                        uint32_t n, uint32_t *cursor, const char *vkey, uint32_t vlen)
{
    for (uint32_t j = *cursor; j < n; j++) {
        wn_mc_span_t k = keys[order != NULL ? order[j] : j];
        if (k.len == vlen && memcmp(line + k.off, vkey, vlen) == 0) {
            *cursor = j + 1;
            return (int32_t)j;
        }
    }
    return -1;
}

bool wn_mc_match_line_key(const char *line, wn_mc_span_t keys, uint32_t *cursor,
                          const char *vkey, uint32_t vlen)
{
    uint32_t end = keys.off + keys.len;
    uint32_t pos = *cursor < keys.off ? keys.off : *cursor;
    wn_mc_span_t tok;
    while (pos <= end && mc_token_next(line, &pos, end, &tok)) {
        if (tok.len == vlen && memcmp(line + tok.off, vkey, vlen) == 0) {
            *cursor = pos;
            return true;
        }
    }
    *cursor = end;
    return false;
}
