/*
 * test_auth.c -- JWT verification (HS256, RS256, ES256 with keys made here), identity extraction
 * from upgrade requests, user-id rules, X-Forwarded-For handling, settings checks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/hmac.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "proto/auth.h"
#include "proto/http1.h"

#define SECRET "0123456789abcdef0123456789abcdef"
#define NOW_MS INT64_C(1700000000000)
#define NOW_S 1700000000L
#define LEEWAY_MS 30000

/* Keys made once for the whole run: PEM texts and the public halves written to temp files. */
struct keyset {
    char *rsa_priv, *rsa_pub, *rsa2_priv, *ec_priv, *ec_pub, *ec2_priv;
    char rsa_pub_path[64], ec_pub_path[64], rsa_priv_path[64], ec384_pub_path[64],
        rsa1024_pub_path[64], garbage_path[64], pkcs1_pub_path[64];
};

static struct keyset keys;

/* ---- Helpers ---- */

static char *pem_of(EVP_PKEY *pk, int priv)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *copy;
    long n;

    assert_non_null(bio);
    if (priv)
        assert_int_equal(PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL), 1);
    else
        assert_int_equal(PEM_write_bio_PUBKEY(bio, pk), 1);
    n = BIO_get_mem_data(bio, &data);
    copy = malloc((size_t)n + 1);
    assert_non_null(copy);
    memcpy(copy, data, (size_t)n);
    copy[n] = '\0';
    BIO_free(bio);
    return copy;
}

static void write_temp(char path[64], const char *text)
{
    int fd;

    snprintf(path, 64, "/tmp/test_auth_XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static int keys_setup(void **state)
{
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *rsa1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *ec2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *ec384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    char *tmp;

    (void)state;
    if (!rsa || !rsa2 || !rsa1024 || !ec || !ec2 || !ec384)
        return -1;
    keys.rsa_priv = pem_of(rsa, 1);
    keys.rsa_pub = pem_of(rsa, 0);
    keys.rsa2_priv = pem_of(rsa2, 1);
    keys.ec_priv = pem_of(ec, 1);
    keys.ec_pub = pem_of(ec, 0);
    keys.ec2_priv = pem_of(ec2, 1);
    write_temp(keys.rsa_pub_path, keys.rsa_pub);
    write_temp(keys.ec_pub_path, keys.ec_pub);
    write_temp(keys.rsa_priv_path, keys.rsa_priv);
    tmp = pem_of(ec384, 0);
    write_temp(keys.ec384_pub_path, tmp);
    free(tmp);
    tmp = pem_of(rsa1024, 0);
    write_temp(keys.rsa1024_pub_path, tmp);
    free(tmp);
    write_temp(keys.garbage_path, "not a key\n");
    {
        /* PKCS#1 "RSA PUBLIC KEY": OpenSSL 3's PEM_read_bio_PUBKEY (used by libjwt) takes it too */
        OSSL_ENCODER_CTX *ctx = OSSL_ENCODER_CTX_new_for_pkey(rsa, OSSL_KEYMGMT_SELECT_PUBLIC_KEY,
                                                              "PEM", "type-specific", NULL);
        unsigned char *data = NULL;
        size_t n = 0;
        if (ctx == NULL || OSSL_ENCODER_to_data(ctx, &data, &n) != 1)
            return -1;
        OSSL_ENCODER_CTX_free(ctx);
        tmp = strndup((const char *)data, n);
        OPENSSL_free(data);
        assert_non_null(strstr(tmp, "BEGIN RSA PUBLIC KEY"));
        write_temp(keys.pkcs1_pub_path, tmp);
        free(tmp);
    }
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsa2);
    EVP_PKEY_free(rsa1024);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ec2);
    EVP_PKEY_free(ec384);
    return 0;
}

static int keys_teardown(void **state)
{
    (void)state;
    unlink(keys.rsa_pub_path);
    unlink(keys.ec_pub_path);
    unlink(keys.rsa_priv_path);
    unlink(keys.ec384_pub_path);
    unlink(keys.rsa1024_pub_path);
    unlink(keys.garbage_path);
    unlink(keys.pkcs1_pub_path);
    free(keys.rsa_priv);
    free(keys.rsa_pub);
    free(keys.rsa2_priv);
    free(keys.ec_priv);
    free(keys.ec_pub);
    free(keys.ec2_priv);
    return 0;
}

/* Sign claims (a JSON object text) with libjwt; the result is malloc'd. */
static char *sign(jwt_alg_t alg, const char *key, const char *claims)
{
    jwt_t *jwt = NULL;
    char *tok;

    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_set_alg(jwt, alg, (const unsigned char *)key, (int)strlen(key)), 0);
    assert_int_equal(jwt_add_grants_json(jwt, claims), 0);
    tok = jwt_encode_str(jwt);
    assert_non_null(tok);
    jwt_free(jwt);
    return tok;
}

static void b64url(const char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i;

    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)(uint8_t)in[i] << 16 | (uint32_t)(uint8_t)in[i + 1] << 8 |
                     (uint8_t)in[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)(uint8_t)in[i] << 16;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)(uint8_t)in[i] << 16 | (uint32_t)(uint8_t)in[i + 1] << 8;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
    }
    out[o] = '\0';
}

/* header.payload.sig built by hand from JSON texts, for tokens libjwt would not make. */
static void craft(char *out, size_t cap, const char *header, const char *payload, const char *sig)
{
    char h[512], p[1024];

    b64url(header, strlen(header), h);
    b64url(payload, strlen(payload), p);
    assert_true((size_t)snprintf(out, cap, "%s.%s.%s", h, p, sig) < cap);
}

static void init_hs(struct auth *a, const char *mode, const char *cookie, const char *trusted)
{
    struct auth_settings s = {
        .mode = mode,
        .jwt_alg = "HS256",
        .jwt_secret = SECRET,
        .leeway_ms = LEEWAY_MS,
        .jwt_cookie = cookie,
        .trusted_proxies = trusted,
    };
    char err[256] = "";

    if (auth_init(a, &s, err, sizeof(err)) != 0)
        fail_msg("auth_init: %s", err);
}

static void init_pk(struct auth *a, const char *alg, const char *path)
{
    struct auth_settings s = {
        .mode = "token", .jwt_alg = alg, .jwt_public_key = path, .leeway_ms = LEEWAY_MS};
    char err[256] = "";

    if (auth_init(a, &s, err, sizeof(err)) != 0)
        fail_msg("auth_init: %s", err);
}

