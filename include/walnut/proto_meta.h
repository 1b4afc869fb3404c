/*
 * proto_meta: memcached's meta protocol (mg ms md ma mn me), the pure part a
 * proxy needs: framing and validating request lines exactly as memcached
 * 1.6.18 does, the decoded key for routing, the request line rewritten
 * without its quiet flag, the rule saying which replies a quiet request must
 * not see, and framing of reply lines. Meta lines share the connection and
 * line framing of the classic ASCII protocol (walnut/proto.h).
 *
 * Pure functions over caller memory: no I/O, no malloc, no logging, no
 * threads; any thread may call them on its own state. Every span is an
 * offset from the start of the line given to the parser.
 *
 * How a worker uses it (a pool speaking memcached, classic and meta mixed):
 *   1. wn_mc_request_parse frames the line. When it reports cmd WN_MC_META
 *      (whatever it returned, except WN_EAGAIN and a line too long), call
 *      wn_meta_line_parse on the same line_len bytes and use its verdict
 *      instead: it applies all of memcached's meta checks, which the classic
 *      parser does not. (A meta-only stream may use wn_meta_request_parse,
 *      which frames and parses in one call.)
 *   2. Route by the key: if req.base64, hash the bytes wn_meta_key_decode
 *      writes (memcached stores the decoded key), else the key span.
 *   3. Forward: wn_meta_compose_tagged's line (a tag of the proxy's in
 *      place of the client's O, q dropped), or, untagged, if req.quiet,
 *      wn_meta_compose_without_quiet's line instead of the client's (then,
 *      for ms, the data block unchanged), and remember that the request was
 *      quiet.
 *   4. Frame the server's reply with wn_meta_response_parse; check it with
 *      wn_meta_reply_allowed and, tagged, that it echoes the tag
 *      (wn_meta_rsp_echoes_opaque); for a quiet request drop it when
 *      wn_meta_quiet_drops says so, else relay its bytes, the client's O in
 *      place of the tag.
 */
#ifndef WALNUT_PROTO_META_H
#define WALNUT_PROTO_META_H

#include "walnut/proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits (memcached 1.6.18's, measured) ---------------------------- */

/* memcached refuses a line of more than 19 tokens (MFLAG_MAX_OPT_LENGTH is
 * 20 counting its terminal token): mg/md/ma take 17 flags, ms 16. */
#define WN_META_TOKENS_MAX 19
#define WN_META_FLAGS_MAX 17
/* An O (opaque) token may be 32 bytes long, its 'O' included. */
#define WN_META_OPAQUE_MAX 32
/* A base64 key is at most WN_MC_KEY_MAX bytes as sent (memcached checks the
 * encoded length); decoded it is at most this long. */
#define WN_META_KEY_DECODED_MAX ((WN_MC_KEY_MAX / 4) * 3)

/* ---- commands ---------------------------------------------------------- */

#define WN_META_CMD_MAP(XX)                                                                       \
    XX(MG, "mg")                                                                                  \
    XX(MS, "ms")                                                                                  \
    XX(MD, "md")                                                                                  \
    XX(MA, "ma")                                                                                  \
    XX(MN, "mn")                                                                                  \
    XX(ME, "me")

typedef enum wn_meta_cmd {
    WN_META_NONE = 0, /* not a meta command (or "mx": an unknown one) */
#define WN_META_CMD_ENUM(up, name) WN_META_##up,
    WN_META_CMD_MAP(WN_META_CMD_ENUM)
#undef WN_META_CMD_ENUM
        WN_META_CMD_COUNT
} wn_meta_cmd_t;

/* "mg", ...; "none" for WN_META_NONE; NULL out of range. */
const char *wn_meta_cmd_name(wn_meta_cmd_t cmd);

/* ---- local replies ----------------------------------------------------- */

/*
 * The line the proxy answers a rejected meta request with: memcached
 * 1.6.18's texts, measured with raw sockets (see test/unit/test_proto_meta.c).
 * memcached always sends these, even to a request with q. LINE_TOO_LONG is
 * walnut's own (the classic parser's).
 */
