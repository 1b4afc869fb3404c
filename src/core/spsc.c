/*
 * core/spsc.c: the bounded single-producer/single-consumer ring and the
 * producer's outbox. push runs only on the producer thread, pop and empty only
 * on the consumer thread; the two meet only through the head and tail atomics.
 * No locks, no blocking, no libuv; the outbox allocates, the ring never does.
 */
#include "walnut/spsc.h"

#include "walnut/core.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_LINE 64

/*
 * head and tail count messages ever pushed and popped; they run freely and wrap
 * through SIZE_MAX, which is harmless because capacity is a power of two far
 * below SIZE_MAX / 2, so head - tail is always the fill level. Each side keeps
 * a private copy of the other side's index on its own cache line and reloads
 * the shared one only when the copy says full (producer) or empty (consumer),
 * so in the steady state neither side reads the other's line on every message.
 */
struct wn_spsc {
    /* Written only by the producer. */
    alignas(CACHE_LINE) atomic_size_t head; /* next message to write */
    size_t tail_cache;                      /* producer's last view of tail */

    /* Written only by the consumer. */
    alignas(CACHE_LINE) atomic_size_t tail; /* next message to read */
    size_t head_cache;                      /* consumer's last view of head */

    /* Fixed at create; read by both. */
    alignas(CACHE_LINE) size_t mask; /* capacity - 1 */
    size_t msg_size;
    unsigned char *slots; /* borrowed: points into this allocation, after the struct */
};

struct wn_spsc_node {
    struct wn_spsc_node *next;                /* owned by the outbox's list */
    alignas(max_align_t) unsigned char msg[]; /* msg_size bytes, aligned for any type */
};

static unsigned char *slot(const wn_spsc_t *ring, size_t index)
{
    return ring->slots + (index & ring->mask) * ring->msg_size;
}

int wn_spsc_create(size_t capacity, size_t msg_size, wn_spsc_t **out)
{
    if (out == NULL || capacity == 0 || capacity > WN_SPSC_CAPACITY_MAX ||
        (capacity & (capacity - 1)) != 0 || msg_size == 0 || msg_size > WN_SPSC_MSG_MAX)
        return WN_EINVAL;
    /* The slots start on their own cache line (sizeof is a multiple of the
     * struct's alignment), so the producer filling slot 0 does not disturb the
     * line holding mask and msg_size. aligned_alloc wants a multiple of the
     * alignment. */
    if (capacity > (SIZE_MAX - sizeof(struct wn_spsc) - CACHE_LINE) / msg_size)
        return WN_ENOMEM;
    size_t data = capacity * msg_size;
    size_t total = (sizeof(struct wn_spsc) + data + CACHE_LINE - 1) & ~(size_t)(CACHE_LINE - 1);
    wn_spsc_t *ring = aligned_alloc(CACHE_LINE, total);
    if (ring == NULL)
        return WN_ENOMEM;
    atomic_init(&ring->head, 0);
    ring->tail_cache = 0;
    atomic_init(&ring->tail, 0);
    ring->head_cache = 0;
    ring->mask = capacity - 1;
    ring->msg_size = msg_size;
    ring->slots = (unsigned char *)ring + sizeof(struct wn_spsc);
    *out = ring;
    return 0;
}

void wn_spsc_destroy(wn_spsc_t *ring)
{
    free(ring);
}

int wn_spsc_push(wn_spsc_t *ring, const void *msg)
{
    /* Only this thread writes head, so a relaxed load of it is exact. */
    size_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    if (head - ring->tail_cache > ring->mask) {
        /* Acquire pairs with pop's release of tail: the consumer has finished
         * copying out of the slot we are about to overwrite. */
        ring->tail_cache = atomic_load_explicit(&ring->tail, memory_order_acquire);
        if (head - ring->tail_cache > ring->mask)
            return WN_EFULL;
    }
    memcpy(slot(ring, head), msg, ring->msg_size);
    /* Release publishes the slot's bytes (and all the producer wrote before,
     * i.e. the payload) to the consumer's acquire load of head. */
    atomic_store_explicit(&ring->head, head + 1, memory_order_release);
    return 0;
}

