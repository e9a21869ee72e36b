#!/usr/bin/env bash
# Share of busy CPU spent inside netwatcher's own BPF programs, a figure this
# VM repeats where it cannot resolve a throughput ratio: run netwatcher with
# bpf_stats = "always", send an iperf3 TCP stream over veth between two
# namespaces, and divide the growth of netwatcher_bpf_program_run_seconds_total
# by the growth of busy time in /proc/stat (all CPUs, everything but idle and
# iowait). Also prints ns of BPF per byte transferred and, per program, runs,
# ns per run and share of the BPF time.
#
# Usage: bench/kernel_share.sh [MODE ...] [-- SECONDS RUNS]
#   MODE: default (netwatcher.toml as shipped), layer_time (default + tcp -t),
#         all (every plugin on). Without modes: all three. Defaults: 5 s, 3 runs
#         (the per-program table is from the median run).
# Run as root after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

modes=()
while (($#)) && [[ $1 != -- ]]; do
  modes+=("$1")
  shift
done
[[ ${1:-} == -- ]] && shift
seconds=${1:-5}
runs=${2:-3}
((${#modes[@]})) || modes=(default layer_time all)
port=41470
work=$(mktemp -d)

cleanup() {
  [[ -n ${nw_pid:-} ]] && kill "$nw_pid" 2>/dev/null && wait "$nw_pid" 2>/dev/null || true
  [[ -n ${server_pid:-} ]] && kill "$server_pid" 2>/dev/null || true
  remove_veth_pair
  rm -rf "$work"
}
trap cleanup EXIT

# busy and total jiffies of all CPUs
busy_jiffies() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat; }

config_for() {
  local mode=$1 cfg=$work/$1.toml
  sed '/^\[\[sinks\]\]$/,$d' netwatcher.toml >"$cfg"
  sed -i 's/^bpf_stats = .*/bpf_stats = "always"/' "$cfg"
  case $mode in
    default) ;;
    layer_time) sed -i 's/^layer_time = false/layer_time = true/' "$cfg" ;;
    all)
      # Every plugin section on (each shipped section has an `enabled` key).
      sed -i 's/^enabled = false/enabled = true/' "$cfg"
      sed -i 's/^namespaces = \["self"\]/namespaces = ["*"]/' "$cfg"
      ;;
    *)
      echo "unknown mode $mode (default, layer_time, all)" >&2
      exit 2
      ;;
  esac
  printf '[[sinks]]\ntype = "json"\npath = "/dev/null"\n' >>"$cfg"
  printf '[[sinks]]\ntype = "prometheus"\nlisten = "127.0.0.1:%s"\n' "$port" >>"$cfg"
  echo "$cfg"
}

# "plugin/program value" lines of one per-program metric of the agent, e.g.
# netwatcher_bpf_program_run_seconds_total.
program_metric() {
  curl -s "http://127.0.0.1:$port/metrics" |
    awk -v metric="$1" 'index($0, metric "{") == 1 {
      match($0, /plugin="[^"]*"/); p = substr($0, RSTART + 8, RLENGTH - 9)
      match($0, /program="[^"]*"/); q = substr($0, RSTART + 9, RLENGTH - 10)
      print p "/" q, $NF }'
}

make_veth_pair
hz=$(getconf CLK_TCK)
printf '%-11s %8s %10s %9s %s\n' mode "bpf_%" "ns/byte" GB "(median of $runs runs of ${seconds}s)"
for mode in "${modes[@]}"; do
  cfg=$(config_for "$mode")
  results=$work/$mode.results
  : >"$results"
  for run in $(seq "$runs"); do
    log=$work/$mode.$run.log
    build/netwatcher --config "$cfg" --plugin-dir build/plugins 2>"$log" &
    nw_pid=$!
    for _ in $(seq 100); do grep -q ' running: ' "$log" && break; sleep 0.1; done
    grep -q ' running: ' "$log" || { cat "$log" >&2; exit 1; }
    ip netns exec nwb-b iperf3 -s -1 >/dev/null 2>&1 &
    server_pid=$!
    sleep 0.3
    program_metric netwatcher_bpf_program_run_seconds_total >"$work/before"
    program_metric netwatcher_bpf_program_runs_total >"$work/runs_before"
    busy0=$(busy_jiffies)
    bytes=$(ip netns exec nwb-a iperf3 -c 10.78.0.2 -t "$seconds" -J |
      python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_sent"]["bytes"]))')
    busy1=$(busy_jiffies)
    program_metric netwatcher_bpf_program_run_seconds_total >"$work/after"
    program_metric netwatcher_bpf_program_runs_total >"$work/runs_after"
    kill "$nw_pid"
    wait "$nw_pid" 2>/dev/null || true
    nw_pid=
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    python3 - "$work" "$busy0" "$busy1" "$hz" "$bytes" "$run" >>"$results" <<'EOF'
import sys
work, busy0, busy1, hz, nbytes, run = sys.argv[1], *map(int, sys.argv[2:6]), sys.argv[6]
def read(name):
    out = {}
    for line in open(f"{work}/{name}"):
        key, value = line.split()
        out[key] = float(value)
    return out
before, after = read("before"), read("after")
runs0, runs1 = read("runs_before"), read("runs_after")
busy = (busy1 - busy0) / hz
bpf = sum(after[k] - before.get(k, 0) for k in after)
share = 100 * bpf / busy if busy else 0
per_program = []
for k in after:
    seconds = after[k] - before.get(k, 0)
    runs = runs1.get(k, 0) - runs0.get(k, 0)
    if runs > 0:
        per_program.append(f"{k}:{int(runs)}:{seconds * 1e9 / runs:.0f}:{100 * seconds / bpf if bpf else 0:.0f}")
print(f"{share:.3f} {bpf * 1e9 / nbytes:.4f} {nbytes / 1e9:.2f} {' '.join(per_program)}")
EOF
  done
  sort -n "$results" | awk -v n="$runs" 'NR == int((n + 1) / 2)' >"$work/$mode.median"
  read -r share nspb gb table <"$work/$mode.median"
  printf '%-11s %7.2f%% %10.4f %9s\n' "$mode" "$share" "$nspb" "$gb"
  echo "$table" | tr ' ' '\n' | sort -t: -k4 -nr |
    awk -F: 'NF == 4 { printf "    %-36s %10d runs %6d ns/run %4d%%\n", $1, $2, $3, $4 }'
done
