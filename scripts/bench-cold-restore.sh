#!/usr/bin/env bash
# A new machine recovering from a distant object store: the repository on
# the test S3 server behind a proxy that adds ONE_WAY_MS of latency each way
# (scripts/lib/latency-proxy.py), no local cache. Times cairn against restic
# in one run: the first backup, a full restore, `ls latest` (every entry)
# and `find`; then, once EXTRA_SNAPSHOTS small backups more are in both
# repositories (a host backing up often), `ls latest` and `find` again:
# those wait on reading every snapshot and index file.
#
#   bench-cold-restore.sh CAIRN_BINARY [DATA_DIR] [ONE_WAY_MS] [EXTRA_SNAPSHOTS]
#
# DATA_DIR defaults to the bench `tree`'s usr-share (43k files, 3.2k
# directories); ONE_WAY_MS to 20; EXTRA_SNAPSHOTS to 40 (0: none).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1")
data=${2:-/tmp/bench/data/tree/usr-share}
delay=${3:-20}
extra=${4:-40}
command -v restic >/dev/null || { echo "needs restic" >&2; exit 1; }
work=$(mktemp -d /tmp/cairn-bench-cold.XXXXXX)
proxy=
cleanup() {
  [ -n "$proxy" ] && kill "$proxy" 2>/dev/null
  bash scripts/object-store.sh stop "$work/store" >/dev/null 2>&1 || true
  rm -rf "$work"
  case "${out:-}" in /dev/shm/*) rm -rf "$out" ;; esac
}
trap cleanup EXIT
eval "$(bash scripts/object-store.sh start "$work/store" 2>/dev/null)"
direct=$AWS_ENDPOINT_URL
store_port=${direct##*:}
store_port=${store_port%%/*}
python3 scripts/lib/latency-proxy.py "$store_port" "$delay" >"$work/proxy.port" &
proxy=$!
while [ ! -s "$work/proxy.port" ]; do sleep 0.1; done
far="http://127.0.0.1:$(cat "$work/proxy.port")"
bucket=$CAIRN_TEST_S3_BUCKET
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
time_of() { local t0; t0=$(now); "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; return 1; }; secs "$t0" "$(now)"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

cairn_repo="s3://$bucket/cold-cairn"
restic_repo="s3:$direct/$bucket/cold-restic"
restic_far="s3:$far/$bucket/cold-restic"
AWS_ENDPOINT_URL=$direct "$bin" -r "$cairn_repo" init -q >/dev/null
restic -q -r "$restic_repo" init >/dev/null

# each run on a new, empty cache, through the proxy
cairn_cold() { local c="$work/cache-$RANDOM$RANDOM"; AWS_ENDPOINT_URL=$far "$bin" -r "$cairn_repo" --cache-dir "$c" "$@"; }
restic_cold() { local c="$work/rcache-$RANDOM$RANDOM"; restic -q -r "$restic_far" --cache-dir "$c" "$@"; }

echo "| ${delay} ms one-way, cold cache | cairn | restic | ratio |"
echo "|---|---|---|---|"
echo "== first backups of $data (page cache warm), through the proxy" >&2
find "$data" -type f -print0 | xargs -0 cat >/dev/null
c=$(time_of cairn_cold backup -q "$data")
r=$(time_of restic_cold backup "$data")
echo "| first backup | $c s | $r s | $(ratio "$c" "$r") |"
# restores land on tmpfs when there is one: this machine's disk writeback
# varies more than the network part being measured
out=$work
if [ -d /dev/shm ] && [ -w /dev/shm ]; then out=$(mktemp -d /dev/shm/cairn-bench-cold.XXXXXX); fi
c=$(time_of cairn_cold restore latest --target "$out/r-cairn")
r=$(time_of restic_cold restore latest --target "$out/r-restic")
echo "| full restore | $c s | $r s | $(ratio "$c" "$r") |"
c=$(time_of cairn_cold ls latest)
r=$(time_of restic_cold ls latest)
echo "| ls latest (every entry) | $c s | $r s | $(ratio "$c" "$r") |"
c=$(time_of cairn_cold find '*.txt')
r=$(time_of restic_cold find '*.txt')
echo "| find '*.txt' | $c s | $r s | $(ratio "$c" "$r") |"
if [ "$extra" -gt 0 ]; then
  echo "== $extra small backups more in each repository (straight to the store)" >&2
  mkdir -p "$work/often"
  for i in $(seq "$extra"); do
    echo "$i" >"$work/often/counter"
    AWS_ENDPOINT_URL=$direct "$bin" -r "$cairn_repo" --cache-dir "$work/cache-direct" backup -q "$work/often" >/dev/null
    restic -q -r "$restic_repo" --cache-dir "$work/rcache-direct" backup "$work/often" >/dev/null
  done
  c=$(time_of cairn_cold ls latest --path "$data")
  r=$(time_of restic_cold ls latest --path "$data")
  echo "| ls latest, $((extra + 1)) snapshots | $c s | $r s | $(ratio "$c" "$r") |"
  c=$(time_of cairn_cold find '*.txt')
  r=$(time_of restic_cold find '*.txt')
  echo "| find '*.txt', $((extra + 1)) snapshots | $c s | $r s | $(ratio "$c" "$r") |"
fi
if diff -r --no-dereference "$data" "$out/r-cairn$data" >/dev/null; then
  echo "(cairn's restore equals the data)"
else
  echo "cairn's restore differs from the data" >&2; exit 1
fi
