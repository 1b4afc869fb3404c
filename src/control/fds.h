/*
 * control/fds.h: what the system lets walnut have. File descriptors: the
 * soft limit raised at start, and the clients' share of it (fds.c). Memory
 * and CPUs: how much walnut may use, for the defaults of --client-memory and
 * --workers (limits.c). Control thread (raise: main thread).
 */
#ifndef WALNUT_CONTROL_FDS_H
#define WALNUT_CONTROL_FDS_H

#include <stdbool.h>
#include <stdint.h>

#include "walnut/config.h"
#include "walnut/worker.h"

/* What walnut keeps for what it opens itself with `conf` and `nworkers`
 * workers (server connections, listeners, probes, the stats server, loops
 * and files): clients may use the rest of RLIMIT_NOFILE. */
uint64_t wn_fds_reserved(const wn_conf_t *conf, int nworkers);
/* The soft limit raised to the hard one: before any other thread starts. */
void wn_fds_raise(void);
/* The clients' limit in budget set from what the limit leaves beside
 * wn_fds_reserved (at start and at each reload), logged when it changes or
 * *said is false (then true). */
void wn_fds_budget(wn_client_budget_t *budget, bool *said, const wn_conf_t *conf, int nworkers);

/* The memory walnut may use, in bytes: the machine's (MemTotal, or the
 * kernel's sysinfo where /proc/meminfo is hidden), or less if
 * its cgroup or one above it has a lower limit (v2 memory.max, v1
 * memory.limit_in_bytes); 0 if unknown. `root` is "" (tests give a
 * directory standing for /). */
uint64_t wn_mem_limit(const char *root);
/* The CPUs walnut may use: `cpus` (those it may run on), or fewer if its
 * cgroup or one above it has a lower CPU quota (v2 cpu.max, v1
 * cpu.cfs_quota_us over cpu.cfs_period_us), rounded up; 0 if `cpus` is 0 and
 * there is no quota. `root` as for wn_mem_limit. */
uint32_t wn_cpu_limit(const char *root, uint32_t cpus);

#endif
