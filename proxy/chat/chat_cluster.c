/*
 * chat_cluster.c -- cluster mode ([store] backend = postgresql; docs/cluster.md). Several nodes share
 * one database; each delivers to its own live connections. What a node does that others must show
 * live (a stored message, a receipt, a broadcast, a kick, a membership or presence change) it notes
 * in the cluster log inside its group commit; every other node hears the commit's notification on a
 * listening connection of its own, fetches the new rows and applies them here. The tables stay the
 * truth: a notification lost to a broken connection only delays the next fetch (every [cluster]
 * poll, and at once after a reconnect), and a client that reconnects elsewhere replays from the store.
 *
 * Each node holds a lease it renews every lease/3; a node that stops renewing is swept by whichever
 * node takes the sweep lock first: its sessions end with node_lost, its users go offline where no
 * other node has them, and the usual events go out (presence frames through the log, webhooks
 * through the outbox), all in one transaction.
 */
#include <event2/event.h>
#include <inttypes.h>
#include <uthash.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/registry.h"
#include "chat/chat_internal.h"
#include "store.h"

/* A broken listening connection is reopened at most this often. */
#define LISTEN_RETRY_MS 1000

/* Users whose last connection here ended and whose offline check waits for that end's commit. */
struct end_pending {
    UT_hash_handle hh;
    int n;
    char user[];
};

struct chat_cluster {
    struct chat *ch;
    struct end_pending *ends; /* by user */
    struct store_listen *listen; /* keeps its place in the log across reconnects */
    bool listen_down;            /* its connection broke: reopened by the poll timer */
    struct event *listen_ev;     /* its socket; NULL while down */
    bool listen_paused;          /* listen_ev off while its job waits for the store fiber */
    struct event *poll_ev;       /* [cluster] poll: fetch even without a notification */
    struct event *lease_ev;      /* lease/3: renew, sweep */
    int64_t node_id;
    int64_t boot;
    double listen_retry_at; /* monotonic seconds */
    unsigned listen_failures; /* reconnects failed in a row (logged 1 in 30) */
    uint64_t applied;       /* log rows applied (for the log line at the end) */
    char name[256];
};

bool chat_clustered(const struct chat *ch)
{
    return ch->cluster != NULL;
}

int64_t chat_node_id(const struct chat *ch)
{
    return ch->cluster ? ch->cluster->node_id : 0;
}

/* ---- writing: what the other nodes must show ---- */

void chat_cluster_note(struct chat *ch, const char *kind, const char *target, int64_t ref,
                       const char *payload, size_t len)
{
    if (!ch->cluster)
        return;
    char *p = payload ? strndup(payload, len) : NULL;
    if (payload && !p) {
        log_error("cluster: out of memory noting %s", kind);
        return;
    }
    loop_tx_begin(ch->lp);
    if (store_cluster_note(ch->store, kind, target, ref, p, loop_now_ms(ch->lp)) != 0) {
        ch->lp->metrics.store_errors++;
        log_error("cluster: cannot note %s for the other nodes: %s", kind,
                  store_last_error(ch->store));
    }
    free(p);
}

bool chat_cluster_online_elsewhere(struct chat *ch, const char *user, int64_t own)
{
    int64_t n = 0;
    if (!ch->cluster)
        return false;
    /* Active session rows of user, all nodes; own is how many of them are this node's. */
    if (store_session_count_active(ch->store, user, &n) != 0) {
        log_error("cluster: counting sessions of %s: %s", user, store_last_error(ch->store));
        return false;
    }
    return n > own;
}

void chat_cluster_end_pending(struct chat *ch, const char *user, int delta)
{
    struct chat_cluster *cl = ch->cluster;
    struct end_pending *e = NULL;
    if (!cl)
        return;
    HASH_FIND_STR(cl->ends, user, e);
    if (!e && delta > 0) {
        size_t len = strlen(user);
        if (!(e = calloc(1, sizeof(*e) + len + 1)))
            return; /* then a reload may be told as online twice: harmless */
        memcpy(e->user, user, len + 1);
        HASH_ADD_STR(cl->ends, user, e);
    }
    if (!e)
        return;
    e->n += delta;
    if (e->n <= 0) {
        HASH_DEL(cl->ends, e);
        free(e);
    }
}

bool chat_cluster_end_is_pending(const struct chat *ch, const char *user)
{
    struct end_pending *e = NULL;
    if (!ch->cluster)
        return false;
    HASH_FIND_STR(ch->cluster->ends, user, e);
    return e != NULL;
}

