/*
 * Unit tests for route/ring.c: point counts (twemproxy's float quirk), live
 * sets, hash_tag, the one-server and empty-key rules, modula slots, random.
 * Placement against real nutcracker is test_placement.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "walnut/core.h"
#include "walnut/route.h"

#define MAX_SERVERS 64

static char names[MAX_SERVERS][32];
static wn_ring_server_t servers[MAX_SERVERS];

static void make_servers(uint32_t n, const uint32_t *weights)
{
    for (uint32_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof(names[i]), "127.0.0.1:%u", 20000 + i);
        servers[i] = (wn_ring_server_t){
            .name = names[i], .name_len = strlen(names[i]), .weight = weights ? weights[i] : 1};
    }
}

static wn_ring_t *make_ring(wn_dist_t dist, uint32_t n, const bool *live, const char *tag)
{
    wn_ring_params_t p = {.dist = dist, .hash = WN_HASH_FNV1A_64, .hash_tag = tag, .epoch = 7};
    wn_ring_t *ring = NULL;
    assert_int_equal(wn_ring_create(&p, servers, n, live, &ring), 0);
    assert_non_null(ring);
    return ring;
}

/* twemproxy computes points per server in single-precision float; for some
 * pool sizes the product lands just under 40 and the server gets 156 points.
 * The expected sizes were computed independently (Python, IEEE single
 * rounding of each step): 25, 47, 50, 55, 61 and 71 below 80. */
static void test_ketama_point_counts(void **state)
{
    (void)state;
    static const uint32_t quirky[] = {25, 47, 50, 55, 61};
    for (uint32_t n = 1; n <= MAX_SERVERS; n++) {
        make_servers(n, NULL);
        wn_ring_t *ring = make_ring(WN_DIST_KETAMA, n, NULL, NULL);
        uint32_t per = 160;
        for (size_t i = 0; i < WN_ARRAY_SIZE(quirky); i++)
            if (quirky[i] == n)
                per = 156;
        assert_int_equal(wn_ring_npoints(ring), n * per);
        assert_int_equal(wn_ring_nlive(ring), n);
        assert_int_equal(wn_ring_epoch(ring), 7);
        wn_ring_unref(ring);
    }
}

static void test_ketama_weights(void **state)
{
    (void)state;
    uint32_t w[] = {1, 2, 3};
    make_servers(3, w);
    wn_ring_t *ring = make_ring(WN_DIST_KETAMA, 3, NULL, NULL);
    /* 160*3*w/6 -> 80, 160, 240 */
    assert_int_equal(wn_ring_npoints(ring), 480);
    uint32_t hits[3] = {0};
    char key[32];
    for (int i = 0; i < 60000; i++) {
        int len = snprintf(key, sizeof(key), "key:%d", i);
        uint32_t s = wn_ring_lookup(ring, key, (size_t)len);
        assert_true(s < 3);
        hits[s]++;
    }
    /* Roughly proportional to weight. */
    assert_true(hits[0] > 5000 && hits[0] < 15000);
    assert_true(hits[2] > 22000 && hits[2] < 38000);
    wn_ring_unref(ring);
}

/* Ejecting a server moves only its keys; every other key stays put. */
static void test_ketama_eject_moves_only_its_keys(void **state)
{
    (void)state;
    make_servers(5, NULL);
    bool live[5] = {true, true, false, true, true};
    wn_ring_t *all = make_ring(WN_DIST_KETAMA, 5, NULL, NULL);
    wn_ring_t *some = make_ring(WN_DIST_KETAMA, 5, live, NULL);
    assert_int_equal(wn_ring_nlive(some), 4);
    char key[32];
    int moved = 0;
    for (int i = 0; i < 20000; i++) {
        int len = snprintf(key, sizeof(key), "user:%d", i);
        uint32_t a = wn_ring_lookup(all, key, (size_t)len);
        uint32_t b = wn_ring_lookup(some, key, (size_t)len);
        assert_int_not_equal(b, 2);
        if (a != 2)
            assert_int_equal(a, b);
        else
            moved++;
    }
    assert_true(moved > 2000); /* about a fifth of the keys lived on server 2 */
    wn_ring_unref(all);
    wn_ring_unref(some);
}

static void test_no_live_server(void **state)
{
    (void)state;
    make_servers(3, NULL);
    bool live[3] = {false, false, false};
    for (int d = 0; d < WN_DIST_COUNT; d++) {
        wn_ring_t *ring = make_ring((wn_dist_t)d, 3, live, NULL);
        assert_int_equal(wn_ring_lookup(ring, "k", 1), WN_RING_NONE);
        assert_int_equal(wn_ring_npoints(ring), 0);
        wn_ring_unref(ring);
    }
    /* A single dead server is not answered by the one-server shortcut. */
    wn_ring_t *one = make_ring(WN_DIST_KETAMA, 1, live, NULL);
    assert_int_equal(wn_ring_lookup(one, "k", 1), WN_RING_NONE);
    wn_ring_unref(one);
}

