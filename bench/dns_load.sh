#!/usr/bin/env bash
# The dns plugin under load: dnsperf at a fixed rate against dnsmasq (local
# records) across a veth pair, with netwatcher's dns plugin on. Prints the
# queries dnsperf completed, the queries netwatcher reported from each side
# (equal, and none lost), and the agent's CPU per query.
# Run as root after scripts/setup.sh.
# Usage: bench/dns_load.sh [qps] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
qps=${1:-5000}
seconds=${2:-10}
tree=${NETWATCHER_TREE:-build}
work=$(mktemp -d)
port=41479

cleanup() {
  if [[ -n ${nw_pid:-} ]] && kill "$nw_pid" 2>/dev/null; then wait "$nw_pid" 2>/dev/null || true; fi
  if [[ -n ${dns_pid:-} ]]; then kill "$dns_pid" 2>/dev/null || true; fi
  remove_veth_pair
  rm -rf "$work"
}
trap cleanup EXIT
make_veth_pair

for i in $(seq 0 99); do echo "10.78.1.$i host$i.bench"; done >"$work/hosts"
for i in $(seq 0 99); do echo "host$i.bench A"; done >"$work/queries"
ip netns exec nwb-b dnsmasq --no-daemon --no-resolv --no-hosts --user=root --local=/bench/ \
  --addn-hosts="$work/hosts" --listen-address=10.78.0.2 --bind-interfaces --cache-size=1000 \
  --log-facility=- -q >"$work/dnsmasq.log" 2>&1 &
dns_pid=$!
for _ in $(seq 50); do
  ip netns exec nwb-a dig +short +tries=1 +time=1 @10.78.0.2 host1.bench 2>/dev/null | grep -q 10.78.1.1 && break
  sleep 0.1
done

cat >"$work/nw.toml" <<TOML
[netwatcher]
snapshot_interval = 1.0
[plugins.dns]
enabled = true
[[sinks]]
type = "json"
path = "$work/events.jsonl"
[[sinks]]
type = "prometheus"
listen = "127.0.0.1:$port"
TOML
"$tree/netwatcher" --config "$work/nw.toml" --plugin-dir "$tree/plugins" 2>"$work/nw.log" &
nw_pid=$!
for _ in $(seq 100); do grep -q ' running: ' "$work/nw.log" && break; sleep 0.1; done
ticks_before=$(cpu_ticks "$nw_pid")
ip netns exec nwb-a dnsperf -s 10.78.0.2 -d "$work/queries" -l "$seconds" -Q "$qps" -c 4 >"$work/dnsperf.out" 2>&1
sleep 2  # the last queries' events: the poller reads within a poll_interval
ticks_after=$(cpu_ticks "$nw_pid")
metrics=$(curl -s "127.0.0.1:$port/metrics")
kill "$nw_pid"
wait "$nw_pid" 2>/dev/null || true
nw_pid=

completed=$(awk '/Queries completed:/ {print $3}' "$work/dnsperf.out")
lost=$(awk '/Queries lost:/ {print $3}' "$work/dnsperf.out")
seen() {
  echo "$metrics" | awk -v side="$1" '/^netwatcher_dns_requests_total\{/ && $0 ~ "side=\""side"\"" {s += $2} END {printf "%d", s}'
}
unanswered() {
  echo "$metrics" | awk -v side="$1" '/^netwatcher_dns_requests_unanswered_total\{/ && $0 ~ "side=\""side"\"" {s += $2} END {printf "%d", s}'
}
events=$(cat "$work"/events.jsonl* | grep -c '"dns_query"' || true)
lost_kernel=$(grep -o '[0-9]* lost in the kernel' "$work/nw.log" | awk '{s += $1} END {print s + 0}')
sink_dropped=$(grep -o "sink 'json': [0-9]* written, [0-9]* dropped" "$work/nw.log" | awk '{print $5}')
hz=$(getconf CLK_TCK)
echo "dnsperf: $qps qps for $seconds s, 4 clients, 100 names (dnsmasq, local records)"
printf '%-40s %s\n' "queries completed (dnsperf)" "$completed" \
  "queries lost (dnsperf)" "$lost" \
  "answered, client side (netwatcher)" "$(seen client)" \
  "answered, server side (netwatcher)" "$(seen server)" \
  "unanswered client / server (netwatcher)" "$(unanswered client) / $(unanswered server)" \
  "dns_query events (json sink, rotated files too)" "$events" \
  "events dropped on the json sink's full queue" "${sink_dropped:-?}" \
  "records lost in the kernel (netwatcher)" "$lost_kernel"
awk -v t="$((ticks_after - ticks_before))" -v hz="$hz" -v q="$completed" -v s="$seconds" \
  'BEGIN {printf "%-40s %.1f%% of a core, %.2f us per query (both sides)\n", "agent CPU", 100 * t / hz / (s + 2), 1e6 * t / hz / q}'
