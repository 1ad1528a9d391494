/*
 * conn.c -- libevent glue for one client connection: reads the request head and hands it up, upgrades,
 * feeds the frame parser straight from what was read (a plain-TCP WebSocket leaves its bufferevent
 * once upgraded, conn_detach: its socket is read by conn_sock_read into one shared buffer and
 * written directly; TLS goes through the bufferevent's input and output), writes frames (held
 * for the group commit when they depend on it; a read's replies written before its callback returns),
 * runs the connection's one timer (handshake, heartbeat, close wait) and frees everything through one
 * path. The application is reached only through c->handler.
 */
#include "net/conn.h"

#include <assert.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/cidr.h"
#include "base/log.h"
#include "base/registry.h"
#include "base/utf8.h"
#include "net/gate.h"
#include "net/listener.h"
#include "net/loop.h"
#include "net/ioq.h"
#include "proto/heartbeat.h"
#include "proto/ws_handshake.h"

/* Unparsed input a WebSocket may hold before libevent stops reading: the parser drains the input on
 * every read, so this only bounds one burst. */
#define WS_READ_HIGH_WATER (256 * 1024)

/* One read of an upgraded plain-TCP WebSocket takes up to this much (conn_sock_read_cb). */
#define CONN_READ_SIZE (64 * 1024)

/*
 * Shared frames shorter than this are copied into the output rather than referenced: a reference
 * is a chain of its own (libevent 2.1 allocates at least 1 KiB for any chain), a copy shares the
 * last chain with the frames before it.
 */
#define SHARED_FRAME_COPY_MAX 1024

static void conn_free(struct conn *c);
static void conn_destroy(struct conn *c);
static void conn_linger(struct conn *c);
static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg);
static void bare_write_cb(evutil_socket_t fd, short what, void *arg);
static void conn_sent(void *owner, const uint8_t *rest, size_t rest_len, int err);
static void conn_received(void *owner, uint8_t *data, long n);

static const struct px_config *cfg_of(const struct conn *c)
{
    return c->lp->cfg;
}

static void timer_arm_ms(struct conn *c, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

/* ---- the pool ---- */

int conn_pool_init(struct conn_pool *p, struct loop *lp, conn_request_fn *on_request, void *arg)
{
    memset(p, 0, sizeof(*p));
    p->lp = lp;
    p->on_request = on_request;
    p->request_arg = arg;
    p->ip_counts = registry_counter_new();
    /* permessage-deflate: accounting and budget; compressors allocate at their first message. */
    const struct px_config *cfg = lp->cfg;
    p->deflate.mem.budget = (size_t)cfg->compression_memory_budget;
    for (unsigned i = 0; i < CONN_DEFLATE_WINDOWS; i++)
        ws_deflate_compressor_init(&p->deflate.comp[i], (int)cfg->compression_level, 9 + i,
                                   (unsigned)cfg->compression_mem_level, &p->deflate.mem);
    if (!p->ip_counts)
        return -1;
    if (cfg->io_uring_on) {
        char why[128];
        /*
         * 128 operations per submission; 256 KiB for copied replies (one pass's echo, say); 32 KiB
         * per read (4 MiB of address space, touched as used; what a read leaves, the next takes).
         */
        p->ioq = ioq_new(lp->base, 128, 256u << 10, 32u << 10, conn_sent, conn_received, why,
                         sizeof(why));
        if (!p->ioq)
            log_info("io_uring not used (%s): one send() per write", why);
    }
    return 0;
}

void conn_pool_release(struct conn_pool *p)
{
    while (p->conns)
        conn_abort(p->conns, END_SERVER_SHUTDOWN);
    ioq_free(p->ioq);
    p->ioq = NULL;
    registry_counter_free(p->ip_counts);
    p->ip_counts = NULL;
    for (unsigned i = 0; i < CONN_DEFLATE_WINDOWS; i++) {
        ws_deflate_compressor_release(&p->deflate.comp[i]);
        if (p->deflate.comp_reserved[i])
            ws_deflate_mem_unreserve(&p->deflate.mem,
                                     ws_deflate_deflate_worst(9 + i, p->deflate.comp[i].mem_level));
        p->deflate.comp_reserved[i] = false;
    }
}

/*
 * Hold c across a call that may park on the store fiber (net/gate.h): the loop runs meanwhile, and
 * a connection nobody holds is freed at once when its peer goes. conn_unhold frees what was
 * wanted freed meanwhile.
 */
static void conn_hold(struct conn *c)
{
    c->busy++;
}

static void conn_unhold(struct conn *c)
{
    assert(c->busy > 0);
    if (--c->busy)
        return;
    if (c->freeing) {
        if (c->destroy_deferred)
            conn_destroy(c);
    } else if (c->dead) {
        conn_free(c);
    }
}

static void conn_pool_each_end(struct conn_pool *p, bool drop)
{
    /* c and the next one are held: ending c may park on the store fiber, and meanwhile the loop
     * may free any connection whose peer goes. */
    struct conn *c = p->conns;
    if (c)
        conn_hold(c);
    while (c) {
        struct conn *next = c->next;
        if (next)
            conn_hold(next);
        if (drop)
            conn_abort(c, END_SERVER_SHUTDOWN);
        else if (c->state == CONN_OPEN)
            conn_close(c, WS_CLOSE_GOING_AWAY, "server shutdown", END_SERVER_SHUTDOWN);
        else if (c->state == CONN_HTTP)
            conn_abort(c, END_SERVER_SHUTDOWN);
        conn_unhold(c);
        c = next;
    }
}

void conn_pool_shutdown(struct conn_pool *p)
{
    conn_pool_each_end(p, false);
}

void conn_pool_drop_all(struct conn_pool *p)
{
    conn_pool_each_end(p, true);
}

void conn_accept(void *pool, struct bufferevent *bev, const struct sockaddr *sa)
{
    struct conn_pool *p = pool;
    char peer[sizeof(((struct conn *)0)->peer)];
    listener_addr_str(sa, false, peer, sizeof(peer));
    struct conn *c = calloc(1, sizeof(*c));
    if (c)
        c->timer = evtimer_new(p->lp->base, conn_timer_cb, c);
    if (!c || !c->timer) {
        log_error("out of memory accepting %s", peer);
        bufferevent_free(bev);
        free(c);
        return;
    }
    c->pool = p;
    c->lp = p->lp;
    c->bev = bev;
    c->fd = -1;
    c->state = CONN_HTTP;
    c->id = ++p->next_id;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    snprintf(c->addr, sizeof(c->addr), "%s", peer);
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    p->num_conns++;
    p->lp->metrics.conns_total++;

    /* libevent stops reading once the head limit is buffered; the parser then answers 431. */
    bufferevent_setwatermark(bev, EV_READ, 0, cfg_of(c)->max_header_size);
    bufferevent_setcb(bev, conn_read_cb, NULL, conn_event_cb, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    timer_arm_ms(c, cfg_of(c)->handshake_timeout_ms);
    log_debug("conn %llu accepted from %s", (unsigned long long)c->id, peer);
    if (!p->count_late || !cidr_list_match(p->count_late, peer)) {
        /* Connections that never finish a handshake count against the address too. */
        if (registry_counter_get(p->ip_counts, peer) >= cfg_of(c)->max_connections_per_ip) {
            conn_http_text(c, 503, "Retry-After: 5\r\n", "too many connections from this address");
            return;
        }
        if (registry_counter_add(p->ip_counts, peer, +1) == (size_t)-1) {
            conn_http_text(c, 503, NULL, "out of memory");
            return;
        }
        c->peer_counted = true;
    }
}

/* ---- the transport: the bufferevent, or once detached the bare socket ---- */

static evutil_socket_t conn_fd(const struct conn *c)
{
    return c->bev ? bufferevent_getfd(c->bev) : c->fd;
}

/* Bytes added to a detached connection's output: the write event takes them (as a bufferevent's
 * own output callback does); a write in the same loop pass that empties it deletes it again, which
 * the epoll changelist turns into no syscall. */
static void bare_out_cb(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    (void)b;
    struct conn *c = arg;
    if (info->n_added && !c->freeing)
        event_add(c->wev, NULL);
}

/* A connection that cannot get the memory to queue output is dropped from its timer, since
 * the caller may still be using it. */
static void conn_drop_later(struct conn *c, size_t len)
{
    log_error("conn %llu %s: out of memory queueing %zu bytes", (unsigned long long)c->id, c->addr,
              len);
    c->end_reason = END_INTERNAL_ERROR;
    c->dead = true;
    event_active(c->timer, EV_TIMEOUT, 0);
}

/*
 * The output evbuffer, bypassing the echo run (conn_output is the one that keeps the order with
 * it). Detached: made, with its write event, the first time output must wait for the socket, and
 * given back when it stays empty (conn_pool_trim); NULL when out of memory (c is dropped then).
 */
static struct evbuffer *conn_out(struct conn *c)
{
    if (c->bev)
        return bufferevent_get_output(c->bev);
    if (c->out)
        return c->out;
    c->out = evbuffer_new();
    c->wev = event_new(c->lp->base, c->fd, EV_WRITE | EV_PERSIST, bare_write_cb, c);
    if (!c->out || !c->wev || !evbuffer_add_cb(c->out, bare_out_cb, c)) {
        if (c->out)
            evbuffer_free(c->out);
        if (c->wev)
            event_free(c->wev);
        c->out = NULL;
        c->wev = NULL;
        conn_drop_later(c, 0);
        return NULL;
    }
    return c->out;
}

static size_t out_raw_len(const struct conn *c)
{
    if (c->bev)
        return evbuffer_get_length(bufferevent_get_output(c->bev));
    return (c->out ? evbuffer_get_length(c->out) : 0) +
           (c->sq_queued ? ioq_len(c->pool->ioq, c->sq_slot) : 0);
}

/* ---- batched sends (net/ioq.h): detached connections only ---- */

/*
 * The pool's ioq sent c's entry. What the socket did not take goes to the front of the output,
 * for the write event, where a send error is met again and reported (one failure path, as for
 * send() at once).
 */
static void conn_sent(void *owner, const uint8_t *rest, size_t rest_len, int err)
{
    (void)err;
    struct conn *c = owner;
    c->sq_queued = false;
    if (!rest_len)
        return;
    struct evbuffer *out = conn_out(c);
    if (out && evbuffer_prepend(out, rest, rest_len) != 0)
        conn_drop_later(c, rest_len);
}

/* Queue a copy of p for this pass's submission; false: send it yourself. */
static bool ioq_put_copy(struct conn *c, const void *p, size_t len)
{
    if (!c->pool->ioq || c->bev || c->sq_queued)
        return false;
    int slot = ioq_copy(c->pool->ioq, c->fd, p, len, c);
    if (slot < 0)
        return false;
    c->sq_slot = slot;
    c->sq_queued = true;
    return true;
}

static void shared_frame_unref_cb(void *f)
{
    shared_frame_unref(f);
}

/* Queue the shared frame f itself (referenced until sent); false: send it yourself. */
static bool ioq_put_frame(struct conn *c, struct shared_frame *f)
{
    if (!c->pool->ioq || c->bev || c->sq_queued)
        return false;
    int slot = ioq_ref(c->pool->ioq, c->fd, f->data, f->len, c, shared_frame_unref_cb, f);
    if (slot < 0)
        return false;
    f->refs++;
    c->sq_slot = slot;
    c->sq_queued = true;
    return true;
}

/* The socket is about to close: its queued send is not made, nor its queued read. */
static void ioq_drop(struct conn *c)
{
    if (c->sq_queued) {
        ioq_cancel(c->pool->ioq, c->sq_slot);
        c->sq_queued = false;
    }
    if (c->rq_queued) {
        ioq_cancel_recv(c->pool->ioq, c->rq_slot);
        c->rq_queued = false;
    }
}

/* Read from the peer or not (jobs waiting, a close received, the end). */
static void conn_reading(struct conn *c, bool on)
{
    if (c->bev) {
        if (on)
            bufferevent_enable(c->bev, EV_READ);
        else
            bufferevent_disable(c->bev, EV_READ);
    } else if (on) {
        event_add(&c->rev, NULL);
    } else {
        event_del(&c->rev);
    }
}

/* ---- writing ---- */

/*
 * Echo replies made while a plain-TCP WebSocket's read is handled are gathered here, one contiguous
 * run for the whole read, and sent with one send() when the read is done (conn_write_now): no
 * evbuffer chain, callback or write event per message. Only the connection being read may own it
 * (wbuf_owner), and only while its output evbuffer is empty, so order is kept by spilling the run
 * into the evbuffer before anything else is queued there (conn_output).
 */
static uint8_t conn_wbuf[CONN_READ_SIZE];
static size_t conn_wbuf_len;
static struct conn *wbuf_owner;

static void wbuf_spill(void)
{
    struct conn *c = wbuf_owner;
    wbuf_owner = NULL;
    struct evbuffer *out = conn_wbuf_len ? conn_out(c) : NULL;
    if (out && evbuffer_add(out, conn_wbuf, conn_wbuf_len) != 0)
        conn_drop_later(c, conn_wbuf_len);
    conn_wbuf_len = 0;
}

/* The connection's output evbuffer, with any gathered echo replies queued in it first; NULL out
 * of memory (see conn_out). */
static struct evbuffer *conn_output(struct conn *c)
{
    if (wbuf_owner == c)
        wbuf_spill();
    return conn_out(c);
}

static size_t output_len(const struct conn *c)
{
    return out_raw_len(c) + (wbuf_owner == c ? conn_wbuf_len : 0);
}

size_t conn_pending_len(const struct conn *c)
{
    size_t n = output_len(c) + (c->held ? evbuffer_get_length(c->held) : 0);
    for (int i = 0; i < c->n_held_frames; i++)
        n += c->held_frames[i]->len;
    return n;
}

bool conn_is_open(const struct conn *c)
{
    return c->state == CONN_OPEN && !c->close_sent && !c->freeing;
}

static void add_frame_rsv(struct conn *c, struct evbuffer *out, enum ws_opcode op, bool rsv1,
                          const void *data, size_t len)
{
    uint8_t hdr[WS_MAX_HDR];
    size_t hlen = ws_frame_header(hdr, true, op, len);
    if (rsv1)
        hdr[0] |= WS_DEFLATE_RSV1; /* RFC 7692 §6: a compressed message */
    if (!out)
        return; /* no memory for the output: c is being dropped (conn_out) */
    /* Header and payload in one reserve+commit: one chain, one write() for small frames. */
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, hlen + len, &v, 1) == 1 && v.iov_len >= hlen + len) {
        memcpy(v.iov_base, hdr, hlen);
        if (len)
            memcpy((uint8_t *)v.iov_base + hlen, data, len);
        v.iov_len = hlen + len;
        evbuffer_commit_space(out, &v, 1);
    } else {
        evbuffer_add(out, hdr, hlen);
        evbuffer_add(out, data, len);
    }
    c->lp->metrics.bytes_out += hlen + len;
}

