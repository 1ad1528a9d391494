/*
 * test_ws_parser.c -- unit tests for the RFC 6455 parser and encoders. Every vector is fed whole,
 * one byte at a time and split at every offset, and the reassembled events must match the
 * expectation.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "proto/ws_parser.h"

/* ---- Building client frames ---- */

struct frame {
    uint8_t b0;          /* FIN | RSV | opcode as sent */
    const char *payload; /* NULL ends a frame list; "" is an empty frame */
    size_t len;
    uint8_t len_form; /* 0: minimal length encoding; 2 or 8: that many extended length bytes */
    bool unmasked;
    uint64_t announce; /* nonzero: put this length in the header but send no payload */
};

/* What a consumer sees once DATA chunks are joined into messages (see struct log). */
struct want {
    enum ws_event_type type; /* WS_EV_NONE ends a list */
    uint8_t opcode;
    uint16_t code;
    const char *data;
    size_t len;
    bool partial; /* DATA: the message was still open when the input ran out or a CLOSE came */
    bool compressed; /* DATA: every chunk of the message said compressed (RSV1, permessage-deflate) */
};

struct vector {
    const char *name;
    uint64_t max;    /* max_message_size */
    const char *hex; /* raw input; when NULL the input is built from frames */
    struct frame frames[8];
    struct want want[8];
};

/* clang-format off */
#define FR(b, s, ...) {.b0 = (b), .payload = (s), .len = sizeof(s) - 1, __VA_ARGS__}
#define TEXT(s) {.type = WS_EV_DATA, .opcode = WS_OP_TEXT, .data = (s), .len = sizeof(s) - 1}
#define BIN(s) {.type = WS_EV_DATA, .opcode = WS_OP_BINARY, .data = (s), .len = sizeof(s) - 1}
#define PART(op, s) \
    {.type = WS_EV_DATA, .opcode = (op), .data = (s), .len = sizeof(s) - 1, .partial = true}
#define PING(s) {.type = WS_EV_PING, .opcode = WS_OP_PING, .data = (s), .len = sizeof(s) - 1}
#define PONG(s) {.type = WS_EV_PONG, .opcode = WS_OP_PONG, .data = (s), .len = sizeof(s) - 1}
#define CLOSE(c, s) \
    {.type = WS_EV_CLOSE, .opcode = WS_OP_CLOSE, .code = (c), .data = (s), .len = sizeof(s) - 1}
#define ERR(c) {.type = WS_EV_ERROR, .code = (c)}
#define ZTEXT(s) {.type = WS_EV_DATA, .opcode = WS_OP_TEXT, .data = (s), .len = sizeof(s) - 1, \
                  .compressed = true}
#define ZBIN(s) {.type = WS_EV_DATA, .opcode = WS_OP_BINARY, .data = (s), .len = sizeof(s) - 1, \
                 .compressed = true}
/* clang-format on */

