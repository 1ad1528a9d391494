/*
 * fuzz_fcgi.c -- what the events client reads: FastCGI records (whole vs split must agree), the
 * CGI Status and the HTTP status line (http_resp_status); aborts when a contract breaks.
 */
/* fuzz-deps: proxy/proto/fcgi.c proxy/proto/http1.c */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/fcgi.h"
#include "proto/http1.h"

#define CHECK(c) ((c) ? (void)0 : abort())

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct sum {
    size_t out, err;
    uint32_t hash;
    int ends, rc;
};

static void run(struct fcgi_parser *p, struct sum *s, const uint8_t *buf, size_t len)
{
    while (s->rc == 0) {
        struct fcgi_event ev;
        int n = fcgi_parse(p, buf, len, &ev);
        if (n < 0) {
            s->rc = n;
            return;
        }
        CHECK((size_t)n <= len);
        if (ev.kind == FCGI_EV_STDOUT || ev.kind == FCGI_EV_STDERR) {
            CHECK(ev.len > 0 && ev.data >= buf && ev.data + ev.len <= buf + n);
            for (size_t i = 0; i < ev.len; i++)
                s->hash = s->hash * 31 + ev.data[i];
            *(ev.kind == FCGI_EV_STDOUT ? &s->out : &s->err) += ev.len;
        } else if (ev.kind == FCGI_EV_END) {
            s->ends++;
        } else {
            CHECK(n == (int)len);
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fcgi_parser p;
    struct sum whole = {0}, split = {0};
    size_t cut = size ? data[0] % (size + 1) : 0;
    fcgi_parser_init(&p);
    run(&p, &whole, data, size);
    fcgi_parser_init(&p);
    run(&p, &split, data, cut);
    run(&p, &split, data + cut, size - cut);
    CHECK(whole.rc == split.rc && whole.out == split.out && whole.err == split.err &&
          whole.hash == split.hash && whole.ends == split.ends && whole.ends <= 1);

    int st = 0;
    size_t hl = 0;
    int rc = fcgi_cgi_status((const char *)data, size, 4096, &st, &hl);
    CHECK(rc == 0 || rc == FCGI_NEED_MORE || rc == FCGI_ERR_HEAD);
    if (rc == 0)
        CHECK(st >= 100 && st <= 599 && hl >= 1 && hl <= size);

    st = 0;
    rc = http_resp_status((const char *)data, size, &st);
    CHECK(rc >= -1 && (size_t)(rc > 0 ? rc : 0) <= size);
    if (rc > 0)
        CHECK(st >= 100 && st <= 599 && data[rc - 1] == '\n');
    if (rc == 0)
        CHECK(size < 1024);
    return 0;
}
