#!/usr/bin/env bash
# Checks `cairn serve` against its own OpenAPI document with schemathesis:
# every operation, valid and invalid inputs, stateful call chains; no 5xx,
# only documented status codes, content types and response shapes.
#
#   api-check.sh CAIRN_BINARY [schemathesis args...]
#
# Runs against a throw-away repository (schemathesis really backs up,
# restores, forgets and prunes) with one snapshot in it, on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1"); shift

work=$(mktemp -d /tmp/cairn-api-check.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$token" >"$work/token"
printf 'api-check password\n' >"$work/password"
mkdir -p "$work/data/sub" "$work/restore"
printf 'hello\n' >"$work/data/a.txt"
head -c 300000 /dev/urandom >"$work/data/sub/b.bin"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/cairn.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
token_file = "$work/token"
state_dir = "$work/state"
restore_roots = ["$work/restore"]

[repositories.main]
url = "$work/repo"
password_file = "$work/password"
cache_dir = "$work/cache"

[sources.files]
repository = "main"
paths = ["$work/data"]

[[sources.files.commands]]
name = "listing.txt"
command = ["ls", "-l", "$work/data"]
TOML

CAIRN_PASSWORD_FILE=$work/password "$bin" -r "$work/repo" init -q
CAIRN_PASSWORD_FILE=$work/password CAIRN_CACHE_DIR=$work/cache \
  "$bin" backup -q --config "$work/cairn.toml" --source files
"$bin" serve --config "$work/cairn.toml" 2>"$work/serve.log" &
pid=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
status=0
bash scripts/schemathesis.sh run "http://127.0.0.1:$port" "$token" "$@" || status=$?
if ! kill -0 "$pid" 2>/dev/null; then
  echo "api-check: cairn serve died during the run" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "api-check: failed; the server's log:" >&2
  tail -40 "$work/serve.log" >&2
fi
exit "$status"
