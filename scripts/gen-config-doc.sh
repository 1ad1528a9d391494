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

**Which file.** `--config FILE`; without it `wsproxy.ini` in the working directory, else
`/etc/wsproxy/wsproxy.ini`, else the built-in defaults. `wsctl` finds its file by the same rule (it is
the same code), so both read the same file from the same directory. `--config` naming a directory is an
error.

**Relative paths** in the file (`[store] path`, `[server] static_dir`, `[tls] cert`/`key`,
`[auth] jwt_public_key`) are relative to the **working directory**, not to the file's directory, as
for the flags (the systemd unit sets `WorkingDirectory=/var/lib/wsproxy`). The server creates the
directory of `[store] path` (with its parents) if it is missing.

**Errors.** Every problem is listed in one round, one line each, as
`config FILE[:LINE]: [section] key: message`, and the exit status is 2, both at start and under
`--check`: an unknown key, a bad value, a key set twice (both lines named), a syntax error (an indented
continuation line included: a value is on one line), a line over 197 bytes (libinih's limit), and what a
start would only find later: an empty `jwt_secret` with HS256 or one shorter than 32 bytes, a missing
or unreadable `jwt_public_key`, `[tls] cert` or `key`, bad `trusted_proxies`; then (once the list is
empty) the key and certificate files are loaded as a start loads them. A `static_dir` that is not a
directory is a warning only (`/` answers 404).

**Effective values.** `wsproxy --print-config --config FILE` (and any flags) prints every key with the
value a start would use, sizes and durations normalized (`1048576` prints `1MiB`), `jwt_secret` and
`[api] keys` as `***`; exit 2 with the errors if the file has any. Without `--config` or flags it
prints the reference below.

```ini
HDR
"$bin" --print-config
echo '```'
