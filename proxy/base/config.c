/*
 * config.c -- settings table (key, type, default, help) driving defaults, INI parsing, validation and
 * the generated reference. One table, so the docs, the defaults and the parser cannot drift apart.
 */
#include "base/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/cidr.h"
#include "base/log.h"

enum opt_type { OPT_STR, OPT_BOOL, OPT_DURATION, OPT_SIZE, OPT_UINT, OPT_LIST };

struct opt {
    const char *section;
    const char *key;
    enum opt_type type;
    size_t offset;
    const char *def;
    const char *help;
};

#define O(sec, key, type, field, def, help) {sec, key, type, offsetof(struct px_config, field), def, help}

static const struct opt opts[] = {
    O("server", "listen", OPT_STR, listen, "127.0.0.1:8080",
      "Address:port of the WebSocket listener ([::1]:8080 for IPv6)."),
    O("server", "ws_path", OPT_STR, ws_path, "/ws",
      "Path of the authenticated chat endpoint."),
    O("server", "echo_path", OPT_STR, echo_path, "/echo",
      "Path of the echo endpoint (conformance tests, health checks); empty disables it."),
    O("server", "max_message_size", OPT_SIZE, max_message_size, "1MiB",
      "Largest message a client may send; larger ones close with 1009 before they are buffered."),
    O("server", "max_header_size", OPT_SIZE, max_header_size, "8KiB",
      "Largest HTTP request head (request line + headers); larger gets 431."),
    O("server", "handshake_timeout", OPT_DURATION, handshake_timeout_ms, "10s",
      "Time a client has to send a complete request head (slowloris guard)."),
    O("server", "origins", OPT_LIST, origins, "*",
      "Allowed Origin values for browsers, comma separated; * allows any."),
    O("server", "subprotocols", OPT_LIST, subprotocols, "",
      "Subprotocols the server speaks, in preference order; empty = none."),
    O("server", "static_dir", OPT_STR, static_dir, "web",
      "Directory served at / on the main listener (the chat page); empty disables."),
    O("server", "close_timeout", OPT_DURATION, close_timeout_ms, "5s",
      "After sending a close frame, how long to wait for the peer's close before dropping TCP."),
    O("server", "drain_timeout", OPT_DURATION, drain_timeout_ms, "10s",
      "On SIGTERM/SIGINT, how long clients get to finish the closing handshake before exit."),
    O("server", "static_follow_symlinks", OPT_BOOL, static_follow_symlinks, "false",
      "Serve files of static_dir that are symlinks to places outside it (off: they are 404)."),
    O("server", "io_uring", OPT_STR, io_uring, "auto",
      "auto: the socket reads, and the sends, of one loop pass go to the kernel in one io_uring "
      "submission each where the kernel allows it (else one call per socket, said at start); "
      "off: one recv()/send() per socket."),
    O("server", "compression", OPT_STR, compression, "off",
      "permessage-deflate (RFC 7692): off, or on to accept clients' offers (docs/compression.md)."),
    O("server", "compression_min_size", OPT_SIZE, compression_min_size, "256B",
      "Messages shorter than this are sent uncompressed (small ones barely shrink)."),
    O("server", "compression_level", OPT_UINT, compression_level, "1",
      "zlib level (1..9) of the shared compressor; 1 is fast and nearly as small on JSON."),
    O("server", "compression_window_bits", OPT_UINT, compression_window_bits, "12",
      "Deflate window (9..15): ours, and the client's when it allows us to choose."),
    O("server", "compression_mem_level", OPT_UINT, compression_mem_level, "5",
      "zlib memLevel (1..9) of the shared compressor(s)."),
    O("server", "compression_memory_budget", OPT_SIZE, compression_memory_budget, "64MiB",
      "Ceiling for all zlib memory (inflate states reserved per connection, shared compressors); "
      "connections that do not fit run uncompressed."),
    O("tls", "cert", OPT_STR, tls_cert, "",
      "PEM certificate chain; TLS (wss) is on when cert and key are both set."),
    O("tls", "key", OPT_STR, tls_key, "", "PEM private key for cert."),
    O("log", "level", OPT_STR, log_level, "info", "error, warn, info or debug."),
    O("store", "backend", OPT_STR, store_backend, "sqlite",
      "sqlite (one file, one node) or postgresql (a database several nodes share: docs/cluster.md)."),
    O("store", "path", OPT_STR, store_path, "var/wsproxy.db",
      "SQLite database file (WAL mode); the server creates its directory."),
    O("store", "dsn", OPT_STR, store_dsn, "",
      "postgresql: libpq connection string, e.g. 'host=127.0.0.1 dbname=wsproxy user=wsproxy'."),
    O("store", "pg_timeout", OPT_DURATION, store_pg_timeout_ms, "1s",
      "postgresql: longest one database call may take (the store fiber waits, the loop serves "
      "on); then the connection is dropped, the write fails (no receipt) and calls fail at once "
      "while it reconnects without waiting."),
    O("store", "synchronous", OPT_STR, store_synchronous, "normal",
      "normal: a commit survives a crash of wsproxy; full: also a power loss (slower)."),
    O("store", "busy_timeout", OPT_DURATION, store_busy_timeout_ms, "5s",
      "How long opening the database, migrations and the checkpointer wait for another process's lock."),
    O("store", "lock_wait", OPT_DURATION, store_lock_wait_ms, "20ms",
      "Longest the event loop waits for another process's write lock; then the write fails and is retried."),
    O("store", "max_replay", OPT_UINT, store_max_replay, "1000",
      "Room messages replayed per room on connect; beyond it a 'truncated' notice is sent."),
    O("store", "commit_delay", OPT_DURATION, store_commit_delay_ms, "20ms",
      "Longest a group commit waits behind other work, whatever the input rate (receipts wait for it)."),
    O("store", "commit_batch", OPT_UINT, store_commit_batch, "10000",
      "Writes after which the group commit runs at once instead of at the end of the loop iteration."),
    O("store", "retention_age", OPT_DURATION, store_retention_age_ms, "0",
      "Messages older than this are deleted, a few hundred a second, off the hot path; 0 keeps them forever."),
    O("store", "retention_count", OPT_UINT, store_retention_count, "0",
      "Messages kept per room and per direct conversation (the newest); 0: no limit."),
    O("auth", "mode", OPT_STR, auth_mode, "token",
      "token (JWT), query (?user= from a trusted proxy) or token,query."),
    O("auth", "jwt_alg", OPT_STR, jwt_alg, "HS256", "HS256, RS256 or ES256; tokens must use exactly this."),
    O("auth", "jwt_secret", OPT_STR, jwt_secret, "",
      "Shared secret for HS256, at least 32 bytes (openssl rand -hex 32)."),
    O("auth", "jwt_public_key", OPT_STR, jwt_public_key, "",
      "PEM public key file for RS256/ES256."),
    O("auth", "jwt_leeway", OPT_DURATION, jwt_leeway_ms, "30s",
      "Clock skew allowed when checking exp and nbf."),
    O("auth", "jwt_cookie", OPT_STR, jwt_cookie, "",
      "Cookie name to read the token from (besides ?token= and Authorization: Bearer); empty = none."),
    O("auth", "trusted_proxies", OPT_STR, trusted_proxies, "",
      "CIDR list of fronts (nginx) whose X-Forwarded-For/X-Real-IP and ?user= are believed."),
    O("auth", "reserved_users", OPT_LIST, reserved_users, "system",
      "User names no token or ?user= may claim: the senders the API uses (default sender: system)."),
    O("rooms", "open", OPT_LIST, rooms_open, "",
      "Open rooms (names and prefix* patterns, * = all): anyone may join. Others are closed: only members the API added, or a token's rooms claim."),
    O("heartbeat", "ping_interval", OPT_DURATION, ping_interval_ms, "25s",
      "Idle time after which the server pings; keep it below nginx's proxy_read_timeout. 0 disables."),
    O("heartbeat", "pong_timeout", OPT_DURATION, pong_timeout_ms, "10s",
      "How long a pinged peer has to send any frame before it is closed as dead."),
    O("limits", "send_queue", OPT_SIZE, send_queue, "1MiB",
      "Unsent output a connection may hold; over it the client is closed with 1013 (slow consumer)."),
    O("limits", "rate", OPT_UINT, rate, "50",
      "Messages per second a connection may send (token bucket); 0 = unlimited."),
    O("limits", "rate_burst", OPT_UINT, rate_burst, "100", "Bucket size for rate."),
    O("limits", "ack_rate", OPT_UINT, ack_rate, "1000",
      "Acks per second a connection may send (own bucket: catching up acks many at once); 0 = unlimited."),
    O("limits", "ack_burst", OPT_UINT, ack_burst, "2000", "Bucket size for ack_rate."),
    O("limits", "max_body", OPT_SIZE, max_body, "64KiB",
      "Largest chat message body (as JSON text); larger gets error too_large."),
    O("limits", "presence_fanout_max", OPT_UINT, presence_fanout_max, "1000",
      "Rooms with more live connections than this get no presence events (clients ask instead)."),
    O("limits", "max_connections", OPT_UINT, max_connections, "10000",
      "Open WebSocket connections in total; over it new ones get 503."),
    O("limits", "max_connections_per_ip", OPT_UINT, max_connections_per_ip, "100",
      "Open WebSocket connections per client address; over it new ones get 503."),
    O("api", "listen", OPT_STR, api_listen, "127.0.0.1:8081",
      "Address:port of the HTTP push/admin API; keep it private. Empty disables."),
    O("api", "keys", OPT_LIST, api_keys, "",
      "API keys (comma separated) accepted as Authorization: Bearer KEY."),
    O("api", "max_body", OPT_SIZE, api_max_body, "1MiB", "Largest API request body; larger gets 413."),
    O("api", "max_recipients", OPT_UINT, api_max_recipients, "100",
      "Users in one push's \"to\" list, and pushes in one batch request."),
    O("api", "request_timeout", OPT_DURATION, api_request_timeout_ms, "10s",
      "Time a request's head and body have to arrive once started (slowloris guard)."),
    O("api", "max_connections", OPT_UINT, api_max_connections, "512",
      "Open API connections in total; more are refused at accept."),
    O("api", "max_connections_per_ip", OPT_UINT, api_max_connections_per_ip, "128",
      "Open API connections per peer address; more are refused at accept."),
    O("cluster", "node_name", OPT_STR, cluster_node_name, "",
      "This node's name in a cluster (backend postgresql), unique per node and kept across restarts; "
      "empty: HOSTNAME:PORT of [server] listen."),
    O("cluster", "lease", OPT_DURATION, cluster_lease_ms, "15s",
      "A node that has not renewed its lease for this long is lost: another node ends its sessions "
      "and turns its users offline. Renewed every lease/3."),
    O("cluster", "poll", OPT_DURATION, cluster_poll_ms, "100ms",
      "Fetch the cluster log at least this often, besides each notification (a lost notification "
      "only delays delivery by this much)."),
    O("events", "target", OPT_STR, events_target, "",
      "Where events go: http://HOST:PORT/PATH (a signed JSON POST), fastcgi://HOST:PORT/SCRIPT.php or "
      "fastcgi:unix:/SOCKET:/SCRIPT.php (php-fpm directly). Empty: no events are recorded."),
    O("events", "secret", OPT_STR, events_secret, "",
      "HMAC-SHA256 key of X-Wsproxy-Signature; required when target is set."),
    O("events", "types", OPT_LIST, events_types,
      "session.opened,session.closed,user.online,user.offline,message.unacked,member.added,"
      "member.removed",
      "Events recorded (docs/events.md); message.direct, message.room, message.push are opt-in."),
    O("events", "offline_delay", OPT_DURATION, events_offline_delay_ms, "3s",
      "user.offline waits this long after the last connection ends; a reconnect meanwhile cancels it."),
    O("events", "unacked_delay", OPT_DURATION, events_unacked_delay_ms, "60s",
      "message.unacked for a direct message no connection of the recipient acked within this."),
    O("events", "batch_count", OPT_UINT, events_batch_count, "500",
      "Events per delivery at most (a sender posts at most pool batches per loop iteration)."),
    O("events", "batch_bytes", OPT_SIZE, events_batch_bytes, "256KiB",
      "Payload bytes per delivery at most (one larger event still goes alone)."),
    O("events", "retry_initial", OPT_DURATION, events_retry_initial_ms, "1s",
      "Backoff after a failed delivery; doubles per attempt of the batch's events."),
    O("events", "retry_max", OPT_DURATION, events_retry_max_ms, "60s", "Longest backoff."),
    O("events", "max_age", OPT_DURATION, events_max_age_ms, "1h",
      "An event queued longer than this goes to the dead letters (list and replay them via the API)."),
    O("events", "max_outbox", OPT_UINT, events_max_outbox, "100000",
      "Queued events at most; at the bound new events are dropped with a log line and a metric."),
    O("events", "pool", OPT_UINT, events_pool, "4",
      "Deliveries in flight at most (connections: php-fpm takes one request per connection)."),
    O("events", "timeout", OPT_DURATION, events_timeout_ms, "10s",
      "A delivery must be answered within this, else it is retried."),
    O("demo", "enabled", OPT_BOOL, demo_enabled, "false",
      "Serve GET /demo/token?user=NAME (HS256 tokens for the demo page). Never in production."),
    O("demo", "token_ttl", OPT_DURATION, demo_token_ttl_ms, "1h", "Lifetime of demo tokens."),
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))
_Static_assert(NOPTS <= CONFIG_MAX_KEYS, "raise CONFIG_MAX_KEYS");

