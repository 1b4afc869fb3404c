/*
 * test_proto_mcbin_text.c: binary requests as text (meta) commands and text
 * replies as binary statuses. Golden tables: the line each opcode becomes
 * (the meta commands were checked against memcached 1.6.18 by the
 * integration test, which compares walnut's packets with memcached's own);
 * the status every reply code maps to, per opcode (memcached's binary
 * answers, measured: ADD refused is "Data exists", REPLACE refused is "Not
 * found", APPEND refused is "Not stored"); keys with every byte value never
 * break the line; exact-size buffers (ASan); walnut's stats text as STAT
 * packets, byte for byte.
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

static size_t build(uint8_t *out, uint8_t op, const void *extras, size_t nextras,
                    const void *key, size_t nkey, size_t nvalue, uint64_t cas)
{
    wn_mcbin_header_t h = {
        .magic = WN_MCBIN_REQ_MAGIC,
        .opcode = op,
        .keylen = (uint16_t)nkey,
        .extlen = (uint8_t)nextras,
        .bodylen = (uint32_t)(nextras + nkey + nvalue),
        .opaque = 7,
        .cas = cas,
    };
    wn_mcbin_header_encode(out, &h);
    if (nextras > 0)
        memcpy(out + WN_MCBIN_HEADER_LEN, extras, nextras);
    if (nkey > 0)
        memcpy(out + WN_MCBIN_HEADER_LEN + nextras, key, nkey);
    memset(out + WN_MCBIN_HEADER_LEN + nextras + nkey, 'v', nvalue);
    return WN_MCBIN_HEADER_LEN + nextras + nkey + nvalue;
}

typedef struct line_case {
    const char *name;
    uint8_t op;
    const char *extras;
    size_t nextras;
    const char *key;
    size_t nkey;
    size_t nvalue;
    uint64_t cas;
    const char *line; /* NULL: WN_EINVAL */
} line_case_t;

#define X(s) .extras = (s), .nextras = sizeof(s) - 1
#define K(s) .key = (s), .nkey = sizeof(s) - 1
/* flags 0xdeadbeef, exptime 100 */
#define SETX "\xde\xad\xbe\xef\0\0\0\x64"
#define EXP100 "\0\0\0\x64"
/* delta 5, initial 10, exptime 0 / 0xffffffff / 2^31 */
#define INCRX "\0\0\0\0\0\0\0\5\0\0\0\0\0\0\0\x0a\0\0\0\0"
#define INCRX_NOCREATE "\0\0\0\0\0\0\0\5\0\0\0\0\0\0\0\x0a\xff\xff\xff\xff"
#define INCRX_BIGEXP "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x80\0\0\0"
#define A10 "aaaaaaaaaa"
#define A50 A10 A10 A10 A10 A10
#define A250 A50 A50 A50 A50 A50

