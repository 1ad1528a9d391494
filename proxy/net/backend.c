/*
 * backend.c -- the events client's transport: HTTP/1.1 POST or FastCGI RESPONDER on bufferevents,
 * a fixed pool of slots, a deadline per request. Parsing is sans-I/O (http_resp_status, proto/fcgi).
 */
#include "net/backend.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "base/log.h"
#include "base/sbuf.h"
#include "proto/fcgi.h"
#include "proto/http1.h"

/* Bound on the CGI head read from php-fpm's STDOUT; the body after it is ignored. */
#define BACKEND_HEAD_MAX 8192

struct slot {
    struct backend *b;
    struct bufferevent *bev; /* NULL: no connection; FastCGI keeps one between requests */
    struct event *timer;
    bool busy;
    backend_done_fn *done;
    void *arg;
    struct fcgi_parser fp;
    struct sbuf head; /* FastCGI: STDOUT until the CGI head is complete */
    bool head_done;
    int status;
};

struct backend {
    struct event_base *base;
    struct backend_target t;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int64_t timeout_ms;
    size_t pool, busy;
    struct slot *slots;
};

/* ---- Target ---- */

int backend_parse_target(const char *s, struct backend_target *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    const char *rest;
    if (!strncmp(s, "fastcgi:unix:", 13)) {
        t->kind = BACKEND_FCGI;
        rest = s + 13;
        const char *colon = strchr(rest, ':');
        if (rest[0] != '/' || !colon || colon[1] != '/' ||
            (size_t)(colon - rest) >= sizeof(t->unix_path) || strlen(colon + 1) >= sizeof(t->path)) {
            snprintf(err, errlen, "want fastcgi:unix:/SOCKET:/SCRIPT (absolute paths)");
            return -1;
        }
        memcpy(t->unix_path, rest, (size_t)(colon - rest));
        snprintf(t->path, sizeof(t->path), "%s", colon + 1);
        return 0;
    }
    if (!strncmp(s, "http://", 7)) {
        t->kind = BACKEND_HTTP;
        rest = s + 7;
        t->port = 80;
    } else if (!strncmp(s, "fastcgi://", 10)) {
        t->kind = BACKEND_FCGI;
        rest = s + 10;
        t->port = 0;
    } else {
        snprintf(err, errlen, "not http://, fastcgi:// or fastcgi:unix:");
        return -1;
    }
    const char *slash = strchr(rest, '/');
    if (!slash || slash == rest || strlen(slash) >= sizeof(t->path)) {
        snprintf(err, errlen, "want HOST:PORT/PATH after the scheme");
        return -1;
    }
    char hostport[300];
    if ((size_t)(slash - rest) >= sizeof(hostport)) {
        snprintf(err, errlen, "host too long");
        return -1;
    }
    memcpy(hostport, rest, (size_t)(slash - rest));
    hostport[slash - rest] = '\0';
    char *colon = strrchr(hostport, ':');
    if (colon && !strchr(colon, ']')) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || port < 1 || port > 65535) {
            snprintf(err, errlen, "bad port '%s'", colon + 1);
            return -1;
        }
        t->port = (int)port;
        *colon = '\0';
    }
    if (t->port == 0) {
        snprintf(err, errlen, "fastcgi:// needs HOST:PORT");
        return -1;
    }
    char *h = hostport;
    if (h[0] == '[') { /* [v6] */
        h++;
        h[strcspn(h, "]")] = '\0';
    }
    if (!h[0] || strlen(h) >= sizeof(t->host)) {
        snprintf(err, errlen, "no host");
        return -1;
    }
    memcpy(t->host, h, strlen(h) + 1); /* fits: checked above */
    memcpy(t->path, slash, strlen(slash) + 1);
    return 0;
}

/* ---- Slots ---- */

static void slot_drop_conn(struct slot *s)
{
    if (s->bev) {
        bufferevent_free(s->bev);
        s->bev = NULL;
    }
}

/* End the request in s: free the slot (keeping a clean FastCGI connection), then tell the caller. */
static void finish(struct slot *s, bool ok, int status, const char *error, bool keep)
{
    if (!s->busy)
        return;
    evtimer_del(s->timer);
    if (!keep)
        slot_drop_conn(s);
    s->busy = false;
    s->b->busy--;
    sbuf_reset(&s->head);
    backend_done_fn *done = s->done;
    void *arg = s->arg;
    s->done = NULL;
    s->arg = NULL;
    done(arg, ok, status, error);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    finish(arg, false, 0, "timeout", false);
}

static void http_read(struct slot *s, struct evbuffer *in)
{
    size_t n = evbuffer_get_length(in);
    if (n > 1024)
        n = 1024;
    const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    int st = 0;
    int rc = http_resp_status(p, n, &st);
    if (rc == 0)
        return;
    if (rc < 0) {
        finish(s, false, 0, "malformed HTTP response", false);
        return;
    }
    char why[32];
    snprintf(why, sizeof(why), "HTTP %d", st);
    /* Connection: close was asked; the answer's status is all we need. */
    finish(s, st >= 200 && st < 300, st, st >= 200 && st < 300 ? NULL : why, false);
}

