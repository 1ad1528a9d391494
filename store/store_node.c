/*
 * store_node.c -- cluster mode on the SQLite backend: there is none. One SQLite file serves one
 * node, so every cluster call answers STORE_ERR_INVALID with the reason (the server only makes them
 * with [store] backend = postgresql; docs/cluster.md).
 */
#include "store_internal.h"

static int no_cluster(struct store *st)
{
    return store_failf(st, STORE_ERR_INVALID,
                       "cluster mode needs [store] backend = postgresql (SQLite serves one node)");
}

int sq_node_join(struct store *st, const char *name, int64_t boot, int64_t lease_ms, int64_t now,
                 int64_t *node_id)
{
    (void)name, (void)boot, (void)lease_ms, (void)now;
    *node_id = 0;
    return no_cluster(st);
}

int sq_node_renew(struct store *st, int64_t now, int64_t lease_ms, bool *lost)
{
    (void)now, (void)lease_ms;
    *lost = false;
    return no_cluster(st);
}

int sq_node_leave(struct store *st, int64_t now)
{
    (void)now;
    return no_cluster(st);
}

int sq_node_sweep(struct store *st, int64_t now, store_lost_fn *cb, void *ctx, int *nodes)
{
    (void)now, (void)cb, (void)ctx;
    *nodes = 0;
    return no_cluster(st);
}

int sq_nodes_list(struct store *st, store_node_fn *cb, void *ctx)
{
    (void)cb, (void)ctx;
    return no_cluster(st);
}

int sq_outbox_owner(struct store *st, bool *mine)
{
    (void)st;
    *mine = true; /* one node: it sends its own events */
    return 0;
}

int sq_cluster_note(struct store *st, const char *kind, const char *target, int64_t ref,
                    const char *payload, int64_t now)
{
    (void)kind, (void)target, (void)ref, (void)payload, (void)now;
    return no_cluster(st);
}
