#!/usr/bin/env bash
# run.sh -- `make bench`: wsproxy against gorilla/websocket and libwebsockets on loopback, server on core 0 and
# loader on core 1, each figure the median of BENCH_RUNS runs; prints a markdown table and writes
# it to var/bench/. Environment: BENCH_RUNS (3), BENCH_SECS (5), BENCH_ONLY (scenario names, see
# below; conv_list is the conversation-list figure, store only), BENCH_NICE (0), BENCH_PORT (28080,
# first of three free ports), BENCH_STOP_GRACE (5), BENCH_CONV_CALLS (51). The cluster scenarios
# (persist_pg1, persist_pg2, fanout_x) start a throwaway PostgreSQL with scripts/pgtmp.sh.
set -euo pipefail

cd "$(dirname "$0")/../.."
B=${B:-build}
BB=$B/bench
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_SECS:-5}
ONLY=${BENCH_ONLY:-}
NICE=${BENCH_NICE:-0} # e.g. -10 on a shared machine (root only): others' jobs disturb the runs less
SECRET=$(od -An -N24 -tx1 /dev/urandom | tr -d " \n") # HS256 wants >= 32 bytes
# Other people's servers may hold the usual ports; take the first free ones from BENCH_PORT up.
port_busy() { ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }
next_free_port() {
    local p=$1
    while port_busy "$p"; do p=$((p + 1)); done
    echo "$p"
}
PORT_WSP=$(next_free_port "${BENCH_PORT:-28080}")
PORT_GECHO=$(next_free_port $((PORT_WSP + 1)))
PORT_GCHAT=$(next_free_port $((PORT_GECHO + 1)))
PORT_LWS=$(next_free_port $((PORT_GCHAT + 1)))  # lws-peer: /echo and the chat hub on one port
PORT_RAW=$(next_free_port $((PORT_LWS + 1)))    # rawecho: the loader's ceiling (echo100_raw)
PORT_API=$(next_free_port $((PORT_RAW + 1)))    # wsproxy's /metrics, events scenarios only
PORT_HOOK=$(next_free_port $((PORT_API + 1)))   # hookrecv, the events backend
PORT_WSP2=$(next_free_port $((PORT_HOOK + 1)))  # the second node of the cluster scenarios
PORT_PG=$(next_free_port $((PORT_WSP2 + 1)))    # their PostgreSQL (scripts/pgtmp.sh)
STAMP=$(date +%Y%m%d-%H%M%S)
OUTDIR=var/bench
RESULT_MD=$OUTDIR/results-$STAMP.md
RAW=$OUTDIR/raw-$STAMP.txt
TMP=$(mktemp -d /tmp/wsp-bench.XXXXXX)
SERVER_PID=
HOOK_PID=
NODE_PIDS=() # cluster scenarios: the wsproxy nodes
PGDIR=       # cluster scenarios: the throwaway PostgreSQL (pgtmp.sh), started once
PG_PM=       # its postmaster's pid (the backends are its children)
PG_DSN=
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
PG_NOTE=     # why the cluster scenarios were skipped, for the table

log() { printf '== %s\n' "$*" >&2; }

cleanup() {
    server_stop
    nodes_stop
    pg_stop
    hook_stop
    spinners_stop
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- dependencies: the reference peers are built from Debian's packages (gorilla in GOPATH
# mode, libwebsockets-dev for lws-peer) ----
GOPATH_DEB=/usr/share/gocode
if ! command -v go >/dev/null || [ ! -d $GOPATH_DEB/src/github.com/gorilla/websocket ] ||
    ! command -v taskset >/dev/null || ! pkg-config --exists libwebsockets; then
    log "installing golang-go, golang-github-gorilla-websocket-dev, libwebsockets-dev, util-linux"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get install -y golang-go golang-github-gorilla-websocket-dev libwebsockets-dev \
        util-linux >&2 ||
        { $SUDO apt-get update >&2 && $SUDO apt-get install -y golang-go \
            golang-github-gorilla-websocket-dev libwebsockets-dev util-linux >&2; }
fi
command -v python3 >/dev/null || { echo "run.sh: python3 is needed for the table" >&2; exit 2; }

# ---- build ----
log "building wsproxy, loadgen, the gorilla peers and lws-peer"
FAILED=0
mkdir -p "$BB" "$OUTDIR"
if ! make -s all >&2; then
    echo "run.sh: make failed; the wsproxy rows will be empty" >&2
    FAILED=1
fi
HAVE_WSP=0
# A private copy: others may rebuild build/wsproxy while the bench runs.
if [ "$FAILED" = 0 ] && [ -x "$B/wsproxy" ]; then
    cp "$B/wsproxy" "$BB/wsproxy.tmp" && mv "$BB/wsproxy.tmp" "$BB/wsproxy" && HAVE_WSP=1
fi
gcc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Iproxy -o "$BB/loadgen" tests/bench/loadgen.c \
    proxy/proto/ws_deflate.c -lcrypto -lz
gcc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -o "$BB/hookrecv" tests/bench/hookrecv.c
# shellcheck disable=SC2046
gcc -std=c11 -O2 -g -Wall -Wextra -o "$BB/lws-peer" tests/bench/lws/peer.c \
    $(pkg-config --cflags --libs libwebsockets)
gcc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -o "$BB/rawecho" tests/bench/rawecho.c -lcrypto
export GOCACHE=${GOCACHE:-$PWD/$BB/.gocache} GOFLAGS=
for p in echo chat; do
    GO111MODULE=off GOPATH=$GOPATH_DEB go build -o "$BB/gorilla-$p" "./tests/bench/gorilla/$p"
done

# Both sides hold 10,000 sockets in the idle scenario; the hard limit may forbid 65536 to non-root.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt 10100 ]; then
    echo "run.sh: ulimit -n is $(ulimit -n); the idle scenario needs 10100" >&2
    exit 2
fi
NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then SRV_CPU=0; LG_CPU=1; else SRV_CPU=0; LG_CPU=0; fi

# ---- servers ----
# Events on: every type (message.direct included, so each durable DM writes an event) to hookrecv
# on loopback, and the API listener for /metrics (read after the window: outbox drained?).
EV_TYPES=session.opened,session.closed,user.online,user.offline,message.direct,message.room
EV_TYPES=$EV_TYPES,message.push,message.unacked,member.added,member.removed
write_config() { # $1 = synchronous, $2 = compression (off|on), $3 = events (off|on),
    # $4 = cluster node name (then [store] backend = postgresql on $PG_DSN; empty: SQLite),
    # $5 = port ($PORT_WSP), $6 = file ($TMP/wsproxy.ini)
    local node=${4:-} f=${6:-$TMP/wsproxy.ini} store
    if [ -n "$node" ]; then
        store=$(printf 'backend = postgresql\ndsn = %s\n[cluster]\nnode_name = %s' "$PG_DSN" "$node")
    else
        store=$(printf 'path = %s\nsynchronous = %s' "$TMP/db/wsproxy.db" "$1")
    fi
    cat >"$f" <<EOF
[server]
listen = 127.0.0.1:${5:-$PORT_WSP}
ws_path = /ws
echo_path = /echo
static_dir =
compression = ${2:-off}
[log]
level = warn
[store]
$store
[auth]
mode = token
jwt_alg = HS256
jwt_secret = $SECRET
[rooms]
open = *
[heartbeat]
ping_interval = 0
[limits]
rate = 0
max_connections = 100000
max_connections_per_ip = 100000
EOF
    if [ "${3:-off}" != off ]; then
        cat >>"$f" <<EOF
[api]
listen = 127.0.0.1:$PORT_API
[events]
target = http://127.0.0.1:$PORT_HOOK/hooks/wsproxy
secret = bench-events-secret-0123456789
offline_delay = 1s
EOF
        # on: every type; default: the default types (no message.* events)
        [ "$3" != on ] || echo "types = $EV_TYPES" >>"$f"
    else
        printf '[api]\nlisten =\n' >>"$f"
    fi
}

port_of() {
    case $1 in
    wsproxy) echo "$PORT_WSP" ;;
    gorilla-echo) echo "$PORT_GECHO" ;;
    gorilla-chat) echo "$PORT_GCHAT" ;;
    lws) echo "$PORT_LWS" ;;
    rawecho) echo "$PORT_RAW" ;;
    esac
}

