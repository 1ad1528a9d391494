/*
 * server.c -- builds and tears down the server context: TLS context, listener, store, registries,
 * signals and graceful drain, and the group commit that turns one loop iteration's writes into one
 * SQLite transaction.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "chat/chat.h"
#include "net/conn.h"
#include "base/log.h"
#include "base/registry.h"
#include "store.h"

int64_t server_now_ms(struct server *srv)
{
    struct timeval tv;
    if (event_base_gettimeofday_cached(srv->base, &tv) != 0)
        gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void auth_settings_from_config(struct auth_settings *as, const struct px_config *cfg)
{
    as->mode = cfg->auth_mode;
    as->jwt_alg = cfg->jwt_alg;
    as->jwt_secret = cfg->jwt_secret;
    as->jwt_public_key = cfg->jwt_public_key;
    as->leeway_ms = cfg->jwt_leeway_ms;
    as->jwt_cookie = cfg->jwt_cookie;
    as->trusted_proxies = cfg->trusted_proxies;
}

/* ---- group commit ---- */

void server_tx_begin(struct server *srv)
{
    srv->tx_writes++;
    if (srv->tx_open)
        return;
    if (store_begin(srv->store) != 0) {
        /* Without a transaction each statement autocommits: slower, still durable. */
        srv->metrics.store_errors++;
        log_error("store: cannot begin transaction: %s", store_last_error(srv->store));
        return;
    }
    srv->tx_open = true;
    srv->tx_writes = 1;
    /* Lowest priority: runs after every read callback of this loop iteration has been served. */
    event_active(srv->commit_ev, EV_TIMEOUT, 0);
}

void server_after_commit(struct server *srv, void (*fn)(void *arg, bool ok), void *arg)
{
    if (!srv->tx_open) {
        fn(arg, true);
        return;
    }
    if (srv->num_after == srv->cap_after) {
        size_t cap = srv->cap_after ? srv->cap_after * 2 : 16;
        struct after_commit *grown = realloc(srv->after, cap * sizeof(*grown));
        if (!grown) {
            fn(arg, false);
            return;
        }
        srv->after = grown;
        srv->cap_after = cap;
    }
    srv->after[srv->num_after++] = (struct after_commit){fn, arg};
}

void server_commit(struct server *srv)
{
    if (!srv->tx_open)
        return;
    double t0 = mono_s();
    int rc = store_commit(srv->store);
    double dt = mono_s() - t0;
    srv->tx_open = false;
    bool ok = rc == 0;
    if (ok) {
        metrics_commit(&srv->metrics, dt, srv->tx_writes);
        conn_flush_deferred(srv);
    } else {
        /*
         * Nothing of this batch is durable, so no receipt may go out: drop the held frames and close
         * the writers' connections; clients resend with the same cid (idempotent) when they reconnect.
         */
        srv->metrics.store_errors++;
        log_error("store: commit of %llu writes failed: %s", (unsigned long long)srv->tx_writes,
                  store_last_error(srv->store));
        store_rollback(srv->store);
        struct conn *c = srv->dirty;
        while (c) {
            struct conn *next = c->dirty_next;
            conn_close(c, WS_CLOSE_INTERNAL, "store error", END_PROTOCOL_ERROR, false);
            c = next;
        }
        conn_flush_deferred(srv);
    }
    srv->tx_writes = 0;
    /* Callbacks may open a new transaction; take the list first. */
    size_t n = srv->num_after;
    struct after_commit *list = srv->after;
    srv->after = NULL;
    srv->num_after = srv->cap_after = 0;
    for (size_t i = 0; i < n; i++)
        list[i].fn(list[i].arg, ok);
    free(list);
}

static void commit_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server_commit(arg);
}

/* ---- TLS ---- */

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