/* Verify and expect failure with a reason containing want; the token must never be echoed. */
static void expect_reject(const struct auth *a, const char *tok, int64_t now, const char *want)
{
    struct auth_identity id;
    char why[128] = "";

    assert_int_equal(auth_verify_token(a, tok, now, &id, why, sizeof(why)), -1);
    if (strstr(why, want) == NULL)
        fail_msg("want \"%s\", got \"%s\"", want, why);
    assert_string_equal(id.user, "");
    if (strlen(tok) > 8)
        assert_null(strstr(why, tok + strlen(tok) - 8));
}

static void expect_accept(const struct auth *a, const char *tok, int64_t now, const char *user)
{
    struct auth_identity id;
    char why[128] = "";

    if (auth_verify_token(a, tok, now, &id, why, sizeof(why)) != 0)
        fail_msg("rejected: %s", why);
    assert_string_equal(id.user, user);
    assert_int_equal(id.method, AUTH_BY_TOKEN);
}

/* ---- Settings ---- */

static void test_auth_mode_alg_parse(void **state)
{
    (void)state;
    assert_int_equal(auth_mode_parse("token"), AUTH_MODE_TOKEN);
    assert_int_equal(auth_mode_parse("query"), AUTH_MODE_QUERY);
    assert_int_equal(auth_mode_parse("token,query"), AUTH_MODE_TOKEN | AUTH_MODE_QUERY);
    assert_int_equal(auth_mode_parse(" query , Token "), AUTH_MODE_TOKEN | AUTH_MODE_QUERY);
    assert_int_equal(auth_mode_parse(""), -1);
    assert_int_equal(auth_mode_parse("token,"), -1);
    assert_int_equal(auth_mode_parse("token query"), -1);
    assert_int_equal(auth_mode_parse("tokens"), -1);
    assert_int_equal(auth_mode_parse("none"), -1);
    assert_int_equal(auth_mode_parse(NULL), -1);

    assert_int_equal(auth_alg_parse("HS256"), AUTH_ALG_HS256);
    assert_int_equal(auth_alg_parse("rs256"), AUTH_ALG_RS256);
    assert_int_equal(auth_alg_parse("ES256"), AUTH_ALG_ES256);
    assert_int_equal(auth_alg_parse("none"), -1);
    assert_int_equal(auth_alg_parse("HS512"), -1);
    assert_int_equal(auth_alg_parse(""), -1);
    assert_int_equal(auth_alg_parse(NULL), -1);
}

static void test_auth_init_errors(void **state)
{
    struct {
        struct auth_settings s;
        const char *want;
    } cases[] = {
        {{.mode = "tokens", .jwt_secret = SECRET}, "mode \"tokens\""},
        {{.jwt_alg = "none", .jwt_secret = SECRET}, "jwt_alg \"none\""},
        {{.jwt_alg = "HS256"}, "needs jwt_secret"},
        {{.jwt_alg = "HS256", .jwt_secret = ""}, "needs jwt_secret"},
        {{.jwt_secret = SECRET, .leeway_ms = -1}, "jwt_leeway"},
        {{.jwt_secret = SECRET, .trusted_proxies = "10.0.0.0/8, bogus"}, "trusted_proxies: "},
        {{.mode = "query"}, "needs trusted_proxies"},
        {{.mode = "token,query", .jwt_secret = SECRET}, "needs trusted_proxies"},
        {{.jwt_alg = "RS256", .jwt_secret = SECRET}, "needs jwt_public_key"},
        {{.jwt_alg = "ES256", .jwt_public_key = ""}, "needs jwt_public_key"},
        {{.jwt_alg = "RS256", .jwt_public_key = "/nonexistent/key.pem"}, "No such file"},
        {{.jwt_alg = "RS256", .jwt_public_key = "/"}, "/"},
        {{.jwt_alg = "RS256", .jwt_public_key = keys.garbage_path}, "no PEM public key"},
        {{.jwt_alg = "RS256", .jwt_public_key = keys.rsa_priv_path}, "no PEM public key"},
        {{.jwt_alg = "RS256", .jwt_public_key = keys.ec_pub_path}, "RS256 needs an RSA key"},
        {{.jwt_alg = "RS256", .jwt_public_key = keys.rsa1024_pub_path}, "1024 bits"},
        {{.jwt_alg = "ES256", .jwt_public_key = keys.rsa_pub_path}, "ES256 needs an EC key"},
        {{.jwt_alg = "ES256", .jwt_public_key = keys.ec384_pub_path}, "P-256"},
    };
    struct auth a;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        if (auth_init(&a, &cases[i].s, err, sizeof(err)) != -1)
            fail_msg("case %zu accepted", i);
        if (strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: want \"%s\" in \"%s\"", i, cases[i].want, err);
        assert_null(a.key);
        assert_null(a.cookie_name);
    }
    /* a NULL err buffer is allowed */
    struct auth_settings none = {.jwt_alg = "HS256"};
    assert_int_equal(auth_init(&a, &none, NULL, 0), -1);
}

static void test_auth_init_ok(void **state)
{
    struct auth_settings s = {0};
    struct auth a;
    char err[256] = "";

    (void)state;
    /* query-only needs no token settings */
    s.mode = "query";
    s.trusted_proxies = "127.0.0.1";
    assert_int_equal(auth_init(&a, &s, err, sizeof(err)), 0);
    assert_int_equal(a.modes, AUTH_MODE_QUERY);
    assert_null(a.key);
    assert_false(a.has_secret);
    auth_release(&a);

    /* defaults: token, HS256 */
    memset(&s, 0, sizeof(s));
    s.jwt_secret = SECRET;
    s.jwt_cookie = "";
    assert_int_equal(auth_init(&a, &s, err, sizeof(err)), 0);
    assert_int_equal(a.modes, AUTH_MODE_TOKEN);
    assert_int_equal(a.alg, AUTH_ALG_HS256);
    assert_true(a.has_secret);
    assert_int_equal(a.key_len, strlen(SECRET));
    assert_null(a.cookie_name);
    auth_release(&a);
    auth_release(&a); /* twice is harmless */
    assert_null(a.key);

    /* RS256 ignores a secret: the demo page cannot sign */
    memset(&s, 0, sizeof(s));
    s.jwt_alg = "RS256";
    s.jwt_secret = SECRET;
    s.jwt_public_key = keys.rsa_pub_path;
    s.jwt_cookie = "jwt";
    assert_int_equal(auth_init(&a, &s, err, sizeof(err)), 0);
    assert_false(a.has_secret);
    assert_string_equal(a.cookie_name, "jwt");
    assert_string_equal((const char *)a.key, keys.rsa_pub);
    auth_release(&a);
}