wait_port() { # $1 = port, $2 = pid
    for _ in $(seq 1 200); do
        kill -0 "$2" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

pinned() { exec nice -n "$NICE" taskset -c "$SRV_CPU" "$@"; }

# Starts a fresh server (fresh database for wsproxy) pinned to the server core; sets SERVER_PID.
server_start() { # $1 = wsproxy|gorilla-echo|gorilla-chat|lws, $2 = synchronous, $3 = compression,
    # $4 = events
    local port
    port=$(port_of "$1")
    case $1 in
    wsproxy)
        rm -rf "$TMP/db" && mkdir -p "$TMP/db"
        write_config "${2:-normal}" "${3:-off}" "${4:-off}"
        pinned "$BB/wsproxy" --config "$TMP/wsproxy.ini" >"$TMP/server.log" 2>&1 &
        ;;
    gorilla-*) pinned "$BB/$1" -addr "127.0.0.1:$port" >"$TMP/server.log" 2>&1 & ;;
    lws) pinned "$BB/lws-peer" -addr "127.0.0.1:$port" >"$TMP/server.log" 2>&1 & ;;
    rawecho) pinned "$BB/rawecho" -port "$port" >"$TMP/server.log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    if ! wait_port "$port" "$SERVER_PID"; then
        echo "run.sh: $1 did not start:" >&2
        tail -5 "$TMP/server.log" >&2
        server_stop
        return 1
    fi
    sleep 0.2 # let the accept of wait_port's probe settle before RSS is sampled
}

# SIGTERM, then SIGKILL after STOP_GRACE s: every run has a fresh database, nothing is lost, and
# a slow shutdown is reported rather than allowed to eat the time budget.
STOP_GRACE=${BENCH_STOP_GRACE:-5}
proc_stop() { # $1 = pid
    kill "$1" 2>/dev/null || true
    for _ in $(seq 1 $((STOP_GRACE * 20))); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$1" 2>/dev/null; then
        echo "   (server still busy ${STOP_GRACE} s after SIGTERM; killed)" >&2
        kill -9 "$1" 2>/dev/null || true
    fi
    wait "$1" 2>/dev/null || true
}
server_stop() {
    [ -n "$SERVER_PID" ] || return 0
    proc_stop "$SERVER_PID"
    SERVER_PID=
}

# hookrecv, the events backend: answers 204 to every POST; on the loader's core (it gets one POST
# per batch of up to 100 events, so it is light), started before and stopped after each server.
hook_start() {
    rm -f "$TMP/hook.counts"
    nice -n "$NICE" taskset -c "$LG_CPU" "$BB/hookrecv" -P "$PORT_HOOK" -o "$TMP/hook.counts" \
        >/dev/null 2>"$TMP/hook.err" &
    HOOK_PID=$!
    wait_port "$PORT_HOOK" "$HOOK_PID" || { cat "$TMP/hook.err" >&2; return 1; }
}
hook_stop() {
    [ -n "$HOOK_PID" ] || return 0
    kill "$HOOK_PID" 2>/dev/null || true
    wait "$HOOK_PID" 2>/dev/null || true
    HOOK_PID=
}

metric_val() { # $1 = /metrics text, $2 = series name with labels
    awk -v k="$2" '$1 == k { print $2; exit }' <<<"$1"
}
# After the window of an events-on run: polls /metrics until every queued event is delivered and
# the outbox gauge (refreshed every 2 s) reads 0, at least 2.5 s (offline_delay is 1 s: the senders'
# session.closed and user.offline are queued by then), at most 30 s. Prints key=value fields:
# ev_backlog_end (queued - delivered at the first poll, right after loadgen ended), ev_drain_ms
# (when delivered last caught up with queued), the counters, and the outbox gauges.
events_check() {
    local t0 m q= d= r= f= x= o= od= el backlog= drain=
    t0=$(date +%s%N)
    for _ in $(seq 1 300); do
        m=$(curl -s -m 2 "http://127.0.0.1:$PORT_API/metrics" || true)
        q=$(metric_val "$m" 'wsproxy_events_total{outcome="queued"}')
        d=$(metric_val "$m" 'wsproxy_events_total{outcome="delivered"}')
        o=$(metric_val "$m" 'wsproxy_events_outbox{state="queued"}')
        el=$((($(date +%s%N) - t0) / 1000000))
        if [ -n "$q" ] && [ -n "$d" ]; then
            [ -n "$backlog" ] || backlog=$((q - d))
            if [ "$q" = "$d" ]; then [ -n "$drain" ] || drain=$el; else drain=; fi
            [ "$q" != "$d" ] || [ "$o" != 0 ] || [ "$el" -lt 2500 ] || break
        fi
        sleep 0.1
    done
    r=$(metric_val "$m" 'wsproxy_events_total{outcome="retried"}')
    f=$(metric_val "$m" 'wsproxy_events_total{outcome="failed"}')
    x=$(metric_val "$m" 'wsproxy_events_total{outcome="dropped"}')
    od=$(metric_val "$m" 'wsproxy_events_outbox{state="dead"}')
    echo "ev_backlog_end=${backlog:--1} ev_drain_ms=${drain:--1} ev_queued=${q:--1}" \
        "ev_delivered=${d:--1} ev_retried=${r:--1} ev_failed=${f:--1} ev_dropped=${x:--1}" \
        "ev_outbox_queued=${o:--1} ev_outbox_dead=${od:--1}"
}

