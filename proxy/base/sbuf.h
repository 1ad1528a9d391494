/*
 * sbuf.h -- a growable byte buffer with JSON string escaping, for building outgoing frames without
 * a DOM: the hot path (msg, sent) writes JSON directly and splices stored bodies in as raw text.
 */
#ifndef WSP_SBUF_H
#define WSP_SBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sbuf {
    char *p;
    size_t len;
    size_t cap;
    bool oom; /* an append failed; the content is incomplete and must not be used */
    char inline_buf[512];
};

void sbuf_init(struct sbuf *b);
void sbuf_release(struct sbuf *b);
void sbuf_reset(struct sbuf *b);
void sbuf_add(struct sbuf *b, const void *data, size_t len);
void sbuf_adds(struct sbuf *b, const char *s);
void sbuf_addf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_add_i64(struct sbuf *b, int64_t v);
/*
 * Append s as a JSON string literal, quotes included: control chars escaped as \u00XX, and any byte
 * that is not part of valid UTF-8 replaced by \ufffd, so the output is always valid JSON text.
 */
void sbuf_add_json_str(struct sbuf *b, const char *s);

#endif
