#!/usr/bin/env bash
# Kernel cost per packet of the L7 capture on bulk TCP that is no protocol
# (iperf3 over a veth pair), with one protocol plugin on and with two: the
# shared capture (plugin l7) must cost the same whatever the number of
# protocol plugins. BPF run-time statistics of the egress and ingress
# programs, median ns per run over RUNS runs of SECONDS s each.
# Run as root after scripts/setup.sh.
# Usage: bench/l7_cost.sh [seconds] [runs] [modes...]   (modes: http, http+dns, dns)
# NETWATCHER_TREE=<build dir> measures another build (e.g. an older commit's).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
seconds=${1:-5}
runs=${2:-3}
shift $(($# > 2 ? 2 : $#))
modes=("$@")
((${#modes[@]})) || modes=(http http+dns)
tree=${NETWATCHER_TREE:-build}
cfg=$(mktemp --suffix=.toml)
stats=$(mktemp)
log=$(mktemp)
was=$(sysctl -n kernel.bpf_stats_enabled)

cleanup() {
  if [[ -n ${nw_pid:-} ]] && kill "$nw_pid" 2>/dev/null; then wait "$nw_pid" 2>/dev/null || true; fi
  sysctl -qw kernel.bpf_stats_enabled="$was"
  remove_veth_pair
  rm -f "$cfg" "$stats" "$log"
}
trap cleanup EXIT
make_veth_pair
sysctl -qw kernel.bpf_stats_enabled=1

printf '%-10s %-14s %12s %8s %12s %8s\n' mode program runs ns/run "MB sent" "ns/KB"
for mode in "${modes[@]}"; do
  {
    printf '[netwatcher]\nsnapshot_interval = 1.0\n'
    for plugin in ${mode//+/ }; do printf '[plugins.%s]\nenabled = true\n' "$plugin"; done
    printf '[[sinks]]\ntype = "json"\npath = "/dev/null"\n'
  } >"$cfg"
  declare -A per_run=()
  for _ in $(seq "$runs"); do
    "$tree/netwatcher" --config "$cfg" --plugin-dir "$tree/plugins" 2>"$log" &
    nw_pid=$!
    for _ in $(seq 100); do grep -q ' running: ' "$log" && break; sleep 0.1; done
    grep -q ' running: ' "$log" || { cat "$log" >&2; exit 1; }
    ip netns exec nwb-b iperf3 -s -1 >/dev/null 2>&1 &
    sleep 0.3
    sent=$(ip netns exec nwb-a iperf3 -c 10.78.0.2 -t "$seconds" -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_sent"]["bytes"])')
    bpftool prog show -j >"$stats"
    kill "$nw_pid"
    wait "$nw_pid" 2>/dev/null || true
    nw_pid=
    while read -r name runs_n ns; do
      per_run[$name]+="$runs_n $ns $sent;"
    done < <(python3 - "$stats" <<'PY'
import json, sys
for p in json.load(open(sys.argv[1])):
    name = p.get("name", "")
    if p.get("type") == "cgroup_skb" and p.get("run_cnt") and name.endswith(("egress", "ingress")):
        print(name, p["run_cnt"], p["run_time_ns"] / p["run_cnt"])
PY
)
  done
  for name in "${!per_run[@]}"; do
    IFS=';' read -r -a samples <<<"${per_run[$name]}"
    ns=$(for s in "${samples[@]}"; do [[ -n $s ]] && echo "$s" | awk '{print $2}'; done | median)
    n=$(for s in "${samples[@]}"; do [[ -n $s ]] && echo "$s" | awk '{print $1}'; done | median)
    mb=$(for s in "${samples[@]}"; do [[ -n $s ]] && echo "$s" | awk '{print $3 / 1e6}'; done | median)
    per_kb=$(for s in "${samples[@]}"; do [[ -n $s ]] && echo "$s" | awk '{print $1 * $2 / ($3 / 1e3)}'; done | median)
    printf '%-10s %-14s %12.0f %8.0f %12.0f %8.2f\n' "$mode" "$name" "$n" "$ns" "$mb" "$per_kb"
  done
  unset per_run
done