/* ---- value parsers ---- */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

int config_parse_duration(const char *s, int64_t *out_ms)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    double v = strtod(s, &end);
    if (errno || end == s)
        return -1;
    while (*end == ' ')
        end++;
    double mult;
    /* A bare number is seconds, as in nginx. */
    if (*end == '\0' || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else if (strcmp(end, "d") == 0)
        mult = 86400000;
    else
        return -1;
    double ms = v * mult;
    if (ms > 1e15)
        return -1;
    *out_ms = (int64_t)ms;
    return 0;
}

int config_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    while (*end == ' ')
        end++;
    uint64_t mult;
    if (*end == '\0' || strcasecmp(end, "b") == 0)
        mult = 1;
    else if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kib") == 0 || strcasecmp(end, "kb") == 0)
        mult = 1024;
    else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mib") == 0 || strcasecmp(end, "mb") == 0)
        mult = 1024 * 1024;
    else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gib") == 0 || strcasecmp(end, "gb") == 0)
        mult = 1024ull * 1024 * 1024;
    else
        return -1;
    if (v > UINT64_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

int config_parse_bool(const char *s, bool *out)
{
    if (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on") || !strcmp(s, "1"))
        *out = true;
    else if (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off") ||
             !strcmp(s, "0"))
        *out = false;
    else
        return -1;
    return 0;
}

static int parse_uint(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static void str_list_free(struct str_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static int str_list_parse(struct str_list *l, const char *s)
{
    str_list_free(l);
    char *copy = strdup(s);
    if (!copy)
        return -1;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *t = trim(tok);
        if (!*t)
            continue;
        char **grown = realloc(l->items, (l->n + 1) * sizeof(*grown));
        if (!grown)
            goto fail;
        l->items = grown;
        if (!(l->items[l->n] = strdup(t)))
            goto fail;
        l->n++;
    }
    free(copy);
    return 0;
fail:
    free(copy);
    return -1;
}

bool str_list_has(const struct str_list *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i], s) == 0)
            return true;
    return false;
}

