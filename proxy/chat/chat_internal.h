/*
 * chat_internal.h -- what chat.c (the protocol) and chat_replay.c (the replay on connect) share: the
 * per-connection chat state and a few frame helpers. Not for use outside the chat module.
 */
#ifndef WSP_CHAT_INTERNAL_H
#define WSP_CHAT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/auth.h"
#include "base/metrics.h"
#include "proto/ratelimit.h"
#include "base/sbuf.h"

struct conn;
struct event;
struct reg_member;
struct store_msg;

enum replay_phase { REPLAY_DIRECT, REPLAY_ROOMS, REPLAY_DONE };

struct chat_conn {
    struct conn *conn;
    char user[AUTH_USER_MAX + 1];
    int64_t session_id;
    int64_t exp_ms;
    struct reg_member *user_mem;
    struct reg_member *rooms; /* this connection's room memberships, linked through ->link */
    struct event *expiry;
    struct ratelimit rl;
    uint64_t presence_seen; /* last presence event sent here (dedup across shared rooms) */
    unsigned strikes;
    enum replay_phase phase;
    int64_t replay_after;   /* direct phase: last id replayed */
    char **replay_rooms;    /* rooms not yet fully replayed; the last one is in progress */
    size_t num_replay_rooms;
    int64_t *room_ids;      /* ids of the room in progress still to send, oldest first */
    size_t num_room_ids, room_pos;
    int64_t room_last;      /* last id of that room replayed (or its cursor) */
    bool room_started;
    bool room_truncated;    /* older messages of that room were left out (max_replay) */
    bool ended;
};

/* Send a built frame (held until the commit when a transaction is open); counts it as kind. */
void chat_send_sbuf(struct conn *c, struct sbuf *b, enum metrics_kind kind);

/* A msg frame (with_type) or history item for m; replay adds "replay":true. */
void chat_build_msg(struct sbuf *b, const struct store_msg *m, bool replay, bool with_type);

/* Log a store failure and tell the client (error "internal", with its cid/rid). */
void chat_store_failed(struct conn *c, const char *what, const char *id_key, const char *id_val);

/* Whether a live delivery to cc must wait for its replay (room NULL: a direct message). */
bool chat_replay_holds(const struct chat_conn *cc, const char *room);

/* Go on with the replay as far as the send queue allows; ends with {"type":"replayed"}. */
void chat_replay_continue(struct conn *c);

/* Free the replay's state (rooms left, ids). */
void chat_replay_free(struct chat_conn *cc);

#endif
