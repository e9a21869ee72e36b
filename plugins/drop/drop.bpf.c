// drop: every skb freed with a drop reason (skb:kfree_skb).
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "drop.h"
#include "netwatcher/bpf/skb.bpf.h"

char LICENSE[] SEC("license") = "GPL";

const volatile struct drop_config drop_cfg = {};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, DROP_MAX_COUNT_KEYS);
  __type(key, struct drop_count_key);
  __type(value, __u64);
} drop_counts SEC(".maps");

/* Drops by location. When full, drop_location_overflow counts the rest. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, DROP_MAX_LOCATIONS);
  __type(key, __u64);
  __type(value, __u64);
} drop_locations SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} drop_location_overflow SEC(".maps");

/* Reserved memory is not zeroed and the record is too big for the stack. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct drop_record);
} drop_scratch SEC(".maps");

/* Housekeeping frees per drop_cfg.housekeeping entry. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, DROP_HOUSEKEEPING_MAX);
  __type(key, __u32);
  __type(value, __u64);
} drop_housekeeping_counts SEC(".maps");

/* Whether each CPU is serving a softirq, kept by the
 * irq:softirq_entry/exit hooks. A drop outside a softirq happens in the
 * context of the process whose pid bpf_get_current_pid_tgid() returns. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u32);
} serving_softirq SEC(".maps");

/* How a drop's context is told (enum drop_context), set by the plugin. */
const volatile __u8 drop_context = DROP_CONTEXT_NONE;
/* THREAD_SIZE of this kernel: a task's kernel stack, from task->stack up. */
const volatile __u64 drop_task_stack_bytes = 16384;
/* Set by the plugin once both softirq hooks are attached (DROP_CONTEXT_SOFTIRQ_HOOKS). */
volatile __u8 context_known = 0;

/* False when the map is full and the key is new. */
static __always_inline bool count(void* map, __u32 table, const void* key) {
  __u64* n = bpf_map_lookup_elem(map, key);
  if (n) {
    *n += 1;
    return true;
  }
  __u64 one = 1;
  if (nw_table_insert(map, table, key, &one, BPF_NOEXIST) == 0) return true;
  n = bpf_map_lookup_elem(map, key); /* another CPU added it meanwhile */
  if (!n) return false;
  *n += 1;
  return true;
}

static __always_inline __u32 skb_netns(const struct sk_buff* skb, const struct sock* sk) {
  struct net_device* dev = BPF_CORE_READ(skb, dev);
  if (dev) return BPF_CORE_READ(dev, nd_net.net, ns.inum);
  if (sk) return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
  return 0;
}

static __always_inline int handle_drop(void* ctx, struct sk_buff* skb, __u64 location, __u32 reason,
                                       bool in_task) {
  if (reason == drop_cfg.skb_consumed || reason == drop_cfg.not_dropped_yet) return 0;
  for (__u32 i = 0; i < DROP_HOUSEKEEPING_MAX; ++i) {
    if (i >= drop_cfg.housekeeping_count) break;
    const volatile struct drop_housekeeping* h = &drop_cfg.housekeeping[i];
    if (h->reason != reason || (h->end && (location < h->start || location >= h->end))) continue;
    __u64* n = bpf_map_lookup_elem(&drop_housekeeping_counts, &i);
    if (n) *n += 1;
    return 0;
  }
  __u32 zero = 0;
  struct drop_record* rec = bpf_map_lookup_elem(&drop_scratch, &zero);
  if (!rec) return 0;

  struct sock* sk = BPF_CORE_READ(skb, sk);
  rec->parsed = nw_read_skb_packet(skb, 0, &rec->packet);
  rec->ethertype = bpf_ntohs(BPF_CORE_READ(skb, protocol));
  if (!rec->parsed && sk) {
    /* Not yet (or no longer) an IP packet, but its socket says where it goes. */
    __u32 length = rec->packet.length;
    nw_read_sock_tuple(sk, &rec->packet.tuple);
    rec->packet.length = length;
    rec->packet.protocol = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
    rec->packet.has_ports =
        rec->packet.protocol == NW_IPPROTO_TCP || rec->packet.protocol == NW_IPPROTO_UDP;
  }
  rec->pid = in_task ? bpf_get_current_pid_tgid() >> 32 : 0;
  if (!nw_packet_selected(&rec->packet.tuple)) return 0;
  if (nw_filter_cfg.pid && rec->pid != nw_filter_cfg.pid) return 0;

  struct drop_count_key key = {
      .reason = reason, .ethertype = rec->ethertype, .protocol = rec->packet.protocol};
  count(&drop_counts, DROP_TABLE_COUNTS, &key);
  if (!count(&drop_locations, DROP_TABLE_LOCATIONS, &location)) {
    __u64* overflow = bpf_map_lookup_elem(&drop_location_overflow, &zero);
    if (overflow) *overflow += 1;
  }

  if (!drop_cfg.events || !nw_rate_allow(drop_cfg.max_events_per_second)) return 0;
  rec->location = location;
  rec->reason = reason;
  rec->netns = skb_netns(skb, sk);
  rec->ifindex = BPF_CORE_READ(skb, dev, ifindex);
  rec->pad = 0;
  /* Whose packet: the socket's cgroup (also in softirq), else the process's. */
  rec->cgroup = nw_sock_cgroup_id(sk);
  if (!rec->cgroup && rec->pid) rec->cgroup = bpf_get_current_cgroup_id();
  __builtin_memset(rec->comm, 0, sizeof(rec->comm));
  if (rec->pid) bpf_get_current_comm(rec->comm, sizeof(rec->comm));
  rec->stack_depth = 0;
  if (drop_cfg.stack) {
    long bytes = bpf_get_stack(ctx, rec->stack, sizeof(rec->stack), 0);
    if (bytes > 0) rec->stack_depth = bytes / sizeof(__u64);
  }
  nw_output(rec, sizeof(*rec), DROP_RECORD);
  return 0;
}

