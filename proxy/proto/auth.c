/*
 * auth.c -- JWT checks on top of libjwt 1.10, query identities from trusted proxies, user-id rules,
 * and the client address behind X-Forwarded-For. Decides; the caller answers 401 and logs.
 */
#include "proto/auth.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "base/utf8.h"

#define KEY_FILE_MAX (64 * 1024) /* a public key PEM is a few KiB at most */
#define JWT_HEADER_MAX 1024      /* base64url text of the JOSE header we are willing to look at */

static void set_msg(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_msg(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (buf == NULL || cap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

static const char *alg_name(enum auth_alg alg)
{
    switch (alg) {
    case AUTH_ALG_HS256:
        return "HS256";
    case AUTH_ALG_RS256:
        return "RS256";
    case AUTH_ALG_ES256:
        return "ES256";
    }
    return "?";
}

static jwt_alg_t alg_jwt(enum auth_alg alg)
{
    switch (alg) {
    case AUTH_ALG_HS256:
        return JWT_ALG_HS256;
    case AUTH_ALG_RS256:
        return JWT_ALG_RS256;
    case AUTH_ALG_ES256:
        return JWT_ALG_ES256;
    }
    return JWT_ALG_INVAL;
}

/* ---- Settings ---- */

int auth_mode_parse(const char *s)
{
    int modes = 0;

    if (s == NULL)
        return -1;
    for (;;) {
        const char *b, *e;

        while (*s == ' ' || *s == '\t')
            s++;
        b = s;
        while (*s != '\0' && *s != ',' && *s != ' ' && *s != '\t')
            s++;
        e = s;
        while (*s == ' ' || *s == '\t')
            s++;
        if (e - b == 5 && strncasecmp(b, "token", 5) == 0)
            modes |= AUTH_MODE_TOKEN;
        else if (e - b == 5 && strncasecmp(b, "query", 5) == 0)
            modes |= AUTH_MODE_QUERY;
        else
            return -1;
        if (*s == '\0')
            return modes;
        if (*s != ',')
            return -1;
        s++;
    }
}

int auth_alg_parse(const char *s)
{
    static const enum auth_alg algs[] = {AUTH_ALG_HS256, AUTH_ALG_RS256, AUTH_ALG_ES256};

    if (s == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        if (strcasecmp(s, alg_name(algs[i])) == 0)
            return (int)algs[i];
    }
    return -1;
}

/* Read a whole small file, NUL-terminated. Returns a malloc'd buffer or NULL with err set. */
static unsigned char *read_key_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    size_t n;

    if (f == NULL) {
        set_msg(err, errlen, "jwt_public_key %s: %s", path, strerror(errno));
        return NULL;
    }
    buf = malloc(KEY_FILE_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        set_msg(err, errlen, "jwt_public_key %s: out of memory", path);
        return NULL;
    }
    n = fread(buf, 1, KEY_FILE_MAX + 1, f);
    if (ferror(f) || n > KEY_FILE_MAX) {
        set_msg(err, errlen, "jwt_public_key %s: %s", path,
                ferror(f) ? "read error" : "larger than 64 KiB, not a public key");
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/*
 * libjwt 1.10 reads the key with PEM_read_bio_PUBKEY at every verification and fails every token
 * when it is wrong; check it once here so a bad file stops the start instead.
 */
static int check_public_key(const unsigned char *pem, size_t len, enum auth_alg alg, const char *path,
                            char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pkey = bio != NULL ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    int rc = -1;

    BIO_free(bio);
    ERR_clear_error();
    if (pkey == NULL) {
        set_msg(err, errlen,
                "jwt_public_key %s: no PEM public key (want \"-----BEGIN PUBLIC KEY-----\"; "
                "`openssl pkey -pubout` makes one)",
                path);
        return -1;
    }
    if (alg == AUTH_ALG_RS256) {
        if (!EVP_PKEY_is_a(pkey, "RSA"))
            set_msg(err, errlen, "jwt_public_key %s: RS256 needs an RSA key", path);
        else if (EVP_PKEY_get_bits(pkey) < 2048)
            set_msg(err, errlen, "jwt_public_key %s: RSA key of %d bits, at least 2048 needed", path,
                    EVP_PKEY_get_bits(pkey));
        else
            rc = 0;
    } else {
        char group[64] = "";
        if (!EVP_PKEY_is_a(pkey, "EC"))
            set_msg(err, errlen, "jwt_public_key %s: ES256 needs an EC key", path);
        else if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL) != 1 ||
                 strcmp(group, "prime256v1") != 0)
            set_msg(err, errlen, "jwt_public_key %s: ES256 needs a P-256 key, not %s", path,
                    group[0] != '\0' ? group : "this curve");
        else
            rc = 0;
    }
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return rc;
}

/*
 * Sign and verify one token with the configured secret, as a client's would be: a libjwt or
 * OpenSSL that cannot do HS256 stops the start with a clear error instead of refusing every client.
 * It also has OpenSSL load its provider and HMAC code now: about 2 MB of libcrypto pages that the
 * first client's verification faulted in otherwise (seen as RSS growth under the first load).
 * The clock is fixed: the token is made and checked at the same instant.
 */
static int self_test_hs256(const struct auth *a, char *err, size_t errlen)
{
    char tok[512], why[160];
    struct auth_identity id;
    const int64_t at_ms = 1000000000000; /* 2001-09-09 */
    if (auth_issue_token(a, "wsproxy-self-test", 60000, at_ms, tok, sizeof(tok)) <= 0) {
        set_msg(err, errlen, "jwt_alg HS256: libjwt could not sign a self-test token");
        return -1;
    }
    if (auth_verify_token(a, tok, at_ms, &id, why, sizeof(why)) != 0 ||
        strcmp(id.user, "wsproxy-self-test") != 0) {
        set_msg(err, errlen, "jwt_alg HS256: a self-test token did not verify (%s)", why);
        return -1;
    }
    return 0;
}

int auth_init(struct auth *a, const struct auth_settings *s, char *err, size_t errlen)
{
    const char *mode = s->mode != NULL && s->mode[0] != '\0' ? s->mode : "token";
    const char *alg = s->jwt_alg != NULL && s->jwt_alg[0] != '\0' ? s->jwt_alg : "HS256";
    char why[160];
    int m, al;

    memset(a, 0, sizeof(*a));
    m = auth_mode_parse(mode);
    if (m < 0) {
        set_msg(err, errlen, "mode \"%s\": want token, query or token,query", mode);
        return -1;
    }
    al = auth_alg_parse(alg);
    if (al < 0) {
        set_msg(err, errlen, "jwt_alg \"%s\": want HS256, RS256 or ES256", alg);
        return -1;
    }
    if (s->leeway_ms < 0) {
        set_msg(err, errlen, "jwt_leeway must not be negative");
        return -1;
    }
    a->modes = (unsigned)m;
    a->alg = (enum auth_alg)al;
    a->leeway_ms = s->leeway_ms;
    if (cidr_list_parse(&a->trusted, s->trusted_proxies, why, sizeof(why)) != 0) {
        set_msg(err, errlen, "trusted_proxies: %s", why);
        return -1;
    }
    if ((a->modes & AUTH_MODE_QUERY) && a->trusted.n == 0) {
        set_msg(err, errlen, "mode query needs trusted_proxies (the proxies that set ?user=)");
        return -1;
    }
    if (a->alg == AUTH_ALG_HS256) {
        size_t n = s->jwt_secret != NULL ? strlen(s->jwt_secret) : 0;
        /*
         * libjwt 1.10 skips signature checks when given an empty key, so an empty secret would
         * accept any HS256 token: it is an error even when only the demo page would use it.
         */
        if (n == 0 && (a->modes & AUTH_MODE_TOKEN)) {
            set_msg(err, errlen, "jwt_alg HS256 needs jwt_secret");
            return -1;
        }
        if (n > 0) {
            if (n > INT_MAX) {
                set_msg(err, errlen, "jwt_secret too long");
                return -1;
            }
            a->key = (unsigned char *)strdup(s->jwt_secret);
            if (a->key == NULL)
                goto oom;
            a->key_len = n;
            a->has_secret = true;
        }
    } else if (a->modes & AUTH_MODE_TOKEN) {
        if (s->jwt_public_key == NULL || s->jwt_public_key[0] == '\0') {
            set_msg(err, errlen, "jwt_alg %s needs jwt_public_key", alg_name(a->alg));
            return -1;
        }
        a->key = read_key_file(s->jwt_public_key, &a->key_len, err, errlen);
        if (a->key == NULL)
            return -1;
        if (check_public_key(a->key, a->key_len, a->alg, s->jwt_public_key, err, errlen) != 0) {
            auth_release(a);
            return -1;
        }
    }
    if (s->jwt_cookie != NULL && s->jwt_cookie[0] != '\0') {
        a->cookie_name = strdup(s->jwt_cookie);
        if (a->cookie_name == NULL)
            goto oom;
    }
    if (a->alg == AUTH_ALG_HS256 && a->has_secret && (a->modes & AUTH_MODE_TOKEN) &&
        self_test_hs256(a, err, errlen) != 0) {
        auth_release(a);
        return -1;
    }
    return 0;
oom:
    auth_release(a);
    set_msg(err, errlen, "out of memory");
    return -1;
}

void auth_release(struct auth *a)
{
    if (a->key != NULL)
        OPENSSL_cleanse(a->key, a->key_len);
    free(a->key);
    a->key = NULL;
    a->key_len = 0;
    a->has_secret = false;
    free(a->cookie_name);
    a->cookie_name = NULL;
}

/* ---- User ids ---- */

bool auth_user_valid(const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;

    if (s == NULL || len == 0 || len > AUTH_USER_MAX)
        return false;
    if (!utf8_valid(p, len))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f)
            return false;
        /* U+0080..U+009F are encoded as C2 80..C2 9F in valid UTF-8 */
        if (p[i] == 0xc2 && i + 1 < len && p[i + 1] <= 0x9f)
            return false;
    }
    return true;
}

