/*
 * test_proto_mcbin.c: the memcached binary protocol framing, checks,
 * quiet rules and composers. Golden tables whose expected answers are what
 * memcached 1.6.18 sent (measured with raw sockets, each packet followed by
 * a NOOP to see whether the connection went on); every packet fed at every
 * length from exactly-sized heap copies (ASan catches over-reads); limits
 * at their edges; composed error packets compared byte for byte with
 * memcached's.
 */
#include "walnut/proto_mcbin.h"

#include "walnut/core.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* A packet described by its fields; lengths default to the parts given. */
typedef struct pkt {
    uint8_t magic; /* 0: 0x80 */
    uint8_t op;
    const char *extras, *key, *value;
    size_t nextras, nkey, nvalue;
    bool set_bodylen; /* else the parts' length */
    uint32_t bodylen;
    uint8_t datatype;
    uint16_t vbucket;
} pkt_t;

static size_t build(const pkt_t *p, uint8_t *out, size_t cap)
{
    size_t body = p->nextras + p->nkey + p->nvalue;
    assert_true(WN_MCBIN_HEADER_LEN + body <= cap);
    wn_mcbin_header_t h = {
        .magic = p->magic ? p->magic : WN_MCBIN_REQ_MAGIC,
        .opcode = p->op,
        .keylen = (uint16_t)p->nkey,
        .extlen = (uint8_t)p->nextras,
        .datatype = p->datatype,
        .vbucket_status = p->vbucket,
        .bodylen = p->set_bodylen ? p->bodylen : (uint32_t)body,
        .opaque = 0xdeadbeef,
        .cas = 0,
    };
    wn_mcbin_header_encode(out, &h);
    size_t o = WN_MCBIN_HEADER_LEN;
    const char *parts[] = {p->extras, p->key, p->value};
    size_t lens[] = {p->nextras, p->nkey, p->nvalue};
    for (size_t i = 0; i < 3; i++) {
        if (lens[i] > 0)
            memcpy(out + o, parts[i], lens[i]);
        o += lens[i];
    }
    return o;
}

static uint8_t *exact_copy(const uint8_t *s, size_t n)
{
    uint8_t *b = malloc(n == 0 ? 1 : n);
    assert_non_null(b);
    if (n > 0)
        memcpy(b, s, n);
    return b;
}

typedef struct req_case {
    const char *name;
    pkt_t p;
    int rc; /* 0: forwarded (head_len returned) */
    uint16_t status;
    wn_mcbin_after_t after;
    bool walnut_only; /* memcached 1.6.18 answers otherwise (see the header) */
} req_case_t;

#define X(s) .extras = (s), .nextras = sizeof(s) - 1
#define K(s) .key = (s), .nkey = sizeof(s) - 1
#define V(s) .value = (s), .nvalue = sizeof(s) - 1
#define P(...) {__VA_ARGS__}
#define BL(n) .set_bodylen = true, .bodylen = (n)
#define OK .rc = 0, .status = WN_MCBIN_OK
#define REJ(rc_, st, af) .rc = rc_, .status = WN_MCBIN_##st, .after = WN_MCBIN_AFTER_##af
#define EINVAL_CLOSE REJ(WN_EPROTO, EINVAL, CLOSE)
#define TOO_BIG REJ(WN_ETOOBIG, E2BIG, SKIP)
#define UNKNOWN_SKIP REJ(WN_EPROTO, UNKNOWN_COMMAND, SKIP)

#define EX8 "\xde\xad\xbe\xef\0\0\0\0"
#define EX4 "\0\0\0\0"
#define EX20 "\0\0\0\0\0\0\0\1\0\0\0\0\0\0\0\0\0\0\0\0"
#define A10 "aaaaaaaaaa"
#define A50 A10 A10 A10 A10 A10
#define A250 A50 A50 A50 A50 A50

