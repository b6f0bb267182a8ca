"""A round-robin HTTP load balancer for the scale-out SDK tests (tests/python/run_scaleout.sh).

Each request goes to the next backend in turn, whatever connection it came on, so that one SDK
call lands on one API node and the next on the other — as behind a load balancer with no
session affinity. Responses are streamed through as they arrive (server-sent events, partial
images). Standard library only.

Run: python3 roundrobin.py PORT_FILE COUNTS_FILE URL [URL ...]; it writes the port it bound
(127.0.0.1, a free port) to PORT_FILE and, after every request, how many requests each backend
answered to COUNTS_FILE (JSON: {url: count}).
"""

import http.client
import http.server
import itertools
import json
import os
import sys
import threading
import urllib.parse

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def main():
    port_file, counts_file, backends = sys.argv[1], sys.argv[2], sys.argv[3:]
    order = itertools.cycle(backends)
    lock = threading.Lock()
    counts = {b: 0 for b in backends}

    def next_backend():
        with lock:
            b = next(order)
            counts[b] += 1
            tmp = counts_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(counts, f)
            os.replace(tmp, counts_file)
            return b

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def forward(self):
            backend = urllib.parse.urlsplit(next_backend())
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            # The Host header stays the balancer's: URLs the nodes hand out point here.
            conn = http.client.HTTPConnection(backend.hostname, backend.port, timeout=600)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                chunked = resp.getheader("content-length") is None and self.command != "HEAD"
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while True:
                    data = resp.read1(65536) if chunked else resp.read(65536)
                    if not data:
                        break
                    if chunked:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    else:
                        self.wfile.write(data)
                    self.wfile.flush()
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
            finally:
                conn.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
