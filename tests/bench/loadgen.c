/*
 * loadgen.c -- WebSocket load generator for `make bench`: echo, idle, fanout and persist modes over
 * loopback, plus the join storm (storm: clients connect and join one room at a fixed rate while the
 * server's RSS is sampled); one epoll thread, one "result key=value ..." line plus human text.
 * Linux only.
 * Build: gcc -std=c11 -D_GNU_SOURCE -O2 -Iproxy -o build/bench/loadgen tests/bench/loadgen.c \
 *            proxy/proto/ws_deflate.c -lcrypto -lz
 * (-Z offers permessage-deflate and inflates RSV1 frames with the server's own ws_deflate inflater.)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "proto/ws_deflate.h"

#define WS_GUID          "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define MAX_CONNECTING   128  /* handshakes in flight; more only overflows the listen backlog */
#define IN_CHUNK         8192 /* per-connection buffer step (handshakes, frames > SCRATCH / 2) */
#define SCRATCH          (256 * 1024) /* one read buffer for every open connection */
#define RSS_SAMPLE_NS    (50 * 1000000LL) /* storm: the server's VmRSS every 50 ms */
#define MAX_FRAME        (16u << 20) /* anything bigger from a bench peer is a bug */
#define ACK_EVERY        100         /* fanout members ack the latest id this often */
#define SETUP_TIMEOUT_NS (120 * NS_PER_S)
#define NS_PER_S         1000000000LL

enum mode { MODE_ECHO, MODE_IDLE, MODE_FANOUT, MODE_PERSIST, MODE_STORM };
enum conn_state { CS_FREE, CS_CONNECTING, CS_HANDSHAKE, CS_OPEN, CS_CLOSED };
enum conn_role { ROLE_ECHO, ROLE_IDLE, ROLE_MEMBER, ROLE_PUBLISHER, ROLE_SENDER };
enum phase { PH_SETUP, PH_RUN, PH_DRAIN, PH_DONE };

struct opts {
    enum mode mode;
    const char *host;
    int port;
    const char *path;
    long conns;
    long window;
    long size;
    double secs;
    double warm;
    double drain;
    double rate;
    long pid;
    const char *secret;
    const char *room;
    const char *prefix;
    bool binary;
    bool deflate; /* -Z: offer permessage-deflate, require it in the 101, inflate RSV1 messages */
    bool epoll_only; /* -E: echo's window and fanout's reads without io_uring */
    long body;    /* -B: fanout body size in bytes; 0 = the minimal {"t":...} body */
    bool join;    /* -j (idle), storm: join the room after welcome, ready once joined */
    int pub_port; /* -Q: fanout publisher's port (another node of a cluster); 0 = -P */
    long group;   /* -g: also report the CPU of this process and its children (postgres) */
};

struct conn {
    int fd;
    uint8_t state;
    uint8_t role;
    bool ready;
    bool close_sent;
    bool sending; /* io_uring: a send of out[0, sending_len) is in flight */
    uint32_t idx;
    size_t sending_len;
    char accept[29]; /* expected Sec-WebSocket-Accept */
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_cap;
    char *frag; /* reassembly of a fragmented message */
    size_t frag_len, frag_cap;
    uint8_t frag_op;
    bool frag_rsv1; /* the fragmented message being reassembled is compressed */
    struct ws_deflate_inflater *inf; /* -Z: set up once the 101 accepted the offer */
    uint64_t seq;    /* messages sent */
    int64_t last_id; /* newest msg id seen (fanout ack) */
    uint32_t unacked;
    uint64_t *sent_ns; /* persist: send time by seq % window */
};

/* Log-linear histogram of nanoseconds: 32 sub-buckets per power of two, about 3% resolution. */
#define HIST_SUB_BITS 5
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_N        (64 * HIST_SUB)
struct hist {
    uint64_t count[HIST_N];
    uint64_t n;
    uint64_t max;
};

struct lg {
    struct opts o;
    int ep;
    struct sockaddr_storage addr, pub_addr; /* pub_addr: -Q, the fanout publisher's */
    socklen_t addr_len;
    struct conn *conns;
    long nconns;
    long next_start;
    long connecting;
    long ready;
    long failed;
    enum phase phase;
    int64_t t_setup, t_run, t_start, t_end, t_done, t_last_rx;
    uint64_t cpu_start, cpu_end; /* server utime+stime in clock ticks */
    uint64_t group_ticks;        /* -g: the group's utime+stime over the window */
    long group_procs;            /* -g: processes of the group seen at the window's end */
    int64_t t_cpu0, t_cpu1;      /* when they were read */
    int server_core;             /* the one CPU the server is pinned to, else -1 */
    uint64_t core_busy0, core_total0, core_busy1, core_total1;
    bool window_opened;
    long rss_before, rss_after;
    struct rusage ru_start, ru_end;
    uint64_t msgs; /* counted replies / deliveries / receipts in the window */
    uint64_t published;
    uint64_t pub_sent; /* "sent" receipts for the publisher */
    uint64_t errors;
    uint64_t closed;
    /* fanout members, from the window's start to its end: what the sockets delivered (frames with
       headers, i.e. TCP payload), messages that came compressed, their payload and inflated size */
    uint64_t rx_bytes;
    uint64_t rx_compressed;
    uint64_t rx_z_payload, rx_z_inflated;
    struct ws_deflate_buf ibuf; /* inflate output, reused for every message */
    int64_t next_pub;
    uint64_t run_nonce;
    uint64_t rng;
    struct hist lat;
    /* loader syscalls (reads + writes), in total and at the window's edges */
    uint64_t sys_rw, sys_rw0, sys_rw1;
    uint64_t rx_msgs; /* every message the connections received (storm: member events too) */
    bool uring;       /* echo's window runs on io_uring: buffers may be in the kernel's hands */
    char *scratch;    /* SCRATCH bytes: where open connections read */
    char *echo_tmpl;  /* echo payload: 16 hex digits of the send time, then 'x' */
    /* storm: the server's RSS sampled from the first connect to -D s after the last join */
    long rss_peak, rss_samples;
    int64_t next_sample, t_joined;
};

static struct lg G;

/* ---- small helpers ---- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        die("out of memory (%zu bytes)", n);
    return q;
}

static uint64_t rng_next(void)
{
    /* xorshift64*: RFC 6455 §10.3 wants masks intermediaries cannot predict, not crypto */
    G.rng ^= G.rng >> 12;
    G.rng ^= G.rng << 25;
    G.rng ^= G.rng >> 27;
    return G.rng * 0x2545F4914F6CDD1DULL;
}

static size_t b64_encode(const unsigned char *in, size_t n, char *out, bool url)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    if (!url)
        return (size_t)len;
    while (len > 0 && out[len - 1] == '=')
        len--;
    for (int i = 0; i < len; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
    out[len] = '\0';
    return (size_t)len;
}

/* HS256 JWT with sub = user, exp = now + 1h; the server checks it with the same secret. */
static void jwt_make(const char *secret, const char *user, char *out, size_t cap)
{
    static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char payload[256], part[512], sig64[64];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    time_t now = time(NULL);
    int n = snprintf(payload, sizeof(payload), "{\"sub\":\"%s\",\"iat\":%lld,\"exp\":%lld}", user,
                     (long long)now, (long long)now + 3600);
    size_t h = b64_encode((const unsigned char *)hdr, sizeof(hdr) - 1, part, true);
    part[h++] = '.';
    size_t p = b64_encode((const unsigned char *)payload, (size_t)n, part + h, true);
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)part, h + p, mac,
              &mac_len))
        die("HMAC failed");
    b64_encode(mac, mac_len, sig64, true);
    if ((size_t)snprintf(out, cap, "%s.%s", part, sig64) >= cap)
        die("token too long");
}

/* ---- histogram ---- */

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;
    return (shift + 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
}

static uint64_t hist_value(unsigned idx)
{
    if (idx < HIST_SUB)
        return idx;
    unsigned shift = idx / HIST_SUB - 1;
    uint64_t low = (uint64_t)(idx % HIST_SUB + HIST_SUB) << shift;
    return low + ((1ULL << shift) >> 1);
}

static void hist_add(struct hist *h, int64_t v)
{
    if (v < 0)
        v = 0;
    h->count[hist_index((uint64_t)v)]++;
    h->n++;
    if ((uint64_t)v > h->max)
        h->max = (uint64_t)v;
}

static double hist_pct_us(const struct hist *h, double p)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)(p * (double)h->n + 0.999999);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_N; i++) {
        seen += h->count[i];
        if (seen >= want)
            return (double)hist_value(i) / 1000.0;
    }
    return (double)h->max / 1000.0;
}

/* ---- /proc readers for the server process ---- */

static bool proc_cpu(long pid, uint64_t *ticks)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the command name may hold spaces and parens; fields resume after the last ')' */
    char *p = strrchr(buf, ')');
    if (!p)
        return false;
    unsigned long long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return false;
    *ticks = ut + st;
    return true;
}

static long proc_rss_kib(long pid)
{
    char path[64], line[256];
    long kib = -1;
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* Jiffies of one CPU from /proc/stat: busy (all but idle and iowait, steal included) and total. */
static bool proc_core(int cpu, uint64_t *busy, uint64_t *total)
{
    char line[512], name[16];
    bool found = false;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return false;
    snprintf(name, sizeof(name), "cpu%d ", cpu);
    while (!found && fgets(line, sizeof(line), f)) {
        unsigned long long v[8] = {0};
        if (strncmp(line, name, strlen(name)) != 0)
            continue;
        if (sscanf(line + strlen(name), "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) < 8)
            break;
        *total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
        *busy = *total - v[3] - v[4];
        found = true;
    }
    fclose(f);
    return found;
}

static int pinned_core(long pid)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity((pid_t)pid, sizeof(set), &set) != 0 || CPU_COUNT(&set) != 1)
        return -1;
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &set))
            return i;
    return -1;
}

