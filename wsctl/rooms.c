/*
 * rooms.c -- wsctl's room commands: rooms, members and conversations read the database read-only
 * (through store/, like query.c: they work with the server down); add and remove change
 * memberships through the HTTP API (the server owns the write side and tells live connections).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "proto/auth.h"
#include "store.h"
#include "wsctl.h"

#define ROOMS_DEFAULT 100
#define ROOMS_MAX     1000
#define CONV_DEFAULT  50
#define CONV_MAX      100
#define PREVIEW_COLUMNS 50

static bool valid_name(const char *s)
{
    return auth_user_valid(s, strlen(s));
}

static int store_failed(struct wsctl *w, struct store *st, const char *what)
{
    wsctl_errorf(w, "%s: %s", what, store_last_error(st));
    store_close(st);
    return WSCTL_ERROR;
}

static json_t *safe_json(const char *s)
{
    char *clean = fmt_safe(s ? s : "");
    json_t *v = clean ? json_string(clean) : NULL;
    free(clean);
    return v ? v : json_string("");
}

/* ---- rooms [--after NAME] [--limit N] ---- */

struct rooms_ctx {
    struct wsctl *w;
    struct store *st;
    json_t *list;
    struct table t;
    int n;
    char last[AUTH_USER_MAX + 1];
    bool failed;
};

static int room_row(void *ctx, const struct store_room_info *r)
{
    struct rooms_ctx *x = ctx;
    struct wsctl *w = x->w;
    /* Open or closed as the config says now: the same test the server makes on a join. */
    bool open = auth_room_pattern_match((const char *const *)w->cfg.rooms_open.items,
                                        w->cfg.rooms_open.n, r->name);
    int64_t last_at = 0;
    if (r->last_id) {
        struct store_msg_info m;
        int rc = store_msg_get(x->st, r->last_id, &m);
        if (rc == 0)
            last_at = m.msg.created_at;
        store_msg_info_release(&m);
        if (rc != 0 && rc != STORE_ERR_NOTFOUND) {
            x->failed = true;
            return 1;
        }
    }
    x->n++;
    snprintf(x->last, sizeof(x->last), "%s", r->name);
    if (x->list) {
        json_t *o = json_object();
        json_object_set_new(o, "name", safe_json(r->name));
        json_object_set_new(o, "open", json_boolean(open));
        json_object_set_new(o, "members", json_integer(r->members));
        json_object_set_new(o, "created_at", r->created_at ? json_integer(r->created_at) : json_null());
        json_object_set_new(o, "last_id", r->last_id ? json_integer(r->last_id) : json_null());
        json_object_set_new(o, "last_at", last_at ? json_integer(last_at) : json_null());
        json_array_append_new(x->list, o);
        return 0;
    }
    char members[24], last[32];
    snprintf(members, sizeof(members), "%lld", (long long)r->members);
    if (last_at)
        fmt_ago(last, sizeof(last), last_at, w->now_ms);
    else
        snprintf(last, sizeof(last), "never");
    const char *row[] = {r->name, open ? "yes" : "no", members, last};
    table_add(&x->t, row);
    return 0;
}

