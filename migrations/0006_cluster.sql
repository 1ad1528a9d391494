-- 0006_cluster.sql -- the nodes of a cluster and which node holds each session. A single SQLite node
-- never fills them (cluster mode needs PostgreSQL: migrations/pg/0006_cluster.sql, docs/cluster.md);
-- they exist so both dialects keep one schema version and wsctl reads the same columns.

-- The node that held the session (nodes.id); NULL on a single node.
ALTER TABLE sessions ADD COLUMN node INTEGER;

CREATE TABLE nodes (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    boot        INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('up', 'down', 'lost'))
);
