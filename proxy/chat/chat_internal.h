/*
 * chat_internal.h -- what the chat module's files share: the chat state, the per-connection state and
 * the helpers one file defines for the others. Not for use outside proxy/chat/.
 *
 *   chat.c         protocol handlers and dispatch of client frames
 *   chat_session.c accept, end, touch (heartbeat), kick, token expiry: a session's life
 *   chat_fanout.c  the one insert-and-deliver path, fan-out, presence and member events, room index
 *   chat_fast.c    allocation-free fast path for send and ack
 *   chat_replay.c  the replay on connect, paced by the send queue
 *   chat_retention.c  the retention timer ([store] retention_age, retention_count)
 */
#ifndef WSP_CHAT_INTERNAL_H
#define WSP_CHAT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/metrics.h"
#include "base/sbuf.h"
#include "chat/chat.h"
#include "proto/ratelimit.h"

struct event;
struct reg_member;
struct registry_map;
struct store_msg;

/* A session end written but not yet known to be durable, or waiting to be written again. */
struct chat_end {
    struct chat *chat;
    struct chat_end *next;
    int64_t session_id;
    int64_t ended_at;
    int64_t seen;
    enum end_reason why;
    bool offline_check; /* cluster: the user's last connection here; offline if none elsewhere */
    char user[AUTH_USER_MAX + 1];
};

struct chat {
    struct loop *lp;
    const struct px_config *cfg;
    struct store *store;
    const struct auth *auth;
    struct registry_map *users; /* user -> its live chat connections (struct chat_conn) */
    struct registry_map *rooms; /* room -> live connections of its members */
    struct chat_conn *sessions; /* every live session, for broadcast and kick */
    uint64_t presence_seq;      /* numbers presence events, to tell each connection once */
    bool draining;
    /*
     * Session ends the store did not take (a failed write or commit: disk full, read-only, locked).
     * They are written again on a timer until a commit holds them, so an outage never leaves a
     * session active or a user online for good.
     */
    struct chat_end *ends_retry;
    size_t ends_unsettled; /* written or waiting: not yet known durable */
    struct event *retry_ev;
    struct event *expiry_ev; /* sweeps the sessions for expired tokens (chat_session.c) */
    int64_t retry_ms;      /* current back-off */
    struct events *events; /* events to the app backend; NULL when [events] target is empty */
    /* [store] retention: the timer, and rows deleted in the transaction not yet committed */
    struct event *retention_ev;
    int64_t retention_pending;
    bool retention_waiting;
    struct chat_cluster *cluster; /* cluster mode (chat_cluster.c); NULL on a single node */
};

enum replay_phase { REPLAY_DIRECT, REPLAY_ROOMS, REPLAY_DONE };

struct chat_conn {
    struct chat *chat;
    struct conn *conn;
    struct chat_conn *prev, *next; /* in chat->sessions */
    char user[AUTH_USER_MAX + 1];
    int64_t session_id;
    int64_t exp_ms;
    struct reg_member *user_mem;
    struct reg_member *rooms; /* this connection's room memberships, linked through ->link */
    char (*claim)[AUTH_USER_MAX + 2]; /* the token's rooms claim (NULL: none); see chat_rooms.c */
    size_t num_claim;
    struct ratelimit rl;     /* every frame but acks */
    struct ratelimit ack_rl; /* acks */
    uint64_t presence_seen; /* last presence event sent here (dedup across shared rooms) */
    unsigned strikes;     /* rate-limited frames in a row */
    unsigned ack_strikes; /* rate-limited acks in a row */
    enum replay_phase phase;
    int64_t replay_after;   /* direct phase: last id replayed */
    char **replay_rooms;    /* rooms not yet fully replayed; the last one is in progress */
    size_t num_replay_rooms;
    int64_t *room_ids;      /* ids of the room in progress still to send, oldest first */
    size_t num_room_ids, room_pos;
    int64_t room_last;      /* last id of that room replayed (or its cursor) */
    bool room_started;
    bool room_truncated;    /* older messages of that room were left out (max_replay) */
    /*
     * The session ended (on_close ran: rows written, indexes left). While a chat callback is running
     * (busy > 0) cc stays allocated so the code below it can see `ended` and stop; the outermost
     * callback frees it.
     */
    bool ended;
    bool erased; /* the user was erased: the end writes neither the session row nor presence */
    int busy;
};

