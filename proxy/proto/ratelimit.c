/*
 * ratelimit.c -- token bucket refilled lazily on each take, so idle connections cost nothing.
 */
#include "proto/ratelimit.h"

bool ratelimit_take(struct ratelimit *rl, int64_t now_ms, uint64_t rate, uint64_t burst)
{
    if (rate == 0)
        return true;
    if (rl->at_ms == 0) {
        rl->tokens = (double)burst;
        rl->at_ms = now_ms;
    } else if (now_ms > rl->at_ms) {
        rl->tokens += (double)(now_ms - rl->at_ms) * (double)rate / 1000.0;
        if (rl->tokens > (double)burst)
            rl->tokens = (double)burst;
        rl->at_ms = now_ms;
    }
    if (rl->tokens < 1.0)
        return false;
    rl->tokens -= 1.0;
    return true;
}
