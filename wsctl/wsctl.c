/*
 * wsctl.c -- the admin CLI's entry point: global options, the command table, usage texts and the
 * lazily loaded wsproxy config. Queries live in query.c, API calls in remote.c.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "base/version.h"
#include "wsctl.h"

#define WSCTL_VERSION WSPROXY_VERSION

struct wsctl_cmd {
    const char *name;
    int (*fn)(struct wsctl *w, int argc, char **argv);
    const char *synopsis; /* arguments after the name */
    const char *summary;
    const char *help; /* options and notes, shown by `wsctl NAME --help` */
};

static const struct wsctl_cmd commands[] = {
    {"sessions", cmd_sessions,
     "[--user U] [--active|--ended] [--since 1h] [--limit N] [--before ID]",
     "list sessions, newest first",
     "  -u, --user U      only sessions of user U\n"
     "  -a, --active      only sessions still connected\n"
     "  -e, --ended       only sessions that have ended\n"
     "  -s, --since DUR   only sessions that connected in the last DUR (30s, 15m, 1h, 7d)\n"
     "  -n, --limit N     at most N rows (default 50, at most 100000)\n"
     "  -b, --before ID   only ids below ID (the next page after a listing ending at ID)\n"},
    {"session", cmd_session, "ID", "one session in detail (exit 1 if there is none)", ""},
    {"presence", cmd_presence, "USER...",
     "online state, connections and last seen of users (exit 1 if one was never seen)", ""},
    {"history", cmd_history, "(--with U --user V | --room R) [--limit N] [--before ID]",
     "stored messages of a conversation or a room, oldest first",
     "  -w, --with U      the other side of a direct conversation (with --user)\n"
     "  -u, --user V      one side of a direct conversation (with --with)\n"
     "  -r, --room R      a room's messages\n"
     "  -n, --limit N     the newest N messages (default 50, at most 1000)\n"
     "  -b, --before ID   only messages with ids below ID (older pages)\n"},
    {"stats", cmd_stats, "", "counts from the database: sessions, users online, messages, rooms",
     ""},
    {"rooms", cmd_rooms, "[--after NAME] [--limit N]",
     "rooms in name order: open or closed ([rooms] open), members, last message",
     "  -a, --after NAME  only rooms after NAME (the next page after a listing ending at NAME)\n"
     "  -n, --limit N     at most N rows (default 100, at most 1000)\n"},
    {"members", cmd_members, "ROOM",
     "a room's members: how each was granted (join, claim, api) and presence (exit 1 if none)",
     ""},
    {"conversations", cmd_conversations, "USER [--limit N] [--before ID]",
     "a user's conversation list, newest last message first (rooms and direct, unread counts)",
     "  -n, --limit N     at most N conversations (default 50, at most 100)\n"
     "  -b, --before ID   only conversations whose last message id is below ID (older pages)\n"},
    {"kick", cmd_kick, "(ID | --user USER)",
     "close a live session, or all of a user's, through the API (1008 \"kicked\"; exit 1 if none)",
     "  -u, --user USER   every live session of USER (listed by the API, then kicked one by one)\n"},
    {"add", cmd_add, "ROOM USER",
     "add USER to ROOM through the API (granted by the API: a closed room's member for good)", ""},
    {"remove", cmd_remove, "ROOM USER",
     "remove USER from ROOM through the API (exit 1 if USER is not a member)", ""},
    {"status", cmd_status, "",
     "is the server up: /healthz and /metrics of the API (version, uptime, connections); exit 1 if "
     "down",
     ""},
    {"message", cmd_message, "ID",
     "a message's receipt through the API: delivered or stored (exit 1 if there is none)", ""},
    {"token", cmd_token, "USER [--ttl DUR]",
     "mint a test token for USER, signed with the config's HS256 jwt_secret",
     "  -t, --ttl DUR     lifetime (default 1h; 1s to 366d)\n"
     "                    RS256/ES256 configs are refused: the private key is not wsproxy's\n"},
    {"nodes", cmd_nodes, "",
     "cluster mode (PostgreSQL): each node's name, state (up, down, lost) and lease", ""},
    {"backup", cmd_backup, "FILE",
     "online, consistent copy of the database into FILE (SQLite backup API; never overwrites)",
     ""},
    {"push", cmd_push, "(--to U | --room R | --broadcast) [--from F] [--cid C] [--text] BODY",
     "push a message through the API (stored and delivered like a chat message)",
     "  -t, --to U        a direct message to user U (kept until one of U's connections acks it)\n"
     "  -r, --room R      a message to room R (its history; members online get it now)\n"
     "  -B, --broadcast   every live connection, not stored\n"
     "  -f, --from F      sender shown to clients (default \"system\")\n"
     "  -i, --cid C       idempotency key: a second push with the same from+cid stores nothing\n"
     "  -T, --text        send BODY as a JSON string even if it parses as JSON\n"
     "  BODY              JSON (e.g. '{\"text\":\"hi\"}'); text that is not JSON is sent as a\n"
     "                    string; - reads it from standard input\n"},
    {"events", cmd_events, "[--after ID] [--limit N] | replay (ID | --all)",
     "events to the app backend through the API: counts and dead letters, or queue dead ones again",
     "  -a, --after ID    dead events with ids above ID (the next page)\n"
     "  -n, --limit N     at most N dead events (default 50, at most 1000)\n"
     "  replay ID         queue dead event ID again (same id: the backend can de-duplicate)\n"
     "  replay --all      queue every dead event again (up to 10000 per call)\n"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const char common_help[] =
    "Options (before or after the command):\n"
    "  -c, --config FILE  wsproxy config for the database path and API (default, as for the\n"
    "                     server: ./wsproxy.ini, else " CONFIG_SYSTEM_PATH ", else built-in\n"
    "                     defaults)\n"
    "      --db PATH      database file (overrides [store] path); opened read-only\n"
    "      --api URL      API base URL, e.g. http://127.0.0.1:8081 (overrides [api] listen)\n"
    "      --key KEY      API key (default: $WSCTL_API_KEY, then the first [api] keys entry)\n"
    "  -j, --json         JSON for scripts instead of tables\n"
    "  -h, --help         help (`wsctl COMMAND --help` for one command)\n";

static void usage(FILE *out)
{
    fprintf(out, "usage: wsctl [options] COMMAND [args]\n\n"
                 "Inspect and manage a wsproxy server. Queries read its SQLite database read-only\n"
                 "(while it runs or not); status, message, kick, push, add and remove go through\n"
                 "its HTTP API.\n\nCommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %s%s%s\n      %s\n", commands[i].name, commands[i].synopsis[0] ? " " : "",
                commands[i].synopsis, commands[i].summary);
    fprintf(out,
            "\n%s      --version      print the version\n\n"
            "Exit status: 0 ok, 1 not found (status: down), 2 usage, configuration, database or API\n"
            "error.\n",
            common_help);
}

/* Edit distance (insertions, deletions, substitutions, adjacent swaps), capped for long input. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 32 || lb > 32)
        return 99;
    size_t d[33][33];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

/* The command a mistyped name most likely meant, or NULL when none is close. */
static const char *did_you_mean(const char *name)
{
    const char *best = NULL, *prefix = NULL;
    size_t best_d = 3; /* at most 2 edits */
    for (size_t i = 0; i < NCOMMANDS; i++) {
        size_t d = edit_distance(name, commands[i].name);
        if (d < best_d) {
            best_d = d;
            best = commands[i].name;
        }
        if (!prefix && strlen(name) >= 3 && strncmp(name, commands[i].name, strlen(name)) == 0)
            prefix = commands[i].name;
    }
    return best ? best : prefix;
}

static const struct wsctl_cmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void cmd_usage(const struct wsctl_cmd *c, FILE *out)
{
    fprintf(out, "usage: wsctl %s %s\n\n%s.\n", c->name, c->synopsis, c->summary);
    if (c->help[0])
        fprintf(out, "\n%s", c->help);
    fprintf(out, "\n%s", common_help);
}

int wsctl_help(struct wsctl *w, const char *cmd)
{
    const struct wsctl_cmd *c = find_cmd(cmd);
    if (c)
        cmd_usage(c, w->out);
    return WSCTL_OK;
}

int wsctl_usage_error(struct wsctl *w, const char *cmd, const char *fmt, ...)
{
    const struct wsctl_cmd *c = find_cmd(cmd);
    va_list ap;
    fprintf(w->err, "wsctl %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(w->err, fmt, ap);
    va_end(ap);
    fputs("\n", w->err);
    if (c)
        fprintf(w->err, "usage: wsctl %s %s\n(wsctl %s --help for details)\n", c->name, c->synopsis,
                c->name);
    return WSCTL_ERROR;
}

void wsctl_errorf(struct wsctl *w, const char *fmt, ...)
{
    va_list ap;
    fputs("wsctl: ", w->err);
    va_start(ap, fmt);
    vfprintf(w->err, fmt, ap);
    va_end(ap);
    fputs("\n", w->err);
}

int wsctl_common_opt(struct wsctl *w, int opt, const char *arg)
{
    switch (opt) {
    case 'c':
        w->config_path = arg;
        return 1;
    case 'D':
        w->db_path = arg;
        return 1;
    case 'A':
        w->api_url = arg;
        return 1;
    case 'K':
        w->api_key = arg;
        return 1;
    case 'j':
        w->json = true;
        return 1;
    default:
        return 0;
    }
}

int wsctl_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    int64_t v = 0;
    if (!*s || strlen(s) > 18)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int wsctl_config(struct wsctl *w)
{
    if (w->cfg_loaded)
        return 0;
    if (config_load(&w->cfg, w->config_path, NULL, w->err) != 0) {
        wsctl_errorf(w, "cannot use configuration %s",
                     w->cfg.source ? w->cfg.source : "(defaults)");
        config_release(&w->cfg);
        return -1;
    }
    w->cfg_loaded = true;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        WSCTL_COMMON_OPTS, {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
    struct wsctl w = {.out = stdout, .err = stderr};
    struct timeval tv;
    gettimeofday(&tv, NULL);
    w.now_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;

    int opt;
    opterr = 0;
    /* "+": stop at the command; its own options are parsed by the command. */
    while ((opt = getopt_long(argc, argv, "+" WSCTL_COMMON_SHORT, longopts, NULL)) != -1) {
        if (wsctl_common_opt(&w, opt, optarg))
            continue;
        if (opt == 'h') {
            usage(stdout);
            return WSCTL_OK;
        }
        if (opt == 'V') {
            printf("wsctl %s\n", WSCTL_VERSION);
            return WSCTL_OK;
        }
        fprintf(stderr, "wsctl: unknown option or missing value: %s\n", argv[optind - 1]);
        usage(stderr);
        return WSCTL_ERROR;
    }
    if (optind >= argc) {
        usage(stderr);
        return WSCTL_ERROR;
    }
    const char *name = argv[optind];
    if (strcmp(name, "help") == 0) {
        const struct wsctl_cmd *c = optind + 1 < argc ? find_cmd(argv[optind + 1]) : NULL;
        if (c)
            cmd_usage(c, stdout);
        else
            usage(stdout);
        return WSCTL_OK;
    }
    const struct wsctl_cmd *c = find_cmd(name);
    if (!c) {
        const char *guess = did_you_mean(name);
        if (guess)
            fprintf(stderr, "wsctl: unknown command '%s'; did you mean '%s'?\n", name, guess);
        else
            fprintf(stderr, "wsctl: unknown command '%s'\n", name);
        usage(stderr);
        return WSCTL_ERROR;
    }
    /* Commands parse with getopt_long from a fresh start: argv[0] is their name. */
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    optind = 0;
    int rc = c->fn(&w, sub_argc, sub_argv);
    if (fflush(stdout) != 0 && rc == WSCTL_OK)
        rc = WSCTL_ERROR;
    if (w.cfg_loaded)
        config_release(&w.cfg);
    return rc;
}

/* Options: only the common ones; positional arguments are left at argv[optind...]. */
int wsctl_common_only(struct wsctl *w, int argc, char **argv, bool *done)
{
    static const struct option opts[] = {WSCTL_COMMON_OPTS, {NULL, 0, NULL, 0}};
    int opt;
    *done = true;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, WSCTL_COMMON_SHORT, opts, NULL)) != -1) {
        if (opt == 'h')
            return wsctl_help(w, argv[0]);
        if (!wsctl_common_opt(w, opt, optarg))
            return wsctl_usage_error(w, argv[0], "unknown option or missing value: %s",
                                     argv[optind - 1]);
    }
    *done = false;
    return WSCTL_OK;
}
