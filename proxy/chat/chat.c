/*
 * chat.c -- the chat protocol on ws_path: parses client JSON (jansson), writes through the store
 * inside the loop's group-commit transaction, and fans frames out to live connections only after
 * the commit (frames queued with conn_send_text/conn_send_shared are held until then). The replay
 * on connect lives in chat_replay.c.
 */
#include "chat/chat.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "proto/auth.h"
#include "chat/chat_internal.h"
#include "proto/json_scan.h"
#include "base/log.h"
#include "chat/msg_json.h"
#include "proto/ratelimit.h"
#include "base/registry.h"
#include "base/sbuf.h"
#include "server.h"
#include "store.h"

#define CID_MAX 128         /* client ids (cid, rid) are echoed back; keep them small */
#define HISTORY_MAX 100     /* items per history answer */
#define HISTORY_DEFAULT 50
#define PRESENCE_MAX 100    /* users per presence query */
#define RATE_STRIKES_MAX 20 /* rate-limited messages tolerated before the connection is closed */

/* ---- small helpers ---- */

static struct server *srv_of(struct conn *c)
{
    return c->srv;
}

void chat_send_sbuf(struct conn *c, struct sbuf *b, enum metrics_kind kind)
{
    if (b->oom)
        return;
    c->srv->metrics.msgs_out[kind]++;
    conn_send_text(c, b->p, b->len);
}

static void send_error(struct conn *c, const char *code, const char *message, const char *id_key,
                       const char *id_val)
{
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"type\":\"error\",\"code\":");
    sbuf_add_json_str(&b, code);
    sbuf_adds(&b, ",\"message\":");
    sbuf_add_json_str(&b, message);
    if (id_key && id_val) {
        sbuf_addf(&b, ",\"%s\":", id_key);
        sbuf_add_json_str(&b, id_val);
    }
    sbuf_adds(&b, "}");
    chat_send_sbuf(c, &b, MK_ERROR);
    sbuf_release(&b);
}

/* A msg frame: {"type":"msg","id":..,"from":..,"to"|"room":..,"body":RAW,"ts":..,"cid":..} */
void chat_build_msg(struct sbuf *b, const struct store_msg *m, bool replay, bool with_type)
{
    sbuf_adds(b, with_type ? "{\"type\":\"msg\"," : "{");
    msg_json_fields(b, m);
    if (m->cid) {
        sbuf_adds(b, ",\"cid\":");
        sbuf_add_json_str(b, m->cid);
    }
    if (replay)
        sbuf_adds(b, ",\"replay\":true");
    sbuf_adds(b, "}");
}

static bool valid_name(const char *s)
{
    return s && auth_user_valid(s, strlen(s));
}

/* Optional short string field (cid, rid); false if present but not a string or too long. */
static bool opt_id(json_t *obj, const char *key, const char **out)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v)
        return true;
    if (!json_is_string(v) || json_string_length(v) > CID_MAX || json_string_length(v) == 0)
        return false;
    *out = json_string_value(v);
    return true;
}

void chat_store_failed(struct conn *c, const char *what, const char *id_key, const char *id_val)
{
    c->srv->metrics.store_errors++;
    log_error("store: %s for %s: %s", what, c->chat->user, store_last_error(c->srv->store));
    send_error(c, "internal", "storage error, try again", id_key, id_val);
}

/* ---- fan-out ---- */

enum hold { HOLD_NONE, HOLD_DIRECT, HOLD_ROOM };

static size_t send_to_group(struct reg_group *g, struct shared_frame *f, struct conn *skip,
                            enum hold hold, const char *room)
{
    size_t n = 0;
    struct reg_member *next;
    for (struct reg_member *m = g ? g->head : NULL; m; m = next) {
        next = m->next;
        if (m->conn == skip)
            continue;
        struct chat_conn *cc = m->conn->chat;
        if (hold != HOLD_NONE && cc && chat_replay_holds(cc, hold == HOLD_ROOM ? room : NULL))
            continue; /* its replay will send it */
        conn_send_shared(m->conn, f);
        n++;
    }
    return n;
}

/* Send one frame to every live connection of user (except skip); returns connections reached. */
static size_t send_to_user(struct server *srv, const char *user, struct shared_frame *f,
                           struct conn *skip, enum hold hold)
{
    struct reg_group *g = registry_find(srv->users, user);
    return send_to_group(g, f, skip, hold, NULL);
}

static size_t send_to_room(struct server *srv, const char *room, struct shared_frame *f,
                           struct conn *skip)
{
    struct reg_group *g = registry_find(srv->rooms, room);
    return send_to_group(g, f, skip, HOLD_ROOM, room);
}

