/*
 * store_outbox.c -- the events outbox: events queued in the transaction of the change they describe,
 * taken in batches that keep each user's order, delivered, retried with backoff, or dead-lettered.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

#define OUTBOX_COLS "id, user, type, created_at, payload, attempts, queued_at, next_at, state, last_error"

const struct store_sql store_sql_outbox[] = {
    {STMT_OUTBOX_ADD, false,
     "INSERT INTO outbox (user, type, created_at, payload, queued_at, next_at)"
     " VALUES (?1, ?2, ?3, ?4, ?3, ?3)"},
    /* NULL when nothing is queued; else newest id - oldest queued id + 1 (two index lookups) */
    {STMT_OUTBOX_SPAN, false,
     "SELECT (SELECT max(id) FROM outbox) - (SELECT min(id) FROM outbox WHERE state = 'queued') + 1"},
    {STMT_OUTBOX_SCAN, false,
     "SELECT " OUTBOX_COLS " FROM outbox WHERE state = 'queued' ORDER BY id LIMIT ?1"},
    {STMT_OUTBOX_LEASE, false,
     "UPDATE outbox SET attempts = attempts + 1, next_at = ?2 WHERE id = ?1 AND state = 'queued'"},
    {STMT_OUTBOX_DELIVERED, false,
     "UPDATE outbox SET state = 'delivered', delivered_at = ?2, last_error = NULL"
     " WHERE id = ?1 AND state <> 'delivered'"},
    {STMT_OUTBOX_RETRY, false,
     "UPDATE outbox SET next_at = ?2, last_error = ?3,"
     " state = CASE WHEN queued_at < ?4 THEN 'dead' ELSE 'queued' END"
     " WHERE id = ?1 AND state = 'queued' RETURNING state = 'dead'"},
    {STMT_OUTBOX_EXPIRE, false,
     "UPDATE outbox SET state = 'dead', last_error = coalesce(last_error || '; ', '') || 'max age'"
     " WHERE id IN (SELECT id FROM outbox WHERE state = 'queued' AND queued_at < ?1"
     " ORDER BY queued_at LIMIT ?2)"},
    {STMT_OUTBOX_PRUNE, false,
     "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state = 'delivered'"
     " AND delivered_at < ?1 ORDER BY delivered_at LIMIT ?2)"},
    {STMT_OUTBOX_DEAD_LIST, false,
     "SELECT " OUTBOX_COLS " FROM outbox WHERE state = 'dead' AND id > ?1 ORDER BY id LIMIT ?2"},
    {STMT_OUTBOX_REPLAY_ONE, false,
     "UPDATE outbox SET state = 'queued', attempts = 0, queued_at = ?2, next_at = ?2"
     " WHERE id = ?1 AND state = 'dead'"},
    {STMT_OUTBOX_REPLAY_ALL, false,
     "UPDATE outbox SET state = 'queued', attempts = 0, queued_at = ?2, next_at = ?2"
     " WHERE id IN (SELECT id FROM outbox WHERE state = 'dead' ORDER BY id LIMIT ?1)"},
    /* admin and /metrics only: counts walk the partial indexes */
    {STMT_OUTBOX_COUNTS, true,
     "SELECT (SELECT count(*) FROM outbox WHERE state = 'queued'),"
     " (SELECT count(*) FROM outbox WHERE state = 'dead'),"
     " (SELECT count(*) FROM outbox WHERE state = 'delivered'),"
     " coalesce((SELECT min(queued_at) FROM outbox WHERE state = 'queued'), 0)"},
    {STMT_COUNT, false, NULL},
};

static void event_from_row(sqlite3_stmt *s, struct store_event *e)
{
    e->id = sqlite3_column_int64(s, 0);
    e->user = store_col_text(s, 1);
    e->type = store_col_text(s, 2);
    e->created_at = sqlite3_column_int64(s, 3);
    e->payload = store_col_text(s, 4);
    e->attempts = sqlite3_column_int(s, 5);
    e->queued_at = sqlite3_column_int64(s, 6);
    e->next_at = sqlite3_column_int64(s, 7);
    e->state = store_col_text(s, 8);
    e->last_error = store_col_text(s, 9);
}

int store_outbox_add(struct store *st, const char *user, const char *type, const char *payload,
                     int64_t now, int64_t max_queued, int64_t *id)
{
    sqlite3_stmt *s;
    int rc;

    if (!store_name_ok(user) || !store_name_ok(type) || !store_name_ok(payload))
        return store_failf(st, STORE_ERR_INVALID, "outbox add: user, type and payload needed");
    if ((rc = store_write_check(st)) < 0)
        return rc;
    if (max_queued > 0) {
        s = st->stmt[STMT_OUTBOX_SPAN];
        rc = sqlite3_step(s);
        int64_t span = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        store_stmt_done(s);
        if (rc != SQLITE_ROW)
            return store_fail(st, rc, "outbox size");
        if (span >= max_queued)
            return store_failf(st, STORE_ERR_FULL,
                               "outbox full: %lld events queued (max_outbox %lld); the backend "
                               "is not taking events", (long long)span, (long long)max_queued);
    }
    s = st->stmt[STMT_OUTBOX_ADD];
    if (store_bind_text(s, 1, user) || store_bind_text(s, 2, type) ||
        sqlite3_bind_int64(s, 3, now) || store_bind_text(s, 4, payload))
        return store_bind_fail(st, s, "outbox add");
    if ((rc = store_exec_stmt(st, s, "outbox add")) < 0)
        return rc;
    if (id)
        *id = sqlite3_last_insert_rowid(st->db);
    return 0;
}

