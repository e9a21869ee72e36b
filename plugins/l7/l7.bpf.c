// SPDX-License-Identifier: GPL-2.0
/* The shared L7 capture: one pair of cgroup_skb programs (attached at the
 * cgroup v2 root, so for every socket in every netns) that serves every
 * protocol plugin at once.
 *
 * Per socket, in socket storage, a verdict:
 *   undecided  its first `offer_packets` payload packets per direction go to
 *              user space, which asks every protocol's detector and writes
 *              its decision into `decisions` (by socket cookie); the next
 *              packet moves it into the storage;
 *   watched    every payload packet goes to user space with its protocol;
 *   ignored    one storage lookup per packet, nothing else.
 * Which transports are captured and how many bytes per packet are set by
 * user space once the protocols are known (after load: .bss); until then
 * nothing is captured. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "l7.h"
#include "netwatcher/bpf/common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define ETH_P_IP_BE 0x0008   /* htons(0x0800) */
#define ETH_P_IPV6_BE 0xdd86 /* htons(0x86dd) */
#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif
#ifndef IPPROTO_UDP
#define IPPROTO_UDP 17
#endif

/* One direction's HTTP/2 frame walk (see "HTTP/2 frame walk" below). */
struct h2_direction {
  __u32 next;   /* when walking: the sequence number of the next frame header */
  __u8 walking; /* H2_UNSEEN, H2_WALKING, H2_NOT_WALKED or H2_LOST */
  __u8 partial; /* bytes of the next frame header at the last segment's end */
  __u8 header[8];
  __u8 pad[2];
};

struct l7_socket {
  __u32 pid;
  __u8 verdict;
  __u8 protocol;
  __u8 offered[2]; /* undecided packets sent up, by direction (0 in, 1 out) */
  __u8 tls;        /* a TLS library call used it: its segments are ciphertext */
  __u8 pad[3];
  struct h2_direction h2[2]; /* HTTP/2 frames followed, by direction */
  char comm[NW_TASK_COMM_LEN];
};

struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct l7_socket);
} sockets SEC(".maps");

/* Written by user space; at most a few ms old entries, removed when read. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u64);
  __type(value, struct l7_decision);
} decisions SEC(".maps");

/* Records are built here: the capture is too large for the BPF stack. One
 * slot per kind of run: an egress run in process context can be interrupted
 * on its CPU by a softirq's ingress run, and a TLS probe by either; each
 * builds its record in a slot of its own. (An egress run interrupted by a
 * softirq's egress run, or a preempted probe, can still share a slot: a
 * per-CPU counter of slots in use is not safe under preemption without
 * atomic fetch, which this BPF target lacks.) */
enum { SCRATCH_EGRESS = 0, SCRATCH_INGRESS = 1, SCRATCH_TLS = 2, SCRATCH_SLOTS = 3 };
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, SCRATCH_SLOTS);
  __type(key, __u32);
  __type(value, char[sizeof(struct l7_packet) + NW_L7_MAX_CAPTURE + L7_PIECE_AREA]);
} scratch SEC(".maps");

/* Payload packets of selected sockets that were still undecided past their
 * offer: seen by no protocol (netwatcher_l7_unoffered_packets_total). */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} unoffered SEC(".maps");

/* Set by user space after load, from the served protocols. */
/* 0: HTTP/2 frames past capture_bytes are not followed (configured off, or
 * a kernel without bpf_loop: the verifier then never sees the call). */
const volatile __u32 h2_frame_walk = 1;
volatile __u32 capture_tcp = 0;
volatile __u32 capture_udp = 0;
volatile __u32 capture_bytes = 0;
volatile __u32 offer_packets = 0;
/* 1 when the TLS probes are attached ([plugins.l7] tls). */
volatile __u32 capture_tls = 0;

struct packet_start {
  __be16 source, dest;
  __be32 seq;
  __be32 ack_seq;
  __u8 data_offset;
};

static __always_inline bool wanted(__u16 protocol) {
  return protocol == IPPROTO_TCP ? capture_tcp != 0 : protocol == IPPROTO_UDP && capture_udp != 0;
}

/* Moves a decision user space made into the socket's storage. */
static __always_inline void take_decision(struct l7_socket* state, __u64 cookie) {
  struct l7_decision* decision = bpf_map_lookup_elem(&decisions, &cookie);
  if (!decision) return;
  state->verdict = decision->verdict;
  state->protocol = decision->protocol;
  bpf_map_delete_elem(&decisions, &cookie);
}

/* ---- HTTP/2 frame walk ---------------------------------------------------
 * The first capture_bytes of a segment miss the HTTP/2 frames that start past
 * them: a header block there would leave the HPACK table unknown for good.
 * A direction whose first payload is the client preface or a SETTINGS frame
 * (a server's preface) is followed here instead: frame by frame, by their
 * lengths, and each frame whose header (with the payload bytes kept below)
 * does not fit in the captured bytes is copied as a piece (its header and, but for DATA, the first
 * L7_PIECE_BYTES - 9 bytes of its payload), as many as L7_PIECE_AREA holds: past them the frames
 * are still followed, and user space finds its place again in a later segment. A frame header split
 * between segments is kept until the next one (and its first part given as a short piece). Whatever
 * cannot be followed (bytes lost or out of order, more than L7_WALK_FRAMES frames in one segment)
 * suspends the walk of that direction until a segment starts with what looks like a frame header,
 * as user space finds its place again. */