static int tls_init(struct server *srv, const struct px_config *cfg)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        log_error("tls: cannot create context");
        return -1;
    }
    /* TLS 1.0/1.1 are deprecated (RFC 8996). */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle connections give their 16+ KiB record buffers back: most chat sockets are idle. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    char why[256];
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        log_error("tls: [tls] cert %s: cannot load certificate chain: %s", cfg->tls_cert,
                  tls_error(cfg->tls_cert, why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
        log_error("tls: [tls] key %s: cannot load private key: %s", cfg->tls_key,
                  tls_error(cfg->tls_key, why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        log_error("tls: [tls] key %s does not match certificate %s", cfg->tls_key, cfg->tls_cert);
        goto fail;
    }
    srv->ssl_ctx = ctx;
    return 0;
fail:
    SSL_CTX_free(ctx);
    return -1;
}

/* ---- listener ---- */

static void addr_to_string(const struct sockaddr *sa, char *out, size_t cap)
{
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], out, (socklen_t)cap);
            return;
        }
        inet_ntop(AF_INET6, &s6->sin6_addr, out, (socklen_t)cap);
    } else if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
    } else {
        snprintf(out, cap, "unknown");
    }
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int socklen,
                      void *arg)
{
    (void)l;
    (void)socklen;
    struct server *srv = arg;
    char peer[64];
    addr_to_string(sa, peer, sizeof(peer));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct bufferevent *bev;
    if (srv->ssl_ctx) {
        SSL *ssl = SSL_new(srv->ssl_ctx);
        if (!ssl) {
            evutil_closesocket(fd);
            return;
        }
        bev = bufferevent_openssl_socket_new(srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    } else {
        bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!bev) {
        log_error("cannot create bufferevent for %s", peer);
        evutil_closesocket(fd);
        return;
    }
    conn_accept(srv, bev, peer);
}

static void resume_listener_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server *srv = arg;
    if (!srv->draining)
        evconnlistener_enable(srv->listener);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct server *srv = arg;
    int err = EVUTIL_SOCKET_ERROR();
    log_error("accept: %s; pausing the listener for 100ms", evutil_socket_error_to_string(err));
    /* Out of descriptors (EMFILE) would otherwise spin: back off and let connections finish. */
    evconnlistener_disable(l);
    struct timeval tv = {0, 100000};
    event_base_once(srv->base, -1, EV_TIMEOUT, resume_listener_cb, srv, &tv);
}

int server_listen_addr(const char *spec, struct sockaddr_storage *ss, int *len)
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

int server_bound_port(evutil_socket_t fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* ---- signals and drain ---- */

static void finish_if_drained(struct server *srv)
{
    if (srv->draining && srv->num_conns == 0) {
        server_commit(srv);
        event_base_loopexit(srv->base, NULL);
    }
}

void server_conn_gone(struct server *srv)
{
    if (srv->draining)
        finish_if_drained(srv);
}

static void drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server *srv = arg;
    log_warn("drain: %zu connections still open after drain_timeout, dropping them", srv->num_conns);
    while (srv->conns)
        conn_close(srv->conns, WS_CLOSE_GOING_AWAY, "server shutdown", END_SERVER_SHUTDOWN, true);
    finish_if_drained(srv);
}