/* clang-format off */
static const line_case_t line_cases[] = {
    {"get", 0x00, K("k1"), .line = "mg k1 v f c\r\n"},
    {"getq", 0x09, K("k1"), .line = "mg k1 v f c\r\n"},
    {"getk", 0x0c, K("k1"), .line = "mg k1 v f c\r\n"},
    {"getkq", 0x0d, K("k1"), .line = "mg k1 v f c\r\n"},
    {"gat", 0x1d, X(EXP100), K("k1"), .line = "mg k1 T100 v f c\r\n"},
    {"gatq", 0x1e, X(EXP100), K("k1"), .line = "mg k1 T100 v f c\r\n"},
    {"gatk", 0x23, X(EXP100), K("k1"), .line = "mg k1 T100 v f c\r\n"},
    {"gatkq", 0x24, X(EXP100), K("k1"), .line = "mg k1 T100 v f c\r\n"},
    {"touch", 0x1c, X(EXP100), K("k1"), .line = "mg k1 T100 f c\r\n"},
    {"touch exptime 2^32-1", 0x1c, X("\xff\xff\xff\xff"), K("k"), .line = "mg k T2147483647 f c\r\n"},
    {"set", 0x01, X(SETX), K("k1"), .nvalue = 5, .line = "ms k1 5 T100 F3735928559 c\r\n"},
    {"setq", 0x11, X(SETX), K("k1"), .nvalue = 5, .line = "ms k1 5 T100 F3735928559 c\r\n"},
    {"set empty", 0x01, X(SETX), K("k1"), .line = "ms k1 0 T100 F3735928559 c\r\n"},
    {"set cas", 0x01, X(SETX), K("k1"), .nvalue = 1, .cas = 42, .line = "ms k1 1 T100 F3735928559 C42 c\r\n"},
    {"add", 0x02, X(SETX), K("k1"), .nvalue = 1, .line = "ms k1 1 T100 F3735928559 ME c\r\n"},
    {"addq", 0x12, X(SETX), K("k1"), .nvalue = 1, .line = "ms k1 1 T100 F3735928559 ME c\r\n"},
    {"add cas: a cas set", 0x02, X(SETX), K("k1"), .nvalue = 1, .cas = 9, .line = "ms k1 1 T100 F3735928559 C9 c\r\n"},
    {"replace", 0x03, X(SETX), K("k1"), .nvalue = 1, .line = "ms k1 1 T100 F3735928559 MR c\r\n"},
    {"replace cas: a cas set", 0x13, X(SETX), K("k1"), .nvalue = 1, .cas = 9, .line = "ms k1 1 T100 F3735928559 C9 c\r\n"},
    {"append", 0x0e, K("k1"), .nvalue = 2, .line = "ms k1 2 MA c\r\n"},
    {"appendq cas", 0x19, K("k1"), .nvalue = 2, .cas = 3, .line = "ms k1 2 MA C3 c\r\n"},
    {"prepend", 0x0f, K("k1"), .nvalue = 2, .line = "ms k1 2 MP c\r\n"},
    {"prependq", 0x1a, K("k1"), .nvalue = 2, .line = "ms k1 2 MP c\r\n"},
    {"set exptime 2^31", 0x01, X("\0\0\0\0\x80\0\0\0"), K("k"), .nvalue = 1, .line = "ms k 1 T2147483647 F0 c\r\n"},
    {"delete", 0x04, K("k1"), .line = "md k1\r\n"},
    {"deleteq cas", 0x14, K("k1"), .cas = 18446744073709551615ull, .line = "md k1 C18446744073709551615\r\n"},
    {"incr", 0x05, X(INCRX), K("n"), .line = "ma n N0 J10 D5 v c\r\n"},
    {"incrq", 0x15, X(INCRX), K("n"), .line = "ma n N0 J10 D5 v c\r\n"},
    {"decr", 0x06, X(INCRX), K("n"), .line = "ma n N0 J10 D5 MD v c\r\n"},
    {"decrq cas", 0x16, X(INCRX), K("n"), .cas = 77, .line = "ma n N0 J10 D5 MD C77 v c\r\n"},
    {"incr no create", 0x05, X(INCRX_NOCREATE), K("n"), .line = "ma n D5 v c\r\n"},
    {"incr max values", 0x05, X(INCRX_BIGEXP), K("n"), .line = "ma n N2147483647 J18446744073709551615 D18446744073709551615 v c\r\n"},
    {"flush", 0x08, .line = "flush_all\r\n"},
    {"flushq", 0x18, .line = "flush_all\r\n"},
    {"flush delay", 0x08, X(EXP100), .line = "flush_all 100\r\n"},
    {"flush delay 2^32-1", 0x08, X("\xff\xff\xff\xff"), .line = "flush_all 2147483647\r\n"},
    {"key 250", 0x00, K(A250), .line = "mg " A250 " v f c\r\n"},
    /* bytes the text protocol carries as they are */
    {"key tab ctl del high", 0x00, K("\t\x01\x7f\xff\r"), .line = "mg \t\x01\x7f\xff\r v f c\r\n"},
    /* NUL, LF and space: base64 with the b flag */
    {"key with space", 0x00, K("a b"), .line = "mg YSBi b v f c\r\n"},
    {"key with LF", 0x04, K("a\n"), .line = "md YQo= b\r\n"},
    {"key with NUL", 0x05, X(INCRX), K("\0"), .line = "ma AA== b N0 J10 D5 v c\r\n"},
    {"set key with space", 0x01, X(SETX), K("a b"), .nvalue = 3, .line = "ms YSBi 3 b T100 F3735928559 c\r\n"},
    {"append key with space", 0x0e, K("a b"), .nvalue = 3, .line = "ms YSBi 3 b MA c\r\n"},
    /* not sent to a server */
    {"noop", 0x0a, .line = NULL},
    {"version", 0x0b, .line = "version\r\n"},
    {"quit", 0x07, .line = NULL},
    {"stat", 0x10, .line = NULL},
};
/* clang-format on */

