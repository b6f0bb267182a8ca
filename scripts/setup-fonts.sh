#!/usr/bin/env bash
# Installs the fonts plantain-typeset (crates/typeset) sets text with, from Debian's packages;
# idempotent (packages already installed are kept, and apt is not touched when none is missing).
#
#   fonts-noto-core   Noto Sans and its per-script families: Latin, Greek, Cyrillic, Arabic,
#                     Hebrew, Devanagari, Thai, ... (TrueType, /usr/share/fonts/truetype/noto)
#   fonts-noto-cjk    Noto Sans CJK SC/TC/JP/KR (OpenType collections, /usr/share/fonts/opentype/noto)
#   fonts-dejavu-core DejaVu Sans, a last fallback
#
# Needs root (or sudo) and apt-get, i.e. Debian or Ubuntu. The typeset tests fail, naming this
# script, when a script's font is missing.
set -euo pipefail

PACKAGES=(fonts-noto-core fonts-noto-cjk fonts-dejavu-core)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
for package in "${PACKAGES[@]}"; do
  if command -v dpkg-query >/dev/null && installed "$package"; then
    continue
  fi
  missing+=("$package")
done
if [[ ${#missing[@]} == 0 ]]; then
  echo "setup-fonts: ${PACKAGES[*]} already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "setup-fonts: error: apt-get is not available; install ${missing[*]} (or the Noto Sans," \
    "Noto Sans CJK and DejaVu Sans fonts) under /usr/share/fonts by other means" >&2
  exit 1
fi
SUDO=()
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "setup-fonts: error: installing ${missing[*]} needs root or sudo" >&2; exit 1; }
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup-fonts: installed ${missing[*]}"
