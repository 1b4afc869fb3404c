/*
 * worker/stream.c: segment lists, write vectors and the read side of a
 * connection. A segment holds a buffer reference, so bytes read from one
 * socket are written to another without a copy. Worker thread only.
 */
#include "core_types.h"

#include <stdlib.h>
#include <string.h>

/* Below this much free space a buffer is not worth reading into. */
#define MIN_READ_SPACE 256

void wn_segv_init(segv_t *sv)
{
    sv->v = sv->inl;
    sv->n = 0;
    sv->cap = WN_ARRAY_SIZE(sv->inl);
}

static int segv_grow(segv_t *sv)
{
    uint32_t cap = sv->cap * 2;
    seg_t *v = malloc(sizeof(*v) * cap);
    if (v == NULL)
        return WN_ENOMEM;
    memcpy(v, sv->v, sizeof(*v) * sv->n);
    if (sv->v != sv->inl)
        free(sv->v);
    sv->v = v;
    sv->cap = cap;
    return 0;
}

static int push(segv_t *sv, wn_buf_t *buf, uint32_t off, uint32_t len, bool merge)
{
    if (len == 0)
        return 0;
    /* Adjacent bytes of the same buffer extend the last segment (a written
     * segment has no buffer any more, so it is never extended). */
    if (merge && sv->n > 0) {
        seg_t *last = &sv->v[sv->n - 1];
        if (last->buf == buf && last->off + last->len == off) {
            last->len += len;
            return 0;
        }
    }
    if (sv->n == sv->cap && segv_grow(sv) < 0)
        return WN_ENOMEM;
    wn_buf_ref(buf);
    sv->v[sv->n++] = (seg_t){.buf = buf, .off = off, .len = len};
    return 0;
}

int wn_segv_push(segv_t *sv, wn_buf_t *buf, uint32_t off, uint32_t len)
{
    return push(sv, buf, off, len, true);
}

int wn_segv_push_split(segv_t *sv, wn_buf_t *buf, uint32_t off, uint32_t len)
{
    return push(sv, buf, off, len, false);
}

void wn_segv_clear(segv_t *sv)
{
    for (uint32_t i = 0; i < sv->n; i++)
        wn_buf_unref(sv->v[i].buf);
    if (sv->v != sv->inl)
        free(sv->v);
    wn_segv_init(sv);
}

int wn_scratch_push(wn_worker_t *w, segv_t *sv, const char *data, size_t len)
{
    wn_buf_t *b = w->scratch;
    if (b == NULL || b->cap - b->len < len) {
        wn_buf_t *nb = wn_buf_get(&w->bufs, len);
        if (nb == NULL)
            return WN_ENOMEM;
        wn_buf_unref(b);
        w->scratch = b = nb;
    }
    uint32_t off = b->len;
    memcpy(b->data + off, data, len);
    b->len += (uint32_t)len;
    return wn_segv_push(sv, b, off, (uint32_t)len);
}

static uint32_t aligned_off(const wn_buf_t *b, uint32_t from)
{
    uintptr_t p = ((uintptr_t)(b->data + from) + 7u) & ~(uintptr_t)7u;
    return (uint32_t)(p - (uintptr_t)b->data);
}

void *wn_scratch_alloc(wn_worker_t *w, segv_t *keep, size_t size)
{
    if (size == 0)
        size = 1;
    wn_buf_t *b = w->scratch;
    uint32_t off = b != NULL ? aligned_off(b, b->len) : 0;
    if (b == NULL || off > b->cap || b->cap - off < size) {
        wn_buf_t *nb = wn_buf_get(&w->bufs, size + 8);
        if (nb == NULL)
            return NULL;
        wn_buf_unref(b);
        w->scratch = b = nb;
        off = aligned_off(b, 0);
    }
    if (wn_segv_push_split(keep, b, off, (uint32_t)size) < 0)
        return NULL;
    b->len = off + (uint32_t)size;
    return b->data + off;
}

void *wn_keep_alloc_own(wn_worker_t *w, segv_t *keep, size_t size)
{
    wn_buf_t *b = wn_buf_get_exact(&w->bufs, size + 8);
    if (b == NULL)
        return NULL;
    uint32_t off = aligned_off(b, 0);
    int rc = wn_segv_push_split(keep, b, off, (uint32_t)size);
    wn_buf_unref(b); /* `keep` holds it now, or nothing does */
    if (rc < 0)
        return NULL;
    b->len = off + (uint32_t)size;
    return b->data + off;
}

/* ---- reads ---------------------------------------------------------------- */

