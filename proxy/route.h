/*
 * route.h -- the main listener's router: what a parsed request on [server] listen becomes. /healthz,
 * the echo WebSocket, the chat WebSocket (identity first), static files and the demo token; 404
 * otherwise. It is the pool's on_request (net/conn.h) and the only place that knows all the paths.
 */
#ifndef WSP_ROUTE_H
#define WSP_ROUTE_H

#include <stdbool.h>

#include "proto/ws_handshake.h"

struct auth;
struct chat;
struct conn;
struct http_req;
struct loop;

struct router {
    struct loop *lp;
    const struct auth *auth;
    struct chat *chat;
    struct ws_handshake_policy policy; /* origins, subprotocols and deflate from the config */
    struct ws_deflate_policy deflate;  /* permessage-deflate ([server] compression*) */
    bool draining;              /* new upgrades are refused with 503 */
};

/* Fill r from the loop's config; the pointers are borrowed and must outlive r. */
void route_init(struct router *r, struct loop *lp, const struct auth *auth, struct chat *ch);

/* A conn_request_fn: arg is the router. Answers, upgrades or drops c. */
void route_request(void *arg, struct conn *c, const struct http_req *req);

#endif
