/*
 * mcbin.h: memcached's binary protocol on memcache pools, chosen per client
 * connection by its first byte (0x80), as memcached does. A binary client's
 * requests travel to the servers as text (meta) commands on the shared
 * server connections (walnut/proto_mcbin.h has the mapping) and their
 * replies come back as the packets memcached would send. Worker thread only.
 *
 * Shapes: the client is an mc_client_t with the binary state after it; a
 * binary request in the client's FIFO is a PARENT (an mcbin_req_t, `binary`
 * set) whose one fragment (FLUSH: one per server) is a plain mc_req_t sent
 * with cmd WN_MC_META and its meta command, never quiet (flush_all:
 * WN_MC_FLUSH_ALL), so mc_server.c frames and checks its reply as for any
 * text client; mc_merge.c hands the parent back here when a fragment is
 * done (wn_mcbin_progress). VERSION is a PARENT too, its fragment the text
 * `version` (cmd WN_MC_VERSION) to the server of "placeholder". Local answers
 * (NOOP, STAT, errors) are LOCAL requests with `binary` set.
 */
#ifndef WALNUT_WORKER_MCBIN_H
#define WALNUT_WORKER_MCBIN_H

#include "mc.h"
#include "walnut/proto_mcbin.h"

typedef enum mcbin_mode {
    MCBIN_UNDECIDED = 0, /* no byte seen yet */
    MCBIN_TEXT,          /* the ASCII unit (mc_client.c) serves it */
    MCBIN_BINARY,
} mcbin_mode_t;

typedef struct mcbin_req {
    mc_req_t m;            /* first: the core and the text unit see an mc_req_t */
    bool binary;           /* a binary client's request (false in every other
                              slot: slots are zeroed, and sized for this) */
    uint8_t op;            /* the opcode as the client sent it (quiet or loud) */
    uint32_t opaque;
    uint16_t keylen;       /* GETK GETKQ GATK GATKQ: the key to echo ... */
    const uint8_t *key;    /* ... in memory r->keep holds */
} mcbin_req_t;

typedef struct mcbin_client {
    mc_client_t mc;        /* first: the text unit's client */
    uint8_t mode;          /* mcbin_mode_t */
    wn_mcbin_limits_t lim;
    mcbin_req_t *value_req; /* storing request whose value is arriving (one
                               reference); its fragment is frags[0] */
    uint32_t value_left;   /* value bytes still to come */
    uint64_t skip_left;    /* bytes of a refused packet still to drop */
} mcbin_client_t;

static inline mcbin_req_t *mcbin_req(req_t *r)
{
    return (mcbin_req_t *)r;
}

/* Is r a binary client's request (answered here, not by the text unit)? */
static inline bool wn_mcbin_req_is(const req_t *r)
{
    return ((const mcbin_req_t *)r)->binary;
}

/* Does c speak binary? Decided on its first byte; false while undecided. */
static inline bool wn_mcbin_client_is(const client_t *c)
{
    return ((const mcbin_client_t *)c)->mode == MCBIN_BINARY;
}

/* mcbin_client.c */
/* Decide c's protocol on its first buffered byte; true: binary. */
bool wn_mcbin_client_decide(client_t *c);
/* The protocol c speaks, decided once (inline: the text hot path pays one
 * byte compare per parse). */
static inline bool wn_mcbin_client_select(client_t *c)
{
    uint8_t mode = ((const mcbin_client_t *)c)->mode;
    if (mode != MCBIN_UNDECIDED)
        return mode == MCBIN_BINARY;
    return wn_mcbin_client_decide(c);
}
void wn_mcbin_client_parse(client_t *c);
void wn_mcbin_client_eof(client_t *c);
void wn_mcbin_client_deinit(client_t *c);
void wn_mcbin_client_read_plan(const client_t *c, uint32_t *keep, uint64_t *ahead);

/* mcbin_dispatch.c: a framed packet (head at b->data + pos). */
void wn_mcbin_dispatch(mcbin_client_t *c, wn_buf_t *b, uint32_t pos,
                       const wn_mcbin_request_t *q);
/* Would the packet go to a suspect server? Then c is held (true). */
bool wn_mcbin_must_wait(mcbin_client_t *c, const uint8_t *pkt, const wn_mcbin_request_t *q);
/* A request answered by walnut, queued in order (one reference returned). */
mcbin_req_t *wn_mcbin_local(mcbin_client_t *c, uint8_t op, uint32_t opaque, wn_mc_cmd_t cmd);
/* A SET refused as too large: unlink the key's old value as memcached
 * does, in c's order, answering nobody (best effort: nothing on ENOMEM or
 * a key the text protocol cannot carry). */
void wn_mcbin_unlink(mcbin_client_t *c, const uint8_t *key, uint16_t keylen);
/* Answer r with an error packet (nothing when a quiet opcode drops it). */
void wn_mcbin_reply_error(mcbin_req_t *r, uint16_t status);

/* mcbin_reply.c */
/* A fragment of the binary parent is done: once all are, compose the
 * packet memcached would send (mc_merge.c calls this). */
void wn_mcbin_progress(req_t *parent);
/* control's `stats` text for r, as binary STAT packets. */
void wn_mcbin_stats_reply(req_t *r, const char *text, size_t len);

#endif
