/*
 * api_routes.c -- the API's endpoints: push, sessions (list, get, kick), message receipts, presence,
 * history, /healthz and /metrics. Each route ends in exactly one answer through api.c's reply helpers.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "base/log.h"
#include "base/version.h"
#include "chat/chat.h"
#include "chat/msg_json.h"
#include "net/gate.h"
#include "net/ioq.h"
#include "net/loop.h"
#include "store.h"

/* ---- request arguments ---- */

/* Query parameter as a name (user or room): 1 ok, 0 absent, -1 invalid (answered 400). */
int api_query_name(struct api_conn *ac, const char *key, char *out, size_t cap)
{
    const struct http_req *r = &ac->req;
    int n = http_query_param(r->query, r->query_len, key, out, cap);
    if (n == -1)
        return 0;
    if (n < 0 || !auth_user_valid(out, (size_t)n)) {
        char msg[96];
        snprintf(msg, sizeof(msg), "%s must be a valid name (1-64 bytes of UTF-8, no controls)",
                 key);
        api_reply_error(ac, 400, "bad_request", msg);
        return -1;
    }
    return 1;
}

/* Query parameter as an integer in [lo, hi]: 1 ok, 0 absent (out = def), -1 invalid (answered). */
int api_query_int(struct api_conn *ac, const char *key, int64_t lo, int64_t hi, int64_t def,
                     int64_t *out)
{
    const struct http_req *r = &ac->req;
    char buf[32];
    *out = def;
    int n = http_query_param(r->query, r->query_len, key, buf, sizeof(buf));
    if (n == -1)
        return 0;
    int64_t v;
    if (n < 0 || api_parse_u63(buf, (size_t)n, &v) != 0 || v < lo || v > hi) {
        char msg[96];
        snprintf(msg, sizeof(msg), "%s must be an integer from %lld to %lld", key, (long long)lo,
                 (long long)hi);
        api_reply_error(ac, 400, "bad_request", msg);
        return -1;
    }
    *out = v;
    return 1;
}

/*
 * Only the parameters a GET route knows (a typo such as ?usr= would otherwise be ignored and answer
 * something else): true, or false after a 400 naming the first unknown one. allowed is
 * comma-separated ("" = none).
 */
bool api_query_known(struct api_conn *ac, const char *allowed)
{
    const char *q = ac->req.query;
    size_t qlen = q ? ac->req.query_len : 0;
    size_t i = 0;
    while (i < qlen) {
        size_t start = i;
        while (i < qlen && q[i] != '&')
            i++;
        size_t seg = i - start, nlen = 0;
        while (nlen < seg && q[start + nlen] != '=')
            nlen++;
        i++; /* past '&' */
        if (nlen == 0 && seg == 0)
            continue;
        bool known = false;
        for (const char *a = allowed; *a && nlen > 0;) {
            const char *comma = strchr(a, ',');
            size_t alen = comma ? (size_t)(comma - a) : strlen(a);
            if (alen == nlen && memcmp(a, q + start, nlen) == 0)
                known = true;
            a = comma ? comma + 1 : a + alen;
        }
        if (known)
            continue;
        /* The name as sent, bounded; the JSON writer escapes it. */
        char name[72];
        size_t n = nlen < 64 ? nlen : 64;
        memcpy(name, q + start, n);
        strcpy(name + n, nlen > 64 ? "..." : "");
        char msg[256];
        snprintf(msg, sizeof(msg), "unknown query parameter \"%s\" (%s%s)", name,
                 allowed[0] ? "parameters: " : "this endpoint takes none",
                 allowed[0] ? allowed : "");
        api_reply_error(ac, 400, "bad_request", msg);
        return false;
    }
    return true;
}

/* ---- JSON building ---- */

static void add_i64_or_null(struct sbuf *b, int64_t v)
{
    if (v)
        sbuf_add_i64(b, v);
    else
        sbuf_adds(b, "null");
}

