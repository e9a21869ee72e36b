// SPDX-License-Identifier: GPL-2.0
/* HTTP from the traffic itself: the first bytes of every TCP segment a
 * watched socket sends or receives, captured where the socket meets IP
 * (cgroup_skb egress/ingress at the cgroup v2 root, so every netns). A
 * socket is watched once its first payload starts like an HTTP request, in
 * either direction; after a few payload segments that do not, it is left
 * alone for good. Requests are paired with responses in user space. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "http.h"
#include "netwatcher/bpf/common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif
#define ETH_P_IP_BE 0x0008   /* htons(0x0800) */
#define ETH_P_IPV6_BE 0xdd86 /* htons(0x86dd) */

enum socket_verdict { VERDICT_UNKNOWN = 0, VERDICT_HTTP = 1, VERDICT_OTHER = 2 };
#define SEGMENTS_TO_DECIDE 8

/* Per socket: the verdict, and the owner seen in process context. */
struct http_socket {
  __u32 pid;
  __u8 verdict;
  __u8 undecided_segments;
  __u8 pad[2];
  char comm[NW_TASK_COMM_LEN];
};

struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct http_socket);
} http_sockets SEC(".maps");

/* Records are built here: the capture is too large for the BPF stack. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, char[sizeof(struct http_segment) + HTTP_MAX_CAPTURE]);
} http_scratch SEC(".maps");

const volatile __u32 http_capture_bytes = 256;

/* "GET ", "POST", ... : the methods a request may start with, as the first
 * four bytes in network order. */
static __always_inline bool starts_like_request(__u32 first4) {
  switch (bpf_ntohl(first4)) {
    case 0x47455420: /* "GET " */
    case 0x504f5354: /* "POST" */
    case 0x50555420: /* "PUT " */
    case 0x48454144: /* "HEAD" */
    case 0x44454c45: /* "DELE" */
    case 0x4f505449: /* "OPTI" */
    case 0x50415443: /* "PATC" */
    case 0x434f4e4e: /* "CONN" */
    case 0x54524143: /* "TRAC" */
      return true;
  }
  return false;
}

struct tcp_start {
  __be16 source, dest;
  __be32 seq, ack_seq;
  __u8 data_offset;
};

