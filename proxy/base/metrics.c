/*
 * metrics.c -- maps statuses/codes to counter slots and renders the counters as Prometheus text.
 * No I/O here: the HTTP layer serves the string.
 */
#include "base/metrics.h"

#include <stdio.h>
#include <stdlib.h>

static const int status_codes[MS_NUM] = {101, 200, 400, 401, 403, 404, 405, 426, 431, 503, 0};
static const unsigned close_codes[MC_NUM] = {1000, 1001, 1002, 1003, 1005, 1006,
                                             1007, 1008, 1009, 1011, 1013, 0};
static const char *const kind_names[MK_NUM] = {"echo",     "send",    "ack",     "join",   "leave",
                                               "history",  "presence", "members", "refresh", "msg",
                                               "sent",     "error",   "welcome", "other"};
static const double commit_bounds[METRICS_COMMIT_BUCKETS - 1] = {0.0005, 0.001, 0.002, 0.005, 0.01,
                                                                0.025,  0.05,  0.1,   0.25};
static const uint64_t batch_bounds[METRICS_BATCH_BUCKETS - 1] = {1, 4, 16, 64, 256, 1024, 4096};
static const int api_codes[METRICS_API_STATUS] = {200, 202, 204, 400, 401, 404, 405, 413, 415, 503, 0};

enum metrics_status metrics_status_index(int status)
{
    for (int i = 0; i < MS_OTHER; i++)
        if (status_codes[i] == status)
            return (enum metrics_status)i;
    return MS_OTHER;
}

enum metrics_close metrics_close_index(unsigned code)
{
    for (int i = 0; i < MC_OTHER; i++)
        if (close_codes[i] == code)
            return (enum metrics_close)i;
    return MC_OTHER;
}

int metrics_api_index(int status)
{
    for (int i = 0; i < METRICS_API_STATUS - 1; i++)
        if (api_codes[i] == status)
            return i;
    return METRICS_API_STATUS - 1;
}

void metrics_commit(struct metrics *m, double seconds, uint64_t batch_size)
{
    int i = 0;
    while (i < METRICS_COMMIT_BUCKETS - 1 && seconds > commit_bounds[i])
        i++;
    m->commit_buckets[i]++;
    m->commit_count++;
    m->commit_sum_s += seconds;
    i = 0;
    while (i < METRICS_BATCH_BUCKETS - 1 && batch_size > batch_bounds[i])
        i++;
    m->batch_buckets[i]++;
    m->batch_count++;
    m->batch_sum += batch_size;
}

/* One unlabelled metric: its HELP, TYPE and value lines. */
static void put_one(FILE *f, const char *name, const char *type, const char *help, uint64_t v)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name,
            (unsigned long long)v);
}

