/* netwatcher SDK: capture for application-protocol (L7) plugins.
 *
 * Captures the first bytes of every TCP segment of the sockets a protocol
 * plugin cares about, where each socket meets IP (cgroup_skb egress and
 * ingress programs, which the host attaches at the cgroup v2 root, so in
 * every netns), as struct nw_l7_segment records (types.h) for
 * netwatcher/l7_capture.hpp and netwatcher/l7_tracker.hpp in user space.
 *
 * A plugin writes five small programs around these helpers; see
 * plugins/http/http.bpf.c:
 *
 *   static __always_inline void capture(struct __sk_buff* skb, bool outbound) {
 *     struct nw_l7_segment_info seg;
 *     if (!nw_l7_segment(skb, &seg)) return;
 *     if (!nw_l7_decide(&seg, my_detect(seg.first4, seg.length))) return;
 *     nw_l7_output(skb, &seg, outbound);
 *   }
 *   SEC("cgroup_skb/egress")  ... capture(skb, true);  return 1;
 *   SEC("cgroup_skb/ingress") ... capture(skb, false); return 1;
 *   SEC("tp_btf/tcp_sendmsg_locked") / sock_recv_length: nw_l7_remember_owner(sk)
 *   SEC("tp_btf/inet_sock_set_state"): nw_l7_socket_closed(sk, newstate)
 *
 * The verdict is per socket (socket storage): the first payload segments of
 * a socket, in either direction, are offered to the detector; once it says
 * yes the socket is watched, after NW_L7_SEGMENTS_TO_DECIDE noes it is left
 * alone for good (one storage lookup per segment from then on).
 * `nw_l7_capture_bytes` (rodata) sets the bytes captured per segment, at most
 * NW_L7_MAX_CAPTURE. Records honour the global filter (nw_filter_cfg). */
#ifndef NETWATCHER_L7_BPF_H
#define NETWATCHER_L7_BPF_H

#include "netwatcher/bpf/common.bpf.h"

#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif
#define NW_L7_ETH_P_IP_BE 0x0008   /* htons(0x0800) */
#define NW_L7_ETH_P_IPV6_BE 0xdd86 /* htons(0x86dd) */
#define NW_L7_SEGMENTS_TO_DECIDE 8

enum nw_l7_verdict { NW_L7_UNDECIDED = 0, NW_L7_WATCHED = 1, NW_L7_IGNORED = 2 };

/* Per socket: the verdict, and the owner seen in process context. */
struct nw_l7_socket {
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
  __type(value, struct nw_l7_socket);
} nw_l7_sockets SEC(".maps");

/* Records are built here: the capture is too large for the BPF stack. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, char[sizeof(struct nw_l7_segment) + NW_L7_MAX_CAPTURE]);
} nw_l7_scratch SEC(".maps");

const volatile __u32 nw_l7_capture_bytes = 256;

/* What nw_l7_segment() found out about a segment. */
struct nw_l7_segment_info {
  struct bpf_sock* sk;
  struct nw_l7_socket* state;
  __u32 payload_offset; /* from the IP header */
  __u32 length;         /* payload bytes */
  __u32 seq;
  __u32 first4; /* the first payload bytes as on the wire; 0 when fewer than 4 */
};

struct nw_l7_tcp_start {
  __be16 source, dest;
  __be32 seq, ack_seq;
  __u8 data_offset;
};

/* A TCP segment with payload of a socket not yet ignored: fills `seg`.
 * False for everything else (no socket, not TCP, no payload, ignored). */
static __always_inline bool nw_l7_segment(struct __sk_buff* skb, struct nw_l7_segment_info* seg) {
  struct bpf_sock* sk = skb->sk;
  if (!sk) return false;
  sk = bpf_sk_fullsock(sk);
  if (!sk || sk->protocol != IPPROTO_TCP) return false;
  /* cgroup_skb sees the packet from its IP header on. */
  __u32 ip_length = 0;
  if (skb->protocol == NW_L7_ETH_P_IP_BE) {
    __u8 version_ihl = 0;
    if (bpf_skb_load_bytes(skb, 0, &version_ihl, 1)) return false;
    ip_length = (version_ihl & 0x0f) * 4;
  } else if (skb->protocol == NW_L7_ETH_P_IPV6_BE) {
    ip_length = 40; /* extension headers before TCP are not followed */
  } else {
    return false;
  }
  struct nw_l7_tcp_start th;
  if (bpf_skb_load_bytes(skb, ip_length, &th, sizeof(th))) return false;
  __u32 payload_offset = ip_length + (th.data_offset >> 4) * 4;
  if (skb->len <= payload_offset) return false; /* ACKs, SYNs, FINs */
  struct nw_l7_socket* state =
      bpf_sk_storage_get(&nw_l7_sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!state || state->verdict == NW_L7_IGNORED) return false;
  seg->sk = sk;
  seg->state = state;
  seg->payload_offset = payload_offset;
  seg->length = skb->len - payload_offset;
  seg->seq = bpf_ntohl(th.seq);
  seg->first4 = 0;
  if (state->verdict == NW_L7_UNDECIDED && seg->length >= 4)
    bpf_skb_load_bytes(skb, payload_offset, &seg->first4, 4);
  return true;
}

