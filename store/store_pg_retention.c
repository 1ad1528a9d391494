/*
 * store_pg_retention.c -- the PostgreSQL backend's retention ([store] retention_age,
 * retention_count: a few hundred rows at a time) and user erasure. store_retention.c is the SQLite
 * twin; the walk over conversations is the same, a slice a step from the position the handle keeps.
 *
 * Message ids come from a sequence here, so deleting the newest message could not make an id come
 * back. The newest row overall is kept all the same, so that both backends delete the same rows
 * (store.h states it, and the tests hold both to it); it costs one index probe per statement.
 * Each DELETE is a statement of its own, as in SQLite: the count trigger moves the conversation
 * rows in the same statement, so a step stopped half way leaves consistent rows, and no long
 * transaction holds those rows locked against the nodes inserting messages.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg_internal.h"

/* Conversations read per slice of the count sweep (rows of rooms / dm_conversations, not
 * messages); as in store_retention.c. */
#define RET_SLICE 1024

/*
 * Every delete names its rows as an array computed first (one short index range), then deletes
 * them by primary key: "id IN (subquery)" lets the planner pick a hash join over the whole table
 * for a generic plan, whose LIMIT it cannot see. The newest row overall is always left out.
 */
#define DELETE_IDS "DELETE FROM messages WHERE id = ANY (ARRAY("
#define NOT_NEWEST ")) AND id < (SELECT max(id) FROM messages)"

/* Age: among the $2 oldest rows (by id, which follows created_at), those created before $1.
 * Bounded by the window even when the oldest rows are young. */
static const char SQL_RET_AGE[] =
    DELETE_IDS "SELECT id FROM messages WHERE id < (SELECT max(id) FROM messages)"
    " ORDER BY id LIMIT $2::bigint)) AND created_at < $1::bigint";
static const char SQL_RET_ROOMS[] =
    "SELECT name, msg_count FROM rooms WHERE name > $1 ORDER BY name LIMIT $2";
/* Count, a room: its oldest $2 rows. */
static const char SQL_RET_ROOM_DEL[] =
    DELETE_IDS "SELECT id FROM messages WHERE room = $1::text ORDER BY id LIMIT $2::bigint"
    NOT_NEWEST;
static const char SQL_RET_DMS[] =
    "SELECT \"user\", peer, msg_count FROM dm_conversations"
    " WHERE (\"user\", peer) > ($1::text, $2::text) ORDER BY \"user\", peer LIMIT $3::bigint";
/* Count, a direct conversation: its oldest $3 rows over both directions (two index ranges, each
 * limited, merged; "$1 <> $2" keeps a note to self once). */
#define DM_SIDE(to, from)                                                      \
    "(SELECT id FROM messages WHERE to_user = " to " AND sender = " from       \
    " ORDER BY id LIMIT $3::bigint)"
static const char SQL_RET_DM_DEL[] =
    DELETE_IDS DM_SIDE("$1::text", "$2::text")
    " UNION ALL " DM_SIDE("$2::text", "$1::text AND $1::text <> $2::text")
    " ORDER BY 1 LIMIT $3::bigint" NOT_NEWEST;

/*
 * Erasure in one statement (atomic, one round trip): every message user sent or received becomes a
 * tombstone (one UPDATE, so a note to self counts once), and their memberships, both sides of their
 * direct conversations, sessions and presence go. Every part reads the snapshot from before it.
 * The result is the number of tombstones.
 */
static const char SQL_ERASE[] =
    "WITH t AS (UPDATE messages SET deleted_at = $2::bigint, body = 'null'"
    " WHERE id IN (SELECT id FROM messages WHERE sender = $1::text"
    " UNION SELECT id FROM messages WHERE to_user = $1::text) AND deleted_at IS NULL RETURNING 1),"
    " mb AS (DELETE FROM room_members WHERE \"user\" = $1::text),"
    " dp AS (DELETE FROM dm_conversations WHERE peer = $1::text AND \"user\" = ANY (ARRAY("
    "SELECT peer FROM dm_conversations WHERE \"user\" = $1::text AND peer <> $1::text))),"
    " dm AS (DELETE FROM dm_conversations WHERE \"user\" = $1::text),"
    " s AS (DELETE FROM sessions WHERE \"user\" = $1::text),"
    " p AS (DELETE FROM presence WHERE \"user\" = $1::text)"
    " SELECT count(*) FROM t";

/* One conversation of a slice: a room (b NULL) or a direct conversation (a's side with b). */
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
static int read_slice(struct store_pg *pg, bool dm, struct ret_item *v, int *n)
{
    struct pg_params p;
    PGresult *r;
    int rc;

    *n = 0;
    pgp_init(&p);
    if (dm) {
        pgp_text(&p, pg->ret_dm_user ? pg->ret_dm_user : "");
        pgp_text(&p, pg->ret_dm_peer ? pg->ret_dm_peer : "");
    } else {
        pgp_text(&p, pg->ret_room ? pg->ret_room : "");
    }
    pgp_i64(&p, RET_SLICE);
    if ((rc = pg_run(pg, dm ? SQL_RET_DMS : SQL_RET_ROOMS, &p, &r, "retention walk")) < 0)
        return rc;
    for (int i = 0; i < PQntuples(r) && i < RET_SLICE; i++) {
        struct ret_item *it = &v[(*n)++];
        const char *a = pg_text(r, i, 0), *b = dm ? pg_text(r, i, 1) : NULL;
        it->a = strdup(a ? a : "");
        it->b = dm ? strdup(b ? b : "") : NULL;
        it->count = pg_i64(r, i, dm ? 2 : 1);
        if (!it->a || (dm && !it->b)) {
            rc = pg_failf(pg, STORE_ERR_NOMEM, "retention: out of memory");
            break;
        }
    }
    PQclear(r);
    return rc;
}