/* Whether anyone but skip is live to receive m: most direct messages go to offline users. */
static bool anyone_live(struct server *srv, const struct store_msg *m, struct conn *skip)
{
    size_t self = skip ? 1 : 0;
    if (m->room)
        return registry_count(srv->rooms, m->room) > self;
    return registry_count(srv->users, m->to_user) > 0 || registry_count(srv->users, m->sender) > self;
}

static size_t deliver(struct server *srv, const struct store_msg *m, struct conn *skip)
{
    if (!anyone_live(srv, m, skip))
        return 0; /* nothing to encode: the message waits in the store */
    struct sbuf b;
    sbuf_init(&b);
    chat_build_msg(&b, m, false, true);
    size_t n = 0;
    if (!b.oom) {
        struct shared_frame *f = shared_frame_new(WS_OP_TEXT, b.p, b.len);
        if (f) {
            if (m->to_user) {
                n = send_to_user(srv, m->to_user, f, skip, HOLD_DIRECT);
                /* The sender's other devices see what was sent from this one. */
                if (strcmp(m->sender, m->to_user) != 0)
                    send_to_user(srv, m->sender, f, skip, HOLD_NONE);
            } else {
                n = send_to_room(srv, m->room, f, skip);
            }
            shared_frame_unref(f);
        }
    }
    srv->metrics.msgs_out[MK_MSG] += n;
    sbuf_release(&b);
    return n;
}

size_t chat_deliver(struct server *srv, const struct store_msg *m)
{
    return deliver(srv, m, NULL);
}

size_t chat_broadcast(struct server *srv, const char *json, size_t len)
{
    struct shared_frame *f = shared_frame_new(WS_OP_TEXT, json, len);
    if (!f)
        return 0;
    size_t n = 0;
    for (struct conn *c = srv->conns; c; c = c->next)
        if (c->chat && !c->close_sent) {
            conn_send_shared(c, f);
            n++;
        }
    shared_frame_unref(f);
    srv->metrics.msgs_out[MK_MSG] += n;
    return n;
}

/*
 * Tell the live connections sharing a room with cc's user that it came online / went offline. Walks
 * the in-memory room index (only live connections matter), each connection told once even when it
 * shares several rooms. Rooms with more than [limits] presence_fanout_max live connections are
 * skipped: a connect would otherwise cost O(members) and a mass reconnect O(members^2); clients of
 * big rooms ask with "members"/"presence" instead. Nothing is sent while the server drains.
 */
static void presence_event(struct server *srv, struct chat_conn *cc, bool online, int64_t last_seen)
{
    if (srv->draining || !cc->rooms)
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"type\":\"presence\",\"user\":");
    sbuf_add_json_str(&b, cc->user);
    sbuf_addf(&b, ",\"state\":\"%s\",\"last_seen\":", online ? "online" : "offline");
    sbuf_add_i64(&b, last_seen);
    sbuf_adds(&b, "}");
    struct shared_frame *f = b.oom ? NULL : shared_frame_new(WS_OP_TEXT, b.p, b.len);
    sbuf_release(&b);
    if (!f)
        return;
    uint64_t seq = ++srv->presence_seq;
    for (struct reg_member *r = cc->rooms; r; r = r->link) {
        struct reg_group *g = r->group;
        if (g->count > srv->cfg->presence_fanout_max)
            continue;
        struct reg_member *next;
        for (struct reg_member *m = g->head; m; m = next) {
            next = m->next;
            struct chat_conn *other = m->conn->chat;
            if (m->conn == cc->conn || !other || other->presence_seen == seq)
                continue;
            other->presence_seen = seq;
            conn_send_shared(m->conn, f);
        }
    }
    shared_frame_unref(f);
}

/* ---- room memberships of live connections ---- */

static bool conn_in_room(struct chat_conn *cc, const char *room)
{
    for (struct reg_member *m = cc->rooms; m; m = m->link)
        if (strcmp(m->group->key, room) == 0)
            return true;
    return false;
}

static void conn_room_add(struct server *srv, struct chat_conn *cc, const char *room)
{
    if (conn_in_room(cc, room))
        return;
    struct reg_member *m = registry_join(srv->rooms, room, cc->conn);
    if (!m)
        return;
    m->link = cc->rooms;
    cc->rooms = m;
}

static void conn_room_remove(struct server *srv, struct chat_conn *cc, const char *room)
{
    for (struct reg_member **pp = &cc->rooms; *pp; pp = &(*pp)->link)
        if (strcmp((*pp)->group->key, room) == 0) {
            struct reg_member *m = *pp;
            *pp = m->link;
            registry_leave(srv->rooms, m);
            return;
        }
}

