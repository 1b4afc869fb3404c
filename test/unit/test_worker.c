/*
 * Unit tests for the worker core, on a real uv loop driven by the test
 * itself: clients are one end of a socketpair() handed to the worker, and
 * backends are non-blocking TCP listeners on 127.0.0.1 that the test serves
 * between loop turns. Each test ends with the worker stopped and its loop
 * closed cleanly (wn_worker_join returns uv_loop_close's result), so a
 * leaked handle or a buffer still referenced fails it. The memcached unit
 * is the protocol; no real memcached is needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "walnut/config.h"
#include "walnut/stats.h"
#include "walnut/worker.h"
#include "worker/core_types.h"
#include "worker/protocol.h"

/* ---- a scripted backend ---------------------------------------------------- */

#define FAKE_CONNS 8
#define FAKE_BUF (1 << 20)

typedef struct fake fake_t;
/* Called with the bytes a connection has received; returns how many it
 * consumed and may send replies on fd. */
typedef size_t (*fake_fn)(fake_t *f, int fd, const char *in, size_t n);

static const char *fake_log(fake_t *f);

struct fake {
    int lfd;
    uint16_t port;
    int conns[FAKE_CONNS];
    char *in[FAKE_CONNS];
    size_t inlen[FAKE_CONNS];
    fake_fn fn;
    char log[8192]; /* every byte received, for assertions */
    size_t loglen;
    int accepted;
    void *arg;
};

/* What the fake received, as a string; the log must not have filled up (a
 * longer one means the proxy sent more than any assertion allows). */
static const char *fake_log(fake_t *f)
{
    assert_true(f->loglen < sizeof(f->log));
    f->log[f->loglen] = '\0';
    return f->log;
}

static void fake_start(fake_t *f, fake_fn fn)
{
    memset(f, 0, sizeof(*f));
    f->fn = fn;
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(f->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&a, &len), 0);
    f->port = ntohs(a.sin_port);
    assert_int_equal(listen(f->lfd, 16), 0);
    for (int i = 0; i < FAKE_CONNS; i++)
        f->conns[i] = -1;
}

static void fake_stop(fake_t *f)
{
    for (int i = 0; i < FAKE_CONNS; i++) {
        if (f->conns[i] >= 0)
            close(f->conns[i]);
        free(f->in[i]);
    }
    close(f->lfd);
}

static void fake_close_conns(fake_t *f)
{
    for (int i = 0; i < FAKE_CONNS; i++) {
        if (f->conns[i] >= 0)
            close(f->conns[i]);
        f->conns[i] = -1;
        f->inlen[i] = 0;
    }
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (w <= 0)
            return;
        c += w;
        n -= (size_t)w;
    }
}

static void fake_step(fake_t *f)
{
    int fd = accept4(f->lfd, NULL, NULL, SOCK_NONBLOCK);
    if (fd >= 0) {
        for (int i = 0; i < FAKE_CONNS; i++) {
            if (f->conns[i] < 0) {
                f->conns[i] = fd;
                f->inlen[i] = 0;
                if (f->in[i] == NULL)
                    f->in[i] = malloc(FAKE_BUF);
                fd = -1;
                f->accepted++;
                break;
            }
        }
        if (fd >= 0)
            close(fd);
    }
    for (int i = 0; i < FAKE_CONNS; i++) {
        if (f->conns[i] < 0)
            continue;
        ssize_t r = recv(f->conns[i], f->in[i] + f->inlen[i], FAKE_BUF - f->inlen[i], 0);
        if (r == 0) {
            close(f->conns[i]);
            f->conns[i] = -1;
            continue;
        }
        if (r > 0) {
            size_t take = WN_MIN((size_t)r, sizeof(f->log) - f->loglen);
            memcpy(f->log + f->loglen, f->in[i] + f->inlen[i], take);
            f->loglen += take;
            f->inlen[i] += (size_t)r;
        }
        if (f->inlen[i] == 0)
            continue;
        /* Called while bytes wait, so a script may answer later. */
        size_t used = f->fn(f, f->conns[i], f->in[i], f->inlen[i]);
        memmove(f->in[i], f->in[i] + used, f->inlen[i] - used);
        f->inlen[i] -= used;
    }
}

/* A tiny memcached: "get k..." answers VALUE k 0 <len of k> with k as the
 * value (misses for keys starting with "miss"), storage commands STORED,
 * everything else a line per request. */
static size_t answer_line(fake_t *f, int fd, const char *line, size_t len);

static size_t mini_memcached(fake_t *f, int fd, const char *in, size_t n)
{
    size_t used = 0;
    for (;;) {
        const char *nl = memchr(in + used, '\n', n - used);
        if (nl == NULL)
            return used;
        size_t len = (size_t)(nl - (in + used)) + 1;
        size_t data = 0;
        unsigned bytes;
        char cmd[16];
        if (sscanf(in + used, "%15s %*s %*u %*d %u", cmd, &bytes) == 2 &&
            (strcmp(cmd, "set") == 0 || strcmp(cmd, "add") == 0))
            data = bytes + 2;
        if (n - used - len < data)
            return used;
        answer_line(f, fd, in + used, len);
        used += len + data;
    }
}

/* Values: the key itself, or 8,000 bytes for keys starting with "big". */
#define BIG_VALUE 8000

static size_t answer_line(fake_t *f, int fd, const char *line, size_t len)
{
    (void)f;
    size_t cap = len * 4 + BIG_VALUE * (len / 4 + 1) + 64;
    char *buf = malloc(cap);
    size_t o = 0;
    if (len > 4 && memcmp(line, "get ", 4) == 0) {
        size_t i = 4;
        while (i < len) {
            while (i < len && (line[i] == ' ' || line[i] == '\r' || line[i] == '\n'))
                i++;
            size_t s = i;
            while (i < len && line[i] != ' ' && line[i] != '\r' && line[i] != '\n')
                i++;
            if (i > s && !(i - s >= 4 && memcmp(line + s, "miss", 4) == 0)) {
                bool big = i - s >= 3 && memcmp(line + s, "big", 3) == 0;
                size_t vlen = big ? BIG_VALUE : i - s;
                o += (size_t)snprintf(buf + o, cap - o, "VALUE %.*s 0 %zu\r\n", (int)(i - s),
                                      line + s, vlen);
                if (big)
                    memset(buf + o, 'x', vlen);
                else
                    memcpy(buf + o, line + s, vlen);
                o += vlen;
                memcpy(buf + o, "\r\n", 2);
                o += 2;
            }
        }
        memcpy(buf + o, "END\r\n", 5);
        o += 5;
    } else if (len > 4 && (memcmp(line, "set ", 4) == 0 || memcmp(line, "add ", 4) == 0)) {
        o = (size_t)snprintf(buf, cap, "STORED\r\n");
    } else if (len > 7 && memcmp(line, "delete ", 7) == 0) {
        o = (size_t)snprintf(buf, cap, "DELETED\r\n");
    } else if (len >= 7 && memcmp(line, "version", 7) == 0) {
        o = (size_t)snprintf(buf, cap, "VERSION 1.6.18\r\n");
    } else {
        o = (size_t)snprintf(buf, cap, "ERROR\r\n");
    }
    send_all(fd, buf, o);
    free(buf);
    return len;
}

/* Never answers. */
static size_t silent(fake_t *f, int fd, const char *in, size_t n)
{
    (void)f, (void)fd, (void)in;
    return n;
}

/* Keeps what it gets, unanswered, until the test switches it. */
static size_t hold(fake_t *f, int fd, const char *in, size_t n)
{
    (void)f, (void)fd, (void)in, (void)n;
    return 0;
}