static size_t unhex(const char *s, uint8_t *out)
{
    size_t n = 0;
    unsigned v;

    while (*s) {
        if (*s == ' ') {
            s++;
            continue;
        }
        assert_int_equal(sscanf(s, "%2x", &v), 1);
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

/* Appends one client frame; each frame gets its own mask so offsets and keys both vary. */
static size_t put_frame(uint8_t *out, const struct frame *f, unsigned idx)
{
    uint64_t len = f->announce ? f->announce : f->len;
    uint8_t form = f->len_form ? f->len_form : len < 126 ? 0 : len <= 0xffff ? 2 : 8;
    uint8_t mask[4] = {(uint8_t)(0x37 + 13 * idx), 0xfa, (uint8_t)(0x21 ^ idx), 0x3d};
    size_t n = 0;

    out[n++] = f->b0;
    out[n++] = (uint8_t)((f->unmasked ? 0 : 0x80) | (form == 0 ? len : form == 2 ? 126 : 127));
    for (int i = form - 1; i >= 0; i--)
        out[n++] = (uint8_t)(len >> (8 * i));
    if (!f->unmasked) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    if (f->announce)
        return n;
    for (size_t i = 0; i < f->len; i++)
        out[n++] = (uint8_t)((uint8_t)f->payload[i] ^ (f->unmasked ? 0 : mask[i & 3]));
    return n;
}

/* The vector's input bytes in a fresh heap block of exactly that size (ASan catches over-reads). */
static uint8_t *build(const struct vector *v, size_t *n)
{
    size_t cap = v->hex ? strlen(v->hex) / 2 + 1 : 1;
    uint8_t *out;

    for (unsigned i = 0; !v->hex && v->frames[i].payload; i++)
        cap += WS_MAX_HDR + v->frames[i].len;
    out = malloc(cap);
    assert_non_null(out);
    *n = 0;
    if (v->hex)
        *n = unhex(v->hex, out);
    for (unsigned i = 0; !v->hex && v->frames[i].payload; i++)
        *n += put_frame(out + *n, &v->frames[i], i);
    return out;
}

/* ---- Recording what the parser says ---- */

#define LOG_MAX 16

/*
 * DATA chunks are joined into one entry per message, placed when the message completes; a message
 * still open when the input runs out is added last, marked partial. A message cut short by an ERROR
 * is dropped, as a consumer would drop it: how much of it was delivered before the error
 * legitimately depends on chunking (fail-fast UTF-8); nothing else may.
 */
struct log {
    struct want ev[LOG_MAX];
    size_t n;
    uint8_t *arena; /* entry data */
    size_t used;
    uint8_t *msg; /* the open message's bytes so far */
    size_t msg_len;
    uint8_t msg_op;
    bool msg_z; /* the open message's chunks say compressed */
    bool open;
    bool ended; /* CLOSE or ERROR seen */
};

static void log_init(struct log *lg, size_t cap)
{
    memset(lg, 0, sizeof *lg);
    lg->arena = malloc(cap + 1);
    lg->msg = malloc(cap + 1);
    assert_non_null(lg->arena);
    assert_non_null(lg->msg);
}

static void log_free(struct log *lg)
{
    free(lg->arena);
    free(lg->msg);
    lg->arena = lg->msg = NULL;
}

static void log_add(struct log *lg, enum ws_event_type type, uint8_t op, uint16_t code,
                    const uint8_t *d, size_t n, bool partial)
{
    struct want *w;

    assert_true(lg->n < LOG_MAX);
    w = &lg->ev[lg->n++];
    *w = (struct want){.type = type, .opcode = op, .code = code, .len = n, .partial = partial};
    w->data = (const char *)lg->arena + lg->used;
    if (n)
        memcpy(lg->arena + lg->used, d, n);
    lg->used += n;
}

static void log_event(struct log *lg, const struct ws_event *ev)
{
    assert_false(lg->ended);
    switch (ev->type) {
    case WS_EV_DATA:
        assert_true(ev->opcode == WS_OP_TEXT || ev->opcode == WS_OP_BINARY);
        /* An empty chunk is only worth an event when it ends the message. */
        assert_true(ev->len > 0 || ev->msg_end);
        assert_int_equal(ev->msg_start, !lg->open);
        if (!lg->open) {
            lg->open = true;
            lg->msg_op = ev->opcode;
            lg->msg_len = 0;
            lg->msg_z = ev->compressed;
        }
        assert_int_equal(ev->opcode, lg->msg_op);
        assert_int_equal(ev->compressed, lg->msg_z); /* RSV1 of the first frame holds throughout */
        if (ev->len)
            memcpy(lg->msg + lg->msg_len, ev->data, ev->len);
        lg->msg_len += ev->len;
        if (ev->msg_end) {
            log_add(lg, WS_EV_DATA, lg->msg_op, 0, lg->msg, lg->msg_len, false);
            lg->ev[lg->n - 1].compressed = lg->msg_z;
            lg->open = false;
        }
        break;
    case WS_EV_PING:
    case WS_EV_PONG:
        assert_true(ev->len <= WS_MAX_CTRL_PAYLOAD);
        log_add(lg, ev->type, ev->opcode, 0, ev->data, ev->len, false);
        break;
    case WS_EV_CLOSE:
        assert_true(ev->len <= WS_MAX_CTRL_PAYLOAD - 2);
        log_add(lg, ev->type, ev->opcode, ev->close_code, ev->data, ev->len, false);
        lg->ended = true;
        break;
    case WS_EV_ERROR:
        assert_non_null(ev->error);
        lg->open = false;
        log_add(lg, ev->type, 0, ev->close_code, NULL, 0, false);
        lg->ended = true;
        break;
    default:
        fail_msg("unexpected event type %d", ev->type);
    }
}

static void log_finish(struct log *lg)
{
    if (lg->open) {
        log_add(lg, WS_EV_DATA, lg->msg_op, 0, lg->msg, lg->msg_len, true);
        lg->ev[lg->n - 1].compressed = lg->msg_z;
    }
    lg->open = false;
}

/* Whether the parsers of the vectors being checked negotiated permessage-deflate. */
static bool g_deflate;

/*
 * Feeds buf to a fresh parser in the chunks listed (sizes summing to n), checking the calling
 * contract on every call: consumed <= offered, NONE only once all is consumed, DATA points into the
 * bytes just consumed, nothing after CLOSE or ERROR.
 */
static void feed_chunks(struct log *lg, uint64_t max, const uint8_t *in, size_t n,
                        const size_t *chunks, size_t nchunks)
{
    struct ws_parser p;
    uint8_t *buf = malloc(n ? n : 1);
    size_t off = 0;

    assert_non_null(buf);
    memcpy(buf, in, n);
    ws_parser_init(&p, max);
    ws_parser_set_deflate(&p, g_deflate);
    log_init(lg, n);
    for (size_t c = 0; c < nchunks; c++) {
        size_t left = chunks[c];
        for (;;) {
            struct ws_event ev;
            size_t used = ws_parser_feed(&p, buf + off, left, &ev);
            assert_true(used <= left);
            if (ev.type == WS_EV_NONE) {
                assert_int_equal(used, left);
                off += used;
                break;
            }
            assert_true(used > 0);
            if (ev.type == WS_EV_DATA)
                assert_true(ev.data >= buf + off && ev.data + ev.len <= buf + off + used);
            log_event(lg, &ev);
            off += used;
            left -= used;
        }
    }
    assert_int_equal(off, n);
    log_finish(lg);
    free(buf);
}

static void assert_same(const struct want *got, size_t ngot, const struct want *want,
                        const char *mode)
{
    size_t nwant = 0;

    while (want[nwant].type != WS_EV_NONE)
        nwant++;
    if (ngot != nwant)
        fail_msg("%s: %zu events, want %zu", mode, ngot, nwant);
    for (size_t i = 0; i < nwant; i++) {
        if (got[i].type != want[i].type || got[i].opcode != want[i].opcode ||
            got[i].code != want[i].code || got[i].len != want[i].len ||
            got[i].partial != want[i].partial || got[i].compressed != want[i].compressed ||
            (want[i].len && memcmp(got[i].data, want[i].data, want[i].len) != 0))
            fail_msg("%s: event %zu: got type %d op %d code %u len %zu partial %d; "
                     "want type %d op %d code %u len %zu partial %d",
                     mode, i, got[i].type, got[i].opcode, got[i].code, got[i].len, got[i].partial,
                     want[i].type, want[i].opcode, want[i].code, want[i].len, want[i].partial);
    }
}

static void check_one_way(uint64_t max, const uint8_t *in, size_t n, const size_t *chunks,
                          size_t nchunks, const struct want *want, const char *mode)
{
    struct log lg;

    feed_chunks(&lg, max, in, n, chunks, nchunks);
    assert_same(lg.ev, lg.n, want, mode);
    log_free(&lg);
}

/* Whole, byte by byte, and cut in two at every offset (at a sample of offsets for big inputs). */
static void check_all_ways(uint64_t max, const uint8_t *in, size_t n, const struct want *want)
{
    size_t *ones = malloc((n ? n : 1) * sizeof *ones);
    size_t two[2];
    char mode[48];

    assert_non_null(ones);
    check_one_way(max, in, n, &n, 1, want, "whole");
    for (size_t i = 0; i < n; i++)
        ones[i] = 1;
    check_one_way(max, in, n, ones, n, want, "byte by byte");
    free(ones);
    for (size_t cut = 1; cut < n; cut++) {
        if (n > 2048 && cut > 64 && n - cut > 64 && cut % 97 != 0)
            continue;
        two[0] = cut, two[1] = n - cut;
        snprintf(mode, sizeof mode, "split at %zu", cut);
        check_one_way(max, in, n, two, 2, want, mode);
    }
}

static void check_vector(const struct vector *v)
{
    size_t n;
    uint8_t *in = build(v, &n);

    print_message("%s\n", v->name);
    check_all_ways(v->max, in, n, v->want);
    free(in);
}

static void check_vectors(const struct vector *v, size_t count)
{
    for (size_t i = 0; i < count; i++)
        check_vector(&v[i]);
}

#define NVEC(a) (sizeof(a) / sizeof((a)[0]))

/* ---- Vectors ---- */

/* clang-format off */
/* RFC 6455 §5.7, and masked versions of its unmasked examples (mask 37 fa 21 3d as in the RFC). */
static const struct vector rfc_vectors[] = {
    {"5.7 unmasked Hello is rejected", 0, "81 05 48 65 6c 6c 6f", {{0}}, {ERR(1002)}},
    {"5.7 masked Hello", 0, "81 85 37 fa 21 3d 7f 9f 4d 51 58", {{0}}, {TEXT("Hello")}},
    {"5.7 fragmented Hello, masked", 0, "01 83 37 fa 21 3d 7f 9f 4d 80 82 37 fa 21 3d 5b 95",
     {{0}}, {TEXT("Hello")}},
    {"5.7 fragmented Hello, unmasked, is rejected", 0, "01 03 48 65 6c 80 02 6c 6f", {{0}},
     {ERR(1002)}},
    {"5.7 masked ping", 0, "89 85 37 fa 21 3d 7f 9f 4d 51 58", {{0}}, {PING("Hello")}},
    {"5.7 masked pong", 0, "8a 85 37 fa 21 3d 7f 9f 4d 51 58", {{0}}, {PONG("Hello")}},
    {"5.7 unmasked ping is rejected", 0, "89 05 48 65 6c 6c 6f", {{0}}, {ERR(1002)}},
};

static const struct vector data_vectors[] = {
    {"binary", 0, NULL, {FR(0x82, "\x00\x01\xff")}, {BIN("\x00\x01\xff")}},
    {"empty text message", 0, NULL, {FR(0x81, "")}, {TEXT("")}},
    {"empty fragments", 0, NULL, {FR(0x01, ""), FR(0x00, ""), FR(0x80, "")}, {TEXT("")}},
    {"empty first fragment", 0, NULL, {FR(0x02, ""), FR(0x80, "lo")}, {BIN("lo")}},
    {"empty last fragment", 0, NULL, {FR(0x01, "Hel"), FR(0x80, "")}, {TEXT("Hel")}},
    {"two messages", 0, NULL, {FR(0x81, "a"), FR(0x82, "bc")}, {TEXT("a"), BIN("bc")}},
    {"controls between fragments", 0, NULL,
     {FR(0x01, "Hel"), FR(0x89, "p"), FR(0x00, "l"), FR(0x8a, ""), FR(0x80, "o")},
     {PING("p"), PONG(""), TEXT("Hello")}},
    {"ping before message, pong after", 0, NULL,
     {FR(0x89, "12345678901"), FR(0x82, "0123456789abcdef"), FR(0x8a, "x")},
     {PING("12345678901"), BIN("0123456789abcdef"), PONG("x")}},
    {"non-minimal 16-bit length accepted", 0, NULL, {FR(0x81, "Hi", .len_form = 2)}, {TEXT("Hi")}},
    {"non-minimal 64-bit length accepted", 0, NULL, {FR(0x82, "Hi", .len_form = 8)}, {BIN("Hi")}},
    {"input ends mid-message", 0, NULL, {FR(0x01, "abc"), FR(0x00, "de")},
     {PART(WS_OP_TEXT, "abcde")}},
    {"input ends mid-frame", 0, NULL, {FR(0x82, "", .announce = 300)}, {{0}}},
    {"text split inside a code point across fragments", 0, NULL,
     {FR(0x01, "\xe2\x82"), FR(0x80, "\xac")}, {TEXT("\xe2\x82\xac")}},
    {"text kosme", 0, NULL, {FR(0x81, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5")},
     {TEXT("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5")}},
    {"binary is not checked for UTF-8", 0, NULL, {FR(0x82, "\xff\xfe\xc0\x80")},
     {BIN("\xff\xfe\xc0\x80")}},
    {"message exactly at the limit", 10, NULL, {FR(0x02, "01234"), FR(0x80, "56789")},
     {BIN("0123456789")}},
    {"limit counts per message", 4, NULL, {FR(0x81, "abcd"), FR(0x81, "efgh")},
     {TEXT("abcd"), TEXT("efgh")}},
    {"controls do not count towards the limit", 4, NULL,
     {FR(0x01, "ab"), FR(0x89, "ping payload"), FR(0x80, "cd")},
     {PING("ping payload"), TEXT("abcd")}},
    {"no limit", 0, NULL, {FR(0x82, "", .announce = UINT64_C(1) << 62)}, {{0}}},
};

static const struct vector close_vectors[] = {
    {"close without payload", 0, NULL, {FR(0x88, "")}, {CLOSE(1005, "")}},
    {"close with code", 0, NULL, {FR(0x88, "\x03\xe8")}, {CLOSE(1000, "")}},
    {"close with code and reason", 0, NULL, {FR(0x88, "\x03\xe9" "bye \xe2\x82\xac")},
     {CLOSE(1001, "bye \xe2\x82\xac")}},
    {"close with 125-byte payload", 0, NULL,
     {FR(0x88, "\x0f\xa0" "0123456789012345678901234567890123456789012345678901234567890"
               "12345678901234567890123456789012345678901234567890123456789012")},
     {CLOSE(4000, "0123456789012345678901234567890123456789012345678901234567890"
                  "12345678901234567890123456789012345678901234567890123456789012")}},
    {"close inside a fragmented message", 0, NULL, {FR(0x01, "ab"), FR(0x88, "")},
     {CLOSE(1005, ""), PART(WS_OP_TEXT, "ab")}},
    {"input after close is ignored", 0, NULL,
     {FR(0x88, "\x03\xe8"), FR(0x81, "late"), FR(0x82, "", .unmasked = true)},
     {CLOSE(1000, "")}},
};

static const struct vector error_vectors[] = {
    {"unmasked data frame", 0, NULL, {FR(0x81, "Hello", .unmasked = true)}, {ERR(1002)}},
    {"unmasked close frame", 0, NULL, {FR(0x88, "", .unmasked = true)}, {ERR(1002)}},
    {"RSV1 set", 0, NULL, {FR(0xc1, "x")}, {ERR(1002)}},
    {"RSV2 set", 0, NULL, {FR(0xa1, "x")}, {ERR(1002)}},
    {"RSV3 set", 0, NULL, {FR(0x91, "x")}, {ERR(1002)}},
    {"RSV1 on a control frame", 0, NULL, {FR(0xc9, "")}, {ERR(1002)}},
    {"fragmented ping", 0, NULL, {FR(0x09, "")}, {ERR(1002)}},
    {"fragmented close", 0, NULL, {FR(0x08, "")}, {ERR(1002)}},
    {"ping of 126 bytes", 0, NULL, {FR(0x89, "", .announce = 126)}, {ERR(1002)}},
    {"ping length field over 125 even if short", 0, NULL, {FR(0x89, "Hello", .len_form = 2)},
     {ERR(1002)}},
    {"continuation without a message", 0, NULL, {FR(0x80, "x")}, {ERR(1002)}},
    {"non-final continuation without a message", 0, NULL, {FR(0x00, "x")}, {ERR(1002)}},
    {"continuation after a finished message", 0, NULL, {FR(0x81, "a"), FR(0x80, "b")},
     {TEXT("a"), ERR(1002)}},
    {"text inside a fragmented message", 0, NULL, {FR(0x01, "a"), FR(0x81, "b")}, {ERR(1002)}},
    {"binary inside a fragmented message", 0, NULL, {FR(0x02, "a"), FR(0x82, "b")},
     {ERR(1002)}},
    {"64-bit length with the top bit set", 0, NULL,
     {FR(0x82, "", .announce = UINT64_C(1) << 63, .len_form = 8)}, {ERR(1002)}},
    {"64-bit length all ones", 0, NULL, {FR(0x82, "", .announce = UINT64_MAX, .len_form = 8)},
     {ERR(1002)}},
    {"frame over the limit", 10, NULL, {FR(0x82, "", .announce = 11)}, {ERR(1009)}},
    {"huge frame over the limit", 65536, NULL, {FR(0x81, "", .announce = UINT64_C(1) << 40)},
     {ERR(1009)}},
    {"fragments over the limit", 10, NULL, {FR(0x02, "abcdef"), FR(0x80, "ghijk")},
     {ERR(1009)}},
    {"ping then message over the limit", 3, NULL, {FR(0x89, "hi"), FR(0x81, "abcd")},
     {PING("hi"), ERR(1009)}},
    {"invalid UTF-8 in text", 0, NULL, {FR(0x81, "ab\xff")}, {ERR(1007)}},
    {"overlong in text", 0, NULL, {FR(0x81, "\xc0\x80")}, {ERR(1007)}},
    {"surrogate in text", 0, NULL, {FR(0x81, "\xed\xa0\x80")}, {ERR(1007)}},
    {"text ends inside a code point", 0, NULL, {FR(0x81, "\xe2\x82")}, {ERR(1007)}},
    {"text ends inside a code point, empty last fragment", 0, NULL,
     {FR(0x01, "\xe2\x82"), FR(0x80, "")}, {ERR(1007)}},
    {"invalid UTF-8 across fragments", 0, NULL, {FR(0x01, "\xe2"), FR(0x80, "\x28")},
     {ERR(1007)}},
    {"invalid UTF-8 fails before the message ends", 0, NULL,
     {FR(0x01, "ok"), FR(0x00, "\xf4\x90"), FR(0x00, "", .announce = 1000)}, {ERR(1007)}},
    {"close with 1-byte payload", 0, NULL, {FR(0x88, "\x03")}, {ERR(1002)}},
    {"close with 1-byte payload that starts a valid code", 0, NULL, {FR(0x88, "\x0f")},
     {ERR(1002)}},
    {"close with invalid code", 0, NULL, {FR(0x88, "\x03\xe7")}, {ERR(1002)}},
    {"close reason not UTF-8", 0, NULL, {FR(0x88, "\x03\xe8" "\xff")}, {ERR(1007)}},
    {"close reason truncated code point", 0, NULL, {FR(0x88, "\x03\xe8" "\xe2\x82")},
     {ERR(1007)}},
    {"input after an error is ignored", 0, NULL,
     {FR(0x81, "x", .unmasked = true), FR(0x81, "valid"), FR(0x88, "")}, {ERR(1002)}},
};
/* clang-format on */

static void test_ws_parser_rfc_examples(void **state)
{
    (void)state;
    check_vectors(rfc_vectors, NVEC(rfc_vectors));
}

static void test_ws_parser_data_messages(void **state)
{
    (void)state;
    check_vectors(data_vectors, NVEC(data_vectors));
}

static void test_ws_parser_close_frames(void **state)
{
    (void)state;
    check_vectors(close_vectors, NVEC(close_vectors));
}

static void test_ws_parser_errors(void **state)
{
    (void)state;
    check_vectors(error_vectors, NVEC(error_vectors));
}

/*
 * RFC 7692 §6 with permessage-deflate negotiated: RSV1 marks a compressed message on its first
 * frame only; never on continuation or control frames (1002); RSV2/RSV3 stay errors. A compressed
 * message's bytes are not UTF-8 checked (they are DEFLATE data), the wire size is still bounded.
 */
static const struct vector deflate_vectors[] = {
    {"compressed text, bytes not UTF-8", 0, NULL, {FR(0xc1, "\xf2\x48\xcd\xc9\xc9\x07\x00")},
     {ZTEXT("\xf2\x48\xcd\xc9\xc9\x07\x00")}},
    {"compressed binary", 0, NULL, {FR(0xc2, "\x00")}, {ZBIN("\x00")}},
    {"compressed empty text", 0, NULL, {FR(0xc1, "")}, {ZTEXT("")}},
    {"compressed, fragmented: RSV1 on the first frame only", 0, NULL,
     {FR(0x41, "\xff"), FR(0x00, "\xfe"), FR(0x80, "\xfd")}, {ZTEXT("\xff\xfe\xfd")}},
    {"ping between compressed fragments", 0, NULL,
     {FR(0x41, "\xff"), FR(0x89, "p"), FR(0x80, "\xfe")}, {PING("p"), ZTEXT("\xff\xfe")}},
    {"plain text still checked after a compressed one", 0, NULL,
     {FR(0xc1, "\xff"), FR(0x81, "ok"), FR(0x81, "\xff")},
     {ZTEXT("\xff"), TEXT("ok"), ERR(1007)}},
    {"RSV1 on a continuation frame", 0, NULL, {FR(0x41, "a"), FR(0xc0, "b")}, {ERR(1002)}},
    {"RSV1 on a continuation of a plain message", 0, NULL, {FR(0x01, "a"), FR(0xc0, "b")},
     {ERR(1002)}},
    {"RSV1 on a ping", 0, NULL, {FR(0xc9, "")}, {ERR(1002)}},
    {"RSV1 on a pong", 0, NULL, {FR(0xca, "")}, {ERR(1002)}},
    {"RSV1 on a close", 0, NULL, {FR(0xc8, "\x03\xe8")}, {ERR(1002)}},
    {"RSV2 with deflate", 0, NULL, {FR(0xa1, "x")}, {ERR(1002)}},
    {"RSV3 with deflate", 0, NULL, {FR(0x91, "x")}, {ERR(1002)}},
    {"RSV1+RSV2 with deflate", 0, NULL, {FR(0xe1, "x")}, {ERR(1002)}},
    {"compressed frame over max_message_size", 4, NULL, {FR(0xc2, "12345")}, {ERR(1009)}},
};

static void test_ws_parser_deflate_rsv1(void **state)
{
    (void)state;
    g_deflate = true;
    check_vectors(deflate_vectors, NVEC(deflate_vectors));
    g_deflate = false;
    /* Not negotiated: RSV1 is a reserved bit like the others. */
    static const struct vector off[] = {
        {"RSV1 without deflate", 0, NULL, {FR(0xc1, "x")}, {ERR(1002)}},
        {"RSV1 on a continuation without deflate", 0, NULL, {FR(0x01, "a"), FR(0xc0, "b")},
         {ERR(1002)}},
    };
    check_vectors(off, NVEC(off));
}

static void test_ws_parser_reserved_opcodes(void **state)
{
    static const uint8_t ops[] = {0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf};

    (void)state;
    for (size_t i = 0; i < sizeof ops; i++) {
        struct vector v = {"reserved opcode", 0, NULL, {FR(0x80 | ops[i], "")}, {ERR(1002)}};
        print_message("opcode 0x%x\n", ops[i]);
        check_vector(&v);
        /* Also when it arrives between the fragments of a message. */
        struct vector mid = {"reserved opcode mid-message",
                             0,
                             NULL,
                             {FR(0x01, "a"), FR(0x80 | ops[i], "")},
                             {ERR(1002)}};
        check_vector(&mid);
    }
}

static void test_ws_parser_close_codes(void **state)
{
    static const struct {
        uint16_t code;
        bool valid;
    } codes[] = {
        {0, false},    {999, false},  {1000, true},  {1001, true},  {1002, true},   {1003, true},
        {1004, false}, {1005, false}, {1006, false}, {1007, true},  {1008, true},   {1011, true},
        {1012, true},  {1014, true},  {1015, false}, {1016, false}, {2000, false},  {2999, false},
        {3000, true},  {4000, true},  {4999, true},  {5000, false}, {65535, false},
    };

    (void)state;
    for (size_t i = 0; i < NVEC(codes); i++) {
        char payload[3] = {(char)(codes[i].code >> 8), (char)codes[i].code, 0};
        struct vector v = {
            "close code", 0, NULL, {{.b0 = 0x88, .payload = payload, .len = 2}}, {ERR(1002)}};
        print_message("close code %u\n", codes[i].code);
        assert_int_equal(ws_close_code_valid(codes[i].code), codes[i].valid);
        if (codes[i].valid)
            v.want[0] = (struct want)CLOSE(codes[i].code, "");
        check_vector(&v);
    }
}

/* 125 / 126 bytes (7- vs 16-bit length), 65535 / 65536 bytes (16- vs 64-bit), text and binary. */
static void test_ws_parser_long_frames(void **state)
{
    static const size_t sizes[] = {125, 126, 1000, 65535, 65536};

    (void)state;
    for (size_t i = 0; i < NVEC(sizes); i++) {
        size_t len = sizes[i];
        char *payload = malloc(len);
        assert_non_null(payload);
        for (size_t k = 0; k < len; k++)
            payload[k] = (char)('a' + k % 26);
        for (int text = 0; text < 2; text++) {
            struct vector v = {"long frame",
                               (uint64_t)len,
                               NULL,
                               {{.b0 = text ? 0x81 : 0x82, .payload = payload, .len = len}},
                               {{.type = WS_EV_DATA,
                                 .opcode = text ? WS_OP_TEXT : WS_OP_BINARY,
                                 .data = payload,
                                 .len = len}}};
            size_t n;
            uint8_t *in = build(&v, &n);
            print_message("%zu bytes\n", len);
            assert_int_equal(in[1] & 0x7f, len < 126 ? len : len <= 0xffff ? 126 : 127);
            check_all_ways(len, in, n, v.want);
            /* One byte less allowed: the header alone must fail with 1009. */
            struct want too_big[] = {ERR(1009), {0}};
            size_t hdr = n - len;
            check_one_way(len - 1, in, hdr, &hdr, 1, too_big, "limit");
            free(in);
        }
        free(payload);
    }
}

/* ---- Direct checks of the event contract ---- */

static size_t feed_hex(struct ws_parser *p, const char *hex, uint8_t *buf, struct ws_event *ev)
{
    size_t n = unhex(hex, buf);

    return ws_parser_feed(p, buf, n, ev) == n ? n : (size_t)-1;
}

static void test_ws_parser_empty_message_is_one_event(void **state)
{
    struct ws_parser p;
    struct ws_event ev;
    uint8_t buf[16];

    (void)state;
    ws_parser_init(&p, 0);
    assert_int_equal(feed_hex(&p, "81 80 01 02 03 04", buf, &ev), 6);
    assert_int_equal(ev.type, WS_EV_DATA);
    assert_int_equal(ev.opcode, WS_OP_TEXT);
    assert_true(ev.msg_start && ev.msg_end);
    assert_int_equal(ev.len, 0);
    assert_int_equal(ws_parser_feed(&p, buf + 6, 0, &ev), 0);
    assert_int_equal(ev.type, WS_EV_NONE);
}

/* Chunks of one frame: first has msg_start, last msg_end; unmasked in the caller's buffer. */
static void test_ws_parser_chunk_flags_and_in_place_unmask(void **state)
{
    struct ws_parser p;
    struct ws_event ev;
    uint8_t buf[16];
    size_t n = unhex("81 85 37 fa 21 3d 7f 9f 4d 51 58", buf);

    (void)state;
    ws_parser_init(&p, 0);
    assert_int_equal(ws_parser_feed(&p, buf, 4, &ev), 4);
    assert_int_equal(ev.type, WS_EV_NONE);
    assert_int_equal(ws_parser_feed(&p, buf + 4, 2, &ev), 2);
    assert_int_equal(ev.type, WS_EV_NONE);
    assert_int_equal(ws_parser_feed(&p, buf + 6, 3, &ev), 3);
    assert_int_equal(ev.type, WS_EV_DATA);
    assert_true(ev.msg_start && !ev.msg_end);
    assert_ptr_equal(ev.data, buf + 6);
    assert_int_equal(ev.len, 3);
    assert_memory_equal(buf + 6, "Hel", 3);
    assert_int_equal(ws_parser_feed(&p, buf + 9, n - 9, &ev), 2);
    assert_true(!ev.msg_start && ev.msg_end);
    assert_ptr_equal(ev.data, buf + 9);
    assert_memory_equal(buf + 9, "lo", 2);
}

/* The limit bites on the header: none of the announced payload has to arrive. */
static void test_ws_parser_too_big_before_payload(void **state)
{
    struct ws_parser p;
    struct ws_event ev;
    uint8_t buf[16];

    (void)state;
    ws_parser_init(&p, 65536);
    assert_int_equal(
        ws_parser_feed(&p, buf, unhex("82 ff 00 00 00 00 00 10 00 00 01 02 03 04", buf), &ev), 14);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ev.close_code, WS_CLOSE_TOO_BIG);
    assert_non_null(ev.error);
}

/* Bad UTF-8 fails on the chunk holding it, with the frame and message still unfinished. */
static void test_ws_parser_utf8_fails_on_its_chunk(void **state)
{
    struct ws_parser p;
    struct ws_event ev;
    uint8_t buf[32];
    /* TEXT, 10 bytes, zero mask so the payload reads as is: "abc" then F4 90 ... */
    size_t n = unhex("81 8a 00 00 00 00 61 62 63 f4 90 80 80 61 62 63", buf);

    (void)state;
    ws_parser_init(&p, 0);
    assert_int_equal(ws_parser_feed(&p, buf, 9, &ev), 9);
    assert_int_equal(ev.type, WS_EV_DATA);
    assert_int_equal(ev.len, 3);
    assert_int_equal(ws_parser_feed(&p, buf + 9, 2, &ev), 2);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ev.close_code, WS_CLOSE_BAD_DATA);
    assert_int_equal(ws_parser_feed(&p, buf + 11, n - 11, &ev), n - 11);
    assert_int_equal(ev.type, WS_EV_NONE);
}

static void test_ws_parser_control_payload_is_whole(void **state)
{
    struct ws_parser p;
    struct ws_event ev;
    uint8_t buf[16];
    size_t n = unhex("89 85 37 fa 21 3d 7f 9f 4d 51 58", buf);

    (void)state;
    ws_parser_init(&p, 0);
    for (size_t i = 0; i + 1 < n; i++) {
        assert_int_equal(ws_parser_feed(&p, buf + i, 1, &ev), 1);
        assert_int_equal(ev.type, WS_EV_NONE);
    }
    assert_int_equal(ws_parser_feed(&p, buf + n - 1, 1, &ev), 1);
    assert_int_equal(ev.type, WS_EV_PING);
    assert_int_equal(ev.len, 5);
    assert_memory_equal(ev.data, "Hello", 5);
}

static void test_ws_parser_nothing_after_close(void **state)
{
    struct ws_parser p;
    struct ws_event ev;
    uint8_t buf[32];
    size_t n = unhex("88 82 00 00 00 00 03 e8 81 81 00 00 00 00 61", buf);

    (void)state;
    ws_parser_init(&p, 0);
    assert_int_equal(ws_parser_feed(&p, buf, n, &ev), 8);
    assert_int_equal(ev.type, WS_EV_CLOSE);
    assert_int_equal(ev.close_code, 1000);
    assert_int_equal(ev.len, 0);
    assert_int_equal(ws_parser_feed(&p, buf + 8, n - 8, &ev), n - 8);
    assert_int_equal(ev.type, WS_EV_NONE);
    assert_int_equal(ws_parser_feed(&p, buf, n, &ev), n);
    assert_int_equal(ev.type, WS_EV_NONE);
}

/* ---- Encoders ---- */

/* ---- The word-at-a-time paths: unmasking, the ASCII shortcut, UTF-8 across words and frames ---- */

/* One masked client frame, first byte b0, with the given key; returns its length. */
static size_t mk_frame(uint8_t *out, uint8_t b0, const uint8_t *pl, size_t len, const uint8_t key[4])
{
    size_t n = 0;

    out[n++] = b0;
    if (len < 126) {
        out[n++] = (uint8_t)(0x80 | len);
    } else {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    }
    memcpy(out + n, key, 4);
    n += 4;
    for (size_t i = 0; i < len; i++)
        out[n++] = pl[i] ^ key[i & 3];
    return n;
}

/*
 * Feed buf[0..n) in two calls split at `cut`; joins DATA bytes into msg. Returns the number of
 * complete messages, or -(close code) on an ERROR event.
 */
static int feed_split(uint8_t *buf, size_t n, size_t cut, uint8_t *msg, size_t *msg_len)
{
    struct ws_parser p;
    struct ws_event ev;
    int msgs = 0;
    size_t bounds[2] = {cut, n}, off = 0;

    ws_parser_init(&p, 0);
    *msg_len = 0;
    for (int part = 0; part < 2; part++) {
        while (off < bounds[part]) {
            off += ws_parser_feed(&p, buf + off, bounds[part] - off, &ev);
            if (ev.type == WS_EV_NONE)
                break;
            if (ev.type == WS_EV_ERROR)
                return -(int)ev.close_code;
            assert_int_equal(ev.type, WS_EV_DATA);
            memcpy(msg + *msg_len, ev.data, ev.len);
            *msg_len += ev.len;
            if (ev.msg_end)
                msgs++;
        }
    }
    return msgs;
}

static void test_ws_parser_unmask_every_length_alignment_and_split(void **state)
{
    static const uint8_t keys[][4] = {
        {0, 0, 0, 0}, {0xff, 0xff, 0xff, 0xff}, {0x37, 0xfa, 0x21, 0x3d}, {1, 2, 3, 4},
        {0x80, 0x80, 0x80, 0x80},
    };
    uint8_t pl[64], space[16 + 8 + 64], msg[64];
    size_t msg_len;

    (void)state;
    for (size_t len = 0; len <= 64; len++) {
        for (size_t i = 0; i < len; i++)
            pl[i] = (uint8_t)(i * 37 + len);
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            for (size_t align = 0; align < 16; align++) {
                uint8_t *buf = space + align; /* unaligned starts of header and payload */
                size_t n = mk_frame(buf, 0x82, pl, len, keys[k]);
                uint8_t copy[8 + 64];
                memcpy(copy, buf, n);
                for (size_t cut = 0; cut <= n; cut++) {
                    memcpy(buf, copy, n);
                    assert_int_equal(feed_split(buf, n, cut, msg, &msg_len), 1);
                    assert_int_equal(msg_len, len);
                    assert_memory_equal(msg, pl, len);
                }
            }
        }
    }
}

/* Text of `len` ASCII bytes with `seq` (seq_len bytes) written at `at`. */
static void text_with(uint8_t *pl, size_t len, size_t at, const char *seq, size_t seq_len)
{
    for (size_t i = 0; i < len; i++)
        pl[i] = (uint8_t)('a' + i % 26);
    memcpy(pl + at, seq, seq_len);
}

static void test_ws_parser_utf8_every_position(void **state)
{
    static const struct {
        const char *s;
        size_t len;
        bool valid;
    } seqs[] = {
        {"\x80", 1, false},             /* lone continuation */
        {"\xff", 1, false},             /* never in UTF-8 */
        {"\xc0\xaf", 2, false},         /* overlong */
        {"\xed\xa0\x80", 3, false},     /* surrogate */
        {"\xf4\x90\x80\x80", 4, false}, /* above U+10FFFF */
        {"\xe2\x82\x28", 3, false},     /* cut by ASCII */
        {"\xc3\xa9", 2, true},
        {"\xe2\x82\xac", 3, true},
        {"\xf0\x9f\x98\x80", 4, true},
    };
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t pl[64], space[16 + 8 + 64], msg[64];
    size_t msg_len;

    (void)state;
    for (size_t q = 0; q < sizeof(seqs) / sizeof(seqs[0]); q++) {
        for (size_t len = seqs[q].len; len <= 64; len++) {
            for (size_t at = 0; at + seqs[q].len <= len; at++) {
                size_t align = (len + at) % 16, n;
                uint8_t *buf = space + align;
                text_with(pl, len, at, seqs[q].s, seqs[q].len);
                n = mk_frame(buf, 0x81, pl, len, key);
                uint8_t copy[8 + 64];
                memcpy(copy, buf, n);
                /* whole, and split inside the header, at the payload start and mid-payload */
                size_t cuts[] = {n, 1, n - len, n - len + at, n - len + at + 1, n - 1};
                for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
                    memcpy(buf, copy, n);
                    int r = feed_split(buf, n, cuts[c], msg, &msg_len);
                    if (seqs[q].valid) {
                        assert_int_equal(r, 1);
                        assert_int_equal(msg_len, len);
                        assert_memory_equal(msg, pl, len);
                    } else {
                        assert_int_equal(r, -WS_CLOSE_BAD_DATA);
                    }
                }
            }
        }
    }
}

