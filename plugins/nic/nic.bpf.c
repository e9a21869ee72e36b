// nic: bytes and packets per interface, queue and direction, counted where
// the driver hands packets to the stack (net:netif_receive_skb) and where the
// stack hands them to the driver (net:net_dev_start_xmit).
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "netwatcher/bpf/common.bpf.h"
#include "nic.h"

char LICENSE[] SEC("license") = "GPL";

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, NIC_MAX_QUEUES);
  __type(key, struct nic_key);
  __type(value, struct nic_counters);
} nic_traffic SEC(".maps");

/* Interface names, filled on a device's first packet: the host cannot look
 * up an ifindex in another network namespace without entering it. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, NIC_MAX_DEVICES);
  __type(key, struct nic_device);
  __type(value, char[NIC_IFNAMSIZ]);
} nic_names SEC(".maps");

static __always_inline void count(const struct sk_buff* skb, const struct net_device* dev,
                                  __u16 queue, __u8 direction, __u64 bytes) {
  if (!dev) return;
  struct nic_key key = {};
  key.netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
  key.ifindex = BPF_CORE_READ(dev, ifindex);
  key.queue = queue;
  key.direction = direction;
  const struct skb_shared_info* shinfo =
      (const void*)(BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, end));
  __u16 segments = BPF_CORE_READ(shinfo, gso_segs);
  __u64 packets = segments ? segments : 1;
  struct nic_counters* counters = bpf_map_lookup_elem(&nic_traffic, &key);
  if (counters) {
    counters->packets += packets;
    counters->bytes += bytes;
    return;
  }
  struct nic_counters first = {.packets = packets, .bytes = bytes};
  nw_table_insert(&nic_traffic, NIC_TABLE_QUEUES, &key, &first, BPF_NOEXIST);
  struct nic_device device = {.netns = key.netns, .ifindex = key.ifindex};
  char name[NIC_IFNAMSIZ] = {};
  bpf_probe_read_kernel_str(name, sizeof(name), dev->name);
  /* A device known already (seen on another queue) may have been renamed:
   * its entry is updated in place, which is no eviction. */
  char* known = bpf_map_lookup_elem(&nic_names, &device);
  if (known)
    __builtin_memcpy(known, name, NIC_IFNAMSIZ);
  else
    nw_table_insert(&nic_names, NIC_TABLE_DEVICES, &device, name, BPF_NOEXIST);
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(nic_receive, struct sk_buff* skb) {
  /* The driver already pulled the link-layer header: add it back. */
  __u64 bytes = BPF_CORE_READ(skb, len);
  __u16 mac = BPF_CORE_READ(skb, mac_header);
  unsigned char* head = BPF_CORE_READ(skb, head);
  unsigned char* data = BPF_CORE_READ(skb, data);
  if (mac != (__u16)~0U && data > head + mac) bytes += data - (head + mac);
  __u16 queue = BPF_CORE_READ(skb, queue_mapping);
  count(skb, BPF_CORE_READ(skb, dev), queue ? queue - 1 : 0, NIC_RX, bytes);
  return 0;
}

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(nic_transmit, const struct sk_buff* skb, const struct net_device* dev) {
  count(skb, dev, BPF_CORE_READ(skb, queue_mapping), NIC_TX, BPF_CORE_READ(skb, len));
  return 0;
}