/* A direction's walk: its first payload not seen yet, being followed, not
 * HTTP/2 from its start, or waiting for a frame boundary. */
enum { H2_UNSEEN = 0, H2_WALKING = 1, H2_NOT_WALKED = 2, H2_LOST = 3 };

/* Whether 9 bytes look like a frame header: a known type with its defined
 * flags only, a size the default SETTINGS_MAX_FRAME_SIZE allows, the stream
 * id and size RFC 9113 requires (plausible() in plugins/http/h2_connection.cpp). */
static __always_inline bool h2_plausible(const __u8* p) {
  __u32 length = ((__u32)p[0] << 16) | ((__u32)p[1] << 8) | p[2];
  __u8 flags = p[4];
  bool stream = (p[5] & 0x7f) | p[6] | p[7] | p[8];
  if (length > 16384) return false;
  switch (p[3]) {
    case 0: /* DATA */
      return !(flags & ~0x09) && stream;
    case 1: /* HEADERS */
      return !(flags & ~0x2d) && stream;
    case 2: /* PRIORITY */
      return !flags && stream && length == 5;
    case 3: /* RST_STREAM */
      return !flags && stream && length == 4;
    case 4: /* SETTINGS */
      return !(flags & ~0x01) && !stream && length % 6 == 0 && (!flags || length == 0);
    case 5: /* PUSH_PROMISE */
      return !(flags & ~0x0c) && stream && length >= 4;
    case 6: /* PING */
      return !(flags & ~0x01) && !stream && length == 8;
    case 7: /* GOAWAY */
      return !flags && !stream && length >= 8;
    case 8: /* WINDOW_UPDATE */
      return !flags && length == 4;
    case 9: /* CONTINUATION */
      return !(flags & ~0x04) && stream;
    default:
      return false;
  }
}

/* Whether a segment whose first `captured` bytes are `p` starts at a frame:
 * its first header plausible, and the next too when it is in the bytes. */
static __always_inline bool h2_starts_frame(const __u8* p, __u64 captured, __u32 length) {
  if (captured < 9 || !h2_plausible(p)) return false;
  __u32 next = 9 + (((__u32)p[0] << 16) | ((__u32)p[1] << 8) | p[2]);
  if (next >= length || next + 9 > captured) return true;
  if (next > NW_L7_MAX_CAPTURE - 9) return false;
  return h2_plausible(p + next);
}

/* The offset of the first frame when `p` starts an HTTP/2 direction: 24
 * after the client preface, 0 at a SETTINGS frame; -1 otherwise. */
static __always_inline int h2_first_frame(const __u8* p, __u64 captured) {
  const char preface[24] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r";
  if (captured >= 24) {
    bool same = true;
#pragma unroll
    for (int i = 0; i < 23; i++)
      if (p[i] != (__u8)preface[i]) same = false;
    if (same && p[23] == '\n') return 24;
  }
  if (captured >= 9 && p[3] == 4 && p[4] == 0 && (p[5] | p[6] | p[7] | p[8]) == 0 &&
      ((((__u32)p[0] << 16) | ((__u32)p[1] << 8) | p[2]) % 6) == 0)
    return 0;
  return -1;
}

/* Reads payload bytes [off, off + n) of a segment (from_skb) or of a TLS
 * call's buffer. `from_skb` is a constant at each call: the other branch,
 * with a helper the program type may not call, is compiled out. */
static __always_inline long h2_load(bool from_skb, struct __sk_buff* skb, __u32 payload_offset,
                                    __u64 buf, __u32 off, void* to, __u32 n) {
  if (from_skb) return bpf_skb_load_bytes(skb, payload_offset + off, to, n);
  return bpf_probe_read_user(to, n, (void*)(buf + off));
}

/* One walk through a payload, for bpf_loop: each step reads one frame
 * header (the verifier checks the step once, not once per frame, as long as
 * the state it carries from step to step looks the same: hence the pieces'
 * count and size in the record, a map value, and no bytes kept here). */
struct h2_walk_state {
  struct __sk_buff* skb;
  __u64 buf;
  struct l7_packet* rec;
  void* pieces; /* the record's, after its captured bytes */
  __u64 captured;
  __u32 payload_offset;
  __u32 length;
  __u32 off; /* the next frame header's offset */
  __u32 end; /* 1: the payload's end reached (off: past it, or a header it cuts); 2: lost */
};

