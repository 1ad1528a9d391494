/*
 * chat_session.c -- a chat session's life: accept (session row, registry, presence, welcome, replay),
 * the heartbeat's touch, the token expiry timer, the admin kick, and the one end path that every way
 * a connection ends goes through (on_close). Also the chat state itself.
 */
#include <assert.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/registry.h"
#include "chat/chat_internal.h"
#include "proto/ws_handshake.h"
#include "store.h"

static void chat_on_ping(struct conn *c, void *data);
static void chat_on_close(struct conn *c, void *data, enum end_reason why);

const struct conn_handler chat_handler = {
    .name = "chat",
    .on_message = chat_on_message,
    .on_drained = chat_on_drained,
    .on_ping = chat_on_ping,
    .on_close = chat_on_close,
};

/* ---- session ends that must reach the store ---- */

#define ENDS_RETRY_FIRST_MS 250
#define ENDS_RETRY_MAX_MS 5000
#define EXPIRY_SWEEP_MS 500 /* a token's session ends at most this late after exp + leeway */

static void expiry_sweep_cb(evutil_socket_t fd, short what, void *arg);

/*
 * Write one end: the row's last_seen and end, and the user's presence as the registry says now (a
 * retry must not mark offline a user who came back meanwhile). 0, or -1 when a statement failed.
 */
static int end_write(struct chat *ch, const struct chat_end *e)
{
    loop_tx_begin(ch->lp);
    size_t live = registry_count(ch->users, e->user);
    int rc = store_session_touch(ch->store, e->session_id, e->seen);
    if (rc == 0 || rc == STORE_ERR_NOTFOUND)
        rc = store_session_end(ch->store, e->session_id, e->ended_at, end_reason_name(e->why));
    if (rc != 0 && rc != STORE_ERR_NOTFOUND) { /* NOTFOUND: already ended; the first end wins */
        log_error("store: end session %lld: %s", (long long)e->session_id,
                  store_last_error(ch->store));
        return -1;
    }
    if (rc == 0) /* in the same transaction as the end: once per session */
        events_session_closed(ch, e->session_id, e->user, end_reason_name(e->why), e->ended_at);
    if (store_presence_set(ch->store, e->user, live > 0, (int)live, e->seen) != 0) {
        log_error("store: presence of %s: %s", e->user, store_last_error(ch->store));
        return -1;
    }
    return 0;
}

static void ends_retry_later(struct chat *ch, struct chat_end *e)
{
    e->next = ch->ends_retry;
    ch->ends_retry = e;
    if (!evtimer_pending(ch->retry_ev, NULL)) {
        ch->retry_ms = ch->retry_ms ? ch->retry_ms : ENDS_RETRY_FIRST_MS;
        struct timeval tv = {.tv_sec = ch->retry_ms / 1000, .tv_usec = (ch->retry_ms % 1000) * 1000};
        evtimer_add(ch->retry_ev, &tv);
    }
}

static void end_committed_cb(void *arg, bool ok);

/* Write e and settle it after the commit; a failure queues it for the retry timer. */
static void end_store(struct chat *ch, struct chat_end *e)
{
    if (end_write(ch, e) != 0) {
        ends_retry_later(ch, e);
        return;
    }
    loop_after_commit(ch->lp, end_committed_cb, e);
}

static void end_committed_cb(void *arg, bool ok)
{
    struct chat_end *e = arg;
    struct chat *ch = e->chat;
    if (!ok) {
        ends_retry_later(ch, e);
        return;
    }
    ch->ends_unsettled--;
    ch->retry_ms = 0; /* the store answers again */
    if (e->offline_check) {
        chat_cluster_end_pending(ch, e->user, -1);
        if (registry_count(ch->users, e->user) == 0)
            chat_cluster_offline_check(ch, e->user, e->seen);
    }
    free(e);
}

