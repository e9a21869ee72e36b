#!/usr/bin/env bash
# HTTP/2 under load: h2load (cleartext h2c, prior knowledge) sends a fixed
# number of requests as concurrent streams on a few connections to nghttpd
# across a veth pair, once without netwatcher and once with the http plugin.
# Prints requests/s both ways and their ratio, the exchanges netwatcher
# counted on each side against the requests h2load completed (equal), what
# the decoder lost (nothing: bodies past the capture are followed by the
# kernel's frame walk), and the agent's CPU per exchange.
# Run as root after scripts/setup.sh.
# Usage: bench/l7_h2.sh [requests] [connections] [streams per connection] [body bytes]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
requests=${1:-200000}
connections=${2:-4}
streams=${3:-10}
body_bytes=${4:-3}
tree=${NETWATCHER_TREE:-build}
work=$(mktemp -d)
prom_port=41442
h2_port=41443

cleanup() {
  if [[ -n ${nw_pid:-} ]] && kill "$nw_pid" 2>/dev/null; then wait "$nw_pid" 2>/dev/null || true; fi
  if [[ -n ${server_pid:-} ]]; then kill "$server_pid" 2>/dev/null || true; fi
  remove_veth_pair nwt-h2-b
  rm -rf "$work"
}
trap cleanup EXIT
make_veth_pair nwt-h2-b 10.79.5

mkdir -p "$work/www"
head -c "$body_bytes" /dev/zero | tr '\0' 'b' >"$work/www/hello"
ip netns exec nwt-h2-b-b nghttpd --no-tls -a 10.79.5.2 -d "$work/www" "$h2_port" \
  >"$work/nghttpd.log" 2>&1 &
server_pid=$!
url="http://10.79.5.2:$h2_port/hello"
for _ in $(seq 50); do
  ip netns exec nwt-h2-b-a curl -s --http2-prior-knowledge -o /dev/null "$url" && break
  sleep 0.1
done

# "requests/s succeeded" from h2load's summary.
bench() {
  ip netns exec nwt-h2-b-a h2load -n "$requests" -c "$connections" -m "$streams" -t 1 "$url" |
    awk '/^finished in/ {gsub(",", ""); r = $4} /^requests:/ {s = $8} END {print s, r}'
}

without=$(bench)

cat >"$work/nw.toml" <<TOML
[netwatcher]
snapshot_interval = 1.0
[plugins.http]
enabled = true
events = false
[[sinks]]
type = "prometheus"
listen = "127.0.0.1:$prom_port"
TOML
"$tree/netwatcher" --config "$work/nw.toml" --plugin-dir "$tree/plugins" 2>"$work/nw.log" &
nw_pid=$!
for _ in $(seq 100); do grep -q ' running: ' "$work/nw.log" && break; sleep 0.1; done
ticks_before=$(cpu_ticks "$nw_pid")
with=$(bench)
sleep 2 # the last exchanges: the poller reads within a poll_interval
ticks_after=$(cpu_ticks "$nw_pid")
metrics=$(curl -s "127.0.0.1:$prom_port/metrics")
kill "$nw_pid"
wait "$nw_pid" 2>/dev/null || true
nw_pid=

counted() {
  echo "$metrics" | awk -v side="$1" '/^netwatcher_http_requests_total\{/ && $0 ~ "side=\""side"\"" {s += $2} END {printf "%d", s}'
}
parse_error() {
  echo "$metrics" | awk -v k="$1" '/^netwatcher_http_parse_errors_total\{/ && $0 ~ "kind=\""k"\"" {s += $2} END {printf "%d", s}'
}
hz=$(getconf CLK_TCK)
done_requests=$(echo "$with" | awk '{print $1}')
echo "h2load: $requests requests of $body_bytes bytes, $connections connections x $streams streams, 1 thread, h2c to nghttpd $(nghttpd --version | awk '{print $2}')"
printf '%-44s %s\n' \
  "requests/s without / with netwatcher" "$(echo "$without" | awk '{print $2}') / $(echo "$with" | awk '{print $2}')"
awk -v a="$(echo "$without" | awk '{print $2}')" -v b="$(echo "$with" | awk '{print $2}')" \
  'BEGIN {printf "%-44s %.3f\n", "requests/s ratio (with / without)", b / a}'
printf '%-44s %s\n' \
  "succeeded (h2load) / client / server counted" "$done_requests / $(counted client) / $(counted server)" \
  "h2 lost sync / table lost / lost streams" "$(parse_error h2_lost_sync) / $(parse_error h2_table_lost) / $(parse_error h2_lost_stream)"
awk -v t="$((ticks_after - ticks_before))" -v hz="$hz" -v q="$done_requests" \
  'BEGIN {printf "%-44s %.2f s, %.2f us per request (both sides)\n", "agent CPU", t / hz, 1e6 * t / hz / q}'