/*
 * -g: utime+stime of a process and its direct children (a postmaster and its backends), read at the
 * window's start and end. A child that started inside the window counts whole; one that ended
 * inside it is lost (its last ticks go to the parent's cutime, which we do not read).
 */
#define GROUP_MAX 1024
struct group_proc {
    long pid;
    uint64_t ticks;
};
static struct group_proc group_start[GROUP_MAX];
static long group_nstart;

static long proc_ppid(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    long ppid = -1;
    if (!p || sscanf(p + 2, "%*c %ld", &ppid) != 1)
        return -1;
    return ppid;
}

static long group_read(long root, struct group_proc *out, long cap)
{
    long n = 0;
    if (n < cap && proc_cpu(root, &out[n].ticks))
        out[n++].pid = root;
    DIR *d = opendir("/proc");
    if (!d)
        return n;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || pid == root || proc_ppid(pid) != root)
            continue;
        if (proc_cpu(pid, &out[n].ticks))
            out[n++].pid = pid;
    }
    closedir(d);
    return n;
}

static void group_open(void)
{
    group_nstart = G.o.group > 0 ? group_read(G.o.group, group_start, GROUP_MAX) : 0;
}

static void group_close(void)
{
    static struct group_proc now[GROUP_MAX];
    if (G.o.group <= 0)
        return;
    long n = group_read(G.o.group, now, GROUP_MAX);
    G.group_ticks = 0;
    G.group_procs = n;
    for (long i = 0; i < n; i++) {
        uint64_t before = 0;
        for (long j = 0; j < group_nstart; j++)
            if (group_start[j].pid == now[i].pid) {
                before = group_start[j].ticks <= now[i].ticks ? group_start[j].ticks : now[i].ticks;
                break;
            }
        G.group_ticks += now[i].ticks - before;
    }
}

/* ---- minimal JSON field access: the peers' frames are flat objects shaped by the bench ---- */

static const char *json_find(const char *s, size_t n, const char *key)
{
    char pat[32];
    int k = snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *end = s + n;
    const char *p = memmem(s, n, pat, (size_t)k);
    if (!p)
        return NULL;
    p += k;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (p >= end || *p != ':')
        return NULL;
    p++;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p < end ? p : NULL;
}

static bool json_is(const char *s, size_t n, const char *key, const char *want)
{
    const char *p = json_find(s, n, key);
    size_t w = strlen(want);
    if (!p || *p != '"' || (size_t)(s + n - p) < w + 2)
        return false;
    return memcmp(p + 1, want, w) == 0 && p[1 + w] == '"';
}

static bool json_int(const char *s, size_t n, const char *key, int64_t *out)
{
    const char *p = json_find(s, n, key);
    if (!p)
        return false;
    if (*p == '"') /* ids may come quoted */
        p++;
    const char *end = s + n;
    if (p >= end || !isdigit((unsigned char)*p))
        return false;
    int64_t v = 0;
    while (p < end && isdigit((unsigned char)*p))
        v = v * 10 + (*p++ - '0');
    *out = v;
    return true;
}

/* ---- output: masked client frames (RFC 6455 §5.3) ---- */

static void out_reserve(struct conn *c, size_t more)
{
    if (c->out_len + more <= c->out_cap)
        return;
    size_t cap = c->out_cap ? c->out_cap : 1024;
    while (cap < c->out_len + more)
        cap *= 2;
    c->out = xrealloc(c->out, cap);
    c->out_cap = cap;
}

static void frame_send(struct conn *c, unsigned op, const void *payload, size_t len)
{
    out_reserve(c, len + 14);
    unsigned char *h = (unsigned char *)c->out + c->out_len;
    size_t hl = 2;
    h[0] = (unsigned char)(0x80 | op);
    if (len < 126) {
        h[1] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        h[1] = 0x80 | 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        hl = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    uint32_t mask = (uint32_t)rng_next();
    memcpy(h + hl, &mask, 4);
    unsigned char *m = h + hl, *dst = h + hl + 4;
    const unsigned char *src = payload;
    size_t i = 0;
#ifdef __SSE2__
    /* the mask repeats every 4 bytes, so 16 at a time with one register */
    __m128i m128 = _mm_set1_epi32((int)mask);
    for (; i + 16 <= len; i += 16) {
        __m128i w = _mm_loadu_si128((const __m128i *)(src + i));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(w, m128));
    }
#endif
    uint64_t mask64 = (uint64_t)mask | (uint64_t)mask << 32;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= mask64;
        memcpy(dst + i, &w, 8);
    }
    for (; i < len; i++)
        dst[i] = src[i] ^ m[i & 3];
    c->out_len += hl + 4 + len;
}

static void text_send(struct conn *c, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf))
        die("frame too long");
    frame_send(c, 0x1, buf, (size_t)n);
}

/* ---- connection lifecycle ---- */

static void conn_release(struct conn *c)
{
    free(c->in);
    free(c->out);
    free(c->frag);
    free(c->sent_ns);
    if (c->inf) {
        ws_deflate_inflater_release(c->inf);
        free(c->inf);
        c->inf = NULL;
    }
    c->in = c->out = c->frag = NULL;
    c->sent_ns = NULL;
    c->in_len = c->in_cap = c->out_len = c->out_cap = c->frag_len = c->frag_cap = 0;
}

/* Abortive close (RST): no TIME_WAIT on either side, so back-to-back runs do not exhaust ports. */
static void conn_abort(struct conn *c)
{
    if (c->fd >= 0) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        close(c->fd);
        c->fd = -1;
    }
    if (!G.uring) /* else a send or recv may still point into them; the process ends soon */
        conn_release(c);
}

static void conn_fail(struct conn *c, const char *why)
{
    if (c->state == CS_CLOSED)
        return;
    bool was_setup = c->state != CS_OPEN || !c->ready;
    if (c->state == CS_CONNECTING || c->state == CS_HANDSHAKE)
        G.connecting--;
    c->state = CS_CLOSED;
    if (was_setup && G.phase == PH_SETUP)
        G.failed++;
    else
        G.closed++;
    G.errors++;
    if (G.errors <= 5)
        fprintf(stderr, "loadgen: connection %u: %s\n", c->idx, why);
    conn_abort(c);
}

static void conn_flush(struct conn *c)
{
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t n = write(c->fd, c->out + off, c->out_len - off);
        G.sys_rw++;
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            break; /* EPOLLOUT (edge-triggered) calls us again */
        } else {
            conn_fail(c, n < 0 ? strerror(errno) : "write returned 0");
            return;
        }
    }
    if (off == c->out_len)
        c->out_len = 0;
    else if (off > 0) {
        memmove(c->out, c->out + off, c->out_len - off);
        c->out_len -= off;
    }
}

static void user_name(const struct conn *c, char *out, size_t cap)
{
    switch (c->role) {
    case ROLE_MEMBER:
        snprintf(out, cap, "%sm%u", G.o.prefix, c->idx);
        break;
    case ROLE_PUBLISHER:
        snprintf(out, cap, "%spub", G.o.prefix);
        break;
    case ROLE_SENDER:
        snprintf(out, cap, "%ss%u", G.o.prefix, c->idx);
        break;
    default:
        snprintf(out, cap, "%su%u", G.o.prefix, c->idx);
    }
}

static void conn_start(struct conn *c)
{
    c->fd = socket(G.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket: %s (raise ulimit -n?)", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->state = CS_CONNECTING;
    G.connecting++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(G.ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    const struct sockaddr_storage *to =
        c->role == ROLE_PUBLISHER && G.o.pub_port ? &G.pub_addr : &G.addr;
    if (connect(c->fd, (const struct sockaddr *)to, G.addr_len) < 0 && errno != EINPROGRESS)
        conn_fail(c, strerror(errno));
}

static void conn_send_handshake(struct conn *c)
{
    unsigned char key[16], digest[SHA_DIGEST_LENGTH];
    char key64[32], src[96], target[1024], host[64];
    uint64_t r1 = rng_next(), r2 = rng_next();
    memcpy(key, &r1, 8);
    memcpy(key + 8, &r2, 8);
    b64_encode(key, sizeof(key), key64, false);
    snprintf(src, sizeof(src), "%s%s", key64, WS_GUID);
    SHA1((const unsigned char *)src, strlen(src), digest);
    b64_encode(digest, sizeof(digest), c->accept, false);

    if (G.o.secret) {
        char user[64], tok[600];
        user_name(c, user, sizeof(user));
        jwt_make(G.o.secret, user, tok, sizeof(tok));
        snprintf(target, sizeof(target), "%s%ctoken=%s", G.o.path,
                 strchr(G.o.path, '?') ? '&' : '?', tok);
    } else {
        snprintf(target, sizeof(target), "%s", G.o.path);
    }
    int port = c->role == ROLE_PUBLISHER && G.o.pub_port ? G.o.pub_port : G.o.port;
    if (G.addr.ss_family == AF_INET6)
        snprintf(host, sizeof(host), "[%s]:%d", G.o.host, port);
    else
        snprintf(host, sizeof(host), "%s:%d", G.o.host, port);
    char req[2048];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s"
                     "User-Agent: wsproxy-loadgen\r\n\r\n",
                     target, host, key64,
                     G.o.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                   "client_max_window_bits\r\n"
                                 : "");
    out_reserve(c, (size_t)n);
    memcpy(c->out + c->out_len, req, (size_t)n);
    c->out_len += (size_t)n;
    c->state = CS_HANDSHAKE;
    conn_flush(c);
}

static void conn_set_ready(struct conn *c)
{
    if (c->ready)
        return;
    c->ready = true;
    G.ready++;
}

/*
 * Checks the 101's Sec-WebSocket-Extensions answer to our offer (permessage-deflate;
 * client_max_window_bits): exactly one permessage-deflate with known parameters, window values
 * 8..15 (RFC 7692 §7.1). Sets *snct when the server promised server_no_context_takeover.
 */
static bool deflate_answer_ok(const char *v, size_t n, bool *snct)
{
    static const char ext[] = "permessage-deflate";
    const char *end = v + n, *p = v + sizeof(ext) - 1;
    bool seen[4] = {false};
    *snct = false;
    if (n < sizeof(ext) - 1 || strncasecmp(v, ext, sizeof(ext) - 1) != 0)
        return false;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p == end)
            break;
        if (*p++ != ';')
            return false; /* a second extension, or junk: we offered one */
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *name = p;
        while (p < end && *p != ';' && *p != '=' && *p != ' ' && *p != '\t')
            p++;
        size_t nl = (size_t)(p - name);
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        long val = -1;
        if (p < end && *p == '=') {
            p++;
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            bool q = p < end && *p == '"';
            p += q;
            val = 0;
            const char *d = p;
            while (p < end && isdigit((unsigned char)*p) && p - d < 3)
                val = val * 10 + (*p++ - '0');
            if (p == d || (q && (p >= end || *p++ != '"')))
                return false;
        }
        static const char *const names[] = {"server_no_context_takeover",
                                            "client_no_context_takeover",
                                            "server_max_window_bits", "client_max_window_bits"};
        int k = -1;
        for (int i = 0; i < 4; i++)
            if (nl == strlen(names[i]) && !strncasecmp(name, names[i], nl))
                k = i;
        if (k < 0 || seen[k])
            return false;
        seen[k] = true;
        if (k < 2 ? val != -1 : val < 8 || val > 15)
            return false;
    }
    *snct = seen[0];
    return true;
}

