#!/usr/bin/env bash
# `make soak`: builds the server, then runs tests/soak/soak.py against a fresh instance:
# SOAK_CLIENTS clients (50) chatting and dropping at random for SOAK_SECONDS (20). WSP_BIN picks
# another binary (e.g. build/asan/wsproxy). Exit status is soak.py's: 0 when every check held.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${WSP_BIN:-}" ]; then
    make --no-print-directory -s all
fi
exec /usr/bin/python3 tests/soak/soak.py "$@"
