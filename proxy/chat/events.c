/*
 * events.c -- events to the app backend: the producers (session, presence with a debounced offline,
 * messages, unacked direct messages, room membership) write into the store's outbox inside the loop's
 * transaction, and the sender takes batches from it (a short indexed query), posts them through
 * net/backend after they are committed, and records the outcome: delivered, or retried with
 * exponential backoff until [events] max_age, then dead. Nothing here waits on a socket or blocks
 * chat delivery; a backend that is down only grows the outbox, up to max_outbox.
 */
#include <event2/event.h>
#include <inttypes.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "base/log.h"
#include "base/sbuf.h"
#include "chat/chat_internal.h"
#include "net/backend.h"
#include "store.h"

#define EVENTS_TICK_MS 100
#define EVENTS_HOUSEKEEP_MS 2000
#define EVENTS_HOUSEKEEP_ROWS 1000             /* rows expired per housekeeping pass */
#define EVENTS_UNACKED_MAX 100000              /* unacked checks waiting at most (memory bound) */
#define EVENTS_FULL_LOG_MS 10000               /* "outbox full" logged at most this often */

/* A user whose last connection ended: user.offline waits for offline_delay. */
struct offline_wait {
    struct events *ev;
    struct event *timer;
    UT_hash_handle hh;
    char user[AUTH_USER_MAX + 1];
};

struct unacked {
    int64_t id;
    int64_t due;
};

/* A batch taken from the outbox; in the in-flight list from its post to its answer (the lease). */
struct batch {
    struct events *ev;
    struct batch *next;
    int64_t *ids;
    uint64_t *users; /* hashes of the users of ids, sorted once taken: who is in flight */
    size_t n, cap, bytes;
    int max_attempts;
    struct sbuf body;
};

struct events {
    struct chat *ch;
    const struct px_config *cfg;
    struct backend *be;
    bool types[10];
    struct event *tick;      /* periodic: take due batches, housekeeping */
    struct event *kick;      /* soon after new events */
    struct event *unacked_ev;
    struct offline_wait *offline; /* uthash by user */
    struct unacked *uq;           /* ring of unacked checks in due order (the delay is constant) */
    size_t uq_head, uq_len;
    struct batch *in_flight;      /* posted, not answered: their users' later events wait */
    bool kick_armed;              /* committed_cb is waiting for the open transaction */
    int64_t scan_after;           /* outbox rows up to this id are in flight: not read again */
    uint64_t scan_replays;        /* store_outbox_replays when scan_after was last valid */
    size_t in_flight_events;
    int64_t last_housekeep, last_full_log;
    int64_t last_uq_log;          /* "unacked checks full" logged at most every EVENTS_FULL_LOG_MS */
    uint64_t uq_unwatched;        /* messages not watched since that line */
    struct store_outbox_counts counts;
    bool stopping;
    bool final; /* events_free: writes autocommit */
};

static const char *const type_names[] = {
    "session.opened", "session.closed", "user.online",     "user.offline", "message.direct",
    "message.room",   "message.push",   "message.unacked", "member.added", "member.removed"};

enum {
    EV_SESSION_OPENED, EV_SESSION_CLOSED, EV_USER_ONLINE, EV_USER_OFFLINE, EV_MESSAGE_DIRECT,
    EV_MESSAGE_ROOM, EV_MESSAGE_PUSH, EV_MESSAGE_UNACKED, EV_MEMBER_ADDED, EV_MEMBER_REMOVED
};

static bool on(const struct events *ev, int type)
{
    return ev && !ev->stopping && ev->types[type];
}

/*
 * Queue one event in the loop's transaction (or on its own when none can open). data is the JSON
 * object text of the event's "data". A full outbox or a store error drops the event: counted and
 * logged, never failing the change it describes.
 */
/* The transaction that queued events is over: take them soon (from the loop, not from the commit). */
static void committed_cb(void *arg, bool ok)
{
    (void)ok;
    struct events *ev = arg;
    ev->kick_armed = false;
    if (!ev->stopping && !evtimer_pending(ev->kick, NULL)) {
        struct timeval tv = {0, 0};
        evtimer_add(ev->kick, &tv);
    }
}

