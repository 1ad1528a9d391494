/*
 * test_http1.c -- unit tests for the HTTP/1.1 request-head parser (http1) and the RFC 6455 handshake
 * checks. Inputs are copied into exact-size heap buffers so ASan catches any read past the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/ws_handshake.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_HEAD   8192

#define KEY       "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT    "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define H_HOST    "Host: example.com\r\n"
#define H_UPG     "Upgrade: websocket\r\n"
#define H_CONN    "Connection: Upgrade\r\n"
#define H_VER     "Sec-WebSocket-Version: 13\r\n"
#define H_KEY     "Sec-WebSocket-Key: " KEY "\r\n"
#define GOOD_HDRS H_HOST H_UPG H_CONN H_VER H_KEY
#define GOOD_REQ  "GET /ws HTTP/1.1\r\n" GOOD_HDRS "\r\n"

/* A copy of s[0..n) in a buffer of exactly n bytes (never NULL). */
static char *dup_exact(const char *s, size_t n)
{
    char *p = malloc(n > 0 ? n : 1);

    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

static int parse_n(const char *s, size_t n, size_t max_len)
{
    struct http_req req;
    char *buf = dup_exact(s, n);
    int rc = http_req_parse(&req, buf, n, max_len);

    free(buf);
    return rc;
}

/* ---- Parser ---- */

static void test_http1_parse_fields(void **state)
{
    static const char head[] = "GET /chat/room?id=7&x HTTP/1.1\r\n"
                               "Host:   example.com  \r\n"
                               "X-Empty:\r\n"
                               "X-Tabs:\t a \t b\t\r\n"
                               "X-Obs: caf\xc3\xa9\r\n"
                               "\r\n";
    struct http_req req;
    size_t n = sizeof(head) - 1;
    char *buf = dup_exact(head, n);

    (void)state;
    assert_int_equal(http_req_parse(&req, buf, n, MAX_HEAD), (int)n);
    assert_int_equal(req.method_len, 3);
    assert_memory_equal(req.method, "GET", 3);
    assert_int_equal(req.target_len, strlen("/chat/room?id=7&x"));
    assert_memory_equal(req.target, "/chat/room?id=7&x", req.target_len);
    assert_int_equal(req.path_len, strlen("/chat/room"));
    assert_memory_equal(req.path, "/chat/room", req.path_len);
    assert_ptr_equal(req.query, req.target + 11);
    assert_int_equal(req.query_len, strlen("id=7&x"));
    assert_int_equal(req.version_major, 1);
    assert_int_equal(req.version_minor, 1);
    assert_int_equal(req.num_headers, 4);
    assert_int_equal(req.headers[0].name_len, 4);
    assert_memory_equal(req.headers[0].name, "Host", 4);
    assert_int_equal(req.headers[0].value_len, strlen("example.com"));
    assert_memory_equal(req.headers[0].value, "example.com", req.headers[0].value_len);
    assert_int_equal(req.headers[1].value_len, 0);
    assert_int_equal(req.headers[2].value_len, strlen("a \t b"));
    assert_memory_equal(req.headers[2].value, "a \t b", req.headers[2].value_len);
    assert_int_equal(req.headers[3].value_len, 5);
    free(buf);
}

static void test_http1_parse_path_query(void **state)
{
    static const struct {
        const char *target;
        const char *path;
        const char *query; /* NULL = absent */
    } cases[] = {
        {"/", "/", NULL},
        {"/ws", "/ws", NULL},
        {"/ws?", "/ws", ""},
        {"/ws?a=1", "/ws", "a=1"},
        {"/ws?a=1?b", "/ws", "a=1?b"},
        {"/?token=x%20y", "/", "token=x%20y"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < N_ELEMS(cases); i++) {
        char head[256];
        struct http_req req;
        int n = snprintf(head, sizeof(head), "GET %s HTTP/1.1\r\n\r\n", cases[i].target);

        assert_int_equal(http_req_parse(&req, head, (size_t)n, MAX_HEAD), n);
        assert_int_equal(req.path_len, strlen(cases[i].path));
        assert_memory_equal(req.path, cases[i].path, req.path_len);
        if (cases[i].query == NULL) {
            assert_null(req.query);
            assert_int_equal(req.query_len, 0);
        } else {
            assert_non_null(req.query);
            assert_int_equal(req.query_len, strlen(cases[i].query));
            assert_memory_equal(req.query, cases[i].query, req.query_len);
        }
    }
}

static void test_http1_parse_versions(void **state)
{
    static const struct {
        const char *line;
        int major, minor;
    } cases[] = {
        {"GET / HTTP/1.1\r\n\r\n", 1, 1},
        {"GET / HTTP/1.0\r\n\r\n", 1, 0},
        {"GET / HTTP/2.0\r\n\r\n", 2, 0},
        {"PATCH / HTTP/1.9\r\n\r\n", 1, 9},
    };
    size_t i;

    (void)state;
    for (i = 0; i < N_ELEMS(cases); i++) {
        struct http_req req;
        size_t n = strlen(cases[i].line);

        assert_int_equal(http_req_parse(&req, cases[i].line, n, MAX_HEAD), (int)n);
        assert_int_equal(req.version_major, cases[i].major);
        assert_int_equal(req.version_minor, cases[i].minor);
    }
}

/* Every prefix is PARTIAL, the whole head gives its length, bytes after it are left alone. */
static void test_http1_parse_bytewise(void **state)
{
    static const struct {
        const char *text;
        size_t head_len;
    } cases[] = {
        {"GET / HTTP/1.1\r\n\r\n", 18},
        {GOOD_REQ, sizeof(GOOD_REQ) - 1},
        {GOOD_REQ "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", sizeof(GOOD_REQ) - 1},
        {"GET /a?b HTTP/1.1\r\nX:\r\nY: \t\r\n\r\nGET / HTTP/1.1\r\n\r\n", 31},
    };
    size_t i, n;

    (void)state;
    for (i = 0; i < N_ELEMS(cases); i++) {
        size_t len = strlen(cases[i].text);
        struct http_req whole, part;

        assert_int_equal(http_req_parse(&whole, cases[i].text, len, MAX_HEAD),
                         (int)cases[i].head_len);
        for (n = 0; n <= len; n++) {
            char *buf = dup_exact(cases[i].text, n);
            int rc = http_req_parse(&part, buf, n, MAX_HEAD);

            if (n < cases[i].head_len) {
                assert_int_equal(rc, HTTP_PARSE_PARTIAL);
            } else {
                assert_int_equal(rc, (int)cases[i].head_len);
                assert_int_equal(part.num_headers, whole.num_headers);
                assert_int_equal(part.target_len, whole.target_len);
                assert_int_equal(part.target - buf, whole.target - cases[i].text);
            }
            free(buf);
        }
    }
}

static void test_http1_parse_malformed(void **state)
{
    static const struct {
        const char *text;
        size_t len; /* 0 = strlen */
    } cases[] = {
        {"GET  / HTTP/1.1\r\n\r\n", 0},
        {"GET / HTTP/1.1 \r\n\r\n", 0},
        {"GET / HTTP/1.1 x\r\n\r\n", 0},
        {"GET /\r\n\r\n", 0},
        {"GET\r\n\r\n", 0},
        {" GET / HTTP/1.1\r\n\r\n", 0},
        {"\r\nGET / HTTP/1.1\r\n\r\n", 0},
        {"G(T / HTTP/1.1\r\n\r\n", 0},
        {"GET http://example.com/ HTTP/1.1\r\n\r\n", 0},
        {"OPTIONS * HTTP/1.1\r\n\r\n", 0},
        {"GET example.com:443 HTTP/1.1\r\n\r\n", 0},
        {"GET /a\x01z HTTP/1.1\r\n\r\n", 0},
        {"GET /a\x7fz HTTP/1.1\r\n\r\n", 0},
        {"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", 0},
        {"GET /a\tz HTTP/1.1\r\n\r\n", 0},
        {"GET / http/1.1\r\n\r\n", 0},
        {"GET / HTTP/1.x\r\n\r\n", 0},
        {"GET / HTTP/11\r\n\r\n", 0},
        {"GET / HTTP/1.10\r\n\r\n", 0},
        {"GET / HTTP/1\r\n\r\n", 0},
        {"GET / HTTP/1.1\n\r\n", 0},
        {"GET / HTTP/1.1\rX: y\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nHost: a\n\r\n", 0},
        {"GET / HTTP/1.1\r\nHost: a\r\n\n", 0},
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", 0},
        {"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\n\tX: a\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\n X: a\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\n: a\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nX(y): a\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nX: a\x01z\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nX: a\x7fz\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nX: a\x01\n\r\n", 0},
        {"GET / HTTP/1.1x\n\r\n", 0},
        {"GET / HTTP/1.1\r\nX: a\0z\r\n\r\n", 26},
        {"GET\0/ HTTP/1.1\r\n\r\n", 18},
        {"G\0T / HTTP/1.1\r\n\r\n", 18},
        {"GET / HTTP/1.1\r\nX\0: a\r\n\r\n", 25},
    };
    size_t i, n;

    (void)state;
    for (i = 0; i < N_ELEMS(cases); i++) {
        size_t len = cases[i].len != 0 ? cases[i].len : strlen(cases[i].text);
        bool bad = false;

        /* growing prefixes: PARTIAL until the offending byte, BAD from then on */
        for (n = 0; n <= len; n++) {
            int rc = parse_n(cases[i].text, n, MAX_HEAD);

            if (bad) {
                assert_int_equal(rc, HTTP_PARSE_BAD);
            } else if (rc != HTTP_PARSE_PARTIAL) {
                assert_int_equal(rc, HTTP_PARSE_BAD);
                bad = true;
            }
        }
        if (!bad)
            fail_msg("case %zu was never BAD", i);
    }
}

static void test_http1_parse_too_large(void **state)
{
    static const char head[] = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    size_t len = sizeof(head) - 1, n;

    (void)state;
    /* a complete head of exactly max_len bytes fits, one byte more does not */
    assert_int_equal(parse_n(head, len, len), (int)len);
    assert_int_equal(parse_n(head, len, len - 1), HTTP_PARSE_TOO_LARGE);
    assert_int_equal(parse_n(head, len, 10), HTTP_PARSE_TOO_LARGE);
    assert_int_equal(parse_n(head, len, 0), HTTP_PARSE_TOO_LARGE);
    /* reported as soon as max_len bytes are in, without waiting for the rest */
    for (n = 0; n <= len; n++) {
        int rc = parse_n(head, n, 20);

        assert_int_equal(rc, n < 20 ? HTTP_PARSE_PARTIAL : HTTP_PARSE_TOO_LARGE);
    }
    /* a malformation inside the first max_len bytes stays BAD however much follows */
    assert_int_equal(parse_n("GET  / HTTP/1.1\r\n\r\n", 19, 8), HTTP_PARSE_BAD);
    /* ...but one after them is never looked at */
    assert_int_equal(parse_n("GET / HTTP/1.1\r\nX : y\r\n\r\n", 25, 17), HTTP_PARSE_TOO_LARGE);
}

static void test_http1_parse_header_count(void **state)
{
    char head[4096];
    size_t len, i, n, cut;
    struct http_req req;

    (void)state;
    len = (size_t)snprintf(head, sizeof(head), "GET / HTTP/1.1\r\n");
    for (i = 0; i < HTTP_MAX_HEADERS; i++)
        len += (size_t)snprintf(head + len, sizeof(head) - len, "X-H%zu: %zu\r\n", i, i);
    cut = len;
    memcpy(head + len, "\r\n", 2);
    assert_int_equal(http_req_parse(&req, head, len + 2, MAX_HEAD), (int)(len + 2));
    assert_int_equal(req.num_headers, HTTP_MAX_HEADERS);
    assert_memory_equal(req.headers[63].name, "X-H63", 5);

    len += (size_t)snprintf(head + len, sizeof(head) - len, "X-H64: 64\r\n\r\n");
    assert_int_equal(parse_n(head, len, MAX_HEAD), HTTP_PARSE_TOO_LARGE);
    /* the 65th header is refused on its first byte; a lone CR there could still end the head */
    for (n = 0; n <= len; n++) {
        int rc = parse_n(head, n, MAX_HEAD);

        assert_int_equal(rc, n <= cut ? HTTP_PARSE_PARTIAL : HTTP_PARSE_TOO_LARGE);
    }
}

static void test_http1_header_lookup(void **state)
{
    static const char head[] =
        "GET / HTTP/1.1\r\nHost: a\r\nX-Dup: 1\r\nx-dup: 2\r\nHostname: b\r\n\r\n";
    struct http_req req;
    const struct http_header *h;

    (void)state;
    assert_true(http_req_parse(&req, head, sizeof(head) - 1, MAX_HEAD) > 0);
    h = http_req_header(&req, "HOST");
    assert_non_null(h);
    assert_memory_equal(h->value, "a", 1);
    h = http_req_header(&req, "x-DUP");
    assert_ptr_equal(h, &req.headers[1]);
    assert_ptr_equal(http_req_header(&req, "hostname"), &req.headers[3]);
    assert_null(http_req_header(&req, "Hos"));
    assert_null(http_req_header(&req, "Host-"));
    assert_null(http_req_header(&req, "Cookie"));
}

/* ---- Lists, query strings, cookies ---- */

static void test_http1_token_list(void **state)
{
    static const struct {
        const char *val;
        const char *token;
        bool has;
    } cases[] = {
        {"Upgrade", "upgrade", true},
        {"keep-alive, Upgrade", "upgrade", true},
        {"keep-alive,Upgrade", "upgrade", true},
        {"  Upgrade  ,keep-alive", "upgrade", true},
        {"\tupgrade\t", "UPGRADE", true},
        {",,upgrade,,", "upgrade", true},
        {"upgrader", "upgrade", false},
        {"xupgrade", "upgrade", false},
        {"keep-alive upgrade", "upgrade", false},
        {"keep-alive", "upgrade", false},
        {"", "upgrade", false},
        {" , ", "upgrade", false},
        {"upgrade", "", false},
        {"a, ", "", false},
        {"websocket", "websocket", true},
        {"h2c, WebSocket", "websocket", true},
    };
    size_t i;

    (void)state;
    for (i = 0; i < N_ELEMS(cases); i++) {
        size_t n = strlen(cases[i].val);
        char *buf = dup_exact(cases[i].val, n);

        if (http_token_list_has(buf, n, cases[i].token) != cases[i].has)
            fail_msg("\"%s\" has \"%s\": expected %d", cases[i].val, cases[i].token, cases[i].has);
        free(buf);
    }
}

struct kv_case {
    const char *input;
    const char *name;
    size_t cap;
    int rc;
    const char *out;
};

typedef int kv_fn(const char *, size_t, const char *, char *, size_t);

static void run_kv_cases(kv_fn *fn, const struct kv_case *cases, size_t num)
{
    size_t i;

    for (i = 0; i < num; i++) {
        size_t n = strlen(cases[i].input);
        char *in = dup_exact(cases[i].input, n);
        char *out = malloc(cases[i].cap > 0 ? cases[i].cap : 1);
        int rc;

        assert_non_null(out);
        memset(out, 'Z', cases[i].cap);
        rc = fn(in, n, cases[i].name, out, cases[i].cap);
        if (rc != cases[i].rc)
            fail_msg("case %zu (\"%s\", %s): rc %d, expected %d", i, cases[i].input, cases[i].name,
                     rc, cases[i].rc);
        if (cases[i].cap > 0)
            assert_string_equal(out, cases[i].out);
        free(out);
        free(in);
    }
}

static void test_http1_query_param(void **state)
{
    static const struct kv_case cases[] = {
        {"a=1&b=2", "a", 16, 1, "1"},
        {"a=1&b=2", "b", 16, 1, "2"},
        {"a=1&b=2", "c", 16, -1, ""},
        {"", "a", 16, -1, ""},
        {"ab=1&a=2", "a", 16, 1, "2"},
        {"a=1&a=2", "a", 16, 1, "1"},
        {"a=&b=2", "a", 16, 0, ""},
        {"flag&a=1", "flag", 16, 0, ""},
        {"&&a=1&", "a", 16, 1, "1"},
        {"a=x=y", "a", 16, 3, "x=y"},
        {"t=hello+world%21", "t", 32, 12, "hello world!"},
        {"t=%e2%82%AC", "t", 16, 3, "\xe2\x82\xac"},
        {"t=%2B%26%3D", "t", 16, 3, "+&="},
        {"%74oken=x", "token", 16, 1, "x"},
        {"tok+en=x", "tok en", 16, 1, "x"},
        {"A=1", "a", 16, -1, ""},
        {"t=%", "t", 16, -2, ""},
        {"t=%4", "t", 16, -2, ""},
        {"t=%zz", "t", 16, -2, ""},
        {"t=%4g", "t", 16, -2, ""},
        {"t=%00", "t", 16, -2, ""},
        {"t=a%00b", "t", 16, -2, ""},
        {"x=%zz&t=1", "t", 16, 1, "1"},
        {"t%zz=1&t=2", "t", 16, 1, "2"},
        {"t=12345", "t", 6, 5, "12345"},
        {"t=123456", "t", 6, -2, ""},
        {"t=%41%42%43%44%45", "t", 6, 5, "ABCDE"},
        {"t=%41%42%43%44%45%46", "t", 6, -2, ""},
        {"t=", "t", 1, 0, ""},
        {"t=1", "t", 1, -2, ""},
        {"t=", "t", 0, -2, ""},
    };

    (void)state;
    run_kv_cases(http_query_param, cases, N_ELEMS(cases));
    /* no query at all */
    {
        char out[4] = "zzz";

        assert_int_equal(http_query_param(NULL, 0, "a", out, sizeof(out)), -1);
        assert_string_equal(out, "");
    }
}

static void test_http1_cookie_value(void **state)
{
    static const struct kv_case cases[] = {
        {"a=1; b=2", "a", 16, 1, "1"},
        {"a=1; b=2", "b", 16, 1, "2"},
        {"a=1;b=2", "b", 16, 1, "2"},
        {" a = 1 ;  b=2 ", "a", 16, 1, "1"},
        {"a=1; b=2", "c", 16, -1, ""},
        {"", "a", 16, -1, ""},
        {"ab=1; a=2", "a", 16, 1, "2"},
        {"a=1; a=2", "a", 16, 1, "1"},
        {"A=1; a=2", "a", 16, 1, "2"},
        {"sid=\"abc\"", "sid", 16, 3, "abc"},
        {"sid=\"\"", "sid", 16, 0, ""},
        {"sid=\"abc", "sid", 16, 4, "\"abc"},
        {"sid=\"", "sid", 16, 1, "\""},
        {"sid=a%20b", "sid", 16, 5, "a%20b"},
        {"sid=a=b", "sid", 16, 3, "a=b"},
        {"sid=", "sid", 16, 0, ""},
        {"junk; sid=1", "sid", 16, 1, "1"},
        {"sid", "sid", 16, -1, ""},
        {"sid=12345", "sid", 6, 5, "12345"},
        {"sid=123456", "sid", 6, -2, ""},
        {"sid=\"12345\"", "sid", 6, 5, "12345"},
        {"sid=", "sid", 0, -2, ""},
        {"sid=a\x01z", "sid", 16, -2, ""},
        {"sid=a\x1f", "sid", 16, -2, ""},
        {"sid=a\x7f", "sid", 16, -2, ""},
        {"sid=caf\xc3\xa9", "sid", 16, 5, "caf\xc3\xa9"},
    };

    (void)state;
    run_kv_cases(http_cookie_value, cases, N_ELEMS(cases));
    {
        char out[4] = "zzz";

        assert_int_equal(http_cookie_value(NULL, 0, "a", out, sizeof(out)), -1);
        assert_string_equal(out, "");
    }
}

/* ---- Handshake ---- */

static const char *const origins_list[] = {"https://app.example.com", "http://localhost:8080"};
static const char *const origins_star[] = {"https://app.example.com", "*"};
static const char *const protos[] = {"v2.chat", "v1.chat"};

enum { POL_NONE, POL_LIST, POL_STAR };

static const struct ws_handshake_policy policies[] = {
    [POL_NONE] = {NULL, 0, NULL, 0},
    [POL_LIST] = {origins_list, 2, protos, 2},
    [POL_STAR] = {origins_star, 2, NULL, 0},
};

static void test_http1_check_table(void **state)
{
    static const struct {
        const char *head;
        int pol;
        int status;
        const char *proto; /* expected subprotocol when 101 */
    } cases[] = {
        {GOOD_REQ, POL_NONE, 101, NULL},
        {GOOD_REQ, POL_LIST, 101, NULL},
        {"GET /ws HTTP/1.2\r\n" GOOD_HDRS "\r\n", POL_NONE, 101, NULL},
        /* method */
        {"POST /ws HTTP/1.1\r\n" GOOD_HDRS "\r\n", POL_NONE, 405, NULL},
        {"get /ws HTTP/1.1\r\n" GOOD_HDRS "\r\n", POL_NONE, 405, NULL},
        {"GETS /ws HTTP/1.1\r\n" GOOD_HDRS "\r\n", POL_NONE, 405, NULL},
        {"POST /ws HTTP/1.0\r\n\r\n", POL_NONE, 405, NULL},
        /* version */
        {"GET /ws HTTP/1.0\r\n" GOOD_HDRS "\r\n", POL_NONE, 400, NULL},
        {"GET /ws HTTP/2.0\r\n" GOOD_HDRS "\r\n", POL_NONE, 400, NULL},
        {"GET /ws HTTP/0.9\r\n" GOOD_HDRS "\r\n", POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.0\r\nHost: a\r\n\r\n", POL_NONE, 400, NULL},
        /* Upgrade: a plain GET is told what this is */
        {"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n", POL_NONE, 426, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST "Upgrade: h2c\r\n" H_CONN H_VER H_KEY "\r\n", POL_NONE, 426,
         NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST "Upgrade: websockets\r\n" H_CONN H_VER H_KEY "\r\n",
         POL_NONE, 426, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST "Upgrade:\r\n" H_CONN H_VER H_KEY "\r\n", POL_NONE, 426,
         NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST "Upgrade: h2c, WebSocket\r\n" H_CONN H_VER H_KEY "\r\n",
         POL_NONE, 101, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST "Upgrade: h2c\r\nUpgrade: websocket\r\n" H_CONN H_VER H_KEY
         "\r\n",
         POL_NONE, 101, NULL},
        /* Host */
        {"GET /ws HTTP/1.1\r\n" H_UPG H_CONN H_VER H_KEY "\r\n", POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\nHost:\r\n" H_UPG H_CONN H_VER H_KEY "\r\n", POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_HOST H_UPG H_CONN H_VER H_KEY "\r\n", POL_NONE, 400, NULL},
        /* Connection */
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_VER H_KEY "\r\n", POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG "Connection: keep-alive\r\n" H_VER H_KEY "\r\n",
         POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG "Connection: upgrader\r\n" H_VER H_KEY "\r\n",
         POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG "Connection: keep-alive, Upgrade\r\n" H_VER H_KEY
         "\r\n",
         POL_NONE, 101, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG
         "Connection: keep-alive\r\nConnection: upgrade\r\n" H_VER H_KEY "\r\n",
         POL_NONE, 101, NULL},
        /* Sec-WebSocket-Version */
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_KEY "\r\n", POL_NONE, 426, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN "Sec-WebSocket-Version: 8\r\n" H_KEY "\r\n",
         POL_NONE, 426, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN "Sec-WebSocket-Version: 13, 8\r\n" H_KEY "\r\n",
         POL_NONE, 426, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN "Sec-WebSocket-Version: 130\r\n" H_KEY "\r\n",
         POL_NONE, 426, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN "Sec-WebSocket-Version:  13 \r\n" H_KEY "\r\n",
         POL_NONE, 101, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER H_VER H_KEY "\r\n", POL_NONE, 400, NULL},
        /* Sec-WebSocket-Key */
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER "\r\n", POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER H_KEY H_KEY "\r\n", POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER "Sec-WebSocket-Key:\r\n\r\n", POL_NONE,
         400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n\r\n",
         POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n\r\n",
         POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==A\r\n\r\n",
         POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ===\r\n\r\n",
         POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q==\r\n\r\n",
         POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQAA\r\n\r\n",
         POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=A\r\n\r\n",
         POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER
         "Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZ==\r\n\r\n",
         POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZSBub25j\r\n\r\n",
         POL_NONE, 400, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER
         "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n",
         POL_NONE, 101, NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER
         "Sec-WebSocket-Key: ++//++//++//++//++//+/==\r\n\r\n",
         POL_NONE, 101, NULL},
        /* Origin */
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Origin: https://app.example.com\r\n\r\n", POL_LIST, 101,
         NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Origin: http://localhost:8080\r\n\r\n", POL_LIST, 101,
         NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Origin: HTTPS://App.Example.COM\r\n\r\n", POL_LIST, 101,
         NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Origin: https://evil.example\r\n\r\n", POL_LIST, 403,
         NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Origin: https://app.example.com.evil\r\n\r\n", POL_LIST,
         403, NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Origin: https://app.example.co\r\n\r\n", POL_LIST, 403,
         NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Origin: https://app.example.com/\r\n\r\n", POL_LIST, 403,
         NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Origin: null\r\n\r\n", POL_LIST, 403, NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Origin:\r\n\r\n", POL_LIST, 403, NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Origin: https://app.example.com\r\n"
         "Origin: https://evil.example\r\n\r\n",
         POL_LIST, 403, NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Origin: https://evil.example\r\n\r\n", POL_STAR, 101,
         NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Origin: https://evil.example\r\n\r\n", POL_NONE, 101,
         NULL},
        {"GET /ws HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER "Origin: https://evil.example\r\n\r\n",
         POL_LIST, 400, NULL},
        /* subprotocols: the server's order decides, never one the client did not offer */
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Sec-WebSocket-Protocol: v1.chat, v2.chat\r\n\r\n",
         POL_LIST, 101, "v2.chat"},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Sec-WebSocket-Protocol: v1.chat\r\n\r\n", POL_LIST, 101,
         "v1.chat"},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Sec-WebSocket-Protocol: v3.chat\r\n\r\n", POL_LIST, 101,
         NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Sec-WebSocket-Protocol: foo\r\n"
         "Sec-WebSocket-Protocol: bar, v1.chat\r\n\r\n",
         POL_LIST, 101, "v1.chat"},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Sec-WebSocket-Protocol: v1.chat\r\n"
         "Sec-WebSocket-Protocol: v2.chat\r\n\r\n",
         POL_LIST, 101, "v2.chat"},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Sec-WebSocket-Protocol: V2.CHAT\r\n\r\n", POL_LIST, 101,
         NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Sec-WebSocket-Protocol: v2.chatty, xv1.chat\r\n\r\n",
         POL_LIST, 101, NULL},
        {"GET /ws HTTP/1.1\r\n" GOOD_HDRS "Sec-WebSocket-Protocol: v2.chat\r\n\r\n", POL_NONE, 101,
         NULL},
    };
    size_t i;

    (void)state;
    for (i = 0; i < N_ELEMS(cases); i++) {
        struct http_req req;
        struct ws_handshake_result res;
        size_t n = strlen(cases[i].head);
        const struct ws_handshake_policy *pol = &policies[cases[i].pol];
        int rc;

        assert_int_equal(http_req_parse(&req, cases[i].head, n, MAX_HEAD), (int)n);
        rc = ws_handshake_check(&req, pol, &res);
        if (rc != cases[i].status || res.status != rc)
            fail_msg("case %zu: status %d, expected %d (%s)", i, rc, cases[i].status,
                     res.message != NULL ? res.message : "-");
        assert_non_null(res.message);
        if (rc != 101) {
            assert_string_equal(res.accept, "");
            assert_null(res.subprotocol);
            continue;
        }
        assert_int_equal(strlen(res.accept), 28);
        if (cases[i].proto == NULL) {
            assert_null(res.subprotocol);
        } else {
            /* points into the policy, not into the request */
            assert_non_null(res.subprotocol);
            assert_string_equal(res.subprotocol, cases[i].proto);
            assert_true(res.subprotocol == pol->subprotocols[0] ||
                        res.subprotocol == pol->subprotocols[1]);
        }
    }
}

