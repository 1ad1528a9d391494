/*
 * server.h -- the one server context: config, event loop, listeners, store, registry, counters.
 * Everything long-lived hangs off struct server; there is no other global state but the log level.
 */
#ifndef WSP_SERVER_H
#define WSP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/auth.h"
#include "base/config.h"
#include "proto/http_hs.h"
#include "base/metrics.h"

struct event_base;
struct event;
struct evconnlistener;
struct ssl_ctx_st;
struct store;
struct registry_map;
struct registry_counter;
struct conn;
struct api;
struct sockaddr_storage;

struct after_commit {
    void (*fn)(void *arg, bool ok);
    void *arg;
};

struct server {
    const struct px_config *cfg;
    struct event_base *base;
    struct evconnlistener *listener;
    struct ssl_ctx_st *ssl_ctx;
    struct store *store;
    struct auth auth;
    struct registry_map *users;   /* user -> live chat connections */
    struct registry_map *rooms;   /* room -> live chat connections of its members */
    struct registry_counter *ip_counts; /* client address -> open WebSockets */
    struct api *api;
    struct ws_hs_policy policy;

    struct conn *conns;      /* every connection, newest first */
    size_t num_conns;        /* TCP connections (any state) */
    size_t num_ws;           /* open WebSocket connections counted against max_connections */
    uint64_t next_conn_id;
    uint64_t presence_seq;   /* numbers presence events, to tell each connection once */

    /* group commit: one store transaction per loop iteration */
    bool tx_open;
    uint64_t tx_writes;
    struct event *commit_ev;
    struct conn *dirty;      /* conns with output waiting for the commit */
    struct after_commit *after; /* callbacks waiting for the commit (API replies) */
    size_t num_after, cap_after;

    struct event *sig_term, *sig_int, *drain_timer;
    bool draining;
    int exit_code;

    struct metrics metrics;
};

/* Build everything from cfg (listeners bound, store open). Returns 0 or -1 after logging why. */
int server_init(struct server *srv, const struct px_config *cfg);

/* What server_init would refuse besides the config text: auth keys, TLS files. 0 or -1 (logged). */
int server_check(const struct px_config *cfg);

/* Run until a signal drains the server; returns the process exit code. */
int server_run(struct server *srv);

void server_free(struct server *srv);

/* Milliseconds since the epoch, from the loop's cached clock (cheap; fine for timestamps and timers). */
int64_t server_now_ms(struct server *srv);

/* Called by conn.c when a connection is gone; lets a draining server exit early. */
void server_conn_gone(struct server *srv);

/* Stop accepting, close every client with 1001, exit once drained or after drain_timeout. */
void server_shutdown(struct server *srv);

/*
 * Group commit. Call server_tx_begin before a store write: it opens the loop iteration's transaction
 * if none is open and schedules its commit after all pending I/O callbacks. server_after_commit runs
 * fn once that commit is done (ok = durable) -- at once when no transaction is open.
 */
void server_tx_begin(struct server *srv);
void server_after_commit(struct server *srv, void (*fn)(void *arg, bool ok), void *arg);
void server_commit(struct server *srv);

/* "host:port" -> sockaddr (numeric hosts and localhost). Returns 0 or -1. */
int server_listen_addr(const char *spec, struct sockaddr_storage *ss, int *len);
/* Port a listening socket is bound to (for listen = ...:0). */
int server_bound_port(int fd);

#endif
