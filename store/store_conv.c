/*
 * store_conv.c -- rooms as things the backend manages (add, remove, delete, list) and the state that
 * makes a user's conversation list cheap: a rooms row and a dm_conversations row per side, both moved
 * by the message insert in the same transaction, so listing never reads all messages. Inside a group
 * commit the insert only notes the move (store_conv_touch); every function here that reads or writes
 * those rows writes the noted moves first (store_conv_flush), and so does the commit.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A failed allocation in HASH_ADD leaves the table as it was: the touch is then written at once. */
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(e) (conv_oom = true)
#include <uthash.h>

#include "store_internal.h"

const struct store_sql store_sql_conv[] = {
    /* ensure (last_id 0, count 0) and touch (?4 new messages, the newest ?3) in one upsert; last_id
     * never moves back. created_at is the oldest time seen: touches noted in a group commit are
     * written after the messages' own times. */
    {STMT_ROOM_TOUCH, false,
     "INSERT INTO rooms (name, created_at, last_id, msg_count) VALUES (?1, ?2, ?3, ?4)"
     " ON CONFLICT (name) DO UPDATE SET created_at = min(created_at, excluded.created_at),"
     " last_id = max(last_id, excluded.last_id), msg_count = msg_count + excluded.msg_count"},
    /* both sides of a direct conversation, each counting the ?4 messages once; a note to self is one
     * row (the second VALUES updates it and adds 0 to its count).
     * may_scan: the plan's only SCAN is "2 CONSTANT ROWS", the VALUES list itself. */
    {STMT_DM_TOUCH, true,
     "INSERT INTO dm_conversations (user, peer, last_id, msg_count)"
     " VALUES (?1, ?2, ?3, ?4), (?2, ?1, ?3, ?4 * (?1 <> ?2))"
     " ON CONFLICT (user, peer) DO UPDATE SET last_id = max(last_id, excluded.last_id),"
     " msg_count = msg_count + excluded.msg_count"},
    {STMT_ROOM_ADD, false,
     "INSERT INTO room_members (room, user, joined_at, cursor, via) VALUES (?1, ?2, ?3,"
     " coalesce((SELECT last_id FROM rooms WHERE name = ?1), 0), 'api')"
     " ON CONFLICT (room, user) DO UPDATE SET via = 'api'"},
    {STMT_ROOM_VIA, false, "SELECT via FROM room_members WHERE room = ?1 AND user = ?2"},
    {STMT_ROOM_DELETE_MEMBERS, false, "DELETE FROM room_members WHERE room = ?1"},
    {STMT_ROOM_DELETE, false, "DELETE FROM rooms WHERE name = ?1"},
    {STMT_ROOM_TOMBSTONE, false,
     "UPDATE messages SET deleted_at = ?2, body = 'null' WHERE room = ?1 AND deleted_at IS NULL"},
    {STMT_ROOMS_LIST, false,
     "SELECT name, created_at, last_id, (SELECT count(*) FROM room_members WHERE room = name)"
     " FROM rooms WHERE name > ?1 ORDER BY name LIMIT ?2"},
    {STMT_ROOM_MEMBER_COUNT, false, "SELECT count(*) FROM room_members WHERE room = ?1"},
    {STMT_CONV_ROOMS, false,
     "SELECT r.name, r.last_id, m.cursor FROM room_members AS m JOIN rooms AS r ON r.name = m.room"
     " WHERE m.user = ?1 AND r.last_id > 0 AND r.last_id < ?2 ORDER BY r.last_id DESC LIMIT ?3"},
    {STMT_CONV_DMS, false,
     "SELECT peer, last_id FROM dm_conversations WHERE user = ?1 AND last_id < ?2"
     " ORDER BY last_id DESC LIMIT ?3"},
    /* counted up to STORE_UNREAD_MAX: one index range each, never a whole history. may_scan: the
     * plans' SCAN is of the bounded subquery's rows, not of a table. */
    {STMT_UNREAD_ROOM, true,
     "SELECT count(*) FROM (SELECT 1 FROM messages WHERE room = ?1 AND id > ?2 AND sender <> ?3"
     " AND deleted_at IS NULL LIMIT 1000)"},
    {STMT_UNREAD_DM, true,
     "SELECT count(*) FROM (SELECT 1 FROM messages WHERE to_user = ?1 AND sender = ?2"
     " AND delivered_at IS NULL AND deleted_at IS NULL LIMIT 1000)"},
    {STMT_MSG_DELETE, false,
     "UPDATE messages SET deleted_at = ?2, body = 'null' WHERE id = ?1 AND deleted_at IS NULL"},
    {STMT_COUNT, false, NULL},
};

