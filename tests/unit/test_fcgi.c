/*
 * test_fcgi.c -- the FastCGI client codec: every writer byte for byte (1- and 4-byte name-value
 * lengths, STDIN split at 65535 with padding, terminators), the record parser on every record type
 * whole, byte by byte and split at every offset, its refusals, and the CGI Status of STDOUT.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/fcgi.h"

/* ---- Writers ---- */

static void test_fcgi_begin_request(void **state)
{
    (void)state;
    uint8_t b[16];
    static const uint8_t want[16] = {1, 1, 0x12, 0x34, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0};
    assert_int_equal(fcgi_begin_request(NULL, 0, 0x1234, true), 16);
    assert_int_equal(fcgi_begin_request(b, sizeof b, 0x1234, true), 16);
    assert_memory_equal(b, want, 16);
    fcgi_begin_request(b, sizeof b, 1, false);
    assert_int_equal(b[10], 0);
}

static void test_fcgi_params_lengths(void **state)
{
    (void)state;
    char longv[300];
    memset(longv, 'v', sizeof longv);
    struct fcgi_param p[] = {
        {"A", 1, "xy", 2},
        {"LONG", 4, longv, sizeof longv},
        {"E", 1, "", 0},
    };
    size_t need = fcgi_params_encode(NULL, 0, p, 3);
    assert_int_equal(need, (1 + 1 + 1 + 2) + (1 + 4 + 4 + 300) + (1 + 1 + 1));
    uint8_t *b = malloc(need);
    assert_int_equal(fcgi_params_encode(b, need - 1, p, 3), need); /* too small: nothing written */
    assert_int_equal(fcgi_params_encode(b, need, p, 3), need);
    assert_memory_equal(b, "\x01\x02" "Axy", 5);
    assert_int_equal(b[5], 4);
    assert_memory_equal(b + 6, "\x80\x00\x01\x2c", 4); /* 300 with the top bit set */
    assert_memory_equal(b + 10, "LONG", 4);
    assert_int_equal(b[14], 'v');
    assert_memory_equal(b + 314, "\x01\x00" "E", 3);
    free(b);
}

static void test_fcgi_stream_split_padding(void **state)
{
    (void)state;
    size_t len = 65535 + 65535 + 10;
    uint8_t *data = malloc(len);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)i;
    size_t need = fcgi_stream(NULL, 0, FCGI_STDIN, 7, data, len, true);
    assert_int_equal(need, 2 * (8 + 65535 + 1) + (8 + 10 + 6) + 8);
    uint8_t *b = malloc(need);
    assert_int_equal(fcgi_stream(b, need, FCGI_STDIN, 7, data, len, true), need);
    uint8_t h1[8] = {1, FCGI_STDIN, 0, 7, 0xff, 0xff, 1, 0};
    assert_memory_equal(b, h1, 8);
    assert_memory_equal(b + 8, data, 65535);
    assert_int_equal(b[8 + 65535], 0); /* padding */
    uint8_t *r3 = b + 2 * (8 + 65535 + 1);
    uint8_t h3[8] = {1, FCGI_STDIN, 0, 7, 0, 10, 6, 0};
    assert_memory_equal(r3, h3, 8);
    assert_memory_equal(r3 + 8, data + 2 * 65535, 10);
    uint8_t term[8] = {1, FCGI_STDIN, 0, 7, 0, 0, 0, 0};
    assert_memory_equal(b + need - 8, term, 8);
    /* Empty data: only the terminator, or nothing. */
    assert_int_equal(fcgi_stream(NULL, 0, FCGI_STDIN, 7, NULL, 0, true), 8);
    assert_int_equal(fcgi_stream(NULL, 0, FCGI_STDIN, 7, NULL, 0, false), 0);
    /* Exactly one full record: no empty middle record. */
    assert_int_equal(fcgi_stream(NULL, 0, FCGI_STDIN, 7, data, 65535, false), 8 + 65535 + 1);
    free(b);
    free(data);
}

/* fcgi_request must equal its parts written one by one, for small and >64 KiB params. */
static void check_request(size_t vlen, size_t body_len)
{
    char *v = malloc(vlen + 1);
    uint8_t *body = malloc(body_len + 1);
    memset(v, 'p', vlen);
    memset(body, 'b', body_len);
    struct fcgi_param p[] = {{"SCRIPT_FILENAME", 15, "/x.php", 6}, {"BIG", 3, v, vlen}};
    size_t plen = fcgi_params_encode(NULL, 0, p, 2);
    uint8_t *pairs = malloc(plen);
    fcgi_params_encode(pairs, plen, p, 2);
    size_t n1 = 16, n2 = fcgi_stream(NULL, 0, FCGI_PARAMS, 3, pairs, plen, true),
           n3 = fcgi_stream(NULL, 0, FCGI_STDIN, 3, body, body_len, true);
    uint8_t *want = malloc(n1 + n2 + n3);
    fcgi_begin_request(want, n1, 3, true);
    fcgi_stream(want + n1, n2, FCGI_PARAMS, 3, pairs, plen, true);
    fcgi_stream(want + n1 + n2, n3, FCGI_STDIN, 3, body, body_len, true);
    size_t need = fcgi_request(NULL, 0, 3, true, p, 2, body, body_len);
    assert_int_equal(need, n1 + n2 + n3);
    uint8_t *got = malloc(need);
    assert_int_equal(fcgi_request(got, need, 3, true, p, 2, body, body_len), need);
    assert_memory_equal(got, want, need);
    free(got);
    free(want);
    free(pairs);
    free(body);
    free(v);
}

