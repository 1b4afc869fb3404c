/*
 * test_placement: walnut places every key on the server twemproxy 0.5.0 does.
 * Loads each test/data/placement/<shape>.yml with the config loader, builds
 * each pool's ring and checks wn_ring_lookup against <shape>.tsv, which
 * test/tools/gen_placement.py (memcached pools) and gen_placement_redis.py
 * (redis_* shapes, `redis: true` pools) measured on the real nutcracker. Also
 * checks the properties of the random distribution, which has no table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "walnut/config.h"
#include "walnut/core.h"
#include "walnut/route.h"

#define NPOOLS_ALL (WN_HASH_COUNT * 2) /* every hash x (ketama, modula) */
#define NPOOLS_REDIS 7                 /* gen_placement_redis.py's POOLS */
#define MAX_POOLS NPOOLS_ALL
/* Redis keys go up to nutcracker's limit: shorter than the mbuf (16384) - 48. */
#define MAX_KEY 16384
#define MAX_EXAMPLES 5 /* mismatches printed per pool */

typedef struct shape {
    const char *name;
    uint32_t nservers; /* servers in every pool */
    uint32_t min_keys; /* rows per pool at least */
    uint32_t npools;   /* pools in the config, each named <hash>_<distribution> */
    bool redis;        /* every pool has `redis: true` */
} shape_t;

/* Row counts as generated: 297 keys per pool (357 for hash_tag); redis: 192
 * (239 for redis_hash_tag, 427 with every single-byte key). A little slack so
 * that a regenerated key set may change slightly. */
static const shape_t shapes[] = {
    {"two_servers", 2, 280, NPOOLS_ALL, false},
    {"weights_1_2_3", 3, 280, NPOOLS_ALL, false},
    {"servers_25", 25, 280, NPOOLS_ALL, false},
    {"servers_47", 47, 280, NPOOLS_ALL, false},
    {"named", 5, 280, NPOOLS_ALL, false},
    {"default_port", 4, 280, NPOOLS_ALL, false},
    {"hash_tag", 3, 340, NPOOLS_ALL, false},
    {"redis_two_servers", 2, 400, NPOOLS_REDIS, true},
    {"redis_weights_1_2_3", 3, 180, NPOOLS_REDIS, true},
    {"redis_named", 5, 180, NPOOLS_REDIS, true},
    {"redis_hash_tag", 3, 220, NPOOLS_REDIS, true},
    {"redis_servers_25", 25, 400, NPOOLS_REDIS, true},
    {"redis_default_port", 4, 180, NPOOLS_REDIS, true},
    {"redis_all_hashes", 4, 180, NPOOLS_ALL, true},
};

/* Per-pool state while checking one shape. */
typedef struct pool_check {
    const wn_conf_pool_t *pool; /* borrowed: conf */
    wn_ring_t *ring;            /* owned */
    uint32_t rows;
    uint32_t mismatches;
    uint32_t unknown_names; /* tsv names a server the config does not have */
} pool_check_t;

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    while (buf != NULL) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap)
            break;
        char *nb = realloc(buf, cap * 2 + 1);
        if (nb == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    if (buf != NULL) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode `n` hex digits into out; the key length, or -1. No digits is the
 * empty key, which Redis pools allow (it hashes to 0). */
static int unhex(const char *s, size_t n, char *out, size_t cap)
{
    if (n % 2 != 0 || n / 2 > cap)
        return -1;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (char)(hi << 4 | lo);
    }
    return (int)(n / 2);
}

/* The key as text a person can read: printable ASCII kept, the rest \xNN. */
static void printable(const char *key, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    if (o + 5 >= cap && o >= 3)
        memcpy(out + o - 3, "...", 3);
    out[o] = '\0';
}

static int server_index(const wn_conf_pool_t *pool, const char *name, size_t len)
{
    for (uint32_t i = 0; i < pool->nservers; i++) {
        if (pool->servers[i].name_len == len && memcmp(pool->servers[i].name, name, len) == 0)
            return (int)i;
    }
    return -1;
}

/* twemproxy keeps servers sorted by name length, then bytes; modula depends on it. */
static bool twemproxy_sorted(const wn_conf_pool_t *pool)
{
    for (uint32_t i = 1; i < pool->nservers; i++) {
        const wn_conf_server_t *a = &pool->servers[i - 1], *b = &pool->servers[i];
        if (a->name_len > b->name_len ||
            (a->name_len == b->name_len && memcmp(a->name, b->name, a->name_len) > 0))
            return false;
    }
    return true;
}

