/*
 * proto/mc_merge.c: the rule that puts a split multi-get's VALUE blocks back
 * in the client's key order. Pure; any thread.
 */
#include "walnut/proto.h"

#include <string.h>

int32_t wn_mc_merge_take(wn_mc_frag_values_t *f, const char *key, uint32_t len)
{
    if (f->cursor >= f->n)
        return -1;
    uint32_t i = f->cursor;
    if (f->lens[i] != len || memcmp(f->keys[i], key, len) != 0)
        return -1;
    f->cursor++;
    return (int32_t)i;
}
