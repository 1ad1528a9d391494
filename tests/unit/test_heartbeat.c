/*
 * test_heartbeat.c -- the ping/pong policy on a fake clock: when a ping goes out, what answers it,
 * the exact moment a silent peer is declared dead, and the deadline conn.c is told to arm next.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>

#include "proto/heartbeat.h"

#define T0 1700000000000LL /* a realistic epoch-ms start: the server's clock is wall time */
#define IV 200             /* ping_interval as in the integration config */
#define TO 500             /* pong_timeout */
#define UNSET (-42)        /* sentinel: next_ms not written */

/* One tick from a given state: what the action, next deadline and resulting state must be. */
struct tick_case {
    const char *name;
    int64_t iv, to; /* ping_interval, pong_timeout */
    struct heartbeat_state in;
    int64_t now;
    enum heartbeat_action act;
    int64_t next; /* UNSET when the tick must not write it */
    struct heartbeat_state out;
};

static void test_heartbeat_tick_table(void **state)
{
    static const struct tick_case cases[] = {
        {"idle less than interval: wait until last_rx + interval", IV, TO,
         {T0, 0, false}, T0 + 50, HEARTBEAT_NONE, T0 + IV, {T0, 0, false}},
        {"timer fired early (now < last_rx): still wait for the idle deadline", IV, TO,
         {T0, 0, false}, T0 - 10, HEARTBEAT_NONE, T0 + IV, {T0, 0, false}},
        {"idle exactly interval: ping now, look again after the interval (< timeout)", IV, TO,
         {T0, 0, false}, T0 + IV, HEARTBEAT_PING, T0 + IV + IV, {T0, T0 + IV, true}},
        {"timeout shorter than interval (the defaults): look again at the timeout", 25000, 10000,
         {T0, 0, false}, T0 + 25000, HEARTBEAT_PING, T0 + 35000, {T0, T0 + 25000, true}},
        {"idle longer than interval (late timer): ping at now", IV, TO,
         {T0, 0, false}, T0 + 5000, HEARTBEAT_PING, T0 + 5000 + IV, {T0, T0 + 5000, true}},
        {"ping outstanding, no answer at the interval look: wait for ping_sent + timeout", IV, TO,
         {T0, T0 + IV, true}, T0 + IV + IV, HEARTBEAT_NONE, T0 + IV + TO, {T0, T0 + IV, true}},
        {"ping outstanding, one ms before timeout: not dead yet", IV, TO,
         {T0, T0 + IV, true}, T0 + IV + TO - 1, HEARTBEAT_NONE, T0 + IV + TO,
         {T0, T0 + IV, true}},
        {"ping outstanding, exactly timeout: dead", IV, TO,
         {T0, T0 + IV, true}, T0 + IV + TO, HEARTBEAT_TIMEOUT, UNSET, {T0, T0 + IV, true}},
        {"ping outstanding, long past timeout: dead", IV, TO,
         {T0, T0 + IV, true}, T0 + 60000, HEARTBEAT_TIMEOUT, UNSET, {T0, T0 + IV, true}},
        {"answered (frame after the ping), recent: back to the idle deadline", IV, TO,
         {T0 + IV + 30, T0 + IV, true}, T0 + IV + 40, HEARTBEAT_NONE, T0 + IV + 30 + IV,
         {T0 + IV + 30, T0 + IV, false}},
        {"answered in the same ms the ping went out counts as an answer", IV, TO,
         {T0 + IV, T0 + IV, true}, T0 + IV + 50, HEARTBEAT_NONE, T0 + IV + IV,
         {T0 + IV, T0 + IV, false}},
        {"answered long ago, idle again: a new ping, not a timeout", IV, TO,
         {T0 + IV + 10, T0 + IV, true}, T0 + 5000, HEARTBEAT_PING, T0 + 5000 + IV,
         {T0 + IV + 10, T0 + 5000, true}},
        {"frame one ms before the ping does not answer it", IV, TO,
         {T0 + IV - 1, T0 + IV, true}, T0 + IV + TO, HEARTBEAT_TIMEOUT, UNSET,
         {T0 + IV - 1, T0 + IV, true}},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct tick_case *tc = &cases[i];
        struct heartbeat_state st = tc->in;
        int64_t next = UNSET;
        enum heartbeat_action act = heartbeat_tick(&st, tc->now, tc->iv, tc->to, &next);
        print_message("case %zu: %s\n", i, tc->name);
        assert_int_equal(act, tc->act);
        assert_int_equal(next, tc->next);
        assert_int_equal(st.last_rx_ms, tc->out.last_rx_ms);
        assert_int_equal(st.ping_sent_ms, tc->out.ping_sent_ms);
        assert_int_equal(st.ping_outstanding, tc->out.ping_outstanding);
    }
}

/*
 * Drive the policy the way conn.c does: fire exactly at each returned deadline. peer_answers: the
 * peer sends a pong pong_delay ms after each ping (or never when < 0). Returns the time of TIMEOUT,
 * or -1 if the peer is still alive at until. Counts pings in *pings.
 */
