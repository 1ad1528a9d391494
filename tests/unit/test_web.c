/* test_web.c -- static path resolution (no traversal, ever) and content types of proxy/web.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "web.h"

static void test_web_resolve_ok(void **state)
{
    (void)state;
    static const struct {
        const char *url, *want;
    } cases[] = {
        {"/", "web/index.html"},
        {"/app.js", "web/app.js"},
        {"/css/site.css", "web/css/site.css"},
        {"/sub/", "web/sub/index.html"},
        {"/a%20b.txt", "web/a b.txt"},
        {"/x..y.js", "web/x..y.js"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[256];
        assert_int_equal(web_resolve_path("web", cases[i].url, strlen(cases[i].url), out, sizeof(out)), 0);
        assert_string_equal(out, cases[i].want);
    }
}

static void test_web_resolve_refuses_traversal(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "/../etc/passwd", "/a/../../etc/passwd", "/..", "/%2e%2e/etc/passwd", "/%2E%2E%2Fetc",
        "/.git/config", "/.env", "/a/.hidden", "//etc/passwd", "/a\\..\\b", "/a%5c..%5cb",
        "/a%00.js", "/%zz", "/%2", "relative", "", "/./index.html",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char out[256];
        if (web_resolve_path("web", bad[i], strlen(bad[i]), out, sizeof(out)) != -1)
            fail_msg("accepted %s as %s", bad[i], out);
    }
}

static void test_web_resolve_bounds(void **state)
{
    (void)state;
    char out[16];
    assert_int_equal(web_resolve_path("web", "/a-very-long-file-name.js", 25, out, sizeof(out)), -1);
}

static void test_web_content_types(void **state)
{
    (void)state;
    assert_string_equal(web_content_type("web/index.html"), "text/html; charset=utf-8");
    assert_string_equal(web_content_type("web/app.js"), "text/javascript; charset=utf-8");
    /* ES modules: a browser refuses a module script served as anything but JavaScript */
    assert_string_equal(web_content_type("web/wsproxy.mjs"), "text/javascript; charset=utf-8");
    assert_string_equal(web_content_type("web/style.css"), "text/css; charset=utf-8");
    assert_string_equal(web_content_type("web/logo.svg"), "image/svg+xml");
    assert_string_equal(web_content_type("web/blob"), "application/octet-stream");
    assert_string_equal(web_content_type("web/x.exe"), "application/octet-stream");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_web_resolve_ok),
        cmocka_unit_test(test_web_resolve_refuses_traversal),
        cmocka_unit_test(test_web_resolve_bounds),
        cmocka_unit_test(test_web_content_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
