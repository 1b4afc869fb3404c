/*
 * proto_resp: the Redis part of the proto module. RESP2 request framing
 * (multibulk and inline, accepting and rejecting what redis-server 7 does,
 * with its exact error texts), reply framing, composers for split commands
 * and local replies, and redis-server 7's command table with walnut's
 * classes. Pure functions over caller memory: no I/O, no malloc, no logging,
 * no threads; any thread may call them on its own state. Tokens are offsets
 * into the caller's buffer, never pointers.
 */
#ifndef WALNUT_PROTO_RESP_H
#define WALNUT_PROTO_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What redis-server writes on a connection it accepts past its maxclients,
 * before it reads anything, then closes it: no answer to any request, though
 * it reads as one. */
#define WN_RESP_FULL_LINE "-ERR max number of clients reached\r\n"
/* redis-server's answer to a command before a good AUTH (7.0's words) */
#define WN_RESP_NOAUTH_LINE "-NOAUTH Authentication required.\r\n"

/* ---- limits ------------------------------------------------------------ */

/* Defaults. redis-server 7.0.15 accepts up to 2^31-1 args (measured);
 * walnut bounds a request at 1M args by default. */
#define WN_RESP_MAX_ARGS (1024u * 1024u)
/* redis-server's proto-max-bulk-len (512 MiB) */
#define WN_RESP_MAX_BULK (512ull * 1024u * 1024u)
/* redis-server's PROTO_INLINE_MAX_SIZE: bytes an inline line may hold before its '\n' */
#define WN_RESP_MAX_INLINE (64u * 1024u)
/* "*N\r\n" / "$N\r\n" / ":N\r\n" lines; the longest valid one is 23 bytes */
#define WN_RESP_MAX_LINE 64u
/* "+..." / "-..." reply lines returned whole, CRLF included; a longer one
 * comes in pieces (its text is bounded by max_bulk, as a bulk's is) */
#define WN_RESP_MAX_TEXT (64u * 1024u)
/* reply array counts */
#define WN_RESP_MAX_ELEMS 2147483647u
/* reply nesting the parser tracks level by level (its stack); arrays
 * nested deeper are counted together, with no limit (redis-server sends
 * 600 levels for a Lua table that deep) */
#define WN_RESP_MAX_DEPTH 512u
/* Smallest max_line / max_text accepted (smaller limits are raised to this). */
#define WN_RESP_LINE_MIN 32u

/*
 * Limits for one pool. A field left 0 takes its default; out-of-range
 * values are clamped (see wn_resp_limits_resolve). Every length read from
 * the wire is checked against these before it is used.
 */
typedef struct wn_resp_limits {
    uint32_t max_args;   /* request: largest *N of a multibulk request */
    uint64_t max_bulk;   /* requests and replies: largest $N */
    uint32_t max_inline; /* request: most bytes of an inline line before its '\n' */
    uint32_t max_line;   /* longest "*N" "$N" ":N" line, CRLF included (requests, replies) */
    uint32_t max_text;   /* reply: longest "+..." or "-..." line returned whole, CRLF included */
    uint32_t max_elems;  /* reply: largest *N */
    uint32_t max_depth;  /* reply: arrays tracked one by one, <= WN_RESP_MAX_DEPTH */
} wn_resp_limits_t;

/* The limits a parser initialised with `lim` (NULL: all defaults) uses. */
wn_resp_limits_t wn_resp_limits_resolve(const wn_resp_limits_t *lim);

/* A span of the caller's buffer, as offsets from the start of the line. */
typedef struct wn_resp_span {
    uint32_t off;
    uint32_t len;
} wn_resp_span_t;

/* The two bytes after a bulk payload (request or reply) must be "\r\n". */
static inline bool wn_resp_crlf_ok(char a, char b)
{
    return a == '\r' && b == '\n';
}

/* redis-server's string2ll over s[0, len): an optional '-', then "0" or
 * digits without a leading zero, within int64_t ("-0", "+1", " 1" are not
 * numbers). How redis-server reads an integer argument. */
bool wn_resp_parse_int(const char *s, size_t len, int64_t *out);

/* ---- request parser (client -> proxy) ---------------------------------- */

/*
 * Why a request was rejected, and the reply line redis-server 7.0.15 sends
 * for it before it closes the connection (measured with raw sockets; see
 * test/unit/test_proto_resp.c). BULK_CRLF is walnut's own: redis-server
 * skips the two bytes after a bulk payload without looking at them.
 */
#define WN_RESP_REQERR_MAP(XX)                                                                     \
    XX(NONE, "")                                                                                   \
    XX(MBULK_LEN, "-ERR Protocol error: invalid multibulk length")                                 \
    XX(BULK_LEN, "-ERR Protocol error: invalid bulk length")                                       \
    XX(EXPECTED_DOLLAR, "-ERR Protocol error: expected '$', got '?'")                              \
    XX(MBULK_TOO_BIG, "-ERR Protocol error: too big mbulk count string")                           \
    XX(BULK_TOO_BIG, "-ERR Protocol error: too big bulk count string")                             \
    XX(INLINE_TOO_BIG, "-ERR Protocol error: too big inline request")                              \
    XX(UNBALANCED_QUOTES, "-ERR Protocol error: unbalanced quotes in request")                     \
    XX(MBULK_UNAUTH, "-ERR Protocol error: unauthenticated multibulk length")                      \
    XX(BULK_UNAUTH, "-ERR Protocol error: unauthenticated bulk length")                            \
    XX(BULK_CRLF, "-ERR Protocol error: bulk data not followed by CRLF")

