#!/usr/bin/env python3
"""Generate OpenCV parity fixtures for the `plantain-quality` crate (BRISQUE).

Run from the repository root, with a venv outside the repository:

    python3 -m venv /tmp/venv-q
    /tmp/venv-q/bin/pip install opencv-contrib-python-headless numpy
    bash scripts/setup-quality.sh          # the LIVE model files (Debian's opencv-data)
    /tmp/venv-q/bin/python scripts/brisque_fixtures.py

Last run with opencv-contrib-python-headless 5.1.0.95 (OpenCV 5.1.0) and numpy 2.4.6, on
Python 3.11; the JSON records the versions of each run.

Writes small PNG pictures and fixtures/quality/brisque.json under fixtures/quality/: for each
picture, the score of cv2.quality.QualityBRISQUE_compute(img, model, range) and the 36 features
of cv2.quality.QualityBRISQUE_computeFeatures(img), both computed on the PNG as cv2.imread reads
it back (B, G, R for colour; one channel for the grey picture), and `svm_raw`: the SVM's value
before QualityBRISQUE's clamp to [0, 100] (cv2.ml.SVM_load(model).predict on those features
scaled as quality_utils::scale does), so that clamped scores still check the SVM, and the
features again with Intel IPP switched off (cv2.ipp.setUseIPP(False): opencv-python hands the
bicubic resize to IPP, which rounds differently from OpenCV's own code). The Rust tests
read the same PNGs (as R, G, B) and compare. Values that OpenCV gives as NaN are written as null.

The pictures: made here from a fixed seed (gradient, flat, noise, blurred noise, a JPEG round
trip of a drawn scene) and, when the sample photographs are installed (.assets/photos, from
scripts/setup.sh: public-domain and CC0 pictures of the scikit-image 0.25.2 wheel), crops of
astronaut.png, chelsea.png, coffee.png and camera.png, and a blurred and a noisy chelsea.
Without the photographs those are left as they are on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import metadata

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "quality")
MODEL_DIR = os.environ.get("PLANTAIN_BRISQUE_DIR", "/usr/share/opencv4/quality")
MODEL = os.path.join(MODEL_DIR, "brisque_model_live.yml")
RANGE = os.path.join(MODEL_DIR, "brisque_range_live.yml")
PHOTO_DIRS = [os.path.join(ROOT, ".assets", "photos"), "/work/main/.assets/photos"]


def synthetic() -> dict[str, np.ndarray]:
    """Pictures made from a fixed seed, as uint8 BGR (or grey) arrays."""
    rng = np.random.default_rng(20240607)
    h, w = 193, 257  # odd sizes: the half-size resize rounds down
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    gradient = np.stack([x / (w - 1) * 255, y / (h - 1) * 255, (x + y) / (w + h - 2) * 255], axis=-1)
    pics = {"gradient.png": np.round(gradient).astype(np.uint8)[:, :, ::-1].copy()}
    pics["flat.png"] = np.full((24, 32, 3), 128, np.uint8)
    noise = rng.integers(0, 256, size=(128, 192, 3), dtype=np.uint8)
    pics["noise.png"] = noise
    pics["noise_blur.png"] = cv2.GaussianBlur(noise, (0, 0), 1.5)
    pics["jpeg_q10.png"] = jpeg_round_trip(drawn_scene(rng), 10)
    return pics


def drawn_scene(rng: np.random.Generator) -> np.ndarray:
    """Shapes over a gradient with mild noise: edges and texture for JPEG to damage."""
    h, w = 160, 224
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([60 + 120 * x / w, 80 + 100 * y / h, 200 - 120 * x / w], axis=-1)
    img = np.clip(base + rng.normal(0, 6, size=base.shape), 0, 255).astype(np.uint8)
    for _ in range(12):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cv2.circle(img, centre, int(rng.integers(6, 40)), colour, -1, cv2.LINE_AA)
    cv2.rectangle(img, (20, 30), (90, 120), (20, 20, 20), 3)
    return img


def jpeg_round_trip(img: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def photographs() -> dict[str, np.ndarray]:
    """Crops of the sample photographs (and degraded copies), or nothing if they are absent."""
    base = next((d for d in PHOTO_DIRS if os.path.exists(os.path.join(d, "chelsea.png"))), None)
    if base is None:
        print("brisque_fixtures: no sample photographs; keeping the photo fixtures on disk", file=sys.stderr)
        return {}
    read = lambda name, flags=cv2.IMREAD_COLOR: cv2.imread(os.path.join(base, name), flags)
    chelsea = read("chelsea.png")[60:211, 110:335]  # 225 x 151: odd sizes
    rng = np.random.default_rng(7)
    noisy = np.clip(chelsea.astype(np.float64) + rng.normal(0, 25, size=chelsea.shape), 0, 255)
    return {
        "astronaut.png": read("astronaut.png")[20:212, 150:342],
        "chelsea.png": chelsea,
        "chelsea_blur.png": cv2.GaussianBlur(chelsea, (0, 0), 2.0),
        "chelsea_noise.png": np.round(noisy).astype(np.uint8),
        "coffee.png": read("coffee.png")[120:280, 160:400],
        "camera_gray.png": read("camera.png", cv2.IMREAD_GRAYSCALE)[40:168, 180:340],
    }


def as_floats(values) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, np.float32).ravel()]


def svm_raw(features: np.ndarray) -> float | None:
    """The SVM's value for OpenCV's features, before the clamp (None where a feature is NaN)."""
    if not np.all(np.isfinite(features)):
        return None
    storage = cv2.FileStorage(RANGE, cv2.FILE_STORAGE_READ)
    lo, hi = storage.getNode("range").mat()
    f = np.asarray(features, np.float32).reshape(1, -1)
    # quality_utils::scale in float: lower + (upper - lower) * (x - min) / (max - min)
    scaled = (np.float32(-1) + np.float32(2) * (f - lo) / (hi - lo)).astype(np.float32)
    return float(cv2.ml.SVM_load(MODEL).predict(scaled)[1][0, 0])


def features_without_ipp(img: np.ndarray) -> np.ndarray:
    """The features with Intel IPP switched off: OpenCV's own code for every step. (Not the
    score: with IPP off, cv::exp in this build returns garbage, and so does the SVM.)"""
    cv2.ipp.setUseIPP(False)
    try:
        return cv2.quality.QualityBRISQUE_computeFeatures(img)
    finally:
        cv2.ipp.setUseIPP(True)


def reference(path: str) -> dict:
    """OpenCV's score and features for the PNG at `path`, read back as OpenCV reads it."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert cv2.ipp.useIPP(), "the default values are OpenCV's with IPP, as shipped"
    score = float(cv2.quality.QualityBRISQUE_compute(img, MODEL, RANGE)[0])
    features = cv2.quality.QualityBRISQUE_computeFeatures(img)
    entry = {
        "file": os.path.basename(path),
        "channels": 1 if img.ndim == 2 else img.shape[2],
        "width": img.shape[1],
        "height": img.shape[0],
        "score": score if np.isfinite(score) else None,
        "features": as_floats(features),
        "svm_raw": svm_raw(features),
        "features_no_ipp": as_floats(features_without_ipp(img)),
    }
    if img.ndim == 3:
        # The same pixels handed over as R, G, B (what a caller that forgot imread's order does):
        # the Rust tests check that plantain matches the B, G, R score and not this one.
        swapped = np.ascontiguousarray(img[:, :, ::-1])
        entry["score_channels_swapped"] = float(cv2.quality.QualityBRISQUE_compute(swapped, MODEL, RANGE)[0])
    return entry


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for name, img in {**synthetic(), **photographs()}.items():
        cv2.imwrite(os.path.join(OUT, name), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    names = sorted(f for f in os.listdir(OUT) if f.endswith(".png"))
    doc = {
        "generator": "scripts/brisque_fixtures.py",
        "packages": {p: metadata.version(p) for p in ("opencv-contrib-python-headless", "numpy")},
        "opencv": cv2.__version__,
        "model": {"file": MODEL, "sha256": sha256(MODEL)},
        "range": {"file": RANGE, "sha256": sha256(RANGE)},
        "pictures": [reference(os.path.join(OUT, n)) for n in names],
    }
    with open(os.path.join(OUT, "brisque.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in names)
    for p in doc["pictures"]:
        print(f"{p['file']:18} {p['width']}x{p['height']}x{p['channels']}  score {p['score']}  svm {p['svm_raw']}")
    print(f"brisque_fixtures: {len(names)} pictures, {total / 1024:.0f} KiB, in {OUT}")


if __name__ == "__main__":
    main()
