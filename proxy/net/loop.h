/*
 * loop.h -- the event loop and what every layer above shares through it: the config, the store, the
 * counters, the cached clock, and the group commit that turns the store writes of one loop iteration
 * into one SQLite transaction. It holds no application state (no users, rooms or connections).
 */
#ifndef WSP_LOOP_H
#define WSP_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"
#include "base/metrics.h"

struct event_base;
struct event;
struct store;
struct gate;

struct loop_after {
    void (*fn)(void *arg, bool ok);
    void *arg;
};

struct loop {
    const struct px_config *cfg;
    struct event_base *base;
    struct store *store; /* owned by the caller (server); the loop only begins and commits */
    struct gate *gate;   /* the store fiber (net/gate.h): PostgreSQL only, else NULL */
    struct metrics metrics;
    /* Group commit; private to loop.c (read through loop_tx_open). */
    bool _tx_open;
    uint64_t _tx_writes;
    struct event *_commit_ev;    /* lowest priority: after this iteration's I/O callbacks */
    struct event *_commit_timer; /* highest priority: the commit_delay / commit_batch bound */
    /* An asynchronous COMMIT on its way (PostgreSQL): its socket, when it was sent, its writes. */
    bool _committing;
    struct event *_commit_io;
    bool _commit_queued, _commit_io_queued; /* their jobs wait on the gate */
    double _commit_t0;
    uint64_t _commit_writes;
    struct loop_after *_after; /* waiting for the commit, in order */
    size_t _num_after, _cap_after;
    /*
     * Called by loop_commit before the after-commit callbacks, with whether the commit succeeded:
     * the connection pool releases (ok) or drops (failed) the frames it held for the commit.
     */
    void (*_flush)(void *arg, bool ok);
    void *_flush_arg;
};

/*
 * Create the event base (signals at priority 0, I/O at 1, the commit at 2: it runs after every
 * I/O callback of an iteration). store may be NULL (tests), then the group commit is a no-op.
 * Returns 0, or -1 (out of memory; lp is released).
 */
int loop_init(struct loop *lp, const struct px_config *cfg, struct store *store);

/* Free the event base and the commit state; the store is not closed. Commit first. */
void loop_release(struct loop *lp);

/* Milliseconds since the epoch, from the loop's cached clock (cheap; fine for timestamps and timers). */
int64_t loop_now_ms(struct loop *lp);

/* Seconds on the monotonic clock, for durations. */
double loop_mono_s(void);

/*
 * Call before a store write: opens the iteration's transaction if none is open and schedules its
 * commit after all pending I/O callbacks. Without a transaction (BEGIN failed) each statement
 * autocommits: slower, still durable.
 * The commit is bounded whatever the input rate: at the latest [store] commit_delay after the
 * transaction opened, or at once after [store] commit_batch writes, it runs at the highest priority
 * between two I/O callbacks (the loop checks for it every 10 ms or 1024 callbacks).
 */
void loop_tx_begin(struct loop *lp);

/* Whether a transaction is open: output that depends on it must be held until loop_commit. */
bool loop_tx_open(const struct loop *lp);

/* Run fn once the open transaction is committed (ok = durable), at once when none is open. */
void loop_after_commit(struct loop *lp, void (*fn)(void *arg, bool ok), void *arg);

/* Forget what loop_after_commit queued for fn(arg) (its owner is going away before the commit). */
void loop_after_commit_cancel(struct loop *lp, void (*fn)(void *arg, bool ok), void *arg);

/* Set the hook that releases held output after each commit (one; the connection pool's). */
void loop_set_flush(struct loop *lp, void (*fn)(void *arg, bool ok), void *arg);

/*
 * Commit now (no-op when no transaction is open): COMMIT (ROLLBACK on failure), then the flush hook,
 * then the after-commit callbacks in the order they were added. Callbacks may open a new transaction.
 * Returns when all of that is done (it also finishes an asynchronous commit still on its way).
 */
void loop_commit(struct loop *lp);

/*
 * The same from the loop's commit event: with a store that commits asynchronously (PostgreSQL) the
 * COMMIT is sent and the loop goes on serving; the flush hook and the callbacks run when its answer
 * arrives on the socket (or fail at [store] pg_timeout). Until then nothing held is released, and a
 * write that needs a new transaction first waits for that answer (loop_tx_begin).
 */
void loop_commit_async(struct loop *lp);

/*
 * The store fiber (net/gate.h), for a store that waits on the network: loop_gate_start makes it
 * (and the commit's own events then run on it); loop_gate_stop finishes its work and removes it
 * (before the connections are released at shutdown). 0, or -1 out of memory.
 */
int loop_gate_start(struct loop *lp);
void loop_gate_stop(struct loop *lp);

/*
 * Run fn(arg) where the store may be used: a plain call without a gate (or on the fiber already),
 * else on the store fiber, at once or after the entries before it. Every entry into application
 * code from a timer or another event that is not a connection's callback comes through here.
 * loop_call_cancel forgets calls of fn(arg) that have not started (their owner goes).
 */
void loop_call(struct loop *lp, void (*fn)(void *arg), void *arg);
void loop_call_cancel(struct loop *lp, void (*fn)(void *arg), void *arg);

/* loop_call, unless fn(arg) already waits to start (a timer that fired again meanwhile). */
void loop_call_once(struct loop *lp, void (*fn)(void *arg), void *arg);

/* Whether a call from here into the application goes through loop_call (a gate, not on it). */
bool loop_gated(const struct loop *lp);

/* Whether an asynchronous COMMIT is on its way. */
bool loop_committing(const struct loop *lp);

#endif
