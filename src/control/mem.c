/*
 * control/mem.c: how much memory walnut may use, for the default of
 * --client-memory: the machine's memory, or less when walnut runs in a
 * cgroup with a memory limit (systemd's MemoryMax=, a container's limit).
 * Main or control thread, at start.
 */
#include "fds.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A cgroup's limit file (v2 memory.max, v1 memory.limit_in_bytes): its
 * number, or 0 for "max", none or no file. */
static uint64_t cgroup_limit(const char *dir, const char *file)
{
    char path[4096 + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    char text[64] = "";
    uint64_t v = 0;
    if (fgets(text, sizeof(text), f) != NULL && text[0] >= '0' && text[0] <= '9')
        v = strtoull(text, NULL, 10);
    fclose(f);
    return v;
}

/* The lowest limit over the cgroup `rel` under the hierarchy mounted at
 * `mount` and every cgroup above it, or `limit` if that is lower (0: none). */
static uint64_t cgroup_walk(const char *mount, const char *rel, const char *file, uint64_t limit)
{
    char dir[4096];
    int n = snprintf(dir, sizeof(dir), "%s%s", mount, rel);
    if (n < 0 || (size_t)n >= sizeof(dir))
        return limit;
    size_t top = strlen(mount);
    for (;;) {
        uint64_t max = cgroup_limit(dir, file);
        if (max > 0 && (limit == 0 || max < limit))
            limit = max;
        char *slash = strrchr(dir, '/');
        if (slash == NULL || (size_t)(slash - dir) < top)
            return limit;
        *slash = '\0';
    }
}

/* Does a cgroup v1 line's controller list ("4:memory:/x", "3:cpu,memory:/x")
 * name the memory controller? */
static bool v1_memory(const char *controllers, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && controllers[j] != ',')
            j++;
        if (j - i == 6 && memcmp(controllers + i, "memory", 6) == 0)
            return true;
        i = j + 1;
    }
    return false;
}

uint64_t wn_mem_limit(const char *root)
{
    char path[4096], mount[4096];
    snprintf(path, sizeof(path), "%s/proc/meminfo", root);
    uint64_t limit = read_key(path, "MemTotal:", 1024);
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
        if (c2 == c1 + 1 && strncmp(line, "0:", 2) == 0) {
            snprintf(mount, sizeof(mount), "%s/sys/fs/cgroup", root);
            limit = cgroup_walk(mount, rel, "memory.max", limit);
        } else if (v1_memory(c1 + 1, (size_t)(c2 - c1 - 1))) {
            snprintf(mount, sizeof(mount), "%s/sys/fs/cgroup/memory", root);
            limit = cgroup_walk(mount, rel, "memory.limit_in_bytes", limit);
        }
    }
    fclose(f);
    return limit;
}
