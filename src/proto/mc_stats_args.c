/*
 * proto/mc_stats_args.c: what a proxy answers `stats <group>`. walnut has no
 * slabs, items, settings or connections of a memcached, and cannot merge its
 * servers' per-server internals, so each group is answered as a memcached
 * holding nothing answers it, in memcached 1.6.18's exact framing (measured;
 * see test/unit/test_proto_mc.c). Pure; any thread.
 */
#include "walnut/proto.h"

#include "proto/mc_lex.h"
#include "walnut/core.h"

#include <string.h>

/* memcached's MAX_NUMBER_OF_SLAB_CLASSES: `stats cachedump` refuses ids from it on. */
#define MC_SLAB_CLASSES 64

#define T(s) {s, sizeof(s) - 1}

typedef struct text {
    const char *s;
    size_t len;
} text_t;

static const text_t end_only = T("END\r\n");
static const text_t error = T("ERROR\r\n");

typedef struct group {
    const char *name;
    text_t reply;
} group_t;

/* Groups whose reply does not depend on further tokens. */
static const group_t groups[] = {
    /* memcached clears its counters; walnut's feed /metrics and must only grow */
    {"reset", T("RESET\r\n")},
    {"slabs", T("STAT active_slabs 0\r\nSTAT total_malloced 0\r\nEND\r\n")},
    {"items", T("END\r\n")},
    {"settings", T("END\r\n")},
    {"sizes", T("STAT sizes_status disabled\r\nEND\r\n")},
    /* memcached sends no END after these two (its own quirk, kept) */
    {"sizes_enable", T("STAT sizes_status error\r\nSTAT sizes_error not_supported\r\n")},
    {"sizes_disable", T("STAT sizes_status disabled\r\n")},
    {"conns", T("END\r\n")},
    {"extstore", T("END\r\n")},
};

static text_t detail(const char *args, uint32_t pos, uint32_t end)
{
    static const text_t ok = T("OK\r\n");
    static const text_t usage = T("CLIENT_ERROR usage: stats detail on|off|dump\r\n");
    wn_mc_span_t t;
    if (!mc_token_next(args, &pos, end, &t))
        return usage;
    if (mc_span_eq(args, t, "on") || mc_span_eq(args, t, "off"))
        return ok; /* walnut keeps no per-prefix detail: nothing to switch */
    if (mc_span_eq(args, t, "dump"))
        return end_only; /* as memcached with detail off */
    return usage;
}

static text_t cachedump(const char *args, uint32_t pos, uint32_t end)
{
    static const text_t bad = T("CLIENT_ERROR bad command line\r\n");
    static const text_t bad_format = T("CLIENT_ERROR bad command line format\r\n");
    static const text_t bad_id = T("CLIENT_ERROR Illegal slab id\r\n");
    wn_mc_span_t id, limit;
    if (!mc_token_next(args, &pos, end, &id) || !mc_token_next(args, &pos, end, &limit))
        return bad;
    uint32_t idv, limitv;
    if (!mc_read_u32(args + id.off, id.len, &idv) ||
        !mc_read_u32(args + limit.off, limit.len, &limitv))
        return bad_format;
    if (idv >= MC_SLAB_CLASSES)
        return bad_id;
    return end_only;
}

const char *wn_mc_stats_args_reply(const char *args, size_t len, size_t *outlen)
{
    uint32_t end = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
    uint32_t pos = 0;
    wn_mc_span_t word;
    text_t r = error;
    if (mc_token_next(args, &pos, end, &word)) {
        if (mc_span_eq(args, word, "detail")) {
            r = detail(args, pos, end);
        } else if (mc_span_eq(args, word, "cachedump")) {
            r = cachedump(args, pos, end);
        } else {
            for (size_t i = 0; i < WN_ARRAY_SIZE(groups); i++) {
                if (mc_span_eq(args, word, groups[i].name)) {
                    r = groups[i].reply;
                    break;
                }
            }
        }
    }
    if (outlen != NULL)
        *outlen = r.len;
    return r.s;
}
