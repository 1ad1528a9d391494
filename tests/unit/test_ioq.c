/*
 * test_ioq.c -- the batched reads and sends (net/ioq.c) on real socket pairs and a real event base:
 * queued sends go out in one submission with their done callbacks, a full socket hands back all of
 * an entry and a small one the rest, a cancelled entry is neither sent nor reported, a referenced
 * entry is let go once, copies that overflow the copy memory flush in order, queued reads bring
 * data, end of stream and "nothing there", reads go before the sends their owners queue, a lone
 * read or send is a plain call, and the queue's event flushes at the end of a loop pass. Skipped, with the reason, where the kernel
 * offers no io_uring (the server then sends with send(), covered by the integration suite).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/ioq.h"

#define NPAIRS 4
/* Owners are small integers, + 1: a NULL owner means "none" to the queue. */
#define OWN(i) ((void *)(intptr_t)((i) + 1))
#define WHO(p) ((int)(intptr_t)(p) - 1)

struct done_rec {
    int owner;
    size_t rest_len;
    int err;
    char rest[8];
};

struct fx {
    struct event_base *base;
    struct ioq *q;
    int sv[NPAIRS][2]; /* [i][0]: the queue's side; [i][1]: the peer */
    struct done_rec done[64];
    int ndone;
    char order[256]; /* what happened, in order */
    int unrefs;
};

static struct fx *the_fx; /* the callbacks' fixture: owners are small integers */

static void note(const char *what)
{
    strncat(the_fx->order, what, sizeof(the_fx->order) - strlen(the_fx->order) - 1);
}

static void on_done(void *owner, const uint8_t *rest, size_t rest_len, int err)
{
    struct done_rec *d = &the_fx->done[the_fx->ndone++];
    d->owner = WHO(owner);
    d->rest_len = rest_len;
    d->err = err;
    memcpy(d->rest, rest, rest_len < sizeof(d->rest) ? rest_len : sizeof(d->rest));
    char buf[16];
    snprintf(buf, sizeof(buf), "s%d ", d->owner);
    note(buf);
}

static void on_recv(void *owner, uint8_t *data, long n)
{
    int i = WHO(owner);
    char buf[64];
    if (n > 0)
        snprintf(buf, sizeof(buf), "r%d:%.*s ", i, (int)n, (const char *)data);
    else
        snprintf(buf, sizeof(buf), "r%d:%ld ", i, n);
    note(buf);
    /* a reader answers within the batch: its reply goes with this flush's sends */
    if (n > 0 && i >= 100)
        ioq_copy(the_fx->q, the_fx->sv[i - 100][0], "re", 2, OWN(i - 100));
}

static int setup_with(void **state, size_t copy_bytes)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    the_fx = f;
    f->base = event_base_new();
    assert_non_null(f->base);
    for (int i = 0; i < NPAIRS; i++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f->sv[i]), 0);
        fcntl(f->sv[i][0], F_SETFL, O_NONBLOCK);
        fcntl(f->sv[i][1], F_SETFL, O_NONBLOCK);
    }
    char why[128] = "";
    f->q = ioq_new(f->base, 8, copy_bytes, 64, on_done, on_recv, why, sizeof(why));
    *state = f;
    if (!f->q) {
        print_message("io_uring not available here (%s): skipped\n", why);
        return 0;
    }
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, 4096);
}

static int setup_small_copy(void **state)
{
    return setup_with(state, 8);
}

static int teardown(void **state)
{
    struct fx *f = *state;
    ioq_free(f->q);
    for (int i = 0; i < NPAIRS; i++) {
        close(f->sv[i][0]);
        close(f->sv[i][1]);
    }
    event_base_free(f->base);
    free(f);
    return 0;
}

#define NEED_RING(f)                                                                               \
    do {                                                                                           \
        if (!(f)->q)                                                                               \
            skip();                                                                                \
    } while (0)

static void expect_peer(struct fx *f, int i, const char *want)
{
    char buf[256];
    ssize_t n = recv(f->sv[i][1], buf, sizeof(buf), 0);
    assert_true(n >= 0);
    buf[n] = 0;
    assert_string_equal(buf, want);
}

