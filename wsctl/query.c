/*
 * query.c -- wsctl's read-only commands: sessions, session, presence, history, stats. They open the
 * SQLite file with store_open(readonly) and never write, so they work while the server runs (WAL
 * readers do not block its writer) and when it is down.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/auth.h"
#include "store.h"
#include "wsctl.h"

#define SESSIONS_DEFAULT 50
#define SESSIONS_MAX     100000
#define HISTORY_DEFAULT  50
#define HISTORY_MAX      1000
#define BODY_COLUMNS     60

int wsctl_open_db(struct wsctl *w, struct store **st)
{
    const char *path = w->db_path;
    bool pg = false;
    if (!path) {
        if (wsctl_config(w) != 0)
            return -1;
        pg = config_store_is_pg(&w->cfg);
        path = config_store_location(&w->cfg);
    }
    struct stat sb;
    if (!pg && stat(path, &sb) != 0) {
        /* Read-only open would fail too; say it plainly rather than in SQLite's words. */
        if (errno == ENOENT && !w->db_path && !w->cfg.source)
            wsctl_errorf(w,
                         "database %s does not exist; no config file either (looked for "
                         "./wsproxy.ini and " CONFIG_SYSTEM_PATH "): use --config or --db",
                         path);
        else if (errno == ENOENT)
            wsctl_errorf(w, "database %s does not exist (%s%s; use --db or --config)", path,
                         w->db_path ? "from --db" : "[store] path of ",
                         w->db_path ? "" : w->cfg.source);
        else
            wsctl_errorf(w, "database %s: %s", path, strerror(errno));
        return -1;
    }
    struct store_opts o = {.synchronous = STORE_SYNC_NORMAL,
                           .busy_timeout_ms = 5000,
                           .readonly = true,
                           .backend = pg ? STORE_BACKEND_POSTGRESQL : STORE_BACKEND_SQLITE};
    char err[512];
    if (store_open(st, path, &o, err, sizeof(err)) != 0) {
        wsctl_errorf(w, "%s", err);
        return -1;
    }
    return 0;
}

int wsctl_print_json(struct wsctl *w, json_t *root)
{
    if (!root) {
        wsctl_errorf(w, "out of memory");
        return WSCTL_ERROR;
    }
    int rc = json_dumpf(root, w->out, JSON_INDENT(2) | JSON_ENCODE_ANY);
    fputc('\n', w->out);
    json_decref(root);
    return rc == 0 ? WSCTL_OK : WSCTL_ERROR;
}

static json_t *int_or_null(int64_t v)
{
    return v ? json_integer(v) : json_null();
}

/* Stored text may hold any byte (a User-Agent): JSON gets it as valid UTF-8, never dropped. */
static json_t *safe_string(const char *s)
{
    char *clean = fmt_safe(s);
    json_t *v = clean ? json_string(clean) : NULL;
    free(clean);
    return v ? v : json_string("");
}

static json_t *str_or_null(const char *s)
{
    return s ? safe_string(s) : json_null();
}

/* Key/value lines aligned on the value column, for one record or for stats. */
static void print_kv(FILE *out, const char *const *keys, const char *const *vals, size_t n)
{
    size_t width = 0;
    for (size_t i = 0; i < n; i++)
        if (fmt_width(keys[i]) > width)
            width = fmt_width(keys[i]);
    for (size_t i = 0; i < n; i++) {
        /* Control bytes in stored text must not reach the terminal (a C1 escape, ANSI codes). */
        char *v = fmt_safe(vals[i]);
        fprintf(out, "%s%*s  %s\n", keys[i], (int)(width - fmt_width(keys[i])), "", v ? v : "?");
        free(v);
    }
}

static int query_failed(struct wsctl *w, struct store *st, const char *what)
{
    wsctl_errorf(w, "%s: %s", what, store_last_error(st));
    store_close(st);
    return WSCTL_ERROR;
}

/* ---- sessions ---- */

