/*
 * auth.h -- who is connecting: JWT verification (libjwt), `?user=` behind trusted proxies, user-id
 * rules and the client address seen through X-Forwarded-For. Works on parsed requests; no I/O but
 * reading the public key file in auth_init.
 */
#ifndef WSP_AUTH_H
#define WSP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/cidr.h"
#include "proto/http1.h"

#define AUTH_USER_MAX 64     /* bytes of UTF-8 in a user id */
#define AUTH_TOKEN_MAX 8192  /* longer tokens are refused before decoding */
#define AUTH_SECRET_MIN_RECOMMENDED 32 /* HS256 secrets shorter than this deserve a warning */

enum auth_mode {
    AUTH_MODE_TOKEN = 1 << 0, /* JWT from ?token=, Authorization: Bearer, or the cookie */
    AUTH_MODE_QUERY = 1 << 1  /* ?user=NAME from a trusted proxy that authenticated already */
};

enum auth_alg {
    AUTH_ALG_HS256 = 1,
    AUTH_ALG_RS256,
    AUTH_ALG_ES256
};

/* The [auth] section as written in the config file; strings are borrowed only during auth_init. */
struct auth_settings {
    const char *mode;            /* "token" (NULL/"" = this), "query", "token,query" */
    const char *jwt_alg;         /* "HS256" (NULL/"" = this), "RS256", "ES256" */
    const char *jwt_secret;      /* HS256 key */
    const char *jwt_public_key;  /* RS256/ES256: path of a PEM "PUBLIC KEY" file */
    int64_t leeway_ms;           /* clock skew allowed on exp and nbf */
    const char *jwt_cookie;      /* cookie carrying the token; NULL or "" = none */
    const char *trusted_proxies; /* CIDR list, see cidr_list_parse */
};

/* Ready-to-use state; owns copies of the secret and key. Read-only after auth_init. */
struct auth {
    unsigned modes; /* enum auth_mode bits */
    enum auth_alg alg;
    unsigned char *key; /* HS256 secret or PEM text, NUL-terminated; NULL in query-only mode */
    size_t key_len;
    bool has_secret;    /* an HS256 secret is configured (auth_issue_token can sign) */
    int64_t leeway_ms;
    char *cookie_name;  /* NULL = no cookie source */
    struct cidr_list trusted;
};

enum auth_method {
    AUTH_BY_TOKEN = 1,
    AUTH_BY_QUERY
};

#define AUTH_ROOMS_MAX 32 /* patterns in a token's rooms claim */

struct auth_identity {
    char user[AUTH_USER_MAX + 1]; /* NUL-terminated; valid per auth_user_valid */
    int64_t exp_ms;               /* token's exp in ms since the epoch (no leeway added); 0 = none */
    enum auth_method method;
    /*
     * The token's "rooms" claim: room names and prefix patterns ("team-*"; "*" is every room) the
     * backend lets this user join. has_rooms is false without the claim (query identities too).
     */
    bool has_rooms;
    size_t num_rooms;
    char rooms[AUTH_ROOMS_MAX][AUTH_USER_MAX + 2];
};

/* Whether room matches one of the patterns: equal, or a "prefix*" it starts with ("*": all). */
bool auth_room_pattern_match(const char *const *patterns, size_t n, const char *room);
/* The same over an identity's claim (false without one). */
bool auth_rooms_allow(const struct auth_identity *id, const char *room);

/* "token", "query", "token,query" (also "query,token", spaces allowed) -> enum auth_mode bits, or -1. */
int auth_mode_parse(const char *s);

/* "HS256", "RS256", "ES256" -> enum auth_alg, or -1. */
int auth_alg_parse(const char *s);

/*
 * Check and load settings. Token mode needs: HS256 with a non-empty secret, or RS256/ES256 with a
 * readable PEM public key of that type (RSA >= 2048 bits; EC on P-256); with those a jwt_secret is
 * ignored. Query mode needs trusted_proxies. Returns 0, or -1 with a message in err (errlen bytes);
 * on failure nothing needs freeing. Call auth_release when done.
 */
int auth_init(struct auth *a, const struct auth_settings *s, char *err, size_t errlen);

/* Release what auth_init allocated (the secret is wiped first). Safe on a zeroed or freed struct. */
void auth_release(struct auth *a);

/* Whether s[0..len) is an acceptable user id: 1..64 bytes, valid UTF-8, no C0, DEL or C1 controls. */
bool auth_user_valid(const char *s, size_t len);

/*
 * Verify a JWT (NUL-terminated) against the configured algorithm and key at time now_ms (ms since the
 * epoch). The header's alg must equal the configured one (so "none" and HS256-signed-with-the-public-
 * key are refused); sub must be a valid user id; exp, when present, must satisfy now < exp + leeway;
 * nbf, when present, now + leeway >= nbf. Returns 0 and fills *out, or -1 with a short reason in why
 * (never containing the token).
 */
int auth_verify_token(const struct auth *a, const char *token, int64_t now_ms,
                      struct auth_identity *out, char *why, size_t whylen);

/*
 * Identify the user of an upgrade request; peer_addr is the TCP peer's address in text form.
 * Token mode: the first token found among the `token` query parameter, `Authorization: Bearer`, and
 * the configured cookie is verified (an invalid one fails; later sources are not tried).
 * Query mode: `?user=NAME` is accepted only if peer_addr is in trusted_proxies. With both modes a
 * token, when present, decides; otherwise ?user= is used, and from an untrusted peer it is an error.
 * Returns 0 and fills *out, or -1 with the reason for a 401 in why (no secrets in it).
 */
int auth_identify(const struct auth *a, const struct http_req *req, const char *peer_addr,
                  int64_t now_ms, struct auth_identity *out, char *why, size_t whylen);

/*
 * Sign an HS256 token for user (sub, iat, exp = now + ttl rounded up to a second) into out (cap
 * bytes, NUL-terminated). For the demo page. Returns the token's length, or -1 (why: not HS256, no
 * secret, invalid user, ttl <= 0, or does not fit).
 */
int auth_issue_token(const struct auth *a, const char *user, int64_t ttl_ms, int64_t now_ms,
                     char *out, size_t cap);

/*
 * The client's address for logs and per-IP limits, NUL-terminated in out (cap >= CIDR_ADDR_STRLEN
 * recommended). Headers are believed only when peer_addr is a trusted proxy: then X-Forwarded-For
 * is read from the right, skipping addresses that are themselves trusted, and the first untrusted
 * one is the client (all trusted: the leftmost). An entry that is not an IP address stops the walk
 * and the peer is used, since nothing left of it can be trusted. Without X-Forwarded-For, X-Real-IP
 * is used if it is an address. Otherwise, and for untrusted peers, peer_addr itself. Returns 0, or -1
 * when the result did not fit (out is then "").
 */
int auth_client_addr(const struct auth *a, const struct http_req *req, const char *peer_addr,
                     char *out, size_t cap);

#endif
