#!/usr/bin/env bash
# Real, throw-away MariaDB and Redis servers for cairn's data-service tests,
# on unix sockets under DIR only (no TCP, no system service). PostgreSQL has
# its own script (scripts/postgres.sh); SQLite needs no server, only the
# sqlite3 shell, which this script installs too.
#
#   eval "$(services.sh start DIR)"   install what is missing (apt-get), start both,
#                                     wait until they answer, print `export` lines
#   services.sh stop DIR              shut both down; fine if never started
#
# Exports printed by start:
#   CAIRN_TEST_MYSQL_SOCKET  MariaDB's socket (user root, unix-socket auth as root,
#                            or the user running this script)
#   CAIRN_TEST_REDIS_SOCKET  Redis's socket
#
# As root, mariadbd runs with --user=root (its data is throw-away).
# Only stdout of start carries exports; everything else goes to stderr.
set -euo pipefail

ME="services.sh"
TIMEOUT="${CAIRN_SERVICES_TIMEOUT:-60}"
say() { echo "$ME: $*" >&2; }
die() { say "error: $*"; exit 1; }

install_missing() {
  local need=()
  command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || need+=(mariadb-server)
  command -v mariadb >/dev/null || need+=(mariadb-client)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v redis-cli >/dev/null || need+=(redis-tools)
  command -v sqlite3 >/dev/null || need+=(sqlite3)
  ((${#need[@]})) || return 0
  command -v apt-get >/dev/null || die "missing ${need[*]}, and no apt-get"
  local sudo=()
  [[ $EUID -eq 0 ]] || sudo=(sudo -n)
  say "installing ${need[*]}"
  # no system instances: the packages' services must not start (no init here
  # anyway); policy-rc.d says so to invoke-rc.d
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get -q -y -o DPkg::Lock::Timeout=300)
  "${apt[@]}" install --no-install-recommends "${need[@]}" </dev/null >&2 ||
    { "${apt[@]}" update </dev/null >&2 && "${apt[@]}" install --no-install-recommends "${need[@]}" </dev/null >&2; } ||
    die "apt-get install ${need[*]} failed"
}

mariadbd_bin() { command -v mariadbd || echo /usr/sbin/mariadbd; }

wait_for() {
  local what="$1"; shift
  local i
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "$what did not answer within ${TIMEOUT}s"
}

start_mariadb() {
  local dir="$1/mariadb" user
  user="$(id -un)"
  mkdir -p "$dir"
  if [[ ! -d "$dir/data/mysql" ]]; then
    rm -rf "$dir/data"
    mariadb-install-db --no-defaults --datadir="$dir/data" --user="$user" \
      --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1 ||
      { tail -n 20 "$dir/install.log" >&2; die "mariadb-install-db failed (log: $dir/install.log)"; }
  fi
  if [[ -S "$dir/mysqld.sock" ]] && mariadb --no-defaults --socket="$dir/mysqld.sock" -u root -e 'select 1' >/dev/null 2>&1; then
    say "MariaDB already running"
    return 0
  fi
  "$(mariadbd_bin)" --no-defaults --datadir="$dir/data" --socket="$dir/mysqld.sock" \
    --skip-networking --user="$user" --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" \
    --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=0 </dev/null >/dev/null 2>&1 &
  wait_for MariaDB mariadb --no-defaults --socket="$dir/mysqld.sock" -u root -e 'select 1'
  say "MariaDB running ($(mariadb --no-defaults --socket="$dir/mysqld.sock" -u root -N -e 'select version()'))"
}

start_redis() {
  local dir="$1/redis"
  mkdir -p "$dir"
  if redis-cli -s "$dir/redis.sock" ping >/dev/null 2>&1; then
    say "Redis already running"
    return 0
  fi
  redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save '' >&2
  wait_for Redis redis-cli -s "$dir/redis.sock" ping
  say "Redis running ($(redis-server --version | awk '{print $3}'))"
}

cmd_start() {
  local dir
  mkdir -p "$1"
  dir="$(cd "$1" && pwd -P)"
  install_missing
  start_mariadb "$dir"
  start_redis "$dir"
  printf 'export CAIRN_TEST_MYSQL_SOCKET=%q\n' "$dir/mariadb/mysqld.sock"
  printf 'export CAIRN_TEST_REDIS_SOCKET=%q\n' "$dir/redis/redis.sock"
}

stop_pidfile() {
  local pidfile="$1" pid i
  [[ -f "$pidfile" ]] || return 0
  pid="$(tr -dc 0-9 <"$pidfile")"
  [[ -n "$pid" ]] || return 0
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

cmd_stop() {
  [[ -d "$1" ]] || { say "no dir $1: nothing to stop"; return 0; }
  stop_pidfile "$1/redis/redis.pid"
  stop_pidfile "$1/mariadb/mysqld.pid"
  say "stopped"
}

case "${1:-}" in
  start | stop) [[ $# -eq 2 ]] || { sed -n '7,8s/^#   //p' "$0" >&2; exit 2; }; "cmd_$1" "$2" ;;
  *) sed -n '7,8s/^#   //p' "$0" >&2; exit 2 ;;
esac
