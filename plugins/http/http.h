/* Records shared by http.bpf.c and the http plugin's decoder. */
#ifndef NETWATCHER_PLUGIN_HTTP_H
#define NETWATCHER_PLUGIN_HTTP_H

#include "netwatcher/bpf/types.h"

#define HTTP_MAX_CAPTURE 512

enum http_record_type {
  HTTP_RECORD_SEGMENT = 1, /* a TCP segment with payload of a watched socket */
  HTTP_RECORD_CLOSE = 2,   /* a watched socket closed */
};

/* One TCP segment as one socket saw it; `captured` bytes of payload follow
 * the fixed part (the record is sizeof(struct http_segment) + captured). */
struct http_segment {
  struct nw_record_header hdr;
  __u64 cookie;          /* socket cookie: one per socket, so per side */
  struct nw_tuple tuple; /* local / remote */
  __u32 seq;
  __u32 length; /* payload bytes in the segment (GSO: all of them) */
  __u32 pid;    /* the socket's last sender/receiver; 0 when not seen yet */
  __u16 captured;
  __u8 outbound;
  __u8 pad;
  char comm[NW_TASK_COMM_LEN];
};

struct http_close {
  struct nw_record_header hdr;
  __u64 cookie;
};

#endif
