/*
 * deflate_bench.c -- what permessage-deflate costs and gains with proxy/proto/ws_deflate.c: size,
 * speed and zlib memory for a typical chat message and a 4 KiB JSON array, per level, window bits
 * and memLevel. Not run by the tests; numbers go to docs/compression.md. Build and run:
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -Iproxy -o build/deflate_bench tests/bench/deflate_bench.c \
 *       proxy/proto/ws_deflate.c -lz && ./build/deflate_bench [seconds per figure, default 0.3]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "proto/ws_deflate.h"

static const char chat[] =
    "{\"type\":\"message\",\"id\":12345,\"room\":\"lobby\",\"from\":\"alice\","
    "\"ts\":1733490000000,\"body\":{\"text\":\"hello there, how are you "
    "doing today?\"}}";

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A chat history page: a JSON array of message objects, as a replay would send, cut to ~4 KiB. */
static size_t make_array(char *out, size_t cap)
{
    static const char *const users[] = {"alice", "bob", "carol", "dave"};
    static const char *const texts[] = {
        "hello there, how are you doing today?",
        "fine thanks, and you?",
        "did you see the release notes for the new version",
        "lunch at noon?",
        "ok",
        "the build is green again, merging now",
        "can someone review my pull request when they have a minute",
        "see you tomorrow",
    };
    size_t n = 0;
    unsigned i = 0;

    out[n++] = '[';
    for (;;) {
        char item[256];
        int k = snprintf(item, sizeof item,
                         "%s{\"type\":\"message\",\"id\":%u,\"room\":\"lobby\",\"from\":\"%s\","
                         "\"ts\":%llu,\"body\":{\"text\":\"%s\"}}",
                         i ? "," : "", 12345 + i * 7, users[(i * 5 + i / 3) % 4],
                         1733490000000ull + i * 1733ull, texts[(i * 3 + i / 2) % 8]);
        if (n + (size_t)k + 2 > cap)
            break;
        memcpy(out + n, item, (size_t)k);
        n += (size_t)k;
        i++;
    }
    out[n++] = ']';
    return n;
}

struct count {
    size_t n;
};

static int count_sink(void *arg, const uint8_t *p, size_t n)
{
    (void)p;
    ((struct count *)arg)->n += n;
    return 0;
}

static void bench(const char *name, const uint8_t *msg, size_t len, int level, unsigned wb,
                  unsigned ml, double secs)
{
    struct ws_deflate_mem mem = {0};
    struct ws_deflate_compressor c;
    struct ws_deflate_buf z = {0};
    struct ws_deflate_params p = {15, (uint8_t)wb, true, false};
    struct ws_deflate_inflater inf;
    double t0, dt_def, dt_inf;
    long iters = 0, k;

    ws_deflate_compressor_init(&c, level, wb, ml, &mem);
    ws_deflate_compress(&c, msg, len, 0, ws_deflate_buf_sink, &z);
    /* deflate: one shared compressor, as for a fan-out */
    t0 = now();
    do {
        for (k = 0; k < 256; k++) {
            struct count cnt = {0};
            ws_deflate_compress(&c, msg, len, 0, count_sink, &cnt);
        }
        iters += 256;
        dt_def = now() - t0;
    } while (dt_def < secs);
    dt_def /= (double)iters;
    /* inflate: per message, state allocated and freed (client_no_context_takeover) */
    ws_deflate_inflater_init(&inf, &p, len, NULL);
    iters = 0;
    t0 = now();
    do {
        for (k = 0; k < 256; k++) {
            struct count cnt = {0};
            ws_deflate_inflater_feed(&inf, z.p, z.len, true, count_sink, &cnt);
        }
        iters += 256;
        dt_inf = now() - t0;
    } while (dt_inf < secs);
    dt_inf /= (double)iters;
    if (name)
        printf("| %s | %d | %u | %u | %zu -> %zu | %.1f %% | %.0f | %.0f | %.0f | %.0f |\n", name,
               level, wb, ml, len, z.len, 100.0 * (double)z.len / (double)len,
               (double)len / dt_def / 1e6, (double)z.len / dt_def / 1e6,
               (double)z.len / dt_inf / 1e6, (double)len / dt_inf / 1e6);
    ws_deflate_inflater_release(&inf);
    ws_deflate_compressor_release(&c);
    ws_deflate_buf_release(&z);
}

/*
 * What server_no_context_takeover gives up: the same message sent 100 times in a row with ids
 * changing, compressed with one stream kept across messages (context takeover, sync flush per
 * message) vs from scratch each time. Plain zlib, for comparison only.
 */
static void takeover_gap(int level, unsigned wb, unsigned ml)
{
    z_stream zs;
    uint8_t out[4096];
    char m[512];
    size_t total_in = 0, total_keep = 0, total_fresh = 0;
    struct ws_deflate_compressor c;

    memset(&zs, 0, sizeof zs);
    deflateInit2(&zs, level, Z_DEFLATED, -(int)wb, (int)ml, Z_DEFAULT_STRATEGY);
    ws_deflate_compressor_init(&c, level, wb, ml, NULL);
    for (unsigned i = 0; i < 100; i++) {
        struct count cnt = {0};
        int n = snprintf(m, sizeof m,
                         "{\"type\":\"message\",\"id\":%u,\"room\":\"lobby\",\"from\":\"alice\","
                         "\"ts\":%llu,\"body\":{\"text\":\"hello there, how are you doing "
                         "today?\"}}",
                         12345 + i, 1733490000000ull + i * 977ull);
        zs.next_in = (Bytef *)m;
        zs.avail_in = (uInt)n;
        zs.next_out = out;
        zs.avail_out = sizeof out;
        deflate(&zs, Z_SYNC_FLUSH);
        total_keep += sizeof out - zs.avail_out - 4;
        ws_deflate_compress(&c, (const uint8_t *)m, (size_t)n, 0, count_sink, &cnt);
        total_fresh += cnt.n;
        total_in += (size_t)n;
    }
    deflateEnd(&zs);
    ws_deflate_compressor_release(&c);
    printf("| %d | %u | %u | %zu | %.1f %% | %.1f %% |\n", level, wb, ml, total_in / 100,
           100.0 * (double)total_fresh / (double)total_in,
           100.0 * (double)total_keep / (double)total_in);
}

