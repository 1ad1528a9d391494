/*
 * sbuf.c -- growable buffer; starts in an inline 512-byte array so most frames never touch malloc.
 */
#include "base/sbuf.h"
#include "base/utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sbuf_init(struct sbuf *b)
{
    b->p = b->inline_buf;
    b->len = 0;
    b->cap = sizeof(b->inline_buf);
    b->oom = false;
}

void sbuf_release(struct sbuf *b)
{
    if (b->p != b->inline_buf)
        free(b->p);
    sbuf_init(b);
}

void sbuf_reset(struct sbuf *b)
{
    b->len = 0;
    b->oom = false;
}

static bool grow(struct sbuf *b, size_t need)
{
    if (b->oom)
        return false;
    if (b->len + need <= b->cap)
        return true;
    size_t cap = b->cap * 2;
    while (cap < b->len + need)
        cap *= 2;
    char *np;
    if (b->p == b->inline_buf) {
        np = malloc(cap);
        if (np)
            memcpy(np, b->p, b->len);
    } else {
        np = realloc(b->p, cap);
    }
    if (!np) {
        b->oom = true;
        return false;
    }
    b->p = np;
    b->cap = cap;
    return true;
}

void sbuf_add(struct sbuf *b, const void *data, size_t len)
{
    if (!grow(b, len))
        return;
    memcpy(b->p + b->len, data, len);
    b->len += len;
}

void sbuf_adds(struct sbuf *b, const char *s)
{
    sbuf_add(b, s, strlen(s));
}

void sbuf_addf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !grow(b, (size_t)n + 1))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sbuf_add_i64(struct sbuf *b, int64_t v)
{
    char tmp[24];
    char *e = tmp + sizeof(tmp);
    char *s = e;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--s = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--s = '-';
    sbuf_add(b, s, (size_t)(e - s));
}

void sbuf_add_json_str(struct sbuf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    sbuf_add(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 0x80) {
            /* Only valid UTF-8 goes out: a stored header value may hold any byte. */
            size_t len = utf8_char_len((const uint8_t *)s, strnlen(s, 4));
            if (len) {
                s += len - 1;
                continue;
            }
            sbuf_add(b, run, (size_t)(s - run));
            run = s + 1;
            sbuf_add(b, "\\ufffd", 6);
            continue;
        }
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        sbuf_add(b, run, (size_t)(s - run));
        run = s + 1;
        switch (ch) {
        case '"':
            sbuf_add(b, "\\\"", 2);
            break;
        case '\\':
            sbuf_add(b, "\\\\", 2);
            break;
        case '\n':
            sbuf_add(b, "\\n", 2);
            break;
        case '\r':
            sbuf_add(b, "\\r", 2);
            break;
        case '\t':
            sbuf_add(b, "\\t", 2);
            break;
        default: {
            char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            sbuf_add(b, esc, 6);
        }
        }
    }
    sbuf_add(b, run, (size_t)(s - run));
    sbuf_add(b, "\"", 1);
}
