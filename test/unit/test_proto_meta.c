/*
 * test_proto_meta.c: the memcached meta protocol parsers and composer.
 * Golden tables whose expected replies are memcached 1.6.18's own bytes,
 * measured with raw sockets on a fresh connection (each request followed by
 * "mn\r\n", whose MN is left out here); the same inputs fed split at every
 * point and byte by byte from exactly-sized heap copies (ASan catches any
 * over-read); base64 keys; limits at their edges. Replies, the quiet rule
 * and captured traffic: test_proto_meta_reply.c.
 */
#include "walnut/proto_meta.h"

#include "walnut/core.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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

/* ---- request golden table ---------------------------------------------- */

typedef struct req_case {
    const char *in;
    size_t len;
    int rc; /* 0: forwarded (parse returns line_len) */
    wn_meta_cmd_t cmd;
    const char *key;     /* forwarded: the key as sent */
    const char *decoded; /* forwarded with b: the decoded key */
    bool quiet;
    const char *opaque;
    const char *stripped; /* quiet: the line without q */
    bool long_o;          /* an O over 32 bytes, forwarded (mg, ma) */
    char mode;
    uint32_t bytes;        /* ms */
    wn_meta_err_t err;     /* rejected */
    wn_mc_after_t after;
    uint32_t nflags;
    /* memcached 1.6.18's reply to `in` (for rejected lines, the local
     * answer); NULL: not recorded. */
    const char *mc;
} req_case_t;

#define IN(s) .in = (s), .len = sizeof(s) - 1
#define FWD(c) .rc = 0, .cmd = WN_META_##c
#define REJ(c, e) .rc = WN_EPROTO, .cmd = WN_META_##c, .err = WN_META_ERR_##e
#define SWALLOW .after = WN_MC_AFTER_SWALLOW

#define A10 "aaaaaaaaaa"
#define A50 A10 A10 A10 A10 A10
#define A250 A50 A50 A50 A50 A50
#define O31 "Oxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define O32 O31 "x"

#define E_ERROR "ERROR\r\n"
#define E_FORMAT "CLIENT_ERROR bad command line format\r\n"

