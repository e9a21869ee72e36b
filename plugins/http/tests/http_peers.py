"""HTTP test peers for the integration tests (run inside network namespaces).

server PORT --pidfile FILE --ready FILE : an HTTP/1.1 server (keep-alive,
    one IPv4 and one IPv6-only listener)
    GET /hello -> 200 "hi"; GET /overlong -> 200 "hi" with Content-Length 2
    followed by the 11 bytes "EXTRA-BYTES" (a body longer than it says);
    GET /slow -> 200 after 0.3 s; GET /wait?ms=N ->
    200 "waited" after N ms; POST /echo -> 200 with the request body (sized
    or chunked); anything else -> 404. Each response is one write, with
    TCP_NODELAY: one segment when it fits in one.
client HOST PORT : one keep-alive connection: GET /hello, POST /echo (1000
    bytes), GET /missing, GET /slow?token=secret, GET /hello. Prints
    {"pid", "sport", "statuses"}.
many HOST PORT N : N keep-alive connections opened one after the other, each
    with one GET /hello answered before the next opens, all held open until
    the last is answered, then closed. Prints {"pid", "statuses"}.
requests HOST PORT [--pad N] STEP... : keep-alive connections, requests in the
    order of the steps. STEP is CONN:PATH or CONN:PATH*COUNT (CONN numbers the
    connections from 0); each GET is answered before the next is sent.
    --pad N adds an "X-Padding" header of N bytes to every request. Prints
    {"pid", "sports" (per connection), "statuses"}.
pipeline HOST PORT : one connection, TCP_NODELAY. Sends POST /echo with a
    300-byte body and GET /hello together in one segment, reads both
    answers, then sends GET /hello alone and reads its answer. Prints
    {"pid", "sport", "statuses"}.
overlong HOST PORT [--after-hello] : one connection, TCP_NODELAY: GET
    /overlong (reads the response and the 11 bytes beyond it), then GET
    /hello; with --after-hello a GET /hello first. Prints {"pid", "sport",
    "statuses"}.
chunked HOST PORT : one connection, TCP_NODELAY. POST /echo with a chunked
    body of three 300-byte chunks, each chunk in its own segment, then
    GET /hello. Prints {"pid", "sport", "statuses"}.
"""
import http.client
import http.server
import json
import os
import socket
import sys
import threading
import time

SLOW_SECONDS = 0.3
OVERLONG_EXTRA = b"EXTRA-BYTES"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffered writes, flushed after each request: a response is one write.
    wbufsize = -1
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/hello":
            self.reply(200, b"hi")
        elif path == "/overlong":
            self.reply(200, b"hi")
            self.wfile.write(OVERLONG_EXTRA)
        elif path == "/slow":
            time.sleep(SLOW_SECONDS)
            self.reply(200, b"slow")
        elif path == "/wait":
            query = dict(p.split("=", 1) for p in self.path.split("?", 1)[1].split("&"))
            time.sleep(int(query["ms"]) / 1000)
            self.reply(200, b"waited")
        else:
            self.reply(404, b"no such page")

    def do_POST(self):
        if self.headers.get("Transfer-Encoding", "") == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                body += self.rfile.read(size)
                self.rfile.readline()  # CRLF after the chunk
                if size == 0:
                    break
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.reply(200 if self.path == "/echo" else 404, body)


class Ipv6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


def server(args):
    port = int(args[0])
    pidfile = args[args.index("--pidfile") + 1]
    ready = args[args.index("--ready") + 1]
    httpd = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    httpd6 = Ipv6Server(("::", port), Handler)
    threading.Thread(target=httpd6.serve_forever, daemon=True).start()
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    open(ready, "w").close()
    httpd.serve_forever()


def client(host, port):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    statuses = []
    for method, path, body in (("GET", "/hello", None), ("POST", "/echo", b"e" * 1000),
                               ("GET", "/missing", None), ("GET", "/slow?token=secret", None),
                               ("GET", "/hello", None)):
        conn.request(method, path, body=body)
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
    sport = conn.sock.getsockname()[1]
    conn.close()
    print(json.dumps({"pid": os.getpid(), "sport": sport, "statuses": statuses}), flush=True)