static void add_frame(struct conn *c, struct evbuffer *out, enum ws_opcode op, const void *data,
                      size_t len)
{
    add_frame_rsv(c, out, op, false, data, len);
}

/* The shared compressor for a connection's agreed window (server_no_context_takeover). */
static struct ws_deflate_compressor *conn_compressor(struct conn_pool *p,
                                                     const struct ws_deflate_params *dp)
{
    return &p->deflate.comp[dp->server_max_window_bits - 9];
}

/*
 * Compress a whole message payload into zb with the compressor for dp. 0 when zb holds a payload
 * smaller than the message; nonzero when it did not pay (or no memory): send it plain then.
 */
static int deflate_payload(struct conn_pool *p, const struct ws_deflate_params *dp,
                           const void *data, size_t len, struct ws_deflate_buf *zb)
{
    int rc = ws_deflate_compress(conn_compressor(p, dp), data, len, len, ws_deflate_buf_sink, zb);
    p->lp->metrics.deflate_runs++;
    if (rc != 0) {
        p->lp->metrics.deflate_runs_plain++;
        if (rc != WS_DEFLATE_ERR_TOO_BIG)
            log_warn("deflate: %s: message sent uncompressed", ws_deflate_strerror(rc));
        ws_deflate_buf_release(zb);
    }
    return rc;
}

static bool worth_compressing(const struct conn *c, enum ws_opcode op, size_t len)
{
    return c->deflate && ws_deflate_worth_compressing(op, len, cfg_of(c)->compression_min_size);
}

/*
 * A whole data message for this connection alone: compressed (RSV1) when the connection
 * negotiated permessage-deflate and the message is worth it, else as is.
 */
static void add_data_frame(struct conn *c, struct evbuffer *out, enum ws_opcode op, const void *data,
                           size_t len)
{
    if (worth_compressing(c, op, len)) {
        struct ws_deflate_buf zb = {0};
        if (deflate_payload(c->pool, &c->z->params, data, len, &zb) == 0) {
            add_frame_rsv(c, out, op, true, zb.p, zb.len);
            c->lp->metrics.deflate_out_raw += len;
            c->lp->metrics.deflate_out_wire += zb.len;
            ws_deflate_buf_release(&zb);
            return;
        }
    }
    add_frame(c, out, op, data, len);
}

void conn_send_frame(struct conn *c, enum ws_opcode op, const void *data, size_t len)
{
    if (!conn_is_open(c))
        return;
    if (op == WS_OP_TEXT || op == WS_OP_BINARY)
        add_data_frame(c, conn_output(c), op, data, len);
    else
        add_frame(c, conn_output(c), op, data, len);
}

static void dirty_link(struct conn *c)
{
    if (c->dirty)
        return;
    c->dirty = true;
    c->dirty_next = c->pool->dirty;
    c->pool->dirty = c;
}

static void dirty_unlink(struct conn *c)
{
    if (!c->dirty)
        return;
    for (struct conn **pp = &c->pool->dirty; *pp; pp = &(*pp)->dirty_next)
        if (*pp == c) {
            *pp = c->dirty_next;
            break;
        }
    c->dirty = false;
    c->dirty_next = NULL;
}

/* Drop the held frame references (dropped with the batch, or copied). */
static void held_frame_drop(struct conn *c)
{
    for (int i = 0; i < c->n_held_frames; i++)
        shared_frame_unref(c->held_frames[i]);
    c->n_held_frames = 0;
}

/*
 * Turn the referenced held frames into copies at the start of held, in order, so that what is held
 * next goes after them. 0, or -1 out of memory (the frames are dropped then).
 */
static int held_frame_spill(struct conn *c)
{
    if (!c->n_held_frames)
        return 0;
    int rc = c->held || (c->held = evbuffer_new()) ? 0 : -1;
    for (int i = 0; i < c->n_held_frames && rc == 0; i++)
        rc = evbuffer_add(c->held, c->held_frames[i]->data, c->held_frames[i]->len);
    held_frame_drop(c);
    return rc;
}