static void ends_retry_job(void *arg)
{
    struct chat *ch = arg;
    struct chat_end *list = ch->ends_retry;
    ch->ends_retry = NULL;
    log_info("store: writing %zu session ends again", ch->ends_unsettled);
    ch->retry_ms = ch->retry_ms * 2 < ENDS_RETRY_MAX_MS ? ch->retry_ms * 2 : ENDS_RETRY_MAX_MS;
    while (list) {
        struct chat_end *e = list;
        list = e->next;
        end_store(ch, e);
    }
}

static void ends_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loop_call_once(((struct chat *)arg)->lp, ends_retry_job, arg); /* on the store fiber (net/gate.h) */
}

/* Record the end of cc's session; it reaches the store now or, after an outage, by the retries. */
static void session_end(struct chat_conn *cc, enum end_reason why, int64_t now, int64_t seen,
                        bool offline_check)
{
    struct chat *ch = cc->chat;
    struct chat_end *e = calloc(1, sizeof(*e));
    if (!e) {
        log_error("out of memory ending session %lld", (long long)cc->session_id);
        return;
    }
    e->chat = ch;
    e->session_id = cc->session_id;
    e->ended_at = now;
    e->seen = seen;
    e->why = why;
    e->offline_check = offline_check;
    snprintf(e->user, sizeof(e->user), "%s", cc->user);
    if (offline_check)
        chat_cluster_end_pending(ch, e->user, +1);
    ch->ends_unsettled++;
    end_store(ch, e);
}

struct chat *chat_new(struct loop *lp, const struct auth *auth)
{
    struct chat *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return NULL;
    ch->lp = lp;
    ch->cfg = lp->cfg;
    ch->store = lp->store;
    ch->auth = auth;
    ch->users = registry_map_new();
    ch->rooms = registry_map_new();
    ch->retry_ev = evtimer_new(lp->base, ends_retry_cb, ch);
    ch->expiry_ev = event_new(lp->base, -1, EV_PERSIST, expiry_sweep_cb, ch);
    if (ch->expiry_ev) {
        struct timeval tv = {0, EXPIRY_SWEEP_MS * 1000};
        evtimer_add(ch->expiry_ev, &tv);
    }
    if (!ch->users || !ch->rooms || !ch->retry_ev || !ch->expiry_ev || events_new(ch) != 0 ||
        chat_retention_start(ch) != 0) {
        chat_free(ch);
        return NULL;
    }
    return ch;
}

void chat_free(struct chat *ch)
{
    if (!ch)
        return;
    assert(!ch->sessions);
    if (ch->ends_unsettled)
        log_warn("store: %zu session ends could not be stored; the next start ends them as "
                 "server_restart", ch->ends_unsettled);
    while (ch->ends_retry) {
        struct chat_end *e = ch->ends_retry;
        ch->ends_retry = e->next;
        free(e);
    }
    if (ch->retry_ev)
        event_free(ch->retry_ev);
    if (ch->expiry_ev)
        event_free(ch->expiry_ev);
    chat_retention_stop(ch);
    events_free(ch);
    registry_map_free(ch->users);
    registry_map_free(ch->rooms);
    free(ch);
}

void chat_shutdown(struct chat *ch)
{
    ch->draining = true;
}

static void conn_free_state(struct chat_conn *cc)
{
    free(cc->claim);
    chat_replay_free(cc);
    free(cc);
}

void chat_conn_enter(struct chat_conn *cc)
{
    cc->busy++;
}

void chat_conn_leave(struct chat_conn *cc)
{
    assert(cc->busy > 0);
    if (--cc->busy == 0 && cc->ended)
        conn_free_state(cc);
}

/* ---- token expiry ---- */

/* Tokens are accepted up to exp + leeway (clock skew); the connection lives as long. */
static bool token_expired(const struct chat_conn *cc, int64_t now)
{
    return cc->exp_ms > 0 && !cc->ended && now >= cc->exp_ms + cc->chat->auth->leeway_ms;
}

/*
 * Close the sessions whose token expired. One sweep of the session list every EXPIRY_SWEEP_MS
 * instead of a timer per session (an event is 128 bytes of every connection's memory; JWT exp has
 * one-second resolution anyway). Closing one session sends presence events that may close others
 * (slow consumers), so the expired ones are collected first, each kept allocated (enter) until
 * its own close is done.
 */
