/*
 * store_pg_cluster.c -- cluster mode's rows: the nodes with their leases, the sweep that ends a lost
 * node's sessions, and the cluster log nodes write for each other (read by store_pg_listen.c).
 *
 * Inside a transaction (the group commit) the log's rows are kept in memory and written in one
 * statement right before COMMIT: they are invisible to the other nodes until then anyway, and one
 * insert per note cost a statement each plus a NOTIFY trigger run each.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg_internal.h"

/* The advisory lock one sweeper at a time holds ("wsnode" in ASCII). */
#define PG_SWEEP_LOCK "126787524226917"
/* Cluster log rows older than this are pruned by the sweeper: listeners read them in milliseconds;
 * one that was away longer catches up from the tables (replay on reconnect), not from the log. */
#define PG_LOG_KEEP_MS (5 * 60 * 1000)

static const char SQL_NODE_JOIN[] =
    "INSERT INTO nodes (name, boot, started_at, lease_until, state)"
    " VALUES ($1::text, $2::bigint, $3::bigint, $4::bigint, 'up')"
    " ON CONFLICT (name) DO UPDATE SET boot = EXCLUDED.boot, started_at = EXCLUDED.started_at,"
    " lease_until = EXCLUDED.lease_until, state = 'up'"
    " RETURNING id";
static const char SQL_NODE_RENEW[] =
    "UPDATE nodes SET lease_until = $3::bigint"
    " WHERE id = $1::int AND boot = $2::bigint AND state = 'up'";
static const char SQL_NODE_LEAVE[] =
    "UPDATE nodes SET state = 'down', lease_until = $3::bigint"
    " WHERE id = $1::int AND boot = $2::bigint";
static const char SQL_SWEEP_LOCK[] = "SELECT pg_try_advisory_xact_lock(" PG_SWEEP_LOCK ")";
/*
 * One statement: nodes past their lease become lost, their open sessions end, their users'
 * presence is recounted from the sessions left. Data-modifying CTEs share one snapshot, so the
 * recount excludes the sessions this statement ends by id. One row at least (the count of nodes),
 * then one per ended session.
 */
static const char SQL_SWEEP[] =
    "WITH lost AS ("
    "  UPDATE nodes SET state = 'lost' WHERE state = 'up' AND lease_until < $1::bigint RETURNING id),"
    " ended AS ("
    "  UPDATE sessions SET ended_at = $1::bigint, end_reason = 'node_lost'"
    "  WHERE ended_at IS NULL AND node IN (SELECT id FROM lost)"
    "  RETURNING id, \"user\", node, last_seen_at),"
    " users AS (SELECT \"user\" AS name, max(last_seen_at) AS seen FROM ended GROUP BY \"user\"),"
    " counts AS (SELECT u.name, u.seen,"
    "  (SELECT count(*) FROM sessions s WHERE s.\"user\" = u.name AND s.ended_at IS NULL"
    "   AND s.id NOT IN (SELECT id FROM ended)) AS n FROM users u),"
    " pres AS ("
    "  UPDATE presence p SET connections = c.n,"
    "   state = CASE WHEN c.n > 0 THEN 'online' ELSE 'offline' END,"
    "   last_seen = GREATEST(p.last_seen, c.seen)"
    "  FROM counts c WHERE p.\"user\" = c.name RETURNING p.\"user\")"
    " SELECT (SELECT count(*) FROM lost), e.id, e.\"user\", e.node, c.n = 0,"
    "  GREATEST(e.last_seen_at, c.seen), (SELECT count(*) FROM pres)"
    " FROM (SELECT 1) one LEFT JOIN ended e ON true LEFT JOIN counts c ON c.name = e.\"user\""
    " ORDER BY e.id";
static const char SQL_LOG_PRUNE[] = "DELETE FROM cluster_log WHERE created_at < $1::bigint";
static const char SQL_NODES_LIST[] =
    "SELECT id, name, boot, started_at, lease_until, state FROM nodes ORDER BY id";
static const char SQL_NOTE[] =
    "INSERT INTO cluster_log (node, kind, target, ref, payload, created_at)"
    " VALUES ($1::int, $2::text, $3::text, $4::bigint, $5::text, $6::bigint)";
/* The kept rows at once, as arrays ($1-$6: SQL_NOTE's columns), written in the order they were
 * noted: ids follow it, and readers read a transaction's rows by id. */
static const char SQL_NOTES[] =
    "INSERT INTO cluster_log (node, kind, target, ref, payload, created_at)"
    " SELECT n, k, t, r, p, c FROM unnest($1::int[], $2::text[], $3::text[], $4::bigint[],"
    " $5::text[], $6::bigint[]) WITH ORDINALITY AS u (n, k, t, r, p, c, o) ORDER BY o";

