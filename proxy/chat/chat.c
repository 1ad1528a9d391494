/*
 * chat.c -- the chat protocol's client frames: parses JSON (jansson; send and ack first try the
 * allocation-free fast path in chat_fast.c), validates, writes through the store inside the loop's
 * group-commit transaction, and answers. Replies and deliveries are held until the commit.
 */
#include <assert.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "chat/chat_internal.h"
#include "chat/msg_json.h"
#include "store.h"

#define RATE_STRIKES_MAX 20 /* rate-limited messages tolerated before the connection is closed */

/* ---- small helpers ---- */

void chat_send_sbuf(struct chat_conn *cc, struct sbuf *b, enum metrics_kind kind)
{
    if (b->oom)
        return;
    cc->chat->lp->metrics.msgs_out[kind]++;
    conn_send_text(cc->conn, b->p, b->len);
}

void chat_send_error(struct chat_conn *cc, const char *code, const char *message,
                     const char *id_key, const char *id_val)
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
    chat_send_sbuf(cc, &b, MK_ERROR);
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

bool chat_name_valid(const char *s)
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
    if (!json_is_string(v) || json_string_length(v) > CHAT_CID_MAX || json_string_length(v) == 0)
        return false;
    *out = json_string_value(v);
    return true;
}

void chat_store_failed(struct chat_conn *cc, const char *what, const char *id_key,
                       const char *id_val)
{
    cc->chat->lp->metrics.store_errors++;
    log_error("store: %s for %s: %s", what, cc->user, store_last_error(cc->chat->store));
    chat_send_error(cc, "internal", "storage error, try again", id_key, id_val);
}

/* ---- client messages ---- */

/*
 * The part of a send after validation, shared by on_send and the fast path: membership, insert,
 * deliveries, receipt. to/room: exactly one is the target; text is the compact body (not taken).
 */
void chat_send_commit(struct chat_conn *cc, const char *to, const char *room, const char *text,
                      const char *cid)
{
    struct chat *ch = cc->chat;
    assert(!cc->ended && (to == NULL) != (room == NULL));
    if (room) {
        bool member = false;
        if (store_room_is_member(ch->store, room, cc->user, &member) != 0) {
            chat_store_failed(cc, "membership", "cid", cid);
            return;
        }
        if (!member) {
            chat_not_member(cc, room, "send to it", "cid", cid);
            return;
        }
    }
    struct store_msg m = {
        .sender = cc->user,
        .to_user = to,
        .room = room,
        .body = text,
        .cid = cid,
        .created_at = loop_now_ms(ch->lp),
    };
    struct store_receipt r;
    if (chat_post(ch, &m, cc->conn, &r, NULL) != 0) {
        chat_store_failed(cc, "insert", "cid", cid);
        return;
    }
    /* The receipt, like the deliveries, is held until the group commit makes the row durable. */
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
    chat_send_sbuf(cc, &b, MK_SENT);
    sbuf_release(&b);
}

static void on_send(struct chat_conn *cc, json_t *req)
{
    struct chat *ch = cc->chat;
    const char *cid;
    if (!opt_id(req, "cid", &cid)) {
        chat_send_error(cc, "bad_request", "cid must be a string of 1-128 bytes", NULL, NULL);
        return;
    }
    json_t *to = json_object_get(req, "to");
    json_t *room = json_object_get(req, "room");
    json_t *body = json_object_get(req, "body");
    if ((to != NULL) == (room != NULL)) {
        chat_send_error(cc, "bad_request", "send needs exactly one of to and room", "cid", cid);
        return;
    }
    const char *target = json_string_value(to ? to : room);
    if (!chat_name_valid(target)) {
        chat_send_error(cc, "bad_request", to ? "to must be a valid user id" : "room must be a valid name",
                   "cid", cid);
        return;
    }
    if (!body) {
        chat_send_error(cc, "bad_request", "send needs a body", "cid", cid);
        return;
    }
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        chat_send_error(cc, "bad_request", "body cannot be encoded", "cid", cid);
        return;
    }
    if (strlen(text) > ch->cfg->max_body) {
        free(text);
        chat_send_error(cc, "too_large", "body is larger than [limits] max_body", "cid", cid);
        return;
    }
    chat_send_commit(cc, to ? target : NULL, room ? target : NULL, text, cid);
    free(text);
}

