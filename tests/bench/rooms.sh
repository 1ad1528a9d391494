#!/bin/bash
# rooms.sh -- issue 16's room figures, standalone (run.sh is not touched): the join storm
# (joinstorm.py), idle connections with a room membership, and persisted fan-out through a room
# (loadgen -m fanout). Each scenario starts a fresh wsproxy (bench config of run.sh) on core 0;
# the load runs on core 1. Prints every `result` line.
#   ROOMS_ONLY="storm idle10k fanout1k fanout5k"  ROOMS_RUNS=1  ROOMS_NICE=0
#   ROOMS_BIN=path/to/wsproxy (another build)  ROOMS_PERF=/tmp/perf (perf record per scenario)
#   ROOMS_LOADGEN=path/to/loadgen (a variant)
set -u
cd "$(dirname "$0")/../.."
B=build
BB=$B/bench
TMP=$(mktemp -d /tmp/wsp-rooms.XXXXXX)
trap 'kill $SERVER_PID 2>/dev/null; rm -rf "$TMP"' EXIT
SECRET=$(od -An -N24 -tx1 /dev/urandom | tr -d " \n")
PORT=${ROOMS_PORT:-29080}
ONLY=${ROOMS_ONLY:-storm idle10k fanout1k fanout5k}
RUNS=${ROOMS_RUNS:-1}
NICE=${ROOMS_NICE:-0}
SERVER_PID=

make -s -j2 all >&2 || exit 1
mkdir -p "$BB"
cp "${ROOMS_BIN:-$B/wsproxy}" "$TMP/wsproxy"
[ "$BB/loadgen" -nt tests/bench/loadgen.c ] ||
    gcc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Iproxy -o "$BB/loadgen" tests/bench/loadgen.c \
        proxy/proto/ws_deflate.c -lcrypto -lz

start() { # extra ini lines on stdin
    rm -rf "$TMP/db" && mkdir -p "$TMP/db"
    cat >"$TMP/wsproxy.ini" <<EOC
[server]
listen = 127.0.0.1:$PORT
ws_path = /ws
echo_path = /echo
static_dir =
[log]
level = warn
[store]
path = $TMP/db/wsproxy.db
synchronous = normal
[auth]
mode = token
jwt_alg = HS256
jwt_secret = $SECRET
[rooms]
open = *
[heartbeat]
ping_interval = 0
[api]
listen =
[limits]
rate = 0
max_connections = 100000
max_connections_per_ip = 100000
EOC
    cat >>"$TMP/wsproxy.ini"
    nice -n "$NICE" taskset -c 0 "$TMP/wsproxy" --config "$TMP/wsproxy.ini" >"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.05
    done
    sleep 0.3
}
stop() {
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    grep -m3 -i "error\|slow consumer" "$TMP/server.log" >&2
    SERVER_PID=
}
ulimit -n 65536 2>/dev/null
for run in $(seq 1 "$RUNS"); do
    for s in $ONLY; do
        echo "== $s (run $run)"
        start </dev/null
        if [ -n "${ROOMS_PERF:-}" ]; then
            perf record -F 999 -g -o "$ROOMS_PERF.$s" -p "$SERVER_PID" >/dev/null 2>&1 &
            PERF_PID=$!
        fi
        case $s in
        storm) taskset -c 1 /usr/bin/python3 tests/bench/joinstorm.py -p "$SERVER_PID" -P "$PORT" \
            -k "$SECRET" -c 2000 --spread 1 ;;
        idle10k) taskset -c 1 /usr/bin/python3 tests/bench/joinstorm.py -p "$SERVER_PID" -P "$PORT" \
            -k "$SECRET" -c 10000 --spread 5 ;;
        fanout1k) taskset -c 1 "${ROOMS_LOADGEN:-$BB/loadgen}" -m fanout -P "$PORT" -c 1000 -r 100 -d 10 -D 5 \
            -k "$SECRET" -p "$SERVER_PID" | grep result ;;
        fanout5k) taskset -c 1 "${ROOMS_LOADGEN:-$BB/loadgen}" -m fanout -P "$PORT" -c 5000 -r 100 -d 10 -D 5 \
            -k "$SECRET" -p "$SERVER_PID" | grep result ;;
        esac
        [ -n "${ROOMS_PERF:-}" ] && kill -INT "$PERF_PID" && wait "$PERF_PID"
        stop
    done
done
