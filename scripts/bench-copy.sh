#!/usr/bin/env bash
# `copy` from a local repository to S3 against `backup` of the same data to
# S3: the bench's `tree` is backed up once into a local repository, then
# each timed run makes a fresh S3 prefix on the test server of
# scripts/object-store.sh and either copies that snapshot into it (A) or
# backs the tree up into it (B). The tree stays in the page cache, so both
# measure cairn rather than the disk. Needs the datasets of the comparison
# harness (BENCH_DATA, default /tmp/bench/data).
#
#   scripts/bench-copy.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/build-env.sh
cargo build --profile "$CAIRN_PROFILE" --bin cairn
cairn="$CARGO_TARGET_DIR/$CAIRN_PROFILE/cairn"
runs=${1:-3}
data=${BENCH_DATA:-/tmp/bench/data}
work=${BENCH_WORK:-/tmp/bench-copy}
rm -rf "$work" && mkdir -p "$work/store"
trap 'bash scripts/object-store.sh stop "$work/store" >/dev/null 2>&1 || true' EXIT
eval "$(bash scripts/object-store.sh start "$work/store")"
export CAIRN_PASSWORD=bench CAIRN_FROM_PASSWORD=bench CAIRN_CACHE_DIR="$work/cache"
"$cairn" -q -r "$work/source" init
"$cairn" -q -r "$work/source" backup "$data/tree"
cat >"$work/copy.sh" <<SH
set -e
url=s3://$CAIRN_TEST_S3_BUCKET/copy-\$\$-\$RANDOM
"$cairn" -q -r "\$url" init --from-repo "$work/source" --copy-chunker-params
"$cairn" -q -r "\$url" copy --from-repo "$work/source"
SH
cat >"$work/backup.sh" <<SH
set -e
url=s3://$CAIRN_TEST_S3_BUCKET/backup-\$\$-\$RANDOM
"$cairn" -q -r "\$url" init
"$cairn" -q -r "\$url" backup "$data/tree"
SH
echo "== copy local → S3 (A) against backup of the same tree to S3 (B)"
farm-bench -n "$runs" --timeout 3000 --vs "bash $work/backup.sh" -- bash "$work/copy.sh"
