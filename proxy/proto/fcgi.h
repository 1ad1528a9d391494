/*
 * fcgi.h -- FastCGI 1.0 client codec (the responder role, as php-fpm speaks it): request records are
 * written into caller buffers, response records are parsed incrementally from a byte stream, and the
 * CGI response head at the start of STDOUT is read for its Status. No sockets, no allocation.
 */
#ifndef WSP_FCGI_H
#define WSP_FCGI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FCGI_VERSION_1   1
#define FCGI_HEADER_LEN  8
#define FCGI_MAX_CONTENT 65535

enum fcgi_type {
    FCGI_BEGIN_REQUEST = 1,
    FCGI_ABORT_REQUEST = 2,
    FCGI_END_REQUEST = 3,
    FCGI_PARAMS = 4,
    FCGI_STDIN = 5,
    FCGI_STDOUT = 6,
    FCGI_STDERR = 7,
    FCGI_DATA = 8,
    FCGI_GET_VALUES = 9,
    FCGI_GET_VALUES_RESULT = 10,
    FCGI_UNKNOWN_TYPE = 11
};

enum fcgi_role { FCGI_RESPONDER = 1 };
#define FCGI_KEEP_CONN 1

/* protocolStatus of END_REQUEST */
enum fcgi_protocol_status {
    FCGI_REQUEST_COMPLETE = 0,
    FCGI_CANT_MPX_CONN = 1,
    FCGI_OVERLOADED = 2,
    FCGI_UNKNOWN_ROLE = 3
};

enum fcgi_err {
    FCGI_NEED_MORE = -1, /* fcgi_cgi_status only: the head is not complete yet */
    FCGI_ERR_VERSION = -2,
    FCGI_ERR_TYPE = -3,   /* a record a client never receives (BEGIN_REQUEST, PARAMS, ...) */
    FCGI_ERR_LENGTH = -4, /* END_REQUEST whose body is not 8 bytes */
    FCGI_ERR_HEAD = -5,   /* CGI head malformed or over its bound */
    FCGI_ERR_STATE = -6   /* bytes after END_REQUEST of the request */
};

/* Static text for an FCGI_ERR_* code. */
const char *fcgi_strerror(int err);

struct fcgi_param {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/*
 * Writers: each returns the number of bytes the output needs and writes them to out only when cap
 * is at least that (so call with out NULL, cap 0 to size a buffer).
 */

/* BEGIN_REQUEST record (16 bytes): role RESPONDER, flags FCGI_KEEP_CONN when keep_conn. */
size_t fcgi_begin_request(uint8_t *out, size_t cap, uint16_t id, bool keep_conn);

/* Name-value pairs (the PARAMS stream's content): lengths < 128 in 1 byte, else 4 (top bit set). */
size_t fcgi_params_encode(uint8_t *out, size_t cap, const struct fcgi_param *p, size_t n);

/*
 * data as records of type (PARAMS, STDIN, ...), at most FCGI_MAX_CONTENT content bytes each, each
 * padded to a multiple of 8; with terminate, an empty record of the same type ends the stream.
 */
size_t fcgi_stream(uint8_t *out, size_t cap, uint8_t type, uint16_t id, const uint8_t *data,
                   size_t len, bool terminate);

/* A whole responder request: BEGIN_REQUEST, PARAMS (ended), STDIN body (ended). */
size_t fcgi_request(uint8_t *out, size_t cap, uint16_t id, bool keep_conn,
                    const struct fcgi_param *p, size_t n, const uint8_t *body, size_t body_len);

/* ---- Reading the application's records ---- */

enum fcgi_event_kind {
    FCGI_EV_NONE,   /* all input consumed, no event: feed more bytes */
    FCGI_EV_STDOUT, /* data/len: a piece of STDOUT (a record may come in several pieces) */
    FCGI_EV_STDERR, /* data/len: a piece of STDERR */
    FCGI_EV_END     /* END_REQUEST: app_status, protocol_status; the parser takes nothing more */
};

struct fcgi_event {
    enum fcgi_event_kind kind;
    uint16_t id;
    const uint8_t *data; /* borrowed from the input */
    size_t len;
    uint32_t app_status;
    uint8_t protocol_status;
};

/* Resumable state; zero it (or fcgi_parser_init) before a response. */
struct fcgi_parser {
    uint8_t hdr[FCGI_HEADER_LEN];
    uint8_t body[8]; /* END_REQUEST body */
    size_t have;     /* bytes of hdr (in header) or body (in END_REQUEST) gathered */
    size_t content_left, pad_left;
    uint8_t type;
    uint16_t id;
    bool in_record;
    bool ended;
};

void fcgi_parser_init(struct fcgi_parser *p);

/*
 * Consume bytes of buf[0..len) and report at most one event in *ev. Returns the bytes consumed
 * (>= 0) or an FCGI_ERR_*. Input split anywhere gives the same events (STDOUT/STDERR pieces may
 * differ in size). Empty stream records (end of STDOUT/STDERR) give no event; management records
 * (id 0) and GET_VALUES_RESULT/UNKNOWN_TYPE are skipped. Call again with the rest while it returns
 * an event; FCGI_EV_NONE means every byte given was consumed.
 */
int fcgi_parse(struct fcgi_parser *p, const uint8_t *buf, size_t len, struct fcgi_event *ev);

/*
 * The status of a CGI response head at the start of STDOUT (buf, len bytes so far): "Status: 404
 * Not Found" gives 404, no Status line gives 200 (302 with a Location line). Lines end in LF or
 * CRLF; an empty line ends the head. Returns 0 with *status and *head_len (bytes of the head with its
 * empty line), FCGI_NEED_MORE while no empty line is in the first max bytes, or FCGI_ERR_HEAD (a
 * bad Status value, a line with no colon, or no end within max bytes).
 */
int fcgi_cgi_status(const char *buf, size_t len, size_t max, int *status, size_t *head_len);

#endif
