// SPDX-License-Identifier: GPL-2.0
/* One record per getppid() from the load generator (the pid of the global
 * filter, -p): a tracepoint the generator can fire millions of times per
 * second, so the host pipeline, not the network stack, is what is measured. */
#include "vmlinux.h"

#include "netwatcher/bpf/common.bpf.h"
#include "synthetic.h"

char LICENSE[] SEC("license") = "GPL";

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} synthetic_sequence SEC(".maps");

/* Records per getppid() ([plugins.synthetic] burst): with several, one
 * syscall of the generator yields many records, so a single generator core
 * outruns the agent's core. */
const volatile __u32 synthetic_burst = 1;

SEC("tp/syscalls/sys_enter_getppid")
int synthetic_tick(void* ctx) {
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  __u32 pid = pid_tgid >> 32;
  if (!nw_filter_cfg.pid || pid != nw_filter_cfg.pid) return 0;
  __u32 zero = 0;
  __u64* sequence = bpf_map_lookup_elem(&synthetic_sequence, &zero);
  if (!sequence) return 0;
  char comm[NW_TASK_COMM_LEN];
  bpf_get_current_comm(comm, sizeof(comm));
  for (__u32 i = 0; i < 64; i++) {
    if (i >= synthetic_burst) break;
    struct synthetic_record* r = nw_reserve(sizeof(*r), SYNTHETIC_RECORD);
    if (!r) continue; /* counted as lost; the rest of the burst is still tried */
    __u64 n = (*sequence)++;
    __builtin_memset(&r->tuple, 0, sizeof(r->tuple));
    r->tuple.family = AF_INET;
    r->tuple.saddr[0] = 10;
    r->tuple.saddr[3] = 1;
    r->tuple.daddr[0] = 10;
    r->tuple.daddr[3] = 2;
    r->tuple.sport = 40000 + (n & 1023);
    r->tuple.dport = 53;
    r->sequence = n;
    r->latency_ns = 1000 + (n & 4095);
    r->pid = pid;
    r->length = 64 + (n & 511);
    __builtin_memcpy(r->comm, comm, sizeof(comm));
    nw_submit(r);
  }
  return 0;
}
