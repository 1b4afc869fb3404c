/*
 * test_redis_cmd.c: the redis command table against what was measured:
 * every row's arity, key positions, numkeys arg and flags against
 * redis-server 7.0.15's COMMAND INFO (test/data/redis/command_info.tsv,
 * written by measure_command_info.py), the NC flag against what nutcracker
 * 0.5.0 accepted (nutcracker_scan.txt, from measure_nutcracker.py); then
 * lookups in any case, the classes walnut gives, the arity and key helpers
 * and the unsupported-command reply.
 */
#include "walnut/proto_resp.h"

#include "walnut/core.h"

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- measured data ----------------------------------------------------- */

typedef struct measured {
    char name[32];
    int arity, first, last, step, numkeys_at;
    char flags[256];
} measured_t;

static FILE *open_data(const char *file)
{
    char path[512];
    snprintf(path, sizeof path, "%s/redis/%s", WN_TEST_DATA, file);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        print_error("cannot open %s\n", path);
    assert_non_null(f);
    return f;
}

/* command_info.tsv: name arity first last step numkeys_at flags */
static size_t load_command_info(measured_t *rows, size_t cap)
{
    FILE *f = open_data("command_info.tsv");
    char line[512];
    size_t n = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (line[0] == '#')
            continue;
        assert_true(n < cap);
        measured_t *m = &rows[n++];
        int got = sscanf(line, "%31s %d %d %d %d %d %255s", m->name, &m->arity, &m->first, &m->last,
                         &m->step, &m->numkeys_at, m->flags);
        assert_int_equal(got, 7);
    }
    fclose(f);
    return n;
}

static bool has_flag(const char *flags, const char *flag)
{
    size_t len = strlen(flag);
    for (const char *p = flags; (p = strstr(p, flag)) != NULL; p += len) {
        bool start = p == flags || p[-1] == ',';
        bool end = p[len] == '\0' || p[len] == ',';
        if (start && end)
            return true;
    }
    return false;
}

/* Names nutcracker answered with at least one arg count. */
static bool nc_accepts(const char *name)
{
    /* Not in the scan: QUIT was not sent (twemproxy answers it locally by
     * closing); MOVE is recognised, then closes the connection (a twemproxy
     * bug, see twemproxy-reference.md 4.2). */
    if (strcmp(name, "quit") == 0 || strcmp(name, "move") == 0)
        return true;
    FILE *f = open_data("nutcracker_scan.txt");
    char line[256];
    bool found = false;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        char word[64];
        if (line[0] == '#' || sscanf(line, "%63s", word) != 1 || strcmp(word, name) != 0)
            continue;
        found = strstr(line, " fwd") != NULL;
    }
    fclose(f);
    return found;
}

/* ---- tests ------------------------------------------------------------- */

/* Every measured command is in the table with its measured shape; every
 * table row was measured. */
static void test_table_matches_redis(void **state)
{
    (void)state;
    static measured_t rows[400];
    size_t n = load_command_info(rows, WN_ARRAY_SIZE(rows));
    assert_int_equal(n, 240);
    assert_int_equal(n, wn_rcmd_count());
    for (size_t i = 0; i < n; i++) {
        const measured_t *m = &rows[i];
        const wn_rcmd_t *c = wn_rcmd_lookup(m->name, strlen(m->name));
        if (c == NULL)
            print_error("missing: %s\n", m->name);
        assert_non_null(c);
        assert_string_equal(c->name, m->name);
        assert_int_equal(c->arity, m->arity);
        assert_int_equal(c->first_key, m->first);
        assert_int_equal(c->last_key, m->last);
        assert_int_equal(c->key_step, m->step);
        assert_int_equal(c->numkeys_at, m->numkeys_at);
        assert_int_equal(!!(c->flags & WN_RCMD_F_WRITE), has_flag(m->flags, "write"));
        assert_int_equal(!!(c->flags & WN_RCMD_F_READONLY), has_flag(m->flags, "readonly"));
        assert_int_equal(!!(c->flags & WN_RCMD_F_MOVABLE), has_flag(m->flags, "movablekeys"));
        if (nc_accepts(m->name) != !!(c->flags & WN_RCMD_F_NC))
            print_error("NC flag wrong: %s\n", m->name);
        assert_int_equal(!!(c->flags & WN_RCMD_F_NC), nc_accepts(m->name));
    }
}