static void test_request_lines(void **state)
{
    (void)state;
    uint8_t pkt[1024];
    for (size_t i = 0; i < WN_ARRAY_SIZE(line_cases); i++) {
        const line_case_t *c = &line_cases[i];
        size_t n = build(pkt, c->op, c->extras, c->nextras, c->key, c->nkey, c->nvalue, c->cas);
        wn_mcbin_request_t q;
        int rc = wn_mcbin_request_parse(NULL, pkt, n, &q);
        if (rc <= 0)
            fail_msg("%s: request refused (%d)", c->name, rc);
        char line[WN_MCBIN_TEXT_LINE_MAX];
        int len = wn_mcbin_text_request(line, sizeof(line), pkt, &q);
        if (c->line == NULL) {
            if (len != WN_EINVAL)
                fail_msg("%s: want WN_EINVAL, got %d", c->name, len);
            continue;
        }
        size_t want = strlen(c->line);
        if (len != (int)want || memcmp(line, c->line, want) != 0)
            fail_msg("%s: got '%.*s'", c->name, len > 0 ? len : 0, line);
        /* exact-size buffers: enough, and one byte short */
        char *exact = malloc(want);
        assert_non_null(exact);
        assert_int_equal(wn_mcbin_text_request(exact, want, pkt, &q), (int)want);
        assert_memory_equal(exact, c->line, want);
        assert_int_equal(wn_mcbin_text_request(exact, want - 1, pkt, &q), WN_ETOOBIG);
        free(exact);
    }
}

/* Every byte value in a key, at its longest: one line, its only "\n" at the
 * end, the key one token. */
static void test_request_keys_never_break_lines(void **state)
{
    (void)state;
    uint8_t pkt[1024], key[WN_MCBIN_KEY_MAX];
    char line[WN_MCBIN_TEXT_LINE_MAX];
    for (int b = 0; b < 256; b++) {
        for (size_t len = 1; len <= WN_MCBIN_KEY_MAX; len += (len < 8 ? 1 : 61)) {
            memset(key, 'k', len);
            key[len / 2] = (uint8_t)b;
            for (uint8_t op = 0; op < 0x30; op++) {
                if (!wn_mcbin_op_known(op) || op == 0x10)
                    continue;
                size_t ne = op == 0x05 || op == 0x06 || op == 0x15 || op == 0x16 ? 20
                            : op == 0x01 || op == 0x02 || op == 0x03 || op == 0x11 ||
                                    op == 0x12 || op == 0x13
                                ? 8
                            : op == 0x1c || op == 0x1d || op == 0x1e || op == 0x23 || op == 0x24
                                ? 4
                                : 0;
                uint8_t ext[20] = {0};
                size_t n = build(pkt, op, ext, ne, key, len, 0, 0);
                wn_mcbin_request_t q;
                if (wn_mcbin_request_parse(NULL, pkt, n, &q) <= 0)
                    continue; /* a shape that takes no key */
                int l = wn_mcbin_text_request(line, sizeof(line), pkt, &q);
                bool b64 = b == 0 || b == '\n' || b == ' ';
                if (l == WN_EINVAL) {
                    assert_true(!wn_mcbin_op_known(op) || (b64 && len > 186) ||
                                op == 0x07 || op == 0x0a || op == 0x17 ||
                                op == 0x20 || op == 0x21 || op == 0x22);
                    continue;
                }
                assert_true(l > 2);
                assert_memory_equal(line + l - 2, "\r\n", 2);
                assert_null(memchr(line, '\n', (size_t)l - 1));
                assert_null(memchr(line, '\0', (size_t)l));
                /* the key is the second token */
                const char *sp1 = memchr(line, ' ', (size_t)l);
                if (sp1 == NULL)
                    continue; /* flush_all */
                const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(line + l - sp1 - 1));
                size_t tok = (size_t)((sp2 != NULL ? sp2 : line + l - 2) - sp1 - 1);
                assert_int_equal(tok, b64 ? (len + 2) / 3 * 4 : len);
            }
        }
    }
    /* 186 bytes go base64 (248 bytes), 187 cannot */
    memset(key, ' ', sizeof(key));
    size_t n = build(pkt, 0x00, NULL, 0, key, 186, 0, 0);
    wn_mcbin_request_t q;
    assert_true(wn_mcbin_request_parse(NULL, pkt, n, &q) > 0);
    assert_int_equal(wn_mcbin_text_request(line, sizeof(line), pkt, &q), 3 + 248 + 10) /* "mg " key " b v f c\r\n" */;
    n = build(pkt, 0x00, NULL, 0, key, 187, 0, 0);
    assert_true(wn_mcbin_request_parse(NULL, pkt, n, &q) > 0);
    assert_int_equal(wn_mcbin_text_request(line, sizeof(line), pkt, &q), WN_EINVAL);
}

