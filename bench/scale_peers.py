"""Peers for bench/scale.sh: many concurrent TCP connections on loopback.

server PORT... : accepts on every PORT (127.0.0.1), keeps each connection
                 open, discards what it reads, closes when the peer does.
client PORTS COUNT CHURN_SECONDS CHURN READY GO : opens COUNT connections
                 spread over the comma-separated PORTS and keeps them open,
                 touches READY, waits for the file GO, then for CHURN_SECONDS
                 opens and closes one connection after another if CHURN is 1
                 (closed with RST, so that no TIME_WAIT uses up the ports),
                 or only waits if it is 0; prints {"held", "open_seconds",
                 "churned", "churn_seconds"} and closes everything.
"""
import json
import os
import select
import socket
import struct
import sys
import time


def server(ports):
    poll = select.epoll()
    listeners = {}
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(4096)
        s.setblocking(False)
        listeners[s.fileno()] = s
        poll.register(s.fileno(), select.EPOLLIN)
    conns = {}
    while True:
        for fd, _ in poll.poll():
            if fd in listeners:
                while True:
                    try:
                        c, _ = listeners[fd].accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    conns[c.fileno()] = c
                    poll.register(c.fileno(), select.EPOLLIN)
                continue
            c = conns.get(fd)
            if c is None:
                continue
            try:
                data = c.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                poll.unregister(fd)
                del conns[fd]
                c.close()


def client(ports, count, churn_seconds, churn, ready, go):
    started = time.time()
    held = []
    pending = []
    poll = select.epoll()
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", ports[i % len(ports)]))
        except BlockingIOError:
            pass
        pending.append(s)
        poll.register(s.fileno(), select.EPOLLOUT)
        # Bounded in flight: the listeners' backlogs are 4096 each.
        while len(pending) >= 2048 or (i == count - 1 and pending):
            for fd, _ in poll.poll(5):
                poll.unregister(fd)
            still = []
            for p in pending:
                err = p.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                try:
                    p.getpeername()
                    held.append(p)
                except OSError:
                    if err:
                        raise OSError(err, os.strerror(err))
                    still.append(p)
            pending = still
    open_seconds = time.time() - started
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.05)
    churned = 0
    linger = struct.pack("ii", 1, 0)
    began = time.time()
    while not churn and time.time() - began < churn_seconds:
        time.sleep(0.1)
    while churn and time.time() - began < churn_seconds:
        s = socket.create_connection(("127.0.0.1", ports[churned % len(ports)]))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.close()
        churned += 1
    churn_time = time.time() - began
    print(json.dumps({"held": len(held), "open_seconds": round(open_seconds, 2),
                      "churned": churned, "churn_seconds": round(churn_time, 2)}), flush=True)
    for s in held:
        s.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server([int(p) for p in sys.argv[2:]])
    else:
        client([int(p) for p in sys.argv[2].split(",")], int(sys.argv[3]), float(sys.argv[4]),
               sys.argv[5] == "1", sys.argv[6], sys.argv[7])
