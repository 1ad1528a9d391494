/*
 * nodes.c -- `wsctl nodes`: the nodes of a cluster (PostgreSQL store), read from the database: name,
 * state (up, down, lost), when it started and until when its lease runs. A SQLite store has none.
 */
#include <jansson.h>
#include <getopt.h>
#include <stdio.h>

#include "store.h"
#include "wsctl.h"

struct nodes_ctx {
    struct wsctl *w;
    struct table t;
    json_t *arr;
};

static int node_row(void *arg, const struct store_node_info *n)
{
    struct nodes_ctx *x = arg;
    if (x->arr) {
        json_t *o = json_pack("{s:I, s:s, s:s, s:I, s:I, s:I}", "id", (json_int_t)n->id, "name",
                              n->name, "state", n->state, "boot", (json_int_t)n->boot,
                              "started_at", (json_int_t)n->started_at, "lease_until",
                              (json_int_t)n->lease_until);
        json_array_append_new(x->arr, o);
        return 0;
    }
    char id[24], started[40], lease[96], ago[32];
    snprintf(id, sizeof id, "%lld", (long long)n->id);
    fmt_time(started, sizeof started, n->started_at);
    fmt_ago(ago, sizeof ago, n->lease_until, x->w->now_ms);
    char t[40];
    fmt_time(t, sizeof t, n->lease_until);
    snprintf(lease, sizeof lease, "%s (%s)", t, ago);
    const char *row[] = {id, n->name, n->state, started, lease};
    table_add(&x->t, row);
    return 0;
}

int cmd_nodes(struct wsctl *w, int argc, char **argv)
{
    bool done;
    int rc = wsctl_common_only(w, argc, argv, &done);
    if (done)
        return rc;
    if (optind < argc)
        return wsctl_usage_error(w, argv[0], "unexpected argument '%s'", argv[optind]);
    struct store *st;
    if (wsctl_open_db(w, &st) != 0)
        return WSCTL_ERROR;
    static const char *const head[] = {"ID", "NAME", "STATE", "STARTED", "LEASE_UNTIL"};
    struct nodes_ctx x = {.w = w, .arr = w->json ? json_array() : NULL};
    if (!w->json)
        table_init(&x.t, 5, head);
    if (store_nodes_list(st, node_row, &x) < 0) {
        wsctl_errorf(w, "%s", store_last_error(st));
        store_close(st);
        if (x.arr)
            json_decref(x.arr);
        else
            table_release(&x.t);
        return WSCTL_ERROR;
    }
    store_close(st);
    if (x.arr)
        return wsctl_print_json(w, json_pack("{s:o}", "nodes", x.arr));
    table_print(&x.t, w->out);
    table_release(&x.t);
    return WSCTL_OK;
}