static __always_inline long h2_step(bool from_skb, struct h2_walk_state* w) {
  __u32 off = w->off;
  if (off + 9 > w->length) {
    w->end = 1; /* past the end, or a header that goes on in the next segment */
    return 1;
  }
  __u8 header[9];
  if (h2_load(from_skb, w->skb, w->payload_offset, w->buf, off, header, 9)) {
    w->end = 2;
    return 1;
  }
  __u32 frame_length = ((__u32)header[0] << 16) | ((__u32)header[1] << 8) | header[2];
  /* DATA: only its pad length, when it has one. */
  __u32 want = header[3] == 0 ? (header[4] & 0x8 ? 1 : 0) : frame_length;
  if (want > frame_length) want = frame_length; /* a padded DATA frame without a payload */
  if (want > L7_PIECE_BYTES - 9) want = L7_PIECE_BYTES - 9;
  if (want > w->length - off - 9) want = w->length - off - 9;
  __u32 used = w->rec->piece_bytes;
  if (off + 9 + want > w->captured &&
      used <= L7_PIECE_AREA - sizeof(struct l7_frame_piece) - L7_PIECE_BYTES) {
    struct l7_frame_piece* piece = w->pieces + used;
    __u8* bytes = (__u8*)(piece + 1);
    piece->offset = off;
    piece->kept = 9 + want;
    piece->pad = 0;
    __builtin_memcpy(bytes, header, 9);
    /* The same value, in a form whose bounds the verifier keeps (want is at
     * most L7_PIECE_BYTES - 9 already). */
    __u64 n = want & 0xff;
    barrier_var(n);
    if (n > L7_PIECE_BYTES - 9) n = L7_PIECE_BYTES - 9;
    if (n > 0 && h2_load(from_skb, w->skb, w->payload_offset, w->buf, off + 9, bytes + 9, n)) {
      w->end = 2;
      return 1;
    }
    w->rec->piece_bytes = used + L7_PIECE_SIZE(9 + want);
    w->rec->pieces++;
  }
  w->off = off + 9 + frame_length;
  return 0;
}

static long h2_step_skb(__u64 index, void* state) {
  return h2_step(true, state);
}

static long h2_step_user(__u64 index, void* state) {
  return h2_step(false, state);
}

/* Follows one direction through the payload [seq, seq + length), whose first
 * `captured` bytes are in `rec`; appends the pieces user space needs to it. */
static __always_inline void h2_walk(bool from_skb, struct __sk_buff* skb, __u32 payload_offset,
                                    __u64 buf, __u32 seq, __u32 length, __u64 captured,
                                    struct h2_direction* dir, struct l7_packet* rec) {
  rec->pieces = 0;
  rec->piece_bytes = 0;
  if (!h2_frame_walk) return;
  if (dir->walking == H2_LOST && h2_starts_frame((const __u8*)(rec + 1), captured, length)) {
    dir->walking = H2_WALKING;
    dir->next = seq;
    dir->partial = 0;
  }
  if (dir->walking != H2_WALKING) return;
  void* pieces = (void*)(rec + 1) + captured;
  struct h2_walk_state w = {.skb = skb,
                            .buf = buf,
                            .rec = rec,
                            .pieces = pieces,
                            .captured = captured,
                            .payload_offset = payload_offset,
                            .length = length};
  __u32 partial = dir->partial;
  if (partial) {
    /* A header begun at the last segment's end: its rest starts this one,
     * or inside it for a retransmission that took new bytes along (inside
     * the captured bytes, at least 9 long or the whole segment). A
     * retransmission of bytes walked already changes nothing. */
    __u32 rest_at = dir->next + partial;
    if ((__s32)(seq + length - rest_at) <= 0) return;
    __u32 base = rest_at - seq;
    if ((__s32)base < 0 || partial > 8 || base + 9 - partial > length) {
      dir->walking = H2_LOST;
      return;
    }
    /* The frame's length: its first 3 header bytes, from either part. */
    __u8 length_bytes[3] = {};
#pragma unroll
    for (__u32 i = 0; i < 3; i++) {
      if (i < partial) {
        length_bytes[i] = dir->header[i];
      } else if (h2_load(from_skb, skb, payload_offset, buf, base + i - partial, &length_bytes[i],
                         1)) {
        dir->walking = H2_LOST;
        return;
      }
    }
    dir->partial = 0;
    w.off = base + 9 - partial +
            (((__u32)length_bytes[0] << 16) | ((__u32)length_bytes[1] << 8) | length_bytes[2]);
  } else {
    w.off = dir->next - seq;
    if ((__s32)w.off < 0) {
      /* The segment starts past the next frame: the bytes between were not
       * seen here (lost, or out of order). A retransmission of bytes already
       * walked has off >= length and changes nothing below. */
      dir->walking = H2_LOST;
      return;
    }
  }
  bpf_loop(L7_WALK_FRAMES, from_skb ? h2_step_skb : h2_step_user, &w, 0);
  if (w.end != 1) {
    dir->walking = H2_LOST; /* more frames than walked, or one it could not read */
    return;
  }
  dir->next = seq + w.off;
  if (w.off >= length) return;
  /* A header cut by the segment's end: keep its start for the next one,
   * and give it as a short piece when past the captured bytes. */
  if (length - w.off > 8) {
    dir->walking = H2_LOST;
    return;
  }
  __u64 n = (length - w.off) & 0xf;
  barrier_var(n);
  if (n == 0 || n > 8 || h2_load(from_skb, skb, payload_offset, buf, w.off, dir->header, n)) {
    dir->walking = H2_LOST;
    return;
  }
  dir->partial = n;
  __u32 used = rec->piece_bytes;
  if (w.off + n > captured && used <= L7_PIECE_AREA - sizeof(struct l7_frame_piece) - 8) {
    struct l7_frame_piece* piece = pieces + used;
    piece->offset = w.off;
    piece->kept = n;
    piece->pad = 0;
    __builtin_memcpy(piece + 1, dir->header, 8);
    rec->piece_bytes = used + L7_PIECE_SIZE(n);
    rec->pieces++;
  }
}

