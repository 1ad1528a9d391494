/*
 * chat_replay.c -- what a connection missed, sent right after welcome: pending direct messages, then
 * each room's messages after the member's cursor, paced by the client's send queue.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "chat/chat_internal.h"
#include "store.h"

#define REPLAY_PAGE 100 /* direct messages read per store query */

/*
 * While a connection replays, live deliveries that the replay will cover are held back (not sent):
 * direct messages during the direct phase (the replay pages through pending messages until none are
 * left, so it picks them up), and room messages for rooms not yet fully replayed (each room's replay
 * looks again for newer ids before it finishes). So a connection never gets a message twice, and
 * never acks past a message it has not seen.
 */
bool chat_replay_holds(const struct chat_conn *cc, const char *room)
{
    if (cc->phase == REPLAY_DONE)
        return false;
    if (!room)
        return cc->phase == REPLAY_DIRECT;
    for (size_t i = 0; i < cc->num_replay_rooms; i++)
        if (strcmp(cc->replay_rooms[i], room) == 0)
            return true;
    return false;
}


/* The replay pauses when this much is queued, and goes on from chat_on_drained. */
static bool replay_budget_spent(struct chat_conn *cc)
{
    return cc->ended || !conn_is_open(cc->conn) ||
           conn_pending_len(cc->conn) > cc->chat->cfg->send_queue / 2;
}

static void send_replayed(struct chat_conn *cc, const struct store_msg *m)
{
    struct sbuf b;
    sbuf_init(&b);
    chat_build_msg(&b, m, true, true);
    chat_send_sbuf(cc, &b, MK_MSG);
    sbuf_release(&b);
}

struct direct_replay {
    struct chat_conn *conn;
    int64_t last_id;
    int count;
    bool stopped;
};

static int replay_direct_one(void *ctx, const struct store_msg *m)
{
    struct direct_replay *dr = ctx;
    send_replayed(dr->conn, m);
    dr->last_id = m->id;
    dr->count++;
    /* Stop by bytes, not only by count: a page of large bodies must not overrun the send queue. */
    if (replay_budget_spent(dr->conn)) {
        dr->stopped = true;
        return 1;
    }
    return 0;
}

static void free_room_ids(struct chat_conn *cc)
{
    free(cc->room_ids);
    cc->room_ids = NULL;
    cc->num_room_ids = cc->room_pos = 0;
}

void chat_replay_free(struct chat_conn *cc)
{
    for (size_t i = 0; i < cc->num_replay_rooms; i++)
        free(cc->replay_rooms[i]);
    free(cc->replay_rooms);
    cc->replay_rooms = NULL;
    cc->num_replay_rooms = 0;
    free_room_ids(cc);
}

struct id_collect {
    int64_t after; /* collect ids > after */
    int64_t *ids;  /* newest first */
    size_t n, cap, want;
    int64_t oldest_seen;
    bool reached_after;
};

static int collect_id(void *ctx, const struct store_msg *m)
{
    struct id_collect *ic = ctx;
    ic->oldest_seen = m->id;
    if (m->id <= ic->after) {
        ic->reached_after = true;
        return 1;
    }
    if (ic->n == ic->cap) {
        size_t cap = ic->cap ? ic->cap * 2 : 64;
        int64_t *grown = realloc(ic->ids, cap * sizeof(*grown));
        if (!grown)
            return 1;
        ic->ids = grown;
        ic->cap = cap;
    }
    ic->ids[ic->n++] = m->id;
    return ic->n >= ic->want ? 1 : 0;
}

/*
 * Ids of room messages after `after`, oldest first, at most max_replay (the newest ones: *truncated
 * when older ones were left out). Only ids are kept: bodies are read one by one as they are sent.
 */
static int collect_room_ids(struct chat *ch, const char *room, int64_t after, struct chat_conn *cc,
                            bool *truncated)
{
    struct id_collect ic = {.after = after, .want = (size_t)ch->cfg->store_max_replay + 1};
    int64_t before = 0;
    for (;;) {
        bool more = false;
        size_t had = ic.n;
        int rc = store_history_room(ch->store, room, before, 100, collect_id, &ic, &more);
        if (rc < 0) {
            free(ic.ids);
            return rc;
        }
        if (ic.reached_after || ic.n >= ic.want || !more || ic.n == had)
            break;
        before = ic.oldest_seen;
    }
    *truncated = ic.n > ch->cfg->store_max_replay;
    if (*truncated)
        ic.n = (size_t)ch->cfg->store_max_replay;
    for (size_t i = 0; i < ic.n / 2; i++) {
        int64_t t = ic.ids[i];
        ic.ids[i] = ic.ids[ic.n - 1 - i];
        ic.ids[ic.n - 1 - i] = t;
    }
    free_room_ids(cc);
    cc->room_ids = ic.ids;
    cc->num_room_ids = ic.n;
    return 0;
}

