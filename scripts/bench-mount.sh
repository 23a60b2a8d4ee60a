#!/usr/bin/env bash
# Reading one large file through `cairn mount` against `cairn dump` of it:
# a 1 GiB file (random, so nothing deduplicates or compresses) in a
# repository on tmpfs; before each timed run the page cache is dropped, so
# the mount's kernel cache does not serve a repeat read. Needs root (the
# page cache, and the mount) and FUSE.
#
#   scripts/bench-mount.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/build-env.sh
cargo build --profile "$CAIRN_PROFILE" --bin cairn
cairn="$CARGO_TARGET_DIR/$CAIRN_PROFILE/cairn"
runs=${1:-5}
work=${BENCH_WORK:-/dev/shm/bench-mount}
rm -rf "$work" && mkdir -p "$work/data" "$work/mnt"
export CAIRN_REPOSITORY="$work/repo" CAIRN_PASSWORD=bench CAIRN_CACHE_DIR="$work/cache"
head -c 1G /dev/urandom >"$work/data/big.bin"
"$cairn" -q init
"$cairn" -q backup "$work/data"
rm -f "$work/data/big.bin"
"$cairn" mount "$work/mnt" 2>/dev/null &
mounted=$!
trap 'kill $mounted 2>/dev/null || true; wait $mounted 2>/dev/null || true; rm -rf "$work"' EXIT
until [ -e "$work/mnt/snapshots/latest" ]; do sleep 0.1; done
file="$work/mnt/snapshots/latest$work/data/big.bin"
echo "== 1 GiB: cat through the mount (A) against cairn dump (B), page cache dropped first"
farm-bench -n "$runs" --timeout 600 \
  --vs "sh -c 'echo 1 >/proc/sys/vm/drop_caches; exec $cairn dump latest $work/data/big.bin >/dev/null'" \
  -- sh -c "echo 1 >/proc/sys/vm/drop_caches; exec cat $file >/dev/null"