static void expiry_sweep_job(void *arg)
{
    struct chat *ch = arg;
    int64_t now = loop_now_ms(ch->lp);
    size_t n = 0;
    for (struct chat_conn *cc = ch->sessions; cc; cc = cc->next)
        n += token_expired(cc, now);
    struct chat_conn **due = n ? malloc(n * sizeof(*due)) : NULL;
    if (!due)
        return; /* none, or no memory: the next sweep tries again */
    size_t k = 0;
    for (struct chat_conn *cc = ch->sessions; cc && k < n; cc = cc->next)
        if (token_expired(cc, now)) {
            chat_conn_enter(cc);
            due[k++] = cc;
        }
    for (size_t i = 0; i < k; i++) {
        struct chat_conn *cc = due[i];
        if (!cc->ended) {
            log_info("conn %llu %s: token of %s expired", (unsigned long long)cc->conn->id,
                     cc->conn->addr, cc->user);
            conn_close(cc->conn, WS_CLOSE_POLICY, "token expired", END_TOKEN_EXPIRED);
        }
        chat_conn_leave(cc);
    }
    free(due);
}

static void expiry_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loop_call_once(((struct chat *)arg)->lp, expiry_sweep_job, arg); /* on the store fiber (net/gate.h) */
}

/* ---- accept ---- */

static int collect_room(void *ctx, const char *room)
{
    struct chat_conn *cc = ctx;
    chat_index_add(cc, room);
    char **grown = realloc(cc->replay_rooms, (cc->num_replay_rooms + 1) * sizeof(*grown));
    if (!grown)
        return 1;
    cc->replay_rooms = grown;
    if (!(cc->replay_rooms[cc->num_replay_rooms] = strdup(room)))
        return 1;
    cc->num_replay_rooms++;
    return 0;
}

static void send_welcome(struct chat_conn *cc)
{
    const struct px_config *cfg = cc->chat->cfg;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"type\":\"welcome\",\"session\":\"");
    sbuf_add_i64(&b, cc->session_id);
    sbuf_adds(&b, "\",\"user\":");
    sbuf_add_json_str(&b, cc->user);
    /* Seconds, as the protocol says; a fraction when the interval is not whole (tests use 200ms). */
    sbuf_adds(&b, ",\"ping_interval\":");
    if (cfg->ping_interval_ms % 1000)
        sbuf_addf(&b, "%.3g", (double)cfg->ping_interval_ms / 1000.0);
    else
        sbuf_add_i64(&b, cfg->ping_interval_ms / 1000);
    /* The rooms this user is in, so a client on a new device knows them without asking. */
    sbuf_adds(&b, ",\"rooms\":[");
    for (size_t i = 0; i < cc->num_replay_rooms; i++) {
        if (i)
            sbuf_adds(&b, ",");
        sbuf_add_json_str(&b, cc->replay_rooms[i]);
    }
    sbuf_adds(&b, "]}");
    chat_send_sbuf(cc, &b, MK_WELCOME);
    sbuf_release(&b);
}