static void test_fcgi_request_whole(void **state)
{
    (void)state;
    check_request(5, 0);
    check_request(100, 17);
    check_request(70000, 65536);
    check_request(65535 * 2, 3);
}

/* ---- Parser ---- */

struct got {
    char out[256];
    size_t out_len;
    char err[64];
    size_t err_len;
    int ends;
    uint32_t app_status;
    uint8_t proto_status;
    int rc; /* first error, 0 if none */
};

static void feed(struct fcgi_parser *p, struct got *g, const uint8_t *buf, size_t len)
{
    while (g->rc == 0) {
        struct fcgi_event ev;
        int n = fcgi_parse(p, buf, len, &ev);
        if (n < 0) {
            g->rc = n;
            return;
        }
        assert_true((size_t)n <= len);
        buf += n;
        len -= n;
        switch (ev.kind) {
        case FCGI_EV_NONE:
            assert_int_equal(len, 0);
            return;
        case FCGI_EV_STDOUT:
            assert_true(ev.len > 0 && g->out_len + ev.len <= sizeof g->out);
            memcpy(g->out + g->out_len, ev.data, ev.len);
            g->out_len += ev.len;
            break;
        case FCGI_EV_STDERR:
            assert_true(ev.len > 0 && g->err_len + ev.len <= sizeof g->err);
            memcpy(g->err + g->err_len, ev.data, ev.len);
            g->err_len += ev.len;
            break;
        case FCGI_EV_END:
            g->ends++;
            g->app_status = ev.app_status;
            g->proto_status = ev.protocol_status;
            break;
        }
    }
}

/* A response: STDOUT in two records (one padded), a management record, STDERR, empty STDOUT and
 * STDERR, END_REQUEST padded, as php-fpm may send it. */
static const uint8_t resp[] = {
    1, FCGI_STDOUT, 0, 1, 0, 5, 3, 0, 'S', 't', 'a', 't', 'u', 0, 0, 0,
    1, FCGI_UNKNOWN_TYPE, 0, 0, 0, 8, 0, 0, 99, 0, 0, 0, 0, 0, 0, 0,
    1, FCGI_STDOUT, 0, 1, 0, 12, 0, 0, 's', ':', ' ', '2', '0', '4', '\r', '\n', '\r', '\n', 'o',
    'k',
    1, FCGI_STDERR, 0, 1, 0, 4, 4, 0, 'w', 'a', 'r', 'n', 0, 0, 0, 0,
    1, FCGI_STDERR, 0, 1, 0, 0, 0, 0,
    1, FCGI_STDOUT, 0, 1, 0, 0, 0, 0,
    1, FCGI_END_REQUEST, 0, 1, 0, 8, 8, 0, 0, 0, 1, 2, FCGI_REQUEST_COMPLETE, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0,
};

static void check_resp(const struct got *g)
{
    assert_int_equal(g->rc, 0);
    assert_int_equal(g->out_len, 17);
    assert_memory_equal(g->out, "Status: 204\r\n\r\nok", 17);
    assert_int_equal(g->err_len, 4);
    assert_memory_equal(g->err, "warn", 4);
    assert_int_equal(g->ends, 1);
    assert_int_equal(g->app_status, 258);
    assert_int_equal(g->proto_status, FCGI_REQUEST_COMPLETE);
}

static void test_fcgi_parse_whole_and_bytewise(void **state)
{
    (void)state;
    struct fcgi_parser p;
    struct got g = {0};
    uint8_t *copy = malloc(sizeof resp);
    memcpy(copy, resp, sizeof resp);
    fcgi_parser_init(&p);
    feed(&p, &g, copy, sizeof resp);
    check_resp(&g);
    memset(&g, 0, sizeof g);
    fcgi_parser_init(&p);
    for (size_t i = 0; i < sizeof resp; i++) {
        uint8_t *one = malloc(1);
        *one = resp[i];
        feed(&p, &g, one, 1);
        free(one);
    }
    check_resp(&g);
    free(copy);
}

static void test_fcgi_parse_split_every_offset(void **state)
{
    (void)state;
    for (size_t a = 0; a <= sizeof resp; a++)
        for (size_t b = a; b <= sizeof resp; b += 7) {
            struct fcgi_parser p;
            struct got g = {0};
            fcgi_parser_init(&p);
            uint8_t *x = malloc(a + 1), *y = malloc(b - a + 1), *z = malloc(sizeof resp - b + 1);
            memcpy(x, resp, a);
            memcpy(y, resp + a, b - a);
            memcpy(z, resp + b, sizeof resp - b);
            feed(&p, &g, x, a);
            feed(&p, &g, y, b - a);
            feed(&p, &g, z, sizeof resp - b);
            check_resp(&g);
            free(x);
            free(y);
            free(z);
        }
}