static void test_unlink_lines(void **state)
{
    (void)state;
    char line[WN_MCBIN_TEXT_LINE_MAX];
    assert_int_equal(wn_mcbin_text_unlink(line, sizeof(line), (const uint8_t *)"k1", 2), 7);
    assert_memory_equal(line, "md k1\r\n", 7);
    assert_int_equal(wn_mcbin_text_unlink(line, sizeof(line), (const uint8_t *)"a b", 3), 11);
    assert_memory_equal(line, "md YSBi b\r\n", 11);
    assert_int_equal(wn_mcbin_text_unlink(line, 10, (const uint8_t *)"a b", 3), WN_ETOOBIG);
    uint8_t key[WN_MCBIN_KEY_MAX + 1];
    memset(key, ' ', sizeof(key));
    assert_int_equal(wn_mcbin_text_unlink(line, sizeof(line), key, 187), WN_EINVAL);
    assert_int_equal(wn_mcbin_text_unlink(line, sizeof(line), key, 0), WN_EINVAL);
    memset(key, 'k', sizeof(key));
    assert_int_equal(wn_mcbin_text_unlink(line, sizeof(line), key, 250), 3 + 250 + 2);
    assert_int_equal(wn_mcbin_text_unlink(line, sizeof(line), key, 251), WN_EINVAL);
}

typedef struct reply_case {
    uint8_t op;
    const char *line;
    int rc;
    uint16_t status;
    bool has_flags;
    uint32_t flags;
    uint64_t cas;
    bool value;
    uint32_t value_len;
} reply_case_t;

#define R_OK(...) 0, WN_MCBIN_OK, __VA_ARGS__
#define R_ST(st) 0, WN_MCBIN_##st, false, 0, 0, false, 0
#define R_BAD WN_EPROTO, 0, false, 0, 0, false, 0

