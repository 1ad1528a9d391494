#!/usr/bin/env bash
# run.sh -- builds each tests/fuzz/fuzz_<name>.c with libFuzzer + ASan + UBSan and runs it over its
# seeds in tests/fuzz/corpus/fuzz_<name>/ (or corpus/<name>/). Usage: run.sh [name...];
# FUZZ_RUNS (default 200000) runs per target.
#
# A target names the proxy/ and store/ files it links in one of its first 5 lines:
#   /* fuzz-deps: proxy/proto/ws_parser.c proxy/proto/utf8.c */
# (linker flags such as -ljansson may follow the files on that line)
# and may name a libFuzzer dictionary the same way (/* fuzz-dict: tests/fuzz/http.dict */); else
# tests/fuzz/<name>.dict is used if present.
# New inputs go to build/fuzz/corpus/fuzz_<name>/ so committed seeds stay small; crashes are saved as
# build/fuzz/<target>-crash-*. Exits non-zero if any target fails to build or finds a crash.
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
RUNS=${FUZZ_RUNS:-200000}
OUT=${FUZZ_OUT:-build/fuzz}
CC=${FUZZ_CC:-clang}
CFLAGS=(-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer
        '-fsanitize=fuzzer,address,undefined' -fno-sanitize-recover=all -Iproxy -Istore)
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
        "$CC" -fsanitize=fuzzer -x c - -o /dev/null 2>/dev/null; then
    echo "run.sh: $CC cannot link libFuzzer; on Debian: apt-get install libclang-rt-14-dev" >&2
    exit 2
fi

if [ $# -gt 0 ]; then
    targets=()
    for name in "$@"; do targets+=("tests/fuzz/fuzz_${name#fuzz_}.c"); done
else
    targets=(tests/fuzz/fuzz_*.c)
fi

mkdir -p "$OUT"
failed=()
for src in "${targets[@]}"; do
    target=$(basename "$src" .c)
    name=${target#fuzz_}
    deps=$(sed -n '1,5s|^/\* fuzz-deps: \(.*\) \*/$|\1|p' "$src" | head -n 1)
    if [ -z "$deps" ]; then
        echo "run.sh: $src has no '/* fuzz-deps: ... */' line" >&2
        failed+=("$target(no deps line)")
        continue
    fi
    echo "== $target: build ($deps)"
    # shellcheck disable=SC2086 # deps is a space-separated file list on purpose
    if ! "$CC" "${CFLAGS[@]}" "$src" $deps -lcrypto -o "$OUT/$target"; then
        failed+=("$target(build)")
        continue
    fi
    work=$OUT/corpus/$target
    mkdir -p "$work"
    extra=()
    dict=$(sed -n '1,5s|^/\* fuzz-dict: \(.*\) \*/$|\1|p' "$src" | head -n 1)
    [ -z "$dict" ] && [ -f "tests/fuzz/$name.dict" ] && dict=tests/fuzz/$name.dict
    [ -n "$dict" ] && extra+=(-dict="$dict")
    dirs=("$work")
    for seeds in "tests/fuzz/corpus/$target" "tests/fuzz/corpus/$name"; do
        [ -d "$seeds" ] && dirs+=("$seeds")
    done
    echo "== $target: $RUNS runs"
    if ! "$OUT/$target" -runs="$RUNS" -max_len=4096 -print_final_stats=1 \
            -artifact_prefix="$OUT/$target-" "${extra[@]}" "${dirs[@]}" 2>"$OUT/$target.log"; then
        tail -n 40 "$OUT/$target.log" >&2
        failed+=("$target(crash: see $OUT/$target.log)")
        continue
    fi
    grep -E '(INITED|DONE) cov:|^Done |^stat::peak_rss_mb' "$OUT/$target.log"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "run.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "run.sh: all fuzz targets passed"
