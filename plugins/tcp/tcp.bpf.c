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
#include "tcp.h"

char LICENSE[] SEC("license") = "GPL";

#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384); /* resized by the plugin from max_connections */
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

static __always_inline void count(__u32 counter) {
  __u64* value = bpf_map_lookup_elem(&tcp_counters, &counter);
  if (value) *value += 1;
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
  rec->pad = 0;
}

static __always_inline void emit(__u32 type, __u64 key, const struct tcp_conn_info* info,
                                 const struct sock* sk, __u32 state) {
  struct tcp_conn_record* rec = nw_reserve(sizeof(*rec), type);
  if (!rec) return;
  fill_record(rec, key, info, sk, state, rec->hdr.timestamp_ns);
  bpf_ringbuf_submit(rec, 0);
}

static __always_inline void handle_state(const struct sock* sk, int oldstate, int newstate) {
  if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP) return;
  __u64 key = (__u64)sk;

  if (newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV) {
    struct tcp_conn_info info = {};
    info.start_ns = bpf_ktime_get_ns();
    if (newstate == TCP_SYN_SENT) {
      /* connect() runs in the caller's context. */
      info.pid = bpf_get_current_pid_tgid() >> 32;
      if (!nw_pid_selected(info.pid)) return;
      bpf_get_current_comm(info.comm, sizeof(info.comm));
      info.direction = TCP_DIRECTION_CLIENT;
    } else {
      /* Softirq: whoever runs now is not the owner. */
      info.direction = TCP_DIRECTION_SERVER;
    }
    bpf_map_update_elem(&tcp_conns, &key, &info, BPF_ANY);
    return;
  }

  struct tcp_conn_info* info = bpf_map_lookup_elem(&tcp_conns, &key);
  if (!info) return;
  if (!info->tuple_valid) {
    /* The local port is only bound after SYN_SENT, so read the tuple late. */
    nw_read_sock_tuple(sk, &info->tuple);
    info->tuple_valid = 1;
    if (!nw_tuple_selected(&info->tuple)) {
      bpf_map_delete_elem(&tcp_conns, &key);
      return;
    }
  }
  if (newstate == TCP_ESTABLISHED) {
    info->acked_base = BPF_CORE_READ((const struct tcp_sock*)sk, bytes_acked);
    emit(TCP_RECORD_OPEN, key, info, sk, newstate);
  } else if (newstate == TCP_CLOSE) {
    emit(TCP_RECORD_CLOSE, key, info, sk, oldstate);
    bpf_map_delete_elem(&tcp_conns, &key);
  }
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(set_state_btf, const struct sock* sk, const int oldstate, const int newstate) {
  handle_state(sk, oldstate, newstate);
  return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int set_state_tp(struct trace_event_raw_inet_sock_set_state* ctx) {
  if (ctx->protocol != IPPROTO_TCP) return 0;
  handle_state((const struct sock*)ctx->skaddr, ctx->oldstate, ctx->newstate);
  return 0;
}

/* Safety net: a socket freed without passing CLOSE must not leak its entry. */
static __always_inline void forget(const void* sk) {
  __u64 key = (__u64)sk;
  bpf_map_delete_elem(&tcp_conns, &key);
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(destroy_sock_btf, struct sock* sk) {
  forget(sk);
  return 0;
}

SEC("tracepoint/tcp/tcp_destroy_sock")
int destroy_sock_tp(struct trace_event_raw_tcp_event_sk* ctx) {
  forget(ctx->skaddr);
  return 0;
}

static __always_inline void handle_retransmit(const struct sock* sk) {
  const struct inet_connection_sock* icsk = (const struct inet_connection_sock*)sk;
  /* RTO puts the socket in TCP_CA_Loss before retransmitting; fast
   * retransmits happen in Disorder/Recovery. */
  bool timeout = BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_state) == TCP_CA_Loss;
  count(timeout ? TCP_COUNTER_RETRANS_TIMEOUT : TCP_COUNTER_RETRANS_FAST);
  __u64 key = (__u64)sk;
  struct tcp_conn_info* info = bpf_map_lookup_elem(&tcp_conns, &key);
  if (!info) return;
  if (timeout)
    __sync_fetch_and_add(&info->timeout_retrans, 1);
  else
    __sync_fetch_and_add(&info->fast_retrans, 1);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(retransmit_btf, const struct sock* sk) {
  handle_retransmit(sk);
  return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int retransmit_tp(struct trace_event_raw_tcp_retransmit_skb* ctx) {
  handle_retransmit((const struct sock*)ctx->skaddr);
  return 0;
}

/* Passive connections learn their owner on its first send or receive. */
static __always_inline void claim_owner(const void* sk) {
  __u64 key = (__u64)sk;
  struct tcp_conn_info* info = bpf_map_lookup_elem(&tcp_conns, &key);
  if (!info || info->pid) return;
  __u32 pid = bpf_get_current_pid_tgid() >> 32;
  if (!nw_pid_selected(pid)) {
    bpf_map_delete_elem(&tcp_conns, &key);
    return;
  }
  info->pid = pid;
  bpf_get_current_comm(info->comm, sizeof(info->comm));
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(recv_length_btf, struct sock* sk) {
  claim_owner(sk);
  return 0;
}

SEC("tracepoint/sock/sock_recv_length")
int recv_length_tp(struct trace_event_raw_sock_msg_length* ctx) {
  if (ctx->protocol == IPPROTO_TCP) claim_owner(ctx->sk);
  return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(send_length_btf, struct sock* sk) {
  claim_owner(sk);
  return 0;
}

SEC("tracepoint/sock/sock_send_length")
int send_length_tp(struct trace_event_raw_sock_msg_length* ctx) {
  if (ctx->protocol == IPPROTO_TCP) claim_owner(ctx->sk);
  return 0;
}

/* Run before each snapshot: connections that were open before netwatcher
 * started are adopted, so they show in the table and their close is reported.
 * iter/tcp only walks the network namespace netwatcher runs in. */
SEC("iter/tcp")
int adopt_tcp(struct bpf_iter__tcp* ctx) {
  struct sock_common* skc = ctx->sk_common;
  if (!skc) return 0;
  struct tcp_sock* tp = bpf_skc_to_tcp_sock(skc);
  if (!tp) return 0; /* request and time-wait sockets */
  const struct sock* sk = (const struct sock*)tp;
  __u32 state = BPF_CORE_READ(sk, __sk_common.skc_state);
  if (state == TCP_LISTEN || state == TCP_CLOSE || state == TCP_SYN_SENT) return 0;
  __u64 key = (__u64)sk;
  if (bpf_map_lookup_elem(&tcp_conns, &key)) return 0;
  struct tcp_conn_info adopted = {};
  nw_read_sock_tuple(sk, &adopted.tuple);
  adopted.tuple_valid = 1;
  /* The SYN of an adopted active open stays in bytes_acked (off by one). */
  if (nw_tuple_selected(&adopted.tuple))
    bpf_map_update_elem(&tcp_conns, &key, &adopted, BPF_NOEXIST);
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