static void add_str_or_null(struct sbuf *b, const char *s)
{
    if (s)
        sbuf_add_json_str(b, s);
    else
        sbuf_adds(b, "null");
}

static void add_session(struct sbuf *b, const struct store_session *s)
{
    sbuf_adds(b, "{\"id\":");
    sbuf_add_i64(b, s->id);
    sbuf_adds(b, ",\"user\":");
    sbuf_add_json_str(b, s->user);
    sbuf_addf(b, ",\"state\":\"%s\",\"remote_addr\":", s->ended ? "ended" : "active");
    sbuf_add_json_str(b, s->remote_addr);
    sbuf_adds(b, ",\"user_agent\":");
    add_str_or_null(b, s->user_agent);
    sbuf_adds(b, ",\"subprotocol\":");
    add_str_or_null(b, s->subprotocol);
    sbuf_adds(b, ",\"connected_at\":");
    sbuf_add_i64(b, s->connected_at);
    sbuf_adds(b, ",\"last_seen_at\":");
    sbuf_add_i64(b, s->last_seen_at);
    sbuf_adds(b, ",\"ended_at\":");
    add_i64_or_null(b, s->ended ? s->ended_at : 0);
    sbuf_adds(b, ",\"end_reason\":");
    add_str_or_null(b, s->ended ? s->end_reason : NULL);
    if (s->node) { /* cluster mode only: single-node objects keep their fields */
        sbuf_adds(b, ",\"node\":");
        sbuf_add_i64(b, s->node);
    }
    sbuf_adds(b, "}");
}

/* A message as the chat protocol shows it, without the closing brace (callers may add fields). */
static void add_msg_open(struct sbuf *b, const struct store_msg *m)
{
    sbuf_adds(b, "{");
    msg_json_fields(b, m);
    sbuf_adds(b, ",\"cid\":");
    add_str_or_null(b, m->cid);
}

/* ---- routes ---- */

static void route_healthz(struct api_conn *ac)
{
    struct loop *lp = ac->api->lp;
    if (store_ping(lp->store) != 0) {
        lp->metrics.store_errors++;
        api_reply_error(ac, 503, "store_unavailable", store_last_error(lp->store));
        return;
    }
    api_log_request(ac, 200, NULL);
    api_reply(ac, 200, "text/plain; charset=utf-8", NULL, "ok\n", 3);
}

