/*
 * Unit test of control's descriptor budget (control/fds.c): what walnut
 * keeps for its own descriptors, summed over pools, servers, connections
 * and workers, and the clients' limit the soft RLIMIT_NOFILE leaves beside
 * it, set again when the limit or the configuration changes.
 *
 * The budget tests lower this process's soft limit (never the hard one) and
 * put it back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "control/fds.h"
#include "control/http.h"
#include "walnut/config.h"

static wn_conf_t *parse(const char *text)
{
    char err[256];
    wn_conf_t *conf = NULL;
    if (wn_conf_parse(text, strlen(text), "test.yml", &conf, err, sizeof(err)) != 0)
        fail_msg("config: %s", err);
    return conf;
}

/* Two pools: 2 servers x 2 connections, and 3 servers x 1 (the default). */
static const char two_pools[] = "a:\n"
                                "  listen: 127.0.0.1:22121\n"
                                "  server_connections: 2\n"
                                "  servers:\n"
                                "    - 127.0.0.1:11211:1 a1\n"
                                "    - 127.0.0.1:11212:1 a2\n"
                                "b:\n"
                                "  listen: 127.0.0.1:22122\n"
                                "  servers:\n"
                                "    - 127.0.0.1:11213:1 b1\n"
                                "    - 127.0.0.1:11214:1 b2\n"
                                "    - 127.0.0.1:11215:1 b3\n";

static const char one_server[] = "a:\n"
                                 "  listen: 127.0.0.1:22121\n"
                                 "  servers:\n"
                                 "    - 127.0.0.1:11211:1 a1\n";

static void test_reserve_counts_every_worker_s_connections(void **state)
{
    (void)state;
    wn_conf_t *two = parse(two_pools), *one = parse(one_server);
    /* What a worker adds: its server connections (2x2 + 3x1) and a listener
     * per pool (2) beside its loop's own; probes once per server (5). */
    uint64_t w1 = wn_fds_reserved(two, 1), w2 = wn_fds_reserved(two, 2);
    uint64_t w4 = wn_fds_reserved(two, 4);
    assert_true(w2 - w1 >= 4 + 3 + 2);
    assert_int_equal(w4 - w2, 2 * (w2 - w1)); /* the same for every worker */
    /* No worker count is one worker. */
    assert_int_equal(wn_fds_reserved(two, 0), w1);
    /* One pool of one server: each worker keeps 1 server connection and 1
     * listener, 7 fewer than with two pools ... */
    uint64_t o1 = wn_fds_reserved(one, 1), o2 = wn_fds_reserved(one, 2);
    assert_true(o2 - o1 >= 1 + 1);
    assert_int_equal((w2 - w1) - (o2 - o1), (4 + 3 + 2) - (1 + 1));
    /* ... and its probes: 5 servers against 1. */
    assert_int_equal(w1 - o1, (w2 - w1) - (o2 - o1) + (5 - 1));
    /* The stats server's connections are kept too. */
    assert_true(o1 > WN_HTTP_MAX_CONNS);
    wn_conf_unref(two);
    wn_conf_unref(one);
}

static struct rlimit saved;

static int save_limit(void **state)
{
    (void)state;
    return getrlimit(RLIMIT_NOFILE, &saved);
}

static int restore_limit(void **state)
{
    (void)state;
    return setrlimit(RLIMIT_NOFILE, &saved);
}

