/*
 * control/reload.c: SIGHUP re-reads the configuration file. A file that does
 * not validate changes nothing: walnut keeps serving the configuration it
 * has and logs why, as -t would print it. Control thread only.
 */
#include "control_priv.h"

#include <stdio.h>

#include "walnut/core.h"

void wn_control_reload(control_t *ctl)
{
    if (ctl->stopping || ctl->conf_path == NULL)
        return;
    wn_sd_notify(ctl, "RELOADING=1\nMONOTONIC_USEC=%llu",
                 (unsigned long long)wn_sd_monotonic_usec());
    char err[512];
    wn_conf_t *conf = NULL;
    int rc = wn_conf_load(ctl->conf_path, &conf, err, sizeof(err));
    if (rc < 0) {
        wn_log_error("reload: %s; still serving the configuration loaded before", err);
        snprintf(ctl->last_reload, sizeof(ctl->last_reload), "last reload failed: %.120s", err);
    } else {
        wn_log_warn("reload: '%s' is valid, but this build does not apply changes live yet",
                    ctl->conf_path);
        snprintf(ctl->last_reload, sizeof(ctl->last_reload),
                 "last reload: valid, not applied");
        wn_conf_unref(conf);
    }
    wn_sd_notify(ctl, "READY=1");
    wn_sd_status(ctl);
}
