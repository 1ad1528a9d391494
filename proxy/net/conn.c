/*
 * conn.c -- libevent glue for one client connection: reads the request head, routes it, upgrades,
 * feeds the frame parser straight from the input buffer, writes frames, runs the connection's one
 * timer (handshake, heartbeat, close wait) and frees everything through one path.
 */
#include "net/conn.h"

#include <errno.h>
#include <stdint.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proto/auth.h"
#include "chat/chat.h"
#include "proto/heartbeat.h"
#include "proto/http_hs.h"
#include "base/log.h"
#include "base/registry.h"
#include "server.h"
#include "store.h"
#include "web.h"

/* Unparsed input a WebSocket may hold before libevent stops reading: the parser drains the input on
 * every read, so this only bounds one burst. */
#define WS_READ_HIGH_WATER (256 * 1024)

static const char *const end_reason_names[END_NUM] = {
    "client_close",   "heartbeat_timeout", "protocol_error", "slow_consumer", "kicked",
    "token_expired",  "server_shutdown",   "server_restart", "rate_limited",
};

const char *end_reason_name(enum end_reason r)
{
    return r < END_NUM ? end_reason_names[r] : "unknown";
}

static void conn_free(struct conn *c);
static void conn_linger(struct conn *c);
static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg);

static void timer_arm_ms(struct conn *c, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

void conn_accept(struct server *srv, struct bufferevent *bev, const char *peer_addr)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        log_error("out of memory accepting %s", peer_addr);
        bufferevent_free(bev);
        return;
    }
    c->srv = srv;
    c->bev = bev;
    c->state = CONN_HTTP;
    c->kind = CONN_KIND_HTTP;
    c->id = ++srv->next_conn_id;
    snprintf(c->peer, sizeof(c->peer), "%s", peer_addr);
    snprintf(c->addr, sizeof(c->addr), "%s", peer_addr);
    c->timer = evtimer_new(srv->base, conn_timer_cb, c);
    if (!c->timer) {
        log_error("out of memory accepting %s", peer_addr);
        bufferevent_free(bev);
        free(c);
        return;
    }
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->num_conns++;
    srv->metrics.conns_total++;

    /* libevent stops reading once the head limit is buffered; the parser then answers 431. */
    bufferevent_setwatermark(bev, EV_READ, 0, srv->cfg->max_header_size);
    bufferevent_setcb(bev, conn_read_cb, NULL, conn_event_cb, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    timer_arm_ms(c, srv->cfg->handshake_timeout_ms);
    log_debug("conn %llu accepted from %s", (unsigned long long)c->id, peer_addr);
}

/* ---- writing ---- */

size_t conn_output_len(const struct conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

static void add_frame(struct conn *c, struct evbuffer *out, enum ws_opcode op, const void *data,
                      size_t len)
{
    uint8_t hdr[WS_MAX_HDR];
    size_t hlen = ws_frame_header(hdr, true, op, len);
    /* Header and payload in one reserve+commit: one chain, one write() for small frames. */
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, hlen + len, &v, 1) == 1 && v.iov_len >= hlen + len) {
        memcpy(v.iov_base, hdr, hlen);
        if (len)
            memcpy((uint8_t *)v.iov_base + hlen, data, len);
        v.iov_len = hlen + len;
        evbuffer_commit_space(out, &v, 1);
    } else {
        evbuffer_add(out, hdr, hlen);
        evbuffer_add(out, data, len);
    }
    c->srv->metrics.bytes_out += hlen + len;
}

void conn_send_frame(struct conn *c, enum ws_opcode op, const void *data, size_t len)
{
    if (c->close_sent || c->state != CONN_OPEN)
        return;
    add_frame(c, bufferevent_get_output(c->bev), op, data, len);
}

