// udp: datagrams, flows and the time each datagram spends in the kernel.
//
// Receive: the driver hands the packet to the stack (net:netif_receive_skb,
// IP layer entry) -> the socket is about to queue it (a cgroup_skb ingress
// program at the cgroup v2 root, which runs in the socket's receive filter).
// Send: the send syscall starts (syscalls:sys_enter_send{to,msg,mmsg}) ->
// the packet reaches the device layer (net:net_dev_queue) -> the driver
// accepted it (net:net_dev_xmit). Datagrams are matched between hooks by skb
// address, so datagrams on one 4-tuple never share timing.
//
// The application's read of one datagram is not observable on this kernel
// generation: UDP copies linear datagrams without skb:skb_copy_datagram_iovec
// and frees them later on another CPU. The socket's owner (the process that
// last sent, read or waited on it) is remembered instead.
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "netwatcher/bpf/skb.bpf.h"
#include "udp.h"

char LICENSE[] SEC("license") = "GPL";

#define NW_ENOMEM 12
#define NW_ENOBUFS 105
#define NW_NETDEV_TX_BUSY 0x10

const volatile struct udp_config udp_cfg = {};
extern void* bpf_cast_to_kern_ctx(void* obj) __ksym;

struct rx_inflight {
  struct udp_flow_key flow;
  __u64 ip_ns;
  __u32 ifindex;
  __u32 length;
};

struct tx_inflight {
  struct udp_flow_key flow;
  __u64 send_ns; /* 0 when the send call is unknown (write(), io_uring, kernel) */
  __u64 sock;
  __u32 ifindex;
  __u32 length;
  __u32 pid;
  __u32 pad;
  char comm[NW_TASK_COMM_LEN];
};

struct sock_owner {
  __u32 pid;
  __u32 pad;
  char comm[NW_TASK_COMM_LEN];
};

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u64);
  __type(value, struct rx_inflight);
} udp_rx_inflight SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u64);
  __type(value, struct tx_inflight);
} udp_tx_inflight SEC(".maps");

/* Thread (pid_tgid) -> when its current send call (or, in sendmmsg, its
 * current message) started. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 8192);
  __type(key, __u64);
  __type(value, __u64);
} udp_send_start SEC(".maps");

/* Socket -> the last process that sent or read on it. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u64);
  __type(value, struct sock_owner);
} udp_owners SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, struct udp_flow_key);
  __type(value, struct udp_flow);
} udp_flows SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct udp_stats);
} udp_stats SEC(".maps");

static __always_inline struct udp_stats* stats(void) {
  __u32 zero = 0;
  return bpf_map_lookup_elem(&udp_stats, &zero);
}

static __always_inline bool is_udp(__u16 protocol) {
  return protocol == NW_IPPROTO_UDP || protocol == NW_IPPROTO_UDPLITE;
}

static __always_inline __u32 payload_length(const struct nw_packet* p) {
  return p->udp_length > 8 ? p->udp_length - 8 : 0;
}

static __always_inline __u32 netns_of(const struct net_device* dev) {
  return dev ? BPF_CORE_READ(dev, nd_net.net, ns.inum) : 0;
}

/* A received packet's flow: its destination is the local end. */
static __always_inline void received_flow(const struct nw_packet* p, struct udp_flow_key* flow) {
  __builtin_memcpy(flow->tuple.saddr, p->tuple.daddr, 16);
  __builtin_memcpy(flow->tuple.daddr, p->tuple.saddr, 16);
  flow->tuple.sport = p->tuple.dport;
  flow->tuple.dport = p->tuple.sport;
  flow->tuple.family = p->tuple.family;
}

/* The flow of `key`, created on first sight. */
static __always_inline struct udp_flow* flow_of(const struct udp_flow_key* key, __u64 now) {
  struct udp_flow* flow = bpf_map_lookup_elem(&udp_flows, key);
  if (flow) return flow;
  struct udp_flow fresh = {};
  fresh.first_ns = now;
  nw_table_insert(&udp_flows, UDP_TABLE_FLOWS, key, &fresh, BPF_NOEXIST);
  return bpf_map_lookup_elem(&udp_flows, key);
}

/* Counts a datagram in its flow, when the flow passes the filter; returns
 * the flow for the caller's further updates (NULL when filtered out). */
