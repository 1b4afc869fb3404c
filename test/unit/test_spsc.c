/*
 * test_spsc.c: the SPSC ring and its outbox. Single-thread semantics against a
 * model queue, then a producer and a consumer thread passing sequence numbers
 * through tiny and larger rings (no loss, no duplicate, no reordering, no torn
 * message). Threads report into plain structs; only the main thread asserts.
 */
#include "walnut/spsc.h"

#include "walnut/core.h"

#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

/* Messages per stress run; ThreadSanitizer makes each atomic access far
 * dearer, so it gets fewer. WALNUT_SPSC_STRESS_N overrides both. A capacity-1
 * ring costs a handoff per message, so that run (and the outbox's) sends a
 * fifth as many. */
#ifdef UNDER_TSAN
#define STRESS_N_DEFAULT 2000000u
#else
#define STRESS_N_DEFAULT 5000000u
#endif
#define STRESS_DEADLINE_MS 60000u

/* ---- single thread ---------------------------------------------------- */

static wn_spsc_t *make(size_t capacity, size_t msg_size)
{
    wn_spsc_t *ring = NULL;
    assert_int_equal(wn_spsc_create(capacity, msg_size, &ring), 0);
    assert_non_null(ring);
    return ring;
}

static void test_create_rejects(void **state)
{
    (void)state;
    wn_spsc_t *sentinel = (wn_spsc_t *)&sentinel;
    wn_spsc_t *ring = sentinel;
    assert_int_equal(wn_spsc_create(0, 8, &ring), WN_EINVAL);
    assert_int_equal(wn_spsc_create(3, 8, &ring), WN_EINVAL);
    assert_int_equal(wn_spsc_create(1000, 8, &ring), WN_EINVAL);
    assert_int_equal(wn_spsc_create(WN_SPSC_CAPACITY_MAX * 2, 8, &ring), WN_EINVAL);
    assert_int_equal(wn_spsc_create(8, 0, &ring), WN_EINVAL);
    assert_int_equal(wn_spsc_create(8, WN_SPSC_MSG_MAX + 1, &ring), WN_EINVAL);
    assert_int_equal(wn_spsc_create(8, 8, NULL), WN_EINVAL);
    assert_ptr_equal(ring, sentinel); /* outputs untouched on error */
    wn_spsc_destroy(NULL);
}

static void test_empty(void **state)
{
    (void)state;
    wn_spsc_t *ring = make(16, sizeof(uint64_t));
    assert_int_equal(wn_spsc_capacity(ring), 16);
    assert_int_equal(wn_spsc_msg_size(ring), sizeof(uint64_t));
    assert_true(wn_spsc_empty(ring));
    assert_int_equal(wn_spsc_count(ring), 0);
    uint64_t v = 0xdeadbeef;
    assert_int_equal(wn_spsc_pop(ring, &v), WN_EAGAIN);
    assert_int_equal(v, 0xdeadbeef); /* untouched */

    uint64_t in = 42;
    assert_int_equal(wn_spsc_push(ring, &in), 0);
    assert_false(wn_spsc_empty(ring));
    assert_int_equal(wn_spsc_count(ring), 1);
    assert_int_equal(wn_spsc_pop(ring, &v), 0);
    assert_int_equal(v, 42);
    assert_true(wn_spsc_empty(ring));
    assert_int_equal(wn_spsc_pop(ring, &v), WN_EAGAIN);
    wn_spsc_destroy(ring);
}

/* Fill to capacity, see WN_EFULL (and that the refused message is not taken),
 * drain in FIFO order, see WN_EAGAIN. */
static void fill_and_drain(size_t capacity)
{
    wn_spsc_t *ring = make(capacity, sizeof(uint32_t));
    for (int round = 0; round < 3; round++) {
        uint32_t base = (uint32_t)round * 100000u;
        for (uint32_t i = 0; i < capacity; i++) {
            uint32_t v = base + i;
            assert_int_equal(wn_spsc_push(ring, &v), 0);
            assert_int_equal(wn_spsc_count(ring), i + 1);
        }
        uint32_t refused = 0xffffffffu;
        assert_int_equal(wn_spsc_push(ring, &refused), WN_EFULL);
        assert_int_equal(wn_spsc_push(ring, &refused), WN_EFULL);
        assert_int_equal(wn_spsc_count(ring), capacity);
        for (uint32_t i = 0; i < capacity; i++) {
            uint32_t v = 0;
            assert_int_equal(wn_spsc_pop(ring, &v), 0);
            assert_int_equal(v, base + i);
        }
        uint32_t v = 7;
        assert_int_equal(wn_spsc_pop(ring, &v), WN_EAGAIN);
        assert_int_equal(v, 7);
        assert_true(wn_spsc_empty(ring));
    }
    wn_spsc_destroy(ring);
}

