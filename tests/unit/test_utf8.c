/*
 * test_utf8.c -- unit tests for the incremental UTF-8 validator: fixed vectors, chunking,
 * fail-fast, and a brute-force comparison against a plain decoder written for this test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "base/utf8.h"

struct utf8_vec {
    const char *name;
    const char *s;
    size_t len;
    size_t reject_at; /* invalid ones: bytes fed when REJECT first shows; 0 = never (truncated) */
};

/* clang-format off */
#define VEC(name, lit) {name, lit, sizeof(lit) - 1, 0}
#define BAD(name, lit, at) {name, lit, sizeof(lit) - 1, at}

static const struct utf8_vec valid_vecs[] = {
    VEC("empty", ""),
    VEC("ascii", "Hello, world"),
    VEC("nul and del", "a\x00" "b\x7f"),
    VEC("2-byte lowest U+0080", "\xc2\x80"),
    VEC("2-byte highest U+07FF", "\xdf\xbf"),
    VEC("3-byte lowest U+0800", "\xe0\xa0\x80"),
    VEC("3-byte before surrogates U+D7FF", "\xed\x9f\xbf"),
    VEC("3-byte after surrogates U+E000", "\xee\x80\x80"),
    VEC("3-byte highest U+FFFF", "\xef\xbf\xbf"),
    VEC("euro sign", "\xe2\x82\xac"),
    VEC("4-byte lowest U+10000", "\xf0\x90\x80\x80"),
    VEC("4-byte highest U+10FFFF", "\xf4\x8f\xbf\xbf"),
    VEC("kosme", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"),
    VEC("emoji", "\xf0\x9f\x98\x80"),
    VEC("ascii runs around multibyte",
        "0123456789abcdefghij\xce\xba\xe1\xbd\xb9\xf0\x9f\x98\x80" "0123456789abcdefghij"),
};

static const struct utf8_vec invalid_vecs[] = {
    BAD("overlong C0 80", "\xc0\x80", 1),
    BAD("overlong C1 BF", "\xc1\xbf", 1),
    BAD("overlong E0 80 80", "\xe0\x80\x80", 2),
    BAD("overlong E0 9F BF", "\xe0\x9f\xbf", 2),
    BAD("overlong F0 80 80 80", "\xf0\x80\x80\x80", 2),
    BAD("overlong F0 8F BF BF", "\xf0\x8f\xbf\xbf", 2),
    BAD("surrogate ED A0 80", "\xed\xa0\x80", 2),
    BAD("surrogate ED BF BF", "\xed\xbf\xbf", 2),
    BAD("above U+10FFFF F4 90 80 80", "\xf4\x90\x80\x80", 2),
    BAD("lead F5", "\xf5\x80\x80\x80", 1),
    BAD("lead FE", "\xfe", 1),
    BAD("lead FF", "\xff", 1),
    BAD("lone continuation 80", "\x80", 1),
    BAD("lone continuation BF after ascii", "ab\xbf", 3),
    BAD("lead then ascii", "\xc2\x41", 2),
    BAD("3-byte cut by ascii", "\xe2\x82\x28", 3),
    BAD("4-byte cut by new lead", "\xf0\x9f\x98\xf0", 4),
    BAD("valid then bad", "\xe2\x82\xac\xe2\x28", 5),
    BAD("bad after long ascii run", "0123456789abcdefg\x80", 18),
    BAD("truncated 2-byte", "\xc2", 0),
    BAD("truncated 3-byte", "\xe2\x82", 0),
    BAD("truncated 4-byte", "\xf0\x9f\x98", 0),
    BAD("truncated after ascii run", "0123456789abcdef\xf4\x8f\xbf", 0),
};
/* clang-format on */

#define NVEC(a) (sizeof(a) / sizeof((a)[0]))

/* Feeds one byte at a time; returns how many bytes were fed when REJECT appeared, 0 if never. */
static size_t reject_offset(const uint8_t *s, size_t n)
{
    uint32_t st = UTF8_ACCEPT;

    for (size_t i = 0; i < n; i++)
        if (utf8_feed(&st, s + i, 1) == UTF8_REJECT)
            return i + 1;
    return 0;
}

static void test_utf8_valid_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < NVEC(valid_vecs); i++) {
        const struct utf8_vec *v = &valid_vecs[i];
        uint32_t st = UTF8_ACCEPT;
        print_message("%s\n", v->name);
        assert_true(utf8_valid((const uint8_t *)v->s, v->len));
        assert_int_equal(utf8_feed(&st, (const uint8_t *)v->s, v->len), UTF8_ACCEPT);
        assert_int_equal(st, UTF8_ACCEPT);
    }
}