/* A membership change applies to every live connection (device) of the user. */
static void user_room_change(struct server *srv, const char *user, const char *room, bool add)
{
    struct reg_group *g = registry_find(srv->users, user);
    for (struct reg_member *m = g ? g->head : NULL; m; m = m->next) {
        struct chat_conn *cc = m->conn->chat;
        if (!cc)
            continue;
        if (add)
            conn_room_add(srv, cc, room);
        else
            conn_room_remove(srv, cc, room);
    }
}

static int collect_room(void *ctx, const char *room)
{
    struct conn *c = ctx;
    struct chat_conn *cc = c->chat;
    conn_room_add(c->srv, cc, room);
    char **grown = realloc(cc->replay_rooms, (cc->num_replay_rooms + 1) * sizeof(*grown));
    if (!grown)
        return 1;
    cc->replay_rooms = grown;
    if (!(cc->replay_rooms[cc->num_replay_rooms] = strdup(room)))
        return 1;
    cc->num_replay_rooms++;
    return 0;
}

/* ---- token expiry ---- */

static void expiry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    if (!c->chat)
        return;
    log_info("conn %llu %s: token of %s expired", (unsigned long long)c->id, c->addr, c->chat->user);
    conn_close(c, WS_CLOSE_POLICY, "token expired", END_TOKEN_EXPIRED, false);
}

static void arm_expiry(struct conn *c)
{
    struct chat_conn *cc = c->chat;
    if (cc->exp_ms <= 0) {
        if (cc->expiry)
            evtimer_del(cc->expiry);
        return;
    }
    if (!cc->expiry && !(cc->expiry = evtimer_new(c->srv->base, expiry_cb, c)))
        return;
    /* Tokens are accepted up to exp + leeway (clock skew); the connection lives as long. */
    int64_t in = cc->exp_ms + c->srv->auth.leeway_ms - server_now_ms(c->srv);
    if (in < 0)
        in = 0;
    struct timeval tv = {.tv_sec = in / 1000, .tv_usec = (in % 1000) * 1000};
    evtimer_add(cc->expiry, &tv);
}

/* ---- open / end ---- */

int chat_open(struct conn *c, const struct auth_identity *id, const char *user_agent,
              const char *subprotocol)
{
    struct server *srv = srv_of(c);
    struct chat_conn *cc = calloc(1, sizeof(*cc));
    if (!cc)
        return -1;
    cc->conn = c;
    snprintf(cc->user, sizeof(cc->user), "%s", id->user);
    cc->exp_ms = id->exp_ms;
    c->chat = cc;
    int64_t now = server_now_ms(srv);

    server_tx_begin(srv);
    if (store_session_begin(srv->store, cc->user, c->addr, user_agent[0] ? user_agent : NULL,
                            subprotocol, now, &cc->session_id) != 0) {
        srv->metrics.store_errors++;
        log_error("store: session for %s: %s", cc->user, store_last_error(srv->store));
        cc->ended = true; /* nothing to end */
        free(cc);
        c->chat = NULL;
        return -1;
    }
    cc->user_mem = registry_join(srv->users, cc->user, c);
    if (!cc->user_mem) {
        chat_end(c, END_PROTOCOL_ERROR);
        return -1;
    }
    size_t devices = cc->user_mem->group->count;
    if (store_presence_set(srv->store, cc->user, true, (int)devices, now) != 0)
        log_error("store: presence of %s: %s", cc->user, store_last_error(srv->store));
    log_info("conn %llu %s: session %lld user %s (%zu connection%s)", (unsigned long long)c->id,
             c->addr, (long long)cc->session_id, cc->user, devices, devices == 1 ? "" : "s");

    if (store_user_rooms(srv->store, cc->user, collect_room, c) < 0)
        log_error("store: rooms of %s: %s", cc->user, store_last_error(srv->store));
    if (devices == 1)
        presence_event(srv, cc, true, now);

    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"type\":\"welcome\",\"session\":\"");
    sbuf_add_i64(&b, cc->session_id);
    sbuf_adds(&b, "\",\"user\":");
    sbuf_add_json_str(&b, cc->user);
    /* Seconds, as the protocol says; a fraction when the interval is not whole (tests use 200ms). */
    sbuf_adds(&b, ",\"ping_interval\":");
    if (srv->cfg->ping_interval_ms % 1000)
        sbuf_addf(&b, "%.3g", (double)srv->cfg->ping_interval_ms / 1000.0);
    else
        sbuf_add_i64(&b, srv->cfg->ping_interval_ms / 1000);
    /* The rooms this user is in, so a client on a new device knows them without asking. */
    sbuf_adds(&b, ",\"rooms\":[");
    for (size_t i = 0; i < cc->num_replay_rooms; i++) {
        if (i)
            sbuf_adds(&b, ",");
        sbuf_add_json_str(&b, cc->replay_rooms[i]);
    }
    sbuf_adds(&b, "]}");
    chat_send_sbuf(c, &b, MK_WELCOME);
    sbuf_release(&b);

    arm_expiry(c);
    cc->phase = REPLAY_DIRECT;
    chat_replay_continue(c);
    return 0;
}