int cmd_rooms(struct wsctl *w, int argc, char **argv)
{
    static const struct option opts[] = {{"after", required_argument, NULL, 'a'},
                                         {"limit", required_argument, NULL, 'n'},
                                         WSCTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    const char *after = "";
    int64_t limit = ROOMS_DEFAULT;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "a:n:" WSCTL_COMMON_SHORT, opts, NULL)) != -1) {
        switch (opt) {
        case 'a':
            if (!valid_name(optarg))
                return wsctl_usage_error(w, argv[0], "--after: '%s' is not a valid room name",
                                         optarg);
            after = optarg;
            break;
        case 'n':
            if (wsctl_parse_int(optarg, 1, ROOMS_MAX, &limit) != 0)
                return wsctl_usage_error(w, argv[0], "--limit: '%s' is not a number from 1 to %d",
                                         optarg, ROOMS_MAX);
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
    /* OPEN comes from [rooms] open: the config is needed even with --db. */
    if (wsctl_config(w) != 0)
        return WSCTL_ERROR;
    struct store *st;
    if (wsctl_open_db(w, &st) != 0)
        return WSCTL_ERROR;
    static const char *const head[] = {"NAME", "OPEN", "MEMBERS", "LAST_MESSAGE"};
    struct rooms_ctx x = {.w = w, .st = st};
    if (w->json)
        x.list = json_array();
    else
        table_init(&x.t, 4, head);
    bool more = false;
    if (store_rooms_list(st, after, (int)limit, room_row, &x, &more) < 0 || x.failed) {
        json_decref(x.list);
        table_release(&x.t);
        return store_failed(w, st, "listing rooms");
    }
    store_close(st);
    if (w->json) {
        json_t *root = json_object();
        json_object_set_new(root, "rooms", x.list);
        json_object_set_new(root, "next_after", more ? safe_json(x.last) : json_null());
        return wsctl_print_json(w, root);
    }
    if (x.n == 0)
        fprintf(w->out, "no rooms\n");
    else
        table_print(&x.t, w->out);
    bool oom = x.t.oom;
    table_release(&x.t);
    if (more) {
        char *safe = fmt_safe(x.last);
        fprintf(w->err, "(more: --after %s)\n", safe ? safe : "?");
        free(safe);
    }
    return oom ? WSCTL_ERROR : WSCTL_OK;
}

/* ---- members ROOM ---- */

struct members_ctx {
    struct store *st;
    const char *room;
    json_t *list; /* [{user, via, state, connections, last_seen}], filled first, printed after */
    bool failed;
};

static int member_row(void *ctx, const char *user)
{
    struct members_ctx *x = ctx;
    enum store_via via = STORE_VIA_JOIN;
    bool online = false;
    int conns = 0;
    int64_t last_seen = 0;
    int rv = store_room_member_via(x->st, x->room, user, &via);
    int rp = store_presence_get(x->st, user, &online, &conns, &last_seen);
    if ((rv != 0 && rv != STORE_ERR_NOTFOUND) || (rp != 0 && rp != STORE_ERR_NOTFOUND)) {
        x->failed = true;
        return 1;
    }
    json_t *o = json_object();
    json_object_set_new(o, "user", safe_json(user));
    json_object_set_new(o, "via", json_string(via == STORE_VIA_API     ? "api"
                                              : via == STORE_VIA_CLAIM ? "claim"
                                                                       : "join"));
    json_object_set_new(o, "state",
                        json_string(rp == STORE_ERR_NOTFOUND ? "unknown"
                                    : online                 ? "online"
                                                             : "offline"));
    json_object_set_new(o, "connections", json_integer(conns));
    json_object_set_new(o, "last_seen", last_seen ? json_integer(last_seen) : json_null());
    json_array_append_new(x->list, o);
    return 0;
}

int cmd_members(struct wsctl *w, int argc, char **argv)
{
    bool done;
    int rc = wsctl_common_only(w, argc, argv, &done);
    if (done)
        return rc;
    if (argc - optind != 1)
        return wsctl_usage_error(w, argv[0], argc - optind ? "one ROOM only" : "missing ROOM");
    const char *room = argv[optind];
    if (!valid_name(room))
        return wsctl_usage_error(w, argv[0], "'%s' is not a valid room name", room);
    struct store *st;
    if (wsctl_open_db(w, &st) != 0)
        return WSCTL_ERROR;
    struct members_ctx x = {st, room, json_array(), false};
    if (store_room_members(st, room, member_row, &x) < 0 || x.failed) {
        json_decref(x.list);
        return store_failed(w, st, "listing members");
    }
    store_close(st);
    size_t n = json_array_size(x.list);
    if (w->json) {
        json_t *root = json_object();
        json_object_set_new(root, "room", safe_json(room));
        json_object_set_new(root, "members", x.list);
        rc = wsctl_print_json(w, root);
        return rc != WSCTL_OK ? rc : n ? WSCTL_OK : WSCTL_NOTFOUND;
    }
    if (n == 0) {
        json_decref(x.list);
        char *safe = fmt_safe(room);
        wsctl_errorf(w, "room %s has no members", safe ? safe : "?");
        free(safe);
        return WSCTL_NOTFOUND;
    }
    static const char *const head[] = {"USER", "VIA", "STATE", "CONNECTIONS", "LAST_SEEN"};
    struct table t;
    table_init(&t, 5, head);
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(x.list, i);
        const char *state = json_string_value(json_object_get(m, "state"));
        char conns[16], seen[32];
        snprintf(conns, sizeof(conns), "%lld",
                 (long long)json_integer_value(json_object_get(m, "connections")));
        if (strcmp(state, "online") == 0)
            snprintf(seen, sizeof(seen), "now");
        else if (strcmp(state, "unknown") == 0)
            snprintf(seen, sizeof(seen), "never");
        else
            fmt_ago(seen, sizeof(seen), json_integer_value(json_object_get(m, "last_seen")),
                    w->now_ms);
        const char *row[] = {json_string_value(json_object_get(m, "user")),
                             json_string_value(json_object_get(m, "via")), state, conns, seen};
        table_add(&t, row);
    }
    table_print(&t, w->out);
    bool oom = t.oom;
    table_release(&t);
    json_decref(x.list);
    return oom ? WSCTL_ERROR : WSCTL_OK;
}

/* ---- conversations USER [--limit N] [--before ID] ---- */