static void route_metrics(struct api_conn *ac)
{
    struct api *api = ac->api;
    struct loop *lp = api->lp;
    struct metrics_gauges g = {
        .conns_open = api->pool->num_conns,
        .ws_open = api->pool->num_ws,
        .users_online = chat_users_online(api->chat),
        .deflate_conns = api->pool->deflate.conns,
        .deflate_mem_in_use = api->pool->deflate.mem.in_use,
        .deflate_mem_peak = api->pool->deflate.mem.peak,
        .deflate_mem_reserved = api->pool->deflate.mem.reserved,
        .version = WSPROXY_VERSION,
        .start_time_s = api->started_s,
    };
    chat_events_gauges(api->chat, &g);
    if (api->pool->ioq) {
        g.io_uring_on = true;
        g.io_uring_submits = ioq_batches(api->pool->ioq);
        g.io_uring_sends = ioq_sends(api->pool->ioq);
        g.io_uring_recvs = ioq_recvs(api->pool->ioq);
    }
    if (lp->gate) {
        struct gate_stats gs;
        gate_stats(lp->gate, &gs);
        g.fiber_on = true;
        g.fiber_calls = gs.calls;
        g.fiber_queued = gs.queued;
        g.fiber_parks = gs.parks;
        g.fiber_sync_waits = gs.sync_waits;
        g.fiber_queue = gs.queue_len;
        g.fiber_queue_max = gs.queue_max;
    }
    size_t len = 0;
    char *text = metrics_render(&lp->metrics, &g, &len);
    if (!text) {
        api_reply_error(ac, 500, "internal", "out of memory");
        return;
    }
    api_log_request(ac, 200, NULL);
    api_reply(ac, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
    free(text);
}

/* The keys a push body may have; anything else is a typo worth a 400. */
static bool push_key_known(const char *k)
{
    static const char *const keys[] = {"to", "room", "broadcast", "body", "from", "cid"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcmp(k, keys[i]) == 0)
            return true;
    return false;
}

static void push_broadcast(struct api_conn *ac, const char *from, const char *body, const char *cid)
{
    struct loop *lp = ac->api->lp;
    struct sbuf f;
    sbuf_init(&f);
    sbuf_adds(&f, "{\"type\":\"broadcast\",\"via\":\"api\",\"from\":");
    sbuf_add_json_str(&f, from);
    sbuf_adds(&f, ",\"body\":");
    sbuf_adds(&f, body);
    sbuf_adds(&f, ",\"ts\":");
    sbuf_add_i64(&f, loop_now_ms(lp));
    if (cid) {
        sbuf_adds(&f, ",\"cid\":");
        sbuf_add_json_str(&f, cid);
    }
    sbuf_adds(&f, "}");
    size_t live = f.oom ? 0 : chat_broadcast(ac->api->chat, f.p, f.len);
    bool oom = f.oom;
    sbuf_release(&f);
    if (oom) {
        api_reply_error(ac, 500, "internal", "out of memory");
        return;
    }
    sbuf_reset(&ac->pending);
    sbuf_addf(&ac->pending, "{\"live\":%zu}", live);
    /* Not stored; still answered after any pending commit, so frames and answer keep order. */
    api_reply_after_commit(ac, 202);
}

static void route_push(struct api_conn *ac)
{
    struct loop *lp = ac->api->lp;
    const struct http_header *ct = http_req_header(&ac->req, "Content-Type");
    if (!ct || !api_is_json_type(ct->value, ct->value_len)) {
        api_reply_error(ac, 415, "unsupported_media_type",
                    "send the body as Content-Type: application/json");
        return;
    }
    json_error_t jerr;
    json_t *req = json_loadb(ac->body ? ac->body : "", ac->body_len,
                             JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!req || !json_is_object(req)) {
        api_reply_error(ac, 400, "bad_json", req ? "a JSON object is expected" : jerr.text);
        json_decref(req);
        return;
    }
    const char *key;
    json_t *val;
    json_object_foreach(req, key, val)
    {
        if (!push_key_known(key)) {
            char msg[160];
            /* Short names are echoed whole (a cut could split a UTF-8 sequence). */
            snprintf(msg, sizeof(msg),
                     "unknown field \"%s\" (fields: to, room, broadcast, body, from, cid)",
                     strlen(key) <= 64 ? key : "...");
            api_reply_error(ac, 400, "bad_request", msg);
            json_decref(req);
            return;
        }
    }
    json_t *to = json_object_get(req, "to");
    json_t *room = json_object_get(req, "room");
    json_t *bc = json_object_get(req, "broadcast");
    json_t *body = json_object_get(req, "body");
    json_t *jfrom = json_object_get(req, "from");
    json_t *jcid = json_object_get(req, "cid");
    const char *err = NULL;
    if ((to != NULL) + (room != NULL) + (bc != NULL) != 1)
        err = "push needs exactly one of to, room and broadcast";
    else if (bc && !json_is_true(bc))
        err = "broadcast must be true";
    else if (to && !json_is_array(to) && !chat_name_valid(json_string_value(to)))
        err = "to must be a valid user id (1-64 bytes of UTF-8, no controls) or a list of them";
    else if (room && !chat_name_valid(json_string_value(room)))
        err = "room must be a valid name (1-64 bytes of UTF-8, no controls)";
    else if (!body)
        err = "push needs a body (any JSON value)";
    else if (jfrom && !chat_name_valid(json_string_value(jfrom)))
        err = "from must be a valid user id (1-64 bytes of UTF-8, no controls)";
    else if (jcid && (!json_is_string(jcid) || json_string_length(jcid) == 0 ||
                      json_string_length(jcid) > CHAT_CID_MAX))
        err = "cid must be a string of 1-128 bytes";
    if (err) {
        api_reply_error(ac, 400, "bad_request", err);
        json_decref(req);
        return;
    }
    const char *from = jfrom ? json_string_value(jfrom) : "system";
    const char *cid = jcid ? json_string_value(jcid) : NULL;
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        api_reply_error(ac, 400, "bad_request", "body cannot be encoded");
        json_decref(req);
        return;
    }
    /* Clients were promised bodies up to [limits] max_body, whoever sends them. */
    if (strlen(text) > lp->cfg->max_body) {
        char msg[96];
        snprintf(msg, sizeof(msg), "body is larger than [limits] max_body (%llu bytes as JSON)",
                 (unsigned long long)lp->cfg->max_body);
        api_reply_error(ac, 413, "too_large", msg);
        free(text);
        json_decref(req);
        return;
    }
    if (bc || json_is_array(to)) {
        if (bc)
            push_broadcast(ac, from, text, cid);
        else
            api_push_to_list(ac, to, from, text, cid);
        free(text);
        json_decref(req);
        return;
    }
    struct store_msg m = {
        .sender = from,
        .to_user = to ? json_string_value(to) : NULL,
        .room = room ? json_string_value(room) : NULL,
        .body = text,
        .cid = cid,
        .created_at = loop_now_ms(lp),
        .via = "api",
    };
    /* A room nobody joined takes the message (history) but delivers it to no one: say so. */
    int64_t members = 0;
    if (room && store_room_member_count(lp->store, m.room, &members) < 0) {
        api_reply_store_error(ac, "room members");
        free(text);
        json_decref(req);
        return;
    }
    struct store_receipt r;
    size_t live = 0;
    /* Frames are held until the commit, like a chat send's; so is the 202. */
    if (chat_post(ac->api->chat, &m, NULL, &r, &live) != 0) {
        api_reply_store_error(ac, "push insert");
        free(text);
        json_decref(req);
        return;
    }
    sbuf_reset(&ac->pending);
    sbuf_adds(&ac->pending, "{\"id\":");
    sbuf_add_i64(&ac->pending, r.id);
    sbuf_addf(&ac->pending, ",\"live\":%zu,\"ts\":", live);
    sbuf_add_i64(&ac->pending, r.created_at);
    if (room)
        sbuf_addf(&ac->pending, ",\"members\":%lld", (long long)members);
    if (r.duplicate)
        sbuf_adds(&ac->pending, ",\"duplicate\":true");
    sbuf_adds(&ac->pending, "}");
    free(text);
    json_decref(req);
    api_reply_after_commit(ac, 202);
}

