#!/usr/bin/env bash
# check-layers.sh -- the layering rules of proxy/ (README, "Layout"), checked on every include line.
#   order: base < proto, store < net < chat < api < top (proxy/*.c: route, web, server, main)
#   a file includes only its own layer and those below; proto/ is sans-I/O (no <event2/...>, no
#   log, no store); only route.c, server.c and main.c include route.h/server.h; wsctl/ stays on
#   base, proto and store; no SQL and no <sqlite3.h> outside store/ and migrations/.
# Prints every violation as FILE:LINE: why, and exits 1 if there is any.
set -u
cd "$(dirname "$0")/.."
rank() { # layer of a header path as written in #include "..." (or of a file's folder)
    case "$1" in
    base/*) echo 0 ;; proto/*) echo 1 ;; store.h | store/* | migrations.h) echo 1 ;;
    net/*) echo 2 ;; chat/*) echo 3 ;; api/*) echo 4 ;; *) echo 5 ;;
    esac
}
bad=0
fail() { echo "$1: $2"; bad=1; }
for f in proxy/*.[ch] proxy/*/*.[ch] wsctl/*.[ch]; do
    dir=${f#proxy/}
    case "$f" in wsctl/*) mine=1 ;; proxy/*/*) mine=$(rank "$dir") ;; *) mine=5 ;; esac
    while IFS=: read -r line inc; do
        hdr=$(sed -n 's/.*#include "\([^"]*\)".*/\1/p' <<<"$inc")
        [ -n "$hdr" ] || continue
        case "$hdr" in wsctl.h | */*_internal.h) ;; */*) [ "$(rank "$hdr")" -le "$mine" ] ||
            fail "$f:$line" "includes $hdr from a layer above" ;; esac
        case "$f:$hdr" in
        proxy/proto/*:base/log.h | proxy/proto/*:store.h) fail "$f:$line" "sans-I/O proto/ includes $hdr" ;;
        proxy/route.c:route.h | proxy/server.[ch]:*.h | proxy/main.c:server.h) ;;
        *:route.h | *:server.h) fail "$f:$line" "only the wiring includes $hdr" ;;
        esac
        case "$hdr" in *_internal.h) [ "$(dirname "$hdr")" = "$(dirname "$dir")" ] ||
            fail "$f:$line" "$hdr is private to its folder" ;; esac
    done < <(grep -n '#include "' "$f")
    case "$f" in proxy/proto/*) grep -n '#include <event2/' "$f" | while IFS=: read -r l _; do
        echo "$f:$l: sans-I/O proto/ includes libevent"; done ;; esac
    grep -nE '<sqlite3\.h>|"[[:space:]]*(SELECT|INSERT INTO|UPDATE [a-z_]+ SET|DELETE FROM|CREATE (TABLE|INDEX)|PRAGMA) ' "$f" |
        while IFS=: read -r l _; do echo "$f:$l: SQL outside store/"; done
done | tee /tmp/check-layers.$$ >/dev/null
[ -s /tmp/check-layers.$$ ] && { cat /tmp/check-layers.$$; bad=1; }
rm -f /tmp/check-layers.$$
[ $bad -eq 0 ] && echo "check-layers: ok ($(ls proxy/*.[ch] proxy/*/*.[ch] wsctl/*.[ch] | wc -l) files)"
exit $bad
