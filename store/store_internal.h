/*
 * store_internal.h -- what the store_*.c files share and nobody else sees: the handle, the table of
 * prepared statements, and the bind/step/error helpers. Only store/ includes <sqlite3.h>.
 */
#ifndef WSP_STORE_INTERNAL_H
#define WSP_STORE_INTERNAL_H

#include <sqlite3.h>

#include "store.h"
#include "store_copy.h"
#include "store_ops.h"

/* The SQLite backend's functions behind store_sqlite_ops (store.h has their contracts). */
void sq_set_lock_wait(struct store *st, int ms);
void sq_close(struct store *st);
const char *sq_last_error(const struct store *st);
int sq_schema_version(const struct store *st);
int sq_begin(struct store *st);
int sq_commit(struct store *st);
int sq_rollback(struct store *st);
bool sq_in_transaction(const struct store *st);
int sq_ping(struct store *st);
int sq_backup(struct store *st, const char *dest_path, int64_t *pages);
int sq_stats(struct store *st, struct store_stats *out);
void sq_wal_stats(struct store *st, struct store_wal_stats *out);
int sq_check_plans(struct store *st);
int sq_session_begin(struct store *st, const char *user, const char *remote_addr, const char *user_agent, const char *subprotocol, int64_t now, int64_t *id);
int sq_session_touch(struct store *st, int64_t id, int64_t now);
int sq_session_end(struct store *st, int64_t id, int64_t now, const char *reason);
int sq_session_end_orphans(struct store *st, int64_t now, const char *reason, int64_t *count);
int sq_session_get(struct store *st, int64_t id, struct store_session *out);
int sq_session_list(struct store *st, const struct store_session_filter *f, store_session_fn *cb, void *ctx);
int sq_session_count_active(struct store *st, const char *user, int64_t *count);
int sq_presence_set(struct store *st, const char *user, bool online, int connections, int64_t now);
int sq_presence_get(struct store *st, const char *user, bool *online, int *connections, int64_t *last_seen);
int sq_msg_insert(struct store *st, const struct store_msg *m, struct store_receipt *out);
int sq_msg_ack(struct store *st, const char *user, int64_t msg_id, int64_t session_id, int64_t now);
int sq_msg_ack_first(struct store *st, const char *user, int64_t msg_id, int64_t session_id, int64_t now, bool *first);
int sq_pending_direct(struct store *st, const char *user, int64_t after_id, int limit, store_msg_fn *cb, void *ctx);
int sq_history_direct(struct store *st, const char *user_a, const char *user_b, int64_t before_id, int limit, store_msg_fn *cb, void *ctx, bool *more);
int sq_history_room(struct store *st, const char *room, int64_t before_id, int limit, store_msg_fn *cb, void *ctx, bool *more);
int sq_msg_get(struct store *st, int64_t id, struct store_msg_info *out);
int sq_room_join(struct store *st, const char *room, const char *user, int64_t now, bool *joined);
int sq_room_join_via(struct store *st, const char *room, const char *user, int64_t now, enum store_via via, bool *joined);
int sq_room_add(struct store *st, const char *room, const char *user, int64_t now, bool *added);
int sq_room_member_via(struct store *st, const char *room, const char *user, enum store_via *via);
int sq_room_delete(struct store *st, const char *room, int64_t now, store_name_fn *cb, void *ctx);
int sq_rooms_list(struct store *st, const char *after, int limit, store_room_fn *cb, void *ctx, bool *more);
int sq_room_member_count(struct store *st, const char *room, int64_t *count);
int sq_user_conversations(struct store *st, const char *user, int64_t before_id, int limit, store_conversation_fn *cb, void *ctx, bool *more);
int sq_retention_step(struct store *st, int64_t cutoff, int64_t keep, int budget, int64_t *deleted);
int sq_user_erase(struct store *st, const char *user, int64_t now, int64_t *tombstoned);
int sq_atomic_begin(struct store *st, bool *own_txn);
int sq_atomic_end(struct store *st, bool own_txn, int rc);
int sq_msg_delete(struct store *st, int64_t id, int64_t now);
int sq_room_leave(struct store *st, const char *room, const char *user);
int sq_room_is_member(struct store *st, const char *room, const char *user, bool *member);
int sq_room_cursor(struct store *st, const char *room, const char *user, int64_t *cursor);
int sq_room_members(struct store *st, const char *room, store_name_fn *cb, void *ctx);
int sq_user_rooms(struct store *st, const char *user, store_name_fn *cb, void *ctx);
int sq_users_sharing_room(struct store *st, const char *user, store_name_fn *cb, void *ctx);
int sq_room_replay(struct store *st, const char *room, const char *user, int limit, store_msg_fn *cb, void *ctx, bool *truncated);
int sq_outbox_add(struct store *st, const char *user, const char *type, const char *payload, int64_t now, int64_t max_queued, int64_t *id);
int sq_outbox_scan(struct store *st, int64_t now, int max_rows, store_event_fn *cb, bool (*skip)(void *ctx, int64_t id), void *ctx);
int sq_outbox_scan_after(struct store *st, int64_t now, int64_t *after, int max_rows, store_event_fn *cb, bool (*skip)(void *ctx, int64_t id), void *ctx);
uint64_t sq_outbox_replays(const struct store *st);
int sq_outbox_delivered(struct store *st, const int64_t *ids, size_t n);
int sq_outbox_retry(struct store *st, const int64_t *ids, size_t n, int64_t now, int64_t next_at, int64_t dead_before, const char *error, int *dead);
int sq_outbox_expire(struct store *st, int64_t dead_before, int64_t now, int limit, int64_t *count);
int sq_outbox_dead_list(struct store *st, int64_t after_id, int limit, store_event_fn *cb, void *ctx);
int sq_outbox_replay(struct store *st, int64_t id, int limit, int64_t now, int64_t *count);
int sq_outbox_counts(struct store *st, struct store_outbox_counts *out);
int sq_outbox_owner(struct store *st, bool *mine);
int sq_commit_start(struct store *st, int *fd);
int sq_commit_poll(struct store *st, enum store_poll how, bool *done);
int sq_node_join(struct store *st, const char *name, int64_t boot, int64_t lease_ms, int64_t now,
                 int64_t *node_id);
