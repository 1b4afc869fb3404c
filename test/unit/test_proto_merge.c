/*
 * Unit tests for proto/mc_merge.c: a split multi-get's VALUE blocks come
 * back in the client's key order, misses skipped, duplicates answered.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "walnut/proto.h"

typedef struct frag {
    const char *keys[8];
    uint32_t lens[8];
    wn_mc_frag_values_t fv;
} frag_t;

static void frag_init(frag_t *f, const char *const *hits, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        f->keys[i] = hits[i];
        f->lens[i] = (uint32_t)strlen(hits[i]);
    }
    f->fv = (wn_mc_frag_values_t){.keys = f->keys, .lens = f->lens, .n = n};
}

/* Merge client keys (each with its fragment) into "f:i" picks, "-" for a miss. */
static void merge(frag_t *frags, const char *const *keys, const int *key_frag, int nkeys,
                  char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int k = 0; k < nkeys; k++) {
        int32_t i = wn_mc_merge_take(&frags[key_frag[k]].fv, keys[k], (uint32_t)strlen(keys[k]));
        if (i < 0)
            n += (size_t)snprintf(out + n, cap - n, "- ");
        else
            n += (size_t)snprintf(out + n, cap - n, "%d:%d ", key_frag[k], i);
    }
}

static void test_interleaved_fragments(void **state)
{
    (void)state;
    /* Client asks a b c d e; a c e live on fragment 0, b d on fragment 1. */
    static const char *const keys[] = {"a", "b", "c", "d", "e"};
    static const int kf[] = {0, 1, 0, 1, 0};
    frag_t f[2];
    frag_init(&f[0], (const char *const[]){"a", "c", "e"}, 3);
    frag_init(&f[1], (const char *const[]){"b", "d"}, 2);
    char out[128];
    merge(f, keys, kf, 5, out, sizeof(out));
    assert_string_equal(out, "0:0 1:0 0:1 1:1 0:2 ");
}

static void test_misses_are_skipped(void **state)
{
    (void)state;
    static const char *const keys[] = {"a", "b", "c", "d", "e"};
    static const int kf[] = {0, 1, 0, 1, 0};
    frag_t f[2];
    frag_init(&f[0], (const char *const[]){"c"}, 1); /* a and e missed */
    frag_init(&f[1], (const char *const[]){"b", "d"}, 2);
    char out[128];
    merge(f, keys, kf, 5, out, sizeof(out));
    assert_string_equal(out, "- 1:0 0:0 1:1 - ");
}

static void test_duplicates_and_prefixes(void **state)
{
    (void)state;
    /* "get ab a ab": the fragment answers each occurrence; a key is never
     * matched by a prefix of another. */
    static const char *const keys[] = {"ab", "a", "ab", "abc"};
    static const int kf[] = {0, 0, 0, 0};
    frag_t f[1];
    frag_init(&f[0], (const char *const[]){"ab", "a", "ab"}, 3);
    char out[128];
    merge(f, keys, kf, 4, out, sizeof(out));
    assert_string_equal(out, "0:0 0:1 0:2 - ");
}

static void test_all_miss_and_empty(void **state)
{
    (void)state;
    static const char *const keys[] = {"x", "y"};
    static const int kf[] = {0, 1};
    frag_t f[2];
    frag_init(&f[0], NULL, 0);
    frag_init(&f[1], NULL, 0);
    char out[64];
    merge(f, keys, kf, 2, out, sizeof(out));
    assert_string_equal(out, "- - ");
}

/* A reply out of the fragment's key order cannot be placed: those VALUEs are
 * not sent rather than sent against the wrong key. */
static void test_unexpected_order_is_not_misattributed(void **state)
{
    (void)state;
    static const char *const keys[] = {"a", "b"};
    static const int kf[] = {0, 0};
    frag_t f[1];
    frag_init(&f[0], (const char *const[]){"b", "a"}, 2);
    char out[64];
    merge(f, keys, kf, 2, out, sizeof(out));
    assert_string_equal(out, "- 0:0 ");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interleaved_fragments),
        cmocka_unit_test(test_misses_are_skipped),
        cmocka_unit_test(test_duplicates_and_prefixes),
        cmocka_unit_test(test_all_miss_and_empty),
        cmocka_unit_test(test_unexpected_order_is_not_misattributed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