/*
 * Where output that depends on the open transaction goes: the held buffer (linked into the pool's
 * dirty list) while a transaction is open or earlier frames are still held (order), else the output.
 * NULL when the connection was closed (slow consumer) or memory ran out.
 */
static struct evbuffer *commit_ordered_output(struct conn *c)
{
    /* Held frames count against send_queue like written ones: both are this client's memory. */
    if (!conn_check_backpressure(c))
        return NULL;
    if (!loop_tx_open(c->lp) && !c->dirty)
        return conn_output(c);
    if ((!c->held && !(c->held = evbuffer_new())) || held_frame_spill(c) != 0) {
        conn_fail(c, WS_CLOSE_INTERNAL, "out of memory", END_INTERNAL_ERROR);
        return NULL;
    }
    dirty_link(c);
    return c->held;
}

void conn_send_text(struct conn *c, const void *data, size_t len)
{
    if (!conn_is_open(c))
        return;
    struct evbuffer *out = commit_ordered_output(c);
    if (out)
        add_data_frame(c, out, WS_OP_TEXT, data, len);
}

/* Close with 1013 when queued is over send_queue; false then. */
static bool within_send_queue(struct conn *c, size_t queued)
{
    if (queued > cfg_of(c)->send_queue) {
        log_warn("conn %llu %s: send queue %zu bytes over %llu, closing as slow consumer",
                 (unsigned long long)c->id, c->addr, queued,
                 (unsigned long long)cfg_of(c)->send_queue);
        c->lp->metrics.slow_consumers++;
        conn_close(c, WS_CLOSE_TRY_AGAIN, "slow consumer", END_SLOW_CONSUMER);
        return false;
    }
    return true;
}

bool conn_check_backpressure(struct conn *c)
{
    return conn_is_open(c) && within_send_queue(c, conn_pending_len(c));
}

/*
 * After the commit: the held frames go to the client. When nothing else is queued they are written
 * to the socket at once, and only what the socket does not take goes through the bufferevent: a
 * fan-out commit reaches every member in one send (one writev for several frames) each, instead of
 * arming write interest on every member (two epoll_ctl) and writing in the next loop iteration. A
 * send error is left for the bufferevent to meet on its own write. Plain TCP only (TLS writes
 * through its bufferevent), and only a batch below half the send queue: a replay paused on a
 * fuller queue waits for on_drained, which a write done here would not call.
 */
static void release_held(struct conn *c)
{
    /* one held frame goes as it is (referenced); several are joined (each is under 1 KiB) */
    uint8_t joined[CONN_HELD_FRAMES * SHARED_FRAME_COPY_MAX];
    struct shared_frame *f = c->n_held_frames == 1 ? c->held_frames[0] : NULL;
    const uint8_t *data = f ? f->data : NULL;
    size_t len = f ? f->len : 0;
    if (c->n_held_frames > 1) {
        for (int i = 0; i < c->n_held_frames; i++) {
            memcpy(joined + len, c->held_frames[i]->data, c->held_frames[i]->len);
            len += c->held_frames[i]->len;
        }
        data = joined;
    } else if (!f) {
        len = evbuffer_get_length(c->held);
    }
    size_t done = 0;
    if (out_raw_len(c) == 0 && len <= cfg_of(c)->send_queue / 2 &&
        (!c->bev || !bufferevent_openssl_get_ssl(c->bev))) {
        evutil_socket_t fd = conn_fd(c);
        if (fd >= 0 && f && ioq_put_frame(c, f)) {
            done = len;
        } else if (fd >= 0 && data && ioq_put_copy(c, data, len)) {
            done = len;
        } else if (fd >= 0 && data) {
            ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
            done = n > 0 ? (size_t)n : 0;
        } else if (fd >= 0 && ioq_put_copy(c, evbuffer_pullup(c->held, -1), len)) {
            evbuffer_drain(c->held, len);
        } else if (fd >= 0) {
            evbuffer_write(c->held, fd);
        }
    }
    struct evbuffer *out = NULL;
    if (data) {
        if (done < len && (out = conn_out(c)) && evbuffer_add(out, data + done, len - done))
            conn_drop_later(c, len - done);
        held_frame_drop(c);
    } else if (evbuffer_get_length(c->held) > 0 && (out = conn_out(c))) {
        evbuffer_add_buffer(out, c->held);
    }
}

void conn_pool_flush(void *pool, bool ok)
{
    struct conn_pool *p = pool;
    struct conn *c = p->dirty;
    p->dirty = NULL;
    while (c) {
        assert(c->dirty && !c->freeing);
        struct conn *next = c->dirty_next;
        c->dirty = false;
        c->dirty_next = NULL;
        if (!ok) {
            /*
             * Nothing of the batch is durable, so no receipt may go out: drop the held frames and
             * fail the connection; the client resends with the same cid (idempotent) on reconnect.
             */
            if (c->held)
                evbuffer_drain(c->held, evbuffer_get_length(c->held));
            held_frame_drop(c);
            if (c->close_held) {
                /* the close that waited behind them went too: say why now */
                uint8_t payload[WS_MAX_CTRL_PAYLOAD];
                size_t plen = ws_close_payload(payload, WS_CLOSE_INTERNAL, "store error");
                add_frame(c, conn_out(c), WS_OP_CLOSE, payload, plen);
                c->close_code = WS_CLOSE_INTERNAL;
                c->close_held = false;
            } else {
                conn_fail(c, WS_CLOSE_INTERNAL, "store error", END_INTERNAL_ERROR);
            }
        } else if (c->held && c->close_held) {
            /* A close waits at the end: everything before it goes out (each add was bounded). */
            struct evbuffer *out = conn_out(c);
            if (out)
                evbuffer_add_buffer(out, c->held);
            c->close_held = false;
        } else if ((c->held || c->n_held_frames) && conn_is_open(c) &&
                   within_send_queue(c, output_len(c))) {
            /* Each held frame was checked as it was queued: only the output may have grown. */
            release_held(c);
        } else {
            if (c->held)
                evbuffer_drain(c->held, evbuffer_get_length(c->held));
            held_frame_drop(c);
        }
        c = next;
    }
    /*
     * The commit's fan-out in one submission. Sends only: this may run on the store fiber, and
     * reads handed up from there would run their handlers there (see ioq_flush_sends).
     */
    if (p->ioq)
        ioq_flush_sends(p->ioq);
}

void conn_pool_trim(struct conn_pool *p)
{
    for (struct conn *c = p->conns; c; c = c->next) {
        if (c->held && !c->dirty && evbuffer_get_length(c->held) == 0) {
            evbuffer_free(c->held);
            c->held = NULL;
        }
        /* a detached connection's output and write event, once all was written */
        if (c->out && evbuffer_get_length(c->out) == 0 && wbuf_owner != c) {
            event_free(c->wev);
            evbuffer_free(c->out);
            c->wev = NULL;
            c->out = NULL;
        }
    }
}

struct shared_frame *shared_frame_new(enum ws_opcode op, const void *payload, size_t len)
{
    uint8_t hdr[WS_MAX_HDR];
    size_t hlen = ws_frame_header(hdr, true, op, len);
    struct shared_frame *f = malloc(sizeof(*f) + hlen + len);
    if (!f)
        return NULL;
    f->refs = 1;
    f->len = hlen + len;
    f->hlen = hlen;
    f->opcode = (uint8_t)op;
    f->deflate_tried = 0;
    memset(f->deflated, 0, sizeof(f->deflated));
    memcpy(f->data, hdr, hlen);
    if (len)
        memcpy(f->data + hlen, payload, len);
    return f;
}

void shared_frame_unref(struct shared_frame *f)
{
    if (f && --f->refs == 0) {
        for (unsigned i = 0; i < CONN_DEFLATE_WINDOWS; i++)
            shared_frame_unref(f->deflated[i]);
        free(f);
    }
}

/*
 * The compressed variant of f for c's window, made at the first recipient that needs it (so a
 * fan-out is compressed once per window, normally once); NULL when f goes out as is.
 */
static struct shared_frame *shared_frame_for(struct conn *c, struct shared_frame *f)
{
    size_t plen = f->len - f->hlen;
    if (!worth_compressing(c, (enum ws_opcode)f->opcode, plen))
        return NULL;
    unsigned w = c->z->params.server_max_window_bits - 9u;
    if (!(f->deflate_tried & (1u << w))) {
        f->deflate_tried |= (uint8_t)(1u << w);
        struct ws_deflate_buf zb = {0};
        if (deflate_payload(c->pool, &c->z->params, f->data + f->hlen, plen, &zb) == 0) {
            f->deflated[w] = shared_frame_new((enum ws_opcode)f->opcode, zb.p, zb.len);
            if (f->deflated[w])
                f->deflated[w]->data[0] |= WS_DEFLATE_RSV1;
            ws_deflate_buf_release(&zb);
        }
    }
    if (f->deflated[w]) {
        c->lp->metrics.deflate_out_raw += plen;
        c->lp->metrics.deflate_out_wire += f->deflated[w]->len - f->deflated[w]->hlen;
    }
    return f->deflated[w];
}

static void shared_frame_cleanup_cb(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    shared_frame_unref(arg);
}

