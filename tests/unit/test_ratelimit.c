/*
 * test_ratelimit.c -- the per-connection token bucket on a fake clock: full start, burst, lazy
 * refill, the cap, fractional tokens, a clock that steps back, and rate 0 meaning unlimited.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>

#include "proto/ratelimit.h"

#define T0 1700000000000LL /* epoch ms, as the server's clock */

/* Takes at now until one fails (at most limit); returns how many succeeded. */
static unsigned take_all(struct ratelimit *rl, int64_t now, uint64_t rate, uint64_t burst,
                         unsigned limit)
{
    unsigned n = 0;
    while (n < limit && ratelimit_take(rl, now, rate, burst))
        n++;
    return n;
}

static void test_ratelimit_zero_rate_is_unlimited(void **state)
{
    struct ratelimit rl = {0};

    (void)state;
    for (int i = 0; i < 100000; i++)
        assert_true(ratelimit_take(&rl, T0, 0, 0));
    /* and it leaves the bucket alone, so a later non-zero rate starts full */
    assert_int_equal(rl.at_ms, 0);
    assert_int_equal(take_all(&rl, T0, 5, 5, 100), 5);
}

static void test_ratelimit_starts_full_then_refuses(void **state)
{
    static const struct {
        uint64_t rate, burst;
    } cases[] = {{5, 5}, {50, 100}, {1, 1}, {1000, 3}, {3, 1000}};

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ratelimit rl = {0};
        assert_int_equal(take_all(&rl, T0, cases[i].rate, cases[i].burst, 100000), cases[i].burst);
        /* refused takes cost nothing and change nothing */
        assert_false(ratelimit_take(&rl, T0, cases[i].rate, cases[i].burst));
        assert_false(ratelimit_take(&rl, T0, cases[i].rate, cases[i].burst));
        assert_true(rl.tokens >= 0.0 && rl.tokens < 1.0);
    }
}

static void test_ratelimit_refills_at_rate(void **state)
{
    struct ratelimit rl = {0};

    (void)state;
    assert_int_equal(take_all(&rl, T0, 5, 5, 100), 5);
    /* 5/s = one token per 200 ms; 199 ms is not enough */
    assert_false(ratelimit_take(&rl, T0 + 199, 5, 5));
    assert_true(ratelimit_take(&rl, T0 + 200, 5, 5));
    assert_false(ratelimit_take(&rl, T0 + 200, 5, 5));
    /* one second later: 5 more, not 6 */
    assert_int_equal(take_all(&rl, T0 + 1200, 5, 5, 100), 5);
}

static void test_ratelimit_fractions_accumulate(void **state)
{
    struct ratelimit rl = {0};

    (void)state;
    assert_int_equal(take_all(&rl, T0, 3, 1, 100), 1);
    /* 3/s: a token every 333.3 ms; calls in between must not lose the partial token */
    for (int64_t t = T0 + 10; t < T0 + 333; t += 10)
        assert_false(ratelimit_take(&rl, t, 3, 1));
    assert_true(ratelimit_take(&rl, T0 + 334, 3, 1));
    /* sustained: over 10 s of polling every ms, exactly 30 (+/- 1 for the boundary) get through */
    unsigned ok = 0;
    for (int64_t t = T0 + 335; t < T0 + 335 + 10000; t++)
        ok += ratelimit_take(&rl, t, 3, 1);
    assert_in_range(ok, 29, 31);
}

static void test_ratelimit_capped_at_burst(void **state)
{
    struct ratelimit rl = {0};

    (void)state;
    assert_int_equal(take_all(&rl, T0, 50, 100, 1000), 100);
    /* an hour idle still buys only one burst */
    assert_int_equal(take_all(&rl, T0 + 3600 * 1000LL, 50, 100, 1000), 100);
    assert_true(rl.tokens < 1.0);
}

static void test_ratelimit_sustained_rate(void **state)
{
    struct ratelimit rl = {0};
    unsigned ok = 0;

    (void)state;
    /* A client hammering every ms for 10 s gets burst + rate * 10 messages through. */
    for (int64_t t = T0; t < T0 + 10000; t++)
        ok += take_all(&rl, t, 50, 100, 1000);
    assert_in_range(ok, 100 + 500 - 1, 100 + 500 + 1);
}

static void test_ratelimit_clock_backwards(void **state)
{
    struct ratelimit rl = {0};

    (void)state;
    assert_int_equal(take_all(&rl, T0, 5, 5, 100), 5);
    /* wall clock stepped back (NTP): no refill, no negative tokens, no crash */
    assert_false(ratelimit_take(&rl, T0 - 60000, 5, 5));
    assert_int_equal(rl.at_ms, T0);
    assert_true(rl.tokens >= 0.0);
    /* refill resumes from the newest time seen, not from the stepped-back one */
    assert_false(ratelimit_take(&rl, T0 + 100, 5, 5));
    assert_true(ratelimit_take(&rl, T0 + 200, 5, 5));
}

static void test_ratelimit_rate_change_applies(void **state)
{
    struct ratelimit rl = {0};

    (void)state;
    /* rate and burst come from the config on every call: a lower burst clamps stored tokens */
    assert_int_equal(take_all(&rl, T0, 10, 10, 1), 1);
    assert_int_equal(take_all(&rl, T0 + 1, 10, 2, 100), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ratelimit_zero_rate_is_unlimited),
        cmocka_unit_test(test_ratelimit_starts_full_then_refuses),
        cmocka_unit_test(test_ratelimit_refills_at_rate),
        cmocka_unit_test(test_ratelimit_fractions_accumulate),
        cmocka_unit_test(test_ratelimit_capped_at_burst),
        cmocka_unit_test(test_ratelimit_sustained_rate),
        cmocka_unit_test(test_ratelimit_clock_backwards),
        cmocka_unit_test(test_ratelimit_rate_change_applies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
