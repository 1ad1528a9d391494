/*
 * store_outbox.c -- the events outbox: events queued in the transaction of the change they describe,
 * scanned in id order by the sender (which keeps its own in-memory lease and per-user order), deleted
 * once delivered, retried with backoff, or moved to the dead letters (outbox_dead).
 *
 * The outbox holds only events still to deliver and has no index beyond its rowid: each event costs
 * one insert and one delete (migrations/0005_outbox_lean.sql). The sender may post what it scans
 * before the loop's open transaction commits, so a scan never shows an event added in a transaction
 * that is still open (st->outbox_unseen_from).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

#define OUTBOX_COLS "id, user, type, created_at, payload, attempts, queued_at, next_at, last_error"
#define DEAD_COLS "id, user, type, created_at, payload, attempts, queued_at, died_at, last_error"
/* Expiry looks at this many of the oldest queued events per limit (no index on queued_at). */
#define EXPIRE_WINDOW 8

const struct store_sql store_sql_outbox[] = {
    {STMT_OUTBOX_ADD, false,
     "INSERT INTO outbox (user, type, created_at, payload, queued_at, next_at)"
     " VALUES (?1, ?2, ?3, ?4, ?3, ?3)"},
    /* NULL when nothing is queued; else newest id - oldest id + 1 (two rowid lookups) */
    {STMT_OUTBOX_SPAN, false, "SELECT (SELECT max(id) FROM outbox) - (SELECT min(id) FROM outbox) + 1"},
    {STMT_OUTBOX_SCAN, false,
     "SELECT " OUTBOX_COLS " FROM outbox WHERE id < ?2 AND id > ?3 ORDER BY id LIMIT ?1"},
    {STMT_OUTBOX_DELETE, false, "DELETE FROM outbox WHERE id = ?1"},
    {STMT_OUTBOX_DELETE_RANGE, false, "DELETE FROM outbox WHERE id >= ?1 AND id <= ?2"},
    {STMT_OUTBOX_DELETE_DEAD, false, "DELETE FROM outbox_dead WHERE id = ?1"},
    {STMT_OUTBOX_RETRY, false,
     "UPDATE outbox SET attempts = attempts + 1, next_at = ?2, last_error = ?3"
     " WHERE id = ?1 RETURNING queued_at < ?4"},
    {STMT_OUTBOX_BURY, false,
     "INSERT INTO outbox_dead (" DEAD_COLS ") SELECT id, user, type, created_at, payload, attempts,"
     " queued_at, ?2, coalesce(?3, last_error) FROM outbox WHERE id = ?1"},
    /* the oldest queued events by id (a window bounded by ?3), those queued before ?1 */
    {STMT_OUTBOX_EXPIRED, true,
     "SELECT id FROM (SELECT id, queued_at FROM outbox ORDER BY id LIMIT ?3)"
     " WHERE queued_at < ?1 LIMIT ?2"},
    {STMT_OUTBOX_DEAD_LIST, false,
     "SELECT " DEAD_COLS " FROM outbox_dead WHERE id > ?1 ORDER BY id LIMIT ?2"},
    {STMT_OUTBOX_REPLAY_ONE, false,
     "INSERT INTO outbox (" OUTBOX_COLS ") SELECT id, user, type, created_at, payload, 0, ?2, ?2,"
     " last_error FROM outbox_dead WHERE id = ?1"},
    /* the oldest ?1 dead letters: a rowid walk that stops at the LIMIT */
    {STMT_OUTBOX_REPLAY_ALL, true,
     "INSERT INTO outbox (" OUTBOX_COLS ") SELECT id, user, type, created_at, payload, 0, ?2, ?2,"
     " last_error FROM outbox_dead ORDER BY id LIMIT ?1"},
    {STMT_OUTBOX_UNDEAD_ALL, true,
     "DELETE FROM outbox_dead WHERE id IN (SELECT id FROM outbox_dead ORDER BY id LIMIT ?1)"},
    /* admin and /metrics only: the counts walk each table's pages; the oldest looks at 1,000 rows */
    {STMT_OUTBOX_COUNTS, true,
     "SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM outbox_dead),"
     " coalesce((SELECT min(queued_at) FROM (SELECT queued_at FROM outbox ORDER BY id LIMIT 1000)),"
     " 0)"},
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
    e->last_error = store_col_text(s, 8);
}