/* clang-format off */
static const req_case_t req_cases[] = {
    /* mn takes nothing and ignores everything */
    {IN("mn\r\n"), FWD(MN), .mc = "MN\r\n"},
    {IN("mn q\r\n"), FWD(MN), .mc = "MN\r\n"},
    {IN("mn foo !\n"), FWD(MN), .mc = "MN\r\n"},
    /* an unknown two-letter m word; no key */
    {IN("mx k\r\n"), REJ(NONE, ERROR), .mc = E_ERROR},
    {IN("mg\r\n"), REJ(MG, ERROR), .mc = E_ERROR},
    {IN("ms\r\n"), REJ(MS, ERROR), .mc = E_ERROR},
    {IN("md\r\n"), REJ(MD, ERROR), .mc = E_ERROR},
    {IN("ma\r\n"), REJ(MA, ERROR), .mc = E_ERROR},
    {IN("me\r\n"), REJ(ME, BAD_FORMAT), .mc = E_FORMAT},

    /* mg */
    {IN("mg foo v\r\n"), FWD(MG), .key = "foo", .nflags = 1, .mc = "EN\r\n"},
    {IN("mg foo v q\r\n"), FWD(MG), .key = "foo", .quiet = true, .stripped = "mg foo v\r\n", .nflags = 2, .mc = ""},
    {IN("mg foo q v\n"), FWD(MG), .key = "foo", .quiet = true, .stripped = "mg foo v\n", .nflags = 2},
    {IN("mg  foo  q  v  \r\n"), FWD(MG), .key = "foo", .quiet = true, .stripped = "mg  foo   v  \r\n", .nflags = 2},
    {IN("mg foo qxyz\r\n"), FWD(MG), .key = "foo", .quiet = true, .stripped = "mg foo\r\n", .nflags = 1, .mc = ""},
    /* a key ending in CR stays one when q goes (found by fuzz_mc_meta) */
    {IN("mg foo\r q\n"), FWD(MG), .key = "foo\r", .quiet = true, .stripped = "mg foo\r\r\n", .nflags = 1},
    {IN("mg foo\r v q\n"), FWD(MG), .key = "foo\r", .quiet = true, .stripped = "mg foo\r v\n", .nflags = 2},
    {IN("mg miss v q O1 k\r\n"), FWD(MG), .key = "miss", .quiet = true, .opaque = "O1", .stripped = "mg miss v O1 k\r\n", .nflags = 4, .mc = ""},
    {IN("mg k v k c f h l s t u O1 P L q I T1 N1 R1\r\n"), FWD(MG), .key = "k", .quiet = true, .opaque = "O1",
     .stripped = "mg k v k c f h l s t u O1 P L I T1 N1 R1\r\n", .nflags = 17},
    {IN("mg k v k c f h l s t u O1 P L q I T1 N1 R1 E\r\n"), REJ(MG, MG_TOO_MANY), .mc = "CLIENT_ERROR options flags are too long\r\n"},
    {IN("mg " A250 " v\r\n"), FWD(MG), .key = A250, .nflags = 1, .mc = "EN\r\n"},
    {IN("mg " A250 "a v\r\n"), REJ(MG, BAD_FORMAT), .mc = E_FORMAT},
    {IN("mg k\tv\r\n"), FWD(MG), .key = "k\tv", .mc = "EN\r\n"},
    {IN("mg k v\0q\r\n"), FWD(MG), .key = "k", .nflags = 1},
    {IN("mg k " O31 "\r\n"), FWD(MG), .key = "k", .opaque = O31, .nflags = 1},
    /* memcached runs mg and ma with an O over 32 bytes, then answers its error (q or not) */
    {IN("mg k v " O32 "\r\n"), FWD(MG), .key = "k", .opaque = O32, .long_o = true, .nflags = 2, .mc = "CLIENT_ERROR opaque token too long\r\n"},
    {IN("mg miss v q " O32 "\r\n"), FWD(MG), .key = "miss", .quiet = true, .opaque = O32, .long_o = true, .stripped = "mg miss v " O32 "\r\n", .nflags = 3, .mc = "CLIENT_ERROR opaque token too long\r\n"},
    {IN("mg hit !\r\n"), REJ(MG, INVALID_FLAG), .mc = "CLIENT_ERROR invalid flag\r\n"},
    {IN("mg hit q !\r\n"), REJ(MG, INVALID_FLAG), .mc = "CLIENT_ERROR invalid flag\r\n"},
    {IN("mg k S1\r\n"), REJ(MG, INVALID_FLAG), .mc = "CLIENT_ERROR invalid flag\r\n"},
    {IN("mg k v v\r\n"), REJ(MG, DUPLICATE), .mc = "CLIENT_ERROR duplicate flag\r\n"},
    {IN("mg k vx vy\r\n"), REJ(MG, DUPLICATE), .mc = "CLIENT_ERROR duplicate flag\r\n"},
    {IN("mg k q q\r\n"), REJ(MG, DUPLICATE), .mc = "CLIENT_ERROR duplicate flag\r\n"},
    {IN("mg k v \xff\r\n"), REJ(MG, DUPLICATE), .mc = "CLIENT_ERROR duplicate flag\r\n"},
    {IN("mg k v \x7f\r\n"), REJ(MG, DUPLICATE), .mc = "CLIENT_ERROR duplicate flag\r\n"},
    {IN("mg k v \x80\r\n"), REJ(MG, DUPLICATE), .mc = "CLIENT_ERROR duplicate flag\r\n"},
    {IN("mg k T\r\n"), REJ(MG, BAD_TOKEN), .mc = "CLIENT_ERROR bad token in command line format\r\n"},
    {IN("mg k T5x\r\n"), REJ(MG, BAD_TOKEN), .mc = "CLIENT_ERROR bad token in command line format\r\n"},
    {IN("mg k T+5 v\r\n"), FWD(MG), .key = "k", .nflags = 2},
    {IN("mg k T5\tx v\r\n"), FWD(MG), .key = "k", .nflags = 2},
    {IN("mg k C-1\r\n"), REJ(MG, BAD_TOKEN), .mc = "CLIENT_ERROR bad token in command line format\r\n"},
    {IN("mg k F-1\r\n"), REJ(MG, BAD_FORMAT), .mc = E_FORMAT},
    {IN("mg k Fx\r\n"), REJ(MG, BAD_FORMAT), .mc = E_FORMAT},
    {IN("mg k Fx N1\r\n"), REJ(MG, BAD_FORMAT), .mc = E_FORMAT},
    {IN("mg k Nx Fx\r\n"), REJ(MG, BAD_TOKEN), .mc = "CLIENT_ERROR bad token in command line format\r\n"},
    {IN("mg k Nx !\r\n"), REJ(MG, INVALID_FLAG), .mc = "CLIENT_ERROR invalid flag\r\n"},
    {IN("mg k Nx v v\r\n"), REJ(MG, DUPLICATE), .mc = "CLIENT_ERROR duplicate flag\r\n"},
    {IN("mg k b Nx\r\n"), REJ(MG, BAD_TOKEN), .mc = "CLIENT_ERROR bad token in command line format\r\n"},
    {IN("mg fk D\r\n"), REJ(MG, BAD_DELTA), .mc = "CLIENT_ERROR invalid numeric delta value\r\n"},
    {IN("mg fk J\r\n"), REJ(MG, BAD_INITIAL), .mc = "CLIENT_ERROR invalid numeric initial value\r\n"},
    {IN("mg fk M\r\n"), REJ(MG, M_LENGTH), .mc = "CLIENT_ERROR incorrect length for M token\r\n"},
    {IN("mg fk MX\r\n"), FWD(MG), .key = "fk", .mode = 'X', .nflags = 1},
    /* base64 keys: memcached skips bytes outside the alphabet and stops
     * after the first padded group */
    {IN("mg Zm9v v O1 k b\r\n"), FWD(MG), .key = "Zm9v", .decoded = "foo", .opaque = "O1", .nflags = 4, .mc = "EN O1 kZm9v b\r\n"},
    {IN("mg Zm9v! v k b\r\n"), FWD(MG), .key = "Zm9v!", .decoded = "foo", .nflags = 3},
    {IN("mg Zm9vZg== v k b\r\n"), FWD(MG), .key = "Zm9vZg==", .decoded = "foof", .nflags = 3, .mc = "EN kZm9vZg== b\r\n"},
    {IN("mg Zg==Zm9v v k b\r\n"), FWD(MG), .key = "Zg==Zm9v", .decoded = "f", .nflags = 3, .mc = "EN kZg== b\r\n"},
    {IN("mg Z=g= b k\r\n"), FWD(MG), .key = "Z=g=", .decoded = "d", .nflags = 2, .mc = "EN kZA== b\r\n"},
    {IN("mg Zm9vZg v k b\r\n"), REJ(MG, DECODE_KEY), .mc = "CLIENT_ERROR error decoding key\r\n"},
    {IN("mg ==== b\r\n"), REJ(MG, DECODE_KEY), .mc = "CLIENT_ERROR error decoding key\r\n"},
    {IN("mg A=== b\r\n"), REJ(MG, DECODE_KEY), .mc = "CLIENT_ERROR error decoding key\r\n"},
    {IN("mg fk b\r\n"), REJ(MG, DECODE_KEY), .mc = "CLIENT_ERROR error decoding key\r\n"},

    /* ms: <key> <datalen> <flags>*; a readable length is always swallowed */
    {IN("ms foo 2\r\nhi\r\n"), FWD(MS), .key = "foo", .bytes = 2, .mc = "HD\r\n"},
    {IN("ms foo 2 q\r\nhi\r\n"), FWD(MS), .key = "foo", .bytes = 2, .quiet = true, .stripped = "ms foo 2\r\n", .nflags = 1, .mc = ""},
    {IN("ms k 0\r\n\r\n"), FWD(MS), .key = "k", .mc = "HD\r\n"},
    {IN("ms k 01\r\nx\r\n"), FWD(MS), .key = "k", .bytes = 1, .mc = "HD\r\n"},
    {IN("ms k +1\r\nx\r\n"), FWD(MS), .key = "k", .bytes = 1, .mc = "HD\r\n"},
    {IN("ms k 1 F4294967296\r\nx\r\n"), FWD(MS), .key = "k", .bytes = 1, .nflags = 1, .mc = "HD\r\n"},
    {IN("ms k 1 ME q\r\nx\r\n"), FWD(MS), .key = "k", .bytes = 1, .mode = 'E', .quiet = true, .stripped = "ms k 1 ME\r\n", .nflags = 2},
    {IN("ms k\r\nx\r\n"), REJ(MS, BAD_FORMAT), .mc = E_FORMAT E_ERROR},
    {IN("ms k x\r\nx\r\n"), REJ(MS, BAD_FORMAT), .mc = E_FORMAT E_ERROR},
    {IN("ms k -1\r\nx\r\n"), REJ(MS, BAD_FORMAT), .mc = E_FORMAT E_ERROR},
    {IN("ms k 1x\r\nx\r\n"), REJ(MS, BAD_FORMAT), .mc = E_FORMAT E_ERROR},
    /* memcached runs this value as a command (the second ERROR); walnut swallows it */
    {IN("ms " A250 "a 1\r\nx\r\n"), REJ(MS, BAD_FORMAT), SWALLOW, .bytes = 1, .mc = E_FORMAT E_ERROR},
    {IN("ms k 1 k c f h l s t u O1 P L I T1 N1 R1 F1\r\nx\r\n"), FWD(MS), .key = "k", .bytes = 1, .opaque = "O1", .nflags = 16, .mc = "HD kk c35 O1\r\n"},
    {IN("ms k 1 k c f h l s t u O1 P L I T1 N1 R1 F1 C1\r\nx\r\n"), REJ(MS, TOO_MANY), SWALLOW, .bytes = 1, .mc = "CLIENT_ERROR options flags too long\r\n" E_ERROR},
    {IN("ms k 1 !\r\nx\r\n"), REJ(MS, INVALID_FLAG), SWALLOW, .bytes = 1, .mc = "CLIENT_ERROR invalid flag\r\n"},
    {IN("ms k 1 M\r\nx\r\n"), REJ(MS, M_LENGTH), SWALLOW, .bytes = 1, .mc = "CLIENT_ERROR incorrect length for M token\r\n"},
    {IN("ms k 1 MX\r\nx\r\n"), REJ(MS, MS_MODE), SWALLOW, .bytes = 1, .mc = "CLIENT_ERROR invalid mode for ms M token\r\n"},
    {IN("ms k 1 " O31 "\r\nx\r\n"), FWD(MS), .key = "k", .bytes = 1, .opaque = O31, .nflags = 1, .mc = "HD " O31 "\r\n"},
    {IN("ms k 1 " O32 "\r\nx\r\n"), REJ(MS, OPAQUE_TOO_LONG), SWALLOW, .bytes = 1, .mc = "CLIENT_ERROR opaque token too long\r\n"},
    {IN("ms k 1 MX " O32 "\r\nx\r\n"), REJ(MS, MS_MODE), SWALLOW, .bytes = 1, .mc = "CLIENT_ERROR invalid mode for ms M token\r\n"},
    {IN("ms fk 1 b\r\nx\r\n"), REJ(MS, DECODE_KEY), SWALLOW, .bytes = 1, .mc = "CLIENT_ERROR error decoding key\r\n"},
    {IN("ms Zm9v 1 b\r\nx\r\n"), FWD(MS), .key = "Zm9v", .decoded = "foo", .bytes = 1, .nflags = 1, .mc = "HD\r\n"},
    /* walnut's default limit is the value size; memcached's item limit
     * counts its own overhead too, so it refuses this one itself */
    {IN("ms k 1048576\r\n"), FWD(MS), .key = "k", .bytes = 1048576},
    {IN("ms k 1048577\r\n"), .rc = WN_ETOOBIG, .cmd = WN_META_MS, .err = WN_META_ERR_TOO_LARGE, SWALLOW, .bytes = 1048577, .mc = "SERVER_ERROR object too large for cache\r\n"},
    {IN("ms k 2000000 q\r\n"), .rc = WN_ETOOBIG, .cmd = WN_META_MS, .err = WN_META_ERR_TOO_LARGE, SWALLOW, .bytes = 2000000, .nflags = 1, .mc = "SERVER_ERROR object too large for cache\r\n"},
    /* flags are checked before the size */
    {IN("ms k 2000000 !\r\n"), REJ(MS, INVALID_FLAG), SWALLOW, .bytes = 2000000, .nflags = 1, .mc = "CLIENT_ERROR invalid flag\r\n"},

    /* md, ma: every flag error reads "invalid or duplicate flag" */
    {IN("md k q\r\n"), FWD(MD), .key = "k", .quiet = true, .stripped = "md k\r\n", .nflags = 1},
    {IN("md k C999 q\r\n"), FWD(MD), .key = "k", .quiet = true, .stripped = "md k C999\r\n", .nflags = 2},
    {IN("md k x\r\n"), REJ(MD, INVALID_OR_DUP), .mc = "CLIENT_ERROR invalid or duplicate flag\r\n"},
    {IN("md k Nx\r\n"), REJ(MD, INVALID_OR_DUP), .mc = "CLIENT_ERROR invalid or duplicate flag\r\n"},
    {IN("md fk b\r\n"), REJ(MD, INVALID_OR_DUP), .mc = "CLIENT_ERROR invalid or duplicate flag\r\n"},
    {IN("md k MX\r\n"), FWD(MD), .key = "k", .mode = 'X', .nflags = 1, .mc = "NF\r\n"},
    {IN("md " A250 "a q\r\n"), REJ(MD, BAD_FORMAT), .mc = E_FORMAT},
    {IN("md k " O32 "\r\n"), REJ(MD, OPAQUE_TOO_LONG), .mc = "CLIENT_ERROR opaque token too long\r\n"},
    {IN("md k v k c f h l s t u O1 P L q I T1 N1 R1 E\r\n"), REJ(MD, TOO_MANY), .mc = "CLIENT_ERROR options flags too long\r\n"},
    {IN("ma num v q\r\n"), FWD(MA), .key = "num", .quiet = true, .stripped = "ma num v\r\n", .nflags = 2, .mc = ""},
    {IN("ma num q " O32 "\r\n"), FWD(MA), .key = "num", .quiet = true, .opaque = O32, .long_o = true, .stripped = "ma num " O32 "\r\n", .nflags = 2, .mc = "CLIENT_ERROR opaque token too long\r\n"},
    {IN("ma k Dx\r\n"), REJ(MA, INVALID_OR_DUP), .mc = "CLIENT_ERROR invalid or duplicate flag\r\n"},
    {IN("ma k D\r\n"), REJ(MA, INVALID_OR_DUP), .mc = "CLIENT_ERROR invalid or duplicate flag\r\n"},
    {IN("ma k MX\r\n"), REJ(MA, MA_MODE), .mc = "CLIENT_ERROR invalid mode for ma M token\r\n"},
    {IN("ma k M+ N0 v\r\n"), FWD(MA), .key = "k", .mode = '+', .nflags = 3, .mc = "VA 1\r\n0\r\n"},
    {IN("ma k M- v\r\n"), FWD(MA), .key = "k", .mode = '-', .nflags = 2},
    {IN("ma " A250 "a q\r\n"), REJ(MA, BAD_FORMAT), .mc = E_FORMAT},

    /* me: only an exact "b" second token is read; q means nothing */
    {IN("me nokey q\r\n"), FWD(ME), .key = "nokey", .mc = "EN\r\n"},
    {IN("me fk B\r\n"), FWD(ME), .key = "fk", .mc = "EN\r\n"},
    {IN("me Zm9v b\r\n"), FWD(ME), .key = "Zm9v", .decoded = "foo", .mc = "EN\r\n"},
    {IN("me Zm9 bx\r\n"), FWD(ME), .key = "Zm9", .mc = "EN\r\n"},
    {IN("me Zm9 b\r\n"), REJ(ME, BAD_FORMAT), .mc = E_FORMAT},
    {IN("me " A250 "a\r\n"), REJ(ME, BAD_FORMAT), .mc = E_FORMAT},

    /* not meta: for the classic parser */
    {IN("get foo\r\n"), .rc = WN_EINVAL},
    {IN("mget foo\r\n"), .rc = WN_EINVAL},
    {IN("\r\n"), .rc = WN_EINVAL},
    /* incomplete */
    {IN("mg foo v"), .rc = WN_EAGAIN},
    {IN(""), .rc = WN_EAGAIN},
};
/* clang-format on */

