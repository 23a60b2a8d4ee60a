#!/usr/bin/env bash
# Peak memory of a backup as the repository grows: the same first backup of
# DATA into repositories that already hold 0, N/10 and N tiny blobs (default
# N = 5 million), each with a warm cache. Issue 3's target: the run into the
# N-blob repository stays within +20% of the N/10 one.
#
#   scripts/bench-index-growth.sh [DATA] [N]
#
# DATA defaults to the bench's tree dataset (/tmp/bench/data/tree), else
# /usr/share. Work files go to ${CAIRN_BENCH_DIR:-/tmp/cairn-index-growth}
# (about 0.6 GB per million blobs); RUNS (default 2) backups per repository.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/build-env.sh

data=${1:-/tmp/bench/data/tree}
[ -d "$data" ] || data=/usr/share
big=${2:-5000000}
runs=${RUNS:-2}
work=${CAIRN_BENCH_DIR:-/tmp/cairn-index-growth}
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null

cargo build --profile "$CAIRN_PROFILE" --bin cairn --example synthetic_repo
cairn="$CARGO_TARGET_DIR/$CAIRN_PROFILE/cairn"
synth="$CARGO_TARGET_DIR/$CAIRN_PROFILE/examples/synthetic_repo"
export CAIRN_PASSWORD=index-growth-bench

# make_repo NAME BLOBS: a repository and its warm cache, kept between runs
make_repo() {
  local dir="$work/$1-$2"
  if [ ! -e "$dir/done" ]; then
    rm -rf "$dir"; mkdir -p "$dir"
    "$cairn" -r "$dir/repo" init >/dev/null
    if [ "$2" -gt 0 ]; then
      echo "== filling $dir with $2 blobs" >&2
      CAIRN_CACHE_DIR="$dir/cache" /usr/bin/time -f "   %e s, %M KB peak" "$synth" "$dir/repo" "$2" >&2
    fi
    touch "$dir/done"
  fi
  echo "$dir"
}

# backup_into DIR: one first backup of $data into a copy of DIR's repository
backup_into() {
  local dir=$1 run="$work/run"
  rm -rf "$run"; cp -a "$dir" "$run"
  CAIRN_CACHE_DIR="$run/cache" /usr/bin/time -f "%e %U %S %M" -o "$work/time" \
    "$cairn" -r "$run/repo" backup --host bench "$data" >/dev/null
  read -r wall user sys rss < "$work/time"
  echo "$wall $(awk -v u="$user" -v s="$sys" 'BEGIN{printf "%.2f", u+s}') $rss"
}

mkdir -p "$work"
printf '%-12s %8s %8s %10s\n' "blobs" "wall_s" "cpu_s" "peak_kb"
for blobs in 0 $((big / 10)) "$big"; do
  dir=$(make_repo repo "$blobs")
  for _ in $(seq "$runs"); do
    read -r wall cpu rss < <(backup_into "$dir")
    printf '%-12s %8s %8s %10s\n' "$blobs" "$wall" "$cpu" "$rss"
    echo "$blobs $rss" >> "$work/rss.txt.$$"
  done
done
awk -v small=$((big / 10)) -v big="$big" '
  $1 == small && (s == "" || $2 < s) { s = $2 }
  $1 == big && (b == "" || $2 > b) { b = $2 }
  END { printf "peak RSS, %d vs %d blobs (worst vs best run): %+.1f%%\n", big, small, 100 * (b / s - 1) }
' "$work/rss.txt.$$"
rm -f "$work/rss.txt.$$" "$work/time"; rm -rf "$work/run"
