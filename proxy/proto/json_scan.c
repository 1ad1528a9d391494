/*
 * json_scan.c -- strict single-pass JSON object scanner for the chat hot path. It only ever says
 * "valid, and here are the fields" when jansson (JSON_REJECT_DUPLICATES) would agree; otherwise it
 * bails and the caller lets jansson produce the verdict and the error text.
 */
#include "proto/json_scan.h"

#include <stdint.h>
#include <string.h>

#define REAL_DIGITS_MAX 300 /* reals below 1e300 cannot overflow a double (jansson reports overflow) */

struct scanner {
    const char *p, *end;
    unsigned reals;
};

struct key_span {
    const char *p;
    size_t len;
};

static int scan_value(struct scanner *s, int depth, enum json_kind *kind);

static void skip_ws(struct scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Four hex digits at p (p + 4 <= end checked by the caller); -1 if any is not hex. */
static long hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_val(p[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* At '"'; leaves p after the closing quote. *escaped tells whether a backslash was seen. */
static int scan_string(struct scanner *s, bool *escaped)
{
    s->p++;
    *escaped = false;
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            s->p++;
            return JSON_SCAN_OK;
        }
        if (c < 0x20)
            return JSON_SCAN_BAIL;
        if (c != '\\') {
            s->p++;
            continue;
        }
        *escaped = true;
        if (s->end - s->p < 2)
            return JSON_SCAN_BAIL;
        switch (s->p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            s->p += 2;
            break;
        case 'u': {
            if (s->end - s->p < 6)
                return JSON_SCAN_BAIL;
            long v = hex4(s->p + 2);
            /* jansson rejects \u0000 and is strict about surrogate pairs: leave both to it */
            if (v <= 0 || (v >= 0xD800 && v <= 0xDFFF))
                return JSON_SCAN_BAIL;
            s->p += 6;
            break;
        }
        default:
            return JSON_SCAN_BAIL;
        }
    }
    return JSON_SCAN_BAIL;
}

static bool is_digit(const struct scanner *s)
{
    return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

/* RFC 8259 number; bails on integers outside int64 and on reals that might overflow a double. */
static int scan_number(struct scanner *s)
{
    bool neg = false;
    if (*s->p == '-') {
        neg = true;
        s->p++;
    }
    if (!is_digit(s))
        return JSON_SCAN_BAIL;
    uint64_t mag = 0;
    bool too_big = false;
    long int_digits = 0;
    if (*s->p == '0') {
        s->p++;
    } else {
        while (is_digit(s)) {
            unsigned d = (unsigned)(*s->p++ - '0');
            if (mag > (UINT64_MAX - d) / 10)
                too_big = true;
            else
                mag = mag * 10 + d;
            if (int_digits < 100000)
                int_digits++;
        }
    }
    bool real = false;
    if (s->p < s->end && *s->p == '.') {
        real = true;
        s->p++;
        if (!is_digit(s))
            return JSON_SCAN_BAIL;
        while (is_digit(s))
            s->p++;
    }
    long exp = 0;
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        real = true;
        s->p++;
        bool exp_neg = false;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            exp_neg = *s->p++ == '-';
        if (!is_digit(s))
            return JSON_SCAN_BAIL;
        while (is_digit(s)) {
            if (exp < 100000)
                exp = exp * 10 + (*s->p - '0');
            s->p++;
        }
        if (exp_neg)
            exp = -exp;
    }
    if (real) {
        s->reals++;
        return int_digits + exp > REAL_DIGITS_MAX ? JSON_SCAN_BAIL : JSON_SCAN_OK;
    }
    if (too_big || mag > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX))
        return JSON_SCAN_BAIL;
    return JSON_SCAN_OK;
}

static int scan_literal(struct scanner *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return JSON_SCAN_BAIL;
    s->p += n;
    return JSON_SCAN_OK;
}

