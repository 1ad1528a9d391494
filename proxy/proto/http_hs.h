/*
 * http_hs.h -- sans-I/O HTTP/1.1 request-head parser and RFC 6455 §4.2 upgrade checks/answers.
 * Bytes in, structs and response bytes out; no sockets, no libevent. Parsed strings point into the
 * caller's buffer and live as long as it does.
 */
#ifndef WSP_HTTP_HS_H
#define WSP_HTTP_HS_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_MAX_HEADERS 64

enum http_parse_result {
    HTTP_PARSE_BAD = -1,      /* malformed request head: answer 400 */
    HTTP_PARSE_PARTIAL = -2,  /* no complete head yet: read more */
    HTTP_PARSE_TOO_LARGE = -3 /* no complete head within max_len bytes, or too many headers: answer 431 */
};

struct http_header {
    const char *name;
    size_t name_len;
    const char *value; /* leading/trailing spaces and tabs trimmed */
    size_t value_len;
};

struct http_req {
    const char *method;
    size_t method_len;
    const char *target; /* request-target as sent: path and optional ?query */
    size_t target_len;
    const char *path; /* target up to '?' */
    size_t path_len;
    const char *query; /* after '?', without it; NULL when absent */
    size_t query_len;
    int version_major;
    int version_minor;
    struct http_header headers[HTTP_MAX_HEADERS];
    size_t num_headers;
};

/*
 * Parse a request head in buf[0..len). Returns the head's length (> 0, including the final CRLFCRLF),
 * or an enum http_parse_result. Reports TOO_LARGE as soon as len >= max_len without a complete head, so
 * the caller can answer 431 without buffering more. Stateless: call again with the whole buffer when more
 * bytes arrive (the head is small and bounded by max_len).
 * Only buf[0..max_len) is looked at, so the answer does not depend on how the bytes were split into
 * reads; a malformation inside those bytes is BAD even when len >= max_len.
 * Strict on purpose (a proxy in front must not read the head differently): lines end in CRLF only
 * (bare LF or CR is BAD), the target is origin-form ("/...", visible ASCII), no obs-fold, no
 * whitespace before a header's colon, no control bytes but HT in values, version is DIGIT "." DIGIT.
 * The 65th header is TOO_LARGE. req is filled only as far as needed; trust it only when the return
 * is > 0. Each call re-parses from the start (O(len)); a caller fed many tiny reads may skip calls
 * until "\r\n\r\n" has arrived or len >= max_len (a BAD head is then only reported later).
 */
int http_req_parse(struct http_req *req, const char *buf, size_t len, size_t max_len);

/* First header named name (case-insensitive), or NULL. */
const struct http_header *http_req_header(const struct http_req *req, const char *name);

/*
 * Whether a comma-separated header value contains token (case-insensitive, spaces ignored): a whole
 * element must match, "keep-alive, Upgrade" has "upgrade", "upgrader" does not.
 */
bool http_token_list_has(const char *val, size_t len, const char *token);

/*
 * Copy the URL-decoded value of query parameter name into out (NUL-terminated). Returns the decoded
 * length, -1 when absent, -2 when it does not fit in cap or is badly %-encoded.
 * form-urlencoded: "+" is a space, %XX a byte; keys are decoded before comparing, the first match wins,
 * a key without "=" has an empty value. A value decoding to a NUL byte is -2; any other byte may come
 * out, so validate the result. On -1/-2, out is "" (if cap > 0). query may be NULL.
 */
int http_query_param(const char *query, size_t query_len, const char *name, char *out, size_t cap);

/*
 * Value of cookie name from a Cookie header value; same returns as http_query_param (no decoding).
 * RFC 6265 "a=1; b=2": names are case-sensitive, one pair of surrounding double quotes is removed,
 * a control byte in the value is -2.
 */
int http_cookie_value(const char *cookie, size_t len, const char *name, char *out, size_t cap);

/* What the server accepts, taken from config. */
struct ws_hs_policy {
    const char *const *origins; /* "*" allows any; empty list = Origin header not checked */
    size_t num_origins;
    const char *const *subprotocols; /* server preference order */
    size_t num_subprotocols;
};

struct ws_hs_result {
    int status;          /* 101 on success, else 400, 403, 405, 426 (500 if SHA-1 is unavailable) */
    const char *message; /* short human text for the error body and logs */
    char accept[29];     /* Sec-WebSocket-Accept when status == 101, NUL-terminated */
    const char *subprotocol; /* chosen subprotocol (points into policy) or NULL */
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
 * case-sensitively (browsers check the echo exactly); NULL if none. On 405/426 the caller adds
 * "Allow: GET" / "Sec-WebSocket-Version: 13" to the error answer.
 */
int ws_hs_check(const struct http_req *req, const struct ws_hs_policy *pol, struct ws_hs_result *result);

/*
 * Sec-WebSocket-Accept for a client key: base64(SHA-1(key + GUID)); out gets 28 chars + NUL, or ""
 * if OpenSSL cannot compute SHA-1 (e.g. a provider that forbids it).
 */
void ws_accept_key(const char *key, size_t key_len, char out[29]);

/*
 * Response builders write into out (cap bytes) and return the length, or 0 if it did not fit.
 * out is NUL-terminated too, so the length is at most cap - 1.
 * http_response_101: the switching-protocols answer for a successful check (0 unless status is 101).
 * http_response_simple: status line, Content-Type text/plain, Content-Length, Connection: close,
 *   optional extra header lines (each ending in CRLF, may be NULL) and the body text + "\n"
 *   (NULL body = ""); 0 for a status outside 100..999.
 */
size_t http_response_101(char *out, size_t cap, const struct ws_hs_result *result);
size_t http_response_simple(char *out, size_t cap, int status, const char *extra_headers, const char *body);

/* Reason phrase for a status code ("Bad Request"); "Unknown" for codes it does not know. */
const char *http_status_text(int status);

#endif
