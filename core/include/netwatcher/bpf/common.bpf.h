/* netwatcher SDK: helpers for every *.bpf.c.
 *
 * Include after vmlinux.h and the libbpf headers. Defines the two maps the host
 * expects in every plugin object:
 *   nw_events  ring buffer the host polls (size set by the host before load)
 *   nw_lost    per-CPU count of records that did not fit (reported as
 *              netwatcher_events_lost_total)
 *   nw_suppressed  per-CPU count of records a rate limit held back on purpose
 *              (reported as netwatcher_events_suppressed_total)
 *   nw_tables  per-CPU counts of bounded tables (nw_table_insert/remove),
 *              reported as netwatcher_table_* for tables declared with
 *              PluginHost::track_table()
 * the rodata global filter `nw_filter_cfg`, filled by the plugin before load,
 * the rodata `nw_wakeup_bytes`, filled by the host before load, and the rodata
 * `nw_bpf_contract`, the contract version the host checks before load.
 *
 * Submit records with nw_submit() / nw_output(), never bpf_ringbuf_submit(..., 0):
 * they wake the host only once enough data waits, so a burst of records costs
 * the host one wakeup instead of one per record. */
#ifndef NETWATCHER_COMMON_BPF_H
#define NETWATCHER_COMMON_BPF_H

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "netwatcher/bpf/types.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024);
} nw_events SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} nw_lost SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} nw_suppressed SEC(".maps");

/* Bounded tables: at most NW_MAX_TABLES per plugin, indexed by the
 * TableSpec::kernel_index the plugin gives the host. */
#define NW_MAX_TABLES 16

struct nw_table_counts {
  __u64 inserted; /* new keys */
  __u64 removed;  /* deleted by the BPF code */
  __u64 refused;  /* new keys that found no room (-E2BIG) */
};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, NW_MAX_TABLES);
  __type(key, __u32);
  __type(value, struct nw_table_counts);
} nw_tables SEC(".maps");

#ifndef E2BIG
#define E2BIG 7
#endif
#ifndef EEXIST
#define EEXIST 17
#endif

/* bpf_map_update_elem() on a bounded table, counted under index `table`.
 * Inserts a new key: with BPF_NOEXIST an existing key is left alone (-EEXIST,
 * not counted); with BPF_ANY it is replaced, which the host sees as an entry
 * that left unused (an eviction), so use BPF_ANY only where a leftover under
 * the same key is stale (e.g. keys that are skb addresses). A hash map that is
 * full refuses (-E2BIG, counted); an LRU map makes room instead (the host
 * derives those evictions). Per CPU, no atomics: a lost count under nesting
 * is the price of not bouncing a cache line per packet. */
static __always_inline long nw_table_insert(void* map, __u32 table, const void* key,
                                            const void* value, __u64 flags) {
  long err = bpf_map_update_elem(map, key, value, flags);
  struct nw_table_counts* counts = bpf_map_lookup_elem(&nw_tables, &table);
  if (counts) {
    if (!err)
      counts->inserted += 1;
    else if (err == -E2BIG)
      counts->refused += 1;
  }
  return err;
}

/* bpf_map_delete_elem() on a bounded table; counts keys that were there. */
static __always_inline long nw_table_remove(void* map, __u32 table, const void* key) {
  long err = bpf_map_delete_elem(map, key);
  if (!err) {
    struct nw_table_counts* counts = bpf_map_lookup_elem(&nw_tables, &table);
    if (counts) counts->removed += 1;
  }
  return err;
}

/* One-second window shared by every CPU for nw_rate_allow(). */
struct nw_rate_window {
  __u64 second;
  __u64 count;
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct nw_rate_window);
} nw_rate SEC(".maps");

const volatile struct nw_filter nw_filter_cfg = {};

/* [filter] local_addresses / remote_addresses, filled by the host after load
 * (Skeleton::load); consulted only when nw_filter_cfg counts networks. */