static __always_inline struct udp_flow* flow_count(const struct udp_flow_key* key, int dir,
                                                   __u32 length, __u64 now) {
  if (!nw_tuple_selected(&key->tuple)) return NULL;
  struct udp_flow* flow = flow_of(key, now);
  if (!flow) return NULL;
  __sync_fetch_and_add(&flow->datagrams[dir & 1], 1);
  __sync_fetch_and_add(&flow->bytes[dir & 1], length);
  flow->last_ns = now;
  return flow;
}

static __always_inline void flow_time(struct udp_flow* flow, int dir, __u64 delta) {
  if (!flow) return;
  __sync_fetch_and_add(&flow->latency_ns[dir & 1], delta);
  __sync_fetch_and_add(&flow->timed[dir & 1], 1);
}

/* A flow's container is its socket's: read once, the first time a socket is
 * known for it. */
static __always_inline void flow_cgroup(struct udp_flow* flow, __u64 sock) {
  if (flow && sock && !flow->cgroup) flow->cgroup = nw_sock_cgroup_id((const struct sock*)sock);
}

static __always_inline void flow_owner(struct udp_flow* flow, __u32 pid, const char* comm) {
  if (!flow || !pid) return;
  flow->pid = pid;
  __builtin_memcpy(flow->comm, comm, NW_TASK_COMM_LEN);
}

static __always_inline void stats_count(int dir, __u32 length) {
  struct udp_stats* s = stats();
  if (!s) return;
  s->datagrams[dir & 1] += 1;
  s->bytes[dir & 1] += length;
}

static __always_inline void stats_time(int kind, __u64 delta) {
  struct udp_stats* s = stats();
  if (!s || kind < 0 || kind >= UDP_LATENCIES) return;
  s->latency_ns[kind] += delta;
  nw_log2_slot_add(s->latency_slots[kind], delta);
}

static __always_inline void remember_owner(__u64 sock) {
  __u32 pid = bpf_get_current_pid_tgid() >> 32;
  /* Called on every send and read: most calls find the owner unchanged. */
  struct sock_owner* known = bpf_map_lookup_elem(&udp_owners, &sock);
  if (known && known->pid == pid) return;
  struct sock_owner owner = {};
  owner.pid = pid;
  bpf_get_current_comm(owner.comm, sizeof(owner.comm));
  /* A new owner of a known socket is an update, not a new entry: replacing
   * it through the map would count as an eviction. */
  if (known) {
    *known = owner;
    return;
  }
  nw_table_insert(&udp_owners, UDP_TABLE_OWNERS, &sock, &owner, BPF_NOEXIST);
}

static __always_inline void emit_datagram(const struct udp_flow_key* flow, int dir, __u64 sock,
                                          __u32 ifindex, __u32 length, __u32 pid, const char* comm,
                                          __u64 kernel_ns, __u8 flags) {
  if (!udp_cfg.datagram_events || !nw_tuple_selected(&flow->tuple) || !nw_pid_selected(pid)) return;
  if (nw_filter_cfg.pid && !pid) return; /* a pid filter wants a known owner */
  if (!nw_rate_allow(udp_cfg.max_events_per_second)) return;
  struct udp_datagram_record* rec = nw_reserve(sizeof(*rec), UDP_RECORD_DATAGRAM);
  if (!rec) return;
  rec->tuple = flow->tuple;
  rec->sock = sock;
  rec->kernel_ns = kernel_ns;
  rec->cgroup = nw_sock_cgroup_id((const struct sock*)sock);
  rec->pid = pid;
  rec->netns = flow->netns;
  rec->ifindex = ifindex;
  rec->length = length;
  __builtin_memcpy(rec->comm, comm, NW_TASK_COMM_LEN);
  rec->direction = dir;
  rec->flags = flags | (pid ? UDP_HAS_PID : 0);
  __builtin_memset(rec->pad, 0, sizeof(rec->pad));
  nw_submit(rec);
}

/* ---- receive ---- */

/* The last datagram this CPU handed to a socket, for the classic
 * udp_fail_queue_rcv_skb tracepoint, which names no skb: it fires right after,
 * on the same CPU, for that datagram. Kept only when that program runs. */
struct queued_datagram {
  struct udp_flow_key flow;
  __u64 sock;
  __u64 ns;
  __u32 ifindex;
  __u32 length;
};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct queued_datagram);
} udp_last_queued SEC(".maps");

const volatile bool udp_remember_queued = false;

