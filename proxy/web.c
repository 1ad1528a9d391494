/*
 * web.c -- static files and the demo token endpoint on the main listener. Small files only (the
 * chat page); anything that looks like traversal is refused before the file system is touched.
 */
#include "web.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/auth.h"
#include "net/conn.h"
#include "proto/http1.h"
#include "base/log.h"
#include "net/loop.h"

#define WEB_MAX_FILE (4 * 1024 * 1024)

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int web_resolve_path(const char *root, const char *url_path, size_t url_len, char *out, size_t cap)
{
    char path[PATH_MAX];
    size_t n = 0;
    if (url_len == 0 || url_path[0] != '/')
        return -1;
    for (size_t i = 0; i < url_len; i++) {
        char ch = url_path[i];
        if (ch == '%') {
            int hi = i + 2 < url_len ? hexval(url_path[i + 1]) : -1;
            int lo = i + 2 < url_len ? hexval(url_path[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (ch == '\0' || ch == '\\' || n + 1 >= sizeof(path))
            return -1;
        path[n++] = ch;
    }
    path[n] = '\0';
    /* Every segment must be a plain name: no "..", no "." and no hidden files (".git", ".env"). */
    for (const char *seg = path; *seg;) {
        seg++; /* skip '/' */
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len > 0 && seg[0] == '.')
            return -1;
        if (len == 0 && end)
            return -1; /* "//" */
        seg += len;
    }
    const char *index = path[n - 1] == '/' ? "index.html" : "";
    int w = snprintf(out, cap, "%s%s%s", root, path, index);
    if (w < 0 || (size_t)w >= cap)
        return -1;
    return 0;
}

const char *web_content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},   {".json", "application/json"},
        {".svg", "image/svg+xml"},             {".png", "image/png"},
        {".ico", "image/x-icon"},              {".txt", "text/plain; charset=utf-8"},
        {".woff2", "font/woff2"},              {".webmanifest", "application/manifest+json"},
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

static void reply_text(struct conn *c, int status, const char *text)
{
    conn_http_reply(c, status, "text/plain; charset=utf-8", NULL, text, strlen(text), false);
}

static void demo_token(const struct auth *auth, struct conn *c, const struct http_req *req)
{
    const struct px_config *cfg = c->lp->cfg;
    char user[AUTH_USER_MAX + 1];
    if (!cfg->demo_enabled) {
        reply_text(c, 404, "not found\n");
        return;
    }
    int n = req->query ? http_query_param(req->query, req->query_len, "user", user, sizeof(user)) : -1;
    if (n < 0 || !auth_user_valid(user, (size_t)n)) {
        reply_text(c, 400, "user must be 1-64 bytes of UTF-8 without control characters\n");
        return;
    }
    char token[2048];
    int64_t now = loop_now_ms(c->lp);
    if (auth_issue_token(auth, user, cfg->demo_token_ttl_ms, now, token, sizeof(token)) < 0) {
        reply_text(c, 500, "cannot issue a token (is [auth] jwt_alg HS256 with a jwt_secret?)\n");
        return;
    }
    char body[2400];
    /* user passed auth_user_valid, but may still hold quotes or backslashes: escape them. */
    char esc[2 * AUTH_USER_MAX + 1];
    size_t e = 0;
    for (int i = 0; i < n; i++) {
        if (user[i] == '"' || user[i] == '\\')
            esc[e++] = '\\';
        esc[e++] = user[i];
    }
    esc[e] = '\0';
    int len = snprintf(body, sizeof(body), "{\"token\":\"%s\",\"user\":\"%s\",\"exp\":%lld}\n", token,
                       esc, (long long)((now + cfg->demo_token_ttl_ms) / 1000 * 1000));
    log_info("demo: issued a token for %s to %s", user, c->addr);
    conn_http_reply(c, 200, "application/json", "Cache-Control: no-store\r\n", body, (size_t)len,
                    false);
}

/*
 * Whether path, with every symlink resolved, is still under root (also resolved): a link inside
 * static_dir to /etc/passwd must not publish it. What is missing counts as inside (404 follows).
 */
static bool inside_root(const char *root, const char *path)
{
    char real_root[PATH_MAX], real[PATH_MAX];
    if (!realpath(root, real_root))
        return false;
    if (!realpath(path, real))
        return errno == ENOENT;
    size_t n = strlen(real_root);
    return strncmp(real, real_root, n) == 0 && (real[n] == '/' || real[n] == '\0');
}

static void static_file(struct conn *c, const struct http_req *req, bool head)
{
    const char *root = c->lp->cfg->static_dir;
    char path[PATH_MAX];
    if (web_resolve_path(root, req->path, req->path_len, path, sizeof(path)) != 0) {
        reply_text(c, 404, "not found\n");
        return;
    }
    if (!c->lp->cfg->static_follow_symlinks && !inside_root(root, path)) {
        log_warn("conn %llu %s: %s leads outside static_dir through a symlink; refused "
                 "([server] static_follow_symlinks)", (unsigned long long)c->id, c->addr, path);
        reply_text(c, 404, "not found\n");
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > WEB_MAX_FILE) {
        if (fd >= 0)
            close(fd);
        reply_text(c, 404, "not found\n");
        return;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    ssize_t got = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    close(fd);
    if (got != st.st_size) {
        free(buf);
        reply_text(c, 500, "cannot read file\n");
        return;
    }
    conn_http_reply(c, 200, web_content_type(path),
                    "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n", buf,
                    (size_t)got, head);
    free(buf);
}

bool web_handle(const struct auth *auth, struct conn *c, const struct http_req *req)
{
    bool get = req->method_len == 3 && memcmp(req->method, "GET", 3) == 0;
    bool head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    if (req->path_len == 11 && memcmp(req->path, "/demo/token", 11) == 0) {
        if (!get) {
            conn_http_reply(c, 405, "text/plain; charset=utf-8", "Allow: GET\r\n",
                            "method not allowed\n", 19, false);
            return true;
        }
        demo_token(auth, c, req);
        return true;
    }
    if (!c->lp->cfg->static_dir[0])
        return false;
    if (!get && !head) {
        conn_http_reply(c, 405, "text/plain; charset=utf-8", "Allow: GET, HEAD\r\n",
                        "method not allowed\n", 19, false);
        return true;
    }
    static_file(c, req, head);
    return true;
}
