#!/usr/bin/env bash
# Fetches ONNX Runtime's shared library (CPU) from the PyPI wheel into .ort/, where plantain
# looks for it (or set ORT_DYLIB_PATH). Idempotent; needs python3 with pip and network access
# to PyPI. For a GPU build use onnxruntime-gpu of the same version instead.
set -euo pipefail
VERSION=1.31.1
PACKAGE=${ORT_PACKAGE:-onnxruntime}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST="$ROOT/.ort"
LIB="libonnxruntime.so.$VERSION"
if [[ -f "$DEST/$LIB" ]]; then
  echo "ONNX Runtime $VERSION already in $DEST"
  exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: "$PACKAGE==$VERSION" -d "$TMP"
WHEEL=$(ls "$TMP"/*.whl)
mkdir -p "$DEST"
python3 - "$WHEEL" "$DEST" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime"):
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
            os.chmod(os.path.join(dest, base), 0o755)
            print("extracted", base)
PY
test -f "$DEST/$LIB" || { echo "error: $LIB not found in $WHEEL" >&2; exit 1; }
echo "ONNX Runtime $VERSION installed in $DEST"
