/*
 * conn.h -- one client connection on the main listener: a bufferevent that starts as an HTTP request,
 * becomes a WebSocket (echo or chat), and ends through exactly one path, conn_close()/conn_free().
 */
#ifndef WSP_CONN_H
#define WSP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/ws_parser.h"

struct server;
struct bufferevent;
struct evbuffer;
struct event;
struct chat_conn;

enum conn_state {
    CONN_HTTP,         /* reading the request head */
    CONN_HTTP_CLOSING, /* an HTTP answer is being flushed; close when written */
    CONN_OPEN,         /* WebSocket open */
    CONN_CLOSING,      /* close frame sent; waiting for the peer's close (bounded) or the flush */
    CONN_LINGER,       /* all written, write side shut: reading and discarding until EOF (bounded) */
};

enum conn_kind { CONN_KIND_HTTP, CONN_KIND_ECHO, CONN_KIND_CHAT };

/* Why a WebSocket connection ended; recorded in the session row and the log. */
enum end_reason {
    END_CLIENT_CLOSE,
    END_HEARTBEAT_TIMEOUT,
    END_PROTOCOL_ERROR,
    END_SLOW_CONSUMER,
    END_KICKED,
    END_TOKEN_EXPIRED,
    END_SERVER_SHUTDOWN,
    END_SERVER_RESTART,
    END_RATE_LIMITED,
    END_NUM
};

const char *end_reason_name(enum end_reason r);

struct conn {
    struct server *srv;
    struct bufferevent *bev;
    struct event *timer; /* handshake timeout, heartbeat, close wait: one timer, meaning set by state */
    enum conn_state state;
    enum conn_kind kind;
    struct ws_parser parser;
    struct evbuffer *msg; /* message being reassembled from several chunks; allocated on first need */
    uint8_t msg_opcode;
    char addr[64];        /* client address: peer, or X-Forwarded-For when the peer is a trusted proxy */
    char peer[64];        /* TCP peer address */
    bool counted;         /* holds a slot in the server's connection counts */
    bool close_sent;
    bool close_received;
    bool freeing;
    int busy;             /* > 0 while inside a read callback: conn_close defers the free */
    bool dead;            /* conn_close ran: free at the end of the callback */
    enum end_reason end_reason;
    uint16_t close_code;  /* code we sent (or received, for client_close) */
    /* heartbeat */
    int64_t last_rx_ms;
    int64_t ping_sent_ms;
    bool ping_outstanding;
    /* chat state, NULL on echo connections */
    struct chat_conn *chat;
    /* frames held until the current store transaction commits (group commit), see batch.h */
    struct evbuffer *deferred;
    struct conn *dirty_next; /* in the server's list of conns with deferred output */
    bool dirty;
    /* all connections of the server */
    struct conn *prev, *next;
    uint64_t id; /* process-local serial, for logs before a session id exists */
    struct event *linger_ev; /* lingering close: reads the socket directly, see conn_linger */
    size_t linger_left;      /* bytes a lingering close still reads and discards */
};

/* Accept a new TCP (or TLS) connection; takes ownership of bev. */
void conn_accept(struct server *srv, struct bufferevent *bev, const char *peer_addr);

/*
 * Write one whole WebSocket frame now (header + payload, one write). Used for control frames and for
 * output that does not depend on a store commit.
 */
void conn_send_frame(struct conn *c, enum ws_opcode op, const void *data, size_t len);

/*
 * Queue a text frame that must not reach the client before the current store transaction commits
 * (receipts, deliveries). Goes out directly when no transaction is open.
 */
void conn_send_text(struct conn *c, const void *data, size_t len);

/*
 * A frame encoded once and referenced (not copied) by the output of every connection it goes to:
 * the fan-out path. The creator holds one reference and drops it with shared_frame_unref when done;
 * each connection's buffer holds one until the bytes are written.
 */
struct shared_frame {
    unsigned refs;
    size_t len;
    uint8_t data[];
};
struct shared_frame *shared_frame_new(enum ws_opcode op, const void *payload, size_t len);
void shared_frame_unref(struct shared_frame *f);
void conn_send_shared(struct conn *c, struct shared_frame *f);

struct http_req;
/* Answer an HTTP request (not upgraded) and close after it is written. */
void conn_http_reply(struct conn *c, int status, const char *content_type, const char *extra_headers,
                     const void *body, size_t len, bool head_only);

/*
 * Start closing: send a close frame with code/reason, stop reading data, record why. The connection is
 * freed when the peer answers, when close_timeout passes, or at once if hard is true (dead peer).
 */
void conn_close(struct conn *c, uint16_t code, const char *reason, enum end_reason why, bool hard);

/* Bytes queued for the client (bufferevent output), for backpressure decisions. */
size_t conn_output_len(const struct conn *c);

/*
 * Called before queuing data: if the unsent output is already over [limits] send_queue, the client
 * is closed with 1013 (slow consumer) and false is returned. Memory per connection is so bounded by
 * send_queue plus one message.
 */
bool conn_check_backpressure(struct conn *c);

/* Flush deferred frames of every dirty connection (after a commit). */
void conn_flush_deferred(struct server *srv);

#endif
