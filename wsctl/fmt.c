/*
 * fmt.c -- wsctl's output for people: relative times, durations, sizes and aligned tables.
 * Pure functions of their arguments (the clock is passed in), so tests can pin every output.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/utf8.h"
#include "wsctl.h"

void fmt_ago(char *out, size_t cap, int64_t then_ms, int64_t now_ms)
{
    if (then_ms == 0) {
        snprintf(out, cap, "-");
        return;
    }
    int64_t d = now_ms - then_ms;
    bool ahead = d < 0;
    if (ahead)
        d = -d;
    int64_t s = d / 1000;
    if (s < 1) {
        snprintf(out, cap, "just now");
        return;
    }
    char n[32];
    if (s < 60)
        snprintf(n, sizeof(n), "%llds", (long long)s);
    else if (s < 3600)
        snprintf(n, sizeof(n), "%lldm", (long long)(s / 60));
    else if (s < 48 * 3600)
        snprintf(n, sizeof(n), "%lldh", (long long)(s / 3600));
    else
        snprintf(n, sizeof(n), "%lldd", (long long)(s / 86400));
    snprintf(out, cap, ahead ? "in %s" : "%s ago", n);
}

void fmt_duration(char *out, size_t cap, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    int64_t s = ms / 1000;
    if (s < 1)
        snprintf(out, cap, "%lldms", (long long)ms);
    else if (s < 60)
        snprintf(out, cap, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(out, cap, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
    else if (s < 86400)
        snprintf(out, cap, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    else
        snprintf(out, cap, "%lldd%02lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
}

void fmt_time(char *out, size_t cap, int64_t ms)
{
    if (ms == 0) {
        snprintf(out, cap, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, cap, "%lld", (long long)ms);
}

void fmt_bytes(char *out, size_t cap, uint64_t n)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (n < 1024) {
        snprintf(out, cap, "%llu B", (unsigned long long)n);
        return;
    }
    double v = (double)n;
    size_t u = 0;
    v /= 1024;
    while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024;
        u++;
    }
    snprintf(out, cap, "%.1f %s", v, units[u]);
}

static bool is_cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

size_t fmt_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (!is_cont((unsigned char)*s))
            w++;
    return w;
}

void fmt_clip(char *out, size_t cap, const char *s, size_t max)
{
    if (cap < 4) {
        if (cap)
            out[0] = '\0';
        return;
    }
    bool cut = fmt_width(s) > max;
    size_t keep = cut ? (max > 3 ? max - 3 : 0) : max;
    size_t o = 0, w = 0;
    const char *p = s;
    while (*p && w < keep) {
        size_t len = 1;
        while (p[len] && is_cont((unsigned char)p[len]))
            len++;
        /* A whole character fits with room for "..." and the NUL, or none of it is copied. */
        if (o + len + 4 > cap) {
            cut = true;
            break;
        }
        for (size_t i = 0; i < len; i++)
            out[o++] = (p[i] == '\n' || p[i] == '\r' || p[i] == '\t') ? ' ' : p[i];
        p += len;
        w++;
    }
    if (cut) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

void wsctl_pct_encode(char *out, size_t cap, const char *s)
{
    static const char hexd[] = "0123456789ABCDEF";
    size_t o = 0;
    if (cap == 0)
        return;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~';
        if (o + (keep ? 1 : 3) + 1 > cap)
            break;
        if (keep) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hexd[c >> 4];
            out[o++] = hexd[c & 15];
        }
    }
    out[o] = '\0';
}

/* ---- tables ---- */

void table_init(struct table *t, size_t ncols, const char *const *head)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    t->head = head;
}

void table_add(struct table *t, const char *const *row)
{
    if (t->oom)
        return;
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **grown = realloc(t->cells, cap * t->ncols * sizeof(*grown));
        if (!grown) {
            t->oom = true;
            return;
        }
        t->cells = grown;
        t->cap = cap;
    }
    char **dst = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        dst[i] = fmt_safe(row[i] ? row[i] : "-");
        if (!dst[i]) {
            while (i--)
                free(dst[i]);
            t->oom = true;
            return;
        }
    }
    t->nrows++;
}

static void print_cell(FILE *out, const char *s, size_t width, bool last)
{
    fputs(s, out);
    if (last)
        return;
    for (size_t w = fmt_width(s); w < width + 2; w++)
        fputc(' ', out);
}

void table_print(const struct table *t, FILE *out)
{
    size_t *width = calloc(t->ncols, sizeof(*width));
    if (!width)
        return;
    for (size_t c = 0; c < t->ncols; c++) {
        width[c] = fmt_width(t->head[c]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t w = fmt_width(t->cells[r * t->ncols + c]);
            if (w > width[c])
                width[c] = w;
        }
    }
    for (size_t c = 0; c < t->ncols; c++)
        print_cell(out, t->head[c], width[c], c + 1 == t->ncols);
    fputc('\n', out);
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++)
            print_cell(out, t->cells[r * t->ncols + c], width[c], c + 1 == t->ncols);
        fputc('\n', out);
    }
    free(width);
}

void table_release(struct table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->nrows = t->cap = 0;
}

char *fmt_safe(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1); /* each byte may become U+FFFD */
    if (out)
        utf8_sanitize(s, n, out, 3 * n + 1);
    return out;
}