/* A message in two frames (text, then continuation) split at every byte of its payload. */
static void test_ws_parser_utf8_code_point_across_frames(void **state)
{
    static const struct {
        const char *s;
        size_t len;
        bool valid;
    } seqs[] = {
        {"\xc3\xa9", 2, true},
        {"\xe2\x82\xac", 3, true},
        {"\xf0\x9f\x98\x80", 4, true},
        {"\xe2\x82\x28", 3, false},
        {"\xf0\x9f\x98", 3, false}, /* the message ends inside the character */
    };
    static const uint8_t k1[4] = {0x11, 0x22, 0x33, 0x44}, k2[4] = {0xa5, 0x5a, 0x0f, 0xf0};
    uint8_t pl[64], buf[2 * (8 + 64)], msg[64];
    size_t msg_len;

    (void)state;
    for (size_t q = 0; q < sizeof(seqs) / sizeof(seqs[0]); q++) {
        for (size_t pad = 0; pad <= 20; pad++) {
            size_t len = pad + seqs[q].len + (seqs[q].valid ? pad % 9 : 0);
            text_with(pl, len, pad, seqs[q].s, seqs[q].len);
            for (size_t split = 0; split <= len; split++) {
                size_t n = mk_frame(buf, 0x01, pl, split, k1);
                n += mk_frame(buf + n, 0x80, pl + split, len - split, k2);
                for (size_t cut = 0; cut <= n; cut += 5) {
                    uint8_t b[sizeof(buf)];
                    memcpy(b, buf, n);
                    int r = feed_split(b, n, cut, msg, &msg_len);
                    if (seqs[q].valid) {
                        assert_int_equal(r, 1);
                        assert_int_equal(msg_len, len);
                        assert_memory_equal(msg, pl, len);
                    } else {
                        assert_int_equal(r, -WS_CLOSE_BAD_DATA);
                    }
                }
            }
        }
    }
}

