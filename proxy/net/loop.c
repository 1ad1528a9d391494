/*
 * loop.c -- the event base, the cached clock and the group commit. Receipts and API answers wait for
 * the commit (held frames, after-commit callbacks), so one fsync-free SQLite COMMIT per loop
 * iteration serves every write of that iteration; redis's beforeSleep keeps the same order (write
 * the AOF, then answer clients).
 */
#include "net/loop.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "base/log.h"
#include "net/gate.h"
#include "store.h"

static void commit_job(void *arg)
{
    struct loop *lp = arg;
    lp->_commit_queued = false;
    loop_commit_async(lp);
}

/* The bound ([store] commit_delay or commit_batch) is reached: commit now, or first thing on the
 * store fiber, ahead of its queue, however many entries wait there. */
static void commit_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct loop *lp = arg;
    if (lp->_commit_queued)
        return;
    lp->_commit_queued = lp->gate != NULL;
    if (!lp->gate || gate_in_fiber(lp->gate) || !gate_call_first(lp->gate, commit_job, lp))
        commit_job(lp);
}

/*
 * The loop iteration's I/O is served: commit what it wrote. With the store fiber busy the
 * iteration is not the batch: the entries queued on the fiber are, so the commit waits until the
 * fiber runs out of work (idle_cb), bounded by the timer above. Without that, every entry that
 * parked would be committed on its own: a transaction, and a WAL flush, per message.
 */
static void commit_cb(evutil_socket_t fd, short what, void *arg)
{
    struct loop *lp = arg;
    if (lp->gate && gate_busy(lp->gate) && !gate_in_fiber(lp->gate))
        return; /* idle_cb commits */
    commit_timer_cb(fd, what, arg);
}

/* The store fiber ran out of work (on it, before it goes idle): commit the batch it wrote. */
static void idle_cb(void *arg)
{
    struct loop *lp = arg;
    if (lp->_tx_open)
        loop_commit_async(lp);
}

int loop_gate_start(struct loop *lp)
{
    if (lp->gate || !lp->store)
        return 0;
    if (!(lp->gate = gate_new(lp->base, lp->store)))
        return -1;
    gate_set_idle(lp->gate, idle_cb, lp);
    return 0;
}

void loop_gate_stop(struct loop *lp)
{
    struct gate *g = lp->gate;
    if (!g)
        return;
    gate_settle(g);
    lp->gate = NULL;
    lp->_commit_queued = lp->_commit_io_queued = false;
    gate_free(g);
}

void loop_call(struct loop *lp, void (*fn)(void *arg), void *arg)
{
    if (!lp->gate || gate_in_fiber(lp->gate) || !gate_call(lp->gate, fn, arg))
        fn(arg); /* (out of memory queueing it: here; the store finishes the fiber's work first) */
}

void loop_call_once(struct loop *lp, void (*fn)(void *arg), void *arg)
{
    if (lp->gate && !gate_in_fiber(lp->gate) && gate_queued(lp->gate, fn, arg))
        return;
    loop_call(lp, fn, arg);
}

bool loop_gated(const struct loop *lp)
{
    return lp->gate && !gate_in_fiber(lp->gate);
}

void loop_call_cancel(struct loop *lp, void (*fn)(void *arg), void *arg)
{
    if (lp->gate)
        gate_cancel(lp->gate, fn, arg);
}

static void commit_done(struct loop *lp, int rc);

/* How often the loop asks about a COMMIT on its way besides its socket's readability. */
#define LOOP_COMMIT_TICK_US 2000

/*
 * The asynchronous COMMIT's socket is readable, or the short tick passed: another store call may
 * have read the answer already (the socket then stays quiet), and the store decides when the
 * answer is late ([store] pg_timeout).
 */
static void commit_io_job(void *arg)
{
    struct loop *lp = arg;
    lp->_commit_io_queued = false;
    if (!lp->_committing)
        return; /* finished meanwhile (a write needing the next transaction waited for it) */
    bool done = false;
    int rc = store_commit_poll(lp->store, STORE_POLL_NOW, &done);
    if (!done)
        return; /* EV_PERSIST: waits for more of the answer */
    lp->_committing = false;
    event_del(lp->_commit_io);
    commit_done(lp, rc);
}

