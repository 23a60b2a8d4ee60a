#!/usr/bin/env bash
# Full local restore of one tree, cairn against restic (or a second cairn
# binary), each restore onto a NEW ext4 file system made for it on a loop
# device. Prints each tool's median wall time and peak RSS and the ratio of
# the medians.
#
#   bench-local-restore.sh CAIRN_BINARY [restic | OTHER_CAIRN_BINARY] [ROUNDS] [TREE]
#
# Why a new file system each time: ext4 makes every inode it allocates shortly
# after a large delete look up the inode table blocks of the recently deleted
# ones (recently_deleted() in the kernel's ialloc.c). On this machine that
# turns a 7 s restore into 20-50 s of system time after `rm -rf` of the
# previous restore, and even `cp -a` of the same tree goes from 9 s to 50-70 s,
# so restores onto a reused disk measure the previous run's deletions rather
# than the tool. Needs root (mkfs, mount); the repositories are made once,
# backed up from TREE (default /usr/share), and live on /var/tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1")
other=${2:-restic}
rounds=${3:-3}
tree=$(realpath "${4:-/usr/share}")
[ "$(id -u)" = 0 ] || { echo "needs root: it makes and mounts a file system per restore" >&2; exit 1; }
[ -d "$tree" ] || { echo "no directory at $tree: give the tree to restore" >&2; exit 1; }
case "$other" in
  restic) command -v restic >/dev/null || { echo "needs restic" >&2; exit 1; }; other_name=restic ;;
  *) other=$(realpath "$other"); other_name="cairn ($other)" ;;
esac
work=$(mktemp -d /var/tmp/cairn-bench-restore.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() {
  mountpoint -q "$mnt" && umount "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
tree_bytes=$(du -sb "$tree" | cut -f1)
image_bytes=$((tree_bytes * 2 + (1 << 30)))

# with TOOL: sets `run` to tool a (cairn) or b (the other) on its own
# repository and cache; restic and cairn take the same options here
with() {
  local exe=$bin; [ "$1" = b ] && exe=$other
  run=("$exe" -r "$work/repo-$1" --cache-dir "$work/cache-$1")
}

for tool in a b; do
  echo "== backing up $tree for tool $tool" >&2
  with $tool
  "${run[@]}" init -q >/dev/null
  "${run[@]}" backup -q "$tree" >/dev/null
done

# restore TOOL: one full restore onto a new file system; prints "seconds peak_kib"
restore() {
  local tool=$1 stats=$work/time
  truncate -s "$image_bytes" "$work/fs.img"
  mkfs.ext4 -q -F "$work/fs.img"
  mount -o loop "$work/fs.img" "$mnt"
  sync
  with "$tool"
  /usr/bin/time -f "%e %M" -o "$stats" "${run[@]}" restore -q latest --target "$mnt" >/dev/null
  # the first round checks what was restored; later rounds only time
  if [ "$round" = 1 ] && ! diff -r --no-dereference "$tree" "$mnt$tree" >/dev/null; then
    echo "tool $tool restored a tree that differs from $tree" >&2
    exit 1
  fi
  umount "$mnt"
  rm -f "$work/fs.img"
  tail -1 "$stats"
}

declare -A secs peak
for round in $(seq 1 "$rounds"); do
  for tool in a b; do
    read -r s m < <(restore $tool)
    secs[$tool]+="$s "; peak[$tool]+="$m "
  done
  echo "round $round done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
a=$(echo "${secs[a]}" | median); b=$(echo "${secs[b]}" | median)
pa=$(echo "${peak[a]}" | median); pb=$(echo "${peak[b]}" | median)
echo "| full restore of $(basename "$tree"), new ext4 each time, $rounds rounds, medians | cairn | $other_name | ratio | cairn peak RSS | other peak RSS |"
echo "|---|---|---|---|---|---|"
echo "| wall | $a s | $b s | $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }') | $((pa / 1024)) MiB | $((pb / 1024)) MiB |"
echo "  all runs: cairn ${secs[a]}/ other ${secs[b]}" >&2
