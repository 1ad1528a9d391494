/*
 * ws_parser.c -- RFC 6455 server-side frame parser and frame/close encoders. Bytes in, events out;
 * no sockets, no allocation, no logging: what an event means for the connection is conn.c's call.
 */
#include "proto/ws_parser.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "base/utf8.h"
#include "proto/ws_deflate.h"

#define WS_B0_FIN    0x80
#define WS_B0_RSV    0x70
#define WS_B0_RSV1   0x40
#define WS_B0_OPCODE 0x0F
#define WS_B1_MASK   0x80
#define WS_B1_LEN    0x7F

static bool ws_is_control(uint8_t op)
{
    return (op & 0x08) != 0;
}

void ws_parser_init(struct ws_parser *p, uint64_t max_message_size)
{
    memset(p, 0, sizeof *p);
    p->max_message_size = max_message_size;
    p->hdr_need = 2;
    p->utf8_state = UTF8_ACCEPT;
}

void ws_parser_set_deflate(struct ws_parser *p, bool negotiated)
{
    p->deflate = negotiated;
}

static size_t ws_fail(struct ws_parser *p, struct ws_event *ev, uint16_t code, const char *why,
                      size_t consumed)
{
    p->done = true;
    ev->type = WS_EV_ERROR;
    ev->close_code = code;
    ev->error = why;
    return consumed;
}

/*
 * XOR n payload bytes with the mask, `offset` bytes into the frame's payload, and say whether any
 * unmasked byte has its top bit set (false: the bytes are ASCII). Text is checked for UTF-8 right
 * after, so noting ASCII here, on words already in registers, lets an ASCII chunk skip the
 * validator's pass. The key is rotated to the offset once; the bulk goes 16 bytes at a time (SSE2,
 * which every x86-64 has; two 8-byte words elsewhere). memcpy keeps unaligned access legal and the
 * key byte order right on any endianness.
 */
static bool ws_unmask(uint8_t *d, size_t n, const uint8_t mask[4], uint64_t offset)
{
    uint8_t m8[8], k[8];
    uint64_t key, w, hi = 0;
    size_t i = 0;

    memcpy(m8, mask, 4);
    memcpy(m8 + 4, mask, 4);
    memcpy(k, m8 + (offset & 3), 4);
    memcpy(k + 4, k, 4);
    memcpy(&key, k, sizeof key);
#if defined(__SSE2__)
    if (n >= 16) {
        __m128i vkey = _mm_set1_epi64x((long long)key), vhi = _mm_setzero_si128();
        for (; n - i >= 16; i += 16) {
            __m128i v = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(const void *)(d + i)), vkey);
            _mm_storeu_si128((__m128i *)(void *)(d + i), v);
            vhi = _mm_or_si128(vhi, v);
        }
        hi = (uint64_t)(unsigned)_mm_movemask_epi8(vhi);
        hi = hi ? 0x80 : 0;
    }
#else
    for (; n - i >= 16; i += 16) {
        uint64_t w2;
        memcpy(&w, d + i, sizeof w);
        memcpy(&w2, d + i + 8, sizeof w2);
        w ^= key;
        w2 ^= key;
        memcpy(d + i, &w, sizeof w);
        memcpy(d + i + 8, &w2, sizeof w2);
        hi |= w | w2;
    }
#endif
    if (n - i >= 8) {
        memcpy(&w, d + i, sizeof w);
        w ^= key;
        memcpy(d + i, &w, sizeof w);
        hi |= w;
        i += 8;
    }
    /* i is a multiple of 8 here, so k[i & 7] is still the byte for position i. */
    for (; i < n; i++) {
        d[i] ^= k[i & 7];
        hi |= d[i];
    }
    return (hi & UINT64_C(0x8080808080808080)) != 0;
}

/*
 * Checks that need only the first two header bytes, done before the rest of the header arrives so a
 * bad frame fails on its second byte whatever the chunking. Returns NULL or the error text; *code
 * is the close code.
 */