static void test_sends_go_in_one_submission_with_their_done_calls(void **state)
{
    struct fx *f = *state;
    NEED_RING(f);
    uint64_t b0 = ioq_batches(f->q);
    for (int i = 0; i < NPAIRS; i++) {
        char msg[16];
        snprintf(msg, sizeof(msg), "m%d", i);
        int slot = ioq_copy(f->q, f->sv[i][0], msg, strlen(msg), OWN(i));
        assert_true(slot >= 0);
        assert_int_equal(ioq_len(f->q, slot), strlen(msg));
    }
    ioq_flush(f->q);
    assert_int_equal(ioq_batches(f->q) - b0, 1);
    assert_int_equal(f->ndone, NPAIRS);
    for (int i = 0; i < NPAIRS; i++) {
        assert_int_equal(f->done[i].owner, i);
        assert_int_equal(f->done[i].rest_len, 0);
        assert_int_equal(f->done[i].err, 0);
        char want[16];
        snprintf(want, sizeof(want), "m%d", i);
        expect_peer(f, i, want);
    }
}

static void test_a_full_socket_hands_back_the_entry(void **state)
{
    struct fx *f = *state;
    NEED_RING(f);
    static char fill[65536];
    while (send(f->sv[0][0], fill, sizeof(fill), MSG_DONTWAIT) > 0)
        ;
    assert_true(ioq_copy(f->q, f->sv[0][0], "abc", 3, OWN(7)) >= 0);
    ioq_flush(f->q); /* must not wait for the peer to read */
    assert_int_equal(f->ndone, 1);
    assert_int_equal(f->done[0].rest_len, 3);
    assert_int_equal(f->done[0].err, 0); /* a full socket is not an error */
    assert_memory_equal(f->done[0].rest, "abc", 3);
}