void store_outbox_txn_over(struct store *st)
{
    st->outbox_unseen_from = 0;
}

int sq_outbox_add(struct store *st, const char *user, const char *type, const char *payload,
                     int64_t now, int64_t max_queued, int64_t *id)
{
    sqlite3_stmt *s;
    int rc;

    if (!store_name_ok(user) || !store_name_ok(type) || !store_name_ok(payload))
        return store_failf(st, STORE_ERR_INVALID, "outbox add: user, type and payload needed");
    if ((rc = store_write_check(st)) < 0)
        return rc;
    /* The span grows by one per insert at most (a replay resets the count): look it up only when
     * the inserts since the last look could have reached the bound. */
    if (max_queued != st->outbox_room_bound) {
        st->outbox_room = 0;
        st->outbox_room_bound = max_queued;
    }
    if (max_queued > 0 && st->outbox_room-- <= 0) {
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
        st->outbox_room = max_queued - span - 1 < 4096 ? max_queued - span - 1 : 4096;
    }
    s = st->stmt[STMT_OUTBOX_ADD];
    if (store_bind_text(s, 1, user) || store_bind_text(s, 2, type) ||
        sqlite3_bind_int64(s, 3, now) || store_bind_text(s, 4, payload))
        return store_bind_fail(st, s, "outbox add");
    if ((rc = store_exec_stmt(st, s, "outbox add")) < 0)
        return rc;
    int64_t new_id = sqlite3_last_insert_rowid(st->db);
    /* In an open transaction: hidden from scans until it ends (ids only grow: AUTOINCREMENT). */
    if (!sqlite3_get_autocommit(st->db) && st->outbox_unseen_from == 0)
        st->outbox_unseen_from = new_id;
    if (id)
        *id = new_id;
    return 0;
}

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

int sq_outbox_scan(struct store *st, int64_t now, int max_rows, store_event_fn *cb,
                      bool (*skip)(void *ctx, int64_t id), void *ctx)
{
    int64_t after = 0;
    return sq_outbox_scan_after(st, now, &after, max_rows, cb, skip, ctx);
}

uint64_t sq_outbox_replays(const struct store *st)
{
    return st->outbox_replays;
}

int sq_outbox_scan_after(struct store *st, int64_t now, int64_t *after, int max_rows,
                            store_event_fn *cb, bool (*skip)(void *ctx, int64_t id), void *ctx)
{
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_SCAN];
    struct user_set blocked = {0}; /* users whose later events wait (at most max_rows of them) */
    size_t cap = 16;
    int rc;

    if (max_rows < 1 || !cb)
        return store_failf(st, STORE_ERR_INVALID, "outbox scan: max_rows >= 1 and a callback");
    while (cap < (size_t)max_rows * 2)
        cap *= 2;
    blocked.mask = cap - 1;
    if (!(blocked.slot = calloc(cap, sizeof(*blocked.slot))))
        return store_failf(st, STORE_ERR_NOMEM, "outbox scan: out of memory");
    sqlite3_bind_int(s, 1, max_rows);
    /* no transaction open (SQLite may have rolled one back after an error): everything is visible */
    bool hide = st->outbox_unseen_from > 0 && !sqlite3_get_autocommit(st->db);
    sqlite3_bind_int64(s, 2, hide ? st->outbox_unseen_from : INT64_MAX);
    sqlite3_bind_int64(s, 3, *after);
    bool prefix = true; /* every row so far was passed over by skip or taken: *after moves */
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_event e;
        int64_t id = sqlite3_column_int64(s, 0);
        /* the caller's own (in flight): passed over before any other column is read */
        if (skip && skip(ctx, id)) {
            if (prefix)
                *after = id;
            continue;
        }
        bool prefix_before_take = prefix;
        prefix = false; /* unless taken, below */
        event_from_row(s, &e);
        if (!e.user || !e.payload)
            continue;
        uint64_t h = name_hash(e.user);
        if (set_has(&blocked, h))
            continue;
        int verdict = e.next_at > now ? STORE_SCAN_SKIP : cb(ctx, &e);
        if (verdict == STORE_SCAN_SKIP)
            set_add(&blocked, h);
        else if (verdict != STORE_SCAN_TAKE)
            break;
        else if ((prefix = prefix_before_take)) /* taken: in flight from now on */
            *after = id;
    }
    store_stmt_done(s);
    free(blocked.slot);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_fail(st, rc, "outbox scan");
    return 0;
}

