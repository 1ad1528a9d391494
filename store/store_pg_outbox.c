/*
 * store_pg_outbox.c -- the events outbox on PostgreSQL (the SQLite twin: store_outbox.c, same
 * contract in store.h): events queued in the transaction of the change they describe, scanned in id
 * order by the sender, deleted once delivered, retried with backoff or moved to the dead letters.
 *
 * Every call is a network round trip, so each operation is one statement where it can be: a move
 * to the dead letters is a DELETE .. RETURNING feeding an INSERT in the same statement (atomic by
 * itself, no savepoint), a retry handles its whole batch in one statement (an id array), a delivery
 * deletes each run of consecutive ids with one statement (with the dead letters of that range, had
 * one died in flight). A scan never shows an event added in the transaction still open
 * (pg->outbox_unseen_from): the sender may post what it sees before that transaction commits.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg_internal.h"

#define OUTBOX_COLS "id, \"user\", type, created_at, payload, attempts, queued_at, next_at, last_error"
#define DEAD_COLS "id, \"user\", type, created_at, payload, attempts, queued_at, died_at, last_error"
/* Expiry looks at this many of the oldest queued events per limit (no index on queued_at). */
#define EXPIRE_WINDOW 8

static const char SQL_OUTBOX_ADD[] =
    "INSERT INTO outbox (\"user\", type, created_at, payload, queued_at, next_at)"
    " VALUES ($1, $2, $3::bigint, $4, $3::bigint, $3::bigint) RETURNING id";
/* NULL when nothing is queued; else newest id - oldest id + 1 (two primary-key index probes) */
static const char SQL_OUTBOX_SPAN[] = "SELECT max(id) - min(id) + 1 FROM outbox";
static const char SQL_OUTBOX_SCAN[] =
    "SELECT " OUTBOX_COLS " FROM outbox WHERE id < $2::bigint AND id > $3::bigint"
    " ORDER BY id LIMIT $1::bigint";
/* one run of consecutive ids (every one the caller's): queued, or dead had it died in flight */
static const char SQL_OUTBOX_DELIVERED[] =
    "WITH dead AS (DELETE FROM outbox_dead WHERE id >= $1::bigint AND id <= $2::bigint)"
    " DELETE FROM outbox WHERE id >= $1::bigint AND id <= $2::bigint";
/*
 * A failed batch ($1: an id array): those queued before $4 move to the dead letters (at $5), the
 * others get attempts + 1, due at $2, last error $3. Disjoint rows, so no row is changed twice in
 * the statement. Ids no longer queued (delivered, or expired in flight) are left alone.
 */
static const char SQL_OUTBOX_RETRY[] =
    "WITH moved AS (DELETE FROM outbox WHERE id = ANY($1::bigint[]) AND queued_at < $4::bigint"
    "   RETURNING id, \"user\", type, created_at, payload, attempts, queued_at),"
    " buried AS (INSERT INTO outbox_dead (" DEAD_COLS ")"
    "   SELECT id, \"user\", type, created_at, payload, attempts + 1, queued_at, $5::bigint, $3::text"
    "   FROM moved RETURNING id),"
    " later AS (UPDATE outbox SET attempts = attempts + 1, next_at = $2::bigint, last_error = $3::text"
    "   WHERE id = ANY($1::bigint[]) AND queued_at >= $4::bigint RETURNING id)"
    " SELECT (SELECT count(*) FROM buried), (SELECT count(*) FROM later)";
/* the oldest queued events by id (a window of $3), those queued before $1, at most $2 of them,
 * moved to the dead letters at $4 with "max age" */
static const char SQL_OUTBOX_EXPIRE[] =
    "WITH old AS (SELECT id FROM (SELECT id, queued_at FROM outbox ORDER BY id LIMIT $3::bigint) w"
    "   WHERE queued_at < $1::bigint ORDER BY id LIMIT $2::bigint),"
    " moved AS (DELETE FROM outbox WHERE id IN (SELECT id FROM old)"
    "   RETURNING id, \"user\", type, created_at, payload, attempts, queued_at),"
    " buried AS (INSERT INTO outbox_dead (" DEAD_COLS ")"
    "   SELECT id, \"user\", type, created_at, payload, attempts, queued_at, $4::bigint, 'max age'"
    "   FROM moved RETURNING id)"
    " SELECT count(*) FROM buried";
static const char SQL_OUTBOX_DEAD_LIST[] =
    "SELECT " DEAD_COLS " FROM outbox_dead WHERE id > $1::bigint ORDER BY id LIMIT $2::bigint";
