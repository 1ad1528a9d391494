/*
 * fcgi.c -- FastCGI 1.0 client codec: request writers into caller buffers, a resumable record parser
 * for what the application sends back, and the CGI Status of STDOUT. No sockets, no allocation.
 */
#include <limits.h>
#include <string.h>
#include <strings.h>

#include "proto/fcgi.h"

const char *fcgi_strerror(int err)
{
    switch (err) {
    case 0: return "ok";
    case FCGI_NEED_MORE: return "response head incomplete";
    case FCGI_ERR_VERSION: return "not FastCGI version 1";
    case FCGI_ERR_TYPE: return "unexpected record type";
    case FCGI_ERR_LENGTH: return "END_REQUEST of wrong length";
    case FCGI_ERR_HEAD: return "malformed CGI response head";
    case FCGI_ERR_STATE: return "data after END_REQUEST";
    default: return "unknown FastCGI error";
    }
}

/* ---- Writing ---- */

static void put_header(uint8_t *o, uint8_t type, uint16_t id, size_t clen, size_t pad)
{
    o[0] = FCGI_VERSION_1;
    o[1] = type;
    o[2] = (uint8_t)(id >> 8);
    o[3] = (uint8_t)id;
    o[4] = (uint8_t)(clen >> 8);
    o[5] = (uint8_t)clen;
    o[6] = (uint8_t)pad;
    o[7] = 0;
}

size_t fcgi_begin_request(uint8_t *out, size_t cap, uint16_t id, bool keep_conn)
{
    if (out && cap >= 16) {
        put_header(out, FCGI_BEGIN_REQUEST, id, 8, 0);
        memset(out + 8, 0, 8);
        out[8] = 0;
        out[9] = FCGI_RESPONDER;
        out[10] = keep_conn ? FCGI_KEEP_CONN : 0;
    }
    return 16;
}

static size_t len_size(size_t n)
{
    return n < 128 ? 1 : 4;
}

static uint8_t *put_len(uint8_t *o, size_t n)
{
    if (n < 128) {
        *o++ = (uint8_t)n;
        return o;
    }
    *o++ = (uint8_t)(0x80 | ((n >> 24) & 0x7f));
    *o++ = (uint8_t)(n >> 16);
    *o++ = (uint8_t)(n >> 8);
    *o++ = (uint8_t)n;
    return o;
}

size_t fcgi_params_encode(uint8_t *out, size_t cap, const struct fcgi_param *p, size_t n)
{
    size_t need = 0;
    for (size_t i = 0; i < n; i++)
        need += len_size(p[i].name_len) + len_size(p[i].value_len) + p[i].name_len + p[i].value_len;
    if (!out || cap < need)
        return need;
    uint8_t *o = out;
    for (size_t i = 0; i < n; i++) {
        o = put_len(o, p[i].name_len);
        o = put_len(o, p[i].value_len);
        if (p[i].name_len)
            memcpy(o, p[i].name, p[i].name_len);
        o += p[i].name_len;
        if (p[i].value_len)
            memcpy(o, p[i].value, p[i].value_len);
        o += p[i].value_len;
    }
    return need;
}

/* Padding to the next multiple of 8, as the spec recommends (and php-fpm's own client does). */
static size_t pad_of(size_t clen)
{
    return (8 - clen % 8) % 8;
}