static void test_fill_to_capacity(void **state)
{
    (void)state;
    fill_and_drain(1);
    fill_and_drain(2);
    fill_and_drain(8);
    fill_and_drain(1024);
}

/* After a refused push, one pop makes room for exactly one more. */
static void test_full_then_room(void **state)
{
    (void)state;
    wn_spsc_t *ring = make(4, sizeof(int));
    for (int i = 0; i < 4; i++)
        assert_int_equal(wn_spsc_push(ring, &i), 0);
    int x = 99, out = -1;
    assert_int_equal(wn_spsc_push(ring, &x), WN_EFULL);
    assert_int_equal(wn_spsc_pop(ring, &out), 0);
    assert_int_equal(out, 0);
    assert_int_equal(wn_spsc_push(ring, &x), 0);
    assert_int_equal(wn_spsc_push(ring, &x), WN_EFULL);
    int want[] = {1, 2, 3, 99};
    for (size_t i = 0; i < WN_ARRAY_SIZE(want); i++) {
        assert_int_equal(wn_spsc_pop(ring, &out), 0);
        assert_int_equal(out, want[i]);
    }
    assert_int_equal(wn_spsc_pop(ring, &out), WN_EAGAIN);
    wn_spsc_destroy(ring);
}

/* Random interleaving of pushes and pops against a model queue, with an odd
 * message size so slots are not naturally aligned; wraps the ring many times. */
static void test_wraparound_model(void **state)
{
    (void)state;
    enum { CAP = 4, MSG = 3, OPS = 200000 };
    wn_spsc_t *ring = make(CAP, MSG);
    unsigned char model[CAP][MSG];
    size_t mhead = 0, mtail = 0; /* model indices, free-running */
    uint32_t rng = 12345, next = 0;
    size_t pushes = 0;
    for (int op = 0; op < OPS; op++) {
        rng = rng * 1103515245u + 12345u;
        if ((rng >> 16) & 1) {
            unsigned char m[MSG] = {(unsigned char)next, (unsigned char)(next >> 8),
                                    (unsigned char)(next >> 16)};
            int rc = wn_spsc_push(ring, m);
            if (mhead - mtail == CAP) {
                assert_int_equal(rc, WN_EFULL);
            } else {
                assert_int_equal(rc, 0);
                memcpy(model[mhead % CAP], m, MSG);
                mhead++;
                next++;
                pushes++;
            }
        } else {
            unsigned char m[MSG] = {0xaa, 0xbb, 0xcc};
            int rc = wn_spsc_pop(ring, m);
            if (mhead == mtail) {
                assert_int_equal(rc, WN_EAGAIN);
                assert_int_equal(m[0], 0xaa);
            } else {
                assert_int_equal(rc, 0);
                assert_memory_equal(m, model[mtail % CAP], MSG);
                mtail++;
            }
        }
        assert_int_equal(wn_spsc_count(ring), mhead - mtail);
        assert_int_equal(!!wn_spsc_empty(ring), mhead == mtail);
    }
    assert_true(pushes / CAP > 10000); /* it really went round, many times */
    wn_spsc_destroy(ring);
}

/* A message that carries a pointer: push hands the heap payload over, the
 * popper frees it (ASan's leak check would catch a lost one). */
typedef struct {
    int type;
    uint64_t epoch;
    char *payload; /* owned by whoever holds the message */
} event_t;

