/*
 * peer.c -- libwebsockets reference peer for `make bench`: echo on /echo, and on any other path a
 * chat hub speaking enough of wsproxy's JSON protocol for loadgen's fanout, idle and storm modes
 * (welcome, join -> joined, room or direct send -> msg to the others + sent to the sender).
 * It keeps everything in memory, stores nothing and checks no token: the user is the JWT's
 * unverified "sub", else ?user=, else a counter. One lws_context, one protocol, one thread.
 * Build: gcc -std=c11 -O2 -o build/bench/lws-peer tests/bench/lws/peer.c -lwebsockets
 */
#define _GNU_SOURCE
#include <libwebsockets.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QUEUE_MAX     256 /* per-session send queue, as gorilla's chat; full drops the client */
#define ECHO_RX_PAUSE 64  /* echo: stop reading with this many fragments queued ... */
#define ECHO_RX_RESUME 16 /* ... and read again once the queue is down to this */
#define MAX_MESSAGE   (64 * 1024)
#define SESSION_ROOMS 4

/* One outgoing message, shared by every queue that holds it; LWS_PRE of headroom for lws_write. */
struct msg {
    uint32_t refs;
    uint32_t len;
    uint8_t ws_flags; /* lws_write_protocol incl. fragment flags (echo) */
    unsigned char buf[];
};

struct room {
    char name[64];
    struct session **members;
    size_t n, cap;
};

struct session {
    struct lws *wsi;
    struct lws_dll2 list; /* every chat session, for direct messages */
    bool echo;
    bool rx_paused;
    bool dropped;
    /* send queue: a ring of message pointers that grows to QUEUE_MAX */
    struct msg **q;
    uint32_t q_head, q_len, q_cap;
    /* chat: a message that came in fragments */
    char *rx;
    size_t rx_len, rx_cap;
    char user[64];
    struct room *rooms[SESSION_ROOMS];
    int nrooms;
};

static struct room *g_rooms;
static size_t g_nrooms, g_rooms_cap;
static struct lws_dll2_owner g_sessions;
static int64_t g_next_id, g_next_session;
static volatile sig_atomic_t g_stop;
static struct lws_context *g_ctx;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        lwsl_err("out of memory\n");
        abort();
    }
    return q;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- messages and queues ---- */

static struct msg *msg_new(const void *p, size_t len, int ws_flags)
{
    struct msg *m = xrealloc(NULL, sizeof(*m) + LWS_PRE + len);
    m->refs = 0;
    m->len = (uint32_t)len;
    m->ws_flags = (uint8_t)ws_flags;
    if (p)
        memcpy(m->buf + LWS_PRE, p, len);
    return m;
}

static void msg_unref(struct msg *m)
{
    if (m && --m->refs == 0)
        free(m);
}

/* Queues m on s and asks for a writable callback; false when the queue is full. */
static bool session_push(struct session *s, struct msg *m)
{
    if (s->dropped)
        return true;
    if (s->q_len == s->q_cap) {
        if (s->q_cap == QUEUE_MAX)
            return false;
        uint32_t cap = s->q_cap ? s->q_cap * 2 : 4;
        struct msg **q = xrealloc(NULL, cap * sizeof(*q));
        for (uint32_t i = 0; i < s->q_len; i++)
            q[i] = s->q[(s->q_head + i) % s->q_cap];
        free(s->q);
        s->q = q;
        s->q_head = 0;
        s->q_cap = cap;
    }
    m->refs++;
    s->q[(s->q_head + s->q_len++) % s->q_cap] = m;
    lws_callback_on_writable(s->wsi);
    return true;
}

static struct msg *session_pop(struct session *s)
{
    if (!s->q_len)
        return NULL;
    struct msg *m = s->q[s->q_head];
    s->q_head = (s->q_head + 1) % s->q_cap;
    s->q_len--;
    return m;
}

/* A chat frame for one session; a full queue drops the client, as gorilla's chat hub does. */
static void chat_push(struct session *s, struct msg *m)
{
    if (!session_push(s, m)) {
        s->dropped = true;
        lws_callback_on_writable(s->wsi); /* returns -1 there: lws closes it */
    }
}

static void chat_sendf(struct session *s, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return;
    struct msg *m = msg_new(buf, (size_t)n, LWS_WRITE_TEXT);
    chat_push(s, m);
    if (!m->refs)
        free(m);
}

/* ---- rooms ---- */

