/*
 * api.c -- the HTTP push/admin API on its own listener: a small HTTP/1.1 server on bufferevents
 * (heads parsed by http_hs, bodies framed by Content-Length) and the routes behind it.
 */
#include "api.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "auth.h"
#include "chat.h"
#include "conn.h"
#include "http_hs.h"
#include "log.h"
#include "msg_json.h"
#include "metrics.h"
#include "registry.h"
#include "sbuf.h"
#include "server.h"
#include "store.h"

/*
 * Why not evhttp: libevent 2.1's evhttp answers an oversized body (413), a malformed head (400) and
 * an unknown method (501) with its own HTML page before any user callback runs, and has no hook to
 * look at the head first (evhttp_set_newreqcb is 2.2). The API promises JSON errors on every path
 * and a 413 decided from Content-Length before any of the body is buffered: the framing is ours.
 */

#define API_HEAD_MAX         16384 /* request line + headers */
#define API_MAX_CONNS        512   /* concurrent API connections; more are refused at accept */
#define API_IDLE_TIMEOUT_S   30    /* read (head, body, keep-alive idle) and write timeout */
#define API_LINGER_TIMEOUT_S 2     /* after a final answer: how long unread input is drained */
#define API_LINGER_MAX       (64u << 20) /* and how much of it, before the socket is just closed */
#define CID_MAX              128
#define SESSIONS_DEFAULT     50
#define SESSIONS_MAX         1000
#define HISTORY_DEFAULT      50
#define HISTORY_MAX          100
#define PRESENCE_MAX         100
#define KEY_DIGEST_LEN       32

_Static_assert(END_NUM == METRICS_END_REASONS, "metrics must know every end reason");

enum ac_state {
    AC_HEAD,    /* reading a request head */
    AC_BODY,    /* reading body_len bytes of body */
    AC_BUSY,    /* a handler runs or its answer waits for the group commit */
    AC_WRITING, /* the answer is being written */
    AC_LINGER,  /* answered with Connection: close; draining input until EOF or a timeout */
};

struct api_conn {
    struct api *api;
    struct bufferevent *bev;
    struct api_conn *prev, *next;
    enum ac_state state;
    char peer[64];
    char *head; /* the current request head (owned); req points into it */
    struct http_req req;
    char *body; /* owned, NUL-terminated */
    size_t body_len;
    bool keep_alive;
    bool head_only; /* HEAD: the answer has headers only */
    bool dead;      /* the peer went away while an answer waited for the commit */
    size_t lingered;
    int pending_status; /* answer prepared before a commit */
    struct sbuf pending;
};

struct api {
    struct server *srv;
    struct evconnlistener *listener;
    struct api_conn *conns;
    size_t num_conns;
    bool stopping;
    unsigned char (*keys)[KEY_DIGEST_LEN]; /* SHA-256 of each [api] key */
    size_t num_keys;
    const char *end_reasons[METRICS_END_REASONS];
};

static void ac_free(struct api_conn *ac);
static void ac_process(struct api_conn *ac);
static void ac_read_cb(struct bufferevent *bev, void *arg);
static void ac_write_cb(struct bufferevent *bev, void *arg);
static void ac_event_cb(struct bufferevent *bev, short what, void *arg);

/* ---- pure helpers (unit-tested through #include of this file) ---- */

static void sha256(const void *data, size_t len, unsigned char out[KEY_DIGEST_LEN])
{
    unsigned int n = KEY_DIGEST_LEN;
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1)
        memset(out, 0, KEY_DIGEST_LEN); /* cannot match: keys are hashed the same way at start */
}

/*
 * Whether an Authorization value carries one of the keys. Both sides are hashed first, so the
 * compare runs over equal-length buffers whatever was sent, and every key is compared (no early
 * exit): neither the length nor the position of a key leaks through timing.
 */
static bool api_bearer_ok(const unsigned char (*keys)[KEY_DIGEST_LEN], size_t num_keys,
                          const char *value, size_t len)
{
    if (!value || len < 7 || strncasecmp(value, "Bearer ", 7) != 0)
        return false;
    size_t i = 7;
    while (i < len && (value[i] == ' ' || value[i] == '\t'))
        i++;
    if (i == len)
        return false;
    unsigned char got[KEY_DIGEST_LEN];
    sha256(value + i, len - i, got);
    int match = 0;
    for (size_t k = 0; k < num_keys; k++)
        match |= CRYPTO_memcmp(got, keys[k], KEY_DIGEST_LEN) == 0;
    return match != 0;
}

/* Strict decimal: digits only, no sign, no spaces, at most 18 digits. Returns 0 or -1. */
static int parse_u63(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > 18)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Whether a Content-Type value is application/json (parameters such as charset allowed). */
static bool is_json_type(const char *v, size_t len)
{
    static const char want[] = "application/json";
    size_t n = sizeof(want) - 1;
    if (len < n || strncasecmp(v, want, n) != 0)
        return false;
    return len == n || v[n] == ';' || v[n] == ' ' || v[n] == '\t';
}