static void test_struct_messages_hand_over(void **state)
{
    (void)state;
    wn_spsc_t *ring = make(8, sizeof(event_t));
    for (int i = 0; i < 8; i++) {
        event_t ev = {.type = i, .epoch = 1000u + (uint64_t)i, .payload = malloc(16)};
        assert_non_null(ev.payload);
        snprintf(ev.payload, 16, "ev%d", i);
        assert_int_equal(wn_spsc_push(ring, &ev), 0);
    }
    event_t extra = {.type = 8, .payload = malloc(4)};
    assert_int_equal(wn_spsc_push(ring, &extra), WN_EFULL);
    free(extra.payload); /* refused: still ours */
    for (int i = 0; i < 8; i++) {
        event_t ev;
        assert_int_equal(wn_spsc_pop(ring, &ev), 0);
        assert_int_equal(ev.type, i);
        assert_int_equal(ev.epoch, 1000u + (uint64_t)i);
        char want[16];
        snprintf(want, sizeof(want), "ev%d", i);
        assert_string_equal(ev.payload, want);
        free(ev.payload);
    }
    wn_spsc_destroy(ring);
}

/* ---- outbox ----------------------------------------------------------- */

static void drain_expect(wn_spsc_t *ring, uint32_t *next)
{
    uint32_t v;
    while (wn_spsc_pop(ring, &v) == 0) {
        assert_int_equal(v, *next);
        (*next)++;
    }
}

static void test_outbox_direct_when_room(void **state)
{
    (void)state;
    wn_spsc_t *ring = make(4, sizeof(uint32_t));
    wn_spsc_outbox_t ob;
    wn_spsc_outbox_init(&ob, ring);
    for (uint32_t i = 0; i < 4; i++) {
        assert_int_equal(wn_spsc_outbox_push(&ob, &i), 0);
        assert_int_equal(wn_spsc_outbox_pending(&ob), 0);
    }
    assert_int_equal(wn_spsc_outbox_flush(&ob), 0);
    uint32_t next = 0;
    drain_expect(ring, &next);
    assert_int_equal(next, 4);
    wn_spsc_outbox_deinit(&ob, NULL, NULL);
    wn_spsc_outbox_deinit(NULL, NULL, NULL);
    wn_spsc_destroy(ring);
}

/* Push far more than fits; drain a little at a time, interleaving more pushes
 * and flushes: the consumer sees one unbroken sequence. */
static void test_outbox_keeps_order(void **state)
{
    (void)state;
    wn_spsc_t *ring = make(4, sizeof(uint32_t));
    wn_spsc_outbox_t ob;
    wn_spsc_outbox_init(&ob, ring);
    uint32_t sent = 0, next = 0;
    for (; sent < 20; sent++)
        assert_int_equal(wn_spsc_outbox_push(&ob, &sent), 0);
    assert_int_equal(wn_spsc_count(ring), 4);
    assert_int_equal(wn_spsc_outbox_pending(&ob), 16);
    assert_int_equal(wn_spsc_outbox_flush(&ob), 0); /* still full */

    /* Pop three, then a push: the push must flush the three oldest first and
     * queue itself behind the rest, not jump into the freed slots. */
    uint32_t v;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(wn_spsc_pop(ring, &v), 0);
        assert_int_equal(v, next++);
    }
    assert_int_equal(wn_spsc_outbox_push(&ob, &sent), 0);
    sent++;
    assert_int_equal(wn_spsc_outbox_pending(&ob), 14);
    assert_int_equal(wn_spsc_count(ring), 4);

    /* Consumer drains in pieces; the producer flushes and adds between them. */
    for (int round = 0; wn_spsc_outbox_pending(&ob) > 0 || !wn_spsc_empty(ring); round++) {
        assert_true(round < 1000);
        if (wn_spsc_pop(ring, &v) == 0)
            assert_int_equal(v, next++);
        if (round % 3 == 0)
            wn_spsc_outbox_flush(&ob);
        if (round < 30) {
            assert_int_equal(wn_spsc_outbox_push(&ob, &sent), 0);
            sent++;
        }
    }
    assert_int_equal(next, sent);
    assert_int_equal(wn_spsc_outbox_pending(&ob), 0);

    /* Empty again: the next push goes straight to the ring. */
    assert_int_equal(wn_spsc_outbox_push(&ob, &sent), 0);
    sent++;
    assert_int_equal(wn_spsc_outbox_pending(&ob), 0);
    drain_expect(ring, &next);
    assert_int_equal(next, sent);
    wn_spsc_outbox_deinit(&ob, NULL, NULL);
    wn_spsc_destroy(ring);
}

