/*
 * test_proto_mc.c: the memcached ASCII request and response parsers and the
 * composers. Golden tables (requests: parsed fields or the local reply, with
 * memcached 1.6.18's measured answer beside every rejected line; replies:
 * a trace of framed lines), the same inputs fed split at every point and
 * byte by byte from exactly-sized heap copies (so ASan catches any
 * over-read), per-command reply validity, and the head composer.
 */
#include "walnut/proto.h"

#include "walnut/core.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- helpers ----------------------------------------------------------- */

/* A heap copy of exactly n bytes (at least one allocated, none readable
 * past n under ASan). */
static char *exact_copy(const char *s, size_t n)
{
    char *b = malloc(n == 0 ? 1 : n);
    assert_non_null(b);
    if (n > 0)
        memcpy(b, s, n);
    return b;
}

static size_t line_end(const char *s, size_t n)
{
    const char *nl = memchr(s, '\n', n);
    return nl == NULL ? 0 : (size_t)(nl - s) + 1;
}

/* Keys joined by single spaces, as the golden table writes them. */
static void join_keys(const char *line, const wn_mc_request_t *r, char *out, size_t cap)
{
    uint32_t cursor = 0;
    wn_mc_span_t k;
    size_t o = 0;
    unsigned count = 0;
    out[0] = '\0';
    while (wn_mc_key_next(line, r, &cursor, &k)) {
        assert_true(o + k.len + 2 < cap);
        if (o > 0)
            out[o++] = ' ';
        memcpy(out + o, line + k.off, k.len);
        o += k.len;
        out[o] = '\0';
        count++;
    }
    assert_int_equal(count, r->nkeys);
}

static bool req_same(const wn_mc_request_t *a, const wn_mc_request_t *b)
{
    return a->cmd == b->cmd && a->meta == b->meta && a->noreply == b->noreply &&
           a->line_len == b->line_len && a->data_len == b->data_len && a->bytes == b->bytes &&
           a->flags == b->flags && a->exptime == b->exptime && a->cas == b->cas &&
           a->delta == b->delta && a->nkeys == b->nkeys && a->key.off == b->key.off &&
           a->key.len == b->key.len && a->keys.off == b->keys.off && a->keys.len == b->keys.len &&
           a->arg.off == b->arg.off && a->arg.len == b->arg.len && a->reply == b->reply &&
           a->after == b->after;
}

/* ---- request golden table ---------------------------------------------- */

typedef struct req_case {
    const char *in;
    size_t len;
    int rc; /* 0: forwarded (parse returns the line length) */
    wn_mc_cmd_t cmd;
    const char *keys; /* forwarded: the keys joined by spaces (NULL: none) */
    bool noreply;
    wn_mc_reply_t reply; /* rejected: the local answer */
    wn_mc_after_t after;
    uint32_t data;  /* rejected with SWALLOW: bytes to drop after the line */
    uint32_t bytes; /* forwarded storage / ms: the value length */
    uint32_t flags;
    int32_t exptime;
    uint64_t cas;
    uint64_t delta;
    const char *arg;
    char meta;
    /* What memcached 1.6.18 sent back for `in` (measured with raw sockets on
     * a fresh connection, before a trailing "version\r\n"): for rejected
     * lines this is the reply the proxy must give, followed by memcached's
     * answers to whatever the rest of `in` then looked like. "" means
     * silence; NULL means not recorded (the backend answers it). */
    const char *mc;
} req_case_t;

#define IN(s) .in = (s), .len = sizeof(s) - 1
#define FWD(c) .rc = 0, .cmd = WN_MC_##c
#define REJ(c, r) .rc = WN_EPROTO, .cmd = WN_MC_##c, .reply = WN_MC_REPLY_##r
#define BIG(c)                                                                                     \
    .rc = WN_ETOOBIG, .cmd = WN_MC_##c, .reply = WN_MC_REPLY_TOO_LARGE, .after = WN_MC_AFTER_SWALLOW
#define AGAIN .rc = WN_EAGAIN
/* A rejected storage line whose length still reads as one: walnut swallows
 * the announced data block. memcached 1.6.18 runs those bytes as commands
 * instead (the .mc column shows it: the second reply answers the block), so
 * a client's value could smuggle a command; walnut deliberately differs. */
#define SWL(n) .after = WN_MC_AFTER_SWALLOW, .data = (n)

#define A10 "aaaaaaaaaa"
#define A50 A10 A10 A10 A10 A10
#define A250 A50 A50 A50 A50 A50
#define A251 A250 "a"

#define E_ERROR "ERROR\r\n"
#define E_FORMAT "CLIENT_ERROR bad command line format\r\n"
#define E_EXPTIME "CLIENT_ERROR invalid exptime argument\r\n"
#define E_DELTA "CLIENT_ERROR invalid numeric delta argument\r\n"
#define E_DELETE "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
#define E_LARGE "SERVER_ERROR object too large for cache\r\n"