static json_t *session_json(const struct store_session *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(s->id));
    json_object_set_new(o, "user", json_string(s->user));
    json_object_set_new(o, "state", json_string(s->ended ? "ended" : "active"));
    json_object_set_new(o, "remote_addr", safe_string(s->remote_addr));
    json_object_set_new(o, "user_agent", str_or_null(s->user_agent));
    json_object_set_new(o, "subprotocol", str_or_null(s->subprotocol));
    json_object_set_new(o, "connected_at", json_integer(s->connected_at));
    json_object_set_new(o, "last_seen_at", json_integer(s->last_seen_at));
    json_object_set_new(o, "ended_at", int_or_null(s->ended ? s->ended_at : 0));
    json_object_set_new(o, "end_reason", str_or_null(s->ended ? s->end_reason : NULL));
    if (s->node) /* cluster mode: the node that holds (held) it */
        json_object_set_new(o, "node", json_integer(s->node));
    return o;
}

static int64_t session_duration(const struct store_session *s, int64_t now)
{
    return (s->ended ? s->ended_at : now) - s->connected_at;
}

struct sessions_ctx {
    struct wsctl *w;
    json_t *list;
    struct table t;
    int n;
    int64_t last_id;
};

static int session_row(void *ctx, const struct store_session *s)
{
    struct sessions_ctx *sc = ctx;
    sc->n++;
    sc->last_id = s->id;
    if (sc->list) {
        json_array_append_new(sc->list, session_json(s));
        return 0;
    }
    char id[24], conn[32], dur[32], seen[32];
    snprintf(id, sizeof(id), "%lld", (long long)s->id);
    fmt_ago(conn, sizeof(conn), s->connected_at, sc->w->now_ms);
    fmt_duration(dur, sizeof(dur), session_duration(s, sc->w->now_ms));
    fmt_ago(seen, sizeof(seen), s->last_seen_at, sc->w->now_ms);
    const char *row[] = {id,  s->user, s->ended ? "ended" : "active",   conn,
                         dur, seen,    s->ended ? s->end_reason : NULL, s->remote_addr};
    table_add(&sc->t, row);
    return 0;
}

int cmd_sessions(struct wsctl *w, int argc, char **argv)
{
    static const struct option opts[] = {{"user", required_argument, NULL, 'u'},
                                         {"active", no_argument, NULL, 'a'},
                                         {"ended", no_argument, NULL, 'e'},
                                         {"since", required_argument, NULL, 's'},
                                         {"limit", required_argument, NULL, 'n'},
                                         {"before", required_argument, NULL, 'b'},
                                         WSCTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    struct store_session_filter f = {.state = STORE_SESSIONS_ANY, .limit = SESSIONS_DEFAULT};
    int64_t v;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "u:aes:n:b:" WSCTL_COMMON_SHORT, opts, NULL)) != -1) {
        switch (opt) {
        case 'u':
            if (!auth_user_valid(optarg, strlen(optarg)))
                return wsctl_usage_error(w, argv[0], "--user: '%s' is not a valid user id", optarg);
            f.user = optarg;
            break;
        case 'a':
        case 'e':
            if (f.state != STORE_SESSIONS_ANY)
                return wsctl_usage_error(w, argv[0], "--active and --ended exclude each other");
            f.state = opt == 'a' ? STORE_SESSIONS_ACTIVE : STORE_SESSIONS_ENDED;
            break;
        case 's':
            if (config_parse_duration(optarg, &v) != 0 || v <= 0)
                return wsctl_usage_error(
                    w, argv[0], "--since: '%s' is not a duration (30s, 15m, 1h, 7d)", optarg);
            f.since_ms = w->now_ms - v;
            break;
        case 'n':
            if (wsctl_parse_int(optarg, 1, SESSIONS_MAX, &v) != 0)
                return wsctl_usage_error(w, argv[0], "--limit: '%s' is not a number from 1 to %d",
                                         optarg, SESSIONS_MAX);
            f.limit = (int)v;
            break;
        case 'b':
            if (wsctl_parse_int(optarg, 1, INT64_MAX, &v) != 0)
                return wsctl_usage_error(w, argv[0], "--before: '%s' is not a session id", optarg);
            f.before_id = v;
            break;
        case 'h':
            return wsctl_help(w, argv[0]);
        default:
            if (!wsctl_common_opt(w, opt, optarg))
                return wsctl_usage_error(w, argv[0], "unknown option or missing value: %s",
                                         argv[optind - 1]);
        }
    }
    if (optind < argc)
        return wsctl_usage_error(w, argv[0], "unexpected argument '%s'", argv[optind]);

    struct store *st;
    if (wsctl_open_db(w, &st) != 0)
        return WSCTL_ERROR;
    static const char *const head[] = {"ID",       "USER", "STATE",  "CONNECTED",
                                       "DURATION", "SEEN", "REASON", "ADDRESS"};
    struct sessions_ctx sc = {.w = w};
    if (w->json)
        sc.list = json_array();
    else
        table_init(&sc.t, 8, head);
    if (store_session_list(st, &f, session_row, &sc) < 0) {
        json_decref(sc.list);
        table_release(&sc.t);
        return query_failed(w, st, "listing sessions");
    }
    store_close(st);
    bool more = sc.n == f.limit;
    if (w->json) {
        json_t *root = json_object();
        json_object_set_new(root, "sessions", sc.list);
        json_object_set_new(root, "next_before", int_or_null(more ? sc.last_id : 0));
        return wsctl_print_json(w, root);
    }
    if (sc.n == 0)
        fprintf(w->out, "no sessions\n");
    else
        table_print(&sc.t, w->out);
    bool oom = sc.t.oom;
    table_release(&sc.t);
    if (more)
        fprintf(w->err, "(more: --before %lld)\n", (long long)sc.last_id);
    return oom ? WSCTL_ERROR : WSCTL_OK;
}