int config_split_hostport(const char *s, char *host, size_t cap, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hlen;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return -1;
        h = s + 1;
        hlen = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - s);
    }
    if (hlen == 0 || hlen >= cap)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    uint64_t p;
    if (parse_uint(colon + 1, &p) || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

/* ---- loading ---- */

/*
 * Every problem has one shape: "config FILE[:LINE]: [section] key: message" (LINE when the value came
 * from that line of the file), so an operator reads one list, whatever found the problem.
 */
struct load_ctx {
    struct px_config *cfg;
    FILE *err;
    const char *path;
    int errors;
    int line; /* line the reader returned last */
};

struct line_reader {
    FILE *f;
    struct load_ctx *lc;
};

static const struct opt *opt_find(const char *section, const char *key)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (!strcmp(opts[i].section, section) && !strcmp(opts[i].key, key))
            return &opts[i];
    return NULL;
}

static void report(struct load_ctx *lc, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void report(struct load_ctx *lc, int line, const char *fmt, ...)
{
    va_list ap;
    if (line > 0)
        fprintf(lc->err, "config %s:%d: ", lc->path, line);
    else
        fprintf(lc->err, "config %s: ", lc->path);
    va_start(ap, fmt);
    vfprintf(lc->err, fmt, ap);
    va_end(ap);
    fputc('\n', lc->err);
    lc->errors++;
}

/* One line per call (the handler then knows its line number); an over-long line is an error. */
static char *read_line(char *str, int num, void *stream)
{
    struct line_reader *r = stream;
    if (!fgets(str, num, r->f))
        return NULL;
    r->lc->line++;
    size_t n = strlen(str);
    if (n > 0 && str[n - 1] != '\n' && !feof(r->f)) {
        int c;
        while ((c = fgetc(r->f)) != EOF && c != '\n')
            ;
        report(r->lc, r->lc->line, "line longer than %d bytes", num - 3);
        str[0] = '\0'; /* skipped as blank */
    }
    return str;
}

static int opt_set(struct px_config *cfg, const struct opt *o, const char *raw)
{
    void *field = (char *)cfg + o->offset;
    char *buf = strdup(raw);
    if (!buf)
        return -1;
    char *v = trim(buf);
    int rc = 0;
    switch (o->type) {
    case OPT_STR: {
        char *copy = strdup(v);
        if (!copy) {
            rc = -1;
            break;
        }
        free(*(char **)field);
        *(char **)field = copy;
        break;
    }
    case OPT_BOOL:
        rc = config_parse_bool(v, (bool *)field);
        break;
    case OPT_DURATION:
        rc = config_parse_duration(v, (int64_t *)field);
        break;
    case OPT_SIZE:
        rc = config_parse_size(v, (uint64_t *)field);
        break;
    case OPT_UINT:
        rc = parse_uint(v, (uint64_t *)field);
        break;
    case OPT_LIST:
        rc = str_list_parse((struct str_list *)field, v);
        break;
    }
    free(buf);
    return rc;
}

static const char *type_hint(enum opt_type t)
{
    switch (t) {
    case OPT_BOOL:
        return " (use true or false)";
    case OPT_DURATION:
        return " (use e.g. 500ms, 10s, 5m, 1h)";
    case OPT_SIZE:
        return " (use e.g. 512, 64KiB, 1MiB)";
    case OPT_UINT:
        return " (use a whole number)";
    default:
        return "";
    }
}

static bool opt_is_secret(const struct opt *o)
{
    return o->offset == offsetof(struct px_config, jwt_secret) ||
           o->offset == offsetof(struct px_config, api_keys);
}

static int on_ini_entry(void *user, const char *section, const char *name, const char *value)
{
    struct load_ctx *lc = user;
    const struct opt *o = opt_find(section, name);
    if (!o) {
        report(lc, lc->line, "unknown key [%s] %s", section, name);
        return 1; /* keep going: report every problem at once */
    }
    size_t i = (size_t)(o - opts);
    if (lc->cfg->key_line[i]) {
        report(lc, lc->line, "[%s] %s: set twice, at line %d and line %d (keep one)", section, name,
               lc->cfg->key_line[i], lc->line);
        return 1;
    }
    lc->cfg->key_line[i] = lc->line;
    if (opt_set(lc->cfg, o, value) != 0)
        report(lc, lc->line, "[%s] %s: bad value '%s'%s", section, name,
               opt_is_secret(o) ? "***" : value, type_hint(o->type));
    return 1;
}

/*
 * A validation problem; msg starts with "[section] key" when it is about one key, and then names
 * the line that set it (a value from a flag or the default has none).
 */
static void check(struct load_ctx *lc, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void check(struct load_ctx *lc, bool ok, const char *fmt, ...)
{
    if (ok)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char sec[32], key[64];
    int line = 0;
    if (sscanf(msg, "[%31[^]]] %63[a-z_]", sec, key) == 2) {
        const struct opt *o = opt_find(sec, key);
        if (o)
            line = lc->cfg->key_line[o - opts];
    }
    report(lc, line, "%s", msg);
}

static void validate(struct load_ctx *lc)
{
    struct px_config *c = lc->cfg;
    char host[256];
    int port;
    check(lc, config_split_hostport(c->listen, host, sizeof(host), &port) == 0,
          "[server] listen: '%s' is not ADDR:PORT (e.g. 127.0.0.1:8080, [::1]:8080)", c->listen);
    check(lc, c->ws_path[0] == '/', "[server] ws_path: '%s' must start with /", c->ws_path);
    check(lc, c->echo_path[0] == '\0' || c->echo_path[0] == '/',
          "[server] echo_path: '%s' must start with / (or be empty to disable)", c->echo_path);
    check(lc, strcmp(c->ws_path, c->echo_path) != 0,
          "[server] echo_path: '%s' must differ from ws_path", c->echo_path);
    check(lc, c->max_message_size >= 125 && c->max_message_size <= (1ull << 30),
          "[server] max_message_size: must be between 125 and 1GiB%s", "");
    check(lc, c->max_header_size >= 1024 && c->max_header_size <= (1 << 20),
          "[server] max_header_size: must be between 1KiB and 1MiB%s", "");
    check(lc, c->handshake_timeout_ms > 0, "[server] handshake_timeout: must be > 0%s", "");
    check(lc, c->close_timeout_ms > 0, "[server] close_timeout: must be > 0%s", "");
    check(lc, c->drain_timeout_ms > 0, "[server] drain_timeout: must be > 0%s", "");
    c->io_uring_on = !strcasecmp(c->io_uring, "auto");
    check(lc, c->io_uring_on || !strcasecmp(c->io_uring, "off"),
          "[server] io_uring: '%s' is not auto or off", c->io_uring);
    c->compression_on = !strcasecmp(c->compression, "on");
    check(lc, c->compression_on || !strcasecmp(c->compression, "off"),
          "[server] compression: '%s' is not off or on", c->compression);
    check(lc, c->compression_level >= 1 && c->compression_level <= 9,
          "[server] compression_level: must be 1 to 9%s", "");
    check(lc, c->compression_window_bits >= 9 && c->compression_window_bits <= 15,
          "[server] compression_window_bits: must be 9 to 15 (zlib cannot deflate with 8)%s", "");
    check(lc, c->compression_mem_level >= 1 && c->compression_mem_level <= 9,
          "[server] compression_mem_level: must be 1 to 9%s", "");
    check(lc, c->compression_min_size <= c->max_message_size,
          "[server] compression_min_size: must not exceed max_message_size%s", "");
    check(lc, c->compression_memory_budget >= (1u << 20),
          "[server] compression_memory_budget: must be at least 1MiB%s", "");
    check(lc, (c->tls_cert[0] == '\0') == (c->tls_key[0] == '\0'),
          "[tls] cert and key must be set together%s", "");
    check(lc, log_level_parse(c->log_level) >= 0,
          "[log] level: '%s' is not one of error, warn, info, debug", c->log_level);
    check(lc, !strcasecmp(c->store_backend, "sqlite") || !strcasecmp(c->store_backend, "postgresql"),
          "[store] backend: '%s' is not sqlite or postgresql", c->store_backend);
    check(lc, strcasecmp(c->store_backend, "sqlite") || c->store_path[0] != '\0',
          "[store] path: must not be empty%s", "");
    check(lc, strcasecmp(c->store_backend, "postgresql") || c->store_dsn[0] != '\0',
          "[store] dsn: backend postgresql needs a connection string%s", "");
    check(lc, c->store_pg_timeout_ms >= 10 && c->store_pg_timeout_ms <= 60000,
          "[store] pg_timeout: must be 10ms to 60s%s", "");
    check(lc, c->cluster_lease_ms >= 3000 && c->cluster_lease_ms <= 3600000,
          "[cluster] lease: must be 3s to 1h%s", "");
    check(lc, c->cluster_poll_ms >= 10 && c->cluster_poll_ms <= 10000,
          "[cluster] poll: must be 10ms to 10s%s", "");
    check(lc, strlen(c->cluster_node_name) <= 200, "[cluster] node_name: at most 200 bytes%s", "");
    check(lc, !strcasecmp(c->store_synchronous, "normal") || !strcasecmp(c->store_synchronous, "full"),
          "[store] synchronous: '%s' is not normal or full", c->store_synchronous);
    check(lc, c->store_max_replay >= 1, "[store] max_replay: must be >= 1%s", "");
    check(lc, c->store_lock_wait_ms >= 0 && c->store_lock_wait_ms <= 1000,
          "[store] lock_wait: must be 0 to 1s%s", "");
    check(lc, c->store_commit_delay_ms >= 1 && c->store_commit_delay_ms <= 1000,
          "[store] commit_delay: must be 1ms to 1s%s", "");
    check(lc, c->store_commit_batch >= 1, "[store] commit_batch: must be >= 1%s", "");
    check(lc,
          !strcmp(c->auth_mode, "token") || !strcmp(c->auth_mode, "query") ||
              !strcmp(c->auth_mode, "token,query") || !strcmp(c->auth_mode, "query,token"),
          "[auth] mode: '%s' is not token, query or token,query", c->auth_mode);
    check(lc, !strcmp(c->jwt_alg, "HS256") || !strcmp(c->jwt_alg, "RS256") || !strcmp(c->jwt_alg, "ES256"),
          "[auth] jwt_alg: '%s' is not HS256, RS256 or ES256", c->jwt_alg);
    check(lc, c->ping_interval_ms == 0 || c->pong_timeout_ms > 0,
          "[heartbeat] pong_timeout: must be > 0 when pings are on%s", "");
    check(lc, c->send_queue >= 4096, "[limits] send_queue: must be at least 4KiB%s", "");
    check(lc, c->rate == 0 || c->rate_burst >= 1, "[limits] rate_burst: must be >= 1%s", "");
    check(lc, c->ack_rate == 0 || c->ack_burst >= 1, "[limits] ack_burst: must be >= 1%s", "");
    check(lc, c->max_connections >= 1, "[limits] max_connections: must be >= 1%s", "");
    check(lc, c->max_connections_per_ip >= 1, "[limits] max_connections_per_ip: must be >= 1%s", "");
    if (c->api_listen[0]) {
        check(lc, config_split_hostport(c->api_listen, host, sizeof(host), &port) == 0,
              "[api] listen: '%s' is not ADDR:PORT", c->api_listen);
        check(lc, strcmp(c->api_listen, c->listen) != 0,
              "[api] listen: '%s' must differ from [server] listen", c->api_listen);
    }
    check(lc, c->api_max_body >= 1024, "[api] max_body: must be at least 1KiB%s", "");
    check(lc, c->api_max_recipients >= 1 && c->api_max_recipients <= 10000,
          "[api] max_recipients: must be 1 to 10000%s", "");
    check(lc, c->api_request_timeout_ms > 0, "[api] request_timeout: must be > 0%s", "");
    check(lc, c->api_max_connections >= 1, "[api] max_connections: must be >= 1%s", "");
    check(lc, c->api_max_connections_per_ip >= 1, "[api] max_connections_per_ip: must be >= 1%s", "");
    if (c->events_target[0]) {
        check(lc,
              !strncmp(c->events_target, "http://", 7) || !strncmp(c->events_target, "fastcgi://", 10) ||
                  !strncmp(c->events_target, "fastcgi:unix:", 13),
              "[events] target: '%s' is not http://HOST:PORT/PATH, fastcgi://HOST:PORT/SCRIPT or "
              "fastcgi:unix:/SOCKET:/SCRIPT", c->events_target);
        check(lc, c->events_secret[0] != '\0',
              "[events] secret: required when target is set (the backend checks the signature)%s", "");
    }
    static const char *const event_types[] = {
        "session.opened", "session.closed", "user.online", "user.offline", "message.direct",
        "message.room", "message.push", "message.unacked", "member.added", "member.removed"};
    for (size_t i = 0; i < c->events_types.n; i++) {
        bool known = false;
        for (size_t k = 0; k < sizeof(event_types) / sizeof(event_types[0]); k++)
            known = known || !strcmp(c->events_types.items[i], event_types[k]);
        check(lc, known, "[events] types: '%s' is not an event type (see docs/events.md)",
              c->events_types.items[i]);
    }
    check(lc, c->events_offline_delay_ms >= 0, "[events] offline_delay: must be >= 0%s", "");
    check(lc, c->events_unacked_delay_ms >= 1000, "[events] unacked_delay: must be at least 1s%s", "");
    check(lc, c->events_batch_count >= 1 && c->events_batch_count <= 10000,
          "[events] batch_count: must be 1 to 10000%s", "");
    check(lc, c->events_batch_bytes >= 1024, "[events] batch_bytes: must be at least 1KiB%s", "");
    check(lc, c->events_retry_initial_ms >= 10, "[events] retry_initial: must be at least 10ms%s", "");
    check(lc, c->events_retry_max_ms >= c->events_retry_initial_ms,
          "[events] retry_max: must be >= retry_initial%s", "");
    check(lc, c->events_max_age_ms >= 1000, "[events] max_age: must be at least 1s%s", "");
    check(lc, c->events_max_outbox >= 1, "[events] max_outbox: must be >= 1%s", "");
    check(lc, c->events_pool >= 1 && c->events_pool <= 256, "[events] pool: must be 1 to 256%s", "");
    check(lc, c->events_timeout_ms >= 100, "[events] timeout: must be at least 100ms%s", "");
    check(lc, !c->demo_enabled || !strcmp(c->jwt_alg, "HS256"),
          "[demo] enabled: needs [auth] jwt_alg = HS256 (demo tokens are signed with jwt_secret)%s", "");
    check(lc, c->demo_token_ttl_ms > 0, "[demo] token_ttl: must be > 0%s", "");
}

static void parse_file(struct load_ctx *lc, const char *path)
{
    struct stat sb;
    FILE *f = fopen(path, "r");
    if (!f) {
        report(lc, 0, "cannot open: %s", strerror(errno));
        return;
    }
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        report(lc, 0, "is a directory, not a configuration file");
        fclose(f);
        return;
    }
    /* An indented line continuing the previous value would silently replace it: a syntax error. */
    ini_allow_multiline = false;
    struct line_reader r = {.f = f, .lc = lc};
    int rc = ini_parse_stream(read_line, &r, on_ini_entry, lc);
    if (ferror(f))
        report(lc, 0, "cannot read: %s", strerror(errno));
    else if (rc > 0)
        report(lc, rc, "syntax error (want [section] or key = value)");
    fclose(f);
}

bool config_store_is_pg(const struct px_config *cfg)
{
    return cfg->store_backend && !strcasecmp(cfg->store_backend, "postgresql");
}

const char *config_store_location(const struct px_config *cfg)
{
    return config_store_is_pg(cfg) ? cfg->store_dsn : cfg->store_path;
}

const char *config_find_default(void)
{
    if (access("wsproxy.ini", F_OK) == 0)
        return "wsproxy.ini";
    if (access(CONFIG_SYSTEM_PATH, F_OK) == 0)
        return CONFIG_SYSTEM_PATH;
    return NULL;
}

int config_load(struct px_config *cfg, const char *path, const struct config_overrides *ov, FILE *err)
{
    memset(cfg, 0, sizeof(*cfg));
    struct load_ctx lc = {.cfg = cfg, .err = err, .path = "(defaults)"};
    for (size_t i = 0; i < NOPTS; i++)
        if (opt_set(cfg, &opts[i], opts[i].def) != 0) {
            fprintf(err, "config: out of memory\n");
            return -1;
        }

    if (!path)
        path = config_find_default();
    if (path) {
        lc.path = path;
        cfg->source = strdup(path);
        parse_file(&lc, path);
    }
    if (ov) {
        static const struct {
            const char *flag, *section, *key;
        } map[] = {{"--listen", "server", "listen"},
                   {"--db", "store", "path"},
                   {"--api-listen", "api", "listen"},
                   {"--log-level", "log", "level"}};
        const char *vals[] = {ov->listen, ov->db, ov->api_listen, ov->log_level};
        for (size_t i = 0; i < 4; i++) {
            if (!vals[i])
                continue;
            const struct opt *o = opt_find(map[i].section, map[i].key);
            cfg->key_line[o - opts] = 0; /* the flag wins over the file's line */
            if (opt_set(cfg, o, vals[i]) != 0)
                report(&lc, 0, "%s: bad value '%s'", map[i].flag, vals[i]);
        }
    }
    validate(&lc);
    return lc.errors ? -1 : 0;
}

static bool readable_file(struct load_ctx *lc, const char *what, const char *path)
{
    struct stat sb;
    FILE *f = fopen(path, "r");
    if (!f) {
        check(lc, false, "%s: cannot read %s: %s", what, path, strerror(errno));
        return false;
    }
    bool ok = fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode);
    fclose(f);
    check(lc, ok, "%s: %s is not a regular file", what, path);
    return ok;
}

