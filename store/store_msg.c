/*
 * store_msg.c -- the messages table: idempotent insert, acks, replay of pending direct
 * messages, history paging, and one message with its delivery state for the API.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

const struct store_sql store_sql_msg[] = {
    /* A repeated (sender, cid) changes no row. A direct message is pending from here on (delivered_at
     * NULL): one statement, so atomic with no savepoint. No RETURNING: it stages every row in a temp
     * b-tree and cost ~40 % of an insert (measured); the id is sqlite3_last_insert_rowid. */
    {STMT_MSG_INSERT, false,
     "INSERT INTO messages (sender, to_user, room, body, cid, created_at, via)"
     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (sender, cid) DO NOTHING"},
    {STMT_MSG_BY_CID, false, "SELECT id, created_at FROM messages WHERE sender = ?1 AND cid = ?2"},
    {STMT_MSG_TARGET, false, "SELECT to_user FROM messages WHERE id = ?1"},
    /* the hot ack path in one statement; "IS NULL" keeps the first ack's time and session */
    {STMT_MSG_DELIVERED, false,
     "UPDATE messages SET delivered_at = ?3, delivered_by = ?4"
     " WHERE id = ?1 AND to_user = ?2 AND delivered_at IS NULL"},
    {STMT_MSG_PENDING, false,
     "SELECT " STORE_MSG_COLS " FROM messages"
     " WHERE to_user = ?1 AND delivered_at IS NULL AND id > ?2 AND deleted_at IS NULL"
     " ORDER BY id LIMIT ?3"},
    /* Two index ranges (one per direction) merged newest first; "?1 <> ?2" keeps notes to self
     * from showing twice. ?4 is limit + 1: the extra row only tells that more exist. */
    {STMT_MSG_HISTORY_DIRECT, false,
     "SELECT " STORE_MSG_COLS " FROM messages WHERE to_user = ?2 AND sender = ?1 AND id < ?3"
     " AND deleted_at IS NULL"
     " UNION ALL"
     " SELECT " STORE_MSG_COLS " FROM messages WHERE to_user = ?1 AND sender = ?2 AND id < ?3"
     " AND ?1 <> ?2 AND deleted_at IS NULL"
     " ORDER BY 1 DESC LIMIT ?4"},
    {STMT_MSG_HISTORY_ROOM, false,
     "SELECT " STORE_MSG_COLS " FROM messages WHERE room = ?1 AND id < ?2 AND deleted_at IS NULL"
     " ORDER BY id DESC LIMIT ?3"},
    {STMT_MSG_GET, false,
     "SELECT " STORE_MSG_COLS ", to_user IS NOT NULL, delivered_at, delivered_by, deleted_at"
     " FROM messages WHERE id = ?1"},
    {STMT_COUNT, false, NULL},
};

/* The first message stored with (sender, cid). */
static int find_by_cid(struct store *st, const char *sender, const char *cid, struct store_receipt *out)
{
    sqlite3_stmt *s = st->stmt[STMT_MSG_BY_CID];
    int rc;

    if (store_bind_text(s, 1, sender) || store_bind_text(s, 2, cid))
        return store_bind_fail(st, s, "message by cid");
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        out->id = sqlite3_column_int64(s, 0);
        out->created_at = sqlite3_column_int64(s, 1);
        out->duplicate = true;
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = store_failf(st, STORE_ERR_IO, "message insert: conflict on (sender, cid) but no row");
    } else {
        rc = store_fail(st, rc, "message by cid");
    }
    store_stmt_done(s);
    return rc;
}

