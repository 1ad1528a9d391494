/*
 * wsctl.h -- the admin CLI's shared pieces: the run context, exit codes, output helpers (aligned
 * tables, relative times) and the blocking HTTP client used for kick and push.
 */
#ifndef WSCTL_H
#define WSCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/config.h"

/* Exit statuses, as documented in docs/wsctl.md. */
enum wsctl_exit {
    WSCTL_OK = 0,
    WSCTL_NOTFOUND = 1, /* the session, message or user asked for does not exist */
    WSCTL_ERROR = 2     /* bad usage, unreadable config or database, API unreachable or refusing */
};

struct wsctl {
    const char *config_path; /* --config; NULL: wsproxy.ini when it exists */
    const char *db_path;     /* --db; NULL: [store] path */
    const char *api_url;     /* --api; NULL: from [api] listen */
    const char *api_key;     /* --key; NULL: $WSCTL_API_KEY, then the first [api] keys entry */
    bool json;
    bool cfg_loaded;
    struct px_config cfg;
    int64_t now_ms;
    FILE *out;
    FILE *err;
};

/* Load the config file once (on first need). Returns 0, or -1 after printing why. */
int wsctl_config(struct wsctl *w);

/* `wsctl CMD --help`: that command's usage on w->out; returns WSCTL_OK. */
int wsctl_help(struct wsctl *w, const char *cmd);

/* "wsctl CMD: message" and the command's synopsis on w->err; returns WSCTL_ERROR. */
/*
 * Parse a command's options when it takes only the common ones (positional arguments stay at
 * argv[optind...]). *done: --help was shown or the usage was wrong; return the value then.
 */
int wsctl_common_only(struct wsctl *w, int argc, char **argv, bool *done);
int wsctl_usage_error(struct wsctl *w, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Print "wsctl: " + message + newline to w->err. */
void wsctl_errorf(struct wsctl *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- commands: each returns an enum wsctl_exit; argv[0] is the command name ---- */

int cmd_sessions(struct wsctl *w, int argc, char **argv);
int cmd_session(struct wsctl *w, int argc, char **argv);
int cmd_presence(struct wsctl *w, int argc, char **argv);
int cmd_history(struct wsctl *w, int argc, char **argv);
int cmd_stats(struct wsctl *w, int argc, char **argv);
int cmd_kick(struct wsctl *w, int argc, char **argv);
int cmd_push(struct wsctl *w, int argc, char **argv);
int cmd_status(struct wsctl *w, int argc, char **argv);
int cmd_message(struct wsctl *w, int argc, char **argv);
int cmd_token(struct wsctl *w, int argc, char **argv);
int cmd_backup(struct wsctl *w, int argc, char **argv);
int cmd_nodes(struct wsctl *w, int argc, char **argv);
int cmd_events(struct wsctl *w, int argc, char **argv);
int cmd_rooms(struct wsctl *w, int argc, char **argv);
int cmd_members(struct wsctl *w, int argc, char **argv);
int cmd_conversations(struct wsctl *w, int argc, char **argv);
int cmd_add(struct wsctl *w, int argc, char **argv);
int cmd_remove(struct wsctl *w, int argc, char **argv);

/*
 * Options every command accepts besides its own (so `wsctl sessions --json` works as well as
 * `wsctl --json sessions`). wsctl_common_opt handles one getopt_long result: 1 when it was a common
 * option, 0 when not.
 */
#define WSCTL_COMMON_OPTS                                                                          \
    {"config", required_argument, NULL, 'c'}, {"db", required_argument, NULL, 'D'},                \
        {"api", required_argument, NULL, 'A'}, {"key", required_argument, NULL, 'K'},              \
        {"json", no_argument, NULL, 'j'},                                                          \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }
#define WSCTL_COMMON_SHORT "c:hj"
int wsctl_common_opt(struct wsctl *w, int opt, const char *arg);

/* Strict decimal in [lo, hi] (no sign, no spaces). Returns 0 or -1. */
int wsctl_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out);

