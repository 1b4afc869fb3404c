/*
 * core/time.c: the monotonic clock, the wall clock for timestamps, and
 * whether a socket is ready when a deadline passes. Any thread; no state.
 */
#include "walnut/core.h"

#include <poll.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t wn_time_ms(void)
{
    return now_ns() / 1000000u;
}

uint64_t wn_time_us(void)
{
    return now_ns() / 1000u;
}

uint64_t wn_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

bool wn_fd_ready(int fd, bool connecting)
{
    struct pollfd p = {.fd = fd, .events = connecting ? POLLOUT : POLLIN};
    return fd >= 0 && poll(&p, 1, 0) == 1;
}
