/*
 * ioq.h -- the reads and the sends of one loop pass, made in one system call each (io_uring).
 *
 * Why: a fan-out commit writes one frame to each of a thousand sockets and an echo pass one reply
 * to each ready connection; one send() each is one kernel entry each, and a kernel entry is not
 * cheap everywhere (about 1 us in this project's VMs, where the TCP work of a small send is about
 * 4 us). Queued here instead, they go to the kernel as one io_uring submission, each send still
 * non-blocking (MSG_DONTWAIT): what a socket does not take comes back to its owner, which queues
 * it for the socket's write event as before. Order per socket is the owner's job: at most one
 * entry per owner, and nothing written to that socket by other paths until its done callback.
 *
 * Reads the same way: a connection that epoll found readable queues its recv() here, and the
 * batch's results come back to each owner in queue order, before the sends of the pass go out (so
 * the replies they make go with them).
 *
 * Without io_uring (an old kernel, a seccomp filter, [server] io_uring = off) ioq_new returns
 * NULL with the reason, and the owner sends at once as it did before.
 */
#ifndef WSP_IOQ_H
#define WSP_IOQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct ioq;

/*
 * Called once per entry whose owner did not cancel it, after the whole batch went to the kernel:
 * rest/rest_len is what the socket did not take (rest_len 0: all sent), err the send's errno when it
 * failed (0 otherwise; EAGAIN is not an error: the socket is full). rest points into the queue's
 * memory, valid only during the call; the callback must not queue to this ioq.
 */
typedef void ioq_done_fn(void *owner, const uint8_t *rest, size_t rest_len, int err);

/*
 * Called once per queued read whose owner did not cancel it: n bytes at data (writable, valid
 * during the call), 0 at end of stream, or -errno (-EAGAIN: nothing to read after all). It may
 * queue sends, and cancel other owners' entries; it must not queue reads.
 */
typedef void ioq_recv_fn(void *owner, uint8_t *data, long n);

/*
 * A queue with an io_uring of ring_entries submission slots, copy_bytes of memory for copied
 * entries and recv_size bytes for each of ring_entries reads at a time (allocated with the queue,
 * touched as used); flushed by an event of base at default priority, activated by the first entry
 * of a pass (so it runs after the I/O callbacks already active). NULL when io_uring cannot be
 * used, with why filled in (for the log).
 */
struct ioq *ioq_new(struct event_base *base, unsigned ring_entries, size_t copy_bytes,
                    size_t recv_size, ioq_done_fn *done, ioq_recv_fn *on_recv, char *why,
                    size_t why_len);

/* Flush what is queued, then free. NULL is fine. */
void ioq_free(struct ioq *q);

/*
 * Queue len bytes to fd, copied into the queue's memory. Returns the entry's slot (>= 0) for
 * ioq_cancel, or -1 when it does not fit or the queue is flushing: the caller sends it itself.
 */
int ioq_copy(struct ioq *q, int fd, const void *data, size_t len, void *owner);

/*
 * Queue len bytes at data to fd without copying; unref(ref) is called once they are no longer
 * needed (after done). Returns the slot, or -1 as ioq_copy (unref is not called then).
 */
int ioq_ref(struct ioq *q, int fd, const void *data, size_t len, void *owner,
              void (*unref)(void *ref), void *ref);

/* Bytes the entry in slot still has to send. */
size_t ioq_len(const struct ioq *q, int slot);

/* The owner goes (its socket is about to close): its entry is not sent, done is not called. */
void ioq_cancel(struct ioq *q, int slot);

/* Queue one recv() from fd for this pass. Returns the slot for ioq_cancel_recv, or -1: read it
 * yourself. */
int ioq_recv(struct ioq *q, int fd, void *owner);

/* The owner goes: its queued read is not made (or its result not delivered). */
void ioq_cancel_recv(struct ioq *q, int slot);

/* Make the queued reads (and hand over their results), then send everything queued now (one io_uring_enter per ring_entries), then the done callbacks. */
void ioq_flush(struct ioq *q);

/*
 * Only the sends queued now (the reads wait for the queue's event). For callers that must not
 * hand read results up from where they are: a read's owner would run its handlers there, and a
 * handler that parks (the store fiber) would leave its connection's parse half done while the
 * loop reads that connection again.
 */
void ioq_flush_sends(struct ioq *q);

/* Counters for /metrics: submissions made, and the sends and reads made through the queue (a
 * chunk of one operation is a plain call: through the ring it would cost more). */
uint64_t ioq_batches(const struct ioq *q);
uint64_t ioq_sends(const struct ioq *q);
uint64_t ioq_recvs(const struct ioq *q);

#endif
