/*
 * store_copy.c -- one block of strings per copied row, for both backends (store_copy.h), and the
 * release functions of store.h that free it.
 */
#include <stdlib.h>
#include <string.h>

#include "store_copy.h"

/* Copy the n strings of in (NULL stays NULL) into one block and point *out[i] at each copy.
 * Returns the block (to free as a whole), or NULL out of memory. */
static char *pack(const char *const *in, const char **const *out, size_t n)
{
    size_t total = 0;
    char *block, *p;

    for (size_t i = 0; i < n; i++)
        total += in[i] ? strlen(in[i]) + 1 : 0;
    if (!(block = p = malloc(total ? total : 1)))
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!in[i]) {
            *out[i] = NULL;
            continue;
        }
        size_t len = strlen(in[i]) + 1;
        memcpy(p, in[i], len);
        *out[i] = p;
        p += len;
    }
    return block;
}

int store_session_copy(struct store_session *dst, const struct store_session *src)
{
    const char *const in[] = {src->user, src->remote_addr, src->user_agent, src->subprotocol,
                              src->end_reason};
    const char **const out[] = {&dst->user, &dst->remote_addr, &dst->user_agent,
                                &dst->subprotocol, &dst->end_reason};

    *dst = *src;
    dst->owned_ = pack(in, out, sizeof in / sizeof in[0]);
    return dst->owned_ ? 0 : -1;
}

int store_msg_copy(struct store_msg_info *out, const struct store_msg *m)
{
    const char *const in[] = {m->sender, m->to_user, m->room, m->body, m->cid, m->via};
    const char **const dst[] = {&out->msg.sender, &out->msg.to_user, &out->msg.room,
                                &out->msg.body,   &out->msg.cid,     &out->msg.via};

    out->msg = *m;
    out->owned_ = pack(in, dst, sizeof in / sizeof in[0]);
    return out->owned_ ? 0 : -1;
}

void store_session_release(struct store_session *s)
{
    if (!s)
        return;
    free(s->owned_);
    memset(s, 0, sizeof *s);
}

void store_msg_info_release(struct store_msg_info *m)
{
    if (!m)
        return;
    free(m->owned_);
    memset(m, 0, sizeof *m);
}