/* ---- HS256 ---- */

static void test_auth_hs256_valid(void **state)
{
    struct auth a;
    struct auth_identity id;
    char claims[256], why[128] = "";
    char *tok;

    (void)state;
    init_hs(&a, "token", NULL, NULL);
    snprintf(claims, sizeof(claims), "{\"sub\":\"alice\",\"exp\":%ld,\"iat\":%ld}", NOW_S + 60,
             NOW_S);
    tok = sign(JWT_ALG_HS256, SECRET, claims);
    assert_int_equal(auth_verify_token(&a, tok, NOW_MS, &id, why, sizeof(why)), 0);
    assert_string_equal(id.user, "alice");
    assert_int_equal(id.exp_ms, (NOW_S + 60) * INT64_C(1000));
    assert_int_equal(id.method, AUTH_BY_TOKEN);
    free(tok);

    /* exp is optional */
    tok = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"\xc3\xa9lise \xe2\x9c\x93\"}");
    assert_int_equal(auth_verify_token(&a, tok, NOW_MS, &id, why, sizeof(why)), 0);
    assert_string_equal(id.user, "\xc3\xa9lise \xe2\x9c\x93");
    assert_int_equal(id.exp_ms, 0);
    free(tok);

    /* a fractional NumericDate is allowed */
    snprintf(claims, sizeof(claims), "{\"sub\":\"bob\",\"exp\":%ld.5}", NOW_S);
    tok = sign(JWT_ALG_HS256, SECRET, claims);
    assert_int_equal(auth_verify_token(&a, tok, NOW_MS, &id, why, sizeof(why)), 0);
    assert_int_equal(id.exp_ms, NOW_S * INT64_C(1000) + 500);
    free(tok);

    /* far-future exp saturates instead of overflowing */
    tok = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"bob\",\"exp\":9223372036854775807}");
    assert_int_equal(auth_verify_token(&a, tok, NOW_MS, &id, why, sizeof(why)), 0);
    assert_int_equal(id.exp_ms, INT64_MAX);
    free(tok);
    tok = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"bob\",\"exp\":1e300}");
    assert_int_equal(auth_verify_token(&a, tok, NOW_MS, &id, why, sizeof(why)), 0);
    assert_int_equal(id.exp_ms, INT64_MAX);
    free(tok);
    auth_release(&a);
}

static void test_auth_expired(void **state)
{
    struct auth a;
    char claims[128];
    char *tok;

    (void)state;
    init_hs(&a, "token", NULL, NULL);
    snprintf(claims, sizeof(claims), "{\"sub\":\"alice\",\"exp\":%ld}", NOW_S - 31);
    tok = sign(JWT_ALG_HS256, SECRET, claims);
    expect_reject(&a, tok, NOW_MS, "token expired");
    free(tok);
    tok = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"alice\",\"exp\":-9223372036854775807}");
    expect_reject(&a, tok, NOW_MS, "token expired");
    free(tok);
    tok = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"alice\",\"exp\":-1e300}");
    expect_reject(&a, tok, NOW_MS, "token expired");
    free(tok);
    auth_release(&a);
}

static void test_auth_leeway_edges(void **state)
{
    struct auth a;
    char claims[128];
    char *tok;
    const int64_t exp_ms = (NOW_S + 10) * INT64_C(1000);

    (void)state;
    init_hs(&a, "token", NULL, NULL);
    snprintf(claims, sizeof(claims), "{\"sub\":\"alice\",\"exp\":%ld}", NOW_S + 10);
    tok = sign(JWT_ALG_HS256, SECRET, claims);
    expect_accept(&a, tok, exp_ms - 1, "alice");
    expect_accept(&a, tok, exp_ms, "alice");
    expect_accept(&a, tok, exp_ms + LEEWAY_MS - 1, "alice");
    expect_reject(&a, tok, exp_ms + LEEWAY_MS, "token expired");
    auth_release(&a);

    /* no leeway: valid strictly before exp (RFC 7519 §4.1.4) */
    struct auth_settings s = {.jwt_secret = SECRET, .leeway_ms = 0};
    assert_int_equal(auth_init(&a, &s, NULL, 0), 0);
    expect_accept(&a, tok, exp_ms - 1, "alice");
    expect_reject(&a, tok, exp_ms, "token expired");
    free(tok);

    /* nbf: valid from nbf on (RFC 7519 §4.1.5), leeway earlier */
    const int64_t nbf_ms = (NOW_S + 100) * INT64_C(1000);
    snprintf(claims, sizeof(claims), "{\"sub\":\"alice\",\"nbf\":%ld}", NOW_S + 100);
    tok = sign(JWT_ALG_HS256, SECRET, claims);
    expect_reject(&a, tok, nbf_ms - 1, "token not yet valid");
    expect_accept(&a, tok, nbf_ms, "alice");
    auth_release(&a);
    init_hs(&a, "token", NULL, NULL);
    expect_reject(&a, tok, nbf_ms - LEEWAY_MS - 1, "token not yet valid");
    expect_accept(&a, tok, nbf_ms - LEEWAY_MS, "alice");
    free(tok);
    auth_release(&a);
}

static void test_auth_not_yet_valid(void **state)
{
    struct auth a;
    char claims[128];
    char *tok;

    (void)state;
    init_hs(&a, "token", NULL, NULL);
    snprintf(claims, sizeof(claims), "{\"sub\":\"alice\",\"nbf\":%ld,\"exp\":%ld}", NOW_S + 3600,
             NOW_S + 7200);
    tok = sign(JWT_ALG_HS256, SECRET, claims);
    expect_reject(&a, tok, NOW_MS, "token not yet valid");
    expect_accept(&a, tok, (NOW_S + 3600) * INT64_C(1000), "alice");
    free(tok);
    auth_release(&a);
}

