/* fuzz_json_scan.c -- differential fuzzing of json_scan against jansson: whenever the scanner says OK,
 * jansson must accept the same bytes and agree on every field the chat fast path uses. */
/* fuzz-deps: proxy/proto/json_scan.c proxy/base/utf8.c -ljansson */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/json_scan.h"
#include "base/utf8.h"

static void check_string(const uint8_t *data, json_t *root, const char *key,
                         const struct json_field *f)
{
    json_t *v = json_object_get(root, key);
    if (!f->present) {
        if (v)
            abort();
        return;
    }
    if (!v)
        abort();
    if ((f->kind == JSON_KIND_STRING) != json_is_string(v))
        abort();
    if (f->kind != JSON_KIND_STRING)
        return;
    char buf[4096];
    int n = json_scan_string((const char *)data + f->start, f->len, buf, sizeof(buf));
    if (n < 0)
        return;
    if ((size_t)n != json_string_length(v) || memcmp(buf, json_string_value(v), (size_t)n) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The frame layer hands chat only valid UTF-8; jansson checks it too, the scanner does not. */
    if (!utf8_valid(data, size))
        return 0;
    struct json_top top;
    if (json_scan_top((const char *)data, size, &top) != JSON_SCAN_OK)
        return 0;
    json_error_t err;
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &err);
    if (!root || !json_is_object(root))
        abort();
    static const char *keys[] = {"type", "to", "room", "cid", "body", "id"};
    const struct json_field *fields[] = {&top.type, &top.to, &top.room, &top.cid, &top.body,
                                         &top.id};
    for (size_t i = 0; i < 6; i++)
        check_string(data, root, keys[i], fields[i]);
    if (top.id.present && top.id.kind == JSON_KIND_NUMBER && top.id.reals == 0 &&
        !json_is_integer(json_object_get(root, "id")))
        abort();
    if (top.body.present) {
        char *out = malloc(top.body.len + 1);
        size_t n = json_scan_compact((const char *)data + top.body.start, top.body.len, out,
                                     top.body.len + 1);
        if (n == 0)
            abort();
        json_t *b = json_loadb(out, n, JSON_DECODE_ANY, &err);
        if (!b || !json_equal(b, json_object_get(root, "body")))
            abort();
        /* With no reals inside, jansson's reprint is never longer: the max_body check agrees. */
        if (top.body.reals == 0) {
            char *dump = json_dumps(b, JSON_COMPACT | JSON_ENCODE_ANY);
            if (!dump || strlen(dump) > n)
                abort();
            free(dump);
        }
        json_decref(b);
        free(out);
    }
    json_decref(root);
    return 0;
}