static int exec_id(struct store *st, enum store_stmt_id sid, int64_t id, const char *what)
{
    sqlite3_stmt *s = st->stmt[sid];
    sqlite3_bind_int64(s, 1, id);
    return store_exec_stmt(st, s, what);
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int sq_outbox_delivered(struct store *st, const int64_t *ids, size_t n)
{
    bool own = false;
    int64_t *sorted;
    int rc = store_write_check(st);
    if (rc < 0 || n == 0)
        return rc;
    if (!(sorted = malloc(n * sizeof(*sorted))))
        return store_failf(st, STORE_ERR_NOMEM, "outbox delivered: out of memory");
    memcpy(sorted, ids, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), cmp_id);
    if ((rc = sq_atomic_begin(st, &own)) < 0) {
        free(sorted);
        return rc;
    }
    /* One DELETE per run of consecutive ids (a batch is mostly one run): every id of a run is ours. */
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_DELETE_RANGE];
    for (size_t i = 0, j; i < n && rc == 0; i = j) {
        for (j = i + 1; j < n && sorted[j] == sorted[j - 1] + 1; j++)
            ;
        sqlite3_bind_int64(s, 1, sorted[i]);
        sqlite3_bind_int64(s, 2, sorted[j - 1]);
        if ((rc = store_exec_stmt(st, s, "outbox delivered")) < 0 ||
            sqlite3_changes(st->db) == (int)(j - i))
            continue;
        /* some went dead while their batch was in flight: the backend has them after all */
        for (size_t k = i; k < j && rc == 0; k++)
            rc = exec_id(st, STMT_OUTBOX_DELETE_DEAD, sorted[k], "outbox delivered");
    }
    free(sorted);
    return sq_atomic_end(st, own, rc);
}

/* Move a queued event to the dead letters (error: its last error, NULL keeps the one it has). */
static int bury(struct store *st, int64_t id, int64_t now, const char *error)
{
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_BURY];
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, now);
    if (store_bind_text(s, 3, error))
        return store_bind_fail(st, s, "outbox dead");
    int rc = store_exec_stmt(st, s, "outbox dead");
    return rc < 0 ? rc : exec_id(st, STMT_OUTBOX_DELETE, id, "outbox dead");
}

int sq_outbox_retry(struct store *st, const int64_t *ids, size_t n, int64_t now, int64_t next_at,
                       int64_t dead_before, const char *error, int *dead)
{
    bool own = false;
    int rc = store_write_check(st), died = 0;
    if (dead)
        *dead = 0;
    if (rc < 0 || n == 0)
        return rc;
    if ((rc = sq_atomic_begin(st, &own)) < 0)
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
        int r = sqlite3_step(s), expired = 0;
        if (r == SQLITE_ROW) { /* no row: it went dead (expiry) while in flight */
            expired = sqlite3_column_int(s, 0);
            r = sqlite3_step(s);
        }
        store_stmt_done(s);
        if (r != SQLITE_DONE)
            rc = store_fail(st, r, "outbox retry");
        else if (expired && (rc = bury(st, ids[i], now, NULL)) == 0)
            died++;
    }
    rc = sq_atomic_end(st, own, rc);
    if (rc == 0 && dead)
        *dead = died;
    return rc;
}

