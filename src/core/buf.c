/*
 * core/buf.c: per-worker pools of fixed-size, refcounted buffer chunks.
 * One thread owns a pool and all its buffers; nothing here is atomic.
 */
#include "walnut/core.h"

#include <stdlib.h>

void wn_bufpool_init(wn_bufpool_t *pool, size_t chunk_size, size_t max_free_bytes)
{
    size_t n = chunk_size > 0 ? max_free_bytes / chunk_size : 0;
    *pool = (wn_bufpool_t){.chunk_size = chunk_size, .max_free = n > 0 ? n : 1};
}

size_t wn_bufpool_deinit(wn_bufpool_t *pool)
{
    wn_buf_t *b = pool->free;
    while (b != NULL) {
        wn_buf_t *next = b->next;
        pool->bytes -= b->cap;
        pool->freed += b->cap;
        free(b);
        b = next;
    }
    pool->free = NULL;
    pool->nfree = 0;
    return pool->nlive;
}

/* A buffer handed out: one reference, empty. */
static wn_buf_t *handed_out(wn_bufpool_t *pool, wn_buf_t *b)
{
    b->next = NULL;
    b->refs = 1;
    b->len = 0;
    pool->nlive++;
    return b;
}

static wn_buf_t *buf_alloc(wn_bufpool_t *pool, size_t cap)
{
    if (cap > UINT32_MAX)
        return NULL;
    wn_buf_t *b = malloc(sizeof(*b) + cap);
    if (b == NULL)
        return NULL;
    b->cap = (uint32_t)cap;
    b->pool = pool;
    pool->bytes += cap;
    return handed_out(pool, b);
}

wn_buf_t *wn_buf_get(wn_bufpool_t *pool, size_t size)
{
    if (size <= pool->chunk_size && pool->free != NULL) {
        wn_buf_t *b = pool->free;
        pool->free = b->next;
        pool->nfree--;
        return handed_out(pool, b);
    }
    return buf_alloc(pool, size > pool->chunk_size ? size : pool->chunk_size);
}

wn_buf_t *wn_buf_get_exact(wn_bufpool_t *pool, size_t size)
{
    /* Its cap is not the chunk size (or it is, and pooling it is right):
     * wn_buf_unref frees it. */
    return buf_alloc(pool, size > 0 ? size : 1);
}

void wn_buf_ref(wn_buf_t *buf)
{
    buf->refs++;
}

void wn_buf_unref(wn_buf_t *buf)
{
    if (buf == NULL || --buf->refs > 0)
        return;
    wn_bufpool_t *pool = buf->pool;
    pool->nlive--;
    if (buf->cap == pool->chunk_size && pool->nfree < pool->max_free) {
        buf->next = pool->free;
        pool->free = buf;
        pool->nfree++;
        return;
    }
    pool->bytes -= buf->cap;
    pool->freed += buf->cap;
    free(buf);
}
