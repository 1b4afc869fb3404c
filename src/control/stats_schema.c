/*
 * control/stats_schema.c: -D, the names and meanings of the stats walnut's
 * twemproxy JSON carries, in twemproxy's layout ("  name" left-justified in
 * 20 columns, then the quoted description). Generated from the maps in
 * walnut/stats.h and the extra-field tables in stats_view.h, the same tables
 * the JSON renderer walks, so the two cannot drift. Any thread.
 */
#include "walnut/control.h"

#include <string.h>

#include "stats_view.h"

#define WALNUT_MARK " [walnut]"

static void line(FILE *out, const char *name, const char *text, bool walnut)
{
    /* twemproxy's "  %-20s\"%s\""; a longer name still gets one space. */
    fprintf(out, "  %-20s%s\"%s\"%s\n", name, strlen(name) >= 20 ? " " : "", text,
            walnut ? WALNUT_MARK : "");
}

/* twemproxy's header fields, in its order. */
static const struct {
    const char *name, *text;
} header_fields[] = {
    {"service", "always walnut (twemproxy says nutcracker)"},
    {"source", "host name"},
    {"version", "walnut's version"},
    {"uptime", "seconds since start"},
    {"timestamp", "unix seconds when the stats were taken"},
    {"total_connections", "connections ever opened: clients, servers, one per pool listener"},
    {"curr_connections", "connections open now: clients, servers, one per pool listener"},
};

/* twemproxy's own pool stats are the first six of the pool map. */
#define TWEMPROXY_POOL_STATS 6

void wn_stats_describe(FILE *out)
{
    fprintf(out, "Stats marked" WALNUT_MARK " are walnut's own; the others are twemproxy's.\n\n");

    fprintf(out, "pool stats:\n");
    for (unsigned i = 0; i < WN_POOL_STAT_COUNT; i++)
        line(out, wn_pool_stat_desc[i].name, wn_pool_stat_desc[i].text,
             i >= TWEMPROXY_POOL_STATS);
#define POOL_EXTRA_(name, text) line(out, #name, text, true);
    WN_JSON_POOL_EXTRA_MAP(POOL_EXTRA_)
#undef POOL_EXTRA_
    for (unsigned i = 0; i < WN_CAUSE_COUNT; i++) {
        char name[64], text[256];
        snprintf(name, sizeof(name), "forward_error_%s", wn_error_cause_desc[i].name);
        snprintf(text, sizeof(text), "forward_error by cause: %s", wn_error_cause_desc[i].text);
        line(out, name, text, true);
    }
    line(out, "cmd_<command>", "requests received, one per command of the pool's protocol", true);

    fprintf(out, "\nserver stats:\n");
    for (unsigned i = 0; i < WN_SERVER_STAT_COUNT; i++) {
        line(out, wn_server_stat_desc[i].name, wn_server_stat_desc[i].text, false);
        if (i == WN_SERVER_EJECTED_AT_AFTER)
            line(out, "server_ejected_at", WN_SERVER_EJECTED_AT_TEXT, false);
    }
#define SERVER_EXTRA_(name, text) line(out, #name, text, true);
    WN_JSON_SERVER_EXTRA_MAP(SERVER_EXTRA_)
#undef SERVER_EXTRA_

    fprintf(out, "\nglobal stats:\n");
    for (size_t i = 0; i < sizeof(header_fields) / sizeof(header_fields[0]); i++)
        line(out, header_fields[i].name, header_fields[i].text, false);
#define HEADER_EXTRA_(name, text) line(out, #name, text, true);
    WN_JSON_HEADER_EXTRA_MAP(HEADER_EXTRA_)
#undef HEADER_EXTRA_
    for (unsigned i = 0; i < WN_GLOBAL_STAT_COUNT; i++)
        if (wn_stats_global_in_json((wn_global_stat_t)i))
            line(out, wn_global_stat_desc[i].name, wn_global_stat_desc[i].text, true);
}