void chat_end(struct conn *c, enum end_reason why)
{
    struct chat_conn *cc = c->chat;
    if (!cc || cc->ended)
        return;
    cc->ended = true;
    struct server *srv = srv_of(c);
    int64_t now = server_now_ms(srv);
    int64_t seen = c->last_rx_ms > 0 ? c->last_rx_ms : now;
    size_t left = cc->user_mem ? cc->user_mem->group->count - 1 : 0;
    /* Told while this connection is still in its rooms: they say who shares one with the user. */
    if (left == 0)
        presence_event(srv, cc, false, seen);
    while (cc->rooms) {
        struct reg_member *m = cc->rooms;
        cc->rooms = m->link;
        registry_leave(srv->rooms, m);
    }
    if (cc->user_mem)
        registry_leave(srv->users, cc->user_mem);
    cc->user_mem = NULL;

    server_tx_begin(srv);
    store_session_touch(srv->store, cc->session_id, seen);
    int rc = store_session_end(srv->store, cc->session_id, now, end_reason_name(why));
    if (rc != 0 && rc != STORE_ERR_NOTFOUND) /* NOTFOUND: already ended; the first end wins */
        log_error("store: end session %lld: %s", (long long)cc->session_id,
                  store_last_error(srv->store));
    if (store_presence_set(srv->store, cc->user, left > 0, (int)left, seen) != 0)
        log_error("store: presence of %s: %s", cc->user, store_last_error(srv->store));
    log_info("conn %llu %s: session %lld of %s ended (%s)", (unsigned long long)c->id, c->addr,
             (long long)cc->session_id, cc->user, end_reason_name(why));
    if (cc->expiry)
        event_free(cc->expiry);
    chat_replay_free(cc);
    free(cc);
    c->chat = NULL;
}

void chat_touch(struct conn *c)
{
    struct chat_conn *cc = c->chat;
    if (!cc || cc->ended || c->last_rx_ms <= 0)
        return;
    server_tx_begin(c->srv);
    if (store_session_touch(c->srv->store, cc->session_id, c->last_rx_ms) != 0)
        log_error("store: touch session %lld: %s", (long long)cc->session_id,
                  store_last_error(c->srv->store));
}

int chat_kick(struct server *srv, int64_t session_id)
{
    for (struct conn *c = srv->conns; c; c = c->next)
        if (c->chat && c->chat->session_id == session_id && !c->close_sent) {
            log_info("conn %llu %s: session %lld kicked by the API", (unsigned long long)c->id,
                     c->addr, (long long)session_id);
            conn_close(c, WS_CLOSE_POLICY, "kicked", END_KICKED, false);
            return 0;
        }
    return -1;
}

/* ---- client messages ---- */

/*
 * The part of a send after validation, shared by on_send and the fast path: membership, insert,
 * deliveries, receipt. to/room: exactly one is the target; text is the compact body (not taken).
 */
static void send_commit(struct conn *c, const char *to, const char *room, const char *text,
                        const char *cid)
{
    struct chat_conn *cc = c->chat;
    struct server *srv = srv_of(c);
    if (room) {
        bool member = false;
        if (store_room_is_member(srv->store, room, cc->user, &member) != 0) {
            chat_store_failed(c, "membership", "cid", cid);
            return;
        }
        if (!member) {
            send_error(c, "not_member", "join the room before sending to it", "cid", cid);
            return;
        }
    }
    server_tx_begin(srv);
    struct store_msg m = {
        .sender = cc->user,
        .to_user = to,
        .room = room,
        .body = text,
        .cid = cid,
        .created_at = server_now_ms(srv),
    };
    struct store_receipt r;
    if (store_msg_insert(srv->store, &m, &r) != 0) {
        chat_store_failed(c, "insert", "cid", cid);
        return;
    }
    /* Receipt and deliveries are held until the group commit makes the row durable. */
    if (!r.duplicate) {
        m.id = r.id;
        deliver(srv, &m, c);
    }
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"type\":\"sent\",\"cid\":");
    if (cid)
        sbuf_add_json_str(&b, cid);
    else
        sbuf_adds(&b, "null");
    sbuf_adds(&b, ",\"id\":");
    sbuf_add_i64(&b, r.id);
    sbuf_adds(&b, ",\"ts\":");
    sbuf_add_i64(&b, r.created_at);
    if (r.duplicate)
        sbuf_adds(&b, ",\"duplicate\":true");
    sbuf_adds(&b, "}");
    chat_send_sbuf(c, &b, MK_SENT);
    sbuf_release(&b);
}