/* clang-format off */
static const req_case_t req_cases[] = {
    /* every opcode in its valid shape: forwarded (or the proxy's own) */
    {"get", P(.op = 0x00, K("hit")), OK},
    {"getq", P(.op = 0x09, K("hit")), OK},
    {"getk", P(.op = 0x0c, K("miss")), OK},
    {"getkq", P(.op = 0x0d, K("hit")), OK},
    {"set", P(.op = 0x01, X(EX8), K("hit"), V("val")), OK},
    {"set empty value", P(.op = 0x01, X(EX8), K("k")), OK},
    {"setq", P(.op = 0x11, X(EX8), K("hit"), V("val")), OK},
    {"add", P(.op = 0x02, X(EX8), K("hit"), V("val")), OK},
    {"addq", P(.op = 0x12, X(EX8), K("hit"), V("val")), OK},
    {"replace", P(.op = 0x03, X(EX8), K("k"), V("v")), OK},
    {"replaceq", P(.op = 0x13, X(EX8), K("miss"), V("val")), OK},
    {"delete", P(.op = 0x04, K("num")), OK},
    {"deleteq", P(.op = 0x14, K("num")), OK},
    {"incr", P(.op = 0x05, X(EX20), K("num")), OK},
    {"incrq", P(.op = 0x15, X(EX20), K("num")), OK},
    {"decr", P(.op = 0x06, X(EX20), K("num")), OK},
    {"decrq", P(.op = 0x16, X(EX20), K("num")), OK},
    {"append", P(.op = 0x0e, K("hit"), V("X")), OK},
    {"append no value", P(.op = 0x0e, K("k")), OK},
    {"appendq", P(.op = 0x19, K("hit"), V("X")), OK},
    {"prepend", P(.op = 0x0f, K("hit"), V("X")), OK},
    {"prependq", P(.op = 0x1a, K("hit"), V("X")), OK},
    {"touch", P(.op = 0x1c, X(EX4), K("hit")), OK},
    {"gat", P(.op = 0x1d, X(EX4), K("hit")), OK},
    {"gatq", P(.op = 0x1e, X(EX4), K("hit")), OK},
    {"gatk", P(.op = 0x23, X(EX4), K("hit")), OK},
    {"gatkq", P(.op = 0x24, X(EX4), K("hit")), OK},
    {"noop", P(.op = 0x0a), OK},
    {"version", P(.op = 0x0b), OK},
    {"quit", P(.op = 0x07), OK},
    {"quitq", P(.op = 0x17), OK},
    {"flush", P(.op = 0x08), OK},
    {"flush exptime", P(.op = 0x08, X(EX4)), OK},
    {"flushq", P(.op = 0x18), OK},
    {"stat", P(.op = 0x10), OK},
    {"stat settings", P(.op = 0x10, K("settings")), OK},
    {"key 250", P(.op = 0x00, K(A250)), OK},
    /* memcached ignores the vbucket id */
    {"vbucket 5", P(.op = 0x00, K("k"), .vbucket = 5), OK},

    /* measured rejections: status, and whether memcached closed */
    {"bad magic 0x00", P(.magic = 0x01, .op = 0x0a), REJ(WN_EPROTO, NONE, CLOSE)},
    {"response magic", P(.magic = 0x81, .op = 0x0a), REJ(WN_EPROTO, NONE, CLOSE)},
    {"keylen > bodylen", P(.op = 0x00, K("k"), BL(0)), REJ(WN_EPROTO, UNKNOWN_COMMAND, CLOSE)},
    {"keylen + extlen > bodylen", P(.op = 0x01, X(EX8), K("k"), BL(8)), REJ(WN_EPROTO, UNKNOWN_COMMAND, CLOSE)},
    {"key 251", P(.op = 0x00, K(A250 "a")), EINVAL_CLOSE},
    {"unknown op with key 251", P(.op = 0x50, K(A250 "a")), EINVAL_CLOSE},
    {"get with extras", P(.op = 0x00, X(EX4), K("k")), EINVAL_CLOSE},
    {"get without key", P(.op = 0x00), EINVAL_CLOSE},
    {"get with value", P(.op = 0x00, K("k"), V("v")), EINVAL_CLOSE},
    {"set extras 4", P(.op = 0x01, X(EX4), K("k"), V("v")), EINVAL_CLOSE},
    {"set without key", P(.op = 0x01, X(EX8), V("v")), EINVAL_CLOSE},
    {"delete with extras", P(.op = 0x04, X(EX4), K("k")), EINVAL_CLOSE},
    {"delete with value", P(.op = 0x04, K("k"), V("x")), EINVAL_CLOSE},
    {"incr extras 8", P(.op = 0x05, X(EX8), K("k")), EINVAL_CLOSE},
    {"incr with value", P(.op = 0x05, X(EX20), K("k"), V("x")), EINVAL_CLOSE},
    {"append with extras", P(.op = 0x0e, X(EX4), K("k"), V("x")), EINVAL_CLOSE},
    {"noop with key", P(.op = 0x0a, K("k")), EINVAL_CLOSE},
    {"noop with value", P(.op = 0x0a, V("k")), EINVAL_CLOSE},
    {"version with extras", P(.op = 0x0b, X(EX4)), EINVAL_CLOSE},
    {"flush extras 8", P(.op = 0x08, X(EX8)), EINVAL_CLOSE},
    {"flush with key", P(.op = 0x08, K("k")), EINVAL_CLOSE},
    {"flush with value", P(.op = 0x08, X(EX4), V("x")), EINVAL_CLOSE},
    {"quit with key", P(.op = 0x07, K("k")), EINVAL_CLOSE},
    {"stat with extras", P(.op = 0x10, X(EX4)), EINVAL_CLOSE},
    {"touch without extras", P(.op = 0x1c, K("k")), EINVAL_CLOSE},
    {"touch without key", P(.op = 0x1c, X(EX4)), EINVAL_CLOSE},
    {"sasl auth without key", P(.op = 0x21, V("x")), EINVAL_CLOSE},
    {"sasl auth with extras", P(.op = 0x21, X(EX4), K("P")), EINVAL_CLOSE},
    {"sasl list with key", P(.op = 0x20, K("x")), EINVAL_CLOSE},
    /* no SASL configured: memcached answers Unknown command and goes on */
    {"sasl list", P(.op = 0x20), UNKNOWN_SKIP},
    {"sasl auth", P(.op = 0x21, K("PLAIN"), V("\0u\0p")), UNKNOWN_SKIP},
    {"sasl step", P(.op = 0x22, K("PLAIN"), V("\0u\0p")), UNKNOWN_SKIP},
    {"unknown 0x50", P(.op = 0x50), UNKNOWN_SKIP},
    {"unknown 0x50 value", P(.op = 0x50, V("abcd")), UNKNOWN_SKIP},
    {"unknown 0x1f", P(.op = 0x1f), UNKNOWN_SKIP},
    {"unknown 0x25", P(.op = 0x25), UNKNOWN_SKIP},
    {"unknown 0xff", P(.op = 0xff), UNKNOWN_SKIP},
    /* memcached over-swallows extlen + keylen here and misreads what follows */
    {"verbosity", P(.op = 0x1b, X(EX4)), UNKNOWN_SKIP, .walnut_only = true},
    {"unknown 0x50 key", P(.op = 0x50, K("abcd")), UNKNOWN_SKIP, .walnut_only = true},
    /* memcached ignores these values and reads them as the next packet */
    {"stat with value", P(.op = 0x10, K("items"), V("xx")), EINVAL_CLOSE, .walnut_only = true},
    {"touch with value", P(.op = 0x1c, X(EX4), K("k"), V("v")), EINVAL_CLOSE, .walnut_only = true},
    {"gat with value", P(.op = 0x1d, X(EX4), K("k"), V("v")), EINVAL_CLOSE, .walnut_only = true},
    /* memcached ignores the data type */
    {"datatype 1", P(.op = 0x00, K("k"), .datatype = 1), EINVAL_CLOSE, .walnut_only = true},
    /* too large: "Too large.", the value swallowed, quiet or not */
    {"set too big", P(.op = 0x01, X(EX8), K("k"), BL(8 + 1 + 2000000)), TOO_BIG},
    {"setq too big", P(.op = 0x11, X(EX8), K("k"), BL(8 + 1 + 2000000)), TOO_BIG},
    {"append too big", P(.op = 0x0e, K("k"), BL(1 + 2000000)), TOO_BIG},
    {"set bodylen 2^32-1", P(.op = 0x01, X(EX8), K("k"), BL(0xffffffff)), TOO_BIG},
    {"set value at limit", P(.op = 0x01, X(EX8), K("k"), BL(8 + 1 + WN_MCBIN_VALUE_MAX)), OK},
    {"set value over limit", P(.op = 0x01, X(EX8), K("k"), BL(8 + 1 + WN_MCBIN_VALUE_MAX + 1)), TOO_BIG},
};
/* clang-format on */

