// SPDX-License-Identifier: GPL-2.0
/* TCP connection tracking from stable hooks only (tracepoints, tp_btf, iter).
 *
 * A connection is tracked from SYN_SENT (active) or SYN_RECV (passive) until
 * CLOSE, keyed by its struct sock address. The owner's pid is taken in process
 * context: connect() for clients, the first send/recv for servers (accept runs
 * in the server's context but has no tracepoint). Live statistics are not
 * sampled per packet: the iter/tcp program reads them straight from every
 * tcp_sock when the host asks for a snapshot, so tracking costs nothing on the
 * data path. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "netwatcher/bpf/common.bpf.h"
#include "netwatcher/bpf/skb.bpf.h"
#include "tcp.h"

char LICENSE[] SEC("license") = "GPL";

#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif

/* Not preallocated: memory follows the connections in use, so the default
 * capacity can cover a busy server (an entry is allocated per open, never
 * per packet). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __uint(max_entries, 131072); /* resized by the plugin from max_connections */
  __type(key, __u64);
  __type(value, struct tcp_conn_info);
} tcp_conns SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, TCP_COUNTER_MAX);
  __type(key, __u32);
  __type(value, __u64);
} tcp_counters SEC(".maps");

/* Scratch space: tcp_conn_record is too large for the 512-byte BPF stack
 * together with everything else in the iterator. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct tcp_conn_record);
} tcp_scratch SEC(".maps");

/* srtt histograms per destination (or connection), per CPU: a shared value
 * would bounce its cache line between CPUs on every segment. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, 256); /* resized from max_rtt_series */
  __type(key, struct tcp_rtt_key);
  __type(value, struct tcp_rtt_hist);
} tcp_rtt SEC(".maps");

/* Per-socket marks that spare the per-segment and per-call programs their
 * hash lookups; freed by the kernel with the socket. */
struct tcp_sock_mark {
  __u32 sampled_srtt_us; /* the srtt last added to the histogram */
  __u8 owner_wanted;     /* tracked, accepted, owner not seen yet */
  __u8 refused;          /* tcp_conns was full: 1 + enum tcp_direction */
  __u8 pad[2];
};

struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct tcp_sock_mark);
} tcp_sock_marks SEC(".maps");

/* Inserted as the first value of a new tcp_rtt series; never written. */
const struct tcp_rtt_hist tcp_rtt_empty = {};

/* Feature switches, set by the plugin before load. */
const volatile bool tcp_state_events = false;
const volatile bool tcp_retransmit_events = false;
const volatile bool tcp_rtt_per_connection = false;
const volatile bool tcp_rtt_every_change = false; /* rtt_probe_btf keeps sampled_srtt_us */
const volatile bool tcp_layer_events = false;
const volatile __u64 tcp_max_events_per_second = 0;

static __always_inline void count(__u32 counter) {
  __u64* value = bpf_map_lookup_elem(&tcp_counters, &counter);
  if (value) *value += 1;
}

static __always_inline void count_by(__u32 counter, __u64 n) {
  __u64* value = bpf_map_lookup_elem(&tcp_counters, &counter);
  if (value) *value += n;
}

static __always_inline bool filter_active(void) {
  return nw_filter_cfg.family || nw_filter_cfg.nr_sports || nw_filter_cfg.nr_dports ||
         nw_filter_cfg.nr_local_nets || nw_filter_cfg.nr_remote_nets || nw_filter_cfg.pid;
}

/* Reads the tuple of a tracked connection once its local port is bound. */
static __always_inline void ensure_tuple(const struct sock* sk, struct tcp_conn_info* info) {
  if (info->tuple_valid) return;
  nw_read_sock_tuple(sk, &info->tuple);
  info->tuple_valid = info->tuple.sport != 0;
}

/* Identity of an event's socket: from the tracking map when it is tracked,
 * else read from the socket with the owner unknown. */
static __always_inline void fill_who(struct tcp_who* who, const struct sock* sk,
                                     const struct tcp_conn_info* info) {
  who->sock = (__u64)sk;
  who->pad = 0;
  if (info) {
    if (info->tuple_valid)
      who->tuple = info->tuple;
    else
      nw_read_sock_tuple(sk, &who->tuple);
    who->pid = info->pid;
    who->cgroup = info->cgroup;
    __builtin_memcpy(who->comm, info->comm, sizeof(who->comm));
  } else {
    nw_read_sock_tuple(sk, &who->tuple);
    who->cgroup = nw_sock_cgroup_id(sk);
    who->pid = 0;
    __builtin_memset(who->comm, 0, sizeof(who->comm));
  }
}

/* The filter for events about a socket: tuple always, pid once known (an
 * untracked socket with a pid filter set is not selected). */
static __always_inline bool who_selected(const struct tcp_who* who) {
  if (!nw_tuple_selected(&who->tuple)) return false;
  return !nw_filter_cfg.pid || who->pid == nw_filter_cfg.pid;
}

static __always_inline void read_stats(const struct sock* sk, const struct tcp_conn_info* info,
                                       __u32 state, struct tcp_conn_stats* s) {
  const struct tcp_sock* tp = (const struct tcp_sock*)sk;
  __u64 received = BPF_CORE_READ(tp, bytes_received);
  __u64 acked = BPF_CORE_READ(tp, bytes_acked);
  /* tcp_fin() sets SOCK_DONE when the peer's FIN is consumed. */
  unsigned long flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
  if ((flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) && received) received--;
  /* Our FIN counts once it is acked: everything up to write_seq (which
   * includes the FIN) is acked in a state that sent one. */
  bool fin_sent = state == TCP_FIN_WAIT1 || state == TCP_FIN_WAIT2 || state == TCP_CLOSING ||
                  state == TCP_LAST_ACK;
  if (fin_sent && BPF_CORE_READ(tp, snd_una) == BPF_CORE_READ(tp, write_seq) && acked) acked--;
  s->bytes_received = received;
  s->bytes_acked = acked > info->acked_base ? acked - info->acked_base : 0;
  s->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
  s->rcv_wnd = BPF_CORE_READ(tp, rcv_wnd);
  s->snd_cwnd = BPF_CORE_READ(tp, snd_cwnd);
  s->snd_ssthresh = BPF_CORE_READ(tp, snd_ssthresh);
  s->sndbuf = BPF_CORE_READ(sk, sk_sndbuf);
  s->wmem_queued = BPF_CORE_READ(sk, sk_wmem_queued);
  s->backlog = BPF_CORE_READ(sk, sk_ack_backlog);
  s->max_backlog = BPF_CORE_READ(sk, sk_max_ack_backlog);
  s->total_retrans = BPF_CORE_READ(tp, total_retrans);
  s->pad = 0;
}

static __always_inline void fill_record(struct tcp_conn_record* rec, __u64 key,
                                        const struct tcp_conn_info* info, const struct sock* sk,
                                        __u32 state, __u64 now) {
  rec->sock = key;
  rec->info = *info;
  read_stats(sk, info, state, &rec->stats);
  rec->duration_ns = info->start_ns ? now - info->start_ns : 0;
  rec->state = state;
  rec->flags = 0;
}

static __always_inline void emit(__u32 type, __u64 key, const struct tcp_conn_info* info,
                                 const struct sock* sk, __u32 state) {
  struct tcp_conn_record* rec = nw_reserve(sizeof(*rec), type);
  if (!rec) return;
  fill_record(rec, key, info, sk, state, rec->hdr.timestamp_ns);
  nw_submit(rec);
}

/* One state transition; `at_ns` overrides the record's time (0: now) and
 * `since_ns` is when old_state was entered (0: unknown). */
static __always_inline void emit_state(const struct tcp_who* who, __u8 old_state, __u8 new_state,
                                       __u64 at_ns, __u64 since_ns) {
  struct tcp_state_record* r = nw_reserve(sizeof(*r), TCP_RECORD_STATE);
  if (!r) return;
  if (at_ns) r->hdr.timestamp_ns = at_ns;
  r->who = *who;
  r->duration_ns = since_ns && r->hdr.timestamp_ns > since_ns ? r->hdr.timestamp_ns - since_ns : 0;
  r->old_state = old_state;
  r->new_state = new_state;
  __builtin_memset(r->pad, 0, sizeof(r->pad));
  nw_submit(r);
}

/* Transitions of sockets that are not tracked: listeners, connections that
 * predate netwatcher and were not adopted yet. listen() and close() run in
 * the owner's context, so the current task owns a listener. */
