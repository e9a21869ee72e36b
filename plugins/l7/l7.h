/* Records of the shared L7 capture, between l7.bpf.c and plugin.cpp. */
#ifndef NETWATCHER_L7_H
#define NETWATCHER_L7_H

#include "netwatcher/bpf/types.h"

#define L7_RECORD_PACKET 1
#define L7_RECORD_CLOSE 2
#define L7_RECORD_TLS_LIBRARY 3

/* The plaintext of a TLS connection is a stream of its own beside the
 * socket's ciphertext: its key is the socket's cookie with this bit set, in
 * records, decisions and closes. Cookies count up from 1: they never reach
 * it. */
#define L7_TLS_STREAM (1ULL << 63)

/* Bounded tables of the TLS capture (nw_table_insert indexes). */
#define L7_TABLE_TLS_CALLS 0
#define L7_TABLE_TLS_SESSIONS 1
#define L7_TABLE_TLS_STREAMS 2

/* What the kernel knows about a socket: nothing yet, owned by a protocol, or
 * of no protocol's interest. */
enum l7_verdict { L7_UNDECIDED = 0, L7_WATCHED = 1, L7_IGNORED = 2 };

/* One TCP segment or UDP datagram with payload, as one local socket saw it.
 * `captured` payload bytes follow the fixed part. */
struct l7_packet {
  struct nw_record_header hdr;
  __u64 cookie;
  __u64 cgroup;          /* the socket's cgroup2 id */
  struct nw_tuple tuple; /* local / remote */
  __u32 seq;             /* TCP only */
  __u32 length;          /* payload bytes on the wire */
  __u32 pid;             /* the socket's last sender/receiver; 0 when not seen yet */
  __u16 captured;
  __u8 outbound;
  __u8 transport;    /* IPPROTO_TCP or IPPROTO_UDP */
  __u8 verdict;      /* L7_UNDECIDED (offered for detection) or L7_WATCHED */
  __u8 protocol;     /* L7_WATCHED: the owner's index among the served protocols */
  __u8 tls;          /* plaintext read by the TLS library's probes (cookie has L7_TLS_STREAM) */
  __u8 pieces;       /* struct l7_frame_piece after the captured bytes: how many */
  __u16 piece_bytes; /* ... and how many bytes they take */
  __u8 pad[2];
  char comm[NW_TASK_COMM_LEN];
};

/* HTTP/2 frames past the captured bytes, found by following frame lengths in
 * the kernel (see "HTTP/2 frame walk" in l7.bpf.c): each one's 9-byte header
 * and, but for DATA, the first of its payload (DATA: its pad length), at
 * most L7_PIECE_BYTES. Pieces follow one another in L7_PIECE_AREA bytes at
 * most, each rounded up to 8 bytes: a DATA frame's takes 24, a HEADERS
 * frame's up to 256. */
#define L7_PIECE_AREA 4096
#define L7_PIECE_BYTES 248
#define L7_WALK_FRAMES 1024
struct l7_frame_piece {
  __u32 offset; /* from the payload's first byte */
  __u16 kept;   /* bytes that follow: 9 + the payload kept (fewer: a header the packet cuts) */
  __u16 pad;
  /* __u8 bytes[kept], then padding to a multiple of 8 */
};
#define L7_PIECE_SIZE(kept) ((sizeof(struct l7_frame_piece) + (kept) + 7) & ~7u)

/* A watched TCP socket reached CLOSE. */
struct l7_close {
  struct nw_record_header hdr;
  __u64 cookie;
};

/* A process mapped a file named libssl* executable, or exec'd a program:
 * user space looks for TLS libraries it has not probed yet in that process's
 * maps and executable. */
struct l7_tls_library {
  struct nw_record_header hdr;
  __u32 pid;
  __u32 exec; /* 1: an exec (checked at the next collect), 0: a mapping (now) */
};

/* What user space decided for a socket, keyed by its cookie; the kernel moves
 * it into the socket's storage at the socket's next packet. */
struct l7_decision {
  __u8 verdict;
  __u8 protocol;
  __u8 pad[6];
};

#endif
