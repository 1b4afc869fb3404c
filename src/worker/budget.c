/*
 * worker/budget.c: the clients of every worker counted together (see
 * wn_client_budget_t): each pool's entry, by name, in a list control
 * prepends to and workers read without a lock (entries are never removed
 * or moved until the process stops).
 */
#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"
#include "walnut/worker.h"

wn_pool_clients_t *wn_client_budget_pool(wn_client_budget_t *b, const char *name)
{
    wn_pool_clients_t *e = atomic_load_explicit(&b->pools, memory_order_acquire);
    for (; e != NULL; e = e->next)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

int wn_client_budget_add_pools(wn_client_budget_t *b, const wn_conf_t *conf)
{
    int rc = 0;
    for (uint32_t p = 0; p < conf->npools; p++) {
        const char *name = conf->pools[p].name;
        if (wn_client_budget_pool(b, name) != NULL)
            continue;
        size_t len = strlen(name);
        wn_pool_clients_t *e = malloc(sizeof(*e) + len + 1);
        if (e == NULL) {
            rc = WN_ENOMEM;
            continue;
        }
        memcpy(e->name, name, len + 1);
        atomic_init(&e->open, 0);
        e->next = atomic_load_explicit(&b->pools, memory_order_relaxed);
        /* Published whole: a worker that finds it sees its name and count. */
        atomic_store_explicit(&b->pools, e, memory_order_release);
    }
    return rc;
}

void wn_client_budget_free(wn_client_budget_t *b)
{
    free(b->held);
    b->held = NULL;
    wn_pool_clients_t *e = atomic_exchange_explicit(&b->pools, NULL, memory_order_acquire);
    while (e != NULL) {
        wn_pool_clients_t *next = e->next;
        free(e);
        e = next;
    }
}