/* clang-format off */
static const req_case_t req_cases[] = {
    /* empty, blank, junk: memcached wants a word of two bytes or more */
    {IN("\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("   \r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN(" \n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("x\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("\r\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("\0\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("\xff\xfe\x01\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("bogus\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("GET a\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("gxx a\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("verbosity\tnoreply\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("mx k\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("m\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    /* memcached 1.6.18 answers "ERROR: shutdown not enabled"; the proxy
     * never forwards admin commands and says plain ERROR. */
    {IN("shutdown\r\n"), REJ(UNKNOWN, ERROR)},
    /* HTTP: memcached closes without a word */
    {IN("GET / HTTP/1.1\r\n"), REJ(UNKNOWN, NONE), .after = WN_MC_AFTER_CLOSE, .mc = ""},
    {IN("bogus HTTP/1.0\r\n"), REJ(UNKNOWN, NONE), .after = WN_MC_AFTER_CLOSE, .mc = ""},
    {IN("get a HTTP/1.1\r\n"), FWD(GET), .keys = "a HTTP/1.1", .mc = "END\r\n"},

    /* incomplete lines */
    {IN(""), AGAIN},
    {IN("get a"), AGAIN},
    {IN("set k 0 0 1\r"), AGAIN},

    /* get, gets */
    {IN("get\r\n"), REJ(GET, ERROR), .mc = E_ERROR},
    {IN("get \r\n"), REJ(GET, ERROR), .mc = E_ERROR},
    {IN("gets\r\n"), REJ(GETS, ERROR), .mc = E_ERROR},
    {IN("get\tk\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("get a\r\n"), FWD(GET), .keys = "a", .mc = "END\r\n"},
    {IN("get a b c\n"), FWD(GET), .keys = "a b c", .mc = "END\r\n"},
    {IN("get  a   b \r\n"), FWD(GET), .keys = "a b", .mc = "END\r\n"},
    {IN("  get a\r\n"), FWD(GET), .keys = "a", .mc = "END\r\n"},
    {IN("get noreply\r\n"), FWD(GET), .keys = "noreply", .mc = "END\r\n"},
    {IN("gets a b\r\n"), FWD(GETS), .keys = "a b", .mc = "END\r\n"},
    {IN("get a\t b\r\n"), FWD(GET), .keys = "a\t b"},
    {IN("get a b\r\r\n"), FWD(GET), .keys = "a b\r"},
    {IN("get a\rb\r\n"), FWD(GET), .keys = "a\rb", .mc = "END\r\n"},
    {IN("get " A250 "\r\n"), FWD(GET), .keys = A250, .mc = "END\r\n"},
    {IN("get " A251 "\r\n"), REJ(GET, BAD_FORMAT), .mc = E_FORMAT},
    {IN("get x " A251 " y\r\n"), REJ(GET, BAD_FORMAT), .keys = "x", .mc = E_FORMAT},
    {IN("get " A251 " y\r\n"), REJ(GET, BAD_FORMAT), .keys = "", .mc = E_FORMAT},
    /* bget: memcached's undocumented alias of get */
    {IN("bget a b\r\n"), FWD(GET), .keys = "a b", .mc = "END\r\n"},
    {IN("  bget a\r\n"), FWD(GET), .keys = "a", .mc = "END\r\n"},
    {IN("bget\r\n"), REJ(GET, ERROR), .mc = E_ERROR},
    {IN("bget x " A251 "\r\n"), REJ(GET, BAD_FORMAT), .keys = "x", .mc = E_FORMAT},
    {IN("bgets a\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    {IN("BGET a\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},
    /* a NUL ends memcached's view of the line */
    {IN("get a\0b c\r\n"), FWD(GET), .keys = "a", .mc = "END\r\n"},
    {IN("get \0a\r\n"), REJ(GET, ERROR), .mc = E_ERROR},
    {IN("\0get a\r\n"), REJ(UNKNOWN, ERROR), .mc = E_ERROR},

    /* gat, gats: the exptime comes before the keys */
    {IN("gat 10 k\r\n"), FWD(GAT), .keys = "k", .exptime = 10, .arg = "10", .mc = "END\r\n"},
    {IN("gats 10 k j\r\n"), FWD(GATS), .keys = "k j", .exptime = 10, .arg = "10", .mc = "END\r\n"},
    {IN("gat -1 k\r\n"), FWD(GAT), .keys = "k", .exptime = -1, .arg = "-1", .mc = "END\r\n"},
    {IN("gat +10 k\r\n"), FWD(GAT), .keys = "k", .exptime = 10, .arg = "+10", .mc = "END\r\n"},
    {IN("gat 4294967296 k\r\n"), FWD(GAT), .keys = "k", .exptime = 0, .arg = "4294967296", .mc = "END\r\n"},
    {IN("gat 10\r\n"), REJ(GAT, END), .mc = "END\r\n"},
    {IN("gat\r\n"), REJ(GAT, ERROR), .mc = E_ERROR},
    {IN("gat abc k\r\n"), REJ(GAT, BAD_EXPTIME), .mc = E_EXPTIME},
    {IN("gat 10x k\r\n"), REJ(GAT, BAD_EXPTIME), .mc = E_EXPTIME},
    {IN("gat 99999999999999999999 k\r\n"), REJ(GAT, BAD_EXPTIME), .mc = E_EXPTIME},
    {IN("gat 10 " A251 "\r\n"), REJ(GAT, BAD_FORMAT), .keys = "", .mc = E_FORMAT},
    /* memcached touched a and b before it met the long key */
    {IN("gat 10 a  b " A251 " c\r\n"), REJ(GAT, BAD_FORMAT), .keys = "a b", .mc = E_FORMAT},
    {IN("gats 0 a " A251 "\r\n"), REJ(GATS, BAD_FORMAT), .keys = "a", .mc = E_FORMAT},

    /* set and friends: <key> <flags> <exptime> <bytes> [noreply] */
    {IN("set k 0 0 1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .mc = "STORED\r\n"},
    {IN("set k 0 0 1 noreply\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .noreply = true, .mc = ""},
    {IN("set k 0 0 1 junk\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .mc = "STORED\r\n"},
    {IN("set k 0 0 1 \r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .mc = "STORED\r\n"},
    {IN("set k 0 0 1  noreply  \r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .noreply = true, .mc = ""},
    {IN("set k 0 0 1 junk junk\r\na\r\n"), REJ(SET, ERROR), SWL(3), .mc = E_ERROR E_ERROR},
    {IN("set k 0 0\r\n"), REJ(SET, ERROR), .mc = E_ERROR},
    {IN("set k 0 0 1 a b c d e f g h i j k l m n o p q r s t u v w x y z\r\na\r\n"), REJ(SET, ERROR), SWL(3), .mc = E_ERROR E_ERROR},
    {IN("set k 0 0 -1\r\nab\r\n"), REJ(SET, BAD_FORMAT), .mc = E_FORMAT E_ERROR},
    {IN("set k 0 0 -1 noreply\r\nab\r\n"), REJ(SET, BAD_FORMAT), .noreply = true, .mc = E_ERROR},
    {IN("set k 0 0 abc\r\nab\r\n"), REJ(SET, BAD_FORMAT), .mc = E_FORMAT E_ERROR},
    {IN("set k abc 0 1\r\na\r\n"), REJ(SET, BAD_FORMAT), SWL(3), .mc = E_FORMAT E_ERROR},
    {IN("set k abc 0 1 noreply\r\na\r\n"), REJ(SET, BAD_FORMAT), SWL(3), .noreply = true, .mc = E_ERROR},
    /* the last token decides noreply, even when it stands where a number should */
    {IN("set k 0 0 noreply\r\na\r\n"), REJ(SET, BAD_FORMAT), .noreply = true, .mc = E_ERROR},
    {IN("set k 0 abc 1\r\na\r\n"), REJ(SET, BAD_FORMAT), SWL(3), .mc = E_FORMAT E_ERROR},
    {IN("set k -1 0 1\r\na\r\n"), REJ(SET, BAD_FORMAT), SWL(3), .mc = E_FORMAT E_ERROR},
    /* past 2^63 a '-' anywhere in the token refuses it (memcached's strchr) */
    {IN("set k 9223372036854775808\t- 0 1\r\na\r\n"), REJ(SET, BAD_FORMAT), SWL(3), .mc = E_FORMAT E_ERROR},
    {IN("set k 9223372036854775807\t- 0 1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .flags = 4294967295, .mc = "STORED\r\n"},
    {IN("set k 5x 0 1\r\na\r\n"), REJ(SET, BAD_FORMAT), SWL(3), .mc = E_FORMAT E_ERROR},
    {IN("set k 18446744073709551616 0 1\r\na\r\n"), REJ(SET, BAD_FORMAT), SWL(3), .mc = E_FORMAT E_ERROR},
    {IN("set k 0 99999999999999999999 1\r\na\r\n"), REJ(SET, BAD_FORMAT), SWL(3), .mc = E_FORMAT E_ERROR},
    {IN("set " A251 " 0 0 1\r\na\r\n"), REJ(SET, BAD_FORMAT), SWL(3), .mc = E_FORMAT E_ERROR},
    {IN("set " A251 " 0 0 1 noreply\r\na\r\n"), REJ(SET, BAD_FORMAT), SWL(3), .noreply = true, .mc = E_ERROR},
    {IN("set " A250 " 0 0 1\r\na\r\n"), FWD(SET), .keys = A250, .bytes = 1, .mc = "STORED\r\n"},
    /* numbers are read as memcached's strtoul/strtol do, wrapping included */
    {IN("set k 4294967295 0 1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .flags = 4294967295u, .mc = "STORED\r\n"},
    {IN("set k 4294967296 0 1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .flags = 0, .mc = "STORED\r\n"},
    {IN("set k 18446744073709551615 0 1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .flags = 4294967295u, .mc = "STORED\r\n"},
    {IN("set k 9223372036854775808 0 1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .flags = 0, .mc = "STORED\r\n"},
    {IN("set k -0 0 1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .mc = "STORED\r\n"},
    {IN("set k -18446744073709551615 0 1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .flags = 1, .mc = "STORED\r\n"},
    {IN("set k +5 0 1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .flags = 5, .mc = "STORED\r\n"},
    {IN("set k 5\t9 0 1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .flags = 5, .mc = "STORED\r\n"},
    {IN("set k \t5 0 1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .flags = 5, .mc = "STORED\r\n"},
    {IN("set k 0 2147483648 1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .exptime = INT32_MIN, .mc = "STORED\r\n"},
    {IN("set k 0 -2147483649 1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .exptime = INT32_MAX, .mc = "STORED\r\n"},
    {IN("set k 0 0 4294967297\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .mc = "STORED\r\n"},
    {IN("set k 0 0 -4294967295\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .mc = "STORED\r\n"},
    {IN("set k 0 0 +1\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .mc = "STORED\r\n"},
    {IN("set k 0 0 01\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .mc = "STORED\r\n"},
    {IN("set k 0 0 -0\r\n\r\n"), FWD(SET), .keys = "k", .bytes = 0, .mc = "STORED\r\n"},
    {IN("set k 0 0 0\r\n\r\n"), FWD(SET), .keys = "k", .bytes = 0, .mc = "STORED\r\n"},
    {IN("set k 0 0 1\r\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .mc = "STORED\r\n"},
    {IN("set k 0 0 1 \0 junk junk\r\na\r\n"), FWD(SET), .keys = "k", .bytes = 1, .mc = "STORED\r\n"},
    {IN("set k 0 0 2147483646\r\n"), REJ(SET, BAD_FORMAT), .mc = E_FORMAT},
    {IN("set k 0 0 2147483647\r\n"), REJ(SET, BAD_FORMAT), .mc = E_FORMAT},
    {IN("set k 0 0 2147483648\r\n"), REJ(SET, BAD_FORMAT), .mc = E_FORMAT},
    /* over the item size: answered, and the data block swallowed (memcached
     * 1.6.18 waited for and dropped the 1048579 bytes before answering) */
    {IN("set k 0 0 1048577\r\n"), BIG(SET), .data = 1048579, .mc = E_LARGE},
    {IN("set k 0 0 1048577 noreply\r\n"), BIG(SET), .data = 1048579, .noreply = true, .mc = ""},
    {IN("set k 0 0 2147483645\r\n"), BIG(SET), .data = 2147483647},
    {IN("set k 0 0 1048576\r\n"), FWD(SET), .keys = "k", .bytes = 1048576},
    {IN("add k 0 0 1\r\na\r\n"), FWD(ADD), .keys = "k", .bytes = 1},
    {IN("add k 0 0 1 noreply\r\na\r\n"), FWD(ADD), .keys = "k", .bytes = 1, .noreply = true, .mc = ""},
    {IN("replace k 7 100 1\r\na\r\n"), FWD(REPLACE), .keys = "k", .bytes = 1, .flags = 7, .exptime = 100},
    {IN("append k 0 0 1\r\na\r\n"), FWD(APPEND), .keys = "k", .bytes = 1},
    {IN("prepend k 0 0 1\r\na\r\n"), FWD(PREPEND), .keys = "k", .bytes = 1},
    {IN("prepend k 0 0\r\n"), REJ(PREPEND, ERROR), .mc = E_ERROR},

    /* cas: <key> <flags> <exptime> <bytes> <cas unique> [noreply] */
    {IN("cas k 0 0 1 5\r\na\r\n"), FWD(CAS), .keys = "k", .bytes = 1, .cas = 5, .mc = "NOT_FOUND\r\n"},
    {IN("cas k 0 0 1 1 noreply\r\na\r\n"), FWD(CAS), .keys = "k", .bytes = 1, .cas = 1, .noreply = true, .mc = ""},
    {IN("cas k 0 0 1 1 junk\r\na\r\n"), FWD(CAS), .keys = "k", .bytes = 1, .cas = 1},
    {IN("cas k 0 0 1 18446744073709551615\r\na\r\n"), FWD(CAS), .keys = "k", .bytes = 1, .cas = UINT64_MAX},
    {IN("cas k 0 0 1\r\na\r\n"), REJ(CAS, ERROR), SWL(3), .mc = E_ERROR E_ERROR},
    {IN("cas k 0 0 1 abc\r\na\r\n"), REJ(CAS, BAD_FORMAT), SWL(3), .mc = E_FORMAT E_ERROR},
    {IN("cas k 0 0 1 -1\r\na\r\n"), REJ(CAS, BAD_FORMAT), SWL(3), .mc = E_FORMAT E_ERROR},
    {IN("cas k 0 0 1 noreply\r\na\r\n"), REJ(CAS, BAD_FORMAT), SWL(3), .noreply = true, .mc = E_ERROR},
    {IN("cas k 0 0 1 18446744073709551616\r\na\r\n"), REJ(CAS, BAD_FORMAT), SWL(3), .mc = E_FORMAT E_ERROR},

    /* incr, decr: <key> <delta> [noreply] */
    {IN("incr k 1\r\n"), FWD(INCR), .keys = "k", .delta = 1, .mc = "NOT_FOUND\r\n"},
    {IN("incr k 1 junk\r\n"), FWD(INCR), .keys = "k", .delta = 1, .mc = "NOT_FOUND\r\n"},
    {IN("incr k +1\r\n"), FWD(INCR), .keys = "k", .delta = 1, .mc = "NOT_FOUND\r\n"},
    {IN("incr k 5\tx\r\n"), FWD(INCR), .keys = "k", .delta = 5, .mc = "NOT_FOUND\r\n"},
    {IN("incr k  2 \r\n"), FWD(INCR), .keys = "k", .delta = 2, .mc = "NOT_FOUND\r\n"},
    {IN("incr k -0\r\n"), FWD(INCR), .keys = "k", .delta = 0, .mc = "NOT_FOUND\r\n"},
    {IN("incr k 18446744073709551615\r\n"), FWD(INCR), .keys = "k", .delta = UINT64_MAX, .mc = "NOT_FOUND\r\n"},
    {IN("decr k 1 noreply\r\n"), FWD(DECR), .keys = "k", .delta = 1, .noreply = true, .mc = ""},
    {IN("incr k\r\n"), REJ(INCR, ERROR), .mc = E_ERROR},
    {IN("decr\r\n"), REJ(DECR, ERROR), .mc = E_ERROR},
    {IN("incr k\t1\r\n"), REJ(INCR, ERROR), .mc = E_ERROR},
    {IN("incr k 1 junk junk\r\n"), REJ(INCR, ERROR), .mc = E_ERROR},
    {IN("incr k abc\r\n"), REJ(INCR, BAD_DELTA), .mc = E_DELTA},
    {IN("incr k -1\r\n"), REJ(INCR, BAD_DELTA), .mc = E_DELTA},
    {IN("incr k 18446744073709551616\r\n"), REJ(INCR, BAD_DELTA), .mc = E_DELTA},
    {IN("incr k abc noreply\r\n"), REJ(INCR, BAD_DELTA), .noreply = true, .mc = ""},
    {IN("incr k noreply\r\n"), REJ(INCR, BAD_DELTA), .noreply = true, .mc = ""},
    {IN("incr " A251 " 1\r\n"), REJ(INCR, BAD_FORMAT), .mc = E_FORMAT},
    {IN("incr " A251 " 1 noreply\r\n"), REJ(INCR, BAD_FORMAT), .noreply = true, .mc = ""},

    /* touch <key> <exptime> [noreply] */
    {IN("touch k 10\r\n"), FWD(TOUCH), .keys = "k", .exptime = 10, .mc = "NOT_FOUND\r\n"},
    {IN("touch k 10 junk\r\n"), FWD(TOUCH), .keys = "k", .exptime = 10, .mc = "NOT_FOUND\r\n"},
    {IN("touch k 10 noreply\r\n"), FWD(TOUCH), .keys = "k", .exptime = 10, .noreply = true, .mc = ""},
    {IN("touch k -5\r\n"), FWD(TOUCH), .keys = "k", .exptime = -5, .mc = "NOT_FOUND\r\n"},
    {IN("touch k 4294967296\r\n"), FWD(TOUCH), .keys = "k", .exptime = 0, .mc = "NOT_FOUND\r\n"},
    {IN("touch k\r\n"), REJ(TOUCH, ERROR), .mc = E_ERROR},
    {IN("touch k 10 a b\r\n"), REJ(TOUCH, ERROR), .mc = E_ERROR},
    {IN("touch k 10 noreply junk\r\n"), REJ(TOUCH, ERROR), .mc = E_ERROR},
    {IN("touch k abc\r\n"), REJ(TOUCH, BAD_EXPTIME), .mc = E_EXPTIME},
    {IN("touch k abc noreply\r\n"), REJ(TOUCH, BAD_EXPTIME), .noreply = true, .mc = ""},
    {IN("touch k noreply\r\n"), REJ(TOUCH, BAD_EXPTIME), .noreply = true, .mc = ""},
    {IN("touch k 99999999999999999999\r\n"), REJ(TOUCH, BAD_EXPTIME), .mc = E_EXPTIME},
    {IN("touch " A251 " 1\r\n"), REJ(TOUCH, BAD_FORMAT), .mc = E_FORMAT},

    /* delete <key> [0] [noreply] */
    {IN("delete k\r\n"), FWD(DELETE), .keys = "k", .mc = "NOT_FOUND\r\n"},
    {IN("delete k 0\r\n"), FWD(DELETE), .keys = "k", .mc = "NOT_FOUND\r\n"},
    {IN("delete k noreply\r\n"), FWD(DELETE), .keys = "k", .noreply = true, .mc = ""},
    {IN("delete k 0 noreply\r\n"), FWD(DELETE), .keys = "k", .noreply = true, .mc = ""},
    {IN("delete noreply\r\n"), FWD(DELETE), .keys = "noreply", .mc = "NOT_FOUND\r\n"},
    {IN("delete k 5\r\n"), REJ(DELETE, BAD_DELETE), .mc = E_DELETE},
    {IN("delete k 5 noreply\r\n"), REJ(DELETE, BAD_DELETE), .noreply = true, .mc = ""},
    {IN("delete k 0 junk\r\n"), REJ(DELETE, BAD_DELETE), .mc = E_DELETE},
    {IN("delete k 0 0\r\n"), REJ(DELETE, BAD_DELETE), .mc = E_DELETE},
    {IN("delete k noreply junk\r\n"), REJ(DELETE, BAD_DELETE), .mc = E_DELETE},
    {IN("delete k a b c\r\n"), REJ(DELETE, ERROR), .mc = E_ERROR},
    {IN("delete\r\n"), REJ(DELETE, ERROR), .mc = E_ERROR},
    {IN("delete " A251 "\r\n"), REJ(DELETE, BAD_FORMAT), .mc = E_FORMAT},

    /* version, quit: extra tokens ignored */
    {IN("version\r\n"), FWD(VERSION)},
    {IN("version junk\r\n"), FWD(VERSION)},
    {IN("version x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x\r\n"), FWD(VERSION)},
    {IN("quit\r\n"), FWD(QUIT)},
    {IN("quit junk\r\n"), FWD(QUIT)},

    /* flush_all [exptime] [noreply] */
    {IN("flush_all\r\n"), FWD(FLUSH_ALL), .mc = "OK\r\n"},
    {IN("flush_all 10\r\n"), FWD(FLUSH_ALL), .exptime = 10, .arg = "10", .mc = "OK\r\n"},
    {IN("flush_all -1\r\n"), FWD(FLUSH_ALL), .exptime = -1, .arg = "-1", .mc = "OK\r\n"},
    {IN("flush_all noreply\r\n"), FWD(FLUSH_ALL), .noreply = true, .mc = ""},
    {IN("flush_all 10 junk\r\n"), FWD(FLUSH_ALL), .exptime = 10, .arg = "10", .mc = "OK\r\n"},
    {IN("flush_all 10 noreply\r\n"), FWD(FLUSH_ALL), .exptime = 10, .arg = "10", .noreply = true, .mc = ""},
    {IN("flush_all junk\r\n"), REJ(FLUSH_ALL, BAD_EXPTIME), .mc = E_EXPTIME},
    {IN("flush_all noreply junk\r\n"), REJ(FLUSH_ALL, BAD_EXPTIME), .mc = E_EXPTIME},
    {IN("flush_all 99999999999999999999\r\n"), REJ(FLUSH_ALL, BAD_EXPTIME), .mc = E_EXPTIME},
    {IN("flush_all 1 2 3\r\n"), REJ(FLUSH_ALL, ERROR), .mc = E_ERROR},

    /* verbosity <level> [noreply] */
    {IN("verbosity 1\r\n"), FWD(VERBOSITY), .arg = "1", .mc = "OK\r\n"},
    {IN("verbosity 1 2\r\n"), FWD(VERBOSITY), .arg = "1", .mc = "OK\r\n"},
    {IN("verbosity 1 noreply\r\n"), FWD(VERBOSITY), .arg = "1", .noreply = true, .mc = ""},
    {IN("verbosity\r\n"), REJ(VERBOSITY, ERROR), .mc = E_ERROR},
    {IN("verbosity  \r\n"), REJ(VERBOSITY, ERROR), .mc = E_ERROR},
    {IN("verbosity 1 2 3\r\n"), REJ(VERBOSITY, ERROR), .mc = E_ERROR},
    {IN("verbosity noreply\r\n"), REJ(VERBOSITY, ERROR), .noreply = true, .mc = ""},
    {IN("verbosity abc\r\n"), REJ(VERBOSITY, BAD_FORMAT), .mc = E_FORMAT},

    /* stats [args]: the backend judges the arguments */
    {IN("stats\r\n"), FWD(STATS)},
    {IN("stats reset\r\n"), FWD(STATS), .arg = "reset", .mc = "RESET\r\n"},
    {IN("stats detail on\r\n"), FWD(STATS), .arg = "detail on", .mc = "OK\r\n"},
    {IN("stats detail\r\n"), FWD(STATS), .arg = "detail", .mc = "CLIENT_ERROR usage: stats detail on|off|dump\r\n"},
    {IN("stats bogus\r\n"), FWD(STATS), .arg = "bogus", .mc = E_ERROR},

    /* meta commands: classified and framed; flags left to the backend */
    {IN("mn\r\n"), FWD(META), .meta = 'n', .mc = "MN\r\n"},
    {IN("mn junk\r\n"), FWD(META), .meta = 'n', .mc = "MN\r\n"},
    {IN("mg k\r\n"), FWD(META), .meta = 'g', .keys = "k", .mc = "EN\r\n"},
    {IN("mg k v\r\n"), FWD(META), .meta = 'g', .keys = "k", .mc = "EN\r\n"},
    {IN("md k\r\n"), FWD(META), .meta = 'd', .keys = "k"},
    {IN("ma k\r\n"), FWD(META), .meta = 'a', .keys = "k", .mc = "NF\r\n"},
    {IN("me k\r\n"), FWD(META), .meta = 'e', .keys = "k", .mc = "EN\r\n"},
    {IN("ms k 1\r\na\r\n"), FWD(META), .meta = 's', .keys = "k", .bytes = 1, .mc = "HD\r\n"},
    {IN("ms k 1 T0\r\na\r\n"), FWD(META), .meta = 's', .keys = "k", .bytes = 1, .mc = "HD\r\n"},
    {IN("ms k 4294967297\r\na\r\n"), FWD(META), .meta = 's', .keys = "k", .bytes = 1, .mc = "HD\r\n"},
    {IN("ms k 1 zz\r\na\r\n"), FWD(META), .meta = 's', .keys = "k", .bytes = 1, .mc = "CLIENT_ERROR invalid flag\r\n"},
    {IN("mg\r\n"), REJ(META, ERROR), .meta = 'g', .mc = E_ERROR},
    {IN("ms\r\n"), REJ(META, ERROR), .meta = 's', .mc = E_ERROR},
    {IN("md\r\n"), REJ(META, ERROR), .meta = 'd', .mc = E_ERROR},
    {IN("ma\r\n"), REJ(META, ERROR), .meta = 'a', .mc = E_ERROR},
    {IN("me\r\n"), REJ(META, BAD_FORMAT), .meta = 'e', .mc = E_FORMAT},
    {IN("ms k\r\n"), REJ(META, BAD_FORMAT), .meta = 's', .mc = E_FORMAT},
    {IN("ms k abc\r\n"), REJ(META, BAD_FORMAT), .meta = 's', .mc = E_FORMAT},
    {IN("ms k -1\r\n"), REJ(META, BAD_FORMAT), .meta = 's', .mc = E_FORMAT},
    {IN("mg " A251 "\r\n"), REJ(META, BAD_FORMAT), .meta = 'g', .mc = E_FORMAT},
    {IN("md " A251 "\r\n"), REJ(META, BAD_FORMAT), .meta = 'd', .mc = E_FORMAT},
    {IN("ma " A251 "\r\n"), REJ(META, BAD_FORMAT), .meta = 'a', .mc = E_FORMAT},
    {IN("me " A251 "\r\n"), REJ(META, BAD_FORMAT), .meta = 'e', .mc = E_FORMAT},
    {IN("ms " A251 " 1\r\na\r\n"), REJ(META, BAD_FORMAT), .meta = 's', .mc = E_FORMAT E_ERROR},
    {IN("ms k 1048577\r\n"), BIG(META), .meta = 's', .data = 1048579, .mc = E_LARGE},
};
/* clang-format on */

static bool is_data_cmd(const wn_mc_request_t *r)
{
    return wn_mc_cmd_is_storage(r->cmd) || (r->cmd == WN_MC_META && r->meta == 's');
}

/* Check one parse result against its row; `line` is the buffer parsed. */
static void check_case(const req_case_t *c, const char *line, int rc, const wn_mc_request_t *r)
{
    size_t ll = line_end(c->in, c->len);
    if (c->rc == WN_EAGAIN) {
        assert_int_equal(rc, WN_EAGAIN);
        return;
    }
    if (c->rc == 0) {
        if (rc != (int)ll)
            fail_msg("'%s': rc %d (%s), want %zu", c->in, rc, wn_err_name(rc), ll);
    } else if (rc != c->rc) {
        fail_msg("'%s': rc %d (%s), want %s", c->in, rc, wn_err_name(rc), wn_err_name(c->rc));
    }
    assert_int_equal(r->line_len, ll);
    if (r->cmd != c->cmd)
        fail_msg("'%s': cmd %s, want %s", c->in, wn_mc_cmd_name(r->cmd), wn_mc_cmd_name(c->cmd));
    assert_int_equal(r->meta, c->meta);
    if (r->noreply != c->noreply)
        fail_msg("'%s': noreply %d", c->in, r->noreply);

    if (c->rc != 0) {
        if (r->reply != c->reply)
            fail_msg("'%s': reply '%s'", c->in, wn_mc_reply_text(r->reply, NULL));
        assert_int_equal(r->after, c->after);
        if (c->after == WN_MC_AFTER_SWALLOW)
            assert_int_equal(r->data_len, c->data);
        if (c->keys != NULL) {
            /* a retrieval refused for a long key: the keys before it */
            char keys[1024];
            join_keys(line, r, keys, sizeof keys);
            if (strcmp(keys, c->keys) != 0)
                fail_msg("'%s': keys before the long one '%s', want '%s'", c->in, keys, c->keys);
        }
        /* The local reply is what memcached sent first (nothing if noreply). */
        if (c->mc != NULL) {
            const char *want = r->noreply ? "" : wn_mc_reply_text(r->reply, NULL);
            if (strncmp(c->mc, want, strlen(want)) != 0)
                fail_msg("'%s': reply '%s' but memcached said '%s'", c->in, want, c->mc);
        }
        return;
    }

    assert_int_equal(r->reply, WN_MC_REPLY_NONE);
    char keys[1024];
    join_keys(line, r, keys, sizeof keys);
    const char *want_keys = c->keys != NULL ? c->keys : "";
    if (strcmp(keys, want_keys) != 0)
        fail_msg("'%s': keys '%s', want '%s'", c->in, keys, want_keys);
    if (r->nkeys > 0) {
        /* the first key is also reported on its own */
        assert_true(r->key.len >= 1 && r->key.len <= WN_MC_KEY_MAX);
        assert_memory_equal(line + r->key.off, want_keys, r->key.len);
    }
    assert_int_equal(r->bytes, c->bytes);
    assert_int_equal(r->data_len, is_data_cmd(r) ? c->bytes + 2 : 0);
    assert_int_equal(r->flags, c->flags);
    assert_int_equal(r->exptime, c->exptime);
    assert_true(r->cas == c->cas);
    assert_true(r->delta == c->delta);
    const char *want_arg = c->arg != NULL ? c->arg : "";
    if (r->arg.len != strlen(want_arg) || memcmp(line + r->arg.off, want_arg, r->arg.len) != 0)
        fail_msg("'%s': arg '%.*s', want '%s'", c->in, (int)r->arg.len, line + r->arg.off,
                 want_arg);
}

static int parse_once(const char *in, size_t n, const wn_mc_limits_t *lim, wn_mc_request_t *r)
{
    wn_mc_req_parser_t p;
    wn_mc_req_parser_init(&p, lim);
    char *b = exact_copy(in, n);
    int rc = wn_mc_request_parse(&p, b, n, r);
    free(b);
    return rc;
}

static void test_request_golden(void **state)
{
    (void)state;
    for (size_t i = 0; i < WN_ARRAY_SIZE(req_cases); i++) {
        const req_case_t *c = &req_cases[i];
        wn_mc_request_t r;
        memset(&r, 0x5a, sizeof r);
        wn_mc_req_parser_t p;
        wn_mc_req_parser_init(&p, NULL);
        char *b = exact_copy(c->in, c->len);
        int rc = wn_mc_request_parse(&p, b, c->len, &r);
        check_case(c, b, rc, &r);
        if (rc != WN_EAGAIN) /* ready for the next line */
            assert_int_equal(p.scanned, 0);
        free(b);
    }
}

/* Every row again, its line fed in two pieces split at every point, and
 * byte by byte through one parser; each call sees an exactly-sized copy. */
static void test_request_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < WN_ARRAY_SIZE(req_cases); i++) {
        const req_case_t *c = &req_cases[i];
        size_t ll = line_end(c->in, c->len);
        if (ll == 0)
            ll = c->len; /* incomplete: every prefix must ask for more */
        wn_mc_request_t whole;
        int whole_rc = parse_once(c->in, c->len, NULL, &whole);

        for (size_t k = 0; k <= ll; k++) {
            wn_mc_req_parser_t p;
            wn_mc_req_parser_init(&p, NULL);
            wn_mc_request_t r;
            char *b = exact_copy(c->in, k);
            int rc = wn_mc_request_parse(&p, b, k, &r);
            free(b);
            if (k < ll || c->rc == WN_EAGAIN) {
                assert_int_equal(rc, WN_EAGAIN);
                assert_int_equal(p.scanned, k);
            }
            b = exact_copy(c->in, c->len);
            rc = wn_mc_request_parse(&p, b, c->len, &r);
            check_case(c, b, rc, &r);
            free(b);
            assert_int_equal(rc, whole_rc);
            if (rc != WN_EAGAIN)
                assert_true(req_same(&r, &whole));
        }

        wn_mc_req_parser_t p;
        wn_mc_req_parser_init(&p, NULL);
        int rc = WN_EAGAIN;
        wn_mc_request_t r;
        size_t answered_at = 0;
        for (size_t n = 0; n <= c->len && rc == WN_EAGAIN; n++) {
            char *b = exact_copy(c->in, n);
            rc = wn_mc_request_parse(&p, b, n, &r);
            if (rc != WN_EAGAIN) {
                check_case(c, b, rc, &r);
                answered_at = n;
            }
            free(b);
        }
        assert_int_equal(rc, whole_rc);
        if (rc != WN_EAGAIN) {
            assert_int_equal(answered_at, ll); /* answered as soon as the "\n" arrived */
            assert_true(req_same(&r, &whole));
        }
    }
}

/* Keys of a many-key get, through the iterator (well past memcached's 24
 * token window). */
static void test_request_many_keys(void **state)
{
    (void)state;
    char line[8192];
    size_t o = (size_t)snprintf(line, sizeof line, "get");
    for (int i = 0; i < 1000; i++)
        o += (size_t)snprintf(line + o, sizeof line - o, " k%d", i);
    o += (size_t)snprintf(line + o, sizeof line - o, "\r\n");
    wn_mc_request_t r;
    assert_int_equal(parse_once(line, o, NULL, &r), (int)o);
    assert_int_equal(r.cmd, WN_MC_GET);
    assert_int_equal(r.nkeys, 1000);
    uint32_t cursor = 0;
    wn_mc_span_t k;
    char want[16];
    for (int i = 0; i < 1000; i++) {
        assert_true(wn_mc_key_next(line, &r, &cursor, &k));
        int wl = snprintf(want, sizeof want, "k%d", i);
        assert_int_equal(k.len, wl);
        assert_memory_equal(line + k.off, want, (size_t)wl);
    }
    assert_false(wn_mc_key_next(line, &r, &cursor, &k));
    assert_false(wn_mc_key_next(line, &r, &cursor, &k));

    /* no keys: the iterator says so at once */
    assert_int_equal(parse_once("version\r\n", 9, NULL, &r), 9);
    cursor = 0;
    assert_false(wn_mc_key_next("version\r\n", &r, &cursor, &k));
}

/* A line over the limit: rejected as soon as max_line bytes hold no "\n",
 * however they arrive; a line of exactly max_line bytes is fine. */
static void test_request_line_limit(void **state)
{
    (void)state;
    const wn_mc_limits_t lim = {.max_line = 64, .max_value = 1024};
    char buf[200];
    memset(buf, 'a', sizeof buf);
    memcpy(buf, "get ", 4);

    /* exactly 64 bytes with the "\r\n" */
    buf[62] = '\r';
    buf[63] = '\n';
    wn_mc_request_t r;
    assert_int_equal(parse_once(buf, 64, &lim, &r), 64);
    assert_int_equal(r.nkeys, 1);
    assert_int_equal(r.key.len, 58);

    /* 65 bytes */
    memset(buf + 4, 'a', sizeof buf - 4);
    buf[63] = '\r';
    buf[64] = '\n';
    assert_int_equal(parse_once(buf, 65, &lim, &r), WN_ETOOBIG);
    assert_int_equal(r.reply, WN_MC_REPLY_LINE_TOO_LONG);
    assert_int_equal(r.after, WN_MC_AFTER_CLOSE);
    assert_int_equal(r.line_len, 0);

    /* byte by byte: EAGAIN up to 63 bytes, then too long at 64 */
    wn_mc_req_parser_t p;
    wn_mc_req_parser_init(&p, &lim);
    for (size_t n = 0; n < 64; n++) {
        char *b = exact_copy(buf, n);
        assert_int_equal(wn_mc_request_parse(&p, b, n, &r), WN_EAGAIN);
        free(b);
    }
    char *b = exact_copy(buf, 64);
    assert_int_equal(wn_mc_request_parse(&p, b, 64, &r), WN_ETOOBIG);
    free(b);
    /* a huge buffer of junk is judged on its first max_line bytes */
    assert_int_equal(parse_once(buf, sizeof buf, &lim, &r), WN_ETOOBIG);

    /* the default limit, and a limit below the floor is raised to it */
    char *big = malloc(WN_MC_LINE_MAX + 1);
    assert_non_null(big);
    memset(big, 'a', WN_MC_LINE_MAX + 1);
    assert_int_equal(parse_once(big, WN_MC_LINE_MAX, NULL, &r), WN_ETOOBIG);
    assert_int_equal(parse_once(big, WN_MC_LINE_MAX - 1, NULL, &r), WN_EAGAIN);
    free(big);
    const wn_mc_limits_t tiny = {.max_line = 1, .max_value = 0};
    assert_int_equal(parse_once("get a\r\n", 7, &tiny, &r), 7);
    /* max_value 0 still allows an empty value */
    assert_int_equal(parse_once("set k 0 0 0\r\n", 13, &tiny, &r), 13);
    assert_int_equal(parse_once("set k 0 0 1\r\n", 13, &tiny, &r), WN_ETOOBIG);
    assert_int_equal(r.after, WN_MC_AFTER_SWALLOW);
    assert_int_equal(r.data_len, 3);
}

/* Resuming costs O(n): the parser never searches a byte twice. With the
 * buffer grown one byte per call, each call searches one new byte. */
static void test_request_resume_linear(void **state)
{
    (void)state;
    static char buf[WN_MC_LINE_MAX];
    memset(buf, 'k', sizeof buf);
    memcpy(buf, "get ", 4);
    buf[sizeof buf - 2] = '\r';
    buf[sizeof buf - 1] = '\n';
    wn_mc_req_parser_t p;
    wn_mc_req_parser_init(&p, NULL);
    wn_mc_request_t r;
    for (size_t n = 1; n < sizeof buf; n++) {
        assert_int_equal(wn_mc_request_parse(&p, buf, n, &r), WN_EAGAIN);
        assert_int_equal(p.scanned, n);
    }
    /* the key is over 250 bytes, but framing came first */
    assert_int_equal(wn_mc_request_parse(&p, buf, sizeof buf, &r), WN_EPROTO);
    assert_int_equal(r.reply, WN_MC_REPLY_BAD_FORMAT);
    assert_int_equal(r.line_len, sizeof buf);
    assert_int_equal(p.scanned, 0);
}

/* Several requests back to back in one buffer, one parser. */
static void test_request_pipeline(void **state)
{
    (void)state;
    static const char in[] = "get a b\r\nset k 0 0 3\r\nabc\r\nbogus\nincr n 5 noreply\r\ndelete k";
    const size_t n = sizeof in - 1;
    char *b = exact_copy(in, n);
    wn_mc_req_parser_t p;
    wn_mc_req_parser_init(&p, NULL);
    wn_mc_request_t r;
    size_t pos = 0;

    assert_int_equal(wn_mc_request_parse(&p, b + pos, n - pos, &r), 9);
    assert_int_equal(r.cmd, WN_MC_GET);
    pos += 9;
    assert_int_equal(wn_mc_request_parse(&p, b + pos, n - pos, &r), 13);
    assert_int_equal(r.cmd, WN_MC_SET);
    assert_int_equal(r.data_len, 5);
    assert_true(wn_mc_data_trailer_ok(b[pos + 13 + 3], b[pos + 13 + 4]));
    pos += 13 + 5;
    assert_int_equal(wn_mc_request_parse(&p, b + pos, n - pos, &r), WN_EPROTO);
    assert_int_equal(r.line_len, 6);
    assert_int_equal(r.reply, WN_MC_REPLY_ERROR);
    assert_int_equal(r.after, WN_MC_AFTER_CONTINUE);
    pos += 6;
    assert_int_equal(wn_mc_request_parse(&p, b + pos, n - pos, &r), 18);
    assert_int_equal(r.cmd, WN_MC_INCR);
    assert_true(r.noreply);
    assert_true(r.delta == 5);
    pos += 18;
    assert_int_equal(wn_mc_request_parse(&p, b + pos, n - pos, &r), WN_EAGAIN);
    free(b);
}

/* ---- streams: the proxy's answers to a client's bytes -------------------- */

/*
 * Play a client byte stream as the worker would: answer rejected requests
 * locally (unless noreply), check data trailers, and note forwarded requests
 * as "<cmd key>". Where every request is answered locally the output must be
 * byte for byte what memcached sent.
 */
static void play(const char *in, size_t n, const wn_mc_limits_t *lim, char *out, size_t cap)
{
    wn_mc_req_parser_t p;
    wn_mc_req_parser_init(&p, lim);
    size_t pos = 0, o = 0;
    out[0] = '\0';
#define EMIT(...) (o += (size_t)snprintf(out + o, cap - o, __VA_ARGS__), assert_true(o < cap))
    while (pos < n) {
        wn_mc_request_t r;
        const char *line = in + pos;
        int rc = wn_mc_request_parse(&p, line, n - pos, &r);
        if (rc == WN_EAGAIN)
            break;
        if (rc < 0) {
            if (!r.noreply)
                EMIT("%s", wn_mc_reply_text(r.reply, NULL));
            if (r.after == WN_MC_AFTER_CLOSE) {
                EMIT("<close>");
                break;
            }
            pos += r.line_len;
            if (r.after == WN_MC_AFTER_SWALLOW)
                pos += r.data_len;
            continue;
        }
        pos += r.line_len;
        if (r.data_len > 0) {
            if (n - pos < r.data_len)
                break;
            const char *d = in + pos + r.data_len - 2;
            pos += r.data_len;
            if (!wn_mc_data_trailer_ok(d[0], d[1])) {
                if (!r.noreply)
                    EMIT("%s", wn_mc_reply_text(WN_MC_REPLY_BAD_CHUNK, NULL));
                continue;
            }
        }
        EMIT("<%s", wn_mc_cmd_name(r.cmd));
        if (r.nkeys > 0)
            EMIT(" %.*s", (int)r.key.len, line + r.key.off);
        EMIT(">");
    }
#undef EMIT
}

typedef struct stream_case {
    const char *in;
    size_t len;
    uint32_t max_value; /* 0: default */
    const char *out;
} stream_case_t;

/* clang-format off */
static const stream_case_t stream_cases[] = {
    /* measured on memcached 1.6.18: a bad data chunk costs exactly bytes + 2,
     * and what follows is read as a command ("\r\n", "\n" -> ERROR) */
    {IN("set k 0 0 1\r\nab\r\n"), 0, "CLIENT_ERROR bad data chunk\r\nERROR\r\n"},
    {IN("set k 0 0 1\r\nabc\r\n"), 0, "CLIENT_ERROR bad data chunk\r\nERROR\r\n"},
    {IN("set k 0 0 1 noreply\r\nabc\r\n"), 0, "ERROR\r\n"},
    {IN("cas k 0 0 1 5 noreply\r\nabc\r\n"), 0, "ERROR\r\n"},
    {IN("ms k 1\r\nabc\r\n"), 0, "CLIENT_ERROR bad data chunk\r\nERROR\r\n"},
    {IN("set k 0 0 -1\r\nab\r\n"), 0, E_FORMAT E_ERROR},
    /* memcached: E_ERROR E_ERROR and E_ERROR, running the data block as a
     * command; walnut swallows the announced block (see SWL above) */
    {IN("set k 0 0 1 junk junk\r\na\r\n"), 0, E_ERROR},
    {IN("set k abc 0 1 noreply\r\na\r\n"), 0, ""},
    {IN("set k abc 0 16\r\ndelete important\r\nget k\r\n"), 0, E_FORMAT "<get k>"},
    {IN("GET / HTTP/1.1\r\nversion\r\n"), 0, "<close>"},
    /* walnut's limit instead of memcached's 1 MiB: same swallow */
    {IN("set k 0 0 5\r\nhello\r\nget k\r\n"), 4, E_LARGE "<get k>"},
    {IN("set k 0 0 5 noreply\r\nhello\r\nget k\r\n"), 4, "<get k>"},
    {IN("set k 0 0 1\r\na\r\nget k j\r\ndelete k noreply\r\n"), 0, "<set k><get k><delete k>"},
};
/* clang-format on */

static void test_request_streams(void **state)
{
    (void)state;
    char out[512];
    for (size_t i = 0; i < WN_ARRAY_SIZE(stream_cases); i++) {
        const stream_case_t *c = &stream_cases[i];
        wn_mc_limits_t lim = {WN_MC_LINE_MAX, c->max_value ? c->max_value : WN_MC_VALUE_MAX, 0};
        char *b = exact_copy(c->in, c->len);
        play(b, c->len, &lim, out, sizeof out);
        free(b);
        if (strcmp(out, c->out) != 0)
            fail_msg("stream %zu: got '%s', want '%s'", i, out, c->out);
    }
    assert_true(wn_mc_data_trailer_ok('\r', '\n'));
    assert_false(wn_mc_data_trailer_ok('\n', '\r'));
    assert_false(wn_mc_data_trailer_ok('a', '\n'));
    assert_false(wn_mc_data_trailer_ok('\r', 'a'));
}

static void test_reply_texts(void **state)
{
    (void)state;
    size_t len = 99;
    assert_string_equal(wn_mc_reply_text(WN_MC_REPLY_NONE, &len), "");
    assert_int_equal(len, 0);
    assert_string_equal(wn_mc_reply_text(WN_MC_REPLY_ERROR, &len), "ERROR\r\n");
    assert_int_equal(len, 7);
    assert_string_equal(wn_mc_reply_text(WN_MC_REPLY_BAD_FORMAT, &len), E_FORMAT);
    assert_int_equal(len, strlen(E_FORMAT));
    assert_string_equal(wn_mc_reply_text(WN_MC_REPLY_BAD_DELETE, NULL), E_DELETE);
    assert_string_equal(wn_mc_reply_text(WN_MC_REPLY_BAD_CHUNK, NULL),
                        "CLIENT_ERROR bad data chunk\r\n");
    assert_string_equal(wn_mc_reply_text(WN_MC_REPLY_LINE_TOO_LONG, NULL),
                        "CLIENT_ERROR line too long\r\n");
    assert_string_equal(wn_mc_reply_text(WN_MC_REPLY_END, NULL), "END\r\n");
    assert_string_equal(wn_mc_reply_text(WN_MC_REPLY_COUNT, &len), "");
    assert_int_equal(len, 0);
    for (int i = 0; i < WN_MC_REPLY_COUNT; i++) {
        const char *t = wn_mc_reply_text((wn_mc_reply_t)i, &len);
        assert_int_equal(strlen(t), len);
    }
    assert_string_equal(wn_mc_cmd_name(WN_MC_FLUSH_ALL), "flush_all");
    assert_null(wn_mc_cmd_name(WN_MC_CMD_COUNT));
    assert_string_equal(wn_mc_rsp_type_name(WN_MC_RSP_NOT_STORED), "NOT_STORED");
    assert_null(wn_mc_rsp_type_name(WN_MC_RSP_COUNT));
    assert_true(wn_mc_cmd_is_storage(WN_MC_CAS));
    assert_false(wn_mc_cmd_is_storage(WN_MC_META));
    assert_true(wn_mc_cmd_is_retrieval(WN_MC_GATS));
    assert_false(wn_mc_cmd_is_retrieval(WN_MC_TOUCH));
}

/* ---- responses --------------------------------------------------------- */

/*
 * Frame a whole reply stream for `cmd` the way the worker does, revealing
 * the bytes `step` at a time, or in two pieces split at `split` (both 0:
 * all at once). Every call sees an exactly-sized copy of
 * what has arrived. Writes a trace: one entry per line ("*" once the reply
 * is complete), "!EPROTO"/"!ETOOBIG"/"!TRAILER" on failure, "+EAGAIN" when
 * the input ends mid-reply.
 */
static void frame_reply(wn_mc_cmd_t cmd, const char *in, size_t n, const wn_mc_limits_t *lim,
                        size_t split, size_t step, char *out, size_t cap)
{
    wn_mc_rsp_parser_t p;
    wn_mc_rsp_parser_init(&p, lim);
    size_t avail = step ? WN_MIN(step, n) : (split ? split : n);
    size_t pos = 0, o = 0;
    bool done = true;
    out[0] = '\0';
#define EMIT(...) (o += (size_t)snprintf(out + o, cap - o, __VA_ARGS__), assert_true(o < cap))
    for (;;) {
        if (pos == n && done)
            break;
        wn_mc_response_t r;
        char *b = exact_copy(in + pos, avail - pos);
        int rc = wn_mc_response_parse(&p, cmd, b, avail - pos, &r);
        free(b);
        if (rc == WN_EAGAIN) {
            if (avail == n) {
                EMIT("+EAGAIN");
                break;
            }
            avail = step ? WN_MIN(avail + step, n) : n;
            continue;
        }
        if (rc < 0) {
            EMIT("!%s", rc == WN_EPROTO ? "EPROTO" : rc == WN_ETOOBIG ? "ETOOBIG" : "?");
            break;
        }
        assert_int_equal(rc, r.line_len);
        assert_true(r.line_len <= avail - pos);
        if (o > 0 && out[o - 1] != '!')
            EMIT("|");
        const char *l = in + pos;
        switch (r.type) {
        case WN_MC_RSP_VALUE:
            EMIT("VALUE %.*s %u %u", (int)r.key.len, l + r.key.off, r.flags, r.bytes);
            if (r.has_cas)
                EMIT(" %llu", (unsigned long long)r.cas);
            break;
        case WN_MC_RSP_NUMBER:
            EMIT("%llu", (unsigned long long)r.number);
            break;
        case WN_MC_RSP_META_VA:
            EMIT("VA %u", r.bytes);
            break;
        default:
            EMIT("%s", wn_mc_rsp_type_name(r.type));
            if (r.text.len > 0)
                EMIT(" %.*s", (int)r.text.len, l + r.text.off);
        }
        if (r.done)
            EMIT("*");
        done = r.done;
        pos += r.line_len;
        if (r.data_len > 0) {
            /* skip the data block by count, across as many reveals as needed */
            while (avail - pos < r.data_len && avail < n)
                avail = step ? WN_MIN(avail + step, n) : n;
            if (avail - pos < r.data_len) {
                EMIT("+EAGAIN");
                break;
            }
            const char *d = in + pos + r.data_len - 2;
            if (!wn_mc_data_trailer_ok(d[0], d[1])) {
                EMIT("!TRAILER");
                break;
            }
            pos += r.data_len;
        }
    }
#undef EMIT
}

typedef struct rsp_case {
    wn_mc_cmd_t cmd;
    const char *in;
    size_t len;
    const char *trace;
} rsp_case_t;

#define C(x) WN_MC_##x

/* clang-format off */
static const rsp_case_t rsp_cases[] = {
    /* retrieval: VALUE* END (replies as memcached 1.6.18 sent them) */
    {C(GET), IN("END\r\n"), "END*"},
    {C(GET), IN("VALUE ka 0 1\r\nx\r\nEND\r\n"), "VALUE ka 0 1|END*"},
    {C(GET), IN("VALUE k 0 1\r\na\r\nVALUE j 0 1\r\nb\r\nVALUE k 0 1\r\na\r\nEND\r\n"),
     "VALUE k 0 1|VALUE j 0 1|VALUE k 0 1|END*"},
    {C(GETS), IN("VALUE j 0 1 3\r\nb\r\nEND\r\n"), "VALUE j 0 1 3|END*"},
    {C(GATS), IN("VALUE k 0 1 2\r\na\r\nVALUE j 0 1 3\r\nb\r\nEND\r\n"), "VALUE k 0 1 2|VALUE j 0 1 3|END*"},
    {C(GAT), IN("VALUE k 4294967295 0\r\n\r\nEND\r\n"), "VALUE k 4294967295 0|END*"},
    /* data that looks like protocol is skipped by count, never parsed */
    {C(GET), IN("VALUE k 0 7\r\n\r\nEND\r\n\r\nEND\r\n"), "VALUE k 0 7|END*"},
    {C(GET), IN("VALUE k 5 10 18446744073709551615\r\n0123456789\r\nEND\r\n"), "VALUE k 5 10 18446744073709551615|END*"},
    {C(GET), IN("VALUE " A250 " 0 1\r\na\r\nEND\r\n"), "VALUE " A250 " 0 1|END*"},
    /* memcached ends every line with CRLF: a bare LF is no reply of memcached's */
    {C(GET), IN("END\nEND\r\n"), "!EPROTO"},
    {C(SET), IN("STORED\n"), "!EPROTO"},
    {C(GET), IN("VALUE k 0 1\r\na\r\nSERVER_ERROR out of memory writing get response\r\n"),
     "VALUE k 0 1|SERVER_ERROR out of memory writing get response*"},
    {C(GET), IN("CLIENT_ERROR bad command line format\r\n"), "CLIENT_ERROR bad command line format*"},
    {C(GET), IN("ERROR\r\n"), "ERROR*"},
    {C(GET), IN("VALUE k 0 1\r\na\r\n"), "VALUE k 0 1+EAGAIN"},
    {C(GET), IN("VALUE k 0 1\r\na\r"), "VALUE k 0 1+EAGAIN"},
    {C(GET), IN("END"), "+EAGAIN"},
    {C(GET), IN("VALUE k 0 1\r\nab\r\n"), "VALUE k 0 1!TRAILER"},
    {C(GET), IN("VALUE " A251 " 0 1\r\na\r\nEND\r\n"), "!EPROTO"},
    {C(GET), IN("VALUE k 0\r\n"), "!EPROTO"},
    {C(GET), IN("VALUE k 0 1 2 3\r\n"), "!EPROTO"},
    {C(GET), IN("VALUE k x 1\r\n"), "!EPROTO"},
    {C(GET), IN("VALUE k 0 -1\r\n"), "!EPROTO"},
    {C(GET), IN("VALUE k 0 +1\r\n"), "!EPROTO"},
    {C(GET), IN("VALUE k 4294967296 1\r\n"), "!EPROTO"},
    {C(GET), IN("VALUE k 0 1 18446744073709551616\r\n"), "!EPROTO"},
    {C(GET), IN("VALUE k 0 1048577\r\n"), "!ETOOBIG"},
    {C(GET), IN("VALUE\r\n"), "!EPROTO"},
    {C(GET), IN("VALUE \r\n"), "!EPROTO"},
    {C(GET), IN("STORED\r\n"), "!EPROTO"},
    {C(GET), IN("VALUE k 0 1\r\na\r\nSTORED\r\n"), "VALUE k 0 1!EPROTO"},
    {C(GET), IN("end\r\n"), "!EPROTO"},
    {C(GET), IN("END \r\n"), "!EPROTO"},
    {C(GET), IN("\r\n"), "!EPROTO"},
    {C(GET), IN("\x00\x01\r\n"), "!EPROTO"},
    /* storage */
    {C(SET), IN("STORED\r\n"), "STORED*"},
    {C(ADD), IN("NOT_STORED\r\n"), "NOT_STORED*"},
    {C(SET), IN("SERVER_ERROR object too large for cache\r\n"), "SERVER_ERROR object too large for cache*"},
    {C(SET), IN("SERVER_ERROR out of memory storing object\r\n"), "SERVER_ERROR out of memory storing object*"},
    {C(SET), IN("CLIENT_ERROR bad data chunk\r\n"), "CLIENT_ERROR bad data chunk*"},
    {C(SET), IN("EXISTS\r\n"), "!EPROTO"},
    {C(SET), IN("STORED\r\nSTORED\r\n"), "STORED*|STORED*"},
    {C(CAS), IN("EXISTS\r\n"), "EXISTS*"},
    {C(CAS), IN("NOT_FOUND\r\n"), "NOT_FOUND*"},
    {C(CAS), IN("STORED\r\n"), "STORED*"},
    /* incr/decr */
    {C(INCR), IN("15\r\n"), "15*"},
    {C(DECR), IN("0\r\n"), "0*"},
    {C(INCR), IN("18446744073709551615\r\n"), "18446744073709551615*"},
    {C(INCR), IN("NOT_FOUND\r\n"), "NOT_FOUND*"},
    {C(INCR), IN("CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"),
     "CLIENT_ERROR cannot increment or decrement non-numeric value*"},
    {C(INCR), IN("18446744073709551616\r\n"), "!EPROTO"},
    {C(INCR), IN("1a\r\n"), "!EPROTO"},
    {C(INCR), IN("15 \r\n"), "!EPROTO"},
    {C(INCR), IN("STORED\r\n"), "!EPROTO"},
    /* touch, delete */
    {C(TOUCH), IN("TOUCHED\r\n"), "TOUCHED*"},
    {C(TOUCH), IN("NOT_FOUND\r\n"), "NOT_FOUND*"},
    {C(TOUCH), IN("DELETED\r\n"), "!EPROTO"},
    {C(DELETE), IN("DELETED\r\n"), "DELETED*"},
    {C(DELETE), IN("NOT_FOUND\r\n"), "NOT_FOUND*"},
    {C(DELETE), IN("CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"),
     "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]*"},
    /* version, flush_all, verbosity */
    {C(VERSION), IN("VERSION 1.6.18\r\n"), "VERSION 1.6.18*"},
    {C(VERSION), IN("OK\r\n"), "!EPROTO"},
    {C(FLUSH_ALL), IN("OK\r\n"), "OK*"},
    {C(FLUSH_ALL), IN("CLIENT_ERROR invalid exptime argument\r\n"), "CLIENT_ERROR invalid exptime argument*"},
    {C(VERBOSITY), IN("OK\r\n"), "OK*"},
    /* stats */
    {C(STATS), IN("STAT pid 1\r\nSTAT uptime 2\r\nEND\r\n"), "STAT pid 1|STAT uptime 2|END*"},
    {C(STATS), IN("STAT sizes_status disabled\r\nEND\r\n"), "STAT sizes_status disabled|END*"},
    {C(STATS), IN("RESET\r\n"), "RESET*"},
    {C(STATS), IN("OK\r\n"), "OK*"},
    {C(STATS), IN("END\r\n"), "END*"},
    {C(STATS), IN("PREFIX pfx get 1 hit 1 set 1 del 0\r\nEND\r\n"), "PREFIX pfx get 1 hit 1 set 1 del 0|END*"},
    {C(STATS), IN("ITEM k [1 b; 0 s]\r\nEND\r\n"), "ITEM k [1 b; 0 s]|END*"},
    {C(STATS), IN("CLIENT_ERROR usage: stats detail on|off|dump\r\n"), "CLIENT_ERROR usage: stats detail on|off|dump*"},
    {C(STATS), IN("STAT a b\r\nRESET\r\n"), "STAT a b!EPROTO"},
    {C(STATS), IN("STAT a b\r\nVALUE k 0 1\r\n"), "STAT a b!EPROTO"},
    /* meta */
    {C(META), IN("HD\r\n"), "META HD*"},
    {C(META), IN("EN\r\n"), "META EN*"},
    {C(META), IN("MN\r\n"), "META MN*"},
    {C(META), IN("HD c5 t-1\r\n"), "META HD c5 t-1*"},
    {C(META), IN("VA 1 f0\r\na\r\n"), "VA 1*"},
    {C(META), IN("VA 1\r\na\r\n"), "VA 1*"},
    {C(META), IN("ME k exp=-1 la=1\r\n"), "META ME k exp=-1 la=1*"},
    {C(META), IN("CLIENT_ERROR invalid flag\r\n"), "CLIENT_ERROR invalid flag*"},
    {C(META), IN("HDX\r\n"), "!EPROTO"},
    {C(META), IN("VA x\r\n"), "!EPROTO"},
    {C(META), IN("VA 1048577\r\n"), "!ETOOBIG"},
    {C(META), IN("STORED\r\n"), "!EPROTO"},
    /* error lines */
    {C(GET), IN("ERROR: shutdown not enabled\r\n"), "ERROR shutdown not enabled*"},
    {C(GET), IN("ERROR something\r\n"), "ERROR something*"},
    {C(GET), IN("CLIENT_ERROR\r\n"), "CLIENT_ERROR*"},
    {C(GET), IN("CLIENT_ERRORX\r\n"), "!EPROTO"},
    {C(GET), IN("ERRORS\r\n"), "!EPROTO"},
    /* nothing answers quit; unknown is never forwarded, errors only */
    {C(QUIT), IN("ERROR\r\n"), "!EPROTO"},
    {C(QUIT), IN("END\r\n"), "!EPROTO"},
    {C(UNKNOWN), IN("ERROR\r\n"), "ERROR*"},
    {C(UNKNOWN), IN("OK\r\n"), "!EPROTO"},
};
/* clang-format on */

static void check_rsp_trace(const rsp_case_t *c, const char *how, size_t at, const char *got)
{
    if (strcmp(got, c->trace) != 0)
        fail_msg("%s reply '%.*s' (%s %zu): got '%s', want '%s'", wn_mc_cmd_name(c->cmd),
                 (int)WN_MIN(c->len, 60), c->in, how, at, got, c->trace);
}

static void test_response_golden(void **state)
{
    (void)state;
    char out[1024];
    for (size_t i = 0; i < WN_ARRAY_SIZE(rsp_cases); i++) {
        const rsp_case_t *c = &rsp_cases[i];
        frame_reply(c->cmd, c->in, c->len, NULL, 0, 0, out, sizeof out);
        check_rsp_trace(c, "whole", 0, out);
    }
}

static void test_response_split(void **state)
{
    (void)state;
    char out[1024];
    for (size_t i = 0; i < WN_ARRAY_SIZE(rsp_cases); i++) {
        const rsp_case_t *c = &rsp_cases[i];
        for (size_t k = 1; k < c->len; k++) {
            frame_reply(c->cmd, c->in, c->len, NULL, k, 0, out, sizeof out);
            check_rsp_trace(c, "split at", k, out);
        }
        for (size_t step = 1; step <= 3; step++) {
            frame_reply(c->cmd, c->in, c->len, NULL, 0, step, out, sizeof out);
            check_rsp_trace(c, "step", step, out);
        }
    }
}

/* Which reply lines each command accepts, one column per line below. */
static void test_response_validity(void **state)
{
    (void)state;
    static const char *const lines[] = {
        "VALUE k 0 1\r\na\r\nEND\r\n",
        "END\r\n",
        "STORED\r\n",
        "NOT_STORED\r\n",
        "EXISTS\r\n",
        "NOT_FOUND\r\n",
        "DELETED\r\n",
        "TOUCHED\r\n",
        "OK\r\n",
        "RESET\r\n",
        "42\r\n",
        "VERSION 1\r\n",
        "STAT a 1\r\nEND\r\n",
        "HD\r\n",
        "VA 1\r\na\r\n",
        "ERROR\r\n",
        "CLIENT_ERROR x\r\n",
        "SERVER_ERROR x\r\n",
    };
    /* clang-format off */
    static const struct {
        wn_mc_cmd_t cmd;
        const char *ok;
    } rows[] = {
        /*                 VESNXFDTOR#vshaecS: one column per line above, in order */
        {WN_MC_UNKNOWN,   "...............yyy"},
        {WN_MC_GET,       "yy.............yyy"},
        {WN_MC_GETS,      "yy.............yyy"},
        {WN_MC_GAT,       "yy.............yyy"},
        {WN_MC_GATS,      "yy.............yyy"},
        {WN_MC_SET,       "..yy...........yyy"},
        {WN_MC_ADD,       "..yy...........yyy"},
        {WN_MC_REPLACE,   "..yy...........yyy"},
        {WN_MC_APPEND,    "..yy...........yyy"},
        {WN_MC_PREPEND,   "..yy...........yyy"},
        {WN_MC_CAS,       "..yyyy.........yyy"},
        {WN_MC_INCR,      ".....y....y....yyy"},
        {WN_MC_DECR,      ".....y....y....yyy"},
        {WN_MC_TOUCH,     ".....y.y.......yyy"},
        {WN_MC_DELETE,    ".....yy........yyy"},
        {WN_MC_QUIT,      ".................."},
        {WN_MC_VERSION,   "...........y...yyy"},
        {WN_MC_FLUSH_ALL, "........y......yyy"},
        {WN_MC_VERBOSITY, "........y......yyy"},
        {WN_MC_STATS,     ".y......yy..y..yyy"},
        {WN_MC_META,      ".............yyyyy"},
    };
    /* clang-format on */
    assert_int_equal(WN_ARRAY_SIZE(rows), WN_MC_CMD_COUNT);
    char out[256];
    for (size_t i = 0; i < WN_ARRAY_SIZE(rows); i++) {
        assert_int_equal(strlen(rows[i].ok), WN_ARRAY_SIZE(lines));
        for (size_t j = 0; j < WN_ARRAY_SIZE(lines); j++) {
            frame_reply(rows[i].cmd, lines[j], strlen(lines[j]), NULL, 0, 0, out, sizeof out);
            bool ok = strchr(out, '!') == NULL && strchr(out, '+') == NULL;
            if (ok != (rows[i].ok[j] == 'y'))
                fail_msg("%s: reply '%s' %s (trace %s)", wn_mc_cmd_name(rows[i].cmd), lines[j],
                         ok ? "accepted" : "rejected", out);
        }
    }
}

static void test_response_limits(void **state)
{
    (void)state;
    const wn_mc_limits_t lim = {.max_line = 64, .max_value = 10};
    char out[256];
    frame_reply(WN_MC_GET, "VALUE k 0 10\r\n0123456789\r\nEND\r\n", 31, &lim, 0, 0, out,
                sizeof out);
    assert_string_equal(out, "VALUE k 0 10|END*");
    frame_reply(WN_MC_GET, "VALUE k 0 11\r\n", 14, &lim, 0, 0, out, sizeof out);
    assert_string_equal(out, "!ETOOBIG");

    char line[80];
    memset(line, 'x', sizeof line);
    memcpy(line, "SERVER_ERROR ", 13);
    line[62] = '\r';
    line[63] = '\n';
    frame_reply(WN_MC_SET, line, 64, &lim, 0, 0, out, sizeof out);
    assert_true(strncmp(out, "SERVER_ERROR xxx", 16) == 0);
    memset(line + 13, 'x', sizeof line - 13);
    line[63] = '\r';
    line[64] = '\n';
    frame_reply(WN_MC_SET, line, 65, &lim, 0, 0, out, sizeof out);
    assert_string_equal(out, "!ETOOBIG");
    frame_reply(WN_MC_SET, line, 64, &lim, 0, 1, out, sizeof out);
    assert_string_equal(out, "!ETOOBIG");
    frame_reply(WN_MC_SET, line, 63, &lim, 0, 1, out, sizeof out);
    assert_string_equal(out, "+EAGAIN");

    /* after an error the parser starts clean */
    wn_mc_rsp_parser_t p;
    wn_mc_rsp_parser_init(&p, NULL);
    wn_mc_response_t r;
    assert_int_equal(wn_mc_response_parse(&p, WN_MC_GET, "VALUE k 0 1\r\n", 13, &r), 13);
    assert_false(r.done);
    assert_int_equal(wn_mc_response_parse(&p, WN_MC_GET, "STORED\r\n", 8, &r), WN_EPROTO);
    assert_int_equal(wn_mc_response_parse(&p, WN_MC_STATS, "RESET\r\n", 7, &r), 7);
    assert_true(r.done);
}

/* ---- composer ---------------------------------------------------------- */

static void test_compose_retrieval(void **state)
{
    (void)state;
    static const char line[] = "get  alpha beta   gamma\r\n";
    wn_mc_request_t r;
    assert_int_equal(parse_once(line, sizeof line - 1, NULL, &r), (int)sizeof line - 1);
    wn_mc_span_t keys[3];
    uint32_t cursor = 0;
    for (int i = 0; i < 3; i++)
        assert_true(wn_mc_key_next(line, &r, &cursor, &keys[i]));

    /* a fragment with the first and last key */
    wn_mc_span_t frag[2] = {keys[0], keys[2]};
    char dst[64];
    assert_int_equal(wn_mc_retrieval_head_size(line, &r, frag, NULL, 2), 17);
    assert_int_equal(wn_mc_retrieval_head_compose(dst, sizeof dst, line, &r, frag, NULL, 2), 17);
    assert_memory_equal(dst, "get alpha gamma\r\n", 17);

    /* exact capacity fits; one byte less leaves dst untouched */
    memset(dst, '#', sizeof dst);
    assert_int_equal(wn_mc_retrieval_head_compose(dst, 17, line, &r, frag, NULL, 2), 17);
    memset(dst, '#', sizeof dst);
    assert_int_equal(wn_mc_retrieval_head_compose(dst, 16, line, &r, frag, NULL, 2), WN_ETOOBIG);
    assert_int_equal(dst[0], '#');
    assert_int_equal(wn_mc_retrieval_head_compose(dst, sizeof dst, line, &r, frag, NULL, 0), WN_EINVAL);

    /* the composed head parses back to the same keys */
    int n = wn_mc_retrieval_head_compose(dst, sizeof dst, line, &r, keys, NULL, 3);
    assert_int_equal(n, 22);
    assert_memory_equal(dst, "get alpha beta gamma\r\n", 22);
    wn_mc_request_t back;
    assert_int_equal(parse_once(dst, (size_t)n, NULL, &back), n);
    assert_int_equal(back.cmd, WN_MC_GET);
    assert_int_equal(back.nkeys, 3);

    /* gats carries the exptime as memcached read it, in decimal */
    static const char gline[] = "gats +30 a b\r\n";
    assert_int_equal(parse_once(gline, sizeof gline - 1, NULL, &r), (int)sizeof gline - 1);
    cursor = 0;
    assert_true(wn_mc_key_next(gline, &r, &cursor, &keys[0]));
    assert_true(wn_mc_key_next(gline, &r, &cursor, &keys[1]));
    assert_int_equal(wn_mc_retrieval_head_size(gline, &r, NULL, NULL, 0), 9);
    n = wn_mc_retrieval_head_compose(dst, sizeof dst, gline, &r, &keys[1], NULL, 1);
    assert_int_equal(n, 11);
    assert_memory_equal(dst, "gats 30 b\r\n", 11);
    assert_int_equal(parse_once(dst, (size_t)n, NULL, &back), n);
    assert_int_equal(back.cmd, WN_MC_GATS);
    assert_int_equal(back.exptime, 30);

    /* not a retrieval */
    assert_int_equal(parse_once("delete k\r\n", 10, NULL, &r), 10);
    assert_int_equal(wn_mc_retrieval_head_size("delete k\r\n", &r, keys, NULL, 1), 0);
    assert_int_equal(wn_mc_retrieval_head_compose(dst, sizeof dst, "delete k\r\n", &r, keys, NULL, 1),
                     WN_EINVAL);
}

/* A noreply request goes to the server without its noreply token, composed
 * from the tokens however the client spaced them. */
static void test_compose_without_noreply(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"set k 0 0 1 noreply\r\n", "set k 0 0 1\r\n"},
        {"  set   k  0 0 1   noreply  \r\n", "set k 0 0 1\r\n"},
        {"delete k noreply\n", "delete k\r\n"},
        {"incr n 5 noreply\r\n", "incr n 5\r\n"},
        {"cas k 1 2 3 99 noreply\r\n", "cas k 1 2 3 99\r\n"},
        {"flush_all 10 noreply\r\n", "flush_all 10\r\n"},
    };
    for (size_t i = 0; i < WN_ARRAY_SIZE(cases); i++) {
        wn_mc_request_t r;
        size_t n = strlen(cases[i].in);
        assert_int_equal(parse_once(cases[i].in, n, NULL, &r), (int)n);
        assert_true(r.noreply);
        char dst[128];
        int len = wn_mc_compose_without_noreply(dst, sizeof dst, cases[i].in, &r);
        assert_int_equal(len, (int)strlen(cases[i].out));
        assert_memory_equal(dst, cases[i].out, (size_t)len);
        /* it fits in line_len + 2 and not in one byte less than it needs */
        assert_true((size_t)len <= r.line_len + 2);
        assert_int_equal(wn_mc_compose_without_noreply(dst, (size_t)len - 1, cases[i].in, &r),
                         WN_ETOOBIG);
    }
    /* 400 spaces in the head: the composed head has none of them */
    char line[512];
    int n = snprintf(line, sizeof line, "set%*sk 0 0 1 noreply\r\n", 400, "");
    wn_mc_request_t r;
    assert_int_equal(parse_once(line, (size_t)n, NULL, &r), n);
    char dst[512];
    int len = wn_mc_compose_without_noreply(dst, sizeof dst, line, &r);
    assert_int_equal(len, 13);
    assert_memory_equal(dst, "set k 0 0 1\r\n", 13);
    /* not a noreply line */
    assert_int_equal(parse_once("set k 0 0 1\r\n", 13, NULL, &r), 13);
    assert_int_equal(wn_mc_compose_without_noreply(dst, sizeof dst, "set k 0 0 1\r\n", &r),
                     WN_EINVAL);
}

/* A line memcached could not take as sent goes to the server rebuilt from
 * what memcached reads in it: same command, same numbers. */
static void test_compose_canonical(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"set k 0 0 1\r\n", "set k 0 0 1\r\n"},
        {"set   k  00007 -0001 +3   noreply \r\n", "set k 7 -1 3\r\n"},
        {"set k 4294967297 4294967396 3 junk\r\n", "set k 1 100 3\r\n"},
        {"add k 1 2 3\r\n", "add k 1 2 3\r\n"},
        {"replace k 1 2 3\r\n", "replace k 1 2 3\r\n"},
        {"append k 1 2 3\r\n", "append k 1 2 3\r\n"},
        {"prepend k 1 2 3 noreply\r\n", "prepend k 1 2 3\r\n"},
        {"cas k 1 2 3 00018446744073709551615\r\n", "cas k 1 2 3 18446744073709551615\r\n"},
        {"incr  k  +0005\r\n", "incr k 5\r\n"},
        {"decr k 7 noreply\r\n", "decr k 7\r\n"},
        {"touch k -0\r\n", "touch k 0\r\n"},
        {"delete k 0 noreply\r\n", "delete k\r\n"},
        {"delete k\r\n", "delete k\r\n"},
        {"flush_all\r\n", "flush_all\r\n"},
        {"flush_all noreply\r\n", "flush_all\r\n"},
        {"flush_all 0010 noreply\r\n", "flush_all 10\r\n"},
        {"verbosity 0001\r\n", "verbosity 1\r\n"},
        {"version x y z\r\n", "version\r\n"},
    };
    for (size_t i = 0; i < WN_ARRAY_SIZE(cases); i++) {
        size_t n = strlen(cases[i].in);
        wn_mc_request_t r;
        assert_int_equal(parse_once(cases[i].in, n, NULL, &r), (int)n);
        char dst[WN_MC_CANONICAL_MAX];
        int len = wn_mc_compose_canonical(dst, sizeof dst, cases[i].in, &r);
        if (len < 0 || (size_t)len != strlen(cases[i].out) || memcmp(dst, cases[i].out, (size_t)len))
            fail_msg("'%s': composed %d '%.*s', want '%s'", cases[i].in, len, len < 0 ? 0 : len,
                     dst, cases[i].out);
        /* too small: untouched, refused */
        assert_int_equal(wn_mc_compose_canonical(dst, (size_t)len - 1, cases[i].in, &r),
                         WN_ETOOBIG);
    }
    /* the longest one fits the bound */
    const wn_mc_limits_t lim = {.max_line = WN_MC_LINE_MAX, .max_value = INT32_MAX - 2};
    char line[512];
    int n = snprintf(line, sizeof line, "prepend " A250 " 4294967295 -2147483648 2147483645 "
                                        "noreply\r\n");
    wn_mc_request_t r;
    assert_int_equal(parse_once(line, (size_t)n, &lim, &r), n);
    char dst[WN_MC_CANONICAL_MAX];
    assert_true(wn_mc_compose_canonical(dst, sizeof dst, line, &r) > 0);
    n = snprintf(line, sizeof line, "cas " A250 " 4294967295 -2147483648 2147483645 "
                                    "18446744073709551615 noreply\r\n");
    assert_int_equal(parse_once(line, (size_t)n, &lim, &r), n);
    assert_true(wn_mc_compose_canonical(dst, sizeof dst, line, &r) > 0);
    /* retrievals and unknown words have heads of their own, or none */
    assert_int_equal(parse_once("get a\r\n", 7, NULL, &r), 7);
    assert_int_equal(wn_mc_compose_canonical(dst, sizeof dst, "get a\r\n", &r), WN_EINVAL);
}

/* `stats <args>`: memcached 1.6.18's replies, measured, for a memcached
 * holding nothing; the rows marked as walnut's differ from a busy one. */
static void test_stats_args(void **state)
{
    (void)state;
    static const struct {
        const char *args, *reply;
    } cases[] = {
        {"reset", "RESET\r\n"},
        {"reset noreply", "RESET\r\n"},
        {"slabs", "STAT active_slabs 0\r\nSTAT total_malloced 0\r\nEND\r\n"},
        {"slabs extra", "STAT active_slabs 0\r\nSTAT total_malloced 0\r\nEND\r\n"},
        {"items", "END\r\n"},
        {"settings", "END\r\n"},    /* walnut's: a memcached lists its settings */
        {"conns", "END\r\n"},       /* walnut's: a memcached lists its connections */
        {"extstore", "END\r\n"},
        {"sizes", "STAT sizes_status disabled\r\nEND\r\n"},
        {"sizes_disable", "STAT sizes_status disabled\r\n"},
        /* walnut's: memcached answers "STAT sizes_status enabled" */
        {"sizes_enable", "STAT sizes_status error\r\nSTAT sizes_error not_supported\r\n"},
        {"detail on", "OK\r\n"},
        {"detail off", "OK\r\n"},
        {"detail on noreply", "OK\r\n"},
        {"detail dump", "END\r\n"},
        {"detail dump x", "END\r\n"},
        {"detail", "CLIENT_ERROR usage: stats detail on|off|dump\r\n"},
        {"detail bogus", "CLIENT_ERROR usage: stats detail on|off|dump\r\n"},
        {"cachedump 1 1", "END\r\n"},
        {"cachedump 0 0", "END\r\n"},
        {"cachedump 63 1", "END\r\n"},
        {"cachedump 4294967296 1", "END\r\n"},
        {"cachedump +1 1", "END\r\n"},
        {"cachedump 1  1 x", "END\r\n"},
        {"cachedump 64 1", "CLIENT_ERROR Illegal slab id\r\n"},
        {"cachedump -1 1", "CLIENT_ERROR bad command line format\r\n"},
        {"cachedump 1 x", "CLIENT_ERROR bad command line format\r\n"},
        {"cachedump 1a 1", "CLIENT_ERROR bad command line format\r\n"},
        {"cachedump 1", "CLIENT_ERROR bad command line\r\n"},
        {"cachedump", "CLIENT_ERROR bad command line\r\n"},
        {"bogus", "ERROR\r\n"},
        {"noreply", "ERROR\r\n"},
        {"proxy", "ERROR\r\n"},
        {"SLABS", "ERROR\r\n"},
    };
    for (size_t i = 0; i < WN_ARRAY_SIZE(cases); i++) {
        size_t len;
        const char *got = wn_mc_stats_args_reply(cases[i].args, strlen(cases[i].args), &len);
        if (len != strlen(got) || strcmp(got, cases[i].reply) != 0)
            fail_msg("stats %s: '%s', want '%s'", cases[i].args, got, cases[i].reply);
    }
    /* through the parser: the args span stops at a NUL, as memcached's line does */
    static const char line[] = "stats  reset\0junk\r\n";
    wn_mc_request_t r;
    assert_int_equal(parse_once(line, sizeof line - 1, NULL, &r), (int)sizeof line - 1);
    assert_string_equal(wn_mc_stats_args_reply(line + r.arg.off, r.arg.len, NULL), "RESET\r\n");
}

/* Retrieval lines may be as long as max_retrieval_line; others stop at max_line. */
static void test_retrieval_line_limit(void **state)
{
    (void)state;
    const wn_mc_limits_t lim = {.max_line = 128, .max_value = 1024, .max_retrieval_line = 4096};
    char line[4200];
    size_t o = 0;
    o += (size_t)snprintf(line + o, sizeof line - o, "get");
    while (o < 3000)
        o += (size_t)snprintf(line + o, sizeof line - o, " key%04zu", o);
    o += (size_t)snprintf(line + o, sizeof line - o, "\r\n");
    wn_mc_request_t r;
    assert_int_equal(parse_once(line, o, &lim, &r), (int)o);
    assert_int_equal(r.cmd, WN_MC_GET);
    assert_true(r.nkeys > 300);
    /* the same length as another command: too long, closed */
    memcpy(line, "xyz", 3);
    assert_int_equal(parse_once(line, o, &lim, &r), WN_ETOOBIG);
    assert_int_equal(r.after, WN_MC_AFTER_CLOSE);
    /* past the retrieval limit: too long as well */
    memset(line, 'k', sizeof line);
    memcpy(line, "gets ", 5);
    assert_int_equal(parse_once(line, 4096, &lim, &r), WN_ETOOBIG);
    assert_int_equal(parse_once(line, 4095, &lim, &r), WN_EAGAIN);
}


/* ---- streamed retrieval lines (mc_stream.c) ------------------------------- */

typedef struct streamed {
    char keys[8192]; /* every key handed out, each followed by '|' */
    size_t keys_len;
    uint32_t nkeys;
    wn_mc_reply_t verdict;
    bool ended;
    int32_t exptime;
} streamed_t;

/* Stream `line` (n bytes) in pieces cut at the `cuts` offsets (ascending),
 * as the worker does: what a call does not take is given again with more. */
static void stream_line(const char *line, size_t n, const size_t *cuts, size_t ncuts,
                        uint32_t max_keys, streamed_t *out)
{
    memset(out, 0, sizeof(*out));
    wn_mc_stream_t st;
    int took = wn_mc_stream_begin(&st, line, n, max_keys);
    assert_true(took > 0);
    size_t pos = (size_t)took, avail = pos;
    for (size_t c = 0; c <= ncuts && !st.ended; c++) {
        avail = c < ncuts ? (cuts[c] > avail ? cuts[c] : avail) : n;
        for (;;) {
            wn_mc_span_t span;
            uint32_t nk;
            int t = wn_mc_stream_take(&st, line + pos, avail - pos, &span, &nk);
            assert_true(t >= 0 && (size_t)t <= avail - pos);
            if (nk > 0) {
                assert_true(span.off + span.len <= (uint32_t)t);
                /* the span holds exactly nk space-separated keys */
                uint32_t count = 0;
                size_t i = pos + span.off, end = pos + span.off + span.len;
                while (i < end) {
                    while (i < end && line[i] == ' ')
                        i++;
                    size_t k = i;
                    while (i < end && line[i] != ' ')
                        i++;
                    if (i > k) {
                        assert_true(out->keys_len + (i - k) + 1 < sizeof(out->keys));
                        memcpy(out->keys + out->keys_len, line + k, i - k);
                        out->keys_len += i - k;
                        out->keys[out->keys_len++] = '|';
                        count++;
                    }
                }
                assert_int_equal(count, nk);
                out->nkeys += nk;
            }
            pos += (size_t)t;
            if (st.ended || t == 0)
                break;
        }
    }
    assert_int_equal(pos, n); /* the whole line, its "\n" included, is taken */
    assert_true(st.ended);
    assert_int_equal(st.nkeys, out->nkeys);
    out->verdict = st.verdict;
    out->ended = st.ended;
    out->exptime = st.exptime;
}

/* The same line parsed whole: its keys ('|' after each) and its verdict. */
static wn_mc_reply_t whole_line(const char *line, size_t n, char *keys, size_t *keys_len,
                                uint32_t *nkeys, int32_t *exptime)
{
    wn_mc_limits_t lim = {.max_line = (uint32_t)n + 1, .max_value = 1024,
                          .max_retrieval_line = (uint32_t)n + 1};
    wn_mc_request_t r;
    int rc = parse_once(line, n, &lim, &r);
    assert_true(rc == (int)n || rc == WN_EPROTO);
    *keys_len = 0;
    *nkeys = 0;
    *exptime = r.exptime;
    uint32_t cursor = 0;
    wn_mc_span_t k;
    while (*nkeys < r.nkeys && wn_mc_key_next(line, &r, &cursor, &k)) {
        memcpy(keys + *keys_len, line + k.off, k.len);
        *keys_len += k.len;
        keys[(*keys_len)++] = '|';
        (*nkeys)++;
    }
    return rc > 0 ? WN_MC_REPLY_NONE : r.reply;
}

static uint32_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(*s >> 33);
}

/* Random retrieval lines, streamed in random pieces, ask for the same keys
 * and get the same verdict as parsed whole: spaces, "\r" inside tokens,
 * "\r\n", "\n" and "\r\r\n" ends, NUL, keys of 250 and 251 bytes, gat with
 * good and bad exptimes, no keys at all. */
static void test_stream_matches_whole_line(void **state)
{
    (void)state;
    static const char *words[] = {"get", "gets", "gat", "gats"};
    static const char *exptimes[] = {"10", "-1", "0", "abc", "99999999999", "+7", "1x"};
    uint64_t seed = 12345;
    char line[6000];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = 0;
        size_t lead = rnd(&seed) % 4 == 0 ? rnd(&seed) % 65 : 0;
        memset(line, ' ', lead);
        n = lead;
        const char *word = words[rnd(&seed) % 4];
        n += (size_t)sprintf(line + n, "%s ", word);
        bool gat = word[2] == 't';
        if (gat && rnd(&seed) % 8 != 0)
            n += (size_t)sprintf(line + n, "%s ", exptimes[rnd(&seed) % 7]);
        uint32_t ntok = rnd(&seed) % 12;
        for (uint32_t t = 0; t < ntok; t++) {
            uint32_t pick = rnd(&seed) % 20;
            size_t len = pick == 0 ? 250 : pick == 1 ? 251 : 1 + rnd(&seed) % 12;
            for (size_t i = 0; i < len; i++)
                line[n + i] = (char)('a' + rnd(&seed) % 26);
            if (pick == 2)
                line[n + len / 2] = '\r';
            if (pick == 3 && rnd(&seed) % 3 == 0)
                line[n + len / 2] = '\0';
            n += len;
            size_t spaces = 1 + rnd(&seed) % 3;
            if (t + 1 == ntok && rnd(&seed) % 2 == 0)
                spaces = 0;
            memset(line + n, ' ', spaces);
            n += spaces;
        }
        switch (rnd(&seed) % 4) {
        case 0:
            n += (size_t)sprintf(line + n, "\n");
            break;
        case 1:
            n += (size_t)sprintf(line + n, "\r\r\n");
            break;
        default:
            n += (size_t)sprintf(line + n, "\r\n");
            break;
        }
        char wkeys[8192];
        size_t wlen;
        uint32_t wn;
        int32_t wexp;
        wn_mc_reply_t wv = whole_line(line, n, wkeys, &wlen, &wn, &wexp);

        size_t cuts[6];
        size_t ncuts = rnd(&seed) % 6;
        for (size_t c = 0; c < ncuts; c++)
            cuts[c] = rnd(&seed) % (n + 1);
        for (size_t a = 0; a < ncuts; a++) /* ascending */
            for (size_t b = a + 1; b < ncuts; b++)
                if (cuts[b] < cuts[a]) {
                    size_t x = cuts[a];
                    cuts[a] = cuts[b];
                    cuts[b] = x;
                }
        streamed_t sv;
        stream_line(line, n, cuts, ncuts, 1000, &sv);
        if (sv.verdict != wv || sv.nkeys != wn || sv.keys_len != wlen ||
            memcmp(sv.keys, wkeys, wlen) != 0)
            fail_msg("iteration %d: line %zu bytes: whole %d (%u keys), streamed %d (%u keys)",
                     iter, n, (int)wv, wn, (int)sv.verdict, sv.nkeys);
        if (gat && wv == WN_MC_REPLY_NONE)
            assert_int_equal(sv.exptime, wexp);
    }
}

/* line (n bytes) parsed whole, then streamed in three pieces cut at c and
 * at c + 1 + c % spread, for each c in [from, to): the same keys, verdict
 * and exptime every time. Returns the whole parse's verdict, *exptime its
 * exptime. */
static wn_mc_reply_t stream_cuts_match_whole(const char *line, size_t n, size_t from, size_t to,
                                             size_t spread, int32_t *exptime)
{
    char wkeys[8192];
    size_t wlen;
    uint32_t wn;
    wn_mc_reply_t wv = whole_line(line, n, wkeys, &wlen, &wn, exptime);
    for (size_t cut = from; cut < to; cut++) {
        size_t cuts[2] = {cut, cut + 1 + cut % spread};
        streamed_t sv;
        stream_line(line, n, cuts, 2, 10, &sv);
        if (sv.verdict != wv || sv.nkeys != wn || sv.keys_len != wlen ||
            memcmp(sv.keys, wkeys, wlen) != 0)
            fail_msg("'%.12s...' cut %zu: whole %d (%u keys), streamed %d (%u keys)", line, cut,
                     (int)wv, wn, (int)sv.verdict, sv.nkeys);
        if (wv == WN_MC_REPLY_NONE && sv.exptime != *exptime)
            fail_msg("'%.12s...' cut %zu: exptime %d streamed, %d whole", line, cut, sv.exptime,
                     *exptime);
    }
    return wv;
}

/* A gat exptime token longer than a key, cut by the end of what arrived,
 * reads as when the line is whole (memcached's strtol stops at the first
 * white-space byte after the digits): "-1\r<300 bytes>" is -1, "12\v<300>"
 * is 12, 300 digits are out of range; the keys after it are the same. */
static void test_stream_long_exptime_cut(void **state)
{
    (void)state;
    static const char *starts[] = {"-1\r", "12\v", "7\t", "9", "x"};
    char line[1024];
    for (size_t e = 0; e < sizeof(starts) / sizeof(starts[0]); e++) {
        size_t n = (size_t)sprintf(line, "gats %s", starts[e]);
        size_t tok = 5;
        memset(line + n, e == 3 ? '1' : 'q', 300);
        n += 300;
        n += (size_t)sprintf(line + n, " alpha beta\r\n");
        int32_t wexp;
        assert_int_equal(stream_cuts_match_whole(line, n, tok + 1, tok + 310, 1, &wexp),
                         e < 3 ? WN_MC_REPLY_NONE : WN_MC_REPLY_BAD_EXPTIME);
    }
}

/* A gat exptime token whose start decides nothing yet (white space, a
 * sign, zeros: 300 bytes of them) is read on as it arrives, as strtol reads
 * it whole. Streamed, it was judged by what had come: 300 tabs then 5 were
 * no number, 300 zeros then 100 were 0 and "-" with 300 zeros then 1 was 0
 * (never expire, for expire now). */
static void test_stream_long_exptime_read_as_it_comes(void **state)
{
    (void)state;
    static const struct {
        const char *head;
        char fill;
        const char *tail;
        wn_mc_reply_t verdict;
        int32_t exptime;
    } cases[] = {
        {"", '\t', "5", WN_MC_REPLY_NONE, 5},
        {"", '0', "100", WN_MC_REPLY_NONE, 100},
        {"-", '0', "1", WN_MC_REPLY_NONE, -1},
        {"\t+", '0', "42\vjunk", WN_MC_REPLY_NONE, 42},
        {"", '\v', "", WN_MC_REPLY_BAD_EXPTIME, 0},
        {"", '0', "x", WN_MC_REPLY_BAD_EXPTIME, 0},
        {"+", '\t', "5", WN_MC_REPLY_BAD_EXPTIME, 0},
        {"9", '9', "", WN_MC_REPLY_BAD_EXPTIME, 0}, /* past 64 bits */
    };
    char line[1024];
    for (size_t e = 0; e < sizeof(cases) / sizeof(cases[0]); e++) {
        size_t n = (size_t)sprintf(line, "gat %s", cases[e].head);
        memset(line + n, cases[e].fill, 300);
        n += 300;
        n += (size_t)sprintf(line + n, "%s alpha beta\r\n", cases[e].tail);
        int32_t wexp;
        assert_int_equal(stream_cuts_match_whole(line, n, 5, n, 7, &wexp), cases[e].verdict);
        if (cases[e].verdict == WN_MC_REPLY_NONE)
            assert_int_equal(wexp, cases[e].exptime);
    }
}

/* Every byte a piece of its own; and the bound on keys. */
static void test_stream_bytewise_and_bound(void **state)
{
    (void)state;
    char line[4096];
    size_t n = (size_t)sprintf(line, "gat 42 ");
    for (int i = 0; i < 300; i++)
        n += (size_t)sprintf(line + n, "k%d ", i);
    n += (size_t)sprintf(line + n, "\r\n");
    size_t cuts[4096];
    for (size_t i = 0; i < n; i++)
        cuts[i] = i + 1;
    streamed_t sv;
    stream_line(line, n, cuts, n, 1000, &sv);
    assert_int_equal(sv.verdict, WN_MC_REPLY_NONE);
    assert_int_equal(sv.nkeys, 300);
    assert_int_equal(sv.exptime, 42);
    /* 300 keys against a bound of 299: the 299 go out, then the verdict */
    stream_line(line, n, cuts, n, 299, &sv);
    assert_int_equal(sv.verdict, WN_MC_REPLY_TOO_MANY_KEYS);
    assert_int_equal(sv.nkeys, 299);
    /* a token too long to be a key is refused before its end arrives */
    wn_mc_stream_t st;
    memset(line, 'x', sizeof(line));
    memcpy(line, "get ", 4);
    assert_int_equal(wn_mc_stream_begin(&st, line, 300, 10), 4);
    wn_mc_span_t span;
    uint32_t nk;
    assert_int_equal(wn_mc_stream_take(&st, line + 4, 200, &span, &nk), 0); /* cut: later */
    assert_int_equal(wn_mc_stream_take(&st, line + 4, 260, &span, &nk), 260);
    assert_int_equal(st.verdict, WN_MC_REPLY_BAD_FORMAT);
    assert_false(st.ended);
    assert_int_equal(wn_mc_stream_take(&st, "yy\r\n", 4, &span, &nk), 4);
    assert_true(st.ended);
    /* not a retrieval */
    assert_int_equal(wn_mc_stream_begin(&st, "set k 0 0 1", 11, 10), WN_EPROTO);
    assert_int_equal(wn_mc_stream_begin(&st, "bget k", 6, 10), WN_EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_golden),
        cmocka_unit_test(test_request_split),
        cmocka_unit_test(test_request_many_keys),
        cmocka_unit_test(test_request_line_limit),
        cmocka_unit_test(test_request_resume_linear),
        cmocka_unit_test(test_request_pipeline),
        cmocka_unit_test(test_request_streams),
        cmocka_unit_test(test_reply_texts),
        cmocka_unit_test(test_response_golden),
        cmocka_unit_test(test_response_split),
        cmocka_unit_test(test_response_validity),
        cmocka_unit_test(test_response_limits),
        cmocka_unit_test(test_compose_retrieval),
        cmocka_unit_test(test_compose_without_noreply),
        cmocka_unit_test(test_retrieval_line_limit),
        cmocka_unit_test(test_compose_canonical),
        cmocka_unit_test(test_stats_args),
        cmocka_unit_test(test_stream_matches_whole_line),
        cmocka_unit_test(test_stream_bytewise_and_bound),
        cmocka_unit_test(test_stream_long_exptime_cut),
        cmocka_unit_test(test_stream_long_exptime_read_as_it_comes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