static int64_t simulate_with(int64_t iv, int64_t to, int64_t last_rx, int64_t pong_delay,
                             int64_t until, int *pings)
{
    struct heartbeat_state st = {last_rx, 0, false};
    int64_t now = last_rx + iv; /* conn.c arms the first tick one interval after the upgrade */
    int64_t pong_at = -1;
    *pings = 0;
    while (now <= until) {
        if (pong_at >= 0 && pong_at <= now) {
            st.last_rx_ms = pong_at;
            pong_at = -1;
        }
        int64_t next = UNSET;
        enum heartbeat_action act = heartbeat_tick(&st, now, iv, to, &next);
        if (act == HEARTBEAT_TIMEOUT)
            return now;
        assert_true(next > now); /* the timer always moves forward: no busy loop */
        if (act == HEARTBEAT_PING) {
            (*pings)++;
            if (pong_delay >= 0)
                pong_at = now + pong_delay;
        }
        /* A pong arriving before the next deadline is seen by the tick at that deadline. */
        now = next;
    }
    return -1;
}

static int64_t simulate(int64_t last_rx, int64_t pong_delay, int64_t until, int *pings)
{
    return simulate_with(IV, TO, last_rx, pong_delay, until, pings);
}

static void test_heartbeat_silent_peer_dies_at_interval_plus_timeout(void **state)
{
    int pings;

    (void)state;
    assert_int_equal(simulate(T0, -1, T0 + 60000, &pings), T0 + IV + TO);
    assert_int_equal(pings, 1);
}

static void test_heartbeat_answering_peer_lives(void **state)
{
    static const int64_t delays[] = {0, 1, 100, TO - 1};
    int pings;

    (void)state;
    for (size_t i = 0; i < sizeof(delays) / sizeof(delays[0]); i++) {
        assert_int_equal(simulate(T0, delays[i], T0 + 60000, &pings), -1);
        /* one ping per interval of silence after each answer, give or take the answer delay */
        assert_true(pings >= 60000 / (IV + TO) - 1);
        assert_true(pings <= 60000 / IV + 1);
    }
}

static void test_heartbeat_prompt_answers_ping_every_interval(void **state)
{
    static const struct {
        int64_t iv, to;
    } cfgs[] = {{IV, TO}, {25000, 10000}, {1000, 1000}};
    int pings;

    (void)state;
    /* A peer answering within 1 ms is pinged once per interval of silence, whichever of interval
     * and timeout is longer: an idle proxy in between sees traffic every ping_interval. */
    for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
        int64_t span = 1000 * cfgs[i].iv;
        assert_int_equal(simulate_with(cfgs[i].iv, cfgs[i].to, T0, 1, T0 + span, &pings), -1);
        assert_in_range(pings, span / (cfgs[i].iv + 1) - 1, span / cfgs[i].iv);
    }
}

static void test_heartbeat_pong_deadline_is_inclusive(void **state)
{
    int pings;

    (void)state;
    /* A pong read in the same ms the timeout fires still counts (reads run before the timer check);
     * one ms later the peer is dead, whatever arrives afterwards. */
    assert_int_equal(simulate(T0, TO, T0 + 60000, &pings), -1);
    assert_int_equal(simulate(T0, TO + 1, T0 + 60000, &pings), T0 + IV + TO);
    assert_int_equal(pings, 1);
    assert_int_equal(simulate(T0, TO + 500, T0 + 60000, &pings), T0 + IV + TO);
}

static void test_heartbeat_chatty_peer_never_pinged(void **state)
{
    struct heartbeat_state st = {T0, 0, false};
    int64_t now = T0 + IV;

    (void)state;
    /* The peer sends a frame every IV/2 ms; every tick lands before its idle deadline. */
    for (int i = 0; i < 1000; i++) {
        st.last_rx_ms = now - IV / 2;
        int64_t next = UNSET;
        assert_int_equal(heartbeat_tick(&st, now, IV, TO, &next), HEARTBEAT_NONE);
        assert_int_equal(next, st.last_rx_ms + IV);
        assert_false(st.ping_outstanding);
        now = next;
    }
}

static void test_heartbeat_zero_timeout_dies_on_next_tick(void **state)
{
    struct heartbeat_state st = {T0, 0, false};
    int64_t next = UNSET;

    (void)state;
    /* pong_timeout 0 is a degenerate config: the ping re-arms the timer at once, which gives up. */
    assert_int_equal(heartbeat_tick(&st, T0 + IV, IV, 0, &next), HEARTBEAT_PING);
    assert_int_equal(next, T0 + IV);
    assert_int_equal(heartbeat_tick(&st, next, IV, 0, &next), HEARTBEAT_TIMEOUT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heartbeat_tick_table),
        cmocka_unit_test(test_heartbeat_silent_peer_dies_at_interval_plus_timeout),
        cmocka_unit_test(test_heartbeat_answering_peer_lives),
        cmocka_unit_test(test_heartbeat_prompt_answers_ping_every_interval),
        cmocka_unit_test(test_heartbeat_pong_deadline_is_inclusive),
        cmocka_unit_test(test_heartbeat_chatty_peer_never_pinged),
        cmocka_unit_test(test_heartbeat_zero_timeout_dies_on_next_tick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