static __always_inline void capture(struct __sk_buff* skb, bool outbound, __u32 slot) {
  struct bpf_sock* sk = skb->sk;
  if (!sk) return;
  sk = bpf_sk_fullsock(sk);
  if (!sk || !wanted(sk->protocol)) return;
  __u8 transport = sk->protocol;
  /* The common case first: a socket of no protocol costs this lookup only. */
  struct l7_socket* state = bpf_sk_storage_get(&sockets, sk, 0, 0);
  /* A TLS socket's protocols see its plaintext, from the library's probes. */
  if (state && (state->verdict == L7_IGNORED || state->tls)) return;

  /* cgroup_skb sees the packet from its IP header on. */
  struct nw_tuple tuple = {};
  __u32 ip_length = 0;
  __u32 src_at = 0, dst_at = 0, address_bytes = 0;
  if (skb->protocol == ETH_P_IP_BE) {
    __u8 version_ihl = 0;
    if (bpf_skb_load_bytes(skb, 0, &version_ihl, 1)) return;
    ip_length = (version_ihl & 0x0f) * 4;
    tuple.family = AF_INET;
    src_at = 12, dst_at = 16, address_bytes = 4;
  } else if (skb->protocol == ETH_P_IPV6_BE) {
    __u8 next_header = 0;
    if (bpf_skb_load_bytes(skb, 6, &next_header, 1)) return;
    if (next_header != transport) return; /* extension headers are not followed */
    ip_length = 40;
    tuple.family = AF_INET6;
    src_at = 8, dst_at = 24, address_bytes = 16;
  } else {
    return;
  }
  struct packet_start th = {};
  __u32 payload_offset = 0;
  if (transport == IPPROTO_TCP) {
    if (bpf_skb_load_bytes(skb, ip_length, &th, sizeof(th))) return;
    payload_offset = ip_length + (th.data_offset >> 4) * 4;
  } else {
    if (bpf_skb_load_bytes(skb, ip_length, &th, 8)) return;
    payload_offset = ip_length + 8;
  }
  if (skb->len <= payload_offset) return; /* ACKs, SYNs, FINs, empty datagrams */

  if (!state) state = bpf_sk_storage_get(&sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!state) return;
  __u64 cookie = bpf_get_socket_cookie(skb);
  if (state->verdict == L7_UNDECIDED) {
    take_decision(state, cookie);
    if (state->verdict == L7_IGNORED) return;
  }
  /* UDP is sent in process context: its sender is the task running. TCP
   * segments often leave from softirq; its owner comes from the hooks below. */
  if (transport == IPPROTO_UDP && outbound) {
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid && pid != state->pid) {
      state->pid = pid;
      bpf_get_current_comm(state->comm, sizeof(state->comm));
    }
  }

  /* Addresses from the packet: an unconnected UDP socket has no peer. */
  __u8 src[16] = {}, dst[16] = {};
  if (address_bytes == 4) {
    if (bpf_skb_load_bytes(skb, src_at, src, 4) || bpf_skb_load_bytes(skb, dst_at, dst, 4)) return;
  } else {
    if (bpf_skb_load_bytes(skb, src_at, src, 16) || bpf_skb_load_bytes(skb, dst_at, dst, 16))
      return;
  }
  __u16 source_port = bpf_ntohs(th.source), dest_port = bpf_ntohs(th.dest);
  if (outbound) {
    __builtin_memcpy(tuple.saddr, src, 16);
    __builtin_memcpy(tuple.daddr, dst, 16);
    tuple.sport = source_port;
    tuple.dport = dest_port;
  } else {
    __builtin_memcpy(tuple.saddr, dst, 16);
    __builtin_memcpy(tuple.daddr, src, 16);
    tuple.sport = dest_port;
    tuple.dport = source_port;
  }
  if (!nw_tuple_selected(&tuple) || !nw_pid_selected(state->pid)) return;
  if (state->verdict == L7_UNDECIDED) {
    __u8* offered = &state->offered[outbound ? 1 : 0];
    if (*offered >= offer_packets) {
      /* Waiting for user space's decision: this packet reaches no protocol.
       * Atomic: an ingress run in softirq can interrupt an egress run. */
      __u32 zero = 0;
      __u64* skipped = bpf_map_lookup_elem(&unoffered, &zero);
      if (skipped) __sync_fetch_and_add(skipped, 1);
      return;
    }
    (*offered)++;
  }

  struct l7_packet* rec = bpf_map_lookup_elem(&scratch, &slot);
  if (!rec) return;
  __u32 length = skb->len - payload_offset;
  __u64 captured = length < capture_bytes ? length : capture_bytes;
  /* Bounds the verifier can see: 1..NW_L7_MAX_CAPTURE, unsigned. */
  barrier_var(captured);
  if (captured == 0 || captured > NW_L7_MAX_CAPTURE) return;
  if (bpf_skb_load_bytes(skb, payload_offset, (void*)(rec + 1), captured)) return;
  __u32 direction = outbound ? 1 : 0;
  __u32 seq = transport == IPPROTO_TCP ? bpf_ntohl(th.seq) : 0;
  struct h2_direction* walk = &state->h2[direction & 1];
  if (transport == IPPROTO_TCP && walk->walking == H2_UNSEEN) {
    int first = h2_first_frame((const __u8*)(rec + 1), captured);
    walk->walking = first >= 0 ? H2_WALKING : H2_NOT_WALKED;
    walk->next = seq + first;
  }
  rec->pieces = 0;
  rec->piece_bytes = 0;
  if (transport == IPPROTO_TCP)
    h2_walk(true, skb, payload_offset, 0, seq, length, captured, walk, rec);
  __u32 piece_bytes = rec->piece_bytes;
  rec->cookie = cookie;
  rec->cgroup = bpf_skb_cgroup_id(skb);
  rec->tuple = tuple;
  rec->seq = seq;
  rec->length = length;
  rec->pid = state->pid;
  rec->captured = captured;
  rec->outbound = outbound;
  rec->transport = transport;
  rec->verdict = state->verdict;
  rec->protocol = state->protocol;
  /* A bound the verifier sees for the record's size: it cannot follow the
   * count out of bpf_loop. */
  barrier_var(piece_bytes);
  if (piece_bytes > L7_PIECE_AREA) return;
  rec->tls = 0;
  __builtin_memset(rec->pad, 0, sizeof(rec->pad));
  __builtin_memcpy(rec->comm, state->comm, sizeof(rec->comm));
  /* Until user space decides, the socket's packets beyond the offer are not
   * seen: an undecided socket's record wakes it now. Only the first few
   * packets of a socket take this path. */
  nw_output_record(rec, sizeof(*rec) + captured + piece_bytes, L7_RECORD_PACKET,
                   rec->verdict != L7_WATCHED);
}