/* clang-format off */
static const reply_case_t reply_cases[] = {
    /* mg */
    {0x00, "VA 5 f3735928559 c9", R_OK(true, 3735928559u, 9, true, 5)},
    {0x0d, "VA 0 f0 c1", R_OK(true, 0, 1, true, 0)},
    {0x1d, "VA 2 c4 f7", R_OK(true, 7, 4, true, 2)},
    {0x00, "EN", R_ST(KEY_ENOENT)},
    {0x09, "EN", R_ST(KEY_ENOENT)},
    {0x24, "EN", R_ST(KEY_ENOENT)},
    {0x1c, "HD f1 c2", R_OK(true, 1, 2, false, 0)},
    {0x1c, "EN", R_ST(KEY_ENOENT)},
    {0x00, "HD f1 c2", R_BAD},
    {0x1c, "VA 1 f1 c2", R_BAD},
    {0x00, "NF", R_BAD},
    {0x00, "VA x f1", R_BAD},
    {0x00, "VA 1 fx", R_BAD},
    {0x00, "VA 1 f4294967296", R_BAD},
    {0x00, "VA 1 f1 c1 t-1 s5 kabc b", R_OK(true, 1, 1, true, 1)},
    /* ms */
    {0x01, "HD c9", R_OK(false, 0, 9, false, 0)},
    {0x11, "HD c9", R_OK(false, 0, 9, false, 0)},
    {0x01, "NS c0", R_ST(NOT_STORED)},
    {0x02, "NS c0", R_ST(KEY_EEXISTS)},
    {0x12, "NS c0", R_ST(KEY_EEXISTS)},
    {0x03, "NS c0", R_ST(KEY_ENOENT)},
    {0x0e, "NS c0", R_ST(NOT_STORED)},
    {0x1a, "NS", R_ST(NOT_STORED)},
    {0x01, "EX c0", R_ST(KEY_EEXISTS)},
    {0x02, "NF c0", R_ST(KEY_ENOENT)},
    {0x01, "EN", R_BAD},
    {0x01, "VA 1", R_BAD},
    /* md */
    {0x04, "HD", R_OK(false, 0, 0, false, 0)},
    {0x04, "NF", R_ST(KEY_ENOENT)},
    {0x14, "EX", R_ST(KEY_EEXISTS)},
    {0x04, "NS", R_BAD},
    /* ma */
    {0x05, "VA 2 c12", R_OK(false, 0, 12, true, 2)},
    {0x16, "VA 20 c1", R_OK(false, 0, 1, true, 20)},
    {0x05, "NF", R_ST(KEY_ENOENT)},
    {0x05, "NS", R_ST(NOT_STORED)},
    {0x06, "EX", R_ST(KEY_EEXISTS)},
    {0x05, "HD", R_BAD},
    /* version: the rest of the line is the value */
    {0x0b, "VERSION 1.6.18", R_OK(false, 0, 0, false, 0)},
    {0x0b, "VERSION", R_OK(false, 0, 0, false, 0)},
    {0x0b, "OK", R_BAD},
    /* flush_all */
    {0x08, "OK", R_OK(false, 0, 0, false, 0)},
    {0x18, "OK", R_OK(false, 0, 0, false, 0)},
    {0x08, "OK x", R_BAD},
    {0x08, "HD", R_BAD},
    /* errors, for any command */
    {0x05, "CLIENT_ERROR cannot increment or decrement non-numeric value", R_ST(DELTA_BADVAL)},
    {0x01, "SERVER_ERROR object too large for cache", R_ST(E2BIG)},
    {0x01, "SERVER_ERROR out of memory storing object", R_ST(ENOMEM)},
    {0x00, "SERVER_ERROR Connection refused", R_ST(EINTERNAL)},
    {0x00, "CLIENT_ERROR bad command line format", R_ST(EINTERNAL)},
    {0x00, "ERROR", R_ST(EINTERNAL)},
    {0x08, "ERROR: unknown", R_ST(EINTERNAL)},
    {0x00, "ERRORS", R_BAD},
    {0x00, "", R_BAD},
    /* not sent to servers at all */
    {0x0a, "HD", R_BAD},
    {0x10, "HD", R_BAD},
};
/* clang-format on */

static void test_replies(void **state)
{
    (void)state;
    for (size_t i = 0; i < WN_ARRAY_SIZE(reply_cases); i++) {
        const reply_case_t *c = &reply_cases[i];
        size_t len = strlen(c->line);
        char *exact = malloc(len + 1);
        assert_non_null(exact);
        memcpy(exact, c->line, len);
        wn_mcbin_text_reply_t rep;
        memset(&rep, 0xa5, sizeof(rep));
        int rc = wn_mcbin_text_reply(c->op, exact, len, &rep);
        free(exact);
        if (rc != c->rc)
            fail_msg("op %02x '%s': rc %d, want %d", c->op, c->line, rc, c->rc);
        if (rc < 0)
            continue;
        if (rep.status != c->status || rep.has_flags != c->has_flags || rep.flags != c->flags ||
            rep.cas != c->cas || rep.value != c->value || rep.value_len != c->value_len)
            fail_msg("op %02x '%s': status %04x flags %d/%u cas %llu value %d/%u", c->op,
                     c->line, rep.status, rep.has_flags, rep.flags,
                     (unsigned long long)rep.cas, rep.value, rep.value_len);
    }
}