static void add(struct events *ev, int type, const char *user, struct sbuf *data)
{
    struct chat *ch = ev->ch;
    if (data->oom) {
        ch->lp->metrics.events_dropped++;
        return;
    }
    sbuf_add(data, "", 1); /* NUL-terminate for the store */
    if (!ev->final) /* at exit nothing commits the loop's transaction: autocommit instead */
        loop_tx_begin(ch->lp);
    int64_t now = loop_now_ms(ch->lp);
    int rc = store_outbox_add(ch->store, user, type_names[type], data->p, now,
                              (int64_t)ev->cfg->events_max_outbox, NULL);
    if (rc == 0) {
        ch->lp->metrics.events_queued++;
        if (!ev->kick_armed) { /* the sender sees the event once its transaction committed */
            ev->kick_armed = true;
            loop_after_commit(ch->lp, committed_cb, ev);
        }
        return;
    }
    ch->lp->metrics.events_dropped++;
    if (rc != STORE_ERR_FULL || now - ev->last_full_log >= EVENTS_FULL_LOG_MS) {
        ev->last_full_log = rc == STORE_ERR_FULL ? now : ev->last_full_log;
        log_error("events: %s for %s dropped: %s", type_names[type], user,
                  store_last_error(ch->store));
    }
}

/* ---- Producers ---- */

void events_session_opened(struct chat *ch, int64_t session_id, const char *user,
                           const char *remote_addr, const char *user_agent)
{
    struct events *ev = ch->events;
    if (!on(ev, EV_SESSION_OPENED))
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_addf(&b, "{\"session\":\"%" PRId64 "\",\"user\":", session_id);
    sbuf_add_json_str(&b, user);
    sbuf_adds(&b, ",\"remote_addr\":");
    sbuf_add_json_str(&b, remote_addr);
    if (user_agent && user_agent[0]) {
        sbuf_adds(&b, ",\"user_agent\":");
        sbuf_add_json_str(&b, user_agent);
    }
    sbuf_adds(&b, "}");
    add(ev, EV_SESSION_OPENED, user, &b);
    sbuf_release(&b);
}

void events_session_closed(struct chat *ch, int64_t session_id, const char *user, const char *reason,
                           int64_t ended_at)
{
    struct events *ev = ch->events;
    if (!on(ev, EV_SESSION_CLOSED))
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_addf(&b, "{\"session\":\"%" PRId64 "\",\"user\":", session_id);
    sbuf_add_json_str(&b, user);
    sbuf_adds(&b, ",\"reason\":");
    sbuf_add_json_str(&b, reason);
    sbuf_addf(&b, ",\"ended_at\":%" PRId64 "}", ended_at);
    add(ev, EV_SESSION_CLOSED, user, &b);
    sbuf_release(&b);
}

static void presence_event(struct events *ev, const char *user, bool online)
{
    int type = online ? EV_USER_ONLINE : EV_USER_OFFLINE;
    if (!on(ev, type))
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"user\":");
    sbuf_add_json_str(&b, user);
    sbuf_adds(&b, "}");
    add(ev, type, user, &b);
    sbuf_release(&b);
}

static void offline_job(void *arg);

static void offline_free(struct events *ev, struct offline_wait *w)
{
    loop_call_cancel(ev->ch->lp, offline_job, w); /* its timer may have fired: the job goes too */
    HASH_DEL(ev->offline, w);
    event_free(w->timer);
    free(w);
}

static void offline_job(void *arg)
{
    struct offline_wait *w = arg;
    struct events *ev = w->ev;
    presence_event(ev, w->user, false);
    offline_free(ev, w);
}

static void offline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loop_call_once(((struct offline_wait *)arg)->ev->ch->lp, offline_job, arg); /* on the store fiber (net/gate.h) */
}

void events_user_online(struct chat *ch, const char *user)
{
    struct events *ev = ch->events;
    if (!ev)
        return;
    struct offline_wait *w = NULL;
    HASH_FIND_STR(ev->offline, user, w);
    if (w) { /* back within offline_delay (a reload): neither offline nor online is told */
        offline_free(ev, w);
        return;
    }
    presence_event(ev, user, true);
}

void events_user_offline(struct chat *ch, const char *user)
{
    struct events *ev = ch->events;
    if (!on(ev, EV_USER_OFFLINE) && !on(ev, EV_USER_ONLINE))
        return;
    struct offline_wait *w = NULL;
    HASH_FIND_STR(ev->offline, user, w);
    if (w)
        return;
    if (ev->cfg->events_offline_delay_ms == 0 || ch->draining) {
        presence_event(ev, user, false);
        return;
    }
    w = calloc(1, sizeof(*w));
    if (!w || !(w->timer = evtimer_new(ch->lp->base, offline_cb, w))) {
        free(w);
        presence_event(ev, user, false);
        return;
    }
    w->ev = ev;
    snprintf(w->user, sizeof(w->user), "%s", user);
    HASH_ADD_STR(ev->offline, user, w);
    int64_t ms = ev->cfg->events_offline_delay_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(w->timer, &tv);
}

