/*
 * store_pg_internal.h -- what the store_pg*.c files share: the PostgreSQL handle, the statement
 * runner with its bounded wait, parameter lists and row readers. Only store/ includes <libpq-fe.h>.
 *
 * Every call is one libpq round trip (or a few), sent and awaited with poll() on the connection's
 * socket, never longer than the handle's wait bound (store_set_lock_wait; busy_timeout otherwise).
 * A call that runs out of time, or finds the connection broken, closes it: the open transaction is
 * lost (the group commit then fails and no receipt goes out), and calls fail at once with
 * STORE_ERR_IO while a new connection is made. On the event loop's handle (store_set_lock_wait was
 * called) that connection is made without waiting: each call moves libpq's connect state machine on
 * by what the socket allows at that moment, and attempts are spaced by a back-off (PG_RETRY_MIN_MS
 * doubling to PG_RETRY_MAX_MS). So a database that stops answering costs the loop one bounded wait
 * when it goes, never one per call or per retry. Other handles (wsctl, tests) connect blocking,
 * bounded by the same wait.
 */
#ifndef WSP_STORE_PG_INTERNAL_H
#define WSP_STORE_PG_INTERNAL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"
#include "store_copy.h"
#include "store_ops.h"

/* After the connection was lost or a call timed out: how long calls fail at once (blocking
 * handles), and the first and longest spacing of reconnect attempts (the loop's handle). */
#define PG_DOWN_BACKOFF_MS 1000
#define PG_RETRY_MIN_MS 100
#define PG_RETRY_MAX_MS 5000
/* Statements prepared once per connection (by the address of their SQL text). */
#define PG_MAX_STMTS 160
/* Parameters of one statement. */
#define PG_MAX_PARAMS 12

struct pg_conv;
struct pg_note;

struct store_pg {
    const struct store_ops *ops; /* first: store_ops_of() reads it */
    PGconn *conn;                /* NULL while down */
    char *conninfo;
    bool readonly;
    bool txn;        /* inside store_begin .. store_commit/rollback */
    bool txn_broken; /* a statement failed inside it: PostgreSQL aborted the transaction */
    int savepoints;  /* store_atomic_begin savepoints open inside the transaction */
    int schema_version;
    int64_t node_id;   /* store_node_join: sessions carry it; 0 before */
    int64_t node_boot; /* ... and this boot: the nodes row is ours only while it matches */
    int wait_ms;             /* the bound on one call's wait */
    struct store_waiter waiter; /* store_set_waiter: who waits for the socket (else poll()) */
    int64_t down_until_ms;   /* monotonic: until then, calls fail at once */
    bool async_reconnect;    /* the loop's handle: reconnect without waiting */
    PGconn *connecting;      /* a reconnect under way (async_reconnect) */
    PostgresPollingStatusType cpoll; /* ... where libpq's connect state machine is */
    int64_t connect_deadline;        /* ... monotonic: given up after the wait bound */
    int retry_ms;            /* the next spacing of reconnect attempts */
    /* store_commit_start: a COMMIT sent, its answer not read yet (any call reads it first). */
    bool commit_pending;
    bool commit_done;        /* ... read by another call: commit_rc/commit_err wait for the poll */
    int commit_rc;
    int64_t commit_deadline; /* monotonic */
    PGresult *commit_res;    /* its result, read before libpq's end of command */
    char commit_err[512];
    const char *prepared[PG_MAX_STMTS]; /* SQL texts prepared on conn; "s<index>" is the name */
    int nprepared;
    /* As in the SQLite store: scans never show events the open transaction added. */
    int64_t outbox_unseen_from;
    int64_t outbox_room, outbox_room_bound;
    uint64_t outbox_replays;
    bool outbox_owner;            /* holds the events sender's advisory lock (cluster) */
    int64_t outbox_owner_retry_ms; /* monotonic: when to ask for it again */
    /* store_retention_step's place in the walk over conversations (NULL: from the start). */
    char *ret_room;
    char *ret_dm_user, *ret_dm_peer;
    /* Conversation touches of the open group commit not written yet (store_pg_msg.c): one per room
     * and per pair of users, written by pg_conv_flush. Empty outside a transaction and while a
     * savepoint is open (touches are then written with their message: ROLLBACK TO undoes both). */
    struct pg_conv *conv_pending;
    /* Cluster log rows of the open transaction (store_pg_cluster.c), written by pg_log_flush in one
     * statement before COMMIT: one NOTIFY per commit instead of one insert per note. */
    struct pg_note **notes;
    size_t nnotes, notes_cap;
    size_t *note_marks; /* nnotes when each open savepoint began (index: its depth) */
    int note_marks_cap;
    char err[512];
};