int config_check_start(const struct px_config *c, FILE *err)
{
    struct load_ctx lc = {.cfg = (struct px_config *)c, .err = err,
                          .path = c->source ? c->source : "(defaults)"};
    bool token = strstr(c->auth_mode, "token") != NULL;
    size_t slen = strlen(c->jwt_secret);
    if (!strcmp(c->jwt_alg, "HS256") && (token || c->demo_enabled))
        check(&lc, slen > 0,
              "[auth] jwt_secret: empty; HS256 tokens need a secret of at least %d bytes "
              "(e.g. openssl rand -hex 32)",
              CONFIG_SECRET_MIN);
    check(&lc, slen == 0 || slen >= CONFIG_SECRET_MIN,
          "[auth] jwt_secret: %zu bytes, use at least %d (e.g. openssl rand -hex 32)", slen,
          CONFIG_SECRET_MIN);
    if (strcmp(c->jwt_alg, "HS256") != 0 && token) {
        check(&lc, c->jwt_public_key[0] != '\0', "[auth] jwt_public_key: needed for jwt_alg %s",
              c->jwt_alg);
        if (c->jwt_public_key[0])
            readable_file(&lc, "[auth] jwt_public_key", c->jwt_public_key);
    }
    struct cidr_list trusted;
    char why[256] = "";
    int bad_cidr = cidr_list_parse(&trusted, c->trusted_proxies, why, sizeof(why));
    check(&lc, bad_cidr == 0, "[auth] trusted_proxies: %s", why);
    check(&lc, bad_cidr != 0 || !strstr(c->auth_mode, "query") || trusted.n > 0,
          "[auth] mode: query needs trusted_proxies (the proxies that set ?user=)%s", "");
    if (c->tls_cert[0] && c->tls_key[0]) {
        readable_file(&lc, "[tls] cert", c->tls_cert);
        readable_file(&lc, "[tls] key", c->tls_key);
    }
    struct stat sb;
    check(&lc, config_store_is_pg(c) || stat(c->store_path, &sb) != 0 || S_ISREG(sb.st_mode),
          "[store] path: %s is not a regular file", c->store_path);
    int errors = lc.errors;
    if (c->static_dir[0] && (stat(c->static_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)))
        fprintf(err, "config %s: warning: [server] static_dir: %s is not a directory (relative to %s); "
                     "pages under / will answer 404\n",
                lc.path, c->static_dir, c->static_dir[0] == '/' ? "/" : "the working directory");
    return errors;
}

