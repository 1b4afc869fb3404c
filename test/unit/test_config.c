/*
 * test_config.c: nutcracker.yml into a wn_conf_t. twemproxy's own example and
 * walnut's demo load with the right values and defaults; server names and
 * order match nutcracker 0.5.0's; every rejected case names file, line, pool
 * and key; snapshots are refcounted and leak-free (run under ASan too).
 */
#include "walnut/config.h"

#include "walnut/core.h"
#include "config/conf_priv.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#define DATA WN_TEST_DATA "/config/"
#define REPO_CONFIG WN_TEST_DATA "/../../config/"

/* A pointer a failed call must leave alone. */
static wn_conf_t *const SENTINEL = (wn_conf_t *)(uintptr_t)0x5a5a;

static wn_conf_t *load_ok(const char *path)
{
    char err[1024] = "";
    wn_conf_t *conf = NULL;
    int rc = wn_conf_load(path, &conf, err, sizeof(err));
    if (rc != 0)
        fail_msg("%s: rc %d: %s", path, rc, err);
    assert_non_null(conf);
    return conf;
}

static wn_conf_t *parse_ok(const char *text)
{
    char err[1024] = "";
    wn_conf_t *conf = NULL;
    int rc = wn_conf_parse(text, strlen(text), "walnut.yml", &conf, err, sizeof(err));
    if (rc != 0)
        fail_msg("rc %d: %s\n--- text ---\n%s", rc, err, text);
    assert_non_null(conf);
    return conf;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (needle != NULL && strstr(hay, needle) == NULL)
        fail_msg("expected '%s' in: %s", needle, hay);
}

/* Parse must fail with WN_ECONFIG, leave *out alone, and say all of `want`. */
static void parse_bad(const char *text, const char *w1, const char *w2, const char *w3,
                      const char *w4)
{
    char err[1024] = "";
    wn_conf_t *conf = SENTINEL;
    int rc = wn_conf_parse(text, strlen(text), "walnut.yml", &conf, err, sizeof(err));
    if (rc != WN_ECONFIG)
        fail_msg("expected WN_ECONFIG, got %d (%s)\n--- text ---\n%s", rc, err, text);
    assert_ptr_equal(conf, SENTINEL);
    if (getenv("WN_TEST_VERBOSE") != NULL)
        print_message("%s\n", err);
    assert_contains(err, "walnut.yml");
    assert_contains(err, w1);
    assert_contains(err, w2);
    assert_contains(err, w3);
    assert_contains(err, w4);
}

static const wn_conf_pool_t *pool(const wn_conf_t *conf, const char *name)
{
    const wn_conf_pool_t *p = wn_conf_pool_find(conf, name);
    if (p == NULL)
        fail_msg("no pool '%s'", name);
    return p;
}

static void assert_defaults_walnut(const wn_conf_pool_t *p)
{
    assert_int_equal(p->health_check_interval, WN_CONF_DEFAULT_HEALTH_CHECK_INTERVAL);
    assert_true(p->max_ejected_fraction == WN_CONF_DEFAULT_MAX_EJECTED_FRACTION);
    assert_int_equal(p->dns_refresh_interval, WN_CONF_DEFAULT_DNS_REFRESH_INTERVAL);
    assert_false(p->reuseport);
    assert_false(p->tcpkeepalive);
    assert_int_equal(p->client_connections, 0);
    assert_int_equal(p->redis_db, 0);
    assert_null(p->redis_auth);
    assert_int_equal(p->server_connections, 1);
}

static void assert_server(const wn_conf_server_t *s, const char *name, const char *host,
                          unsigned port, unsigned weight)
{
    assert_int_equal(s->name_len, strlen(name));
    assert_memory_equal(s->name, name, s->name_len);
    assert_string_equal(s->addr.host, host);
    assert_int_equal(s->addr.port, port);
    assert_int_equal(s->weight, weight);
}

/* ---- good files ---------------------------------------------------------------- */

static void test_twemproxy_example(void **state)
{
    (void)state;
    wn_conf_t *conf = load_ok(DATA "nutcracker.yml");
    const wn_conf_pool_t *p;

    assert_int_equal(conf->npools, 5);
    assert_int_equal(atomic_load(&conf->refs), 1);
    assert_string_equal(conf->pools[0].name, "alpha"); /* file order */
    assert_string_equal(conf->pools[4].name, "omega");

    p = pool(conf, "alpha");
    assert_int_equal(p->line, 1);
    assert_string_equal(p->listen_text, "127.0.0.1:22121");
    assert_string_equal(p->listen.host, "127.0.0.1");
    assert_int_equal(p->listen.port, 22121);
    assert_false(p->listen.is_unix);
    assert_int_equal(p->hash, WN_HASH_FNV1A_64);
    assert_int_equal(p->distribution, WN_DIST_KETAMA);
    assert_true(p->auto_eject_hosts);
    assert_true(p->redis);
    assert_int_equal(p->server_retry_timeout, 2000);
    assert_int_equal(p->server_failure_limit, 1);
    assert_int_equal(p->timeout, WN_CONF_DEFAULT_TIMEOUT);
    assert_int_equal(p->backlog, WN_CONF_DEFAULT_BACKLOG);
    assert_false(p->preconnect);
    assert_false(p->has_hash_tag);
    assert_defaults_walnut(p);
    assert_int_equal(p->nservers, 1);
    assert_server(&p->servers[0], "127.0.0.1:6379", "127.0.0.1", 6379, 1);
    assert_string_equal(p->servers[0].pname, "127.0.0.1:6379:1");
    assert_int_equal(p->servers[0].line, 10);

    p = pool(conf, "beta");
    assert_int_equal(p->line, 12);
    assert_true(p->has_hash_tag);
    assert_memory_equal(p->hash_tag, "{}", 2);
    assert_int_equal(p->timeout, 400);
    assert_false(p->auto_eject_hosts);
    assert_true(p->redis);
    assert_int_equal(p->server_retry_timeout, WN_CONF_DEFAULT_SERVER_RETRY_TIMEOUT);
    assert_int_equal(p->server_failure_limit, WN_CONF_DEFAULT_SERVER_FAILURE_LIMIT);
    assert_int_equal(p->nservers, 4);
    assert_server(&p->servers[0], "server1", "127.0.0.1", 6380, 1);
    assert_server(&p->servers[3], "server4", "127.0.0.1", 6383, 1);
    assert_string_equal(p->servers[0].pname, "127.0.0.1:6380:1 server1");
    assert_defaults_walnut(p);

    p = pool(conf, "gamma");
    assert_int_equal(p->backlog, 1024);
    assert_true(p->preconnect);
    assert_false(p->redis);
    assert_int_equal(p->server_failure_limit, 3);
    assert_int_equal(p->nservers, 2);
    assert_server(&p->servers[0], "127.0.0.1:11212", "127.0.0.1", 11212, 1);
    assert_server(&p->servers[1], "127.0.0.1:11213", "127.0.0.1", 11213, 1);

    p = pool(conf, "delta");
    assert_int_equal(p->timeout, 100);
    assert_int_equal(p->nservers, 10);
    assert_server(&p->servers[9], "127.0.0.1:11223", "127.0.0.1", 11223, 1);

    p = pool(conf, "omega");
    assert_true(p->listen.is_unix);
    assert_string_equal(p->listen.host, "/tmp/gamma");
    assert_int_equal(p->listen.port, 0);
    assert_int_equal(p->listen.perm, 0);
    assert_int_equal(p->hash, WN_HASH_HSIEH);
    assert_false(p->auto_eject_hosts);
    assert_int_equal(p->nservers, 2);
    assert_server(&p->servers[0], "127.0.0.1:11214", "127.0.0.1", 11214, 100000);
    assert_server(&p->servers[1], "127.0.0.1:11215", "127.0.0.1", 11215, 1);

    assert_null(wn_conf_pool_find(conf, "nope"));
    assert_null(wn_conf_pool_find(conf, "alph"));
    wn_conf_unref(conf);
}