/* ---- the worker under test -------------------------------------------------- */

typedef struct fixture {
    wn_conf_t *conf;
    wn_stats_block_t *stats;
    wn_worker_t *w;
    char dir[64];
} fixture_t;

/* A control thread that never answers (as control once it has taken a
 * SIGTERM: it waits for the workers); NULL: none, as in most tests. */
static uv_async_t *mute_control;

static void worker_up(fixture_t *fx, const char *pool_yaml)
{
    memset(fx, 0, sizeof(*fx));
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/wn-test-worker-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    char text[4096];
    /* A unix listen address that this worker does not open (accept_unix
     * false): clients come from socketpairs instead. */
    snprintf(text, sizeof(text), "p:\n  listen: %s/sock\n%s", fx->dir, pool_yaml);
    char err[256];
    int rc = wn_conf_parse(text, strlen(text), "test.yml", &fx->conf, err, sizeof(err));
    if (rc != 0)
        fail_msg("config: %s", err);
    fx->stats = wn_stats_block_create(fx->conf);
    assert_non_null(fx->stats);
    wn_worker_options_t wo = {
        .id = 0,
        .nworkers = 1,
        .mbuf_size = 16384,
        .accept_unix = false,
        .stats = fx->stats,
        .control_wakeup = mute_control,
    };
    rc = wn_worker_create(fx->conf, &wo, &fx->w, err, sizeof(err));
    if (rc != 0)
        fail_msg("worker: %s", err);
}

/* Stop the worker, run its loop out, and check it closes clean. */
static void worker_down(fixture_t *fx)
{
    wn_worker_stop(fx->w);
    for (int i = 0; i < 2000 && uv_run(&fx->w->loop, UV_RUN_NOWAIT) != 0; i++)
        usleep(1000);
    assert_int_equal(wn_worker_join(fx->w), 0);
    wn_stats_block_destroy(fx->stats);
    wn_conf_unref(fx->conf);
    rmdir(fx->dir);
}

/* A client: our end of a socketpair whose other end the worker adopts. */
static int client_new(fixture_t *fx, int sndbuf)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    if (sndbuf > 0) {
        setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf));
    }
    assert_int_equal(wn_client_open(fx->w->pools[0], sv[1], true, NULL), 0);
    return sv[0];
}

/* Turn the loop and the fakes until `done(arg)` or the deadline (ms). */
typedef bool (*cond_fn)(void *arg);

static bool pump(fixture_t *fx, fake_t **fakes, int nfakes, cond_fn done, void *arg, int ms)
{
    for (int t = 0; t < ms; t++) {
        uv_run(&fx->w->loop, UV_RUN_NOWAIT);
        for (int i = 0; i < nfakes; i++)
            fake_step(fakes[i]);
        uv_run(&fx->w->loop, UV_RUN_NOWAIT);
        if (done != NULL && done(arg))
            return true;
        usleep(1000);
    }
    return done == NULL;
}

typedef struct reader {
    int fd;
    char buf[1 << 16];
    size_t len;
    bool eof;
    const char *want; /* done when buf holds this much */
} reader_t;

static void reader_fill(reader_t *r)
{
    while (r->len < sizeof(r->buf) - 1) {
        ssize_t n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - 1 - r->len, 0);
        if (n == 0) {
            r->eof = true;
            break;
        }
        if (n < 0)
            break;
        r->len += (size_t)n;
    }
    r->buf[r->len] = '\0';
}

static bool got_want(void *arg)
{
    reader_t *r = arg;
    reader_fill(r);
    return r->len >= strlen(r->want) || r->eof;
}

static bool got_eof(void *arg)
{
    reader_t *r = arg;
    reader_fill(r);
    return r->eof;
}

static void expect(fixture_t *fx, fake_t **fakes, int nfakes, int fd, const char *want)
{
    reader_t *r = calloc(1, sizeof(*r));
    r->fd = fd;
    r->want = want;
    pump(fx, fakes, nfakes, got_want, r, 5000);
    if (r->len != strlen(want) || memcmp(r->buf, want, r->len) != 0)
        fail_msg("client got '%s', want '%s'", r->buf, want);
    free(r);
}

static void expect_eof(fixture_t *fx, fake_t **fakes, int nfakes, int fd, const char *want)
{
    reader_t *r = calloc(1, sizeof(*r));
    r->fd = fd;
    pump(fx, fakes, nfakes, got_eof, r, 5000);
    assert_true(r->eof);
    if (want != NULL && strcmp(r->buf, want) != 0)
        fail_msg("client got '%s' before EOF, want '%s'", r->buf, want);
    free(r);
}

static const char *pool2(const fake_t *a, const fake_t *b, const char *extra)
{
    static char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "  timeout: 2000\n%s  servers:\n    - 127.0.0.1:%u:1 a\n    - 127.0.0.1:%u:1 b\n",
             extra, a->port, b->port);
    return yaml;
}

/* The usual setup: two scripted backends a and b, and a worker whose pool
 * (pool2, plus `extra` settings) has them as its servers; and its end. */
static void two_up(fixture_t *fx, fake_t *a, fake_fn fa, fake_t *b, fake_fn fb,
                   const char *extra)
{
    fake_start(a, fa);
    fake_start(b, fb);
    worker_up(fx, pool2(a, b, extra));
}

static void two_down(fixture_t *fx, fake_t *a, fake_t *b)
{
    worker_down(fx);
    fake_stop(a);
    fake_stop(b);
}

/* Two keys that land on different servers of pool2 (ketama over names a, b). */
static void split_keys(fixture_t *fx, const char **ka, const char **kb)
{
    static char keys[64][8];
    int ia = -1, ib = -1;
    for (int i = 0; i < 64 && (ia < 0 || ib < 0); i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        server_rt_t *s = wn_pool_route(fx->w->pools[0], keys[i], strlen(keys[i]));
        if (s->idx == 0 && ia < 0)
            ia = i;
        if (s->idx == 1 && ib < 0)
            ib = i;
    }
    assert_true(ia >= 0 && ib >= 0);
    *ka = keys[ia];
    *kb = keys[ib];
}

/* ---- tests ------------------------------------------------------------------ */

/* A request walnut could not complete is answered with twemproxy's text for
 * the cause: the system's strerror, capitalized ("Broken pipe"), never
 * libuv's lower-case text ("broken pipe", seen by an adversarial client whose
 * server closed while walnut still wrote to it). */
static void test_fail_text_is_the_systems(void **state)
{
    (void)state;
    assert_string_equal(wn_req_fail_text(UV_EPIPE), "Broken pipe");
    assert_string_equal(wn_req_fail_text(UV_ENETUNREACH), "Network is unreachable");
    assert_string_equal(wn_req_fail_text(UV_ECONNREFUSED), "Connection refused");
    assert_string_equal(wn_req_fail_text(UV_EOF), "Connection reset by peer");
    assert_string_equal(wn_req_fail_text(UV_ETIMEDOUT), "Connection timed out");
    assert_string_equal(wn_req_fail_text(WN_EPROTO), "Invalid argument");
    assert_string_equal(wn_req_fail_text(WN_ENOMEM), "Out of memory");
    assert_string_equal(wn_req_fail_text(WN_ETOOBIG), wn_strerror(WN_ETOOBIG));
    assert_string_equal(wn_req_fail_text(UV_EAI_NONAME), uv_strerror(UV_EAI_NONAME));
}