void server_shutdown(struct server *srv)
{
    if (srv->draining)
        return;
    srv->draining = true;
    log_info("shutting down: closing %zu connections (drain_timeout %lld ms)", srv->num_conns,
             (long long)srv->cfg->drain_timeout_ms);
    evconnlistener_disable(srv->listener);
    if (srv->api)
        api_stop(srv->api);
    struct conn *c = srv->conns;
    while (c) {
        struct conn *next = c->next;
        if (c->state == CONN_OPEN)
            conn_close(c, WS_CLOSE_GOING_AWAY, "server shutdown", END_SERVER_SHUTDOWN, false);
        else if (c->state == CONN_HTTP)
            conn_close(c, 0, NULL, END_SERVER_SHUTDOWN, true);
        c = next;
    }
    /* Session rows and presence were updated by chat_end; make them durable now. */
    server_commit(srv);
    struct timeval tv = {.tv_sec = srv->cfg->drain_timeout_ms / 1000,
                         .tv_usec = (srv->cfg->drain_timeout_ms % 1000) * 1000};
    srv->drain_timer = evtimer_new(srv->base, drain_timeout_cb, srv);
    if (srv->drain_timer)
        evtimer_add(srv->drain_timer, &tv);
    finish_if_drained(srv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_info("received %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    server_shutdown(arg);
}

/* ---- init / run / free ---- */

int server_check(const struct px_config *cfg)
{
    struct server srv;
    memset(&srv, 0, sizeof(srv));
    char err[256];
    struct auth_settings as;
    auth_settings_from_config(&as, cfg);
    if (auth_init(&srv.auth, &as, err, sizeof(err)) != 0) {
        log_error("auth: %s", err);
        return -1;
    }
    auth_free(&srv.auth);
    if (cfg->tls_cert[0]) {
        if (tls_init(&srv, cfg) != 0)
            return -1;
        SSL_CTX_free(srv.ssl_ctx);
    }
    return 0;
}

int server_init(struct server *srv, const struct px_config *cfg)
{
    memset(srv, 0, sizeof(*srv));
    srv->cfg = cfg;
    signal(SIGPIPE, SIG_IGN);

    srv->policy.origins = (const char *const *)cfg->origins.items;
    srv->policy.num_origins = cfg->origins.n;
    srv->policy.subprotocols = (const char *const *)cfg->subprotocols.items;
    srv->policy.num_subprotocols = cfg->subprotocols.n;

    char err[256];
    struct auth_settings as;
    auth_settings_from_config(&as, cfg);
    if (auth_init(&srv->auth, &as, err, sizeof(err)) != 0) {
        log_error("auth: %s", err);
        return -1;
    }
    if (srv->auth.alg == AUTH_ALG_HS256 && (srv->auth.modes & AUTH_MODE_TOKEN) &&
        strlen(cfg->jwt_secret) < AUTH_SECRET_MIN_RECOMMENDED)
        log_warn("[auth] jwt_secret is shorter than %d bytes; use a long random secret",
                 AUTH_SECRET_MIN_RECOMMENDED);

    if (cfg->tls_cert[0] && tls_init(srv, cfg) != 0)
        goto fail;

    /* The default path lives under var/; create the directory rather than fail on a fresh checkout. */
    char *dir = strdup(cfg->store_path);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0750) == 0)
            log_info("store: created directory %s", dir);
    }
    free(dir);

    struct store_opts so = {
        .synchronous = strcasecmp(cfg->store_synchronous, "full") == 0 ? STORE_SYNC_FULL
                                                                        : STORE_SYNC_NORMAL,
        .busy_timeout_ms = (int)cfg->store_busy_timeout_ms,
        .readonly = false,
    };
    if (store_open(&srv->store, cfg->store_path, &so, err, sizeof(err)) != 0) {
        log_error("store: %s", err);
        goto fail;
    }

    srv->users = registry_map_new();
    srv->rooms = registry_map_new();
    srv->ip_counts = registry_counter_new();
    struct event_config *ecfg = event_config_new();
    if (ecfg) {
        /* A loop iteration must not starve the commit event under load: cap callbacks per pass. */
        struct timeval max_interval = {0, 10000};
        event_config_set_max_dispatch_interval(ecfg, &max_interval, 1024, 1);
    }
    srv->base = ecfg ? event_base_new_with_config(ecfg) : NULL;
    if (ecfg)
        event_config_free(ecfg);
    if (!srv->users || !srv->rooms || !srv->ip_counts || !srv->base) {
        log_error("out of memory at start");
        goto fail;
    }
    /* Priorities: 0 signals, 1 I/O (the default for new events), 2 the group commit. */
    event_base_priority_init(srv->base, 3);
    srv->commit_ev = event_new(srv->base, -1, 0, commit_cb, srv);
    event_priority_set(srv->commit_ev, 2);

    /* Before any port is bound: a SIGTERM from a supervisor must always mean a graceful stop. */
    srv->sig_term = evsignal_new(srv->base, SIGTERM, signal_cb, srv);
    srv->sig_int = evsignal_new(srv->base, SIGINT, signal_cb, srv);
    if (!srv->sig_term || !srv->sig_int) {
        log_error("cannot install signal handlers");
        goto fail;
    }
    event_priority_set(srv->sig_term, 0);
    event_priority_set(srv->sig_int, 0);
    evsignal_add(srv->sig_term, NULL);
    evsignal_add(srv->sig_int, NULL);

    /* Sessions a crashed or killed process left open are over; presence must say so. */
    int64_t ended = 0;
    if (store_session_end_orphans(srv->store, server_now_ms(srv), "server_restart", &ended) != 0) {
        log_error("store: cannot end sessions left open by a previous run: %s",
                  store_last_error(srv->store));
        goto fail;
    }
    if (ended)
        log_warn("ended %lld sessions left open by a previous run (server_restart)", (long long)ended);

    struct sockaddr_storage ss;
    int sslen;
    if (server_listen_addr(cfg->listen, &ss, &sslen) != 0) {
        log_error("[server] listen: cannot parse '%s'", cfg->listen);
        goto fail;
    }
    srv->listener = evconnlistener_new_bind(srv->base, accept_cb, srv,
                                            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                                LEV_OPT_CLOSE_ON_EXEC,
                                            1024, (struct sockaddr *)&ss, sslen);
    if (!srv->listener) {
        log_error("[server] listen: cannot listen on %s: %s", cfg->listen, strerror(errno));
        goto fail;
    }
    evconnlistener_set_error_cb(srv->listener, accept_error_cb);
    int port = server_bound_port(evconnlistener_get_fd(srv->listener));
    char host[256];
    int ignored;
    config_split_hostport(cfg->listen, host, sizeof(host), &ignored);
    const char *scheme = srv->ssl_ctx ? "https" : "http";
    const char *wscheme = srv->ssl_ctx ? "wss" : "ws";
    bool v6 = strchr(host, ':') != NULL;
    log_info("listening on %s://%s%s%s:%d  (chat %s://%s%s%s:%d%s%s%s)", scheme, v6 ? "[" : "", host,
             v6 ? "]" : "", port, wscheme, v6 ? "[" : "", host, v6 ? "]" : "", port, cfg->ws_path,
             cfg->echo_path[0] ? ", echo " : "", cfg->echo_path);

    if (cfg->api_listen[0] && api_start(srv, &srv->api) != 0)
        goto fail;
    if (cfg->static_dir[0] && cfg->demo_enabled)
        log_info("chat page: open %s://%s%s%s:%d/ in a browser (demo login is on)", scheme,
                 v6 ? "[" : "", host, v6 ? "]" : "", port);

    return 0;
fail:
    server_free(srv);
    return -1;
}

int server_run(struct server *srv)
{
    event_base_dispatch(srv->base);
    server_commit(srv);
    return srv->exit_code;
}

void server_free(struct server *srv)
{
    while (srv->conns)
        conn_close(srv->conns, WS_CLOSE_GOING_AWAY, "server shutdown", END_SERVER_SHUTDOWN, true);
    server_commit(srv);
    if (srv->api)
        api_free(srv->api);
    srv->api = NULL;
    if (srv->listener)
        evconnlistener_free(srv->listener);
    if (srv->sig_term)
        event_free(srv->sig_term);
    if (srv->sig_int)
        event_free(srv->sig_int);
    if (srv->drain_timer)
        event_free(srv->drain_timer);
    if (srv->commit_ev)
        event_free(srv->commit_ev);
    free(srv->after);
    registry_map_free(srv->users);
    registry_map_free(srv->rooms);
    registry_counter_free(srv->ip_counts);
    if (srv->store)
        store_close(srv->store);
    if (srv->ssl_ctx)
        SSL_CTX_free(srv->ssl_ctx);
    auth_free(&srv->auth);
    if (srv->base)
        event_base_free(srv->base);
    memset(srv, 0, sizeof(*srv));
}