# SCHED_IDLE spinners keep both cores out of the idle state (a halted vCPU can take long to wake)
# without taking time from anything else; used by the *_awake context scenario only.
SPINNERS=()
spinners_start() {
    local cpu
    for cpu in $SRV_CPU $LG_CPU; do
        taskset -c "$cpu" chrt --idle 0 sh -c 'while :; do :; done' &
        SPINNERS+=($!)
    done
}
spinners_stop() {
    [ ${#SPINNERS[@]} -gt 0 ] || return 0
    kill "${SPINNERS[@]}" 2>/dev/null || true
    wait "${SPINNERS[@]}" 2>/dev/null || true
    SPINNERS=()
}

# ---- cluster scenarios (issue 15): nodes on one PostgreSQL ----
# One throwaway PostgreSQL (scripts/pgtmp.sh: fsync and synchronous_commit on) for all of them,
# started on the server core (the postmaster and every backend it forks inherit the affinity) the
# first time one runs; database "wsproxy" dropped and created again before each run. Nodes n1 (port
# PORT_WSP) and n2 (PORT_WSP2) are started in that order (n1 applies the migrations), pinned like
# the single server, logs in $TMP/node1.log and node2.log (level warn: every line is reported).
pg_start() {
    [ -z "$PGDIR" ] || return 0
    PGDIR=$(mktemp -d /tmp/wsp-bench-pg.XXXXXX) # under /tmp: the server runs as user postgres
    if ! PG_DSN=$(nice -n "$NICE" taskset -c "$SRV_CPU" scripts/pgtmp.sh start "$PGDIR" "$PORT_PG" \
        2>"$TMP/pgtmp.err"); then
        echo "run.sh: PostgreSQL did not start:" >&2
        tail -5 "$TMP/pgtmp.err" >&2
        rm -rf "$PGDIR"
        PGDIR=
        return 1
    fi
    PG_PM=$(head -1 "$PGDIR/data/postmaster.pid")
    log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on port $PORT_PG," \
        "pid $PG_PM, $(taskset -pc "$PG_PM" | sed 's/.*: /cores /')"
}
pg_stop() {
    [ -n "$PGDIR" ] || return 0
    scripts/pgtmp.sh stop "$PGDIR" >/dev/null 2>&1 || true
    PGDIR=
    PG_PM=
}
pg_sql() {
    "$PG_BIN/psql" -X -h 127.0.0.1 -p "$PORT_PG" -U postgres -d postgres -qAtc "$1" >/dev/null
}
pg_reset() { # a fresh database for the next run
    pg_sql "DROP DATABASE IF EXISTS wsproxy WITH (FORCE)" && pg_sql "CREATE DATABASE wsproxy"
}
nodes_start() { # $1 = how many (1 or 2)
    local i port pid
    for i in $(seq 1 "$1"); do
        port=$PORT_WSP
        [ "$i" = 1 ] || port=$PORT_WSP2
        write_config normal off off "n$i" "$port" "$TMP/node$i.ini"
        pinned "$BB/wsproxy" --config "$TMP/node$i.ini" >"$TMP/node$i.log" 2>&1 &
        pid=$!
        NODE_PIDS+=("$pid")
        if ! wait_port "$port" "$pid"; then
            echo "run.sh: node n$i did not start:" >&2
            tail -5 "$TMP/node$i.log" >&2
            nodes_stop
            return 1
        fi
    done
    sleep 0.2
}
nodes_stop() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do proc_stop "$pid"; done
    NODE_PIDS=()
}
# Two loadgen result lines (node 1's with group_cpu_* = PostgreSQL, node 2's) as one: counts and
# rates summed, server CPU = both nodes, latency percentiles the higher of the two (a merged
# histogram is not available), and each node's own figures as n1_* / n2_*.
proc_ticks() { # $1 = pid: utime + stime in clock ticks
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
merge_results() { # $1, $2 = "result ..." lines
    python3 - "$1" "$2" <<'PY'
import sys
a, b = (dict(kv.split("=", 1) for kv in l.split()[1:]) for l in sys.argv[1:3])
f = lambda d, k: float(d.get(k, 0))
out = dict(a)
for k in ("conns", "msgs", "msgs_per_s", "errors", "closed", "loader_cpu_pct"):
    out[k] = f"{f(a, k) + f(b, k):g}"
for k in ("p50_us", "p99_us", "p999_us", "max_us"):
    out[k] = f"{max(f(a, k), f(b, k)):.1f}"
out["server_cpu_pct"] = f"{f(a, 'server_cpu_pct') + f(b, 'server_cpu_pct'):.1f}"
cpu = float(out["server_cpu_pct"]) / 100
out["msgs_per_core_s"] = f"{float(out['msgs_per_s']) / cpu:.0f}" if cpu > 0 else "0"
out["server_core_busy_pct"] = f"{(f(a, 'server_core_busy_pct') + f(b, 'server_core_busy_pct')) / 2:.1f}"
for n, d in (("n1", a), ("n2", b)):
    for k in ("msgs_per_s", "server_cpu_pct", "p50_us", "p99_us", "loader_cpu_pct", "secs"):
        out[f"{n}_{k}"] = d.get(k, "-1")
print("result " + " ".join(f"{k}={v}" for k, v in out.items()))
PY
}
# Runs one cluster scenario; $1 = scenario, $2 = pg1|pg2|pgx, $3 = run, $4 = loadgen args.
# pg1: persist against n1 alone. pg2: two loadgens at once, one per node, each with the given
# senders (prefixes rNa/rNb), merged. pgx: fanout, members on n2 and the publisher on n1 (-Q).
# Every loadgen is on the loader core; the one that has -g reads PostgreSQL's CPU over its window.
run_cluster() {
    local name=$1 kind=$2 run=$3 args=$4 t0=$SECONDS out= out2= line= nodes=2 srv lg i
    srv=wsproxy-$kind
    if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
        PG_NOTE="skipped: PostgreSQL's server binaries are missing (apt-get install postgresql)"
        log "$name: $PG_NOTE"
        return 0
    fi
    pg_start || { FAILED=1; PG_NOTE="skipped: PostgreSQL did not start"; return 0; }
    pg_reset || { echo "run.sh: cannot recreate database wsproxy" >&2; FAILED=1; return 0; }
    [ "$kind" != pg1 ] || nodes=1
    nodes_start "$nodes" || { FAILED=1; return 0; }
    lg="nice -n $NICE taskset -c $LG_CPU $BB/loadgen"
    case $kind in
    pg1)
        # shellcheck disable=SC2086
        out=$($lg $args -P "$PORT_WSP" -p "${NODE_PIDS[0]}" -g "$PG_PM" -u "r$run" \
            2>"$TMP/loadgen.err") || out="loadgen failed"
        line=$(grep '^result ' <<<"$out" || true)
        ;;
    pg2)
        # shellcheck disable=SC2086
        $lg $args -P "$PORT_WSP2" -p "${NODE_PIDS[1]}" -u "r${run}b" >"$TMP/loadgen2.out" \
            2>"$TMP/loadgen2.err" &
        i=$!
        # shellcheck disable=SC2086
        out=$($lg $args -P "$PORT_WSP" -p "${NODE_PIDS[0]}" -g "$PG_PM" -u "r${run}a" \
            2>"$TMP/loadgen.err") || out="loadgen failed"
        wait "$i" || echo "loadgen failed" >>"$TMP/loadgen2.out"
        out2=$(cat "$TMP/loadgen2.out")
        cat "$TMP/loadgen2.err" >>"$TMP/loadgen.err"
        if grep -q '^result ' <<<"$out" && grep -q '^result ' <<<"$out2"; then
            line=$(merge_results "$(grep '^result ' <<<"$out")" "$(grep '^result ' <<<"$out2")")
        fi
        out="node n1: $out"$'\n'"node n2: $out2"
        ;;
    pgx)
        # n1 (the publisher's node) has no loadgen of its own: its CPU over the whole loadgen run
        local c0 c1 w0 w1
        c0=$(proc_ticks "${NODE_PIDS[0]}")
        w0=$(date +%s%N)
        # shellcheck disable=SC2086
        out=$($lg $args -P "$PORT_WSP2" -Q "$PORT_WSP" -p "${NODE_PIDS[1]}" -g "$PG_PM" \
            -u "r$run" 2>"$TMP/loadgen.err") || out="loadgen failed"
        c1=$(proc_ticks "${NODE_PIDS[0]}")
        w1=$(date +%s%N)
        line=$(grep '^result ' <<<"$out" || true)
        [ -z "$line" ] || line="$line n1_cpu_pct=$(awk -v c="$((c1 - c0))" -v w="$((w1 - w0))" \
            -v t="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", 100 * c / t / (w / 1e9) }')"
        ;;
    esac
    [ -n "$line" ] || FAILED=1
    for i in "${!NODE_PIDS[@]}"; do
        if ! kill -0 "${NODE_PIDS[$i]}" 2>/dev/null; then
            echo "run.sh: node n$((i + 1)) died during $name" >&2
            FAILED=1
        fi
    done
    nodes_stop
    # level warn: any line in a node's log is worth seeing
    local loglines=0 n
    for i in $(seq 1 "$nodes"); do
        n=$(grep -c . "$TMP/node$i.log" || true)
        loglines=$((loglines + n))
        [ "$n" = 0 ] || { echo "   node n$i log ($n lines):" >&2; head -5 "$TMP/node$i.log" | sed 's/^/     /' >&2; }
    done
    [ -z "$line" ] || echo "scenario=$name server=$srv run=$run ${line#result } node_log_lines=$loglines" >>"$RAW"
    log "$name on $srv, run $run/$RUNS ($((SECONDS - t0)) s)"
    grep -v '^result ' <<<"$out" | sed 's/^/   /' >&2
    sed 's/^/   /' "$TMP/loadgen.err" | head -5 >&2
}