/* Returns bytes of the response head consumed, 0 if incomplete, -1 after failing the connection. */
static long handshake_parse(struct conn *c)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end) {
        if (c->in_len > 16384) {
            conn_fail(c, "response head too large");
            return -1;
        }
        return 0;
    }
    size_t head = (size_t)(end - c->in) + 4;
    if (c->in_len < 12 || memcmp(c->in, "HTTP/1.1 101", 12) != 0) {
        char why[96];
        size_t l = strcspn(c->in, "\r");
        snprintf(why, sizeof(why), "handshake refused: %.*s", (int)(l < 60 ? l : 60), c->in);
        conn_fail(c, why);
        return -1;
    }
    bool ok = false, ext_ok = false, ext_seen = false, snct = false;
    for (char *line = c->in; line < end;) {
        char *eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        static const char name[] = "sec-websocket-accept:";
        static const char xname[] = "sec-websocket-extensions:";
        if ((size_t)(eol - line) > sizeof(xname) - 1 &&
            !strncasecmp(line, xname, sizeof(xname) - 1)) {
            char *v = line + sizeof(xname) - 1;
            while (*v == ' ' || *v == '\t')
                v++;
            char *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            ext_ok = !ext_seen && deflate_answer_ok(v, (size_t)(ve - v), &snct);
            ext_seen = true;
        }
        if ((size_t)(eol - line) > sizeof(name) - 1 && !strncasecmp(line, name, sizeof(name) - 1)) {
            char *v = line + sizeof(name) - 1;
            while (*v == ' ' || *v == '\t')
                v++;
            char *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            ok = (size_t)(ve - v) == strlen(c->accept) && !memcmp(v, c->accept, (size_t)(ve - v));
        }
        line = eol + 2;
    }
    if (!ok) {
        conn_fail(c, "missing or wrong Sec-WebSocket-Accept");
        return -1;
    }
    if (ext_seen && !G.o.deflate) {
        conn_fail(c, "Sec-WebSocket-Extensions in the 101 but none was offered");
        return -1;
    }
    if (G.o.deflate && !ext_ok) {
        conn_fail(c, ext_seen ? "bad permessage-deflate answer in the 101"
                              : "server declined permessage-deflate (compression = off?)");
        return -1;
    }
    if (G.o.deflate) {
        /* we inflate what the server compressed: its window is at most 15, and without
           server_no_context_takeover the window carries over between messages */
        struct ws_deflate_params prm = {.server_max_window_bits = 15,
                                        .client_max_window_bits = 15,
                                        .client_no_context_takeover = snct};
        c->inf = calloc(1, sizeof(*c->inf));
        if (!c->inf)
            die("out of memory");
        ws_deflate_inflater_init(c->inf, &prm, MAX_FRAME, NULL);
    }
    c->state = CS_OPEN;
    G.connecting--;
    /* plain echo/idle connections are ready once open; chat ones wait for welcome/joined */
    if (c->role == ROLE_ECHO || (c->role == ROLE_IDLE && !G.o.secret))
        conn_set_ready(c);
    return (long)head;
}

/* ---- per-mode message handling ---- */

static void echo_send(struct conn *c, int64_t now)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t v = (uint64_t)now;
    for (int i = 15; i >= 0; i--, v >>= 4)
        G.echo_tmpl[i] = hex[v & 15];
    frame_send(c, G.o.binary ? 0x2 : 0x1, G.echo_tmpl, (size_t)G.o.size);
    c->seq++;
}

static void sender_send(struct conn *c, int64_t now)
{
    c->sent_ns[c->seq % (uint64_t)G.o.window] = (uint64_t)now;
    text_send(c,
              "{\"type\":\"send\",\"to\":\"%soff%u\",\"body\":{\"t\":%" PRId64 "},"
              "\"cid\":\"%" PRIx64 "-%" PRIu64 "\"}",
              G.o.prefix, c->idx, now, G.run_nonce, c->seq);
    c->seq++;
}

static bool in_window(int64_t now)
{
    return now >= G.t_start && now < G.t_end;
}

static void on_echo(struct conn *c, const char *p, size_t len, int64_t now)
{
    uint64_t ts = 0;
    if (len != (size_t)G.o.size) {
        G.errors++;
        return;
    }
    for (int i = 0; i < 16; i++) {
        char d = p[i];
        ts = ts << 4 | (uint64_t)(d <= '9' ? d - '0' : d - 'a' + 10);
    }
    if (in_window(now)) {
        G.msgs++;
        hist_add(&G.lat, now - (int64_t)ts);
    }
    if (now < G.t_end)
        echo_send(c, now);
}

static void on_chat(struct conn *c, const char *p, size_t len, int64_t now)
{
    if (json_is(p, len, "type", "welcome")) {
        if (c->role == ROLE_MEMBER || c->role == ROLE_PUBLISHER || G.o.join)
            text_send(c, "{\"type\":\"join\",\"room\":\"%s\"}", G.o.room);
        else
            conn_set_ready(c);
    } else if (json_is(p, len, "type", "joined")) {
        conn_set_ready(c);
    } else if (json_is(p, len, "type", "msg")) {
        if (c->role != ROLE_MEMBER)
            return;
        int64_t id = 0, t = 0;
        if (json_int(p, len, "id", &id) && id > c->last_id)
            c->last_id = id;
        if (++c->unacked >= ACK_EVERY) {
            text_send(c, "{\"type\":\"ack\",\"id\":%" PRId64 "}", c->last_id);
            c->unacked = 0;
        }
        const char *rp = json_find(p, len, "replay");
        if ((rp && *rp == 't') || !json_int(p, len, "t", &t) || t < G.t_start)
            return; /* replay of an earlier run */
        if (G.phase == PH_DONE)
            return; /* after the drain deadline: not counted */
        G.msgs++;
        G.t_last_rx = now;
        hist_add(&G.lat, now - t);
    } else if (json_is(p, len, "type", "sent")) {
        if (c->role == ROLE_PUBLISHER) {
            G.pub_sent++;
            return;
        }
        if (c->role != ROLE_SENDER)
            return;
        const char *q = json_find(p, len, "cid");
        const char *dash = q ? memchr(q, '-', (size_t)(p + len - q)) : NULL;
        uint64_t seq = dash ? strtoull(dash + 1, NULL, 10) : 0;
        if (in_window(now)) {
            G.msgs++;
            hist_add(&G.lat, now - (int64_t)c->sent_ns[seq % (uint64_t)G.o.window]);
        }
        if (now < G.t_end)
            sender_send(c, now);
    } else if (json_is(p, len, "type", "error")) {
        G.errors++;
        if (G.errors <= 5)
            fprintf(stderr, "loadgen: connection %u got %.*s\n", c->idx,
                    (int)(len < 200 ? len : 200), p);
        if (c->role == ROLE_SENDER && now < G.t_end && G.phase == PH_RUN)
            sender_send(c, now);
    }
}

static void on_message(struct conn *c, unsigned op, const char *p, size_t len, int64_t now)
{
    (void)op;
    if (c->role == ROLE_ECHO)
        on_echo(c, p, len, now);
    else
        on_chat(c, p, len, now);
}

static bool counting(const struct conn *c)
{
    return c->role == ROLE_MEMBER && G.window_opened && G.phase != PH_DONE;
}