int sq_msg_insert(struct store *st, const struct store_msg *m, struct store_receipt *out)
{
    sqlite3_stmt *s = st->stmt[STMT_MSG_INSERT];
    int rc;

    if (!m || !out || !store_name_ok(m->sender) || !m->body ||
        (store_name_ok(m->to_user) == store_name_ok(m->room)) || (m->to_user && !*m->to_user) ||
        (m->room && !*m->room))
        return store_failf(st, STORE_ERR_INVALID,
                           "message insert: sender, body and exactly one of to_user/room needed");
    if ((rc = store_write_check(st)) < 0)
        return rc;
    if (store_bind_text(s, 1, m->sender) || store_bind_text(s, 2, m->to_user) ||
        store_bind_text(s, 3, m->room) || store_bind_text(s, 4, m->body) ||
        store_bind_text(s, 5, m->cid) || sqlite3_bind_int64(s, 6, m->created_at) ||
        store_bind_text(s, 7, m->via))
        return store_bind_fail(st, s, "message insert");
    if ((rc = store_exec_stmt(st, s, "message insert")) < 0)
        return rc;
    if (sqlite3_changes(st->db) == 0) /* DO NOTHING: this cid was used before */
        return find_by_cid(st, m->sender, m->cid, out);
    out->id = sqlite3_last_insert_rowid(st->db);
    /* The conversation list's state moves in the same transaction as the message. */
    if ((rc = store_conv_touch(st, m, out->id)) < 0)
        return rc;
    out->created_at = m->created_at;
    out->duplicate = false;
    return 0;
}

int sq_msg_ack(struct store *st, const char *user, int64_t msg_id, int64_t session_id,
                  int64_t now)
{
    bool first;
    return sq_msg_ack_first(st, user, msg_id, session_id, now, &first);
}

int sq_msg_ack_first(struct store *st, const char *user, int64_t msg_id, int64_t session_id,
                        int64_t now, bool *first)
{
    sqlite3_stmt *s = st->stmt[STMT_MSG_DELIVERED];
    bool mine = false;
    int rc;

    *first = false;
    if (!store_name_ok(user))
        return store_failf(st, STORE_ERR_INVALID, "ack: no user");
    if ((rc = store_write_check(st)) < 0)
        return rc;
    /* Most acks are the first ack of a direct message: one statement. */
    if (store_bind_text(s, 2, user))
        return store_bind_fail(st, s, "ack");
    sqlite3_bind_int64(s, 1, msg_id);
    sqlite3_bind_int64(s, 3, now);
    if (session_id > 0)
        sqlite3_bind_int64(s, 4, session_id);
    if ((rc = store_exec_stmt(st, s, "ack")) < 0)
        return rc;
    if (sqlite3_changes(st->db) > 0) {
        *first = true; /* the first ack of a direct message: delivered now */
        return 0;
    }

    /* A room message user is a member of? (no row changes for direct messages: room is NULL) */
    s = st->stmt[STMT_ROOM_ACK];
    if (store_bind_text(s, 1, user))
        return store_bind_fail(st, s, "room ack");
    sqlite3_bind_int64(s, 2, msg_id);
    if ((rc = store_exec_stmt(st, s, "room ack")) < 0)
        return rc;
    if (sqlite3_changes(st->db) > 0)
        return 0;

    /* A direct message to user acked before is fine (the first ack stays); anything else is not. */
    s = st->stmt[STMT_MSG_TARGET];
    sqlite3_bind_int64(s, 1, msg_id);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *to = store_col_text(s, 0);

        mine = to && strcmp(to, user) == 0;
        rc = SQLITE_DONE;
    }
    store_stmt_done(s);
    if (rc != SQLITE_DONE)
        return store_fail(st, rc, "ack lookup");
    if (mine)
        return 0;
    return store_failf(st, STORE_ERR_NOTFOUND, "ack: message %" PRId64 " is not for %s", msg_id, user);
}

