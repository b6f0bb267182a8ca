#!/usr/bin/env bash
# The SDK tests (tests/python/test_sdks.py, the same suite as run.sh) against the scale-out
# set-up: two `--role api` nodes and two `--role worker` nodes sharing one PostgreSQL and one S3
# store, behind a round-robin balancer (roundrobin.py: each request to the next API node, so a
# chat's second turn, an upload's bytes or a batch's polling land on the other node than the
# call before). Then checks that both API nodes answered, that both workers ran jobs, that every
# job ran once and nothing is left in the queue.
#
# Needs the servers of scripts/services.sh (`eval "$(bash scripts/services.sh start DIR)"`: the
# PLANTAIN_TEST_* variables). Builds the workspace's binaries unless PLANTAIN_SERVER_BIN names a
# plantain-server. Every process it starts is stopped by its process id.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
for v in PLANTAIN_TEST_PG_URL PLANTAIN_TEST_S3_ENDPOINT PLANTAIN_TEST_S3_BUCKET PLANTAIN_TEST_S3_ACCESS_KEY_ID PLANTAIN_TEST_S3_SECRET_ACCESS_KEY; do
  [[ -n "${!v:-}" ]] || {
    echo "$v is not set: start PostgreSQL and S3 first (eval \"\$(bash scripts/services.sh start DIR)\")" >&2
    exit 1
  }
done
source "$ROOT/tests/python/venv.sh"
if [[ -n "${PLANTAIN_SERVER_BIN:-}" ]]; then
  BIN=$PLANTAIN_SERVER_BIN
else
  # With the workspace's features, so that after `cargo test --workspace` nothing is rebuilt.
  cargo build ${CARGO_LOCKED:+--locked} --workspace --bins
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/plantain-server
fi
PSQL=/usr/lib/postgresql/15/bin/psql
WORK=$(mktemp -d)
# A schema and an S3 prefix of its own: nothing another run wrote is seen.
SCHEMA="sdk_$$_$(date +%s)"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_node NAME ROLE: starts a plantain-server with the shared storage; sets URL to its address
# once it is ready.
start_node() {
  local name=$1 role=$2 log="$WORK/$1.log"
  cat > "$WORK/$name.toml" << TOML
listen = "127.0.0.1:0"
data_dir = "$WORK/$name"
log = "warn"
[storage]
backend = "postgres"
role = "$role"
node_name = "$name"
[storage.postgres]
schema = "$SCHEMA"
[storage.s3]
bucket = "$PLANTAIN_TEST_S3_BUCKET"
endpoint = "$PLANTAIN_TEST_S3_ENDPOINT"
prefix = "$SCHEMA"
[[models]]
name = "tiny"
source = "$ROOT/fixtures/tiny/sd1"
steps = 2
threads = 1
TOML
  # Secrets only in the environment, as in production.
  PLANTAIN_POSTGRES_URL=$PLANTAIN_TEST_PG_URL PLANTAIN_S3_ACCESS_KEY_ID=$PLANTAIN_TEST_S3_ACCESS_KEY_ID \
    PLANTAIN_S3_SECRET_ACCESS_KEY=$PLANTAIN_TEST_S3_SECRET_ACCESS_KEY "$BIN" --config "$WORK/$name.toml" 2> "$log" &
  local pid=$!
  PIDS+=("$pid")
  URL=""
  for _ in $(seq 1 600); do
    URL=$(sed -n 's/^plantain server listening on \(http:[^ ]*\)$/\1/p' "$log" | head -n1)
    if [[ -n "$URL" ]] && "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$URL/readyz" 2> /dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2> /dev/null; then
      echo "node $name exited:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "node $name did not get ready:" >&2
  cat "$log" >&2
  exit 1
}

logs() {
  local f
  for f in "$WORK"/*.log; do
    echo "--- $(basename "$f")"
    tail -n 30 "$f"
  done
}

# The first node migrates the schema; the others find it done.
start_node w1 worker
start_node w2 worker
start_node a api
A=$URL
start_node b api
B=$URL
"$PY" "$ROOT/tests/python/roundrobin.py" "$WORK/lb.port" "$WORK/lb.counts" "$A" "$B" 2> "$WORK/lb.log" &
PIDS+=("$!")
for _ in $(seq 1 100); do [[ -s "$WORK/lb.port" ]] && break; sleep 0.1; done
LB="http://127.0.0.1:$(cat "$WORK/lb.port")"
echo "API nodes $A and $B behind $LB; workers w1, w2; schema $SCHEMA"
PLANTAIN_URL="$LB" "$PY" "$ROOT/tests/python/test_sdks.py" || {
  logs
  exit 1
}

# Both API nodes answered, both workers ran jobs, every job once, none left over.
echo "requests per API node: $(cat "$WORK/lb.counts")"
"$PY" - "$WORK/lb.counts" << 'PY' || exit 1
import json, sys
counts = json.load(open(sys.argv[1]))
assert len(counts) == 2 and all(n >= 10 for n in counts.values()), ("each API node answers its share", counts)
PY
q() { "$PSQL" -X -A -t -q -d "$PLANTAIN_TEST_PG_URL" -c "SET search_path TO $SCHEMA; $1"; }
echo "jobs per worker and state: $(q "SELECT coalesce(split_part(lease_owner, '/', 1), '-'), state, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2" | tr '\n' ' ')"
RAN=$(q "SELECT count(DISTINCT split_part(lease_owner, '/', 1)) FROM jobs WHERE state = 'succeeded'")
OPEN=$(q "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")
AGAIN=$(q "SELECT count(*) FROM jobs WHERE attempts > 1")
if [[ "$RAN" != 2 || "$OPEN" != 0 || "$AGAIN" != 0 ]]; then
  echo "scale-out: workers that ran jobs $RAN (want 2), jobs left open $OPEN (want 0), jobs run more than once $AGAIN (want 0)" >&2
  logs
  exit 1
fi
echo "scale-out SDK tests passed: 2 API nodes, 2 workers"
