/*
 * store_session.c -- the sessions table: one row per WebSocket connection, from upgrade to end, kept
 * after the end for the admin CLI and API. Also the start-up repair after a crash.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

#define SESSION_COLS \
    "id, user, remote_addr, user_agent, subprotocol, connected_at, last_seen_at, ended_at," \
    " end_reason, node"

/*
 * The list statements share one parameter set so one bind routine serves all four:
 * ?1 user, ?2 state (0 any, 1 active, 2 ended), ?3 since, ?4 before id, ?5 limit.
 * store_session_list picks the one whose index fits the filter.
 */
#define STATE_MATCH "(?2 = 0 OR (?2 = 1) = (ended_at IS NULL))"
#define LIST_TAIL " AND id < ?4 AND connected_at >= ?3 AND " STATE_MATCH " ORDER BY id DESC LIMIT ?5"

const struct store_sql store_sql_session[] = {
    {STMT_SESSION_INSERT, false,
     "INSERT INTO sessions (user, remote_addr, user_agent, subprotocol, connected_at, last_seen_at)"
     " VALUES (?1, ?2, ?3, ?4, ?5, ?5)"},
    {STMT_SESSION_TOUCH, false,
     "UPDATE sessions SET last_seen_at = max(last_seen_at, ?2) WHERE id = ?1"},
    {STMT_SESSION_END, false,
     "UPDATE sessions SET ended_at = ?2, end_reason = ?3 WHERE id = ?1 AND ended_at IS NULL"},
    {STMT_SESSION_END_ORPHANS, false,
     "UPDATE sessions SET ended_at = ?1, end_reason = ?2 WHERE ended_at IS NULL"},
    {STMT_SESSION_GET, false, "SELECT " SESSION_COLS " FROM sessions WHERE id = ?1"},
    {STMT_SESSION_LIST_USER, false,
     "SELECT " SESSION_COLS " FROM sessions WHERE user = ?1" LIST_TAIL},
    {STMT_SESSION_LIST_SINCE, false,
     "SELECT " SESSION_COLS " FROM sessions INDEXED BY sessions_connected"
     " WHERE ?1 IS NULL" LIST_TAIL},
    /* walks the partial index of active sessions: as many rows as live connections */
    {STMT_SESSION_LIST_ACTIVE, false,
     "SELECT " SESSION_COLS " FROM sessions INDEXED BY sessions_open"
     " WHERE ended_at IS NULL AND ?1 IS NULL" LIST_TAIL},
    {STMT_SESSION_LIST_ALL, false,
     "SELECT " SESSION_COLS " FROM sessions WHERE ?1 IS NULL" LIST_TAIL},
    /* counts the partial index of active sessions */
    {STMT_SESSION_COUNT_ACTIVE, false, "SELECT count(*) FROM sessions WHERE ended_at IS NULL"},
    {STMT_SESSION_COUNT_ACTIVE_USER, false,
     "SELECT count(*) FROM sessions WHERE user = ?1 AND ended_at IS NULL"},
    {STMT_COUNT, false, NULL},
};

int sq_session_begin(struct store *st, const char *user, const char *remote_addr,
                        const char *user_agent, const char *subprotocol, int64_t now, int64_t *id)
{
    sqlite3_stmt *s = st->stmt[STMT_SESSION_INSERT];
    int rc;

    if (!store_name_ok(user) || !remote_addr)
        return store_failf(st, STORE_ERR_INVALID, "session begin: user and remote address needed");
    if ((rc = store_write_check(st)) < 0)
        return rc;
    if (store_bind_text(s, 1, user) || store_bind_text(s, 2, remote_addr) ||
        store_bind_text(s, 3, user_agent) || store_bind_text(s, 4, subprotocol) ||
        sqlite3_bind_int64(s, 5, now)) {
        return store_bind_fail(st, s, "session begin");
    }
    if ((rc = store_exec_stmt(st, s, "session begin")) < 0)
        return rc;
    if (id)
        *id = sqlite3_last_insert_rowid(st->db);
    return 0;
}

/* Run an UPDATE bound by the caller; NOTFOUND when it matched no row. */
static int update_one(struct store *st, sqlite3_stmt *s, const char *what, int64_t id)
{
    int rc = store_exec_stmt(st, s, what);

    if (rc < 0)
        return rc;
    if (sqlite3_changes(st->db) == 0)
        return store_failf(st, STORE_ERR_NOTFOUND, "%s: no such session %" PRId64, what, id);
    return 0;
}

