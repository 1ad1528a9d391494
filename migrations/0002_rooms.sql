-- 0002_rooms.sql -- room access and conversations: a row per room (its newest message, for the
-- conversation list), how each membership was granted, one row per direct conversation and side,
-- the API marker on messages and tombstones. Upgrades a 0001 database in place, data kept.

-- One row per room that has had a member or a message. last_id: its newest message (0: none yet),
-- kept by the message insert in the same statement batch, so a conversation list reads no messages.
CREATE TABLE rooms (
    name       TEXT    NOT NULL PRIMARY KEY,
    created_at INTEGER NOT NULL,
    last_id    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO rooms (name, created_at, last_id)
    SELECT room, min(created_at), max(id) FROM messages WHERE room IS NOT NULL GROUP BY room;
INSERT INTO rooms (name, created_at, last_id)
    SELECT room, min(joined_at), 0 FROM room_members WHERE true GROUP BY room
    ON CONFLICT (name) DO NOTHING;

-- How a membership was granted: 'join' (an open room, or a room the token's claim allowed: 'claim'),
-- 'api' (added by the backend). A token refresh that no longer allows a room removes 'claim' ones.
ALTER TABLE room_members ADD COLUMN via TEXT NOT NULL DEFAULT 'join';

-- One row per (user, peer) direct conversation, both sides; last_id is its newest message.
CREATE TABLE dm_conversations (
    user    TEXT    NOT NULL,
    peer    TEXT    NOT NULL,
    last_id INTEGER NOT NULL,
    PRIMARY KEY (user, peer)
) WITHOUT ROWID;
-- a user's conversations newest first
CREATE INDEX dm_conversations_recent ON dm_conversations (user, last_id);
INSERT INTO dm_conversations (user, peer, last_id)
    SELECT sender, to_user, max(id) FROM messages WHERE to_user IS NOT NULL GROUP BY sender, to_user;
INSERT INTO dm_conversations (user, peer, last_id)
    SELECT to_user, sender, max(id) FROM messages WHERE to_user IS NOT NULL GROUP BY to_user, sender
    ON CONFLICT (user, peer) DO UPDATE SET last_id = max(last_id, excluded.last_id);

-- 'api' for messages pushed by the backend: a marker no chat client can set.
ALTER TABLE messages ADD COLUMN via TEXT;
-- set when the message was deleted (API, erasure): the row stays so ids are never reused.
ALTER TABLE messages ADD COLUMN deleted_at INTEGER;