/* ---- session ID ---- */

/* Parse the one positional ID of a command that takes only common options. */
static int one_id_arg(struct wsctl *w, int argc, char **argv, int64_t *id, bool *done, int *rc)
{
    static const struct option opts[] = {WSCTL_COMMON_OPTS, {NULL, 0, NULL, 0}};
    int opt;
    *done = true;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, WSCTL_COMMON_SHORT, opts, NULL)) != -1) {
        if (opt == 'h') {
            *rc = wsctl_help(w, argv[0]);
            return -1;
        }
        if (!wsctl_common_opt(w, opt, optarg)) {
            *rc = wsctl_usage_error(w, argv[0], "unknown option or missing value: %s",
                                    argv[optind - 1]);
            return -1;
        }
    }
    if (argc - optind != 1) {
        *rc = wsctl_usage_error(w, argv[0], argc - optind ? "one ID only" : "missing ID");
        return -1;
    }
    if (wsctl_parse_int(argv[optind], 1, INT64_MAX, id) != 0) {
        *rc = wsctl_usage_error(w, argv[0], "'%s' is not an id (a positive integer)", argv[optind]);
        return -1;
    }
    *done = false;
    return 0;
}

int cmd_session(struct wsctl *w, int argc, char **argv)
{
    int64_t id;
    bool done;
    int rc;
    if (one_id_arg(w, argc, argv, &id, &done, &rc) != 0)
        return rc;
    struct store *st;
    if (wsctl_open_db(w, &st) != 0)
        return WSCTL_ERROR;
    struct store_session s;
    rc = store_session_get(st, id, &s);
    if (rc == STORE_ERR_NOTFOUND) {
        store_close(st);
        wsctl_errorf(w, "no session %lld", (long long)id);
        return WSCTL_NOTFOUND;
    }
    if (rc != 0)
        return query_failed(w, st, "reading the session");
    if (w->json) {
        rc = wsctl_print_json(w, session_json(&s));
    } else {
        char idb[24], conn[96], seen[96], ended[96], dur[32], t[40], ago[32];
        snprintf(idb, sizeof(idb), "%lld", (long long)s.id);
        fmt_time(t, sizeof(t), s.connected_at);
        fmt_ago(ago, sizeof(ago), s.connected_at, w->now_ms);
        snprintf(conn, sizeof(conn), "%s (%s)", t, ago);
        fmt_time(t, sizeof(t), s.last_seen_at);
        fmt_ago(ago, sizeof(ago), s.last_seen_at, w->now_ms);
        snprintf(seen, sizeof(seen), "%s (%s)", t, ago);
        fmt_time(t, sizeof(t), s.ended ? s.ended_at : 0);
        fmt_ago(ago, sizeof(ago), s.ended ? s.ended_at : 0, w->now_ms);
        if (s.ended)
            snprintf(ended, sizeof(ended), "%s (%s)", t, ago);
        else
            snprintf(ended, sizeof(ended), "-");
        fmt_duration(dur, sizeof(dur), session_duration(&s, w->now_ms));
        static const char *const keys[] = {"id",         "user",        "state",     "remote_addr",
                                           "user_agent", "subprotocol", "connected", "last_seen",
                                           "ended",      "end_reason",  "duration"};
        const char *vals[] = {idb,
                              s.user,
                              s.ended ? "ended" : "active",
                              s.remote_addr,
                              s.user_agent ? s.user_agent : "-",
                              s.subprotocol ? s.subprotocol : "-",
                              conn,
                              seen,
                              ended,
                              s.ended && s.end_reason ? s.end_reason : "-",
                              dur};
        print_kv(w->out, keys, vals, sizeof(keys) / sizeof(keys[0]));
        rc = WSCTL_OK;
    }
    store_session_release(&s);
    store_close(st);
    return rc;
}