int wn_instream_alloc(wn_worker_t *w, instream_t *in, uint32_t keep, uint64_t ahead, uv_buf_t *out)
{
    wn_buf_t *b = in->buf;
    uint32_t room = b != NULL ? b->cap - b->len : 0;
    /* Keep filling the current buffer while it has room, unless a value is
     * coming that a buffer of its own would take in far fewer reads. */
    if (b != NULL && room >= WN_MIN(MIN_READ_SPACE, b->cap / 4 + 1) &&
        (ahead <= room || room >= WN_READ_AHEAD_MAX / 4)) {
        *out = uv_buf_init(b->data + b->len, room);
        return 0;
    }
    if (b != NULL && keep > b->len - in->pos)
        keep = b->len - in->pos;
    if (b == NULL)
        keep = 0;
    /* An incomplete line moves along so the parser sees it whole; everything
     * before it belongs to requests that hold their own references. */
    size_t want = w->bufs.chunk_size;
    if ((size_t)keep * 2 > want)
        want = (size_t)keep * 2;
    if (ahead > want)
        want = WN_MIN(ahead + keep, (uint64_t)WN_MAX(want, WN_READ_AHEAD_MAX));
    wn_buf_t *nb = wn_buf_get(&w->bufs, want);
    if (nb == NULL)
        return WN_ENOMEM;
    if (keep > 0)
        memcpy(nb->data, b->data + b->len - keep, keep);
    nb->len = keep;
    wn_buf_unref(b);
    in->buf = nb;
    in->pos = 0;
    *out = uv_buf_init(nb->data + nb->len, nb->cap - nb->len);
    return 0;
}

void wn_instream_plan(const instream_t *in, uint64_t data_left, uint32_t *keep, uint64_t *ahead)
{
    *keep = data_left == 0 && in->buf != NULL ? in->buf->len - in->pos : 0;
    *ahead = data_left;
}

void wn_instream_trim(instream_t *in)
{
    if (in->buf != NULL && in->pos == in->buf->len && in->buf->refs == 1) {
        wn_buf_unref(in->buf);
        in->buf = NULL;
        in->pos = 0;
    }
}

void wn_instream_deinit(instream_t *in)
{
    wn_buf_unref(in->buf);
    in->buf = NULL;
    in->pos = 0;
}

/* ---- writes --------------------------------------------------------------- */

typedef struct wctx {
    uv_write_t req;
    outv_done_cb cb;
    void *arg;
    uint64_t bytes;
    uint32_t n;
    wn_buf_t **bufs; /* references held until the write completes */
    uv_buf_t *iov;
} wctx_t;

void wn_outv_init(outv_t *o)
{
    o->n = 0;
    o->bytes = 0;
    o->cap = OUTV_INLINE;
    o->iov = o->iov_inl;
    o->bufs = o->bufs_inl;
}

static int outv_grow(outv_t *o)
{
    uint32_t cap = o->cap * 2;
    uv_buf_t *iov = malloc(cap * (sizeof(uv_buf_t) + sizeof(wn_buf_t *)));
    if (iov == NULL)
        return WN_ENOMEM;
    wn_buf_t **bufs = (wn_buf_t **)(iov + cap);
    memcpy(iov, o->iov, o->n * sizeof(*iov));
    memcpy(bufs, o->bufs, o->n * sizeof(*bufs));
    if (o->iov != o->iov_inl)
        free(o->iov);
    o->iov = iov;
    o->bufs = bufs;
    o->cap = cap;
    return 0;
}

int wn_outv_add(outv_t *o, wn_buf_t *buf, uint32_t off, uint32_t len)
{
    if (len == 0)
        return 0;
    if (o->n == o->cap && outv_grow(o) < 0)
        return WN_ENOMEM;
    o->bufs[o->n] = buf;
    o->iov[o->n++] = uv_buf_init(buf->data + off, len);
    o->bytes += len;
    return 0;
}

void wn_outv_deinit(outv_t *o)
{
    if (o->iov != o->iov_inl)
        free(o->iov);
    o->iov = NULL;
}

static void on_wctx_done(uv_write_t *req, int status)
{
    wctx_t *ctx = req->data;
    for (uint32_t i = 0; i < ctx->n; i++)
        wn_buf_unref(ctx->bufs[i]);
    outv_done_cb cb = ctx->cb;
    void *arg = ctx->arg;
    uint64_t bytes = ctx->bytes;
    free(ctx);
    if (cb != NULL)
        cb(arg, status, bytes);
}

