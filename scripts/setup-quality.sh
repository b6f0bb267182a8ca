#!/usr/bin/env bash
# Installs the BRISQUE model that plantain-quality scores pictures with: the LIVE model files
# OpenCV ships (brisque_model_live.yml and brisque_range_live.yml, from opencv_contrib's quality
# module), through Debian's package opencv-data, into /usr/share/opencv4/quality/. Idempotent:
# when both files are in place it only checks them. Installing needs root (apt-get).
#
# The files are pinned by sha256 (those of opencv-data 4.6.0+dfsg-12, the same bytes as
# opencv_contrib's modules/quality/samples/); a differing file stops the script, since another
# model would give other scores. With PLANTAIN_BRISQUE_DIR set (where plantain-quality then
# looks), the script only checks the files there.
set -euo pipefail

DEFAULT_DIR=/usr/share/opencv4/quality
DIR=${PLANTAIN_BRISQUE_DIR:-$DEFAULT_DIR}
MODEL_SHA256=4c44c7eec9e5139830c0bb0e4a044c9cd351ba5bbc9e3798beca3243e2782ff4
RANGE_SHA256=a18427f4f7ad087524bd0d63389649a3899b51ca6d44a4d5f8d8171f1f914a9c

have_files() { [[ -f "$DIR/brisque_model_live.yml" && -f "$DIR/brisque_range_live.yml" ]]; }

install_package() {
  if [[ "$DIR" != "$DEFAULT_DIR" ]]; then
    echo "setup-quality: $DIR (PLANTAIN_BRISQUE_DIR) lacks brisque_model_live.yml or brisque_range_live.yml" >&2
    exit 1
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup-quality: $DIR lacks the BRISQUE files and installing opencv-data needs root" >&2
    echo "setup-quality: run as root, or: sudo apt-get install --no-install-recommends opencv-data" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine may have no package lists yet: update once and try again.
  if ! apt-get install -y --no-install-recommends opencv-data; then
    apt-get update
    apt-get install -y --no-install-recommends opencv-data
  fi
}

check() {
  local file=$DIR/$1 want=$2 got
  got=$(sha256sum "$file" | cut -d' ' -f1)
  if [[ "$got" != "$want" ]]; then
    echo "setup-quality: $file has sha256 $got, expected $want (another BRISQUE model?)" >&2
    exit 1
  fi
}

if have_files; then
  echo "setup-quality: BRISQUE model already in $DIR"
else
  install_package
  have_files || { echo "setup-quality: opencv-data did not install the BRISQUE files into $DIR" >&2; exit 1; }
fi
check brisque_model_live.yml "$MODEL_SHA256"
check brisque_range_live.yml "$RANGE_SHA256"
echo "setup-quality: BRISQUE model verified in $DIR"
