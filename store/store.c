/*
 * store.c -- opening the SQLite file (PRAGMAs, schema migrations, prepared statements), transactions,
 * errors, and the small helpers the per-table files share. The schema version is PRAGMA user_version.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#include "migrations.h"
#include "store_internal.h"

const struct store_sql store_sql_core[] = {
    /* IMMEDIATE takes the write lock now, so a group commit never fails halfway on a lock upgrade. */
    {STMT_BEGIN, false, "BEGIN IMMEDIATE"},
    {STMT_COMMIT, false, "COMMIT"},
    {STMT_ROLLBACK, false, "ROLLBACK"},
    {STMT_SAVEPOINT, false, "SAVEPOINT store_atomic"},
    {STMT_RELEASE, false, "RELEASE store_atomic"},
    {STMT_ROLLBACK_TO, false, "ROLLBACK TO store_atomic"},
    /* reads the schema table, so it fails if the file went bad; the table is tiny */
    {STMT_PING, true, "SELECT count(*) FROM sqlite_master"},
    /* admin counts: total rows scan by nature; the rest read small partial indexes */
    {STMT_STATS, true,
     "SELECT (SELECT count(*) FROM sessions WHERE ended_at IS NULL),"
     " (SELECT count(*) FROM sessions),"
     " (SELECT count(*) FROM presence WHERE state = 'online'),"
     " (SELECT count(*) FROM messages),"
     " (SELECT count(*) FROM messages WHERE to_user IS NOT NULL AND delivered_at IS NULL),"
     " (SELECT count(DISTINCT room) FROM room_members)"},
    {STMT_COUNT, false, NULL},
};

static const struct store_sql *const sql_tables[] = {
    store_sql_core, store_sql_session, store_sql_presence, store_sql_msg,
    store_sql_room, store_sql_conv, store_sql_outbox, store_sql_retention,
};

/* ---- Errors ---- */

const char *store_strerror(int err)
{
    switch (err) {
    case STORE_OK: return "ok";
    case STORE_ERR_IO: return "database error";
    case STORE_ERR_NOTFOUND: return "not found";
    case STORE_ERR_BUSY: return "database is locked";
    case STORE_ERR_CONSTRAINT: return "constraint failed";
    case STORE_ERR_READONLY: return "database is read-only";
    case STORE_ERR_SCHEMA: return "unsupported database schema";
    case STORE_ERR_INVALID: return "invalid argument";
    case STORE_ERR_NOMEM: return "out of memory";
    case STORE_ERR_MISUSE: return "store used out of order";
    case STORE_ERR_OPEN: return "cannot open database";
    case STORE_ERR_FULL: return "outbox full";
    }
    return "unknown store error";
}

static int map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE: return STORE_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return STORE_ERR_BUSY;
    case SQLITE_CONSTRAINT: return STORE_ERR_CONSTRAINT;
    case SQLITE_READONLY: return STORE_ERR_READONLY;
    case SQLITE_NOMEM: return STORE_ERR_NOMEM;
    case SQLITE_MISUSE: return STORE_ERR_MISUSE;
    case SQLITE_CANTOPEN:
    case SQLITE_NOTADB: return STORE_ERR_OPEN;
    }
    return STORE_ERR_IO;
}

int store_fail(struct store *st, int rc, const char *what)
{
    int code = map_rc(rc);

    if (code == STORE_OK) /* a caller's logic error, never SQLite's success */
        code = STORE_ERR_IO;
    st->last_rc = rc;
    snprintf(st->err, sizeof st->err, "%s: %s", what, st->db ? sqlite3_errmsg(st->db) : "no database");
    return code;
}

int store_failf(struct store *st, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(st->err, sizeof st->err, fmt, ap);
    va_end(ap);
    return code;
}

const char *sq_last_error(const struct store *st)
{
    return st ? st->err : "no store";
}

/* ---- Statement helpers ---- */

void store_stmt_done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

int store_bind_fail(struct store *st, sqlite3_stmt *s, const char *what)
{
    int rc = store_fail(st, sqlite3_errcode(st->db), what);

    store_stmt_done(s);
    return rc;
}

