/*
 * ioq.c -- the reads and the sends of one loop pass in one io_uring submission each (ioq.h).
 *
 * Every send is IORING_OP_SEND with MSG_DONTWAIT | MSG_NOSIGNAL: the kernel tries it at once, during
 * the submission, and answers -EAGAIN instead of parking it when the socket is full (checked at
 * start: ioq_new refuses a kernel that parks). So every answer is in when io_uring_enter returns,
 * the loop never waits on a socket here, and no buffer stays with the kernel after the flush.
 * Reads are IORING_OP_RECV with MSG_DONTWAIT the same way, into one buffer per read of a chunk.
 */
#include "net/ioq.h"

#include <errno.h>
#include <stddef.h>
#include <event2/event.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"

struct ioq_entry {
    int fd; /* -1: cancelled */
    int res;
    const uint8_t *data;
    size_t len;
    void *owner;
    void (*unref)(void *ref);
    void *ref;
};

struct ioq_rentry {
    int fd; /* -1: cancelled */
    int res;
    void *owner;
};

struct ioq {
    struct io_uring ring;
    unsigned ring_entries;
    struct event *ev; /* the flush at the end of the pass */
    ioq_done_fn *done;
    struct ioq_entry *e;
    size_t n, cap;
    uint8_t *copy; /* copied entries' bytes; allocated with the queue, touched as used */
    size_t used, copy_cap;
    struct ioq_rentry *r; /* reads queued this pass */
    size_t rn, rcap;
    uint8_t *rbuf; /* ring_entries x rsize */
    size_t rsize;
    ioq_recv_fn *on_recv;
    bool flushing; /* sending: no entry may be added */
    bool reading;  /* handing over read results: no read may be added */
    uint64_t batches, sends, recvs;
};

static void ioq_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ioq_flush(arg);
}

/* One non-blocking send through the ring; its result, or -ETIME when no answer came within 1 s. */
static int probe_send(struct io_uring *r, int fd, const void *p, size_t len)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(r);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_send(sqe, fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (io_uring_submit(r) != 1)
        return -EIO;
    struct __kernel_timespec ts = {.tv_sec = 1};
    struct io_uring_cqe *cqe;
    int rc = io_uring_wait_cqe_timeout(r, &cqe, &ts);
    if (rc < 0)
        return rc;
    rc = cqe->res;
    io_uring_cqe_seen(r, cqe);
    return rc;
}

/*
 * Does this kernel answer a non-blocking send on a full socket with -EAGAIN (5.x+ honours
 * MSG_DONTWAIT) rather than parking it until the socket drains? A parked send would make the flush
 * wait for a slow client. 0 when it answers, else why not.
 */
static const char *probe_dontwait(struct io_uring *r)
{
    int sv[2];
    static const uint8_t fill[65536];
    const char *why = NULL;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return "socketpair failed";
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    for (int i = 0; i < 64 && !why; i++) {
        int rc = probe_send(r, sv[0], fill, sizeof(fill));
        if (rc == -EAGAIN)
            break;
        if (rc == -ETIME)
            why = "the kernel parks a non-blocking send on a full socket";
        else if (rc < 0)
            why = strerror(-rc);
        else if (i == 63)
            why = "a socket pair never filled";
    }
    if (why) {
        /* A parked send completes (with an error) once the socket closes; collect it. */
        close(sv[1]);
        struct __kernel_timespec ts = {.tv_sec = 1};
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe_timeout(r, &cqe, &ts) == 0)
            io_uring_cqe_seen(r, cqe);
        close(sv[0]);
        return why;
    }
    close(sv[0]);
    close(sv[1]);
    return NULL;
}

struct ioq *ioq_new(struct event_base *base, unsigned ring_entries, size_t copy_bytes,
                    size_t recv_size, ioq_done_fn *done, ioq_recv_fn *on_recv, char *why,
                    size_t why_len)
{
    struct ioq *q = calloc(1, sizeof(*q));
    if (!q) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    /*
     * SUBMIT_ALL (5.18+) is required: without it a submission stops at an entry that fails early,
     * and the ones after it would stay in the ring. Fewer kernel-side task runs (5.19+) and one
     * submitter (6.0+) are taken where the kernel has them.
     */
    int rc = io_uring_queue_init(ring_entries, &q->ring,
                                 IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
                                     IORING_SETUP_SINGLE_ISSUER);
    if (rc == -EINVAL)
        rc = io_uring_queue_init(ring_entries, &q->ring, IORING_SETUP_SUBMIT_ALL);
    if (rc == -EINVAL) {
        snprintf(why, why_len, "io_uring_setup: the kernel is older than 5.18 (no SUBMIT_ALL)");
        free(q);
        return NULL;
    }
    if (rc < 0) {
        snprintf(why, why_len, "io_uring_setup: %s", strerror(-rc));
        free(q);
        return NULL;
    }
    const char *bad = probe_dontwait(&q->ring);
    if (bad) {
        snprintf(why, why_len, "%s", bad);
        io_uring_queue_exit(&q->ring);
        free(q);
        return NULL;
    }
    q->ring_entries = ring_entries;
    q->done = done;
    q->cap = ring_entries;
    q->copy_cap = copy_bytes;
    q->e = malloc(q->cap * sizeof(*q->e));
    q->copy = malloc(copy_bytes);
    q->on_recv = on_recv;
    q->rsize = recv_size;
    q->rcap = ring_entries;
    q->r = malloc(q->rcap * sizeof(*q->r));
    q->rbuf = malloc((size_t)ring_entries * recv_size);
    q->ev = event_new(base, -1, 0, ioq_cb, q);
    if (!q->e || !q->copy || !q->r || !q->rbuf || !q->ev) {
        snprintf(why, why_len, "out of memory");
        ioq_free(q);
        return NULL;
    }
    return q;
}

