/*
 * control/mem.c: how much memory walnut may use, for the default of
 * --client-memory: the machine's memory, or less when walnut runs in a
 * cgroup with a memory limit (systemd's MemoryMax=, a container's limit).
 * Main or control thread, at start.
 */
#include "fds.h"

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

/* A cgroup v2 memory.max: its number, or 0 for "max" or none. */
static uint64_t cgroup_max(const char *dir)
{
    char path[4096 + 32];
    snprintf(path, sizeof(path), "%s/memory.max", dir);
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

uint64_t wn_mem_limit(const char *root)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/proc/meminfo", root);
    uint64_t limit = read_key(path, "MemTotal:", 1024);
    /* cgroup v2: "0::/system.slice/walnut.service"; each level may limit */
    snprintf(path, sizeof(path), "%s/proc/self/cgroup", root);
    FILE *f = fopen(path, "re");
    char line[2048];
    char *rel = NULL;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "0::", 3) == 0) {
            rel = line + 3;
            rel[strcspn(rel, "\n")] = '\0';
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    if (rel != NULL && rel[0] == '/') {
        char dir[4096];
        int n = snprintf(dir, sizeof(dir), "%s/sys/fs/cgroup%s", root, rel);
        while (n > 0 && (size_t)n < sizeof(dir)) {
            uint64_t max = cgroup_max(dir);
            if (max > 0 && (limit == 0 || max < limit))
                limit = max;
            char *slash = strrchr(dir, '/');
            if (slash == NULL || (size_t)(slash - dir) < strlen(root) + strlen("/sys/fs/cgroup"))
                break;
            *slash = '\0';
            n = (int)strlen(dir);
        }
    }
    return limit;
}