static void add_msg_fields(struct sbuf *b, const struct store_msg *m)
{
    sbuf_addf(b, "{\"id\":\"%" PRId64 "\",\"from\":", m->id);
    sbuf_add_json_str(b, m->sender);
    if (m->to_user) {
        sbuf_adds(b, ",\"to\":");
        sbuf_add_json_str(b, m->to_user);
    } else {
        sbuf_adds(b, ",\"room\":");
        sbuf_add_json_str(b, m->room);
    }
    sbuf_addf(b, ",\"created_at\":%" PRId64, m->created_at);
}

static void unacked_arm(struct events *ev)
{
    if (ev->uq_len == 0 || evtimer_pending(ev->unacked_ev, NULL))
        return;
    int64_t in = ev->uq[ev->uq_head].due - loop_now_ms(ev->ch->lp);
    if (in < 0)
        in = 0;
    struct timeval tv = {.tv_sec = in / 1000, .tv_usec = (in % 1000) * 1000};
    evtimer_add(ev->unacked_ev, &tv);
}

static void unacked_job(void *arg)
{
    struct events *ev = arg;
    struct chat *ch = ev->ch;
    int64_t now = loop_now_ms(ch->lp);
    /* Bounded per pass so a burst of due checks never holds the loop. */
    for (int k = 0; k < 1000 && ev->uq_len && ev->uq[ev->uq_head].due <= now; k++) {
        int64_t id = ev->uq[ev->uq_head].id;
        ev->uq_head = (ev->uq_head + 1) % EVENTS_UNACKED_MAX;
        ev->uq_len--;
        struct store_msg_info info = {0};
        if (store_msg_get(ch->store, id, &info) == 0 && info.direct && !info.delivered &&
            on(ev, EV_MESSAGE_UNACKED)) {
            struct sbuf b;
            sbuf_init(&b);
            add_msg_fields(&b, &info.msg);
            sbuf_adds(&b, "}");
            add(ev, EV_MESSAGE_UNACKED, info.msg.to_user, &b);
            sbuf_release(&b);
        }
        store_msg_info_release(&info);
    }
    unacked_arm(ev);
}

static void unacked_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loop_call_once(((struct events *)arg)->ch->lp, unacked_job, arg); /* on the store fiber (net/gate.h) */
}

void events_msg_stored(struct chat *ch, const struct store_msg *m, bool push)
{
    struct events *ev = ch->events;
    if (!ev)
        return;
    int type = push ? EV_MESSAGE_PUSH : m->to_user ? EV_MESSAGE_DIRECT : EV_MESSAGE_ROOM;
    if (on(ev, type)) {
        struct sbuf b;
        sbuf_init(&b);
        add_msg_fields(&b, m);
        sbuf_adds(&b, ",\"body\":");
        sbuf_adds(&b, m->body); /* stored JSON text, spliced as is */
        sbuf_adds(&b, "}");
        add(ev, type, m->to_user ? m->to_user : m->sender, &b);
        sbuf_release(&b);
    }
    if (m->to_user && on(ev, EV_MESSAGE_UNACKED)) {
        if (ev->uq_len == EVENTS_UNACKED_MAX) {
            /* one line per EVENTS_FULL_LOG_MS, not per message: at chat rates a line per
             * message was most of the log and a measurable share of the loop's CPU */
            int64_t now = loop_now_ms(ch->lp);
            ev->uq_unwatched++;
            if (now - ev->last_uq_log >= EVENTS_FULL_LOG_MS) {
                log_warn("events: %d unacked checks waiting; %" PRIu64 " message%s not watched"
                         " (the latest %" PRId64 ")", EVENTS_UNACKED_MAX, ev->uq_unwatched,
                         ev->uq_unwatched == 1 ? "" : "s", m->id);
                ev->last_uq_log = now;
                ev->uq_unwatched = 0;
            }
            return;
        }
        size_t tail = (ev->uq_head + ev->uq_len) % EVENTS_UNACKED_MAX;
        ev->uq[tail].id = m->id;
        ev->uq[tail].due = loop_now_ms(ch->lp) + ev->cfg->events_unacked_delay_ms;
        ev->uq_len++;
        unacked_arm(ev);
    }
}