/* ---- presence USER... ---- */

int cmd_presence(struct wsctl *w, int argc, char **argv)
{
    bool done;
    int rc = wsctl_common_only(w, argc, argv, &done);
    if (done)
        return rc;
    if (optind >= argc)
        return wsctl_usage_error(w, argv[0], "name at least one user");
    for (int i = optind; i < argc; i++)
        if (!auth_user_valid(argv[i], strlen(argv[i])))
            return wsctl_usage_error(w, argv[0], "'%s' is not a valid user id", argv[i]);
    struct store *st;
    if (wsctl_open_db(w, &st) != 0)
        return WSCTL_ERROR;
    static const char *const head[] = {"USER", "STATE", "CONNECTIONS", "LAST_SEEN"};
    struct table t;
    json_t *list = w->json ? json_array() : NULL;
    table_init(&t, 4, head);
    rc = WSCTL_OK;
    for (int i = optind; i < argc; i++) {
        bool online = false;
        int conns = 0;
        int64_t last_seen = 0;
        int r = store_presence_get(st, argv[i], &online, &conns, &last_seen);
        if (r != 0 && r != STORE_ERR_NOTFOUND) {
            json_decref(list);
            table_release(&t);
            return query_failed(w, st, "reading presence");
        }
        const char *state = r == STORE_ERR_NOTFOUND ? "unknown" : online ? "online" : "offline";
        if (r == STORE_ERR_NOTFOUND)
            rc = WSCTL_NOTFOUND;
        if (list) {
            json_t *o = json_object();
            json_object_set_new(o, "user", json_string(argv[i]));
            json_object_set_new(o, "state", json_string(state));
            json_object_set_new(o, "connections", json_integer(conns));
            json_object_set_new(o, "last_seen", int_or_null(last_seen));
            json_array_append_new(list, o);
            continue;
        }
        char c[16], seen[32];
        snprintf(c, sizeof(c), "%d", conns);
        if (r == STORE_ERR_NOTFOUND)
            snprintf(seen, sizeof(seen), "never");
        else if (online)
            snprintf(seen, sizeof(seen), "now");
        else
            fmt_ago(seen, sizeof(seen), last_seen, w->now_ms);
        const char *row[] = {argv[i], state, c, seen};
        table_add(&t, row);
    }
    store_close(st);
    if (list) {
        json_t *root = json_object();
        json_object_set_new(root, "users", list);
        int prc = wsctl_print_json(w, root);
        table_release(&t);
        return prc != WSCTL_OK ? prc : rc;
    }
    table_print(&t, w->out);
    if (t.oom)
        rc = WSCTL_ERROR;
    table_release(&t);
    return rc;
}

/* ---- history ---- */

struct history_ctx {
    struct wsctl *w;
    json_t *list; /* every message, newest first (JSON keeps the store's order, like the API) */
};

static json_t *msg_json(const struct store_msg *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(m->id));
    json_object_set_new(o, "from", json_string(m->sender));
    if (m->to_user)
        json_object_set_new(o, "to", json_string(m->to_user));
    else
        json_object_set_new(o, "room", json_string(m->room));
    json_t *body = json_loads(m->body, JSON_DECODE_ANY, NULL);
    json_object_set_new(o, "body", body ? body : json_string(m->body));
    json_object_set_new(o, "ts", json_integer(m->created_at));
    json_object_set_new(o, "cid", str_or_null(m->cid));
    return o;
}

static int history_row(void *ctx, const struct store_msg *m)
{
    struct history_ctx *hc = ctx;
    return json_array_append_new(hc->list, msg_json(m)) == 0 ? 0 : 1;
}