static const char *ws_check_start(const struct ws_parser *p, uint16_t *code)
{
    uint8_t b0 = p->hdr[0], b1 = p->hdr[1];
    uint8_t op = b0 & WS_B0_OPCODE;

    *code = WS_CLOSE_PROTOCOL;
    /*
     * RFC 6455 §5.2: RSV bits MUST be 0 unless an extension says otherwise. The only one we
     * negotiate is permessage-deflate, whose RSV1 marks a compressed message on its first frame
     * (RFC 7692 §6): never on continuation or control frames.
     */
    if (b0 & (WS_B0_RSV & ~WS_B0_RSV1))
        return "reserved bits set";
    if ((b0 & WS_B0_RSV1) && !ws_deflate_rsv1_allowed(p->deflate, op))
        return p->deflate ? "RSV1 on a control or continuation frame" : "reserved bits set";
    if (op > WS_OP_BINARY && op != WS_OP_CLOSE && op != WS_OP_PING && op != WS_OP_PONG)
        return "reserved opcode";
    /* RFC 6455 §5.1: the server MUST close the connection upon receiving an unmasked frame. */
    if (!(b1 & WS_B1_MASK))
        return "unmasked client frame";
    if (ws_is_control(op)) {
        /* RFC 6455 §5.5: control frames are <= 125 bytes and never fragmented. */
        if (!(b0 & WS_B0_FIN))
            return "fragmented control frame";
        if ((b1 & WS_B1_LEN) > WS_MAX_CTRL_PAYLOAD)
            return "control frame too long";
        return NULL;
    }
    /* RFC 6455 §5.4: a continuation needs an open message; a new message needs none open. */
    if (op == WS_OP_CONT && !p->in_message)
        return "continuation without a message";
    if (op != WS_OP_CONT && p->in_message)
        return "new message inside a fragmented one";
    return NULL;
}

/* Bytes the whole header takes, from the 7-bit length field; every client frame carries a mask. */
static uint8_t ws_header_size(uint8_t b1)
{
    uint8_t len7 = b1 & WS_B1_LEN;

    return (uint8_t)(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4);
}

/*
 * The header is complete: set up the frame, or fail. Non-minimal length encodings (126 + a 16-bit
 * value below 126, 127 + a 64-bit value below 65536) break RFC 6455 §5.2's "minimal number of bytes
 * MUST be used", but the value is still unambiguous, rejecting them protects nothing, and common
 * servers accept them too, so we do.
 */
static const char *ws_start_frame(struct ws_parser *p, uint16_t *code)
{
    uint8_t len7 = p->hdr[1] & WS_B1_LEN;
    const uint8_t *m = p->hdr + 2;
    uint64_t len = len7;

    *code = WS_CLOSE_PROTOCOL;
    if (len7 == 126) {
        len = (uint64_t)m[0] << 8 | m[1];
        m += 2;
    } else if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | m[i];
        m += 8;
        /* RFC 6455 §5.2: the most significant bit MUST be 0. */
        if (len >> 63)
            return "64-bit length has the top bit set";
    }
    p->fin = (p->hdr[0] & WS_B0_FIN) != 0;
    p->opcode = p->hdr[0] & WS_B0_OPCODE;
    memcpy(p->mask, m, 4);
    p->remaining = len;
    p->mask_offset = 0;
    p->in_payload = true;
    p->hdr_have = 0;
    p->hdr_need = 2;
    if (ws_is_control(p->opcode)) {
        p->ctrl_len = 0;
        return NULL;
    }
    if (p->opcode != WS_OP_CONT) {
        p->in_message = true;
        p->msg_opcode = p->opcode;
        p->msg_size = 0;
        p->utf8_state = UTF8_ACCEPT;
        p->msg_compressed = (p->hdr[0] & WS_B0_RSV1) != 0;
    }
    /* Checked here, before any payload is read, so a huge announced frame costs us nothing. */
    if (p->max_message_size && len > p->max_message_size - p->msg_size) {
        *code = WS_CLOSE_TOO_BIG;
        return "message too big";
    }
    p->msg_size += len;
    return NULL;
}