struct list_ctx {
    struct sbuf *b;
    int n;
    int64_t last_id;
};

static int session_item(void *ctx, const struct store_session *s)
{
    struct list_ctx *lc = ctx;
    if (lc->n++)
        sbuf_adds(lc->b, ",");
    add_session(lc->b, s);
    lc->last_id = s->id;
    return 0;
}

static void route_sessions(struct api_conn *ac)
{
    struct loop *lp = ac->api->lp;
    char user[256], state[16];
    struct store_session_filter f = {0};
    int64_t limit, before;
    int rc = api_query_name(ac, "user", user, sizeof(user));
    if (rc < 0)
        return;
    f.user = rc ? user : NULL;
    int n = http_query_param(ac->req.query, ac->req.query_len, "state", state, sizeof(state));
    if (n >= 0 && strcmp(state, "active") == 0)
        f.state = STORE_SESSIONS_ACTIVE;
    else if (n >= 0 && strcmp(state, "ended") == 0)
        f.state = STORE_SESSIONS_ENDED;
    else if (n >= 0 && strcmp(state, "any") == 0)
        f.state = STORE_SESSIONS_ANY;
    else if (n != -1) {
        api_reply_error(ac, 400, "bad_request", "state must be active, ended or any");
        return;
    }
    if (api_query_int(ac, "limit", 1, SESSIONS_MAX, SESSIONS_DEFAULT, &limit) < 0 ||
        api_query_int(ac, "before", 1, INT64_MAX, 0, &before) < 0)
        return;
    f.limit = (int)limit;
    f.before_id = before;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"sessions\":[");
    struct list_ctx lc = {&b, 0, 0};
    if (store_session_list(lp->store, &f, session_item, &lc) < 0) {
        sbuf_release(&b);
        api_reply_store_error(ac, "session list");
        return;
    }
    sbuf_adds(&b, "],\"next_before\":");
    add_i64_or_null(&b, lc.n == f.limit ? lc.last_id : 0);
    sbuf_adds(&b, "}");
    api_reply_json(ac, 200, &b);
    sbuf_release(&b);
}

