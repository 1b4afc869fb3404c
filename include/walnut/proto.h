/*
 * proto: protocol parsers and composers. This part is memcached's ASCII
 * protocol: framing client requests, framing backend replies, composing the
 * command heads a split needs. Pure functions over caller memory: no I/O, no
 * malloc, no logging, no threads; any thread may call them on its own state.
 * Tokens are reported as offsets into the caller's buffer, never pointers.
 */
#ifndef WALNUT_PROTO_H
#define WALNUT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What memcached writes on a connection it accepts past its connection
 * limit (-c), before it closes it: no answer to any request. */
#define WN_MC_FULL_LINE "ERROR Too many open connections\r\n"

/* ---- limits ------------------------------------------------------------ */

/* memcached's KEY_MAX_LENGTH: keys are 1..250 bytes. */
#define WN_MC_KEY_MAX 250
/* Default longest line, line end included. The worker must pass a limit no
 * larger than the contiguous space it can give a line (its buffer chunk). */
#define WN_MC_LINE_MAX 16384
/* Default largest value (data block without its \r\n): memcached's default
 * item size, -I 1m. */
#define WN_MC_VALUE_MAX (1024u * 1024u)
/* Smallest max_line accepted (shorter limits are raised to this). */
#define WN_MC_LINE_MIN 64

typedef struct wn_mc_limits {
    uint32_t max_line;  /* longest line including its \n; >= WN_MC_LINE_MIN */
    uint32_t max_value; /* largest data block, not counting its trailing \r\n */
    /* Longest get/gets/gat/gats line (many keys); 0: max_line. memcached
     * itself has no limit on them. */
    uint32_t max_retrieval_line;
} wn_mc_limits_t;

/* ---- commands ---------------------------------------------------------- */

#define WN_MC_CMD_MAP(XX)                                                                         \
    XX(UNKNOWN, "unknown")                                                                        \
    XX(GET, "get")                                                                                \
    XX(GETS, "gets")                                                                              \
    XX(GAT, "gat")                                                                                \
    XX(GATS, "gats")                                                                              \
    XX(SET, "set")                                                                                \
    XX(ADD, "add")                                                                                \
    XX(REPLACE, "replace")                                                                        \
    XX(APPEND, "append")                                                                          \
    XX(PREPEND, "prepend")                                                                        \
    XX(CAS, "cas")                                                                                \
    XX(INCR, "incr")                                                                              \
    XX(DECR, "decr")                                                                              \
    XX(TOUCH, "touch")                                                                            \
    XX(DELETE, "delete")                                                                          \
    XX(QUIT, "quit")                                                                              \
    XX(VERSION, "version")                                                                        \
    XX(FLUSH_ALL, "flush_all")                                                                    \
    XX(VERBOSITY, "verbosity")                                                                    \
    XX(STATS, "stats")                                                                            \
    XX(META, "meta")

typedef enum wn_mc_cmd {
#define WN_MC_CMD_ENUM(up, name) WN_MC_##up,
    WN_MC_CMD_MAP(WN_MC_CMD_ENUM)
#undef WN_MC_CMD_ENUM
    WN_MC_CMD_COUNT
} wn_mc_cmd_t;

/* "get", "flush_all", ... ("unknown", "meta"); NULL when out of range. */
const char *wn_mc_cmd_name(wn_mc_cmd_t cmd);
/* get, gets, gat, gats: keys are many, replies are VALUE... END. */
bool wn_mc_cmd_is_retrieval(wn_mc_cmd_t cmd);
/* set, add, replace, append, prepend, cas: a data block follows the line. */
bool wn_mc_cmd_is_storage(wn_mc_cmd_t cmd);

/* ---- local replies ----------------------------------------------------- */

/*
 * A line the proxy itself answers with instead of forwarding the request.
 * The texts are memcached 1.6's, measured (see test/unit/test_proto_mc.c),
 * except LINE_TOO_LONG (memcached closes silently) and TOO_MANY_KEYS (a
 * bound memcached does not have), which are walnut's own.
 */
#define WN_MC_REPLY_MAP(XX)                                                                       \
    XX(NONE, "")                                                                                  \
    XX(ERROR, "ERROR")                                                                            \
    XX(BAD_FORMAT, "CLIENT_ERROR bad command line format")                                        \
    XX(BAD_DELETE, "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]")        \
    XX(BAD_EXPTIME, "CLIENT_ERROR invalid exptime argument")                                      \
    XX(BAD_DELTA, "CLIENT_ERROR invalid numeric delta argument")                                  \
    XX(BAD_CHUNK, "CLIENT_ERROR bad data chunk")                                                  \
    XX(TOO_LARGE, "SERVER_ERROR object too large for cache")                                      \
    XX(LINE_TOO_LONG, "CLIENT_ERROR line too long")                                               \
    XX(TOO_MANY_KEYS, "CLIENT_ERROR too many keys")                                               \
    XX(END, "END")

