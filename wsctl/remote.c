/*
 * remote.c -- wsctl's commands that change a running server: kick and push, through the HTTP API
 * (the server owns its connections and the write side of the database; wsctl never writes it).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "proto/auth.h"
#include "wsctl.h"

#define STDIN_BODY_MAX (16u << 20)

/* Where the API is and which key to use: --api/--key, $WSCTL_API_KEY, then the config file. */
static int api_target(struct wsctl *w, char *url, size_t cap, const char **key, bool need_key)
{
    *key = w->api_key ? w->api_key : getenv("WSCTL_API_KEY");
    if (*key && !**key)
        *key = NULL;
    if ((!w->api_url || (!*key && need_key)) && wsctl_config(w) != 0)
        return -1;
    if (w->api_url) {
        snprintf(url, cap, "%s", w->api_url);
    } else {
        char host[256];
        int port;
        if (!w->cfg.api_listen[0]) {
            wsctl_errorf(w, "the API is disabled ([api] listen is empty); pass --api URL");
            return -1;
        }
        if (config_split_hostport(w->cfg.api_listen, host, sizeof(host), &port) != 0) {
            wsctl_errorf(w, "[api] listen: cannot parse '%s'", w->cfg.api_listen);
            return -1;
        }
        /* A wildcard bind is reached on loopback. */
        if (!host[0] || strcmp(host, "0.0.0.0") == 0)
            snprintf(host, sizeof(host), "127.0.0.1");
        else if (strcmp(host, "::") == 0)
            snprintf(host, sizeof(host), "::1");
        bool v6 = strchr(host, ':') != NULL;
        snprintf(url, cap, "http://%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
    }
    if (!*key && w->cfg_loaded && w->cfg.api_keys.n > 0)
        *key = w->cfg.api_keys.items[0];
    if (!*key && need_key) {
        wsctl_errorf(w,
                     "no API key: pass --key, set WSCTL_API_KEY or add [api] keys to the config");
        return -1;
    }
    return 0;
}

/* Say what an error answer said: {"error":{"code","message"}} when it is ours, else the status. */
void wsctl_api_error(struct wsctl *w, const char *url, const struct http_reply *r)
{
    json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
    json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (code && msg)
        wsctl_errorf(w, "API %s answered %d %s: %s", url, r->status, code, msg);
    else
        wsctl_errorf(w, "API %s answered %d", url, r->status);
    json_decref(j);
}

int wsctl_api_call(struct wsctl *w, const char *method, const char *path, const char *body,
                   struct http_reply *r, char *url, size_t cap)
{
    const char *key;
    char err[512];
    if (api_target(w, url, cap, &key, true) != 0)
        return -1;
    if (wsctl_http_request(url, key, method, path, body, r, err, sizeof(err)) != 0) {
        wsctl_errorf(w, "%s", err);
        return -1;
    }
    return 0;
}

/* ---- kick ID, kick --user USER ---- */

/*
 * Every live session of user: the active ones as the API lists them (the server's view, the one
 * the DELETEs act on), then one DELETE each. A session that ends between the list and its DELETE
 * (404 not_live) is not counted and not an error.
 */
static int kick_user(struct wsctl *w, const char *user)
{
    char enc[3 * AUTH_USER_MAX + 1], path[sizeof(enc) + 96], url[300];
    wsctl_pct_encode(enc, sizeof(enc), user);
    char *safe = fmt_safe(user);
    const char *who = safe ? safe : "?";
    json_t *ids = json_array();
    int64_t before = 0;
    int rc = WSCTL_OK;
    do { /* pages of up to 1000, newest first */
        int n = snprintf(path, sizeof(path), "/api/v1/sessions?user=%s&state=active&limit=1000", enc);
        if (before)
            snprintf(path + n, sizeof(path) - (size_t)n, "&before=%lld", (long long)before);
        struct http_reply r;
        if (wsctl_api_call(w, "GET", path, NULL, &r, url, sizeof(url)) != 0) {
            rc = WSCTL_ERROR;
            break;
        }
        json_t *j = r.status == 200 ? json_loadb(r.body, r.body_len, 0, NULL) : NULL;
        json_t *list = json_object_get(j, "sessions");
        if (r.status != 200 || !json_is_array(list)) {
            if (r.status != 200)
                wsctl_api_error(w, url, &r);
            else
                wsctl_errorf(w, "API %s answered something that is not a session list", url);
            json_decref(j);
            free(r.body);
            rc = WSCTL_ERROR;
            break;
        }
        size_t i;
        json_t *s;
        json_array_foreach(list, i, s) json_array_append(ids, json_object_get(s, "id"));
        before = json_integer_value(json_object_get(j, "next_before"));
        json_decref(j);
        free(r.body);
    } while (before);
    if (rc != WSCTL_OK) {
        json_decref(ids);
        free(safe);
        return rc;
    }
    json_t *kicked = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        snprintf(path, sizeof(path), "/api/v1/sessions/%lld", (long long)json_integer_value(v));
        struct http_reply r;
        if (wsctl_api_call(w, "DELETE", path, NULL, &r, url, sizeof(url)) != 0) {
            rc = WSCTL_ERROR;
            break;
        }
        if (r.status == 204) {
            json_array_append(kicked, v);
        } else if (r.status != 404) {
            wsctl_api_error(w, url, &r);
            rc = WSCTL_ERROR;
        }
        free(r.body);
    }
    size_t n = json_array_size(kicked);
    if (w->json) {
        json_t *o = json_object();
        json_object_set_new(o, "user", json_string(who));
        json_object_set_new(o, "kicked", kicked);
        json_dumpf(o, w->out, JSON_COMPACT);
        fputc('\n', w->out);
        json_decref(o);
    } else {
        if (n)
            fprintf(w->out, "kicked %zu session%s of %s\n", n, n == 1 ? "" : "s", who);
        json_decref(kicked);
    }
    if (rc == WSCTL_OK && n == 0) {
        wsctl_errorf(w, "%s has no live session", who);
        rc = WSCTL_NOTFOUND;
    }
    json_decref(ids);
    free(safe);
    return rc;
}