/* A cluster log row kept until the transaction commits. */
struct pg_note {
    int64_t node, ref, created_at;
    const char *kind, *target, *payload; /* point into text */
    char text[];
};

int pg_node_join(struct store *st, const char *name, int64_t boot, int64_t lease_ms, int64_t now,
                 int64_t *node_id)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    *node_id = 0;
    if (!pg_name_ok(name) || lease_ms < 1)
        return pg_failf(pg, STORE_ERR_INVALID, "node join: a name and a lease are needed");
    if ((rc = pg_write_check(pg)) < 0)
        return rc;
    pgp_init(&p);
    pgp_text(&p, name);
    pgp_i64(&p, boot);
    pgp_i64(&p, now);
    pgp_i64(&p, now + lease_ms);
    if ((rc = pg_run(pg, SQL_NODE_JOIN, &p, &r, "node join")) < 0)
        return rc;
    *node_id = pg_i64(r, 0, 0);
    PQclear(r);
    pg->node_id = *node_id;
    pg->node_boot = boot;
    return 0;
}

int pg_node_renew(struct store *st, int64_t now, int64_t lease_ms, bool *lost)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    int64_t changed = 0;
    int rc;

    *lost = false;
    if (pg->node_id == 0)
        return pg_failf(pg, STORE_ERR_MISUSE, "node renew: store_node_join first");
    pgp_init(&p);
    pgp_i64(&p, pg->node_id);
    pgp_i64(&p, pg->node_boot);
    pgp_i64(&p, now + lease_ms);
    if ((rc = pg_write(pg, SQL_NODE_RENEW, &p, &changed, "node renew")) < 0)
        return rc;
    *lost = changed == 0;
    return 0;
}

int pg_node_leave(struct store *st, int64_t now)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;

    if (pg->node_id == 0)
        return 0;
    pgp_init(&p);
    pgp_i64(&p, pg->node_id);
    pgp_i64(&p, pg->node_boot);
    pgp_i64(&p, now);
    return pg_write(pg, SQL_NODE_LEAVE, &p, NULL, "node leave");
}

static int sweep_locked(struct store_pg *pg, int64_t now, store_lost_fn *cb, void *ctx, int *nodes)
{
    struct pg_params p;
    PGresult *r;
    int rc, stop = 0;

    if ((rc = pg_run(pg, SQL_SWEEP_LOCK, NULL, &r, "sweep lock")) < 0)
        return rc;
    bool mine = pg_bool(r, 0, 0);
    PQclear(r);
    if (!mine)
        return 0; /* another node sweeps now */
    pgp_init(&p);
    pgp_i64(&p, now);
    if ((rc = pg_run(pg, SQL_SWEEP, &p, &r, "sweep")) < 0)
        return rc;
    *nodes = (int)pg_i64(r, 0, 0);
    for (int i = 0; i < PQntuples(r) && !stop; i++) {
        if (PQgetisnull(r, i, 1))
            continue; /* no session ended (the one row that carries the count) */
        struct store_lost_session s = {
            .id = pg_i64(r, i, 1),
            .user = pg_text(r, i, 2),
            .node = pg_i64(r, i, 3),
            .user_offline = pg_bool(r, i, 4),
            .last_seen = pg_i64(r, i, 5),
        };
        if (cb)
            stop = cb(ctx, &s);
    }
    PQclear(r);
    if (stop)
        return stop;
    pgp_init(&p);
    pgp_i64(&p, now - PG_LOG_KEEP_MS);
    return pg_write(pg, SQL_LOG_PRUNE, &p, NULL, "cluster log prune");
}

int pg_node_sweep(struct store *st, int64_t now, store_lost_fn *cb, void *ctx, int *nodes)
{
    struct store_pg *pg = pg_of(st);
    bool own;
    int rc;

    *nodes = 0;
    /* The advisory lock is transaction-scoped: a savepoint inside the group commit, or a
     * transaction of its own. */
    if ((rc = pg_atomic_begin(st, &own)) < 0)
        return rc;
    rc = sweep_locked(pg, now, cb, ctx, nodes);
    return pg_atomic_end(st, own, rc);
}

int pg_nodes_list(struct store *st, store_node_fn *cb, void *ctx)
{
    struct store_pg *pg = pg_of(st);
    PGresult *r;
    int rc, stop = 0;

    if ((rc = pg_run(pg, SQL_NODES_LIST, NULL, &r, "nodes")) < 0)
        return rc;
    for (int i = 0; i < PQntuples(r) && !stop; i++) {
        struct store_node_info n = {
            .id = pg_i64(r, i, 0),
            .name = pg_text(r, i, 1),
            .boot = pg_i64(r, i, 2),
            .started_at = pg_i64(r, i, 3),
            .lease_until = pg_i64(r, i, 4),
            .state = pg_text(r, i, 5),
        };
        stop = cb(ctx, &n);
    }
    PQclear(r);
    return stop;
}

