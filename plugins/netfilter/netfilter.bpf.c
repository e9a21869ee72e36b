// netfilter: time spent in each netfilter hook, measured by two programs per
// hook, one at the first and one at the last priority. They always accept.
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "netfilter.h"
#include "netwatcher/bpf/skb.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define NW_NF_ACCEPT 1
#define NW_NFPROTO_IPV4 2
#define NW_NFPROTO_IPV6 10
#define NW_HOOK_PRE_ROUTING 0
#define NW_HOOK_LOCAL_IN 1
#define NW_HOOK_FORWARD 2
#define NW_HOOK_LOCAL_OUT 3
#define NW_HOOK_POST_ROUTING 4

const volatile struct nf_config nf_cfg = {};

/* A packet between the first and the last program of a hook, by skb address.
 * `seen` remembers the hooks the packet passed, to tell forwarded from local
 * traffic at POST_ROUTING. LRU: a packet a rule drops never reaches the last
 * program and its entry ages out. */
struct nf_inflight {
  __u64 enter_ns;
  __u8 hook;
  __u8 family;
  __u8 seen;
  __u8 active;
  __u32 pad;
};

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u64);
  __type(value, struct nf_inflight);
} nf_inflight SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, NF_FAMILIES* NF_HOOKS);
  __type(key, __u32);
  __type(value, struct nf_hook_stats);
} nf_stats SEC(".maps");

static __always_inline int family_index(__u8 pf) {
  return pf == NW_NFPROTO_IPV4 ? 0 : pf == NW_NFPROTO_IPV6 ? 1 : -1;
}

SEC("netfilter")
int nf_first(struct bpf_nf_ctx* ctx) {
  const struct nf_hook_state* state = ctx->state;
  __u8 hook = BPF_CORE_READ(state, hook), pf = BPF_CORE_READ(state, pf);
  int fam = family_index(pf);
  if (fam < 0 || hook >= NF_HOOKS) return NW_NF_ACCEPT;
  __u32 index = NF_INDEX(fam, hook);
  struct nf_hook_stats* stats = bpf_map_lookup_elem(&nf_stats, &index);
  if (stats) stats->entered += 1;

  __u64 skb = (__u64)ctx->skb;
  struct nf_inflight fresh = {};
  struct nf_inflight* entry = bpf_map_lookup_elem(&nf_inflight, &skb);
  /* A packet starts its way at PRE_ROUTING or LOCAL_OUT; anything else
   * found under this address is a freed skb's leftover. */
  bool starts = hook == NW_HOOK_PRE_ROUTING || hook == NW_HOOK_LOCAL_OUT;
  /* A leftover is reset in place rather than replaced through the map: it is
   * a packet that a rule stopped (counted as stopped) or that left through a
   * hook not linked, not an entry pushed out for want of room. */
  if (entry && (starts || entry->family != pf)) *entry = fresh;
  bool inserting = !entry;
  if (inserting) entry = &fresh;
  entry->enter_ns = bpf_ktime_get_ns();
  entry->hook = hook;
  entry->family = pf;
  entry->seen |= 1 << hook;
  entry->active = 1;
  if (inserting) nw_table_insert(&nf_inflight, NF_TABLE_PACKETS, &skb, &fresh, BPF_NOEXIST);
  return NW_NF_ACCEPT;
}

static __always_inline __u8 path_of(__u8 hook, __u8 seen) {
  switch (hook) {
    case NW_HOOK_PRE_ROUTING:
      return NF_PATH_RECEIVE;
    case NW_HOOK_LOCAL_IN:
      return NF_PATH_LOCAL_IN;
    case NW_HOOK_FORWARD:
      return NF_PATH_FORWARD;
    case NW_HOOK_LOCAL_OUT:
      return NF_PATH_LOCAL_OUT;
    default:
      return (seen & (1 << NW_HOOK_FORWARD)) ? NF_PATH_FORWARD : NF_PATH_LOCAL_OUT;
  }
}

SEC("netfilter")
int nf_last(struct bpf_nf_ctx* ctx) {
  __u64 now = bpf_ktime_get_ns();
  const struct nf_hook_state* state = ctx->state;
  __u8 hook = BPF_CORE_READ(state, hook), pf = BPF_CORE_READ(state, pf);
  int fam = family_index(pf);
  if (fam < 0 || hook >= NF_HOOKS) return NW_NF_ACCEPT;
  struct sk_buff* skb = ctx->skb;
  __u64 key = (__u64)skb;
  struct nf_inflight* entry = bpf_map_lookup_elem(&nf_inflight, &key);
  if (!entry || !entry->active || entry->hook != hook || entry->family != pf) return NW_NF_ACCEPT;
  entry->active = 0;
  __u64 delta = now - entry->enter_ns;
  __u8 seen = entry->seen;
  /* The packet's way through netfilter ends here: delivered, or handed to
   * the device. */
  if (hook == NW_HOOK_LOCAL_IN || hook == NW_HOOK_POST_ROUTING)
    nw_table_remove(&nf_inflight, NF_TABLE_PACKETS, &key);
  __u32 index = NF_INDEX(fam, hook);
  struct nf_hook_stats* stats = bpf_map_lookup_elem(&nf_stats, &index);
  if (stats) {
    stats->passed += 1;
    stats->time_ns += delta;
    nw_log2_slot_add(stats->slots, delta);
  }
  if (!nf_cfg.events) return NW_NF_ACCEPT;

  struct nw_packet packet;
  __u8 parsed = nw_read_skb_packet(skb, pf == NW_NFPROTO_IPV4 ? AF_INET : AF_INET6, &packet);
  if (!nw_packet_selected(&packet.tuple)) return NW_NF_ACCEPT;
  if (!nw_rate_allow(nf_cfg.max_events_per_second)) return NW_NF_ACCEPT;
  struct nf_record* rec = nw_reserve(sizeof(*rec), NF_RECORD_HOOK);
  if (!rec) return NW_NF_ACCEPT;
  rec->packet = packet;
  rec->hook_ns = delta;
  rec->netns = BPF_CORE_READ(state, net, ns.inum);
  struct net_device* in = BPF_CORE_READ(state, in);
  struct net_device* out = BPF_CORE_READ(state, out);
  rec->in_ifindex = in ? BPF_CORE_READ(in, ifindex) : 0;
  rec->out_ifindex = out ? BPF_CORE_READ(out, ifindex) : 0;
  rec->hook = hook;
  rec->family = pf;
  rec->path = path_of(hook, seen);
  rec->parsed = parsed;
  nw_submit(rec);
  return NW_NF_ACCEPT;
}
