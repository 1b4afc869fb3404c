/*
 * test_stats.c: latency histograms (bucketing at every bound, merging), the
 * stats view (sums over several blocks), twemproxy's JSON and the /servers
 * JSON (field order, names with quotes, backslashes, newlines and unicode,
 * parsed back with jansson), the Prometheus exposition (label escaping,
 * cumulative buckets, one # TYPE per family) and -D against the JSON.
 */
#include "control/stats_view.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "walnut/config.h"
#include "walnut/control.h"
#include "walnut/core.h"
#include "walnut/stats.h"

/* Pool and server names a renderer must escape: quote, backslash, newline,
 * a non-ASCII character. */
#define WEIRD_POOL "we\"ird\\pool\nname \xe2\x98\x83"
#define WEIRD_SERVER "se\"rv\\er\nname\xe2\x98\x83"

static const char conf_text[] =
    "\"we\\\"ird\\\\pool\\nname \\u2603\":\n"
    "  listen: 127.0.0.1:22121\n"
    "  servers:\n"
    "   - \"127.0.0.1:11211:1 se\\\"rv\\\\er\\nname\\u2603\"\n"
    "   - 127.0.0.1:11212:1\n"
    "zz:\n"
    "  listen: 127.0.0.1:22122\n"
    "  redis: true\n"
    "  servers:\n"
    "   - 127.0.0.1:6379:1\n"
    "alpha:\n"
    "  listen: 127.0.0.1:22123\n"
    "  servers:\n"
    "   - ::1:11213:1\n"
    "   - 127.0.0.1:11214:1\n"
    "   - 127.0.0.1:11215:1 beta\n";

static const char *const mc_cmds[] = {"unknown", "get", NULL, "set"};

typedef struct fixture {
    wn_conf_t *conf;
    wn_stats_block_t *blocks[3]; /* two workers and control */
    wn_stats_cmd_table_t cmds[3];
    wn_stats_view_t view;
} fixture_t;