#define WN_META_ERR_MAP(XX)                                                                       \
    XX(NONE, "")                                                                                  \
    XX(ERROR, "ERROR")                                                                            \
    XX(BAD_FORMAT, "CLIENT_ERROR bad command line format")                                        \
    XX(MG_TOO_MANY, "CLIENT_ERROR options flags are too long")                                    \
    XX(TOO_MANY, "CLIENT_ERROR options flags too long")                                           \
    XX(DUPLICATE, "CLIENT_ERROR duplicate flag")                                                  \
    XX(INVALID_FLAG, "CLIENT_ERROR invalid flag")                                                 \
    XX(INVALID_OR_DUP, "CLIENT_ERROR invalid or duplicate flag")                                  \
    XX(DECODE_KEY, "CLIENT_ERROR error decoding key")                                             \
    XX(BAD_TOKEN, "CLIENT_ERROR bad token in command line format")                                \
    XX(M_LENGTH, "CLIENT_ERROR incorrect length for M token")                                     \
    XX(BAD_INITIAL, "CLIENT_ERROR invalid numeric initial value")                                 \
    XX(BAD_DELTA, "CLIENT_ERROR invalid numeric delta value")                                     \
    XX(OPAQUE_TOO_LONG, "CLIENT_ERROR opaque token too long")                                     \
    XX(MS_MODE, "CLIENT_ERROR invalid mode for ms M token")                                       \
    XX(MA_MODE, "CLIENT_ERROR invalid mode for ma M token")                                       \
    XX(TOO_LARGE, "SERVER_ERROR object too large for cache")                                      \
    XX(BAD_CHUNK, "CLIENT_ERROR bad data chunk")                                                  \
    XX(LINE_TOO_LONG, "CLIENT_ERROR line too long")

typedef enum wn_meta_err {
#define WN_META_ERR_ENUM(up, text) WN_META_ERR_##up,
    WN_META_ERR_MAP(WN_META_ERR_ENUM)
#undef WN_META_ERR_ENUM
        WN_META_ERR_COUNT
} wn_meta_err_t;

/* The reply line with its "\r\n" ("" for NONE); *len set if len is not
 * NULL. Static storage, never NULL. */
const char *wn_meta_err_text(wn_meta_err_t err, size_t *len);

/* ---- request parser ---------------------------------------------------- */

/* One flag token: its span (the flag letter first, then its argument). */
typedef struct wn_meta_flag {
    uint32_t off;
    uint32_t len;
} wn_meta_flag_t;

typedef struct wn_meta_request {
    wn_meta_cmd_t cmd;
    uint32_t line_len;   /* bytes of the line including "\n" */
    uint32_t data_len;   /* ms: bytes + 2 follow the line (also when rejected
                          * with after SWALLOW); else 0 */
    uint32_t bytes;      /* ms: the value length */
    wn_mc_span_t key;    /* the key as sent (base64 text when base64); mn: none */
    uint32_t key_decoded_len; /* base64: the decoded key's length; else key.len */
    bool base64;         /* b: the key is base64 (me: a second token "b") */
    bool quiet;          /* q on mg ms md ma (me and mn ignore it) */
    bool want_key;       /* k: the reply carries the key */
    char mode;           /* ms, ma: the M token's letter; else 0 */
    wn_mc_span_t opaque; /* the O token, 'O' included (len 0: none) */
    /* mg, ma: the O token is over memcached's 32 bytes. memcached runs them
     * all the same and answers CLIENT_ERROR opaque token too long (unless
     * its own error comes first): forward them as they are (md, ms: refused
     * here, as memcached refuses them unrun). */
    bool opaque_too_long;
    wn_mc_span_t quiet_flag; /* the q token (len 0: none) */
    uint32_t nflags;     /* flag tokens (ms: after the length); me, mn: 0 */
    wn_meta_flag_t flags[WN_META_FLAGS_MAX];
    /* When wn_meta_*_parse returned a negative code: */
    wn_meta_err_t err;     /* what to answer (always sent, quiet or not) */
    wn_mc_after_t after;   /* what to do with the connection next */
} wn_meta_request_t;

