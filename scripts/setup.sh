#!/usr/bin/env bash
# Installs everything plantain fetches, by exact version and checksum; idempotent (what is
# already in place and verified is kept). Needs python3 with pip and access to PyPI.
#
#   ONNX Runtime 1.31.1 (CPU) — the shared library, from the PyPI wheel, into .ort/ (where
#   plantain looks for it; or set ORT_DYLIB_PATH). For a GPU build, set ORT_PACKAGE=onnxruntime-gpu
#   (its checksum is not pinned here: the script says so and skips the check).
#
# Auxiliary models that later features use (segmentation, OCR, super-resolution, quality) are
# fetched here too, the same way, as they land.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

ORT_VERSION=1.31.1
ORT_PACKAGE=${ORT_PACKAGE:-onnxruntime}
# The manylinux x86_64 wheel for CPython 3.11, whatever python3 runs this script.
ORT_WHEEL="onnxruntime-$ORT_VERSION-cp311-cp311-manylinux_2_28_x86_64.whl"
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
ORT_LIB="libonnxruntime.so.$ORT_VERSION"

sha256() { sha256sum "$1" | cut -d' ' -f1; }

install_ort() {
  local dest="$ROOT/.ort"
  local want=$ORT_WHEEL_SHA256
  [[ "$ORT_PACKAGE" == onnxruntime ]] || want="$ORT_PACKAGE"
  if [[ -f "$dest/$ORT_LIB" && -f "$dest/.installed" && "$(cat "$dest/.installed")" == "$want" ]]; then
    echo "setup: ONNX Runtime $ORT_VERSION already in $dest"
    return
  fi
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --abi cp311 --platform manylinux_2_28_x86_64 "$ORT_PACKAGE==$ORT_VERSION" -d "$tmp"
  local wheel
  wheel=$(ls "$tmp"/*.whl)
  if [[ "$ORT_PACKAGE" == onnxruntime ]]; then
    local got
    got=$(sha256 "$wheel")
    if [[ "$(basename "$wheel")" != "$ORT_WHEEL" || "$got" != "$ORT_WHEEL_SHA256" ]]; then
      echo "setup: error: $(basename "$wheel") has sha256 $got; expected $ORT_WHEEL with $ORT_WHEEL_SHA256" >&2
      exit 1
    fi
  else
    echo "setup: note: $ORT_PACKAGE's checksum is not pinned; not verified"
  fi
  mkdir -p "$dest"
  python3 - "$wheel" "$dest" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime"):
            tmp = os.path.join(dest, base + ".part")
            with z.open(name) as src, open(tmp, "wb") as out:
                out.write(src.read())
            os.chmod(tmp, 0o755)
            os.replace(tmp, os.path.join(dest, base))
PY
  test -f "$dest/$ORT_LIB" || { echo "setup: error: $ORT_LIB not found in $wheel" >&2; exit 1; }
  echo "$want" > "$dest/.installed"
  echo "setup: ONNX Runtime $ORT_VERSION installed in $dest"
}

install_ort
