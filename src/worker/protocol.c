/*
 * worker/protocol.c: the core's way into the protocol units: one switch per
 * entry point on the pool's protocol. Adding a protocol means a case here
 * and a unit of its own files; nothing else in the core changes.
 * Worker thread only.
 */
#include "protocol.h"

#include "mc.h"
#include "mcbin.h"
#include "redis.h"

wn_proto_t wn_proto_of(const wn_conf_pool_t *conf)
{
    return conf->redis ? WN_PROTO_REDIS : WN_PROTO_MC;
}

const char *wn_proto_name(wn_proto_t proto)
{
    return proto == WN_PROTO_REDIS ? "redis" : "memcache";
}

/* Every unit's request fits one slot size: the free list is shared. */
typedef union req_slot {
    mc_req_t mc;
    mcbin_req_t mcbin;
    redis_req_t redis;
} req_slot_t;

size_t wn_proto_req_slot_size(void)
{
    return sizeof(req_slot_t);
}

size_t wn_proto_client_size(wn_proto_t proto)
{
    switch (proto) {
    case WN_PROTO_REDIS:
        return sizeof(redis_client_t);
    case WN_PROTO_MC:
    default:
        return sizeof(mcbin_client_t); /* text or binary, by its first byte */
    }
}

size_t wn_proto_sconn_size(wn_proto_t proto)
{
    switch (proto) {
    case WN_PROTO_REDIS:
        return sizeof(redis_sconn_t);
    case WN_PROTO_MC:
    default:
        return sizeof(mc_sconn_t);
    }
}

#define DISPATCH(proto, mc_call, redis_call)                                                      \
    do {                                                                                          \
        switch ((wn_proto_t)(proto)) {                                                            \
        case WN_PROTO_REDIS:                                                                      \
            redis_call;                                                                           \
            return;                                                                               \
        case WN_PROTO_MC:                                                                         \
        default:                                                                                  \
            mc_call;                                                                              \
            return;                                                                               \
        }                                                                                         \
    } while (0)

void wn_proto_client_init(client_t *c)
{
    DISPATCH(c->pool->proto, wn_mc_client_init(c), wn_redis_client_init(c));
}

/* A memcache pool's client speaks text or binary, chosen by its first byte
 * as memcached does (0x80: binary); mcbin_*.c serves the binary ones. */
static void client_parse(client_t *c)
{
    DISPATCH(c->pool->proto,
             wn_mcbin_client_select(c) ? wn_mcbin_client_parse(c) : wn_mc_client_parse(c),
             wn_redis_client_parse(c));
}

void wn_proto_client_parse(client_t *c)
{
    client_parse(c);
    wn_client_recount(c); /* a request may be read whole now, or begun */
}

bool wn_proto_client_has_pending(const client_t *c)
{
    switch ((wn_proto_t)c->pool->proto) {
    case WN_PROTO_REDIS:
        return wn_redis_client_has_pending(c);
    case WN_PROTO_MC:
    default:
        /* A held request stays in the buffer, unparsed; a streamed line's
         * part waits outside it. */
        return wn_mc_client_has_pending(c);
    }
}

static void client_eof(client_t *c)
{
    DISPATCH(c->pool->proto,
             wn_mcbin_client_is(c) ? wn_mcbin_client_eof(c) : wn_mc_client_eof(c),
             wn_redis_client_eof(c));
}

void wn_proto_client_eof(client_t *c)
{
    client_eof(c);
    wn_client_recount(c); /* a half-sent request is dropped */
}

void wn_proto_client_deinit(client_t *c)
{
    DISPATCH(c->pool->proto,
             wn_mcbin_client_is(c) ? wn_mcbin_client_deinit(c) : wn_mc_client_deinit(c),
             wn_redis_client_deinit(c));
}

void wn_proto_client_read_plan(const client_t *c, uint32_t *keep, uint64_t *ahead)
{
    DISPATCH(c->pool->proto,
             wn_mcbin_client_is(c) ? wn_mcbin_client_read_plan(c, keep, ahead)
                                   : wn_mc_client_read_plan(c, keep, ahead),
             wn_redis_client_read_plan(c, keep, ahead));
}

void wn_proto_sconn_reset(sconn_t *s)
{
    DISPATCH(s->server->pool->proto, wn_mc_sconn_reset(s), wn_redis_sconn_reset(s));
}

void wn_proto_sconn_hello(sconn_t *s)
{
    /* memcached needs no greeting */
    DISPATCH(s->server->pool->proto, (void)s, wn_redis_sconn_hello(s));
}

int wn_proto_server_parse(sconn_t *s)
{
    switch ((wn_proto_t)s->server->pool->proto) {
    case WN_PROTO_REDIS:
        return wn_redis_server_parse(s);
    case WN_PROTO_MC:
    default:
        return wn_mc_server_parse(s);
    }
}

const char *wn_proto_full_line(wn_proto_t proto)
{
    return proto == WN_PROTO_REDIS ? WN_RESP_FULL_LINE : WN_MC_FULL_LINE;
}

void wn_proto_server_read_plan(const sconn_t *s, uint32_t *keep, uint64_t *ahead)
{
    DISPATCH(s->server->pool->proto, wn_mc_server_read_plan(s, keep, ahead),
             wn_redis_server_read_plan(s, keep, ahead));
}

void wn_proto_stats_reply(req_t *r, const char *text, size_t len)
{
    DISPATCH(r->pool->proto, wn_mc_stats_text(r, text, len), wn_req_reply(r, text, len));
}

void wn_proto_stats_local(req_t *r)
{
    /* Only memcached's `stats` waits for control. */
    DISPATCH(r->pool->proto, wn_mc_stats_local(r), wn_req_reply(r, "", 0));
}

void wn_proto_fail(req_t *r, int err)
{
    DISPATCH(r->pool->proto, wn_mc_fail(r, err), wn_redis_fail(r, err));
}

void wn_proto_req_orphaned(req_t *r)
{
    if (r->pool->proto == WN_PROTO_MC)
        wn_mc_req_orphaned(r);
}

uint32_t wn_proto_ncmds(wn_proto_t proto)
{
    switch (proto) {
    case WN_PROTO_REDIS:
        return wn_rcmd_count();
    case WN_PROTO_MC:
    default:
        return WN_MC_CMD_COUNT;
    }
}

const char *wn_proto_cmd_name(wn_proto_t proto, uint32_t cmd)
{
    switch (proto) {
    case WN_PROTO_REDIS: {
        const wn_rcmd_t *c = wn_rcmd_by_id((uint16_t)cmd);
        return c != NULL ? c->name : NULL;
    }
    case WN_PROTO_MC:
    default:
        return wn_mc_cmd_name((wn_mc_cmd_t)cmd);
    }
}
