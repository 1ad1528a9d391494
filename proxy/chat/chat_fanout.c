/*
 * chat_fanout.c -- who gets what, live: the one insert-and-deliver path (chat_post), fan-out of one
 * encoded frame to users and rooms, broadcast, presence and member events, and the in-memory index
 * of which live connection is in which room. Frames queued here are held until the group commit.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/registry.h"
#include "chat/chat_internal.h"
#include "store.h"

enum hold { HOLD_NONE, HOLD_DIRECT, HOLD_ROOM };

/*
 * Send f to every member of g but skip. A member over its send queue is closed on the spot, which
 * removes its own memberships (and may free g if it was the last): so take next first and never
 * touch g after the last member.
 */
static size_t send_to_group_after(struct reg_group *g, struct shared_frame *f,
                                  struct chat_conn *skip, enum hold hold, const char *room,
                                  int64_t id)
{
    size_t n = 0;
    struct reg_member *next;
    for (struct reg_member *m = g ? g->head : NULL; m; m = next) {
        next = m->next;
        struct chat_conn *cc = m->item;
        assert(!cc->ended); /* an ended session left every group in on_close */
        if (cc == skip)
            continue;
        if (hold != HOLD_NONE && chat_replay_holds(cc, hold == HOLD_ROOM ? room : NULL))
            continue; /* its replay will send it */
        if (hold == HOLD_DIRECT && id > 0 && id <= cc->replay_after)
            continue; /* another node's message that this connection's replay already sent */
        conn_send_shared(cc->conn, f);
        n++;
    }
    return n;
}

static size_t send_to_group(struct reg_group *g, struct shared_frame *f, struct chat_conn *skip,
                            enum hold hold, const char *room)
{
    return send_to_group_after(g, f, skip, hold, room, 0);
}

/* Send one frame to every live connection of user (except skip); returns connections reached. */
static size_t send_to_user(struct chat *ch, const char *user, struct shared_frame *f,
                           struct chat_conn *skip, enum hold hold)
{
    return send_to_group(registry_find(ch->users, user), f, skip, hold, NULL);
}

/* Whether anyone but skip is live to receive m: most direct messages go to offline users. */
static bool anyone_live(struct chat *ch, const struct store_msg *m, struct chat_conn *skip)
{
    size_t self = skip ? 1 : 0;
    if (m->room)
        return registry_count(ch->rooms, m->room) > self;
    return registry_count(ch->users, m->to_user) > 0 || registry_count(ch->users, m->sender) > self;
}

size_t chat_deliver_remote(struct chat *ch, const struct store_msg *m)
{
    if (!m->to_user)
        return chat_deliver(ch, m, NULL);
    /* A direct message: a connection that came up since it was stored may have replayed it. */
    if (registry_count(ch->users, m->to_user) == 0 && registry_count(ch->users, m->sender) == 0)
        return 0;
    struct sbuf b;
    sbuf_init(&b);
    chat_build_msg(&b, m, false, true);
    size_t n = 0;
    struct shared_frame *f = b.oom ? NULL : shared_frame_new(WS_OP_TEXT, b.p, b.len);
    if (f) {
        n = send_to_group_after(registry_find(ch->users, m->to_user), f, NULL, HOLD_DIRECT, NULL,
                                m->id);
        if (strcmp(m->sender, m->to_user) != 0)
            send_to_user(ch, m->sender, f, NULL, HOLD_NONE);
        shared_frame_unref(f);
    }
    ch->lp->metrics.msgs_out[MK_MSG] += n;
    sbuf_release(&b);
    return n;
}

size_t chat_deliver(struct chat *ch, const struct store_msg *m, struct chat_conn *skip)
{
    if (!anyone_live(ch, m, skip))
        return 0; /* nothing to encode: the message waits in the store */
    struct sbuf b;
    sbuf_init(&b);
    chat_build_msg(&b, m, false, true);
    size_t n = 0;
    struct shared_frame *f = b.oom ? NULL : shared_frame_new(WS_OP_TEXT, b.p, b.len);
    if (f) {
        if (m->to_user) {
            n = send_to_user(ch, m->to_user, f, skip, HOLD_DIRECT);
            /* The sender's other devices see what was sent from this one. */
            if (strcmp(m->sender, m->to_user) != 0)
                send_to_user(ch, m->sender, f, skip, HOLD_NONE);
        } else {
            n = send_to_group(registry_find(ch->rooms, m->room), f, skip, HOLD_ROOM, m->room);
        }
        shared_frame_unref(f);
    }
    ch->lp->metrics.msgs_out[MK_MSG] += n;
    sbuf_release(&b);
    return n;
}

