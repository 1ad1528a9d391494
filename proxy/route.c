/*
 * route.c -- the main listener's router: decides what a request head is (health check, echo or chat
 * upgrade, static file) and hands it to the right application. The transport (net/conn.c) calls it
 * through the pool's on_request pointer and never names an application itself.
 */
#include "route.h"

#include <string.h>

#include "base/log.h"
#include "base/utf8.h"
#include "chat/chat.h"
#include "net/conn.h"
#include "net/loop.h"
#include "proto/auth.h"
#include "store.h"
#include "web.h"

#define UA_MAX 255 /* User-Agent bytes kept in the session row */

void route_init(struct router *r, struct loop *lp, const struct auth *auth, struct chat *ch)
{
    const struct px_config *cfg = lp->cfg;
    memset(r, 0, sizeof(*r));
    r->lp = lp;
    r->auth = auth;
    r->chat = ch;
    r->policy.origins = (const char *const *)cfg->origins.items;
    r->policy.num_origins = cfg->origins.n;
    r->policy.subprotocols = (const char *const *)cfg->subprotocols.items;
    r->policy.num_subprotocols = cfg->subprotocols.n;
    /* RFC 7692: our window and the client window we ask for; client_no_context_takeover asked. */
    ws_deflate_policy_init(&r->deflate);
    r->deflate.enabled = cfg->compression_on;
    r->deflate.server_max_window_bits = (uint8_t)cfg->compression_window_bits;
    r->deflate.client_max_window_bits = (uint8_t)cfg->compression_window_bits;
    r->deflate.client_no_context_takeover = true;
    r->policy.deflate = &r->deflate;
}

static bool path_is(const struct http_req *req, const char *path)
{
    size_t n = strlen(path);
    return n && req->path_len == n && memcmp(req->path, path, n) == 0;
}

void route_request(void *arg, struct conn *c, const struct http_req *req)
{
    struct router *r = arg;
    const struct px_config *cfg = r->lp->cfg;
    bool is_ws = path_is(req, cfg->ws_path);
    bool is_echo = path_is(req, cfg->echo_path);

    /* Behind a trusted proxy the client is the address it reports, for logs, limits and sessions. */
    auth_client_addr(r->auth, req, c->peer, c->addr, sizeof(c->addr));

    if (!is_ws && !is_echo) {
        if (path_is(req, "/healthz")) {
            if (store_ping(r->lp->store) == 0)
                conn_http_text(c, 200, NULL, "ok");
            else
                conn_http_text(c, 503, NULL, "store not answering");
            return;
        }
        if (web_handle(r->auth, c, req))
            return;
        conn_http_text(c, 404, NULL, "not found");
        return;
    }

    struct ws_handshake_result hs;
    if (ws_handshake_check(req, &r->policy, &hs) != 101) {
        const char *extra = hs.status == 426   ? "Sec-WebSocket-Version: 13\r\n"
                            : hs.status == 405 ? "Allow: GET\r\n"
                                               : NULL;
        if (hs.status == 403) {
            /* Say which Origin and which key: the operator's fix is one line of config. */
            const struct http_header *o = http_req_header(req, "Origin");
            char origin[128] = "", msg[256];
            if (o)
                utf8_sanitize(o->value, o->value_len, origin, sizeof(origin));
            snprintf(msg, sizeof(msg), "origin %s not allowed: add it to [server] origins", origin);
            conn_http_text(c, 403, NULL, msg);
            return;
        }
        conn_http_text(c, hs.status, extra, hs.message);
        return;
    }
    if (r->draining) {
        conn_http_text(c, 503, "Retry-After: 5\r\n", "server is shutting down");
        return;
    }

    if (is_echo) {
        if (!conn_admit(c))
            return;
        conn_upgrade(c, &hs, &conn_echo_handler, c);
        log_info("conn %llu %s: upgraded on %s", (unsigned long long)c->id, c->addr, cfg->echo_path);
        return;
    }

    struct auth_identity id;
    char why[160];
    if (auth_identify(r->auth, req, c->peer, loop_now_ms(r->lp), &id, why, sizeof(why)) != 0) {
        conn_http_text(c, 401, NULL, why);
        return;
    }
    if (str_list_has(&cfg->reserved_users, id.user)) {
        /* the API's senders: a user claiming one could pass for the backend */
        conn_http_text(c, 401, NULL, "user name is reserved ([auth] reserved_users)");
        return;
    }
    if (!conn_admit(c))
        return;
    /* Stored and shown by the API and wsctl: valid UTF-8, no controls, cut on a character. */
    const struct http_header *ua = http_req_header(req, "User-Agent");
    char ua_buf[UA_MAX + 1] = "";
    if (ua)
        utf8_sanitize(ua->value, ua->value_len, ua_buf, sizeof(ua_buf));
    chat_accept(r->chat, c, &hs, &id, ua_buf);
}