int sq_node_renew(struct store *st, int64_t now, int64_t lease_ms, bool *lost);
int sq_node_leave(struct store *st, int64_t now);
int sq_node_sweep(struct store *st, int64_t now, store_lost_fn *cb, void *ctx, int *nodes);
int sq_nodes_list(struct store *st, store_node_fn *cb, void *ctx);
int sq_cluster_note(struct store *st, const char *kind, const char *target, int64_t ref,
                    const char *payload, int64_t now);

/* Every statement the store runs, prepared once at open. */
enum store_stmt_id {
    /* store.c */
    STMT_BEGIN,
    STMT_COMMIT,
    STMT_ROLLBACK,
    STMT_SAVEPOINT,
    STMT_RELEASE,
    STMT_ROLLBACK_TO,
    STMT_PING,
    STMT_STATS,
    /* store_session.c */
    STMT_SESSION_INSERT,
    STMT_SESSION_TOUCH,
    STMT_SESSION_END,
    STMT_SESSION_END_ORPHANS,
    STMT_SESSION_GET,
    STMT_SESSION_LIST_USER,
    STMT_SESSION_LIST_SINCE,
    STMT_SESSION_LIST_ACTIVE,
    STMT_SESSION_LIST_ALL,
    STMT_SESSION_COUNT_ACTIVE,
    STMT_SESSION_COUNT_ACTIVE_USER,
    /* store_presence.c */
    STMT_PRESENCE_SET,
    STMT_PRESENCE_GET,
    STMT_PRESENCE_RESET_ORPHANS,
    /* store_msg.c */
    STMT_MSG_INSERT,
    STMT_MSG_BY_CID,
    STMT_MSG_TARGET,
    STMT_MSG_DELIVERED,
    STMT_MSG_PENDING,
    STMT_MSG_HISTORY_DIRECT,
    STMT_MSG_HISTORY_ROOM,
    STMT_MSG_GET,
    /* store_room.c */
    STMT_ROOM_JOIN,
    STMT_ROOM_LEAVE,
    STMT_ROOM_CURSOR,
    STMT_ROOM_ACK,
    STMT_ROOM_MEMBERS,
    STMT_USER_ROOMS,
    STMT_USERS_SHARING,
    STMT_ROOM_REPLAY_FLOOR,
    STMT_ROOM_REPLAY,

