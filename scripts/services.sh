#!/usr/bin/env bash
# Starts and stops the real servers the scale-out storage tests run against, on loopback only:
#
#   scripts/services.sh start DIR   # PostgreSQL 15 + SeaweedFS (S3) with their data in DIR;
#                                   # prints the env vars the tests read (eval "$(…)" them)
#   scripts/services.sh stop DIR    # stops both, by the process ids written in DIR
#   scripts/services.sh restart-postgres DIR   # fault tests: PostgreSQL's fast shutdown, then
#                                   # a start on the same data and port
#   scripts/services.sh stop-s3 DIR / start-s3 DIR   # fault tests: S3 down, then up again (same
#                                   # data, port and secret)
#
# scripts/setup-scaleout.sh installs them. Both run as an unprivileged user (PostgreSQL refuses
# to run as root): `postgres` where Debian's package created it, else `nobody`; set
# PLANTAIN_SERVICES_USER to choose. Ports: PLANTAIN_PG_PORT (default 54329) and PLANTAIN_S3_PORT
# (default 8333); SeaweedFS also takes its own default ports on 127.0.0.1 (master 9333, volume
# 9340, filer 8888 and their gRPC ports +10000). The S3 secret is random for each start.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PG_BIN=/usr/lib/postgresql/15/bin
WEED="$ROOT/.scaleout/bin/weed"
PG_PORT=${PLANTAIN_PG_PORT:-54329}
S3_PORT=${PLANTAIN_S3_PORT:-8333}
# A restart takes the ports of the start.
if [[ $# -eq 2 && "$1" != start && -f "$2/ports" ]]; then
  read -r PG_PORT S3_PORT < "$2/ports"
fi
S3_BUCKET=plantain-test
S3_KEY_ID=plantain-test

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[[ $# -eq 2 ]] || usage
CMD=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)

run_user() {
  if [[ -n "${PLANTAIN_SERVICES_USER:-}" ]]; then
    echo "$PLANTAIN_SERVICES_USER"
  elif id postgres > /dev/null 2>&1; then
    echo postgres
  else
    echo nobody
  fi
}

# Runs "$@" as the unprivileged user (setpriv execs it: no intermediate process stays).
as_user() {
  if [[ $(id -u) -eq 0 ]]; then
    local u
    u=$(run_user)
    exec setpriv --reuid="$u" --regid="$(id -g "$u")" --clear-groups -- "$@"
  else
    exec "$@"
  fi
}

# Waits up to $1 seconds for "${@:3}" to succeed, giving up early when process $2 (unless "-")
# has exited.
wait_for() {
  local secs=$1 pid=$2
  shift 2
  for _ in $(seq "$((secs * 4))"); do
    if "$@" > /dev/null 2>&1; then return 0; fi
    if [[ "$pid" != - ]] && ! kill -0 "$pid" 2> /dev/null; then return 1; fi
    sleep 0.25
  done
  return 1
}

start_postgres() {
  local data="$DIR/pg" sock="$DIR/pg-socket"
  if [[ ! -f "$data/PG_VERSION" ]]; then
    mkdir -p "$data"
    chmod 700 "$data"
    [[ $(id -u) -ne 0 ]] || chown "$(run_user)" "$data"
    (as_user "$PG_BIN/initdb" -D "$data" -A trust -U plantain -E UTF8 --no-locale) > "$DIR/pg-initdb.log" 2>&1 || {
      echo "services: initdb failed (see $DIR/pg-initdb.log)" >&2
      exit 1
    }
  fi
  mkdir -p "$sock"
  touch "$DIR/pg.log"
  [[ $(id -u) -ne 0 ]] || chown "$(run_user)" "$sock" "$DIR/pg.log"
  (as_user "$PG_BIN/pg_ctl" -D "$data" -l "$DIR/pg.log" -w -t 60 \
    -o "-p $PG_PORT -k $sock -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start) > /dev/null
  wait_for 30 - "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || {
    echo "services: PostgreSQL did not answer on 127.0.0.1:$PG_PORT (see $DIR/pg.log)" >&2
    exit 1
  }
  head -n1 "$data/postmaster.pid" > "$DIR/pg.pid"
}

start_seaweedfs() {
  local data="$DIR/s3"
  mkdir -p "$data"
  [[ $(id -u) -ne 0 ]] || chown -R "$(run_user)" "$data"
  touch "$DIR/s3.log" && { [[ $(id -u) -ne 0 ]] || chown "$(run_user)" "$DIR/s3.log"; }
  # The secret is only in this process's environment and in DIR/s3.env (mode 600); a restart
  # (start-s3) keeps it.
  local secret
  if [[ -f "$DIR/s3.env" ]]; then
    secret=$(sed -n 's/^PLANTAIN_TEST_S3_SECRET_ACCESS_KEY=//p' "$DIR/s3.env")
  else
    secret=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
    (umask 077 && printf 'PLANTAIN_TEST_S3_SECRET_ACCESS_KEY=%s\n' "$secret" > "$DIR/s3.env")
  fi
  # `$!` is weed's own pid: the subshell execs setpriv, which execs weed.
  AWS_ACCESS_KEY_ID=$S3_KEY_ID AWS_SECRET_ACCESS_KEY=$secret S3_BUCKET=$S3_BUCKET \
    as_user "$WEED" mini -dir="$data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$S3_PORT" \
    -s3.localSocket="$data/s3.sock" -filer.localSocket="$data/filer.sock" -master.telemetry=false -admin.ui=false -webdav=false >> "$DIR/s3.log" 2>&1 < /dev/null &
  echo $! > "$DIR/s3.pid"
  # Up when S3 answers and the bucket exists (the filer lists it).
  wait_for 60 "$(cat "$DIR/s3.pid")" curl -sf -o /dev/null "http://127.0.0.1:8888/buckets/$S3_BUCKET/" || {
    echo "services: SeaweedFS did not answer with bucket $S3_BUCKET (see $DIR/s3.log)" >&2
    exit 1
  }
  wait_for 30 "$(cat "$DIR/s3.pid")" curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" || {
    echo "services: SeaweedFS S3 did not answer on 127.0.0.1:$S3_PORT (see $DIR/s3.log)" >&2
    exit 1
  }
}

# Stops the process whose id is in $1 with signal $2 (then KILL after 20 s); removes the pid file.
stop_pid() {
  local file=$1 signal=$2 pid
  [[ -f "$file" ]] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2> /dev/null; then
    kill "-$signal" "$pid"
    for _ in $(seq 80); do
      kill -0 "$pid" 2> /dev/null || break
      sleep 0.25
    done
    if kill -0 "$pid" 2> /dev/null; then
      echo "services: $pid did not stop in 20 s; killing it" >&2
      kill -KILL "$pid"
    fi
  fi
  rm -f "$file"
}

case "$CMD" in
  start)
    [[ -x "$PG_BIN/pg_ctl" && -x "$WEED" ]] || {
      echo "services: run scripts/setup-scaleout.sh first" >&2
      exit 1
    }
    # Servers already answering on these ports would be taken for ours.
    for port in "$PG_PORT" "$S3_PORT" 8888 9333; do
      if (echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
        echo "services: something already listens on 127.0.0.1:$port (a previous start not stopped?)" >&2
        exit 1
      fi
    done
    # Sockets a SeaweedFS on these ports left in /tmp (it cannot reuse another user's); the
    # ports are free, so no server uses them.
    rm -f /tmp/seaweedfs-master-grpc-19333.sock /tmp/seaweedfs-volume-grpc-19340.sock \
      /tmp/seaweedfs-filer-grpc-18888.sock "/tmp/seaweedfs-s3-grpc-$((S3_PORT + 10000)).sock" \
      /tmp/seaweedfs-admin-grpc-33646.sock
    # A directory traversable by the unprivileged user.
    chmod 755 "$DIR"
    rm -f "$DIR/s3.env"
    echo "$PG_PORT $S3_PORT" > "$DIR/ports"
    # Whatever started is stopped again when the other does not come up.
    trap 'bash "$0" stop "$DIR"' EXIT
    start_postgres
    start_seaweedfs
    trap - EXIT
    echo "services: PostgreSQL (pid $(cat "$DIR/pg.pid")) and SeaweedFS (pid $(cat "$DIR/s3.pid")) up" >&2
    echo "export PLANTAIN_TEST_PG_URL=postgres://plantain@127.0.0.1:$PG_PORT/postgres"
    echo "export PLANTAIN_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
    echo "export PLANTAIN_TEST_S3_BUCKET=$S3_BUCKET"
    echo "export PLANTAIN_TEST_S3_REGION=us-east-1"
    echo "export PLANTAIN_TEST_S3_ACCESS_KEY_ID=$S3_KEY_ID"
    echo "export $(cat "$DIR/s3.env")"
    echo "export PLANTAIN_TEST_SERVICES_DIR=$DIR"
    ;;
  restart-postgres)
    stop_pid "$DIR/pg.pid" INT
    start_postgres
    echo "services: PostgreSQL restarted (pid $(cat "$DIR/pg.pid"))" >&2
    ;;
  stop-s3)
    stop_pid "$DIR/s3.pid" TERM
    echo "services: SeaweedFS stopped" >&2
    ;;
  start-s3)
    start_seaweedfs
    echo "services: SeaweedFS started (pid $(cat "$DIR/s3.pid"))" >&2
    ;;
  stop)
    stop_pid "$DIR/s3.pid" TERM
    # SIGINT: PostgreSQL's fast shutdown (disconnects clients, then stops cleanly).
    stop_pid "$DIR/pg.pid" INT
    rm -f "$DIR/s3.env" "$DIR/ports"
    echo "services: stopped" >&2
    ;;
  *) usage ;;
esac
