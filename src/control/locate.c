/*
 * control/locate.c: `walnut --locate KEY...`, the operator's check of where
 * keys land in every pool before switching from twemproxy. Builds each pool's
 * ring with every server live, as twemproxy does at start. Main thread.
 */
#include "walnut/control.h"

#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"
#include "walnut/route.h"

static void print_addr(FILE *out, const wn_conf_addr_t *a)
{
    if (a->is_unix)
        fprintf(out, "%s", a->host);
    else if (strchr(a->host, ':') != NULL)
        fprintf(out, "[%s]:%u", a->host, a->port);
    else
        fprintf(out, "%s:%u", a->host, a->port);
}

/* A key or name as one field of a line: wn_escape_byte's escapes, the
 * backslash's included (a field's tab is then always a separator). */
static void print_field(FILE *out, const char *text, size_t len)
{
    for (const unsigned char *p = (const unsigned char *)text; len-- > 0; p++) {
        char esc[4];
        fwrite(esc, 1, wn_escape_byte(*p, true, esc), out);
    }
}

int wn_locate_print(const wn_conf_t *conf, char *const *keys, int nkeys, FILE *out)
{
    for (uint32_t p = 0; p < conf->npools; p++) {
        const wn_conf_pool_t *pool = &conf->pools[p];
        wn_ring_server_t *servers = calloc(pool->nservers, sizeof(*servers));
        if (servers == NULL)
            return WN_ENOMEM;
        wn_conf_ring_servers(pool, servers);
        wn_ring_params_t params = {
            .dist = pool->distribution,
            .hash = pool->hash,
            .hash_tag = pool->has_hash_tag ? pool->hash_tag : NULL,
        };
        wn_ring_t *ring;
        int rc = wn_ring_create(&params, servers, pool->nservers, NULL, &ring);
        free(servers);
        if (rc < 0)
            return rc;
        for (int k = 0; k < nkeys; k++) {
            uint32_t idx = wn_ring_lookup(ring, keys[k], strlen(keys[k]));
            print_field(out, pool->name, strlen(pool->name));
            fputc('\t', out);
            print_field(out, keys[k], strlen(keys[k]));
            fputc('\t', out);
            if (idx == WN_RING_NONE) {
                fprintf(out, "-\t-\n");
                continue;
            }
            const wn_conf_server_t *s = &pool->servers[idx];
            print_field(out, s->name, s->name_len);
            fputc('\t', out);
            print_addr(out, &s->addr);
            fprintf(out, "%s\n", pool->distribution == WN_DIST_RANDOM ? "\t(random)" : "");
        }
        wn_ring_unref(ring);
    }
    return 0;
}
