/*
 * core: the error space, logging and small helpers every module shares.
 * Callable from any thread. Nothing here knows about pools, workers or protocols.
 */
#ifndef WALNUT_CORE_H
#define WALNUT_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * One error space: 0 is success, negative values are errors. libuv's codes
 * (negated errno values, above -4096) pass through unchanged; walnut's own
 * codes live in a disjoint range starting at WN_ERR_BASE, generated from this
 * table, which also gives wn_strerror() its text.
 */
#define WN_ERRNO_MAP(XX)                                                                           \
    XX(EAGAIN, "more input needed")                                                                \
    XX(EPROTO, "protocol error")                                                                   \
    XX(ECONFIG, "invalid configuration")                                                           \
    XX(ETOOBIG, "value exceeds a limit")                                                           \
    XX(ENOSERVER, "no server available")                                                           \
    XX(ENOMEM, "out of memory")                                                                    \
    XX(EINVAL, "invalid argument")                                                                 \
    XX(EFULL, "queue is full")                                                                     \
    XX(EIO, "input/output error")                                                                  \
    XX(ESELECT, "the server refused SELECT of the pool's redis_db")                                \
    XX(ESRVFULL, "the server is at its connection limit")                                          \
    XX(ENOAUTH, "the server refused walnut's AUTH")

#define WN_ERR_BASE (-30000)

enum wn_errno {
    WN_ERR_FIRST_ = WN_ERR_BASE,
#define WN_ERR_DEFINE(code, text) WN_##code,
    WN_ERRNO_MAP(WN_ERR_DEFINE)
#undef WN_ERR_DEFINE
    WN_ERR_LAST_
};

/* Text for any error code: walnut's own, libuv's, or a negated errno. Never NULL. */
const char *wn_strerror(int err);
/* walnut itself ran out of something (descriptors, memory, socket
 * buffers): no fault of the peer it was talking to. */
bool wn_err_local(int err);

/* Test hooks: the process runs with WALNUT_TEST_HOOKS=1. */
bool wn_test_hooks(void);
/* A fault a test switches on and off: hooks are on and the environment
 * variable `var` names a file that exists. */
bool wn_test_fault(const char *var);
/* Name of a walnut error code ("WN_EPROTO"), or of a libuv one; never NULL. */
const char *wn_err_name(int err);

/*
 * Logging. Levels are twemproxy's (-v 0..11): a message is written when its
 * level is at or below the configured one. Each line carries the time, the
 * level, the thread's name (set by wn_log_set_thread) and the source place.
 * A line is written with one write(2), so threads never interleave mid-line.
 */
enum wn_log_level {
    WN_LOG_EMERG = 0,
    WN_LOG_ALERT = 1,
    WN_LOG_CRIT = 2,
    WN_LOG_ERR = 3,
    WN_LOG_WARN = 4,
    WN_LOG_NOTICE = 5, /* default */
    WN_LOG_INFO = 6,
    WN_LOG_DEBUG = 7,
    WN_LOG_VERB = 8,
    WN_LOG_VVERB = 9,
    WN_LOG_VVVERB = 10,
    WN_LOG_PVERB = 11,
};
#define WN_LOG_LEVEL_MAX WN_LOG_PVERB

/* Start logging at `level` to `path` (NULL or "" or "stderr": standard error).
 * Main thread, before other threads start. Returns 0 or a negative error. */
int wn_log_init(int level, const char *path);
/* Whether -o's value names a file: NULL, "" and "stderr" name standard error. */
bool wn_log_names_file(const char *path);
/* Reopen the log file (after rotation); any thread. */
int wn_log_reopen(void);
void wn_log_deinit(void);
void wn_log_set_level(int level);
int wn_log_get_level(void);
/* Name shown for the calling thread ("main", "control", "worker 3"). Copied. */
void wn_log_set_thread(const char *name);
/* One byte of a key or message as it is shown in a line: a tab, a line
 * break and any other control byte escaped (\t \n \r \xHH), the backslash
 * too (\\) when `backslash`; other bytes, UTF-8 included, as they are.
 * Writes 1 to 4 bytes to out; returns how many. */
size_t wn_escape_byte(unsigned char b, bool backslash, char out[4]);

