/* fuzz-deps: proxy/base/utf8.c */
/*
 * fuzz_utf8.c -- libFuzzer target: utf8_feed over chunks sized by the first byte must end in the same
 * state as feeding one byte at a time (no ASCII fast path), and agree with utf8_valid.
 */
#include <stdint.h>
#include <stdlib.h>

#include "base/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t chunked = UTF8_ACCEPT, bytewise = UTF8_ACCEPT;
    size_t maxc = 1 + (size ? data[0] : 0) % 40;

    for (size_t off = 0, k = 0, c; off < size; off += c, k++) {
        c = 1 + (k * 7 + data[0]) % maxc;
        c = c > size - off ? size - off : c;
        /* Fail fast: once rejected, it stays rejected, and no later chunk could have changed that. */
        if (utf8_feed(&chunked, data + off, c) == UTF8_REJECT && utf8_valid(data, size))
            abort();
    }
    for (size_t i = 0; i < size; i++)
        utf8_feed(&bytewise, data + i, 1);
    if (chunked != bytewise || (chunked == UTF8_ACCEPT) != utf8_valid(data, size))
        abort();
    return 0;
}