static void on_send(struct conn *c, json_t *req)
{
    struct server *srv = srv_of(c);
    const char *cid;
    if (!opt_id(req, "cid", &cid)) {
        send_error(c, "bad_request", "cid must be a string of 1-128 bytes", NULL, NULL);
        return;
    }
    json_t *to = json_object_get(req, "to");
    json_t *room = json_object_get(req, "room");
    json_t *body = json_object_get(req, "body");
    if ((to != NULL) == (room != NULL)) {
        send_error(c, "bad_request", "send needs exactly one of to and room", "cid", cid);
        return;
    }
    const char *target = json_string_value(to ? to : room);
    if (!valid_name(target)) {
        send_error(c, "bad_request", to ? "to must be a valid user id" : "room must be a valid name",
                   "cid", cid);
        return;
    }
    if (!body) {
        send_error(c, "bad_request", "send needs a body", "cid", cid);
        return;
    }
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        send_error(c, "bad_request", "body cannot be encoded", "cid", cid);
        return;
    }
    if (strlen(text) > srv->cfg->max_body) {
        free(text);
        send_error(c, "too_large", "body is larger than [limits] max_body", "cid", cid);
        return;
    }
    send_commit(c, to ? target : NULL, room ? target : NULL, text, cid);
    free(text);
}

/* The ack after validation, shared by on_ack and the fast path. */
static void ack_commit(struct conn *c, int64_t id)
{
    struct server *srv = srv_of(c);
    server_tx_begin(srv);
    int rc = store_msg_ack(srv->store, c->chat->user, id, c->chat->session_id, server_now_ms(srv));
    if (rc == STORE_ERR_NOTFOUND)
        send_error(c, "bad_request", "no such message for you", NULL, NULL);
    else if (rc != 0)
        chat_store_failed(c, "ack", NULL, NULL);
}

static void on_ack(struct conn *c, json_t *req)
{
    json_t *id = json_object_get(req, "id");
    if (!json_is_integer(id) || json_integer_value(id) <= 0) {
        send_error(c, "bad_request", "ack needs a positive integer id", NULL, NULL);
        return;
    }
    ack_commit(c, json_integer_value(id));
}

static const char *room_arg(struct conn *c, json_t *req, const char *rid)
{
    const char *room = json_string_value(json_object_get(req, "room"));
    if (!valid_name(room)) {
        send_error(c, "bad_request", "room must be a valid name", rid ? "rid" : NULL, rid);
        return NULL;
    }
    return room;
}

static void send_room_event(struct conn *c, const char *type, const char *room)
{
    struct sbuf b;
    sbuf_init(&b);
    sbuf_addf(&b, "{\"type\":\"%s\",\"room\":", type);
    sbuf_add_json_str(&b, room);
    sbuf_adds(&b, "}");
    chat_send_sbuf(c, &b, MK_OTHER);
    sbuf_release(&b);
}

/* joined/left go to every device of the user: they all receive (or stop receiving) the room. */
static void send_room_event_all(struct server *srv, const char *user, const char *type,
                                const char *room)
{
    struct reg_group *g = registry_find(srv->users, user);
    for (struct reg_member *m = g ? g->head : NULL; m; m = m->next)
        send_room_event(m->conn, type, room);
}

/*
 * Tell the room's other live connections that user joined or left, so member lists stay current
 * without polling. Same bound as presence: rooms over presence_fanout_max are not told.
 */
static void member_event(struct server *srv, const char *room, const char *user, const char *event,
                         struct conn *skip)
{
    struct reg_group *g = registry_find(srv->rooms, room);
    if (!g || g->count > srv->cfg->presence_fanout_max)
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"type\":\"member\",\"room\":");
    sbuf_add_json_str(&b, room);
    sbuf_adds(&b, ",\"user\":");
    sbuf_add_json_str(&b, user);
    sbuf_addf(&b, ",\"event\":\"%s\"}", event);
    struct shared_frame *f = b.oom ? NULL : shared_frame_new(WS_OP_TEXT, b.p, b.len);
    sbuf_release(&b);
    if (!f)
        return;
    srv->metrics.msgs_out[MK_OTHER] += send_to_group(g, f, skip, HOLD_NONE, NULL);
    shared_frame_unref(f);
}

static void on_join(struct conn *c, json_t *req)
{
    struct server *srv = srv_of(c);
    const char *room = room_arg(c, req, NULL);
    if (!room)
        return;
    server_tx_begin(srv);
    bool joined = false;
    if (store_room_join(srv->store, room, c->chat->user, server_now_ms(srv), &joined) != 0) {
        chat_store_failed(c, "join", NULL, NULL);
        return;
    }
    /* Told before the joiner's own connections are in the room: they get "joined" instead. */
    if (joined)
        member_event(srv, room, c->chat->user, "joined", c);
    user_room_change(srv, c->chat->user, room, true);
    send_room_event_all(srv, c->chat->user, "joined", room);
}