_Static_assert(STORE_UNREAD_MAX == 1000, "the LIMIT in the unread statements");

const char *store_via_name(enum store_via via)
{
    return via == STORE_VIA_API ? "api" : via == STORE_VIA_CLAIM ? "claim" : "join";
}

/* ---- Conversation touches: noted during a group commit, written once before its COMMIT ---- */

/*
 * One room, or one pair of users (both sides of their conversation), touched in the open group
 * commit. Writing each message's touch cost two upserts of dm_conversations rows (and their
 * dm_conversations_recent index entries) per direct message, about a third of an insert's time;
 * a group commit of thousands of messages among few conversations writes each row once instead.
 */
struct conv_pending {
    UT_hash_handle hh;
    const char *a, *b; /* the room (b NULL), or the two users; point into key */
    int64_t created_at; /* the oldest message's time (a room row created by the flush) */
    int64_t last_id;    /* the newest message */
    int64_t count;      /* messages */
    unsigned keylen;
    char key[];         /* "R" room, or "D" user '\0' user, the smaller name first */
};

static bool conv_oom; /* set by uthash_nonfatal_oom */

/* Write one room's or pair's touch now. */
static int touch_write(struct store *st, const char *a, const char *b, int64_t created_at,
                       int64_t last_id, int64_t count)
{
    sqlite3_stmt *s = st->stmt[b ? STMT_DM_TOUCH : STMT_ROOM_TOUCH];
    const char *what = b ? "conversation last message" : "room last message";
    if (store_bind_text(s, 1, a) || (b ? store_bind_text(s, 2, b) : sqlite3_bind_int64(s, 2, created_at)) ||
        sqlite3_bind_int64(s, 3, last_id) || sqlite3_bind_int64(s, 4, count))
        return store_bind_fail(st, s, what);
    return store_exec_stmt(st, s, what);
}

int store_room_ensure(struct store *st, const char *room, int64_t now)
{
    int rc = store_conv_flush(st);
    return rc < 0 ? rc : touch_write(st, room, NULL, now, 0, 0);
}

/* Note m's touch in st->conv_pending; -1 when out of memory (nothing noted). */
static int touch_note(struct store *st, const struct store_msg *m, int64_t id)
{
    const char *a = m->room ? m->room : m->sender, *b = m->room ? NULL : m->to_user;
    if (b && strcmp(a, b) > 0) {
        const char *t = a;
        a = b;
        b = t;
    }
    size_t la = strlen(a), lb = b ? strlen(b) : 0, len = 1 + la + (b ? 1 + lb : 0);
    char stackkey[256], *key = len <= sizeof(stackkey) ? stackkey : malloc(len);
    if (!key)
        return -1;
    key[0] = b ? 'D' : 'R';
    memcpy(key + 1, a, la);
    if (b) {
        key[1 + la] = '\0';
        memcpy(key + 2 + la, b, lb);
    }
    struct conv_pending *e;
    HASH_FIND(hh, st->conv_pending, key, (unsigned)len, e);
    if (key != stackkey)
        free(key);
    if (e) {
        if (id > e->last_id)
            e->last_id = id;
        if (m->created_at < e->created_at)
            e->created_at = m->created_at;
        e->count++;
        return 0;
    }
    if (!(e = malloc(sizeof(*e) + len + 1)))
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
    e->created_at = m->created_at;
    e->last_id = id;
    e->count = 1;
    conv_oom = false;
    HASH_ADD(hh, st->conv_pending, key[0], e->keylen, e);
    if (conv_oom) {
        free(e);
        return -1;
    }
    return 0;
}

