#!/usr/bin/env bash
# What `cairn serve` answers in-process, timed: a repository with N
# snapshots (default 200), then M requests each of the snapshot listing and
# of one directory listing after a first request that opens the repository;
# prints the median and 90th percentile in milliseconds, and serve's RSS
# with the repository open. Issue targets: median <= 20 ms for both, RSS
# <= 40 MB.
#
#   scripts/bench-serve.sh [N] [M]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/build-env.sh
cargo build --profile "$CAIRN_PROFILE" --bin cairn
cairn="$CARGO_TARGET_DIR/$CAIRN_PROFILE/cairn"
n=${1:-200}
m=${2:-50}
work=$(mktemp -d)
trap 'kill $serve 2>/dev/null || true; rm -rf "$work"' EXIT
export CAIRN_REPOSITORY="$work/repo" CAIRN_PASSWORD_FILE="$work/password" CAIRN_CACHE_DIR="$work/cache"
echo "bench-password" > "$CAIRN_PASSWORD_FILE"
"$cairn" -q init
mkdir -p "$work/data/dir"
for i in $(seq 1 40); do head -c 3000 /dev/urandom > "$work/data/dir/f$i"; done
echo "== $n snapshots"
for i in $(seq 1 "$n"); do
  echo "$i" > "$work/data/counter"
  "$cairn" -q backup "$work/data" >/dev/null
done
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$token" > "$work/token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/cairn.toml" <<TOML
[server]
token_file = "$work/token"
state_dir = "$work/state"
listen = "127.0.0.1:$port"
[repositories.main]
url = "$work/repo"
password_file = "$work/password"
cache_dir = "$work/cache"
TOML
"$cairn" serve --config "$work/cairn.toml" 2>"$work/serve.log" &
serve=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
time_requests() {
  local url=$1
  curl -sf -H "Authorization: Bearer $token" "$url" >/dev/null # opens the repository
  for _ in $(seq "$m"); do
    curl -sf -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $token" "$url"
  done | sort -n | awk '{a[NR]=$1*1000} END {printf "median %.1f ms, p90 %.1f ms (%d requests)\n", a[int((NR+1)/2)], a[int(NR*0.9)], NR}'
}
echo "GET /repositories/main/snapshots ($n snapshots): $(time_requests "http://127.0.0.1:$port/repositories/main/snapshots")"
echo "GET …/snapshots/latest/ls?path=$work/data/dir (40 entries): $(time_requests "http://127.0.0.1:$port/repositories/main/snapshots/latest/ls?path=$work/data/dir")"
echo "serve RSS with the repository and its index open: $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$serve/status)"
