/*
 * http1.c -- sans-I/O HTTP/1.1 request-head parser and the header, query and cookie helpers the
 * listeners share. Bytes in, structs out; no sockets, no allocation.
 */
#include "proto/http1.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>


/* ---- Character classes (RFC 7230 §3.2.6, locale-free on purpose) ---- */

static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-content: VCHAR, obs-text, SP and HT; every other control byte (CR, LF, NUL, DEL) is not. */
static bool is_field_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* RFC 3986: URIs are visible ASCII; raw UTF-8 or controls mean a broken or hostile client */
static bool is_target_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f;
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* Case-insensitive compare of s[0..n) with the NUL-terminated z. */
bool http_ieq(const char *s, size_t n, const char *z)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (z[i] == '\0' || ascii_lower((unsigned char)s[i]) != ascii_lower((unsigned char)z[i]))
            return false;
    }
    return z[n] == '\0';
}

/* ---- Request head ---- */

/*
 * Only CRLF ends a line. RFC 7230 §3.5 lets a server accept a bare LF, but a proxy in front of us
 * may split lines differently than we do (request smuggling), so bare LF and bare CR are BAD.
 */
enum { LINE_MORE = 0, LINE_OK = 1, LINE_BAD = -1 };

static int eat_crlf(const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *p = *pp;

    if (p == end)
        return LINE_MORE;
    if (*p != '\r')
        return LINE_BAD;
    if (++p == end)
        return LINE_MORE;
    if (*p != '\n')
        return LINE_BAD;
    *pp = p + 1;
    return LINE_OK;
}

/*
 * Only the first max_len bytes are ever looked at, so the answer depends on those bytes alone and
 * not on how the input was split into reads: a malformation inside them is BAD, running out of them
 * is PARTIAL (len < max_len) or TOO_LARGE (len >= max_len), which covers a complete but too long
 * head.
 */
int http_req_parse(struct http_req *req, const char *buf, size_t len, size_t max_len)
{
    static const char http_name[] = "HTTP/";
    const unsigned char *start = (const unsigned char *)buf;
    const unsigned char *p = start, *end, *tok;
    size_t i;
    int rc;

    if (max_len > INT_MAX)
        max_len = INT_MAX; /* the head length is returned as an int */
    end = p + (len < max_len ? len : max_len);

    req->method = req->target = req->path = req->query = NULL;
    req->method_len = req->target_len = req->path_len = req->query_len = 0;
    req->version_major = req->version_minor = 0;
    req->num_headers = 0;

    /* request-line = method SP request-target SP HTTP-version CRLF (RFC 7230 §3.1.1) */
    for (tok = p; p < end && is_tchar(*p); p++)
        ;
    if (p == end)
        goto more;
    if (p == tok || *p != ' ')
        return HTTP_PARSE_BAD;
    req->method = (const char *)tok;
    req->method_len = (size_t)(p - tok);
    p++;

    /* origin-form only: absolute-form is for proxies, '*' for OPTIONS; neither names a resource */
    tok = p;
    if (p < end && *p != '/')
        return HTTP_PARSE_BAD;
    while (p < end && is_target_char(*p))
        p++;
    if (p == end)
        goto more;
    if (*p != ' ')
        return HTTP_PARSE_BAD;
    req->target = (const char *)tok;
    req->target_len = (size_t)(p - tok);
    p++;

    for (i = 0; i < sizeof(http_name) - 1; i++, p++) {
        if (p == end)
            goto more;
        if (*p != (unsigned char)http_name[i])
            return HTTP_PARSE_BAD;
    }
    /* HTTP-version = HTTP-name "/" DIGIT "." DIGIT */
    for (i = 0; i < 3; i++, p++) {
        if (p == end)
            goto more;
        if (i == 1 ? *p != '.' : (*p < '0' || *p > '9'))
            return HTTP_PARSE_BAD;
    }
    req->version_major = p[-3] - '0';
    req->version_minor = p[-1] - '0';
    if ((rc = eat_crlf(&p, end)) != LINE_OK)
        goto line_end;

    /* header-field = field-name ":" OWS field-value OWS, then CRLF; an empty line ends the head */
    for (;;) {
        struct http_header *h;
        const unsigned char *vend;

        if (p == end)
            goto more;
        if (*p == '\r') {
            if ((rc = eat_crlf(&p, end)) != LINE_OK)
                goto line_end;
            break;
        }
        if (req->num_headers == HTTP_MAX_HEADERS)
            return HTTP_PARSE_TOO_LARGE;
        /* RFC 7230 §3.2.4: obs-fold may be rejected, and whitespace before the colon must be */
        for (tok = p; p < end && is_tchar(*p); p++)
            ;
        if (p == end)
            goto more;
        if (p == tok || *p != ':')
            return HTTP_PARSE_BAD;
        h = &req->headers[req->num_headers];
        h->name = (const char *)tok;
        h->name_len = (size_t)(p - tok);
        p++;
        while (p < end && is_ows(*p))
            p++;
        for (tok = p; p < end && is_field_char(*p); p++)
            ;
        if (p == end)
            goto more;
        for (vend = p; vend > tok && is_ows(vend[-1]); vend--)
            ;
        h->value = (const char *)tok;
        h->value_len = (size_t)(vend - tok);
        if ((rc = eat_crlf(&p, end)) != LINE_OK)
            goto line_end;
        req->num_headers++;
    }

    /* path and query: the first '?' splits them (RFC 3986 §3.4) */
    tok = memchr(req->target, '?', req->target_len);
    req->path = req->target;
    if (tok != NULL) {
        req->path_len = (size_t)((const char *)tok - req->target);
        req->query = (const char *)tok + 1;
        req->query_len = req->target_len - req->path_len - 1;
    } else {
        req->path_len = req->target_len;
    }
    return (int)(p - start);

line_end:
    if (rc == LINE_BAD)
        return HTTP_PARSE_BAD;
more:
    return len >= max_len ? HTTP_PARSE_TOO_LARGE : HTTP_PARSE_PARTIAL;
}