/*
 * Parse one complete meta request line: `line` holds line_len bytes ending
 * in "\n" (a "\r" before it and anything after a NUL byte are not part of
 * the content, as in memcached). `lim` NULL: the classic defaults.
 *
 * Returns line_len (> 0): forward the request (ms: req->data_len bytes of
 * data block follow, not parsed; check their trailer with
 * wn_mc_data_trailer_ok and answer BAD_CHUNK when it is wrong, as memcached
 * does: it then consumes exactly bytes + 2 and goes on).
 * WN_EPROTO: rejected; answer req->err and go on as req->after says.
 * WN_ETOOBIG: ms with bytes over lim->max_value: answer TOO_LARGE, swallow.
 * WN_EINVAL: not a meta command at all (cmd WN_META_NONE, err NONE,
 * line_len set): the classic parser's. wn_mc_request_parse reports
 * WN_MC_META exactly for the lines this parser gives a cmd other than NONE.
 *
 * Checks, in memcached's order: command word (mx: ERROR); key present (else
 * ERROR; me: BAD_FORMAT); key <= 250 bytes as sent; ms: a length token;
 * token count; ms: the length; every flag (duplicates by first byte, bytes
 * >= 0x7f count as duplicates, unknown letters, numeric arguments, base64
 * key; the last failing flag's message wins, as in memcached; md and ma
 * answer INVALID_OR_DUP for any of these); M modes; O longer than 32; then
 * ms's size. memcached reads no flags of me except an exact "b" second, and
 * none of mn.
 *
 * Unlike memcached 1.6.18, a rejected ms whose length token reads as a
 * length always has its data block swallowed (after SWALLOW, data_len set):
 * memcached runs the data as commands after some early errors (key too
 * long, too many tokens), which lets a value smuggle commands.
 */
int wn_meta_line_parse(const wn_mc_limits_t *lim, const char *line, uint32_t line_len,
                       wn_meta_request_t *req);

/* Incremental framing plus wn_meta_line_parse, with the classic parser's
 * state and results (WN_EAGAIN: call again with the same buf and more
 * bytes; WN_ETOOBIG with after CLOSE and err LINE_TOO_LONG: the line
 * exceeds max_line). */
int wn_meta_request_parse(wn_mc_req_parser_t *p, const char *buf, size_t n,
                          wn_meta_request_t *req);

/*
 * Decode a base64 key as memcached 1.6.18 does (so two spellings memcached
 * takes for the same key route alike): bytes outside the alphabet are
 * skipped; the rest must count a non-zero multiple of 4; decoding stops
 * after the first group holding '=' (one or two '=' drop one or two bytes;
 * more is invalid). Writes into dst (cap bytes; NULL with cap 0 only
 * measures). Returns the decoded length (>= 1), WN_EPROTO if invalid, or
 * WN_ETOOBIG if cap is too small (dst untouched then).
 */
int wn_meta_base64_decode(const char *src, size_t len, uint8_t *dst, size_t cap);

/* The key to route by: decoded when req->base64, else copied. Returns its
 * length or a negative error as above; WN_META_KEY_DECODED_MAX (or
 * WN_MC_KEY_MAX unencoded) always suffices. */
int wn_meta_key_decode(const char *line, const wn_meta_request_t *req, uint8_t *dst, size_t cap);

/*
 * The request line without its q token (and the one space before it), every
 * other byte unchanged, line end included. A proxy must not send q to a
 * server: it could not tell when a reply is due. Returns the length written
 * (req->line_len - 1 - quiet_flag.len; one more when q is the last token of
 * a line ending in a bare LF right after a token ending in CR, whose CR must
 * stay content), WN_EINVAL if the request has no q, WN_ETOOBIG if cap is too
 * small (req->line_len always suffices).
 */
int wn_meta_compose_without_quiet(char *dst, size_t cap, const char *line,
                                  const wn_meta_request_t *req);

/*
 * The request line rebuilt from what memcached reads in it, without q: the
 * command, the key as sent, ms's length, then each flag as memcached takes
 * it (N T R F C J D with their number in decimal, O and M as sent, every
 * other flag its letter alone: memcached ignores the rest of those tokens),
 * single spaces, "\r\n". An O over WN_META_OPAQUE_MAX bytes (mg, ma) is cut
 * to WN_META_CANONICAL_OPAQUE: memcached refuses it as it refuses a longer
 * one, and the line stays short. For a line memcached could not take as sent
 * (over 2 KiB). req must be a request wn_meta_line_parse accepted. Returns
 * the length written, WN_ETOOBIG if cap is too small (WN_META_CANONICAL_MAX
 * always suffices), WN_EINVAL for mn or no command.
 */
#define WN_META_CANONICAL_MAX 1024
#define WN_META_CANONICAL_OPAQUE (WN_META_OPAQUE_MAX + 1)
int wn_meta_compose_canonical(char *dst, size_t cap, const char *line,
                              const wn_meta_request_t *req);

/*
 * The request line for a server, tagged so that its reply can be told from
 * another's: the command, the key as sent, ms's length in decimal, each flag
 * (as sent; `canonical`: as wn_meta_compose_canonical writes it) in order but
 * q unless keep_quiet, the O token replaced by `tag` (an O token of at most
 * WN_META_OPAQUE_MAX bytes, 'O' included), or `tag` last when there was
 * none, single spaces, "\r\n". memcached echoes O in every reply but errors
 * (wn_meta_rsp_echoes_opaque). For mg ms md ma that wn_meta_line_parse
 * accepted. Returns the length written; WN_ETOOBIG if cap is too small;
 * WN_EFULL if the added token would pass memcached's token limit
 * (wn_meta_tag_fits); WN_EINVAL for another command or a bad tag.
 */
