/*
 * test_ws_deflate.c -- unit tests for permessage-deflate: offer parsing and responses, the RFC 7692
 * §7.2.3 vectors (fed whole, byte by byte and split at every offset), round trips, the output
 * bound, corrupt data and the memory accounting.
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
#include <zlib.h>

#include "proto/ws_deflate.h"

#define NVEC(a) (sizeof(a) / sizeof((a)[0]))

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

/* ---- Output collection ---- */

struct out {
    struct ws_deflate_buf b;
    size_t calls;
    size_t max_piece;
    size_t refuse_after; /* nonzero: the sink says stop once this many bytes have arrived */
};

static int out_sink(void *arg, const uint8_t *p, size_t n)
{
    struct out *o = arg;

    assert_true(n > 0);
    assert_true(n <= WS_DEFLATE_CHUNK);
    o->calls++;
    if (n > o->max_piece)
        o->max_piece = n;
    assert_int_equal(ws_deflate_buf_sink(&o->b, p, n), 0);
    if (o->refuse_after && o->b.len >= o->refuse_after)
        return 1;
    return 0;
}

static void out_reset(struct out *o)
{
    ws_deflate_buf_release(&o->b);
    memset(o, 0, sizeof *o);
}

static struct ws_deflate_params params(unsigned client_bits, bool client_nct)
{
    struct ws_deflate_params p = {15, (uint8_t)client_bits, client_nct, false};
    return p;
}

/* Feeds z[0..n) as one message, cut at the given offsets (ascending), fin on the last piece. */
static int feed_cuts(struct ws_deflate_inflater *inf, const uint8_t *z, size_t n,
                     const size_t *cuts, size_t ncuts, struct out *o)
{
    size_t at = 0;
    int rc;

    for (size_t i = 0; i < ncuts; i++) {
        rc = ws_deflate_inflater_feed(inf, z + at, cuts[i] - at, false, out_sink, o);
        if (rc != WS_DEFLATE_OK)
            return rc;
        at = cuts[i];
    }
    return ws_deflate_inflater_feed(inf, z + at, n - at, true, out_sink, o);
}

/* Feeds z[0..n) as one message in pieces of `step` bytes (0: whole), fin on the last. */
static int feed_steps(struct ws_deflate_inflater *inf, const uint8_t *z, size_t n, size_t step,
                      struct out *o)
{
    size_t at = 0;
    int rc;

    if (step == 0)
        step = n ? n : 1;
    for (; n - at > step; at += step) {
        rc = ws_deflate_inflater_feed(inf, z + at, step, false, out_sink, o);
        if (rc != WS_DEFLATE_OK)
            return rc;
    }
    return ws_deflate_inflater_feed(inf, z + at, n - at, true, out_sink, o);
}

/* ---- Negotiation ---- */

struct nego_case {
    const char *offer;
    const char *want; /* the response; NULL: declined */
    uint8_t server_bits, client_bits;
    bool client_nct;
};

/* Checks one case under pol: the response, and that the response re-parses to the same params. */
static void check_nego(const struct ws_deflate_policy *pol, const struct nego_case *c)
{
    struct ws_deflate_params p, q;
    char resp[WS_DEFLATE_RESPONSE_MAX], again[WS_DEFLATE_RESPONSE_MAX];
    bool ok = ws_deflate_negotiate(pol, c->offer, strlen(c->offer), &p);
    size_t n;

    print_message("offer [%s] -> %s\n", c->offer, c->want ? c->want : "(declined)");
    if (!c->want) {
        assert_false(ok);
        return;
    }
    assert_true(ok);
    n = ws_deflate_response(&p, resp);
    assert_int_equal(n, strlen(resp));
    assert_string_equal(resp, c->want);
    if (c->server_bits)
        assert_int_equal(p.server_max_window_bits, c->server_bits);
    if (c->client_bits)
        assert_int_equal(p.client_max_window_bits, c->client_bits);
    assert_int_equal(p.client_no_context_takeover, c->client_nct);
    assert_true(ws_deflate_negotiate(pol, resp, n, &q));
    assert_memory_equal(&p, &q, sizeof p);
    ws_deflate_response(&q, again);
    assert_string_equal(resp, again);
}

#define PMD "permessage-deflate; server_no_context_takeover"

/* Policy: enabled, windows 15, client_no_context_takeover not forced: each parameter alone. */
static void test_ws_deflate_negotiate_parameters(void **state)
{
    static const struct nego_case cases[] = {
        {"permessage-deflate", PMD, 15, 15, false},
        {"permessage-deflate; server_no_context_takeover", PMD, 15, 15, false},
        {"permessage-deflate; client_no_context_takeover", PMD "; client_no_context_takeover", 15,
         15, true},
        {"permessage-deflate; server_max_window_bits=10", PMD "; server_max_window_bits=10", 10, 15,
         false},
        /* Offered, so the response must carry it even at 15 (§7.1.2.1). */
        {"permessage-deflate; server_max_window_bits=15", PMD "; server_max_window_bits=15", 15, 15,
         false},
        {"permessage-deflate; server_max_window_bits=9", PMD "; server_max_window_bits=9", 9, 15,
         false},
        /* zlib cannot deflate raw with 8: declined. */
        {"permessage-deflate; server_max_window_bits=8", NULL, 0, 0, false},
        /* Policy 15 imposes nothing: no client_max_window_bits in the response. */
        {"permessage-deflate; client_max_window_bits", PMD, 15, 15, false},
        {"permessage-deflate; client_max_window_bits=15", PMD, 15, 15, false},
        {"permessage-deflate; client_max_window_bits=10", PMD "; client_max_window_bits=10", 15, 10,
         false},
        /* A client promising 8 gets 8 (the inflater uses 9 anyway). */
        {"permessage-deflate; client_max_window_bits=8", PMD "; client_max_window_bits=8", 15, 8,
         false},
        {"permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
         "server_max_window_bits=12; client_max_window_bits=11",
         PMD "; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=11",
         12, 11, true},
        /* Chromium's and Firefox's offers. */
        {"permessage-deflate; client_max_window_bits", PMD, 15, 15, false},
        {"permessage-deflate", PMD, 15, 15, false},
    };
    struct ws_deflate_policy pol;

    (void)state;
    ws_deflate_policy_init(&pol);
    pol.enabled = true;
    pol.client_no_context_takeover = false;
    for (size_t i = 0; i < NVEC(cases); i++)
        check_nego(&pol, &cases[i]);
}

