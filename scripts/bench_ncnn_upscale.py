#!/usr/bin/env python3
"""Peer benchmark for `plantain bench --only upscale`: a Real-ESRGAN model on the ncnn runtime
(PyPI `ncnn`, CPU, Vulkan off, ncnn's default options: fp16 storage/arithmetic where the CPU has
them, Winograd convolutions), 1K -> 4K, with the same tiles and cross-fade as plantain's engine
(crates/engine/src/upscale/tiles.rs) so that only the runtimes differ.

    /tmp/venv/bin/python scripts/bench_ncnn_upscale.py --model x4plus --json out.json

No warm-up run (as plantain: the first tile absorbs it); the median of --repeats runs. Peak RSS is
this process's (ru_maxrss), so run one model per process. Needs scripts/setup-realesrgan.sh's files.
"""
import argparse
import json
import os
import resource
import statistics
import time

import ncnn
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEMS = {"x4plus": "REALESRGAN_X4PLUS_UP4X", "anime": "REALESRGAN_X4PLUSANIME_UP4X", "animevideov3": "REALESRGAN_ANIMAVIDEOV3_UP4X"}


def starts(length, tile, overlap):
    if length <= tile:
        return [0]
    step = max(tile - overlap, 1)
    n = max(-(-(length - overlap) // step), 2)
    span = length - tile
    return [(i * span + (n - 1) // 2) // (n - 1) for i in range(n)]


def ramp(n, r, open_start, open_end):
    u = np.arange(n, dtype=np.float32)
    d0 = (u + 0.5) / r if open_start else np.ones(n, np.float32)
    d1 = (n - u - 0.5) / r if open_end else np.ones(n, np.float32)
    return np.minimum(np.minimum(d0, d1), 1.0)


def upscale(net, img, scale, tile, overlap):
    c, h, w = img.shape
    xs, ys = starts(w, tile, overlap), starts(h, tile, overlap)
    tw, th = min(tile, w), min(tile, h)
    acc = np.zeros((3, h * scale, w * scale), np.float32)
    wsum = np.zeros((h * scale, w * scale), np.float32)
    for y0 in ys:
        wy = ramp(th * scale, overlap * scale, y0 > 0, y0 + th < h)
        for x0 in xs:
            ex = net.create_extractor()
            ex.input("data", ncnn.Mat(np.ascontiguousarray(img[:, y0 : y0 + th, x0 : x0 + tw])))
            ret, out = ex.extract("output")
            assert ret == 0, ret
            wx = ramp(tw * scale, overlap * scale, x0 > 0, x0 + tw < w)
            k = wy[:, None] * wx[None, :]
            sl = (slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale))
            acc[(slice(None),) + sl] += np.array(out) * k
            wsum[sl] += k
    return np.clip(acc / wsum, 0, 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=sorted(STEMS), required=True)
    p.add_argument("--photo", default=os.path.join(ROOT, ".assets/photos/astronaut.png"))
    p.add_argument("--side", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tile", type=int, default=192)
    p.add_argument("--overlap", type=int, default=24)
    p.add_argument("--json")
    a = p.parse_args()
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = a.threads
    stem = os.path.join(ROOT, ".models/realesrgan", STEMS[a.model])
    assert net.load_param(stem + ".param") == 0 and net.load_model(stem + ".bin") == 0, stem
    photo = Image.open(a.photo).convert("RGB").resize((a.side, a.side), Image.LANCZOS)
    img = np.ascontiguousarray(np.asarray(photo, np.float32).transpose(2, 0, 1) / 255.0)
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        out = upscale(net, img, 4, a.tile, a.overlap)
        times.append(time.perf_counter() - t)
        assert out.shape == (3, 4 * a.side, 4 * a.side)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)
    label = f"Real-ESRGAN {a.model} {a.side} -> {4 * a.side} (ncnn {ncnn.__version__} CPU)"
    print(f"  {label}: median {statistics.median(times):.2f} s {['%.2f' % t for t in times]}, peak RSS {peak:.2f} GiB")
    if a.json:
        result = {"label": label, "median_s": statistics.median(times), "times_s": times, "peak_rss_gb_so_far": peak}
        doc = {"tool": "ncnn", "version": ncnn.__version__, "threads": a.threads, "results": {f"upscale_{a.model}": result}, "peak_rss_gb": peak}
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)


if __name__ == "__main__":
    main()
