#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what the build
# needs, builds the `ci` profile once, runs every test (unit, format vectors,
# decoder torture, end-to-end against the real binary), builds the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/build-env.sh

# restic is the reference the forget tests compare policies with
if ! command -v restic >/dev/null; then
  echo "== installing restic (reference for the forget tests)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic >/dev/null; }
fi

echo "== cargo test (profile $CAIRN_PROFILE)"
cargo test --profile "$CAIRN_PROFILE" --all-targets

echo "== fuzz targets build"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes sanitizer flags that stable rustc accepts only with RUSTC_BOOTSTRAP
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -O --target-dir "$CARGO_TARGET_DIR/fuzz")
echo "== all tests passed"
