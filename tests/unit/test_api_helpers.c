/*
 * test_api_helpers.c -- api.c's pure helpers: bearer-key check, strict integers, Content-Type,
 * request framing (Content-Length / Transfer-Encoding), id paths. Includes api.c to reach them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "../../proxy/api/api.c"

static void keys_of(unsigned char (*out)[KEY_DIGEST_LEN], const char *const *keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sha256(keys[i], strlen(keys[i]), out[i]);
}

static bool bearer(const unsigned char (*keys)[KEY_DIGEST_LEN], size_t n, const char *value)
{
    return api_bearer_ok(keys, n, value, value ? strlen(value) : 0);
}

static void test_api_bearer_accepts_every_configured_key(void **state)
{
    static const char *const keys[] = {"alpha-key-0001", "beta-key-0002", "k"};
    unsigned char k[3][KEY_DIGEST_LEN];
    (void)state;
    keys_of(k, keys, 3);
    assert_true(bearer((const unsigned char(*)[KEY_DIGEST_LEN])k, 3, "Bearer alpha-key-0001"));
    assert_true(bearer((const unsigned char(*)[KEY_DIGEST_LEN])k, 3, "Bearer beta-key-0002"));
    assert_true(bearer((const unsigned char(*)[KEY_DIGEST_LEN])k, 3, "Bearer k"));
    /* scheme is case-insensitive (RFC 9110 §11.1), spaces before the token are skipped */
    assert_true(bearer((const unsigned char(*)[KEY_DIGEST_LEN])k, 3, "bearer alpha-key-0001"));
    assert_true(bearer((const unsigned char(*)[KEY_DIGEST_LEN])k, 3, "BEARER \t alpha-key-0001"));
}

static void test_api_bearer_refuses_everything_else(void **state)
{
    static const char *const keys[] = {"alpha-key-0001"};
    static const char *const bad[] = {
        "",
        "Bearer",
        "Bearer ",
        "Bearer  ",
        "Bearer alpha-key-000",   /* prefix */
        "Bearer alpha-key-00011", /* longer */
        "Bearer Alpha-key-0001",  /* keys are case-sensitive */
        "Bearer alpha-key-0001 ", /* trailing space is part of the token */
        "Basic alpha-key-0001",
        "Bearertoken",
        "alpha-key-0001",
        "Bearer\talpha-key-0001", /* the scheme ends with a space */
    };
    unsigned char k[1][KEY_DIGEST_LEN];
    (void)state;
    keys_of(k, keys, 1);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (bearer((const unsigned char(*)[KEY_DIGEST_LEN])k, 1, bad[i]))
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_false(bearer((const unsigned char(*)[KEY_DIGEST_LEN])k, 1, NULL));
    /* no keys configured: nothing passes */
    assert_false(bearer((const unsigned char(*)[KEY_DIGEST_LEN])k, 0, "Bearer alpha-key-0001"));
}

