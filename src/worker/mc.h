/*
 * mc.h: the memcached ASCII protocol unit's private types. Each starts with
 * the core's struct (client_t, sconn_t, req_t), so the core allocates them by
 * size and the unit casts. Worker thread only.
 */
#ifndef WALNUT_WORKER_MC_H
#define WALNUT_WORKER_MC_H

#include "core_types.h"
#include "walnut/proto.h"
#include "walnut/proto_meta.h"

/* Longest request line held whole. A get/gets/gat/gats line longer than
 * this is parsed as it arrives (mc_client.c, a streamed line): it has no
 * length limit, only WN_MC_MAX_KEYS. */
#define WN_MC_MAX_LINE (64u * 1024u)
/* What the parser may see of a retrieval line before the client streams it
 * (one read beyond WN_MC_MAX_LINE at most; this is far above). */
#define WN_MC_MAX_RETRIEVAL_LINE (16u << 20)
/* A streamed line's keys go out in parts of at least this many keys or
 * bytes of keys (or what is left at its end): a client sending a key at a
 * time, or a few keys between long runs of spaces, does not make a request
 * of each. */
#define WN_MC_PART_MIN_KEYS 256u
#define WN_MC_PART_MIN_BYTES (16u * 1024u)
/* memcached closes a connection once 2048 bytes of a line are buffered
 * without its end, unless the line starts with "get " or "gets " (after at
 * most 100 spaces): a line walnut sends a server is never longer than this,
 * except a get or gets that starts with its word. Longer lines are rebuilt
 * from their tokens; long gat/gats lines are split into several. */
#define WN_MC_SERVER_LINE_MAX 2048u
/* A meta request's tag: "O" and up to 8 hex digits. */
#define WN_MC_TAG_MAX 10
/* Keys in one retrieval line, far above what clients send (pymemcache's
 * get_many of 2,000, memcached's own tests of 6,000); past it the line is
 * answered CLIENT_ERROR too many keys. */
#define WN_MC_MAX_KEYS 100000
/* Values: walnut does not know the servers' item size limit (-I), so it
 * forwards a storage command of any size whose line and data block fit in
 * half the pool's client_buffer_limit and lets the server answer; a larger
 * one is answered SERVER_ERROR object too large for cache here (see
 * mc_dispatch.c). Half: the command is held until forwarded, on top of up
 * to a quarter of the limit in replies the client has not read yet (the
 * reading pause), so sending it never takes the client over the limit. A
 * backend may return values up to the larger of this and
 * client_buffer_limit. */
#define WN_MC_MAX_SERVER_VALUE (64u * 1024u * 1024u)

/* May a storage command of this size (its line and data block) be held to
 * be forwarded? (the same bound for binary values: mcbin_client.c) */
static inline bool wn_mc_storage_fits(const pool_rt_t *pool, uint64_t line_len, uint64_t data_len)
{
    return line_len + data_len <= pool->buffer_limit / 2;
}

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

/* How a client's mg counts its reply, as memcached does: without T a hit
 * counts get_hits, a miss get_misses (cmd_get when sent); with T a hit
 * counts as a touch (cmd_touch, touch_hits), a miss as a get (cmd_get,
 * get_misses). */
typedef enum mc_count { MC_COUNT_NONE, MC_COUNT_GET, MC_COUNT_GET_OR_TOUCH } mc_count_t;