typedef enum wn_mc_reply {
#define WN_MC_REPLY_ENUM(up, text) WN_MC_REPLY_##up,
    WN_MC_REPLY_MAP(WN_MC_REPLY_ENUM)
#undef WN_MC_REPLY_ENUM
    WN_MC_REPLY_COUNT
} wn_mc_reply_t;

/* The reply line including its "\r\n" ("" for NONE); *len set if len is
 * not NULL. Static storage, never NULL. */
const char *wn_mc_reply_text(wn_mc_reply_t reply, size_t *len);

/* What to do with the connection after a rejected request. */
typedef enum wn_mc_after {
    WN_MC_AFTER_CONTINUE = 0, /* drop line_len bytes; the next byte starts a command */
    WN_MC_AFTER_SWALLOW,      /* drop line_len + data_len bytes, then continue */
    WN_MC_AFTER_CLOSE,        /* framing is lost: send the reply, then close */
} wn_mc_after_t;

/* ---- request parser ---------------------------------------------------- */

/* A span of the caller's buffer, as offsets from the start of the line. */
typedef struct wn_mc_span {
    uint32_t off;
    uint32_t len;
} wn_mc_span_t;

/* Parser state: the limits and how far the pending line has been searched
 * for its end. Caller memory; one per client connection. */
typedef struct wn_mc_req_parser {
    wn_mc_limits_t lim;
    uint32_t scanned;
} wn_mc_req_parser_t;

/* `lim` NULL means the defaults (WN_MC_LINE_MAX, WN_MC_VALUE_MAX). */
void wn_mc_req_parser_init(wn_mc_req_parser_t *p, const wn_mc_limits_t *lim);

/* One request line, parsed. No pointers: every span is relative to the
 * start of the line (the `buf` given to wn_mc_request_parse). */
typedef struct wn_mc_request {
    wn_mc_cmd_t cmd;    /* UNKNOWN for words the proxy does not forward */
    char meta;          /* META: the second letter (g s d a n e); else 0 */
    bool noreply;       /* memcached would send nothing back, not even an error */
    uint32_t line_len;  /* bytes of the line including "\n" (0: line too long) */
    uint32_t data_len;  /* bytes of the data block after the line: bytes + 2; else 0 */
    uint32_t bytes;     /* storage and ms: the value length */
    uint32_t flags;     /* storage: client flags (wrapped to 32 bits as memcached does) */
    int32_t exptime;    /* storage, touch, gat, gats, flush_all (0 when absent) */
    uint64_t cas;       /* cas: the cas unique */
    uint64_t delta;     /* incr, decr */
    uint32_t nkeys;     /* how many keys (0 for key-less commands) */
    wn_mc_span_t key;   /* the first key */
    wn_mc_span_t keys;  /* the run of space-separated keys, for wn_mc_key_next */
    wn_mc_span_t arg;   /* gat/gats/flush_all: exptime token; verbosity: level; stats: args */
    /* A retrieval rejected for a key over 250 bytes: nkeys, key and keys
     * describe the keys before it (memcached has run those: a gat touched
     * them). */
    /* Only meaningful when wn_mc_request_parse returned a negative code: */
    wn_mc_reply_t reply; /* what to answer (send nothing if noreply is set) */
    wn_mc_after_t after; /* what to do next */
} wn_mc_request_t;

/*
 * memcached's strtol/strtoul scan of one number token (base 10), resumable:
 * fed the token in pieces, it keeps only where it is and the value so far,
 * so a token of any length (white space or zeros before the digits) reads
 * as it would whole. Zeroed to start (proto/mc_lex.c).
 */
typedef struct wn_mc_num {
    uint8_t phase; /* before the digits, at the first, in them, decided good or bad */
    bool neg;
    bool overflow; /* the magnitude does not fit in 64 bits */
    uint64_t mag;
} wn_mc_num_t;

/*
 * A get/gets/gat/gats line too long to hold whole, parsed as it arrives.
 * wn_mc_stream_begin takes the command word; wn_mc_stream_take then takes
 * what has arrived of the rest, handing out runs of complete keys as soon as
 * they are complete. Tokens, the line end, NUL and the limits are those of
 * wn_mc_request_parse (a key over WN_MC_KEY_MAX bytes: BAD_FORMAT, the keys
 * before it handed out, as memcached looked them up; more than max_keys:
 * TOO_MANY_KEYS), so the same line asks for the same keys and gets the same
 * verdict either way. Caller memory, one per line.
 */