static uint32_t pool_index(const wn_conf_t *conf, const char *name)
{
    for (uint32_t p = 0; p < conf->npools; p++)
        if (strcmp(conf->pools[p].name, name) == 0)
            return p;
    fail_msg("no pool %s", name);
    return 0;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    char err[512];
    assert_int_equal(wn_conf_parse(conf_text, sizeof(conf_text) - 1, "test", &f->conf, err,
                                   sizeof(err)),
                     0);
    for (int i = 0; i < 3; i++) {
        f->blocks[i] = wn_stats_block_create(f->conf);
        assert_non_null(f->blocks[i]);
        f->cmds[i].names = mc_cmds;
        f->cmds[i].n = WN_ARRAY_SIZE(mc_cmds);
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    wn_stats_view_free(&f->view);
    for (int i = 0; i < 3; i++)
        wn_stats_block_destroy(f->blocks[i]);
    wn_conf_unref(f->conf);
    free(f);
    return 0;
}

/* Block b gets counters that identify it: b+1 everywhere, times a weight. */
static void fill_blocks(fixture_t *f)
{
    for (int b = 0; b < 3; b++) {
        wn_stats_block_t *blk = f->blocks[b];
        uint64_t k = (uint64_t)b + 1;
        for (unsigned i = 0; i < WN_GLOBAL_STAT_COUNT; i++)
            wn_stat_add(&blk->global[i], k * (i + 1));
        for (uint32_t p = 0; p < blk->npools; p++) {
            for (unsigned i = 0; i < WN_POOL_STAT_COUNT; i++)
                wn_stat_add(&blk->pools[p].v[i], k * 10 * (p + 1));
            for (unsigned i = 0; i < WN_CAUSE_COUNT; i++)
                wn_stat_add(&blk->pools[p].errors[i], k * (i + 1));
            for (unsigned i = 0; i < 4; i++)
                wn_stat_add(&blk->pools[p].cmds[i], k * 100 * (i + 1));
            wn_hist_record(&blk->pools[p].latency, 3 * k);       /* bucket 0 */
            wn_hist_record(&blk->pools[p].latency, 1000 * k);    /* 1 ms, 2 ms, 3 ms */
            wn_hist_record(&blk->pools[p].latency, 20000000);    /* +Inf */
            for (uint32_t s = 0; s < f->conf->pools[p].nservers; s++) {
                wn_server_stats_t *ss = wn_stats_server(blk, p, s);
                for (unsigned i = 0; i < WN_SERVER_STAT_COUNT; i++)
                    wn_stat_add(&ss->v[i], k * (s + 1));
                wn_hist_record(&ss->latency, 300 * k);
            }
        }
    }
}

static void build(fixture_t *f, uint32_t nworkers)
{
    wn_stats_view_opts_t o = {.nworkers = nworkers, .cmds = f->cmds};
    assert_int_equal(wn_stats_view_build(&f->view, f->conf, f->blocks, 3, &o), 0);
}

/* ---- histograms ----------------------------------------------------------- */

static void test_hist_bucket_bounds(void **state)
{
    (void)state;
    assert_int_equal(wn_hist_bucket(0), 0);
    for (unsigned i = 0; i < WN_HIST_BUCKETS - 1; i++) {
        uint64_t b = wn_hist_bounds_us[i];
        if (i > 0)
            assert_true(b > wn_hist_bounds_us[i - 1]);
        /* A bound is the inclusive upper end of its bucket (Prometheus' le). */
        assert_int_equal(wn_hist_bucket(b), i);
        assert_int_equal(wn_hist_bucket(b - 1), i == 0 || b - 1 > wn_hist_bounds_us[i - 1] ? i
                                                                                         : i - 1);
        assert_int_equal(wn_hist_bucket(b + 1), i + 1);
    }
    assert_int_equal(wn_hist_bucket(UINT64_MAX), WN_HIST_BUCKETS - 1);
    assert_int_equal(wn_hist_bounds_us[0], 10);
    assert_int_equal(wn_hist_bounds_us[WN_HIST_BUCKETS - 2], 10000000);
}

static void test_hist_merge(void **state)
{
    (void)state;
    wn_hist_t *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    uint64_t samples_a[] = {0, 10, 11, 999, 1000, 10000000, 10000001};
    uint64_t samples_b[] = {10, 5000, 5000, 123456789};
    for (size_t i = 0; i < WN_ARRAY_SIZE(samples_a); i++)
        wn_hist_record(a, samples_a[i]);
    for (size_t i = 0; i < WN_ARRAY_SIZE(samples_b); i++)
        wn_hist_record(b, samples_b[i]);
    wn_hist_sum_t sum = {0}, expect = {0};
    wn_hist_add(&sum, a);
    wn_hist_add(&sum, b);
    for (size_t i = 0; i < WN_ARRAY_SIZE(samples_a); i++) {
        expect.bucket[wn_hist_bucket(samples_a[i])]++;
        expect.sum_us += samples_a[i];
    }
    for (size_t i = 0; i < WN_ARRAY_SIZE(samples_b); i++) {
        expect.bucket[wn_hist_bucket(samples_b[i])]++;
        expect.sum_us += samples_b[i];
    }
    expect.count = WN_ARRAY_SIZE(samples_a) + WN_ARRAY_SIZE(samples_b);
    assert_memory_equal(&sum, &expect, sizeof(sum));
    assert_int_equal(sum.bucket[0], 3); /* 0, 10, 10 */
    assert_int_equal(sum.bucket[WN_HIST_BUCKETS - 1], 2);
    free(a);
    free(b);
}

/* ---- the view ------------------------------------------------------------- */

static void test_view_sums(void **state)
{
    fixture_t *f = *state;
    fill_blocks(f);
    build(f, 2);
    wn_stats_view_t *v = &f->view;
    /* 1 + 2 + 3 = 6 times each block's unit. */
    for (unsigned i = 0; i < WN_GLOBAL_STAT_COUNT; i++)
        assert_int_equal(v->global[i], 6 * (i + 1));
    assert_string_equal(v->service, "walnut");
    assert_string_equal(v->version, WN_VERSION);
    assert_int_equal(v->nworkers, 2);
    assert_int_equal(v->npools, 3);
    for (uint32_t p = 0; p < 3; p++) {
        const wn_stats_pool_view_t *pv = &v->pools[p];
        assert_string_equal(pv->name, f->conf->pools[p].name);
        /* Gauges and counters alike are sums. */
        for (unsigned i = 0; i < WN_POOL_STAT_COUNT; i++)
            assert_int_equal(pv->v[i], 60 * (p + 1));
        for (unsigned i = 0; i < WN_CAUSE_COUNT; i++)
            assert_int_equal(pv->errors[i], 6 * (i + 1));
        assert_int_equal(pv->ncmds, 4);
        for (unsigned i = 0; i < 4; i++)
            assert_int_equal(pv->cmds[i], 600 * (i + 1));
        assert_int_equal(pv->latency.count, 9);
        assert_int_equal(pv->latency.bucket[0], 3);
        assert_int_equal(pv->latency.bucket[wn_hist_bucket(1000)], 1);
        assert_int_equal(pv->latency.bucket[wn_hist_bucket(2000)], 1);
        assert_int_equal(pv->latency.bucket[wn_hist_bucket(3000)], 1);
        assert_int_equal(pv->latency.bucket[WN_HIST_BUCKETS - 1], 3);
        assert_int_equal(pv->latency.sum_us, 3 * 6 + 1000 * 6 + 3 * 20000000);
        assert_int_equal(pv->nservers, f->conf->pools[p].nservers);
        for (uint32_t s = 0; s < pv->nservers; s++) {
            const wn_stats_server_view_t *sv = &pv->servers[s];
            assert_string_equal(sv->name, f->conf->pools[p].servers[s].name);
            for (unsigned i = 0; i < WN_SERVER_STAT_COUNT; i++)
                assert_int_equal(sv->v[i], 6 * (s + 1));
            assert_int_equal(sv->latency.count, 3);
            assert_int_equal(sv->latency.sum_us, 1800);
            /* Health is the caller's to fill. */
            assert_int_equal(sv->state, WN_HEALTH_UP);
            assert_false(sv->ejected);
            assert_false(sv->probed);
        }
        assert_int_equal(pv->epoch, 0);
        assert_int_equal(pv->worker_epoch[0], 0);
        assert_int_equal(pv->worker_epoch[1], 0);
    }
    assert_string_equal(v->pools[pool_index(f->conf, "zz")].protocol, "redis");
    assert_string_equal(v->pools[pool_index(f->conf, "alpha")].protocol, "memcache");
    /* twemproxy's JSON order: shorter name first, then bytewise. */
    assert_string_equal(v->pools[v->sorted[0]].name, "zz");
    assert_string_equal(v->pools[v->sorted[1]].name, "alpha");
    assert_string_equal(v->pools[v->sorted[2]].name, WEIRD_POOL);
    /* Addresses: v6 in brackets. */
    const wn_stats_pool_view_t *alpha = &v->pools[pool_index(f->conf, "alpha")];
    bool v6 = false;
    for (uint32_t s = 0; s < alpha->nservers; s++)
        v6 = v6 || strcmp(alpha->servers[s].address, "[::1]:11213") == 0;
    assert_true(v6);

    /* Header: clients + servers (over all pools) + one per pool listener. */
    uint64_t server_conns = 0;
    for (uint32_t p = 0; p < 3; p++)
        for (uint32_t s = 0; s < v->pools[p].nservers; s++)
            server_conns += 6 * (s + 1);
    assert_int_equal(v->curr_connections, v->global[WN_G_curr_connections] + server_conns + 3);
    assert_int_equal(v->total_connections, v->global[WN_G_total_connections] +
                                               v->global[WN_G_total_server_connections] + 3);
    assert_true(v->timestamp > 1600000000u);
    assert_true(v->process.start_time > 1600000000.0);
    assert_true(v->process.start_time <= (double)v->timestamp + 1);
    assert_true(v->process.have_resident && v->process.resident_bytes > 0);
    assert_true(v->process.have_fds && v->process.open_fds >= 3);
}

static void test_view_folds_foreign_block(void **state)
{
    fixture_t *f = *state;
    wn_conf_t *other;
    char err[256];
    const char text[] = "solo:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\n";
    assert_int_equal(wn_conf_parse(text, sizeof(text) - 1, "other", &other, err, sizeof(err)), 0);
    wn_stats_block_t *foreign = wn_stats_block_create(other);
    /* A block of another configuration is folded by name: its pool 'solo'
     * matches nothing here, its global counters still count. */
    wn_stat_add(&foreign->global[WN_G_cmd_get], 7);
    wn_stat_add(&foreign->pools[0].v[WN_P_requests], 5);
    wn_stats_block_t *blocks[] = {f->blocks[0], foreign, NULL};
    assert_int_equal(wn_stats_view_build(&f->view, f->conf, blocks, 3, NULL), 0);
    assert_true(f->view.global[WN_G_cmd_get] >= 7);
    wn_stats_view_free(&f->view);
    /* NULL blocks are skipped; no options: no commands, no workers. */
    wn_stats_block_t *ok[] = {NULL, f->blocks[1]};
    assert_int_equal(wn_stats_view_build(&f->view, f->conf, ok, 2, NULL), 0);
    assert_int_equal(f->view.pools[0].ncmds, 0);
    wn_stats_view_free(&f->view);
    wn_stats_view_free(NULL);
    wn_stats_block_destroy(foreign);
    wn_conf_unref(other);
}

/* ---- twemproxy JSON ------------------------------------------------------- */

static const char *key_at(json_t *o, size_t n)
{
    void *it = json_object_iter(o);
    for (size_t i = 0; i < n && it != NULL; i++)
        it = json_object_iter_next(o, it);
    return it != NULL ? json_object_iter_key(it) : NULL;
}

static void fill_health(fixture_t *f)
{
    wn_stats_pool_view_t *weird = &f->view.pools[pool_index(f->conf, WEIRD_POOL)];
    weird->epoch = 7;
    weird->worker_epoch[0] = 7;
    weird->worker_epoch[1] = 6;
    wn_stats_server_view_t *s = &weird->servers[1];
    assert_string_equal(s->name, WEIRD_SERVER);
    s->state = WN_HEALTH_EJECTED;
    s->ejected = true;
    s->failures = 0;
    s->ejected_at_us = 1700000000123456ull;
    s->probed = true;
    s->last_probe_err = UV_ECONNREFUSED;
    s->last_probe_age_ms = 1500;
    s->dns_named = true; /* servers[0] is an address: never looked up */
    s->dns[WN_DNS_LOOKUPS] = 41;
    s->dns[WN_DNS_FAILURES] = 3;
    s->dns[WN_DNS_MOVES] = 2;
    weird->servers[0].state = WN_HEALTH_SUSPECT;
    weird->servers[0].failures = 1;
}

static void test_json_twemproxy(void **state)
{
    fixture_t *f = *state;
    fill_blocks(f);
    build(f, 2);
    fill_health(f);
    size_t len = 0;
    char *text = wn_stats_json_render(&f->view, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    /* Escapes as JSON requires them; twemproxy's compact "k":v. */
    assert_non_null(strstr(text, "\"we\\\"ird\\\\pool\\nname \xe2\x98\x83\":{"));
    assert_non_null(strstr(text, "\"se\\\"rv\\\\er\\nname\xe2\x98\x83\":{"));
    assert_non_null(strstr(text, "{\"service\":\"walnut\",\"source\":"));

    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    assert_non_null(root);
    static const char *const header[] = {"service",   "source",           "version",
                                         "uptime",    "timestamp",        "total_connections",
                                         "curr_connections", "workers"};
    for (size_t i = 0; i < WN_ARRAY_SIZE(header); i++)
        assert_string_equal(key_at(root, i), header[i]);
    size_t at = WN_ARRAY_SIZE(header);
    for (unsigned i = 0; i < WN_GLOBAL_STAT_COUNT; i++)
        if (wn_stats_global_in_json((wn_global_stat_t)i))
            assert_string_equal(key_at(root, at++), wn_global_stat_desc[i].name);
    /* Pools in twemproxy's order. */
    assert_string_equal(key_at(root, at), "zz");
    assert_string_equal(key_at(root, at + 1), "alpha");
    assert_string_equal(key_at(root, at + 2), WEIRD_POOL);
    assert_null(key_at(root, at + 3));
    assert_int_equal(json_integer_value(json_object_get(root, "workers")), 2);
    assert_int_equal(json_integer_value(json_object_get(root, "curr_connections")),
                     f->view.curr_connections);

    json_t *pool = json_object_get(root, WEIRD_POOL);
    assert_true(json_is_object(pool));
    static const char *const tw_pool[] = {"client_eof",    "client_err",    "client_connections",
                                          "server_ejects", "forward_error", "fragments"};
    for (size_t i = 0; i < WN_ARRAY_SIZE(tw_pool); i++)
        assert_string_equal(key_at(pool, i), tw_pool[i]);
    assert_int_equal(json_integer_value(json_object_get(pool, "client_eof")), 60);
    assert_int_equal(json_integer_value(json_object_get(pool, "epoch")), 7);
    assert_string_equal(json_string_value(json_object_get(pool, "protocol")), "memcache");
    assert_int_equal(json_integer_value(json_object_get(pool, "forward_error_timeout")), 12);
    assert_int_equal(json_integer_value(json_object_get(pool, "cmd_set")), 2400);
    assert_null(json_object_get(pool, "cmd_(null)"));
    /* Scalars first, then one object per server, in the pool's sorted order. */
    size_t nkeys = json_object_size(pool);
    assert_string_equal(key_at(pool, nkeys - 2), "127.0.0.1:11212");
    assert_string_equal(key_at(pool, nkeys - 1), WEIRD_SERVER);
    for (size_t i = 0; i < nkeys - 2; i++)
        assert_false(json_is_object(json_object_get(pool, key_at(pool, i))));

    json_t *srv = json_object_get(pool, WEIRD_SERVER);
    static const char *const tw_server[] = {
        "server_eof", "server_err",    "server_timedout", "server_connections",
        "server_ejected_at", "requests", "request_bytes", "responses",
        "response_bytes", "in_queue",  "in_queue_bytes",  "out_queue",
        "out_queue_bytes", "ejected",  "health",          "failures",
        "last_probe", "last_probe_age_ms"};
    assert_int_equal(json_object_size(srv), WN_ARRAY_SIZE(tw_server));
    for (size_t i = 0; i < WN_ARRAY_SIZE(tw_server); i++)
        assert_string_equal(key_at(srv, i), tw_server[i]);
    assert_int_equal(json_integer_value(json_object_get(srv, "server_ejected_at")),
                     1700000000123456ll);
    assert_int_equal(json_integer_value(json_object_get(srv, "requests")), 12);
    assert_true(json_is_true(json_object_get(srv, "ejected")));
    assert_string_equal(json_string_value(json_object_get(srv, "health")), "ejected");
    assert_string_equal(json_string_value(json_object_get(srv, "last_probe")),
                        "connection refused");
    assert_int_equal(json_integer_value(json_object_get(srv, "last_probe_age_ms")), 1500);
    json_t *other = json_object_get(pool, "127.0.0.1:11212");
    assert_string_equal(json_string_value(json_object_get(other, "health")), "suspect");
    assert_string_equal(json_string_value(json_object_get(other, "last_probe")), "none");
    assert_int_equal(json_integer_value(json_object_get(other, "last_probe_age_ms")), -1);
    json_decref(root);
    free(text);
}

static void test_json_servers(void **state)
{
    fixture_t *f = *state;
    /* the weird pool's first server was looked up to 127.0.0.2 */
    const wn_conf_pool_t *wp = &f->conf->pools[pool_index(f->conf, WEIRD_POOL)];
    wn_conf_server_t *looked = (wn_conf_server_t *)&wp->servers[0];
    struct sockaddr_in *sin = (struct sockaddr_in *)&looked->sa;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(11211);
    sin->sin_addr.s_addr = htonl(0x7f000002);
    looked->has_sa = true;
    build(f, 2);
    fill_health(f);
    size_t len;
    char *text = wn_stats_json_servers(&f->view, &len);
    assert_non_null(text);
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "workers")), 2);
    json_t *pools = json_object_get(root, "pools");
    assert_int_equal(json_array_size(pools), 3);
    json_t *weird = json_array_get(pools, pool_index(f->conf, WEIRD_POOL));
    assert_string_equal(json_string_value(json_object_get(weird, "name")), WEIRD_POOL);
    assert_int_equal(json_integer_value(json_object_get(weird, "epoch")), 7);
    json_t *we = json_object_get(weird, "worker_epochs");
    assert_int_equal(json_array_size(we), 2);
    assert_int_equal(json_integer_value(json_array_get(we, 1)), 6);
    assert_true(json_is_false(json_object_get(weird, "converged")));
    assert_int_equal(json_integer_value(json_object_get(weird, "servers_ejected")), 1);
    json_t *s = json_array_get(json_object_get(weird, "servers"), 1);
    assert_string_equal(json_string_value(json_object_get(s, "name")), WEIRD_SERVER);
    assert_string_equal(json_string_value(json_object_get(s, "address")), "127.0.0.1:11211");
    /* not looked up in this fixture: no address yet */
    assert_true(json_is_null(json_object_get(s, "resolved")));
    assert_string_equal(json_string_value(json_object_get(s, "health")), "ejected");
    assert_string_equal(json_string_value(json_object_get(s, "last_probe_code")),
                        "ECONNREFUSED");
    /* no server's words for a refused connection */
    assert_true(json_is_null(json_object_get(s, "last_probe_said")));
    json_t *dns = json_object_get(s, "dns");
    assert_true(json_is_object(dns));
    assert_int_equal(json_integer_value(json_object_get(dns, "lookups")), 41);
    assert_int_equal(json_integer_value(json_object_get(dns, "failures")), 3);
    assert_int_equal(json_integer_value(json_object_get(dns, "moves")), 2);
    s = json_array_get(json_object_get(weird, "servers"), 0);
    assert_true(json_is_null(json_object_get(s, "last_probe")));
    assert_true(json_is_null(json_object_get(s, "dns")));
    assert_string_equal(json_string_value(json_object_get(s, "resolved")), "127.0.0.2:11211");
    json_t *zz = json_array_get(pools, pool_index(f->conf, "zz"));
    assert_true(json_is_true(json_object_get(zz, "converged")));
    json_decref(root);
    free(text);

    /* a probe the server answered wrongly: its line, as kept */
    wn_stats_server_view_t *sv = &f->view.pools[pool_index(f->conf, WEIRD_POOL)].servers[1];
    sv->last_probe_err = WN_EPROTO;
    snprintf(sv->last_probe_said, sizeof(sv->last_probe_said), "%s",
             "-NOAUTH Authentication required.");
    text = wn_stats_json_servers(&f->view, &len);
    assert_non_null(text);
    root = json_loads(text, 0, &jerr);
    assert_non_null(root);
    pools = json_object_get(root, "pools");
    weird = json_array_get(pools, pool_index(f->conf, WEIRD_POOL));
    s = json_array_get(json_object_get(weird, "servers"), 1);
    assert_string_equal(json_string_value(json_object_get(s, "last_probe")), "protocol error");
    assert_string_equal(json_string_value(json_object_get(s, "last_probe_said")),
                        "-NOAUTH Authentication required.");
    json_decref(root);
    free(text);
}