static void on_leave(struct conn *c, json_t *req)
{
    struct server *srv = srv_of(c);
    const char *room = room_arg(c, req, NULL);
    if (!room)
        return;
    server_tx_begin(srv);
    int rc = store_room_leave(srv->store, room, c->chat->user);
    if (rc == STORE_ERR_NOTFOUND) {
        send_error(c, "not_member", "not a member of this room", NULL, NULL);
        return;
    }
    if (rc != 0) {
        chat_store_failed(c, "leave", NULL, NULL);
        return;
    }
    user_room_change(srv, c->chat->user, room, false);
    member_event(srv, room, c->chat->user, "left", c);
    send_room_event_all(srv, c->chat->user, "left", room);
}

struct history_ctx {
    struct sbuf *b;
    int n;
};

static int history_item(void *ctx, const struct store_msg *m)
{
    struct history_ctx *h = ctx;
    if (h->n++)
        sbuf_adds(h->b, ",");
    chat_build_msg(h->b, m, false, false);
    return 0;
}

static void on_history(struct conn *c, json_t *req)
{
    struct server *srv = srv_of(c);
    const char *rid;
    if (!opt_id(req, "rid", &rid)) {
        send_error(c, "bad_request", "rid must be a string of 1-128 bytes", NULL, NULL);
        return;
    }
    json_t *with = json_object_get(req, "with");
    json_t *room = json_object_get(req, "room");
    json_t *jb = json_object_get(req, "before");
    json_t *jl = json_object_get(req, "limit");
    if ((with != NULL) == (room != NULL)) {
        send_error(c, "bad_request", "history needs exactly one of with and room", "rid", rid);
        return;
    }
    const char *name = json_string_value(with ? with : room);
    if (!valid_name(name)) {
        send_error(c, "bad_request", "with/room must be a valid name", "rid", rid);
        return;
    }
    if ((jb && (!json_is_integer(jb) || json_integer_value(jb) < 0)) ||
        (jl && (!json_is_integer(jl) || json_integer_value(jl) < 1 ||
                json_integer_value(jl) > HISTORY_MAX))) {
        send_error(c, "bad_request", "before must be an id >= 0 and limit 1-100", "rid", rid);
        return;
    }
    int64_t before = jb ? json_integer_value(jb) : 0;
    int limit = jl ? (int)json_integer_value(jl) : HISTORY_DEFAULT;
    if (room) {
        bool member = false;
        if (store_room_is_member(srv->store, name, c->chat->user, &member) != 0) {
            chat_store_failed(c, "membership", "rid", rid);
            return;
        }
        if (!member) {
            send_error(c, "not_member", "join the room to read its history", "rid", rid);
            return;
        }
    }
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"type\":\"history\"");
    if (rid) {
        sbuf_adds(&b, ",\"rid\":");
        sbuf_add_json_str(&b, rid);
    }
    sbuf_adds(&b, room ? ",\"room\":" : ",\"with\":");
    sbuf_add_json_str(&b, name);
    sbuf_adds(&b, ",\"items\":[");
    struct history_ctx h = {&b, 0};
    bool more = false;
    int rc = room ? store_history_room(srv->store, name, before, limit, history_item, &h, &more)
                  : store_history_direct(srv->store, c->chat->user, name, before, limit,
                                         history_item, &h, &more);
    if (rc < 0) {
        sbuf_release(&b);
        chat_store_failed(c, "history", "rid", rid);
        return;
    }
    sbuf_addf(&b, "],\"more\":%s}", more ? "true" : "false");
    chat_send_sbuf(c, &b, MK_OTHER);
    sbuf_release(&b);
}

static void add_presence_item(struct server *srv, struct sbuf *b, const char *user)
{
    bool online = false;
    int64_t last_seen = 0;
    /* The registry is the truth for live users; the store keeps last_seen for offline ones. */
    if (registry_count(srv->users, user) > 0) {
        online = true;
        last_seen = server_now_ms(srv);
    } else if (store_presence_get(srv->store, user, NULL, NULL, &last_seen) != 0) {
        last_seen = 0;
    }
    sbuf_adds(b, "\"user\":");
    sbuf_add_json_str(b, user);
    sbuf_addf(b, ",\"state\":\"%s\",\"last_seen\":", online ? "online" : "offline");
    if (last_seen)
        sbuf_add_i64(b, last_seen);
    else
        sbuf_adds(b, "null");
}

