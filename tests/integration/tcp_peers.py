"""TCP test peers for the integration tests (run inside network namespaces).

server PORT... : listens on every PORT over IPv4 and IPv6, reads each
                 connection to EOF, answers b"ok", closes; writes its pid to
                 argv's --pidfile and touches --ready when listening.
client HOST PORT SIZE... : one connection per SIZE, sends SIZE bytes, shuts
                 down its side, reads the answer; prints one JSON line per
                 connection: {"pid", "sport", "dport", "sent", "received"}.
hold HOST PORT SIZE SECONDS : one connection that sends SIZE bytes, prints its
                 JSON line, and stays open for SECONDS before closing.
"""
import time
import json
import os
import socket
import sys
import threading


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


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2:])
    elif sys.argv[1] == "hold":
        hold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    else:
        client(sys.argv[2], int(sys.argv[3]), [int(a) for a in sys.argv[4:]])
