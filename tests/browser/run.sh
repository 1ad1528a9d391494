#!/usr/bin/env bash
# Starts wsproxy (demo login on, chat page from web/) on a free loopback port with a temp database, runs
# the headless-Chromium test against it, stops the server. Screenshots go to var/test-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${WSP_BIN:-build/wsproxy}
ART=${WSP_ARTIFACTS:-$PWD/var/test-artifacts}
mkdir -p "$ART"
tmp=$(mktemp -d)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$tmp/wsproxy.ini" <<INI
[server]
listen = 127.0.0.1:$port
static_dir = $PWD/web
[auth]
jwt_secret = browser-test-secret-0123456789abcdef0123
[store]
path = $tmp/wsproxy.db
[api]
listen =
[demo]
enabled = true
INI
"$BIN" --config "$tmp/wsproxy.ini" > "$tmp/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.05
done
[ -d tests/browser/node_modules ] || (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
rc=0
WSP_URL="http://127.0.0.1:$port" WSP_ARTIFACTS="$ART" timeout 180 node --test tests/browser/ || rc=$?
[ $rc -eq 0 ] || { echo "--- server log"; tail -50 "$tmp/server.log"; }
exit $rc