/* Ids are dense and the names sorted (the lookup's binary search needs it). */
static void test_ids_and_order(void **state)
{
    (void)state;
    assert_true(wn_rcmd_count() < 256);
    for (uint16_t id = 0; id < wn_rcmd_count(); id++) {
        const wn_rcmd_t *c = wn_rcmd_by_id(id);
        assert_non_null(c);
        assert_non_null(c->name);
        assert_int_equal(c->id, id);
        assert_true(c->cls < WN_RCMD_CLASS_COUNT);
        assert_int_equal(c->name_len, strlen(c->name));
        assert_true(wn_rcmd_lookup(c->name, strlen(c->name)) == c);
        /* a prefix or an extension of a name is another command or none */
        char up[32];
        size_t n = strlen(c->name);
        for (size_t i = 0; i < n; i++)
            up[i] = (char)toupper((unsigned char)c->name[i]);
        assert_true(wn_rcmd_lookup(up, n) == c);
        const wn_rcmd_t *pre = wn_rcmd_lookup(c->name, n - 1);
        assert_true(pre == NULL || (pre->name_len == n - 1 && pre != c));
        up[n] = 'X';
        const wn_rcmd_t *ext = wn_rcmd_lookup(up, n + 1);
        assert_true(ext == NULL || (ext->name_len == n + 1 && ext != c));
        for (const char *p = c->name; *p; p++)
            assert_false(isupper((unsigned char)*p));
        if (id > 0)
            assert_true(strcmp(wn_rcmd_by_id(id - 1)->name, c->name) < 0);
        /* a reason exactly for the refused */
        assert_int_equal(c->unsupported_reason != NULL, c->cls == WN_RCMD_UNSUPPORTED);
    }
    assert_null(wn_rcmd_by_id(wn_rcmd_count()));
    assert_null(wn_rcmd_by_id(UINT16_MAX));
    assert_true(wn_rcmd_by_id(WN_RCMD_ID_GET) == wn_rcmd_lookup("get", 3));
    assert_true(wn_rcmd_by_id(WN_RCMD_ID_RESTORE_ASKING) == wn_rcmd_lookup("restore-asking", 14));
    assert_string_equal(wn_rcmd_class_name(WN_RCMD_MULTI_KV), "multi_kv");
    assert_null(wn_rcmd_class_name(WN_RCMD_CLASS_COUNT));
}

