/*
 * ws_deflate.c -- permessage-deflate (RFC 7692): offer parsing, bounded inflate, shared deflate and
 * accounting of zlib's memory. Bytes in, bytes out through callbacks; no sockets, no logging.
 */
#define ZLIB_CONST
#include "ws_deflate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

/* RFC 7692 §7.2.1: what the sender strips and §7.2.2: what the receiver appends. */
static const uint8_t ws_deflate_tail[4] = {0x00, 0x00, 0xff, 0xff};

/* zlib counts in uInt; bigger inputs are handed over in steps of this size. */
#define ZSTEP ((size_t)1 << 30)

/* Fixed parts of a state, rounded up from the exact zlib 1.2.13 figures in the header. */
#define INFLATE_FIXED 7680 /* 7160 + 112 + 3 * 16 = 7320 */
#define DEFLATE_FIXED 6656 /* 5952 + 112 + 6 * 16 = 6160 */

const char *ws_deflate_strerror(int err)
{
    switch (err) {
    case WS_DEFLATE_OK:
        return "ok";
    case WS_DEFLATE_ERR_TOO_BIG:
        return "message too big after inflating";
    case WS_DEFLATE_ERR_DATA:
        return "invalid compressed data";
    case WS_DEFLATE_ERR_NOMEM:
        return "out of compression memory";
    case WS_DEFLATE_ERR_SINK:
        return "output refused";
    case WS_DEFLATE_ERR_PARAM:
        return "invalid compression parameters";
    }
    return "unknown error";
}

/* ---- Memory accounting ---- */

/*
 * zlib's free hook is not told the size, so every block carries it in a header in front. The header
 * is malloc's alignment (16 bytes on x86-64), so the block zlib gets stays aligned for anything.
 */
#define MEM_HDR _Alignof(max_align_t)

static void *mem_alloc(struct ws_deflate_mem *m, size_t n)
{
    unsigned char *h;

    if (n > SIZE_MAX - MEM_HDR)
        return NULL;
    n += MEM_HDR;
    if (m && m->budget && (m->in_use >= m->budget || n > m->budget - m->in_use))
        return NULL;
    h = malloc(n);
    if (!h)
        return NULL;
    memcpy(h, &n, sizeof n);
    if (m) {
        m->in_use += n;
        if (m->in_use > m->peak)
            m->peak = m->in_use;
    }
    return h + MEM_HDR;
}

static void mem_free(struct ws_deflate_mem *m, void *p)
{
    unsigned char *h;
    size_t n;

    if (!p)
        return;
    h = (unsigned char *)p - MEM_HDR;
    memcpy(&n, h, sizeof n);
    if (m)
        m->in_use -= n;
    free(h);
}

static voidpf zalloc_cb(voidpf opaque, uInt items, uInt size)
{
    if (size && items > SIZE_MAX / size)
        return Z_NULL;
    return mem_alloc(opaque, (size_t)items * size);
}

static void zfree_cb(voidpf opaque, voidpf p)
{
    mem_free(opaque, p);
}

/* A zeroed z_stream, itself counted, whose allocations go through the hooks. */
static z_stream *stream_new(struct ws_deflate_mem *m)
{
    z_stream *zs = mem_alloc(m, sizeof *zs);

    if (!zs)
        return NULL;
    memset(zs, 0, sizeof *zs);
    zs->zalloc = zalloc_cb;
    zs->zfree = zfree_cb;
    zs->opaque = m;
    return zs;
}

size_t ws_deflate_inflate_worst(unsigned window_bits)
{
    if (window_bits < 9)
        window_bits = 9; /* the inflater never uses less, see ws_deflate_inflater_init */
    if (window_bits > 15)
        window_bits = 15;
    return ((size_t)1 << window_bits) + INFLATE_FIXED;
}

size_t ws_deflate_deflate_worst(unsigned window_bits, unsigned mem_level)
{
    if (window_bits > 15)
        window_bits = 15;
    if (mem_level > 9)
        mem_level = 9;
    return ((size_t)1 << (window_bits + 2)) + ((size_t)1 << (mem_level + 9)) + DEFLATE_FIXED;
}

bool ws_deflate_mem_fits(const struct ws_deflate_mem *m, size_t bytes)
{
    return m->budget == 0 || (m->reserved <= m->budget && bytes <= m->budget - m->reserved);
}

