/*
 * http.c -- wsctl's tiny blocking HTTP/1.1 client for the wsproxy API: one request per connection
 * (Connection: close), read to EOF, 10 s timeouts. Plain HTTP only: the API listens on a private
 * address.
 */
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "wsctl.h"

#define HTTP_TIMEOUT_S 10
#define HTTP_REPLY_MAX (16u << 20)

int http_parse_url(const char *url, char *host, size_t cap, int *port)
{
    if (strncasecmp(url, "http://", 7) != 0)
        return -1;
    const char *p = url + 7;
    const char *end = p + strcspn(p, "/?#");
    const char *colon;
    const char *hs = p, *he;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb)
            return -1;
        hs = p + 1;
        he = rb;
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
        if (!colon && rb + 1 != end)
            return -1;
    } else {
        colon = memchr(p, ':', (size_t)(end - p));
        he = colon ? colon : end;
    }
    if (he == hs || (size_t)(he - hs) >= cap)
        return -1;
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = '\0';
    if (!colon) {
        *port = 80;
        return 0;
    }
    long v = 0;
    const char *q = colon + 1;
    if (q == end)
        return -1;
    for (; q < end; q++) {
        if (*q < '0' || *q > '9')
            return -1;
        v = v * 10 + (*q - '0');
        if (v > 65535)
            return -1;
    }
    if (v == 0)
        return -1;
    *port = (int)v;
    return 0;
}

static int connect_to(const char *host, int port, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char ports[16];
    snprintf(ports, sizeof(ports), "%d", port);
    int rc = getaddrinfo(host, ports, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        /* SO_SNDTIMEO also bounds connect() on Linux. */
        struct timeval tv = {HTTP_TIMEOUT_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "cannot connect to %s:%d: %s", host, port,
                 saved == EINPROGRESS || saved == EAGAIN ? "timed out" : strerror(saved));
    return fd;
}

static int send_all(int fd, const char *p, size_t len)
{
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Parse "HTTP/1.1 NNN ..." + headers + body out of the whole answer in buf[0..len). */
static int parse_reply(char *buf, size_t len, struct http_reply *r)
{
    char *sep = memmem(buf, len, "\r\n\r\n", 4);
    if (!sep || len < 12 || strncmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    r->status = atoi(buf + 9);
    if (r->status < 100 || r->status > 999)
        return -1;
    char *body = sep + 4;
    size_t blen = len - (size_t)(body - buf);
    /* Content-Length, when given, may be shorter than what arrived before EOF; trust it. */
    *sep = '\0';
    for (char *line = strstr(buf, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "Content-Length:", 15) == 0) {
            size_t cl = strtoull(line + 17, NULL, 10);
            if (cl < blen)
                blen = cl;
        }
    }
    if (!(r->body = malloc(blen + 1)))
        return -1;
    memcpy(r->body, body, blen);
    r->body[blen] = '\0';
    r->body_len = blen;
    return 0;
}

int wsctl_http_request(const char *url, const char *key, const char *method, const char *path,
                 const char *body, struct http_reply *r, char *err, size_t errlen)
{
    char host[256];
    int port;
    memset(r, 0, sizeof(*r));
    if (http_parse_url(url, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "bad API URL '%s' (expected http://HOST:PORT)", url);
        return -1;
    }
    int fd = connect_to(host, port, err, errlen);
    if (fd < 0)
        return -1;
    bool v6 = strchr(host, ':') != NULL;
    size_t blen = body ? strlen(body) : 0;
    char *req = NULL;
    int n = asprintf(&req,
                     "%s %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUser-Agent: wsctl\r\n"
                     "%s%s%sAccept: application/json\r\n"
                     "%sContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     method, path, v6 ? "[" : "", host, v6 ? "]" : "", port,
                     key ? "Authorization: Bearer " : "", key ? key : "", key ? "\r\n" : "",
                     body ? "Content-Type: application/json\r\n" : "", blen);
    if (n < 0) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = send_all(fd, req, (size_t)n);
    free(req);
    if (rc == 0 && blen)
        rc = send_all(fd, body, blen);
    if (rc != 0) {
        snprintf(err, errlen, "sending to %s: %s", url, strerror(errno));
        close(fd);
        return -1;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len + 1 >= cap) {
            if (cap >= HTTP_REPLY_MAX)
                break;
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t got = recv(fd, buf + len, cap - len - 1, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            snprintf(err, errlen, "reading from %s: %s", url,
                     errno == EAGAIN ? "timed out" : strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    close(fd);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    buf[len] = '\0';
    rc = parse_reply(buf, len, r);
    free(buf);
    if (rc != 0) {
        snprintf(err, errlen, "%s did not answer with HTTP", url);
        return -1;
    }
    return 0;
}
