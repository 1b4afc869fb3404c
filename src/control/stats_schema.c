/*
 * control/stats_schema.c: the names and meanings of the stats walnut reports.
 * The names are twemproxy's, so dashboards built on its JSON keep working.
 * Constant tables; any thread.
 */
#include "walnut/control.h"

typedef struct stat_desc {
    const char *name;
    const char *type;
    const char *text;
} stat_desc_t;

static const stat_desc_t pool_stats[] = {
    {"client_eof", "counter", "client connections closed by the client"},
    {"client_err", "counter", "client connections closed on an error"},
    {"client_connections", "gauge", "open client connections"},
    {"server_ejects", "counter", "times a server of the pool was ejected"},
    {"forward_error", "counter", "requests that could not be forwarded to a server"},
    {"fragments", "counter", "fragments made by splitting multi-key requests"},
};

static const stat_desc_t server_stats[] = {
    {"server_eof", "counter", "server connections closed by the server"},
    {"server_err", "counter", "server connections closed on an error"},
    {"server_timedout", "counter", "requests that timed out on the server"},
    {"server_connections", "gauge", "open server connections"},
    {"server_ejected_at", "timestamp", "when the server was last ejected, usec since the epoch"},
    {"requests", "counter", "requests sent to the server"},
    {"request_bytes", "counter", "request bytes sent to the server"},
    {"responses", "counter", "responses received from the server"},
    {"response_bytes", "counter", "response bytes received from the server"},
    {"in_queue", "gauge", "requests waiting to be sent to the server"},
    {"in_queue_bytes", "gauge", "bytes of requests waiting to be sent"},
    {"out_queue", "gauge", "requests sent and waiting for a response"},
    {"out_queue_bytes", "gauge", "bytes of requests waiting for a response"},
};

static void print_table(FILE *out, const stat_desc_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(out, "    %-20s %-10s \"%s\"\n", t[i].name, t[i].type, t[i].text);
}

void wn_stats_describe(FILE *out)
{
    fprintf(out, "pool stats:\n");
    print_table(out, pool_stats, sizeof(pool_stats) / sizeof(pool_stats[0]));
    fprintf(out, "\nserver stats:\n");
    print_table(out, server_stats, sizeof(server_stats) / sizeof(server_stats[0]));
}
