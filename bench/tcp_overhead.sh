#!/usr/bin/env bash
# TCP throughput over a veth pair between two namespaces, with and without
# netwatcher (default netwatcher.toml), several runs each. Prints Gbit/s per
# run, the median ratio, and netwatcher's CPU time and peak RSS. Run as root
# after scripts/setup.sh. Usage: bench/tcp_overhead.sh [runs] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
seconds=${2:-5}
nw=build/netwatcher

cleanup() {
  [[ -n ${nw_pid:-} ]] && kill "$nw_pid" 2>/dev/null && wait "$nw_pid" 2>/dev/null || true
  [[ -n ${srv_pid:-} ]] && kill "$srv_pid" 2>/dev/null || true
  ip netns del nwb-a 2>/dev/null || true
  ip netns del nwb-b 2>/dev/null || true
}
trap cleanup EXIT
cleanup
ip netns add nwb-a
ip netns add nwb-b
ip link add nwb-a0 netns nwb-a type veth peer name nwb-b0 netns nwb-b
ip -n nwb-a addr add 10.78.0.1/24 dev nwb-a0
ip -n nwb-b addr add 10.78.0.2/24 dev nwb-b0
for ns in nwb-a nwb-b; do ip -n $ns link set lo up; done
ip -n nwb-a link set nwb-a0 up
ip -n nwb-b link set nwb-b0 up
ip netns exec nwb-b iperf3 -s >/dev/null 2>&1 &
srv_pid=$!
sleep 1

measure() {  # prints Gbit/s of one run
  ip netns exec nwb-a iperf3 -c 10.78.0.2 -t "$seconds" -J |
    python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

base=() traced=()
cfg=$(mktemp --suffix=.toml)
# The default config, minus the stdout table (a terminal would be the bottleneck).
sed '/^\[\[sinks\]\]$/,$d' netwatcher.toml >"$cfg"
printf '[[sinks]]\ntype = "prometheus"\nlisten = "127.0.0.1:41420"\n' >>"$cfg"
printf '[[sinks]]\ntype = "json"\npath = "/dev/null"\n' >>"$cfg"

for ((i = 1; i <= runs; i++)); do
  base+=("$(measure)")
  "$nw" --config "$cfg" --plugin-dir build/plugins 2>/tmp/nw-bench.log &
  nw_pid=$!
  for _ in $(seq 50); do grep -q ' running: ' /tmp/nw-bench.log && break; sleep 0.1; done
  t0=$(awk '{print $14+$15}' /proc/$nw_pid/stat)
  traced+=("$(measure)")
  t1=$(awk '{print $14+$15}' /proc/$nw_pid/stat)
  rss=$(awk '/VmHWM/ {print $2}' /proc/$nw_pid/status)
  kill -TERM "$nw_pid"; wait "$nw_pid" || true; nw_pid=
  cpu_ms[$i]=$(( (t1 - t0) * 1000 / $(getconf CLK_TCK) ))
  rss_kb[$i]=$rss
  printf 'run %d: baseline %s Gbit/s, with netwatcher %s Gbit/s, netwatcher CPU %d ms in %ss, peak RSS %d KiB\n' \
    "$i" "${base[-1]}" "${traced[-1]}" "${cpu_ms[$i]}" "$seconds" "$rss"
done
rm -f "$cfg"
b=$(printf '%s\n' "${base[@]}" | median)
t=$(printf '%s\n' "${traced[@]}" | median)
echo
printf '%-34s %s\n' "median baseline (Gbit/s)" "$b"
printf '%-34s %s\n' "median with netwatcher (Gbit/s)" "$t"
printf '%-34s %s\n' "ratio (with / without)" "$(awk -v b="$b" -v t="$t" 'BEGIN {printf "%.4f", t/b}')"
printf '%-34s %s\n' "netwatcher CPU per run (ms)" "$(printf '%s ' "${cpu_ms[@]}")"
printf '%-34s %s\n' "netwatcher peak RSS (KiB)" "$(printf '%s ' "${rss_kb[@]}")"
