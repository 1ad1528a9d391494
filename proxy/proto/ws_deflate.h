/*
 * ws_deflate.h -- sans-I/O permessage-deflate (RFC 7692), server side: offer parsing and the
 * response header, a bounded streaming inflater per connection, one shared compressor for outgoing
 * messages, and byte accounting of everything zlib allocates. Only libc and zlib: no sockets, no
 * libevent, no logging, no global state. Every object is used by one thread at a time (the event
 * loop's).
 *
 * The transport's side of the contract (conn.c and the frame parser follow it; nothing here
 * checks):
 *   - RSV1 marks a compressed message. It is set on the FIRST frame of a text/binary message only,
 *     never on continuation frames, never on control frames (RFC 7692 §6: the "Per-Message
 *     Compressed" bit; control frames are never compressed). Received RSV1 where
 *     ws_deflate_rsv1_allowed() says no -> close 1002.
 *   - A received message with RSV1 goes through a ws_deflate_inflater, chunk by chunk, with fin on
 *     its last chunk; a message without RSV1 is delivered as is, even when compression was
 *     negotiated.
 *   - The frame parser's max_message_size then bounds the compressed size on the wire; the
 *     inflater's max_out bounds the inflated size. UTF-8 of a text message is checked on the
 *     inflated bytes.
 *   - Errors map to close codes in the glue: WS_DEFLATE_ERR_TOO_BIG -> 1009, WS_DEFLATE_ERR_DATA ->
 *     1007, WS_DEFLATE_ERR_NOMEM -> 1011 (or 1013 when the memory budget is the cause).
 *   - Outgoing: compress a whole message once with ws_deflate_compress() (one shared compressor per
 *     option set, so a fan-out is compressed once), then frame the result for every recipient whose
 *     params accept it (ws_deflate_compressor_fits), RSV1 on the first frame. The server always
 *     uses server_no_context_takeover, so a compressed message does not depend on what a recipient
 *     saw before and the same bytes are valid for all of them.
 */
#ifndef WSP_WS_DEFLATE_H
#define WSP_WS_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct z_stream_s; /* zlib's stream; callers need not include <zlib.h> */

/* Results of the inflate/deflate functions: 0 or one of these. */
enum ws_deflate_status {
    WS_DEFLATE_OK = 0,
    WS_DEFLATE_ERR_TOO_BIG = -1, /* inflate: output would exceed max_out (close 1009);
                                    deflate: output would exceed max_out (send it uncompressed) */
    WS_DEFLATE_ERR_DATA = -2,    /* the compressed data is not valid DEFLATE (close 1007) */
    WS_DEFLATE_ERR_NOMEM = -3,   /* malloc failed, or the memory budget refused the allocation */
    WS_DEFLATE_ERR_SINK = -4,    /* the caller's sink returned nonzero; the caller knows why */
    WS_DEFLATE_ERR_PARAM = -5,   /* bad arguments, or use of an inflater after an error */
};

/* Static text for logs and close reasons; "unknown error" for anything else. */
const char *ws_deflate_strerror(int err);

#define WS_DEFLATE_CHUNK (16 * 1024) /* largest piece a sink receives in one call */
#define WS_DEFLATE_RSV1  0x40        /* the RSV1 bit in a frame's first byte */

/*
 * Output callback: receives n > 0 bytes at p, which are valid only during the call. Returns 0 to go
 * on; anything else stops the operation, which then returns WS_DEFLATE_ERR_SINK.
 */
typedef int ws_deflate_sink_fn(void *arg, const uint8_t *p, size_t n);

/* ---- Memory accounting ---- */

