// icmp: every ICMP / ICMPv6 message received (net:netif_receive_skb) and sent
// (net:net_dev_queue), echo round trips and the kernel's reply time, and the
// errors the kernel generates (icmp:icmp_send).
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "icmp.h"
#include "netwatcher/bpf/skb.bpf.h"

char LICENSE[] SEC("license") = "GPL";

const volatile struct icmp_config icmp_cfg = {};

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 8192);
  __type(key, struct echo_key);
  __type(value, struct echo_pending);
} icmp_echo_pending SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct icmp_counters);
} icmp_messages SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, ICMP_FAMILIES * 2);
  __type(key, __u32);
  __type(value, struct icmp_latency);
} icmp_latency SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, ICMP_ERROR_KINDS);
  __type(key, struct icmp_error_key);
  __type(value, __u64);
} icmp_errors_sent SEC(".maps");

/* Scratch space for a record: too big for the BPF stack next to two packets. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct icmp_record);
} icmp_scratch SEC(".maps");

static __always_inline bool is_error(__u8 protocol, __u8 type) {
  if (protocol == NW_IPPROTO_ICMP)
    return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
  return type >= 1 && type <= 4; /* ICMPv6 errors are types 1..127; these quote a packet */
}

static __always_inline void count_latency(int family, int kind, __u64 delta) {
  __u32 index = ICMP_HISTOGRAM(family, kind);
  struct icmp_latency* h = bpf_map_lookup_elem(&icmp_latency, &index);
  if (!h) return;
  h->count += 1;
  h->sum_ns += delta;
  nw_log2_slot_add(h->slots, delta);
}

static __always_inline int handle(const struct sk_buff* skb, const unsigned char* nh, int dir) {
  __u32 zero = 0;
  struct icmp_record* rec = bpf_map_lookup_elem(&icmp_scratch, &zero);
  if (!rec) return 0;
  struct nw_packet* p = &rec->packet;
  if (p->protocol != NW_IPPROTO_ICMP && p->protocol != NW_IPPROTO_ICMPV6) return 0;
  int family = p->tuple.family == AF_INET6 ? 1 : 0;
  struct icmp_counters* counters = bpf_map_lookup_elem(&icmp_messages, &zero);
  if (counters)
    counters->messages[ICMP_COUNTER(family, dir, p->icmp_type) & (ICMP_COUNTERS - 1)] += 1;

  __u64 now = bpf_ktime_get_ns();
  struct net_device* dev = BPF_CORE_READ(skb, dev);
  rec->netns = dev ? BPF_CORE_READ(dev, nd_net.net, ns.inum) : 0;
  rec->ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
  rec->rtt_ns = 0;
  rec->reply_ns = 0;
  rec->pid = 0;
  rec->cgroup = 0;
  rec->pad = 0;
  __builtin_memset(rec->comm, 0, sizeof(rec->comm));
  rec->direction = dir;
  rec->flags = 0;
  __builtin_memset(rec->pad2, 0, sizeof(rec->pad2));
  __builtin_memset(&rec->inner, 0, sizeof(rec->inner));

  /* Sent from a user socket (ping, a raw socket): the sender is running. */
  if (dir == ICMP_TX) {
    struct sock* sk = BPF_CORE_READ(skb, sk);
    if (sk && BPF_CORE_READ(sk, sk_socket, file)) {
      rec->pid = bpf_get_current_pid_tgid() >> 32;
      rec->cgroup = nw_sock_cgroup_id(sk);
      bpf_get_current_comm(rec->comm, sizeof(rec->comm));
    }
  }

  __u8 type = p->icmp_type;
  if (nw_icmp_is_echo(p->protocol, type)) {
    rec->flags |= ICMP_IS_ECHO;
    bool request = type == NW_ICMP_ECHO_REQUEST || type == NW_ICMPV6_ECHO_REQUEST;
    struct echo_key key = {};
    __builtin_memcpy(key.peer, dir == ICMP_TX ? p->tuple.daddr : p->tuple.saddr, 16);
    key.netns = rec->netns;
    key.id = p->icmp_id;
    key.seq = p->icmp_seq;
    key.family = family;
    key.kind = (dir == ICMP_TX) == request ? ICMP_ECHO_RTT : ICMP_ECHO_REPLY;
    if (request) {
      struct echo_pending pending = {};
      pending.ns = now;
      pending.pid = rec->pid;
      pending.cgroup = rec->cgroup;
      __builtin_memcpy(pending.comm, rec->comm, sizeof(pending.comm));
      /* A request sent again under the same id and sequence restarts its
       * wait: an update in place, not an entry evicted. */
      struct echo_pending* again = bpf_map_lookup_elem(&icmp_echo_pending, &key);
      if (again)
        *again = pending;
      else
        nw_table_insert(&icmp_echo_pending, ICMP_TABLE_PENDING_ECHOES, &key, &pending, BPF_NOEXIST);
    } else {
      struct echo_pending* pending = bpf_map_lookup_elem(&icmp_echo_pending, &key);
      if (pending) {
        __u64 delta = now - pending->ns;
        if (dir == ICMP_RX) {
          rec->rtt_ns = delta;
          rec->flags |= ICMP_HAS_RTT;
          if (!rec->pid && pending->pid) {
            rec->pid = pending->pid;
            rec->cgroup = pending->cgroup;
            __builtin_memcpy(rec->comm, pending->comm, sizeof(rec->comm));
          }
        } else {
          rec->reply_ns = delta;
          rec->flags |= ICMP_HAS_REPLY;
        }
        count_latency(family, key.kind, delta);
        nw_table_remove(&icmp_echo_pending, ICMP_TABLE_PENDING_ECHOES, &key);
      }
    }
  } else if (is_error(p->protocol, type) && p->transport_offset) {
    /* The quoted packet starts after the 8-byte ICMP header. */
    if (nw_parse_ip(nh + p->transport_offset + 8, family == 0, family == 1, &rec->inner))
      rec->flags |= ICMP_HAS_INNER;
  }
  if (rec->pid) rec->flags |= ICMP_HAS_PID;

  if (!icmp_cfg.message_events) return 0;
  const struct nw_tuple* match = (rec->flags & ICMP_HAS_INNER) ? &rec->inner.tuple : &p->tuple;
  if (!nw_packet_selected(match) || !nw_pid_selected(rec->pid)) return 0;
  if (nw_filter_cfg.pid && !rec->pid) return 0;
  if (!nw_rate_allow(icmp_cfg.max_events_per_second)) return 0;
  nw_output(rec, sizeof(*rec), ICMP_RECORD_MESSAGE);
  return 0;
}

