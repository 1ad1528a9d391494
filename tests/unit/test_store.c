/*
 * test_store.c -- the SQLite store on a temp file (WAL needs one): migrations, refusal of newer schemas,
 * every public function and its error paths, group commit, read-only opens, restart survival.
 * With WSP_TEST_PG_DSN set (a libpq conninfo of a database it may wipe), the same tests run on the
 * PostgreSQL backend instead, each on a freshly emptied database; the SQLite-only ones are skipped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "schema_undo.h"

#include "store.h"

#define T0 INT64_C(1700000000000)
#define MAX_ROWS 64

struct fixture {
    char path[512]; /* the SQLite file, or the PostgreSQL conninfo */
    struct store *st;
};

/* WSP_TEST_PG_DSN: run on PostgreSQL (set once in main); NULL: on SQLite temp files. */
static const char *pg_dsn;

/* What a walk saw: ids and copies of a few fields, in callback order. */
struct seen {
    int n;
    int stop_after; /* return 7 from the callback at this count; 0 = never */
    int64_t id[MAX_ROWS];
    char from[MAX_ROWS][16];
    char body[MAX_ROWS][32];
    char name[MAX_ROWS][16];
};

/* ---- Helpers ---- */

static struct store *open_path(const char *path, bool readonly)
{
    struct store_opts o = {.synchronous = STORE_SYNC_NORMAL, .busy_timeout_ms = 1000, .readonly = readonly,
                           .backend = pg_dsn ? STORE_BACKEND_POSTGRESQL : STORE_BACKEND_SQLITE};
    struct store *st = NULL;
    char err[256];
    int rc = store_open(&st, path, &o, err, sizeof err);

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

/* Run sql on the PostgreSQL database with a connection of its own (committed at once). */
static void pg_exec(const char *dsn, const char *sql)
{
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("WSP_TEST_PG_DSN: cannot connect: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("WSP_TEST_PG_DSN: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* An empty database: every table (and leftover connection of an earlier failed test) gone. */
static void pg_reset(const char *dsn)
{
    pg_exec(dsn, "SET client_min_messages = warning;"
                 "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                 " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                 " AND application_name IN ('wsproxy', 'wsctl');"
                 "DROP SCHEMA public CASCADE; CREATE SCHEMA public;");
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    int fd;

    assert_non_null(f);
    if (pg_dsn) {
        snprintf(f->path, sizeof f->path, "%s", pg_dsn);
        pg_reset(pg_dsn);
    } else {
        strcpy(f->path, "/tmp/test_store_XXXXXX");
        fd = mkstemp(f->path);
        assert_true(fd >= 0);
        close(fd); /* an empty file is an empty SQLite database */
    }
    f->st = open_path(f->path, false);
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

/* Close and open again: what a server restart does to the store. */
static void reopen(struct fixture *f)
{
    store_close(f->st);
    f->st = open_path(f->path, false);
}

static int64_t send_direct(struct store *st, const char *from, const char *to, const char *body,
                           const char *cid, int64_t now)
{
    struct store_msg m = {.sender = from, .to_user = to, .body = body, .cid = cid, .created_at = now};
    struct store_receipt r;

    assert_int_equal(store_msg_insert(st, &m, &r), 0);
    assert_false(r.duplicate);
    return r.id;
}

static int64_t send_room(struct store *st, const char *from, const char *room, const char *body,
                         int64_t now)
{
    struct store_msg m = {.sender = from, .room = room, .body = body, .created_at = now};
    struct store_receipt r;

    assert_int_equal(store_msg_insert(st, &m, &r), 0);
    return r.id;
}

static int on_msg(void *ctx, const struct store_msg *m)
{
    struct seen *s = ctx;

    assert_true(s->n < MAX_ROWS);
    s->id[s->n] = m->id;
    snprintf(s->from[s->n], sizeof s->from[0], "%s", m->sender);
    snprintf(s->body[s->n], sizeof s->body[0], "%s", m->body);
    s->n++;
    return s->stop_after && s->n >= s->stop_after ? 7 : 0;
}

static int on_name(void *ctx, const char *name)
{
    struct seen *s = ctx;

    assert_true(s->n < MAX_ROWS);
    snprintf(s->name[s->n++], sizeof s->name[0], "%s", name);
    return s->stop_after && s->n >= s->stop_after ? 7 : 0;
}

static int on_session(void *ctx, const struct store_session *ss)
{
    struct seen *s = ctx;

    assert_true(s->n < MAX_ROWS);
    s->id[s->n] = ss->id;
    snprintf(s->name[s->n], sizeof s->name[0], "%s", ss->user);
    snprintf(s->body[s->n], sizeof s->body[0], "%s", ss->ended ? ss->end_reason : "-");
    s->n++;
    return s->stop_after && s->n >= s->stop_after ? 7 : 0;
}

static int pending_count(struct store *st, const char *user)
{
    struct seen s = {0};

    assert_int_equal(store_pending_direct(st, user, 0, MAX_ROWS, on_msg, &s), 0);
    return s.n;
}

/* PRAGMA user_version is the big-endian int at byte 60 of the file header: set it as a newer
 * wsproxy would have, without going through SQLite. */
static void poke_user_version(const char *path, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
                          (unsigned char)v};
    int fd = open(path, O_WRONLY);

    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, b, 4, 60), 4);
    close(fd);
}

/* ---- Open, migrations, schema versions ---- */

static void test_store_open_applies_migrations(void **state)
{
    struct fixture *f = *state;

    assert_true(store_schema_latest() >= 1);
    assert_int_equal(store_schema_version(f->st), store_schema_latest());
    assert_int_equal(store_ping(f->st), 0);
    assert_string_equal(store_last_error(f->st), "");
}

static void test_store_migrations_twice_are_noop(void **state)
{
    struct fixture *f = *state;
    int64_t id = send_direct(f->st, "alice", "bob", "\"hi\"", NULL, T0);

    reopen(f);
    assert_int_equal(store_schema_version(f->st), store_schema_latest());
    reopen(f);
    assert_int_equal(store_schema_version(f->st), store_schema_latest());
    /* the data of the first run is still there, ids go on */
    assert_int_equal(pending_count(f->st, "bob"), 1);
    assert_true(send_direct(f->st, "alice", "bob", "2", NULL, T0) > id);
}

static void test_store_query_plans_use_indexes(void **state)
{
    struct fixture *f = *state;

    if (store_check_plans(f->st) != 0)
        fail_msg("%s", store_last_error(f->st));
}

static void test_store_newer_schema_refused(void **state)
{
    struct fixture *f = *state;
    struct store_opts ro = {.synchronous = STORE_SYNC_NORMAL, .readonly = true};
    struct store *st = NULL;
    char err[256], want[128];

    snprintf(want, sizeof want,
             "database schema version 7 is newer than this wsproxy (knows up to %d); upgrade wsproxy",
             store_schema_latest());
    if (pg_dsn) { /* the version is wsp_schema's newest row; the conninfo is not echoed */
        struct store_opts rw = {.busy_timeout_ms = 1000, .backend = STORE_BACKEND_POSTGRESQL};
        store_close(f->st);
        f->st = NULL;
        pg_exec(f->path, "INSERT INTO wsp_schema (version, name) VALUES (7, 'future')");
        assert_int_equal(store_open(&st, f->path, &rw, err, sizeof err), STORE_ERR_SCHEMA);
        assert_null(st);
        assert_non_null(strstr(err, want));
        rw.readonly = true;
        assert_int_equal(store_open(&st, f->path, &rw, err, sizeof err), STORE_ERR_SCHEMA);
        assert_non_null(strstr(err, "schema version 7"));
        pg_exec(f->path, "DELETE FROM wsp_schema WHERE version = 7");
        f->st = open_path(f->path, false);
        return;
    }
    store_close(f->st);
    f->st = NULL;
    poke_user_version(f->path, 7);
    assert_int_equal(store_open(&st, f->path, NULL, err, sizeof err), STORE_ERR_SCHEMA);
    assert_null(st);
    assert_non_null(strstr(err, want));
    assert_non_null(strstr(err, f->path));
    assert_int_equal(store_open(&st, f->path, &ro, err, sizeof err), STORE_ERR_SCHEMA);
    assert_non_null(strstr(err, want));
    /* a refused open changed nothing */
    poke_user_version(f->path, (uint32_t)store_schema_latest());
    f->st = open_path(f->path, false);
}

static void test_store_open_errors(void **state)
{
    struct fixture *f = *state;
    struct store_opts ro = {.synchronous = STORE_SYNC_FULL, .readonly = true};
    struct store *st = (struct store *)1;
    char err[256], path[80];
    int fd;

    if (pg_dsn)
        skip(); /* file paths and files that are not SQLite databases: SQLite only */
    (void)f;
    assert_int_equal(store_open(&st, "", NULL, err, sizeof err), STORE_ERR_INVALID);
    assert_null(st);
    assert_int_equal(store_open(&st, NULL, NULL, NULL, 0), STORE_ERR_INVALID);

    /* the caller creates directories: say which one is missing */
    assert_int_equal(store_open(&st, "/tmp/no-such-dir-wsp/x.db", NULL, err, sizeof err),
                     STORE_ERR_OPEN);
    assert_non_null(strstr(err, "/tmp/no-such-dir-wsp/x.db"));
    assert_non_null(strstr(err, "directory /tmp/no-such-dir-wsp"));

    /* read-only never creates */
    assert_int_equal(store_open(&st, "/tmp/no-such-wsp-file.db", &ro, err, sizeof err),
                     STORE_ERR_OPEN);
    assert_non_null(strstr(err, "/tmp/no-such-wsp-file.db"));

    /* not a database */
    strcpy(path, "/tmp/test_store_bad_XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "this is not an SQLite file, not at all, no sir......", 52), 52);
    close(fd);
    assert_int_equal(store_open(&st, path, NULL, err, sizeof err), STORE_ERR_OPEN);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "not an SQLite database"));
    assert_int_equal(store_open(&st, path, &ro, err, sizeof err), STORE_ERR_OPEN);
    {
        char back[64] = {0};

        fd = open(path, O_RDONLY);
        assert_int_equal(read(fd, back, sizeof back), 52); /* left exactly as it was */
        assert_memory_equal(back, "this is not an SQLite file", 26);
        close(fd);
    }
    remove_db(path);

