/*
 * conn.h -- one client connection on the main listener: a bufferevent that starts as an HTTP request,
 * becomes a WebSocket served by a handler (echo, chat), and ends through exactly one path. A
 * plain-TCP WebSocket then leaves its bufferevent for two bare events and an output buffer made
 * only while output waits (conn_detach in conn.c): an idle connection keeps about 1 KiB less.
 *
 * The transport never knows the application: a parsed request goes up through the pool's on_request
 * pointer (the router), and an upgraded connection calls up only through the struct conn_handler the
 * router installed (as h2o's websocket data+cb, libwebsockets' protocol callbacks, redis's connection
 * handlers). Handlers may call down into any function here.
 */
#ifndef WSP_CONN_H
#define WSP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event_struct.h>

#include "base/end_reason.h"
#include "proto/ws_deflate.h"
#include "proto/ws_parser.h"

struct bufferevent;
struct cidr_list;
struct evbuffer;
struct event;
struct http_req;
struct loop;
struct registry_counter;
struct sockaddr;
struct ws_handshake_result;
struct conn;
struct shared_frame;

enum conn_state {
    CONN_HTTP,         /* reading the request head */
    CONN_HTTP_CLOSING, /* an HTTP answer is being flushed; close when written */
    CONN_OPEN,         /* WebSocket open */
    CONN_CLOSING,      /* close frame sent; waiting for the peer's close (bounded) or the flush */
    CONN_LINGER,       /* all written, write side shut: reading and discarding until EOF (bounded) */
};

/*
 * What an upgraded connection calls up into; set once by conn_upgrade. data is the handler's own
 * per-connection state. Every callback runs with the connection protected: a close or abort inside
 * one frees the connection only after the callback returns.
 */
struct conn_handler {
    const char *name; /* "echo", "chat": logs */
    /* A complete message (text or binary), payload contiguous and valid only during the call. */
    void (*on_message)(struct conn *c, void *data, uint8_t opcode, const uint8_t *p, size_t len);
    /* Everything queued was written (may be NULL): continue paced output (a replay). */
    void (*on_drained)(struct conn *c, void *data);
    /* The heartbeat just pinged the peer (may be NULL): a live connection's periodic moment. */
    void (*on_ping)(struct conn *c, void *data);
    /*
     * The connection ended (close sent or received, failed, aborted): called exactly once, as soon as
     * the end is decided, not when the socket finally goes. data must not be used after it returns.
     */
    void (*on_close)(struct conn *c, void *data, enum end_reason why);
};

/* The echo application on echo_path; kept here so a reassembled message is echoed without a copy. */
extern const struct conn_handler conn_echo_handler;

/* A complete request head on a connection not yet upgraded: answer it or upgrade it. */
typedef void conn_request_fn(void *arg, struct conn *c, const struct http_req *req);

/* Shared compressors by window (9..15): a recipient that asked for a smaller window needs its own. */
#define CONN_DEFLATE_WINDOWS 7

/*
 * permessage-deflate state of the pool (one event loop): zlib memory accounting with the budget,
 * one shared compressor per window in use (server_no_context_takeover, so a message is compressed
 * once for every recipient), and the connections that negotiated the extension.
 */
struct conn_deflate {
    struct ws_deflate_mem mem;
    struct ws_deflate_compressor comp[CONN_DEFLATE_WINDOWS]; /* index: window bits - 9 */
    bool comp_reserved[CONN_DEFLATE_WINDOWS];
    size_t conns; /* open connections with compression */
};

/* Every connection of the main listener, and the transport's share of the server's state. */
struct conn_pool {
    struct loop *lp;
    conn_request_fn *on_request;
    void *request_arg;
    void (*on_empty)(void *arg); /* the last connection went (may be NULL): a drain can finish */
    void *empty_arg;
    struct conn *conns;      /* newest first */
    size_t num_conns;        /* TCP connections (any state) */
    size_t num_ws;           /* WebSockets counted against max_connections */
    uint64_t next_id;
    struct registry_counter *ip_counts; /* client address -> its connections (see conn_admit) */
    /*
     * Peers whose connections are counted per client address only once the head names the client
     * (trusted proxies: X-Forwarded-For); every other peer is counted from accept, so connections
     * that never finish a handshake are bounded per address too. May be NULL.
     */
    const struct cidr_list *count_late;
    struct conn *dirty;      /* connections with output held for the group commit */
    struct ioq *ioq;     /* this pass's sends in one submission (net/ioq.h); NULL: send() */
    struct conn_deflate deflate;
};

/* permessage-deflate state of one connection that negotiated it (allocated then: most do not). */
struct conn_z {
    struct ws_deflate_params params;
    struct ws_deflate_inflater inflater; /* holds zlib memory only while a message is received */
    size_t reserved;                     /* budget reserved for this connection's inflate state */
    uint32_t inflate_utf8;               /* UTF-8 state of the inflated text message */
    int inflate_err;                     /* why the inflate sink stopped */
};

