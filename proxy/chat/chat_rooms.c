/*
 * chat_rooms.c -- who may be in which room, and the room changes that come from outside a client's own
 * frames: the backend adds or removes a member or deletes a room, a refreshed token narrows its
 * claim. Rooms are closed unless [rooms] open lists them: then only members the backend added, or
 * users whose token's "rooms" claim allows it, may join, send, read or list members. Also the
 * conversation list (client frame and API).
 */
#include <assert.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/registry.h"
#include "base/utf8.h"
#include "chat/chat_internal.h"
#include "store.h"

#define PREVIEW_MAX 100 /* bytes of a conversation's last message shown in the list */

bool chat_room_is_open(const struct chat *ch, const char *room)
{
    return auth_room_pattern_match((const char *const *)ch->cfg->rooms_open.items,
                                   ch->cfg->rooms_open.n, room);
}

enum chat_access chat_room_access(const struct chat_conn *cc, const char *room)
{
    if (chat_room_is_open(cc->chat, room))
        return CHAT_ACCESS_OPEN;
    const char *list[AUTH_ROOMS_MAX];
    for (size_t i = 0; i < cc->num_claim; i++)
        list[i] = cc->claim[i];
    if (cc->num_claim && auth_room_pattern_match(list, cc->num_claim, room))
        return CHAT_ACCESS_CLAIM;
    return CHAT_ACCESS_NONE;
}

void chat_not_member(struct chat_conn *cc, const char *room, const char *doing, const char *id_key,
                     const char *id_val)
{
    char msg[128];
    if (chat_room_access(cc, room) == CHAT_ACCESS_NONE) {
        snprintf(msg, sizeof(msg), "room is closed: only members may %s", doing);
        chat_send_error(cc, "forbidden", msg, id_key, id_val);
    } else {
        snprintf(msg, sizeof(msg), "join the room to %s", doing);
        chat_send_error(cc, "not_member", msg, id_key, id_val);
    }
}

int chat_claim_set(struct chat_conn *cc, const struct auth_identity *id)
{
    free(cc->claim);
    cc->claim = NULL;
    cc->num_claim = 0;
    if (!id->has_rooms || id->num_rooms == 0)
        return 0;
    /* Only sessions whose token carries a claim pay for it. */
    if (!(cc->claim = calloc(id->num_rooms, sizeof(*cc->claim))))
        return -1;
    memcpy(cc->claim, id->rooms, id->num_rooms * sizeof(*cc->claim));
    cc->num_claim = id->num_rooms;
    return 0;
}

/* ---- membership changes, live side ---- */

/* The other nodes apply a membership change to their connections of user ("reason:room"). */
static void note_member(struct chat *ch, const char *room, const char *user, bool add,
                        const char *reason)
{
    if (!chat_clustered(ch))
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_addf(&b, "%s:", reason);
    sbuf_adds(&b, room);
    if (!b.oom)
        chat_cluster_note(ch, "member", user, add ? 1 : 0, b.p, b.len);
    sbuf_release(&b);
}

/* user is now a member (newly or not): every live connection receives the room from now on. */
static void member_in(struct chat *ch, const char *room, const char *user, bool newly,
                      const char *reason, struct chat_conn *skip)
{
    if (newly) /* to the backend too (events.c; a no-op when events are off) */
        chat_event_member(ch, room, user, true, reason);
    /* Told before the joiner's own connections are in the room: they get "joined" instead. */
    if (newly)
        chat_member_event(ch, room, user, "joined", skip);
    chat_user_room_change(ch, user, room, true);
    chat_room_event_all(ch, user, "joined", room, reason);
    note_member(ch, room, user, true, reason);
}

static void member_out(struct chat *ch, const char *room, const char *user, const char *reason,
                       struct chat_conn *skip)
{
    chat_event_member(ch, room, user, false, reason);
    chat_user_room_change(ch, user, room, false);
    chat_member_event(ch, room, user, "left", skip);
    chat_room_event_all(ch, user, "left", room, reason);
    note_member(ch, room, user, false, reason);
}

void chat_room_join(struct chat_conn *cc, const char *room)
{
    struct chat *ch = cc->chat;
    enum store_via via;
    int rc = store_room_member_via(ch->store, room, cc->user, &via);
    if (rc != 0 && rc != STORE_ERR_NOTFOUND) {
        chat_store_failed(cc, "join", NULL, NULL);
        return;
    }
    bool member = rc == 0;
    enum chat_access access = chat_room_access(cc, room);
    if (!member && access == CHAT_ACCESS_NONE) {
        chat_send_error(cc, "forbidden", "room is closed: ask the app to add you", NULL, NULL);
        return;
    }
    bool joined = false;
    if (!member) {
        loop_tx_begin(ch->lp);
        if (store_room_join_via(ch->store, room, cc->user, loop_now_ms(ch->lp),
                                access == CHAT_ACCESS_CLAIM ? STORE_VIA_CLAIM : STORE_VIA_JOIN,
                                &joined) != 0) {
            chat_store_failed(cc, "join", NULL, NULL);
            return;
        }
    }
    member_in(ch, room, cc->user, joined, "join", cc);
}

