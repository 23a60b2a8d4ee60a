#!/usr/bin/env bash
# Many small files: the first backup of a tree of 400k files of 100 B to
# 30 KB (scripts/lib/make-small-files.py) with the page cache dropped first
# (cold) and with it warm, then an unchanged re-backup. Times cairn against
# restic, or against a second cairn binary, in turn, ROUNDS times each, and
# prints each figure's median with the ratio of the medians. Cold runs come
# with the disk's own bound: every file read by 32 `cat`s at once.
#
#   bench-small-files.sh CAIRN_BINARY [restic | OTHER_CAIRN_BINARY] [ROUNDS]
#
# The tree is made once in $SMALL_FILES_DIR (default /var/tmp/cairn-small-files,
# on disk: a cold run must read from the disk). Repositories go to tmpfs when
# there is one, so only the reading side is measured. Cold runs need root (to
# drop the page cache); without it they are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1")
other=${2:-restic}
rounds=${3:-3}
data=${SMALL_FILES_DIR:-/var/tmp/cairn-small-files}
if [ ! -d "$data" ]; then
  echo "== making $data (400k files, about a minute)" >&2
  python3 scripts/lib/make-small-files.py "$data.tmp" 400000
  mv "$data.tmp" "$data"
fi
case "$other" in
  restic) command -v restic >/dev/null || { echo "needs restic" >&2; exit 1; }; other_name=restic ;;
  *) other=$(realpath "$other"); other_name="cairn ($other)" ;;
esac
scratch=/tmp
if [ -d /dev/shm ] && [ -w /dev/shm ]; then scratch=/dev/shm; fi
work=$(mktemp -d "$scratch/cairn-bench-small.XXXXXX")
trap 'rm -rf "$work"' EXIT
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
can_drop=false
if [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/drop_caches ]; then can_drop=true; fi

# run TOOL NAME ARGS...: one backup; prints "seconds peak_kib"
run() {
  local tool=$1; shift
  local repo="$work/repo-$tool" cache="$work/cache-$tool"
  local stats="$work/time"
  case "$tool" in
    a) /usr/bin/time -f "%e %M" -o "$stats" "$bin" -r "$repo" --cache-dir "$cache" backup -q "$@" "$data" >/dev/null ;;
    b) if [ "$other" = restic ]; then
         /usr/bin/time -f "%e %M" -o "$stats" restic -q -r "$repo" --cache-dir "$cache" backup "$@" "$data" >/dev/null
       else
         /usr/bin/time -f "%e %M" -o "$stats" "$other" -r "$repo" --cache-dir "$cache" backup -q "$@" "$data" >/dev/null
       fi ;;
  esac
  tail -1 "$stats"
}
fresh() {
  local tool=$1
  rm -rf "$work/repo-$tool" "$work/cache-$tool"
  if [ "$tool" = b ] && [ "$other" = restic ]; then
    restic -q -r "$work/repo-b" init >/dev/null
  else
    local b=$bin; [ "$tool" = b ] && b=$other
    "$b" -r "$work/repo-$tool" init -q >/dev/null
  fi
}
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# The disk's own bound on a cold first backup: every file read with the
# page cache dropped by 32 `cat`s at once (more readers gained nothing here:
# 64 took as long).
read_all_cold() {
  drop
  /usr/bin/time -f "%e" -o "$work/time" sh -c \
    'find "$1" -type f -print0 | xargs -0 -n 100 -P 32 cat >/dev/null' sh "$data"
  tail -1 "$work/time"
}

declare -A secs peak
for r in $(seq 1 "$rounds"); do
  if $can_drop; then secs[cats]+="$(read_all_cold) "; fi
  for tool in a b; do
    if $can_drop; then
      fresh $tool; drop
      read -r s m < <(run $tool); secs[cold-$tool]+="$s "; peak[cold-$tool]+="$m "
    fi
    fresh $tool
    find "$data" -type f -print0 | xargs -0 cat >/dev/null # warm the page cache
    read -r s m < <(run $tool); secs[warm-$tool]+="$s "; peak[warm-$tool]+="$m "
    read -r s m < <(run $tool); secs[same-$tool]+="$s "; peak[same-$tool]+="$m "
  done
  echo "round $r done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "| $(basename "$data"), $rounds rounds, medians | cairn | $other_name | ratio | cairn peak RSS | other peak RSS |"
echo "|---|---|---|---|---|---|"
for phase in cold warm same; do
  [ -n "${secs[$phase-a]:-}" ] || continue
  a=$(echo "${secs[$phase-a]}" | median); b=$(echo "${secs[$phase-b]}" | median)
  pa=$(echo "${peak[$phase-a]}" | median); pb=$(echo "${peak[$phase-b]}" | median)
  case $phase in
    cold) what="first backup, page cache dropped" ;;
    warm) what="first backup, page cache warm" ;;
    same) what="unchanged re-backup" ;;
  esac
  echo "| $what | $a s | $b s | $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }') | $((pa / 1024)) MiB | $((pb / 1024)) MiB |"
  echo "  $phase all runs: cairn ${secs[$phase-a]}/ other ${secs[$phase-b]}" >&2
done
if [ -n "${secs[cats]:-}" ]; then
  echo "| every file read, page cache dropped, 32 cats at once (the disk's bound) | $(echo "${secs[cats]}" | median) s | | | | |"
  echo "  cats all runs: ${secs[cats]}" >&2
fi
