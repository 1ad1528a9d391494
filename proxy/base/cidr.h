/*
 * cidr.h -- IPv4/IPv6 address ranges ("10.0.0.0/8, ::1") and membership tests, for trusted_proxies.
 * Pure functions over fixed-size structs; no sockets, no allocation.
 */
#ifndef WSP_CIDR_H
#define WSP_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CIDR_MAX 32      /* entries in one list */
#define CIDR_ADDR_STRLEN 46 /* INET6_ADDRSTRLEN: longest text form + NUL */

/*
 * One address in binary form. An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is stored as the IPv4
 * address it maps, so a dual-stack socket's peer matches IPv4 entries.
 */
struct cidr_addr {
    int family;       /* 4 or 6 */
    uint8_t bytes[16]; /* network order; only the first 4 are used for IPv4 */
};

struct cidr {
    struct cidr_addr net; /* host bits are zero */
    unsigned bits;        /* prefix length: 0..32 (IPv4) or 0..128 (IPv6) */
};

struct cidr_list {
    struct cidr items[CIDR_MAX];
    size_t n;
};

/*
 * Parse s[0..len) as one IPv4 or IPv6 address (inet_pton syntax; no port, no zone, optional [brackets]
 * around IPv6). Returns 0, or -1 when it is not an address.
 */
int cidr_addr_parse(const char *s, size_t len, struct cidr_addr *out);

/* Write the canonical text form (inet_ntop) of a into out; returns 0, or -1 if cap is too small. */
int cidr_addr_format(const struct cidr_addr *a, char *out, size_t cap);

/*
 * Parse a list of entries separated by commas and/or whitespace: "127.0.0.1/32, 10.0.0.0/8 ::1
 * fd00::/8". A bare address is a host route (/32 or /128); host bits below the prefix are ignored
 * ("10.1.2.3/8" is 10.0.0.0/8). An empty or NULL text gives an empty list. Returns 0, or -1 with a
 * message naming the bad entry in err (errlen bytes, may be NULL). On error *l is empty.
 */
int cidr_list_parse(struct cidr_list *l, const char *text, char *err, size_t errlen);

/* Whether a falls in any entry of l (families compared after IPv4-mapped unwrapping). */
bool cidr_list_has(const struct cidr_list *l, const struct cidr_addr *a);

/* Same for an address in text form; false when addr is NULL or not an address. */
bool cidr_list_match(const struct cidr_list *l, const char *addr);

#endif
