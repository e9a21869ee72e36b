# Shared by the bench/ scripts: a veth pair between namespaces nwb-a
# (10.78.0.1) and nwb-b (10.78.0.2). Source it, then call make_veth_pair;
# remove_veth_pair undoes it (also safe when nothing exists). Also:
#   median          median of the numbers on standard input, one per line
#   cpu_ticks PID   user + system clock ticks of a process so far
remove_veth_pair() {
  ip netns del nwb-a 2>/dev/null || true
  ip netns del nwb-b 2>/dev/null || true
}

make_veth_pair() {
  remove_veth_pair
  ip netns add nwb-a
  ip netns add nwb-b
  ip link add nwb-a0 netns nwb-a type veth peer name nwb-b0 netns nwb-b
  ip -n nwb-a addr add 10.78.0.1/24 dev nwb-a0
  ip -n nwb-b addr add 10.78.0.2/24 dev nwb-b0
  for ns in nwb-a nwb-b; do ip -n $ns link set lo up; done
  ip -n nwb-a link set nwb-a0 up
  ip -n nwb-b link set nwb-b0 up
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