struct nw_net_trie {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __uint(max_entries, NW_MAX_FILTER_NETS);
  __type(key, struct nw_net_key);
  __type(value, __u8);
};
struct nw_net_trie nw_local_nets SEC(".maps");
struct nw_net_trie nw_remote_nets SEC(".maps");

/* Unread bytes in nw_events at which a submit wakes the host ([netwatcher]
 * wakeup_bytes). Below it the record waits for the host's next timed poll
 * (poll_interval). 0: the kernel's default, a wakeup whenever the host had
 * caught up, i.e. up to one per record at moderate rates. */
const volatile __u64 nw_wakeup_bytes = 0;

/* The host/BPF contract this object was built against (NW_BPF_CONTRACT_VERSION,
 * types.h). Read by the host before load; never written. */
const volatile __u32 nw_bpf_contract = NW_BPF_CONTRACT_VERSION;

/* The submit flag for a record of `size` bytes that was just reserved: a
 * wakeup only when the unread data crosses a multiple of nw_wakeup_bytes.
 * Waking on every record above the threshold would cost an irq_work and a
 * cross-CPU wakeup per record exactly when the host is busiest. */
static __always_inline __u64 nw_wakeup_flag(__u64 size) {
  if (!nw_wakeup_bytes) return 0;
  __u64 avail = bpf_ringbuf_query(&nw_events, BPF_RB_AVAIL_DATA);
  if (avail < nw_wakeup_bytes) return BPF_RB_NO_WAKEUP;
  __u64 step = (size + 8 + 7) & ~7ULL; /* plus the ring buffer's own header, 8-byte aligned */
  __u64 before = avail > step ? avail - step : 0;
  return avail / nw_wakeup_bytes != before / nw_wakeup_bytes ? BPF_RB_FORCE_WAKEUP
                                                             : BPF_RB_NO_WAKEUP;
}

/* Commits a record from nw_reserve(). */
static __always_inline void nw_submit(void* record) {
  bpf_ringbuf_submit(record, nw_wakeup_flag(((struct nw_record_header*)record)->size));
}

static __always_inline void nw_count_lost(void) {
  __u32 zero = 0;
  __u64* lost = bpf_map_lookup_elem(&nw_lost, &zero);
  if (lost) *lost += 1;
}

/* Reserve a record of `size` bytes and fill its header; counts a loss and
 * returns NULL when the ring buffer is full. The caller must initialise every
 * other byte (reserved memory is not zeroed) and then submit. */
static __always_inline void* nw_reserve(__u64 size, __u32 type) {
  struct nw_record_header* hdr = bpf_ringbuf_reserve(&nw_events, size, 0);
  if (!hdr) {
    nw_count_lost();
    return NULL;
  }
  hdr->type = type;
  hdr->size = size;
  hdr->timestamp_ns = bpf_ktime_get_ns();
  return hdr;
}

/* Global per-second budget for optional per-packet records: true while fewer
 * than `per_second` records were allowed in the current second (0 = no limit).
 * A refusal is counted in nw_suppressed. Two CPUs crossing a second boundary
 * together may both reset the window; a few extra records are the price of
 * taking no lock. */
static __always_inline bool nw_rate_allow(__u64 per_second) {
  if (!per_second) return true;
  __u32 zero = 0;
  struct nw_rate_window* w = bpf_map_lookup_elem(&nw_rate, &zero);
  if (!w) return false;
  __u64 second = bpf_ktime_get_ns() / 1000000000ULL;
  if (w->second != second) {
    w->second = second;
    w->count = 0;
  }
  if (__sync_fetch_and_add(&w->count, 1) < per_second) return true;
  __u64* suppressed = bpf_map_lookup_elem(&nw_suppressed, &zero);
  if (suppressed) *suppressed += 1;
  return false;
}

/* Index of the highest set bit (0 for 0 and 1): the bucket of a log2 histogram
 * whose bucket i counts values in [2^i, 2^(i+1)). */
