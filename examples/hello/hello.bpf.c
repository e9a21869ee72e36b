// SPDX-License-Identifier: GPL-2.0
/* hello: counts program executions in one map slot; the plugin reads it.
 * common.bpf.h gives every plugin's object the maps the host expects
 * (nw_events, nw_lost, the filter), used or not. */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>

#include "netwatcher/bpf/common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} hello_execs SEC(".maps");

SEC("tracepoint/sched/sched_process_exec")
int count_exec(void* ctx) {
  __u32 key = 0;
  __u64* count = bpf_map_lookup_elem(&hello_execs, &key);
  if (count) __sync_fetch_and_add(count, 1);
  return 0;
}
