/*
 * store_room.c -- the room_members table: who is in which room and, per member, the cursor (newest
 * acked message id) that decides what a reconnecting member is replayed.
 */
#include <stdint.h>
#include <string.h>

#include "store_internal.h"

const struct store_sql store_sql_room[] = {
    /* The cursor starts at the room's newest message: a new member gets live traffic, not the backlog.
     * DO NOTHING: joining again keeps the cursor. */
    {STMT_ROOM_JOIN, false,
     "INSERT INTO room_members (room, user, joined_at, cursor, via) VALUES (?1, ?2, ?3,"
     " coalesce((SELECT id FROM messages WHERE room = ?1 ORDER BY id DESC LIMIT 1), 0), ?4)"
     " ON CONFLICT (room, user) DO NOTHING"},
    {STMT_ROOM_LEAVE, false, "DELETE FROM room_members WHERE room = ?1 AND user = ?2"},
    {STMT_ROOM_CURSOR, false, "SELECT cursor FROM room_members WHERE room = ?1 AND user = ?2"},
    /* used by store_msg_ack; no row matches a direct message (its room is NULL) */
    {STMT_ROOM_ACK, false,
     "UPDATE room_members SET cursor = max(cursor, ?2)"
     " WHERE room = (SELECT room FROM messages WHERE id = ?2) AND user = ?1"},
    {STMT_ROOM_MEMBERS, false, "SELECT user FROM room_members WHERE room = ?1 ORDER BY user"},
    {STMT_USER_ROOMS, false, "SELECT room FROM room_members WHERE user = ?1 ORDER BY room"},
    {STMT_USERS_SHARING, false,
     "SELECT DISTINCT b.user FROM room_members AS a JOIN room_members AS b ON b.room = a.room"
     " WHERE a.user = ?1 AND b.user <> ?1 ORDER BY b.user"},
    /* id of the newest message that does NOT fit in a replay of ?3: the floor of a truncated replay */
    {STMT_ROOM_REPLAY_FLOOR, false,
     "SELECT id FROM messages WHERE room = ?1 AND id > ?2 ORDER BY id DESC LIMIT 1 OFFSET ?3"},
    {STMT_ROOM_REPLAY, false,
     "SELECT " STORE_MSG_COLS " FROM messages WHERE room = ?1 AND id > ?2 AND deleted_at IS NULL"
     " ORDER BY id LIMIT ?3"},
    {STMT_COUNT, false, NULL},
};

static int bind_room_user(struct store *st, sqlite3_stmt *s, const char *room, const char *user,
                          const char *what)
{
    if (!store_name_ok(room) || !store_name_ok(user))
        return store_failf(st, STORE_ERR_INVALID, "%s: room and user needed", what);
    if (store_bind_text(s, 1, room) || store_bind_text(s, 2, user))
        return store_bind_fail(st, s, what);
    return 0;
}

int sq_room_join(struct store *st, const char *room, const char *user, int64_t now, bool *joined)
{
    return sq_room_join_via(st, room, user, now, STORE_VIA_JOIN, joined);
}

int sq_room_join_via(struct store *st, const char *room, const char *user, int64_t now,
                        enum store_via via, bool *joined)
{
    sqlite3_stmt *s = st->stmt[STMT_ROOM_JOIN];
    int rc;

    if ((rc = store_write_check(st)) < 0 || (rc = store_room_ensure(st, room, now)) < 0 ||
        (rc = bind_room_user(st, s, room, user, "join")) < 0)
        return rc;
    sqlite3_bind_int64(s, 3, now);
    if (store_bind_text(s, 4, store_via_name(via)))
        return store_bind_fail(st, s, "join");
    if ((rc = store_exec_stmt(st, s, "join")) < 0)
        return rc;
    if (joined)
        *joined = sqlite3_changes(st->db) > 0;
    return 0;
}