static void test_auth_bad_claims(void **state)
{
    static const struct {
        const char *claims;
        const char *want;
    } cases[] = {
        {"{\"iss\":\"x\"}", "token has no sub"},
        {"{\"sub\":null}", "not a valid user id"},
        {"{\"sub\":42}", "not a valid user id"},
        {"{\"sub\":[\"a\"]}", "not a valid user id"},
        {"{\"sub\":\"\"}", "not a valid user id"},
        {"{\"sub\":\"0123456789012345678901234567890123456789012345678901234567890123x\"}",
         "not a valid user id"},
        {"{\"sub\":\"a\\tb\"}", "not a valid user id"},
        {"{\"sub\":\"a\\nb\"}", "not a valid user id"},
        {"{\"sub\":\"a\\u007fb\"}", "not a valid user id"},
        {"{\"sub\":\"a\\u0085b\"}", "not a valid user id"},
        {"{\"sub\":\"alice\",\"exp\":\"1700000060\"}", "exp is not a number"},
        {"{\"sub\":\"alice\",\"exp\":true}", "exp is not a number"},
        {"{\"sub\":\"alice\",\"nbf\":\"0\"}", "nbf is not a number"},
    };
    struct auth a;

    (void)state;
    init_hs(&a, "token", NULL, NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *tok = sign(JWT_ALG_HS256, SECRET, cases[i].claims);
        expect_reject(&a, tok, NOW_MS, cases[i].want);
        free(tok);
    }
    /* 64 bytes is the limit, inclusive */
    char *tok = sign(JWT_ALG_HS256, SECRET,
                     "{\"sub\":\"0123456789012345678901234567890123456789012345678901234567890123\"}");
    expect_accept(&a, tok, NOW_MS, "0123456789012345678901234567890123456789012345678901234567890123");
    free(tok);
    auth_release(&a);
}

static void test_auth_bad_utf8_sub(void **state)
{
    struct auth a;
    char hp[1200], input[1200], tok[1300];
    unsigned char mac[32];
    unsigned int maclen = 0;
    char sig[64];

    (void)state;
    init_hs(&a, "token", NULL, NULL);
    /* libjwt cannot make this token (jansson refuses bad UTF-8), so sign it with HMAC directly */
    craft(hp, sizeof(hp), "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{\"sub\":\"a\xff\"}", "");
    hp[strlen(hp) - 1] = '\0'; /* drop the trailing '.' */
    snprintf(input, sizeof(input), "%s", hp);
    assert_non_null(HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)input,
                         strlen(input), mac, &maclen));
    b64url((const char *)mac, maclen, sig);
    snprintf(tok, sizeof(tok), "%s.%s", input, sig);
    expect_reject(&a, tok, NOW_MS, "invalid token");
    auth_release(&a);
}

static void test_auth_wrong_alg(void **state)
{
    struct auth a;
    char *tok;

    (void)state;
    init_hs(&a, "token", NULL, NULL);
    /* same secret, other HMAC size */
    tok = sign(JWT_ALG_HS512, SECRET SECRET, "{\"sub\":\"alice\"}");
    expect_reject(&a, tok, NOW_MS, "token algorithm not allowed");
    free(tok);
    tok = sign(JWT_ALG_RS256, keys.rsa_priv, "{\"sub\":\"alice\"}");
    expect_reject(&a, tok, NOW_MS, "token algorithm not allowed");
    free(tok);
    tok = sign(JWT_ALG_ES256, keys.ec_priv, "{\"sub\":\"alice\"}");
    expect_reject(&a, tok, NOW_MS, "token algorithm not allowed");
    free(tok);
    auth_release(&a);

    init_pk(&a, "ES256", keys.ec_pub_path);
    tok = sign(JWT_ALG_RS256, keys.rsa_priv, "{\"sub\":\"alice\"}");
    expect_reject(&a, tok, NOW_MS, "token algorithm not allowed");
    free(tok);
    auth_release(&a);
}

static void test_auth_wrong_key(void **state)
{
    struct auth a;
    char *tok;

    (void)state;
    init_hs(&a, "token", NULL, NULL);
    tok = sign(JWT_ALG_HS256, "another secret that is long enough!", "{\"sub\":\"alice\"}");
    expect_reject(&a, tok, NOW_MS, "invalid token");
    free(tok);

    /* a valid token with its payload swapped for another user's */
    char *good = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"alice\"}");
    char *other = sign(JWT_ALG_HS256, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "{\"sub\":\"mallory\"}");
    char forged[512];
    const char *g1 = strchr(good, '.'), *g2 = strrchr(good, '.');
    const char *o1 = strchr(other, '.'), *o2 = strrchr(other, '.');
    snprintf(forged, sizeof(forged), "%.*s%.*s%s", (int)(g1 - good), good, (int)(o2 - o1), o1, g2);
    expect_accept(&a, good, NOW_MS, "alice");
    expect_reject(&a, forged, NOW_MS, "invalid token");
    /* signature stripped */
    snprintf(forged, sizeof(forged), "%.*s.", (int)(g2 - good), good);
    expect_reject(&a, forged, NOW_MS, "invalid token");
    snprintf(forged, sizeof(forged), "%.*s", (int)(g2 - good), good);
    expect_reject(&a, forged, NOW_MS, "invalid token");
    free(good);
    free(other);
    auth_release(&a);

    init_pk(&a, "RS256", keys.rsa_pub_path);
    tok = sign(JWT_ALG_RS256, keys.rsa2_priv, "{\"sub\":\"alice\"}");
    expect_reject(&a, tok, NOW_MS, "invalid token");
    free(tok);
    auth_release(&a);

    init_pk(&a, "ES256", keys.ec_pub_path);
    tok = sign(JWT_ALG_ES256, keys.ec2_priv, "{\"sub\":\"alice\"}");
    expect_reject(&a, tok, NOW_MS, "invalid token");
    free(tok);
    auth_release(&a);
}

static void test_auth_alg_none(void **state)
{
    struct auth a;
    char tok[1024];

    (void)state;
    init_hs(&a, "token", NULL, NULL);
    craft(tok, sizeof(tok), "{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"sub\":\"alice\"}", "");
    expect_reject(&a, tok, NOW_MS, "token algorithm not allowed");
    craft(tok, sizeof(tok), "{\"alg\":\"none\"}", "{\"sub\":\"alice\"}", "AAAA");
    expect_reject(&a, tok, NOW_MS, "token algorithm not allowed");
    craft(tok, sizeof(tok), "{\"alg\":\"None\",\"typ\":\"JWT\"}", "{\"sub\":\"alice\"}", "");
    expect_reject(&a, tok, NOW_MS, "token algorithm not allowed");
    /* no alg at all, or not a string */
    craft(tok, sizeof(tok), "{\"typ\":\"JWT\"}", "{\"sub\":\"alice\"}", "");
    expect_reject(&a, tok, NOW_MS, "malformed token");
    craft(tok, sizeof(tok), "{\"alg\":0}", "{\"sub\":\"alice\"}", "");
    expect_reject(&a, tok, NOW_MS, "malformed token");
    /* libjwt 1.10 itself would take an unsigned token when no key is passed */
    jwt_t *jwt = NULL;
    craft(tok, sizeof(tok), "{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"sub\":\"alice\"}", "");
    assert_int_equal(jwt_decode(&jwt, tok, NULL, 0), 0);
    jwt_free(jwt);
    auth_release(&a);

    init_pk(&a, "RS256", keys.rsa_pub_path);
    expect_reject(&a, tok, NOW_MS, "token algorithm not allowed");
    auth_release(&a);
}

