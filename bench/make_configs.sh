# shellcheck shell=bash
# Sourced by bench/ scripts: writes the benchmark configurations derived from
# the shipped netwatcher.toml, without its stdout table (a terminal would be
# the bottleneck), with Prometheus on $port and JSON Lines to $json_out.
#   config_default FILE   netwatcher.toml as shipped (tcp + drop)
#   config_all FILE       every plugin, every per-packet event, no rate limits,
#                         netfilter in every namespace (the anomaly detector,
#                         a host feature, stays off)
config_sinks() {
  # shellcheck disable=SC2154  # $port is the sourcing script's
  printf '[[sinks]]\ntype = "prometheus"\nlisten = "127.0.0.1:%d"\n' "$port"
  printf '[[sinks]]\ntype = "json"\npath = "%s"\nmax_size = 0\n' "${json_out:-/dev/null}"
}

config_default() {
  sed '/^\[\[sinks\]\]$/,$d' netwatcher.toml >"$1"
  config_sinks >>"$1"
}

config_all() {
  sed '/^\[\[sinks\]\]$/,$d' netwatcher.toml |
    sed -E 's/^enabled = false/enabled = true/;
            s/^(states|errors|retrans|extra|layer_time|layer_events) = false/\1 = true/;
            s/^events = false/events = true/;
            s/^max_events_per_second = [0-9]+/max_events_per_second = 0/;
            s/^namespaces = \["self"\]/namespaces = ["*"]/' |
    sed '/^\[anomaly\]/,/^\[/ s/^enabled = true/enabled = false/' >"$1"
  config_sinks >>"$1"
}