SEC("cgroup_skb/egress")
int l7_egress(struct __sk_buff* skb) {
  capture(skb, true, SCRATCH_EGRESS);
  return 1;
}

SEC("cgroup_skb/ingress")
int l7_ingress(struct __sk_buff* skb) {
  capture(skb, false, SCRATCH_INGRESS);
  return 1;
}

/* ---- TLS plaintext ------------------------------------------------------
 * Uprobes on the TLS library (OpenSSL's SSL_read/SSL_write and their _ex
 * forms), attached by user space per library file. A call is remembered by
 * thread from its entry to its return; the socket it reads or writes is the
 * one the same thread sends on (tcp_sendmsg_locked) or receives from
 * (sock_recv_length) inside the call, which needs no offsets into the
 * library's structs. A read served from the library's buffer touches no
 * socket: the session (SSL pointer) remembers its socket from earlier calls.
 * The plaintext then goes up like a TCP segment, under the socket's cookie
 * with L7_TLS_STREAM, with a sequence number counted per direction. */

struct tls_call {
  __u64 ssl;
  __u64 buf;
  __u64 done_at; /* the _ex forms' size_t* of bytes done; 0 for the others */
  __u64 cookie;  /* 0 until the call touches its socket */
  __u64 cgroup;
  struct nw_tuple tuple;
};

struct tls_session_key {
  __u64 ssl;
  __u32 tgid;
  __u32 pad;
};

struct tls_session {
  __u64 cookie;
  __u64 cgroup;
  struct nw_tuple tuple;
};

/* The plaintext stream of one TLS socket. */
struct tls_stream {
  __u32 seq[2]; /* next byte's number, by direction (0 in, 1 out) */
  __u8 verdict;
  __u8 protocol;
  __u8 offered[2];
  __u8 pad[2];
  struct h2_direction h2[2]; /* as in struct l7_socket */
};

/* LRU, and emptied at each thread's exit: a thread that dies inside a call
 * (killed while blocked in SSL_read) leaves nothing behind for a later
 * thread of the same id to inherit. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 4096);
  __type(key, __u64); /* pid_tgid: a thread is in one call at a time */
  __type(value, struct tls_call);
} tls_calls SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, struct tls_session_key);
  __type(value, struct tls_session);
} tls_sessions SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u64); /* cookie | L7_TLS_STREAM */
  __type(value, struct tls_stream);
} tls_streams SEC(".maps");