/* ---- Tokens ---- */

static int b64url_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decode unpadded base64url s[0..len) into out (cap bytes). Returns the decoded length or -1. */
static long b64url_decode(const char *s, size_t len, unsigned char *out, size_t cap)
{
    uint32_t acc = 0;
    unsigned nbits = 0;
    size_t o = 0;

    if (len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_val(s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        nbits += 6;
        if (nbits >= 8) {
            nbits -= 8;
            if (o == cap)
                return -1;
            out[o++] = (unsigned char)(acc >> nbits);
            acc &= (1u << nbits) - 1;
        }
    }
    return (long)o;
}

/*
 * Read the JOSE header's alg ourselves before handing the token to libjwt: the configured algorithm
 * decides which verification runs, never the token (RFC 8725 §3.1). Returns 0 if alg equals want.
 */
static int check_header_alg(const char *token, enum auth_alg want, char *why, size_t whylen)
{
    const char *dot = strchr(token, '.');
    unsigned char buf[JWT_HEADER_MAX];
    json_t *hdr, *alg;
    long n;
    int rc = -1;

    if (dot == NULL || (size_t)(dot - token) > JWT_HEADER_MAX) {
        set_msg(why, whylen, "malformed token");
        return -1;
    }
    n = b64url_decode(token, (size_t)(dot - token), buf, sizeof(buf));
    hdr = n > 0 ? json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL) : NULL;
    alg = json_is_object(hdr) ? json_object_get(hdr, "alg") : NULL;
    if (!json_is_string(alg))
        set_msg(why, whylen, "malformed token");
    else if (strcmp(json_string_value(alg), alg_name(want)) != 0)
        set_msg(why, whylen, "token algorithm not allowed");
    else
        rc = 0;
    json_decref(hdr);
    return rc;
}