/*
 * The body length a request head declares: 0 without Content-Length, -1 when the framing is bad
 * (a malformed value, two different values), -2 for Transfer-Encoding (not accepted: chunked
 * bodies cannot be refused by size before they are read). Values past 18 digits count as huge.
 */
static int64_t api_body_length(const struct http_req *req)
{
    int64_t len = 0;
    bool seen = false;
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http_header *h = &req->headers[i];
        if (h->name_len == 17 && strncasecmp(h->name, "Transfer-Encoding", 17) == 0)
            return -2;
        if (h->name_len != 14 || strncasecmp(h->name, "Content-Length", 14) != 0)
            continue;
        int64_t v;
        if (h->value_len > 18 && strspn(h->value, "0123456789") >= h->value_len)
            v = INT64_MAX;
        else if (parse_u63(h->value, h->value_len, &v) != 0)
            return -1;
        if (seen && v != len)
            return -1;
        seen = true;
        len = v;
    }
    return len;
}

/* ---- answers ---- */

static const char *status_text(int status)
{
    return http_status_text(status);
}

static void log_request(struct api_conn *ac, int status, const char *code)
{
    const struct http_req *r = &ac->req;
    int mlen = ac->head ? (int)r->method_len : 1;
    int tlen = ac->head ? (int)(r->target_len > 200 ? 200 : r->target_len) : 1;
    const char *m = ac->head ? r->method : "-";
    const char *t = ac->head ? r->target : "-";
    if (status < 400)
        log_debug("api %s: %.*s %.*s -> %d", ac->peer, mlen, m, tlen, t, status);
    else
        log_info("api %s: %.*s %.*s -> %d %s", ac->peer, mlen, m, tlen, t, status,
                 code ? code : "");
}

/* Write one complete answer and stop reading until it is out. Every answer goes through here. */
static void reply(struct api_conn *ac, int status, const char *ctype, const char *extra,
                  const char *body, size_t len)
{
    struct api *api = ac->api;
    api->srv->metrics.api_requests[metrics_api_index(status)]++;
    if (api->stopping)
        ac->keep_alive = false;
    struct evbuffer *out = bufferevent_get_output(ac->bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, status_text(status));
    /* RFC 9110 §8.6: no Content-Length in a 204. */
    if (status != 204)
        evbuffer_add_printf(out, "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, len);
    evbuffer_add_printf(out, "Cache-Control: no-store\r\nConnection: %s\r\n%s\r\n",
                        ac->keep_alive ? "keep-alive" : "close", extra ? extra : "");
    if (!ac->head_only && status != 204 && len)
        evbuffer_add(out, body, len);
    ac->state = AC_WRITING;
    bufferevent_disable(ac->bev, EV_READ);
    bufferevent_enable(ac->bev, EV_WRITE);
}

static void reply_json(struct api_conn *ac, int status, struct sbuf *b)
{
    if (b->oom) {
        ac->keep_alive = false;
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        log_request(ac, 500, "internal");
        reply(ac, 500, "application/json", NULL, oom, sizeof(oom) - 1);
        return;
    }
    log_request(ac, status, NULL);
    reply(ac, status, "application/json", NULL, b->p, b->len);
}

static void reply_error_h(struct api_conn *ac, int status, const char *code, const char *message,
                          const char *extra)
{
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"error\":{\"code\":");
    sbuf_add_json_str(&b, code);
    sbuf_adds(&b, ",\"message\":");
    sbuf_add_json_str(&b, message);
    sbuf_adds(&b, "}}");
    log_request(ac, status, code);
    if (b.oom) {
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        reply(ac, status, "application/json", extra, oom, sizeof(oom) - 1);
    } else {
        reply(ac, status, "application/json", extra, b.p, b.len);
    }
    sbuf_release(&b);
}

static void reply_error(struct api_conn *ac, int status, const char *code, const char *message)
{
    reply_error_h(ac, status, code, message, NULL);
}

static void reply_store_error(struct api_conn *ac, const char *what)
{
    struct server *srv = ac->api->srv;
    srv->metrics.store_errors++;
    log_error("api: store: %s: %s", what, store_last_error(srv->store));
    reply_error(ac, 503, "store_unavailable", "storage error, try again");
}

/* Answer once the loop's group commit has made the writes behind it durable. */
static void after_commit_cb(void *arg, bool ok)
{
    struct api_conn *ac = arg;
    if (ac->dead) {
        ac_free(ac);
        return;
    }
    if (!ok) {
        reply_error(ac, 503, "store_unavailable",
                    "the write could not be committed; retry (a push with the same cid is safe)");
        return;
    }
    if (ac->pending_status == 204) {
        log_request(ac, 204, NULL);
        reply(ac, 204, NULL, NULL, NULL, 0);
        return;
    }
    reply_json(ac, ac->pending_status, &ac->pending);
}

