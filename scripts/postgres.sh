#!/usr/bin/env bash
# A real, throw-away PostgreSQL cluster for cairn's tests (pg_dump | cairn backup).
#
# The server is Debian's PostgreSQL (apt-get installs postgresql and
# postgresql-client if no usable binaries are found), run by pg_ctl on a unix
# socket in DIR/sock only: no TCP, no system service, no pg_ctlcluster.
#
#   eval "$(postgres.sh start DIR)"   find (or install) PostgreSQL, initdb DIR/data on the
#                                     first start, start it, wait until ready, print
#                                     `export` lines (see below); harmless if running
#   postgres.sh stop DIR              fast shutdown, waiting; fine if never started
#   postgres.sh status DIR            exit 0 if it runs and answers
#   eval "$(postgres.sh env DIR)"     the export lines again (it must be running)
#
# Exports printed by start/env:
#   PGHOST (DIR/sock)  PGPORT  PGUSER (cairn, superuser, trust auth)
#   CAIRN_TEST_PG_BIN  directory holding psql, pg_dump, createdb, ... of the
#                      server's major version: call the clients from there
# A database named cairn exists, so `psql` without -d connects.
#
# Binaries: CAIRN_PG_BIN if set, else the newest /usr/lib/postgresql/*/bin
# with initdb, pg_ctl and postgres, else the directory of `initdb` on PATH. The
# clients come from the same directory or another one on the same major
# version. A DIR keeps the binaries it was initialised with (DIR/cluster).
#
# Root: postgres refuses to run as root, so then the cluster belongs to the
# system user $CAIRN_PG_OS_USER (default cairn-pg, created if missing; nobody if
# it cannot be): DIR/data, DIR/sock and DIR/postgres.log are chowned to it, and
# DIR gets o+x (mktemp -d makes it 0700). The parents of DIR must be searchable
# by everyone (/tmp is). The installing apt-get runs with sudo -n when not root.
#
# Restarts: `stop` is a clean fast shutdown; `start DIR` again serves the same
# data on the same socket. fsync is off (nothing is lost unless the machine
# crashes); CAIRN_PG_FSYNC=1 turns it on.
#
# DIR layout: data/ (PGDATA), sock/ (socket), postgres.log (server log),
# initdb.log, cluster (binaries + port), env.sh (last exports), .lock.
#
# Knobs: CAIRN_PG_BIN (server bin dir), CAIRN_PG_PORT (port of a DIR's first
# start, default 5432; only names the socket file), CAIRN_PG_TIMEOUT (seconds
# pg_ctl waits, default 60), CAIRN_PG_OS_USER, CAIRN_PG_FSYNC=1.
# Only stdout of start/env carries exports; everything else goes to stderr.
set -euo pipefail

ME="postgres.sh"
SUPERUSER=cairn
TIMEOUT="${CAIRN_PG_TIMEOUT:-60}"
OS_USER="${CAIRN_PG_OS_USER:-cairn-pg}"

# set by load_bins / pick
SERVER_BIN="" CLIENT_BIN="" VERSION="" PORT=""
# set by load_owner: who runs initdb / pg_ctl / postgres
OWNER_UID="" OWNER_GID=""

