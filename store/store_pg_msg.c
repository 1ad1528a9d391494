/*
 * store_pg_msg.c -- the PostgreSQL backend's messages: idempotent insert with the conversation
 * list's state, acks, pending direct messages, history paging, one message with its delivery
 * state, tombstones. store_msg.c and store_conv.c are the SQLite twins.
 *
 * Every call is a network round trip, so each function here is one statement where it can be.
 * Outside a group commit (and inside a savepoint) the insert moves the rooms / dm_conversations
 * rows in the same statement (data-modifying CTEs), which also makes it atomic without a
 * transaction of its own. Inside a group commit it inserts only the message and notes the move in
 * memory, merged per room / pair of users; pg_conv_flush writes them all in one statement (as
 * store_conv.c does for SQLite). pg_conv_touch is the move on its own, for a message stored some
 * other way.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A failed allocation in HASH_ADD leaves the table as it was: the touch is then written at once. */
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(e) (conv_oom = true)
#include <uthash.h>

#include "store_pg_internal.h"

/*
 * The conversation list's upserts, shared by the insert, pg_conv_touch and pg_conv_flush. A room
 * row counts the new messages and its last_id never moves back; created_at is the oldest time seen
 * (as SQLite's touch, which may be written after later messages). A direct message moves both sides' rows; a
 * note to self is one row. The two rows are written in "user" order, so two nodes touching the same
 * pair in opposite directions lock them in the same order (no deadlock).
 */
#define ROOM_TOUCH_CONFLICT                                                                   \
    " ON CONFLICT (name) DO UPDATE SET created_at = LEAST(rooms.created_at, excluded.created_at)," \
    " last_id = GREATEST(rooms.last_id, excluded.last_id),"                                   \
    " msg_count = rooms.msg_count + excluded.msg_count"
#define DM_TOUCH_CONFLICT                                                                     \
    " ON CONFLICT (\"user\", peer) DO UPDATE"                                                 \
    " SET last_id = GREATEST(dm_conversations.last_id, excluded.last_id),"                    \
    " msg_count = dm_conversations.msg_count + excluded.msg_count"
/* The sides of the pair ($1 sender, $2 recipient) as rows (u, p); the second (k 1) not for a note
 * to self. */
#define DM_SIDES                                                                   \
    "(VALUES ($1::text, $2::text, 0), ($2::text, $1::text, 1)) AS v (u, p, k)"     \
    " WHERE $2::text IS NOT NULL AND (v.k = 0 OR $1::text <> $2::text)"

/*
 * $1 sender, $2 to_user, $3 room, $4 body, $5 cid, $6 created_at, $7 via. A repeated (sender, cid)
 * inserts nothing and returns no row; then neither conversation row moves either. The NOT EXISTS
 * spares the sequence: ON CONFLICT alone takes an id before it finds the conflict, so a resent
 * message would leave a gap in the ids that SQLite does not (ON CONFLICT still catches a duplicate
 * that another node's open transaction holds).
 */
static const char SQL_MSG_INSERT[] =
    "WITH m AS (INSERT INTO messages (sender, to_user, room, body, cid, created_at, via)"
    " SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::bigint, $7::text"
    " WHERE NOT EXISTS (SELECT 1 FROM messages WHERE sender = $1::text AND cid = $5::text)"
    " ON CONFLICT (sender, cid) DO NOTHING RETURNING id),"
    " r AS (INSERT INTO rooms (name, created_at, last_id, msg_count)"
    " SELECT $3::text, $6::bigint, m.id, 1 FROM m WHERE $3::text IS NOT NULL" ROOM_TOUCH_CONFLICT
    "), d AS (INSERT INTO dm_conversations (\"user\", peer, last_id, msg_count)"
    " SELECT v.u, v.p, m.id, 1 FROM m, " DM_SIDES " ORDER BY v.u" DM_TOUCH_CONFLICT ")"
    " SELECT id FROM m";
