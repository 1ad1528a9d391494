/*
 * end_reason.h -- why a WebSocket connection ended: the vocabulary of session rows (end_reason), the
 * logs, /metrics (wsproxy_session_ends_total) and the API. The names are part of the documented API.
 */
#ifndef WSP_END_REASON_H
#define WSP_END_REASON_H

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
    END_INTERNAL_ERROR, /* the server failed (store, memory), not the peer */
    END_CONNECTION_LOST, /* TCP went away without a close frame (1006): a dropped network */
    END_NODE_LOST, /* cluster: its node stopped renewing its lease; another node ended it */
    END_NUM
};

/* The stored name ("client_close", ...); "unknown" outside the enum. Never NULL. */
const char *end_reason_name(enum end_reason r);

#endif
