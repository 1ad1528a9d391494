/*
 * listener.c -- a listening socket on the loop, shared by the main and the API listener, and the
 * TLS context the main one may use.
 */
#include "net/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/config.h"
#include "base/log.h"
#include "net/loop.h"

#define LISTENER_BACKOFF_MS 100

void listener_addr_str(const struct sockaddr *sa, bool with_port, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "unknown";
    int port = 0;
    bool v6 = false;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        port = ntohs(s6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], host, sizeof(host));
        } else {
            inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
            v6 = true;
        }
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        port = ntohs(s4->sin_port);
    }
    if (with_port)
        snprintf(out, cap, "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
    else
        snprintf(out, cap, "%s", host);
}

int listener_parse_addr(const char *spec, struct sockaddr_storage *ss, int *len)
{
    char host[256];
    int port;
    if (config_split_hostport(spec, host, sizeof(host), &port) != 0)
        return -1;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *len = sizeof(*s4);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*s6);
    } else if (!strcmp(host, "localhost")) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *len = sizeof(*s4);
    } else {
        return -1;
    }
    return 0;
}

int listener_port(const struct listener *l)
{
    if (!l->evl)
        return -1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(evconnlistener_get_fd(l->evl), (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* Wrap fd in a bufferevent (TLS when tls is set) and hand it up; closes fd on failure. */
static void hand_up(struct listener *l, evutil_socket_t fd, const struct sockaddr *sa, bool tls)
{
    struct bufferevent *bev;
    if (tls) {
        SSL *ssl = SSL_new(l->tls);
        bev = ssl ? bufferevent_openssl_socket_new(l->lp->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                   BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
        if (ssl && !bev)
            SSL_free(ssl);
    } else {
        bev = bufferevent_socket_new(l->lp->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!bev) {
        char peer[64];
        listener_addr_str(sa, true, peer, sizeof(peer));
        log_error("%s: out of memory accepting %s", l->name, peer);
        evutil_closesocket(fd);
        return;
    }
    l->on_accept(l->arg, bev, sa);
}

/* ---- TLS port: a TLS hello or a plain HTTP request? ---- */

struct listener_sniff {
    struct listener *l;
    evutil_socket_t fd;
    struct event *ev;
    struct sockaddr_storage sa;
    struct listener_sniff *prev, *next;
};

static void sniff_free(struct listener_sniff *s, bool close_fd)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        s->l->sniffs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    event_free(s->ev);
    if (close_fd)
        evutil_closesocket(s->fd);
    free(s);
}

/*
 * Plain HTTP on the TLS port gets a readable answer, as nginx gives one, instead of a failed TLS
 * handshake that browsers and curl show as an empty reply. The request already read is drained
 * first, so closing does not turn into a reset that destroys the answer.
 */
static void answer_plain_http(struct listener_sniff *s)
{
    static const char body[] = "This port speaks TLS: use https:// or wss://.\n";
    char msg[256];
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     sizeof(body) - 1, body);
    char sink[4096];
    while (recv(s->fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
        ;
    if (n > 0 && send(s->fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == n)
        shutdown(s->fd, SHUT_WR);
    char peer[64];
    listener_addr_str((struct sockaddr *)&s->sa, true, peer, sizeof(peer));
    log_info("%s: plain HTTP from %s on the TLS port: answered 400", s->l->name, peer);
}

static void sniff_cb(evutil_socket_t fd, short what, void *arg)
{
    struct listener_sniff *s = arg;
    struct listener *l = s->l;
    unsigned char first;
    ssize_t n = (what & EV_READ) ? recv(fd, &first, 1, MSG_PEEK) : -1;
    if (n == 1 && first == 0x16) { /* TLS record type 22: handshake */
        struct sockaddr_storage sa = s->sa;
        sniff_free(s, false);
        hand_up(l, fd, (struct sockaddr *)&sa, true);
        return;
    }
    if (n == 1 && first >= 'A' && first <= 'Z') /* an HTTP method */
        answer_plain_http(s);
    sniff_free(s, true); /* timed out, closed, or neither: nothing to serve */
}

static void sniff_start(struct listener *l, evutil_socket_t fd, const struct sockaddr *sa,
                        int socklen)
{
    struct listener_sniff *s = calloc(1, sizeof(*s));
    if (s)
        s->ev = event_new(l->lp->base, fd, EV_READ, sniff_cb, s);
    if (!s || !s->ev) {
        free(s);
        evutil_closesocket(fd);
        return;
    }
    s->l = l;
    s->fd = fd;
    memcpy(&s->sa, sa, (size_t)socklen < sizeof(s->sa) ? (size_t)socklen : sizeof(s->sa));
    s->next = l->sniffs;
    if (l->sniffs)
        l->sniffs->prev = s;
    l->sniffs = s;
    int64_t ms = l->sniff_timeout_ms > 0 ? l->sniff_timeout_ms : 10000;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    event_add(s->ev, &tv);
}

static void accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
    (void)evl;
    struct listener *l = arg;
    /* Frames are written whole, one write each: Nagle would only add latency. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (l->tls)
        sniff_start(l, fd, sa, socklen);
    else
        hand_up(l, fd, sa, false);
}

void listener_set_tls(struct listener *l, struct ssl_ctx_st *ctx)
{
    SSL_CTX_up_ref(ctx);
    if (l->tls)
        SSL_CTX_free(l->tls);
    l->tls = ctx;
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct listener *l = arg;
    if (l->evl && !l->paused)
        evconnlistener_enable(l->evl);
}

static void accept_error_cb(struct evconnlistener *evl, void *arg)
{
    struct listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    log_error("%s: accept: %s; pausing the listener for %dms", l->name,
              evutil_socket_error_to_string(err), LISTENER_BACKOFF_MS);
    /* Out of descriptors (EMFILE) would otherwise spin: back off and let connections finish. */
    evconnlistener_disable(evl);
    struct timeval tv = {0, LISTENER_BACKOFF_MS * 1000};
    evtimer_add(l->resume_ev, &tv);
}

int listener_open(struct listener *l, struct loop *lp, const char *name, const char *spec,
                  struct ssl_ctx_st *tls, int backlog, listener_accept_fn *fn, void *arg, char *err,
                  size_t errcap)
{
    memset(l, 0, sizeof(*l));
    l->lp = lp;
    l->name = name;
    if (tls)
        listener_set_tls(l, tls);
    l->on_accept = fn;
    l->arg = arg;
    struct sockaddr_storage ss;
    int sslen;
    if (listener_parse_addr(spec, &ss, &sslen) != 0) {
        snprintf(err, errcap, "cannot parse '%s'", spec);
        return -1;
    }
    l->resume_ev = evtimer_new(lp->base, resume_cb, l);
    if (!l->resume_ev) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    l->evl = evconnlistener_new_bind(lp->base, accept_cb, l,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                     backlog, (struct sockaddr *)&ss, sslen);
    if (!l->evl) {
        snprintf(err, errcap, "cannot listen on %s: %s", spec, strerror(errno));
        listener_release(l);
        return -1;
    }
    evconnlistener_set_error_cb(l->evl, accept_error_cb);
    return 0;
}

void listener_pause(struct listener *l)
{
    l->paused = true;
    if (l->evl)
        evconnlistener_disable(l->evl);
}

void listener_close(struct listener *l)
{
    l->paused = true;
    if (l->evl)
        evconnlistener_free(l->evl);
    l->evl = NULL;
}

void listener_release(struct listener *l)
{
    listener_close(l);
    while (l->sniffs)
        sniff_free(l->sniffs, true);
    if (l->tls)
        SSL_CTX_free(l->tls);
    l->tls = NULL;
    if (l->resume_ev)
        event_free(l->resume_ev);
    l->resume_ev = NULL;
}

/* Why loading a PEM file failed, in words: the file system's reason first, else OpenSSL's. */
static const char *tls_error(const char *path, char *buf, size_t cap)
{
    if (access(path, R_OK) != 0) {
        snprintf(buf, cap, "%s", strerror(errno));
    } else {
        unsigned long e = ERR_peek_last_error();
        if (e)
            ERR_error_string_n(e, buf, cap);
        else
            snprintf(buf, cap, "not a PEM file of the right kind");
    }
    ERR_clear_error();
    return buf;
}

struct ssl_ctx_st *listener_tls_new(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        log_error("tls: cannot create context");
        return NULL;
    }
    /* TLS 1.0/1.1 are deprecated (RFC 8996). */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle connections give their 16+ KiB record buffers back: most chat sockets are idle. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    char why[256];
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        log_error("tls: [tls] cert %s: cannot load certificate chain: %s", cert,
                  tls_error(cert, why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        log_error("tls: [tls] key %s: cannot load private key: %s", key,
                  tls_error(key, why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        log_error("tls: [tls] key %s does not match certificate %s", key, cert);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}