static void test_fcgi_parse_refusals(void **state)
{
    (void)state;
    struct fcgi_parser p;
    struct fcgi_event ev;
    static const uint8_t badver[] = {2, FCGI_STDOUT, 0, 1, 0, 0, 0, 0};
    static const uint8_t badtype[] = {1, FCGI_BEGIN_REQUEST, 0, 1, 0, 8, 0, 0};
    static const uint8_t badtype2[] = {1, 42, 0, 1, 0, 0, 0, 0};
    static const uint8_t badlen[] = {1, FCGI_END_REQUEST, 0, 1, 0, 7, 0, 0};
    static const uint8_t end[] = {1, FCGI_END_REQUEST, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 9};
    fcgi_parser_init(&p);
    assert_int_equal(fcgi_parse(&p, badver, 7, &ev), 7); /* not known until the header is whole */
    assert_int_equal(fcgi_parse(&p, badver + 7, 1, &ev), FCGI_ERR_VERSION);
    fcgi_parser_init(&p);
    assert_int_equal(fcgi_parse(&p, badtype, sizeof badtype, &ev), FCGI_ERR_TYPE);
    fcgi_parser_init(&p);
    assert_int_equal(fcgi_parse(&p, badtype2, sizeof badtype2, &ev), FCGI_ERR_TYPE);
    fcgi_parser_init(&p);
    assert_int_equal(fcgi_parse(&p, badlen, sizeof badlen, &ev), FCGI_ERR_LENGTH);
    fcgi_parser_init(&p);
    assert_int_equal(fcgi_parse(&p, end, sizeof end, &ev), 16);
    assert_int_equal(ev.kind, FCGI_EV_END);
    assert_int_equal(ev.protocol_status, FCGI_UNKNOWN_ROLE);
    assert_int_equal(fcgi_parse(&p, end + 16, 1, &ev), FCGI_ERR_STATE);
    assert_int_equal(fcgi_parse(&p, end, 0, &ev), 0);
    assert_string_equal(fcgi_strerror(FCGI_ERR_TYPE), "unexpected record type");
}

/* ---- CGI head ---- */

static int status_of(const char *s, size_t max, size_t *head_len)
{
    int st = -1;
    size_t n = strlen(s);
    char *c = malloc(n + 1);
    memcpy(c, s, n);
    int rc = fcgi_cgi_status(c, n, max, &st, head_len);
    free(c);
    return rc == 0 ? st : rc;
}

static void test_fcgi_cgi_status(void **state)
{
    (void)state;
    size_t hl = 0;
    assert_int_equal(status_of("Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nbody", 1024, &hl),
                     200);
    assert_int_equal(hl, 44);
    assert_int_equal(status_of("Content-Type: text/html\r\n\r\n", 1024, &hl), 200);
    assert_int_equal(status_of("Status: 503 Service Unavailable\n\n", 1024, &hl), 503);
    assert_int_equal(hl, 33);
    assert_int_equal(status_of("status:404\r\n\r\n", 1024, &hl), 404);
    assert_int_equal(status_of("Location: /x\r\n\r\n", 1024, &hl), 302);
    assert_int_equal(status_of("\r\nbody", 1024, &hl), 200);
    assert_int_equal(hl, 2);
    assert_int_equal(status_of("Status: 500", 1024, &hl), FCGI_NEED_MORE);
    assert_int_equal(status_of("Status: 500\r\nX: y\r\n", 1024, &hl), FCGI_NEED_MORE);
    assert_int_equal(status_of("X-Powered-By: PHP\r\nX: yyyyyyyyy", 16, &hl), FCGI_ERR_HEAD);
    assert_int_equal(status_of("Status: 2x0\r\n\r\n", 1024, &hl), FCGI_ERR_HEAD);
    assert_int_equal(status_of("Status: 2000\r\n\r\n", 1024, &hl), FCGI_ERR_HEAD);
    assert_int_equal(status_of("Status: 099\r\n\r\n", 1024, &hl), FCGI_ERR_HEAD);
    assert_int_equal(status_of("Status: 20\r\n\r\n", 1024, &hl), FCGI_ERR_HEAD);
    assert_int_equal(status_of("no colon here\r\n\r\n", 1024, &hl), FCGI_ERR_HEAD);
    assert_int_equal(status_of("Status: 200\r\nStatus: 500\r\n\r\n", 1024, &hl), FCGI_ERR_HEAD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fcgi_begin_request),
        cmocka_unit_test(test_fcgi_params_lengths),
        cmocka_unit_test(test_fcgi_stream_split_padding),
        cmocka_unit_test(test_fcgi_request_whole),
        cmocka_unit_test(test_fcgi_parse_whole_and_bytewise),
        cmocka_unit_test(test_fcgi_parse_split_every_offset),
        cmocka_unit_test(test_fcgi_parse_refusals),
        cmocka_unit_test(test_fcgi_cgi_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
