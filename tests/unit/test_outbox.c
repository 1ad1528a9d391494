/*
 * test_outbox.c -- the events outbox on a temp file after the real migrations: add (with the size
 * bound), take in per-user order within count/bytes bounds, leases, delivered, retry and dead after the
 * max age, expire, prune, dead list and replay (same ids), counts, same-transaction rollback, restart.
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

#include "store.h"

#define T0 INT64_C(1700000000000)

struct fixture {
    char path[64];
    struct store *st;
};

struct seen {
    int n;
    int64_t id[64];
    char user[64][16];
    int attempts[64];
};

static struct store *open_path(const char *path)
{
    struct store *st = NULL;
    char err[256];
    int rc = store_open(&st, path, NULL, err, sizeof err);
    if (rc != 0)
        fail_msg("store_open(%s): %d %s", path, rc, err);
    return st;
}

static void remove_db(const char *path)
{
    char side[80];
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    strcpy(f->path, "/tmp/test_outbox_XXXXXX");
    int fd = mkstemp(f->path);
    assert_true(fd >= 0);
    close(fd);
    f->st = open_path(f->path);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->st);
    remove_db(f->path);
    free(f);
    return 0;
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

static int64_t add(struct store *st, const char *user, int64_t now)
{
    int64_t id = 0;
    assert_int_equal(store_outbox_add(st, user, "test", "{\"x\":1}", now, 0, &id), 0);
    assert_true(id > 0);
    return id;
}

static int take(struct store *st, int64_t now, int count, size_t bytes, struct seen *s)
{
    struct store_outbox_take lim = {count, bytes, count * 4, now + 10000};
    int n = -1;
    memset(s, 0, sizeof *s);
    assert_int_equal(store_outbox_take(st, now, &lim, record, s, &n), 0);
    assert_int_equal(n, s->n);
    return n;
}

static void test_outbox_schema_and_plans(void **state)
{
    struct fixture *f = *state;
    assert_true(store_schema_version(f->st) >= 3);
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
    assert_int_equal(s.attempts[0], 1);
    /* All leased: nothing is due until the lease ends. */
    assert_int_equal(take(f->st, T0 + 1, 10, 1 << 20, &s), 0);
    /* alice's first fails, her second was delivered by the same batch? No: a batch succeeds or
     * fails whole; here bob's is delivered and alice's are retried later. */
    assert_int_equal(store_outbox_delivered(f->st, &b1, 1, T0 + 2), 0);
    int64_t retry[] = {a1, a2, c1};
    int dead = -1;
    assert_int_equal(store_outbox_retry(f->st, retry, 3, T0 + 500, T0 - 1000, "HTTP 500", &dead), 0);
    assert_int_equal(dead, 0);
    assert_int_equal(take(f->st, T0 + 499, 10, 1 << 20, &s), 0);
    /* A new event of bob is due at once; alice's newer event waits behind her older ones. */
    int64_t b2 = add(f->st, "bob", T0 + 499);
    int64_t a3 = add(f->st, "alice", T0 + 499);
    assert_int_equal(take(f->st, T0 + 499, 10, 1 << 20, &s), 1);
    assert_int_equal(s.id[0], b2);
    assert_int_equal(take(f->st, T0 + 500, 10, 1 << 20, &s), 4);
    assert_int_equal(s.id[0], a1);
    assert_int_equal(s.id[1], a2);
    assert_int_equal(s.id[2], c1);
    assert_int_equal(s.id[3], a3);
    assert_int_equal(s.attempts[0], 2);
    assert_int_equal(s.attempts[3], 1);
}

static void test_outbox_take_bounds(void **state)
{
    struct fixture *f = *state;
    struct seen s;
    for (int i = 0; i < 10; i++)
        add(f->st, i % 2 ? "u1" : "u2", T0);
    assert_int_equal(take(f->st, T0, 3, 1 << 20, &s), 3);
    /* Bytes: each event counts its payload + user + 64; 2 fit in 170 bytes, and one always goes. */
    assert_int_equal(take(f->st, T0 + 20000, 10, 170, &s), 2);
    assert_int_equal(take(f->st, T0 + 40000, 10, 1, &s), 1);
    struct store_outbox_take bad = {0, 10, 10, T0};
    assert_int_equal(store_outbox_take(f->st, T0, &bad, record, &s, NULL), STORE_ERR_INVALID);
}