static void test_auth_malformed(void **state)
{
    static const char *const cases[] = {
        "abc", "abc.def.ghi", "....", ".", "e30", "e30.e30.", "!!!!.e30.", "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9.%%%.xyz", "eyJhbGciOiJIUzI1NiJ9..",
    };
    struct auth a;
    struct auth_identity id;
    char why[128];
    char big[AUTH_TOKEN_MAX + 2];

    (void)state;
    init_hs(&a, "token", NULL, NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        why[0] = '\0';
        if (auth_verify_token(&a, cases[i], NOW_MS, &id, why, sizeof(why)) != -1)
            fail_msg("case %zu accepted", i);
        assert_true(why[0] != '\0');
    }
    expect_reject(&a, "", NOW_MS, "missing token");
    assert_int_equal(auth_verify_token(&a, NULL, NOW_MS, &id, why, sizeof(why)), -1);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    expect_reject(&a, big, NOW_MS, "token too long");
    /* a huge JOSE header is not decoded */
    memset(big, 'a', sizeof(big) - 1);
    big[2000] = '.';
    big[2010] = '.';
    big[2011] = '\0';
    expect_reject(&a, big, NOW_MS, "malformed token");
    /* NULL why is allowed */
    assert_int_equal(auth_verify_token(&a, "abc", NOW_MS, &id, NULL, 0), -1);
    auth_release(&a);

    /* query-only: tokens are not configured at all */
    struct auth_settings s = {.mode = "query", .trusted_proxies = "127.0.0.1"};
    assert_int_equal(auth_init(&a, &s, NULL, 0), 0);
    char *tok = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"alice\"}");
    expect_reject(&a, tok, NOW_MS, "not configured");
    free(tok);
    auth_release(&a);
}

/* ---- RS256 / ES256 ---- */

static void test_auth_rs256_valid(void **state)
{
    struct auth a;
    char claims[128];
    char *tok;

    (void)state;
    init_pk(&a, "RS256", keys.rsa_pub_path);
    snprintf(claims, sizeof(claims), "{\"sub\":\"carol\",\"exp\":%ld}", NOW_S + 60);
    tok = sign(JWT_ALG_RS256, keys.rsa_priv, claims);
    expect_accept(&a, tok, NOW_MS, "carol");
    expect_reject(&a, tok, NOW_MS + 91000, "token expired");
    auth_release(&a);

    init_pk(&a, "RS256", keys.pkcs1_pub_path);
    expect_accept(&a, tok, NOW_MS, "carol");
    free(tok);
    auth_release(&a);
}

static void test_auth_es256_valid(void **state)
{
    struct auth a;
    char claims[128];
    char *tok;

    (void)state;
    init_pk(&a, "ES256", keys.ec_pub_path);
    snprintf(claims, sizeof(claims), "{\"sub\":\"dave\",\"exp\":%ld}", NOW_S + 60);
    tok = sign(JWT_ALG_ES256, keys.ec_priv, claims);
    expect_accept(&a, tok, NOW_MS, "dave");
    free(tok);
    auth_release(&a);
}

static void test_auth_hs_rs_confusion(void **state)
{
    struct auth a;
    jwt_t *jwt = NULL;
    char *tok;

    (void)state;
    init_pk(&a, "RS256", keys.rsa_pub_path);
    /* the attacker knows the public key and uses its PEM text as an HMAC secret */
    tok = sign(JWT_ALG_HS256, keys.rsa_pub, "{\"sub\":\"admin\"}");
    /* libjwt alone verifies it with the configured key: the alg check is what stops it */
    assert_int_equal(jwt_decode(&jwt, tok, (const unsigned char *)keys.rsa_pub,
                                (int)strlen(keys.rsa_pub)),
                     0);
    jwt_free(jwt);
    expect_reject(&a, tok, NOW_MS, "token algorithm not allowed");
    free(tok);
    auth_release(&a);

    init_pk(&a, "ES256", keys.ec_pub_path);
    tok = sign(JWT_ALG_HS256, keys.ec_pub, "{\"sub\":\"admin\"}");
    expect_reject(&a, tok, NOW_MS, "token algorithm not allowed");
    free(tok);
    auth_release(&a);
}

/* ---- User ids ---- */

static void test_auth_user_valid(void **state)
{
    static const struct {
        const char *s;
        size_t len; /* 0 = strlen */
        bool ok;
    } cases[] = {
        {"alice", 0, true},
        {"a", 0, true},
        {"Bob Smith", 0, true},
        {"\xc3\xa9", 0, true},                 /* é */
        {"\xc2\xa0", 0, true},                 /* U+00A0, just past C1 */
        {"\xf0\x9f\x98\x80", 0, true},         /* emoji */
        {"", 0, false},
        {"a\x01", 0, false},
        {"\x1f", 0, false},
        {"a\x7f", 0, false},
        {"a\xc2\x80", 0, false},                /* U+0080 */
        {"a\xc2\x9f", 0, false},                /* U+009F */
        {"\xff", 0, false},
        {"\xc3", 0, false},                     /* truncated */
        {"\xc0\xaf", 0, false},                 /* overlong '/' */
        {"\xed\xa0\x80", 0, false},             /* surrogate */
        {"a\0b", 3, false},
    };
    char buf[70];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = cases[i].len != 0 ? cases[i].len : strlen(cases[i].s);
        if (auth_user_valid(cases[i].s, len) != cases[i].ok)
            fail_msg("case %zu: expected %d", i, cases[i].ok);
    }
    memset(buf, 'x', sizeof(buf));
    assert_true(auth_user_valid(buf, 64));
    assert_false(auth_user_valid(buf, 65));
    assert_false(auth_user_valid(NULL, 1));
}

/* ---- Identity of a request ---- */

/* Parse a request head into req; text must outlive req. */
static void parse_req(struct http_req *req, const char *text)
{
    int n = http_req_parse(req, text, strlen(text), 16384);
    if (n <= 0)
        fail_msg("http_req_parse: %d for %s", n, text);
}

