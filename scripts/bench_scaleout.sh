#!/usr/bin/env bash
# Issue 27's benchmarks (BENCHMARKS.md, "Scale-out"): plantain-nano on this machine through
#   1. one all-in-one node on the embedded store (SQLite + folder),
#   2. one all-in-one node on PostgreSQL + S3 (the same storage as the queue, no queue),
#   3. an API node and one worker (the shared queue),
#   4. an API node and two workers,
# each: the median of N sequential requests (the queue's overhead per job is 3's median minus
# 2's) and the throughput of J requests from C clients at once; then
#   5. the bounded load test (scripts/loadtest_server.py) against two API nodes and two workers,
#      clients alternating between the API nodes, every 200 checked against PostgreSQL's ledger.
#
#   bash scripts/bench_scaleout.sh [N J C LOAD_SECONDS LOAD_CLIENTS]   (defaults 20 24 4 60 16)
#
# Uses target/release/plantain-server (built if missing; PLANTAIN_SERVER_BIN names another).
# Starts PostgreSQL 15 + SeaweedFS with scripts/services.sh unless PLANTAIN_TEST_PG_URL is set,
# and stops everything it started by process id. Each set-up gets its own schema and S3 prefix.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
N=${1:-20} J=${2:-24} C=${3:-4} LOAD_SECONDS=${4:-60} LOAD_CLIENTS=${5:-16}
BIN=${PLANTAIN_SERVER_BIN:-$ROOT/target/release/plantain-server}
[[ -x "$BIN" ]] || cargo build --release --locked --bin plantain-server
WORK=$(mktemp -d)
PIDS=()
SERVICES=""
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null || true; done
  if [[ -n "$SERVICES" ]]; then
    bash "$ROOT/scripts/services.sh" stop "$SERVICES" > /dev/null 2>&1 || true
    rm -rf "$SERVICES"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
if [[ -z "${PLANTAIN_TEST_PG_URL:-}" ]]; then
  # Not under $WORK: mktemp's folder is private to this user, and the servers run as another.
  SERVICES="/tmp/plantain-bench-services-$$"
  ENV=$(bash "$ROOT/scripts/services.sh" start "$SERVICES") || exit 1
  eval "$ENV"
fi

# node NAME ROLE BACKEND SCHEMA: starts a server; sets URL and PID once it is ready.
node() {
  local name=$1 role=$2 backend=$3 schema=$4 log="$WORK/$1.log"
  {
    printf 'listen = "127.0.0.1:0"\ndata_dir = "%s"\nlog = "warn"\n' "$WORK/$name"
    printf '[checks]\nattempts = 1\n'
    printf '[storage]\nbackend = "%s"\nrole = "%s"\nnode_name = "%s"\n' "$backend" "$role" "$name"
    if [[ $backend == postgres ]]; then
      printf '[storage.postgres]\nschema = "%s"\n' "$schema"
      printf '[storage.s3]\nbucket = "%s"\nendpoint = "%s"\nprefix = "%s"\n' \
        "$PLANTAIN_TEST_S3_BUCKET" "$PLANTAIN_TEST_S3_ENDPOINT" "$schema"
    fi
    printf '[[models]]\nname = "plantain-nano"\nsource = "plantain-nano"\n'
  } > "$WORK/$name.toml"
  PLANTAIN_POSTGRES_URL=$PLANTAIN_TEST_PG_URL PLANTAIN_S3_ACCESS_KEY_ID=$PLANTAIN_TEST_S3_ACCESS_KEY_ID \
    PLANTAIN_S3_SECRET_ACCESS_KEY=$PLANTAIN_TEST_S3_SECRET_ACCESS_KEY "$BIN" --config "$WORK/$name.toml" 2> "$log" &
  PID=$!
  PIDS+=("$PID")
  URL=""
  for _ in $(seq 1 600); do
    URL=$(sed -n 's/^plantain server listening on \(http:[^ ]*\)$/\1/p' "$log" | head -n1)
    if [[ -n "$URL" ]] && curl -fs "$URL/readyz" > /dev/null 2>&1; then return 0; fi
    kill -0 "$PID" 2> /dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.2
  done
  echo "node $name did not get ready" >&2
  cat "$log" >&2
  exit 1
}

stop_all() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null || true; done
  PIDS=()
}

measure() {
  local label=$1 url=$2
  local seq thr
  seq=$(python3 "$ROOT/scripts/bench_scaleout.py" sequential "$url" "$N")
  thr=$(python3 "$ROOT/scripts/bench_scaleout.py" throughput "$url" "$C" "$J")
  echo "RESULT $label sequential $seq"
  echo "RESULT $label throughput $thr"
}

TAG="bench_$$_$(date +%s)"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; server $BIN"
# PLANTAIN_BENCH_LOGS=DIR keeps the servers' logs there; PLANTAIN_BENCH_ONLY_LOAD=1 runs only 5.
if [[ -n "${PLANTAIN_BENCH_LOGS:-}" ]]; then
  mkdir -p "$PLANTAIN_BENCH_LOGS"
  trap 'cp "$WORK"/*.log "$PLANTAIN_BENCH_LOGS"/ 2> /dev/null || true; cleanup' EXIT
fi
if [[ -z "${PLANTAIN_BENCH_ONLY_LOAD:-}" ]]; then
node all all embedded ""
measure "all-in-one (SQLite + folder)" "$URL"
stop_all
node allpg all postgres "${TAG}_allpg"
measure "all-in-one (PostgreSQL + S3)" "$URL"
stop_all
node w1 worker postgres "${TAG}_q1"
node api api postgres "${TAG}_q1"
measure "API node + 1 worker" "$URL"
stop_all
node w1 worker postgres "${TAG}_q2"
node w2 worker postgres "${TAG}_q2"
node api api postgres "${TAG}_q2"
measure "API node + 2 workers" "$URL"
stop_all
fi

# The load test: two API nodes, two workers.
node w1 worker postgres "${TAG}_load"
W1=$PID
node w2 worker postgres "${TAG}_load"
W2=$PID
node a api postgres "${TAG}_load"
A=$URL A_PID=$PID
node b api postgres "${TAG}_load"
B=$URL B_PID=$PID
python3 "$ROOT/scripts/loadtest_server.py" --url "$A" --url "$B" --clients "$LOAD_CLIENTS" --seconds "$LOAD_SECONDS" \
  --model plantain-nano --psql "$PLANTAIN_TEST_PG_URL" --schema "${TAG}_load" \
  --pid "$A_PID" --pid "$B_PID" --pid "$W1" --pid "$W2"