static int64_t add_sat(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

/* RFC 7519 NumericDate (seconds, possibly fractional) -> ms, saturated. Returns 0 or -1. */
static int numeric_date_ms(const json_t *v, int64_t *ms)
{
    if (json_is_integer(v)) {
        json_int_t s = json_integer_value(v);
        if (s > INT64_MAX / 1000)
            *ms = INT64_MAX;
        else if (s < INT64_MIN / 1000)
            *ms = INT64_MIN;
        else
            *ms = (int64_t)s * 1000;
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v) * 1000.0;
        if (isnan(d))
            return -1;
        if (d >= 9.2e18)
            *ms = INT64_MAX;
        else if (d <= -9.2e18)
            *ms = INT64_MIN;
        else
            *ms = (int64_t)d;
        return 0;
    }
    return -1;
}

/* Apply the claim rules to a verified token's claims. */
static int check_claims(const struct auth *a, json_t *claims, int64_t now_ms,
                        struct auth_identity *out, char *why, size_t whylen)
{
    json_t *sub = json_object_get(claims, "sub");
    json_t *exp = json_object_get(claims, "exp");
    json_t *nbf = json_object_get(claims, "nbf");
    int64_t exp_ms = 0, nbf_ms = 0;
    size_t len;

    if (sub == NULL) {
        set_msg(why, whylen, "token has no sub");
        return -1;
    }
    len = json_string_length(sub);
    if (!json_is_string(sub) || !auth_user_valid(json_string_value(sub), len)) {
        set_msg(why, whylen, "token sub is not a valid user id");
        return -1;
    }
    if (exp != NULL && numeric_date_ms(exp, &exp_ms) != 0) {
        set_msg(why, whylen, "token exp is not a number");
        return -1;
    }
    if (nbf != NULL && numeric_date_ms(nbf, &nbf_ms) != 0) {
        set_msg(why, whylen, "token nbf is not a number");
        return -1;
    }
    /* RFC 7519 §4.1.4: the current time MUST be before exp, so the leeway's last ms is excluded */
    if (exp != NULL && now_ms >= add_sat(exp_ms, a->leeway_ms)) {
        set_msg(why, whylen, "token expired");
        return -1;
    }
    if (nbf != NULL && add_sat(now_ms, a->leeway_ms) < nbf_ms) {
        set_msg(why, whylen, "token not yet valid");
        return -1;
    }
    json_t *rooms = json_object_get(claims, "rooms");
    if (rooms != NULL) {
        size_t i;
        json_t *r;
        if (!json_is_array(rooms) || json_array_size(rooms) > AUTH_ROOMS_MAX) {
            set_msg(why, whylen, "token rooms claim must be a list of at most 32 room patterns");
            return -1;
        }
        json_array_foreach(rooms, i, r)
        {
            const char *p = json_string_value(r);
            size_t plen = p ? json_string_length(r) : 0;
            /* a name, or a name's prefix followed by one '*' */
            size_t base = plen && p[plen - 1] == '*' ? plen - 1 : plen;
            if (!p || plen == 0 || plen > AUTH_USER_MAX + 1 ||
                (base > 0 && !auth_user_valid(p, base)) || memchr(p, '*', base)) {
                set_msg(why, whylen, "token rooms claim has an invalid room pattern");
                return -1;
            }
            memcpy(out->rooms[i], p, plen);
            out->rooms[i][plen] = '\0';
        }
        out->has_rooms = true;
        out->num_rooms = json_array_size(rooms);
    }
    memcpy(out->user, json_string_value(sub), len);
    out->user[len] = '\0';
    /* 0 means "no exp"; a real exp of 0 or less was refused above for any sane now */
    out->exp_ms = exp != NULL ? (exp_ms > 0 ? exp_ms : 1) : 0;
    out->method = AUTH_BY_TOKEN;
    return 0;
}