void chat_cluster_offline_check(struct chat *ch, const char *user, int64_t last_seen)
{
    int64_t n = 0;
    if (!ch->cluster)
        return;
    if (store_session_count_active(ch->store, user, &n) != 0) {
        log_error("cluster: counting sessions of %s: %s", user, store_last_error(ch->store));
        return;
    }
    if (n > 0)
        return; /* online on another node (or again here, through a new session) */
    /* The row may have been written online by a node that still saw this session (two ends at
     * once): set it from the count now that both are committed. */
    loop_tx_begin(ch->lp);
    if (store_presence_set(ch->store, user, false, 0, last_seen) != 0)
        log_error("store: presence of %s: %s", user, store_last_error(ch->store));
    /* While this node drains, its users leave all at once: no presence frames (as on a single
     * node), but the backend still hears user.offline. */
    if (!ch->draining) {
        struct sbuf b;
        sbuf_init(&b);
        chat_build_presence(&b, user, false, last_seen);
        if (!b.oom) {
            chat_presence_frame_remote(ch, user, b.p, b.len);
            chat_cluster_note(ch, "presence", user, 0, b.p, b.len);
        }
        sbuf_release(&b);
    }
    events_user_offline(ch, user);
}

int chat_kick_remote(struct chat *ch, int64_t session_id)
{
    if (!ch->cluster)
        return -1;
    chat_cluster_note(ch, "kick", NULL, session_id, NULL, 0);
    return 0;
}

/* ---- reading: apply what another node noted ---- */

/* "reason:room" of a member row (reasons never hold a colon; rooms may). */
static void apply_member(struct chat *ch, const struct store_log_row *r)
{
    const char *colon = r->payload ? strchr(r->payload, ':') : NULL;
    if (!r->target || !colon)
        return;
    char reason[32];
    snprintf(reason, sizeof reason, "%.*s", (int)(colon - r->payload), r->payload);
    const char *room = colon + 1;
    chat_user_room_change(ch, r->target, room, r->ref != 0);
    chat_room_event_all(ch, r->target, r->ref ? "joined" : "left", room, reason);
}

static int apply_row(void *arg, const struct store_log_row *r)
{
    struct chat_cluster *cl = arg;
    struct chat *ch = cl->ch;
    if (r->node == cl->node_id || !r->kind)
        return 0; /* this node applied it when it wrote it */
    cl->applied++;
    size_t len = r->payload ? strlen(r->payload) : 0;
    if (!strcmp(r->kind, "msg")) {
        if (r->msg.id) /* NULL: deleted (or pruned) since */
            chat_deliver_remote(ch, &r->msg);
    } else if (!strcmp(r->kind, "user") && r->target && r->payload) {
        chat_send_frame_user(ch, r->target, r->payload, len);
    } else if (!strcmp(r->kind, "room") && r->target && r->payload) {
        chat_send_frame_room(ch, r->target, r->payload, len);
    } else if (!strcmp(r->kind, "all") && r->payload) {
        chat_broadcast_local(ch, r->payload, len);
    } else if (!strcmp(r->kind, "kick")) {
        chat_kick(ch, r->ref); /* -1: not here; the node that has it acts */
    } else if (!strcmp(r->kind, "member")) {
        apply_member(ch, r);
    } else if (!strcmp(r->kind, "erase") && r->target) {
        chat_user_erased_here(ch, r->target);
    } else if (!strcmp(r->kind, "presence") && r->target && r->payload) {
        chat_presence_frame_remote(ch, r->target, r->payload, len);
    } else {
        log_warn("cluster: unknown log row kind '%s' from node %" PRId64 " (a newer node?)",
                 r->kind, r->node);
    }
    return 0;
}

/* The listening connection broke (or a reconnect failed: then the next try keeps its spacing). */
static void listen_broken(struct chat_cluster *cl, const char *why, bool was_ready)
{
    if (was_ready || cl->listen_failures++ % 30 == 0)
        log_error("cluster: listening connection %s (%s); reconnecting",
                  was_ready ? "lost" : "not back yet", why);
    if (cl->listen_ev) {
        event_free(cl->listen_ev);
        cl->listen_ev = NULL;
    }
    cl->listen_down = true;
    if (was_ready) {
        cl->listen_retry_at = 0; /* at the next poll */
        cl->listen_failures = 0;
    }
}

static void listen_cb(evutil_socket_t fd, short what, void *arg);

static int listen_arm(struct chat_cluster *cl)
{
    cl->listen_ev = event_new(cl->ch->lp->base, store_listen_fd(cl->listen), EV_READ | EV_PERSIST,
                              listen_cb, cl);
    if (!cl->listen_ev || event_add(cl->listen_ev, NULL) != 0)
        return -1;
    return 0;
}