# ---- scenarios: name | servers | loadgen arguments (port and pid are added) [| group] ----
# The fanout and idle-on-/ws peers of wsproxy's chat path is gorilla-chat; echo ones gorilla-echo;
# lws (lws-peer) serves both on one port. echo4k: echo100 with 4 KiB messages. idle_room: idle_ws
# with every connection a member of one room. join_storm: 2,000 clients connect and join one room
# at 2,000/s, the server's RSS sampled every 50 ms until 5 s after the last join.
# fanout_1k: 1,000 members x 100 msgs/s. echo100_raw: echo100 against rawecho, the cheapest echo
# server we could write, to show how far the loader itself goes (msgs/s / loader CPU); echo1_raw
# the same for echo1: the round trip no server can beat here.
# A server is NAME[:synchronous[:compression[:events]]] (wsproxy: normal, off, off by default). Consecutive
# scenarios with the same group alternate their runs (a1 b1 a2 b2 ...) so background load hits
# both alike. fanout_plain/_deflate: the same 5,000-member fan-out of 600-byte chat-like bodies
# with [server] compression off and on (loadgen -Z offers permessage-deflate and inflates).
# persist_events_off/_default/_on: persist_normal's load with [events] off, on with the default
# types (sessions, presence, unacked checks, membership: no event per message) and on with every
# type (each DM writes a message.direct event); hookrecv on loopback answers 204; /metrics read
# after the window.
# Cluster (issue 15; servers pg1/pg2/pgx are run_cluster's kinds): persist_pg1 is persist_normal's
# load against one node on PostgreSQL; persist_pg2 the same 16 x 64 split over two nodes (8 senders
# each, two loadgens at once); fanout_x 200 members on node 2, the publisher on node 1, 20 msgs/s.
FANOUT_Z="-m fanout -c 5000 -r 10 -d 2 -D 3 -B 600 -k $SECRET"
SCENARIOS=(
    "echo100|wsproxy gorilla-echo lws|-m echo -c 100 -w 16 -s 32 -d $SECS"
    "echo100_raw|rawecho|-m echo -c 100 -w 16 -s 32 -d $SECS"
    "echo4k|wsproxy gorilla-echo lws|-m echo -c 100 -w 16 -s 4096 -d $SECS"
    "echo1|wsproxy gorilla-echo lws|-m echo -c 1 -w 1 -s 32 -d $SECS"
    "echo1_raw|rawecho|-m echo -c 1 -w 1 -s 32 -d $SECS"
    "echo1_awake|wsproxy gorilla-echo lws|-m echo -c 1 -w 1 -s 32 -d $SECS"
    "idle_echo|wsproxy gorilla-echo lws|-m idle -U /echo -c 10000 -d 2"
    "idle_ws|wsproxy gorilla-chat lws|-m idle -U /ws -c 10000 -d 2 -k $SECRET"
    "idle_room|wsproxy gorilla-chat lws|-m idle -U /ws -c 10000 -d 2 -j -R lobby -k $SECRET"
    "join_storm|wsproxy gorilla-chat lws|-m storm -c 2000 -r 2000 -D 5 -R storm -k $SECRET"
    "fanout|wsproxy gorilla-chat lws|-m fanout -c 5000 -r 100 -d 10 -D 5 -k $SECRET"
    "fanout_1k|wsproxy gorilla-chat lws|-m fanout -c 1000 -r 100 -d 10 -D 3 -k $SECRET"
    "fanout_light|wsproxy gorilla-chat lws|-m fanout -c 1000 -r 20 -d 5 -D 3 -k $SECRET"
    "fanout_plain|wsproxy:normal:off|$FANOUT_Z|deflate"
    "fanout_deflate|wsproxy:normal:on|$FANOUT_Z -Z|deflate"
    "persist_normal|wsproxy:normal|-m persist -c 16 -w 64 -d $SECS -k $SECRET"
    "persist_full|wsproxy:full|-m persist -c 16 -w 64 -d $SECS -k $SECRET"
    "persist_events_off|wsproxy:normal:off:off|-m persist -c 16 -w 64 -d $SECS -k $SECRET|events"
    "persist_events_default|wsproxy:normal:off:default|-m persist -c 16 -w 64 -d $SECS -k $SECRET|events"
    "persist_events_on|wsproxy:normal:off:on|-m persist -c 16 -w 64 -d $SECS -k $SECRET|events"
    "persist_pg1|pg1|-m persist -c 16 -w 64 -d $SECS -k $SECRET|cluster"
    "persist_pg2|pg2|-m persist -c 8 -w 64 -d $SECS -k $SECRET|cluster"
    "fanout_x|pgx|-m fanout -c 200 -r 20 -d 5 -D 3 -k $SECRET"
)

wanted() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