    STMT_ROOM_TOUCH,
    STMT_DM_TOUCH,
    STMT_ROOM_ADD,
    STMT_ROOM_VIA,
    STMT_ROOM_DELETE_MEMBERS,
    STMT_ROOM_DELETE,
    STMT_ROOM_TOMBSTONE,
    STMT_ROOMS_LIST,
    STMT_ROOM_MEMBER_COUNT,
    STMT_CONV_ROOMS,
    STMT_CONV_DMS,
    STMT_UNREAD_ROOM,
    STMT_UNREAD_DM,
    STMT_MSG_DELETE,
    /* store_outbox.c */
    STMT_OUTBOX_ADD,
    STMT_OUTBOX_SPAN,
    STMT_OUTBOX_SCAN,
    STMT_OUTBOX_DELETE,
    STMT_OUTBOX_DELETE_RANGE,
    STMT_OUTBOX_DELETE_DEAD,
    STMT_OUTBOX_RETRY,
    STMT_OUTBOX_BURY,
    STMT_OUTBOX_EXPIRED,
    STMT_OUTBOX_DEAD_LIST,
    STMT_OUTBOX_REPLAY_ONE,
    STMT_OUTBOX_REPLAY_ALL,
    STMT_OUTBOX_UNDEAD_ALL,
    STMT_OUTBOX_COUNTS,
    /* store_retention.c */
    STMT_RET_AGE,
    STMT_RET_ROOMS,
    STMT_RET_ROOM_DEL,
    STMT_RET_DMS,
    STMT_RET_DM_DEL,
    STMT_ERASE_SENT,
    STMT_ERASE_RECEIVED,
    STMT_ERASE_MEMBERS,
    STMT_ERASE_DM_PEERS,
    STMT_ERASE_DMS,
    STMT_ERASE_SESSIONS,
    STMT_ERASE_PRESENCE,
    STMT_COUNT
};

struct store_sql {
    enum store_stmt_id id;
    bool may_scan; /* store_check_plans accepts a table scan in its plan (commented where set) */
    const char *sql;
};

/* Per-file tables, each ended by an entry with sql == NULL. */
extern const struct store_sql store_sql_core[];
extern const struct store_sql store_sql_session[];
extern const struct store_sql store_sql_presence[];
extern const struct store_sql store_sql_msg[];
extern const struct store_sql store_sql_room[];
extern const struct store_sql store_sql_conv[];
extern const struct store_sql store_sql_outbox[];
extern const struct store_sql store_sql_retention[];

/* WAL size after a commit at which the checkpoint thread is woken (in frames of the file's pages). */
#define STORE_CKPT_BYTES (16 << 20)

/*
 * Page size of a database this server creates (an existing file keeps its own). 8 KiB rather than
 * SQLite's 4 KiB: a group commit of durable messages dirties the same number of index leaves either
 * way (one per sender or recipient range), but with half as many table pages, page splits and WAL
 * frames, each written with a pwrite of its own and later copied back by the checkpoint. Measured
 * on the persist load (8 interleaved pairs): 2-25 % more durable DMs per second, never fewer;
 * 16 KiB was 10-25 % slower (every dirty leaf writes 16 KiB to the WAL).
 */
#define STORE_PAGE_SIZE 8192

struct store_ckpt;
struct conv_pending;

struct store {
    const struct store_ops *ops; /* first: store_ops_of() reads it */
    sqlite3 *db;
    struct store_ckpt *ckpt; /* background checkpointer; NULL: SQLite's autocheckpoint (or none) */
    bool readonly;
    bool txn; /* inside store_begin .. store_commit/rollback */
    int savepoints; /* store_atomic_begin savepoints open inside the transaction */
    int schema_version;
    int last_rc; /* SQLite code of the last store_fail, to explain failures at open */
    int lock_wait_ms;         /* store_set_lock_wait; 0: SQLite's busy_timeout */
    int64_t busy_since_ms;    /* monotonic: when the current wait for a lock began */
    int64_t locked_until_ms;  /* monotonic: until then, a lock fails a call at once */
    sqlite3_stmt *stmt[STMT_COUNT];
    /* store_retention_step's place in the walk over conversations: the last room, the last
     * (user, peer) of dm_conversations visited; NULL: from the start. */
    char *ret_room;
    char *ret_dm_user, *ret_dm_peer;
    /* The first outbox id added in the open transaction (0: none): scans stop before it, so the
     * sender never posts an event whose transaction may still roll back. */
    int64_t outbox_unseen_from;
    /* Inserts left before store_outbox_add must look at the outbox's span again (its bound). */
    int64_t outbox_room, outbox_room_bound; /* for this max_queued */
    uint64_t outbox_replays;                /* store_outbox_replays */
    /* Conversation touches of the open group commit not written yet (store_conv.c): one per room
     * and per pair of users, written by store_conv_flush. Empty outside store_begin .. commit and
     * while a savepoint is open. */
    struct conv_pending *conv_pending;
    char err[512];
};