void config_release(struct px_config *cfg)
{
    free(cfg->source);
    cfg->source = NULL;
    for (size_t i = 0; i < NOPTS; i++) {
        void *field = (char *)cfg + opts[i].offset;
        if (opts[i].type == OPT_STR) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (opts[i].type == OPT_LIST) {
            str_list_free((struct str_list *)field);
        }
    }
}

void config_print_reference(FILE *out)
{
    const char *section = "";
    fprintf(out, "; wsproxy configuration reference: every key with its default.\n");
    for (size_t i = 0; i < NOPTS; i++) {
        if (strcmp(section, opts[i].section) != 0) {
            section = opts[i].section;
            fprintf(out, "\n[%s]\n", section);
        }
        fprintf(out, "; %s\n%s = %s\n", opts[i].help, opts[i].key, opts[i].def);
    }
}

/* The shortest exact spelling: 90000 -> "90s", 1500 -> "1500ms", 3600000 -> "1h". */
static void fmt_duration_exact(char *out, size_t cap, int64_t ms)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(out, cap, "%lld%s", (long long)(ms / units[i].ms), units[i].unit);
            return;
        }
    snprintf(out, cap, ms == 0 ? "0s" : "%lldms", (long long)ms);
}

static void fmt_size_exact(char *out, size_t cap, uint64_t n)
{
    static const struct {
        uint64_t mult;
        const char *unit;
    } units[] = {{1ull << 30, "GiB"}, {1u << 20, "MiB"}, {1u << 10, "KiB"}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (n != 0 && n % units[i].mult == 0) {
            snprintf(out, cap, "%llu%s", (unsigned long long)(n / units[i].mult), units[i].unit);
            return;
        }
    snprintf(out, cap, "%llu", (unsigned long long)n);
}

void config_print_effective(const struct px_config *cfg, FILE *out)
{
    const char *section = "";
    fprintf(out, "; wsproxy effective configuration (%s, then command-line flags); secrets masked.\n",
            cfg->source ? cfg->source : "built-in defaults");
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt *o = &opts[i];
        const void *field = (const char *)cfg + o->offset;
        if (strcmp(section, o->section) != 0) {
            section = o->section;
            fprintf(out, "\n[%s]\n", section);
        }
        fprintf(out, "%s = ", o->key);
        char buf[64];
        switch (o->type) {
        case OPT_STR: {
            const char *v = *(char *const *)field;
            fputs(opt_is_secret(o) && v[0] ? "***" : v, out);
            break;
        }
        case OPT_BOOL:
            fputs(*(const bool *)field ? "true" : "false", out);
            break;
        case OPT_DURATION:
            fmt_duration_exact(buf, sizeof(buf), *(const int64_t *)field);
            fputs(buf, out);
            break;
        case OPT_SIZE:
            fmt_size_exact(buf, sizeof(buf), *(const uint64_t *)field);
            fputs(buf, out);
            break;
        case OPT_UINT:
            fprintf(out, "%llu", (unsigned long long)*(const uint64_t *)field);
            break;
        case OPT_LIST: {
            const struct str_list *l = field;
            for (size_t k = 0; k < l->n; k++)
                fprintf(out, "%s%s", k ? ", " : "", opt_is_secret(o) ? "***" : l->items[k]);
            break;
        }
        }
        fputc('\n', out);
    }
}