void conn_send_shared(struct conn *c, struct shared_frame *f)
{
    if (!conn_is_open(c))
        return;
    struct shared_frame *z = shared_frame_for(c, f);
    if (z)
        f = z;
    if (f->len < SHARED_FRAME_COPY_MAX && loop_tx_open(c->lp) &&
        (!c->dirty || (c->n_held_frames > 0 && c->n_held_frames < CONN_HELD_FRAMES))) {
        /* the first frames held for this commit (nothing else is): referenced until the flush, no
         * chain, no copy */
        if (!conn_check_backpressure(c))
            return;
        f->refs++;
        c->held_frames[c->n_held_frames++] = f;
        dirty_link(c);
        c->lp->metrics.bytes_out += f->len;
        return;
    }
    struct evbuffer *out = commit_ordered_output(c);
    if (!out)
        return;
    /*
     * A small frame is copied: libevent gives every referenced piece a chain of its own of at least
     * 1 KiB, so a 60-byte member event held for the commit cost 1 KiB per recipient (a join storm's
     * quadratic fan-out: 200 KiB per connection). Copied, consecutive frames share one chain.
     */
    if (f->len < SHARED_FRAME_COPY_MAX) {
        if (evbuffer_add(out, f->data, f->len) == 0)
            c->lp->metrics.bytes_out += f->len;
        return;
    }
    /* Referenced, not copied: one encoding of a large fan-out frame serves every member. */
    f->refs++;
    if (evbuffer_add_reference(out, f->data, f->len, shared_frame_cleanup_cb, f) != 0) {
        f->refs--;
        return;
    }
    c->lp->metrics.bytes_out += f->len;
}

/* ---- HTTP phase ---- */

void conn_http_reply(struct conn *c, int status, const char *content_type, const char *extra_headers,
                     const void *body, size_t len, bool head_only)
{
    assert(c->state == CONN_HTTP);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    c->lp->metrics.handshakes[metrics_status_index(status)]++;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n%s\r\n",
                        status, http_status_text(status), content_type, len,
                        extra_headers ? extra_headers : "");
    if (!head_only && len)
        evbuffer_add(out, body, len);
    c->state = CONN_HTTP_CLOSING;
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setcb(c->bev, NULL, conn_write_cb, conn_event_cb, c);
    /* A client that never reads its answer must not hold the slot forever. */
    timer_arm_ms(c, cfg_of(c)->close_timeout_ms);
}

