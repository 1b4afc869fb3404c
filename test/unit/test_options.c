/*
 * Unit tests for control/options.c: twemproxy's flags keep their meaning and
 * defaults; errors name the option and what it needs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "walnut/control.h"
#include "walnut/core.h"

static int parse(wn_options_t *o, char *err, size_t errlen, int argc, const char **argv)
{
    return wn_options_parse(argc, (char **)argv, o, err, errlen);
}

#define PARSE(o, err, ...)                                                                        \
    parse((o), (err), sizeof(err),                                                                \
          (int)(sizeof((const char *[]){"walnut", __VA_ARGS__}) / sizeof(const char *)),          \
          (const char *[]){"walnut", __VA_ARGS__})

static void test_defaults(void **state)
{
    (void)state;
    wn_options_t o;
    char err[256] = "";
    const char *argv[] = {"walnut"};
    assert_int_equal(parse(&o, err, sizeof(err), 1, argv), 0);
    assert_int_equal(o.action, WN_ACTION_RUN);
    assert_int_equal(o.verbosity, 5);
    assert_string_equal(o.conf_file, WN_DEFAULT_CONF_FILE);
    assert_int_equal(o.stats_port, 22222);
    assert_string_equal(o.stats_addr, "0.0.0.0");
    assert_int_equal(o.stats_interval, 30000);
    assert_int_equal(o.mbuf_size, 16384);
    assert_null(o.pid_file);
    assert_null(o.log_file);
    assert_false(o.daemonize);
    assert_int_equal(o.workers, 0);
}

static void test_short_and_long_forms(void **state)
{
    (void)state;
    wn_options_t o;
    char err[256] = "";
    assert_int_equal(PARSE(&o, err, "-t", "-c", "x.yml", "-v", "11", "-o", "log", "-s", "9999",
                           "-a", "127.0.0.1", "-i", "500", "-p", "pid", "-m", "512", "-T", "4",
                           "-d"),
                     0);
    assert_int_equal(o.action, WN_ACTION_TEST_CONF);
    assert_string_equal(o.conf_file, "x.yml");
    assert_int_equal(o.verbosity, 11);
    assert_string_equal(o.log_file, "log");
    assert_int_equal(o.stats_port, 9999);
    assert_string_equal(o.stats_addr, "127.0.0.1");
    assert_int_equal(o.stats_interval, 500);
    assert_string_equal(o.pid_file, "pid");
    assert_int_equal(o.mbuf_size, 512);
    assert_int_equal(o.workers, 4);
    assert_true(o.daemonize);

    assert_int_equal(PARSE(&o, err, "--conf-file=y.yml", "--workers", "2", "--verbose=0",
                           "--mbuf-size=16777216", "--describe-stats"),
                     0);
    assert_string_equal(o.conf_file, "y.yml");
    assert_int_equal(o.workers, 2);
    assert_int_equal(o.verbosity, 0);
    assert_int_equal(o.mbuf_size, 16777216);
    assert_int_equal(o.action, WN_ACTION_DESCRIBE_STATS);

    assert_int_equal(PARSE(&o, err, "-V"), 0);
    assert_int_equal(o.action, WN_ACTION_VERSION);
    assert_int_equal(PARSE(&o, err, "--help"), 0);
    assert_int_equal(o.action, WN_ACTION_HELP);
    assert_false(o.describe_stats);

    /* nutcracker's order, whatever the flags' (-V -t printed no version
     * and tested the configuration) */
    assert_int_equal(PARSE(&o, err, "-V", "-t"), 0);
    assert_int_equal(o.action, WN_ACTION_VERSION);
    assert_int_equal(PARSE(&o, err, "-t", "-D"), 0);
    assert_int_equal(o.action, WN_ACTION_DESCRIBE_STATS);
    assert_int_equal(PARSE(&o, err, "-D", "-t"), 0);
    assert_int_equal(o.action, WN_ACTION_DESCRIBE_STATS);
    assert_int_equal(PARSE(&o, err, "-D", "-V"), 0);
    assert_int_equal(o.action, WN_ACTION_VERSION);
    assert_true(o.describe_stats);
    assert_int_equal(PARSE(&o, err, "-h", "-V", "-D", "-t"), 0);
    assert_int_equal(o.action, WN_ACTION_HELP);
    assert_true(o.describe_stats);
    assert_int_equal(PARSE(&o, err, "-t", "--locate", "k"), 0);
    assert_int_equal(o.action, WN_ACTION_TEST_CONF);
}