/* A lease of an earlier batch blocks the user's later events: the in-flight batch keeps the order. */
static void test_outbox_lease_blocks_user(void **state)
{
    struct fixture *f = *state;
    struct seen s;
    int64_t a1 = add(f->st, "alice", T0);
    assert_int_equal(take(f->st, T0, 10, 1 << 20, &s), 1);
    int64_t a2 = add(f->st, "alice", T0 + 1), b1 = add(f->st, "bob", T0 + 1);
    assert_int_equal(take(f->st, T0 + 1, 10, 1 << 20, &s), 1);
    assert_int_equal(s.id[0], b1);
    assert_int_equal(store_outbox_delivered(f->st, &a1, 1, T0 + 2), 0);
    assert_int_equal(take(f->st, T0 + 2, 10, 1 << 20, &s), 1);
    assert_int_equal(s.id[0], a2);
    /* After a crash the lease simply runs out and the event is due again (same id). */
    assert_int_equal(take(f->st, T0 + 2 + 10000, 10, 1 << 20, &s), 2);
    assert_int_equal(s.id[0], a2);
    assert_int_equal(s.id[1], b1);
    assert_int_equal(s.attempts[0], 2);
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
    assert_int_equal(store_outbox_retry(f->st, ids, 2, T0 + 300, T0 + 50, "timeout", &dead), 0);
    assert_int_equal(dead, 1);
    struct store_outbox_counts c;
    assert_int_equal(store_outbox_counts(f->st, &c), 0);
    assert_int_equal(c.queued, 1);
    assert_int_equal(c.dead, 1);
    assert_int_equal(c.oldest_queued_at, T0 + 100);
    /* The dead head no longer blocks alice. */
    assert_int_equal(take(f->st, T0 + 300, 10, 1 << 20, &s), 1);
    assert_int_equal(s.id[0], a2);
    memset(&s, 0, sizeof s);
    assert_int_equal(store_outbox_dead_list(f->st, 0, 10, record, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.id[0], a1);
    assert_int_equal(store_outbox_replay(f->st, a2, 10, T0, NULL), STORE_ERR_NOTFOUND);
    int64_t n = 0;
    assert_int_equal(store_outbox_replay(f->st, a1, 10, T0 + 400, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(take(f->st, T0 + 400, 10, 1 << 20, &s), 1);
    assert_int_equal(s.id[0], a1); /* the same id again */
    assert_int_equal(s.attempts[0], 1);
    /* Expire: a queued event past the max age that nobody retried. */
    int64_t b1 = add(f->st, "bob", T0 + 500);
    assert_int_equal(store_outbox_expire(f->st, T0 + 400, 100, &n), 0);
    assert_int_equal(n, 1); /* a2 only: a1 was queued again at T0 + 400, b1 is newer */
    memset(&s, 0, sizeof s);
    assert_int_equal(store_outbox_dead_list(f->st, 0, 10, record, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.id[0], a2);
    assert_true(b1 > a2);
    assert_int_equal(store_outbox_replay(f->st, 0, 100, T0 + 600, &n), 0);
    assert_int_equal(n, 1);
}

static void test_outbox_delivered_prune(void **state)
{
    struct fixture *f = *state;
    struct seen s;
    int64_t a1 = add(f->st, "alice", T0), a2 = add(f->st, "alice", T0);
    take(f->st, T0, 10, 1 << 20, &s);
    int64_t ids[] = {a1, a2};
    assert_int_equal(store_outbox_delivered(f->st, ids, 2, T0 + 10), 0);
    /* A late retry of delivered events changes nothing. */
    assert_int_equal(store_outbox_retry(f->st, ids, 2, T0 + 20, T0 + 1000, "late", NULL), 0);
    struct store_outbox_counts c;
    store_outbox_counts(f->st, &c);
    assert_int_equal(c.delivered, 2);
    assert_int_equal(c.queued, 0);
    assert_int_equal(c.oldest_queued_at, 0);
    int64_t n = 0;
    assert_int_equal(store_outbox_prune(f->st, T0 + 10, 100, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_outbox_prune(f->st, T0 + 11, 1, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_outbox_prune(f->st, T0 + 11, 100, &n), 0);
    assert_int_equal(n, 1);
    /* An event that went dead while its batch was in flight is delivered all the same. */
    int64_t a3 = add(f->st, "alice", T0 + 20);
    take(f->st, T0 + 20, 10, 1 << 20, &s);
    assert_int_equal(store_outbox_expire(f->st, T0 + 21, 10, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_outbox_delivered(f->st, &a3, 1, T0 + 30), 0);
    store_outbox_counts(f->st, &c);
    assert_int_equal(c.dead, 0);
    assert_int_equal(c.delivered, 1);
    /* Ids are never reused, even after the newest row was pruned. */
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
    assert_int_equal(store_outbox_delivered(f->st, s.id, (size_t)s.n, T0), 0);
    assert_int_equal(store_outbox_add(f->st, "u", "t", "{}", T0, 3, &id), 0);
    assert_int_equal(store_outbox_add(f->st, "", "t", "{}", T0, 3, &id), STORE_ERR_INVALID);
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

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_outbox_schema_and_plans), T(test_outbox_take_order_per_user),
        T(test_outbox_take_bounds),      T(test_outbox_lease_blocks_user),
        T(test_outbox_dead_and_replay),  T(test_outbox_delivered_prune),
        T(test_outbox_size_bound),       T(test_outbox_same_transaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
