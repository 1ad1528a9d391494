/*
 * config.h -- the one place settings live: defaults, INI file (libinih), command-line overrides,
 * validation. Everything else reads a const struct px_config after config_load() succeeded.
 */
#ifndef WSP_CONFIG_H
#define WSP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct str_list {
    char **items;
    size_t n;
};

#define CONFIG_SYSTEM_PATH "/etc/wsproxy/wsproxy.ini" /* after ./wsproxy.ini, for server and wsctl */
#define CONFIG_SECRET_MIN  32                          /* bytes of an HS256 jwt_secret, at least */
#define CONFIG_MAX_KEYS    128

struct px_config {
    char *source;                  /* the file read; NULL: built-in defaults only */
    int key_line[CONFIG_MAX_KEYS]; /* per key of the table: the file's line that set it, 0 if none */
    /* [server] */
    char *listen;
    char *ws_path;
    char *echo_path; /* "" disables */
    uint64_t max_message_size;
    uint64_t max_header_size;
    int64_t handshake_timeout_ms;
    struct str_list origins;
    struct str_list subprotocols;
    char *static_dir; /* "" disables */
    int64_t close_timeout_ms;
    int64_t drain_timeout_ms;
    bool static_follow_symlinks;
    char *io_uring;                     /* "auto" or "off": batched sends (net/ioq.h) */
    bool io_uring_on;                   /* io_uring == "auto", set by validation */
    char *compression;                  /* "off" or "on" (permessage-deflate, docs/compression.md) */
    bool compression_on;                /* compression == "on", set by validation */
    uint64_t compression_min_size;      /* messages shorter than this go out uncompressed */
    uint64_t compression_level;         /* zlib level 1..9 of the shared compressor */
    uint64_t compression_window_bits;   /* 9..15: our window, and the client window asked for */
    uint64_t compression_mem_level;     /* zlib memLevel 1..9 of the shared compressor(s) */
    uint64_t compression_memory_budget; /* ceiling for all zlib memory of the event loop */
    /* [tls] */
    char *tls_cert;
    char *tls_key;
    /* [log] */
    char *log_level;
    /* [store] */
    char *store_backend;   /* sqlite or postgresql */
    char *store_path;
    char *store_dsn;       /* postgresql: libpq connection string */
    int64_t store_pg_timeout_ms; /* postgresql: longest the loop waits for one answer */
    char *store_synchronous;
    int64_t store_busy_timeout_ms;
    int64_t store_lock_wait_ms; /* the event loop's bound on waiting for another process's lock */
    uint64_t store_max_replay;
    int64_t store_commit_delay_ms; /* the longest a group commit may wait behind other work */
    uint64_t store_commit_batch;   /* writes after which it commits at once */
    int64_t store_retention_age_ms; /* delete messages older than this; 0: keep forever */
    uint64_t store_retention_count; /* keep this many per conversation; 0: no limit */
    /* [auth] */
    char *auth_mode;
    char *jwt_alg;
    char *jwt_secret;
    char *jwt_public_key;
    int64_t jwt_leeway_ms;
    char *jwt_cookie;
    char *trusted_proxies;
    struct str_list reserved_users; /* names no token or ?user= may claim (the API's senders) */
    /* [rooms] */
    struct str_list rooms_open;     /* open rooms: names and "prefix*" patterns; the rest are closed */
    /* [heartbeat] */
    int64_t ping_interval_ms; /* 0 disables pings */
    int64_t pong_timeout_ms;
    /* [limits] */
    uint64_t send_queue;
    uint64_t rate;       /* messages per second per connection; 0 = unlimited */
    uint64_t rate_burst;
    uint64_t ack_rate; /* acks per second per connection (their own bucket); 0 = unlimited */
    uint64_t ack_burst;
    uint64_t max_body;
    uint64_t presence_fanout_max;
    uint64_t max_connections;
    uint64_t max_connections_per_ip;
    /* [api] */
    char *api_listen; /* "" disables the API listener */
    struct str_list api_keys;
    uint64_t api_max_body;
    uint64_t api_max_recipients; /* users in one push's "to" list, pushes in one batch */
    int64_t api_request_timeout_ms; /* a request head and body must arrive within this */
    uint64_t api_max_connections;
    uint64_t api_max_connections_per_ip;
    /* [events] */
    char *events_target; /* "" disables; http://... or fastcgi://... or fastcgi:unix:... */
    char *events_secret;
    struct str_list events_types;
    int64_t events_offline_delay_ms;
    int64_t events_unacked_delay_ms;
    uint64_t events_batch_count;
    uint64_t events_batch_bytes;
    int64_t events_retry_initial_ms;
    int64_t events_retry_max_ms;
    int64_t events_max_age_ms;
    uint64_t events_max_outbox;
    uint64_t events_pool;
    int64_t events_timeout_ms;
    /* [cluster] (with [store] backend = postgresql) */
    char *cluster_node_name;     /* "" = hostname:port of [server] listen */
    int64_t cluster_lease_ms;    /* a node silent this long is lost: its sessions end */
    int64_t cluster_poll_ms;     /* fetch the cluster log at least this often */
    /* [demo] */
    bool demo_enabled;
    int64_t demo_token_ttl_ms;
};

/* Command-line options that override the file; NULL = not given. */
struct config_overrides {
    const char *listen;
    const char *db;
    const char *api_listen;
    const char *log_level;
};

/* [store] backend = postgresql (else SQLite). */
bool config_store_is_pg(const struct px_config *cfg);

/* What store_open takes: the SQLite file, or PostgreSQL's connection string. */
const char *config_store_location(const struct px_config *cfg);

/*
 * The file used when none is given: "wsproxy.ini" in the working directory if it exists, else
 * CONFIG_SYSTEM_PATH if it exists, else NULL (built-in defaults). The server and wsctl both use it.
 */
const char *config_find_default(void);

/*
 * Fill cfg from built-in defaults, then the INI file at path (NULL: config_find_default()), then
 * the overrides, then validate values. Every problem is printed to err, one line each, as
 * "config FILE[:LINE]: [section] key: message" (unknown keys, bad values, a key set twice, syntax).
 * Returns 0, or -1 after printing. cfg owns its strings: config_release(). Relative paths in the
 * file are relative to the working directory (as for the flags), not to the file.
 */
int config_load(struct px_config *cfg, const char *path, const struct config_overrides *ov, FILE *err);
void config_release(struct px_config *cfg);

/*
 * What a start needs beyond valid values, in the same format: the HS256 secret (present, at least
 * CONFIG_SECRET_MIN bytes), readable key and certificate files, trusted_proxies; a missing
 * static_dir is a warning. Returns the number of errors (warnings do not count).
 */
int config_check_start(const struct px_config *cfg, FILE *err);

/* Write every key with its default and help text, as an annotated INI file. */
void config_print_reference(FILE *out);

/* Write every key with its value in cfg (sizes and durations normalized, secrets as ***). */
void config_print_effective(const struct px_config *cfg, FILE *out);

/* Value parsers, exposed for tests and for wsctl's --since. Return 0 or -1. */
int config_parse_duration(const char *s, int64_t *out_ms);
int config_parse_size(const char *s, uint64_t *out);
int config_parse_bool(const char *s, bool *out);

/*
 * Split "host:port" / "[v6]:port" into host (cap bytes) and port. Returns 0 or -1.
 */
int config_split_hostport(const char *s, char *host, size_t cap, int *port);

bool str_list_has(const struct str_list *l, const char *s);

#endif
