/*
 * api.h -- the HTTP push/admin API on its own listener ([api] listen): push to a user/room/everyone,
 * sessions (list, get, kick), message receipts, presence, history, /healthz and /metrics. Requests
 * under /api/ need Authorization: Bearer KEY. A small HTTP/1.1 server on bufferevents (not evhttp:
 * see api.c). Reference: docs/api.md.
 */
#ifndef WSP_API_H
#define WSP_API_H

struct api;
struct chat;
struct conn_pool;
struct loop;

/*
 * Bind [api] listen and serve the endpoints over lp's store, pool's counts and chat's live sessions
 * (all borrowed; they outlive the api). Returns 0, or -1 after logging why.
 */
int api_start(struct api **out, struct loop *lp, struct conn_pool *pool, struct chat *ch);

/*
 * Stop accepting (the listening socket is closed) and close idle keep-alive connections; requests
 * in flight get their answer with Connection: close. Idempotent; api may be NULL.
 */
void api_stop(struct api *api);

/*
 * Close every API connection and free. Call after the last loop_commit (answers waiting for a
 * commit hold their connection). api may be NULL.
 */
void api_free(struct api *api);

#endif
