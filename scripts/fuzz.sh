#!/usr/bin/env bash
# Runs the fuzz targets for real: each target for RUNS executions (default
# 10 million), starting from the checked-in seeds in fuzz/corpus/TARGET and
# growing a working corpus in WORK/TARGET. Prints each target's executions,
# coverage and speed from libFuzzer's last status line. With --merge, the
# inputs that add coverage are merged back into fuzz/corpus/TARGET (the
# corpus CI replays). Usage: scripts/fuzz.sh [--merge] [RUNS] [TARGET...]
#   WORK defaults to /tmp/cairn-fuzz; CAIRN_FUZZ_JOBS targets run at once (1).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/build-env.sh
merge=0
if [[ ${1:-} == --merge ]]; then merge=1; shift; fi
runs=${1:-10000000}
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz list)
fi
work=${WORK:-/tmp/cairn-fuzz}
fuzz_target_dir=$CARGO_TARGET_DIR/fuzz
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -O --target-dir "$fuzz_target_dir")
bin_dir=$fuzz_target_dir/x86_64-unknown-linux-gnu/release

run_one() {
  local t=$1
  mkdir -p "$work/$t" fuzz/corpus/"$t"
  # -rss_limit_mb: a decoder that allocates what its input claims fails here
  "$bin_dir/$t" -runs="$runs" -rss_limit_mb=1024 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$work/$t-" "$work/$t" fuzz/corpus/"$t" >"$work/$t.log" 2>&1 ||
    { echo "$t: FAILED (crash input and trace: $work/$t.log, $work/$t-*)"; failed=1; }
  local status
  status=$(grep -E '^#[0-9]+' "$work/$t.log" | tail -1)
  echo "$t: $status"
  [[ ${failed:-0} -eq 0 ]] || return 1
  if [[ $merge -eq 1 ]]; then
    "$bin_dir/$t" -merge=1 fuzz/corpus/"$t" "$work/$t" >"$work/$t.merge.log" 2>&1
    echo "$t: corpus now $(ls fuzz/corpus/"$t" | wc -l) inputs"
  fi
}

jobs=${CAIRN_FUZZ_JOBS:-1}
failed=0
for t in "${targets[@]}"; do
  while [[ $(jobs -rp | wc -l) -ge $jobs ]]; do wait -n || failed=1; done
  run_one "$t" &
done
while [[ $(jobs -rp | wc -l) -gt 0 ]]; do wait -n || failed=1; done
exit $failed
