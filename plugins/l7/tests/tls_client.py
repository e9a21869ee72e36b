"""An HTTPS client on Python's ssl module, which calls SSL_read_ex and
SSL_write_ex (curl calls SSL_read and SSL_write). Prints one JSON line with
its pid, local port and what each request got, for the test to compare.

  tls_client.py HOST PORT PATH... [--wait SECONDS]

--wait sleeps after the ssl module (and so libssl) is loaded and before the
connection, for a library that netwatcher must first find in this process.
--hangup sends the first request and closes the connection 50 ms later,
without reading the response.
"""
import http.client
import json
import os
import ssl
import sys
import time

args = sys.argv[1:]
wait = 0.0
if "--wait" in args:
    at = args.index("--wait")
    wait = float(args[at + 1])
    del args[at:at + 2]
hangup = "--hangup" in args
if hangup:
    args.remove("--hangup")
host, port, paths = args[0], int(args[1]), args[2:]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
time.sleep(wait)
connection = http.client.HTTPSConnection(host, port, context=context)
results = []
if hangup:
    connection.request("GET", paths[0])
    time.sleep(0.05)
    sport = connection.sock.getsockname()[1]
    connection.close()
    print(json.dumps({"pid": os.getpid(), "sport": sport, "results": []}))
    sys.exit(0)
for path in paths:
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    results.append({"path": path, "status": response.status, "bytes": len(body)})
sport = connection.sock.getsockname()[1]
connection.close()
print(json.dumps({"pid": os.getpid(), "sport": sport, "results": results}))