/* Session row, registry, presence, welcome, replay. -1 when the session cannot be started. */
static int session_start(struct chat_conn *cc, const char *user_agent, const char *subprotocol)
{
    struct chat *ch = cc->chat;
    int64_t now = loop_now_ms(ch->lp);
    loop_tx_begin(ch->lp);
    if (store_session_begin(ch->store, cc->user, cc->conn->addr, user_agent[0] ? user_agent : NULL,
                            subprotocol, now, &cc->session_id) != 0) {
        ch->lp->metrics.store_errors++;
        log_error("store: session for %s: %s", cc->user, store_last_error(ch->store));
        cc->session_id = 0; /* no row to end */
        return -1;
    }
    events_session_opened(ch, cc->session_id, cc->user, cc->conn->addr, user_agent);
    cc->user_mem = registry_join(ch->users, cc->user, cc);
    if (!cc->user_mem)
        return -1;
    size_t devices = cc->user_mem->group->count;
    if (store_presence_set(ch->store, cc->user, true, (int)devices, now) != 0)
        log_error("store: presence of %s: %s", cc->user, store_last_error(ch->store));
    log_info("conn %llu %s: session %lld user %s (%zu connection%s)",
             (unsigned long long)cc->conn->id, cc->conn->addr, (long long)cc->session_id, cc->user,
             devices, devices == 1 ? "" : "s");

    if (store_user_rooms(ch->store, cc->user, collect_room, cc) < 0)
        log_error("store: rooms of %s: %s", cc->user, store_last_error(ch->store));
    /* In a cluster the user may be online on another node already: not news then. */
    if (devices == 1 && !chat_cluster_end_is_pending(ch, cc->user) &&
        !chat_cluster_online_elsewhere(ch, cc->user, 1)) {
        chat_presence_event(ch, cc, true, now);
        events_user_online(ch, cc->user);
    }
    send_welcome(cc);
    cc->phase = REPLAY_DIRECT;
    chat_replay_continue(cc);
    return 0;
}

/* session_start's arguments, kept until it runs (conn_call: maybe after the store fiber's queue). */
struct start_args {
    struct chat_conn *cc;
    bool has_sub;
    size_t sub_off;
    char strings[]; /* user agent, NUL, subprotocol, NUL */
};

static void start_call(struct conn *c, void *arg)
{
    struct start_args *a = arg;
    struct chat_conn *cc = a->cc;
    /* Ended before its turn came (its on_close is queued behind): nothing to start. */
    if (c->data == cc && !cc->ended) {
        chat_conn_enter(cc);
        if (session_start(cc, a->strings, a->has_sub ? a->strings + a->sub_off : NULL) != 0)
            conn_fail(c, WS_CLOSE_INTERNAL, "internal error", END_INTERNAL_ERROR);
        chat_conn_leave(cc);
    }
    free(a);
}

void chat_accept(struct chat *ch, struct conn *c, const struct ws_handshake_result *hs,
                 const struct auth_identity *id, const char *user_agent)
{
    struct chat_conn *cc = calloc(1, sizeof(*cc));
    if (!cc) {
        log_error("conn %llu %s: out of memory opening a chat session", (unsigned long long)c->id,
                  c->addr);
        conn_http_text(c, 503, "Retry-After: 5\r\n", "out of memory");
        return;
    }
    cc->chat = ch;
    cc->conn = c;
    snprintf(cc->user, sizeof(cc->user), "%s", id->user);
    cc->exp_ms = id->exp_ms;
    if (chat_claim_set(cc, id) != 0) {
        free(cc);
        log_error("conn %llu %s: out of memory opening a chat session", (unsigned long long)c->id,
                  c->addr);
        conn_http_text(c, 503, "Retry-After: 5\r\n", "out of memory");
        return;
    }
    cc->next = ch->sessions;
    if (ch->sessions)
        ch->sessions->prev = cc;
    ch->sessions = cc;
    const char *sub = hs->subprotocol ? hs->subprotocol : "";
    size_t ua_len = strlen(user_agent), sub_len = strlen(sub);
    struct start_args *a = malloc(sizeof(*a) + ua_len + sub_len + 2);
    if (!a) {
        free(cc->claim);
        free(cc);
        ch->sessions = ch->sessions->next;
        if (ch->sessions)
            ch->sessions->prev = NULL;
        log_error("conn %llu %s: out of memory opening a chat session", (unsigned long long)c->id,
                  c->addr);
        conn_http_text(c, 503, "Retry-After: 5\r\n", "out of memory");
        return;
    }
    a->cc = cc;
    a->has_sub = hs->subprotocol != NULL;
    memcpy(a->strings, user_agent, ua_len + 1);
    memcpy(a->strings + ua_len + 1, sub, sub_len + 1);
    a->sub_off = ua_len + 1;
    conn_upgrade(c, hs, &chat_handler, cc);
    conn_call(c, start_call, a); /* it writes the session row: where the store may be used */
}