static void commit_io_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct loop *lp = arg;
    if (lp->_commit_io_queued)
        return;
    lp->_commit_io_queued = lp->gate != NULL;
    loop_call(lp, commit_io_job, lp);
}

/* Finish an asynchronous COMMIT now (waits for its answer, bounded by the store). */
static void commit_wait(struct loop *lp)
{
    if (!lp->_committing)
        return;
    bool done = false;
    int rc = store_commit_poll(lp->store, STORE_POLL_WAIT, &done);
    lp->_committing = false;
    if (lp->_commit_io)
        event_del(lp->_commit_io);
    commit_done(lp, rc);
}

bool loop_committing(const struct loop *lp)
{
    return lp->_committing;
}

int loop_init(struct loop *lp, const struct px_config *cfg, struct store *store)
{
    memset(lp, 0, sizeof(*lp));
    lp->cfg = cfg;
    lp->store = store;
    struct event_config *ecfg = event_config_new();
    if (ecfg) {
        /* A loop iteration must not starve the commit event under load: cap callbacks per pass. */
        struct timeval max_interval = {0, 10000};
        event_config_set_max_dispatch_interval(ecfg, &max_interval, 1024, 1);
        /*
         * epoll: apply interest changes once per loop iteration, at the next epoll_wait, instead of
         * one epoll_ctl per event_add/event_del; interest armed and disarmed within one iteration
         * costs no syscall at all. libevent's caveat, dup()ed descriptors sharing one epoll
         * registration, does not apply: we never dup a socket.
         */
        event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        lp->base = event_base_new_with_config(ecfg);
        event_config_free(ecfg);
    }
    if (!lp->base)
        return -1;
    /* Priorities: 0 signals, 1 I/O (the default for new events), 2 the group commit. */
    event_base_priority_init(lp->base, 3);
    lp->_commit_ev = event_new(lp->base, -1, 0, commit_cb, lp);
    if (!lp->_commit_ev) {
        loop_release(lp);
        return -1;
    }
    event_priority_set(lp->_commit_ev, 2);
    lp->_commit_timer = evtimer_new(lp->base, commit_timer_cb, lp);
    if (!lp->_commit_timer) {
        loop_release(lp);
        return -1;
    }
    event_priority_set(lp->_commit_timer, 0);
    return 0;
}

void loop_release(struct loop *lp)
{
    loop_gate_stop(lp);
    if (lp->_commit_ev)
        event_free(lp->_commit_ev);
    if (lp->_commit_timer)
        event_free(lp->_commit_timer);
    if (lp->_commit_io)
        event_free(lp->_commit_io);
    free(lp->_after);
    if (lp->base)
        event_base_free(lp->base);
    memset(lp, 0, sizeof(*lp));
}

