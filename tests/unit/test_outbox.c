/*
 * test_outbox.c -- the events outbox on a temp file after the real migrations: add (with the size
 * bound), the sender's scan (per-user order, retry backoff, its in-memory lease through skip, the
 * rows of an open transaction hidden), delivered (deleted), retry and dead after the max age, expire,
 * dead list and replay (same ids), counts, same-transaction rollback, restart, the 0003 -> 0005 upgrade.
 * With WSP_TEST_PG_DSN set (a libpq conninfo of a database it may wipe), the same tests run on the
 * PostgreSQL backend instead, each on a freshly emptied database; the SQLite-only ones are skipped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "schema_undo.h"

#include "store.h"

#define T0 INT64_C(1700000000000)

struct fixture {
    char path[512]; /* the SQLite file, or the PostgreSQL conninfo */
    struct store *st;
};

/* WSP_TEST_PG_DSN: run on PostgreSQL (set once in main); NULL: on SQLite temp files. */
static const char *pg_dsn;

struct seen {
    int n;
    int64_t id[64];
    char user[64][16];
    int attempts[64];
};

/* A model of the sender (proxy/chat/events.c): what it took stays in flight until answered. */
struct sender {
    int max;          /* events per take */
    size_t max_bytes; /* payload + user + 64 per event, the first always goes */
    size_t bytes;
    int nflight;
    int64_t flight[256];
    char flight_user[256][16];
    struct seen *s;
};

static struct sender snd; /* reset by setup */

static bool in_flight_id(void *ctx, int64_t id)
{
    (void)ctx;
    for (int i = 0; i < snd.nflight; i++)
        if (snd.flight[i] == id)
            return true;
    return false;
}

static int take_cb(void *ctx, const struct store_event *e)
{
    struct seen *s = ctx;
    for (int i = 0; i < snd.nflight; i++)
        if (!strcmp(snd.flight_user[i], e->user))
            return STORE_SCAN_SKIP;
    size_t size = strlen(e->payload) + strlen(e->user) + 64;
    if (s->n == snd.max || (s->n > 0 && snd.bytes + size > snd.max_bytes))
        return STORE_SCAN_STOP;
    snd.bytes += size;
    assert_true(s->n < 64);
    s->id[s->n] = e->id;
    snprintf(s->user[s->n], sizeof s->user[0], "%s", e->user);
    s->attempts[s->n] = e->attempts;
    s->n++;
    return STORE_SCAN_TAKE;
}

static int record(void *ctx, const struct store_event *e)
{
    struct seen *s = ctx;
    assert_true(s->n < 64);
    s->id[s->n] = e->id;
    snprintf(s->user[s->n], sizeof s->user[0], "%s", e->user);
    s->attempts[s->n] = e->attempts;
    s->n++;
    return 0;
}

static struct store *open_path(const char *path)
{
    struct store_opts pg = {.synchronous = STORE_SYNC_NORMAL, .busy_timeout_ms = 5000,
                            .backend = STORE_BACKEND_POSTGRESQL};
    struct store *st = NULL;
    char err[256];
    int rc = store_open(&st, path, pg_dsn ? &pg : NULL, err, sizeof err);
    if (rc != 0)
        fail_msg("store_open(%s): %d %s", path, rc, err);
    return st;
}

static void remove_db(const char *path)
{
    char side[600];
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
}

/* An empty database: every table (and leftover connection of an earlier failed test) gone. */
static void pg_reset(const char *dsn)
{
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("WSP_TEST_PG_DSN: cannot connect: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, "SET client_min_messages = warning;"
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                            " AND application_name IN ('wsproxy', 'wsctl');"
                            "DROP SCHEMA public CASCADE; CREATE SCHEMA public;");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("WSP_TEST_PG_DSN: reset: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    if (pg_dsn) {
        snprintf(f->path, sizeof f->path, "%s", pg_dsn);
        pg_reset(pg_dsn);
    } else {
        strcpy(f->path, "/tmp/test_outbox_XXXXXX");
        int fd = mkstemp(f->path);
        assert_true(fd >= 0);
        close(fd);
    }
    f->st = open_path(f->path);
    memset(&snd, 0, sizeof snd);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->st);
    if (!pg_dsn)
        remove_db(f->path);
    free(f);
    return 0;
}