/* A split request's keys grouped by fragment, key order kept in each. */
static void test_split_group(void **state)
{
    (void)state;
    const uint32_t key_frag[] = {1, 0, 1, 2, 0, 1};
    uint32_t first[4], next[3], keys[6];
    wn_split_group(key_frag, 6, 3, first, next, keys);
    const uint32_t want_first[] = {0, 2, 5, 6};
    const uint32_t want_keys[] = {1, 4, 0, 2, 5, 3};
    assert_memory_equal(first, want_first, sizeof(want_first));
    assert_memory_equal(keys, want_keys, sizeof(want_keys));
    for (int f = 0; f < 3; f++) /* each fragment's cursor ran to its end */
        assert_int_equal(next[f], want_first[f + 1]);
    /* One fragment: the keys as they came. */
    const uint32_t one[] = {0, 0, 0};
    wn_split_group(one, 3, 1, first, next, keys);
    assert_int_equal(first[0], 0);
    assert_int_equal(first[1], 3);
    assert_int_equal(keys[0], 0);
    assert_int_equal(keys[2], 2);
}

/* Replies go back in request order even when the later server answers first. */
static void test_pipeline_order(void **state)
{
    (void)state;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, hold, &b, mini_memcached, "");
    const char *ka, *kb;
    split_keys(&fx, &ka, &kb);
    int c = client_new(&fx, 0);
    char req[128];
    snprintf(req, sizeof(req), "get %s\r\nget %s\r\n", ka, kb);
    send_all(c, req, strlen(req));
    fake_t *fakes[] = {&a, &b};
    pump(&fx, fakes, 2, NULL, NULL, 100); /* b has answered by now, a not */
    char early[64];
    assert_int_equal(recv(c, early, sizeof(early), 0), -1); /* nothing out of order */
    a.fn = mini_memcached;                                  /* a answers on its next step */
    char want[256];
    snprintf(want, sizeof(want), "VALUE %s 0 %zu\r\n%s\r\nEND\r\nVALUE %s 0 %zu\r\n%s\r\nEND\r\n",
             ka, strlen(ka), ka, kb, strlen(kb), kb);
    expect(&fx, fakes, 2, c, want);
    close(c);
    two_down(&fx, &a, &b);
}

/* Defect 5: a get line too long to hold whole is streamed in parts; a part
 * whose keys go to a suspect server waits (nothing is sent, nothing
 * answered) until the hold ends, then the line is answered whole. */
static void test_streamed_line_waits_for_a_hold(void **state)
{
    (void)state;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, mini_memcached, &b, mini_memcached, "");
    pool_rt_t *p = fx.w->pools[0];
    server_rt_t *sa = p->servers[0];
    sa->suspect_until_ms = uv_now(&fx.w->loop) + 60000; /* as a reported failure does */
    p->nsuspect++;
    /* 40 keys, 2,000 spaces after each: an 80 KB line, answered in 40 VALUEs */
    size_t cap = 40 * 2010 + 16, n = 0;
    char *line = malloc(cap);
    char want[4096];
    size_t wn = 0;
    n += (size_t)snprintf(line + n, cap - n, "get ");
    for (int i = 0; i < 40; i++) {
        char key[16];
        snprintf(key, sizeof(key), "s%08x", (unsigned)i * 2654435761u);
        n += (size_t)snprintf(line + n, cap - n, "%s", key);
        memset(line + n, ' ', 2000);
        n += 2000;
        wn += (size_t)snprintf(want + wn, sizeof(want) - wn, "VALUE %s 0 %zu\r\n%s\r\n", key,
                               strlen(key), key);
    }
    n += (size_t)snprintf(line + n, cap - n, "\r\n");
    snprintf(want + wn, sizeof(want) - wn, "END\r\n");
    int on_b = 0; /* the keys go to both servers */
    for (int i = 0; i < 40; i++) {
        char key[16];
        snprintf(key, sizeof(key), "s%08x", (unsigned)i * 2654435761u);
        on_b += wn_pool_route(p, key, strlen(key))->idx == 1;
    }
    assert_true(on_b > 0 && on_b < 40);
    int c = client_new(&fx, 0);
    send_all(c, line, n);
    fake_t *fakes[] = {&a, &b};
    pump(&fx, fakes, 2, NULL, NULL, 200);
    char early[64];
    assert_int_equal(recv(c, early, sizeof(early), 0), -1); /* held: nothing answered */
    assert_int_equal(a.loglen + b.loglen, 0);               /* nor sent */
    /* Control's verdict: healthy. The part goes, the line is answered. */
    wn_msg_t m = {.type = WN_MSG_HEALTHY, .pool = 0, .server = 0, .gen = fx.w->gen};
    assert_int_equal(wn_worker_post(fx.w, &m), 0);
    assert_int_equal(wn_worker_flush_outbox(fx.w), 0);
    expect(&fx, fakes, 2, c, want);
    if (a.loglen == 0 || b.loglen == 0)
        fail_msg("a got %zu bytes, b %zu", a.loglen, b.loglen);
    free(line);
    close(c);
    two_down(&fx, &a, &b);
}

/* Keys of pool2 on server `idx` that the fakes miss: n of them, 8 bytes
 * each ("miss%04d"). */
static char *misses_on(fixture_t *fx, uint32_t idx, int n, int from)
{
    char *keys = calloc((size_t)n, 16);
    int got = 0;
    for (int i = from; i < 10000 && got < n; i++) {
        char k[16];
        snprintf(k, sizeof(k), "miss%04d", i);
        if (wn_pool_route(fx->w->pools[0], k, 8)->idx == idx)
            memcpy(keys + 16 * got++, k, 9);
    }
    assert_int_equal(got, n);
    return keys;
}

static bool two_in_flight(void *arg)
{
    return ((client_t *)arg)->inflight <= 2;
}

/* What walnut holds for a streamed line counts against the client: its
 * parts' lines, split bookkeeping (28 bytes a key, more than a short key)
 * and request slots, from when each part is made until the line lets go of
 * it, after the part's reply is out if the line still waits for a later
 * part; then nothing is left counted. */
static void test_streamed_line_counts_what_it_holds(void **state)
{
    (void)state;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, mini_memcached, &b, hold, "");
    fake_t *fakes[] = {&a, &b};
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    client_t *cl;
    assert_int_equal(wn_client_open(fx.w->pools[0], sv[1], true, &cl), 0);
    int c = sv[0];
    /* 512 keys on a, 200 spaces after each (a 107 KB head, streamed) */
    enum { NA = 512 };
    char *ka = misses_on(&fx, 0, NA, 0), *kb = misses_on(&fx, 1, 1, 0);
    size_t cap = NA * 210 + 64, n = 0;
    char *head = malloc(cap);
    n += (size_t)snprintf(head, cap, "get ");
    for (int i = 0; i < NA; i++)
        n += (size_t)snprintf(head + n, cap - n, "%s%200s", ka + 16 * i, "");
    assert_true(n > 65536);
    send_all(c, head, n);
    pump(&fx, fakes, 2, NULL, NULL, 200);
    assert_true(a.loglen > 0); /* parts went out: at least 256 keys */
    /* Each key a part holds: its 8 bytes and a space in the part's line,
     * 28 of bookkeeping. */
    uint64_t floor = 256 * (9 + 28);
    if (cl->held < floor)
        fail_msg("line open: the client holds %llu bytes counted, at least %llu expected",
                 (unsigned long long)cl->held, (unsigned long long)floor);
    /* The line ends with a key on b, which does not answer: the parts of a's
     * keys are over and out of the client's queue (the last part and the
     * line's END are left); the line keeps them until the last part is in. */
    char end[32];
    int en = snprintf(end, sizeof(end), "%s\r\n", kb);
    send_all(c, end, (size_t)en);
    assert_true(pump(&fx, fakes, 2, two_in_flight, cl, 3000));
    pump(&fx, fakes, 2, NULL, NULL, 50);
    assert_true(b.loglen > 0);
    assert_int_equal(cl->inflight, 2);
    floor = NA * (9 + 28); /* every key of the line is still held */
    if (cl->held < floor)
        fail_msg("parts answered, line waiting: %llu bytes counted, at least %llu expected",
                 (unsigned long long)cl->held, (unsigned long long)floor);
    /* b answers: the line is over, one END out; nothing held. */
    b.fn = mini_memcached;
    expect(&fx, fakes, 2, c, "END\r\n");
    pump(&fx, fakes, 2, NULL, NULL, 20);
    assert_int_equal(fx.w->nclients, 1);
    assert_int_equal(cl->inflight, 0);
    assert_int_equal(cl->held, 0);
    free(head);
    free(ka);
    free(kb);
    close(c);
    two_down(&fx, &a, &b);
}