bool auth_room_pattern_match(const char *const *patterns, size_t n, const char *room)
{
    size_t rlen = strlen(room);
    for (size_t i = 0; i < n; i++) {
        const char *p = patterns[i];
        size_t plen = strlen(p);
        if (plen && p[plen - 1] == '*') {
            if (rlen >= plen - 1 && memcmp(room, p, plen - 1) == 0)
                return true;
        } else if (plen == rlen && memcmp(room, p, rlen) == 0) {
            return true;
        }
    }
    return false;
}

bool auth_rooms_allow(const struct auth_identity *id, const char *room)
{
    const char *list[AUTH_ROOMS_MAX];
    for (size_t i = 0; i < id->num_rooms; i++)
        list[i] = id->rooms[i];
    return id->has_rooms && auth_room_pattern_match(list, id->num_rooms, room);
}

int auth_verify_token(const struct auth *a, const char *token, int64_t now_ms,
                      struct auth_identity *out, char *why, size_t whylen)
{
    jwt_t *jwt = NULL;
    char *grants = NULL;
    json_t *claims = NULL;
    size_t tlen;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    /* libjwt 1.10 accepts any HS256 token unchecked when the key is NULL or empty */
    if (!(a->modes & AUTH_MODE_TOKEN) || a->key == NULL || a->key_len == 0) {
        set_msg(why, whylen, "token authentication is not configured");
        return -1;
    }
    tlen = token != NULL ? strlen(token) : 0;
    if (tlen == 0) {
        set_msg(why, whylen, "missing token");
        return -1;
    }
    if (tlen > AUTH_TOKEN_MAX) {
        set_msg(why, whylen, "token too long");
        return -1;
    }
    if (check_header_alg(token, a->alg, why, whylen) != 0)
        return -1;
    if (jwt_decode(&jwt, token, a->key, (int)a->key_len) != 0 || jwt == NULL) {
        set_msg(why, whylen, "invalid token");
        goto done;
    }
    /* belt and braces: what libjwt verified with must be what we configured */
    if (jwt_get_alg(jwt) != alg_jwt(a->alg)) {
        set_msg(why, whylen, "token algorithm not allowed");
        goto done;
    }
    grants = jwt_get_grants_json(jwt, NULL);
    claims = grants != NULL ? json_loads(grants, 0, NULL) : NULL;
    if (!json_is_object(claims)) {
        set_msg(why, whylen, "invalid token claims");
        goto done;
    }
    rc = check_claims(a, claims, now_ms, out, why, whylen);
done:
    json_decref(claims);
    free(grants);
    jwt_free(jwt);
    ERR_clear_error();
    if (rc != 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

int auth_issue_token(const struct auth *a, const char *user, int64_t ttl_ms, int64_t now_ms,
                     char *out, size_t cap)
{
    jwt_t *jwt = NULL;
    char *tok = NULL;
    size_t n;
    int rc = -1;

    if (cap > 0)
        out[0] = '\0';
    if (a->alg != AUTH_ALG_HS256 || !a->has_secret || user == NULL ||
        !auth_user_valid(user, strlen(user)) || ttl_ms <= 0 || now_ms < 0)
        return -1;
    if (jwt_new(&jwt) != 0)
        return -1;
    if (jwt_set_alg(jwt, JWT_ALG_HS256, a->key, (int)a->key_len) != 0 ||
        jwt_add_grant(jwt, "sub", user) != 0 ||
        jwt_add_grant_int(jwt, "iat", (long)(now_ms / 1000)) != 0 ||
        jwt_add_grant_int(jwt, "exp", (long)((add_sat(now_ms, ttl_ms) + 999) / 1000)) != 0)
        goto done;
    tok = jwt_encode_str(jwt);
    if (tok == NULL)
        goto done;
    n = strlen(tok);
    if (n < cap && n <= INT_MAX) {
        memcpy(out, tok, n + 1);
        rc = (int)n;
    }
done:
    free(tok);
    jwt_free(jwt);
    return rc;
}

/* ---- Identity of an upgrade request ---- */

static bool name_is(const struct http_header *h, const char *name)
{
    return strlen(name) == h->name_len && strncasecmp(h->name, name, h->name_len) == 0;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/*
 * Find the token. Returns 1 with tok filled, 0 when no source has one, -1 when a source has one we
 * cannot take (why set).
 */
static int find_token(const struct auth *a, const struct http_req *req, char *tok, size_t cap,
                      char *why, size_t whylen)
{
    int n = http_query_param(req->query, req->query_len, "token", tok, cap);

    if (n > 0)
        return 1;
    if (n == -2) {
        set_msg(why, whylen, "bad token parameter");
        return -1;
    }
    /* RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive */
    const struct http_header *h = http_req_header(req, "Authorization");
    if (h != NULL && h->value_len > 7 && strncasecmp(h->value, "Bearer ", 7) == 0) {
        size_t b = 7, e = h->value_len;
        while (b < e && is_ows(h->value[b]))
            b++;
        while (e > b && is_ows(h->value[e - 1]))
            e--;
        if (e > b) {
            if (e - b >= cap) {
                set_msg(why, whylen, "token too long");
                return -1;
            }
            memcpy(tok, h->value + b, e - b);
            tok[e - b] = '\0';
            return 1;
        }
    }
    if (a->cookie_name == NULL)
        return 0;
    for (size_t i = 0; i < req->num_headers; i++) {
        h = &req->headers[i];
        if (!name_is(h, "Cookie"))
            continue;
        n = http_cookie_value(h->value, h->value_len, a->cookie_name, tok, cap);
        if (n > 0)
            return 1;
        if (n == -2) {
            set_msg(why, whylen, "bad token cookie");
            return -1;
        }
    }
    return 0;
}

int auth_identify(const struct auth *a, const struct http_req *req, const char *peer_addr,
                  int64_t now_ms, struct auth_identity *out, char *why, size_t whylen)
{
    char tok[AUTH_TOKEN_MAX + 1];
    char user[AUTH_USER_MAX + 1];
    int n;

    memset(out, 0, sizeof(*out));
    if (a->modes & AUTH_MODE_TOKEN) {
        int found = find_token(a, req, tok, sizeof(tok), why, whylen);
        int rc;
        if (found < 0)
            return -1;
        if (found > 0) {
            rc = auth_verify_token(a, tok, now_ms, out, why, whylen);
            OPENSSL_cleanse(tok, sizeof(tok));
            return rc;
        }
    }
    if (!(a->modes & AUTH_MODE_QUERY)) {
        set_msg(why, whylen, "missing token");
        return -1;
    }
    n = http_query_param(req->query, req->query_len, "user", user, sizeof(user));
    if (n == -1) {
        set_msg(why, whylen, (a->modes & AUTH_MODE_TOKEN) ? "missing token or user" : "missing user");
        return -1;
    }
    if (!cidr_list_match(&a->trusted, peer_addr)) {
        set_msg(why, whylen, "query identity from untrusted peer");
        return -1;
    }
    if (n < 0 || !auth_user_valid(user, (size_t)n)) {
        set_msg(why, whylen, "invalid user id");
        return -1;
    }
    memcpy(out->user, user, (size_t)n + 1);
    out->exp_ms = 0;
    out->method = AUTH_BY_QUERY;
    return 0;
}

/* ---- Client address behind proxies ---- */

static int put_addr(const struct cidr_addr *ca, char *out, size_t cap)
{
    if (cidr_addr_format(ca, out, cap) == 0)
        return 0;
    if (cap > 0)
        out[0] = '\0';
    return -1;
}

static int put_peer(const char *peer_addr, char *out, size_t cap)
{
    struct cidr_addr ca;
    size_t n;

    if (peer_addr == NULL)
        peer_addr = "";
    if (cidr_addr_parse(peer_addr, strlen(peer_addr), &ca) == 0)
        return put_addr(&ca, out, cap);
    n = strlen(peer_addr);
    if (n >= cap) {
        if (cap > 0)
            out[0] = '\0';
        return -1;
    }
    memcpy(out, peer_addr, n + 1);
    return 0;
}

static void trim(const char *s, size_t *b, size_t *e)
{
    while (*b < *e && is_ows(s[*b]))
        (*b)++;
    while (*e > *b && is_ows(s[*e - 1]))
        (*e)--;
}

int auth_client_addr(const struct auth *a, const struct http_req *req, const char *peer_addr,
                     char *out, size_t cap)
{
    struct cidr_addr cand = {0};
    bool seen_xff = false;
    const struct http_header *h;

    if (!cidr_list_match(&a->trusted, peer_addr))
        return put_peer(peer_addr, out, cap);

    /*
     * Each proxy appends the address it saw, so only the right end was written by proxies we trust;
     * anything left of the first untrusted hop is the client's own claim. Several header lines
     * form one list (RFC 9110 §5.3), last line rightmost.
     */
    for (size_t i = req->num_headers; i-- > 0;) {
        h = &req->headers[i];
        if (!name_is(h, "X-Forwarded-For"))
            continue;
        seen_xff = true;
        size_t end = h->value_len;
        for (;;) {
            size_t b = end, e = end;
            while (b > 0 && h->value[b - 1] != ',')
                b--;
            size_t next = b;
            trim(h->value, &b, &e);
            if (cidr_addr_parse(h->value + b, e - b, &cand) != 0)
                return put_peer(peer_addr, out, cap);
            if (!cidr_list_has(&a->trusted, &cand))
                return put_addr(&cand, out, cap);
            if (next == 0)
                break;
            end = next - 1;
        }
    }
    if (seen_xff)
        return put_addr(&cand, out, cap); /* every hop trusted: the leftmost is the client */

    h = http_req_header(req, "X-Real-IP");
    if (h != NULL) {
        size_t b = 0, e = h->value_len;
        trim(h->value, &b, &e);
        if (cidr_addr_parse(h->value + b, e - b, &cand) == 0)
            return put_addr(&cand, out, cap);
    }
    return put_peer(peer_addr, out, cap);
}