int store_bind_text(sqlite3_stmt *s, int i, const char *v)
{
    return v ? sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i);
}

const char *store_col_text(sqlite3_stmt *s, int i)
{
    return (const char *)sqlite3_column_text(s, i);
}

bool store_name_ok(const char *s)
{
    return s && *s;
}

int store_write_check(struct store *st)
{
    if (st->readonly)
        return store_failf(st, STORE_ERR_READONLY, "write on a read-only store");
    /* After an I/O error SQLite may roll a transaction back by itself; a write now would silently
     * autocommit on its own, outside the group the caller thinks it is in. */
    if (st->txn && sqlite3_get_autocommit(st->db))
        return store_failf(st, STORE_ERR_IO,
                           "the transaction was rolled back after an earlier error; store_rollback it");
    return 0;
}

int store_exec_stmt(struct store *st, sqlite3_stmt *s, const char *what)
{
    int rc;

    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        ;
    store_stmt_done(s);
    return rc == SQLITE_DONE ? 0 : store_fail(st, rc, what);
}

void store_msg_from_row(sqlite3_stmt *s, int col0, struct store_msg *m)
{
    m->id = sqlite3_column_int64(s, col0);
    m->sender = store_col_text(s, col0 + 1);
    m->to_user = store_col_text(s, col0 + 2);
    m->room = store_col_text(s, col0 + 3);
    m->body = store_col_text(s, col0 + 4);
    m->cid = store_col_text(s, col0 + 5);
    m->created_at = sqlite3_column_int64(s, col0 + 6);
    m->via = store_col_text(s, col0 + 7);
}

int store_each_msg(struct store *st, sqlite3_stmt *s, int emit, store_msg_fn *cb, void *ctx,
                   int *rows, const char *what)
{
    struct store_msg m;
    int n = 0, stop = 0, rc;

    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n++ >= emit)
            continue;
        store_msg_from_row(s, 0, &m);
        if ((stop = cb(ctx, &m)) != 0)
            break;
    }
    if (rows)
        *rows = n;
    if (stop) {
        store_stmt_done(s);
        return stop;
    }
    store_stmt_done(s);
    return rc == SQLITE_DONE ? 0 : store_fail(st, rc, what);
}

int store_each_name(struct store *st, sqlite3_stmt *s, store_name_fn *cb, void *ctx, const char *what)
{
    int stop = 0, rc;

    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if ((stop = cb(ctx, store_col_text(s, 0))) != 0) {
            store_stmt_done(s);
            return stop;
        }
    }
    store_stmt_done(s);
    return rc == SQLITE_DONE ? 0 : store_fail(st, rc, what);
}

/* ---- Transactions ---- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* SQLite's busy handler with a bound on the wait and a back-off once the bound was hit. */
static int lock_busy_cb(void *arg, int count)
{
    struct store *st = arg;
    int64_t now = mono_ms();
    if (count == 0)
        st->busy_since_ms = now;
    if (now < st->locked_until_ms)
        return 0;
    if (now - st->busy_since_ms >= st->lock_wait_ms) {
        st->locked_until_ms = now + STORE_LOCKED_BACKOFF_MS;
        return 0;
    }
    sqlite3_sleep(1);
    return 1;
}

void sq_set_lock_wait(struct store *st, int ms)
{
    st->lock_wait_ms = ms > 0 ? ms : 0;
    st->locked_until_ms = 0;
    sqlite3_busy_handler(st->db, lock_busy_cb, st);
}

int sq_begin(struct store *st)
{
    int rc;

    if (st->readonly)
        return store_failf(st, STORE_ERR_READONLY, "begin on a read-only store");
    if (st->txn || !sqlite3_get_autocommit(st->db))
        return store_failf(st, STORE_ERR_MISUSE, "store_begin: a transaction is already open");
    if ((rc = store_exec_stmt(st, st->stmt[STMT_BEGIN], "begin")) < 0)
        return rc;
    st->txn = true;
    return 0;
}

