/*
 * test_gate.c -- the store fiber (net/gate.c) on a real event base, with a socket pair standing in
 * for the database's socket: an entry that waits parks while the loop serves other events, entries
 * made meanwhile run after it in order, code on the fiber calls straight through, a wait times
 * out, gate_settle finishes the work from outside, and queued entries can be cancelled.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <event2/event.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/gate.h"

struct fx {
    struct event_base *base;
    struct gate *g;
    int sv[2];       /* sv[0]: the "database" socket the fiber waits on; sv[1]: the other end */
    char log[256];   /* what ran, in order */
    int wait_result; /* what the last gate_wait returned */
    int wait_ms;     /* the bound the waiting entry uses */
};

static void note(struct fx *f, const char *what)
{
    strncat(f->log, what, sizeof(f->log) - strlen(f->log) - 1);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f->sv), 0);
    f->g = gate_new(f->base, NULL);
    assert_non_null(f->g);
    f->wait_ms = 2000;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    gate_free(f->g);
    close(f->sv[0]);
    close(f->sv[1]);
    event_base_free(f->base);
    free(f);
    return 0;
}

/* An entry that waits for the "database" to answer, as a store call on PostgreSQL does. */
static void waiter(void *arg)
{
    struct fx *f = arg;
    note(f, "A<");
    f->wait_result = gate_wait(f->g, f->sv[0], POLLIN, f->wait_ms);
    if (f->wait_result == 1) {
        char c;
        assert_int_equal(read(f->sv[0], &c, 1), 1);
    }
    note(f, "A>");
}

static void second(void *arg)
{
    struct fx *f = arg;
    note(f, "B");
    assert_true(gate_in_fiber(f->g));
    event_base_loopbreak(f->base);
}

static void third(void *arg)
{
    note(arg, "C");
}

/* Run on the fiber, it calls C straight through (no queueing: it is on the fiber already). */
static void nesting(void *arg)
{
    struct fx *f = arg;
    note(f, "N<");
    assert_true(gate_call(f->g, third, f));
    note(f, "N>");
}

/* Another event of the loop (a connection being served) while the fiber is parked. */
static void other_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct fx *f = arg;
    assert_false(gate_in_fiber(f->g));
    note(f, "T");
    assert_int_equal(write(f->sv[1], "x", 1), 1); /* the database answers */
}

static void test_free_gate_runs_at_once(void **state)
{
    struct fx *f = *state;
    assert_false(gate_busy(f->g));
    assert_true(gate_call(f->g, third, f));
    assert_string_equal(f->log, "C");
    assert_false(gate_busy(f->g));
    assert_false(gate_in_fiber(f->g));
    struct gate_stats st;
    gate_stats(f->g, &st);
    assert_int_equal(st.calls, 1);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.parks, 0);
}

static void test_parked_entry_lets_the_loop_serve_and_keeps_order(void **state)
{
    struct fx *f = *state;
    assert_true(gate_call(f->g, waiter, f));
    /* It parked: the caller (the loop) got control back before the answer. */
    assert_string_equal(f->log, "A<");
    assert_true(gate_busy(f->g));
    assert_true(gate_call(f->g, second, f));
    assert_true(gate_queued(f->g, second, f));
    assert_string_equal(f->log, "A<"); /* B waits behind A */
    struct event *t = evtimer_new(f->base, other_event, f);
    struct timeval tv = {0, 10000};
    evtimer_add(t, &tv);
    event_base_dispatch(f->base);
    event_free(t);
    assert_string_equal(f->log, "A<TA>B");
    assert_int_equal(f->wait_result, 1);
    assert_false(gate_busy(f->g));
    struct gate_stats st;
    gate_stats(f->g, &st);
    assert_int_equal(st.calls, 2);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.parks, 1);
    assert_int_equal(st.sync_waits, 0);
    assert_int_equal(st.queue_len, 0);
    assert_int_equal(st.queue_max, 1);
}

static void test_on_the_fiber_calls_go_straight_through(void **state)
{
    struct fx *f = *state;
    assert_true(gate_call(f->g, nesting, f));
    assert_string_equal(f->log, "N<CN>");
}

static void test_wait_times_out(void **state)
{
    struct fx *f = *state;
    f->wait_ms = 30;
    assert_true(gate_call(f->g, waiter, f));
    assert_true(gate_call(f->g, second, f));
    event_base_dispatch(f->base);
    assert_string_equal(f->log, "A<A>B");
    assert_int_equal(f->wait_result, 0);
}

static void test_settle_finishes_from_outside(void **state)
{
    struct fx *f = *state;
    assert_true(gate_call(f->g, waiter, f));
    assert_true(gate_call(f->g, third, f));
    assert_int_equal(write(f->sv[1], "x", 1), 1);
    gate_settle(f->g); /* no loop: polls the parked wait's socket, then runs the queue */
    assert_string_equal(f->log, "A<A>C");
    assert_int_equal(f->wait_result, 1);
    assert_false(gate_busy(f->g));
}

static void test_wait_outside_the_fiber_polls_and_counts(void **state)
{
    struct fx *f = *state;
    assert_int_equal(write(f->sv[1], "x", 1), 1);
    assert_int_equal(gate_wait(f->g, f->sv[0], POLLIN, 1000), 1);
    struct gate_stats st;
    gate_stats(f->g, &st);
    assert_int_equal(st.sync_waits, 1);
    assert_int_equal(st.parks, 0);
}

static void test_cancel_forgets_queued_calls(void **state)
{
    struct fx *f = *state;
    assert_true(gate_call(f->g, waiter, f));
    assert_true(gate_call(f->g, third, f));
    assert_true(gate_call(f->g, third, f));
    assert_true(gate_call(f->g, second, f));
    gate_cancel(f->g, third, f);
    assert_false(gate_queued(f->g, third, f));
    assert_true(gate_queued(f->g, second, f));
    assert_int_equal(write(f->sv[1], "x", 1), 1);
    event_base_dispatch(f->base);
    assert_string_equal(f->log, "A<A>B");
    struct gate_stats st;
    gate_stats(f->g, &st);
    assert_int_equal(st.queue_len, 0);
}

static void test_call_first_goes_ahead_of_the_queue(void **state)
{
    struct fx *f = *state;
    assert_true(gate_call(f->g, waiter, f));
    assert_true(gate_call(f->g, second, f));  /* B: queued */
    assert_true(gate_call_first(f->g, third, f)); /* C: ahead of B, not of the parked A */
    assert_int_equal(write(f->sv[1], "x", 1), 1);
    event_base_dispatch(f->base);
    assert_string_equal(f->log, "A<A>CB");
}

/* Deep stacks run on the fiber (application code with JSON, libpq underneath). */
static void deep(void *arg)
{
    volatile char big[256 * 1024];
    memset((char *)big, 1, sizeof(big));
    note(arg, big[sizeof(big) - 1] == 1 ? "D" : "?");
}

static void test_fiber_stack_takes_deep_calls(void **state)
{
    struct fx *f = *state;
    assert_true(gate_call(f->g, deep, f));
    assert_string_equal(f->log, "D");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_free_gate_runs_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parked_entry_lets_the_loop_serve_and_keeps_order,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_on_the_fiber_calls_go_straight_through, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_wait_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_finishes_from_outside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_outside_the_fiber_polls_and_counts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_forgets_queued_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_first_goes_ahead_of_the_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fiber_stack_takes_deep_calls, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