/* Threads inside an mmap of a file named libssl* (sys_enter to sys_exit). */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 1024);
  __type(key, __u64);
  __type(value, __u8);
} tls_mapping SEC(".maps");

/* TLS calls whose socket was never seen (netwatcher_l7_tls_unmatched_total). */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} tls_unmatched SEC(".maps");

static __always_inline void count(void* per_cpu_counter) {
  __u32 zero = 0;
  __u64* value = bpf_map_lookup_elem(per_cpu_counter, &zero);
  if (value) __sync_fetch_and_add(value, 1);
}

/* The current thread's TLS call, if it is in one, learns its socket. */
static __always_inline void tls_call_saw(struct sock* sk, struct l7_socket* state) {
  __u64 id = bpf_get_current_pid_tgid();
  struct tls_call* call = bpf_map_lookup_elem(&tls_calls, &id);
  if (!call || call->cookie) return;
  call->cookie = bpf_get_socket_cookie(sk);
  call->cgroup = nw_sock_cgroup_id(sk);
  nw_read_sock_tuple(sk, &call->tuple);
  if (!state->tls) {
    state->tls = 1;
    /* The ciphertext is offered no more: a verdict on it would wait in
     * `decisions` for nothing. */
    bpf_map_delete_elem(&decisions, &call->cookie);
  }
  if (!call->ssl) return;
  struct tls_session_key key = {.ssl = call->ssl, .tgid = id >> 32};
  struct tls_session* known = bpf_map_lookup_elem(&tls_sessions, &key);
  if (known && known->cookie == call->cookie) return;
  struct tls_session session = {.cookie = call->cookie, .cgroup = call->cgroup};
  session.tuple = call->tuple;
  nw_table_insert(&tls_sessions, L7_TABLE_TLS_SESSIONS, &key, &session, BPF_ANY);
}

static __always_inline void tls_enter(__u64 ssl, __u64 buf, __u64 done_at) {
  __u64 id = bpf_get_current_pid_tgid();
  struct tls_call call = {.ssl = ssl, .buf = buf, .done_at = done_at};
  /* BPF_ANY: an entry left by a thread that died inside a call is stale. */
  nw_table_insert(&tls_calls, L7_TABLE_TLS_CALLS, &id, &call, BPF_ANY);
}

static __always_inline void tls_take_decision(struct tls_stream* stream, __u64 key) {
  struct l7_decision* decision = bpf_map_lookup_elem(&decisions, &key);
  if (!decision) return;
  stream->verdict = decision->verdict;
  stream->protocol = decision->protocol;
  bpf_map_delete_elem(&decisions, &key);
}

