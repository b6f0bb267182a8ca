#!/usr/bin/env python3
"""The baseline side of the watermark benchmark: invisible-watermark's dwtDct, as SDXL ships it.

Driven by `plantain-watermark-bench` (crates/provenance), which applies the *same* attacks (one
Rust implementation) to both watermarks in the same run. Not part of CI. Needs a venv with

    pip install invisible-watermark scikit-image

Modes:
    covers OUT_DIR               write scikit-image's sample photographs as RGB PNGs
    embed IN_DIR OUT_DIR         watermark every IN_DIR/*.png with 64 bits (dwtDct, library
                                 defaults); the bits go to OUT_DIR/payloads.json
    decode IN_DIR OUT_JSON       decode 64 bits from every PNG under IN_DIR (recursively)
"""

import hashlib
import json
import os
import sys

import cv2
import numpy as np

BITS = 64


def bits_for(name):
    """A fixed 64-bit payload per file name (so runs are repeatable)."""
    digest = hashlib.sha256(("baseline/" + name).encode()).digest()
    return [int(b) for byte in digest[:8] for b in format(byte, "08b")]


def covers(out_dir):
    import skimage.data as data

    os.makedirs(out_dir, exist_ok=True)
    names = [
        "astronaut", "coffee", "chelsea", "rocket", "retina", "immunohistochemistry", "hubble_deep_field",
        "colorwheel", "camera", "brick", "grass", "gravel", "moon", "page", "text", "coins", "clock",
        "horse", "cell", "eagle", "logo", "motorcycle_left", "motorcycle_right",
    ]
    written = 0
    for name in names:
        fn = getattr(data, name, None)
        if fn is None:
            continue
        try:
            img = fn()
        except Exception as e:  # some images need pooch downloads; skip those
            print(f"skip {name}: {e}", file=sys.stderr)
            continue
        if isinstance(img, tuple):
            img = img[0]
        img = np.asarray(img)
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.dtype != np.uint8:
            img = (255 * (img - img.min()) / max(1e-9, float(img.max() - img.min()))).astype(np.uint8)
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img = img[..., :3]
        if min(img.shape[:2]) < 64:
            continue
        cv2.imwrite(os.path.join(out_dir, name + ".png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        written += 1
    print(f"{written} covers written to {out_dir}")


def embed(in_dir, out_dir):
    from imwatermark import WatermarkEncoder

    os.makedirs(out_dir, exist_ok=True)
    payloads = {}
    for name in sorted(os.listdir(in_dir)):
        if not name.endswith(".png"):
            continue
        bgr = cv2.imread(os.path.join(in_dir, name))
        bits = bits_for(name)
        enc = WatermarkEncoder()
        enc.set_watermark("bits", bits)
        out = enc.encode(bgr, "dwtDct")
        cv2.imwrite(os.path.join(out_dir, name), out)
        payloads[name] = "".join(map(str, bits))
    with open(os.path.join(out_dir, "payloads.json"), "w") as f:
        json.dump(payloads, f, indent=1)
    print(f"{len(payloads)} images watermarked with dwtDct")


def decode(in_dir, out_json):
    from imwatermark import WatermarkDecoder

    dec = WatermarkDecoder("bits", BITS)
    out = {}
    for root, _, files in os.walk(in_dir):
        for name in sorted(files):
            if not name.endswith(".png"):
                continue
            path = os.path.join(root, name)
            bgr = cv2.imread(path)
            try:
                bits = dec.decode(bgr, "dwtDct")
                out[os.path.relpath(path, in_dir)] = "".join(str(int(b)) for b in bits)
            except Exception as e:  # too small after an attack, etc.: counts as not detected
                out[os.path.relpath(path, in_dir)] = None
                print(f"{path}: {e}", file=sys.stderr)
    with open(out_json, "w") as f:
        json.dump(out, f)
    print(f"{len(out)} images decoded")


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    mode = sys.argv[1]
    if mode == "covers":
        covers(sys.argv[2])
    elif mode == "embed" and len(sys.argv) == 4:
        embed(sys.argv[2], sys.argv[3])
    elif mode == "decode" and len(sys.argv) == 4:
        decode(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
