/*
 * redis.h: the Redis (RESP2) protocol unit's private types. Each starts with
 * the core's struct (client_t, sconn_t, req_t), so the core allocates them by
 * size and the unit casts. Worker thread only.
 */
#ifndef WALNUT_WORKER_REDIS_H
#define WALNUT_WORKER_REDIS_H

#include "core_types.h"
#include "walnut/proto_resp.h"

#include <string.h>
#include <strings.h>

/* Keys walnut routes: up to this many bytes (twemproxy: its buffer size
 * less 48, 16335 bytes by default). Longer keys are refused. */
#define WN_REDIS_MAX_KEY (64u * 1024u)
/* Keys in one split command (MGET, DEL, MSET, ...). */
#define WN_REDIS_MAX_KEYS 1000000u
/* Arguments kept inline in a request; more get an array of their own. */
#define WN_REDIS_INLINE_ARGS 6
/* Bytes of a command name walnut keeps: what redis-server's unknown-command
 * error shows of it (command names are far shorter). */
#define WN_REDIS_NAME_MAX WN_RESP_UNKNOWN_ARG_BYTES

/* One argument of a request: where its bytes (header "$len\r\n", payload,
 * "\r\n") lie in r->out, and its value when walnut needs to read it (keys,
 * local commands' args): contiguous in a buffer the request holds. Bytes
 * that arrived together share a segment, so an argument usually begins and
 * ends inside one that holds its neighbours too. */
typedef struct redis_arg {
    uint32_t seg;     /* index of the segment holding its first byte */
    uint32_t nsegs;   /* segments it spans */
    uint32_t skip;    /* where it begins in the first */
    uint32_t hdr;     /* its "$len\r\n" line's bytes */
    const char *val;  /* its payload, or NULL (not needed, or too long to copy) */
    uint32_t len;     /* payload bytes */
} redis_arg_t;

/* One element of a fragment's array reply (MGET): its segments in the
 * fragment's rsp, and the client key (index) it answers. */
typedef struct redis_item {
    uint32_t seg_first;
    uint32_t nsegs;
} redis_item_t;

typedef enum redis_merge {
    RMERGE_NONE = 0,
    RMERGE_ARRAY, /* MGET: elements in the client's key order */
    RMERGE_SUM,   /* DEL UNLINK TOUCH EXISTS: the sum of the integers */
    RMERGE_OK,    /* MSET, SCRIPT FLUSH: +OK when every part says +OK */
    RMERGE_SAME,  /* SCRIPT LOAD: the one bulk every server answered */
    RMERGE_ALL,   /* SCRIPT EXISTS: 1 for a script every server has */
} redis_merge_t;

/* A split's bookkeeping (one buffer, r->arena). */
typedef struct redis_split {
    uint32_t nkeys;
    uint32_t nservers;     /* the pool's when it was made (its arrays' sizes) */
    uint32_t nfrags;
    uint32_t *key_frag;    /* [nkeys] the fragment of each key */
    uint32_t *frag_first;  /* [nfrags + 1] each fragment's first key position in frag_keys */
    uint32_t *frag_keys;   /* [nkeys] key indexes grouped by fragment */
    redis_item_t *items;   /* [nkeys] fragment elements, grouped like frag_keys */
    uint32_t merged;       /* client keys merged so far (ARRAY) */
    int64_t sum;           /* SUM */
    uint8_t *yes;          /* [nfrags * nkeys] ALL: fragment f's answer for element k at
                              f * nkeys + k */
} redis_split_t;

typedef struct redis_req {
    req_t r;
    const wn_rcmd_t *cmd;  /* NULL: not known (yet) */
    uint32_t nargs;        /* the request's N */
    uint32_t got;          /* args complete so far */
    redis_arg_t *args;     /* [args_cap]: inl, or r.owned, grown as args arrive (a
                              "*1048576" line alone reserves nothing) */
    uint32_t args_cap;
    redis_arg_t inl[WN_REDIS_INLINE_ARGS]; /* (larger arrays: r.owned; copied args: r.keep) */
    uint8_t merge;         /* redis_merge_t: parents and their fragments */
    char reply_type;       /* wn_rcmd_reply_type: a reply of another type (not an error)
                              is not this request's: the connection's replies shifted */
    bool internal_select;  /* REQ_INTERNAL: SELECT (a failure closes the connection) */
    /* Fragments: */
    redis_split_t *split;  /* the parent's (borrowed) */
    uint32_t frag;
    uint32_t nkeys;        /* keys of this fragment (elements expected) */
    uint32_t nitems;       /* elements started */
    uint32_t ncomplete;    /* elements complete */
    uint32_t taken;        /* elements merged into the parent */
    bool error_reply;      /* the reply (or walnut's failure) is an error line */
    bool over_limit;       /* larger than client_buffer_limit: read, dropped, refused */
    bool reply_over_limit; /* its reply would take the client past client_buffer_limit:
                              let go, the rest read and dropped, the command refused */
    bool unreached;        /* failed by walnut: its server could not be reached
                              (wn_req_err_unreached) */
} redis_req_t;