static void check_req(const req_case_t *c, const uint8_t *b, size_t len, int rc,
                      const wn_mcbin_request_t *r)
{
    size_t head = WN_MCBIN_HEADER_LEN + c->p.nextras + c->p.nkey;
    if (c->rc == 0) {
        if (rc != (int)head)
            fail_msg("%s: rc %d (%s), want %zu", c->name, rc, wn_err_name(rc), head);
        assert_int_equal(r->head_len, head);
        assert_int_equal(r->key_off, WN_MCBIN_HEADER_LEN + c->p.nextras);
        assert_int_equal(r->h.keylen, c->p.nkey);
        assert_memory_equal(b + r->key_off, c->p.key, c->p.nkey);
        assert_int_equal(r->value_len, r->h.bodylen - c->p.nextras - c->p.nkey);
        assert_int_equal(r->h.opaque, 0xdeadbeef);
        (void)len;
        return;
    }
    if (rc != c->rc || r->status != c->status || r->after != c->after)
        fail_msg("%s: rc %s status %#x after %d", c->name, wn_err_name(rc), r->status, r->after);
    if (c->after == WN_MCBIN_AFTER_SKIP)
        assert_true(r->skip_len == WN_MCBIN_HEADER_LEN + (uint64_t)r->h.bodylen);
}

