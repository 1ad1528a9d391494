/* fuzz-deps: proxy/proto/ws_parser.c proxy/base/utf8.c proxy/proto/ws_deflate.c -lz */
/*
 * fuzz_ws_parser.c -- libFuzzer target: the input fed whole and in chunks sized by its first byte must
 * give the same messages, control frames and errors, with DATA chunks joined per message.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/ws_parser.h"

struct out {
    uint8_t *rec, *msg; /* records so far; the open message's bytes */
    size_t n, msg_len;
};

static void put(struct out *o, int type, uint8_t op, uint16_t code, const uint8_t *d, size_t len)
{
    uint8_t h[4] = {(uint8_t)type, op, (uint8_t)(code >> 8), (uint8_t)code};

    memcpy(o->rec + o->n, h, 4);
    memcpy(o->rec + o->n + 4, &len, sizeof len);
    if (len)
        memcpy(o->rec + o->n + 4 + sizeof len, d, len);
    o->n += 4 + sizeof len + len;
}

/*
 * A message cut by an ERROR is dropped: how much of it came out first depends on chunking (fail-fast
 * UTF-8). A message still open at the end is recorded as type 0x80|DATA.
 */
static void run(const uint8_t *data, size_t size, bool chunked, struct out *o)
{
    struct ws_parser p;
    struct ws_event ev;
    uint8_t *buf = malloc(size + 1), op = 0;
    size_t off = 0, maxc = 1 + (size ? data[0] : 0) % 64;
    bool open = false;

    memcpy(buf, data, size);
    ws_parser_init(&p, 64 * 1024);
    /* the first byte's top bit: permessage-deflate negotiated (RSV1 allowed on first frames) */
    ws_parser_set_deflate(&p, size > 0 && (data[0] & 0x80));
    for (size_t k = 0, end; off < size; k++) {
        end = chunked ? off + 1 + (k * 31 + data[0]) % maxc : size;
        for (end = end > size ? size : end; off < end;) {
            size_t used = ws_parser_feed(&p, buf + off, end - off, &ev);
            off += used;
            if (ev.type == WS_EV_NONE && off != end) /* NONE promises every byte was consumed */
                abort();
            if (ev.type == WS_EV_NONE)
                break;
            if (used == 0 || (ev.type == WS_EV_DATA && ev.msg_start == open))
                abort();
            /* compressed only with deflate negotiated, and never a control event */
            if (ev.compressed && (!p.deflate || ev.type != WS_EV_DATA))
                abort();
            if (ev.type == WS_EV_DATA) {
                if (ev.len)
                    memcpy(o->msg + o->msg_len, ev.data, ev.len);
                /* RSV1 (compressed) is part of what both runs must agree on */
                o->msg_len += ev.len, op = (uint8_t)(ev.opcode | (ev.compressed ? 0x40 : 0));
                open = !ev.msg_end;
                if (ev.msg_end)
                    put(o, WS_EV_DATA, op, 0, o->msg, o->msg_len), o->msg_len = 0;
                continue;
            }
            if (ev.type == WS_EV_ERROR)
                open = false, o->msg_len = 0;
            put(o, ev.type, ev.opcode, ev.close_code, ev.data, ev.len);
        }
    }
    if (open)
        put(o, 0x80 | WS_EV_DATA, op, 0, o->msg, o->msg_len);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Every record comes from a frame of at least 2 bytes and adds at most 12 bytes plus its data. */
    size_t cap = 8 * size + 64;
    struct out a = {malloc(cap), malloc(size + 1), 0, 0}, b = {malloc(cap), malloc(size + 1), 0, 0};

    run(data, size, false, &a);
    run(data, size, true, &b);
    if (a.n != b.n || memcmp(a.rec, b.rec, a.n) != 0)
        abort();
    free(a.rec), free(a.msg), free(b.rec), free(b.msg);
    return 0;
}
