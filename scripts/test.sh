#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what the build
# needs, builds one optimised profile (`ci`) once, runs every test against the
# real binary, and builds the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
# bindgen (librocksdb-sys) needs libclang and its headers
[ -e /usr/lib/llvm-14/lib/libclang.so.1 ] || need_pkgs+=(libclang1-14)
[ -d /usr/lib/llvm-14/lib/clang ] || need_pkgs+=(libclang-common-14-dev)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
command -v pkg-config >/dev/null || need_pkgs+=(pkg-config)
[ -e /usr/include/openssl/ssl.h ] || need_pkgs+=(libssl-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "== installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# One target dir outside the clone, reused across runs on the same machine.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/cairn-target}
export CARGO_INCREMENTAL=0
export CARGO_TERM_COLOR=never

echo "== cargo test (profile ci)"
cargo test --profile ci --all-targets

echo "== fuzz targets build"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -O --target-dir "$CARGO_TARGET_DIR/fuzz")
echo "== all tests passed"
