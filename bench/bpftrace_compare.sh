#!/usr/bin/env bash
# Side by side with bpftrace: the same load, the same tracepoints, one line of
# output per event from each tool.
#   load     iperf3 TCP over a veth pair with 0.5% of its segments dropped by
#            nftables (per-packet transmits, retransmissions, drops) plus a loop of short
#            TCP connections (state changes), SECONDS long
#   bpftrace sock:inet_sock_set_state, tcp:tcp_retransmit_skb, skb:kfree_skb
#            and net:net_dev_xmit, each printf'd with its fields to a file
#   netwatcher  tcp (states, retrans, layer_time + layer_events: one tcp_layer
#            event per segment sent or received, timed at net_dev_xmit and the
#            receive hooks) and drop (an event per drop, no rate limit), JSON
#            Lines to a file
# Prints, per tool: events written, user+system CPU seconds, CPU seconds per
# million events, and iperf3 Gbit/s with its ratio to no tracing.
# Run as root after scripts/setup.sh. Usage: bench/bpftrace_compare.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
seconds=${1:-10}
nw=build/netwatcher
out=/dev/shm/nw-compare.out
cfg=$(mktemp --suffix=.toml)
bt=$(mktemp --suffix=.bt)

cleanup() {
  if [[ -n ${tool_pid:-} ]] && kill "$tool_pid" 2>/dev/null; then wait "$tool_pid" 2>/dev/null || true; fi
  if [[ -n ${srv_pid:-} ]]; then kill "$srv_pid" 2>/dev/null || true; fi
  if [[ -n ${echo_pid:-} ]]; then kill "$echo_pid" 2>/dev/null || true; fi
  remove_veth_pair
  rm -f "$cfg" "$bt" "$out"
}
trap cleanup EXIT
cleanup
make_veth_pair
# 0.5% of the data segments dropped on arrival (kfree_skb, NETFILTER_DROP).
ip netns exec nwb-b nft -f - <<'NFT'
table inet nwb_loss {
  chain input {
    type filter hook input priority 0;
    tcp dport 5201 numgen random mod 1000 < 5 drop
  }
}
NFT
ip netns exec nwb-b iperf3 -s >/dev/null 2>&1 &
srv_pid=$!
ip netns exec nwb-b python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.78.0.2", 41500)); s.listen(1024)
while True:
    c, _ = s.accept(); c.close()' &
echo_pid=$!
sleep 1

cat >"$bt" <<'BT'
tracepoint:sock:inet_sock_set_state {
  printf("state %d %s %d %d %d %d\n", pid, comm, args->sport, args->dport, args->oldstate, args->newstate);
}
tracepoint:tcp:tcp_retransmit_skb {
  printf("retransmit %d %d %d\n", args->sport, args->dport, args->state);
}
tracepoint:skb:kfree_skb {
  printf("drop %d %d %llx\n", args->reason, args->protocol, args->location);
}
tracepoint:net:net_dev_xmit {
  printf("xmit %s %d %d\n", str(args->name), args->len, args->rc);
}
BT

sed '/^\[\[sinks\]\]$/,$d' netwatcher.toml |
  sed -E 's/^(states|retrans|layer_time|layer_events) = false/\1 = true/;
          s/^max_events_per_second = [0-9]+/max_events_per_second = 0/' >"$cfg"
printf '[[sinks]]\ntype = "json"\npath = "%s"\nmax_size = 0\n' "$out" >>"$cfg"

load() {  # prints Gbit/s; short connections run alongside
  ip netns exec nwb-a python3 -c '
import socket, time
end = time.time() + '"$seconds"'
while time.time() < end:
    s = socket.create_connection(("10.78.0.2", 41500)); s.close()
    time.sleep(0.0005)' &
  local churn=$!
  ip netns exec nwb-a iperf3 -c 10.78.0.2 -t "$seconds" -J |
    python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
  wait "$churn"
}

clk=$(getconf CLK_TCK)
declare -A gbps=() events=() cpu=()

gbps[none]=$(load)

# Runs the load under one tool (already started as $tool_pid) and records its
# events (new lines in $out), CPU seconds and the link's Gbit/s.
measure_tool() {
  local tool=$1 t0 t1 l0 l1
  sleep 1
  t0=$(cpu_ticks "$tool_pid"); l0=$(wc -l <"$out")
  gbps[$tool]=$(load)
  sleep 1
  t1=$(cpu_ticks "$tool_pid"); l1=$(wc -l <"$out")
  events[$tool]=$((l1 - l0))
  cpu[$tool]=$(awk -v t=$((t1 - t0)) -v c="$clk" 'BEGIN {printf "%.2f", t / c}')
}

rm -f "$out"
ulimit -l unlimited 2>/dev/null || true  # bpftrace asks for it; new kernels do not need it
bpftrace "$bt" >"$out" 2>/tmp/nw-compare-bpftrace.err &
tool_pid=$!
for _ in $(seq 100); do grep -q . "$out" 2>/dev/null && break; sleep 0.1; done
measure_tool bpftrace
kill -INT "$tool_pid"; wait "$tool_pid" || true; tool_pid=
lost_bt=$( { grep -o 'Lost [0-9]* events' /tmp/nw-compare-bpftrace.err || true; } | awk '{s += $2} END {print s + 0}')

rm -f "$out"
"$nw" --config "$cfg" --plugin-dir build/plugins 2>/tmp/nw-compare.log &
tool_pid=$!
for _ in $(seq 100); do grep -q ' running: ' /tmp/nw-compare.log && break; sleep 0.1; done
measure_tool netwatcher
kill -TERM "$tool_pid"; wait "$tool_pid" || true; tool_pid=
lost_nw=$(sed -n "s/.*events, \([0-9]*\) lost in the kernel.*/\1/p" /tmp/nw-compare.log | awk '{s += $1} END {print s + 0}')

printf '%-11s %10s %12s %14s %10s %8s %8s\n' tool events "CPU s" "CPU s/M events" Gbit/s ratio lost
printf '%-11s %10s %12s %14s %10s %8s %8s\n' none - - - "${gbps[none]}" 1.000 -
for tool in bpftrace netwatcher; do
  lost=$lost_bt
  [[ $tool == netwatcher ]] && lost=$lost_nw
  printf '%-11s %10s %12s %14s %10s %8s %8s\n' "$tool" "${events[$tool]}" "${cpu[$tool]}" \
    "$(awk -v c="${cpu[$tool]}" -v e="${events[$tool]}" 'BEGIN {printf "%.2f", e ? c * 1e6 / e : 0}')" \
    "${gbps[$tool]}" "$(awk -v b="${gbps[none]}" -v t="${gbps[$tool]}" 'BEGIN {printf "%.3f", t / b}')" "$lost"
done