bool ws_deflate_mem_reserve(struct ws_deflate_mem *m, size_t bytes)
{
    if (!ws_deflate_mem_fits(m, bytes))
        return false;
    m->reserved += bytes;
    return true;
}

void ws_deflate_mem_unreserve(struct ws_deflate_mem *m, size_t bytes)
{
    m->reserved = bytes > m->reserved ? 0 : m->reserved - bytes;
}

/* ---- Negotiation ---- */

void ws_deflate_policy_init(struct ws_deflate_policy *pol)
{
    memset(pol, 0, sizeof *pol);
    pol->server_max_window_bits = 15;
    pol->client_max_window_bits = 15;
    pol->client_no_context_takeover = true;
}

enum offer_param { P_SNCT, P_CNCT, P_SMWB, P_CMWB, P_COUNT };

static const char *const offer_param_names[P_COUNT] = {
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
};

/* One permessage-deflate offer as read; bits is 0 for "no value". */
struct offer {
    bool seen[P_COUNT];
    uint8_t bits[P_COUNT];
    bool bad; /* declined: unknown or duplicate parameter, or a bad value */
};

struct lex {
    const char *s;
    size_t len, pos;
};

/* RFC 7230 §3.2.6 tchar */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool lex_at(const struct lex *l, char c)
{
    return l->pos < l->len && l->s[l->pos] == c;
}

static void skip_ows(struct lex *l)
{
    while (l->pos < l->len && (l->s[l->pos] == ' ' || l->s[l->pos] == '\t'))
        l->pos++;
}

/* Consumes a token; returns its length (0: none here). */
static size_t take_token(struct lex *l)
{
    size_t start = l->pos;

    while (l->pos < l->len && is_tchar((unsigned char)l->s[l->pos]))
        l->pos++;
    return l->pos - start;
}

/*
 * Consumes a quoted-string (l->pos is at its opening quote), unescaping it into val[0..cap); *vlen
 * gets the full unescaped length, which may exceed cap. Returns false on a byte the grammar does
 * not allow or a missing closing quote.
 */
static bool take_quoted(struct lex *l, char *val, size_t cap, size_t *vlen)
{
    *vlen = 0;
    for (l->pos++; l->pos < l->len; l->pos++) {
        unsigned char c = (unsigned char)l->s[l->pos];
        if (c == '"') {
            l->pos++;
            return true;
        }
        if (c == '\\') {
            if (++l->pos == l->len)
                return false;
            c = (unsigned char)l->s[l->pos]; /* quoted-pair: HTAB, SP, VCHAR, obs-text */
            if (c != '\t' && (c < 0x20 || c == 0x7f))
                return false;
        } else if (c != '\t' && (c < 0x20 || c == 0x7f)) {
            return false; /* qdtext excludes controls; '"' and '\\' are handled above */
        }
        if (*vlen < cap)
            val[*vlen] = (char)c;
        (*vlen)++;
    }
    return false;
}

/* Skips the rest of a broken element: up to the next ',' outside a quoted string. */
static void skip_element(struct lex *l)
{
    bool quoted = false;

    for (; l->pos < l->len; l->pos++) {
        char c = l->s[l->pos];
        if (quoted && c == '\\')
            l->pos++;
        else if (c == '"')
            quoted = !quoted;
        else if (c == ',' && !quoted)
            return;
    }
}

/* A window size: "8".."15", no leading zeros (RFC 7692 §7.1.2); 0 when it is not one. */
static uint8_t parse_bits(const char *v, size_t n)
{
    if (n == 1 && (v[0] == '8' || v[0] == '9'))
        return (uint8_t)(v[0] - '0');
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return (uint8_t)(10 + v[1] - '0');
    return 0;
}

static void offer_param(struct offer *o, const char *name, size_t nlen, bool has_value,
                        const char *val, size_t vlen)
{
    enum offer_param i;

    for (i = 0; i < P_COUNT; i++) {
        if (strlen(offer_param_names[i]) == nlen &&
            strncasecmp(name, offer_param_names[i], nlen) == 0)
            break;
    }
    if (i == P_COUNT || o->seen[i]) {
        o->bad = true; /* RFC 7692 §5.1: unknown or duplicate parameter -> decline */
        return;
    }
    o->seen[i] = true;
    switch (i) {
    case P_SNCT:
    case P_CNCT:
        if (has_value)
            o->bad = true;
        break;
    case P_SMWB: /* a value is required */
    case P_CMWB: /* a value is optional */
        if (has_value || i == P_SMWB) {
            o->bits[i] = has_value ? parse_bits(val, vlen) : 0;
            if (o->bits[i] == 0)
                o->bad = true;
        }
        break;
    case P_COUNT:
        break;
    }
}