static void test_lookup(void **state)
{
    (void)state;
    static const char *same[] = {"get", "GET", "Get", "gEt"};
    for (size_t i = 0; i < WN_ARRAY_SIZE(same); i++) {
        const wn_rcmd_t *c = wn_rcmd_lookup(same[i], 3);
        assert_non_null(c);
        assert_int_equal(c->id, WN_RCMD_ID_GET);
    }
    assert_int_equal(wn_rcmd_lookup("GEORADIUSBYMEMBER_RO", 20)->id,
                     WN_RCMD_ID_GEORADIUSBYMEMBER_RO);
    assert_int_equal(wn_rcmd_lookup("EvalSha_Ro", 10)->id, WN_RCMD_ID_EVALSHA_RO);
    assert_int_equal(wn_rcmd_lookup("acl", 3)->id, 0);
    assert_int_equal(wn_rcmd_lookup("zunionstore", 11)->id, WN_RCMD_COUNT - 1);
    /* only the given bytes count */
    assert_int_equal(wn_rcmd_lookup("getset", 3)->id, WN_RCMD_ID_GET);
    assert_int_equal(wn_rcmd_lookup("setex", 3)->id, WN_RCMD_ID_SET);

    static const char *unknown[] = {"",
                                    "g",
                                    "ge",
                                    "gett",
                                    "foo",
                                    "zzzz",
                                    "a",
                                    "aaa",
                                    "config|get",
                                    "georadiusbymember_rox",
                                    "restore_asking",
                                    "get ",
                                    " get"};
    for (size_t i = 0; i < WN_ARRAY_SIZE(unknown); i++)
        assert_null(wn_rcmd_lookup(unknown[i], strlen(unknown[i])));
    assert_null(wn_rcmd_lookup("get\0", 4));
    assert_null(wn_rcmd_lookup("g\0t", 3));
    assert_null(wn_rcmd_lookup("GET\xc0", 4));
    char longname[300];
    memset(longname, 'a', sizeof longname);
    assert_null(wn_rcmd_lookup(longname, sizeof longname));
    /* upper-casing is ASCII only: no locale tricks */
    assert_null(wn_rcmd_lookup("G\xc9T", 3));
}

/* The lookup against a plain scan of the table, for names close to real
 * ones (a real name with one byte changed, cut or extended, random case)
 * and random bytes. */
static const wn_rcmd_t *scan_for(const char *name, size_t len)
{
    for (uint16_t id = 0; id < wn_rcmd_count(); id++) {
        const wn_rcmd_t *c = wn_rcmd_by_id(id);
        if (strlen(c->name) != len)
            continue;
        size_t i = 0;
        while (i < len && (unsigned char)c->name[i] ==
                              (unsigned char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a'
                                                                               : name[i]))
            i++;
        if (i == len)
            return c;
    }
    return NULL;
}

static void test_lookup_against_scan(void **state)
{
    (void)state;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    size_t found = 0;
    for (int round = 0; round < 200000; round++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t rnd = (uint32_t)(seed >> 33);
        char name[40];
        size_t len;
        if (rnd % 4 == 0) {
            len = 1 + rnd / 4 % 24;
            for (size_t i = 0; i < len; i++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                name[i] = (char)(seed >> 56);
            }
        } else {
            const wn_rcmd_t *c = wn_rcmd_by_id((uint16_t)(rnd % wn_rcmd_count()));
            len = strlen(c->name);
            memcpy(name, c->name, len);
            for (size_t i = 0; i < len; i++)
                if ((rnd >> (i % 16)) & 1)
                    name[i] = (char)toupper((unsigned char)name[i]);
            switch (rnd / 65536 % 4) {
            case 0:
                break;
            case 1:
                name[rnd / 7 % len] ^= (char)(1 + rnd / 13 % 127);
                break;
            case 2:
                len -= 1 + rnd / 7 % len;
                break;
            default:
                name[len++] = "as_-|"[rnd / 7 % 5];
                break;
            }
        }
        const wn_rcmd_t *want = len <= 20 ? scan_for(name, len) : NULL;
        assert_true(wn_rcmd_lookup(name, len) == want);
        found += want != NULL;
    }
    assert_true(found > 30000); /* about 3 in 16 rounds look up a real name */
}

static wn_rcmd_class_t cls_of(const char *name)
{
    const wn_rcmd_t *c = wn_rcmd_lookup(name, strlen(name));
    assert_non_null(c);
    return (wn_rcmd_class_t)c->cls;
}