static void fcgi_read(struct slot *s, struct evbuffer *in)
{
    size_t n = evbuffer_get_length(in);
    const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)n);
    size_t off = 0;
    while (s->busy) {
        struct fcgi_event ev;
        int rc = fcgi_parse(&s->fp, p + off, n - off, &ev);
        if (rc < 0) {
            char why[64];
            snprintf(why, sizeof(why), "FastCGI: %s", fcgi_strerror(rc));
            finish(s, false, 0, why, false);
            return;
        }
        off += (size_t)rc;
        if (ev.kind == FCGI_EV_NONE)
            break;
        if (ev.id != 1)
            continue;
        if (ev.kind == FCGI_EV_STDERR) {
            log_warn("events: php-fpm stderr: %.*s", (int)(ev.len > 200 ? 200 : ev.len),
                     (const char *)ev.data);
        } else if (ev.kind == FCGI_EV_STDOUT && !s->head_done) {
            size_t room = BACKEND_HEAD_MAX - s->head.len;
            sbuf_add(&s->head, ev.data, ev.len < room ? ev.len : room);
            size_t hl;
            int hrc = fcgi_cgi_status(s->head.p, s->head.len, BACKEND_HEAD_MAX, &s->status, &hl);
            if (hrc == 0)
                s->head_done = true;
            else if (hrc != FCGI_NEED_MORE) {
                finish(s, false, 0, "FastCGI: malformed CGI response head", false);
                return;
            }
        } else if (ev.kind == FCGI_EV_END) {
            bool clean = off == n && ev.protocol_status == FCGI_REQUEST_COMPLETE;
            evbuffer_drain(in, off);
            char why[64];
            if (ev.protocol_status != FCGI_REQUEST_COMPLETE) {
                snprintf(why, sizeof(why), "FastCGI: protocol status %d", ev.protocol_status);
                finish(s, false, 0, why, false);
            } else if (!s->head_done) {
                finish(s, false, 0, "FastCGI: no CGI response head", clean);
            } else {
                int st = s->status;
                snprintf(why, sizeof(why), "Status %d", st);
                finish(s, st >= 200 && st < 300, st, st >= 200 && st < 300 ? NULL : why, clean);
            }
            return;
        }
    }
    evbuffer_drain(in, off);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct slot *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (!s->busy) { /* an idle kept connection has nothing to say */
        slot_drop_conn(s);
        return;
    }
    if (s->b->t.kind == BACKEND_HTTP)
        http_read(s, in);
    else
        fcgi_read(s, in);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct slot *s = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (!s->busy) { /* php-fpm closed an idle connection (pm.max_requests, restart) */
        slot_drop_conn(s);
        return;
    }
    char why[160];
    int err = EVUTIL_SOCKET_ERROR();
    if (what & BEV_EVENT_ERROR)
        snprintf(why, sizeof(why), "connect/IO: %s", err ? evutil_socket_error_to_string(err) : "error");
    else
        snprintf(why, sizeof(why), "connection closed before the answer");
    finish(s, false, 0, why, false);
}

static int slot_connect(struct slot *s)
{
    struct backend *b = s->b;
    s->bev = bufferevent_socket_new(b->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!s->bev)
        return -1;
    bufferevent_setcb(s->bev, read_cb, NULL, event_cb, s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    /* A refused connect is reported through event_cb (libevent defers it), never here. */
    if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&b->addr, (int)b->addr_len) != 0) {
        slot_drop_conn(s);
        return -1;
    }
    return 0;
}

/* ---- Requests ---- */

static int write_http(struct slot *s, const char *body, size_t len, const char *ts, const char *sig)
{
    const struct backend_target *t = &s->b->t;
    struct evbuffer *out = bufferevent_get_output(s->bev);
    bool v6 = strchr(t->host, ':') != NULL; /* RFC 7230 5.4: an IPv6 literal in brackets */
    if (evbuffer_add_printf(out,
                            "POST %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUser-Agent: wsproxy\r\n"
                            "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                            "X-Wsproxy-Timestamp: %s\r\nX-Wsproxy-Signature: %s\r\n"
                            "Connection: close\r\n\r\n",
                            t->path, v6 ? "[" : "", t->host, v6 ? "]" : "", t->port, len, ts,
                            sig) < 0 ||
        evbuffer_add(out, body, len) != 0)
        return -1;
    return 0;
}

#define P(n, v) {n, sizeof(n) - 1, v, strlen(v)}