/*
 * Parses one list element starting at a token. Returns false when it breaks the grammar (the caller
 * skips it); true with l->pos at the ',' that ends it or at the end of the value.
 */
static bool parse_element(struct lex *l, bool *is_pmd, struct offer *o)
{
    const char *name = l->s + l->pos;
    size_t nlen = take_token(l);

    if (nlen == 0)
        return false;
    *is_pmd = nlen == 18 && strncasecmp(name, "permessage-deflate", 18) == 0;
    for (;;) {
        const char *pname;
        size_t plen, vlen = 0;
        char val[4];
        bool has_value = false;

        skip_ows(l);
        if (l->pos == l->len || lex_at(l, ','))
            return true;
        if (!lex_at(l, ';'))
            return false;
        l->pos++;
        skip_ows(l);
        pname = l->s + l->pos;
        plen = take_token(l);
        if (plen == 0)
            return false;
        skip_ows(l);
        if (lex_at(l, '=')) {
            l->pos++;
            skip_ows(l);
            has_value = true;
            if (lex_at(l, '"')) {
                if (!take_quoted(l, val, sizeof val, &vlen))
                    return false;
            } else {
                const char *v = l->s + l->pos;
                vlen = take_token(l);
                if (vlen == 0)
                    return false;
                memcpy(val, v, vlen < sizeof val ? vlen : sizeof val);
            }
        }
        if (*is_pmd)
            offer_param(o, pname, plen, has_value, val, vlen < sizeof val ? vlen : sizeof val);
    }
}

static bool offer_accept(const struct ws_deflate_policy *pol, const struct offer *o,
                         struct ws_deflate_params *out)
{
    uint8_t swb = pol->server_max_window_bits, cwb = 15;

    if (o->bad)
        return false;
    if (o->seen[P_SMWB]) {
        /* zlib cannot deflate raw with 8; going above what the client allows is forbidden. */
        if (o->bits[P_SMWB] == 8)
            return false;
        if (o->bits[P_SMWB] < swb)
            swb = o->bits[P_SMWB];
    }
    if (o->seen[P_CMWB]) {
        cwb = pol->client_max_window_bits;
        if (o->bits[P_CMWB] && o->bits[P_CMWB] < cwb)
            cwb = o->bits[P_CMWB];
    }
    out->server_max_window_bits = swb;
    out->client_max_window_bits = cwb;
    out->client_no_context_takeover = o->seen[P_CNCT] || pol->client_no_context_takeover;
    out->server_max_window_bits_sent = o->seen[P_SMWB] || swb < 15;
    return true;
}

bool ws_deflate_negotiate(const struct ws_deflate_policy *pol, const char *value, size_t len,
                          struct ws_deflate_params *out)
{
    struct lex l = {value, value ? len : 0, 0};

    if (!pol->enabled || pol->server_max_window_bits < 9 || pol->server_max_window_bits > 15 ||
        pol->client_max_window_bits < 9 || pol->client_max_window_bits > 15)
        return false;
    while (l.pos < l.len) {
        struct offer o;
        bool is_pmd = false;

        skip_ows(&l);
        if (lex_at(&l, ',')) { /* RFC 7230 §7: empty list elements are allowed */
            l.pos++;
            continue;
        }
        if (l.pos == l.len)
            break;
        memset(&o, 0, sizeof o);
        if (!parse_element(&l, &is_pmd, &o)) {
            skip_element(&l);
            continue;
        }
        if (is_pmd && offer_accept(pol, &o, out))
            return true;
    }
    return false;
}