static void test_repo_configs(void **state)
{
    (void)state;
    wn_conf_t *conf = load_ok(REPO_CONFIG "nutcracker.yml");
    assert_int_equal(conf->npools, 5);
    wn_conf_unref(conf);

    conf = load_ok(REPO_CONFIG "walnut.yml");
    assert_int_equal(conf->npools, 1);
    const wn_conf_pool_t *p = pool(conf, "alpha");
    assert_string_equal(p->listen.host, "127.0.0.1");
    assert_int_equal(p->listen.port, 22121);
    assert_int_equal(p->hash, WN_HASH_FNV1A_64);
    assert_int_equal(p->distribution, WN_DIST_KETAMA);
    assert_int_equal(p->timeout, 400);
    assert_true(p->auto_eject_hosts);
    assert_int_equal(p->server_retry_timeout, 2000);
    assert_int_equal(p->server_failure_limit, 2);
    assert_false(p->redis);
    assert_int_equal(p->nservers, 2);
    /* 11211 drops the port from the name; 11212 keeps it; shorter sorts first */
    assert_server(&p->servers[0], "127.0.0.1", "127.0.0.1", 11211, 1);
    assert_server(&p->servers[1], "127.0.0.1:11212", "127.0.0.1", 11212, 1);
    wn_conf_unref(conf);
}

static void test_every_key(void **state)
{
    (void)state;
    wn_conf_t *conf = load_ok(DATA "full.yml");
    const wn_conf_pool_t *p = pool(conf, "cache");

    assert_int_equal(p->line, 3);
    assert_true(p->listen.is_unix);
    assert_string_equal(p->listen.host, "/tmp/walnut-test.sock");
    assert_int_equal(p->listen.perm, 0660);
    assert_string_equal(p->listen_text, "/tmp/walnut-test.sock 0660");
    assert_int_equal(p->hash, WN_HASH_MURMUR);
    assert_true(p->has_hash_tag);
    assert_memory_equal(p->hash_tag, "{}", 2);
    assert_int_equal(p->distribution, WN_DIST_MODULA);
    assert_int_equal(p->timeout, 250);
    assert_int_equal(p->backlog, 2048);
    assert_true(p->preconnect);
    assert_true(p->redis);
    assert_string_equal(p->redis_auth, "s3cret");
    assert_int_equal(p->redis_db, 3);
    assert_int_equal(p->server_connections, 4);
    assert_true(p->auto_eject_hosts);
    assert_int_equal(p->server_retry_timeout, 5000);
    assert_int_equal(p->server_failure_limit, 7);
    assert_int_equal(p->client_connections, 100);
    assert_true(p->tcpkeepalive);
    assert_true(p->reuseport);
    assert_int_equal(p->health_check_interval, 0);
    assert_true(p->max_ejected_fraction == 0.25);
    assert_int_equal(p->nservers, 2);
    assert_server(&p->servers[0], "primary", "10.0.0.1", 6379, 2);
    assert_server(&p->servers[1], "10.0.0.2:6379", "10.0.0.2", 6379, 1);
    wn_conf_unref(conf);
}

/* Order and names as nutcracker 0.5.0 reports them in its stats. */
static void test_names_and_order(void **state)
{
    (void)state;
    static const char *const want[] = {
        "a",         "zz",          "::1",           "sock2",           "10.0.0.1",
        "::1:11213", "[::1]:11214", "/tmp/mc.sock:", "10.0.0.2:011212", "127.0.0.1:11212",
    };
    wn_conf_t *conf = load_ok(DATA "names.yml");
    const wn_conf_pool_t *p = pool(conf, "names");

    assert_string_equal(p->listen.host, "::1");
    assert_int_equal(p->listen.port, 22121);
    assert_int_equal(p->nservers, WN_ARRAY_SIZE(want));
    for (size_t i = 0; i < WN_ARRAY_SIZE(want); i++) {
        assert_int_equal(p->servers[i].name_len, strlen(want[i]));
        assert_memory_equal(p->servers[i].name, want[i], strlen(want[i]));
    }
    /* addresses behind the names */
    assert_server(&p->servers[2], "::1", "::1", 11211, 1);
    assert_server(&p->servers[5], "::1:11213", "::1", 11213, 3);
    assert_server(&p->servers[6], "[::1]:11214", "::1", 11214, 1);
    assert_server(&p->servers[4], "10.0.0.1", "10.0.0.1", 11211, 1);
    assert_server(&p->servers[8], "10.0.0.2:011212", "10.0.0.2", 11212, 1);
    assert_true(p->servers[7].addr.is_unix);
    assert_string_equal(p->servers[7].addr.host, "/tmp/mc.sock");
    assert_int_equal(p->servers[7].addr.port, 0);
    assert_true(p->servers[3].addr.is_unix);
    assert_string_equal(p->servers[3].addr.host, "/tmp/mc2.sock");
    assert_int_equal(p->servers[3].weight, 2);
    assert_int_equal(p->servers[0].line, 15);
    assert_int_equal(p->servers[9].line, 6);

    wn_ring_server_t rs[10];
    wn_conf_ring_servers(p, rs);
    for (size_t i = 0; i < WN_ARRAY_SIZE(want); i++) {
        assert_ptr_equal(rs[i].name, p->servers[i].name);
        assert_int_equal(rs[i].name_len, p->servers[i].name_len);
        assert_int_equal(rs[i].weight, p->servers[i].weight);
    }
    wn_conf_unref(conf);
}

/* ---- the string forms on their own -------------------------------------------- */

