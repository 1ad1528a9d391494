/*
 * conv_bench.c -- what a user's conversation list costs (store_user_conversations, the API's
 * /api/v1/users/USER/conversations and the chat frame "conversations"): a temp database filled
 * through the store's own functions with one user in CONV_N conversations (rooms and direct ones)
 * and MSG_N messages spread over them, then the median time of N calls for the first page of 50 and
 * for a later page. Prints one "result key=value ..." line for tests/bench/run.sh. No assertions on
 * times. CONV_BENCH_KEEP=FILE keeps the database (moved there). Build (run.sh does it):
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -Iproxy -Istore -o build/bench/conv_bench tests/bench/conv_bench.c \
 *       build/libwsp.a $(pkg-config --libs sqlite3 ...) && ./build/bench/conv_bench [calls]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

#define CONV_N 1000     /* conversations of the user */
#define ROOMS_N 300     /* of which rooms; the rest are direct conversations */
#define MSG_N 100000    /* messages, round-robin over the conversations */
#define PAGE 50
#define LATER_PAGE 10   /* the page measured besides the first (0-based): entries 500-549 */
#define T0 INT64_C(1700000000000)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(struct store *st, const char *what, int rc)
{
    fprintf(stderr, "conv_bench: %s: %d %s\n", what, rc, st ? store_last_error(st) : "");
    exit(1);
}

struct page {
    int n;
    int64_t last_id;
};

static int on_conv(void *ctx, const struct store_conversation *c)
{
    struct page *p = ctx;
    p->n++;
    p->last_id = c->last.id;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median ms of calls calls of one page (before = 0: the first). */
static double median_ms(struct store *st, int64_t before, int calls)
{
    double *t = calloc((size_t)calls, sizeof(*t));
    if (!t)
        die(NULL, "out of memory", 0);
    for (int i = 0; i < calls; i++) {
        struct page p = {0};
        bool more;
        double t0 = now_s();
        int rc = store_user_conversations(st, "u", before, PAGE, on_conv, &p, &more);
        t[i] = (now_s() - t0) * 1000.0;
        if (rc != 0 || p.n != PAGE)
            die(st, "conversations", rc);
    }
    qsort(t, (size_t)calls, sizeof(*t), cmp_double);
    double m = t[calls / 2];
    free(t);
    return m;
}

int main(int argc, char **argv)
{
    int calls = argc > 1 ? atoi(argv[1]) : 51;
    if (calls < 1)
        calls = 1;
    char path[] = "/tmp/conv_bench_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        die(NULL, "mkstemp", fd);
    close(fd);
    struct store *st = NULL;
    char err[256];
    int rc = store_open(&st, path, NULL, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "conv_bench: %s\n", err);
        return 1;
    }
    double t0 = now_s();
    char name[32];
    for (int r = 0; r < ROOMS_N; r++) {
        snprintf(name, sizeof(name), "room%d", r);
        if ((rc = store_room_join(st, name, "u", T0, NULL)) != 0)
            die(st, "join", rc);
    }
    /* group commits of 10,000 like the server's; every 4th message is the user's own */
    for (int i = 0; i < MSG_N; i++) {
        if (i % 10000 == 0 && (rc = store_begin(st)) != 0)
            die(st, "begin", rc);
        int c = i % CONV_N;
        struct store_msg m = {.body = "{\"text\":\"hello there, a message of ordinary length\"}",
                              .created_at = T0 + i};
        char peer[32];
        if (c < ROOMS_N) {
            snprintf(name, sizeof(name), "room%d", c);
            m.room = name;
            m.sender = i % 4 ? "someone" : "u";
        } else {
            snprintf(peer, sizeof(peer), "peer%d", c);
            m.sender = i % 4 ? peer : "u";
            m.to_user = i % 4 ? "u" : peer;
        }
        struct store_receipt r;
        if ((rc = store_msg_insert(st, &m, &r)) != 0)
            die(st, "insert", rc);
        if (i % 10000 == 9999 && (rc = store_commit(st)) != 0)
            die(st, "commit", rc);
    }
    double fill = now_s() - t0;
    /* the later page's before id: walk the pages once */
    int64_t before = 0;
    for (int p = 0; p < LATER_PAGE; p++) {
        struct page pg = {0};
        bool more;
        if ((rc = store_user_conversations(st, "u", before, PAGE, on_conv, &pg, &more)) != 0)
            die(st, "conversations", rc);
        before = pg.last_id;
    }
    (void)median_ms(st, 0, 3); /* warm the cache */
    double first = median_ms(st, 0, calls), later = median_ms(st, before, calls);
    printf("result conversations=%d messages=%d calls=%d fill_s=%.2f conv_first_ms=%.3f "
           "conv_later_ms=%.3f\n",
           CONV_N, MSG_N, calls, fill, first, later);
    store_close(st);
    const char *keep = getenv("CONV_BENCH_KEEP"); /* keep the database there, to look at it */
    if (keep && *keep) {
        if (rename(path, keep) != 0)
            perror("conv_bench: CONV_BENCH_KEEP");
        return 0;
    }
    unlink(path);
    char side[64];
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
    return 0;
}