/* ---- take: a batch in per-user order ---- */

/* A set of user-name hashes. A collision blocks one more user than needed: a delay, never disorder. */
struct user_set {
    uint64_t *slot; /* 0 = empty */
    size_t mask;
};

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211u;
    return h ? h : 1;
}

static bool set_has(const struct user_set *u, uint64_t h)
{
    for (size_t i = h & u->mask; u->slot[i]; i = (i + 1) & u->mask)
        if (u->slot[i] == h)
            return true;
    return false;
}

static void set_add(struct user_set *u, uint64_t h)
{
    size_t i = h & u->mask;
    while (u->slot[i] && u->slot[i] != h)
        i = (i + 1) & u->mask;
    u->slot[i] = h;
}

int store_outbox_take(struct store *st, int64_t now, const struct store_outbox_take *lim,
                      store_event_fn *cb, void *ctx, int *taken)
{
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_SCAN];
    struct user_set blocked = {0};
    int64_t *ids = NULL;
    int n = 0, rc, stop = 0;
    size_t bytes = 0, cap = 16;

    if (taken)
        *taken = 0;
    if (!lim || lim->max_count < 1 || lim->max_scan < lim->max_count || !cb)
        return store_failf(st, STORE_ERR_INVALID, "outbox take: max_count >= 1, max_scan >= it");
    if ((rc = store_write_check(st)) < 0)
        return rc;
    while (cap < (size_t)lim->max_scan * 2)
        cap *= 2;
    blocked.mask = cap - 1;
    blocked.slot = calloc(cap, sizeof(*blocked.slot));
    ids = malloc((size_t)lim->max_count * sizeof(*ids));
    if (!blocked.slot || !ids) {
        free(blocked.slot);
        free(ids);
        return store_failf(st, STORE_ERR_NOMEM, "outbox take: out of memory");
    }
    sqlite3_bind_int(s, 1, lim->max_scan);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_event e;
        event_from_row(s, &e);
        if (!e.user || !e.payload)
            continue;
        uint64_t h = name_hash(e.user);
        if (set_has(&blocked, h))
            continue;
        size_t size = strlen(e.payload) + strlen(e.user) + 64;
        if (e.next_at > now) {
            set_add(&blocked, h); /* its later events wait for it */
            continue;
        }
        if (n > 0 && bytes + size > lim->max_bytes)
            break;
        bytes += size;
        ids[n++] = e.id;
        e.attempts++;
        e.next_at = lim->lease_until;
        if ((stop = cb(ctx, &e)) != 0 || n == lim->max_count)
            break;
    }
    store_stmt_done(s);
    free(blocked.slot);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        free(ids);
        return store_fail(st, rc, "outbox take");
    }
    /* Lease what the callback saw, atomically, so a partial write never splits a batch. */
    bool own = false;
    if (n > 0 && (rc = store_atomic_begin(st, &own)) == 0) {
        sqlite3_stmt *u = st->stmt[STMT_OUTBOX_LEASE];
        for (int i = 0; i < n && rc == 0; i++) {
            sqlite3_bind_int64(u, 1, ids[i]);
            sqlite3_bind_int64(u, 2, lim->lease_until);
            rc = store_exec_stmt(st, u, "outbox lease");
        }
        rc = store_atomic_end(st, own, rc);
    }
    free(ids);
    if (rc < 0)
        return rc;
    if (taken)
        *taken = n;
    return stop;
}

static int each_id(struct store *st, enum store_stmt_id sid, const int64_t *ids, size_t n,
                   int64_t t, const char *what)
{
    bool own = false;
    int rc = store_write_check(st);
    if (rc < 0 || n == 0)
        return rc;
    if ((rc = store_atomic_begin(st, &own)) < 0)
        return rc;
    sqlite3_stmt *s = st->stmt[sid];
    for (size_t i = 0; i < n && rc == 0; i++) {
        sqlite3_bind_int64(s, 1, ids[i]);
        sqlite3_bind_int64(s, 2, t);
        rc = store_exec_stmt(st, s, what);
    }
    return store_atomic_end(st, own, rc);
}

int store_outbox_delivered(struct store *st, const int64_t *ids, size_t n, int64_t now)
{
    return each_id(st, STMT_OUTBOX_DELIVERED, ids, n, now, "outbox delivered");
}