/* Read session id into *s; false after answering 404 or 503. Release *s after a true. */
static bool load_session(struct api_conn *ac, int64_t id, struct store_session *s)
{
    int rc = store_session_get(ac->api->lp->store, id, s);
    if (rc == STORE_ERR_NOTFOUND) {
        api_reply_error(ac, 404, "not_found", "no such session");
        return false;
    }
    if (rc != 0) {
        api_reply_store_error(ac, "session get");
        return false;
    }
    return true;
}

static void route_session_get(struct api_conn *ac, int64_t id)
{
    struct store_session s;
    if (!load_session(ac, id, &s))
        return;
    struct sbuf b;
    sbuf_init(&b);
    add_session(&b, &s);
    store_session_release(&s);
    api_reply_json(ac, 200, &b);
    sbuf_release(&b);
}

/*
 * Kick: close the live connection with 1008 "kicked"; chat_end records end_reason=kicked in this
 * loop's transaction and the 204 waits for its commit. A session that exists but has no live
 * connection (it ended) is 404 not_live: there is nothing to kick, and DELETE stays idempotent.
 */
static void route_session_kick(struct api_conn *ac, int64_t id)
{
    if (chat_kick(ac->api->chat, id) == 0) {
        api_reply_after_commit(ac, 204);
        return;
    }
    struct store_session s;
    if (!load_session(ac, id, &s))
        return;
    char msg[160];
    if (s.ended)
        snprintf(msg, sizeof(msg), "session %lld already ended (%s)", (long long)id,
                 s.end_reason ? s.end_reason : "unknown");
    else if (chat_kick_remote(ac->api->chat, id) == 0) {
        /* Active on another node of the cluster: that node closes it when it reads the log. */
        store_session_release(&s);
        api_reply_after_commit(ac, 204);
        return;
    } else
        snprintf(msg, sizeof(msg), "session %lld has no live connection here", (long long)id);
    store_session_release(&s);
    api_reply_error(ac, 404, "not_live", msg);
}

static void route_message(struct api_conn *ac, int64_t id)
{
    struct loop *lp = ac->api->lp;
    struct store_msg_info mi;
    int rc = store_msg_get(lp->store, id, &mi);
    if (rc == STORE_ERR_NOTFOUND) {
        api_reply_error(ac, 404, "not_found", "no such message");
        return;
    }
    if (rc != 0) {
        api_reply_store_error(ac, "message get");
        return;
    }
    struct sbuf b;
    sbuf_init(&b);
    add_msg_open(&b, &mi.msg);
    /* Room messages have no per-message receipt (members keep a cursor): always "stored". */
    sbuf_addf(&b, ",\"state\":\"%s\",\"delivered_at\":",
              mi.direct && mi.delivered ? "delivered" : "stored");
    add_i64_or_null(&b, mi.direct && mi.delivered ? mi.delivered_at : 0);
    sbuf_adds(&b, ",\"delivered_by\":");
    add_i64_or_null(&b, mi.direct && mi.delivered ? mi.delivered_by : 0);
    if (mi.deleted) /* a tombstone (DELETE of the message, its room or its user): body is null */
        sbuf_adds(&b, ",\"deleted\":true");
    sbuf_adds(&b, "}");
    store_msg_info_release(&mi);
    api_reply_json(ac, 200, &b);
    sbuf_release(&b);
}