static void drop_event(void *msg, void *arg)
{
    event_t ev;
    memcpy(&ev, msg, sizeof(ev));
    int *expect = arg;
    assert_int_equal(ev.type, *expect); /* dropped oldest first */
    (*expect)++;
    free(ev.payload);
}

static void test_outbox_deinit_drops_payloads(void **state)
{
    (void)state;
    wn_spsc_t *ring = make(2, sizeof(event_t));
    wn_spsc_outbox_t ob;
    wn_spsc_outbox_init(&ob, ring);
    for (int i = 0; i < 7; i++) {
        event_t ev = {.type = i, .payload = malloc(8)};
        assert_non_null(ev.payload);
        assert_int_equal(wn_spsc_outbox_push(&ob, &ev), 0);
    }
    assert_int_equal(wn_spsc_outbox_pending(&ob), 5);
    int expect = 2; /* 0 and 1 are in the ring */
    wn_spsc_outbox_deinit(&ob, drop_event, &expect);
    assert_int_equal(expect, 7);
    assert_int_equal(wn_spsc_outbox_pending(&ob), 0);
    event_t ev;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(wn_spsc_pop(ring, &ev), 0);
        assert_int_equal(ev.type, i);
        free(ev.payload);
    }
    wn_spsc_destroy(ring);
}

/* ---- two threads ------------------------------------------------------ */

/* seq plus a value derived from it, so a torn copy shows as a mismatch. */
typedef struct {
    uint64_t seq;
    uint64_t check;
} stress_msg_t;

static uint64_t check_of(uint64_t seq)
{
    return (seq * 0x9e3779b97f4a7c15u) ^ 0x5bd1e9955bd1e995u;
}

typedef struct {
    wn_spsc_t *ring;
    int use_outbox;
    uint64_t n;
    uint64_t deadline_ms;
    atomic_int stop; /* set by whichever side gives up, so the other ends too */
    /* producer's report */
    uint64_t sent;
    uint64_t full_hits;
    int prod_timed_out;
    int prod_error;
    /* consumer's report */
    uint64_t received;
    uint64_t empty_hits;
    uint64_t bad_seq;   /* first out-of-order value seen, 0 if none */
    uint64_t want_seq;  /* what was expected then */
    int bad_check;      /* a torn message */
    int cons_timed_out;
    int extra;          /* something arrived after the last message */
} stress_t;

static int should_stop(stress_t *st, int *timed_out)
{
    if (atomic_load_explicit(&st->stop, memory_order_relaxed))
        return 1;
    if (wn_time_ms() > st->deadline_ms) {
        *timed_out = 1;
        atomic_store_explicit(&st->stop, 1, memory_order_relaxed);
        return 1;
    }
    return 0;
}

static void *producer(void *arg)
{
    stress_t *st = arg;
    wn_spsc_outbox_t ob;
    wn_spsc_outbox_init(&ob, st->ring);
    for (uint64_t seq = 1; seq <= st->n; seq++) {
        stress_msg_t m = {seq, check_of(seq)};
        if (st->use_outbox) {
            /* Keep the outbox tiny, as a real producer does by flushing on
             * every wakeup: here, yield until the consumer has caught up. */
            while (wn_spsc_outbox_pending(&ob) >= 64) {
                if (wn_spsc_outbox_flush(&ob) == 0) {
                    st->full_hits++;
                    if (should_stop(st, &st->prod_timed_out))
                        goto out;
                    sched_yield();
                }
            }
            if (wn_spsc_outbox_push(&ob, &m) != 0) {
                st->prod_error = 1;
                atomic_store_explicit(&st->stop, 1, memory_order_relaxed);
                goto out;
            }
        } else {
            while (wn_spsc_push(st->ring, &m) != 0) {
                st->full_hits++;
                if (should_stop(st, &st->prod_timed_out))
                    goto out;
                sched_yield();
            }
        }
        st->sent = seq;
        if ((seq & 0xffff) == 0 && should_stop(st, &st->prod_timed_out))
            goto out;
    }
    while (wn_spsc_outbox_pending(&ob) > 0) {
        if (wn_spsc_outbox_flush(&ob) == 0) {
            if (should_stop(st, &st->prod_timed_out))
                goto out;
            sched_yield();
        }
    }
out:
    wn_spsc_outbox_deinit(&ob, NULL, NULL);
    return NULL;
}