def many(host, port, count):
    connections, statuses = [], []
    for _ in range(count):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/hello")
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
        connections.append(conn)
    for conn in connections:
        conn.close()
    print(json.dumps({"pid": os.getpid(), "statuses": statuses}), flush=True)


def requests(host, port, args):
    pad = 0
    if "--pad" in args:
        at = args.index("--pad")
        pad = int(args[at + 1])
        del args[at:at + 2]
    headers = {"X-Padding": "p" * pad} if pad else {}
    connections, statuses = {}, []
    for step in args:
        conn_id, path = step.split(":", 1)
        count = 1
        if "*" in path:
            path, count = path.rsplit("*", 1)
            count = int(count)
        if conn_id not in connections:
            connections[conn_id] = http.client.HTTPConnection(host, port, timeout=10)
        conn = connections[conn_id]
        for _ in range(count):
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    sports = [connections[c].sock.getsockname()[1] for c in sorted(connections, key=int)]
    for conn in connections.values():
        conn.close()
    print(json.dumps({"pid": os.getpid(), "sports": sports, "statuses": statuses}), flush=True)


def read_response(sock, buffered):
    """One response with a Content-Length from `sock`; returns (status, rest)."""
    while b"\r\n\r\n" not in buffered:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed in a response head")
        buffered += chunk
    head, rest = buffered.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    length = 0
    for line in lines[1:]:
        name, value = line.split(":", 1)
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed in a response body")
        rest += chunk
    return int(lines[0].split()[1]), rest[length:]


def raw_connection(host, port):
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def pipeline(host, port):
    s = raw_connection(host, port)
    authority = ("%s:%d" % (host, port)).encode()
    body = b"b" * 300
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: " + authority + b"\r\nContent-Length: 300\r\n\r\n" +
              body + b"GET /hello HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
    statuses = []
    rest = b""
    for _ in range(2):
        status, rest = read_response(s, rest)
        statuses.append(status)
    s.sendall(b"GET /hello HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
    status, rest = read_response(s, rest)
    statuses.append(status)
    print(json.dumps({"pid": os.getpid(), "sport": s.getsockname()[1], "statuses": statuses}),
          flush=True)
    s.close()


def overlong(host, port, after_hello):
    s = raw_connection(host, port)
    authority = ("%s:%d" % (host, port)).encode()
    statuses = []
    rest = b""
    if after_hello:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
        status, rest = read_response(s, rest)
        statuses.append(status)
    s.sendall(b"GET /overlong HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
    status, rest = read_response(s, rest)
    statuses.append(status)
    while len(rest) < len(OVERLONG_EXTRA):
        rest += s.recv(65536)
    s.sendall(b"GET /hello HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
    status, rest = read_response(s, rest[len(OVERLONG_EXTRA):])
    statuses.append(status)
    print(json.dumps({"pid": os.getpid(), "sport": s.getsockname()[1], "statuses": statuses}),
          flush=True)
    s.close()


def chunked(host, port):
    s = raw_connection(host, port)
    authority = ("%s:%d" % (host, port)).encode()
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: " + authority +
              b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        s.sendall(b"12c\r\n" + b"c" * 300 + b"\r\n")
    s.sendall(b"0\r\n\r\n")
    statuses = []
    status, rest = read_response(s, b"")
    statuses.append(status)
    s.sendall(b"GET /hello HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
    status, rest = read_response(s, rest)
    statuses.append(status)
    print(json.dumps({"pid": os.getpid(), "sport": s.getsockname()[1], "statuses": statuses}),
          flush=True)
    s.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2:])
    elif sys.argv[1] == "requests":
        requests(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    elif sys.argv[1] == "pipeline":
        pipeline(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "overlong":
        overlong(sys.argv[2], int(sys.argv[3]), "--after-hello" in sys.argv[4:])
    elif sys.argv[1] == "chunked":
        chunked(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "many":
        many(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        client(sys.argv[2], int(sys.argv[3]))
