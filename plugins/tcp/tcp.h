/* Records shared by tcp.bpf.c and the tcp plugin's decoder. */
#ifndef NETWATCHER_PLUGIN_TCP_H
#define NETWATCHER_PLUGIN_TCP_H

#include "netwatcher/bpf/types.h"

enum tcp_record_type {
  TCP_RECORD_OPEN = 1,     /* reached ESTABLISHED */
  TCP_RECORD_CLOSE = 2,    /* reached CLOSE; state = the state it left */
  TCP_RECORD_SNAPSHOT = 3, /* one live connection, written by the iter/tcp program */
};

enum tcp_direction {
  TCP_DIRECTION_UNKNOWN = 0, /* already open when netwatcher started */
  TCP_DIRECTION_CLIENT = 1,  /* active open (connect) */
  TCP_DIRECTION_SERVER = 2,  /* passive open (accept) */
};

/* Retransmit counters kept per CPU (index into tcp_counters). */
enum tcp_counter {
  TCP_COUNTER_RETRANS_FAST = 0,
  TCP_COUNTER_RETRANS_TIMEOUT = 1,
  TCP_COUNTER_MAX = 2,
};

/* What the kernel remembers about a tracked connection (map `tcp_conns`, keyed
 * by the struct sock address). */
struct tcp_conn_info {
  struct nw_tuple tuple;
  __u64 start_ns; /* SYN_SENT / SYN_RECV; 0 when adopted by the iterator */
  __u32 pid;      /* owner; 0 until seen in process context */
  __u32 fast_retrans;
  __u32 timeout_retrans;
  __u8 direction;
  __u8 tuple_valid;
  __u8 pad[2];
  /* bytes_acked at ESTABLISHED: 1 for active opens (the SYN), else 0. */
  __u32 acked_base;
  __u32 pad2;
  char comm[NW_TASK_COMM_LEN];
};

/* Byte counts are payload only: the kernel's RFC 4898 counters also count the
 * SYN and FIN sequence numbers, which the BPF side subtracts. */
struct tcp_conn_stats {
  __u64 bytes_received;
  __u64 bytes_acked;
  __u32 srtt_us; /* tp->srtt_us >> 3 */
  __u32 rcv_wnd;
  __u32 snd_cwnd;
  __u32 snd_ssthresh;
  __u32 sndbuf;
  __u32 wmem_queued;
  __u32 backlog;
  __u32 max_backlog;
  __u32 total_retrans;
  __u32 pad;
};

struct tcp_conn_record {
  struct nw_record_header hdr;
  __u64 sock;
  struct tcp_conn_info info;
  struct tcp_conn_stats stats;
  __u64 duration_ns; /* 0 when the start is unknown */
  __u32 state;       /* kernel TCP state number */
  __u32 pad;
};

#endif
