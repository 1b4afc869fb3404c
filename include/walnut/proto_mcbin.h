/*
 * proto_mcbin: memcached's binary protocol (request magic 0x80, response
 * magic 0x81, a 24-byte header, then extras, key and value by count), the
 * pure part a proxy needs: framing and checking client packets as memcached
 * 1.6.18 does (naming the error it would send and whether it then closes),
 * framing server packets, the quiet-opcode rules, and composing the packets
 * the proxy writes itself.
 *
 * Pure functions over caller memory: no I/O, no malloc, no logging, no
 * threads; any thread may call them. Offsets are from the packet's first
 * byte. Multi-byte header fields are big-endian on the wire and host order
 * in the structs; the opaque is echoed as the client sent it.
 *
 * How a worker uses it:
 *   1. wn_mcbin_request_parse on the client's bytes: WN_EAGAIN until the
 *      header, extras and key are in (contiguous); then either a packet to
 *      forward (its value, value_len bytes, follows and is passed on by
 *      count, not parsed) or a rejection: send wn_mcbin_compose_error's
 *      packet (unless status is NONE) and skip or close as req.after says.
 *   2. NOOP, VERSION, QUIT(Q) and STAT are the proxy's to answer or handle
 *      (wn_mcbin_compose_header builds their replies); the rest route by key.
 *   3. Forward a quiet opcode as its loud twin (wn_mcbin_opcode_loud, then
 *      wn_mcbin_header_set_opcode on a copy of the header: same opaque), so
 *      every request gets a reply the proxy can count; then drop the replies
 *      wn_mcbin_quiet_drops names, and set the original (quiet) opcode back
 *      into the header of those it relays, as memcached does.
 *   4. wn_mcbin_response_parse frames the server's reply packet by packet,
 *      checking it answers the request (opcode and opaque); STAT replies run
 *      until an empty packet (rsp.done).
 */
#ifndef WALNUT_PROTO_MCBIN_H
#define WALNUT_PROTO_MCBIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WN_MCBIN_HEADER_LEN 24
#define WN_MCBIN_REQ_MAGIC 0x80
#define WN_MCBIN_RES_MAGIC 0x81
/* memcached refuses binary keys over KEY_MAX_LENGTH. */
#define WN_MCBIN_KEY_MAX 250

/* name, code, loud twin ('=' itself), extras length rule, key rule, value
 * rule. Rules: extras: exact length, or -1 for "0 or 4" (FLUSH); key:
 * 1 required, 0 forbidden, -1 optional; value: 1 allowed, 0 forbidden.
 * These are memcached 1.6.18's checks (measured), plus walnut's: a value is
 * forbidden where memcached ignores one and then reads it as the next
 * packet (STAT, TOUCH, GAT). */
#define WN_MCBIN_OP_MAP(XX)                                                                       \
    XX(GET, 0x00, GET, 0, 1, 0)                                                                   \
    XX(SET, 0x01, SET, 8, 1, 1)                                                                   \
    XX(ADD, 0x02, ADD, 8, 1, 1)                                                                   \
    XX(REPLACE, 0x03, REPLACE, 8, 1, 1)                                                           \
    XX(DELETE, 0x04, DELETE, 0, 1, 0)                                                             \
    XX(INCREMENT, 0x05, INCREMENT, 20, 1, 0)                                                      \
    XX(DECREMENT, 0x06, DECREMENT, 20, 1, 0)                                                      \
    XX(QUIT, 0x07, QUIT, 0, 0, 0)                                                                 \
    XX(FLUSH, 0x08, FLUSH, -1, 0, 0)                                                              \
    XX(GETQ, 0x09, GET, 0, 1, 0)                                                                  \
    XX(NOOP, 0x0a, NOOP, 0, 0, 0)                                                                 \
    XX(VERSION, 0x0b, VERSION, 0, 0, 0)                                                           \
    XX(GETK, 0x0c, GETK, 0, 1, 0)                                                                 \
    XX(GETKQ, 0x0d, GETK, 0, 1, 0)                                                                \
    XX(APPEND, 0x0e, APPEND, 0, 1, 1)                                                             \
    XX(PREPEND, 0x0f, PREPEND, 0, 1, 1)                                                           \
    XX(STAT, 0x10, STAT, 0, -1, 0)                                                                \
    XX(SETQ, 0x11, SET, 8, 1, 1)                                                                  \
    XX(ADDQ, 0x12, ADD, 8, 1, 1)                                                                  \
    XX(REPLACEQ, 0x13, REPLACE, 8, 1, 1)                                                          \
    XX(DELETEQ, 0x14, DELETE, 0, 1, 0)                                                            \
    XX(INCREMENTQ, 0x15, INCREMENT, 20, 1, 0)                                                     \
    XX(DECREMENTQ, 0x16, DECREMENT, 20, 1, 0)                                                     \
    XX(QUITQ, 0x17, QUIT, 0, 0, 0)                                                                \
    XX(FLUSHQ, 0x18, FLUSH, -1, 0, 0)                                                             \
    XX(APPENDQ, 0x19, APPEND, 0, 1, 1)                                                            \
    XX(PREPENDQ, 0x1a, PREPEND, 0, 1, 1)                                                          \
    XX(TOUCH, 0x1c, TOUCH, 4, 1, 0)                                                               \
    XX(GAT, 0x1d, GAT, 4, 1, 0)                                                                   \
    XX(GATQ, 0x1e, GAT, 4, 1, 0)                                                                  \
    XX(SASL_LIST_MECHS, 0x20, SASL_LIST_MECHS, 0, 0, 0)                                           \
    XX(SASL_AUTH, 0x21, SASL_AUTH, 0, 1, 1)                                                       \
    XX(SASL_STEP, 0x22, SASL_STEP, 0, 1, 1)                                                       \
    XX(GATK, 0x23, GATK, 4, 1, 0)                                                                 \
    XX(GATKQ, 0x24, GATK, 4, 1, 0)

