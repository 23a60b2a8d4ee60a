#!/usr/bin/env bash
# Data-service sources against each service's own tools, one run, on
# throw-away servers (scripts/postgres.sh, scripts/services.sh):
#
#   - backup: `cairn backup --source S` against the dump tool writing to
#     /dev/null (what a dump costs before anything is stored);
#   - second backup after 1% of the rows changed: the bytes it added;
#   - recovery: `cairn restore --source S` into a new database (file) against
#     the service's own restore of the same dump from a local file.
#
#   bench-services.sh CAIRN_BINARY [MB]      (MB: database size, default 500)
#
# Prints one table; the work directory is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1")
mb=${2:-500}
work=$(mktemp -d /tmp/cairn-bench-services.XXXXXX)
chmod 755 "$work" # postgres.sh runs the server as another user when root
cleanup() {
  bash scripts/postgres.sh stop "$work/pg" >/dev/null 2>&1 || true
  bash scripts/services.sh stop "$work/svc" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
eval "$(bash scripts/postgres.sh start "$work/pg" 2>/dev/null)"
eval "$(bash scripts/services.sh start "$work/svc" 2>/dev/null)"
export PATH="$CAIRN_TEST_PG_BIN:$PATH"
export CAIRN_PASSWORD=bench CAIRN_REPOSITORY="$work/repo" CAIRN_CACHE_DIR="$work/cache"
"$bin" init -q >/dev/null
my="mariadb --no-defaults --socket=$CAIRN_TEST_MYSQL_SOCKET --user=root"
rs="redis-cli -s $CAIRN_TEST_REDIS_SOCKET"

cat >"$work/cairn.toml" <<EOF
[repositories.main]
url = "$work/repo"
[sources.pg]
repository = "main"
type = "postgres"
databases = ["bench"]
tools_dir = "$CAIRN_TEST_PG_BIN"
[sources.my]
repository = "main"
type = "mysql"
connection = "no-defaults socket=$CAIRN_TEST_MYSQL_SOCKET user=root"
databases = ["bench"]
[sources.lite]
repository = "main"
type = "sqlite"
databases = ["$work/bench.db"]
[sources.redis]
repository = "main"
type = "redis"
connection = "$CAIRN_TEST_REDIS_SOCKET"
EOF

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# time_of CMD...: seconds the command took (its output discarded)
time_of() { local t0; t0=$(now); "$@" >/dev/null 2>&1; secs "$t0" "$(now)"; }
added() { # the data_added_packed of a `backup --json` summary on stdin
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("message_type") == "summary": print(m["data_added_packed"])'
}
row() { printf '| %-8s | %8s | %8s | %6s | %12s | %8s | %8s | %6s |\n' "$@"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

bench() { # NAME DUMP_CMD CHANGE_CMD OWN_RESTORE_CMD CAIRN_RESTORE_ARGS...
  local name=$1 dump=$2 change=$3 own_restore=$4; shift 4
  local t_dump t_cairn t_own t_rec a2
  t_dump=$(time_of sh -c "$dump > /dev/null")
  t_cairn=$(time_of "$bin" backup --config "$work/cairn.toml" --source "$name")
  sh -c "$change" >/dev/null
  a2=$("$bin" --json backup --config "$work/cairn.toml" --source "$name" | added)
  sh -c "$dump > $work/own.dump"
  t_own=$(time_of sh -c "$own_restore")
  rm -f "$work/own.dump"
  t_rec=$(time_of "$bin" restore latest --config "$work/cairn.toml" --source "$name" "$@")
  row "$name" "$t_dump" "$t_cairn" "$(ratio "$t_cairn" "$t_dump")" "$(mib "$a2")" "$t_own" "$t_rec" "$(ratio "$t_rec" "$t_own")"
}

echo "== filling each service with ~${mb} MB" >&2
scale=$((mb / 15)) # pgbench: ~15 MB per scale unit
psql -X -q -c "create database bench" && pgbench -i -q -s "$scale" bench >/dev/null 2>&1
rows=$((mb * 1000000 / 200))
$my -e "create database bench; create table bench.t (id int primary key, v varchar(200)) engine=innodb;
  insert into bench.t select seq, concat(md5(seq), md5(seq + 1), md5(seq + 2), md5(seq + 3), md5(seq + 4), md5(seq + 5)) from bench.seq_1_to_$((rows * 3 / 4))"
sqlite3 "$work/bench.db" "pragma journal_mode=wal; create table t (id integer primary key, v text);
  with recursive n(i) as (select 1 union all select i + 1 from n where i < $rows)
  insert into t select i, hex(randomblob(48)) || hex(randomblob(48)) from n" >/dev/null
keys=$((mb * 1000000 / 120))
awk -v n="$keys" 'BEGIN { v = sprintf("%0100d", 0); for (i = 0; i < n; i++) printf "SET key:%d %s\r\n", i, v }' |
  $rs --pipe >/dev/null

echo "| service  | dump→null | backup | ratio | 2nd, 1% rows | own restore | cairn restore | ratio |"
echo "|---|---|---|---|---|---|---|---|"
bench pg "pg_dump -Fc -Z0 bench" \
  "psql -X -q -d bench -c 'update pgbench_accounts set abalance = abalance + 1 where aid % 100 = 0'" \
  "createdb own_copy && pg_restore -d own_copy $work/own.dump" \
  --target-database cairn_copy
bench my "mysqldump --no-defaults --socket=$CAIRN_TEST_MYSQL_SOCKET --user=root --single-transaction bench" \
  "$my -e 'update bench.t set v = reverse(v) where id % 100 = 0'" \
  "$my -e 'create database own_copy' && $my own_copy < $work/own.dump" \
  --target-database cairn_copy
bench lite "sqlite3 $work/bench.db .dump" \
  "sqlite3 $work/bench.db 'update t set v = lower(v) where id % 100 = 0'" \
  "sqlite3 $work/own.db < $work/own.dump" \
  --target "$work/cairn-copy.db"
bench redis "redis-cli -s $CAIRN_TEST_REDIS_SOCKET --rdb -" \
  "awk -v n=$keys 'BEGIN { for (i = 0; i < n; i += 100) printf \"SET key:%d changed-%d\\r\\n\", i, i }' | $rs --pipe" \
  "cp $work/own.dump $work/own.rdb" \
  --target "$work/cairn-copy.rdb"
echo
echo "repository after all: $(du -sh "$work/repo" | cut -f1)"