/*
 * Caller-owned counters for every byte zlib allocates through a ws_deflate object that points here
 * (one per event loop; not atomic). Counted bytes are the blocks zlib asks for plus a 16-byte
 * header each (zlib's free hook is not told the size, so it is stored in front), and the z_stream
 * itself.
 *
 * Exact zlib 1.2.13 figures on 64-bit (measured by tests/bench/deflate_bench.c and asserted by the
 * unit tests), wb = window bits, ml = memLevel:
 *   inflate: (1 << wb) window (allocated at the first output) + 7160 B inflate_state
 *            + 112 B z_stream + 3 x 16 B headers
 *            = (1 << wb) + 7320 B
 *   deflate: (1 << (wb + 2)) [window 2w + prev 2w] + (1 << (ml + 9)) [head + pending buffer]
 *            + 5952 B deflate_state + 112 B z_stream + 6 x 16 B headers
 *            = (1 << (wb + 2)) + (1 << (ml + 9)) + 6160 B
 * e.g. inflate wb 15: 40088 B, wb 12: 11416 B, wb 10: 8344 B; deflate wb 15/ml 8: 268304 B,
 * wb 12/ml 5: 38928 B. The *_worst() functions round the fixed part up (7.5 KiB and 6.5 KiB) so a
 * slightly larger state struct in another zlib release still fits.
 *
 * budget is a hard ceiling on in_use: an allocation that would pass it fails and the operation
 * returns WS_DEFLATE_ERR_NOMEM. Since inflate states are allocated lazily (and freed after every
 * message under client_no_context_takeover), in_use alone says little about what negotiated
 * connections may still need; reserved is how the caller keeps that promise: reserve a connection's
 * worst case when accepting its offer, unreserve it when the connection ends, and decline the offer
 * (answer without the extension) when ws_deflate_mem_reserve() says it does not fit. The shared
 * compressors should be reserved the same way at startup.
 */
struct ws_deflate_mem {
    size_t in_use;   /* bytes held by zlib now, through objects that point here */
    size_t peak;     /* highest in_use so far */
    size_t budget;   /* 0: unlimited; else the ceiling for in_use and for reserved */
    size_t reserved; /* worst-case bytes promised to negotiated connections and compressors */
};

/* Worst-case bytes of one inflate state with this window (8..15), as counted above. */
size_t ws_deflate_inflate_worst(unsigned window_bits);

/* Worst-case bytes of one compressor (window 9..15, memLevel 1..9), as counted above. */
size_t ws_deflate_deflate_worst(unsigned window_bits, unsigned mem_level);

/* Whether `bytes` more can be reserved: budget == 0 or reserved + bytes <= budget. */
bool ws_deflate_mem_fits(const struct ws_deflate_mem *m, size_t bytes);

/* ws_deflate_mem_fits() and, if so, reserved += bytes. Returns whether it reserved. */
bool ws_deflate_mem_reserve(struct ws_deflate_mem *m, size_t bytes);

/* Gives back a reservation (reserved -= bytes, never below 0). */
void ws_deflate_mem_unreserve(struct ws_deflate_mem *m, size_t bytes);

/* ---- Negotiation (RFC 7692 §5, §7.1) ---- */

/*
 * The server's side, from its config. The server always answers server_no_context_takeover (so one
 * compressed message serves every recipient); that is not a choice here.
 */
struct ws_deflate_policy {
    bool enabled;                    /* false: every offer is declined */
    uint8_t server_max_window_bits;  /* 9..15: our compressor's window (zlib cannot deflate raw
                                        with 8); lowered to what the client offers */
    uint8_t client_max_window_bits;  /* 9..15: the client window we ask for; only possible when the
                                        offer has client_max_window_bits, else the client uses 15 */
    bool client_no_context_takeover; /* always ask the client to reset its window after every
                                        message (§7.1.1.2 lets the server add it), so our inflate
                                        state can be freed between messages */
};

/* Defaults: disabled, both windows 15, client_no_context_takeover asked. */
void ws_deflate_policy_init(struct ws_deflate_policy *pol);

/* What was agreed for one connection; the response header is a function of these fields alone. */
struct ws_deflate_params {
    uint8_t server_max_window_bits;   /* 9..15: recipients accept messages compressed with at most
                                         this window (server_no_context_takeover always holds) */
    uint8_t client_max_window_bits;   /* 8..15: the largest window the client may use */
    bool client_no_context_takeover;  /* the client resets its window after each message */
    bool server_max_window_bits_sent; /* the response carries server_max_window_bits: the offer had
                                         it (§7.1.2.1: then the response must), or ours is < 15 */
};

/*
 * Parse a whole Sec-WebSocket-Extensions value (several header lines joined with ", ") and accept
 * the first acceptable permessage-deflate offer; other extensions are ignored. value need not be
 * NUL-terminated; len may be 0 and value NULL then. Returns true and fills *out when an offer was
 * accepted; false (and *out untouched) when compression is disabled, the policy is out of range, or
 * no offer was acceptable. Declining is never a handshake error: the answer just omits the
 * extension.
 *
 * Grammar (RFC 6455 §9.1 with RFC 7230 lists): extensions separated by ",", each a token followed
 * by ";"-separated parameters `token [= (token | quoted-string)]`; optional whitespace around ",",
 * ";" and "="; empty list elements allowed; quoted values are unescaped before they are checked.
 * Extension and parameter names match case-insensitively. An element that breaks the grammar is
 * skipped up to the next "," outside a quoted string.
 *
 * An offer is declined (the next one is tried) when it has an unknown or duplicate parameter;
 * server_no_context_takeover or client_no_context_takeover with a value; server_max_window_bits
 * without a value; a window value that is not 8..15 written without leading zeros; or
 * server_max_window_bits=8, because zlib cannot deflate a raw stream with a 256-byte window (1.2.9+
 * refuses it, older releases silently used 512 bytes, which broke peers; uWebSockets refuses 8
 * too).
 *
 * Agreed values: server window = min(policy, offered); client window = min(policy, offered) when
 * the offer has client_max_window_bits, else 15; client_no_context_takeover = offered || policy.
 */