/* ---- The cluster log's rows of the open transaction ---- */

/* Keep one row for pg_log_flush (the write checks of pg_write first: they fail the same way). */
static int note_keep(struct store_pg *pg, const char *kind, const char *target, int64_t ref,
                     const char *payload, int64_t now)
{
    int rc;

    if ((rc = pg_write_check(pg)) < 0)
        return rc;
    if (pg->nnotes == pg->notes_cap) {
        size_t cap = pg->notes_cap ? pg->notes_cap * 2 : 64;
        struct pg_note **v = realloc(pg->notes, cap * sizeof *v);
        if (!v)
            return pg_failf(pg, STORE_ERR_NOMEM, "cluster note: out of memory");
        pg->notes = v;
        pg->notes_cap = cap;
    }
    size_t lk = strlen(kind) + 1, lt = target ? strlen(target) + 1 : 0;
    size_t lp = payload ? strlen(payload) + 1 : 0;
    struct pg_note *n = malloc(sizeof *n + lk + lt + lp);
    if (!n)
        return pg_failf(pg, STORE_ERR_NOMEM, "cluster note: out of memory");
    n->node = pg->node_id;
    n->ref = ref;
    n->created_at = now;
    char *t = n->text;
    n->kind = memcpy(t, kind, lk);
    t += lk;
    n->target = target ? memcpy(t, target, lt) : NULL;
    t += lt;
    n->payload = payload ? memcpy(t, payload, lp) : NULL;
    pg->notes[pg->nnotes++] = n;
    return 0;
}

void pg_log_drop(struct store_pg *pg, size_t keep)
{
    while (pg->nnotes > keep)
        free(pg->notes[--pg->nnotes]);
}

int pg_log_flush(struct store_pg *pg)
{
    struct pg_array arr[6]; /* SQL_NOTES's parameters, in order */
    struct pg_params p;
    int rc = 0;

    if (pg->nnotes == 0)
        return 0;
    for (int i = 0; i < 6; i++)
        pga_init(&arr[i]);
    for (size_t i = 0; i < pg->nnotes; i++) {
        const struct pg_note *n = pg->notes[i];
        pga_i64(&arr[0], n->node);
        pga_text(&arr[1], n->kind);
        pga_text(&arr[2], n->target);
        pga_i64(&arr[3], n->ref);
        pga_text(&arr[4], n->payload);
        pga_i64(&arr[5], n->created_at);
    }
    pgp_init(&p);
    for (int i = 0; i < 6; i++) {
        const char *v = pga_done(&arr[i]);
        if (!v)
            rc = pg_failf(pg, STORE_ERR_NOMEM, "cluster notes: out of memory");
        pgp_text(&p, v);
    }
    if (rc == 0)
        rc = pg_write(pg, SQL_NOTES, &p, NULL, "cluster notes");
    for (int i = 0; i < 6; i++)
        pga_free(&arr[i]);
    if (rc == 0)
        pg_log_drop(pg, 0);
    return rc;
}

int pg_log_savepoint(struct store_pg *pg)
{
    int depth = pg->savepoints;

    if (depth >= pg->note_marks_cap) {
        int cap = pg->note_marks_cap ? pg->note_marks_cap * 2 : 4;
        size_t *v = realloc(pg->note_marks, (size_t)cap * sizeof *v);
        if (!v)
            return pg_failf(pg, STORE_ERR_NOMEM, "savepoint: out of memory");
        pg->note_marks = v;
        pg->note_marks_cap = cap;
    }
    pg->note_marks[depth] = pg->nnotes;
    return 0;
}

void pg_log_savepoint_end(struct store_pg *pg, bool undone)
{
    if (undone && pg->savepoints < pg->note_marks_cap)
        pg_log_drop(pg, pg->note_marks[pg->savepoints]);
}

/* ---- Notes ---- */

int pg_cluster_note(struct store *st, const char *kind, const char *target, int64_t ref,
                    const char *payload, int64_t now)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;

    if (!pg_name_ok(kind))
        return pg_failf(pg, STORE_ERR_INVALID, "cluster note: no kind");
    if (pg->node_id == 0)
        return pg_failf(pg, STORE_ERR_MISUSE, "cluster note: store_node_join first");
    if (pg->txn)
        return note_keep(pg, kind, target, ref, payload, now);
    pgp_init(&p);
    pgp_i64(&p, pg->node_id);
    pgp_text(&p, kind);
    pgp_text(&p, target);
    pgp_i64(&p, ref);
    pgp_text(&p, payload);
    pgp_i64(&p, now);
    return pg_write(pg, SQL_NOTE, &p, NULL, "cluster note");
}
