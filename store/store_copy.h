/*
 * store_copy.h -- what both backends do the same way with the public structs: copy a row's
 * borrowed strings into one block the struct owns (store_session_get, store_msg_get), released by
 * store_session_release / store_msg_info_release. Only store/ includes this.
 */
#ifndef WSP_STORE_COPY_H
#define WSP_STORE_COPY_H

#include "store.h"

/* *dst = *src with every string copied into dst->owned_ (one malloc). 0, or -1 out of memory. */
int store_session_copy(struct store_session *dst, const struct store_session *src);

/* out->msg = *m with every string copied into out->owned_ (one malloc); the other fields of out
 * are the caller's. 0, or -1 out of memory. */
int store_msg_copy(struct store_msg_info *out, const struct store_msg *m);

#endif
