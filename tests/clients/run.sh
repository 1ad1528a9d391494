#!/usr/bin/env bash
# Tests of the client libraries (clients/php, clients/js) against the real server. Builds nothing:
# the server is $WSP_BIN (default build/wsproxy). Each suite starts its own servers on free loopback
# ports with temp configs and databases, and stops them. Ends with one line "N passed, N failed";
# exits 1 on any failure. Needs php-cli + php-curl, node 20+, and `npm ci` in tests/clients (done
# here when node_modules is missing).
set -u
cd "$(dirname "$0")/../.."
export WSP_BIN=${WSP_BIN:-build/wsproxy}
SUITE_TIMEOUT=${SUITE_TIMEOUT:-300}
pass=0 fail=0

count() { # suite-name passed failed exit-status
    local f=$3
    [ "$4" -ne 0 ] && [ "$f" -eq 0 ] && f=1   # a crash or a timeout counts as a failure
    echo "clients/$1: $2 passed, $f failed"
    pass=$((pass + $2))
    fail=$((fail + f))
}

if [ ! -x "$WSP_BIN" ]; then
    echo "clients: no server binary at $WSP_BIN (run make all)"
    echo "0 passed, 1 failed"
    exit 1
fi
if [ ! -d tests/clients/node_modules ]; then
    (cd tests/clients && npm ci --no-audit --no-fund --loglevel=error) || { echo "0 passed, 1 failed"; exit 1; }
fi

echo "== clients/php"
out=$(timeout "$SUITE_TIMEOUT" php tests/clients/php/run.php 2>&1)
rc=$?
echo "$out"
line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
p=$(echo "$line" | sed -n 's/^\([0-9]*\) passed.*/\1/p')
f=$(echo "$line" | sed -n 's/.*, \([0-9]*\) failed$/\1/p')
count php "${p:-0}" "${f:-0}" $rc

echo "== clients/js"
# Node's own WebSocket (a browser's API) runs the browser-API tests: built in from Node 22, a flag in 20.
flags=()
if ! node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' 2>/dev/null &&
    node --experimental-websocket -e '' 2>/dev/null; then
    flags=(--experimental-websocket)
fi
tap=$(mktemp)
timeout "$SUITE_TIMEOUT" node "${flags[@]}" --test --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" tests/clients/js/*.test.mjs
rc=$?
p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$tap" | tail -1)
f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$tap" | tail -1)
rm -f "$tap"
count js "${p:-0}" "${f:-0}" $rc

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