static struct room *room_find(const char *name, size_t len, bool create)
{
    for (size_t i = 0; i < g_nrooms; i++)
        if (strlen(g_rooms[i].name) == len && !memcmp(g_rooms[i].name, name, len))
            return &g_rooms[i];
    if (!create || len >= sizeof(g_rooms->name))
        return NULL;
    if (g_nrooms == g_rooms_cap) {
        /* rooms live in one array: sessions point into it, so it must not move */
        if (g_rooms_cap)
            return NULL;
        g_rooms_cap = 1024;
        g_rooms = xrealloc(NULL, g_rooms_cap * sizeof(*g_rooms));
    }
    struct room *r = &g_rooms[g_nrooms++];
    memset(r, 0, sizeof(*r));
    memcpy(r->name, name, len);
    return r;
}

static bool is_member(const struct session *s, const struct room *r)
{
    for (int i = 0; i < s->nrooms; i++)
        if (s->rooms[i] == r)
            return true;
    return false;
}

static void room_leave(struct room *r, struct session *s)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->members[i] == s) {
            r->members[i] = r->members[--r->n];
            break;
        }
    }
    for (int i = 0; i < s->nrooms; i++) {
        if (s->rooms[i] == r) {
            s->rooms[i] = s->rooms[--s->nrooms];
            break;
        }
    }
}

/* ---- the few JSON fields the bench sends: flat objects, "body" any JSON value ---- */

/* Returns the end of the JSON value at p (string, number, literal, object, array), or NULL. */
static const char *json_value_end(const char *p, const char *end)
{
    int depth = 0;
    bool in_str = false;
    for (; p < end; p++) {
        char c = *p;
        if (in_str) {
            if (c == '\\')
                p++;
            else if (c == '"') {
                in_str = false;
                if (!depth)
                    return p + 1;
            }
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return p;
            if (--depth == 0)
                return p + 1;
        } else if (!depth && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            return p;
        }
    }
    return depth || in_str ? NULL : p;
}

/* The raw value of a top-level "key" (strings without their quotes); false if absent. */
static bool json_get(const char *s, size_t n, const char *key, const char **v, size_t *vlen)
{
    const char *end = s + n, *p = s;
    size_t kl = strlen(key);
    while (p < end && *p != '{')
        p++;
    p++;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        if (p >= end || *p != '"')
            return false;
        const char *k = ++p;
        while (p < end && *p != '"')
            p += *p == '\\' ? 2 : 1;
        if (p >= end)
            return false;
        bool hit = (size_t)(p - k) == kl && !memcmp(k, key, kl);
        p++;
        while (p < end && (*p == ' ' || *p == ':'))
            p++;
        const char *ve = json_value_end(p, end);
        if (!ve)
            return false;
        if (hit) {
            bool str = *p == '"';
            *v = p + str;
            *vlen = (size_t)(ve - p) - (str ? 2 : 0);
            return true;
        }
        p = ve;
    }
    return false;
}

static bool json_is(const char *v, size_t vl, const char *want)
{
    return vl == strlen(want) && !memcmp(v, want, vl);
}

/* ---- chat ---- */