static void check_span(const char *line, wn_mc_span_t s, const char *want, const char *what,
                       const char *in)
{
    const char *w = want != NULL ? want : "";
    if (s.len != strlen(w) || memcmp(line + s.off, w, s.len) != 0)
        fail_msg("'%s': %s '%.*s', want '%s'", in, what, (int)s.len, line + s.off, w);
}

static void check_forwarded(const req_case_t *c, const char *line, const wn_meta_request_t *r)
{
    check_span(line, r->key, c->key, "key", c->in);
    assert_int_equal(r->quiet, c->quiet);
    check_span(line, r->opaque, c->opaque, "opaque", c->in);
    assert_int_equal(r->opaque_too_long, c->long_o);
    assert_int_equal(r->mode, c->mode);
    assert_int_equal(r->nflags, c->nflags);
    assert_int_equal(r->bytes, c->bytes);
    assert_int_equal(r->data_len, c->cmd == WN_META_MS ? c->bytes + 2 : 0);
    assert_int_equal(r->base64, c->decoded != NULL);
    uint8_t key[WN_MC_KEY_MAX];
    if (r->cmd != WN_META_MN) {
        const char *want = c->decoded != NULL ? c->decoded : c->key;
        int n = wn_meta_key_decode(line, r, key, sizeof key);
        assert_int_equal(n, (int)strlen(want));
        assert_int_equal(r->key_decoded_len, (uint32_t)n);
        assert_memory_equal(key, want, (size_t)n);
    }
    char out[512];
    int n = wn_meta_compose_without_quiet(out, sizeof out, line, r);
    if (!c->quiet) {
        assert_int_equal(n, WN_EINVAL);
        return;
    }
    if (n != (int)strlen(c->stripped) || memcmp(out, c->stripped, (size_t)n) != 0)
        fail_msg("'%s': stripped '%.*s', want '%s'", c->in, n, out, c->stripped);
    assert_int_equal(wn_meta_compose_without_quiet(out, (size_t)n - 1, line, r), WN_ETOOBIG);
    /* the stripped line parses as the same request, without q */
    wn_meta_request_t back;
    assert_int_equal(wn_meta_line_parse(NULL, out, (uint32_t)n, &back), n);
    assert_int_equal(back.cmd, r->cmd);
    assert_false(back.quiet);
    assert_int_equal(back.nflags, r->nflags - 1);
}