static int64_t add(struct store *st, const char *user, int64_t now)
{
    int64_t id = 0;
    assert_int_equal(store_outbox_add(st, user, "test", "{\"x\":1}", now, 0, &id), 0);
    assert_true(id > 0);
    return id;
}

/* Take like the sender: at most count events and bytes, then they are in flight. */
static int take(struct store *st, int64_t now, int count, size_t bytes, struct seen *s)
{
    memset(s, 0, sizeof *s);
    snd.max = count;
    snd.max_bytes = bytes;
    snd.bytes = 0;
    assert_int_equal(store_outbox_scan(st, now, count * 4 + snd.nflight, take_cb, in_flight_id, s),
                     0);
    for (int i = 0; i < s->n; i++) {
        assert_true(snd.nflight < 256);
        snd.flight[snd.nflight] = s->id[i];
        snprintf(snd.flight_user[snd.nflight++], sizeof snd.flight_user[0], "%s", s->user[i]);
    }
    return s->n;
}

/* The answer for ids came: they are no longer in flight. */
static void answered(const int64_t *ids, size_t n)
{
    for (size_t k = 0; k < n; k++)
        for (int i = 0; i < snd.nflight; i++)
            if (snd.flight[i] == ids[k]) {
                snd.flight[i] = snd.flight[--snd.nflight];
                memcpy(snd.flight_user[i], snd.flight_user[snd.nflight], sizeof snd.flight_user[0]);
                break;
            }
}

static void delivered(struct store *st, const int64_t *ids, size_t n)
{
    answered(ids, n);
    assert_int_equal(store_outbox_delivered(st, ids, n), 0);
}

static void retry(struct store *st, const int64_t *ids, size_t n, int64_t now, int64_t next_at,
                  int64_t dead_before, int *dead)
{
    answered(ids, n);
    assert_int_equal(store_outbox_retry(st, ids, n, now, next_at, dead_before, "HTTP 500", dead), 0);
}

static void test_outbox_schema_and_plans(void **state)
{
    struct fixture *f = *state;
    assert_true(store_schema_version(f->st) >= 5);
    if (store_check_plans(f->st) != 0)
        fail_msg("%s", store_last_error(f->st));
}

static void test_outbox_take_order_per_user(void **state)
{
    struct fixture *f = *state;
    struct seen s;
    int64_t a1 = add(f->st, "alice", T0), b1 = add(f->st, "bob", T0), a2 = add(f->st, "alice", T0),
            c1 = add(f->st, "carol", T0);
    assert_int_equal(take(f->st, T0, 10, 1 << 20, &s), 4);
    assert_int_equal(s.id[0], a1);
    assert_int_equal(s.id[1], b1);
    assert_int_equal(s.id[2], a2);
    assert_int_equal(s.id[3], c1);
    assert_int_equal(s.attempts[0], 0);
    /* All in flight: the sender's lease keeps them from being taken twice. */
    assert_int_equal(take(f->st, T0 + 1, 10, 1 << 20, &s), 0);
    /* bob's batch is delivered, the other batch (alice, carol) failed: due again at T0 + 500. */
    delivered(f->st, &b1, 1);
    int64_t again[] = {a1, a2, c1};
    int dead = -1;
    retry(f->st, again, 3, T0 + 2, T0 + 500, T0 - 1000, &dead);
    assert_int_equal(dead, 0);
    assert_int_equal(take(f->st, T0 + 499, 10, 1 << 20, &s), 0);
    /* A new event of bob is due at once; alice's newer event waits behind her older ones. */
    int64_t b2 = add(f->st, "bob", T0 + 499);
    int64_t a3 = add(f->st, "alice", T0 + 499);
    assert_int_equal(take(f->st, T0 + 499, 10, 1 << 20, &s), 1);
    assert_int_equal(s.id[0], b2);
    delivered(f->st, &b2, 1);
    assert_int_equal(take(f->st, T0 + 500, 10, 1 << 20, &s), 4);
    assert_int_equal(s.id[0], a1);
    assert_int_equal(s.id[1], a2);
    assert_int_equal(s.id[2], c1);
    assert_int_equal(s.id[3], a3);
    assert_int_equal(s.attempts[0], 1); /* one failed delivery */
    assert_int_equal(s.attempts[3], 0);
}