/* The ack after validation, shared by on_ack and the fast path. */
void chat_ack_commit(struct chat_conn *cc, int64_t id)
{
    struct chat *ch = cc->chat;
    loop_tx_begin(ch->lp);
    bool first = false;
    int64_t now = loop_now_ms(ch->lp);
    int rc = store_msg_ack_first(ch->store, cc->user, id, cc->session_id, now, &first);
    if (rc == STORE_ERR_NOTFOUND)
        chat_send_error(cc, "bad_request", "no such message for you", NULL, NULL);
    else if (rc != 0)
        chat_store_failed(cc, "ack", NULL, NULL);
    else if (first)
        chat_delivered_receipt(ch, id, cc->user, now);
}

static void on_ack(struct chat_conn *cc, json_t *req)
{
    json_t *id = json_object_get(req, "id");
    if (!json_is_integer(id) || json_integer_value(id) <= 0) {
        chat_send_error(cc, "bad_request", "ack needs a positive integer id", NULL, NULL);
        return;
    }
    chat_ack_commit(cc, json_integer_value(id));
}

static const char *room_arg(struct chat_conn *cc, json_t *req, const char *rid)
{
    const char *room = json_string_value(json_object_get(req, "room"));
    if (!chat_name_valid(room)) {
        chat_send_error(cc, "bad_request", "room must be a valid name", rid ? "rid" : NULL, rid);
        return NULL;
    }
    return room;
}

static void on_join(struct chat_conn *cc, json_t *req)
{
    const char *room = room_arg(cc, req, NULL);
    if (room)
        chat_room_join(cc, room);
}

static void on_leave(struct chat_conn *cc, json_t *req)
{
    const char *room = room_arg(cc, req, NULL);
    if (room)
        chat_room_leave(cc, room);
}

/* {"type":"conversations","before":ID,"limit":N,"rid":..}: rooms and DMs, newest first. */
static void on_conversations(struct chat_conn *cc, json_t *req)
{
    struct chat *ch = cc->chat;
    const char *rid;
    if (!opt_id(req, "rid", &rid)) {
        chat_send_error(cc, "bad_request", "rid must be a string of 1-128 bytes", NULL, NULL);
        return;
    }
    json_t *jb = json_object_get(req, "before");
    json_t *jl = json_object_get(req, "limit");
    if ((jb && (!json_is_integer(jb) || json_integer_value(jb) < 0)) ||
        (jl && (!json_is_integer(jl) || json_integer_value(jl) < 1 ||
                json_integer_value(jl) > CHAT_HISTORY_MAX))) {
        chat_send_error(cc, "bad_request", "before must be an id >= 0 and limit 1-100", "rid", rid);
        return;
    }
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"type\":\"conversations\",");
    if (rid) {
        sbuf_adds(&b, "\"rid\":");
        sbuf_add_json_str(&b, rid);
        sbuf_adds(&b, ",");
    }
    if (chat_conversations_json(ch, cc->user, jb ? json_integer_value(jb) : 0,
                                jl ? (int)json_integer_value(jl) : CHAT_HISTORY_DEFAULT, &b) < 0) {
        sbuf_release(&b);
        chat_store_failed(cc, "conversations", "rid", rid);
        return;
    }
    sbuf_adds(&b, "}");
    chat_send_sbuf(cc, &b, MK_OTHER);
    sbuf_release(&b);
}

struct history_ctx {
    struct sbuf *b;
    int n;
    size_t budget; /* bytes an answer may take: half the send queue */
    bool cut;      /* stopped at the budget: there is more */
};

/*
 * One page item. A page stops early at the byte budget (never before its first item, so paging with
 * "before" always moves): 100 items of a large body would otherwise overrun the send queue with one
 * answer, and a client asking for many pages at once would hold that much each.
 */