size_t ws_deflate_response(const struct ws_deflate_params *p, char out[WS_DEFLATE_RESPONSE_MAX])
{
    int n =
        snprintf(out, WS_DEFLATE_RESPONSE_MAX, "permessage-deflate; server_no_context_takeover");

    if (p->client_no_context_takeover)
        n += snprintf(out + n, WS_DEFLATE_RESPONSE_MAX - (size_t)n, "; client_no_context_takeover");
    if (p->server_max_window_bits_sent)
        n += snprintf(out + n, WS_DEFLATE_RESPONSE_MAX - (size_t)n, "; server_max_window_bits=%u",
                      (unsigned)p->server_max_window_bits);
    if (p->client_max_window_bits < 15)
        n += snprintf(out + n, WS_DEFLATE_RESPONSE_MAX - (size_t)n, "; client_max_window_bits=%u",
                      (unsigned)p->client_max_window_bits);
    return (size_t)n;
}

/* ---- Inflate ---- */

void ws_deflate_inflater_init(struct ws_deflate_inflater *inf, const struct ws_deflate_params *p,
                              uint64_t max_out, struct ws_deflate_mem *mem)
{
    memset(inf, 0, sizeof *inf);
    inf->mem = mem;
    inf->max_out = max_out;
    inf->window_bits = p->client_max_window_bits < 9    ? 9
                       : p->client_max_window_bits > 15 ? 15
                                                        : p->client_max_window_bits;
    inf->no_context_takeover = p->client_no_context_takeover;
}

static void inflater_close(struct ws_deflate_inflater *inf)
{
    if (!inf->zs)
        return;
    inflateEnd(inf->zs);
    mem_free(inf->mem, inf->zs);
    inf->zs = NULL;
}

static int inflater_open(struct ws_deflate_inflater *inf)
{
    z_stream *zs = stream_new(inf->mem);
    int zr;

    if (!zs)
        return WS_DEFLATE_ERR_NOMEM;
    zr = inflateInit2(zs, -(int)inf->window_bits);
    if (zr != Z_OK) {
        mem_free(inf->mem, zs);
        return zr == Z_MEM_ERROR ? WS_DEFLATE_ERR_NOMEM : WS_DEFLATE_ERR_PARAM;
    }
    inf->zs = zs;
    return WS_DEFLATE_OK;
}

static int inflater_fail(struct ws_deflate_inflater *inf, int err)
{
    inflater_close(inf);
    inf->failed = true;
    return err;
}

/*
 * Inflates in[0..len) through a stack buffer. The output room offered to zlib never exceeds what is
 * left of max_out plus one byte, so a bomb stops after at most max_out + 1 bytes of work and the
 * byte that crosses the bound is never handed to the sink.
 */
static int inflater_run(struct ws_deflate_inflater *inf, const uint8_t *in, size_t len,
                        ws_deflate_sink_fn *sink, void *arg)
{
    z_stream *zs = inf->zs;
    uint8_t buf[WS_DEFLATE_CHUNK];
    size_t left = len;

    zs->next_in = in;
    zs->avail_in = 0;
    for (;;) {
        uint64_t room = inf->max_out ? inf->max_out - inf->msg_out : UINT64_MAX;
        size_t cap = room < sizeof buf ? (size_t)room + 1 : sizeof buf, got;
        uInt in_before;
        int zr;

        if (zs->avail_in == 0 && left) {
            zs->avail_in = (uInt)(left < ZSTEP ? left : ZSTEP);
            left -= zs->avail_in;
        }
        in_before = zs->avail_in;
        zs->next_out = buf;
        zs->avail_out = (uInt)cap;
        zr = inflate(zs, Z_SYNC_FLUSH);
        got = cap - zs->avail_out;
        /*
         * The bound first: zlib may go on to decode a bad code after filling the buffer, and which
         * error wins must not depend on how the message was chunked.
         */
        if (got > room)
            return WS_DEFLATE_ERR_TOO_BIG;
        if (zr == Z_DATA_ERROR || zr == Z_NEED_DICT)
            return WS_DEFLATE_ERR_DATA;
        if (zr == Z_MEM_ERROR)
            return WS_DEFLATE_ERR_NOMEM;
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
            return WS_DEFLATE_ERR_PARAM;
        if (got) {
            inf->msg_out += got;
            if (sink(arg, buf, got) != 0)
                return WS_DEFLATE_ERR_SINK;
        }
        if (zr == Z_STREAM_END) {
            inf->stream_end = true; /* §7.2.3.4: what follows a final block is not DEFLATE data */
            return WS_DEFLATE_OK;
        }
        /* Done when all input is in and zlib did not fill the buffer (no output pending). */
        if (zs->avail_in == 0 && left == 0 && zs->avail_out != 0)
            return WS_DEFLATE_OK;
        /* No progress with input and room left cannot happen (Z_BUF_ERROR), but never spin. */
        if (got == 0 && zs->avail_in == in_before && zs->avail_out != 0)
            return WS_DEFLATE_ERR_DATA;
    }
}

