/*
 * test_wsctl_fmt.c -- wsctl's output helpers: relative times, durations, UTC times, sizes, UTF-8
 * clipping and aligned tables. Includes wsctl/fmt.c (wsctl is not part of libwsp.a).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "../../wsctl/fmt.c"

static void test_wsctl_fmt_ago(void **state)
{
    static const struct {
        int64_t then, now;
        const char *want;
    } cases[] = {
        {0, 5000, "-"},
        {1000000, 1000000, "just now"},
        {1000000, 1000999, "just now"},
        {1000000, 1001000, "1s ago"},
        {1000000, 1059999, "59s ago"},
        {1000000, 1060000, "1m ago"},
        {1000000, 1000000 + 3599999, "59m ago"},
        {1000000, 1000000 + 3600000, "1h ago"},
        {1000000, 1000000 + 47 * 3600000LL, "47h ago"},
        {1000000, 1000000 + 48 * 3600000LL, "2d ago"},
        {1000000, 1000000 + 400 * 86400000LL, "400d ago"},
        {1180000, 1000000, "in 3m"}, /* clock skew: a time ahead of now */
    };
    char out[32];
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fmt_ago(out, sizeof(out), cases[i].then, cases[i].now);
        assert_string_equal(out, cases[i].want);
    }
}

static void test_wsctl_fmt_duration(void **state)
{
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {
        {-5, "0ms"},
        {0, "0ms"},
        {450, "450ms"},
        {1000, "1s"},
        {59999, "59s"},
        {60000, "1m00s"},
        {192000, "3m12s"},
        {3599000, "59m59s"},
        {3600000, "1h00m"},
        {7500000, "2h05m"},
        {86399000, "23h59m"},
        {86400000, "1d00h"},
        {3 * 86400000LL + 4 * 3600000LL, "3d04h"},
    };
    char out[32];
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fmt_duration(out, sizeof(out), cases[i].ms);
        assert_string_equal(out, cases[i].want);
    }
}

static void test_wsctl_fmt_time_and_bytes(void **state)
{
    char out[40];
    (void)state;
    fmt_time(out, sizeof(out), 0);
    assert_string_equal(out, "-");
    fmt_time(out, sizeof(out), 1700000000123LL);
    assert_string_equal(out, "2023-11-14T22:13:20Z");
    fmt_bytes(out, sizeof(out), 0);
    assert_string_equal(out, "0 B");
    fmt_bytes(out, sizeof(out), 1023);
    assert_string_equal(out, "1023 B");
    fmt_bytes(out, sizeof(out), 1536);
    assert_string_equal(out, "1.5 KiB");
    fmt_bytes(out, sizeof(out), 64ULL << 20);
    assert_string_equal(out, "64.0 MiB");
    fmt_bytes(out, sizeof(out), 3ULL << 40);
    assert_string_equal(out, "3.0 TiB");
}

static void test_wsctl_fmt_clip_counts_characters(void **state)
{
    char out[64];
    (void)state;
    fmt_clip(out, sizeof(out), "short", 10);
    assert_string_equal(out, "short");
    fmt_clip(out, sizeof(out), "exactly10!", 10);
    assert_string_equal(out, "exactly10!");
    fmt_clip(out, sizeof(out), "this is too long", 10);
    assert_string_equal(out, "this is...");
    /* multi-byte characters are kept whole and counted once */
    fmt_clip(out, sizeof(out), "\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc", 5);
    assert_string_equal(out, "\xc3\xbc\xc3\xbc...");
    assert_int_equal(fmt_width(out), 5);
    fmt_clip(out, sizeof(out), "a\nb\tc", 10);
    assert_string_equal(out, "a b c");
    /* a small buffer cuts on a character boundary and still ends in "..." */
    char small[8];
    fmt_clip(small, sizeof(small), "\xe2\x9c\x93\xe2\x9c\x93\xe2\x9c\x93", 10);
    assert_string_equal(small, "\xe2\x9c\x93...");
    fmt_clip(small, 3, "abc", 10);
    assert_string_equal(small, "");
}

static void test_wsctl_table_aligns_columns(void **state)
{
    static const char *const head[] = {"ID", "USER", "STATE"};
    static const char *const r1[] = {"1", "\xc3\xbcser", "active"};
    static const char *const r2[] = {"100", "bob", NULL};
    struct table t;
    char *buf = NULL;
    size_t len = 0;
    (void)state;
    table_init(&t, 3, head);
    table_add(&t, r1);
    table_add(&t, r2);
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    table_print(&t, f);
    fclose(f);
    assert_string_equal(buf, "ID   USER  STATE\n"
                             "1    \xc3\xbcser  active\n"
                             "100  bob   -\n");
    free(buf);
    table_release(&t);
    assert_int_equal(t.nrows, 0);
}

static void test_wsctl_table_grows(void **state)
{
    static const char *const head[] = {"N"};
    struct table t;
    char n[16];
    (void)state;
    table_init(&t, 1, head);
    for (int i = 0; i < 1000; i++) {
        const char *row[] = {n};
        snprintf(n, sizeof(n), "%d", i);
        table_add(&t, row);
    }
    assert_false(t.oom);
    assert_int_equal(t.nrows, 1000);
    assert_string_equal(t.cells[999], "999");
    table_release(&t);
}

static void test_wsctl_pct_encode(void **state)
{
    (void)state;
    char out[64];
    wsctl_pct_encode(out, sizeof(out), "team-red_1.x~");
    assert_string_equal(out, "team-red_1.x~");
    wsctl_pct_encode(out, sizeof(out), "d\xc3\xa9j\xc3\xa0 vu/2?&%#");
    assert_string_equal(out, "d%C3%A9j%C3%A0%20vu%2F2%3F%26%25%23");
    wsctl_pct_encode(out, 7, "a/b/c"); /* room for "a%2Fb" and the NUL, never half an escape */
    assert_string_equal(out, "a%2Fb");
    wsctl_pct_encode(out, 3, "//");
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wsctl_fmt_ago),
        cmocka_unit_test(test_wsctl_fmt_duration),
        cmocka_unit_test(test_wsctl_fmt_time_and_bytes),
        cmocka_unit_test(test_wsctl_fmt_clip_counts_characters),
        cmocka_unit_test(test_wsctl_table_aligns_columns),
        cmocka_unit_test(test_wsctl_table_grows),
        cmocka_unit_test(test_wsctl_pct_encode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