/* SQL_MSG_INSERT without the conversation rows: inside a group commit they are noted in memory. */
static const char SQL_MSG_INSERT_ONLY[] =
    "INSERT INTO messages (sender, to_user, room, body, cid, created_at, via)"
    " SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::bigint, $7::text"
    " WHERE NOT EXISTS (SELECT 1 FROM messages WHERE sender = $1::text AND cid = $5::text)"
    " ON CONFLICT (sender, cid) DO NOTHING RETURNING id";
/*
 * The noted touches in one statement: $1-$4 the rooms (name, oldest created_at, last id, count),
 * $5-$8 the dm_conversations rows (user, peer, last id, count; both sides of a pair). Each kind is
 * written sorted by its key, in the collation SQL_MSG_INSERT's "ORDER BY v.u" uses, so two nodes
 * (or a flush and a single insert) touching overlapping rows lock them in the same order and cannot
 * deadlock. Every key comes once (merged in memory): ON CONFLICT DO UPDATE allows no repeat.
 */
static const char SQL_CONV_FLUSH[] =
    "WITH r AS (INSERT INTO rooms (name, created_at, last_id, msg_count)"
    " SELECT n, c, l, k FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])"
    " AS t (n, c, l, k) ORDER BY n" ROOM_TOUCH_CONFLICT ")"
    " INSERT INTO dm_conversations (\"user\", peer, last_id, msg_count)"
    " SELECT u, p, l, k FROM unnest($5::text[], $6::text[], $7::bigint[], $8::bigint[])"
    " AS t (u, p, l, k) ORDER BY u, p" DM_TOUCH_CONFLICT;
static const char SQL_MSG_BY_CID[] =
    "SELECT id, created_at FROM messages WHERE sender = $1 AND cid = $2";
/* pg_conv_touch's: $1 room, $2 created_at, $3 id / $1 sender, $2 to_user, $3 id */
static const char SQL_ROOM_TOUCH[] =
    "INSERT INTO rooms (name, created_at, last_id, msg_count)"
    " VALUES ($1::text, $2::bigint, $3::bigint, 1)" ROOM_TOUCH_CONFLICT;
static const char SQL_DM_TOUCH[] =
    "INSERT INTO dm_conversations (\"user\", peer, last_id, msg_count)"
    " SELECT v.u, v.p, $3::bigint, 1 FROM " DM_SIDES " ORDER BY v.u" DM_TOUCH_CONFLICT;

/*
 * An ack in one round trip: $1 message, $2 user, $3 now, $4 session (NULL: unknown). d delivers a
 * direct message to user ("IS NULL" keeps the first ack's time and session); c moves the cursor of
 * a member of the message's room (no row for a direct message: its room is NULL), written only when
 * it moves. The last columns say what the message was, from the snapshot before the statement.
 */
static const char SQL_MSG_ACK[] =
    "WITH d AS (UPDATE messages SET delivered_at = $3::bigint, delivered_by = $4::bigint"
    " WHERE id = $1::bigint AND to_user = $2::text AND delivered_at IS NULL RETURNING 1),"
    " c AS (UPDATE room_members SET cursor = $1::bigint"
    " WHERE room = (SELECT room FROM messages WHERE id = $1::bigint) AND \"user\" = $2::text"
    " AND cursor < $1::bigint RETURNING 1)"
    " SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM c),"
    " (SELECT to_user = $2::text FROM messages WHERE id = $1::bigint),"
    " EXISTS (SELECT 1 FROM room_members WHERE \"user\" = $2::text"
    " AND room = (SELECT room FROM messages WHERE id = $1::bigint))";
static const char SQL_MSG_PENDING[] =
    "SELECT " PG_MSG_COLS " FROM messages"
    " WHERE to_user = $1 AND delivered_at IS NULL AND id > $2 AND deleted_at IS NULL"
    " ORDER BY id LIMIT $3";