static int set_pos(struct store_pg *pg, char **slot, const char *v)
{
    char *c = v ? strdup(v) : NULL;
    if (v && !c)
        return pg_failf(pg, STORE_ERR_NOMEM, "retention: out of memory");
    free(*slot);
    *slot = c;
    return 0;
}

/* Delete the oldest take messages of one conversation; *got = rows deleted. */
static int trim(struct store_pg *pg, bool dm, const struct ret_item *it, int64_t take, int64_t *got)
{
    struct pg_params p;

    pgp_init(&p);
    pgp_text(&p, it->a);
    if (dm)
        pgp_text(&p, it->b);
    pgp_i64(&p, take);
    return pg_write(pg, dm ? SQL_RET_DM_DEL : SQL_RET_ROOM_DEL, &p, got, "retention delete");
}

/*
 * A slice of rooms or direct conversations from the kept position: the oldest messages of each one
 * over keep, while budget lasts. The position moves past every conversation brought within keep;
 * at the end of the table it goes back to the start.
 */
static int sweep(struct store_pg *pg, bool dm, int64_t keep, int *budget, int64_t *deleted)
{
    struct ret_item *v = calloc(RET_SLICE, sizeof(*v));
    if (!v)
        return pg_failf(pg, STORE_ERR_NOMEM, "retention: out of memory");
    int n = 0, done = 0;
    int rc = read_slice(pg, dm, v, &n);
    for (; rc == 0 && done < n; done++) {
        struct ret_item *it = &v[done];
        /* a conversation counts once: from the side whose user sorts first (or a note to self) */
        if (it->count <= keep || (dm && strcmp(it->a, it->b) > 0))
            continue;
        if (*budget <= 0)
            break;
        int64_t want = it->count - keep, take = want < *budget ? want : *budget, got = 0;
        if ((rc = trim(pg, dm, it, take, &got)) < 0)
            break;
        *deleted += got;
        *budget -= (int)got;
        if (take < want)
            break; /* the budget ran out inside this one: it is visited again next step */
    }
    if (rc == 0) {
        if (done == n && n < RET_SLICE) { /* the end of the table: start over */
            rc = dm ? set_pos(pg, &pg->ret_dm_user, NULL) || set_pos(pg, &pg->ret_dm_peer, NULL)
                    : set_pos(pg, &pg->ret_room, NULL);
        } else if (done > 0) {
            struct ret_item *last = &v[done - 1];
            rc = dm ? set_pos(pg, &pg->ret_dm_user, last->a) ||
                          set_pos(pg, &pg->ret_dm_peer, last->b)
                    : set_pos(pg, &pg->ret_room, last->a);
        }
        if (rc)
            rc = STORE_ERR_NOMEM;
    }
    items_free(v, n);
    free(v);
    return rc;
}

int pg_retention_step(struct store *st, int64_t cutoff, int64_t keep, int budget,
                      int64_t *deleted)
{
    struct store_pg *pg = pg_of(st);
    int rc;

    *deleted = 0;
    if (budget < 1 || cutoff < 0 || keep < 0)
        return pg_failf(pg, STORE_ERR_INVALID, "retention: budget >= 1, cutoff and keep >= 0");
    /* the counts are read, and the delete trigger moves them: the noted touches go first */
    if ((rc = pg_write_check(pg)) < 0 || (rc = pg_conv_flush(pg)) < 0)
        return rc;
    if (cutoff > 0) {
        struct pg_params p;
        int64_t n = 0;
        pgp_init(&p);
        pgp_i64(&p, cutoff);
        pgp_i64(&p, budget);
        if ((rc = pg_write(pg, SQL_RET_AGE, &p, &n, "retention by age")) < 0)
            return rc;
        *deleted += n;
        budget -= (int)n;
    }
    if (keep > 0 && budget > 0 && (rc = sweep(pg, false, keep, &budget, deleted)) < 0)
        return rc;
    if (keep > 0 && budget > 0 && (rc = sweep(pg, true, keep, &budget, deleted)) < 0)
        return rc;
    return 0;
}

int pg_user_erase(struct store *st, const char *user, int64_t now, int64_t *tombstoned)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    if (!pg_name_ok(user))
        return pg_failf(pg, STORE_ERR_INVALID, "erase: a valid user needed");
    /* flushed first: a touch noted earlier would bring the deleted rows back */
    if ((rc = pg_write_check(pg)) < 0 || (rc = pg_conv_flush(pg)) < 0)
        return rc;
    pgp_init(&p);
    pgp_text(&p, user);
    pgp_i64(&p, now);
    if ((rc = pg_run(pg, SQL_ERASE, &p, &r, "erase")) < 0)
        return rc;
    if (tombstoned)
        *tombstoned = pg_i64(r, 0, 0);
    PQclear(r);
    return 0;
}