static void test_http1_check_plain_get_message(void **state)
{
    static const char head[] = "GET /ws HTTP/1.1\r\nHost: a\r\n\r\n";
    struct http_req req;
    struct ws_handshake_result res;

    (void)state;
    assert_true(http_req_parse(&req, head, sizeof(head) - 1, MAX_HEAD) > 0);
    assert_int_equal(ws_handshake_check(&req, &policies[POL_NONE], &res), 426);
    assert_string_equal(res.message, "this is a WebSocket endpoint");
}

static void test_http1_accept_key(void **state)
{
    static const struct {
        const char *key;
        const char *accept;
    } cases[] = {
        {KEY, ACCEPT},
        {"AAAAAAAAAAAAAAAAAAAAAA==", "ICX+Yqv66kxgM0FcWaLWlFLwTAI="},
        {"", "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w="},
    };
    char key[200], out[29];
    size_t i;

    (void)state;
    for (i = 0; i < N_ELEMS(cases); i++) {
        ws_handshake_accept_key(cases[i].key, strlen(cases[i].key), out);
        assert_string_equal(out, cases[i].accept);
    }
    /* both sides of the stack-buffer limit, and a long key through the streaming path */
    memset(key, 'k', sizeof(key));
    ws_handshake_accept_key(key, 128, out);
    assert_string_equal(out, "LcijRWdSv8weHsk1E7Dug2wMBbg=");
    ws_handshake_accept_key(key, 129, out);
    assert_string_equal(out, "GwNZsIvApWzhz529DTMMTypVTu4=");
    memset(key, 'x', sizeof(key));
    ws_handshake_accept_key(key, 200, out);
    assert_string_equal(out, "2/xdrRDawKrkzT3zWJGBWn134JI=");
}

