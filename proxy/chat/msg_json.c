/*
 * msg_json.c -- writes a stored message's fields; the body is spliced in as the compact JSON text
 * the store keeps (it was produced by jansson when the message was accepted).
 */
#include "chat/msg_json.h"

#include "store.h"

void msg_json_fields(struct sbuf *b, const struct store_msg *m)
{
    sbuf_adds(b, "\"id\":");
    sbuf_add_i64(b, m->id);
    sbuf_adds(b, ",\"from\":");
    sbuf_add_json_str(b, m->sender);
    if (m->to_user) {
        sbuf_adds(b, ",\"to\":");
        sbuf_add_json_str(b, m->to_user);
    } else {
        sbuf_adds(b, ",\"room\":");
        sbuf_add_json_str(b, m->room);
    }
    sbuf_adds(b, ",\"body\":");
    sbuf_adds(b, m->body);
    sbuf_adds(b, ",\"ts\":");
    sbuf_add_i64(b, m->created_at);
    /* stored by the server, never taken from a client: a push cannot be forged by a user */
    if (m->via)
        sbuf_adds(b, ",\"via\":\"api\"");
}