/* Policy: server window 12, client window 12 asked, client_no_context_takeover always. */
static void test_ws_deflate_negotiate_policy_limits(void **state)
{
    static const struct nego_case cases[] = {
        /* Not offered: we still say our window (allowed by §7.1.2.1, saves the client memory). */
        {"permessage-deflate", PMD "; client_no_context_takeover; server_max_window_bits=12", 12,
         15, true},
        {"permessage-deflate; server_max_window_bits=14",
         PMD "; client_no_context_takeover; server_max_window_bits=12", 12, 15, true},
        {"permessage-deflate; server_max_window_bits=10",
         PMD "; client_no_context_takeover; server_max_window_bits=10", 10, 15, true},
        /* The client window can only be imposed when the offer has client_max_window_bits. */
        {"permessage-deflate; client_max_window_bits",
         PMD "; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12",
         12, 12, true},
        {"permessage-deflate; client_max_window_bits=14",
         PMD "; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12",
         12, 12, true},
        {"permessage-deflate; client_max_window_bits=9",
         PMD "; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=9",
         12, 9, true},
    };
    struct ws_deflate_policy pol;

    (void)state;
    ws_deflate_policy_init(&pol);
    pol.enabled = true;
    pol.server_max_window_bits = 12;
    pol.client_max_window_bits = 12;
    for (size_t i = 0; i < NVEC(cases); i++)
        check_nego(&pol, &cases[i]);
}

static void test_ws_deflate_negotiate_malformed(void **state)
{
    static const char *const declined[] = {
        "",
        "   ",
        ",,",
        "x-webkit-deflate-frame",
        "permessage-deflate-x",
        "deflate-frame; permessage-deflate",
        /* unknown and duplicate parameters */
        "permessage-deflate; foo",
        "permessage-deflate; foo=1",
        "permessage-deflate; client_max_window_bits; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=10; Client_Max_Window_Bits=10",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        /* no_context_takeover with a value, even quoted or empty */
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=true",
        "permessage-deflate; client_no_context_takeover=\"\"",
        "permessage-deflate; client_no_context_takeover=",
        /* server_max_window_bits: required value, 8..15 (8 refused), no leading zeros */
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=0",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; server_max_window_bits=1a",
        "permessage-deflate; server_max_window_bits=+9",
        "permessage-deflate; server_max_window_bits=-9",
        "permessage-deflate; server_max_window_bits=9.0",
        "permessage-deflate; server_max_window_bits=\"\"",
        "permessage-deflate; server_max_window_bits=\"08\"",
        "permessage-deflate; server_max_window_bits=\" 9\"",
        "permessage-deflate; server_max_window_bits=100000000000000000009",
        "permessage-deflate; server_max_window_bits=\"8\"",
        /* client_max_window_bits: optional value, 8..15 */
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=015",
        "permessage-deflate; client_max_window_bits=\"\"",
        "permessage-deflate; client_max_window_bits=",
        /* grammar */
        "permessage-deflate;",
        "permessage-deflate; ",
        "permessage-deflate;;client_max_window_bits",
        "permessage-deflate; =10",
        "permessage-deflate x",
        "permessage-deflate; client_max_window_bits=10=11",
        "permessage-deflate; client_max_window_bits=10 11",
        "permessage-deflate; client_max_window_bits=\"10",
        "permessage-deflate; client_max_window_bits=\"1\\",
        "permessage-deflate; client_max_window_bits=\"1\x01\"",
        "permessage-deflate; client_max_window_bits=\"1\\\x01\"",
        "permessage-deflate\r\n",
        "permessage-deflate; client_max_window_bits\x7f",
        "\"permessage-deflate\"",
        /* an unterminated quote in an earlier extension swallows the rest */
        "foo; bar=\"a, permessage-deflate",
    };
    struct ws_deflate_policy pol;
    struct ws_deflate_params p;

    (void)state;
    ws_deflate_policy_init(&pol);
    pol.enabled = true;
    for (size_t i = 0; i < NVEC(declined); i++) {
        print_message("declined? [%s]\n", declined[i]);
        assert_false(ws_deflate_negotiate(&pol, declined[i], strlen(declined[i]), &p));
    }
    assert_false(ws_deflate_negotiate(&pol, NULL, 0, &p));
    /* Only len counts: a NUL inside is a byte the grammar refuses, not the end. */
    assert_false(ws_deflate_negotiate(&pol, "permessage-deflate\0", 19, &p));
    assert_true(ws_deflate_negotiate(&pol, "permessage-deflate; foo", 18, &p));
}

static void test_ws_deflate_negotiate_lists_and_syntax(void **state)
{
    static const struct nego_case cases[] = {
        /* the first acceptable offer wins; malformed ones before it are skipped */
        {"permessage-deflate; server_max_window_bits=8, permessage-deflate; "
         "client_max_window_bits=10",
         PMD "; client_max_window_bits=10", 15, 10, false},
        {"permessage-deflate; foo, permessage-deflate", PMD, 15, 15, false},
        {"permessage-deflate; client_max_window_bits=16, permessage-deflate; "
         "client_no_context_takeover",
         PMD "; client_no_context_takeover", 15, 15, true},
        {"permessage-deflate;, permessage-deflate; server_max_window_bits=11",
         PMD "; server_max_window_bits=11", 11, 15, false},
        {"permessage-deflate; server_max_window_bits=9, permessage-deflate; "
         "server_max_window_bits=10",
         PMD "; server_max_window_bits=9", 9, 15, false},
        /* other extensions before (their parameters are not ours to judge) */
        {"x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=9",
         PMD "; client_max_window_bits=9", 15, 9, false},
        {"foo; bar; bar; baz=\"a,b;c\", permessage-deflate", PMD, 15, 15, false},
        {"foo; =, permessage-deflate", PMD, 15, 15, false},
        {"foo bar, permessage-deflate", PMD, 15, 15, false},
        {"foo; x=\"\\\"\", permessage-deflate", PMD, 15, 15, false},
        /* a broken element is skipped to the next comma outside quotes, escapes included */
        {"foo; = \"\\\", x\", permessage-deflate", PMD, 15, 15, false},
        /* empty elements and whitespace */
        {", ,permessage-deflate,,", PMD, 15, 15, false},
        {" \tpermessage-deflate \t; \tclient_max_window_bits \t= \t10 \t, foo",
         PMD "; client_max_window_bits=10", 15, 10, false},
        {"permessage-deflate;server_max_window_bits=13;client_no_context_takeover",
         PMD "; client_no_context_takeover; server_max_window_bits=13", 13, 15, true},
        /* quoted values are unescaped, then checked */
        {"permessage-deflate; server_max_window_bits=\"10\"", PMD "; server_max_window_bits=10", 10,
         15, false},
        {"permessage-deflate; client_max_window_bits=\"1\\2\"", PMD "; client_max_window_bits=12",
         15, 12, false},
        {"permessage-deflate; client_max_window_bits=\"\\9\"", PMD "; client_max_window_bits=9", 15,
         9, false},
        /* case of tokens */
        {"PerMessage-Deflate; Client_Max_Window_Bits=10; SERVER_NO_CONTEXT_TAKEOVER",
         PMD "; client_max_window_bits=10", 15, 10, false},
    };
    struct ws_deflate_policy pol;

    (void)state;
    ws_deflate_policy_init(&pol);
    pol.enabled = true;
    pol.client_no_context_takeover = false;
    for (size_t i = 0; i < NVEC(cases); i++)
        check_nego(&pol, &cases[i]);
}

