/*
 * ws_handshake.h -- RFC 6455 §4.2 server handshake on a request parsed by http1.h: the checks, the
 * Sec-WebSocket-Accept key, the subprotocol choice and the 101 answer. No sockets, no libevent.
 */
#ifndef WSP_WS_HANDSHAKE_H
#define WSP_WS_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>

#include "proto/http1.h"
#include "proto/ws_deflate.h"

/* What the server accepts, taken from config. */
struct ws_handshake_policy {
    const char *const *origins; /* "*" allows any; empty list = Origin header not checked */
    size_t num_origins;
    const char *const *subprotocols; /* server preference order */
    size_t num_subprotocols;
    const struct ws_deflate_policy *deflate; /* permessage-deflate; NULL or disabled: never offered */
};

struct ws_handshake_result {
    int status;          /* 101 on success, else 400, 403, 405, 426 (500 if SHA-1 is unavailable) */
    const char *message; /* short human text for the error body and logs */
    char accept[29];     /* Sec-WebSocket-Accept when status == 101, NUL-terminated */
    const char *subprotocol; /* chosen subprotocol (points into policy) or NULL */
    bool deflate;            /* a permessage-deflate offer was accepted: the 101 carries it */
    struct ws_deflate_params deflate_params; /* what was agreed, when deflate */
};

/*
 * RFC 6455 §4.2.1 checks of an upgrade request already routed to a WebSocket path.
 * Order: method (405), version >= 1.1 (400), no Upgrade: websocket at all (426, a plain GET),
 * Host (400), Connection: upgrade (400), Sec-WebSocket-Version 13 (426), Sec-WebSocket-Key (400),
 * Origin (403). Returns result->status.
 * Details: version means 1.x with x >= 1 (2.x in an HTTP/1 line is 400); a repeated Host,
 * Sec-WebSocket-Version or Sec-WebSocket-Key is 400; the key must be 22 base64 chars + "==".
 * Origin is checked only when the list is non-empty and has no "*": a missing Origin passes (not a
 * browser; the attacks the list stops need one, and browsers always send it), a present one must match
 * an entry exactly but for ASCII case, and two Origin headers are 403.
 * Subprotocol: the first entry of pol->subprotocols that any Sec-WebSocket-Protocol header lists, compared
 * case-sensitively (browsers check the echo exactly); NULL if none.
 * Extensions: every Sec-WebSocket-Extensions line, in order, goes to ws_deflate_negotiate under
 * pol->deflate until one yields an accepted offer (lines are list elements, so this is the first
 * acceptable offer of the joined value); a malformed or unacceptable offer is declined, never an
 * error. The caller may still clear result->deflate (memory budget) before ws_handshake_101.
 * On 405/426 the caller adds
 * "Allow: GET" / "Sec-WebSocket-Version: 13" to the error answer.
 */
int ws_handshake_check(const struct http_req *req, const struct ws_handshake_policy *pol,
                       struct ws_handshake_result *result);

/*
 * Sec-WebSocket-Accept for a client key: base64(SHA-1(key + GUID)); out gets 28 chars + NUL, or ""
 * if OpenSSL cannot compute SHA-1 (e.g. a provider that forbids it).
 */
void ws_handshake_accept_key(const char *key, size_t key_len, char out[29]);

/*
 * The switching-protocols answer for a successful check, written into out (cap bytes, NUL-terminated),
 * with Sec-WebSocket-Extensions (ws_deflate_response) when result->deflate.
 * Returns its length, or 0 if it did not fit or result->status is not 101.
 */
size_t ws_handshake_101(char *out, size_t cap, const struct ws_handshake_result *result);

#endif
