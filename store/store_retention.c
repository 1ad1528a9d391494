/*
 * store_retention.c -- deleting old messages ([store] retention_age, retention_count) a few hundred
 * rows at a time, and erasing a user (the API's DELETE /api/v1/users/USER).
 *
 * Message ids must never be reused (a client's ack or a member's cursor must never name another
 * message later). messages.id is a plain rowid, which SQLite assigns as max(id)+1: every delete
 * below keeps the newest row overall ("id < (SELECT max(id) FROM messages)"), so max(id) never
 * goes down and no id comes back. The conversation rows (rooms, dm_conversations) stay; their
 * last_id may then name a deleted message, which store_user_conversations reports as last_gone.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

/*
 * Conversations read per slice of the count sweep: rows of rooms / dm_conversations (small, one index
 * range), not messages; well under a millisecond. A step reads one slice of each table, so with a
 * tick a second 1,000,000 direct conversation rows are all visited in about 17 minutes.
 */
#define RET_SLICE 1024

const struct store_sql store_sql_retention[] = {
    /* Age: among the budget oldest rows (by id, which follows created_at), those created before the
     * cutoff; never the newest row overall (ids are max(id)+1: deleting it would reuse its id).
     * Bounded by the window even when the oldest rows are young. */
    {STMT_RET_AGE, false,
     "DELETE FROM messages WHERE id IN (SELECT id FROM messages"
     " WHERE id < (SELECT max(id) FROM messages) ORDER BY id LIMIT ?2) AND created_at < ?1"},
    {STMT_RET_ROOMS, false,
     "SELECT name, msg_count FROM rooms WHERE name > ?1 ORDER BY name LIMIT ?2"},
    /* Count, a room: its oldest ?2 rows; never the newest row overall (see above). */
    {STMT_RET_ROOM_DEL, false,
     "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE room = ?1 ORDER BY id LIMIT ?2)"
     " AND id < (SELECT max(id) FROM messages)"},
    {STMT_RET_DMS, false,
     "SELECT user, peer, msg_count FROM dm_conversations WHERE (user, peer) > (?1, ?2)"
     " ORDER BY user, peer LIMIT ?3"},
    /* Count, a direct conversation: its oldest ?3 rows over both directions (two index ranges
     * merged; "?1 <> ?2" keeps a note to self once); never the newest row overall (see above). */
    {STMT_RET_DM_DEL, false,
     "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE to_user = ?1 AND sender = ?2"
     " UNION ALL SELECT id FROM messages WHERE to_user = ?2 AND sender = ?1 AND ?1 <> ?2"
     " ORDER BY 1 LIMIT ?3) AND id < (SELECT max(id) FROM messages)"},
    /* Erasure: tombstones (ids stay), then the user's rows. */
    {STMT_ERASE_SENT, false,
     "UPDATE messages SET deleted_at = ?2, body = 'null' WHERE sender = ?1 AND deleted_at IS NULL"},
    {STMT_ERASE_RECEIVED, false,
     "UPDATE messages SET deleted_at = ?2, body = 'null' WHERE to_user = ?1 AND deleted_at IS NULL"},
    {STMT_ERASE_MEMBERS, false, "DELETE FROM room_members WHERE user = ?1"},
    /* the peers' side of each conversation: both rows are always written together */
    {STMT_ERASE_DM_PEERS, false,
     "DELETE FROM dm_conversations WHERE peer = ?1"
     " AND user IN (SELECT peer FROM dm_conversations WHERE user = ?1)"},
    {STMT_ERASE_DMS, false, "DELETE FROM dm_conversations WHERE user = ?1"},
    {STMT_ERASE_SESSIONS, false, "DELETE FROM sessions WHERE user = ?1"},
    {STMT_ERASE_PRESENCE, false, "DELETE FROM presence WHERE user = ?1"},
    {STMT_COUNT, false, NULL},
};

/* One conversation of a slice: a room (peer NULL) or a direct conversation (user, peer). */
struct ret_item {
    char *a, *b;
    int64_t count;
};

static void items_free(struct ret_item *v, int n)
{
    for (int i = 0; i < n; i++) {
        free(v[i].a);
        free(v[i].b);
    }
}

