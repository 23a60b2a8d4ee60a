#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what the build
# needs, builds the `ci` profile once, runs every test (unit, format vectors,
# decoder torture, end-to-end against the real binary), builds the fuzz targets
# and replays their corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/build-env.sh

# restic is the reference the forget tests compare policies with
if ! command -v restic >/dev/null; then
  echo "== installing restic (reference for the forget tests)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic >/dev/null; }
fi

# faketime runs prune with a skewed clock in the garbage-collection races
if ! command -v faketime >/dev/null; then
  echo "== installing faketime (clock skew in the GC race tests)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null; }
fi
export CAIRN_TEST_REQUIRE_FAKETIME=1
# `cairn mount` is tested against the kernel's FUSE wherever /dev/fuse exists
# (as root it mounts directly; others need fuse3's fusermount3).
if [ -e /dev/fuse ]; then export CAIRN_TEST_REQUIRE_FUSE=1; fi

# Real servers on loopback, stopped on exit whatever happens: S3 + Swift for
# the object-storage tests, PostgreSQL (a throw-away cluster on a unix
# socket) for the database tests, MariaDB and Redis (and the sqlite3 shell)
# for the other data-service sources.
store_dir=$(mktemp -d /tmp/cairn-object-store.XXXXXX)
pg_dir=$(mktemp -d /tmp/cairn-postgres.XXXXXX)
services_dir=$(mktemp -d /tmp/cairn-services.XXXXXX)
stop_servers() {
  bash scripts/object-store.sh stop "$store_dir" >/dev/null 2>&1 || true
  bash scripts/postgres.sh stop "$pg_dir" >/dev/null 2>&1 || true
  bash scripts/services.sh stop "$services_dir" >/dev/null 2>&1 || true
  rm -rf "$store_dir" "$pg_dir" "$services_dir"
}
trap stop_servers EXIT
echo "== object store (scripts/object-store.sh)"
eval "$(bash scripts/object-store.sh start "$store_dir")"
export CAIRN_TEST_OBJECT_STORE_DIR=$store_dir CAIRN_TEST_REQUIRE_OBJECT_STORE=1
echo "== PostgreSQL (scripts/postgres.sh)"
eval "$(bash scripts/postgres.sh start "$pg_dir")"
export CAIRN_TEST_REQUIRE_POSTGRES=1
echo "== MariaDB, Redis, sqlite3 (scripts/services.sh)"
eval "$(bash scripts/services.sh start "$services_dir")"
export CAIRN_TEST_REQUIRE_SERVICES=1

echo "== cargo test (profile $CAIRN_PROFILE)"
cargo test --profile "$CAIRN_PROFILE" --all-targets

# The end-to-end suites of backup/restore and retention again, with every
# repository on S3, then on Swift.
for backend in s3 swift; do
  echo "== end-to-end suites on $backend"
  CAIRN_TEST_BACKEND=$backend cargo test --profile "$CAIRN_PROFILE" \
    --test backup_restore --test forget --test prune --test gc --test copy
done

echo "== REST API against its OpenAPI document (scripts/api-check.sh, schemathesis)"
bash scripts/api-check.sh "$CARGO_TARGET_DIR/$CAIRN_PROFILE/cairn"

echo "== fuzz targets build"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes sanitizer flags that stable rustc accepts only with RUSTC_BOOTSTRAP
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -O --target-dir "$CARGO_TARGET_DIR/fuzz")
# Each target replays its checked-in corpus (seeds plus what the long runs of
# scripts/fuzz.sh kept): an input that once passed must still pass.
echo "== fuzz corpus replay"
for target in $(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz list); do
  "$CARGO_TARGET_DIR/fuzz/x86_64-unknown-linux-gnu/release/$target" -runs=0 -rss_limit_mb=1024 \
    "fuzz/corpus/$target" 2>&1 | tail -1
done
echo "== all tests passed"