/* chat.c */
void chat_on_message(struct conn *c, void *data, uint8_t opcode, const uint8_t *p, size_t len);
/* Send a built frame (held until the commit when a transaction is open); counts it as kind. */
void chat_send_sbuf(struct chat_conn *cc, struct sbuf *b, enum metrics_kind kind);
void chat_send_error(struct chat_conn *cc, const char *code, const char *message,
                     const char *id_key, const char *id_val);
/* Log a store failure and tell the client (error "internal", with its cid/rid). */
void chat_store_failed(struct chat_conn *cc, const char *what, const char *id_key,
                       const char *id_val);
/* A msg frame (with_type) or history item for m; replay adds "replay":true. */
void chat_build_msg(struct sbuf *b, const struct store_msg *m, bool replay, bool with_type);
/*
 * Take a token from the connection's bucket ([limits] rate, or ack_rate for an ack); false (after
 * answering rate_limited, or closing with 1008 after repeated strikes) when over it.
 */
bool chat_rate_ok(struct chat_conn *cc, bool ack);
/* After validation, shared with the fast path: membership, chat_post, receipt. */
void chat_send_commit(struct chat_conn *cc, const char *to, const char *room, const char *text,
                      const char *cid);
void chat_ack_commit(struct chat_conn *cc, int64_t id);

/* chat_fast.c: true when it answered send/ack; false (having done nothing) otherwise. */
bool chat_fast_path(struct chat_conn *cc, const uint8_t *data, size_t len);

/* chat_session.c */
extern const struct conn_handler chat_handler;
/* Enter/leave a chat callback: cc stays allocated until the outermost leave after it ended. */
void chat_conn_enter(struct chat_conn *cc);
void chat_conn_leave(struct chat_conn *cc);

/* chat_fanout.c */
/* Queue m to its live recipients on this node (held until the commit); connections reached. */
size_t chat_deliver(struct chat *ch, const struct store_msg *m, struct chat_conn *skip);
/* The same for a message another node stored: a direct message already replayed to a connection
 * (it connected here after the message committed) is not sent to it again. */
size_t chat_deliver_remote(struct chat *ch, const struct store_msg *m);
/* A ready JSON frame to user's / a room's (up to presence_fanout_max) / every live connection
 * here; connections reached. Nothing goes to other nodes. */
size_t chat_send_frame_user(struct chat *ch, const char *user, const char *json, size_t len);
size_t chat_send_frame_room(struct chat *ch, const char *room, const char *json, size_t len);
size_t chat_broadcast_local(struct chat *ch, const char *json, size_t len);
/* {"type":"presence","user","state","last_seen"} */
void chat_build_presence(struct sbuf *b, const char *user, bool online, int64_t last_seen);
/* A presence frame about user, who has no connection here: to this node's connections sharing a
 * room with it (its rooms from the store), each once. */
void chat_presence_frame_remote(struct chat *ch, const char *user, const char *json, size_t len);
/* Tell users sharing a room with cc's user that it came online / went offline. */
void chat_presence_event(struct chat *ch, struct chat_conn *cc, bool online, int64_t last_seen);
/* Tell the room's other live connections that user joined/left (bounded by presence_fanout_max). */
void chat_member_event(struct chat *ch, const char *room, const char *user, const char *event,
                       struct chat_conn *skip);
/*
 * "joined"/"left" to every live connection of user, with why: "join"/"leave" (the user's own frame),
 * "added"/"removed" (the backend), "deleted" (the room went), "revoked" (a refreshed token's claim
 * no longer allows it).
 */
void chat_room_event_all(struct chat *ch, const char *user, const char *type, const char *room,
                         const char *reason);
/* Add/remove every live connection of user to/from a room's live index. */
void chat_user_room_change(struct chat *ch, const char *user, const char *room, bool add);
/* Add one connection to a room's live index (idempotent). */
void chat_index_add(struct chat_conn *cc, const char *room);
/* Leave every room of the live index (at the end of a session). */
void chat_rooms_leave_all(struct chat_conn *cc);

/*
 * A direct message id was just delivered (its first ack, by recipient): tell the sender's live
 * connections {"type":"delivered","id","to","ts"[,"cid"]}, held for the commit like the ack.
 */
void chat_delivered_receipt(struct chat *ch, int64_t id, const char *recipient, int64_t ts);