/* Keys of pool2 on server `idx` that the fakes answer: n of 6 bytes. */
static char *hits_on(fixture_t *fx, uint32_t idx, int n)
{
    char *keys = calloc((size_t)n, 8);
    int got = 0;
    for (int i = 0; i < 100000 && got < n; i++) {
        char k[8];
        snprintf(k, sizeof(k), "h%05d", i);
        if (wn_pool_route(fx->w->pools[0], k, 6)->idx == idx)
            memcpy(keys + 8 * got++, k, 7);
    }
    assert_int_equal(got, n);
    return keys;
}

/* The head of a streamed get line: 256 keys, 300 spaces after each (77 KB),
 * the i-th from ka (at 8 * i), or alternately from ka and kb when kb is not
 * NULL. Sent, and pumped so that its first part goes out. */
static void send_streamed_head(fixture_t *fx, fake_t **fakes, int c, const char *ka,
                               const char *kb)
{
    size_t cap = 256 * 310 + 64, n = 0;
    char *head = malloc(cap);
    n += (size_t)snprintf(head, cap, "get ");
    for (int i = 0; i < 256; i++) {
        const char *k = kb == NULL ? ka + 8 * i : (i % 2 ? kb : ka) + 8 * (i / 2);
        n += (size_t)snprintf(head + n, cap - n, "%s%300s", k, "");
    }
    assert_true(n > 65536);
    send_all(c, head, n);
    pump(fx, fakes, 2, NULL, NULL, 200);
    free(head);
}

/* The client's next request gets its own reply: key k's hit, from b. */
static void expect_next_reply_own(fixture_t *fx, fake_t **fakes, int c, const char *k)
{
    char get[32], want[64];
    snprintf(get, sizeof(get), "get %s\r\n", k);
    snprintf(want, sizeof(want), "VALUE %s 0 6\r\n%s\r\nEND\r\n", k, k);
    send_all(c, get, strlen(get));
    expect(fx, fakes, 2, c, want);
}

/* A streamed line's last part is over (its keys only on b, answered) while
 * an earlier part waits for a; then a fails. The line answers with a's
 * error line alone: the later part's hits, ready first, must not follow
 * it (the client would take them for its next request's reply). */
static void test_streamed_line_error_after_a_later_part(void **state)
{
    (void)state;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, hold, &b, mini_memcached, "");
    fake_t *fakes[] = {&a, &b};
    int c = client_new(&fx, 0);
    /* part 1: 256 keys on both servers */
    char *ka = hits_on(&fx, 0, 128), *kb = hits_on(&fx, 1, 138);
    send_streamed_head(&fx, fakes, c, ka, kb);
    assert_true(a.loglen > 0 && b.loglen > 0); /* part 1 went out */
    /* part 2: ten keys on b; the line ends, b answers it */
    char tail[128];
    size_t tn = 0;
    for (int i = 128; i < 138; i++)
        tn += (size_t)snprintf(tail + tn, sizeof(tail) - tn, "%s ", kb + 8 * i);
    tn += (size_t)snprintf(tail + tn, sizeof(tail) - tn, "\r\n");
    send_all(c, tail, tn);
    pump(&fx, fakes, 2, NULL, NULL, 200);
    char early[64];
    assert_int_equal(recv(c, early, sizeof(early), 0), -1); /* part 1 first */
    fake_close_conns(&a); /* part 1's keys on a fail */
    expect(&fx, fakes, 2, c, "SERVER_ERROR Connection reset by peer\r\n");
    expect_next_reply_own(&fx, fakes, c, kb);
    free(ka);
    free(kb);
    close(c);
    two_down(&fx, &a, &b);
}

/* Answers the first request line it holds with a server error, then holds
 * the rest. */
static size_t error_once(fake_t *f, int fd, const char *in, size_t n)
{
    const char *nl = memchr(in, '\n', n);
    if (f->arg != NULL || nl == NULL)
        return 0;
    f->arg = f;
    send_all(fd, "SERVER_ERROR out of memory\r\n", 28);
    return (size_t)(nl - in) + 1;
}

/* A later part still merging when an earlier one fails: its keys on b are
 * in (hits ready, the part not done), its key on a is not. a answers the
 * earlier part with an error line: the line ends with that line, and the
 * later part's hits must not follow it, now or when its last key comes. */
static void test_streamed_line_error_before_a_merging_part(void **state)
{
    (void)state;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, hold, &b, mini_memcached, "");
    fake_t *fakes[] = {&a, &b};
    int c = client_new(&fx, 0);
    /* part 1: 256 keys on a */
    char *ka = hits_on(&fx, 0, 258), *kb = hits_on(&fx, 1, 3);
    send_streamed_head(&fx, fakes, c, ka, NULL);
    assert_true(a.loglen > 0); /* part 1 went out */
    /* part 2: two keys on b (its first), two on a, one on b; the line ends
     * and b answers: the first two hits are ready, in order */
    char tail[128];
    int tn = snprintf(tail, sizeof(tail), "%s %s %s %s %s\r\n", kb, kb + 8, ka + 8 * 256,
                      ka + 8 * 257, kb + 16);
    send_all(c, tail, (size_t)tn);
    pump(&fx, fakes, 2, NULL, NULL, 200);
    assert_non_null(strstr(fake_log(&b), kb + 16)); /* part 2 reached b */
    char early[64];
    assert_int_equal(recv(c, early, sizeof(early), 0), -1); /* part 1 first */
    a.fn = error_once; /* part 1 fails with a's error; part 2 still waits for a */
    expect(&fx, fakes, 2, c, "SERVER_ERROR out of memory\r\n");
    a.fn = mini_memcached; /* now part 2's keys on a come in */
    pump(&fx, fakes, 2, NULL, NULL, 200);
    assert_int_equal(recv(c, early, sizeof(early), 0), -1);
    expect_next_reply_own(&fx, fakes, c, kb);
    free(ka);
    free(kb);
    close(c);
    two_down(&fx, &a, &b);
}

/* Defect 1: nothing after quit is run. */
static void test_bytes_after_quit(void **state)
{
    (void)state;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, mini_memcached, &b, mini_memcached, "");
    int c = client_new(&fx, 0);
    send_all(c, "quit\r\ndelete victim\r\nget x y z\r\n", 32);
    fake_t *fakes[] = {&a, &b};
    expect_eof(&fx, fakes, 2, c, "");
    pump(&fx, fakes, 2, NULL, NULL, 50);
    assert_int_equal(a.loglen + b.loglen, 0);
    close(c);
    two_down(&fx, &a, &b);
}

