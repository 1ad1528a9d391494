/*
 * cidr.c -- IPv4/IPv6 range lists for trusted_proxies: text parsing with inet_pton, prefix matching.
 */
#include "base/cidr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int cidr_addr_parse(const char *s, size_t len, struct cidr_addr *out)
{
    char buf[CIDR_ADDR_STRLEN];

    if (s == NULL)
        return -1;
    if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
        s++;
        len -= 2;
    }
    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';

    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, buf, out->bytes) == 1) {
        out->family = 4;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, out->bytes) == 1) {
        out->family = 6;
        if (memcmp(out->bytes, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0) {
            memmove(out->bytes, out->bytes + 12, 4);
            memset(out->bytes + 4, 0, 12);
            out->family = 4;
        }
        return 0;
    }
    return -1;
}

int cidr_addr_format(const struct cidr_addr *a, char *out, size_t cap)
{
    int af = a->family == 4 ? AF_INET : AF_INET6;

    if (cap > (size_t)CIDR_ADDR_STRLEN)
        cap = CIDR_ADDR_STRLEN;
    return inet_ntop(af, a->bytes, out, (socklen_t)cap) != NULL ? 0 : -1;
}

/* Clear every bit of a at or after position bits. */
static void mask_bits(struct cidr_addr *a, unsigned bits)
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned lo = i * 8;
        if (bits <= lo)
            a->bytes[i] = 0;
        else if (bits < lo + 8)
            a->bytes[i] &= (uint8_t)(0xff << (lo + 8 - bits));
    }
}

static bool prefix_equal(const struct cidr_addr *a, const struct cidr_addr *net, unsigned bits)
{
    unsigned full = bits / 8, rest = bits % 8;

    if (memcmp(a->bytes, net->bytes, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t m = (uint8_t)(0xff << (8 - rest));
    return (a->bytes[full] & m) == net->bytes[full];
}

/*
 * Parse one entry s[0..len) into c. A mapped entry "::ffff:10.0.0.0/104" becomes 10.0.0.0/8, the
 * same range the way cidr_addr_parse sees peers.
 */
static int parse_entry(const char *s, size_t len, struct cidr *c)
{
    const char *slash = memchr(s, '/', len);
    size_t alen = slash != NULL ? (size_t)(slash - s) : len;
    bool v6_text;
    unsigned max, bits;

    if (cidr_addr_parse(s, alen, &c->net) != 0)
        return -1;
    /* cidr_addr_parse unwraps mapped addresses; the prefix is relative to what was written */
    v6_text = memchr(s, ':', alen) != NULL;
    max = v6_text ? 128 : 32;
    bits = max;
    if (slash != NULL) {
        const char *p = slash + 1, *end = s + len;
        if (p == end || end - p > 3)
            return -1;
        bits = 0;
        for (; p < end; p++) {
            if (*p < '0' || *p > '9')
                return -1;
            bits = bits * 10 + (unsigned)(*p - '0');
        }
        if (bits > max)
            return -1;
    }
    if (v6_text && c->net.family == 4) {
        /* a mapped range shorter than the ::ffff:0:0/96 prefix spans non-IPv4 space: refuse it */
        if (bits < 96)
            return -1;
        bits -= 96;
    }
    c->bits = bits;
    mask_bits(&c->net, bits);
    return 0;
}

static bool is_sep(char ch)
{
    return ch == ',' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

int cidr_list_parse(struct cidr_list *l, const char *text, char *err, size_t errlen)
{
    const char *p = text;

    memset(l, 0, sizeof(*l));
    if (text == NULL)
        return 0;
    while (*p != '\0') {
        const char *start;
        size_t len;

        while (*p != '\0' && is_sep(*p))
            p++;
        if (*p == '\0')
            break;
        start = p;
        while (*p != '\0' && !is_sep(*p))
            p++;
        len = (size_t)(p - start);
        if (l->n == CIDR_MAX) {
            if (err != NULL)
                snprintf(err, errlen, "too many entries (at most %d): \"%.*s\"", CIDR_MAX,
                         (int)(len > 64 ? 64 : len), start);
            memset(l, 0, sizeof(*l));
            return -1;
        }
        if (parse_entry(start, len, &l->items[l->n]) != 0) {
            if (err != NULL)
                snprintf(err, errlen, "bad address or range \"%.*s%s\"", (int)(len > 64 ? 64 : len),
                         start, len > 64 ? "..." : "");
            memset(l, 0, sizeof(*l));
            return -1;
        }
        l->n++;
    }
    return 0;
}

bool cidr_list_has(const struct cidr_list *l, const struct cidr_addr *a)
{
    for (size_t i = 0; i < l->n; i++) {
        const struct cidr *c = &l->items[i];
        if (c->net.family == a->family && prefix_equal(a, &c->net, c->bits))
            return true;
    }
    return false;
}

bool cidr_list_match(const struct cidr_list *l, const char *addr)
{
    struct cidr_addr a;

    if (addr == NULL || cidr_addr_parse(addr, strlen(addr), &a) != 0)
        return false;
    return cidr_list_has(l, &a);
}