/*
 * The message ended with a final block. Under context takeover the client may still refer to it, so
 * the window is carried into the fresh stream (inflateReset forgets it); otherwise the state goes.
 */
static void inflater_after_final_block(struct ws_deflate_inflater *inf)
{
    uint8_t dict[1u << 15];
    uInt n = sizeof dict;

    if (inf->no_context_takeover)
        return;
    if (inflateGetDictionary(inf->zs, dict, &n) != Z_OK || inflateReset(inf->zs) != Z_OK ||
        (n && inflateSetDictionary(inf->zs, dict, n) != Z_OK))
        inflater_close(inf); /* cannot happen: the window exists already, nothing is allocated */
}

int ws_deflate_inflater_feed(struct ws_deflate_inflater *inf, const uint8_t *in, size_t len,
                             bool fin, ws_deflate_sink_fn *sink, void *arg)
{
    int rc;

    if (inf->failed)
        return WS_DEFLATE_ERR_PARAM;
    if (len && !inf->stream_end) {
        if (!inf->zs && (rc = inflater_open(inf)) != WS_DEFLATE_OK)
            return inflater_fail(inf, rc);
        inf->msg_in = true;
        rc = inflater_run(inf, in, len, sink, arg);
        if (rc != WS_DEFLATE_OK)
            return inflater_fail(inf, rc);
    }
    if (!fin)
        return WS_DEFLATE_OK;
    /*
     * data_type & 128: zlib stopped on a block boundary. A conforming sender's payload ends inside
     * the empty stored block whose LEN/NLEN it stripped, so the tail completes it and leaves zlib
     * on a boundary; ending anywhere else means the message was cut. A payload already on a
     * boundary came from a sender that kept the tail; appending ours would open a block that never
     * ends.
     */
    if (inf->msg_in && !inf->stream_end && !(inf->zs->data_type & 128)) {
        rc = inflater_run(inf, ws_deflate_tail, sizeof ws_deflate_tail, sink, arg);
        if (rc != WS_DEFLATE_OK)
            return inflater_fail(inf, rc);
        if (!inf->stream_end && !(inf->zs->data_type & 128))
            return inflater_fail(inf, WS_DEFLATE_ERR_DATA);
    }
    if (inf->stream_end)
        inflater_after_final_block(inf);
    if (inf->no_context_takeover)
        inflater_close(inf); /* §7.1.1.2: nothing carries over, so idle connections hold nothing */
    inf->msg_out = 0;
    inf->msg_in = false;
    inf->stream_end = false;
    return WS_DEFLATE_OK;
}

void ws_deflate_inflater_release(struct ws_deflate_inflater *inf)
{
    if (!inf)
        return;
    inflater_close(inf);
    inf->failed = false;
    inf->msg_in = false;
    inf->msg_out = 0;
    inf->stream_end = false;
}

/* ---- Deflate ---- */

int ws_deflate_compressor_init(struct ws_deflate_compressor *c, int level, unsigned window_bits,
                               unsigned mem_level, struct ws_deflate_mem *mem)
{
    memset(c, 0, sizeof *c);
    c->mem = mem;
    /* Window 8 is refused: zlib 1.2.9+ cannot deflate a raw stream with it (see negotiation). */
    if (level < 0 || level > 9 || window_bits < 9 || window_bits > 15 || mem_level < 1 ||
        mem_level > 9)
        return WS_DEFLATE_ERR_PARAM;
    c->level = level;
    c->window_bits = (uint8_t)window_bits;
    c->mem_level = (uint8_t)mem_level;
    return WS_DEFLATE_OK;
}

bool ws_deflate_compressor_fits(const struct ws_deflate_compressor *c,
                                const struct ws_deflate_params *p)
{
    return c->window_bits != 0 && c->window_bits <= p->server_max_window_bits;
}