/* A whole message; compressed ones (RSV1 on their first frame) are inflated first. */
static bool message_in(struct conn *c, unsigned op, const char *p, size_t len, bool compressed,
                       int64_t now)
{
    if (compressed) {
        G.ibuf.len = 0;
        int err = ws_deflate_inflater_feed(c->inf, (const uint8_t *)p, len, true,
                                           ws_deflate_buf_sink, &G.ibuf);
        if (err) {
            char why[96];
            snprintf(why, sizeof(why), "inflate: %s", ws_deflate_strerror(err));
            conn_fail(c, why);
            return false;
        }
        if (counting(c)) {
            G.rx_compressed++;
            G.rx_z_payload += len;
            G.rx_z_inflated += G.ibuf.len;
        }
        p = (const char *)G.ibuf.p;
        len = G.ibuf.len;
        if (!p)
            p = "";
    }
    G.rx_msgs++;
    on_message(c, op, p, len, now);
    return true;
}

/*
 * Parses every complete server frame in buf[off..buf_len); returns the offset after the last one, or
 * -1 once the connection is gone (then buf may have been freed with it).
 */
static long frames_parse(struct conn *c, const char *buf, size_t buf_len, size_t off, int64_t now)
{
    while (c->state == CS_OPEN) {
        size_t avail = buf_len - off;
        const unsigned char *h = (const unsigned char *)buf + off;
        if (avail < 2)
            break;
        unsigned fin = h[0] & 0x80, op = h[0] & 0x0f, rsv = h[0] & 0x70;
        /* RSV1 only on the first frame of a compressed data message (RFC 7692 §6) */
        if (rsv && (rsv != WS_DEFLATE_RSV1 || !ws_deflate_rsv1_allowed(c->inf != NULL, op))) {
            conn_fail(c, "unexpected RSV bits from server");
            return -1;
        }
        if (h[1] & 0x80) {
            conn_fail(c, "masked frame from server"); /* RFC 6455 §5.1 */
            return -1;
        }
        uint64_t len = h[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (avail < 4)
                break;
            len = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | h[2 + i];
            hl = 10;
        }
        if (len > MAX_FRAME) {
            conn_fail(c, "frame too large");
            return -1;
        }
        if (avail < hl + len)
            break;
        const char *payload = (const char *)h + hl;
        off += hl + (size_t)len;
        if (op == 0x9) {
            frame_send(c, 0xA, payload, (size_t)len);
        } else if (op == 0xA) {
            /* unsolicited pong: ignore */
        } else if (op == 0x8) {
            unsigned code =
                len >= 2 ? (unsigned)((unsigned char)payload[0] << 8 | (unsigned char)payload[1])
                         : 1005;
            char why[160];
            snprintf(why, sizeof(why), "server closed: %u %.*s", code,
                     (int)(len > 2 ? (len - 2 > 100 ? 100 : len - 2) : 0), payload + 2);
            frame_send(c, 0x8, payload, len >= 2 ? 2 : 0);
            conn_flush(c);
            conn_fail(c, why);
            return -1;
        } else if (op == 0x0 || !fin) {
            if (op != 0x0) {
                c->frag_op = (uint8_t)op;
                c->frag_rsv1 = rsv != 0;
            }
            if (c->frag_len + len > c->frag_cap) {
                c->frag_cap = (c->frag_len + (size_t)len) * 2;
                c->frag = xrealloc(c->frag, c->frag_cap);
            }
            memcpy(c->frag + c->frag_len, payload, (size_t)len);
            c->frag_len += (size_t)len;
            if (fin) {
                size_t fl = c->frag_len;
                c->frag_len = 0;
                if (!message_in(c, c->frag_op, c->frag, fl, c->frag_rsv1, now))
                    return -1;
            }
        } else if (!message_in(c, op, payload, (size_t)len, rsv != 0, now)) {
            return -1;
        }
    }
    return c->state == CS_CLOSED ? -1 : (long)off;
}

/*
 * Reads until the socket is empty. An open connection reads into the one shared scratch buffer
 * (after the partial frame it kept from last time), so a read takes whatever has arrived, up to
 * SCRATCH, and only the unfinished tail is copied back; handshakes and frames larger than half
 * the scratch buffer grow the connection's own buffer instead.
 */
static void conn_read(struct conn *c)
{
    for (;;) {
        bool shared = c->state == CS_OPEN && c->in_len <= SCRATCH / 2;
        char *buf;
        size_t space;
        if (shared) {
            if (c->in_len)
                memcpy(G.scratch, c->in, c->in_len);
            buf = G.scratch;
            space = SCRATCH - c->in_len;
        } else {
            if (c->in_cap - c->in_len < IN_CHUNK / 2) {
                size_t cap = c->in_cap ? c->in_cap * 2 : IN_CHUNK;
                c->in = xrealloc(c->in, cap);
                c->in_cap = cap;
            }
            buf = c->in;
            space = c->in_cap - c->in_len;
        }
        ssize_t n = read(c->fd, buf + c->in_len, space);
        G.sys_rw++;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            conn_fail(c, n == 0 ? "server closed the connection" : strerror(errno));
            return;
        }
        size_t have = c->in_len + (size_t)n;
        c->in_len = have;
        if (counting(c))
            G.rx_bytes += (size_t)n;
        int64_t now = now_ns();
        size_t off = 0;
        if (c->state == CS_HANDSHAKE) {
            long head = handshake_parse(c);
            if (head <= 0)
                return;
            off = (size_t)head;
        }
        long used = frames_parse(c, buf, have, off, now);
        if (used < 0)
            return;
        size_t left = have - (size_t)used;
        if (shared && left > c->in_cap) {
            c->in = xrealloc(c->in, left);
            c->in_cap = left;
        }
        if (left)
            memmove(c->in, buf + used, left);
        c->in_len = left;
        /* a short read emptied the socket; the next arrival raises a new edge */
        if ((size_t)n < space)
            return;
    }
}