static void on_presence(struct conn *c, json_t *req)
{
    struct server *srv = srv_of(c);
    const char *rid;
    if (!opt_id(req, "rid", &rid)) {
        send_error(c, "bad_request", "rid must be a string of 1-128 bytes", NULL, NULL);
        return;
    }
    json_t *users = json_object_get(req, "users");
    if (!json_is_array(users) || json_array_size(users) == 0 ||
        json_array_size(users) > PRESENCE_MAX) {
        send_error(c, "bad_request", "users must be a list of 1-100 user ids", "rid", rid);
        return;
    }
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u)
    {
        if (!valid_name(json_string_value(u))) {
            send_error(c, "bad_request", "users must be a list of 1-100 user ids", "rid", rid);
            return;
        }
    }
    json_array_foreach(users, i, u)
    {
        struct sbuf b;
        sbuf_init(&b);
        sbuf_adds(&b, "{\"type\":\"presence\",");
        if (rid) {
            sbuf_adds(&b, "\"rid\":");
            sbuf_add_json_str(&b, rid);
            sbuf_adds(&b, ",");
        }
        add_presence_item(srv, &b, json_string_value(u));
        sbuf_adds(&b, "}");
        chat_send_sbuf(c, &b, MK_OTHER);
        sbuf_release(&b);
    }
}

struct members_ctx {
    struct server *srv;
    struct sbuf *b;
    int n;
};

static int member_item(void *ctx, const char *user)
{
    struct members_ctx *mc = ctx;
    sbuf_adds(mc->b, mc->n++ ? ",{" : "{");
    add_presence_item(mc->srv, mc->b, user);
    sbuf_adds(mc->b, "}");
    return 0;
}

static void on_members(struct conn *c, json_t *req)
{
    struct server *srv = srv_of(c);
    const char *rid;
    if (!opt_id(req, "rid", &rid)) {
        send_error(c, "bad_request", "rid must be a string of 1-128 bytes", NULL, NULL);
        return;
    }
    const char *room = room_arg(c, req, rid);
    if (!room)
        return;
    bool member = false;
    if (store_room_is_member(srv->store, room, c->chat->user, &member) != 0) {
        chat_store_failed(c, "membership", "rid", rid);
        return;
    }
    if (!member) {
        send_error(c, "not_member", "join the room to see its members", "rid", rid);
        return;
    }
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"type\":\"members\"");
    if (rid) {
        sbuf_adds(&b, ",\"rid\":");
        sbuf_add_json_str(&b, rid);
    }
    sbuf_adds(&b, ",\"room\":");
    sbuf_add_json_str(&b, room);
    sbuf_adds(&b, ",\"users\":[");
    struct members_ctx mc = {srv, &b, 0};
    if (store_room_members(srv->store, room, member_item, &mc) < 0) {
        sbuf_release(&b);
        chat_store_failed(c, "members", "rid", rid);
        return;
    }
    sbuf_adds(&b, "]}");
    chat_send_sbuf(c, &b, MK_OTHER);
    sbuf_release(&b);
}

static void on_refresh(struct conn *c, json_t *req)
{
    struct server *srv = srv_of(c);
    const char *token = json_string_value(json_object_get(req, "token"));
    if (!token) {
        send_error(c, "bad_request", "refresh needs a token", NULL, NULL);
        return;
    }
    struct auth_identity id;
    char why[160];
    if (auth_verify_token(&srv->auth, token, server_now_ms(srv), &id, why, sizeof(why)) != 0) {
        send_error(c, "unauthorized", why, NULL, NULL);
        return;
    }
    if (strcmp(id.user, c->chat->user) != 0) {
        send_error(c, "unauthorized", "token is for another user", NULL, NULL);
        return;
    }
    c->chat->exp_ms = id.exp_ms;
    arm_expiry(c);
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"type\":\"refreshed\",\"exp\":");
    if (id.exp_ms)
        sbuf_add_i64(&b, id.exp_ms);
    else
        sbuf_adds(&b, "null");
    sbuf_adds(&b, "}");
    chat_send_sbuf(c, &b, MK_OTHER);
    sbuf_release(&b);
}

static const struct {
    const char *type;
    void (*fn)(struct conn *, json_t *);
    enum metrics_kind kind;
} handlers[] = {
    {"send", on_send, MK_SEND},           {"ack", on_ack, MK_ACK},
    {"join", on_join, MK_JOIN},           {"leave", on_leave, MK_LEAVE},
    {"history", on_history, MK_HISTORY},  {"presence", on_presence, MK_PRESENCE},
    {"members", on_members, MK_MEMBERS},  {"refresh", on_refresh, MK_REFRESH},
};

/* Take a rate-limit token; false (after answering or closing) when the connection is over its rate. */
static bool rate_ok(struct conn *c)
{
    struct chat_conn *cc = c->chat;
    struct server *srv = srv_of(c);
    if (ratelimit_take(&cc->rl, server_now_ms(srv), srv->cfg->rate, srv->cfg->rate_burst)) {
        cc->strikes = 0;
        return true;
    }
    if (++cc->strikes >= RATE_STRIKES_MAX)
        conn_close(c, WS_CLOSE_POLICY, "rate limited", END_RATE_LIMITED, false);
    else
        send_error(c, "rate_limited", "too many messages; slow down", NULL, NULL);
    return false;
}

