#!/usr/bin/env bash
# plantain studio in a real browser: builds `plantain`, installs playwright-core (pinned in
# package-lock.json; it downloads no browser) and drives Debian's chromium (/usr/bin/chromium,
# `apt-get install -y chromium`) against `plantain serve` with plantain-nano on a free loopback
# port, with one API key. Installs chromium with apt-get when it is missing (as root).
#
# Screenshots go to a temporary folder; `STUDIO_SHOTS=docs/studio bash tests/studio/run.sh`
# refreshes the README's. PLANTAIN_BIN: use this `plantain` binary instead of building one.
# STUDIO_MEASURE=N: no tests; time N generations in the studio and through the google-genai SDK
# on the same server, and the studio's first load (a table for BENCHMARKS.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x "$CHROMIUM" && "$CHROMIUM" == /usr/bin/chromium ]] && command -v apt-get > /dev/null && [[ $(id -u) == 0 ]]; then
  echo "studio tests: installing Debian's chromium"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium > /dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium > /dev/null; }
fi
[[ -x "$CHROMIUM" ]] || { echo "studio tests: no $CHROMIUM (apt-get install -y chromium)"; exit 1; }
command -v node > /dev/null || { echo "studio tests: node is needed (Debian nodejs, 18 or newer)"; exit 1; }
# The pinned playwright-core (package-lock.json), unless that exact version is installed.
WANT=$(node -p 'require("./tests/studio/package-lock.json").packages["node_modules/playwright-core"].version')
HAVE=$(node -p 'try { require("./tests/studio/node_modules/playwright-core/package.json").version } catch (e) { "" }')
[[ "$WANT" == "$HAVE" ]] || (cd tests/studio && npm ci --no-audit --no-fund --loglevel=error)
# With the workspace's features (as tests/python/run.sh), so that after `cargo test --workspace`
# nothing is rebuilt.
if [[ -z "${PLANTAIN_BIN:-}" ]]; then
  cargo build ${CARGO_LOCKED:+--locked} --workspace --bins
  PLANTAIN_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/plantain
fi
WORK=$(mktemp -d)
cat > "$WORK/server.toml" << TOML
listen = "127.0.0.1:0"
data_dir = "$WORK/data"
log = "warn"
[limits]
max_image_bytes = 2000000
[[models]]
name = "plantain-nano"
source = "$ROOT/models/plantain-nano"
steps = 6
threads = 2
# The same model with many steps: slow enough to cancel while it runs.
[[models]]
name = "plantain-nano-slow"
source = "$ROOT/models/plantain-nano"
steps = 400
threads = 2
TOML
KEY=$("$PLANTAIN_BIN" keys create --config "$WORK/server.toml" --name studio-tests 2> /dev/null)
"$PLANTAIN_BIN" serve --config "$WORK/server.toml" 2> "$WORK/server.log" &
PID=$!
trap 'kill $PID 2> /dev/null || true; wait $PID 2> /dev/null || true; rm -rf "$WORK"' EXIT
URL=""
for _ in $(seq 1 600); do
  URL=$(sed -n 's/^plantain server listening on \(http:[^ ]*\)$/\1/p' "$WORK/server.log" | head -n1)
  if [[ -n "$URL" ]] && curl -fsS -o /dev/null "$URL/readyz" 2> /dev/null; then break; fi
  if ! kill -0 $PID 2> /dev/null; then cat "$WORK/server.log"; exit 1; fi
  sleep 0.2
done
curl -fsS -o /dev/null "$URL/readyz" || { echo "server did not get ready"; cat "$WORK/server.log"; exit 1; }
echo "server at $URL"
export PLANTAIN_URL="$URL" PLANTAIN_KEY="$KEY" PLANTAIN_PID=$PID CHROMIUM STUDIO_SHOTS=${STUDIO_SHOTS:-$WORK/shots}
mkdir -p "$STUDIO_SHOTS"
STUDIO_SHOTS=$(cd "$STUDIO_SHOTS" && pwd)
if [[ -n "${STUDIO_MEASURE:-}" ]]; then
  # Timings instead of tests: the studio in chromium, then the google-genai SDK (the venv of
  # tests/python/run.sh) with the same requests on the same server.
  VENV=${PLANTAIN_PYVENV:-${TMPDIR:-/tmp}/plantain-sdk-venv}
  [[ -x "$VENV/bin/python" ]] || { echo "studio measure: run tests/python/run.sh once first (it makes $VENV)"; exit 1; }
  (cd tests/studio && node measure.mjs) > "$WORK/studio.json"
  "$VENV/bin/python" tests/studio/measure_sdk.py > "$WORK/sdk.json"
  python3 tests/studio/measure_report.py "$WORK/studio.json" "$WORK/sdk.json"
  exit 0
fi
(cd tests/studio && node --test --test-concurrency=1 studio.test.mjs) || { tail -n 50 "$WORK/server.log"; exit 1; }