static void test_server_parse(void **state)
{
    (void)state;
    static const struct {
        const char *text, *name, *host;
        unsigned port, weight;
        bool is_unix;
    } good[] = {
        {"127.0.0.1:11211:1", "127.0.0.1", "127.0.0.1", 11211, 1, false},
        {"127.0.0.1:11212:3", "127.0.0.1:11212", "127.0.0.1", 11212, 3, false},
        {"127.0.0.1:11211:1 web1", "web1", "127.0.0.1", 11211, 1, false},
        {"cache.example.com:11211:10", "cache.example.com", "cache.example.com", 11211, 10, false},
        {"::1:11211:1", "::1", "::1", 11211, 1, false},
        {"fe80::1:6379:2 r", "r", "fe80::1", 6379, 2, false},
        {"2001:db8::7:6380:1", "2001:db8::7:6380", "2001:db8::7", 6380, 1, false},
        {"[::1]:6379:1", "[::1]:6379", "::1", 6379, 1, false},
        {"/var/run/mc.sock:1", "/var/run/mc.sock:", "/var/run/mc.sock", 0, 1, true},
        {"/var/run/mc.sock:5 mc", "mc", "/var/run/mc.sock", 0, 5, true},
        {"h:65535:2147483647", "h:65535", "h", 65535, 2147483647u, false},
        /* a space and nothing after it: the name "", as twemproxy has it */
        {"127.0.0.1:11211:1 ", "", "127.0.0.1", 11211, 1, false},
        {"/var/run/mc.sock:1 ", "", "/var/run/mc.sock", 0, 1, true},
    };
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"", "empty"},
        {"127.0.0.1:11211", "has no weight"},
        {"127.0.0.1", "no port and weight"},
        {"127.0.0.1:11211:0", "zero weight"},
        {"127.0.0.1:11211:-1", "bad weight"},
        {"127.0.0.1:11211:x", "bad weight"},
        {"127.0.0.1:11211:2147483648", "bad weight"},
        {"127.0.0.1:x:1", "bad port 'x'"},
        {"127.0.0.1:0:1", "bad port '0'"},
        {"127.0.0.1:65536:1", "bad port '65536'"},
        {"127.0.0.1::1", "no port"},
        {":11211:1", "no host"},
        {"127.0.0.1:11211:1  two", "bad weight"},
        {"/tmp/a:b.sock:1", "':'"},
        {"/tmp/mc.sock", "no weight"},
    };
    char why[256];

    for (size_t i = 0; i < WN_ARRAY_SIZE(good); i++) {
        wn_conf_server_t s;
        memset(&s, 0, sizeof(s));
        int rc = wn_conf_server_parse(good[i].text, &s, why, sizeof(why));
        if (rc != 0)
            fail_msg("'%s': %s", good[i].text, why);
        assert_string_equal(s.pname, good[i].text);
        assert_int_equal(s.name_len, strlen(good[i].name));
        assert_string_equal(s.name, good[i].name);
        /* log lines name a server named "" by the text before its space */
        if (good[i].is_unix && strchr(good[i].text, ' ') == NULL)
            assert_string_equal(s.label, good[i].host); /* the path, no ':' */
        else if (good[i].name[0] != '\0')
            assert_string_equal(s.label, good[i].name);
        else {
            char want[128];
            snprintf(want, sizeof(want), "'' (%.*s)", (int)strlen(good[i].text) - 1, good[i].text);
            assert_string_equal(s.label, want);
        }
        assert_string_equal(s.addr.host, good[i].host);
        assert_int_equal(s.addr.port, good[i].port);
        assert_int_equal(s.weight, good[i].weight);
        assert_int_equal(s.addr.is_unix, good[i].is_unix);
        wn_conf_server_deinit(&s);
    }
    for (size_t i = 0; i < WN_ARRAY_SIZE(bad); i++) {
        wn_conf_server_t s;
        memset(&s, 0x77, sizeof(s));
        wn_conf_server_t before = s;
        why[0] = '\0';
        int rc = wn_conf_server_parse(bad[i].text, &s, why, sizeof(why));
        if (rc != WN_ECONFIG)
            fail_msg("'%s' accepted (rc %d)", bad[i].text, rc);
        assert_memory_equal(&s, &before, sizeof(s)); /* untouched */
        assert_contains(why, bad[i].why);
    }
    wn_conf_server_deinit(NULL);
}

static void test_listen_parse(void **state)
{
    (void)state;
    static const struct {
        const char *text, *host;
        unsigned port, perm;
        bool is_unix;
    } good[] = {
        {"127.0.0.1:22121", "127.0.0.1", 22121, 0, false},
        {"0.0.0.0:1", "0.0.0.0", 1, 0, false},
        {"localhost:65535", "localhost", 65535, 0, false},
        {"::1:22121", "::1", 22121, 0, false},
        {":::22121", "::", 22121, 0, false},
        {"fe80::a:b:6379", "fe80::a:b", 6379, 0, false},
        {"127.0.0.1:022121", "127.0.0.1", 22121, 0, false},
        {"/tmp/walnut.sock", "/tmp/walnut.sock", 0, 0, true},
        {"/tmp/walnut.sock 0666", "/tmp/walnut.sock", 0, 0666, true},
        {"/tmp/walnut.sock 700", "/tmp/walnut.sock", 0, 0700, true},
        {"/tmp/walnut.sock 0", "/tmp/walnut.sock", 0, 0, true},
        {"/tmp/my app.sock 0666", "/tmp/my app.sock", 0, 0666, true}, /* as in twemproxy */
    };
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"", "empty"},
        {"127.0.0.1", "no port"},
        {"127.0.0.1:", "no port"},
        {":22121", "no host"},
        {"127.0.0.1:0", "bad port '0'"},
        {"127.0.0.1:65536", "bad port '65536'"},
        {"127.0.0.1:http", "bad port 'http'"},
        {"127.0.0.1:-1", "bad port '-1'"},
        {"[::1]:22121", "brackets"},
        {"my host:22121", "spaces"},
        {"/tmp/walnut.sock 0999", "mode '0999'"},
        {"/tmp/walnut.sock 1777", "mode '1777'"},
        {"/tmp/walnut.sock 06x", "mode '06x'"},
        {"/tmp/walnut.sock ", "no unix socket mode"},
        {"/tmp/a b.sock", "mode 'b.sock'"}, /* a path with spaces needs a mode after it */
        {"/tmp/"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock",
         "at most 107"},
    };
    char why[256];

    for (size_t i = 0; i < WN_ARRAY_SIZE(good); i++) {
        wn_conf_addr_t a;
        memset(&a, 0, sizeof(a));
        int rc = wn_conf_listen_parse(good[i].text, &a, why, sizeof(why));
        if (rc != 0)
            fail_msg("'%s': %s", good[i].text, why);
        assert_string_equal(a.host, good[i].host);
        assert_int_equal(a.port, good[i].port);
        assert_int_equal(a.perm, good[i].perm);
        assert_int_equal(a.is_unix, good[i].is_unix);
        wn_conf_addr_deinit(&a);
    }
    for (size_t i = 0; i < WN_ARRAY_SIZE(bad); i++) {
        wn_conf_addr_t a;
        memset(&a, 0x77, sizeof(a));
        wn_conf_addr_t before = a;
        why[0] = '\0';
        int rc = wn_conf_listen_parse(bad[i].text, &a, why, sizeof(why));
        if (rc != WN_ECONFIG)
            fail_msg("'%s' accepted (rc %d)", bad[i].text, rc);
        assert_memory_equal(&a, &before, sizeof(a));
        assert_contains(why, bad[i].why);
    }
}

