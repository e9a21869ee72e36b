/* nic: maps shared by nic.bpf.c and plugin.cpp. */
#ifndef NETWATCHER_NIC_H
#define NETWATCHER_NIC_H

#include "netwatcher/bpf/types.h"

#define NIC_RX 0
#define NIC_TX 1
#define NIC_IFNAMSIZ 16

/* Fixed sizes: (netns, ifindex, queue, direction) rows, and devices. Entries
 * are never removed, so devices that come and go (containers' veths) use
 * them up over time; nic_traffic's refusals are then counted as full. */
#define NIC_MAX_QUEUES 4096
#define NIC_MAX_DEVICES 4096

/* Bounded kernel tables (TableSpec::kernel_index, nw_tables). */
enum nic_table_index {
  NIC_TABLE_QUEUES = 0,  /* nic_traffic */
  NIC_TABLE_DEVICES = 1, /* nic_names */
};

struct nic_key {
  __u32 netns;
  __u32 ifindex;
  __u16 queue;
  __u8 direction; /* NIC_RX / NIC_TX */
  __u8 pad;
};

/* Per CPU. Bytes are frames as the device sees them (link-layer header
 * included, like the interface's own counters); packets count each GSO/GRO
 * segment, i.e. packets on the wire. */
struct nic_counters {
  __u64 packets;
  __u64 bytes;
};

struct nic_device {
  __u32 netns;
  __u32 ifindex;
};

#endif
