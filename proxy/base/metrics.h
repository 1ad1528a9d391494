/*
 * metrics.h -- counters the server bumps on its hot paths (plain increments, single-threaded) and
 * their rendering in the Prometheus text format for GET /metrics.
 */
#ifndef WSP_METRICS_H
#define WSP_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/end_reason.h"

/* Handshake answers we count, by status. */
enum metrics_status { MS_101, MS_200, MS_400, MS_401, MS_403, MS_404, MS_405, MS_426, MS_431,
                      MS_503, MS_OTHER, MS_NUM };

/* Close codes we count. */
enum metrics_close { MC_1000, MC_1001, MC_1002, MC_1003, MC_1005, MC_1006, MC_1007, MC_1008, MC_1009,
                     MC_1011, MC_1013, MC_OTHER, MC_NUM };

/* Message kinds in (client frames) and out (server frames). */
enum metrics_kind { MK_ECHO, MK_SEND, MK_ACK, MK_JOIN, MK_LEAVE, MK_HISTORY, MK_PRESENCE, MK_MEMBERS,
                    MK_REFRESH, MK_MSG, MK_SENT, MK_ERROR, MK_WELCOME, MK_OTHER, MK_NUM };

#define METRICS_COMMIT_BUCKETS 10
#define METRICS_BATCH_BUCKETS 8
#define METRICS_API_STATUS 11

struct metrics {
    uint64_t conns_total;
    uint64_t ws_total;
    uint64_t handshakes[MS_NUM];
    uint64_t closes_by_code[MC_NUM];
    uint64_t closes_by_reason[END_NUM];
    uint64_t msgs_in[MK_NUM];
    uint64_t msgs_out[MK_NUM];
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t commit_buckets[METRICS_COMMIT_BUCKETS]; /* cumulative rendering is done at output time */
    uint64_t commit_count;
    double commit_sum_s;
    uint64_t batch_buckets[METRICS_BATCH_BUCKETS];
    uint64_t batch_count;
    uint64_t batch_sum;
    uint64_t heartbeat_timeouts;
    uint64_t slow_consumers;
    uint64_t api_requests[METRICS_API_STATUS];
    uint64_t store_errors;
    uint64_t retention_deleted; /* messages deleted by [store] retention_age / retention_count */
    /* permessage-deflate: payload bytes of compressed messages, on the wire and inflated/raw */
    uint64_t deflate_in_wire;     /* compressed payload bytes received */
    uint64_t deflate_in_raw;      /* what they inflated to */
    uint64_t deflate_out_raw;     /* payload bytes of messages sent compressed, before compression */
    uint64_t deflate_out_wire;    /* their compressed payload bytes, per recipient */
    uint64_t deflate_runs;        /* messages compressed (a fan-out counts once per window) */
    uint64_t deflate_runs_plain;  /* of which sent plain: compressing did not make them smaller */
    /* events to the app backend (proxy/chat/events.c) */
    uint64_t events_queued;    /* recorded into the outbox */
    uint64_t events_delivered; /* taken by the backend */
    uint64_t events_retried;   /* deliveries failed and scheduled again (per event) */
    uint64_t events_dead;      /* moved to the dead letters (max age) */
    uint64_t events_dropped;   /* not recorded: outbox full or a store error */
};

/* Values read at render time rather than counted. */
struct metrics_gauges {
    uint64_t conns_open;     /* TCP connections */
    uint64_t ws_open;        /* open WebSockets */
    uint64_t users_online;
    uint64_t deflate_conns;        /* open WebSockets with permessage-deflate */
    uint64_t deflate_mem_in_use;   /* bytes zlib holds now */
    uint64_t deflate_mem_peak;     /* highest deflate_mem_in_use so far */
    uint64_t deflate_mem_reserved; /* worst case promised to connections and compressors */
    const char *version;     /* wsproxy_build_info{version=...}; NULL: not rendered */
    int64_t start_time_s;    /* process start, Unix seconds; 0: not rendered */
    bool events_on;               /* the gauges below are rendered only when events are configured */
    uint64_t events_outbox;       /* queued now (refreshed every few seconds) */
    uint64_t events_dead_letters; /* dead now */
    double events_oldest_age_s;   /* age of the oldest queued event; 0 when none */
    bool io_uring_on;             /* batched socket I/O (net/ioq.h) in use */
    uint64_t io_uring_submits, io_uring_sends, io_uring_recvs;
    bool fiber_on;                /* the store fiber's figures (net/gate.h), PostgreSQL only */
    uint64_t fiber_calls, fiber_queued, fiber_parks, fiber_sync_waits, fiber_queue, fiber_queue_max;
};

enum metrics_status metrics_status_index(int status);
enum metrics_close metrics_close_index(unsigned code);
int metrics_api_index(int status);
void metrics_commit(struct metrics *m, double seconds, uint64_t batch_size);

/* Render as Prometheus text exposition format 0.0.4. Returns malloc'd text (caller frees), NULL on OOM. */
char *metrics_render(const struct metrics *m, const struct metrics_gauges *g, size_t *len);

#endif
