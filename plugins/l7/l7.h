/* Records of the shared L7 capture, between l7.bpf.c and plugin.cpp. */
#ifndef NETWATCHER_L7_H
#define NETWATCHER_L7_H

#include "netwatcher/bpf/types.h"

#define L7_RECORD_PACKET 1
#define L7_RECORD_CLOSE 2

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
  __u8 transport; /* IPPROTO_TCP or IPPROTO_UDP */
  __u8 verdict;   /* L7_UNDECIDED (offered for detection) or L7_WATCHED */
  __u8 protocol;  /* L7_WATCHED: the owner's index among the served protocols */
  __u8 pad[6];
  char comm[NW_TASK_COMM_LEN];
};

/* A watched TCP socket reached CLOSE. */
struct l7_close {
  struct nw_record_header hdr;
  __u64 cookie;
};

/* What user space decided for a socket, keyed by its cookie; the kernel moves
 * it into the socket's storage at the socket's next packet. */
struct l7_decision {
  __u8 verdict;
  __u8 protocol;
  __u8 pad[6];
};

#endif
