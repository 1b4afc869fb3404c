/*
 * main.c: walnut's entry point. Parses the command line, answers the
 * one-shot actions (-h, -V, -t, -D, --locate) and hands a running proxy over
 * to the control module. Main thread only; everything else lives in the library.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "walnut/config.h"
#include "walnut/control.h"
#include "walnut/core.h"

static void print_version(FILE *out)
{
    fprintf(out, "This is walnut-%s\n", WN_VERSION);
}

/* With to_log, the reason also goes to the log file (-o), where an operator
 * whose service manager drops stderr looks for it, as nutcracker puts it. */
static wn_conf_t *load_conf(const char *path, bool to_log)
{
    char err[1024];
    wn_conf_t *conf = NULL;
    if (wn_conf_load(path, &conf, err, sizeof(err)) < 0) {
        fprintf(stderr, "walnut: %s\n", err);
        fprintf(stderr, "walnut: configuration file '%s' syntax is invalid\n", path);
        if (to_log) /* whatever the level (-v): the operator must see why */
            wn_log_write(WN_LOG_ERR, __FILE__, __LINE__,
                         "%s; configuration file '%s' syntax is invalid, not started", err, path);
        return NULL;
    }
    return conf;
}

/* Descriptors 0-2 are open from here on: started with one closed (`<&-`),
 * the next open would take its number, and a later dup2 onto stdout or
 * stderr (-d, the log) would close a socket, a pipe or the log file. */
static void std_fds_open(void)
{
    int fd;
    do
        fd = open("/dev/null", O_RDWR);
    while (fd >= 0 && fd <= STDERR_FILENO);
    if (fd > STDERR_FILENO)
        close(fd);
}

int main(int argc, char **argv)
{
    wn_options_t opts;
    char err[512];

    std_fds_open();
    if (wn_options_parse(argc, argv, &opts, err, sizeof(err)) < 0) {
        fprintf(stderr, "walnut: %s\n", err);
        return EXIT_FAILURE;
    }

    wn_conf_t *conf;
    int rc;
    switch (opts.action) {
    case WN_ACTION_HELP:
        print_version(stdout);
        wn_options_usage(stdout);
        if (opts.describe_stats)
            wn_stats_describe(stdout);
        return EXIT_SUCCESS;
    case WN_ACTION_VERSION:
        print_version(stdout);
        if (opts.describe_stats)
            wn_stats_describe(stdout);
        return EXIT_SUCCESS;
    case WN_ACTION_DESCRIBE_STATS:
        print_version(stdout); /* as nutcracker -D does */
        wn_stats_describe(stdout);
        return EXIT_SUCCESS;
    case WN_ACTION_TEST_CONF:
        conf = load_conf(opts.conf_file, false);
        if (conf == NULL)
            return EXIT_FAILURE;
        if (wn_control_check_listen(conf, opts.stats_addr, opts.stats_port, err, sizeof(err)) < 0) {
            fprintf(stderr, "walnut: %s\n", err);
            fprintf(stderr, "walnut: configuration file '%s' syntax is invalid\n", opts.conf_file);
            wn_conf_unref(conf);
            return EXIT_FAILURE;
        }
        fprintf(stderr, "walnut: configuration file '%s' syntax is ok\n", opts.conf_file);
        wn_conf_unref(conf);
        return EXIT_SUCCESS;
    case WN_ACTION_LOCATE:
        conf = load_conf(opts.conf_file, false);
        if (conf == NULL)
            return EXIT_FAILURE;
        rc = wn_locate_print(conf, opts.locate_keys, opts.nlocate_keys, stdout);
        wn_conf_unref(conf);
        if (rc < 0) {
            fprintf(stderr, "walnut: --locate failed: %s\n", wn_strerror(rc));
            return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
    case WN_ACTION_RUN:
        break;
    }

    /* -d chdirs to /: relative paths must name what they named here. */
    if (opts.daemonize && (rc = wn_options_absolute_paths(&opts)) < 0) {
        fprintf(stderr, "walnut: cannot resolve relative paths: %s\n", wn_strerror(rc));
        wn_options_deinit(&opts);
        return EXIT_FAILURE;
    }
    rc = wn_log_init(opts.verbosity, opts.log_file);
    if (rc < 0) {
        fprintf(stderr, "walnut: cannot open log file '%s': %s%s\n", opts.log_file, wn_strerror(rc),
                rc == -ENXIO ? " (a FIFO no process reads: walnut does not wait for one)" : "");
        wn_options_deinit(&opts);
        return EXIT_FAILURE;
    }
    conf = load_conf(opts.conf_file, opts.log_file != NULL);
    if (conf == NULL) {
        wn_options_deinit(&opts);
        return EXIT_FAILURE;
    }
    rc = wn_control_run(conf, &opts);
    wn_conf_unref(conf);
    wn_log_deinit();
    wn_options_deinit(&opts);
    return rc < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