static void test_request_golden_split(void **state)
{
    (void)state;
    static uint8_t pkt[4096];
    for (size_t i = 0; i < WN_ARRAY_SIZE(req_cases); i++) {
        const req_case_t *c = &req_cases[i];
        size_t len = build(&c->p, pkt, sizeof pkt);
        /* every length: more is asked for until the answer can be given,
         * then the answer is the same whatever follows */
        size_t head = WN_MCBIN_HEADER_LEN + c->p.nextras + c->p.nkey;
        size_t decided = c->rc == 0 ? head : WN_MCBIN_HEADER_LEN;
        for (size_t n = 0; n <= len; n++) {
            uint8_t *b = exact_copy(pkt, n);
            wn_mcbin_request_t r;
            memset(&r, 0x5a, sizeof r);
            int rc = wn_mcbin_request_parse(NULL, b, n, &r);
            if (n < decided)
                assert_int_equal(rc, WN_EAGAIN);
            else
                check_req(c, b, n, rc, &r);
            free(b);
        }
    }
}

static void test_request_limits(void **state)
{
    (void)state;
    wn_mcbin_limits_t lim = {16};
    uint8_t b[128];
    pkt_t p = P(.op = 0x01, X(EX8), K("k"), BL(8 + 1 + 16));
    build(&p, b, sizeof b);
    wn_mcbin_request_t r;
    assert_int_equal(wn_mcbin_request_parse(&lim, b, 33, &r), 33);
    assert_int_equal(r.value_len, 16);
    p.bodylen = 8 + 1 + 17;
    build(&p, b, sizeof b);
    assert_int_equal(wn_mcbin_request_parse(&lim, b, 24, &r), WN_ETOOBIG);
    assert_int_equal(r.status, WN_MCBIN_E2BIG);
    assert_true(r.skip_len == 24 + 26);
    /* the limit bounds stored values only: a GET's key is checked by shape */
    pkt_t g = P(.op = 0x00, K(A50));
    size_t n = build(&g, b, sizeof b);
    assert_int_equal(wn_mcbin_request_parse(&lim, b, n, &r), (int)n);
}