/* ---- formatting (fmt.c): pure functions of their arguments ---- */

/* "just now", "42s ago", "3m ago", "5h ago", "2d ago"; "in 3m" ahead of now; "-" for 0. */
void fmt_ago(char *out, size_t cap, int64_t then_ms, int64_t now_ms);

/* "450ms", "42s", "3m12s", "2h05m", "3d04h"; negative counts as 0. */
void fmt_duration(char *out, size_t cap, int64_t ms);

/* UTC "2026-01-31T12:00:00Z" (like the server log); "-" for 0. */
void fmt_time(char *out, size_t cap, int64_t ms);

/* "512 B", "1.5 KiB", "3.2 MiB", ... */
void fmt_bytes(char *out, size_t cap, uint64_t n);

/* At most max display columns of s (UTF-8 aware), with "..." when cut; newlines become spaces. */
void fmt_clip(char *out, size_t cap, const char *s, size_t max);

/* Display width of UTF-8 text: code points, not bytes (no East Asian wide handling). */
size_t fmt_width(const char *s);
/*
 * A copy of s safe for a terminal and for JSON: valid UTF-8, control characters (C0, DEL, C1) and
 * invalid bytes replaced by U+FFFD. Caller frees; NULL when out of memory.
 */
char *fmt_safe(const char *s);

/* s %-encoded for one URL path segment or query value: every byte but A-Z a-z 0-9 - . _ ~ becomes
 * %XX. Stops at whole characters of output when cap is short (3 * strlen + 1 always fits). */
void wsctl_pct_encode(char *out, size_t cap, const char *s);

/* An aligned table: headers, then rows of ncols copied strings. */
struct table {
    size_t ncols;
    const char *const *head;
    char **cells; /* nrows * ncols */
    size_t nrows;
    size_t cap;
    bool oom;
};

void table_init(struct table *t, size_t ncols, const char *const *head);
/* Add one row of t->ncols strings (NULL prints as "-"). */
void table_add(struct table *t, const char *const *row);
/* Columns separated by two spaces, padded to the widest cell; the last column is not padded. */
void table_print(const struct table *t, FILE *out);
void table_release(struct table *t);

/* ---- HTTP client (http.c) ---- */

struct http_reply {
    int status;
    char *body; /* NUL-terminated, malloc'd */
    size_t body_len;
};

/*
 * One blocking HTTP/1.1 request to url ("http://host:port", optional trailing path ignored) with
 * Authorization: Bearer key (none when key is NULL); body (may be NULL) is sent as application/json. Returns 0 and fills
 * *r (free r->body), or -1 with a reason in err (connection refused, timeout, bad URL, ...).
 */
int wsctl_http_request(const char *url, const char *key, const char *method, const char *path,
                 const char *body, struct http_reply *r, char *err, size_t errlen);

/* Split "http://host:port[/...]" into host and port. Returns 0 or -1. */
int http_parse_url(const char *url, char *host, size_t cap, int *port);

/* ---- shared by the command files ---- */

struct store;
/* Open the database read-only ([store] path or --db). Returns 0, or -1 after printing why. */
int wsctl_open_db(struct wsctl *w, struct store **st);
/* Print root (consumed; NULL means out of memory) indented on w->out; an enum wsctl_exit. */
struct json_t;
int wsctl_print_json(struct wsctl *w, struct json_t *root);
/*
 * One API request (--api/--key, $WSCTL_API_KEY, the config): 0 with *r filled (free r->body) and
 * the base URL in url, or -1 after printing why (no key, unreachable, ...).
 */
int wsctl_api_call(struct wsctl *w, const char *method, const char *path, const char *body,
                   struct http_reply *r, char *url, size_t cap);
/* Print what an API error answer said: its {"error":{code,message}}, else the status. */
void wsctl_api_error(struct wsctl *w, const char *url, const struct http_reply *r);

#endif