static void check_case(const req_case_t *c, const char *line, int rc, const wn_meta_request_t *r)
{
    size_t ll = line_end(c->in, c->len);
    if (c->rc == WN_EAGAIN || c->rc == WN_EINVAL) {
        assert_int_equal(rc, c->rc);
        return;
    }
    int want = c->rc == 0 ? (int)ll : c->rc;
    if (rc != want)
        fail_msg("'%s': rc %d (%s), want %d", c->in, rc, wn_err_name(rc), want);
    assert_int_equal(r->line_len, ll);
    if (r->cmd != c->cmd)
        fail_msg("'%s': cmd %s", c->in, wn_meta_cmd_name(r->cmd));
    if (c->rc == 0) {
        assert_int_equal(r->err, WN_META_ERR_NONE);
        check_forwarded(c, line, r);
        return;
    }
    if (r->err != c->err)
        fail_msg("'%s': err '%s'", c->in, wn_meta_err_text(r->err, NULL));
    assert_int_equal(r->after, c->after);
    assert_int_equal(r->data_len, c->after == WN_MC_AFTER_SWALLOW ? c->bytes + 2 : 0);
    if (c->mc != NULL) {
        const char *text = wn_meta_err_text(r->err, NULL);
        if (strncmp(c->mc, text, strlen(text)) != 0)
            fail_msg("'%s': answers '%s' but memcached said '%s'", c->in, text, c->mc);
    }
}

