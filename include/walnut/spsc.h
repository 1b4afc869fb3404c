/*
 * spsc.h belongs to module core (kept apart from core.h so it can change on its own).
 * The bounded single-producer/single-consumer ring that carries every message
 * between the control thread and a worker, and the producer's outbox in front
 * of it. No libuv here: waking the consumer (uv_async_send) is the caller's job.
 */
#ifndef WALNUT_SPSC_H
#define WALNUT_SPSC_H

#include <stddef.h>

/*
 * A ring of `capacity` slots, each holding one message of exactly `msg_size`
 * bytes, copied in by push and out by pop. A message is a small value: a
 * pointer (msg_size = sizeof(void *)) or a fixed struct such as
 * { type, epoch, pointer }. A successful push hands the message over: from then
 * on the consumer owns it and whatever it points to, and the producer must not
 * touch that payload again. A failed push takes nothing; the producer still
 * owns the payload.
 *
 * Threads: exactly one producer thread calls push, exactly one consumer thread
 * calls pop and empty; create and destroy run while neither is active (or on
 * the single thread that plays both roles). Publication is a release store of
 * the write index, consumption an acquire load of it (and the mirror image for
 * the read index), so the bytes of a message, and everything the producer wrote
 * before pushing it, are visible to the consumer that pops it.
 */
typedef struct wn_spsc wn_spsc_t;

/* Largest msg_size accepted: messages are meant to be small. */
#define WN_SPSC_MSG_MAX 256
/* Largest capacity accepted (a power of two). */
#define WN_SPSC_CAPACITY_MAX ((size_t)1 << 24)

/*
 * Make an empty ring. `capacity` must be a power of two in
 * [1, WN_SPSC_CAPACITY_MAX] and `msg_size` in [1, WN_SPSC_MSG_MAX].
 * Returns 0 and the ring in *out, WN_EINVAL or WN_ENOMEM (out untouched).
 */
int wn_spsc_create(size_t capacity, size_t msg_size, wn_spsc_t **out);
/* Free the ring. Messages still in it are dropped without being looked at, so
 * the consumer pops them first when they own anything. NULL is fine. */
void wn_spsc_destroy(wn_spsc_t *ring);

/*
 * Producer thread. Copy msg_size bytes from `msg` into the ring. Returns 0 (the
 * message now belongs to the consumer) or WN_EFULL (ring full; nothing was
 * taken, the caller still owns the payload). Never blocks, never allocates.
 */
int wn_spsc_push(wn_spsc_t *ring, const void *msg);
/*
 * Consumer thread. Copy the oldest message's msg_size bytes into `msg`.
 * Returns 0 (the caller now owns it) or WN_EAGAIN (ring empty; `msg` untouched).
 * Never blocks, never allocates. Drain by popping until WN_EAGAIN.
 */
int wn_spsc_pop(wn_spsc_t *ring, void *msg);
/* Consumer thread. Nonzero when nothing is there to pop; when it returns 0 the
 * next wn_spsc_pop succeeds. */
int wn_spsc_empty(const wn_spsc_t *ring);
/* Any thread. Messages in the ring at some instant during the call, in
 * [0, capacity]; exact only on the producer or consumer thread and then only
 * as a bound (the other side may have moved since). For stats and tests. */
size_t wn_spsc_count(const wn_spsc_t *ring);
/* Any thread; fixed at create. */
size_t wn_spsc_capacity(const wn_spsc_t *ring);
size_t wn_spsc_msg_size(const wn_spsc_t *ring);

/*
 * The producer's outbox: the full-ring policy for messages that must not be
 * lost (eject/rejoin events, returned rings). A push goes straight into the
 * ring when the outbox is empty and the ring has room; otherwise it is copied
 * onto the outbox's own FIFO list (one small heap node each), and later flushes
 * move the list into the ring oldest first. Messages therefore reach the
 * consumer in push order even across a full ring. Retry by calling
 * wn_spsc_outbox_flush on the producer's next wakeup while
 * wn_spsc_outbox_pending is nonzero (pushes flush first, too).
 *
 * Producer thread only, the same thread that would push to the ring directly;
 * once a ring has an outbox, all pushes to it should go through the outbox or
 * order is lost. The fields are private; they are here so the outbox can live
 * in the producer's own struct (init/deinit, no allocation until it is needed).
 */
struct wn_spsc_node;
typedef struct wn_spsc_outbox {
    wn_spsc_t *ring;           /* borrowed: the ring outlives its outbox */
    struct wn_spsc_node *head; /* owned: oldest queued message, NULL when empty */
    struct wn_spsc_node *tail; /* borrowed: last node of the list above */
    size_t pending;            /* nodes on the list */
} wn_spsc_outbox_t;

/* Producer thread. Start an empty outbox in front of `ring`. */
void wn_spsc_outbox_init(wn_spsc_outbox_t *ob, wn_spsc_t *ring);
/*
 * Producer thread. Free the outbox. Each message still queued is first passed
 * to drop(msg, arg) when drop is not NULL, so its payload can be released;
 * `msg` points to msg_size bytes valid only during the call. NULL ob is fine.
 */
void wn_spsc_outbox_deinit(wn_spsc_outbox_t *ob, void (*drop)(void *msg, void *arg), void *arg);
/*
 * Producer thread. Hand `msg` over: flush what is queued, then put msg in the
 * ring, or behind the queued messages when the ring has no room. Returns 0
 * (the message is handed over, in the ring or queued; the caller must not touch
 * the payload again) or WN_ENOMEM (nothing taken; the caller still owns it).
 */
int wn_spsc_outbox_push(wn_spsc_outbox_t *ob, const void *msg);
/* Producer thread. Move queued messages into the ring, oldest first, until it
 * is full or the outbox is empty. Returns how many were moved (wake the
 * consumer when nonzero). */
size_t wn_spsc_outbox_flush(wn_spsc_outbox_t *ob);
/* Producer thread. Messages queued in the outbox (not yet in the ring). */
size_t wn_spsc_outbox_pending(const wn_spsc_outbox_t *ob);

#endif