static void pump(struct chat_cluster *cl, bool fetch)
{
    if (cl->listen_down)
        return;
    bool was_ready = store_listen_ready(cl->listen);
    if (store_listen_pump(cl->listen, fetch, apply_row, cl) != 0) {
        listen_broken(cl, was_ready ? "read failed" : "reconnect failed", was_ready);
        return;
    }
    if (!was_ready && store_listen_ready(cl->listen)) {
        /* The reconnect is through: watch the new socket, and read what was missed. */
        if (listen_arm(cl) != 0) {
            listen_broken(cl, "out of memory", false);
            return;
        }
        log_info("cluster: listening again; catching up");
        store_listen_pump(cl->listen, true, apply_row, cl);
    }
}

static void listen_job(void *arg)
{
    struct chat_cluster *cl = arg;
    if (cl->listen_paused) {
        cl->listen_paused = false;
        if (cl->listen_ev)
            event_add(cl->listen_ev, NULL);
    }
    pump(cl, false);
}

static void listen_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct chat_cluster *cl = arg;
    /* On the store fiber (net/gate.h). While it waits there the socket stays readable: stop
     * watching it until the job ran, or the loop would spin on it. */
    if (loop_gated(cl->ch->lp)) {
        event_del(cl->listen_ev);
        cl->listen_paused = true;
    }
    loop_call_once(cl->ch->lp, listen_job, arg);
}

/* Start reopening a broken listener (once a second at most); the poll timer's pumps move it on
 * without waiting. It keeps its place: the first fetch reads every row committed while it was
 * away, so no notification is missed. */
static void listen_reopen(struct chat_cluster *cl)
{
    double now = loop_mono_s();
    if (now < cl->listen_retry_at)
        return;
    cl->listen_retry_at = now + LISTEN_RETRY_MS / 1000.0;
    char err[512];
    if (store_listen_reconnect(cl->listen, err, sizeof err) != 0) {
        log_error("%s", err);
        return;
    }
    cl->listen_down = false;
}

static void poll_job(void *arg)
{
    struct chat_cluster *cl = arg;
    if (cl->listen_down)
        listen_reopen(cl);
    pump(cl, true);
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loop_call_once(((struct chat_cluster *)arg)->ch->lp, poll_job, arg); /* on the store fiber (net/gate.h) */
}

/* ---- the lease and the sweep ---- */

struct sweep_ctx {
    struct chat *ch;
    int64_t now;
    size_t ended;
};

static int lost_session_cb(void *arg, const struct store_lost_session *s)
{
    struct sweep_ctx *x = arg;
    struct chat *ch = x->ch;
    x->ended++;
    events_session_closed(ch, s->id, s->user, "node_lost", x->now);
    if (s->user_offline) {
        events_user_offline(ch, s->user);
        struct sbuf b;
        sbuf_init(&b);
        chat_build_presence(&b, s->user, false, s->last_seen);
        if (!b.oom) {
            chat_presence_frame_remote(ch, s->user, b.p, b.len); /* this node's sharers */
            chat_cluster_note(ch, "presence", s->user, 0, b.p, b.len); /* everyone else's */
        }
        sbuf_release(&b);
    }
    return 0;
}

/* This node was declared lost (a pause longer than the lease): its sessions were ended by another
 * node, so its connections are dropped (clients reconnect and replay) and it joins again. */
static void node_was_lost(struct chat_cluster *cl)
{
    struct chat *ch = cl->ch;
    log_error("cluster: node %s (id %" PRId64 ") was declared lost by another node (no lease "
              "renewal for [cluster] lease); closing its connections and joining again",
              cl->name, cl->node_id);
    chat_close_all(ch, "node lost");
    cl->boot = (int64_t)time(NULL) * 1000000 + (int64_t)getpid() % 1000000;
    if (store_node_join(ch->store, cl->name, cl->boot, ch->cfg->cluster_lease_ms,
                        loop_now_ms(ch->lp), &cl->node_id) != 0)
        log_error("cluster: joining again: %s", store_last_error(ch->store));
}