static __always_inline void emit_untracked_state(const struct sock* sk, int oldstate,
                                                 int newstate) {
  struct tcp_who who;
  fill_who(&who, sk, NULL);
  if (oldstate == TCP_LISTEN || newstate == TCP_LISTEN) {
    who.pid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(who.comm, sizeof(who.comm));
  }
  if (who_selected(&who)) emit_state(&who, oldstate, newstate, 0, 0);
}

/* Per-connection srtt series end with their connection. */
static __always_inline void forget_rtt_series(const struct nw_tuple* t) {
  if (!tcp_rtt_per_connection) return;
  struct tcp_rtt_key rtt = {};
  rtt.family = t->family;
  __builtin_memcpy(rtt.daddr, t->daddr, 16);
  __builtin_memcpy(rtt.saddr, t->saddr, 16);
  rtt.sport = t->sport;
  rtt.dport = t->dport;
  nw_table_remove(&tcp_rtt, TCP_TABLE_RTT_SERIES, &rtt);
}

/* A connection the full table refused, as handle_state() is told about it:
 * TCP_NOT_REFUSED, or its direction (from the socket's mark; unknown for the
 * classic tracepoint, which cannot read marks). */
#define TCP_NOT_REFUSED 0xff

/* Opens, closes and bytes of a connection tcp_conns had no room for: counted
 * all the same, only not in the table. The tuple filter applies as for
 * tracked ones (a pid filter is checked by the caller). */
static __always_inline void count_untracked(const struct sock* sk, int oldstate, int newstate,
                                            __u8 refused) {
  if (refused == TCP_NOT_REFUSED) return;
  struct nw_tuple tuple;
  nw_read_sock_tuple(sk, &tuple);
  if (!nw_tuple_selected(&tuple)) return;
  if (newstate == TCP_ESTABLISHED) {
    __u8 direction = oldstate == TCP_SYN_SENT   ? TCP_DIRECTION_CLIENT
                     : oldstate == TCP_SYN_RECV ? TCP_DIRECTION_SERVER
                                                : refused;
    count(TCP_COUNTER_OPENED + (direction % 3));
  } else if (newstate == TCP_CLOSE && oldstate != TCP_LISTEN) {
    struct tcp_conn_info none = {};
    /* An active open's bytes_acked counts its SYN; an accepted socket is
     * born with its SYN-ACK acked (see adopt_tcp). */
    none.acked_base = refused == TCP_DIRECTION_SERVER ? 0 : 1;
    struct tcp_conn_stats stats;
    read_stats(sk, &none, oldstate, &stats);
    __u32 direction = refused % 3;
    count(TCP_COUNTER_CLOSED + direction);
    count_by(TCP_COUNTER_UNTRACKED_RECEIVED + direction, stats.bytes_received);
    count_by(TCP_COUNTER_UNTRACKED_ACKED + direction, stats.bytes_acked);
  }
}

/* Returns the direction of a connection that tcp_conns refused (the tp_btf
 * caller marks its socket), else TCP_NOT_REFUSED. */