say() { echo "$ME: $*" >&2; }
die() { say "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# ------------------------------------------------------------------ binaries
# "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> 15.18
version_of() { "$1" --version 2>/dev/null | awk 'NR == 1 { print $3 }'; }
# 15.18 -> 15, 17beta1 -> 17, 9.6.24 -> 9.6
major_of() { awk -F. '{ if ($1 + 0 >= 10) print $1 + 0; else print ($1 + 0) "." ($2 + 0) }' <<<"$1"; }

has_server() { [[ -x "$1/initdb" && -x "$1/pg_ctl" && -x "$1/postgres" ]]; }
has_client() { [[ -x "$1/psql" && -x "$1/pg_dump" && -x "$1/createdb" ]]; }

server_candidates() {
  if [[ -n "${CAIRN_PG_BIN:-}" ]]; then echo "$CAIRN_PG_BIN"; return 0; fi
  local dirs=() d
  shopt -s nullglob; dirs=(/usr/lib/postgresql/*/bin); shopt -u nullglob
  if ((${#dirs[@]})); then printf '%s\n' "${dirs[@]}" | sort -V -r; fi
  if d="$(command -v initdb)"; then dirname "$(readlink -f "$d")"; dirname "$d"; fi
}

# A directory with psql, pg_dump and createdb of major version $2; $1 first.
client_for() {
  local c p
  for c in "$1" "/usr/lib/postgresql/$2/bin" "$(p="$(command -v pg_dump)" && dirname "$p")"; do
    if [[ -n "$c" ]] && has_client "$c" &&
      [[ "$(major_of "$(version_of "$c/pg_dump")")" == "$2" && "$(major_of "$(version_of "$c/psql")")" == "$2" ]]; then
      echo "$c"; return 0
    fi
  done
  return 1
}

# Sets SERVER_BIN CLIENT_BIN VERSION: the first candidate with a server and
# matching clients (of major version $1 if given).
pick() {
  local want="${1:-}" s v m
  while read -r s; do
    if [[ -z "$s" ]] || ! has_server "$s"; then continue; fi
    v="$(version_of "$s/postgres")"; m="$(major_of "$v")"
    if [[ -z "$v" ]] || [[ -n "$want" && "$m" != "$want" ]]; then continue; fi
    if CLIENT_BIN="$(client_for "$s" "$m")"; then
      SERVER_BIN="$(cd "$s" && pwd -P)" VERSION="$v"; return 0
    fi
  done < <(server_candidates)
  return 1
}

apt_install() {
  command -v apt-get >/dev/null ||
    die "no PostgreSQL server (initdb, pg_ctl, postgres) with matching clients (psql, pg_dump, createdb), and no apt-get"
  local sudo=() t0; t0="$(now)"
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || die "no PostgreSQL binaries, and installing them needs root (no sudo here)"
    sudo=(sudo -n)
  fi
  say "installing Debian's postgresql + postgresql-client"
  # no 'main' cluster under /var/lib/postgresql started by the package: this
  # script runs its own clusters (postgresql-common reads createcluster.d)
  "${sudo[@]}" sh -c 'mkdir -p /etc/postgresql-common/createcluster.d &&
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/cairn-no-main-cluster.conf'
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300)
  "${apt[@]}" install --no-install-recommends postgresql postgresql-client </dev/null >&2 ||
    { "${apt[@]}" update </dev/null >&2 &&
      "${apt[@]}" install --no-install-recommends postgresql postgresql-client </dev/null >&2; } ||
    die "apt-get install postgresql postgresql-client failed"
  say "installed in $(since "$t0")s"
}

# DIR/cluster: server_bin= client_bin= port=, written once the cluster exists.
read_state() {
  local k v
  while IFS='=' read -r k v; do
    case "$k" in server_bin) SERVER_BIN=$v ;; client_bin) CLIENT_BIN=$v ;; port) PORT=$v ;; esac
  done <"$1/cluster"
}

write_state() {
  printf 'server_bin=%s\nclient_bin=%s\nport=%s\n' "$SERVER_BIN" "$CLIENT_BIN" "$PORT" >"$1/cluster.tmp"
  mv -f "$1/cluster.tmp" "$1/cluster"
}

initialised() { [[ -f "$1/cluster" && -f "$1/data/PG_VERSION" ]]; }

# The binaries of an initialised DIR: those it was made with, else others of its major.
load_bins() {
  local major; major="$(tr -dc 0-9. <"$1/data/PG_VERSION")"
  read_state "$1"
  if has_server "$SERVER_BIN" && has_client "$CLIENT_BIN" &&
    [[ "$(major_of "$(version_of "$SERVER_BIN/postgres")")" == "$major" ]]; then
    VERSION="$(version_of "$SERVER_BIN/postgres")"; return 0
  fi
  pick "$major" || die "$1 holds a PostgreSQL $major cluster, and there are no PostgreSQL $major binaries any more"
  say "the binaries of $1 moved; now $SERVER_BIN and $CLIENT_BIN"
  write_state "$1"
}

# ------------------------------------------------------------------ users
# The owner of DIR/data if it exists, else: ourselves, or as root a system user.
load_owner() {
  if [[ -d "$1/data" ]]; then
    OWNER_UID="$(stat -c %u "$1/data")" OWNER_GID="$(stat -c %g "$1/data")"
    [[ $EUID -eq 0 || $EUID -eq $OWNER_UID ]] ||
      die "$1/data belongs to uid $OWNER_UID; run this as that user or as root"
    [[ $OWNER_UID -ne 0 ]] || die "$1/data belongs to root, and postgres refuses to run as root"
    return 0
  fi
  if [[ $EUID -ne 0 ]]; then OWNER_UID=$EUID OWNER_GID="$(id -g)"; return 0; fi
  command -v setpriv >/dev/null || die "running as root needs setpriv (util-linux) to start postgres as another user"
  local u="$OS_USER"
  if ! id -u "$u" >/dev/null 2>&1 && command -v useradd >/dev/null; then
    # a parallel start may create it first: then this fails, and the check below passes
    if useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$u" >&2 2>/dev/null; then say "created system user $u"; fi
  fi
  if ! id -u "$u" >/dev/null 2>&1; then say "no user $u and cannot create it: using nobody"; u=nobody; fi
  OWNER_UID="$(id -u "$u")" OWNER_GID="$(id -g "$u")"
  [[ $OWNER_UID -ne 0 ]] || die "user $u is root"
}

# Run a command as the cluster's owner, in DIR (postgres refuses root, and
# complains about a working directory it cannot read).
as_owner() {
  local dir="$1"; shift
  if [[ $EUID -eq 0 ]]; then
    (cd "$dir" && exec setpriv --reuid="$OWNER_UID" --regid="$OWNER_GID" --clear-groups -- env LC_ALL=C "$@")
  else
    (cd "$dir" && exec env LC_ALL=C "$@")
  fi
}

# ------------------------------------------------------------------ helpers
dir_of() {
  local dir; dir="$(cd "$1" && pwd -P)"
  # the path goes into postgresql.conf and a unix socket address unquoted
  [[ "$dir" =~ ^[A-Za-z0-9._/+@%:=-]+$ ]] || die "use a DIR of letters, digits and ._/+@%:=- only: $dir"
  echo "$dir"
}

check_socket_path() {
  local sock="$1/sock/.s.PGSQL.$PORT"
  ((${#sock} <= 107)) || die "socket path $sock is longer than a unix socket allows (107 bytes): use a shorter DIR"
}

postmaster_pid() { if [[ -f "$1/data/postmaster.pid" ]]; then head -1 "$1/data/postmaster.pid" | tr -dc 0-9; fi; }

# PID is a live (not zombie: PID 1 may be slow to reap) postmaster of DIR/data.
# Not `pg_ctl status`: that takes a zombie, or a reused pid, for a server.
is_postmaster() {
  local state
  [[ -n "$1" ]] && state="$(sed -E 's/^.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null)" &&
    [[ -n "$state" && "$state" != Z ]] &&
    [[ "$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" == *"postgres -D $2/data "* ]]
}

running() { is_postmaster "$(postmaster_pid "$1")" "$1"; }

client() {
  local dir="$1" tool="$2"; shift 2
  env -u PGDATABASE -u PGSERVICE -u PGOPTIONS -u PGPASSWORD \
    PGHOST="$dir/sock" PGPORT="$PORT" PGUSER="$SUPERUSER" "$CLIENT_BIN/$tool" "$@"
}

ready() { client "$1" psql -X -q -d postgres -Atc 'select 1' >/dev/null 2>&1; }

write_env() {
  {
    printf 'export PGHOST=%q\n' "$1/sock"
    printf 'export PGPORT=%q\n' "$PORT"
    printf 'export PGUSER=%q\n' "$SUPERUSER"
    printf 'export CAIRN_TEST_PG_BIN=%q\n' "$CLIENT_BIN"
  } >"$1/env.sh.tmp"
  mv -f "$1/env.sh.tmp" "$1/env.sh"
}

write_conf() {
  local fsync=off
  [[ "${CAIRN_PG_FSYNC:-}" != 1 ]] || fsync=on
  cat >"$1/data/cairn.conf.tmp" <<EOF
# written by scripts/postgres.sh on every start
listen_addresses = ''
port = $PORT
unix_socket_directories = '$1/sock'
unix_socket_permissions = 0777
fsync = $fsync
synchronous_commit = $fsync
full_page_writes = $fsync
log_min_messages = warning
log_connections = off
EOF
  if [[ $EUID -eq 0 ]]; then chown "$OWNER_UID:$OWNER_GID" "$1/data/cairn.conf.tmp"; fi
  mv -f "$1/data/cairn.conf.tmp" "$1/data/cairn.conf"
}

# DIR/data, DIR/sock and DIR/postgres.log belong to the owner, who can reach them.
prepare_dirs() {
  local dir="$1"
  mkdir -p "$dir/data" "$dir/sock"
  touch "$dir/postgres.log"
  chmod 700 "$dir/data"; chmod 755 "$dir/sock"
  if [[ $EUID -eq 0 ]]; then
    chown "$OWNER_UID:$OWNER_GID" "$dir/data" "$dir/sock" "$dir/postgres.log"
    if ! as_owner / test -x "$dir"; then chmod o+x "$dir"; fi
    as_owner / test -w "$dir/data" -a -w "$dir/sock" -a -w "$dir/postgres.log" ||
      die "uid $OWNER_UID cannot reach $dir: a parent directory is not searchable by it (use a DIR under /tmp)"
  fi
}

# ------------------------------------------------------------------ commands
cmd_start() {
  local dir fresh=0 t0; dir="$(dir_of "$(mkdir -p "$1" && cd "$1" && pwd -P)")"
  exec 9>"$dir/.lock"; flock 9
  if initialised "$dir"; then
    load_bins "$dir"
  else
    if [[ -e "$dir/data" ]]; then say "removing $dir/data, left by an initdb that did not finish"; rm -rf "$dir/data"; fi
    if ! pick; then apt_install; pick || die "no usable PostgreSQL binaries even after apt-get install"; fi
    PORT="${CAIRN_PG_PORT:-5432}"
  fi
  check_socket_path "$dir"
  load_owner "$dir"
  say "PostgreSQL $VERSION: server $SERVER_BIN, clients $CLIENT_BIN"
  if [[ -d "$dir/data" ]] && running "$dir"; then
    ready "$dir" || die "a server runs for $dir but does not answer on $dir/sock; stop it first"
    say "already running (pid $(head -1 "$dir/data/postmaster.pid"))"
    write_env "$dir"; cat "$dir/env.sh"; return 0
  fi
  prepare_dirs "$dir"

  if ! initialised "$dir"; then
    t0="$(now)"
    if ! as_owner "$dir" "$SERVER_BIN/initdb" -D "$dir/data" -U "$SUPERUSER" --auth=trust --no-sync \
      --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 </dev/null; then
      tail -n 30 "$dir/initdb.log" >&2; rm -rf "$dir/data"; die "initdb failed (log: $dir/initdb.log)"
    fi
    echo "include_if_exists 'cairn.conf'" >>"$dir/data/postgresql.conf"
    write_state "$dir"
    fresh=1
    say "initdb in $(since "$t0")s"
  fi

  write_conf "$dir"
  # after a crash (kill -9, OOM), lock files naming a dead or zombie postmaster
  # would stop postgres from starting; the server of DIR is not running, so drop them
  local stale; stale="$(postmaster_pid "$dir")"
  if [[ -n "$stale" ]]; then
    say "removing the lock files of a postmaster that died (pid $stale)"
    rm -f "$dir/data/postmaster.pid" "$dir/sock/.s.PGSQL.$PORT.lock"
  fi
  echo "=== $(date -u +%FT%TZ) start" >>"$dir/postgres.log"
  t0="$(now)"
  # fd 9 (the lock) must not live on in the server
  if ! as_owner "$dir" "$SERVER_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$TIMEOUT" start \
    </dev/null >&2 9>&-; then
    say "did not start; last lines of $dir/postgres.log:"
    awk '/^=== .* start$/ { n = 0 } { line[n++] = $0 } END { for (i = (n > 30 ? n - 30 : 0); i < n; i++) print line[i] }' \
      "$dir/postgres.log" >&2
    stop_now "$dir" || true
    exit 1
  fi
  ready "$dir" || { stop_now "$dir" || true; die "started but does not answer on $dir/sock"; }
  if [[ -z "$(client "$dir" psql -X -d postgres -Atc "select 1 from pg_database where datname = '$SUPERUSER'")" ]]; then
    client "$dir" createdb "$SUPERUSER" >&2
  fi
  local what="running"; if ((fresh)); then what="new cluster running"; fi
  say "$what (pid $(head -1 "$dir/data/postmaster.pid")), ready after $(since "$t0")s"
  write_env "$dir"
  cat "$dir/env.sh"
}

stop_now() {
  local dir="$1" t0; t0="$(now)"
  if ! running "$dir"; then
    local stale; stale="$(postmaster_pid "$dir")"
    say "not running${stale:+ (stale pid $stale, left by a crash)}"; return 0
  fi
  if ! as_owner "$dir" "$SERVER_BIN/pg_ctl" -D "$dir/data" -m fast -w -t "$TIMEOUT" stop </dev/null >&2; then
    say "no fast shutdown within ${TIMEOUT}s: immediate"
    as_owner "$dir" "$SERVER_BIN/pg_ctl" -D "$dir/data" -m immediate -w -t "$TIMEOUT" stop </dev/null >&2 ||
      die "pg_ctl stop failed for $dir"
  fi
  echo "=== $(date -u +%FT%TZ) stopped" >>"$dir/postgres.log"
  say "stopped in $(since "$t0")s"
}

cmd_stop() {
  [[ -d "$1" ]] || { say "no dir $1: nothing to stop"; return 0; }
  local dir; dir="$(dir_of "$1")"
  initialised "$dir" || { say "no cluster in $dir: nothing to stop"; return 0; }
  exec 9>"$dir/.lock"; flock 9
  load_bins "$dir"; load_owner "$dir"
  stop_now "$dir"
}

cmd_status() {
  [[ -d "$1" ]] || die "no such dir: $1"
  local dir; dir="$(dir_of "$1")"
  initialised "$dir" || { say "no cluster in $dir"; return 1; }
  load_bins "$dir"; load_owner "$dir"
  running "$dir" || { say "not running"; return 1; }
  ready "$dir" || { say "running but does not answer"; return 1; }
  say "running (pid $(head -1 "$dir/data/postmaster.pid")), PostgreSQL $VERSION"
}

cmd_env() {
  [[ -d "$1" ]] || die "no such dir: $1"
  local dir; dir="$(dir_of "$1")"
  initialised "$dir" || die "no cluster in $dir"
  load_bins "$dir"; load_owner "$dir"
  if ! running "$dir" || ! ready "$dir"; then die "not running for $dir"; fi
  write_env "$dir"
  cat "$dir/env.sh"
}

usage() {
  sed -n '8,13s/^#   //p' "$0" >&2
  exit 2
}

case "${1:-}" in
  start | stop | status | env) [[ $# -eq 2 ]] || usage; "cmd_$1" "$2" ;;
  *) usage ;;
esac