static void identify_ok(const struct auth *a, const char *head, const char *peer, const char *user,
                        enum auth_method method)
{
    struct http_req req;
    struct auth_identity id;
    char why[128] = "";

    parse_req(&req, head);
    if (auth_identify(a, &req, peer, NOW_MS, &id, why, sizeof(why)) != 0)
        fail_msg("identify failed: %s", why);
    assert_string_equal(id.user, user);
    assert_int_equal(id.method, method);
}

static void identify_fail(const struct auth *a, const char *head, const char *peer, const char *want)
{
    struct http_req req;
    struct auth_identity id;
    char why[128] = "";

    parse_req(&req, head);
    assert_int_equal(auth_identify(a, &req, peer, NOW_MS, &id, why, sizeof(why)), -1);
    if (strstr(why, want) == NULL)
        fail_msg("want \"%s\", got \"%s\"", want, why);
    assert_string_equal(id.user, "");
}

static void test_auth_identify_token_sources(void **state)
{
    struct auth a;
    char head[2048];
    char *alice = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"alice\"}");
    char *bob = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"bob\"}");
    char *bad = sign(JWT_ALG_HS256, "wrong wrong wrong wrong wrong wrong", "{\"sub\":\"eve\"}");

    (void)state;
    init_hs(&a, "token", "jwt", NULL);

    snprintf(head, sizeof(head), "GET /ws?x=1&token=%s HTTP/1.1\r\nHost: h\r\n\r\n", alice);
    identify_ok(&a, head, "203.0.113.9", "alice", AUTH_BY_TOKEN);
    snprintf(head, sizeof(head), "GET /ws HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n", alice);
    identify_ok(&a, head, "203.0.113.9", "alice", AUTH_BY_TOKEN);
    snprintf(head, sizeof(head), "GET /ws HTTP/1.1\r\nAuthorization: bearer   %s  \r\n\r\n", alice);
    identify_ok(&a, head, "203.0.113.9", "alice", AUTH_BY_TOKEN);
    snprintf(head, sizeof(head), "GET /ws HTTP/1.1\r\nCookie: a=b; jwt=%s; c=d\r\n\r\n", alice);
    identify_ok(&a, head, "203.0.113.9", "alice", AUTH_BY_TOKEN);
    snprintf(head, sizeof(head), "GET /ws HTTP/1.1\r\nCookie: a=b\r\nCookie: jwt=%s\r\n\r\n", alice);
    identify_ok(&a, head, "203.0.113.9", "alice", AUTH_BY_TOKEN);

    /* order: query, then Authorization, then cookie */
    snprintf(head, sizeof(head),
             "GET /ws?token=%s HTTP/1.1\r\nAuthorization: Bearer %s\r\nCookie: jwt=%s\r\n\r\n", alice,
             bob, bob);
    identify_ok(&a, head, "203.0.113.9", "alice", AUTH_BY_TOKEN);
    snprintf(head, sizeof(head), "GET /ws HTTP/1.1\r\nCookie: jwt=%s\r\nAuthorization: Bearer %s\r\n\r\n",
             alice, bob);
    identify_ok(&a, head, "203.0.113.9", "bob", AUTH_BY_TOKEN);
    /* the first token found decides: a bad one is not rescued by a later good one */
    snprintf(head, sizeof(head), "GET /ws?token=%s HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n",
             bad, alice);
    identify_fail(&a, head, "203.0.113.9", "invalid token");
    /* an empty query token or another auth scheme is no token */
    snprintf(head, sizeof(head),
             "GET /ws?token= HTTP/1.1\r\nAuthorization: Basic dXNlcjpwYXNz\r\nCookie: jwt=%s\r\n\r\n",
             bob);
    identify_ok(&a, head, "203.0.113.9", "bob", AUTH_BY_TOKEN);

    identify_fail(&a, "GET /ws HTTP/1.1\r\nHost: h\r\n\r\n", "203.0.113.9", "missing token");
    identify_fail(&a, "GET /ws HTTP/1.1\r\nAuthorization: Bearer\r\n\r\n", "1.1.1.1", "missing token");
    identify_fail(&a, "GET /ws HTTP/1.1\r\nCookie: other=x\r\n\r\n", "1.1.1.1", "missing token");
    identify_fail(&a, "GET /ws?token=%zz HTTP/1.1\r\n\r\n", "1.1.1.1", "bad token parameter");
    identify_fail(&a, "GET /ws?token=abc HTTP/1.1\r\n\r\n", "1.1.1.1", "malformed token");
    /* ?user= means nothing in token mode, even from a trusted-looking peer */
    identify_fail(&a, "GET /ws?user=alice HTTP/1.1\r\n\r\n", "127.0.0.1", "missing token");
    auth_release(&a);

    /* without jwt_cookie the cookie is not a source */
    init_hs(&a, "token", NULL, NULL);
    snprintf(head, sizeof(head), "GET /ws HTTP/1.1\r\nCookie: jwt=%s\r\n\r\n", alice);
    identify_fail(&a, head, "203.0.113.9", "missing token");
    auth_release(&a);
    free(alice);
    free(bob);
    free(bad);
}

static void test_auth_identify_long_token(void **state)
{
    struct auth a;
    static char head[3 * AUTH_TOKEN_MAX];
    char tok[AUTH_TOKEN_MAX + 2];

    (void)state;
    init_hs(&a, "token", "jwt", NULL);
    memset(tok, 'a', sizeof(tok) - 1);
    tok[sizeof(tok) - 1] = '\0';
    snprintf(head, sizeof(head), "GET /ws?token=%s HTTP/1.1\r\n\r\n", tok);
    identify_fail(&a, head, "1.1.1.1", "bad token parameter");
    snprintf(head, sizeof(head), "GET /ws HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n", tok);
    identify_fail(&a, head, "1.1.1.1", "token too long");
    snprintf(head, sizeof(head), "GET /ws HTTP/1.1\r\nCookie: jwt=%s\r\n\r\n", tok);
    identify_fail(&a, head, "1.1.1.1", "bad token cookie");
    auth_release(&a);
}