static __always_inline __u8 handle_state(const struct sock* sk, int oldstate, int newstate,
                                         __u8 refused) {
  if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP) return TCP_NOT_REFUSED;
  __u64 key = (__u64)sk;
  __u64 now = bpf_ktime_get_ns();

  if (newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV) {
    struct tcp_conn_info info = {};
    info.start_ns = now;
    info.state_ns = now;
    info.start_old_state = oldstate;
    info.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
    info.cgroup = nw_sock_cgroup_id(sk);
    if (newstate == TCP_SYN_SENT) {
      /* connect() runs in the caller's context. */
      info.pid = bpf_get_current_pid_tgid() >> 32;
      if (!nw_pid_selected(info.pid)) return TCP_NOT_REFUSED;
      bpf_get_current_comm(info.comm, sizeof(info.comm));
      info.direction = TCP_DIRECTION_CLIENT;
      /* Its state event waits for the local port (next transition). */
    } else {
      /* Softirq: whoever runs now is not the owner. */
      info.direction = TCP_DIRECTION_SERVER;
      if (tcp_state_events) {
        struct tcp_who who;
        fill_who(&who, sk, &info);
        if (nw_tuple_selected(&who.tuple)) emit_state(&who, oldstate, newstate, 0, 0);
      }
    }
    long err = nw_table_insert(&tcp_conns, TCP_TABLE_CONNECTIONS, &key, &info, BPF_NOEXIST);
    /* A leftover of a socket freed without CLOSE at the same address. */
    if (err == -EEXIST) bpf_map_update_elem(&tcp_conns, &key, &info, BPF_EXIST);
    /* A server's owner is only learnt from the table: with a pid filter
     * its connection cannot be counted. */
    if (err == -E2BIG && (info.direction == TCP_DIRECTION_CLIENT || !nw_filter_cfg.pid))
      return info.direction;
    return TCP_NOT_REFUSED;
  }

  struct tcp_conn_info* info = bpf_map_lookup_elem(&tcp_conns, &key);
  if (!info) {
    count_untracked(sk, oldstate, newstate, refused);
    if (tcp_state_events) emit_untracked_state(sk, oldstate, newstate);
    return TCP_NOT_REFUSED;
  }
  if (!info->tuple_valid) {
    /* The local port is only bound after SYN_SENT, so read the tuple late.
     * At CLOSE it may be unbound already: keep what there is. */
    nw_read_sock_tuple(sk, &info->tuple);
    info->tuple_valid = 1;
    if (!nw_tuple_selected(&info->tuple)) {
      nw_table_remove(&tcp_conns, TCP_TABLE_CONNECTIONS, &key);
      return TCP_NOT_REFUSED;
    }
  }
  if (tcp_state_events) {
    struct tcp_who who;
    fill_who(&who, sk, info);
    if (oldstate == TCP_SYN_SENT && info->direction == TCP_DIRECTION_CLIENT)
      emit_state(&who, info->start_old_state, TCP_SYN_SENT, info->start_ns, 0);
    /* Stamped with the same `now` that starts the next state, so the
     * durations of a connection add up to its lifetime exactly. */
    emit_state(&who, oldstate, newstate, now, info->state_ns);
  }
  info->state_ns = now;
  if (newstate == TCP_ESTABLISHED) {
    info->acked_base = BPF_CORE_READ((const struct tcp_sock*)sk, bytes_acked);
    count(TCP_COUNTER_OPENED + (info->direction % 3));
    emit(TCP_RECORD_OPEN, key, info, sk, newstate);
  } else if (newstate == TCP_CLOSE) {
    count(TCP_COUNTER_CLOSED + (info->direction % 3));
    emit(TCP_RECORD_CLOSE, key, info, sk, oldstate);
    forget_rtt_series(&info->tuple);
    nw_table_remove(&tcp_conns, TCP_TABLE_CONNECTIONS, &key);
  }
  return TCP_NOT_REFUSED;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(set_state_btf, const struct sock* sk, const int oldstate, const int newstate) {
  __u8 marked = TCP_NOT_REFUSED;
  if (newstate == TCP_ESTABLISHED || newstate == TCP_CLOSE) {
    struct tcp_sock_mark* mark = bpf_sk_storage_get(&tcp_sock_marks, (struct sock*)sk, 0, 0);
    if (mark && mark->refused) marked = mark->refused - 1;
  }
  __u8 refused = handle_state(sk, oldstate, newstate, marked);
  /* Counted at this CLOSE: not again at destruction. */
  if (newstate == TCP_CLOSE && marked != TCP_NOT_REFUSED) {
    struct tcp_sock_mark* mark = bpf_sk_storage_get(&tcp_sock_marks, (struct sock*)sk, 0, 0);
    if (mark) mark->refused = 0;
  }
  if (refused != TCP_NOT_REFUSED) {
    struct tcp_sock_mark* mark =
        bpf_sk_storage_get(&tcp_sock_marks, (struct sock*)sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (mark) mark->refused = refused + 1;
  }
  /* An accepted connection learns its owner on its first send or receive;
   * until then the mark sends those calls to the tracking map. */
  if (newstate == TCP_SYN_RECV) {
    __u64 key = (__u64)sk;
    if (bpf_map_lookup_elem(&tcp_conns, &key)) {
      struct tcp_sock_mark* mark =
          bpf_sk_storage_get(&tcp_sock_marks, (struct sock*)sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
      if (mark) mark->owner_wanted = 1;
    }
  }
  return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int set_state_tp(struct trace_event_raw_inet_sock_set_state* ctx) {
  if (ctx->protocol != IPPROTO_TCP) return 0;
  /* No marks here: an untracked connection counts as refused, of unknown
   * direction at close (unless a pid filter makes that a guess). */
  handle_state((const struct sock*)ctx->skaddr, ctx->oldstate, ctx->newstate,
               nw_filter_cfg.pid ? TCP_NOT_REFUSED : TCP_DIRECTION_UNKNOWN);
  return 0;
}

/* The sequence range of a segment, from TCP_SKB_CB(skb) (skb->cb). */
static __always_inline void read_skb_seq(const struct sk_buff* skb, __u32* seq, __u32* end_seq) {
  struct {
    __u32 seq, end_seq;
  } cb = {};
  bpf_probe_read_kernel(&cb, sizeof(cb),
                        (const void*)skb + bpf_core_field_offset(struct sk_buff, cb));
  *seq = cb.seq;
  *end_seq = cb.end_seq;
}

static __always_inline __u8 ca_state(const struct sock* sk) {
  const struct inet_connection_sock* icsk = (const struct inet_connection_sock*)sk;
  return BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_state);
}

/* tcp_skb_pcount(): the segments a (GSO) skb goes out as, which is what the
 * kernel adds to RetransSegs and total_retrans. */
static __always_inline __u16 skb_segments(const struct sk_buff* skb) {
  __u16 segs = 0;
  if (skb)
    bpf_probe_read_kernel(&segs, sizeof(segs),
                          (const void*)skb + bpf_core_field_offset(struct sk_buff, cb) +
                              bpf_core_field_offset(struct tcp_skb_cb, tcp_gso_segs));
  return segs ? segs : 1;
}

/* Since 6.9 the tracepoint also fires for attempts that failed (err != 0).
 * The kernel counts RetransSegs and total_retrans once the segment is handed
 * to tcp_transmit_skb(), so a segment the qdisc or netfilter then drops counts
 * (err NET_XMIT_DROP, -EPERM, -ENOBUFS), and an attempt refused before that
 * does not: the original still in a host queue (-EBUSY), a receive window
 * shrunk below it (-EAGAIN), no memory to trim or split it (-ENOMEM), no route
 * (-EHOSTUNREACH). The transmit path can fail with some of those same errors
 * after counting (__dev_queue_xmit's -ENOMEM, ip_queue_xmit's -EHOSTUNREACH),
 * so for a tracked connection the kernel's own total decides: an attempt it
 * counted moved tp->total_retrans since the previous attempt. */
static __always_inline bool retransmit_counted(const struct sock* sk, struct tcp_conn_info* info,
                                               int err) {
  __u32 total = BPF_CORE_READ((const struct tcp_sock*)sk, total_retrans);
  bool moved = info && total != info->total_retrans_seen;
  if (info) info->total_retrans_seen = total;
  if (err >= 0) return true;
  if (info) return moved;
  return err != -16 /* EBUSY */ && err != -11 /* EAGAIN */ && err != -12 /* ENOMEM */ &&
         err != -113 /* EHOSTUNREACH */;
}

static __always_inline void handle_retransmit(const struct sock* sk, const struct sk_buff* skb,
                                              int err) {
  __u64 key = (__u64)sk;
  struct tcp_conn_info* info = bpf_map_lookup_elem(&tcp_conns, &key);
  if (!retransmit_counted(sk, info, err)) return;
  /* RTO puts the socket in TCP_CA_Loss before retransmitting; fast
   * retransmits happen in Disorder/Recovery. */
  bool timeout = ca_state(sk) == TCP_CA_Loss;
  __u16 segments = skb_segments(skb);
  if (info) {
    ensure_tuple(sk, info);
    if (timeout)
      __sync_fetch_and_add(&info->timeout_retrans, segments);
    else
      __sync_fetch_and_add(&info->fast_retrans, segments);
  }
  /* Like every other counter, the global one follows the filter. */
  struct tcp_who who;
  if (tcp_retransmit_events || filter_active()) {
    fill_who(&who, sk, info);
    if (!who_selected(&who)) return;
  }
  count_by(timeout ? TCP_COUNTER_RETRANS_TIMEOUT : TCP_COUNTER_RETRANS_FAST, segments);
  count(TCP_COUNTER_RETRANS_SKBS);
  if (!tcp_retransmit_events || !nw_rate_allow(tcp_max_events_per_second)) return;
  struct tcp_retransmit_record* r = nw_reserve(sizeof(*r), TCP_RECORD_RETRANSMIT);
  if (!r) return;
  r->who = who;
  __u32 seq = 0, end_seq = 0;
  if (skb) read_skb_seq(skb, &seq, &end_seq);
  r->seq = seq;
  r->length = end_seq - seq;
  r->state = BPF_CORE_READ(sk, __sk_common.skc_state);
  r->timeout = timeout;
  r->segments = segments;
  __builtin_memset(r->pad, 0, sizeof(r->pad));
  nw_submit(r);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(retransmit_btf, const struct sock* sk, const struct sk_buff* skb, int err) {
  handle_retransmit(sk, skb, err);
  return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int retransmit_tp(struct trace_event_raw_tcp_retransmit_skb* ctx) {
  int err = bpf_core_field_exists(ctx->err) ? BPF_CORE_READ(ctx, err) : 0;
  handle_retransmit((const struct sock*)ctx->skaddr, (const struct sk_buff*)ctx->skbaddr, err);
  return 0;
}

/* Passive connections learn their owner on its first send or receive. */
static __always_inline void claim_owner(const void* sk) {
  __u64 key = (__u64)sk;
  struct tcp_conn_info* info = bpf_map_lookup_elem(&tcp_conns, &key);
  if (!info || info->pid) return;
  __u32 pid = bpf_get_current_pid_tgid() >> 32;
  if (!nw_pid_selected(pid)) {
    nw_table_remove(&tcp_conns, TCP_TABLE_CONNECTIONS, &key);
    return;
  }
  info->pid = pid;
  bpf_get_current_comm(info->comm, sizeof(info->comm));
}

/* tp_btf runs on every send and receive call of the host: a socket without
 * the mark costs one pointer read (sk->sk_bpf_storage), not a hash lookup.
 * The classic-tracepoint twins have no BTF socket for sk storage and look
 * the tracking map up for every TCP call. */
const volatile bool tcp_owner_marks = false; /* set_state_btf runs and marks sockets */

static __always_inline void claim_marked_owner(struct sock* sk) {
  if (!tcp_owner_marks) {
    claim_owner(sk);
    return;
  }
  struct tcp_sock_mark* mark = bpf_sk_storage_get(&tcp_sock_marks, sk, 0, 0);
  if (!mark || !mark->owner_wanted) return;
  mark->owner_wanted = 0;
  claim_owner(sk);
  /* Without storage the socket's later calls stop at sk->sk_bpf_storage
   * == NULL instead of searching its storage list. */
  if (!tcp_rtt_every_change) bpf_sk_storage_delete(&tcp_sock_marks, sk);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(recv_length_btf, struct sock* sk) {
  claim_marked_owner(sk);
  return 0;
}

SEC("tracepoint/sock/sock_recv_length")
int recv_length_tp(struct trace_event_raw_sock_msg_length* ctx) {
  if (ctx->protocol == IPPROTO_TCP) claim_owner(ctx->sk);
  return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(send_length_btf, struct sock* sk) {
  claim_marked_owner(sk);
  return 0;
}

SEC("tracepoint/sock/sock_send_length")
int send_length_tp(struct trace_event_raw_sock_msg_length* ctx) {
  if (ctx->protocol == IPPROTO_TCP) claim_owner(ctx->sk);
  return 0;
}

/* Listening ports seen by adopt_tcp, per namespace: a connection adopted on
 * one of them was accepted there. Filled by the one walk at start-up; LRU so
 * that a host with more listeners than fit loses classifications (those
 * connections count as clients), never the walk. */
struct tcp_listener {
  __u32 netns;
  __u16 port;
  __u16 pad;
};
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 4096);
  __type(key, struct tcp_listener);
  __type(value, __u8);
} tcp_adopt_listeners SEC(".maps");

/* Run once at start-up, in every network namespace (iter/tcp walks the one
 * it was created in): connections that were open before netwatcher started
 * are adopted, so they show in the table and their close is reported. The
 * walk visits listening sockets before established ones. */
SEC("iter/tcp")
int adopt_tcp(struct bpf_iter__tcp* ctx) {
  struct sock_common* skc = ctx->sk_common;
  if (!skc) return 0;
  struct tcp_sock* tp = bpf_skc_to_tcp_sock(skc);
  if (!tp) return 0; /* request and time-wait sockets */
  const struct sock* sk = (const struct sock*)tp;
  __u32 state = BPF_CORE_READ(sk, __sk_common.skc_state);
  struct tcp_listener port = {
      .netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
      .port = BPF_CORE_READ(sk, __sk_common.skc_num),
  };
  if (state == TCP_LISTEN) {
    __u8 one = 1;
    bpf_map_update_elem(&tcp_adopt_listeners, &port, &one, BPF_ANY);
    return 0;
  }
  if (state == TCP_CLOSE || state == TCP_SYN_SENT) return 0;
  __u64 key = (__u64)sk;
  if (bpf_map_lookup_elem(&tcp_conns, &key)) return 0;
  /* Refused once (at open, or by an earlier walk): not again every snapshot. */
  struct tcp_sock_mark* mark = bpf_sk_storage_get(&tcp_sock_marks, (struct sock*)sk, 0, 0);
  if (mark && mark->refused) return 0;
  struct tcp_conn_info adopted = {};
  nw_read_sock_tuple(sk, &adopted.tuple);
  adopted.tuple_valid = 1;
  adopted.netns = port.netns;
  adopted.cgroup = nw_sock_cgroup_id(sk);
  adopted.total_retrans_seen = BPF_CORE_READ(tp, total_retrans);
  /* Accepted on a listening port, else connected. An active open's
   * bytes_acked counts its SYN (acked by the SYN-ACK); an accepted socket is
   * born after the handshake, with the SYN-ACK already acked. */
  if (bpf_map_lookup_elem(&tcp_adopt_listeners, &port)) {
    adopted.direction = TCP_DIRECTION_SERVER;
  } else {
    adopted.direction = TCP_DIRECTION_CLIENT;
    adopted.acked_base = 1;
  }
  if (!nw_tuple_selected(&adopted.tuple)) return 0;
  long err = nw_table_insert(&tcp_conns, TCP_TABLE_CONNECTIONS, &key, &adopted, BPF_NOEXIST);
  /* With a pid filter the owner is unknown here: as in handle_state(), a
   * refused socket is not marked, or another process's close would count. */
  if (err != 0 && (err != -E2BIG || nw_filter_cfg.pid)) return 0;
  mark = bpf_sk_storage_get(&tcp_sock_marks, (struct sock*)sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!mark) return 0;
  if (err)
    mark->refused = 1 + adopted.direction;
  else
    mark->owner_wanted = 1; /* its next send or receive names the owner */
  return 0;
}

/* Run once after adopt_tcp: the owner of each adopted connection, from the
 * open files of every task, as ss -p finds it. Without it an adopted
 * connection learns its owner at its next send or receive, and one that
 * closes first (a FIN handled in softirq) never does. */
SEC("iter/task_file")
int adopt_owners(struct bpf_iter__task_file* ctx) {
  struct file* file = ctx->file;
  struct task_struct* task = ctx->task;
  if (!file || !task) return 0;
  struct socket* sock = bpf_sock_from_file(file);
  if (!sock) return 0;
  __u64 key = (__u64)BPF_CORE_READ(sock, sk);
  struct tcp_conn_info* info = bpf_map_lookup_elem(&tcp_conns, &key);
  if (!info || info->pid) return 0;
  __u32 pid = BPF_CORE_READ(task, tgid);
  /* As claim_owner(): with a pid filter, another process's connection goes. */
  if (!nw_pid_selected(pid)) {
    nw_table_remove(&tcp_conns, TCP_TABLE_CONNECTIONS, &key);
    return 0;
  }
  info->pid = pid;
  bpf_probe_read_kernel_str(info->comm, sizeof(info->comm), &task->group_leader->comm);
  return 0;
}

/* The connection table: every tracked connection, in every network
 * namespace, with statistics read from its socket now. Entries are deleted
 * when their socket closes or is destroyed, so each key is a live socket. */
SEC("iter/bpf_map_elem")
int dump_conns(struct bpf_iter__bpf_map_elem* ctx) {
  __u64* key = ctx->key;
  struct tcp_conn_info* value = ctx->value;
  if (!key || !value) return 0;
  if (!value->tuple_valid) return 0; /* SYN_SENT: no local port yet */
  __u32 zero = 0;
  struct tcp_conn_record* rec = bpf_map_lookup_elem(&tcp_scratch, &zero);
  if (!rec) return 0;
  struct tcp_conn_info info;
  __builtin_memcpy(&info, value, sizeof(info));
  const struct sock* sk = (const struct sock*)*key;
  __u32 state = BPF_CORE_READ(sk, __sk_common.skc_state);
  __u64 now = bpf_ktime_get_ns();
  rec->hdr.type = TCP_RECORD_SNAPSHOT;
  rec->hdr.size = sizeof(*rec);
  rec->hdr.timestamp_ns = now;
  fill_record(rec, *key, &info, sk, state, now);
  bpf_seq_write(ctx->meta->seq, rec, sizeof(*rec));
  return 0;
}

/* ---- Resets ---------------------------------------------------------- */

/* The local/remote tuple of a received packet (its destination is local). */
static __always_inline bool packet_who(const struct sk_buff* skb, struct tcp_who* who) {
  struct nw_packet p;
  __builtin_memset(who, 0, sizeof(*who));
  if (!nw_read_skb_packet(skb, 0, &p) || p.protocol != IPPROTO_TCP) return false;
  who->tuple.family = p.tuple.family;
  __builtin_memcpy(who->tuple.saddr, p.tuple.daddr, 16);
  __builtin_memcpy(who->tuple.daddr, p.tuple.saddr, 16);
  who->tuple.sport = p.tuple.dport;
  who->tuple.dport = p.tuple.sport;
  return true;
}

static __always_inline void handle_reset(const struct sock* sk, const struct sk_buff* skb,
                                         __u32 reason, bool sent) {
  struct tcp_who who;
  __u8 state = TCP_NO_STATE;
  if (sk) {
    __u64 key = (__u64)sk;
    struct tcp_conn_info* info = bpf_map_lookup_elem(&tcp_conns, &key);
    if (info) ensure_tuple(sk, info);
    fill_who(&who, sk, info);
    state = BPF_CORE_READ(sk, __sk_common.skc_state);
    /* An abort (close with unread data or SO_LINGER 0, shutdown, ss -K)
     * moves the socket to CLOSE, which ends its tracking, and only then
     * sends the RST (tcp_send_active_reset: no skb), always from the
     * aborting task's system call. An RST answering a packet has the skb
     * and runs in softirq, where the current task is no one's. */
    if (!info && sent && !skb && state == TCP_CLOSE) {
      who.pid = bpf_get_current_pid_tgid() >> 32;
      bpf_get_current_comm(who.comm, sizeof(who.comm));
    }
    /* A listener answering a stray segment: the peer is in the packet. */
    if (state == TCP_LISTEN && skb) {
      struct tcp_who from_packet;
      if (packet_who(skb, &from_packet)) {
        from_packet.sock = who.sock;
        from_packet.pid = who.pid;
        __builtin_memcpy(from_packet.comm, who.comm, sizeof(who.comm));
        who = from_packet;
      }
    }
  } else if (!skb || !packet_who(skb, &who)) {
    return;
  }
  if (!who_selected(&who)) return;
  count(sent ? TCP_COUNTER_RESET_SENT : TCP_COUNTER_RESET_RECEIVED);
  if (!nw_rate_allow(tcp_max_events_per_second)) return;
  struct tcp_reset_record* r = nw_reserve(sizeof(*r), TCP_RECORD_RESET);
  if (!r) return;
  r->who = who;
  r->reason = reason;
  r->sent = sent;
  r->state = state;
  r->pad[0] = r->pad[1] = 0;
  nw_submit(r);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(send_reset_btf, const struct sock* sk, const struct sk_buff* skb, int reason) {
  handle_reset(sk, skb, reason, true);
  return 0;
}

SEC("tracepoint/tcp/tcp_send_reset")
int send_reset_tp(struct trace_event_raw_tcp_send_reset* ctx) {
  handle_reset(ctx->skaddr, ctx->skbaddr, ctx->reason, true);
  return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(receive_reset_btf, const struct sock* sk) {
  handle_reset(sk, NULL, 0, false);
  return 0;
}

SEC("tracepoint/tcp/tcp_receive_reset")
int receive_reset_tp(struct trace_event_raw_tcp_event_sk* ctx) {
  handle_reset(ctx->skaddr, NULL, 0, false);
  return 0;
}

/* ---- Congestion state -------------------------------------------------- */

static __always_inline void handle_congestion(const struct sock* sk, __u8 new_state) {
  /* The tracepoint fires before icsk_ca_state is updated. */
  __u8 old_state = ca_state(sk);
  if (old_state == new_state || new_state >= TCP_CA_STATES) return;
  __u64 key = (__u64)sk;
  struct tcp_conn_info* info = bpf_map_lookup_elem(&tcp_conns, &key);
  struct tcp_who who;
  fill_who(&who, sk, info);
  if (!who_selected(&who)) return;
  count(TCP_COUNTER_CONG_STATE + new_state);
  if (!tcp_retransmit_events || !nw_rate_allow(tcp_max_events_per_second)) return;
  struct tcp_congestion_record* r = nw_reserve(sizeof(*r), TCP_RECORD_CONGESTION);
  if (!r) return;
  r->who = who;
  r->old_state = old_state;
  r->new_state = new_state;
  __builtin_memset(r->pad, 0, sizeof(r->pad));
  nw_submit(r);
}

SEC("tp_btf/tcp_cong_state_set")
int BPF_PROG(congestion_btf, const struct sock* sk, const __u8 ca_state) {
  handle_congestion(sk, ca_state);
  return 0;
}

SEC("tracepoint/tcp/tcp_cong_state_set")
int congestion_tp(struct trace_event_raw_tcp_cong_state_set* ctx) {
  handle_congestion(ctx->skaddr, ctx->cong_state);
  return 0;
}

/* ---- Error packets ----------------------------------------------------- */

#define DROP_REASON_IS(reason, name)                         \
  (bpf_core_enum_value_exists(enum skb_drop_reason, name) && \
   (reason) == bpf_core_enum_value(enum skb_drop_reason, name))

/* The kernel already judged the segment (tcp_sequence(), tcp_ack(),
 * tcp_checksum_complete()): its drop reason says what is wrong. Anything
 * else TCP drops (no socket, memory, listen overflow, ...) is the drop
 * plugin's business. */
static __always_inline int error_kind(__u32 reason) {
  if (DROP_REASON_IS(reason, SKB_DROP_REASON_TCP_CSUM)) return TCP_ERROR_BAD_CHECKSUM;
  if (DROP_REASON_IS(reason, SKB_DROP_REASON_TCP_OLD_SEQUENCE)) return TCP_ERROR_SEQ_BEFORE_WINDOW;
  if (DROP_REASON_IS(reason, SKB_DROP_REASON_TCP_INVALID_SEQUENCE) ||
      DROP_REASON_IS(reason, SKB_DROP_REASON_TCP_INVALID_END_SEQUENCE))
    return TCP_ERROR_SEQ_BEYOND_WINDOW;
  if (DROP_REASON_IS(reason, SKB_DROP_REASON_TCP_INVALID_ACK_SEQUENCE) ||
      DROP_REASON_IS(reason, SKB_DROP_REASON_TCP_TOO_OLD_ACK) ||
      DROP_REASON_IS(reason, SKB_DROP_REASON_TCP_ACK_UNSENT_DATA))
    return TCP_ERROR_INVALID_ACK;
  if (DROP_REASON_IS(reason, SKB_DROP_REASON_TCP_RFC7323_PAWS)) return TCP_ERROR_PAWS;
  return -1;
}

struct tcp_header_start {
  __be16 source, dest;
  __be32 seq, ack_seq;
  __u8 data_offset; /* high nibble: header length in 32-bit words */
  __u8 flags;
};

static __always_inline void handle_error_drop(const struct sk_buff* skb, __u32 reason,
                                              const struct sock* sk) {
  int kind = error_kind(reason);
  if (kind < 0) return;
  struct nw_packet p;
  if (!nw_read_skb_packet(skb, 0, &p) || p.protocol != IPPROTO_TCP || !p.transport_offset) return;
  const unsigned char* nh = BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, network_header);
  struct tcp_header_start th;
  if (bpf_probe_read_kernel(&th, sizeof(th), nh + p.transport_offset)) return;
  /* Payload from the IP length fields, not skb->len: the skb may be pulled. */
  __be16 ip_length = 0;
  __u32 ip_total = 0;
  if (p.tuple.family == AF_INET) {
    bpf_probe_read_kernel(&ip_length, sizeof(ip_length), nh + 2);
    ip_total = bpf_ntohs(ip_length);
  } else {
    bpf_probe_read_kernel(&ip_length, sizeof(ip_length), nh + 4);
    ip_total = bpf_ntohs(ip_length) + 40;
  }
  __u32 headers = p.transport_offset + (th.data_offset >> 4) * 4;

  struct tcp_error_record r = {};
  r.who.tuple.family = p.tuple.family;
  __builtin_memcpy(r.who.tuple.saddr, p.tuple.daddr, 16);
  __builtin_memcpy(r.who.tuple.daddr, p.tuple.saddr, 16);
  r.who.tuple.sport = p.tuple.dport;
  r.who.tuple.dport = p.tuple.sport;
  r.seq = bpf_ntohl(th.seq);
  r.ack = bpf_ntohl(th.ack_seq);
  r.payload = ip_total > headers ? ip_total - headers : 0;
  r.kernel_reason = reason;
  r.kind = kind;
  if (sk && BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP) {
    __u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
    __u64 key = (__u64)sk;
    struct tcp_conn_info* info = bpf_map_lookup_elem(&tcp_conns, &key);
    r.who.sock = key;
    if (info) {
      r.who.pid = info->pid;
      r.who.cgroup = info->cgroup;
      __builtin_memcpy(r.who.comm, info->comm, sizeof(r.who.comm));
    }
    /* Full sockets past the handshake have a receive window to compare with. */
    if (state != TCP_LISTEN && state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV &&
        state != TCP_CLOSE && state != TCP_SYN_SENT) {
      const struct tcp_sock* tp = (const struct tcp_sock*)sk;
      r.rcv_nxt = BPF_CORE_READ(tp, rcv_nxt);
      r.rcv_wnd = BPF_CORE_READ(tp, rcv_wnd);
      r.offset = (__s32)(r.seq - r.rcv_nxt);
      r.has_socket = 1;
    }
  }
  /* Keepalive and window probes deliberately repeat the last byte acked
   * (seq = rcv_nxt - 1, at most one byte): routine, not an error. */
  if (kind == TCP_ERROR_SEQ_BEFORE_WINDOW && r.has_socket && r.offset == -1 && r.payload <= 1)
    return;
  if (!who_selected(&r.who)) return;
  count(TCP_COUNTER_ERROR + kind);
  if (nw_rate_allow(tcp_max_events_per_second)) nw_output(&r, sizeof(r), TCP_RECORD_ERROR);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(error_drop_btf, struct sk_buff* skb, void* location, enum skb_drop_reason reason,
             struct sock* rx_sk) {
  handle_error_drop(skb, reason, rx_sk);
  return 0;
}

SEC("tracepoint/skb/kfree_skb")
int error_drop_tp(struct trace_event_raw_kfree_skb* ctx) {
  /* The classic tracepoint records the receiving socket too since 6.12. */
  const struct sock* rx_sk = NULL;
  if (bpf_core_field_exists(ctx->rx_sk)) rx_sk = BPF_CORE_READ(ctx, rx_sk);
  handle_error_drop(ctx->skbaddr, ctx->reason, rx_sk);
  return 0;
}

/* ---- srtt histogram ---------------------------------------------------- */

static __always_inline void log2_slot_add_atomic(__u64* slots, __u64 value) {
  __u32 slot = nw_log2(value);
  if (slot >= NW_LOG2_SLOTS) slot = NW_LOG2_SLOTS - 1;
  __sync_fetch_and_add(&slots[slot & (NW_LOG2_SLOTS - 1)], 1);
}

static __always_inline void rtt_add(const struct tcp_rtt_key* key, __u32 srtt_us) {
  struct tcp_rtt_hist* h = bpf_map_lookup_elem(&tcp_rtt, key);
  if (!h) {
    nw_table_insert(&tcp_rtt, TCP_TABLE_RTT_SERIES, key, &tcp_rtt_empty, BPF_NOEXIST);
    h = bpf_map_lookup_elem(&tcp_rtt, key);
    if (!h) {
      count(TCP_COUNTER_RTT_OVERFLOW);
      return;
    }
  }
  __u64 ns = (__u64)srtt_us * 1000;
  /* Per CPU; tcp_probe runs in softirq or with the socket owned, and a
   * rare lost update under nesting does not change a histogram. */
  nw_log2_slot_add(h->slots, ns);
  h->sum_ns += ns;
}

/* Every segment TCP processes in ESTABLISHED (tcp_rcv_established) samples
 * the connection's smoothed RTT, like bcc's tcprtt. */
static __always_inline void sample_rtt(const struct sock* sk, __u32 srtt_us) {
  if (!srtt_us) return;
  __u64 sock = (__u64)sk;
  struct tcp_conn_info* info = bpf_map_lookup_elem(&tcp_conns, &sock);
  struct tcp_who who;
  fill_who(&who, sk, info);
  if (!who_selected(&who)) return;
  struct tcp_rtt_key key = {};
  key.family = who.tuple.family;
  __builtin_memcpy(key.daddr, who.tuple.daddr, 16);
  if (tcp_rtt_per_connection) {
    __builtin_memcpy(key.saddr, who.tuple.saddr, 16);
    key.sport = who.tuple.sport;
    key.dport = who.tuple.dport;
  }
  rtt_add(&key, srtt_us);
}

/* The common case (per destination, no filter) reads the socket directly
 * through its BTF type instead of probe-reading field by field: this runs
 * for every segment. */
SEC("tp_btf/tcp_probe")
int BPF_PROG(rtt_probe_btf, struct sock* sk) {
  struct tcp_sock* tp = bpf_skc_to_tcp_sock(sk);
  if (!tp) return 0;
  __u32 srtt_us = tp->srtt_us >> 3;
  if (!srtt_us) return 0;
  /* One sample per change of a connection's srtt, not per segment: a bulk
   * receiver's srtt stays put for thousands of segments. */
  struct tcp_sock_mark* mark =
      bpf_sk_storage_get(&tcp_sock_marks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (mark) {
    if (mark->sampled_srtt_us == srtt_us) return 0;
    mark->sampled_srtt_us = srtt_us;
  }
  if (filter_active() || tcp_rtt_per_connection) {
    sample_rtt(sk, srtt_us);
    return 0;
  }
  struct tcp_rtt_key key = {};
  key.family = sk->__sk_common.skc_family;
  if (key.family == AF_INET)
    __builtin_memcpy(key.daddr, &sk->__sk_common.skc_daddr, 4);
  else
    __builtin_memcpy(key.daddr, &sk->__sk_common.skc_v6_daddr, 16);
  rtt_add(&key, srtt_us);
  return 0;
}

SEC("tracepoint/tcp/tcp_probe")
int rtt_probe_tp(struct trace_event_raw_tcp_probe* ctx) {
  sample_rtt(ctx->skaddr, ctx->srtt);
  return 0;
}

/* ---- Per-layer time of each segment (layer_time = true) ---------------
 *
 * Receive: one entry per skb (its address is stable from the driver to the
 * socket), stamped at the driver hand-off (netif_rx / napi_gro_receive /
 * netif_receive_skb entry), IP entry (net:netif_receive_skb), IP exit
 * (netfilter LOCAL_IN at the last priority), TCP processing (tcp:tcp_probe)
 * and the application's copy (skb:skb_copy_datagram_iovec), where it ends.
 *
 * Send: TCP transmits clones of its write-queue skbs, so the write() that
 * produced a segment cannot be found by address. Each socket keeps a small
 * log of (write_seq, time) from tcp:tcp_sendmsg_locked; the first hook that
 * sees the clone (netfilter LOCAL_OUT at the first priority, or the device
 * queue in a netns without that link) looks the segment's sequence number up
 * in it. From there the clone is followed by address to net:net_dev_queue
 * and net:net_dev_xmit. */

#define TCP_SEND_LOG 16
#define NW_NF_ACCEPT 1

struct tcp_rx_stamp {
  __u64 link_ns, ip_ns, transport_ns, tcp_ns;
  __u64 sock;
  __u32 seq, ack, length, pad;
};

struct tcp_tx_stamp {
  __u64 send_ns, ip_ns, dev_ns;
  __u64 sock;
  __u32 seq, ack, length, pad;
};

struct tcp_send_log {
  __u64 ns[TCP_SEND_LOG];
  __u32 seq[TCP_SEND_LOG];
  __u32 next;
  __u32 used;
};

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 8192); /* resized from max_tracked_packets */
  __type(key, __u64);
  __type(value, struct tcp_rx_stamp);
} tcp_rx_inflight SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 8192); /* resized from max_tracked_packets */
  __type(key, __u64);
  __type(value, struct tcp_tx_stamp);
} tcp_tx_inflight SEC(".maps");

/* Socket-local storage: found from the socket without a hash lookup and
 * freed by the kernel with the socket. */
struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct tcp_send_log);
} tcp_send_logs SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct tcp_layer_hist);
} tcp_layer_stats SEC(".maps");