void chat_room_leave(struct chat_conn *cc, const char *room)
{
    struct chat *ch = cc->chat;
    loop_tx_begin(ch->lp);
    int rc = store_room_leave(ch->store, room, cc->user);
    if (rc == STORE_ERR_NOTFOUND) {
        chat_send_error(cc, "not_member", "not a member of this room", NULL, NULL);
        return;
    }
    if (rc != 0) {
        chat_store_failed(cc, "leave", NULL, NULL);
        return;
    }
    member_out(ch, room, cc->user, "leave", cc);
}

int chat_room_add(struct chat *ch, const char *room, const char *user, bool *added)
{
    loop_tx_begin(ch->lp);
    int rc = store_room_add(ch->store, room, user, loop_now_ms(ch->lp), added);
    if (rc != 0)
        return rc;
    if (*added)
        member_in(ch, room, user, true, "added", NULL);
    return 0;
}

int chat_room_remove(struct chat *ch, const char *room, const char *user)
{
    loop_tx_begin(ch->lp);
    int rc = store_room_leave(ch->store, room, user);
    if (rc != 0)
        return rc;
    member_out(ch, room, user, "removed", NULL);
    return 0;
}

struct names {
    char **v;
    size_t n;
};

static int collect_name(void *ctx, const char *name)
{
    struct names *ns = ctx;
    char **grown = realloc(ns->v, (ns->n + 1) * sizeof(*grown));
    if (!grown)
        return 1;
    ns->v = grown;
    if (!(ns->v[ns->n] = strdup(name)))
        return 1;
    ns->n++;
    return 0;
}

static void names_release(struct names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
}

int chat_room_delete(struct chat *ch, const char *room)
{
    struct names members = {0};
    loop_tx_begin(ch->lp);
    int rc = store_room_delete(ch->store, room, loop_now_ms(ch->lp), collect_name, &members);
    if (rc == 0) {
        for (size_t i = 0; i < members.n; i++) {
            chat_event_member(ch, room, members.v[i], false, "deleted");
            chat_user_room_change(ch, members.v[i], room, false);
            chat_room_event_all(ch, members.v[i], "left", room, "deleted");
            note_member(ch, room, members.v[i], false, "deleted");
        }
    }
    names_release(&members);
    return rc;
}

size_t chat_room_live(struct chat *ch, const char *room)
{
    return registry_count(ch->rooms, room);
}

/*
 * After a refresh: memberships that only the old token's claim granted and the new one no longer
 * allows end now, on every device ("revoked"). Members the backend added, and open rooms, stay.
 */
void chat_claim_revoke(struct chat_conn *cc)
{
    struct chat *ch = cc->chat;
    struct names rooms = {0};
    if (store_user_rooms(ch->store, cc->user, collect_name, &rooms) < 0) {
        log_error("store: rooms of %s: %s", cc->user, store_last_error(ch->store));
        names_release(&rooms);
        return;
    }
    for (size_t i = 0; i < rooms.n && !cc->ended; i++) {
        enum store_via via;
        if (store_room_member_via(ch->store, rooms.v[i], cc->user, &via) != 0 ||
            via != STORE_VIA_CLAIM || chat_room_access(cc, rooms.v[i]) != CHAT_ACCESS_NONE)
            continue;
        loop_tx_begin(ch->lp);
        if (store_room_leave(ch->store, rooms.v[i], cc->user) == 0)
            member_out(ch, rooms.v[i], cc->user, "revoked", NULL);
    }
    names_release(&rooms);
}

/* ---- erasure ---- */

int chat_user_erase(struct chat *ch, const char *user, size_t *closed)
{
    struct names rooms = {0};
    *closed = 0;
    int rc = store_user_rooms(ch->store, user, collect_name, &rooms);
    if (rc < 0) {
        names_release(&rooms);
        return rc;
    }
    loop_tx_begin(ch->lp);
    if ((rc = store_user_erase(ch->store, user, loop_now_ms(ch->lp), NULL)) != 0) {
        names_release(&rooms);
        return rc;
    }
    /* the other members see the user leave; the user's own connections close below */
    for (size_t i = 0; i < rooms.n; i++) {
        chat_user_room_change(ch, user, rooms.v[i], false);
        chat_member_event(ch, rooms.v[i], user, "left", NULL);
    }
    names_release(&rooms);
    /* The other nodes close the user's connections they have, the same way. */
    chat_cluster_note(ch, "erase", user, 0, NULL, 0);
    *closed = chat_user_erased_here(ch, user);
    return 0;
}