/* ---- -D describes exactly what the JSON carries --------------------------- */

typedef struct names {
    char *v[128];
    size_t n;
} names_t;

static bool has(const names_t *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], name) == 0)
            return true;
    return false;
}

static void test_describe_matches_json(void **state)
{
    fixture_t *f = *state;
    build(f, 1);
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    wn_stats_describe(out);
    fclose(out);

    names_t sec[3] = {0}; /* pool, server, global */
    int cur = -1;
    for (char *line = strtok(buf, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strcmp(line, "pool stats:") == 0)
            cur = 0;
        else if (strcmp(line, "server stats:") == 0)
            cur = 1;
        else if (strcmp(line, "global stats:") == 0)
            cur = 2;
        else if (cur >= 0 && strncmp(line, "  ", 2) == 0) {
            /* twemproxy's layout: name left-justified in 20 columns. */
            char *name = line + 2;
            size_t n = strcspn(name, " ");
            assert_true(n >= 20 || (name[20] == '"' && name[19] == ' '));
            assert_true(sec[cur].n < 128);
            sec[cur].v[sec[cur].n++] = strndup(name, n);
        }
    }
    free(buf);

    size_t len;
    char *text = wn_stats_json_render(&f->view, &len);
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    free(text);
    const char *key;
    json_t *val;
    size_t scalars = 0;
    json_object_foreach(root, key, val)
    {
        if (json_is_object(val)) {
            const char *pkey;
            json_t *pval;
            json_object_foreach(val, pkey, pval)
            {
                if (json_is_object(pval)) {
                    const char *skey;
                    json_t *sval;
                    size_t n = 0;
                    json_object_foreach(pval, skey, sval)
                    {
                        assert_true(has(&sec[1], skey));
                        n++;
                    }
                    assert_int_equal(n, sec[1].n);
                } else if (strncmp(pkey, "cmd_", 4) == 0) {
                    assert_true(has(&sec[0], "cmd_<command>"));
                } else {
                    assert_true(has(&sec[0], pkey));
                }
            }
        } else {
            assert_true(has(&sec[2], key));
            scalars++;
        }
    }
    assert_int_equal(scalars, sec[2].n);
    /* And nothing described is missing from a pool. */
    json_t *alpha = json_object_get(root, "alpha");
    for (size_t i = 0; i < sec[0].n; i++)
        if (strcmp(sec[0].v[i], "cmd_<command>") != 0)
            assert_non_null(json_object_get(alpha, sec[0].v[i]));
    json_decref(root);
    for (int s = 0; s < 3; s++)
        for (size_t i = 0; i < sec[s].n; i++)
            free(sec[s].v[i]);
}