/* Two index ranges (one per direction) merged newest first; "$1 <> $2" keeps notes to self from
 * showing twice. $4 is limit + 1: the extra row only tells that more exist. Each range has its own
 * LIMIT: without it PostgreSQL reads both directions whole and sorts them. */
#define HISTORY_SIDE(to, from)                                                           \
    "(SELECT " PG_MSG_COLS " FROM messages WHERE to_user = " to " AND sender = " from    \
    " AND id < $3::bigint AND deleted_at IS NULL ORDER BY id DESC LIMIT $4::bigint)"
static const char SQL_MSG_HISTORY_DIRECT[] =
    HISTORY_SIDE("$2::text", "$1::text")
    " UNION ALL " HISTORY_SIDE("$1::text", "$2::text AND $1::text <> $2::text")
    " ORDER BY 1 DESC LIMIT $4::bigint";
static const char SQL_MSG_HISTORY_ROOM[] =
    "SELECT " PG_MSG_COLS " FROM messages WHERE room = $1 AND id < $2 AND deleted_at IS NULL"
    " ORDER BY id DESC LIMIT $3";
static const char SQL_MSG_GET[] =
    "SELECT " PG_MSG_COLS ", to_user IS NOT NULL, delivered_at, delivered_by, deleted_at"
    " FROM messages WHERE id = $1";
static const char SQL_MSG_DELETE[] =
    "UPDATE messages SET deleted_at = $2, body = 'null' WHERE id = $1 AND deleted_at IS NULL";

/* ---- Conversation touches: noted during a group commit, written once before its COMMIT ---- */

/*
 * One room, or one pair of users (both sides of their conversation), touched in the open group
 * commit. Written per message, each direct message upserted both dm_conversations rows: never a HOT
 * update (last_id is indexed by dm_conversations_recent), so every message left two dead row
 * versions behind that the next upserts of the pair walked past, and that insert was most of
 * PostgreSQL's time per message. A group commit of thousands of messages among few conversations
 * writes each row once instead.
 */
struct pg_conv {
    UT_hash_handle hh;
    const char *a, *b;  /* the room (b NULL), or the two users; point into key */
    int64_t created_at; /* the oldest message's time (a room row created by the flush) */
    int64_t last_id;    /* the newest message */
    int64_t count;      /* messages */
    unsigned keylen;
    char key[];         /* "R" room, or "D" user '\0' user, the smaller name first */
};

static bool conv_oom; /* set by uthash_nonfatal_oom */

/* Note m's touch (stored as id) in pg->conv_pending; -1 when out of memory (nothing noted). */
static int conv_note(struct store_pg *pg, const struct store_msg *m, int64_t id)
{
    const char *a = m->room ? m->room : m->sender, *b = m->room ? NULL : m->to_user;
    if (b && strcmp(a, b) > 0) {
        const char *t = a;
        a = b;
        b = t;
    }
    size_t la = strlen(a), lb = b ? strlen(b) : 0, len = 1 + la + (b ? 1 + lb : 0);
    struct pg_conv *e = malloc(sizeof(*e) + len + 1);
    if (!e)
        return -1;
    e->keylen = (unsigned)len;
    e->key[0] = b ? 'D' : 'R';
    memcpy(e->key + 1, a, la + 1);
    e->a = e->key + 1;
    e->b = NULL;
    if (b) {
        memcpy(e->key + 2 + la, b, lb + 1);
        e->b = e->key + 2 + la;
    }
    struct pg_conv *old;
    HASH_FIND(hh, pg->conv_pending, e->key, e->keylen, old);
    if (old) {
        free(e);
        if (id > old->last_id)
            old->last_id = id;
        if (m->created_at < old->created_at)
            old->created_at = m->created_at;
        old->count++;
        return 0;
    }
    e->created_at = m->created_at;
    e->last_id = id;
    e->count = 1;
    conv_oom = false;
    HASH_ADD(hh, pg->conv_pending, key[0], e->keylen, e);
    if (conv_oom) {
        free(e);
        return -1;
    }
    return 0;
}

