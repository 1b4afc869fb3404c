/*
 * Unit test of control's outbox to a worker (issue 7, D13): a message that
 * does not fit the worker's ring waits in control's outbox, and control's
 * retry timer pushes it once the worker has drained its ring, though nothing
 * else wakes control. Without the timer, what did not fit waited until
 * control happened to post again (a ring or a verdict could wait forever).
 *
 * A real worker (its thread not started: the test turns its loop) and the
 * control side of the rings, with control's own retry timer on a loop the
 * test turns. PINGs fill the ring; every one must come back as a PONG, in
 * order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "control/control_priv.h"
#include "walnut/config.h"
#include "walnut/stats.h"
#include "walnut/worker.h"
#include "worker/core_types.h"

/* Far more than the ring holds (1024). */
#define NPINGS 3000

static void on_control_wakeup(uv_async_t *a)
{
    (void)a; /* the test reads the worker's messages itself */
}

static void test_outbox_retried_without_a_wakeup(void **state)
{
    (void)state;
    char dir[] = "/tmp/wn-test-outbox-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char text[512];
    snprintf(text, sizeof(text), "p:\n  listen: %s/sock\n  servers:\n    - 127.0.0.1:1:1 a\n",
             dir);
    char err[256];
    wn_conf_t *conf = NULL;
    if (wn_conf_parse(text, strlen(text), "test.yml", &conf, err, sizeof(err)) != 0)
        fail_msg("config: %s", err);
    wn_stats_block_t *stats = wn_stats_block_create(conf);
    assert_non_null(stats);

    control_t ctl;
    memset(&ctl, 0, sizeof(ctl));
    assert_int_equal(uv_loop_init(&ctl.loop), 0);
    uv_async_init(&ctl.loop, &ctl.wakeup, on_control_wakeup);
    uv_timer_init(&ctl.loop, &ctl.outbox_timer);
    ctl.outbox_timer.data = &ctl;

    wn_worker_options_t wo = {
        .id = 0,
        .nworkers = 1,
        .mbuf_size = 16384,
        .accept_unix = false,
        .stats = stats,
        .control_wakeup = &ctl.wakeup,
    };
    wn_worker_t *w = NULL;
    if (wn_worker_create(conf, &wo, &w, err, sizeof(err)) != 0)
        fail_msg("worker: %s", err);
    ctl.workers = &w;
    ctl.nworkers = 1;

    for (uint64_t i = 1; i <= NPINGS; i++) {
        wn_msg_t m = {.type = WN_MSG_PING, .epoch = i};
        assert_int_equal(wn_worker_post(w, &m), 0);
    }
    /* The ring is full: the rest waits in control's outbox. */
    assert_true(wn_worker_flush_outbox(w) > 0);
    wn_control_outbox_retry(&ctl);

    /* Only the worker's loop and control's timer turn from here: nothing
     * posts again. Each PONG is read as the worker sends it. */
    uint64_t pongs = 0, last = 0;
    for (int t = 0; t < 10000 && pongs < NPINGS; t++) {
        uv_run(&w->loop, UV_RUN_NOWAIT);
        uv_run(&ctl.loop, UV_RUN_NOWAIT);
        wn_msg_t m;
        while (wn_worker_receive(w, &m) == 0) {
            if (m.type != WN_MSG_PONG)
                continue;
            assert_true(m.epoch == last + 1); /* every one, in order */
            last = m.epoch;
            pongs++;
        }
        if (pongs < NPINGS)
            usleep(1000);
    }
    assert_int_equal(pongs, NPINGS);
    assert_int_equal(wn_worker_flush_outbox(w), 0);

    wn_worker_stop(w);
    for (int i = 0; i < 2000 && uv_run(&w->loop, UV_RUN_NOWAIT) != 0; i++)
        usleep(1000);
    assert_int_equal(wn_worker_join(w), 0);
    uv_close((uv_handle_t *)&ctl.outbox_timer, NULL);
    uv_close((uv_handle_t *)&ctl.wakeup, NULL);
    uv_run(&ctl.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&ctl.loop), 0);
    wn_stats_block_destroy(stats);
    wn_conf_unref(conf);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outbox_retried_without_a_wakeup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