static void test_one_server_shortcut(void **state)
{
    (void)state;
    make_servers(1, NULL);
    for (int d = 0; d < WN_DIST_COUNT; d++) {
        wn_ring_t *ring = make_ring((wn_dist_t)d, 1, NULL, NULL);
        assert_int_equal(wn_ring_lookup(ring, "anything", 8), 0);
        assert_int_equal(wn_ring_lookup(ring, "", 0), 0);
        wn_ring_unref(ring);
    }
}

/* The empty key hashes to 0: it lands where hash 0 lands, the first point. */
static void test_empty_key_hashes_to_zero(void **state)
{
    (void)state;
    make_servers(8, NULL);
    wn_ring_t *ring = make_ring(WN_DIST_MODULA, 8, NULL, NULL);
    assert_int_equal(wn_ring_lookup(ring, "", 0), 0); /* slot 0 % 8 */
    wn_ring_unref(ring);
}

static void test_hash_tag_span(void **state)
{
    (void)state;
    make_servers(4, NULL);
    wn_ring_t *ring = make_ring(WN_DIST_KETAMA, 4, NULL, "{}");
    struct {
        const char *key;
        const char *span;
    } cases[] = {
        {"user{42}:name", "42"}, {"{42}", "42"},  {"{}x", "{}x"},   {"a{b", "a{b"},
        {"{ab}c{d}", "ab"},      {"x}y{z}", "z"}, {"nokey", "nokey"}, {"{{a}}", "{a"},
    };
    for (size_t i = 0; i < WN_ARRAY_SIZE(cases); i++) {
        const char *span;
        size_t len;
        wn_ring_hash_span(ring, cases[i].key, strlen(cases[i].key), &span, &len);
        assert_int_equal(len, strlen(cases[i].span));
        assert_memory_equal(span, cases[i].span, len);
    }
    /* Keys sharing a tag share a server. */
    uint32_t s = wn_ring_lookup(ring, "user{7}:a", 9);
    for (int i = 0; i < 50; i++) {
        char key[32];
        int len = snprintf(key, sizeof(key), "x%d{7}y", i);
        assert_int_equal(wn_ring_lookup(ring, key, (size_t)len), s);
    }
    wn_ring_unref(ring);
}

static void test_modula_slots(void **state)
{
    (void)state;
    uint32_t w[] = {2, 1, 3};
    make_servers(3, w);
    wn_ring_t *ring = make_ring(WN_DIST_MODULA, 3, NULL, NULL);
    assert_int_equal(wn_ring_npoints(ring), 6);
    /* hash % 6 -> slots 0,1 server 0; slot 2 server 1; slots 3..5 server 2. */
    char key[32];
    for (int i = 0; i < 1000; i++) {
        int len = snprintf(key, sizeof(key), "m%d", i);
        uint32_t h = wn_hash(WN_HASH_FNV1A_64, key, (size_t)len);
        static const uint32_t slot_server[] = {0, 0, 1, 2, 2, 2};
        assert_int_equal(wn_ring_lookup(ring, key, (size_t)len), slot_server[h % 6]);
    }
    wn_ring_unref(ring);
}

static void test_random_spreads_over_live(void **state)
{
    (void)state;
    make_servers(4, NULL);
    bool live[4] = {true, false, true, true};
    wn_ring_t *ring = make_ring(WN_DIST_RANDOM, 4, live, NULL);
    uint32_t hits[4] = {0};
    for (int i = 0; i < 10000; i++)
        hits[wn_ring_lookup(ring, "same", 4)]++;
    assert_int_equal(hits[1], 0);
    assert_true(hits[0] > 2000 && hits[2] > 2000 && hits[3] > 2000);
    wn_ring_unref(ring);
}

static void test_refcount_and_bad_input(void **state)
{
    (void)state;
    make_servers(2, NULL);
    wn_ring_t *ring = make_ring(WN_DIST_KETAMA, 2, NULL, NULL);
    wn_ring_ref(ring);
    wn_ring_unref(ring);
    assert_int_equal(wn_ring_nservers(ring), 2); /* still alive: one ref left */
    wn_ring_unref(ring);
    wn_ring_unref(NULL);

    wn_ring_t *out = (wn_ring_t *)0x1;
    servers[0].weight = 0;
    wn_ring_params_t p = {.dist = WN_DIST_KETAMA, .hash = WN_HASH_MD5};
    assert_int_equal(wn_ring_create(&p, servers, 2, NULL, &out), WN_EINVAL);
    assert_ptr_equal(out, (wn_ring_t *)0x1); /* untouched on error */
    p.dist = WN_DIST_COUNT;
    servers[0].weight = 1;
    assert_int_equal(wn_ring_create(&p, servers, 2, NULL, &out), WN_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ketama_point_counts),
        cmocka_unit_test(test_ketama_weights),
        cmocka_unit_test(test_ketama_eject_moves_only_its_keys),
        cmocka_unit_test(test_no_live_server),
        cmocka_unit_test(test_one_server_shortcut),
        cmocka_unit_test(test_empty_key_hashes_to_zero),
        cmocka_unit_test(test_hash_tag_span),
        cmocka_unit_test(test_modula_slots),
        cmocka_unit_test(test_random_spreads_over_live),
        cmocka_unit_test(test_refcount_and_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