static int write_fcgi(struct slot *s, const char *body, size_t len, const char *ts, const char *sig)
{
    const struct backend_target *t = &s->b->t;
    char clen[24];
    snprintf(clen, sizeof(clen), "%zu", len);
    const char *base = strrchr(t->path, '/');
    struct fcgi_param p[] = {
        P("SCRIPT_FILENAME", t->path),
        P("SCRIPT_NAME", base ? base : t->path),
        P("REQUEST_URI", base ? base : t->path),
        P("DOCUMENT_URI", base ? base : t->path),
        P("REQUEST_METHOD", "POST"),
        P("CONTENT_TYPE", "application/json"),
        P("CONTENT_LENGTH", clen),
        P("QUERY_STRING", ""),
        P("SERVER_PROTOCOL", "HTTP/1.1"),
        P("GATEWAY_INTERFACE", "CGI/1.1"),
        P("SERVER_SOFTWARE", "wsproxy"),
        P("SERVER_NAME", "wsproxy"),
        P("REMOTE_ADDR", "127.0.0.1"),
        P("HTTP_USER_AGENT", "wsproxy"),
        P("HTTP_CONTENT_TYPE", "application/json"),
        P("HTTP_X_WSPROXY_TIMESTAMP", ts),
        P("HTTP_X_WSPROXY_SIGNATURE", sig),
    };
    size_t n = sizeof(p) / sizeof(p[0]);
    size_t need = fcgi_request(NULL, 0, 1, true, p, n, (const uint8_t *)body, len);
    uint8_t *buf = malloc(need);
    if (!buf)
        return -1;
    fcgi_request(buf, need, 1, true, p, n, (const uint8_t *)body, len);
    int rc = bufferevent_write(s->bev, buf, need);
    free(buf);
    fcgi_parser_init(&s->fp);
    s->head_done = false;
    s->status = 0;
    return rc;
}

int backend_post(struct backend *b, const char *body, size_t len, const char *timestamp,
                 const char *signature, backend_done_fn *done, void *arg)
{
    struct slot *s = NULL;
    /* A free slot with a kept connection first (FastCGI), else any free slot. */
    for (size_t i = 0; i < b->pool; i++) {
        struct slot *c = &b->slots[i];
        if (!c->busy && (!s || (c->bev && !s->bev)))
            s = c;
    }
    if (!s)
        return -1;
    if (s->bev && evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
        slot_drop_conn(s); /* stray bytes on a kept connection: start afresh */
    if (!s->bev && slot_connect(s) != 0)
        return -1;
    int rc = b->t.kind == BACKEND_HTTP ? write_http(s, body, len, timestamp, signature)
                                       : write_fcgi(s, body, len, timestamp, signature);
    if (rc != 0) {
        slot_drop_conn(s);
        return -1;
    }
    s->busy = true;
    b->busy++;
    s->done = done;
    s->arg = arg;
    struct timeval tv = {.tv_sec = b->timeout_ms / 1000, .tv_usec = (b->timeout_ms % 1000) * 1000};
    evtimer_add(s->timer, &tv);
    return 0;
}

size_t backend_free_slots(const struct backend *b)
{
    return b->pool - b->busy;
}

struct backend *backend_new(struct event_base *base, const struct backend_target *t, size_t pool,
                            int64_t timeout_ms, char *err, size_t errlen)
{
    struct backend *b = calloc(1, sizeof(*b));
    if (!b || !(b->slots = calloc(pool, sizeof(*b->slots)))) {
        free(b);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->base = base;
    b->t = *t;
    b->pool = pool;
    b->timeout_ms = timeout_ms;
    if (t->unix_path[0]) {
        struct sockaddr_un *un = (struct sockaddr_un *)&b->addr;
        un->sun_family = AF_UNIX;
        snprintf(un->sun_path, sizeof(un->sun_path), "%s", t->unix_path);
        b->addr_len = sizeof(*un);
    } else {
        /* Startup only: the one blocking name lookup, never repeated on the loop. */
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
        char port[8];
        snprintf(port, sizeof(port), "%d", t->port);
        int rc = getaddrinfo(t->host, port, &hints, &res);
        if (rc != 0 || !res) {
            snprintf(err, errlen, "cannot resolve %s: %s", t->host, gai_strerror(rc));
            free(b->slots);
            free(b);
            return NULL;
        }
        memcpy(&b->addr, res->ai_addr, res->ai_addrlen);
        b->addr_len = res->ai_addrlen;
        freeaddrinfo(res);
    }
    for (size_t i = 0; i < pool; i++) {
        b->slots[i].b = b;
        sbuf_init(&b->slots[i].head);
        if (!(b->slots[i].timer = evtimer_new(base, timeout_cb, &b->slots[i]))) {
            snprintf(err, errlen, "out of memory");
            backend_free(b);
            return NULL;
        }
    }
    return b;
}

void backend_free(struct backend *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->pool; i++)
        if (b->slots[i].timer)
            finish(&b->slots[i], false, 0, "shutdown", false);
    for (size_t i = 0; i < b->pool; i++) {
        slot_drop_conn(&b->slots[i]);
        if (b->slots[i].timer)
            event_free(b->slots[i].timer);
        sbuf_release(&b->slots[i].head);
    }
    free(b->slots);
    free(b);
}
