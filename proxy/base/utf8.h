/*
 * utf8.h -- incremental UTF-8 validator (RFC 3629): text messages may split a code point across
 * fragments and reads, so state carries over between calls. Pure functions, no allocation.
 */
#ifndef WSP_UTF8_H
#define WSP_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UTF8_ACCEPT 0u /* state at a code point boundary; the initial state */
#define UTF8_REJECT 1u /* sticky: the input is not UTF-8 */

/*
 * Advance *state over s[0..n). Returns the new state: UTF8_ACCEPT at a boundary, UTF8_REJECT as soon as
 * a byte makes the input invalid (overlongs, surrogates, > U+10FFFF included), anything else = inside a
 * code point. Fails fast: the first bad byte rejects, even if the message is not finished.
 */
uint32_t utf8_feed(uint32_t *state, const uint8_t *s, size_t n);

/* Whole-buffer check: true if s[0..n) is complete, valid UTF-8. */
bool utf8_valid(const uint8_t *s, size_t n);

/* Length (1-4) of the one valid UTF-8 character that starts s[0..n), or 0 if none does (n > 0). */
size_t utf8_char_len(const uint8_t *s, size_t n);

/*
 * Copy s[0..n) into out (cap >= 1 bytes, always NUL-terminated) as valid UTF-8 for text that came
 * from the network and will be shown or sent as JSON (a User-Agent): every byte that is not part of
 * a valid character, and every control character (C0, DEL, C1), becomes U+FFFD; the copy is cut on a
 * character boundary when it does not fit. Returns the length written (< cap).
 */
size_t utf8_sanitize(const char *s, size_t n, char *out, size_t cap);

#endif
