/*
 * hookrecv.c -- the app backend of the events bench (`persist_events_on`): a tiny HTTP/1.1 server on
 * loopback that reads each request (head + Content-Length body), answers 204 to every request and
 * closes (wsproxy sends Connection: close). One epoll thread, no parsing beyond what framing needs:
 * it must never be the bottleneck. It counts requests, body bytes and events (occurrences of
 * "attempt": in the bodies, one per event) and prints "hookrecv posts=N bytes=N events=N" on SIGTERM
 * or SIGINT, and to the file given with -o (rewritten every 100 ms when the counts moved).
 * Build: gcc -std=c11 -D_GNU_SOURCE -O2 -o build/bench/hookrecv tests/bench/hookrecv.c
 * Usage: hookrecv -P PORT [-o COUNTS_FILE]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEAD_MAX 16384
#define KEY "\"attempt\":"
#define KEYLEN (sizeof(KEY) - 1)

struct cl {
    int fd;
    char head[HEAD_MAX];
    size_t hlen;
    long body_left; /* -1 while the head is incomplete */
    char tail[KEYLEN]; /* last bytes of the body so far, for matches across reads */
    size_t tlen;
};

static volatile sig_atomic_t stop;
static unsigned long long posts, bytes, events;

static void on_sig(int s) { (void)s; stop = 1; }

static void count(struct cl *c, const char *p, size_t n)
{
    /* join the carried tail with the start of this chunk, then scan the chunk itself */
    char j[2 * KEYLEN];
    size_t k = n < KEYLEN - 1 ? n : KEYLEN - 1;
    memcpy(j, c->tail, c->tlen);
    memcpy(j + c->tlen, p, k);
    for (size_t i = 0; i + KEYLEN <= c->tlen + k; i++)
        if (i < c->tlen && !memcmp(j + i, KEY, KEYLEN))
            events++;
    for (const char *q = p, *e = p + n; (q = memmem(q, (size_t)(e - q), KEY, KEYLEN)); q += KEYLEN)
        events++;
    /* keep the last KEYLEN-1 bytes of (tail + chunk) */
    char all[2 * KEYLEN];
    size_t m = 0;
    if (n >= KEYLEN - 1) {
        memcpy(all, p + n - (KEYLEN - 1), KEYLEN - 1);
        m = KEYLEN - 1;
    } else {
        size_t keep = c->tlen + n > KEYLEN - 1 ? KEYLEN - 1 - n : c->tlen;
        memcpy(all, c->tail + c->tlen - keep, keep);
        memcpy(all + keep, p, n);
        m = keep + n;
    }
    memcpy(c->tail, all, m);
    c->tlen = m;
    bytes += n;
}

static void finish(int ep, struct cl *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

static void answer(int ep, struct cl *c)
{
    static const char resp[] = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
    posts++;
    (void)!write(c->fd, resp, sizeof(resp) - 1); /* fits any empty socket buffer */
    finish(ep, c);
}

static void on_read(int ep, struct cl *c)
{
    char buf[65536];
    for (;;) {
        ssize_t r = read(c->fd, buf, sizeof(buf));
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            finish(ep, c);
            return;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        const char *p = buf;
        size_t n = (size_t)r;
        if (c->body_left < 0) {
            size_t take = n < HEAD_MAX - 1 - c->hlen ? n : HEAD_MAX - 1 - c->hlen;
            memcpy(c->head + c->hlen, p, take);
            size_t old = c->hlen;
            c->hlen += take;
            c->head[c->hlen] = 0;
            char *end = strstr(c->head, "\r\n\r\n");
            if (!end) {
                if (c->hlen >= HEAD_MAX - 1)
                    finish(ep, c);
                continue;
            }
            size_t hl = (size_t)(end + 4 - c->head);
            long cl = 0;
            for (char *l = c->head; l < end; l = strstr(l, "\r\n") + 2)
                if (!strncasecmp(l, "Content-Length:", 15))
                    cl = strtol(l + 15, NULL, 10);
            c->body_left = cl;
            p += hl - old;
            n -= hl - old;
        }
        size_t b = n < (size_t)c->body_left ? n : (size_t)c->body_left;
        count(c, p, b);
        c->body_left -= (long)b;
        if (c->body_left == 0) {
            answer(ep, c);
            return;
        }
    }
}

static void dump(const char *path)
{
    if (!path)
        return;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "hookrecv posts=%llu bytes=%llu events=%llu\n", posts, bytes, events);
    fclose(f);
    rename(tmp, path);
}

int main(int argc, char **argv)
{
    int port = 0, opt;
    const char *out = NULL;
    while ((opt = getopt(argc, argv, "P:o:")) != -1) {
        if (opt == 'P')
            port = atoi(optarg);
        else if (opt == 'o')
            out = optarg;
        else
            return 2;
    }
    if (port <= 0) {
        fprintf(stderr, "usage: hookrecv -P PORT [-o COUNTS_FILE]\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_sig};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 1024)) {
        perror("hookrecv: listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    unsigned long long last = ~0ull;
    while (!stop) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 100);
        for (int i = 0; i < n; i++) {
            if (!evs[i].data.ptr) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    struct cl *c = calloc(1, sizeof(*c));
                    if (!c) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    c->body_left = -1;
                    struct epoll_event ce = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
                continue;
            }
            on_read(ep, evs[i].data.ptr);
        }
        if (posts + events != last) {
            last = posts + events;
            dump(out);
        }
    }
    dump(out);
    printf("hookrecv posts=%llu bytes=%llu events=%llu\n", posts, bytes, events);
    return 0;
}