void chat_event_member(struct chat *ch, const char *room, const char *user, bool added,
                       const char *reason)
{
    struct events *ev = ch->events;
    int type = added ? EV_MEMBER_ADDED : EV_MEMBER_REMOVED;
    if (!on(ev, type) || !chat_name_valid(room) || !chat_name_valid(user))
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_adds(&b, "{\"room\":");
    sbuf_add_json_str(&b, room);
    sbuf_adds(&b, ",\"user\":");
    sbuf_add_json_str(&b, user);
    if (reason && reason[0]) {
        sbuf_adds(&b, ",\"reason\":");
        sbuf_add_json_str(&b, reason);
    }
    sbuf_adds(&b, "}");
    add(ev, type, user, &b);
    sbuf_release(&b);
}

/* ---- After a crash ---- */

struct orphan {
    int64_t id;
    char *user;
};

struct orphans {
    struct orphan *v;
    size_t n, cap;
    bool oom;
    int64_t node;    /* cluster: only this node's sessions are its orphans */
    size_t seen;     /* rows of the current page, any node */
    int64_t last_id; /* the page's last (oldest) row */
};

static int collect_orphan(void *ctx, const struct store_session *s)
{
    struct orphans *o = ctx;
    o->seen++;
    o->last_id = s->id;
    if (o->node && s->node != o->node)
        return 0; /* another node's: alive, or the sweep ends it */
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        struct orphan *v = realloc(o->v, cap * sizeof(*v));
        if (!v) {
            o->oom = true;
            return 1;
        }
        o->v = v;
        o->cap = cap;
    }
    if (!(o->v[o->n].user = strdup(s->user))) {
        o->oom = true;
        return 1;
    }
    o->v[o->n++].id = s->id;
    return 0;
}

static int by_user(const void *a, const void *b)
{
    return strcmp(((const struct orphan *)a)->user, ((const struct orphan *)b)->user);
}

void chat_events_orphans(struct chat *ch, int64_t now)
{
    struct events *ev = ch->events;
    if (!on(ev, EV_SESSION_CLOSED) && !on(ev, EV_USER_OFFLINE))
        return;
    struct orphans o = {.node = chat_node_id(ch)};
    struct store_session_filter f = {.state = STORE_SESSIONS_ACTIVE, .limit = 1000};
    int rc;
    do { /* newest first, a page at a time */
        o.seen = 0;
        rc = store_session_list(ch->store, &f, collect_orphan, &o);
        if (rc != 0)
            break;
        f.before_id = o.last_id;
    } while (o.seen == (size_t)f.limit);
    if (rc < 0 || o.oom)
        log_error("events: listing sessions left open: %s",
                  o.oom ? "out of memory" : store_last_error(ch->store));
    /* oldest first, so each user's session.closed events keep their order */
    for (size_t i = o.n; i-- > 0;)
        events_session_closed(ch, o.v[i].id, o.v[i].user, "server_restart", now);
    if (o.n > 1)
        qsort(o.v, o.n, sizeof(*o.v), by_user);
    for (size_t i = 0; i < o.n; i++) {
        if (i == 0 || strcmp(o.v[i].user, o.v[i - 1].user) != 0)
            presence_event(ev, o.v[i].user, false);
    }
    for (size_t i = 0; i < o.n; i++)
        free(o.v[i].user);
    free(o.v);
}

/* ---- Sender ---- */