static void conn_event(struct conn *c, uint32_t events)
{
    if (c->state == CS_CLOSED || c->state == CS_FREE)
        return;
    if (c->state == CS_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof(err);
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            conn_fail(c, strerror(err));
            return;
        }
        conn_send_handshake(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        conn_read(c);
    if (c->state != CS_CLOSED && c->out_len)
        conn_flush(c);
}

/* ---- phases ---- */

static void phase_run(int64_t now)
{
    G.phase = PH_RUN;
    G.t_run = now;
    G.t_start = now + (int64_t)(G.o.warm * NS_PER_S);
    G.t_end = G.t_start + (int64_t)(G.o.secs * NS_PER_S);
    if (G.o.mode == MODE_FANOUT) {
        /* the publisher's first message starts the window; no warm-up at a fixed rate */
        G.t_start = now;
        G.t_end = now + (int64_t)(G.o.secs * NS_PER_S);
        G.next_pub = now;
    }
    for (long i = 0; i < G.nconns; i++) {
        struct conn *c = &G.conns[i];
        if (c->state != CS_OPEN)
            continue;
        for (long w = 0; w < G.o.window && (c->role == ROLE_ECHO || c->role == ROLE_SENDER); w++) {
            if (c->role == ROLE_ECHO)
                echo_send(c, now);
            else
                sender_send(c, now);
        }
        if (c->out_len)
            conn_flush(c);
    }
}

static void window_open(void)
{
    G.window_opened = true;
    G.t_cpu0 = now_ns();
    if (G.o.pid > 0 && !proc_cpu(G.o.pid, &G.cpu_start))
        die("cannot read /proc/%ld/stat", G.o.pid);
    if (G.server_core >= 0 && !proc_core(G.server_core, &G.core_busy0, &G.core_total0))
        G.server_core = -1;
    group_open();
    getrusage(RUSAGE_SELF, &G.ru_start);
    G.sys_rw0 = G.sys_rw;
}

static void window_close(void)
{
    G.t_cpu1 = now_ns();
    if (G.o.pid > 0 && !proc_cpu(G.o.pid, &G.cpu_end))
        G.cpu_end = G.cpu_start;
    if (G.server_core >= 0 && !proc_core(G.server_core, &G.core_busy1, &G.core_total1))
        G.server_core = -1;
    group_close();
    getrusage(RUSAGE_SELF, &G.ru_end);
    G.sys_rw1 = G.sys_rw;
}

/* Chat lines for -B bodies: plain ASCII, no quotes or backslashes (they go into JSON as is). */
static const char *const chat_lines[] = {
    "hey, are you around? ",
    "I just pushed the fix for the login timeout, can you take a look when you have a minute. ",
    "lunch at noon at the usual place? ",
    "the deploy to staging went fine, production is scheduled for tomorrow morning. ",
    "ok, sounds good to me. ",
    "did anyone else see the alert about disk usage on the second database node? ",
    "yes, it was the nightly backup, it cleaned up after itself an hour later. ",
    "can we move the planning meeting to Thursday, half of the team is out on Wednesday. ",
    "thanks! ",
    "I will be a bit late today, the train is stuck somewhere outside the city. ",
    "here are the numbers from last week: signups up 12 percent, churn flat, support tickets down. ",
    "who owns the billing service these days? ",
    "I think Maria does, but ask in the platform channel to be sure. ",
    "the new design for the settings page looks great, only the contrast of the buttons bugs me. ",
    "let me know if you need anything from me before the release. ",
    "coffee? ",
    "the customer from yesterday wrote back, they are happy with the workaround for now. ",
    "please remember to update the changelog before you merge. ",
    "I am reviewing your pull request now, a few small comments so far, nothing blocking. ",
    "good morning everyone! ",
    "is the office closed on Friday or is that only for the other building? ",
    "the tests are flaky again on the shared runner, I restarted the job twice. ",
    "great work on the migration, it went much smoother than last time. ",
    "see you tomorrow. ",
};

/* The published body, exactly G.o.body bytes: {"t":NS,"user":...,"text":"...","lang":"en"}, its
   text drawn from chat_lines by message number, so runs with and without -Z send the same text. */
static size_t body_make(char *out, size_t cap, int64_t now, uint64_t seq)
{
    static const char *const users[] = {"alice", "bob", "carol", "dave", "erin"};
    int n = snprintf(out, cap, "{\"t\":%" PRId64 ",\"user\":\"%s\",\"text\":\"", now,
                     users[seq % 5]);
    static const char tail[] = "\",\"lang\":\"en\"}";
    size_t len = (size_t)n, want = (size_t)G.o.body, nl = sizeof(chat_lines) / sizeof(*chat_lines);
    if (want > cap || want < len + sizeof(tail) - 1 + 1)
        die("-B %ld is too small for the body's fields (at least %zu)", G.o.body,
            len + sizeof(tail));
    uint64_t h = seq * 0x9E3779B97F4A7C15ULL + 1;
    while (len < want - (sizeof(tail) - 1)) {
        h ^= h >> 29;
        h *= 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 32;
        const char *l = chat_lines[h % nl];
        size_t room = want - (sizeof(tail) - 1) - len, ll = strlen(l);
        memcpy(out + len, l, ll < room ? ll : room);
        len += ll < room ? ll : room;
    }
    memcpy(out + len, tail, sizeof(tail) - 1);
    return len + sizeof(tail) - 1;
}

static void publish(int64_t now)
{
    struct conn *pub = &G.conns[G.nconns - 1];
    if (pub->state != CS_OPEN)
        return;
    int64_t step = (int64_t)(NS_PER_S / G.o.rate);
    while (G.next_pub <= now && G.next_pub < G.t_end) {
        /* the body carries the send time, so members measure publish -> receipt themselves */
        if (G.o.body > 0) {
            static char body[65536], frame[65536 + 256];
            size_t bl = body_make(body, sizeof(body), now, G.published);
            int fl = snprintf(frame, sizeof(frame),
                              "{\"type\":\"send\",\"room\":\"%s\",\"body\":%.*s,"
                              "\"cid\":\"%" PRIx64 "-%" PRIu64 "\"}",
                              G.o.room, (int)bl, body, G.run_nonce, G.published);
            frame_send(pub, 0x1, frame, (size_t)fl);
        } else {
            text_send(pub,
                      "{\"type\":\"send\",\"room\":\"%s\",\"body\":{\"t\":%" PRId64 "},"
                      "\"cid\":\"%" PRIx64 "-%" PRIu64 "\"}",
                      G.o.room, now, G.run_nonce, G.published);
        }
        G.published++;
        G.next_pub += step;
    }
    conn_flush(pub);
}

/* storm: reads the server's VmRSS when a sample is due; returns ms until the next one. */
static int rss_sample(int64_t now)
{
    if (now >= G.next_sample) {
        long r = proc_rss_kib(G.o.pid);
        if (r > G.rss_peak)
            G.rss_peak = r;
        G.rss_samples++;
        G.rss_after = r;
        while (G.next_sample <= now)
            G.next_sample += RSS_SAMPLE_NS;
    }
    return (int)((G.next_sample - now) / 1000000) + 1;
}

/* storm: connections started by now at -r per second, counted from the first */
static bool storm_due(int64_t now)
{
    return G.o.mode != MODE_STORM ||
           (double)G.next_start < (double)(now - G.t_setup) * G.o.rate / 1e9 + 1;
}

/* Advances the state machine; returns the epoll timeout in ms. */
static int tick(int64_t now)
{
    if (G.o.mode == MODE_STORM && G.phase != PH_DONE) {
        int next = rss_sample(now);
        if (G.phase == PH_SETUP) {
            while (G.next_start < G.nconns && G.connecting < MAX_CONNECTING && storm_due(now))
                conn_start(&G.conns[G.next_start++]);
            if (G.ready + G.failed >= G.nconns) {
                G.t_joined = G.t_run = now;
                if (!proc_cpu(G.o.pid, &G.cpu_end))
                    G.cpu_end = G.cpu_start;
                getrusage(RUSAGE_SELF, &G.ru_end);
                G.t_cpu1 = now;
                G.t_end = now + (int64_t)(G.o.drain * NS_PER_S);
                G.phase = PH_RUN;
            } else if (now - G.t_setup > SETUP_TIMEOUT_NS) {
                die("storm timed out: %ld ready, %ld failed of %ld", G.ready, G.failed, G.nconns);
            }
            return next < 1 ? next : 1; /* pacing: the next connection may be due in 0.5 ms */
        }
        if (now >= G.t_end) {
            G.next_sample = now;
            rss_sample(now); /* rss_after: the last sample, at the end */
            G.phase = PH_DONE;
            return 0;
        }
        return next;
    }
    switch (G.phase) {
    case PH_SETUP:
        while (G.next_start < G.nconns && G.connecting < MAX_CONNECTING)
            conn_start(&G.conns[G.next_start++]);
        if (G.ready + G.failed >= G.nconns) {
            if (G.failed > 0 && G.o.mode != MODE_IDLE)
                die("%ld of %ld connections failed during setup", G.failed, G.nconns);
            phase_run(now);
            if (G.o.mode == MODE_IDLE) {
                G.t_end = now + (int64_t)(G.o.secs * NS_PER_S);
                return (int)(G.o.secs * 1000) + 1;
            }
            if (G.o.mode != MODE_FANOUT)
                return (int)((G.t_start - now) / 1000000) + 1;
            window_open();
            publish(now);
            return 1;
        }
        if (now - G.t_setup > SETUP_TIMEOUT_NS)
            die("setup timed out: %ld ready, %ld failed of %ld", G.ready, G.failed, G.nconns);
        return 10;
    case PH_RUN:
        if (G.o.mode == MODE_IDLE) {
            if (now >= G.t_end) {
                G.rss_after = G.o.pid > 0 ? proc_rss_kib(G.o.pid) : -1;
                G.phase = PH_DONE;
                return 0;
            }
            return (int)((G.t_end - now) / 1000000) + 1;
        }
        if (G.o.mode == MODE_FANOUT) {
            publish(now);
            if (now >= G.t_end) {
                G.phase = PH_DRAIN;
                G.t_done = G.t_end + (int64_t)(G.o.drain * NS_PER_S);
                return 1;
            }
            int64_t wait = G.next_pub - now;
            return wait > 0 ? (int)(wait / 1000000) : 0;
        }
        if (!G.window_opened && now >= G.t_start)
            window_open();
        if (now >= G.t_end) {
            window_close();
            G.phase = PH_DONE;
            return 0;
        }
        return (int)(((now < G.t_start ? G.t_start : G.t_end) - now) / 1000000) + 1;
    case PH_DRAIN: {
        uint64_t expected = (uint64_t)G.o.conns * G.published;
        if (G.msgs >= expected || now >= G.t_done) {
            window_close();
            G.phase = PH_DONE;
            return 0;
        }
        return 5;
    }
    case PH_DONE:
        return 0;
    }
    return 0;
}

/* ---- echo on io_uring ---- */

/*
 * Echo's window: every syscall costs ~1.4 µs on this VM, so instead of a read and a write per
 * connection per round, each connection keeps one recv and at most one send in flight on an
 * io_uring, and one io_uring_enter submits them all and reaps whatever completed. The kernel's TCP
 * work is the same; what goes is the syscall per read and per write.
 */
struct uring {
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    unsigned sq_local, to_submit;
    void *sq_map, *cq_map;
    size_t sq_len, cq_len, sqe_len;
};

#define UD_TIMEOUT UINT64_MAX

static bool uring_init(struct uring *u, unsigned entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    memset(u, 0, sizeof(*u));
    /* completions' work runs only when we ask for events: no interrupting the loop per packet */
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    u->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (u->fd < 0 && errno == EINVAL) { /* before Linux 6.1 */
        memset(&p, 0, sizeof(p));
        u->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    }
    if (u->fd < 0 || !(p.features & IORING_FEAT_SINGLE_MMAP)) {
        if (u->fd >= 0)
            close(u->fd);
        return false;
    }
    u->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    u->cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (u->cq_len > u->sq_len)
        u->sq_len = u->cq_len;
    u->sq_map = mmap(NULL, u->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->fd,
                     IORING_OFF_SQ_RING);
    u->sqe_len = p.sq_entries * sizeof(struct io_uring_sqe);
    u->sqes = mmap(NULL, u->sqe_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->fd,
                   IORING_OFF_SQES);
    if (u->sq_map == MAP_FAILED || u->sqes == MAP_FAILED) {
        close(u->fd);
        return false;
    }
    char *sq = u->sq_map, *cq = u->sq_map; /* one mapping for both rings */
    u->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    u->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    u->sq_array = (unsigned *)(sq + p.sq_off.array);
    u->cq_head = (unsigned *)(cq + p.cq_off.head);
    u->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    u->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    u->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    u->sq_local = *u->sq_tail;
    return true;
}

static void uring_free(struct uring *u)
{
    munmap(u->sqes, u->sqe_len);
    munmap(u->sq_map, u->sq_len);
    close(u->fd); /* cancels whatever is still in flight */
}

static struct io_uring_sqe *uring_sqe(struct uring *u)
{
    unsigned i = u->sq_local & *u->sq_mask;
    struct io_uring_sqe *e = &u->sqes[i];
    memset(e, 0, sizeof(*e));
    u->sq_array[i] = i;
    u->sq_local++;
    u->to_submit++;
    return e;
}

static void uring_recv(struct uring *u, struct conn *c)
{
    if (c->in_cap - c->in_len < IN_CHUNK / 2) {
        c->in_cap *= 2;
        c->in = xrealloc(c->in, c->in_cap); /* no recv in flight here */
    }
    struct io_uring_sqe *e = uring_sqe(u);
    e->opcode = IORING_OP_RECV;
    e->fd = c->fd;
    e->addr = (uint64_t)(uintptr_t)(c->in + c->in_len);
    e->len = (uint32_t)(c->in_cap - c->in_len);
    e->user_data = (uint64_t)c->idx << 1;
}

static void uring_send(struct uring *u, struct conn *c)
{
    struct io_uring_sqe *e = uring_sqe(u);
    e->opcode = IORING_OP_SEND;
    e->fd = c->fd;
    e->addr = (uint64_t)(uintptr_t)c->out;
    e->len = (uint32_t)c->out_len;
    e->msg_flags = MSG_NOSIGNAL;
    e->user_data = (uint64_t)c->idx << 1 | 1;
    c->sending = true;
    c->sending_len = c->out_len;
}

static void uring_timeout(struct uring *u)
{
    static struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000000};
    struct io_uring_sqe *e = uring_sqe(u);
    e->opcode = IORING_OP_TIMEOUT;
    e->addr = (uint64_t)(uintptr_t)&ts;
    e->len = 1;
    e->user_data = UD_TIMEOUT;
}