/* A transaction ended (committed or rolled back): every outbox row left is visible to scans. */
void store_outbox_txn_over(struct store *st);

/*
 * The conversation list's state for a new message (store_conv.c): the room's or both sides' last id
 * and message count. Inside a group commit (store_begin, no savepoint open) it only notes the touch
 * in memory, merged with the others of the same room or pair of users; elsewhere it writes at once.
 */
int store_conv_touch(struct store *st, const struct store_msg *m, int64_t id);

/*
 * Write the noted touches (max last_id, summed counts). Called before COMMIT, before a savepoint
 * opens, and at the top of every function that reads or writes rooms or dm_conversations (or
 * deletes messages: the count trigger). A no-op when nothing is noted; on failure the touches not
 * written stay noted (the commit then fails). store_conv_drop forgets them: the transaction is over
 * without them (rollback, failed commit).
 */
int store_conv_flush(struct store *st);
void store_conv_drop(struct store *st);

/* A rooms row for room (created now if missing). */
int store_room_ensure(struct store *st, const char *room, int64_t now);

/* "join", "claim" or "api". */
const char *store_via_name(enum store_via via);

/* The columns store_msg_from_row reads, in its order. */
#define STORE_MSG_COLS "id, sender, to_user, room, body, cid, created_at, via"
#define STORE_MSG_NCOLS 8

/* Record sqlite's error for rc ("what: message") and return the matching STORE_ERR_*. */
int store_fail(struct store *st, int rc, const char *what);

/* Record a message of our own and return code. */
int store_failf(struct store *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A bind failed (no memory, too big): record it, reset s, return STORE_ERR_*. */
int store_bind_fail(struct store *st, sqlite3_stmt *s, const char *what);

/* Reset and clear bindings: every path out of a statement goes through here. */
void store_stmt_done(sqlite3_stmt *s);

/* NULL binds SQL NULL. The string must outlive the step (SQLITE_STATIC). */
int store_bind_text(sqlite3_stmt *s, int i, const char *v);

/* Column as text, NULL for SQL NULL. */
const char *store_col_text(sqlite3_stmt *s, int i);

/* Fails (without running anything) when a write cannot go on: readonly, or a group-commit
 * transaction that SQLite has already rolled back after an error. */
int store_write_check(struct store *st);

/* Run a write statement with no result rows to completion; done either way. */
int store_exec_stmt(struct store *st, sqlite3_stmt *s, const char *what);



/* Fill m from columns col0.. in STORE_MSG_COLS order (borrowed strings). */
void store_msg_from_row(sqlite3_stmt *s, int col0, struct store_msg *m);

/*
 * Step s (already bound) and hand each row as a message to cb, at most emit rows; rows past emit are
 * only counted into *rows (may be NULL). Returns 0, cb's stop value, or STORE_ERR_*. Done either way.
 */
int store_each_msg(struct store *st, sqlite3_stmt *s, int emit, store_msg_fn *cb, void *ctx,
                   int *rows, const char *what);

/* Same for one-column name rows. */
int store_each_name(struct store *st, sqlite3_stmt *s, store_name_fn *cb, void *ctx, const char *what);

/* Start the checkpoint thread for st->db (read-write, WAL); -1 if it cannot (then SQLite's own
 * autocheckpoint stays in charge). store_ckpt_stop joins it; a no-op when none runs. */
int store_ckpt_start(struct store *st, const char *path, const struct store_opts *o);
void store_ckpt_stop(struct store *st);

/* The VFS read-write handles open their files with (store_vfs.c): the default one, but each WAL
 * frame goes out in one pwrite. store_vfs_register adds it once per process; -1 if it cannot (then
 * the default VFS is used). */
#define STORE_VFS_NAME "wsp-wal"
int store_vfs_register(void);

/* Argument checks shared by the files: non-NULL, non-empty. */
bool store_name_ok(const char *s);

#endif
