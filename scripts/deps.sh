#!/usr/bin/env bash
# Installs the Debian packages wsproxy needs: `deps.sh run` for building and running, `deps.sh test`
# for everything the test suite uses too. Installs only what is missing; needs root (or sudo).
set -euo pipefail

RUN_PKGS=(gcc make pkg-config libc6-dev libevent-dev libssl-dev libsqlite3-dev libjansson-dev
          libjwt-dev libinih-dev uthash-dev zlib1g-dev libpq-dev liburing-dev)
TEST_PKGS=(libcmocka-dev python3 python3-websockets python3-pytest curl openssl nginx sqlite3
           clang libclang-rt-14-dev procps util-linux chromium python3-cryptography systemd
           php-cli php-curl php8.2-fpm postgresql python3-psycopg2)

want=("${RUN_PKGS[@]}")
[ "${1:-run}" = test ] && want+=("${TEST_PKGS[@]}")

missing=()
for p in "${want[@]}"; do
    # nginx may come as nginx, nginx-light or nginx-core: any nginx binary will do.
    if [ "$p" = nginx ] && [ -x /usr/sbin/nginx ]; then
        continue
    fi
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${1:-run}" = test ] && ! command -v node >/dev/null 2>&1; then
    missing+=(nodejs npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "${1:-run}" = test ]; then
    # Node packages for the `ws` client, the browser test and the client-library tests, from the
    # committed lock files.
    for d in tests/integration/node tests/browser tests/clients; do
        if [ -f "$d/package-lock.json" ] && [ ! -d "$d/node_modules" ]; then
            echo "deps: npm ci in $d"
            (cd "$d" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        fi
    done
fi