/* A control frame's payload is all in p->ctrl: turn it into its event. */
static size_t ws_finish_control(struct ws_parser *p, struct ws_event *ev, size_t consumed)
{
    p->in_payload = false;
    ev->opcode = p->opcode;
    ev->data = p->ctrl;
    ev->len = p->ctrl_len;
    if (p->opcode == WS_OP_PING) {
        ev->type = WS_EV_PING;
        return consumed;
    }
    if (p->opcode == WS_OP_PONG) {
        ev->type = WS_EV_PONG;
        return consumed;
    }
    /* RFC 6455 §5.5.1: an optional 2-byte code, then an optional UTF-8 reason. */
    if (p->ctrl_len == 0) {
        ev->close_code = WS_CLOSE_NO_STATUS;
    } else {
        uint16_t code;
        if (p->ctrl_len == 1)
            return ws_fail(p, ev, WS_CLOSE_PROTOCOL, "close payload of 1 byte", consumed);
        code = (uint16_t)(p->ctrl[0] << 8 | p->ctrl[1]);
        if (!ws_close_code_valid(code))
            return ws_fail(p, ev, WS_CLOSE_PROTOCOL, "invalid close code", consumed);
        if (!utf8_valid(p->ctrl + 2, p->ctrl_len - 2u))
            return ws_fail(p, ev, WS_CLOSE_BAD_DATA, "close reason is not UTF-8", consumed);
        ev->close_code = code;
        ev->data = p->ctrl + 2;
        ev->len = p->ctrl_len - 2u;
    }
    ev->type = WS_EV_CLOSE;
    p->done = true;
    return consumed;
}

/*
 * Deliver n payload bytes of a data frame (n may be 0 only for a frame that is empty). The UTF-8
 * state runs across chunks and fragments, so invalid text fails on the chunk that holds the bad
 * byte.
 */
static size_t ws_data_chunk(struct ws_parser *p, struct ws_event *ev, uint8_t *d, size_t n,
                            size_t consumed)
{
    /* Only an empty final chunk carries no bytes, so "nothing delivered yet" means first event. */
    uint64_t delivered = p->msg_size - p->remaining;
    bool end;

    bool non_ascii = ws_unmask(d, n, p->mask, p->mask_offset);
    p->mask_offset += n;
    p->remaining -= n;
    end = p->fin && p->remaining == 0;
    /*
     * A compressed message's text is checked by the caller, after inflating. ASCII bytes at a code
     * point boundary leave the validator at that boundary, so such a chunk needs no pass.
     */
    if (p->msg_opcode == WS_OP_TEXT && !p->msg_compressed) {
        if ((non_ascii || p->utf8_state != UTF8_ACCEPT) &&
            utf8_feed(&p->utf8_state, d, n) == UTF8_REJECT)
            return ws_fail(p, ev, WS_CLOSE_BAD_DATA, "invalid UTF-8 in text message", consumed);
        if (end && p->utf8_state != UTF8_ACCEPT)
            return ws_fail(p, ev, WS_CLOSE_BAD_DATA, "text message ends inside a character",
                           consumed);
    }
    ev->type = WS_EV_DATA;
    ev->opcode = p->msg_opcode;
    ev->msg_start = delivered == 0;
    ev->msg_end = end;
    ev->compressed = p->msg_compressed;
    ev->data = d;
    ev->len = n;
    if (p->remaining == 0) {
        p->in_payload = false;
        if (p->fin)
            p->in_message = false;
    }
    return consumed;
}