/* ---- responses --------------------------------------------------------- */

typedef struct rsp_case {
    const char *name;
    uint8_t req_op;
    const char *bytes;
    size_t len;
    int rc; /* 0: framed */
    uint16_t status;
    uint32_t value_len;
    bool done;
} rsp_case_t;

/* Response headers: magic op keylen extlen datatype status bodylen opaque cas */
#define H(op, kl, el, st, bl) "\x81" op "\0" kl el "\0\0" st "\0\0\0" bl "\xde\xad\xbe\xef\0\0\0\0\0\0\0\x31"
#define RS(s) .bytes = (s), .len = sizeof(s) - 1

/* clang-format off */
/* As memcached 1.6.18 sent them (cas made 0x31 where it was one). */
static const rsp_case_t rsp_cases[] = {
    {"get hit", 0x00, RS(H("\x00", "\0", "\x04", "\0", "\x07") "\xde\xad\xbe\xef" "val"), 0, 0, 3, true},
    {"get miss", 0x00, RS(H("\x00", "\0", "\0", "\x01", "\x09") "Not found"), 0, 1, 9, true},
    {"getk miss", 0x0c, RS(H("\x0c", "\x04", "\0", "\x01", "\x04") "miss"), 0, 1, 0, true},
    {"getk hit", 0x0c, RS(H("\x0c", "\x03", "\x04", "\0", "\x0a") "\xde\xad\xbe\xef" "hitval"), 0, 0, 3, true},
    {"set", 0x01, RS(H("\x01", "\0", "\0", "\0", "\0")), 0, 0, 0, true},
    {"incr", 0x05, RS(H("\x05", "\0", "\0", "\0", "\x08") "\0\0\0\0\0\0\0\x07"), 0, 0, 8, true},
    {"version", 0x0b, RS(H("\x0b", "\0", "\0", "\0", "\x06") "1.6.18"), 0, 0, 6, true},
    {"stat entry", 0x10, RS(H("\x10", "\x08", "\0", "\0", "\x10") "maxbytes67108864"), 0, 0, 8, false},
    {"stat end", 0x10, RS(H("\x10", "\0", "\0", "\0", "\0")), 0, 0, 0, true},
    {"stat error", 0x10, RS(H("\x10", "\0", "\0", "\x01", "\x09") "Not found"), 0, 1, 9, true},
    {"wrong opcode", 0x01, RS(H("\x00", "\0", "\0", "\0", "\0")), WN_EPROTO, 0, 0, false},
    {"request magic", 0x00, RS("\x80" "\x00\0\0\0\0\0\0\0\0\0\0\xde\xad\xbe\xef\0\0\0\0\0\0\0\0"), WN_EPROTO, 0, 0, false},
    {"lengths", 0x0c, RS(H("\x0c", "\x04", "\0", "\x01", "\x03") "mis"), WN_EPROTO, 0, 0, false},
    {"too big", 0x00, RS("\x81\0\0\0\x04\0\0\0\x00\x10\x00\x05\xde\xad\xbe\xef\0\0\0\0\0\0\0\0"), WN_ETOOBIG, 0, 0, false},
};
/* clang-format on */

