/*
 * store_pg_room.c -- the PostgreSQL backend's rooms: memberships with their cursors, replay, the
 * backend's room administration and the conversation list. store_room.c and store_conv.c are the
 * SQLite twins. Writes that touch several rows are one statement (data-modifying CTEs): atomic on
 * their own and one round trip.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg_internal.h"

/* A rooms row for $1 created at $3 when missing. created_at is the oldest time seen (as SQLite's
 * upsert); a row already as old is left alone (no new row version written). */
#define ROOM_ENSURE(name, at)                                                  \
    "INSERT INTO rooms (name, created_at) VALUES (" name ", " at ")"           \
    " ON CONFLICT (name) DO UPDATE SET created_at = excluded.created_at"       \
    " WHERE rooms.created_at > excluded.created_at"

static const char SQL_ROOM_ENSURE[] = ROOM_ENSURE("$1::text", "$2::bigint");
/* $1 room, $2 user, $3 now, $4 via. The cursor starts at the room's newest message: a new member
 * gets live traffic, not the backlog. DO NOTHING: joining again keeps the cursor and the grant. */
static const char SQL_ROOM_JOIN[] =
    "WITH r AS (" ROOM_ENSURE("$1::text", "$3::bigint") ")"
    " INSERT INTO room_members (room, \"user\", joined_at, cursor, via) VALUES ($1, $2, $3,"
    " coalesce((SELECT id FROM messages WHERE room = $1 ORDER BY id DESC LIMIT 1), 0), $4)"
    " ON CONFLICT (room, \"user\") DO NOTHING";
static const char SQL_ROOM_LEAVE[] = "DELETE FROM room_members WHERE room = $1 AND \"user\" = $2";
static const char SQL_ROOM_CURSOR[] =
    "SELECT cursor FROM room_members WHERE room = $1 AND \"user\" = $2";
static const char SQL_ROOM_MEMBERS[] =
    "SELECT \"user\" FROM room_members WHERE room = $1 ORDER BY \"user\"";
static const char SQL_USER_ROOMS[] =
    "SELECT room FROM room_members WHERE \"user\" = $1 ORDER BY room";
static const char SQL_USERS_SHARING[] =
    "SELECT DISTINCT b.\"user\" FROM room_members AS a JOIN room_members AS b ON b.room = a.room"
    " WHERE a.\"user\" = $1 AND b.\"user\" <> $1 ORDER BY b.\"user\"";
/*
 * Replay in one round trip: $1 room, $2 user, $3 limit. h is the member's row (none: not a member)
 * with the floor of a truncated replay (the newest message that does NOT fit, NULL if all fit); the
 * messages after the floor (or the cursor) are joined to it, so a member with nothing to replay
 * still gets one row, its message columns NULL.
 */
static const char SQL_ROOM_REPLAY[] =
    "WITH h AS (SELECT mb.cursor, (SELECT id FROM messages WHERE room = $1::text"
    " AND id > mb.cursor ORDER BY id DESC LIMIT 1 OFFSET $3::bigint) AS fl"
    " FROM room_members AS mb WHERE mb.room = $1::text AND mb.\"user\" = $2::text)"
    " SELECT h.fl IS NOT NULL, x.* FROM h LEFT JOIN LATERAL (SELECT " PG_MSG_COLS
    " FROM messages WHERE room = $1::text AND id > coalesce(h.fl, h.cursor)"
    " AND deleted_at IS NULL ORDER BY id LIMIT $3::bigint) AS x ON true ORDER BY x.id";

/* $1 room, $2 user, $3 now. A new member's cursor is rooms.last_id (read before the ensure: a room
 * created here has 0, as it would after it); an existing one's grant becomes 'api'. The first
 * column tells whether the member is new (from the snapshot before the statement). */
