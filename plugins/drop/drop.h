/* drop: records shared by drop.bpf.c and the decoder in plugin.cpp. */
#ifndef NETWATCHER_DROP_H
#define NETWATCHER_DROP_H

#include "netwatcher/bpf/types.h"

#define DROP_RECORD 1
#define DROP_MAX_STACK 32

/* Why a row of drop_counts exists: one per (reason, ethertype, IP protocol). */
struct drop_count_key {
  __u32 reason;
  __u16 ethertype; /* skb->protocol, host order */
  __u8 protocol;   /* IPPROTO_*, 0 when not IP or not parsed */
  __u8 pad;
};

/* Sizes of the two count tables, fixed: drop reasons x ethertypes x IP
 * protocols seen in practice, and the kernel functions that free skbs with a
 * reason, are far fewer. */
#define DROP_MAX_COUNT_KEYS 4096
#define DROP_MAX_LOCATIONS 8192

/* Bounded kernel tables (TableSpec::kernel_index, nw_tables). */
enum drop_table_index {
  DROP_TABLE_COUNTS = 0,    /* drop_counts */
  DROP_TABLE_LOCATIONS = 1, /* drop_locations */
};

struct drop_record {
  struct nw_record_header hdr;
  struct nw_packet packet;
  __u64 location; /* kernel text address that freed the skb */
  __u32 reason;   /* enum skb_drop_reason, raw (subsystem in the high 16 bits) */
  __u32 netns;    /* inode of the network namespace, 0 when unknown */
  __u32 ifindex;  /* device the skb was on, 0 when none */
  __u32 pid;      /* 0 when not dropped in process context */
  __u16 ethertype;
  __u8 parsed;      /* packet holds headers read from the skb */
  __u8 stack_depth; /* frames in stack[] (0 unless the stack is requested) */
  __u32 pad;
  /* cgroup2 id of the skb's socket, else of the dropping process; 0: neither */
  __u64 cgroup;
  char comm[NW_TASK_COMM_LEN];
  __u64 stack[DROP_MAX_STACK];
};

/* Tunables, rodata set by the plugin before load. */
/* How a drop is known to happen in process context (pid/comm) or not. */
enum drop_context {
  DROP_CONTEXT_NONE = 0,          /* unknown: drops carry no pid */
  DROP_CONTEXT_STACK = 1,         /* on the task's own kernel stack (x86_64, arm64) */
  DROP_CONTEXT_SOFTIRQ_HOOKS = 2, /* a per-CPU flag from irq:softirq_entry/exit */
};

/* Reasons (optionally only at one function) that are the kernel's
 * housekeeping, not packets lost: counted apart, never reported as drops. */
#define DROP_HOUSEKEEPING_MAX 8
struct drop_housekeeping {
  __u32 reason;
  __u32 pad;
  __u64 start, end; /* text range of the function; 0, 0: anywhere */
};

struct drop_config {
  __u32 skb_consumed;    /* SKB_CONSUMED in this kernel: not a drop */
  __u32 not_dropped_yet; /* SKB_NOT_DROPPED_YET: not a drop either */
  __u64 max_events_per_second;
  __u8 events; /* emit drop records (counters are always kept) */
  __u8 stack;  /* capture the kernel stack */
  __u8 housekeeping_count;
  __u8 pad[5];
  struct drop_housekeeping housekeeping[DROP_HOUSEKEEPING_MAX];
};

#endif
