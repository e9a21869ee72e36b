#!/usr/bin/env bash
# Soak: the shipped netwatcher.toml with every plugin on (each with its
# defaults; netfilter watching only the soak's own namespaces, so it never
# meets another netwatcher's programs), under mixed, rate-limited traffic
# between namespaces nwsoak-a (10.79.0.1) and nwsoak-b (10.79.0.2) over veth:
#   TCP bulk     iperf3 -b 200M, a new test every minute
#   TCP churn    ~100 short connections/s (tests/integration/tcp_peers.py)
#   UDP          iperf3 -u -b 10M (1000-byte datagrams)
#   ICMP         ping every 0.2 s
#   HTTP         python3 -m http.server, curl: 1 KiB, 64 KiB and a 404, ~10 rounds/s
#   drops        TCP SYNs to a port an nft rule drops, UDP to a closed port
# The stdout table is replaced by a JSON Lines file (rotated at 64 MiB, two
# kept) and the Prometheus endpoint moves to $PORT.
#
# Every minute: agent RSS and its spread against the first minute, what the
# agent counts as lost (ring buffer full), suppressed (per-second limits) and
# dropped (sink queues) and its sink errors, all from its /metrics; the
# memlock of its BPF maps (/proc/PID/fdinfo), its open fds, its event pool,
# its CPU over the minute (utime + stime) and the events it produced. Then a
# summary line and the events per plugin. Exit status 1 when the agent died.
#
# Usage: bench/soak.sh MINUTES      (root, after scripts/setup.sh)
#   PORT=n     Prometheus port (default 41496)
#   KEEP=1     keep the work directory (config, logs, events)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
minutes=${1:?usage: bench/soak.sh MINUTES}
port=${PORT:-41496}
nw=build/netwatcher
ns_a=nwsoak-a ns_b=nwsoak-b b=10.79.0.2
work=$(mktemp -d /tmp/nw-soak.XXXXXX)
hz=$(getconf CLK_TCK)
jobs_pids=()
nw_pid=

# shellcheck disable=SC2317  # called by the traps
cleanup() {
  trap - EXIT INT TERM
  # Each traffic job leads its own process group (setsid): the whole group goes.
  for pid in "${jobs_pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${jobs_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n $nw_pid ]]; then
    kill -TERM "$nw_pid" 2>/dev/null || true
    wait "$nw_pid" 2>/dev/null || true
  fi
  remove_veth_pair nwsoak
  if [[ ${KEEP:-0} == 1 ]]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A background job in its own process group, so cleanup can end its children.
spawn() {
  setsid "$@" >>"$work/traffic.log" 2>&1 &
  jobs_pids+=($!)
}
in_a() { ip netns exec "$ns_a" "$@"; }
in_b() { ip netns exec "$ns_b" "$@"; }

make_veth_pair nwsoak 10.79.0
in_b nft -f - <<'EOF'
table inet nwsoak {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 9 drop
  }
}
EOF

# The shipped config: every [plugins.*] enabled, netfilter in our namespaces,
# the sinks replaced.
{
  sed '/^\[\[sinks\]\]$/,$d' netwatcher.toml |
    sed -E '/^\[plugins\./,$ s/^enabled = false/enabled = true/' |
    sed -E "/^\[plugins\.netfilter\]/,/^\[/ s/^namespaces = \[\"\*\"\]/namespaces = [\"$ns_a\", \"$ns_b\"]/"
  printf '[[sinks]]\ntype = "prometheus"\nlisten = "127.0.0.1:%d"\n' "$port"
  printf '[[sinks]]\ntype = "json"\npath = "%s"\nmax_size = 67108864\nmax_files = 2\n' "$work/events.jsonl"
} >"$work/netwatcher.toml"
grep -q "namespaces = \[\"$ns_a\", \"$ns_b\"\]" "$work/netwatcher.toml" ||
  { echo "could not limit netfilter to $ns_a and $ns_b" >&2; exit 1; }