static int history_item(void *ctx, const struct store_msg *m)
{
    struct history_ctx *h = ctx;
    if (h->n++)
        sbuf_adds(h->b, ",");
    chat_build_msg(h->b, m, false, false);
    if (h->b->len > h->budget) {
        h->cut = true;
        return 1;
    }
    return 0;
}

static void on_history(struct chat_conn *cc, json_t *req)
{
    struct chat *ch = cc->chat;
    const char *rid;
    if (!opt_id(req, "rid", &rid)) {
        chat_send_error(cc, "bad_request", "rid must be a string of 1-128 bytes", NULL, NULL);
        return;
    }
    json_t *with = json_object_get(req, "with");
    json_t *room = json_object_get(req, "room");
    json_t *jb = json_object_get(req, "before");
    json_t *jl = json_object_get(req, "limit");
    if ((with != NULL) == (room != NULL)) {
        chat_send_error(cc, "bad_request", "history needs exactly one of with and room", "rid", rid);
        return;
    }
    const char *name = json_string_value(with ? with : room);
    if (!chat_name_valid(name)) {
        chat_send_error(cc, "bad_request", "with/room must be a valid name", "rid", rid);
        return;
    }
    if ((jb && (!json_is_integer(jb) || json_integer_value(jb) < 0)) ||
        (jl && (!json_is_integer(jl) || json_integer_value(jl) < 1 ||
                json_integer_value(jl) > CHAT_HISTORY_MAX))) {
        chat_send_error(cc, "bad_request", "before must be an id >= 0 and limit 1-100", "rid", rid);
        return;
    }
    int64_t before = jb ? json_integer_value(jb) : 0;
    int limit = jl ? (int)json_integer_value(jl) : CHAT_HISTORY_DEFAULT;
    if (room) {
        bool member = false;
        if (store_room_is_member(ch->store, name, cc->user, &member) != 0) {
            chat_store_failed(cc, "membership", "rid", rid);
            return;
        }
        if (!member) {
            chat_not_member(cc, name, "read its history", "rid", rid);
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
    struct history_ctx h = {&b, 0, ch->cfg->send_queue / 2, false};
    bool more = false;
    int rc = room ? store_history_room(ch->store, name, before, limit, history_item, &h, &more)
                  : store_history_direct(ch->store, cc->user, name, before, limit,
                                         history_item, &h, &more);
    more = more || h.cut;
    if (rc < 0) {
        sbuf_release(&b);
        chat_store_failed(cc, "history", "rid", rid);
        return;
    }
    sbuf_addf(&b, "],\"more\":%s}", more ? "true" : "false");
    chat_send_sbuf(cc, &b, MK_OTHER);
    sbuf_release(&b);
}

/* "user":..,"state":..,"last_seen":.. of one user (the object's braces are the caller's). */
static void add_presence_item(struct chat *ch, struct sbuf *b, const char *user)
{
    struct chat_presence p;
    chat_presence(ch, user, &p);
    sbuf_adds(b, "\"user\":");
    sbuf_add_json_str(b, user);
    sbuf_addf(b, ",\"state\":\"%s\",\"last_seen\":", p.online ? "online" : "offline");
    if (p.last_seen)
        sbuf_add_i64(b, p.last_seen);
    else
        sbuf_adds(b, "null");
}

static void on_presence(struct chat_conn *cc, json_t *req)
{
    struct chat *ch = cc->chat;
    const char *rid;
    if (!opt_id(req, "rid", &rid)) {
        chat_send_error(cc, "bad_request", "rid must be a string of 1-128 bytes", NULL, NULL);
        return;
    }
    json_t *users = json_object_get(req, "users");
    if (!json_is_array(users) || json_array_size(users) == 0 ||
        json_array_size(users) > CHAT_PRESENCE_MAX) {
        chat_send_error(cc, "bad_request", "users must be a list of 1-100 user ids", "rid", rid);
        return;
    }
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u)
    {
        if (!chat_name_valid(json_string_value(u))) {
            chat_send_error(cc, "bad_request", "users must be a list of 1-100 user ids", "rid", rid);
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
        add_presence_item(ch, &b, json_string_value(u));
        sbuf_adds(&b, "}");
        chat_send_sbuf(cc, &b, MK_OTHER);
        sbuf_release(&b);
    }
}

struct members_ctx {
    struct chat *ch;
    struct sbuf *b;
    int n;
};

static int member_item(void *ctx, const char *user)
{
    struct members_ctx *mc = ctx;
    sbuf_adds(mc->b, mc->n++ ? ",{" : "{");
    add_presence_item(mc->ch, mc->b, user);
    sbuf_adds(mc->b, "}");
    return 0;
}

static void on_members(struct chat_conn *cc, json_t *req)
{
    struct chat *ch = cc->chat;
    const char *rid;
    if (!opt_id(req, "rid", &rid)) {
        chat_send_error(cc, "bad_request", "rid must be a string of 1-128 bytes", NULL, NULL);
        return;
    }
    const char *room = room_arg(cc, req, rid);
    if (!room)
        return;
    bool member = false;
    if (store_room_is_member(ch->store, room, cc->user, &member) != 0) {
        chat_store_failed(cc, "membership", "rid", rid);
        return;
    }
    if (!member) {
        chat_not_member(cc, room, "see its members", "rid", rid);
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
    struct members_ctx mc = {ch, &b, 0};
    if (store_room_members(ch->store, room, member_item, &mc) < 0) {
        sbuf_release(&b);
        chat_store_failed(cc, "members", "rid", rid);
        return;
    }
    sbuf_adds(&b, "]}");
    chat_send_sbuf(cc, &b, MK_OTHER);
    sbuf_release(&b);
}

static void on_refresh(struct chat_conn *cc, json_t *req)
{
    struct chat *ch = cc->chat;
    const char *token = json_string_value(json_object_get(req, "token"));
    if (!token) {
        chat_send_error(cc, "bad_request", "refresh needs a token", NULL, NULL);
        return;
    }
    struct auth_identity id;
    char why[160];
    if (auth_verify_token(ch->auth, token, loop_now_ms(ch->lp), &id, why, sizeof(why)) != 0) {
        chat_send_error(cc, "unauthorized", why, NULL, NULL);
        return;
    }
    if (strcmp(id.user, cc->user) != 0) {
        chat_send_error(cc, "unauthorized", "token is for another user", NULL, NULL);
        return;
    }
    cc->exp_ms = id.exp_ms; /* the expiry sweep reads it */
    if (chat_claim_set(cc, &id) != 0) {
        chat_send_error(cc, "internal", "out of memory", NULL, NULL);
        return;
    }
    chat_claim_revoke(cc); /* the new token decides which claimed rooms stay */
    if (cc->ended)
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"type\":\"refreshed\",\"exp\":");
    if (id.exp_ms)
        sbuf_add_i64(&b, id.exp_ms);
    else
        sbuf_adds(&b, "null");
    sbuf_adds(&b, "}");
    chat_send_sbuf(cc, &b, MK_OTHER);
    sbuf_release(&b);
}

static const struct {
    const char *type;
    void (*fn)(struct chat_conn *, json_t *);
    enum metrics_kind kind;
} handlers[] = {
    {"send", on_send, MK_SEND},           {"ack", on_ack, MK_ACK},
    {"join", on_join, MK_JOIN},           {"leave", on_leave, MK_LEAVE},
    {"history", on_history, MK_HISTORY},  {"presence", on_presence, MK_PRESENCE},
    {"members", on_members, MK_MEMBERS},  {"refresh", on_refresh, MK_REFRESH},
    {"conversations", on_conversations, MK_OTHER},
};

bool chat_rate_ok(struct chat_conn *cc, bool ack)
{
    struct chat *ch = cc->chat;
    int64_t now = loop_now_ms(ch->lp);
    /* Each bucket counts its own strikes: acks going through do not forgive a send flood. */
    unsigned *strikes = ack ? &cc->ack_strikes : &cc->strikes;
    bool ok = ack ? ratelimit_take(&cc->ack_rl, now, ch->cfg->ack_rate, ch->cfg->ack_burst)
                  : ratelimit_take(&cc->rl, now, ch->cfg->rate, ch->cfg->rate_burst);
    if (ok) {
        *strikes = 0;
        return true;
    }
    if (++*strikes >= RATE_STRIKES_MAX)
        conn_close(cc->conn, WS_CLOSE_POLICY, "rate limited", END_RATE_LIMITED);
    else
        chat_send_error(cc, "rate_limited", "too many messages; slow down", NULL, NULL);
    return false;
}

/*
 * Fast path for the two hot frames, send and ack, without building a jansson tree. It answers only
 * when every check passes; on any doubt it returns false having done nothing, and the jansson path
 * below gives today's exact answer (errors included).
 */
static void dispatch(struct chat_conn *cc, uint8_t opcode, const uint8_t *data, size_t len)
{
    assert(cc->busy > 0 && !cc->ended);
    struct chat *ch = cc->chat;
    if (opcode != WS_OP_TEXT) {
        ch->lp->metrics.msgs_in[MK_OTHER]++;
        if (chat_rate_ok(cc, false))
            chat_send_error(cc, "bad_request", "binary frames are not accepted here; send JSON text", NULL,
                       NULL);
        return;
    }
    if (chat_fast_path(cc, data, len))
        return;
    json_error_t jerr;
    json_t *req = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *type = json_string_value(json_object_get(req, "type"));
    /*
     * Acks have a bucket of their own ([limits] ack_rate, ack_burst): a client catching up acks
     * hundreds of replayed messages at once, but an endless stream of them must not be free either
     * (each is a store write). Everything else pays one token of rate.
     */
    if (!chat_rate_ok(cc, type && strcmp(type, "ack") == 0)) {
        json_decref(req);
        return;
    }
    if (!req || !json_is_object(req)) {
        ch->lp->metrics.msgs_in[MK_OTHER]++;
        chat_send_error(cc, "bad_json", req ? "a JSON object is expected" : jerr.text, NULL, NULL);
        json_decref(req);
        return;
    }
    for (size_t i = 0; type && i < sizeof(handlers) / sizeof(handlers[0]); i++)
        if (strcmp(type, handlers[i].type) == 0) {
            ch->lp->metrics.msgs_in[handlers[i].kind]++;
            handlers[i].fn(cc, req);
            json_decref(req);
            return;
        }
    ch->lp->metrics.msgs_in[MK_OTHER]++;
    if (!type) {
        chat_send_error(cc, "unknown_type",
                        json_object_get(req, "type") ? "type must be a string" : "type is missing",
                        NULL, NULL);
        json_decref(req);
        return;
    }
    /* Name what came (at most 32 bytes, cut on a UTF-8 boundary; the JSON writer escapes it). */
    size_t n = strlen(type);
    size_t cut = n > 32 ? 32 : n;
    while (cut > 0 && cut < n && ((unsigned char)type[cut] & 0xC0) == 0x80)
        cut--;
    struct sbuf msg;
    sbuf_init(&msg);
    sbuf_adds(&msg, "unknown message type \"");
    sbuf_add(&msg, type, cut);
    sbuf_adds(&msg, cut < n ? "...\" (types:" : "\" (types:");
    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
        sbuf_addf(&msg, "%s %s", i ? "," : "", handlers[i].type);
    sbuf_add(&msg, ")", 2); /* with its NUL */
    chat_send_error(cc, "unknown_type", msg.oom ? "unknown message type" : msg.p, NULL, NULL);
    sbuf_release(&msg);
    json_decref(req);
}

/* The conn_handler's on_message: one client message, cc protected for the whole handling. */
void chat_on_message(struct conn *c, void *data, uint8_t opcode, const uint8_t *p, size_t len)
{
    (void)c;
    struct chat_conn *cc = data;
    /* Not "is the connection open": on the store fiber (PostgreSQL) a frame that arrived before the
     * client's close is handled after the transport saw that close, as it is at once without. */
    if (cc->ended)
        return;
    chat_conn_enter(cc);
    dispatch(cc, opcode, p, len);
    chat_conn_leave(cc);
}
