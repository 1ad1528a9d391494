/*
 * server.h -- the wiring: builds the loop, the store, the connection pool, the chat application, the
 * router, the API and both listeners from the config, handles signals and the graceful drain, and
 * tears it all down in order. The one server context; no other global state but the log level.
 */
#ifndef WSP_SERVER_H
#define WSP_SERVER_H

#include <stdbool.h>

#include "base/config.h"
#include "net/conn.h"
#include "net/listener.h"
#include "net/loop.h"
#include "proto/auth.h"
#include "route.h"

struct api;
struct chat;
struct event;
struct ssl_ctx_st;

struct server {
    const struct px_config *cfg;
    struct loop loop;
    struct auth auth;
    struct ssl_ctx_st *ssl_ctx;
    struct conn_pool pool;
    struct chat *chat;
    struct router router;
    struct listener listener;
    struct api *api;
    struct event *sig_term, *sig_int, *sig_hup, *drain_timer;
    struct event *trim_timer; /* returns freed heap to the system (see server.c) */
    bool draining;
    int exit_code;
};

/* Build everything from cfg (listeners bound, store open). Returns 0 or -1 after logging why. */
int server_init(struct server *srv, const struct px_config *cfg);

/* What server_init would refuse besides the config text: auth keys, TLS files. 0 or -1 (logged). */
int server_check(const struct px_config *cfg);

/* Run until a signal drains the server; returns the process exit code. */
int server_run(struct server *srv);

/* Release everything server_init built (srv itself is the caller's). */
void server_release(struct server *srv);

/* Stop accepting, close every client with 1001, exit once drained or after drain_timeout. */
void server_shutdown(struct server *srv);

#endif