    /* read-only on a database wsproxy never set up */
    strcpy(path, "/tmp/test_store_empty_XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(store_open(&st, path, &ro, err, sizeof err), STORE_ERR_SCHEMA);
    assert_non_null(strstr(err, "schema version 0"));
    remove_db(path);
}

static void test_store_memory_database(void **state)
{
    struct store *st = NULL;
    struct store_wal_stats w;
    char err[128];

    if (pg_dsn)
        skip(); /* ":memory:" is an SQLite file name */
    (void)state;
    assert_int_equal(store_open(&st, ":memory:", NULL, err, sizeof err), 0);
    store_wal_stats(st, &w);
    assert_false(w.background);
    send_direct(st, "a", "b", "1", NULL, T0);
    assert_int_equal(pending_count(st, "b"), 1);
    store_close(st);
    store_close(NULL);
}

static void test_store_readonly(void **state)
{
    struct fixture *f = *state;
    struct store_msg m = {.sender = "a", .to_user = "b", .body = "1", .created_at = T0};
    struct store_receipt r;
    struct store *ro;
    int64_t sid, n;
    bool joined;

    assert_int_equal(store_session_begin(f->st, "alice", "127.0.0.1", NULL, NULL, T0, &sid), 0);
    send_direct(f->st, "alice", "bob", "\"before\"", NULL, T0);

    ro = open_path(f->path, true);
    assert_int_equal(pending_count(ro, "bob"), 1);
    assert_int_equal(store_session_count_active(ro, NULL, &n), 0);
    assert_int_equal(n, 1);

    /* WAL: the reader sees committed data only, while the writer holds a transaction */
    assert_int_equal(store_begin(f->st), 0);
    send_direct(f->st, "alice", "bob", "\"uncommitted\"", NULL, T0);
    assert_int_equal(pending_count(ro, "bob"), 1);
    assert_int_equal(store_commit(f->st), 0);
    assert_int_equal(pending_count(ro, "bob"), 2);

    /* every write is refused */
    assert_int_equal(store_begin(ro), STORE_ERR_READONLY);
    assert_int_equal(store_msg_insert(ro, &m, &r), STORE_ERR_READONLY);
    assert_non_null(strstr(store_last_error(ro), "read-only"));
    assert_int_equal(store_msg_ack(ro, "bob", 1, sid, T0), STORE_ERR_READONLY);
    assert_int_equal(store_session_begin(ro, "x", "::1", NULL, NULL, T0, &sid), STORE_ERR_READONLY);
    assert_int_equal(store_session_touch(ro, sid, T0), STORE_ERR_READONLY);
    assert_int_equal(store_session_end(ro, sid, T0, "kicked"), STORE_ERR_READONLY);
    assert_int_equal(store_session_end_orphans(ro, T0, "server_restart", &n), STORE_ERR_READONLY);
    assert_int_equal(store_presence_set(ro, "x", true, 1, T0), STORE_ERR_READONLY);
    assert_int_equal(store_room_join(ro, "r", "x", T0, &joined), STORE_ERR_READONLY);
    assert_int_equal(store_room_leave(ro, "r", "x"), STORE_ERR_READONLY);
    assert_int_equal(store_rollback(ro), 0);
    store_close(ro);
    assert_int_equal(pending_count(f->st, "bob"), 2);
}

/* ---- Transactions ---- */

static void test_store_group_commit(void **state)
{
    struct fixture *f = *state;
    struct store_stats s;

    assert_false(store_in_transaction(f->st));
    assert_int_equal(store_commit(f->st), STORE_ERR_MISUSE);
    assert_int_equal(store_rollback(f->st), 0); /* nothing open: no-op */

    assert_int_equal(store_begin(f->st), 0);
    assert_true(store_in_transaction(f->st));
    assert_int_equal(store_begin(f->st), STORE_ERR_MISUSE);
    for (int i = 0; i < 500; i++)
        send_direct(f->st, "alice", "bob", "{\"n\":1}", NULL, T0 + i);
    assert_int_equal(store_rollback(f->st), 0);
    assert_false(store_in_transaction(f->st));
    assert_int_equal(store_stats(f->st, &s), 0);
    assert_int_equal(s.messages, 0);
    assert_int_equal(s.pending_direct, 0);

    assert_int_equal(store_begin(f->st), 0);
    for (int i = 0; i < 500; i++)
        send_direct(f->st, "alice", "bob", "{\"n\":1}", NULL, T0 + i);
    assert_int_equal(store_commit(f->st), 0);
    reopen(f);
    assert_int_equal(store_stats(f->st, &s), 0);
    assert_int_equal(s.messages, 500);
    assert_int_equal(s.pending_direct, 500);
}

static void test_store_busy_between_writers(void **state)
{
    struct fixture *f = *state;
    struct store_opts o = {.synchronous = STORE_SYNC_NORMAL, .cache_mib = 4};
    struct store *other = NULL;
    char err[128];

    if (pg_dsn)
        skip(); /* SQLite's single writer lock; PostgreSQL writers do not block each other at BEGIN */
    assert_int_equal(store_open(&other, f->path, &o, err, sizeof err), 0);
    assert_int_equal(store_begin(f->st), 0);
    assert_int_equal(store_begin(other), STORE_ERR_BUSY);
    assert_false(store_in_transaction(other));
    assert_int_equal(store_presence_set(other, "x", true, 1, T0), STORE_ERR_BUSY);
    assert_non_null(strstr(store_last_error(other), "locked"));
    assert_int_equal(store_commit(f->st), 0);
    assert_int_equal(store_begin(other), 0);
    assert_int_equal(store_commit(other), 0);
    store_close(other);
}

static void test_store_writes_atomic_inside_transaction(void **state)
{
    struct fixture *f = *state;
    int64_t sid, n = 0;
    bool online;

    /* end_orphans uses a savepoint inside a group, BEGIN outside: both must work */
    assert_int_equal(store_session_begin(f->st, "alice", "a", NULL, NULL, T0, &sid), 0);
    assert_int_equal(store_presence_set(f->st, "alice", true, 1, T0), 0);
    assert_int_equal(store_begin(f->st), 0);
    assert_int_equal(store_session_end_orphans(f->st, T0 + 5, "server_restart", &n), 0);
    assert_int_equal(n, 1);
    assert_true(store_in_transaction(f->st));
    assert_int_equal(store_rollback(f->st), 0);
    assert_int_equal(store_session_count_active(f->st, NULL, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_presence_get(f->st, "alice", &online, NULL, NULL), 0);
    assert_true(online);
}

/* The page size of the file's first page (header bytes 16-17, 1 meaning 65536). */
static int file_page_size(const char *path)
{
    unsigned char h[18];
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(read(fd, h, sizeof h), (int)sizeof h);
    close(fd);
    return h[16] << 8 | h[17];
}

/* The page size of the file at path once the store opened it and wrote a message. */
static int page_size_after_use(const char *path)
{
    struct store *st = open_path(path, false);

    send_direct(st, "alice", "bob", "hi", "c1", T0);
    store_close(st);
    return file_page_size(path);
}

/* A new file gets 8 KiB pages (STORE_PAGE_SIZE); a file made with other pages keeps them. */
static void test_store_new_file_has_8k_pages_old_one_keeps_its_own(void **state)
{
    char path[] = "/tmp/test_store_pages_XXXXXX";
    sqlite3 *db;
    int fd;

    (void)state;
    if (pg_dsn)
        skip(); /* SQLite's file format */
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    unlink(path);
    assert_int_equal(page_size_after_use(path), 8192);
    remove_db(path);

    /* a database as SQLite made it before: 4 KiB pages, and it stays so through the migrations */
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;"
                                      " CREATE TABLE t (x); DROP TABLE t;", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(page_size_after_use(path), 4096);
    remove_db(path);
}

static void test_store_wal_checkpoints_in_background(void **state)
{
    struct fixture *f = *state;
    struct store_wal_stats w;
    struct store_stats s;
    struct store *ro;
    char *body = malloc(6000);
    int i;

    if (pg_dsn)
        skip(); /* SQLite's WAL and its checkpoint thread */
    assert_non_null(body);
    memset(body, 'x', 5999);
    body[0] = body[5998] = '"';
    body[5999] = '\0';
    store_wal_stats(f->st, &w);
    assert_true(w.background);
    assert_int_equal(w.checkpoints, 0);

    /* > 16 MiB of WAL in one commit (2,048 pages of 8 KiB; a 6 KB row fills one): the hook wakes
     * the thread */
    assert_int_equal(store_begin(f->st), 0);
    for (i = 0; i < 3000; i++)
        send_direct(f->st, "alice", "bob", body, NULL, T0 + i);
    assert_int_equal(store_commit(f->st), 0);
    for (i = 0; i < 500; i++) {
        store_wal_stats(f->st, &w);
        if (w.checkpoints > 0)
            break;
        usleep(10000);
    }
    assert_true(w.checkpoints > 0);
    assert_int_equal(w.checkpoint_failures, 0);
    assert_string_equal(w.last_error, "");
    assert_true(w.wal_frames >= 2048);

    /* once all is copied, the next commit starts the WAL over */
    for (i = 0; i < 500; i++) {
        send_direct(f->st, "alice", "bob", "1", NULL, T0);
        store_wal_stats(f->st, &w);
        if (w.wal_frames < 100)
            break;
        usleep(10000);
    }
    assert_true(w.wal_frames < 100);
    assert_int_equal(store_stats(f->st, &s), 0);
    assert_int_equal(s.messages, 3000 + i + 1);

    /* readers and memory databases have no thread */
    ro = open_path(f->path, true);
    store_wal_stats(ro, &w);
    assert_false(w.background);
    assert_int_equal(w.checkpoints, 0);
    store_close(ro);
    free(body);
}

/* ---- Sessions ---- */

static void test_store_session_lifecycle(void **state)
{
    struct fixture *f = *state;
    struct store_session s;
    int64_t id, id2, n;

    assert_int_equal(store_session_begin(f->st, "alice", "10.0.0.1", "curl/8", "chat.v1", T0, &id), 0);
    assert_int_equal(store_session_begin(f->st, "alice", "10.0.0.2", NULL, NULL, T0 + 1, &id2), 0);
    assert_true(id2 > id);

    assert_int_equal(store_session_get(f->st, id, &s), 0);
    assert_int_equal(s.id, id);
    assert_string_equal(s.user, "alice");
    assert_string_equal(s.remote_addr, "10.0.0.1");
    assert_string_equal(s.user_agent, "curl/8");
    assert_string_equal(s.subprotocol, "chat.v1");
    assert_int_equal(s.connected_at, T0);
    assert_int_equal(s.last_seen_at, T0);
    assert_false(s.ended);
    assert_null(s.end_reason);
    store_session_release(&s);
    store_session_release(&s); /* released twice: still fine */

    assert_int_equal(store_session_touch(f->st, id, T0 + 100), 0);
    assert_int_equal(store_session_touch(f->st, id, T0 + 50), 0); /* never goes back */
    assert_int_equal(store_session_touch(f->st, 9999, T0), STORE_ERR_NOTFOUND);

    assert_int_equal(store_session_count_active(f->st, "alice", &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(store_session_end(f->st, id, T0 + 200, "heartbeat_timeout"), 0);
    /* the first end wins */
    assert_int_equal(store_session_end(f->st, id, T0 + 300, "kicked"), STORE_ERR_NOTFOUND);
    assert_int_equal(store_session_end(f->st, 9999, T0, "kicked"), STORE_ERR_NOTFOUND);
    assert_int_equal(store_session_end(f->st, id, T0, NULL), STORE_ERR_INVALID);

    assert_int_equal(store_session_get(f->st, id, &s), 0);
    assert_true(s.ended);
    assert_int_equal(s.ended_at, T0 + 200);
    assert_string_equal(s.end_reason, "heartbeat_timeout");
    assert_int_equal(s.last_seen_at, T0 + 100);
    store_session_release(&s);

    assert_int_equal(store_session_get(f->st, id2, &s), 0);
    assert_null(s.user_agent);
    assert_null(s.subprotocol);
    store_session_release(&s);

    assert_int_equal(store_session_get(f->st, 9999, &s), STORE_ERR_NOTFOUND);
    assert_null(s.user);
    store_session_release(&s);

    assert_int_equal(store_session_count_active(f->st, "alice", &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_session_count_active(f->st, NULL, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_session_count_active(f->st, "nobody", &n), 0);
    assert_int_equal(n, 0);

    assert_int_equal(store_session_begin(f->st, "", "x", NULL, NULL, T0, &id), STORE_ERR_INVALID);
    assert_int_equal(store_session_begin(f->st, "u", NULL, NULL, NULL, T0, &id), STORE_ERR_INVALID);
}

static void test_store_session_list_filters(void **state)
{
    struct fixture *f = *state;
    int64_t ids[6];
    const char *users[6] = {"alice", "bob", "alice", "bob", "alice", "carol"};

    for (int i = 0; i < 6; i++)
        assert_int_equal(
            store_session_begin(f->st, users[i], "h", NULL, NULL, T0 + i * 1000, &ids[i]), 0);
    assert_int_equal(store_session_end(f->st, ids[0], T0 + 9000, "client_close"), 0);
    assert_int_equal(store_session_end(f->st, ids[3], T0 + 9000, "slow_consumer"), 0);

    static const struct {
        const char *user;
        enum store_session_state state;
        int64_t since, before;
        int limit;
        int n;
        int want[6]; /* indexes into ids, newest first */
    } cases[] = {
        {NULL, STORE_SESSIONS_ANY, 0, 0, 10, 6, {5, 4, 3, 2, 1, 0}},
        {NULL, STORE_SESSIONS_ANY, 0, 0, 2, 2, {5, 4}},
        {NULL, STORE_SESSIONS_ACTIVE, 0, 0, 10, 4, {5, 4, 2, 1}},
        {NULL, STORE_SESSIONS_ENDED, 0, 0, 10, 2, {3, 0}},
        {"alice", STORE_SESSIONS_ANY, 0, 0, 10, 3, {4, 2, 0}},
        {"alice", STORE_SESSIONS_ACTIVE, 0, 0, 10, 2, {4, 2}},
        {"bob", STORE_SESSIONS_ENDED, 0, 0, 10, 1, {3}},
        {NULL, STORE_SESSIONS_ANY, T0 + 3000, 0, 10, 3, {5, 4, 3}},
        {NULL, STORE_SESSIONS_ACTIVE, T0 + 3000, 0, 10, 2, {5, 4}},
        {"alice", STORE_SESSIONS_ANY, T0 + 1000, 0, 10, 2, {4, 2}},
        {"nobody", STORE_SESSIONS_ANY, 0, 0, 10, 0, {0}},
    };

    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct store_session_filter flt = {cases[c].user, cases[c].state, cases[c].since, 0,
                                           cases[c].limit};
        struct seen s = {0};

        assert_int_equal(store_session_list(f->st, &flt, on_session, &s), 0);
        assert_int_equal(s.n, cases[c].n);
        for (int i = 0; i < s.n; i++)
            assert_int_equal(s.id[i], ids[cases[c].want[i]]);
    }

    /* paging with before_id walks the same order without gaps or repeats */
    {
        struct store_session_filter flt = {NULL, STORE_SESSIONS_ANY, 0, 0, 4};
        struct seen s = {0};

        assert_int_equal(store_session_list(f->st, &flt, on_session, &s), 0);
        assert_int_equal(s.n, 4);
        flt.before_id = s.id[3];
        assert_int_equal(store_session_list(f->st, &flt, on_session, &s), 0);
        assert_int_equal(s.n, 6);
        for (int i = 0; i < 6; i++)
            assert_int_equal(s.id[i], ids[5 - i]);
        assert_string_equal(s.body[2], "slow_consumer");
        assert_string_equal(s.body[5], "client_close");
        assert_string_equal(s.body[0], "-");
    }

    /* callback stop value comes back */
    {
        struct store_session_filter flt = {NULL, STORE_SESSIONS_ANY, 0, 0, 10};
        struct seen s = {.stop_after = 2};

        assert_int_equal(store_session_list(f->st, &flt, on_session, &s), 7);
        assert_int_equal(s.n, 2);
    }

    /* bad filters */
    {
        struct store_session_filter bad[] = {
            {NULL, STORE_SESSIONS_ANY, 0, 0, 0},
            {"", STORE_SESSIONS_ANY, 0, 0, 5},
            {NULL, (enum store_session_state)9, 0, 0, 5},
        };
        struct seen s = {0};

        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            assert_int_equal(store_session_list(f->st, &bad[i], on_session, &s), STORE_ERR_INVALID);
        assert_int_equal(store_session_list(f->st, NULL, on_session, &s), STORE_ERR_INVALID);
    }
}

static void test_store_session_end_orphans(void **state)
{
    struct fixture *f = *state;
    struct store_session s;
    int64_t a1, a2, b1, c1, n;
    int conns;
    bool online;
    int64_t seen;

    assert_int_equal(store_session_begin(f->st, "alice", "h", NULL, NULL, T0, &a1), 0);
    assert_int_equal(store_session_begin(f->st, "alice", "h", NULL, NULL, T0, &a2), 0);
    assert_int_equal(store_session_begin(f->st, "bob", "h", NULL, NULL, T0, &b1), 0);
    assert_int_equal(store_session_begin(f->st, "carol", "h", NULL, NULL, T0, &c1), 0);
    assert_int_equal(store_session_touch(f->st, a2, T0 + 5000), 0);
    assert_int_equal(store_session_end(f->st, c1, T0 + 10, "client_close"), 0);
    assert_int_equal(store_presence_set(f->st, "alice", true, 2, T0), 0);
    assert_int_equal(store_presence_set(f->st, "bob", true, 1, T0 + 7000), 0);
    assert_int_equal(store_presence_set(f->st, "carol", false, 0, T0 + 10), 0);

    reopen(f); /* the "crash" */
    assert_int_equal(store_session_end_orphans(f->st, T0 + 60000, "server_restart", &n), 0);
    assert_int_equal(n, 3);

    assert_int_equal(store_session_get(f->st, a2, &s), 0);
    assert_true(s.ended);
    assert_int_equal(s.ended_at, T0 + 60000);
    assert_string_equal(s.end_reason, "server_restart");
    store_session_release(&s);
    assert_int_equal(store_session_get(f->st, c1, &s), 0);
    assert_string_equal(s.end_reason, "client_close"); /* ended before: untouched */
    store_session_release(&s);

    /* offline with no connections; last_seen = newest activity of the orphaned sessions */
    assert_int_equal(store_presence_get(f->st, "alice", &online, &conns, &seen), 0);
    assert_false(online);
    assert_int_equal(conns, 0);
    assert_int_equal(seen, T0 + 5000);
    assert_int_equal(store_presence_get(f->st, "bob", &online, &conns, &seen), 0);
    assert_false(online);
    assert_int_equal(seen, T0 + 7000); /* kept: newer than its sessions */
    assert_int_equal(store_presence_get(f->st, "carol", &online, &conns, &seen), 0);
    assert_int_equal(seen, T0 + 10);

    assert_int_equal(store_session_count_active(f->st, NULL, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_session_end_orphans(f->st, T0 + 70000, "server_restart", NULL), 0);
    assert_int_equal(store_session_end_orphans(f->st, T0, "", &n), STORE_ERR_INVALID);
}

/* ---- Presence ---- */

static void test_store_presence(void **state)
{
    struct fixture *f = *state;
    bool online = true;
    int conns = -1;
    int64_t seen = 0;

    assert_int_equal(store_presence_get(f->st, "alice", &online, &conns, &seen), STORE_ERR_NOTFOUND);
    assert_non_null(strstr(store_last_error(f->st), "alice"));
    assert_int_equal(store_presence_set(f->st, "alice", true, 1, T0), 0);
    assert_int_equal(store_presence_get(f->st, "alice", &online, &conns, &seen), 0);
    assert_true(online);
    assert_int_equal(conns, 1);
    assert_int_equal(seen, T0);
    assert_int_equal(store_presence_set(f->st, "alice", true, 3, T0 + 10), 0);
    assert_int_equal(store_presence_set(f->st, "alice", false, 0, T0 + 5), 0); /* late clock */
    assert_int_equal(store_presence_get(f->st, "alice", &online, &conns, &seen), 0);
    assert_false(online);
    assert_int_equal(conns, 0);
    assert_int_equal(seen, T0 + 10);
    assert_int_equal(store_presence_get(f->st, "alice", NULL, NULL, NULL), 0);

    assert_int_equal(store_presence_set(f->st, "", true, 1, T0), STORE_ERR_INVALID);
    assert_int_equal(store_presence_set(f->st, "x", true, -1, T0), STORE_ERR_INVALID);
    assert_int_equal(store_presence_get(f->st, NULL, &online, &conns, &seen), STORE_ERR_INVALID);
}

/* ---- Direct messages ---- */

static void test_store_direct_pending_survives_restart(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    int64_t sid, m1, m2, m3;

    m1 = send_direct(f->st, "alice", "bob", "{\"t\":\"one\"}", "c1", T0);
    m2 = send_direct(f->st, "carol", "bob", "{\"t\":\"two\"}", NULL, T0 + 1);
    m3 = send_direct(f->st, "alice", "dave", "{\"t\":\"x\"}", NULL, T0 + 2);
    assert_true(m1 < m2 && m2 < m3);

    reopen(f);
    assert_int_equal(store_pending_direct(f->st, "bob", 0, 10, on_msg, &s), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.id[0], m1);
    assert_int_equal(s.id[1], m2);
    assert_string_equal(s.from[0], "alice");
    assert_string_equal(s.body[0], "{\"t\":\"one\"}");

    /* not acked: a second connection gets them again */
    assert_int_equal(pending_count(f->st, "bob"), 2);

    assert_int_equal(store_session_begin(f->st, "bob", "h", NULL, NULL, T0, &sid), 0);
    assert_int_equal(store_msg_ack(f->st, "bob", m1, sid, T0 + 100), 0);
    reopen(f);
    memset(&s, 0, sizeof s);
    assert_int_equal(store_pending_direct(f->st, "bob", 0, 10, on_msg, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.id[0], m2);
    assert_int_equal(pending_count(f->st, "dave"), 1);
    assert_int_equal(pending_count(f->st, "alice"), 0);
}

static void test_store_direct_pending_paging(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    int64_t ids[7];

    for (int i = 0; i < 7; i++)
        ids[i] = send_direct(f->st, "alice", "bob", "1", NULL, T0 + i);
    assert_int_equal(store_pending_direct(f->st, "bob", 0, 3, on_msg, &s), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(store_pending_direct(f->st, "bob", s.id[2], 3, on_msg, &s), 0);
    assert_int_equal(store_pending_direct(f->st, "bob", s.id[5], 3, on_msg, &s), 0);
    assert_int_equal(s.n, 7);
    for (int i = 0; i < 7; i++)
        assert_int_equal(s.id[i], ids[i]);

    memset(&s, 0, sizeof s);
    s.stop_after = 1;
    assert_int_equal(store_pending_direct(f->st, "bob", 0, 3, on_msg, &s), 7);
    assert_int_equal(s.n, 1);
    assert_int_equal(store_pending_direct(f->st, "bob", 0, 0, on_msg, &s), STORE_ERR_INVALID);
    assert_int_equal(store_pending_direct(f->st, "", 0, 1, on_msg, &s), STORE_ERR_INVALID);
    assert_int_equal(store_pending_direct(f->st, "bob", 0, 1, NULL, &s), STORE_ERR_INVALID);
}

static void test_store_idempotent_cid(void **state)
{
    struct fixture *f = *state;
    struct store_msg m = {.sender = "alice", .to_user = "bob", .body = "1", .cid = "c1",
                          .created_at = T0};
    struct store_receipt r1, r2, r3;
    struct store_stats st;

    assert_int_equal(store_msg_insert(f->st, &m, &r1), 0);
    assert_false(r1.duplicate);
    assert_int_equal(r1.created_at, T0);

    /* same sender, same cid, later and with a different body: the first receipt, nothing new */
    m.created_at = T0 + 500;
    m.body = "2";
    assert_int_equal(store_msg_insert(f->st, &m, &r2), 0);
    assert_true(r2.duplicate);
    assert_int_equal(r2.id, r1.id);
    assert_int_equal(r2.created_at, T0);

    /* inside a group commit as well */
    assert_int_equal(store_begin(f->st), 0);
    assert_int_equal(store_msg_insert(f->st, &m, &r2), 0);
    assert_true(r2.duplicate);
    assert_int_equal(store_commit(f->st), 0);

    /* the cid is per sender */
    m.sender = "carol";
    assert_int_equal(store_msg_insert(f->st, &m, &r3), 0);
    assert_false(r3.duplicate);
    assert_true(r3.id > r1.id);

    /* no cid: never a duplicate */
    m.cid = NULL;
    assert_int_equal(store_msg_insert(f->st, &m, &r3), 0);
    assert_false(r3.duplicate);
    assert_int_equal(store_msg_insert(f->st, &m, &r3), 0);
    assert_false(r3.duplicate);

    assert_int_equal(store_stats(f->st, &st), 0);
    assert_int_equal(st.messages, 4);
    assert_int_equal(st.pending_direct, 4);
    assert_int_equal(pending_count(f->st, "bob"), 4);
}

static void test_store_msg_insert_invalid(void **state)
{
    struct fixture *f = *state;
    struct store_receipt r;
    static const struct store_msg bad[] = {
        {.sender = "a", .to_user = "b", .room = "r", .body = "1"}, /* both */
        {.sender = "a", .body = "1"},                              /* neither */
        {.sender = "", .to_user = "b", .body = "1"},
        {.sender = NULL, .to_user = "b", .body = "1"},
        {.sender = "a", .to_user = "b", .body = NULL},
        {.sender = "a", .to_user = "", .body = "1"},
        {.sender = "a", .room = "", .body = "1"},
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(store_msg_insert(f->st, &bad[i], &r), STORE_ERR_INVALID);
    assert_int_equal(store_msg_insert(f->st, NULL, &r), STORE_ERR_INVALID);
    assert_int_equal(store_msg_insert(f->st, &bad[0], NULL), STORE_ERR_INVALID);
}

static void test_store_ack_rules(void **state)
{
    struct fixture *f = *state;
    struct store_msg_info info;
    int64_t m, other;

    m = send_direct(f->st, "alice", "bob", "1", NULL, T0);
    other = send_direct(f->st, "alice", "carol", "1", NULL, T0);

    /* not the recipient, not a message, the sender: NOTFOUND, nothing changes */
    assert_int_equal(store_msg_ack(f->st, "carol", m, 1, T0 + 1), STORE_ERR_NOTFOUND);
    assert_int_equal(store_msg_ack(f->st, "alice", m, 1, T0 + 1), STORE_ERR_NOTFOUND);
    assert_int_equal(store_msg_ack(f->st, "bob", 99999, 1, T0 + 1), STORE_ERR_NOTFOUND);
    assert_int_equal(store_msg_ack(f->st, "bob", other, 1, T0 + 1), STORE_ERR_NOTFOUND);
    assert_int_equal(store_msg_ack(f->st, "", m, 1, T0 + 1), STORE_ERR_INVALID);
    assert_int_equal(pending_count(f->st, "bob"), 1);

    /* first ack wins: time and session of the first stay */
    assert_int_equal(store_msg_ack(f->st, "bob", m, 11, T0 + 10), 0);
    assert_int_equal(store_msg_ack(f->st, "bob", m, 12, T0 + 20), 0);
    assert_int_equal(store_msg_get(f->st, m, &info), 0);
    assert_true(info.direct);
    assert_true(info.delivered);
    assert_int_equal(info.delivered_at, T0 + 10);
    assert_int_equal(info.delivered_by, 11);
    store_msg_info_release(&info);
    assert_int_equal(pending_count(f->st, "bob"), 0);

    /* session unknown (0): delivered, no session */
    assert_int_equal(store_msg_ack(f->st, "carol", other, 0, T0 + 30), 0);
    assert_int_equal(store_msg_get(f->st, other, &info), 0);
    assert_true(info.delivered);
    assert_int_equal(info.delivered_by, 0);
    store_msg_info_release(&info);
}

static void test_store_msg_get(void **state)
{
    struct fixture *f = *state;
    struct store_msg_info info;
    int64_t d, r;

    d = send_direct(f->st, "alice", "bob", "{\"a\":[1,2]}", "cid-9", T0 + 3);
    assert_int_equal(store_room_join(f->st, "lobby", "alice", T0, NULL), 0);
    r = send_room(f->st, "alice", "lobby", "\"hey\"", T0 + 4);

    assert_int_equal(store_msg_get(f->st, d, &info), 0);
    assert_int_equal(info.msg.id, d);
    assert_string_equal(info.msg.sender, "alice");
    assert_string_equal(info.msg.to_user, "bob");
    assert_null(info.msg.room);
    assert_string_equal(info.msg.body, "{\"a\":[1,2]}");
    assert_string_equal(info.msg.cid, "cid-9");
    assert_int_equal(info.msg.created_at, T0 + 3);
    assert_true(info.direct);
    assert_false(info.delivered);
    assert_int_equal(info.delivered_at, 0);
    store_msg_info_release(&info);

    assert_int_equal(store_msg_get(f->st, r, &info), 0);
    assert_false(info.direct);
    assert_false(info.delivered);
    assert_string_equal(info.msg.room, "lobby");
    assert_null(info.msg.to_user);
    assert_null(info.msg.cid);
    store_msg_info_release(&info);

    assert_int_equal(store_msg_get(f->st, 424242, &info), STORE_ERR_NOTFOUND);
    store_msg_info_release(&info);
    store_msg_info_release(NULL);
}

/* ---- History ---- */

static void test_store_history_direct_paging(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    int64_t ids[9];
    bool more = false;

    /* a <-> b in both directions, with other traffic between */
    for (int i = 0; i < 9; i++) {
        if (i % 2)
            ids[i] = send_direct(f->st, "b", "a", "ba", NULL, T0 + i);
        else
            ids[i] = send_direct(f->st, "a", "b", "ab", NULL, T0 + i);
        send_direct(f->st, "a", "c", "ac", NULL, T0 + i);
        send_direct(f->st, "c", "b", "cb", NULL, T0 + i);
    }

    assert_int_equal(store_history_direct(f->st, "a", "b", 0, 4, on_msg, &s, &more), 0);
    assert_true(more);
    assert_int_equal(s.n, 4);
    assert_int_equal(store_history_direct(f->st, "b", "a", s.id[3], 4, on_msg, &s, &more), 0);
    assert_true(more);
    assert_int_equal(store_history_direct(f->st, "a", "b", s.id[7], 4, on_msg, &s, &more), 0);
    assert_false(more);
    assert_int_equal(s.n, 9);
    for (int i = 0; i < 9; i++)
        assert_int_equal(s.id[i], ids[8 - i]);
    assert_string_equal(s.body[0], "ab");
    assert_string_equal(s.body[1], "ba");

    /* exactly limit left: no "more" */
    memset(&s, 0, sizeof s);
    assert_int_equal(store_history_direct(f->st, "a", "b", 0, 9, on_msg, &s, &more), 0);
    assert_false(more);
    assert_int_equal(s.n, 9);

    /* notes to self show once */
    send_direct(f->st, "a", "a", "self", NULL, T0);
    memset(&s, 0, sizeof s);
    assert_int_equal(store_history_direct(f->st, "a", "a", 0, 10, on_msg, &s, &more), 0);
    assert_int_equal(s.n, 1);

    memset(&s, 0, sizeof s);
    assert_int_equal(store_history_direct(f->st, "a", "nobody", 0, 10, on_msg, &s, &more), 0);
    assert_int_equal(s.n, 0);
    assert_false(more);
    assert_int_equal(store_history_direct(f->st, "a", "b", 0, 0, on_msg, &s, &more),
                     STORE_ERR_INVALID);
    assert_int_equal(store_history_direct(f->st, NULL, "b", 0, 1, on_msg, &s, &more),
                     STORE_ERR_INVALID);
    s.stop_after = 1;
    assert_int_equal(store_history_direct(f->st, "a", "b", 0, 5, on_msg, &s, &more), 7);
}

static void test_store_history_room_paging(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    int64_t ids[5];
    bool more;

    assert_int_equal(store_room_join(f->st, "lobby", "a", T0, NULL), 0);
    for (int i = 0; i < 5; i++) {
        ids[i] = send_room(f->st, "a", "lobby", "m", T0 + i);
        send_room(f->st, "a", "other", "x", T0 + i);
    }
    assert_int_equal(store_history_room(f->st, "lobby", 0, 2, on_msg, &s, &more), 0);
    assert_true(more);
    assert_int_equal(store_history_room(f->st, "lobby", s.id[1], 2, on_msg, &s, &more), 0);
    assert_true(more);
    assert_int_equal(store_history_room(f->st, "lobby", s.id[3], 2, on_msg, &s, &more), 0);
    assert_false(more);
    assert_int_equal(s.n, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(s.id[i], ids[4 - i]);
    assert_int_equal(store_history_room(f->st, "", 0, 2, on_msg, &s, &more), STORE_ERR_INVALID);
}

/* ---- Rooms ---- */

static void test_store_room_membership(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    int64_t cursor, last;
    bool joined, member;

    send_room(f->st, "x", "lobby", "old", T0);
    last = send_room(f->st, "x", "lobby", "old", T0);
    send_room(f->st, "x", "elsewhere", "later id, other room", T0);

    assert_int_equal(store_room_join(f->st, "lobby", "alice", T0, &joined), 0);
    assert_true(joined);
    assert_int_equal(store_room_cursor(f->st, "lobby", "alice", &cursor), 0);
    assert_int_equal(cursor, last); /* no backlog for a new member */
    assert_int_equal(store_room_join(f->st, "empty", "alice", T0, NULL), 0);
    assert_int_equal(store_room_cursor(f->st, "empty", "alice", &cursor), 0);
    assert_int_equal(cursor, 0);

    /* joining again keeps the cursor */
    int64_t m = send_room(f->st, "x", "lobby", "new", T0);
    assert_int_equal(store_room_join(f->st, "lobby", "alice", T0 + 1, &joined), 0);
    assert_false(joined);
    assert_int_equal(store_room_cursor(f->st, "lobby", "alice", &cursor), 0);
    assert_int_equal(cursor, last);
    assert_true(m > last);

    assert_int_equal(store_room_join(f->st, "lobby", "bob", T0, NULL), 0);
    assert_int_equal(store_room_join(f->st, "lobby", "carol", T0, NULL), 0);
    assert_int_equal(store_room_join(f->st, "dev", "bob", T0, NULL), 0);
    assert_int_equal(store_room_join(f->st, "dev", "alice", T0, NULL), 0);
    assert_int_equal(store_room_join(f->st, "ops", "dave", T0, NULL), 0);

    assert_int_equal(store_room_is_member(f->st, "lobby", "bob", &member), 0);
    assert_true(member);
    assert_int_equal(store_room_is_member(f->st, "ops", "bob", &member), 0);
    assert_false(member);
    assert_int_equal(store_room_is_member(f->st, "", "bob", &member), STORE_ERR_INVALID);

    assert_int_equal(store_room_members(f->st, "lobby", on_name, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.name[0], "alice");
    assert_string_equal(s.name[2], "carol");

    memset(&s, 0, sizeof s);
    assert_int_equal(store_user_rooms(f->st, "alice", on_name, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.name[0], "dev");
    assert_string_equal(s.name[1], "empty");
    assert_string_equal(s.name[2], "lobby");

    /* bob shares lobby and dev with alice: once; dave shares nothing */
    memset(&s, 0, sizeof s);
    assert_int_equal(store_users_sharing_room(f->st, "alice", on_name, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.name[0], "bob");
    assert_string_equal(s.name[1], "carol");
    memset(&s, 0, sizeof s);
    assert_int_equal(store_users_sharing_room(f->st, "dave", on_name, &s), 0);
    assert_int_equal(s.n, 0);
    s.stop_after = 1;
    assert_int_equal(store_users_sharing_room(f->st, "alice", on_name, &s), 7);
    assert_int_equal(store_room_members(f->st, "lobby", NULL, &s), STORE_ERR_INVALID);

    /* leave forgets the cursor: a rejoin starts at the newest */
    assert_int_equal(store_room_leave(f->st, "lobby", "alice"), 0);
    assert_int_equal(store_room_leave(f->st, "lobby", "alice"), STORE_ERR_NOTFOUND);
    assert_int_equal(store_room_cursor(f->st, "lobby", "alice", &cursor), STORE_ERR_NOTFOUND);
    assert_int_equal(store_room_join(f->st, "lobby", "alice", T0 + 2, &joined), 0);
    assert_true(joined);
    assert_int_equal(store_room_cursor(f->st, "lobby", "alice", &cursor), 0);
    assert_int_equal(cursor, m);

    struct store_stats st;
    assert_int_equal(store_stats(f->st, &st), 0);
    assert_int_equal(st.rooms, 4);
}

static void test_store_room_ack_moves_cursor(void **state)
{
    struct fixture *f = *state;
    int64_t m1, m2, cursor;

    assert_int_equal(store_room_join(f->st, "lobby", "alice", T0, NULL), 0);
    assert_int_equal(store_room_join(f->st, "lobby", "bob", T0, NULL), 0);
    m1 = send_room(f->st, "alice", "lobby", "1", T0);
    m2 = send_room(f->st, "alice", "lobby", "2", T0);

    assert_int_equal(store_msg_ack(f->st, "bob", m2, 1, T0), 0);
    assert_int_equal(store_room_cursor(f->st, "lobby", "bob", &cursor), 0);
    assert_int_equal(cursor, m2);
    /* an older ack never moves it back */
    assert_int_equal(store_msg_ack(f->st, "bob", m1, 1, T0), 0);
    assert_int_equal(store_room_cursor(f->st, "lobby", "bob", &cursor), 0);
    assert_int_equal(cursor, m2);
    /* not a member */
    assert_int_equal(store_msg_ack(f->st, "eve", m1, 1, T0), STORE_ERR_NOTFOUND);
    /* alice's cursor did not move with bob's */
    assert_int_equal(store_room_cursor(f->st, "lobby", "alice", &cursor), 0);
    assert_int_equal(cursor, 0);
}

static void test_store_room_replay(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    int64_t ids[10], cursor;
    bool truncated = true;

    assert_int_equal(store_room_join(f->st, "lobby", "alice", T0, NULL), 0);
    assert_int_equal(store_room_join(f->st, "lobby", "bob", T0, NULL), 0);
    for (int i = 0; i < 10; i++) {
        ids[i] = send_room(f->st, "alice", "lobby", "m", T0 + i);
        send_room(f->st, "alice", "noise", "n", T0 + i);
    }
    assert_int_equal(store_msg_ack(f->st, "bob", ids[3], 1, T0), 0);

    /* 6 waiting, limit 10: all, in id order */
    assert_int_equal(store_room_replay(f->st, "lobby", "bob", 10, on_msg, &s, &truncated), 0);
    assert_false(truncated);
    assert_int_equal(s.n, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(s.id[i], ids[4 + i]);

    /* exactly the limit: not truncated */
    memset(&s, 0, sizeof s);
    assert_int_equal(store_room_replay(f->st, "lobby", "bob", 6, on_msg, &s, &truncated), 0);
    assert_false(truncated);
    assert_int_equal(s.n, 6);

    /* limit 4: the newest 4, truncated, cursor untouched; history reaches the rest */
    memset(&s, 0, sizeof s);
    assert_int_equal(store_room_replay(f->st, "lobby", "bob", 4, on_msg, &s, &truncated), 0);
    assert_true(truncated);
    assert_int_equal(s.n, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(s.id[i], ids[6 + i]);
    assert_int_equal(store_room_cursor(f->st, "lobby", "bob", &cursor), 0);
    assert_int_equal(cursor, ids[3]);
    {
        struct seen h = {0};
        bool more;

        assert_int_equal(store_history_room(f->st, "lobby", s.id[0], 2, on_msg, &h, &more), 0);
        assert_int_equal(h.id[0], ids[5]);
        assert_int_equal(h.id[1], ids[4]);
    }

    /* acked up to the newest: nothing */
    assert_int_equal(store_msg_ack(f->st, "bob", ids[9], 1, T0), 0);
    memset(&s, 0, sizeof s);
    assert_int_equal(store_room_replay(f->st, "lobby", "bob", 4, on_msg, &s, &truncated), 0);
    assert_int_equal(s.n, 0);
    assert_false(truncated);

    /* survives a restart; not a member; bad arguments */
    reopen(f);
    memset(&s, 0, sizeof s);
    assert_int_equal(store_room_replay(f->st, "lobby", "alice", 100, on_msg, &s, NULL), 0);
    assert_int_equal(s.n, 10);
    assert_int_equal(store_room_replay(f->st, "lobby", "eve", 4, on_msg, &s, &truncated),
                     STORE_ERR_NOTFOUND);
    assert_int_equal(store_room_replay(f->st, "lobby", "bob", 0, on_msg, &s, &truncated),
                     STORE_ERR_INVALID);
    assert_int_equal(store_room_replay(f->st, "lobby", "bob", 1, NULL, &s, &truncated),
                     STORE_ERR_INVALID);
    memset(&s, 0, sizeof s);
    s.stop_after = 2;
    assert_int_equal(store_room_replay(f->st, "lobby", "alice", 100, on_msg, &s, NULL), 7);
}

/* ---- Stats, errors ---- */

static void test_store_stats(void **state)
{
    struct fixture *f = *state;
    struct store_stats s;
    int64_t sid, m;

    assert_int_equal(store_stats(f->st, &s), 0);
    assert_int_equal(s.sessions_total, 0);
    assert_int_equal(store_session_begin(f->st, "a", "h", NULL, NULL, T0, &sid), 0);
    assert_int_equal(store_session_begin(f->st, "b", "h", NULL, NULL, T0, &sid), 0);
    assert_int_equal(store_session_end(f->st, sid, T0, "client_close"), 0);
    assert_int_equal(store_presence_set(f->st, "a", true, 1, T0), 0);
    assert_int_equal(store_presence_set(f->st, "b", false, 0, T0), 0);
    m = send_direct(f->st, "a", "b", "1", NULL, T0);
    send_direct(f->st, "a", "b", "2", NULL, T0);
    assert_int_equal(store_msg_ack(f->st, "b", m, sid, T0), 0);
    assert_int_equal(store_room_join(f->st, "r1", "a", T0, NULL), 0);
    assert_int_equal(store_room_join(f->st, "r1", "b", T0, NULL), 0);
    assert_int_equal(store_room_join(f->st, "r2", "a", T0, NULL), 0);
    send_room(f->st, "a", "r1", "3", T0);

    assert_int_equal(store_stats(f->st, &s), 0);
    assert_int_equal(s.sessions_active, 1);
    assert_int_equal(s.sessions_total, 2);
    assert_int_equal(s.users_online, 1);
    assert_int_equal(s.messages, 3);
    assert_int_equal(s.pending_direct, 1);
    assert_int_equal(s.rooms, 2);
}

static void test_store_strerror_covers_every_code(void **state)
{
    static const int codes[] = {STORE_OK,           STORE_ERR_IO,       STORE_ERR_NOTFOUND,
                                STORE_ERR_BUSY,     STORE_ERR_CONSTRAINT, STORE_ERR_READONLY,
                                STORE_ERR_SCHEMA,   STORE_ERR_INVALID,  STORE_ERR_NOMEM,
                                STORE_ERR_MISUSE,   STORE_ERR_OPEN};
    const char *unknown = store_strerror(-999);

    (void)state;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        assert_non_null(store_strerror(codes[i]));
        assert_string_not_equal(store_strerror(codes[i]), unknown);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(store_strerror(codes[i]), store_strerror(codes[j]));
    }
    assert_string_equal(store_last_error(NULL), "no store");
}

/* ---- Retention and erasure ---- */

struct convs {
    int n;
    char peer[MAX_ROWS][16];
    int64_t last_id[MAX_ROWS];
    bool gone[MAX_ROWS];
};

static int on_conv(void *ctx, const struct store_conversation *c)
{
    struct convs *x = ctx;
    assert_true(x->n < MAX_ROWS);
    snprintf(x->peer[x->n], sizeof x->peer[0], "%s", c->peer);
    x->last_id[x->n] = c->last.id;
    x->gone[x->n] = c->last_gone;
    if (c->last_gone)
        assert_null(c->last.sender);
    x->n++;
    return 0;
}

/* Steps until one deletes nothing (a full sweep finds nothing); returns the rows deleted. */
static int64_t retain_all(struct store *st, int64_t cutoff, int64_t keep, int budget)
{
    int64_t total = 0, n;
    int idle = 0;
    for (int i = 0; i < 1000 && idle < 3; i++) {
        assert_int_equal(store_retention_step(st, cutoff, keep, budget, &n), 0);
        assert_true(n <= budget);
        total += n;
        idle = n ? 0 : idle + 1;
    }
    return total;
}

static int64_t count_messages(struct store *st)
{
    struct store_stats ss;
    assert_int_equal(store_stats(st, &ss), 0);
    return ss.messages;
}

static void test_store_retention_count(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    bool more;
    int64_t last = 0;
    for (int i = 0; i < 10; i++) {
        send_room(f->st, "a", "r", "m", T0 + i);
        send_direct(f->st, i % 2 ? "a" : "b", i % 2 ? "b" : "a", "d", NULL, T0 + i);
        if (i < 5)
            send_direct(f->st, "c", "c", "self", NULL, T0 + i);
        last = send_room(f->st, "b", "small", "s", T0 + i);
    }
    int64_t before = count_messages(f->st);
    assert_int_equal(before, 35);
    /* budget 4: several steps, some ending inside a conversation */
    assert_int_equal(retain_all(f->st, 0, 3, 4), (10 - 3) * 3 + (5 - 3));
    assert_int_equal(count_messages(f->st), 3 * 4);
    assert_int_equal(store_history_room(f->st, "r", 0, 50, on_msg, &s, &more), 0);
    assert_int_equal(s.n, 3);
    s.n = 0;
    assert_int_equal(store_history_direct(f->st, "a", "b", 0, 50, on_msg, &s, &more), 0);
    assert_int_equal(s.n, 3);
    s.n = 0;
    assert_int_equal(store_history_direct(f->st, "c", "c", 0, 50, on_msg, &s, &more), 0);
    assert_int_equal(s.n, 3);
    /* the newest is kept, new ids keep growing, and the counts follow new messages */
    assert_true(send_room(f->st, "a", "r", "new", T0 + 50) > last);
    assert_int_equal(retain_all(f->st, 0, 3, 500), 1);
    assert_int_equal(store_retention_step(f->st, 0, 3, 0, &last), STORE_ERR_INVALID);
}

static void test_store_retention_age_keeps_newest(void **state)
{
    struct fixture *f = *state;
    struct convs c = {0};
    bool more;
    assert_int_equal(store_room_join(f->st, "old", "a", T0, NULL), 0);
    send_room(f->st, "a", "old", "x", T0);
    int64_t last = 0;
    for (int i = 0; i < 600; i++)
        last = send_direct(f->st, "a", "b", "d", NULL, T0 + 1 + i);
    /* one step takes at most the budget, then the rest; everything is older than the cutoff, but
     * the newest row overall stays: its id would be given again (max(id)+1) */
    int64_t n;
    assert_int_equal(store_retention_step(f->st, T0 + 10000, 0, 500, &n), 0);
    assert_int_equal(n, 500);
    assert_int_equal(retain_all(f->st, T0 + 10000, 0, 500), 100);
    assert_int_equal(count_messages(f->st), 1);
    struct store_msg_info info;
    assert_int_equal(store_msg_get(f->st, last, &info), 0);
    store_msg_info_release(&info);
    assert_true(send_direct(f->st, "b", "a", "after", NULL, T0 + 20000) == last + 1);
    /* the room lost every message: still listed, its last message marked gone */
    assert_int_equal(store_user_conversations(f->st, "a", 0, 10, on_conv, &c, &more), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.peer[0], "b");
    assert_false(c.gone[0]);
    assert_string_equal(c.peer[1], "old");
    assert_true(c.gone[1]);
    /* young messages are not touched */
    assert_int_equal(retain_all(f->st, T0 + 5, 0, 500), 0);
}

/* A database of schema 2 (before the counts) upgrades with its counts filled from its messages. */
static void test_store_retention_counts_after_upgrade(void **state)
{
    struct fixture *f = *state;
    if (pg_dsn)
        skip(); /* SQLite's schema history: PostgreSQL databases start at the 0005 baseline */
    for (int i = 0; i < 5; i++)
        send_room(f->st, "a", "r", "m", T0 + i);
    for (int i = 0; i < 4; i++)
        send_direct(f->st, i % 2 ? "a" : "b", i % 2 ? "b" : "a", "d", NULL, T0 + i);
    send_room(f->st, "a", "newest", "n", T0 + 9);
    store_close(f->st);
    f->st = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    /* back to the schema just before the retention migration (0004), undoing 0005 first */
    char sql[2048];
    snprintf(sql, sizeof(sql),
             UNDO_0006_SQL UNDO_0005_SQL
             "DROP TRIGGER messages_count_delete;"
             "ALTER TABLE rooms DROP COLUMN msg_count;"
             "ALTER TABLE dm_conversations DROP COLUMN msg_count;"
             "PRAGMA user_version = %d;",
             3);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    f->st = open_path(f->path, false);
    assert_int_equal(store_schema_version(f->st), store_schema_latest());
    assert_int_equal(retain_all(f->st, 0, 2, 500), 3 + 2);
    assert_int_equal(count_messages(f->st), 2 + 2 + 1);
}

/* More conversations than one slice of the sweep: every one is visited, steps resume where they
 * stopped, the budget holds. */
static void test_store_retention_many_conversations(void **state)
{
    struct fixture *f = *state;
    char name[32];
    assert_int_equal(store_begin(f->st), 0);
    for (int i = 0; i < 1500; i++) {
        snprintf(name, sizeof name, "room%04d", i);
        send_room(f->st, "a", name, "old", T0 + i);
        send_room(f->st, "a", name, "new", T0 + i);
        snprintf(name, sizeof name, "peer%04d", i);
        send_direct(f->st, "a", name, "old", NULL, T0 + i);
        send_direct(f->st, name, "a", "new", NULL, T0 + i);
    }
    assert_int_equal(store_commit(f->st), 0);
    assert_int_equal(retain_all(f->st, 0, 1, 500), 3000);
    assert_int_equal(count_messages(f->st), 3000);
    struct seen s = {0};
    bool more;
    assert_int_equal(store_history_room(f->st, "room0777", 0, 10, on_msg, &s, &more), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.body[0], "new");
    s.n = 0;
    assert_int_equal(store_history_direct(f->st, "a", "peer1499", 0, 10, on_msg, &s, &more), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.body[0], "new");
}

static void test_store_user_erase(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    struct convs c = {0};
    struct store_msg_info info;
    bool more, member;
    int64_t sid, n = -1;
    assert_int_equal(store_session_begin(f->st, "a", "127.0.0.1", NULL, NULL, T0, &sid), 0);
    assert_int_equal(store_presence_set(f->st, "a", true, 1, T0), 0);
    assert_int_equal(store_room_join(f->st, "r", "a", T0, NULL), 0);
    assert_int_equal(store_room_join(f->st, "r", "c", T0, NULL), 0);
    int64_t to_b = send_direct(f->st, "a", "b", "hi", "k1", T0);
    int64_t from_b = send_direct(f->st, "b", "a", "yo", NULL, T0 + 1);
    int64_t in_room = send_room(f->st, "a", "r", "mine", T0 + 2);
    int64_t others = send_room(f->st, "c", "r", "theirs", T0 + 3);
    int64_t b_c = send_direct(f->st, "b", "c", "keep", NULL, T0 + 4);

    assert_int_equal(store_user_erase(f->st, "a", T0 + 10, &n), 0);
    assert_int_equal(n, 3);
    int64_t gone[] = {to_b, from_b, in_room}, kept[] = {others, b_c};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(store_msg_get(f->st, gone[i], &info), 0);
        assert_true(info.deleted);
        assert_string_equal(info.msg.body, "null");
        store_msg_info_release(&info);
    }
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(store_msg_get(f->st, kept[i], &info), 0);
        assert_false(info.deleted);
        store_msg_info_release(&info);
    }
    assert_int_equal(store_room_is_member(f->st, "r", "a", &member), 0);
    assert_false(member);
    assert_int_equal(store_room_is_member(f->st, "r", "c", &member), 0);
    assert_true(member);
    assert_int_equal(store_presence_get(f->st, "a", NULL, NULL, NULL), STORE_ERR_NOTFOUND);
    assert_int_equal(store_session_get(f->st, sid, &(struct store_session){0}), STORE_ERR_NOTFOUND);
    assert_int_equal(store_user_conversations(f->st, "a", 0, 10, on_conv, &c, &more), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(store_user_conversations(f->st, "b", 0, 10, on_conv, &c, &more), 0);
    assert_int_equal(c.n, 1); /* only c: the conversation with a went on both sides */
    assert_string_equal(c.peer[0], "c");
    assert_int_equal(store_history_direct(f->st, "a", "b", 0, 10, on_msg, &s, &more), 0);
    assert_int_equal(s.n, 0);
    /* the cid stays taken by the tombstone: a resend is not stored again */
    struct store_msg m = {.sender = "a", .to_user = "b", .body = "hi", .cid = "k1", .created_at = T0};
    struct store_receipt r;
    assert_int_equal(store_msg_insert(f->st, &m, &r), 0);
    assert_true(r.duplicate);
    /* again, and a user never seen: nothing to do */
    assert_int_equal(store_user_erase(f->st, "a", T0 + 11, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_user_erase(f->st, "nobody", T0, NULL), 0);
    assert_int_equal(store_user_erase(f->st, "", T0, NULL), STORE_ERR_INVALID);
}

/* ---- Conversation touches noted during a group commit ---- */

/* The conversation rows of the database at path, as text (a reader of its own: committed state). */
static void dump_conv_rows(const char *path, char *out, size_t cap)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    size_t n = 0;
    const char *sql = "SELECT 'dm', user, peer, last_id, msg_count FROM dm_conversations"
                      " UNION ALL SELECT 'room', name, created_at, last_id, msg_count FROM rooms"
                      " ORDER BY 1, 2, 3";
    out[0] = '\0';
    if (pg_dsn) {
        PGconn *c = PQconnectdb(path);
        assert_int_equal(PQstatus(c), CONNECTION_OK);
        PGresult *r = PQexec(c, "SELECT 'dm', \"user\", peer, last_id, msg_count FROM dm_conversations"
                                " UNION ALL SELECT 'room', name, created_at::text, last_id, msg_count"
                                " FROM rooms ORDER BY 1, 2, 3");
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        for (int i = 0; i < PQntuples(r); i++) {
            int w = snprintf(out + n, cap - n, "%s %s %s %s %s\n", PQgetvalue(r, i, 0),
                             PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
                             PQgetvalue(r, i, 4));
            assert_true(w > 0 && (size_t)w < cap - n);
            n += (size_t)w;
        }
        PQclear(r);
        PQfinish(c);
        return;
    }
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    while (sqlite3_step(s) == SQLITE_ROW) {
        int w = snprintf(out + n, cap - n, "%s %s %s %lld %lld\n", sqlite3_column_text(s, 0),
                         sqlite3_column_text(s, 1), sqlite3_column_text(s, 2),
                         (long long)sqlite3_column_int64(s, 3), (long long)sqlite3_column_int64(s, 4));
        assert_true(w > 0 && (size_t)w < cap - n);
        n += (size_t)w;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
}

/* Both directions, a note to self, two rooms, and one message that is a duplicate (no touch). */
static void conv_traffic(struct store *st)
{
    struct store_msg m = {.sender = "a", .to_user = "b", .body = "1", .cid = "c1", .created_at = T0};
    struct store_receipt r;
    assert_int_equal(store_room_join(st, "quiet", "a", T0, NULL), 0);
    for (int i = 0; i < 5; i++) {
        send_direct(st, "a", "b", "x", NULL, T0 + i);
        send_direct(st, "b", "a", "y", NULL, T0 + i);
        send_room(st, "a", "r1", "z", T0 + 10 + i);
        if (i % 2)
            send_direct(st, "c", "c", "self", NULL, T0 + i);
        send_direct(st, i % 2 ? "zed" : "a", i % 2 ? "a" : "zed", "w", NULL, T0 + i);
    }
    assert_int_equal(store_msg_insert(st, &m, &r), 0);
    assert_int_equal(store_msg_insert(st, &m, &r), 0);
    assert_true(r.duplicate);
    send_room(st, "b", "r2", "last", T0 + 99);
}

/* Noted in one group commit and written at its end, the rows equal those written per message. */
static void test_store_conv_touch_group_equals_autocommit(void **state)
{
    struct fixture *f = *state;
    static char grouped[4096], each[4096];
    char other[64];
    struct store *st2 = NULL;
    if (pg_dsn) { /* one database: the second run follows the first on a fresh one */
        assert_int_equal(store_begin(f->st), 0);
        conv_traffic(f->st);
        assert_int_equal(store_commit(f->st), 0);
        dump_conv_rows(f->path, grouped, sizeof grouped);
        store_close(f->st);
        f->st = NULL;
        pg_reset(pg_dsn);
        f->st = open_path(f->path, false);
        conv_traffic(f->st);
        dump_conv_rows(f->path, each, sizeof each);
    } else {
        strcpy(other, "/tmp/test_store_XXXXXX");
        int fd = mkstemp(other);
        assert_true(fd >= 0);
        close(fd);
        st2 = open_path(other, false);
        assert_int_equal(store_begin(f->st), 0);
        conv_traffic(f->st);
        assert_int_equal(store_commit(f->st), 0);
        conv_traffic(st2);
        dump_conv_rows(f->path, grouped, sizeof grouped);
        dump_conv_rows(other, each, sizeof each);
    }
    assert_string_equal(grouped, each);
    /* and what that is: counts on both sides, one row for a note to self */
    assert_string_equal(grouped, "dm a b 23 11\n"
                                 "dm a zed 22 5\n"
                                 "dm b a 23 11\n"
                                 "dm c c 17 2\n"
                                 "dm zed a 22 5\n"
                                 "room quiet 1700000000000 0 0\n"
                                 "room r1 1700000000010 21 5\n"
                                 "room r2 1700000000099 24 1\n");
    if (st2) {
        store_close(st2);
        remove_db(other);
    }
}

/* A rollback forgets the noted touches; the next commit counts only its own messages. */
static void test_store_conv_touch_rollback_drops(void **state)
{
    struct fixture *f = *state;
    static char rows[1024];
    assert_int_equal(store_begin(f->st), 0);
    send_direct(f->st, "a", "b", "x", NULL, T0);
    send_room(f->st, "a", "r", "x", T0);
    assert_int_equal(store_rollback(f->st), 0);
    dump_conv_rows(f->path, rows, sizeof rows);
    assert_string_equal(rows, "");
    assert_int_equal(store_begin(f->st), 0);
    int64_t id = send_direct(f->st, "a", "b", "y", NULL, T0 + 1);
    assert_int_equal(store_commit(f->st), 0);
    dump_conv_rows(f->path, rows, sizeof rows);
    char want[128];
    snprintf(want, sizeof want, "dm a b %lld 1\ndm b a %lld 1\n", (long long)id, (long long)id);
    assert_string_equal(rows, want);
    /* closing with a transaction open forgets them too */
    assert_int_equal(store_begin(f->st), 0);
    send_direct(f->st, "a", "b", "z", NULL, T0 + 2);
    reopen(f);
    dump_conv_rows(f->path, rows, sizeof rows);
    assert_string_equal(rows, want);
}

/* A savepoint undone inside the group commit undoes its own touches, not those noted before it. */
static void test_store_conv_touch_savepoint(void **state)
{
    struct fixture *f = *state;
    static char rows[1024];
    bool own;
    assert_int_equal(store_begin(f->st), 0);
    int64_t first = send_direct(f->st, "a", "b", "kept", NULL, T0);
    assert_int_equal(store_atomic_begin(f->st, &own), 0);
    assert_false(own);
    send_direct(f->st, "a", "b", "undone", NULL, T0 + 1);
    send_room(f->st, "a", "r", "undone", T0 + 1);
    assert_int_equal(store_atomic_end(f->st, own, STORE_ERR_INVALID), STORE_ERR_INVALID);
    assert_int_equal(store_atomic_begin(f->st, &own), 0);
    int64_t second = send_direct(f->st, "b", "a", "kept too", NULL, T0 + 2);
    assert_int_equal(store_atomic_end(f->st, own, 0), 0);
    int64_t third = send_direct(f->st, "a", "b", "kept, noted", NULL, T0 + 3);
    assert_int_equal(store_commit(f->st), 0);
    assert_true(first < second && second < third);
    dump_conv_rows(f->path, rows, sizeof rows);
    char want[128];
    snprintf(want, sizeof want, "dm a b %lld 3\ndm b a %lld 3\n", (long long)third, (long long)third);
    assert_string_equal(rows, want);
}

static int on_room_info(void *ctx, const struct store_room_info *r)
{
    struct convs *x = ctx;
    assert_true(x->n < MAX_ROWS);
    snprintf(x->peer[x->n], sizeof x->peer[0], "%s", r->name);
    x->last_id[x->n++] = r->last_id;
    return 0;
}

/* Everything that reads or writes the conversation rows inside the group commit sees the noted
 * touches: lists, a new member's cursor, retention's counts, room deletion, erasure. */
static void test_store_conv_touch_seen_inside_transaction(void **state)
{
    struct fixture *f = *state;
    static char rows[1024];
    struct convs c = {0};
    bool more, added;
    int64_t cursor, n;

    assert_int_equal(store_begin(f->st), 0);
    send_direct(f->st, "a", "b", "1", NULL, T0);
    int64_t dm_last = send_direct(f->st, "b", "a", "2", NULL, T0 + 1);
    send_room(f->st, "a", "r", "3", T0 + 2);
    int64_t room_last = send_room(f->st, "a", "r", "4", T0 + 3);
    assert_int_equal(store_room_join(f->st, "r", "a", T0, NULL), 0);
    send_room(f->st, "a", "r", "5", T0 + 4);
    room_last = send_room(f->st, "a", "r", "6", T0 + 5);
    /* a member's cursor at join (store_room_join: newest message; store_room_add: rooms.last_id) */
    assert_int_equal(store_room_join(f->st, "r", "joiner", T0 + 6, NULL), 0);
    assert_int_equal(store_room_cursor(f->st, "r", "joiner", &cursor), 0);
    assert_int_equal(cursor, room_last);
    send_room(f->st, "a", "r", "7", T0 + 7);
    room_last = send_room(f->st, "a", "r", "8", T0 + 8);
    assert_int_equal(store_room_add(f->st, "r", "added", T0 + 9, &added), 0);
    assert_true(added);
    assert_int_equal(store_room_cursor(f->st, "r", "added", &cursor), 0);
    assert_int_equal(cursor, room_last);
    /* lists */
    dm_last = send_direct(f->st, "a", "b", "9", NULL, T0 + 10);
    assert_int_equal(store_user_conversations(f->st, "a", 0, 10, on_conv, &c, &more), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.peer[0], "b");
    assert_int_equal(c.last_id[0], dm_last);
    assert_string_equal(c.peer[1], "r");
    assert_int_equal(c.last_id[1], room_last);
    room_last = send_room(f->st, "a", "r", "10", T0 + 11);
    c.n = 0;
    assert_int_equal(store_rooms_list(f->st, "", 10, on_room_info, &c, &more), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.last_id[0], room_last);
    /* retention by count reads msg_count: 7 room messages, 3 direct; keep 2 of each */
    send_direct(f->st, "b", "a", "11", NULL, T0 + 12);
    assert_int_equal(retain_all(f->st, 0, 2, 500), 5 + 2);
    /* deleting a room, erasing a user: no noted touch brings a row back */
    send_room(f->st, "a", "r", "12", T0 + 13);
    send_room(f->st, "a", "gone", "13", T0 + 13);
    assert_int_equal(store_room_delete(f->st, "r", T0 + 14, NULL, NULL), 0);
    send_direct(f->st, "a", "erased", "14", NULL, T0 + 15);
    assert_int_equal(store_user_erase(f->st, "erased", T0 + 16, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_commit(f->st), 0);
    dump_conv_rows(f->path, rows, sizeof rows);
    char want[256];
    snprintf(want, sizeof want, "dm a b %lld 2\ndm b a %lld 2\nroom gone %lld %lld 1\n",
             (long long)(room_last + 1), (long long)(room_last + 1), (long long)(T0 + 13),
             (long long)(room_last + 3));
    assert_string_equal(rows, want);
}

/* Users and a room whose names need quoting in PostgreSQL's array literals ("NULL" is a name). */
static const char *const conv_users[] = {"a", "q\"uo\\te", "{x,y}", "NULL", "sp ace"};
#define CONV_ROOM "r\"{1}\\"

/*
 * Many direct messages among a few pairs, both directions, notes to self, a room, a duplicate cid
 * (no touch) and a few acks (unread counts). Returns the messages stored.
 */
static int many_dms(struct store *st)
{
    struct store_msg m = {.sender = "a", .to_user = "NULL", .body = "dup", .cid = "k",
                          .created_at = T0};
    struct store_receipt r;
    int n = 0;
    assert_int_equal(store_room_join(st, CONV_ROOM, "a", T0, NULL), 0);
    assert_int_equal(store_msg_insert(st, &m, &r), 0);
    n++;
    for (int i = 0; i < 300; i++) {
        const char *from = conv_users[i % 5], *to = conv_users[(i / 5 + i) % 5];
        int64_t id = send_direct(st, from, to, "x", NULL, T0 + i);
        n++;
        if (i % 7 == 0 && strcmp(from, to) != 0)
            assert_int_equal(store_msg_ack(st, to, id, 0, T0 + i), 0);
        if (i % 11 == 0) {
            send_room(st, conv_users[i % 5], CONV_ROOM, "y", T0 + i);
            n++;
        }
    }
    assert_int_equal(store_msg_insert(st, &m, &r), 0);
    assert_true(r.duplicate);
    return n;
}

/* Text appended to a fixed buffer. */
struct text_buf {
    char *p;
    size_t n, cap;
};

static int conv_to_text(void *ctx, const struct store_conversation *c)
{
    struct text_buf *b = ctx;
    int w = snprintf(b->p + b->n, b->cap - b->n, "  %s %s last %lld unread %lld\n",
                     c->is_room ? "room" : "dm", c->peer, (long long)c->last.id,
                     (long long)c->unread);
    assert_true(w > 0 && (size_t)w < b->cap - b->n);
    b->n += (size_t)w;
    return 0;
}

/* Every user's conversation list (peers, last ids, unread counts) and the rows' counts, as text. */
static void conv_state(struct fixture *f, char *out, size_t cap)
{
    struct text_buf b = {out, 0, cap};
    bool more;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof conv_users / sizeof conv_users[0]; i++) {
        int w = snprintf(out + b.n, cap - b.n, "%s:\n", conv_users[i]);
        assert_true(w > 0 && (size_t)w < cap - b.n);
        b.n += (size_t)w;
        assert_int_equal(store_user_conversations(f->st, conv_users[i], 0, 50, conv_to_text, &b,
                                                  &more), 0);
        assert_false(more);
    }
    dump_conv_rows(f->path, out + b.n, cap - b.n);
}

/*
 * A group commit of many direct messages between a few pairs (PostgreSQL: the message inserts
 * alone, the touches merged in memory and written in one statement before COMMIT) leaves the same
 * conversation lists (last ids, unread counts) and counts as writing them one by one; a group that
 * is rolled back leaves no touch behind.
 */
static void test_store_conv_group_many_dms(void **state)
{
    struct fixture *f = *state;
    static char grouped[16384], each[16384], after[16384];
    assert_int_equal(store_begin(f->st), 0);
    int n = many_dms(f->st);
    assert_int_equal(store_commit(f->st), 0);
    conv_state(f, grouped, sizeof grouped);
    if (pg_dsn) { /* one database: the second run follows the first on a fresh one */
        store_close(f->st);
        f->st = NULL;
        pg_reset(pg_dsn);
        f->st = open_path(f->path, false);
    } else {
        store_close(f->st);
        remove_db(f->path);
        f->st = open_path(f->path, false);
    }
    assert_int_equal(many_dms(f->st), n);
    conv_state(f, each, sizeof each);
    assert_string_equal(grouped, each);
    /* the counts are all there: every stored message once per side (a note to self once) */
    assert_non_null(strstr(grouped, "dm a NULL "));
    assert_non_null(strstr(grouped, "dm q\"uo\\te {x,y} "));
    assert_non_null(strstr(grouped, "room " CONV_ROOM " "));
    /* a rolled-back group: new pairs, old pairs, the room, then a savepoint inside it */
    assert_int_equal(store_begin(f->st), 0);
    send_direct(f->st, "a", "new", "x", NULL, T0 + 1000);
    send_direct(f->st, "{x,y}", "a", "x", NULL, T0 + 1001);
    send_room(f->st, "a", CONV_ROOM, "x", T0 + 1002);
    bool own;
    assert_int_equal(store_atomic_begin(f->st, &own), 0);
    send_direct(f->st, "a", "NULL", "x", NULL, T0 + 1003);
    assert_int_equal(store_atomic_end(f->st, own, 0), 0);
    send_direct(f->st, "NULL", "a", "x", NULL, T0 + 1004);
    assert_int_equal(store_rollback(f->st), 0);
    conv_state(f, after, sizeof after);
    assert_string_equal(after, each);
    /* and the next group counts only its own messages */
    assert_int_equal(store_begin(f->st), 0);
    int64_t id = send_direct(f->st, "new", "a", "x", NULL, T0 + 1005);
    assert_int_equal(store_commit(f->st), 0);
    static char rows[8192];
    dump_conv_rows(f->path, rows, sizeof rows);
    char want[128];
    snprintf(want, sizeof want, "dm a new %lld 1\n", (long long)id);
    assert_non_null(strstr(rows, want));
    snprintf(want, sizeof want, "dm new a %lld 1\n", (long long)id);
    assert_non_null(strstr(rows, want));
}

/* The cluster log rows of the database (a reader of its own: committed state), as text. */
static void dump_cluster_log(const char *dsn, char *out, size_t cap)
{
    size_t n = 0;
    PGconn *c = PQconnectdb(dsn);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, "SELECT kind, coalesce(target, '-'), ref, coalesce(payload, '-'),"
                            " created_at FROM cluster_log ORDER BY tx, id");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    out[0] = '\0';
    for (int i = 0; i < PQntuples(r); i++) {
        int w = snprintf(out + n, cap - n, "%s %s %s %s %s\n", PQgetvalue(r, i, 0),
                         PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
                         PQgetvalue(r, i, 4));
        assert_true(w > 0 && (size_t)w < cap - n);
        n += (size_t)w;
    }
    PQclear(r);
    PQfinish(c);
}

/*
 * Cluster notes inside a transaction are written at its COMMIT, in the order noted, with their
 * strings intact; those of an undone savepoint and of a rolled-back transaction are not. Outside a
 * transaction a note is written at once.
 */
static void test_store_cluster_notes_at_commit(void **state)
{
    struct fixture *f = *state;
    static char rows[2048];
    int64_t node;
    bool own;
    if (!pg_dsn)
        skip(); /* cluster mode is PostgreSQL's */
    assert_int_equal(store_node_join(f->st, "n1", 1, 10000, T0, &node), 0);
    assert_int_equal(store_begin(f->st), 0);
    assert_int_equal(store_cluster_note(f->st, "msg", NULL, 42, NULL, T0), 0);
    assert_int_equal(
        store_cluster_note(f->st, "user", "q\"uo\\te", 0, "{\"a\":\"b,c\\\\\"}", T0 + 1), 0);
    assert_int_equal(store_atomic_begin(f->st, &own), 0);
    assert_int_equal(store_cluster_note(f->st, "kick", NULL, 7, NULL, T0 + 2), 0);
    assert_int_equal(store_atomic_end(f->st, own, STORE_ERR_INVALID), STORE_ERR_INVALID);
    assert_int_equal(store_atomic_begin(f->st, &own), 0);
    assert_int_equal(store_cluster_note(f->st, "all", NULL, 0, "NULL", T0 + 3), 0);
    assert_int_equal(store_atomic_end(f->st, own, 0), 0);
    assert_int_equal(store_cluster_note(f->st, "room", "r", 0, "", T0 + 4), 0);
    dump_cluster_log(f->path, rows, sizeof rows);
    assert_string_equal(rows, ""); /* nothing before the commit */
    assert_int_equal(store_commit(f->st), 0);
    const char *want = "msg - 42 - 1700000000000\n"
                       "user q\"uo\\te 0 {\"a\":\"b,c\\\\\"} 1700000000001\n"
                       "all - 0 NULL 1700000000003\n"
                       "room r 0  1700000000004\n";
    dump_cluster_log(f->path, rows, sizeof rows);
    assert_string_equal(rows, want);
    /* rolled back: gone */
    assert_int_equal(store_begin(f->st), 0);
    assert_int_equal(store_cluster_note(f->st, "msg", NULL, 43, NULL, T0 + 5), 0);
    assert_int_equal(store_rollback(f->st), 0);
    /* outside a transaction: at once */
    assert_int_equal(store_cluster_note(f->st, "msg", NULL, 44, NULL, T0 + 6), 0);
    dump_cluster_log(f->path, rows, sizeof rows);
    char want2[512];
    snprintf(want2, sizeof want2, "%smsg - 44 - 1700000000006\n", want);
    assert_string_equal(rows, want2);
}

/*
 * The WAL is written through the store's VFS (a transaction's frames gathered into few pwrites). A process that dies after its
 * commits, without closing (no checkpoint), leaves only the WAL: the next open must recover every
 * committed frame from it, checksums and all, and the file must be sound.
 */
static void test_store_wal_recovered_after_crash(void **state)
{
    struct fixture *f = *state;
    if (pg_dsn)
        skip(); /* SQLite's WAL recovery and integrity_check */
    store_close(f->st);
    f->st = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct store_opts o = {.synchronous = STORE_SYNC_NORMAL, .busy_timeout_ms = 1000};
        struct store *st = NULL;
        char body[600];
        memset(body, 'x', sizeof body - 1);
        body[sizeof body - 1] = '\0';
        if (store_open(&st, f->path, &o, NULL, 0) != 0)
            _exit(2);
        for (int t = 0; t < 20; t++) {
            if (store_begin(st) != 0)
                _exit(3);
            for (int i = 0; i < 500; i++) {
                struct store_msg m = {.sender = t % 2 ? "a" : "b", .to_user = "c", .body = body,
                                      .created_at = T0 + t};
                struct store_receipt r;
                if (store_msg_insert(st, &m, &r) != 0)
                    _exit(4);
            }
            if (store_commit(st) != 0)
                _exit(5);
        }
        if (store_begin(st) != 0) /* and one left open: not committed, not recovered */
            _exit(6);
        struct store_msg m = {.sender = "a", .to_user = "c", .body = "lost", .created_at = T0};
        struct store_receipt r;
        if (store_msg_insert(st, &m, &r) != 0)
            _exit(7);
        _exit(0); /* no store_close: the WAL stays as it is */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    assert_int_equal(access(wal, F_OK), 0);
    f->st = open_path(f->path, false);
    assert_int_equal(count_messages(f->st), 20 * 500);
    assert_int_equal(pending_count(f->st, "c"), MAX_ROWS);
    sqlite3 *db;
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "ok");
    sqlite3_finalize(s);
    sqlite3_close(db);
    static char rows[256];
    dump_conv_rows(f->path, rows, sizeof rows);
    assert_string_equal(rows, "dm a c 10000 5000\ndm b c 9500 5000\ndm c a 10000 5000\n"
                              "dm c b 9500 5000\n");
}

/* Rows in messages as another connection of this process sees them (its own file handles). */
static int64_t count_from_outside(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t n;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM messages", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

/*
 * The VFS gathers a transaction's WAL frames into few pwrites: each commit is in the file when the
 * commit returns (another connection reads it through its own handle), from one row to thousands.
 */
static void test_store_wal_commit_written_when_it_returns(void **state)
{
    struct fixture *f = *state;
    char body[700];
    int64_t want = 0;

    if (pg_dsn)
        skip(); /* SQLite's WAL */
    memset(body, 'y', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    static const int sizes[] = {1, 2, 15, 16, 17, 400, 3000, 1};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        assert_int_equal(store_begin(f->st), 0);
        for (int i = 0; i < sizes[k]; i++)
            send_direct(f->st, k % 2 ? "a" : "b", "c", body, NULL, T0 + i);
        assert_int_equal(store_commit(f->st), 0);
        want += sizes[k];
        assert_int_equal(count_from_outside(f->path), want);
        /* and a write outside any transaction of ours (autocommit) */
        send_direct(f->st, "a", "c", "one", NULL, T0);
        want++;
        assert_int_equal(count_from_outside(f->path), want);
    }
}

/*
 * A transaction larger than the page cache: SQLite writes (spills) pages into the WAL before the
 * commit and reads them back from there. Gathered writes must be in the file by then.
 */
static void test_store_wal_spilled_transaction_reads_back(void **state)
{
    char path[] = "/tmp/test_store_spill_XXXXXX";
    struct store_opts o = {.synchronous = STORE_SYNC_NORMAL, .busy_timeout_ms = 1000, .cache_mib = 1};
    struct store *st = NULL;
    char body[600], err[256];
    sqlite3 *db;
    sqlite3_stmt *s;
    int fd;

    (void)state;
    if (pg_dsn)
        skip(); /* SQLite's page cache and WAL */
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    unlink(path);
    assert_int_equal(store_open(&st, path, &o, err, sizeof err), 0);
    memset(body, 'z', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    assert_int_equal(store_begin(st), 0);
    for (int i = 0; i < 20000; i++) /* ~14 MB of rows and indexes against a 1 MiB cache */
        send_direct(st, i % 3 ? "a" : "b", i % 2 ? "c" : "d", body, NULL, T0 + i);
    assert_int_equal(pending_count(st, "c"), MAX_ROWS); /* reads pages it spilled */
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(count_messages(st), 20000);
    assert_int_equal(count_from_outside(path), 20000);
    store_close(st);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "ok");
    sqlite3_finalize(s);
    sqlite3_close(db);
    remove_db(path);
}

int main(void)
{
    pg_dsn = getenv("WSP_TEST_PG_DSN");
    if (pg_dsn && !*pg_dsn)
        pg_dsn = NULL;
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_store_open_applies_migrations),
        T(test_store_migrations_twice_are_noop),
        T(test_store_query_plans_use_indexes),
        T(test_store_newer_schema_refused),
        T(test_store_open_errors),
        cmocka_unit_test(test_store_memory_database),
        T(test_store_readonly),
        T(test_store_group_commit),
        T(test_store_busy_between_writers),
        T(test_store_writes_atomic_inside_transaction),
        cmocka_unit_test(test_store_new_file_has_8k_pages_old_one_keeps_its_own),
        T(test_store_wal_checkpoints_in_background),
        T(test_store_wal_commit_written_when_it_returns),
        cmocka_unit_test(test_store_wal_spilled_transaction_reads_back),
        T(test_store_session_lifecycle),
        T(test_store_session_list_filters),
        T(test_store_session_end_orphans),
        T(test_store_presence),
        T(test_store_direct_pending_survives_restart),
        T(test_store_direct_pending_paging),
        T(test_store_idempotent_cid),
        T(test_store_msg_insert_invalid),
        T(test_store_ack_rules),
        T(test_store_msg_get),
        T(test_store_history_direct_paging),
        T(test_store_history_room_paging),
        T(test_store_room_membership),
        T(test_store_room_ack_moves_cursor),
        T(test_store_room_replay),
        T(test_store_stats),
        T(test_store_retention_count),
        T(test_store_retention_age_keeps_newest),
        T(test_store_retention_counts_after_upgrade),
        T(test_store_retention_many_conversations),
        T(test_store_user_erase),
        T(test_store_conv_touch_group_equals_autocommit),
        T(test_store_conv_touch_rollback_drops),
        T(test_store_conv_touch_savepoint),
        T(test_store_conv_touch_seen_inside_transaction),
        T(test_store_conv_group_many_dms),
        T(test_store_cluster_notes_at_commit),
        T(test_store_wal_recovered_after_crash),
        cmocka_unit_test(test_store_strerror_covers_every_code),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