static void lease_job(void *arg)
{
    struct chat_cluster *cl = arg;
    struct chat *ch = cl->ch;
    int64_t now = loop_now_ms(ch->lp);
    bool lost = false;
    /* Outside the group commit: a renewal must not wait behind (or fail with) other writes. */
    if (store_in_transaction(ch->store))
        loop_commit(ch->lp);
    if (store_node_renew(ch->store, now, ch->cfg->cluster_lease_ms, &lost) != 0) {
        ch->lp->metrics.store_errors++;
        log_error("cluster: renewing the lease: %s", store_last_error(ch->store));
        return;
    }
    if (lost) {
        node_was_lost(cl);
        return;
    }
    struct sweep_ctx x = {.ch = ch, .now = now};
    int nodes = 0;
    loop_tx_begin(ch->lp);
    if (store_node_sweep(ch->store, now, lost_session_cb, &x, &nodes) != 0) {
        ch->lp->metrics.store_errors++;
        log_error("cluster: sweep: %s", store_last_error(ch->store));
        return;
    }
    if (nodes > 0)
        log_warn("cluster: %d node%s lost (no lease renewal for %lld ms): ended %zu session%s "
                 "(node_lost)",
                 nodes, nodes == 1 ? "" : "s", (long long)ch->cfg->cluster_lease_ms, x.ended,
                 x.ended == 1 ? "" : "s");
}

static void lease_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loop_call_once(((struct chat_cluster *)arg)->ch->lp, lease_job, arg); /* on the store fiber (net/gate.h) */
}

/* ---- start, stop ---- */

static void default_name(const struct px_config *cfg, char *out, size_t n)
{
    char host[128] = "localhost";
    gethostname(host, sizeof host - 1);
    const char *port = strrchr(cfg->listen, ':');
    snprintf(out, n, "%s:%s", host, port ? port + 1 : cfg->listen);
}

int chat_cluster_start(struct chat *ch)
{
    const struct px_config *cfg = ch->cfg;
    struct chat_cluster *cl = calloc(1, sizeof *cl);
    if (!cl)
        return -1;
    cl->ch = ch;
    if (cfg->cluster_node_name[0])
        snprintf(cl->name, sizeof cl->name, "%s", cfg->cluster_node_name);
    else
        default_name(cfg, cl->name, sizeof cl->name);
    /* A boot id no earlier run of this node had: the lease is this process's. */
    cl->boot = (int64_t)time(NULL) * 1000000 + (int64_t)getpid() % 1000000;
    if (store_node_join(ch->store, cl->name, cl->boot, cfg->cluster_lease_ms, loop_now_ms(ch->lp),
                        &cl->node_id) != 0) {
        log_error("cluster: joining as %s: %s", cl->name, store_last_error(ch->store));
        free(cl);
        return -1;
    }
    char err[512];
    if (store_listen_open(&cl->listen, cfg->store_dsn, (int)cfg->store_pg_timeout_ms, err,
                          sizeof err) != 0) {
        log_error("%s", err);
        free(cl);
        return -1;
    }
    ch->cluster = cl;
    int64_t every = cfg->cluster_lease_ms / 3;
    struct timeval lease_tv = {.tv_sec = every / 1000, .tv_usec = (every % 1000) * 1000};
    struct timeval poll_tv = {.tv_sec = cfg->cluster_poll_ms / 1000,
                              .tv_usec = (cfg->cluster_poll_ms % 1000) * 1000};
    cl->lease_ev = event_new(ch->lp->base, -1, EV_PERSIST, lease_cb, cl);
    cl->poll_ev = event_new(ch->lp->base, -1, EV_PERSIST, poll_cb, cl);
    if (!cl->lease_ev || !cl->poll_ev || listen_arm(cl) != 0 ||
        event_add(cl->lease_ev, &lease_tv) != 0 || event_add(cl->poll_ev, &poll_tv) != 0) {
        chat_cluster_stop(ch);
        return -1;
    }
    log_info("cluster: node %s joined as id %" PRId64 " (lease %lld ms)", cl->name, cl->node_id,
             (long long)cfg->cluster_lease_ms);
    return 0;
}

void chat_cluster_stop(struct chat *ch)
{
    struct chat_cluster *cl = ch->cluster;
    if (!cl)
        return;
    ch->cluster = NULL;
    if (cl->lease_ev)
        event_free(cl->lease_ev);
    if (cl->poll_ev)
        event_free(cl->poll_ev);
    if (cl->listen_ev)
        event_free(cl->listen_ev);
    store_listen_close(cl->listen);
    struct end_pending *e, *tmp;
    HASH_ITER(hh, cl->ends, e, tmp) {
        HASH_DEL(cl->ends, e);
        free(e);
    }
    /* The sessions ended as the connections closed; the node is down, not lost. */
    if (!store_in_transaction(ch->store) &&
        store_node_leave(ch->store, loop_now_ms(ch->lp)) != 0)
        log_warn("cluster: leaving: %s", store_last_error(ch->store));
    log_info("cluster: node %s left (%llu rows from other nodes applied)", cl->name,
             (unsigned long long)cl->applied);
    free(cl);
}