typedef enum wn_resp_req_err {
#define WN_RESP_REQERR_ENUM(up, text) WN_RESP_REQERR_##up,
    WN_RESP_REQERR_MAP(WN_RESP_REQERR_ENUM)
#undef WN_RESP_REQERR_ENUM
    WN_RESP_REQERR_COUNT
} wn_resp_req_err_t;

/* Room for any request error line, "\r\n" included. */
#define WN_RESP_REQERR_MAX 64

/* Parser state: one per client connection, caller memory. Private fields;
 * read err (the last error) if you like. */
typedef struct wn_resp_req_parser {
    wn_resp_limits_t lim;
    uint32_t scanned;   /* bytes of the pending line already searched */
    uint32_t nargs;     /* the multibulk request being read: its N */
    uint32_t args_left; /* bulks still due; 0: the next line starts a request */
    uint8_t err;        /* wn_resp_req_err_t of the last WN_EPROTO */
    uint8_t got;        /* EXPECTED_DOLLAR: the byte found instead of '$' */
    bool stuck;         /* a NUL hides the pending line's end (as in redis-server) */
    bool unauth;        /* the client must still authenticate: redis-server's small limits */
} wn_resp_req_parser_t;

/* `lim` NULL: defaults. Ready for the first request. */
void wn_resp_req_parser_init(wn_resp_req_parser_t *p, const wn_resp_limits_t *lim);

/* redis-server 7 (with requirepass) bounds a client that has not yet
 * authenticated: more args than this is MBULK_UNAUTH, a longer bulk is
 * BULK_UNAUTH (checked after the ordinary limits, as it does). */
#define WN_RESP_UNAUTH_MAX_ARGS 10u
#define WN_RESP_UNAUTH_MAX_BULK 16384u
/* Turn those bounds on (the pool wants AUTH and the client has not passed
 * it) or off (after a successful AUTH). Off after init. */
static inline void wn_resp_req_parser_set_unauth(wn_resp_req_parser_t *p, bool unauth)
{
    p->unauth = unauth;
}

typedef enum wn_resp_req_tok_type {
    WN_RESP_REQ_ARRAY,  /* "*N\r\n", N >= 1: N bulk lines follow */
    WN_RESP_REQ_BULK,   /* "$len\r\n": len payload bytes and "\r\n" follow */
    WN_RESP_REQ_INLINE, /* a whole inline request: iterate its args with wn_resp_inline_next */
    WN_RESP_REQ_EMPTY,  /* "*0", "*-N", an empty or blank inline line: no request, no reply */
} wn_resp_req_tok_type_t;

typedef struct wn_resp_req_tok {
    wn_resp_req_tok_type_t type;
    uint32_t line_len;    /* bytes of this line, its terminator included */
    uint32_t nargs;       /* ARRAY, BULK: the request's N; INLINE: its number of args (>= 1) */
    uint32_t arg;         /* BULK: which arg this is (0: the command name) */
    bool last;            /* BULK: the request's last arg; INLINE: always true */
    uint64_t bulk_len;    /* BULK: payload bytes; the caller takes bulk_len + 2 */
    uint32_t content_len; /* INLINE: the line without "\n" and one "\r" before it */
} wn_resp_req_tok_t;

/*
 * Frame one line of the client stream at buf (n bytes; the line starts at
 * buf[0] and must be contiguous). The parser knows where it is: at the start
 * of a request a '*' begins a multibulk request, anything else an inline
 * one; inside a multibulk request the next line must be "$len". After a BULK
 * token the caller takes bulk_len + 2 bytes itself (payload and "\r\n";
 * check them with wn_resp_request_bulk_end) and calls again after them.
 * After the last BULK (tok->last) or an INLINE or EMPTY token, the next line
 * starts a new request.
 *
 * Returns:
 *  > 0        the line length (== tok->line_len).
 *  WN_EAGAIN  incomplete line: call again with the same buf and more bytes;
 *             the parser remembers how far it searched (a growing buffer
 *             costs O(line)). tok untouched.
 *  WN_EPROTO  a protocol error; p->err names it and wn_resp_req_error
 *             writes redis-server's reply. Send it and close: redis-server
 *             closes the connection after a protocol error. tok untouched.
 *
 * Like redis-server: "*0" and "*-N" (any negative N down to INT64_MIN) are
 * EMPTY; "$-1" in a request is BULK_LEN; numbers are strict (no '+', no
 * leading zeros, no "-0", no spaces); a NUL byte before a line's end hides
 * that end (redis-server searches with strchr), so the line is incomplete
 * until the limit is reached and then TOO_BIG; the limits are reached when
 * more than max_inline bytes (inline) or max_line - 2 bytes ("*" "$" lines)
 * are buffered without the line's end. Unlike redis-server, which skips the
 * byte after the '\r' of a "*"/"$" line unseen, walnut wants "\r\n" there
 * (else MBULK_LEN / BULK_LEN).
 */