size_t fcgi_stream(uint8_t *out, size_t cap, uint8_t type, uint16_t id, const uint8_t *data,
                   size_t len, bool terminate)
{
    size_t full = len / FCGI_MAX_CONTENT, rest = len % FCGI_MAX_CONTENT;
    size_t need = full * (FCGI_HEADER_LEN + FCGI_MAX_CONTENT + pad_of(FCGI_MAX_CONTENT));
    if (rest)
        need += FCGI_HEADER_LEN + rest + pad_of(rest);
    if (terminate)
        need += FCGI_HEADER_LEN;
    if (!out || cap < need)
        return need;
    uint8_t *o = out;
    for (size_t off = 0; off < len;) {
        size_t c = len - off < FCGI_MAX_CONTENT ? len - off : FCGI_MAX_CONTENT, pad = pad_of(c);
        put_header(o, type, id, c, pad);
        memcpy(o + FCGI_HEADER_LEN, data + off, c);
        memset(o + FCGI_HEADER_LEN + c, 0, pad);
        o += FCGI_HEADER_LEN + c + pad;
        off += c;
    }
    if (terminate)
        put_header(o, type, id, 0, 0);
    return need;
}

size_t fcgi_request(uint8_t *out, size_t cap, uint16_t id, bool keep_conn,
                    const struct fcgi_param *p, size_t n, const uint8_t *body, size_t body_len)
{
    size_t plen = fcgi_params_encode(NULL, 0, p, n);
    size_t need = 16 + fcgi_stream(NULL, 0, FCGI_PARAMS, id, NULL, plen, true) +
                  fcgi_stream(NULL, 0, FCGI_STDIN, id, NULL, body_len, true);
    if (!out || cap < need)
        return need;
    uint8_t *o = out + fcgi_begin_request(out, cap, id, keep_conn);
    /* The pairs go right after the PARAMS headers' space, then are framed in place from the end. */
    size_t pstream = fcgi_stream(NULL, 0, FCGI_PARAMS, id, NULL, plen, true);
    uint8_t *pairs = o + pstream - plen;
    fcgi_params_encode(pairs, plen, p, n);
    /* Framing moves content forward into records; memmove-safe because we frame chunk by chunk. */
    size_t off = 0;
    uint8_t *w = o;
    while (off < plen) {
        size_t c = plen - off < FCGI_MAX_CONTENT ? plen - off : FCGI_MAX_CONTENT, pad = pad_of(c);
        uint8_t hdr[FCGI_HEADER_LEN];
        put_header(hdr, FCGI_PARAMS, id, c, pad);
        /* w + 8 <= pairs + off always holds: the header space is reserved before the content. */
        memmove(w + FCGI_HEADER_LEN, pairs + off, c);
        memcpy(w, hdr, FCGI_HEADER_LEN);
        memset(w + FCGI_HEADER_LEN + c, 0, pad);
        w += FCGI_HEADER_LEN + c + pad;
        off += c;
    }
    put_header(w, FCGI_PARAMS, id, 0, 0);
    o += pstream;
    o += fcgi_stream(o, (size_t)(out + cap - o), FCGI_STDIN, id, body, body_len, true);
    return need;
}

/* ---- Reading ---- */

void fcgi_parser_init(struct fcgi_parser *p)
{
    memset(p, 0, sizeof(*p));
}

