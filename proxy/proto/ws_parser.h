/*
 * ws_parser.h -- sans-I/O RFC 6455 codec, server side: bytes in, events out.
 * No sockets, no libevent, no allocation; the glue (conn.c) decides what an event means for the connection.
 */
#ifndef WSP_WS_PARSER_H
#define WSP_WS_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ws_opcode {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* RFC 6455 §7.4.1 close codes the server sends. */
enum ws_close_code {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005, /* never on the wire: "close frame had no code" */
    WS_CLOSE_ABNORMAL = 1006,  /* never on the wire: "TCP went away without a close frame" */
    WS_CLOSE_BAD_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
    WS_CLOSE_TRY_AGAIN = 1013,
};

#define WS_MAX_HDR 14          /* 2 + 8 (64-bit length) + 4 (mask) */
#define WS_MAX_CTRL_PAYLOAD 125 /* RFC 6455 §5.5 */

enum ws_event_type {
    WS_EV_NONE = 0, /* nothing complete yet: feed more bytes */
    WS_EV_DATA,     /* a chunk of a text/binary message (possibly empty) */
    WS_EV_PING,     /* a complete ping; answer with a pong carrying data/len */
    WS_EV_PONG,     /* a complete pong */
    WS_EV_CLOSE,    /* a valid close frame; the parser accepts nothing after it */
    WS_EV_ERROR,    /* protocol violation; close with close_code; the parser accepts nothing after it */
};

struct ws_event {
    enum ws_event_type type;
    uint8_t opcode;      /* DATA: the message's opcode (WS_OP_TEXT or WS_OP_BINARY), never CONT */
    bool msg_start;      /* DATA: these are the first bytes of a new message */
    bool msg_end;        /* DATA: the message is complete after these bytes (final fragment fully read) */
    bool compressed;     /* DATA: the message's first frame had RSV1 (permessage-deflate): the bytes
                            are compressed and their UTF-8 was not checked (the caller inflates and
                            checks the inflated text) */
    const uint8_t *data; /* DATA: unmasked bytes inside the caller's buffer; PING/PONG: payload;
                            CLOSE: reason (UTF-8, validated). Valid until the next ws_parser_feed call. */
    size_t len;
    uint16_t close_code; /* CLOSE: code the peer sent (WS_CLOSE_NO_STATUS when the payload was empty);
                            ERROR: the code the server must close with (1002, 1007 or 1009) */
    const char *error;   /* ERROR: short static text for logs and the close reason */
};

/* Parser state. Treat fields as private; ws_parser_init sets them. */
struct ws_parser {
    uint64_t max_message_size; /* 0 = unlimited */
    /* frame header being read */
    uint8_t hdr[WS_MAX_HDR];
    uint8_t hdr_have;
    uint8_t hdr_need;
    /* current frame */
    uint8_t opcode;
    bool fin;
    uint8_t mask[4];
    uint64_t remaining;   /* payload bytes of the current frame still to read */
    uint64_t mask_offset; /* bytes of the current frame's payload already unmasked */
    bool in_payload;
    /* message being reassembled */
    bool in_message;
    uint8_t msg_opcode;
    uint64_t msg_size;
    uint32_t utf8_state;
    bool msg_compressed; /* the current message had RSV1 */
    bool deflate;        /* permessage-deflate negotiated: RSV1 allowed on a message's first frame */
    /* control frame payloads are collected here so the event is whole */
    uint8_t ctrl[WS_MAX_CTRL_PAYLOAD];
    uint8_t ctrl_len;
    bool done; /* a close frame or an error ended the stream */
};

void ws_parser_init(struct ws_parser *p, uint64_t max_message_size);

/*
 * permessage-deflate was negotiated (RFC 7692): from now on RSV1 is accepted on the first frame of a
 * text or binary message (ws_deflate_rsv1_allowed), and such a message's DATA events say
 * `compressed`: their UTF-8 is left to the caller, and max_message_size bounds the compressed size.
 * RSV1 on a control or continuation frame, and RSV2/RSV3 always, still fail with 1002.
 */
void ws_parser_set_deflate(struct ws_parser *p, bool negotiated);

/*
 * Feed bytes received from the client. Payload bytes are unmasked in place, so buf must be writable.
 * Returns the number of bytes consumed and fills *ev. Call again with the rest (buf + consumed) until it
 * returns with ev->type == WS_EV_NONE, which means every byte was consumed and more are needed.
 * One call yields at most one event. A DATA event may be a chunk of a frame: the caller accumulates.
 * The size limit is enforced as soon as a frame header announces a length that would make the message
 * exceed max_message_size (WS_EV_ERROR, 1009), before any of its payload is read.
 * After CLOSE or ERROR, further input is consumed and ignored (WS_EV_NONE).
 * Every DATA event carries bytes except one for an empty final frame (so an empty message is one event
 * with msg_start && msg_end); an empty non-final frame yields no event. Non-minimal length encodings
 * are accepted. CLOSE/ERROR count as consumed only the bytes up to the frame or offending byte.
 */
size_t ws_parser_feed(struct ws_parser *p, uint8_t *buf, size_t len, struct ws_event *ev);

/* Encode an unmasked server frame header into out; returns its length (2, 4 or 10). */
size_t ws_frame_header(uint8_t out[WS_MAX_HDR], bool fin, enum ws_opcode op, uint64_t payload_len);

/*
 * Build a close frame payload (code + reason, reason truncated to fit 125 bytes at a UTF-8 boundary).
 * code 0 means "no code": returns 0. Returns the payload length.
 */
size_t ws_close_payload(uint8_t out[WS_MAX_CTRL_PAYLOAD], uint16_t code, const char *reason);

/* Whether a code received in a close frame is allowed on the wire (RFC 6455 §7.4). */
bool ws_close_code_valid(uint16_t code);

#endif
