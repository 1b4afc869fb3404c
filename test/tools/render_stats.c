/*
 * render_stats: test helper. Builds a stats view for a config file (or a
 * built-in one whose pool and server names need escaping), fills every
 * counter, histogram and health field with made-up values, and prints one
 * rendering on stdout, for outside checkers (promtool check metrics,
 * python's json). Not part of walnut.
 *
 *   render_stats prom|json|servers [config.yml]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "control/stats_view.h"
#include "walnut/config.h"
#include "walnut/core.h"
#include "walnut/stats.h"

static const char builtin[] =
    "\"we\\\"ird\\\\pool\\nname \\u2603\":\n"
    "  listen: 127.0.0.1:22121\n"
    "  servers:\n"
    "   - \"127.0.0.1:11211:1 se\\\"rv\\\\er\\nname\\u2603\"\n"
    "   - 127.0.0.1:11212:1\n"
    "alpha:\n"
    "  listen: 127.0.0.1:22122\n"
    "  servers:\n"
    "   - ::1:11213:1\n"
    "zz:\n"
    "  listen: 127.0.0.1:22123\n"
    "  redis: true\n"
    "  servers:\n"
    "   - 127.0.0.1:6379:1\n";

static const char *const cmd_names[] = {"unknown", "get", "gets", "set", "delete"};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s prom|json|servers [config.yml]\n", argv[0]);
        return 2;
    }
    wn_conf_t *conf = NULL;
    char err[1024];
    int rc = argc > 2 ? wn_conf_load(argv[2], &conf, err, sizeof(err))
                      : wn_conf_parse(builtin, sizeof(builtin) - 1, "builtin", &conf, err,
                                      sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "render_stats: %s\n", err);
        return 1;
    }
    enum { NBLOCKS = 3 };
    wn_stats_block_t *blocks[NBLOCKS];
    for (int b = 0; b < NBLOCKS; b++) {
        blocks[b] = wn_stats_block_create(conf);
        if (blocks[b] == NULL)
            return 1;
        uint64_t k = (uint64_t)b + 1;
        for (unsigned i = 0; i < WN_GLOBAL_STAT_COUNT; i++)
            wn_stat_add(&blocks[b]->global[i], k * 11 * (i + 1));
        for (uint32_t p = 0; p < conf->npools; p++) {
            wn_pool_stats_t *ps = &blocks[b]->pools[p];
            for (unsigned i = 0; i < WN_POOL_STAT_COUNT; i++)
                wn_stat_add(&ps->v[i], k * (i + 3));
            for (unsigned i = 0; i < WN_CAUSE_COUNT; i++)
                wn_stat_add(&ps->errors[i], k * i);
            for (unsigned i = 0; i < WN_ARRAY_SIZE(cmd_names); i++)
                wn_stat_add(&ps->cmds[i], k * 1000 * i);
            for (uint64_t us = 1; us < 30000000; us = us * 3 + k)
                wn_hist_record(&ps->latency, us);
            for (uint32_t s = 0; s < conf->pools[p].nservers; s++) {
                wn_server_stats_t *ss = wn_stats_server(blocks[b], p, s);
                for (unsigned i = 0; i < WN_SERVER_STAT_COUNT; i++)
                    wn_stat_add(&ss->v[i], k * (s + 1) * (i + 1));
                for (uint64_t us = 5; us < 3000000; us = us * 2 + s)
                    wn_hist_record(&ss->latency, us);
            }
        }
    }
    wn_stats_cmd_table_t *cmds = calloc(conf->npools ? conf->npools : 1, sizeof(*cmds));
    for (uint32_t p = 0; p < conf->npools; p++) {
        cmds[p].names = cmd_names;
        cmds[p].n = WN_ARRAY_SIZE(cmd_names);
    }
    wn_stats_view_t v;
    wn_stats_view_opts_t o = {.nworkers = 2, .cmds = cmds};
    rc = wn_stats_view_build(&v, conf, blocks, NBLOCKS, &o);
    if (rc < 0) {
        fprintf(stderr, "render_stats: %s\n", wn_strerror(rc));
        return 1;
    }
    for (uint32_t p = 0; p < v.npools; p++) {
        v.pools[p].epoch = 3;
        v.pools[p].worker_epoch[0] = 3;
        v.pools[p].worker_epoch[1] = p == 0 ? 2 : 3;
        for (uint32_t s = 0; s < v.pools[p].nservers; s++) {
            wn_stats_server_view_t *sv = &v.pools[p].servers[s];
            sv->state = (wn_health_state_t)(s % 3);
            sv->ejected = sv->state == WN_HEALTH_EJECTED;
            sv->ejected_at_us = sv->ejected ? 1700000000000001ull : 0;
            sv->failures = s;
            sv->probed = s != 1;
            sv->last_probe_err = s == 2 ? UV_ECONNREFUSED : 0;
            sv->last_probe_age_ms = 250 * s;
        }
    }

    size_t len = 0;
    char *text = NULL;
    if (strcmp(argv[1], "prom") == 0)
        text = wn_stats_prom_render(&v, &len);
    else if (strcmp(argv[1], "json") == 0)
        text = wn_stats_json_render(&v, &len);
    else if (strcmp(argv[1], "servers") == 0)
        text = wn_stats_json_servers(&v, &len);
    if (text == NULL) {
        fprintf(stderr, "render_stats: cannot render '%s'\n", argv[1]);
        return 1;
    }
    fwrite(text, 1, len, stdout);
    if (strcmp(argv[1], "prom") != 0)
        fputc('\n', stdout);
    free(text);
    free(cmds);
    wn_stats_view_free(&v);
    for (int b = 0; b < NBLOCKS; b++)
        wn_stats_block_destroy(blocks[b]);
    wn_conf_unref(conf);
    return 0;
}
