#!/usr/bin/env bash
# Runs each cmocka unit-test binary given; prints one line per binary and a summary line
# "unit: N passed, M failed". Failing binaries get their whole output shown.
set -u
passed=0 failed=0 broken=()
for t in "$@"; do
    out=$("$t" 2>&1)
    rc=$?
    p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    printf '  %-24s %3s passed, %s failed\n' "$(basename "$t")" "${p:-0}" "${f:-0}"
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    if [ $rc -ne 0 ]; then
        broken+=("$(basename "$t")")
        [ -z "$f" ] && failed=$((failed + 1))
        echo "$out" | grep -v "^\[       OK \]\|^\[ RUN      \]" | tail -40
    fi
done
echo "unit: $passed passed, $failed failed${broken:+ (in ${broken[*]})}"
[ $failed -eq 0 ]