/* ---- bad files: each names file, line, pool and key ----------------------------- */

static void test_bad_files(void **state)
{
    (void)state;
    static const struct {
        const char *file, *line, *pool, *key, *what;
    } cases[] = {
        {"unknown_key.yml", ":3:", "pool 'alpha'", "'hsah'", "did you mean 'hash'"},
        {"duplicate_key.yml", ":6:", "pool 'alpha'", "'timeout'", "first at line 3"},
        {"duplicate_pool.yml", ":6:", "pool 'alpha'", "defined twice", "first at line 1"},
        {"duplicate_listen.yml", ":9:", "pool 'beta'", "listen '127.0.0.1:22121'",
         "pool 'alpha' (line 1)"},
        {"duplicate_server.yml", ":6:", "pool 'alpha'", "servers entry '127.0.0.1:11211:2'",
         "same name '127.0.0.1'"},
        {"duplicate_server_name.yml", ":6:", "pool 'alpha'",
         "servers entry '10.0.0.3:6379:1 shard1'", "same name 'shard1'"},
        {"zero_weight.yml", ":5:", "pool 'alpha'", "servers[1] '127.0.0.1:11212:0'", "zero weight"},
        {"ring_total_weight.yml", ":4:", "pool 'alpha'", "weights add up to 6442450941",
         "at most 4294967295 in all"},
        {"ring_modula_slots.yml", ":4:", "pool 'alpha'", "weights add up to 67108865",
         "one ring slot per unit of weight, at most 67108864"},
        {"server_port_text.yml", ":4:", "pool 'alpha'", "servers[0]", "bad port 'x'"},
        {"server_port_zero.yml", ":4:", "pool 'alpha'", "servers[0]", "bad port '0'"},
        {"server_port_big.yml", ":4:", "pool 'alpha'", "servers[0]", "bad port '65536'"},
        {"listen_port_text.yml", ":2:", "pool 'alpha'", "listen", "bad port 'memcache'"},
        {"listen_port_zero.yml", ":2:", "pool 'alpha'", "listen", "bad port '0'"},
        {"listen_port_big.yml", ":2:", "pool 'alpha'", "listen", "bad port '70000'"},
        {"server_connections_zero.yml", ":3:", "pool 'alpha'", "server_connections", "is 0"},
        {"redis_auth_memcache.yml", ":3:", "pool 'alpha'", "redis_auth", "redis: true"},
        {"hash_tag_length.yml", ":3:", "pool 'alpha'", "hash_tag '{'", "exactly two"},
        {"bad_hash.yml", ":3:", "pool 'alpha'", "hash 'sha1'",
         "is not one of one_at_a_time, md5, crc16"},
        {"bad_distribution.yml", ":3:", "pool 'alpha'", "distribution 'consistent'",
         "ketama, modula, random"},
        {"bad_bool.yml", ":8:", "pool 'beta'", "auto_eject_hosts 'yes'", "true, false"},
        {"negative_number.yml", ":3:", "pool 'alpha'", "server_failure_limit '-3'", "negative"},
        {"missing_listen.yml", ":1:", "pool 'alpha'", "listen", "missing"},
        {"missing_servers.yml", ":1:", "pool 'alpha'", "servers", "missing"},
        {"empty_servers.yml", ":3:", "pool 'alpha'", "servers", "no entries"},
        {"empty.yml", NULL, NULL, "empty", "mapping of pool names"},
        {"comments_only.yml", NULL, NULL, "empty", "mapping of pool names"},
        {"top_sequence.yml", ":1:", NULL, "top level is a list", "mapping of pool names"},
        {"top_scalar.yml", ":1:", NULL, "top level is a single value", "mapping of pool names"},
    };

    for (size_t i = 0; i < WN_ARRAY_SIZE(cases); i++) {
        char path[512], err[1024] = "";
        wn_conf_t *conf = SENTINEL;
        snprintf(path, sizeof(path), DATA "bad/%s", cases[i].file);
        int rc = wn_conf_load(path, &conf, err, sizeof(err));
        if (rc != WN_ECONFIG)
            fail_msg("%s: expected WN_ECONFIG, got %d (%s)", cases[i].file, rc, err);
        assert_ptr_equal(conf, SENTINEL);
        assert_contains(err, cases[i].file);
        assert_contains(err, cases[i].line);
        assert_contains(err, cases[i].pool);
        assert_contains(err, cases[i].key);
        assert_contains(err, cases[i].what);
        if (cases[i].line != NULL) {
            /* the line is the one right after the path */
            char prefix[600];
            snprintf(prefix, sizeof(prefix), "%s%s", path, cases[i].line);
            assert_true(strncmp(err, prefix, strlen(prefix)) == 0);
        }
    }
}

/* ---- from text --------------------------------------------------------------- */

#define ALPHA_HEAD "alpha:\n  listen: 127.0.0.1:22121\n"
#define ONE_SERVER "  servers:\n   - 127.0.0.1:11211:1\n"