static void test_locate(void **state)
{
    (void)state;
    wn_options_t o;
    char err[256] = "";
    assert_int_equal(PARSE(&o, err, "-c", "a.yml", "--locate", "k1", "k2"), 0);
    assert_int_equal(o.action, WN_ACTION_LOCATE);
    assert_int_equal(o.nlocate_keys, 2);
    assert_string_equal(o.locate_keys[0], "k1");
    assert_string_equal(o.locate_keys[1], "k2");
    assert_int_equal(PARSE(&o, err, "--locate"), WN_EINVAL);
    assert_non_null(strstr(err, "--locate requires at least one KEY"));
}

/* What nutcracker 0.5.0 takes: -v past 11 (it clamps), -i 0. */
static void test_twemproxy_values(void **state)
{
    (void)state;
    wn_options_t o;
    char err[256] = "";
    assert_int_equal(PARSE(&o, err, "-v", "12"), 0);
    assert_int_equal(o.verbosity, 11);
    assert_int_equal(PARSE(&o, err, "-v", "99999999999"), 0);
    assert_int_equal(o.verbosity, 11);
    assert_int_equal(PARSE(&o, err, "-i", "0"), 0);
    assert_int_equal(o.stats_interval, 0);
}

static void expect_error(const char *needle, int rc, const char *err)
{
    assert_int_equal(rc, WN_EINVAL);
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' does not contain '%s'", err, needle);
}

static void test_errors_name_the_option(void **state)
{
    (void)state;
    wn_options_t o;
    char err[256];
    expect_error("option -v/--verbose requires a number from 0 to 11, not '-1'",
                 PARSE(&o, err, "-v", "-1"), err);
    expect_error("option -s/--stats-port requires a port", PARSE(&o, err, "-s", "0"), err);
    expect_error("option -s/--stats-port requires a port", PARSE(&o, err, "-s", "70000"), err);
    expect_error("option -a/--stats-addr requires an address", PARSE(&o, err, "-a", ""), err);
    expect_error("option -m/--mbuf-size requires a size from 512", PARSE(&o, err, "-m", "100"), err);
    expect_error("option -m/--mbuf-size requires a size", PARSE(&o, err, "-m", "16k"), err);
    expect_error("option -T/--workers requires a number from 1 to 256", PARSE(&o, err, "-T", "0"),
                 err);
    expect_error("option -i/--stats-interval requires a number of milliseconds",
                 PARSE(&o, err, "-i", "x"), err);
    expect_error("option -c/--conf-file requires a value", PARSE(&o, err, "-c"), err);
    /* a flag given a value: it takes none (it was "requires a value") */
    expect_error("option -t/--test-conf takes no value", PARSE(&o, err, "--test-conf=1"), err);
    expect_error("option -d/--daemonize takes no value", PARSE(&o, err, "--daemonize=yes"), err);
    expect_error("option --locate takes no value", PARSE(&o, err, "--locate=k", "k"), err);
    expect_error("unknown option -x", PARSE(&o, err, "-x"), err);
    expect_error("unknown option '--bogus'", PARSE(&o, err, "--bogus"), err);
    expect_error("unexpected argument 'stray'", PARSE(&o, err, "stray"), err);
}

/* Each of the n values after `opt` is refused with WN_EINVAL and an error
 * that says `want`. */
static void assert_refused(const char *opt, const char *const *bad, size_t n, const char *want)
{
    wn_options_t o;
    char err[256];
    for (size_t i = 0; i < n; i++) {
        err[0] = '\0';
        if (PARSE(&o, err, opt, bad[i]) != WN_EINVAL)
            fail_msg("%s '%s' was taken", opt, bad[i]);
        if (strstr(err, want) == NULL)
            fail_msg("%s '%s': %s", opt, bad[i], err);
    }
}

