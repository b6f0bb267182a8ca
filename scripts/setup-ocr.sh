#!/usr/bin/env bash
# Installs what plantain's text reading (crates/ocr) needs, by exact version and checksum;
# idempotent (what is already in place and verified is kept). scripts/setup.sh calls it; it can
# also be run on its own. Needs python3 with pip and access to PyPI; apt-get for Tesseract.
#
#   PP-OCRv4 (text detection + Chinese/Latin recognition) and the PP-OCR mobile v2.0 angle
#   classifier, as ONNX files, from the PyPI wheel rapidocr-onnxruntime 1.4.4 (Apache-2.0; the
#   models are PaddleOCR's, Apache-2.0), into .models/ppocr/ with the wheel's METADATA (its licence
#   statement) and a NOTICE. Only the three model files are taken: none of the package is installed.
#
#   Tesseract (Debian packages, for the scripts PP-OCRv4 cannot read): tesseract-ocr and the
#   language packs listed in TESSERACT_LANGS (deu, fra, spa for accented Latin letters), with
#   apt-get --no-install-recommends (as root); Debian's archive signatures check them. Where apt-get is missing, or
#   we are not root, it says so and goes on: the Tesseract reader then reports itself unavailable.
#   Set OCR_SKIP_TESSERACT=1 to leave Tesseract alone.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

RAPIDOCR_VERSION=1.4.4
RAPIDOCR_WHEEL="rapidocr_onnxruntime-$RAPIDOCR_VERSION-py3-none-any.whl"
RAPIDOCR_WHEEL_SHA256=971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf
# Each model: its file in the wheel's rapidocr_onnxruntime/models/, bytes, sha256.
PPOCR_MODELS=(
  "ch_PP-OCRv4_det_infer.onnx 4745517 d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
  "ch_PP-OCRv4_rec_infer.onnx 10857958 48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"
  "ch_ppocr_mobile_v2.0_cls_infer.onnx 585532 e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"
)
PPOCR_METADATA="rapidocr_onnxruntime-$RAPIDOCR_VERSION.METADATA"

# Tesseract language codes (Debian package tesseract-ocr-<code with _ as ->).
TESSERACT_LANGS=(eng deu fra spa rus ell ara heb hin tha kor jpn chi_sim)

# shellcheck source=scripts/wheel-files.sh
source "$ROOT/scripts/wheel-files.sh"

write_notice() {
  cat >"$1/NOTICE.part" <<EOF
The ONNX models in this folder come from the PyPI wheel $RAPIDOCR_WHEEL
(sha256 $RAPIDOCR_WHEEL_SHA256), RapidOCR by RapidAI, https://github.com/RapidAI/RapidOCR,
licensed Apache-2.0 (see $PPOCR_METADATA, the wheel's own metadata; the wheel carries no
separate LICENSE file). They are conversions of PaddleOCR's PP-OCRv4 detection and recognition
(ch_PP-OCRv4_det_infer, ch_PP-OCRv4_rec_infer) and PP-OCR mobile v2.0 direction classifier
(ch_ppocr_mobile_v2.0_cls_infer) models, https://github.com/PaddlePaddle/PaddleOCR, Copyright
(c) PaddlePaddle Authors, licensed under the Apache License, Version 2.0:
http://www.apache.org/licenses/LICENSE-2.0
EOF
  mv "$1/NOTICE.part" "$1/NOTICE"
}

install_ppocr() {
  local dest="$ROOT/.models/ppocr"
  if wheel_files_installed "$dest" "$PPOCR_METADATA" "${PPOCR_MODELS[@]}"; then
    echo "setup-ocr: PP-OCR models already in $dest"
    return
  fi
  wheel_files_fetch setup-ocr "rapidocr-onnxruntime==$RAPIDOCR_VERSION" "$RAPIDOCR_WHEEL" "$RAPIDOCR_WHEEL_SHA256" \
    rapidocr_onnxruntime/models "rapidocr_onnxruntime-$RAPIDOCR_VERSION.dist-info" "$dest" "$PPOCR_METADATA" "${PPOCR_MODELS[@]}"
  write_notice "$dest"
  echo "setup-ocr: PP-OCRv4 det/rec and PP-OCR v2.0 cls models (rapidocr-onnxruntime $RAPIDOCR_VERSION) installed in $dest"
}

# The language codes of TESSERACT_LANGS that the installed tesseract does not list.
missing_tesseract_langs() {
  local have
  have=$(tesseract --list-langs 2>/dev/null | tail -n +2 || true)
  for lang in "${TESSERACT_LANGS[@]}"; do
    grep -qx "$lang" <<<"$have" || echo "$lang"
  done
}

install_tesseract() {
  if [[ "${OCR_SKIP_TESSERACT:-0}" == 1 ]]; then
    echo "setup-ocr: OCR_SKIP_TESSERACT=1: Tesseract left alone"
    return
  fi
  local missing=()
  if command -v tesseract >/dev/null; then
    mapfile -t missing < <(missing_tesseract_langs)
    if [[ ${#missing[@]} == 0 ]]; then
      echo "setup-ocr: Tesseract and its language packs (${TESSERACT_LANGS[*]}) already installed"
      return
    fi
  fi
  local packages=(tesseract-ocr) lang
  for lang in "${TESSERACT_LANGS[@]}"; do
    packages+=("tesseract-ocr-${lang//_/-}")
  done
  if ! command -v apt-get >/dev/null; then
    echo "setup-ocr: note: apt-get is not available: install Tesseract and its language packs (${TESSERACT_LANGS[*]}) yourself; skipped"
    return
  fi
  if [[ "$(id -u)" != 0 ]]; then
    echo "setup-ocr: note: not root: run \`apt-get install -y --no-install-recommends ${packages[*]}\` as root; skipped"
    return
  fi
  # Waits up to 5 minutes for another apt or dpkg to finish. Package lists may be absent (slim
  # images) or stale: refresh them once if the install fails.
  local apt=(apt-get -o DPkg::Lock::Timeout=300 -qq)
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${packages[@]}" >/dev/null; then
    "${apt[@]}" update
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${packages[@]}" >/dev/null
  fi
  mapfile -t missing < <(missing_tesseract_langs)
  if [[ ${#missing[@]} != 0 ]]; then
    echo "setup-ocr: error: after installing ${packages[*]}, tesseract still lacks: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup-ocr: Tesseract $(tesseract --version 2>&1 | head -n1 | cut -d' ' -f2) installed with ${TESSERACT_LANGS[*]}"
}

install_ppocr
install_tesseract