static __always_inline struct tcp_layer_hist* layer_hist(void) {
  __u32 zero = 0;
  return bpf_map_lookup_elem(&tcp_layer_stats, &zero);
}

static __always_inline void count_unmatched(__u8 direction) {
  struct tcp_layer_hist* h = layer_hist();
  if (h && direction < TCP_PACKET_DIRECTIONS) __sync_fetch_and_add(&h->unmatched[direction], 1);
}

/* Histograms always, the event when asked for. `ns` has TCP_LAYERS times. */
static __always_inline void record_layers(__u8 direction, const __u64* ns, const struct sock* sk,
                                          __u32 seq, __u32 ack, __u32 length, bool reader) {
  struct tcp_who who;
  bool selected = true;
  if (tcp_layer_events || filter_active()) {
    __u64 key = (__u64)sk;
    struct tcp_conn_info* info = bpf_map_lookup_elem(&tcp_conns, &key);
    fill_who(&who, sk, info);
    if (reader) {
      /* The application's copy runs in its own context. */
      who.pid = bpf_get_current_pid_tgid() >> 32;
      bpf_get_current_comm(who.comm, sizeof(who.comm));
    }
    selected = who_selected(&who);
  }
  if (!selected) return;
  struct tcp_layer_hist* h = layer_hist();
  if (h && direction < TCP_PACKET_DIRECTIONS) {
#pragma unroll
    for (int l = 0; l < TCP_LAYERS; l++) {
      if (ns[l] == TCP_TIME_UNKNOWN) continue;
      /* Plain adds on per-CPU memory. Updates of one direction never
       * interleave on a CPU: rx is recorded only from the application's
       * read (process context), tx only from the driver hand-off, which
       * runs with bottom halves disabled. A softirq tx update can interrupt
       * an rx update, but they touch different slots. */
      nw_log2_slot_add(h->slots[direction][l], ns[l]);
      h->sum_ns[direction][l] += ns[l];
    }
  }
  if (!tcp_layer_events || !nw_rate_allow(tcp_max_events_per_second)) return;
  struct tcp_layer_record* r = nw_reserve(sizeof(*r), TCP_RECORD_LAYER);
  if (!r) return;
  r->who = who;
#pragma unroll
  for (int l = 0; l < TCP_LAYERS; l++) r->ns[l] = ns[l];
  r->seq = seq;
  r->ack = ack;
  r->length = length;
  r->direction = direction;
  r->pad[0] = r->pad[1] = r->pad[2] = 0;
  nw_submit(r);
}

