#!/usr/bin/env python3
"""Latency and throughput of plantain-server set-ups (standard library only), for
scripts/bench_scaleout.sh, which starts the set-ups; this measures one that is running.

    bench_scaleout.py sequential URL N            # N generateContent one after another
    bench_scaleout.py throughput URL[,URL…] C J   # J requests by C clients at once

Each request is a Gemini generateContent at 512 (1:1) with a different prompt (no cache can
answer). A 503 or 429 (backpressure) is retried after 0.2 s and counted. Prints one JSON line:
latencies (s) and their median, or the wall time, images/s and retries.
"""

import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse


def generate(conn, i):
    body = json.dumps({"contents": [{"parts": [{"text": f"a red circle number {i}"}]}],
                       "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"imageSize": "512"}}})
    conn.request("POST", "/v1beta/models/plantain-nano:generateContent", body, {"content-type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status == 200 and b"inlineData" not in data:
        raise RuntimeError("a 200 without an image")
    return r.status


def connect(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=600)


def until_ok(conn, i, retries):
    """One image: retried while the server pushes back; returns the seconds it took."""
    t = time.perf_counter()
    while True:
        status = generate(conn, i)
        if status == 200:
            return time.perf_counter() - t
        if status not in (429, 503):
            raise RuntimeError(f"status {status}")
        retries.append(status)
        time.sleep(0.2)


def sequential(url, n):
    conn, retries = connect(url), []
    until_ok(conn, -1, retries)  # warm: the model loaded, connections open
    lat = [until_ok(conn, i, retries) for i in range(n)]
    return {"n": n, "median_s": statistics.median(lat), "min_s": min(lat), "max_s": max(lat), "retries": len(retries)}


def throughput(urls, clients, jobs):
    lock, todo, retries, errors = threading.Lock(), list(range(jobs)), [], []

    def client(url):
        conn = connect(url)
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            try:
                until_ok(conn, i, retries)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
                return

    for u in urls:  # warm each API node and the workers behind it
        until_ok(connect(u), -1, retries)
    threads = [threading.Thread(target=client, args=(urls[k % len(urls)],)) for k in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    if errors:
        raise SystemExit(f"errors: {errors[:3]}")
    return {"jobs": jobs, "clients": clients, "wall_s": wall, "images_per_s": jobs / wall, "retries": len(retries)}


def main():
    mode = sys.argv[1]
    if mode == "sequential":
        out = sequential(sys.argv[2], int(sys.argv[3]))
    elif mode == "throughput":
        out = throughput(sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