/* ---- Responses ---- */

static void test_http1_response_101(void **state)
{
    static const char want[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                               "\r\n";
    static const char want_proto[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                     "Upgrade: websocket\r\n"
                                     "Connection: Upgrade\r\n"
                                     "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                                     "Sec-WebSocket-Protocol: v1.chat\r\n"
                                     "\r\n";
    static const char head[] = "GET /chat HTTP/1.1\r\n"
                               "Host: server.example.com\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Key: " KEY "\r\n"
                               "Origin: http://localhost:8080\r\n"
                               "Sec-WebSocket-Protocol: chat, v1.chat\r\n"
                               "Sec-WebSocket-Version: 13\r\n"
                               "\r\n";
    struct http_req req;
    struct ws_handshake_result res;
    char out[512];
    size_t n;

    (void)state;
    assert_int_equal(http_req_parse(&req, GOOD_REQ, sizeof(GOOD_REQ) - 1, MAX_HEAD),
                     (int)sizeof(GOOD_REQ) - 1);
    assert_int_equal(ws_handshake_check(&req, &policies[POL_NONE], &res), 101);
    assert_string_equal(res.accept, ACCEPT);
    n = ws_handshake_101(out, sizeof(out), &res);
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(out, want, n);

    assert_int_equal(http_req_parse(&req, head, sizeof(head) - 1, MAX_HEAD), (int)sizeof(head) - 1);
    assert_int_equal(ws_handshake_check(&req, &policies[POL_LIST], &res), 101);
    n = ws_handshake_101(out, sizeof(out), &res);
    assert_int_equal(n, sizeof(want_proto) - 1);
    assert_memory_equal(out, want_proto, n);

    /* it must fit with its NUL, and only a 101 result gives a 101 answer */
    assert_int_equal(ws_handshake_101(out, sizeof(want_proto) - 1, &res), 0);
    assert_int_equal(ws_handshake_101(out, sizeof(want_proto), &res), sizeof(want_proto) - 1);
    assert_int_equal(ws_handshake_101(out, 0, &res), 0);
    res.status = 400;
    assert_int_equal(ws_handshake_101(out, sizeof(out), &res), 0);
    res.status = 101;
    res.accept[0] = '\0';
    assert_int_equal(ws_handshake_101(out, sizeof(out), &res), 0);
}

/*
 * permessage-deflate at the handshake: every Sec-WebSocket-Extensions line is tried in order, the
 * first acceptable offer wins, malformed ones are declined (never a handshake error), and the 101
 * carries exactly the response ws_deflate_response gives.
 */
static void test_http1_deflate_negotiation(void **state)
{
    static const struct {
        const char *ext; /* header lines, each "\r\n"-terminated; "" = none */
        bool enabled;
        const char *want; /* the Sec-WebSocket-Extensions answer; NULL = none */
    } cases[] = {
        {"", true, NULL},
        {"Sec-WebSocket-Extensions: permessage-deflate\r\n", false, NULL},
        {"Sec-WebSocket-Extensions: permessage-deflate\r\n", true,
         "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
         "server_max_window_bits=12"},
        {"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n", true,
         "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
         "server_max_window_bits=12; client_max_window_bits=12"},
        /* malformed or unacceptable offers: declined, the handshake still succeeds */
        {"Sec-WebSocket-Extensions: permessage-deflate; bogus=1\r\n", true, NULL},
        {"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8\r\n", true, NULL},
        {"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits\r\n", true, NULL},
        {"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=16\r\n", true, NULL},
        {"Sec-WebSocket-Extensions: ;;=,\"\r\n", true, NULL},
        {"Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n", true, NULL},
        /* the second line holds the first acceptable offer */
        {"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8\r\n"
         "Sec-WebSocket-Extensions: foo, permessage-deflate; server_max_window_bits=10\r\n",
         true,
         "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
         "server_max_window_bits=10"},
    };
    struct ws_deflate_policy dp;
    struct ws_handshake_policy pol = {0};
    char head[1024], out[512], want[512];

    (void)state;
    pol.deflate = &dp;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct http_req req;
        struct ws_handshake_result res;
        int n = snprintf(head, sizeof head, "GET /ws HTTP/1.1\r\n" GOOD_HDRS "%s\r\n", cases[i].ext);

        print_message("case %zu\n", i);
        ws_deflate_policy_init(&dp);
        dp.enabled = cases[i].enabled;
        dp.server_max_window_bits = dp.client_max_window_bits = 12;
        assert_int_equal(http_req_parse(&req, head, (size_t)n, MAX_HEAD), n);
        assert_int_equal(ws_handshake_check(&req, &pol, &res), 101);
        assert_int_equal(res.deflate, cases[i].want != NULL);
        assert_true(ws_handshake_101(out, sizeof out, &res) > 0);
        snprintf(want, sizeof want, "\r\nSec-WebSocket-Extensions: %s\r\n",
                 cases[i].want ? cases[i].want : "");
        if (cases[i].want)
            assert_non_null(strstr(out, want));
        else
            assert_null(strstr(out, "Sec-WebSocket-Extensions"));
    }
    /* no deflate policy at all: never offered */
    pol.deflate = NULL;
    {
        struct http_req req;
        struct ws_handshake_result res;
        int n = snprintf(head, sizeof head, "GET /ws HTTP/1.1\r\n" GOOD_HDRS "%s\r\n",
                         cases[2].ext);
        assert_int_equal(http_req_parse(&req, head, (size_t)n, MAX_HEAD), n);
        assert_int_equal(ws_handshake_check(&req, &pol, &res), 101);
        assert_false(res.deflate);
    }
}

static void test_http1_status_text(void **state)
{
    static const struct {
        int status;
        const char *text;
    } cases[] = {
        {101, "Switching Protocols"},
        {200, "OK"},
        {204, "No Content"},
        {301, "Moved Permanently"},
        {304, "Not Modified"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {413, "Payload Too Large"},
        {415, "Unsupported Media Type"},
        {426, "Upgrade Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {503, "Service Unavailable"},
        {0, "Unknown"},
        {402, "Unknown"},
        {-1, "Unknown"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < N_ELEMS(cases); i++)
        assert_string_equal(http_status_text(cases[i].status), cases[i].text);
}

static void test_http1_resp_status(void **state)
{
    int st = 0;
    (void)state;
    assert_int_equal(http_resp_status("HTTP/1.1 204 No Content\r\nX: y", 30, &st), 25);
    assert_int_equal(st, 204);
    assert_int_equal(http_resp_status("HTTP/1.0 500\r\n", 14, &st), 14);
    assert_int_equal(st, 500);
    assert_int_equal(http_resp_status("HTTP/1.1 200 O", 14, &st), 0);
    assert_int_equal(http_resp_status("HTTP/2 200 OK\r\n", 15, &st), -1);
    assert_int_equal(http_resp_status("HTTP/1.1 2x0 OK\r\n", 17, &st), -1);
    assert_int_equal(http_resp_status("HTTP/1.1 099 X\r\n", 16, &st), -1);
    assert_int_equal(http_resp_status("HTTP/1.1 2000\r\n", 15, &st), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http1_parse_fields),
        cmocka_unit_test(test_http1_parse_path_query),
        cmocka_unit_test(test_http1_parse_versions),
        cmocka_unit_test(test_http1_parse_bytewise),
        cmocka_unit_test(test_http1_parse_malformed),
        cmocka_unit_test(test_http1_parse_too_large),
        cmocka_unit_test(test_http1_parse_header_count),
        cmocka_unit_test(test_http1_header_lookup),
        cmocka_unit_test(test_http1_token_list),
        cmocka_unit_test(test_http1_query_param),
        cmocka_unit_test(test_http1_cookie_value),
        cmocka_unit_test(test_http1_check_table),
        cmocka_unit_test(test_http1_check_plain_get_message),
        cmocka_unit_test(test_http1_accept_key),
        cmocka_unit_test(test_http1_response_101),
        cmocka_unit_test(test_http1_deflate_negotiation),
        cmocka_unit_test(test_http1_status_text),
        cmocka_unit_test(test_http1_resp_status),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