/*
 * From the database (store_user_conversations), not GET /api/v1/users/USER/conversations: like
 * history, it is a read, so it works when the server is down (an outage is when an operator asks
 * "what did alice last see"), needs no API key, and the store function is the very one the server
 * answers the API and the chat client's "conversations" with, so the lists are the same.
 */
struct conv_ctx {
    json_t *list;
    int64_t last_id;
};

static int conv_row(void *ctx, const struct store_conversation *c)
{
    struct conv_ctx *x = ctx;
    json_t *o = json_object();
    json_object_set_new(o, c->is_room ? "room" : "with", safe_json(c->peer));
    json_t *last = json_object();
    json_object_set_new(last, "id", json_integer(c->last.id));
    json_object_set_new(last, "from", safe_json(c->last.sender));
    json_object_set_new(last, "ts", json_integer(c->last.created_at));
    if (c->last.via)
        json_object_set_new(last, "via", json_string("api"));
    if (c->last_deleted) {
        json_object_set_new(last, "deleted", json_true());
    } else {
        json_t *body = json_loads(c->last.body, JSON_DECODE_ANY, NULL);
        json_object_set_new(last, "body", body ? body : safe_json(c->last.body));
    }
    json_object_set_new(o, "last", last);
    json_object_set_new(o, "unread", json_integer(c->unread));
    if (c->unread >= STORE_UNREAD_MAX)
        json_object_set_new(o, "unread_more", json_true());
    x->last_id = c->last.id;
    return json_array_append_new(x->list, o) == 0 ? 0 : 1;
}

int cmd_conversations(struct wsctl *w, int argc, char **argv)
{
    static const struct option opts[] = {{"limit", required_argument, NULL, 'n'},
                                         {"before", required_argument, NULL, 'b'},
                                         WSCTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    int64_t limit = CONV_DEFAULT, before = 0;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "n:b:" WSCTL_COMMON_SHORT, opts, NULL)) != -1) {
        switch (opt) {
        case 'n':
            if (wsctl_parse_int(optarg, 1, CONV_MAX, &limit) != 0)
                return wsctl_usage_error(w, argv[0], "--limit: '%s' is not a number from 1 to %d",
                                         optarg, CONV_MAX);
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
    if (argc - optind != 1)
        return wsctl_usage_error(w, argv[0], argc - optind ? "one USER only" : "missing USER");
    const char *user = argv[optind];
    if (!valid_name(user))
        return wsctl_usage_error(w, argv[0], "'%s' is not a valid user id", user);
    struct store *st;
    if (wsctl_open_db(w, &st) != 0)
        return WSCTL_ERROR;
    struct conv_ctx x = {json_array(), 0};
    bool more = false;
    if (store_user_conversations(st, user, before, (int)limit, conv_row, &x, &more) < 0) {
        json_decref(x.list);
        return store_failed(w, st, "listing conversations");
    }
    store_close(st);
    if (w->json) {
        json_t *root = json_object();
        json_object_set_new(root, "user", safe_json(user));
        json_object_set_new(root, "items", x.list);
        json_object_set_new(root, "more", json_boolean(more));
        json_object_set_new(root, "next_before", more ? json_integer(x.last_id) : json_null());
        return wsctl_print_json(w, root);
    }
    size_t n = json_array_size(x.list);
    if (n == 0) {
        fprintf(w->out, "no conversations\n");
        json_decref(x.list);
        return WSCTL_OK;
    }
    static const char *const head[] = {"WITH", "LAST", "ID", "FROM", "UNREAD", "PREVIEW"};
    struct table t;
    table_init(&t, 6, head);
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(x.list, i), *last = json_object_get(c, "last");
        const char *room = json_string_value(json_object_get(c, "room"));
        char with[80], ago[32], id[24], unread[24], preview[256];
        snprintf(with, sizeof(with), "%s%s", room ? "#" : "",
                 room ? room : json_string_value(json_object_get(c, "with")));
        fmt_ago(ago, sizeof(ago), json_integer_value(json_object_get(last, "ts")), w->now_ms);
        snprintf(id, sizeof(id), "%lld", (long long)json_integer_value(json_object_get(last, "id")));
        snprintf(unread, sizeof(unread), "%lld%s",
                 (long long)json_integer_value(json_object_get(c, "unread")),
                 json_is_true(json_object_get(c, "unread_more")) ? "+" : "");
        if (json_is_true(json_object_get(last, "deleted"))) {
            snprintf(preview, sizeof(preview), "(deleted)");
        } else {
            char *text = json_dumps(json_object_get(last, "body"), JSON_COMPACT | JSON_ENCODE_ANY);
            fmt_clip(preview, sizeof(preview), text ? text : "?", PREVIEW_COLUMNS);
            free(text);
        }
        const char *row[] = {with, ago, id, json_string_value(json_object_get(last, "from")),
                             unread, preview};
        table_add(&t, row);
    }
    table_print(&t, w->out);
    if (more)
        fprintf(w->err, "(older: --before %lld)\n", (long long)x.last_id);
    bool oom = t.oom;
    table_release(&t);
    json_decref(x.list);
    return oom ? WSCTL_ERROR : WSCTL_OK;
}

