/*
 * chat_retention.c -- [store] retention_age and retention_count: a timer on the loop deletes the
 * oldest messages beyond the limits, at most RETENTION_BUDGET rows a tick, in the loop's transaction
 * (group commit), so the hot path never waits for a big delete. The store keeps the newest message
 * overall, so message ids are never given twice. Live clients are not told: these messages are old.
 */
#include <event2/event.h>

#include "base/log.h"
#include "chat/chat_internal.h"
#include "store.h"

#define RETENTION_TICK_MS 1000
#define RETENTION_BUDGET 500 /* rows a tick: a few ms of SQLite work at most */

static void retention_committed(void *arg, bool ok)
{
    struct chat *ch = arg;
    if (ok)
        ch->lp->metrics.retention_deleted += ch->retention_pending;
    ch->retention_pending = 0;
    ch->retention_waiting = false;
}

static void retention_tick_job(void *arg)
{
    struct chat *ch = arg;
    if (ch->draining || ch->retention_waiting)
        return;
    int64_t age = ch->cfg->store_retention_age_ms, now = loop_now_ms(ch->lp);
    int64_t cutoff = age > 0 && age < now ? now - age : 0, n = 0;
    int64_t keep = (int64_t)ch->cfg->store_retention_count;
    loop_tx_begin(ch->lp);
    if (store_retention_step(ch->store, cutoff, keep, RETENTION_BUDGET, &n) != 0) {
        ch->lp->metrics.store_errors++;
        log_error("store: retention: %s", store_last_error(ch->store));
        return;
    }
    if (n > 0) {
        log_debug("store: retention deleted %lld messages", (long long)n);
        ch->retention_pending = n;
        ch->retention_waiting = true;
        loop_after_commit(ch->lp, retention_committed, ch);
    }
}

static void retention_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loop_call_once(((struct chat *)arg)->lp, retention_tick_job, arg); /* on the store fiber (net/gate.h) */
}

int chat_retention_start(struct chat *ch)
{
    if (!ch->store || (ch->cfg->store_retention_age_ms <= 0 && ch->cfg->store_retention_count == 0))
        return 0;
    if (!(ch->retention_ev = event_new(ch->lp->base, -1, EV_PERSIST, retention_tick, ch)))
        return -1;
    struct timeval tv = {.tv_sec = RETENTION_TICK_MS / 1000, .tv_usec = (RETENTION_TICK_MS % 1000) * 1000};
    return event_add(ch->retention_ev, &tv);
}

void chat_retention_stop(struct chat *ch)
{
    if (ch->retention_ev)
        event_free(ch->retention_ev);
    ch->retention_ev = NULL;
}