int sq_session_touch(struct store *st, int64_t id, int64_t now)
{
    sqlite3_stmt *s = st->stmt[STMT_SESSION_TOUCH];
    int rc;

    if ((rc = store_write_check(st)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, now);
    return update_one(st, s, "session touch", id);
}

int sq_session_end(struct store *st, int64_t id, int64_t now, const char *reason)
{
    sqlite3_stmt *s = st->stmt[STMT_SESSION_END];
    int rc;

    if (!store_name_ok(reason))
        return store_failf(st, STORE_ERR_INVALID, "session end: a reason is needed");
    if ((rc = store_write_check(st)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, now);
    if (store_bind_text(s, 3, reason)) {
        return store_bind_fail(st, s, "session end");
    }
    rc = update_one(st, s, "session end", id);
    if (rc == STORE_ERR_NOTFOUND)
        store_failf(st, rc, "session end: no active session %" PRId64, id);
    return rc;
}

int sq_session_end_orphans(struct store *st, int64_t now, const char *reason, int64_t *count)
{
    sqlite3_stmt *p = st->stmt[STMT_PRESENCE_RESET_ORPHANS];
    sqlite3_stmt *s = st->stmt[STMT_SESSION_END_ORPHANS];
    int64_t n = 0;
    bool own;
    int rc;

    if (!store_name_ok(reason))
        return store_failf(st, STORE_ERR_INVALID, "end orphans: a reason is needed");
    if ((rc = sq_atomic_begin(st, &own)) < 0)
        return rc;
    /* Presence first: it reads the last_seen_at of the sessions that are still open. */
    rc = store_exec_stmt(st, p, "reset presence");
    if (rc == 0) {
        sqlite3_bind_int64(s, 1, now);
        if (store_bind_text(s, 2, reason)) {
            rc = store_bind_fail(st, s, "end orphans");
        } else if ((rc = store_exec_stmt(st, s, "end orphans")) == 0) {
            n = sqlite3_changes64(st->db);
        }
    }
    rc = sq_atomic_end(st, own, rc);
    if (rc == 0 && count)
        *count = n;
    return rc;
}

static void session_from_row(sqlite3_stmt *s, struct store_session *o)
{
    o->id = sqlite3_column_int64(s, 0);
    o->user = store_col_text(s, 1);
    o->remote_addr = store_col_text(s, 2);
    o->user_agent = store_col_text(s, 3);
    o->subprotocol = store_col_text(s, 4);
    o->connected_at = sqlite3_column_int64(s, 5);
    o->last_seen_at = sqlite3_column_int64(s, 6);
    o->ended = sqlite3_column_type(s, 7) != SQLITE_NULL;
    o->ended_at = sqlite3_column_int64(s, 7);
    o->end_reason = store_col_text(s, 8);
    o->node = sqlite3_column_int64(s, 9);
    o->owned_ = NULL;
}

int sq_session_get(struct store *st, int64_t id, struct store_session *out)
{
    sqlite3_stmt *s = st->stmt[STMT_SESSION_GET];
    struct store_session row;
    int rc;

    memset(out, 0, sizeof *out);
    sqlite3_bind_int64(s, 1, id);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        session_from_row(s, &row);
        rc = store_session_copy(out, &row) == 0 ? 0
                                          : store_failf(st, STORE_ERR_NOMEM, "session get: no memory");
    } else if (rc == SQLITE_DONE) {
        rc = store_failf(st, STORE_ERR_NOTFOUND, "no session %" PRId64, id);
    } else {
        rc = store_fail(st, rc, "session get");
    }
    store_stmt_done(s);
    if (rc < 0)
        store_session_release(out);
    return rc;
}

int sq_session_list(struct store *st, const struct store_session_filter *f, store_session_fn *cb,
                       void *ctx)
{
    enum store_stmt_id id;
    struct store_session row;
    sqlite3_stmt *s;
    int rc, stop = 0;

    if (!f || f->limit < 1 || (f->user && !*f->user) || (unsigned)f->state > STORE_SESSIONS_ENDED)
        return store_failf(st, STORE_ERR_INVALID, "session list: bad filter");
    if (f->user)
        id = STMT_SESSION_LIST_USER;
    else if (f->since_ms > 0)
        id = STMT_SESSION_LIST_SINCE;
    else if (f->state == STORE_SESSIONS_ACTIVE)
        id = STMT_SESSION_LIST_ACTIVE;
    else
        id = STMT_SESSION_LIST_ALL;
    s = st->stmt[id];
    if (store_bind_text(s, 1, f->user) || sqlite3_bind_int(s, 2, (int)f->state) ||
        sqlite3_bind_int64(s, 3, f->since_ms > 0 ? f->since_ms : INT64_MIN) ||
        sqlite3_bind_int64(s, 4, f->before_id > 0 ? f->before_id : INT64_MAX) ||
        sqlite3_bind_int(s, 5, f->limit)) {
        return store_bind_fail(st, s, "session list");
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        session_from_row(s, &row);
        if ((stop = cb(ctx, &row)) != 0)
            break;
    }
    store_stmt_done(s);
    if (stop)
        return stop;
    return rc == SQLITE_DONE ? 0 : store_fail(st, rc, "session list");
}

int sq_session_count_active(struct store *st, const char *user, int64_t *count)
{
    sqlite3_stmt *s = st->stmt[user ? STMT_SESSION_COUNT_ACTIVE_USER : STMT_SESSION_COUNT_ACTIVE];
    int rc;

    if (user && store_bind_text(s, 1, user)) {
        return store_bind_fail(st, s, "count active");
    }
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *count = sqlite3_column_int64(s, 0);
    store_stmt_done(s);
    return rc == SQLITE_ROW ? 0 : store_fail(st, rc, "count active");
}
