/* icmp: records and maps shared by icmp.bpf.c and plugin.cpp. */
#ifndef NETWATCHER_ICMP_H
#define NETWATCHER_ICMP_H

#include "netwatcher/bpf/types.h"

#define ICMP_RECORD_MESSAGE 1
#define ICMP_RECORD_ERROR_SENT 2

#define ICMP_RX 0
#define ICMP_TX 1
#define ICMP_FAMILIES 2 /* index 0: ICMP (IPv4), 1: ICMPv6 */
/* Message counters, one per family, direction and type, in one per-CPU
 * entry so the host reads them all with one lookup. */
#define ICMP_COUNTERS (ICMP_FAMILIES * 2 * 256) /* a power of two */
#define ICMP_COUNTER(family, direction, type) ((((family)*2 + (direction)) << 8) | (type))

struct icmp_counters {
  __u64 messages[ICMP_COUNTERS];
};

/* In-kernel histograms, one per family and kind. */
#define ICMP_ECHO_RTT 0   /* echo request sent -> its reply received */
#define ICMP_ECHO_REPLY 1 /* echo request received -> the kernel's reply sent */
#define ICMP_HISTOGRAM(family, kind) ((family)*2 + (kind))

struct icmp_latency {
  __u64 count;
  __u64 sum_ns;
  __u64 slots[32]; /* NW_LOG2_SLOTS */
};

/* icmp:icmp_send, per CPU, by type and code of the error sent. */
struct icmp_error_key {
  __u32 type;
  __u32 code;
};

/* An echo request waiting for its reply (ICMP_ECHO_RTT: we sent it) or for
 * the kernel's answer (ICMP_ECHO_REPLY: we received it). `peer` is the other
 * end; netns keeps namespaces on one host apart. */
struct echo_key {
  __u8 peer[16];
  __u32 netns;
  __u16 id;
  __u16 seq;
  __u8 family;
  __u8 kind;
  __u16 pad;
};

struct echo_pending {
  __u64 ns;
  __u64 cgroup; /* the sending socket's cgroup2 id, when known */
  __u32 pid;    /* the sender of a request we sent, when known */
  __u32 pad;
  char comm[NW_TASK_COMM_LEN];
};

/* ICMPv4 (type, code) pairs counted in icmp_errors_sent: fixed, as the
 * kernel sends a handful of kinds only. */
#define ICMP_ERROR_KINDS 256

/* Bounded kernel tables (TableSpec::kernel_index, nw_tables). */
enum icmp_table_index {
  ICMP_TABLE_PENDING_ECHOES = 0, /* icmp_echo_pending */
  ICMP_TABLE_ERROR_KINDS = 1,    /* icmp_errors_sent */
};

#define ICMP_HAS_RTT 1
#define ICMP_HAS_REPLY 2
#define ICMP_HAS_INNER 4
#define ICMP_HAS_PID 8
#define ICMP_IS_ECHO 16

struct icmp_record {
  struct nw_record_header hdr;
  struct nw_packet packet; /* the ICMP message: addresses, type, code, echo id/seq */
  struct nw_packet inner;  /* the packet an error message quotes (ICMP_HAS_INNER) */
  __u64 rtt_ns;            /* echo reply received: since our request was sent */
  __u64 reply_ns;          /* echo reply sent: since the request was received */
  __u64 cgroup;            /* the user socket's cgroup2 id (as pid); 0 when none */
  __u32 netns;
  __u32 ifindex;
  __u32 pid;
  __u32 pad;
  char comm[NW_TASK_COMM_LEN];
  __u8 direction;
  __u8 flags; /* ICMP_HAS_*, ICMP_IS_ECHO */
  __u8 pad2[6];
};

struct icmp_error_record {
  struct nw_record_header hdr;
  struct nw_packet offending; /* the packet that caused the error */
  __s32 type;
  __s32 code;
  __u32 netns;
  __u32 pad;
};

struct icmp_config {
  __u64 max_events_per_second;
  __u8 message_events;
  __u8 error_events;
  __u8 pad[6];
};

#endif
