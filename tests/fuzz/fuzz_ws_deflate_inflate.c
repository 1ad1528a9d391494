/* fuzz-deps: proxy/proto/ws_deflate.c -lz */
/*
 * fuzz_ws_deflate_inflate.c -- libFuzzer target for the bounded inflater (and, on one flag, for the
 * compressor): the first 4 bytes choose window, context takeover, the output bound (small), the
 * chunking and how many messages the rest is cut into. Fed whole and in chunks, every message must
 * give the same result (and the same bytes when it succeeds); no sink call may exceed
 * WS_DEFLATE_CHUNK or take a message past the bound; zlib memory must be back to 0 after each
 * message without context takeover and after release. On the round-trip flag the rest is plain text
 * that is compressed, then inflated back in chunks: it must come back unchanged.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/ws_deflate.h"

#define MAX_MSGS 4

struct rec {
    uint8_t *buf; /* output of the current message */
    size_t len, cap;
    uint64_t bound;
};

static int rec_sink(void *arg, const uint8_t *p, size_t n)
{
    struct rec *r = arg;

    if (n == 0 || n > WS_DEFLATE_CHUNK || r->len + n > r->bound || r->len + n > r->cap)
        abort();
    memcpy(r->buf + r->len, p, n);
    r->len += n;
    return 0;
}

struct result {
    int rc[MAX_MSGS];
    uint8_t *out[MAX_MSGS];
    size_t len[MAX_MSGS];
};

/* Feeds the messages; step 0 feeds each whole, else in pieces of 1..step bytes. */
static void run(const struct ws_deflate_params *p, uint64_t bound, const uint8_t *d,
                const size_t *cut, size_t nmsg, unsigned step, struct result *res)
{
    struct ws_deflate_mem mem = {0};
    struct ws_deflate_inflater inf;
    struct rec r = {malloc(bound + 1), 0, bound, bound};
    bool failed = false;

    ws_deflate_inflater_init(&inf, p, bound, &mem);
    for (size_t m = 0; m < nmsg; m++) {
        const uint8_t *z = d + cut[m];
        size_t n = cut[m + 1] - cut[m], at = 0, k = 0;
        int rc = WS_DEFLATE_OK;

        r.len = 0;
        if (failed) {
            res->rc[m] = ws_deflate_inflater_feed(&inf, z, n, true, rec_sink, &r);
            if (res->rc[m] != WS_DEFLATE_ERR_PARAM)
                abort();
            continue;
        }
        while (rc == WS_DEFLATE_OK) {
            size_t piece = step ? 1 + (k++ * 7 + step) % step : n;
            if (piece > n - at)
                piece = n - at;
            rc = ws_deflate_inflater_feed(&inf, z + at, piece, at + piece == n, rec_sink, &r);
            at += piece;
            if (at == n)
                break;
        }
        res->rc[m] = rc;
        res->len[m] = r.len;
        res->out[m] = malloc(r.len + 1);
        memcpy(res->out[m], r.buf, r.len);
        if (rc != WS_DEFLATE_OK) {
            failed = true;
            if (mem.in_use != 0) /* the state goes at the first error */
                abort();
        } else if (p->client_no_context_takeover && mem.in_use != 0) {
            abort();
        }
    }
    ws_deflate_inflater_release(&inf);
    if (mem.in_use != 0)
        abort();
    free(r.buf);
}

static void round_trip(const uint8_t *d, size_t n, uint8_t sel)
{
    struct ws_deflate_mem mem = {0};
    struct ws_deflate_compressor c;
    struct ws_deflate_buf z = {0};
    struct ws_deflate_params p = {15, 15, true, false};
    struct ws_deflate_inflater inf;
    struct rec r = {malloc(n + 1), 0, n + 1, n};
    unsigned wb = 9 + sel % 7, ml = 1 + (sel >> 3) % 9;
    int level = (sel >> 4) % 10;

    if (ws_deflate_compressor_init(&c, level, wb, ml, &mem) != WS_DEFLATE_OK)
        abort();
    if (ws_deflate_compress(&c, d, n, 0, ws_deflate_buf_sink, &z) != WS_DEFLATE_OK)
        abort();
    /* Compressing twice gives the same bytes: nothing carries over between messages. */
    {
        struct ws_deflate_buf z2 = {0};
        if (ws_deflate_compress(&c, d, n, 0, ws_deflate_buf_sink, &z2) != WS_DEFLATE_OK ||
            z2.len != z.len || (z.len && memcmp(z.p, z2.p, z.len) != 0))
            abort();
        ws_deflate_buf_release(&z2);
    }
    p.server_max_window_bits = (uint8_t)wb;
    p.client_max_window_bits = (uint8_t)wb;
    ws_deflate_inflater_init(&inf, &p, n, &mem);
    for (size_t at = 0, k = 0;;) {
        size_t piece = 1 + (k++ * 13 + sel) % 97;
        if (piece > z.len - at)
            piece = z.len - at;
        if (ws_deflate_inflater_feed(&inf, z.p + at, piece, at + piece == z.len, rec_sink, &r) !=
            WS_DEFLATE_OK)
            abort();
        at += piece;
        if (at == z.len)
            break;
    }
    if (r.len != n || (n && memcmp(r.buf, d, n) != 0))
        abort();
    ws_deflate_inflater_release(&inf);
    ws_deflate_compressor_release(&c);
    if (mem.in_use != 0)
        abort();
    ws_deflate_buf_release(&z);
    free(r.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ws_deflate_params p;
    struct result a = {0}, b = {0};
    size_t cut[MAX_MSGS + 1], nmsg, rest;
    uint64_t bound;
    const uint8_t *d;

    if (size < 4)
        return 0;
    if (data[0] & 0x80) {
        round_trip(data + 4, size - 4, data[1]);
        return 0;
    }
    p.server_max_window_bits = 15;
    p.client_max_window_bits = (uint8_t)(8 + (data[0] & 7));
    p.client_no_context_takeover = (data[0] & 0x08) != 0;
    p.server_max_window_bits_sent = false;
    bound = 1 + (uint64_t)data[1] * 64; /* 1 .. 16321: below and above one sink chunk */
    d = data + 4;
    rest = size - 4;
    nmsg = 1 + data[3] % MAX_MSGS;
    for (size_t m = 0; m <= nmsg; m++)
        cut[m] = rest * m / nmsg;
    run(&p, bound, d, cut, nmsg, 0, &a);
    run(&p, bound, d, cut, nmsg, 1 + data[2] % 32, &b);
    for (size_t m = 0; m < nmsg; m++) {
        if (a.rc[m] != b.rc[m])
            abort();
        if (a.rc[m] == WS_DEFLATE_OK &&
            (a.len[m] != b.len[m] || memcmp(a.out[m], b.out[m], a.len[m]) != 0))
            abort();
        free(a.out[m]);
        free(b.out[m]);
    }
    return 0;
}