const struct http_header *http_req_header(const struct http_req *req, const char *name)
{
    size_t i;

    for (i = 0; i < req->num_headers; i++) {
        if (http_ieq(req->headers[i].name, req->headers[i].name_len, name))
            return &req->headers[i];
    }
    return NULL;
}

size_t http_req_header_count(const struct http_req *req, const char *name,
                           const struct http_header **first)
{
    size_t i, n = 0;

    *first = NULL;
    for (i = 0; i < req->num_headers; i++) {
        if (http_ieq(req->headers[i].name, req->headers[i].name_len, name)) {
            if (n++ == 0)
                *first = &req->headers[i];
        }
    }
    return n;
}

/* ---- Header value lists, query strings, cookies ---- */

static bool list_has(const char *val, size_t len, const char *token, bool nocase)
{
    size_t tlen = strlen(token);
    size_t i = 0;

    if (tlen == 0)
        return false;
    while (i < len) {
        size_t b, e;

        while (i < len && (is_ows((unsigned char)val[i]) || val[i] == ','))
            i++;
        for (b = i; i < len && val[i] != ','; i++)
            ;
        for (e = i; e > b && is_ows((unsigned char)val[e - 1]); e--)
            ;
        if (e - b == tlen &&
            (nocase ? http_ieq(val + b, tlen, token) : memcmp(val + b, token, tlen) == 0))
            return true;
    }
    return false;
}

bool http_token_list_has(const char *val, size_t len, const char *token)
{
    return list_has(val, len, token, true);
}

bool http_req_has_token(const struct http_req *req, const char *name, const char *token,
                               bool nocase)
{
    size_t i;

    for (i = 0; i < req->num_headers; i++) {
        const struct http_header *h = &req->headers[i];

        if (http_ieq(h->name, h->name_len, name) && list_has(h->value, h->value_len, token, nocase))
            return true;
    }
    return false;
}

static int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = ascii_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/*
 * application/x-www-form-urlencoded byte at s[*i] (s has n bytes): '+' is a space, %XX a byte.
 * Returns the byte and advances *i, or -1 for a bad escape.
 */
static int form_byte(const char *s, size_t n, size_t *i)
{
    unsigned char c = (unsigned char)s[*i];
    int hi, lo;

    if (c == '+') {
        (*i)++;
        return ' ';
    }
    if (c != '%') {
        (*i)++;
        return c;
    }
    if (n - *i < 3 || (hi = hex_val((unsigned char)s[*i + 1])) < 0 ||
        (lo = hex_val((unsigned char)s[*i + 2])) < 0)
        return -1;
    *i += 3;
    return hi << 4 | lo;
}

/* Whether the encoded key s[0..n) decodes to name; a badly encoded key matches nothing. */
static bool form_key_is(const char *s, size_t n, const char *name)
{
    size_t i = 0, j = 0;

    while (i < n) {
        int c = form_byte(s, n, &i);

        if (c < 0 || name[j] == '\0' || (unsigned char)name[j] != c)
            return false;
        j++;
    }
    return name[j] == '\0';
}