: >"$RAW"
[ "$HAVE_WSP" = 1 ] || echo "run.sh: no fresh $B/wsproxy; wsproxy rows will be empty" >&2
# Runs alternate between the servers (wsproxy 1, gorilla 1, wsproxy 2, ...) so that load from other
# processes on a shared machine falls on both alike.
run_one() { # $1 = scenario, $2 = server[:sync[:compression[:events]]], $3 = run, $4 = loadgen args
    local name=$1 srv sync comp evs run=$3 args=$4 t0 port out line= evline=
    IFS=: read -r srv sync comp evs <<<"$2"
    sync=${sync:-normal}
    comp=${comp:-off}
    evs=${evs:-off}
    if [[ $srv == wsproxy* || $srv == pg* ]] && [ "$HAVE_WSP" = 0 ]; then return 0; fi
    if [[ $srv == pg* ]]; then
        run_cluster "$name" "$srv" "$run" "$args"
        return 0
    fi
    t0=$SECONDS
    if [ "$evs" != off ] && ! hook_start; then FAILED=1; return 0; fi
    if ! server_start "$srv" "$sync" "$comp" "$evs"; then hook_stop; FAILED=1; return 0; fi
    [[ $name != *_awake ]] || spinners_start
    port=$(port_of "$srv")
    # shellcheck disable=SC2086
    if out=$(nice -n "$NICE" taskset -c $LG_CPU "$BB/loadgen" $args -P "$port" \
        -p "$SERVER_PID" -u "r$run" 2>"$TMP/loadgen.err"); then
        line=$(grep '^result ' <<<"$out" || true)
        [ "$evs" = off ] || evline=$(events_check)
    else
        out="loadgen failed"
        FAILED=1
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "run.sh: $srv died during $name:" >&2
        tail -5 "$TMP/server.log" >&2
        FAILED=1
    fi
    spinners_stop
    server_stop
    if [ "$evs" != off ]; then
        hook_stop
        evline="$evline $(sed -n 's/^hookrecv //p' "$TMP/hook.counts" 2>/dev/null |
            sed 's/\([a-z]*\)=/hook_\1=/g')"
    fi
    [ -z "$line" ] || echo "scenario=$name server=$srv run=$run ${line#result } $evline" >>"$RAW"
    log "$name on $srv, run $run/$RUNS ($((SECONDS - t0)) s)"
    [ -z "$evline" ] || echo "   events: $evline" >&2
    grep -v '^result ' <<<"$out" | sed 's/^/   /' >&2
    sed 's/^/   /' "$TMP/loadgen.err" | head -5 >&2
}