typedef enum wn_mcbin_op {
#define WN_MCBIN_OP_ENUM(name, code, loud, ext, key, val) WN_MCBIN_OP_##name = code,
    WN_MCBIN_OP_MAP(WN_MCBIN_OP_ENUM)
#undef WN_MCBIN_OP_ENUM
} wn_mcbin_op_t;

/* "GETQ", ...; NULL for an opcode memcached 1.6.18 does not know (it
 * answers those UNKNOWN_COMMAND; VERBOSITY 0x1b is one of them). */
const char *wn_mcbin_op_name(uint8_t op);
bool wn_mcbin_op_known(uint8_t op);
/* GETQ GETKQ GATQ GATKQ SETQ ADDQ REPLACEQ DELETEQ INCREMENTQ DECREMENTQ
 * QUITQ FLUSHQ APPENDQ PREPENDQ. */
bool wn_mcbin_op_is_quiet(uint8_t op);
/* The loud twin of a quiet opcode; any other opcode itself. */
uint8_t wn_mcbin_opcode_loud(uint8_t op);
/* SET ADD REPLACE APPEND PREPEND and their quiet twins: a stored value. */
bool wn_mcbin_op_stores(uint8_t op);

/* Response status codes and memcached's texts for them (the body of its
 * error packets). NONE is walnut's: no packet at all. memcached 1.6.18
 * never sends EINTERNAL or ETMPFAIL (codes of the protocol's later
 * revisions); walnut sends them for what only a proxy meets: a server's
 * reply it cannot map, a server it cannot reach. */
#define WN_MCBIN_STATUS_MAP(XX)                                                                   \
    XX(OK, 0x0000, "")                                                                            \
    XX(KEY_ENOENT, 0x0001, "Not found")                                                           \
    XX(KEY_EEXISTS, 0x0002, "Data exists for key.")                                               \
    XX(E2BIG, 0x0003, "Too large.")                                                               \
    XX(EINVAL, 0x0004, "Invalid arguments")                                                       \
    XX(NOT_STORED, 0x0005, "Not stored.")                                                         \
    XX(DELTA_BADVAL, 0x0006, "Non-numeric server-side value for incr or decr")                    \
    XX(AUTH_ERROR, 0x0020, "Auth failure.")                                                       \
    XX(UNKNOWN_COMMAND, 0x0081, "Unknown command")                                                \
    XX(ENOMEM, 0x0082, "Out of memory")                                                           \
    XX(EINTERNAL, 0x0084, "Internal error")                                                       \
    XX(ETMPFAIL, 0x0086, "Temporary failure")                                                     \
    XX(NONE, 0xffff, "")

typedef enum wn_mcbin_status {
#define WN_MCBIN_STATUS_ENUM(name, code, text) WN_MCBIN_##name = code,
    WN_MCBIN_STATUS_MAP(WN_MCBIN_STATUS_ENUM)
#undef WN_MCBIN_STATUS_ENUM
} wn_mcbin_status_t;

/* memcached's text for a status ("" for OK, NONE and codes it has none for). */
const char *wn_mcbin_status_text(uint16_t status, size_t *len);

