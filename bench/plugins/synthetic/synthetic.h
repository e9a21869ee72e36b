/* Record of the synthetic bench plugin: shaped like a real per-packet record
 * (tuple, owner, a size and a latency) so the host pipeline does the work it
 * does for udp or tcp_layer events. */
#ifndef NETWATCHER_BENCH_SYNTHETIC_H
#define NETWATCHER_BENCH_SYNTHETIC_H

#include "netwatcher/bpf/types.h"

#define SYNTHETIC_RECORD 1

struct synthetic_record {
  struct nw_record_header hdr;
  struct nw_tuple tuple;
  __u64 sequence; /* per-CPU counter: lets a reader check ordering and loss */
  __u64 latency_ns;
  __u32 pid;
  __u32 length;
  char comm[NW_TASK_COMM_LEN];
};

#endif
