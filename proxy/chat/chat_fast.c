/*
 * chat_fast.c -- the fast path for the two hot frames, send and ack, without building a jansson tree
 * (json_scan). It answers only when every check passes; on any doubt it returns false having done
 * nothing, and the jansson path in chat.c gives the exact answer (errors included).
 */
#include <stdlib.h>
#include <string.h>

#include "chat/chat_internal.h"
#include "proto/json_scan.h"

static bool fast_ack(struct chat_conn *cc, const char *buf, const struct json_top *t)
{
    if (!t->id.present || t->id.kind != JSON_KIND_NUMBER || t->id.reals != 0 ||
        buf[t->id.start] == '-')
        return false;
    int64_t id = 0;
    for (size_t i = 0; i < t->id.len; i++) /* json_scan_top bounded it to int64 */
        id = id * 10 + (buf[t->id.start + i] - '0');
    if (id <= 0)
        return false;
    cc->chat->lp->metrics.msgs_in[MK_ACK]++;
    if (chat_rate_ok(cc, true))
        chat_ack_commit(cc, id);
    return true;
}

static bool fast_send(struct chat_conn *cc, const char *buf, const struct json_top *t)
{
    struct chat *ch = cc->chat;
    char cid[CHAT_CID_MAX + 1], target[AUTH_USER_MAX + 1];
    if (t->cid.present && (t->cid.kind != JSON_KIND_STRING ||
                           json_scan_string(buf + t->cid.start, t->cid.len, cid, sizeof(cid)) < 1))
        return false;
    const struct json_field *f = t->to.present ? &t->to : &t->room;
    if (t->to.present == t->room.present || f->kind != JSON_KIND_STRING || !t->body.present ||
        t->body.reals != 0) /* jansson reprints reals, maybe longer: leave max_body to it */
        return false;
    int n = json_scan_string(buf + f->start, f->len, target, sizeof(target));
    if (n < 0 || !auth_user_valid(target, (size_t)n))
        return false;
    char *text = malloc(t->body.len + 1);
    size_t tlen = text ? json_scan_compact(buf + t->body.start, t->body.len, text, t->body.len + 1)
                       : 0;
    if (tlen == 0 || tlen > ch->cfg->max_body) {
        free(text);
        return false;
    }
    if (chat_rate_ok(cc, false)) {
        ch->lp->metrics.msgs_in[MK_SEND]++;
        chat_send_commit(cc, t->to.present ? target : NULL, t->room.present ? target : NULL, text,
                    t->cid.present ? cid : NULL);
    }
    free(text);
    return true;
}

bool chat_fast_path(struct chat_conn *cc, const uint8_t *data, size_t len)
{
    const char *buf = (const char *)data;
    struct json_top t;
    char type[8];
    if (json_scan_top(buf, len, &t) != JSON_SCAN_OK || !t.type.present ||
        t.type.kind != JSON_KIND_STRING ||
        json_scan_string(buf + t.type.start, t.type.len, type, sizeof(type)) < 0)
        return false;
    if (strcmp(type, "ack") == 0)
        return fast_ack(cc, buf, &t);
    if (strcmp(type, "send") == 0)
        return fast_send(cc, buf, &t);
    return false;
}
