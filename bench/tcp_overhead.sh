#!/usr/bin/env bash
# TCP throughput (iperf3) without netwatcher and with it in four modes,
# several interleaved runs each:
#   default       netwatcher.toml as shipped (tcp + drop)
#   stats-off     the same with bpf_stats = "off" (default: "sampled")
#   stats-always  the same with bpf_stats = "always" (statistics on every run)
#   layer-time    + tcp layer_time = true (per-layer histograms, no events)
#   layer-events  + layer_events = true (one tcp_layer event per segment)
#   all           every plugin on, every per-packet event on, no rate limits
# over a veth pair between two namespaces, or with LINK=loopback over lo
# inside one namespace. Prints Gbit/s per run, the median ratio to no
# tracing, netwatcher's CPU time, peak RSS, events/s (all plugins) and lost
# events. Run as root after scripts/setup.sh.
# Usage: [LINK=veth|loopback] bench/tcp_overhead.sh [runs] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
# shellcheck source=bench/make_configs.sh
source bench/make_configs.sh
runs=${1:-5}
seconds=${2:-5}
nw=build/netwatcher
port=41421
modes=(default stats-off stats-always layer-time layer-events all)
link=${LINK:-veth}
server=10.78.0.2
[[ $link == loopback ]] && server=127.0.0.1

cleanup() {
  if [[ -n ${nw_pid:-} ]] && kill "$nw_pid" 2>/dev/null; then wait "$nw_pid" 2>/dev/null || true; fi
  if [[ -n ${srv_pid:-} ]]; then kill "$srv_pid" 2>/dev/null || true; fi
  remove_veth_pair
  for f in "${cfgs[@]}"; do rm -f "$f"; done
}
declare -A cfgs=()
trap cleanup EXIT
cleanup
make_veth_pair
if [[ $link == loopback ]]; then
  ip netns exec nwb-a iperf3 -s >/dev/null 2>&1 &
else
  ip netns exec nwb-b iperf3 -s >/dev/null 2>&1 &
fi
srv_pid=$!
sleep 1

measure() {  # prints Gbit/s of one run
  ip netns exec nwb-a iperf3 -c "$server" -t "$seconds" -J |
    python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}


# Sum of a netwatcher metric over the series whose labels contain $2.
metric() {
  curl -s "http://127.0.0.1:$port/metrics" |
    awk -v name="$1" -v labels="$2" '$1 ~ "^"name"({|$)" && index($1, labels) {s += $2} END {printf "%d", s}'
}

for mode in "${modes[@]}"; do
  cfg=$(mktemp --suffix=.toml)
  case $mode in
    all) config_all "$cfg" ;;
    *) config_default "$cfg" ;;
  esac
  case $mode in
    stats-off) sed -i 's/^bpf_stats = "sampled"/bpf_stats = "off"/' "$cfg" ;;
    stats-always) sed -i 's/^bpf_stats = "sampled"/bpf_stats = "always"/' "$cfg" ;;
    layer-time) sed -i 's/^layer_time = false/layer_time = true/' "$cfg" ;;
    layer-events) sed -i 's/^layer_time = false/layer_time = true/; s/^layer_events = false/layer_events = true/' "$cfg" ;;
  esac
  cfgs[$mode]=$cfg
done

declare -A gbps=() cpu=() rss=() rate=() lost=()
base=()
for ((i = 1; i <= runs; i++)); do
  base+=("$(measure)")
  line="run $i: none ${base[-1]}"
  for mode in "${modes[@]}"; do
    "$nw" --config "${cfgs[$mode]}" --plugin-dir build/plugins 2>/tmp/nw-bench.log &
    nw_pid=$!
    for _ in $(seq 50); do grep -q ' running: ' /tmp/nw-bench.log && break; sleep 0.1; done
    t0=$(cpu_ticks "$nw_pid")
    e0=$(metric netwatcher_events_total '')
    g=$(measure)
    e1=$(metric netwatcher_events_total '')
    l=$(metric netwatcher_events_lost_total '')
    t1=$(cpu_ticks "$nw_pid")
    r=$(awk '/VmHWM/ {print $2}' /proc/$nw_pid/status)
    kill -TERM "$nw_pid"; wait "$nw_pid" || true; nw_pid=
    gbps[$mode]+="$g "
    cpu[$mode]+="$(( (t1 - t0) * 1000 / $(getconf CLK_TCK) )) "
    rss[$mode]+="$r "
    rate[$mode]+="$(( (e1 - e0) / seconds )) "
    lost[$mode]+="$l "
    line+=", $mode $g"
  done
  echo "$line Gbit/s"
done

b=$(printf '%s\n' "${base[@]}" | median)
echo
echo "link: $link"
printf '%-14s %10s %8s %16s %14s %12s %10s\n' mode Gbit/s ratio "agent CPU ms/run" "peak RSS KiB" "events/s" lost
printf '%-14s %10s %8s\n' none "$b" 1.0000
for mode in "${modes[@]}"; do
  m=$(tr ' ' '\n' <<<"${gbps[$mode]}" | grep . | median)
  printf '%-14s %10s %8s %16s %14s %12s %10s\n' "$mode" "$m" \
    "$(awk -v b="$b" -v t="$m" 'BEGIN {printf "%.4f", t/b}')" \
    "$(tr ' ' '\n' <<<"${cpu[$mode]}" | grep . | median)" \
    "$(tr ' ' '\n' <<<"${rss[$mode]}" | grep . | sort -n | tail -1)" \
    "$(tr ' ' '\n' <<<"${rate[$mode]}" | grep . | median)" \
    "$(tr ' ' '\n' <<<"${lost[$mode]}" | grep . | sort -n | tail -1)"
done
