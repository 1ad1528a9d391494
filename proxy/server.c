/*
 * server.c -- the wiring: store, loop, connection pool, chat, router, API and listeners built in
 * order from the config, signals and the graceful drain, and the teardown in reverse.
 */
#include "server.h"

#include <event2/event.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <openssl/ssl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "api/api.h"
#include "base/log.h"
#include "chat/chat.h"
#include "store.h"

/*
 * Give freed heap back to the system, once a second. A burst (a join storm's member events, a
 * fan-out to a slow room) leaves many small free chunks spread over the heap; glibc returns only
 * the top of the heap on its own, so without this the process kept its peak RSS for good.
 * malloc_trim also releases whole free pages in the middle (madvise). Only when at least
 * TRIM_MIN_FREE, and a quarter of what is in use, is free: after a burst, not during a steady
 * fan-out whose next commit would fault the pages in again. A steady state costs one mallinfo2 a
 * second. Idle connections give back their held-frame buffers first.
 *
 * glibc's own trimming (the top of the heap, at every free past M_TRIM_THRESHOLD) is left as it is:
 * raised to 64 MiB it saved the brk calls of a fan-out that has fallen behind (3-5 % of a
 * 5,000-member profile) but let a join storm's peak grow by 2-3 KiB per connection.
 */
#define TRIM_MIN_FREE (1u << 20)

static void trim_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server *srv = arg;
    conn_pool_trim(&srv->pool);
#ifdef __GLIBC__
    struct mallinfo2 mi = mallinfo2();
    if (mi.fordblks >= TRIM_MIN_FREE && mi.fordblks >= mi.uordblks / 4)
        malloc_trim(0);
#endif
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

/* ---- signals and drain ---- */

static void finish_if_drained(struct server *srv)
{
    if (srv->draining && srv->pool.num_conns == 0) {
        loop_commit(&srv->loop);
        event_base_loopexit(srv->loop.base, NULL);
    }
}

static void pool_empty_cb(void *arg)
{
    finish_if_drained(arg);
}

static void drain_timeout_job(void *arg)
{
    struct server *srv = arg;
    log_warn("drain: %zu connections still open after drain_timeout, dropping them",
             srv->pool.num_conns);
    conn_pool_drop_all(&srv->pool);
    finish_if_drained(srv);
}

static void drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loop_call_once(&((struct server *)arg)->loop, drain_timeout_job, arg); /* on the store fiber (net/gate.h) */
}

void server_shutdown(struct server *srv)
{
    if (srv->draining)
        return;
    srv->draining = true;
    srv->router.draining = true;
    log_info("shutting down: closing %zu connections (drain_timeout %lld ms)", srv->pool.num_conns,
             (long long)srv->cfg->drain_timeout_ms);
    listener_pause(&srv->listener);
    if (srv->api)
        api_stop(srv->api);
    chat_shutdown(srv->chat);
    conn_pool_shutdown(&srv->pool);
    /* Session rows and presence were updated as the sessions ended; make them durable now. */
    loop_commit(&srv->loop);
    struct timeval tv = {.tv_sec = srv->cfg->drain_timeout_ms / 1000,
                         .tv_usec = (srv->cfg->drain_timeout_ms % 1000) * 1000};
    srv->drain_timer = evtimer_new(srv->loop.base, drain_timeout_cb, srv);
    if (srv->drain_timer)
        evtimer_add(srv->drain_timer, &tv);
    finish_if_drained(srv);
}

static void shutdown_job(void *arg)
{
    server_shutdown(arg);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct server *srv = arg;
    log_info("received %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    loop_call_once(&srv->loop, shutdown_job, srv); /* it ends sessions: on the store fiber */
}

/*
 * SIGHUP: load [tls] cert and key again (a renewed certificate) for the connections accepted from
 * now on; open connections keep theirs, nobody is dropped. A file that does not load keeps the
 * running certificate. Logs go to stderr (journald), so there is no log file to reopen.
 */
static void reload_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    struct server *srv = arg;
    log_info("received SIGHUP");
    if (!srv->ssl_ctx) {
        log_info("reload: no [tls] configured, nothing to reload");
        return;
    }
    struct ssl_ctx_st *ctx = listener_tls_new(srv->cfg->tls_cert, srv->cfg->tls_key);
    if (!ctx) {
        log_error("reload: keeping the certificate in use");
        return;
    }
    listener_set_tls(&srv->listener, ctx);
    SSL_CTX_free(srv->ssl_ctx);
    srv->ssl_ctx = ctx;
    log_info("reload: [tls] cert %s and key %s loaded for new connections", srv->cfg->tls_cert,
             srv->cfg->tls_key);
}

