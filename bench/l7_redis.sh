#!/usr/bin/env bash
# The redis plugin under load: redis-benchmark (SET and GET, 50 clients) at
# its full rate against redis-server across a veth pair, once without and
# once with netwatcher's redis plugin on. Prints ops/s both ways and their
# ratio, the commands netwatcher counted on each side against the calls the
# server reports (INFO commandstats: equal, 0 lost), and the agent's CPU per
# command. Run as root after scripts/setup.sh.
# Usage: bench/l7_redis.sh [seconds] [pipeline]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
seconds=${1:-10}
pipeline=${2:-1}
tree=${NETWATCHER_TREE:-build}
work=$(mktemp -d)
prom_port=41438
redis_port=41439

cleanup() {
  if [[ -n ${nw_pid:-} ]] && kill "$nw_pid" 2>/dev/null; then wait "$nw_pid" 2>/dev/null || true; fi
  if [[ -n ${redis_pid:-} ]]; then kill "$redis_pid" 2>/dev/null || true; fi
  remove_veth_pair nwt-rds-b
  rm -rf "$work"
}
trap cleanup EXIT
make_veth_pair nwt-rds-b 10.79.0

cli() { ip netns exec nwt-rds-b-a redis-cli -h 10.79.0.2 -p "$redis_port" "$@"; }
ip netns exec nwt-rds-b-b redis-server --port "$redis_port" --bind 10.79.0.2 --save '' \
  --appendonly no --dir "$work" --protected-mode no >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 50); do [[ $(cli PING 2>/dev/null) == PONG ]] && break; sleep 0.1; done

# redis-benchmark runs by request count: size one run to last about
# `seconds` at the rate measured by a short run first.
probe=$(ip netns exec nwt-rds-b-a redis-benchmark -h 10.79.0.2 -p "$redis_port" -t set -n 20000 \
  -c 50 -P "$pipeline" -q 2>/dev/null | tr '\r' '\n' | awk '/SET:/ {print int($2)}' | tail -1)
requests=$((probe * seconds / 2))  # two tests (set, get) share the time

bench() {
  cli CONFIG RESETSTAT >/dev/null
  ip netns exec nwt-rds-b-a redis-benchmark -h 10.79.0.2 -p "$redis_port" -t set,get -n "$requests" \
    -c 50 -P "$pipeline" -q 2>/dev/null | tr '\r' '\n' | awk '/requests per second/ {print $1, int($2)}'
}
calls() { cli INFO commandstats | tr -d '\r' | awk -F'[:=,]' -v c="cmdstat_$1" '$1 == c {print $3}'; }

without=$(bench)

cat >"$work/nw.toml" <<TOML
[netwatcher]
snapshot_interval = 1.0
[plugins.redis]
enabled = true
events = false
[[sinks]]
type = "prometheus"
listen = "127.0.0.1:$prom_port"
TOML
"$tree/netwatcher" --config "$work/nw.toml" --plugin-dir "$tree/plugins" 2>"$work/nw.log" &
nw_pid=$!
for _ in $(seq 100); do grep -q ' running: ' "$work/nw.log" && break; sleep 0.1; done
ticks_before=$(cpu_ticks "$nw_pid")
with=$(bench)
sleep 2  # the last commands: the poller reads within a poll_interval
ticks_after=$(cpu_ticks "$nw_pid")
sets=$(calls set)
gets=$(calls get)
metrics=$(curl -s "127.0.0.1:$prom_port/metrics")
kill "$nw_pid"
wait "$nw_pid" 2>/dev/null || true
nw_pid=

counted() {
  echo "$metrics" | awk -v c="$1" -v side="$2" '/^netwatcher_redis_commands_total\{/ && $0 ~ "command=\""c"\"" && $0 ~ "side=\""side"\"" {s += $2} END {printf "%d", s}'
}
family() {
  echo "$metrics" | awk -v f="$1" '$1 ~ "^"f {s += $2} END {printf "%d", s}'
}
lost_kernel=$(grep -o '[0-9]* lost in the kernel' "$work/nw.log" | awk '{s += $1} END {print s + 0}')
hz=$(getconf CLK_TCK)
ops() { echo "$1" | awk -v t="$2" '$1 == t":" {print $2}'; }
echo "redis-benchmark: SET and GET, $requests requests each, 50 clients, pipeline $pipeline (redis-server $(redis-server --version | awk '{print $3}'))"
printf '%-44s %s\n' \
  "SET ops/s without / with netwatcher" "$(ops "$without" SET) / $(ops "$with" SET)" \
  "GET ops/s without / with netwatcher" "$(ops "$without" GET) / $(ops "$with" GET)"
awk -v a="$(ops "$without" SET)" -v b="$(ops "$with" SET)" -v c="$(ops "$without" GET)" -v d="$(ops "$with" GET)" \
  'BEGIN {printf "%-44s SET %.3f, GET %.3f\n", "ops/s ratio (with / without)", b / a, d / c}'
printf '%-44s %s\n' \
  "SET calls (server) / client / server counted" "$sets / $(counted SET client) / $(counted SET server)" \
  "GET calls (server) / client / server counted" "$gets / $(counted GET client) / $(counted GET server)" \
  "unanswered (netwatcher)" "$(family netwatcher_redis_commands_unanswered_total)" \
  "parse errors (netwatcher)" "$(family netwatcher_redis_parse_errors_total)" \
  "records lost in the kernel (netwatcher)" "$lost_kernel"
awk -v t="$((ticks_after - ticks_before))" -v hz="$hz" -v q="$((sets + gets))" \
  'BEGIN {printf "%-44s %.2f s, %.2f us per command (both sides)\n", "agent CPU", t / hz, 1e6 * t / hz / q}'