/* ---- Prometheus ---------------------------------------------------------- */

/* The value of the sample line that starts with `prefix` (name and labels). */
static bool sample(const char *text, const char *prefix, double *out)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ') {
            *out = strtod(p + n + 1, NULL);
            return true;
        }
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return false;
}

static void check_histogram(const char *text, const char *name, const char *labels,
                            const wn_hist_sum_t *h)
{
    char prefix[512];
    double prev = 0, v;
    for (unsigned i = 0; i < WN_HIST_BUCKETS; i++) {
        char le[32];
        if (i + 1 < WN_HIST_BUCKETS) {
            double sec = (double)wn_hist_bounds_us[i] / 1e6;
            /* exact decimals: 1e-05 is written 0.00001, 2.5e-05 0.000025 */
            snprintf(le, sizeof(le), "%.6f", sec);
            char *e = le + strlen(le) - 1;
            while (*e == '0')
                *e-- = '\0';
            if (*e == '.')
                *e = '\0';
        } else {
            snprintf(le, sizeof(le), "+Inf");
        }
        snprintf(prefix, sizeof(prefix), "%s_bucket{%s,le=\"%s\"}", name, labels, le);
        assert_true(sample(text, prefix, &v));
        assert_true(v >= prev); /* cumulative */
        prev = v;
    }
    assert_int_equal((uint64_t)prev, h->count);
    snprintf(prefix, sizeof(prefix), "%s_count{%s}", name, labels);
    assert_true(sample(text, prefix, &v));
    assert_int_equal((uint64_t)v, h->count);
    snprintf(prefix, sizeof(prefix), "%s_sum{%s}", name, labels);
    assert_true(sample(text, prefix, &v));
    assert_float_equal(v, (double)h->sum_us / 1e6, 1e-9);
}

