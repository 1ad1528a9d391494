-- pg/0005_baseline.sql -- the PostgreSQL dialect of migrations 0001..0005: the schema the SQLite
-- file has at version 5, in one step. No PostgreSQL database predates version 5, so its history
-- starts here; every later migration comes in both dialects (migrations/NNNN_x.sql and
-- migrations/pg/NNNN_x.sql, same number; scripts/check-layers.sh checks the pairs).
-- "user" is a reserved word in PostgreSQL: always quoted. Times are bigint milliseconds, as in SQLite.

CREATE TABLE sessions (
    id           bigserial PRIMARY KEY,
    "user"       text   NOT NULL,
    remote_addr  text   NOT NULL,
    user_agent   text,
    subprotocol  text,
    connected_at bigint NOT NULL,
    last_seen_at bigint NOT NULL,
    ended_at     bigint,
    end_reason   text,
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);
CREATE INDEX sessions_user ON sessions ("user", id);
CREATE INDEX sessions_open ON sessions ("user") WHERE ended_at IS NULL;
CREATE INDEX sessions_connected ON sessions (connected_at);

CREATE TABLE presence (
    "user"      text   NOT NULL PRIMARY KEY,
    state       text   NOT NULL CHECK (state IN ('online', 'offline')),
    connections int    NOT NULL CHECK (connections >= 0),
    last_seen   bigint NOT NULL
);
CREATE INDEX presence_online ON presence ("user") WHERE state = 'online';

CREATE TABLE messages (
    id           bigserial PRIMARY KEY,
    sender       text   NOT NULL,
    to_user      text,
    room         text,
    body         text   NOT NULL,
    created_at   bigint NOT NULL,
    cid          text,
    delivered_at bigint,
    delivered_by bigint,
    via          text,
    deleted_at   bigint,
    UNIQUE (sender, cid),
    CHECK ((to_user IS NULL) <> (room IS NULL)),
    CHECK (delivered_at IS NULL OR to_user IS NOT NULL)
);
CREATE INDEX messages_direct ON messages (to_user, sender, id) WHERE to_user IS NOT NULL;
CREATE INDEX messages_pending ON messages (to_user, id)
    WHERE to_user IS NOT NULL AND delivered_at IS NULL;
CREATE INDEX messages_room ON messages (room, id) WHERE room IS NOT NULL;

CREATE TABLE room_members (
    room      text   NOT NULL,
    "user"    text   NOT NULL,
    joined_at bigint NOT NULL,
    cursor    bigint NOT NULL DEFAULT 0,
    via       text   NOT NULL DEFAULT 'join',
    PRIMARY KEY (room, "user")
);
CREATE INDEX room_members_user ON room_members ("user", room);

CREATE TABLE rooms (
    name       text   NOT NULL PRIMARY KEY,
    created_at bigint NOT NULL,
    last_id    bigint NOT NULL DEFAULT 0,
    msg_count  bigint NOT NULL DEFAULT 0
);

CREATE TABLE dm_conversations (
    "user"    text   NOT NULL,
    peer      text   NOT NULL,
    last_id   bigint NOT NULL,
    msg_count bigint NOT NULL DEFAULT 0,
    PRIMARY KEY ("user", peer)
);
CREATE INDEX dm_conversations_recent ON dm_conversations ("user", last_id);

-- Keeps the conversation counts right when messages are deleted (retention, erasure).
CREATE FUNCTION wsp_messages_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.room IS NOT NULL THEN
        UPDATE rooms SET msg_count = msg_count - 1 WHERE name = OLD.room;
    END IF;
    IF OLD.to_user IS NOT NULL THEN
        UPDATE dm_conversations SET msg_count = msg_count - 1
            WHERE "user" = OLD.sender AND peer = OLD.to_user;
        IF OLD.to_user <> OLD.sender THEN
            UPDATE dm_conversations SET msg_count = msg_count - 1
                WHERE "user" = OLD.to_user AND peer = OLD.sender;
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_count_delete AFTER DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION wsp_messages_count_delete();

-- The events outbox: only events still to deliver; a sequence, so ids are never reused.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    "user"     text   NOT NULL,
    type       text   NOT NULL,
    created_at bigint NOT NULL,
    payload    text   NOT NULL,
    attempts   int    NOT NULL DEFAULT 0,
    queued_at  bigint NOT NULL,
    next_at    bigint NOT NULL,
    last_error text
);

CREATE TABLE outbox_dead (
    id         bigint PRIMARY KEY,
    "user"     text   NOT NULL,
    type       text   NOT NULL,
    created_at bigint NOT NULL,
    payload    text   NOT NULL,
    attempts   int    NOT NULL,
    queued_at  bigint NOT NULL,
    died_at    bigint NOT NULL,
    last_error text
);