static void test_ws_deflate_negotiate_policy_checks(void **state)
{
    struct ws_deflate_policy pol;
    struct ws_deflate_params p;
    const char *offer = "permessage-deflate; client_max_window_bits";

    (void)state;
    ws_deflate_policy_init(&pol);
    assert_false(pol.enabled); /* off by default */
    assert_int_equal(pol.server_max_window_bits, 15);
    assert_int_equal(pol.client_max_window_bits, 15);
    assert_true(pol.client_no_context_takeover);
    assert_false(ws_deflate_negotiate(&pol, offer, strlen(offer), &p));
    pol.enabled = true;
    assert_true(ws_deflate_negotiate(&pol, offer, strlen(offer), &p));
    pol.server_max_window_bits = 8; /* zlib cannot deflate with it */
    assert_false(ws_deflate_negotiate(&pol, offer, strlen(offer), &p));
    pol.server_max_window_bits = 16;
    assert_false(ws_deflate_negotiate(&pol, offer, strlen(offer), &p));
    pol.server_max_window_bits = 15;
    pol.client_max_window_bits = 8; /* a modern-zlib client could not honour it */
    assert_false(ws_deflate_negotiate(&pol, offer, strlen(offer), &p));
    pol.client_max_window_bits = 16;
    assert_false(ws_deflate_negotiate(&pol, offer, strlen(offer), &p));
}

static void test_ws_deflate_response_format(void **state)
{
    struct ws_deflate_params p = {15, 15, false, false};
    char out[WS_DEFLATE_RESPONSE_MAX];

    (void)state;
    assert_int_equal(ws_deflate_response(&p, out), strlen(PMD));
    assert_string_equal(out, PMD);
    p = (struct ws_deflate_params){15, 12, true, false};
    ws_deflate_response(&p, out);
    assert_string_equal(out, "permessage-deflate; server_no_context_takeover; "
                             "client_no_context_takeover; client_max_window_bits=12");
    /* The longest response fits with room to spare. */
    p = (struct ws_deflate_params){15, 14, true, true};
    assert_true(ws_deflate_response(&p, out) < WS_DEFLATE_RESPONSE_MAX - 1);
    assert_string_equal(out, "permessage-deflate; server_no_context_takeover; "
                             "client_no_context_takeover; server_max_window_bits=15; "
                             "client_max_window_bits=14");
}

/* ---- RFC 7692 §7.2.3 vectors ---- */

struct inflate_vector {
    const char *name;
    const char *msgs[3]; /* hex payloads of consecutive messages */
    const char *want[3]; /* their inflated text */
    bool takeover;       /* context takeover (else client_no_context_takeover) */
};

static const struct inflate_vector rfc_vectors[] = {
    {"7.2.3.1 one compressed block", {"f2 48 cd c9 c9 07 00"}, {"Hello"}, false},
    {"7.2.3.2 shared sliding window",
     {"f2 48 cd c9 c9 07 00", "f2 00 11 00 00"},
     {"Hello", "Hello"},
     true},
    {"7.2.3.2 no context takeover",
     {"f2 48 cd c9 c9 07 00", "f2 48 cd c9 c9 07 00"},
     {"Hello", "Hello"},
     false},
    {"7.2.3.3 block with no compression", {"00 05 00 fa ff 48 65 6c 6c 6f 00"}, {"Hello"}, false},
    {"7.2.3.4 BFINAL set", {"f3 48 cd c9 c9 07 00 00"}, {"Hello"}, false},
    {"7.2.3.4 BFINAL set, takeover",
     {"f3 48 cd c9 c9 07 00 00", "f2 48 cd c9 c9 07 00"},
     {"Hello", "Hello"},
     true},
    {"7.2.3.5 two blocks", {"f2 48 05 00 00 00 ff ff ca c9 c9 07 00"}, {"Hello"}, false},
    {"empty message as 00", {"00", "f2 48 cd c9 c9 07 00"}, {"", "Hello"}, true},
    {"empty payload", {"", "f2 48 cd c9 c9 07 00", ""}, {"", "Hello", ""}, true},
    {"sender kept the tail", {"f2 48 cd c9 c9 07 00 00 00 ff ff"}, {"Hello"}, false},
    {"bytes after the final block", {"f3 48 cd c9 c9 07 00 de ad be ef"}, {"Hello"}, false},
};

/*
 * Runs a vector with each message fed whole, byte by byte, and split in two and in three at every
 * offset; every way must inflate to the same text. Memory goes back to 0 after _release, and after
 * every message without context takeover.
 */
static void run_vector(const struct inflate_vector *v)
{
    uint8_t z[3][64];
    size_t zn[3], nmsg = 0;

    print_message("vector %s\n", v->name);
    for (; nmsg < 3 && v->msgs[nmsg]; nmsg++)
        zn[nmsg] = unhex(v->msgs[nmsg], z[nmsg]);
    /* mode 0: whole; 1: byte by byte; 2: two pieces cut at a; 3: three pieces at a and b */
    for (size_t mode = 0; mode < 4; mode++) {
        size_t amax = mode >= 2 ? 64 : 1;
        for (size_t a = 0; a < amax; a++) {
            for (size_t b = mode == 3 ? a : 0; b < (mode == 3 ? 64 : 1); b++) {
                struct ws_deflate_mem mem = {0};
                struct ws_deflate_params p = params(15, !v->takeover);
                struct ws_deflate_inflater inf;
                bool used = false;

                ws_deflate_inflater_init(&inf, &p, 1024, &mem);
                for (size_t m = 0; m < nmsg; m++) {
                    struct out o = {0};
                    size_t cuts[2] = {a, b};
                    int rc;
                    if ((mode >= 2 && a > zn[m]) || (mode == 3 && b > zn[m]))
                        continue;
                    used = true;
                    if (mode == 0)
                        rc = feed_cuts(&inf, z[m], zn[m], NULL, 0, &o);
                    else if (mode == 1)
                        rc = feed_steps(&inf, z[m], zn[m], 1, &o);
                    else
                        rc = feed_cuts(&inf, z[m], zn[m], cuts, mode - 1, &o);
                    assert_int_equal(rc, WS_DEFLATE_OK);
                    assert_int_equal(o.b.len, strlen(v->want[m]));
                    if (o.b.len)
                        assert_memory_equal(o.b.p, v->want[m], o.b.len);
                    if (!v->takeover)
                        assert_int_equal(mem.in_use, 0);
                    out_reset(&o);
                }
                ws_deflate_inflater_release(&inf);
                assert_int_equal(mem.in_use, 0);
                if (!used)
                    break;
            }
        }
    }
}