static uint64_t user_hash(const char *s)
{
    uint64_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211u;
    return h;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A batch in flight holds an event of this user (a hash collision only delays another user). */
static bool user_in_flight(const struct events *ev, uint64_t h)
{
    for (const struct batch *b = ev->in_flight; b; b = b->next)
        if (bsearch(&h, b->users, b->n, sizeof(h), cmp_u64))
            return true;
    return false;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The scan's pass-over: an event of a batch in flight (each batch's ids are in scan order). */
static bool id_in_flight(void *ctx, int64_t id)
{
    const struct batch *bt = ctx;
    for (const struct batch *b = bt->ev->in_flight; b; b = b->next)
        if (b->n && id >= b->ids[0] && id <= b->ids[b->n - 1] &&
            bsearch(&id, b->ids, b->n, sizeof(id), cmp_i64))
            return true;
    return false;
}

static void batch_free(struct batch *bt)
{
    sbuf_release(&bt->body);
    free(bt->ids);
    free(bt->users);
    free(bt);
}

/* The scan's callback: take the event unless its user is in flight or the batch is full. */
static int batch_add(void *ctx, const struct store_event *e)
{
    struct batch *bt = ctx;
    const struct px_config *cfg = bt->ev->cfg;
    uint64_t h = user_hash(e->user);
    if (user_in_flight(bt->ev, h))
        return STORE_SCAN_SKIP;
    size_t size = strlen(e->payload) + strlen(e->user) + 64;
    if (bt->n == cfg->events_batch_count || (bt->n > 0 && bt->bytes + size > cfg->events_batch_bytes))
        return STORE_SCAN_STOP;
    if (bt->n == bt->cap) {
        size_t cap = bt->cap ? bt->cap * 2 : 16;
        int64_t *ids = realloc(bt->ids, cap * sizeof(*ids));
        if (ids)
            bt->ids = ids;
        uint64_t *users = realloc(bt->users, cap * sizeof(*users));
        if (users)
            bt->users = users;
        if (!ids || !users)
            return STORE_SCAN_STOP;
        bt->cap = cap;
    }
    bt->ids[bt->n] = e->id;
    bt->users[bt->n++] = h;
    bt->bytes += size;
    int attempt = e->attempts + 1;
    if (attempt > bt->max_attempts)
        bt->max_attempts = attempt;
    if (bt->n > 1)
        sbuf_adds(&bt->body, ",");
    sbuf_addf(&bt->body, "{\"id\":%" PRId64 ",\"type\":", e->id);
    sbuf_add_json_str(&bt->body, e->type);
    sbuf_adds(&bt->body, ",\"user\":");
    sbuf_add_json_str(&bt->body, e->user);
    sbuf_addf(&bt->body, ",\"time_ms\":%" PRId64 ",\"attempt\":%d,\"data\":%s}", e->created_at,
              attempt, e->payload);
    return STORE_SCAN_TAKE;
}

static void pump(struct events *ev);

static void in_flight_remove(struct events *ev, struct batch *bt)
{
    for (struct batch **p = &ev->in_flight; *p; p = &(*p)->next)
        if (*p == bt) {
            *p = bt->next;
            ev->in_flight_events -= bt->n;
            return;
        }
}

/* The outcome of a post: delivered, or every event of the batch retried (or dead). */
static void posted(struct batch *bt, bool ok, const char *error)
{
    struct events *ev = bt->ev;
    struct chat *ch = ev->ch;
    in_flight_remove(ev, bt);
    if (ev->stopping) { /* backend_free at exit: sent again (same ids) after the restart */
        batch_free(bt);
        return;
    }
    int64_t now = loop_now_ms(ch->lp);
    loop_tx_begin(ch->lp);
    if (ok) {
        if (store_outbox_delivered(ch->store, bt->ids, bt->n) != 0)
            log_error("events: marking %zu delivered: %s", bt->n, store_last_error(ch->store));
        ch->lp->metrics.events_delivered += bt->n;
    } else {
        int64_t backoff = ev->cfg->events_retry_initial_ms;
        for (int i = 1; i < bt->max_attempts && backoff < ev->cfg->events_retry_max_ms; i++)
            backoff *= 2;
        if (backoff > ev->cfg->events_retry_max_ms)
            backoff = ev->cfg->events_retry_max_ms;
        int dead = 0;
        if (bt->n && bt->ids[0] <= ev->scan_after) /* they stay queued: scans must see them */
            ev->scan_after = bt->ids[0] - 1;
        if (store_outbox_retry(ch->store, bt->ids, bt->n, now, now + backoff,
                               now - ev->cfg->events_max_age_ms, error, &dead) != 0)
            log_error("events: scheduling a retry: %s", store_last_error(ch->store));
        ch->lp->metrics.events_retried += bt->n - (size_t)dead;
        ch->lp->metrics.events_dead += (size_t)dead;
        log_warn("events: delivery of %zu event%s failed (%s, attempt %d); retry in %" PRId64
                 " ms%s", bt->n, bt->n == 1 ? "" : "s", error ? error : "error", bt->max_attempts,
                 backoff,
                 dead ? ", some reached max_age and are dead letters" : "");
    }
    batch_free(bt);
    pump(ev);
}

/* A post's outcome, kept for the store fiber (net/gate.h). */
struct posted_job {
    struct batch *bt;
    bool ok;
    char error[];
};

static void posted_job(void *arg)
{
    struct posted_job *pj = arg;
    posted(pj->bt, pj->ok, pj->error[0] ? pj->error : NULL);
    free(pj);
}

static void posted_cb(void *arg, bool ok, int status, const char *error)
{
    (void)status;
    struct batch *bt = arg;
    struct loop *lp = bt->ev->ch->lp;
    if (loop_gated(lp)) {
        size_t n = error ? strlen(error) : 0;
        struct posted_job *pj = malloc(sizeof(*pj) + n + 1);
        if (pj) {
            pj->bt = bt;
            pj->ok = ok;
            memcpy(pj->error, error ? error : "", n + 1);
            loop_call(lp, posted_job, pj);
            return;
        }
    }
    posted(bt, ok, error);
}

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Sign and post a batch (already in the in-flight list); its answer comes to posted_cb. */
static void post(struct batch *bt)
{
    struct events *ev = bt->ev;
    char ts[24], sig[2 * 32 + 1];
    snprintf(ts, sizeof(ts), "%" PRId64, loop_now_ms(ev->ch->lp));
    struct sbuf msg;
    sbuf_init(&msg);
    sbuf_adds(&msg, ts);
    sbuf_adds(&msg, ".");
    sbuf_add(&msg, bt->body.p, bt->body.len);
    unsigned char mac[32];
    unsigned int maclen = 0;
    const char *key = ev->cfg->events_secret;
    if (msg.oom || !HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)msg.p, msg.len,
                         mac, &maclen)) {
        sbuf_release(&msg);
        posted_cb(bt, false, 0, "cannot sign");
        return;
    }
    sbuf_release(&msg);
    hex(mac, maclen, sig);
    if (backend_post(ev->be, bt->body.p, bt->body.len, ts, sig, posted_cb, bt) != 0)
        posted_cb(bt, false, 0, "cannot start a request");
}