/* Shared frames a connection holds by reference for one commit (conn_send_shared). When a server
 * falls behind, a commit carries two or three publishes to every member. */
#define CONN_HELD_FRAMES 3

/* Fields are grouped by size (pointers, then integers, then flags): 10,000 of these stay resident. */
struct conn {
    struct conn_pool *pool;
    struct loop *lp;
    struct bufferevent *bev; /* NULL once detached (a plain-TCP WebSocket: fd, rev, wev, out) */
    struct event rev;        /* detached: read readiness (conn_sock_read) */
    struct event *wev;       /* detached: write readiness, made with out */
    struct evbuffer *out;    /* detached: output the socket did not take yet; made at first need */
    struct event *timer; /* handshake timeout, heartbeat, close wait: one timer, meaning set by state */
    const struct conn_handler *handler; /* NULL until upgraded */
    void *data;                         /* the handler's; NULL once on_close ran */
    struct ws_parser parser;
    struct conn_z *z;     /* permessage-deflate (RFC 7692), when negotiated; else NULL */
    struct evbuffer *msg; /* message being reassembled from several chunks; allocated on first need */
    struct evbuffer *inbox; /* messages waiting for the store fiber: {opcode, len} + payload each */
    /* heartbeat */
    int64_t last_rx_ms;
    int64_t ping_sent_ms;
    /* frames held until the loop's open store transaction commits (group commit, net/loop.h) */
    struct evbuffer *held;
    /*
     * A fan-out commit's usual case, a few small shared frames and nothing else held: referenced
     * here rather than copied into a chain of held (spilled there, in order, when anything else is
     * held after them or a fourth comes). held is empty while n_held_frames > 0.
     */
    struct shared_frame *held_frames[CONN_HELD_FRAMES];
    struct conn *dirty_next;  /* in the pool's list of connections with held output */
    struct conn *prev, *next; /* in the pool */
    uint64_t id;              /* process-local serial, for logs */
    struct event *linger_ev;  /* lingering close: reads the socket directly */
    size_t linger_left;       /* bytes a lingering close still reads and discards */
    evutil_socket_t fd;       /* detached: the socket, owned */
    enum conn_state state;
    enum end_reason end_reason;
    int busy;             /* > 0 while inside a callback or holding jobs: a close defers the free */
    int jobs;             /* callbacks made into jobs for the store fiber, not run yet (gate.h) */
    int sq_slot;          /* its send in the pool's ioq, while sq_queued */
    int rq_slot;          /* its read in the pool's ioq, while rq_queued */
    uint16_t close_code;  /* code we sent (or received, for client_close) */
    uint8_t msg_opcode;
    uint8_t n_held_frames; /* in held_frames */
    bool deflate;         /* permessage-deflate negotiated (z is set) */
    bool counted;         /* holds a max_connections slot (an admitted WebSocket) */
    bool peer_counted;    /* counted under its peer address since accept (not a trusted proxy) */
    bool close_sent;
    bool close_received;
    bool failed;          /* RFC 6455 §7.1.7: the stream is unusable; drop once the close is written */
    bool freeing;
    bool jobs_paused;     /* reading stopped until they ran */
    bool destroy_deferred; /* conn_free ran while held: the last hold's end destroys it */
    bool app_closed;       /* on_close was called (c->data is NULL from the end's decision) */
    bool inbox_job;        /* a job to empty it is queued or running */
    bool dead;             /* free at the end of the callback */
    bool plain;            /* an upgraded WebSocket on plain TCP (no TLS): conn.c may write it directly */
    bool ping_outstanding;
    bool close_held;       /* our close frame waits at the end of held */
    bool dirty;
    bool sq_queued;        /* output waits in the pool's ioq: it goes before anything in out */
    bool rq_queued;        /* a read waits in the pool's ioq */
    char addr[64];  /* client address: peer, or X-Forwarded-For when the peer is a trusted proxy */
    char peer[48];  /* TCP peer address (no port: INET6_ADDRSTRLEN fits) */
};

/*
 * Run fn(c, arg) where the store may be used (the store fiber, net/gate.h): at once without a gate
 * or on the fiber already, else as a job after those before it, c held until then (a close
 * meanwhile frees it after fn). The application's own entries that are not callbacks (a session's
 * start after its upgrade) go through here.
 */
void conn_call(struct conn *c, void (*fn)(struct conn *c, void *arg), void *arg);

/* Set up an empty pool; on_request gets every parsed request head. Returns 0 or -1 (OOM). */
int conn_pool_init(struct conn_pool *p, struct loop *lp, conn_request_fn *on_request, void *arg);

/* Drop every connection (no close frame), then free the pool's state. */
void conn_pool_release(struct conn_pool *p);

/* Graceful stop: every open WebSocket gets 1001 "server shutdown", unanswered requests are dropped. */
void conn_pool_shutdown(struct conn_pool *p);

