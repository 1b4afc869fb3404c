/*
 * control/limits.c: what the host lets walnut use, for the defaults of
 * --client-memory and --workers: the machine's memory and CPUs, or less when
 * walnut runs in a cgroup with a limit (systemd's MemoryMax= and CPUQuota=, a
 * container's limits). Main or control thread, at start.
 */
#include "fds.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>

/* The first number on the line of `file` that starts with `key`, times
 * `unit`; 0 when there is none. */
static uint64_t read_key(const char *file, const char *key, uint64_t unit)
{
    FILE *f = fopen(file, "re");
    if (f == NULL)
        return 0;
    char line[256];
    uint64_t v = 0;
    size_t klen = strlen(key);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, key, klen) == 0) {
            v = strtoull(line + klen, NULL, 10) * unit;
            break;
        }
    }
    fclose(f);
    return v;
}

/* The first line of dir/file, or "" (no file, or nothing in it). */
static void read_line(const char *dir, const char *file, char *text, size_t size)
{
    char path[4096 + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    text[0] = '\0';
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return;
    if (fgets(text, (int)size, f) == NULL)
        text[0] = '\0';
    fclose(f);
}

/* A cgroup's memory limit (v2 memory.max, v1 memory.limit_in_bytes): its
 * number, or 0 for "max", none or no file. */
static uint64_t memory_limit(const char *dir, const char *file)
{
    char text[64];
    read_line(dir, file, text, sizeof(text));
    if (text[0] < '0' || text[0] > '9')
        return 0;
    /* v1 says "no limit" with a number near 2^63 (the page counter's top) */
    uint64_t v = strtoull(text, NULL, 10);
    return v < (UINT64_C(1) << 62) ? v : 0;
}

/* A cgroup's CPU quota in CPUs, rounded up: v2 cpu.max ("200000 100000",
 * or "max 100000"), v1 cpu.cfs_quota_us over cpu.cfs_period_us (-1: none);
 * 0 for none. */
static uint64_t cpu_limit(const char *dir, const char *file)
{
    char text[64];
    read_line(dir, file, text, sizeof(text));
    if (text[0] < '0' || text[0] > '9')
        return 0;
    char *end;
    uint64_t quota = strtoull(text, &end, 10), period = 0;
    if (strcmp(file, "cpu.max") == 0) {
        period = strtoull(end, NULL, 10);
    } else {
        read_line(dir, "cpu.cfs_period_us", text, sizeof(text));
        if (text[0] >= '0' && text[0] <= '9')
            period = strtoull(text, NULL, 10);
    }
    if (quota == 0 || period == 0)
        return 0;
    return quota / period + (quota % period != 0);
}

typedef uint64_t (*limit_fn)(const char *dir, const char *file);

/* The lowest limit over the cgroup `rel` under the hierarchy mounted at
 * `mount` and every cgroup above it, or `limit` if that is lower (0: none). */
static uint64_t cgroup_walk(const char *mount, const char *rel, const char *file, limit_fn get,
                            uint64_t limit)
{
    char dir[4096];
    int n = snprintf(dir, sizeof(dir), "%s%s", mount, rel);
    if (n < 0 || (size_t)n >= sizeof(dir))
        return limit;
    size_t top = strlen(mount);
    for (;;) {
        uint64_t max = get(dir, file);
        if (max > 0 && (limit == 0 || max < limit))
            limit = max;
        char *slash = strrchr(dir, '/');
        if (slash == NULL || (size_t)(slash - dir) < top)
            return limit;
        *slash = '\0';
    }
}

/* Does a cgroup v1 line's controller list ("4:memory:/x", "3:cpu,memory:/x")
 * name `controller`? */
static bool v1_has(const char *controllers, size_t len, const char *controller)
{
    size_t clen = strlen(controller);
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && controllers[j] != ',')
            j++;
        if (j - i == clen && memcmp(controllers + i, controller, clen) == 0)
            return true;
        i = j + 1;
    }
    return false;
}

/* A mountinfo path field with its octal escapes (a space is "\\040")
 * undone, into out; false if it does not fit. */
static bool unescape(const char *field, char *out, size_t size)
{
    size_t n = 0;
    for (const char *p = field; *p != '\0'; n++) {
        if (n + 1 >= size)
            return false;
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
            p[3] >= '0' && p[3] <= '7') {
            out[n] = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 4;
        } else {
            out[n] = *p++;
        }
    }
    out[n] = '\0';
    return true;
}

/* Where the hierarchy of `controller` (NULL: the v2 one) is mounted
 * (`mnt`) and which of its cgroups that mount shows (`mroot`: "/" unless a
 * container was given its own), from /proc/self/mountinfo:
 * "31 23 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,… - cgroup cgroup rw,cpu,cpuacct".
 * 1: found; 0: not mounted; -1: no mountinfo to read. */