static int compressor_open(struct ws_deflate_compressor *c)
{
    z_stream *zs;
    int zr;

    if (c->window_bits == 0)
        return WS_DEFLATE_ERR_PARAM; /* init failed or was never called */
    zs = stream_new(c->mem);
    if (!zs)
        return WS_DEFLATE_ERR_NOMEM;
    zr = deflateInit2(zs, c->level, Z_DEFLATED, -(int)c->window_bits, c->mem_level,
                      Z_DEFAULT_STRATEGY);
    if (zr != Z_OK) {
        mem_free(c->mem, zs);
        return zr == Z_MEM_ERROR ? WS_DEFLATE_ERR_NOMEM : WS_DEFLATE_ERR_PARAM;
    }
    c->zs = zs;
    return WS_DEFLATE_OK;
}

/*
 * Feeds the whole input, then one sync flush (§7.2.1), through a stack buffer. The last 4 bytes
 * produced so far are always held back: when the flush completes they are the 00 00 ff ff to strip.
 */
static int compress_run(z_stream *zs, const uint8_t *in, size_t len, size_t max_out,
                        ws_deflate_sink_fn *sink, void *arg)
{
    uint8_t buf[WS_DEFLATE_CHUNK];
    size_t held = 0, out = 0, left = len;

    zs->next_in = in;
    zs->avail_in = 0;
    for (;;) {
        size_t n, emit;
        int flush, zr;

        if (zs->avail_in == 0 && left) {
            zs->avail_in = (uInt)(left < ZSTEP ? left : ZSTEP);
            left -= zs->avail_in;
        }
        flush = left ? Z_NO_FLUSH : Z_SYNC_FLUSH;
        zs->next_out = buf + held;
        zs->avail_out = (uInt)(sizeof buf - held);
        zr = deflate(zs, flush);
        if (zr != Z_OK && zr != Z_BUF_ERROR)
            return WS_DEFLATE_ERR_PARAM;
        n = sizeof buf - zs->avail_out;
        emit = n > 4 ? n - 4 : 0;
        if (emit) {
            if (max_out && emit > max_out - out)
                return WS_DEFLATE_ERR_TOO_BIG;
            if (sink(arg, buf, emit) != 0)
                return WS_DEFLATE_ERR_SINK;
            out += emit;
            memmove(buf, buf + emit, n - emit);
        }
        held = n - emit;
        /* zlib: a flush is complete when deflate returns with output room left. */
        if (flush == Z_SYNC_FLUSH && zs->avail_in == 0 && zs->avail_out != 0)
            break;
    }
    if (held != 4 || memcmp(buf, ws_deflate_tail, 4) != 0)
        return WS_DEFLATE_ERR_PARAM; /* cannot happen: a sync flush always ends so */
    return WS_DEFLATE_OK;
}

int ws_deflate_compress(struct ws_deflate_compressor *c, const uint8_t *in, size_t len,
                        size_t max_out, ws_deflate_sink_fn *sink, void *arg)
{
    int rc;

    if (!c->zs && (rc = compressor_open(c)) != WS_DEFLATE_OK)
        return rc;
    rc = compress_run(c->zs, in, len, max_out, sink, arg);
    /* server_no_context_takeover: the next message, for whoever, starts from an empty window. */
    if (deflateReset(c->zs) != Z_OK) {
        ws_deflate_compressor_release(c);
        if (rc == WS_DEFLATE_OK)
            rc = WS_DEFLATE_ERR_PARAM;
    }
    return rc;
}

void ws_deflate_compressor_release(struct ws_deflate_compressor *c)
{
    if (!c || !c->zs)
        return;
    deflateEnd(c->zs);
    mem_free(c->mem, c->zs);
    c->zs = NULL;
}

/* ---- Output buffer ---- */

int ws_deflate_buf_sink(void *arg, const uint8_t *p, size_t n)
{
    struct ws_deflate_buf *b = arg;

    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        uint8_t *np;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2)
                return -1;
            cap *= 2;
        }
        np = realloc(b->p, cap);
        if (!np)
            return -1;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

void ws_deflate_buf_release(struct ws_deflate_buf *b)
{
    if (!b)
        return;
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- Framing helpers ---- */

bool ws_deflate_rsv1_allowed(bool negotiated, unsigned opcode)
{
    return negotiated && (opcode == 0x1 || opcode == 0x2);
}

bool ws_deflate_worth_compressing(unsigned opcode, size_t len, size_t min_size)
{
    return (opcode == 0x1 || opcode == 0x2) && len >= min_size;
}
