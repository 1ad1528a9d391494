/*
 * store_api.c -- store.h's functions: each hands the call to the backend the handle was opened with
 * (store_ops.h). Generated once from store.h; a new store function gets its line here and a member
 * in struct store_ops, and the compiler then asks each backend for it.
 */
#include "store_ops.h"

int store_open(struct store **out, const char *path, const struct store_opts *opts, char *err,
               size_t errlen)
{
    if (opts && opts->backend == STORE_BACKEND_POSTGRESQL)
        return pg_open(out, path, opts, err, errlen);
    return sq_open(out, path, opts, err, errlen);
}

const char *store_backend_name(const struct store *st)
{
    return store_ops_of(st)->name;
}

void store_set_lock_wait(struct store *st, int ms)
{
    store_ops_of(st)->set_lock_wait(st, ms);
}

void store_set_waiter(struct store *st, const struct store_waiter *w)
{
    if (store_ops_of(st)->set_waiter)
        store_ops_of(st)->set_waiter(st, w);
}

void store_close(struct store *st)
{
    if (st)
        store_ops_of(st)->close(st);
}

const char *store_last_error(const struct store *st)
{
    return st ? store_ops_of(st)->last_error(st) : "no store";
}

int store_schema_version(const struct store *st)
{
    return store_ops_of(st)->schema_version(st);
}

int store_begin(struct store *st)
{
    return store_ops_of(st)->begin(st);
}

int store_commit(struct store *st)
{
    return store_ops_of(st)->commit(st);
}

int store_rollback(struct store *st)
{
    return store_ops_of(st)->rollback(st);
}

bool store_in_transaction(const struct store *st)
{
    return store_ops_of(st)->in_transaction(st);
}

int store_ping(struct store *st)
{
    return store_ops_of(st)->ping(st);
}

int store_backup(struct store *st, const char *dest_path, int64_t *pages)
{
    return store_ops_of(st)->backup(st, dest_path, pages);
}

int store_stats(struct store *st, struct store_stats *out)
{
    return store_ops_of(st)->stats(st, out);
}

void store_wal_stats(struct store *st, struct store_wal_stats *out)
{
    store_ops_of(st)->wal_stats(st, out);
}

int store_check_plans(struct store *st)
{
    return store_ops_of(st)->check_plans(st);
}

int store_session_begin(struct store *st, const char *user, const char *remote_addr, const char *user_agent, const char *subprotocol, int64_t now, int64_t *id)
{
    return store_ops_of(st)->session_begin(st, user, remote_addr, user_agent, subprotocol, now, id);
}

int store_session_touch(struct store *st, int64_t id, int64_t now)
{
    return store_ops_of(st)->session_touch(st, id, now);
}

int store_session_end(struct store *st, int64_t id, int64_t now, const char *reason)
{
    return store_ops_of(st)->session_end(st, id, now, reason);
}

int store_session_end_orphans(struct store *st, int64_t now, const char *reason, int64_t *count)
{
    return store_ops_of(st)->session_end_orphans(st, now, reason, count);
}

int store_session_get(struct store *st, int64_t id, struct store_session *out)
{
    return store_ops_of(st)->session_get(st, id, out);
}

int store_session_list(struct store *st, const struct store_session_filter *f, store_session_fn *cb, void *ctx)
{
    return store_ops_of(st)->session_list(st, f, cb, ctx);
}

int store_session_count_active(struct store *st, const char *user, int64_t *count)
{
    return store_ops_of(st)->session_count_active(st, user, count);
}

int store_presence_set(struct store *st, const char *user, bool online, int connections, int64_t now)
{
    return store_ops_of(st)->presence_set(st, user, online, connections, now);
}

int store_presence_get(struct store *st, const char *user, bool *online, int *connections, int64_t *last_seen)
{
    return store_ops_of(st)->presence_get(st, user, online, connections, last_seen);
}

int store_msg_insert(struct store *st, const struct store_msg *m, struct store_receipt *out)
{
    return store_ops_of(st)->msg_insert(st, m, out);
}

int store_msg_ack(struct store *st, const char *user, int64_t msg_id, int64_t session_id, int64_t now)
{
    return store_ops_of(st)->msg_ack(st, user, msg_id, session_id, now);
}