static void test_request_golden(void **state)
{
    (void)state;
    for (size_t i = 0; i < WN_ARRAY_SIZE(req_cases); i++) {
        const req_case_t *c = &req_cases[i];
        wn_mc_req_parser_t p;
        wn_mc_req_parser_init(&p, NULL);
        wn_meta_request_t r;
        memset(&r, 0x5a, sizeof r);
        char *b = exact_copy(c->in, c->len);
        int rc = wn_meta_request_parse(&p, b, c->len, &r);
        check_case(c, b, rc, &r);
        free(b);
    }
}

static bool req_same(const wn_meta_request_t *a, const wn_meta_request_t *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

/* Every row fed in two pieces split at every point, and byte by byte; each
 * call sees an exactly-sized copy. The answer comes with the "\n" only. */
static void test_request_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < WN_ARRAY_SIZE(req_cases); i++) {
        const req_case_t *c = &req_cases[i];
        size_t ll = line_end(c->in, c->len);
        wn_mc_req_parser_t p;
        wn_mc_req_parser_init(&p, NULL);
        wn_meta_request_t whole, r;
        memset(&whole, 0, sizeof whole);
        int whole_rc = wn_meta_request_parse(&p, c->in, c->len, &whole);
        for (size_t k = 0; k <= (ll ? ll : c->len); k++) {
            wn_mc_req_parser_init(&p, NULL);
            memset(&r, 0, sizeof r);
            char *b = exact_copy(c->in, k);
            int rc = wn_meta_request_parse(&p, b, k, &r);
            free(b);
            if (k < ll || ll == 0)
                assert_int_equal(rc, WN_EAGAIN);
            b = exact_copy(c->in, c->len);
            rc = wn_meta_request_parse(&p, b, c->len, &r);
            assert_int_equal(rc, whole_rc);
            if (rc != WN_EAGAIN && rc != WN_EINVAL)
                assert_true(req_same(&r, &whole));
            free(b);
        }
        wn_mc_req_parser_init(&p, NULL);
        int rc = WN_EAGAIN;
        size_t at = 0;
        for (size_t n = 0; n <= c->len && rc == WN_EAGAIN; n++) {
            char *b = exact_copy(c->in, n);
            memset(&r, 0, sizeof r);
            rc = wn_meta_request_parse(&p, b, n, &r);
            if (rc != WN_EAGAIN)
                at = n;
            free(b);
        }
        assert_int_equal(rc, whole_rc);
        if (rc != WN_EAGAIN) {
            assert_int_equal(at, ll);
            if (rc != WN_EINVAL)
                assert_true(req_same(&r, &whole));
        }
    }
}