static void test_utf8_invalid_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < NVEC(invalid_vecs); i++) {
        const struct utf8_vec *v = &invalid_vecs[i];
        const uint8_t *s = (const uint8_t *)v->s;
        uint32_t st = UTF8_ACCEPT;
        print_message("%s\n", v->name);
        assert_false(utf8_valid(s, v->len));
        utf8_feed(&st, s, v->len);
        if (v->reject_at)
            assert_int_equal(st, UTF8_REJECT);
        else
            assert_true(st != UTF8_ACCEPT && st != UTF8_REJECT);
        assert_int_equal(reject_offset(s, v->len), v->reject_at);
    }
}

/* State carries over any split: every vector cut at every offset gives the whole-buffer verdict. */
static void test_utf8_split_across_chunks(void **state)
{
    const struct utf8_vec *sets[2] = {valid_vecs, invalid_vecs};
    size_t counts[2] = {NVEC(valid_vecs), NVEC(invalid_vecs)};

    (void)state;
    for (int set = 0; set < 2; set++) {
        for (size_t i = 0; i < counts[set]; i++) {
            const uint8_t *s = (const uint8_t *)sets[set][i].s;
            size_t n = sets[set][i].len;
            for (size_t cut = 0; cut <= n; cut++) {
                uint32_t st = UTF8_ACCEPT;
                utf8_feed(&st, s, cut);
                utf8_feed(&st, s + cut, n - cut);
                assert_int_equal(st == UTF8_ACCEPT, set == 0);
            }
        }
    }
}

/* F4 90 can never become valid, so it rejects right there, not where the sequence would end. */
static void test_utf8_fails_fast(void **state)
{
    static const char *const prefixes[] = {"\xf4\x90", "\xed\xa0", "\xe0\x80",
                                           "\xf0\x8f", "\xc0",     "\xf5"};
    (void)state;
    for (size_t i = 0; i < NVEC(prefixes); i++) {
        uint32_t st = UTF8_ACCEPT;
        assert_int_equal(utf8_feed(&st, (const uint8_t *)prefixes[i], strlen(prefixes[i])),
                         UTF8_REJECT);
    }
}

static void test_utf8_reject_is_sticky(void **state)
{
    uint32_t st = UTF8_ACCEPT;
    uint32_t bogus = 0xdeadbeef;

    (void)state;
    assert_int_equal(utf8_feed(&st, (const uint8_t *)"\xff", 1), UTF8_REJECT);
    assert_int_equal(utf8_feed(&st, (const uint8_t *)"plain ascii text", 16), UTF8_REJECT);
    assert_int_equal(utf8_feed(&st, (const uint8_t *)"", 0), UTF8_REJECT);
    /* A state the DFA never produces is not trusted. */
    assert_int_equal(utf8_feed(&bogus, (const uint8_t *)"a", 1), UTF8_REJECT);
}

static size_t encode(uint32_t cp, size_t width, uint8_t out[4])
{
    switch (width) {
    case 1:
        out[0] = (uint8_t)cp;
        break;
    case 2:
        out[0] = (uint8_t)(0xc0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3f));
        break;
    case 3:
        out[0] = (uint8_t)(0xe0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp & 0x3f));
        break;
    default:
        out[0] = (uint8_t)(0xf0 | cp >> 18);
        out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
        out[3] = (uint8_t)(0x80 | (cp & 0x3f));
        break;
    }
    return width;
}

/* Every code point in its shortest form is valid but surrogates; every longer form is overlong. */
static void test_utf8_all_code_points(void **state)
{
    uint8_t b[4];

    (void)state;
    for (uint32_t cp = 0; cp < 0x200000; cp++) {
        size_t w = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
        bool ok = cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
        if (utf8_valid(b, encode(cp, w, b)) != ok)
            fail_msg("U+%04X in %zu bytes: expected %s", (unsigned)cp, w, ok ? "valid" : "invalid");
        for (size_t longer = w + 1; longer <= 4; longer++)
            if (utf8_valid(b, encode(cp, longer, b)))
                fail_msg("U+%04X overlong in %zu bytes accepted", (unsigned)cp, longer);
    }
}

/*
 * Reference: decode the obvious way (RFC 3629 §3/§4). Returns true if s is a prefix of some valid
 * UTF-8 text; *complete says whether it is valid as it stands. This is what fail-fast must match.
 */