/* Publish the queued entries and enter: submit them, wait for min_complete answers. */
static void uring_enter(struct uring *u, unsigned min_complete)
{
    __atomic_store_n(u->sq_tail, u->sq_local, __ATOMIC_RELEASE);
    int r = (int)syscall(__NR_io_uring_enter, u->fd, u->to_submit, min_complete,
                         IORING_ENTER_GETEVENTS, NULL, 0);
    G.sys_rw++;
    if (r < 0 && errno != EINTR && errno != EBUSY)
        die("io_uring_enter: %s", strerror(errno));
    if (r > 0)
        u->to_submit -= (unsigned)r;
}

/* One completion for connection c: a recv (parse, echo, recv again) or a send (send the rest). */
static void uring_complete(struct uring *u, struct conn *c, bool is_send, int res, int64_t now)
{
    if (c->state != CS_OPEN)
        return;
    if (res <= 0) {
        conn_fail(c, res == 0 ? "server closed the connection" : strerror(-res));
        return;
    }
    if (is_send) {
        size_t done = (size_t)res;
        c->sending = false;
        memmove(c->out, c->out + done, c->out_len - done);
        c->out_len -= done;
        if (c->out_len)
            uring_send(u, c);
        return;
    }
    c->in_len += (size_t)res;
    long used = frames_parse(c, c->in, c->in_len, 0, now);
    if (used < 0)
        return;
    memmove(c->in, c->in + used, c->in_len - (size_t)used);
    c->in_len -= (size_t)used;
    if (c->out_len > c->out_cap)
        die("internal: output overran its reservation");
    if (c->out_len && !c->sending)
        uring_send(u, c);
    uring_recv(u, c);
}

/* Runs echo's warm-up and window on io_uring; false (nothing done) if io_uring is unavailable. */
static bool echo_uring(void)
{
    struct uring u;
    unsigned entries = 8;
    while (entries < 2 * (unsigned)G.nconns + 4)
        entries *= 2;
    if (!uring_init(&u, entries))
        return false;
    /* room for a whole window each way, so the buffers never move under a request */
    size_t win = (size_t)G.o.window * ((size_t)G.o.size + 14) + 4096;
    for (long i = 0; i < G.nconns; i++) {
        struct conn *c = &G.conns[i];
        if (c->state != CS_OPEN)
            continue;
        /* blocking sockets: io_uring then waits for data itself instead of failing EAGAIN */
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
        if (c->out_cap < 2 * win + c->out_len) {
            c->out = xrealloc(c->out, 2 * win + c->out_len);
            c->out_cap = 2 * win + c->out_len;
        }
        if (c->in_cap < 2 * win) {
            c->in = xrealloc(c->in, 2 * win);
            c->in_cap = 2 * win;
        }
        if (c->out_len)
            uring_send(&u, c);
        uring_recv(&u, c);
    }
    G.uring = true;
    uring_timeout(&u);
    while (G.phase != PH_DONE) {
        uring_enter(&u, 1);
        int64_t now = now_ns();
        unsigned head = *u.cq_head, tail = __atomic_load_n(u.cq_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++) {
            struct io_uring_cqe *e = &u.cqes[head & *u.cq_mask];
            if (e->user_data == UD_TIMEOUT)
                uring_timeout(&u);
            else
                uring_complete(&u, &G.conns[e->user_data >> 1], e->user_data & 1, e->res, now);
        }
        __atomic_store_n(u.cq_head, head, __ATOMIC_RELEASE);
        if (!G.window_opened && now >= G.t_start)
            window_open();
        if (now >= G.t_end) {
            window_close();
            G.phase = PH_DONE;
        }
    }
    uring_free(&u);
    return true;
}

/* ---- fanout members' reads on io_uring ---- */

/*
 * A fan-out puts one frame on each of 1,000+ sockets within a few ms, and epoll reports them ready
 * by the hundred; a read() each is a syscall each (~1 µs here, more than the copy), so the loader,
 * not the server, set the tail of the latency. Instead the ready members' reads go as one
 * IORING_OP_RECV each (MSG_DONTWAIT: never parked) in one io_uring_enter, and are parsed as the
 * answers come. Every server is measured with the same loader.
 */
static struct uring fan_ring;
static bool fan_ring_on;

/* Reads the open connections among evs[0, n) that only have input, in one submission; returns
 * how many events are left (compacted to the front) for conn_event. */
static int fanout_reads(struct epoll_event *evs, int n)
{
    int left = 0;
    unsigned want = 0;
    for (int i = 0; i < n; i++) {
        struct conn *c = evs[i].data.ptr;
        if (c->state != CS_OPEN || (evs[i].events & ~(uint32_t)EPOLLOUT) != EPOLLIN || c->out_len ||
            want == 512) {
            evs[left++] = evs[i];
            continue;
        }
        if (c->in_cap - c->in_len < IN_CHUNK / 2) {
            size_t cap = c->in_cap ? c->in_cap * 2 : IN_CHUNK;
            c->in = xrealloc(c->in, cap);
            c->in_cap = cap;
        }
        struct io_uring_sqe *e = uring_sqe(&fan_ring);
        e->opcode = IORING_OP_RECV;
        e->fd = c->fd;
        e->addr = (uint64_t)(uintptr_t)(c->in + c->in_len);
        e->len = (uint32_t)(c->in_cap - c->in_len);
        e->msg_flags = MSG_DONTWAIT;
        e->user_data = (uint64_t)c->idx;
        want++;
    }
    if (!want)
        return left;
    unsigned got = 0;
    while (got < want) {
        uring_enter(&fan_ring, want - got);
        int64_t now = now_ns();
        unsigned head = *fan_ring.cq_head, tail = __atomic_load_n(fan_ring.cq_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++, got++) {
            struct io_uring_cqe *e = &fan_ring.cqes[head & *fan_ring.cq_mask];
            struct conn *c = &G.conns[e->user_data];
            int res = e->res;
            if (res == -EAGAIN || c->state != CS_OPEN)
                continue;
            if (res <= 0) {
                conn_fail(c, res == 0 ? "server closed the connection" : strerror(-res));
                continue;
            }
            bool full = (size_t)res == c->in_cap - c->in_len;
            c->in_len += (size_t)res;
            if (counting(c))
                G.rx_bytes += (size_t)res;
            long used = frames_parse(c, c->in, c->in_len, 0, now);
            if (used < 0)
                continue;
            memmove(c->in, c->in + used, c->in_len - (size_t)used);
            c->in_len -= (size_t)used;
            if (full) /* edge-triggered: the socket may hold more */
                conn_read(c);
            if (c->state == CS_OPEN && c->out_len)
                conn_flush(c);
        }
        __atomic_store_n(fan_ring.cq_head, head, __ATOMIC_RELEASE);
    }
    return left;
}

/* ---- report ---- */