static __always_inline __u64 span(__u64 from, __u64 to) {
  if (!from || !to || to < from) return TCP_TIME_UNKNOWN;
  return to - from;
}

/* Receive path. At the driver hand-off skb->data is the IP header. */
/* True for a TCP segment with payload: only those reach the application, so
 * pure ACKs are not stamped at all. skb fields are read through the BTF
 * type (plain loads), packet bytes with two probe reads. IPv6 packets with
 * extension headers are not followed. */
static __always_inline bool carries_tcp_payload(const struct sk_buff* skb) {
  __u16 ethertype = bpf_ntohs(skb->protocol);
  const unsigned char* data = skb->data;
  __u32 ip_header = 0, ip_total = 0;
  if (ethertype == NW_ETH_P_IP) {
    struct {
      __u8 version_ihl, tos;
      __be16 tot_len, id, frag_off;
      __u8 ttl, protocol;
    } ip;
    if (bpf_probe_read_kernel(&ip, sizeof(ip), data) || ip.protocol != IPPROTO_TCP) return false;
    ip_header = (ip.version_ihl & 0x0f) * 4;
    ip_total = bpf_ntohs(ip.tot_len);
  } else if (ethertype == NW_ETH_P_IPV6) {
    struct {
      __be32 flow;
      __be16 payload_len;
      __u8 nexthdr, hop_limit;
    } ip6;
    if (bpf_probe_read_kernel(&ip6, sizeof(ip6), data) || ip6.nexthdr != IPPROTO_TCP) return false;
    ip_header = 40;
    ip_total = bpf_ntohs(ip6.payload_len) + 40;
  } else {
    return false;
  }
  /* A GRO packet over 64 KiB (BIG TCP) has no length field: it has data. */
  if (ip_total <= ip_header) return true;
  __u8 data_offset = 0;
  bpf_probe_read_kernel(&data_offset, 1, data + ip_header + 12);
  return ip_total > ip_header + (data_offset >> 4) * 4;
}

