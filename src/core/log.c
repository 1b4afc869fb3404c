/*
 * core/log.c: leveled logging to stderr or a file, from any thread. When
 * stderr is the systemd journal, lines carry the syslog priority ("<3>")
 * instead of a timestamp, so `journalctl -p warning` works. Each line
 * is formatted into a stack buffer and written with one write(2) so lines from
 * different threads never interleave. A message is one line whatever it
 * carries: control bytes in it (a pool or server name from the YAML, a
 * server's error text, a client's command name) are written escaped, so
 * nothing logged can forge a line or a journal priority, or move a
 * terminal's cursor. The level is an atomic; the file
 * descriptor number never changes after start-up: reopen dup2()s the new file
 * onto it, so a thread in the middle of a write never sees it closed.
 */
#include "walnut/core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048
#define LOG_PATH_MAX 4096

static atomic_int log_level = WN_LOG_NOTICE;
/* stderr is the systemd journal: lines carry "<priority>" and no time (the
 * journal stamps them). Decided at init, before other threads start. */
static bool to_journal;
static atomic_int log_fd = STDERR_FILENO;
static char log_path[LOG_PATH_MAX]; /* written only by wn_log_init, before threads start */
static _Thread_local char thread_name[24] = "main";

static const char *const level_names[] = {
    "EMERG", "ALERT", "CRIT", "ERROR", "WARN", "NOTICE",
    "INFO",  "DEBUG", "VERB", "VVERB", "VVVERB", "PVERB",
};

/*
 * Never waits: a FIFO no process reads (a log shipper that died) fails to
 * open (ENXIO) instead of holding the thread in open() until a reader
 * comes, and one whose reader stops draining it drops the lines it cannot
 * take (each line is one write of at most LOG_LINE_MAX < PIPE_BUF bytes:
 * whole or not at all) instead of stopping every thread that logs.
 */
static int open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
    return fd < 0 ? -errno : fd;
}

/* systemd sets JOURNAL_STREAM=<device>:<inode> of the stream it gave us;
 * stderr is the journal when it is still that stream. */
static bool stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev, ino;
    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

bool wn_log_names_file(const char *path)
{
    return path != NULL && path[0] != '\0' && strcmp(path, "stderr") != 0;
}

int wn_log_init(int level, const char *path)
{
    wn_log_set_level(level);
    if (!wn_log_names_file(path)) {
        log_path[0] = '\0';
        atomic_store(&log_fd, STDERR_FILENO);
        to_journal = stderr_is_journal();
        return 0;
    }
    if (strlen(path) >= sizeof(log_path))
        return WN_EINVAL;
    int fd = open_log(path);
    if (fd < 0)
        return fd;
    strcpy(log_path, path);
    int old = atomic_exchange(&log_fd, fd);
    if (old != STDERR_FILENO)
        close(old);
    return 0;
}

int wn_log_reopen(void)
{
    if (log_path[0] == '\0')
        return 0;
    int fd = open_log(log_path);
    if (fd < 0)
        return fd;
    /* Other threads may be writing through the current descriptor right now:
     * never close it under them. dup2 points the same number at the new file
     * in one step, so every write goes to the old file or the new one. */
    int cur = atomic_load(&log_fd);
    int rc = dup2(fd, cur) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

void wn_log_deinit(void)
{
    int old = atomic_exchange(&log_fd, STDERR_FILENO);
    if (old != STDERR_FILENO)
        close(old);
}

void wn_log_set_level(int level)
{
    if (level < WN_LOG_EMERG)
        level = WN_LOG_EMERG;
    if (level > WN_LOG_LEVEL_MAX)
        level = WN_LOG_LEVEL_MAX;
    atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

int wn_log_get_level(void)
{
    return atomic_load_explicit(&log_level, memory_order_relaxed);
}

int wn_log_enabled(int level)
{
    return level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

void wn_log_set_thread(const char *name)
{
    snprintf(thread_name, sizeof(thread_name), "%s", name);
}

size_t wn_escape_byte(unsigned char b, bool backslash, char out[4])
{
    static const char hex[] = "0123456789abcdef";
    if (b == '\t' || b == '\n' || b == '\r' || (b == '\\' && backslash)) {
        out[0] = '\\';
        out[1] = b == '\t' ? 't' : b == '\n' ? 'n' : b == '\r' ? 'r' : '\\';
        return 2;
    }
    if (b < 0x20 || b == 0x7f) {
        out[0] = '\\';
        out[1] = 'x';
        out[2] = hex[b >> 4];
        out[3] = hex[b & 15];
        return 4;
    }
    out[0] = (char)b;
    return 1;
}

/* Append msg to buf at n (of cap, one byte kept for the newline), its
 * control bytes escaped (wn_escape_byte; a backslash as it is); a byte
 * whose escape does not fit ends the line there. Returns the new n. */
static size_t append_escaped(char *buf, size_t n, size_t cap, const char *msg, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char esc[4];
        size_t k = wn_escape_byte((unsigned char)msg[i], false, esc);
        if (n + k > cap - 1)
            break;
        memcpy(buf + n, esc, k);
        n += k;
    }
    return n;
}

void wn_log_write(int level, const char *file, int line, const char *fmt, ...)
{
    char msg[LOG_LINE_MAX];
    char buf[LOG_LINE_MAX];
    struct timeval tv;
    struct tm tm;
    int saved_errno = errno;

    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    if (level < 0)
        level = 0;
    if (level > WN_LOG_LEVEL_MAX)
        level = WN_LOG_LEVEL_MAX;

    size_t n;
    int m;
    if (to_journal) {
        /* sd-daemon's "<N>" prefix: syslog priorities are 0..7 */
        m = snprintf(buf, sizeof(buf), "<%d>%-6s %s %s:%d ", level < 7 ? level : 7,
                     level_names[level], thread_name, base, line);
        n = 0;
    } else {
        n = strftime(buf, sizeof(buf), "[%Y-%m-%d %H:%M:%S", &tm);
        m = snprintf(buf + n, sizeof(buf) - n, ".%03d] %-6s %s %s:%d ",
                     (int)(tv.tv_usec / 1000), level_names[level], thread_name, base, line);
    }
    if (m > 0)
        n += (size_t)m < sizeof(buf) - n ? (size_t)m : sizeof(buf) - n - 1;

    if (n >= sizeof(buf) - 1)
        n = sizeof(buf) - 2; /* truncated: keep room for the newline */
    va_list ap;
    va_start(ap, fmt);
    m = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (m > 0)
        n = append_escaped(buf, n, sizeof(buf), msg,
                           (size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1);
    buf[n++] = '\n';

    int fd = atomic_load(&log_fd);
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* nowhere to report a failing log; drop the line */
        p += w;
        n -= (size_t)w;
    }
    errno = saved_errno;
}

bool wn_log_limit_pass(wn_log_limit_t *l, uint64_t now_ms, uint64_t interval_ms, uint32_t *left_out,
                       uint64_t *since_ms)
{
    if (l->at_ms != 0 && now_ms - l->at_ms < interval_ms) {
        l->unsaid++;
        return false;
    }
    *left_out = l->unsaid;
    if (since_ms != NULL)
        *since_ms = l->at_ms != 0 ? now_ms - l->at_ms : 0;
    l->at_ms = now_ms != 0 ? now_ms : 1;
    l->unsaid = 0;
    return true;
}