int main(int argc, char **argv)
{
    static const int levels[] = {1, 6};
    static const unsigned wbs[] = {15, 12, 10}, mls[] = {8, 5};
    double secs = argc > 1 ? atof(argv[1]) : 0.3;
    char array[4096];
    size_t array_len = make_array(array, sizeof array);

    printf("zlib %s; %.2f s per figure\n\n", zlibVersion(), secs);
    bench(NULL, (const uint8_t *)array, array_len, 1, 15, 8, secs); /* warm-up, not printed */
    printf("| message | level | wb | ml | bytes | size | deflate in MB/s | deflate out MB/s "
           "| inflate in MB/s | inflate out MB/s |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (size_t l = 0; l < 2; l++)
        for (size_t w = 0; w < 3; w++)
            for (size_t m = 0; m < 2; m++)
                bench("chat", (const uint8_t *)chat, sizeof chat - 1, levels[l], wbs[w], mls[m],
                      secs);
    for (size_t l = 0; l < 2; l++)
        for (size_t w = 0; w < 3; w++)
            for (size_t m = 0; m < 2; m++)
                bench("4 KiB array", (const uint8_t *)array, array_len, levels[l], wbs[w], mls[m],
                      secs);

    /* Larger than a 4 KiB window: where window bits and memLevel start to matter. */
    {
        static const struct {
            int level;
            unsigned wb, ml;
        } big[] = {{1, 15, 8}, {1, 12, 8}, {1, 12, 5}, {6, 15, 8}, {6, 12, 5}};
        size_t cap = 64 * 1024;
        char *page = malloc(cap);
        size_t n = make_array(page, cap); /* a long history page: ids and times all differ */
        for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
            bench("64 KiB array", (const uint8_t *)page, n, big[i].level, big[i].wb, big[i].ml,
                  secs);
        free(page);
    }

    printf("\nSize after compression by message size (prefixes of the 4 KiB array), level 1, "
           "wb 12, ml 5:\n\n| bytes | size |\n|---|---|\n");
    for (size_t n = 64; n <= 4096; n *= 2) {
        struct ws_deflate_compressor c;
        struct count cnt = {0};
        size_t len = n < array_len ? n : array_len;
        ws_deflate_compressor_init(&c, 1, 12, 5, NULL);
        ws_deflate_compress(&c, (const uint8_t *)array, len, 0, count_sink, &cnt);
        printf("| %zu | %.1f %% |\n", len, 100.0 * (double)cnt.n / (double)len);
        ws_deflate_compressor_release(&c);
    }

    printf("\nContext takeover (one stream per connection) vs none (ours), 100 chat messages:\n\n");
    printf("| level | wb | ml | avg bytes | size, no takeover | size, takeover |\n"
           "|---|---|---|---|---|---|\n");
    takeover_gap(1, 15, 8);
    takeover_gap(6, 15, 8);
    takeover_gap(6, 12, 5);

    printf("\nzlib memory per state, as counted by the ws_deflate accounting hooks:\n\n");
    printf("| state | wb | ml | bytes | worst-case formula |\n|---|---|---|---|---|\n");
    for (unsigned wb = 9; wb <= 15; wb++) {
        struct ws_deflate_mem mem = {0};
        struct ws_deflate_params p = {15, (uint8_t)wb, false, false};
        struct ws_deflate_inflater inf;
        struct count cnt = {0};
        static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
        ws_deflate_inflater_init(&inf, &p, 100, &mem);
        ws_deflate_inflater_feed(&inf, hello, sizeof hello, true, count_sink, &cnt);
        printf("| inflate | %u | - | %zu | %zu |\n", wb, mem.in_use, ws_deflate_inflate_worst(wb));
        ws_deflate_inflater_release(&inf);
    }
    for (unsigned wb = 9; wb <= 15; wb++) {
        for (unsigned ml = 1; ml <= 9; ml++) {
            struct ws_deflate_mem mem = {0};
            struct ws_deflate_compressor c;
            struct count cnt = {0};
            if (!((wb == 15 || wb == 12 || wb == 10 || wb == 9) &&
                  (ml == 9 || ml == 8 || ml == 5 || ml == 1)))
                continue;
            ws_deflate_compressor_init(&c, 1, wb, ml, &mem);
            ws_deflate_compress(&c, (const uint8_t *)"Hello", 5, 0, count_sink, &cnt);
            printf("| deflate | %u | %u | %zu | %zu |\n", wb, ml, mem.in_use,
                   ws_deflate_deflate_worst(wb, ml));
            ws_deflate_compressor_release(&c);
        }
    }
    return 0;
}