void conn_http_text(struct conn *c, int status, const char *extra, const char *body)
{
    if (status >= 400)
        log_info("conn %llu %s: HTTP %d %s", (unsigned long long)c->id, c->addr, status, body);
    char text[256];
    int n = snprintf(text, sizeof(text), "%s\n", body);
    conn_http_reply(c, status, "text/plain; charset=utf-8", extra, text,
                    n < 0 ? 0 : (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1, false);
}

static void process_frames(struct conn *c);

/*
 * Reserve what an accepted permessage-deflate offer may cost against the budget: the shared
 * compressor of its window (once, kept until the pool goes) and this connection's worst-case
 * inflate state (given back at close). false: it does not fit, decline the offer.
 */
static bool deflate_reserve(struct conn *c, const struct ws_deflate_params *dp, size_t *reserved)
{
    struct conn_deflate *d = &c->pool->deflate;
    unsigned w = dp->server_max_window_bits - 9u;
    if (w >= CONN_DEFLATE_WINDOWS)
        return false;
    if (!d->comp_reserved[w]) {
        if (!ws_deflate_mem_reserve(&d->mem, ws_deflate_deflate_worst(9 + w, d->comp[w].mem_level)))
            goto declined;
        d->comp_reserved[w] = true;
    }
    size_t need = ws_deflate_inflate_worst(dp->client_max_window_bits);
    if (!ws_deflate_mem_reserve(&d->mem, need))
        goto declined;
    *reserved = need;
    return true;
declined:
    log_warn("conn %llu %s: compression_memory_budget reached: permessage-deflate declined",
             (unsigned long long)c->id, c->addr);
    return false;
}

void conn_upgrade(struct conn *c, const struct ws_handshake_result *hs, const struct conn_handler *h,
                  void *data)
{
    assert(c->state == CONN_HTTP && c->counted && h && h->on_close);
    struct ws_handshake_result r = *hs;
    struct conn_z *z = NULL;
    size_t reserved = 0;
    if (r.deflate && (!(z = calloc(1, sizeof(*z))) || !deflate_reserve(c, &r.deflate_params, &reserved))) {
        if (!z)
            log_warn("conn %llu %s: out of memory: permessage-deflate declined",
                     (unsigned long long)c->id, c->addr);
        free(z);
        z = NULL;
        r.deflate = false; /* declined: the 101 omits the extension */
    }
    char buf[512];
    size_t n = ws_handshake_101(buf, sizeof(buf), &r);
    bufferevent_write(c->bev, buf, n);
    c->lp->metrics.handshakes[MS_101]++;
    c->lp->metrics.ws_total++;
    c->state = CONN_OPEN;
    c->handler = h;
    c->data = data;
    ws_parser_init(&c->parser, cfg_of(c)->max_message_size);
    if (r.deflate) {
        c->deflate = true;
        c->z = z;
        z->params = r.deflate_params;
        z->reserved = reserved;
        c->pool->deflate.conns++;
        /* The inflated size of a message is bounded like an uncompressed one's. */
        ws_deflate_inflater_init(&z->inflater, &r.deflate_params, cfg_of(c)->max_message_size,
                                 &c->pool->deflate.mem);
        ws_parser_set_deflate(&c->parser, true);
    }
    bufferevent_setwatermark(c->bev, EV_READ, 0, WS_READ_HIGH_WATER);
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    /* Low-water 0: the write callback means "all written", used for drain and replay pacing. */
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    c->plain = !bufferevent_openssl_get_ssl(c->bev) && bufferevent_getfd(c->bev) >= 0;
    evtimer_del(c->timer);
    c->last_rx_ms = loop_now_ms(c->lp);
    if (cfg_of(c)->ping_interval_ms > 0)
        timer_arm_ms(c, cfg_of(c)->ping_interval_ms);
}

bool conn_admit(struct conn *c)
{
    struct conn_pool *p = c->pool;
    if (p->num_ws >= cfg_of(c)->max_connections) {
        conn_http_text(c, 503, "Retry-After: 5\r\n", "server is at max_connections");
        return false;
    }
    if (!c->peer_counted) {
        if (registry_counter_get(p->ip_counts, c->addr) >= cfg_of(c)->max_connections_per_ip) {
            conn_http_text(c, 503, "Retry-After: 5\r\n", "too many connections from this address");
            return false;
        }
        if (registry_counter_add(p->ip_counts, c->addr, +1) == (size_t)-1) {
            conn_http_text(c, 503, NULL, "out of memory");
            return false;
        }
    }
    p->num_ws++;
    c->counted = true;
    return true;
}

static void process_http(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    size_t max = cfg_of(c)->max_header_size;
    size_t n = len < max ? len : max;
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    struct http_req req;
    int rc = http_req_parse(&req, data, n, max);
    if (rc == HTTP_PARSE_PARTIAL)
        return;
    if (rc == HTTP_PARSE_TOO_LARGE) {
        conn_http_text(c, 431, NULL, "request head too large");
        return;
    }
    if (rc == HTTP_PARSE_BAD) {
        conn_http_text(c, 400, NULL, "malformed request");
        return;
    }
    evtimer_del(c->timer);
    c->pool->on_request(c->pool->request_arg, c, &req);
    if (c->state == CONN_HTTP && !c->dead) {
        /* The router must answer, upgrade or drop: a request left hanging would wedge the slot. */
        log_error("conn %llu %s: request left unanswered", (unsigned long long)c->id, c->addr);
        conn_http_text(c, 500, NULL, "internal error");
    }
    /* The head is no longer needed (req points into it): drop it, keep any frames that followed. */
    evbuffer_drain(in, (size_t)rc);
    if (c->state == CONN_OPEN && !c->dead && evbuffer_get_length(in))
        process_frames(c);
}

/* ---- WebSocket phase ---- */

/*
 * ---- The store fiber (net/gate.h) ----
 * With a gate (PostgreSQL), the application's callbacks run on the store fiber, where a store call
 * may park until the database answers while the loop serves on. A callback made from the loop
 * becomes a job: the connection stays held (busy) until its jobs ran, so a close or abort meanwhile
 * frees it only after them. Messages are copied into the connection's inbox (the read buffers are
 * reused at once), one record each, and one job per connection empties it; the connection stops
 * reading while it has jobs waiting, so its inbox holds at most one read (and one reassembled
 * message) whatever the frames: a flood of tiny frames costs its bytes, not a job each.
 * Jobs run in the order they were made. On the fiber already (one job closing another
 * connection), callbacks are plain calls, as without a gate. Echo never touches the store: it
 * stays on the loop.
 */
enum conn_job_kind { CJ_INBOX, CJ_CLOSE, CJ_PING, CJ_DRAINED, CJ_CALL };

/* An inbox record's head; the payload follows. */
struct inbox_rec {
    uint8_t opcode;
    uint32_t len;
};

struct conn_job {
    struct conn *c;
    enum conn_job_kind kind;
    /* CJ_CLOSE, CJ_INBOX: the handler's data (c->data is NULL from the moment the end is decided) */
    void *data;
    enum end_reason why;
    void (*fn)(struct conn *c, void *arg); /* CJ_CALL */
    void *arg;
};

static bool conn_gated(const struct conn *c)
{
    return c->lp->gate && !gate_in_fiber(c->lp->gate) && c->handler != &conn_echo_handler;
}

static void conn_closing_written(struct conn *c);

/* A job of c ended: let go of c, read again when none waits, finish what waited for it. */
static void conn_job_done(struct conn *c)
{
    assert(c->busy > 0 && c->jobs > 0);
    c->jobs--;
    c->busy--;
    if (c->busy)
        return;
    if (c->freeing) {
        if (c->destroy_deferred)
            conn_destroy(c); /* conn_free ran while the job held c */
        return;
    }
    if (c->dead) {
        conn_free(c);
        return;
    }
    if (c->jobs_paused && !c->jobs) {
        c->jobs_paused = false;
        if (c->state == CONN_OPEN && !c->close_received)
            conn_reading(c, true);
    }
    if (c->state == CONN_CLOSING && !c->close_held && output_len(c) == 0)
        conn_closing_written(c); /* its write callback came while c was held */
}

/*
 * Hand the inbox's messages up, oldest first; the transport may add more while one is handled (it
 * parked), and they are taken in the same run. They were received before the end was decided (the
 * end's job is queued behind this one), so they are handled as without a gate, unless the
 * application ended the connection itself meanwhile.
 */
static void inbox_run(struct conn *c, void *data)
{
    uint8_t *buf = NULL;
    size_t cap = 0;
    struct inbox_rec h;
    while (c->inbox && evbuffer_remove(c->inbox, &h, sizeof(h)) == (int)sizeof(h)) {
        if (h.len > cap) {
            uint8_t *grown = realloc(buf, h.len);
            if (!grown) {
                evbuffer_drain(c->inbox, h.len);
                conn_fail(c, WS_CLOSE_INTERNAL, "out of memory", END_INTERNAL_ERROR);
                continue;
            }
            buf = grown;
            cap = h.len;
        }
        if (h.len)
            evbuffer_remove(c->inbox, buf, h.len);
        if (!c->app_closed)
            c->handler->on_message(c, data, h.opcode, buf, h.len);
    }
    free(buf);
    c->inbox_job = false;
    if (c->inbox) { /* a read's worth at most: given back rather than kept per connection */
        evbuffer_free(c->inbox);
        c->inbox = NULL;
    }
}

static void conn_job_run(void *arg)
{
    struct conn_job *j = arg;
    struct conn *c = j->c;
    switch (j->kind) {
    case CJ_INBOX:
        inbox_run(c, j->data);
        break;
    case CJ_CLOSE:
        c->app_closed = true;
        c->handler->on_close(c, j->data, j->why);
        break;
    case CJ_PING:
        if (c->data && c->handler->on_ping)
            c->handler->on_ping(c, c->data);
        break;
    case CJ_DRAINED:
        if (c->data && c->state == CONN_OPEN && c->handler->on_drained)
            c->handler->on_drained(c, c->data);
        break;
    case CJ_CALL:
        j->fn(c, j->arg);
        break;
    }
    free(j);
    conn_job_done(c);
}

/* Hand j to the fiber, holding c; false (j freed) when out of memory. */
static bool conn_job_submit(struct conn *c, struct conn_job *j)
{
    j->c = c;
    c->busy++;
    c->jobs++;
    if (!gate_call(c->lp->gate, conn_job_run, j)) {
        c->busy--;
        c->jobs--;
        free(j);
        return false;
    }
    if (c->jobs && !c->jobs_paused && c->state == CONN_OPEN) {
        /* It waits (or parked): read nothing more from this peer until its jobs ran. */
        c->jobs_paused = true;
        conn_reading(c, false);
    }
    return true;
}

static void conn_job_simple(struct conn *c, enum conn_job_kind kind)
{
    struct conn_job *j = calloc(1, sizeof(*j));
    if (j)
        j->kind = kind;
    if (!j || !conn_job_submit(c, j)) {
        log_error("conn %llu %s: out of memory queueing a callback", (unsigned long long)c->id,
                  c->addr);
        conn_abort(c, END_INTERNAL_ERROR);
    }
}

void conn_call(struct conn *c, void (*fn)(struct conn *c, void *arg), void *arg)
{
    if (!c->lp->gate || gate_in_fiber(c->lp->gate)) {
        c->busy++;
        fn(c, arg);
        c->busy--;
        if (c->dead && !c->busy)
            conn_free(c);
        return;
    }
    struct conn_job *j = calloc(1, sizeof(*j));
    if (j) {
        j->kind = CJ_CALL;
        j->fn = fn;
        j->arg = arg;
    }
    if (!j || !conn_job_submit(c, j)) {
        /* cannot queue: run it here (the store then finishes the fiber's work first) */
        c->busy++;
        fn(c, arg);
        c->busy--;
        if (c->dead && !c->busy)
            conn_free(c);
    }
}

/* The handler's data is handed to on_close once; the application's state ends now. */
static void end_app(struct conn *c, enum end_reason why)
{
    void *data = c->data;
    if (!data)
        return;
    assert(c->handler && c->state != CONN_HTTP);
    c->data = NULL;
    if (conn_gated(c)) {
        struct conn_job *j = calloc(1, sizeof(*j));
        if (j) {
            j->kind = CJ_CLOSE;
            j->data = data;
            j->why = why;
            if (conn_job_submit(c, j))
                return;
        }
        log_error("conn %llu %s: out of memory queueing its end: ending it here",
                  (unsigned long long)c->id, c->addr);
    }
    c->app_closed = true;
    if (!c->lp->gate) {
        c->handler->on_close(c, data, why);
        return;
    }
    /* On the store fiber: on_close may park there, and c must outlive it whatever the loop
     * does meanwhile (the peer's EOF frees a connection nobody holds). */
    c->busy++;
    c->handler->on_close(c, data, why);
    c->busy--;
    /* A free wanted meanwhile (dead: the peer's close or EOF came while on_close was parked)
     * cannot happen here, under the caller's feet: the timer does it as soon as the loop runs. */
    if (!c->busy && c->dead && !c->freeing)
        timer_arm_ms(c, 0);
}

static void deliver_message(struct conn *c, uint8_t opcode, const uint8_t *data, size_t len)
{
    if (!c->data)
        return;
    if (conn_gated(c)) {
        struct inbox_rec h = {.opcode = opcode, .len = (uint32_t)len};
        if ((!c->inbox && !(c->inbox = evbuffer_new())) ||
            evbuffer_expand(c->inbox, sizeof(h) + len) != 0 ||
            evbuffer_add(c->inbox, &h, sizeof(h)) != 0 ||
            (len && evbuffer_add(c->inbox, data, len) != 0)) {
            conn_fail(c, WS_CLOSE_INTERNAL, "out of memory", END_INTERNAL_ERROR);
            return;
        }
        if (c->inbox_job)
            return; /* the job on its way takes it too */
        struct conn_job *j = calloc(1, sizeof(*j));
        if (j) {
            j->kind = CJ_INBOX;
            j->data = c->data;
            c->inbox_job = true;
        }
        if (!j || !conn_job_submit(c, j)) {
            c->inbox_job = false;
            conn_fail(c, WS_CLOSE_INTERNAL, "out of memory", END_INTERNAL_ERROR);
        }
        return;
    }
    c->handler->on_message(c, c->data, opcode, data, len);
}

static void finish_message(struct conn *c);

enum { INFLATE_ERR_OOM = 1, INFLATE_ERR_UTF8 = 2 };

/* ws_deflate_sink_fn: inflated bytes of the message being received, UTF-8 checked as they come. */
static int inflate_sink(void *arg, const uint8_t *p, size_t n)
{
    struct conn *c = arg;
    if (c->msg_opcode == WS_OP_TEXT && utf8_feed(&c->z->inflate_utf8, p, n) == UTF8_REJECT) {
        c->z->inflate_err = INFLATE_ERR_UTF8;
        return 1;
    }
    if (evbuffer_add(c->msg, p, n) != 0) {
        c->z->inflate_err = INFLATE_ERR_OOM;
        return 1;
    }
    return 0;
}

/*
 * A chunk of a compressed message (RSV1): inflated into c->msg as it arrives, bounded by
 * max_message_size (1009 the moment it would be exceeded), its text checked for UTF-8 (1007).
 */
static void on_compressed_data(struct conn *c, const struct ws_event *ev)
{
    if (ev->msg_start) {
        c->msg_opcode = ev->opcode;
        c->z->inflate_utf8 = UTF8_ACCEPT;
        c->z->inflate_err = 0;
    }
    if (!c->msg && !(c->msg = evbuffer_new())) {
        conn_fail(c, WS_CLOSE_INTERNAL, "out of memory", END_INTERNAL_ERROR);
        return;
    }
    c->lp->metrics.deflate_in_wire += ev->len;
    size_t before = evbuffer_get_length(c->msg);
    int rc = ws_deflate_inflater_feed(&c->z->inflater, ev->data, ev->len, ev->msg_end, inflate_sink, c);
    c->lp->metrics.deflate_in_raw += evbuffer_get_length(c->msg) - before;
    if (rc == WS_DEFLATE_OK && ev->msg_end && c->msg_opcode == WS_OP_TEXT &&
        c->z->inflate_utf8 != UTF8_ACCEPT) {
        rc = WS_DEFLATE_ERR_SINK;
        c->z->inflate_err = INFLATE_ERR_UTF8;
    }
    if (rc != WS_DEFLATE_OK) {
        uint16_t code = WS_CLOSE_INTERNAL;
        const char *why = ws_deflate_strerror(rc);
        if (rc == WS_DEFLATE_ERR_TOO_BIG) {
            code = WS_CLOSE_TOO_BIG;
            why = "message too big";
        } else if (rc == WS_DEFLATE_ERR_DATA) {
            code = WS_CLOSE_BAD_DATA;
            why = "invalid compressed data";
        } else if (rc == WS_DEFLATE_ERR_SINK && c->z->inflate_err == INFLATE_ERR_UTF8) {
            code = WS_CLOSE_BAD_DATA;
            why = "invalid UTF-8 in text message";
        } else if (rc == WS_DEFLATE_ERR_SINK || rc == WS_DEFLATE_ERR_NOMEM) {
            why = "out of memory";
        }
        log_info("conn %llu %s: inflate: %s (close %u)", (unsigned long long)c->id, c->addr, why,
                 code);
        conn_fail(c, code, why, code == WS_CLOSE_INTERNAL ? END_INTERNAL_ERROR : END_PROTOCOL_ERROR);
        return;
    }
    if (ev->msg_end)
        finish_message(c);
}

static void on_data(struct conn *c, const struct ws_event *ev)
{
    if (ev->compressed) {
        on_compressed_data(c, ev);
        return;
    }
    if (ev->msg_start && ev->msg_end) {
        deliver_message(c, ev->opcode, ev->data, ev->len); /* whole message in one chunk: no copy */
        return;
    }
    if (ev->msg_start)
        c->msg_opcode = ev->opcode;
    if (!c->msg && !(c->msg = evbuffer_new())) {
        conn_fail(c, WS_CLOSE_INTERNAL, "out of memory", END_INTERNAL_ERROR);
        return;
    }
    if (ev->len)
        evbuffer_add(c->msg, ev->data, ev->len);
    if (ev->msg_end)
        finish_message(c);
}

/* c->msg holds a whole message (reassembled or inflated): hand it up, then free it. */
static void finish_message(struct conn *c)
{
    size_t len = evbuffer_get_length(c->msg);
    if (c->handler == &conn_echo_handler && worth_compressing(c, c->msg_opcode, len)) {
        const uint8_t *data = evbuffer_pullup(c->msg, -1);
        deliver_message(c, c->msg_opcode, data, len); /* echo_on_message compresses it */
    } else if (c->handler == &conn_echo_handler) {
        if (conn_check_backpressure(c)) {
            /* Echo a reassembled message by moving its chains: no copy of a large payload. */
            uint8_t hdr[WS_MAX_HDR];
            size_t hlen = ws_frame_header(hdr, true, (enum ws_opcode)c->msg_opcode, len);
            struct evbuffer *out = conn_output(c);
            evbuffer_add(out, hdr, hlen);
            evbuffer_add_buffer(out, c->msg);
            c->lp->metrics.msgs_in[MK_ECHO]++;
            c->lp->metrics.msgs_out[MK_ECHO]++;
            c->lp->metrics.bytes_out += hlen + len;
        }
    } else {
        const uint8_t *data = evbuffer_pullup(c->msg, -1);
        deliver_message(c, c->msg_opcode, data, len);
    }
    /* A message can be up to max_message_size; give the memory back rather than keep it per conn. */
    if (c->msg) {
        evbuffer_free(c->msg);
        c->msg = NULL;
    }
}

static void on_close_frame(struct conn *c, const struct ws_event *ev)
{
    assert(!c->close_received); /* process_frames stops reading frames after the first close */
    c->close_received = true;
    if (!c->close_sent) {
        /* Peer-initiated: echo its code (RFC 6455 §5.5.1), then we close TCP once it is written. */
        uint8_t payload[WS_MAX_CTRL_PAYLOAD];
        size_t plen = 0;
        if (ev->close_code != WS_CLOSE_NO_STATUS)
            plen = ws_close_payload(payload, ev->close_code, "");
        add_frame(c, conn_output(c), WS_OP_CLOSE, payload, plen);
        c->close_sent = true;
        c->close_code = ev->close_code;
        c->end_reason = END_CLIENT_CLOSE;
        log_info("conn %llu %s: client closed with %u", (unsigned long long)c->id, c->addr,
                 ev->close_code);
    }
    c->state = CONN_CLOSING;
    end_app(c, c->end_reason);
    conn_reading(c, false);
    if (output_len(c) == 0)
        c->dead = true;
    else
        timer_arm_ms(c, cfg_of(c)->close_timeout_ms);
}

static bool handle_event(struct conn *c, const struct ws_event *ev)
{
    switch (ev->type) {
    case WS_EV_DATA:
        if (!c->close_sent)
            on_data(c, ev);
        break;
    case WS_EV_PING:
        /*
         * A pong is output like any other: a peer that pings and never reads is a slow consumer
         * (1013) once send_queue is full, instead of growing the server without bound.
         */
        if (conn_check_backpressure(c))
            add_frame(c, conn_output(c), WS_OP_PONG, ev->data, ev->len);
        break;
    case WS_EV_PONG:
        break; /* liveness already recorded on read */
    case WS_EV_CLOSE:
        on_close_frame(c, ev);
        return false;
    case WS_EV_ERROR:
        log_info("conn %llu %s: protocol error: %s (close %u)", (unsigned long long)c->id, c->addr,
                 ev->error, ev->close_code);
        /* The stream cannot be parsed further, so do not wait for the peer's close. */
        conn_fail(c, ev->close_code, ev->error, END_PROTOCOL_ERROR);
        return false;
    case WS_EV_NONE:
        break;
    }
    return !c->dead;
}

/*
 * Feed p[0..len) to the parser and act on its events. Returns false when the connection stops
 * taking frames (closed, failed, freed); *consumed counts the bytes the parser took.
 */
static bool feed_frames(struct conn *c, uint8_t *p, size_t len, size_t *consumed)
{
    bool go_on = true;
    while (go_on) {
        struct ws_event ev;
        size_t n = ws_parser_feed(&c->parser, p, len, &ev);
        p += n;
        len -= n;
        *consumed += n;
        if (ev.type == WS_EV_NONE)
            break;
        go_on = handle_event(c, &ev);
    }
    return go_on;
}

static void process_frames(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->lp->metrics.bytes_in += evbuffer_get_length(in);
    while (evbuffer_get_length(in) && !c->dead && !c->close_received) {
        struct evbuffer_iovec vec[8];
        int nvec = evbuffer_peek(in, -1, NULL, vec, 8);
        if (nvec > 8)
            nvec = 8;
        size_t consumed = 0;
        bool go_on = true;
        for (int i = 0; i < nvec && go_on; i++)
            go_on = feed_frames(c, vec[i].iov_base, vec[i].iov_len, &consumed);
        evbuffer_drain(in, consumed);
        if (!go_on)
            break;
    }
    if (c->close_received || c->dead)
        evbuffer_drain(in, evbuffer_get_length(in));
}

/* ---- echo ---- */

static void echo_on_message(struct conn *c, void *data, uint8_t opcode, const uint8_t *p, size_t len)
{
    (void)data;
    c->lp->metrics.msgs_in[MK_ECHO]++;
    c->lp->metrics.msgs_out[MK_ECHO]++;
    /*
     * While this connection owns the run its output evbuffer and held frames are empty (anything
     * queued there spills the run first), so the run is all it has pending.
     */
    if (wbuf_owner == c ? !conn_is_open(c) || !within_send_queue(c, conn_wbuf_len)
                        : !conn_check_backpressure(c))
        return;
    if (wbuf_owner == c && !worth_compressing(c, (enum ws_opcode)opcode, len) &&
        len <= sizeof(conn_wbuf) - WS_MAX_HDR - conn_wbuf_len) {
        /* The gathered run (see conn_wbuf): header and payload appended, sent when the read ends. */
        uint8_t *w = conn_wbuf + conn_wbuf_len;
        size_t hlen = ws_frame_header(w, true, (enum ws_opcode)opcode, len);
        memcpy(w + hlen, p, len);
        conn_wbuf_len += hlen + len;
        c->lp->metrics.bytes_out += hlen + len;
        return;
    }
    conn_send_frame(c, (enum ws_opcode)opcode, p, len);
}

static void echo_on_close(struct conn *c, void *data, enum end_reason why)
{
    (void)c;
    (void)data;
    (void)why;
}

const struct conn_handler conn_echo_handler = {
    .name = "echo",
    .on_message = echo_on_message,
    .on_close = echo_on_close,
};

/* ---- callbacks ---- */

/*
 * Write what a read produced at once, in the read's callback, instead of arming write interest and
 * writing on the loop's next pass: a round trip then costs one write and no epoll change. Adding to
 * the output already armed the write event; when all is written it is disarmed again in the same
 * loop iteration, which the epoll changelist (net/loop.c) turns into no syscall. What the socket
 * does not take stays queued for the write event, and an error is left for that write to meet and
 * report, so failure handling has one path. Plain TCP only: TLS writes go through OpenSSL.
 */
static void conn_write_now(struct conn *c)
{
    if (wbuf_owner == c) {
        /* Only the run to send: the output evbuffer was empty and nothing was queued after it. */
        size_t len = conn_wbuf_len;
        ssize_t n = 0;
        wbuf_owner = NULL;
        conn_wbuf_len = 0;
        if (len && c->state == CONN_OPEN && !c->dead) {
            if (ioq_put_copy(c, conn_wbuf, len))
                return; /* with the other replies of this pass, in one submission */
            n = send(conn_fd(c), conn_wbuf, len, MSG_NOSIGNAL);
        }
        if (n == (ssize_t)len)
            return; /* all written: no write event was ever armed */
        /* The rest goes the write event's way; so does an error, for its write to report. */
        if (n < 0)
            n = 0;
        struct evbuffer *out = conn_out(c);
        if (out && evbuffer_add(out, conn_wbuf + n, len - (size_t)n) != 0)
            conn_drop_later(c, len - (size_t)n);
        return;
    }
    if (!c->plain || c->state != CONN_OPEN || c->dead || c->sq_queued || out_raw_len(c) == 0)
        return;
    if (!c->bev) {
        int n = evbuffer_write(c->out, c->fd);
        if (n <= 0 || evbuffer_get_length(c->out) != 0)
            return;
        event_del(c->wev);
        conn_write_cb(NULL, c); /* all written (as the write event does) */
        return;
    }
    /* Not detached (conn_detach found the connection closing already): its bufferevent. A socket
     * bufferevent keeps its output's front frozen; its own write unfreezes it the same way. */
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_unfreeze(out, 1);
    int n = evbuffer_write(out, bufferevent_getfd(c->bev));
    evbuffer_freeze(out, 1);
    if (n <= 0 || evbuffer_get_length(out) != 0)
        return;
    event_del(&c->bev->ev_write);
    /* As the bufferevent does after a write that empties the output (low-water mark 0). */
    conn_write_cb(c->bev, c);
}

/*
 * The read side of a detached WebSocket. The parser consumes every byte it is given (payload is
 * handed up or gathered into c->msg), so nothing needs to stay in an input buffer between reads:
 * read into one scratch buffer shared by every connection of the thread, unmask in place there,
 * and hand payloads up from it. One recv() of up to CONN_READ_SIZE per readiness (libevent 2.1's
 * socket bufferevent asks for FIONREAD before every read and reads at most 4096 bytes).
 */
static uint8_t conn_rbuf[CONN_READ_SIZE];

/* n bytes read into buf, or 0 at EOF, or -1 with err. */
static void conn_sock_input(struct conn *c, uint8_t *buf, ssize_t n, int err)
{
    /* Never on the store fiber: a handler run from here could park there with this read's parse
     * half done, and the loop would read the connection again meanwhile (net/ioq.h). */
    assert(!c->lp->gate || !gate_in_fiber(c->lp->gate));
    if (n <= 0) {
        if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR))
            return;
        /* What a bufferevent's own read does on EOF or an error. */
        conn_reading(c, false);
        EVUTIL_SET_SOCKET_ERROR(err);
        conn_event_cb(NULL, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), c);
        return;
    }
    c->busy++;
    c->lp->metrics.bytes_in += (uint64_t)n;
    if ((c->state == CONN_OPEN || c->state == CONN_CLOSING) && !c->dead && !c->close_received) {
        size_t consumed = 0;
        c->last_rx_ms = loop_now_ms(c->lp);
        if (c->state == CONN_OPEN && c->handler == &conn_echo_handler && !c->held &&
            out_raw_len(c) == 0) {
            assert(!wbuf_owner && !conn_wbuf_len);
            wbuf_owner = c;
        }
        feed_frames(c, buf, (size_t)n, &consumed);
    }
    conn_write_now(c);
    c->busy--;
    if (c->dead)
        conn_free(c);
}

