-- 0001_initial.sql -- first schema: sessions, presence, messages with per-recipient delivery state of
-- direct messages, room memberships with a delivery cursor. store_open runs it inside one transaction
-- and then sets PRAGMA user_version = 1; no BEGIN/COMMIT here. Times are ms since the epoch.

-- One row per WebSocket connection. AUTOINCREMENT: an id given to a client or the API is never reused.
CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user         TEXT    NOT NULL,
    remote_addr  TEXT    NOT NULL,
    user_agent   TEXT,
    subprotocol  TEXT,
    connected_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    ended_at     INTEGER,
    end_reason   TEXT,
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);
-- per-user listing, newest first
CREATE INDEX sessions_user ON sessions (user, id);
-- active sessions only: counts, orphan cleanup at start, presence repair
CREATE INDEX sessions_open ON sessions (user) WHERE ended_at IS NULL;
-- "sessions since T" for the admin CLI
CREATE INDEX sessions_connected ON sessions (connected_at);

CREATE TABLE presence (
    user        TEXT    NOT NULL PRIMARY KEY,
    state       TEXT    NOT NULL CHECK (state IN ('online', 'offline')),
    connections INTEGER NOT NULL CHECK (connections >= 0),
    last_seen   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX presence_online ON presence (user) WHERE state = 'online';

-- Every accepted message, direct (to_user) or to a room. Ids must never be reused, so a client's ack
-- or a cursor can never point at a different message later. A plain rowid is max(id)+1, so it is
-- never reused while the newest row is never deleted: wsproxy never deletes messages, and a retention
-- job must delete from the oldest end. AUTOINCREMENT would also survive deleting the newest row, but
-- its sqlite_sequence update cost 7% of the instructions per accepted message (callgrind, persist load).
-- A direct message has exactly one recipient, so its delivery state lives in its own row:
-- delivered_at NULL = pending; delivered_by = the acking session id (a plain number, so pruning
-- sessions never cascades). One INSERT stores message and pending state atomically; a separate
-- table filled by a trigger measured ~10 statement-journal writes per message inside a group commit.
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY,
    sender       TEXT    NOT NULL,
    to_user      TEXT,
    room         TEXT,
    body         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    cid          TEXT,
    delivered_at INTEGER,
    delivered_by INTEGER,
    UNIQUE (sender, cid),
    CHECK ((to_user IS NULL) <> (room IS NULL)),
    CHECK (delivered_at IS NULL OR to_user IS NOT NULL)
);
-- direct history between two users (one range per direction)
CREATE INDEX messages_direct ON messages (to_user, sender, id) WHERE to_user IS NOT NULL;
-- replay on connect: a user's pending direct messages in id order; shrinks as they are acked
CREATE INDEX messages_pending ON messages (to_user, id)
    WHERE to_user IS NOT NULL AND delivered_at IS NULL;
-- room history, replay after a cursor, newest id of a room
CREATE INDEX messages_room ON messages (room, id) WHERE room IS NOT NULL;

-- cursor = the id of the newest room message this member has acked (or the newest at join time).
CREATE TABLE room_members (
    room      TEXT    NOT NULL,
    user      TEXT    NOT NULL,
    joined_at INTEGER NOT NULL,
    cursor    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room, user)
) WITHOUT ROWID;
CREATE INDEX room_members_user ON room_members (user, room);
