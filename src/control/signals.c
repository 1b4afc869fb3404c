/*
 * control/signals.c: the process's signals, handled on the control thread's
 * loop. SIGINT and SIGTERM stop walnut gracefully; SIGHUP reopens the log and
 * reloads the configuration; SIGTTIN and SIGTTOU raise and lower the log level
 * (as twemproxy); SIGUSR1 and SIGUSR2 are logged and change nothing (as
 * twemproxy: a `kill -USR1` meant for another daemon must not end walnut,
 * their default action). With WALNUT_TEST_HOOKS=1 in the environment,
 * SIGUSR2 wedges worker 0's loop, so tests can see the watchdog withheld;
 * nothing else reads that variable. Control thread only.
 */
#include "control_priv.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"

static void on_signal(uv_signal_t *h, int signum)
{
    control_t *ctl = h->data;
    switch (signum) {
    case SIGHUP: {
        /* twemproxy reopens its log on SIGHUP; walnut also reloads. A log
         * that cannot be reopened (a FIFO nobody reads) keeps the old one. */
        int rc = wn_log_reopen();
        if (rc < 0)
            wn_log_warn("signal %d (SIGHUP): cannot reopen the log file: %s; logging on to the "
                        "one open before; reloading the configuration",
                        signum, wn_strerror(rc));
        else
            wn_log_notice("signal %d (SIGHUP): log reopened, reloading the configuration", signum);
        wn_control_reload(ctl);
        return;
    }
    case SIGTTIN:
    case SIGTTOU: {
        int level = wn_log_get_level() + (signum == SIGTTIN ? 1 : -1);
        wn_log_set_level(level);
        /* Always written, whatever the new level: the operator asked. */
        wn_log_write(WN_LOG_NOTICE, __FILE__, __LINE__, "signal %d (%s): %s log level to %d",
                     signum, strsignal(signum), signum == SIGTTIN ? "up" : "down",
                     wn_log_get_level());
        return;
    }
    case SIGUSR2:
        if (wn_test_hooks()) {
            wn_log_warn("signal %d (SIGUSR2, test hook): wedging worker 0", signum);
            wn_msg_t m = {.type = WN_MSG_WEDGE};
            if (ctl->nworkers > 0)
                wn_worker_post(ctl->workers[0], &m);
            return;
        }
        /* fall through */
    case SIGUSR1:
        wn_log_notice("signal %d (%s): ignored", signum, strsignal(signum));
        return;
    default:
        if (ctl->stopping)
            return;
        wn_log_notice("signal %d (%s): stopping %d worker(s)", signum, strsignal(signum),
                      ctl->nworkers);
        wn_control_stop(ctl);
        return;
    }
}

void wn_signals_start(control_t *ctl)
{
    int sigs[WN_NSIGNALS] = {SIGINT, SIGTERM, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};
    ctl->nsignals = 0;
    for (int i = 0; i < WN_NSIGNALS; i++) {
        uv_signal_t *h = &ctl->signals[ctl->nsignals++];
        uv_signal_init(&ctl->loop, h);
        h->data = ctl;
        uv_signal_start(h, on_signal, sigs[i]);
    }
}

/* Only when walnut stops for good, every worker joined: this thread is the
 * only one left to take a signal. Closing a handle gives its signal back
 * its default action, which for each of these kills or stops the process,
 * so a second SIGTERM from systemd between here and exit would end walnut
 * by that signal, its pid file left behind. They are ignored instead, as a
 * signal handled while stopping already is; blocked meanwhile, so one that
 * comes in between is discarded by SIG_IGN rather than taken by default. */
void wn_signals_close(control_t *ctl)
{
    sigset_t set, old;
    sigemptyset(&set);
    for (int i = 0; i < ctl->nsignals; i++)
        sigaddset(&set, ctl->signals[i].signum);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    for (int i = 0; i < ctl->nsignals; i++) {
        uv_signal_t *h = &ctl->signals[i];
        int signum = h->signum;
        if (uv_is_closing((uv_handle_t *)h))
            continue;
        uv_close((uv_handle_t *)h, NULL);
        signal(signum, SIG_IGN);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    ctl->nsignals = 0;
}