static const char SQL_ROOM_ADD[] =
    "WITH old AS (SELECT 1 FROM room_members WHERE room = $1::text AND \"user\" = $2::text),"
    " r AS (" ROOM_ENSURE("$1::text", "$3::bigint") "),"
    " a AS (INSERT INTO room_members (room, \"user\", joined_at, cursor, via)"
    " VALUES ($1::text, $2::text, $3::bigint,"
    " coalesce((SELECT last_id FROM rooms WHERE name = $1::text), 0), 'api')"
    " ON CONFLICT (room, \"user\") DO UPDATE SET via = 'api')"
    " SELECT NOT EXISTS (SELECT 1 FROM old)";
static const char SQL_ROOM_VIA[] =
    "SELECT via FROM room_members WHERE room = $1 AND \"user\" = $2";
/*
 * Delete a room in one statement: its memberships (returned, for the callback), its messages
 * become tombstones, its row goes. The first row (k 0) carries how many rooms rows went (0: no such
 * room); the members follow in name order.
 */
static const char SQL_ROOM_DELETE[] =
    "WITH mb AS (DELETE FROM room_members WHERE room = $1::text RETURNING \"user\"),"
    " t AS (UPDATE messages SET deleted_at = $2::bigint, body = 'null'"
    " WHERE room = $1::text AND deleted_at IS NULL),"
    " r AS (DELETE FROM rooms WHERE name = $1::text RETURNING 1)"
    " SELECT 0 AS k, NULL::text AS u, (SELECT count(*) FROM r) AS n"
    " UNION ALL SELECT 1, \"user\", 0 FROM mb ORDER BY k, u";
static const char SQL_ROOMS_LIST[] =
    "SELECT name, created_at, last_id,"
    " (SELECT count(*) FROM room_members WHERE room_members.room = rooms.name)"
    " FROM rooms WHERE name > $1 ORDER BY name LIMIT $2";
static const char SQL_ROOM_MEMBER_COUNT[] = "SELECT count(*) FROM room_members WHERE room = $1";

/*
 * The conversation list in one round trip: $1 user, $2 before id, $3 limit + 1, $4 limit.
 * k: the newest $3 of the user's direct conversations and rooms (with a message) merged; each is
 * joined to its last message (none: retention deleted it) and, for the first $4, its unread count,
 * one bounded index range each (the LIMIT in the counts is STORE_UNREAD_MAX; the ORDER BY keeps
 * them plain index scans, which stop there, where a bitmap scan would collect the whole range).
 */
static const char SQL_CONVERSATIONS[] =
    "WITH d AS (SELECT false AS is_room, peer, last_id, 0::bigint AS cursor"
    " FROM dm_conversations WHERE \"user\" = $1::text AND last_id < $2::bigint"
    " ORDER BY last_id DESC LIMIT $3::bigint),"
    " r AS (SELECT true AS is_room, ro.name AS peer, ro.last_id, mb.cursor"
    " FROM room_members AS mb JOIN rooms AS ro ON ro.name = mb.room"
    " WHERE mb.\"user\" = $1::text AND ro.last_id > 0 AND ro.last_id < $2::bigint"
    " ORDER BY ro.last_id DESC LIMIT $3::bigint),"
    " k AS (SELECT *, row_number() OVER (ORDER BY last_id DESC) AS rn"
    " FROM (SELECT * FROM d UNION ALL SELECT * FROM r) AS u"
    " ORDER BY last_id DESC LIMIT $3::bigint)"
    " SELECT k.is_room, k.peer, k.last_id,"
    " CASE WHEN k.is_room THEN ur.n ELSE ud.n END,"
    " msg.id IS NULL, msg.deleted_at IS NOT NULL,"
    " msg.id, msg.sender, msg.to_user, msg.room, msg.body, msg.cid, msg.created_at, msg.via"
    " FROM k LEFT JOIN messages AS msg ON msg.id = k.last_id"
    " CROSS JOIN LATERAL (SELECT count(*) AS n FROM (SELECT 1 FROM messages"
    " WHERE k.is_room AND k.rn <= $4::bigint AND room = k.peer AND id > k.cursor"
    " AND sender <> $1::text AND deleted_at IS NULL ORDER BY id LIMIT 1000) AS x) AS ur"
    " CROSS JOIN LATERAL (SELECT count(*) AS n FROM (SELECT 1 FROM messages"
    " WHERE NOT k.is_room AND k.rn <= $4::bigint AND to_user = $1::text AND sender = k.peer"
    " AND delivered_at IS NULL AND deleted_at IS NULL ORDER BY id LIMIT 1000) AS x) AS ud"
    " ORDER BY k.last_id DESC";