/* ---- limits ------------------------------------------------------------ */

static void test_request_limits(void **state)
{
    (void)state;
    wn_meta_request_t r;
    /* ms: the value limit at its edge; the largest length memcached reads */
    wn_mc_limits_t lim = {WN_MC_LINE_MAX, 16, 0};
    const char *ok = "ms k 16\r\n", *big = "ms k 17\r\n";
    assert_int_equal(wn_meta_line_parse(&lim, ok, 9, &r), 9);
    assert_int_equal(r.data_len, 18);
    assert_int_equal(wn_meta_line_parse(&lim, big, 9, &r), WN_ETOOBIG);
    assert_int_equal(r.err, WN_META_ERR_TOO_LARGE);
    assert_int_equal(r.after, WN_MC_AFTER_SWALLOW);
    assert_int_equal(r.data_len, 19);
    const char *most = "ms k 2147483645\r\n", *over = "ms k 2147483646\r\n";
    assert_int_equal(wn_meta_line_parse(NULL, most, 17, &r), WN_ETOOBIG);
    assert_int_equal(r.data_len, 2147483647u);
    assert_int_equal(wn_meta_line_parse(NULL, over, 17, &r), WN_EPROTO);
    assert_int_equal(r.err, WN_META_ERR_BAD_FORMAT);
    assert_int_equal(r.after, WN_MC_AFTER_CONTINUE);

    /* the line limit: a line without "\n" in max_line bytes is refused */
    wn_mc_limits_t small = {64, WN_MC_VALUE_MAX, 0};
    char line[80];
    memset(line, 'a', sizeof line);
    memcpy(line, "mg ", 3);
    wn_mc_req_parser_t p;
    wn_mc_req_parser_init(&p, &small);
    assert_int_equal(wn_meta_request_parse(&p, line, 63, &r), WN_EAGAIN);
    assert_int_equal(wn_meta_request_parse(&p, line, 64, &r), WN_ETOOBIG);
    assert_int_equal(r.err, WN_META_ERR_LINE_TOO_LONG);
    assert_int_equal(r.after, WN_MC_AFTER_CLOSE);
    line[62] = '\r';
    line[63] = '\n';
    wn_mc_req_parser_init(&p, &small);
    assert_int_equal(wn_meta_request_parse(&p, line, 64, &r), 64); /* a key of 59 bytes */
    assert_int_equal(r.key.len, 59);

    /* 19 tokens pass, 20 do not, whatever they are */
    char buf[256];
    int n = snprintf(buf, sizeof buf, "md k a b c d e f g h i j k l m n o p q\r\n");
    assert_int_equal(wn_meta_line_parse(NULL, buf, (uint32_t)n, &r), WN_EPROTO);
    assert_int_equal(r.err, WN_META_ERR_INVALID_OR_DUP); /* 19 tokens: flags were read */
    n = snprintf(buf, sizeof buf, "md k a b c d e f g h i j k l m n o p q r\r\n");
    assert_int_equal(wn_meta_line_parse(NULL, buf, (uint32_t)n, &r), WN_EPROTO);
    assert_int_equal(r.err, WN_META_ERR_TOO_MANY);
}

/* ---- base64 ------------------------------------------------------------ */