static void test_ws_frame_header_lengths(void **state)
{
    static const struct {
        bool fin;
        enum ws_opcode op;
        uint64_t len;
        const char *hex;
    } cases[] = {
        {true, WS_OP_TEXT, 0, "81 00"},
        {true, WS_OP_TEXT, 125, "81 7d"},
        {true, WS_OP_BINARY, 126, "82 7e 00 7e"},
        {true, WS_OP_BINARY, 65535, "82 7e ff ff"},
        {true, WS_OP_BINARY, 65536, "82 7f 00 00 00 00 00 01 00 00"},
        {false, WS_OP_TEXT, 5, "01 05"},
        {false, WS_OP_CONT, UINT64_C(0x0102030405), "00 7f 00 00 00 01 02 03 04 05"},
        {true, WS_OP_CLOSE, 2, "88 02"},
        {true, WS_OP_PING, 0, "89 00"},
        {true, WS_OP_PONG, 125, "8a 7d"},
    };

    (void)state;
    for (size_t i = 0; i < NVEC(cases); i++) {
        uint8_t out[WS_MAX_HDR], want[WS_MAX_HDR];
        size_t nwant = unhex(cases[i].hex, want);
        print_message("%s\n", cases[i].hex);
        assert_int_equal(ws_frame_header(out, cases[i].fin, cases[i].op, cases[i].len), nwant);
        assert_memory_equal(out, want, nwant);
    }
}