void conn_send_text(struct conn *c, const void *data, size_t len)
{
    if (c->close_sent || c->state != CONN_OPEN)
        return;
    if (!c->srv->tx_open && !c->dirty) {
        if (conn_check_backpressure(c))
            add_frame(c, bufferevent_get_output(c->bev), WS_OP_TEXT, data, len);
        return;
    }
    if (!c->deferred && !(c->deferred = evbuffer_new())) {
        conn_close(c, WS_CLOSE_INTERNAL, "out of memory", END_SLOW_CONSUMER, true);
        return;
    }
    add_frame(c, c->deferred, WS_OP_TEXT, data, len);
    if (!c->dirty) {
        c->dirty = true;
        c->dirty_next = c->srv->dirty;
        c->srv->dirty = c;
    }
}

bool conn_check_backpressure(struct conn *c)
{
    if (c->state != CONN_OPEN || c->close_sent)
        return false;
    size_t queued = conn_output_len(c);
    if (queued > c->srv->cfg->send_queue) {
        log_warn("conn %llu %s: send queue %zu bytes over %llu, closing as slow consumer",
                 (unsigned long long)c->id, c->addr, queued,
                 (unsigned long long)c->srv->cfg->send_queue);
        c->srv->metrics.slow_consumers++;
        conn_close(c, WS_CLOSE_TRY_AGAIN, "slow consumer", END_SLOW_CONSUMER, false);
        return false;
    }
    return true;
}

static void dirty_unlink(struct conn *c)
{
    if (!c->dirty)
        return;
    for (struct conn **pp = &c->srv->dirty; *pp; pp = &(*pp)->dirty_next)
        if (*pp == c) {
            *pp = c->dirty_next;
            break;
        }
    c->dirty = false;
    c->dirty_next = NULL;
}

void conn_flush_deferred(struct server *srv)
{
    struct conn *c = srv->dirty;
    srv->dirty = NULL;
    while (c) {
        struct conn *next = c->dirty_next;
        c->dirty = false;
        c->dirty_next = NULL;
        if (c->deferred && conn_check_backpressure(c))
            evbuffer_add_buffer(bufferevent_get_output(c->bev), c->deferred);
        else if (c->deferred)
            evbuffer_drain(c->deferred, evbuffer_get_length(c->deferred));
        c = next;
    }
}

struct shared_frame *shared_frame_new(enum ws_opcode op, const void *payload, size_t len)
{
    uint8_t hdr[WS_MAX_HDR];
    size_t hlen = ws_frame_header(hdr, true, op, len);
    struct shared_frame *f = malloc(sizeof(*f) + hlen + len);
    if (!f)
        return NULL;
    f->refs = 1;
    f->len = hlen + len;
    memcpy(f->data, hdr, hlen);
    if (len)
        memcpy(f->data + hlen, payload, len);
    return f;
}

void shared_frame_unref(struct shared_frame *f)
{
    if (f && --f->refs == 0)
        free(f);
}

static void shared_frame_cleanup_cb(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    shared_frame_unref(arg);
}

void conn_send_shared(struct conn *c, struct shared_frame *f)
{
    if (c->close_sent || c->state != CONN_OPEN)
        return;
    struct evbuffer *out;
    if (!c->srv->tx_open && !c->dirty) {
        if (!conn_check_backpressure(c))
            return;
        out = bufferevent_get_output(c->bev);
    } else {
        if (!c->deferred && !(c->deferred = evbuffer_new()))
            return;
        out = c->deferred;
        if (!c->dirty) {
            c->dirty = true;
            c->dirty_next = c->srv->dirty;
            c->srv->dirty = c;
        }
    }
    /* Referenced, not copied: one encoding of a fan-out frame serves every member. */
    f->refs++;
    if (evbuffer_add_reference(out, f->data, f->len, shared_frame_cleanup_cb, f) != 0) {
        f->refs--;
        return;
    }
    c->srv->metrics.bytes_out += f->len;
}

/* ---- HTTP phase ---- */

