/*
 * ws_handshake.c -- the RFC 6455 §4.2 server side of the opening handshake: checks an upgrade request
 * parsed by http1.c, computes Sec-WebSocket-Accept, chooses the subprotocol and builds the 101.
 * No sockets, no allocation; OpenSSL for SHA-1 and base64.
 */
#include "proto/ws_handshake.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

/* RFC 6455 §1.3 */
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";


static bool is_b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/*
 * RFC 6455 §4.1: the key is 16 random bytes, base64-encoded, i.e. 22 characters and "==". The two
 * unused bits of the last character are not checked, as common decoders do not check them either.
 */
static bool ws_key_valid(const char *key, size_t len)
{
    size_t i;

    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (i = 0; i < 22; i++) {
        if (!is_b64_char((unsigned char)key[i]))
            return false;
    }
    return true;
}

void ws_handshake_accept_key(const char *key, size_t key_len, char out[29])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char in[128 + sizeof(ws_guid)];
    int ok;

    out[0] = '\0';
    if (key_len <= sizeof(in) - sizeof(ws_guid)) {
        memcpy(in, key, key_len);
        memcpy(in + key_len, ws_guid, sizeof(ws_guid) - 1);
        ok = EVP_Digest(in, key_len + sizeof(ws_guid) - 1, md, &md_len, EVP_sha1(), NULL);
    } else {
        /* never a valid key, but the function takes any input */
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();

        ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) &&
             EVP_DigestUpdate(ctx, key, key_len) &&
             EVP_DigestUpdate(ctx, ws_guid, sizeof(ws_guid) - 1) &&
             EVP_DigestFinal_ex(ctx, md, &md_len);
        EVP_MD_CTX_free(ctx);
    }
    if (ok && md_len == 20)
        EVP_EncodeBlock((unsigned char *)out, md, 20); /* 28 chars + NUL */
}

static int hs_fail(struct ws_handshake_result *r, int status, const char *message)
{
    r->status = status;
    r->message = message;
    return status;
}

/* RFC 6454 §7: an Origin is compared as one serialized string; scheme and host are lower case */
static bool origin_allowed(const struct http_req *req, const struct ws_handshake_policy *pol)
{
    const struct http_header *h;
    size_t i, n;

    if (pol->num_origins == 0)
        return true;
    for (i = 0; i < pol->num_origins; i++) {
        if (strcmp(pol->origins[i], "*") == 0)
            return true;
    }
    n = http_req_header_count(req, "Origin", &h);
    /*
     * No Origin: not a browser, and the cross-site attacks the list exists for need a browser,
     * which always sends one on a WebSocket handshake. Two Origins are nothing a browser sends
     * either.
     */
    if (n == 0)
        return true;
    if (n > 1)
        return false;
    for (i = 0; i < pol->num_origins; i++) {
        if (http_ieq(h->value, h->value_len, pol->origins[i]))
            return true;
    }
    return false;
}

int ws_handshake_check(const struct http_req *req, const struct ws_handshake_policy *pol,
                       struct ws_handshake_result *result)
{
    const struct http_header *h;
    size_t i, n;

    result->status = 0;
    result->message = NULL;
    result->accept[0] = '\0';
    result->subprotocol = NULL;
    result->deflate = false;

    /* methods are case-sensitive (RFC 7231 §4.1) */
    if (req->method_len != 3 || memcmp(req->method, "GET", 3) != 0)
        return hs_fail(result, 405, "method not allowed, use GET");
    /* an HTTP/2+ version in an HTTP/1 request line is nothing we can speak either */
    if (req->version_major != 1 || req->version_minor < 1)
        return hs_fail(result, 400, "HTTP/1.1 or later is required");
    if (!http_req_has_token(req, "Upgrade", "websocket", true))
        return hs_fail(result, 426, "this is a WebSocket endpoint");
    /* RFC 7230 §5.4: a missing or repeated Host is a 400 */
    if (http_req_header_count(req, "Host", &h) != 1 || h->value_len == 0)
        return hs_fail(result, 400, "missing or repeated Host header");
    if (!http_req_has_token(req, "Connection", "upgrade", true))
        return hs_fail(result, 400, "Connection header lacks \"upgrade\"");
    n = http_req_header_count(req, "Sec-WebSocket-Version", &h);
    if (n > 1)
        return hs_fail(result, 400, "repeated Sec-WebSocket-Version header");
    if (n == 0 || h->value_len != 2 || memcmp(h->value, "13", 2) != 0)
        return hs_fail(result, 426, "unsupported WebSocket version, use 13");
    n = http_req_header_count(req, "Sec-WebSocket-Key", &h);
    if (n != 1 || !ws_key_valid(h->value, h->value_len))
        return hs_fail(result, 400, "missing, repeated or invalid Sec-WebSocket-Key");
    if (!origin_allowed(req, pol))
        return hs_fail(result, 403, "origin not allowed");

    ws_handshake_accept_key(h->value, h->value_len, result->accept);
    if (result->accept[0] == '\0')
        return hs_fail(result, 500, "cannot compute Sec-WebSocket-Accept");

    /*
     * RFC 6455 §4.2.2: the server's own preference decides among what the client offered. Names are
     * compared exactly, since browsers check the echoed value as an exact string.
     */
    for (i = 0; i < pol->num_subprotocols && result->subprotocol == NULL; i++) {
        if (http_req_has_token(req, "Sec-WebSocket-Protocol", pol->subprotocols[i], false))
            result->subprotocol = pol->subprotocols[i];
    }
    /*
     * RFC 7692 §5: each header line is a list of offers; trying the lines in order finds the first
     * acceptable offer of the joined value without copying it.
     */
    if (pol->deflate && pol->deflate->enabled) {
        for (i = 0; i < req->num_headers && !result->deflate; i++) {
            const struct http_header *e = &req->headers[i];
            if (http_ieq(e->name, e->name_len, "Sec-WebSocket-Extensions"))
                result->deflate = ws_deflate_negotiate(pol->deflate, e->value, e->value_len,
                                                       &result->deflate_params);
        }
    }
    result->status = 101;
    result->message = "switching protocols";
    return 101;
}

/* ---- Response ---- */

static size_t fit(int n, size_t cap)
{
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t ws_handshake_101(char *out, size_t cap, const struct ws_handshake_result *result)
{
    const char *sp = result->subprotocol;
    char ext[WS_DEFLATE_RESPONSE_MAX] = "";

    if (result->status != 101 || strlen(result->accept) != 28)
        return 0;
    if (result->deflate)
        ws_deflate_response(&result->deflate_params, ext);
    return fit(snprintf(out, cap,
                        "HTTP/1.1 101 Switching Protocols\r\n"
                        "Upgrade: websocket\r\n"
                        "Connection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: %s\r\n"
                        "%s%s%s"
                        "%s%s%s"
                        "\r\n",
                        result->accept, sp != NULL ? "Sec-WebSocket-Protocol: " : "",
                        sp != NULL ? sp : "", sp != NULL ? "\r\n" : "",
                        ext[0] ? "Sec-WebSocket-Extensions: " : "", ext, ext[0] ? "\r\n" : ""),
               cap);
}