int cmd_kick(struct wsctl *w, int argc, char **argv)
{
    static const struct option opts[] = {
        {"user", required_argument, NULL, 'u'}, WSCTL_COMMON_OPTS, {NULL, 0, NULL, 0}};
    const char *user = NULL;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "u:" WSCTL_COMMON_SHORT, opts, NULL)) != -1) {
        if (opt == 'h')
            return wsctl_help(w, argv[0]);
        if (opt == 'u') {
            if (!auth_user_valid(optarg, strlen(optarg)))
                return wsctl_usage_error(w, argv[0], "--user: '%s' is not a valid user id", optarg);
            user = optarg;
            continue;
        }
        if (!wsctl_common_opt(w, opt, optarg))
            return wsctl_usage_error(w, argv[0], "unknown option or missing value: %s",
                                     argv[optind - 1]);
    }
    if (user) {
        if (optind < argc)
            return wsctl_usage_error(w, argv[0], "give an ID or --user, not both");
        return kick_user(w, user);
    }
    int64_t id;
    if (argc - optind != 1)
        return wsctl_usage_error(w, argv[0], argc - optind ? "one ID only" : "missing ID");
    if (wsctl_parse_int(argv[optind], 1, INT64_MAX, &id) != 0)
        return wsctl_usage_error(w, argv[0], "'%s' is not a session id", argv[optind]);
    char path[64], url[300];
    snprintf(path, sizeof(path), "/api/v1/sessions/%lld", (long long)id);
    struct http_reply r;
    if (wsctl_api_call(w, "DELETE", path, NULL, &r, url, sizeof(url)) != 0)
        return WSCTL_ERROR;
    int rc;
    if (r.status == 204) {
        if (w->json)
            fprintf(w->out, "{\"kicked\":%lld}\n", (long long)id);
        else
            fprintf(w->out, "session %lld kicked\n", (long long)id);
        rc = WSCTL_OK;
    } else {
        wsctl_api_error(w, url, &r);
        rc = r.status == 404 ? WSCTL_NOTFOUND : WSCTL_ERROR;
    }
    free(r.body);
    return rc;
}