/* What we encode, a client would send back masked: our own parser must read the same frame. */
static void test_ws_frame_header_round_trip(void **state)
{
    static const uint64_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 100000};

    (void)state;
    for (size_t i = 0; i < NVEC(lens); i++) {
        uint8_t hdr[WS_MAX_HDR];
        size_t h = ws_frame_header(hdr, true, WS_OP_BINARY, lens[i]);
        size_t n = h + 4 + (size_t)lens[i];
        uint8_t *in = calloc(1, n);
        struct ws_parser p;
        struct ws_event ev;
        assert_non_null(in);
        memcpy(in, hdr, h);
        in[1] |= 0x80;
        ws_parser_init(&p, 0);
        assert_int_equal(ws_parser_feed(&p, in, n, &ev), n);
        assert_int_equal(ev.type, WS_EV_DATA);
        assert_int_equal(ev.len, lens[i]);
        assert_true(ev.msg_start && ev.msg_end);
        free(in);
    }
}

static void test_ws_close_payload_encoding(void **state)
{
    uint8_t out[WS_MAX_CTRL_PAYLOAD];
    char longer[201];

    (void)state;
    assert_int_equal(ws_close_payload(out, 1000, "bye"), 5);
    assert_memory_equal(out, "\003\350bye", 5);
    assert_int_equal(ws_close_payload(out, 4001, NULL), 2);
    assert_memory_equal(out, "\x0f\xa1", 2);
    assert_int_equal(ws_close_payload(out, 1011, ""), 2);
    assert_int_equal(ws_close_payload(out, 0, "ignored"), 0);
    memset(longer, 'x', 200);
    longer[200] = '\0';
    assert_int_equal(ws_close_payload(out, 1009, longer), WS_MAX_CTRL_PAYLOAD);
    longer[123] = '\0';
    assert_int_equal(ws_close_payload(out, 1009, longer), WS_MAX_CTRL_PAYLOAD);
    longer[122] = '\0';
    assert_int_equal(ws_close_payload(out, 1009, longer), WS_MAX_CTRL_PAYLOAD - 1);
}

