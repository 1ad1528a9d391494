/*
 * rawecho.c -- the cheapest WebSocket echo server we could write, for measuring loadgen itself:
 * one epoll thread, edge-triggered, one read takes every frame that has arrived and one write
 * sends all their echoes. No fragments, no extensions, no UTF-8 check, no limits worth the name:
 * it exists to find the loader's ceiling (`BENCH_ONLY=echo100_raw`), never to compare servers.
 * Build: gcc -std=c11 -D_GNU_SOURCE -O2 -o build/bench/rawecho tests/bench/rawecho.c -lcrypto
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (256 * 1024) /* per connection, allocated at accept: fine for a tool run with 100 */

struct conn {
    int fd;
    bool open; /* past the handshake */
    size_t in_len, out_len, out_off;
    char in[BUF], out[BUF + BUF / 8];
};

static void conn_close(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* Answers the upgrade; returns bytes of the request head, 0 if incomplete, -1 to close. */
static long handshake(struct conn *c)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4), *k;
    if (!end)
        return c->in_len > 8192 ? -1 : 0;
    *end = '\0';
    k = strcasestr(c->in, "\nSec-WebSocket-Key:");
    if (!k)
        return -1;
    k += 19;
    k += strspn(k, " \t");
    char src[128];
    size_t kl = strcspn(k, " \t\r");
    if (kl > 60)
        return -1;
    unsigned char dig[SHA_DIGEST_LENGTH];
    char acc[64];
    int n = snprintf(src, sizeof(src), "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)kl, k);
    SHA1((unsigned char *)src, (size_t)n, dig);
    EVP_EncodeBlock((unsigned char *)acc, dig, sizeof(dig));
    c->out_len = (size_t)snprintf(c->out, sizeof(c->out),
                                  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                                  acc);
    c->open = true;
    return end + 4 - c->in;
}

/* Echoes every complete frame in c->in from off; returns bytes consumed, -1 to close. */
static long frames(struct conn *c, size_t off)
{
    while (c->in_len - off >= 6) {
        const unsigned char *h = (unsigned char *)c->in + off;
        uint64_t len = h[1] & 0x7f;
        size_t hl = 2;
        if (!(h[1] & 0x80))
            return -1;
        if (len == 126) {
            len = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (len == 127) {
            return -1;
        }
        if (c->in_len - off < hl + 4 + len)
            break;
        if (c->out_len + 4 + len > sizeof(c->out))
            break; /* the rest waits for the next write */
        unsigned op = h[0] & 0x0f;
        const unsigned char *m = h + hl, *p = m + 4;
        unsigned char *o = (unsigned char *)c->out + c->out_len;
        o[0] = (unsigned char)(0x80 | (op == 0x9 ? 0xA : op));
        if (len < 126) {
            o[1] = (unsigned char)len;
            o += 2;
        } else {
            o[1] = 126;
            o[2] = (unsigned char)(len >> 8);
            o[3] = (unsigned char)len;
            o += 4;
        }
        for (uint64_t i = 0; i < len; i++)
            o[i] = p[i] ^ m[i & 3];
        c->out_len = (size_t)(o + len - (unsigned char *)c->out);
        off += hl + 4 + len;
        if (op == 0x8)
            return -1;
    }
    return (long)off;
}

static bool flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0)
            return errno == EAGAIN;
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return true;
}

static bool serve(struct conn *c)
{
    for (;;) {
        if (!flush(c))
            return false;
        if (c->out_len) /* still sending: EPOLLOUT brings us back */
            return true;
        size_t space = sizeof(c->in) - c->in_len;
        ssize_t n = read(c->fd, c->in + c->in_len, space);
        if (n < 0)
            return errno == EAGAIN;
        if (n == 0)
            return false;
        c->in_len += (size_t)n;
        long off = 0;
        if (!c->open && (off = handshake(c)) <= 0)
            return off == 0;
        long used = frames(c, (size_t)off);
        if (used < 0)
            return false;
        memmove(c->in, c->in + used, c->in_len - (size_t)used);
        c->in_len -= (size_t)used;
        if ((size_t)n < space) /* a short read emptied the socket: no read for EAGAIN */
            return flush(c);
    }
}

int main(int argc, char **argv)
{
    int port = argc > 2 && !strcmp(argv[1], "-port") ? atoi(argv[2]) : 9004;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 1024) < 0) {
        perror("rawecho: bind/listen");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    c = calloc(1, sizeof(*c));
                    if (!c) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    struct epoll_event ce = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
                continue;
            }
            if (!serve(c))
                conn_close(ep, c);
        }
    }
}
