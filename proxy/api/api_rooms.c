/*
 * api_rooms.c -- the backend's room endpoints: list rooms, list a room's members with presence, add
 * and remove a member, delete a room; a user's conversation list; deleting a message. Writes join
 * the loop's transaction and are answered after the commit, like pushes. Reference: docs/api.md.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "base/log.h"
#include "chat/chat.h"
#include "net/loop.h"
#include "store.h"

#define ROOMS_DEFAULT 100
#define ROOMS_MAX 1000

/* ---- paths: /api/v1/rooms/NAME[/members[/USER]], /api/v1/users/NAME[/conversations] ---- */

static int hex(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                                 : -1;
}

/*
 * One %-decoded path segment starting at *p (up to '/' or end) into out; *p moves past it. A name
 * must be valid (chat_name_valid): 1 ok, 0 when there is no segment, -1 invalid.
 */
static int path_name(const char **p, const char *end, char *out, size_t cap)
{
    size_t o = 0;
    const char *s = *p;
    if (s >= end || *s == '/')
        return 0;
    while (s < end && *s != '/') {
        int c = (unsigned char)*s++;
        if (c == '%') {
            int h = s + 1 < end ? hex(s[0]) : -1, l = s + 1 < end ? hex(s[1]) : -1;
            if (h < 0 || l < 0)
                return -1;
            c = h * 16 + l;
            s += 2;
        }
        if (c == 0 || o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    *p = s;
    return chat_name_valid(out) ? 1 : -1;
}

static bool starts(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}

static void bad_name(struct api_conn *ac, const char *what)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "%s in the path must be a valid name (1-64 bytes of UTF-8, %%-encoded)",
             what);
    api_reply_error(ac, 400, "bad_request", msg);
}

/* ---- rooms ---- */

struct rooms_ctx {
    struct chat *ch;
    struct sbuf *b;
    int n;
    char last[AUTH_USER_MAX + 1];
};

static int room_item(void *ctx, const struct store_room_info *r)
{
    struct rooms_ctx *x = ctx;
    sbuf_adds(x->b, x->n++ ? ",{\"name\":" : "{\"name\":");
    sbuf_add_json_str(x->b, r->name);
    sbuf_addf(x->b, ",\"open\":%s,\"members\":%lld,\"live\":%zu,\"created_at\":",
              chat_room_is_open(x->ch, r->name) ? "true" : "false", (long long)r->members,
              chat_room_live(x->ch, r->name));
    sbuf_add_i64(x->b, r->created_at);
    sbuf_adds(x->b, ",\"last_id\":");
    if (r->last_id)
        sbuf_add_i64(x->b, r->last_id);
    else
        sbuf_adds(x->b, "null");
    sbuf_adds(x->b, "}");
    snprintf(x->last, sizeof(x->last), "%s", r->name);
    return 0;
}

static void route_rooms(struct api_conn *ac)
{
    char after[AUTH_USER_MAX + 1] = "";
    int64_t limit;
    if (!api_query_known(ac, "after,limit") || api_query_name(ac, "after", after, sizeof(after)) < 0 ||
        api_query_int(ac, "limit", 1, ROOMS_MAX, ROOMS_DEFAULT, &limit) < 0)
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"rooms\":[");
    struct rooms_ctx x = {ac->api->chat, &b, 0, ""};
    bool more = false;
    if (store_rooms_list(ac->api->lp->store, after, (int)limit, room_item, &x, &more) < 0) {
        sbuf_release(&b);
        api_reply_store_error(ac, "rooms");
        return;
    }
    sbuf_adds(&b, "],\"next_after\":");
    if (more)
        sbuf_add_json_str(&b, x.last);
    else
        sbuf_adds(&b, "null");
    sbuf_adds(&b, "}");
    api_reply_json(ac, 200, &b);
    sbuf_release(&b);
}

struct members_ctx {
    struct chat *ch;
    struct sbuf *b;
    int n;
};

static int member_item(void *ctx, const char *user)
{
    struct members_ctx *x = ctx;
    struct chat_presence p;
    chat_presence(x->ch, user, &p);
    sbuf_adds(x->b, x->n++ ? ",{\"user\":" : "{\"user\":");
    sbuf_add_json_str(x->b, user);
    sbuf_addf(x->b, ",\"state\":\"%s\",\"connections\":%d,\"last_seen\":",
              p.online ? "online" : "offline", p.connections);
    if (p.last_seen)
        sbuf_add_i64(x->b, p.last_seen);
    else
        sbuf_adds(x->b, "null");
    sbuf_adds(x->b, "}");
    return 0;
}

static void route_members(struct api_conn *ac, const char *room)
{
    if (!api_query_known(ac, ""))
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"room\":");
    sbuf_add_json_str(&b, room);
    sbuf_adds(&b, ",\"members\":[");
    struct members_ctx x = {ac->api->chat, &b, 0};
    if (store_room_members(ac->api->lp->store, room, member_item, &x) < 0) {
        sbuf_release(&b);
        api_reply_store_error(ac, "room members");
        return;
    }
    sbuf_adds(&b, "]}");
    api_reply_json(ac, 200, &b);
    sbuf_release(&b);
}