static __always_inline void capture(struct __sk_buff* skb, bool outbound) {
  struct bpf_sock* sk = skb->sk;
  if (!sk) return;
  sk = bpf_sk_fullsock(sk);
  if (!sk || sk->protocol != IPPROTO_TCP) return;

  /* cgroup_skb sees the packet from its IP header on. */
  __u32 ip_length = 0;
  if (skb->protocol == ETH_P_IP_BE) {
    __u8 version_ihl = 0;
    if (bpf_skb_load_bytes(skb, 0, &version_ihl, 1)) return;
    ip_length = (version_ihl & 0x0f) * 4;
  } else if (skb->protocol == ETH_P_IPV6_BE) {
    ip_length = 40; /* extension headers before TCP are not followed */
  } else {
    return;
  }
  struct tcp_start th;
  if (bpf_skb_load_bytes(skb, ip_length, &th, sizeof(th))) return;
  __u32 payload_offset = ip_length + (th.data_offset >> 4) * 4;
  if (skb->len <= payload_offset) return; /* no payload: ACKs, SYNs, FINs */
  __u32 length = skb->len - payload_offset;

  struct http_socket* state = bpf_sk_storage_get(&http_sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!state || state->verdict == VERDICT_OTHER) return;
  if (state->verdict == VERDICT_UNKNOWN) {
    __u32 first4 = 0;
    if (length >= 4 && bpf_skb_load_bytes(skb, payload_offset, &first4, 4) == 0 &&
        starts_like_request(first4)) {
      state->verdict = VERDICT_HTTP;
    } else {
      if (++state->undecided_segments >= SEGMENTS_TO_DECIDE) state->verdict = VERDICT_OTHER;
      return;
    }
  }

  struct nw_tuple tuple = {};
  tuple.family = sk->family;
  tuple.sport = sk->src_port;
  tuple.dport = bpf_ntohs(sk->dst_port);
  /* A bpf_sock allows only loads at constant offsets: read every address
   * field unconditionally (clang would otherwise share one computed pointer
   * between the IPv4 and IPv6 paths, which the verifier refuses). */
  __u32 src4 = sk->src_ip4, dst4 = sk->dst_ip4;
  __u32 src6[4] = {sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]};
  __u32 dst6[4] = {sk->dst_ip6[0], sk->dst_ip6[1], sk->dst_ip6[2], sk->dst_ip6[3]};
  barrier_var(src4);
  barrier_var(dst4);
  barrier_var(src6[0]);
  barrier_var(src6[1]);
  barrier_var(src6[2]);
  barrier_var(src6[3]);
  barrier_var(dst6[0]);
  barrier_var(dst6[1]);
  barrier_var(dst6[2]);
  barrier_var(dst6[3]);
  if (tuple.family == AF_INET) {
    __builtin_memcpy(tuple.saddr, &src4, 4);
    __builtin_memcpy(tuple.daddr, &dst4, 4);
  } else {
    __builtin_memcpy(tuple.saddr, src6, 16);
    __builtin_memcpy(tuple.daddr, dst6, 16);
  }
  if (!nw_tuple_selected(&tuple)) return;

  __u32 zero = 0;
  struct http_segment* rec = bpf_map_lookup_elem(&http_scratch, &zero);
  if (!rec) return;
  __u64 captured = length < http_capture_bytes ? length : http_capture_bytes;
  /* Bounds the verifier can see: 1..HTTP_MAX_CAPTURE, unsigned. */
  barrier_var(captured);
  if (captured == 0 || captured > HTTP_MAX_CAPTURE) return;
  if (bpf_skb_load_bytes(skb, payload_offset, (void*)(rec + 1), captured)) return;
  rec->cookie = bpf_get_socket_cookie(skb);
  rec->tuple = tuple;
  rec->seq = bpf_ntohl(th.seq);
  rec->length = length;
  rec->pid = state->pid;
  rec->captured = captured;
  rec->outbound = outbound;
  rec->pad = 0;
  __builtin_memcpy(rec->comm, state->comm, sizeof(rec->comm));
  nw_output(rec, sizeof(*rec) + captured, HTTP_RECORD_SEGMENT);
}

SEC("cgroup_skb/egress")
int http_egress(struct __sk_buff* skb) {
  capture(skb, true);
  return 1;
}

SEC("cgroup_skb/ingress")
int http_ingress(struct __sk_buff* skb) {
  capture(skb, false);
  return 1;
}

/* The owner, learned in process context on every send and receive. */
static __always_inline void remember_owner(struct sock* sk) {
  if (!sk || sk->sk_protocol != IPPROTO_TCP) return;
  struct http_socket* state = bpf_sk_storage_get(&http_sockets, sk, 0, 0);
  if (!state || state->verdict != VERDICT_HTTP) return;
  __u32 pid = bpf_get_current_pid_tgid() >> 32;
  if (state->pid == pid) return;
  state->pid = pid;
  bpf_get_current_comm(state->comm, sizeof(state->comm));
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(http_send_owner, struct sock* sk) {
  remember_owner(sk);
  return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(http_recv_owner, struct sock* sk) {
  remember_owner(sk);
  return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(http_socket_closed, struct sock* sk, int oldstate, int newstate) {
  if (newstate != TCP_CLOSE || sk->sk_protocol != IPPROTO_TCP) return 0;
  struct http_socket* state = bpf_sk_storage_get(&http_sockets, sk, 0, 0);
  if (!state || state->verdict != VERDICT_HTTP) return 0;
  struct http_close* rec = nw_reserve(sizeof(*rec), HTTP_RECORD_CLOSE);
  if (!rec) return 0;
  rec->cookie = bpf_get_socket_cookie(sk);
  bpf_ringbuf_submit(rec, 0);
  return 0;
}
