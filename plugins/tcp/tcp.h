/* Records shared by tcp.bpf.c and the tcp plugin's decoder. */
#ifndef NETWATCHER_PLUGIN_TCP_H
#define NETWATCHER_PLUGIN_TCP_H

#include "netwatcher/bpf/types.h"

enum tcp_record_type {
  TCP_RECORD_OPEN = 1,       /* reached ESTABLISHED */
  TCP_RECORD_CLOSE = 2,      /* reached CLOSE; state = the state it left */
  TCP_RECORD_SNAPSHOT = 3,   /* one live connection, written by the iter/tcp program */
  TCP_RECORD_STATE = 4,      /* a state transition (states = true) */
  TCP_RECORD_RESET = 5,      /* an RST sent or received */
  TCP_RECORD_RETRANSMIT = 6, /* one retransmitted segment (retrans = true) */
  TCP_RECORD_CONGESTION = 7, /* a congestion (CA) state change (retrans = true) */
  TCP_RECORD_ERROR = 8,      /* an error packet (errors = true) */
  TCP_RECORD_LAYER = 9,      /* per-layer times of one segment (layer_events = true) */
};

enum tcp_direction {
  TCP_DIRECTION_UNKNOWN = 0, /* already open when netwatcher started */
  TCP_DIRECTION_CLIENT = 1,  /* active open (connect) */
  TCP_DIRECTION_SERVER = 2,  /* passive open (accept) */
};

/* Error packets, by what is wrong with them. */
enum tcp_error_kind {
  TCP_ERROR_BAD_CHECKSUM = 0,
  TCP_ERROR_SEQ_BEFORE_WINDOW = 1, /* all of it was received before (old duplicate) */
  TCP_ERROR_SEQ_BEYOND_WINDOW = 2, /* starts or ends after the receive window */
  TCP_ERROR_INVALID_ACK = 3,       /* acks data never sent, or far too old */
  TCP_ERROR_PAWS = 4,              /* timestamp older than the last one (RFC 7323) */
  TCP_ERROR_KINDS = 5,
};

/* Counters kept per CPU (index into tcp_counters). */
enum tcp_counter {
  /* Retransmitted segments (tcp_skb_pcount), as the kernel's RetransSegs. */
  TCP_COUNTER_RETRANS_FAST = 0,
  TCP_COUNTER_RETRANS_TIMEOUT = 1,
  TCP_COUNTER_RESET_RECEIVED = 2,
  TCP_COUNTER_RESET_SENT = 3,
  TCP_COUNTER_CONG_STATE = 4,    /* + new state (TCP_CA_Open .. TCP_CA_Loss) */
  TCP_COUNTER_ERROR = 9,         /* + enum tcp_error_kind */
  TCP_COUNTER_RTT_OVERFLOW = 14, /* srtt samples whose series did not fit in tcp_rtt */
  TCP_COUNTER_RETRANS_SKBS = 15, /* retransmitted skbs (a GSO skb counts once) */
  /* Each + enum tcp_direction. Connections are counted whether or not they
   * found room in tcp_conns; bytes of those that did not count at close. */
  TCP_COUNTER_OPENED = 16,
  TCP_COUNTER_CLOSED = 19,
  TCP_COUNTER_UNTRACKED_RECEIVED = 22,
  TCP_COUNTER_UNTRACKED_ACKED = 25,
  TCP_COUNTER_MAX = 28,
};

/* Bounded kernel tables (TableSpec::kernel_index, nw_tables). */
enum tcp_table {
  TCP_TABLE_CONNECTIONS = 0, /* tcp_conns */
  TCP_TABLE_RX_PACKETS = 1,  /* tcp_rx_inflight */
  TCP_TABLE_TX_PACKETS = 2,  /* tcp_tx_inflight */
  TCP_TABLE_RTT_SERIES = 3,  /* tcp_rtt (rtt_every_change) */
};

#define TCP_CA_STATES 5

/* Per-segment layer times. A stage the packet was not seen in is TCP_TIME_UNKNOWN. */
enum tcp_layer {
  TCP_LAYER_LINK = 0,      /* rx: driver hand-off to IP entry; tx: qdisc + driver */
  TCP_LAYER_IP = 1,        /* rx: IP entry to LOCAL_IN done; tx: LOCAL_OUT to dev queue */
  TCP_LAYER_TRANSPORT = 2, /* rx: LOCAL_IN to TCP processing; tx: write() to LOCAL_OUT */
  TCP_LAYER_APP = 3,       /* rx: TCP processing to the application's read; tx: none */
  TCP_LAYER_TOTAL = 4,     /* rx: driver to read; tx: write() to driver done */
  TCP_LAYERS = 5,
};
#define TCP_TIME_UNKNOWN (~0ULL)

enum tcp_packet_direction {
  TCP_RX = 0,
  TCP_TX = 1,
  TCP_PACKET_DIRECTIONS = 2,
};

