/*
 * Unit tests for core: the error space and the per-worker buffer pool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "walnut/core.h"

static void test_error_space(void **state)
{
    (void)state;
    assert_string_equal(wn_strerror(0), "success");
    assert_string_equal(wn_strerror(WN_EAGAIN), "more input needed");
    assert_string_equal(wn_err_name(WN_EPROTO), "WN_EPROTO");
    assert_string_equal(wn_strerror(WN_EIO), "input/output error");
    /* libuv's codes pass through and never collide with walnut's. */
    assert_string_equal(wn_strerror(UV_ECONNREFUSED), "connection refused");
    assert_string_equal(wn_err_name(UV_ETIMEDOUT), "ETIMEDOUT");
    assert_true((int)WN_EAGAIN < (int)UV_EOF);
    assert_true((int)WN_ERR_LAST_ < -4096);
}

static void test_bufpool_reuse_and_refs(void **state)
{
    (void)state;
    wn_bufpool_t pool;
    wn_bufpool_init(&pool, 512, 2 * 512); /* keeps two free chunks */
    wn_buf_t *a = wn_buf_get(&pool, 0);
    assert_non_null(a);
    assert_int_equal(a->cap, 512);
    assert_int_equal(a->len, 0);
    assert_int_equal(a->refs, 1);
    assert_int_equal(pool.nlive, 1);
    wn_buf_ref(a);
    wn_buf_unref(a);
    assert_int_equal(pool.nlive, 1); /* one reference left */
    wn_buf_unref(a);
    assert_int_equal(pool.nlive, 0);
    assert_int_equal(pool.nfree, 1);

    /* A returned buffer is handed out again, reset. */
    wn_buf_t *b = wn_buf_get(&pool, 100);
    assert_ptr_equal(a, b);
    assert_int_equal(b->len, 0);
    assert_int_equal(b->refs, 1);

    /* Larger than a chunk: its own allocation, never pooled. */
    wn_buf_t *big = wn_buf_get(&pool, 4096);
    assert_int_equal(big->cap, 4096);
    memset(big->data, 'x', 4096); /* ASan checks the size */
    wn_buf_unref(big);
    assert_int_equal(pool.nfree, 0);

    /* The free list is bounded by max_free. */
    wn_buf_t *c = wn_buf_get(&pool, 0), *d = wn_buf_get(&pool, 0);
    wn_buf_unref(b);
    wn_buf_unref(c);
    wn_buf_unref(d);
    assert_int_equal(pool.nfree, 2);
    /* Byte accounting: two free chunks allocated; the big one and the third
     * chunk went back to malloc. */
    assert_int_equal(pool.bytes, 2 * 512);
    assert_int_equal(pool.freed, 4096 + 512);
    assert_int_equal(wn_bufpool_deinit(&pool), 0);
    assert_int_equal(pool.bytes, 0);
    wn_buf_unref(NULL);
}

/* An exact buffer: its own size, counted, freed (not pooled) when let go. */
static void test_buf_get_exact(void **state)
{
    (void)state;
    wn_bufpool_t pool;
    wn_bufpool_init(&pool, 512, 2 * 512);
    wn_buf_t *small = wn_buf_get_exact(&pool, 100);
    assert_non_null(small);
    assert_int_equal(small->cap, 100);
    assert_int_equal(small->len, 0);
    assert_int_equal(small->refs, 1);
    memset(small->data, 'x', 100); /* ASan checks the size */
    wn_buf_t *none = wn_buf_get_exact(&pool, 0);
    assert_int_equal(none->cap, 1);
    assert_int_equal(pool.nlive, 2);
    assert_int_equal(pool.bytes, 101);
    wn_buf_unref(small);
    wn_buf_unref(none);
    assert_int_equal(pool.nfree, 0);
    assert_int_equal(pool.nlive, 0);
    assert_int_equal(pool.freed, 101);
    /* A free chunk is not handed out for it. */
    wn_buf_unref(wn_buf_get(&pool, 0));
    assert_int_equal(pool.nfree, 1);
    wn_buf_t *e = wn_buf_get_exact(&pool, 64);
    assert_int_equal(e->cap, 64);
    assert_int_equal(pool.nfree, 1);
    wn_buf_unref(e);
    assert_int_equal(wn_bufpool_deinit(&pool), 0);
    assert_int_equal(pool.bytes, 0);
}

