/*
 * main.c -- startup and teardown only: flags -> config -> log level -> server -> loop -> exit code.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/log.h"
#include "base/version.h"
#include "server.h"


static void usage(FILE *out)
{
    fprintf(out,
            "usage: wsproxy [options]\n"
            "  -c, --config FILE      INI configuration (default: ./wsproxy.ini, else " CONFIG_SYSTEM_PATH ",\n"
            "                         else built-in defaults)\n"
            "  -l, --listen ADDR:PORT override [server] listen\n"
            "  -d, --db PATH          override [store] path\n"
            "      --api-listen ADDR:PORT override [api] listen (empty disables)\n"
            "      --log-level LEVEL  override [log] level (error, warn, info, debug)\n"
            "  -t, --check            validate the configuration, keys and certificates; exit 0 ok, 2 errors\n"
            "      --print-config     with --config or flags: the effective configuration (secrets\n"
            "                         masked); without: every key with its default and help\n"
            "  -v, --version          print the version and exit\n"
            "  -h, --help             this text\n");
}

int main(int argc, char **argv)
{
    enum { OPT_API_LISTEN = 256, OPT_LOG_LEVEL, OPT_PRINT_CONFIG };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"db", required_argument, NULL, 'd'},
        {"api-listen", required_argument, NULL, OPT_API_LISTEN},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"check", no_argument, NULL, 't'},
        {"print-config", no_argument, NULL, OPT_PRINT_CONFIG},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    struct config_overrides ov = {0};
    int check_only = 0, print_config = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:l:d:tvh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'l':
            ov.listen = optarg;
            break;
        case 'd':
            ov.db = optarg;
            break;
        case OPT_API_LISTEN:
            ov.api_listen = optarg;
            break;
        case OPT_LOG_LEVEL:
            ov.log_level = optarg;
            break;
        case 't':
            check_only = 1;
            break;
        case OPT_PRINT_CONFIG:
            print_config = 1;
            break;
        case 'v':
            printf("wsproxy %s\n", WSPROXY_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wsproxy: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    if (print_config && !config_path && !ov.listen && !ov.db && !ov.api_listen && !ov.log_level) {
        config_print_reference(stdout); /* docs/config.md is made from this */
        return 0;
    }
    struct px_config cfg;
    /* Every problem in one round and one format, whether found by the parser or by a start check. */
    int bad = config_load(&cfg, config_path, &ov, stderr) != 0;
    if (print_config) {
        if (!bad)
            config_print_effective(&cfg, stdout);
        config_release(&cfg);
        return bad ? 2 : 0;
    }
    bad += config_check_start(&cfg, stderr);
    /* Also load what the start would load (keys, certificates), so a unit never restart-loops. */
    if (!bad)
        bad = server_check(&cfg) != 0;
    if (bad) {
        fprintf(stderr, check_only ? "wsproxy: configuration has errors\n"
                                   : "wsproxy: configuration has errors, not starting\n");
        config_release(&cfg);
        return 2;
    }
    if (check_only) {
        printf("configuration ok\n");
        config_release(&cfg);
        return 0;
    }
    log_set_level((enum log_level)log_level_parse(cfg.log_level));
    log_info("wsproxy %s starting (config %s)", WSPROXY_VERSION,
             cfg.source ? cfg.source : "none, built-in defaults");

    struct server srv;
    if (server_init(&srv, &cfg) != 0) {
        config_release(&cfg);
        return 1;
    }
    int rc = server_run(&srv);
    server_release(&srv);
    log_info("wsproxy stopped");
    config_release(&cfg);
    return rc;
}