/* Back to the queue with the same ids (attempts 0, due and queued at $2), out of the dead letters. */
static const char SQL_OUTBOX_REPLAY_ONE[] =
    "WITH back AS (DELETE FROM outbox_dead WHERE id = $1::bigint"
    "   RETURNING id, \"user\", type, created_at, payload, last_error)"
    " INSERT INTO outbox (" OUTBOX_COLS ")"
    " SELECT id, \"user\", type, created_at, payload, 0, $2::bigint, $2::bigint, last_error FROM back";
/* the oldest $1 dead letters: a primary-key walk that stops at the LIMIT */
static const char SQL_OUTBOX_REPLAY_ALL[] =
    "WITH back AS (DELETE FROM outbox_dead WHERE id IN"
    "   (SELECT id FROM outbox_dead ORDER BY id LIMIT $1::bigint)"
    "   RETURNING id, \"user\", type, created_at, payload, last_error)"
    " INSERT INTO outbox (" OUTBOX_COLS ")"
    " SELECT id, \"user\", type, created_at, payload, 0, $2::bigint, $2::bigint, last_error FROM back";
/* admin and /metrics only: the counts read each table; the oldest looks at 1,000 rows */
static const char SQL_OUTBOX_COUNTS[] =
    "SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM outbox_dead),"
    " coalesce((SELECT min(queued_at) FROM (SELECT queued_at FROM outbox ORDER BY id LIMIT 1000) o),"
    " 0)";

static void event_from_row(const PGresult *res, int r, struct store_event *e)
{
    e->id = pg_i64(res, r, 0);
    e->user = pg_text(res, r, 1);
    e->type = pg_text(res, r, 2);
    e->created_at = pg_i64(res, r, 3);
    e->payload = pg_text(res, r, 4);
    e->attempts = (int)pg_i64(res, r, 5);
    e->queued_at = pg_i64(res, r, 6);
    e->next_at = pg_i64(res, r, 7);
    e->last_error = pg_text(res, r, 8);
}

void pg_outbox_txn_over(struct store_pg *pg)
{
    pg->outbox_unseen_from = 0;
}

int pg_outbox_add(struct store *st, const char *user, const char *type, const char *payload,
                  int64_t now, int64_t max_queued, int64_t *id)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    if (!pg_name_ok(user) || !pg_name_ok(type) || !pg_name_ok(payload))
        return pg_failf(pg, STORE_ERR_INVALID, "outbox add: user, type and payload needed");
    if ((rc = pg_write_check(pg)) < 0)
        return rc;
    /* The span grows by one per insert at most (a replay resets the count): look it up only when
     * the inserts since the last look could have reached the bound. */
    if (max_queued != pg->outbox_room_bound) {
        pg->outbox_room = 0;
        pg->outbox_room_bound = max_queued;
    }
    if (max_queued > 0 && pg->outbox_room-- <= 0) {
        if ((rc = pg_run(pg, SQL_OUTBOX_SPAN, NULL, &r, "outbox size")) < 0) {
            pg->outbox_room = 0;
            return rc;
        }
        int64_t span = pg_i64(r, 0, 0);
        PQclear(r);
        if (span >= max_queued) {
            pg->outbox_room = 0;
            return pg_failf(pg, STORE_ERR_FULL,
                            "outbox full: %lld events queued (max_outbox %lld); the backend "
                            "is not taking events", (long long)span, (long long)max_queued);
        }
        pg->outbox_room = max_queued - span - 1 < 4096 ? max_queued - span - 1 : 4096;
    }
    pgp_init(&p);
    pgp_text(&p, user);
    pgp_text(&p, type);
    pgp_i64(&p, now);
    pgp_text(&p, payload);
    if ((rc = pg_run(pg, SQL_OUTBOX_ADD, &p, &r, "outbox add")) < 0)
        return rc;
    int64_t new_id = PQntuples(r) == 1 ? pg_i64(r, 0, 0) : 0;
    PQclear(r);
    if (new_id <= 0)
        return pg_failf(pg, STORE_ERR_IO, "outbox add: no id returned");
    /* In an open transaction: hidden from scans until it ends (ids only grow: a sequence). */
    if (pg->txn && pg->outbox_unseen_from == 0)
        pg->outbox_unseen_from = new_id;
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

int pg_outbox_scan(struct store *st, int64_t now, int max_rows, store_event_fn *cb,
                   bool (*skip)(void *ctx, int64_t id), void *ctx)
{
    int64_t after = 0;
    return pg_outbox_scan_after(st, now, &after, max_rows, cb, skip, ctx);
}

uint64_t pg_outbox_replays(const struct store *st)
{
    return ((const struct store_pg *)(const void *)st)->outbox_replays;
}