char *metrics_render(const struct metrics *m, const struct metrics_gauges *g, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return NULL;

    if (g->version)
        fprintf(f, "# HELP wsproxy_build_info The running version (value 1).\n"
                   "# TYPE wsproxy_build_info gauge\nwsproxy_build_info{version=\"%s\"} 1\n",
                g->version);
    if (g->start_time_s)
        fprintf(f, "# HELP wsproxy_start_time_seconds When the server started, Unix time.\n"
                   "# TYPE wsproxy_start_time_seconds gauge\nwsproxy_start_time_seconds %lld\n",
                (long long)g->start_time_s);
    fprintf(f, "# HELP wsproxy_connections_open TCP connections open on the main listener.\n"
               "# TYPE wsproxy_connections_open gauge\nwsproxy_connections_open %llu\n",
            (unsigned long long)g->conns_open);
    fprintf(f, "# HELP wsproxy_websockets_open WebSocket connections open.\n"
               "# TYPE wsproxy_websockets_open gauge\nwsproxy_websockets_open %llu\n",
            (unsigned long long)g->ws_open);
    fprintf(f, "# HELP wsproxy_users_online Users with at least one open chat connection.\n"
               "# TYPE wsproxy_users_online gauge\nwsproxy_users_online %llu\n",
            (unsigned long long)g->users_online);
    put_one(f, "wsproxy_io_uring", "gauge",
            "1 when socket reads and sends are batched through io_uring ([server] io_uring).",
            g->io_uring_on);
    if (g->io_uring_on) {
        put_one(f, "wsproxy_io_uring_submissions_total", "counter",
                "io_uring submissions made (one system call each).", g->io_uring_submits);
        put_one(f, "wsproxy_io_uring_sends_total", "counter",
                "Sends made through the batches (a lone one as a plain call).", g->io_uring_sends);
        put_one(f, "wsproxy_io_uring_recvs_total", "counter",
                "Reads made through the batches (a lone one as a plain call).", g->io_uring_recvs);
    }
    if (g->fiber_on) {
        put_one(f, "wsproxy_store_fiber_calls_total", "counter",
                "Entries into the application run on the store fiber.", g->fiber_calls);
        put_one(f, "wsproxy_store_fiber_queued_total", "counter",
                "Entries that waited behind another one.", g->fiber_queued);
        put_one(f, "wsproxy_store_fiber_parks_total", "counter",
                "Times the fiber parked on the database socket while the loop served on.",
                g->fiber_parks);
        put_one(f, "wsproxy_store_sync_waits_total", "counter",
                "Waits for the database made on the loop itself, outside the fiber (0 while serving).",
                g->fiber_sync_waits);
        put_one(f, "wsproxy_store_fiber_queue", "gauge", "Entries waiting for the fiber now.",
                g->fiber_queue);
        put_one(f, "wsproxy_store_fiber_queue_max", "gauge", "The longest the fiber's queue has been.",
                g->fiber_queue_max);
    }
    fprintf(f, "# HELP wsproxy_connections_total TCP connections accepted.\n"
               "# TYPE wsproxy_connections_total counter\nwsproxy_connections_total %llu\n",
            (unsigned long long)m->conns_total);
    fprintf(f, "# HELP wsproxy_websockets_total WebSocket upgrades completed.\n"
               "# TYPE wsproxy_websockets_total counter\nwsproxy_websockets_total %llu\n",
            (unsigned long long)m->ws_total);

    fprintf(f, "# HELP wsproxy_handshakes_total Answers to requests on the main listener, by status.\n"
               "# TYPE wsproxy_handshakes_total counter\n");
    for (int i = 0; i < MS_NUM; i++)
        if (i == MS_OTHER)
            fprintf(f, "wsproxy_handshakes_total{status=\"other\"} %llu\n",
                    (unsigned long long)m->handshakes[i]);
        else
            fprintf(f, "wsproxy_handshakes_total{status=\"%d\"} %llu\n", status_codes[i],
                    (unsigned long long)m->handshakes[i]);

    fprintf(f, "# HELP wsproxy_closes_total WebSocket closes by close code.\n"
               "# TYPE wsproxy_closes_total counter\n");
    for (int i = 0; i < MC_NUM; i++)
        if (i == MC_OTHER)
            fprintf(f, "wsproxy_closes_total{code=\"other\"} %llu\n",
                    (unsigned long long)m->closes_by_code[i]);
        else
            fprintf(f, "wsproxy_closes_total{code=\"%u\"} %llu\n", close_codes[i],
                    (unsigned long long)m->closes_by_code[i]);

    fprintf(f, "# HELP wsproxy_session_ends_total WebSocket connections ended, by end reason.\n"
               "# TYPE wsproxy_session_ends_total counter\n");
    for (int i = 0; i < END_NUM; i++)
        fprintf(f, "wsproxy_session_ends_total{reason=\"%s\"} %llu\n", end_reason_name(i),
                (unsigned long long)m->closes_by_reason[i]);

    fprintf(f, "# HELP wsproxy_messages_in_total Messages received from clients, by kind.\n"
               "# TYPE wsproxy_messages_in_total counter\n");
    for (int i = 0; i < MK_NUM; i++)
        fprintf(f, "wsproxy_messages_in_total{kind=\"%s\"} %llu\n", kind_names[i],
                (unsigned long long)m->msgs_in[i]);
    fprintf(f, "# HELP wsproxy_messages_out_total Messages sent to clients, by kind.\n"
               "# TYPE wsproxy_messages_out_total counter\n");
    for (int i = 0; i < MK_NUM; i++)
        fprintf(f, "wsproxy_messages_out_total{kind=\"%s\"} %llu\n", kind_names[i],
                (unsigned long long)m->msgs_out[i]);

    fprintf(f, "# HELP wsproxy_bytes_in_total Bytes read from clients.\n"
               "# TYPE wsproxy_bytes_in_total counter\nwsproxy_bytes_in_total %llu\n",
            (unsigned long long)m->bytes_in);
    fprintf(f, "# HELP wsproxy_bytes_out_total Bytes queued to clients.\n"
               "# TYPE wsproxy_bytes_out_total counter\nwsproxy_bytes_out_total %llu\n",
            (unsigned long long)m->bytes_out);

    fprintf(f, "# HELP wsproxy_deflate_bytes_in_total Payload bytes of compressed messages received "
               "(permessage-deflate), by form: wire (compressed) or raw (inflated).\n"
               "# TYPE wsproxy_deflate_bytes_in_total counter\n"
               "wsproxy_deflate_bytes_in_total{form=\"wire\"} %llu\n"
               "wsproxy_deflate_bytes_in_total{form=\"raw\"} %llu\n",
            (unsigned long long)m->deflate_in_wire, (unsigned long long)m->deflate_in_raw);
    fprintf(f, "# HELP wsproxy_deflate_bytes_out_total Payload bytes of messages sent compressed, by "
               "form: raw (before compression) or wire (compressed), per recipient.\n"
               "# TYPE wsproxy_deflate_bytes_out_total counter\n"
               "wsproxy_deflate_bytes_out_total{form=\"raw\"} %llu\n"
               "wsproxy_deflate_bytes_out_total{form=\"wire\"} %llu\n",
            (unsigned long long)m->deflate_out_raw, (unsigned long long)m->deflate_out_wire);
    fprintf(f, "# HELP wsproxy_deflate_compressions_total Compressor runs (a fan-out message counts "
               "once per window), by result: smaller (sent compressed) or not_smaller (sent plain).\n"
               "# TYPE wsproxy_deflate_compressions_total counter\n"
               "wsproxy_deflate_compressions_total{result=\"smaller\"} %llu\n"
               "wsproxy_deflate_compressions_total{result=\"not_smaller\"} %llu\n",
            (unsigned long long)(m->deflate_runs - m->deflate_runs_plain),
            (unsigned long long)m->deflate_runs_plain);
    fprintf(f, "# HELP wsproxy_deflate_connections_open WebSocket connections with permessage-deflate.\n"
               "# TYPE wsproxy_deflate_connections_open gauge\nwsproxy_deflate_connections_open %llu\n",
            (unsigned long long)g->deflate_conns);
    fprintf(f, "# HELP wsproxy_deflate_memory_bytes zlib memory: in_use now, peak so far, reserved "
               "(worst case promised, bounded by compression_memory_budget).\n"
               "# TYPE wsproxy_deflate_memory_bytes gauge\n"
               "wsproxy_deflate_memory_bytes{kind=\"in_use\"} %llu\n"
               "wsproxy_deflate_memory_bytes{kind=\"peak\"} %llu\n"
               "wsproxy_deflate_memory_bytes{kind=\"reserved\"} %llu\n",
            (unsigned long long)g->deflate_mem_in_use, (unsigned long long)g->deflate_mem_peak,
            (unsigned long long)g->deflate_mem_reserved);

    fprintf(f, "# HELP wsproxy_store_commit_seconds Duration of group commits.\n"
               "# TYPE wsproxy_store_commit_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < METRICS_COMMIT_BUCKETS; i++) {
        cum += m->commit_buckets[i];
        if (i < METRICS_COMMIT_BUCKETS - 1)
            fprintf(f, "wsproxy_store_commit_seconds_bucket{le=\"%g\"} %llu\n", commit_bounds[i],
                    (unsigned long long)cum);
        else
            fprintf(f, "wsproxy_store_commit_seconds_bucket{le=\"+Inf\"} %llu\n",
                    (unsigned long long)cum);
    }
    fprintf(f, "wsproxy_store_commit_seconds_sum %.6f\nwsproxy_store_commit_seconds_count %llu\n",
            m->commit_sum_s, (unsigned long long)m->commit_count);

    fprintf(f, "# HELP wsproxy_store_batch_size Writes per group commit.\n"
               "# TYPE wsproxy_store_batch_size histogram\n");
    cum = 0;
    for (int i = 0; i < METRICS_BATCH_BUCKETS; i++) {
        cum += m->batch_buckets[i];
        if (i < METRICS_BATCH_BUCKETS - 1)
            fprintf(f, "wsproxy_store_batch_size_bucket{le=\"%llu\"} %llu\n",
                    (unsigned long long)batch_bounds[i], (unsigned long long)cum);
        else
            fprintf(f, "wsproxy_store_batch_size_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    fprintf(f, "wsproxy_store_batch_size_sum %llu\nwsproxy_store_batch_size_count %llu\n",
            (unsigned long long)m->batch_sum, (unsigned long long)m->batch_count);

    fprintf(f, "# HELP wsproxy_store_errors_total Store operations that failed.\n"
               "# TYPE wsproxy_store_errors_total counter\nwsproxy_store_errors_total %llu\n",
            (unsigned long long)m->store_errors);
    if (g->events_on) {
        fprintf(f, "# HELP wsproxy_events_total Backend events by outcome (queued = recorded).\n"
                   "# TYPE wsproxy_events_total counter\n");
        fprintf(f, "wsproxy_events_total{outcome=\"queued\"} %llu\n",
                (unsigned long long)m->events_queued);
        fprintf(f, "wsproxy_events_total{outcome=\"delivered\"} %llu\n",
                (unsigned long long)m->events_delivered);
        fprintf(f, "wsproxy_events_total{outcome=\"retried\"} %llu\n",
                (unsigned long long)m->events_retried);
        fprintf(f, "wsproxy_events_total{outcome=\"failed\"} %llu\n",
                (unsigned long long)m->events_dead);
        fprintf(f, "wsproxy_events_total{outcome=\"dropped\"} %llu\n",
                (unsigned long long)m->events_dropped);
        fprintf(f, "# HELP wsproxy_events_outbox Events waiting in the outbox, by state.\n"
                   "# TYPE wsproxy_events_outbox gauge\n"
                   "wsproxy_events_outbox{state=\"queued\"} %llu\n"
                   "wsproxy_events_outbox{state=\"dead\"} %llu\n",
                (unsigned long long)g->events_outbox, (unsigned long long)g->events_dead_letters);
        fprintf(f, "# HELP wsproxy_events_oldest_age_seconds Age of the oldest queued event.\n"
                   "# TYPE wsproxy_events_oldest_age_seconds gauge\n"
                   "wsproxy_events_oldest_age_seconds %.3f\n", g->events_oldest_age_s);
    }
    fprintf(f, "# HELP wsproxy_retention_deleted_total Messages deleted by retention.\n"
               "# TYPE wsproxy_retention_deleted_total counter\nwsproxy_retention_deleted_total %llu\n",
            (unsigned long long)m->retention_deleted);
    fprintf(f, "# HELP wsproxy_heartbeat_timeouts_total Connections closed for not answering pings.\n"
               "# TYPE wsproxy_heartbeat_timeouts_total counter\nwsproxy_heartbeat_timeouts_total %llu\n",
            (unsigned long long)m->heartbeat_timeouts);
    fprintf(f, "# HELP wsproxy_slow_consumers_total Connections closed with 1013 for a full send queue.\n"
               "# TYPE wsproxy_slow_consumers_total counter\nwsproxy_slow_consumers_total %llu\n",
            (unsigned long long)m->slow_consumers);
    fprintf(f, "# HELP wsproxy_api_requests_total HTTP API requests, by status.\n"
               "# TYPE wsproxy_api_requests_total counter\n");
    for (int i = 0; i < METRICS_API_STATUS; i++)
        if (api_codes[i])
            fprintf(f, "wsproxy_api_requests_total{status=\"%d\"} %llu\n", api_codes[i],
                    (unsigned long long)m->api_requests[i]);
        else
            fprintf(f, "wsproxy_api_requests_total{status=\"other\"} %llu\n",
                    (unsigned long long)m->api_requests[i]);

    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = size;
    return buf;
}