static __always_inline __u32 nw_log2(__u64 v) {
  __u32 r = 0;
  if (v >> 32) {
    v >>= 32;
    r += 32;
  }
  if (v >> 16) {
    v >>= 16;
    r += 16;
  }
  if (v >> 8) {
    v >>= 8;
    r += 8;
  }
  if (v >> 4) {
    v >>= 4;
    r += 4;
  }
  if (v >> 2) {
    v >>= 2;
    r += 2;
  }
  if (v >> 1) r += 1;
  return r;
}

/* Slots of an in-kernel log2 histogram of nanoseconds; the host turns them
 * into Prometheus buckets with log2_slots_to_buckets() (kernel.hpp). */
#define NW_LOG2_SLOTS 32

/* Counts `value` in its slot of `slots[NW_LOG2_SLOTS]` (the last slot takes
 * everything above). Not atomic: use per-CPU storage. */
static __always_inline void nw_log2_slot_add(__u64* slots, __u64 value) {
  __u32 slot = nw_log2(value);
  if (slot >= NW_LOG2_SLOTS) slot = NW_LOG2_SLOTS - 1;
  slots[slot & (NW_LOG2_SLOTS - 1)] += 1;
}

/* For records built elsewhere (e.g. in a per-CPU scratch map, when they are
 * too big for the stack): fills the header at the start of `record` and
 * copies the whole record into the ring buffer, counting a loss when it is
 * full. */
/* Copies a record built elsewhere (e.g. in a per-CPU scratch map) into the
 * ring buffer. `wake_now`: wake the host at once, for the rare record it
 * should not wait for (wakeup_bytes or its poll tick) to read. */
static __always_inline void nw_output_record(void* record, __u64 size, __u32 type, bool wake_now) {
  struct nw_record_header* hdr = record;
  hdr->type = type;
  hdr->size = size;
  hdr->timestamp_ns = bpf_ktime_get_ns();
  __u64 flags = wake_now ? BPF_RB_FORCE_WAKEUP : nw_wakeup_flag(size);
  if (bpf_ringbuf_output(&nw_events, record, size, flags)) nw_count_lost();
}

static __always_inline void nw_output(void* record, __u64 size, __u32 type) {
  nw_output_record(record, size, type, false);
}

static __always_inline bool nw_port_in(__u16 port, const volatile __u16* ports, __u32 nr) {
#pragma unroll
  for (int i = 0; i < NW_MAX_FILTER_PORTS; i++) {
    if (i >= nr) break;
    if (ports[i] == port) return true;
  }
  return false;
}

/* Whether `addr` of `family` (AF_INET / AF_INET6) is in one of the networks
 * of an address-filter trie. */
static __always_inline bool nw_addr_in(void* nets, __u16 family, const __u8* addr) {
  struct nw_net_key key = {};
  if (family == AF_INET) {
    key.family = 4;
    key.prefixlen = 8 + 32;
  } else if (family == AF_INET6) {
    key.family = 6;
    key.prefixlen = 8 + 128;
  } else {
    return false;
  }
  __builtin_memcpy(key.addr, addr, sizeof(key.addr));
  return bpf_map_lookup_elem(nets, &key) != NULL;
}

/* True when a connection with this tuple passes the configured
 * port/family/address filter. */
static __always_inline bool nw_tuple_selected(const struct nw_tuple* t) {
  if (nw_filter_cfg.family && nw_filter_cfg.family != t->family) return false;
  if (nw_filter_cfg.nr_sports &&
      !nw_port_in(t->sport, nw_filter_cfg.sports, nw_filter_cfg.nr_sports))
    return false;
  if (nw_filter_cfg.nr_dports &&
      !nw_port_in(t->dport, nw_filter_cfg.dports, nw_filter_cfg.nr_dports))
    return false;
  if (nw_filter_cfg.nr_local_nets && !nw_addr_in(&nw_local_nets, t->family, t->saddr)) return false;
  if (nw_filter_cfg.nr_remote_nets && !nw_addr_in(&nw_remote_nets, t->family, t->daddr))
    return false;
  return true;
}

