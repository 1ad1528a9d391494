#!/usr/bin/env bash
# Starts three wsproxy servers (demo login on, chat page from web/) on free loopback ports with temp
# databases, runs the headless-Chromium test against them, stops them. Screenshots go to
# var/test-artifacts/.
#   main     the chat, with the push API (broadcasts, pushes, room members through the API); only
#            lobby is open: other rooms are closed (join refused with forbidden) unless the API adds
#   refused  [server] origins does not list the page's origin: every upgrade is refused with 403
#   short    [demo] token_ttl = 6s and jwt_leeway = 1s: the page must refresh its token in place
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${WSP_BIN:-build/wsproxy}
ART=${WSP_ARTIFACTS:-$PWD/var/test-artifacts}
API_KEY=browser-test-api-key-0123456789
mkdir -p "$ART"
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# start NAME PORT EXTRA-INI [OPEN-ROOMS]: one server with its own config, database and log in
# $tmp/NAME; [rooms] open is OPEN-ROOMS (default *: every room open).
start() {
    local name=$1 port=$2 extra=$3 open=${4:-*}
    mkdir -p "$tmp/$name"
    cat > "$tmp/$name/wsproxy.ini" <<INI
[server]
listen = 127.0.0.1:$port
static_dir = $PWD/web
[auth]
jwt_secret = browser-test-secret-0123456789abcdef0123
[store]
path = $tmp/$name/wsproxy.db
[rooms]
open = $open
[demo]
enabled = true
$extra
INI
    "$BIN" --config "$tmp/$name/wsproxy.ini" > "$tmp/$name/server.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0
        sleep 0.05
    done
    echo "server $name did not start"; cat "$tmp/$name/server.log"; return 1
}
main=$(free_port) api=$(free_port) refused=$(free_port) short=$(free_port)
# A section named twice is merged by the INI reader, so extra lines can add [api], [demo] keys.
start main "$main" "[api]
listen = 127.0.0.1:$api
keys = $API_KEY" lobby
start refused "$refused" "[api]
listen =
[server]
origins = https://chat.example.com"
start short "$short" "token_ttl = 6s
[auth]
jwt_leeway = 1s
[api]
listen ="
[ -d tests/browser/node_modules ] || (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
rc=0
WSP_URL="http://127.0.0.1:$main" WSP_API_URL="http://127.0.0.1:$api" WSP_API_KEY="$API_KEY" \
    WSP_REFUSED_URL="http://127.0.0.1:$refused" WSP_SHORT_URL="http://127.0.0.1:$short" \
    WSP_ARTIFACTS="$ART" timeout 240 node --test tests/browser/ || rc=$?
if [ $rc -ne 0 ]; then
    for name in main refused short; do echo "--- $name server log"; tail -30 "$tmp/$name/server.log"; done
fi
exit $rc
