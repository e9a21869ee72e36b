"""TCP test peers for the integration tests (run inside network namespaces).

server PORT... : listens on every PORT over IPv4 and IPv6, reads each
                 connection to EOF, answers b"ok", closes; writes its pid to
                 argv's --pidfile and touches --ready when listening.
client HOST PORT SIZE... : one connection per SIZE, sends SIZE bytes, shuts
                 down its side, reads the answer; prints one JSON line per
                 connection: {"pid", "sport", "dport", "sent", "received"}.
hold HOST PORT SIZE SECONDS : one connection that sends SIZE bytes, prints its
                 JSON line, and stays open for SECONDS before closing.
many HOST PORT COUNT SIZE SECONDS : COUNT connections open at once, each
                 sends SIZE bytes; once all are open it touches --ready (the
                 last argument after it), holds them SECONDS, then ends each
                 like client. Prints {"pid", "connections", "sent", "received"}.
pace HOST PORT SIZE COUNT INTERVAL : one connection that sends SIZE bytes
                 COUNT times, INTERVAL seconds apart, then ends like client.
craft HOST PORT : connects, learns the connection's sequence numbers with
                 TCP_REPAIR, then injects segments with a raw socket (IPv4):
                 10 bytes far beyond the receive window, at the expected
                 sequence number with a bad checksum, in the window but out of
                 order, far before the window, acking data never sent; then a
                 keepalive probe. Prints {"pid", "sport", "dport", "seq", "ack"}.
"""
import time
import json
import os
import socket
import struct
import sys
import threading

TCP_REPAIR = 19
TCP_REPAIR_QUEUE = 20
TCP_QUEUE_SEQ = 21
TCP_RECV_QUEUE = 1
TCP_SEND_QUEUE = 2


def serve(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def handle(conn):
    with conn:
        while conn.recv(65536):
            pass
        conn.sendall(b"ok")


def server(args):
    pidfile = args[args.index("--pidfile") + 1]
    ready = args[args.index("--ready") + 1]
    ports = [int(a) for a in args if a.isdigit()]
    for port in ports:
        for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
            s.listen(128)
            threading.Thread(target=serve, args=(s,), daemon=True).start()
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    open(ready, "w").close()
    threading.Event().wait()


def client(host, port, sizes):
    for size in sizes:
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"x" * size)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
        sport = s.getsockname()[1]
        s.close()
        print(json.dumps({"pid": os.getpid(), "sport": sport, "dport": port,
                          "sent": size, "received": len(received)}), flush=True)


def hold(host, port, size, seconds):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"x" * size)
    print(json.dumps({"pid": os.getpid(), "sport": s.getsockname()[1], "dport": port,
                      "sent": size, "received": 0}), flush=True)
    time.sleep(seconds)
    s.close()


def many(host, port, count, size, seconds, ready):
    conns = []
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"x" * size)
        conns.append(s)
    open(ready, "w").close()
    time.sleep(seconds)
    received = 0
    for s in conns:
        s.shutdown(socket.SHUT_WR)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += len(chunk)
        s.close()
    print(json.dumps({"pid": os.getpid(), "connections": count, "sent": count * size,
                      "received": received}), flush=True)


def pace(host, port, size, count, interval):
    s = socket.create_connection((host, port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(count):
        s.sendall(b"x" * size)
        time.sleep(interval)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    print(json.dumps({"pid": os.getpid(), "sport": s.getsockname()[1], "dport": port,
                      "sent": size * count, "received": 2}), flush=True)
    s.close()


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def segment(src, dst, sport, dport, seq, ack, payload, corrupt=False):
    flags = 0x18  # PSH | ACK
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(
        "!BBH", 0, socket.IPPROTO_TCP, len(header) + len(payload))
    csum = checksum(pseudo + header + payload)
    if corrupt:
        csum ^= 0x5A5A
    return header[:16] + struct.pack("!H", csum) + header[18:] + payload


def craft(host, port):
    s = socket.create_connection((host, port), timeout=10)
    src, sport = s.getsockname()
    # Repair mode reads the sequence numbers without sending anything.
    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
    seq = struct.unpack("I", s.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0]
    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
    ack = struct.unpack("I", s.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0]
    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 0)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    payload = b"0123456789"
    # (sequence offset, ack offset, payload, corrupt checksum): far beyond
    # the window; at rcv_nxt with a bad checksum; in the window but out of
    # order; far before the window; at rcv_nxt acking data never sent; a
    # keepalive probe (rcv_nxt - 1, no payload).
    for offset, ack_offset, data, corrupt in ((0x40000000, 0, payload, False),
                                              (0, 0, payload, True),
                                              (1000, 0, payload, False),
                                              (-0x40000000, 0, payload, False),
                                              (0, 0x40000000, payload, False),
                                              (-1, 0, b"", False)):
        raw.sendto(segment(src, host, sport, port, (seq + offset) & 0xFFFFFFFF,
                           (ack + ack_offset) & 0xFFFFFFFF, data, corrupt), (host, 0))
        time.sleep(0.1)
    print(json.dumps({"pid": os.getpid(), "sport": sport, "dport": port, "seq": seq, "ack": ack}),
          flush=True)
    time.sleep(0.3)
    s.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2:])
    elif sys.argv[1] == "pace":
        pace(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
             float(sys.argv[6]))
    elif sys.argv[1] == "craft":
        craft(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "many":
        many(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
             float(sys.argv[6]), sys.argv[sys.argv.index("--ready") + 1])
    elif sys.argv[1] == "hold":
        hold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    else:
        client(sys.argv[2], int(sys.argv[3]), [int(a) for a in sys.argv[4:]])
