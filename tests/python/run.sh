#!/usr/bin/env bash
# The SDK compatibility tests: builds plantain-server, installs google-genai and openai into a
# venv (PLANTAIN_PYVENV, default $TMPDIR/plantain-sdk-venv), starts the server on a loopback port with
# the tiny random-weight model and runs tests/python/test_sdks.py against it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source "$ROOT/tests/python/venv.sh"
# With the workspace's features, so that after `cargo test --workspace` nothing is rebuilt.
cargo build ${CARGO_LOCKED:+--locked} --workspace --bins
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d)
cat > "$WORK/server.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "$WORK/data"
log = "warn"
[[models]]
name = "tiny"
source = "$ROOT/fixtures/tiny/sd1"
steps = 2
threads = 1
TOML
"$TARGET/debug/plantain-server" --config "$WORK/server.toml" 2> "$WORK/server.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
URL=""
for _ in $(seq 1 300); do
  URL=$(sed -n 's/^plantain server listening on \(http:[^ ]*\)$/\1/p' "$WORK/server.log" | head -n1)
  if [[ -n "$URL" ]] && "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$URL/readyz" 2> /dev/null; then break; fi
  if ! kill -0 $PID 2>/dev/null; then cat "$WORK/server.log"; exit 1; fi
  sleep 0.2
done
[[ -n "$URL" ]] || { echo "server did not start"; cat "$WORK/server.log"; exit 1; }
echo "server at $URL"
PLANTAIN_URL="$URL" "$PY" "$ROOT/tests/python/test_sdks.py" || { tail -n 50 "$WORK/server.log"; exit 1; }