/* ---- push ---- */

static char *read_stdin(struct wsctl *w)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        wsctl_errorf(w, "out of memory");
        return NULL;
    }
    for (;;) {
        if (len + 1 == cap) {
            char *grown = cap < STDIN_BODY_MAX ? realloc(buf, cap * 2) : NULL;
            if (!grown) {
                free(buf);
                wsctl_errorf(w, "standard input is too large (or out of memory)");
                return NULL;
            }
            buf = grown;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, stdin);
        len += n;
        if (n == 0)
            break;
    }
    buf[len] = '\0';
    return buf;
}

int cmd_push(struct wsctl *w, int argc, char **argv)
{
    static const struct option opts[] = {{"to", required_argument, NULL, 't'},
                                         {"room", required_argument, NULL, 'r'},
                                         {"broadcast", no_argument, NULL, 'B'},
                                         {"from", required_argument, NULL, 'f'},
                                         {"cid", required_argument, NULL, 'i'},
                                         {"text", no_argument, NULL, 'T'},
                                         WSCTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    const char *to = NULL, *room = NULL, *from = NULL, *cid = NULL;
    bool broadcast = false, text = false;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "t:r:Bf:i:T" WSCTL_COMMON_SHORT, opts, NULL)) != -1) {
        switch (opt) {
        case 't':
        case 'r':
        case 'f':
            if (!auth_user_valid(optarg, strlen(optarg)))
                return wsctl_usage_error(w, argv[0], "'%s' is not a valid name", optarg);
            *(opt == 't' ? &to : opt == 'r' ? &room : &from) = optarg;
            break;
        case 'B':
            broadcast = true;
            break;
        case 'i':
            if (!optarg[0] || strlen(optarg) > 128)
                return wsctl_usage_error(w, argv[0], "--cid must be 1-128 bytes");
            cid = optarg;
            break;
        case 'T':
            text = true;
            break;
        case 'h':
            return wsctl_help(w, argv[0]);
        default:
            if (!wsctl_common_opt(w, opt, optarg))
                return wsctl_usage_error(w, argv[0], "unknown option or missing value: %s",
                                         argv[optind - 1]);
        }
    }
    if ((to != NULL) + (room != NULL) + broadcast != 1)
        return wsctl_usage_error(w, argv[0], "give exactly one of --to, --room and --broadcast");
    if (argc - optind != 1)
        return wsctl_usage_error(w, argv[0],
                                 argc - optind ? "one BODY only (quote it)" : "missing BODY");

    const char *arg = argv[optind];
    char *in = strcmp(arg, "-") == 0 ? read_stdin(w) : NULL;
    if (strcmp(arg, "-") == 0 && !in)
        return WSCTL_ERROR;
    const char *src = in ? in : arg;
    json_t *body = text ? NULL : json_loads(src, JSON_DECODE_ANY, NULL);
    if (!body)
        body = json_string(src); /* not JSON: a plain text message */
    free(in);
    if (!body)
        return wsctl_usage_error(w, argv[0], "BODY is not valid UTF-8 text");
    json_t *req = json_object();
    if (to)
        json_object_set_new(req, "to", json_string(to));
    else if (room)
        json_object_set_new(req, "room", json_string(room));
    else
        json_object_set_new(req, "broadcast", json_true());
    json_object_set_new(req, "body", body);
    if (from)
        json_object_set_new(req, "from", json_string(from));
    if (cid)
        json_object_set_new(req, "cid", json_string(cid));
    char *payload = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!payload) {
        wsctl_errorf(w, "out of memory");
        return WSCTL_ERROR;
    }
    struct http_reply r;
    char url[300];
    int rc = wsctl_api_call(w, "POST", "/api/v1/push", payload, &r, url, sizeof(url));
    free(payload);
    if (rc != 0)
        return WSCTL_ERROR;
    if (r.status != 202) {
        wsctl_api_error(w, url, &r);
        free(r.body);
        return WSCTL_ERROR;
    }
    if (w->json) {
        fprintf(w->out, "%s\n", r.body);
    } else {
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        json_int_t live = json_integer_value(json_object_get(j, "live"));
        json_int_t id = json_integer_value(json_object_get(j, "id"));
        const char *s = live == 1 ? "" : "s";
        if (broadcast)
            fprintf(w->out, "broadcast to %lld live connection%s\n", (long long)live, s);
        else if (json_is_true(json_object_get(j, "duplicate")))
            fprintf(w->out, "already pushed as message %lld (same cid); nothing stored\n",
                    (long long)id);
        else if (room && json_integer_value(json_object_get(j, "members")) == 0 &&
                 json_object_get(j, "members"))
            fprintf(w->out, "message %lld stored; room %s has no members, nobody will get it\n",
                    (long long)id, room);
        else
            fprintf(w->out, "message %lld stored, delivered live to %lld connection%s\n",
                    (long long)id, (long long)live, s);
        json_decref(j);
    }
    free(r.body);
    return WSCTL_OK;
}