typedef struct mc_req {
    req_t r;
    uint8_t cmd;           /* wn_mc_cmd_t */
    bool is_get;           /* a retrieval: replies are VALUE... END, matched by key */
    uint32_t nkeys;        /* keys asked for */
    uint32_t hits;         /* VALUE blocks received */
    uint8_t counts;        /* a client's mg: how its reply counts (mc_count_t; binary
                            * requests count theirs in mcbin_reply.c) */
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
    uint32_t error_seg;    /* fragments: where in rsp that line begins (after any
                              hits it sent first, which the merge may not have taken) */
    bool over_limit;       /* fragments of a split get: its items would take the client
                              past client_buffer_limit; the rest is read and dropped */
    bool torn;             /* split parents: an item was merged only in part (out of
                              memory): no line may follow what went out */
    /* Meta requests (cmd WN_MC_META): which one, and whether walnut drops
     * what memcached would not have sent to a client that asked with q (the
     * server is asked without it); false for until_mn requests, whose q the
     * server sees. */
    uint8_t meta;          /* wn_meta_cmd_t */
    bool quiet;
    /* Sent with its q and an mn after it: the reply, if any, ends at MN
     * (ma with q and N: only memcached knows whether it answers). */
    bool until_mn;
    /* Meta requests walnut sends (text and binary): tagged with an O token
     * of walnut's that every reply but an error must echo (a reply without it
     * answers another request: a protocol error). 0: sent untagged (no room
     * for the token). A text request's reply line is relayed with the tag
     * taken out, and the client's own O token (kept in r.keep) put back. */
    uint32_t tag;
    bool tag_relay;
    /* mg, ma with an O token over memcached's 32 bytes, sent untagged as the
     * client spelled it (memcached runs them, then answers an error): a reply
     * that is not an error must echo that very token (opaque). */
    bool long_o;
    uint16_t opaque_len;
    const char *opaque; /* borrowed from r.keep, which owns it; NULL: none */
    /* The request's key (decoded), a copy owned by r.keep. Storage commands
     * wait for their data block routed: if the worker's configuration
     * generation moved meanwhile, they route again by it. me, sent untagged,
     * checks its ME line against it: another key is another request's reply
     * (memcached prints a key stored with b in base64, re-encoded: not always
     * as the request spelled it; others as they are). */
    uint64_t route_gen;
    const char *route_key;
    uint16_t route_key_len;
    /* A part of a streamed line: its reply is held (not done, not streamed)
     * until the line answers as one; part_done once its own merge is over. */
    struct mc_line *part_of;
    bool part_done;
    /* Parts: bytes counted for what it keeps until it is freed (its line,
     * its split, its and its fragments' slots), which the line holds after
     * its reply is out; then counted on the line's term instead. */
    uint64_t kept;
} mc_req_t;

/*
 * A get/gets/gat/gats line too long to hold whole, streamed: its keys go
 * out in parts as they arrive, each part a split retrieval of its own.
 * Until the line has ended, nothing goes to the client (req_t.rsp_held): a
 * key over 250 bytes, too many keys or a part's error must then be the
 * line's one answer, as memcached answers the line whole, the parts' hits
 * dropped. Once it has ended good, the parts are released: they answer in
 * order and stream like a split get, and the line adds one END (a part
 * failing then answers with its error and the rest with nothing). Owned by
 * the client while it reads the line, then by its parts; freed once every
 * part is in and the line has answered.
 */
typedef struct mc_line {
    uint32_t pending;        /* parts whose merge is not over */
    bool closed;             /* no more parts: the line ended, or the client left */
    bool released;           /* ended good: its parts answer (and stream) in order */
    bool failed;             /* released, then a part answered with an error line */
    bool over_limit;         /* before release, a part's hits would have taken the client
                                past client_buffer_limit: the line answers that error
                                alone, and its parts keep no hits */
    wn_mc_reply_t verdict;   /* NONE: answer the hits, then END */
    uint32_t err_len;        /* before release, the first error line a part met */
    char err[512];
    mc_req_t **parts;        /* [nparts], one reference each, in order */
    uint32_t nparts;
    uint32_t cap;
    mc_req_t *term;          /* answers END or the error line (one reference);
                                NULL when the client left mid-line */
    /* Keys taken and not yet sent, one space between (the spaces a client
     * put between them are never held): the next part. */
    char *acc;
    uint32_t acc_len;
    uint32_t acc_cap;
    uint32_t acc_keys;
} mc_line_t;