static void test_outbox_take_bounds(void **state)
{
    struct fixture *f = *state;
    struct seen s;
    for (int i = 0; i < 10; i++)
        add(f->st, i % 2 ? "u1" : "u2", T0);
    assert_int_equal(take(f->st, T0, 3, 1 << 20, &s), 3);
    answered(s.id, (size_t)s.n);
    /* Bytes: each event counts its payload + user + 64; 2 fit in 170 bytes, and one always goes. */
    assert_int_equal(take(f->st, T0, 10, 170, &s), 2);
    answered(s.id, (size_t)s.n);
    assert_int_equal(take(f->st, T0, 10, 1, &s), 1);
    answered(s.id, (size_t)s.n);
    /* max_rows bounds the rows looked at, whatever the callback answers */
    memset(&s, 0, sizeof s);
    assert_int_equal(store_outbox_scan(f->st, T0, 4, record, NULL, &s), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(store_outbox_scan(f->st, T0, 0, record, NULL, &s), STORE_ERR_INVALID);
    assert_int_equal(store_outbox_scan(f->st, T0, 4, NULL, NULL, &s), STORE_ERR_INVALID);
}

/* An earlier batch in flight blocks the user's later events: the sender keeps the order. */
static void test_outbox_in_flight_blocks_user(void **state)
{
    struct fixture *f = *state;
    struct seen s;
    int64_t a1 = add(f->st, "alice", T0);
    assert_int_equal(take(f->st, T0, 10, 1 << 20, &s), 1);
    int64_t a2 = add(f->st, "alice", T0 + 1), b1 = add(f->st, "bob", T0 + 1);
    assert_int_equal(take(f->st, T0 + 1, 10, 1 << 20, &s), 1);
    assert_int_equal(s.id[0], b1);
    delivered(f->st, &a1, 1);
    assert_int_equal(take(f->st, T0 + 2, 10, 1 << 20, &s), 1);
    assert_int_equal(s.id[0], a2);
    /* A crash forgets the lease: after a restart both are due again, same ids, same attempts. */
    store_close(f->st);
    f->st = open_path(f->path);
    memset(&snd, 0, sizeof snd);
    assert_int_equal(take(f->st, T0 + 3, 10, 1 << 20, &s), 2);
    assert_int_equal(s.id[0], a2);
    assert_int_equal(s.id[1], b1);
    assert_int_equal(s.attempts[0], 0);
}

/* What the open transaction added is not shown until it ends (the sender posts what it sees). */
static void test_outbox_open_transaction_hidden(void **state)
{
    struct fixture *f = *state;
    struct seen s;
    int64_t a1 = add(f->st, "alice", T0); /* autocommit: visible at once */
    assert_int_equal(store_begin(f->st), 0);
    int64_t b1 = add(f->st, "bob", T0);
    add(f->st, "carol", T0);
    assert_int_equal(take(f->st, T0, 10, 1 << 20, &s), 1);
    assert_int_equal(s.id[0], a1);
    /* the sender's own writes in that transaction: delivered rows are gone from its view */
    delivered(f->st, &a1, 1);
    assert_int_equal(take(f->st, T0, 10, 1 << 20, &s), 0);
    assert_int_equal(store_commit(f->st), 0);
    assert_int_equal(take(f->st, T0, 10, 1 << 20, &s), 2);
    assert_int_equal(s.id[0], b1);
    answered(s.id, (size_t)s.n);
    /* rolled back: never shown; an event in a savepoint of an open transaction is hidden too */
    assert_int_equal(store_begin(f->st), 0);
    add(f->st, "dave", T0);
    assert_int_equal(store_rollback(f->st), 0);
    assert_int_equal(store_begin(f->st), 0);
    bool own = true;
    assert_int_equal(store_atomic_begin(f->st, &own), 0);
    assert_false(own);
    int64_t e1 = add(f->st, "erin", T0);
    assert_int_equal(store_atomic_end(f->st, own, 0), 0);
    assert_int_equal(take(f->st, T0, 10, 1 << 20, &s), 2); /* bob, carol again: not answered */
    assert_int_equal(store_commit(f->st), 0);
    memset(&snd, 0, sizeof snd);
    assert_int_equal(take(f->st, T0, 10, 1 << 20, &s), 3);
    assert_int_equal(s.id[2], e1);
}

static void test_outbox_dead_and_replay(void **state)
{
    struct fixture *f = *state;
    struct seen s;
    int64_t a1 = add(f->st, "alice", T0), a2 = add(f->st, "alice", T0 + 100);
    take(f->st, T0 + 200, 10, 1 << 20, &s);
    int64_t ids[] = {a1, a2};
    int dead = 0;
    /* max age: queued before T0 + 50 goes dead, a2 stays queued */
    retry(f->st, ids, 2, T0 + 250, T0 + 300, T0 + 50, &dead);
    assert_int_equal(dead, 1);
    struct store_outbox_counts c;
    assert_int_equal(store_outbox_counts(f->st, &c), 0);
    assert_int_equal(c.queued, 1);
    assert_int_equal(c.dead, 1);
    assert_int_equal(c.oldest_queued_at, T0 + 100);
    /* The dead head no longer blocks alice. */
    assert_int_equal(take(f->st, T0 + 300, 10, 1 << 20, &s), 1);
    assert_int_equal(s.id[0], a2);
    answered(s.id, 1);
    memset(&s, 0, sizeof s);
    assert_int_equal(store_outbox_dead_list(f->st, 0, 10, record, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.id[0], a1);
    assert_int_equal(s.attempts[0], 1);
    assert_int_equal(store_outbox_replay(f->st, a2, 10, T0, NULL), STORE_ERR_NOTFOUND);
    int64_t n = 0;
    assert_int_equal(store_outbox_replay(f->st, a1, 10, T0 + 400, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(take(f->st, T0 + 400, 10, 1 << 20, &s), 2);
    assert_int_equal(s.id[0], a1); /* the same id again, before alice's later event */
    assert_int_equal(s.attempts[0], 0);
    answered(s.id, (size_t)s.n);
    /* Expire: a queued event past the max age that nobody retried. */
    int64_t b1 = add(f->st, "bob", T0 + 500);
    assert_int_equal(store_outbox_expire(f->st, T0 + 400, T0 + 600, 100, &n), 0);
    assert_int_equal(n, 1); /* a2 only: a1 was queued again at T0 + 400, b1 is newer */
    memset(&s, 0, sizeof s);
    assert_int_equal(store_outbox_dead_list(f->st, 0, 10, record, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.id[0], a2);
    assert_true(b1 > a2);
    assert_int_equal(store_outbox_replay(f->st, 0, 100, T0 + 600, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_outbox_counts(f->st, &c), 0);
    assert_int_equal(c.queued, 3);
    assert_int_equal(c.dead, 0);
    assert_int_equal(store_outbox_expire(f->st, T0, T0, 0, &n), STORE_ERR_INVALID);
}

static void test_outbox_delivered(void **state)
{
    struct fixture *f = *state;
    struct seen s;
    int64_t a1 = add(f->st, "alice", T0), x = add(f->st, "bob", T0), a2 = add(f->st, "alice", T0);
    take(f->st, T0, 10, 1 << 20, &s);
    int64_t ids[] = {a2, a1}; /* any order; not bob's event between them */
    delivered(f->st, ids, 2);
    /* A late retry of delivered events changes nothing. */
    assert_int_equal(store_outbox_retry(f->st, ids, 2, T0, T0 + 20, T0 + 1000, "late", NULL), 0);
    struct store_outbox_counts c;
    store_outbox_counts(f->st, &c);
    assert_int_equal(c.queued, 1);
    delivered(f->st, &x, 1);
    store_outbox_counts(f->st, &c);
    assert_int_equal(c.queued, 0);
    assert_int_equal(c.oldest_queued_at, 0);
    /* An event that went dead while its batch was in flight is delivered all the same. */
    int64_t a3 = add(f->st, "alice", T0 + 20);
    take(f->st, T0 + 20, 10, 1 << 20, &s);
    int64_t n = 0;
    assert_int_equal(store_outbox_expire(f->st, T0 + 21, T0 + 22, 10, &n), 0);
    assert_int_equal(n, 1);
    delivered(f->st, &a3, 1);
    store_outbox_counts(f->st, &c);
    assert_int_equal(c.dead, 0);
    /* Ids are never reused, even after the newest row was deleted. */
    assert_true(add(f->st, "alice", T0) > a3);
}

static void test_outbox_size_bound(void **state)
{
    struct fixture *f = *state;
    struct seen s;
    int64_t id;
    for (int i = 0; i < 3; i++)
        assert_int_equal(store_outbox_add(f->st, "u", "t", "{}", T0, 3, &id), 0);
    assert_int_equal(store_outbox_add(f->st, "u", "t", "{}", T0, 3, &id), STORE_ERR_FULL);
    assert_non_null(strstr(store_last_error(f->st), "outbox full"));
    assert_string_equal(store_strerror(STORE_ERR_FULL), "outbox full");
    assert_int_equal(store_outbox_add(f->st, "u", "t", "{}", T0, 0, &id), 0); /* 0: no bound */
    take(f->st, T0, 10, 1 << 20, &s);
    delivered(f->st, s.id, (size_t)s.n);
    assert_int_equal(store_outbox_add(f->st, "u", "t", "{}", T0, 3, &id), 0);
    assert_int_equal(store_outbox_add(f->st, "", "t", "{}", T0, 3, &id), STORE_ERR_INVALID);
    /* A bigger bound, looked up only now and then: still exact. */
    int ok = 0, rc;
    while ((rc = store_outbox_add(f->st, "v", "t", "{}", T0, 1000, &id)) == 0)
        ok++;
    assert_int_equal(rc, STORE_ERR_FULL);
    assert_int_equal(ok, 999);
    /* a smaller bound than the last one is looked up at once */
    assert_int_equal(store_outbox_add(f->st, "v", "t", "{}", T0, 500, &id), STORE_ERR_FULL);
    struct store_outbox_counts c;
    store_outbox_counts(f->st, &c);
    assert_int_equal(c.queued, 1000);
}

/* Events join the caller's transaction: a rollback drops them with the change. */
static void test_outbox_same_transaction(void **state)
{
    struct fixture *f = *state;
    struct store_outbox_counts c;
    assert_int_equal(store_begin(f->st), 0);
    add(f->st, "alice", T0);
    assert_int_equal(store_rollback(f->st), 0);
    store_outbox_counts(f->st, &c);
    assert_int_equal(c.queued, 0);
    assert_int_equal(store_begin(f->st), 0);
    int64_t a = add(f->st, "alice", T0);
    assert_int_equal(store_commit(f->st), 0);
    store_close(f->st);
    f->st = open_path(f->path);
    struct seen s;
    assert_int_equal(take(f->st, T0, 10, 1 << 20, &s), 1);
    assert_int_equal(s.id[0], a);
}

/* scan_after: the leading rows taken or in flight are not read again; a failure or a replay
 * makes the caller read from lower again. */
static void test_outbox_scan_after(void **state)
{
    struct fixture *f = *state;
    struct seen s;
    int64_t after = 0;
    int64_t a1 = add(f->st, "alice", T0), b1 = add(f->st, "bob", T0), a2 = add(f->st, "alice", T0);
    snd.max = 10;
    snd.max_bytes = 1 << 20;
    memset(&s, 0, sizeof s);
    assert_int_equal(store_outbox_scan_after(f->st, T0, &after, 40, take_cb, in_flight_id, &s), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(after, a2); /* all three taken */
    for (int i = 0; i < s.n; i++) {
        snd.flight[snd.nflight] = s.id[i];
        snprintf(snd.flight_user[snd.nflight++], sizeof snd.flight_user[0], "%s", s.user[i]);
    }
    int64_t c1 = add(f->st, "carol", T0), a3 = add(f->st, "alice", T0), d1 = add(f->st, "dave", T0);
    memset(&s, 0, sizeof s);
    assert_int_equal(store_outbox_scan_after(f->st, T0, &after, 40, take_cb, in_flight_id, &s), 0);
    assert_int_equal(s.n, 2); /* carol, dave; alice's a3 waits behind her batch in flight */
    assert_int_equal(s.id[0], c1);
    assert_int_equal(s.id[1], d1);
    assert_int_equal(after, c1); /* a3 was left behind: the next scan starts there */
    (void)b1;
    /* a replay brings back an old id: the count tells the caller to start from 0 */
    uint64_t r = store_outbox_replays(f->st);
    int64_t ids[] = {a1};
    retry(f->st, ids, 1, T0, T0, T0 + 1, NULL); /* queued before T0 + 1: dead at once */
    int64_t n = 0;
    assert_int_equal(store_outbox_replay(f->st, a1, 10, T0, &n), 0);
    assert_int_equal(n, 1);
    assert_true(store_outbox_replays(f->st) != r);
    (void)a3;
}

/* A 0003-shaped outbox (state column, delivered rows kept) upgrades: queued stay queued with their
 * ids, dead ones move to the dead letters, delivered ones go, and new ids stay above every old one. */
static void test_outbox_upgrade_from_0003(void **state)
{
    struct fixture *f = *state;
    struct seen s;
    if (pg_dsn)
        skip(); /* SQLite's own schema history: PostgreSQL databases start at the 0005 baseline */
    int64_t q1 = add(f->st, "alice", T0), d1 = add(f->st, "bob", T0), x1 = add(f->st, "carol", T0),
            top = add(f->st, "dave", T0);
    store_close(f->st);
    f->st = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    char sql[2048];
    snprintf(sql, sizeof sql,
             UNDO_0006_SQL UNDO_0005_SQL
             "UPDATE outbox SET state = 'dead', attempts = 7, next_at = %lld, last_error = 'HTTP 500'"
             " WHERE id = %lld;"
             "UPDATE outbox SET state = 'delivered', delivered_at = 1 WHERE id IN (%lld, %lld);"
             "PRAGMA user_version = 4;",
             (long long)(T0 + 9), (long long)d1, (long long)x1, (long long)top);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    f->st = open_path(f->path);
    assert_int_equal(store_schema_version(f->st), store_schema_latest());
    struct store_outbox_counts c;
    assert_int_equal(store_outbox_counts(f->st, &c), 0);
    assert_int_equal(c.queued, 1);
    assert_int_equal(c.dead, 1);
    assert_int_equal(take(f->st, T0, 10, 1 << 20, &s), 1);
    assert_int_equal(s.id[0], q1);
    memset(&s, 0, sizeof s);
    assert_int_equal(store_outbox_dead_list(f->st, 0, 10, record, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.id[0], d1);
    assert_int_equal(s.attempts[0], 7);
    assert_true(add(f->st, "erin", T0) > top);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    pg_dsn = getenv("WSP_TEST_PG_DSN");
    if (pg_dsn && !*pg_dsn)
        pg_dsn = NULL;
    const struct CMUnitTest tests[] = {
        T(test_outbox_schema_and_plans),        T(test_outbox_take_order_per_user),
        T(test_outbox_take_bounds),             T(test_outbox_in_flight_blocks_user),
        T(test_outbox_open_transaction_hidden), T(test_outbox_dead_and_replay),
        T(test_outbox_delivered),               T(test_outbox_size_bound),
        T(test_outbox_same_transaction),        T(test_outbox_upgrade_from_0003),
        T(test_outbox_scan_after),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