static void test_parse_text(void **state)
{
    (void)state;
    wn_conf_t *conf = parse_ok(ALPHA_HEAD ONE_SERVER);
    assert_string_equal(conf->path, "walnut.yml");
    assert_int_equal(conf->npools, 1);
    assert_server(&conf->pools[0].servers[0], "127.0.0.1", "127.0.0.1", 11211, 1);
    wn_conf_unref(conf);

    /* the brief's example message, word for word up to the list */
    parse_bad("alpha:\n"
              "  listen: 127.0.0.1:22121\n"
              "  servers:\n"
              "   - 127.0.0.1:11211:1\n"
              "   - 127.0.0.1:11212:1\n"
              "  timeout: 400\n"
              "  hash: sha1\n",
              "walnut.yml:7: pool 'alpha': hash 'sha1' is not one of one_at_a_time, md5, crc16, ",
              "jenkins", NULL, NULL);

    /* quoting does not change a value; numbers are decimal with leading zeros */
    conf = parse_ok("\"alpha\":\n"
                    "  listen: '127.0.0.1:22121'\n"
                    "  redis: \"true\"\n"
                    "  timeout: '0400'\n"
                    "  backlog: 010\n"
                    "  redis_auth: \"p@ss: #word\"\n"
                    "  hash_tag: \":'\"\n" ONE_SERVER);
    const wn_conf_pool_t *p = pool(conf, "alpha");
    assert_true(p->redis);
    assert_int_equal(p->timeout, 400);
    assert_int_equal(p->backlog, 10);
    assert_string_equal(p->redis_auth, "p@ss: #word");
    assert_memory_equal(p->hash_tag, ":'", 2);
    wn_conf_unref(conf);

    /* odd pool names survive the round trip through the emitter */
    conf = parse_ok("\"a: b # c\":\n  listen: 127.0.0.1:1\n" ONE_SERVER
                    "'true':\n  listen: 127.0.0.1:2\n" ONE_SERVER
                    "'- x':\n  listen: 127.0.0.1:3\n" ONE_SERVER);
    assert_int_equal(conf->npools, 3);
    assert_string_equal(conf->pools[0].name, "a: b # c");
    assert_string_equal(conf->pools[1].name, "true");
    assert_string_equal(conf->pools[2].name, "- x");
    wn_conf_unref(conf);

    /* bounds that are still fine */
    conf = parse_ok("alpha:\n  listen: 127.0.0.1:65535\n  timeout: 2147483647\n"
                    "  server_connections: 000001\n  max_ejected_fraction: 0\n"
                    "  servers:\n   - 127.0.0.1:65535:2147483647\n");
    p = pool(conf, "alpha");
    assert_int_equal(p->timeout, 2147483647);
    assert_int_equal(p->server_connections, 1);
    assert_true(p->max_ejected_fraction == 0.0);
    assert_int_equal(p->servers[0].weight, 2147483647u);
    wn_conf_unref(conf);
    conf = parse_ok(ALPHA_HEAD "  health_check_interval: 10\n" ONE_SERVER);
    assert_int_equal(pool(conf, "alpha")->health_check_interval, WN_CONF_MIN_HEALTH_CHECK_INTERVAL);
    wn_conf_unref(conf);
    conf = parse_ok(ALPHA_HEAD "  dns_refresh_interval: 100\n" ONE_SERVER);
    assert_int_equal(pool(conf, "alpha")->dns_refresh_interval, WN_CONF_MIN_DNS_REFRESH_INTERVAL);
    wn_conf_unref(conf);
    conf = parse_ok(ALPHA_HEAD "  dns_refresh_interval: 0\n" ONE_SERVER);
    assert_int_equal(pool(conf, "alpha")->dns_refresh_interval, 0);
    wn_conf_unref(conf);
}

