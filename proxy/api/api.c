/*
 * api.c -- the HTTP push/admin API on its own listener: a small HTTP/1.1 server on bufferevents
 * (heads parsed by proto/http1, bodies framed by Content-Length) and its answers. The endpoints are in
 * api_routes.c.
 */
#include "api/api.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api_internal.h"
#include "proto/http1.h"
#include "base/log.h"
#include "base/registry.h"
#include "base/metrics.h"
#include "base/sbuf.h"
#include "net/loop.h"
#include "store.h"

/*
 * Why not evhttp: libevent 2.1's evhttp answers an oversized body (413), a malformed head (400) and
 * an unknown method (501) with its own HTML page before any user callback runs, and has no hook to
 * look at the head first (evhttp_set_newreqcb is 2.2). The API promises JSON errors on every path
 * and a 413 decided from Content-Length before any of the body is buffered: the framing is ours.
 */

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
int api_parse_u63(const char *s, size_t len, int64_t *out)
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
bool api_is_json_type(const char *v, size_t len)
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
        else if (api_parse_u63(h->value, h->value_len, &v) != 0)
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

void api_log_request(struct api_conn *ac, int status, const char *code)
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
void api_reply(struct api_conn *ac, int status, const char *ctype, const char *extra,
                  const char *body, size_t len)
{
    struct api *api = ac->api;
    api->lp->metrics.api_requests[metrics_api_index(status)]++;
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

void api_reply_json(struct api_conn *ac, int status, struct sbuf *b)
{
    if (b->oom) {
        ac->keep_alive = false;
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        api_log_request(ac, 500, "internal");
        api_reply(ac, 500, "application/json", NULL, oom, sizeof(oom) - 1);
        return;
    }
    api_log_request(ac, status, NULL);
    api_reply(ac, status, "application/json", NULL, b->p, b->len);
}

void api_reply_error_h(struct api_conn *ac, int status, const char *code, const char *message,
                          const char *extra)
{
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"error\":{\"code\":");
    sbuf_add_json_str(&b, code);
    sbuf_adds(&b, ",\"message\":");
    sbuf_add_json_str(&b, message);
    sbuf_adds(&b, "}}");
    api_log_request(ac, status, code);
    if (b.oom) {
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        api_reply(ac, status, "application/json", extra, oom, sizeof(oom) - 1);
    } else {
        api_reply(ac, status, "application/json", extra, b.p, b.len);
    }
    sbuf_release(&b);
}

void api_reply_error(struct api_conn *ac, int status, const char *code, const char *message)
{
    api_reply_error_h(ac, status, code, message, NULL);
}

void api_reply_store_error(struct api_conn *ac, const char *what)
{
    struct loop *lp = ac->api->lp;
    lp->metrics.store_errors++;
    log_error("api: store: %s: %s", what, store_last_error(lp->store));
    api_reply_error(ac, 503, "store_unavailable", "storage error, try again");
}

/* Answer once the loop's group commit has made the writes behind it durable. */
static void after_commit_cb(void *arg, bool ok)
{
    struct api_conn *ac = arg;
    ac->after_pending = false;
    if (ac->dead) {
        if (!ac->dispatching) /* else the dispatch frees it when it returns */
            ac_free(ac);
        return;
    }
    if (!ok) {
        api_reply_error(ac, 503, "store_unavailable",
                    "the write could not be committed; retry (a push with the same cid is safe)");
        return;
    }
    if (ac->pending_status == 204) {
        api_log_request(ac, 204, NULL);
        api_reply(ac, 204, NULL, NULL, NULL, 0);
        return;
    }
    api_reply_json(ac, ac->pending_status, &ac->pending);
}

void api_reply_after_commit(struct api_conn *ac, int status)
{
    ac->pending_status = status;
    ac->after_pending = true;
    loop_after_commit(ac->api->lp, after_commit_cb, ac);
}

bool api_method_is(const struct http_req *r, const char *m)
{
    return r->method_len == strlen(m) && memcmp(r->method, m, r->method_len) == 0;
}