static __always_inline void rx_link(const struct sk_buff* skb) {
  if (!carries_tcp_payload(skb)) return;
  __u64 key = (__u64)skb;
  struct tcp_rx_stamp stamp = {};
  stamp.link_ns = bpf_ktime_get_ns();
  nw_table_insert(&tcp_rx_inflight, TCP_TABLE_RX_PACKETS, &key, &stamp, BPF_ANY);
}

SEC("tp_btf/netif_rx")
int BPF_PROG(layer_rx_backlog, const struct sk_buff* skb) {
  rx_link(skb);
  return 0;
}

SEC("tp_btf/napi_gro_receive_entry")
int BPF_PROG(layer_rx_gro, const struct sk_buff* skb) {
  rx_link(skb);
  return 0;
}

SEC("tp_btf/netif_receive_skb_entry")
int BPF_PROG(layer_rx_direct, const struct sk_buff* skb) {
  rx_link(skb);
  return 0;
}

SEC("tp_btf/netif_receive_skb_list_entry")
int BPF_PROG(layer_rx_list, const struct sk_buff* skb) {
  rx_link(skb);
  return 0;
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(layer_rx_ip, const struct sk_buff* skb) {
  __u64 key = (__u64)skb;
  struct tcp_rx_stamp* stamp = bpf_map_lookup_elem(&tcp_rx_inflight, &key);
  /* The first pass counts: VLAN or bridge devices deliver the skb again. */
  if (stamp && !stamp->ip_ns) stamp->ip_ns = bpf_ktime_get_ns();
  return 0;
}

SEC("netfilter")
int layer_rx_local_in(struct bpf_nf_ctx* ctx) {
  __u64 key = (__u64)ctx->skb;
  struct tcp_rx_stamp* stamp = bpf_map_lookup_elem(&tcp_rx_inflight, &key);
  if (stamp) stamp->transport_ns = bpf_ktime_get_ns();
  return NW_NF_ACCEPT;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(layer_rx_tcp, struct sock* sk, const struct sk_buff* skb) {
  __u64 key = (__u64)skb;
  struct tcp_rx_stamp* stamp = bpf_map_lookup_elem(&tcp_rx_inflight, &key);
  if (!stamp) return 0;
  /* TCP's control block lives in skb->cb: plain loads, no helper calls. */
  const struct tcp_skb_cb* cb = (const struct tcp_skb_cb*)skb->cb;
  __u32 seq = cb->seq, end_seq = cb->end_seq;
  __u16 flags = cb->tcp_flags;
  __u32 length = end_seq - seq - ((flags & 0x02) ? 1 : 0) - ((flags & 0x01) ? 1 : 0);
  if ((__s32)length <= 0) {
    /* Nothing for the application to read: no application time to wait for. */
    nw_table_remove(&tcp_rx_inflight, TCP_TABLE_RX_PACKETS, &key);
    return 0;
  }
  stamp->tcp_ns = bpf_ktime_get_ns();
  stamp->sock = (__u64)sk;
  stamp->seq = seq;
  stamp->ack = cb->ack_seq;
  stamp->length = length;
  return 0;
}

SEC("tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(layer_rx_read, const struct sk_buff* skb) {
  __u64 key = (__u64)skb;
  struct tcp_rx_stamp* stamp = bpf_map_lookup_elem(&tcp_rx_inflight, &key);
  if (!stamp) return 0;
  struct tcp_rx_stamp s = *stamp;
  nw_table_remove(&tcp_rx_inflight, TCP_TABLE_RX_PACKETS, &key);
  if (!s.tcp_ns) {
    /* Data TCP processed outside ESTABLISHED (tcp_probe fires only there),
     * e.g. received after our FIN: no transport stamp. */
    count_unmatched(TCP_RX);
    return 0;
  }
  __u64 now = bpf_ktime_get_ns();
  __u64 ns[TCP_LAYERS];
  ns[TCP_LAYER_LINK] = span(s.link_ns, s.ip_ns);
  ns[TCP_LAYER_IP] = span(s.ip_ns, s.transport_ns);
  ns[TCP_LAYER_TRANSPORT] = span(s.transport_ns, s.tcp_ns);
  if (!s.transport_ns) ns[TCP_LAYER_IP] = TCP_TIME_UNKNOWN;
  ns[TCP_LAYER_APP] = span(s.tcp_ns, now);
  ns[TCP_LAYER_TOTAL] = span(s.link_ns, now);
  record_layers(TCP_RX, ns, (const struct sock*)s.sock, s.seq, s.ack, s.length, true);
  return 0;
}

/* Send path. */
SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(layer_tx_send, const struct sock* sk) {
  struct tcp_send_log* log =
      bpf_sk_storage_get(&tcp_send_logs, (void*)sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!log) return 0;
  struct tcp_sock* tp = bpf_skc_to_tcp_sock((void*)sk);
  if (!tp) return 0;
  __u32 write_seq = tp->write_seq;
  /* Fired once per chunk of a send; a chunk that adds nothing keeps the
   * time of the one that started at this sequence number. */
  if (log->used && log->seq[(log->next - 1) & (TCP_SEND_LOG - 1)] == write_seq) return 0;
  /* Full, and the oldest write is not all sent yet (the next one starts
   * after snd_nxt): keep it. This write's bytes then count from the last
   * logged write, overstating their transport time by the gap, instead of
   * losing the oldest bytes' start altogether. */
  if (log->used == TCP_SEND_LOG &&
      nw_seq_after(log->seq[(log->next + 1) & (TCP_SEND_LOG - 1)], tp->snd_nxt))
    return 0;
  __u32 slot = log->next & (TCP_SEND_LOG - 1);
  log->seq[slot] = write_seq;
  log->ns[slot] = bpf_ktime_get_ns();
  log->next += 1;
  if (log->used < TCP_SEND_LOG) log->used += 1;
  return 0;
}

/* When the byte at `seq` was written: the logged chunk starting closest at
 * or before it. 0 when it is older than the log. */
static __always_inline __u64 written_at(struct sock* sk, __u32 seq) {
  struct tcp_send_log* log = bpf_sk_storage_get(&tcp_send_logs, sk, 0, 0);
  if (!log) return 0;
  __u64 best_ns = 0;
  __u32 best_distance = ~0U;
#pragma unroll
  for (int i = 0; i < TCP_SEND_LOG; i++) {
    if (i >= log->used) break;
    __u32 distance = seq - log->seq[i];
    if ((__s32)distance >= 0 && distance < best_distance) {
      best_distance = distance;
      best_ns = log->ns[i];
    }
  }
  return best_ns;
}

/* A TCP segment with payload leaving a full socket: fills `stamp` with its
 * sequence numbers and socket. */
static __always_inline bool outgoing_segment(const struct sk_buff* skb,
                                             struct tcp_tx_stamp* stamp) {
  /* Plain loads through the BTF types: this runs for every packet sent. */
  const unsigned char* head = skb->head;
  const unsigned char* data = skb->data;
  __u16 network = skb->network_header, transport = skb->transport_header;
  __u32 len = skb->len;
  if (transport <= network) return false;
  struct tcp_header_start th;
  if (bpf_probe_read_kernel(&th, sizeof(th), head + transport)) return false;
  /* skb->data is the IP header at LOCAL_OUT and the MAC header at the device
   * queue; skb->len covers a whole GSO packet. */
  __u32 headers = (head + transport + (th.data_offset >> 4) * 4) - data;
  if (len <= headers) return false; /* pure ACK: nothing was written */
  struct sock* sk = skb->sk;
  if (!sk) return false;
  /* Request and time-wait sockets (SYN-ACKs, ACKs after close) have no
   * struct sock fields beyond sock_common. */
  __u8 state = sk->__sk_common.skc_state;
  if (state == TCP_NEW_SYN_RECV || state == TCP_TIME_WAIT) return false;
  if (sk->sk_protocol != IPPROTO_TCP) return false;
  stamp->seq = bpf_ntohl(th.seq);
  stamp->ack = bpf_ntohl(th.ack_seq);
  stamp->length = len - headers;
  stamp->sock = (__u64)sk;
  return true;
}

/* Finds the write of the segment's first byte in its socket's log (sk
 * storage, which netfilter programs cannot reach: done at the device queue).
 * False, counted, when the log has no such write. */
static __always_inline bool match_write(const struct sk_buff* skb, struct tcp_tx_stamp* stamp) {
  struct sock* sk = skb->sk;
  if (sk) stamp->send_ns = written_at(sk, stamp->seq);
  if (stamp->send_ns) return true;
  count_unmatched(TCP_TX);
  return false;
}

/* On a device without a queue (veth, loopback, the default for virtual
 * devices) a segment goes from LOCAL_OUT through net_dev_queue to
 * net_dev_xmit on one CPU without a break, so its stamp waits in a per-CPU
 * slot instead of the hash table: an insert, two look-ups and a delete
 * fewer per segment. Whatever cannot be followed that way moves to the hash
 * table, where the three hooks have always found it:
 *  - a program that interrupts another of these programs on the same CPU
 *    (a softirq sending an ACK during a process's LOCAL_OUT) uses the table,
 *    so the slot is only ever changed by one run at a time (`depth`);
 *  - a new segment's LOCAL_OUT moves the one still in the slot to the table
 *    (an interrupt, or a task preempted between the hooks);
 *  - at net_dev_queue a device with a qdisc may send it later or from
 *    another CPU: the stamp moves to the table. */
struct tcp_tx_slot {
  __u64 skb; /* 0: empty */
  struct tcp_tx_stamp stamp;
  __u32 depth;
  __u32 pad;
};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct tcp_tx_slot);
} tcp_tx_slots SEC(".maps");