/* The pool's ioq made c's queued read (net/ioq.h). */
static void conn_received(void *owner, uint8_t *data, long n)
{
    struct conn *c = owner;
    c->rq_queued = false;
    conn_sock_input(c, data, n < 0 ? -1 : n, n < 0 ? (int)-n : 0);
}

static void bare_read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    if (c->freeing || c->rq_queued)
        return;
    if (c->pool->ioq) {
        /* with the other ready connections' reads, in one submission after this pass's events */
        int slot = ioq_recv(c->pool->ioq, fd, c);
        if (slot >= 0) {
            c->rq_slot = slot;
            c->rq_queued = true;
            return;
        }
    }
    ssize_t n = recv(fd, conn_rbuf, sizeof(conn_rbuf), 0);
    conn_sock_input(c, conn_rbuf, n, n < 0 ? errno : 0);
}

/* A detached connection's socket takes more: what the bufferevent's write does, low-water mark 0. */
static void bare_write_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    if (c->sq_queued)
        return; /* its queued entry goes first: this pass's flush, then this event again */
    if (c->freeing || evbuffer_get_length(c->out) == 0) {
        event_del(c->wev);
        return;
    }
    int n = evbuffer_write(c->out, fd);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        int err = n < 0 ? errno : EPIPE;
        event_del(c->wev);
        conn_reading(c, false);
        EVUTIL_SET_SOCKET_ERROR(err);
        conn_event_cb(NULL, BEV_EVENT_WRITING | BEV_EVENT_ERROR, c);
        return;
    }
    if (evbuffer_get_length(c->out) == 0) {
        event_del(c->wev);
        conn_write_cb(NULL, c);
    }
}