typedef struct wn_mc_stream {
    uint8_t cmd;            /* wn_mc_cmd_t: GET, GETS, GAT or GATS */
    bool want_arg;          /* gat/gats: the exptime token is next */
    bool nul;               /* a NUL ended the content: the rest up to "\n" is not read */
    bool ended;             /* the line's "\n" was taken: verdict is final */
    bool in_exptime;        /* in a long exptime token, read as it arrives */
    wn_mc_num_t num;        /* that token so far */
    int32_t exptime;        /* gat/gats, once read */
    uint32_t nkeys;         /* keys handed out so far */
    uint32_t max_keys;
    /* NONE: the line is good so far (at its end: answer the hits, then END);
     * else the one line to answer instead (ERROR, BAD_EXPTIME, BAD_FORMAT,
     * TOO_MANY_KEYS, or END for a gat with no key): set before the end,
     * the rest of the line is dropped. */
    wn_mc_reply_t verdict;
} wn_mc_stream_t;

/* `buf` (n bytes) starts a line: up to 64 spaces, then "get ", "gets ",
 * "gat " or "gats ". Returns the bytes taken, or WN_EPROTO if it does not. */
int wn_mc_stream_begin(wn_mc_stream_t *s, const char *buf, size_t n, uint32_t max_keys);
/* Take from buf (the bytes after those taken so far): returns how many were
 * taken, which stops before a token the end of buf cuts (call again with it
 * and more). The keys taken this call: *nkeys of them, in `keys` (a span of
 * buf: the first key's start to the last one's end, spaces between). The
 * line is over when s->ended. */
int wn_mc_stream_take(wn_mc_stream_t *s, const char *buf, size_t n, wn_mc_span_t *keys,
                      uint32_t *nkeys);

/*
 * Frame and parse one request line at `buf` (n bytes available, the line
 * starts at buf[0] and must be contiguous). Accepts "\r\n" and bare "\n";
 * tokens are separated by spaces; like memcached, a NUL byte ends the line's
 * content (the rest up to "\n" is ignored, but consumed).
 *
 * Returns:
 *  > 0        the line length (== req->line_len): a request to forward; a
 *             storage command's data block (req->data_len bytes: value and
 *             "\r\n") follows and is not parsed.
 *  WN_EAGAIN  no complete line yet: call again with the same buf and more
 *             bytes; the parser remembers how far it searched, so feeding a
 *             growing buffer costs O(line) in total. req untouched.
 *  WN_EPROTO  the line is complete but rejected, or must be answered by the
 *             proxy: req->reply, req->after, req->line_len, req->noreply.
 *  WN_ETOOBIG the line exceeds max_line (reply LINE_TOO_LONG, after CLOSE,
 *             line_len 0), or a storage value exceeds max_value (reply
 *             TOO_LARGE, after SWALLOW: drop line_len + data_len bytes).
 * After every result except WN_EAGAIN the parser is ready for the next line.
 * Rejected requests follow memcached 1.6: after a malformed storage line
 * memcached reads the data block as the next command (AFTER_CONTINUE), and
 * so must the caller to stay byte-compatible.
 */
int wn_mc_request_parse(wn_mc_req_parser_t *p, const char *buf, size_t n, wn_mc_request_t *req);

/*
 * Iterate the keys of a parsed request: start with *cursor = 0; each call
 * stores the next key in *key and returns true, or returns false when there
 * are no more. `line` is the buffer the request was parsed from.
 */
bool wn_mc_key_next(const char *line, const wn_mc_request_t *req, uint32_t *cursor,
                    wn_mc_span_t *key);

/*
 * A storage command's data block must end in "\r\n" at data_len. Pass its
 * last two bytes. When false, answer BAD_CHUNK (unless req->noreply) and
 * carry on after the data block: memcached 1.6 consumes exactly bytes + 2
 * and parses what follows as the next command.
 */
static inline bool wn_mc_data_trailer_ok(char penultimate, char last)
{
    return penultimate == '\r' && last == '\n';
}

/* ---- response parser --------------------------------------------------- */