static void test_parse_rejects(void **state)
{
    (void)state;
    /* numbers: twemproxy's digits-only rule, and int range */
    parse_bad(ALPHA_HEAD "  timeout: 0x10\n" ONE_SERVER, ":3:", "pool 'alpha'", "timeout '0x10'",
              "whole number");
    parse_bad(ALPHA_HEAD "  backlog: +5\n" ONE_SERVER, ":3:", "pool 'alpha'", "backlog '+5'",
              "whole number");
    parse_bad(ALPHA_HEAD "  redis_db: -1\n" ONE_SERVER, ":3:", "pool 'alpha'", "redis_db '-1'",
              "negative");
    parse_bad(ALPHA_HEAD "  timeout: 12ms\n" ONE_SERVER, ":3:", "pool 'alpha'", "timeout '12ms'",
              NULL);
    parse_bad(ALPHA_HEAD "  timeout:\n" ONE_SERVER, ":3:", "pool 'alpha'", "timeout", "no value");
    parse_bad(ALPHA_HEAD "  server_retry_timeout: 2147483648\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "server_retry_timeout '2147483648'", "out of range");
    /* With several bad values, the first in the file is the one reported,
     * whatever its kind: words, negative numbers and numbers out of range
     * are all checked as the file is read. */
    parse_bad(ALPHA_HEAD "  hash: nope\n  timeout: -5\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "hash 'nope'", "is not one of");
    parse_bad(ALPHA_HEAD "  timeout: -5\n  hash: nope\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "timeout '-5'", "negative");
    parse_bad(ALPHA_HEAD "  redis: yes\n  backlog: 2147483648\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "redis 'yes'", "true, false");
    parse_bad(ALPHA_HEAD "  backlog: 2147483648\n  redis: yes\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "backlog '2147483648'", "out of range (want 0 to 2147483647)");
    parse_bad(ALPHA_HEAD "  distribution: Ketama\n" ONE_SERVER "beta:\n  listen: 127.0.0.1:1\n"
                         "  hash: md4\n" ONE_SERVER,
              ":3:", "pool 'alpha'", "distribution 'Ketama'", "ketama, modula, random");
    /* the largest int is taken, leading zeros or not */
    wn_conf_t *big = parse_ok(ALPHA_HEAD "  backlog: 0002147483647\n" ONE_SERVER);
    assert_int_equal(big->pools[0].backlog, 2147483647);
    wn_conf_unref(big);
    /* client_buffer_limit's range starts at its own floor, not 0 */
    parse_bad(ALPHA_HEAD "  client_buffer_limit: 2147483648\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "client_buffer_limit '2147483648'", "out of range (want 65536 to 2147483647)");
    parse_bad(ALPHA_HEAD "  client_connections: 99999999999999999999999\n" ONE_SERVER,
              ":3:", "pool 'alpha'", "client_connections", "out of range");
    /* an empty password: twemproxy refuses it too (an unset template
     * variable must not run a pool without AUTH) */
    parse_bad(ALPHA_HEAD "  redis: true\n  redis_auth: ''\n" ONE_SERVER, ":4:", "pool 'alpha'",
              "redis_auth is empty", "remove redis_auth");
    parse_bad(ALPHA_HEAD "  redis: true\n  redis_auth: \"\"\n" ONE_SERVER, ":4:", "pool 'alpha'",
              "redis_auth is empty", "password");
    parse_bad(ALPHA_HEAD "  redis_auth:\n" ONE_SERVER, ":3:", "pool 'alpha'", "redis_auth", "");
    /* booleans: only true and false, as twemproxy */
    parse_bad(ALPHA_HEAD "  preconnect: True\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "preconnect 'True'", "true, false");
    parse_bad(ALPHA_HEAD "  tcpkeepalive: 1\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "tcpkeepalive '1'", NULL);
    parse_bad(ALPHA_HEAD "  redis: on\n" ONE_SERVER, ":3:", "pool 'alpha'", "redis 'on'", NULL);
    /* enums are case-sensitive */
    parse_bad(ALPHA_HEAD "  hash: MD5\n" ONE_SERVER, ":3:", "pool 'alpha'", "hash 'MD5'", NULL);
    parse_bad(ALPHA_HEAD "  distribution: ''\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "distribution ''", NULL);
    /* walnut's own keys */
    parse_bad(ALPHA_HEAD "  max_ejected_fraction: 1.01\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "max_ejected_fraction '1.01'", "0.0 to 1.0");
    parse_bad(ALPHA_HEAD "  max_ejected_fraction: nan\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "max_ejected_fraction 'nan'", "decimal");
    parse_bad(ALPHA_HEAD "  health_check_interval: -5\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "health_check_interval '-5'", "negative");
    parse_bad(ALPHA_HEAD "  health_check_interval: 1\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "health_check_interval 1 is too short", "milliseconds");
    parse_bad(ALPHA_HEAD "  health_check_interval: 9\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "health_check_interval 9", "at least 10");
    parse_bad(ALPHA_HEAD "  dns_refresh_interval: 30\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "dns_refresh_interval 30 is too short", "at least 100");
    parse_bad(ALPHA_HEAD "  dns_refresh_interval: -1\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "dns_refresh_interval '-1'", "negative");
    /* hash_tag counts bytes */
    parse_bad(ALPHA_HEAD "  hash_tag: \"\xc2\xab\xc2\xbb\"\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "hash_tag", "4 bytes");
    parse_bad(ALPHA_HEAD "  hash_tag: abc\n" ONE_SERVER, ":3:", "pool 'alpha'", "hash_tag 'abc'",
              "3 bytes");
    /* `hash_tag: ##` is a YAML comment: the message says so */
    parse_bad(ALPHA_HEAD "  hash_tag: ##\n" ONE_SERVER, ":3:", "0 bytes", "YAML comment", "\"##\"");
    parse_bad(ALPHA_HEAD "  hash_tag: \"{\"\n" ONE_SERVER, ":3:", "1 byte;", NULL, NULL);
    /* redis_auth with redis: false written out */
    parse_bad(ALPHA_HEAD "  redis: false\n  redis_auth: x\n" ONE_SERVER, ":4:", "pool 'alpha'",
              "redis_auth", NULL);
    /* a key the injected schema field must not let through */
    parse_bad(ALPHA_HEAD "  name: beta\n" ONE_SERVER, ":3:", "pool 'alpha'", "unknown key 'name'",
              NULL);
    /* duplicate listen written differently, and across unix listeners */
    parse_bad(ALPHA_HEAD ONE_SERVER "beta:\n  listen: 127.0.0.1:022121\n" ONE_SERVER,
              ":6:", "pool 'beta'", "listen '127.0.0.1:022121'", "pool 'alpha'");
    parse_bad("a:\n  listen: /tmp/s 0600\n" ONE_SERVER "b:\n  listen: /tmp/s\n" ONE_SERVER,
              ":6:", "pool 'b'", "listen '/tmp/s'", "pool 'a'");
    /* server entries */
    parse_bad(ALPHA_HEAD "  servers:\n   - 127.0.0.1:11211:1\n   - - nested\n",
              ":5:", "pool 'alpha'", "servers entry is a list", NULL);
    parse_bad(ALPHA_HEAD "  servers: 127.0.0.1:11211:1\n", ":3:", "pool 'alpha'",
              "servers is a single value", NULL);
    /* two servers named "" (a space and no name after it) */
    parse_bad(ALPHA_HEAD "  servers:\n   - \"127.0.0.1:11211:1 \"\n   - \"127.0.0.1:11212:1 \"\n",
              ":5:", "pool 'alpha'", "same name ''", NULL);
    parse_bad(ALPHA_HEAD "  servers:\n   - ':11211:1'\n", ":4:", "pool 'alpha'", "servers[0]",
              "no host");
    parse_bad(ALPHA_HEAD "  listen2: x\n" ONE_SERVER, ":3:", "pool 'alpha'",
              "unknown key 'listen2'", "did you mean 'listen'");
    /* other keys take one value */
    parse_bad(ALPHA_HEAD "  hash:\n    - md5\n" ONE_SERVER, ":4:", "pool 'alpha'", "hash is a list",
              NULL);
    parse_bad(ALPHA_HEAD "  hash:\n    a: b\n" ONE_SERVER, ":4:", "pool 'alpha'",
              "hash is a mapping", NULL);
}

/* twemproxy's token rules: no anchors, aliases, tags, flow style, markers. */
static void test_parse_yaml_shape(void **state)
{
    (void)state;
    parse_bad("---\n" ALPHA_HEAD ONE_SERVER, ":1:", "'---'", NULL, NULL);
    parse_bad(ALPHA_HEAD ONE_SERVER "...\n", ":5:", "'...'", NULL, NULL);
    parse_bad("%YAML 1.1\n---\n" ALPHA_HEAD ONE_SERVER, ":", "directives", NULL, NULL);
    parse_bad(ALPHA_HEAD "  hash: &h md5\n" ONE_SERVER, ":3:", "pool 'alpha'", "anchor '&h'", NULL);
    parse_bad("alpha: &p\n  listen: 127.0.0.1:1\n" ONE_SERVER "beta: *p\n", ":1:", "anchors", NULL,
              NULL);
    parse_bad(ALPHA_HEAD "  hash: !!str md5\n" ONE_SERVER, ":3:", "pool 'alpha'", "tag", NULL);
    parse_bad(ALPHA_HEAD "  servers: [127.0.0.1:11211:1]\n", ":3:", "pool 'alpha'",
              "flow style '[...]'", NULL);
    parse_bad("alpha: {listen: 127.0.0.1:1}\n", ":1:", "pool 'alpha'", "flow style '{...}'", NULL);
    parse_bad("{alpha: x}\n", ":1:", "flow style", NULL, NULL);
    parse_bad("alpha:\n", ":1:", "pool 'alpha'", "has no keys", NULL);
    parse_bad("alpha: 1\n", ":1:", "pool 'alpha'", "single value", NULL);
    parse_bad("alpha:\n  - x\n", ":2:", "pool 'alpha'", "list", NULL);
    parse_bad("'':\n  listen: 127.0.0.1:1\n", ":1:", "pool name is empty", NULL, NULL);
    parse_bad("? [a]\n: x\n", ":1:", "flow style", NULL, NULL);
    parse_bad("? - a\n: x\n", ":1:", "pool name is a list", NULL, NULL);
    parse_bad(ALPHA_HEAD "  ? - k\n  : v\n" ONE_SERVER, ":3:", "pool 'alpha'", "a key is a list",
              NULL);
    parse_bad("alpha:\n  listen: 127.0.0.1:1\n   bad: indent\n", ":3:", "YAML syntax error", NULL,
              NULL);
    parse_bad("alpha:\n\tlisten: x\n", ":2:", "YAML syntax error", "indented with a tab",
              "spaces only");
    parse_bad(ALPHA_HEAD "  servers:\n\t- 127.0.0.1:1:1\n", ":4:", "YAML syntax error",
              "indented with a tab", NULL);
    parse_bad(ALPHA_HEAD "  hash: \"md5\\0\"\n" ONE_SERVER, ":3:", "NUL", NULL, NULL);
    parse_bad("", "walnut.yml: file is empty", NULL, NULL, NULL);
    parse_bad("~\n", ":1:", "top level is a single value", NULL, NULL);
}

/* ---- the snapshot ------------------------------------------------------------- */

/* A copy is equal in every field and shares no memory: changing or
 * freeing one leaves the other intact (ASan sees any sharing). */
static void test_dup(void **state)
{
    (void)state;
    wn_conf_t *conf = parse_ok("alpha:\n  listen: 127.0.0.1:22121\n  hash: md5\n"
                               "  hash_tag: \"{}\"\n  redis: true\n  redis_auth: pw\n"
                               "  dns_refresh_interval: 500\n  servers:\n"
                               "   - cache-a.example:6379:2 a\n   - 10.0.0.2:6379:1\n"
                               "beta:\n  listen: /tmp/walnut-beta.sock 0600\n  servers:\n"
                               "   - /tmp/mc.sock:1 m\n");
    struct sockaddr_in *sin = (struct sockaddr_in *)&conf->pools[0].servers[0].sa;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(6379);
    sin->sin_addr.s_addr = htonl(0x7f000002);
    conf->pools[0].servers[0].has_sa = true;
    wn_conf_t *copy = wn_conf_dup(conf);
    assert_non_null(copy);
    assert_int_equal(copy->npools, 2);
    assert_string_equal(copy->path, conf->path);
    assert_ptr_not_equal(copy->path, conf->path);
    for (uint32_t i = 0; i < 2; i++) {
        const wn_conf_pool_t *a = &conf->pools[i], *b = &copy->pools[i];
        assert_string_equal(a->name, b->name);
        assert_ptr_not_equal(a->name, b->name);
        assert_string_equal(a->listen_text, b->listen_text);
        assert_string_equal(a->listen.host, b->listen.host);
        assert_ptr_not_equal(a->listen.host, b->listen.host);
        assert_int_equal(a->listen.perm, b->listen.perm);
        assert_int_equal(a->hash, b->hash);
        assert_int_equal(a->dns_refresh_interval, b->dns_refresh_interval);
        assert_int_equal(a->nservers, b->nservers);
        for (uint32_t j = 0; j < a->nservers; j++) {
            assert_string_equal(a->servers[j].pname, b->servers[j].pname);
            assert_string_equal(a->servers[j].name, b->servers[j].name);
            assert_ptr_not_equal(a->servers[j].name, b->servers[j].name);
            assert_string_equal(a->servers[j].label, b->servers[j].label);
            assert_ptr_not_equal(a->servers[j].label, b->servers[j].label);
            assert_string_equal(a->servers[j].addr.host, b->servers[j].addr.host);
            assert_int_equal(a->servers[j].addr.port, b->servers[j].addr.port);
            assert_int_equal(a->servers[j].weight, b->servers[j].weight);
            assert_true(wn_conf_server_conns_same(a, &a->servers[j], b, &b->servers[j]));
        }
    }
    assert_string_equal(copy->pools[0].redis_auth, "pw");
    assert_ptr_not_equal(copy->pools[0].redis_auth, conf->pools[0].redis_auth);
    assert_null(copy->pools[1].redis_auth);
    assert_true(copy->pools[0].servers[0].has_sa);
    assert_true(wn_sockaddr_same(&copy->pools[0].servers[0].sa, &conf->pools[0].servers[0].sa));
    /* the copy changes alone */
    sin = (struct sockaddr_in *)&copy->pools[0].servers[0].sa;
    sin->sin_addr.s_addr = htonl(0x7f000003);
    assert_false(wn_conf_server_conns_same(&conf->pools[0], &conf->pools[0].servers[0],
                                           &copy->pools[0], &copy->pools[0].servers[0]));
    assert_true(wn_conf_server_same(&conf->pools[0].servers[0], &copy->pools[0].servers[0]));
    wn_conf_unref(conf);
    assert_string_equal(copy->pools[0].servers[0].name, "a");
    wn_conf_unref(copy);
}

static void test_refcount(void **state)
{
    (void)state;
    wn_conf_t *conf = parse_ok(ALPHA_HEAD ONE_SERVER);
    wn_conf_ref(conf);
    wn_conf_ref(conf);
    assert_int_equal(atomic_load(&conf->refs), 3);
    wn_conf_unref(conf);
    wn_conf_unref(conf);
    assert_int_equal(atomic_load(&conf->refs), 1);
    assert_string_equal(conf->pools[0].name, "alpha");
    wn_conf_unref(conf); /* frees; ASan would see a leak or a double free */
    wn_conf_unref(NULL);
    wn_conf_ref(NULL);
    assert_null(wn_conf_pool_find(NULL, "alpha"));
}

static void test_load_errors(void **state)
{
    (void)state;
    char err[256] = "";
    wn_conf_t *conf = SENTINEL;

    int rc = wn_conf_load(DATA "no-such-file.yml", &conf, err, sizeof(err));
    assert_true(rc < 0);
    assert_int_not_equal(rc, WN_ECONFIG);
    assert_ptr_equal(conf, SENTINEL);
    assert_contains(err, "no-such-file.yml");
    assert_contains(err, "cannot open");

    /* a directory opens but does not read */
    rc = wn_conf_load(DATA, &conf, err, sizeof(err));
    assert_true(rc < 0);
    assert_ptr_equal(conf, SENTINEL);
    assert_contains(err, "cannot read");
    assert_contains(err, "it is a directory, not a regular file");

    /* a file of exactly WN_CONF_FILE_MAX bytes loads; one byte more does not */
    char big[] = "/tmp/walnut-test-config-XXXXXX";
    int fd = mkstemp(big);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "w");
    assert_non_null(fp);
    const char *head = ALPHA_HEAD ONE_SERVER "#";
    fputs(head, fp);
    for (size_t i = strlen(head); i < WN_CONF_FILE_MAX - 1; i++)
        fputc('x', fp);
    fputc('\n', fp);
    assert_int_equal(fclose(fp), 0);
    conf = NULL;
    rc = wn_conf_load(big, &conf, err, sizeof(err));
    if (rc != 0)
        fail_msg("a file of %u bytes: %s", WN_CONF_FILE_MAX, err);
    wn_conf_unref(conf);
    conf = SENTINEL;
    fp = fopen(big, "a");
    assert_non_null(fp);
    fputc('\n', fp);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(wn_conf_load(big, &conf, err, sizeof(err)), WN_ECONFIG);
    assert_contains(err, "file is larger than 16777216 bytes");
    assert_ptr_equal(conf, SENTINEL);
    unlink(big);

    /* no error buffer, or a tiny one: still rejected, nothing overrun */
    const char *bad = ALPHA_HEAD "  hash: sha1\n" ONE_SERVER;
    assert_int_equal(wn_conf_parse(bad, strlen(bad), "x.yml", &conf, NULL, 0), WN_ECONFIG);
    char tiny[8];
    memset(tiny, 'z', sizeof(tiny));
    assert_int_equal(wn_conf_parse(bad, strlen(bad), "x.yml", &conf, tiny, sizeof(tiny)),
                     WN_ECONFIG);
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
    assert_string_equal(tiny, "x.yml:3");
    assert_ptr_equal(conf, SENTINEL);

    /* text parsed without a name, and not NUL-terminated */
    char text[] = ALPHA_HEAD ONE_SERVER "garbage that is past len";
    size_t len = strlen(ALPHA_HEAD ONE_SERVER);
    conf = NULL;
    assert_int_equal(wn_conf_parse(text, len, NULL, &conf, err, sizeof(err)), 0);
    assert_string_equal(conf->path, "<string>");
    wn_conf_unref(conf);
}

/* Looked-up addresses: one when family, address and port agree (the
 * padding and the text they came from do not matter); never for a zeroed
 * one (a unix listener) or across families. */
static void test_sockaddr_same(void **state)
{
    (void)state;
    struct sockaddr_storage a, b, z;
    memset(&a, 0, sizeof(a));
    memset(&b, 0xff, sizeof(b)); /* other padding */
    memset(&z, 0, sizeof(z));
    struct sockaddr_in *x = (void *)&a, *y = (void *)&b;
    x->sin_family = y->sin_family = AF_INET;
    x->sin_port = y->sin_port = htons(22121);
    inet_pton(AF_INET, "127.0.0.1", &x->sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &y->sin_addr);
    assert_true(wn_sockaddr_same(&a, &b));
    y->sin_port = htons(22122);
    assert_false(wn_sockaddr_same(&a, &b));
    y->sin_port = htons(22121);
    inet_pton(AF_INET, "127.0.0.2", &y->sin_addr);
    assert_false(wn_sockaddr_same(&a, &b));
    assert_false(wn_sockaddr_same(&z, &z));
    struct sockaddr_in6 *v = (void *)&b;
    memset(&b, 0, sizeof(b));
    v->sin6_family = AF_INET6;
    v->sin6_port = htons(22121);
    inet_pton(AF_INET6, "::1", &v->sin6_addr);
    assert_false(wn_sockaddr_same(&a, &b));
    assert_true(wn_sockaddr_same(&b, &b));
    /* an IPv4-mapped address is the IPv4 one (its listener takes IPv4) */
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &v->sin6_addr);
    assert_true(wn_sockaddr_same(&a, &b));
    assert_true(wn_sockaddr_same(&b, &a));
    assert_true(wn_sockaddr_overlap(&a, &b));
    inet_pton(AF_INET6, "::ffff:127.0.0.2", &v->sin6_addr);
    assert_false(wn_sockaddr_same(&a, &b));
    x->sin_addr.s_addr = htonl(INADDR_ANY);
    assert_true(wn_sockaddr_overlap(&b, &a)); /* 0.0.0.0 takes 127.0.0.2 */
}

/* Addresses as operators (and redis-server's CLIENT INFO) write them. */
static void test_sockaddr_format(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    char buf[128];
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *v4 = (void *)&ss;
    v4->sin_family = AF_INET;
    v4->sin_port = htons(22121);
    inet_pton(AF_INET, "127.0.0.1", &v4->sin_addr);
    wn_sockaddr_format(&ss, buf, sizeof(buf));
    assert_string_equal(buf, "127.0.0.1:22121");
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 *v6 = (void *)&ss;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(6379);
    inet_pton(AF_INET6, "::1", &v6->sin6_addr);
    wn_sockaddr_format(&ss, buf, sizeof(buf));
    assert_string_equal(buf, "[::1]:6379");
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_un *un = (void *)&ss;
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, "/run/my app.sock");
    wn_sockaddr_format(&ss, buf, sizeof(buf));
    assert_string_equal(buf, "/run/my app.sock");
    ss.ss_family = AF_UNSPEC;
    wn_sockaddr_format(&ss, buf, sizeof(buf));
    assert_string_equal(buf, "an address of family 0");
}

/* Addresses one cannot both listen on: the same one, or one port with the
 * wildcard on either side, within a family. */
static void test_sockaddr_overlap(void **state)
{
    (void)state;
    struct sockaddr_storage a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    struct sockaddr_in *x = (void *)&a, *y = (void *)&b;
    x->sin_family = y->sin_family = AF_INET;
    x->sin_port = y->sin_port = htons(22121);
    inet_pton(AF_INET, "127.0.0.1", &x->sin_addr);
    inet_pton(AF_INET, "127.0.0.2", &y->sin_addr);
    assert_false(wn_sockaddr_overlap(&a, &b));
    y->sin_addr.s_addr = htonl(INADDR_ANY);
    assert_true(wn_sockaddr_overlap(&a, &b));
    assert_true(wn_sockaddr_overlap(&b, &a));
    y->sin_port = htons(22122);
    assert_false(wn_sockaddr_overlap(&a, &b));
    assert_true(wn_sockaddr_overlap(&a, &a));
    struct sockaddr_storage c, d;
    memset(&c, 0, sizeof(c));
    memset(&d, 0, sizeof(d));
    struct sockaddr_in6 *v = (void *)&c, *w = (void *)&d;
    v->sin6_family = w->sin6_family = AF_INET6;
    v->sin6_port = w->sin6_port = htons(22121);
    inet_pton(AF_INET6, "::1", &v->sin6_addr);
    assert_true(wn_sockaddr_overlap(&c, &d)); /* d is :: */
    inet_pton(AF_INET6, "::2", &w->sin6_addr);
    assert_false(wn_sockaddr_overlap(&c, &d));
    x->sin_addr.s_addr = htonl(INADDR_ANY);
    assert_false(wn_sockaddr_overlap(&a, &d)); /* ::2 receives no IPv4 */
    /* the IPv6 wildcard is dual-stack: it holds every IPv4 address's port */
    memset(&w->sin6_addr, 0, sizeof(w->sin6_addr));
    assert_true(wn_sockaddr_overlap(&a, &d));
    assert_true(wn_sockaddr_overlap(&d, &a));
    x->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(wn_sockaddr_overlap(&a, &d));
    x->sin_port = htons(22122);
    assert_false(wn_sockaddr_overlap(&a, &d));
    memset(&d, 0, sizeof(d));
    assert_false(wn_sockaddr_overlap(&d, &d)); /* zeroed: no address */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sockaddr_same),
        cmocka_unit_test(test_sockaddr_overlap),
        cmocka_unit_test(test_sockaddr_format),
        cmocka_unit_test(test_twemproxy_example),
        cmocka_unit_test(test_repo_configs),
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_names_and_order),
        cmocka_unit_test(test_server_parse),
        cmocka_unit_test(test_listen_parse),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_parse_text),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_yaml_shape),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_dup),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