/* A call returned `rc`: `outbound` bytes written, else read. */
static __always_inline void tls_return(long rc, bool outbound, __u32 slot) {
  __u64 id = bpf_get_current_pid_tgid();
  struct tls_call* found = bpf_map_lookup_elem(&tls_calls, &id);
  if (!found) return;
  struct tls_call call = *found;
  nw_table_remove(&tls_calls, L7_TABLE_TLS_CALLS, &id);
  __u64 done = 0;
  if (call.done_at) {
    if (rc != 1 || bpf_probe_read_user(&done, sizeof(done), (void*)call.done_at)) return;
  } else {
    if (rc <= 0) return;
    done = rc;
  }
  if (done == 0 || !call.buf) return;
  if (!call.cookie) {
    struct tls_session_key key = {.ssl = call.ssl, .tgid = id >> 32};
    struct tls_session* session = bpf_map_lookup_elem(&tls_sessions, &key);
    if (!session) {
      count(&tls_unmatched);
      return;
    }
    call.cookie = session->cookie;
    call.cgroup = session->cgroup;
    call.tuple = session->tuple;
  }
  __u32 pid = id >> 32;
  if (!nw_tuple_selected(&call.tuple) || !nw_pid_selected(pid)) return;

  __u64 key = call.cookie | L7_TLS_STREAM;
  struct tls_stream* stream = bpf_map_lookup_elem(&tls_streams, &key);
  if (!stream) {
    /* A stream evicted and made again must not look contiguous with what
     * user space saw of it: start its numbering anywhere. */
    struct tls_stream fresh = {};
    fresh.seq[0] = bpf_get_prandom_u32();
    fresh.seq[1] = bpf_get_prandom_u32();
    nw_table_insert(&tls_streams, L7_TABLE_TLS_STREAMS, &key, &fresh, BPF_NOEXIST);
    stream = bpf_map_lookup_elem(&tls_streams, &key);
    if (!stream) return;
  }
  if (stream->verdict == L7_UNDECIDED) tls_take_decision(stream, key);
  if (stream->verdict == L7_IGNORED) return;
  __u32 direction = outbound ? 1 : 0;
  __u32 length = done > 0xffffffffULL ? 0xffffffffU : (__u32)done;
  __u32 seq = stream->seq[direction];
  stream->seq[direction] = seq + length;
  if (stream->verdict == L7_UNDECIDED) {
    if (stream->offered[direction] >= offer_packets) {
      count(&unoffered);
      return;
    }
    stream->offered[direction]++;
  }

  struct l7_packet* rec = bpf_map_lookup_elem(&scratch, &slot);
  if (!rec) return;
  __u64 captured = length < capture_bytes ? length : capture_bytes;
  barrier_var(captured);
  if (captured == 0 || captured > NW_L7_MAX_CAPTURE) return;
  /* Its bytes are a gap in the stream for the parser (seq moved on). */
  if (bpf_probe_read_user((void*)(rec + 1), captured, (void*)call.buf)) {
    count(&tls_unmatched);
    return;
  }
  struct h2_direction* walk = &stream->h2[direction & 1];
  if (walk->walking == H2_UNSEEN) {
    int first = h2_first_frame((const __u8*)(rec + 1), captured);
    walk->walking = first >= 0 ? H2_WALKING : H2_NOT_WALKED;
    walk->next = seq + first;
  }
  h2_walk(false, 0, 0, call.buf, seq, length, captured, walk, rec);
  __u32 piece_bytes = rec->piece_bytes;
  rec->cookie = key;
  rec->cgroup = call.cgroup;
  rec->tuple = call.tuple;
  rec->seq = seq;
  rec->length = length;
  rec->pid = pid;
  rec->captured = captured;
  rec->outbound = outbound;
  rec->transport = IPPROTO_TCP;
  rec->verdict = stream->verdict;
  rec->protocol = stream->protocol;
  barrier_var(piece_bytes);
  if (piece_bytes > L7_PIECE_AREA) return;
  rec->tls = 1;
  __builtin_memset(rec->pad, 0, sizeof(rec->pad));
  bpf_get_current_comm(rec->comm, sizeof(rec->comm));
  nw_output_record(rec, sizeof(*rec) + captured + piece_bytes, L7_RECORD_PACKET,
                   rec->verdict != L7_WATCHED);
}

/* SSL_read, SSL_write and SSL_do_handshake (whose socket is remembered for
 * the session's later calls): (SSL*, buf, num). */
SEC("uprobe")
int BPF_KPROBE(l7_tls_call, void* ssl, void* buf) {
  tls_enter((__u64)ssl, (__u64)buf, 0);
  return 0;
}