/* ---- init / run / release ---- */

int server_check(const struct px_config *cfg)
{
    struct auth auth;
    char err[256];
    struct auth_settings as;
    auth_settings_from_config(&as, cfg);
    if (auth_init(&auth, &as, err, sizeof(err)) != 0) {
        fprintf(stderr, "config %s: [auth] %s\n", cfg->source ? cfg->source : "(defaults)", err);
        return -1;
    }
    auth_release(&auth);
    if (cfg->tls_cert[0]) {
        struct ssl_ctx_st *ctx = listener_tls_new(cfg->tls_cert, cfg->tls_key);
        if (!ctx)
            return -1;
        SSL_CTX_free(ctx);
    }
    return 0;
}

static struct store *open_store(const struct px_config *cfg)
{
    /* The server creates the store's directory (with its parents), as it does on a fresh checkout. */
    char *dir = config_store_is_pg(cfg) ? NULL : strdup(cfg->store_path);
    for (char *p = dir ? strchr(dir + 1, '/') : NULL; p; p = strchr(p + 1, '/')) {
        *p = '\0';
        if (mkdir(dir, 0750) == 0)
            log_info("store: created directory %s", dir);
        *p = '/';
    }
    free(dir);
    struct store_opts so = {
        .synchronous = strcasecmp(cfg->store_synchronous, "full") == 0 ? STORE_SYNC_FULL
                                                                        : STORE_SYNC_NORMAL,
        .busy_timeout_ms = (int)cfg->store_busy_timeout_ms,
        .readonly = false,
        .backend = config_store_is_pg(cfg) ? STORE_BACKEND_POSTGRESQL : STORE_BACKEND_SQLITE,
    };
    struct store *st = NULL;
    char err[512];
    if (store_open(&st, config_store_location(cfg), &so, err, sizeof(err)) != 0) {
        log_error("store: %s", err);
        return NULL;
    }
    /* Open and migrations could wait busy_timeout; the running loop never waits that long (for
     * PostgreSQL: one answer may take pg_timeout, a round trip, not a lock wait). */
    store_set_lock_wait(st, (int)(so.backend == STORE_BACKEND_POSTGRESQL ? cfg->store_pg_timeout_ms
                                                                         : cfg->store_lock_wait_ms));
    return st;
}

static void log_listening(const struct server *srv)
{
    const struct px_config *cfg = srv->cfg;
    int port = listener_port(&srv->listener);
    char host[256];
    int ignored;
    config_split_hostport(cfg->listen, host, sizeof(host), &ignored);
    const char *scheme = srv->ssl_ctx ? "https" : "http";
    const char *wscheme = srv->ssl_ctx ? "wss" : "ws";
    bool v6 = strchr(host, ':') != NULL;
    log_info("listening on %s://%s%s%s:%d  (chat %s://%s%s%s:%d%s%s%s)", scheme, v6 ? "[" : "", host,
             v6 ? "]" : "", port, wscheme, v6 ? "[" : "", host, v6 ? "]" : "", port, cfg->ws_path,
             cfg->echo_path[0] ? ", echo " : "", cfg->echo_path);
    if (cfg->static_dir[0] && cfg->demo_enabled)
        log_info("chat page: open %s://%s%s%s:%d/ in a browser (demo login is on)", scheme,
                 v6 ? "[" : "", host, v6 ? "]" : "", port);
}