#define WN_MC_RSP_MAP(XX)                                                                         \
    XX(VALUE)        /* VALUE <key> <flags> <bytes> [<cas>]: data block follows */                \
    XX(END)                                                                                       \
    XX(STORED)                                                                                    \
    XX(NOT_STORED)                                                                                \
    XX(EXISTS)                                                                                    \
    XX(NOT_FOUND)                                                                                 \
    XX(DELETED)                                                                                   \
    XX(TOUCHED)                                                                                   \
    XX(OK)                                                                                        \
    XX(RESET)        /* stats reset */                                                            \
    XX(NUMBER)       /* incr/decr result */                                                       \
    XX(VERSION)      /* text: the version */                                                      \
    XX(ERROR)        /* text: anything after "ERROR" */                                           \
    XX(CLIENT_ERROR) /* text: the message */                                                      \
    XX(SERVER_ERROR) /* text: the message */                                                      \
    XX(STAT)         /* STAT <name> <value>; text: after "STAT " */                               \
    XX(ITEM)         /* stats cachedump */                                                        \
    XX(PREFIX)       /* stats detail dump */                                                      \
    XX(META_VA)      /* VA <bytes> <flags>*: data block follows */                                \
    XX(META)         /* HD EN NF NS EX MN ME: text: the two letters and the rest */

typedef enum wn_mc_rsp_type {
#define WN_MC_RSP_ENUM(up) WN_MC_RSP_##up,
    WN_MC_RSP_MAP(WN_MC_RSP_ENUM)
#undef WN_MC_RSP_ENUM
    WN_MC_RSP_COUNT
} wn_mc_rsp_type_t;

const char *wn_mc_rsp_type_name(wn_mc_rsp_type_t type);

/* Parser state for one backend connection: the limits, how far the pending
 * line was searched, and where in a multi-line reply we are. */
typedef struct wn_mc_rsp_parser {
    wn_mc_limits_t lim;
    uint32_t scanned;
    uint8_t phase; /* private */
} wn_mc_rsp_parser_t;

void wn_mc_rsp_parser_init(wn_mc_rsp_parser_t *p, const wn_mc_limits_t *lim);

typedef struct wn_mc_response {
    wn_mc_rsp_type_t type;
    uint32_t line_len;  /* bytes of the line including "\n" */
    uint32_t data_len;  /* VALUE, META_VA: bytes + 2 follow the line; else 0 */
    uint32_t bytes;     /* VALUE, META_VA */
    uint32_t flags;     /* VALUE */
    bool has_cas;       /* VALUE carried a cas unique (gets, gats) */
    uint64_t cas;       /* VALUE */
    uint64_t number;    /* NUMBER */
    wn_mc_span_t key;   /* VALUE */
    wn_mc_span_t text;  /* VERSION, *ERROR, STAT, ITEM, PREFIX, META: see above */
    bool done;          /* this line (and its data block) completes the reply */
} wn_mc_response_t;

/*
 * Frame one line of the reply to a request of command `cmd` at `buf` (n
 * bytes, the line contiguous from buf[0]). The caller skips rsp->data_len
 * bytes after a VALUE/VA line itself (check the trailer with
 * wn_mc_data_trailer_ok) and calls again for the next line, passing the same
 * cmd, until rsp->done; then the parser is ready for the next reply.
 *
 * Returns the line length (> 0), WN_EAGAIN (incomplete line: call again with
 * more bytes, same buf), WN_EPROTO (malformed, or not a valid reply to
 * `cmd`: close the backend connection), or WN_ETOOBIG (line over max_line or
 * VALUE bytes over max_value: close). rsp untouched unless > 0.
 *
 * Valid replies: get/gets/gat/gats: VALUE* END; storage: STORED NOT_STORED
 * (cas also EXISTS NOT_FOUND); incr/decr: NUMBER NOT_FOUND; touch: TOUCHED
 * NOT_FOUND; delete: DELETED NOT_FOUND; version: VERSION; flush_all,
 * verbosity: OK; stats: (STAT|ITEM|PREFIX)* END, or RESET or OK; meta: one
 * HD EN NF NS EX MN ME line or VA + data; unknown: only an error line;
 * quit: nothing at all. Otherwise ERROR, CLIENT_ERROR and SERVER_ERROR end
 * any reply (also after some VALUE lines). Strict: exact words, decimal
 * digits only, VALUE keys 1..250 bytes, flags < 2^32.
 */
int wn_mc_response_parse(wn_mc_rsp_parser_t *p, wn_mc_cmd_t cmd, const char *buf, size_t n,
                         wn_mc_response_t *rsp);

/* ---- composers --------------------------------------------------------- */