static void test_response_golden_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < WN_ARRAY_SIZE(rsp_cases); i++) {
        const rsp_case_t *c = &rsp_cases[i];
        for (size_t n = 0; n <= c->len; n++) {
            uint8_t *b = exact_copy((const uint8_t *)c->bytes, n);
            wn_mcbin_response_t r;
            memset(&r, 0, sizeof r);
            int rc = wn_mcbin_response_parse(NULL, c->req_op, 0xdeadbeef, b, n, &r);
            free(b);
            if (n < WN_MCBIN_HEADER_LEN) {
                assert_int_equal(rc, WN_EAGAIN);
                continue;
            }
            if (c->rc != 0) {
                assert_int_equal(rc, c->rc);
                continue;
            }
            size_t head = c->len - c->value_len;
            if (n < head) {
                assert_int_equal(rc, WN_EAGAIN);
                continue;
            }
            if (rc != (int)head)
                fail_msg("%s: rc %d at %zu", c->name, rc, n);
            assert_int_equal(r.h.vbucket_status, c->status);
            assert_int_equal(r.value_len, c->value_len);
            assert_int_equal(r.done, c->done);
        }
    }
    /* another request's opaque is not an answer */
    wn_mcbin_response_t r;
    const rsp_case_t *set = &rsp_cases[4];
    assert_int_equal(wn_mcbin_response_parse(NULL, 0x01, 1, (const uint8_t *)set->bytes, set->len, &r),
                     WN_EPROTO);
}

/* ---- quiet rules ------------------------------------------------------- */

/* Measured on memcached 1.6.18: (quiet opcode, status) -> dropped? */
static const struct {
    uint8_t op;
    uint16_t status;
    bool drops;
} quiet_rows[] = {
    {0x09, 0x0000, false}, /* getq hit: sent */
    {0x09, 0x0001, true},  /* getq miss */
    {0x0d, 0x0000, false}, {0x0d, 0x0001, true},  /* getkq */
    {0x1e, 0x0000, false}, {0x1e, 0x0001, true},  /* gatq */
    {0x24, 0x0000, false}, {0x24, 0x0001, true},  /* gatkq */
    {0x11, 0x0000, true},  {0x11, 0x0002, false}, {0x11, 0x0001, false}, {0x11, 0x0003, false}, /* setq: ok, cas mismatch, cas miss, too large */
    {0x12, 0x0000, true},  {0x12, 0x0002, false}, /* addq exists */
    {0x13, 0x0000, true},  {0x13, 0x0001, false}, /* replaceq miss */
    {0x19, 0x0000, true},  {0x19, 0x0005, false}, /* appendq miss: Not stored. */
    {0x1a, 0x0000, true},  {0x1a, 0x0005, false},
    {0x14, 0x0000, true},  {0x14, 0x0001, false}, {0x14, 0x0002, false}, /* deleteq */
    {0x15, 0x0000, true},  {0x15, 0x0001, false}, {0x15, 0x0006, false}, /* incrq: ok (also created), miss with exptime ~0, non-numeric */
    {0x16, 0x0000, true},
    {0x18, 0x0000, true},  /* flushq */
    {0x17, 0x0000, true},  /* quitq: nothing, then close */
    /* loud opcodes drop nothing */
    {0x00, 0x0001, false}, {0x01, 0x0000, false}, {0x04, 0x0000, false}, {0x0a, 0x0000, false},
};