int chat_post_many(struct chat *ch, struct store_msg *ms, size_t n, struct store_receipt *rs,
                   size_t *lives)
{
    loop_tx_begin(ch->lp);
    bool own = false;
    int rc = store_atomic_begin(ch->store, &own);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = store_msg_insert(ch->store, &ms[i], &rs[i]);
    if ((rc = store_atomic_end(ch->store, own, rc)) != 0)
        return rc; /* nothing of the request stored, nothing queued to anyone */
    for (size_t i = 0; i < n; i++) {
        lives[i] = 0;
        if (!rs[i].duplicate) {
            ms[i].id = rs[i].id;
            lives[i] = chat_deliver(ch, &ms[i], NULL);
            chat_cluster_note(ch, "msg", NULL, ms[i].id, NULL, 0);
        }
    }
    return 0;
}

void chat_delivered_receipt(struct chat *ch, int64_t id, const char *recipient, int64_t ts)
{
    struct store_msg_info info;
    if (store_msg_get(ch->store, id, &info) != 0)
        return;
    /* only the sender's live connections care (here or, in a cluster, on other nodes), and a note
     * to self needs no receipt */
    if (strcmp(info.msg.sender, recipient) != 0 &&
        (registry_count(ch->users, info.msg.sender) > 0 || chat_clustered(ch))) {
        struct sbuf b;
        sbuf_init(&b);
        sbuf_adds(&b, "{\"type\":\"delivered\",\"id\":");
        sbuf_add_i64(&b, id);
        sbuf_adds(&b, ",\"to\":");
        sbuf_add_json_str(&b, recipient);
        sbuf_adds(&b, ",\"ts\":");
        sbuf_add_i64(&b, ts);
        if (info.msg.cid) {
            sbuf_adds(&b, ",\"cid\":");
            sbuf_add_json_str(&b, info.msg.cid);
        }
        sbuf_adds(&b, "}");
        if (!b.oom) {
            chat_send_frame_user(ch, info.msg.sender, b.p, b.len);
            chat_cluster_note(ch, "user", info.msg.sender, 0, b.p, b.len);
        }
        sbuf_release(&b);
    }
    store_msg_info_release(&info);
}

size_t chat_send_to_target(struct chat *ch, const struct store_msg *m, struct sbuf *b)
{
    struct shared_frame *f = b->oom ? NULL : shared_frame_new(WS_OP_TEXT, b->p, b->len);
    if (!f)
        return 0;
    size_t n;
    if (m->to_user) {
        n = send_to_user(ch, m->to_user, f, NULL, HOLD_NONE);
        if (strcmp(m->sender, m->to_user) != 0)
            n += send_to_user(ch, m->sender, f, NULL, HOLD_NONE);
    } else {
        n = send_to_group(registry_find(ch->rooms, m->room), f, NULL, HOLD_NONE, NULL);
    }
    shared_frame_unref(f);
    ch->lp->metrics.msgs_out[MK_OTHER] += n;
    return n;
}

int chat_post(struct chat *ch, struct store_msg *m, struct conn *skip, struct store_receipt *r,
              size_t *live)
{
    loop_tx_begin(ch->lp);
    int rc = store_msg_insert(ch->store, m, r);
    if (rc != 0)
        return rc;
    size_t n = 0;
    /* Deliveries (and the caller's receipt) are held until the group commit makes the row durable. */
    if (!r->duplicate) {
        m->id = r->id;
        events_msg_stored(ch, m, skip == NULL);
        struct chat_conn *self = skip && skip->handler == &chat_handler ? skip->data : NULL;
        n = chat_deliver(ch, m, self);
        chat_cluster_note(ch, "msg", NULL, m->id, NULL, 0);
    }
    if (live)
        *live = n;
    return 0;
}

size_t chat_broadcast(struct chat *ch, const char *json, size_t len)
{
    chat_cluster_note(ch, "all", NULL, 0, json, len);
    return chat_broadcast_local(ch, json, len);
}

size_t chat_send_frame_user(struct chat *ch, const char *user, const char *json, size_t len)
{
    if (registry_count(ch->users, user) == 0)
        return 0;
    struct shared_frame *f = shared_frame_new(WS_OP_TEXT, json, len);
    if (!f)
        return 0;
    size_t n = send_to_user(ch, user, f, NULL, HOLD_NONE);
    shared_frame_unref(f);
    ch->lp->metrics.msgs_out[MK_OTHER] += n;
    return n;
}

