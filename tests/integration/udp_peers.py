"""UDP test peers for the integration tests (run inside network namespaces).

recv --ready FILE PORT... : binds every PORT on IPv4 and IPv6, touches FILE,
        counts datagrams per port until SIGTERM, then prints {"PORT": count}.
send HOST PORT COUNT SIZE [--sport N] : sends COUNT datagrams of SIZE bytes
        from one socket (bound to N when given); prints {"pid", "sport"}.
echo --ready FILE PORT : answers every datagram on PORT (IPv4 and IPv6) with
        one of the same size (recvfrom / sendto), until SIGTERM.
exchange HOST PORT SIZE... : sends each SIZE and waits for its echo, first
        from an unconnected socket (sendto / recvfrom), then from a connected
        one (send / recv); prints {"pid", "unconnected_sport",
        "connected_sport"}.
hold --ready FILE --rcvbuf BYTES PORT : binds PORT with a small receive
        buffer and never reads, until SIGTERM.
spray HOST PORT SOCKETS : one datagram from each of SOCKETS sockets, all open
        at once, then closed; prints {"pid", "sockets"}.
batch HOST PORT COUNT SIZE : COUNT datagrams of SIZE bytes in one sendmmsg(2)
        call from one connected socket, then COUNT with write(2) from
        another; prints {"pid", "sendmmsg_sport", "sendmmsg_sent",
        "write_sport"}.
"""
import ctypes
import json
import os
import selectors
import signal
import socket
import sys

SO_RCVBUFFORCE = 33  # root may exceed net.core.rmem_max


def recv(args):
    ready = args[args.index("--ready") + 1]
    ports = [int(p) for p in args if p.isdigit()]
    sel = selectors.DefaultSelector()
    counts = {p: 0 for p in ports}
    for port in ports:
        for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            s = socket.socket(family, socket.SOCK_DGRAM)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Bursts of hundreds of datagrams must not overflow the default
            # buffer (rmem_max) while python reads: tests count every one.
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            s.bind((addr, port))
            sel.register(s, selectors.EVENT_READ, port)

    def finish(*_):
        print(json.dumps({str(p): n for p, n in counts.items()}), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, finish)
    open(ready, "w").close()
    while True:
        for key, _ in sel.select():
            key.fileobj.recv(65536)
            counts[key.data] += 1


def send(args):
    host, port, count, size = args[0], int(args[1]), int(args[2]), int(args[3])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    if "--sport" in args:
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0",
                int(args[args.index("--sport") + 1])))
    for _ in range(count):
        try:
            s.sendto(b"u" * size, (host, port))
        except OSError:
            pass  # e.g. EPERM when an output rule drops it
    print(json.dumps({"pid": os.getpid(), "sport": s.getsockname()[1]}), flush=True)


def bound_sockets(port, rcvbuf=0):
    sockets = []
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((addr, port))
        sockets.append(s)
    return sockets


def echo(args):
    ready = args[args.index("--ready") + 1]
    port = int(args[-1])
    sel = selectors.DefaultSelector()
    for s in bound_sockets(port):
        sel.register(s, selectors.EVENT_READ)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    open(ready, "w").close()
    while True:
        for key, _ in sel.select():
            data, peer = key.fileobj.recvfrom(65536)
            key.fileobj.sendto(data, peer)


def exchange(args):
    host, port, sizes = args[0], int(args[1]), [int(a) for a in args[2:]]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    unconnected = socket.socket(family, socket.SOCK_DGRAM)
    unconnected.settimeout(5)
    for size in sizes:
        unconnected.sendto(b"e" * size, (host, port))
        unconnected.recvfrom(65536)
    connected = socket.socket(family, socket.SOCK_DGRAM)
    connected.settimeout(5)
    connected.connect((host, port))
    for size in sizes:
        connected.send(b"c" * size)
        connected.recv(65536)
    print(json.dumps({"pid": os.getpid(),
                      "unconnected_sport": unconnected.getsockname()[1],
                      "connected_sport": connected.getsockname()[1]}), flush=True)


def spray(args):
    host, port, count = args[0], int(args[1]), int(args[2])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(count)]
    for s in sockets:
        s.sendto(b"s", (host, port))
    for s in sockets:
        s.close()
    print(json.dumps({"pid": os.getpid(), "sockets": count}), flush=True)


class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", Msghdr), ("len", ctypes.c_uint)]


def batch(args):
    host, port, count, size = args[0], int(args[1]), int(args[2]), int(args[3])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    libc = ctypes.CDLL(None, use_errno=True)
    payload = ctypes.create_string_buffer(b"m" * size, size)
    iov = Iovec(ctypes.cast(payload, ctypes.c_void_p), size)
    messages = (Mmsghdr * count)()
    for m in messages:
        m.hdr.iov = ctypes.pointer(iov)
        m.hdr.iovlen = 1
    batched = socket.socket(family, socket.SOCK_DGRAM)
    batched.connect((host, port))
    sent = libc.sendmmsg(batched.fileno(), messages, count, 0)
    if sent < 0:
        raise OSError(ctypes.get_errno(), "sendmmsg")
    written = socket.socket(family, socket.SOCK_DGRAM)
    written.connect((host, port))
    for _ in range(count):
        os.write(written.fileno(), b"w" * size)
    print(json.dumps({"pid": os.getpid(), "sendmmsg_sport": batched.getsockname()[1],
                      "sendmmsg_sent": sent, "write_sport": written.getsockname()[1]}),
          flush=True)


def hold(args):
    ready = args[args.index("--ready") + 1]
    rcvbuf = int(args[args.index("--rcvbuf") + 1])
    sockets = bound_sockets(int(args[-1]), rcvbuf)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    open(ready, "w").close()
    while sockets:
        signal.pause()


if __name__ == "__main__":
    {"recv": recv, "send": send, "echo": echo, "exchange": exchange,
     "hold": hold, "spray": spray, "batch": batch}[sys.argv[1]](sys.argv[2:])