/* ---- status: up or down, from /healthz and /metrics (no key needed) ---- */

/* The value of a sample "NAME VALUE" or "NAME{...} VALUE" in Prometheus text; -1 when absent. */
static double metric_value(const char *text, const char *name, char *label, size_t label_cap)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, n) != 0 || (p[n] != ' ' && p[n] != '{'))
            continue;
        const char *v = p + n;
        if (*v == '{') {
            const char *q = strchr(v, '"'), *e = q ? strchr(q + 1, '"') : NULL;
            if (label && q && e && (size_t)(e - q - 1) < label_cap)
                snprintf(label, label_cap, "%.*s", (int)(e - q - 1), q + 1);
            v = strchr(v, '}');
            if (!v)
                return -1;
            v++;
        }
        return strtod(v, NULL);
    }
    return -1;
}

int cmd_status(struct wsctl *w, int argc, char **argv)
{
    bool done;
    int rc = wsctl_common_only(w, argc, argv, &done);
    if (done)
        return rc;
    if (optind < argc)
        return wsctl_usage_error(w, argv[0], "unexpected argument '%s'", argv[optind]);
    char url[300], err[512];
    const char *key;
    if (api_target(w, url, sizeof(url), &key, false) != 0)
        return WSCTL_ERROR;
    /* The listeners as configured (the API does not report them). */
    bool have_cfg = w->cfg_loaded || wsctl_config(w) == 0;
    const char *listen = have_cfg ? w->cfg.listen : NULL;
    bool tls = have_cfg && w->cfg.tls_cert[0];

    struct http_reply h, m = {0};
    const char *state = "up", *why = NULL;
    char reason[600] = "";
    if (wsctl_http_request(url, NULL, "GET", "/healthz", NULL, &h, err, sizeof(err)) != 0) {
        state = "down";
        snprintf(reason, sizeof(reason), "%s", err);
        why = reason;
    } else {
        if (h.status != 200) {
            state = "failing";
            snprintf(reason, sizeof(reason), "/healthz answered %d", h.status);
            why = reason;
        }
        free(h.body);
        if (wsctl_http_request(url, NULL, "GET", "/metrics", NULL, &m, err, sizeof(err)) != 0 ||
            m.status != 200) {
            free(m.body);
            m.body = NULL;
        }
    }
    char version[64] = "";
    double start = -1, conns = -1, ws = -1, users = -1;
    if (m.body) {
        metric_value(m.body, "wsproxy_build_info", version, sizeof(version));
        start = metric_value(m.body, "wsproxy_start_time_seconds", NULL, 0);
        conns = metric_value(m.body, "wsproxy_connections_open", NULL, 0);
        ws = metric_value(m.body, "wsproxy_websockets_open", NULL, 0);
        users = metric_value(m.body, "wsproxy_users_online", NULL, 0);
    }
    free(m.body);
    int64_t uptime_ms = start > 0 ? w->now_ms - (int64_t)start * 1000 : -1;
    if (w->json) {
        json_t *o = json_object();
        json_object_set_new(o, "state", json_string(state));
        json_object_set_new(o, "reason", why ? json_string(why) : json_null());
        json_object_set_new(o, "api", json_string(url));
        json_object_set_new(o, "listen", listen ? json_string(listen) : json_null());
        json_object_set_new(o, "tls", json_boolean(tls));
        json_object_set_new(o, "version", version[0] ? json_string(version) : json_null());
        json_object_set_new(o, "uptime_ms", uptime_ms >= 0 ? json_integer(uptime_ms) : json_null());
        json_object_set_new(o, "connections", conns >= 0 ? json_integer((json_int_t)conns) : json_null());
        json_object_set_new(o, "websockets", ws >= 0 ? json_integer((json_int_t)ws) : json_null());
        json_object_set_new(o, "users_online", users >= 0 ? json_integer((json_int_t)users) : json_null());
        json_dumpf(o, w->out, JSON_COMPACT);
        fputc('\n', w->out);
        json_decref(o);
    } else {
        fprintf(w->out, "state         %s%s%s%s\n", state, why ? " (" : "", why ? why : "", why ? ")" : "");
        fprintf(w->out, "api           %s\n", url);
        if (listen)
            fprintf(w->out, "listen        %s%s (configured)\n", listen, tls ? " TLS" : "");
        if (version[0])
            fprintf(w->out, "version       %s\n", version);
        if (uptime_ms >= 0) {
            char d[32], t[40];
            fmt_duration(d, sizeof(d), uptime_ms);
            fmt_time(t, sizeof(t), (int64_t)start * 1000);
            fprintf(w->out, "uptime        %s (since %s)\n", d, t);
        }
        if (conns >= 0)
            fprintf(w->out, "connections   %.0f\nwebsockets    %.0f\nusers online  %.0f\n", conns, ws,
                    users);
    }
    return strcmp(state, "up") == 0 ? WSCTL_OK : WSCTL_NOTFOUND;
}