int store_conv_touch(struct store *st, const struct store_msg *m, int64_t id)
{
    /* In a savepoint a touch is written at once, so that ROLLBACK TO undoes it with its message. */
    if (st->txn && st->savepoints == 0 && touch_note(st, m, id) == 0)
        return 0;
    if (m->room)
        return touch_write(st, m->room, NULL, m->created_at, id, 1);
    return touch_write(st, m->sender, m->to_user, 0, id, 1);
}

int store_conv_flush(struct store *st)
{
    struct conv_pending *e, *tmp;
    if (!st->conv_pending)
        return 0;
    /* An error made SQLite roll the transaction back: its messages are gone, and so are these. */
    if (sqlite3_get_autocommit(st->db)) {
        store_conv_drop(st);
        return 0;
    }
    HASH_ITER(hh, st->conv_pending, e, tmp) {
        int rc = touch_write(st, e->a, e->b, e->created_at, e->last_id, e->count);
        if (rc < 0)
            return rc;
        HASH_DEL(st->conv_pending, e);
        free(e);
    }
    return 0;
}

void store_conv_drop(struct store *st)
{
    struct conv_pending *e, *tmp;
    HASH_ITER(hh, st->conv_pending, e, tmp) {
        HASH_DEL(st->conv_pending, e);
        free(e);
    }
}

static int bind2(struct store *st, sqlite3_stmt *s, const char *a, const char *b, const char *what)
{
    if (!store_name_ok(a) || (b && !store_name_ok(b)))
        return store_failf(st, STORE_ERR_INVALID, "%s: a valid name needed", what);
    if (store_bind_text(s, 1, a) || (b && store_bind_text(s, 2, b)))
        return store_bind_fail(st, s, what);
    return 0;
}

int sq_room_member_via(struct store *st, const char *room, const char *user, enum store_via *via)
{
    sqlite3_stmt *s = st->stmt[STMT_ROOM_VIA];
    int rc;
    if ((rc = bind2(st, s, room, user, "member via")) < 0)
        return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *v = store_col_text(s, 0);
        *via = v && !strcmp(v, "api") ? STORE_VIA_API
               : v && !strcmp(v, "claim") ? STORE_VIA_CLAIM
                                          : STORE_VIA_JOIN;
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = store_failf(st, STORE_ERR_NOTFOUND, "%s is not in room %s", user, room);
    } else {
        rc = store_fail(st, rc, "member via");
    }
    store_stmt_done(s);
    return rc;
}

int sq_room_add(struct store *st, const char *room, const char *user, int64_t now, bool *added)
{
    enum store_via via;
    int rc = sq_room_member_via(st, room, user, &via);
    if (rc != 0 && rc != STORE_ERR_NOTFOUND)
        return rc;
    *added = rc == STORE_ERR_NOTFOUND;
    if ((rc = store_write_check(st)) < 0 || (rc = store_room_ensure(st, room, now)) < 0)
        return rc;
    sqlite3_stmt *s = st->stmt[STMT_ROOM_ADD];
    if ((rc = bind2(st, s, room, user, "room add")) < 0)
        return rc;
    sqlite3_bind_int64(s, 3, now);
    return store_exec_stmt(st, s, "room add");
}

