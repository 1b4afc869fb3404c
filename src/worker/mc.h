/*
 * mc.h: the memcached ASCII protocol unit's private types. Each starts with
 * the core's struct (client_t, sconn_t, req_t), so the core allocates them by
 * size and the unit casts. Worker thread only.
 */
#ifndef WALNUT_WORKER_MC_H
#define WALNUT_WORKER_MC_H

#include "core_types.h"
#include "walnut/proto.h"

/* Longest non-retrieval request line, and longest get/gets/gat/gats line
 * (thousands of keys; memcached has no limit, walnut this one). */
#define WN_MC_MAX_LINE (64u * 1024u)
#define WN_MC_MAX_RETRIEVAL_LINE (16u << 20)
/* Keys in one retrieval request, far above what clients send (pymemcache's
 * get_many of 2,000, memcached's own tests of 6,000). */
#define WN_MC_MAX_KEYS 100000
/* Values a client may store: memcached's default item size limit (-I 1m). */
#define WN_MC_MAX_VALUE (1024u * 1024u)
/* Values a backend may return (one started with a larger -I). */
#define WN_MC_MAX_SERVER_VALUE (64u * 1024u * 1024u)

/* One VALUE block a fragment received: its segments in the fragment's rsp,
 * and the client key (index in the split's keys) it answers. */
typedef struct mc_item {
    uint32_t seg_first;
    uint32_t nsegs;
    uint32_t key;
} mc_item_t;

/* A split retrieval's memory, one allocation, owned by the parent. */
typedef struct mc_split {
    uint32_t nkeys;
    uint32_t nfrags;
    wn_mc_span_t *keys;    /* [nkeys] the client's keys, spans of `line` */
    uint32_t *key_frag;    /* [nkeys] the fragment each key went to */
    uint32_t *frag_keys;   /* [nkeys] key indexes grouped by fragment, in key order */
    uint32_t *frag_first;  /* [nfrags + 1] each fragment's start in frag_keys/items */
    mc_item_t *items;      /* [nkeys] VALUE blocks, grouped like frag_keys */
    uint32_t merged;       /* client keys merged so far */
} mc_split_t;

typedef struct mc_req {
    req_t r;
    uint8_t cmd;           /* wn_mc_cmd_t */
    bool is_get;           /* a retrieval: replies are VALUE... END, matched by key */
    uint32_t nkeys;        /* keys asked for */
    uint32_t hits;         /* VALUE blocks received */
    /* Forwarded retrievals: the request line (its buffer held by `out`) and
     * its key run, to match each VALUE to a key asked for. */
    const char *line;
    wn_mc_span_t keys;
    uint32_t match;        /* matching cursor (byte offset, or position in a fragment's keys) */
    /* Parents: the split. Fragments: the parent's split (borrowed) and index. */
    mc_split_t *split;
    uint32_t frag;
    uint32_t nitems;       /* fragments: VALUE blocks received (complete or not) */
    uint32_t ncomplete;    /* fragments: of which complete (data block in) */
    uint32_t taken;        /* fragments: of which merged into the parent */
    bool error_line;       /* fragments: the server answered with an error line */
    /* Storage commands: routed when their line is parsed, queued once their
     * data block is in. A reload in between may retire (and free) the server
     * they were routed to, so they are routed again if the worker's
     * configuration generation changed: the key is at route_key in the line,
     * which starts their first `out` segment. */
    uint64_t route_gen;
    wn_mc_span_t route_key;
} mc_req_t;

typedef struct mc_client {
    client_t c;
    wn_mc_req_parser_t parser;
    mc_req_t *data_req;    /* request whose data block is arriving (one reference) */
    uint32_t data_left;    /* bytes of the data block still to come */
    bool data_swallow;     /* the block is dropped (a rejected request's) */
    bool data_bad_close;   /* a bad data chunk: close after the reply */
    char trailer[2];       /* last two bytes of the data block seen so far */
} mc_client_t;

typedef struct mc_sconn {
    sconn_t s;
    wn_mc_rsp_parser_t rsp;
    uint32_t data_left;    /* bytes of a VALUE data block still to come */
    bool done_after_data;  /* the head's reply is complete once the block is in */
    char trailer[2];
} mc_sconn_t;

static inline mc_req_t *mc_req(req_t *r)
{
    return (mc_req_t *)r;
}

/* mc_client.c */
void wn_mc_client_init(client_t *c);
void wn_mc_client_parse(client_t *c);
void wn_mc_client_eof(client_t *c);
void wn_mc_client_deinit(client_t *c);
void wn_mc_client_read_plan(const client_t *c, uint32_t *keep, uint64_t *ahead);

/* mc_dispatch.c: route a parsed request (its line at b->data + pos). */
void wn_mc_dispatch(mc_client_t *c, wn_buf_t *b, uint32_t pos, const wn_mc_request_t *q);
/* Would the request go to a suspect server? Then c is held (true). */
bool wn_mc_must_wait(mc_client_t *c, const char *line, const wn_mc_request_t *q);
/* A request answered by walnut, queued in order like any other. */
mc_req_t *wn_mc_local(mc_client_t *c, wn_mc_cmd_t cmd);

/* mc_server.c */
void wn_mc_sconn_reset(sconn_t *s);
int wn_mc_server_parse(sconn_t *s);
void wn_mc_server_read_plan(const sconn_t *s, uint32_t *keep, uint64_t *ahead);

/* mc_merge.c */
void wn_mc_parent_progress(req_t *parent);
/* r could not be completed: count it, answer it with twemproxy's
 * SERVER_ERROR text; a fragment's parent merges on. */
void wn_mc_fail(req_t *r, int err);
/* Queue r on server s for c's slot, or fail it. */
void wn_mc_forward(client_t *c, server_rt_t *s, req_t *r);


/* mc_stats.c: `stats` answered with walnut's counters. */
void wn_mc_reply_stats(mc_req_t *r);

#endif
