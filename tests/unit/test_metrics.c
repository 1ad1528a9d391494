/* test_metrics.c -- counter slots and the Prometheus text rendering of proxy/metrics.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/metrics.h"

/* The stored names are part of the API: a rename would break every consumer of end_reason. */
static void test_metrics_end_reason_names(void **state)
{
    (void)state;
    static const char *const names[END_NUM] = {
        "client_close",  "heartbeat_timeout", "protocol_error", "slow_consumer",  "kicked",
        "token_expired", "server_shutdown",   "server_restart", "rate_limited",   "internal_error",
        "connection_lost", "node_lost"};
    for (int i = 0; i < END_NUM; i++)
        assert_string_equal(end_reason_name((enum end_reason)i), names[i]);
    assert_string_equal(end_reason_name(END_NUM), "unknown");
}

static void test_metrics_indexes(void **state)
{
    (void)state;
    assert_int_equal(metrics_status_index(101), MS_101);
    assert_int_equal(metrics_status_index(431), MS_431);
    assert_int_equal(metrics_status_index(418), MS_OTHER);
    assert_int_equal(metrics_close_index(1013), MC_1013);
    assert_int_equal(metrics_close_index(4000), MC_OTHER);
    assert_int_equal(metrics_api_index(202), 1);
    assert_int_equal(metrics_api_index(599), METRICS_API_STATUS - 1);
}

static void test_metrics_render(void **state)
{
    (void)state;
    struct metrics m;
    memset(&m, 0, sizeof(m));
    m.conns_total = 7;
    m.handshakes[MS_101] = 5;
    m.closes_by_reason[3] = 2;
    metrics_commit(&m, 0.0007, 3);  /* bucket le=0.001, batch le=4 */
    metrics_commit(&m, 0.3, 5000);  /* +Inf for both */
    struct metrics_gauges g = {.conns_open = 4, .ws_open = 3, .users_online = 2,
                               .fiber_on = true, .fiber_parks = 9, .fiber_sync_waits = 0,
                               .fiber_queue_max = 3};
    size_t len = 0;
    char *text = metrics_render(&m, &g, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    assert_non_null(strstr(text, "wsproxy_connections_total 7\n"));
    assert_non_null(strstr(text, "wsproxy_websockets_open 3\n"));
    assert_non_null(strstr(text, "wsproxy_handshakes_total{status=\"101\"} 5\n"));
    assert_non_null(strstr(text, "wsproxy_session_ends_total{reason=\"slow_consumer\"} 2\n"));
    assert_non_null(strstr(text, "wsproxy_store_commit_seconds_bucket{le=\"0.0005\"} 0\n"));
    assert_non_null(strstr(text, "wsproxy_store_commit_seconds_bucket{le=\"0.001\"} 1\n"));
    assert_non_null(strstr(text, "wsproxy_store_commit_seconds_bucket{le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(text, "wsproxy_store_commit_seconds_count 2\n"));
    assert_non_null(strstr(text, "wsproxy_store_batch_size_bucket{le=\"4\"} 1\n"));
    assert_non_null(strstr(text, "wsproxy_store_batch_size_sum 5003\n"));
    assert_non_null(strstr(text, "# TYPE wsproxy_store_fiber_parks_total counter\n"
                                 "wsproxy_store_fiber_parks_total 9\n"));
    assert_non_null(strstr(text, "wsproxy_store_sync_waits_total 0\n"));
    assert_non_null(strstr(text, "# TYPE wsproxy_store_fiber_queue_max gauge\n"
                                 "wsproxy_store_fiber_queue_max 3\n"));
    /* Every sample line belongs to a family announced by # TYPE. */
    char *save = NULL;
    char *copy = strdup(text);
    char family[128] = "";
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# TYPE ", 7) == 0) {
            sscanf(line + 7, "%127s", family);
            continue;
        }
        if (line[0] == '#')
            continue;
        assert_int_equal(strncmp(line, family, strlen(family)), 0);
    }
    free(copy);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_indexes),
        cmocka_unit_test(test_metrics_end_reason_names),
        cmocka_unit_test(test_metrics_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
