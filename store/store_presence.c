/*
 * store_presence.c -- the presence table: per user online/offline, live connection count and last seen,
 * so presence answers and the admin CLI survive restarts (and are repaired after a crash).
 */
#include <stdint.h>
#include <string.h>

#include "store_internal.h"

const struct store_sql store_sql_presence[] = {
    {STMT_PRESENCE_SET, false,
     "INSERT INTO presence (user, state, connections, last_seen) VALUES (?1, ?2, ?3, ?4)"
     " ON CONFLICT (user) DO UPDATE SET state = excluded.state, connections = excluded.connections,"
     " last_seen = max(last_seen, excluded.last_seen)"},
    {STMT_PRESENCE_GET, false,
     "SELECT state = 'online', connections, last_seen FROM presence WHERE user = ?1"},
    /* Used by store_session_end_orphans before the sessions are ended: the newest activity of the
     * sessions a crash left open is the best "last seen" there is. */
    {STMT_PRESENCE_RESET_ORPHANS, false,
     "UPDATE presence SET state = 'offline', connections = 0,"
     " last_seen = max(last_seen, coalesce((SELECT max(last_seen_at) FROM sessions"
     " WHERE sessions.user = presence.user AND ended_at IS NULL), 0))"
     " WHERE state = 'online'"},
    {STMT_COUNT, false, NULL},
};

int sq_presence_set(struct store *st, const char *user, bool online, int connections, int64_t now)
{
    sqlite3_stmt *s = st->stmt[STMT_PRESENCE_SET];
    int rc;

    if (!store_name_ok(user) || connections < 0)
        return store_failf(st, STORE_ERR_INVALID, "presence set: user and connections >= 0 needed");
    if ((rc = store_write_check(st)) < 0)
        return rc;
    if (store_bind_text(s, 1, user) ||
        sqlite3_bind_text(s, 2, online ? "online" : "offline", -1, SQLITE_STATIC) ||
        sqlite3_bind_int(s, 3, connections) || sqlite3_bind_int64(s, 4, now)) {
        return store_bind_fail(st, s, "presence set");
    }
    return store_exec_stmt(st, s, "presence set");
}

int sq_presence_get(struct store *st, const char *user, bool *online, int *connections,
                       int64_t *last_seen)
{
    sqlite3_stmt *s = st->stmt[STMT_PRESENCE_GET];
    int rc;

    if (!store_name_ok(user))
        return store_failf(st, STORE_ERR_INVALID, "presence get: no user");
    if (store_bind_text(s, 1, user)) {
        return store_bind_fail(st, s, "presence get");
    }
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        if (online)
            *online = sqlite3_column_int(s, 0) != 0;
        if (connections)
            *connections = sqlite3_column_int(s, 1);
        if (last_seen)
            *last_seen = sqlite3_column_int64(s, 2);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = store_failf(st, STORE_ERR_NOTFOUND, "no presence for user %s", user);
    } else {
        rc = store_fail(st, rc, "presence get");
    }
    store_stmt_done(s);
    return rc;
}
