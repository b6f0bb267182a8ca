#!/usr/bin/env python3
"""Bounded load test for plantain-server (standard library only).

Starts nothing: point it at a running server (see BENCHMARKS.md for the exact setup), e.g.
    python3 scripts/loadtest_server.py --url http://127.0.0.1:8080 --clients 32 --seconds 60 \
        --db DATA_DIR/plantain.sqlite --pid SERVER_PID
or, for nodes sharing PostgreSQL (scripts/bench_scaleout.sh), --psql URL --schema S --pid P1 --pid P2.

Each client loops: a generateContent at 512 (1:1) and a GET models (the HTTP layer alone).
Reports status counts (503 = backpressure, by design), p50/p99 latencies, and checks that every
200 response is recorded exactly once in the artefact table (no lost or duplicated jobs) and
that no artefact exists without a 200 (a job whose client got 503 never ran).
"""

import argparse
import collections
import http.client
import json
import sqlite3
import subprocess
import threading
import time
import urllib.parse


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def recorded_requests(a):
    """The request id of every artefact the server(s) recorded."""
    if a.db:
        con = sqlite3.connect(a.db)
        return [r[0] for r in con.execute("SELECT request_id FROM artefacts")]
    sql = (f"SET search_path TO {a.schema}; " if a.schema else "") + "SELECT request_id FROM artefacts"
    out = subprocess.run(["/usr/lib/postgresql/15/bin/psql", "-X", "-A", "-t", "-q", "-d", a.psql, "-c", sql],
                         check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, action="append",
                    help="a server; repeat it for several API nodes (client threads take them in turn)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--model", default="gemini-3.1-flash-image-preview")
    ap.add_argument("--db", help="the server's plantain.sqlite, to check for lost/duplicated jobs")
    ap.add_argument("--psql", help="instead of --db: a PostgreSQL URL (nodes sharing a database), read with psql")
    ap.add_argument("--schema", help="with --psql: the nodes' schema")
    ap.add_argument("--pid", type=int, action="append", default=[], help="a server pid, for peak RSS (repeatable)")
    a = ap.parse_args()
    urls = [urllib.parse.urlparse(x) for x in a.url]
    body = json.dumps({"contents": [{"parts": [{"text": "load test"}]}],
                       "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"imageSize": "512"}}})
    lock = threading.Lock()
    statuses = collections.Counter()
    gen_lat, gen_ok_lat, http_lat = [], [], []
    response_ids = []
    errors = []
    deadline = time.time() + a.seconds

    def client(u):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
        while time.time() < deadline:
            try:
                t = time.perf_counter()
                conn.request("POST", f"/v1beta/models/{a.model}:generateContent", body, {"content-type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                dt = time.perf_counter() - t
                rid = json.loads(data).get("responseId") if r.status == 200 else None
                t = time.perf_counter()
                conn.request("GET", "/v1beta/models")
                r2 = conn.getresponse()
                r2.read()
                dt2 = time.perf_counter() - t
                with lock:
                    statuses[r.status] += 1
                    gen_lat.append(dt)
                    if r.status == 200:
                        gen_ok_lat.append(dt)
                        response_ids.append(rid)
                    else:
                        time.sleep(0)  # 503: retry at once (worst case for the server)
                    statuses["GET models %d" % r2.status] += 1
                    http_lat.append(dt2)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)

    threads = [threading.Thread(target=client, args=(urls[i % len(urls)],)) for i in range(a.clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    print(f"clients {a.clients}, {wall:.1f} s")
    for k, v in sorted(statuses.items(), key=str):
        print(f"  status {k}: {v}")
    print(f"  transport errors: {len(errors)} {errors[:3]}")
    print(f"  generateContent 200: {len(gen_ok_lat)} ({len(gen_ok_lat) / wall:.2f}/s), "
          f"p50 {pct(gen_ok_lat, 50) * 1000:.0f} ms, p99 {pct(gen_ok_lat, 99) * 1000:.0f} ms")
    print(f"  generateContent all (incl. 503): p50 {pct(gen_lat, 50) * 1000:.1f} ms, p99 {pct(gen_lat, 99) * 1000:.1f} ms")
    print(f"  GET models (HTTP layer): n {len(http_lat)}, p50 {pct(http_lat, 50) * 1000:.2f} ms, p99 {pct(http_lat, 99) * 1000:.2f} ms")
    server_errors = sum(n for k, n in statuses.items() if isinstance(k, int) and k >= 500 and k != 503)
    ok = not errors and not server_errors
    if server_errors:
        print(f"  FAILED: {server_errors} server errors (5xx other than 503)")
    if a.db or a.psql:
        rows = recorded_requests(a)
        recorded = collections.Counter(rows)
        dup = [r for r, n in recorded.items() if n > 1]
        lost = set(response_ids) - set(recorded)
        extra = set(recorded) - set(response_ids)
        print(f"  artefacts recorded: {len(rows)}; duplicated: {len(dup)}; lost (200 without record): {len(lost)}; "
              f"recorded without a 200: {len(extra)}")
        ok = ok and not dup and not lost and not extra
    for pid in a.pid:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM", "VmRSS")):
                    print(f"  server {pid} " + " ".join(line.split()))
    print("RESULT", "ok" if ok else "FAILED")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
