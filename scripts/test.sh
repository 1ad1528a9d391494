#!/usr/bin/env bash
# `make test`: installs what the tests need, then runs every suite -- unit, integration (real binary,
# real clients, nginx, Chromium), fuzz and bench smoke runs -- and the unit + integration suites again
# under AddressSanitizer + UndefinedBehaviorSanitizer. Ends with one summary line; exit 1 on any failure.
# Sourced (`source scripts/test.sh`), it only defines the functions (a test checks the summary's
# parsing that way).
set -u
JOBS=${JOBS:-2}
LOGS=var/test-logs

total_pass=0 total_fail=0 summary=() skips=()
# -rfEs: failures, errors and skips with their reasons in pytest's short summary.
PYTEST=(/usr/bin/python3 -m pytest -q -p no:cacheprovider -rfEs)

record() { # name pass fail [skipped]
    total_pass=$((total_pass + $2))
    total_fail=$((total_fail + $3))
    local s=${4:-0}
    summary+=("$(printf '%-28s %4d passed, %d failed%s' "$1" "$2" "$3" \
        "$([ "$s" -gt 0 ] && printf ', %d skipped' "$s")")")
}

# pytest's output on stdin -> "PASSED FAILED SKIPPED" (errors count as failed).
pytest_counts() {
    local out last p f e s
    out=$(cat)
    last=$(echo "$out" | grep -E '[0-9]+ (passed|failed|skipped|error)' | tail -1)
    p=$(echo "$last" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
    f=$(echo "$last" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
    e=$(echo "$last" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
    s=$(echo "$last" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+')
    echo "${p:-0} $(( ${f:-0} + ${e:-0} )) ${s:-0}"
}

# pytest's output on stdin -> one line per skip reason: "N× reason (file:line)".
pytest_skip_reasons() {
    sed -n 's/^SKIPPED \[\([0-9]*\)\] \([^:]*:[0-9]*\): \(.*\)$/\1x \3 (\2)/p'
}

run_unit() { # name builddir
    local out
    out=$(make --no-print-directory -s DEVELOPER=1 B="$2" ${3:+SAN=1} -j"$JOBS" unit 2>&1 | tee "$LOGS/$1.log")
    echo "$out"
    local line
    line=$(echo "$out" | grep -E '^unit: ' | tail -1)
    local p f
    p=$(echo "$line" | sed -n 's/^unit: \([0-9]*\) passed.*/\1/p')
    f=$(echo "$line" | sed -n 's/.*, \([0-9]*\) failed.*/\1/p')
    [ -z "$line" ] && { p=0; f=1; }
    record "$1" "${p:-0}" "${f:-1}"
}

run_pytest() { # name bin
    local out rc
    out=$(cd tests/integration && WSP_BIN="$PWD/../../$2" timeout 1500 "${PYTEST[@]}" . 2>&1)
    rc=$?
    pytest_record "$1" "$rc" "$out"
}

# The integration suite with every server on PostgreSQL (its own database on one throwaway server).
run_pytest_pg() { # name bin
    local out rc
    out=$(timeout 1500 bash scripts/test-integration-pg.sh "$2" 2>&1)
    rc=$?
    pytest_record "$1" "$rc" "$out"
}

# The store's unit tests against a throwaway PostgreSQL: "unit-pg: N passed, M failed, K skipped".
run_unit_pg() { # name builddir
    local out line p f s
    out=$(bash scripts/test-unit-pg.sh "$2" 2>&1 | tee "$LOGS/$1.log")
    echo "$out" | tail -4
    line=$(echo "$out" | grep -E '^unit-pg: ' | tail -1)
    p=$(echo "$line" | sed -n 's/^unit-pg: \([0-9]*\) passed.*/\1/p')
    f=$(echo "$line" | sed -n 's/.*, \([0-9]*\) failed.*/\1/p')
    s=$(echo "$line" | sed -n 's/.*, \([0-9]*\) skipped.*/\1/p')
    [ -z "$line" ] && { p=0; f=1; }
    record "$1" "${p:-0}" "${f:-1}" "${s:-0}"
    [ "${s:-0}" -gt 0 ] && skips+=("$1: ${s} SQLite-only store tests (each names why in $LOGS/$1.log)")
}

pytest_record() { # name rc output
    local rc=$2 out=$3
    echo "$out" | tee "$LOGS/$1.log" | tail -40
    local p f s reason
    read -r p f s < <(echo "$out" | pytest_counts)
    [ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
    record "$1" "$p" "$f" "$s"
    while IFS= read -r reason; do
        [ -n "$reason" ] && skips+=("$1: $reason")
    done < <(echo "$out" | pytest_skip_reasons)
}

run_check() { # name command...  (a suite that passes or fails as a whole)
    local name=$1
    shift
    if "$@" > "$LOGS/$name.log" 2>&1; then
        tail -5 "$LOGS/$name.log"
        record "$name" 1 0
    else
        tail -40 "$LOGS/$name.log"
        record "$name" 0 1
    fi
}

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

cd "$(dirname "$0")/.."
mkdir -p "$LOGS"
bash scripts/deps.sh test || { echo "test: installing dependencies failed"; exit 1; }

echo "== layering"
run_check layers bash scripts/check-layers.sh

echo "== build"
if ! make --no-print-directory -j"$JOBS" DEVELOPER=1 all > "$LOGS/build.log" 2>&1; then
    cat "$LOGS/build.log"; echo "0 passed, 1 failed"; exit 1
fi
if ! make --no-print-directory -j"$JOBS" DEVELOPER=1 B=build/asan SAN=1 all > "$LOGS/build-asan.log" 2>&1; then
    cat "$LOGS/build-asan.log"; echo "0 passed, 1 failed"; exit 1
fi

echo "== unit tests"
run_unit unit build
echo "== unit tests (ASan+UBSan)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=66
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run_unit unit-asan build/asan 1

echo "== integration tests"
run_pytest integration build/wsproxy
echo "== integration tests (ASan+UBSan)"
run_pytest integration-asan build/asan/wsproxy

echo "== store unit tests on PostgreSQL"
run_unit_pg unit-pg build
echo "== integration tests on PostgreSQL (every server on a database of its own)"
run_pytest_pg integration-pg build/wsproxy

if [ -f tests/browser/chat.test.js ]; then
    echo "== browser test (headless Chromium)"
    run_check browser bash tests/browser/run.sh
fi
if [ -f tests/clients/run.sh ]; then
    echo "== client libraries (PHP and JS against the real server)"
    run_check clients env WSP_BIN=build/wsproxy bash tests/clients/run.sh
fi
if [ -f tests/fuzz/run.sh ]; then
    echo "== fuzz smoke"
    run_check fuzz-smoke env FUZZ_RUNS=20000 bash tests/fuzz/run.sh
fi
if [ -f tests/bench/smoke.sh ]; then
    echo "== bench smoke"
    run_check bench-smoke bash tests/bench/smoke.sh
fi

echo
echo "== summary (logs in $LOGS/)"
printf '%s\n' "${summary[@]}"
if [ ${#skips[@]} -gt 0 ]; then
    echo "skipped (not failures; each with its reason):"
    printf '  %s\n' "${skips[@]}"
fi
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