static inline struct store_pg *pg_of(struct store *st)
{
    return (struct store_pg *)(void *)st;
}

/* Text parameters for one statement: NULL is SQL NULL. Numbers are formatted into num[]. */
struct pg_params {
    int n;
    const char *v[PG_MAX_PARAMS];
    char num[PG_MAX_PARAMS][24];
};

/*
 * A PostgreSQL array literal for one text parameter ("{...}"): unnest() over a few of them writes
 * many rows in one statement (one round trip, one statement's overhead). Every element is quoted
 * (\\ and \" escaped), NULL unquoted. pga_done closes it and returns the text, or NULL when out of
 * memory; pga_free releases it.
 */
struct pg_array {
    char *p;
    size_t len, cap;
    bool oom;
};

void pga_init(struct pg_array *a);
void pga_text(struct pg_array *a, const char *s);
void pga_i64(struct pg_array *a, int64_t v);
const char *pga_done(struct pg_array *a);
void pga_free(struct pg_array *a);

void pgp_init(struct pg_params *p);
void pgp_text(struct pg_params *p, const char *s);
void pgp_i64(struct pg_params *p, int64_t v);
void pgp_bool(struct pg_params *p, bool v);

/*
 * Run sql (a static string: it is prepared once per connection, keyed by its address) with p
 * (may be NULL: no parameters). On success returns 0 and *res (may be NULL: the result is only
 * checked) holds the result, which the caller PQclear()s. On failure records "what: message" and
 * returns STORE_ERR_* (res is NULL): CONSTRAINT for SQLSTATE class 23, BUSY for lock timeouts and
 * serialization failures, READONLY for a read-only transaction, IO otherwise.
 */
int pg_run(struct store_pg *pg, const char *sql, const struct pg_params *p, PGresult **res,
           const char *what);

/* pg_run for a write: refuses on a read-only handle or a broken transaction first. *changed (may
 * be NULL) = rows the statement changed (PQcmdTuples). */
int pg_write(struct store_pg *pg, const char *sql, const struct pg_params *p, int64_t *changed,
             const char *what);

/* Fails (without running anything) when a write cannot go on: read-only, or a transaction
 * PostgreSQL has already aborted after an error. */
int pg_write_check(struct store_pg *pg);

