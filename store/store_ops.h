/*
 * store_ops.h -- the seam between store.h and its backends (SQLite: store_*.c, PostgreSQL:
 * store_pg*.c). Every handle starts with a pointer to its backend's table; store_api.c's public
 * functions only follow it, so callers never know which backend answers. Only store/ includes this.
 */
#ifndef WSP_STORE_OPS_H
#define WSP_STORE_OPS_H

#include "store.h"

/* One member per public function of store.h that takes a handle, same name without "store_". */
struct store_ops {
    const char *name; /* "sqlite", "postgresql" */
    void (*set_lock_wait)(struct store *st, int ms);
    void (*set_waiter)(struct store *st, const struct store_waiter *w);
    void (*close)(struct store *st);
    const char *(*last_error)(const struct store *st);
    int (*schema_version)(const struct store *st);
    int (*begin)(struct store *st);
    int (*commit)(struct store *st);
    int (*rollback)(struct store *st);
    bool (*in_transaction)(const struct store *st);
    int (*ping)(struct store *st);
    int (*backup)(struct store *st, const char *dest_path, int64_t *pages);
    int (*stats)(struct store *st, struct store_stats *out);
    void (*wal_stats)(struct store *st, struct store_wal_stats *out);
    int (*check_plans)(struct store *st);
    int (*session_begin)(struct store *st, const char *user, const char *remote_addr, const char *user_agent, const char *subprotocol, int64_t now, int64_t *id);
    int (*session_touch)(struct store *st, int64_t id, int64_t now);
    int (*session_end)(struct store *st, int64_t id, int64_t now, const char *reason);
    int (*session_end_orphans)(struct store *st, int64_t now, const char *reason, int64_t *count);
    int (*session_get)(struct store *st, int64_t id, struct store_session *out);
    int (*session_list)(struct store *st, const struct store_session_filter *f, store_session_fn *cb, void *ctx);
    int (*session_count_active)(struct store *st, const char *user, int64_t *count);
    int (*presence_set)(struct store *st, const char *user, bool online, int connections, int64_t now);
    int (*presence_get)(struct store *st, const char *user, bool *online, int *connections, int64_t *last_seen);
    int (*msg_insert)(struct store *st, const struct store_msg *m, struct store_receipt *out);
    int (*msg_ack)(struct store *st, const char *user, int64_t msg_id, int64_t session_id, int64_t now);
    int (*msg_ack_first)(struct store *st, const char *user, int64_t msg_id, int64_t session_id, int64_t now, bool *first);
    int (*pending_direct)(struct store *st, const char *user, int64_t after_id, int limit, store_msg_fn *cb, void *ctx);
    int (*history_direct)(struct store *st, const char *user_a, const char *user_b, int64_t before_id, int limit, store_msg_fn *cb, void *ctx, bool *more);
    int (*history_room)(struct store *st, const char *room, int64_t before_id, int limit, store_msg_fn *cb, void *ctx, bool *more);
    int (*msg_get)(struct store *st, int64_t id, struct store_msg_info *out);
    int (*room_join)(struct store *st, const char *room, const char *user, int64_t now, bool *joined);
    int (*room_join_via)(struct store *st, const char *room, const char *user, int64_t now, enum store_via via, bool *joined);
    int (*room_add)(struct store *st, const char *room, const char *user, int64_t now, bool *added);
    int (*room_member_via)(struct store *st, const char *room, const char *user, enum store_via *via);
    int (*room_delete)(struct store *st, const char *room, int64_t now, store_name_fn *cb, void *ctx);
    int (*rooms_list)(struct store *st, const char *after, int limit, store_room_fn *cb, void *ctx, bool *more);
    int (*room_member_count)(struct store *st, const char *room, int64_t *count);
    int (*user_conversations)(struct store *st, const char *user, int64_t before_id, int limit, store_conversation_fn *cb, void *ctx, bool *more);
    int (*retention_step)(struct store *st, int64_t cutoff, int64_t keep, int budget, int64_t *deleted);
    int (*user_erase)(struct store *st, const char *user, int64_t now, int64_t *tombstoned);
    int (*atomic_begin)(struct store *st, bool *own_txn);
    int (*atomic_end)(struct store *st, bool own_txn, int rc);
    int (*msg_delete)(struct store *st, int64_t id, int64_t now);
    int (*room_leave)(struct store *st, const char *room, const char *user);
    int (*room_is_member)(struct store *st, const char *room, const char *user, bool *member);
    int (*room_cursor)(struct store *st, const char *room, const char *user, int64_t *cursor);
    int (*room_members)(struct store *st, const char *room, store_name_fn *cb, void *ctx);
    int (*user_rooms)(struct store *st, const char *user, store_name_fn *cb, void *ctx);
    int (*users_sharing_room)(struct store *st, const char *user, store_name_fn *cb, void *ctx);
    int (*room_replay)(struct store *st, const char *room, const char *user, int limit, store_msg_fn *cb, void *ctx, bool *truncated);
    int (*outbox_add)(struct store *st, const char *user, const char *type, const char *payload, int64_t now, int64_t max_queued, int64_t *id);
    int (*outbox_scan)(struct store *st, int64_t now, int max_rows, store_event_fn *cb, bool (*skip)(void *ctx, int64_t id), void *ctx);
    int (*outbox_scan_after)(struct store *st, int64_t now, int64_t *after, int max_rows, store_event_fn *cb, bool (*skip)(void *ctx, int64_t id), void *ctx);
    uint64_t (*outbox_replays)(const struct store *st);
    int (*outbox_delivered)(struct store *st, const int64_t *ids, size_t n);
    int (*outbox_retry)(struct store *st, const int64_t *ids, size_t n, int64_t now, int64_t next_at, int64_t dead_before, const char *error, int *dead);
    int (*outbox_expire)(struct store *st, int64_t dead_before, int64_t now, int limit, int64_t *count);
    int (*outbox_dead_list)(struct store *st, int64_t after_id, int limit, store_event_fn *cb, void *ctx);
    int (*outbox_replay)(struct store *st, int64_t id, int limit, int64_t now, int64_t *count);
    int (*outbox_counts)(struct store *st, struct store_outbox_counts *out);
    int (*node_join)(struct store *st, const char *name, int64_t boot, int64_t lease_ms, int64_t now,
                     int64_t *node_id);
    int (*node_renew)(struct store *st, int64_t now, int64_t lease_ms, bool *lost);
    int (*node_leave)(struct store *st, int64_t now);
    int (*node_sweep)(struct store *st, int64_t now, store_lost_fn *cb, void *ctx, int *nodes);
    int (*nodes_list)(struct store *st, store_node_fn *cb, void *ctx);
    int (*outbox_owner)(struct store *st, bool *mine);
    int (*commit_start)(struct store *st, int *fd);
    int (*commit_poll)(struct store *st, enum store_poll how, bool *done);
    int (*cluster_note)(struct store *st, const char *kind, const char *target, int64_t ref,
                        const char *payload, int64_t now);
};

/* The first member of every backend's handle. */
static inline const struct store_ops *store_ops_of(const struct store *st)
{
    return *(const struct store_ops *const *)(const void *)st;
}

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops;

/* Each backend's store_open (same contract as store_open; path is a file or a conninfo). */
int sq_open(struct store **out, const char *path, const struct store_opts *opts, char *err,
            size_t errlen);
int pg_open(struct store **out, const char *conninfo, const struct store_opts *opts, char *err,
            size_t errlen);

#endif