static void add_presence(struct chat *ch, struct sbuf *b, const char *user)
{
    struct chat_presence p;
    chat_presence(ch, user, &p);
    bool online = p.online;
    int connections = p.connections;
    int64_t last_seen = p.last_seen;
    sbuf_adds(b, "{\"user\":");
    sbuf_add_json_str(b, user);
    sbuf_addf(b,
              ",\"state\":\"%s\",\"connections\":%d,\"last_seen\":", online ? "online" : "offline",
              connections);
    add_i64_or_null(b, last_seen);
    sbuf_adds(b, "}");
}

static void route_presence(struct api_conn *ac)
{
    char list[CHAT_PRESENCE_MAX * (AUTH_USER_MAX + 1) + 1];
    int n = http_query_param(ac->req.query, ac->req.query_len, "users", list, sizeof(list));
    if (n <= 0) {
        api_reply_error(ac, 400, "bad_request",
                    n == -2 ? "users is too long or badly encoded" : "users=a,b,... is required");
        return;
    }
    /* Validate everything first: an answer is either whole or an error. */
    size_t count = 0;
    for (char *p = list; p; count++) {
        char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (!auth_user_valid(p, len) || count >= CHAT_PRESENCE_MAX) {
            api_reply_error(ac, 400, "bad_request",
                        "users must be 1-100 comma-separated user ids (1-64 bytes each)");
            return;
        }
        p = comma ? comma + 1 : NULL;
    }
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"users\":[");
    for (char *p = list, *comma; p; p = comma ? comma + 1 : NULL) {
        if ((comma = strchr(p, ',')))
            *comma = '\0';
        if (p != list)
            sbuf_adds(&b, ",");
        add_presence(ac->api->chat, &b, p);
    }
    sbuf_adds(&b, "]}");
    api_reply_json(ac, 200, &b);
    sbuf_release(&b);
}

static int history_item(void *ctx, const struct store_msg *m)
{
    struct list_ctx *lc = ctx;
    if (lc->n++)
        sbuf_adds(lc->b, ",");
    add_msg_open(lc->b, m);
    sbuf_adds(lc->b, "}");
    return 0;
}

static void route_history(struct api_conn *ac)
{
    struct loop *lp = ac->api->lp;
    char with[256], user[256], room[256];
    int has_with = api_query_name(ac, "with", with, sizeof(with));
    if (has_with < 0)
        return;
    int has_user = api_query_name(ac, "user", user, sizeof(user));
    if (has_user < 0)
        return;
    int has_room = api_query_name(ac, "room", room, sizeof(room));
    if (has_room < 0)
        return;
    if (has_room ? (has_with || has_user) : !(has_with && has_user)) {
        api_reply_error(ac, 400, "bad_request", "history needs with=A&user=B, or room=R");
        return;
    }
    int64_t before, limit;
    if (api_query_int(ac, "before", 1, INT64_MAX, 0, &before) < 0 ||
        api_query_int(ac, "limit", 1, CHAT_HISTORY_MAX, CHAT_HISTORY_DEFAULT, &limit) < 0)
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"items\":[");
    struct list_ctx lc = {&b, 0, 0};
    bool more = false;
    int rc = has_room ? store_history_room(lp->store, room, before, (int)limit, history_item, &lc,
                                           &more)
                      : store_history_direct(lp->store, user, with, before, (int)limit,
                                             history_item, &lc, &more);
    if (rc < 0) {
        sbuf_release(&b);
        api_reply_store_error(ac, "history");
        return;
    }
    sbuf_addf(&b, "],\"more\":%s}", more ? "true" : "false");
    api_reply_json(ac, 200, &b);
    sbuf_release(&b);
}