int server_init(struct server *srv, const struct px_config *cfg)
{
    memset(srv, 0, sizeof(*srv));
    srv->cfg = cfg;
    signal(SIGPIPE, SIG_IGN);

    char err[256];
    struct auth_settings as;
    auth_settings_from_config(&as, cfg);
    if (auth_init(&srv->auth, &as, err, sizeof(err)) != 0) {
        log_error("auth: %s", err);
        return -1;
    }
    if (cfg->tls_cert[0] && !(srv->ssl_ctx = listener_tls_new(cfg->tls_cert, cfg->tls_key)))
        goto fail;

    struct store *st = open_store(cfg);
    if (!st)
        goto fail;
    if (loop_init(&srv->loop, cfg, st) != 0) {
        store_close(st);
        log_error("out of memory at start");
        goto fail;
    }
    if (conn_pool_init(&srv->pool, &srv->loop, route_request, &srv->router) != 0 ||
        !(srv->chat = chat_new(&srv->loop, &srv->auth))) {
        log_error("out of memory at start");
        goto fail;
    }
    srv->pool.on_empty = pool_empty_cb;
    srv->pool.count_late = &srv->auth.trusted;
    srv->pool.empty_arg = srv;
    loop_set_flush(&srv->loop, conn_pool_flush, &srv->pool);
    route_init(&srv->router, &srv->loop, &srv->auth, srv->chat);

    /* Before any port is bound: a SIGTERM from a supervisor must always mean a graceful stop. */
    srv->sig_term = evsignal_new(srv->loop.base, SIGTERM, signal_cb, srv);
    srv->sig_int = evsignal_new(srv->loop.base, SIGINT, signal_cb, srv);
    srv->sig_hup = evsignal_new(srv->loop.base, SIGHUP, reload_cb, srv);
    if (!srv->sig_term || !srv->sig_int || !srv->sig_hup) {
        log_error("cannot install signal handlers");
        goto fail;
    }
    event_priority_set(srv->sig_term, 0);
    event_priority_set(srv->sig_int, 0);
    evsignal_add(srv->sig_term, NULL);
    evsignal_add(srv->sig_int, NULL);
    evsignal_add(srv->sig_hup, NULL);
    srv->trim_timer = event_new(srv->loop.base, -1, EV_PERSIST, trim_cb, srv);
    if (srv->trim_timer) {
        struct timeval sec = {1, 0};
        evtimer_add(srv->trim_timer, &sec);
    }

    /* Cluster mode: join before the orphans below, which are then only this node's. */
    if (config_store_is_pg(cfg) && chat_cluster_start(srv->chat) != 0)
        goto fail;

    /* Sessions a crashed or killed process left open are over; presence must say so. */
    /* Their events (session.closed, user.offline) commit with the ends, in one transaction. */
    int64_t ended = 0, now = loop_now_ms(&srv->loop);
    loop_tx_begin(&srv->loop);
    chat_events_orphans(srv->chat, now);
    if (store_session_end_orphans(st, now, "server_restart", &ended) != 0) {
        log_error("store: cannot end sessions left open by a previous run: %s",
                  store_last_error(st));
        store_rollback(st);     /* none of the events either */
        loop_commit(&srv->loop); /* closes the loop's side of the transaction */
        goto fail;
    }
    loop_commit(&srv->loop);
    if (ended)
        log_warn("ended %lld sessions left open by a previous run (server_restart)", (long long)ended);

    /* From here on the application runs on the store fiber when the store is PostgreSQL. */
    if (config_store_is_pg(cfg) && loop_gate_start(&srv->loop) != 0) {
        log_error("out of memory starting the store fiber");
        goto fail;
    }
    if (listener_open(&srv->listener, &srv->loop, "main", cfg->listen, srv->ssl_ctx, 1024,
                      conn_accept, &srv->pool, err, sizeof(err)) != 0) {
        log_error("[server] listen: %s", err);
        goto fail;
    }
    srv->listener.sniff_timeout_ms = cfg->handshake_timeout_ms;
    log_listening(srv);
    if (cfg->api_listen[0] && api_start(&srv->api, &srv->loop, &srv->pool, srv->chat) != 0)
        goto fail;
    return 0;
fail:
    server_release(srv);
    return -1;
}

int server_run(struct server *srv)
{
    event_base_dispatch(srv->loop.base);
    loop_gate_stop(&srv->loop); /* what waited on the store finishes; the rest runs here */
    loop_commit(&srv->loop);
    return srv->exit_code;
}

void server_release(struct server *srv)
{
    listener_release(&srv->listener);
    if (srv->loop.base) {
        loop_gate_stop(&srv->loop);
        /* Every session ends (rows written), then the last commit answers what waits for it. */
        conn_pool_release(&srv->pool);
        loop_commit(&srv->loop);
    }
    if (srv->chat)
        chat_cluster_stop(srv->chat); /* after the sessions ended: the node is down, not lost */
    if (srv->api)
        api_free(srv->api);
    srv->api = NULL;
    chat_free(srv->chat);
    if (srv->sig_term)
        event_free(srv->sig_term);
    if (srv->sig_int)
        event_free(srv->sig_int);
    if (srv->sig_hup)
        event_free(srv->sig_hup);
    if (srv->drain_timer)
        event_free(srv->drain_timer);
    if (srv->trim_timer)
        event_free(srv->trim_timer);
    struct store *st = srv->loop.store;
    loop_release(&srv->loop);
    if (st)
        store_close(st);
    if (srv->ssl_ctx)
        SSL_CTX_free(srv->ssl_ctx);
    auth_release(&srv->auth);
    memset(srv, 0, sizeof(*srv));
}