/*
 * A plain-TCP connection that just became a WebSocket leaves its bufferevent: the bufferevent (632
 * bytes), its two evbuffers (136 each) and their callbacks were about 1 KiB an idle connection
 * kept for nothing. From now on its socket is read by conn_sock_read, written by send() at once,
 * and only what the socket does not take waits in an output evbuffer made then (conn_out) behind
 * a write event made with it; both are given back once empty (conn_pool_trim). The 101 and any
 * frame already queued move over; the input is empty (process_frames consumed it). No memory for
 * that: the connection stays on its bufferevent, which serves it as it serves TLS.
 */
static void conn_detach(struct conn *c)
{
    struct bufferevent *bev = c->bev;
    struct evbuffer *bout = bufferevent_get_output(bev);
    struct evbuffer *tmp = NULL;
    if (evbuffer_get_length(bufferevent_get_input(bev)) != 0)
        return;
    if (evbuffer_get_length(bout) && !(tmp = evbuffer_new()))
        return;
    bool reading = (bufferevent_get_enabled(bev) & EV_READ) != 0;
    evutil_socket_t fd = bufferevent_getfd(bev);
    bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    /* The bufferevent lets go of the socket (its free then closes nothing) and unfreezes bout. */
    bufferevent_setfd(bev, -1);
    if (tmp)
        evbuffer_add_buffer(tmp, bout);
    bufferevent_free(bev); /* freed when its read callback (this one's caller) returns */
    c->bev = NULL;
    c->fd = fd;
    event_assign(&c->rev, c->lp->base, fd, EV_READ | EV_PERSIST, bare_read_cb, c);
    if (reading)
        event_add(&c->rev, NULL);
    if (tmp) {
        struct evbuffer *out = conn_out(c);
        if (out)
            evbuffer_add_buffer(out, tmp);
        evbuffer_free(tmp);
    }
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    c->busy++;
    if (c->state == CONN_HTTP) {
        process_http(c);
    } else if (c->state == CONN_OPEN || c->state == CONN_CLOSING) {
        c->last_rx_ms = loop_now_ms(c->lp);
        process_frames(c);
    }
    if (c->plain && c->bev && c->state == CONN_OPEN && !c->dead)
        conn_detach(c);
    conn_write_now(c);
    c->busy--;
    if (c->dead)
        conn_free(c);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    switch (c->state) {
    case CONN_HTTP_CLOSING:
        conn_linger(c); /* the client may still be sending (a refused upload, a too large head) */
        return;
    case CONN_CLOSING:
        /* The close frame still waits behind frames held for a commit on its way (PostgreSQL's
         * COMMIT answers asynchronously): the flush puts them out, and this runs again. */
        if (c->close_held)
            return;
        conn_closing_written(c);
        return;
    case CONN_OPEN:
        if (c->data && c->handler->on_drained) {
            if (conn_gated(c)) {
                conn_job_simple(c, CJ_DRAINED);
                return;
            }
            c->busy++;
            c->handler->on_drained(c, c->data);
            c->busy--;
            if (c->dead)
                conn_free(c);
        }
        return;
    case CONN_HTTP:
    case CONN_LINGER:
        return;
    }
}

/* Our close frame is written. While jobs hold c this waits for the last of them. */
static void conn_closing_written(struct conn *c)
{
    if (c->busy)
        return;
    if (c->failed)
        conn_linger(c); /* close frame written; the peer may still be sending */
    else if (c->close_received)
        conn_free(c); /* closing handshake done */
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (c->state == CONN_OPEN) {
            /* TCP went away without a close handshake (1006): not a logout, a dropped link. */
            c->end_reason = c->close_sent ? c->end_reason : END_CONNECTION_LOST;
            if (!c->close_sent)
                c->close_code = WS_CLOSE_ABNORMAL;
            log_info("conn %llu %s: connection lost (%s)", (unsigned long long)c->id, c->addr,
                     (what & BEV_EVENT_EOF) ? "eof" : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        }
        conn_free(c);
    }
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    const struct px_config *cfg = cfg_of(c);
    if (c->dead) {
        conn_free(c); /* a free left for later (end_app) */
        return;
    }
    switch (c->state) {
    case CONN_HTTP:
        c->lp->metrics.handshakes[MS_OTHER]++;
        log_info("conn %llu %s: handshake timeout", (unsigned long long)c->id, c->addr);
        conn_free(c);
        return;
    case CONN_HTTP_CLOSING:
    case CONN_CLOSING:
    case CONN_LINGER:
        log_debug("conn %llu %s: close timeout", (unsigned long long)c->id, c->addr);
        conn_free(c);
        return;
    case CONN_OPEN:
        break;
    }
    int64_t now = loop_now_ms(c->lp);
    if (c->jobs_paused)
        c->last_rx_ms = now; /* not read while its jobs wait for the store: not silent */
    struct heartbeat_state hb = {c->last_rx_ms, c->ping_sent_ms, c->ping_outstanding};
    int64_t next;
    enum heartbeat_action act =
        heartbeat_tick(&hb, now, cfg->ping_interval_ms, cfg->pong_timeout_ms, &next);
    c->ping_sent_ms = hb.ping_sent_ms;
    c->ping_outstanding = hb.ping_outstanding;
    if (act == HEARTBEAT_TIMEOUT) {
        c->lp->metrics.heartbeat_timeouts++;
        log_info("conn %llu %s: no answer to ping within %lld ms, closing", (unsigned long long)c->id,
                 c->addr, (long long)cfg->pong_timeout_ms);
        c->close_code = WS_CLOSE_GOING_AWAY; /* recorded; a dead peer reads no close frame */
        conn_abort(c, END_HEARTBEAT_TIMEOUT);
        return;
    }
    if (act == HEARTBEAT_PING) {
        add_frame(c, conn_out(c), WS_OP_PING, NULL, 0);
        if (c->data && c->handler->on_ping && conn_gated(c)) {
            conn_job_simple(c, CJ_PING);
        } else if (c->data && c->handler->on_ping) {
            c->busy++;
            c->handler->on_ping(c, c->data);
            c->busy--;
            if (c->dead) {
                conn_free(c);
                return;
            }
        }
    }
    timer_arm_ms(c, next - now);
}

