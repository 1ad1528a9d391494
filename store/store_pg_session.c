/*
 * store_pg_session.c -- the PostgreSQL backend's sessions and presence tables (store_session.c and
 * store_presence.c are the SQLite twins; store.h has the contracts).
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg_internal.h"

#define SESSION_COLS                                                                         \
    "id, \"user\", remote_addr, user_agent, subprotocol, connected_at, last_seen_at, ended_at," \
    " end_reason, node"

static const char SQL_SESSION_INSERT[] =
    "INSERT INTO sessions (\"user\", remote_addr, user_agent, subprotocol, connected_at,"
    " last_seen_at, node) VALUES ($1, $2, $3, $4, $5, $5, NULLIF($6::int, 0)) RETURNING id";
static const char SQL_SESSION_TOUCH[] =
    "UPDATE sessions SET last_seen_at = GREATEST(last_seen_at, $2::bigint) WHERE id = $1";
static const char SQL_SESSION_END[] =
    "UPDATE sessions SET ended_at = $2, end_reason = $3 WHERE id = $1 AND ended_at IS NULL";
/* One statement, so atomic without a transaction of its own. Every part of it reads the snapshot
 * from before it: presence takes the last_seen_at of the sessions still open, as in SQLite where
 * presence is reset first. */
static const char SQL_SESSION_END_ORPHANS[] =
    "WITH p AS (UPDATE presence SET state = 'offline', connections = 0,"
    " last_seen = GREATEST(last_seen, coalesce((SELECT max(s.last_seen_at) FROM sessions AS s"
    " WHERE s.\"user\" = presence.\"user\" AND s.ended_at IS NULL), 0))"
    " WHERE state = 'online')"
    " UPDATE sessions SET ended_at = $1, end_reason = $2 WHERE ended_at IS NULL";
/*
 * A cluster node restarting ends only its own sessions (the others' nodes are alive, or the sweep
 * ends theirs), and recounts its users' presence from the sessions left on other nodes. The
 * recount excludes by id the rows this statement ends (data-modifying CTEs share one snapshot).
 */
static const char SQL_SESSION_END_ORPHANS_NODE[] =
    "WITH ended AS (UPDATE sessions SET ended_at = $1, end_reason = $2"
    "  WHERE ended_at IS NULL AND node = $3::int RETURNING id, \"user\", last_seen_at),"
    " users AS (SELECT \"user\" AS name, max(last_seen_at) AS seen FROM ended GROUP BY \"user\"),"
    " counts AS (SELECT u.name, u.seen,"
    "  (SELECT count(*) FROM sessions s WHERE s.\"user\" = u.name AND s.ended_at IS NULL"
    "   AND s.id NOT IN (SELECT id FROM ended)) AS n FROM users u),"
    " pres AS (UPDATE presence p SET connections = c.n,"
    "   state = CASE WHEN c.n > 0 THEN 'online' ELSE 'offline' END,"
    "   last_seen = GREATEST(p.last_seen, c.seen)"
    "  FROM counts c WHERE p.\"user\" = c.name RETURNING 1)"
    " SELECT (SELECT count(*) FROM ended), (SELECT count(*) FROM pres)";
static const char SQL_SESSION_GET[] = "SELECT " SESSION_COLS " FROM sessions WHERE id = $1";

/*
 * The list statements share one parameter set so one routine serves all four: $1 user, $2 state
 * (0 any, 1 active, 2 ended), $3 since, $4 before id, $5 limit. pg_session_list picks the one whose
 * index fits the filter (a prepared statement's generic plan cannot choose by parameter values).
 */
#define STATE_MATCH "($2::int = 0 OR ($2::int = 1) = (ended_at IS NULL))"
#define LIST_TAIL                                                                        \
    " AND id < $4::bigint AND connected_at >= $3::bigint AND " STATE_MATCH               \
    " ORDER BY id DESC LIMIT $5::bigint"

static const char SQL_SESSION_LIST_USER[] =
    "SELECT " SESSION_COLS " FROM sessions WHERE \"user\" = $1::text" LIST_TAIL;
static const char SQL_SESSION_LIST_SINCE[] =
    "SELECT " SESSION_COLS " FROM sessions WHERE $1::text IS NULL" LIST_TAIL;
/* ended_at IS NULL spelled out: the partial index of active sessions then serves it */
static const char SQL_SESSION_LIST_ACTIVE[] =
    "SELECT " SESSION_COLS " FROM sessions WHERE ended_at IS NULL AND $1::text IS NULL" LIST_TAIL;
static const char SQL_SESSION_LIST_ALL[] =
    "SELECT " SESSION_COLS " FROM sessions WHERE $1::text IS NULL" LIST_TAIL;
static const char SQL_SESSION_COUNT_ACTIVE[] =
    "SELECT count(*) FROM sessions WHERE ended_at IS NULL";
static const char SQL_SESSION_COUNT_ACTIVE_USER[] =
    "SELECT count(*) FROM sessions WHERE \"user\" = $1 AND ended_at IS NULL";