void conn_http_reply(struct conn *c, int status, const char *content_type, const char *extra_headers,
                     const void *body, size_t len, bool head_only)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    c->srv->metrics.handshakes[metrics_status_index(status)]++;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n%s\r\n",
                        status, http_status_text(status), content_type, len,
                        extra_headers ? extra_headers : "");
    if (!head_only && len)
        evbuffer_add(out, body, len);
    c->state = CONN_HTTP_CLOSING;
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setcb(c->bev, NULL, conn_write_cb, conn_event_cb, c);
    /* A client that never reads its answer must not hold the slot forever. */
    timer_arm_ms(c, c->srv->cfg->close_timeout_ms);
}

static void http_answer(struct conn *c, int status, const char *extra, const char *body)
{
    if (status >= 400)
        log_info("conn %llu %s: HTTP %d %s", (unsigned long long)c->id, c->addr, status, body);
    char text[256];
    int n = snprintf(text, sizeof(text), "%s\n", body);
    conn_http_reply(c, status, "text/plain; charset=utf-8", extra, text,
                    n < 0 ? 0 : (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1, false);
}


static void process_frames(struct conn *c);

static void upgrade(struct conn *c, const struct ws_hs_result *hs, enum conn_kind kind)
{
    char buf[512];
    size_t n = http_response_101(buf, sizeof(buf), hs);
    bufferevent_write(c->bev, buf, n);
    c->srv->metrics.handshakes[MS_101]++;
    c->srv->metrics.ws_total++;
    c->state = CONN_OPEN;
    c->kind = kind;
    ws_parser_init(&c->parser, c->srv->cfg->max_message_size);
    bufferevent_setwatermark(c->bev, EV_READ, 0, WS_READ_HIGH_WATER);
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    /* Low-water 0: the write callback means "all written", used for drain and replay pacing. */
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    evtimer_del(c->timer);
    c->last_rx_ms = server_now_ms(c->srv);
    if (c->srv->cfg->ping_interval_ms > 0)
        timer_arm_ms(c, c->srv->cfg->ping_interval_ms);
}

/* Take a slot against max_connections / max_connections_per_ip; false means answer 503. */
static bool admit(struct conn *c)
{
    struct server *srv = c->srv;
    if (srv->num_ws >= srv->cfg->max_connections) {
        http_answer(c, 503, "Retry-After: 5\r\n", "server is at max_connections");
        return false;
    }
    if (registry_counter_get(srv->ip_counts, c->addr) >= srv->cfg->max_connections_per_ip) {
        http_answer(c, 503, "Retry-After: 5\r\n", "too many connections from this address");
        return false;
    }
    if (registry_counter_add(srv->ip_counts, c->addr, +1) == (size_t)-1) {
        http_answer(c, 503, NULL, "out of memory");
        return false;
    }
    srv->num_ws++;
    c->counted = true;
    return true;
}

static void route(struct conn *c, const struct http_req *req)
{
    struct server *srv = c->srv;
    const struct px_config *cfg = srv->cfg;
    bool is_ws = req->path_len == strlen(cfg->ws_path) &&
                 memcmp(req->path, cfg->ws_path, req->path_len) == 0;
    bool is_echo = cfg->echo_path[0] && req->path_len == strlen(cfg->echo_path) &&
                   memcmp(req->path, cfg->echo_path, req->path_len) == 0;

    /* Behind a trusted proxy the client is the address it reports, for logs, limits and sessions. */
    auth_client_addr(&srv->auth, req, c->peer, c->addr, sizeof(c->addr));

    if (!is_ws && !is_echo) {
        if (req->path_len == 8 && memcmp(req->path, "/healthz", 8) == 0) {
            if (store_ping(srv->store) == 0)
                http_answer(c, 200, NULL, "ok");
            else
                http_answer(c, 503, NULL, "store not answering");
            return;
        }
        if (web_handle(c, req))
            return;
        http_answer(c, 404, NULL, "not found");
        return;
    }

    struct ws_hs_result hs;
    if (ws_hs_check(req, &srv->policy, &hs) != 101) {
        const char *extra = hs.status == 426   ? "Sec-WebSocket-Version: 13\r\n"
                            : hs.status == 405 ? "Allow: GET\r\n"
                                               : NULL;
        http_answer(c, hs.status, extra, hs.message);
        return;
    }
    if (srv->draining) {
        http_answer(c, 503, "Retry-After: 5\r\n", "server is shutting down");
        return;
    }

    if (is_echo) {
        if (!admit(c))
            return;
        upgrade(c, &hs, CONN_KIND_ECHO);
        log_info("conn %llu %s: upgraded on %s", (unsigned long long)c->id, c->addr, cfg->echo_path);
        return;
    }

    struct auth_identity id;
    char why[160];
    if (auth_identify(&srv->auth, req, c->peer, server_now_ms(srv), &id, why, sizeof(why)) != 0) {
        http_answer(c, 401, NULL, why);
        return;
    }
    if (!admit(c))
        return;
    const struct http_header *ua = http_req_header(req, "User-Agent");
    char ua_buf[256] = "";
    if (ua) {
        size_t n = ua->value_len < sizeof(ua_buf) - 1 ? ua->value_len : sizeof(ua_buf) - 1;
        memcpy(ua_buf, ua->value, n);
        ua_buf[n] = '\0';
    }
    upgrade(c, &hs, CONN_KIND_CHAT);
    if (chat_open(c, &id, ua_buf, hs.subprotocol) != 0)
        conn_close(c, WS_CLOSE_INTERNAL, "internal error", END_PROTOCOL_ERROR, false);
}

static void process_http(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    size_t max = c->srv->cfg->max_header_size;
    size_t n = len < max ? len : max;
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    struct http_req req;
    int rc = http_req_parse(&req, data, n, max);
    if (rc == HTTP_PARSE_PARTIAL)
        return;
    if (rc == HTTP_PARSE_TOO_LARGE) {
        http_answer(c, 431, NULL, "request head too large");
        return;
    }
    if (rc == HTTP_PARSE_BAD) {
        http_answer(c, 400, NULL, "malformed request");
        return;
    }
    evtimer_del(c->timer);
    route(c, &req);
    /* The head is no longer needed (req points into it): drop it, keep any frames that followed. */
    evbuffer_drain(in, (size_t)rc);
    if (c->state == CONN_OPEN && !c->dead && evbuffer_get_length(in))
        process_frames(c);
}

/* ---- WebSocket phase ---- */

static void deliver_message(struct conn *c, uint8_t opcode, const uint8_t *data, size_t len)
{
    if (c->kind == CONN_KIND_ECHO) {
        c->srv->metrics.msgs_in[MK_ECHO]++;
        c->srv->metrics.msgs_out[MK_ECHO]++;
        if (conn_check_backpressure(c))
            conn_send_frame(c, (enum ws_opcode)opcode, data, len);
    } else {
        chat_on_message(c, opcode, data, len);
    }
}

static void on_data(struct conn *c, const struct ws_event *ev)
{
    if (ev->msg_start && ev->msg_end) {
        deliver_message(c, ev->opcode, ev->data, ev->len); /* whole message in one chunk: no copy */
        return;
    }
    if (ev->msg_start)
        c->msg_opcode = ev->opcode;
    if (!c->msg && !(c->msg = evbuffer_new())) {
        conn_close(c, WS_CLOSE_INTERNAL, "out of memory", END_PROTOCOL_ERROR, true);
        return;
    }
    if (ev->len)
        evbuffer_add(c->msg, ev->data, ev->len);
    if (!ev->msg_end)
        return;
    size_t len = evbuffer_get_length(c->msg);
    if (c->kind == CONN_KIND_ECHO && conn_check_backpressure(c)) {
        /* Echo a reassembled message by moving its chains: no copy of a large payload. */
        uint8_t hdr[WS_MAX_HDR];
        size_t hlen = ws_frame_header(hdr, true, (enum ws_opcode)c->msg_opcode, len);
        struct evbuffer *out = bufferevent_get_output(c->bev);
        evbuffer_add(out, hdr, hlen);
        evbuffer_add_buffer(out, c->msg);
        c->srv->metrics.msgs_in[MK_ECHO]++;
        c->srv->metrics.msgs_out[MK_ECHO]++;
        c->srv->metrics.bytes_out += hlen + len;
    } else if (c->kind != CONN_KIND_ECHO) {
        const uint8_t *data = evbuffer_pullup(c->msg, -1);
        deliver_message(c, c->msg_opcode, data, len);
    }
    /* A message can be up to max_message_size; give the memory back rather than keep it per conn. */
    evbuffer_free(c->msg);
    c->msg = NULL;
}

static void on_close_frame(struct conn *c, const struct ws_event *ev)
{
    c->close_received = true;
    if (!c->close_sent) {
        /* Peer-initiated: echo its code (RFC 6455 §5.5.1), then we close TCP once it is written. */
        uint8_t payload[WS_MAX_CTRL_PAYLOAD];
        size_t plen = 0;
        if (ev->close_code != WS_CLOSE_NO_STATUS)
            plen = ws_close_payload(payload, ev->close_code, "");
        add_frame(c, bufferevent_get_output(c->bev), WS_OP_CLOSE, payload, plen);
        c->close_sent = true;
        c->close_code = ev->close_code;
        c->end_reason = END_CLIENT_CLOSE;
        log_info("conn %llu %s: client closed with %u", (unsigned long long)c->id, c->addr,
                 ev->close_code);
    }
    c->state = CONN_CLOSING;
    bufferevent_disable(c->bev, EV_READ);
    if (conn_output_len(c) == 0)
        c->dead = true;
    else
        timer_arm_ms(c, c->srv->cfg->close_timeout_ms);
}

static bool handle_event(struct conn *c, const struct ws_event *ev)
{
    switch (ev->type) {
    case WS_EV_DATA:
        if (!c->close_sent)
            on_data(c, ev);
        break;
    case WS_EV_PING:
        if (!c->close_sent)
            add_frame(c, bufferevent_get_output(c->bev), WS_OP_PONG, ev->data, ev->len);
        break;
    case WS_EV_PONG:
        break; /* liveness already recorded on read */
    case WS_EV_CLOSE:
        on_close_frame(c, ev);
        return false;
    case WS_EV_ERROR:
        log_info("conn %llu %s: protocol error: %s (close %u)", (unsigned long long)c->id, c->addr,
                 ev->error, ev->close_code);
        /* The stream cannot be parsed further, so do not wait for the peer's close. */
        conn_close(c, ev->close_code, ev->error, END_PROTOCOL_ERROR, false);
        c->close_received = true;
        return false;
    case WS_EV_NONE:
        break;
    }
    return !c->dead;
}

static void process_frames(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->srv->metrics.bytes_in += evbuffer_get_length(in);
    while (evbuffer_get_length(in) && !c->dead && !c->close_received) {
        struct evbuffer_iovec vec[8];
        int nvec = evbuffer_peek(in, -1, NULL, vec, 8);
        if (nvec > 8)
            nvec = 8;
        size_t consumed = 0;
        bool go_on = true;
        for (int i = 0; i < nvec && go_on; i++) {
            uint8_t *p = vec[i].iov_base;
            size_t left = vec[i].iov_len;
            while (go_on) {
                struct ws_event ev;
                size_t n = ws_parser_feed(&c->parser, p, left, &ev);
                p += n;
                left -= n;
                consumed += n;
                if (ev.type == WS_EV_NONE)
                    break;
                go_on = handle_event(c, &ev);
            }
        }
        evbuffer_drain(in, consumed);
        if (!go_on)
            break;
    }
    if (c->close_received || c->dead)
        evbuffer_drain(in, evbuffer_get_length(in));
}

/* ---- callbacks ---- */

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    c->busy++;
    if (c->state == CONN_HTTP) {
        process_http(c);
    } else if (c->state == CONN_OPEN || c->state == CONN_CLOSING) {
        c->last_rx_ms = server_now_ms(c->srv);
        process_frames(c);
    }
    c->busy--;
    if (c->dead)
        conn_free(c);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    if (c->state == CONN_LINGER)
        return;
    if (c->state == CONN_HTTP_CLOSING) {
        conn_linger(c); /* the client may still be sending (a refused upload, a too large head) */
        return;
    }
    if (c->state == CONN_CLOSING && c->close_received && c->end_reason != END_PROTOCOL_ERROR) {
        conn_free(c); /* closing handshake done */
        return;
    }
    if (c->state == CONN_CLOSING && c->end_reason == END_PROTOCOL_ERROR) {
        conn_linger(c); /* failed connection: close frame written, the peer may still be sending */
        return;
    }
    if (c->state == CONN_OPEN && c->chat) {
        c->busy++;
        chat_on_drained(c);
        c->busy--;
        if (c->dead)
            conn_free(c);
    }
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (c->state == CONN_OPEN) {
            /* TCP went away without a close handshake (1006). */
            c->end_reason = c->close_sent ? c->end_reason : END_CLIENT_CLOSE;
            if (!c->close_sent)
                c->close_code = WS_CLOSE_ABNORMAL;
            log_info("conn %llu %s: connection lost (%s)", (unsigned long long)c->id, c->addr,
                     (what & BEV_EVENT_EOF) ? "eof" : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        }
        conn_free(c);
    }
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    struct server *srv = c->srv;
    switch (c->state) {
    case CONN_HTTP:
        c->srv->metrics.handshakes[MS_OTHER]++;
        log_info("conn %llu %s: handshake timeout", (unsigned long long)c->id, c->addr);
        conn_free(c);
        return;
    case CONN_HTTP_CLOSING:
    case CONN_CLOSING:
    case CONN_LINGER:
        log_debug("conn %llu %s: close timeout", (unsigned long long)c->id, c->addr);
        conn_free(c);
        return;
    case CONN_OPEN:
        break;
    }
    int64_t now = server_now_ms(srv);
    struct heartbeat_state hb = {c->last_rx_ms, c->ping_sent_ms, c->ping_outstanding};
    int64_t next;
    enum heartbeat_action act =
        heartbeat_tick(&hb, now, srv->cfg->ping_interval_ms, srv->cfg->pong_timeout_ms, &next);
    c->ping_sent_ms = hb.ping_sent_ms;
    c->ping_outstanding = hb.ping_outstanding;
    if (act == HEARTBEAT_TIMEOUT) {
        srv->metrics.heartbeat_timeouts++;
        log_info("conn %llu %s: no answer to ping within %lld ms, closing", (unsigned long long)c->id,
                 c->addr, (long long)srv->cfg->pong_timeout_ms);
        conn_close(c, WS_CLOSE_GOING_AWAY, "heartbeat timeout", END_HEARTBEAT_TIMEOUT, true);
        return;
    }
    if (act == HEARTBEAT_PING) {
        add_frame(c, bufferevent_get_output(c->bev), WS_OP_PING, NULL, 0);
        if (c->chat)
            chat_touch(c); /* the session row's last_seen_at follows a long-lived connection */
    }
    timer_arm_ms(c, next - now);
}

