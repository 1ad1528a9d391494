#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and benches: `pgtmp.sh start DIR [PORT]` runs initdb in DIR
# (created), starts it on 127.0.0.1:PORT (a free port if none is given) with its socket in DIR, and
# prints a libpq connection string for the database "wsproxy"; `pgtmp.sh stop DIR` stops it and
# removes DIR. As root, the server runs as the "postgres" user (initdb refuses root).
# Settings are for tests: fsync stays on (kill -9 tests need real durability), synchronous_commit on.
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bindir/initdb" ] || { echo "pgtmp: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: pgtmp.sh start|stop DIR [PORT]" >&2; exit 2; }

case "$cmd" in
start)
    port=${3:-$(free_port)}
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$(dirname "$dir")"; then
        echo "pgtmp: user postgres cannot enter $(dirname "$dir"); use a directory under /tmp" >&2; exit 1
    fi
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
    chmod 700 "$dir"
    as_pg "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
shared_buffers = 128MB
fsync = on
synchronous_commit = on
log_min_messages = warning
CONF
    as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    as_pg "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAtc "CREATE DATABASE wsproxy" >/dev/null
    echo "host=127.0.0.1 port=$port user=postgres dbname=wsproxy"
    ;;
stop)
    if [ -d "$dir/data" ]; then
        as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: pgtmp.sh start|stop DIR [PORT]" >&2; exit 2 ;;
esac