int cmd_history(struct wsctl *w, int argc, char **argv)
{
    static const struct option opts[] = {{"with", required_argument, NULL, 'w'},
                                         {"user", required_argument, NULL, 'u'},
                                         {"room", required_argument, NULL, 'r'},
                                         {"limit", required_argument, NULL, 'n'},
                                         {"before", required_argument, NULL, 'b'},
                                         WSCTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    const char *with = NULL, *user = NULL, *room = NULL;
    int64_t limit = HISTORY_DEFAULT, before = 0;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "w:u:r:n:b:" WSCTL_COMMON_SHORT, opts, NULL)) != -1) {
        switch (opt) {
        case 'w':
        case 'u':
        case 'r':
            if (!auth_user_valid(optarg, strlen(optarg)))
                return wsctl_usage_error(w, argv[0], "'%s' is not a valid name", optarg);
            *(opt == 'w' ? &with : opt == 'u' ? &user : &room) = optarg;
            break;
        case 'n':
            if (wsctl_parse_int(optarg, 1, HISTORY_MAX, &limit) != 0)
                return wsctl_usage_error(w, argv[0], "--limit: '%s' is not a number from 1 to %d",
                                         optarg, HISTORY_MAX);
            break;
        case 'b':
            if (wsctl_parse_int(optarg, 1, INT64_MAX, &before) != 0)
                return wsctl_usage_error(w, argv[0], "--before: '%s' is not a message id", optarg);
            break;
        case 'h':
            return wsctl_help(w, argv[0]);
        default:
            if (!wsctl_common_opt(w, opt, optarg))
                return wsctl_usage_error(w, argv[0], "unknown option or missing value: %s",
                                         argv[optind - 1]);
        }
    }
    if (optind < argc)
        return wsctl_usage_error(w, argv[0], "unexpected argument '%s'", argv[optind]);
    if (room ? (with || user) : !(with && user))
        return wsctl_usage_error(w, argv[0], "give --with and --user, or --room");

    struct store *st;
    if (wsctl_open_db(w, &st) != 0)
        return WSCTL_ERROR;
    struct history_ctx hc = {w, json_array()};
    bool more = false;
    int rc =
        room ? store_history_room(st, room, before, (int)limit, history_row, &hc, &more)
             : store_history_direct(st, user, with, before, (int)limit, history_row, &hc, &more);
    if (rc != 0) {
        json_decref(hc.list);
        return query_failed(w, st, "reading history");
    }
    store_close(st);
    size_t n = json_array_size(hc.list);
    if (w->json) {
        json_t *root = json_object();
        json_object_set_new(root, "items", hc.list);
        json_object_set_new(root, "more", json_boolean(more));
        return wsctl_print_json(w, root);
    }
    if (n == 0) {
        fprintf(w->out, "no messages\n");
        json_decref(hc.list);
        return WSCTL_OK;
    }
    static const char *const head[] = {"ID", "SENT", "FROM", "TO", "BODY"};
    struct table t;
    table_init(&t, 5, head);
    /* People read a conversation top-down: oldest first. */
    for (size_t i = n; i-- > 0;) {
        json_t *m = json_array_get(hc.list, i);
        char id[24], sent[32], to[80], body[256];
        snprintf(id, sizeof(id), "%lld", (long long)json_integer_value(json_object_get(m, "id")));
        fmt_ago(sent, sizeof(sent), json_integer_value(json_object_get(m, "ts")), w->now_ms);
        const char *r = json_string_value(json_object_get(m, "room"));
        if (r)
            snprintf(to, sizeof(to), "#%s", r);
        else
            snprintf(to, sizeof(to), "%s", json_string_value(json_object_get(m, "to")));
        char *text = json_dumps(json_object_get(m, "body"), JSON_COMPACT | JSON_ENCODE_ANY);
        fmt_clip(body, sizeof(body), text ? text : "?", BODY_COLUMNS);
        free(text);
        const char *row[] = {id, sent, json_string_value(json_object_get(m, "from")), to, body};
        table_add(&t, row);
    }
    table_print(&t, w->out);
    if (more)
        fprintf(
            w->err, "(older: --before %lld)\n",
            (long long)json_integer_value(json_object_get(json_array_get(hc.list, n - 1), "id")));
    bool oom = t.oom;
    table_release(&t);
    json_decref(hc.list);
    return oom ? WSCTL_ERROR : WSCTL_OK;
}

/* ---- stats ---- */