static void test_a_small_socket_takes_part_and_hands_back_the_rest(void **state)
{
    struct fx *f = *state;
    NEED_RING(f);
    int small = 4096;
    setsockopt(f->sv[1][0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    static uint8_t big[1 << 20];
    assert_true(ioq_ref(f->q, f->sv[1][0], big, sizeof(big), OWN(1), NULL, NULL) >= 0);
    ioq_flush(f->q);
    assert_int_equal(f->ndone, 1);
    assert_true(f->done[0].rest_len > 0 && f->done[0].rest_len < sizeof(big));
}

static void test_a_closed_peer_reports_the_error(void **state)
{
    struct fx *f = *state;
    NEED_RING(f);
    close(f->sv[2][1]);
    f->sv[2][1] = socket(AF_UNIX, SOCK_STREAM, 0); /* for teardown */
    assert_true(ioq_copy(f->q, f->sv[2][0], "x", 1, OWN(2)) >= 0);
    ioq_flush(f->q); /* MSG_NOSIGNAL: no SIGPIPE kills the test */
    assert_int_equal(f->ndone, 1);
    assert_int_equal(f->done[0].err, EPIPE);
    assert_int_equal(f->done[0].rest_len, 1);
}

static void unref_cb(void *ref)
{
    (void)ref;
    the_fx->unrefs++;
}

static void test_cancelled_entries_are_not_sent_and_refs_go_once(void **state)
{
    struct fx *f = *state;
    NEED_RING(f);
    int s0 = ioq_ref(f->q, f->sv[0][0], "aa", 2, OWN(0), unref_cb, NULL);
    int s1 = ioq_ref(f->q, f->sv[1][0], "bb", 2, OWN(1), unref_cb, NULL);
    assert_true(s0 >= 0 && s1 >= 0);
    ioq_cancel(f->q, s0);
    ioq_flush(f->q);
    assert_int_equal(f->ndone, 1);
    assert_int_equal(f->done[0].owner, 1);
    assert_int_equal(f->unrefs, 2);
    expect_peer(f, 1, "bb");
    char buf[8];
    assert_int_equal(recv(f->sv[0][1], buf, sizeof(buf), MSG_DONTWAIT), -1);
    assert_int_equal(errno, EAGAIN);
}

static void test_copies_that_overflow_flush_in_order(void **state)
{
    struct fx *f = *state; /* 8 bytes of copy memory */
    NEED_RING(f);
    assert_true(ioq_copy(f->q, f->sv[0][0], "12345", 5, OWN(0)) >= 0);
    assert_true(ioq_copy(f->q, f->sv[1][0], "67890", 5, OWN(1)) >= 0);
    assert_int_equal(f->ndone, 1); /* the first went to make room */
    assert_int_equal(ioq_copy(f->q, f->sv[2][0], "123456789", 9, OWN(2)), -1); /* never fits */
    ioq_flush(f->q);
    assert_string_equal(f->order, "s0 s1 ");
    expect_peer(f, 0, "12345");
    expect_peer(f, 1, "67890");
}

static void test_reads_bring_data_eof_and_nothing(void **state)
{
    struct fx *f = *state;
    NEED_RING(f);
    assert_int_equal(send(f->sv[0][1], "hello", 5, 0), 5);
    shutdown(f->sv[1][1], SHUT_WR);
    assert_true(ioq_recv(f->q, f->sv[0][0], OWN(0)) >= 0);
    assert_true(ioq_recv(f->q, f->sv[1][0], OWN(1)) >= 0);
    assert_true(ioq_recv(f->q, f->sv[2][0], OWN(2)) >= 0);
    int s3 = ioq_recv(f->q, f->sv[3][0], OWN(3));
    ioq_cancel_recv(f->q, s3);
    ioq_flush(f->q);
    assert_string_equal(f->order, "r0:hello r1:0 r2:-11 ");
    assert_int_equal(ioq_recvs(f->q), 3);
}

static void test_reads_go_before_the_replies_they_queue(void **state)
{
    struct fx *f = *state;
    NEED_RING(f);
    assert_int_equal(send(f->sv[0][1], "a", 1, 0), 1);
    assert_int_equal(send(f->sv[1][1], "b", 1, 0), 1);
    assert_true(ioq_recv(f->q, f->sv[0][0], OWN(100)) >= 0);
    assert_true(ioq_recv(f->q, f->sv[1][0], OWN(101)) >= 0);
    uint64_t b0 = ioq_batches(f->q);
    ioq_flush(f->q);
    assert_string_equal(f->order, "r100:a r101:b s0 s1 ");
    assert_int_equal(ioq_batches(f->q) - b0, 2); /* one for the reads, one for the replies */
    expect_peer(f, 0, "re");
    expect_peer(f, 1, "re");
}

static void test_a_lone_read_or_send_is_a_plain_call(void **state)
{
    struct fx *f = *state;
    NEED_RING(f);
    uint64_t b0 = ioq_batches(f->q), r0 = ioq_recvs(f->q), s0 = ioq_sends(f->q);
    assert_int_equal(send(f->sv[0][1], "solo", 4, 0), 4);
    assert_true(ioq_recv(f->q, f->sv[0][0], OWN(0)) >= 0);
    assert_true(ioq_copy(f->q, f->sv[1][0], "one", 3, OWN(1)) >= 0);
    ioq_flush(f->q);
    assert_string_equal(f->order, "r0:solo s1 ");
    expect_peer(f, 1, "one");
    /* one operation each way: no submission (the ring costs more than the call for one) */
    assert_int_equal(ioq_batches(f->q) - b0, 0);
    assert_int_equal(ioq_recvs(f->q) - r0, 1);
    assert_int_equal(ioq_sends(f->q) - s0, 1);
    /* cancelled entries do not count: one left of two is alone too */
    assert_true(ioq_copy(f->q, f->sv[2][0], "x", 1, OWN(2)) >= 0);
    int gone = ioq_copy(f->q, f->sv[3][0], "y", 1, OWN(3));
    ioq_cancel(f->q, gone);
    ioq_flush(f->q);
    assert_int_equal(ioq_batches(f->q) - b0, 0);
    expect_peer(f, 2, "x");
}

static void test_the_event_flushes_at_the_end_of_the_pass(void **state)
{
    struct fx *f = *state;
    NEED_RING(f);
    assert_true(ioq_copy(f->q, f->sv[0][0], "ev", 2, OWN(0)) >= 0);
    assert_int_equal(f->ndone, 0);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(f->ndone, 1);
    expect_peer(f, 0, "ev");
    /* nothing queued: the event is not left active (the loop would spin) */
    assert_int_equal(event_base_loop(f->base, EVLOOP_NONBLOCK), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sends_go_in_one_submission_with_their_done_calls,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_full_socket_hands_back_the_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_small_socket_takes_part_and_hands_back_the_rest,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_closed_peer_reports_the_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_entries_are_not_sent_and_refs_go_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_copies_that_overflow_flush_in_order, setup_small_copy,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reads_bring_data_eof_and_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reads_go_before_the_replies_they_queue, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_lone_read_or_send_is_a_plain_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_event_flushes_at_the_end_of_the_pass, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
