"""A segment that fails PAWS (RFC 7323) on an established connection.

tcp_paws.py HOST PORT : connects (IPv4, TCP timestamps on), sends 5 bytes so
    the peer records a recent timestamp, learns the connection's sequence
    numbers and its current TSval with TCP_REPAIR, then injects with a raw
    socket one segment of 10 bytes at exactly the peer's rcv_nxt, acking
    exactly what the peer sent, whose TSval is 100000 ticks older than the
    connection's: in the window, but too old for PAWS. Prints {"pid", "sport",
    "dport", "seq", "ack", "tsval"} once the segment is sent, and closes.
"""
import json
import os
import socket
import struct
import sys

TCP_REPAIR = 19
TCP_REPAIR_QUEUE = 20
TCP_QUEUE_SEQ = 21
TCP_TIMESTAMP = 24
TCP_RECV_QUEUE = 1
TCP_SEND_QUEUE = 2
OLDER_BY = 100000

# The Internet checksum of the shared test peers (tests/integration).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "tests", "integration"))
from tcp_peers import checksum  # noqa: E402


def segment(src, dst, sport, dport, seq, ack, tsval, tsecr, payload):
    # NOP, NOP, timestamps: the layout Linux sends (and predicts in its fast path).
    options = struct.pack("!BBBBII", 1, 1, 8, 10, tsval, tsecr)
    doff = (20 + len(options)) // 4
    flags = 0x18  # PSH | ACK
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, 65535, 0,
                         0) + options
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(
        "!BBH", 0, socket.IPPROTO_TCP, len(header) + len(payload))
    csum = checksum(pseudo + header + payload)
    return header[:16] + struct.pack("!H", csum) + header[18:] + payload


def main(host, port):
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    src, sport = s.getsockname()
    s.sendall(b"hello")
    # Repair mode reads the sequence numbers and the timestamp clock without
    # sending anything.
    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
    seq = struct.unpack("I", s.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0]
    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
    ack = struct.unpack("I", s.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0]
    tsval = struct.unpack("I", s.getsockopt(socket.IPPROTO_TCP, TCP_TIMESTAMP, 4))[0]
    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 0)
    old = (tsval - OLDER_BY) & 0xFFFFFFFF
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    raw.sendto(segment(src, host, sport, port, seq, ack, old, 0, b"0123456789"), (host, 0))
    print(json.dumps({"pid": os.getpid(), "sport": sport, "dport": port, "seq": seq,
                      "ack": ack, "tsval": old}), flush=True)
    s.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
