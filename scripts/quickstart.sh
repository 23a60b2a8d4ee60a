#!/usr/bin/env bash
# cairn's main job on an embedded default: builds cairn, creates a local-disk
# repository, backs up a directory twice (the second run is incremental),
# lists the snapshots and restores the tree, then checks it byte for byte.
#
#   scripts/quickstart.sh [DIR]     (default DIR: /usr/share/doc)
#
# The repository, its password file and the restore land under
# ${CAIRN_QUICKSTART:-$HOME/cairn-quickstart}.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/build-env.sh

src=$(realpath "${1:-/usr/share/doc}")
work=${CAIRN_QUICKSTART:-$HOME/cairn-quickstart}
echo "== building cairn (first time on a new machine: ~20 minutes, mostly RocksDB's C++)"
cargo build --profile "$CAIRN_PROFILE" --bin cairn
cairn="$CARGO_TARGET_DIR/$CAIRN_PROFILE/cairn"

mkdir -p "$work"
export CAIRN_REPOSITORY="$work/repo"
export CAIRN_PASSWORD_FILE="$work/password"
[ -f "$CAIRN_PASSWORD_FILE" ] || head -c 24 /dev/urandom | base64 > "$CAIRN_PASSWORD_FILE"
[ -e "$CAIRN_REPOSITORY/config" ] || "$cairn" init

echo "== backup of $src"
time "$cairn" backup "$src"
echo "== the same again (incremental: unchanged files are not read)"
time "$cairn" backup "$src"
"$cairn" snapshots
echo "== restore into $work/restore"
rm -rf "$work/restore"
"$cairn" restore latest --path "$src" --target "$work/restore"
diff -r --no-dereference "$src" "$work/restore$src" && echo "restored tree is identical to $src"
du -sh "$CAIRN_REPOSITORY" "$src"