/* What the kernel remembers about a tracked connection (map `tcp_conns`, keyed
 * by the struct sock address). */
struct tcp_conn_info {
  struct nw_tuple tuple;
  __u64 start_ns;        /* SYN_SENT / SYN_RECV; 0 when adopted by the iterator */
  __u32 pid;             /* owner; 0 until seen in process context */
  __u32 fast_retrans;    /* segments */
  __u32 timeout_retrans; /* segments */
  __u8 direction;
  __u8 tuple_valid;
  __u8 start_old_state; /* the state before SYN_SENT, reported late (states = true) */
  __u8 pad;
  /* bytes_acked at ESTABLISHED: 1 for active opens (the SYN), else 0. */
  __u32 acked_base;
  __u32 netns; /* inode of the socket's network namespace */
  /* tp->total_retrans when the last retransmit attempt was seen: tells a
   * failed attempt the kernel counted from one it refused before counting. */
  __u32 total_retrans_seen;
  __u32 pad2;
  __u64 state_ns; /* when the current state was entered; 0 when unknown */
  __u64 cgroup;   /* the socket's cgroup2 id (nw_sock_cgroup_id); 0 when unknown */
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
  __u32 flags;       /* TCP_CONN_*; 0 from BPF */
};

/* Statistics of a snapshot row read without the iterator (sock_diag): the
 * accept backlog is not in INET_DIAG for connected sockets. */
#define TCP_CONN_NO_BACKLOG 1u
/* ... and tcp_info has no tcpi_rcv_wnd on this kernel. */
#define TCP_CONN_NO_RCV_WND 2u

/* Who a per-event record is about; pid 0 / empty comm when unknown. */
struct tcp_who {
  __u64 sock;
  __u64 cgroup;          /* 0 when unknown */
  struct nw_tuple tuple; /* local / remote */
  __u32 pid;
  __u32 pad;
  char comm[NW_TASK_COMM_LEN];
};

struct tcp_state_record {
  struct nw_record_header hdr;
  struct tcp_who who;
  __u64 duration_ns; /* time in old_state; 0 when unknown */
  __u8 old_state;
  __u8 new_state;
  __u8 pad[6];
};

#define TCP_NO_STATE 0xff

struct tcp_reset_record {
  struct nw_record_header hdr;
  struct tcp_who who;
  __u32 reason; /* sent: enum sk_rst_reason; received: 0 */
  __u8 sent;
  __u8 state; /* socket state then, TCP_NO_STATE when no socket */
  __u8 pad[2];
};

struct tcp_retransmit_record {
  struct nw_record_header hdr;
  struct tcp_who who;
  __u32 seq;
  __u32 length; /* sequence space of the skb (SYN/FIN count one) */
  __u8 state;
  __u8 timeout;   /* 1: after RTO (socket in TCP_CA_Loss), 0: fast */
  __u16 segments; /* MSS-sized segments in the skb (tcp_skb_pcount) */
  __u8 pad[4];
};

struct tcp_congestion_record {
  struct nw_record_header hdr;
  struct tcp_who who;
  __u8 old_state; /* TCP_CA_* */
  __u8 new_state;
  __u8 pad[6];
};

struct tcp_error_record {
  struct nw_record_header hdr;
  struct tcp_who who; /* sock 0 when no socket was found */
  __u32 seq;
  __u32 ack;
  __u32 payload;
  __u32 kernel_reason; /* enum skb_drop_reason */
  __u32 rcv_nxt;       /* 0 with no socket */
  __u32 rcv_wnd;
  __s32 offset; /* seq - rcv_nxt, wraparound-safe; 0 with no socket */
  __u8 kind;    /* enum tcp_error_kind */
  __u8 has_socket;
  __u8 pad[2];
};

struct tcp_layer_record {
  struct nw_record_header hdr;
  struct tcp_who who;
  __u64 ns[TCP_LAYERS]; /* TCP_TIME_UNKNOWN when a stage was not seen */
  __u32 seq;
  __u32 ack;
  __u32 length;   /* payload bytes */
  __u8 direction; /* enum tcp_packet_direction */
  __u8 pad[3];
};

/* In-kernel srtt histogram series: per destination (saddr and ports zero) or
 * per connection (rtt_per_connection). */
struct tcp_rtt_key {
  __u8 daddr[16];
  __u8 saddr[16];
  __u16 family;
  __u16 sport;
  __u16 dport;
  __u16 pad;
};

struct tcp_rtt_hist {
  __u64 slots[32]; /* NW_LOG2_SLOTS, of nanoseconds */
  __u64 sum_ns;
};

/* Per-CPU layer histograms: [direction][layer]. */
struct tcp_layer_hist {
  __u64 slots[TCP_PACKET_DIRECTIONS][TCP_LAYERS][32];
  __u64 sum_ns[TCP_PACKET_DIRECTIONS][TCP_LAYERS];
  __u64 unmatched[TCP_PACKET_DIRECTIONS]; /* segments whose start was not seen */
};

#endif
