/*
 * store_internal.h -- what the store_*.c files share and nobody else sees: the handle, the table of
 * prepared statements, and the bind/step/error helpers. Only store/ includes <sqlite3.h>.
 */
#ifndef WSP_STORE_INTERNAL_H
#define WSP_STORE_INTERNAL_H

#include <sqlite3.h>

#include "store.h"

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

/* WAL size (frames = pages) after a commit at which the checkpoint thread is woken: 16 MiB. */
#define STORE_CKPT_FRAMES 4096

struct store_ckpt;
struct conv_pending;

struct store {
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