static void test_bufpool_reports_leaks(void **state)
{
    (void)state;
    wn_bufpool_t pool;
    wn_bufpool_init(&pool, 512, 8 * 512);
    wn_buf_t *a = wn_buf_get(&pool, 0);
    assert_int_equal(wn_bufpool_deinit(&pool), 1);
    wn_buf_unref(a); /* back on the free list; a second deinit frees it */
    assert_int_equal(wn_bufpool_deinit(&pool), 0);
}

/* The log limiter: the first passes; within the interval none does, and
 * the next one after it says how many were left out and since when. */
static void test_log_limit(void **state)
{
    (void)state;
    wn_log_limit_t l = {0};
    uint32_t left = 99;
    uint64_t since = 99;
    assert_true(wn_log_limit_pass(&l, 0, 10000, &left, &since)); /* a clock at 0 too */
    assert_int_equal(left, 0);
    assert_int_equal(since, 0);
    for (int i = 0; i < 5; i++)
        assert_false(wn_log_limit_pass(&l, 9999, 10000, &left, NULL));
    assert_true(wn_log_limit_pass(&l, 12000, 10000, &left, &since));
    assert_int_equal(left, 5);
    assert_int_equal(since, 11999); /* from 1: a time of 0 is kept as 1 */
    assert_false(wn_log_limit_pass(&l, 12001, 10000, &left, NULL));
    assert_true(wn_log_limit_pass(&l, 22000, 10000, &left, NULL));
    assert_int_equal(left, 1);
}

/* What a message carries (a pool name from the YAML, a server's error
 * text) cannot forge a log line: control bytes are escaped, the line ends
 * once. A 2,000-byte message is cut, not spilled onto a second line. */
static void test_log_escapes_control_bytes(void **state)
{
    (void)state;
    char path[] = "/tmp/walnut-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(wn_log_init(WN_LOG_NOTICE, path), 0);
    const char *name = "p\n[2026-01-01 00:00:00.000] ERROR control x.c:1 forged\r\x1b[2J\t\x7f\\";
    wn_log_notice("pool '%s': listening", name);
    char big[2000];
    memset(big, '\n', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    wn_log_notice("%s", big);
    wn_log_init(WN_LOG_NOTICE, NULL); /* back to stderr: closes the file */

    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    assert_non_null(fgets(line, sizeof(line), f));
    const char *want = "pool 'p\\n[2026-01-01 00:00:00.000] ERROR control x.c:1 "
                       "forged\\r\\x1b[2J\\t\\x7f\\': listening\n";
    size_t len = strlen(line), wlen = strlen(want);
    assert_true(len > wlen);
    assert_string_equal(line + len - wlen, want);
    assert_non_null(fgets(line, sizeof(line), f));
    len = strlen(line);
    assert_true(len > 1000 && len <= 2048);
    assert_int_equal(line[len - 1], '\n');
    assert_int_equal(line[len - 2], 'n'); /* ...\n\n\n cut whole, before the newline */
    assert_int_equal(line[len - 3], '\\');
    assert_null(fgets(line, sizeof(line), f)); /* two lines, no more */
    fclose(f);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_space),   cmocka_unit_test(test_bufpool_reuse_and_refs),
        cmocka_unit_test(test_buf_get_exact), cmocka_unit_test(test_bufpool_reports_leaks),
        cmocka_unit_test(test_log_limit),     cmocka_unit_test(test_log_escapes_control_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
