/*
 * api_batch.c -- pushes of several messages in one request: a "to" list (one stored message per
 * recipient) and POST /api/v1/push/batch (several pushes, each with its own result and cid). Either
 * way all of the request commits in one transaction or none of it does (chat_post_many).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "chat/chat.h"
#include "net/loop.h"
#include "store.h"

/* The messages of one request: bodies and cids owned here. */
struct many {
    struct store_msg *ms;
    struct store_receipt *rs;
    size_t *lives;
    char **owned; /* texts and cids to free */
    size_t n, cap, nowned;
};

static void many_release(struct many *x)
{
    for (size_t i = 0; i < x->nowned; i++)
        free(x->owned[i]);
    free(x->owned);
    free(x->ms);
    free(x->rs);
    free(x->lives);
}

static char *own(struct many *x, char *s)
{
    if (s)
        x->owned[x->nowned++] = s;
    return s;
}

static int many_init(struct many *x, size_t cap)
{
    memset(x, 0, sizeof(*x));
    x->cap = cap;
    x->ms = calloc(cap, sizeof(*x->ms));
    x->rs = calloc(cap, sizeof(*x->rs));
    x->lives = calloc(cap, sizeof(*x->lives));
    x->owned = calloc(2 * cap, sizeof(*x->owned));
    return x->ms && x->rs && x->lives && x->owned ? 0 : -1;
}

/* Store and deliver x's messages; answer `{"results":[...]}` after the commit (or the error now). */
static void many_post(struct api_conn *ac, struct many *x)
{
    if (chat_post_many(ac->api->chat, x->ms, x->n, x->rs, x->lives) != 0) {
        api_reply_store_error(ac, "push");
        return;
    }
    struct sbuf *b = &ac->pending;
    sbuf_reset(b);
    sbuf_adds(b, "{\"results\":[");
    for (size_t i = 0; i < x->n; i++) {
        sbuf_adds(b, i ? ",{" : "{");
        sbuf_adds(b, x->ms[i].room ? "\"room\":" : "\"to\":");
        sbuf_add_json_str(b, x->ms[i].room ? x->ms[i].room : x->ms[i].to_user);
        sbuf_adds(b, ",\"id\":");
        sbuf_add_i64(b, x->rs[i].id);
        sbuf_addf(b, ",\"live\":%zu,\"ts\":", x->lives[i]);
        sbuf_add_i64(b, x->rs[i].created_at);
        if (x->ms[i].cid) {
            sbuf_adds(b, ",\"cid\":");
            sbuf_add_json_str(b, x->ms[i].cid);
        }
        if (x->rs[i].duplicate)
            sbuf_adds(b, ",\"duplicate\":true");
        sbuf_adds(b, "}");
    }
    sbuf_adds(b, "]}");
    api_reply_after_commit(ac, 202);
}

/* "CID/USER": a cid is unique per sender, so each recipient's message needs its own. */
static char *recipient_cid(const char *cid, const char *user)
{
    if (!cid)
        return NULL;
    size_t n = strlen(cid) + strlen(user) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", cid, user);
    return s;
}

void api_push_to_list(struct api_conn *ac, json_t *to, const char *from, const char *text,
                      const char *cid)
{
    const struct px_config *cfg = ac->api->lp->cfg;
    size_t n = json_array_size(to);
    if (n == 0 || n > cfg->api_max_recipients) {
        char msg[96];
        snprintf(msg, sizeof(msg), "to must list 1 to %llu users ([api] max_recipients)",
                 (unsigned long long)cfg->api_max_recipients);
        api_reply_error(ac, 400, "bad_request", msg);
        return;
    }
    struct many x;
    if (many_init(&x, n) != 0) {
        many_release(&x);
        api_reply_error(ac, 500, "internal", "out of memory");
        return;
    }
    int64_t now = loop_now_ms(ac->api->lp);
    for (size_t i = 0; i < n; i++) {
        const char *u = json_string_value(json_array_get(to, i));
        if (!chat_name_valid(u)) {
            api_reply_error(ac, 400, "bad_request", "to must list valid user ids");
            many_release(&x);
            return;
        }
        if (cid && strlen(cid) + 1 + strlen(u) > CHAT_CID_MAX) {
            /* each recipient's cid is CID/USER, and a cid is at most 128 bytes everywhere */
            api_reply_error(ac, 400, "bad_request",
                            "with a \"to\" list, cid + \"/\" + each user must fit in 128 bytes");
            many_release(&x);
            return;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(x.ms[j].to_user, u)) {
                api_reply_error(ac, 400, "bad_request", "to lists a user twice");
                many_release(&x);
                return;
            }
        x.ms[x.n++] = (struct store_msg){.sender = from, .to_user = u, .body = text,
                                         .cid = own(&x, recipient_cid(cid, u)),
                                         .created_at = now, .via = "api"};
        if (cid && !x.ms[i].cid) {
            api_reply_error(ac, 500, "internal", "out of memory");
            many_release(&x);
            return;
        }
    }
    many_post(ac, &x);
    many_release(&x);
}