int64_t wn_outv_try(outv_t *o, uv_stream_t *st)
{
    if (o->n == 0)
        return 0;
    /* Most writes fit the socket buffer: no request, no references, no poll
     * re-arm. UV_EAGAIN also means an earlier write is still queued. */
    int rc = uv_try_write(st, o->iov, o->n);
    if (rc < 0 && rc != UV_EAGAIN)
        return rc;
    return rc > 0 ? rc : 0;
}

/* The span of o that byte `done` falls in (done < o->bytes); *off: where
 * in it. */
static uint32_t outv_span_at(const outv_t *o, uint64_t done, uint64_t *off)
{
    uint32_t i = 0;
    while (done >= o->iov[i].len) {
        done -= o->iov[i].len;
        i++;
    }
    *off = done;
    return i;
}

int64_t wn_outv_queue(outv_t *o, uv_stream_t *st, uint64_t done, outv_done_cb cb, void *arg)
{
    if (done >= o->bytes)
        return 0;
    uint32_t first = outv_span_at(o, done, &done);
    uint32_t n = o->n - first;
    if (n == 0)
        return 0; /* cannot be: done < o->bytes */
    wctx_t *ctx = malloc(sizeof(*ctx) + n * (sizeof(uv_buf_t) + sizeof(wn_buf_t *)));
    if (ctx == NULL)
        return WN_ENOMEM;
    ctx->iov = (uv_buf_t *)(ctx + 1);
    ctx->bufs = (wn_buf_t **)(ctx->iov + n);
    ctx->n = n;
    ctx->cb = cb;
    ctx->arg = arg;
    ctx->bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        uv_buf_t b = o->iov[first + i];
        if (i == 0) {
            b.base += done;
            b.len -= done;
        }
        ctx->iov[i] = b;
        ctx->bufs[i] = o->bufs[first + i];
        wn_buf_ref(ctx->bufs[i]);
        ctx->bytes += b.len;
    }
    ctx->req.data = ctx;
    int rc = uv_write(&ctx->req, st, ctx->iov, n, on_wctx_done);
    if (rc < 0) {
        for (uint32_t i = 0; i < n; i++)
            wn_buf_unref(ctx->bufs[i]);
        free(ctx);
        return rc;
    }
    return (int64_t)ctx->bytes;
}

/* What queuing o's spans from `first` by reference keeps alive: the sizes
 * of the buffers they point into (a buffer met again later counts again). */
static uint64_t outv_pinned(const outv_t *o, uint32_t first)
{
    uint64_t n = 0;
    for (uint32_t i = first; i < o->n; i++)
        if (i == first || o->bufs[i] != o->bufs[i - 1])
            n += o->bufs[i]->cap;
    return n;
}

/* The spans of o from byte `done` on, copied into one buffer of their own
 * (a reference the caller lets go), or NULL when there is no memory. */
static wn_buf_t *outv_compact(const outv_t *o, uint64_t done)
{
    uint64_t left = o->bytes - done;
    wn_buf_t *b = left <= UINT32_MAX ? wn_buf_get_exact(o->bufs[0]->pool, (size_t)left) : NULL;
    if (b == NULL)
        return NULL;
    uint64_t off;
    for (uint32_t i = outv_span_at(o, done, &off); i < o->n; i++, off = 0) {
        memcpy(b->data + b->len, o->iov[i].base + off, (size_t)(o->iov[i].len - off));
        b->len += (uint32_t)(o->iov[i].len - off);
    }
    return b;
}

int64_t wn_outv_write(outv_t *o, uv_stream_t *st, outv_done_cb cb, void *arg)
{
    int64_t done = wn_outv_try(o, st);
    if (done < 0 || (uint64_t)done >= o->bytes)
        return done < 0 ? done : 0;
    /* The socket is full. Replies of a few bytes, each in a server read
     * buffer shared with others' replies, would keep those buffers alive
     * for as long as the client does not read: queue a copy instead when
     * the buffers are more than twice the bytes. */
    uint64_t off;
    uint32_t first = outv_span_at(o, (uint64_t)done, &off);
    wn_buf_t *b = outv_pinned(o, first) > 2 * (o->bytes - (uint64_t)done)
                      ? outv_compact(o, (uint64_t)done)
                      : NULL;
    if (b != NULL) {
        outv_t c;
        wn_outv_init(&c);
        int64_t rc = wn_outv_add(&c, b, 0, b->len); /* inline room: cannot fail */
        if (rc == 0)
            rc = wn_outv_queue(&c, st, 0, cb, arg);
        wn_outv_deinit(&c);
        wn_buf_unref(b); /* the queued write holds its own reference */
        return rc;
    }
    return wn_outv_queue(o, st, (uint64_t)done, cb, arg);
}