typedef struct mc_client {
    client_t c;
    wn_mc_req_parser_t parser;
    mc_req_t *data_req;    /* request whose data block is arriving (one reference) */
    uint32_t data_left;    /* bytes of the data block still to come */
    bool data_swallow;     /* the block is dropped (a rejected request's) */
    char trailer[2];       /* last two bytes of the data block seen so far */
    mc_line_t *line;       /* the retrieval line being streamed, or NULL */
    wn_mc_stream_t stream; /* its parser */
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
/* A streamed line has a part to send, or its end to answer, with no more
 * bytes needed (a hold stopped it). */
bool wn_mc_client_has_pending(const client_t *c);
/* r (routed by key, its line pushed) waits for its data block: c holds it
 * (our reference passes), with a copy of the key in case a reload makes it
 * route again. 0 or WN_ENOMEM (nothing changed). */
int wn_mc_expect_data(mc_client_t *c, mc_req_t *r, const char *key, size_t len);

/* mc_dispatch.c: route a parsed request (its line at b->data + pos). */
void wn_mc_dispatch(mc_client_t *c, wn_buf_t *b, uint32_t pos, const wn_mc_request_t *q);
/* Would the request go to a suspect server? Then c is held (true). */
bool wn_mc_must_wait(mc_client_t *c, const char *line, const wn_mc_request_t *q);
/* A gat/gats rejected for a key over 250 bytes (q->nkeys: the keys before
 * it): touch those keys as memcached has, answering nobody. */
void wn_mc_dispatch_touch_only(mc_client_t *c, wn_buf_t *b, uint32_t pos,
                               const wn_mc_request_t *q);
/* A part of c's streamed line: the retrieval q of a line composed for it
 * (hb->data), dispatched now; its reply waits for the line. */
void wn_mc_dispatch_part(mc_client_t *c, wn_buf_t *hb, const wn_mc_request_t *q);
/* A request answered by walnut, queued in order like any other. */
mc_req_t *wn_mc_local(mc_client_t *c, wn_mc_cmd_t cmd);
/* A request of c's, queued in its FIFO and counted under cmd; NULL on ENOMEM. */
mc_req_t *wn_mc_request(mc_client_t *c, req_kind_t kind, wn_mc_cmd_t cmd);

/* mc_meta.c: the meta protocol (mg ms md ma mn me), on the same connections
 * as the classic commands. A line the classic parser reported as META (at
 * c's read position, q->line_len bytes): checked as memcached's meta parser
 * checks it, then routed by its (decoded) key, or answered with its error.
 * False when c must wait for a suspect server (the line is parsed again). */
bool wn_mc_meta_line(mc_client_t *c, wn_buf_t *b, const wn_mc_request_t *q);
/* A tag as its O token ("O" and hex digits) into buf (WN_MC_TAG_MAX
 * bytes); its length. */
size_t wn_mc_tag_text(uint32_t tag, char *buf);
/* A new tag for r (r->tag set), written as its O token into buf
 * (WN_MC_TAG_MAX bytes); its length. */
size_t wn_mc_meta_tag(wn_worker_t *w, mc_req_t *r, char *buf);
/* A line walnut composed for a meta request (ending "\r\n", len bytes, in
 * buf of cap): r tagged, the tag put before the line end. The new length,
 * or len untagged when it would not fit. */
int wn_mc_meta_tag_line(wn_worker_t *w, mc_req_t *r, char *buf, int len, size_t cap);

/* mc_server.c */
void wn_mc_sconn_reset(sconn_t *s);
int wn_mc_server_parse(sconn_t *s);
void wn_mc_server_read_plan(const sconn_t *s, uint32_t *keep, uint64_t *ahead);

/* mc_merge.c */
void wn_mc_parent_progress(req_t *parent);
/* f, a split get's part, would have taken its client past
 * client_buffer_limit (wn_req_part_push: every part of the get let go): the
 * get ends with the error (split_progress). A get that is part of a
 * streamed line still open fails the whole line at once: its parts' hits
 * will never be sent. */
void wn_mc_part_over_limit(mc_req_t *f);
/* Keep nothing more for f: a part of a streamed line that failed so. */
bool wn_mc_part_of_failed_line(const mc_req_t *f);
/* A streamed line has no more parts (closed): it answers once they are in. */
void wn_mc_line_closed(mc_line_t *l);
/* r could not be completed: count it, answer it with twemproxy's
 * SERVER_ERROR text; a fragment's parent merges on. */
void wn_mc_fail(req_t *r, int err);
/* wn_proto_req_orphaned for text and binary requests. */
void wn_mc_req_orphaned(req_t *r);
/* Queue r on server s for c's slot, or fail it. */
void wn_mc_forward(client_t *c, server_rt_t *s, req_t *r);


/* mc_stats.c: `stats` answered with walnut's counters. */
void wn_mc_reply_stats(mc_req_t *r);
/* mc_stats.c: the same, from this worker's own counters (no control thread
 * to ask, or a stopping worker's, whose control answers no more). */
void wn_mc_stats_local(req_t *r);
/* mc_stats.c: the stats text as r's reply, in r's framing (text or binary). */
void wn_mc_stats_text(req_t *r, const char *text, size_t len);

/* The last two bytes of a data block seen so far, as n bytes of it arrive
 * (split anywhere): they must be "\r\n" at its end. */
static inline void wn_mc_track_trailer(char trailer[2], const char *p, uint32_t n)
{
    if (n >= 2) {
        trailer[0] = p[n - 2];
        trailer[1] = p[n - 1];
    } else if (n == 1) {
        trailer[0] = trailer[1];
        trailer[1] = p[0];
    }
}

#endif