int wn_resp_request_next(wn_resp_req_parser_t *p, const char *buf, size_t n,
                         wn_resp_req_tok_t *tok);

/* Check the two bytes after a bulk payload. 0 when they are "\r\n", else
 * WN_EPROTO with p->err = BULK_CRLF (send wn_resp_req_error, close). */
int wn_resp_request_bulk_end(wn_resp_req_parser_t *p, char a, char b);

/* The reply line for p's last error, "\r\n" included, into dst. Returns its
 * length, or WN_ETOOBIG if cap < that (WN_RESP_REQERR_MAX always fits).
 * Like redis-server, a CR or LF found instead of '$' is shown as a space. */
int wn_resp_req_error(const wn_resp_req_parser_t *p, char *dst, size_t cap);

/*
 * Inline args, split as redis-server's sdssplitargs does: args are separated
 * by white space (space \t \n \v \f \r; but an unquoted arg ends only at
 * space \t \r \n); "..." takes \n \r \t \b \a \\ \" and \xHH escapes (any
 * other \c is c); '...' takes only \'; a quote may start inside a word
 * (a"b c" is "ab c"); a closing quote must be followed by white space or the
 * end of the line, and a quote must close: else UNBALANCED_QUOTES.
 */
typedef struct wn_resp_inline_arg {
    wn_resp_span_t raw; /* the arg as written, quotes and escapes included */
    uint32_t len;       /* bytes of its value */
    bool direct;        /* the value is the span `val` of the line: no copy needed */
    wn_resp_span_t val; /* direct only */
} wn_resp_inline_arg_t;

/* Iterate the args of an INLINE token's line: start with *cursor = 0;
 * returns true with the next arg, false after the last. */
bool wn_resp_inline_next(const char *line, const wn_resp_req_tok_t *tok, uint32_t *cursor,
                         wn_resp_inline_arg_t *arg);
/* Write an arg's value (arg->len bytes, never more than arg->raw.len) to dst.
 * Returns arg->len. */
size_t wn_resp_inline_unescape(const char *line, const wn_resp_inline_arg_t *arg, char *dst);

/* ---- reply parser (server -> proxy) ------------------------------------ */

/*
 * State for one server connection: the limits, how far the pending line was
 * searched, and the elements still due in each open array. Caller memory,
 * about 2 KiB (the stack is sized for WN_RESP_MAX_DEPTH).
 */
typedef struct wn_resp_rsp_parser {
    wn_resp_limits_t lim;
    uint32_t scanned;
    uint32_t depth;                   /* arrays open, up to lim.max_depth */
    uint64_t deep;                    /* elements still due in arrays opened beyond */
    char text;                        /* '+' '-': inside a long line returned in pieces */
    uint64_t text_len;                /* its bytes returned so far */
    uint32_t left[WN_RESP_MAX_DEPTH]; /* elements not yet started, per open array */
} wn_resp_rsp_parser_t;

void wn_resp_rsp_parser_init(wn_resp_rsp_parser_t *p, const wn_resp_limits_t *lim);

typedef struct wn_resp_rsp_tok {
    char type;           /* '+' '-' ':' '$' '*' */
    bool done;           /* this line (and its payload) completes the whole reply */
    uint32_t line_len;   /* bytes of the line, "\r\n" included */
    uint32_t depth;      /* 0: the reply itself; 1: an element of a top-level array; ...;
                          * lim.max_depth + 1 for anything inside arrays beyond it */
    uint64_t bulk_len;   /* '$' with number >= 0: payload bytes; the caller skips bulk_len + 2 */
    int64_t number;      /* ':' the value; '$' '*' the length (-1: null) */
    wn_resp_span_t text; /* '+' '-': the text after the type byte, without "\r\n" */
    bool partial;        /* '+' '-': a piece of a long line; more of it follows */
    bool cont;           /* '+' '-': these bytes continue a line (no type byte) */
} wn_resp_rsp_tok_t;

/*
 * Frame one line of a server's reply stream at buf (n bytes, the line
 * contiguous from buf[0]). After a '$' line with bulk_len the caller skips
 * bulk_len + 2 bytes (check the last two with wn_resp_crlf_ok; if not, close
 * the connection) and calls again for the next line. After a token with done
 * the parser is ready for the next reply.
 *
 * Returns the line length (> 0), WN_EAGAIN (incomplete: call again with the
 * same buf and more bytes), WN_EPROTO (malformed: a type other than + - : $ *
 * (RESP3 included), a line end other than "\r\n", a CR or LF inside a line,
 * a number that is not strict decimal (no '+', no leading zeros, no "-0"),
 * a negative length other than -1), or WN_ETOOBIG (a line over its limit, a
 * bulk over max_bulk, an array over max_elems). Nesting has no limit.
 *
 * A '+' or '-' line longer than max_text is not refused: it comes as a
 * first piece of max_text - 1 bytes (partial, the type byte included), then
 * as pieces of whatever bytes are there (partial and cont: no type byte),
 * and ends with a piece that is cont and not partial, "\r\n" included,
 * which completes the element like a whole line. Pieces of one line report
 * the same type and depth; only its last may be done. Its text beyond
 * max_bulk bytes is WN_ETOOBIG.
 * After an error the stream is lost: close the connection. tok untouched
 * unless > 0.
 */