/* Defect 3: a client that closes in the middle of a value is closed, and its
 * half request is never forwarded. */
static void test_eof_mid_value(void **state)
{
    (void)state;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, mini_memcached, &b, mini_memcached, "");
    fake_t *fakes[] = {&a, &b};
    int c = client_new(&fx, 0);
    char req[256];
    int n = snprintf(req, sizeof(req), "set y 0 0 1000\r\n");
    memset(req + n, 'v', 100);
    send_all(c, req, (size_t)n + 100);
    pump(&fx, fakes, 2, NULL, NULL, 20);
    assert_int_equal(fx.w->nclients, 1);
    shutdown(c, SHUT_WR);
    expect_eof(&fx, fakes, 2, c, "");
    pump(&fx, fakes, 2, NULL, NULL, 20);
    assert_int_equal(fx.w->nclients, 0);
    assert_int_equal(a.loglen + b.loglen, 0);
    assert_int_equal(wn_stat_get(&fx.stats->global[WN_G_curr_connections]), 0);
    close(c);
    two_down(&fx, &a, &b);
}

/* Defect 2: a data block walnut rejects is swallowed, never run. */
static void test_rejected_block_swallowed(void **state)
{
    (void)state;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, mini_memcached, &b, mini_memcached, "");
    fake_t *fakes[] = {&a, &b};
    int c = client_new(&fx, 0);
    const char *req = "ms foo 16 !\r\ndelete important\r\nset k abc 0 16\r\ndelete important\r\n"
                      "mn\r\n";
    send_all(c, req, strlen(req));
    expect(&fx, fakes, 2, c,
           "CLIENT_ERROR invalid flag\r\nCLIENT_ERROR bad command line format\r\nMN\r\n");
    assert_int_equal(a.loglen + b.loglen, 0);
    close(c);
    two_down(&fx, &a, &b);
}

/* Defect 4: a client that does not read is disconnected past its limit, and
 * counted; the server connection goes on serving others. */
static void test_over_limit_disconnected(void **state)
{
    (void)state;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, mini_memcached, &b, mini_memcached, "  client_buffer_limit: 65536\n");
    fake_t *fakes[] = {&a, &b};
    int c = client_new(&fx, 4096);
    /* 64 gets of 8,000-byte values, never read: 512 KB against a 64 KiB limit. */
    char req[64 * 16];
    size_t o = 0;
    for (int i = 0; i < 64; i++)
        o += (size_t)snprintf(req + o, sizeof(req) - o, "get big%d\r\n", i);
    send_all(c, req, o);
    pump(&fx, fakes, 2, NULL, NULL, 300);
    assert_int_equal(fx.w->nclients, 0);
    assert_int_equal(wn_stat_get(&fx.stats->pools[0].v[WN_P_client_overlimit]), 1);
    /* Another client is served as usual. */
    int c2 = client_new(&fx, 0);
    send_all(c2, "get missing\r\n", 13);
    expect(&fx, fakes, 2, c2, "END\r\n");
    close(c);
    close(c2);
    two_down(&fx, &a, &b);
}

/* An unsolicited reply never reaches a client: the connection is closed. */
static size_t extra_value(fake_t *f, int fd, const char *in, size_t n)
{
    size_t used = mini_memcached(f, fd, in, n);
    if (used > 0)
        send_all(fd, "VALUE secret 0 6\r\nsecret\r\nEND\r\n", 31);
    return used;
}

static void test_unsolicited_reply(void **state)
{
    (void)state;
    fake_t a;
    fake_start(&a, extra_value);
    fixture_t fx;
    char yaml[256];
    snprintf(yaml, sizeof(yaml), "  timeout: 2000\n  servers:\n    - 127.0.0.1:%u:1\n", a.port);
    worker_up(&fx, yaml);
    fake_t *fakes[] = {&a};
    int c = client_new(&fx, 0);
    send_all(c, "get k1\r\n", 8);
    expect(&fx, fakes, 1, c, "VALUE k1 0 2\r\nk1\r\nEND\r\n");
    /* The extra VALUE arrived with nothing asked: the connection was closed;
     * the next get goes on a new one and gets its own answer. */
    pump(&fx, fakes, 1, NULL, NULL, 50);
    send_all(c, "get k2\r\n", 8);
    reader_t *r = calloc(1, sizeof(*r));
    r->fd = c;
    r->want = "VALUE k2 0 2\r\nk2\r\nEND\r\n";
    pump(&fx, fakes, 1, got_want, r, 3000);
    assert_null(strstr(r->buf, "secret"));
    assert_true(a.accepted >= 2);
    free(r);
    close(c);
    worker_down(&fx);
    fake_stop(&a);
}

/* Defect 12: progress resets the timeout; silence past it fails. */
typedef struct dribble {
    int fd;
    int sent;
    uint64_t next_ms;
} dribble_t;

static size_t dribble_start(fake_t *f, int fd, const char *in, size_t n)
{
    dribble_t *d = f->arg;
    if (memchr(in, '\n', n) == NULL)
        return 0;
    d->fd = fd;
    send_all(fd, "VALUE big 0 1000\r\n", 18);
    d->sent = 0;
    d->next_ms = wn_time_ms() + 60;
    return n;
}

static void dribble_step(dribble_t *d)
{
    if (d->fd <= 0 || d->sent >= 10 || wn_time_ms() < d->next_ms)
        return;
    char chunk[100];
    memset(chunk, 'x', sizeof(chunk));
    send_all(d->fd, chunk, sizeof(chunk));
    if (++d->sent == 10)
        send_all(d->fd, "\r\nEND\r\n", 7);
    d->next_ms = wn_time_ms() + 60;
}

static void test_timeout_is_per_progress(void **state)
{
    (void)state;
    fake_t a;
    fake_start(&a, dribble_start);
    dribble_t d = {0};
    a.arg = &d;
    fixture_t fx;
    char yaml[256];
    snprintf(yaml, sizeof(yaml), "  timeout: 150\n  servers:\n    - 127.0.0.1:%u:1\n", a.port);
    worker_up(&fx, yaml);
    fake_t *fakes[] = {&a};
    int c = client_new(&fx, 0);
    send_all(c, "get big\r\n", 9);
    reader_t *r = calloc(1, sizeof(*r));
    r->fd = c;
    r->want = "VALUE big 0 1000\r\n";
    size_t want_len = 18 + 1000 + 2 + 5;
    for (int t = 0; t < 3000 && r->len < want_len; t++) {
        pump(&fx, fakes, 1, NULL, NULL, 1);
        dribble_step(&d);
        reader_fill(r);
    }
    /* 600 ms of reply under a 150 ms timeout: whole, because it progressed. */
    assert_int_equal(r->len, want_len);
    assert_memory_equal(r->buf + r->len - 7, "\r\nEND\r\n", 7);
    /* Now silence: the next request times out. */
    a.fn = silent;
    r->len = 0;
    send_all(c, "get big\r\n", 9);
    r->want = "SERVER_ERROR Connection timed out\r\n";
    pump(&fx, fakes, 1, got_want, r, 3000);
    assert_string_equal(r->buf, "SERVER_ERROR Connection timed out\r\n");
    free(r);
    close(c);
    worker_down(&fx);
    fake_stop(&a);
}

/* A connect that fails at once, under a split get: the failing fragment
 * settles the request with an error; nothing is freed under the dispatcher. */