static void check_shape(void **state)
{
    const shape_t *shape = *state;
    char path[1024], err[512] = "";
    wn_conf_t *conf = NULL;
    pool_check_t checks[MAX_POOLS];
    uint32_t nchecks = 0, total_rows = 0, total_bad = 0, bad_lines = 0;
    bool setup_failed = false;

    memset(checks, 0, sizeof(checks));

    snprintf(path, sizeof(path), "%s/placement/%s.yml", WN_TEST_DATA, shape->name);
    int rc = wn_conf_load(path, &conf, err, sizeof(err));
    if (rc != 0) {
        print_error("%s: wn_conf_load failed (%d %s): %s\n", path, rc, wn_strerror(rc), err);
        fail();
    }
    if (conf->npools != shape->npools) {
        print_error("%s: %u pools, expected %u\n", path, conf->npools, shape->npools);
        setup_failed = true;
    }

    /* One ring per pool, checking the loader read the pool as its name says. */
    for (uint32_t p = 0; p < conf->npools && nchecks < MAX_POOLS; p++) {
        const wn_conf_pool_t *pool = &conf->pools[p];
        char want[64];
        snprintf(want, sizeof(want), "%s_%s", wn_hash_name(pool->hash),
                 wn_dist_name(pool->distribution));
        if (strcmp(want, pool->name) != 0) {
            print_error("%s: pool '%s' loaded as hash %s, distribution %s\n", shape->name,
                        pool->name, wn_hash_name(pool->hash), wn_dist_name(pool->distribution));
            setup_failed = true;
        }
        if (pool->redis != shape->redis) {
            print_error("%s: pool '%s' loaded as %s, expected %s\n", shape->name, pool->name,
                        pool->redis ? "redis" : "memcached", shape->redis ? "redis" : "memcached");
            setup_failed = true;
        }
        if (pool->nservers != shape->nservers) {
            print_error("%s: pool '%s' has %u servers, expected %u\n", shape->name, pool->name,
                        pool->nservers, shape->nservers);
            setup_failed = true;
        }
        if (!twemproxy_sorted(pool))
            print_error("%s: note: pool '%s' servers are not in twemproxy's order (name "
                        "length, then bytes); modula placement depends on it\n",
                        shape->name, pool->name);

        wn_ring_server_t *rs = calloc(pool->nservers ? pool->nservers : 1, sizeof(*rs));
        assert_non_null(rs);
        wn_conf_ring_servers(pool, rs);
        wn_ring_params_t params = {
            .dist = pool->distribution,
            .hash = pool->hash,
            .hash_tag = pool->has_hash_tag ? pool->hash_tag : NULL,
            .epoch = 0,
        };
        pool_check_t *pc = &checks[nchecks++];
        pc->pool = pool;
        rc = wn_ring_create(&params, rs, pool->nservers, NULL, &pc->ring);
        free(rs);
        if (rc != 0) {
            print_error("%s: pool '%s': wn_ring_create failed: %d %s\n", shape->name, pool->name,
                        rc, wn_strerror(rc));
            pc->ring = NULL;
            setup_failed = true;
        }
    }

    snprintf(path, sizeof(path), "%s/placement/%s.tsv", WN_TEST_DATA, shape->name);
    size_t len = 0;
    char *tsv = read_file(path, &len);
    if (tsv == NULL) {
        print_error("%s: cannot read (missing placement data?)\n", path);
        setup_failed = true;
        len = 0; /* no rows: every pool is reported short below */
    }

    unsigned lineno = 0;
    for (char *line = tsv, *next; tsv != NULL && line < tsv + len; line = next) {
        char *nl = memchr(line, '\n', (size_t)(tsv + len - line));
        next = nl ? nl + 1 : tsv + len;
        if (nl)
            *nl = '\0';
        lineno++;
        if (*line == '\0')
            continue;
        char *t1 = strchr(line, '\t');
        char *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (t2 == NULL || strchr(t2 + 1, '\t') != NULL) {
            if (bad_lines++ < 3)
                print_error("%s:%u: not pool<TAB>key_hex<TAB>server\n", path, lineno);
            continue;
        }
        *t1 = '\0';
        *t2 = '\0';
        const char *pool_name = line, *hex = t1 + 1, *want = t2 + 1;
        size_t want_len = strlen(want);
        static char key[MAX_KEY];
        int klen = unhex(hex, (size_t)(t2 - hex), key, sizeof(key));
        if (klen < 0) {
            if (bad_lines++ < 3)
                print_error("%s:%u: bad key hex\n", path, lineno);
            continue;
        }

        pool_check_t *pc = NULL;
        for (uint32_t i = 0; i < nchecks; i++) {
            if (strcmp(checks[i].pool->name, pool_name) == 0) {
                pc = &checks[i];
                break;
            }
        }
        if (pc == NULL) {
            if (bad_lines++ < 3)
                print_error("%s:%u: pool '%s' is not in the config\n", path, lineno, pool_name);
            continue;
        }
        pc->rows++;
        total_rows++;
        if (pc->ring == NULL)
            continue;

        int expect = server_index(pc->pool, want, want_len);
        uint32_t got = wn_ring_lookup(pc->ring, key, (size_t)klen);
        if (expect >= 0 && got == (uint32_t)expect)
            continue;

        pc->mismatches++;
        total_bad++;
        if (expect < 0)
            pc->unknown_names++;
        if (pc->mismatches <= MAX_EXAMPLES) {
            char shown[96];
            printable(key, (size_t)klen, shown, sizeof(shown));
            const char *got_name = got == WN_RING_NONE        ? "(none)"
                                   : got < pc->pool->nservers ? pc->pool->servers[got].name
                                                              : "(out of range)";
            print_error("  %s/%s: key \"%s\" (%d bytes, hex %.64s%s): expected %s%s, got [%u] "
                        "%s\n",
                        shape->name, pool_name, shown, klen, hex, strlen(hex) > 64 ? "..." : "",
                        want, expect < 0 ? " (no server by that name in the config)" : "", got,
                        got_name);
        }
    }
    free(tsv);

    /* Summary: every pool has its rows; mismatches per pool. */
    uint32_t short_pools = 0;
    for (uint32_t i = 0; i < nchecks; i++) {
        pool_check_t *pc = &checks[i];
        if (pc->rows < shape->min_keys) {
            print_error("%s/%s: only %u rows in the tsv, expected at least %u\n", shape->name,
                        pc->pool->name, pc->rows, shape->min_keys);
            short_pools++;
        }
        if (pc->mismatches > 0)
            print_error("%s/%s: %u of %u keys misplaced%s\n", shape->name, pc->pool->name,
                        pc->mismatches, pc->rows,
                        pc->unknown_names ? " (some name servers the config lacks)" : "");
        wn_ring_unref(pc->ring);
    }
    print_message("placement %s: %u pools, %u rows, %u misplaced, %u bad lines\n", shape->name,
                  nchecks, total_rows, total_bad, bad_lines);
    wn_conf_unref(conf);

    assert_false(setup_failed);
    assert_int_equal(nchecks, shape->npools);
    assert_int_equal(short_pools, 0);
    assert_int_equal(bad_lines, 0);
    assert_int_equal(total_bad, 0);
}