/* For a socket still undecided, records the detector's answer for this
 * segment. True when the socket is watched. */
static __always_inline bool nw_l7_decide(struct nw_l7_segment_info* seg, bool detected) {
  struct nw_l7_socket* state = seg->state;
  if (state->verdict == NW_L7_WATCHED) return true;
  if (detected) {
    state->verdict = NW_L7_WATCHED;
    return true;
  }
  if (++state->undecided_segments >= NW_L7_SEGMENTS_TO_DECIDE) state->verdict = NW_L7_IGNORED;
  return false;
}

/* Outputs the segment of a watched socket: tuple, owner, first bytes. */
static __always_inline void nw_l7_output(struct __sk_buff* skb,
                                         const struct nw_l7_segment_info* seg, bool outbound) {
  struct bpf_sock* sk = seg->sk;
  struct nw_tuple tuple = {};
  tuple.family = sk->family;
  tuple.sport = sk->src_port;
  tuple.dport = bpf_ntohs(sk->dst_port);
  /* A bpf_sock allows only loads at constant offsets: read every address
   * word unconditionally (clang would otherwise share one computed pointer
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
  struct nw_l7_segment* rec = bpf_map_lookup_elem(&nw_l7_scratch, &zero);
  if (!rec) return;
  __u64 captured = seg->length < nw_l7_capture_bytes ? seg->length : nw_l7_capture_bytes;
  /* Bounds the verifier can see: 1..NW_L7_MAX_CAPTURE, unsigned. */
  barrier_var(captured);
  if (captured == 0 || captured > NW_L7_MAX_CAPTURE) return;
  if (bpf_skb_load_bytes(skb, seg->payload_offset, (void*)(rec + 1), captured)) return;
  rec->cookie = bpf_get_socket_cookie(skb);
  rec->tuple = tuple;
  rec->seq = seg->seq;
  rec->length = seg->length;
  rec->pid = seg->state->pid;
  rec->captured = captured;
  rec->outbound = outbound;
  rec->pad = 0;
  __builtin_memcpy(rec->comm, seg->state->comm, sizeof(rec->comm));
  nw_output(rec, sizeof(*rec) + captured, NW_L7_RECORD_SEGMENT);
}

/* From tcp_sendmsg_locked / sock_recv_length (process context): the owner
 * of a socket not (yet) ignored. The storage is created here when needed:
 * a client's first send comes before its first segment is judged, and that
 * request should carry its sender. */
static __always_inline void nw_l7_remember_owner(struct sock* sk) {
  if (!sk || sk->sk_protocol != IPPROTO_TCP) return;
  struct nw_l7_socket* state =
      bpf_sk_storage_get(&nw_l7_sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!state || state->verdict == NW_L7_IGNORED) return;
  __u32 pid = bpf_get_current_pid_tgid() >> 32;
  if (state->pid == pid) return;
  state->pid = pid;
  bpf_get_current_comm(state->comm, sizeof(state->comm));
}

/* From inet_sock_set_state: a watched socket's CLOSE, so user space reports
 * its unanswered requests. */
static __always_inline void nw_l7_socket_closed(struct sock* sk, int newstate) {
  if (newstate != TCP_CLOSE || sk->sk_protocol != IPPROTO_TCP) return;
  struct nw_l7_socket* state = bpf_sk_storage_get(&nw_l7_sockets, sk, 0, 0);
  if (!state || state->verdict != NW_L7_WATCHED) return;
  struct nw_l7_close* rec = nw_reserve(sizeof(*rec), NW_L7_RECORD_CLOSE);
  if (!rec) return;
  rec->cookie = bpf_get_socket_cookie(sk);
  nw_submit(rec);
}

#endif
