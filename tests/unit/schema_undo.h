/*
 * schema_undo.h -- SQL that takes a current database back to an older schema, for the upgrade tests
 * (test_store.c, test_outbox.c): each migration's tests start from the schema just before it.
 */
#ifndef WSP_TEST_SCHEMA_UNDO_H
#define WSP_TEST_SCHEMA_UNDO_H

/* 0006_cluster.sql undone: no nodes table, no sessions.node column. */
#define UNDO_0006_SQL "DROP TABLE nodes; ALTER TABLE sessions DROP COLUMN node;"

/* 0005_outbox_lean.sql undone: the 0003 outbox (a state column, its four partial indexes). */
#define UNDO_0005_SQL                                                                              \
    "DROP TABLE outbox_dead;"                                                                      \
    "ALTER TABLE outbox ADD COLUMN state TEXT NOT NULL DEFAULT 'queued';"                          \
    "ALTER TABLE outbox ADD COLUMN delivered_at INTEGER;"                                          \
    "CREATE INDEX outbox_queued ON outbox (id) WHERE state = 'queued';"                            \
    "CREATE INDEX outbox_age ON outbox (queued_at) WHERE state = 'queued';"                        \
    "CREATE INDEX outbox_dead ON outbox (id) WHERE state = 'dead';"                                \
    "CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE state = 'delivered';"

#endif