static void report(void)
{
    const struct opts *o = &G.o;
    static const char *names[] = {"echo", "idle", "fanout", "persist", "storm"};
    double ticks = (double)sysconf(_SC_CLK_TCK);
    double cpu_s = o->pid > 0 ? (double)(G.cpu_end - G.cpu_start) / ticks : 0;
    double lu = (double)(G.ru_end.ru_utime.tv_sec - G.ru_start.ru_utime.tv_sec) +
                (double)(G.ru_end.ru_utime.tv_usec - G.ru_start.ru_utime.tv_usec) / 1e6 +
                (double)(G.ru_end.ru_stime.tv_sec - G.ru_start.ru_stime.tv_sec) +
                (double)(G.ru_end.ru_stime.tv_usec - G.ru_start.ru_stime.tv_usec) / 1e6;
    char line[2048];
    int n = snprintf(line, sizeof(line), "result mode=%s conns=%ld setup_s=%.2f", names[o->mode],
                     o->conns, (double)(G.t_run - G.t_setup) / 1e9);

    if (o->mode == MODE_STORM) {
        double ready = G.ready > 0 ? (double)G.ready : -1;
        double peak = (double)(G.rss_peak - G.rss_before) / ready;
        double after = (double)(G.rss_after - G.rss_before) / ready;
        double wall = (double)(G.t_cpu1 - G.t_cpu0) / 1e9;
        snprintf(line + n, sizeof(line) - (size_t)n,
                 " path=%s room=%s rate=%.0f ready=%ld failed=%ld rss_before_kib=%ld"
                 " rss_peak_kib=%ld rss_after_kib=%ld peak_kib_per_conn=%.2f kib_per_conn=%.2f"
                 " peak_abs_kib_per_conn=%.2f after_s=%.1f rss_samples=%ld frames_rx=%" PRIu64
                 " server_cpu_s=%.3f server_cpu_pct=%.1f loader_cpu_pct=%.1f errors=%" PRIu64,
                 o->path, o->room, o->rate, G.ready, G.failed, G.rss_before, G.rss_peak,
                 G.rss_after, peak, after, (double)G.rss_peak / ready, o->drain, G.rss_samples,
                 G.rx_msgs, cpu_s, wall > 0 ? 100.0 * cpu_s / wall : 0,
                 wall > 0 ? 100.0 * lu / wall : 0, G.errors);
        printf("storm: %ld of %ld clients joined room %s in %.2f s (%.0f/s paced); server RSS %ld "
               "KiB before, peak %ld KiB (%.2f KiB per connection), %ld KiB %.1f s after the last "
               "join (%.2f KiB per connection); %" PRIu64 " frames received in all\n%s\n",
               G.ready, o->conns, o->room, (double)(G.t_run - G.t_setup) / 1e9, o->rate,
               G.rss_before, G.rss_peak, peak, G.rss_after, o->drain, after, G.rx_msgs, line);
        return;
    }
    if (o->mode == MODE_IDLE) {
        double per = G.ready > 0 && G.rss_before >= 0 && G.rss_after >= 0
                         ? (double)(G.rss_after - G.rss_before) / (double)G.ready
                         : -1;
        snprintf(
            line + n, sizeof(line) - (size_t)n,
            " path=%s join=%d ready=%ld failed=%ld rss_before_kib=%ld rss_after_kib=%ld"
            " kib_per_conn=%.2f errors=%" PRIu64,
            o->path, o->join ? 1 : 0, G.ready, G.failed, G.rss_before, G.rss_after, per,
            G.errors);
        printf(
            "idle: %ld of %ld connections open on %s; server RSS %ld KiB -> %ld KiB = %.2f KiB per "
            "connection\n%s\n",
            G.ready, o->conns, o->path, G.rss_before, G.rss_after, per, line);
        return;
    }
    double secs;
    if (o->mode == MODE_FANOUT)
        secs = (double)((G.t_last_rx > G.t_end ? G.t_last_rx : G.t_end) - G.t_start) / 1e9;
    else
        secs = (double)(G.t_end - G.t_start) / 1e9;
    double wall = (double)(G.t_cpu1 - G.t_cpu0) / 1e9;
    double rate = secs > 0 ? (double)G.msgs / secs : 0;
    double cpu_pct = wall > 0 ? 100.0 * cpu_s / wall : 0;
    double per_core = cpu_s > 0 ? (double)G.msgs / cpu_s : 0;
    double loader_pct = wall > 0 ? 100.0 * lu / wall : 0;
    double sys_per_msg = G.msgs ? (double)(G.sys_rw1 - G.sys_rw0) / (double)G.msgs : 0;
    double p50 = hist_pct_us(&G.lat, 0.50), p99 = hist_pct_us(&G.lat, 0.99),
           p999 = hist_pct_us(&G.lat, 0.999);
    long rss = o->pid > 0 ? proc_rss_kib(o->pid) : -1;
    double core_pct = G.server_core >= 0 && G.core_total1 > G.core_total0
                          ? 100.0 * (double)(G.core_busy1 - G.core_busy0) /
                                (double)(G.core_total1 - G.core_total0)
                          : -1;
    const char *unit = o->mode == MODE_FANOUT    ? "deliveries"
                       : o->mode == MODE_PERSIST ? "receipts"
                                                 : "msgs";
    n +=
        snprintf(line + n, sizeof(line) - (size_t)n,
                 " window=%ld size=%ld secs=%.3f msgs=%" PRIu64 " msgs_per_s=%.0f p50_us=%.1f"
                 " p99_us=%.1f p999_us=%.1f max_us=%.1f server_cpu_pct=%.1f msgs_per_core_s=%.0f"
                 " loader_cpu_pct=%.1f loader_syscalls_per_msg=%.3f loader_io=%s"
                 " server_core_busy_pct=%.1f"
                 " server_rss_kib=%ld errors=%" PRIu64 " closed=%" PRIu64,
                 o->window, o->size, secs, G.msgs, rate, p50, p99, p999, (double)G.lat.max / 1000.0,
                 cpu_pct, per_core, loader_pct, sys_per_msg, G.uring ? "uring" : "epoll", core_pct,
                 rss, G.errors, G.closed);
    if (o->group > 0)
        n += snprintf(line + n, sizeof(line) - (size_t)n,
                      " group_cpu_s=%.3f group_cpu_pct=%.1f group_procs=%ld",
                      (double)G.group_ticks / ticks,
                      wall > 0 ? 100.0 * (double)G.group_ticks / ticks / wall : 0, G.group_procs);
    if (o->mode == MODE_FANOUT) {
        uint64_t expected = (uint64_t)o->conns * G.published;
        double pct = expected ? 100.0 * (double)G.msgs / (double)expected : 0;
        double wire = G.msgs ? (double)G.rx_bytes / (double)G.msgs : 0;
        double us = G.msgs ? 1e6 * cpu_s / (double)G.msgs : 0;
        double zr = G.rx_z_inflated ? 100.0 * (double)G.rx_z_payload / (double)G.rx_z_inflated : 0;
        snprintf(line + n, sizeof(line) - (size_t)n,
                 " rate=%.0f published=%" PRIu64 " receipts=%" PRIu64 " expected=%" PRIu64
                 " delivered_pct=%.3f body=%ld deflate=%d rx_bytes=%" PRIu64
                 " wire_bytes_per_msg=%.1f compressed_msgs=%" PRIu64 " z_payload=%" PRIu64
                 " z_inflated=%" PRIu64 " z_ratio_pct=%.1f server_cpu_s=%.3f"
                 " server_cpu_us_per_msg=%.2f",
                 o->rate, G.published, G.pub_sent, expected, pct, o->body, o->deflate ? 1 : 0,
                 G.rx_bytes, wire, G.rx_compressed, G.rx_z_payload, G.rx_z_inflated, zr, cpu_s,
                 us);
        printf("fanout: %ld members, %" PRIu64 " published at %.0f/s -> %" PRIu64 " of %" PRIu64
               " delivered (%.3f%%)\n",
               o->conns, G.published, o->rate, G.msgs, expected, pct);
        printf("wire: %.1f bytes received per delivery (%" PRIu64 " bytes); %" PRIu64
               " deliveries came compressed, payload %.1f%% of the inflated size; server %.2f us "
               "CPU per delivery\n",
               wire, G.rx_bytes, G.rx_compressed, zr, us);
    }
    printf("%s: %.0f %s/s over %.2f s; latency p50 %.1f us, p99 %.1f us, p99.9 %.1f us\n"
           "server: %.1f%% of a core, %.0f %s per server-core-second; loader %.1f%% of a core; "
           "server's core busy %.1f%%\n"
           "%s\n",
           names[o->mode], rate, unit, secs, p50, p99, p999, cpu_pct, per_core, unit, loader_pct,
           core_pct, line);
}

/* ---- setup ---- */

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen -m echo|idle|fanout|persist|storm [options]\n"
            "  -H HOST     loopback address (127.x.x.x or ::1; default 127.0.0.1)\n"
            "  -P PORT     port (default 8080)\n"
            "  -U PATH     request path (default /echo for echo/idle, /ws otherwise)\n"
            "  -c N        connections (echo, idle, storm), room members (fanout), senders\n"
            "              (persist)\n"
            "  -w N        messages in flight per connection (echo, persist; default 1)\n"
            "  -s BYTES    echo payload size, >= 16 (default 32)\n"
            "  -d SECS     measured seconds (idle: settle time before reading RSS; default 5)\n"
            "  -W SECS     warm-up before the window (echo, persist; default 1)\n"
            "  -r RATE     fanout publish rate, msgs/s (default 100); storm: clients started\n"
            "              per second (each connects, then joins)\n"
            "  -D SECS     fanout: how long to wait for stragglers after publishing; storm: how\n"
            "              long to keep sampling RSS after the last join (default 5)\n"
            "  -j          idle: join the room (-R) after welcome, ready once joined (needs -k)\n"
            "  -E          echo: run the window on epoll (read + write per connection) instead\n"
            "              of io_uring (one io_uring_enter for all of them)\n"
            "  -p PID      server pid: CPU from /proc/PID/stat, RSS from /proc/PID/status\n"
            "  -g PID      echo, fanout, persist: also report the CPU of PID and its direct\n"
            "              children over the window (group_cpu_pct; e.g. postgres' postmaster)\n"
            "  -Q PORT     fanout: the publisher connects to PORT (another node of a cluster),\n"
            "              the members to -P\n"
            "  -k SECRET   sign HS256 tokens with SECRET and pass them as ?token=\n"
            "  -R ROOM     fanout, storm and idle -j room (default bench)\n"
            "  -u PREFIX   user name prefix (default none)\n"
            "  -b          echo binary frames instead of text\n"
            "  -B BYTES    fanout: publish chat-like JSON bodies of exactly BYTES (100..60000;\n"
            "              default: a minimal {\"t\":...} body)\n"
            "  -Z          offer permessage-deflate (client_max_window_bits), fail unless the 101\n"
            "              accepts it, inflate compressed (RSV1) messages\n");
    exit(2);
}