int sq_room_delete(struct store *st, const char *room, int64_t now, store_name_fn *cb, void *ctx)
{
    int rc;
    /* flushed first: a touch noted earlier would bring the row back */
    if ((rc = store_write_check(st)) < 0 || (rc = store_conv_flush(st)) < 0)
        return rc;
    if (cb && (rc = sq_room_members(st, room, cb, ctx)) < 0)
        return rc;
    sqlite3_stmt *s = st->stmt[STMT_ROOM_DELETE_MEMBERS];
    if ((rc = bind2(st, s, room, NULL, "room delete")) < 0 ||
        (rc = store_exec_stmt(st, s, "room delete")) < 0)
        return rc;
    s = st->stmt[STMT_ROOM_TOMBSTONE];
    if ((rc = bind2(st, s, room, NULL, "room delete")) < 0)
        return rc;
    sqlite3_bind_int64(s, 2, now);
    if ((rc = store_exec_stmt(st, s, "room delete")) < 0)
        return rc;
    s = st->stmt[STMT_ROOM_DELETE];
    if ((rc = bind2(st, s, room, NULL, "room delete")) < 0 ||
        (rc = store_exec_stmt(st, s, "room delete")) < 0)
        return rc;
    return sqlite3_changes(st->db) ? 0
                                   : store_failf(st, STORE_ERR_NOTFOUND, "no room %s", room);
}

int sq_rooms_list(struct store *st, const char *after, int limit, store_room_fn *cb, void *ctx,
                     bool *more)
{
    sqlite3_stmt *s = st->stmt[STMT_ROOMS_LIST];
    int rc, n = 0, stop = 0;
    if (limit < 1 || !cb)
        return store_failf(st, STORE_ERR_INVALID, "rooms: limit >= 1 and a callback needed");
    if ((rc = store_conv_flush(st)) < 0)
        return rc;
    if (store_bind_text(s, 1, after ? after : "") || sqlite3_bind_int(s, 2, limit + 1))
        return store_bind_fail(st, s, "rooms");
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n++ >= limit)
            continue;
        struct store_room_info r = {
            .name = store_col_text(s, 0),
            .created_at = sqlite3_column_int64(s, 1),
            .last_id = sqlite3_column_int64(s, 2),
            .members = sqlite3_column_int64(s, 3),
        };
        if ((stop = cb(ctx, &r)) != 0)
            break;
    }
    store_stmt_done(s);
    if (more)
        *more = n > limit;
    if (stop)
        return stop;
    return rc == SQLITE_DONE ? 0 : store_fail(st, rc, "rooms");
}

int sq_room_member_count(struct store *st, const char *room, int64_t *count)
{
    sqlite3_stmt *s = st->stmt[STMT_ROOM_MEMBER_COUNT];
    int rc;
    if ((rc = bind2(st, s, room, NULL, "member count")) < 0)
        return rc;
    rc = sqlite3_step(s);
    *count = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    store_stmt_done(s);
    return rc == SQLITE_ROW ? 0 : store_fail(st, rc, "member count");
}

/* A page entry before its message is read: names copied, the statements are reused below. */
struct conv_key {
    bool is_room;
    char *peer;
    int64_t last_id;
    int64_t cursor;
};

static int collect(struct store *st, sqlite3_stmt *s, bool is_room, struct conv_key *out, int max,
                   int *n, const char *what)
{
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW && *n < max) {
        struct conv_key *k = &out[(*n)++];
        k->is_room = is_room;
        k->peer = strdup(store_col_text(s, 0) ? store_col_text(s, 0) : "");
        k->last_id = sqlite3_column_int64(s, 1);
        k->cursor = is_room ? sqlite3_column_int64(s, 2) : 0;
        if (!k->peer) {
            store_stmt_done(s);
            return store_failf(st, STORE_ERR_NOMEM, "%s: out of memory", what);
        }
    }
    store_stmt_done(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : store_fail(st, rc, what);
}

