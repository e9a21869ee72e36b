// SPDX-License-Identifier: GPL-2.0
/* The shared L7 capture: one pair of cgroup_skb programs (attached at the
 * cgroup v2 root, so for every socket in every netns) that serves every
 * protocol plugin at once.
 *
 * Per socket, in socket storage, a verdict:
 *   undecided  its first `offer_packets` payload packets per direction go to
 *              user space, which asks every protocol's detector and writes
 *              its decision into `decisions` (by socket cookie); the next
 *              packet moves it into the storage;
 *   watched    every payload packet goes to user space with its protocol;
 *   ignored    one storage lookup per packet, nothing else.
 * Which transports are captured and how many bytes per packet are set by
 * user space once the protocols are known (after load: .bss); until then
 * nothing is captured. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "l7.h"
#include "netwatcher/bpf/common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define ETH_P_IP_BE 0x0008   /* htons(0x0800) */
#define ETH_P_IPV6_BE 0xdd86 /* htons(0x86dd) */
#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif
#ifndef IPPROTO_UDP
#define IPPROTO_UDP 17
#endif

struct l7_socket {
  __u32 pid;
  __u8 verdict;
  __u8 protocol;
  __u8 offered[2]; /* undecided packets sent up, by direction (0 in, 1 out) */
  char comm[NW_TASK_COMM_LEN];
};

struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct l7_socket);
} sockets SEC(".maps");

/* Written by user space; at most a few ms old entries, removed when read. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u64);
  __type(value, struct l7_decision);
} decisions SEC(".maps");

/* Records are built here: the capture is too large for the BPF stack. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, char[sizeof(struct l7_packet) + NW_L7_MAX_CAPTURE]);
} scratch SEC(".maps");

/* Payload packets of selected sockets that were still undecided past their
 * offer: seen by no protocol (netwatcher_l7_unoffered_packets_total). */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} unoffered SEC(".maps");

/* Set by user space after load, from the served protocols. */
volatile __u32 capture_tcp = 0;
volatile __u32 capture_udp = 0;
volatile __u32 capture_bytes = 0;
volatile __u32 offer_packets = 0;

struct packet_start {
  __be16 source, dest;
  __be32 seq;
  __be32 ack_seq;
  __u8 data_offset;
};

static __always_inline bool wanted(__u16 protocol) {
  return protocol == IPPROTO_TCP ? capture_tcp != 0 : protocol == IPPROTO_UDP && capture_udp != 0;
}

/* Moves a decision user space made into the socket's storage. */
static __always_inline void take_decision(struct l7_socket* state, __u64 cookie) {
  struct l7_decision* decision = bpf_map_lookup_elem(&decisions, &cookie);
  if (!decision) return;
  state->verdict = decision->verdict;
  state->protocol = decision->protocol;
  bpf_map_delete_elem(&decisions, &cookie);
}