size_t chat_send_frame_room(struct chat *ch, const char *room, const char *json, size_t len)
{
    struct reg_group *g = registry_find(ch->rooms, room);
    if (!g || g->count > ch->cfg->presence_fanout_max)
        return 0;
    struct shared_frame *f = shared_frame_new(WS_OP_TEXT, json, len);
    if (!f)
        return 0;
    size_t n = send_to_group(g, f, NULL, HOLD_NONE, NULL);
    shared_frame_unref(f);
    ch->lp->metrics.msgs_out[MK_OTHER] += n;
    return n;
}

size_t chat_broadcast_local(struct chat *ch, const char *json, size_t len)
{
    struct shared_frame *f = shared_frame_new(WS_OP_TEXT, json, len);
    if (!f)
        return 0;
    size_t n = 0;
    struct chat_conn *next;
    for (struct chat_conn *cc = ch->sessions; cc; cc = next) {
        next = cc->next; /* a slow consumer is closed (and unlinked) by the send */
        if (conn_is_open(cc->conn)) {
            conn_send_shared(cc->conn, f);
            n++;
        }
    }
    shared_frame_unref(f);
    ch->lp->metrics.msgs_out[MK_MSG] += n;
    return n;
}

/*
 * Tell the live connections sharing a room with cc's user that it came online / went offline. Walks
 * the in-memory room index (only live connections matter), each connection told once even when it
 * shares several rooms. Rooms with more than [limits] presence_fanout_max live connections are
 * skipped: a connect would otherwise cost O(members) and a mass reconnect O(members^2); clients of
 * big rooms ask with "members"/"presence" instead. Nothing is sent while the server drains.
 */
void chat_build_presence(struct sbuf *b, const char *user, bool online, int64_t last_seen)
{
    sbuf_adds(b, "{\"type\":\"presence\",\"user\":");
    sbuf_add_json_str(b, user);
    sbuf_addf(b, ",\"state\":\"%s\",\"last_seen\":", online ? "online" : "offline");
    sbuf_add_i64(b, last_seen);
    sbuf_adds(b, "}");
}

struct presence_walk {
    struct chat *ch;
    struct shared_frame *f;
    uint64_t seq;
};

static int presence_room_cb(void *arg, const char *room)
{
    struct presence_walk *w = arg;
    struct reg_group *g = registry_find(w->ch->rooms, room);
    /* The user's own connection counts, as where it is live (presence_fanout_max is about the
     * room's live connections, the user's included): it is not in this node's group. */
    if (!g || g->count + 1 > w->ch->cfg->presence_fanout_max)
        return 0;
    struct reg_member *next;
    for (struct reg_member *m = g->head; m; m = next) {
        next = m->next;
        struct chat_conn *other = m->item;
        if (other->presence_seen == w->seq)
            continue;
        other->presence_seen = w->seq;
        conn_send_shared(other->conn, w->f);
    }
    return 0;
}

void chat_presence_frame_remote(struct chat *ch, const char *user, const char *json, size_t len)
{
    if (ch->draining || registry_groups(ch->rooms) == 0)
        return;
    struct presence_walk w = {.ch = ch, .seq = ++ch->presence_seq};
    if (!(w.f = shared_frame_new(WS_OP_TEXT, json, len)))
        return;
    /* The user has no connection here: its rooms come from the store. */
    if (store_user_rooms(ch->store, user, presence_room_cb, &w) < 0)
        log_error("store: rooms of %s: %s", user, store_last_error(ch->store));
    shared_frame_unref(w.f);
}

void chat_presence_event(struct chat *ch, struct chat_conn *cc, bool online, int64_t last_seen)
{
    if (ch->draining || !cc->rooms)
        return;
    struct sbuf b;
    sbuf_init(&b);
    chat_build_presence(&b, cc->user, online, last_seen);
    if (!b.oom) /* the other nodes tell their connections sharing a room with the user */
        chat_cluster_note(ch, "presence", cc->user, 0, b.p, b.len);
    struct shared_frame *f = b.oom ? NULL : shared_frame_new(WS_OP_TEXT, b.p, b.len);
    sbuf_release(&b);
    if (!f)
        return;
    uint64_t seq = ++ch->presence_seq;
    for (struct reg_member *r = cc->rooms; r; r = r->link) {
        struct reg_group *g = r->group;
        if (g->count > ch->cfg->presence_fanout_max)
            continue;
        struct reg_member *next;
        for (struct reg_member *m = g->head; m; m = next) {
            next = m->next;
            struct chat_conn *other = m->item;
            if (other == cc || other->presence_seen == seq)
                continue;
            other->presence_seen = seq;
            conn_send_shared(other->conn, f);
        }
    }
    shared_frame_unref(f);
}