typedef struct redis_client {
    client_t c;
    wn_resp_req_parser_t parser;
    redis_req_t *cur;        /* the request being received (one reference) */
    bool cur_swallow;        /* its args are read and dropped (answered locally) */
    bool arg_start;          /* the current arg's first payload bytes come next */
    uint64_t data_left;      /* payload + "\r\n" bytes of the current arg still to come */
    char trailer[2];
    char name[WN_REDIS_NAME_MAX]; /* arg 0 as sent, cut */
    uint32_t name_len;
    /* What an unknown-command error shows of the args (see keep_errarg):
     * their bytes one after another, and how many of them are each arg's. */
    char errargs[WN_RESP_UNKNOWN_ARG_BYTES];
    uint32_t errargs_len;
    uint8_t errarg_len[WN_RESP_UNKNOWN_ARGS];
    uint32_t nerrargs;
    uint32_t errshown;       /* redis-server's count of the text so far ("'arg' " each) */
    uint32_t errroom;        /* bytes the current arg may still show */
    redis_req_t *pending;    /* complete, waiting for a hold to end (one reference) */
    bool authed;             /* passed AUTH (or the pool has no redis_auth) */
    bool tx_refused;         /* MULTI was refused: nothing runs until EXEC or DISCARD */
    char *client_name;       /* CLIENT SETNAME (owned) */
    uint64_t id;             /* CLIENT ID */
    uint64_t born_ms;        /* loop time it connected (CLIENT INFO's age) */
} redis_client_t;

typedef struct redis_sconn {
    sconn_t s;
    wn_resp_rsp_parser_t rsp;
    uint64_t data_left;      /* payload + "\r\n" bytes of a bulk still to come */
    bool done_after_data;
    char trailer[2];
    bool auth_refused;       /* the server refused walnut's AUTH on this connection */
    uint64_t auth_refused_ms; /* when (loop time) */
    bool text_ok;            /* a long +/- line coming in pieces: what its start said of
                              * the server's health */
    bool replied;            /* a reply has completed on this connection */
} redis_sconn_t;

/*
 * A client that has not authenticated gets -NOAUTH for cmd (after the
 * checks redis-server makes first: the command known, its arity)? Not for
 * what redis-server answers before AUTH: AUTH, HELLO, QUIT and RESET run
 * there without it (walnut refuses RESET either way), and DEBUG is refused
 * first (enable-debug-command).
 */
static inline bool wn_redis_needs_auth(const redis_client_t *c, const wn_rcmd_t *cmd)
{
    if (c->authed)
        return false;
    switch ((wn_rcmd_id_t)cmd->id) {
    case WN_RCMD_ID_AUTH:
    case WN_RCMD_ID_HELLO:
    case WN_RCMD_ID_QUIT:
    case WN_RCMD_ID_RESET:
    case WN_RCMD_ID_DEBUG:
        return false;
    default:
        return true;
    }
}

static inline redis_req_t *redis_req(req_t *r)
{
    return (redis_req_t *)r;
}

/* redis_client.c */
/* Is argument i (read by walnut) `word`, in any case? */
static inline bool wn_redis_arg_is(const redis_req_t *r, uint32_t i, const char *word)
{
    const redis_arg_t *a = &r->args[i];
    return a->val != NULL && a->len == strlen(word) && strncasecmp(a->val, word, a->len) == 0;
}

void wn_redis_client_init(client_t *c);
void wn_redis_client_parse(client_t *c);
bool wn_redis_client_has_pending(const client_t *c);
void wn_redis_client_eof(client_t *c);
void wn_redis_client_deinit(client_t *c);
void wn_redis_client_read_plan(const client_t *c, uint32_t *keep, uint64_t *ahead);
/* Answer r (already in c's FIFO) with a line walnut wrote. */
void wn_redis_reply(redis_req_t *r, const char *text, size_t len);
/* Hand fn the bytes [from, from + count) of argument i of r, piece by piece
 * as they lie in its buffers; the first error fn returns ends it. */
typedef int (*redis_piece_fn)(void *ctx, wn_buf_t *buf, uint32_t off, uint32_t len);
int wn_redis_arg_pieces(const redis_req_t *r, uint32_t i, uint64_t from, uint64_t count,
                        redis_piece_fn fn, void *ctx);
/* An argument's bytes, header and CRLF included. */
static inline uint64_t wn_redis_arg_bytes(const redis_arg_t *a)
{
    return (uint64_t)a->hdr + a->len + 2;
}

/* redis_dispatch.c: a complete request goes where its command says.
 * False when c must wait (a hold): the caller keeps r pending. */
bool wn_redis_dispatch(redis_client_t *c, redis_req_t *r);
/* Queue r on server s for c's slot, or fail it. */
void wn_redis_forward(client_t *c, server_rt_t *s, req_t *r);

/* redis_local.c: PING ECHO QUIT SELECT AUTH HELLO CLIENT. */
void wn_redis_local(redis_client_t *c, redis_req_t *r);
/* Answer r: larger than its pool's client_buffer_limit, it did not run;
 * with `reply`, its reply would have taken the client past it
 * (redis_client.c). */
void wn_redis_refuse_over_limit(redis_req_t *r, bool reply);

/* redis_server.c */
void wn_redis_sconn_reset(sconn_t *s);
void wn_redis_sconn_hello(sconn_t *s);
int wn_redis_server_parse(sconn_t *s);
void wn_redis_server_read_plan(const sconn_t *s, uint32_t *keep, uint64_t *ahead);

/* redis_merge.c */
void wn_redis_parent_progress(req_t *parent);
/* r could not be completed: count it, answer "-ERR <cause>". */
void wn_redis_fail(req_t *r, int err);

#endif
