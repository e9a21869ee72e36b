#!/usr/bin/env bash
# Kernel cost of each netwatcher BPF program under TCP load: BPF run-time
# statistics (kernel.bpf_stats_enabled) while iperf3 sends small writes over a
# veth pair, with the default netwatcher.toml plus tcp layer_time = true.
# Prints runs and ns per run for every program that ran. Run as root after
# scripts/setup.sh. Usage: bench/tcp_program_cost.sh [seconds] [write size]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
seconds=${1:-4}
write=${2:-1000}
cfg=$(mktemp --suffix=.toml)
stats=$(mktemp)
was=$(sysctl -n kernel.bpf_stats_enabled)

cleanup() {
  if [[ -n ${nw_pid:-} ]] && kill "$nw_pid" 2>/dev/null; then wait "$nw_pid" 2>/dev/null || true; fi
  sysctl -qw kernel.bpf_stats_enabled="$was"
  remove_veth_pair
  rm -f "$cfg" "$stats"
}
trap cleanup EXIT
make_veth_pair
ip netns exec nwb-b iperf3 -s -1 >/dev/null 2>&1 &

sed '/^\[\[sinks\]\]$/,$d' netwatcher.toml >"$cfg"
sed -i 's/^layer_time = false/layer_time = true/' "$cfg"
printf '[[sinks]]\ntype = "json"\npath = "/dev/null"\n' >>"$cfg"
sysctl -qw kernel.bpf_stats_enabled=1
build/netwatcher --config "$cfg" --plugin-dir build/plugins 2>/tmp/nw-cost.log &
nw_pid=$!
for _ in $(seq 50); do grep -q ' running: ' /tmp/nw-cost.log && break; sleep 0.1; done
ip netns exec nwb-a iperf3 -c 10.78.0.2 -t "$seconds" -l "$write" >/dev/null
bpftool prog show -j >"$stats"
python3 - "$stats" <<'EOF'
import json, sys
programs = [p for p in json.load(open(sys.argv[1])) if p.get("run_cnt")]
print(f"{'program':<20} {'runs':>10} {'ns/run':>8}")
for p in sorted(programs, key=lambda p: -p["run_cnt"]):
    print(f"{p['name']:<20} {p['run_cnt']:>10} {p['run_time_ns'] / p['run_cnt']:>8.0f}")
EOF