/* Enters this CPU's slot (`*held`, for tx_slot_leave()); returns it when
 * this run is the only one of these programs on the CPU, else NULL. */
static __always_inline struct tcp_tx_slot* tx_slot_enter(struct tcp_tx_slot** held) {
  __u32 zero = 0;
  struct tcp_tx_slot* slot = bpf_map_lookup_elem(&tcp_tx_slots, &zero);
  *held = slot;
  if (!slot) return NULL;
  /* Per-CPU and nested only by interrupts, each of which restores what it
   * found before the interrupted run goes on: plain increments suffice. */
  return slot->depth++ ? NULL : slot;
}

static __always_inline void tx_slot_leave(struct tcp_tx_slot* held) {
  if (held) held->depth--;
}

static __always_inline void tx_slot_spill(struct tcp_tx_slot* slot) {
  if (!slot->skb) return;
  nw_table_insert(&tcp_tx_inflight, TCP_TABLE_TX_PACKETS, &slot->skb, &slot->stamp, BPF_ANY);
  slot->skb = 0;
}

/* False when the device queues (any qdisc but noqueue): net_dev_xmit may
 * then come later, from another CPU, after other segments. */
static __always_inline bool sent_at_once(const struct sk_buff* skb) {
  struct net_device* dev = skb->dev;
  if (!dev) return false;
  const struct netdev_queue* queues = dev->_tx;
  __u16 index = skb->queue_mapping;
  if (!queues || index >= dev->real_num_tx_queues) return false;
  struct Qdisc* qdisc = NULL;
  const void* slot = (const char*)queues + (__u64)index * bpf_core_type_size(struct netdev_queue) +
                     bpf_core_field_offset(struct netdev_queue, qdisc);
  if (bpf_probe_read_kernel(&qdisc, sizeof(qdisc), slot) || !qdisc) return false;
  void* enqueue = (void*)1;
  if (bpf_probe_read_kernel(&enqueue, sizeof(enqueue), &qdisc->enqueue)) return false;
  return !enqueue;
}