int wn_spsc_pop(wn_spsc_t *ring, void *msg)
{
    size_t tail = atomic_load_explicit(&ring->tail, memory_order_relaxed);
    if (tail == ring->head_cache) {
        ring->head_cache = atomic_load_explicit(&ring->head, memory_order_acquire);
        if (tail == ring->head_cache)
            return WN_EAGAIN;
    }
    memcpy(msg, slot(ring, tail), ring->msg_size);
    /* Release: the copy above is done before the producer may reuse the slot. */
    atomic_store_explicit(&ring->tail, tail + 1, memory_order_release);
    return 0;
}

int wn_spsc_empty(const wn_spsc_t *ring)
{
    size_t tail = atomic_load_explicit(&ring->tail, memory_order_relaxed);
    if (tail != ring->head_cache)
        return 0;
    return tail == atomic_load_explicit(&ring->head, memory_order_acquire);
}

size_t wn_spsc_count(const wn_spsc_t *ring)
{
    /* tail first: whatever head we read afterwards is at least that tail, so
     * the difference never goes negative; it can overshoot capacity when both
     * sides move between the loads, hence the clamp. */
    size_t tail = atomic_load_explicit(&ring->tail, memory_order_acquire);
    size_t head = atomic_load_explicit(&ring->head, memory_order_acquire);
    size_t n = head - tail;
    return n > ring->mask + 1 ? ring->mask + 1 : n;
}

size_t wn_spsc_capacity(const wn_spsc_t *ring)
{
    return ring->mask + 1;
}

size_t wn_spsc_msg_size(const wn_spsc_t *ring)
{
    return ring->msg_size;
}

void wn_spsc_outbox_init(wn_spsc_outbox_t *ob, wn_spsc_t *ring)
{
    ob->ring = ring;
    ob->head = NULL;
    ob->tail = NULL;
    ob->pending = 0;
}

void wn_spsc_outbox_deinit(wn_spsc_outbox_t *ob, void (*drop)(void *msg, void *arg), void *arg)
{
    if (ob == NULL)
        return;
    struct wn_spsc_node *node = ob->head;
    while (node != NULL) {
        struct wn_spsc_node *next = node->next;
        if (drop != NULL)
            drop(node->msg, arg);
        free(node);
        node = next;
    }
    ob->head = NULL;
    ob->tail = NULL;
    ob->pending = 0;
}

size_t wn_spsc_outbox_flush(wn_spsc_outbox_t *ob)
{
    size_t moved = 0;
    while (ob->head != NULL && wn_spsc_push(ob->ring, ob->head->msg) == 0) {
        struct wn_spsc_node *node = ob->head;
        ob->head = node->next;
        free(node);
        ob->pending--;
        moved++;
    }
    if (ob->head == NULL)
        ob->tail = NULL;
    return moved;
}

int wn_spsc_outbox_push(wn_spsc_outbox_t *ob, const void *msg)
{
    /* Older messages go first; only when none is left waiting may this one
     * overtake the list and enter the ring directly. */
    if (ob->head != NULL)
        wn_spsc_outbox_flush(ob);
    if (ob->head == NULL && wn_spsc_push(ob->ring, msg) == 0)
        return 0;

    size_t msg_size = ob->ring->msg_size;
    struct wn_spsc_node *node = malloc(offsetof(struct wn_spsc_node, msg) + msg_size);
    if (node == NULL)
        return WN_ENOMEM;
    node->next = NULL;
    memcpy(node->msg, msg, msg_size);
    if (ob->tail != NULL)
        ob->tail->next = node;
    else
        ob->head = node;
    ob->tail = node;
    ob->pending++;
    return 0;
}

size_t wn_spsc_outbox_pending(const wn_spsc_outbox_t *ob)
{
    return ob->pending;
}
