/* test_config.c -- value parsers, defaults, file loading and validation messages of proxy/base/config.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"

static void test_config_duration(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int ok;
        int64_t ms;
    } cases[] = {
        {"500ms", 1, 500}, {"10s", 1, 10000}, {"5m", 1, 300000}, {"1h", 1, 3600000},
        {"2d", 1, 172800000}, {"30", 1, 30000}, {"0", 1, 0}, {"1.5s", 1, 1500},
        {"", 0, 0}, {"s", 0, 0}, {"-1s", 0, 0}, {"10 parsecs", 0, 0}, {"1e300h", 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t v = -1;
        int rc = config_parse_duration(cases[i].in, &v);
        assert_int_equal(rc == 0, cases[i].ok);
        if (cases[i].ok)
            assert_int_equal(v, cases[i].ms);
    }
}

static void test_config_size(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int ok;
        uint64_t v;
    } cases[] = {
        {"64KiB", 1, 65536}, {"1MiB", 1, 1048576}, {"1GiB", 1, 1073741824}, {"512", 1, 512},
        {"512B", 1, 512}, {"2k", 1, 2048}, {"1mb", 1, 1048576}, {"", 0, 0}, {"KiB", 0, 0},
        {"1TiB", 0, 0}, {"-5", 0, 0}, {"99999999999999999999", 0, 0}, {"18446744073709551615GiB", 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 0;
        int rc = config_parse_size(cases[i].in, &v);
        assert_int_equal(rc == 0, cases[i].ok);
        if (cases[i].ok)
            assert_int_equal(v, cases[i].v);
    }
}

static void test_config_bool_and_hostport(void **state)
{
    (void)state;
    bool b = false;
    assert_int_equal(config_parse_bool("yes", &b), 0);
    assert_true(b);
    assert_int_equal(config_parse_bool("off", &b), 0);
    assert_false(b);
    assert_int_equal(config_parse_bool("maybe", &b), -1);

    char host[64];
    int port;
    assert_int_equal(config_split_hostport("127.0.0.1:8080", host, sizeof(host), &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8080);
    assert_int_equal(config_split_hostport("[::1]:9", host, sizeof(host), &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9);
    assert_int_equal(config_split_hostport("127.0.0.1", host, sizeof(host), &port), -1);
    assert_int_equal(config_split_hostport("127.0.0.1:65536", host, sizeof(host), &port), -1);
    assert_int_equal(config_split_hostport(":80", host, sizeof(host), &port), -1);
    assert_int_equal(config_split_hostport("[::1]80", host, sizeof(host), &port), -1);
}

static char *load_err(const char *ini, int *rc, struct px_config *cfg, const struct config_overrides *ov)
{
    char path[] = "/tmp/wsp-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, ini, strlen(ini)), (ssize_t)strlen(ini));
    close(fd);
    char *buf = NULL;
    size_t len = 0;
    FILE *err = open_memstream(&buf, &len);
    *rc = config_load(cfg, path, ov, err);
    fclose(err);
    unlink(path);
    return buf;
}

static void test_config_defaults(void **state)
{
    (void)state;
    struct px_config cfg;
    int rc;
    char *err = load_err("", &rc, &cfg, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(err, "");
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_string_equal(cfg.ws_path, "/ws");
    assert_string_equal(cfg.echo_path, "/echo");
    assert_int_equal(cfg.max_message_size, 1 << 20);
    assert_int_equal(cfg.max_header_size, 8192);
    assert_int_equal(cfg.handshake_timeout_ms, 10000);
    assert_int_equal(cfg.ping_interval_ms, 25000);
    assert_int_equal(cfg.pong_timeout_ms, 10000);
    assert_int_equal(cfg.send_queue, 1 << 20);
    assert_int_equal(cfg.rate, 50);
    assert_int_equal(cfg.rate_burst, 100);
    assert_int_equal(cfg.store_max_replay, 1000);
    assert_string_equal(cfg.store_path, "var/wsproxy.db");
    assert_int_equal(cfg.origins.n, 1);
    assert_string_equal(cfg.origins.items[0], "*");
    assert_int_equal(cfg.subprotocols.n, 0);
    assert_false(cfg.demo_enabled);
    assert_false(cfg.compression_on);
    assert_string_equal(cfg.compression, "off");
    assert_int_equal(cfg.compression_min_size, 256);
    assert_int_equal(cfg.compression_level, 1);
    assert_int_equal(cfg.compression_window_bits, 12);
    assert_int_equal(cfg.compression_mem_level, 5);
    assert_int_equal(cfg.compression_memory_budget, 64 << 20);
    free(err);
    config_release(&cfg);
}

static void test_config_file_and_overrides(void **state)
{
    (void)state;
    struct px_config cfg;
    int rc;
    struct config_overrides ov = {.listen = "127.0.0.1:9999", .db = "/tmp/o.db"};
    char *err = load_err("[server]\nlisten = 127.0.0.1:1234\ncompression = on\nsubprotocols = chat.v2, chat.v1 ,\n"
                         "origins = https://a.example,https://b.example\n[store]\npath = /tmp/f.db\n",
                         &rc, &cfg, &ov);
    assert_int_equal(rc, 0);
    assert_string_equal(cfg.listen, "127.0.0.1:9999");
    assert_string_equal(cfg.store_path, "/tmp/o.db");
    assert_true(cfg.compression_on);
    assert_int_equal(cfg.subprotocols.n, 2);
    assert_string_equal(cfg.subprotocols.items[0], "chat.v2");
    assert_string_equal(cfg.subprotocols.items[1], "chat.v1");
    assert_true(str_list_has(&cfg.origins, "https://b.example"));
    assert_false(str_list_has(&cfg.origins, "https://c.example"));
    free(err);
    config_release(&cfg);
}

static void test_config_errors_name_the_key(void **state)
{
    (void)state;
    static const struct {
        const char *ini, *needle;
    } cases[] = {
        {"[server]\nnope = 1\n", "unknown key [server] nope"},
        {"[nosuch]\nlisten = x\n", "unknown key [nosuch] listen"},
        {"[server]\nmax_message_size = big\n", "[server] max_message_size: bad value 'big'"},
        {"[server]\nlisten = localhost\n", "[server] listen"},
        {"[server]\nws_path = ws\n", "[server] ws_path"},
        {"[server]\necho_path = /ws\n", "[server] echo_path"},
        {"[server]\nmax_header_size = 10\n", "[server] max_header_size"},
        {"[store]\nsynchronous = off\n", "[store] synchronous"},
        {"[auth]\nmode = magic\n", "[auth] mode"},
        {"[auth]\njwt_alg = none\n", "[auth] jwt_alg"},
        {"[tls]\nkey = k.pem\n", "[tls] cert and key"},
        {"[limits]\nsend_queue = 10\n", "[limits] send_queue"},
        {"[heartbeat]\npong_timeout = 0\n", "[heartbeat] pong_timeout"},
        {"[demo]\nenabled = maybe\n", "[demo] enabled"},
        {"[demo]\nenabled = true\n[auth]\njwt_alg = RS256\n", "[demo] enabled"},
        {"[api]\nlisten = 127.0.0.1:8080\n", "[api] listen"},
        {"[server]\ncompression = yes\n", "[server] compression"},
        {"[server]\ncompression_level = 0\n", "[server] compression_level"},
        {"[server]\ncompression_level = 10\n", "[server] compression_level"},
        {"[server]\ncompression_window_bits = 8\n", "[server] compression_window_bits"},
        {"[server]\ncompression_window_bits = 16\n", "[server] compression_window_bits"},
        {"[server]\ncompression_mem_level = 0\n", "[server] compression_mem_level"},
        {"[server]\ncompression_min_size = 2MiB\n", "[server] compression_min_size"},
        {"[server]\ncompression_memory_budget = 1000\n", "[server] compression_memory_budget"},
        {"this is not ini\n", "syntax error"},
        {"[server]\nlisten = 127.0.0.1:1\n\nlisten = 127.0.0.1:2\n",
         ":4: [server] listen: set twice, at line 2 and line 4"},
        {"[server]\norigins = a,\n  b\n", ":3: syntax error"},
        {"[auth]\njwt_secret = x\n[x]\njwt_secret = y\n", "unknown key [x] jwt_secret"},
        {"[server]\n\nws_path = ws\n", ":3: [server] ws_path: 'ws' must start with /"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct px_config cfg;
        int rc;
        char *err = load_err(cases[i].ini, &rc, &cfg, NULL);
        if (rc != -1 || !strstr(err, cases[i].needle))
            fail_msg("case %zu: rc %d, want '%s' in: %s", i, rc, cases[i].needle, err);
        free(err);
        config_release(&cfg);
    }
}

static void test_config_reference_lists_every_section(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_print_reference(f);
    fclose(f);
    const char *sections[] = {"[server]", "[tls]", "[log]", "[store]", "[auth]",
                              "[heartbeat]", "[limits]", "[api]", "[demo]"};
    for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
        assert_non_null(strstr(buf, sections[i]));
    assert_non_null(strstr(buf, "ping_interval = 25s"));
    free(buf);
}

static void test_config_print_effective_normalizes_and_masks(void **state)
{
    (void)state;
    struct px_config cfg;
    int rc;
    char *err = load_err("[server]\nmax_message_size = 2097152\nhandshake_timeout = 1500ms\n"
                         "drain_timeout = 120s\n[auth]\njwt_secret = s3cr3t-s3cr3t\n"
                         "[api]\nkeys = a, b\n",
                         &rc, &cfg, NULL);
    assert_int_equal(rc, 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_print_effective(&cfg, f);
    fclose(f);
    assert_non_null(strstr(buf, "\nmax_message_size = 2MiB\n"));
    assert_non_null(strstr(buf, "\nhandshake_timeout = 1500ms\n"));
    assert_non_null(strstr(buf, "\ndrain_timeout = 2m\n"));
    assert_non_null(strstr(buf, "\nmax_header_size = 8KiB\n"));
    assert_non_null(strstr(buf, "\njwt_secret = ***\n"));
    assert_non_null(strstr(buf, "\nkeys = ***, ***\n"));
    assert_null(strstr(buf, "s3cr3t"));
    free(buf);
    free(err);
    config_release(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_duration),
        cmocka_unit_test(test_config_size),
        cmocka_unit_test(test_config_bool_and_hostport),
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_file_and_overrides),
        cmocka_unit_test(test_config_errors_name_the_key),
        cmocka_unit_test(test_config_print_effective_normalizes_and_masks),
        cmocka_unit_test(test_config_reference_lists_every_section),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
