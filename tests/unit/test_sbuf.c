/* test_sbuf.c -- the frame builder: growth past the inline buffer, integers, JSON string escaping. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "base/sbuf.h"

static void test_sbuf_grows(void **state)
{
    (void)state;
    struct sbuf b;
    sbuf_init(&b);
    for (int i = 0; i < 1000; i++)
        sbuf_adds(&b, "0123456789");
    assert_int_equal(b.len, 10000);
    assert_false(b.oom);
    assert_memory_equal(b.p + 9990, "0123456789", 10);
    sbuf_reset(&b);
    assert_int_equal(b.len, 0);
    sbuf_release(&b);
}

static void test_sbuf_i64(void **state)
{
    (void)state;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_add_i64(&b, 0);
    sbuf_adds(&b, ",");
    sbuf_add_i64(&b, 1795305086657LL);
    sbuf_adds(&b, ",");
    sbuf_add_i64(&b, -42);
    sbuf_adds(&b, ",");
    sbuf_add_i64(&b, INT64_MIN);
    sbuf_add(&b, "", 1);
    assert_string_equal(b.p, "0,1795305086657,-42,-9223372036854775808");
    sbuf_release(&b);
}

static void test_sbuf_json_str(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"plain", "\"plain\""},
        {"", "\"\""},
        {"q\"b\\", "\"q\\\"b\\\\\""},
        {"a\nb\tc\r", "\"a\\nb\\tc\\r\""},
        {"\x01\x1f", "\"\\u0001\\u001f\""},
        {"κόσμε", "\"κόσμε\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sbuf b;
        sbuf_init(&b);
        sbuf_add_json_str(&b, cases[i].in);
        sbuf_add(&b, "", 1);
        assert_string_equal(b.p, cases[i].want);
        sbuf_release(&b);
    }
}

static void test_sbuf_addf(void **state)
{
    (void)state;
    struct sbuf b;
    sbuf_init(&b);
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    sbuf_addf(&b, "[%s|%d]", big, 7);
    assert_int_equal(b.len, 1999 + 4);
    assert_memory_equal(b.p + b.len - 3, "|7]", 3);
    sbuf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sbuf_grows),
        cmocka_unit_test(test_sbuf_i64),
        cmocka_unit_test(test_sbuf_json_str),
        cmocka_unit_test(test_sbuf_addf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
