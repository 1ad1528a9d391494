-- 0005_outbox_lean.sql -- a leaner events outbox (issue 14's cost target): the outbox holds only the
-- events still to deliver, so it needs no index beyond its rowid and each event costs one insert and
-- one delete. Dead letters move to a table of their own; delivered events are deleted at once (the
-- backend has them; /metrics counts them); the lease of a batch in flight is kept in memory (a crash
-- sends the batch again, same ids, as soon as the server is back). Upgrades in place.

-- The sender scans by id (the rowid) and keeps its own lease: no index is left on the outbox.
DROP INDEX outbox_queued;
DROP INDEX outbox_age;
DROP INDEX outbox_dead;
DROP INDEX outbox_delivered;

-- Dead letters: listed and replayed by id (wsctl events, the API). died_at: when it went dead.
CREATE TABLE outbox_dead (
    id         INTEGER PRIMARY KEY,
    user       TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    payload    TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    queued_at  INTEGER NOT NULL,
    died_at    INTEGER NOT NULL,
    last_error TEXT
);
INSERT INTO outbox_dead (id, user, type, created_at, payload, attempts, queued_at, died_at, last_error)
    SELECT id, user, type, created_at, payload, attempts, queued_at, next_at, last_error
    FROM outbox WHERE state = 'dead';
DELETE FROM outbox WHERE state <> 'queued';

-- AUTOINCREMENT stays, so an id the backend has seen never names another event.
ALTER TABLE outbox DROP COLUMN state;
ALTER TABLE outbox DROP COLUMN delivered_at;