static void test_quiet(void **state)
{
    (void)state;
    for (size_t i = 0; i < WN_ARRAY_SIZE(quiet_rows); i++) {
        if (wn_mcbin_quiet_drops(quiet_rows[i].op, quiet_rows[i].status) != quiet_rows[i].drops)
            fail_msg("%s %#x", wn_mcbin_op_name(quiet_rows[i].op), quiet_rows[i].status);
    }
    static const uint8_t pairs[][2] = {
        {0x09, 0x00}, {0x0d, 0x0c}, {0x11, 0x01}, {0x12, 0x02}, {0x13, 0x03}, {0x14, 0x04},
        {0x15, 0x05}, {0x16, 0x06}, {0x17, 0x07}, {0x18, 0x08}, {0x19, 0x0e}, {0x1a, 0x0f},
        {0x1e, 0x1d}, {0x24, 0x23},
    };
    unsigned quiet = 0;
    for (unsigned op = 0; op < 256; op++)
        quiet += wn_mcbin_op_is_quiet((uint8_t)op);
    assert_int_equal(quiet, WN_ARRAY_SIZE(pairs));
    for (size_t i = 0; i < WN_ARRAY_SIZE(pairs); i++) {
        assert_true(wn_mcbin_op_is_quiet(pairs[i][0]));
        assert_int_equal(wn_mcbin_opcode_loud(pairs[i][0]), pairs[i][1]);
        assert_false(wn_mcbin_op_is_quiet(pairs[i][1]));
    }
    assert_int_equal(wn_mcbin_opcode_loud(0x50), 0x50);
    assert_false(wn_mcbin_op_known(0x1b));
    assert_string_equal(wn_mcbin_op_name(0x24), "GATKQ");

    /* the rewrite keeps every other byte: opaque, cas, lengths */
    uint8_t b[64], loud[64];
    pkt_t p = P(.op = 0x0d, K("key"));
    size_t n = build(&p, b, sizeof b);
    memcpy(loud, b, n);
    wn_mcbin_header_set_opcode(loud, wn_mcbin_opcode_loud(loud[1]));
    assert_int_equal(loud[1], 0x0c);
    assert_memory_equal(loud + 2, b + 2, n - 2);
}

/* ---- composers --------------------------------------------------------- */

static void test_compose(void **state)
{
    (void)state;
    /* memcached's bytes for a GET with extras (then it closed) */
    static const char einval[] = "\x81\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x11"
                                 "\xde\xad\xbe\xef\0\0\0\0\0\0\0\0Invalid arguments";
    static const char unknown[] = "\x81\x50\x00\x00\x00\x00\x00\x81\x00\x00\x00\x0f"
                                  "\xde\xad\xbe\xef\0\0\0\0\0\0\0\0Unknown command";
    static const char e2big[] = "\x81\x11\x00\x00\x00\x00\x00\x03\x00\x00\x00\x0a"
                                "\xde\xad\xbe\xef\0\0\0\0\0\0\0\0Too large.";
    uint8_t out[WN_MCBIN_ERROR_MAX];
    int n = wn_mcbin_compose_error(out, sizeof out, 0x00, 0xdeadbeef, WN_MCBIN_EINVAL);
    assert_int_equal(n, sizeof einval - 1);
    assert_memory_equal(out, einval, (size_t)n);
    n = wn_mcbin_compose_error(out, sizeof out, 0x50, 0xdeadbeef, WN_MCBIN_UNKNOWN_COMMAND);
    assert_int_equal(n, sizeof unknown - 1);
    assert_memory_equal(out, unknown, (size_t)n);
    n = wn_mcbin_compose_error(out, sizeof out, 0x11, 0xdeadbeef, WN_MCBIN_E2BIG);
    assert_int_equal(n, sizeof e2big - 1);
    assert_memory_equal(out, e2big, (size_t)n);
    assert_int_equal(wn_mcbin_compose_error(out, 24 + 9, 0x11, 1, WN_MCBIN_E2BIG), WN_ETOOBIG);
    assert_int_equal(wn_mcbin_compose_error(out, sizeof out, 0x11, 1, WN_MCBIN_NONE), WN_EINVAL);
    /* every status text fits WN_MCBIN_ERROR_MAX */
    for (unsigned s = 0; s < 0x100; s++) {
        size_t len;
        wn_mcbin_status_text((uint16_t)s, &len);
        assert_true(WN_MCBIN_HEADER_LEN + len <= WN_MCBIN_ERROR_MAX);
    }

    /* NOOP and VERSION replies as memcached sent them */
    static const char noop[] = "\x81\x0a\0\0\0\0\0\0\0\0\0\0\xde\xad\xbe\xef\0\0\0\0\0\0\0\0";
    assert_int_equal(wn_mcbin_compose_header(out, sizeof out, 0x0a, 0, 0, 0, 0, 0xdeadbeef, 0), 24);
    assert_memory_equal(out, noop, 24);
    static const char version[] = "\x81\x0b\0\0\0\0\0\0\0\0\0\x06\xde\xad\xbe\xef\0\0\0\0\0\0\0\0";
    assert_int_equal(wn_mcbin_compose_header(out, sizeof out, 0x0b, 0, 0, 0, 6, 0xdeadbeef, 0), 24);
    assert_memory_equal(out, version, 24);
    /* a STAT entry: key then value; the header decodes back */
    assert_int_equal(wn_mcbin_compose_header(out, sizeof out, 0x10, 0, 0, 8, 8, 7, 0), 24);
    wn_mcbin_header_t h;
    wn_mcbin_header_decode(out, &h);
    assert_int_equal(h.magic, 0x81);
    assert_int_equal(h.keylen, 8);
    assert_int_equal(h.bodylen, 16);
    assert_int_equal(h.opaque, 7);
    assert_int_equal(wn_mcbin_compose_header(out, 23, 0x10, 0, 0, 0, 0, 0, 0), WN_ETOOBIG);
    assert_int_equal(wn_mcbin_compose_header(out, 24, 0x10, 0, 4, 4, UINT32_MAX, 0, 0), WN_EINVAL);
}