void pg_conv_drop(struct store_pg *pg)
{
    struct pg_conv *e, *tmp;
    HASH_ITER(hh, pg->conv_pending, e, tmp) {
        HASH_DEL(pg->conv_pending, e);
        free(e);
    }
}

int pg_conv_flush(struct store_pg *pg)
{
    struct pg_array arr[8]; /* SQL_CONV_FLUSH's parameters, in order */
    struct pg_params p;
    struct pg_conv *e, *tmp;
    int rc = 0;

    if (!pg->conv_pending)
        return 0;
    for (int i = 0; i < 8; i++)
        pga_init(&arr[i]);
    HASH_ITER(hh, pg->conv_pending, e, tmp) {
        if (!e->b) {
            pga_text(&arr[0], e->a);
            pga_i64(&arr[1], e->created_at);
            pga_i64(&arr[2], e->last_id);
            pga_i64(&arr[3], e->count);
            continue;
        }
        /* both sides; a note to self is one row */
        for (int side = 0; side < (strcmp(e->a, e->b) ? 2 : 1); side++) {
            pga_text(&arr[4], side ? e->b : e->a);
            pga_text(&arr[5], side ? e->a : e->b);
            pga_i64(&arr[6], e->last_id);
            pga_i64(&arr[7], e->count);
        }
    }
    pgp_init(&p);
    for (int i = 0; i < 8; i++) {
        const char *v = pga_done(&arr[i]);
        if (!v)
            rc = pg_failf(pg, STORE_ERR_NOMEM, "conversation touches: out of memory");
        pgp_text(&p, v);
    }
    if (rc == 0)
        rc = pg_write(pg, SQL_CONV_FLUSH, &p, NULL, "conversation touches");
    for (int i = 0; i < 8; i++)
        pga_free(&arr[i]);
    if (rc == 0)
        pg_conv_drop(pg);
    return rc;
}

/* ---- Insert ---- */

/* The first message stored with (sender, cid). */
static int find_by_cid(struct store_pg *pg, const char *sender, const char *cid,
                       struct store_receipt *out)
{
    struct pg_params p;
    PGresult *r;
    int rc;

    pgp_init(&p);
    pgp_text(&p, sender);
    pgp_text(&p, cid);
    if ((rc = pg_run(pg, SQL_MSG_BY_CID, &p, &r, "message by cid")) < 0)
        return rc;
    if (PQntuples(r) == 0) {
        rc = pg_failf(pg, STORE_ERR_IO, "message insert: conflict on (sender, cid) but no row");
    } else {
        out->id = pg_i64(r, 0, 0);
        out->created_at = pg_i64(r, 0, 1);
        out->duplicate = true;
    }
    PQclear(r);
    return rc;
}

int pg_msg_insert(struct store *st, const struct store_msg *m, struct store_receipt *out)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    if (!m || !out || !pg_name_ok(m->sender) || !m->body ||
        (pg_name_ok(m->to_user) == pg_name_ok(m->room)) || (m->to_user && !*m->to_user) ||
        (m->room && !*m->room))
        return pg_failf(pg, STORE_ERR_INVALID,
                        "message insert: sender, body and exactly one of to_user/room needed");
    if ((rc = pg_write_check(pg)) < 0)
        return rc;
    /* In a savepoint the touch is written with its message, so that ROLLBACK TO undoes both. */
    bool note = pg->txn && pg->savepoints == 0;
    pgp_init(&p);
    pgp_text(&p, m->sender);
    pgp_text(&p, m->to_user);
    pgp_text(&p, m->room);
    pgp_text(&p, m->body);
    pgp_text(&p, m->cid);
    pgp_i64(&p, m->created_at);
    pgp_text(&p, m->via);
    if ((rc = pg_run(pg, note ? SQL_MSG_INSERT_ONLY : SQL_MSG_INSERT, &p, &r, "message insert")) <
        0)
        return rc;
    bool stored = PQntuples(r) > 0;
    if (stored)
        out->id = pg_i64(r, 0, 0);
    PQclear(r);
    if (!stored) /* DO NOTHING: this cid was used before (and nothing moves) */
        return find_by_cid(pg, m->sender, m->cid, out);
    if (note && conv_note(pg, m, out->id) < 0 && (rc = pg_conv_touch(pg, m, out->id)) < 0)
        return rc; /* no memory to note it: written at once instead */
    out->created_at = m->created_at;
    out->duplicate = false;
    return 0;
}