static void test_base64(void **state)
{
    (void)state;
    uint8_t out[8];
    struct {
        const char *in;
        int rc;
        const char *out;
    } cases[] = {
        {"Zm9v", 3, "foo"},   {"Zm9vYg==", 4, "foob"}, {"Zm9vYmE=", 5, "fooba"},
        {"Zg==Zm9v", 1, "f"}, {" Z m 9 v\t", 3, "foo"},  {"Zm9", WN_EPROTO, NULL},
        {"", WN_EPROTO, NULL}, {"!!!!", WN_EPROTO, NULL}, {"====", WN_EPROTO, NULL},
        {"A===", WN_EPROTO, NULL}, {"Z=g=", 1, "d"},   {"+/+/", 3, "\xfb\xff\xbf"},
    };
    for (size_t i = 0; i < WN_ARRAY_SIZE(cases); i++) {
        size_t len = strlen(cases[i].in);
        char *b = exact_copy(cases[i].in, len);
        memset(out, 0, sizeof out);
        assert_int_equal(wn_meta_base64_decode(b, len, NULL, 0), cases[i].rc);
        int rc = wn_meta_base64_decode(b, len, out, sizeof out);
        assert_int_equal(rc, cases[i].rc);
        if (rc > 0) {
            assert_memory_equal(out, cases[i].out, (size_t)rc);
            /* exactly rc bytes of room suffice, one less does not */
            uint8_t *tight = malloc((size_t)rc);
            assert_int_equal(wn_meta_base64_decode(b, len, tight, (size_t)rc), rc);
            assert_int_equal(wn_meta_base64_decode(b, len, tight, (size_t)rc - 1), WN_ETOOBIG);
            free(tight);
        }
        free(b);
    }
}

/* A line over memcached's 2 KiB goes to the server rebuilt from what
 * memcached reads in it: numbers in decimal, O and M as sent, other flags
 * their letter alone, single spaces, no q. */
static void test_compose_canonical(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"mg k v\r\n", "mg k v\r\n"},
        {"mg   k   v   q   O12  \r\n", "mg k v O12\r\n"},
        {"mg k vjunk kxx s t f c h l u Ixx Pabc Lz\r\n", "mg k v k s t f c h l u I P L\r\n"},
        {"mg k T+0030 N-0 R4294967396\r\n", "mg k T30 N0 R100\r\n"},
        {"ms k 0003 F4294967297 C007 MS q I\r\n", "ms k 3 F1 C7 MS I\r\n"},
        {"md k q C18446744073709551615 T1\r\n", "md k C18446744073709551615 T1\r\n"},
        {"ma k N0 J00 D+5 MI q v\r\n", "ma k N0 J0 D5 MI v\r\n"},
        {"mg aGk= b v\r\n", "mg aGk= b v\r\n"},
        {"me  aGk=  b\r\n", "me aGk= b\r\n"},
        {"me k junk\r\n", "me k\r\n"},
        {"mg foo\r q\n", "mg foo\r\r\n"},
    };
    for (size_t i = 0; i < WN_ARRAY_SIZE(cases); i++) {
        uint32_t n = (uint32_t)strlen(cases[i].in);
        wn_meta_request_t r;
        assert_int_equal(wn_meta_line_parse(NULL, cases[i].in, n, &r), (int)n);
        char out[WN_META_CANONICAL_MAX];
        int len = wn_meta_compose_canonical(out, sizeof out, cases[i].in, &r);
        if (len != (int)strlen(cases[i].out) || memcmp(out, cases[i].out, (size_t)len) != 0)
            fail_msg("'%s': '%.*s', want '%s'", cases[i].in, len < 0 ? 0 : len, out,
                     cases[i].out);
        assert_int_equal(wn_meta_compose_canonical(out, (size_t)len - 1, cases[i].in, &r),
                         WN_ETOOBIG);
        wn_meta_request_t back;
        assert_int_equal(wn_meta_line_parse(NULL, out, (uint32_t)len, &back), len);
        assert_int_equal(back.cmd, r.cmd);
        assert_false(back.quiet);
    }
    wn_meta_request_t r;
    assert_int_equal(wn_meta_line_parse(NULL, "mn\r\n", 4, &r), 4);
    char out[64];
    assert_int_equal(wn_meta_compose_canonical(out, sizeof out, "mn\r\n", &r), WN_EINVAL);
}

/* An mg or ma with an O over memcached's 32 bytes, in a line over 2 KiB:
 * rebuilt with the O cut to 33 bytes, which memcached refuses as it refuses
 * the whole (it could not be rebuilt at all with an O of 1018 bytes or more:
 * the client got SERVER_ERROR, and an ma did not run). */
static void test_compose_canonical_long_opaque(void **state)
{
    (void)state;
    static const char *cmds[] = {"mg k v O", "ma k N0 O"};
    for (size_t c = 0; c < WN_ARRAY_SIZE(cmds); c++) {
        char in[3000], want[128];
        int n = snprintf(in, sizeof in, "%s", cmds[c]);
        memset(in + n, 'x', 2500);
        n += 2500;
        memcpy(in + n, "\r\n", 2);
        n += 2;
        wn_meta_request_t r;
        assert_int_equal(wn_meta_line_parse(NULL, in, (uint32_t)n, &r), n);
        assert_true(r.opaque_too_long);
        int w = snprintf(want, sizeof want, "%s%.32s\r\n", cmds[c], in + strlen(cmds[c]));
        char out[WN_META_CANONICAL_MAX];
        int len = wn_meta_compose_canonical(out, sizeof out, in, &r);
        assert_int_equal(len, w);
        assert_memory_equal(out, want, (size_t)w);
        wn_meta_request_t back;
        assert_int_equal(wn_meta_line_parse(NULL, out, (uint32_t)len, &back), len);
        assert_true(back.opaque_too_long); /* memcached refuses it still */
    }
}