static void send_truncated(struct chat_conn *cc, const char *room)
{
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"type\":\"truncated\",\"room\":");
    sbuf_add_json_str(&b, room);
    sbuf_adds(&b, "}");
    chat_send_sbuf(cc, &b, MK_OTHER);
    sbuf_release(&b);
}

/* One step of the current room (the last in replay_rooms). Returns false when the conn went away. */
static bool replay_room_step(struct chat_conn *cc)
{
    struct chat *ch = cc->chat;
    char room[AUTH_USER_MAX + 1];
    snprintf(room, sizeof(room), "%s", cc->replay_rooms[cc->num_replay_rooms - 1]);

    if (!cc->room_started) {
        int64_t cursor = 0;
        int rc = store_room_cursor(ch->store, room, cc->user, &cursor);
        bool truncated = false;
        if (rc == 0)
            rc = collect_room_ids(ch, room, cursor, cc, &truncated);
        if (rc < 0) {
            if (rc != STORE_ERR_NOTFOUND)
                chat_store_failed(cc, "room replay", NULL, NULL);
            free(cc->replay_rooms[--cc->num_replay_rooms]);
            free_room_ids(cc);
            return !cc->ended;
        }
        cc->room_started = true;
        cc->room_last = cursor;
        cc->room_truncated = truncated; /* said after the room's messages */
    }
    while (cc->room_pos < cc->num_room_ids) {
        struct store_msg_info info;
        int64_t id = cc->room_ids[cc->room_pos++];
        if (store_msg_get(ch->store, id, &info) == 0) {
            send_replayed(cc, &info.msg);
            store_msg_info_release(&info);
        }
        cc->room_last = id;
        if (cc->ended)
            return false;
        if (replay_budget_spent(cc))
            return true;
    }
    /* Messages held back while this room replayed: look once more before calling it done. */
    bool truncated = false;
    if (collect_room_ids(ch, room, cc->room_last, cc, &truncated) < 0)
        chat_store_failed(cc, "room replay", NULL, NULL);
    if (cc->ended)
        return false;
    if (cc->num_room_ids > 0) {
        cc->room_truncated |= truncated;
        return true;
    }
    if (cc->room_truncated)
        send_truncated(cc, room);
    cc->room_truncated = false;
    free(cc->replay_rooms[--cc->num_replay_rooms]);
    free_room_ids(cc);
    cc->room_started = false;
    return true;
}

/*
 * Replay step by step, bounded by bytes: stop while the client's queue is above half the send_queue
 * and go on from chat_on_drained, so a large backlog streams at the client's pace instead of filling
 * memory or tripping the slow-consumer limit. Every store call may end in the connection being
 * closed (on_close ends cc; it stays allocated while we run), so cc->ended is checked after each.
 */
void chat_replay_continue(struct chat_conn *cc)
{
    struct chat *ch = cc->chat;
    while (!cc->ended && cc->phase != REPLAY_DONE && conn_is_open(cc->conn)) {
        if (replay_budget_spent(cc))
            return;
        if (cc->phase == REPLAY_DIRECT) {
            char user[AUTH_USER_MAX + 1];
            snprintf(user, sizeof(user), "%s", cc->user);
            struct direct_replay dr = {cc, cc->replay_after, 0, false};
            int rc = store_pending_direct(ch->store, user, cc->replay_after, REPLAY_PAGE,
                                          replay_direct_one, &dr);
            if (cc->ended)
                return;
            if (rc < 0) {
                chat_store_failed(cc, "replay", NULL, NULL);
                cc->phase = REPLAY_ROOMS;
                continue;
            }
            cc->replay_after = dr.last_id;
            if (dr.count < REPLAY_PAGE && !dr.stopped)
                cc->phase = REPLAY_ROOMS; /* direct -> rooms: the phases only move forward */
            continue;
        }
        if (cc->num_replay_rooms == 0) {
            assert(cc->phase == REPLAY_ROOMS && !cc->room_started);
            cc->phase = REPLAY_DONE;
            chat_replay_free(cc);
            struct sbuf b;
            sbuf_init(&b);
            sbuf_adds(&b, "{\"type\":\"replayed\"}");
            chat_send_sbuf(cc, &b, MK_OTHER);
            sbuf_release(&b);
            return;
        }
        if (!replay_room_step(cc))
            return;
    }
}

void chat_on_drained(struct conn *c, void *data)
{
    (void)c;
    struct chat_conn *cc = data;
    if (cc->ended || cc->phase == REPLAY_DONE)
        return;
    chat_conn_enter(cc);
    chat_replay_continue(cc);
    chat_conn_leave(cc);
}