int store_outbox_retry(struct store *st, const int64_t *ids, size_t n, int64_t next_at,
                       int64_t dead_before, const char *error, int *dead)
{
    bool own = false;
    int rc = store_write_check(st), died = 0;
    if (dead)
        *dead = 0;
    if (rc < 0 || n == 0)
        return rc;
    if ((rc = store_atomic_begin(st, &own)) < 0)
        return rc;
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_RETRY];
    for (size_t i = 0; i < n && rc == 0; i++) {
        sqlite3_bind_int64(s, 1, ids[i]);
        sqlite3_bind_int64(s, 2, next_at);
        if (store_bind_text(s, 3, error)) {
            rc = store_bind_fail(st, s, "outbox retry");
            break;
        }
        sqlite3_bind_int64(s, 4, dead_before);
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW) {
            died += sqlite3_column_int(s, 0);
            r = sqlite3_step(s);
        }
        store_stmt_done(s);
        if (r != SQLITE_DONE)
            rc = store_fail(st, r, "outbox retry");
    }
    rc = store_atomic_end(st, own, rc);
    if (rc == 0 && dead)
        *dead = died;
    return rc;
}

/* A bounded UPDATE/DELETE with (?1 time, ?2 limit) whose change count is the answer. */
static int bounded(struct store *st, enum store_stmt_id sid, int64_t t, int limit, int64_t *count,
                   const char *what)
{
    sqlite3_stmt *s = st->stmt[sid];
    int rc;
    if (count)
        *count = 0;
    if (limit < 1)
        return store_failf(st, STORE_ERR_INVALID, "%s: limit >= 1 needed", what);
    if ((rc = store_write_check(st)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, t);
    sqlite3_bind_int(s, 2, limit);
    if ((rc = store_exec_stmt(st, s, what)) < 0)
        return rc;
    if (count)
        *count = sqlite3_changes(st->db);
    return 0;
}

int store_outbox_expire(struct store *st, int64_t dead_before, int limit, int64_t *count)
{
    return bounded(st, STMT_OUTBOX_EXPIRE, dead_before, limit, count, "outbox expire");
}

int store_outbox_prune(struct store *st, int64_t before, int limit, int64_t *count)
{
    return bounded(st, STMT_OUTBOX_PRUNE, before, limit, count, "outbox prune");
}

int store_outbox_dead_list(struct store *st, int64_t after_id, int limit, store_event_fn *cb,
                           void *ctx)
{
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_DEAD_LIST];
    int rc, stop = 0;

    if (limit < 1 || !cb)
        return store_failf(st, STORE_ERR_INVALID, "outbox dead list: limit >= 1 and a callback");
    sqlite3_bind_int64(s, 1, after_id);
    sqlite3_bind_int(s, 2, limit);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_event e;
        event_from_row(s, &e);
        if ((stop = cb(ctx, &e)) != 0)
            break;
    }
    store_stmt_done(s);
    if (stop)
        return stop;
    return rc == SQLITE_DONE ? 0 : store_fail(st, rc, "outbox dead list");
}

int store_outbox_replay(struct store *st, int64_t id, int limit, int64_t now, int64_t *count)
{
    int rc;
    if (count)
        *count = 0;
    if (id == 0) {
        /* REPLAY_ALL binds (?1 limit, ?2 now): the reverse of bounded()'s order */
        sqlite3_stmt *s = st->stmt[STMT_OUTBOX_REPLAY_ALL];
        if (limit < 1)
            return store_failf(st, STORE_ERR_INVALID, "outbox replay: limit >= 1 needed");
        if ((rc = store_write_check(st)) < 0)
            return rc;
        sqlite3_bind_int(s, 1, limit);
        sqlite3_bind_int64(s, 2, now);
        if ((rc = store_exec_stmt(st, s, "outbox replay")) < 0)
            return rc;
        if (count)
            *count = sqlite3_changes(st->db);
        return 0;
    }
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_REPLAY_ONE];
    if ((rc = store_write_check(st)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, now);
    if ((rc = store_exec_stmt(st, s, "outbox replay")) < 0)
        return rc;
    if (sqlite3_changes(st->db) == 0)
        return store_failf(st, STORE_ERR_NOTFOUND, "no dead event %lld", (long long)id);
    if (count)
        *count = 1;
    return 0;
}

int store_outbox_counts(struct store *st, struct store_outbox_counts *out)
{
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_COUNTS];
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        out->queued = sqlite3_column_int64(s, 0);
        out->dead = sqlite3_column_int64(s, 1);
        out->delivered = sqlite3_column_int64(s, 2);
        out->oldest_queued_at = sqlite3_column_int64(s, 3);
        rc = 0;
    } else {
        rc = store_fail(st, rc, "outbox counts");
    }
    store_stmt_done(s);
    return rc;
}
