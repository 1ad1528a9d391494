/*
 * api_internal.h -- shared by api.c (HTTP/1.1 framing, listener, answers) and api_routes.c (the
 * endpoints). Not for use outside the API module.
 */
#ifndef WSP_API_INTERNAL_H
#define WSP_API_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/http1.h"
#include "base/metrics.h"
#include "base/sbuf.h"
#include "net/listener.h"

struct bufferevent;
struct event;
struct registry_counter;
struct chat;
struct conn_pool;
struct loop;

#define API_HEAD_MAX         16384 /* request line + headers */
#define API_IDLE_TIMEOUT_S   30    /* read (head, body, keep-alive idle) and write timeout */
#define API_LINGER_TIMEOUT_S 2     /* after a final answer: how long unread input is drained */
#define API_LINGER_MAX       (64u << 20) /* and how much of it, before the socket is just closed */
#define SESSIONS_DEFAULT     50
#define SESSIONS_MAX         1000
#define KEY_DIGEST_LEN       32

enum ac_state {
    AC_HEAD,    /* reading a request head */
    AC_BODY,    /* reading body_len bytes of body */
    AC_BUSY,    /* a handler runs or its answer waits for the group commit */
    AC_WRITING, /* the answer is being written */
    AC_LINGER,  /* answered with Connection: close; draining input until EOF or a timeout */
};

struct api_conn {
    struct api *api;
    struct bufferevent *bev;
    struct api_conn *prev, *next;
    enum ac_state state;
    char peer[64];   /* "host:port", for logs */
    char ip[64];     /* host only: the per-peer connection count's key */
    struct event *req_timer; /* [api] request_timeout, from a request's first byte to its end */
    char *head; /* the current request head (owned); req points into it */
    struct http_req req;
    char *body; /* owned, NUL-terminated */
    size_t body_len;
    bool keep_alive;
    bool head_only; /* HEAD: the answer has headers only */
    bool dead;      /* the peer went away while an answer waited for the commit (or the fiber) */
    bool dispatching;   /* inside api_dispatch (which may wait on the store fiber) */
    bool after_pending; /* an answer waits for the commit (after_commit_cb) */
    size_t lingered;
    int pending_status; /* answer prepared before a commit */
    struct sbuf pending;
};

struct api {
    struct loop *lp;
    struct conn_pool *pool; /* the main listener's connections: gauges for /metrics */
    struct chat *chat;
    struct listener listener;
    struct api_conn *conns;
    size_t num_conns;
    struct registry_counter *ip_counts; /* peer address -> open API connections */
    bool stopping;
    unsigned char (*keys)[KEY_DIGEST_LEN]; /* SHA-256 of each [api] key */
    size_t num_keys;
    int64_t started_s; /* wall clock at api_start: /metrics' start time */
};

/* Write one complete answer (every answer goes through here) and log/count it. */
void api_reply(struct api_conn *ac, int status, const char *ctype, const char *extra,
               const char *body, size_t len);
void api_reply_json(struct api_conn *ac, int status, struct sbuf *b);
void api_reply_error_h(struct api_conn *ac, int status, const char *code, const char *message,
                       const char *extra);
void api_reply_error(struct api_conn *ac, int status, const char *code, const char *message);
void api_reply_store_error(struct api_conn *ac, const char *what);
/* Answer with ac->pending once the group commit made the writes behind it durable. */
void api_reply_after_commit(struct api_conn *ac, int status);
void api_log_request(struct api_conn *ac, int status, const char *code);

/* Strict decimal in [0, 2^63): 0, or -1. */
int api_parse_u63(const char *s, size_t len, int64_t *out);
bool api_method_is(const struct http_req *r, const char *m);
bool api_path_is(const struct http_req *r, const char *p);
/* "/prefix/ID": 1 with *id, 0 when the path is not under prefix, -1 when ID is not an id. */
int api_path_id(const struct http_req *r, const char *prefix, int64_t *id);
bool api_is_json_type(const char *v, size_t len);

/* Route a complete request (api_routes.c). */
void api_dispatch(struct api_conn *ac);

/* Query parameter helpers (api_routes.c); each answers the 400 itself when it fails. */
/* A name (user or room): 1 ok, 0 absent, -1 invalid. */
int api_query_name(struct api_conn *ac, const char *key, char *out, size_t cap);
/* An integer in [lo, hi]: 1 ok, 0 absent (out = def), -1 invalid. */
int api_query_int(struct api_conn *ac, const char *key, int64_t lo, int64_t hi, int64_t def,
                  int64_t *out);
/* Only the comma-separated allowed parameters: false after a 400 naming an unknown one. */
bool api_query_known(struct api_conn *ac, const char *allowed);
/* 405 with an Allow header. */
void api_method_not_allowed(struct api_conn *ac, const char *allow);

/* Rooms, members, conversations, message deletion (api_rooms.c): true when the path was one of its. */
bool api_rooms_dispatch(struct api_conn *ac);
/* api_batch.c: a push whose "to" is a list (one message per user, cid "CID/USER"); the batch. */
struct json_t;
void api_push_to_list(struct api_conn *ac, struct json_t *to, const char *from, const char *text,
                      const char *cid);
void api_route_push_batch(struct api_conn *ac);

/* DELETE /api/v1/messages/ID: a tombstone, withdrawn from live holders; 204 after the commit. */
void api_route_message_delete(struct api_conn *ac, int64_t id);

#endif