/* SSL_read_ex, SSL_write_ex: (SSL*, buf, num, size_t* done). */
SEC("uprobe")
int BPF_KPROBE(l7_tls_call_ex, void* ssl, void* buf, __u64 num, void* done) {
  tls_enter((__u64)ssl, (__u64)buf, (__u64)done);
  return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(l7_tls_read_done, long rc) {
  tls_return((int)rc, false, SCRATCH_TLS);
  return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(l7_tls_write_done, long rc) {
  tls_return((int)rc, true, SCRATCH_TLS);
  return 0;
}

/* The handshake: only its socket was wanted. */
SEC("uretprobe")
int BPF_KRETPROBE(l7_tls_handshake_done) {
  __u64 id = bpf_get_current_pid_tgid();
  nw_table_remove(&tls_calls, L7_TABLE_TLS_CALLS, &id);
  return 0;
}

/* SSL_free(SSL*): the session's pointer may be reused. */
SEC("uprobe")
int BPF_KPROBE(l7_tls_free, void* ssl) {
  struct tls_session_key key = {.ssl = (__u64)ssl, .tgid = bpf_get_current_pid_tgid() >> 32};
  nw_table_remove(&tls_sessions, L7_TABLE_TLS_SESSIONS, &key);
  return 0;
}

/* A library loaded after start-up: the dynamic loader maps its code with
 * PROT_EXEC from an open file. Only files named libssl* are reported. */
SEC("tracepoint/syscalls/sys_enter_mmap")
int l7_tls_mmap_enter(struct trace_event_raw_sys_enter* ctx) {
  const __u64 prot_exec = 4;
  long fd = (long)ctx->args[4];
  if (!((__u64)ctx->args[2] & prot_exec) || fd < 0 || fd >= 65536) return 0;
  struct task_struct* task = (struct task_struct*)bpf_get_current_task_btf();
  if (fd >= BPF_CORE_READ(task, files, fdt, max_fds)) return 0;
  struct file** files = BPF_CORE_READ(task, files, fdt, fd);
  struct file* file = NULL;
  if (!files || bpf_probe_read_kernel(&file, sizeof(file), &files[fd]) || !file) return 0;
  const unsigned char* name = BPF_CORE_READ(file, f_path.dentry, d_name.name);
  char start[7] = {};
  if (!name || bpf_probe_read_kernel_str(start, sizeof(start), name) < 0) return 0;
  if (start[0] != 'l' || start[1] != 'i' || start[2] != 'b' || start[3] != 's' || start[4] != 's' ||
      start[5] != 'l')
    return 0;
  __u64 id = bpf_get_current_pid_tgid();
  __u8 one = 1;
  bpf_map_update_elem(&tls_mapping, &id, &one, BPF_ANY);
  return 0;
}

SEC("tracepoint/syscalls/sys_exit_mmap")
int l7_tls_mmap_exit(struct trace_event_raw_sys_exit* ctx) {
  __u64 id = bpf_get_current_pid_tgid();
  if (!bpf_map_lookup_elem(&tls_mapping, &id)) return 0;
  bpf_map_delete_elem(&tls_mapping, &id);
  if (ctx->ret < 0) return 0;
  struct l7_tls_library* rec = nw_reserve(sizeof(*rec), L7_RECORD_TLS_LIBRARY);
  if (!rec) return 0;
  rec->pid = id >> 32;
  rec->exec = 0;
  /* Wake now: the process is about to use the library. */
  bpf_ringbuf_submit(rec, BPF_RB_FORCE_WAKEUP);
  return 0;
}

/* A new program: it may define the TLS functions itself (OpenSSL linked in).
 * Not woken for: exec is frequent, and user space checks each distinct
 * executable once. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(l7_tls_exec) {
  struct l7_tls_library* rec = nw_reserve(sizeof(*rec), L7_RECORD_TLS_LIBRARY);
  if (!rec) return 0;
  rec->pid = bpf_get_current_pid_tgid() >> 32;
  rec->exec = 1;
  nw_submit(rec);
  return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(l7_tls_thread_exit) {
  __u64 id = bpf_get_current_pid_tgid();
  nw_table_remove(&tls_calls, L7_TABLE_TLS_CALLS, &id);
  return 0;
}

/* The owner of a socket not (yet) ignored, from process context. The storage
 * is created here when needed: a client's first send comes before its first
 * segment is judged, and that request should carry its sender. Inside a TLS
 * call, the call learns its socket here. */
static __always_inline void remember_owner(struct sock* sk) {
  if (!sk) return;
  __u16 protocol = sk->sk_protocol;
  if (!wanted(protocol)) return;
  struct l7_socket* state = bpf_sk_storage_get(&sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!state) return;
  if (capture_tls && protocol == IPPROTO_TCP) tls_call_saw(sk, state);
  if (state->verdict == L7_IGNORED) return;
  __u32 pid = bpf_get_current_pid_tgid() >> 32;
  if (state->pid == pid) return;
  state->pid = pid;
  bpf_get_current_comm(state->comm, sizeof(state->comm));
}

/* Before the data leaves (sock_send_length would come after the first
 * segment), so even a connection's first request carries its sender. */
SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(l7_send_owner, struct sock* sk) {
  remember_owner(sk);
  return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(l7_recv_owner, struct sock* sk) {
  remember_owner(sk);
  return 0;
}

/* A watched TCP socket's CLOSE, so that its protocol reports what is
 * unanswered. Also clears a decision the socket never took. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(l7_socket_closed, struct sock* sk, int oldstate, int newstate) {
  if (newstate != TCP_CLOSE || sk->sk_protocol != IPPROTO_TCP) return 0;
  struct l7_socket* state = bpf_sk_storage_get(&sockets, sk, 0, 0);
  if (!state) return 0;
  __u64 cookie = bpf_get_socket_cookie(sk);
  if (state->tls) {
    /* Its plaintext stream closes too. */
    __u64 key = cookie | L7_TLS_STREAM;
    struct tls_stream* stream = bpf_map_lookup_elem(&tls_streams, &key);
    if (stream) {
      if (stream->verdict == L7_UNDECIDED) tls_take_decision(stream, key);
      bool tell = stream->verdict == L7_WATCHED ||
                  (stream->verdict == L7_UNDECIDED && (stream->offered[0] || stream->offered[1]));
      nw_table_remove(&tls_streams, L7_TABLE_TLS_STREAMS, &key);
      struct l7_close* rec = tell ? nw_reserve(sizeof(*rec), L7_RECORD_CLOSE) : NULL;
      if (rec) {
        rec->cookie = key;
        nw_submit(rec);
      }
    }
  }
  /* The ciphertext's own close: a protocol may own its cleartext start (a
   * MySQL greeting before TLS). */
  if (state->verdict == L7_IGNORED) return 0;
  /* A short connection may end before its storage saw the decision: an
   * undecided socket that offered packets closes too, after them. */
  if (state->verdict == L7_UNDECIDED) {
    take_decision(state, cookie);
    if (state->verdict == L7_IGNORED) return 0;
    if (state->verdict == L7_UNDECIDED && !state->offered[0] && !state->offered[1]) return 0;
  }
  struct l7_close* rec = nw_reserve(sizeof(*rec), L7_RECORD_CLOSE);
  if (!rec) return 0;
  rec->cookie = cookie;
  nw_submit(rec);
  return 0;
}