static void test_ws_deflate_rfc_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < NVEC(rfc_vectors); i++)
        run_vector(&rfc_vectors[i]);
}

/* The second message of §7.2.3.2 refers to the first: without context takeover it cannot decode. */
static void test_ws_deflate_no_context_takeover_resets(void **state)
{
    uint8_t m1[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00},
            m2[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    struct ws_deflate_mem mem = {0};
    struct ws_deflate_params p = params(15, true);
    struct ws_deflate_inflater inf;
    struct out o = {0};

    (void)state;
    ws_deflate_inflater_init(&inf, &p, 1024, &mem);
    assert_int_equal(feed_cuts(&inf, m1, sizeof m1, NULL, 0, &o), WS_DEFLATE_OK);
    assert_int_equal(mem.in_use, 0);
    assert_int_equal(feed_cuts(&inf, m2, sizeof m2, NULL, 0, &o), WS_DEFLATE_ERR_DATA);
    assert_int_equal(mem.in_use, 0);
    assert_int_equal(feed_cuts(&inf, m1, sizeof m1, NULL, 0, &o), WS_DEFLATE_ERR_PARAM);
    ws_deflate_inflater_release(&inf);
    out_reset(&o);
}

/*
 * A client that ends a message with a final block (§7.2.3.4) and keeps its window: the next message
 * refers back into the first, so the window must survive the restart of the stream.
 */
static void test_ws_deflate_final_block_keeps_window(void **state)
{
    const char *text = "the quick brown fox jumps over the lazy dog, again and again";
    uint8_t z1[256], z2[256];
    size_t n1, n2;
    z_stream zs;
    struct ws_deflate_mem mem = {0};
    struct ws_deflate_params p = params(15, false);
    struct ws_deflate_inflater inf;
    struct out o = {0};

    (void)state;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = (Bytef *)text;
    zs.avail_in = (uInt)strlen(text);
    zs.next_out = z1;
    zs.avail_out = sizeof z1;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    n1 = sizeof z1 - zs.avail_out;
    /* Message 2: the same text, compressed against message 1 as the window. */
    assert_int_equal(deflateReset(&zs), Z_OK);
    assert_int_equal(deflateSetDictionary(&zs, (const Bytef *)text, (uInt)strlen(text)), Z_OK);
    zs.next_in = (Bytef *)text;
    zs.avail_in = (uInt)strlen(text);
    zs.next_out = z2;
    zs.avail_out = sizeof z2;
    assert_int_equal(deflate(&zs, Z_SYNC_FLUSH), Z_OK);
    n2 = sizeof z2 - zs.avail_out - 4;
    assert_memory_equal(z2 + n2, "\x00\x00\xff\xff", 4);
    deflateEnd(&zs);
    assert_true(n2 < 10); /* one back-reference */

    ws_deflate_inflater_init(&inf, &p, 1024, &mem);
    assert_int_equal(feed_cuts(&inf, z1, n1, NULL, 0, &o), WS_DEFLATE_OK);
    assert_int_equal(feed_cuts(&inf, z2, n2, NULL, 0, &o), WS_DEFLATE_OK);
    assert_int_equal(o.b.len, 2 * strlen(text));
    assert_memory_equal(o.b.p, text, strlen(text));
    assert_memory_equal(o.b.p + strlen(text), text, strlen(text));
    ws_deflate_inflater_release(&inf);
    assert_int_equal(mem.in_use, 0);
    out_reset(&o);
}

/* ---- Round trips ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rng();
}

/* Chat-like JSON objects back to back, cut to n bytes. */
static void fill_json(uint8_t *p, size_t n)
{
    static const char *const words[] = {"hello", "there", "how", "are", "you",   "doing",
                                        "today", "lobby", "ok",  "see", "later", "\\u00e9t\\u00e9"};
    size_t at = 0;
    char tmp[512];

    while (at < n) {
        int k =
            snprintf(tmp, sizeof tmp,
                     "{\"type\":\"message\",\"id\":%u,\"room\":\"room-%u\",\"from\":\"user%u\","
                     "\"ts\":17334900%05u,\"body\":{\"text\":\"%s %s %s\"}},",
                     (unsigned)(rng() % 100000), (unsigned)(rng() % 50), (unsigned)(rng() % 1000),
                     (unsigned)(rng() % 100000), words[rng() % NVEC(words)],
                     words[rng() % NVEC(words)], words[rng() % NVEC(words)]);
        size_t take = (size_t)k < n - at ? (size_t)k : n - at;
        memcpy(p + at, tmp, take);
        at += take;
    }
}

static void round_trip(const uint8_t *data, size_t n, int level, unsigned wb, unsigned ml,
                       unsigned client_bits, size_t step)
{
    struct ws_deflate_mem mem = {0};
    struct ws_deflate_compressor c;
    struct ws_deflate_params p = params(client_bits, true);
    struct ws_deflate_inflater inf;
    struct out z = {0}, o = {0};

    assert_int_equal(ws_deflate_compressor_init(&c, level, wb, ml, &mem), WS_DEFLATE_OK);
    assert_int_equal(ws_deflate_compress(&c, data, n, 0, out_sink, &z), WS_DEFLATE_OK);
    if (n == 0) {
        assert_int_equal(z.b.len, 1);
        assert_int_equal(z.b.p[0], 0x00);
    }
    p.server_max_window_bits = (uint8_t)wb;
    assert_true(ws_deflate_compressor_fits(&c, &p));
    ws_deflate_inflater_init(&inf, &p, n, &mem);
    assert_int_equal(feed_steps(&inf, z.b.p, z.b.len, step, &o), WS_DEFLATE_OK);
    assert_int_equal(o.b.len, n);
    if (n)
        assert_memory_equal(o.b.p, data, n);
    ws_deflate_inflater_release(&inf);
    ws_deflate_compressor_release(&c);
    assert_int_equal(mem.in_use, 0);
    out_reset(&z);
    out_reset(&o);
}

static void test_ws_deflate_round_trips(void **state)
{
    static const size_t sizes[] = {0, 1, 125, 126, 65535, 65536, 1 << 20};
    static const struct {
        int level;
        unsigned wb, ml, client_bits;
    } opts[] = {{1, 15, 8, 15}, {6, 12, 5, 12}, {9, 9, 1, 8}, {0, 10, 9, 10}};
    size_t max = 1 << 20;
    uint8_t *rnd = malloc(max), *json = malloc(max);

    (void)state;
    assert_non_null(rnd);
    assert_non_null(json);
    fill_random(rnd, max);
    fill_json(json, max);
    for (size_t s = 0; s < NVEC(sizes); s++) {
        for (size_t k = 0; k < NVEC(opts); k++) {
            size_t step = sizes[s] > 1000 ? 997 : 0;
            print_message("size %zu level %d wb %u ml %u\n", sizes[s], opts[k].level, opts[k].wb,
                          opts[k].ml);
            round_trip(rnd, sizes[s], opts[k].level, opts[k].wb, opts[k].ml, opts[k].client_bits,
                       step);
            round_trip(json, sizes[s], opts[k].level, opts[k].wb, opts[k].ml, opts[k].client_bits,
                       step);
            round_trip(json, sizes[s], opts[k].level, opts[k].wb, opts[k].ml, opts[k].client_bits,
                       0);
        }
    }
    free(rnd);
    free(json);
}

/* A small message of ours, split in two at every offset and fed byte by byte. */
static void test_ws_deflate_inflate_split_everywhere(void **state)
{
    const char *msg = "{\"type\":\"message\",\"id\":12345,\"room\":\"lobby\",\"from\":\"alice\","
                      "\"ts\":1733490000000,\"body\":{\"text\":\"hello there, how are you doing "
                      "today? hello there!\"}}";
    size_t n = strlen(msg);
    struct ws_deflate_compressor c;
    struct out z = {0};
    struct ws_deflate_params p = params(15, true);

    (void)state;
    assert_int_equal(ws_deflate_compressor_init(&c, 6, 15, 8, NULL), WS_DEFLATE_OK);
    assert_int_equal(ws_deflate_compress(&c, (const uint8_t *)msg, n, 0, out_sink, &z),
                     WS_DEFLATE_OK);
    ws_deflate_compressor_release(&c);
    for (size_t cut = 0; cut <= z.b.len + 1; cut++) {
        struct ws_deflate_inflater inf;
        struct out o = {0};
        int rc;
        ws_deflate_inflater_init(&inf, &p, n, NULL);
        if (cut <= z.b.len)
            rc = feed_cuts(&inf, z.b.p, z.b.len, &cut, 1, &o);
        else
            rc = feed_steps(&inf, z.b.p, z.b.len, 1, &o);
        assert_int_equal(rc, WS_DEFLATE_OK);
        assert_int_equal(o.b.len, n);
        assert_memory_equal(o.b.p, msg, n);
        ws_deflate_inflater_release(&inf);
        out_reset(&o);
    }
    out_reset(&z);
}

/* Two messages with context takeover on a long-lived inflater, fed in odd pieces. */
static void test_ws_deflate_context_takeover_stream(void **state)
{
    const char *a = "{\"type\":\"message\",\"room\":\"lobby\",\"body\":{\"text\":\"first\"}}";
    const char *b = "{\"type\":\"message\",\"room\":\"lobby\",\"body\":{\"text\":\"second\"}}";
    uint8_t z[256];
    size_t za, zb;
    z_stream zs;
    struct ws_deflate_mem mem = {0};
    struct ws_deflate_params p = params(12, false);
    struct ws_deflate_inflater inf;
    struct out o = {0};

    (void)state;
    /* A client with context takeover: one stream, a sync flush per message, tails stripped. */
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, -12, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_out = z;
    zs.avail_out = sizeof z;
    zs.next_in = (Bytef *)a;
    zs.avail_in = (uInt)strlen(a);
    assert_int_equal(deflate(&zs, Z_SYNC_FLUSH), Z_OK);
    za = sizeof z - zs.avail_out - 4;
    zs.next_out = z + za; /* overwrite the stripped tail */
    zs.avail_out = (uInt)(sizeof z - za);
    zs.next_in = (Bytef *)b;
    zs.avail_in = (uInt)strlen(b);
    assert_int_equal(deflate(&zs, Z_SYNC_FLUSH), Z_OK);
    zb = sizeof z - zs.avail_out - 4 - za;
    deflateEnd(&zs);
    assert_true(zb < strlen(b) / 2); /* it did refer back */

    ws_deflate_inflater_init(&inf, &p, 4096, &mem);
    assert_int_equal(feed_steps(&inf, z, za, 3, &o), WS_DEFLATE_OK);
    assert_true(mem.in_use > ((size_t)1 << 12)); /* the window is kept between messages */
#if ZLIB_VERNUM == 0x12d0
    assert_int_equal(mem.in_use, ((size_t)1 << 12) + 7320);
#endif
    assert_int_equal(feed_steps(&inf, z + za, zb, 2, &o), WS_DEFLATE_OK);
    assert_int_equal(o.b.len, strlen(a) + strlen(b));
    assert_memory_equal(o.b.p, a, strlen(a));
    assert_memory_equal(o.b.p + strlen(a), b, strlen(b));
    ws_deflate_inflater_release(&inf);
    assert_int_equal(mem.in_use, 0);
    out_reset(&o);
}

/* ---- Bounds and errors ---- */

/* ~1 KB that inflates to 1 MiB: stops with TOO_BIG, the sink never sees more than the bound. */
static void test_ws_deflate_inflate_bomb(void **state)
{
    size_t big = 1 << 20;
    uint8_t *zeros = calloc(1, big);
    struct ws_deflate_compressor c;
    struct out z = {0};
    static const uint64_t bounds[] = {0 + 1, 100, 16383, 16384, 16385, 65536, 1000000};

    (void)state;
    assert_non_null(zeros);
    assert_int_equal(ws_deflate_compressor_init(&c, 9, 15, 9, NULL), WS_DEFLATE_OK);
    assert_int_equal(ws_deflate_compress(&c, zeros, big, 0, out_sink, &z), WS_DEFLATE_OK);
    ws_deflate_compressor_release(&c);
    print_message("1 MiB of zeros -> %zu bytes\n", z.b.len);
    assert_true(z.b.len < 1100);
    for (size_t i = 0; i < NVEC(bounds); i++) {
        for (size_t step = 0; step <= 7; step += 7) {
            struct ws_deflate_mem mem = {0};
            struct ws_deflate_params p = params(15, true);
            struct ws_deflate_inflater inf;
            struct out o = {0};
            ws_deflate_inflater_init(&inf, &p, bounds[i], &mem);
            assert_int_equal(feed_steps(&inf, z.b.p, z.b.len, step, &o), WS_DEFLATE_ERR_TOO_BIG);
            assert_true(o.b.len <= bounds[i]);
            assert_int_equal(mem.in_use, 0); /* freed at the error */
            assert_int_equal(ws_deflate_inflater_feed(&inf, z.b.p, 1, true, out_sink, &o),
                             WS_DEFLATE_ERR_PARAM);
            ws_deflate_inflater_release(&inf);
            out_reset(&o);
        }
    }
    /* Exactly at the bound is fine; one byte less is not. */
    for (size_t step = 0; step <= 100; step += 100) {
        struct ws_deflate_params p = params(15, true);
        struct ws_deflate_inflater inf;
        struct out o = {0};
        ws_deflate_inflater_init(&inf, &p, big, NULL);
        assert_int_equal(feed_steps(&inf, z.b.p, z.b.len, step, &o), WS_DEFLATE_OK);
        assert_int_equal(o.b.len, big);
        ws_deflate_inflater_release(&inf);
        out_reset(&o);
        ws_deflate_inflater_init(&inf, &p, big - 1, NULL);
        assert_int_equal(feed_steps(&inf, z.b.p, z.b.len, step, &o), WS_DEFLATE_ERR_TOO_BIG);
        assert_true(o.b.len <= big - 1);
        ws_deflate_inflater_release(&inf);
        out_reset(&o);
    }
    /* The bound is per message: many messages of max_out bytes each are fine. */
    {
        struct ws_deflate_params p = params(15, false);
        struct ws_deflate_inflater inf;
        struct out o = {0};
        ws_deflate_inflater_init(&inf, &p, big, NULL);
        for (int k = 0; k < 3; k++)
            assert_int_equal(feed_steps(&inf, z.b.p, z.b.len, 0, &o), WS_DEFLATE_OK);
        assert_int_equal(o.b.len, 3 * big);
        ws_deflate_inflater_release(&inf);
        out_reset(&o);
    }
    out_reset(&z);
    free(zeros);
}

static void test_ws_deflate_inflate_corrupt(void **state)
{
    static const char *const bad[] = {
        "ff ff ff",                      /* reserved block type 11 */
        "07",                            /* BTYPE 11 in the first byte */
        "00 05 00 fb ff 48 65 6c 6c 6f", /* stored block with NLEN != ~LEN */
        "f2 48 cd",                      /* cut inside a block */
        "f2 00 11 00 00",                /* distance back into a window we do not have */
        "00 05 00 fa ff 48 65",          /* stored block cut short */
    };
    struct ws_deflate_params p = params(15, true);

    (void)state;
    for (size_t i = 0; i < NVEC(bad); i++) {
        uint8_t z[64];
        size_t n = unhex(bad[i], z);
        for (size_t step = 0; step <= 1; step++) {
            struct ws_deflate_mem mem = {0};
            struct ws_deflate_inflater inf;
            struct out o = {0};
            print_message("corrupt %s step %zu\n", bad[i], step);
            ws_deflate_inflater_init(&inf, &p, 1 << 20, &mem);
            assert_int_equal(feed_steps(&inf, z, n, step, &o), WS_DEFLATE_ERR_DATA);
            assert_int_equal(mem.in_use, 0);
            ws_deflate_inflater_release(&inf);
            out_reset(&o);
        }
    }
    /* Random bytes: an error or some output, never more than the bound, never a leak. */
    for (int k = 0; k < 2000; k++) {
        uint8_t z[64];
        struct ws_deflate_mem mem = {0};
        struct ws_deflate_inflater inf;
        struct out o = {0};
        size_t n = 1 + rng() % sizeof z;
        fill_random(z, n);
        ws_deflate_inflater_init(&inf, &p, 300, &mem);
        (void)feed_steps(&inf, z, n, 1 + rng() % 8, &o);
        assert_true(o.b.len <= 300);
        ws_deflate_inflater_release(&inf);
        assert_int_equal(mem.in_use, 0);
        out_reset(&o);
    }
}

static void test_ws_deflate_sink_refusal(void **state)
{
    uint8_t data[70000];
    struct ws_deflate_compressor c;
    struct ws_deflate_params p = params(15, true);
    struct ws_deflate_inflater inf;
    struct ws_deflate_mem mem = {0};
    struct out z = {0}, o = {.refuse_after = 1};

    (void)state;
    fill_json(data, sizeof data);
    assert_int_equal(ws_deflate_compressor_init(&c, 1, 15, 8, &mem), WS_DEFLATE_OK);
    z.refuse_after = 100;
    assert_int_equal(ws_deflate_compress(&c, data, sizeof data, 0, out_sink, &z),
                     WS_DEFLATE_ERR_SINK);
    out_reset(&z);
    /* The shared compressor is fine for the next message after an error. */
    assert_int_equal(ws_deflate_compress(&c, data, sizeof data, 0, out_sink, &z), WS_DEFLATE_OK);
    ws_deflate_inflater_init(&inf, &p, sizeof data, &mem);
    assert_int_equal(feed_steps(&inf, z.b.p, z.b.len, 0, &o), WS_DEFLATE_ERR_SINK);
    assert_int_equal(o.calls, 1);
    ws_deflate_inflater_release(&inf);
    ws_deflate_compressor_release(&c);
    assert_int_equal(mem.in_use, 0);
    out_reset(&z);
    out_reset(&o);
}

/* ---- Deflate ---- */

static void test_ws_deflate_compress_hello(void **state)
{
    static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    struct ws_deflate_compressor c;
    struct ws_deflate_mem mem = {0};

    (void)state;
    for (int level = 1; level <= 9; level++) {
        assert_int_equal(ws_deflate_compressor_init(&c, level, 15, 8, &mem), WS_DEFLATE_OK);
        for (int k = 0; k < 3; k++) { /* same bytes every time: no context carried */
            struct out z = {0};
            assert_int_equal(ws_deflate_compress(&c, (const uint8_t *)"Hello", 5, 0, out_sink, &z),
                             WS_DEFLATE_OK);
            assert_int_equal(z.b.len, sizeof hello);
            assert_memory_equal(z.b.p, hello, sizeof hello);
            out_reset(&z);
            assert_int_equal(ws_deflate_compress(&c, NULL, 0, 0, out_sink, &z), WS_DEFLATE_OK);
            assert_int_equal(z.b.len, 1);
            assert_int_equal(z.b.p[0], 0);
            out_reset(&z);
        }
        ws_deflate_compressor_release(&c);
    }
    assert_int_equal(mem.in_use, 0);
}

static void test_ws_deflate_compress_bound_and_params(void **state)
{
    uint8_t rnd[65536], json[65536];
    struct ws_deflate_compressor c, fresh;
    struct ws_deflate_params p = params(15, true);
    struct out z = {0}, z2 = {0};

    (void)state;
    fill_random(rnd, sizeof rnd);
    fill_json(json, sizeof json);
    assert_int_equal(ws_deflate_compressor_init(&c, 6, 12, 5, NULL), WS_DEFLATE_OK);
    /* Incompressible data with max_out = its size: compression does not pay. */
    assert_int_equal(ws_deflate_compress(&c, rnd, sizeof rnd, sizeof rnd, out_sink, &z),
                     WS_DEFLATE_ERR_TOO_BIG);
    assert_true(z.b.len <= sizeof rnd);
    out_reset(&z);
    assert_int_equal(ws_deflate_compress(&c, json, sizeof json, sizeof json, out_sink, &z),
                     WS_DEFLATE_OK);
    assert_true(z.b.len < sizeof json / 3);
    assert_true(z.max_piece <= WS_DEFLATE_CHUNK);
    /* max_out exactly the output size works, one less does not. */
    assert_int_equal(ws_deflate_compress(&c, json, sizeof json, z.b.len, out_sink, &z2),
                     WS_DEFLATE_OK);
    assert_int_equal(z2.b.len, z.b.len);
    out_reset(&z2);
    assert_int_equal(ws_deflate_compress(&c, json, sizeof json, z.b.len - 1, out_sink, &z2),
                     WS_DEFLATE_ERR_TOO_BIG);
    out_reset(&z2);
    /* After other messages, the output equals a fresh compressor's: nothing carried over. */
    assert_int_equal(ws_deflate_compressor_init(&fresh, 6, 12, 5, NULL), WS_DEFLATE_OK);
    assert_int_equal(ws_deflate_compress(&fresh, json, sizeof json, 0, out_sink, &z2),
                     WS_DEFLATE_OK);
    assert_int_equal(z2.b.len, z.b.len);
    assert_memory_equal(z2.b.p, z.b.p, z.b.len);
    ws_deflate_compressor_release(&fresh);
    out_reset(&z2);
    /* fits: our window must not exceed what the recipient allowed */
    p.server_max_window_bits = 12;
    assert_true(ws_deflate_compressor_fits(&c, &p));
    p.server_max_window_bits = 11;
    assert_false(ws_deflate_compressor_fits(&c, &p));
    ws_deflate_compressor_release(&c);
    ws_deflate_compressor_release(&c); /* twice is fine */
    ws_deflate_compressor_release(NULL);
    out_reset(&z);

    /* Bad parameters: init says so, and the compressor stays unusable. */
    assert_int_equal(ws_deflate_compressor_init(&c, 10, 15, 8, NULL), WS_DEFLATE_ERR_PARAM);
    assert_int_equal(ws_deflate_compress(&c, json, 10, 0, out_sink, &z), WS_DEFLATE_ERR_PARAM);
    assert_false(ws_deflate_compressor_fits(&c, &p));
    assert_int_equal(ws_deflate_compressor_init(&c, -1, 15, 8, NULL), WS_DEFLATE_ERR_PARAM);
    assert_int_equal(ws_deflate_compressor_init(&c, 1, 8, 8, NULL), WS_DEFLATE_ERR_PARAM);
    assert_int_equal(ws_deflate_compressor_init(&c, 1, 16, 8, NULL), WS_DEFLATE_ERR_PARAM);
    assert_int_equal(ws_deflate_compressor_init(&c, 1, 15, 0, NULL), WS_DEFLATE_ERR_PARAM);
    assert_int_equal(ws_deflate_compressor_init(&c, 1, 15, 10, NULL), WS_DEFLATE_ERR_PARAM);
    out_reset(&z);
}

/* ---- Memory accounting ---- */

static void test_ws_deflate_memory_accounting(void **state)
{
    const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};

    (void)state;
    /* Inflate: exactly 1 << wb + the fixed part, within the worst case; 0 again after release. */
    for (unsigned wb = 8; wb <= 15; wb++) {
        struct ws_deflate_mem mem = {0};
        struct ws_deflate_params p = params(wb, false);
        struct ws_deflate_inflater inf;
        struct out o = {0};
        size_t eff = wb < 9 ? 9 : wb;

        ws_deflate_inflater_init(&inf, &p, 100, &mem);
        assert_int_equal(mem.in_use, 0); /* lazily allocated */
        assert_int_equal(feed_cuts(&inf, hello, sizeof hello, NULL, 0, &o), WS_DEFLATE_OK);
        print_message("inflate wb %u: %zu bytes (worst %zu)\n", wb, mem.in_use,
                      ws_deflate_inflate_worst(wb));
        assert_true(mem.in_use >= ((size_t)1 << eff));
        assert_true(mem.in_use <= ws_deflate_inflate_worst(wb));
        assert_true(ws_deflate_inflate_worst(wb) - mem.in_use < 1024);
#if ZLIB_VERNUM == 0x12d0
        assert_int_equal(mem.in_use, ((size_t)1 << eff) + 7320);
#endif
        assert_int_equal(mem.peak, mem.in_use);
        ws_deflate_inflater_release(&inf);
        assert_int_equal(mem.in_use, 0);
        out_reset(&o);
    }
    /* Deflate: (1 << (wb + 2)) + (1 << (ml + 9)) + the fixed part. */
    for (unsigned wb = 9; wb <= 15; wb++) {
        for (unsigned ml = 1; ml <= 9; ml++) {
            struct ws_deflate_mem mem = {0};
            struct ws_deflate_compressor c;
            struct out z = {0};
            assert_int_equal(ws_deflate_compressor_init(&c, 1, wb, ml, &mem), WS_DEFLATE_OK);
            assert_int_equal(mem.in_use, 0);
            assert_int_equal(ws_deflate_compress(&c, (const uint8_t *)"Hello", 5, 0, out_sink, &z),
                             WS_DEFLATE_OK);
            assert_true(mem.in_use >= ((size_t)1 << (wb + 2)) + ((size_t)1 << (ml + 9)));
            assert_true(mem.in_use <= ws_deflate_deflate_worst(wb, ml));
            assert_true(ws_deflate_deflate_worst(wb, ml) - mem.in_use < 1024);
#if ZLIB_VERNUM == 0x12d0
            assert_int_equal(mem.in_use, ((size_t)1 << (wb + 2)) + ((size_t)1 << (ml + 9)) + 6160);
#endif
            ws_deflate_compressor_release(&c);
            assert_int_equal(mem.in_use, 0);
            out_reset(&z);
        }
    }
}