/* ---- captured traffic -------------------------------------------------- */

/* A corpus file (its first byte is the fuzzer's mode byte, dropped). */
static uint8_t *read_capture(const char *dir, const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/../fuzz/corpus/%s/%s", WN_TEST_DATA, dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    static uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(n >= 1 && n < sizeof buf);
    *len = n - 1;
    return exact_copy(buf + 1, n - 1);
}

/* memccapable -b, memccp/memccat/memcrm/memcstat/memcflush/memctouch
 * --binary, relayed to memcached 1.6.18 and recorded: every request packet
 * is accepted and framed to the byte, and so is every reply. */
static void test_captured_traffic(void **state)
{
    (void)state;
    unsigned files = 0;
    for (int i = 1; i <= 9; i++) {
        char name[16];
        snprintf(name, sizeof name, "c%03d", i);
        size_t len, pos = 0;
        uint8_t *b = read_capture("fuzz_mcbin_request", name, &len);
        if (b == NULL)
            continue;
        files++;
        while (pos < len) {
            wn_mcbin_request_t r;
            int rc = wn_mcbin_request_parse(NULL, b + pos, len - pos, &r);
            if (rc <= 0)
                fail_msg("%s at %zu: %s", name, pos, wn_err_name(rc));
            pos += r.head_len + r.value_len;
        }
        assert_int_equal(pos, len);
        free(b);
        b = read_capture("fuzz_mcbin_response", name, &len);
        for (pos = 0; b != NULL && pos < len;) {
            wn_mcbin_response_t r;
            uint32_t opaque = (uint32_t)b[pos + 12] << 24 | (uint32_t)b[pos + 13] << 16 |
                              (uint32_t)b[pos + 14] << 8 | b[pos + 15];
            int rc = wn_mcbin_response_parse(NULL, b[pos + 1], opaque, b + pos, len - pos, &r);
            if (rc <= 0)
                fail_msg("%s reply at %zu: %s", name, pos, wn_err_name(rc));
            pos += r.head_len + r.value_len;
        }
        if (b != NULL)
            assert_int_equal(pos, len);
        free(b);
    }
    assert_true(files >= 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_golden_split), cmocka_unit_test(test_request_limits),
        cmocka_unit_test(test_response_golden_split), cmocka_unit_test(test_quiet),
        cmocka_unit_test(test_compose),        cmocka_unit_test(test_captured_traffic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