/* ---- closing ---- */

void conn_close(struct conn *c, uint16_t code, const char *reason, enum end_reason why, bool hard)
{
    if (c->state == CONN_HTTP || c->state == CONN_HTTP_CLOSING || c->state == CONN_LINGER) {
        c->dead = true;
        if (!c->busy)
            conn_free(c);
        return;
    }
    if (!c->close_sent) {
        uint8_t payload[WS_MAX_CTRL_PAYLOAD];
        size_t plen = ws_close_payload(payload, code, reason);
        add_frame(c, bufferevent_get_output(c->bev), WS_OP_CLOSE, payload, plen);
        c->close_sent = true;
        c->close_code = code;
        c->end_reason = why;
        log_info("conn %llu %s: closing with %u (%s)", (unsigned long long)c->id, c->addr, code,
                 end_reason_name(why));
    }
    c->state = CONN_CLOSING;
    if (c->chat)
        chat_end(c, c->end_reason); /* state is cleaned up now, not when the socket finally goes */
    if (hard) {
        c->dead = true;
        if (!c->busy)
            conn_free(c);
        return;
    }
    timer_arm_ms(c, c->srv->cfg->close_timeout_ms);
}

/* Everything but the socket: the session ends, the slot is given back. Runs once (flags). */
static void conn_release_state(struct conn *c)
{
    struct server *srv = c->srv;
    if (c->chat)
        chat_end(c, c->end_reason);
    if (c->counted) {
        c->counted = false;
        registry_counter_add(srv->ip_counts, c->addr, -1);
        srv->num_ws--;
        srv->metrics.closes_by_code[metrics_close_index(c->close_code ? c->close_code : 1006)]++;
        srv->metrics.closes_by_reason[c->end_reason]++;
        log_info("conn %llu %s: closed (%s, code %u)", (unsigned long long)c->id, c->addr,
                 end_reason_name(c->end_reason), c->close_code ? c->close_code : 1006);
    }
    dirty_unlink(c);
    if (c->msg) {
        evbuffer_free(c->msg);
        c->msg = NULL;
    }
    if (c->deferred) {
        evbuffer_free(c->deferred);
        c->deferred = NULL;
    }
}