/* ---- message ID: the receipt ---- */

int cmd_message(struct wsctl *w, int argc, char **argv)
{
    bool done;
    int rc = wsctl_common_only(w, argc, argv, &done);
    if (done)
        return rc;
    int64_t id;
    if (argc - optind != 1)
        return wsctl_usage_error(w, argv[0], argc - optind ? "one ID only" : "missing ID");
    if (wsctl_parse_int(argv[optind], 1, INT64_MAX, &id) != 0)
        return wsctl_usage_error(w, argv[0], "'%s' is not a message id", argv[optind]);
    char path[64], url[300];
    snprintf(path, sizeof(path), "/api/v1/messages/%lld", (long long)id);
    struct http_reply r;
    if (wsctl_api_call(w, "GET", path, NULL, &r, url, sizeof(url)) != 0)
        return WSCTL_ERROR;
    if (r.status != 200) {
        wsctl_api_error(w, url, &r);
        free(r.body);
        return r.status == 404 ? WSCTL_NOTFOUND : WSCTL_ERROR;
    }
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    free(r.body);
    if (!j) {
        wsctl_errorf(w, "API %s answered something that is not JSON", url);
        return WSCTL_ERROR;
    }
    if (w->json) {
        json_dumpf(j, w->out, JSON_INDENT(2));
        fputc('\n', w->out);
        json_decref(j);
        return WSCTL_OK;
    }
    const char *to = json_string_value(json_object_get(j, "to"));
    const char *room = json_string_value(json_object_get(j, "room"));
    const char *cid = json_string_value(json_object_get(j, "cid"));
    char *body = json_dumps(json_object_get(j, "body"), JSON_COMPACT | JSON_ENCODE_ANY);
    char sent[64], ago[32], delivered[96] = "-", by[32] = "-";
    int64_t ts = json_integer_value(json_object_get(j, "ts"));
    fmt_time(sent, sizeof(sent), ts);
    fmt_ago(ago, sizeof(ago), ts, w->now_ms);
    json_int_t dat = json_integer_value(json_object_get(j, "delivered_at"));
    if (dat) {
        char t[40], a[32];
        fmt_time(t, sizeof(t), dat);
        fmt_ago(a, sizeof(a), dat, w->now_ms);
        snprintf(delivered, sizeof(delivered), "%s (%s)", t, a);
    }
    json_int_t dby = json_integer_value(json_object_get(j, "delivered_by"));
    if (dby)
        snprintf(by, sizeof(by), "session %lld", (long long)dby);
    char target[80];
    snprintf(target, sizeof(target), "%s%s", room ? "#" : "", room ? room : to ? to : "?");
    const char *state = json_string_value(json_object_get(j, "state"));
    char *cells[] = {fmt_safe(json_string_value(json_object_get(j, "from"))), fmt_safe(target),
                     fmt_safe(cid ? cid : "-"), fmt_safe(body ? body : "?")};
    fprintf(w->out, "id            %lld\n", (long long)json_integer_value(json_object_get(j, "id")));
    fprintf(w->out, "from          %s\nto            %s\n", cells[0] ? cells[0] : "?",
            cells[1] ? cells[1] : "?");
    fprintf(w->out, "state         %s%s\n", state ? state : "?",
            room ? " (room messages have no per-message receipt)" : "");
    fprintf(w->out, "sent          %s (%s)\ndelivered     %s\ndelivered by  %s\n", sent, ago,
            delivered, by);
    fprintf(w->out, "cid           %s\nbody          %s\n", cells[2] ? cells[2] : "?",
            cells[3] ? cells[3] : "?");
    for (size_t i = 0; i < 4; i++)
        free(cells[i]);
    free(body);
    json_decref(j);
    return WSCTL_OK;
}