int store_msg_ack_first(struct store *st, const char *user, int64_t msg_id, int64_t session_id, int64_t now, bool *first)
{
    return store_ops_of(st)->msg_ack_first(st, user, msg_id, session_id, now, first);
}

int store_pending_direct(struct store *st, const char *user, int64_t after_id, int limit, store_msg_fn *cb, void *ctx)
{
    return store_ops_of(st)->pending_direct(st, user, after_id, limit, cb, ctx);
}

int store_history_direct(struct store *st, const char *user_a, const char *user_b, int64_t before_id, int limit, store_msg_fn *cb, void *ctx, bool *more)
{
    return store_ops_of(st)->history_direct(st, user_a, user_b, before_id, limit, cb, ctx, more);
}

int store_history_room(struct store *st, const char *room, int64_t before_id, int limit, store_msg_fn *cb, void *ctx, bool *more)
{
    return store_ops_of(st)->history_room(st, room, before_id, limit, cb, ctx, more);
}

int store_msg_get(struct store *st, int64_t id, struct store_msg_info *out)
{
    return store_ops_of(st)->msg_get(st, id, out);
}

int store_room_join(struct store *st, const char *room, const char *user, int64_t now, bool *joined)
{
    return store_ops_of(st)->room_join(st, room, user, now, joined);
}

int store_room_join_via(struct store *st, const char *room, const char *user, int64_t now, enum store_via via, bool *joined)
{
    return store_ops_of(st)->room_join_via(st, room, user, now, via, joined);
}

int store_room_add(struct store *st, const char *room, const char *user, int64_t now, bool *added)
{
    return store_ops_of(st)->room_add(st, room, user, now, added);
}

int store_room_member_via(struct store *st, const char *room, const char *user, enum store_via *via)
{
    return store_ops_of(st)->room_member_via(st, room, user, via);
}

int store_room_delete(struct store *st, const char *room, int64_t now, store_name_fn *cb, void *ctx)
{
    return store_ops_of(st)->room_delete(st, room, now, cb, ctx);
}

int store_rooms_list(struct store *st, const char *after, int limit, store_room_fn *cb, void *ctx, bool *more)
{
    return store_ops_of(st)->rooms_list(st, after, limit, cb, ctx, more);
}

int store_room_member_count(struct store *st, const char *room, int64_t *count)
{
    return store_ops_of(st)->room_member_count(st, room, count);
}

int store_user_conversations(struct store *st, const char *user, int64_t before_id, int limit, store_conversation_fn *cb, void *ctx, bool *more)
{
    return store_ops_of(st)->user_conversations(st, user, before_id, limit, cb, ctx, more);
}

int store_retention_step(struct store *st, int64_t cutoff, int64_t keep, int budget, int64_t *deleted)
{
    return store_ops_of(st)->retention_step(st, cutoff, keep, budget, deleted);
}

int store_user_erase(struct store *st, const char *user, int64_t now, int64_t *tombstoned)
{
    return store_ops_of(st)->user_erase(st, user, now, tombstoned);
}

int store_atomic_begin(struct store *st, bool *own_txn)
{
    return store_ops_of(st)->atomic_begin(st, own_txn);
}

int store_atomic_end(struct store *st, bool own_txn, int rc)
{
    return store_ops_of(st)->atomic_end(st, own_txn, rc);
}

int store_msg_delete(struct store *st, int64_t id, int64_t now)
{
    return store_ops_of(st)->msg_delete(st, id, now);
}

int store_room_leave(struct store *st, const char *room, const char *user)
{
    return store_ops_of(st)->room_leave(st, room, user);
}

int store_room_is_member(struct store *st, const char *room, const char *user, bool *member)
{
    return store_ops_of(st)->room_is_member(st, room, user, member);
}

int store_room_cursor(struct store *st, const char *room, const char *user, int64_t *cursor)
{
    return store_ops_of(st)->room_cursor(st, room, user, cursor);
}

int store_room_members(struct store *st, const char *room, store_name_fn *cb, void *ctx)
{
    return store_ops_of(st)->room_members(st, room, cb, ctx);
}

