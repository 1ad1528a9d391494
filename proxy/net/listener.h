/*
 * listener.h -- one listening socket for either listener (the main one, with optional TLS, and the
 * API's): binds, sets TCP_NODELAY on every accepted socket, wraps it in a bufferevent (TLS when a
 * context is given) and hands it up; backs off when accept fails (EMFILE would otherwise spin).
 */
#ifndef WSP_LISTENER_H
#define WSP_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bufferevent;
struct evconnlistener;
struct event;
struct loop;
struct sockaddr;
struct sockaddr_storage;
struct ssl_ctx_st;

/* A new connection: takes ownership of bev (BEV_OPT_CLOSE_ON_FREE). sa is the peer's address. */
typedef void listener_accept_fn(void *arg, struct bufferevent *bev, const struct sockaddr *sa);

struct listener_sniff;

struct listener {
    struct loop *lp;
    const char *name; /* "main", "api": logs */
    struct evconnlistener *evl;
    struct ssl_ctx_st *tls; /* a reference of its own (listener_set_tls); NULL for plain TCP */
    listener_accept_fn *on_accept;
    void *arg;
    struct event *resume_ev; /* re-enables accepting after a back-off */
    bool paused;             /* disabled by listener_pause: the back-off must not re-enable it */
    /* TLS: sockets whose first byte is awaited, to tell a TLS hello from plain HTTP */
    struct listener_sniff *sniffs;
    int64_t sniff_timeout_ms; /* how long a silent new socket is kept; set by the caller */
};

/*
 * Bind spec ("host:port", numeric host or localhost; port 0 picks one) and start accepting into fn.
 * Returns 0, or -1 with the reason in err (the caller names its config key).
 */
int listener_open(struct listener *l, struct loop *lp, const char *name, const char *spec,
                  struct ssl_ctx_st *tls, int backlog, listener_accept_fn *fn, void *arg, char *err,
                  size_t errcap);

/*
 * Use ctx for the connections accepted from now on (a renewed certificate); connections already
 * open keep theirs. The listener takes a reference: the caller frees its own.
 */
void listener_set_tls(struct listener *l, struct ssl_ctx_st *ctx);

/* Stop accepting, keeping the socket (new connections wait in the backlog). */
void listener_pause(struct listener *l);

/* Close the listening socket: new connections are refused. Idempotent. */
void listener_close(struct listener *l);

/* Close and free everything; l may be zeroed or half-opened. */
void listener_release(struct listener *l);

/* The bound port (for listen = ...:0), or -1. */
int listener_port(const struct listener *l);

/* "host:port" -> sockaddr (numeric hosts and localhost). Returns 0 or -1. */
int listener_parse_addr(const char *spec, struct sockaddr_storage *ss, int *len);

/* The address as text: "1.2.3.4", "::1", or with_port "1.2.3.4:5" / "[::1]:5"; v4-mapped as v4. */
void listener_addr_str(const struct sockaddr *sa, bool with_port, char *out, size_t cap);

/*
 * A TLS server context (TLS 1.2+) from a PEM certificate chain and key. NULL after logging the
 * reason, naming the [tls] key at fault.
 */
struct ssl_ctx_st *listener_tls_new(const char *cert, const char *key);

#endif