static const char SQL_PRESENCE_SET[] =
    "INSERT INTO presence (\"user\", state, connections, last_seen) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (\"user\") DO UPDATE SET state = excluded.state,"
    " connections = excluded.connections,"
    " last_seen = GREATEST(presence.last_seen, excluded.last_seen)";
/* In a cluster a node sees only its own connections: the count comes from every node's active
 * sessions instead (the caller's state and count are this node's view). */
static const char SQL_PRESENCE_SET_COUNTED[] =
    "INSERT INTO presence (\"user\", state, connections, last_seen)"
    " SELECT $1::text, CASE WHEN n > 0 THEN 'online' ELSE 'offline' END, n, $2::bigint"
    " FROM (SELECT count(*) AS n FROM sessions WHERE \"user\" = $1::text AND ended_at IS NULL) c"
    " ON CONFLICT (\"user\") DO UPDATE SET state = excluded.state,"
    " connections = excluded.connections,"
    " last_seen = GREATEST(presence.last_seen, excluded.last_seen)";
static const char SQL_PRESENCE_GET[] =
    "SELECT state = 'online', connections, last_seen FROM presence WHERE \"user\" = $1";
/*
 * In a cluster the row's state and count are written by each node's transaction from what it saw,
 * and two nodes ending a user's last two sessions at once may each still see the other's: the row
 * can say online with no session left (until the next change). Reads count the sessions instead.
 */
static const char SQL_PRESENCE_GET_COUNTED[] =
    "SELECT n > 0, n, p.last_seen FROM presence p,"
    " (SELECT count(*) AS n FROM sessions WHERE \"user\" = $1::text AND ended_at IS NULL) c"
    " WHERE p.\"user\" = $1::text";

int pg_session_begin(struct store *st, const char *user, const char *remote_addr,
                     const char *user_agent, const char *subprotocol, int64_t now, int64_t *id)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    if (!pg_name_ok(user) || !remote_addr)
        return pg_failf(pg, STORE_ERR_INVALID, "session begin: user and remote address needed");
    if ((rc = pg_write_check(pg)) < 0)
        return rc;
    pgp_init(&p);
    pgp_text(&p, user);
    pgp_text(&p, remote_addr);
    pgp_text(&p, user_agent);
    pgp_text(&p, subprotocol);
    pgp_i64(&p, now);
    pgp_i64(&p, pg->node_id);
    if ((rc = pg_run(pg, SQL_SESSION_INSERT, &p, &r, "session begin")) < 0)
        return rc;
    if (id)
        *id = pg_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

/* Run an UPDATE of one session; NOTFOUND when it matched no row. */
static int update_one(struct store_pg *pg, const char *sql, const struct pg_params *p,
                      const char *what, int64_t id)
{
    int64_t changed = 0;
    int rc = pg_write(pg, sql, p, &changed, what);

    if (rc < 0)
        return rc;
    if (changed == 0)
        return pg_failf(pg, STORE_ERR_NOTFOUND, "%s: no such session %" PRId64, what, id);
    return 0;
}

int pg_session_touch(struct store *st, int64_t id, int64_t now)
{
    struct pg_params p;

    pgp_init(&p);
    pgp_i64(&p, id);
    pgp_i64(&p, now);
    return update_one(pg_of(st), SQL_SESSION_TOUCH, &p, "session touch", id);
}

int pg_session_end(struct store *st, int64_t id, int64_t now, const char *reason)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    int rc;

    if (!pg_name_ok(reason))
        return pg_failf(pg, STORE_ERR_INVALID, "session end: a reason is needed");
    pgp_init(&p);
    pgp_i64(&p, id);
    pgp_i64(&p, now);
    pgp_text(&p, reason);
    rc = update_one(pg, SQL_SESSION_END, &p, "session end", id);
    if (rc == STORE_ERR_NOTFOUND)
        pg_failf(pg, rc, "session end: no active session %" PRId64, id);
    return rc;
}

int pg_session_end_orphans(struct store *st, int64_t now, const char *reason, int64_t *count)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    int64_t n = 0;
    int rc;

    if (!pg_name_ok(reason))
        return pg_failf(pg, STORE_ERR_INVALID, "end orphans: a reason is needed");
    pgp_init(&p);
    pgp_i64(&p, now);
    pgp_text(&p, reason);
    if (pg->node_id != 0) {
        PGresult *r;
        if ((rc = pg_write_check(pg)) < 0)
            return rc;
        pgp_i64(&p, pg->node_id);
        if ((rc = pg_run(pg, SQL_SESSION_END_ORPHANS_NODE, &p, &r, "end orphans")) < 0)
            return rc;
        n = pg_i64(r, 0, 0);
        PQclear(r);
    } else if ((rc = pg_write(pg, SQL_SESSION_END_ORPHANS, &p, &n, "end orphans")) < 0) {
        return rc;
    }
    if (count)
        *count = n;
    return 0;
}