static void test_version_text(void **state)
{
    (void)state;
    static const char line[] = "VERSION 1.6.18-xyz 2";
    wn_mcbin_text_reply_t rep;
    assert_int_equal(wn_mcbin_text_reply(0x0b, line, sizeof(line) - 1, &rep), 0);
    assert_int_equal(rep.status, WN_MCBIN_OK);
    assert_int_equal(rep.text_off, 8);
    assert_int_equal(rep.text_len, sizeof(line) - 1 - 8);
    assert_int_equal(wn_mcbin_text_reply(0x0b, "VERSION", 7, &rep), 0);
    assert_int_equal(rep.text_len, 0);
}

static void test_numbers(void **state)
{
    (void)state;
    uint64_t v;
    assert_true(wn_mcbin_text_number("0", 1, &v));
    assert_int_equal(v, 0);
    assert_true(wn_mcbin_text_number("18446744073709551615", 20, &v));
    assert_true(v == UINT64_MAX);
    assert_false(wn_mcbin_text_number("18446744073709551616", 20, &v));
    assert_false(wn_mcbin_text_number("", 0, &v));
    assert_false(wn_mcbin_text_number("1 ", 2, &v));
}

static void test_stats(void **state)
{
    (void)state;
    static const char text[] = "STAT pid 42\r\nSTAT version 0.1.0-walnut\r\n"
                               "STAT odd a b\r\nSTAT empty \r\nEND\r\n";
    int n = wn_mcbin_stats_compose(NULL, 0, 0x01020304, text, sizeof(text) - 1);
    static const uint8_t want[] =
        "\x81\x10\x00\x03\x00\x00\x00\x00\x00\x00\x00\x05\x01\x02\x03\x04"
        "\0\0\0\0\0\0\0\0"
        "pid42"
        "\x81\x10\x00\x07\x00\x00\x00\x00\x00\x00\x00\x13\x01\x02\x03\x04"
        "\0\0\0\0\0\0\0\0"
        "version0.1.0-walnut"
        "\x81\x10\x00\x03\x00\x00\x00\x00\x00\x00\x00\x06\x01\x02\x03\x04"
        "\0\0\0\0\0\0\0\0"
        "odda b"
        "\x81\x10\x00\x05\x00\x00\x00\x00\x00\x00\x00\x05\x01\x02\x03\x04"
        "\0\0\0\0\0\0\0\0"
        "empty"
        "\x81\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04"
        "\0\0\0\0\0\0\0\0";
    assert_int_equal(n, (int)sizeof(want) - 1);
    uint8_t *buf = malloc((size_t)n);
    assert_non_null(buf);
    assert_int_equal(wn_mcbin_stats_compose(buf, (size_t)n, 0x01020304, text, sizeof(text) - 1),
                     n);
    assert_memory_equal(buf, want, (size_t)n);
    assert_int_equal(wn_mcbin_stats_compose(buf, (size_t)n - 1, 0x01020304, text,
                                            sizeof(text) - 1),
                     WN_ETOOBIG);
    free(buf);
    assert_int_equal(wn_mcbin_stats_compose(NULL, 0, 0, "END\r\n", 5), WN_MCBIN_HEADER_LEN);
    assert_int_equal(wn_mcbin_stats_compose(NULL, 0, 0, "STAT a 1\r\n", 10), WN_EPROTO);
    assert_int_equal(wn_mcbin_stats_compose(NULL, 0, 0, "", 0), WN_EPROTO);
    assert_int_equal(wn_mcbin_stats_compose(NULL, 0, 0, "ITEM x\r\nEND\r\n", 13), WN_EPROTO);
}

/* STAT groups: packets (key=value; "" is the empty packet) as memcached
 * 1.6.18's binary STAT sends them when it holds nothing (measured). */
typedef struct group_case {
    const char *group;
    const char *packets; /* "k=v|k=v|" with "|" alone for the empty packet; NULL: ENOENT */
} group_case_t;

