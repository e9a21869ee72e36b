/* udp: records and maps shared by udp.bpf.c and plugin.cpp. */
#ifndef NETWATCHER_UDP_H
#define NETWATCHER_UDP_H

#include "netwatcher/bpf/types.h"

#define UDP_RECORD_DATAGRAM 1
#define UDP_RECORD_QUEUE_FAILURE 2

enum udp_direction {
  UDP_RX = 0,
  UDP_TX = 1,
  UDP_DIRECTIONS = 2,
};

/* The in-kernel latency histograms. */
enum udp_latency {
  UDP_LATENCY_RX = 0, /* IP layer entry -> socket receive queue */
  UDP_LATENCY_TX = 1, /* send call -> driver accepted the packet */
  UDP_LATENCIES = 2,
};

/* Why the socket refused a datagram (udp:udp_fail_queue_rcv_skb's rc). */
enum udp_failure {
  UDP_FAILURE_RCVBUF = 0, /* -ENOMEM: receive buffer full (SO_RCVBUF) */
  UDP_FAILURE_MEMORY = 1, /* -ENOBUFS: protocol memory limit (udp_mem) */
  UDP_FAILURE_OTHER = 2,
  UDP_FAILURES = 3,
};

/* Bounded kernel tables (TableSpec::kernel_index, nw_tables). */
enum udp_table_index {
  UDP_TABLE_FLOWS = 0,        /* udp_flows */
  UDP_TABLE_RX_DATAGRAMS = 1, /* udp_rx_inflight */
  UDP_TABLE_TX_DATAGRAMS = 2, /* udp_tx_inflight */
  UDP_TABLE_SEND_CALLS = 3,   /* udp_send_start */
  UDP_TABLE_OWNERS = 4,       /* udp_owners */
};

/* Per CPU, one entry: every datagram, filters or not. */
struct udp_stats {
  __u64 datagrams[UDP_DIRECTIONS];
  __u64 bytes[UDP_DIRECTIONS]; /* UDP payload */
  __u64 latency_ns[UDP_LATENCIES];
  __u64 latency_slots[UDP_LATENCIES][32]; /* NW_LOG2_SLOTS */
  __u64 failures[UDP_FAILURES];
};

/* A flow as the host sees it: tuple.saddr/sport are local, daddr/dport remote. */
struct udp_flow_key {
  struct nw_tuple tuple;
  __u32 netns;
  __u32 pad;
};

/* Shared by all CPUs; counters are updated atomically. */
struct udp_flow {
  __u64 datagrams[UDP_DIRECTIONS];
  __u64 bytes[UDP_DIRECTIONS];
  __u64 latency_ns[UDP_DIRECTIONS]; /* sums, over `timed` datagrams */
  __u64 timed[UDP_DIRECTIONS];
  __u64 queue_failures;
  __u64 first_ns;
  __u64 last_ns;
  __u64 cgroup; /* cgroup2 id of the first socket seen on the flow; 0 = none yet */
  __u32 pid;    /* last process seen sending or reading on the flow; 0 = none yet */
  __u32 pad;
  char comm[NW_TASK_COMM_LEN];
};

#define UDP_HAS_KERNEL_NS 1
#define UDP_HAS_PID 2

struct udp_datagram_record {
  struct nw_record_header hdr;
  struct nw_tuple tuple; /* local / remote */
  __u64 sock;
  __u64 kernel_ns; /* rx: IP layer -> socket queue; tx: send call -> driver */
  __u64 cgroup;    /* the socket's cgroup2 id; 0 when unknown */
  __u32 pid;
  __u32 netns;
  __u32 ifindex;
  __u32 length; /* UDP payload bytes */
  char comm[NW_TASK_COMM_LEN];
  __u8 direction;
  __u8 flags; /* UDP_HAS_* */
  __u8 pad[6];
};

/* rx counts datagrams that reached their socket, including those it then
 * refused (counted again as failures). */
struct udp_failure_record {
  struct nw_record_header hdr;
  struct nw_tuple tuple; /* local / remote */
  __u64 sock;
  __s32 rc;
  __u32 netns;
  __u32 ifindex;
  __u32 length;
  __u8 reason; /* enum udp_failure */
  __u8 pad[7];
};

struct udp_config {
  __u64 max_events_per_second;
  __u8 datagram_events;
  __u8 failure_events;
  __u8 pad[6];
};

#endif
