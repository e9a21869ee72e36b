// SPDX-License-Identifier: GPL-2.0
/* HTTP from the traffic itself: the SDK's L7 capture (netwatcher/bpf/l7.bpf.h)
 * with a detector for HTTP/1.x requests. Requests are paired with responses
 * in user space. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "netwatcher/bpf/l7.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* A socket is HTTP when its first payload starts like a request method
 * ("GET ", "POST", ...), in whichever direction it comes. */
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

static __always_inline void capture(struct __sk_buff* skb, bool outbound) {
  struct nw_l7_segment_info seg;
  if (!nw_l7_segment(skb, &seg)) return;
  if (!nw_l7_decide(&seg, starts_like_request(seg.first4))) return;
  nw_l7_output(skb, &seg, outbound);
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

/* Before the data leaves (sock_send_length would come after the first
 * segment), so even a connection's first request carries its sender. */
SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(http_send_owner, struct sock* sk) {
  nw_l7_remember_owner(sk);
  return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(http_recv_owner, struct sock* sk) {
  nw_l7_remember_owner(sk);
  return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(http_socket_closed, struct sock* sk, int oldstate, int newstate) {
  nw_l7_socket_closed(sk, newstate);
  return 0;
}