#define CONV_MSG_COL 6 /* where SQL_CONVERSATIONS's message columns start */

_Static_assert(STORE_UNREAD_MAX == 1000, "the LIMIT in SQL_CONVERSATIONS's unread counts");

/* ---- Memberships ---- */

/* Join and add ensure the row inside their own statement (ROOM_ENSURE); this is for the rest. */
int pg_room_ensure(struct store_pg *pg, const char *room, int64_t now)
{
    struct pg_params p;
    int rc;

    if (!pg_name_ok(room))
        return pg_failf(pg, STORE_ERR_INVALID, "room: a name needed");
    if ((rc = pg_conv_flush(pg)) < 0) /* the noted touches first, as everywhere rooms is written */
        return rc;
    pgp_init(&p);
    pgp_text(&p, room);
    pgp_i64(&p, now);
    return pg_write(pg, SQL_ROOM_ENSURE, &p, NULL, "room");
}

/* Check room and user and put them in p as $1, $2. */
static int room_user(struct store_pg *pg, struct pg_params *p, const char *room, const char *user,
                     const char *what)
{
    if (!pg_name_ok(room) || !pg_name_ok(user))
        return pg_failf(pg, STORE_ERR_INVALID, "%s: room and user needed", what);
    pgp_init(p);
    pgp_text(p, room);
    pgp_text(p, user);
    return 0;
}

int pg_room_join(struct store *st, const char *room, const char *user, int64_t now, bool *joined)
{
    return pg_room_join_via(st, room, user, now, STORE_VIA_JOIN, joined);
}

int pg_room_join_via(struct store *st, const char *room, const char *user, int64_t now,
                     enum store_via via, bool *joined)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    int64_t changed = 0;
    int rc;

    /* The ensure writes rooms: the noted touches first (as SQLite's join does). */
    if ((rc = room_user(pg, &p, room, user, "join")) < 0 || (rc = pg_conv_flush(pg)) < 0)
        return rc;
    pgp_i64(&p, now);
    pgp_text(&p, pg_via_name(via));
    if ((rc = pg_write(pg, SQL_ROOM_JOIN, &p, &changed, "join")) < 0)
        return rc;
    if (joined)
        *joined = changed > 0;
    return 0;
}

int pg_room_leave(struct store *st, const char *room, const char *user)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    int64_t changed = 0;
    int rc;

    if ((rc = pg_write_check(pg)) < 0 || (rc = room_user(pg, &p, room, user, "leave")) < 0)
        return rc;
    if ((rc = pg_write(pg, SQL_ROOM_LEAVE, &p, &changed, "leave")) < 0)
        return rc;
    if (changed == 0)
        return pg_failf(pg, STORE_ERR_NOTFOUND, "leave: %s is not in room %s", user, room);
    return 0;
}

int pg_room_cursor(struct store *st, const char *room, const char *user, int64_t *cursor)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    if ((rc = room_user(pg, &p, room, user, "cursor")) < 0)
        return rc;
    if ((rc = pg_run(pg, SQL_ROOM_CURSOR, &p, &r, "cursor")) < 0)
        return rc;
    if (PQntuples(r) == 0)
        rc = pg_failf(pg, STORE_ERR_NOTFOUND, "%s is not in room %s", user, room);
    else if (cursor)
        *cursor = pg_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

int pg_room_is_member(struct store *st, const char *room, const char *user, bool *member)
{
    int rc = pg_room_cursor(st, room, user, NULL);

    if (rc != 0 && rc != STORE_ERR_NOTFOUND)
        return rc;
    *member = rc == 0;
    return 0;
}

