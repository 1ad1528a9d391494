/*
 * json_scan.h -- sans-I/O, allocation-free RFC 8259 scanner for one top-level JSON object: finds the
 * few fields the chat hot path needs and bails (to jansson) on anything it is not sure about.
 */
#ifndef WSP_JSON_SCAN_H
#define WSP_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>

#define JSON_SCAN_OK 0
#define JSON_SCAN_BAIL (-1) /* not handled here: let jansson decide (maybe valid, maybe not) */

#define JSON_SCAN_DEPTH_MAX 16 /* nesting deeper than this bails */
#define JSON_SCAN_KEYS_MAX 32  /* an object with more keys than this bails */

enum json_kind {
    JSON_KIND_STRING,
    JSON_KIND_NUMBER,
    JSON_KIND_OBJECT,
    JSON_KIND_ARRAY,
    JSON_KIND_TRUE,
    JSON_KIND_FALSE,
    JSON_KIND_NULL,
};

struct json_field {
    bool present;
    enum json_kind kind;
    size_t start; /* raw span of the value in buf: [start, start + len) */
    size_t len;
    unsigned reals; /* numbers with a fraction or exponent inside the value (jansson reprints them) */
};

/* The top-level keys the chat fast path reads; any other key is skipped. */
struct json_top {
    struct json_field type, to, room, cid, body, id;
};

/*
 * JSON_SCAN_OK when buf[0, len) is exactly one JSON object (plus whitespace) that jansson with
 * JSON_REJECT_DUPLICATES accepts too; fills out. JSON_SCAN_BAIL for invalid JSON and for anything
 * this scanner chooses not to judge (escaped keys, \u0000, surrogate escapes, huge numbers, depth).
 */
int json_scan_top(const char *buf, size_t len, struct json_top *out);

/*
 * Decodes a string value span (quotes included) into out, NUL-terminated. Returns the decoded
 * length, or -1 if it does not fit in cap (with the NUL), decodes to a control character, or is
 * not a well-formed string span.
 */
int json_scan_string(const char *span, size_t len, char *out, size_t cap);

/*
 * Copies a value span without insignificant whitespace into out, NUL-terminated; returns its length,
 * 0 if it does not fit in cap (with the NUL).
 */
size_t json_scan_compact(const char *span, size_t len, char *out, size_t cap);

#endif