static void linger_read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    /* The bytes are thrown away: read them into the stack, not into buffers that would grow. */
    char sink[16384];
    for (int i = 0; i < 8; i++) {
        ssize_t n = recv(fd, sink, sizeof(sink), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            conn_free(c); /* the peer closed (or reset): done */
            return;
        }
        if (n < 0)
            return;
        if ((size_t)n >= c->linger_left) {
            log_debug("conn %llu %s: lingering close read its byte bound", (unsigned long long)c->id,
                      c->addr);
            conn_free(c);
            return;
        }
        c->linger_left -= (size_t)n;
    }
}

/*
 * Lingering close, as nginx does: closing a socket that still has unread input makes the kernel
 * send a reset, and a reset can destroy the answer (an HTTP error, a close frame such as 1009) in
 * the peer's receive buffer, or fail the peer's own send, before the peer reads it. So once
 * everything is written: shut the write side (the peer sees EOF after our last byte), read and
 * discard until the peer closes, for at most close_timeout and 2 x max_message_size bytes (at least
 * 1 MiB), then close. The session and the connection slot are released now; only the socket and
 * its timer linger. Under TLS the raw bytes are discarded undecrypted: nothing more is said.
 */
static void conn_linger(struct conn *c)
{
    conn_release_state(c);
    c->state = CONN_LINGER;
    uint64_t bound = 2 * (uint64_t)c->srv->cfg->max_message_size;
    c->linger_left = bound < (1u << 20) ? (1u << 20) : bound > SIZE_MAX ? SIZE_MAX : (size_t)bound;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    /* Under TLS a bare FIN would cut the record stream; the peer closes after our close frame. */
    if (fd < 0 || (!bufferevent_openssl_get_ssl(c->bev) && shutdown(fd, SHUT_WR) != 0) ||
        !(c->linger_ev = event_new(c->srv->base, fd, EV_READ | EV_PERSIST, linger_read_cb, c)) ||
        event_add(c->linger_ev, NULL) != 0) {
        conn_free(c); /* already reset or gone, or no memory: nothing left to protect */
        return;
    }
    timer_arm_ms(c, c->srv->cfg->close_timeout_ms);
}

static void conn_free(struct conn *c)
{
    if (c->freeing)
        return;
    if (c->busy) {
        c->dead = true;
        return;
    }
    c->freeing = true;
    struct server *srv = c->srv;
    conn_release_state(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->num_conns--;
    event_free(c->timer);
    if (c->linger_ev)
        event_free(c->linger_ev);
    bufferevent_free(c->bev); /* BEV_OPT_CLOSE_ON_FREE closes the socket (and the SSL) */
    free(c);
    server_conn_gone(srv);
}