static bool ref_prefix_ok(const uint8_t *s, size_t n, bool *complete)
{
    size_t i = 0;

    *complete = false;
    while (i < n) {
        uint8_t b = s[i];
        uint32_t cp, min;
        size_t need, have;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xe0) == 0xc0) {
            need = 1, cp = b & 0x1fu, min = 0x80;
        } else if ((b & 0xf0) == 0xe0) {
            need = 2, cp = b & 0x0fu, min = 0x800;
        } else if ((b & 0xf8) == 0xf0) {
            need = 3, cp = b & 0x07u, min = 0x10000;
        } else {
            return false;
        }
        have = n - i - 1 < need ? n - i - 1 : need;
        for (size_t k = 1; k <= have; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3fu);
        }
        if (have < need) {
            /* Cut short: could any continuation bytes still make a valid code point? */
            unsigned rest = (unsigned)(6 * (need - have));
            uint32_t lo = cp << rest, hi = lo | ((1u << rest) - 1);
            if (lo < min)
                lo = min;
            if (hi > 0x10ffff)
                hi = 0x10ffff;
            return lo <= hi && !(lo >= 0xd800 && hi <= 0xdfff);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += need + 1;
    }
    *complete = true;
    return true;
}

static void check_against_ref(const uint8_t *s, size_t n)
{
    bool complete;
    bool ok = ref_prefix_ok(s, n, &complete);
    uint32_t st = UTF8_ACCEPT;

    utf8_feed(&st, s, n);
    if ((st != UTF8_REJECT) != ok || (st == UTF8_ACCEPT) != complete) {
        char hex[64] = "";
        for (size_t i = 0; i < n && i < 16; i++)
            snprintf(hex + 3 * i, 4, "%02x ", s[i]);
        fail_msg("%s: state %u, reference prefix_ok=%d complete=%d", hex, (unsigned)st, ok,
                 complete);
    }
}

/*
 * All 1- and 2-byte inputs, then every input of up to 4 bytes over an alphabet holding both ends of
 * every byte class, so every DFA path of that length is compared with the reference, prefixes
 * included.
 */
static void test_utf8_matches_reference(void **state)
{
    static const uint8_t alpha[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf,
                                    0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee,
                                    0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff};
    const size_t na = sizeof alpha;
    uint8_t b[4];

    (void)state;
    for (unsigned x = 0; x < 0x10000; x++) {
        b[0] = (uint8_t)(x >> 8), b[1] = (uint8_t)x;
        check_against_ref(b, 1);
        check_against_ref(b, 2);
    }
    for (size_t i = 0; i < na * na * na * na; i++) {
        size_t k = i;
        for (int j = 0; j < 4; j++, k /= na)
            b[j] = alpha[k % na];
        check_against_ref(b, 3);
        check_against_ref(b, 4);
    }
}

/*
 * The 8-byte ASCII skip must hand over to the DFA exactly where a non-ASCII byte sits, wherever
 * that falls relative to the word; random mixes of ASCII runs and boundary bytes, fed whole and in
 * pieces.
 */
static void test_utf8_ascii_fast_path(void **state)
{
    static const uint8_t odd[] = {0x80, 0xbf, 0xc2, 0xdf, 0xe0, 0xa0, 0xed, 0x9f, 0xf0,
                                  0x90, 0xf4, 0x8f, 0xc0, 0xff, 0xe2, 0x82, 0xac};
    uint64_t rng = 0x9e3779b97f4a7c15u;
    uint8_t buf[80];

    (void)state;
    for (int iter = 0; iter < 200000; iter++) {
        size_t n;
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        n = rng % sizeof buf;
        for (size_t i = 0; i < n; i++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            bool pick_odd = (rng & 0xf) < 2;
            buf[i] = pick_odd ? odd[(rng >> 8) % sizeof odd] : (uint8_t)(0x20 + (rng >> 8) % 90);
        }
        check_against_ref(buf, n);
        {
            bool complete;
            bool ok = ref_prefix_ok(buf, n, &complete);
            uint32_t st = UTF8_ACCEPT;
            size_t step = 1 + (rng >> 32) % 11;
            for (size_t off = 0; off < n; off += step)
                utf8_feed(&st, buf + off, n - off < step ? n - off : step);
            assert_int_equal(st == UTF8_REJECT, !ok);
            assert_int_equal(st == UTF8_ACCEPT, complete);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_valid_vectors),
        cmocka_unit_test(test_utf8_invalid_vectors),
        cmocka_unit_test(test_utf8_split_across_chunks),
        cmocka_unit_test(test_utf8_fails_fast),
        cmocka_unit_test(test_utf8_reject_is_sticky),
        cmocka_unit_test(test_utf8_all_code_points),
        cmocka_unit_test(test_utf8_matches_reference),
        cmocka_unit_test(test_utf8_ascii_fast_path),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