/* The same filter for a packet, which has no local or remote side: a port
 * or address list matches when either the source or the destination is in
 * it. */
static __always_inline bool nw_packet_selected(const struct nw_tuple* t) {
  if (nw_filter_cfg.family && nw_filter_cfg.family != t->family) return false;
  if (nw_filter_cfg.nr_sports &&
      !nw_port_in(t->sport, nw_filter_cfg.sports, nw_filter_cfg.nr_sports) &&
      !nw_port_in(t->dport, nw_filter_cfg.sports, nw_filter_cfg.nr_sports))
    return false;
  if (nw_filter_cfg.nr_dports &&
      !nw_port_in(t->sport, nw_filter_cfg.dports, nw_filter_cfg.nr_dports) &&
      !nw_port_in(t->dport, nw_filter_cfg.dports, nw_filter_cfg.nr_dports))
    return false;
  if (nw_filter_cfg.nr_local_nets && !nw_addr_in(&nw_local_nets, t->family, t->saddr) &&
      !nw_addr_in(&nw_local_nets, t->family, t->daddr))
    return false;
  if (nw_filter_cfg.nr_remote_nets && !nw_addr_in(&nw_remote_nets, t->family, t->saddr) &&
      !nw_addr_in(&nw_remote_nets, t->family, t->daddr))
    return false;
  return true;
}

/* True when the pid filter is off or matches; pid 0 (not yet known) passes, so
 * callers re-check once the owner is known. */
static __always_inline bool nw_pid_selected(__u32 pid) {
  return !nw_filter_cfg.pid || !pid || nw_filter_cfg.pid == pid;
}

/* Reads the local/remote addresses and ports of a socket (CO-RE). */
static __always_inline void nw_read_sock_tuple(const struct sock* sk, struct nw_tuple* t) {
  __builtin_memset(t, 0, sizeof(*t));
  t->family = BPF_CORE_READ(sk, __sk_common.skc_family);
  t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
  /* Unhashing a socket (its move to CLOSE, e.g. before an abort's RST) gives
   * back the port and zeroes skc_num; inet_sport keeps the bound port. */
  if (!t->sport) t->sport = bpf_ntohs(BPF_CORE_READ((const struct inet_sock*)sk, inet_sport));
  t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
  if (t->family == AF_INET) {
    bpf_core_read(t->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
    bpf_core_read(t->daddr, 4, &sk->__sk_common.skc_daddr);
  } else if (t->family == AF_INET6) {
    bpf_core_read(t->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
    bpf_core_read(t->daddr, 16, &sk->__sk_common.skc_v6_daddr);
  }
}

/* The cgroup2 id of the cgroup a socket belongs to: its creator's, which an
 * accepted socket inherits from its listener. This is the value the host
 * resolves for events with a `cgroup_id` field (path, container, pod), and
 * it is right in softirq, where the current task is not the owner. 0 for a
 * time-wait or request socket, and when the kernel's socket has no cgroup
 * pointer (before 5.15 it was encoded in
 * one word, which this does not decode). */
static __always_inline __u64 nw_sock_cgroup_id(const struct sock* sk) {
  if (!sk || !bpf_core_field_exists(sk->sk_cgrp_data.cgroup)) return 0;
  /* Time-wait and request sockets are only a sock_common: no cgroup. */
  __u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
  if (state == 6 /* TCP_TIME_WAIT */ || state == 12 /* TCP_NEW_SYN_RECV */) return 0;
  const struct cgroup* cgroup = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
  if (!cgroup) return 0;
  return BPF_CORE_READ(cgroup, kn, id);
}

/* Sequence-number comparison that survives wraparound (RFC 1982 style). */
static __always_inline bool nw_seq_before(__u32 a, __u32 b) {
  return (__s32)(a - b) < 0;
}
static __always_inline bool nw_seq_after(__u32 a, __u32 b) {
  return nw_seq_before(b, a);
}

#endif