void chat_member_event(struct chat *ch, const char *room, const char *user, const char *event,
                       struct chat_conn *skip)
{
    struct reg_group *g = registry_find(ch->rooms, room);
    if ((!g || g->count > ch->cfg->presence_fanout_max) && !chat_clustered(ch))
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"type\":\"member\",\"room\":");
    sbuf_add_json_str(&b, room);
    sbuf_adds(&b, ",\"user\":");
    sbuf_add_json_str(&b, user);
    sbuf_addf(&b, ",\"event\":\"%s\"}", event);
    if (!b.oom)
        chat_cluster_note(ch, "room", room, 0, b.p, b.len);
    struct shared_frame *f = b.oom || !g || g->count > ch->cfg->presence_fanout_max
                                 ? NULL
                                 : shared_frame_new(WS_OP_TEXT, b.p, b.len);
    sbuf_release(&b);
    if (!f)
        return;
    ch->lp->metrics.msgs_out[MK_OTHER] += send_to_group(g, f, skip, HOLD_NONE, NULL);
    shared_frame_unref(f);
}

static void send_room_event(struct chat_conn *cc, const char *type, const char *room,
                            const char *reason)
{
    struct sbuf b;
    sbuf_init(&b);
    sbuf_addf(&b, "{\"type\":\"%s\",\"room\":", type);
    sbuf_add_json_str(&b, room);
    /* the user's own join/leave needs no reason (the frames stay as before access control) */
    if (strcmp(reason, "join") != 0 && strcmp(reason, "leave") != 0)
        sbuf_addf(&b, ",\"reason\":\"%s\"", reason);
    sbuf_adds(&b, "}");
    chat_send_sbuf(cc, &b, MK_OTHER);
    sbuf_release(&b);
}

/* joined/left go to every device of the user: they all receive (or stop receiving) the room. */
void chat_room_event_all(struct chat *ch, const char *user, const char *type, const char *room,
                         const char *reason)
{
    struct reg_group *g = registry_find(ch->users, user);
    struct reg_member *next;
    for (struct reg_member *m = g ? g->head : NULL; m; m = next) {
        next = m->next;
        send_room_event(m->item, type, room, reason);
    }
}

void chat_presence(struct chat *ch, const char *user, struct chat_presence *out)
{
    memset(out, 0, sizeof(*out));
    /* The registry is the truth for live users; the store keeps last_seen for the others. */
    size_t live = registry_count(ch->users, user);
    bool online = false;
    int conns = 0;
    if (live > 0 && !chat_clustered(ch)) {
        out->online = true;
        out->connections = (int)live;
        out->last_seen = loop_now_ms(ch->lp);
    } else if (store_presence_get(ch->store, user, &online, &conns, &out->last_seen) != 0) {
        out->last_seen = 0;
    }
    /* In a cluster the store counts every node's connections (this node's are live here). */
    if (chat_clustered(ch) && (online || live > 0)) {
        out->online = true;
        out->connections = conns > (int)live ? conns : (int)live;
        out->last_seen = loop_now_ms(ch->lp);
    }
}

size_t chat_users_online(const struct chat *ch)
{
    return registry_groups(ch->users);
}

/* ---- room memberships of live connections ---- */

static bool conn_in_room(struct chat_conn *cc, const char *room)
{
    for (struct reg_member *m = cc->rooms; m; m = m->link)
        if (strcmp(m->group->key, room) == 0)
            return true;
    return false;
}

void chat_index_add(struct chat_conn *cc, const char *room)
{
    if (conn_in_room(cc, room))
        return;
    struct reg_member *m = registry_join(cc->chat->rooms, room, cc);
    if (!m)
        return;
    m->link = cc->rooms;
    cc->rooms = m;
}

static void room_remove(struct chat_conn *cc, const char *room)
{
    for (struct reg_member **pp = &cc->rooms; *pp; pp = &(*pp)->link)
        if (strcmp((*pp)->group->key, room) == 0) {
            struct reg_member *m = *pp;
            *pp = m->link;
            registry_leave(cc->chat->rooms, m);
            return;
        }
}

void chat_rooms_leave_all(struct chat_conn *cc)
{
    while (cc->rooms) {
        struct reg_member *m = cc->rooms;
        cc->rooms = m->link;
        registry_leave(cc->chat->rooms, m);
    }
}

/* A membership change applies to every live connection (device) of the user. */
void chat_user_room_change(struct chat *ch, const char *user, const char *room, bool add)
{
    struct reg_group *g = registry_find(ch->users, user);
    for (struct reg_member *m = g ? g->head : NULL; m; m = m->next) {
        if (add)
            chat_index_add(m->item, room);
        else
            room_remove(m->item, room);
    }
}
