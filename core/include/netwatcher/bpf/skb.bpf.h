/* netwatcher SDK: reading packet headers out of a struct sk_buff.
 *
 * For programs that see an skb without parsing context (tracepoints, netfilter
 * programs): reads the network header through bpf_probe_read_kernel, so it is
 * safe on any skb, and checks what it reads (IP version against skb->protocol)
 * instead of trusting header offsets that may not be set yet. Include after
 * common.bpf.h. */
#ifndef NETWATCHER_SKB_BPF_H
#define NETWATCHER_SKB_BPF_H

#include "netwatcher/bpf/common.bpf.h"

#define NW_ETH_P_IP 0x0800
#define NW_ETH_P_IPV6 0x86DD
#define NW_IPPROTO_HOPOPTS 0
#define NW_IPPROTO_ICMP 1
#define NW_IPPROTO_TCP 6
#define NW_IPPROTO_UDP 17
#define NW_IPPROTO_ROUTING 43
#define NW_IPPROTO_ICMPV6 58
#define NW_IPPROTO_DSTOPTS 60
#define NW_IPPROTO_SCTP 132
#define NW_IPPROTO_UDPLITE 136
#define NW_IPV6_MAX_EXT_HEADERS 4

#define NW_ICMP_ECHO_REPLY 0
#define NW_ICMP_ECHO_REQUEST 8
#define NW_ICMPV6_ECHO_REQUEST 128
#define NW_ICMPV6_ECHO_REPLY 129

static __always_inline bool nw_icmp_is_echo(__u8 protocol, __u8 type) {
  if (protocol == NW_IPPROTO_ICMP)
    return type == NW_ICMP_ECHO_REQUEST || type == NW_ICMP_ECHO_REPLY;
  if (protocol == NW_IPPROTO_ICMPV6)
    return type == NW_ICMPV6_ECHO_REQUEST || type == NW_ICMPV6_ECHO_REPLY;
  return false;
}

/* The first 8 bytes of the transport header: ports (and the UDP length), or
 * ICMP type, code and, for echo, identifier and sequence. */
static __always_inline void nw_read_transport(const unsigned char* l4, struct nw_packet* p) {
  /* Structs, not byte arrays: clang may address a stack array with `|`,
   * which the verifier refuses on pointers. */
  struct {
    __be16 source, dest, len, check;
  } ports;
  struct {
    __u8 type, code;
    __u16 checksum;
    __be16 id, seq;
  } icmp;
  switch (p->protocol) {
    case NW_IPPROTO_TCP:
    case NW_IPPROTO_UDP:
    case NW_IPPROTO_UDPLITE:
    case NW_IPPROTO_SCTP:
      if (bpf_probe_read_kernel(&ports, sizeof(ports), l4) == 0) {
        p->tuple.sport = bpf_ntohs(ports.source);
        p->tuple.dport = bpf_ntohs(ports.dest);
        p->has_ports = 1;
        if (p->protocol == NW_IPPROTO_UDP || p->protocol == NW_IPPROTO_UDPLITE)
          p->udp_length = bpf_ntohs(ports.len);
      }
      break;
    case NW_IPPROTO_ICMP:
    case NW_IPPROTO_ICMPV6:
      if (bpf_probe_read_kernel(&icmp, sizeof(icmp), l4) == 0) {
        p->icmp_type = icmp.type;
        p->icmp_code = icmp.code;
        if (nw_icmp_is_echo(p->protocol, icmp.type)) {
          p->icmp_id = bpf_ntohs(icmp.id);
          p->icmp_seq = bpf_ntohs(icmp.seq);
        }
      }
      break;
  }
}

/* Parses the IPv4 or IPv6 header at `nh` (and the transport header after it)
 * into `p`, leaving p->length alone. `ipv4`/`ipv6` say which versions the
 * caller accepts. Returns false when no such header is there. */
static __always_inline bool nw_parse_ip(const unsigned char* nh, bool ipv4, bool ipv6,
                                        struct nw_packet* p) {
  __u8 first = 0;
  if (!nh || bpf_probe_read_kernel(&first, 1, nh)) return false;
  __u8 version = first >> 4;
  if (ipv4 && version == 4) {
    struct iphdr ip;
    if (bpf_probe_read_kernel(&ip, sizeof(ip), nh)) return false;
    p->tuple.family = AF_INET;
    __builtin_memcpy(p->tuple.saddr, &ip.saddr, 4);
    __builtin_memcpy(p->tuple.daddr, &ip.daddr, 4);
    p->protocol = ip.protocol;
    /* Only the first fragment carries the transport header. */
    if (bpf_ntohs(ip.frag_off) & 0x1fff) return true;
    p->transport_offset = ip.ihl * 4;
    nw_read_transport(nh + ip.ihl * 4, p);
    return true;
  }
  if (ipv6 && version == 6) {
    struct ipv6hdr ip6;
    if (bpf_probe_read_kernel(&ip6, sizeof(ip6), nh)) return false;
    p->tuple.family = AF_INET6;
    __builtin_memcpy(p->tuple.saddr, &ip6.saddr, 16);
    __builtin_memcpy(p->tuple.daddr, &ip6.daddr, 16);
    __u8 next = ip6.nexthdr;
    __u16 offset = sizeof(ip6);
#pragma unroll
    for (int i = 0; i < NW_IPV6_MAX_EXT_HEADERS; i++) {
      if (next != NW_IPPROTO_HOPOPTS && next != NW_IPPROTO_ROUTING && next != NW_IPPROTO_DSTOPTS)
        break;
      __u8 ext[2];
      if (bpf_probe_read_kernel(ext, 2, nh + offset)) break;
      next = ext[0];
      offset += (ext[1] + 1) * 8;
    }
    p->protocol = next;
    p->transport_offset = offset;
    nw_read_transport(nh + offset, p);
    return true;
  }
  return false;
}

/* Fills `p` from the IPv4/IPv6 header at skb->network_header. `family_hint`
 * is AF_INET/AF_INET6 when the caller knows it (e.g. a netfilter hook's pf),
 * else 0 to go by skb->protocol. Returns false (with `p` zeroed but `length`)
 * when the skb carries no recognisable IP header. */
static __always_inline bool nw_read_skb_packet(const struct sk_buff* skb, __u16 family_hint,
                                               struct nw_packet* p) {
  __builtin_memset(p, 0, sizeof(*p));
  p->length = BPF_CORE_READ(skb, len);
  unsigned char* head = BPF_CORE_READ(skb, head);
  __u16 network = BPF_CORE_READ(skb, network_header);
  __u16 ethertype = bpf_ntohs(BPF_CORE_READ(skb, protocol));
  if (!head) return false;
  bool ipv4 = family_hint ? family_hint == AF_INET : ethertype == NW_ETH_P_IP;
  bool ipv6 = family_hint ? family_hint == AF_INET6 : ethertype == NW_ETH_P_IPV6;
  return nw_parse_ip(head + network, ipv4, ipv6, p);
}

/* The same for a packet the driver has just handed to the stack
 * (net:netif_receive_skb): its network header offset is not set yet, but
 * skb->data points at the IP header. */
static __always_inline bool nw_read_received_packet(const struct sk_buff* skb,
                                                    struct nw_packet* p) {
  __builtin_memset(p, 0, sizeof(*p));
  p->length = BPF_CORE_READ(skb, len);
  __u16 ethertype = bpf_ntohs(BPF_CORE_READ(skb, protocol));
  return nw_parse_ip(BPF_CORE_READ(skb, data), ethertype == NW_ETH_P_IP, ethertype == NW_ETH_P_IPV6,
                     p);
}

#endif