static void test_connect_fails_at_once(void **state)
{
    (void)state;
    fake_t b;
    fake_start(&b, mini_memcached);
    fixture_t fx;
    char yaml[512];
    snprintf(yaml, sizeof(yaml),
             "  servers:\n    - 255.255.255.255:11211:1 a\n    - 127.0.0.1:%u:1 b\n", b.port);
    worker_up(&fx, yaml);
    const char *ka, *kb;
    split_keys(&fx, &ka, &kb);
    fake_t *fakes[] = {&b};
    int c = client_new(&fx, 0);
    char req[128];
    snprintf(req, sizeof(req), "get %s %s\r\nstats detail on\r\n", ka, kb);
    send_all(c, req, strlen(req));
    reader_t *r = calloc(1, sizeof(*r));
    r->fd = c;
    r->want = "OK";
    pump(&fx, fakes, 1, got_want, r, 3000);
    pump(&fx, fakes, 1, NULL, NULL, 20);
    reader_fill(r);
    assert_true(strncmp(r->buf, "SERVER_ERROR ", 13) == 0);
    assert_non_null(strstr(r->buf, "\r\nOK\r\n"));
    /* exactly two lines */
    assert_ptr_equal(strstr(r->buf, "\r\n") + 2, strstr(r->buf, "OK\r\n"));
    free(r);
    close(c);
    worker_down(&fx);
    fake_stop(&b);
}

/* Defect 9: stopping closes idle clients at once (no grace wait). */
static void test_stop_closes_idle_clients(void **state)
{
    (void)state;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, mini_memcached, &b, mini_memcached, "");
    int c = client_new(&fx, 0);
    fake_t *fakes[] = {&a, &b};
    pump(&fx, fakes, 2, NULL, NULL, 10);
    uint64_t t0 = wn_time_ms();
    wn_worker_stop(fx.w);
    reader_t *r = calloc(1, sizeof(*r));
    r->fd = c;
    pump(&fx, fakes, 2, got_eof, r, 3000);
    assert_true(r->eof);
    assert_true(wn_time_ms() - t0 < 1000);
    free(r);
    close(c);
    two_down(&fx, &a, &b);
}

static bool got_end(void *arg)
{
    reader_t *r = arg;
    reader_fill(r);
    return r->eof || (r->len >= 5 && memcmp(r->buf + r->len - 5, "END\r\n", 5) == 0);
}

static void noop_async(uv_async_t *a)
{
    (void)a;
}

/* Control takes a SIGTERM before its workers hear of it, and then answers
 * nothing more: a `stats` waiting for it, and a client held for its verdict
 * on a suspect server, are settled by the stopping worker at once (they
 * used to wait out the 5 s grace and be closed unanswered). */
static void test_stop_settles_what_waits_for_control(void **state)
{
    (void)state;
    uv_loop_t control_loop;
    uv_async_t wakeup;
    assert_int_equal(uv_loop_init(&control_loop), 0);
    assert_int_equal(uv_async_init(&control_loop, &wakeup, noop_async), 0);
    mute_control = &wakeup;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, mini_memcached, &b, mini_memcached, "");
    mute_control = NULL;
    fake_t *fakes[] = {&a, &b};
    const char *ka, *kb;
    split_keys(&fx, &ka, &kb);
    server_rt_t *sa = fx.w->pools[0]->servers[0];
    sa->suspect_until_ms = uv_now(&fx.w->loop) + 60000; /* as a reported failure does */
    fx.w->pools[0]->nsuspect++;
    int st = client_new(&fx, 0), held = client_new(&fx, 0);
    send_all(st, "stats\r\n", 7);
    char get[32];
    snprintf(get, sizeof(get), "get %s\r\n", ka);
    send_all(held, get, strlen(get));
    pump(&fx, fakes, 2, NULL, NULL, 200);
    char early[64];
    assert_int_equal(recv(st, early, sizeof(early), 0), -1);   /* asked of control */
    assert_int_equal(recv(held, early, sizeof(early), 0), -1); /* held */
    assert_int_equal(a.loglen, 0);
    uint64_t t0 = wn_time_ms();
    wn_worker_stop(fx.w);
    reader_t *r = calloc(1, sizeof(*r));
    r->fd = st;
    pump(&fx, fakes, 2, got_end, r, 2000);
    if (strncmp(r->buf, "STAT pid ", 9) != 0 || !got_end(r) || r->eof)
        fail_msg("stats got '%.200s' (eof %d) after %llu ms", r->buf, r->eof,
                 (unsigned long long)(wn_time_ms() - t0));
    memset(r, 0, sizeof(*r));
    r->fd = held;
    pump(&fx, fakes, 2, got_end, r, 2000);
    char want[64];
    snprintf(want, sizeof(want), "VALUE %s 0 %zu\r\n%s\r\nEND\r\n", ka, strlen(ka), ka);
    if (strcmp(r->buf, want) != 0)
        fail_msg("held client got '%s' (eof %d), want '%s'", r->buf, r->eof, want);
    assert_true(wn_time_ms() - t0 < 2000);
    free(r);
    close(st);
    close(held);
    two_down(&fx, &a, &b);
    uv_close((uv_handle_t *)&wakeup, NULL);
    uv_run(&control_loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&control_loop), 0);
}

/* An idle connection holds no read buffer; a long noreply head goes out
 * without its noreply (defect 6); a 7,500-key get works (defect 5). */
static bool nothing_buffered(void *arg)
{
    fixture_t *fx = arg;
    return fx->w->clients != NULL && fx->w->clients->in.buf == NULL;
}

static void test_idle_buffer_noreply_and_long_get(void **state)
{
    (void)state;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, mini_memcached, &b, mini_memcached, "");
    fake_t *fakes[] = {&a, &b};
    int c = client_new(&fx, 0);
    char req[600];
    int n = snprintf(req, sizeof(req), "set%*sk 0 0 1 noreply\r\nx\r\nget k\r\n", 400, "");
    send_all(c, req, (size_t)n);
    expect(&fx, fakes, 2, c, "VALUE k 0 1\r\nk\r\nEND\r\n");
    assert_non_null(strstr(a.loglen ? a.log : b.log, "set k 0 0 1\r\nx\r\n"));
    assert_true(pump(&fx, fakes, 2, nothing_buffered, &fx, 1000));

    /* 7,500 keys, a line of 75 KB, over 64 KiB: split and merged
     * in key order, misses left out. */
    size_t cap = 7500 * 12 + 16, o = 0;
    char *big = malloc(cap);
    o += (size_t)snprintf(big + o, cap - o, "get");
    for (int i = 0; i < 7500; i++)
        o += (size_t)snprintf(big + o, cap - o, i % 3 ? " key%06d" : " miss%05d", i);
    o += (size_t)snprintf(big + o, cap - o, "\r\n");
    assert_true(o > 65536);
    send_all(c, big, o);
    /* 5,000 hits of 32 bytes ("VALUE key000001 0 9\r\nkey000001\r\n"), then END. */
    reader_t *r = calloc(1, sizeof(*r));
    r->fd = c;
    size_t total = 0, want = 5000 * 32 + 5;
    for (int t = 0; t < 10000 && total < want && !r->eof; t++) {
        pump(&fx, fakes, 2, NULL, NULL, 1);
        size_t before = r->len;
        reader_fill(r);
        total += r->len - before;
        if (r->len > sizeof(r->buf) / 2) { /* keep a window of the last bytes */
            memmove(r->buf, r->buf + r->len - 256, 256);
            r->len = 256;
            r->buf[r->len] = '\0';
        }
    }
    if (total != want)
        fail_msg("got %zu of %zu bytes, eof %d, tail %s", total, want, r->eof, r->buf);
    assert_non_null(strstr(r->buf, "VALUE key007499 0 9\r\nkey007499\r\nEND\r\n"));
    free(r);
    free(big);
    close(c);
    two_down(&fx, &a, &b);
}

