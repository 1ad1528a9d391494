/*
 * chat.h -- the chat protocol on ws_path: identity-bound sessions, JSON frames (jansson), delivery
 * through the store with group commit, presence. conn.c calls in; chat.c never touches sockets.
 */
#ifndef WSP_CHAT_H
#define WSP_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "net/conn.h"

struct auth_identity;
struct server;

/*
 * The connection was just upgraded for user id: create the session row, register the connection,
 * mark presence, send welcome and start the replay. Returns 0, or -1 when the connection must be
 * closed (already logged; the caller closes with 1011).
 */
int chat_open(struct conn *c, const struct auth_identity *id, const char *user_agent,
              const char *subprotocol);

/* A complete message from the client (text or binary). */
void chat_on_message(struct conn *c, uint8_t opcode, const uint8_t *data, size_t len);

/* The connection's output drained: continue a replay that paused for backpressure. */
void chat_on_drained(struct conn *c);

/*
 * The one cleanup path for a chat connection, whatever ended it: unregister, end the session row with
 * why, presence offline (and the event) on the user's last connection. Idempotent.
 */
void chat_end(struct conn *c, enum end_reason why);

/*
 * Record that the peer was heard from (last_seen_at = its last frame) in the session row, batched into
 * the loop's group commit. Called once per ping interval, so admins see live sessions as live.
 */
void chat_touch(struct conn *c);

/* Close a live session by id (the admin kick). Returns 0, or -1 when no live connection has it. */
int chat_kick(struct server *srv, int64_t session_id);

/* Deliver a message to live connections (after commit) -- shared by chat sends and API pushes. */
struct store_msg;
size_t chat_deliver(struct server *srv, const struct store_msg *m);

/* Broadcast a JSON body to every live chat connection (not stored). Returns connections reached. */
size_t chat_broadcast(struct server *srv, const char *json, size_t len);

#endif
