#!/usr/bin/env bash
# TLS plaintext capture under load: wrk (HTTP/1.1 keep-alive over TLS) at its
# full rate against nginx serving HTTPS across a veth pair, once without
# netwatcher and once with the http plugin and `[plugins.l7] tls = true`.
# Prints requests/s both ways and their ratio, the exchanges netwatcher counted
# on each side against the requests wrk completed (equal), the kernel time per
# SSL call probe (bpf_stats), and the agent's CPU per exchange.
# Run as root after scripts/setup.sh.
# Usage: bench/l7_tls.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
seconds=${1:-10}
connections=${2:-20}
tree=${NETWATCHER_TREE:-build}
work=$(mktemp -d)
was=$(sysctl -n kernel.bpf_stats_enabled)
prom_port=41440
https_port=41441

cleanup() {
  if [[ -n ${nw_pid:-} ]] && kill "$nw_pid" 2>/dev/null; then wait "$nw_pid" 2>/dev/null || true; fi
  if [[ -n ${nginx_pid:-} ]]; then kill "$nginx_pid" 2>/dev/null || true; fi
  remove_veth_pair nwt-tls-b
  sysctl -qw kernel.bpf_stats_enabled="$was"
  rm -rf "$work"
}
trap cleanup EXIT
sysctl -qw kernel.bpf_stats_enabled=1
make_veth_pair nwt-tls-b 10.79.4

mkdir -p "$work/www" "$work/tmp"
printf 'hi\n' >"$work/www/hello"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=bench -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat >"$work/nginx.conf" <<CONF
daemon off;
master_process off;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  keepalive_requests 1000000;
  server {
    listen 10.79.4.2:$https_port ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    root $work/www;
  }
}
CONF
ip netns exec nwt-tls-b-b nginx -c "$work/nginx.conf" >"$work/nginx.log" 2>&1 &
nginx_pid=$!
url="https://10.79.4.2:$https_port/hello"
for _ in $(seq 50); do ip netns exec nwt-tls-b-a curl -sk -o /dev/null "$url" && break; sleep 0.1; done

bench() {
  ip netns exec nwt-tls-b-a wrk -t 1 -c "$connections" -d "${seconds}s" "$url" 2>&1 |
    awk '/requests in/ {n = $1} /Requests\/sec/ {r = $2} END {print n, r}'
}

without=$(bench)

cat >"$work/nw.toml" <<TOML
[netwatcher]
snapshot_interval = 1.0
[plugins.http]
enabled = true
events = false
[plugins.l7]
tls = true
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
bpftool prog show -j >"$work/progs.json"
kill "$nw_pid"
wait "$nw_pid" 2>/dev/null || true
nw_pid=

counted() {
  echo "$metrics" | awk -v side="$1" '/^netwatcher_http_requests_total\{/ && $0 ~ "side=\""side"\"" {s += $2} END {printf "%d", s}'
}
# bpftool shows the whole name from BTF, or its first 15 characters.
program_ns() {
  python3 - "$work/progs.json" "$1" <<'PY'
import json, sys
runs = ns = 0
for p in json.load(open(sys.argv[1])):
    if p.get("name") in (sys.argv[2], sys.argv[2][:15]):
        runs += p.get("run_cnt", 0)
        ns += p.get("run_time_ns", 0)
print(f"{ns / runs:.0f} ns x {runs}" if runs else "n/a")
PY
}
family() {
  echo "$metrics" | awk -v f="$1" '$1 ~ "^"f {s += $2} END {printf "%d", s}'
}
hz=$(getconf CLK_TCK)
requests=$(echo "$with" | awk '{print $1}')
echo "wrk: $connections connections, 1 thread, ${seconds} s, GET of 3 bytes over TLS (nginx $(nginx -v 2>&1 | awk -F/ '{print $2}'), $(openssl version | awk '{print $1, $2}'))"
printf '%-44s %s\n' \
  "requests/s without / with netwatcher" "$(echo "$without" | awk '{print $2}') / $(echo "$with" | awk '{print $2}')"
awk -v a="$(echo "$without" | awk '{print $2}')" -v b="$(echo "$with" | awk '{print $2}')" \
  'BEGIN {printf "%-44s %.3f\n", "requests/s ratio (with / without)", b / a}'
printf '%-44s %s\n' \
  "requests (wrk) / client / server counted" "$requests / $(counted client) / $(counted server)" \
  "unanswered (netwatcher)" "$(family netwatcher_http_requests_unanswered_total)" \
  "TLS calls without a socket (netwatcher)" "$(family netwatcher_l7_tls_unmatched_total)" \
  "l7_tls_call per run" "$(program_ns l7_tls_call)" \
  "l7_tls_read_done per run" "$(program_ns l7_tls_read_done)" \
  "l7_tls_write_done per run" "$(program_ns l7_tls_write_done)"
awk -v t="$((ticks_after - ticks_before))" -v hz="$hz" -v q="$requests" \
  'BEGIN {printf "%-44s %.2f s, %.2f us per request (both sides)\n", "agent CPU", t / hz, 1e6 * t / hz / q}'