/* Read the next slice (rooms when dm is false) after the kept position into v; *n rows. */
static int read_slice(struct store *st, bool dm, struct ret_item *v, int *n)
{
    sqlite3_stmt *s = st->stmt[dm ? STMT_RET_DMS : STMT_RET_ROOMS];
    int bad = dm ? store_bind_text(s, 1, st->ret_dm_user ? st->ret_dm_user : "") ||
                       store_bind_text(s, 2, st->ret_dm_peer ? st->ret_dm_peer : "") ||
                       sqlite3_bind_int(s, 3, RET_SLICE)
                 : store_bind_text(s, 1, st->ret_room ? st->ret_room : "") ||
                       sqlite3_bind_int(s, 2, RET_SLICE);
    if (bad)
        return store_bind_fail(st, s, "retention walk");
    int rc;
    *n = 0;
    while (*n < RET_SLICE && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct ret_item *it = &v[*n];
        const char *a = store_col_text(s, 0), *b = dm ? store_col_text(s, 1) : NULL;
        it->a = strdup(a ? a : "");
        it->b = dm ? strdup(b ? b : "") : NULL;
        it->count = sqlite3_column_int64(s, dm ? 2 : 1);
        (*n)++;
        if (!it->a || (dm && !it->b)) {
            store_stmt_done(s);
            return store_failf(st, STORE_ERR_NOMEM, "retention: out of memory");
        }
    }
    store_stmt_done(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : store_fail(st, rc, "retention walk");
}

static int set_pos(struct store *st, char **slot, const char *v)
{
    char *c = v ? strdup(v) : NULL;
    if (v && !c)
        return store_failf(st, STORE_ERR_NOMEM, "retention: out of memory");
    free(*slot);
    *slot = c;
    return 0;
}

/*
 * A slice of rooms or direct conversations from the kept position: the oldest messages of each one
 * over keep, while budget lasts. The position moves past every conversation brought within keep;
 * at the end of the table it goes back to the start.
 */
static int sweep(struct store *st, bool dm, int64_t keep, int *budget, int64_t *deleted)
{
    struct ret_item *v = calloc(RET_SLICE, sizeof(*v));
    if (!v)
        return store_failf(st, STORE_ERR_NOMEM, "retention: out of memory");
    int n = 0, done = 0;
    int rc = read_slice(st, dm, v, &n);
    for (; rc == 0 && done < n; done++) {
        struct ret_item *it = &v[done];
        /* a conversation counts once: from the side whose user sorts first (or a note to self) */
        if (it->count <= keep || (dm && strcmp(it->a, it->b) > 0))
            continue;
        if (*budget <= 0)
            break;
        int64_t want = it->count - keep, take = want < *budget ? want : *budget;
        sqlite3_stmt *s = st->stmt[dm ? STMT_RET_DM_DEL : STMT_RET_ROOM_DEL];
        int bad = dm ? store_bind_text(s, 1, it->a) || store_bind_text(s, 2, it->b) ||
                           sqlite3_bind_int64(s, 3, take)
                     : store_bind_text(s, 1, it->a) || sqlite3_bind_int64(s, 2, take);
        if (bad) {
            rc = store_bind_fail(st, s, "retention delete");
            break;
        }
        if ((rc = store_exec_stmt(st, s, "retention delete")) < 0)
            break;
        int got = sqlite3_changes(st->db);
        *deleted += got;
        *budget -= got;
        if (take < want)
            break; /* the budget ran out inside this one: it is visited again next step */
    }
    if (rc == 0) {
        if (done == n && n < RET_SLICE) { /* the end of the table: start over */
            rc = dm ? set_pos(st, &st->ret_dm_user, NULL) || set_pos(st, &st->ret_dm_peer, NULL)
                    : set_pos(st, &st->ret_room, NULL);
        } else if (done > 0) {
            struct ret_item *last = &v[done - 1];
            rc = dm ? set_pos(st, &st->ret_dm_user, last->a) || set_pos(st, &st->ret_dm_peer, last->b)
                    : set_pos(st, &st->ret_room, last->a);
        }
        if (rc)
            rc = STORE_ERR_NOMEM;
    }
    items_free(v, n);
    free(v);
    return rc;
}

int sq_retention_step(struct store *st, int64_t cutoff, int64_t keep, int budget,
                         int64_t *deleted)
{
    int rc;
    *deleted = 0;
    if (budget < 1 || cutoff < 0 || keep < 0)
        return store_failf(st, STORE_ERR_INVALID, "retention: budget >= 1, cutoff and keep >= 0");
    /* the counts are read, and the delete trigger moves them: the noted touches go first */
    if ((rc = store_write_check(st)) < 0 || (rc = store_conv_flush(st)) < 0)
        return rc;
    if (cutoff > 0) {
        sqlite3_stmt *s = st->stmt[STMT_RET_AGE];
        sqlite3_bind_int64(s, 1, cutoff);
        sqlite3_bind_int(s, 2, budget);
        if ((rc = store_exec_stmt(st, s, "retention by age")) < 0)
            return rc;
        int n = sqlite3_changes(st->db);
        *deleted += n;
        budget -= n;
    }
    if (keep > 0 && budget > 0 && (rc = sweep(st, false, keep, &budget, deleted)) < 0)
        return rc;
    if (keep > 0 && budget > 0 && (rc = sweep(st, true, keep, &budget, deleted)) < 0)
        return rc;
    return 0;
}

/* Bind user (and now as ?2 when now >= 0) and run s. */
static int erase_run(struct store *st, enum store_stmt_id id, const char *user, int64_t now,
                     int64_t *changed)
{
    sqlite3_stmt *s = st->stmt[id];
    if (store_bind_text(s, 1, user) || (now >= 0 && sqlite3_bind_int64(s, 2, now)))
        return store_bind_fail(st, s, "erase");
    int rc = store_exec_stmt(st, s, "erase");
    if (rc == 0 && changed)
        *changed += sqlite3_changes(st->db);
    return rc;
}

int sq_user_erase(struct store *st, const char *user, int64_t now, int64_t *tombstoned)
{
    int64_t n = 0;
    bool own;
    int rc;
    if (!store_name_ok(user))
        return store_failf(st, STORE_ERR_INVALID, "erase: a valid user needed");
    /* store_atomic_begin flushes the noted touches: they would bring deleted rows back */
    if ((rc = store_write_check(st)) < 0 || (rc = sq_atomic_begin(st, &own)) < 0)
        return rc;
    if ((rc = erase_run(st, STMT_ERASE_SENT, user, now, &n)) == 0 &&
        (rc = erase_run(st, STMT_ERASE_RECEIVED, user, now, &n)) == 0 &&
        (rc = erase_run(st, STMT_ERASE_MEMBERS, user, -1, NULL)) == 0 &&
        (rc = erase_run(st, STMT_ERASE_DM_PEERS, user, -1, NULL)) == 0 &&
        (rc = erase_run(st, STMT_ERASE_DMS, user, -1, NULL)) == 0 &&
        (rc = erase_run(st, STMT_ERASE_SESSIONS, user, -1, NULL)) == 0)
        rc = erase_run(st, STMT_ERASE_PRESENCE, user, -1, NULL);
    rc = sq_atomic_end(st, own, rc);
    if (rc == 0 && tombstoned)
        *tombstoned = n;
    return rc;
}