/*
 * Drop every connection now (no close frame, END_SERVER_SHUTDOWN): the drain's timeout. Those a job
 * on the store fiber still holds go when it returns.
 */
void conn_pool_drop_all(struct conn_pool *p);

/* The loop's flush hook (net/loop.h): release held frames after a commit, or fail their owners. */
void conn_pool_flush(void *pool, bool ok);

/*
 * Free what idle connections keep for the next burst: the buffer of frames held for the commit
 * (allocated again at the next held frame). Walks every connection: call it now and then (the
 * server does once a second), not per message.
 */
void conn_pool_trim(struct conn_pool *p);

/* A listener_accept_fn (net/listener.h): arg is the pool; takes ownership of bev. */
void conn_accept(void *pool, struct bufferevent *bev, const struct sockaddr *sa);

/*
 * Take a slot against max_connections and max_connections_per_ip (by c->addr; a peer that is not a
 * trusted proxy was counted at accept already, handshake or not). false: the request was answered
 * 503 and nothing more may be done with it.
 */
bool conn_admit(struct conn *c);

/*
 * Answer 101 (hs from ws_hs_check) and serve the connection as a WebSocket with handler h; data is
 * handed back to every callback. Call from on_request, after conn_admit. When hs accepted a
 * permessage-deflate offer, the connection's worst-case inflate state (and the shared compressor
 * of its window) is reserved against [server] compression_memory_budget; if it does not fit, the
 * extension is declined (the 101 omits it) and the connection runs uncompressed.
 */
void conn_upgrade(struct conn *c, const struct ws_handshake_result *hs, const struct conn_handler *h,
                  void *data);

/* Answer an HTTP request (not upgraded) and close after it is written (lingering close). */
void conn_http_reply(struct conn *c, int status, const char *content_type, const char *extra_headers,
                     const void *body, size_t len, bool head_only);
/* A short text/plain answer; statuses >= 400 are logged with the body as the reason. */
void conn_http_text(struct conn *c, int status, const char *extra_headers, const char *body);

/* Whether the WebSocket is open and no close was sent: sending is useful. */
bool conn_is_open(const struct conn *c);

/* Write one whole frame now (control frames, output that does not depend on a commit). */
void conn_send_frame(struct conn *c, enum ws_opcode op, const void *data, size_t len);

/*
 * Queue a text frame that must not reach the client before the loop's open store transaction
 * commits (receipts, deliveries). Goes out directly when no transaction is open. Counted against
 * send_queue like any output.
 */
void conn_send_text(struct conn *c, const void *data, size_t len);

/*
 * A frame encoded once and referenced (not copied) by the output of every connection it goes to:
 * the fan-out path. The creator holds one reference and drops it with shared_frame_unref when done;
 * each connection's buffer holds one until the bytes are written.
 */
struct shared_frame {
    unsigned refs;
    size_t len;  /* header + payload */
    size_t hlen; /* header bytes: the payload starts at data + hlen */
    uint8_t opcode;
    /*
     * permessage-deflate: the RSV1 frame of the same message, compressed at the first recipient
     * that negotiated the extension, once per window (bit w - 9 of deflate_tried: done; deflated
     * stays NULL when compressing did not make it smaller). Freed with this frame.
     */
    uint8_t deflate_tried;
    struct shared_frame *deflated[CONN_DEFLATE_WINDOWS];
    uint8_t data[];
};
struct shared_frame *shared_frame_new(enum ws_opcode op, const void *payload, size_t len);
void shared_frame_unref(struct shared_frame *f);
/*
 * Like conn_send_text (held while a transaction is open), for a shared frame; a connection with
 * permessage-deflate gets the frame's compressed variant (made once) when the message is at least
 * compression_min_size and compressing made it smaller.
 */
void conn_send_shared(struct conn *c, struct shared_frame *f);

/* Bytes waiting for the client: the output buffer plus frames held for the commit. */
size_t conn_pending_len(const struct conn *c);

/*
 * Called before queuing data: if the pending output is already over [limits] send_queue, the client
 * is closed with 1013 (slow consumer) and false is returned. Memory per connection is so bounded by
 * send_queue plus one message.
 */
bool conn_check_backpressure(struct conn *c);

/*
 * Start the closing handshake: send a close frame with code/reason, record why, stop delivering
 * data. The connection goes when the peer's close arrives or after close_timeout.
 */
void conn_close(struct conn *c, uint16_t code, const char *reason, enum end_reason why);

/*
 * Fail the WebSocket connection (RFC 6455 §7.1.7): the stream cannot be trusted or used any more
 * (protocol error, store failure). Send the close frame, then drop TCP once it is written, without
 * waiting for the peer's close (lingering close, see conn.c).
 */
void conn_fail(struct conn *c, uint16_t code, const char *reason, enum end_reason why);

/*
 * Drop the connection without a frame (a dead peer, the drain deadline). Outside a callback c is
 * freed before this returns; inside one, when the callback returns.
 */
void conn_abort(struct conn *c, enum end_reason why);

#endif
