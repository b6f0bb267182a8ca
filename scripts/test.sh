#!/usr/bin/env bash
# Sets up and runs every default check: what `.ci/run` runs on a fresh clone (about 25 minutes
# on 2 cores, most of it the first build). Slow checks that are not part of it are named in
# the README (benchmarks, evals, the full-size model runs).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
disk() { echo "test: after $1: target $(du -sh "$TARGET" 2> /dev/null | cut -f1), free $(df -h --output=avail . | tail -n1 | tr -d ' ')"; }
bash scripts/setup.sh
cargo fmt --all -- --check
# No function outside tests over 120 lines.
python3 scripts/long_functions.py 120 crates
cargo clippy --workspace --all-targets --locked -- -D warnings
disk clippy
cargo test --workspace --locked
disk tests
# The storage conformance suite against real PostgreSQL 15 + SeaweedFS (S3) on loopback,
# stopped by process id whatever happens.
bash scripts/setup-scaleout.sh
SERVICES_DIR=$(mktemp -d)
trap 'bash scripts/services.sh stop "$SERVICES_DIR"; rm -rf "$SERVICES_DIR"' EXIT
eval "$(bash scripts/services.sh start "$SERVICES_DIR")"
# The workspace's test binaries, already built above (`-p plantain-store` alone would resolve
# features differently and rebuild tokio, sqlx, object_store…); only the ignored tests that
# need PostgreSQL (all named `…postgres…`).
cargo test --workspace --tests --locked -- --ignored postgres
# The real SDKs against two API nodes and two workers on those servers.
CARGO_LOCKED=1 bash tests/python/run_scaleout.sh
bash scripts/services.sh stop "$SERVICES_DIR"
# The server against the real google-genai and openai SDKs (pip-installed into a venv).
CARGO_LOCKED=1 bash tests/python/run.sh
disk "sdk tests"
# The studio in Debian's chromium through playwright-core (npm; about a minute).
CARGO_LOCKED=1 bash tests/studio/run.sh
disk "studio tests"
