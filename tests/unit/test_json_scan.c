/* test_json_scan.c -- the chat fast-path scanner: RFC 8259 grammar corners, its bail rules, field
 * extraction, string decoding and compaction. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "proto/json_scan.h"

static int scan(const char *s)
{
    struct json_top top;
    return json_scan_top(s, strlen(s), &top);
}

static void test_json_scan_accepts_valid(void **state)
{
    (void)state;
    static const char *ok[] = {
        "{}", " {} ", "\t\r\n{\t\r\n}\t\r\n", "{\"a\":1}", "{\"a\":-0}", "{\"a\":0}",
        "{\"a\":1e5}", "{\"a\":1E+5}", "{\"a\":1e-5}", "{\"a\":-1.25}", "{\"a\":0.0}",
        "{\"a\":123456789}", "{\"a\":9223372036854775807}", "{\"a\":-9223372036854775808}",
        "{\"a\":1.5e299}", "{\"a\":1e-400}", "{\"a\":\"\"}", "{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}",
        "{\"a\":\"\\u0041\\u00e9\\u20AC\\uFFFF\"}", "{\"a\":\"h\xc3\xa9\"}", "{\"a\":true,\"b\":false,\"c\":null}",
        "{\"a\":[]}", "{\"a\":[ 1 , [2,[3]] , {\"b\":{}} ]}", "{\"a\":{\"a\":{\"a\":1}}}",
        "{\"a\":{\"x\":1},\"b\":{\"x\":1}}", "{\"\":1}", "{\"a\" : 1 , \"b\" : 2}",
        /* depth 16 exactly */
        "{\"a\":[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (scan(ok[i]) != JSON_SCAN_OK)
            fail_msg("expected OK: %s", ok[i]);
    }
}

static void test_json_scan_bails_on_invalid_or_doubtful(void **state)
{
    (void)state;
    static const char *bad[] = {
        "", " ", "[]", "1", "\"a\"", "null", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\":1,}",
        "{,}", "{\"a\":1 \"b\":2}", "{a:1}", "{'a':1}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}",
        "{\"a\":-}", "{\"a\":+1}", "{\"a\":1e}", "{\"a\":1e+}", "{\"a\":0x10}", "{\"a\":-01}",
        "{\"a\":1.e5}", "{\"a\":NaN}", "{\"a\":Infinity}", "{\"a\":tru}", "{\"a\":nul}",
        "{\"a\":falsey}", "{\"a\":TRUE}", "{} x", "{}{}", "{}\x0b", "{\"a\":[1,]}",
        "{\"a\":[,1]}", "{\"a\":[1 2]}", "{\"a\":[}", "{\"a\":\"x}", "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12\"}", "{\"a\":\"\\u12G4\"}", "{\"a\":\"\t\"}", "{\"a\":\"\n\"}",
        "{\"a\":\"\\u0000\"}", "{\"a\":\"\\ud83d\\ude00\"}", "{\"a\":\"\\uDC00\"}",
        "{\"a\":1,\"a\":2}", "{\"a\":{\"b\":1,\"b\":1}}", "{\"a\":[{\"k\":1,\"k\":2}]}",
        "{\"\\u0061\":1}", "{\"a\":9223372036854775808}", "{\"a\":-9223372036854775809}",
        "{\"a\":99999999999999999999999}", "{\"a\":1e309}", "{\"a\":10e300}",
        /* depth 17 */
        "{\"a\":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (scan(bad[i]) != JSON_SCAN_BAIL)
            fail_msg("expected BAIL: %s", bad[i]);
    }
}

static void test_json_scan_bails_on_embedded_nul_and_too_many_keys(void **state)
{
    (void)state;
    struct json_top top;
    assert_int_equal(json_scan_top("{\"a\":\"\0\"}", 9, &top), JSON_SCAN_BAIL);
    assert_int_equal(json_scan_top("{}\0", 3, &top), JSON_SCAN_BAIL);
    char buf[512] = "{";
    for (int i = 0; i < 33; i++) {
        char kv[16];
        snprintf(kv, sizeof(kv), "%s\"k%d\":1", i ? "," : "", i);
        strcat(buf, kv);
    }
    strcat(buf, "}");
    assert_int_equal(json_scan_top(buf, strlen(buf), &top), JSON_SCAN_BAIL);
    /* 32 keys is still fine */
    char *cut = strstr(buf, ",\"k32\"");
    strcpy(cut, "}");
    assert_int_equal(json_scan_top(buf, strlen(buf), &top), JSON_SCAN_OK);
}