/* ---- Events outbox: counts, dead letters, replay (docs/events.md) ---- */

static void route_events(struct api_conn *ac)
{
    struct store_outbox_counts c;
    if (store_outbox_counts(ac->api->lp->store, &c) != 0) {
        api_reply_store_error(ac, "events");
        return;
    }
    struct sbuf b;
    sbuf_init(&b);
    sbuf_addf(&b, "{\"enabled\":%s,\"queued\":%lld,\"dead\":%lld,\"delivered\":%lld,"
                  "\"oldest_queued_at\":",
              ac->api->lp->cfg->events_target[0] ? "true" : "false", (long long)c.queued,
              (long long)c.dead, (long long)ac->api->lp->metrics.events_delivered);
    add_i64_or_null(&b, c.oldest_queued_at);
    sbuf_adds(&b, "}");
    api_reply_json(ac, 200, &b);
    sbuf_release(&b);
}

struct dead_ctx {
    struct sbuf *b;
    int n;
    int64_t last;
};

static int dead_item(void *ctx, const struct store_event *e)
{
    struct dead_ctx *dc = ctx;
    if (dc->n++)
        sbuf_adds(dc->b, ",");
    sbuf_addf(dc->b, "{\"id\":%lld,\"type\":", (long long)e->id);
    sbuf_add_json_str(dc->b, e->type);
    sbuf_adds(dc->b, ",\"user\":");
    sbuf_add_json_str(dc->b, e->user);
    sbuf_addf(dc->b, ",\"time_ms\":%lld,\"attempts\":%d,\"queued_at\":%lld,\"last_error\":",
              (long long)e->created_at, e->attempts, (long long)e->queued_at);
    add_str_or_null(dc->b, e->last_error);
    sbuf_adds(dc->b, ",\"data\":");
    sbuf_adds(dc->b, e->payload);
    sbuf_adds(dc->b, "}");
    dc->last = e->id;
    return 0;
}

static void route_events_dead(struct api_conn *ac)
{
    int64_t after, limit;
    if (api_query_int(ac, "after", 0, INT64_MAX, 0, &after) < 0 ||
        api_query_int(ac, "limit", 1, 1000, 100, &limit) < 0)
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"events\":[");
    struct dead_ctx dc = {&b, 0, 0};
    if (store_outbox_dead_list(ac->api->lp->store, after, (int)limit, dead_item, &dc) < 0) {
        sbuf_release(&b);
        api_reply_store_error(ac, "dead events");
        return;
    }
    sbuf_adds(&b, "],\"next_after\":");
    if (dc.n == limit)
        sbuf_add_i64(&b, dc.last);
    else
        sbuf_adds(&b, "null");
    sbuf_adds(&b, "}");
    api_reply_json(ac, 200, &b);
    sbuf_release(&b);
}

/* POST /api/v1/events/replay?id=N (one) or ?limit=N (the oldest dead ones, default 1000). */
static void route_events_replay(struct api_conn *ac)
{
    struct loop *lp = ac->api->lp;
    int64_t id, limit, count = 0;
    if (api_query_int(ac, "id", 1, INT64_MAX, 0, &id) < 0 ||
        api_query_int(ac, "limit", 1, 10000, 1000, &limit) < 0)
        return;
    loop_tx_begin(lp);
    int rc = store_outbox_replay(lp->store, id, (int)limit, loop_now_ms(lp), &count);
    if (rc == STORE_ERR_NOTFOUND) {
        api_reply_error(ac, 404, "not_found", "no dead event with this id");
        return;
    }
    if (rc < 0) {
        api_reply_store_error(ac, "replay events");
        return;
    }
    sbuf_reset(&ac->pending);
    sbuf_addf(&ac->pending, "{\"replayed\":%lld}", (long long)count);
    chat_events_kick(ac->api->chat);
    api_reply_after_commit(ac, 200);
}