static void test_api_parse_u63(void **state)
{
    static const struct {
        const char *s;
        int rc;
        int64_t v;
    } cases[] = {
        {"0", 0, 0},
        {"7", 0, 7},
        {"123456789012345678", 0, 123456789012345678LL},
        {"", -1, 0},
        {"-1", -1, 0},
        {"+1", -1, 0},
        {" 1", -1, 0},
        {"1 ", -1, 0},
        {"1x", -1, 0},
        {"0x10", -1, 0},
        {"1234567890123456789", -1, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t v = -42;
        int rc = api_parse_u63(cases[i].s, strlen(cases[i].s), &v);
        if (rc != cases[i].rc || (rc == 0 && v != cases[i].v))
            fail_msg("\"%s\": rc %d v %lld", cases[i].s, rc, (long long)v);
    }
}

static void test_api_is_json_type(void **state)
{
    static const char *const yes[] = {"application/json", "Application/JSON",
                                      "application/json; charset=utf-8", "application/json;x=y",
                                      "application/json ;charset=utf-8"};
    static const char *const no[] = {
        "",          "application/jsonx", "application/json-patch+json",
        "text/json", "application/jso",   "text/plain"};
    (void)state;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        assert_true(api_is_json_type(yes[i], strlen(yes[i])));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_false(api_is_json_type(no[i], strlen(no[i])));
}

static int64_t body_length_of(const char *head)
{
    struct http_req req;
    int n = http_req_parse(&req, head, strlen(head), API_HEAD_MAX);
    assert_true(n > 0);
    return api_body_length(&req);
}

static void test_api_body_length_framing(void **state)
{
    static const struct {
        const char *headers;
        int64_t want;
    } cases[] = {
        {"", 0},
        {"Content-Length: 0\r\n", 0},
        {"Content-Length: 42\r\n", 42},
        {"content-length: 42\r\n", 42},
        {"Content-Length: 42\r\nContent-Length: 42\r\n", 42}, /* repeated, same value: fine */
        {"Content-Length: 42\r\nContent-Length: 43\r\n", -1}, /* smuggling shape */
        {"Content-Length: -1\r\n", -1},
        {"Content-Length: 4 2\r\n", -1},
        {"Content-Length: 0x10\r\n", -1},
        {"Content-Length: \r\n", -1},
        {"Content-Length: 99999999999999999999999\r\n", INT64_MAX}, /* huge: refused as 413 */
        {"Transfer-Encoding: chunked\r\n", -2},
        {"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", -2},
        {"Transfer-Encoding: identity\r\n", -2},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char head[256];
        snprintf(head, sizeof(head), "POST /api/v1/push HTTP/1.1\r\nHost: x\r\n%s\r\n",
                 cases[i].headers);
        int64_t got = body_length_of(head);
        if (got != cases[i].want)
            fail_msg("%s: got %lld, want %lld", cases[i].headers, (long long)got,
                     (long long)cases[i].want);
    }
}

static void test_api_path_id(void **state)
{
    static const struct {
        const char *target;
        int rc;
        int64_t id;
    } cases[] = {
        {"/api/v1/sessions/1", 1, 1},    {"/api/v1/sessions/123?x=1", 1, 123},
        {"/api/v1/sessions/", 0, 0},     {"/api/v1/sessions", 0, 0},
        {"/api/v1/sessionsX/1", 0, 0},   {"/api/v1/sessions/0", -1, 0},
        {"/api/v1/sessions/abc", -1, 0}, {"/api/v1/sessions/1/2", -1, 0},
        {"/api/v1/sessions/-1", -1, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char head[256];
        struct http_req req;
        snprintf(head, sizeof(head), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", cases[i].target);
        assert_true(http_req_parse(&req, head, strlen(head), API_HEAD_MAX) > 0);
        int64_t id = 0;
        int rc = api_path_id(&req, "/api/v1/sessions/", &id);
        if (rc != cases[i].rc || (rc == 1 && id != cases[i].id))
            fail_msg("%s: rc %d id %lld", cases[i].target, rc, (long long)id);
    }
}

static void test_api_status_text_covers_our_statuses(void **state)
{
    static const int statuses[] = {200, 202, 204, 400, 401, 404, 405, 411, 413, 415, 431, 500, 503};
    (void)state;
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
        if (strcmp(status_text(statuses[i]), "Unknown") == 0)
            fail_msg("no reason phrase for %d", statuses[i]);
    assert_string_equal(status_text(202), "Accepted");
    assert_string_equal(status_text(411), "Length Required");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_bearer_accepts_every_configured_key),
        cmocka_unit_test(test_api_bearer_refuses_everything_else),
        cmocka_unit_test(test_api_parse_u63),
        cmocka_unit_test(test_api_is_json_type),
        cmocka_unit_test(test_api_body_length_framing),
        cmocka_unit_test(test_api_path_id),
        cmocka_unit_test(test_api_status_text_covers_our_statuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