/*
 * Take batches while the pool has room and post each at once. The scan shows only committed events
 * (the store hides those of the open transaction), and the lease is the in-flight list: a crash
 * loses it, and the batch is sent again with the same ids after the restart.
 */
static void pump(struct events *ev)
{
    struct chat *ch = ev->ch;
    const struct px_config *cfg = ev->cfg;
    bool mine = false;
    /* In a cluster one node sends (per-user order); the others keep queuing into the outbox. */
    if (store_outbox_owner(ch->store, &mine) != 0 || !mine)
        return;
    while (!ev->stopping && backend_free_slots(ev->be) > 0) {
        int64_t now = loop_now_ms(ch->lp);
        struct batch *bt = calloc(1, sizeof(*bt));
        if (!bt)
            return;
        bt->ev = ev;
        sbuf_init(&bt->body);
        sbuf_addf(&bt->body, "{\"time_ms\":%" PRId64 ",\"events\":[", now);
        /* the rows in flight are looked at again (and skipped): scan past them */
        int max_rows = (int)(cfg->events_batch_count * 4 + ev->in_flight_events);
        if (store_outbox_replays(ch->store) != ev->scan_replays) { /* old ids came back */
            ev->scan_replays = store_outbox_replays(ch->store);
            ev->scan_after = 0;
        }
        int rc = store_outbox_scan_after(ch->store, now, &ev->scan_after, max_rows, batch_add,
                                         id_in_flight, bt);
        sbuf_adds(&bt->body, "]}");
        if (rc != 0 || bt->n == 0 || bt->body.oom) {
            if (rc < 0)
                log_error("events: reading the outbox: %s", store_last_error(ch->store));
            if (bt->n && bt->ids[0] <= ev->scan_after) /* not posted: read them again */
                ev->scan_after = bt->ids[0] - 1;
            batch_free(bt);
            return;
        }
        qsort(bt->users, bt->n, sizeof(*bt->users), cmp_u64);
        bt->next = ev->in_flight;
        ev->in_flight = bt;
        ev->in_flight_events += bt->n;
        post(bt);
    }
}