/* The 24-byte header, decoded. vbucket_status: the request's vbucket id or
 * the response's status. */
typedef struct wn_mcbin_header {
    uint8_t magic;
    uint8_t opcode;
    uint16_t keylen;
    uint8_t extlen;
    uint8_t datatype;
    uint16_t vbucket_status;
    uint32_t bodylen;
    uint32_t opaque;
    uint64_t cas;
} wn_mcbin_header_t;

void wn_mcbin_header_decode(const uint8_t *p, wn_mcbin_header_t *h);
void wn_mcbin_header_encode(uint8_t *p, const wn_mcbin_header_t *h);
/* Rewrite the opcode byte of an encoded header (a quiet request forwarded
 * loud; a relayed reply given back its quiet opcode). */
static inline void wn_mcbin_header_set_opcode(uint8_t *p, uint8_t op)
{
    p[1] = op;
}

/* ---- requests ---------------------------------------------------------- */

typedef struct wn_mcbin_limits {
    uint32_t max_value; /* largest value: of a storing request (else E2BIG),
                         * of a server's reply packet (else the reply is
                         * refused) */
} wn_mcbin_limits_t;

/* Default: memcached's 1 MiB item. */
#define WN_MCBIN_VALUE_MAX (1024u * 1024u)

/* What to do after a rejected packet. */
typedef enum wn_mcbin_after {
    WN_MCBIN_AFTER_SKIP = 0, /* send the error, drop skip_len bytes, go on */
    WN_MCBIN_AFTER_CLOSE,    /* send the error (if any), then close */
} wn_mcbin_after_t;

typedef struct wn_mcbin_request {
    wn_mcbin_header_t h;
    uint32_t head_len;  /* header + extras + key: what must be contiguous */
    uint32_t value_len; /* bodylen - extlen - keylen: follows the head */
    uint32_t extras_off; /* always 24 */
    uint32_t key_off;    /* 24 + extlen; the key is h.keylen bytes */
    /* When rejected: */
    wn_mcbin_status_t status; /* error to send (NONE: send nothing) */
    wn_mcbin_after_t after;
    uint64_t skip_len;  /* AFTER_SKIP: the whole packet (24 + bodylen) */
} wn_mcbin_request_t;

/*
 * Frame and check one request packet at buf (n bytes available). Decided
 * from the header alone where possible, so a hostile length is refused
 * before its bytes arrive.
 *
 * Returns head_len (> 0): forward it; value_len bytes follow. WN_EAGAIN:
 * call again with more bytes (no state is kept: the header is fixed-size).
 * WN_EPROTO: rejected: req->status, req->after, req->skip_len (req->h is
 * set as far as 24 bytes were there). WN_ETOOBIG: a storing opcode's value
 * over max_value: E2BIG, after SKIP (memcached: "Too large.", swallows).
 *
 * memcached 1.6.18, measured, in its order:
 *   magic not 0x80                  no reply, close
 *   keylen + extlen > bodylen       UNKNOWN_COMMAND, close
 *   keylen > 250                    EINVAL, close
 *   known opcode, wrong shape       EINVAL, close
 *   unknown opcode (VERBOSITY too)  UNKNOWN_COMMAND, skip the packet
 *   SASL_* (no SASL configured)     UNKNOWN_COMMAND, skip the packet
 * walnut's own: datatype != 0 (memcached ignores it): EINVAL, close. The
 * vbucket id is not checked (memcached ignores it too). memcached skips
 * bodylen bytes after the key of an unknown opcode (too many by extlen +
 * keylen, so the next packets are misread); walnut skips exactly the packet.
 */
int wn_mcbin_request_parse(const wn_mcbin_limits_t *lim, const uint8_t *buf, size_t n,
                           wn_mcbin_request_t *req);

/* ---- responses --------------------------------------------------------- */

typedef struct wn_mcbin_response {
    wn_mcbin_header_t h; /* h.vbucket_status is the status */
    uint32_t head_len;   /* header + extras + key */
    uint32_t value_len;  /* follows the head */
    bool done;           /* the reply to the request is complete */
} wn_mcbin_response_t;

/*
 * Frame one response packet at buf answering a request with opcode
 * `req_op` (as sent to the server) and opaque `opaque`. Returns head_len
 * (> 0; value_len bytes follow, to relay by count), WN_EAGAIN, WN_EPROTO
 * (bad magic, datatype, lengths, or not an answer to that request: close
 * the server connection) or WN_ETOOBIG (value over max_value: close). rsp
 * untouched unless > 0. STAT: done on the empty terminator or an error;
 * every other opcode: done on its one packet.
 */