static void test_json_scan_extracts_fields(void **state)
{
    (void)state;
    const char *s = "{ \"type\":\"send\", \"x\":{\"type\":1}, \"to\":\"u3\", \"body\" : {\"t\": [1, 2.5]},"
                    "\"cid\":\"c1\", \"id\":7, \"room\":null }";
    struct json_top top;
    assert_int_equal(json_scan_top(s, strlen(s), &top), JSON_SCAN_OK);
    assert_true(top.type.present);
    assert_int_equal(top.type.kind, JSON_KIND_STRING);
    assert_int_equal(top.type.len, 6);
    assert_memory_equal(s + top.type.start, "\"send\"", 6);
    assert_int_equal(top.to.kind, JSON_KIND_STRING);
    assert_memory_equal(s + top.to.start, "\"u3\"", 4);
    assert_int_equal(top.body.kind, JSON_KIND_OBJECT);
    assert_int_equal(top.body.len, strlen("{\"t\": [1, 2.5]}"));
    assert_memory_equal(s + top.body.start, "{\"t\": [1, 2.5]}", top.body.len);
    assert_int_equal(top.body.reals, 1);
    assert_int_equal(top.id.kind, JSON_KIND_NUMBER);
    assert_int_equal(top.id.reals, 0);
    assert_memory_equal(s + top.id.start, "7", 1);
    assert_true(top.room.present);
    assert_int_equal(top.room.kind, JSON_KIND_NULL);
    assert_true(top.cid.present);

    assert_int_equal(json_scan_top("{\"body\":[true,false]}", 21, &top), JSON_SCAN_OK);
    assert_false(top.type.present);
    assert_false(top.to.present);
    assert_int_equal(top.body.kind, JSON_KIND_ARRAY);
    assert_int_equal(json_scan_top("{\"to\":true,\"room\":false,\"id\":1.0}", 33, &top),
                     JSON_SCAN_OK);
    assert_int_equal(top.to.kind, JSON_KIND_TRUE);
    assert_int_equal(top.room.kind, JSON_KIND_FALSE);
    assert_int_equal(top.id.reals, 1);
}

static void test_json_scan_string_decodes(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"\"\"", ""},
        {"\"abc\"", "abc"},
        {"\"a\\\"b\\\\c\\/d\"", "a\"b\\c/d"},
        {"\"\\u0041\\u00e9\\u20ac\"", "A\xc3\xa9\xe2\x82\xac"},
        {"\"h\xc3\xa9\"", "h\xc3\xa9"},
    };
    char out[32];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n = json_scan_string(cases[i].in, strlen(cases[i].in), out, sizeof(out));
        assert_int_equal(n, strlen(cases[i].out));
        assert_string_equal(out, cases[i].out);
    }
    static const char *bad[] = {
        "", "\"", "abc", "\"abc", "\"a\"b\"", "\"\\n\"", "\"\\t\"", "\"\\u001f\"", "\"\\u0000\"",
        "\"\\ud800\"", "\"\\u12\"", "\"\\uzzzz\"", "\"\\x\"", "\"\\\"", "\"a\tb\"",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (json_scan_string(bad[i], strlen(bad[i]), out, sizeof(out)) != -1)
            fail_msg("expected -1: %s", bad[i]);
    }
    /* cap counts the NUL */
    assert_int_equal(json_scan_string("\"abc\"", 5, out, 4), 3);
    assert_int_equal(json_scan_string("\"abc\"", 5, out, 3), -1);
    assert_int_equal(json_scan_string("\"\\u20ac\"", 8, out, 3), -1);
    assert_int_equal(json_scan_string("\"abc\"", 5, out, 0), -1);
}

static void test_json_scan_compact_drops_whitespace(void **state)
{
    (void)state;
    char out[64];
    const char *in = " { \"a b\" : [ 1 ,\t\"x\\\" y\" ] ,\n\"c\" : { } } ";
    const char *want = "{\"a b\":[1,\"x\\\" y\"],\"c\":{}}";
    assert_int_equal(json_scan_compact(in, strlen(in), out, sizeof(out)), strlen(want));
    assert_string_equal(out, want);
    assert_int_equal(json_scan_compact("\"\\\\\" ", 5, out, sizeof(out)), 4);
    assert_string_equal(out, "\"\\\\\"");
    assert_int_equal(json_scan_compact("[1, 2]", 6, out, 6), 5);
    assert_int_equal(json_scan_compact("[1, 2]", 6, out, 5), 0);
    assert_int_equal(json_scan_compact("12", 2, out, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_scan_accepts_valid),
        cmocka_unit_test(test_json_scan_bails_on_invalid_or_doubtful),
        cmocka_unit_test(test_json_scan_bails_on_embedded_nul_and_too_many_keys),
        cmocka_unit_test(test_json_scan_extracts_fields),
        cmocka_unit_test(test_json_scan_string_decodes),
        cmocka_unit_test(test_json_scan_compact_drops_whitespace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
