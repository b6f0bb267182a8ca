#!/usr/bin/env bash
# Runs plantain's benchmark and the diffusers peer back to back (same machine, same run) and
# writes both tables to bench-results.md. Needs ~12 GB RAM, ~6 GB of disk in $TMPDIR, and for
# the peer a Python venv with torch + diffusers + transformers (PYTHON=/path/to/venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
REPEATS=${REPEATS:-3}
THREADS=${THREADS:-2}
OUT=${OUT:-bench-results.md}
bash scripts/setup.sh >/dev/null
cargo build --release -p plantain-cli
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo
  echo "## plantain"
  ./target/release/plantain bench --repeats "$REPEATS" --threads "$THREADS" --json bench-plantain.json
  echo
  echo "## diffusers (peer)"
  "$PYTHON" scripts/bench_diffusers.py --repeats "$REPEATS" --threads "$THREADS" --json bench-diffusers.json
} | tee "$OUT"