static const char *batch_item(json_t *p, struct store_msg *m, char **text, size_t max_body)
{
    const char *key;
    json_t *v;
    json_object_foreach(p, key, v)
    {
        if (strcmp(key, "to") && strcmp(key, "room") && strcmp(key, "body") &&
            strcmp(key, "from") && strcmp(key, "cid"))
            return "unknown field in a push (fields: to, room, body, from, cid)";
    }
    json_t *to = json_object_get(p, "to"), *room = json_object_get(p, "room");
    json_t *body = json_object_get(p, "body"), *from = json_object_get(p, "from");
    json_t *cid = json_object_get(p, "cid");
    if ((to != NULL) == (room != NULL))
        return "each push needs exactly one of to and room";
    if (!chat_name_valid(json_string_value(to ? to : room)))
        return "to/room must be a valid name";
    if (from && !chat_name_valid(json_string_value(from)))
        return "from must be a valid user id";
    if (cid && (!json_is_string(cid) || json_string_length(cid) == 0 ||
                json_string_length(cid) > CHAT_CID_MAX))
        return "cid must be a string of 1-128 bytes";
    if (!body)
        return "each push needs a body";
    if (!(*text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY)))
        return "body cannot be encoded";
    if (strlen(*text) > max_body)
        return "a body is larger than [limits] max_body";
    m->sender = from ? json_string_value(from) : "system";
    m->to_user = to ? json_string_value(to) : NULL;
    m->room = room ? json_string_value(room) : NULL;
    m->cid = cid ? json_string_value(cid) : NULL;
    m->body = *text;
    m->via = "api";
    return NULL;
}

void api_route_push_batch(struct api_conn *ac)
{
    const struct px_config *cfg = ac->api->lp->cfg;
    json_error_t jerr;
    json_t *req = json_loadb(ac->body ? ac->body : "", ac->body_len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *pushes = json_object_get(req, "pushes");
    if (!json_is_object(req) || json_object_size(req) != 1 || !json_is_array(pushes) ||
        json_array_size(pushes) == 0 || json_array_size(pushes) > cfg->api_max_recipients) {
        char msg[128];
        snprintf(msg, sizeof(msg), "the body must be {\"pushes\": [1 to %llu pushes]}",
                 (unsigned long long)cfg->api_max_recipients);
        api_reply_error(ac, 400, "bad_request", req ? msg : jerr.text);
        json_decref(req);
        return;
    }
    struct many x;
    size_t n = json_array_size(pushes);
    if (many_init(&x, n) != 0) {
        many_release(&x);
        json_decref(req);
        api_reply_error(ac, 500, "internal", "out of memory");
        return;
    }
    int64_t now = loop_now_ms(ac->api->lp);
    for (size_t i = 0; i < n; i++) {
        char *text = NULL;
        json_t *p = json_array_get(pushes, i);
        const char *err = json_is_object(p) ? batch_item(p, &x.ms[i], &text, cfg->max_body)
                                            : "each push must be an object";
        own(&x, text);
        if (err) {
            char msg[160];
            snprintf(msg, sizeof(msg), "push %zu: %s (nothing was stored)", i, err);
            api_reply_error(ac, 400, "bad_request", msg);
            many_release(&x);
            json_decref(req);
            return;
        }
        x.ms[i].created_at = now;
        x.n++;
    }
    many_post(ac, &x);
    many_release(&x);
    json_decref(req);
}