int wn_resp_reply_next(wn_resp_rsp_parser_t *p, const char *buf, size_t n, wn_resp_rsp_tok_t *tok);

/* True between replies (no array open). */
static inline bool wn_resp_reply_idle(const wn_resp_rsp_parser_t *p)
{
    return p->depth == 0 && p->text == 0;
}

/* ---- composers --------------------------------------------------------- */

/*
 * Each writes into dst (cap bytes) and returns the length written, or
 * WN_ETOOBIG if it does not fit (or exceeds INT32_MAX), leaving dst
 * untouched. The _size functions give the exact length up front.
 */
#define WN_RESP_ARRAY_HEAD_MAX 13 /* "*4294967295\r\n" */
#define WN_RESP_BULK_HEAD_MAX 23  /* "$18446744073709551615\r\n" */
#define WN_RESP_INT_MAX 23        /* ":-9223372036854775808\r\n" */

#define WN_RESP_OK "+OK\r\n"
#define WN_RESP_PONG "+PONG\r\n"
#define WN_RESP_NULL_BULK "$-1\r\n"
#define WN_RESP_NULL_ARRAY "*-1\r\n"

size_t wn_resp_array_head_size(uint32_t n);
int wn_resp_array_head(char *dst, size_t cap, uint32_t n); /* "*n\r\n" */
size_t wn_resp_bulk_head_size(uint64_t len);
int wn_resp_bulk_head(char *dst, size_t cap, uint64_t len); /* "$len\r\n" */
size_t wn_resp_bulk_size(size_t len);
int wn_resp_compose_bulk(char *dst, size_t cap, const char *s, size_t len); /* "$len\r\n<s>\r\n" */
size_t wn_resp_int_size(int64_t v);
int wn_resp_compose_int(char *dst, size_t cap, int64_t v); /* ":v\r\n" */
/* "+<s>\r\n" (3 + len bytes); WN_EINVAL if s holds a CR or LF. */
int wn_resp_compose_simple(char *dst, size_t cap, const char *s, size_t len);
/* "-<s>\r\n" (3 + len bytes), s such as "ERR Invalid argument"; a CR or LF
 * in s is written as a space, as redis-server does with its error texts. */
int wn_resp_compose_error(char *dst, size_t cap, const char *s, size_t len);
/* The head of a sub-command: "*<nargs + 1>\r\n$<len>\r\n<name>\r\n"; the
 * nargs args follow as bulks. */
size_t wn_resp_cmd_head_size(size_t name_len, uint32_t nargs);
int wn_resp_compose_cmd_head(char *dst, size_t cap, const char *name, size_t name_len,
                             uint32_t nargs);

/* A string by pointer and length, for composers taking several. */
typedef struct wn_resp_str {
    const char *s;
    size_t len;
} wn_resp_str_t;

/*
 * redis-server 7's answer to an unknown command (measured):
 *   -ERR unknown command '<name>', with args beginning with: '<a1>' '<a2>' \r\n
 * The name shows at most 128 bytes; args are shown while the args text so
 * far is under 128 bytes, each cut to what is left of those 128; a NUL ends
 * a name or arg (C strings); CR and LF show as spaces; the name is shown as
 * sent (not lowercased). So only the first WN_RESP_UNKNOWN_ARG_BYTES bytes
 * of at most WN_RESP_UNKNOWN_ARGS args matter: the caller may pass just those.
 */
#define WN_RESP_UNKNOWN_ARG_BYTES 128
#define WN_RESP_UNKNOWN_ARGS 43
#define WN_RESP_UNKNOWN_CMD_MAX 320
int wn_resp_compose_unknown_cmd(char *dst, size_t cap, const char *name, size_t name_len,
                                const wn_resp_str_t *args, size_t nargs);
/* "-ERR wrong number of arguments for '<name>' command\r\n", the name
 * lowercased (redis-server 7 prints its table's name, whatever the client
 * sent). */
#define WN_RESP_ARITY_ERR_MAX 128
int wn_resp_compose_arity_error(char *dst, size_t cap, const char *name, size_t name_len);

/* ---- command table ----------------------------------------------------- */

