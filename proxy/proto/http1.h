/*
 * http1.h -- sans-I/O HTTP/1.1 request-head parser and header/query/cookie helpers. Bytes in, structs
 * out; no sockets, no libevent, no allocation. Parsed strings point into the caller's buffer and live
 * as long as it does.
 */
#ifndef WSP_HTTP1_H
#define WSP_HTTP1_H

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

/* How many headers are named name (ASCII case-insensitive); *first gets the first one (or NULL). */
size_t http_req_header_count(const struct http_req *req, const char *name,
                             const struct http_header **first);

/* Whether any header named name lists token (comma-separated); nocase compares it ignoring case. */
bool http_req_has_token(const struct http_req *req, const char *name, const char *token, bool nocase);

/* Whether the n bytes at s equal the string z, ignoring ASCII case (locale-free). */
bool http_ieq(const char *s, size_t n, const char *z);

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

/* Reason phrase for a status code ("Bad Request"); "Unknown" for codes it does not know. */
const char *http_status_text(int status);

/*
 * The status of an HTTP/1.x response from its status line ("HTTP/1.1 204 No Content\r\n"), for the
 * events client. Returns the line's length with its CRLF (*status set), 0 while no LF is in buf[0..len)
 * (and len < 1024), or -1 for anything else (not HTTP/1.x, a status outside 100-599, too long).
 */
int http_resp_status(const char *buf, size_t len, int *status);

#endif