# Servers in nwsoak-b.
mkdir -p "$work/www"
head -c 1024 /dev/urandom >"$work/www/small.bin"
head -c 65536 /dev/urandom >"$work/www/big.bin"
spawn ip netns exec "$ns_b" iperf3 -s -p 5201
spawn ip netns exec "$ns_b" iperf3 -s -p 5202
spawn ip netns exec "$ns_b" /usr/bin/python3 -m http.server 8080 --bind "$b" --directory "$work/www"
spawn ip netns exec "$ns_b" /usr/bin/python3 tests/integration/tcp_peers.py server \
  --pidfile "$work/peers.pid" --ready "$work/peers.ready" 5300
for _ in $(seq 100); do
  [[ -e $work/peers.ready ]] && in_a curl -s -o /dev/null "http://$b:8080/small.bin" && break
  sleep 0.1
done
[[ -e $work/peers.ready ]] || { echo "the soak's servers did not start" >&2; cat "$work/traffic.log" >&2; exit 1; }

"$nw" --config "$work/netwatcher.toml" --plugin-dir build/plugins 2>"$work/netwatcher.log" &
nw_pid=$!
until grep -q ' running: ' "$work/netwatcher.log"; do
  kill -0 "$nw_pid" 2>/dev/null || { cat "$work/netwatcher.log" >&2; exit 1; }
  sleep 0.1
done
grep -E ' (warn|error|critical) ' "$work/netwatcher.log" >&2 || true

# Traffic from nwsoak-a; every loop runs inside the namespace.
spawn ip netns exec "$ns_a" bash -c "while :; do iperf3 -c $b -p 5201 -t 60 -b 200M >/dev/null || sleep 1; done"
spawn ip netns exec "$ns_a" bash -c "while :; do iperf3 -c $b -p 5202 -u -b 10M -l 1000 -t 60 >/dev/null || sleep 1; done"
spawn ip netns exec "$ns_a" ping -q -i 0.2 "$b"
spawn ip netns exec "$ns_a" bash -c "while :; do
    curl -s -o /dev/null http://$b:8080/small.bin -o /dev/null http://$b:8080/big.bin \
      -o /dev/null http://$b:8080/missing
    sleep 0.1
  done"
spawn ip netns exec "$ns_a" bash -c "sizes=\$(printf '100 %.0s' \$(seq 50))
  while :; do /usr/bin/python3 tests/integration/tcp_peers.py client $b 5300 \$sizes >/dev/null; sleep 0.4; done"
# Dropped by the nft rule (SYN and its retransmits), and refused by no socket.
spawn ip netns exec "$ns_a" bash -c "while :; do
    timeout 0.3 bash -c 'exec 3<>/dev/tcp/$b/9' 2>/dev/null
    for i in 1 2 3 4 5 6 7 8 9 10; do echo x >/dev/udp/$b/9999; done
    sleep 0.1
  done"

# One scrape: "name value" for each sample, labels kept.
scrape() { curl -s --max-time 5 "http://127.0.0.1:$port/metrics" | grep -v '^#' || true; }
# Sum of every sample of a family in a scrape (on standard input).
sum_of() { awk -v n="$1" '{split($1, a, "{")} a[1] == n {s += $2} END {printf "%d", s}'; }

# Bytes both ways through nwsoak-a's end of the pair.
veth_bytes() { in_a cat /sys/class/net/"$ns_a"0/statistics/{rx,tx}_bytes | awk '{s += $1} END {printf "%.0f", s}'; }
bytes0=$(veth_bytes)

printf '%3s %9s %7s %10s %10s %10s %7s %9s %9s %5s %7s %7s %11s\n' min "RSS KiB" spread \
  lost suppressed dropped "sink err" "maps KiB" "progs KiB" fds pool "CPU %" events/s