/* How the proxy treats a command. */
typedef enum wn_rcmd_class {
    WN_RCMD_KEY,       /* forwarded to the server of the key at first_key (almost always arg 1) */
    WN_RCMD_MULTI_KEY, /* MGET DEL UNLINK TOUCH EXISTS: split per server, every arg a key */
    WN_RCMD_MULTI_KV,  /* MSET: split per server, key/value pairs */
    WN_RCMD_SCRIPT,    /* EVAL EVALSHA (+ _RO, FCALL): keys after the numkeys arg at numkeys_at */
    WN_RCMD_ALL_KEYS_ONE_SERVER, /* multi-key commands twemproxy refuses; walnut can forward
                                  * them when every key maps to one server */
    WN_RCMD_LOCAL,        /* answered by the proxy: PING ECHO QUIT SELECT AUTH HELLO CLIENT */
    WN_RCMD_KEYLESS,      /* no key, same answer from any server (COMMAND, LOLWUT): twemproxy
                           * sends it to the server of the key "placeholder" */
    WN_RCMD_EVERY_SERVER, /* SCRIPT: LOAD and FLUSH go to every live server (the worker
                           * decides by the subcommand, refusing some) */
    WN_RCMD_UNSUPPORTED,  /* refused; unsupported_reason says why */
    WN_RCMD_CLASS_COUNT
} wn_rcmd_class_t;

/* Flags (wn_rcmd_t.flags). WRITE, READONLY and MOVABLE are redis-server's
 * "write", "readonly" and "movablekeys" from COMMAND INFO. */
#define WN_RCMD_F_WRITE 0x01u
#define WN_RCMD_F_READONLY 0x02u
#define WN_RCMD_F_MOVABLE 0x04u /* keys beyond first..last: see numkeys_at, or keywords (STORE) */
#define WN_RCMD_F_NC 0x08u      /* twemproxy 0.5.0 accepts it (MOVE: accepts, then closes) */

typedef struct wn_rcmd {
    const char *name;               /* lowercase, as redis-server names it */
    const char *unsupported_reason; /* UNSUPPORTED: why, a sentence; else NULL */
    int16_t arity;     /* redis-server's: N exactly, -N at least N args, the name counted */
    uint16_t id;       /* dense index < WN_RCMD_COUNT (< 256): WN_RCMD_ID_<NAME> */
    uint8_t cls;       /* wn_rcmd_class_t */
    uint8_t flags;     /* WN_RCMD_F_* */
    char reply;        /* type byte of every reply but an error ('+' ':' '$' '*'), or 0 when
                        * it depends on the arguments or the data: see wn_rcmd_reply_type */
    int8_t first_key;  /* COMMAND INFO key positions: first key's arg index (0: none), */
    int8_t last_key;   /* last (negative: from the end, -1 the last arg), */
    int8_t key_step;   /* and the step between keys */
    int8_t numkeys_at; /* arg index of a "numkeys" arg followed by that many keys; 0: none */
    uint8_t name_len;  /* strlen(name) */
} wn_rcmd_t;

/*
 * Every top-level command of redis-server 7.0.15, sorted by name (bytes);
 * the ids are the positions in this list.
 */