static void addr_resolve(void)
{
    struct sockaddr_in *a4 = (struct sockaddr_in *)&G.addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&G.addr;
    const char *h = G.o.host;
    if (!strcmp(h, "localhost"))
        h = G.o.host = "127.0.0.1";
    memset(&G.addr, 0, sizeof(G.addr));
    if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
        if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127)
            die("refusing %s: the bench only targets loopback (127.0.0.0/8, ::1)", h);
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)G.o.port);
        G.addr_len = sizeof(*a4);
    } else if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr))
            die("refusing %s: the bench only targets loopback (127.0.0.0/8, ::1)", h);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)G.o.port);
        G.addr_len = sizeof(*a6);
    } else {
        die("bad host '%s': give a literal loopback address", h);
    }
    G.pub_addr = G.addr;
    if (G.o.pub_port && G.addr.ss_family == AF_INET)
        ((struct sockaddr_in *)&G.pub_addr)->sin_port = htons((uint16_t)G.o.pub_port);
    else if (G.o.pub_port)
        ((struct sockaddr_in6 *)&G.pub_addr)->sin6_port = htons((uint16_t)G.o.pub_port);
}

static void nofile_raise(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("getrlimit: %s", strerror(errno));
    rlim_t want = (rlim_t)need + 64;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
            /* only root with CAP_SYS_RESOURCE may go past the hard limit */
            struct rlimit up = {want, want};
            if (setrlimit(RLIMIT_NOFILE, &up) == 0)
                return;
        }
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            die("setrlimit: %s", strerror(errno));
    }
    if (rl.rlim_cur < want)
        die("need %ld file descriptors but the hard limit is %ld", (long)want, (long)rl.rlim_max);
}

static double arg_num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < 0)
        die("bad %s '%s'", what, s);
    return v;
}

int main(int argc, char **argv)
{
    struct opts *o = &G.o;
    *o = (struct opts){.mode = MODE_ECHO,
                       .host = "127.0.0.1",
                       .port = 8080,
                       .conns = 1,
                       .window = 1,
                       .size = 32,
                       .secs = 5,
                       .warm = 1,
                       .drain = 5,
                       .rate = 100,
                       .room = "bench",
                       .prefix = ""};
    const char *mode = NULL;
    int ch;
    while ((ch = getopt(argc, argv, "m:H:P:U:c:w:s:d:W:r:D:p:g:Q:k:R:u:bB:ZjEh")) != -1) {
        switch (ch) {
        case 'm':
            mode = optarg;
            break;
        case 'H':
            o->host = optarg;
            break;
        case 'P':
            o->port = (int)arg_num(optarg, "port");
            break;
        case 'U':
            o->path = optarg;
            break;
        case 'c':
            o->conns = (long)arg_num(optarg, "count");
            break;
        case 'w':
            o->window = (long)arg_num(optarg, "window");
            break;
        case 's':
            o->size = (long)arg_num(optarg, "size");
            break;
        case 'd':
            o->secs = arg_num(optarg, "duration");
            break;
        case 'W':
            o->warm = arg_num(optarg, "warm-up");
            break;
        case 'r':
            o->rate = arg_num(optarg, "rate");
            break;
        case 'D':
            o->drain = arg_num(optarg, "drain");
            break;
        case 'p':
            o->pid = (long)arg_num(optarg, "pid");
            break;
        case 'g':
            o->group = (long)arg_num(optarg, "pid");
            break;
        case 'Q':
            o->pub_port = (int)arg_num(optarg, "port");
            break;
        case 'k':
            o->secret = optarg;
            break;
        case 'R':
            o->room = optarg;
            break;
        case 'u':
            o->prefix = optarg;
            break;
        case 'b':
            o->binary = true;
            break;
        case 'B':
            o->body = (long)arg_num(optarg, "body size");
            break;
        case 'Z':
            o->deflate = true;
            break;
        case 'j':
            o->join = true;
            break;
        case 'E':
            o->epoll_only = true;
            break;
        default:
            usage();
        }
    }
    if (!mode || optind != argc)
        usage();
    if (!strcmp(mode, "echo"))
        o->mode = MODE_ECHO;
    else if (!strcmp(mode, "idle"))
        o->mode = MODE_IDLE;
    else if (!strcmp(mode, "fanout"))
        o->mode = MODE_FANOUT;
    else if (!strcmp(mode, "persist"))
        o->mode = MODE_PERSIST;
    else if (!strcmp(mode, "storm"))
        o->mode = MODE_STORM, o->join = true;
    else
        usage();
    if (!o->path)
        o->path = o->mode == MODE_ECHO || o->mode == MODE_IDLE ? "/echo" : "/ws";
    if (o->conns < 1 || o->conns > 1000000 || o->window < 1 || o->window > 100000)
        die("connections must be 1..1000000 and window 1..100000");
    if (o->size < 16 || o->size > 65536)
        die("size must be 16..65536 (the payload starts with a 16-digit timestamp)");
    if (o->body && (o->body < 100 || o->body > 60000 || o->mode != MODE_FANOUT))
        die("-B is for fanout and must be 100..60000");
    if (o->port < 1 || o->port > 65535 || o->secs <= 0 || o->rate <= 0)
        die("port, duration and rate must be positive");
    if ((o->mode == MODE_FANOUT || o->mode == MODE_PERSIST || o->join) && !o->secret)
        die("-k SECRET is required for %s (the chat path needs tokens)", mode);
    if ((o->mode == MODE_IDLE || o->mode == MODE_STORM) && o->pid <= 0)
        die("%s needs -p PID to read the server's RSS", mode);
    if (o->join && o->mode != MODE_IDLE && o->mode != MODE_STORM)
        die("-j is for idle");
    if (o->pid > 0 && proc_rss_kib(o->pid) < 0)
        die("no process %ld", o->pid);
    if (o->group > 0 && proc_rss_kib(o->group) < 0)
        die("no process %ld", o->group);
    if (o->pub_port && (o->mode != MODE_FANOUT || o->pub_port > 65535))
        die("-Q is for fanout and must be a port");
    if ((o->mode == MODE_IDLE || o->mode == MODE_STORM) && o->group > 0)
        die("-g is for echo, fanout and persist");
    addr_resolve();
    signal(SIGPIPE, SIG_IGN);
    if (getrandom(&G.rng, sizeof(G.rng), 0) != sizeof(G.rng) || G.rng == 0)
        G.rng = (uint64_t)now_ns() | 1;
    G.run_nonce = rng_next();

    G.nconns = o->conns + (o->mode == MODE_FANOUT ? 1 : 0);
    nofile_raise(G.nconns);
    G.conns = calloc((size_t)G.nconns, sizeof(*G.conns));
    if (!G.conns)
        die("out of memory");
    for (long i = 0; i < G.nconns; i++) {
        struct conn *c = &G.conns[i];
        c->fd = -1;
        c->idx = (uint32_t)i;
        switch (o->mode) {
        case MODE_ECHO:
            c->role = ROLE_ECHO;
            break;
        case MODE_IDLE:
        case MODE_STORM:
            c->role = ROLE_IDLE;
            break;
        case MODE_FANOUT:
            c->role = i == o->conns ? ROLE_PUBLISHER : ROLE_MEMBER;
            break;
        case MODE_PERSIST:
            c->role = ROLE_SENDER;
            c->sent_ns = calloc((size_t)o->window, sizeof(uint64_t));
            if (!c->sent_ns)
                die("out of memory");
            break;
        }
    }
    G.ep = epoll_create1(EPOLL_CLOEXEC);
    if (G.ep < 0)
        die("epoll_create1: %s", strerror(errno));
    G.server_core = o->pid > 0 ? pinned_core(o->pid) : -1;
    if (o->pid > 0)
        G.rss_before = proc_rss_kib(o->pid);
    G.scratch = xrealloc(NULL, SCRATCH);
    G.echo_tmpl = xrealloc(NULL, (size_t)o->size);
    memset(G.echo_tmpl, 'x', (size_t)o->size);
    G.t_setup = now_ns();
    if (o->mode == MODE_STORM) {
        G.rss_peak = G.rss_before;
        G.next_sample = G.t_cpu0 = G.t_setup;
        if (!proc_cpu(o->pid, &G.cpu_start))
            die("cannot read /proc/%ld/stat", o->pid);
        getrusage(RUSAGE_SELF, &G.ru_start);
    }

    if (o->mode == MODE_FANOUT && !o->epoll_only) {
        fan_ring_on = uring_init(&fan_ring, 512);
        if (!fan_ring_on)
            fprintf(stderr, "loadgen: no io_uring here (%s); fanout reads one socket at a time\n",
                    strerror(errno));
    }
    struct epoll_event evs[512];
    int timeout = 0;
    while (G.phase != PH_DONE) {
        int n = epoll_wait(G.ep, evs, 512, timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        if (fan_ring_on && n > 0)
            n = fanout_reads(evs, n);
        for (int i = 0; i < n; i++)
            conn_event(evs[i].data.ptr, evs[i].events);
        timeout = tick(now_ns());
        if (o->mode == MODE_ECHO && G.phase == PH_RUN && !o->epoll_only && !G.uring &&
            !echo_uring()) {
            fprintf(stderr, "loadgen: no io_uring here (%s); echo runs on epoll\n",
                    strerror(errno));
            o->epoll_only = true;
        }
    }

    /* fanout members ack what they saw so the server's cursors end where the run ended */
    if (o->mode == MODE_FANOUT) {
        for (long i = 0; i < o->conns; i++) {
            struct conn *c = &G.conns[i];
            if (c->state == CS_OPEN && c->unacked) {
                text_send(c, "{\"type\":\"ack\",\"id\":%" PRId64 "}", c->last_id);
                conn_flush(c);
            }
        }
    }
    report();
    fflush(stdout);
    ws_deflate_buf_release(&G.ibuf);
    for (long i = 0; i < G.nconns; i++)
        conn_abort(&G.conns[i]);
    free(G.conns);
    free(G.scratch);
    free(G.echo_tmpl);
    close(G.ep);
    return 0;
}
