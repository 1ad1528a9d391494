-- 0004_retention.sql -- retention and erasure: a message count per room and per direct conversation
-- (both sides hold the conversation's count), so the retention sweep finds conversations over
-- [store] retention_count by reading those rows, never by counting messages. Upgrades in place.

-- Kept by the message insert (the same upserts that move last_id) and by the trigger below when rows
-- are deleted. Counts every row, tombstones included: they are rows retention deletes too.
ALTER TABLE rooms ADD COLUMN msg_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dm_conversations ADD COLUMN msg_count INTEGER NOT NULL DEFAULT 0;
UPDATE rooms SET msg_count = (SELECT count(*) FROM messages WHERE room = rooms.name);
UPDATE dm_conversations SET msg_count = (SELECT count(*) FROM messages
    WHERE (to_user = dm_conversations.user AND sender = dm_conversations.peer)
       OR (to_user = dm_conversations.peer AND sender = dm_conversations.user));

-- Messages are deleted only by retention, off the hot path (at most a few hundred rows a second), so
-- a per-row trigger costs nothing where it matters and keeps the counts right for every delete.
CREATE TRIGGER messages_count_delete AFTER DELETE ON messages BEGIN
    UPDATE rooms SET msg_count = msg_count - 1 WHERE old.room IS NOT NULL AND name = old.room;
    UPDATE dm_conversations SET msg_count = msg_count - 1
        WHERE old.to_user IS NOT NULL AND user = old.sender AND peer = old.to_user;
    UPDATE dm_conversations SET msg_count = msg_count - 1
        WHERE old.to_user IS NOT NULL AND old.to_user <> old.sender
          AND user = old.to_user AND peer = old.sender;
END;