/* A dead server fails its requests with twemproxy's text; the client's
 * connection stays usable. */
/* The reaper frees a removed server once wn_server_closed says so. A
 * connection marked by its close callback (requests came while it closed)
 * sits on the dirty list until the next flush, which the reaper's timer may
 * run before: freed then, the flush would walk freed memory. */
static void test_server_closed_waits_for_the_flush(void **state)
{
    (void)state;
    sconn_t *c = calloc(1, sizeof(*c));
    server_rt_t *s = calloc(1, sizeof(*s));
    assert_non_null(c);
    assert_non_null(s);
    s->nconns = 1;
    s->conns = &c;
    c->server = s;
    assert_true(wn_server_closed(s));
    c->dirty = true;
    assert_false(wn_server_closed(s));
    c->dirty = false;
    c->closes = 1;
    assert_false(wn_server_closed(s));
    free(s);
    free(c);
}

static void test_server_gone(void **state)
{
    (void)state;
    fake_t a;
    fake_start(&a, silent);
    fixture_t fx;
    char yaml[256];
    snprintf(yaml, sizeof(yaml), "  servers:\n    - 127.0.0.1:%u:1\n", a.port);
    worker_up(&fx, yaml);
    fake_t *fakes[] = {&a};
    int c = client_new(&fx, 0);
    send_all(c, "get a\r\n", 7);
    pump(&fx, fakes, 1, NULL, NULL, 30);
    fake_close_conns(&a);
    expect(&fx, fakes, 1, c, "SERVER_ERROR Connection reset by peer\r\n");
    a.fn = mini_memcached;
    send_all(c, "get b\r\n", 7);
    expect(&fx, fakes, 1, c, "VALUE b 0 1\r\nb\r\nEND\r\n");
    close(c);
    worker_down(&fx);
    fake_stop(&a);
}

/* ---- meta --------------------------------------------------------------------- */

/* A tiny meta memcached: mg answers EN for keys starting "miss", else VA 1
 * with the value "v" (HD without a v flag); ms reads its block, HD; md HD;
 * ma HD, or nothing with q (an item it found) and MN for mn; me ME. */
static size_t mini_meta(fake_t *f, int fd, const char *in, size_t n)
{
    (void)f;
    size_t used = 0;
    for (;;) {
        const char *nl = memchr(in + used, '\n', n - used);
        if (nl == NULL)
            return used;
        size_t len = (size_t)(nl - (in + used)) + 1;
        char line[4096];
        snprintf(line, sizeof(line), "%.*s", (int)len, in + used);
        char cmd[4] = "", key[256] = "";
        unsigned bytes = 0;
        sscanf(line, "%3s %255s %u", cmd, key, &bytes);
        size_t data = strcmp(cmd, "ms") == 0 ? bytes + 2 : 0;
        if (n - used - len < data)
            return used;
        const char *out = "ERROR\r\n";
        char me[300];
        if (strcmp(cmd, "mg") == 0)
            out = strncmp(key, "miss", 4) == 0 ? "EN\r\n"
                  : strstr(line, " v") != NULL ? "VA 1\r\nv\r\n"
                                              : "HD\r\n";
        else if (strcmp(cmd, "ms") == 0 || strcmp(cmd, "md") == 0)
            out = "HD\r\n";
        else if (strcmp(cmd, "ma") == 0)
            out = strstr(line, " q") != NULL ? "" : "HD\r\n";
        else if (strcmp(cmd, "mn") == 0)
            out = "MN\r\n";
        else if (strcmp(cmd, "me") == 0 && snprintf(me, sizeof me, "ME %s exp=-1\r\n", key) > 0)
            out = me; /* the key as sent (memcached 1.6.18 prints a b key decoded) */
        /* memcached echoes the O token after the code (and VA's length) */
        const char *o = strstr(line, " O");
        const char *sp = strchr(out, '\n');
        if (o != NULL && *out != '\0' && strncmp(out, "ME", 2) != 0 && strncmp(out, "MN", 2) != 0 &&
            strncmp(out, "ERROR", 5) != 0) {
            size_t olen = strcspn(o + 1, " \r\n") + 1;
            size_t head = (size_t)(sp - out) - 1; /* before "\r\n" */
            char echo[4200];
            int m =
                snprintf(echo, sizeof echo, "%.*s%.*s%s", (int)head, out, (int)olen, o, out + head);
            send_all(fd, echo, (size_t)m);
        } else {
            send_all(fd, out, strlen(out));
        }
        used += len + data;
    }
}

/* The fake that holds `key` (decoded when b64). */
static fake_t *owner(fixture_t *fx, fake_t *a, fake_t *b, const char *key)
{
    return wn_pool_route(fx->w->pools[0], key, strlen(key))->idx == 0 ? a : b;
}

static bool got_md(void *arg)
{
    fake_t *f = arg;
    return f->loglen >= 7;
}

/* What each server receives: q removed (ma with q and N keeps it, followed
 * by an mn), a base64 key routed by its decoded form, a long line rebuilt,
 * mn never forwarded, an ms over client_buffer_limit turned into an md. */
static void test_meta_server_bytes(void **state)
{
    (void)state;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, mini_meta, &b, mini_meta, "  client_buffer_limit: 65536\n");
    fake_t *fakes[] = {&a, &b};
    int c = client_new(&fx, 0);
    fake_t *k1 = owner(&fx, &a, &b, "k1");
    fake_t *other = k1 == &a ? &b : &a;
    /* azE= is base64 for k1 */
    const char *req = "mg k1 v q Oabc\r\nms k1 1 q T5\r\nx\r\nmd k1 q\r\nma k1 N0 q\r\nma k1 q\r\n"
                      "mg azE= b v q k\r\nme azE= b\r\nmn\r\n";
    send_all(c, req, strlen(req));
    expect(&fx, fakes, 2, c, "VA 1 Oabc\r\nv\r\nVA 1\r\nv\r\nME azE= exp=-1\r\nMN\r\n");
    /* each tagged with walnut's O (the client's taken out), but me */
    const char *want = "mg k1 v O1\r\nms k1 1 T5 O2\r\nx\r\nmd k1 O3\r\nma k1 N0 q O4\r\nmn\r\n"
                       "ma k1 O5\r\nmg azE= b v k O6\r\nme azE= b\r\n";
    assert_string_equal(fake_log(k1), want);
    assert_int_equal(other->loglen, 0);
    /* a line over 2 KiB: rebuilt from its tokens, numbers in decimal */
    k1->loglen = 0;
    char line[8192];
    int n = snprintf(line, sizeof(line), "mg k1%*s v T%0*d k q\r\nmn\r\n", 3000, "", 2000, 30);
    send_all(c, line, (size_t)n);
    expect(&fx, fakes, 2, c, "VA 1\r\nv\r\nMN\r\n");
    assert_string_equal(fake_log(k1), "mg k1 v T30 k O7\r\n");
    /* an ms the client may not hold: SERVER_ERROR, data swallowed, md sent */
    k1->loglen = 0;
    n = snprintf(line, sizeof(line), "ms k1 70000 q\r\n");
    send_all(c, line, (size_t)n);
    char *big = malloc(70002);
    memset(big, 'z', 70000);
    memcpy(big + 70000, "\r\n", 2);
    send_all(c, big, 70002);
    free(big);
    send_all(c, "mn\r\n", 4);
    expect(&fx, fakes, 2, c, "SERVER_ERROR object too large for cache\r\nMN\r\n");
    assert_true(pump(&fx, fakes, 2, got_md, k1, 2000));
    assert_string_equal(fake_log(k1), "md k1 O8\r\n");
    assert_int_equal(other->loglen, 0);
    close(c);
    two_down(&fx, &a, &b);
}