static void housekeep(struct events *ev)
{
    struct chat *ch = ev->ch;
    int64_t now = loop_now_ms(ch->lp), n = 0;
    ev->last_housekeep = now;
    if (store_outbox_expire(ch->store, now - ev->cfg->events_max_age_ms, now, EVENTS_HOUSEKEEP_ROWS,
                            &n) == 0 && n > 0) {
        ch->lp->metrics.events_dead += (uint64_t)n;
        log_warn("events: %" PRId64 " events reached max_age undelivered: dead letters now", n);
    }
    if (store_outbox_counts(ch->store, &ev->counts) != 0)
        log_error("events: outbox counts: %s", store_last_error(ch->store));
}

static void tick_job(void *arg)
{
    struct events *ev = arg;
    if (loop_now_ms(ev->ch->lp) - ev->last_housekeep >= EVENTS_HOUSEKEEP_MS)
        housekeep(ev);
    pump(ev);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loop_call_once(((struct events *)arg)->ch->lp, tick_job, arg); /* on the store fiber (net/gate.h) */
}

void chat_events_kick(struct chat *ch)
{
    if (ch->events)
        pump(ch->events);
}

void chat_events_gauges(struct chat *ch, struct metrics_gauges *g)
{
    struct events *ev = ch->events;
    if (!ev)
        return;
    g->events_on = true;
    g->events_outbox = (uint64_t)ev->counts.queued;
    g->events_dead_letters = (uint64_t)ev->counts.dead;
    g->events_oldest_age_s =
        ev->counts.oldest_queued_at
            ? (double)(loop_now_ms(ch->lp) - ev->counts.oldest_queued_at) / 1000.0
            : 0.0;
}

int events_new(struct chat *ch)
{
    const struct px_config *cfg = ch->cfg;
    if (!cfg->events_target || !cfg->events_target[0])
        return 0;
    struct backend_target t;
    char err[256];
    if (backend_parse_target(cfg->events_target, &t, err, sizeof(err)) != 0) {
        log_error("[events] target: %s", err);
        return -1;
    }
    struct events *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return -1;
    ev->ch = ch;
    ev->cfg = cfg;
    ch->events = ev;
    for (size_t i = 0; i < cfg->events_types.n; i++)
        for (int k = 0; k < (int)(sizeof(type_names) / sizeof(type_names[0])); k++)
            if (!strcmp(cfg->events_types.items[i], type_names[k]))
                ev->types[k] = true;
    ev->be = backend_new(ch->lp->base, &t, cfg->events_pool, cfg->events_timeout_ms, err,
                         sizeof(err));
    if (!ev->be) {
        log_error("[events] target: %s", err);
        return -1;
    }
    ev->tick = event_new(ch->lp->base, -1, EV_PERSIST, tick_cb, ev);
    ev->kick = evtimer_new(ch->lp->base, tick_cb, ev);
    ev->unacked_ev = evtimer_new(ch->lp->base, unacked_cb, ev);
    ev->uq = ev->types[EV_MESSAGE_UNACKED] ? calloc(EVENTS_UNACKED_MAX, sizeof(*ev->uq)) : NULL;
    if (!ev->tick || !ev->kick || !ev->unacked_ev || (ev->types[EV_MESSAGE_UNACKED] && !ev->uq))
        return -1;
    if (!ev->uq)
        ev->types[EV_MESSAGE_UNACKED] = false;
    struct timeval tv = {0, EVENTS_TICK_MS * 1000};
    event_add(ev->tick, &tv);
    housekeep(ev);
    log_info("events: delivering to %s (%s)", cfg->events_target,
             t.kind == BACKEND_HTTP ? "HTTP" : "FastCGI");
    return 0;
}

void events_free(struct chat *ch)
{
    struct events *ev = ch->events;
    if (!ev)
        return;
    /* Users still waiting for their offline_delay are offline now: tell it (autocommits). */
    struct offline_wait *w, *tmp;
    ev->final = true;
    HASH_ITER(hh, ev->offline, w, tmp)
    {
        presence_event(ev, w->user, false);
        offline_free(ev, w);
    }
    ev->stopping = true;
    if (ev->kick_armed)
        loop_after_commit_cancel(ch->lp, committed_cb, ev);
    backend_free(ev->be); /* in-flight batches: sent again (same ids) after the restart */
    while (ev->in_flight) { /* if backend_free did not answer them */
        struct batch *bt = ev->in_flight;
        in_flight_remove(ev, bt);
        batch_free(bt);
    }
    if (ev->tick)
        event_free(ev->tick);
    if (ev->kick)
        event_free(ev->kick);
    if (ev->unacked_ev)
        event_free(ev->unacked_ev);
    free(ev->uq);
    free(ev);
    ch->events = NULL;
}
