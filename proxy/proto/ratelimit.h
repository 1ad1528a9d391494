/*
 * ratelimit.h -- token bucket as a pure function of time: a per-connection abuse guard.
 */
#ifndef WSP_RATELIMIT_H
#define WSP_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct ratelimit {
    double tokens;
    int64_t at_ms; /* when tokens was last refilled; 0 = never (bucket starts full) */
};

/* Take one token at now; rate per second, burst = bucket size. rate 0 = unlimited (always true). */
bool ratelimit_take(struct ratelimit *rl, int64_t now_ms, uint64_t rate, uint64_t burst);

#endif