bool ws_deflate_negotiate(const struct ws_deflate_policy *pol, const char *value, size_t len,
                          struct ws_deflate_params *out);

/* Longest response ws_deflate_response() writes, NUL included. */
#define WS_DEFLATE_RESPONSE_MAX 160

/*
 * Format the Sec-WebSocket-Extensions response value for params from ws_deflate_negotiate(), e.g.
 *   permessage-deflate; server_no_context_takeover; client_no_context_takeover;
 *   client_max_window_bits=12   (one line)
 * in this order: server_no_context_takeover (always), client_no_context_takeover (if agreed),
 * server_max_window_bits=N (if server_max_window_bits_sent), client_max_window_bits=N (if < 15,
 * which only happens when the client offered the parameter). Writes a NUL-terminated string,
 * returns its length. The result parsed as an offer under the same policy gives the same params.
 */
size_t ws_deflate_response(const struct ws_deflate_params *p, char out[WS_DEFLATE_RESPONSE_MAX]);

/* ---- Inflate: one per connection ---- */

/*
 * Per-connection inflate state. Treat the fields as private. Idle it holds no zlib memory until the
 * first compressed byte arrives; under client_no_context_takeover the zlib state is freed again at
 * the end of every message, so idle connections hold none.
 */
struct ws_deflate_inflater {
    struct z_stream_s *zs;      /* NULL when no zlib state is held */
    struct ws_deflate_mem *mem; /* may be NULL: no accounting, no budget */
    uint64_t max_out;           /* inflated bytes allowed per message; 0 = unlimited */
    uint64_t msg_out;           /* inflated bytes of the current message so far */
    uint8_t window_bits;        /* max(client_max_window_bits, 9), see ws_deflate_inflater_init */
    bool no_context_takeover;
    bool msg_in;     /* the current message has had compressed bytes */
    bool stream_end; /* the current message hit a final (BFINAL) block: the rest is ignored */
    bool failed;     /* an error happened: only _release is allowed now */
};

/*
 * Set up for a connection with the agreed params; allocates nothing. max_out bounds the inflated
 * size of every message (the connection's max message size; 0 = unlimited, never do that with
 * untrusted peers). mem (may be NULL) receives the accounting and must outlive the inflater. The
 * window is max(client_max_window_bits, 9): a client that was allowed 8 may be running an old zlib
 * that deflated with 9 anyway, and the extra 256 bytes cost nothing.
 */
void ws_deflate_inflater_init(struct ws_deflate_inflater *inf, const struct ws_deflate_params *p,
                              uint64_t max_out, struct ws_deflate_mem *mem);

/*
 * Feed the next chunk of a compressed message's payload (any size, 0 included); fin on the chunk
 * that ends the message (it may be empty). Inflated bytes go to sink in pieces of at most
 * WS_DEFLATE_CHUNK as soon as zlib yields them, so a message may span any number of frames and
 * reads. At fin the RFC 7692 §7.2.2 tail 00 00 ff ff is appended, the message must then end on a
 * DEFLATE block boundary (else WS_DEFLATE_ERR_DATA), and the next call starts a new message.
 * Accepted as well: an empty payload (an empty message), a payload that already ends on a block
 * boundary (a sender that left the tail on), and a final (BFINAL) block, after which the rest of
 * the message is ignored (§7.2.3.4) and, with context takeover, its window carries over to the next
 * message.
 *
 * Returns 0, or:
 *   WS_DEFLATE_ERR_TOO_BIG  the message would inflate to more than max_out bytes. Detected the
 *                           moment zlib yields byte max_out + 1: the bomb is never inflated
 *                           further, and the sink has been given at most max_out bytes of this
 *                           message in total.
 *   WS_DEFLATE_ERR_DATA     invalid DEFLATE data, or the message ends inside a block.
 *   WS_DEFLATE_ERR_NOMEM    allocation failed or the budget refused it.
 *   WS_DEFLATE_ERR_SINK     the sink said stop.
 *   WS_DEFLATE_ERR_PARAM    the inflater already failed.
 * After any error the zlib state is freed and the inflater accepts only _release: the connection is
 * closed anyway. The sink may have received part of the message before an error.
 */
