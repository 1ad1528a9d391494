/*
 * gate.h -- the store fiber: where application code that uses a store over the network
 * (PostgreSQL) runs, so the event loop never waits on the database.
 *
 * The application calls the store synchronously (store.h), as it always has. With a gate, every
 * entry into application code from the loop (a frame, a close, a timer, an API request) runs on
 * one coroutine with a stack of its own, the store fiber. When a store call has to wait for the
 * database, the store asks the gate (store_set_waiter): the fiber parks on the connection's socket
 * and the loop goes on serving everything else (other connections, echo, pings, reads, writes).
 * Entries that arrive meanwhile queue behind it, in arrival order, and run when it is done: one
 * store connection, one transaction at a time, the same order as on a loop without a gate. Code
 * already on the fiber calls straight through, as before.
 *
 * A call into the store from outside the fiber while the fiber is parked (startup, shutdown, a
 * path nobody routed through the gate) first finishes the fiber's work synchronously, bounded by
 * the store's own wait ([store] pg_timeout), then runs as before: correct, only not asynchronous.
 * gate_sync_waits counts those, and the tests check that serving traffic causes none.
 *
 * Without a gate (SQLite: every call is a local file write of microseconds) nothing of this runs:
 * loop_call() is a plain call.
 */
#ifndef WSP_GATE_H
#define WSP_GATE_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct store;
struct gate;

typedef void gate_fn(void *arg);

/* A gate on base for store st (its waiter is set; st may be NULL: tests). NULL when out of memory. */
struct gate *gate_new(struct event_base *base, struct store *st);

/* Run every queued entry to its end (synchronously), detach from the store, free. NULL: no-op. */
void gate_free(struct gate *g);

/*
 * Run fn(arg) on the fiber: now when it is free (returns once fn is done or parked on the store),
 * else after the entries queued before it. On the fiber already: a plain call. false when it could
 * not be queued (out of memory): then fn was not called.
 */
bool gate_call(struct gate *g, gate_fn *fn, void *arg);

/*
 * The same, ahead of every entry queued (the group commit: its bound, [store] commit_delay, holds
 * however long the queue is; order does not matter to it, the entries after it open the next
 * transaction).
 */
bool gate_call_first(struct gate *g, gate_fn *fn, void *arg);

/*
 * fn(arg) runs on the fiber each time it has run its last queued entry, before it goes idle (the
 * loop's group commit: the batch is what the fiber wrote since the last one). It may queue more.
 */
void gate_set_idle(struct gate *g, gate_fn *fn, void *arg);

/* Forget the queued, not yet started calls of fn(arg) (their owner goes away). */
void gate_cancel(struct gate *g, gate_fn *fn, void *arg);

/*
 * The store's waiter: until fd is ready for events (POLLIN/POLLOUT) or timeout_ms passed; 1 ready,
 * 0 timed out, -1 error. On the fiber it parks (the loop serves meanwhile); elsewhere it poll()s
 * and counts a sync wait.
 */
int gate_wait(struct gate *g, int fd, short events, int timeout_ms);

/* Whether fn(arg) is queued and not started. */
bool gate_queued(const struct gate *g, gate_fn *fn, void *arg);

/* Whether the caller runs on the fiber. */
bool gate_in_fiber(const struct gate *g);

/* Whether the fiber has work (running or parked, or entries queued). */
bool gate_busy(const struct gate *g);

/* Finish everything on the fiber now, waiting for the store (bounded): shutdown, tests. */
void gate_settle(struct gate *g);

/* Counters for /metrics. */
struct gate_stats {
    uint64_t calls;      /* entries run on the fiber */
    uint64_t queued;     /* ... of which waited behind another one */
    uint64_t parks;      /* times the fiber parked on the store's socket */
    uint64_t sync_waits; /* store waits made outside the fiber (should stay 0 while serving) */
    uint64_t queue_len;  /* entries waiting now */
    uint64_t queue_max;  /* the longest the queue has been */
};
void gate_stats(const struct gate *g, struct gate_stats *out);

#endif
