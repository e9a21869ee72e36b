#!/usr/bin/env bash
# Memory and start-up: for the shipped config and for every plugin with every
# per-packet event on (bench/make_configs.sh), several runs each:
#   start-up   launch → "running" logged (every program attached), wall clock
#   exit       SIGTERM → process gone (links destroyed, sinks flushed)
#   RSS        resident memory after 3 s with light traffic, and its peak
#   BPF maps   memlock of every map the process holds (from /proc/PID/fdinfo,
#              what bpftool map show reports as bytes_memlock), and of its
#              programs
# Prints the median of each. Run as root after scripts/setup.sh.
# Usage: bench/footprint.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
# shellcheck source=bench/make_configs.sh
source bench/make_configs.sh
runs=${1:-5}
nw=build/netwatcher
port=41422
log=/tmp/nw-footprint.log
declare -A cfgs=()
cleanup() {
  if [[ -n ${nw_pid:-} ]] && kill "$nw_pid" 2>/dev/null; then wait "$nw_pid" 2>/dev/null || true; fi
  for f in "${cfgs[@]}"; do rm -f "$f"; done
}
trap cleanup EXIT
for mode in default all; do
  cfgs[$mode]=$(mktemp --suffix=.toml)
  "config_$mode" "${cfgs[$mode]}"
done

ms() { date +%s%3N; }

printf '%-8s %12s %10s %10s %14s %14s %14s\n' config "start-up ms" "exit ms" "RSS KiB" "peak RSS KiB" \
  "BPF maps KiB" "BPF progs KiB"
for mode in default all; do
  declare -a up=() down=() rss=() hwm=() maps=() progs=()
  for ((i = 0; i < runs; i++)); do
    : >"$log"
    t0=$(ms)
    "$nw" --config "${cfgs[$mode]}" --plugin-dir build/plugins 2>"$log" &
    nw_pid=$!
    until grep -q ' running: ' "$log"; do
      kill -0 "$nw_pid" 2>/dev/null || { cat "$log"; exit 1; }
      sleep 0.005
    done
    up+=($(($(ms) - t0)))
    curl -s -o /dev/null "http://127.0.0.1:$port/metrics"  # a scrape, a little traffic
    ping -c 3 -i 0.2 127.0.0.1 >/dev/null
    sleep 2
    rss+=("$(awk '/VmRSS/ {print $2}' /proc/$nw_pid/status)")
    hwm+=("$(awk '/VmHWM/ {print $2}' /proc/$nw_pid/status)")
    maps+=("$(memlock "$nw_pid" map_id)")
    progs+=("$(memlock "$nw_pid" prog_id)")
    t0=$(ms)
    kill -TERM "$nw_pid"
    wait "$nw_pid" || true
    nw_pid=
    down+=($(($(ms) - t0)))
  done
  printf '%-8s %12s %10s %10s %14s %14s %14s\n' "$mode" \
    "$(printf '%s\n' "${up[@]}" | median)" "$(printf '%s\n' "${down[@]}" | median)" \
    "$(printf '%s\n' "${rss[@]}" | median)" "$(printf '%s\n' "${hwm[@]}" | sort -n | tail -1)" \
    "$(printf '%s\n' "${maps[@]}" | median)" "$(printf '%s\n' "${progs[@]}" | median)"
  unset up down rss hwm maps progs
done