/* The line a server gets, tagged: the client's O replaced in place (or the
 * tag last), q dropped unless kept, everything else as sent (or canonical);
 * what it parses back to carries the tag as its opaque. */
static void test_compose_tagged(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        bool keep_quiet, canonical;
        const char *out;
    } cases[] = {
        {"mg k v\r\n", false, false, "mg k v O1f\r\n"},
        {"mg k\r\n", false, false, "mg k O1f\r\n"},
        {"mg   k   v   q   O12  \r\n", false, false, "mg k v O1f\r\n"},
        {"mg k O12 v q t\r\n", true, false, "mg k O1f v q t\r\n"},
        {"mg k vjunk T+0030 q\n", false, false, "mg k vjunk T+0030 O1f\r\n"},
        {"mg k vjunk T+0030 q\n", false, true, "mg k v T30 O1f\r\n"},
        {"ms k 0003 F7 q I\r\n", false, false, "ms k 3 F7 I O1f\r\n"},
        {"md k q Oabc\r\n", false, false, "md k O1f\r\n"},
        {"ma k N0 J00 D+5 MI q v\r\n", true, true, "ma k N0 J0 D5 MI q v O1f\r\n"},
        {"mg aGk= b v\r\n", false, false, "mg aGk= b v O1f\r\n"},
        {"mg foo\r q\n", false, false, "mg foo\r O1f\r\n"},
    };
    for (size_t i = 0; i < WN_ARRAY_SIZE(cases); i++) {
        uint32_t n = (uint32_t)strlen(cases[i].in);
        wn_meta_request_t r;
        assert_int_equal(wn_meta_line_parse(NULL, cases[i].in, n, &r), (int)n);
        char out[256];
        int len = wn_meta_compose_tagged(out, sizeof out, cases[i].in, &r, cases[i].keep_quiet,
                                         cases[i].canonical, "O1f", 3);
        if (len != (int)strlen(cases[i].out) || memcmp(out, cases[i].out, (size_t)len) != 0)
            fail_msg("'%s': '%.*s', want '%s'", cases[i].in, len < 0 ? 0 : len, out, cases[i].out);
        assert_int_equal(wn_meta_compose_tagged(out, (size_t)len - 1, cases[i].in, &r,
                                                cases[i].keep_quiet, cases[i].canonical, "O1f", 3),
                         WN_ETOOBIG);
        wn_meta_request_t back;
        assert_int_equal(wn_meta_line_parse(NULL, out, (uint32_t)len, &back), len);
        assert_int_equal(back.cmd, r.cmd);
        assert_int_equal(back.quiet, r.quiet && cases[i].keep_quiet);
        assert_int_equal(back.opaque.len, 3);
        assert_memory_equal(out + back.opaque.off, "O1f", 3);
    }
    wn_meta_request_t r;
    char out[256];
    /* mn and me are never tagged; a tag must be an O token */
    assert_int_equal(wn_meta_line_parse(NULL, "mn\r\n", 4, &r), 4);
    assert_int_equal(wn_meta_compose_tagged(out, sizeof out, "mn\r\n", &r, false, false, "O1", 2),
                     WN_EINVAL);
    assert_int_equal(wn_meta_line_parse(NULL, "me k\r\n", 6, &r), 6);
    assert_int_equal(wn_meta_compose_tagged(out, sizeof out, "me k\r\n", &r, false, false, "O1", 2),
                     WN_EINVAL);
    assert_int_equal(wn_meta_line_parse(NULL, "mg k v\r\n", 8, &r), 8);
    assert_int_equal(
        wn_meta_compose_tagged(out, sizeof out, "mg k v\r\n", &r, false, false, "X1", 2),
        WN_EINVAL);
    /* a line at memcached's token limit takes no more (walnut refuses it),
     * unless its q is dropped or it has an O to replace */
    const char *full = "mg aGk= b c f h k l q s t u v I N1 P L R1 T1\r\n";
    uint32_t n = (uint32_t)strlen(full);
    assert_int_equal(wn_meta_line_parse(NULL, full, n, &r), (int)n);
    assert_false(wn_meta_tag_fits(&r, true));
    assert_int_equal(wn_meta_compose_tagged(out, sizeof out, full, &r, true, false, "O1", 2),
                     WN_EFULL);
    assert_true(wn_meta_tag_fits(&r, false));
    assert_true(wn_meta_compose_tagged(out, sizeof out, full, &r, false, false, "O1", 2) > 0);
    const char *own = "mg aGk= b c f h k l q s t u v I N1 P L R1 Oz\r\n";
    n = (uint32_t)strlen(own);
    assert_int_equal(wn_meta_line_parse(NULL, own, n, &r), (int)n);
    assert_true(wn_meta_tag_fits(&r, true));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_golden),
        cmocka_unit_test(test_request_split),
        cmocka_unit_test(test_request_limits),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_compose_canonical),
        cmocka_unit_test(test_compose_canonical_long_opaque),
        cmocka_unit_test(test_compose_tagged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