static int name_walk(struct store_pg *pg, const char *sql, const char *name, store_name_fn *cb,
                     void *ctx, const char *what)
{
    struct pg_params p;
    PGresult *r;
    int rc;

    if (!pg_name_ok(name) || !cb)
        return pg_failf(pg, STORE_ERR_INVALID, "%s: a name and a callback needed", what);
    pgp_init(&p);
    pgp_text(&p, name);
    if ((rc = pg_run(pg, sql, &p, &r, what)) < 0)
        return rc;
    rc = pg_each_name(r, cb, ctx);
    PQclear(r);
    return rc;
}

int pg_room_members(struct store *st, const char *room, store_name_fn *cb, void *ctx)
{
    return name_walk(pg_of(st), SQL_ROOM_MEMBERS, room, cb, ctx, "room members");
}

int pg_user_rooms(struct store *st, const char *user, store_name_fn *cb, void *ctx)
{
    return name_walk(pg_of(st), SQL_USER_ROOMS, user, cb, ctx, "user rooms");
}

int pg_users_sharing_room(struct store *st, const char *user, store_name_fn *cb, void *ctx)
{
    return name_walk(pg_of(st), SQL_USERS_SHARING, user, cb, ctx, "users sharing a room");
}

int pg_room_replay(struct store *st, const char *room, const char *user, int limit,
                   store_msg_fn *cb, void *ctx, bool *truncated)
{
    struct store_pg *pg = pg_of(st);
    struct store_msg m;
    struct pg_params p;
    PGresult *r;
    int rc;

    if (limit < 1 || !cb)
        return pg_failf(pg, STORE_ERR_INVALID, "replay: limit >= 1 and a callback needed");
    if ((rc = room_user(pg, &p, room, user, "replay")) < 0)
        return rc;
    pgp_i64(&p, limit);
    if ((rc = pg_run(pg, SQL_ROOM_REPLAY, &p, &r, "replay")) < 0)
        return rc;
    int n = PQntuples(r);
    if (n == 0) {
        PQclear(r);
        return pg_failf(pg, STORE_ERR_NOTFOUND, "%s is not in room %s", user, room);
    }
    if (truncated)
        *truncated = pg_bool(r, 0, 0);
    for (int i = 0; i < n && rc == 0; i++) {
        if (PQgetisnull(r, i, 1)) /* the member's row alone: nothing to replay */
            continue;
        pg_msg_from_row(r, i, 1, &m);
        rc = cb(ctx, &m);
    }
    PQclear(r);
    return rc;
}

/* ---- The backend's room administration ---- */

int pg_room_member_via(struct store *st, const char *room, const char *user, enum store_via *via)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    if ((rc = room_user(pg, &p, room, user, "member via")) < 0)
        return rc;
    if ((rc = pg_run(pg, SQL_ROOM_VIA, &p, &r, "member via")) < 0)
        return rc;
    if (PQntuples(r) == 0)
        rc = pg_failf(pg, STORE_ERR_NOTFOUND, "%s is not in room %s", user, room);
    else
        *via = pg_via_parse(pg_text(r, 0, 0));
    PQclear(r);
    return rc;
}

int pg_room_add(struct store *st, const char *room, const char *user, int64_t now, bool *added)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    /* a new member's cursor is rooms.last_id: the noted touches first */
    if ((rc = room_user(pg, &p, room, user, "room add")) < 0 || (rc = pg_write_check(pg)) < 0 ||
        (rc = pg_conv_flush(pg)) < 0)
        return rc;
    pgp_i64(&p, now);
    if ((rc = pg_run(pg, SQL_ROOM_ADD, &p, &r, "room add")) < 0)
        return rc;
    if (added)
        *added = pg_bool(r, 0, 0);
    PQclear(r);
    return 0;
}