/* ---- heartbeat and end ---- */

/*
 * The heartbeat pinged: record that the peer was heard from (last_seen_at = its last frame) in the
 * session row, batched into the loop's group commit, so admins see live sessions as live.
 */
static void chat_on_ping(struct conn *c, void *data)
{
    (void)c;
    struct chat_conn *cc = data;
    if (cc->ended || cc->session_id == 0 || cc->conn->last_rx_ms <= 0)
        return;
    loop_tx_begin(cc->chat->lp);
    if (store_session_touch(cc->chat->store, cc->session_id, cc->conn->last_rx_ms) != 0)
        log_error("store: touch session %lld: %s", (long long)cc->session_id,
                  store_last_error(cc->chat->store));
}

/*
 * The one cleanup path for a chat connection, whatever ended it: unregister, end the session row
 * with why, presence offline (and the event) on the user's last connection.
 */
static void chat_on_close(struct conn *c, void *data, enum end_reason why)
{
    (void)c;
    struct chat_conn *cc = data;
    assert(!cc->ended);
    cc->ended = true;
    struct chat *ch = cc->chat;
    if (cc->prev)
        cc->prev->next = cc->next;
    else
        ch->sessions = cc->next;
    if (cc->next)
        cc->next->prev = cc->prev;
    cc->prev = cc->next = NULL;

    int64_t now = loop_now_ms(ch->lp);
    int64_t seen = cc->conn->last_rx_ms > 0 ? cc->conn->last_rx_ms : now;
    size_t left = cc->user_mem ? cc->user_mem->group->count - 1 : 0;
    bool local_last = left == 0 && cc->user_mem;
    /*
     * In a cluster, whether this was the user's last connection anywhere is only known once the
     * end has committed (another node may be ending one at the same moment): asked then
     * (chat_cluster_offline_check). Alone, it is known now.
     */
    bool last = local_last && !chat_clustered(ch);
    /* Told while this connection is still in its rooms: they say who shares one with the user. */
    if (last)
        chat_presence_event(ch, cc, false, seen);
    chat_rooms_leave_all(cc);
    if (cc->user_mem)
        registry_leave(ch->users, cc->user_mem);
    cc->user_mem = NULL;

    if (cc->session_id != 0 && cc->erased) {
        /* the user's data was erased (API): nothing of this session is written again */
        log_info("conn %llu %s: session %lld of erased user %s ended (%s)",
                 (unsigned long long)cc->conn->id, cc->conn->addr, (long long)cc->session_id,
                 cc->user, end_reason_name(why));
    } else if (cc->session_id != 0) {
        session_end(cc, why, now, seen, local_last && chat_clustered(ch));
        if (last)
            events_user_offline(ch, cc->user); /* after session.closed; delayed by offline_delay */
        log_info("conn %llu %s: session %lld of %s ended (%s)", (unsigned long long)cc->conn->id,
                 cc->conn->addr, (long long)cc->session_id, cc->user, end_reason_name(why));
    }
    if (cc->busy == 0)
        conn_free_state(cc);
}

void chat_close_all(struct chat *ch, const char *why)
{
    struct chat_conn *next;
    for (struct chat_conn *cc = ch->sessions; cc; cc = next) {
        next = cc->next; /* the close unlinks cc */
        if (conn_is_open(cc->conn))
            conn_close(cc->conn, WS_CLOSE_TRY_AGAIN, why, END_NODE_LOST);
    }
}

int chat_kick(struct chat *ch, int64_t session_id)
{
    for (struct chat_conn *cc = ch->sessions; cc; cc = cc->next)
        if (cc->session_id == session_id && conn_is_open(cc->conn)) {
            log_info("conn %llu %s: session %lld kicked by the API",
                     (unsigned long long)cc->conn->id, cc->conn->addr, (long long)session_id);
            conn_close(cc->conn, WS_CLOSE_POLICY, "kicked", END_KICKED);
            return 0;
        }
    return -1;
}