/* Room for a tag in req's line as wn_meta_compose_tagged writes it: the
 * line has an O token to replace, or one more token stays within
 * memcached's limit. */
bool wn_meta_tag_fits(const wn_meta_request_t *req, bool keep_quiet);
int wn_meta_compose_tagged(char *dst, size_t cap, const char *line, const wn_meta_request_t *req,
                           bool keep_quiet, bool canonical, const char *tag, size_t taglen);

/* ---- replies ----------------------------------------------------------- */

#define WN_META_RSP_MAP(XX)                                                                       \
    XX(HD)                                                                                        \
    XX(VA)                                                                                        \
    XX(EN)                                                                                        \
    XX(NF)                                                                                        \
    XX(NS)                                                                                        \
    XX(EX)                                                                                        \
    XX(MN)                                                                                        \
    XX(ME)                                                                                        \
    XX(ERROR)                                                                                     \
    XX(CLIENT_ERROR)                                                                              \
    XX(SERVER_ERROR)

typedef enum wn_meta_rsp_type {
#define WN_META_RSP_ENUM(up) WN_META_RSP_##up,
    WN_META_RSP_MAP(WN_META_RSP_ENUM)
#undef WN_META_RSP_ENUM
        WN_META_RSP_COUNT
} wn_meta_rsp_type_t;

const char *wn_meta_rsp_type_name(wn_meta_rsp_type_t type);

typedef struct wn_meta_response {
    wn_meta_rsp_type_t type;
    uint32_t line_len;  /* bytes of the line including "\n" */
    uint32_t data_len;  /* VA: bytes + 2 follow the line; else 0 */
    uint32_t bytes;     /* VA: the value length */
    wn_mc_span_t flags; /* the returned flags: the rest of the line after the
                         * code (and VA's length); errors: the message */
    wn_mc_span_t key;   /* the k flag's key without its 'k' (ME: its key) */
    wn_mc_span_t opaque; /* the O flag, 'O' included */
    bool base64;        /* a b flag: the returned key is base64 */
} wn_meta_response_t;

/*
 * Frame one reply line from a server at buf (n bytes, contiguous from
 * buf[0]); `p` is the classic reply parser's state (its phase is unused).
 * Returns the line length (> 0); the caller skips rsp->data_len bytes after
 * a VA line itself and checks their trailer. WN_EAGAIN: more bytes needed.
 * WN_EPROTO: not a meta reply (close the server connection). WN_ETOOBIG:
 * over max_line, or VA over max_value (close). rsp untouched unless > 0.
 * Strict: exact two-letter codes, a decimal VA length.
 */
int wn_meta_response_parse(wn_mc_rsp_parser_t *p, const char *buf, size_t n,
                           wn_meta_response_t *rsp);

/* Can `type` answer `cmd`? mg: HD VA EN; ms: HD NS EX NF; md: HD NF EX;
 * ma: HD VA NF NS EX; mn: MN; me: ME EN; and ERROR, CLIENT_ERROR,
 * SERVER_ERROR answer any. A reply that cannot is a protocol error. */
bool wn_meta_reply_allowed(wn_meta_cmd_t cmd, wn_meta_rsp_type_t type);

/* Does memcached (1.6.18, measured) echo the request's O token in a reply of
 * this type? HD VA EN NF NS EX: yes; MN, ME and the error lines: no. */
bool wn_meta_rsp_echoes_opaque(wn_meta_rsp_type_t type);

/*
 * Quiet mode (measured on memcached 1.6.18, raw sockets): must a reply of
 * `type` to `cmd` be withheld from a client whose request had q?
 *   mg: EN dropped; HD and VA (hits) are sent.
 *   ms: HD dropped; NS EX NF sent.   md: HD dropped; NF EX sent.
 *   ma: HD and VA dropped; NF NS EX sent.   me, mn: nothing dropped.
 *   Errors are never dropped.
 * One case cannot be told apart from the reply: memcached 1.6.18 sends the
 * HD/VA of an ma with N that created the item on a miss, but drops them
 * when the item existed; walnut drops both (what protocol.txt documents).
 */
bool wn_meta_quiet_drops(wn_meta_cmd_t cmd, wn_meta_rsp_type_t type);

#endif
