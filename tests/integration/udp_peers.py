"""UDP test peers for the integration tests (run inside network namespaces).

recv --ready FILE PORT... : binds every PORT on IPv4 and IPv6, touches FILE,
        counts datagrams per port until SIGTERM, then prints {"PORT": count}.
send HOST PORT COUNT SIZE [--sport N] : sends COUNT datagrams of SIZE bytes
        from one socket (bound to N when given); prints {"pid", "sport"}.
"""
import json
import os
import selectors
import signal
import socket
import sys


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


if __name__ == "__main__":
    {"recv": recv, "send": send}[sys.argv[1]](sys.argv[2:])