static int find_mount(const char *root, const char *controller, char *mnt, char *mroot, size_t size)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/proc/self/mountinfo", root);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *field[5], *save = NULL, *t = strtok_r(line, " ", &save);
        int n = 0;
        for (; t != NULL && n < 5; t = strtok_r(NULL, " ", &save))
            field[n++] = t;
        /* optional fields ("shared:5"), then "-", the type, the source and
         * the superblock's options, which name a v1 hierarchy's controllers */
        while (t != NULL && strcmp(t, "-") != 0)
            t = strtok_r(NULL, " ", &save);
        char *type = t != NULL ? strtok_r(NULL, " ", &save) : NULL;
        char *source = type != NULL ? strtok_r(NULL, " ", &save) : NULL;
        char *opts = source != NULL ? strtok_r(NULL, " ", &save) : NULL;
        if (n < 5 || opts == NULL)
            continue;
        if (controller == NULL
                ? strcmp(type, "cgroup2") != 0
                : strcmp(type, "cgroup") != 0 || !v1_has(opts, strlen(opts), controller))
            continue;
        found = unescape(field[3], mroot, size) && unescape(field[4], mnt, size);
    }
    fclose(f);
    return found ? 1 : 0;
}

/* The lowest limit over the cgroup `rel` of the hierarchy of `controller`
 * (NULL: v2) and those above it, or `limit` if that is lower. It is read
 * where mountinfo says the hierarchy is mounted (nowhere if it is not);
 * without a mountinfo, at
 * /sys/fs/cgroup (v2) or /sys/fs/cgroup/<controller> (systemd's and
 * Docker's places). */
static uint64_t hierarchy_lowest(const char *root, const char *controller, const char *rel,
                                 const char *file, limit_fn get, uint64_t limit)
{
    char mnt[4096], mroot[4096], mount[4096 + 256];
    int mounted = find_mount(root, controller, mnt, mroot, sizeof(mnt));
    if (mounted == 0)
        return limit; /* (a v2 line in a v1-only system) */
    if (mounted > 0) {
        /* A mount of a cgroup below the top (a container's own, without a
         * cgroup namespace) holds what is below it: the path goes on from
         * there. A mount of a cgroup that is not walnut's nor above it
         * (another branch, or outside walnut's namespace) holds nothing of
         * walnut's: none of its limits apply. */
        size_t mlen = strlen(mroot);
        while (mlen > 0 && mroot[mlen - 1] == '/')
            mlen--;
        if (strncmp(rel, mroot, mlen) != 0 || (rel[mlen] != '/' && rel[mlen] != '\0'))
            return limit;
        rel += mlen;
        snprintf(mount, sizeof(mount), "%s%s", root, mnt);
    } else if (controller == NULL) {
        snprintf(mount, sizeof(mount), "%s/sys/fs/cgroup", root);
    } else {
        snprintf(mount, sizeof(mount), "%s/sys/fs/cgroup/%s", root, controller);
    }
    return cgroup_walk(mount, rel, file, get, limit);
}

/* `limit` lowered to the lowest limit of the cgroups walnut is in and those
 * above them: v2's `v2file`, or v1's `v1file` in the hierarchy of
 * `controller`. */
static uint64_t cgroups_lowest(const char *root, const char *controller, const char *v2file,
                               const char *v1file, limit_fn get, uint64_t limit)
{
    char path[4096];
    /* "0::/system.slice/walnut.service" (v2), "4:memory:/docker/…" (v1):
     * each level of the path may have a limit */
    snprintf(path, sizeof(path), "%s/proc/self/cgroup", root);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return limit;
    char line[4096];
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL || c2[1] != '/')
            continue;
        const char *rel = c2 + 1;
        if (strstr(rel, "/..") != NULL) /* outside our cgroup namespace: not ours to read */
            continue;
        if (c2 == c1 + 1 && strncmp(line, "0:", 2) == 0)
            limit = hierarchy_lowest(root, NULL, rel, v2file, get, limit);
        else if (v1_has(c1 + 1, (size_t)(c2 - c1 - 1), controller))
            limit = hierarchy_lowest(root, controller, rel, v1file, get, limit);
    }
    fclose(f);
    return limit;
}

uint64_t wn_mem_limit(const char *root)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/proc/meminfo", root);
    uint64_t limit = read_key(path, "MemTotal:", 1024);
    struct sysinfo si;
    if (limit == 0 && root[0] == '\0' && sysinfo(&si) == 0)
        limit = (uint64_t)si.totalram * si.mem_unit; /* /proc/meminfo hidden (ProcSubset=pid) */
    return cgroups_lowest(root, "memory", "memory.max", "memory.limit_in_bytes", memory_limit,
                          limit);
}

uint32_t wn_cpu_limit(const char *root, uint32_t cpus)
{
    uint64_t limit = cgroups_lowest(root, "cpu", "cpu.max", "cpu.cfs_quota_us", cpu_limit, cpus);
    return limit < UINT32_MAX ? (uint32_t)limit : UINT32_MAX;
}