/*
 * The request line `line` (parsed into req, req->noreply set) without its
 * final "noreply" token: its tokens joined by single spaces, then "\r\n".
 * The proxy sends noreply requests this way and drops the reply itself.
 * Returns the length written, WN_ETOOBIG if cap is too small (req->line_len
 * + 2 always suffices), WN_EINVAL if the line does not end in noreply.
 */
int wn_mc_compose_without_noreply(char *dst, size_t cap, const char *line,
                                  const wn_mc_request_t *req);

/*
 * The request's canonical line for a server: the command and its arguments
 * as memcached reads them (numbers in decimal, single spaces, no noreply, no
 * token memcached ignores), then "\r\n". For the lines memcached could not
 * take as sent (over 2 KiB: it closes the connection). Storage commands,
 * incr, decr, touch, delete, flush_all, verbosity, version. Returns the
 * length written, WN_ETOOBIG if cap is too small (WN_MC_CANONICAL_MAX always
 * suffices), WN_EINVAL for other commands.
 */
#define WN_MC_CANONICAL_MAX 384
int wn_mc_compose_canonical(char *dst, size_t cap, const char *line, const wn_mc_request_t *req);

/*
 * Bytes needed for a retrieval head for keys keys[order[0]], keys[order[1]],
 * ... (order NULL: keys[0..nkeys)) of the request `req` (get, gets, gat or
 * gats) parsed from `line`: "get k1 k2\r\n" or "gat <exptime> k1 k2\r\n"
 * (the exptime in decimal, as memcached read it: req->exptime). With nkeys
 * 0, the size of the head without keys. 0 if req->cmd is not a retrieval
 * command.
 */
size_t wn_mc_retrieval_head_size(const char *line, const wn_mc_request_t *req,
                                 const wn_mc_span_t *keys, const uint32_t *order, size_t nkeys);
/*
 * Write that head into dst (cap bytes). Returns the length written, or
 * WN_ETOOBIG if it does not fit, WN_EINVAL for a non-retrieval command or
 * nkeys 0; dst untouched on error.
 */
int wn_mc_retrieval_head_compose(char *dst, size_t cap, const char *line,
                                 const wn_mc_request_t *req, const wn_mc_span_t *keys,
                                 const uint32_t *order, size_t nkeys);

/*
 * What a proxy answers `stats <args>` (args: the request's arg span, the
 * text after "stats " up to the line's content end): each group as a
 * memcached 1.6.18 holding nothing answers it, in its exact framing:
 *   reset                      RESET (walnut's own counters are kept)
 *   slabs                      STAT active_slabs 0, STAT total_malloced 0, END
 *   items settings conns extstore   END
 *   sizes                      STAT sizes_status disabled, END
 *   sizes_disable              STAT sizes_status disabled (no END, as memcached)
 *   sizes_enable               STAT sizes_status error, STAT sizes_error
 *                              not_supported (no END)
 *   detail on|off              OK;  detail dump: END;  detail <else>: memcached's
 *                              CLIENT_ERROR usage line
 *   cachedump <id> <limit>     END, or memcached's CLIENT_ERROR for missing or
 *                              bad numbers and ids from 64 on
 *   anything else              ERROR
 * Returns static text (line ends included); *len set if len is not NULL.
 */
const char *wn_mc_stats_args_reply(const char *args, size_t len, size_t *outlen);

/* ---- matching retrieval replies to their keys ------------------------- */

/*
 * memcached answers a retrieval with one VALUE per key found, in the order
 * the keys were asked (a key asked twice is answered twice). So a VALUE
 * answers the first of the request's keys still to come that has its name;
 * a VALUE naming none of them is not an answer to this request (a protocol
 * error: the proxy never hands it to anyone).
 */

/*
 * Keys given as spans of `line`, visited as keys[order[0]], keys[order[1]],
 * ... (order NULL: keys[0..n)). Start with *cursor = 0. Returns the
 * position j (< n) the VALUE key answers and sets *cursor = j + 1, or -1
 * when no key from *cursor on has that name (*cursor unchanged).
 */
int32_t wn_mc_match_key(const char *line, const wn_mc_span_t *keys, const uint32_t *order,
                        uint32_t n, uint32_t *cursor, const char *vkey, uint32_t vlen);

/*
 * The same over the key run of a parsed request line (req->keys of a
 * forwarded retrieval): *cursor is a byte offset into line, start with 0. True when a key from the
 * cursor on has the VALUE's name (the cursor moves past it).
 */
bool wn_mc_match_line_key(const char *line, wn_mc_span_t keys, uint32_t *cursor,
                          const char *vkey, uint32_t vlen);

#endif