size_t ws_parser_feed(struct ws_parser *p, uint8_t *buf, size_t len, struct ws_event *ev)
{
    size_t pos = 0;
    uint16_t code;
    const char *why;

    memset(ev, 0, sizeof *ev);
    if (p->done)
        return len;
    while (pos < len) {
        if (!p->in_payload) {
            if (p->hdr_have == 0 && len - pos >= 2) {
                /*
                 * The usual case, a header that starts in this buffer: the same checks as below
                 * without gathering it byte run by byte run.
                 */
                size_t rest;
                p->hdr[0] = buf[pos];
                p->hdr[1] = buf[pos + 1];
                pos += 2;
                p->hdr_have = 2;
                why = ws_check_start(p, &code);
                if (why)
                    return ws_fail(p, ev, code, why, pos);
                p->hdr_need = ws_header_size(p->hdr[1]);
                rest = (size_t)p->hdr_need - 2;
                if (len - pos < rest)
                    continue; /* the rest of the header comes in a later call */
                if (len - pos >= WS_MAX_HDR - 2)
                    memcpy(p->hdr + 2, buf + pos, WS_MAX_HDR - 2); /* fixed size: no call */
                else
                    memcpy(p->hdr + 2, buf + pos, rest);
                pos += rest;
                p->hdr_have = p->hdr_need;
            } else {
                size_t take = (size_t)(p->hdr_need - p->hdr_have);
                if (take > len - pos)
                    take = len - pos;
                memcpy(p->hdr + p->hdr_have, buf + pos, take);
                p->hdr_have = (uint8_t)(p->hdr_have + take);
                pos += take;
                if (p->hdr_have < p->hdr_need)
                    break;
                if (p->hdr_need == 2) {
                    why = ws_check_start(p, &code);
                    if (why)
                        return ws_fail(p, ev, code, why, pos);
                    p->hdr_need = ws_header_size(p->hdr[1]);
                    continue;
                }
            }
            why = ws_start_frame(p, &code);
            if (why)
                return ws_fail(p, ev, code, why, pos);
            if (p->remaining > 0)
                continue;
            if (ws_is_control(p->opcode))
                return ws_finish_control(p, ev, pos);
            /*
             * An empty final frame still ends the message, so it gets its (empty) event. An empty
             * non-final frame changes nothing a consumer could see, so it gets none.
             */
            if (p->fin)
                return ws_data_chunk(p, ev, buf + pos, 0, pos);
            p->in_payload = false;
            continue;
        }

        size_t n = len - pos;
        if (n > p->remaining)
            n = (size_t)p->remaining;
        if (ws_is_control(p->opcode)) {
            /* Gathered so a ping or close is one event however the bytes were split. */
            ws_unmask(buf + pos, n, p->mask, p->mask_offset);
            memcpy(p->ctrl + p->ctrl_len, buf + pos, n);
            p->ctrl_len = (uint8_t)(p->ctrl_len + n);
            p->mask_offset += n;
            p->remaining -= n;
            pos += n;
            if (p->remaining == 0)
                return ws_finish_control(p, ev, pos);
            continue;
        }
        return ws_data_chunk(p, ev, buf + pos, n, pos + n);
    }
    return pos;
}

size_t ws_frame_header(uint8_t out[WS_MAX_HDR], bool fin, enum ws_opcode op, uint64_t payload_len)
{
    out[0] = (uint8_t)((fin ? WS_B0_FIN : 0) | ((unsigned)op & WS_B0_OPCODE));
    if (payload_len < 126) {
        out[1] = (uint8_t)payload_len;
        return 2;
    }
    if (payload_len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    return 10;
}

size_t ws_close_payload(uint8_t out[WS_MAX_CTRL_PAYLOAD], uint16_t code, const char *reason)
{
    const uint8_t *r = (const uint8_t *)(reason ? reason : "");
    uint32_t st = UTF8_ACCEPT;
    size_t keep = 0;

    if (code == 0)
        return 0;
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    /*
     * Keep the longest prefix that ends on a code point boundary and fits: cutting inside a
     * character (or passing on bytes that are not UTF-8) would make the peer fail the close with
     * 1007.
     */
    for (size_t i = 0; i < WS_MAX_CTRL_PAYLOAD - 2 && r[i] != '\0'; i++) {
        if (utf8_feed(&st, r + i, 1) == UTF8_REJECT)
            break;
        if (st == UTF8_ACCEPT)
            keep = i + 1;
    }
    memcpy(out + 2, r, keep);
    return 2 + keep;
}

bool ws_close_code_valid(uint16_t code)
{
    /*
     * RFC 6455 §7.4.1/§7.4.2 and the IANA registry: 1004 is reserved, 1005/1006/1015 must never be
     * sent, 1016..2999 are unassigned, 3000..4999 belong to libraries and applications.
     */
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}
