/*
 * backend.h -- outbound delivery of a signed JSON body to the app backend, on bufferevents: an
 * HTTP/1.1 POST (one connection per request, Connection: close) or a FastCGI RESPONDER request
 * straight to php-fpm (kept connections, FCGI_KEEP_CONN). A bounded pool of requests in flight; no
 * call waits on a socket. It knows nothing of events or the outbox (proxy/chat/events.c does).
 */
#ifndef WSP_BACKEND_H
#define WSP_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct backend;

enum backend_kind { BACKEND_HTTP, BACKEND_FCGI };

struct backend_target {
    enum backend_kind kind;
    char host[256];      /* TCP: a numeric address or a name resolved once, at backend_new */
    int port;
    char unix_path[108]; /* FastCGI over a unix socket; "" for TCP */
    char path[1024];     /* HTTP: the request path; FastCGI: SCRIPT_FILENAME */
};

/*
 * Parse a target: http://HOST[:PORT]/PATH (port 80 by default), fastcgi://HOST:PORT/SCRIPT (the
 * script an absolute path on the php-fpm host), fastcgi:unix:/SOCKET:/SCRIPT. Returns 0, or -1 with
 * a reason in err.
 */
int backend_parse_target(const char *s, struct backend_target *t, char *err, size_t errlen);

/*
 * Called once per request: ok when the backend answered 2xx (HTTP status, or the CGI Status of
 * php-fpm's STDOUT with END_REQUEST complete); else error says why ("HTTP 500", "timeout",
 * "connect: Connection refused", ...). Runs from a libevent callback, never from backend_post.
 */
typedef void backend_done_fn(void *arg, bool ok, int status, const char *error);

/*
 * A delivery client for t with at most pool requests in flight, each bounded by timeout_ms. Resolves
 * a host name here (startup). NULL with a reason in err.
 */
struct backend *backend_new(struct event_base *base, const struct backend_target *t, size_t pool,
                            int64_t timeout_ms, char *err, size_t errlen);

/* Drop every request in flight (done runs for each, ok false, "shutdown") and free. NULL: no-op. */
void backend_free(struct backend *b);

/* Requests that may start now (pool minus those in flight). */
size_t backend_free_slots(const struct backend *b);

/*
 * Start a POST of body (len bytes of JSON, copied) with the X-Wsproxy-Timestamp and
 * X-Wsproxy-Signature headers (HTTP_X_WSPROXY_* params over FastCGI). Returns 0 (done will run), or
 * -1 when no slot is free or memory ran out (done will not run).
 */
int backend_post(struct backend *b, const char *body, size_t len, const char *timestamp,
                 const char *signature, backend_done_fn *done, void *arg);

#endif