void api_method_not_allowed(struct api_conn *ac, const char *allow)
{
    char extra[64];
    snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
    api_reply_error_h(ac, 405, "method_not_allowed", "method not allowed here", extra);
}

/* Route a complete request; every path ends in exactly one answer (now or after the commit). */
void api_dispatch(struct api_conn *ac)
{
    const struct http_req *r = &ac->req;
    bool get = api_method_is(r, "GET") || api_method_is(r, "HEAD");
    int64_t id = 0;
    int rc;
    ac->state = AC_BUSY;

    if (api_path_is(r, "/healthz") || api_path_is(r, "/metrics")) {
        if (!get)
            api_method_not_allowed(ac, "GET, HEAD");
        else if (api_path_is(r, "/healthz"))
            route_healthz(ac);
        else
            route_metrics(ac);
    } else if (api_path_is(r, "/api/v1/push")) {
        if (!api_method_is(r, "POST"))
            api_method_not_allowed(ac, "POST");
        else
            route_push(ac);
    } else if (api_path_is(r, "/api/v1/push/batch")) {
        if (!api_method_is(r, "POST"))
            api_method_not_allowed(ac, "POST");
        else
            api_route_push_batch(ac);
    } else if (api_path_is(r, "/api/v1/sessions")) {
        if (!get)
            api_method_not_allowed(ac, "GET, HEAD");
        else if (api_query_known(ac, "user,state,limit,before"))
            route_sessions(ac);
    } else if ((rc = api_path_id(r, "/api/v1/sessions/", &id)) != 0) {
        if (!get && !api_method_is(r, "DELETE"))
            api_method_not_allowed(ac, "GET, HEAD, DELETE");
        else if (rc < 0)
            api_reply_error(ac, 400, "bad_request", "session ids are positive integers");
        else if (!get)
            route_session_kick(ac, id);
        else if (api_query_known(ac, ""))
            route_session_get(ac, id);
    } else if ((rc = api_path_id(r, "/api/v1/messages/", &id)) != 0) {
        if (!get && !api_method_is(r, "DELETE"))
            api_method_not_allowed(ac, "GET, HEAD, DELETE");
        else if (rc < 0)
            api_reply_error(ac, 400, "bad_request", "message ids are positive integers");
        else if (!get)
            api_route_message_delete(ac, id);
        else if (api_query_known(ac, ""))
            route_message(ac, id);
    } else if (api_path_is(r, "/api/v1/presence")) {
        if (!get)
            api_method_not_allowed(ac, "GET, HEAD");
        else if (api_query_known(ac, "users"))
            route_presence(ac);
    } else if (api_path_is(r, "/api/v1/history")) {
        if (!get)
            api_method_not_allowed(ac, "GET, HEAD");
        else if (api_query_known(ac, "with,user,room,before,limit"))
            route_history(ac);
    } else if (api_path_is(r, "/api/v1/events")) {
        if (!get)
            api_method_not_allowed(ac, "GET, HEAD");
        else if (api_query_known(ac, ""))
            route_events(ac);
    } else if (api_path_is(r, "/api/v1/events/dead")) {
        if (!get)
            api_method_not_allowed(ac, "GET, HEAD");
        else if (api_query_known(ac, "after,limit"))
            route_events_dead(ac);
    } else if (api_path_is(r, "/api/v1/events/replay")) {
        if (!api_method_is(r, "POST"))
            api_method_not_allowed(ac, "POST");
        else
            route_events_replay(ac);
        } else if (!api_rooms_dispatch(ac)) {
        api_reply_error(ac, 404, "not_found", "no such endpoint");
    }
}