static void test_ws_deflate_memory_budget(void **state)
{
    const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    struct ws_deflate_mem mem = {0};
    struct ws_deflate_params p = params(12, true);
    struct ws_deflate_inflater inf;
    struct ws_deflate_compressor c;
    struct out o = {0};
    size_t worst = ws_deflate_inflate_worst(12);

    (void)state;
    /* Reservations: fit, reserve, refuse beyond the budget, give back. */
    mem.budget = 2 * worst + worst / 2;
    assert_true(ws_deflate_mem_fits(&mem, worst));
    assert_true(ws_deflate_mem_reserve(&mem, worst));
    assert_true(ws_deflate_mem_reserve(&mem, worst));
    assert_false(ws_deflate_mem_fits(&mem, worst));
    assert_false(ws_deflate_mem_reserve(&mem, worst));
    assert_int_equal(mem.reserved, 2 * worst);
    ws_deflate_mem_unreserve(&mem, worst);
    assert_true(ws_deflate_mem_reserve(&mem, worst));
    ws_deflate_mem_unreserve(&mem, 10 * worst);
    assert_int_equal(mem.reserved, 0);
    mem.budget = 0;
    assert_true(ws_deflate_mem_fits(&mem, SIZE_MAX));

    /* The budget is a hard ceiling on what zlib gets: NOMEM, nothing leaks. */
    mem.budget = worst / 2;
    ws_deflate_inflater_init(&inf, &p, 100, &mem);
    assert_int_equal(feed_cuts(&inf, hello, sizeof hello, NULL, 0, &o), WS_DEFLATE_ERR_NOMEM);
    assert_int_equal(mem.in_use, 0);
    ws_deflate_inflater_release(&inf);
    mem.budget = 100; /* not even the z_stream */
    ws_deflate_inflater_init(&inf, &p, 100, &mem);
    assert_int_equal(feed_cuts(&inf, hello, sizeof hello, NULL, 0, &o), WS_DEFLATE_ERR_NOMEM);
    ws_deflate_inflater_release(&inf);
    assert_int_equal(ws_deflate_compressor_init(&c, 1, 15, 8, &mem), WS_DEFLATE_OK);
    assert_int_equal(ws_deflate_compress(&c, hello, sizeof hello, 0, out_sink, &o),
                     WS_DEFLATE_ERR_NOMEM);
    ws_deflate_compressor_release(&c);
    assert_int_equal(mem.in_use, 0);
    /* Room for the zlib state but not for the window it allocates at the first output. */
    mem.budget = worst - 1024;
    ws_deflate_inflater_init(&inf, &p, 100, &mem);
    assert_int_equal(feed_cuts(&inf, hello, sizeof hello, NULL, 0, &o), WS_DEFLATE_ERR_NOMEM);
    assert_int_equal(mem.in_use, 0);
    ws_deflate_inflater_release(&inf);
    /* Room for the z_stream but not for deflate's state. */
    mem.budget = 1000;
    assert_int_equal(ws_deflate_compressor_init(&c, 1, 15, 8, &mem), WS_DEFLATE_OK);
    assert_int_equal(ws_deflate_compress(&c, hello, sizeof hello, 0, out_sink, &o),
                     WS_DEFLATE_ERR_NOMEM);
    assert_int_equal(mem.in_use, 0);
    ws_deflate_compressor_release(&c);
    out_reset(&o);
    mem.budget = worst;
    ws_deflate_inflater_init(&inf, &p, 100, &mem);
    assert_int_equal(feed_cuts(&inf, hello, sizeof hello, NULL, 0, &o), WS_DEFLATE_OK);
    assert_memory_equal(o.b.p, "Hello", 5);
    ws_deflate_inflater_release(&inf);
    assert_int_equal(mem.in_use, 0);
    assert_true(mem.peak <= worst);
    out_reset(&o);
}