void ioq_free(struct ioq *q)
{
    if (!q)
        return;
    if (q->ev)
        ioq_flush(q);
    if (q->ev)
        event_free(q->ev);
    io_uring_queue_exit(&q->ring);
    free(q->e);
    free(q->copy);
    free(q->r);
    free(q->rbuf);
    free(q);
}

/* Room for one more of the n entries of size each at *arr (doubled, at most 65536); false: none. */
static bool room_for_one(void **arr, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return true;
    size_t grown_cap = *cap * 2;
    void *grown = grown_cap <= 65536 ? realloc(*arr, grown_cap * size) : NULL;
    if (!grown)
        return false;
    *arr = grown;
    *cap = grown_cap;
    return true;
}

static int add_entry(struct ioq *q, int fd, const uint8_t *data, size_t len, void *owner,
                     void (*unref)(void *ref), void *ref)
{
    if (!room_for_one((void **)&q->e, q->n, &q->cap, sizeof(*q->e)))
        return -1;
    q->e[q->n] = (struct ioq_entry){fd, 0, data, len, owner, unref, ref};
    if (q->n++ == 0 && q->rn == 0)
        event_active(q->ev, EV_TIMEOUT, 0);
    return (int)(q->n - 1);
}

int ioq_copy(struct ioq *q, int fd, const void *data, size_t len, void *owner)
{
    if (q->flushing || len == 0 || len > q->copy_cap)
        return -1;
    if (q->copy_cap - q->used < len)
        ioq_flush_sends(q); /* full: this pass's sends so far go now, in their order */
    uint8_t *p = q->copy + q->used;
    memcpy(p, data, len);
    int slot = add_entry(q, fd, p, len, owner, NULL, NULL);
    if (slot >= 0)
        q->used += len;
    return slot;
}

int ioq_ref(struct ioq *q, int fd, const void *data, size_t len, void *owner,
              void (*unref)(void *ref), void *ref)
{
    if (q->flushing || len == 0)
        return -1;
    return add_entry(q, fd, data, len, owner, unref, ref);
}

size_t ioq_len(const struct ioq *q, int slot)
{
    return q->e[slot].len;
}

void ioq_cancel(struct ioq *q, int slot)
{
    q->e[slot].fd = -1;
    q->e[slot].owner = NULL;
}

int ioq_recv(struct ioq *q, int fd, void *owner)
{
    if (q->reading || !room_for_one((void **)&q->r, q->rn, &q->rcap, sizeof(*q->r)))
        return -1;
    q->r[q->rn] = (struct ioq_rentry){fd, 0, owner};
    if (q->rn++ == 0 && q->n == 0)
        event_active(q->ev, EV_TIMEOUT, 0);
    return (int)(q->rn - 1);
}

void ioq_cancel_recv(struct ioq *q, int slot)
{
    q->r[slot].fd = -1;
    q->r[slot].owner = NULL;
}

/* Wait until want answers are in (they complete during the submission), each to its entry. */
/*
 * Submit what is in the ring (want operations) and collect every answer into its entry: user data
 * is the entry's index, shifted, with bit 0 set for a read. Every operation completes during the
 * submission (MSG_DONTWAIT), so this returns with all answers. A submission the kernel refuses for
 * the moment (signal, memory) is tried again: the entries are in the ring already and must not be
 * left there with pointers into this batch.
 */
static void submit_and_collect(struct ioq *q, unsigned want)
{
    int rc, tries = 0;
    while ((rc = io_uring_submit_and_wait(&q->ring, want)) < 0) {
        if ((rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) || ++tries == 1000) {
            log_error("ioq: io_uring_enter: %s", strerror(-rc));
            abort();
        }
    }
    q->batches++;
    unsigned got = 0;
    while (got < want) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&q->ring, head, cqe)
        {
            uint64_t d = io_uring_cqe_get_data64(cqe);
            if (d & 1)
                q->r[d >> 1].res = cqe->res;
            else
                q->e[d >> 1].res = cqe->res;
            seen++;
        }
        io_uring_cq_advance(&q->ring, seen);
        got += seen;
        if (got < want)
            io_uring_wait_cqe_nr(&q->ring, &cqe, want - got);
    }
}

