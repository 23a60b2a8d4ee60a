# Sourced by the scripts: installs the system packages the build needs (on a
# fresh Debian machine) and sets up one shared, persistent target directory.

need_pkgs=()
# bindgen (librocksdb-sys) needs libclang and its headers
[ -e /usr/lib/llvm-14/lib/libclang.so.1 ] || need_pkgs+=(libclang1-14)
compgen -G "/usr/lib/llvm-14/lib/clang/*/include/stdbool.h" >/dev/null || need_pkgs+=(libclang-common-14-dev)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
command -v pkg-config >/dev/null || need_pkgs+=(pkg-config)
[ -e /usr/include/openssl/ssl.h ] || need_pkgs+=(libssl-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "== installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# One target dir outside the clone, reused across runs and clones; one
# optimised profile (`ci`) for tests and the binary, so RocksDB's C++ is
# compiled once.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/cairn-target}
export CARGO_INCREMENTAL=0
export CARGO_TERM_COLOR=never
CAIRN_PROFILE=${CAIRN_PROFILE:-ci}
