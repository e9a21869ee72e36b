# shellcheck shell=bash
# Shared by the bench/ scripts: a veth pair between two namespaces, by default
# nwb-a (10.78.0.1) and nwb-b (10.78.0.2). Source it, then call
# make_veth_pair [PREFIX [NET]] (namespaces PREFIX-a and PREFIX-b, devices
# PREFIX-a0 and PREFIX-b0, addresses NET.1 and NET.2/24); remove_veth_pair
# [PREFIX] undoes it (also safe when nothing exists). Also:
#   median          median of the numbers on standard input, one per line
#   cpu_ticks PID   user + system clock ticks of a process so far
#   memlock PID KIND  KiB of memlock of the process's BPF fds of one kind
#                   (map_id or prog_id), what bpftool reports as bytes_memlock
# Benches share namespaces, ports and netfilter priorities with the
# integration tests of every checkout on this machine: like them, a script
# that sources this file waits for the machine-wide lock and holds it to exit.
exec {nw_machine_lock}>/run/netwatcher-integration.lock
flock "$nw_machine_lock"

# shellcheck disable=SC2120  # the prefix is optional
remove_veth_pair() {
  local prefix=${1:-nwb}
  ip netns del "$prefix-a" 2>/dev/null || true
  ip netns del "$prefix-b" 2>/dev/null || true
}

# shellcheck disable=SC2120  # the prefix is optional
make_veth_pair() {
  local prefix=${1:-nwb} net=${2:-10.78.0}
  remove_veth_pair "$prefix"
  ip netns add "$prefix-a"
  ip netns add "$prefix-b"
  ip link add "$prefix-a0" netns "$prefix-a" type veth peer name "$prefix-b0" netns "$prefix-b"
  ip -n "$prefix-a" addr add "$net.1/24" dev "$prefix-a0"
  ip -n "$prefix-b" addr add "$net.2/24" dev "$prefix-b0"
  for ns in "$prefix-a" "$prefix-b"; do ip -n "$ns" link set lo up; done
  ip -n "$prefix-a" link set "$prefix-a0" up
  ip -n "$prefix-b" link set "$prefix-b0" up
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# Each map or program counted once, however many fds the process holds on it.
memlock() {
  for f in /proc/"$1"/fdinfo/*; do
    awk -v kind="$2" '$1 == kind":" {id = $2} $1 == "memlock:" {m = $2} END {if (id) print id, m}' "$f" 2>/dev/null
  done | sort -u | awk '{s += $2} END {printf "%d", s / 1024}'
}