#define WN_RCMD_MAP(XX)                                                                            \
    XX(ACL, "acl")                                                                                 \
    XX(APPEND, "append")                                                                           \
    XX(ASKING, "asking")                                                                           \
    XX(AUTH, "auth")                                                                               \
    XX(BGREWRITEAOF, "bgrewriteaof")                                                               \
    XX(BGSAVE, "bgsave")                                                                           \
    XX(BITCOUNT, "bitcount")                                                                       \
    XX(BITFIELD, "bitfield")                                                                       \
    XX(BITFIELD_RO, "bitfield_ro")                                                                 \
    XX(BITOP, "bitop")                                                                             \
    XX(BITPOS, "bitpos")                                                                           \
    XX(BLMOVE, "blmove")                                                                           \
    XX(BLMPOP, "blmpop")                                                                           \
    XX(BLPOP, "blpop")                                                                             \
    XX(BRPOP, "brpop")                                                                             \
    XX(BRPOPLPUSH, "brpoplpush")                                                                   \
    XX(BZMPOP, "bzmpop")                                                                           \
    XX(BZPOPMAX, "bzpopmax")                                                                       \
    XX(BZPOPMIN, "bzpopmin")                                                                       \
    XX(CLIENT, "client")                                                                           \
    XX(CLUSTER, "cluster")                                                                         \
    XX(COMMAND, "command")                                                                         \
    XX(CONFIG, "config")                                                                           \
    XX(COPY, "copy")                                                                               \
    XX(DBSIZE, "dbsize")                                                                           \
    XX(DEBUG, "debug")                                                                             \
    XX(DECR, "decr")                                                                               \
    XX(DECRBY, "decrby")                                                                           \
    XX(DEL, "del")                                                                                 \
    XX(DISCARD, "discard")                                                                         \
    XX(DUMP, "dump")                                                                               \
    XX(ECHO, "echo")                                                                               \
    XX(EVAL, "eval")                                                                               \
    XX(EVAL_RO, "eval_ro")                                                                         \
    XX(EVALSHA, "evalsha")                                                                         \
    XX(EVALSHA_RO, "evalsha_ro")                                                                   \
    XX(EXEC, "exec")                                                                               \
    XX(EXISTS, "exists")                                                                           \
    XX(EXPIRE, "expire")                                                                           \
    XX(EXPIREAT, "expireat")                                                                       \
    XX(EXPIRETIME, "expiretime")                                                                   \
    XX(FAILOVER, "failover")                                                                       \
    XX(FCALL, "fcall")                                                                             \
    XX(FCALL_RO, "fcall_ro")                                                                       \
    XX(FLUSHALL, "flushall")                                                                       \
    XX(FLUSHDB, "flushdb")                                                                         \
    XX(FUNCTION, "function")                                                                       \
    XX(GEOADD, "geoadd")                                                                           \
    XX(GEODIST, "geodist")                                                                         \
    XX(GEOHASH, "geohash")                                                                         \
    XX(GEOPOS, "geopos")                                                                           \
    XX(GEORADIUS, "georadius")                                                                     \
    XX(GEORADIUS_RO, "georadius_ro")                                                               \
    XX(GEORADIUSBYMEMBER, "georadiusbymember")                                                     \
    XX(GEORADIUSBYMEMBER_RO, "georadiusbymember_ro")                                               \
    XX(GEOSEARCH, "geosearch")                                                                     \
    XX(GEOSEARCHSTORE, "geosearchstore")                                                           \
    XX(GET, "get")                                                                                 \
    XX(GETBIT, "getbit")                                                                           \
    XX(GETDEL, "getdel")                                                                           \
    XX(GETEX, "getex")                                                                             \
    XX(GETRANGE, "getrange")                                                                       \
    XX(GETSET, "getset")                                                                           \
    XX(HDEL, "hdel")                                                                               \
    XX(HELLO, "hello")                                                                             \
    XX(HEXISTS, "hexists")                                                                         \
    XX(HGET, "hget")                                                                               \
    XX(HGETALL, "hgetall")                                                                         \
    XX(HINCRBY, "hincrby")                                                                         \
    XX(HINCRBYFLOAT, "hincrbyfloat")                                                               \
    XX(HKEYS, "hkeys")                                                                             \
    XX(HLEN, "hlen")                                                                               \
    XX(HMGET, "hmget")                                                                             \
    XX(HMSET, "hmset")                                                                             \
    XX(HRANDFIELD, "hrandfield")                                                                   \
    XX(HSCAN, "hscan")                                                                             \
    XX(HSET, "hset")                                                                               \
    XX(HSETNX, "hsetnx")                                                                           \
    XX(HSTRLEN, "hstrlen")                                                                         \
    XX(HVALS, "hvals")                                                                             \
    XX(INCR, "incr")                                                                               \
    XX(INCRBY, "incrby")                                                                           \
    XX(INCRBYFLOAT, "incrbyfloat")                                                                 \
    XX(INFO, "info")                                                                               \
    XX(KEYS, "keys")                                                                               \
    XX(LASTSAVE, "lastsave")                                                                       \
    XX(LATENCY, "latency")                                                                         \
    XX(LCS, "lcs")                                                                                 \
    XX(LINDEX, "lindex")                                                                           \
    XX(LINSERT, "linsert")                                                                         \
    XX(LLEN, "llen")                                                                               \
    XX(LMOVE, "lmove")                                                                             \
    XX(LMPOP, "lmpop")                                                                             \
    XX(LOLWUT, "lolwut")                                                                           \
    XX(LPOP, "lpop")                                                                               \
    XX(LPOS, "lpos")                                                                               \
    XX(LPUSH, "lpush")                                                                             \
    XX(LPUSHX, "lpushx")                                                                           \
    XX(LRANGE, "lrange")                                                                           \
    XX(LREM, "lrem")                                                                               \
    XX(LSET, "lset")                                                                               \
    XX(LTRIM, "ltrim")                                                                             \
    XX(MEMORY, "memory")                                                                           \
    XX(MGET, "mget")                                                                               \
    XX(MIGRATE, "migrate")                                                                         \
    XX(MODULE, "module")                                                                           \
    XX(MONITOR, "monitor")                                                                         \
    XX(MOVE, "move")                                                                               \
    XX(MSET, "mset")                                                                               \
    XX(MSETNX, "msetnx")                                                                           \
    XX(MULTI, "multi")                                                                             \
    XX(OBJECT, "object")                                                                           \
    XX(PERSIST, "persist")                                                                         \
    XX(PEXPIRE, "pexpire")                                                                         \
    XX(PEXPIREAT, "pexpireat")                                                                     \
    XX(PEXPIRETIME, "pexpiretime")                                                                 \
    XX(PFADD, "pfadd")                                                                             \
    XX(PFCOUNT, "pfcount")                                                                         \
    XX(PFDEBUG, "pfdebug")                                                                         \
    XX(PFMERGE, "pfmerge")                                                                         \
    XX(PFSELFTEST, "pfselftest")                                                                   \
    XX(PING, "ping")                                                                               \
    XX(PSETEX, "psetex")                                                                           \
    XX(PSUBSCRIBE, "psubscribe")                                                                   \
    XX(PSYNC, "psync")                                                                             \
    XX(PTTL, "pttl")                                                                               \
    XX(PUBLISH, "publish")                                                                         \
    XX(PUBSUB, "pubsub")                                                                           \
    XX(PUNSUBSCRIBE, "punsubscribe")                                                               \
    XX(QUIT, "quit")                                                                               \
    XX(RANDOMKEY, "randomkey")                                                                     \
    XX(READONLY, "readonly")                                                                       \
    XX(READWRITE, "readwrite")                                                                     \
    XX(RENAME, "rename")                                                                           \
    XX(RENAMENX, "renamenx")                                                                       \
    XX(REPLCONF, "replconf")                                                                       \
    XX(REPLICAOF, "replicaof")                                                                     \
    XX(RESET, "reset")                                                                             \
    XX(RESTORE, "restore")                                                                         \
    XX(RESTORE_ASKING, "restore-asking")                                                           \
    XX(ROLE, "role")                                                                               \
    XX(RPOP, "rpop")                                                                               \
    XX(RPOPLPUSH, "rpoplpush")                                                                     \
    XX(RPUSH, "rpush")                                                                             \
    XX(RPUSHX, "rpushx")                                                                           \
    XX(SADD, "sadd")                                                                               \
    XX(SAVE, "save")                                                                               \
    XX(SCAN, "scan")                                                                               \
    XX(SCARD, "scard")                                                                             \
    XX(SCRIPT, "script")                                                                           \
    XX(SDIFF, "sdiff")                                                                             \
    XX(SDIFFSTORE, "sdiffstore")                                                                   \
    XX(SELECT, "select")                                                                           \
    XX(SET, "set")                                                                                 \
    XX(SETBIT, "setbit")                                                                           \
    XX(SETEX, "setex")                                                                             \
    XX(SETNX, "setnx")                                                                             \
    XX(SETRANGE, "setrange")                                                                       \
    XX(SHUTDOWN, "shutdown")                                                                       \
    XX(SINTER, "sinter")                                                                           \
    XX(SINTERCARD, "sintercard")                                                                   \
    XX(SINTERSTORE, "sinterstore")                                                                 \
    XX(SISMEMBER, "sismember")                                                                     \
    XX(SLAVEOF, "slaveof")                                                                         \
    XX(SLOWLOG, "slowlog")                                                                         \
    XX(SMEMBERS, "smembers")                                                                       \
    XX(SMISMEMBER, "smismember")                                                                   \
    XX(SMOVE, "smove")                                                                             \
    XX(SORT, "sort")                                                                               \
    XX(SORT_RO, "sort_ro")                                                                         \
    XX(SPOP, "spop")                                                                               \
    XX(SPUBLISH, "spublish")                                                                       \
    XX(SRANDMEMBER, "srandmember")                                                                 \
    XX(SREM, "srem")                                                                               \
    XX(SSCAN, "sscan")                                                                             \
    XX(SSUBSCRIBE, "ssubscribe")                                                                   \
    XX(STRLEN, "strlen")                                                                           \
    XX(SUBSCRIBE, "subscribe")                                                                     \
    XX(SUBSTR, "substr")                                                                           \
    XX(SUNION, "sunion")                                                                           \
    XX(SUNIONSTORE, "sunionstore")                                                                 \
    XX(SUNSUBSCRIBE, "sunsubscribe")                                                               \
    XX(SWAPDB, "swapdb")                                                                           \
    XX(SYNC, "sync")                                                                               \
    XX(TIME, "time")                                                                               \
    XX(TOUCH, "touch")                                                                             \
    XX(TTL, "ttl")                                                                                 \
    XX(TYPE, "type")                                                                               \
    XX(UNLINK, "unlink")                                                                           \
    XX(UNSUBSCRIBE, "unsubscribe")                                                                 \
    XX(UNWATCH, "unwatch")                                                                         \
    XX(WAIT, "wait")                                                                               \
    XX(WATCH, "watch")                                                                             \
    XX(XACK, "xack")                                                                               \
    XX(XADD, "xadd")                                                                               \
    XX(XAUTOCLAIM, "xautoclaim")                                                                   \
    XX(XCLAIM, "xclaim")                                                                           \
    XX(XDEL, "xdel")                                                                               \
    XX(XGROUP, "xgroup")                                                                           \
    XX(XINFO, "xinfo")                                                                             \
    XX(XLEN, "xlen")                                                                               \
    XX(XPENDING, "xpending")                                                                       \
    XX(XRANGE, "xrange")                                                                           \
    XX(XREAD, "xread")                                                                             \
    XX(XREADGROUP, "xreadgroup")                                                                   \
    XX(XREVRANGE, "xrevrange")                                                                     \
    XX(XSETID, "xsetid")                                                                           \
    XX(XTRIM, "xtrim")                                                                             \
    XX(ZADD, "zadd")                                                                               \
    XX(ZCARD, "zcard")                                                                             \
    XX(ZCOUNT, "zcount")                                                                           \
    XX(ZDIFF, "zdiff")                                                                             \
    XX(ZDIFFSTORE, "zdiffstore")                                                                   \
    XX(ZINCRBY, "zincrby")                                                                         \
    XX(ZINTER, "zinter")                                                                           \
    XX(ZINTERCARD, "zintercard")                                                                   \
    XX(ZINTERSTORE, "zinterstore")                                                                 \
    XX(ZLEXCOUNT, "zlexcount")                                                                     \
    XX(ZMPOP, "zmpop")                                                                             \
    XX(ZMSCORE, "zmscore")                                                                         \
    XX(ZPOPMAX, "zpopmax")                                                                         \
    XX(ZPOPMIN, "zpopmin")                                                                         \
    XX(ZRANDMEMBER, "zrandmember")                                                                 \
    XX(ZRANGE, "zrange")                                                                           \
    XX(ZRANGEBYLEX, "zrangebylex")                                                                 \
    XX(ZRANGEBYSCORE, "zrangebyscore")                                                             \
    XX(ZRANGESTORE, "zrangestore")                                                                 \
    XX(ZRANK, "zrank")                                                                             \
    XX(ZREM, "zrem")                                                                               \
    XX(ZREMRANGEBYLEX, "zremrangebylex")                                                           \
    XX(ZREMRANGEBYRANK, "zremrangebyrank")                                                         \
    XX(ZREMRANGEBYSCORE, "zremrangebyscore")                                                       \
    XX(ZREVRANGE, "zrevrange")                                                                     \
    XX(ZREVRANGEBYLEX, "zrevrangebylex")                                                           \
    XX(ZREVRANGEBYSCORE, "zrevrangebyscore")                                                       \
    XX(ZREVRANK, "zrevrank")                                                                       \
    XX(ZSCAN, "zscan")                                                                             \
    XX(ZSCORE, "zscore")                                                                           \
    XX(ZUNION, "zunion")                                                                           \
    XX(ZUNIONSTORE, "zunionstore")