static __always_inline int received(const struct sk_buff* skb) {
  __u32 zero = 0;
  struct icmp_record* rec = bpf_map_lookup_elem(&icmp_scratch, &zero);
  if (!rec || !nw_read_received_packet(skb, &rec->packet)) return 0;
  return handle(skb, BPF_CORE_READ(skb, data), ICMP_RX);
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(icmp_receive, struct sk_buff* skb) {
  return received(skb);
}

/* The classic tracepoints give the same skb as a plain address; every read
 * below goes through BPF_CORE_READ, so one body serves both. */
SEC("tracepoint/net/netif_receive_skb")
int icmp_receive_tp(struct trace_event_raw_net_dev_template* ctx) {
  return received(ctx->skbaddr);
}

static __always_inline int queued(const struct sk_buff* skb) {
  __u32 zero = 0;
  struct icmp_record* rec = bpf_map_lookup_elem(&icmp_scratch, &zero);
  if (!rec || !nw_read_skb_packet(skb, 0, &rec->packet)) return 0;
  unsigned char* nh = BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, network_header);
  /* The link-layer header is already pushed: report the IP length, as on rx. */
  unsigned char* data = BPF_CORE_READ(skb, data);
  if (nh > data && rec->packet.length > nh - data) rec->packet.length -= nh - data;
  return handle(skb, nh, ICMP_TX);
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(icmp_send_queue, struct sk_buff* skb) {
  return queued(skb);
}

SEC("tracepoint/net/net_dev_queue")
int icmp_send_queue_tp(struct trace_event_raw_net_dev_template* ctx) {
  return queued(ctx->skbaddr);
}

/* The kernel decided to answer `skb` with an ICMP error (IPv4 only: ICMPv6
 * errors have no tracepoint and show up as sent messages instead). */
static __always_inline int error_sent(const struct sk_buff* skb, int type, int code) {
  struct icmp_error_key key = {.type = type, .code = code};
  __u64* count = bpf_map_lookup_elem(&icmp_errors_sent, &key);
  if (count) {
    *count += 1;
  } else {
    __u64 one = 1;
    nw_table_insert(&icmp_errors_sent, ICMP_TABLE_ERROR_KINDS, &key, &one, BPF_NOEXIST);
  }
  if (!icmp_cfg.error_events) return 0;
  struct nw_packet offending;
  nw_read_skb_packet(skb, AF_INET, &offending);
  if (!nw_packet_selected(&offending.tuple) || nw_filter_cfg.pid) return 0;
  if (!nw_rate_allow(icmp_cfg.max_events_per_second)) return 0;
  struct icmp_error_record* rec = nw_reserve(sizeof(*rec), ICMP_RECORD_ERROR_SENT);
  if (!rec) return 0;
  rec->offending = offending;
  rec->type = type;
  rec->code = code;
  struct net_device* dev = BPF_CORE_READ(skb, dev);
  rec->netns = dev ? BPF_CORE_READ(dev, nd_net.net, ns.inum) : 0;
  rec->pad = 0;
  nw_submit(rec);
  return 0;
}

SEC("tp_btf/icmp_send")
int BPF_PROG(icmp_error_sent, const struct sk_buff* skb, int type, int code) {
  return error_sent(skb, type, code);
}

SEC("tracepoint/icmp/icmp_send")
int icmp_error_sent_tp(struct trace_event_raw_icmp_send* ctx) {
  return error_sent(ctx->skbaddr, ctx->type, ctx->code);
}