static __always_inline void capture(struct __sk_buff* skb, bool outbound) {
  struct bpf_sock* sk = skb->sk;
  if (!sk) return;
  sk = bpf_sk_fullsock(sk);
  if (!sk || !wanted(sk->protocol)) return;
  __u8 transport = sk->protocol;
  /* The common case first: a socket of no protocol costs this lookup only. */
  struct l7_socket* state = bpf_sk_storage_get(&sockets, sk, 0, 0);
  if (state && state->verdict == L7_IGNORED) return;

  /* cgroup_skb sees the packet from its IP header on. */
  struct nw_tuple tuple = {};
  __u32 ip_length = 0;
  __u32 src_at = 0, dst_at = 0, address_bytes = 0;
  if (skb->protocol == ETH_P_IP_BE) {
    __u8 version_ihl = 0;
    if (bpf_skb_load_bytes(skb, 0, &version_ihl, 1)) return;
    ip_length = (version_ihl & 0x0f) * 4;
    tuple.family = AF_INET;
    src_at = 12, dst_at = 16, address_bytes = 4;
  } else if (skb->protocol == ETH_P_IPV6_BE) {
    __u8 next_header = 0;
    if (bpf_skb_load_bytes(skb, 6, &next_header, 1)) return;
    if (next_header != transport) return; /* extension headers are not followed */
    ip_length = 40;
    tuple.family = AF_INET6;
    src_at = 8, dst_at = 24, address_bytes = 16;
  } else {
    return;
  }
  struct packet_start th = {};
  __u32 payload_offset = 0;
  if (transport == IPPROTO_TCP) {
    if (bpf_skb_load_bytes(skb, ip_length, &th, sizeof(th))) return;
    payload_offset = ip_length + (th.data_offset >> 4) * 4;
  } else {
    if (bpf_skb_load_bytes(skb, ip_length, &th, 8)) return;
    payload_offset = ip_length + 8;
  }
  if (skb->len <= payload_offset) return; /* ACKs, SYNs, FINs, empty datagrams */

  if (!state) state = bpf_sk_storage_get(&sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!state) return;
  __u64 cookie = bpf_get_socket_cookie(skb);
  if (state->verdict == L7_UNDECIDED) {
    take_decision(state, cookie);
    if (state->verdict == L7_IGNORED) return;
  }
  /* UDP is sent in process context: its sender is the task running. TCP
   * segments often leave from softirq; its owner comes from the hooks below. */
  if (transport == IPPROTO_UDP && outbound) {
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid && pid != state->pid) {
      state->pid = pid;
      bpf_get_current_comm(state->comm, sizeof(state->comm));
    }
  }

  /* Addresses from the packet: an unconnected UDP socket has no peer. */
  __u8 src[16] = {}, dst[16] = {};
  if (address_bytes == 4) {
    if (bpf_skb_load_bytes(skb, src_at, src, 4) || bpf_skb_load_bytes(skb, dst_at, dst, 4)) return;
  } else {
    if (bpf_skb_load_bytes(skb, src_at, src, 16) || bpf_skb_load_bytes(skb, dst_at, dst, 16))
      return;
  }
  __u16 source_port = bpf_ntohs(th.source), dest_port = bpf_ntohs(th.dest);
  if (outbound) {
    __builtin_memcpy(tuple.saddr, src, 16);
    __builtin_memcpy(tuple.daddr, dst, 16);
    tuple.sport = source_port;
    tuple.dport = dest_port;
  } else {
    __builtin_memcpy(tuple.saddr, dst, 16);
    __builtin_memcpy(tuple.daddr, src, 16);
    tuple.sport = dest_port;
    tuple.dport = source_port;
  }
  if (!nw_tuple_selected(&tuple) || !nw_pid_selected(state->pid)) return;
  if (state->verdict == L7_UNDECIDED) {
    __u8* offered = &state->offered[outbound ? 1 : 0];
    if (*offered >= offer_packets) {
      /* Waiting for user space's decision: this packet reaches no protocol.
       * Atomic: an ingress run in softirq can interrupt an egress run. */
      __u32 zero = 0;
      __u64* skipped = bpf_map_lookup_elem(&unoffered, &zero);
      if (skipped) __sync_fetch_and_add(skipped, 1);
      return;
    }
    (*offered)++;
  }

  __u32 zero = 0;
  struct l7_packet* rec = bpf_map_lookup_elem(&scratch, &zero);
  if (!rec) return;
  __u32 length = skb->len - payload_offset;
  __u64 captured = length < capture_bytes ? length : capture_bytes;
  /* Bounds the verifier can see: 1..NW_L7_MAX_CAPTURE, unsigned. */
  barrier_var(captured);
  if (captured == 0 || captured > NW_L7_MAX_CAPTURE) return;
  if (bpf_skb_load_bytes(skb, payload_offset, (void*)(rec + 1), captured)) return;
  rec->cookie = cookie;
  rec->cgroup = bpf_skb_cgroup_id(skb);
  rec->tuple = tuple;
  rec->seq = transport == IPPROTO_TCP ? bpf_ntohl(th.seq) : 0;
  rec->length = length;
  rec->pid = state->pid;
  rec->captured = captured;
  rec->outbound = outbound;
  rec->transport = transport;
  rec->verdict = state->verdict;
  rec->protocol = state->protocol;
  __builtin_memset(rec->pad, 0, sizeof(rec->pad));
  __builtin_memcpy(rec->comm, state->comm, sizeof(rec->comm));
  /* Until user space decides, the socket's packets beyond the offer are not
   * seen: an undecided socket's record wakes it now. Only the first few
   * packets of a socket take this path. */
  nw_output_record(rec, sizeof(*rec) + captured, L7_RECORD_PACKET, rec->verdict != L7_WATCHED);
}

SEC("cgroup_skb/egress")
int l7_egress(struct __sk_buff* skb) {
  capture(skb, true);
  return 1;
}

SEC("cgroup_skb/ingress")
int l7_ingress(struct __sk_buff* skb) {
  capture(skb, false);
  return 1;
}

/* The owner of a socket not (yet) ignored, from process context. The storage
 * is created here when needed: a client's first send comes before its first
 * segment is judged, and that request should carry its sender. */
static __always_inline void remember_owner(struct sock* sk) {
  if (!sk) return;
  __u16 protocol = sk->sk_protocol;
  if (!wanted(protocol)) return;
  struct l7_socket* state = bpf_sk_storage_get(&sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!state || state->verdict == L7_IGNORED) return;
  __u32 pid = bpf_get_current_pid_tgid() >> 32;
  if (state->pid == pid) return;
  state->pid = pid;
  bpf_get_current_comm(state->comm, sizeof(state->comm));
}

/* Before the data leaves (sock_send_length would come after the first
 * segment), so even a connection's first request carries its sender. */
SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(l7_send_owner, struct sock* sk) {
  remember_owner(sk);
  return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(l7_recv_owner, struct sock* sk) {
  remember_owner(sk);
  return 0;
}

/* A watched TCP socket's CLOSE, so that its protocol reports what is
 * unanswered. Also clears a decision the socket never took. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(l7_socket_closed, struct sock* sk, int oldstate, int newstate) {
  if (newstate != TCP_CLOSE || sk->sk_protocol != IPPROTO_TCP) return 0;
  struct l7_socket* state = bpf_sk_storage_get(&sockets, sk, 0, 0);
  if (!state || state->verdict == L7_IGNORED) return 0;
  __u64 cookie = bpf_get_socket_cookie(sk);
  /* A short connection may end before its storage saw the decision: an
   * undecided socket that offered packets closes too, after them. */
  if (state->verdict == L7_UNDECIDED) {
    take_decision(state, cookie);
    if (state->verdict == L7_IGNORED) return 0;
    if (state->verdict == L7_UNDECIDED && !state->offered[0] && !state->offered[1]) return 0;
  }
  struct l7_close* rec = nw_reserve(sizeof(*rec), L7_RECORD_CLOSE);
  if (!rec) return 0;
  rec->cookie = cookie;
  nw_submit(rec);
  return 0;
}