/*
 * Fast path for the two hot frames, send and ack, without building a jansson tree. It answers only
 * when every check passes; on any doubt it returns false having done nothing, and the jansson path
 * below gives today's exact answer (errors included).
 */
static bool fast_ack(struct conn *c, const char *buf, const struct json_top *t)
{
    if (!t->id.present || t->id.kind != JSON_KIND_NUMBER || t->id.reals != 0 ||
        buf[t->id.start] == '-')
        return false;
    int64_t id = 0;
    for (size_t i = 0; i < t->id.len; i++) /* json_scan_top bounded it to int64 */
        id = id * 10 + (buf[t->id.start + i] - '0');
    if (id <= 0)
        return false;
    c->srv->metrics.msgs_in[MK_ACK]++;
    ack_commit(c, id);
    return true;
}

static bool fast_send(struct conn *c, const char *buf, const struct json_top *t)
{
    struct server *srv = srv_of(c);
    char cid[CID_MAX + 1], target[AUTH_USER_MAX + 1];
    if (t->cid.present && (t->cid.kind != JSON_KIND_STRING ||
                           json_scan_string(buf + t->cid.start, t->cid.len, cid, sizeof(cid)) < 1))
        return false;
    const struct json_field *f = t->to.present ? &t->to : &t->room;
    if (t->to.present == t->room.present || f->kind != JSON_KIND_STRING || !t->body.present ||
        t->body.reals != 0) /* jansson reprints reals, maybe longer: leave max_body to it */
        return false;
    int n = json_scan_string(buf + f->start, f->len, target, sizeof(target));
    if (n < 0 || !auth_user_valid(target, (size_t)n))
        return false;
    char *text = malloc(t->body.len + 1);
    size_t tlen = text ? json_scan_compact(buf + t->body.start, t->body.len, text, t->body.len + 1)
                       : 0;
    if (tlen == 0 || tlen > srv->cfg->max_body) {
        free(text);
        return false;
    }
    if (rate_ok(c)) {
        srv->metrics.msgs_in[MK_SEND]++;
        send_commit(c, t->to.present ? target : NULL, t->room.present ? target : NULL, text,
                    t->cid.present ? cid : NULL);
    }
    free(text);
    return true;
}

static bool fast_path(struct conn *c, const uint8_t *data, size_t len)
{
    const char *buf = (const char *)data;
    struct json_top t;
    char type[8];
    if (json_scan_top(buf, len, &t) != JSON_SCAN_OK || !t.type.present ||
        t.type.kind != JSON_KIND_STRING ||
        json_scan_string(buf + t.type.start, t.type.len, type, sizeof(type)) < 0)
        return false;
    if (strcmp(type, "ack") == 0)
        return fast_ack(c, buf, &t);
    if (strcmp(type, "send") == 0)
        return fast_send(c, buf, &t);
    return false;
}

void chat_on_message(struct conn *c, uint8_t opcode, const uint8_t *data, size_t len)
{
    struct server *srv = srv_of(c);
    if (!c->chat || c->close_sent)
        return;
    if (opcode != WS_OP_TEXT) {
        srv->metrics.msgs_in[MK_OTHER]++;
        if (rate_ok(c))
            send_error(c, "bad_request", "binary frames are not accepted here; send JSON text", NULL,
                       NULL);
        return;
    }
    if (fast_path(c, data, len))
        return;
    json_error_t jerr;
    json_t *req = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *type = json_string_value(json_object_get(req, "type"));
    /*
     * Acks are exempt from the rate limit: a client catching up acks hundreds of replayed messages at
     * once, and an ack only moves a delivery state forward. Everything else pays one token.
     */
    if (!(type && strcmp(type, "ack") == 0) && !rate_ok(c)) {
        json_decref(req);
        return;
    }
    if (!req || !json_is_object(req)) {
        srv->metrics.msgs_in[MK_OTHER]++;
        send_error(c, "bad_json", req ? "a JSON object is expected" : jerr.text, NULL, NULL);
        json_decref(req);
        return;
    }
    for (size_t i = 0; type && i < sizeof(handlers) / sizeof(handlers[0]); i++)
        if (strcmp(type, handlers[i].type) == 0) {
            srv->metrics.msgs_in[handlers[i].kind]++;
            handlers[i].fn(c, req);
            json_decref(req);
            return;
        }
    srv->metrics.msgs_in[MK_OTHER]++;
    send_error(c, "unknown_type", type ? "unknown message type" : "type must be a string", NULL,
               NULL);
    json_decref(req);
}
