#!/usr/bin/env bash
# The mysql plugin under load: sysbench oltp_point_select (prepared
# statements) at full rate against MariaDB across a veth pair, for SECONDS s
# without netwatcher and for SECONDS s with its mysql plugin on (events to a
# JSON file). Prints queries/s both ways and their ratio, the queries sysbench
# reported against those netwatcher counted from each side (equal, and none
# unanswered), and the agent's CPU per query.
# Run as root after scripts/setup.sh (mariadb-server, sysbench).
# Usage: bench/l7_mysql.sh [seconds] [threads]
# MYSQL_EVENTS=false measures the plugin with its events off (metrics only);
# CONTAINERS=false without naming each event's cgroup and container ([containers]
# enabled = false), CONTAINER_LABELS=true with container labels on its metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
seconds=${1:-10}
threads=${2:-4}
tree=${NETWATCHER_TREE:-build}
work=$(mktemp -d)
port=41442
prom=41443
server=10.118.19.2

cleanup() {
  if [[ -n ${nw_pid:-} ]] && kill "$nw_pid" 2>/dev/null; then wait "$nw_pid" 2>/dev/null || true; fi
  if [[ -n ${db_pid:-} ]] && kill "$db_pid" 2>/dev/null; then wait "$db_pid" 2>/dev/null || true; fi
  remove_veth_pair nwt-mybench
  rm -rf "$work"
}
trap cleanup EXIT
make_veth_pair nwt-mybench 10.118.19

mariadb-install-db --no-defaults --user=root --skip-test-db --datadir="$work/data" >"$work/install.log" 2>&1
ip netns exec nwt-mybench-b mariadbd --no-defaults --user=root --datadir="$work/data" \
  --socket="$work/sock" --pid-file="$work/pid" --port=$port --bind-address=$server \
  --skip-name-resolve --innodb-buffer-pool-size=64M --log-error="$work/err.log" &
db_pid=$!
root_sql() { mariadb --no-defaults --socket="$work/sock" -uroot -e "$1"; }
for _ in $(seq 300); do root_sql 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
root_sql "CREATE USER 'bench'@'%' IDENTIFIED BY 'bench-pw'; GRANT ALL ON *.* TO 'bench'@'%'; CREATE DATABASE sbtest;"
bench() {
  ip netns exec nwt-mybench-a sysbench oltp_point_select --db-driver=mysql --mysql-host=$server \
    --mysql-port=$port --mysql-user=bench --mysql-password=bench-pw --mysql-db=sbtest \
    --tables=1 --table-size=10000 --db-ps-mode=auto "$@"
}
bench prepare >/dev/null
queries() { awk '/^ *queries:/ {print $2}' "$1"; }
qps() { awk '/^ *queries:/ {gsub(/\(/, "", $3); print $3}' "$1"; }

bench --threads="$threads" --time="$seconds" run >"$work/without.out"

cat >"$work/nw.toml" <<TOML
[netwatcher]
snapshot_interval = 1.0
[containers]
enabled = ${CONTAINERS:-true}
${CONTAINER_LABELS:+container_labels = $CONTAINER_LABELS}
[plugins.mysql]
enabled = true
events = ${MYSQL_EVENTS:-true}
[[sinks]]
type = "json"
path = "$work/events.jsonl"
[[sinks]]
type = "prometheus"
listen = "127.0.0.1:$prom"
TOML
"$tree/netwatcher" --config "$work/nw.toml" --plugin-dir "$tree/plugins" 2>"$work/nw.log" &
nw_pid=$!
for _ in $(seq 100); do grep -q ' running: ' "$work/nw.log" && break; sleep 0.1; done
ticks_before=$(cpu_ticks "$nw_pid")
bench --threads="$threads" --time="$seconds" run >"$work/with.out"
sleep 2  # the last commands' events: the poller reads within a poll_interval
ticks_after=$(cpu_ticks "$nw_pid")
metrics=$(curl -s "127.0.0.1:$prom/metrics")
kill "$nw_pid"
wait "$nw_pid" 2>/dev/null || true
nw_pid=

seen() {
  echo "$metrics" | awk -v side="$1" '/^netwatcher_mysql_commands_total\{/ && /COM_STMT_EXECUTE/ && $0 ~ "side=\""side"\"" {s += $2} END {printf "%d", s}'
}
metric_sum() {
  echo "$metrics" | awk -v name="$1" 'index($0, name) == 1 {s += $2} END {printf "%d", s}'
}
reported=$(queries "$work/with.out")
events=$(cat "$work"/events.jsonl* | grep -c '"COM_STMT_EXECUTE"' || true)
lost_kernel=$(grep -o '[0-9]* lost in the kernel' "$work/nw.log" | awk '{s += $1} END {print s + 0}')
hz=$(getconf CLK_TCK)
echo "sysbench oltp_point_select, prepared statements, $threads threads, $seconds s, events ${MYSQL_EVENTS:-true}, containers ${CONTAINERS:-true}, container labels ${CONTAINER_LABELS:-false} (MariaDB $(mariadbd --version | awk '{print $3}'))"
printf '%-44s %s\n' "queries/s without netwatcher" "$(qps "$work/without.out")" \
  "queries/s with netwatcher (mysql plugin)" "$(qps "$work/with.out")"
awk -v a="$(qps "$work/without.out")" -v b="$(qps "$work/with.out")" \
  'BEGIN {printf "%-44s %.3f (%.1f%% fewer)\n", "ratio with / without", b / a, 100 * (1 - b / a)}'
printf '%-44s %s\n' "queries reported (sysbench, with netwatcher)" "$reported" \
  "executes counted, client side (netwatcher)" "$(seen client)" \
  "executes counted, server side (netwatcher)" "$(seen server)" \
  "COM_STMT_EXECUTE events (json sink)" "$events" \
  "unanswered (netwatcher)" "$(metric_sum netwatcher_mysql_commands_unanswered_total)" \
  "parse errors (netwatcher)" "$(metric_sum netwatcher_mysql_parse_errors_total)" \
  "records lost in the kernel (netwatcher)" "$lost_kernel"
awk -v t="$((ticks_after - ticks_before))" -v hz="$hz" -v q="$reported" -v s="$seconds" \
  'BEGIN {printf "%-44s %.1f%% of a core, %.2f us per query (both sides)\n", "agent CPU", 100 * t / hz / (s + 2), 1e6 * t / hz / q}'