static void out_clear(char *out, size_t cap)
{
    if (cap > 0)
        out[0] = '\0';
}

int http_query_param(const char *query, size_t query_len, const char *name, char *out, size_t cap)
{
    size_t i = 0;

    out_clear(out, cap);
    if (query == NULL)
        return -1;
    while (i < query_len) {
        size_t b = i, k, v, o = 0;
        const char *amp = memchr(query + i, '&', query_len - i);
        size_t e = amp != NULL ? (size_t)(amp - query) : query_len;
        const char *eq = memchr(query + b, '=', e - b);

        i = e + 1;
        k = eq != NULL ? (size_t)(eq - query) : e; /* "flag" alone is a key with an empty value */
        if (!form_key_is(query + b, k - b, name))
            continue;
        for (v = eq != NULL ? k + 1 : e; v < e;) {
            int c = form_byte(query, e, &v);

            /* a decoded NUL would silently cut the C string the caller gets */
            if (c <= 0 || o + 1 >= cap || o >= INT_MAX)
                goto bad;
            out[o++] = (char)c;
        }
        if (cap == 0)
            return -2;
        out[o] = '\0';
        return (int)o;
    }
    return -1;
bad:
    out_clear(out, cap);
    return -2;
}

/*
 * RFC 6265 §4.2.1 cookie-string: pairs separated by ";" (browsers add one SP; OWS is tolerated),
 * names compared case-sensitively, value may be wrapped in one pair of double quotes.
 */
int http_cookie_value(const char *cookie, size_t len, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    size_t i = 0;

    out_clear(out, cap);
    if (cookie == NULL)
        return -1;
    while (i < len) {
        size_t b, e, vb, ve, k;
        const char *semi = memchr(cookie + i, ';', len - i);
        const char *eq;

        e = semi != NULL ? (size_t)(semi - cookie) : len;
        for (b = i; b < e && is_ows((unsigned char)cookie[b]); b++)
            ;
        i = e + 1;
        eq = memchr(cookie + b, '=', e - b);
        if (eq == NULL)
            continue;
        for (k = (size_t)(eq - cookie); k > b && is_ows((unsigned char)cookie[k - 1]); k--)
            ;
        if (k - b != nlen || memcmp(cookie + b, name, nlen) != 0)
            continue;
        for (vb = (size_t)(eq - cookie) + 1; vb < e && is_ows((unsigned char)cookie[vb]); vb++)
            ;
        for (ve = e; ve > vb && is_ows((unsigned char)cookie[ve - 1]); ve--)
            ;
        if (ve - vb >= 2 && cookie[vb] == '"' && cookie[ve - 1] == '"') {
            vb++;
            ve--;
        }
        if (ve - vb >= cap || ve - vb > INT_MAX)
            return -2;
        for (k = vb; k < ve; k++) {
            unsigned char c = (unsigned char)cookie[k];

            if (c < 0x20 || c == 0x7f)
                goto bad;
            out[k - vb] = (char)c;
        }
        out[ve - vb] = '\0';
        return (int)(ve - vb);
    }
    return -1;
bad:
    out_clear(out, cap);
    return -2;
}

/* ---- Status texts ---- */

const char *http_status_text(int status)
{
    static const struct {
        int status;
        const char *text;
    } texts[] = {
        {101, "Switching Protocols"},
        {200, "OK"},
        {202, "Accepted"},
        {204, "No Content"},
        {301, "Moved Permanently"},
        {304, "Not Modified"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {411, "Length Required"},
        {413, "Payload Too Large"},
        {415, "Unsupported Media Type"},
        {426, "Upgrade Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {503, "Service Unavailable"},
    };
    size_t i;

    for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        if (texts[i].status == status)
            return texts[i].text;
    }
    return "Unknown";
}

int http_resp_status(const char *buf, size_t len, int *status)
{
    const char *lf = memchr(buf, '\n', len < 1024 ? len : 1024);
    if (!lf)
        return len < 1024 ? 0 : -1;
    size_t n = (size_t)(lf - buf);
    /* "HTTP/1.x NNN" at least, then a space or the end of the line */
    if (n < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[7] < '0' || buf[7] > '9' || buf[8] != ' ')
        return -1;
    for (int i = 9; i < 12; i++)
        if (buf[i] < '0' || buf[i] > '9')
            return -1;
    if (n > 12 && buf[12] != ' ' && buf[12] != '\r')
        return -1;
    int st = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    if (st < 100 || st > 599)
        return -1;
    *status = st;
    return (int)n + 1;
}
