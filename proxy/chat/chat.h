/*
 * chat.h -- the chat application on ws_path: identity-bound sessions, JSON frames, delivery through
 * the store inside the loop's group commit, presence and room events. It runs on connections the
 * router upgrades to it (chat_accept) and never touches sockets; the API calls in through chat_post,
 * chat_broadcast, chat_kick and chat_presence.
 */
#ifndef WSP_CHAT_H
#define WSP_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/conn.h"
#include "net/loop.h"
#include "proto/auth.h"

/* Protocol limits shared by the chat frames and the API (one copy). */
#define CHAT_CID_MAX         128 /* client ids (cid, rid) are echoed back; keep them small */
#define CHAT_HISTORY_MAX     100 /* items per history answer */
#define CHAT_HISTORY_DEFAULT 50
#define CHAT_PRESENCE_MAX    100 /* users per presence query */

struct chat;
struct store_msg;
struct store_receipt;
struct ws_handshake_result;

/* The chat state: its live sessions and indexes. auth is borrowed (token refresh, expiry). */
struct chat *chat_new(struct loop *lp, const struct auth *auth);
/* Free; every session must have ended (the connection pool is released first). NULL is a no-op. */
void chat_free(struct chat *ch);

/* The server is draining: no presence events from now on (everyone is leaving at once). */
void chat_shutdown(struct chat *ch);

/*
 * Upgrade c (admitted, hs from ws_hs_check) to a chat connection for identity id: answer 101, create
 * the session row, register the connection, mark presence, send welcome and start the replay. On a
 * store failure the connection is failed with 1011 (the client retries).
 */
void chat_accept(struct chat *ch, struct conn *c, const struct ws_handshake_result *hs,
                 const struct auth_identity *id, const char *user_agent);

/*
 * Store m in the loop's transaction and queue it to every live recipient but skip (held until the
 * commit): the one insert-and-deliver path of chat sends and API pushes. m->id is set. Returns 0
 * with *r (r->duplicate: an earlier send with the same sender and cid; nothing delivered) and, if
 * live is not NULL, the connections reached; or a STORE_ERR_* (nothing stored or sent).
 */
int chat_post(struct chat *ch, struct store_msg *m, struct conn *skip, struct store_receipt *r,
              size_t *live);

/*
 * chat_post for several messages at once, all or nothing: every insert of the request is undone if one
 * fails (a savepoint), and only then is anything queued to live recipients. rs and lives have n
 * entries. 0, or a STORE_ERR_* (nothing stored, nothing sent).
 */
int chat_post_many(struct chat *ch, struct store_msg *ms, size_t n, struct store_receipt *rs,
                   size_t *lives);

/* Send a JSON text (not stored) to every live chat session. Returns the sessions reached. */
size_t chat_broadcast(struct chat *ch, const char *json, size_t len);

/* Close a live session by id with 1008 "kicked". Returns 0, or -1 when no live session has it. */
int chat_kick(struct chat *ch, int64_t session_id);

/*
 * Cluster mode ([store] backend = postgresql; docs/cluster.md). chat_cluster_start joins this node
 * (its name, a new boot id, a lease) and starts listening to the other nodes; call it after the
 * store opened and before ending orphaned sessions (only this node's are). chat_cluster_stop leaves
 * (state down) once the sessions have ended. chat_kick_remote asks the other nodes to kick a session
 * that is active but not live here (0; -1 on a single node).
 */
int chat_cluster_start(struct chat *ch);
void chat_cluster_stop(struct chat *ch);
bool chat_clustered(const struct chat *ch);
int64_t chat_node_id(const struct chat *ch);
int chat_kick_remote(struct chat *ch, int64_t session_id);

/* A user's presence: live connections from the registry, last_seen from the store for the others. */
struct chat_presence {
    bool online;
    int connections;
    int64_t last_seen; /* ms; now when online; 0 when never seen */
};
void chat_presence(struct chat *ch, const char *user, struct chat_presence *out);

/* Users with at least one live connection. */
size_t chat_users_online(const struct chat *ch);

/*
 * Events to the app backend (docs/events.md). For the rooms code (issue 13): call this where a
 * membership changes, after the store write and in the same loop transaction (it calls
 * loop_tx_begin), so the member.added / member.removed event commits with the change. reason is a
 * short free text ("api", "join", "kicked", ...) or NULL. A no-op when events are off or the type is
 * not in [events] types; never fails the caller (a full outbox drops the event, counted and logged).
 */
void chat_event_member(struct chat *ch, const char *room, const char *user, bool added,
                       const char *reason);

/*
 * At start, before store_session_end_orphans and in the same loop transaction: session.closed
 * (reason server_restart) for every session a crash left open and user.offline for their users.
 */
void chat_events_orphans(struct chat *ch, int64_t now);

/* Take and post due event batches now (after an API replay); a no-op when events are off. */
void chat_events_kick(struct chat *ch);

/* Fill the events gauges of /metrics (unchanged when events are off). */
void chat_events_gauges(struct chat *ch, struct metrics_gauges *g);

/* A valid user id or room name (1-64 bytes of UTF-8, no controls). */
bool chat_name_valid(const char *s);

/* ---- rooms (chat_rooms.c): the backend's side. Writes join the loop's transaction. ---- */

/* Whether [rooms] open lets anyone in. */
bool chat_room_is_open(const struct chat *ch, const char *room);
/*
 * Add user to room (the API): a new member's live connections get "joined" (reason "added") and
 * receive the room at once; an existing member's grant becomes the backend's. 0 with *added, or a
 * STORE_ERR_*.
 */
int chat_room_add(struct chat *ch, const char *room, const char *user, bool *added);
/* Remove user: live connections get "left" ("removed") and stop receiving now. STORE_ERR_NOTFOUND
 * when user is not a member. */
int chat_room_remove(struct chat *ch, const char *room, const char *user);
/* Delete a room: every member leaves ("deleted"), its messages become tombstones. */
int chat_room_delete(struct chat *ch, const char *room);
/* Live connections in room. */
size_t chat_room_live(struct chat *ch, const char *room);
/*
 * Erase user (store_user_erase: their messages become tombstones, their memberships, conversations,
 * sessions and presence rows go) in the loop's transaction; the other members of their rooms get
 * "left", and every live connection of the user is closed with 1008 "kicked" (*closed of them). 0,
 * or a STORE_ERR_* (nothing changed, nobody closed).
 */
int chat_user_erase(struct chat *ch, const char *user, size_t *closed);
/* Tombstone message id; live holders get {"type":"deleted","id":..}. STORE_ERR_NOTFOUND if none. */
int chat_message_delete(struct chat *ch, int64_t id);
/*
 * Append `"items":[...],"more":..,"next_before":..` (no braces) of user's conversation list to b:
 * rooms and direct conversations, newest first, each with its last message (a bounded preview) and
 * the unread count. Returns 0 or a STORE_ERR_*.
 */
struct sbuf;
int chat_conversations_json(struct chat *ch, const char *user, int64_t before, int limit,
                            struct sbuf *b);

#endif