/* POST {"user":"U"}: the user's grant becomes the backend's; idempotent. */
static void route_member_add(struct api_conn *ac, const char *room)
{
    json_error_t jerr;
    json_t *req = json_loadb(ac->body ? ac->body : "", ac->body_len, JSON_REJECT_DUPLICATES, &jerr);
    const char *user = json_string_value(json_object_get(req, "user"));
    if (!json_is_object(req) || json_object_size(req) != 1 || !chat_name_valid(user)) {
        api_reply_error(ac, 400, "bad_request", "the body must be {\"user\": NAME}");
        json_decref(req);
        return;
    }
    bool added = false;
    if (chat_room_add(ac->api->chat, room, user, &added) != 0) {
        api_reply_store_error(ac, "room add");
        json_decref(req);
        return;
    }
    sbuf_reset(&ac->pending);
    sbuf_addf(&ac->pending, "{\"room\":");
    sbuf_add_json_str(&ac->pending, room);
    sbuf_adds(&ac->pending, ",\"user\":");
    sbuf_add_json_str(&ac->pending, user);
    sbuf_addf(&ac->pending, ",\"added\":%s}", added ? "true" : "false");
    json_decref(req);
    api_reply_after_commit(ac, 200);
}

static void route_member_remove(struct api_conn *ac, const char *room, const char *user)
{
    int rc = chat_room_remove(ac->api->chat, room, user);
    if (rc == STORE_ERR_NOTFOUND) {
        api_reply_error(ac, 404, "not_found", "not a member of this room");
        return;
    }
    if (rc != 0) {
        api_reply_store_error(ac, "room remove");
        return;
    }
    api_reply_after_commit(ac, 204);
}

static void route_room_delete(struct api_conn *ac, const char *room)
{
    int rc = chat_room_delete(ac->api->chat, room);
    if (rc == STORE_ERR_NOTFOUND) {
        api_reply_error(ac, 404, "not_found", "no such room");
        return;
    }
    if (rc != 0) {
        api_reply_store_error(ac, "room delete");
        return;
    }
    api_reply_after_commit(ac, 204);
}

static void route_conversations(struct api_conn *ac, const char *user)
{
    int64_t before, limit;
    if (!api_query_known(ac, "before,limit") ||
        api_query_int(ac, "before", 0, INT64_MAX, 0, &before) < 0 ||
        api_query_int(ac, "limit", 1, CHAT_HISTORY_MAX, CHAT_HISTORY_DEFAULT, &limit) < 0)
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"user\":");
    sbuf_add_json_str(&b, user);
    sbuf_adds(&b, ",");
    if (chat_conversations_json(ac->api->chat, user, before, (int)limit, &b) < 0) {
        sbuf_release(&b);
        api_reply_store_error(ac, "conversations");
        return;
    }
    sbuf_adds(&b, "}");
    api_reply_json(ac, 200, &b);
    sbuf_release(&b);
}

/* Erasure: tombstones, rows gone, live connections closed; 204 once it is committed. */
static void route_user_erase(struct api_conn *ac, const char *user)
{
    size_t closed = 0;
    if (chat_user_erase(ac->api->chat, user, &closed) != 0) {
        api_reply_store_error(ac, "user erase");
        return;
    }
    log_info("api: user %s erased (%zu live connection%s closed)", user, closed,
             closed == 1 ? "" : "s");
    api_reply_after_commit(ac, 204);
}

void api_route_message_delete(struct api_conn *ac, int64_t id)
{
    int rc = chat_message_delete(ac->api->chat, id);
    if (rc == STORE_ERR_NOTFOUND) {
        api_reply_error(ac, 404, "not_found", "no such message (or deleted already)");
        return;
    }
    if (rc != 0) {
        api_reply_store_error(ac, "message delete");
        return;
    }
    api_reply_after_commit(ac, 204);
}

bool api_rooms_dispatch(struct api_conn *ac)
{
    const struct http_req *r = &ac->req;
    const char *p = r->path, *end = r->path + r->path_len;
    bool get = api_method_is(r, "GET") || api_method_is(r, "HEAD");
    char a[AUTH_USER_MAX + 1], b[AUTH_USER_MAX + 1];
    if (api_path_is(r, "/api/v1/rooms")) {
        if (!get)
            api_method_not_allowed(ac, "GET, HEAD");
        else
            route_rooms(ac);
        return true;
    }
    if (starts(&p, end, "/api/v1/users/")) {
        int rc = path_name(&p, end, a, sizeof(a));
        if (rc < 0)
            bad_name(ac, "the user");
        else if (rc > 0 && p == end && api_method_is(r, "DELETE"))
            route_user_erase(ac, a);
        else if (rc > 0 && p == end)
            api_method_not_allowed(ac, "DELETE");
        else if (rc == 0 || !starts(&p, end, "/conversations") || p != end)
            return false;
        else if (!get)
            api_method_not_allowed(ac, "GET, HEAD");
        else
            route_conversations(ac, a);
        return true;
    }
    if (!starts(&p, end, "/api/v1/rooms/"))
        return false;
    int rc = path_name(&p, end, a, sizeof(a));
    if (rc <= 0) {
        if (rc < 0)
            bad_name(ac, "the room");
        return rc < 0;
    }
    if (p == end) { /* /rooms/NAME */
        if (!api_method_is(r, "DELETE"))
            api_method_not_allowed(ac, "DELETE");
        else
            route_room_delete(ac, a);
        return true;
    }
    if (!starts(&p, end, "/members"))
        return false;
    if (p == end) { /* /rooms/NAME/members */
        if (get)
            route_members(ac, a);
        else if (api_method_is(r, "POST"))
            route_member_add(ac, a);
        else
            api_method_not_allowed(ac, "GET, HEAD, POST");
        return true;
    }
    if (!starts(&p, end, "/"))
        return false;
    rc = path_name(&p, end, b, sizeof(b));
    if (rc < 0) {
        bad_name(ac, "the user");
        return true;
    }
    if (rc == 0 || p != end)
        return false;
    if (!api_method_is(r, "DELETE"))
        api_method_not_allowed(ac, "DELETE");
    else
        route_member_remove(ac, a, b);
    return true;
}