static void *consumer(void *arg)
{
    stress_t *st = arg;
    uint64_t want = 1;
    stress_msg_t m;
    while (want <= st->n) {
        if (wn_spsc_pop(st->ring, &m) != 0) {
            st->empty_hits++;
            if (should_stop(st, &st->cons_timed_out))
                break;
            sched_yield();
            continue;
        }
        if (m.seq != want) {
            st->bad_seq = m.seq;
            st->want_seq = want;
            atomic_store_explicit(&st->stop, 1, memory_order_relaxed);
            break;
        }
        if (m.check != check_of(m.seq)) {
            st->bad_check = 1;
            atomic_store_explicit(&st->stop, 1, memory_order_relaxed);
            break;
        }
        want++;
        if ((want & 0xffff) == 0 && should_stop(st, &st->cons_timed_out))
            break;
    }
    st->received = want - 1;
    return NULL;
}

static uint64_t stress_n(void)
{
    const char *env = getenv("WALNUT_SPSC_STRESS_N");
    if (env != NULL && env[0] != '\0') {
        char *end;
        unsigned long long v = strtoull(env, &end, 10);
        if (*end == '\0' && v > 0)
            return v;
    }
    return STRESS_N_DEFAULT;
}

static void stress(size_t capacity, int use_outbox, unsigned divisor)
{
    stress_t st;
    memset(&st, 0, sizeof(st));
    atomic_init(&st.stop, 0);
    st.ring = make(capacity, sizeof(stress_msg_t));
    st.use_outbox = use_outbox;
    st.n = stress_n() / divisor;
    if (st.n == 0)
        st.n = 1;
    uint64_t start = wn_time_ms();
    st.deadline_ms = start + STRESS_DEADLINE_MS;

    pthread_t pt, ct;
    assert_int_equal(pthread_create(&ct, NULL, consumer, &st), 0);
    assert_int_equal(pthread_create(&pt, NULL, producer, &st), 0);
    assert_int_equal(pthread_join(pt, NULL), 0);
    assert_int_equal(pthread_join(ct, NULL), 0);
    uint64_t ms = wn_time_ms() - start;

    /* Nothing may be left over after the last message. */
    stress_msg_t m;
    st.extra = wn_spsc_pop(st.ring, &m) == 0;

    print_message("[ stress   ] capacity %zu%s: %llu msgs in %llu ms (%.1f M/s), "
                  "full %llu, empty %llu\n",
                  capacity, use_outbox ? " via outbox" : "", (unsigned long long)st.received,
                  (unsigned long long)ms, ms ? (double)st.received / (double)ms / 1000.0 : 0.0,
                  (unsigned long long)st.full_hits, (unsigned long long)st.empty_hits);
    if (st.bad_seq != 0)
        print_error("got seq %llu, expected %llu\n", (unsigned long long)st.bad_seq,
                    (unsigned long long)st.want_seq);
    assert_int_equal(st.bad_seq, 0);
    assert_false(st.bad_check);
    assert_false(st.prod_error);
    assert_false(st.prod_timed_out);
    assert_false(st.cons_timed_out);
    assert_int_equal(st.sent, st.n);
    assert_int_equal(st.received, st.n);
    assert_false(st.extra);
    wn_spsc_destroy(st.ring);
}

static void test_stress_capacity_1(void **state)
{
    (void)state;
    stress(1, 0, 5);
}

static void test_stress_capacity_8(void **state)
{
    (void)state;
    stress(8, 0, 1);
}

static void test_stress_capacity_1024(void **state)
{
    (void)state;
    stress(1024, 0, 1);
}

static void test_stress_outbox_capacity_8(void **state)
{
    (void)state;
    stress(8, 1, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_rejects),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_fill_to_capacity),
        cmocka_unit_test(test_full_then_room),
        cmocka_unit_test(test_wraparound_model),
        cmocka_unit_test(test_struct_messages_hand_over),
        cmocka_unit_test(test_outbox_direct_when_room),
        cmocka_unit_test(test_outbox_keeps_order),
        cmocka_unit_test(test_outbox_deinit_drops_payloads),
        cmocka_unit_test(test_stress_capacity_1),
        cmocka_unit_test(test_stress_capacity_8),
        cmocka_unit_test(test_stress_capacity_1024),
        cmocka_unit_test(test_stress_outbox_capacity_8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
