#!/usr/bin/env bash
# Pipeline capacity: how many events per second netwatcher carries from the
# kernel into the JSON sink without losing one, with the agent pinned to one
# core. The load generator (pinned to the other core) fires
# syscalls:sys_enter_getppid at a fixed rate; the bench-only `synthetic`
# plugin turns each call into BURST records shaped like a packet event
# (tuple, pid, comm, size, latency), which the host decodes, formats as JSON
# Lines and writes to a file on tmpfs (default config otherwise: 256 KiB ring
# buffer, 16384-event sink queue). Per rate it prints the events generated,
# written (lines in the file), lost in the kernel, dropped on the sink queue,
# agent CPU per event and in % of its core, and peak RSS.
# Run as root after scripts/setup.sh.
# Usage: [BURST=8] [OUT=file] [RING=bytes] [QUEUE=events] [WAKEUP=bytes]
#        bench/pipeline_capacity.sh [seconds] [rate ...]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
seconds=${1:-5}
shift || true
rates=("$@")
((${#rates[@]})) || rates=(250000 500000 1000000 1500000 2000000 3000000)
nw=build/netwatcher
loadgen=build/bench/netwatcher-loadgen
out=${OUT:-/dev/shm/nw-pipeline.jsonl}
start=/dev/shm/nw-pipeline.start
log=/tmp/nw-pipeline.log
cfg=$(mktemp --suffix=.toml)
burst=${BURST:-8}

# Only regular files: OUT may be /dev/null, which must never be removed.
remove_files() { for f; do [[ -f $f ]] && rm -f "$f"; done; true; }

cleanup() {
  if [[ -n ${nw_pid:-} ]] && kill "$nw_pid" 2>/dev/null; then wait "$nw_pid" 2>/dev/null || true; fi
  if [[ -n ${lg_pid:-} ]]; then kill "$lg_pid" 2>/dev/null || true; fi
  remove_files "$cfg" "$start" "$out" "$out".1
}
trap cleanup EXIT

cat >"$cfg" <<TOML
[netwatcher]
ring_buffer_size = ${RING:-262144}
sink_queue_size = ${QUEUE:-16384}
wakeup_bytes = ${WAKEUP:-65536}

[plugins.synthetic]
enabled = true
burst = $burst

[[sinks]]
type = "json"
path = "$out"
max_size = 4294967296
max_files = 1
TOML

clk=$(getconf CLK_TCK)
echo "burst $burst records per generator syscall; agent on CPU 0, generator on CPU 1"
printf '%10s %10s %10s %10s %10s %12s %10s %10s\n' rate/s generated written lost dropped \
  "agent ns/ev" "agent CPU%" "RSS KiB"
for rate in "${rates[@]}"; do
  remove_files "$start" "$out" "$out".1
  taskset -c 1 "$loadgen" "$((rate / burst))" "$seconds" "$start" >/tmp/nw-loadgen.out &
  lg_pid=$!
  taskset -c 0 "$nw" --config "$cfg" --plugin-dir build/bench-plugins --plugin-dir build/plugins \
    -p "$lg_pid" 2>"$log" &
  nw_pid=$!
  for _ in $(seq 100); do grep -q ' running: ' "$log" && break; sleep 0.05; done
  grep -q ' running: ' "$log" || { cat "$log"; exit 1; }
  t0=$(cpu_ticks "$nw_pid")
  w0=$(date +%s.%N)
  touch "$start"
  wait "$lg_pid"; lg_pid=
  sleep 0.5  # let the agent drain what is still in flight
  t1=$(cpu_ticks "$nw_pid")
  w1=$(date +%s.%N)
  rss=$(awk '/VmHWM/ {print $2}' /proc/$nw_pid/status)
  kill -TERM "$nw_pid"; wait "$nw_pid" || true; nw_pid=
  generated=$(awk -v b="$burst" '{print $1 * b}' /tmp/nw-loadgen.out)
  written=$(sed -n "s/.*sink 'json': \([0-9]*\) written.*/\1/p" "$log")
  if [[ -f $out ]]; then  # the file must hold exactly what the sink reported
    lines=$( { cat "$out"; [[ -f "$out.1" ]] && cat "$out.1"; true; } | wc -l)
    [[ $lines == "$written" ]] || echo "warning: $lines lines in $out, $written reported" >&2
  fi
  lost=$(sed -n "s/.*plugin 'synthetic': .* events, \([0-9]*\) lost.*/\1/p" "$log")
  dropped=$(sed -n "s/.*sink 'json': .* written, \([0-9]*\) dropped.*/\1/p" "$log")
  cpu_ms=$(( (t1 - t0) * 1000 / clk ))
  printf '%10s %10s %10s %10s %10s %12s %10s %10s\n' "$rate" "$generated" "$written" "$lost" \
    "$dropped" "$(awk -v ms="$cpu_ms" -v n="$written" 'BEGIN {printf "%.0f", n ? ms * 1e6 / n : 0}')" \
    "$(awk -v ms="$cpu_ms" -v a="$w0" -v b="$w1" 'BEGIN {printf "%.0f", ms / 10 / (b - a)}')" "$rss"
done