static int by_last_id_desc(const void *a, const void *b)
{
    int64_t x = ((const struct conv_key *)a)->last_id, y = ((const struct conv_key *)b)->last_id;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int unread(struct store *st, const char *user, const struct conv_key *k, int64_t *out)
{
    sqlite3_stmt *s = st->stmt[k->is_room ? STMT_UNREAD_ROOM : STMT_UNREAD_DM];
    int bad = k->is_room ? store_bind_text(s, 1, k->peer) || sqlite3_bind_int64(s, 2, k->cursor) ||
                               store_bind_text(s, 3, user)
                         : store_bind_text(s, 1, user) || store_bind_text(s, 2, k->peer);
    if (bad)
        return store_bind_fail(st, s, "unread");
    int rc = sqlite3_step(s);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    store_stmt_done(s);
    return rc == SQLITE_ROW ? 0 : store_fail(st, rc, "unread");
}

int sq_user_conversations(struct store *st, const char *user, int64_t before_id, int limit,
                             store_conversation_fn *cb, void *ctx, bool *more)
{
    if (!store_name_ok(user) || limit < 1 || limit > 1000 || !cb)
        return store_failf(st, STORE_ERR_INVALID, "conversations: user, limit 1-1000, callback");
    int rc = store_conv_flush(st);
    if (rc < 0)
        return rc;
    int64_t before = before_id > 0 ? before_id : INT64_MAX;
    /* limit + 1 of each kind: the newest limit + 1 of the merge are among them */
    int max = 2 * (limit + 1), n = 0;
    struct conv_key *keys = calloc((size_t)max, sizeof(*keys));
    if (!keys)
        return store_failf(st, STORE_ERR_NOMEM, "conversations: out of memory");
    sqlite3_stmt *s = st->stmt[STMT_CONV_DMS];
    if (store_bind_text(s, 1, user) || sqlite3_bind_int64(s, 2, before) ||
        sqlite3_bind_int(s, 3, limit + 1)) {
        rc = store_bind_fail(st, s, "conversations");
        goto done;
    }
    if ((rc = collect(st, s, false, keys, max, &n, "conversations")) < 0)
        goto done;
    s = st->stmt[STMT_CONV_ROOMS];
    if (store_bind_text(s, 1, user) || sqlite3_bind_int64(s, 2, before) ||
        sqlite3_bind_int(s, 3, limit + 1)) {
        rc = store_bind_fail(st, s, "conversations");
        goto done;
    }
    if ((rc = collect(st, s, true, keys, max, &n, "conversations")) < 0)
        goto done;
    qsort(keys, (size_t)n, sizeof(*keys), by_last_id_desc);
    if (more)
        *more = n > limit;
    for (int i = 0; i < n && i < limit; i++) {
        struct store_conversation c = {.is_room = keys[i].is_room, .peer = keys[i].peer};
        if ((rc = unread(st, user, &keys[i], &c.unread)) < 0)
            goto done;
        struct store_msg_info info;
        rc = sq_msg_get(st, keys[i].last_id, &info);
        if (rc == STORE_ERR_NOTFOUND) { /* retention deleted it (and maybe all the others) */
            memset(&info, 0, sizeof(info));
            info.msg.id = keys[i].last_id;
            c.last_gone = true;
        } else if (rc < 0) {
            goto done;
        }
        c.last = info.msg;
        c.last_deleted = info.deleted;
        int stop = cb(ctx, &c);
        store_msg_info_release(&info);
        if (stop) {
            rc = stop;
            goto done;
        }
    }
    rc = 0;
done:
    for (int i = 0; i < n; i++)
        free(keys[i].peer);
    free(keys);
    return rc;
}

int sq_msg_delete(struct store *st, int64_t id, int64_t now)
{
    sqlite3_stmt *s = st->stmt[STMT_MSG_DELETE];
    int rc;
    if ((rc = store_write_check(st)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, now);
    if ((rc = store_exec_stmt(st, s, "message delete")) < 0)
        return rc;
    return sqlite3_changes(st->db)
               ? 0
               : store_failf(st, STORE_ERR_NOTFOUND, "message %" PRId64 ": none, or deleted", id);
}
