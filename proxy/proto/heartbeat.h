/*
 * heartbeat.h -- the ping/pong policy as a pure function of time, so it is tested without a loop.
 * conn.c keeps the state, arms its timer for the returned deadline and acts on the returned action.
 */
#ifndef WSP_HEARTBEAT_H
#define WSP_HEARTBEAT_H

#include <stdbool.h>
#include <stdint.h>

struct heartbeat_state {
    int64_t last_rx_ms;   /* last time any bytes came from the peer */
    int64_t ping_sent_ms; /* when the outstanding ping was sent */
    bool ping_outstanding;
};

enum heartbeat_action { HEARTBEAT_NONE, HEARTBEAT_PING, HEARTBEAT_TIMEOUT };

/*
 * Called when the timer fires at now. A ping goes out once the peer was silent for interval_ms;
 * any frame after a ping answers it; silence for timeout_ms after the ping means the peer is gone.
 * Sets *next_ms to when the timer should fire again (unless TIMEOUT).
 */
enum heartbeat_action heartbeat_tick(struct heartbeat_state *st, int64_t now, int64_t interval_ms,
                                     int64_t timeout_ms, int64_t *next_ms);

#endif
