/*
 * api.h -- the HTTP push/admin API on its own listener ([api] listen), served by libevent's evhttp:
 * push to a user/room/everyone, sessions (list, get, kick), message receipts, presence, history,
 * /healthz and /metrics. Requests under /api/ need Authorization: Bearer KEY.
 */
#ifndef WSP_API_H
#define WSP_API_H

struct server;
struct api;

/* Bind [api] listen and register the routes. Returns 0, or -1 after logging why. */
int api_start(struct server *srv, struct api **out);

/* Stop accepting API requests (graceful shutdown); requests in flight finish. */
void api_stop(struct api *api);

void api_free(struct api *api);

#endif