int64_t loop_now_ms(struct loop *lp)
{
    struct timeval tv;
    if (!lp->base || event_base_gettimeofday_cached(lp->base, &tv) != 0)
        gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

double loop_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void loop_tx_begin(struct loop *lp)
{
    /* The frames held for a COMMIT on its way must be released before a new transaction holds
     * others: its answer first. */
    if (lp->_committing && !lp->_tx_open)
        commit_wait(lp);
    lp->_tx_writes++;
    if (lp->_tx_open) {
        /* A flood of writes (an ack stream) must not hold every receipt: commit now. */
        if (lp->_tx_writes == lp->cfg->store_commit_batch)
            event_active(lp->_commit_timer, EV_TIMEOUT, 0);
        return;
    }
    if (!lp->store)
        return;
    if (store_begin(lp->store) != 0) {
        lp->metrics.store_errors++;
        log_error("store: cannot begin transaction: %s", store_last_error(lp->store));
        return;
    }
    lp->_tx_open = true;
    lp->_tx_writes = 1;
    /* Lowest priority: runs after every read callback of this loop iteration has been served. */
    event_active(lp->_commit_ev, EV_TIMEOUT, 0);
    /* ... but never later than commit_delay, however busy the iteration is. */
    int64_t ms = lp->cfg->store_commit_delay_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(lp->_commit_timer, &tv);
}

bool loop_tx_open(const struct loop *lp)
{
    return lp->_tx_open;
}

void loop_after_commit(struct loop *lp, void (*fn)(void *arg, bool ok), void *arg)
{
    if (!lp->_tx_open) {
        fn(arg, true);
        return;
    }
    if (lp->_num_after == lp->_cap_after) {
        size_t cap = lp->_cap_after ? lp->_cap_after * 2 : 16;
        struct loop_after *grown = realloc(lp->_after, cap * sizeof(*grown));
        if (!grown) {
            fn(arg, false);
            return;
        }
        lp->_after = grown;
        lp->_cap_after = cap;
    }
    lp->_after[lp->_num_after++] = (struct loop_after){fn, arg};
}

void loop_after_commit_cancel(struct loop *lp, void (*fn)(void *arg, bool ok), void *arg)
{
    size_t k = 0;
    for (size_t i = 0; i < lp->_num_after; i++)
        if (lp->_after[i].fn != fn || lp->_after[i].arg != arg)
            lp->_after[k++] = lp->_after[i];
    lp->_num_after = k;
}

void loop_set_flush(struct loop *lp, void (*fn)(void *arg, bool ok), void *arg)
{
    lp->_flush = fn;
    lp->_flush_arg = arg;
}

/* The commit is over (rc 0: durable): metrics, the flush hook, then the after-commit callbacks. */
static void commit_done(struct loop *lp, int rc)
{
    double dt = loop_mono_s() - lp->_commit_t0;
    bool ok = rc == 0;
    if (ok) {
        metrics_commit(&lp->metrics, dt, lp->_commit_writes);
    } else {
        /* Nothing of this batch is durable: the flush hook drops what was held for it. */
        lp->metrics.store_errors++;
        log_error("store: commit of %llu writes failed: %s",
                  (unsigned long long)lp->_commit_writes, store_last_error(lp->store));
        store_rollback(lp->store);
    }
    if (lp->_flush)
        lp->_flush(lp->_flush_arg, ok);
    /* Callbacks may open a new transaction; take the list first. */
    size_t n = lp->_num_after;
    struct loop_after *list = lp->_after;
    lp->_after = NULL;
    lp->_num_after = lp->_cap_after = 0;
    for (size_t i = 0; i < n; i++)
        list[i].fn(list[i].arg, ok);
    free(list);
}

/* Send the COMMIT; 1 when its answer is still on its way (then watched), else done. */
static int commit_start(struct loop *lp)
{
    evtimer_del(lp->_commit_timer);
    event_del(lp->_commit_ev);
    lp->_commit_t0 = loop_mono_s();
    lp->_commit_writes = lp->_tx_writes;
    lp->_tx_writes = 0;
    int fd = -1;
    int rc = store_commit_start(lp->store, &fd);
    lp->_tx_open = false;
    if (rc != 1) {
        commit_done(lp, rc);
        return 0;
    }
    struct timeval tv = {0, LOOP_COMMIT_TICK_US};
    /* One event while the socket stays the same (a reconnect makes a new one). */
    if (lp->_commit_io && event_get_fd(lp->_commit_io) != fd) {
        event_free(lp->_commit_io);
        lp->_commit_io = NULL;
    }
    if (!lp->_commit_io)
        lp->_commit_io = event_new(lp->base, fd, EV_READ | EV_PERSIST, commit_io_cb, lp);
    lp->_committing = true;
    if (!lp->_commit_io || event_add(lp->_commit_io, &tv) != 0)
        commit_wait(lp); /* cannot watch it: wait for it here */
    return 1;
}

void loop_commit(struct loop *lp)
{
    if (lp->_tx_open)
        commit_start(lp);
    commit_wait(lp);
}

void loop_commit_async(struct loop *lp)
{
    if (lp->_tx_open)
        commit_start(lp);
}