int store_user_rooms(struct store *st, const char *user, store_name_fn *cb, void *ctx)
{
    return store_ops_of(st)->user_rooms(st, user, cb, ctx);
}

int store_users_sharing_room(struct store *st, const char *user, store_name_fn *cb, void *ctx)
{
    return store_ops_of(st)->users_sharing_room(st, user, cb, ctx);
}

int store_room_replay(struct store *st, const char *room, const char *user, int limit, store_msg_fn *cb, void *ctx, bool *truncated)
{
    return store_ops_of(st)->room_replay(st, room, user, limit, cb, ctx, truncated);
}

int store_outbox_add(struct store *st, const char *user, const char *type, const char *payload, int64_t now, int64_t max_queued, int64_t *id)
{
    return store_ops_of(st)->outbox_add(st, user, type, payload, now, max_queued, id);
}

int store_outbox_scan(struct store *st, int64_t now, int max_rows, store_event_fn *cb, bool (*skip)(void *ctx, int64_t id), void *ctx)
{
    return store_ops_of(st)->outbox_scan(st, now, max_rows, cb, skip, ctx);
}

int store_outbox_scan_after(struct store *st, int64_t now, int64_t *after, int max_rows, store_event_fn *cb, bool (*skip)(void *ctx, int64_t id), void *ctx)
{
    return store_ops_of(st)->outbox_scan_after(st, now, after, max_rows, cb, skip, ctx);
}

uint64_t store_outbox_replays(const struct store *st)
{
    return store_ops_of(st)->outbox_replays(st);
}

int store_outbox_delivered(struct store *st, const int64_t *ids, size_t n)
{
    return store_ops_of(st)->outbox_delivered(st, ids, n);
}

int store_outbox_retry(struct store *st, const int64_t *ids, size_t n, int64_t now, int64_t next_at, int64_t dead_before, const char *error, int *dead)
{
    return store_ops_of(st)->outbox_retry(st, ids, n, now, next_at, dead_before, error, dead);
}

int store_outbox_expire(struct store *st, int64_t dead_before, int64_t now, int limit, int64_t *count)
{
    return store_ops_of(st)->outbox_expire(st, dead_before, now, limit, count);
}

int store_outbox_dead_list(struct store *st, int64_t after_id, int limit, store_event_fn *cb, void *ctx)
{
    return store_ops_of(st)->outbox_dead_list(st, after_id, limit, cb, ctx);
}

int store_outbox_replay(struct store *st, int64_t id, int limit, int64_t now, int64_t *count)
{
    return store_ops_of(st)->outbox_replay(st, id, limit, now, count);
}

int store_outbox_counts(struct store *st, struct store_outbox_counts *out)
{
    return store_ops_of(st)->outbox_counts(st, out);
}

int store_node_join(struct store *st, const char *name, int64_t boot, int64_t lease_ms, int64_t now,
                    int64_t *node_id)
{
    return store_ops_of(st)->node_join(st, name, boot, lease_ms, now, node_id);
}

int store_node_renew(struct store *st, int64_t now, int64_t lease_ms, bool *lost)
{
    return store_ops_of(st)->node_renew(st, now, lease_ms, lost);
}

int store_node_leave(struct store *st, int64_t now)
{
    return store_ops_of(st)->node_leave(st, now);
}

int store_node_sweep(struct store *st, int64_t now, store_lost_fn *cb, void *ctx, int *nodes)
{
    return store_ops_of(st)->node_sweep(st, now, cb, ctx, nodes);
}

int store_nodes_list(struct store *st, store_node_fn *cb, void *ctx)
{
    return store_ops_of(st)->nodes_list(st, cb, ctx);
}

int store_commit_start(struct store *st, int *fd)
{
    return store_ops_of(st)->commit_start(st, fd);
}

int store_commit_poll(struct store *st, enum store_poll how, bool *done)
{
    return store_ops_of(st)->commit_poll(st, how, done);
}

int store_outbox_owner(struct store *st, bool *mine)
{
    return store_ops_of(st)->outbox_owner(st, mine);
}

int store_cluster_note(struct store *st, const char *kind, const char *target, int64_t ref,
                       const char *payload, int64_t now)
{
    return store_ops_of(st)->cluster_note(st, kind, target, ref, payload, now);
}
