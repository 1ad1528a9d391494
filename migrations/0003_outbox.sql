-- 0003_outbox.sql -- the events outbox (issue 14): events for the app backend, written in the same
-- transaction as the change they describe and delivered later by the sender (HTTP or FastCGI).
-- Numbered 0003 on purpose: 0002 is the rooms migration (issue 13). Times are ms since the epoch.

-- id: the event's unique id, also the per-user delivery order. AUTOINCREMENT: delivered rows are
-- pruned (the newest too), and an id a backend has seen must never name another event.
-- queued_at: when the event (re)entered the queue; max age counts from it (a replay restarts it).
-- next_at: when the sender may take it next (a retry's backoff, or the lease of a batch in flight).
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user         TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    payload      TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    queued_at    INTEGER NOT NULL,
    next_at      INTEGER NOT NULL,
    state        TEXT    NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'delivered', 'dead')),
    delivered_at INTEGER,
    last_error   TEXT
);
-- the sender's scan, oldest first, and the oldest queued id (size bound)
CREATE INDEX outbox_queued ON outbox (id) WHERE state = 'queued';
-- max age: queued events older than a bound, and the age of the oldest for /metrics
CREATE INDEX outbox_age ON outbox (queued_at) WHERE state = 'queued';
-- dead letters: listing and replay
CREATE INDEX outbox_dead ON outbox (id) WHERE state = 'dead';
-- pruning delivered events after a while
CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE state = 'delivered';