static void chat_message(struct session *s, const char *p, size_t len)
{
    const char *type = "", *room = NULL, *to = NULL, *body = "null", *cid = "";
    size_t tl = 0, rl = 0, tol = 0, bl = 4, cl = 0;
    char buf[MAX_MESSAGE + 512];
    if (!json_get(p, len, "type", &type, &tl)) {
        chat_sendf(s, "{\"type\":\"error\",\"code\":\"bad_request\"}");
        return;
    }
    json_get(p, len, "room", &room, &rl);
    json_get(p, len, "cid", &cid, &cl);
    if (json_is(type, tl, "join") || json_is(type, tl, "leave")) {
        struct room *r = rl ? room_find(room, rl, json_is(type, tl, "join")) : NULL;
        if (!rl || (!r && json_is(type, tl, "join"))) {
            chat_sendf(s, "{\"type\":\"error\",\"code\":\"bad_request\"}");
            return;
        }
        if (json_is(type, tl, "join")) {
            if (!is_member(s, r)) {
                if (s->nrooms == SESSION_ROOMS) {
                    chat_sendf(s, "{\"type\":\"error\",\"code\":\"too_many_rooms\"}");
                    return;
                }
                if (r->n == r->cap) {
                    r->cap = r->cap ? r->cap * 2 : 16;
                    r->members = xrealloc(r->members, r->cap * sizeof(*r->members));
                }
                r->members[r->n++] = s;
                s->rooms[s->nrooms++] = r;
            }
            chat_sendf(s, "{\"type\":\"joined\",\"room\":\"%.*s\"}", (int)rl, room);
        } else {
            if (r)
                room_leave(r, s);
            chat_sendf(s, "{\"type\":\"left\",\"room\":\"%.*s\"}", (int)rl, room);
        }
    } else if (json_is(type, tl, "send")) {
        struct room *r = rl ? room_find(room, rl, false) : NULL;
        json_get(p, len, "to", &to, &tol);
        if (rl && (!r || !is_member(s, r))) {
            chat_sendf(s, "{\"type\":\"error\",\"code\":\"not_member\",\"cid\":\"%.*s\"}",
                       (int)cl, cid);
            return;
        }
        if (!rl && !tol) {
            chat_sendf(s, "{\"type\":\"error\",\"code\":\"bad_request\",\"cid\":\"%.*s\"}",
                       (int)cl, cid);
            return;
        }
        const char *b;
        size_t blen;
        if (json_get(p, len, "body", &b, &blen) && blen) {
            body = b;
            bl = blen;
            if (b[-1] == '"') { /* a string body: keep its quotes */
                body--;
                bl += 2;
            }
        }
        int64_t id = ++g_next_id, ts = now_ms();
        int n = snprintf(buf, sizeof(buf),
                         "{\"type\":\"msg\",\"id\":%lld,\"from\":\"%s\",%s%.*s%s%s%.*s%s"
                         "\"body\":%.*s,\"ts\":%lld,\"cid\":\"%.*s\"}",
                         (long long)id, s->user, tol ? "\"to\":\"" : "", (int)tol, to ? to : "",
                         tol ? "\"," : "", rl ? "\"room\":\"" : "", (int)rl, room ? room : "",
                         rl ? "\"," : "", (int)bl, body, (long long)ts, (int)cl, cid);
        if (n < 0 || (size_t)n >= sizeof(buf))
            return;
        /* encoded once, shared by every recipient's queue */
        struct msg *m = msg_new(buf, (size_t)n, LWS_WRITE_TEXT);
        m->refs = 1; /* ours until the loop is done */
        if (r) {
            for (size_t i = 0; i < r->n; i++)
                if (r->members[i] != s)
                    chat_push(r->members[i], m);
        } else {
            lws_start_foreach_dll(struct lws_dll2 *, d, lws_dll2_get_head(&g_sessions)) {
                struct session *t = lws_container_of(d, struct session, list);
                if (t != s && strlen(t->user) == tol && !memcmp(t->user, to, tol))
                    chat_push(t, m);
            } lws_end_foreach_dll(d);
        }
        msg_unref(m);
        chat_sendf(s, "{\"type\":\"sent\",\"cid\":\"%.*s\",\"id\":%lld,\"ts\":%lld}", (int)cl, cid,
                   (long long)id, (long long)ts);
    } else if (!json_is(type, tl, "ack")) {
        chat_sendf(s, "{\"type\":\"error\",\"code\":\"unknown_type\"}");
    }
}

static size_t b64url_decode(const char *in, size_t n, char *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n && o < cap; i++) {
        const char c = in[i];
        int v = c >= 'A' && c <= 'Z'   ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '-' || c == '+' ? 62
                : c == '_' || c == '/' ? 63
                                       : -1;
        if (v < 0)
            break;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)(acc >> bits);
        }
    }
    return o;
}

/* The user: the token's unverified "sub", else ?user=, else anonN. */
static void session_user(struct session *s)
{
    char tok[1024], claims[768];
    const char *v, *dot1, *dot2;
    size_t vl;
    if (lws_get_urlarg_by_name(s->wsi, "token=", tok, sizeof(tok)) &&
        (dot1 = strchr(tok, '.')) && (dot2 = strchr(dot1 + 1, '.'))) {
        size_t n = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), claims, sizeof(claims));
        if (json_get(claims, n, "sub", &v, &vl) && vl && vl < sizeof(s->user)) {
            memcpy(s->user, v, vl);
            s->user[vl] = '\0';
            return;
        }
    }
    if ((v = lws_get_urlarg_by_name(s->wsi, "user=", tok, sizeof(tok))) && *v) {
        snprintf(s->user, sizeof(s->user), "%s", v);
        return;
    }
    snprintf(s->user, sizeof(s->user), "anon%lld", (long long)g_next_session);
}

/* ---- the protocol callback ---- */

