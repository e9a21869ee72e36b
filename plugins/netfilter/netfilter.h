/* netfilter: records and maps shared by netfilter.bpf.c and plugin.cpp. */
#ifndef NETWATCHER_NETFILTER_H
#define NETWATCHER_NETFILTER_H

#include "netwatcher/bpf/types.h"

#define NF_RECORD_HOOK 1
#define NF_HOOKS 5    /* NF_INET_PRE_ROUTING .. NF_INET_POST_ROUTING */
#define NF_FAMILIES 2 /* index 0: IPv4, 1: IPv6 */
#define NF_INDEX(family, hook) ((family)*NF_HOOKS + (hook))

/* Bounded kernel tables (TableSpec::kernel_index, nw_tables). */
enum nf_table_index {
  NF_TABLE_PACKETS = 0, /* nf_inflight */
};

enum nf_path {
  NF_PATH_RECEIVE = 0, /* PRE_ROUTING: not routed yet */
  NF_PATH_LOCAL_IN = 1,
  NF_PATH_FORWARD = 2,
  NF_PATH_LOCAL_OUT = 3,
};

/* Per (family, hook), per CPU. */
struct nf_hook_stats {
  __u64 entered;   /* packets that reached the first-priority program */
  __u64 passed;    /* ... and the last-priority one (accepted by every rule) */
  __u64 time_ns;   /* total time between the two, for passed packets */
  __u64 slots[32]; /* NW_LOG2_SLOTS: log2 histogram of time_ns */
};

struct nf_record {
  struct nw_record_header hdr;
  struct nw_packet packet;
  __u64 hook_ns;
  __u32 netns;
  __u32 in_ifindex;
  __u32 out_ifindex;
  __u8 hook;
  __u8 family; /* NFPROTO_IPV4 / NFPROTO_IPV6 */
  __u8 path;   /* enum nf_path */
  __u8 parsed;
};

struct nf_config {
  __u64 max_events_per_second;
  __u8 events;
  __u8 pad[7];
};

#endif