int wn_mcbin_response_parse(const wn_mcbin_limits_t *lim, uint8_t req_op, uint32_t opaque,
                            const uint8_t *buf, size_t n, wn_mcbin_response_t *rsp);

/*
 * Quiet mode (measured on memcached 1.6.18): must a reply with `status` to
 * a request sent as quiet opcode `op` be withheld from the client?
 *   GETQ GETKQ GATQ GATKQ: a miss (KEY_ENOENT) is dropped; hits are sent.
 *   SETQ ADDQ REPLACEQ APPENDQ PREPENDQ DELETEQ INCREMENTQ DECREMENTQ
 *   FLUSHQ: success (OK) is dropped; every error is sent (DELETEQ's and
 *   INCREMENTQ's KEY_ENOENT included).
 *   QUITQ: nothing is sent; memcached closes.   Loud opcodes: nothing dropped.
 */
bool wn_mcbin_quiet_drops(uint8_t op, uint16_t status);

/* ---- composers --------------------------------------------------------- */

/*
 * A response header for the proxy's own packets: magic 0x81, datatype 0,
 * the given opcode, status, lengths (bodylen = extlen + keylen + value_len),
 * opaque and cas. Writes 24 bytes; returns 24, WN_ETOOBIG if cap < 24, or
 * WN_EINVAL if the lengths add up past 32 bits.
 * NOOP: (op, OK, 0, 0, 0); VERSION: the version text after it;
 * STAT: one per entry (key, value), then an empty one.
 */
int wn_mcbin_compose_header(uint8_t *dst, size_t cap, uint8_t op, uint16_t status,
                            uint8_t extlen, uint16_t keylen, uint32_t value_len,
                            uint32_t opaque, uint64_t cas);

/* An error packet as memcached sends it: header (opcode and opaque of the
 * request, cas 0) and the status text as body. Returns its length,
 * WN_ETOOBIG if cap is too small (WN_MCBIN_ERROR_MAX always suffices), or
 * WN_EINVAL for status NONE. */
#define WN_MCBIN_ERROR_MAX (WN_MCBIN_HEADER_LEN + 64)
int wn_mcbin_compose_error(uint8_t *dst, size_t cap, uint8_t op, uint32_t opaque,
                           uint16_t status);

/* ---- translation to the text protocol ---------------------------------- */

/*
 * walnut's server connections are shared by every client of a worker and
 * speak memcached's text protocol, so a binary request travels as the text
 * command with the same semantics on memcached >= 1.6 (the meta commands,
 * which carry CAS, modes and binary keys exactly), and its reply is mapped
 * back to the packet memcached would have sent:
 *
 *   GET GETQ GETK GETKQ       mg <key> v f c
 *   GAT GATQ GATK GATKQ       mg <key> T<exptime> v f c
 *   TOUCH                     mg <key> T<exptime> f c
 *   SET ADD REPLACE (+Q)      ms <key> <len> T<exptime> F<flags> [ME|MR] c
 *                             with a CAS: ms ... C<cas> c (memcached turns
 *                             ADD and REPLACE with a CAS into a CAS set)
 *   APPEND PREPEND (+Q)       ms <key> <len> MA|MP [C<cas>] c
 *   DELETE(Q)                 md <key> [C<cas>]
 *   INCREMENT DECREMENT (+Q)  ma <key> [N<exptime> J<initial>] D<delta> [MD]
 *                             [C<cas>] v c   (no N J when exptime is
 *                             0xffffffff: a miss is then Not found)
 *   FLUSH(Q)                  flush_all [<exptime>]   (to every server)
 *   VERSION                   version   (to one server, as the text version)
 *
 * A key holding a byte the text protocol cannot carry (NUL, LF, space) is
 * sent base64-encoded with the b flag, so it can be at most 186 bytes long
 * (WN_MCBIN_TEXT_B64_KEY_MAX; memcached checks the encoded length against
 * 250). An exptime over 2^31-1 is sent as 2^31-1: memcached reads meta's T
 * as a signed 32-bit number, and as an absolute time either is decades
 * away. Storing requests are followed by their value and "\r\n".
 */
#define WN_MCBIN_TEXT_LINE_MAX 512
#define WN_MCBIN_TEXT_B64_KEY_MAX 186

/* Must the key go base64 (a NUL, LF or space in it)? */
bool wn_mcbin_key_needs_b64(const uint8_t *key, size_t len);

