/*
 * utf8.c -- incremental UTF-8 validator: a byte-class table feeding a 9-state DFA (after
 * Hoehrmann's design, tables written for this project). Validates only; never decodes code points.
 */
#include "base/utf8.h"

#include <string.h>

/*
 * Byte classes. The second byte of E0/ED/F0/F4 sequences has a narrower range than a plain
 * continuation (RFC 3629 §4), so continuation bytes split into three classes and those four lead
 * bytes get their own.
 */
enum utf8_class {
    C_ASCII, /* 00..7F */
    C_80,    /* 80..8F */
    C_90,    /* 90..9F */
    C_A0,    /* A0..BF */
    C_BAD,   /* C0 C1 (always overlong), F5..FF (beyond U+10FFFF) */
    C_LEAD2, /* C2..DF */
    C_E0,    /* E0: next A0..BF, else overlong */
    C_LEAD3, /* E1..EC EE EF */
    C_ED,    /* ED: next 80..9F, else a surrogate */
    C_F0,    /* F0: next 90..BF, else overlong */
    C_LEAD4, /* F1..F3 */
    C_F4,    /* F4: next 80..8F, else beyond U+10FFFF */
    C_COUNT
};

/* States 0 and 1 are UTF8_ACCEPT and UTF8_REJECT as the header promises. */
enum utf8_dfa_state {
    S_ACC = UTF8_ACCEPT,
    S_REJ = UTF8_REJECT,
    S_N1, /* one continuation byte left */
    S_N2, /* two left */
    S_E0, /* after E0 */
    S_ED, /* after ED */
    S_N3, /* three left */
    S_F0, /* after F0 */
    S_F4, /* after F4 */
    S_COUNT
};

/* clang-format off */
static const uint8_t utf8_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 00..0F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 10..1F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 20..2F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 30..3F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 40..4F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 50..5F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 60..6F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 70..7F */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 80..8F */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 90..9F */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* A0..AF */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* B0..BF */
    4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, /* C0..CF */
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, /* D0..DF */
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 7, /* E0..EF */
    9, 10, 10, 10, 11, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* F0..FF */
};

/*
 * Any byte not listed for a state rejects, so an impossible prefix (C0, E0 80, ED A0, F4 90 ...)
 * fails on the byte that makes it impossible rather than when the sequence would have ended.
 */
static const uint8_t utf8_next[S_COUNT][C_COUNT] = {
    [S_ACC] = {
        [C_ASCII] = S_ACC, [C_80] = S_REJ, [C_90] = S_REJ, [C_A0] = S_REJ, [C_BAD] = S_REJ,
        [C_LEAD2] = S_N1, [C_E0] = S_E0, [C_LEAD3] = S_N2, [C_ED] = S_ED,
        [C_F0] = S_F0, [C_LEAD4] = S_N3, [C_F4] = S_F4,
    },
    [S_REJ] = {
        S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ,
    },
    [S_N1] = {
        S_REJ, S_ACC, S_ACC, S_ACC, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ,
    },
    [S_N2] = {
        S_REJ, S_N1, S_N1, S_N1, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ,
    },
    [S_E0] = {
        S_REJ, S_REJ, S_REJ, S_N1, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ,
    },
    [S_ED] = {
        S_REJ, S_N1, S_N1, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ,
    },
    [S_N3] = {
        S_REJ, S_N2, S_N2, S_N2, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ,
    },
    [S_F0] = {
        S_REJ, S_REJ, S_N2, S_N2, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ,
    },
    [S_F4] = {
        S_REJ, S_N2, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ,
    },
};
/* clang-format on */

uint32_t utf8_feed(uint32_t *state, const uint8_t *s, size_t n)
{
    uint32_t st = *state;
    size_t i = 0;

    /* A state we never produce means the caller's memory is not ours to trust: call it invalid. */
    if (st >= S_COUNT)
        st = S_REJ;
    while (i < n && st != S_REJ) {
        /*
         * Chat text is mostly ASCII: at a boundary, skip 8 bytes at a time while none has the top
         * bit set. memcpy keeps the load legal at any alignment and compiles to a single move.
         */
        if (st == S_ACC) {
            while (n - i >= 8) {
                uint64_t w;
                memcpy(&w, s + i, sizeof w);
                if (w & UINT64_C(0x8080808080808080))
                    break;
                i += 8;
            }
            if (i == n)
                break;
        }
        st = utf8_next[st][utf8_class[s[i]]];
        i++;
    }
    *state = st;
    return st;
}

bool utf8_valid(const uint8_t *s, size_t n)
{
    uint32_t st = UTF8_ACCEPT;

    return utf8_feed(&st, s, n) == UTF8_ACCEPT;
}

size_t utf8_char_len(const uint8_t *s, size_t n)
{
    uint32_t state = UTF8_ACCEPT;
    for (size_t i = 0; i < n && i < 4; i++) {
        utf8_feed(&state, s + i, 1);
        if (state == UTF8_ACCEPT)
            return i + 1;
        if (state == UTF8_REJECT)
            return 0;
    }
    return 0; /* truncated sequence */
}

static bool is_control(const uint8_t *p, size_t len)
{
    if (len == 1)
        return p[0] < 0x20 || p[0] == 0x7f;
    return len == 2 && p[0] == 0xc2 && p[1] < 0xa0; /* U+0080..U+009F */
}

size_t utf8_sanitize(const char *s, size_t n, char *out, size_t cap)
{
    static const char fffd[] = "\xef\xbf\xbd";
    const uint8_t *p = (const uint8_t *)s;
    size_t o = 0, i = 0;
    while (i < n) {
        size_t len = utf8_char_len(p + i, n - i);
        const char *src = (const char *)p + i;
        size_t take = len ? len : 1;
        size_t put = len;
        if (!len || is_control(p + i, len)) {
            src = fffd;
            put = 3;
        }
        if (o + put >= cap)
            break;
        memcpy(out + o, src, put);
        o += put;
        i += take;
    }
    out[o] = '\0';
    return o;
}
