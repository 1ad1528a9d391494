/*
 * test_cidr.c -- trusted_proxies lists: parsing, error messages, IPv4/IPv6/mapped matching.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "base/cidr.h"

static void test_cidr_parse_list(void **state)
{
    struct cidr_list l;
    char err[128] = "";

    (void)state;
    assert_int_equal(cidr_list_parse(&l, "127.0.0.1/32, 10.0.0.0/8, ::1,fd00::/8\t192.168.1.7", err,
                                     sizeof(err)),
                     0);
    assert_int_equal(l.n, 5);
    assert_int_equal(l.items[0].net.family, 4);
    assert_int_equal(l.items[0].bits, 32);
    assert_int_equal(l.items[1].bits, 8);
    assert_int_equal(l.items[2].net.family, 6);
    assert_int_equal(l.items[2].bits, 128); /* bare address = host route */
    assert_int_equal(l.items[3].bits, 8);
    assert_int_equal(l.items[4].bits, 32);
}

static void test_cidr_parse_empty(void **state)
{
    struct cidr_list l;

    (void)state;
    assert_int_equal(cidr_list_parse(&l, "", NULL, 0), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(cidr_list_parse(&l, " , ,, ", NULL, 0), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(cidr_list_parse(&l, NULL, NULL, 0), 0);
    assert_int_equal(l.n, 0);
    assert_false(cidr_list_match(&l, "127.0.0.1"));
}

static void test_cidr_parse_errors(void **state)
{
    static const struct {
        const char *text;
        const char *named; /* must appear in the error message */
    } cases[] = {
        {"10.0.0.0/8, 300.1.1.1", "\"300.1.1.1\""},
        {"10.0.0.0/33", "\"10.0.0.0/33\""},
        {"::1/129", "\"::1/129\""},
        {"10.0.0.0/", "\"10.0.0.0/\""},
        {"10.0.0.0/x", "\"10.0.0.0/x\""},
        {"10.0.0.0/-1", "\"10.0.0.0/-1\""},
        {"10.0.0.0/0008", "\"10.0.0.0/0008\""},
        {"/8", "\"/8\""},
        {"localhost", "\"localhost\""},
        {"10.0.0", "\"10.0.0\""},
        {"fe80::1%eth0", "\"fe80::1%eth0\""},
        {"1.2.3.4:80", "\"1.2.3.4:80\""},
        {"::ffff:10.0.0.0/95", "\"::ffff:10.0.0.0/95\""},
        {"10.0.0.1;10.0.0.2", "\"10.0.0.1;10.0.0.2\""},
    };
    struct cidr_list l;
    char err[128];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        assert_int_equal(cidr_list_parse(&l, cases[i].text, err, sizeof(err)), -1);
        assert_int_equal(l.n, 0);
        if (strstr(err, cases[i].named) == NULL)
            fail_msg("case %zu: \"%s\" not named in \"%s\"", i, cases[i].named, err);
    }
    /* a NULL err buffer is allowed */
    assert_int_equal(cidr_list_parse(&l, "nope", NULL, 0), -1);
}

static void test_cidr_parse_long_entry_truncated(void **state)
{
    char text[300], err[128];
    struct cidr_list l;

    (void)state;
    memset(text, 'a', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    assert_int_equal(cidr_list_parse(&l, text, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "aaaa..."));
    assert_true(strlen(err) < sizeof(err) - 1);
}

static void test_cidr_parse_too_many(void **state)
{
    char text[CIDR_MAX * 16 + 32] = "";
    char err[128];
    struct cidr_list l;

    (void)state;
    for (int i = 0; i < CIDR_MAX; i++) {
        char one[24];
        snprintf(one, sizeof(one), "10.0.0.%d ", i);
        strcat(text, one);
    }
    assert_int_equal(cidr_list_parse(&l, text, err, sizeof(err)), 0);
    assert_int_equal(l.n, CIDR_MAX);
    strcat(text, "10.9.9.9");
    assert_int_equal(cidr_list_parse(&l, text, err, sizeof(err)), -1);
    assert_int_equal(l.n, 0);
    assert_non_null(strstr(err, "too many"));
    assert_non_null(strstr(err, "10.9.9.9"));
}

static void test_cidr_match_v4(void **state)
{
    struct cidr_list l;

    (void)state;
    assert_int_equal(cidr_list_parse(&l, "127.0.0.1, 10.0.0.0/8, 192.168.4.0/22, 172.16.5.9/12", NULL,
                                     0),
                     0);
    assert_true(cidr_list_match(&l, "127.0.0.1"));
    assert_false(cidr_list_match(&l, "127.0.0.2"));
    assert_true(cidr_list_match(&l, "10.0.0.0"));
    assert_true(cidr_list_match(&l, "10.255.255.255"));
    assert_false(cidr_list_match(&l, "11.0.0.0"));
    assert_false(cidr_list_match(&l, "9.255.255.255"));
    assert_true(cidr_list_match(&l, "192.168.4.0"));
    assert_true(cidr_list_match(&l, "192.168.7.255"));
    assert_false(cidr_list_match(&l, "192.168.8.0"));
    assert_false(cidr_list_match(&l, "192.168.3.255"));
    /* host bits in the entry are ignored: 172.16.0.0/12 */
    assert_true(cidr_list_match(&l, "172.16.0.1"));
    assert_true(cidr_list_match(&l, "172.31.255.254"));
    assert_false(cidr_list_match(&l, "172.32.0.0"));
    /* not addresses */
    assert_false(cidr_list_match(&l, NULL));
    assert_false(cidr_list_match(&l, ""));
    assert_false(cidr_list_match(&l, "10.0.0.1:80"));
    assert_false(cidr_list_match(&l, "10.0.0.1 "));
    /* IPv6 text never matches IPv4 entries unless it is mapped */
    assert_false(cidr_list_match(&l, "::1"));
    assert_false(cidr_list_match(&l, "::a00:1")); /* IPv4-compatible form of 10.0.0.1 */
}

static void test_cidr_match_v6(void **state)
{
    struct cidr_list l;

    (void)state;
    assert_int_equal(cidr_list_parse(&l, "::1, fd00::/8, 2001:db8:abcd::/49", NULL, 0), 0);
    assert_true(cidr_list_match(&l, "::1"));
    assert_true(cidr_list_match(&l, "0:0:0:0:0:0:0:1"));
    assert_true(cidr_list_match(&l, "[::1]"));
    assert_false(cidr_list_match(&l, "::2"));
    assert_true(cidr_list_match(&l, "fd12:3456::1"));
    assert_true(cidr_list_match(&l, "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    assert_false(cidr_list_match(&l, "fc00::1"));
    assert_false(cidr_list_match(&l, "fe00::1"));
    assert_true(cidr_list_match(&l, "2001:db8:abcd:7fff::1"));
    assert_false(cidr_list_match(&l, "2001:db8:abcd:8000::1"));
    /* IPv4 never matches IPv6 entries */
    assert_false(cidr_list_match(&l, "127.0.0.1"));
    assert_false(cidr_list_match(&l, "::ffff:127.0.0.1"));
}

static void test_cidr_match_zero_prefix(void **state)
{
    struct cidr_list l;

    (void)state;
    assert_int_equal(cidr_list_parse(&l, "0.0.0.0/0", NULL, 0), 0);
    assert_true(cidr_list_match(&l, "1.2.3.4"));
    assert_true(cidr_list_match(&l, "255.255.255.255"));
    assert_false(cidr_list_match(&l, "2001:db8::1"));
    assert_int_equal(cidr_list_parse(&l, "::/0", NULL, 0), 0);
    assert_true(cidr_list_match(&l, "2001:db8::1"));
    assert_false(cidr_list_match(&l, "1.2.3.4"));
}

static void test_cidr_match_mapped(void **state)
{
    struct cidr_list l;

    (void)state;
    assert_int_equal(cidr_list_parse(&l, "10.0.0.0/8, 127.0.0.1", NULL, 0), 0);
    assert_true(cidr_list_match(&l, "::ffff:10.1.2.3"));
    assert_true(cidr_list_match(&l, "::FFFF:127.0.0.1"));
    assert_true(cidr_list_match(&l, "::ffff:7f00:1"));
    assert_false(cidr_list_match(&l, "::ffff:11.1.2.3"));
    assert_false(cidr_list_match(&l, "::ffff:127.0.0.2"));

    /* a mapped entry is the IPv4 range it maps; its prefix counts the 96 mapped bits */
    assert_int_equal(cidr_list_parse(&l, "::ffff:192.168.0.0/112, ::ffff:10.0.0.1", NULL, 0), 0);
    assert_int_equal(l.items[0].net.family, 4);
    assert_int_equal(l.items[0].bits, 16);
    assert_int_equal(l.items[1].bits, 32);
    assert_true(cidr_list_match(&l, "192.168.200.1"));
    assert_true(cidr_list_match(&l, "::ffff:192.168.200.1"));
    assert_false(cidr_list_match(&l, "192.169.0.1"));
    assert_true(cidr_list_match(&l, "10.0.0.1"));
}

static void test_cidr_addr_parse_format(void **state)
{
    static const struct {
        const char *in;
        int family; /* 0 = invalid */
        const char *out;
    } cases[] = {
        {"1.2.3.4", 4, "1.2.3.4"},
        {"::ffff:1.2.3.4", 4, "1.2.3.4"},
        {"2001:DB8:0:0::1", 6, "2001:db8::1"},
        {"[::1]", 6, "::1"},
        {"[1.2.3.4]", 4, "1.2.3.4"},
        {"[::1", 0, NULL},
        {"", 0, NULL},
        {"[]", 0, NULL},
        {"1.2.3.4.5", 0, NULL},
        {"01.2.3.4", 0, NULL},
        {"1.2.3.4\n", 0, NULL},
        {"unix:/run/x", 0, NULL},
        {"0000:0000:0000:0000:0000:0000:0000:0000:0001", 0, NULL}, /* too long for the buffer */
    };
    struct cidr_addr a;
    char out[CIDR_ADDR_STRLEN];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = cidr_addr_parse(cases[i].in, strlen(cases[i].in), &a);
        if (cases[i].family == 0) {
            if (rc != -1)
                fail_msg("case %zu \"%s\" accepted", i, cases[i].in);
            continue;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(a.family, cases[i].family);
        assert_int_equal(cidr_addr_format(&a, out, sizeof(out)), 0);
        assert_string_equal(out, cases[i].out);
    }
    assert_int_equal(cidr_addr_parse(NULL, 0, &a), -1);
    /* length-delimited: trailing bytes past len are not read */
    assert_int_equal(cidr_addr_parse("10.0.0.1,junk", 8, &a), 0);
    assert_int_equal(cidr_addr_format(&a, out, sizeof(out)), 0);
    assert_string_equal(out, "10.0.0.1");
    /* output buffer too small */
    assert_int_equal(cidr_addr_format(&a, out, 4), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr_parse_list),
        cmocka_unit_test(test_cidr_parse_empty),
        cmocka_unit_test(test_cidr_parse_errors),
        cmocka_unit_test(test_cidr_parse_long_entry_truncated),
        cmocka_unit_test(test_cidr_parse_too_many),
        cmocka_unit_test(test_cidr_match_v4),
        cmocka_unit_test(test_cidr_match_v6),
        cmocka_unit_test(test_cidr_match_zero_prefix),
        cmocka_unit_test(test_cidr_match_mapped),
        cmocka_unit_test(test_cidr_addr_parse_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