/* ---- events [replay (ID | --all)] ---- */

static int events_show(struct wsctl *w, int64_t after, int64_t limit)
{
    char path[96], url[300];
    struct http_reply c, d;
    if (wsctl_api_call(w, "GET", "/api/v1/events", NULL, &c, url, sizeof(url)) != 0)
        return WSCTL_ERROR;
    if (c.status != 200) {
        wsctl_api_error(w, url, &c);
        free(c.body);
        return WSCTL_ERROR;
    }
    snprintf(path, sizeof(path), "/api/v1/events/dead?after=%lld&limit=%lld", (long long)after,
             (long long)limit);
    if (wsctl_api_call(w, "GET", path, NULL, &d, url, sizeof(url)) != 0) {
        free(c.body);
        return WSCTL_ERROR;
    }
    int rc = WSCTL_OK;
    json_t *cj = json_loadb(c.body, c.body_len, 0, NULL), *dj = json_loadb(d.body, d.body_len, 0, NULL);
    if (d.status != 200 || !cj || !dj) {
        wsctl_api_error(w, url, &d);
        rc = WSCTL_ERROR;
    } else if (w->json) {
        json_object_set(cj, "dead_events", json_object_get(dj, "events"));
        json_object_set(cj, "next_after", json_object_get(dj, "next_after"));
        char *s = json_dumps(cj, JSON_COMPACT);
        fprintf(w->out, "%s\n", s ? s : "{}");
        free(s);
    } else {
        fprintf(w->out,
                "events %s: %lld queued, %lld dead, %lld delivered since the server started\n",
                json_is_true(json_object_get(cj, "enabled")) ? "on" : "off",
                (long long)json_integer_value(json_object_get(cj, "queued")),
                (long long)json_integer_value(json_object_get(cj, "dead")),
                (long long)json_integer_value(json_object_get(cj, "delivered")));
        json_t *list = json_object_get(dj, "events"), *e;
        size_t i;
        if (json_array_size(list) > 0) {
            static const char *const head[] = {"ID", "TYPE", "USER", "TIME", "ATTEMPTS", "LAST ERROR"};
            struct table t;
            table_init(&t, 6, head);
            json_array_foreach(list, i, e)
            {
                char id[24], tm[40], at[16], user[80], err[80];
                snprintf(id, sizeof(id), "%lld", (long long)json_integer_value(json_object_get(e, "id")));
                fmt_time(tm, sizeof(tm), json_integer_value(json_object_get(e, "time_ms")));
                snprintf(at, sizeof(at), "%lld",
                         (long long)json_integer_value(json_object_get(e, "attempts")));
                fmt_clip(user, sizeof(user), json_string_value(json_object_get(e, "user")), 24);
                const char *le = json_string_value(json_object_get(e, "last_error"));
                fmt_clip(err, sizeof(err), le ? le : "-", 40);
                const char *row[] = {id, json_string_value(json_object_get(e, "type")), user, tm, at,
                                     err};
                table_add(&t, row);
            }
            table_print(&t, w->out);
            table_release(&t);
        }
        json_t *next = json_object_get(dj, "next_after");
        if (json_is_integer(next))
            fprintf(w->out, "more: wsctl events --after %lld\n", (long long)json_integer_value(next));
    }
    json_decref(cj);
    json_decref(dj);
    free(c.body);
    free(d.body);
    return rc;
}