/* The reason is cut at a code point boundary, never inside a character, and drops bad bytes. */
static void test_ws_close_payload_truncates_at_utf8_boundary(void **state)
{
    static const struct {
        const char *unit; /* repeated to fill the reason */
        size_t want_reason;
    } cases[] = {
        {"\xc3\xa9", 122},         /* 2-byte: 61 fit in 123 */
        {"\xe2\x82\xac", 123},     /* 3-byte: exactly 41 fit */
        {"\xf0\x9f\x98\x80", 120}, /* 4-byte: 30 fit */
        {"a\xe2\x82\xac", 121},    /* 30 x "a€" = 120, then a lone "a" fits and "€" does not */
    };

    (void)state;
    for (size_t i = 0; i < NVEC(cases); i++) {
        char reason[400] = "";
        uint8_t out[WS_MAX_CTRL_PAYLOAD];
        size_t n;
        while (strlen(reason) + strlen(cases[i].unit) < sizeof reason)
            strcat(reason, cases[i].unit);
        n = ws_close_payload(out, 1000, reason);
        print_message("unit %zu bytes -> payload %zu\n", strlen(cases[i].unit), n);
        assert_true(utf8_valid(out + 2, n - 2));
        assert_memory_equal(out + 2, reason, n - 2);
        assert_int_equal(n - 2, cases[i].want_reason);
    }
    /* Bytes that are not UTF-8 end the reason there. */
    assert_int_equal(ws_close_payload((uint8_t[WS_MAX_CTRL_PAYLOAD]){0}, 1000, "ab\377cd"), 4);
}

