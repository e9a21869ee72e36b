#!/usr/bin/env bash
# netwatcher at a busy server's scale: N concurrent loopback connections (2N
# sockets, both ends tracked), then as many opens and closes as one client
# manages for CHURN seconds on top of them. Prints, per N:
#   made / seen   sockets opened vs netwatcher_tcp_connections_opened_total
#                 (both ends), how many of them closed by the end
#                 (netwatcher_tcp_connections_closed_total: all but the
#                 last scrape's two), and how many the table refused
#                 (netwatcher_table_full_total{tcp,connections})
#   tracked       netwatcher_table_entries{tcp,connections} while held
#   us/conn       agent CPU per churned connection (two sockets opened and
#                 closed), from /proc/PID/stat
#   snapshot_ms   netwatcher_snapshot_duration_seconds{tcp} while held
#   rss_MiB       agent RSS while held, and its peak (VmHWM)
#   maps_MiB      memlock of the agent's BPF maps while held
#   scrape_ms     one /metrics scrape while held
# netwatcher runs netwatcher.toml as shipped (tcp, drop) with a JSON sink to
# /dev/null and a Prometheus endpoint in place of the stdout table.
#
# Usage: bench/scale.sh [N ...] [-- CHURN_SECONDS]   (default: 1000 10000 100000 -- 10)
# TCP_KEYS="per_connection_metrics = true" adds keys to [plugins.tcp].
# Run as root after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