/* ---- closing ---- */

/* Send the close frame once and record why; the application's state ends now. */
static void send_close(struct conn *c, uint16_t code, const char *reason, enum end_reason why)
{
    assert(c->state == CONN_OPEN || c->state == CONN_CLOSING);
    if (!c->close_sent) {
        uint8_t payload[WS_MAX_CTRL_PAYLOAD];
        size_t plen = ws_close_payload(payload, code, reason);
        /*
         * Frames held for the commit (receipts, the error that explains this close) go first: the
         * close waits behind them. A slow consumer's held frames are what it cannot take: not them.
         */
        if (c->dirty && why != END_SLOW_CONSUMER && held_frame_spill(c) != 0)
            log_warn("conn %llu: out of memory holding a frame", (unsigned long long)c->id);
        c->close_held = c->dirty && c->held && why != END_SLOW_CONSUMER;
        add_frame(c, c->close_held ? c->held : conn_output(c), WS_OP_CLOSE, payload,
                  plen);
        c->close_sent = true;
        c->close_code = code;
        c->end_reason = why;
        log_info("conn %llu %s: closing with %u (%s)", (unsigned long long)c->id, c->addr, code,
                 end_reason_name(why));
    }
    c->state = CONN_CLOSING;
    end_app(c, c->end_reason);
}

void conn_close(struct conn *c, uint16_t code, const char *reason, enum end_reason why)
{
    if (c->freeing)
        return; /* already over (its end still running on the store fiber) */
    if (c->state != CONN_OPEN && c->state != CONN_CLOSING) {
        conn_abort(c, why); /* nothing was upgraded: nobody to say goodbye to */
        return;
    }
    send_close(c, code, reason, why);
    if (!c->close_received)
        timer_arm_ms(c, cfg_of(c)->close_timeout_ms);
}

void conn_fail(struct conn *c, uint16_t code, const char *reason, enum end_reason why)
{
    if (c->freeing)
        return;
    if (c->state != CONN_OPEN && c->state != CONN_CLOSING) {
        conn_abort(c, why);
        return;
    }
    send_close(c, code, reason, why);
    c->failed = true;
    c->close_received = true; /* nothing more is read as frames */
    if (c->bev)
        bufferevent_enable(c->bev, EV_WRITE);
    else if (c->out && evbuffer_get_length(c->out))
        event_add(c->wev, NULL);
    timer_arm_ms(c, cfg_of(c)->close_timeout_ms);
}

void conn_abort(struct conn *c, enum end_reason why)
{
    if (c->freeing)
        return;
    if (!c->close_sent)
        c->end_reason = why;
    c->dead = true;
    if (!c->busy)
        conn_free(c);
}

/* Everything but the socket: the application's state ends, the slot is given back. Runs once. */
static void conn_release_state(struct conn *c)
{
    struct conn_pool *p = c->pool;
    /* Off the dirty list first: the application's end may finish a commit that was on its way
     * (PostgreSQL), whose flush must not meet a connection being freed. */
    dirty_unlink(c);
    ioq_drop(c);
    end_app(c, c->end_reason);
    if (c->peer_counted) {
        c->peer_counted = false;
        registry_counter_add(p->ip_counts, c->peer, -1);
    } else if (c->counted) {
        registry_counter_add(p->ip_counts, c->addr, -1);
    }
    if (c->counted) {
        assert(p->num_ws > 0);
        c->counted = false;
        p->num_ws--;
        c->lp->metrics.closes_by_code[metrics_close_index(c->close_code ? c->close_code : 1006)]++;
        c->lp->metrics.closes_by_reason[c->end_reason]++;
        log_info("conn %llu %s: closed (%s, code %u)", (unsigned long long)c->id, c->addr,
                 end_reason_name(c->end_reason), c->close_code ? c->close_code : 1006);
    }
    dirty_unlink(c);
    if (c->deflate) {
        c->deflate = false;
        ws_deflate_inflater_release(&c->z->inflater);
        ws_deflate_mem_unreserve(&p->deflate.mem, c->z->reserved);
        free(c->z);
        c->z = NULL;
        assert(p->deflate.conns > 0);
        p->deflate.conns--;
    }
    if (c->msg) {
        evbuffer_free(c->msg);
        c->msg = NULL;
    }
    if (c->inbox && !c->inbox_job) {
        evbuffer_free(c->inbox);
        c->inbox = NULL;
    }
    if (c->held) {
        evbuffer_free(c->held);
        c->held = NULL;
    }
    held_frame_drop(c);
}

static void linger_read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    /* The bytes are thrown away: read them into the stack, not into buffers that would grow. */
    char sink[16384];
    for (int i = 0; i < 8; i++) {
        ssize_t n = recv(fd, sink, sizeof(sink), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            conn_free(c); /* the peer closed (or reset): done */
            return;
        }
        if (n < 0)
            return;
        if ((size_t)n >= c->linger_left) {
            log_debug("conn %llu %s: lingering close read its byte bound", (unsigned long long)c->id,
                      c->addr);
            conn_free(c);
            return;
        }
        c->linger_left -= (size_t)n;
    }
}

/*
 * Lingering close, as nginx does: closing a socket that still has unread input makes the kernel
 * send a reset, and a reset can destroy the answer (an HTTP error, a close frame such as 1009) in
 * the peer's receive buffer, or fail the peer's own send, before the peer reads it. So once
 * everything is written: shut the write side (the peer sees EOF after our last byte), read and
 * discard until the peer closes, for at most close_timeout and 2 x max_message_size bytes (at least
 * 1 MiB), then close. The session and the connection slot are released now; only the socket and
 * its timer linger. Under TLS the raw bytes are discarded undecrypted: nothing more is said.
 */
static void conn_linger(struct conn *c)
{
    assert(!c->busy && !c->freeing && (c->state == CONN_HTTP_CLOSING || c->state == CONN_CLOSING));
    conn_release_state(c);
    c->state = CONN_LINGER;
    uint64_t bound = 2 * (uint64_t)cfg_of(c)->max_message_size;
    c->linger_left = bound < (1u << 20) ? (1u << 20) : bound > SIZE_MAX ? SIZE_MAX : (size_t)bound;
    if (c->bev) {
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        struct evbuffer *in = bufferevent_get_input(c->bev);
        evbuffer_drain(in, evbuffer_get_length(in));
    } else {
        event_del(&c->rev);
        if (c->wev)
            event_del(c->wev);
    }
    evutil_socket_t fd = conn_fd(c);
    /* Under TLS a bare FIN would cut the record stream; the peer closes after our close frame. */
    bool tls = c->bev && bufferevent_openssl_get_ssl(c->bev);
    if (fd < 0 || (!tls && shutdown(fd, SHUT_WR) != 0) ||
        !(c->linger_ev = event_new(c->lp->base, fd, EV_READ | EV_PERSIST, linger_read_cb, c)) ||
        event_add(c->linger_ev, NULL) != 0) {
        conn_free(c); /* already reset or gone, or no memory: nothing left to protect */
        return;
    }
    timer_arm_ms(c, cfg_of(c)->close_timeout_ms);
}

static void conn_free(struct conn *c)
{
    if (c->freeing)
        return;
    if (c->busy) {
        c->dead = true;
        return;
    }
    c->freeing = true;
    struct conn_pool *p = c->pool;
    assert(p->num_conns > 0);
    conn_release_state(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    p->num_conns--;
    if (c->busy) {
        /* The application's end runs as a job on the store fiber and holds c (net/gate.h): keep
         * the struct, quiet, until it returns (conn_job_done destroys it). */
        c->destroy_deferred = true;
        if (c->bev) {
            bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
            bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        } else {
            event_del(&c->rev);
            if (c->wev)
                event_del(c->wev);
        }
        evtimer_del(c->timer);
        if (c->linger_ev)
            event_del(c->linger_ev);
    } else {
        conn_destroy(c);
    }
    if (p->num_conns == 0 && p->on_empty)
        p->on_empty(p->empty_arg);
}

/* The socket, its events and the struct go. */
static void conn_destroy(struct conn *c)
{
    event_free(c->timer);
    if (c->linger_ev)
        event_free(c->linger_ev);
    if (c->bev) {
        bufferevent_free(c->bev); /* BEV_OPT_CLOSE_ON_FREE closes the socket (and the SSL) */
    } else {
        event_del(&c->rev);
        if (c->wev)
            event_free(c->wev);
        if (c->out)
            evbuffer_free(c->out); /* shared frames it references are let go */
        evutil_closesocket(c->fd);
    }
    free(c);
}