/* A payload we build, sent back by a client, parses to the same code and reason. */
static void test_ws_close_payload_round_trip(void **state)
{
    uint8_t payload[WS_MAX_CTRL_PAYLOAD];
    size_t n = ws_close_payload(payload, 3001, "going \xe2\x82\xac away");
    struct vector v = {"round trip",
                       0,
                       NULL,
                       {{.b0 = 0x88, .payload = (const char *)payload, .len = n}},
                       {CLOSE(3001, "going \xe2\x82\xac away")}};

    (void)state;
    check_vector(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ws_parser_rfc_examples),
        cmocka_unit_test(test_ws_parser_data_messages),
        cmocka_unit_test(test_ws_parser_close_frames),
        cmocka_unit_test(test_ws_parser_errors),
        cmocka_unit_test(test_ws_parser_reserved_opcodes),
        cmocka_unit_test(test_ws_parser_deflate_rsv1),
        cmocka_unit_test(test_ws_parser_close_codes),
        cmocka_unit_test(test_ws_parser_long_frames),
        cmocka_unit_test(test_ws_parser_empty_message_is_one_event),
        cmocka_unit_test(test_ws_parser_chunk_flags_and_in_place_unmask),
        cmocka_unit_test(test_ws_parser_too_big_before_payload),
        cmocka_unit_test(test_ws_parser_utf8_fails_on_its_chunk),
        cmocka_unit_test(test_ws_parser_control_payload_is_whole),
        cmocka_unit_test(test_ws_parser_nothing_after_close),
        cmocka_unit_test(test_ws_parser_unmask_every_length_alignment_and_split),
        cmocka_unit_test(test_ws_parser_utf8_every_position),
        cmocka_unit_test(test_ws_parser_utf8_code_point_across_frames),
        cmocka_unit_test(test_ws_frame_header_lengths),
        cmocka_unit_test(test_ws_frame_header_round_trip),
        cmocka_unit_test(test_ws_close_payload_encoding),
        cmocka_unit_test(test_ws_close_payload_truncates_at_utf8_boundary),
        cmocka_unit_test(test_ws_close_payload_round_trip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
