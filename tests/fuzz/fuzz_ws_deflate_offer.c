/* fuzz-deps: proxy/proto/ws_deflate.c -lz */
/*
 * fuzz_ws_deflate_offer.c -- libFuzzer target: the first byte picks a policy, the rest is a
 * Sec-WebSocket-Extensions value. The parser never crashes or reads past the value; accepted params
 * stay within the policy and the offer; the response they format parses back, under the same
 * policy, to the same params.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/ws_deflate.h"

/* Whether the value mentions the parameter at all (case-insensitively): a cheap second opinion. */
static bool mentions(const uint8_t *v, size_t n, const char *name)
{
    size_t k = strlen(name);

    for (size_t i = 0; i + k <= n; i++) {
        size_t j = 0;
        while (j < k && tolower(v[i + j]) == name[j])
            j++;
        if (j == k)
            return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ws_deflate_policy pol;
    struct ws_deflate_params p, q;
    char resp[WS_DEFLATE_RESPONSE_MAX], again[WS_DEFLATE_RESPONSE_MAX];
    const char *v = (const char *)data + 1;
    size_t n, vlen;

    if (size < 1)
        return 0;
    vlen = size - 1;
    ws_deflate_policy_init(&pol);
    pol.enabled = true;
    pol.server_max_window_bits = (uint8_t)(9 + data[0] % 7);
    pol.client_max_window_bits = (uint8_t)(9 + (data[0] >> 3) % 7);
    pol.client_no_context_takeover = (data[0] & 0x80) != 0;
    if (!ws_deflate_negotiate(&pol, v, vlen, &p))
        return 0;
    if (!mentions(data + 1, vlen, "permessage-deflate"))
        abort();
    if (p.server_max_window_bits < 9 || p.server_max_window_bits > pol.server_max_window_bits)
        abort();
    if (p.client_max_window_bits < 8 || p.client_max_window_bits > 15 ||
        (p.client_max_window_bits != 15 && p.client_max_window_bits > pol.client_max_window_bits))
        abort();
    if (pol.client_no_context_takeover && !p.client_no_context_takeover)
        abort();
    /* Never say what the client did not allow. */
    if (p.client_max_window_bits < 15 && !mentions(data + 1, vlen, "client_max_window_bits"))
        abort();
    if (p.client_no_context_takeover && !pol.client_no_context_takeover &&
        !mentions(data + 1, vlen, "client_no_context_takeover"))
        abort();
    if (p.server_max_window_bits < pol.server_max_window_bits &&
        !mentions(data + 1, vlen, "server_max_window_bits"))
        abort();

    n = ws_deflate_response(&p, resp);
    if (n != strlen(resp) || n >= WS_DEFLATE_RESPONSE_MAX)
        abort();
    if (strncmp(resp, "permessage-deflate; server_no_context_takeover", 46) != 0)
        abort();
    if (!ws_deflate_negotiate(&pol, resp, n, &q) || memcmp(&p, &q, sizeof p) != 0)
        abort();
    if (ws_deflate_response(&q, again) != n || memcmp(resp, again, n) != 0)
        abort();
    pol.enabled = false;
    if (ws_deflate_negotiate(&pol, v, vlen, &q))
        abort();
    return 0;
}