int pg_conv_touch(struct store_pg *pg, const struct store_msg *m, int64_t id)
{
    struct pg_params p;

    pgp_init(&p);
    if (m->room) {
        pgp_text(&p, m->room);
        pgp_i64(&p, m->created_at);
        pgp_i64(&p, id);
        return pg_write(pg, SQL_ROOM_TOUCH, &p, NULL, "room last message");
    }
    pgp_text(&p, m->sender);
    pgp_text(&p, m->to_user);
    pgp_i64(&p, id);
    return pg_write(pg, SQL_DM_TOUCH, &p, NULL, "conversation last message");
}

/* ---- Acks ---- */

int pg_msg_ack(struct store *st, const char *user, int64_t msg_id, int64_t session_id,
               int64_t now)
{
    bool first;
    return pg_msg_ack_first(st, user, msg_id, session_id, now, &first);
}

int pg_msg_ack_first(struct store *st, const char *user, int64_t msg_id, int64_t session_id,
                     int64_t now, bool *first)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    *first = false;
    if (!pg_name_ok(user))
        return pg_failf(pg, STORE_ERR_INVALID, "ack: no user");
    if ((rc = pg_write_check(pg)) < 0)
        return rc;
    pgp_init(&p);
    pgp_i64(&p, msg_id);
    pgp_text(&p, user);
    pgp_i64(&p, now);
    if (session_id > 0)
        pgp_i64(&p, session_id);
    else
        pgp_text(&p, NULL);
    if ((rc = pg_run(pg, SQL_MSG_ACK, &p, &r, "ack")) < 0)
        return rc;
    bool delivered = pg_i64(r, 0, 0) > 0;
    /* a direct message to user acked before is fine (the first ack stays), as is a room message
     * of a room user is in (the cursor moved, or was already past it); anything else is not */
    bool mine = pg_bool(r, 0, 2) || pg_bool(r, 0, 3);
    PQclear(r);
    if (delivered) {
        *first = true;
        return 0;
    }
    if (mine)
        return 0;
    return pg_failf(pg, STORE_ERR_NOTFOUND, "ack: message %" PRId64 " is not for %s", msg_id,
                    user);
}

/* ---- Reads ---- */

/* Run a message query and hand its first emit rows to cb; *rows (may be NULL) = rows returned. */
static int msg_walk(struct store_pg *pg, const char *sql, const struct pg_params *p, int emit,
                    store_msg_fn *cb, void *ctx, int *rows, const char *what)
{
    PGresult *r;
    int rc;

    if ((rc = pg_run(pg, sql, p, &r, what)) < 0)
        return rc;
    if (rows)
        *rows = PQntuples(r);
    rc = pg_each_msg(r, emit, cb, ctx);
    PQclear(r);
    return rc;
}

int pg_pending_direct(struct store *st, const char *user, int64_t after_id, int limit,
                      store_msg_fn *cb, void *ctx)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;

    if (!pg_name_ok(user) || limit < 1 || !cb)
        return pg_failf(pg, STORE_ERR_INVALID, "pending: user, limit >= 1 and a callback needed");
    pgp_init(&p);
    pgp_text(&p, user);
    pgp_i64(&p, after_id);
    pgp_i64(&p, limit);
    return msg_walk(pg, SQL_MSG_PENDING, &p, limit, cb, ctx, NULL, "pending");
}

