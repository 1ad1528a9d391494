/*
 * heartbeat.c -- decides when to ping and when a silent peer is dead. Pings go only to idle peers:
 * a chatty client is proven alive by its own frames and costs no extra traffic.
 */
#include "proto/heartbeat.h"

enum heartbeat_action heartbeat_tick(struct heartbeat_state *st, int64_t now, int64_t interval_ms,
                                     int64_t timeout_ms, int64_t *next_ms)
{
    if (st->ping_outstanding) {
        if (st->last_rx_ms >= st->ping_sent_ms) {
            st->ping_outstanding = false; /* answered (by a pong or any other frame) */
        } else if (now - st->ping_sent_ms >= timeout_ms) {
            return HEARTBEAT_TIMEOUT;
        } else {
            *next_ms = st->ping_sent_ms + timeout_ms;
            return HEARTBEAT_NONE;
        }
    }
    int64_t idle_until = st->last_rx_ms + interval_ms;
    if (now >= idle_until) {
        st->ping_outstanding = true;
        st->ping_sent_ms = now;
        /*
         * Look again after the shorter of the two: when the answer comes quickly, the next ping is
         * due interval_ms after it, even if pong_timeout is longer than ping_interval (a proxy's idle
         * timeout sits between pings, not between a ping and its deadline).
         */
        *next_ms = now + (timeout_ms < interval_ms ? timeout_ms : interval_ms);
        return HEARTBEAT_PING;
    }
    *next_ms = idle_until;
    return HEARTBEAT_NONE;
}
