#!/bin/sh
# Writes docs/config.md from the binary's settings table, so the reference cannot drift from the code.
set -eu
bin=${1:-build/wsproxy}
cat <<'HDR'
# Configuration reference

Generated from the settings table in `proxy/base/config.c` by `wsproxy --print-config` (a test checks this
file matches it). Values: durations take `ms`, `s`, `m`, `h`, `d` (a bare number is seconds); sizes take
`B`, `KiB`, `MiB`, `GiB` (a bare number is bytes); lists are comma separated; booleans are true/false.
Command-line flags override the file: `--listen`, `--db`, `--api-listen`, `--log-level`.
An unknown key or a bad value stops the start with a message naming `[section] key`.

```ini
HDR
"$bin" --print-config
echo '```'