static void test_prom_exposition(void **state)
{
    fixture_t *f = *state;
    fill_blocks(f);
    build(f, 2);
    fill_health(f);
    size_t len;
    char *text = wn_stats_prom_render(&f->view, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);

    /* Label values escaped: \\, \" and \n; UTF-8 as is. */
#define WEIRD_POOL_LABEL "pool=\"we\\\"ird\\\\pool\\nname \xe2\x98\x83\""
#define WEIRD_SERVER_LABEL "server=\"se\\\"rv\\\\er\\nname\xe2\x98\x83\""
    double v;
    assert_true(sample(text, "walnut_pool_requests_total{" WEIRD_POOL_LABEL "}", &v));
    assert_int_equal((uint64_t)v, 60);
    assert_true(sample(text, "walnut_server_requests_total{" WEIRD_POOL_LABEL "," WEIRD_SERVER_LABEL "}", &v));
    assert_int_equal((uint64_t)v, 12);
    assert_true(sample(text, "walnut_pool_commands_total{pool=\"alpha\",command=\"set\"}", &v));
    assert_int_equal((uint64_t)v, 2400);
    assert_false(strstr(text, "command=\"(null)\"") != NULL);
    assert_true(sample(text, "walnut_pool_forward_errors_by_cause_total{pool=\"zz\",cause=\"timeout\"}", &v));
    assert_int_equal((uint64_t)v, 12);
    assert_true(sample(text, "walnut_server_ejected{" WEIRD_POOL_LABEL "," WEIRD_SERVER_LABEL "}", &v));
    assert_int_equal((uint64_t)v, 1);
    assert_true(sample(text, "walnut_server_health{" WEIRD_POOL_LABEL "," WEIRD_SERVER_LABEL ",state=\"ejected\"}", &v));
    assert_int_equal((uint64_t)v, 1);
    assert_true(sample(text, "walnut_server_health{" WEIRD_POOL_LABEL "," WEIRD_SERVER_LABEL ",state=\"up\"}", &v));
    assert_int_equal((uint64_t)v, 0);
    assert_true(sample(text, "walnut_server_last_ejected_timestamp_seconds{" WEIRD_POOL_LABEL "," WEIRD_SERVER_LABEL "}", &v));
    assert_float_equal(v, 1700000000.123456, 1e-6);
    assert_true(sample(text, "walnut_server_probe_success{" WEIRD_POOL_LABEL "," WEIRD_SERVER_LABEL "}", &v));
    assert_int_equal((uint64_t)v, 0);
    assert_true(sample(text, "walnut_server_probe_age_seconds{" WEIRD_POOL_LABEL "," WEIRD_SERVER_LABEL "}", &v));
    assert_float_equal(v, 1.5, 1e-9);
    assert_true(sample(
        text, "walnut_server_dns_lookups_total{" WEIRD_POOL_LABEL "," WEIRD_SERVER_LABEL "}", &v));
    assert_int_equal((uint64_t)v, 41);
    assert_true(sample(text,
                       "walnut_server_dns_lookup_failures_total{" WEIRD_POOL_LABEL
                       "," WEIRD_SERVER_LABEL "}",
                       &v));
    assert_int_equal((uint64_t)v, 3);
    assert_true(sample(
        text, "walnut_server_address_changes_total{" WEIRD_POOL_LABEL "," WEIRD_SERVER_LABEL "}",
        &v));
    assert_int_equal((uint64_t)v, 2);
    /* only the named server has them */
    const char *first = strstr(text, "walnut_server_dns_lookups_total{");
    assert_non_null(first);
    assert_null(strstr(first + 1, "walnut_server_dns_lookups_total{"));
    assert_true(sample(text, "walnut_pool_ring_epoch{" WEIRD_POOL_LABEL "}", &v));
    assert_int_equal((uint64_t)v, 7);
    assert_true(sample(text, "walnut_pool_worker_ring_epoch{" WEIRD_POOL_LABEL ",worker=\"1\"}", &v));
    assert_int_equal((uint64_t)v, 6);
    assert_true(sample(text, "walnut_pool_servers_ejected{" WEIRD_POOL_LABEL "}", &v));
    assert_int_equal((uint64_t)v, 1);
    assert_true(sample(text, "walnut_connections", &v));
    assert_int_equal((uint64_t)v, f->view.curr_connections);
    assert_true(sample(text, "walnut_read_bytes_total", &v));
    assert_int_equal((uint64_t)v, f->view.global[WN_G_bytes_read]);
    assert_true(sample(text, "process_open_fds", &v));
    assert_true(sample(text, "process_resident_memory_bytes", &v));
    assert_true(sample(text, "process_start_time_seconds", &v));
    assert_true(sample(text, "process_cpu_seconds_total", &v));
    assert_true(sample(text, "walnut_server_info{pool=\"alpha\",server=\"::1:11213\",address=\"[::1]:11213\"}", &v));

    const wn_stats_pool_view_t *weird = &f->view.pools[pool_index(f->conf, WEIRD_POOL)];
    check_histogram(text, "walnut_pool_request_duration_seconds", WEIRD_POOL_LABEL,
                    &weird->latency);
    check_histogram(text, "walnut_server_request_duration_seconds",
                    WEIRD_POOL_LABEL "," WEIRD_SERVER_LABEL, &weird->servers[1].latency);
    assert_non_null(strstr(text, "le=\"0.00001\""));
    assert_non_null(strstr(text, "le=\"0.000025\""));
    assert_non_null(strstr(text, "le=\"2.5\""));
    assert_non_null(strstr(text, "le=\"10\""));

    /* Every sample belongs to a family declared once, HELP then TYPE; counters
     * end in _total; no line has a raw newline inside a label (the escape). */
    names_t families = {0};
    char *copy = strdup(text);
    char *last_help = NULL;
    for (char *line = strtok(copy, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strncmp(line, "# HELP ", 7) == 0) {
            free(last_help);
            last_help = strndup(line + 7, strcspn(line + 7, " "));
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char *name = line + 7;
            size_t n = strcspn(name, " ");
            char *fam = strndup(name, n);
            assert_non_null(last_help);
            assert_string_equal(fam, last_help);
            assert_false(has(&families, fam));
            const char *type = name + n + 1;
            if (strcmp(type, "counter") == 0)
                assert_string_equal(fam + n - 6, "_total");
            else
                assert_true(n < 6 || strcmp(fam + n - 6, "_total") != 0);
            assert_true(families.n < 128);
            families.v[families.n++] = fam;
            continue;
        }
        assert_true(line[0] != '#');
        size_t n = strcspn(line, "{ ");
        char *name = strndup(line, n);
        bool ok = has(&families, name);
        static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
        for (size_t i = 0; !ok && i < 3; i++) {
            size_t sl = strlen(suffixes[i]);
            if (n > sl && strcmp(name + n - sl, suffixes[i]) == 0) {
                name[n - sl] = '\0';
                ok = has(&families, name);
            }
        }
        assert_true(ok);
        /* The last declared family owns the sample: families are contiguous. */
        assert_string_equal(name, families.v[families.n - 1]);
        free(name);
    }
    free(last_help);
    free(copy);
    for (size_t i = 0; i < families.n; i++)
        free(families.v[i]);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_bucket_bounds),
        cmocka_unit_test(test_hist_merge),
        cmocka_unit_test_setup_teardown(test_view_sums, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_folds_foreign_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_twemproxy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_servers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_describe_matches_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prom_exposition, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
