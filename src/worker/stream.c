/*
 * worker/stream.c: segment lists and the read side of a connection. Worker
 * thread only. A segment holds a buffer reference, so bytes read from one
 * socket can be written to another without a copy.
 */
#include "worker_priv.h"

#include <stdlib.h>
#include <string.h>

/* Below this much free space a buffer is not worth reading into. */
#define MIN_READ_SPACE 128

void segv_init(segv_t *sv)
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
    /* Adjacent bytes of the same buffer extend the last segment. */
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

int segv_push(segv_t *sv, wn_buf_t *buf, uint32_t off, uint32_t len)
{
    return push(sv, buf, off, len, true);
}

int segv_push_split(segv_t *sv, wn_buf_t *buf, uint32_t off, uint32_t len)
{
    return push(sv, buf, off, len, false);
}

int scratch_push(wn_worker_t *w, segv_t *sv, const char *data, size_t len)
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
    return segv_push(sv, b, off, (uint32_t)len);
}

int segv_append(segv_t *sv, const segv_t *src)
{
    for (uint32_t i = 0; i < src->n; i++) {
        int rc = segv_push(sv, src->v[i].buf, src->v[i].off, src->v[i].len);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void segv_clear(segv_t *sv)
{
    for (uint32_t i = 0; i < sv->n; i++)
        wn_buf_unref(sv->v[i].buf);
    if (sv->v != sv->inl)
        free(sv->v);
    segv_init(sv);
}

uint64_t segv_bytes(const segv_t *sv)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < sv->n; i++)
        n += sv->v[i].len;
    return n;
}

int instream_alloc(wn_worker_t *w, instream_t *in, bool keep_line, uv_buf_t *out)
{
    wn_buf_t *b = in->buf;
    if (b != NULL && b->cap - b->len >= WN_MIN(MIN_READ_SPACE, b->cap / 4 + 1)) {
        *out = uv_buf_init(b->data + b->len, b->cap - b->len);
        return 0;
    }
    /* A partial line moves to the new buffer so the parser sees it whole;
     * everything before it is owned by requests that hold references. */
    uint32_t partial = (b != NULL && keep_line) ? b->len - in->pos : 0;
    size_t want = w->bufs.chunk_size;
    if ((size_t)partial * 2 > want)
        want = (size_t)partial * 2;
    wn_buf_t *nb = wn_buf_get(&w->bufs, want);
    if (nb == NULL)
        return WN_ENOMEM;
    if (partial > 0)
        memcpy(nb->data, b->data + in->pos, partial);
    nb->len = partial;
    wn_buf_unref(b);
    in->buf = nb;
    in->pos = 0;
    *out = uv_buf_init(nb->data + nb->len, nb->cap - nb->len);
    return 0;
}

void instream_deinit(instream_t *in)
{
    wn_buf_unref(in->buf);
    in->buf = NULL;
    in->pos = 0;
}