static void test_stats_groups(void **state)
{
    (void)state;
    static const group_case_t cases[] = {
        {"items", "|"},
        {"settings", "|"},
        {"slabs", "active_slabs=0|total_malloced=0||"},
        {"sizes", "sizes_status=disabled||"},
        {"sizes_disable", "sizes_status=disabled|"},
        {"sizes_enable", "sizes_status=error|sizes_error=not_supported|"},
        {"reset", "|"},
        {"detail on", "|"},
        {"detail off", "|"},
        {"detail dump", "detailed=END\r\n||"},
        {"detail", NULL},
        {"detail x", NULL},
        {"conns", NULL},
        {"extstore", NULL},
        {"cachedump 1 1", NULL},
        {"cachedump", NULL},
        {"bogus", NULL},
        /* the key's bytes, as memcached's binary STAT reads them (not the
         * words of a text line): a prefix for reset, settings and detail's
         * words, the exact bytes for the others */
        {"resetfoo", "|"},
        {"settingsx", "|"},
        {"detail dumpx", "detailed=END\r\n||"},
        {"detail onx", "|"},
        {"detail  dump", NULL},
        {"detaildump", NULL},
        {"res", NULL},
        {"slabs ", NULL},
        {" slabs", NULL},
        {"items ", NULL},
        {"sizes ", NULL},
        {"sizes_disable ", NULL},
        {"slabsx", NULL},
    };
    for (size_t i = 0; i < WN_ARRAY_SIZE(cases); i++) {
        const group_case_t *c = &cases[i];
        size_t glen = strlen(c->group);
        int n = wn_mcbin_stats_group(NULL, 0, 9, c->group, glen);
        if (c->packets == NULL) {
            if (n != 0)
                fail_msg("%s: want ENOENT (0), got %d", c->group, n);
            continue;
        }
        assert_true(n > 0);
        uint8_t *buf = malloc((size_t)n);
        assert_non_null(buf);
        assert_int_equal(wn_mcbin_stats_group(buf, (size_t)n, 9, c->group, glen), n);
        assert_int_equal(wn_mcbin_stats_group(buf, (size_t)n - 1, 9, c->group, glen), WN_ETOOBIG);
        char got[256] = "";
        size_t pos = 0;
        while (pos < (size_t)n) {
            wn_mcbin_header_t h;
            wn_mcbin_header_decode(buf + pos, &h);
            assert_int_equal(h.magic, WN_MCBIN_RES_MAGIC);
            assert_int_equal(h.opcode, WN_MCBIN_OP_STAT);
            assert_int_equal(h.opaque, 9);
            const char *body = (const char *)buf + pos + WN_MCBIN_HEADER_LEN;
            if (h.bodylen > 0)
                snprintf(got + strlen(got), sizeof(got) - strlen(got), "%.*s=%.*s", h.keylen,
                         body, (int)(h.bodylen - h.keylen), body + h.keylen);
            strncat(got, "|", sizeof(got) - strlen(got) - 1);
            pos += WN_MCBIN_HEADER_LEN + h.bodylen;
        }
        if (strcmp(got, c->packets) != 0)
            fail_msg("%s: got '%s', want '%s'", c->group, got, c->packets);
        free(buf);
    }
}

/* The statuses walnut adds have memcached-style texts in error packets. */
static void test_new_statuses(void **state)
{
    (void)state;
    size_t len;
    assert_string_equal(wn_mcbin_status_text(WN_MCBIN_EINTERNAL, &len), "Internal error");
    assert_string_equal(wn_mcbin_status_text(WN_MCBIN_ETMPFAIL, &len), "Temporary failure");
    assert_int_equal(WN_MCBIN_EINTERNAL, 0x0084);
    assert_int_equal(WN_MCBIN_ETMPFAIL, 0x0086);
    /* a quiet storing request still hears of a failure */
    assert_false(wn_mcbin_quiet_drops(0x11, WN_MCBIN_ETMPFAIL));
    assert_false(wn_mcbin_quiet_drops(0x09, WN_MCBIN_ETMPFAIL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_lines),
        cmocka_unit_test(test_request_keys_never_break_lines),
        cmocka_unit_test(test_unlink_lines),
        cmocka_unit_test(test_replies),
        cmocka_unit_test(test_version_text),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_stats_groups),
        cmocka_unit_test(test_new_statuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