/* --client-memory: bytes, K/M/G powers of 1024, 0 for no bound; unset by
 * default (control then takes half the memory walnut may use). */
static void test_client_memory(void **state)
{
    (void)state;
    wn_options_t o;
    char err[256] = "";
    assert_int_equal(PARSE(&o, err), 0);
    assert_false(o.client_memory_set);
    static const struct {
        const char *arg;
        uint64_t want;
    } ok[] = {
        {"0", 0},           {"1048576", 1048576},  {"1024k", 1048576},       {"512M", 512ull << 20},
        {"3g", 3ull << 30}, {"0001M", 1ull << 20}, {"1048576G", 1ull << 50},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(PARSE(&o, err, "--client-memory", ok[i].arg), 0);
        assert_true(o.client_memory_set);
        if (o.client_memory != ok[i].want)
            fail_msg("--client-memory %s: %llu, want %llu", ok[i].arg,
                     (unsigned long long)o.client_memory, (unsigned long long)ok[i].want);
    }
    assert_int_equal(PARSE(&o, err, "--client-memory=2G"), 0);
    assert_true(o.client_memory == 2ull << 30);
    static const char *const bad[] = {"",        "-1",    "1.5G",     "12X",
                                      "1M5",     "M",     "1MB",      " 1M",
                                      "1048575", "1023K", "1048577G", "99999999999999999999"};
    assert_refused("--client-memory", bad, sizeof(bad) / sizeof(bad[0]),
                   "option --client-memory requires a size in bytes");
}

/* --batch-wait: microseconds from 0 (off, the default) to 1000. */
static void test_batch_wait(void **state)
{
    (void)state;
    wn_options_t o;
    char err[256] = "";
    assert_int_equal(PARSE(&o, err), 0);
    assert_int_equal(o.batch_wait_us, 0);
    assert_int_equal(PARSE(&o, err, "--batch-wait", "200"), 0);
    assert_int_equal(o.batch_wait_us, 200);
    assert_int_equal(PARSE(&o, err, "--batch-wait=1000"), 0);
    assert_int_equal(o.batch_wait_us, 1000);
    assert_int_equal(PARSE(&o, err, "--batch-wait=0"), 0);
    assert_int_equal(o.batch_wait_us, 0);
    static const char *const bad[] = {
        "", "-1", "1001", "20us", "1e2", "0x10", "99999999999999999999"};
    assert_refused("--batch-wait", bad, sizeof(bad) / sizeof(bad[0]),
                   "option --batch-wait requires microseconds from 0 to 1000");
}

/* -d chdirs to /: relative -c, -p, -o are made absolute against the cwd
 * (absolute ones and the log's "stderr" are kept). */
static void test_absolute_paths(void **state)
{
    (void)state;
    wn_options_t o;
    char err[256] = "";
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(PARSE(&o, err, "-d", "-c", "rel.yml", "-p", "/abs.pid", "-o", "stderr"), 0);
    assert_int_equal(wn_options_absolute_paths(&o), 0);
    char want[4200];
    snprintf(want, sizeof(want), "%s%srel.yml", cwd, strcmp(cwd, "/") == 0 ? "" : "/");
    assert_string_equal(o.conf_file, want);
    assert_string_equal(o.pid_file, "/abs.pid");
    assert_string_equal(o.log_file, "stderr");
    wn_options_deinit(&o);
    assert_int_equal(PARSE(&o, err, "-d", "-o", "dir/w.log", "-p", "w.pid"), 0);
    assert_int_equal(wn_options_absolute_paths(&o), 0);
    snprintf(want, sizeof(want), "%s%sdir/w.log", cwd, strcmp(cwd, "/") == 0 ? "" : "/");
    assert_string_equal(o.log_file, want);
    assert_string_equal(o.conf_file, WN_DEFAULT_CONF_FILE);
    wn_options_deinit(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_short_and_long_forms),
        cmocka_unit_test(test_locate),
        cmocka_unit_test(test_twemproxy_values),
        cmocka_unit_test(test_errors_name_the_option),
        cmocka_unit_test(test_absolute_paths),
        cmocka_unit_test(test_client_memory),
        cmocka_unit_test(test_batch_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
