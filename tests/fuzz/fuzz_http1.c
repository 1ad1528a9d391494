/*
 * fuzz_http1.c -- libFuzzer driver: request-head parser (http1), upgrade checks and the 101 builder
 * (ws_handshake). Aborts when a result breaks the contract in their headers (lengths, pointers).
 */
/* fuzz-deps: proxy/proto/http1.c proxy/proto/ws_handshake.c proxy/proto/ws_deflate.c -lz */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/ws_handshake.h"

#define INSIDE(p, n, lo, hi) ((p) >= (lo) && (p) + (n) <= (hi))
#define CHECK(c)             ((c) ? (void)0 : abort())

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const origins[] = {"https://app.example.com", "http://localhost:8080"};
    static const char *const protos[] = {"v2.chat", "v1.chat"};
    static const struct ws_deflate_policy deflate = {.enabled = true,
                                                     .server_max_window_bits = 12,
                                                     .client_max_window_bits = 12,
                                                     .client_no_context_takeover = true};
    static const struct ws_handshake_policy pol = {origins, 2, protos, 2, &deflate};
    const char *buf = (const char *)data, *end;
    struct http_req req;
    struct ws_handshake_result res;
    const struct http_header *h;
    char out[1024];
    size_t i, n;
    int rc = http_req_parse(&req, buf, size, 8192);
    int pre = size > 0 ? http_req_parse(&req, buf, size - 1, 8192) : HTTP_PARSE_PARTIAL;

    /* one byte less: an answer once given never changes, a head ending earlier is seen already */
    CHECK(pre == HTTP_PARSE_PARTIAL || pre == rc);
    CHECK(rc <= 0 || rc == (int)size || pre == rc);
    rc = http_req_parse(&req, buf, size, 8192);
    if (rc <= 0) {
        CHECK(rc == HTTP_PARSE_BAD || rc == HTTP_PARSE_PARTIAL || rc == HTTP_PARSE_TOO_LARGE);
        CHECK(rc != HTTP_PARSE_PARTIAL || size < 8192);
        return 0;
    }
    end = buf + rc;
    CHECK((size_t)rc <= size && rc >= 4 && memcmp(end - 4, "\r\n\r\n", 4) == 0);
    CHECK(INSIDE(req.method, req.method_len, buf, end) && req.method_len > 0);
    CHECK(INSIDE(req.target, req.target_len, buf, end) && req.target[0] == '/');
    CHECK(req.path == req.target && req.path_len <= req.target_len);
    CHECK(req.query == NULL ||
          INSIDE(req.query, req.query_len, req.target, req.target + req.target_len));
    CHECK(req.num_headers <= HTTP_MAX_HEADERS);
    for (i = 0; i < req.num_headers; i++) {
        CHECK(INSIDE(req.headers[i].name, req.headers[i].name_len, buf, end));
        CHECK(INSIDE(req.headers[i].value, req.headers[i].value_len, buf, end));
        CHECK(memchr(req.headers[i].value, '\r', req.headers[i].value_len) == NULL);
    }

    rc = ws_handshake_check(&req, &pol, &res);
    CHECK(rc == res.status && res.message != NULL);
    if (rc == 101) {
        CHECK(strlen(res.accept) == 28);
        n = ws_handshake_101(out, sizeof(out), &res);
        CHECK(n > 0 && n < sizeof(out) && strlen(out) == n);
        /* the extension is answered exactly when an offer was accepted */
        CHECK((strstr(out, "Sec-WebSocket-Extensions: permessage-deflate; ") != NULL) == res.deflate);
    } else {
        CHECK(rc == 400 || rc == 403 || rc == 405 || rc == 426);
        CHECK(res.message != NULL && ws_handshake_101(out, sizeof(out), &res) == 0);
    }

    rc = http_query_param(req.query, req.query_len, "token", out, 64);
    CHECK(rc >= -2 && rc < 64 && (rc < 0 ? out[0] == '\0' : strlen(out) == (size_t)rc));
    if ((h = http_req_header(&req, "Cookie")) != NULL) {
        rc = http_cookie_value(h->value, h->value_len, "sid", out, 64);
        CHECK(rc >= -2 && rc < 64 && (rc < 0 ? out[0] == '\0' : strlen(out) == (size_t)rc));
    }
    return 0;
}