static int peer_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    struct session *s = user;
    char uri[256];

    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        memset(s, 0, sizeof(*s));
        s->wsi = wsi;
        if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) > 0 && !strcmp(uri, "/echo")) {
            s->echo = true;
            break;
        }
        g_next_session++;
        session_user(s);
        lws_dll2_add_tail(&s->list, &g_sessions);
        chat_sendf(s, "{\"type\":\"welcome\",\"session\":\"%lld\",\"user\":\"%s\","
                      "\"ping_interval\":54}", (long long)g_next_session, s->user);
        chat_sendf(s, "{\"type\":\"replayed\"}");
        break;

    case LWS_CALLBACK_RECEIVE:
        if (s->echo) {
            /* fragments are echoed as they come, with the same first/final flags */
            int flags = lws_write_ws_flags(lws_frame_is_binary(wsi) ? LWS_WRITE_BINARY
                                                                    : LWS_WRITE_TEXT,
                                           lws_is_first_fragment(wsi),
                                           lws_is_final_fragment(wsi));
            struct msg *m = msg_new(in, len, flags);
            if (!session_push(s, m)) {
                free(m);
                return -1; /* cannot happen: reading pauses well before the queue is full */
            }
            if (s->q_len >= ECHO_RX_PAUSE && !s->rx_paused) {
                s->rx_paused = true;
                lws_rx_flow_control(wsi, 0);
            }
            break;
        }
        if (s->rx_len + len > MAX_MESSAGE)
            return -1;
        if (lws_is_first_fragment(wsi) && lws_is_final_fragment(wsi)) {
            chat_message(s, in, len);
            break;
        }
        if (s->rx_len + len > s->rx_cap) {
            s->rx_cap = s->rx_len + len + 1024;
            s->rx = xrealloc(s->rx, s->rx_cap);
        }
        memcpy(s->rx + s->rx_len, in, len);
        s->rx_len += len;
        if (lws_is_final_fragment(wsi)) {
            chat_message(s, s->rx, s->rx_len);
            s->rx_len = 0;
        }
        break;

    case LWS_CALLBACK_SERVER_WRITEABLE: {
        if (s->dropped)
            return -1;
        /*
         * As lws's own mirror test server does: write queued messages while the socket takes
         * them whole (lws_send_pipe_choked), and ask for another writable callback for the rest.
         * One write per callback would cost a whole service loop (a poll over every fd) per
         * message.
         */
        struct msg *m;
        while ((m = session_pop(s))) {
            int n = lws_write(wsi, m->buf + LWS_PRE, m->len, (enum lws_write_protocol)m->ws_flags);
            msg_unref(m);
            if (n < 0)
                return -1;
            if (s->q_len && (lws_partial_buffered(wsi) || lws_send_pipe_choked(wsi)))
                break;
        }
        if (s->rx_paused && s->q_len <= ECHO_RX_RESUME) {
            s->rx_paused = false;
            lws_rx_flow_control(wsi, 1);
        }
        if (s->q_len)
            lws_callback_on_writable(wsi);
        break;
    }

    case LWS_CALLBACK_CLOSED:
        if (!s->wsi)
            break;
        while (s->nrooms)
            room_leave(s->rooms[0], s);
        if (!s->echo)
            lws_dll2_remove(&s->list);
        while (s->q_len)
            msg_unref(session_pop(s));
        free(s->q);
        free(s->rx);
        s->q = NULL;
        s->rx = NULL;
        s->wsi = NULL;
        break;

    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"wsproxy-bench", peer_cb, sizeof(struct session), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
    lws_cancel_service(g_ctx);
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:9003";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-addr") && i + 1 < argc) {
            addr = argv[++i];
        } else {
            fprintf(stderr, "usage: lws-peer [-addr 127.0.0.1:PORT]\n"
                            "  /echo echoes every message; any other path is the chat hub\n");
            return 2;
        }
    }
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof(host)) {
        fprintf(stderr, "lws-peer: bad -addr '%s' (want HOST:PORT)\n", addr);
        return 2;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';

    lws_set_log_level(getenv("LWS_PEER_DEBUG") ? LLL_ERR | LLL_WARN | LLL_NOTICE | LLL_INFO
                                               : LLL_ERR | LLL_WARN,
                      NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = atoi(colon + 1);
    info.iface = host;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    g_ctx = lws_create_context(&info);
    if (!g_ctx) {
        fprintf(stderr, "lws-peer: lws_create_context failed\n");
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    fprintf(stderr, "lws-peer listening on %s (/echo, chat on any other path)\n", addr);
    while (!g_stop && lws_service(g_ctx, 0) >= 0)
        ;
    lws_context_destroy(g_ctx);
    return 0;
}