/* Random: any live server, each of them over many lookups, never a dead one. */
static void check_random(void **state)
{
    (void)state;
    enum { N = 5, LOOKUPS = 10000 };
    static const char *const names[N] = {"127.0.0.1:11212", "127.0.0.1:11213",
                                         "127.0.0.1:11214", "127.0.0.1:11215", "server5"};
    wn_ring_server_t rs[N];
    for (int i = 0; i < N; i++) {
        rs[i].name = names[i];
        rs[i].name_len = strlen(names[i]);
        rs[i].weight = (uint32_t)(i % 2 + 1);
    }
    wn_ring_params_t params = {.dist = WN_DIST_RANDOM, .hash = WN_HASH_FNV1A_64};

    /* All live. */
    wn_ring_t *ring = NULL;
    assert_int_equal(wn_ring_create(&params, rs, N, NULL, &ring), 0);
    assert_non_null(ring);
    unsigned seen[N] = {0};
    for (int i = 0; i < LOOKUPS; i++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "key:%d", i % 7);
        uint32_t idx = wn_ring_lookup(ring, key, (size_t)n);
        assert_true(idx < N);
        seen[idx]++;
    }
    for (int i = 0; i < N; i++) {
        if (seen[i] == 0)
            print_error("random: server %d never picked in %d lookups\n", i, LOOKUPS);
        assert_true(seen[i] > 0);
    }
    wn_ring_unref(ring);

    /* Two dead: never picked; the three live all are. */
    const bool live[N] = {true, false, true, true, false};
    ring = NULL;
    assert_int_equal(wn_ring_create(&params, rs, N, live, &ring), 0);
    assert_int_equal(wn_ring_nlive(ring), 3);
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < LOOKUPS; i++) {
        uint32_t idx = wn_ring_lookup(ring, "same-key", 8);
        assert_true(idx < N);
        if (!live[idx])
            print_error("random: dead server %u picked at lookup %d\n", idx, i);
        assert_true(live[idx]);
        seen[idx]++;
    }
    for (int i = 0; i < N; i++)
        assert_true(live[i] ? seen[i] > 0 : seen[i] == 0);
    wn_ring_unref(ring);

    /* None live: no server. */
    const bool none[N] = {false, false, false, false, false};
    ring = NULL;
    assert_int_equal(wn_ring_create(&params, rs, N, none, &ring), 0);
    assert_int_equal(wn_ring_lookup(ring, "k", 1), WN_RING_NONE);
    wn_ring_unref(ring);
}

int main(void)
{
    struct CMUnitTest tests[WN_ARRAY_SIZE(shapes) + 1];
    for (size_t i = 0; i < WN_ARRAY_SIZE(shapes); i++) {
        tests[i] = (struct CMUnitTest){
            .name = shapes[i].name,
            .test_func = check_shape,
            .initial_state = (void *)&shapes[i],
        };
    }
    tests[WN_ARRAY_SIZE(shapes)] = (struct CMUnitTest)cmocka_unit_test(check_random);
    return cmocka_run_group_tests_name("placement", tests, NULL, NULL);
}