int sq_outbox_expire(struct store *st, int64_t dead_before, int64_t now, int limit,
                        int64_t *count)
{
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_EXPIRED];
    int64_t *ids;
    int n = 0, rc;
    bool own = false;

    if (count)
        *count = 0;
    if (limit < 1)
        return store_failf(st, STORE_ERR_INVALID, "outbox expire: limit >= 1 needed");
    if ((rc = store_write_check(st)) < 0)
        return rc;
    if (!(ids = malloc((size_t)limit * sizeof(*ids))))
        return store_failf(st, STORE_ERR_NOMEM, "outbox expire: out of memory");
    sqlite3_bind_int64(s, 1, dead_before);
    sqlite3_bind_int(s, 2, limit);
    sqlite3_bind_int64(s, 3, (int64_t)limit * EXPIRE_WINDOW);
    while (n < limit && (rc = sqlite3_step(s)) == SQLITE_ROW)
        ids[n++] = sqlite3_column_int64(s, 0);
    store_stmt_done(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        free(ids);
        return store_fail(st, rc, "outbox expire");
    }
    rc = 0;
    if (n > 0 && (rc = sq_atomic_begin(st, &own)) == 0) {
        for (int i = 0; i < n && rc == 0; i++)
            rc = bury(st, ids[i], now, "max age");
        rc = sq_atomic_end(st, own, rc);
    }
    free(ids);
    if (rc == 0 && count)
        *count = n;
    return rc;
}

int sq_outbox_dead_list(struct store *st, int64_t after_id, int limit, store_event_fn *cb,
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

int sq_outbox_replay(struct store *st, int64_t id, int limit, int64_t now, int64_t *count)
{
    bool own = false;
    int64_t n = 0;
    int rc;

    if (count)
        *count = 0;
    if (id == 0 && limit < 1)
        return store_failf(st, STORE_ERR_INVALID, "outbox replay: limit >= 1 needed");
    if ((rc = sq_atomic_begin(st, &own)) < 0)
        return rc;
    st->outbox_room = 0; /* old ids come back: the span may jump, and scans must see them */
    st->outbox_replays++;
    /* Copy back with the same ids (below any new one, so visible to scans at once), then delete. */
    sqlite3_stmt *s = st->stmt[id ? STMT_OUTBOX_REPLAY_ONE : STMT_OUTBOX_REPLAY_ALL];
    sqlite3_bind_int64(s, 1, id ? id : limit);
    sqlite3_bind_int64(s, 2, now);
    if ((rc = store_exec_stmt(st, s, "outbox replay")) == 0) {
        n = sqlite3_changes(st->db);
        if (id)
            rc = exec_id(st, STMT_OUTBOX_DELETE_DEAD, id, "outbox replay");
        else
            rc = exec_id(st, STMT_OUTBOX_UNDEAD_ALL, limit, "outbox replay");
    }
    if (rc == 0 && id && n == 0)
        rc = store_failf(st, STORE_ERR_NOTFOUND, "no dead event %lld", (long long)id);
    if ((rc = sq_atomic_end(st, own, rc)) < 0)
        return rc;
    if (count)
        *count = n;
    return 0;
}

int sq_outbox_counts(struct store *st, struct store_outbox_counts *out)
{
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_COUNTS];
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        out->queued = sqlite3_column_int64(s, 0);
        out->dead = sqlite3_column_int64(s, 1);
        out->oldest_queued_at = sqlite3_column_int64(s, 2);
        rc = 0;
    } else {
        rc = store_fail(st, rc, "outbox counts");
    }
    store_stmt_done(s);
    return rc;
}