int sq_room_leave(struct store *st, const char *room, const char *user)
{
    sqlite3_stmt *s = st->stmt[STMT_ROOM_LEAVE];
    int rc;

    if ((rc = store_write_check(st)) < 0 || (rc = bind_room_user(st, s, room, user, "leave")) < 0)
        return rc;
    if ((rc = store_exec_stmt(st, s, "leave")) < 0)
        return rc;
    if (sqlite3_changes(st->db) == 0)
        return store_failf(st, STORE_ERR_NOTFOUND, "leave: %s is not in room %s", user, room);
    return 0;
}

int sq_room_cursor(struct store *st, const char *room, const char *user, int64_t *cursor)
{
    sqlite3_stmt *s = st->stmt[STMT_ROOM_CURSOR];
    int rc;

    if ((rc = bind_room_user(st, s, room, user, "cursor")) < 0)
        return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        if (cursor)
            *cursor = sqlite3_column_int64(s, 0);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = store_failf(st, STORE_ERR_NOTFOUND, "%s is not in room %s", user, room);
    } else {
        rc = store_fail(st, rc, "cursor");
    }
    store_stmt_done(s);
    return rc;
}

int sq_room_is_member(struct store *st, const char *room, const char *user, bool *member)
{
    int rc = sq_room_cursor(st, room, user, NULL);

    if (rc != 0 && rc != STORE_ERR_NOTFOUND)
        return rc;
    *member = rc == 0;
    return 0;
}

static int name_walk(struct store *st, enum store_stmt_id id, const char *name, store_name_fn *cb,
                     void *ctx, const char *what)
{
    sqlite3_stmt *s = st->stmt[id];

    if (!store_name_ok(name) || !cb)
        return store_failf(st, STORE_ERR_INVALID, "%s: a name and a callback needed", what);
    if (store_bind_text(s, 1, name))
        return store_bind_fail(st, s, what);
    return store_each_name(st, s, cb, ctx, what);
}

int sq_room_members(struct store *st, const char *room, store_name_fn *cb, void *ctx)
{
    return name_walk(st, STMT_ROOM_MEMBERS, room, cb, ctx, "room members");
}

int sq_user_rooms(struct store *st, const char *user, store_name_fn *cb, void *ctx)
{
    return name_walk(st, STMT_USER_ROOMS, user, cb, ctx, "user rooms");
}

int sq_users_sharing_room(struct store *st, const char *user, store_name_fn *cb, void *ctx)
{
    return name_walk(st, STMT_USERS_SHARING, user, cb, ctx, "users sharing a room");
}

int sq_room_replay(struct store *st, const char *room, const char *user, int limit,
                      store_msg_fn *cb, void *ctx, bool *truncated)
{
    sqlite3_stmt *s;
    int64_t floor;
    int rc;

    if (limit < 1 || !cb)
        return store_failf(st, STORE_ERR_INVALID, "replay: limit >= 1 and a callback needed");
    if ((rc = sq_room_cursor(st, room, user, &floor)) < 0)
        return rc;
    if (truncated)
        *truncated = false;

    /* More than limit waiting? Then start above the newest message that does not fit. */
    s = st->stmt[STMT_ROOM_REPLAY_FLOOR];
    if (store_bind_text(s, 1, room) || sqlite3_bind_int64(s, 2, floor) ||
        sqlite3_bind_int(s, 3, limit))
        return store_bind_fail(st, s, "replay");
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        floor = sqlite3_column_int64(s, 0);
        if (truncated)
            *truncated = true;
        rc = SQLITE_DONE;
    }
    store_stmt_done(s);
    if (rc != SQLITE_DONE)
        return store_fail(st, rc, "replay");

    s = st->stmt[STMT_ROOM_REPLAY];
    if (store_bind_text(s, 1, room) || sqlite3_bind_int64(s, 2, floor) ||
        sqlite3_bind_int(s, 3, limit))
        return store_bind_fail(st, s, "replay");
    return store_each_msg(st, s, limit, cb, ctx, NULL, "replay");
}