static void reply_after_commit(struct api_conn *ac, int status)
{
    ac->pending_status = status;
    server_after_commit(ac->api->srv, after_commit_cb, ac);
}

/* ---- request arguments ---- */

static bool valid_name(const char *s)
{
    return s && auth_user_valid(s, strlen(s));
}

/* Query parameter as a name (user or room): 1 ok, 0 absent, -1 invalid (answered 400). */
static int query_name(struct api_conn *ac, const char *key, char *out, size_t cap)
{
    const struct http_req *r = &ac->req;
    int n = http_query_param(r->query, r->query_len, key, out, cap);
    if (n == -1)
        return 0;
    if (n < 0 || !auth_user_valid(out, (size_t)n)) {
        char msg[96];
        snprintf(msg, sizeof(msg), "%s must be a valid name (1-64 bytes of UTF-8, no controls)",
                 key);
        reply_error(ac, 400, "bad_request", msg);
        return -1;
    }
    return 1;
}

/* Query parameter as an integer in [lo, hi]: 1 ok, 0 absent (out = def), -1 invalid (answered). */
static int query_int(struct api_conn *ac, const char *key, int64_t lo, int64_t hi, int64_t def,
                     int64_t *out)
{
    const struct http_req *r = &ac->req;
    char buf[32];
    *out = def;
    int n = http_query_param(r->query, r->query_len, key, buf, sizeof(buf));
    if (n == -1)
        return 0;
    int64_t v;
    if (n < 0 || parse_u63(buf, (size_t)n, &v) != 0 || v < lo || v > hi) {
        char msg[96];
        snprintf(msg, sizeof(msg), "%s must be an integer from %lld to %lld", key, (long long)lo,
                 (long long)hi);
        reply_error(ac, 400, "bad_request", msg);
        return -1;
    }
    *out = v;
    return 1;
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
    if (store_ping(ac->api->srv->store) != 0) {
        ac->api->srv->metrics.store_errors++;
        reply_error(ac, 503, "store_unavailable", store_last_error(ac->api->srv->store));
        return;
    }
    log_request(ac, 200, NULL);
    reply(ac, 200, "text/plain; charset=utf-8", NULL, "ok\n", 3);
}