int sq_pending_direct(struct store *st, const char *user, int64_t after_id, int limit,
                         store_msg_fn *cb, void *ctx)
{
    sqlite3_stmt *s = st->stmt[STMT_MSG_PENDING];

    if (!store_name_ok(user) || limit < 1 || !cb)
        return store_failf(st, STORE_ERR_INVALID, "pending: user, limit >= 1 and a callback needed");
    if (store_bind_text(s, 1, user) || sqlite3_bind_int64(s, 2, after_id) ||
        sqlite3_bind_int(s, 3, limit))
        return store_bind_fail(st, s, "pending");
    return store_each_msg(st, s, limit, cb, ctx, NULL, "pending");
}

/* Shared tail of both history walks: limit + 1 rows were asked for, the extra one means "more". */
static int history_walk(struct store *st, sqlite3_stmt *s, int limit, store_msg_fn *cb, void *ctx,
                        bool *more, const char *what)
{
    int rows = 0, rc = store_each_msg(st, s, limit, cb, ctx, &rows, what);

    if (more)
        *more = rc == 0 && rows > limit;
    return rc;
}

int sq_history_direct(struct store *st, const char *user_a, const char *user_b, int64_t before_id,
                         int limit, store_msg_fn *cb, void *ctx, bool *more)
{
    sqlite3_stmt *s = st->stmt[STMT_MSG_HISTORY_DIRECT];

    if (!store_name_ok(user_a) || !store_name_ok(user_b) || limit < 1 || !cb)
        return store_failf(st, STORE_ERR_INVALID, "history: two users, limit >= 1, a callback needed");
    if (store_bind_text(s, 1, user_a) || store_bind_text(s, 2, user_b) ||
        sqlite3_bind_int64(s, 3, before_id > 0 ? before_id : INT64_MAX) ||
        sqlite3_bind_int64(s, 4, (int64_t)limit + 1))
        return store_bind_fail(st, s, "history");
    return history_walk(st, s, limit, cb, ctx, more, "history");
}

int sq_history_room(struct store *st, const char *room, int64_t before_id, int limit,
                       store_msg_fn *cb, void *ctx, bool *more)
{
    sqlite3_stmt *s = st->stmt[STMT_MSG_HISTORY_ROOM];

    if (!store_name_ok(room) || limit < 1 || !cb)
        return store_failf(st, STORE_ERR_INVALID, "room history: room, limit >= 1, a callback needed");
    if (store_bind_text(s, 1, room) ||
        sqlite3_bind_int64(s, 2, before_id > 0 ? before_id : INT64_MAX) ||
        sqlite3_bind_int64(s, 3, (int64_t)limit + 1))
        return store_bind_fail(st, s, "room history");
    return history_walk(st, s, limit, cb, ctx, more, "room history");
}

/* Copy m's strings into one block owned by out. */
int sq_msg_get(struct store *st, int64_t id, struct store_msg_info *out)
{
    sqlite3_stmt *s = st->stmt[STMT_MSG_GET];
    struct store_msg m;
    int rc;

    memset(out, 0, sizeof *out);
    sqlite3_bind_int64(s, 1, id);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        store_msg_from_row(s, 0, &m);
        out->direct = sqlite3_column_int(s, STORE_MSG_NCOLS) != 0;
        out->delivered = sqlite3_column_type(s, STORE_MSG_NCOLS + 1) != SQLITE_NULL;
        out->delivered_at = sqlite3_column_int64(s, STORE_MSG_NCOLS + 1);
        out->delivered_by = sqlite3_column_int64(s, STORE_MSG_NCOLS + 2);
        out->deleted = sqlite3_column_type(s, STORE_MSG_NCOLS + 3) != SQLITE_NULL;
        rc = store_msg_copy(out, &m) == 0
                 ? 0
                 : store_failf(st, STORE_ERR_NOMEM, "message get: no memory");
    } else if (rc == SQLITE_DONE) {
        rc = store_failf(st, STORE_ERR_NOTFOUND, "no message %" PRId64, id);
    } else {
        rc = store_fail(st, rc, "message get");
    }
    store_stmt_done(s);
    if (rc < 0)
        store_msg_info_release(out);
    return rc;
}