/* Both kinds of entry start with their fd, so live_ops can count either. */
_Static_assert(offsetof(struct ioq_entry, fd) == 0 && offsetof(struct ioq_rentry, fd) == 0,
               "an entry's fd comes first");

/*
 * How many entries of [from, to) are not cancelled. A chunk of one is made with a plain call: one
 * operation through the ring costs about 0.7 us more than the call itself (this VM), so batching
 * pays from two on, and a lone round trip (echo with one client) stays as cheap as before.
 */
static size_t live_ops(const void *entries, size_t size, size_t from, size_t to)
{
    size_t live = 0;
    for (size_t i = from; i < to; i++)
        live += *(const int *)((const char *)entries + i * size) >= 0;
    return live;
}

/*
 * The queued reads, ring_entries at a time (each chunk reuses the buffers): submitted together,
 * then every result handed to its owner in queue order. Owners queue their replies meanwhile.
 */
static void flush_reads(struct ioq *q)
{
    q->reading = true;
    for (size_t from = 0; from < q->rn; from += q->ring_entries) {
        size_t to = from + q->ring_entries < q->rn ? from + q->ring_entries : q->rn;
        unsigned want = 0;
        bool alone = live_ops(q->r, sizeof(*q->r), from, to) == 1;
        for (size_t i = from; i < to; i++) {
            struct ioq_rentry *e = &q->r[i];
            e->res = -EAGAIN; /* unanswered counts as nothing read: epoll reports it again */
            if (e->fd < 0)
                continue;
            if (alone) {
                ssize_t n = recv(e->fd, q->rbuf + (i - from) * q->rsize, q->rsize, MSG_DONTWAIT);
                e->res = n < 0 ? -errno : (int)n;
                q->recvs++;
                continue;
            }
            struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
            if (!sqe)
                continue; /* cannot happen: at most ring_entries per submission */
            io_uring_prep_recv(sqe, e->fd, q->rbuf + (i - from) * q->rsize, q->rsize, MSG_DONTWAIT);
            io_uring_sqe_set_data64(sqe, ((uint64_t)i << 1) | 1);
            want++;
        }
        if (want) {
            q->recvs += want;
            submit_and_collect(q, want);
        }
        /* q->r is not reallocated meanwhile: no read may be queued while reading */
        for (size_t i = from; i < to; i++)
            if (q->r[i].owner)
                q->on_recv(q->r[i].owner, q->rbuf + (i - from) * q->rsize, q->r[i].res);
    }
    q->rn = 0;
    q->reading = false;
}

void ioq_flush_sends(struct ioq *q)
{
    if (q->flushing || q->n == 0)
        return;
    q->flushing = true;
    for (size_t from = 0; from < q->n; from += q->ring_entries) {
        size_t to = from + q->ring_entries < q->n ? from + q->ring_entries : q->n;
        unsigned want = 0;
        bool alone = live_ops(q->e, sizeof(*q->e), from, to) == 1;
        for (size_t i = from; i < to; i++) {
            struct ioq_entry *e = &q->e[i];
            e->res = -EAGAIN; /* unanswered counts as unsent: its owner queues it for the socket */
            if (e->fd < 0)
                continue;
            if (alone) {
                ssize_t n = send(e->fd, e->data, e->len, MSG_DONTWAIT | MSG_NOSIGNAL);
                e->res = n < 0 ? -errno : (int)n;
                q->sends++;
                continue;
            }
            struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
            if (!sqe)
                continue;
            io_uring_prep_send(sqe, e->fd, e->data, e->len, MSG_DONTWAIT | MSG_NOSIGNAL);
            io_uring_sqe_set_data64(sqe, (uint64_t)i << 1);
            want++;
        }
        if (want) {
            q->sends += want;
            submit_and_collect(q, want);
        }
    }
    for (size_t i = 0; i < q->n; i++) {
        struct ioq_entry *e = &q->e[i];
        if (e->owner) {
            size_t sent = e->res > 0 ? (size_t)e->res : 0;
            int err = e->res < 0 && e->res != -EAGAIN ? -e->res : 0;
            q->done(e->owner, e->data + sent, e->len - sent, err);
        }
        if (e->unref)
            e->unref(e->ref);
    }
    q->n = 0;
    q->used = 0;
    q->flushing = false;
}

void ioq_flush(struct ioq *q)
{
    if (q->flushing || q->reading)
        return; /* a done or read callback's own flush: the running one covers it */
    if (q->rn)
        flush_reads(q);
    ioq_flush_sends(q);
    event_del(q->ev);
}

uint64_t ioq_batches(const struct ioq *q)
{
    return q ? q->batches : 0;
}

uint64_t ioq_sends(const struct ioq *q)
{
    return q ? q->sends : 0;
}

uint64_t ioq_recvs(const struct ioq *q)
{
    return q ? q->recvs : 0;
}