/* ---- add ROOM USER, remove ROOM USER: through the API ---- */

static int room_user_args(struct wsctl *w, int argc, char **argv, const char **room,
                          const char **user, bool *done)
{
    int rc = wsctl_common_only(w, argc, argv, done);
    if (*done)
        return rc;
    *done = true;
    if (argc - optind != 2)
        return wsctl_usage_error(w, argv[0], argc - optind > 2 ? "ROOM and USER only"
                                                               : "give ROOM and USER");
    *room = argv[optind];
    *user = argv[optind + 1];
    if (!valid_name(*room))
        return wsctl_usage_error(w, argv[0], "'%s' is not a valid room name", *room);
    if (!valid_name(*user))
        return wsctl_usage_error(w, argv[0], "'%s' is not a valid user id", *user);
    *done = false;
    return WSCTL_OK;
}

int cmd_add(struct wsctl *w, int argc, char **argv)
{
    const char *room, *user;
    bool done;
    int rc = room_user_args(w, argc, argv, &room, &user, &done);
    if (done)
        return rc;
    char enc[3 * AUTH_USER_MAX + 1], path[sizeof(enc) + 64], url[300];
    wsctl_pct_encode(enc, sizeof(enc), room);
    snprintf(path, sizeof(path), "/api/v1/rooms/%s/members", enc);
    json_t *req = json_pack("{s:s}", "user", user);
    char *payload = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!payload) {
        wsctl_errorf(w, "out of memory");
        return WSCTL_ERROR;
    }
    struct http_reply r;
    rc = wsctl_api_call(w, "POST", path, payload, &r, url, sizeof(url));
    free(payload);
    if (rc != 0)
        return WSCTL_ERROR;
    if (r.status != 200) {
        wsctl_api_error(w, url, &r);
        if (r.status == 404) /* POST .../members is never 404 on a server that has it */
            wsctl_errorf(w, "this server has no room endpoints (a wsproxy older than wsctl?)");
        free(r.body);
        return WSCTL_ERROR;
    }
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    bool added = json_is_true(json_object_get(j, "added"));
    json_decref(j);
    if (w->json) {
        fprintf(w->out, "%s\n", r.body);
    } else {
        char *sr = fmt_safe(room), *su = fmt_safe(user);
        if (added)
            fprintf(w->out, "%s added to room %s\n", su ? su : "?", sr ? sr : "?");
        else
            fprintf(w->out, "%s was already a member of room %s (now granted by the API)\n",
                    su ? su : "?", sr ? sr : "?");
        free(sr);
        free(su);
    }
    free(r.body);
    return WSCTL_OK;
}

int cmd_remove(struct wsctl *w, int argc, char **argv)
{
    const char *room, *user;
    bool done;
    int rc = room_user_args(w, argc, argv, &room, &user, &done);
    if (done)
        return rc;
    char er[3 * AUTH_USER_MAX + 1], eu[3 * AUTH_USER_MAX + 1];
    char path[sizeof(er) + sizeof(eu) + 64], url[300];
    wsctl_pct_encode(er, sizeof(er), room);
    wsctl_pct_encode(eu, sizeof(eu), user);
    snprintf(path, sizeof(path), "/api/v1/rooms/%s/members/%s", er, eu);
    struct http_reply r;
    if (wsctl_api_call(w, "DELETE", path, NULL, &r, url, sizeof(url)) != 0)
        return WSCTL_ERROR;
    char *sr = fmt_safe(room), *su = fmt_safe(user);
    if (r.status == 204) {
        if (w->json) {
            json_t *o = json_pack("{s:s?, s:s?, s:b}", "room", sr, "user", su, "removed", 1);
            rc = wsctl_print_json(w, o);
        } else {
            fprintf(w->out, "%s removed from room %s\n", su ? su : "?", sr ? sr : "?");
            rc = WSCTL_OK;
        }
    } else if (r.status == 404) {
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        if (msg && strstr(msg, "not a member"))
            wsctl_errorf(w, "%s is not a member of room %s", su ? su : "?", sr ? sr : "?");
        else
            wsctl_api_error(w, url, &r);
        json_decref(j);
        rc = WSCTL_NOTFOUND;
    } else {
        wsctl_api_error(w, url, &r);
        rc = WSCTL_ERROR;
    }
    free(sr);
    free(su);
    free(r.body);
    return rc;
}