/* ---- Small helpers ---- */

static void test_ws_deflate_helpers(void **state)
{
    struct ws_deflate_buf b = {0};

    (void)state;
    assert_true(ws_deflate_rsv1_allowed(true, 0x1));
    assert_true(ws_deflate_rsv1_allowed(true, 0x2));
    assert_false(ws_deflate_rsv1_allowed(true, 0x0)); /* continuation */
    assert_false(ws_deflate_rsv1_allowed(true, 0x8));
    assert_false(ws_deflate_rsv1_allowed(true, 0x9));
    assert_false(ws_deflate_rsv1_allowed(true, 0xA));
    assert_false(ws_deflate_rsv1_allowed(false, 0x1));
    assert_true(ws_deflate_worth_compressing(0x1, 1024, 1024));
    assert_false(ws_deflate_worth_compressing(0x1, 1023, 1024));
    assert_true(ws_deflate_worth_compressing(0x2, 0, 0));
    assert_false(ws_deflate_worth_compressing(0x9, 4096, 0));
    assert_false(ws_deflate_worth_compressing(0x0, 4096, 0));
    assert_int_equal(WS_DEFLATE_RSV1, 0x40);

    for (int e = WS_DEFLATE_ERR_PARAM; e <= WS_DEFLATE_OK; e++)
        assert_string_not_equal(ws_deflate_strerror(e), "unknown error");
    assert_string_equal(ws_deflate_strerror(-99), "unknown error");

    for (int i = 0; i < 1000; i++)
        assert_int_equal(ws_deflate_buf_sink(&b, (const uint8_t *)"0123456789", 10), 0);
    assert_int_equal(b.len, 10000);
    assert_true(b.cap >= b.len);
    assert_memory_equal(b.p + 9990, "0123456789", 10);
    ws_deflate_buf_release(&b);
    assert_null(b.p);
    assert_int_equal(b.len, 0);
    ws_deflate_buf_release(NULL);
    ws_deflate_inflater_release(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ws_deflate_negotiate_parameters),
        cmocka_unit_test(test_ws_deflate_negotiate_policy_limits),
        cmocka_unit_test(test_ws_deflate_negotiate_malformed),
        cmocka_unit_test(test_ws_deflate_negotiate_lists_and_syntax),
        cmocka_unit_test(test_ws_deflate_negotiate_policy_checks),
        cmocka_unit_test(test_ws_deflate_response_format),
        cmocka_unit_test(test_ws_deflate_rfc_vectors),
        cmocka_unit_test(test_ws_deflate_no_context_takeover_resets),
        cmocka_unit_test(test_ws_deflate_final_block_keeps_window),
        cmocka_unit_test(test_ws_deflate_round_trips),
        cmocka_unit_test(test_ws_deflate_inflate_split_everywhere),
        cmocka_unit_test(test_ws_deflate_context_takeover_stream),
        cmocka_unit_test(test_ws_deflate_inflate_bomb),
        cmocka_unit_test(test_ws_deflate_inflate_corrupt),
        cmocka_unit_test(test_ws_deflate_sink_refusal),
        cmocka_unit_test(test_ws_deflate_compress_hello),
        cmocka_unit_test(test_ws_deflate_compress_bound_and_params),
        cmocka_unit_test(test_ws_deflate_memory_accounting),
        cmocka_unit_test(test_ws_deflate_memory_budget),
        cmocka_unit_test(test_ws_deflate_helpers),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