/* The group commit is over, kept or not: what it noted in memory goes with it. */
static void txn_over(struct store *st)
{
    st->txn = false;
    st->savepoints = 0;
    store_conv_drop(st);
    store_outbox_txn_over(st);
}

int sq_commit(struct store *st)
{
    int rc;

    if (!st->txn)
        return store_failf(st, STORE_ERR_MISUSE, "store_commit: no transaction is open");
    if (sqlite3_get_autocommit(st->db)) {
        txn_over(st);
        return store_failf(st, STORE_ERR_IO,
                           "commit: the transaction was rolled back after an earlier error");
    }
    /* The conversation touches noted during the transaction are part of it. */
    if ((rc = store_conv_flush(st)) == 0)
        rc = store_exec_stmt(st, st->stmt[STMT_COMMIT], "commit");
    if (rc < 0 && !sqlite3_get_autocommit(st->db)) {
        /* COMMIT failed (disk full, I/O, lock) and left the transaction open: the contract is that a
         * failed commit stored nothing, so end it here rather than let later writes join it. */
        char keep[sizeof st->err];

        memcpy(keep, st->err, sizeof keep);
        store_exec_stmt(st, st->stmt[STMT_ROLLBACK], "rollback");
        memcpy(st->err, keep, sizeof keep);
    }
    txn_over(st);
    return rc;
}

int sq_commit_start(struct store *st, int *fd)
{
    *fd = -1;
    return sq_commit(st); /* local file: nothing to wait for on a socket */
}

int sq_commit_poll(struct store *st, enum store_poll how, bool *done)
{
    (void)st, (void)how;
    *done = true;
    return 0;
}

int sq_rollback(struct store *st)
{
    int rc = 0;

    if (!sqlite3_get_autocommit(st->db))
        rc = store_exec_stmt(st, st->stmt[STMT_ROLLBACK], "rollback");
    txn_over(st);
    return rc;
}

bool sq_in_transaction(const struct store *st)
{
    return st->txn;
}

int sq_atomic_begin(struct store *st, bool *own_txn)
{
    int rc;

    if ((rc = store_write_check(st)) < 0)
        return rc;
    *own_txn = sqlite3_get_autocommit(st->db) != 0;
    /* Touches noted before the savepoint are written before it, so a ROLLBACK TO cannot undo them
     * (their messages stay); inside it, touches are written at once and undone with their messages. */
    if (!*own_txn && (rc = store_conv_flush(st)) < 0)
        return rc;
    if ((rc = store_exec_stmt(st, st->stmt[*own_txn ? STMT_BEGIN : STMT_SAVEPOINT],
                              *own_txn ? "begin" : "savepoint")) < 0)
        return rc;
    if (!*own_txn)
        st->savepoints++;
    return 0;
}

int sq_atomic_end(struct store *st, bool own_txn, int rc)
{
    char keep[sizeof st->err];
    int rc2;

    /* A transaction of its own is not a group commit (st->txn is false): its touches were written
     * at once, nothing is noted. Inside a savepoint nothing is noted either. */
    if (!own_txn && st->savepoints > 0)
        st->savepoints--;
    if (rc == 0) {
        rc2 = store_exec_stmt(st, st->stmt[own_txn ? STMT_COMMIT : STMT_RELEASE],
                              own_txn ? "commit" : "release savepoint");
        if (rc2 == 0) {
            if (own_txn)
                store_outbox_txn_over(st);
            return 0;
        }
        rc = rc2;
    }
    /* Undo, keeping the first error's text. The transaction may already be gone after I/O errors. */
    memcpy(keep, st->err, sizeof keep);
    if (!sqlite3_get_autocommit(st->db)) {
        if (own_txn) {
            store_exec_stmt(st, st->stmt[STMT_ROLLBACK], "rollback");
        } else {
            store_exec_stmt(st, st->stmt[STMT_ROLLBACK_TO], "rollback to savepoint");
            store_exec_stmt(st, st->stmt[STMT_RELEASE], "release savepoint");
        }
    }
    if (own_txn)
        store_outbox_txn_over(st);
    memcpy(st->err, keep, sizeof keep);
    return rc;
}