static void route_metrics(struct api_conn *ac)
{
    struct api *api = ac->api;
    struct server *srv = api->srv;
    struct metrics_gauges g = {
        .conns_open = srv->num_conns,
        .ws_open = srv->num_ws,
        .users_online = registry_groups(srv->users),
        .end_reason_names = api->end_reasons,
    };
    size_t len = 0;
    char *text = metrics_render(&srv->metrics, &g, &len);
    if (!text) {
        reply_error(ac, 500, "internal", "out of memory");
        return;
    }
    log_request(ac, 200, NULL);
    reply(ac, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
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
    struct server *srv = ac->api->srv;
    struct sbuf f;
    sbuf_init(&f);
    sbuf_adds(&f, "{\"type\":\"broadcast\",\"from\":");
    sbuf_add_json_str(&f, from);
    sbuf_adds(&f, ",\"body\":");
    sbuf_adds(&f, body);
    sbuf_adds(&f, ",\"ts\":");
    sbuf_add_i64(&f, server_now_ms(srv));
    if (cid) {
        sbuf_adds(&f, ",\"cid\":");
        sbuf_add_json_str(&f, cid);
    }
    sbuf_adds(&f, "}");
    size_t live = f.oom ? 0 : chat_broadcast(srv, f.p, f.len);
    bool oom = f.oom;
    sbuf_release(&f);
    if (oom) {
        reply_error(ac, 500, "internal", "out of memory");
        return;
    }
    sbuf_reset(&ac->pending);
    sbuf_addf(&ac->pending, "{\"live\":%zu}", live);
    /* Not stored; still answered after any pending commit, so frames and answer keep order. */
    reply_after_commit(ac, 202);
}

static void route_push(struct api_conn *ac)
{
    struct server *srv = ac->api->srv;
    const struct http_header *ct = http_req_header(&ac->req, "Content-Type");
    if (!ct || !is_json_type(ct->value, ct->value_len)) {
        reply_error(ac, 415, "unsupported_media_type",
                    "send the body as Content-Type: application/json");
        return;
    }
    json_error_t jerr;
    json_t *req = json_loadb(ac->body ? ac->body : "", ac->body_len,
                             JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!req || !json_is_object(req)) {
        reply_error(ac, 400, "bad_json", req ? "a JSON object is expected" : jerr.text);
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
            reply_error(ac, 400, "bad_request", msg);
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
    else if (to && !valid_name(json_string_value(to)))
        err = "to must be a valid user id (1-64 bytes of UTF-8, no controls)";
    else if (room && !valid_name(json_string_value(room)))
        err = "room must be a valid name (1-64 bytes of UTF-8, no controls)";
    else if (!body)
        err = "push needs a body (any JSON value)";
    else if (jfrom && !valid_name(json_string_value(jfrom)))
        err = "from must be a valid user id (1-64 bytes of UTF-8, no controls)";
    else if (jcid && (!json_is_string(jcid) || json_string_length(jcid) == 0 ||
                      json_string_length(jcid) > CID_MAX))
        err = "cid must be a string of 1-128 bytes";
    if (err) {
        reply_error(ac, 400, "bad_request", err);
        json_decref(req);
        return;
    }
    const char *from = jfrom ? json_string_value(jfrom) : "system";
    const char *cid = jcid ? json_string_value(jcid) : NULL;
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        reply_error(ac, 400, "bad_request", "body cannot be encoded");
        json_decref(req);
        return;
    }
    /* Clients were promised bodies up to [limits] max_body, whoever sends them. */
    if (strlen(text) > srv->cfg->max_body) {
        char msg[96];
        snprintf(msg, sizeof(msg), "body is larger than [limits] max_body (%llu bytes as JSON)",
                 (unsigned long long)srv->cfg->max_body);
        reply_error(ac, 413, "too_large", msg);
        free(text);
        json_decref(req);
        return;
    }
    if (bc) {
        push_broadcast(ac, from, text, cid);
        free(text);
        json_decref(req);
        return;
    }
    server_tx_begin(srv);
    struct store_msg m = {
        .sender = from,
        .to_user = to ? json_string_value(to) : NULL,
        .room = room ? json_string_value(room) : NULL,
        .body = text,
        .cid = cid,
        .created_at = server_now_ms(srv),
    };
    struct store_receipt r;
    if (store_msg_insert(srv->store, &m, &r) != 0) {
        reply_store_error(ac, "push insert");
        free(text);
        json_decref(req);
        return;
    }
    size_t live = 0;
    if (!r.duplicate) {
        m.id = r.id;
        /* Frames are held until the commit, like a chat send's. */
        live = chat_deliver(srv, &m);
    }
    sbuf_reset(&ac->pending);
    sbuf_adds(&ac->pending, "{\"id\":");
    sbuf_add_i64(&ac->pending, r.id);
    sbuf_addf(&ac->pending, ",\"live\":%zu,\"ts\":", live);
    sbuf_add_i64(&ac->pending, r.created_at);
    if (r.duplicate)
        sbuf_adds(&ac->pending, ",\"duplicate\":true");
    sbuf_adds(&ac->pending, "}");
    free(text);
    json_decref(req);
    reply_after_commit(ac, 202);
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
    struct server *srv = ac->api->srv;
    char user[256], state[16];
    struct store_session_filter f = {0};
    int64_t limit, before;
    int rc = query_name(ac, "user", user, sizeof(user));
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
        reply_error(ac, 400, "bad_request", "state must be active, ended or any");
        return;
    }
    if (query_int(ac, "limit", 1, SESSIONS_MAX, SESSIONS_DEFAULT, &limit) < 0 ||
        query_int(ac, "before", 1, INT64_MAX, 0, &before) < 0)
        return;
    f.limit = (int)limit;
    f.before_id = before;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"sessions\":[");
    struct list_ctx lc = {&b, 0, 0};
    if (store_session_list(srv->store, &f, session_item, &lc) < 0) {
        sbuf_release(&b);
        reply_store_error(ac, "session list");
        return;
    }
    sbuf_adds(&b, "],\"next_before\":");
    add_i64_or_null(&b, lc.n == f.limit ? lc.last_id : 0);
    sbuf_adds(&b, "}");
    reply_json(ac, 200, &b);
    sbuf_release(&b);
}

static void route_session_get(struct api_conn *ac, int64_t id)
{
    struct server *srv = ac->api->srv;
    struct store_session s;
    int rc = store_session_get(srv->store, id, &s);
    if (rc == STORE_ERR_NOTFOUND) {
        reply_error(ac, 404, "not_found", "no such session");
        return;
    }
    if (rc != 0) {
        reply_store_error(ac, "session get");
        return;
    }
    struct sbuf b;
    sbuf_init(&b);
    add_session(&b, &s);
    store_session_release(&s);
    reply_json(ac, 200, &b);
    sbuf_release(&b);
}

/*
 * Kick: close the live connection with 1008 "kicked"; chat_end records end_reason=kicked in this
 * loop's transaction and the 204 waits for its commit. A session that exists but has no live
 * connection (it ended) is 404 not_live: there is nothing to kick, and DELETE stays idempotent.
 */