/* Record a message of our own and return code. */
int pg_failf(struct store_pg *pg, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Column readers (row r, column c): NULL / 0 for SQL NULL. Strings borrowed from res. */
const char *pg_text(const PGresult *res, int r, int c);
int64_t pg_i64(const PGresult *res, int r, int c);
bool pg_bool(const PGresult *res, int r, int c);

/* Messages: the columns pg_msg_from_row reads, in its order (as STORE_MSG_COLS). */
#define PG_MSG_COLS "id, sender, to_user, room, body, cid, created_at, via"
#define PG_MSG_NCOLS 8
void pg_msg_from_row(const PGresult *res, int r, int c0, struct store_msg *m);

/* Hand rows [0, emit) of res to cb as messages; 0 or cb's stop value. Does not PQclear. */
int pg_each_msg(const PGresult *res, int emit, store_msg_fn *cb, void *ctx);
/* Same for one-column name rows. */
int pg_each_name(const PGresult *res, store_name_fn *cb, void *ctx);

/* Argument check shared by the files: non-NULL, non-empty. */
bool pg_name_ok(const char *s);

/* "join", "claim", "api" and back. */
const char *pg_via_name(enum store_via via);
enum store_via pg_via_parse(const char *s);

/* A new connection to conninfo within wait_ms (poll()ed, never longer), or NULL with err set. */
PGconn *pg_connect_bounded(const char *conninfo, int wait_ms, char *err, size_t errlen);

/* libpq's message on one line (newlines and tabs become spaces, no trailing blanks). */
void pg_copy_msg(char *dst, size_t n, const char *msg);

/* Monotonic milliseconds. */
int64_t pg_mono_ms(void);

/* A transaction ended: every outbox row left is visible to scans (store_pg_outbox.c). */
void pg_outbox_txn_over(struct store_pg *pg);

/* A rooms row for room (created now if missing). */
int pg_room_ensure(struct store_pg *pg, const char *room, int64_t now);

/* The conversation list's state for a new message: the room's or both sides' last id and count,
 * written now. */
int pg_conv_touch(struct store_pg *pg, const struct store_msg *m, int64_t id);

/*
 * Write the conversation touches pg_msg_insert noted in the open group commit (max last_id, summed
 * counts) in one statement. Called before COMMIT, before a savepoint opens, and at the top of every
 * function that reads or writes rooms or dm_conversations (or deletes messages: the count trigger).
 * A no-op when nothing is noted; on failure the touches stay noted (the commit then fails).
 * pg_conv_drop forgets them: the transaction is over without them.
 */
int pg_conv_flush(struct store_pg *pg);
void pg_conv_drop(struct store_pg *pg);

/*
 * The cluster log rows pg_cluster_note kept in the open transaction: pg_log_flush writes them in
 * one statement (before COMMIT; on failure they stay, the commit fails); pg_log_drop forgets all
 * but the first keep. A savepoint remembers where it began (pg_log_savepoint, before it opens, at
 * depth pg->savepoints); pg_log_savepoint_end (after the depth went back down) forgets the rows
 * noted since when the savepoint was undone.
 */
int pg_log_flush(struct store_pg *pg);
void pg_log_drop(struct store_pg *pg, size_t keep);
int pg_log_savepoint(struct store_pg *pg);
void pg_log_savepoint_end(struct store_pg *pg, bool undone);

/* The PostgreSQL backend's functions behind store_pg_ops (store.h has their contracts). */
void pg_set_lock_wait(struct store *st, int ms);
void pg_set_waiter(struct store *st, const struct store_waiter *w);
void pg_close(struct store *st);
const char *pg_last_error(const struct store *st);
int pg_schema_version(const struct store *st);
int pg_begin(struct store *st);
int pg_commit(struct store *st);
int pg_rollback(struct store *st);
bool pg_in_transaction(const struct store *st);
int pg_ping(struct store *st);
int pg_backup(struct store *st, const char *dest_path, int64_t *pages);
int pg_stats(struct store *st, struct store_stats *out);
void pg_wal_stats(struct store *st, struct store_wal_stats *out);
int pg_check_plans(struct store *st);
int pg_session_begin(struct store *st, const char *user, const char *remote_addr, const char *user_agent, const char *subprotocol, int64_t now, int64_t *id);
int pg_session_touch(struct store *st, int64_t id, int64_t now);
int pg_session_end(struct store *st, int64_t id, int64_t now, const char *reason);
int pg_session_end_orphans(struct store *st, int64_t now, const char *reason, int64_t *count);
int pg_session_get(struct store *st, int64_t id, struct store_session *out);
int pg_session_list(struct store *st, const struct store_session_filter *f, store_session_fn *cb, void *ctx);
int pg_session_count_active(struct store *st, const char *user, int64_t *count);
int pg_presence_set(struct store *st, const char *user, bool online, int connections, int64_t now);
int pg_presence_get(struct store *st, const char *user, bool *online, int *connections, int64_t *last_seen);
int pg_msg_insert(struct store *st, const struct store_msg *m, struct store_receipt *out);
int pg_msg_ack(struct store *st, const char *user, int64_t msg_id, int64_t session_id, int64_t now);
int pg_msg_ack_first(struct store *st, const char *user, int64_t msg_id, int64_t session_id, int64_t now, bool *first);
int pg_pending_direct(struct store *st, const char *user, int64_t after_id, int limit, store_msg_fn *cb, void *ctx);
int pg_history_direct(struct store *st, const char *user_a, const char *user_b, int64_t before_id, int limit, store_msg_fn *cb, void *ctx, bool *more);
int pg_history_room(struct store *st, const char *room, int64_t before_id, int limit, store_msg_fn *cb, void *ctx, bool *more);
int pg_msg_get(struct store *st, int64_t id, struct store_msg_info *out);
int pg_room_join(struct store *st, const char *room, const char *user, int64_t now, bool *joined);
int pg_room_join_via(struct store *st, const char *room, const char *user, int64_t now, enum store_via via, bool *joined);
int pg_room_add(struct store *st, const char *room, const char *user, int64_t now, bool *added);
int pg_room_member_via(struct store *st, const char *room, const char *user, enum store_via *via);
int pg_room_delete(struct store *st, const char *room, int64_t now, store_name_fn *cb, void *ctx);
int pg_rooms_list(struct store *st, const char *after, int limit, store_room_fn *cb, void *ctx, bool *more);
int pg_room_member_count(struct store *st, const char *room, int64_t *count);
int pg_user_conversations(struct store *st, const char *user, int64_t before_id, int limit, store_conversation_fn *cb, void *ctx, bool *more);
int pg_retention_step(struct store *st, int64_t cutoff, int64_t keep, int budget, int64_t *deleted);
int pg_user_erase(struct store *st, const char *user, int64_t now, int64_t *tombstoned);
int pg_atomic_begin(struct store *st, bool *own_txn);
int pg_atomic_end(struct store *st, bool own_txn, int rc);
int pg_msg_delete(struct store *st, int64_t id, int64_t now);
int pg_room_leave(struct store *st, const char *room, const char *user);
int pg_room_is_member(struct store *st, const char *room, const char *user, bool *member);
int pg_room_cursor(struct store *st, const char *room, const char *user, int64_t *cursor);
int pg_room_members(struct store *st, const char *room, store_name_fn *cb, void *ctx);
int pg_user_rooms(struct store *st, const char *user, store_name_fn *cb, void *ctx);
int pg_users_sharing_room(struct store *st, const char *user, store_name_fn *cb, void *ctx);
int pg_room_replay(struct store *st, const char *room, const char *user, int limit, store_msg_fn *cb, void *ctx, bool *truncated);
int pg_outbox_add(struct store *st, const char *user, const char *type, const char *payload, int64_t now, int64_t max_queued, int64_t *id);
int pg_outbox_scan(struct store *st, int64_t now, int max_rows, store_event_fn *cb, bool (*skip)(void *ctx, int64_t id), void *ctx);
int pg_outbox_scan_after(struct store *st, int64_t now, int64_t *after, int max_rows, store_event_fn *cb, bool (*skip)(void *ctx, int64_t id), void *ctx);
uint64_t pg_outbox_replays(const struct store *st);
int pg_outbox_delivered(struct store *st, const int64_t *ids, size_t n);
int pg_outbox_retry(struct store *st, const int64_t *ids, size_t n, int64_t now, int64_t next_at, int64_t dead_before, const char *error, int *dead);
int pg_outbox_expire(struct store *st, int64_t dead_before, int64_t now, int limit, int64_t *count);
int pg_outbox_dead_list(struct store *st, int64_t after_id, int limit, store_event_fn *cb, void *ctx);
int pg_outbox_replay(struct store *st, int64_t id, int limit, int64_t now, int64_t *count);
int pg_outbox_counts(struct store *st, struct store_outbox_counts *out);
int pg_outbox_owner(struct store *st, bool *mine);
int pg_commit_start(struct store *st, int *fd);
int pg_commit_poll(struct store *st, enum store_poll how, bool *done);
int pg_node_join(struct store *st, const char *name, int64_t boot, int64_t lease_ms, int64_t now,
                 int64_t *node_id);
int pg_node_renew(struct store *st, int64_t now, int64_t lease_ms, bool *lost);
int pg_node_leave(struct store *st, int64_t now);
int pg_node_sweep(struct store *st, int64_t now, store_lost_fn *cb, void *ctx, int *nodes);
int pg_nodes_list(struct store *st, store_node_fn *cb, void *ctx);
int pg_cluster_note(struct store *st, const char *kind, const char *target, int64_t ref,
                    const char *payload, int64_t now);

#endif