i=0
while [ "$i" -lt ${#SCENARIOS[@]} ]; do
    IFS='|' read -r _ _ _ grp <<<"${SCENARIOS[$i]}"
    group=("${SCENARIOS[$i]}")
    i=$((i + 1))
    while [ -n "$grp" ] && [ "$i" -lt ${#SCENARIOS[@]} ]; do
        IFS='|' read -r _ _ _ g2 <<<"${SCENARIOS[$i]}"
        [ "$g2" = "$grp" ] || break
        group+=("${SCENARIOS[$i]}")
        i=$((i + 1))
    done
    for run in $(seq 1 "$RUNS"); do
        for sc in "${group[@]}"; do
            IFS='|' read -r name servers args _ <<<"$sc"
            wanted "$name" || continue
            for srv in $servers; do
                run_one "$name" "$srv" "$run" "$args"
            done
        done
    done
done
# The conversation list on a big store (no server, no gorilla): store_user_conversations for a user
# with 1,000 conversations and 100,000 messages, the median of BENCH_CONV_CALLS calls per page.
if wanted conv_list; then
    if [ "$FAILED" = 0 ] && gcc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Iproxy -Istore \
        -o "$BB/conv_bench" tests/bench/conv_bench.c "$B/libwsp.a" \
        $(pkg-config --libs libevent libevent_openssl openssl sqlite3 jansson libjwt inih zlib) -lm &&
        out=$(nice -n "$NICE" "$BB/conv_bench" "${BENCH_CONV_CALLS:-51}"); then
        line=$(grep '^result ' <<<"$out" || true)
        echo "scenario=conv_list server=wsproxy run=1 ${line#result }" >>"$RAW"
        log "conv_list: ${line#result }"
    else
        echo "run.sh: conv_bench failed" >&2
        FAILED=1
    fi
fi
pg_stop
log "all runs took $SECONDS s"

# ---- table ----
{
    echo "# wsproxy vs gorilla/websocket and libwebsockets -- $(date '+%Y-%m-%d %H:%M')"
    echo
    model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
    rev=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
    git diff --quiet 2>/dev/null || rev="$rev+dirty"
    gorilla=$(dpkg-query -W -f='${Version}' golang-github-gorilla-websocket-dev 2>/dev/null ||
        echo '?')
    echo "Machine: $(nproc) cores, $model, Linux $(uname -r);" \
        "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
    lws=$(dpkg-query -W -f='${Version}' libwebsockets-dev 2>/dev/null || echo '?')
    echo "wsproxy $rev, $(go version | cut -d' ' -f3), gorilla/websocket from Debian $gorilla," \
        "libwebsockets from Debian $lws (tests/bench/lws/peer.c)." \
        "Server on core $SRV_CPU, loader on core $LG_CPU; each figure the median of $RUNS runs."
    echo
    python3 - "$RAW" "$PG_NOTE" <<'PY'
import statistics, sys
rows = [dict(kv.split("=", 1) for kv in l.split()) for l in open(sys.argv[1]) if l.strip()]

def med(sc, srv, key):
    v = [float(r[key]) for r in rows if r["scenario"] == sc and r["server"] == srv and key in r]
    return statistics.median(v) if v else None

def fmt(v, unit=""):
    if v is None:
        return "—"
    if unit == "%":
        return f"{v:.1f} %"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"

def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b not in (None, 0) else "—"

def verdict(ok):
    return "—" if ok is None else ("**yes**" if ok else "**no**")

G_ECHO, G_CHAT = "gorilla-echo", "gorilla-chat"
T = []  # scenario, metric, wsproxy, gorilla, ratio, target, met
e = ("echo100", "msgs_per_core_s")
w, g = med(e[0], "wsproxy", e[1]), med(e[0], G_ECHO, e[1])
T.append(("echo 100 conns × 32 B, window 16", "msgs per server-core-second", fmt(w), fmt(g),
          ratio(w, g), "≥ 4× gorilla", verdict(None if w is None or g is None else w >= 4 * g)))
w, g = med("echo1", "wsproxy", "msgs_per_s"), med("echo1", G_ECHO, "msgs_per_s")
T.append(("echo 1 conn × 32 B, window 1", "msgs/s", fmt(w), fmt(g), ratio(w, g), "≥ gorilla",
          verdict(None if w is None or g is None else w >= g)))
w, g = med("echo1_awake", "wsproxy", "msgs_per_s"), med("echo1_awake", G_ECHO, "msgs_per_s")
T.append(("(context) the same, cores kept awake", "msgs/s", fmt(w), fmt(g), ratio(w, g), "", ""))
w, g = med("idle_echo", "wsproxy", "kib_per_conn"), med("idle_echo", G_ECHO, "kib_per_conn")
T.append(("idle 10,000 conns on /echo", "server RSS KiB per conn", fmt(w), fmt(g), ratio(w, g),
          "≤ 2 KiB", verdict(None if w is None else w <= 2)))
w, g = med("idle_ws", "wsproxy", "kib_per_conn"), med("idle_ws", G_CHAT, "kib_per_conn")
T.append(("idle 10,000 conns on /ws (token)", "server RSS KiB per conn", fmt(w), fmt(g),
          ratio(w, g), "≤ 4 KiB", verdict(None if w is None else w <= 4)))
w, g = med("fanout", "wsproxy", "delivered_pct"), med("fanout", G_CHAT, "delivered_pct")
T.append(("fanout 5,000 members, 100 msgs/s", "delivered %", fmt(w, "%"), fmt(g, "%"), ratio(w, g),
          "100 %", verdict(None if w is None else w >= 100)))
w, g = med("fanout", "wsproxy", "p99_us"), med("fanout", G_CHAT, "p99_us")
w, g = (None if w is None else w / 1000), (None if g is None else g / 1000)
T.append(("", "p99 publish→receipt, ms", fmt(w), fmt(g), ratio(w, g), "< gorilla (stores nothing)",
          verdict(None if w is None or g is None else w < g)))
w, g = med("fanout_light", "wsproxy", "delivered_pct"), med("fanout_light", G_CHAT, "delivered_pct")
T.append(("(context) fanout 1,000 members, 20 msgs/s", "delivered %", fmt(w, "%"), fmt(g, "%"),
          ratio(w, g), "", ""))
w, g = med("fanout_light", "wsproxy", "p99_us"), med("fanout_light", G_CHAT, "p99_us")
w, g = (None if w is None else w / 1000), (None if g is None else g / 1000)
T.append(("", "p99 publish→receipt, ms", fmt(w), fmt(g), ratio(w, g), "", ""))
w = med("persist_normal", "wsproxy", "msgs_per_s")
T.append(("persist, synchronous=normal", "durable DMs/s (receipt after commit)", fmt(w), "n/a", "",
          "≥ 100,000 (issue 8); ≥ 50,000 (issue 3)",
          "—" if w is None else f"{verdict(w >= 100000)} / {verdict(w >= 50000)}"))
w = med("persist_full", "wsproxy", "msgs_per_s")
T.append(("persist, synchronous=full", "durable DMs/s", fmt(w), "n/a", "", "(none)", ""))
w, g = med("conv_list", "wsproxy", "conv_first_ms"), med("conv_list", "wsproxy", "conv_later_ms")
T.append(("conversation list: 1,000 conversations, 100,000 messages (store only)",
          "ms per call: first page of 50 / page 11", f"{fmt(w)} / {fmt(g)}", "n/a", "", "(none)", ""))

# Issue 16: the same run against libwebsockets (lws-peer) and gorilla; ratios from this run.
L = "lws"
def ms(v):
    return None if v is None else v / 1000
def both(*v):
    return None if any(x is None for x in v) else all(v)
T16 = []  # scenario, metric, wsproxy, lws, gorilla, w/lws, w/gorilla, target, met
def row16(label, metric, sc, key, g_srv, target, ok, unit="", scale=None):
    w, l, g = (med(sc, s_, key) for s_ in ("wsproxy", L, g_srv))
    if scale:
        w, l, g = scale(w), scale(l), scale(g)
    T16.append((label, metric, fmt(w, unit), fmt(l, unit), fmt(g, unit), ratio(w, l), ratio(w, g),
                target, verdict(ok(w, l, g))))
row16("echo 100 conns × 32 B, window 16", "msgs per server-core-second", "echo100",
      "msgs_per_core_s", G_ECHO, "≥ 2,100,000 and ≥ 13× lws",
      lambda w, l, g: None if w is None or l is None else w >= 2.1e6 and w >= 13 * l)
row16("", "loader CPU (must not be the limit)", "echo100", "loader_cpu_pct", G_ECHO,
      "< 90 % of its core", lambda w, l, g: None if w is None else w < 90, "%")
# per run, then the median: msgs/s over the share of its core the loader used in that run
cl = [float(r["msgs_per_s"]) * 100 / float(r["loader_cpu_pct"]) for r in rows
      if r["scenario"] == "echo100_raw" and float(r.get("loader_cpu_pct", 0)) > 0]
ceil = statistics.median(cl) if cl else None
T16.append(("", "(context) loader's ceiling: msgs/s ÷ loader CPU share, against rawecho", fmt(ceil),
            "", "", "", "", "≥ 2,500,000", verdict(None if ceil is None else ceil >= 2.5e6)))
row16("echo 100 conns × 4 KiB, window 16", "msgs per server-core-second", "echo4k",
      "msgs_per_core_s", G_ECHO, "≥ 3.6× lws",
      lambda w, l, g: None if w is None or l is None else w >= 3.6 * l)
row16("echo 1 conn × 32 B, window 1", "msgs/s", "echo1", "msgs_per_s", G_ECHO, "≥ 4× gorilla",
      lambda w, l, g: None if w is None or g is None else w >= 4 * g)
# The ceiling of any epoll server on this machine with this loader: rawecho does nothing but the
# two system calls per message, so a wsproxy figure above it is impossible (README: echo1_raw).
r, g = med("echo1_raw", "rawecho", "msgs_per_s"), med("echo1", G_ECHO, "msgs_per_s")
T16.append(("", "(context) rawecho, the cheapest echo server, same loader: msgs/s", fmt(r), "",
            fmt(g), "", ratio(r, g), "", ""))
row16("idle 10,000 conns on /ws, each a member of one room", "server RSS KiB per conn",
      "idle_room", "kib_per_conn", G_CHAT, "≤ 2 KiB", lambda w, l, g: None if w is None else w <= 2)
row16("join storm: 2,000 clients join one room at 2,000/s", "peak RSS KiB per conn", "join_storm",
      "peak_kib_per_conn", G_CHAT, "< 8 KiB", lambda w, l, g: None if w is None else w < 8)
row16("", "RSS KiB per conn 5 s after the last join", "join_storm", "kib_per_conn", G_CHAT,
      "< 3 KiB", lambda w, l, g: None if w is None else w < 3)
row16("fanout 1,000 members × 100 msgs/s", "delivered %", "fanout_1k", "delivered_pct", G_CHAT,
      "(context)", lambda w, l, g: None, "%")
row16("", "p99 publish→receipt, ms", "fanout_1k", "p99_us", G_CHAT, "≤ 6 ms",
      lambda w, l, g: None if w is None else w <= 6, scale=ms)
row16("fanout 5,000 members × 100 msgs/s", "delivered %", "fanout", "delivered_pct", G_CHAT,
      "100 %", lambda w, l, g: None if w is None else w >= 100, "%")
row16("", "p99 publish→receipt, ms", "fanout", "p99_us", G_CHAT, "≤ 70 ms",
      lambda w, l, g: None if w is None else w <= 70, scale=ms)
w = med("persist_normal", "wsproxy", "msgs_per_s")
T16.append(("persist, synchronous=normal, 16 × 64 in flight", "durable DMs/s (receipt after commit)",
            fmt(w), "n/a", "n/a", "", "", "≥ 150,000", verdict(None if w is None else w >= 150000)))

print("## Targets (issue 16)\n")
print("| scenario | metric | wsproxy | lws | gorilla | wsproxy/lws | wsproxy/gorilla | target | met |")
print("|---|---|--:|--:|--:|--:|--:|---|---|")
for r in T16:
    print("| " + " | ".join(r) + " |")
print("\nlws: libwebsockets (tests/bench/lws/peer.c); its chat hub, like gorilla's, stores nothing. "
      "Ratios above 1 favour wsproxy in msgs, below 1 in KiB and ms. The fan-out targets are judged "
      "on wsproxy's figure alone; `—` where a scenario was not run.\n")

print("## Targets (issue 8)\n")
print("| scenario | metric | wsproxy | gorilla | wsproxy/gorilla | target | met |")
print("|---|---|--:|--:|--:|---|---|")
for r in T:
    print("| " + " | ".join(r) + " |")

# The join storm: the server's RSS sampled every 50 ms from the first connect on.
if any(r["scenario"] == "join_storm" for r in rows):
    print("\n## Join storm: 2,000 clients connect and join one room, paced at 2,000/s\n")
    print("| server | storm s | RSS before, KiB | peak, KiB | 5 s after, KiB | peak KiB/conn "
          "| after KiB/conn | frames received | server CPU s | loader CPU |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for srv in ("wsproxy", L, G_CHAT):
        m = lambda key, unit="": fmt(med("join_storm", srv, key), unit)
        if med("join_storm", srv, "ready") is None:
            continue
        print(f"| {srv} | {m('setup_s')} | {m('rss_before_kib')} | {m('rss_peak_kib')} "
              f"| {m('rss_after_kib')} | {m('peak_kib_per_conn')} | {m('kib_per_conn')} "
              f"| {m('frames_rx')} | {m('server_cpu_s')} | {m('loader_cpu_pct', '%')} |")
    print("\nKiB/conn: (RSS − RSS before the first connect) / 2,000. *storm s*: first connect to "
          "last `joined`. *frames received*: every frame the 2,000 clients got (welcome, joined, "
          "member events).")

# Compressed fan-out beside the same scenario uncompressed (issue 17): wsproxy only.
if any(r["scenario"] in ("fanout_plain", "fanout_deflate") for r in rows):
    P, Z = "fanout_plain", "fanout_deflate"
    def pair(key, scale=1.0, unit=""):
        a, b = med(P, "wsproxy", key), med(Z, "wsproxy", key)
        a = None if a is None else a * scale
        b = None if b is None else b * scale
        return [fmt(a, unit), fmt(b, unit), ratio(b, a)]
    body = med(P, "wsproxy", "body") or med(Z, "wsproxy", "body")
    rate = med(P, "wsproxy", "rate") or med(Z, "wsproxy", "rate")
    conns = med(P, "wsproxy", "conns") or med(Z, "wsproxy", "conns")
    print(f"\n## Compression: fan-out {fmt(conns)} members × {fmt(rate)} msgs/s, "
          f"{fmt(body)}-byte chat-like bodies (wsproxy)\n")
    print("| metric | compression off | compression on | on/off |")
    print("|---|--:|--:|--:|")
    C = [("bytes on the wire per delivery", pair("wire_bytes_per_msg")),
         ("compressed payload, % of inflated", pair("z_ratio_pct", unit="%")),
         ("server CPU µs per delivery", pair("server_cpu_us_per_msg")),
         ("deliveries per server-core-second", pair("msgs_per_core_s")),
         ("server CPU (share of one core)", pair("server_cpu_pct", unit="%")),
         ("p50 publish→receipt, ms", pair("p50_us", 1 / 1000)),
         ("p99 publish→receipt, ms", pair("p99_us", 1 / 1000)),
         ("delivered", pair("delivered_pct", unit="%")),
         ("loader CPU (inflates when on)", pair("loader_cpu_pct", unit="%"))]
    for label, v in C:
        print(f"| {label} | " + " | ".join(v) + " |")
    print("\nBytes on the wire: what the members' sockets delivered in the window (WebSocket "
          "frames with headers, not TCP/IP headers) / deliveries; exact. CPU figures: utime + "
          "stime of the server over the window, noisy on a shared machine.")

# Events on vs off (issue 14): the same durable-DM load, outbox to hookrecv on loopback.
EOFF, EDEF, EON = "persist_events_off", "persist_events_default", "persist_events_on"
if any(r["scenario"] in (EOFF, EDEF, EON) for r in rows):
    def trio(key, scale=1.0, unit=""):
        v = [med(sc, "wsproxy", key) for sc in (EOFF, EDEF, EON)]
        v = [None if x is None else x * scale for x in v]
        return [fmt(v[0], unit), fmt(v[1], unit), ratio(v[1], v[0]), fmt(v[2], unit),
                ratio(v[2], v[0])]
    a, d, b = (med(sc, "wsproxy", "msgs_per_s") for sc in (EOFF, EDEF, EON))
    ok = None if a is None or d is None else d >= 0.85 * a
    print("\n## Events to the backend (issue 14): persist, 16 senders × 64 in flight, events off vs "
          "on (default types) vs on (every type: an event per DM)\n")
    print("| metric | events off | default types | default/off | every type | every/off |")
    print("|---|--:|--:|--:|--:|--:|")
    for label, v in [("durable DMs/s", trio("msgs_per_s")),
                     ("DMs per server-core-second", trio("msgs_per_core_s")),
                     ("server CPU (share of one core)", trio("server_cpu_pct", unit="%")),
                     ("server's core busy", trio("server_core_busy_pct", unit="%")),
                     ("loader CPU", trio("loader_cpu_pct", unit="%")),
                     ("p50 send→receipt, ms", trio("p50_us", 1 / 1000)),
                     ("p99 send→receipt, ms", trio("p99_us", 1 / 1000))]:
        print(f"| {label} | " + " | ".join(v) + " |")
    print(f"\nTarget (issue 14): chat throughput with events on (default types) ≥ 0.85 × off: "
          f"{verdict(ok)}. With every type each DM also writes, reads, posts and deletes an event "
          f"row (context, no target).")
    runs = lambda sc: " / ".join(fmt(float(r["msgs_per_s"])) for r in rows
                                 if r["scenario"] == sc and "msgs_per_s" in r)
    print(f"\nPer run, DMs/s: off {runs(EOFF)}; default {runs(EDEF)}; every type {runs(EON)}.")
    on = [r for r in rows if r["scenario"] in (EDEF, EON) and "ev_queued" in r]
    if on:
        geti = lambda r, k: int(float(r.get(k, -1)))
        alldone = all(geti(r, "ev_queued") == geti(r, "ev_delivered") >= 0 and
                      geti(r, "ev_outbox_queued") == 0 and geti(r, "ev_outbox_dead") == 0 and
                      geti(r, "ev_dropped") == 0 and geti(r, "ev_failed") == 0 for r in on)
        print("\nOutbox after each events-on run (wsproxy `/metrics` after the window; hookrecv's "
              "own counts):\n")
        print("| types | run | events queued | delivered | backlog at window end | drained after, ms "
              "| retried | failed | dropped | outbox queued / dead | hookrecv POSTs | hookrecv events |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for r in on:
            g = lambda k: f"{int(float(r[k])):,}" if k in r else "—"
            t = "every" if r["scenario"] == EON else "default"
            print(f"| {t} | {r['run']} | {g('ev_queued')} | {g('ev_delivered')} "
                  f"| {g('ev_backlog_end')} "
                  f"| {g('ev_drain_ms')} | {g('ev_retried')} | {g('ev_failed')} | {g('ev_dropped')} "
                  f"| {g('ev_outbox_queued')} / {g('ev_outbox_dead')} | {g('hook_posts')} "
                  f"| {g('hook_events')} |")
        print(f"\nAll delivered (queued = delivered, outbox empty, nothing dead or dropped): "
              f"{verdict(alldone)}.")

print("\n## Details (medians)\n")
print("| scenario | server | msgs/s | per server-core-s | server CPU | server's core busy "
      "| loader CPU | loader syscalls/msg | p50 µs | p99 µs | p99.9 µs | KiB/conn | delivered "
      "| setup s | errors |")
print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
seen = []
for r in rows:
    k = (r["scenario"], r["server"])
    if k not in seen:
        seen.append(k)
for sc, srv in seen:
    if sc == "conv_list":
        continue  # in the targets table; its raw line has the rest
    m = lambda key, unit="": fmt(med(sc, srv, key), unit)
    label = srv + (" (sync=full)" if sc == "persist_full" else "") + (
        " (events on)" if sc == EON else "") + (
        " (compression on)" if sc == "fanout_deflate" else "")
    print(f"| {sc} | {label} | {m('msgs_per_s')} | {m('msgs_per_core_s')} "
          f"| {m('server_cpu_pct', '%')} | {m('server_core_busy_pct', '%')} "
          f"| {m('loader_cpu_pct', '%')} | {m('loader_syscalls_per_msg')} | {m('p50_us')} "
          f"| {m('p99_us')} | {m('p999_us')} | {m('kib_per_conn')} | {m('delivered_pct', '%')} "
          f"| {m('setup_s')} | {m('errors')} |")

# Cluster (issue 15): one and two nodes on one PostgreSQL beside one node on SQLite, same run.
CL = [("persist_normal", "wsproxy", "1 node, SQLite"), ("persist_pg1", "wsproxy-pg1",
      "1 node, PostgreSQL"), ("persist_pg2", "wsproxy-pg2", "2 nodes, PostgreSQL")]
pg_note = sys.argv[2] if len(sys.argv) > 2 else ""
if any(r["scenario"] in ("persist_pg1", "persist_pg2", "fanout_x") for r in rows) or pg_note:
    def medf(sc, srv, fn):  # median over runs of a figure derived from one run's line
        v = []
        for r in rows:
            if r["scenario"] == sc and r["server"] == srv:
                try:
                    x = fn(r)
                except (KeyError, ValueError, ZeroDivisionError):
                    x = None
                if x is not None:
                    v.append(x)
        return statistics.median(v) if v else None
    F = lambda k: (lambda r: float(r[k]))
    us_per = lambda k: (lambda r: float(r[k]) * 1e4 / float(r["msgs_per_s"]))  # % of a core -> µs/DM
    def row(label, fn, unit="", scale=1.0):
        v = [medf(sc, srv, fn) for sc, srv, _ in CL]
        return f"| {label} | " + " | ".join(fmt(None if x is None else x * scale, unit) for x in v) + " |"
    print("\n## Cluster (issue 15)\n")
    if pg_note:
        print(f"PostgreSQL scenarios {pg_note}.\n")
    print("Durable DMs: 16 senders × 64 in flight to offline users (persist_normal's load); with two "
          "nodes 8 senders on each (two loadgens at once).\n")
    print("| metric | " + " | ".join(h for _, _, h in CL) + " |")
    print("|---|--:|--:|--:|")
    base = med("persist_normal", "wsproxy", "msgs_per_s")
    print(row("durable DMs/s (receipt after commit)", F("msgs_per_s")))
    print("| vs SQLite | " + " | ".join(ratio(med(sc, srv, "msgs_per_s"), base) for sc, srv, _ in CL)
          + " |")
    print(row("p50 send→receipt, ms", F("p50_us"), scale=1 / 1000))
    print(row("p99 send→receipt, ms", F("p99_us"), scale=1 / 1000))
    print(row("wsproxy CPU, all nodes (share of one core)", F("server_cpu_pct"), "%"))
    n1, n2 = (medf("persist_pg2", "wsproxy-pg2", F(k)) for k in ("n1_server_cpu_pct", "n2_server_cpu_pct"))
    d1, d2 = (medf("persist_pg2", "wsproxy-pg2", F(k)) for k in ("n1_msgs_per_s", "n2_msgs_per_s"))
    print(f"| … per node: CPU / DMs/s | | | n1 {fmt(n1, '%')} / {fmt(d1)}, n2 {fmt(n2, '%')} / {fmt(d2)} |")
    print(row("PostgreSQL CPU (postmaster + all its processes)", F("group_cpu_pct"), "%"))
    print(row("core 0 busy (nodes + PostgreSQL + anything else)", F("server_core_busy_pct"), "%"))
    print(row("wsproxy CPU µs per DM", us_per("server_cpu_pct")))
    print(row("PostgreSQL CPU µs per DM", us_per("group_cpu_pct")))
    print(row("loader CPU (all loadgens)", F("loader_cpu_pct"), "%"))
    print(row("errors", F("errors")))
    runs = lambda sc: " / ".join(fmt(float(r["msgs_per_s"])) for r in rows
                                 if r["scenario"] == sc and "msgs_per_s" in r)
    print("\nPer run, DMs/s: " + "; ".join(f"{h} {runs(sc) or '—'}" for sc, _, h in CL) + ".")
    X = ("fanout_x", "wsproxy-pgx")
    print("\nCross-node fan-out (fanout_x): members on node n2, the publisher on node n1; a message "
          "reaches n2 through PostgreSQL (stored and noted in the cluster log by n1, NOTIFY, fetched "
          "by n2).\n")
    print("| members × msgs/s | delivered | p50 publish→receipt, ms | p99, ms | p99.9, ms "
          "| n2 CPU | n1 CPU | PostgreSQL CPU | core 0 busy | errors |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    mx = lambda k, unit="", scale=1.0: fmt(None if med(*X, k) is None else med(*X, k) * scale, unit)
    print(f"| {mx('conns')} × {mx('rate')} | {mx('delivered_pct', '%')} | {mx('p50_us', scale=1e-3)} "
          f"| {mx('p99_us', scale=1e-3)} | {mx('p999_us', scale=1e-3)} | {mx('server_cpu_pct', '%')} "
          f"| {mx('n1_cpu_pct', '%')} | {mx('group_cpu_pct', '%')} | {mx('server_core_busy_pct', '%')} "
          f"| {mx('errors')} |")
    logs = sum(int(float(r.get("node_log_lines", 0))) for r in rows if r["server"].startswith("wsproxy-pg"))
    print(f"\nPinning: every wsproxy node and PostgreSQL (postmaster, backends, background workers) "
          f"on core 0; the loadgens on core 1; so the nodes and the database share one core, and "
          f"*core 0 busy* near 100 % means that core is the limit, split as the CPU rows show. "
          f"PostgreSQL: scripts/pgtmp.sh (fsync on, synchronous_commit on, shared_buffers 128MB), "
          f"database recreated before each run. CPU: utime + stime from /proc over the loadgen's "
          f"window (n1's in fanout_x: over the whole loadgen run, setup included). Two-node latency: the higher of the two loadgens' percentiles. Lines in the "
          f"nodes' logs (level warn), all runs: {logs}.")
PY
    echo
    echo "Raw result lines (one per run):"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
} >"$RESULT_MD"

cat "$RESULT_MD"
echo >&2
log "written to $RESULT_MD"
exit $FAILED
