/*
 * web.h -- plain HTTP on the main listener besides the WebSocket paths: static files from
 * [server] static_dir (the chat page) and, when [demo] enabled, GET /demo/token.
 */
#ifndef WSP_WEB_H
#define WSP_WEB_H

#include <stdbool.h>
#include <stddef.h>

struct auth;
struct conn;
struct http_req;

/*
 * Answer req if it is a static file or demo request (tokens issued with auth); returns true if it
 * did (404 included for /demo/ when the demo is off), false to let the caller answer 404.
 */
bool web_handle(const struct auth *auth, struct conn *c, const struct http_req *req);

/* Map a URL path to a file path under root, refusing traversal: decodes %XX, rejects "..", NUL,
 * backslashes and hidden files; "/" and ".../" get index.html. Returns 0 or -1. Pure, for tests. */
int web_resolve_path(const char *root, const char *url_path, size_t url_len, char *out, size_t cap);

/* Content-Type for a file name by its extension. */
const char *web_content_type(const char *path);

#endif
