"""gRPC test peers for the integration tests (run inside network namespaces).

Needs Debian 12's python3-grpcio (grpc 1.51), run with /usr/bin/python3. No
protoc or generated code: messages are raw bytes, passed through unchanged
(no serializers).

server PORT [--host ADDR] --pidfile FILE --ready FILE : an insecure (h2c,
    cleartext HTTP/2) gRPC server on ADDR:PORT (default 0.0.0.0), a thread
    pool of 4. Service netwatcher.test.Echo, unary methods:
    Say -> OK with the request bytes reversed; Fail -> NOT_FOUND, details
    "no such thing"; Slow -> OK with the request bytes after 2 s; any other
    method -> UNIMPLEMENTED. Writes the pidfile, then the ready file once
    the port is bound and the server started. Runs until SIGTERM, then
    exits 0.
client HOST PORT [--timeout S] [--linger S] CALL... : the calls in order,
    unary, all over one channel (one TCP connection), each with a deadline
    of S seconds (default 5). CALL is METHOD:PAYLOAD (Say:hello, Fail:x,
    Slow:x) or METHOD (empty payload); Cancel:PAYLOAD calls Slow and cancels
    it after 0.3 s (the client resets the stream: RST_STREAM CANCEL, the
    connection stays). --wait-for FILE: after the first call, waits until
    FILE exists before the next ones (to start an observer mid-connection).
    No proxy, no retries. Prints first
    {"pid", "sport"}, then one line per call
    {"method", "code" (OK, NOT_FOUND, DEADLINE_EXCEEDED...), "details",
    "response" (the response bytes as text, null unless OK)}. --linger S
    waits S seconds after the calls before closing the channel. Exits 0
    whatever the statuses are; 1 on an unexpected error.
    sport is looked up after the first call, in /proc/self/net/tcp{,6}: the
    ESTABLISHED connection of this process (socket inode among its fds) to
    HOST:PORT; null if there is none. gRPC uses dual-stack AF_INET6 sockets,
    on both sides: an IPv4 connection is ::ffff:a.b.c.d in tcp6.
"""
import argparse
import concurrent.futures
import ipaddress
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback

import grpc

SERVICE = "netwatcher.test.Echo"
SLOW_SECONDS = 2
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0),
                   ("grpc.use_local_subchannel_pool", 1)]


def identity(data):
    return data


def say(request, context):
    return request[::-1]


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def slow(request, context):
    time.sleep(SLOW_SECONDS)
    return request


def target(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def server(args):
    handlers = {name: grpc.unary_unary_rpc_method_handler(
        function, request_deserializer=identity, response_serializer=identity)
        for name, function in (("Say", say), ("Fail", fail), ("Slow", slow))}
    # No SO_REUSEPORT: a port already taken is an error, not a shared port.
    grpc_server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4),
                              options=[("grpc.so_reuseport", 0)])
    grpc_server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if grpc_server.add_insecure_port(target(args.host, args.port)) == 0:
        raise RuntimeError("cannot bind %s" % target(args.host, args.port))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    grpc_server.start()
    with open(args.pidfile, "w") as f:
        f.write(str(os.getpid()))
    open(args.ready, "w").close()
    while not stop.wait(1):
        pass
    grpc_server.stop(0).wait()


def proc_address(text):
    """An address:port of /proc/net/tcp{,6} (32-bit words in host order)."""
    address, port = text.split(":")
    raw = bytes.fromhex(address)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # gRPC connects to IPv4 through dual-stack sockets
    return ip, int(port, 16)


def find_sport(host, port):
    """The local port of this process's ESTABLISHED connection to HOST:PORT."""
    remotes = set()
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        remotes.add(ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped else ip)
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    candidates = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            continue  # no IPv6
        for line in lines:
            fields = line.split()
            if fields[3] != "01" or fields[9] not in inodes:
                continue
            local, remote = proc_address(fields[1]), proc_address(fields[2])
            if remote[1] == port:
                candidates.append((local[1], remote[0]))
    sports = [sport for sport, ip in candidates if ip in remotes]
    if not sports and len(candidates) == 1:
        # gRPC resolves names itself (localhost is [::1] first for it): one
        # connection to PORT from this process is the one.
        sports = [candidates[0][0]]
    if len(sports) > 1:
        print("grpc_peers: %d connections to %s, ports %s" % (len(sports), target(host, port),
                                                              sports), file=sys.stderr)
    return sports[0] if sports else None


def call(channel, spec, timeout):
    method, _, payload = spec.partition(":")
    if method == "Cancel":
        stub = channel.unary_unary("/%s/Slow" % SERVICE, request_serializer=None,
                                   response_deserializer=None)
        future = stub.future(payload.encode(), timeout=timeout)
        time.sleep(0.3)
        future.cancel()
        return {"method": "Slow", "code": future.code().name, "details": future.details() or "",
                "response": None}
    stub = channel.unary_unary("/%s/%s" % (SERVICE, method), request_serializer=None,
                               response_deserializer=None)
    try:
        response, rpc = stub.with_call(payload.encode(), timeout=timeout)
    except grpc.RpcError as e:
        return {"method": method, "code": e.code().name, "details": e.details() or "",
                "response": None}
    return {"method": method, "code": rpc.code().name, "details": rpc.details() or "",
            "response": response.decode(errors="replace")}


def client(args):
    channel = grpc.insecure_channel(target(args.host, args.port), options=CHANNEL_OPTIONS)
    try:
        results = []
        for spec in args.calls:
            results.append(call(channel, spec, args.timeout))
            if len(results) == 1:
                sport = None
                for _ in range(10):  # the connection may still be settling
                    sport = find_sport(args.host, args.port)
                    if sport is not None:
                        break
                    time.sleep(0.1)
                print(json.dumps({"pid": os.getpid(), "sport": sport}), flush=True)
            print(json.dumps(results[-1]), flush=True)
            if len(results) == 1 and args.wait_for:
                while not os.path.exists(args.wait_for):
                    time.sleep(0.05)
        if args.linger:
            time.sleep(args.linger)
    finally:
        channel.close()


def main():
    parser = argparse.ArgumentParser(description="gRPC test peers")
    modes = parser.add_subparsers(dest="mode", required=True)
    server_mode = modes.add_parser("server")
    server_mode.add_argument("port", type=int)
    server_mode.add_argument("--host", default="0.0.0.0")
    server_mode.add_argument("--pidfile", required=True)
    server_mode.add_argument("--ready", required=True)
    client_mode = modes.add_parser("client")
    client_mode.add_argument("host")
    client_mode.add_argument("port", type=int)
    client_mode.add_argument("calls", nargs="+")
    client_mode.add_argument("--timeout", type=float, default=5)
    client_mode.add_argument("--linger", type=float, default=0)
    client_mode.add_argument("--wait-for", default="")
    args = parser.parse_args()
    try:
        if args.mode == "server":
            server(args)
        else:
            client(args)
    except Exception:
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main()