/* ---- Health and stats ---- */

int sq_ping(struct store *st)
{
    sqlite3_stmt *s = st->stmt[STMT_PING];
    int rc = sqlite3_step(s);

    store_stmt_done(s);
    return rc == SQLITE_ROW ? 0 : store_fail(st, rc, "ping");
}

int sq_stats(struct store *st, struct store_stats *out)
{
    sqlite3_stmt *s = st->stmt[STMT_STATS];
    int rc = sqlite3_step(s);

    if (rc == SQLITE_ROW) {
        out->sessions_active = sqlite3_column_int64(s, 0);
        out->sessions_total = sqlite3_column_int64(s, 1);
        out->users_online = sqlite3_column_int64(s, 2);
        out->messages = sqlite3_column_int64(s, 3);
        out->pending_direct = sqlite3_column_int64(s, 4);
        out->rooms = sqlite3_column_int64(s, 5);
    }
    store_stmt_done(s);
    return rc == SQLITE_ROW ? 0 : store_fail(st, rc, "stats");
}

/* ---- Opening: PRAGMAs, migrations, statements ---- */

int store_schema_latest(void)
{
    return wsp_num_migrations ? wsp_migrations[wsp_num_migrations - 1].version : 0;
}

int sq_schema_version(const struct store *st)
{
    return st->schema_version;
}

static int exec_sql(struct store *st, const char *sql, const char *what)
{
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);

    return rc == SQLITE_OK ? 0 : store_fail(st, rc, what);
}

/* A one-row, one-integer query run once at open (not worth a persistent statement). */
static int query_int(struct store *st, const char *sql, int *out)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);

    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int(s, 0);
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK)
        rc = store_fail(st, rc, sql);
    sqlite3_finalize(s);
    return rc;
}

static int migrations_check_order(struct store *st)
{
    int prev = 0;

    for (size_t i = 0; i < wsp_num_migrations; i++) {
        if (wsp_migrations[i].version <= prev)
            return store_failf(st, STORE_ERR_SCHEMA,
                               "built-in migration %s is out of order (version %d after %d)",
                               wsp_migrations[i].name, wsp_migrations[i].version, prev);
        prev = wsp_migrations[i].version;
    }
    return 0;
}