bool api_path_is(const struct http_req *r, const char *p)
{
    return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

/* "/prefix/ID": 1 with *id, 0 when the path is not under prefix, -1 when ID is not an id. */
int api_path_id(const struct http_req *r, const char *prefix, int64_t *id)
{
    size_t n = strlen(prefix);
    if (r->path_len <= n || memcmp(r->path, prefix, n) != 0)
        return 0;
    if (api_parse_u63(r->path + n, r->path_len - n, id) != 0 || *id < 1)
        return -1;
    return 1;
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

/*
 * A complete request (ac->state AC_BUSY, reading stopped) is handled where the store may be used:
 * on the store fiber with PostgreSQL (net/gate.h), where it may wait for the database while the
 * loop serves on. A peer that went away meanwhile (ac_event_cb marked it dead) is freed here once
 * no answer waits for the commit.
 */
static void dispatch_job(void *arg)
{
    struct api_conn *ac = arg;
    if (!ac->dead) {
        ac->dispatching = true;
        api_dispatch(ac);
        ac->dispatching = false;
    }
    if (ac->dead && !ac->after_pending)
        ac_free(ac);
}

static void dispatch(struct api_conn *ac)
{
    ac->state = AC_BUSY;
    /* /metrics reads only memory: answered at once, even while the database is slow. */
    if (api_path_is(&ac->req, "/metrics"))
        dispatch_job(ac);
    else
        loop_call(ac->api->lp, dispatch_job, ac);
}

/* A head arrived: decide framing, auth and size before any of the body is read. */
static void on_head(struct api_conn *ac)
{
    struct api *api = ac->api;
    const struct http_req *r = &ac->req;
    const struct http_header *conn = http_req_header(r, "Connection");
    bool v11 = r->version_major == 1 && r->version_minor >= 1;
    ac->head_only = api_method_is(r, "HEAD");
    if (v11)
        ac->keep_alive = !(conn && http_token_list_has(conn->value, conn->value_len, "close"));
    else
        ac->keep_alive = conn && http_token_list_has(conn->value, conn->value_len, "keep-alive");
    if (api->stopping)
        ac->keep_alive = false;
    /*
     * Stop reading while this request is handled: pipelined bytes wait in the socket. Left enabled
     * with the input at its high-water mark, libevent 2.1 re-runs the read callback after every
     * callback to let it drain (bufferevent_inbuf_wm_check), which spun the loop at full speed and
     * starved the group commit: one request followed by ~16 KiB wedged every write.
     */
    bufferevent_disable(ac->bev, EV_READ);
    ac->state = AC_BUSY;

    if (r->version_major != 1) {
        ac->keep_alive = false;
        api_reply_error(ac, 400, "bad_request", "HTTP/1.x only");
        return;
    }
    int64_t len = api_body_length(r);
    if (len < 0) {
        /* The body's end is unknown: this connection cannot carry another request. */
        ac->keep_alive = false;
        if (len == -2)
            api_reply_error(ac, 411, "length_required",
                        "send the body with Content-Length; Transfer-Encoding is not accepted");
        else
            api_reply_error(ac, 400, "bad_request", "bad Content-Length");
        return;
    }
    if (is_api_path(r)) {
        const struct http_header *h = http_req_header(r, "Authorization");
        if (!api_bearer_ok((const unsigned char(*)[KEY_DIGEST_LEN])api->keys, api->num_keys,
                           h ? h->value : NULL, h ? h->value_len : 0)) {
            if (len > 0)
                ac->keep_alive = false; /* the body is not read */
            /* A key sent without its scheme is the common mistake: say what is expected. */
            bool no_scheme = h && (h->value_len < 7 || strncasecmp(h->value, "Bearer ", 7) != 0);
            api_reply_error_h(
                ac, 401, "unauthorized",
                !h          ? "Authorization: Bearer KEY is required"
                : no_scheme ? "Authorization must be \"Bearer KEY\" (the Bearer scheme is missing)"
                            : "invalid API key",
                h ? "WWW-Authenticate: Bearer realm=\"wsproxy\", error=\"invalid_token\"\r\n"
                  : "WWW-Authenticate: Bearer realm=\"wsproxy\"\r\n");
            return;
        }
    }
    if ((uint64_t)len > api->lp->cfg->api_max_body) {
        ac->keep_alive = false;
        char msg[96];
        snprintf(msg, sizeof(msg), "body is larger than [api] max_body (%llu bytes)",
                 (unsigned long long)api->lp->cfg->api_max_body);
        api_reply_error(ac, 413, "too_large", msg);
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
    bufferevent_enable(ac->bev, EV_READ);
    /* Stop reading once the body is buffered; the rest of a pipeline waits in the socket. */
    bufferevent_setwatermark(ac->bev, EV_READ, 0,
                             ac->body_len > API_HEAD_MAX ? ac->body_len : API_HEAD_MAX);
}

/*
 * A request must arrive whole within [api] request_timeout of its first byte: a head trickled a byte
 * at a time would otherwise reset the idle timeout forever (slowloris) and hold a connection slot.
 */
static void req_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct api_conn *ac = arg;
    if (ac->state != AC_HEAD && ac->state != AC_BODY)
        return;
    log_info("api %s: request not complete within [api] request_timeout", ac->peer);
    ac->keep_alive = false;
    ac->state = AC_BUSY;
    api_reply_error(ac, 408, "request_timeout", "the request did not arrive in time");
}

static void ac_process(struct api_conn *ac)
{
    struct evbuffer *in = bufferevent_get_input(ac->bev);
    while (ac->state == AC_HEAD || ac->state == AC_BODY) {
        size_t len = evbuffer_get_length(in);
        if (len && !evtimer_pending(ac->req_timer, NULL)) {
            int64_t ms = ac->api->lp->cfg->api_request_timeout_ms;
            struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
            evtimer_add(ac->req_timer, &tv);
        }
        if (ac->state == AC_BODY) {
            if (len < ac->body_len)
                return;
            if (!(ac->body = malloc(ac->body_len + 1))) {
                ac->keep_alive = false;
                api_reply_error(ac, 500, "internal", "out of memory");
                return;
            }
            evbuffer_remove(in, ac->body, ac->body_len);
            ac->body[ac->body_len] = '\0';
            evtimer_del(ac->req_timer);
            bufferevent_disable(ac->bev, EV_READ); /* see on_head */
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
            bufferevent_disable(ac->bev, EV_READ);
            ac->state = AC_BUSY;
            if (rc == HTTP_PARSE_TOO_LARGE)
                api_reply_error(ac, 431, "header_too_large", "request head is too large");
            else
                api_reply_error(ac, 400, "bad_request", "malformed HTTP request");
            return;
        }
        if (!(ac->head = malloc((size_t)rc + 1))) {
            ac->keep_alive = false;
            ac->state = AC_BUSY;
            api_reply_error(ac, 500, "internal", "out of memory");
            return;
        }
        evbuffer_remove(in, ac->head, (size_t)rc);
        ac->head[rc] = '\0';
        http_req_parse(&ac->req, ac->head, (size_t)rc, API_HEAD_MAX);
        if (api_body_length(&ac->req) <= 0)
            evtimer_del(ac->req_timer); /* complete; a body keeps the clock running */
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
    registry_counter_add(api->ip_counts, ac->ip, -1);
    event_free(ac->req_timer);
    bufferevent_free(ac->bev);
    request_reset(ac);
    free(ac);
}

/* ---- listener ---- */

static void accept_cb(void *arg, struct bufferevent *bev, const struct sockaddr *sa)
{
    struct api *api = arg;
    const struct px_config *cfg = api->lp->cfg;
    char peer[64], ip[64];
    listener_addr_str(sa, true, peer, sizeof(peer));
    listener_addr_str(sa, false, ip, sizeof(ip));
    if (api->num_conns >= cfg->api_max_connections) {
        log_warn("api: %zu connections open ([api] max_connections), refusing %s", api->num_conns,
                 peer);
        bufferevent_free(bev);
        return;
    }
    if (registry_counter_get(api->ip_counts, ip) >= cfg->api_max_connections_per_ip) {
        log_warn("api: %s has %llu connections open ([api] max_connections_per_ip), refusing %s",
                 ip, (unsigned long long)cfg->api_max_connections_per_ip, peer);
        bufferevent_free(bev);
        return;
    }
    struct api_conn *ac = calloc(1, sizeof(*ac));
    if (ac && !(ac->req_timer = evtimer_new(api->lp->base, req_timeout_cb, ac))) {
        free(ac);
        ac = NULL;
    }
    if (!ac || registry_counter_add(api->ip_counts, ip, +1) == (size_t)-1) {
        log_error("api: out of memory accepting %s", peer);
        if (ac)
            event_free(ac->req_timer);
        free(ac);
        bufferevent_free(bev);
        return;
    }
    snprintf(ac->ip, sizeof(ac->ip), "%s", ip);
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

int api_start(struct api **out, struct loop *lp, struct conn_pool *pool, struct chat *ch)
{
    const struct px_config *cfg = lp->cfg;
    *out = NULL;
    struct api *api = calloc(1, sizeof(*api));
    if (!api) {
        log_error("api: out of memory");
        return -1;
    }
    api->lp = lp;
    api->started_s = (int64_t)time(NULL);
    api->pool = pool;
    api->chat = ch;
    if (!(api->ip_counts = registry_counter_new())) {
        log_error("api: out of memory");
        free(api);
        return -1;
    }
    api->keys = calloc(cfg->api_keys.n ? cfg->api_keys.n : 1, sizeof(*api->keys));
    if (!api->keys) {
        log_error("api: out of memory");
        registry_counter_free(api->ip_counts);
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

    char err[256];
    if (listener_open(&api->listener, lp, "api", cfg->api_listen, NULL, 128, accept_cb, api, err,
                      sizeof(err)) != 0) {
        log_error("[api] listen: %s", err);
        registry_counter_free(api->ip_counts);
        free(api->keys);
        free(api);
        return -1;
    }
    char host[256];
    int port;
    config_split_hostport(cfg->api_listen, host, sizeof(host), &port);
    port = listener_port(&api->listener);
    bool v6 = strchr(host, ':') != NULL;
    log_info("API listening on http://%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
    *out = api;
    return 0;
}

void api_stop(struct api *api)
{
    if (!api || api->stopping)
        return;
    api->stopping = true;
    listener_close(&api->listener);
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
    /* The server commits (running every after-commit answer) before calling us. */
    while (api->conns)
        ac_free(api->conns);
    listener_release(&api->listener);
    registry_counter_free(api->ip_counts);
    free(api->keys);
    free(api);
}