#define NW_PF_KTHREAD 0x00200000

/* ksoftirqd's softirq work is no process's, though it runs on its own stack. */
static __always_inline bool in_ksoftirqd(const struct task_struct* task) {
  if (!(BPF_CORE_READ(task, flags) & NW_PF_KTHREAD)) return false;
  char comm[16];
  bpf_get_current_comm(comm, sizeof(comm));
  const char ksoftirqd[] = "ksoftirqd";
  bool same = true;
  for (int i = 0; i < 9; ++i) same = same && comm[i] == ksoftirqd[i];
  return same;
}

/* tp_btf: process context is where the tracepoint runs on the current task's
 * own kernel stack, which is where its argument array (our ctx) lives:
 * softirqs and hardirqs run on the per-CPU IRQ stack (x86_64 and arm64
 * do_softirq_own_stack). A few loads per drop instead of two programs on every
 * softirq of the host. (The BPF frame itself may be a private per-CPU stack.) */
static __always_inline bool args_on_task_stack(const void* ctx) {
  const struct task_struct* task = (const struct task_struct*)bpf_get_current_task();
  __u64 stack = (__u64)BPF_CORE_READ(task, stack);
  const void* args = ctx;
  __u64 address = 0;
  bpf_probe_read_kernel(&address, sizeof(address), &args);
  if (!stack || address - stack >= drop_task_stack_bytes) return false;
  return !in_ksoftirqd(task);
}

/* Classic tracepoints hand over a per-CPU buffer, not the stack: look for the
 * softirq handler (handle_softirqs, which ksoftirqd runs too) among the
 * return addresses instead. Dearer, and only on this fallback. */
#define DROP_CONTEXT_FRAMES 48
const volatile __u64 drop_softirq_text_start = 0;
const volatile __u64 drop_softirq_text_end = 0;

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64[DROP_CONTEXT_FRAMES]);
} drop_frames SEC(".maps");

static __always_inline bool no_softirq_frame(void* ctx) {
  if (!drop_softirq_text_start) return false; /* unknown: say nothing */
  __u32 zero = 0;
  __u64* frames = bpf_map_lookup_elem(&drop_frames, &zero);
  if (!frames) return false;
  long bytes = bpf_get_stack(ctx, frames, DROP_CONTEXT_FRAMES * sizeof(__u64), 0);
  if (bytes <= 0) return false;
  for (int i = 0; i < DROP_CONTEXT_FRAMES; ++i) {
    if (i * (long)sizeof(__u64) >= bytes) break;
    if (frames[i] >= drop_softirq_text_start && frames[i] < drop_softirq_text_end) return false;
  }
  return true;
}

static __always_inline bool softirq_flag_clear(void) {
  __u32 zero = 0;
  __u32* in_softirq = bpf_map_lookup_elem(&serving_softirq, &zero);
  return context_known && in_softirq && !*in_softirq;
}

/* A flag, not a depth: softirqs do not nest, and a counter would stay off by
 * one for good if netwatcher attached between an entry and its exit. */
static __always_inline void softirq_step(bool entry) {
  __u32 zero = 0;
  __u32* in_softirq = bpf_map_lookup_elem(&serving_softirq, &zero);
  if (in_softirq) *in_softirq = entry;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(softirq_entry_btf, unsigned int vec) {
  softirq_step(true);
  return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(softirq_exit_btf, unsigned int vec) {
  softirq_step(false);
  return 0;
}

SEC("tracepoint/irq/softirq_entry")
int softirq_entry_tp(void* ctx) {
  softirq_step(true);
  return 0;
}

SEC("tracepoint/irq/softirq_exit")
int softirq_exit_tp(void* ctx) {
  softirq_step(false);
  return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb_btf, struct sk_buff* skb, void* location, enum skb_drop_reason reason) {
  bool in_task = drop_context == DROP_CONTEXT_STACK           ? args_on_task_stack(ctx)
                 : drop_context == DROP_CONTEXT_SOFTIRQ_HOOKS ? softirq_flag_clear()
                                                              : false;
  return handle_drop(ctx, skb, (__u64)location, reason, in_task);
}

SEC("tracepoint/skb/kfree_skb")
int kfree_skb_tp(struct trace_event_raw_kfree_skb* ctx) {
  /* Kernels before 5.17 have no reason field. */
  __u32 reason = bpf_core_field_exists(ctx->reason) ? BPF_CORE_READ(ctx, reason) : 0;
  bool in_task = drop_context == DROP_CONTEXT_STACK           ? no_softirq_frame(ctx)
                 : drop_context == DROP_CONTEXT_SOFTIRQ_HOOKS ? softirq_flag_clear()
                                                              : false;
  return handle_drop(ctx, (struct sk_buff*)BPF_CORE_READ(ctx, skbaddr),
                     (__u64)BPF_CORE_READ(ctx, location), reason, in_task);
}