size_t chat_user_erased_here(struct chat *ch, const char *user)
{
    size_t closed = 0;
    /* Session ends still to be written would bring back rows the erasure deleted. */
    for (struct chat_end **pe = &ch->ends_retry; *pe;) {
        struct chat_end *e = *pe;
        if (strcmp(e->user, user) != 0) {
            pe = &e->next;
            continue;
        }
        *pe = e->next;
        ch->ends_unsettled--;
        free(e);
    }
    struct chat_conn *next;
    for (struct chat_conn *cc = ch->sessions; cc; cc = next) {
        next = cc->next;
        if (strcmp(cc->user, user) != 0 || cc->ended)
            continue;
        cc->erased = true; /* its end writes no session row or presence: they are gone */
        if (!conn_is_open(cc->conn))
            continue;
        log_info("conn %llu %s: session %lld closed: user %s erased by the API",
                 (unsigned long long)cc->conn->id, cc->conn->addr, (long long)cc->session_id, user);
        chat_conn_enter(cc);
        conn_close(cc->conn, WS_CLOSE_POLICY, "kicked", END_KICKED);
        chat_conn_leave(cc);
        closed++;
    }
    return closed;
}

/* ---- deleted messages ---- */

int chat_message_delete(struct chat *ch, int64_t id)
{
    struct store_msg_info info;
    int rc = store_msg_get(ch->store, id, &info);
    if (rc != 0)
        return rc;
    loop_tx_begin(ch->lp);
    if ((rc = store_msg_delete(ch->store, id, loop_now_ms(ch->lp))) == 0) {
        /* live copies are withdrawn: a tombstone frame to whoever could have it */
        struct sbuf b;
        sbuf_init(&b);
        sbuf_adds(&b, "{\"type\":\"deleted\",\"id\":");
        sbuf_add_i64(&b, id);
        if (info.msg.room) {
            sbuf_adds(&b, ",\"room\":");
            sbuf_add_json_str(&b, info.msg.room);
        }
        sbuf_adds(&b, "}");
        chat_send_to_target(ch, &info.msg, &b);
        sbuf_release(&b);
    }
    store_msg_info_release(&info);
    return rc;
}

/* ---- conversation list ---- */

/* A bounded, valid-UTF-8 preview: an object's "text" when it has one, else the JSON itself. */
static void add_preview(struct sbuf *b, const char *body)
{
    char out[PREVIEW_MAX + 4];
    json_t *v = json_loads(body, JSON_DECODE_ANY, NULL);
    const char *text = json_is_string(v)                                ? json_string_value(v)
                       : json_is_string(json_object_get(v, "text")) ? json_string_value(
                                                                          json_object_get(v, "text"))
                                                                    : body;
    utf8_sanitize(text, strlen(text), out, sizeof(out) - 3);
    size_t n = strlen(out);
    if (strlen(text) > n)
        memcpy(out + n, "…", sizeof("…")); /* cut: say so */
    sbuf_add_json_str(b, out);
    json_decref(v);
}

struct conv_ctx {
    struct sbuf *b;
    int n;
    int64_t last_id;
};

static int conv_item(void *ctx, const struct store_conversation *c)
{
    struct conv_ctx *x = ctx;
    struct sbuf *b = x->b;
    sbuf_adds(b, x->n++ ? ",{" : "{");
    sbuf_adds(b, c->is_room ? "\"room\":" : "\"with\":");
    sbuf_add_json_str(b, c->peer);
    sbuf_adds(b, ",\"last\":{\"id\":");
    sbuf_add_i64(b, c->last.id);
    if (c->last_gone) { /* retention deleted it: only its id is known */
        sbuf_addf(b, ",\"gone\":true},\"unread\":%lld}", (long long)c->unread);
        x->last_id = c->last.id;
        return 0;
    }
    sbuf_adds(b, ",\"from\":");
    sbuf_add_json_str(b, c->last.sender);
    sbuf_adds(b, ",\"ts\":");
    sbuf_add_i64(b, c->last.created_at);
    if (c->last.via)
        sbuf_adds(b, ",\"via\":\"api\"");
    if (c->last_deleted) {
        sbuf_adds(b, ",\"deleted\":true");
    } else {
        sbuf_adds(b, ",\"preview\":");
        add_preview(b, c->last.body);
    }
    sbuf_addf(b, "},\"unread\":%lld", (long long)c->unread);
    if (c->unread >= STORE_UNREAD_MAX)
        sbuf_adds(b, ",\"unread_more\":true");
    sbuf_adds(b, "}");
    x->last_id = c->last.id;
    return 0;
}

int chat_conversations_json(struct chat *ch, const char *user, int64_t before, int limit,
                            struct sbuf *b)
{
    struct conv_ctx x = {b, 0, 0};
    bool more = false;
    sbuf_adds(b, "\"items\":[");
    int rc = store_user_conversations(ch->store, user, before, limit, conv_item, &x, &more);
    if (rc < 0)
        return rc;
    sbuf_addf(b, "],\"more\":%s,\"next_before\":", more ? "true" : "false");
    if (more)
        sbuf_add_i64(b, x.last_id);
    else
        sbuf_adds(b, "null");
    return 0;
}