static void set_soft(rlim_t soft)
{
    struct rlimit rl = saved;
    rl.rlim_cur = soft;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

static void test_clients_get_what_the_limit_leaves(void **state)
{
    (void)state;
    wn_conf_t *conf = parse(two_pools);
    uint64_t reserved = wn_fds_reserved(conf, 2);
    if (saved.rlim_max != RLIM_INFINITY && saved.rlim_max < reserved + 1000)
        skip(); /* a hard limit this low cannot show it */
    wn_client_budget_t budget = {0};
    atomic_init(&budget.open, 0);
    atomic_init(&budget.limit, 0);
    bool said = false;

    set_soft((rlim_t)(reserved + 1000));
    wn_fds_budget(&budget, &said, conf, 2);
    assert_true(said);
    assert_int_equal(atomic_load(&budget.limit), 1000);

    /* Set again: the limit moved (a reload in a process whose limit changed). */
    set_soft((rlim_t)(reserved + 10));
    wn_fds_budget(&budget, &said, conf, 2);
    assert_int_equal(atomic_load(&budget.limit), 10);

    /* More workers keep more: fewer for clients under the same limit. */
    set_soft((rlim_t)(reserved + 1000));
    wn_fds_budget(&budget, &said, conf, 4);
    assert_int_equal(atomic_load(&budget.limit), reserved + 1000 - wn_fds_reserved(conf, 4));

    /* Clients already open past a new limit stay open (none is closed). */
    atomic_store(&budget.open, 500);
    set_soft((rlim_t)(reserved + 100));
    wn_fds_budget(&budget, &said, conf, 2);
    assert_int_equal(atomic_load(&budget.limit), 100);
    assert_int_equal(atomic_load(&budget.open), 500);

    /* A limit that leaves nothing beside the reserve limits no client (0),
     * rather than refusing every one. */
    set_soft((rlim_t)reserved);
    wn_fds_budget(&budget, &said, conf, 2);
    assert_int_equal(atomic_load(&budget.limit), 0);
    set_soft((rlim_t)(reserved / 2));
    wn_fds_budget(&budget, &said, conf, 2);
    assert_int_equal(atomic_load(&budget.limit), 0);
    wn_conf_unref(conf);
}

/* ---- the memory and CPUs walnut may use (limits.c), on a tree for / ------ */

static void put(const char *root, const char *rel, const char *text)
{
    char path[1024], dir[1024];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    /* make the directories on the way (root too) */
    mkdir(root, 0700);
    for (char *p = strchr(path + strlen(root) + 1, '/'); p != NULL; p = strchr(p + 1, '/')) {
        snprintf(dir, sizeof(dir), "%.*s", (int)(p - path), path);
        mkdir(dir, 0700);
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A v1 CPU quota of quota/period µs in the cgroup dir under root. */
static void put_quota(const char *root, const char *dir, const char *quota, const char *period)
{
    char rel[512];
    snprintf(rel, sizeof(rel), "%s/cpu.cfs_quota_us", dir);
    put(root, rel, quota);
    snprintf(rel, sizeof(rel), "%s/cpu.cfs_period_us", dir);
    put(root, rel, period);
}

static void test_memory_limit(void **state)
{
    (void)state;
    char root[] = "/tmp/walnut-test-mem-XXXXXX";
    assert_non_null(mkdtemp(root));
    char empty[1100];
    snprintf(empty, sizeof(empty), "%s/none", root);
    assert_true(wn_mem_limit(empty) == 0); /* nothing to read: unknown */

    put(root, "proc/meminfo", "MemFree:         1000 kB\nMemTotal:       8000000 kB\n");
    assert_true(wn_mem_limit(root) == 8000000ull * 1024);
    /* cgroup v1 only, or the root cgroup: the machine's memory */
    put(root, "proc/self/cgroup", "12:memory:/foo\n");
    assert_true(wn_mem_limit(root) == 8000000ull * 1024);
    put(root, "proc/self/cgroup", "0::/\n");
    assert_true(wn_mem_limit(root) == 8000000ull * 1024);

    put(root, "proc/self/cgroup", "0::/system.slice/walnut.service\n");
    put(root, "sys/fs/cgroup/system.slice/walnut.service/memory.max", "max\n");
    assert_true(wn_mem_limit(root) == 8000000ull * 1024);
    /* systemd's MemoryMax= on the unit */
    put(root, "sys/fs/cgroup/system.slice/walnut.service/memory.max", "536870912\n");
    assert_true(wn_mem_limit(root) == 536870912ull);
    /* a lower limit on the slice above wins; a higher one does not */
    put(root, "sys/fs/cgroup/system.slice/memory.max", "268435456\n");
    assert_true(wn_mem_limit(root) == 268435456ull);
    put(root, "sys/fs/cgroup/system.slice/memory.max", "1073741824\n");
    assert_true(wn_mem_limit(root) == 536870912ull);
    /* a limit above the machine's memory: the machine's */
    put(root, "sys/fs/cgroup/system.slice/walnut.service/memory.max", "99999999999999\n");
    assert_true(wn_mem_limit(root) == 1073741824ull);

    /* cgroup v1's memory controller (alone or with others on its line);
     * "unlimited" there is a huge number, which the machine's memory caps */
    put(root, "proc/self/cgroup", "4:memory:/docker/abc\n0::/\n");
    put(root, "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n");
    assert_true(wn_mem_limit(root) == 8000000ull * 1024);
    put(root, "sys/fs/cgroup/memory/docker/memory.limit_in_bytes", "402653184\n");
    assert_true(wn_mem_limit(root) == 402653184ull);
    put(root, "proc/self/cgroup", "3:cpu,memory,pids:/docker/abc\n");
    assert_true(wn_mem_limit(root) == 402653184ull);
    /* a cgroup outside our namespace ("/../x"): nothing of it is read */
    put(root, "proc/self/cgroup", "0::/../escape\n");
    put(root, "sys/fs/escape/memory.max", "4096\n");
    assert_true(wn_mem_limit(root) == 8000000ull * 1024);
    /* not the memory controller: no limit of its */
    put(root, "proc/self/cgroup", "3:cpu,memoryx:/docker/abc\n");
    assert_true(wn_mem_limit(root) == 8000000ull * 1024);
    /* the memory hierarchy where mountinfo says it is mounted */
    put(root, "proc/self/mountinfo",
        "35 31 0:32 / /cg/mem rw,relatime - cgroup cgroup rw,memory\n"
        "36 31 0:33 / /cg/cpu rw,relatime - cgroup cgroup rw,cpu\n");
    put(root, "proc/self/cgroup", "4:memory:/svc\n1:cpu:/svc\n");
    put(root, "cg/mem/svc/memory.limit_in_bytes", "134217728\n");
    put(root, "cg/cpu/svc/memory.limit_in_bytes", "1000\n"); /* not the memory hierarchy */
    assert_true(wn_mem_limit(root) == 134217728ull);
    /* no MemTotal to read (systemd's ProcSubset=pid hides /proc/meminfo):
     * v1's "unlimited" is no limit, not 8 EiB */
    char meminfo[1100];
    snprintf(meminfo, sizeof(meminfo), "%s/proc/meminfo", root);
    assert_int_equal(unlink(meminfo), 0);
    put(root, "cg/mem/svc/memory.limit_in_bytes", "9223372036854771712\n");
    assert_true(wn_mem_limit(root) == 0);
    put(root, "cg/mem/svc/memory.limit_in_bytes", "134217728\n");
    assert_true(wn_mem_limit(root) == 134217728ull);

    char cmd[1100];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

static void test_cpu_limit(void **state)
{
    (void)state;
    char root[] = "/tmp/walnut-test-cpu-XXXXXX";
    assert_non_null(mkdtemp(root));
    char empty[1100];
    snprintf(empty, sizeof(empty), "%s/none", root);
    assert_int_equal(wn_cpu_limit(empty, 8), 8); /* nothing to read: what it may run on */
    assert_int_equal(wn_cpu_limit(empty, 0), 0);

    /* v2: "max" is no quota; a quota is rounded up; the lowest level wins */
    put(root, "proc/self/cgroup", "0::/system.slice/walnut.service\n");
    put(root, "sys/fs/cgroup/system.slice/walnut.service/cpu.max", "max 100000\n");
    assert_int_equal(wn_cpu_limit(root, 8), 8);
    put(root, "sys/fs/cgroup/system.slice/walnut.service/cpu.max", "150000 100000\n");
    assert_int_equal(wn_cpu_limit(root, 8), 2);
    put(root, "sys/fs/cgroup/system.slice/walnut.service/cpu.max", "20000 100000\n");
    assert_int_equal(wn_cpu_limit(root, 8), 1);
    put(root, "sys/fs/cgroup/system.slice/walnut.service/cpu.max", "300000 100000\n");
    assert_int_equal(wn_cpu_limit(root, 8), 3);
    put(root, "sys/fs/cgroup/system.slice/cpu.max", "200000 100000\n");
    assert_int_equal(wn_cpu_limit(root, 8), 2);
    /* a quota above what it may run on does not raise it */
    assert_int_equal(wn_cpu_limit(root, 1), 1);
    /* no period, or a zero one: no quota */
    put(root, "sys/fs/cgroup/system.slice/cpu.max", "200000\n");
    put(root, "sys/fs/cgroup/system.slice/walnut.service/cpu.max", "100000 0\n");
    assert_int_equal(wn_cpu_limit(root, 8), 8);

    /* v1: quota over period in the cpu hierarchy; -1 is none */
    put(root, "proc/self/cgroup", "3:cpu,cpuacct:/docker/abc\n0::/\n");
    put(root, "sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us", "-1\n");
    put(root, "sys/fs/cgroup/cpu/docker/abc/cpu.cfs_period_us", "100000\n");
    assert_int_equal(wn_cpu_limit(root, 8), 8);
    put(root, "sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us", "250000\n");
    assert_int_equal(wn_cpu_limit(root, 8), 3);
    put(root, "sys/fs/cgroup/cpu/docker/abc/cpu.cfs_period_us", "50000\n");
    assert_int_equal(wn_cpu_limit(root, 8), 5);
    /* a quota without its period file: none */
    put(root, "proc/self/cgroup", "3:cpu,cpuacct:/other\n");
    put(root, "sys/fs/cgroup/cpu/other/cpu.cfs_quota_us", "50000\n");
    assert_int_equal(wn_cpu_limit(root, 8), 8);
    /* the memory controller's line is not the cpu hierarchy */
    put(root, "proc/self/cgroup", "4:memory:/docker/abc\n");
    assert_int_equal(wn_cpu_limit(root, 8), 8);
    /* outside our cgroup namespace: not read */
    put(root, "proc/self/cgroup", "0::/../escape\n");
    put(root, "sys/fs/escape/cpu.max", "100000 100000\n");
    assert_int_equal(wn_cpu_limit(root, 8), 8);

    /* With a mountinfo, each hierarchy is read where it is mounted (before,
     * always at /sys/fs/cgroup[/<controller>]). A v1 cpu hierarchy mounted
     * elsewhere, its path with a space (escaped "\040"): */
    char sub[1200];
    snprintf(sub, sizeof(sub), "%s/m1", root);
    put(sub, "proc/self/mountinfo",
        "23 1 0:21 / /sys rw - sysfs sysfs rw\n"
        "32 23 0:29 / /cgroup/cpu\\040x rw,relatime shared:9 - cgroup cgroup rw,cpuacct,cpu\n");
    put(sub, "proc/self/cgroup", "3:cpu,cpuacct:/svc\n");
    put_quota(sub, "cgroup/cpu x/svc", "150000\n", "100000\n");
    assert_int_equal(wn_cpu_limit(sub, 8), 2);
    /* a container's own cgroup mounted as the hierarchy's top (no cgroup
     * namespace): its path goes on from the mount, not from the top */
    snprintf(sub, sizeof(sub), "%s/m2", root);
    put(sub, "proc/self/mountinfo",
        "32 23 0:29 /docker/abc /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu\n");
    put(sub, "proc/self/cgroup", "3:cpu:/docker/abc/inner\n");
    put_quota(sub, "sys/fs/cgroup/cpu/inner", "300000\n", "100000\n");
    put_quota(sub, "sys/fs/cgroup/cpu/docker/abc/inner", "100000\n", "100000\n"); /* not it */
    assert_int_equal(wn_cpu_limit(sub, 8), 3);
    put_quota(sub, "sys/fs/cgroup/cpu", "200000\n", "100000\n"); /* the container's own */
    assert_int_equal(wn_cpu_limit(sub, 8), 2);
    /* a mount of a cgroup walnut is neither in nor under: none of its limits */
    put(sub, "proc/self/cgroup", "3:cpu:/other/x\n");
    assert_int_equal(wn_cpu_limit(sub, 8), 8);
    put(sub, "proc/self/cgroup", "3:cpu:/docker/abcd\n"); /* a prefix of the name is not it */
    assert_int_equal(wn_cpu_limit(sub, 8), 8);
    /* hybrid: the v2 hierarchy at /sys/fs/cgroup/unified */
    snprintf(sub, sizeof(sub), "%s/m3", root);
    put(sub, "proc/self/mountinfo",
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n");
    put(sub, "proc/self/cgroup", "1:cpu:/\n0::/svc\n");
    put(sub, "sys/fs/cgroup/unified/svc/cpu.max", "100000 100000\n");
    put(sub, "sys/fs/cgroup/svc/cpu.max", "400000 100000\n"); /* not it */
    assert_int_equal(wn_cpu_limit(sub, 8), 1);
    /* a v2 line where no v2 hierarchy is mounted: nothing of it is read */
    put(sub, "proc/self/mountinfo", "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n");
    assert_int_equal(wn_cpu_limit(sub, 8), 8);
    /* a line cut short, or with no "-": passed over */
    put(sub, "proc/self/mountinfo",
        "41 31 0:38 / /sys/fs/cgroup/unified rw cgroup2 cgroup2 rw\n41 31\n\n");
    assert_int_equal(wn_cpu_limit(sub, 8), 8);

    char cmd[1100];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve_counts_every_worker_s_connections),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_cpu_limit),
        cmocka_unit_test_setup_teardown(test_clients_get_what_the_limit_leaves, save_limit,
                                        restore_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
