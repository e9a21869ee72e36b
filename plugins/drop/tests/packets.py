#!/usr/bin/env python3
"""Hand-made packets for the drop plugin's tests, sent from the current
network namespace. Each mode prints one JSON line with what it sent.

  arp IFACE TARGET_IP COUNT
      ARP requests for TARGET_IP, as Ethernet frames on IFACE.
  vlan IFACE COUNT
      802.1Q frames with two tags (VLAN 5, then VLAN 6) around an IPv4
      header, to IFACE's peer: with no VLAN device for them, the receiver
      strips one tag and has no handler for the second.
  ipproto DST PROTOCOL COUNT
      IPv4 packets of IP protocol PROTOCOL (no transport header) to DST.
  fragments DST DPORT SPORT IP_ID PAYLOAD
      One UDP datagram of PAYLOAD bytes to DST:DPORT in two IPv4 fragments
      (the first with the UDP header and 8 payload bytes, the second with the
      rest), IP identification IP_ID.
  v6ext DST DPORT SPORT COUNT PAYLOAD
      UDP datagrams to [DST]:DPORT behind a hop-by-hop options and a
      destination options header (IPV6_HOPOPTS / IPV6_DSTOPTS ancillary data).
"""
import json
import os
import socket
import struct
import sys


# The Internet checksum of the shared test peers (tests/integration).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "tests", "integration"))
from tcp_peers import checksum  # noqa: E402


def mac_of(iface):
    with open("/sys/class/net/%s/address" % iface) as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


def ipv4_header(src, dst, protocol, payload_len, ident=0, frag=0):
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident, frag, 64, protocol, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:]


def local_address(dst):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((dst, 9))
    address = s.getsockname()[0]
    s.close()
    return address


def send_frames(iface, frames):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    for frame in frames:
        s.send(frame)
    s.close()


def arp(iface, target, count):
    mine = mac_of(iface)
    source = socket.inet_aton(local_address(target))
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mine, source, b"\0" * 6,
                       socket.inet_aton(target))
    frame = b"\xff" * 6 + mine + struct.pack("!H", 0x0806) + body
    send_frames(iface, [frame] * count)
    print(json.dumps({"sent": count, "length": len(body)}))


def vlan(iface, count):
    mine = mac_of(iface)
    inner = ipv4_header("10.0.0.1", "10.0.0.2", 17, 8) + struct.pack("!HHHH", 9, 9, 8, 0)
    frame = (b"\xff" * 6 + mine + struct.pack("!HHHH", 0x8100, 5, 0x8100, 6) +
             struct.pack("!H", 0x0800) + inner)
    send_frames(iface, [frame] * count)
    # skb->len at the drop: the frame after the Ethernet header and the one
    # tag the receiver strips.
    print(json.dumps({"sent": count, "length": len(frame) - 14 - 4}))


def ipproto(dst, protocol, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, protocol)
    payload = b"netwatcher"
    for _ in range(count):
        s.sendto(payload, (dst, 0))
    s.close()
    print(json.dumps({"sent": count, "length": 20 + len(payload)}))


def fragments(dst, dport, sport, ident, size):
    src = local_address(dst)
    payload = bytes(i & 0xFF for i in range(size))
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, 8 + size)
    udp = struct.pack("!HHHH", sport, dport, 8 + size, 0)
    udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp + payload) or 0xFFFF)
    datagram = udp + payload
    first, rest = datagram[:16], datagram[16:]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(ipv4_header(src, dst, 17, len(first), ident, 0x2000) + first, (dst, 0))
    s.sendto(ipv4_header(src, dst, 17, len(rest), ident, 16 // 8) + rest, (dst, 0))
    s.close()
    print(json.dumps({"first": 20 + len(first), "second": 20 + len(rest),
                      "whole": 20 + len(datagram), "sport": sport}))


def v6ext(dst, dport, sport, count, size):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("", sport))
    # Each header 8 bytes: next header (the kernel fills it in), length 0,
    # and one PadN option of 4 bytes.
    options = struct.pack("!BB", 0, 0) + struct.pack("!BB", 1, 4) + b"\0" * 4
    ancillary = [(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, options),
                 (socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, options)]
    for _ in range(count):
        s.sendmsg([b"x" * size], ancillary, 0, (dst, dport))
    s.close()
    # The IPv6 header and both options headers of 8 bytes, then the datagram.
    print(json.dumps({"sent": count, "packet": 40 + 8 + 8 + 8 + size, "datagram": 8 + size}))


def main(argv):
    mode, args = argv[1], argv[2:]
    if mode == "arp":
        arp(args[0], args[1], int(args[2]))
    elif mode == "vlan":
        vlan(args[0], int(args[1]))
    elif mode == "ipproto":
        ipproto(args[0], int(args[1]), int(args[2]))
    elif mode == "fragments":
        fragments(args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4]))
    elif mode == "v6ext":
        v6ext(args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4]))
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main(sys.argv)