int fcgi_parse(struct fcgi_parser *p, const uint8_t *buf, size_t len, struct fcgi_event *ev)
{
    size_t off = 0;
    memset(ev, 0, sizeof(*ev));
    if (len > INT_MAX)
        len = INT_MAX;
    if (p->ended)
        return len ? FCGI_ERR_STATE : 0;
    for (;;) {
        if (p->in_record && p->content_left == 0 && p->pad_left == 0) {
            p->in_record = false;
            bool end = p->type == FCGI_END_REQUEST && p->id != 0;
            p->have = 0;
            if (end) {
                ev->kind = FCGI_EV_END;
                ev->id = p->id;
                ev->app_status = (uint32_t)p->body[0] << 24 | (uint32_t)p->body[1] << 16 |
                                 (uint32_t)p->body[2] << 8 | p->body[3];
                ev->protocol_status = p->body[4];
                p->ended = true;
                return (int)off;
            }
            continue;
        }
        if (off == len)
            return (int)off;
        if (!p->in_record) {
            size_t n = FCGI_HEADER_LEN - p->have;
            if (n > len - off)
                n = len - off;
            memcpy(p->hdr + p->have, buf + off, n);
            p->have += n;
            off += n;
            if (p->have < FCGI_HEADER_LEN)
                return (int)off;
            if (p->hdr[0] != FCGI_VERSION_1)
                return FCGI_ERR_VERSION;
            p->type = p->hdr[1];
            p->id = (uint16_t)(p->hdr[2] << 8 | p->hdr[3]);
            p->content_left = (size_t)p->hdr[4] << 8 | p->hdr[5];
            p->pad_left = p->hdr[6];
            p->have = 0;
            switch (p->type) {
            case FCGI_STDOUT:
            case FCGI_STDERR:
            case FCGI_GET_VALUES_RESULT:
            case FCGI_UNKNOWN_TYPE:
                break;
            case FCGI_END_REQUEST:
                if (p->content_left != 8)
                    return FCGI_ERR_LENGTH;
                break;
            default:
                return FCGI_ERR_TYPE;
            }
            p->in_record = true;
            continue;
        }
        size_t avail = len - off;
        if (p->content_left) {
            size_t n = p->content_left < avail ? p->content_left : avail;
            if ((p->type == FCGI_STDOUT || p->type == FCGI_STDERR) && p->id != 0) {
                ev->kind = p->type == FCGI_STDOUT ? FCGI_EV_STDOUT : FCGI_EV_STDERR;
                ev->id = p->id;
                ev->data = buf + off;
                ev->len = n;
                p->content_left -= n;
                return (int)(off + n);
            }
            if (p->type == FCGI_END_REQUEST)
                memcpy(p->body + (8 - p->content_left), buf + off, n);
            p->content_left -= n;
            off += n;
            continue;
        }
        size_t n = p->pad_left < avail ? p->pad_left : avail;
        p->pad_left -= n;
        off += n;
    }
}

int fcgi_cgi_status(const char *buf, size_t len, size_t max, int *status, size_t *head_len)
{
    size_t lim = len < max ? len : max, end = 0;
    bool found = false;
    /* The head ends at the first empty line (which may be the very first line). */
    for (size_t i = 0; i < lim && !found; i++) {
        if (buf[i] != '\n')
            continue;
        size_t start = i;
        while (start > 0 && buf[start - 1] != '\n')
            start--;
        if (i == start || (i == start + 1 && buf[start] == '\r')) {
            found = true;
            end = i + 1;
        }
    }
    if (!found)
        return len >= max ? FCGI_ERR_HEAD : FCGI_NEED_MORE;
    int st = 0;
    bool location = false;
    for (size_t i = 0; i < end;) {
        size_t eol = i;
        while (buf[eol] != '\n')
            eol++;
        size_t stop = eol > i && buf[eol - 1] == '\r' ? eol - 1 : eol;
        if (stop == i)
            break; /* the empty line */
        const char *colon = memchr(buf + i, ':', stop - i);
        if (!colon || colon == buf + i)
            return FCGI_ERR_HEAD;
        size_t nlen = (size_t)(colon - (buf + i));
        const char *v = colon + 1, *vend = buf + stop;
        while (v < vend && (*v == ' ' || *v == '\t'))
            v++;
        if (nlen == 6 && strncasecmp(buf + i, "Status", 6) == 0) {
            if (st || vend - v < 3)
                return FCGI_ERR_HEAD;
            for (int k = 0; k < 3; k++)
                if (v[k] < '0' || v[k] > '9')
                    return FCGI_ERR_HEAD;
            if (vend - v > 3 && v[3] != ' ')
                return FCGI_ERR_HEAD;
            st = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
            if (st < 100 || st > 599)
                return FCGI_ERR_HEAD;
        } else if (nlen == 8 && strncasecmp(buf + i, "Location", 8) == 0) {
            location = true;
        }
        i = eol + 1;
    }
    *status = st ? st : location ? 302 : 200;
    *head_len = end;
    return 0;
}
