"""HTTP test peers for the integration tests (run inside network namespaces).

server PORT --pidfile FILE --ready FILE : an HTTP/1.1 server (keep-alive,
    one IPv4 and one IPv6-only listener)
    GET /hello -> 200 "hi"; GET /slow -> 200 after 0.3 s; POST /echo -> 200
    with the request body; anything else -> 404.
client HOST PORT : one keep-alive connection: GET /hello, POST /echo (1000
    bytes), GET /missing, GET /slow?token=secret, GET /hello. Prints
    {"pid", "sport", "statuses"}.
many HOST PORT N : N keep-alive connections opened one after the other, each
    with one GET /hello answered before the next opens, all held open until
    the last is answered, then closed. Prints {"pid", "statuses"}.
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


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

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
        elif path == "/slow":
            time.sleep(SLOW_SECONDS)
            self.reply(200, b"slow")
        else:
            self.reply(404, b"no such page")

    def do_POST(self):
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


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2:])
    elif sys.argv[1] == "many":
        many(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        client(sys.argv[2], int(sys.argv[3]))
