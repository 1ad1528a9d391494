#!/usr/bin/env bash
# The store's unit tests (test_store, test_outbox) on the PostgreSQL backend: starts a throwaway
# server (scripts/pgtmp.sh), runs both binaries with WSP_TEST_PG_DSN set, stops the server whatever
# happens. `test-unit-pg.sh [BUILDDIR]` (default build) takes the binaries from BUILDDIR/tests/.
# Prints one line per binary and "unit-pg: N passed, M failed (K skipped)"; exits 1 on any failure.
# Skipped tests (SQLite-only ones) are not failures.
set -u
B=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
bins=("$B/tests/test_store" "$B/tests/test_outbox")
for t in "${bins[@]}"; do
    [ -x "$t" ] || { echo "unit-pg: $t not built (make B=$B $t)" >&2; exit 1; }
done

dir=$(mktemp -d /tmp/wsp-unit-pg.XXXXXX)
trap 'bash "$here/pgtmp.sh" stop "$dir" >/dev/null 2>&1' EXIT
trap 'exit 130' INT TERM
dsn=$(bash "$here/pgtmp.sh" start "$dir") || { echo "unit-pg: could not start PostgreSQL" >&2; exit 1; }

passed=0 failed=0 skipped=0 broken=()
for t in "${bins[@]}"; do
    out=$(WSP_TEST_PG_DSN="$dsn" "$t" 2>&1)
    rc=$?
    p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    s=$(echo "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | tail -1)
    printf '  %-24s %3s passed, %s failed, %s skipped\n' "$(basename "$t")" "${p:-0}" "${f:-0}" "${s:-0}"
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    skipped=$((skipped + ${s:-0}))
    if [ $rc -ne 0 ]; then
        broken+=("$(basename "$t")")
        if [ -z "$f" ]; then # setup errors (no summary line for them), or a crash: count those
            e=$(echo "$out" | grep -c '^\[  ERROR   \] test')
            failed=$((failed + (e > 0 ? e : 1)))
        fi
        echo "$out" | grep -v "^\[       OK \]\|^\[ RUN      \]\|: Skipped!$\|^\[  SKIPPED \]" | tail -60
    fi
done
echo "unit-pg: $passed passed, $failed failed, $skipped skipped${broken:+ (in ${broken[*]})}"
[ $failed -eq 0 ]