int cmd_stats(struct wsctl *w, int argc, char **argv)
{
    bool done;
    int rc = wsctl_common_only(w, argc, argv, &done);
    if (done)
        return rc;
    if (optind < argc)
        return wsctl_usage_error(w, argv[0], "unexpected argument '%s'", argv[optind]);
    struct store *st;
    if (wsctl_open_db(w, &st) != 0)
        return WSCTL_ERROR;
    struct store_stats s;
    if (store_stats(st, &s) != 0)
        return query_failed(w, st, "reading stats");
    int version = store_schema_version(st);
    store_close(st);
    bool pg = !w->db_path && config_store_is_pg(&w->cfg);
    /* A connection string may hold a password: name the backend, not the string. */
    const char *path = w->db_path ? w->db_path : pg ? "postgresql" : w->cfg.store_path;
    struct stat sb;
    uint64_t size = !pg && stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    if (w->json) {
        json_t *o = json_object();
        json_object_set_new(o, "sessions_active", json_integer(s.sessions_active));
        json_object_set_new(o, "sessions_total", json_integer(s.sessions_total));
        json_object_set_new(o, "users_online", json_integer(s.users_online));
        json_object_set_new(o, "messages", json_integer(s.messages));
        json_object_set_new(o, "pending_direct", json_integer(s.pending_direct));
        json_object_set_new(o, "rooms", json_integer(s.rooms));
        json_object_set_new(o, "schema_version", json_integer(version));
        json_object_set_new(o, "database", json_string(path));
        json_object_set_new(o, "database_bytes", json_integer((json_int_t)size));
        return wsctl_print_json(w, o);
    }
    char v[8][160], sz[32];
    snprintf(v[0], sizeof(v[0]), "%lld", (long long)s.sessions_active);
    snprintf(v[1], sizeof(v[1]), "%lld", (long long)s.sessions_total);
    snprintf(v[2], sizeof(v[2]), "%lld", (long long)s.users_online);
    snprintf(v[3], sizeof(v[3]), "%lld", (long long)s.messages);
    snprintf(v[4], sizeof(v[4]), "%lld", (long long)s.pending_direct);
    snprintf(v[5], sizeof(v[5]), "%lld", (long long)s.rooms);
    snprintf(v[6], sizeof(v[6]), "%d", version);
    fmt_bytes(sz, sizeof(sz), size);
    if (pg)
        snprintf(v[7], sizeof(v[7]), "postgresql ([store] dsn)");
    else
        snprintf(v[7], sizeof(v[7]), "%.100s (%s)", path, sz);
    static const char *const keys[] = {"sessions active", "sessions total", "users online",
                                       "messages",        "pending direct", "rooms",
                                       "schema version",  "database"};
    const char *vals[] = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
    print_kv(w->out, keys, vals, 8);
    return WSCTL_OK;
}

/* ---- backup FILE: an online, consistent copy (SQLite's backup API, in store/) ---- */

int cmd_backup(struct wsctl *w, int argc, char **argv)
{
    bool done;
    int rc = wsctl_common_only(w, argc, argv, &done);
    if (done)
        return rc;
    if (argc - optind != 1)
        return wsctl_usage_error(w, argv[0], argc - optind ? "one FILE only" : "missing FILE");
    const char *dest = argv[optind];
    struct store *st;
    if (wsctl_open_db(w, &st) != 0)
        return WSCTL_ERROR;
    /* Never over an existing file (an older backup, or the database itself). */
    int fd = open(dest, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        wsctl_errorf(w, "%s: %s%s", dest, strerror(errno),
                     errno == EEXIST ? " (wsctl backup never overwrites a file)" : "");
        store_close(st);
        return WSCTL_ERROR;
    }
    close(fd);
    int64_t pages = 0;
    if (store_backup(st, dest, &pages) != 0) {
        wsctl_errorf(w, "%s", store_last_error(st));
        store_close(st);
        unlink(dest);
        return WSCTL_ERROR;
    }
    store_close(st);
    const char *src = w->db_path ? w->db_path : w->cfg.store_path;
    struct stat sb;
    uint64_t size = stat(dest, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    if (w->json) {
        json_t *o = json_pack("{s:s, s:s, s:I, s:I}", "database", src, "backup", dest, "pages",
                              (json_int_t)pages, "bytes", (json_int_t)size);
        return wsctl_print_json(w, o);
    }
    char sz[32];
    fmt_bytes(sz, sizeof(sz), size);
    fprintf(w->out, "backed up %s to %s (%s)\n", src, dest, sz);
    return WSCTL_OK;
}