static void test_auth_identify_never_echoes_token(void **state)
{
    struct auth a;
    struct http_req req;
    struct auth_identity id;
    char head[1024], why[256];
    char claims[128];
    char *tok;

    (void)state;
    init_hs(&a, "token", NULL, NULL);
    snprintf(claims, sizeof(claims), "{\"sub\":\"alice\",\"exp\":%ld}", NOW_S - 3600);
    tok = sign(JWT_ALG_HS256, SECRET, claims);
    snprintf(head, sizeof(head), "GET /ws HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n", tok);
    parse_req(&req, head);
    assert_int_equal(auth_identify(&a, &req, "1.1.1.1", NOW_MS, &id, why, sizeof(why)), -1);
    assert_string_equal(why, "token expired");
    /* not even a 12-byte piece of it */
    for (size_t i = 0; i + 12 <= strlen(tok); i++) {
        char piece[13];
        memcpy(piece, tok + i, 12);
        piece[12] = '\0';
        assert_null(strstr(why, piece));
    }
    free(tok);
    auth_release(&a);
}

static void test_auth_identify_query_mode(void **state)
{
    struct auth a;

    (void)state;
    init_hs(&a, "query", NULL, "127.0.0.1, 10.0.0.0/8, ::1");
    identify_ok(&a, "GET /ws?user=alice HTTP/1.1\r\n\r\n", "127.0.0.1", "alice", AUTH_BY_QUERY);
    identify_ok(&a, "GET /ws?user=%C3%A9lise HTTP/1.1\r\n\r\n", "10.2.3.4", "\xc3\xa9lise",
                AUTH_BY_QUERY);
    identify_ok(&a, "GET /ws?user=al+ice HTTP/1.1\r\n\r\n", "::1", "al ice", AUTH_BY_QUERY);
    identify_ok(&a, "GET /ws?user=alice HTTP/1.1\r\n\r\n", "::ffff:127.0.0.1", "alice",
                AUTH_BY_QUERY);
    identify_fail(&a, "GET /ws?user=alice HTTP/1.1\r\n\r\n", "203.0.113.9",
                  "query identity from untrusted peer");
    identify_fail(&a, "GET /ws?user=alice HTTP/1.1\r\n\r\n", NULL,
                  "query identity from untrusted peer");
    identify_fail(&a, "GET /ws HTTP/1.1\r\n\r\n", "127.0.0.1", "missing user");
    identify_fail(&a, "GET /ws?user= HTTP/1.1\r\n\r\n", "127.0.0.1", "invalid user id");
    identify_fail(&a, "GET /ws?user=a%01b HTTP/1.1\r\n\r\n", "127.0.0.1", "invalid user id");
    identify_fail(&a, "GET /ws?user=a%00b HTTP/1.1\r\n\r\n", "127.0.0.1", "invalid user id");
    identify_fail(&a, "GET /ws?user=a%FF HTTP/1.1\r\n\r\n", "127.0.0.1", "invalid user id");
    identify_fail(&a, "GET /ws?user=a%C2%85 HTTP/1.1\r\n\r\n", "127.0.0.1", "invalid user id");
    identify_ok(&a,
                "GET /ws?user=0123456789012345678901234567890123456789012345678901234567890123 "
                "HTTP/1.1\r\n\r\n",
                "127.0.0.1", "0123456789012345678901234567890123456789012345678901234567890123",
                AUTH_BY_QUERY);
    identify_fail(&a,
                  "GET /ws?user=0123456789012345678901234567890123456789012345678901234567890123x "
                  "HTTP/1.1\r\n\r\n",
                  "127.0.0.1", "invalid user id");
    /* tokens are ignored in query-only mode */
    identify_fail(&a, "GET /ws?token=abc HTTP/1.1\r\n\r\n", "127.0.0.1", "missing user");
    auth_release(&a);
}

static void test_auth_identify_token_and_query(void **state)
{
    struct auth a;
    char head[1024];
    char *bob = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"bob\"}");
    char *bad = sign(JWT_ALG_HS256, "wrong wrong wrong wrong wrong wrong", "{\"sub\":\"eve\"}");

    (void)state;
    init_hs(&a, "token,query", NULL, "127.0.0.1");
    /* a valid token wins over ?user= */
    snprintf(head, sizeof(head), "GET /ws?user=alice&token=%s HTTP/1.1\r\n\r\n", bob);
    identify_ok(&a, head, "127.0.0.1", "bob", AUTH_BY_TOKEN);
    identify_ok(&a, head, "203.0.113.9", "bob", AUTH_BY_TOKEN);
    /* an invalid token is not rescued by ?user= */
    snprintf(head, sizeof(head), "GET /ws?user=alice&token=%s HTTP/1.1\r\n\r\n", bad);
    identify_fail(&a, head, "127.0.0.1", "invalid token");
    /* no token: ?user= from the trusted proxy only */
    identify_ok(&a, "GET /ws?user=alice HTTP/1.1\r\n\r\n", "127.0.0.1", "alice", AUTH_BY_QUERY);
    identify_fail(&a, "GET /ws?user=alice HTTP/1.1\r\n\r\n", "203.0.113.9",
                  "query identity from untrusted peer");
    identify_fail(&a, "GET /ws HTTP/1.1\r\n\r\n", "127.0.0.1", "missing token or user");
    auth_release(&a);
    free(bob);
    free(bad);
}

/* ---- Client address ---- */