static struct json_field *top_field(struct json_top *top, const char *k, size_t n)
{
#define FIELD(name)                                                                                \
    if (n == sizeof(#name) - 1 && memcmp(k, #name, n) == 0)                                        \
        return &top->name;
    FIELD(type) FIELD(to) FIELD(room) FIELD(cid) FIELD(body) FIELD(id)
#undef FIELD
    return NULL;
}

/* At '{'. top is non-NULL only for the top-level object, whose interesting fields it records. */
static int scan_object(struct scanner *s, int depth, struct json_top *top, const char *base)
{
    struct key_span keys[JSON_SCAN_KEYS_MAX];
    size_t nkeys = 0;
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return JSON_SCAN_OK;
    }
    for (;;) {
        if (s->p >= s->end || *s->p != '"' || nkeys == JSON_SCAN_KEYS_MAX)
            return JSON_SCAN_BAIL;
        const char *k = s->p + 1;
        bool escaped;
        if (scan_string(s, &escaped) != JSON_SCAN_OK || escaped)
            return JSON_SCAN_BAIL; /* escaped keys would need decoding to spot duplicates */
        size_t klen = (size_t)(s->p - 1 - k);
        for (size_t i = 0; i < nkeys; i++)
            if (keys[i].len == klen && memcmp(keys[i].p, k, klen) == 0)
                return JSON_SCAN_BAIL;
        keys[nkeys++] = (struct key_span){k, klen};
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return JSON_SCAN_BAIL;
        s->p++;
        skip_ws(s);
        const char *vstart = s->p;
        unsigned reals = s->reals;
        enum json_kind kind;
        if (scan_value(s, depth, &kind) != JSON_SCAN_OK)
            return JSON_SCAN_BAIL;
        struct json_field *f = top ? top_field(top, k, klen) : NULL;
        if (f)
            *f = (struct json_field){true, kind, (size_t)(vstart - base), (size_t)(s->p - vstart),
                                     s->reals - reals};
        skip_ws(s);
        if (s->p >= s->end)
            return JSON_SCAN_BAIL;
        if (*s->p == '}') {
            s->p++;
            return JSON_SCAN_OK;
        }
        if (*s->p != ',')
            return JSON_SCAN_BAIL;
        s->p++;
        skip_ws(s);
    }
}

static int scan_array(struct scanner *s, int depth)
{
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return JSON_SCAN_OK;
    }
    for (;;) {
        enum json_kind kind;
        if (scan_value(s, depth, &kind) != JSON_SCAN_OK)
            return JSON_SCAN_BAIL;
        skip_ws(s);
        if (s->p >= s->end)
            return JSON_SCAN_BAIL;
        if (*s->p == ']') {
            s->p++;
            return JSON_SCAN_OK;
        }
        if (*s->p != ',')
            return JSON_SCAN_BAIL;
        s->p++;
        skip_ws(s);
    }
}

/* depth counts the containers already open around this value. */
static int scan_value(struct scanner *s, int depth, enum json_kind *kind)
{
    if (s->p >= s->end)
        return JSON_SCAN_BAIL;
    bool escaped;
    switch (*s->p) {
    case '{':
        *kind = JSON_KIND_OBJECT;
        return depth >= JSON_SCAN_DEPTH_MAX ? JSON_SCAN_BAIL : scan_object(s, depth + 1, NULL, NULL);
    case '[':
        *kind = JSON_KIND_ARRAY;
        return depth >= JSON_SCAN_DEPTH_MAX ? JSON_SCAN_BAIL : scan_array(s, depth + 1);
    case '"':
        *kind = JSON_KIND_STRING;
        return scan_string(s, &escaped);
    case 't':
        *kind = JSON_KIND_TRUE;
        return scan_literal(s, "true");
    case 'f':
        *kind = JSON_KIND_FALSE;
        return scan_literal(s, "false");
    case 'n':
        *kind = JSON_KIND_NULL;
        return scan_literal(s, "null");
    default:
        *kind = JSON_KIND_NUMBER;
        return scan_number(s);
    }
}

int json_scan_top(const char *buf, size_t len, struct json_top *out)
{
    struct scanner s = {buf, buf + len, 0};
    memset(out, 0, sizeof(*out));
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return JSON_SCAN_BAIL;
    if (scan_object(&s, 1, out, buf) != JSON_SCAN_OK)
        return JSON_SCAN_BAIL;
    skip_ws(&s);
    return s.p == s.end ? JSON_SCAN_OK : JSON_SCAN_BAIL;
}

static size_t utf8_put(char *out, long v)
{
    if (v < 0x80) {
        out[0] = (char)v;
        return 1;
    }
    if (v < 0x800) {
        out[0] = (char)(0xC0 | (v >> 6));
        out[1] = (char)(0x80 | (v & 0x3F));
        return 2;
    }
    out[0] = (char)(0xE0 | (v >> 12));
    out[1] = (char)(0x80 | ((v >> 6) & 0x3F));
    out[2] = (char)(0x80 | (v & 0x3F));
    return 3;
}

int json_scan_string(const char *span, size_t len, char *out, size_t cap)
{
    if (len < 2 || span[0] != '"' || span[len - 1] != '"' || cap == 0 || cap - 1 > INT32_MAX)
        return -1;
    const char *p = span + 1, *end = span + len - 1;
    size_t n = 0;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        char tmp[3];
        size_t k = 1;
        if (c == '"' || c < 0x20) {
            return -1;
        } else if (c != '\\') {
            tmp[0] = (char)c;
            p++;
        } else {
            if (end - p < 2)
                return -1;
            switch (p[1]) {
            case '"': case '\\': case '/':
                tmp[0] = p[1];
                break;
            default:
                return -1; /* \b \f \n \r \t decode to control characters: not for ids */
            case 'u': {
                if (end - p < 6)
                    return -1;
                long v = hex4(p + 2);
                if (v < 0x20 || (v >= 0xD800 && v <= 0xDFFF))
                    return -1;
                k = utf8_put(tmp, v);
                p += 4;
                break;
            }
            }
            p += 2;
        }
        if (n + k >= cap)
            return -1;
        memcpy(out + n, tmp, k);
        n += k;
    }
    out[n] = '\0';
    return (int)n;
}

size_t json_scan_compact(const char *span, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < len; i++) {
        char c = span[i];
        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            continue;
        } else if (c == '"') {
            in_str = true;
        }
        if (n + 1 >= cap)
            return 0;
        out[n++] = c;
    }
    if (n >= cap)
        return 0;
    out[n] = '\0';
    return n;
}
