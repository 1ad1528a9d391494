/*
 * store.h -- wsproxy's durable state behind a small C API: sessions, presence, messages with their
 * delivery state, room memberships and the events outbox, in one SQLite file (WAL). No SQLite types leak out of here.
 */
#ifndef WSP_STORE_H
#define WSP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Conventions for every function below:
 * - Return 0 on success or a negative STORE_ERR_*; store_last_error(st) then has the detailed text
 *   (SQLite's message included). The store never logs; the caller decides what to say.
 * - Times are int64 milliseconds since the epoch, always passed in by the caller.
 * - Strings handed to callbacks are borrowed: valid only until the callback returns. A callback returns
 *   0 to go on or a positive value to stop the walk; the function then returns that value.
 * - Write functions work inside store_begin()/store_commit() and outside (each then commits on its
 *   own). A function that writes several rows is atomic either way.
 * - One handle is used by one thread at a time (the event loop); it may be called from libevent callbacks.
 */

struct store;

enum store_err {
    STORE_OK = 0,
    STORE_ERR_IO = -1,         /* SQLite failed: I/O, disk full, corrupt file, ... */
    STORE_ERR_NOTFOUND = -2,   /* no such row (or nothing to change) */
    STORE_ERR_BUSY = -3,       /* the database stayed locked longer than busy_timeout */
    STORE_ERR_CONSTRAINT = -4, /* the row breaks a schema rule */
    STORE_ERR_READONLY = -5,   /* write on a handle opened read-only */
    STORE_ERR_SCHEMA = -6,     /* schema version unknown to this binary, or a migration failed */
    STORE_ERR_INVALID = -7,    /* bad argument (NULL/empty name, both or neither recipient, limit < 1) */
    STORE_ERR_NOMEM = -8,
    STORE_ERR_MISUSE = -9,     /* store_begin inside a transaction, store_commit outside one */
    STORE_ERR_OPEN = -10,      /* the file could not be opened, or is not an SQLite database */
    STORE_ERR_FULL = -11       /* a bounded table (the events outbox) is at its configured size */
};

enum store_sync { STORE_SYNC_NORMAL, STORE_SYNC_FULL };

/* Where the data lives: one SQLite file (the default), or a PostgreSQL database shared by nodes. */
enum store_backend { STORE_BACKEND_SQLITE, STORE_BACKEND_POSTGRESQL };

struct store_opts {
    enum store_sync synchronous; /* NORMAL: a commit survives a process crash, FULL: also power loss */
    int busy_timeout_ms;         /* how long to wait for another process's lock; 0 = fail at once */
    bool readonly;               /* for wsctl: no writes, no migrations, no WAL switch */
    int cache_mib;               /* SQLite page cache; 0 = STORE_CACHE_MIB_DEFAULT */
    enum store_backend backend;  /* SQLITE: path is a file; POSTGRESQL: path is a libpq conninfo */
};

/* Big enough that a group commit of ~100k messages never spills dirty pages to the WAL mid-way and
 * the hot index pages of a few million messages stay in memory. */
#define STORE_CACHE_MIB_DEFAULT 32

/* After a call gave up on a lock, how long later calls fail at once instead of waiting again. */
#define STORE_LOCKED_BACKOFF_MS 100

/* "sqlite" or "postgresql": the backend st was opened with. */
const char *store_backend_name(const struct store *st);

/* Static text for a STORE_ERR_* code ("not found", ...). */
const char *store_strerror(int err);

/*
 * Open (creating if needed, unless readonly) the database at path, which must be a plain file name;
 * ":memory:" works too (no WAL then). The parent directory must exist: the caller creates it. opts NULL
 * means { NORMAL, 5000 ms, read-write, default cache }. Read-write: sets WAL, synchronous, busy_timeout, foreign_keys,
 * then applies the compiled-in migrations newer than PRAGMA user_version, each in its own transaction.
 * Readonly: never writes the file; the schema version must equal the newest compiled-in one. A user who
 * may read the file but not create its -shm file beside it can still read a database the server left
 * checkpointed (no -wal file): it is then opened immutable. Then prepares every statement.
 * The first call in a process, which must come before any other SQLite use and before threads touch
 * SQLite, turns SQLite's global memory statistics off (a mutex per allocation).
 * On success *out is the handle (free it with store_close). On failure returns STORE_ERR_* with a
 * complete message in err (errlen bytes, may be NULL), naming the path, e.g.
 * "database schema version 7 is newer than this wsproxy (knows up to 3); upgrade wsproxy".
 */
int store_open(struct store **out, const char *path, const struct store_opts *opts, char *err,
               size_t errlen);

/*
 * Bound how long one call on st may wait for another process's write lock (the event loop's handle
 * must never sleep long): after ms of waiting the call fails with STORE_ERR_BUSY, and for the next
 * STORE_LOCKED_BACKOFF_MS every call that meets the lock fails at once. Replaces busy_timeout.
 */
void store_set_lock_wait(struct store *st, int ms);

/*
 * Who waits when a call must wait for the database's socket (PostgreSQL; SQLite never does).
 * Without one, the call poll()s, bounded by the wait above. The event loop's gate (net/gate.h)
 * sets one so that the waiting code parks on the loop instead:
 *   wait:  until fd is ready for events (POLLIN/POLLOUT) or timeout_ms passed: 1 ready,
 *          0 timed out, -1 error;
 *   enter: called before a call uses the connection, so that a call from elsewhere never meets
 *          another one half-way (it lets that one finish first).
 * NULL removes it.
 */
struct store_waiter {
    int (*wait)(void *ctx, int fd, short events, int timeout_ms);
    void (*enter)(void *ctx);
    void *ctx;
};
void store_set_waiter(struct store *st, const struct store_waiter *w);

/* Finalize everything and close. An open transaction is rolled back. store_close(NULL) is a no-op. */
void store_close(struct store *st);

/* Text of the most recent failure on st ("" if none yet). Valid until the next call on st. */
const char *store_last_error(const struct store *st);

/* PRAGMA user_version of the open database (the last migration applied). */
int store_schema_version(const struct store *st);

/* Newest migration compiled into this binary. */
int store_schema_latest(void);

/*
 * Group commit. store_begin opens a write transaction (BEGIN IMMEDIATE); nesting is STORE_ERR_MISUSE.
 * store_commit makes every write since store_begin durable at once (to the level of opts.synchronous);
 * only after it returns 0 may receipts be sent. If it fails, nothing since store_begin is stored and the
 * transaction is closed. If a write inside the transaction fails with an I/O-type error, SQLite may have
 * dropped the whole transaction: later writes then fail too and store_commit reports it.
 */
int store_begin(struct store *st);
int store_commit(struct store *st);
int store_rollback(struct store *st); /* no-op (0) when no transaction is open */

/*
 * The group commit without waiting (PostgreSQL; SQLite commits at once). store_commit_start ends
 * the transaction as store_commit does, but returns 1 when the answer is still on its way: *fd is
 * then the socket to watch for reading, and store_commit_poll tells when it is done (*done) and how
 * it went (its return value, as store_commit's). Otherwise it returns store_commit's result.
 * Until the answer is in, the handle still works: any other call first waits for it (bounded).
 */
enum store_poll { STORE_POLL_NOW, STORE_POLL_WAIT, STORE_POLL_EXPIRED };
int store_commit_start(struct store *st, int *fd);
int store_commit_poll(struct store *st, enum store_poll how, bool *done);
bool store_in_transaction(const struct store *st);

/* Trivial query for /healthz: 0 when the database answers. */
int store_ping(struct store *st);

/*
 * Copy the whole database into dest_path (created, or an existing empty file) with SQLite's online
 * backup API: one consistent committed state, while the server keeps writing. Works on a read-only
 * handle. *pages (may be NULL) gets the number of pages copied. Returns 0 or a STORE_ERR_*.
 */
int store_backup(struct store *st, const char *dest_path, int64_t *pages);

struct store_stats {
    int64_t sessions_active;
    int64_t sessions_total;
    int64_t users_online;
    int64_t messages;       /* stored messages, direct and room (counts rows: O(n), admin use only) */
    int64_t pending_direct; /* direct messages no connection of the recipient has acked */
    int64_t rooms;          /* rooms with at least one member */
};

int store_stats(struct store *st, struct store_stats *out);

/*
 * WAL checkpoints run on a thread of the store's own (read-write handles on a file), so commits on
 * the caller's thread only append to the WAL. For /metrics; all zero when no thread runs.
 */
struct store_wal_stats {
    bool background;              /* the checkpoint thread is running */
    int wal_frames;               /* WAL size in pages after the last commit */
    uint64_t checkpoints;         /* checkpoint runs */
    uint64_t checkpoint_failures; /* runs that failed (not counting "busy") */
    char last_error[128];         /* text of the last failure, "" if none */
};

void store_wal_stats(struct store *st, struct store_wal_stats *out);

/*
 * Self-check: runs EXPLAIN QUERY PLAN on every prepared statement and fails (STORE_ERR_SCHEMA, text
 * naming the statement and plan line) if one that must use an index would scan a table. A few
 * statements scan by design (admin counts, the newest-first session list that stops at its limit).
 */
int store_check_plans(struct store *st);

/* ---- Sessions: one row per connection ---- */

enum store_session_state { STORE_SESSIONS_ANY, STORE_SESSIONS_ACTIVE, STORE_SESSIONS_ENDED };

struct store_session {
    int64_t id;
    const char *user;
    const char *remote_addr;
    const char *user_agent;  /* NULL if the client sent none */
    const char *subprotocol; /* NULL if none was negotiated */
    int64_t connected_at;
    int64_t last_seen_at;
    bool ended;
    int64_t ended_at;       /* 0 while active */
    const char *end_reason; /* NULL while active */
    int64_t node;           /* cluster: the node (store_node_join's id) it was on; 0 otherwise */
    char *owned_;           /* store_session_get only: the block the strings live in */
};

typedef int store_session_fn(void *ctx, const struct store_session *s);

/* New active session; *id (never reused) goes in the welcome frame and the API. */
int store_session_begin(struct store *st, const char *user, const char *remote_addr,
                        const char *user_agent, const char *subprotocol, int64_t now, int64_t *id);

/* last_seen_at = max(last_seen_at, now). NOTFOUND if there is no such session. */
int store_session_touch(struct store *st, int64_t id, int64_t now);

/*
 * End an active session: ended_at = now, end_reason = reason (e.g. "client_close"). last_seen_at is not
 * changed (the last frame may be older than the end: touch first). The first end wins: NOTFOUND if the
 * session does not exist or has already ended.
 */
int store_session_end(struct store *st, int64_t id, int64_t now, const char *reason);

/*
 * At start, after a crash: end every session still active with (now, reason) and set every online user
 * offline with 0 connections; last_seen keeps its value or moves up to the newest last_seen_at of that
 * user's orphaned sessions. Atomic. *count (may be NULL) = sessions ended.
 */
int store_session_end_orphans(struct store *st, int64_t now, const char *reason, int64_t *count);

/*
 * Copy one session into *out (NOTFOUND if none). *out owns its strings: release them with
 * store_session_release(out), also after a failure (then a no-op).
 */
int store_session_get(struct store *st, int64_t id, struct store_session *out);
void store_session_release(struct store_session *s);

struct store_session_filter {
    const char *user;               /* NULL: every user */
    enum store_session_state state; /* any, active or ended */
    int64_t since_ms;               /* connected_at >= since_ms; 0: no bound */
    int64_t before_id;              /* id < before_id (paging); 0: from the newest */
    int limit;                      /* >= 1 */
};

/* Sessions matching f, newest (highest id) first, at most f->limit. */
int store_session_list(struct store *st, const struct store_session_filter *f, store_session_fn *cb,
                       void *ctx);

/* Active sessions of user, or of everyone when user is NULL. */
int store_session_count_active(struct store *st, const char *user, int64_t *count);

/* ---- Presence: one row per user ever seen ---- */

/* Upsert: state and connection count as given, last_seen = max(last_seen, now). */
int store_presence_set(struct store *st, const char *user, bool online, int connections, int64_t now);

/* NOTFOUND for a user never seen. Out pointers may be NULL. */
int store_presence_get(struct store *st, const char *user, bool *online, int *connections,
                       int64_t *last_seen);

/* ---- Messages ---- */

struct store_msg {
    int64_t id;
    const char *sender;
    const char *to_user; /* direct message: the recipient; else NULL */
    const char *room;    /* room message: the room; else NULL */
    const char *body;    /* JSON text, stored as given */
    const char *cid;     /* client id for idempotent sends; may be NULL */
    int64_t created_at;
    const char *via;     /* "api" for a backend push (a marker clients cannot set); else NULL */
};

typedef int store_msg_fn(void *ctx, const struct store_msg *m);

struct store_receipt {
    int64_t id;
    int64_t created_at;
    bool duplicate; /* (sender, cid) was stored before: id/created_at are the first message's */
};

/*
 * Store m (m->id is ignored, m->created_at is the time to record). Exactly one of to_user/room must be
 * set, else STORE_ERR_INVALID. A direct message starts pending (undelivered). With a cid that this
 * sender used before, nothing is stored and *out describes the first message, duplicate = true. The
 * caller checks room membership before.
 */
int store_msg_insert(struct store *st, const struct store_msg *m, struct store_receipt *out);

/*
 * user has message msg_id (from session session_id, 0 if unknown):
 * - a direct message to user: marks it delivered; the first ack wins (its time and session stay), a
 *   later ack returns 0 and changes nothing;
 * - a message in a room user belongs to: the member's cursor moves to max(cursor, msg_id);
 * - anything else (no such message, someone else's message, not a member): STORE_ERR_NOTFOUND.
 */
int store_msg_ack(struct store *st, const char *user, int64_t msg_id, int64_t session_id,
                  int64_t now);
/* The same; *first is true when this ack delivered a direct message (its first ack). */
int store_msg_ack_first(struct store *st, const char *user, int64_t msg_id, int64_t session_id,
                        int64_t now, bool *first);

/* Undelivered direct messages to user with id > after_id, in id order, at most limit (>= 1). */
int store_pending_direct(struct store *st, const char *user, int64_t after_id, int limit,
                         store_msg_fn *cb, void *ctx);

/*
 * Conversation of user_a and user_b (both directions), newest first, ids < before_id (0: from the
 * newest), at most limit. *more = older messages exist (meaningful when the function returns 0).
 */
int store_history_direct(struct store *st, const char *user_a, const char *user_b, int64_t before_id,
                         int limit, store_msg_fn *cb, void *ctx, bool *more);

/* Same for a room. Membership is the caller's check. */
int store_history_room(struct store *st, const char *room, int64_t before_id, int limit,
                       store_msg_fn *cb, void *ctx, bool *more);

struct store_msg_info {
    struct store_msg msg;
    bool direct;             /* false: a room message (no per-message delivery state) */
    bool delivered;          /* direct only: acked by a connection of the recipient */
    int64_t delivered_at;    /* 0 unless delivered */
    int64_t delivered_by;    /* session id of the first ack; 0 unless delivered (or unknown) */
    bool deleted;            /* a tombstone: deleted through the API (body is null) */
    char *owned_;            /* the block the strings live in */
};

/* Copy one message with its delivery state into *out (NOTFOUND if none); store_msg_info_release after. */
int store_msg_get(struct store *st, int64_t id, struct store_msg_info *out);
void store_msg_info_release(struct store_msg_info *m);

/* ---- Rooms ---- */

typedef int store_name_fn(void *ctx, const char *name);

/*
 * Join: a new member's cursor is the room's newest message id, so no backlog is replayed. Joining again
 * keeps the member's cursor and joined_at. *joined (may be NULL) = this call added the member.
 */
int store_room_join(struct store *st, const char *room, const char *user, int64_t now, bool *joined);

/* How a membership was granted: a join (open room), a join the token's claim allowed, the backend. */
enum store_via { STORE_VIA_JOIN, STORE_VIA_CLAIM, STORE_VIA_API };

/* store_room_join recording how it was granted (a repeated join changes nothing, the first stays). */
int store_room_join_via(struct store *st, const char *room, const char *user, int64_t now,
                        enum store_via via, bool *joined);

/* ---- rooms administration and conversation lists (store_conv.c) ---- */

/*
 * The backend adds user to room: a new member (cursor at the room's newest message, *added true) or
 * an existing one whose grant becomes STORE_VIA_API (so a token refresh cannot remove it).
 */
int store_room_add(struct store *st, const char *room, const char *user, int64_t now, bool *added);

/* How user's membership of room was granted; STORE_ERR_NOTFOUND if user is not a member. */
int store_room_member_via(struct store *st, const char *room, const char *user, enum store_via *via);

/*
 * Delete a room: every membership and the room's row go, its messages become tombstones (gone from
 * history, ids kept). cb (may be NULL) gets each member removed, before the rows go.
 */
int store_room_delete(struct store *st, const char *room, int64_t now, store_name_fn *cb, void *ctx);

struct store_room_info {
    const char *name;
    int64_t created_at;
    int64_t last_id; /* newest message, 0: none */
    int64_t members;
};
typedef int store_room_fn(void *ctx, const struct store_room_info *r);
/* Rooms in name order after `after` ("" = from the first), at most limit; *more if others follow. */
int store_rooms_list(struct store *st, const char *after, int limit, store_room_fn *cb, void *ctx,
                     bool *more);
/* Members of a room (0 when it does not exist). */
int store_room_member_count(struct store *st, const char *room, int64_t *count);

/* One entry of a user's conversation list. */
struct store_conversation {
    bool is_room;
    const char *peer;       /* the room, or the other user */
    struct store_msg last;  /* the newest message (deleted ones keep their place: body "null") */
    bool last_deleted;
    bool last_gone;         /* retention deleted the newest message: only last.id is set (strings
                             * NULL); the conversation keeps its place in the list */
    int64_t unread;         /* room: others' messages after the member's cursor; direct: not acked.
                             * Counted up to STORE_UNREAD_MAX. */
};
#define STORE_UNREAD_MAX 1000
typedef int store_conversation_fn(void *ctx, const struct store_conversation *c);

/*
 * user's rooms (with at least one message) and direct conversations, newest last message first,
 * those with last message id < before_id (0: from the newest), at most limit; *more if others
 * follow (page on with before_id = the last one's last.id). Reads state kept by the message insert
 * and one index range per entry: never all messages.
 */
int store_user_conversations(struct store *st, const char *user, int64_t before_id, int limit,
                             store_conversation_fn *cb, void *ctx, bool *more);

/* ---- retention and erasure (store_retention.c) ---- */

/*
 * One retention step, at most budget (>= 1) rows deleted, each statement short (one index range):
 * - cutoff > 0: messages created before cutoff (ms), from the oldest id on;
 * - keep > 0: the oldest messages of each room and direct conversation beyond its newest keep. The
 *   conversations are visited a slice at a time from a position the handle keeps, so a step never
 *   reads them all; a sweep over every conversation takes several steps. Each conversation's size is
 *   the msg_count its row keeps; it can only be too low (a room deleted and used again, a user erased
 *   and written to again: old rows not counted), and then more than keep stay, never fewer.
 * The newest message overall is never deleted: message ids are max(id)+1, so deleting it would let
 * the next message reuse its id. rooms/dm_conversations rows stay (last_id may name a deleted
 * message: store_user_conversations marks it last_gone). Rows are deleted for good, tombstones too.
 * *deleted gets the rows deleted. Inside a group commit or on its own, like every write.
 */
int store_retention_step(struct store *st, int64_t cutoff, int64_t keep, int budget,
                         int64_t *deleted);

/*
 * Erase user: every message they sent (direct or room) or received directly becomes a tombstone
 * (body null, deleted_at = now; ids kept), and their room memberships, the dm_conversations rows of
 * both sides of their conversations, their sessions rows and their presence row are deleted. Atomic.
 * A user the store never saw is no error (nothing to do). *tombstoned (may be NULL) = messages changed.
 */
int store_user_erase(struct store *st, const char *user, int64_t now, int64_t *tombstoned);

/*
 * Make the writes between these two all-or-nothing: a SAVEPOINT inside an open transaction, else a
 * transaction of its own (*own_txn). store_atomic_end keeps them when rc == 0, else undoes them;
 * it returns rc, or the error of keeping them.
 */
int store_atomic_begin(struct store *st, bool *own_txn);
int store_atomic_end(struct store *st, bool own_txn, int rc);

/* Tombstone message id (body becomes null, gone from history and replay; the id stays used). */
int store_msg_delete(struct store *st, int64_t id, int64_t now);

/* Leave (the cursor is forgotten; a later join starts at the newest message). NOTFOUND if not a member. */
int store_room_leave(struct store *st, const char *room, const char *user);

int store_room_is_member(struct store *st, const char *room, const char *user, bool *member);

/* The member's cursor (last acked message id). NOTFOUND if not a member. */
int store_room_cursor(struct store *st, const char *room, const char *user, int64_t *cursor);

/* Members of room / rooms of user, in name order. */
int store_room_members(struct store *st, const char *room, store_name_fn *cb, void *ctx);
int store_user_rooms(struct store *st, const char *user, store_name_fn *cb, void *ctx);

/* Distinct other users sharing at least one room with user (who to tell about user's presence). */
int store_users_sharing_room(struct store *st, const char *user, store_name_fn *cb, void *ctx);

/*
 * Replay on connect: room messages after the member's cursor, in id order. If more than limit are
 * waiting, only the newest limit are given and *truncated = true; the older ones stay reachable through
 * store_history_room (before = the first replayed id). Read-only: the cursor moves only on acks.
 * NOTFOUND if user is not a member.
 */
int store_room_replay(struct store *st, const char *room, const char *user, int limit,
                      store_msg_fn *cb, void *ctx, bool *truncated);

/* ---- Events outbox: events for the app backend, delivered by the sender (proxy/chat/events.c) ---- */

struct store_event {
    int64_t id;          /* unique, never reused; also the delivery order of a user's events */
    const char *user;    /* whose event: delivery is in id order per user */
    const char *type;    /* "session.opened", ... */
    int64_t created_at;
    const char *payload; /* JSON object text */
    int attempts;        /* failed deliveries so far */
    int64_t queued_at;   /* entered the queue (a replay restarts it); max age counts from here */
    int64_t next_at;     /* queued: due from then on (a retry's backoff); dead: when it died */
    const char *last_error; /* why the last attempt failed; NULL if none */
};

typedef int store_event_fn(void *ctx, const struct store_event *e);

/*
 * Queue an event (inside the caller's transaction: the change it describes commits with it).
 * max_queued > 0 bounds the queue: STORE_ERR_FULL when the span from the oldest queued id to the
 * newest id already reaches it (an upper bound of the queued count, exact while delivery keeps up;
 * two rowid lookups). *id (may be NULL) = the new event's id.
 */
int store_outbox_add(struct store *st, const char *user, const char *type, const char *payload,
                     int64_t now, int64_t max_queued, int64_t *id);

/* What a scan callback answers for an event. */
enum {
    STORE_SCAN_TAKE = 0, /* taken: go on */
    STORE_SCAN_SKIP = 1, /* not taken, nor any later event of its user in this scan */
    STORE_SCAN_STOP = 2  /* not taken: end the scan */
};

/*
 * The sender's read: queued events in id order, at most max_rows rows looked at. An event not due
 * yet (next_at > now, a retry's backoff) is not shown and holds back its user's later events, as
 * does an event cb answers STORE_SCAN_SKIP for (the sender's own lease: its user has a batch in
 * flight). Events added in the transaction still open are not shown: what cb sees is committed.
 * skip (may be NULL) passes over an event by id alone, cheaply (the caller's events in flight; the
 * caller still answers SKIP for their users' later events). cb gets borrowed strings. Not a write:
 * the lease is the caller's (a crash only sends again).
 */
int store_outbox_scan(struct store *st, int64_t now, int max_rows, store_event_fn *cb,
                      bool (*skip)(void *ctx, int64_t id), void *ctx);

/*
 * The same, from the events with id > *after only: rows at or below it are the caller's (in
 * flight). On return *after has moved over the leading rows of this scan that skip passed over or
 * cb took, so the next scan does not read them again. The caller lowers it when a batch fails
 * (those events stay queued) and starts again from 0 when store_outbox_replays changed.
 */
int store_outbox_scan_after(struct store *st, int64_t now, int64_t *after, int max_rows,
                            store_event_fn *cb, bool (*skip)(void *ctx, int64_t id), void *ctx);

/* How many replays this store made (each may bring back ids below a scan's *after). */
uint64_t store_outbox_replays(const struct store *st);

/* The backend took these events: deleted (from the dead letters too, had one died in flight). */
int store_outbox_delivered(struct store *st, const int64_t *ids, size_t n);

/*
 * Delivery failed: each queued event of ids gets attempts + 1 and is due again at next_at with
 * error as last_error, or moves to the dead letters (at now) when it was queued before dead_before.
 * *dead (may be NULL) = events that went dead.
 */
int store_outbox_retry(struct store *st, const int64_t *ids, size_t n, int64_t now, int64_t next_at,
                       int64_t dead_before, const char *error, int *dead);

/*
 * Queued events queued before dead_before move to the dead letters (at now, "max age"): at most
 * limit, among the oldest 8 x limit by id (no index on queued_at; events failing their delivery are
 * caught by store_outbox_retry anyway). *count = moved.
 */
int store_outbox_expire(struct store *st, int64_t dead_before, int64_t now, int limit,
                        int64_t *count);

/* Dead events with id > after_id, oldest first, at most limit (>= 1); next_at is when it died. */
int store_outbox_dead_list(struct store *st, int64_t after_id, int limit, store_event_fn *cb,
                           void *ctx);

/*
 * Queue dead events again (attempts 0, due now, max age restarts): the one with id (NOTFOUND unless
 * it is dead), or with id 0 the oldest limit dead ones. Same ids, so a backend can de-duplicate.
 * *count (may be NULL) = events queued again.
 */
int store_outbox_replay(struct store *st, int64_t id, int limit, int64_t now, int64_t *count);

/*
 * Whether this node sends the events (*mine). One node: always. A cluster: the node holding the
 * sender's lock (a PostgreSQL session-level advisory lock: it moves to another node when the
 * holder's connection ends, so a crashed sender is replaced); others ask again at most once a
 * second. Per-user order holds because one node sends at a time.
 */
int store_outbox_owner(struct store *st, bool *mine);

struct store_outbox_counts {
    int64_t queued;
    int64_t dead;
    int64_t oldest_queued_at; /* among the 1,000 oldest by id; 0 when nothing is queued */
};

/* Counts (each walks its table's pages: O(rows), for /metrics and wsctl, not per event). */
int store_outbox_counts(struct store *st, struct store_outbox_counts *out);

/* ---- Cluster mode (PostgreSQL only: SQLite answers STORE_ERR_INVALID; docs/cluster.md) ---- */

/*
 * This handle's node joins the cluster: the nodes row of name gets boot, state 'up' and a lease until
 * now + lease_ms (created if new). Sessions begun on the handle from then on carry the node id, and
 * store_session_end_orphans ends only this node's sessions (a restart must not end other nodes'). A
 * node named name that was still 'up' was this node before a crash: its sessions are orphans.
 */
int store_node_join(struct store *st, const char *name, int64_t boot, int64_t lease_ms, int64_t now,
                    int64_t *node_id);

/* Renew the lease (now + lease_ms). *lost = the row is no longer this boot's or not 'up': another
 * node swept it (a pause longer than the lease); the caller drops its connections and rejoins. */
int store_node_renew(struct store *st, int64_t now, int64_t lease_ms, bool *lost);

/* Clean shutdown: state 'down' (its sessions were ended by the caller). */
int store_node_leave(struct store *st, int64_t now);

/* A session store_node_sweep ended. */
struct store_lost_session {
    int64_t id;
    const char *user;
    int64_t node;
    bool user_offline; /* no active session of the user is left anywhere */
    int64_t last_seen;
};
typedef int store_lost_fn(void *ctx, const struct store_lost_session *s);

/*
 * One sweeper at a time (a transaction-scoped advisory lock; the others return at once, *nodes 0):
 * every node 'up' whose lease ran out before now becomes 'lost', its active sessions end with
 * (now, "node_lost"), its users' presence is recounted from the sessions left (offline where none
 * is), and cb hears each ended session inside the same transaction (to queue the usual events).
 * Inside the caller's transaction or one of its own. *nodes = nodes declared lost.
 */
int store_node_sweep(struct store *st, int64_t now, store_lost_fn *cb, void *ctx, int *nodes);

struct store_node_info {
    int64_t id;
    const char *name;
    int64_t boot;
    int64_t started_at;
    int64_t lease_until;
    const char *state; /* "up", "down", "lost" */
};
typedef int store_node_fn(void *ctx, const struct store_node_info *n);
/* Every node ever seen, by id. */
int store_nodes_list(struct store *st, store_node_fn *cb, void *ctx);

/*
 * Tell the other nodes what to deliver live (inside the caller's transaction: sent at its commit,
 * never if it rolls back). kind: "msg" (ref = stored message id), "user" / "room" (payload = frame
 * for target's live connections), "all" (payload to every live connection), "kick" (ref = session
 * id), "member" (target = user, payload = room, ref = 1 added / 0 removed, with the reason),
 * "presence" (target = user, payload = frame), "erase" (target = the user erased: close their
 * connections). Rows older than a few minutes are pruned by the sweep.
 */
int store_cluster_note(struct store *st, const char *kind, const char *target, int64_t ref,
                       const char *payload, int64_t now);

/* One row of the cluster log as a listener reads it; msg is set (id != 0) for kind "msg". */
struct store_log_row {
    int64_t node;
    const char *kind;
    const char *target;
    int64_t ref;
    const char *payload;
    struct store_msg msg;
};
typedef int store_log_fn(void *ctx, const struct store_log_row *r);

/*
 * The listening side: a connection of its own, LISTENing, never blocking once open. The caller
 * watches store_listen_fd() and calls store_listen_pump when it is readable and on a short timer
 * (a lost notification only delays; the timer's fetch catches up). Rows come in commit-safe order
 * from where the last pump stopped; the first open starts at the log's current end (a blocking
 * connect, bounded by wait_ms). After a broken connection, pump returns STORE_ERR_IO: the caller
 * starts store_listen_reconnect, which never waits: the next pumps (on the caller's timer) move the
 * connect and the LISTEN on as the socket allows, then catch up from the kept position, so nothing in
 * between is missed; a pump returns STORE_ERR_IO if the attempt failed (start another later).
 * store_listen_ready: connected and listening (store_listen_fd is then the socket to watch).
 */
struct store_listen;
int store_listen_open(struct store_listen **out, const char *conninfo, int wait_ms, char *err,
                      size_t errlen);
int store_listen_fd(const struct store_listen *l);
int store_listen_pump(struct store_listen *l, bool fetch, store_log_fn *cb, void *ctx);
int store_listen_reconnect(struct store_listen *l, char *err, size_t errlen);
bool store_listen_ready(const struct store_listen *l);
void store_listen_close(struct store_listen *l);

#endif