/*
 * The text request line for the packet at pkt, framed by
 * wn_mcbin_request_parse as req (header, extras and key contiguous). Writes
 * the line with its "\r\n" to dst. Returns its length; WN_EINVAL when the
 * opcode is not one that is sent to a server (NOOP, QUIT, STAT, SASL,
 * unknown) or the key cannot be carried (base64 too long);
 * WN_ETOOBIG when cap is too small (WN_MCBIN_TEXT_LINE_MAX always suffices).
 */
int wn_mcbin_text_request(char *dst, size_t cap, const uint8_t *pkt,
                          const wn_mcbin_request_t *req);

/* "md <key>[ b]\r\n": a SET (SETQ) refused as too large also unlinks the
 * key's old value, as memcached does (it keeps it for ADD, REPLACE, APPEND
 * and PREPEND). Returns as wn_mcbin_text_request. */
int wn_mcbin_text_unlink(char *dst, size_t cap, const uint8_t *key, size_t keylen);

/* What a server's text reply line means for a binary client. */
typedef struct wn_mcbin_text_reply {
    uint16_t status;    /* what memcached's binary protocol answers */
    bool has_flags;     /* an f flag came back: the item's client flags */
    uint32_t flags;
    uint64_t cas;       /* the c flag, else 0 */
    bool value;         /* VA: a data block of value_len bytes and "\r\n"
                         * follows the line */
    uint32_t value_len;
    uint32_t text_off;  /* VERSION: the version, text_len bytes at this */
    uint32_t text_len;  /* offset of the line (the packet's value) */
} wn_mcbin_text_reply_t;

/*
 * Map a reply line (content without its line end) to the status, flags and
 * CAS memcached sends the binary request `op` (quiet or not), as
 * wn_mcbin_text_request sent it:
 *   mg: VA / HD -> OK, EN -> KEY_ENOENT
 *   ms: HD -> OK, EX -> KEY_EEXISTS, NF -> KEY_ENOENT, NS -> KEY_EEXISTS for
 *       ADD, KEY_ENOENT for REPLACE, NOT_STORED for the rest
 *   md: HD -> OK, NF -> KEY_ENOENT, EX -> KEY_EEXISTS
 *   ma: VA -> OK (the value is the number), NF -> KEY_ENOENT,
 *       NS -> NOT_STORED, EX -> KEY_EEXISTS
 *   flush_all: OK -> OK      version: VERSION <text> -> OK, text the value
 *   CLIENT_ERROR cannot increment or decrement non-numeric value ->
 *   DELTA_BADVAL; SERVER_ERROR object too large for cache -> E2BIG;
 *   SERVER_ERROR out of memory... -> ENOMEM; any other error line ->
 *   EINTERNAL (its text is the packet's body).
 * Returns 0, or WN_EPROTO when the line is no answer to that command.
 */
int wn_mcbin_text_reply(uint8_t op, const char *line, size_t len, wn_mcbin_text_reply_t *rep);

/* An incr/decr result as memcached writes it (1 to 20 digits). */
bool wn_mcbin_text_number(const char *s, size_t len, uint64_t *out);

/*
 * The binary STAT reply for a text `stats` reply: one packet per
 * "STAT <name> <value>" line (key name, value the rest of the line), then
 * the empty packet; opcode STAT, the given opaque. With dst NULL (cap 0)
 * only measures. Returns the length, WN_EPROTO for a line that is neither
 * STAT nor END, or WN_ETOOBIG if cap is too small.
 */
int wn_mcbin_stats_compose(uint8_t *dst, size_t cap, uint32_t opaque, const char *text,
                           size_t len);

/*
 * The binary reply to STAT with a group (the key): what memcached 1.6.18's
 * binary protocol answers when it holds nothing (measured), carrying the
 * same content as walnut's text `stats <group>` (wn_mc_stats_args_reply):
 * its STAT lines as packets, then the empty packet where the text has END
 * (sizes_enable and sizes_disable have neither); reset and detail on|off:
 * the empty packet; detail dump: ("detailed", "END\r\n") and the empty
 * packet. The key names a group as memcached's binary STAT reads it: reset,
 * settings and detail (dump, on, off) by their first bytes, the others by
 * the key's exact bytes. Groups memcached's binary protocol does not know
 * (conns, extstore, cachedump, detail <else>, unknown keys, "slabs "):
 * returns 0, answer KEY_ENOENT. Otherwise the length, or WN_ETOOBIG (dst
 * NULL: measure).
 */
int wn_mcbin_stats_group(uint8_t *dst, size_t cap, uint32_t opaque, const char *key, size_t len);

#endif