/* Send a built frame (not stored) to every live connection that could hold m: its room's members,
 * or both sides of a direct message. Returns connections reached. */
size_t chat_send_to_target(struct chat *ch, const struct store_msg *m, struct sbuf *b);

/* chat_rooms.c */
enum chat_access { CHAT_ACCESS_NONE, CHAT_ACCESS_OPEN, CHAT_ACCESS_CLAIM };
/* Whether cc's user may join room without the backend: an open room, or its token's claim. */
enum chat_access chat_room_access(const struct chat_conn *cc, const char *room);
/* Answer a non-member: "forbidden" on a closed room, "not_member" on an open one. doing: "send"... */
void chat_not_member(struct chat_conn *cc, const char *room, const char *doing, const char *id_key,
                     const char *id_val);
/* Keep the identity's rooms claim (a copy, only when there is one). 0, or -1 out of memory. */
int chat_claim_set(struct chat_conn *cc, const struct auth_identity *id);
/* After a refresh: end the memberships the claim granted and no longer allows ("revoked"). */
void chat_claim_revoke(struct chat_conn *cc);
/* The client's own join/leave frames, with the access rules. */
void chat_room_join(struct chat_conn *cc, const char *room);
void chat_room_leave(struct chat_conn *cc, const char *room);
/* events.c: producers write into the loop's transaction; no-ops when events are off */
int events_new(struct chat *ch); /* 0 (also when off), -1 after logging why */
void events_free(struct chat *ch);
void events_session_opened(struct chat *ch, int64_t session_id, const char *user,
                           const char *remote_addr, const char *user_agent);
void events_session_closed(struct chat *ch, int64_t session_id, const char *user, const char *reason,
                           int64_t ended_at);
/* First connection of user / its last one ended (user.offline after [events] offline_delay). */
void events_user_online(struct chat *ch, const char *user);
void events_user_offline(struct chat *ch, const char *user);
/* A new message (not a duplicate) was stored; push: it came from the API. */
void events_msg_stored(struct chat *ch, const struct store_msg *m, bool push);

/* chat_cluster.c */
/*
 * Tell the other nodes (inside the loop's transaction): kind and fields as store_cluster_note.
 * payload (len bytes, may be NULL) is copied. A no-op on a single node.
 */
void chat_cluster_note(struct chat *ch, const char *kind, const char *target, int64_t ref,
                       const char *payload, size_t len);
/* In a cluster: whether user has more active sessions (all nodes) than own, this node's count in
 * the rows. Always false on a single node. */
bool chat_cluster_online_elsewhere(struct chat *ch, const char *user, int64_t own);

/*
 * After the end of user's last connection here committed: if no node has an active session of
 * user, it went offline -- the presence frame (here and through the log) and user.offline. Two
 * nodes ending the user's last sessions at once may both say so; neither stays silent.
 */
void chat_cluster_offline_check(struct chat *ch, const char *user, int64_t last_seen);
/*
 * The end of user's last connection here is written but its commit (and the offline check) is
 * still to come (delta +1, then -1 when it committed). While it is, a new connection of the user
 * here is a reload: not told as online (the check will then find it live and stay silent).
 */
void chat_cluster_end_pending(struct chat *ch, const char *user, int delta);
bool chat_cluster_end_is_pending(const struct chat *ch, const char *user);

/* chat_rooms.c: user was erased (here or on another node): forget their pending session ends and
 * close their connections here (1008 "kicked", no row written at the end). Connections closed. */
size_t chat_user_erased_here(struct chat *ch, const char *user);

/* chat_session.c: close every live session (1013, why) -- this node was declared lost. */
void chat_close_all(struct chat *ch, const char *why);

/* chat_retention.c: the retention timer (none when both limits are 0). 0, or -1 out of memory. */
int chat_retention_start(struct chat *ch);
void chat_retention_stop(struct chat *ch);

/* chat_replay.c */
/* Whether a live delivery to cc must wait for its replay (room NULL: a direct message). */
bool chat_replay_holds(const struct chat_conn *cc, const char *room);
/* Go on with the replay as far as the send queue allows; ends with {"type":"replayed"}. */
void chat_replay_continue(struct chat_conn *cc);
/* The conn_handler's on_drained: continue a replay that paused for backpressure. */
void chat_on_drained(struct conn *c, void *data);
/* Free the replay's state (rooms left, ids). */
void chat_replay_free(struct chat_conn *cc);

#endif