int pg_room_delete(struct store *st, const char *room, int64_t now, store_name_fn *cb, void *ctx)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    /* flushed first: a touch noted earlier would bring the row back */
    if ((rc = pg_write_check(pg)) < 0 || (rc = pg_conv_flush(pg)) < 0)
        return rc;
    if (!pg_name_ok(room))
        return pg_failf(pg, STORE_ERR_INVALID, "room delete: a valid name needed");
    pgp_init(&p);
    pgp_text(&p, room);
    pgp_i64(&p, now);
    if ((rc = pg_run(pg, SQL_ROOM_DELETE, &p, &r, "room delete")) < 0)
        return rc;
    /* The members removed, in name order. As in SQLite, a callback's stop value ends the walk
     * only: the room is deleted either way. */
    for (int i = 1; cb && i < PQntuples(r); i++)
        if (cb(ctx, pg_text(r, i, 1)) != 0)
            break;
    bool found = pg_i64(r, 0, 2) > 0;
    PQclear(r);
    return found ? 0 : pg_failf(pg, STORE_ERR_NOTFOUND, "no room %s", room);
}

int pg_rooms_list(struct store *st, const char *after, int limit, store_room_fn *cb, void *ctx,
                  bool *more)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc, stop = 0;

    if (limit < 1 || !cb)
        return pg_failf(pg, STORE_ERR_INVALID, "rooms: limit >= 1 and a callback needed");
    if ((rc = pg_conv_flush(pg)) < 0)
        return rc;
    pgp_init(&p);
    pgp_text(&p, after ? after : "");
    pgp_i64(&p, (int64_t)limit + 1);
    if ((rc = pg_run(pg, SQL_ROOMS_LIST, &p, &r, "rooms")) < 0)
        return rc;
    int n = PQntuples(r);
    for (int i = 0; i < n && i < limit && !stop; i++) {
        struct store_room_info ri = {
            .name = pg_text(r, i, 0),
            .created_at = pg_i64(r, i, 1),
            .last_id = pg_i64(r, i, 2),
            .members = pg_i64(r, i, 3),
        };
        stop = cb(ctx, &ri);
    }
    PQclear(r);
    if (more)
        *more = n > limit;
    return stop;
}

int pg_room_member_count(struct store *st, const char *room, int64_t *count)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    if (!pg_name_ok(room))
        return pg_failf(pg, STORE_ERR_INVALID, "member count: a valid name needed");
    pgp_init(&p);
    pgp_text(&p, room);
    *count = 0;
    if ((rc = pg_run(pg, SQL_ROOM_MEMBER_COUNT, &p, &r, "member count")) < 0)
        return rc;
    *count = pg_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

/* ---- The conversation list ---- */

/* Row i of SQL_CONVERSATIONS as an entry (borrowed strings). */
static void conv_from_row(const PGresult *r, int i, struct store_conversation *c)
{
    memset(c, 0, sizeof *c);
    c->is_room = pg_bool(r, i, 0);
    c->peer = pg_text(r, i, 1);
    c->unread = pg_i64(r, i, 3);
    c->last_gone = pg_bool(r, i, 4); /* retention deleted it (and maybe all the others) */
    if (c->last_gone)
        c->last.id = pg_i64(r, i, 2);
    else
        pg_msg_from_row(r, i, CONV_MSG_COL, &c->last);
    c->last_deleted = pg_bool(r, i, 5);
}

int pg_user_conversations(struct store *st, const char *user, int64_t before_id, int limit,
                          store_conversation_fn *cb, void *ctx, bool *more)
{
    struct store_pg *pg = pg_of(st);
    struct store_conversation c;
    struct pg_params p;
    PGresult *r;
    int rc, stop = 0;

    if (!pg_name_ok(user) || limit < 1 || limit > 1000 || !cb)
        return pg_failf(pg, STORE_ERR_INVALID, "conversations: user, limit 1-1000, callback");
    if ((rc = pg_conv_flush(pg)) < 0)
        return rc;
    pgp_init(&p);
    pgp_text(&p, user);
    pgp_i64(&p, before_id > 0 ? before_id : INT64_MAX);
    pgp_i64(&p, (int64_t)limit + 1);
    pgp_i64(&p, limit);
    if ((rc = pg_run(pg, SQL_CONVERSATIONS, &p, &r, "conversations")) < 0)
        return rc;
    int n = PQntuples(r);
    if (more)
        *more = n > limit;
    for (int i = 0; i < n && i < limit && !stop; i++) {
        conv_from_row(r, i, &c);
        stop = cb(ctx, &c);
    }
    PQclear(r);
    return stop;
}
