#!/usr/bin/env bash
# The single-node integration suite against the PostgreSQL backend:
#   scripts/test-integration-pg.sh BUILD/wsproxy [PYTEST ARGS...]   (e.g. test_api.py -k healthz)
# starts one throwaway PostgreSQL (scripts/pgtmp.sh, stopped on exit), then runs tests/integration
# with WSP_STORE=postgresql: every test's server gets a fresh database of its own on it (wsp.py).
# wsctl is taken from beside the wsproxy binary unless WSCTL_BIN is set. Exit status: pytest's.
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: test-integration-pg.sh WSPROXY_BIN [PYTEST ARGS...]" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
[ -x "$bin" ] || { echo "test-integration-pg: $bin is not an executable" >&2; exit 2; }
: "${WSCTL_BIN:=$(dirname "$bin")/wsctl}"
/usr/bin/python3 -c 'import psycopg2' 2>/dev/null \
    || { echo "test-integration-pg: python3-psycopg2 is missing (scripts/deps.sh test)" >&2; exit 2; }

pgdir=$(mktemp -d /tmp/wsp-itpg-XXXXXX)
trap 'bash "$root/scripts/pgtmp.sh" stop "$pgdir"' EXIT
dsn=$(bash "$root/scripts/pgtmp.sh" start "$pgdir")
base=$(printf '%s\n' "$dsn" | sed -E 's/[[:space:]]*dbname=[^[:space:]]+//')
echo "test-integration-pg: PostgreSQL at $base"

cd "$root/tests/integration"
set +e
WSP_STORE=postgresql WSP_PG_DSN_BASE="$base" WSP_BIN="$bin" WSCTL_BIN="$WSCTL_BIN" \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider -rfEs "$@"
rc=$?
set -e
exit "$rc"
