/*
 * test_conn.c -- the connection module (net/conn.c) driven over a socket pair with a recording
 * handler, as libevent's regress_bufferevent does: the request goes up through on_request, an
 * upgraded connection calls up only through its conn_handler, every way it ends calls on_close
 * exactly once, and frames held for the group commit wait for the flush. No store, no listener.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/config.h"
#include "net/conn.h"
#include "net/loop.h"
#include "proto/ws_handshake.h"

/* What the handler saw; the test's own state. */
struct rec {
    int requests;
    int messages;
    uint8_t last_opcode;
    char last[256];
    size_t last_len;
    int closes;
    enum end_reason why;
    int drained;
    bool close_in_message; /* on_message closes the connection (policy) */
    bool reply;            /* on_message answers with conn_send_text */
};

struct fixture {
    struct px_config cfg;
    struct loop lp;
    struct conn_pool pool;
    struct rec rec;
    int client; /* our end of the socket pair */
    char ini[64];
};

static void rec_on_message(struct conn *c, void *data, uint8_t opcode, const uint8_t *p, size_t len)
{
    struct rec *r = data;
    r->messages++;
    r->last_opcode = opcode;
    r->last_len = len;
    memcpy(r->last, p, len < sizeof(r->last) ? len : sizeof(r->last));
    if (r->close_in_message)
        conn_close(c, WS_CLOSE_POLICY, "bye", END_KICKED);
    else if (r->reply)
        conn_send_text(c, p, len);
}

static void rec_on_drained(struct conn *c, void *data)
{
    (void)c;
    ((struct rec *)data)->drained++;
}

static void rec_on_close(struct conn *c, void *data, enum end_reason why)
{
    (void)c;
    struct rec *r = data;
    r->closes++;
    r->why = why;
}

static const struct conn_handler rec_handler = {
    .name = "rec",
    .on_message = rec_on_message,
    .on_drained = rec_on_drained,
    .on_close = rec_on_close,
};

static void on_request(void *arg, struct conn *c, const struct http_req *req)
{
    struct rec *r = arg;
    r->requests++;
    if (req->path_len != 3 || memcmp(req->path, "/ws", 3) != 0) {
        conn_http_text(c, 404, NULL, "not found");
        return;
    }
    struct ws_handshake_policy pol = {0};
    struct ws_handshake_result hs;
    if (ws_handshake_check(req, &pol, &hs) != 101) {
        conn_http_text(c, hs.status, NULL, hs.message);
        return;
    }
    if (conn_admit(c))
        conn_upgrade(c, &hs, &rec_handler, r);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->ini, sizeof(f->ini), "/tmp/test_conn_%d.ini", (int)getpid());
    FILE *ini = fopen(f->ini, "w");
    assert_non_null(ini);
    fputs("[server]\nmax_message_size = 1KiB\nclose_timeout = 2s\n[api]\nlisten =\n", ini);
    fclose(ini);
    assert_int_equal(config_load(&f->cfg, f->ini, NULL, stderr), 0);
    assert_int_equal(loop_init(&f->lp, &f->cfg, NULL), 0);
    assert_int_equal(conn_pool_init(&f->pool, &f->lp, on_request, &f->rec), 0);
    loop_set_flush(&f->lp, conn_pool_flush, &f->pool);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    f->client = sv[1];
    struct bufferevent *bev = bufferevent_socket_new(f->lp.base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    assert_non_null(bev);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    conn_accept(&f->pool, bev, (struct sockaddr *)&sin);
    assert_int_equal(f->pool.num_conns, 1);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    conn_pool_release(&f->pool);
    loop_release(&f->lp);
    config_release(&f->cfg);
    if (f->client >= 0)
        close(f->client);
    unlink(f->ini);
    free(f);
    return 0;
}

/* Run the loop's ready callbacks a few times (the socket pair answers at once). */
static void pump(struct fixture *f)
{
    for (int i = 0; i < 5; i++)
        event_base_loop(f->lp.base, EVLOOP_NONBLOCK);
}

static void send_bytes(struct fixture *f, const void *p, size_t n)
{
    assert_int_equal(write(f->client, p, n), (ssize_t)n);
    pump(f);
}