void wn_log_write(int level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int wn_log_enabled(int level);

#define WN_LOG(level, ...)                                                                        \
    do {                                                                                          \
        if (wn_log_enabled(level))                                                                \
            wn_log_write((level), __FILE__, __LINE__, __VA_ARGS__);                              \
    } while (0)
#define wn_log_error(...) WN_LOG(WN_LOG_ERR, __VA_ARGS__)
#define wn_log_warn(...) WN_LOG(WN_LOG_WARN, __VA_ARGS__)
#define wn_log_notice(...) WN_LOG(WN_LOG_NOTICE, __VA_ARGS__)
#define wn_log_info(...) WN_LOG(WN_LOG_INFO, __VA_ARGS__)
#define wn_log_debug(...) WN_LOG(WN_LOG_DEBUG, __VA_ARGS__)
#define wn_log_verb(...) WN_LOG(WN_LOG_VERB, __VA_ARGS__)

/* A message said at most once per interval (a server failing every request,
 * a notify socket that is gone): the owner's, not shared between threads. */
typedef struct wn_log_limit {
    uint64_t at_ms;  /* when it was last said; 0: never */
    uint32_t unsaid; /* times left out since */
} wn_log_limit_t;
/* May it be said at now_ms? If so, *left_out is how many times it was not
 * since it last was, *since_ms how long ago that was (both 0 the first
 * time; since_ms may be NULL), and the interval starts again. */
bool wn_log_limit_pass(wn_log_limit_t *l, uint64_t now_ms, uint64_t interval_ms, uint32_t *left_out,
                       uint64_t *since_ms);

/* Monotonic clock in milliseconds / microseconds. */
uint64_t wn_time_ms(void);
uint64_t wn_time_us(void);
/* Wall-clock time in microseconds since the epoch (for timestamps people read). */
uint64_t wn_wall_us(void);
/* Has the socket fd something to read (or, with `connecting`, has its
 * connect completed or failed), asked without waiting? A deadline's timer
 * asks before blaming the peer: a loop turn runs its timers before it
 * polls, so after a turn or a pause longer than the deadline the answer may
 * be waiting unread. */
bool wn_fd_ready(int fd, bool connecting);

/*
 * Buffers: fixed-size chunks (the -m size) from a per-worker pool, refcounted
 * with plain ints. A buffer never crosses threads: the pool, every buffer it
 * hands out and every reference belong to one worker. Requests and responses
 * point into buffers by (buffer, offset, length) and hold a reference, so
 * values travel from one socket to another without being copied.
 */
typedef struct wn_bufpool wn_bufpool_t;

typedef struct wn_buf {
    struct wn_buf *next;  /* free list / owner's chain; owner's use */
    wn_bufpool_t *pool;   /* borrowed: the pool outlives its buffers */
    uint32_t refs;
    uint32_t cap;         /* bytes of data[] */
    uint32_t len;         /* bytes filled */
    char data[];
} wn_buf_t;

struct wn_bufpool {
    size_t chunk_size;    /* cap of pooled buffers */
    size_t max_free;      /* free buffers kept for reuse; the rest go back to malloc */
    size_t nfree;
    size_t nlive;         /* handed out and not yet returned */
    wn_buf_t *free;       /* owned */
    uint64_t bytes;       /* data bytes allocated now, in use or free */
    uint64_t freed;       /* data bytes given back to malloc, ever */
};

/* Keep at most max_free_bytes of free chunks (at least one chunk). */
void wn_bufpool_init(wn_bufpool_t *pool, size_t chunk_size, size_t max_free_bytes);
/* Frees the free list. Buffers still live are the caller's leak; returns their count. */
size_t wn_bufpool_deinit(wn_bufpool_t *pool);
/* A buffer with one reference and len 0 of at least `size` bytes (0: the
 * chunk size); larger-than-chunk buffers are malloc'd and never pooled.
 * NULL when memory is exhausted. */
wn_buf_t *wn_buf_get(wn_bufpool_t *pool, size_t size);
/* A buffer of exactly `size` bytes (at least 1), malloc'd (pooled when freed
 * only if `size` is the chunk size): for bytes held long in a buffer of their
 * own, where a chunk's unused room would be held with them. NULL when memory
 * is exhausted. */
wn_buf_t *wn_buf_get_exact(wn_bufpool_t *pool, size_t size);
void wn_buf_ref(wn_buf_t *buf);
/* Drop a reference; the last returns the buffer to its pool. NULL is fine. */
void wn_buf_unref(wn_buf_t *buf);

#define WN_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/* A function off the hot path (a rare case inside a loop that runs per
 * request): kept out of line, so it does not weigh on the loop's code. */
#define WN_COLD __attribute__((cold, noinline))
/* For a small helper on the per-request path that the compiler would not
 * inline by itself (two callers), where the call costs more than its body. */
#define WN_INLINE static inline __attribute__((always_inline))

#define WN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define WN_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