/* Quiet requests over two servers, one of them slow: the client sees what
 * memcached would have sent, in request order, MN after all of it. */
static void test_meta_quiet_order(void **state)
{
    (void)state;
    fake_t a, b;
    fixture_t fx;
    two_up(&fx, &a, hold, &b, mini_meta, "");
    fake_t *fakes[] = {&a, &b};
    const char *ka, *kb;
    split_keys(&fx, &ka, &kb);
    int c = client_new(&fx, 0);
    char req[512];
    snprintf(req, sizeof(req),
             "mg %s v q O1\r\nmg miss%s v q O2\r\nmg %s v q O3\r\nms %s 1 q\r\nx\r\n"
             "md %s q\r\nmn\r\nmg %s v\r\n",
             ka, kb, kb, kb, ka, kb);
    send_all(c, req, strlen(req));
    pump(&fx, fakes, 2, NULL, NULL, 100); /* b has answered everything, a nothing */
    char early[64];
    assert_int_equal(recv(c, early, sizeof(early), 0), -1);
    a.fn = mini_meta;
    /* hits of ka and kb with their O, b's miss and the HDs dropped */
    expect(&fx, fakes, 2, c, "VA 1 O1\r\nv\r\nVA 1 O3\r\nv\r\nMN\r\nVA 1\r\nv\r\n");
    close(c);
    two_down(&fx, &a, &b);
}

/* --batch-wait's sleep: the option's value for request-reply clients (one
 * request each), growing with the requests each waiting client has
 * unanswered to 1.7 times at 8 or more, to 5 times while the replies are
 * 1 KiB or longer. */
static void test_batch_wait_grows_with_pipelining(void **state)
{
    (void)state;
    const uint64_t us = 1000;
    assert_int_equal(wn_batch_wait_ns(100 * us, 0, 0, 0), 100 * us);    /* replies only */
    assert_int_equal(wn_batch_wait_ns(100 * us, 25, 25, 0), 100 * us);  /* pipeline 1 */
    assert_int_equal(wn_batch_wait_ns(100 * us, 40, 25, 0), 100 * us);  /* 1.6 each: 1 */
    assert_int_equal(wn_batch_wait_ns(100 * us, 50, 25, 0), 110 * us);  /* 2 each */
    assert_int_equal(wn_batch_wait_ns(100 * us, 200, 25, 0), 170 * us); /* 8 each */
    assert_int_equal(wn_batch_wait_ns(100 * us, 400, 25, 0), 170 * us); /* 16: no longer */
    assert_int_equal(wn_batch_wait_ns(100 * us, UINT64_MAX, 1, 0), 170 * us);
    /* Long replies: longer at any depth but 1, 5 times at 8 and 1 KiB. */
    assert_int_equal(wn_batch_wait_ns(100 * us, 25, 25, 1024), 100 * us);
    assert_int_equal(wn_batch_wait_ns(100 * us, 25, 25, UINT64_MAX), 100 * us);
    assert_int_equal(wn_batch_wait_ns(100 * us, 50, 25, 1024), 157142);
    assert_int_equal(wn_batch_wait_ns(100 * us, 200, 25, 512), 335 * us);
    assert_int_equal(wn_batch_wait_ns(100 * us, 200, 25, 1024), 500 * us);
    assert_int_equal(wn_batch_wait_ns(100 * us, 200, 25, 1u << 20), 500 * us);
    assert_int_equal(wn_batch_wait_ns(100 * us, UINT64_MAX, 1, UINT64_MAX), 500 * us);
    /* The option's limit, 1000 usec: 5 ms at most. */
    assert_int_equal(wn_batch_wait_ns(1000 * us, 1u << 20, 1, 0), 1700 * us);
    assert_int_equal(wn_batch_wait_ns(1000 * us, 1u << 20, 1, UINT64_MAX), 5000 * us);
    /* The replies' average: the first sample is it; an eighth a sample after;
     * each sample counted up to 1 KiB, so one huge reply among short ones
     * moves it an eighth of 1 KiB at most. */
    assert_int_equal(wn_batch_reply_avg(0, 0, 0), 0);
    assert_int_equal(wn_batch_reply_avg(0, 155 * 30, 30), 155);
    assert_int_equal(wn_batch_reply_avg(155, 0, 0), 155); /* no answer: kept */
    assert_int_equal(wn_batch_reply_avg(155, 155 * 30, 30), 155);
    assert_int_equal(wn_batch_reply_avg(0, 2000, 1), 1024);
    assert_int_equal(wn_batch_reply_avg(37, (4u << 20) + 15 * 37, 16), 37 + 124);
    assert_int_equal(wn_batch_reply_avg(1024, 5, 1), 1024 - 128);
    assert_int_equal(wn_batch_reply_avg(208, 215, 1), 209); /* towards it, to it */
    assert_int_equal(wn_batch_reply_avg(215, 208, 1), 214);
    /* after it, 222 usec (2.2 times), shorter each turn; uncapped, 500 (5
     * times) for 27 busy turns */
    uint64_t avg = wn_batch_reply_avg(37, (4u << 20) + 15 * 37, 16);
    assert_int_equal(wn_batch_wait_ns(100 * us, 200, 25, avg), 221884);
    /* The integration tests' warm-up: 30 SETs (5 bytes each), then 80
     * MGETs of 1,415 bytes reach the cap (it takes 41). */
    avg = wn_batch_reply_avg(0, 5 * 30, 30);
    for (int i = 0; i < 80; i++)
        avg = wn_batch_reply_avg(avg, 1415, 1);
    assert_int_equal(avg, 1024);
    for (uint64_t reply = 0; reply <= 2048; reply += 64) {
        uint64_t last = 0;
        for (uint64_t d = 1; d <= 20; d++) {
            uint64_t ns = wn_batch_wait_ns(100 * us, d * 10, 10, reply);
            assert_true(ns >= last);
            assert_true(ns >= wn_batch_wait_ns(100 * us, d * 10, 10, reply > 0 ? reply - 64 : 0));
            last = ns;
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fail_text_is_the_systems),
        cmocka_unit_test(test_batch_wait_grows_with_pipelining),
        cmocka_unit_test(test_split_group),
        cmocka_unit_test(test_pipeline_order),
        cmocka_unit_test(test_bytes_after_quit),
        cmocka_unit_test(test_eof_mid_value),
        cmocka_unit_test(test_rejected_block_swallowed),
        cmocka_unit_test(test_over_limit_disconnected),
        cmocka_unit_test(test_unsolicited_reply),
        cmocka_unit_test(test_timeout_is_per_progress),
        cmocka_unit_test(test_connect_fails_at_once),
        cmocka_unit_test(test_stop_closes_idle_clients),
        cmocka_unit_test(test_stop_settles_what_waits_for_control),
        cmocka_unit_test(test_idle_buffer_noreply_and_long_get),
        cmocka_unit_test(test_server_closed_waits_for_the_flush),
        cmocka_unit_test(test_server_gone),
        cmocka_unit_test(test_meta_server_bytes),
        cmocka_unit_test(test_meta_quiet_order),
        cmocka_unit_test(test_streamed_line_waits_for_a_hold),
        cmocka_unit_test(test_streamed_line_counts_what_it_holds),
        cmocka_unit_test(test_streamed_line_error_after_a_later_part),
        cmocka_unit_test(test_streamed_line_error_before_a_merging_part),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
