/*
 * msg_json.h -- the one JSON shape of a stored message, shared by the chat protocol (msg frames,
 * history items) and the HTTP API (message receipts, history), so both always agree.
 */
#ifndef WSP_MSG_JSON_H
#define WSP_MSG_JSON_H

#include "base/sbuf.h"

struct store_msg;

/* Append "id":N,"from":"..","to"|"room":"..","body":RAW,"ts":N -- no braces, no cid. */
void msg_json_fields(struct sbuf *b, const struct store_msg *m);

#endif