static __always_inline int ip_receive(const struct sk_buff* skb) {
  struct nw_packet p;
  if (!nw_read_received_packet(skb, &p) || !is_udp(p.protocol) || !p.has_ports) return 0;
  struct rx_inflight entry = {};
  received_flow(&p, &entry.flow);
  struct net_device* dev = BPF_CORE_READ(skb, dev);
  entry.flow.netns = netns_of(dev);
  entry.ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
  entry.length = payload_length(&p);
  entry.ip_ns = bpf_ktime_get_ns();
  __u64 key = (__u64)skb;
  /* A leftover under this address is a freed skb's (a datagram that reached
   * no socket): stale, so replaced. */
  nw_table_insert(&udp_rx_inflight, UDP_TABLE_RX_DATAGRAMS, &key, &entry, BPF_ANY);
  return 0;
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(udp_ip_receive, struct sk_buff* skb) {
  return ip_receive(skb);
}

/* Classic-tracepoint twins pass the same skb as an address; the bodies read
 * everything through BPF_CORE_READ, so they serve both. */
SEC("tracepoint/net/netif_receive_skb")
int udp_ip_receive_tp(struct trace_event_raw_net_dev_template* ctx) {
  return ip_receive(ctx->skbaddr);
}

/* Runs in sk_filter() of the receiving socket, right before UDP queues the
 * datagram. Always allows it. */
SEC("cgroup_skb/ingress")
int udp_socket_queue(struct __sk_buff* ctx) {
  struct sk_buff* skb = bpf_cast_to_kern_ctx(ctx);
  struct sock* sk = BPF_CORE_READ(skb, sk);
  if (!sk || !is_udp(BPF_CORE_READ(sk, sk_protocol))) return 1;
  __u64 key = (__u64)skb;
  struct rx_inflight* entry = bpf_map_lookup_elem(&udp_rx_inflight, &key);
  if (!entry) return 1;
  __u64 now = bpf_ktime_get_ns();
  __u64 delta = now - entry->ip_ns;
  stats_count(UDP_RX, entry->length);
  stats_time(UDP_LATENCY_RX, delta);
  struct udp_flow* counted = flow_count(&entry->flow, UDP_RX, entry->length, now);
  flow_time(counted, UDP_RX, delta);
  struct udp_flow_key flow = entry->flow;
  __u32 ifindex = entry->ifindex, length = entry->length;
  nw_table_remove(&udp_rx_inflight, UDP_TABLE_RX_DATAGRAMS, &key);

  __u32 pid = 0;
  char comm[NW_TASK_COMM_LEN] = {};
  __u64 sock = (__u64)sk;
  flow_cgroup(counted, sock);
  struct sock_owner* owner = bpf_map_lookup_elem(&udp_owners, &sock);
  if (owner) {
    pid = owner->pid;
    __builtin_memcpy(comm, owner->comm, NW_TASK_COMM_LEN);
    flow_owner(counted, pid, comm);
  }
  emit_datagram(&flow, UDP_RX, sock, ifindex, length, pid, comm, delta, UDP_HAS_KERNEL_NS);
  if (udp_remember_queued) {
    __u32 zero = 0;
    struct queued_datagram* last = bpf_map_lookup_elem(&udp_last_queued, &zero);
    if (last) {
      last->flow = flow;
      last->sock = sock;
      last->ns = now;
      last->ifindex = ifindex;
      last->length = length;
    }
  }
  return 1;
}

/* Set on this CPU when udp_fail_queue_rcv_skb reported a protocol memory
 * refusal: the kernel frees that skb right after with drop reason PROTO_MEM,
 * which udp_proto_mem_drop must not count a second time. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u32);
} udp_memory_reported SEC(".maps");

/* The socket refused a datagram the queue hook already counted as received
 * (rx counts datagrams that reached their socket). */
static __always_inline __u8 count_failure(int rc) {
  __u8 reason = rc == -NW_ENOMEM    ? UDP_FAILURE_RCVBUF
                : rc == -NW_ENOBUFS ? UDP_FAILURE_MEMORY
                                    : UDP_FAILURE_OTHER;
  struct udp_stats* s = stats();
  if (s) s->failures[reason] += 1;
  if (reason == UDP_FAILURE_MEMORY) {
    __u32 zero = 0;
    __u32* reported = bpf_map_lookup_elem(&udp_memory_reported, &zero);
    if (reported) *reported = 1;
  }
  return reason;
}

static __always_inline int queue_failure(int rc, __u8 reason, const struct udp_flow_key* key,
                                         __u64 sock, __u32 ifindex, __u32 length) {
  struct udp_flow_key flow = *key;
  if (!nw_tuple_selected(&flow.tuple)) return 0;
  __u64 now = bpf_ktime_get_ns();
  struct udp_flow* f = flow_of(&flow, now);
  if (f) {
    __sync_fetch_and_add(&f->queue_failures, 1);
    f->last_ns = now;
  }
  if (!udp_cfg.failure_events || nw_filter_cfg.pid) return 0;
  if (!nw_rate_allow(udp_cfg.max_events_per_second)) return 0;
  struct udp_failure_record* rec = nw_reserve(sizeof(*rec), UDP_RECORD_QUEUE_FAILURE);
  if (!rec) return 0;
  rec->tuple = flow.tuple;
  rec->sock = sock;
  rec->rc = rc;
  rec->netns = flow.netns;
  rec->ifindex = ifindex;
  rec->length = length;
  rec->reason = reason;
  __builtin_memset(rec->pad, 0, sizeof(rec->pad));
  nw_submit(rec);
  return 0;
}

SEC("tp_btf/udp_fail_queue_rcv_skb")
int BPF_PROG(udp_queue_failure, int rc, struct sock* sk, struct sk_buff* skb) {
  __u8 reason = count_failure(rc);
  struct nw_packet p;
  if (!nw_read_skb_packet(skb, 0, &p)) return 0;
  struct udp_flow_key flow = {};
  received_flow(&p, &flow);
  flow.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
  return queue_failure(rc, reason, &flow, (__u64)sk, BPF_CORE_READ(skb, skb_iif),
                       payload_length(&p));
}

/* 6.18 (seen on 6.18.44) frees a datagram that protocol memory
 * (net.ipv4.udp_mem) cannot take inside __udp_enqueue_schedule_skb, with
 * drop reason PROTO_MEM and without udp_fail_queue_rcv_skb or UdpMemErrors:
 * only the socket's drop count has it. Earlier kernels free such a datagram
 * with that reason right after the tracepoint, which counted it already
 * (udp_memory_reported). Needs kfree_skb's rx_sk argument; a kernel without
 * it skips this hook and reports through the tracepoint. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(udp_proto_mem_drop, struct sk_buff* skb, void* location, enum skb_drop_reason why,
             struct sock* rx_sk) {
  if (why != bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_PROTO_MEM) || !rx_sk ||
      !is_udp(BPF_CORE_READ(rx_sk, sk_protocol)))
    return 0;
  __u32 zero = 0;
  __u32* reported = bpf_map_lookup_elem(&udp_memory_reported, &zero);
  if (reported && *reported) {
    *reported = 0;
    return 0;
  }
  __u8 reason = count_failure(-NW_ENOBUFS);
  if (reported) *reported = 0;
  struct nw_packet p;
  if (!nw_read_skb_packet(skb, 0, &p)) return 0;
  struct udp_flow_key flow = {};
  received_flow(&p, &flow);
  flow.netns = BPF_CORE_READ(rx_sk, __sk_common.skc_net.net, ns.inum);
  return queue_failure(-NW_ENOBUFS, reason, &flow, (__u64)rx_sk, BPF_CORE_READ(skb, skb_iif),
                       payload_length(&p));
}

struct trace_event_raw_udp_fail_queue_rcv_skb___old {
  struct trace_entry ent;
  int rc;
  __u16 lport;
} __attribute__((preserve_access_index));

/* The classic tracepoint has the datagram's ports and addresses but neither skb
 * nor sock: the datagram is the one the queue hook just saw on this CPU. A
 * failure that does not match it is counted but attributed to no flow. */
SEC("tracepoint/udp/udp_fail_queue_rcv_skb")
int udp_queue_failure_tp(struct trace_event_raw_udp_fail_queue_rcv_skb* ctx) {
  int rc = ctx->rc;
  __u8 reason = count_failure(rc);
  __u32 zero = 0;
  struct queued_datagram* last = bpf_map_lookup_elem(&udp_last_queued, &zero);
  if (!last || !last->ns) return 0;
  struct queued_datagram seen = *last;
  last->ns = 0;
  /* Since 6.10 the ports are the packet's (dport is local); before, lport. */
  __u16 local_port = 0;
  if (bpf_core_field_exists(ctx->dport)) {
    local_port = BPF_CORE_READ(ctx, dport);
  } else {
    struct trace_event_raw_udp_fail_queue_rcv_skb___old* old = (void*)ctx;
    if (bpf_core_field_exists(old->lport)) local_port = BPF_CORE_READ(old, lport);
  }
  if (seen.flow.tuple.sport != local_port || bpf_ktime_get_ns() - seen.ns > 1000000) return 0;
  return queue_failure(rc, reason, &seen.flow, seen.sock, seen.ifindex, seen.length);
}

/* ---- socket owners ---- */

#define NW_S_IFMT 0170000
#define NW_S_IFSOCK 0140000

/* The socket behind file descriptor `fd` of the current process, or NULL. */
static __always_inline struct sock* sock_of_fd(long fd) {
  struct task_struct* task = (struct task_struct*)bpf_get_current_task();
  struct fdtable* table = BPF_CORE_READ(task, files, fdt);
  if (fd < 0 || !table || fd >= BPF_CORE_READ(table, max_fds)) return NULL;
  struct file** files = BPF_CORE_READ(table, fd);
  struct file* file = NULL;
  if (bpf_probe_read_kernel(&file, sizeof(file), &files[fd]) || !file) return NULL;
  if ((BPF_CORE_READ(file, f_inode, i_mode) & NW_S_IFMT) != NW_S_IFSOCK) return NULL;
  struct socket* socket = BPF_CORE_READ(file, private_data);
  return socket ? BPF_CORE_READ(socket, sk) : NULL;
}

/* A process that binds, connects or waits on a socket owns it before the
 * first datagram arrives. */
static __always_inline int receive_begins(long fd) {
  struct sock* sk = sock_of_fd(fd);
  if (sk && is_udp(BPF_CORE_READ(sk, sk_protocol))) remember_owner((__u64)sk);
  return 0;
}

/* bind() and connect() come before the first datagram a server or a
 * connected client receives. */
SEC("tracepoint/syscalls/sys_enter_bind")
int udp_bind_enter(struct trace_event_raw_sys_enter* ctx) {
  return receive_begins(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int udp_connect_enter(struct trace_event_raw_sys_enter* ctx) {
  return receive_begins(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int udp_recvfrom_enter(struct trace_event_raw_sys_enter* ctx) {
  return receive_begins(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int udp_recvmsg_enter(struct trace_event_raw_sys_enter* ctx) {
  return receive_begins(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int udp_recvmmsg_enter(struct trace_event_raw_sys_enter* ctx) {
  return receive_begins(ctx->args[0]);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(udp_recv_done, struct sock* sk, int ret, int flags) {
  if (is_udp(BPF_CORE_READ(sk, sk_protocol))) remember_owner((__u64)sk);
  return 0;
}

SEC("tracepoint/sock/sock_recv_length")
int udp_recv_done_tp(struct trace_event_raw_sock_msg_length* ctx) {
  if (is_udp(ctx->protocol)) remember_owner((__u64)ctx->sk);
  return 0;
}

/* ---- send ---- */

static __always_inline int send_begins(void) {
  __u64 thread = bpf_get_current_pid_tgid();
  __u64 now = bpf_ktime_get_ns();
  /* A leftover is a call whose exit was not seen (netwatcher started
   * mid-call): stale. */
  nw_table_insert(&udp_send_start, UDP_TABLE_SEND_CALLS, &thread, &now, BPF_ANY);
  return 0;
}

static __always_inline int send_ends(void) {
  __u64 thread = bpf_get_current_pid_tgid();
  nw_table_remove(&udp_send_start, UDP_TABLE_SEND_CALLS, &thread);
  return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int udp_sendto_enter(void* ctx) {
  return send_begins();
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int udp_sendmsg_enter(void* ctx) {
  return send_begins();
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int udp_sendmmsg_enter(void* ctx) {
  return send_begins();
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int udp_sendto_exit(void* ctx) {
  return send_ends();
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int udp_sendmsg_exit(void* ctx) {
  return send_ends();
}

SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int udp_sendmmsg_exit(void* ctx) {
  return send_ends();
}

/* End of one sock_sendmsg(): the socket's owner is known, and in sendmmsg the
 * next message starts now. */
static __always_inline int send_done(const struct sock* sk) {
  remember_owner((__u64)sk);
  __u64 thread = bpf_get_current_pid_tgid();
  __u64* start = bpf_map_lookup_elem(&udp_send_start, &thread);
  if (start) *start = bpf_ktime_get_ns();
  return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(udp_send_done, struct sock* sk, int ret, int flags) {
  return is_udp(BPF_CORE_READ(sk, sk_protocol)) ? send_done(sk) : 0;
}

SEC("tracepoint/sock/sock_send_length")
int udp_send_done_tp(struct trace_event_raw_sock_msg_length* ctx) {
  return is_udp(ctx->protocol) ? send_done(ctx->sk) : 0;
}

static __always_inline int dev_queue(const struct sk_buff* skb) {
  struct sock* sk = BPF_CORE_READ(skb, sk);
  if (!sk || !is_udp(BPF_CORE_READ(sk, sk_protocol))) return 0;
  __u64 key = (__u64)skb;
  /* Stacked devices queue the same skb again: it is counted once. */
  if (bpf_map_lookup_elem(&udp_tx_inflight, &key)) return 0;
  struct nw_packet p;
  /* Later IP fragments carry no UDP header; the first one stands for all. */
  if (!nw_read_skb_packet(skb, 0, &p) || !is_udp(p.protocol) || !p.has_ports) return 0;
  __u64 now = bpf_ktime_get_ns();
  struct tx_inflight entry = {};
  entry.flow.tuple = p.tuple; /* sent: the source is the local end */
  struct net_device* dev = BPF_CORE_READ(skb, dev);
  entry.flow.netns = netns_of(dev);
  entry.ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
  entry.length = payload_length(&p);
  entry.sock = (__u64)sk;
  __u64 thread = bpf_get_current_pid_tgid();
  __u64* start = bpf_map_lookup_elem(&udp_send_start, &thread);
  if (start) {
    /* Inside the sender's send call. */
    entry.send_ns = *start;
    entry.pid = thread >> 32;
    bpf_get_current_comm(entry.comm, sizeof(entry.comm));
  } else {
    struct sock_owner* owner = bpf_map_lookup_elem(&udp_owners, &entry.sock);
    if (owner) {
      entry.pid = owner->pid;
      __builtin_memcpy(entry.comm, owner->comm, NW_TASK_COMM_LEN);
    }
  }
  stats_count(UDP_TX, entry.length);
  struct udp_flow* counted = flow_count(&entry.flow, UDP_TX, entry.length, now);
  flow_cgroup(counted, entry.sock);
  flow_owner(counted, entry.pid, entry.comm);
  /* Absent: checked above. */
  nw_table_insert(&udp_tx_inflight, UDP_TABLE_TX_DATAGRAMS, &key, &entry, BPF_NOEXIST);
  return 0;
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(udp_dev_queue, struct sk_buff* skb) {
  return dev_queue(skb);
}

SEC("tracepoint/net/net_dev_queue")
int udp_dev_queue_tp(struct trace_event_raw_net_dev_template* ctx) {
  return dev_queue(ctx->skbaddr);
}

static __always_inline int dev_xmit(const struct sk_buff* skb, int rc) {
  if (rc == NW_NETDEV_TX_BUSY) return 0; /* requeued; it comes back */
  __u64 key = (__u64)skb;
  struct tx_inflight* found = bpf_map_lookup_elem(&udp_tx_inflight, &key);
  if (!found) return 0;
  struct tx_inflight entry = *found;
  nw_table_remove(&udp_tx_inflight, UDP_TABLE_TX_DATAGRAMS, &key);
  if (rc != 0) return 0; /* the driver dropped it */
  __u64 kernel_ns = 0;
  __u8 flags = 0;
  if (entry.send_ns) {
    kernel_ns = bpf_ktime_get_ns() - entry.send_ns;
    flags = UDP_HAS_KERNEL_NS;
    stats_time(UDP_LATENCY_TX, kernel_ns);
    if (nw_tuple_selected(&entry.flow.tuple))
      flow_time(bpf_map_lookup_elem(&udp_flows, &entry.flow), UDP_TX, kernel_ns);
  }
  emit_datagram(&entry.flow, UDP_TX, entry.sock, entry.ifindex, entry.length, entry.pid, entry.comm,
                kernel_ns, flags);
  return 0;
}

SEC("tp_btf/net_dev_xmit")
int BPF_PROG(udp_dev_xmit, struct sk_buff* skb, int rc, struct net_device* dev, unsigned int len) {
  return dev_xmit(skb, rc);
}

SEC("tracepoint/net/net_dev_xmit")
int udp_dev_xmit_tp(struct trace_event_raw_net_dev_xmit* ctx) {
  return dev_xmit(ctx->skbaddr, ctx->rc);
}
