/* end_reason.c -- names of the end reasons, as stored in session rows and shown by the API. */
#include "base/end_reason.h"

static const char *const end_reason_names[END_NUM] = {
    "client_close",  "heartbeat_timeout", "protocol_error", "slow_consumer",  "kicked",
    "token_expired", "server_shutdown",   "server_restart", "rate_limited",   "internal_error",
    "connection_lost", "node_lost",
};

const char *end_reason_name(enum end_reason r)
{
    return (unsigned)r < END_NUM ? end_reason_names[r] : "unknown";
}
