-- pg/0006_cluster.sql -- cluster mode (docs/cluster.md): nodes with leases, the node of each
-- session, and the cluster log through which nodes tell each other what to deliver live.

-- The node that holds (held) the session: the sweeper ends a lost node's sessions by it.
ALTER TABLE sessions ADD COLUMN node int;
CREATE INDEX sessions_node_open ON sessions (node) WHERE ended_at IS NULL;

-- One row per node name. boot changes at every start, so a node that was declared lost and comes
-- back (a long pause) finds its lease taken and drops its connections instead of renewing.
CREATE TABLE nodes (
    id          serial PRIMARY KEY,
    name        text   NOT NULL UNIQUE,
    boot        bigint NOT NULL,
    started_at  bigint NOT NULL,
    lease_until bigint NOT NULL,
    state       text   NOT NULL CHECK (state IN ('up', 'down', 'lost'))
);

-- What other nodes must deliver to their own live connections: a stored message (ref = its id),
-- a frame for a user, a room or everyone, a kick, a membership change, a presence change. Read in
-- (tx, id) order from the last row seen, never past the oldest transaction still running
-- (pg_snapshot_xmin), so a row committed late behind a smaller id is never skipped.
CREATE TABLE cluster_log (
    tx         xid8   NOT NULL DEFAULT pg_current_xact_id(),
    id         bigserial,
    node       int    NOT NULL,
    kind       text   NOT NULL,
    target     text,
    ref        bigint NOT NULL DEFAULT 0,
    payload    text,
    created_at bigint NOT NULL,
    PRIMARY KEY (tx, id)
);
CREATE INDEX cluster_log_created ON cluster_log (created_at);

-- The doorbell: one notification per transaction that wrote to the log (identical payloads within a
-- transaction are folded into one by PostgreSQL), carrying no data: readers query the table.
CREATE FUNCTION wsp_cluster_log_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('wsp_cluster', '');
    RETURN NULL;
END $$;
CREATE TRIGGER cluster_log_notify AFTER INSERT ON cluster_log
    FOR EACH STATEMENT EXECUTE FUNCTION wsp_cluster_log_notify();