/* Read until want bytes or EOF, pumping the loop; bounded to 2 s. Returns bytes read, *eof set. */
static size_t recv_bytes(struct fixture *f, uint8_t *buf, size_t want, bool *eof)
{
    size_t got = 0;
    *eof = false;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (got < want) {
        pump(f);
        ssize_t n = read(f->client, buf + got, want - got);
        if (n == 0) {
            *eof = true;
            break;
        }
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 2)
            break;
        usleep(1000);
    }
    return got;
}

/* A masked client frame (mask 0: the payload goes out as is). */
static size_t client_frame(uint8_t *out, bool fin, uint8_t opcode, const char *payload, size_t len)
{
    size_t n = 0;
    out[n++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    out[n++] = (uint8_t)(0x80 | len); /* tests keep len < 126 */
    memset(out + n, 0, 4);
    n += 4;
    memcpy(out + n, payload, len);
    return n + len;
}

static void upgrade(struct fixture *f)
{
    static const char req[] = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n";
    send_bytes(f, req, sizeof(req) - 1);
    uint8_t buf[512];
    bool eof;
    size_t n = recv_bytes(f, buf, 129, &eof);
    assert_true(n >= 12);
    assert_memory_equal(buf, "HTTP/1.1 101", 12);
    assert_int_equal(f->rec.requests, 1);
    assert_int_equal(f->pool.num_ws, 1);
}

static void test_conn_http_answer_then_eof(void **state)
{
    struct fixture *f = *state;
    static const char req[] = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
    send_bytes(f, req, sizeof(req) - 1);
    uint8_t buf[512];
    bool eof;
    size_t n = recv_bytes(f, buf, sizeof(buf), &eof);
    assert_true(eof); /* lingering close: the write side is shut after the answer */
    assert_true(n > 12);
    assert_memory_equal(buf, "HTTP/1.1 404", 12);
    assert_int_equal(f->rec.requests, 1);
    assert_int_equal(f->rec.closes, 0); /* never upgraded: no handler was called */
    close(f->client);
    f->client = -1;
    pump(f);
    assert_int_equal(f->pool.num_conns, 0);
}

static void test_conn_message_up_and_reply_down(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    f->rec.reply = true;
    uint8_t fr[64];
    send_bytes(f, fr, client_frame(fr, true, WS_OP_TEXT, "hello", 5));
    assert_int_equal(f->rec.messages, 1);
    assert_int_equal(f->rec.last_opcode, WS_OP_TEXT);
    assert_int_equal(f->rec.last_len, 5);
    assert_memory_equal(f->rec.last, "hello", 5);
    uint8_t buf[7];
    bool eof;
    assert_int_equal(recv_bytes(f, buf, 7, &eof), 7);
    assert_memory_equal(buf, "\x81\x05hello", 7);
    assert_true(f->rec.drained >= 1); /* output written: on_drained */
}

static void test_conn_fragments_reassembled(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    uint8_t fr[64];
    send_bytes(f, fr, client_frame(fr, false, WS_OP_TEXT, "hel", 3));
    assert_int_equal(f->rec.messages, 0);
    send_bytes(f, fr, client_frame(fr, false, WS_OP_CONT, "l", 1));
    send_bytes(f, fr, client_frame(fr, true, WS_OP_CONT, "o!", 2));
    assert_int_equal(f->rec.messages, 1);
    assert_int_equal(f->rec.last_len, 6);
    assert_memory_equal(f->rec.last, "hello!", 6);
}

static void test_conn_client_close_once(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    uint8_t fr[64];
    send_bytes(f, fr, client_frame(fr, true, WS_OP_CLOSE, "\x03\xe8", 2));
    assert_int_equal(f->rec.closes, 1);
    assert_int_equal(f->rec.why, END_CLIENT_CLOSE);
    uint8_t buf[8];
    bool eof;
    assert_int_equal(recv_bytes(f, buf, 4, &eof), 4);
    assert_memory_equal(buf, "\x88\x02\x03\xe8", 4); /* the code echoed */
    pump(f);
    assert_int_equal(f->pool.num_conns, 0); /* handshake done: freed once written */
    assert_int_equal(f->pool.num_ws, 0);
    assert_int_equal(f->rec.closes, 1);
}

static void test_conn_protocol_error_fails_once(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    static const uint8_t unmasked[] = {0x81, 0x02, 'h', 'i'};
    send_bytes(f, unmasked, sizeof(unmasked));
    assert_int_equal(f->rec.closes, 1);
    assert_int_equal(f->rec.why, END_PROTOCOL_ERROR);
    assert_int_equal(f->rec.messages, 0);
    uint8_t buf[64];
    bool eof;
    size_t n = recv_bytes(f, buf, sizeof(buf), &eof);
    assert_true(n >= 4 && eof);
    assert_int_equal(buf[0], 0x88);
    assert_int_equal(buf[2] << 8 | buf[3], 1002);
    assert_int_equal(f->pool.num_ws, 0); /* slot given back at once; the socket lingers */
    close(f->client);
    f->client = -1;
    pump(f);
    assert_int_equal(f->pool.num_conns, 0);
    assert_int_equal(f->rec.closes, 1);
}

static void test_conn_too_big_is_1009(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    /* 2 KiB announced, max_message_size is 1 KiB: refused from the header. */
    static const uint8_t hdr[] = {0x82, 0xfe, 0x08, 0x00, 0, 0, 0, 0};
    send_bytes(f, hdr, sizeof(hdr));
    assert_int_equal(f->rec.why, END_PROTOCOL_ERROR);
    uint8_t buf[64];
    bool eof;
    assert_true(recv_bytes(f, buf, 4, &eof) == 4);
    assert_int_equal(buf[2] << 8 | buf[3], 1009);
}

static void test_conn_close_inside_handler(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    f->rec.close_in_message = true;
    uint8_t fr[64];
    size_t n = client_frame(fr, true, WS_OP_TEXT, "a", 1);
    n += client_frame(fr + n, true, WS_OP_TEXT, "b", 1); /* pipelined: must not reach the handler */
    send_bytes(f, fr, n);
    assert_int_equal(f->rec.messages, 1);
    assert_int_equal(f->rec.closes, 1);
    assert_int_equal(f->rec.why, END_KICKED);
    uint8_t buf[64];
    bool eof;
    assert_true(recv_bytes(f, buf, 4, &eof) == 4);
    assert_int_equal(buf[2] << 8 | buf[3], 1008);
}

static void test_conn_held_until_commit(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    f->rec.reply = true;
    f->lp._tx_open = true; /* as if a store write opened the iteration's transaction */
    uint8_t fr[64];
    send_bytes(f, fr, client_frame(fr, true, WS_OP_TEXT, "x", 1));
    assert_int_equal(f->rec.messages, 1);
    assert_true(f->pool.dirty != NULL);
    uint8_t buf[8];
    bool eof;
    assert_int_equal(read(f->client, buf, sizeof(buf)), -1); /* held: nothing on the wire yet */
    f->lp._tx_open = false;
    conn_pool_flush(&f->pool, true);
    assert_null(f->pool.dirty);
    assert_int_equal(recv_bytes(f, buf, 3, &eof), 3);
    assert_memory_equal(buf, "\x81\x01x", 3);
}

static void test_conn_failed_commit_fails_writers(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    f->rec.reply = true;
    f->lp._tx_open = true;
    uint8_t fr[64];
    send_bytes(f, fr, client_frame(fr, true, WS_OP_TEXT, "receipt", 7));
    f->lp._tx_open = false;
    conn_pool_flush(&f->pool, false);
    assert_int_equal(f->rec.closes, 1);
    assert_int_equal(f->rec.why, END_INTERNAL_ERROR);
    uint8_t buf[64];
    bool eof;
    size_t n = recv_bytes(f, buf, sizeof(buf), &eof);
    assert_true(n >= 4);
    assert_int_equal(buf[0], 0x88); /* the held receipt never went out */
    assert_int_equal(buf[2] << 8 | buf[3], 1011);
}

static void test_conn_peer_gone_ends_once(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    close(f->client);
    f->client = -1;
    pump(f);
    assert_int_equal(f->rec.closes, 1);
    assert_int_equal(f->rec.why, END_CONNECTION_LOST);
    assert_int_equal(f->pool.num_conns, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_conn_http_answer_then_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_message_up_and_reply_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_fragments_reassembled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_client_close_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_protocol_error_fails_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_too_big_is_1009, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_close_inside_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_held_until_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_failed_commit_fails_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_peer_gone_ends_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