/* Shared tail of both history walks: limit + 1 rows were asked for, the extra one means "more". */
static int history_walk(struct store_pg *pg, const char *sql, const struct pg_params *p, int limit,
                        store_msg_fn *cb, void *ctx, bool *more, const char *what)
{
    int rows = 0, rc = msg_walk(pg, sql, p, limit, cb, ctx, &rows, what);

    if (more)
        *more = rc == 0 && rows > limit;
    return rc;
}

int pg_history_direct(struct store *st, const char *user_a, const char *user_b, int64_t before_id,
                      int limit, store_msg_fn *cb, void *ctx, bool *more)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;

    if (!pg_name_ok(user_a) || !pg_name_ok(user_b) || limit < 1 || !cb)
        return pg_failf(pg, STORE_ERR_INVALID,
                        "history: two users, limit >= 1, a callback needed");
    pgp_init(&p);
    pgp_text(&p, user_a);
    pgp_text(&p, user_b);
    pgp_i64(&p, before_id > 0 ? before_id : INT64_MAX);
    pgp_i64(&p, (int64_t)limit + 1);
    return history_walk(pg, SQL_MSG_HISTORY_DIRECT, &p, limit, cb, ctx, more, "history");
}

int pg_history_room(struct store *st, const char *room, int64_t before_id, int limit,
                    store_msg_fn *cb, void *ctx, bool *more)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;

    if (!pg_name_ok(room) || limit < 1 || !cb)
        return pg_failf(pg, STORE_ERR_INVALID,
                        "room history: room, limit >= 1, a callback needed");
    pgp_init(&p);
    pgp_text(&p, room);
    pgp_i64(&p, before_id > 0 ? before_id : INT64_MAX);
    pgp_i64(&p, (int64_t)limit + 1);
    return history_walk(pg, SQL_MSG_HISTORY_ROOM, &p, limit, cb, ctx, more, "room history");
}

int pg_msg_get(struct store *st, int64_t id, struct store_msg_info *out)
{
    struct store_pg *pg = pg_of(st);
    struct store_msg m;
    struct pg_params p;
    PGresult *r;
    int rc;

    memset(out, 0, sizeof *out);
    pgp_init(&p);
    pgp_i64(&p, id);
    if ((rc = pg_run(pg, SQL_MSG_GET, &p, &r, "message get")) < 0)
        return rc;
    if (PQntuples(r) == 0) {
        rc = pg_failf(pg, STORE_ERR_NOTFOUND, "no message %" PRId64, id);
    } else {
        pg_msg_from_row(r, 0, 0, &m);
        out->direct = pg_bool(r, 0, PG_MSG_NCOLS);
        out->delivered = !PQgetisnull(r, 0, PG_MSG_NCOLS + 1);
        out->delivered_at = pg_i64(r, 0, PG_MSG_NCOLS + 1);
        out->delivered_by = pg_i64(r, 0, PG_MSG_NCOLS + 2);
        out->deleted = !PQgetisnull(r, 0, PG_MSG_NCOLS + 3);
        if (store_msg_copy(out, &m) < 0) {
            memset(out, 0, sizeof *out); /* its strings pointed into r */
            rc = pg_failf(pg, STORE_ERR_NOMEM, "message get: no memory");
        }
    }
    PQclear(r);
    return rc;
}

int pg_msg_delete(struct store *st, int64_t id, int64_t now)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    int64_t changed = 0;
    int rc;

    pgp_init(&p);
    pgp_i64(&p, id);
    pgp_i64(&p, now);
    if ((rc = pg_write(pg, SQL_MSG_DELETE, &p, &changed, "message delete")) < 0)
        return rc;
    return changed ? 0
                   : pg_failf(pg, STORE_ERR_NOTFOUND, "message %" PRId64 ": none, or deleted", id);
}
