"""HTTP server for the integration tests: HTTP/1.1, h2c Upgrade and h2 prior knowledge.

usage: h2c_upgrade_server.py PORT --host ADDRESS --root DIR --ready FILE
                             [--pidfile FILE] [--split]

Each connection gets its own thread and is served according to how it starts:
  * "PRI * HTTP/2.0" (the h2 preface): HTTP/2 with prior knowledge;
  * an HTTP/1.1 request with "Upgrade: websocket": "101", then an echo of
    whatever comes;
  * an HTTP/1.1 request with "Upgrade: h2c" and "HTTP2-Settings" (RFC 7540
    section 3.2): "101 Switching Protocols", then HTTP/2; the upgraded
    request is answered on stream 1, later requests on their own streams;
  * any other HTTP/1.1 request: plain HTTP/1.1 with keep-alive.
GET /PATH serves the file DIR/PATH (query string stripped, ".." rejected) as
200 application/octet-stream; anything else is 404 "not found\\n".
By default the 101 head and the server's first HTTP/2 frame (SETTINGS) go out
in one sendall(); with --split there are 50 ms between them (two segments).
Needs the Debian package python3-h2 (hyper-h2 4.x): run with /usr/bin/python3.
"""
import argparse
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse

import h2.config
import h2.connection
import h2.events
import h2.exceptions

SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
PREFACE_START = b"PRI * HTTP/2.0\r\n"
ARGS = None


def lookup(path):
    """(status, body) for a GET of path: the file under --root, or 404."""
    parts = urllib.parse.unquote(path.split("?", 1)[0]).split("/")
    if ".." not in parts:
        name = os.path.join(ARGS.root, *[p for p in parts if p])
        if os.path.isfile(name):
            with open(name, "rb") as f:
                return 200, f.read()
    return 404, b"not found\n"


def read_head(sock, buf):
    """Read until the end of a request head; (head, rest) or (None, buf) at EOF."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None, buf
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head + b"\r\n\r\n", rest


def parse_head(head):
    """(method, target, version, {lowercased name: value}) of an HTTP/1.x head."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = (lines[0].split(" ") + ["", ""])[:3]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, target, version, headers


def serve_h2(sock, upgrade=None, data=b""):
    """HTTP/2 until the peer closes; upgrade = (settings, method, target) after a 101."""
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    pending = {}  # stream id -> response body bytes not sent yet

    def respond(stream_id, method, path):
        status, body = lookup(path) if method == "GET" else (404, b"not found\n")
        ctype = "application/octet-stream" if status == 200 else "text/plain"
        conn.send_headers(stream_id, [(":status", str(status)), ("content-type", ctype),
                                      ("content-length", str(len(body)))])
        pending[stream_id] = body

    def pump():
        # Send as much of every pending body as the flow-control windows allow;
        # the rest waits for WindowUpdated (handled by calling pump() again).
        for stream_id, body in list(pending.items()):
            while True:
                size = min(conn.local_flow_control_window(stream_id),
                           conn.max_outbound_frame_size, len(body))
                if size <= 0 and body:
                    break
                conn.send_data(stream_id, body[:size], end_stream=(size == len(body)))
                body = body[size:]
                if not body:
                    del pending[stream_id]
                    break
            if body:
                pending[stream_id] = body
        if out := conn.data_to_send():
            sock.sendall(out)

    if upgrade:
        settings, method, target = upgrade
        conn.initiate_upgrade_connection(settings_header=settings)
        if ARGS.split:
            sock.sendall(SWITCHING)
            time.sleep(0.05)
            sock.sendall(conn.data_to_send())
        else:
            sock.sendall(SWITCHING + conn.data_to_send())  # one write
        respond(1, method, target)  # the upgraded request is stream 1
    else:
        conn.initiate_connection()
    pump()
    while True:
        events = conn.receive_data(data) if data else []
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                hdrs = {(k.decode() if isinstance(k, bytes) else k):
                        (v.decode() if isinstance(v, bytes) else v) for k, v in ev.headers}
                respond(ev.stream_id, hdrs.get(":method", ""), hdrs.get(":path", "/"))
            elif isinstance(ev, h2.events.StreamReset):
                pending.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                pump()
                return
        pump()
        data = sock.recv(65536)
        if not data:
            return


def serve_echo(sock, data):
    """After "101" to a WebSocket upgrade: every byte back, unframed (the
    tests need bytes that are not HTTP after a 101, not WebSocket itself)."""
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                 b"Upgrade: websocket\r\n\r\n" + data)
    while True:
        more = sock.recv(65536)
        if not more:
            return
        sock.sendall(more)


def handle(sock):
    """Serve one connection: h2 prior knowledge, h2c upgrade or HTTP/1.1."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    with sock:
        while True:
            head, buf = read_head(sock, buf)
            if head is None:
                return
            if head.startswith(PREFACE_START):
                return serve_h2(sock, data=head + buf)
            method, target, version, hdrs = parse_head(head)
            length = int(hdrs.get("content-length", "0") or 0)
            while len(buf) < length:  # read and ignore any request body
                more = sock.recv(65536)
                if not more:
                    return
                buf += more
            buf = buf[length:]
            upgrade = hdrs.get("upgrade", "").lower().split(",")
            if "h2c" in [u.strip() for u in upgrade] and "http2-settings" in hdrs:
                return serve_h2(sock, (hdrs["http2-settings"], method, target), buf)
            if "websocket" in [u.strip() for u in upgrade]:
                return serve_echo(sock, buf)
            status, body = lookup(target) if method == "GET" else (404, b"not found\n")
            close = (hdrs.get("connection", "").lower() == "close" or version != "HTTP/1.1")
            reason = "OK" if status == 200 else "Not Found"
            ctype = "application/octet-stream" if status == 200 else "text/plain"
            extra = "Connection: close\r\n" if close else ""
            sock.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\n{extra}\r\n".encode()
                         + (body if method != "HEAD" else b""))
            if close:
                return


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--host", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--pidfile")
    p.add_argument("--split", action="store_true",
                   help="sleep 50 ms between the 101 head and the first HTTP/2 bytes")
    ARGS = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((ARGS.host, ARGS.port))
    lsock.listen(64)
    if ARGS.pidfile:
        with open(ARGS.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    open(ARGS.ready, "a").close()
    try:
        while True:
            sock, _ = lsock.accept()
            threading.Thread(target=conn_thread, args=(sock,), daemon=True).start()
    finally:
        lsock.close()


def conn_thread(sock):
    try:
        handle(sock)
    except (OSError, h2.exceptions.ProtocolError):
        pass  # peer reset or protocol violation: just drop the connection


if __name__ == "__main__":
    main()