static void route_session_kick(struct api_conn *ac, int64_t id)
{
    struct server *srv = ac->api->srv;
    if (chat_kick(srv, id) == 0) {
        reply_after_commit(ac, 204);
        return;
    }
    struct store_session s;
    int rc = store_session_get(srv->store, id, &s);
    if (rc == STORE_ERR_NOTFOUND) {
        reply_error(ac, 404, "not_found", "no such session");
        return;
    }
    if (rc != 0) {
        reply_store_error(ac, "session get");
        return;
    }
    char msg[160];
    if (s.ended)
        snprintf(msg, sizeof(msg), "session %lld already ended (%s)", (long long)id,
                 s.end_reason ? s.end_reason : "unknown");
    else
        snprintf(msg, sizeof(msg), "session %lld has no live connection here", (long long)id);
    store_session_release(&s);
    reply_error(ac, 404, "not_live", msg);
}

static void route_message(struct api_conn *ac, int64_t id)
{
    struct server *srv = ac->api->srv;
    struct store_msg_info mi;
    int rc = store_msg_get(srv->store, id, &mi);
    if (rc == STORE_ERR_NOTFOUND) {
        reply_error(ac, 404, "not_found", "no such message");
        return;
    }
    if (rc != 0) {
        reply_store_error(ac, "message get");
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
    sbuf_adds(&b, "}");
    store_msg_info_release(&mi);
    reply_json(ac, 200, &b);
    sbuf_release(&b);
}

static void add_presence(struct server *srv, struct sbuf *b, const char *user)
{
    bool online = false;
    int connections = 0;
    int64_t last_seen = 0;
    /* The registry is the truth for live users; the store keeps last_seen for the others. */
    size_t live = registry_count(srv->users, user);
    if (live > 0) {
        online = true;
        connections = (int)live;
        last_seen = server_now_ms(srv);
    } else if (store_presence_get(srv->store, user, NULL, NULL, &last_seen) != 0) {
        last_seen = 0;
    }
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
    struct server *srv = ac->api->srv;
    char list[PRESENCE_MAX * (AUTH_USER_MAX + 1) + 1];
    int n = http_query_param(ac->req.query, ac->req.query_len, "users", list, sizeof(list));
    if (n <= 0) {
        reply_error(ac, 400, "bad_request",
                    n == -2 ? "users is too long or badly encoded" : "users=a,b,... is required");
        return;
    }
    /* Validate everything first: an answer is either whole or an error. */
    size_t count = 0;
    for (char *p = list; p; count++) {
        char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (!auth_user_valid(p, len) || count >= PRESENCE_MAX) {
            reply_error(ac, 400, "bad_request",
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
        add_presence(srv, &b, p);
    }
    sbuf_adds(&b, "]}");
    reply_json(ac, 200, &b);
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
    struct server *srv = ac->api->srv;
    char with[256], user[256], room[256];
    int has_with = query_name(ac, "with", with, sizeof(with));
    if (has_with < 0)
        return;
    int has_user = query_name(ac, "user", user, sizeof(user));
    if (has_user < 0)
        return;
    int has_room = query_name(ac, "room", room, sizeof(room));
    if (has_room < 0)
        return;
    if (has_room ? (has_with || has_user) : !(has_with && has_user)) {
        reply_error(ac, 400, "bad_request", "history needs with=A&user=B, or room=R");
        return;
    }
    int64_t before, limit;
    if (query_int(ac, "before", 1, INT64_MAX, 0, &before) < 0 ||
        query_int(ac, "limit", 1, HISTORY_MAX, HISTORY_DEFAULT, &limit) < 0)
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"items\":[");
    struct list_ctx lc = {&b, 0, 0};
    bool more = false;
    int rc = has_room ? store_history_room(srv->store, room, before, (int)limit, history_item, &lc,
                                           &more)
                      : store_history_direct(srv->store, user, with, before, (int)limit,
                                             history_item, &lc, &more);
    if (rc < 0) {
        sbuf_release(&b);
        reply_store_error(ac, "history");
        return;
    }
    sbuf_addf(&b, "],\"more\":%s}", more ? "true" : "false");
    reply_json(ac, 200, &b);
    sbuf_release(&b);
}

static bool method_is(const struct http_req *r, const char *m)
{
    return r->method_len == strlen(m) && memcmp(r->method, m, r->method_len) == 0;
}

static bool path_is(const struct http_req *r, const char *p)
{
    return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

/* "/prefix/ID": 1 with *id, 0 when the path is not under prefix, -1 when ID is not an id. */
static int path_id(const struct http_req *r, const char *prefix, int64_t *id)
{
    size_t n = strlen(prefix);
    if (r->path_len <= n || memcmp(r->path, prefix, n) != 0)
        return 0;
    if (parse_u63(r->path + n, r->path_len - n, id) != 0 || *id < 1)
        return -1;
    return 1;
}

static void method_not_allowed(struct api_conn *ac, const char *allow)
{
    char extra[64];
    snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
    reply_error_h(ac, 405, "method_not_allowed", "method not allowed here", extra);
}

/* Route a complete request; every path ends in exactly one answer (now or after the commit). */
static void dispatch(struct api_conn *ac)
{
    const struct http_req *r = &ac->req;
    bool get = method_is(r, "GET") || method_is(r, "HEAD");
    int64_t id = 0;
    int rc;
    ac->state = AC_BUSY;

    if (path_is(r, "/healthz") || path_is(r, "/metrics")) {
        if (!get)
            method_not_allowed(ac, "GET, HEAD");
        else if (path_is(r, "/healthz"))
            route_healthz(ac);
        else
            route_metrics(ac);
    } else if (path_is(r, "/api/v1/push")) {
        if (!method_is(r, "POST"))
            method_not_allowed(ac, "POST");
        else
            route_push(ac);
    } else if (path_is(r, "/api/v1/sessions")) {
        if (!get)
            method_not_allowed(ac, "GET, HEAD");
        else
            route_sessions(ac);
    } else if ((rc = path_id(r, "/api/v1/sessions/", &id)) != 0) {
        if (!get && !method_is(r, "DELETE"))
            method_not_allowed(ac, "GET, HEAD, DELETE");
        else if (rc < 0)
            reply_error(ac, 400, "bad_request", "session ids are positive integers");
        else if (get)
            route_session_get(ac, id);
        else
            route_session_kick(ac, id);
    } else if ((rc = path_id(r, "/api/v1/messages/", &id)) != 0) {
        if (!get)
            method_not_allowed(ac, "GET, HEAD");
        else if (rc < 0)
            reply_error(ac, 400, "bad_request", "message ids are positive integers");
        else
            route_message(ac, id);
    } else if (path_is(r, "/api/v1/presence")) {
        if (!get)
            method_not_allowed(ac, "GET, HEAD");
        else
            route_presence(ac);
    } else if (path_is(r, "/api/v1/history")) {
        if (!get)
            method_not_allowed(ac, "GET, HEAD");
        else
            route_history(ac);
    } else {
        reply_error(ac, 404, "not_found", "no such endpoint");
    }
}

/* ---- HTTP/1.1 framing ---- */

static void request_reset(struct api_conn *ac)
{
    free(ac->head);
    ac->head = NULL;
    free(ac->body);
    ac->body = NULL;
    ac->body_len = 0;
    ac->head_only = false;
    ac->pending_status = 0;
    sbuf_release(&ac->pending);
    memset(&ac->req, 0, sizeof(ac->req));
}

static bool is_api_path(const struct http_req *r)
{
    return r->path_len >= 5 && memcmp(r->path, "/api/", 5) == 0;
}

/* A head arrived: decide framing, auth and size before any of the body is read. */
static void on_head(struct api_conn *ac)
{
    struct api *api = ac->api;
    const struct http_req *r = &ac->req;
    const struct http_header *conn = http_req_header(r, "Connection");
    bool v11 = r->version_major == 1 && r->version_minor >= 1;
    ac->head_only = method_is(r, "HEAD");
    if (v11)
        ac->keep_alive = !(conn && http_token_list_has(conn->value, conn->value_len, "close"));
    else
        ac->keep_alive = conn && http_token_list_has(conn->value, conn->value_len, "keep-alive");
    if (api->stopping)
        ac->keep_alive = false;
    ac->state = AC_BUSY;

    if (r->version_major != 1) {
        ac->keep_alive = false;
        reply_error(ac, 400, "bad_request", "HTTP/1.x only");
        return;
    }
    int64_t len = api_body_length(r);
    if (len < 0) {
        /* The body's end is unknown: this connection cannot carry another request. */
        ac->keep_alive = false;
        if (len == -2)
            reply_error(ac, 411, "length_required",
                        "send the body with Content-Length; Transfer-Encoding is not accepted");
        else
            reply_error(ac, 400, "bad_request", "bad Content-Length");
        return;
    }
    if (is_api_path(r)) {
        const struct http_header *h = http_req_header(r, "Authorization");
        if (!api_bearer_ok((const unsigned char(*)[KEY_DIGEST_LEN])api->keys, api->num_keys,
                           h ? h->value : NULL, h ? h->value_len : 0)) {
            if (len > 0)
                ac->keep_alive = false; /* the body is not read */
            reply_error_h(
                ac, 401, "unauthorized",
                h ? "invalid API key" : "Authorization: Bearer KEY is required",
                h ? "WWW-Authenticate: Bearer realm=\"wsproxy\", error=\"invalid_token\"\r\n"
                  : "WWW-Authenticate: Bearer realm=\"wsproxy\"\r\n");
            return;
        }
    }
    if ((uint64_t)len > api->srv->cfg->api_max_body) {
        ac->keep_alive = false;
        char msg[96];
        snprintf(msg, sizeof(msg), "body is larger than [api] max_body (%llu bytes)",
                 (unsigned long long)api->srv->cfg->api_max_body);
        reply_error(ac, 413, "too_large", msg);
        return;
    }
    ac->body_len = (size_t)len;
    if (len == 0) {
        dispatch(ac);
        return;
    }
    const struct http_header *expect = http_req_header(r, "Expect");
    if (v11 && expect && expect->value_len == 12 &&
        strncasecmp(expect->value, "100-continue", 12) == 0)
        evbuffer_add_printf(bufferevent_get_output(ac->bev), "HTTP/1.1 100 Continue\r\n\r\n");
    ac->state = AC_BODY;
    /* Stop reading once the body is buffered; the rest of a pipeline waits in the socket. */
    bufferevent_setwatermark(ac->bev, EV_READ, 0,
                             ac->body_len > API_HEAD_MAX ? ac->body_len : API_HEAD_MAX);
}

static void ac_process(struct api_conn *ac)
{
    struct evbuffer *in = bufferevent_get_input(ac->bev);
    while (ac->state == AC_HEAD || ac->state == AC_BODY) {
        size_t len = evbuffer_get_length(in);
        if (ac->state == AC_BODY) {
            if (len < ac->body_len)
                return;
            if (!(ac->body = malloc(ac->body_len + 1))) {
                ac->keep_alive = false;
                reply_error(ac, 500, "internal", "out of memory");
                return;
            }
            evbuffer_remove(in, ac->body, ac->body_len);
            ac->body[ac->body_len] = '\0';
            dispatch(ac);
            continue;
        }
        if (len == 0)
            return;
        size_t n = len < API_HEAD_MAX ? len : API_HEAD_MAX;
        const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
        struct http_req probe;
        int rc = p ? http_req_parse(&probe, p, n, API_HEAD_MAX) : HTTP_PARSE_BAD;
        if (rc == HTTP_PARSE_PARTIAL)
            return;
        if (rc < 0) {
            ac->keep_alive = false;
            ac->state = AC_BUSY;
            if (rc == HTTP_PARSE_TOO_LARGE)
                reply_error(ac, 431, "header_too_large", "request head is too large");
            else
                reply_error(ac, 400, "bad_request", "malformed HTTP request");
            return;
        }
        if (!(ac->head = malloc((size_t)rc + 1))) {
            ac->keep_alive = false;
            ac->state = AC_BUSY;
            reply_error(ac, 500, "internal", "out of memory");
            return;
        }
        evbuffer_remove(in, ac->head, (size_t)rc);
        ac->head[rc] = '\0';
        http_req_parse(&ac->req, ac->head, (size_t)rc, API_HEAD_MAX);
        on_head(ac);
    }
}

static void ac_read_cb(struct bufferevent *bev, void *arg)
{
    struct api_conn *ac = arg;
    if (ac->state == AC_LINGER) {
        struct evbuffer *in = bufferevent_get_input(bev);
        ac->lingered += evbuffer_get_length(in);
        evbuffer_drain(in, evbuffer_get_length(in));
        if (ac->lingered > API_LINGER_MAX)
            ac_free(ac);
        return;
    }
    ac_process(ac);
}

/*
 * The answer is out. Keep-alive: take the next request (maybe already buffered). Close: shut our
 * side and drain what the client still sends for a moment, so an unread body (a 413, a 401) does
 * not turn into a reset that destroys the answer before the client has read it.
 */
static void ac_write_cb(struct bufferevent *bev, void *arg)
{
    struct api_conn *ac = arg;
    if (ac->state != AC_WRITING || evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return;
    request_reset(ac);
    if (!ac->keep_alive) {
        ac->state = AC_LINGER;
        shutdown(bufferevent_getfd(bev), SHUT_WR);
        struct timeval tv = {API_LINGER_TIMEOUT_S, 0};
        bufferevent_set_timeouts(bev, &tv, NULL);
        bufferevent_setwatermark(bev, EV_READ, 0, 0);
        bufferevent_disable(bev, EV_WRITE);
        bufferevent_enable(bev, EV_READ);
        ac_read_cb(bev, ac);
        return;
    }
    ac->state = AC_HEAD;
    bufferevent_setwatermark(bev, EV_READ, 0, API_HEAD_MAX);
    bufferevent_enable(bev, EV_READ);
    ac_process(ac);
}

static void ac_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct api_conn *ac = arg;
    if (ac->state == AC_BUSY) {
        /* An answer is waiting for the commit and holds ac: free it from there. */
        ac->dead = true;
        bufferevent_disable(ac->bev, EV_READ | EV_WRITE);
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && ac->state != AC_LINGER && ac->state != AC_HEAD)
        log_info("api %s: timed out", ac->peer);
    ac_free(ac);
}

static void ac_free(struct api_conn *ac)
{
    struct api *api = ac->api;
    if (ac->prev)
        ac->prev->next = ac->next;
    else
        api->conns = ac->next;
    if (ac->next)
        ac->next->prev = ac->prev;
    api->num_conns--;
    bufferevent_free(ac->bev);
    request_reset(ac);
    free(ac);
}

/* ---- listener ---- */

static void peer_name(const struct sockaddr *sa, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    bool v6 = sa->sa_family == AF_INET6;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        evutil_inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        port = ntohs(s4->sin_port);
    } else if (v6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        evutil_inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        port = ntohs(s6->sin6_port);
    }
    snprintf(out, cap, "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
    (void)l;
    (void)socklen;
    struct api *api = arg;
    char peer[64];
    peer_name(sa, peer, sizeof(peer));
    if (api->num_conns >= API_MAX_CONNS) {
        log_warn("api: %zu connections open, refusing %s", api->num_conns, peer);
        evutil_closesocket(fd);
        return;
    }
    struct api_conn *ac = calloc(1, sizeof(*ac));
    struct bufferevent *bev =
        ac ? bufferevent_socket_new(api->srv->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!bev) {
        log_error("api: out of memory accepting %s", peer);
        free(ac);
        evutil_closesocket(fd);
        return;
    }
    ac->api = api;
    ac->bev = bev;
    ac->state = AC_HEAD;
    snprintf(ac->peer, sizeof(ac->peer), "%s", peer);
    sbuf_init(&ac->pending);
    ac->next = api->conns;
    if (api->conns)
        api->conns->prev = ac;
    api->conns = ac;
    api->num_conns++;
    struct timeval tv = {API_IDLE_TIMEOUT_S, 0};
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_setwatermark(bev, EV_READ, 0, API_HEAD_MAX);
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    bufferevent_setcb(bev, ac_read_cb, ac_write_cb, ac_event_cb, ac);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    (void)l;
    (void)arg;
    log_error("api: accept: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

int api_start(struct server *srv, struct api **out)
{
    const struct px_config *cfg = srv->cfg;
    *out = NULL;
    struct api *api = calloc(1, sizeof(*api));
    if (!api) {
        log_error("api: out of memory");
        return -1;
    }
    api->srv = srv;
    for (int i = 0; i < METRICS_END_REASONS; i++)
        api->end_reasons[i] = end_reason_name((enum end_reason)i);
    api->keys = calloc(cfg->api_keys.n ? cfg->api_keys.n : 1, sizeof(*api->keys));
    if (!api->keys) {
        log_error("api: out of memory");
        free(api);
        return -1;
    }
    for (size_t i = 0; i < cfg->api_keys.n; i++) {
        const char *k = cfg->api_keys.items[i];
        if (!k[0])
            continue;
        sha256(k, strlen(k), api->keys[api->num_keys++]);
    }
    if (api->num_keys == 0)
        log_warn("[api] keys is empty: every /api/ request will be refused with 401");

    struct sockaddr_storage ss;
    int sslen;
    if (server_listen_addr(cfg->api_listen, &ss, &sslen) != 0) {
        log_error("[api] listen: cannot parse '%s'", cfg->api_listen);
        goto fail;
    }
    api->listener =
        evconnlistener_new_bind(srv->base, accept_cb, api,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                128, (struct sockaddr *)&ss, sslen);
    if (!api->listener) {
        log_error("[api] listen: cannot listen on %s: %s", cfg->api_listen, strerror(errno));
        goto fail;
    }
    evconnlistener_set_error_cb(api->listener, accept_error_cb);
    char host[256];
    int port;
    config_split_hostport(cfg->api_listen, host, sizeof(host), &port);
    port = server_bound_port(evconnlistener_get_fd(api->listener));
    bool v6 = strchr(host, ':') != NULL;
    log_info("API listening on http://%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
    *out = api;
    return 0;
fail:
    free(api->keys);
    free(api);
    return -1;
}

void api_stop(struct api *api)
{
    if (!api || api->stopping)
        return;
    api->stopping = true;
    if (api->listener) {
        evconnlistener_free(api->listener);
        api->listener = NULL;
    }
    /* Idle keep-alive connections go now; the others close after their answer. */
    struct api_conn *ac = api->conns;
    while (ac) {
        struct api_conn *next = ac->next;
        if (ac->state == AC_HEAD && !ac->head &&
            evbuffer_get_length(bufferevent_get_input(ac->bev)) == 0)
            ac_free(ac);
        ac = next;
    }
}

void api_free(struct api *api)
{
    if (!api)
        return;
    /* server_free commits (running every after-commit answer) before calling us. */
    while (api->conns)
        ac_free(api->conns);
    if (api->listener)
        evconnlistener_free(api->listener);
    free(api->keys);
    free(api);
}