int ws_deflate_inflater_feed(struct ws_deflate_inflater *inf, const uint8_t *in, size_t len,
                             bool fin, ws_deflate_sink_fn *sink, void *arg);

/* Free the zlib state (if any). The inflater may be _init'ed again. NULL is a no-op. */
void ws_deflate_inflater_release(struct ws_deflate_inflater *inf);

/* ---- Deflate: one shared compressor per option set ---- */

/*
 * A compressor for whole outgoing messages, with server_no_context_takeover semantics: every
 * message is compressed from an empty window and the stream is reset afterwards, so one compressor
 * serves any number of connections (compress a fan-out message once, frame it for every recipient).
 * Treat the fields as private. The zlib state is allocated at the first message and kept until
 * _release.
 */
struct ws_deflate_compressor {
    struct z_stream_s *zs;      /* NULL until the first message */
    struct ws_deflate_mem *mem; /* may be NULL */
    int level;                  /* 0..9 */
    uint8_t window_bits;        /* 9..15 */
    uint8_t mem_level;          /* 1..9 */
};

/*
 * Set up; allocates nothing. level 0..9 (1 is fast and good enough for JSON, 6 is zlib's default),
 * window_bits 9..15, mem_level 1..9 (zlib's default is 8). Returns 0 or WS_DEFLATE_ERR_PARAM.
 */
int ws_deflate_compressor_init(struct ws_deflate_compressor *c, int level, unsigned window_bits,
                               unsigned mem_level, struct ws_deflate_mem *mem);

/* Whether this compressor's output may be sent to a connection with these params. */
bool ws_deflate_compressor_fits(const struct ws_deflate_compressor *c,
                                const struct ws_deflate_params *p);

/*
 * Compress one whole message payload (len may be 0) into the frame payload of a compressed message:
 * raw DEFLATE ending with a sync flush whose 00 00 ff ff is stripped (§7.2.1); an empty message
 * comes out as the single byte 00 (what §7.2.1 gives for no data; cf. the empty fragment of
 * §7.2.3.6). Output goes to sink in pieces of at most WS_DEFLATE_CHUNK. max_out bounds the output
 * (0 = unlimited): pass the input length to learn early that compression does not pay, and send the
 * message uncompressed then. Returns 0, WS_DEFLATE_ERR_TOO_BIG, WS_DEFLATE_ERR_NOMEM,
 * WS_DEFLATE_ERR_SINK or WS_DEFLATE_ERR_PARAM. On error the sink may have received a prefix:
 * discard it. Whatever happens, the compressor is ready for the next message.
 */
int ws_deflate_compress(struct ws_deflate_compressor *c, const uint8_t *in, size_t len,
                        size_t max_out, ws_deflate_sink_fn *sink, void *arg);

/* Free the zlib state (if any). The compressor may be _init'ed again. NULL is a no-op. */
void ws_deflate_compressor_release(struct ws_deflate_compressor *c);

/* ---- A growable output buffer for ws_deflate_compress ---- */

/* Zero-initialise; owned by the caller, freed with ws_deflate_buf_release. */
struct ws_deflate_buf {
    uint8_t *p;
    size_t len;
    size_t cap;
};

/* A ws_deflate_sink_fn appending to the struct ws_deflate_buf at arg; -1 when out of memory. */
int ws_deflate_buf_sink(void *arg, const uint8_t *p, size_t n);

/* Free the bytes and zero the struct. NULL is a no-op. */
void ws_deflate_buf_release(struct ws_deflate_buf *b);

/* ---- Framing helpers (pure) ---- */

/*
 * Whether a received frame may carry RSV1: only when the extension was negotiated and the frame is
 * the first of a text (0x1) or binary (0x2) message; never on continuation (0x0) or control frames.
 */
bool ws_deflate_rsv1_allowed(bool negotiated, unsigned opcode);

/*
 * Whether to compress an outgoing message: a text or binary message of at least min_size bytes
 * (below ~100-200 bytes a message without context takeover rarely shrinks; see
 * docs/compression.md). The caller also checks that the recipient negotiated the extension.
 */
bool ws_deflate_worth_compressing(unsigned opcode, size_t len, size_t min_size);

#endif