static void test_classes(void **state)
{
    (void)state;
    static const struct {
        const char *names;
        wn_rcmd_class_t cls;
    } want[] = {
        {"mget del unlink touch exists", WN_RCMD_MULTI_KEY},
        {"mset", WN_RCMD_MULTI_KV},
        {"eval evalsha eval_ro evalsha_ro fcall fcall_ro", WN_RCMD_SCRIPT},
        {"msetnx rename renamenx bitop lcs sintercard zintercard lmpop zmpop",
         WN_RCMD_ALL_KEYS_ONE_SERVER},
        {"ping echo quit select auth hello client", WN_RCMD_LOCAL},
        {"command lolwut", WN_RCMD_KEYLESS},
        {"script", WN_RCMD_EVERY_SERVER},
        {"get set getdel hgetall sinter sunionstore rpoplpush smove lmove pfmerge pfcount copy "
         "sort "
         "zunionstore zinterstore zdiff georadius expiretime sort_ro substr",
         WN_RCMD_KEY},
        {"multi exec discard watch unwatch subscribe publish pubsub blpop brpop blmove bzpopmin "
         "wait keys scan randomkey dbsize flushall flushdb info time config function "
         "object xadd xread cluster readonly migrate reset shutdown monitor move",
         WN_RCMD_UNSUPPORTED},
    };
    for (size_t i = 0; i < WN_ARRAY_SIZE(want); i++) {
        char names[512];
        snprintf(names, sizeof names, "%s", want[i].names);
        for (char *save, *w = strtok_r(names, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
            if (cls_of(w) != want[i].cls)
                print_error("%s: %s\n", w, wn_rcmd_class_name(cls_of(w)));
            assert_int_equal(cls_of(w), want[i].cls);
        }
    }
    /* twemproxy forwards every NC command but these; walnut refuses none of
     * them but MOVE (twemproxy closes the connection on it; forwarded, it
     * takes the key to a database walnut does not serve) */
    for (uint16_t id = 0; id < wn_rcmd_count(); id++) {
        const wn_rcmd_t *c = wn_rcmd_by_id(id);
        if ((c->flags & WN_RCMD_F_NC) && id != WN_RCMD_ID_MOVE)
            assert_int_not_equal(c->cls, WN_RCMD_UNSUPPORTED);
        /* the split ones have every arg from 1 on a key (or key/value pairs) */
        if (c->cls == WN_RCMD_MULTI_KEY || c->cls == WN_RCMD_MULTI_KV) {
            assert_int_equal(c->first_key, 1);
            assert_int_equal(c->last_key, -1);
            assert_int_equal(c->key_step, c->cls == WN_RCMD_MULTI_KV ? 2 : 1);
        }
        if (c->cls == WN_RCMD_SCRIPT)
            assert_int_equal(c->numkeys_at, 2);
        if (c->cls == WN_RCMD_KEY)
            assert_true(c->first_key >= 1 || c->numkeys_at >= 1);
    }
}

static void test_argc(void **state)
{
    (void)state;
    const wn_rcmd_t *get = wn_rcmd_lookup("get", 3), *del = wn_rcmd_lookup("del", 3);
    const wn_rcmd_t *mset = wn_rcmd_lookup("mset", 4), *msetnx = wn_rcmd_lookup("msetnx", 6);
    const wn_rcmd_t *ping = wn_rcmd_lookup("ping", 4);
    assert_false(wn_rcmd_argc_ok(get, 1));
    assert_true(wn_rcmd_argc_ok(get, 2));
    assert_false(wn_rcmd_argc_ok(get, 3));
    assert_false(wn_rcmd_argc_ok(del, 1));
    assert_true(wn_rcmd_argc_ok(del, 2));
    assert_true(wn_rcmd_argc_ok(del, 1000));
    assert_true(wn_rcmd_argc_ok(ping, 1));
    assert_true(wn_rcmd_argc_ok(ping, 2));
    /* arity -1: "PING a b" passes the generic check; redis-server's PING
     * then refuses it itself with the same arity error (measured) */
    assert_true(wn_rcmd_argc_ok(ping, 3));
    /* measured: "MSET a 1 b" is a wrong number of arguments, so is MSETNX's */
    for (uint32_t argc = 0; argc < 9; argc++) {
        bool want = argc >= 3 && argc % 2 == 1;
        assert_int_equal(wn_rcmd_argc_ok(mset, argc), want);
        assert_int_equal(wn_rcmd_argc_ok(msetnx, argc), want);
    }
}

static void assert_keys(const char *name, uint32_t argc, bool ok, uint32_t first, uint32_t last,
                        uint32_t step)
{
    const wn_rcmd_t *c = wn_rcmd_lookup(name, strlen(name));
    assert_non_null(c);
    uint32_t f = 99, l = 99, s = 99;
    assert_int_equal(wn_rcmd_key_range(c, argc, &f, &l, &s), ok);
    if (!ok)
        return;
    assert_int_equal(f, first);
    assert_int_equal(l, last);
    assert_int_equal(s, step);
}

static void test_key_range(void **state)
{
    (void)state;
    assert_keys("get", 2, true, 1, 1, 1);
    assert_keys("del", 4, true, 1, 3, 1);
    assert_keys("mset", 5, true, 1, 3, 2);
    assert_keys("mset", 7, true, 1, 5, 2);
    assert_keys("rename", 3, true, 1, 2, 1);
    assert_keys("smove", 4, true, 1, 2, 1);
    assert_keys("bitop", 5, true, 2, 4, 1);
    assert_keys("blpop", 4, true, 1, 2, 1); /* last key -2: before the timeout */
    assert_keys("sinterstore", 4, true, 1, 3, 1);
    assert_keys("zunionstore", 5, true, 1, 1, 1); /* the rest follow numkeys (arg 2) */
    assert_keys("zunion", 4, false, 0, 0, 0);     /* only numkeys: see numkeys_at */
    assert_keys("eval", 4, false, 0, 0, 0);
    assert_keys("ping", 1, false, 0, 0, 0);
    assert_keys("get", 1, false, 0, 0, 0);   /* too few args: no key there */
    assert_keys("rename", 2, true, 1, 1, 1); /* only the keys that are there */
    assert_keys("mset", 4, true, 1, 3, 2);   /* (argc_ok refuses this one) */
    assert_int_equal(wn_rcmd_lookup("zunion", 6)->numkeys_at, 1);
    assert_int_equal(wn_rcmd_lookup("zunionstore", 11)->numkeys_at, 2);

    /* routing: the first key, wherever it is */
    static const struct {
        const char *name;
        uint32_t arg;
    } route[] = {{"get", 1},   {"mset", 1},    {"bitop", 2},      {"zunionstore", 1}, {"zunion", 2},
                 {"zdiff", 2}, {"eval", 3},    {"evalsha_ro", 3}, {"fcall", 3},       {"lmpop", 2},
                 {"ping", 0},  {"command", 0}, {"keys", 0}};
    for (size_t i = 0; i < WN_ARRAY_SIZE(route); i++)
        assert_int_equal(wn_rcmd_route_arg(wn_rcmd_lookup(route[i].name, strlen(route[i].name))),
                         route[i].arg);
    /* every forwarded class can be routed */
    for (uint16_t id = 0; id < wn_rcmd_count(); id++) {
        const wn_rcmd_t *c = wn_rcmd_by_id(id);
        if (c->cls == WN_RCMD_KEY || c->cls == WN_RCMD_SCRIPT || c->cls == WN_RCMD_MULTI_KEY ||
            c->cls == WN_RCMD_MULTI_KV || c->cls == WN_RCMD_ALL_KEYS_ONE_SERVER)
            assert_true(wn_rcmd_route_arg(c) >= 1);
    }
}

static char reply_of(const char *name, uint32_t argc)
{
    const wn_rcmd_t *c = wn_rcmd_lookup(name, strlen(name));
    assert_non_null(c);
    return wn_rcmd_reply_type(c, argc);
}

/* The reply types walnut checks replies against (measured against
 * redis-server 7.0 for every marked command: see the table's comment). */
static void test_reply_type(void **state)
{
    (void)state;
    assert_int_equal(reply_of("incr", 2), ':');
    assert_int_equal(reply_of("del", 4), ':');
    assert_int_equal(reply_of("expire", 4), ':');
    assert_int_equal(reply_of("get", 2), '$');
    assert_int_equal(reply_of("mget", 3), '*');
    assert_int_equal(reply_of("mset", 5), '+');
    assert_int_equal(reply_of("type", 2), '+');
    /* SET: only its plain form is always +OK (GET, NX, XX change it) */
    assert_int_equal(reply_of("set", 3), '+');
    assert_int_equal(reply_of("set", 4), 0);
    assert_int_equal(reply_of("set", 5), 0);
    /* a count turns a bulk into an array */
    static const char *const counted[] = {"lpop",        "rpop",       "spop",
                                          "srandmember", "hrandfield", "zrandmember"};
    for (size_t i = 0; i < WN_ARRAY_SIZE(counted); i++) {
        assert_int_equal(reply_of(counted[i], 2), '$');
        assert_int_equal(reply_of(counted[i], 3), 0);
    }
    /* types that depend on the arguments or the data */
    static const char *const varies[] = {"zadd",      "zrank", "lpos", "sort",
                                         "georadius", "lcs",   "eval", "command"};
    for (size_t i = 0; i < WN_ARRAY_SIZE(varies); i++)
        assert_int_equal(reply_of(varies[i], 4), 0);
    /* only forwarded commands carry one, and only RESP2 types */
    for (uint16_t id = 0; id < wn_rcmd_count(); id++) {
        const wn_rcmd_t *c = wn_rcmd_by_id(id);
        if (c->cls == WN_RCMD_LOCAL || c->cls == WN_RCMD_UNSUPPORTED || c->cls == WN_RCMD_SCRIPT ||
            c->cls == WN_RCMD_KEYLESS || c->cls == WN_RCMD_EVERY_SERVER)
            assert_int_equal(c->reply, 0);
        assert_true(c->reply == 0 || strchr("+:$*", c->reply) != NULL);
    }
}

static void test_unsupported_reply(void **state)
{
    (void)state;
    char e[WN_RESP_UNSUPPORTED_MAX];
    int n = wn_resp_compose_unsupported(e, sizeof e, wn_rcmd_lookup("multi", 5));
    static const char want[] =
        "-ERR unsupported command 'multi': transactions need a dedicated server connection\r\n";
    assert_int_equal(n, sizeof want - 1);
    assert_memory_equal(e, want, sizeof want - 1);
    memset(e, '#', sizeof e);
    assert_int_equal(wn_resp_compose_unsupported(e, sizeof want - 2, wn_rcmd_lookup("multi", 5)),
                     WN_ETOOBIG);
    assert_int_equal(e[0], '#');
    assert_int_equal(wn_resp_compose_unsupported(e, sizeof e, wn_rcmd_lookup("get", 3)), WN_EINVAL);
    /* every refusal fits, is one line, and says why */
    for (uint16_t id = 0; id < wn_rcmd_count(); id++) {
        const wn_rcmd_t *c = wn_rcmd_by_id(id);
        if (c->cls != WN_RCMD_UNSUPPORTED)
            continue;
        n = wn_resp_compose_unsupported(e, sizeof e, c);
        assert_true(n > 30 && n <= WN_RESP_UNSUPPORTED_MAX);
        assert_null(memchr(e, '\n', (size_t)n - 1));
        assert_null(memchr(e, '\r', (size_t)n - 2));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_matches_redis),
        cmocka_unit_test(test_ids_and_order),
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_lookup_against_scan),
        cmocka_unit_test(test_classes),
        cmocka_unit_test(test_argc),
        cmocka_unit_test(test_key_range),
        cmocka_unit_test(test_unsupported_reply),
        cmocka_unit_test(test_reply_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
