#!/usr/bin/env bash
# smoke.sh -- the ~15 s bench check `make test` runs: builds loadgen, drives each mode briefly
# against wsproxy and fails unless the figures are sane (traffic flowed, no errors, a tiny fanout
# fully delivered). No timing assertions: this machine may be busy.
set -euo pipefail

cd "$(dirname "$0")/../.."
B=${B:-build}
WSP=${WSP:-$B/wsproxy}
LG=$B/bench/loadgen
TMP=$(mktemp -d /tmp/wsp-smoke.XXXXXX)
SECRET=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
PID=
FAIL=0

cleanup() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

[ -x "$WSP" ] || make -s "$WSP"
mkdir -p "$B/bench"
gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Iproxy -o "$LG" tests/bench/loadgen.c \
    proxy/proto/ws_deflate.c -lcrypto -lz

port=29080
while ss -Htln "sport = :$port" 2>/dev/null | grep -q .; do port=$((port + 1)); done
mkdir -p "$TMP/db"
cat >"$TMP/wsproxy.ini" <<EOF
[server]
listen = 127.0.0.1:$port
static_dir =
; only clients that offer permessage-deflate (loadgen -Z) get it; the other checks run plain
compression = on
[log]
level = warn
[store]
path = $TMP/db/wsproxy.db
[auth]
jwt_secret = $SECRET
[rooms]
open = *
[heartbeat]
ping_interval = 0
[limits]
rate = 0
max_connections = 1000
max_connections_per_ip = 1000
[api]
listen =
EOF
"$WSP" --config "$TMP/wsproxy.ini" >"$TMP/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.05
done

# check NAME EXPR LOADGEN-ARGS...: runs loadgen, then EXPR, a python boolean over r[key];
# the result line is left in LAST
LAST=
check() {
    local name=$1 expr=$2 out line
    shift 2
    if ! out=$("$LG" -P "$port" -p "$PID" "$@" 2>"$TMP/err"); then
        echo "smoke: FAIL $name: loadgen exited non-zero" >&2
        sed 's/^/  /' "$TMP/err" >&2
        FAIL=1
        return
    fi
    line=$(grep '^result ' <<<"$out" || true)
    LAST=$line
    if python3 -c '
import sys
r = {k: float(v) if v.replace(".", "", 1).lstrip("-").isdigit() else v
     for k, v in (kv.split("=", 1) for kv in sys.argv[2].split()[1:])}
sys.exit(0 if eval(sys.argv[1]) else 1)' "$expr" "$line"; then
        echo "smoke: ok   $name: ${line#result }"
    else
        echo "smoke: FAIL $name (want $expr): ${line#result }" >&2
        sed 's/^/  /' "$TMP/err" >&2
        FAIL=1
    fi
}

if kill -0 "$PID" 2>/dev/null; then
    check echo "r['msgs_per_s'] > 0 and r['errors'] == 0 and r['p50_us'] > 0" \
        -m echo -c 10 -w 4 -s 32 -d 1 -W 0.2
    check echo-binary "r['msgs_per_s'] > 0 and r['errors'] == 0" \
        -m echo -c 2 -w 2 -s 200 -d 0.5 -W 0 -b
    check idle-echo "r['ready'] == 200 and r['failed'] == 0 and r['rss_after_kib'] > 0" \
        -m idle -U /echo -c 200 -d 0.3
    check idle-ws "r['ready'] == 200 and r['failed'] == 0" -m idle -U /ws -c 200 -d 0.3 -k "$SECRET"
    check idle-room "r['ready'] == 100 and r['failed'] == 0 and r['join'] == 1" \
        -m idle -U /ws -c 100 -d 0.3 -j -R lobby -k "$SECRET"
    # a small join storm: everyone joined, RSS sampled during and after (no memory thresholds)
    check storm "r['ready'] == 100 and r['failed'] == 0 and r['errors'] == 0 and \
r['rss_samples'] >= 3 and r['rss_peak_kib'] >= r['rss_before_kib'] > 0" \
        -m storm -c 100 -r 500 -D 0.3 -R storm -k "$SECRET"
    check fanout "r['delivered_pct'] == 100 and r['published'] == 50 and r['errors'] == 0" \
        -m fanout -c 20 -r 50 -d 1 -D 3 -k "$SECRET"
    # the same 20-member fanout with 600-byte bodies, plain then permessage-deflate: everything
    # delivered, every delivery compressed, fewer bytes on the wire (sizes only, no timing)
    check fanout-body "r['delivered_pct'] == 100 and r['errors'] == 0 and r['compressed_msgs'] == 0 \
and r['wire_bytes_per_msg'] > 600" -m fanout -c 20 -r 20 -d 0.5 -D 3 -B 600 -k "$SECRET"
    plain=$(grep -o ' wire_bytes_per_msg=[0-9.]*' <<<"$LAST" | cut -d= -f2)
    check fanout-deflate "r['delivered_pct'] == 100 and r['errors'] == 0 and r['deflate'] == 1 \
and r['compressed_msgs'] == r['msgs'] and 0 < r['wire_bytes_per_msg'] < ${plain:-0}" \
        -m fanout -c 20 -r 20 -d 0.5 -D 3 -B 600 -Z -k "$SECRET"
    check persist "r['msgs_per_s'] > 0 and r['errors'] == 0" \
        -m persist -c 2 -w 8 -d 1 -W 0.2 -k "$SECRET"
    # a bad token must be refused before the upgrade, and loadgen must notice
    if "$LG" -P "$port" -m persist -c 1 -d 0.2 -k "x$SECRET" >/dev/null 2>&1; then
        echo "smoke: FAIL bad-token: loadgen did not report the refused handshake" >&2
        FAIL=1
    else
        echo "smoke: ok   bad-token: refused"
    fi
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "smoke: FAIL wsproxy died" >&2
        FAIL=1
    fi
else
    echo "smoke: FAIL wsproxy did not start" >&2
    FAIL=1
fi
[ "$FAIL" = 0 ] || tail -20 "$TMP/server.log" >&2
exit "$FAIL"