counts=()
while (($#)) && [[ $1 != -- ]]; do
  counts+=("$1")
  shift
done
[[ ${1:-} == -- ]] && shift
churn=${1:-10}
((${#counts[@]})) || counts=(1000 10000 100000)
prom=41476
first_port=41440  # one per peer pair, up to 41459
work=$(mktemp -d)
old_range=$(sysctl -n net.ipv4.ip_local_port_range | tr '\t' ' ')

cleanup() {
  for pid in ${client_pids[@]+"${client_pids[@]}"} ${server_pids[@]+"${server_pids[@]}"}; do
    kill "$pid" 2>/dev/null || true
  done
  [[ -n ${nw_pid:-} ]] && kill "$nw_pid" 2>/dev/null && wait "$nw_pid" 2>/dev/null || true
  sysctl -qw net.ipv4.ip_local_port_range="$old_range"
  rm -rf "$work"
}
trap cleanup EXIT

# Each peer process holds at most `per_process` connections: some machines
# cap the file limit (here the hard limit is 20000 and raising it needs
# CAP_SYS_RESOURCE), so N connections take ceil(N / per_process) server and
# client pairs, each pair on its own port.
ulimit -n "$(ulimit -Hn)"
per_process=$(($(ulimit -n) - 1000))
sysctl -qw net.ipv4.ip_local_port_range="10000 65000"

cfg=$work/nw.toml
sed '/^\[\[sinks\]\]$/,$d' netwatcher.toml >"$cfg"
# One "key = value" per line; a key netwatcher.toml sets already is replaced.
while IFS= read -r assignment; do
  [[ -z $assignment ]] && continue
  key=${assignment%% =*}
  if grep -q "^$key = " "$cfg"; then
    sed -i "s|^$key = [^#]*|$assignment |" "$cfg"
  else
    awk -v line="$assignment" '{print} $0 == "[plugins.tcp]" {print line}' "$cfg" >"$cfg.new"
    mv "$cfg.new" "$cfg"
  fi
done <<<"${TCP_KEYS:-}"
printf '[[sinks]]\ntype = "json"\npath = "/dev/null"\n' >>"$cfg"
printf '[[sinks]]\ntype = "prometheus"\nlisten = "127.0.0.1:%s"\n' "$prom" >>"$cfg"
interval=$(awk -F'[ =]+' '/^snapshot_interval/ {print $2}' "$cfg")

scrape() { curl -s --max-time 10 "http://127.0.0.1:$prom/metrics"; }
# Sum of one metric's samples whose labels contain every given label pair.
metric() {
  local text=$1 name=$2
  shift 2
  awk -v name="$name" -v want="$*" '
    { split($1, parts, "{") }
    parts[1] == name {
      ok = 1; n = split(want, w, " ")
      for (i = 1; i <= n; i++) if (index($1, w[i]) == 0) ok = 0
      if (ok) s += $NF
    }
    END { printf "%.6f", s }' <<<"$text"
}

printf '%8s %9s %9s %9s %8s %8s %8s %11s %9s %9s %9s %9s\n' N made seen closed refused tracked \
  us/conn \
  snapshot_ms rss_MiB peak_MiB maps_MiB scrape_ms
for n in "${counts[@]}"; do
  build/netwatcher --config "$cfg" >"$work/nw.log" 2>&1 &
  nw_pid=$!
  for _ in $(seq 100); do grep -q ' running: ' "$work/nw.log" && break; sleep 0.1; done
  pairs=$(((n + per_process - 1) / per_process))
  rm -f "$work"/ready.* "$work/go"
  server_pids=() client_pids=()
  for ((k = 0; k < pairs; k++)); do
    python3 bench/scale_peers.py server $((first_port + k)) &
    server_pids+=($!)
  done
  sleep 0.5
  for ((k = 0; k < pairs; k++)); do
    share=$(((n - k * per_process) < per_process ? n - k * per_process : per_process))
    python3 bench/scale_peers.py client $((first_port + k)) "$share" "$churn" $((k == 0)) \
      "$work/ready.$k" "$work/go" >"$work/client.$k.json" &
    client_pids+=($!)
  done
  for ((k = 0; k < pairs; k++)); do
    while [[ ! -e $work/ready.$k ]]; do
      kill -0 "${client_pids[k]}" 2>/dev/null || { echo "client $k failed" >&2; exit 1; }
      sleep 0.2
    done
  done
  # Two snapshots with every connection in the table.
  sleep "$(awk -v i="$interval" 'BEGIN {print 2 * i + 1}')"
  t0=$(date +%s.%N)
  held=$(scrape)
  t1=$(date +%s.%N)
  scrape_ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", (b - a) * 1000}')
  rss=$(awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$nw_pid/status")
  maps=$(memlock "$nw_pid" map_id | awk '{printf "%.1f", $1 / 1024}')
  opened_before=$(metric "$held" netwatcher_tcp_connections_opened_total)
  cpu0=$(cpu_ticks "$nw_pid")
  touch "$work/go"
  for pid in "${client_pids[@]}"; do wait "$pid"; done
  client_pids=()
  sleep "$(awk -v i="$interval" 'BEGIN {print i + 1}')"
  cpu1=$(cpu_ticks "$nw_pid")
  after=$(scrape)
  peak=$(awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$nw_pid/status")
  churned=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["churned"])' \
    "$work/client.0.json")
  hz=$(getconf CLK_TCK)
  us_per=$(awk -v c=$((cpu1 - cpu0)) -v hz="$hz" -v n="$churned" \
    'BEGIN {printf "%.1f", n ? c / hz * 1e6 / n : 0}')
  # Sockets: 2 per held connection, 2 per churned one, 2 per scrape.
  made=$((2 * n + 2 * churned + 4))
  seen=$(metric "$after" netwatcher_tcp_connections_opened_total | awk '{printf "%d", $1}')
  closed=$(metric "$after" netwatcher_tcp_connections_closed_total | awk '{printf "%d", $1}')
  refused=$(metric "$after" netwatcher_table_full_total 'plugin="tcp"' 'table="connections"' |
    awk '{printf "%d", $1}')
  tracked=$(metric "$held" netwatcher_table_entries 'plugin="tcp"' 'table="connections"' |
    awk '{printf "%d", $1}')
  snapshot_ms=$(metric "$held" netwatcher_snapshot_duration_seconds 'plugin="tcp"' |
    awk '{printf "%.1f", $1 * 1000}')
  : "${opened_before:?}"
  printf '%8d %9d %9d %9d %8d %8d %8s %11s %9s %9s %9s %9s\n' "$n" "$made" "$seen" "$closed" \
    "$refused" \
    "$tracked" "$us_per" "$snapshot_ms" "$rss" "$peak" "$maps" "$scrape_ms"
  for pid in "${server_pids[@]}"; do kill "$pid"; done
  for pid in "${server_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  server_pids=()
  kill "$nw_pid"
  wait "$nw_pid" 2>/dev/null || true
  nw_pid=
  grep -E "table '|skipped" "$work/nw.log" | sed 's/^/    /' || true
done