static void test_auth_client_addr(void **state)
{
    static const struct {
        const char *headers; /* header lines, each ending in CRLF */
        const char *peer;
        const char *want;
    } cases[] = {
        /* untrusted peers: headers are ignored */
        {"X-Forwarded-For: 1.1.1.1\r\n", "203.0.113.9", "203.0.113.9"},
        {"X-Real-IP: 1.1.1.1\r\n", "203.0.113.9", "203.0.113.9"},
        {"", "::ffff:203.0.113.9", "203.0.113.9"},
        {"", "2001:DB8::1", "2001:db8::1"},
        {"", "unix", "unix"},
        {"", NULL, ""},
        /* trusted peer, no headers */
        {"", "127.0.0.1", "127.0.0.1"},
        /* rightmost untrusted entry */
        {"X-Forwarded-For: 198.51.100.7\r\n", "127.0.0.1", "198.51.100.7"},
        {"X-Forwarded-For: 6.6.6.6, 198.51.100.7\r\n", "127.0.0.1", "198.51.100.7"},
        {"X-Forwarded-For: 6.6.6.6, 198.51.100.7, 10.1.1.1 ,10.2.2.2\r\n", "127.0.0.1",
         "198.51.100.7"},
        {"X-Forwarded-For: 2001:db8::7, 10.1.1.1\r\n", "::ffff:127.0.0.1", "2001:db8::7"},
        {"X-Forwarded-For: [2001:db8::7]\r\n", "127.0.0.1", "2001:db8::7"},
        {"X-Forwarded-For: ::ffff:198.51.100.7\r\n", "127.0.0.1", "198.51.100.7"},
        /* several lines are one list, the last line rightmost */
        {"X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-For: 10.1.1.1\r\n", "127.0.0.1",
         "198.51.100.7"},
        {"X-Forwarded-For: 6.6.6.6\r\nHost: h\r\nx-forwarded-for: 198.51.100.7, 10.0.0.1\r\n",
         "127.0.0.1", "198.51.100.7"},
        /* all hops trusted: the leftmost */
        {"X-Forwarded-For: 10.9.9.9, 10.1.1.1\r\n", "127.0.0.1", "10.9.9.9"},
        /* junk before reaching an untrusted hop: the peer */
        {"X-Forwarded-For: 198.51.100.7, unknown\r\n", "127.0.0.1", "127.0.0.1"},
        {"X-Forwarded-For: 198.51.100.7:4711\r\n", "127.0.0.1", "127.0.0.1"},
        {"X-Forwarded-For: 198.51.100.7,\r\n", "127.0.0.1", "127.0.0.1"},
        {"X-Forwarded-For: \r\n", "127.0.0.1", "127.0.0.1"},
        /* junk left of the client's entry is never read */
        {"X-Forwarded-For: <script>, 198.51.100.7\r\n", "127.0.0.1", "198.51.100.7"},
        /* X-Real-IP only without X-Forwarded-For */
        {"X-Real-IP: 198.51.100.8\r\n", "127.0.0.1", "198.51.100.8"},
        {"X-Real-IP:  2001:db8::8 \r\n", "127.0.0.1", "2001:db8::8"},
        {"X-Real-IP: 198.51.100.8\r\nX-Forwarded-For: 198.51.100.7\r\n", "127.0.0.1",
         "198.51.100.7"},
        {"X-Real-IP: nonsense\r\n", "127.0.0.1", "127.0.0.1"},
    };
    struct auth a;
    struct http_req req;
    char head[512], out[CIDR_ADDR_STRLEN];

    (void)state;
    init_hs(&a, "token", NULL, "127.0.0.1, 10.0.0.0/8");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(head, sizeof(head), "GET /ws HTTP/1.1\r\n%s\r\n", cases[i].headers);
        parse_req(&req, head);
        memset(out, '#', sizeof(out));
        assert_int_equal(auth_client_addr(&a, &req, cases[i].peer, out, sizeof(out)), 0);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu: want \"%s\", got \"%s\"", i, cases[i].want, out);
    }
    /* too small an output buffer */
    parse_req(&req, "GET /ws HTTP/1.1\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n");
    assert_int_equal(auth_client_addr(&a, &req, "127.0.0.1", out, 4), -1);
    assert_string_equal(out, "");
    assert_int_equal(auth_client_addr(&a, &req, "203.0.113.9", out, 4), -1);
    assert_string_equal(out, "");
    assert_int_equal(auth_client_addr(&a, &req, "unix-socket-name", out, 4), -1);
    assert_string_equal(out, "");
    auth_release(&a);
}

/* ---- Issuing demo tokens ---- */

static void test_auth_issue_token(void **state)
{
    struct auth a;
    struct auth_identity id;
    char tok[1024], why[128] = "";
    int n;

    (void)state;
    init_hs(&a, "token", NULL, NULL);
    n = auth_issue_token(&a, "alice", 60000, NOW_MS + 1, tok, sizeof(tok));
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(tok));
    assert_int_equal(auth_verify_token(&a, tok, NOW_MS, &id, why, sizeof(why)), 0);
    assert_string_equal(id.user, "alice");
    /* exp rounds up to the next whole second */
    assert_int_equal(id.exp_ms, NOW_MS + 61000);
    expect_reject(&a, tok, NOW_MS + 61000 + LEEWAY_MS, "token expired");

    assert_int_equal(auth_issue_token(&a, "", 60000, NOW_MS, tok, sizeof(tok)), -1);
    assert_int_equal(auth_issue_token(&a, "a\nb", 60000, NOW_MS, tok, sizeof(tok)), -1);
    assert_int_equal(auth_issue_token(&a, NULL, 60000, NOW_MS, tok, sizeof(tok)), -1);
    assert_int_equal(auth_issue_token(&a, "alice", 0, NOW_MS, tok, sizeof(tok)), -1);
    assert_int_equal(auth_issue_token(&a, "alice", 60000, NOW_MS, tok, (size_t)n), -1);
    assert_string_equal(tok, "");
    assert_int_equal(auth_issue_token(&a, "alice", 60000, NOW_MS, tok, (size_t)n + 1), n);
    auth_release(&a);

    init_pk(&a, "RS256", keys.rsa_pub_path);
    assert_int_equal(auth_issue_token(&a, "alice", 60000, NOW_MS, tok, sizeof(tok)), -1);
    auth_release(&a);

    struct auth_settings s = {.mode = "query", .trusted_proxies = "127.0.0.1"};
    assert_int_equal(auth_init(&a, &s, NULL, 0), 0);
    assert_int_equal(auth_issue_token(&a, "alice", 60000, NOW_MS, tok, sizeof(tok)), -1);
    auth_release(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth_mode_alg_parse),
        cmocka_unit_test(test_auth_init_errors),
        cmocka_unit_test(test_auth_init_ok),
        cmocka_unit_test(test_auth_hs256_valid),
        cmocka_unit_test(test_auth_expired),
        cmocka_unit_test(test_auth_leeway_edges),
        cmocka_unit_test(test_auth_not_yet_valid),
        cmocka_unit_test(test_auth_bad_claims),
        cmocka_unit_test(test_auth_bad_utf8_sub),
        cmocka_unit_test(test_auth_wrong_alg),
        cmocka_unit_test(test_auth_wrong_key),
        cmocka_unit_test(test_auth_alg_none),
        cmocka_unit_test(test_auth_malformed),
        cmocka_unit_test(test_auth_rs256_valid),
        cmocka_unit_test(test_auth_es256_valid),
        cmocka_unit_test(test_auth_hs_rs_confusion),
        cmocka_unit_test(test_auth_user_valid),
        cmocka_unit_test(test_auth_identify_token_sources),
        cmocka_unit_test(test_auth_identify_long_token),
        cmocka_unit_test(test_auth_identify_never_echoes_token),
        cmocka_unit_test(test_auth_identify_query_mode),
        cmocka_unit_test(test_auth_identify_token_and_query),
        cmocka_unit_test(test_auth_client_addr),
        cmocka_unit_test(test_auth_issue_token),
    };
    return cmocka_run_group_tests(tests, keys_setup, keys_teardown);
}
