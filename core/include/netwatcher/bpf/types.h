/* netwatcher SDK: record layouts shared by BPF programs and C++ decoders.
 *
 * Included from both sides: BPF code sees the __u* types from vmlinux.h, C++
 * code from <linux/types.h>. Every struct has explicit padding so both
 * compilers agree on the layout. */
#ifndef NETWATCHER_BPF_TYPES_H
#define NETWATCHER_BPF_TYPES_H

#ifndef __bpf__
#include <linux/types.h>
#endif

/* The version of the contract between the host and every plugin's BPF object:
 * the maps nw_events, nw_lost, nw_suppressed and nw_tables with their key and
 * value types, the rodata nw_wakeup_bytes and nw_filter_cfg, and struct
 * nw_record_header. common.bpf.h records it in each object as the rodata
 * nw_bpf_contract; the host reads it after the plugin's open() and before
 * load, and refuses an object of another version ("BPF object built against
 * contract N, host speaks M"). Raise it with any change of those. The version
 * is independent of the C++ ABI (version.hpp): a plugin of the right ABI can
 * still embed an object built against another common.bpf.h. */
#define NW_BPF_CONTRACT_VERSION 1

#define NW_TASK_COMM_LEN 16
#define NW_MAX_FILTER_PORTS 8
/* Networks per address list of the filter (in-kernel LPM tries). */
#define NW_MAX_FILTER_NETS 256

/* Every ring-buffer record starts with this header. `type` is the plugin's own
 * record discriminator; `timestamp_ns` is bpf_ktime_get_ns() (CLOCK_MONOTONIC). */
struct nw_record_header {
  __u32 type;
  __u32 size; /* sizeof the whole record, checked by decoders */
  __u64 timestamp_ns;
};

/* A connection's addresses in host byte order for ports. IPv4 addresses use
 * the first 4 bytes of saddr/daddr. family is AF_INET (2) or AF_INET6 (10). */
struct nw_tuple {
  __u8 saddr[16];
  __u8 daddr[16];
  __u16 sport; /* local port */
  __u16 dport; /* remote port */
  __u16 family;
  __u16 pad;
};

/* A packet's headers as parsed by nw_read_skb_packet(). tuple.saddr/sport are
 * the packet's source and daddr/dport its destination (not local/remote). */
struct nw_packet {
  struct nw_tuple tuple;
  __u8 protocol;  /* IPPROTO_* after IPv6 extension headers; 0 when unknown */
  __u8 has_ports; /* TCP / UDP / UDP-Lite / SCTP: tuple ports are valid */
  __u8 icmp_type; /* ICMP / ICMPv6 only */
  __u8 icmp_code;
  __u32 length;           /* skb->len */
  __u16 icmp_id;          /* ICMP / ICMPv6 echo request and reply only */
  __u16 icmp_seq;         /* ditto */
  __u16 transport_offset; /* bytes from the IP header to the transport header; 0 if none */
  __u16 udp_length;       /* UDP / UDP-Lite: the header's length field (header + payload) */
};

/* The global filter as the kernel applies it (set as rodata by the plugin). */
struct nw_filter {
  __u32 pid;    /* 0 = any */
  __u32 family; /* 0 = any, else AF_INET / AF_INET6 */
  __u32 nr_sports;
  __u32 nr_dports;
  __u16 sports[NW_MAX_FILTER_PORTS];
  __u16 dports[NW_MAX_FILTER_PORTS];
  /* Networks in nw_local_nets / nw_remote_nets; 0 = any address. */
  __u32 nr_local_nets;
  __u32 nr_remote_nets;
};

/* Key of the address filter's LPM tries: `prefixlen` counts the family byte
 * (8 bits) and then address bits, so IPv4 and IPv6 networks share a trie.
 * IPv4 addresses use addr[0..3]. */
struct nw_net_key {
  __u32 prefixlen;
  __u8 family; /* 4 or 6 */
  __u8 addr[16];
} __attribute__((packed));

/* The most payload bytes the shared L7 capture (plugins/l7) takes from the
 * start of one packet. Pipelined protocols (Redis, 16 commands of ~45 bytes
 * in one segment) need more than 512 to see every message; a protocol asks
 * for what it needs, so the larger bound costs only those that ask. */
#define NW_L7_MAX_CAPTURE 2048

#endif
