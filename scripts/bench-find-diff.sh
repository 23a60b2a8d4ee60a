#!/usr/bin/env bash
# `find` over many snapshots and `diff` of two, cairn beside restic on the
# same data: N snapshots (default 100) alternating between the bench's
# `tree` and `tree-mutated`, both bind-mounted at one path so every
# snapshot has the same paths. Then farm-bench times
#   cairn find NAME  vs  restic find NAME      (every snapshot)
#   cairn diff 1 2   vs  restic diff 1 2       (tree vs tree-mutated)
# Needs root (bind mounts) and the datasets of the comparison harness
# (BENCH_DATA, default /tmp/bench/data).
#
#   scripts/bench-find-diff.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/build-env.sh
cargo build --profile "$CAIRN_PROFILE" --bin cairn
cairn="$CARGO_TARGET_DIR/$CAIRN_PROFILE/cairn"
n=${1:-100}
data=${BENCH_DATA:-/tmp/bench/data}
work=${BENCH_WORK:-/tmp/bench-find-diff}
stage="$work/stage"
rm -rf "$work" && mkdir -p "$stage"
trap 'umount "$stage" 2>/dev/null || true' EXIT
export CAIRN_REPOSITORY="$work/cairn" CAIRN_PASSWORD=bench CAIRN_CACHE_DIR="$work/cairn-cache"
export RESTIC_REPOSITORY="$work/restic" RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache"
"$cairn" -q init
restic -q init
for i in $(seq 1 "$n"); do
  if [ $((i % 2)) = 1 ]; then src="$data/tree"; else src="$data/tree-mutated"; fi
  mount --bind "$src" "$stage"
  "$cairn" -q backup "$stage" >/dev/null
  restic -q backup "$stage" >/dev/null
  umount "$stage"
  [ $((i % 10)) = 0 ] && echo "$i snapshots"
done
name=$(basename "$(sed -n 's/^selection: DEEP_FILE=\([^ ]*\).*/\1/p' "$data/MANIFEST.txt")")
c1=$("$cairn" snapshots --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s[0]["id"], s[1]["id"])')
r1=$(restic snapshots --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s[0]["id"], s[1]["id"])')
echo "== find $name over $n snapshots (A: cairn, B: restic)"
farm-bench -n 3 --timeout 1800 --vs "restic find $name" -- "$cairn" find "$name"
echo "== diff of snapshots 1 and 2 (tree vs tree-mutated) (A: cairn, B: restic)"
farm-bench -n 5 --timeout 900 --vs "restic diff $r1" -- "$cairn" diff $c1
