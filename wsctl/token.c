/*
 * token.c -- `wsctl token USER`: a test token signed with the configured HS256 secret (the same
 * signing code as the demo page's /demo/token). RS256/ES256 tokens are signed by the application
 * with a private key wsproxy never holds, so wsctl refuses those.
 */
#include <getopt.h>
#include <jansson.h>
#include <string.h>

#include "proto/auth.h"
#include "wsctl.h"

int cmd_token(struct wsctl *w, int argc, char **argv)
{
    static const struct option opts[] = {
        {"ttl", required_argument, NULL, 't'}, WSCTL_COMMON_OPTS, {NULL, 0, NULL, 0}};
    int64_t ttl_ms = 3600 * 1000;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "t:" WSCTL_COMMON_SHORT, opts, NULL)) != -1) {
        if (opt == 't') {
            if (config_parse_duration(optarg, &ttl_ms) != 0 || ttl_ms < 1000 ||
                ttl_ms > 366ll * 86400 * 1000)
                return wsctl_usage_error(w, argv[0], "--ttl '%s': use a duration from 1s to 366d",
                                         optarg);
        } else if (opt == 'h') {
            return wsctl_help(w, argv[0]);
        } else if (!wsctl_common_opt(w, opt, optarg)) {
            return wsctl_usage_error(w, argv[0], "unknown option or missing value: %s",
                                     argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return wsctl_usage_error(w, argv[0], argc - optind ? "one USER only" : "missing USER");
    const char *user = argv[optind];
    if (!auth_user_valid(user, strlen(user)))
        return wsctl_usage_error(w, argv[0], "'%s' is not a valid user id", user);
    if (wsctl_config(w) != 0)
        return WSCTL_ERROR;
    const char *src = w->cfg.source ? w->cfg.source : "the built-in defaults";
    if (strcmp(w->cfg.jwt_alg, "HS256") != 0) {
        wsctl_errorf(w,
                     "[auth] jwt_alg is %s in %s: those tokens are signed with your application's "
                     "private key, which wsproxy does not hold; wsctl token mints HS256 tokens only",
                     w->cfg.jwt_alg, src);
        return WSCTL_ERROR;
    }
    if (!w->cfg.jwt_secret[0]) {
        wsctl_errorf(w, "no [auth] jwt_secret in %s: nothing to sign with", src);
        return WSCTL_ERROR;
    }
    struct auth a;
    struct auth_settings as = {.mode = "token", .jwt_alg = "HS256", .jwt_secret = w->cfg.jwt_secret,
                               .trusted_proxies = ""};
    char err[256], tok[2048];
    if (auth_init(&a, &as, err, sizeof(err)) != 0) {
        wsctl_errorf(w, "[auth] %s", err);
        return WSCTL_ERROR;
    }
    int n = auth_issue_token(&a, user, ttl_ms, w->now_ms, tok, sizeof(tok));
    auth_release(&a);
    if (n < 0) {
        wsctl_errorf(w, "cannot sign a token for '%s'", user);
        return WSCTL_ERROR;
    }
    if (w->json) {
        json_t *o = json_pack("{s:s, s:s, s:I}", "token", tok, "user", user, "exp",
                              (json_int_t)((w->now_ms + ttl_ms + 999) / 1000));
        json_dumpf(o, w->out, JSON_COMPACT);
        fputc('\n', w->out);
        json_decref(o);
    } else {
        fprintf(w->out, "%s\n", tok);
    }
    return WSCTL_OK;
}