static int migrate_one(struct store *st, const struct migration *m)
{
    char buf[64];
    int rc, cur;

    if ((rc = exec_sql(st, "BEGIN IMMEDIATE", "begin migration")) < 0)
        return rc;
    /* Re-read under the write lock: another process may have applied this step meanwhile. */
    if ((rc = query_int(st, "PRAGMA user_version", &cur)) < 0)
        goto fail;
    if (cur < m->version) {
        if ((rc = exec_sql(st, m->sql, "sql")) < 0) {
            rc = store_failf(st, STORE_ERR_SCHEMA, "migration %s failed: %s", m->name,
                             sqlite3_errmsg(st->db));
            goto fail;
        }
        snprintf(buf, sizeof buf, "PRAGMA user_version = %d", m->version);
        if ((rc = exec_sql(st, buf, "set user_version")) < 0)
            goto fail;
        cur = m->version;
    }
    if ((rc = exec_sql(st, "COMMIT", "commit migration")) < 0)
        goto fail;
    st->schema_version = cur;
    return 0;
fail:
    if (!sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int migrate(struct store *st)
{
    int latest = store_schema_latest(), rc;

    if ((rc = migrations_check_order(st)) < 0)
        return rc;
    if ((rc = query_int(st, "PRAGMA user_version", &st->schema_version)) < 0)
        return rc;
    if (st->schema_version > latest)
        return store_failf(st, STORE_ERR_SCHEMA,
                           "database schema version %d is newer than this wsproxy (knows up to %d); "
                           "upgrade wsproxy",
                           st->schema_version, latest);
    if (st->readonly) {
        if (st->schema_version == latest)
            return 0;
        if (st->schema_version == 0)
            return store_failf(st, STORE_ERR_SCHEMA,
                               "not a wsproxy database (schema version 0); start wsproxy on it first");
        return store_failf(st, STORE_ERR_SCHEMA,
                           "database schema version %d is older than this build expects (%d); "
                           "start the new wsproxy once to migrate it",
                           st->schema_version, latest);
    }
    for (size_t i = 0; i < wsp_num_migrations; i++) {
        if (wsp_migrations[i].version <= st->schema_version)
            continue;
        if ((rc = migrate_one(st, &wsp_migrations[i])) < 0)
            return rc;
    }
    return 0;
}

static int prepare_all(struct store *st)
{
    for (size_t t = 0; t < sizeof sql_tables / sizeof sql_tables[0]; t++) {
        for (const struct store_sql *q = sql_tables[t]; q->sql; q++) {
            int rc;

            if (st->stmt[q->id])
                return store_failf(st, STORE_ERR_IO, "statement %d defined twice", (int)q->id);
            rc = sqlite3_prepare_v3(st->db, q->sql, -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[q->id],
                                    NULL);
            if (rc != SQLITE_OK)
                return store_failf(st, map_rc(rc) ? map_rc(rc) : STORE_ERR_IO,
                                   "cannot prepare \"%s\": %s", q->sql, sqlite3_errmsg(st->db));
        }
    }
    for (int i = 0; i < STMT_COUNT; i++)
        if (!st->stmt[i])
            return store_failf(st, STORE_ERR_IO, "statement %d has no SQL", i);
    return 0;
}

/* Why a file could not be opened, in words an operator can act on. */
static void explain_open_failure(struct store *st, const char *path, int rc)
{
    const char *slash = strrchr(path, '/');
    char dir[512];
    struct stat sb;

    if ((rc & 0xff) == SQLITE_CANTOPEN && slash && (size_t)(slash - path) < sizeof dir) {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
        if (slash == path)
            strcpy(dir, "/");
        if (stat(dir, &sb) != 0) {
            store_failf(st, STORE_ERR_OPEN, "cannot open database %s: directory %s: %s", path, dir,
                        strerror(errno));
            return;
        }
    }
    if (st->db && sqlite3_system_errno(st->db) != 0)
        store_failf(st, map_rc(rc), "cannot open database %s: %s (%s)", path, sqlite3_errmsg(st->db),
                    strerror(sqlite3_system_errno(st->db)));
    else
        store_failf(st, map_rc(rc), "cannot open database %s: %s", path,
                    st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
}

static int apply_pragmas(struct store *st, const char *path, const struct store_opts *o)
{
    char buf[64];
    sqlite3_stmt *s = NULL;
    int rc, mib;

    sqlite3_busy_timeout(st->db, o->busy_timeout_ms > 0 ? o->busy_timeout_ms : 0);
    /* The schema only needs plain INSERTs in its trigger; forbid the rest (wsctl opens files as root). */
    sqlite3_db_config(st->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    sqlite3_db_config(st->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    if ((rc = exec_sql(st, "PRAGMA foreign_keys = ON", "foreign_keys")) < 0)
        return rc;
    mib = o->cache_mib > 0 ? o->cache_mib : STORE_CACHE_MIB_DEFAULT;
    snprintf(buf, sizeof buf, "PRAGMA cache_size = -%d", (mib < 1 << 20 ? mib : 1 << 20) * 1024);
    if ((rc = exec_sql(st, buf, "cache_size")) < 0)
        return rc;
    if (st->readonly)
        return 0;
    /* Takes only on a new, empty file, so before journal_mode (which writes its first page). */
    snprintf(buf, sizeof buf, "PRAGMA page_size = %d", STORE_PAGE_SIZE);
    if ((rc = exec_sql(st, buf, "page_size")) < 0)
        return rc;

    /* The answer is the mode in force; anything but "wal" on a real file means readers would block
     * the writer and the group commit would fsync per transaction differently than configured. */
    rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(s, 0);

        rc = SQLITE_OK;
        if (!mode || (strcmp(mode, "wal") != 0 && strcmp(path, ":memory:") != 0)) {
            rc = store_failf(st, STORE_ERR_IO, "cannot switch %s to WAL (journal mode is %s)", path,
                             mode ? mode : "unknown");
            sqlite3_finalize(s);
            return rc;
        }
    }
    if (rc != SQLITE_OK) {
        rc = store_fail(st, rc, "journal_mode");
        sqlite3_finalize(s);
        return rc;
    }
    sqlite3_finalize(s);
    snprintf(buf, sizeof buf, "PRAGMA synchronous = %s",
             o->synchronous == STORE_SYNC_FULL ? "FULL" : "NORMAL");
    if ((rc = exec_sql(st, buf, "synchronous")) < 0)
        return rc;
    /* After a checkpoint lets the WAL restart, cut the file back instead of keeping its peak size. */
    return exec_sql(st, "PRAGMA journal_size_limit = 67108864", "journal_size_limit");
}

/*
 * Process-wide SQLite settings, which only take before SQLite initializes (the first open). Memory
 * statistics cost a global mutex on every malloc/free: ~7 % of the instructions of a message insert.
 * Nothing in wsproxy reads sqlite3_memory_used().
 */
static bool vfs_ok; /* store_vfs_register worked */

static void configure_sqlite_once(void)
{
    static bool done;

    if (done)
        return;
    done = true;
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); /* MISUSE if already initialized: harmless */
    vfs_ok = store_vfs_register() == 0;
}

/*
 * "file:" URI for path with immutable=1: SQLite then takes no locks and needs no -shm file. Only for
 * readonly opens of a database with no -wal file (nothing uncheckpointed to miss).
 */
static char *immutable_uri(const char *path)
{
    size_t n = strlen(path);
    char *uri = malloc(3 * n + 32), *p = uri;

    if (!uri)
        return NULL;
    p += sprintf(p, "file:");
    for (const char *c = path; *c; c++) {
        if (*c == '%' || *c == '?' || *c == '#')
            p += sprintf(p, "%%%02X", (unsigned char)*c);
        else
            *p++ = *c;
    }
    strcpy(p, "?immutable=1");
    return uri;
}

/* Open the connection and bring it to a usable state; on failure st->err says why. */
static int open_setup(struct store *st, const char *path, const struct store_opts *opts, bool immutable)
{
    /* NOMUTEX: one thread per handle by contract; EXRESCODE: errors name the precise cause. */
    int flags = (st->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
    char *uri = NULL;
    int rc;

    if (immutable) {
        if (!(uri = immutable_uri(path)))
            return store_failf(st, STORE_ERR_NOMEM, "out of memory opening %s", path);
        flags |= SQLITE_OPEN_URI;
    }
    rc = sqlite3_open_v2(uri ? uri : path, &st->db, flags,
                         !st->readonly && vfs_ok ? STORE_VFS_NAME : NULL);
    free(uri);
    if (rc != SQLITE_OK) {
        explain_open_failure(st, path, rc);
        return STORE_ERR_OPEN;
    }
    sqlite3_extended_result_codes(st->db, 1);
    if ((rc = apply_pragmas(st, path, opts)) < 0 || (rc = migrate(st)) < 0 ||
        (rc = prepare_all(st)) < 0) {
        /* sqlite3_open_v2 reads nothing: a file that is not a database shows up at the first read */
        if ((st->last_rc & 0xff) == SQLITE_NOTADB)
            return store_failf(st, STORE_ERR_OPEN, "%s is not an SQLite database", path);
        if (!st->readonly && (st->last_rc & 0xff) == SQLITE_READONLY)
            return store_failf(st, STORE_ERR_READONLY,
                               "cannot write %s or create files beside it (permissions?): %s", path,
                               sqlite3_errmsg(st->db));
        return rc;
    }
    return 0;
}

/* Readonly, WAL file, server down, and no write access to the directory: SQLite cannot create the
 * -shm file it needs. With no -wal file everything is in the main file, so read it as immutable. */
static bool retry_immutable(const struct store *st, const char *path)
{
    char wal[4096];
    struct stat sb;
    int primary = st->last_rc & 0xff;

    if (!st->readonly || (primary != SQLITE_READONLY && primary != SQLITE_CANTOPEN))
        return false;
    if (stat(path, &sb) != 0 || (size_t)snprintf(wal, sizeof wal, "%s-wal", path) >= sizeof wal)
        return false;
    return stat(wal, &sb) != 0 && errno == ENOENT;
}

static void close_db(struct store *st)
{
    for (int i = 0; i < STMT_COUNT; i++) {
        sqlite3_finalize(st->stmt[i]);
        st->stmt[i] = NULL;
    }
    sqlite3_close(st->db);
    st->db = NULL;
}

int sq_open(struct store **out, const char *path, const struct store_opts *opts, char *err,
               size_t errlen)
{
    static const struct store_opts defaults = {STORE_SYNC_NORMAL, 5000, false, 0, STORE_BACKEND_SQLITE};
    struct store *st;
    int rc;

    *out = NULL;
    if (!opts)
        opts = &defaults;
    if (!path || !*path) {
        if (err && errlen)
            snprintf(err, errlen, "no database path given");
        return STORE_ERR_INVALID;
    }
    if (!(st = calloc(1, sizeof *st))) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory opening %s", path);
        return STORE_ERR_NOMEM;
    }
    st->ops = &store_sqlite_ops;
    st->readonly = opts->readonly;
    configure_sqlite_once();
    rc = open_setup(st, path, opts, false);
    if (rc < 0 && retry_immutable(st, path)) {
        close_db(st);
        st->last_rc = 0;
        st->err[0] = '\0';
        rc = open_setup(st, path, opts, true);
    }
    if (rc < 0)
        goto fail;
    if (!st->readonly && strcmp(path, ":memory:") != 0)
        store_ckpt_start(st, path, opts); /* if it cannot start, SQLite checkpoints in commits */
    *out = st;
    return 0;
fail:
    if (err && errlen) {
        /* Every message names the file unless it already does. */
        if (strstr(st->err, path))
            snprintf(err, errlen, "%s", st->err);
        else
            snprintf(err, errlen, "%s: %s", path, st->err);
    }
    sq_close(st);
    return rc;
}

void sq_close(struct store *st)
{
    if (!st)
        return;
    store_ckpt_stop(st);
    if (st->db && !sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    store_conv_drop(st); /* an open group commit is rolled back above: its touches with it */
    close_db(st); /* the last connection: SQLite checkpoints all and removes the WAL */
    free(st->ret_room);
    free(st->ret_dm_user);
    free(st->ret_dm_peer);
    free(st);
}

/* ---- Self-check of query plans ---- */

/* "SCAN t USING [COVERING] INDEX i" with i partial reads only the rows the index keeps (active
 * sessions, pending deliveries, online users), which is what it exists for. */
static bool scans_partial_index(struct store *st, const char *detail)
{
    const char *p = strstr(detail, "INDEX ");
    sqlite3_stmt *s = NULL;
    char name[128];
    size_t n;
    bool partial = false;

    if (!p)
        return false;
    p += 6;
    n = strcspn(p, " (");
    if (n == 0 || n >= sizeof name)
        return false;
    memcpy(name, p, n);
    name[n] = '\0';
    if (sqlite3_prepare_v2(st->db,
                           "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1"
                           " AND sql LIKE '% WHERE %'",
                           -1, &s, NULL) == SQLITE_OK &&
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC) == SQLITE_OK)
        partial = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    return partial;
}

int sq_check_plans(struct store *st)
{
    for (size_t t = 0; t < sizeof sql_tables / sizeof sql_tables[0]; t++) {
        for (const struct store_sql *q = sql_tables[t]; q->sql; q++) {
            sqlite3_stmt *s = NULL;
            char *eqp;
            int rc;

            if (q->may_scan)
                continue;
            if (!(eqp = sqlite3_mprintf("EXPLAIN QUERY PLAN %s", q->sql)))
                return store_failf(st, STORE_ERR_NOMEM, "check plans: out of memory");
            rc = sqlite3_prepare_v2(st->db, eqp, -1, &s, NULL);
            sqlite3_free(eqp);
            if (rc != SQLITE_OK)
                return store_fail(st, rc, "explain");
            while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *detail = (const char *)sqlite3_column_text(s, 3);

                /* SEARCH (an index range), subqueries and constant rows are fine */
                if (detail && strncmp(detail, "SCAN ", 5) == 0 &&
                    strcmp(detail, "SCAN CONSTANT ROW") != 0 && !scans_partial_index(st, detail)) {
                    rc = store_failf(st, STORE_ERR_SCHEMA, "full scan in \"%s\": %s", q->sql, detail);
                    sqlite3_finalize(s);
                    return rc;
                }
            }
            sqlite3_finalize(s);
            if (rc != SQLITE_DONE)
                return store_fail(st, rc, "explain");
        }
    }
    return 0;
}

/* The SQLite backend's table (store_ops.h). */
const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .set_lock_wait = sq_set_lock_wait,
    .close = sq_close,
    .last_error = sq_last_error,
    .schema_version = sq_schema_version,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .in_transaction = sq_in_transaction,
    .ping = sq_ping,
    .backup = sq_backup,
    .stats = sq_stats,
    .wal_stats = sq_wal_stats,
    .check_plans = sq_check_plans,
    .session_begin = sq_session_begin,
    .session_touch = sq_session_touch,
    .session_end = sq_session_end,
    .session_end_orphans = sq_session_end_orphans,
    .session_get = sq_session_get,
    .session_list = sq_session_list,
    .session_count_active = sq_session_count_active,
    .presence_set = sq_presence_set,
    .presence_get = sq_presence_get,
    .msg_insert = sq_msg_insert,
    .msg_ack = sq_msg_ack,
    .msg_ack_first = sq_msg_ack_first,
    .pending_direct = sq_pending_direct,
    .history_direct = sq_history_direct,
    .history_room = sq_history_room,
    .msg_get = sq_msg_get,
    .room_join = sq_room_join,
    .room_join_via = sq_room_join_via,
    .room_add = sq_room_add,
    .room_member_via = sq_room_member_via,
    .room_delete = sq_room_delete,
    .rooms_list = sq_rooms_list,
    .room_member_count = sq_room_member_count,
    .user_conversations = sq_user_conversations,
    .retention_step = sq_retention_step,
    .user_erase = sq_user_erase,
    .atomic_begin = sq_atomic_begin,
    .atomic_end = sq_atomic_end,
    .msg_delete = sq_msg_delete,
    .room_leave = sq_room_leave,
    .room_is_member = sq_room_is_member,
    .room_cursor = sq_room_cursor,
    .room_members = sq_room_members,
    .user_rooms = sq_user_rooms,
    .users_sharing_room = sq_users_sharing_room,
    .room_replay = sq_room_replay,
    .outbox_add = sq_outbox_add,
    .outbox_scan = sq_outbox_scan,
    .outbox_scan_after = sq_outbox_scan_after,
    .outbox_replays = sq_outbox_replays,
    .outbox_delivered = sq_outbox_delivered,
    .outbox_retry = sq_outbox_retry,
    .outbox_expire = sq_outbox_expire,
    .outbox_dead_list = sq_outbox_dead_list,
    .outbox_replay = sq_outbox_replay,
    .outbox_counts = sq_outbox_counts,
    .node_join = sq_node_join,
    .node_renew = sq_node_renew,
    .node_leave = sq_node_leave,
    .node_sweep = sq_node_sweep,
    .nodes_list = sq_nodes_list,
    .cluster_note = sq_cluster_note,
    .outbox_owner = sq_outbox_owner,
    .commit_start = sq_commit_start,
    .commit_poll = sq_commit_poll,
};