typedef enum wn_rcmd_id {
#define WN_RCMD_ID_ENUM(up, name) WN_RCMD_ID_##up,
    WN_RCMD_MAP(WN_RCMD_ID_ENUM)
#undef WN_RCMD_ID_ENUM
    WN_RCMD_COUNT
} wn_rcmd_id_t;
/* The per-command counter (stats.h) of names redis-server 7 does not have,
 * "unknown" in the stats, after every command's. */
#define WN_RCMD_STAT_UNKNOWN WN_RCMD_COUNT

/* The command called `name` (len bytes, any case), or NULL if redis-server 7
 * has no such command. Binary search over the sorted names. */
const wn_rcmd_t *wn_rcmd_lookup(const char *name, size_t len);
/* NULL when id >= WN_RCMD_COUNT. */
const wn_rcmd_t *wn_rcmd_by_id(uint16_t id);
uint16_t wn_rcmd_count(void);
/* "key", "multi_key", ...; NULL when out of range. */
const char *wn_rcmd_class_name(wn_rcmd_class_t cls);

/* redis-server's generic arity check for a request of argc args (the name
 * counted), made before it asks for AUTH. */
bool wn_rcmd_arity_ok(const wn_rcmd_t *cmd, uint32_t argc);
/* That, plus the whole-pairs check MSET and MSETNX make when they run. */
bool wn_rcmd_argc_ok(const wn_rcmd_t *cmd, uint32_t argc);