int pg_outbox_scan_after(struct store *st, int64_t now, int64_t *after, int max_rows,
                         store_event_fn *cb, bool (*skip)(void *ctx, int64_t id), void *ctx)
{
    struct store_pg *pg = pg_of(st);
    struct user_set blocked = {0}; /* users whose later events wait (at most max_rows of them) */
    struct pg_params p;
    PGresult *r;
    size_t cap = 16;
    int rc;

    if (max_rows < 1 || !cb || !after)
        return pg_failf(pg, STORE_ERR_INVALID, "outbox scan: max_rows >= 1 and a callback");
    /* In a cluster other nodes add events too, and a sequence is not commit order: an id below
     * one already seen may still commit. Every scan then starts at the queue's head. */
    int64_t head = 0;
    if (pg->node_id != 0)
        after = &head;
    pgp_init(&p);
    pgp_i64(&p, max_rows);
    /* outside a transaction every row left is committed: nothing to hide */
    bool hide = pg->outbox_unseen_from > 0 && pg->txn;
    pgp_i64(&p, hide ? pg->outbox_unseen_from : INT64_MAX);
    pgp_i64(&p, *after);
    if ((rc = pg_run(pg, SQL_OUTBOX_SCAN, &p, &r, "outbox scan")) < 0)
        return rc;
    while (cap < (size_t)max_rows * 2)
        cap *= 2;
    blocked.mask = cap - 1;
    if (!(blocked.slot = calloc(cap, sizeof(*blocked.slot)))) {
        PQclear(r);
        return pg_failf(pg, STORE_ERR_NOMEM, "outbox scan: out of memory");
    }
    bool prefix = true; /* every row so far was passed over by skip or taken: *after moves */
    int rows = PQntuples(r);
    for (int i = 0; i < rows; i++) {
        struct store_event e;
        int64_t id = pg_i64(r, i, 0);
        /* the caller's own (in flight): passed over before any other column is read */
        if (skip && skip(ctx, id)) {
            if (prefix)
                *after = id;
            continue;
        }
        bool prefix_before_take = prefix;
        prefix = false; /* unless taken, below */
        event_from_row(r, i, &e);
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
    PQclear(r);
    free(blocked.slot);
    return 0;
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Delete the run [lo, hi] from the queue and from the dead letters: one statement. */
static int delete_run(struct store_pg *pg, int64_t lo, int64_t hi)
{
    struct pg_params p;
    pgp_init(&p);
    pgp_i64(&p, lo);
    pgp_i64(&p, hi);
    return pg_write(pg, SQL_OUTBOX_DELIVERED, &p, NULL, "outbox delivered");
}

int pg_outbox_delivered(struct store *st, const int64_t *ids, size_t n)
{
    struct store_pg *pg = pg_of(st);
    bool own = false;
    int64_t *sorted;
    size_t runs = 0;
    int rc = pg_write_check(pg);

    if (rc < 0 || n == 0)
        return rc;
    if (!ids)
        return pg_failf(pg, STORE_ERR_INVALID, "outbox delivered: no ids");
    if (!(sorted = malloc(n * sizeof(*sorted))))
        return pg_failf(pg, STORE_ERR_NOMEM, "outbox delivered: out of memory");
    memcpy(sorted, ids, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), cmp_id);
    /* One DELETE per run of consecutive ids (a duplicate id stays in its run): every id of a run
     * is ours. A batch is mostly one run: one statement, atomic by itself. */
    for (size_t i = 0; i < n; i++)
        if (i == 0 || sorted[i] > sorted[i - 1] + 1)
            runs++;
    if (runs > 1 && (rc = pg_atomic_begin(st, &own)) < 0) {
        free(sorted);
        return rc;
    }
    for (size_t i = 0, j; i < n && rc == 0; i = j) {
        for (j = i + 1; j < n && sorted[j] <= sorted[j - 1] + 1; j++)
            ;
        rc = delete_run(pg, sorted[i], sorted[j - 1]);
    }
    free(sorted);
    return runs > 1 ? pg_atomic_end(st, own, rc) : rc;
}

/* "{1,2,3}": ids as a PostgreSQL bigint[] literal (malloc'd), NULL when out of memory. */
static char *id_array(const int64_t *ids, size_t n)
{
    size_t cap = n * 21 + 3, len = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    s[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%" PRId64, i ? "," : "", ids[i]);
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

int pg_outbox_retry(struct store *st, const int64_t *ids, size_t n, int64_t now, int64_t next_at,
                    int64_t dead_before, const char *error, int *dead)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc = pg_write_check(pg);

    if (dead)
        *dead = 0;
    if (rc < 0 || n == 0)
        return rc;
    if (!ids)
        return pg_failf(pg, STORE_ERR_INVALID, "outbox retry: no ids");
    char *arr = id_array(ids, n);
    if (!arr)
        return pg_failf(pg, STORE_ERR_NOMEM, "outbox retry: out of memory");
    pgp_init(&p);
    pgp_text(&p, arr);
    pgp_i64(&p, next_at);
    pgp_text(&p, error);
    pgp_i64(&p, dead_before);
    pgp_i64(&p, now);
    rc = pg_run(pg, SQL_OUTBOX_RETRY, &p, &r, "outbox retry");
    free(arr);
    if (rc < 0)
        return rc;
    if (dead)
        *dead = (int)pg_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

int pg_outbox_expire(struct store *st, int64_t dead_before, int64_t now, int limit,
                     int64_t *count)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    if (count)
        *count = 0;
    if (limit < 1)
        return pg_failf(pg, STORE_ERR_INVALID, "outbox expire: limit >= 1 needed");
    if ((rc = pg_write_check(pg)) < 0)
        return rc;
    pgp_init(&p);
    pgp_i64(&p, dead_before);
    pgp_i64(&p, limit);
    pgp_i64(&p, (int64_t)limit * EXPIRE_WINDOW);
    pgp_i64(&p, now);
    if ((rc = pg_run(pg, SQL_OUTBOX_EXPIRE, &p, &r, "outbox expire")) < 0)
        return rc;
    if (count)
        *count = pg_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

int pg_outbox_dead_list(struct store *st, int64_t after_id, int limit, store_event_fn *cb,
                        void *ctx)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc, stop = 0;

    if (limit < 1 || !cb)
        return pg_failf(pg, STORE_ERR_INVALID, "outbox dead list: limit >= 1 and a callback");
    pgp_init(&p);
    pgp_i64(&p, after_id);
    pgp_i64(&p, limit);
    if ((rc = pg_run(pg, SQL_OUTBOX_DEAD_LIST, &p, &r, "outbox dead list")) < 0)
        return rc;
    int rows = PQntuples(r);
    for (int i = 0; i < rows && !stop; i++) {
        struct store_event e;
        event_from_row(r, i, &e);
        stop = cb(ctx, &e);
    }
    PQclear(r);
    return stop;
}

int pg_outbox_replay(struct store *st, int64_t id, int limit, int64_t now, int64_t *count)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    int64_t n = 0;
    int rc;

    if (count)
        *count = 0;
    if (id == 0 && limit < 1)
        return pg_failf(pg, STORE_ERR_INVALID, "outbox replay: limit >= 1 needed");
    if ((rc = pg_write_check(pg)) < 0)
        return rc;
    pg->outbox_room = 0; /* old ids come back: the span may jump, and scans must see them */
    pg->outbox_replays++;
    /* Moved back with the same ids (below any new one, so visible to scans at once): one statement. */
    pgp_init(&p);
    pgp_i64(&p, id ? id : limit);
    pgp_i64(&p, now);
    if ((rc = pg_write(pg, id ? SQL_OUTBOX_REPLAY_ONE : SQL_OUTBOX_REPLAY_ALL, &p, &n,
                       "outbox replay")) < 0)
        return rc;
    if (id && n == 0)
        return pg_failf(pg, STORE_ERR_NOTFOUND, "no dead event %lld", (long long)id);
    if (count)
        *count = n;
    return 0;
}

int pg_outbox_counts(struct store *st, struct store_outbox_counts *out)
{
    struct store_pg *pg = pg_of(st);
    PGresult *r;
    int rc;

    memset(out, 0, sizeof *out);
    if ((rc = pg_run(pg, SQL_OUTBOX_COUNTS, NULL, &r, "outbox counts")) < 0)
        return rc;
    out->queued = pg_i64(r, 0, 0);
    out->dead = pg_i64(r, 0, 1);
    out->oldest_queued_at = pg_i64(r, 0, 2);
    PQclear(r);
    return 0;
}

/* The advisory lock the one node that sends events holds ("wsevt" in ASCII). */
#define PG_OUTBOX_LOCK "512115914100"
static const char SQL_OUTBOX_OWNER[] = "SELECT pg_try_advisory_lock(" PG_OUTBOX_LOCK ")";
/* How often a node that is not the sender asks again (the sender's node may have gone). */
#define PG_OUTBOX_OWNER_RETRY_MS 1000

int pg_outbox_owner(struct store *st, bool *mine)
{
    struct store_pg *pg = pg_of(st);
    PGresult *r;
    int rc;

    *mine = true;
    if (pg->node_id == 0)
        return 0; /* one node: always its own sender */
    /* A session-level lock: held while this connection lives (pg_drop forgets it). */
    if (pg->outbox_owner && pg->conn)
        return 0;
    *mine = false;
    int64_t now = pg_mono_ms();
    if (now < pg->outbox_owner_retry_ms)
        return 0;
    pg->outbox_owner_retry_ms = now + PG_OUTBOX_OWNER_RETRY_MS;
    if ((rc = pg_run(pg, SQL_OUTBOX_OWNER, NULL, &r, "outbox owner")) < 0)
        return rc;
    *mine = pg->outbox_owner = pg_bool(r, 0, 0);
    PQclear(r);
    return 0;
}