static __always_inline void tx_ip_entry(struct sk_buff* skb) {
  struct tcp_tx_stamp stamp = {};
  if (!outgoing_segment(skb, &stamp)) return;
  stamp.ip_ns = bpf_ktime_get_ns();
  __u64 key = (__u64)skb;
  struct tcp_tx_slot* held;
  struct tcp_tx_slot* slot = tx_slot_enter(&held);
  if (slot) {
    tx_slot_spill(slot);
    slot->stamp = stamp;
    slot->skb = key;
  } else {
    nw_table_insert(&tcp_tx_inflight, TCP_TABLE_TX_PACKETS, &key, &stamp, BPF_ANY);
  }
  tx_slot_leave(held);
}

SEC("netfilter")
int layer_tx_local_out(struct bpf_nf_ctx* ctx) {
  tx_ip_entry(ctx->skb);
  return NW_NF_ACCEPT;
}

static __always_inline void tx_device_queue(struct sk_buff* skb, struct tcp_tx_slot* slot) {
  __u64 key = (__u64)skb;
  __u64 now = bpf_ktime_get_ns();
  const bool in_slot = slot && slot->skb == key;
  struct tcp_tx_stamp* stamp = in_slot ? &slot->stamp : bpf_map_lookup_elem(&tcp_tx_inflight, &key);
  if (stamp) {
    if (stamp->dev_ns) return;
    stamp->dev_ns = now;
    if (!match_write(skb, stamp)) {
      if (in_slot)
        slot->skb = 0;
      else
        nw_table_remove(&tcp_tx_inflight, TCP_TABLE_TX_PACKETS, &key);
    } else if (in_slot && !sent_at_once(skb)) {
      tx_slot_spill(slot);
    }
    return;
  }
  /* No LOCAL_OUT link in this netns: IP entry unknown, start here. */
  struct tcp_tx_stamp fresh = {};
  if (!outgoing_segment(skb, &fresh) || !match_write(skb, &fresh)) return;
  fresh.dev_ns = now;
  nw_table_insert(&tcp_tx_inflight, TCP_TABLE_TX_PACKETS, &key, &fresh, BPF_ANY);
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(layer_tx_queue, struct sk_buff* skb) {
  struct tcp_tx_slot* held;
  tx_device_queue(skb, tx_slot_enter(&held));
  tx_slot_leave(held);
  return 0;
}

static __always_inline void tx_device_sent(struct sk_buff* skb, int rc, struct tcp_tx_slot* slot) {
  __u64 key = (__u64)skb;
  struct tcp_tx_stamp s;
  if (slot && slot->skb == key) {
    s = slot->stamp;
    slot->skb = 0;
  } else {
    struct tcp_tx_stamp* stamp = bpf_map_lookup_elem(&tcp_tx_inflight, &key);
    if (!stamp) return;
    s = *stamp;
    nw_table_remove(&tcp_tx_inflight, TCP_TABLE_TX_PACKETS, &key);
  }
  if (rc != 0 || !s.dev_ns) return; /* not accepted by the driver */
  __u64 now = bpf_ktime_get_ns();
  __u64 ns[TCP_LAYERS];
  ns[TCP_LAYER_LINK] = span(s.dev_ns, now);
  ns[TCP_LAYER_IP] = span(s.ip_ns, s.dev_ns);
  ns[TCP_LAYER_TRANSPORT] = span(s.send_ns, s.ip_ns);
  ns[TCP_LAYER_APP] = TCP_TIME_UNKNOWN;
  ns[TCP_LAYER_TOTAL] = span(s.send_ns, now);
  record_layers(TCP_TX, ns, (const struct sock*)s.sock, s.seq, s.ack, s.length, false);
}

SEC("tp_btf/net_dev_xmit")
int BPF_PROG(layer_tx_xmit, struct sk_buff* skb, int rc) {
  struct tcp_tx_slot* held;
  tx_device_sent(skb, rc, tx_slot_enter(&held));
  tx_slot_leave(held);
  return 0;
}

/* ---- Socket destruction -------------------------------------------------
 * Second chance for a close: every full socket passes here once, after
 * CLOSE. A tracked entry still present means its CLOSE run was skipped (the
 * kernel does not nest a program: a softirq's transition during a process
 * context one is lost, counted in recursion_misses) or never came: report
 * the close now, so opens and closes still balance. */
static __always_inline void forget(const struct sock* sk) {
  __u64 key = (__u64)sk;
  struct tcp_conn_info* info = bpf_map_lookup_elem(&tcp_conns, &key);
  if (!info) return;
  if (info->tuple_valid) {
    count(TCP_COUNTER_CLOSED + (info->direction % 3));
    emit(TCP_RECORD_CLOSE, key, info, sk, BPF_CORE_READ(sk, __sk_common.skc_state));
    forget_rtt_series(&info->tuple);
  }
  nw_table_remove(&tcp_conns, TCP_TABLE_CONNECTIONS, &key);
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(destroy_sock_btf, struct sock* sk) {
  forget(sk);
  /* A refused connection whose close was not counted yet. */
  struct tcp_sock_mark* mark = bpf_sk_storage_get(&tcp_sock_marks, sk, 0, 0);
  if (mark && mark->refused) {
    count_untracked(sk, TCP_ESTABLISHED, TCP_CLOSE, mark->refused - 1);
    mark->refused = 0;
  }
  return 0;
}

SEC("tracepoint/tcp/tcp_destroy_sock")
int destroy_sock_tp(struct trace_event_raw_tcp_event_sk* ctx) {
  forget(ctx->skaddr);
  return 0;
}