int cmd_events(struct wsctl *w, int argc, char **argv)
{
    static const struct option opts[] = {WSCTL_COMMON_OPTS,
                                         {"all", no_argument, NULL, 'A'},
                                         {"after", required_argument, NULL, 'a'},
                                         {"limit", required_argument, NULL, 'n'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    bool all = false;
    int64_t after = 0, limit = 50;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, WSCTL_COMMON_SHORT "Aa:n:", opts, NULL)) != -1) {
        if (opt == 'h')
            return wsctl_help(w, argv[0]);
        if (opt == 'A')
            all = true;
        else if (opt == 'a' && wsctl_parse_int(optarg, 0, INT64_MAX, &after) == 0)
            ;
        else if (opt == 'n' && wsctl_parse_int(optarg, 1, 1000, &limit) == 0)
            ;
        else if (!wsctl_common_opt(w, opt, optarg))
            return wsctl_usage_error(w, argv[0], "unknown option or bad value: %s",
                                     argv[optind - 1]);
    }
    if (optind == argc) {
        if (all)
            return wsctl_usage_error(w, argv[0], "--all goes with replay");
        return events_show(w, after, limit);
    }
    if (strcmp(argv[optind], "replay") != 0)
        return wsctl_usage_error(w, argv[0], "unknown subcommand '%s'", argv[optind]);
    int64_t id = 0;
    int rest = argc - optind - 1;
    if (all == (rest == 1) || rest > 1)
        return wsctl_usage_error(w, argv[0], "replay takes one ID or --all");
    if (rest == 1 && wsctl_parse_int(argv[optind + 1], 1, INT64_MAX, &id) != 0)
        return wsctl_usage_error(w, argv[0], "'%s' is not an event id", argv[optind + 1]);
    char path[96], url[300];
    if (id)
        snprintf(path, sizeof(path), "/api/v1/events/replay?id=%lld", (long long)id);
    else
        snprintf(path, sizeof(path), "/api/v1/events/replay?limit=10000");
    struct http_reply r;
    if (wsctl_api_call(w, "POST", path, NULL, &r, url, sizeof(url)) != 0)
        return WSCTL_ERROR;
    int rc = WSCTL_OK;
    if (r.status == 200) {
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        long long n = (long long)json_integer_value(json_object_get(j, "replayed"));
        if (w->json)
            fprintf(w->out, "{\"replayed\":%lld}\n", n);
        else
            fprintf(w->out, "%lld dead event%s queued again (same ids)\n", n, n == 1 ? "" : "s");
        json_decref(j);
    } else {
        wsctl_api_error(w, url, &r);
        rc = r.status == 404 ? WSCTL_NOTFOUND : WSCTL_ERROR;
    }
    free(r.body);
    return rc;
}