static void session_from_row(const PGresult *r, int row, struct store_session *o)
{
    o->id = pg_i64(r, row, 0);
    o->user = pg_text(r, row, 1);
    o->remote_addr = pg_text(r, row, 2);
    o->user_agent = pg_text(r, row, 3);
    o->subprotocol = pg_text(r, row, 4);
    o->connected_at = pg_i64(r, row, 5);
    o->last_seen_at = pg_i64(r, row, 6);
    o->ended = !PQgetisnull(r, row, 7);
    o->ended_at = pg_i64(r, row, 7);
    o->end_reason = pg_text(r, row, 8);
    o->node = pg_i64(r, row, 9);
    o->owned_ = NULL;
}

int pg_session_get(struct store *st, int64_t id, struct store_session *out)
{
    struct store_pg *pg = pg_of(st);
    struct store_session row;
    struct pg_params p;
    PGresult *r;
    int rc;

    memset(out, 0, sizeof *out);
    pgp_init(&p);
    pgp_i64(&p, id);
    if ((rc = pg_run(pg, SQL_SESSION_GET, &p, &r, "session get")) < 0)
        return rc;
    if (PQntuples(r) == 0) {
        rc = pg_failf(pg, STORE_ERR_NOTFOUND, "no session %" PRId64, id);
    } else {
        session_from_row(r, 0, &row);
        if (store_session_copy(out, &row) < 0) {
            /* *out still points into r: forget it before r goes */
            memset(out, 0, sizeof *out);
            rc = pg_failf(pg, STORE_ERR_NOMEM, "session get: no memory");
        }
    }
    PQclear(r);
    return rc;
}

int pg_session_list(struct store *st, const struct store_session_filter *f, store_session_fn *cb,
                    void *ctx)
{
    struct store_pg *pg = pg_of(st);
    struct store_session row;
    struct pg_params p;
    const char *sql;
    PGresult *r;
    int rc, stop = 0;

    if (!f || f->limit < 1 || (f->user && !*f->user) || (unsigned)f->state > STORE_SESSIONS_ENDED)
        return pg_failf(pg, STORE_ERR_INVALID, "session list: bad filter");
    if (f->user)
        sql = SQL_SESSION_LIST_USER;
    else if (f->since_ms > 0)
        sql = SQL_SESSION_LIST_SINCE;
    else if (f->state == STORE_SESSIONS_ACTIVE)
        sql = SQL_SESSION_LIST_ACTIVE;
    else
        sql = SQL_SESSION_LIST_ALL;
    pgp_init(&p);
    pgp_text(&p, f->user);
    pgp_i64(&p, (int64_t)f->state);
    pgp_i64(&p, f->since_ms > 0 ? f->since_ms : INT64_MIN);
    pgp_i64(&p, f->before_id > 0 ? f->before_id : INT64_MAX);
    pgp_i64(&p, f->limit);
    if ((rc = pg_run(pg, sql, &p, &r, "session list")) < 0)
        return rc;
    for (int i = 0; i < PQntuples(r) && !stop; i++) {
        session_from_row(r, i, &row);
        stop = cb(ctx, &row);
    }
    PQclear(r);
    return stop;
}

int pg_session_count_active(struct store *st, const char *user, int64_t *count)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    pgp_init(&p);
    if (user)
        pgp_text(&p, user);
    rc = pg_run(pg, user ? SQL_SESSION_COUNT_ACTIVE_USER : SQL_SESSION_COUNT_ACTIVE, &p, &r,
                "count active");
    if (rc < 0)
        return rc;
    *count = pg_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

/* ---- Presence ---- */

int pg_presence_set(struct store *st, const char *user, bool online, int connections, int64_t now)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;

    if (!pg_name_ok(user) || connections < 0)
        return pg_failf(pg, STORE_ERR_INVALID, "presence set: user and connections >= 0 needed");
    pgp_init(&p);
    pgp_text(&p, user);
    if (pg->node_id != 0) {
        pgp_i64(&p, now);
        return pg_write(pg, SQL_PRESENCE_SET_COUNTED, &p, NULL, "presence set");
    }
    pgp_text(&p, online ? "online" : "offline");
    pgp_i64(&p, connections);
    pgp_i64(&p, now);
    return pg_write(pg, SQL_PRESENCE_SET, &p, NULL, "presence set");
}

int pg_presence_get(struct store *st, const char *user, bool *online, int *connections,
                    int64_t *last_seen)
{
    struct store_pg *pg = pg_of(st);
    struct pg_params p;
    PGresult *r;
    int rc;

    if (!pg_name_ok(user))
        return pg_failf(pg, STORE_ERR_INVALID, "presence get: no user");
    pgp_init(&p);
    pgp_text(&p, user);
    if ((rc = pg_run(pg, pg->node_id ? SQL_PRESENCE_GET_COUNTED : SQL_PRESENCE_GET, &p, &r,
                     "presence get")) < 0)
        return rc;
    if (PQntuples(r) == 0) {
        rc = pg_failf(pg, STORE_ERR_NOTFOUND, "no presence for user %s", user);
    } else {
        if (online)
            *online = pg_bool(r, 0, 0);
        if (connections)
            *connections = (int)pg_i64(r, 0, 1);
        if (last_seen)
            *last_seen = pg_i64(r, 0, 2);
    }
    PQclear(r);
    return rc;
}