t0=$(date +%s)
ticks0=$(cpu_ticks "$nw_pid")
events0=0
rss_first='' rss_min='' rss_max='' spread_max=0 cpu_sum=0
maps_min='' maps_max=''
for ((m = 1; m <= minutes; m++)); do
  now=$(date +%s)
  ((t0 + 60 * m > now)) && sleep $((t0 + 60 * m - now))
  if ! kill -0 "$nw_pid" 2>/dev/null; then
    echo "netwatcher died in minute $m" >&2
    tail -20 "$work/netwatcher.log" >&2
    exit 1
  fi
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$nw_pid/status")
  ticks=$(cpu_ticks "$nw_pid")
  maps=$(memlock "$nw_pid" map_id)
  progs=$(memlock "$nw_pid" prog_id)
  fds=$(find "/proc/$nw_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
  metrics=$(scrape)
  lost=$(sum_of netwatcher_events_lost_total <<<"$metrics")
  suppressed=$(sum_of netwatcher_events_suppressed_total <<<"$metrics")
  dropped=$(sum_of netwatcher_sink_dropped_total <<<"$metrics")
  errors=$(sum_of netwatcher_sink_errors_total <<<"$metrics")
  pool=$(sum_of netwatcher_event_pool_events <<<"$metrics")
  events=$(sum_of netwatcher_events_total <<<"$metrics")
  rss_first=${rss_first:-$rss}
  spread=$(awk -v r="$rss" -v f="$rss_first" 'BEGIN {printf "%+.1f", (r - f) * 100 / f}')
  spread_max=$(awk -v s="$spread" -v m="$spread_max" 'BEGIN {s = s < 0 ? -s : s; print (s > m ? s : m)}')
  cpu=$(awk -v d="$((ticks - ticks0))" -v hz="$hz" 'BEGIN {printf "%.1f", d * 100 / hz / 60}')
  cpu_sum=$(awk -v s="$cpu_sum" -v c="$cpu" 'BEGIN {print s + c}')
  rss_min=$((${rss_min:-$rss} < rss ? ${rss_min:-$rss} : rss))
  rss_max=$((${rss_max:-$rss} > rss ? ${rss_max:-$rss} : rss))
  maps_min=$((${maps_min:-$maps} < maps ? ${maps_min:-$maps} : maps))
  maps_max=$((${maps_max:-$maps} > maps ? ${maps_max:-$maps} : maps))
  printf '%3d %9d %6s%% %10d %10d %10d %7d %9d %9d %5d %7d %7s %11d\n' "$m" "$rss" "$spread" \
    "$lost" "$suppressed" "$dropped" "$errors" "$maps" "$progs" "$fds" "$pool" "$cpu" \
    $(((events - events0) / 60))
  ticks0=$ticks
  events0=$events
done

flat=$(awk -v s="$spread_max" 'BEGIN {print (s <= 5 ? "flat within 5%" : "NOT flat within 5%")}')
printf 'summary: %d min, agent alive; RSS %d..%d KiB (largest spread vs minute 1 %.1f%%, %s); ' \
  "$minutes" "$rss_min" "$rss_max" "$spread_max" "$flat"
printf 'lost %d, suppressed %d, dropped %d, sink errors %d; BPF maps %d..%d KiB; ' \
  "$lost" "$suppressed" "$dropped" "$errors" "$maps_min" "$maps_max"
bytes=$(($(veth_bytes) - bytes0))
printf 'agent CPU %.1f%% of a core on average; %d events; %.1f GB over the veth pair (%.0f Mbit/s)\n' \
  "$(awk -v s="$cpu_sum" -v n="$minutes" 'BEGIN {print s / n}')" "$events" \
  "$(awk -v b="$bytes" 'BEGIN {print b / 1e9}')" "$(awk -v b="$bytes" -v s="$((minutes * 60))" 'BEGIN {print b * 8 / s / 1e6}')"
echo "events by plugin and type:"
grep '^netwatcher_events_total{' <<<"$metrics" |
  sed -E 's/.*plugin="([^"]*)",event="([^"]*)"\} (.*)/  \1 \2 \3/' | sort
echo "suppressed by plugin:"
grep '^netwatcher_events_suppressed_total{' <<<"$metrics" | sed 's/^/  /'
grep -E ' (warn|error|critical) ' "$work/netwatcher.log" | tail -5 >&2 || true