/*
 * The keys at fixed positions of a request of argc args (which passed
 * wn_rcmd_argc_ok): argv[*first], argv[*first + *step], ... argv[*last].
 * False when the command has none. With WN_RCMD_F_MOVABLE there may be
 * more: the numkeys_at arg, or keywords.
 */
bool wn_rcmd_key_range(const wn_rcmd_t *cmd, uint32_t argc, uint32_t *first, uint32_t *last,
                       uint32_t *step);

/*
 * The type byte every reply of a request of argc args has, an error aside
 * ('+' ':' '$' '*'; a null is '$' or '*' too), or 0 when it depends on the
 * arguments or the data. cmd->reply, and for a few commands whose options
 * change the type, the type of their plainest form (SET key value: '+';
 * LPOP key without a count: '$'). RESP has no request ids: a proxy that
 * pipelines clients on one connection can tell a reply shifted onto the
 * wrong request only by such a type.
 */
char wn_rcmd_reply_type(const wn_rcmd_t *cmd, uint32_t argc);

/*
 * The arg index of the key a command is routed by: first_key, or, for
 * commands whose keys only follow a numkeys arg (EVAL, ZUNION, ZINTER,
 * ZDIFF, ...), numkeys_at + 1; the caller checks that numkeys >= 1 and that
 * argc reaches it. 0: the command names no key. (twemproxy 0.5.0 routes
 * ZUNION, ZINTER and ZDIFF by arg 1, their numkeys.)
 */
uint32_t wn_rcmd_route_arg(const wn_rcmd_t *cmd);

/* What the proxy answers for an UNSUPPORTED command (walnut's own text):
 * "-ERR unsupported command '<name>': <reason>\r\n". WN_EINVAL for a
 * command of another class. */
#define WN_RESP_UNSUPPORTED_MAX 160
int wn_resp_compose_unsupported(char *dst, size_t cap, const wn_rcmd_t *cmd);

#endif
