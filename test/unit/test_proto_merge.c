/*
 * Unit tests for proto/mc_merge.c: which key a VALUE line answers. A split
 * multi-get's VALUE blocks are put back at their own keys' places; a VALUE
 * naming no key still to come is refused, never attributed to another key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "walnut/proto.h"

/* Keys of `line` (space separated, starting at 0) as spans. */
static uint32_t spans(const char *line, wn_mc_span_t *out)
{
    uint32_t n = 0, i = 0, len = (uint32_t)strlen(line);
    while (i < len) {
        while (i < len && line[i] == ' ')
            i++;
        uint32_t s = i;
        while (i < len && line[i] != ' ')
            i++;
        if (i > s)
            out[n++] = (wn_mc_span_t){s, i - s};
    }
    return n;
}

/* Match the VALUE keys `vals` in turn; write the positions ("-" for none). */
static void match(const char *line, const uint32_t *order, uint32_t n_order, const char *vals,
                  char *out, size_t cap)
{
    wn_mc_span_t keys[16], v[16];
    uint32_t nk = spans(line, keys), nv = spans(vals, v);
    uint32_t cursor = 0;
    size_t o = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < nv; i++) {
        int32_t j = wn_mc_match_key(line, keys, order, order ? n_order : nk, &cursor,
                                    vals + v[i].off, v[i].len);
        o += (size_t)snprintf(out + o, cap - o, j < 0 ? "- " : "%d ", j);
    }
}

static void test_in_order_with_misses(void **state)
{
    (void)state;
    char out[64];
    match("a b c d e", NULL, 0, "a c e", out, sizeof(out));
    assert_string_equal(out, "0 2 4 ");
    match("a b c d e", NULL, 0, "", out, sizeof(out));
    assert_string_equal(out, "");
}

static void test_duplicates_and_prefixes(void **state)
{
    (void)state;
    char out[64];
    /* Each occurrence answered once; a key never matches a prefix of another. */
    match("ab a ab abc", NULL, 0, "ab a ab", out, sizeof(out));
    assert_string_equal(out, "0 1 2 ");
    match("ab a ab abc", NULL, 0, "abc", out, sizeof(out));
    assert_string_equal(out, "3 ");
    match("ab", NULL, 0, "a", out, sizeof(out));
    assert_string_equal(out, "- ");
}

/* A VALUE for a key not asked, or one answered already, or out of order: refused. */
static void test_unexpected_values_refused(void **state)
{
    (void)state;
    char out[64];
    match("a b", NULL, 0, "secret", out, sizeof(out));
    assert_string_equal(out, "- ");
    match("a b", NULL, 0, "b a", out, sizeof(out));
    assert_string_equal(out, "1 - ");
    match("a", NULL, 0, "a a", out, sizeof(out));
    assert_string_equal(out, "0 - ");
}

/* A fragment's keys are a subset of the line's, visited through `order`. */
static void test_fragment_order(void **state)
{
    (void)state;
    char out[64];
    static const uint32_t frag1[] = {1, 3}; /* "b d" of "a b c d e" */
    match("a b c d e", frag1, 2, "b d", out, sizeof(out));
    assert_string_equal(out, "0 1 ");
    match("a b c d e", frag1, 2, "a", out, sizeof(out));
    assert_string_equal(out, "- ");
}

static void test_line_keys(void **state)
{
    (void)state;
    const char *line = "get  k1 k2  k1\r\n";
    wn_mc_req_parser_t p;
    wn_mc_req_parser_init(&p, NULL);
    wn_mc_request_t q;
    assert_int_equal(wn_mc_request_parse(&p, line, strlen(line), &q), (int)strlen(line));
    uint32_t cursor = 0;
    assert_true(wn_mc_match_line_key(line, q.keys, &cursor, "k1", 2));
    assert_true(wn_mc_match_line_key(line, q.keys, &cursor, "k1", 2)); /* the third key */
    assert_false(wn_mc_match_line_key(line, q.keys, &cursor, "k2", 2)); /* passed already */
    cursor = 0;
    assert_false(wn_mc_match_line_key(line, q.keys, &cursor, "k", 1));
    assert_false(wn_mc_match_line_key(line, q.keys, &cursor, "get", 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order_with_misses),
        cmocka_unit_test(test_duplicates_and_prefixes),
        cmocka_unit_test(test_unexpected_values_refused),
        cmocka_unit_test(test_fragment_order),
        cmocka_unit_test(test_line_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
