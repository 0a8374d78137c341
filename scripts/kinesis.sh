#!/usr/bin/env bash
# kinesalite (a Kinesis API server) on 127.0.0.1 for the test suite.
#   scripts/kinesis.sh start|stop|wait [port]
# start: install it with `npm ci` when node_modules is missing or older than package-lock.json,
# reuse a server already answering on the port, otherwise start one in the background and wait
# until it answers HTTP. Its data is kept in memory unless KINESALITE_DATA names a directory.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.services
PORT=${2:-${KINESALITE_PORT:-4567}}
PIDFILE=$STATE/kinesalite-$PORT.pid
LOGFILE=$STATE/kinesalite-$PORT.log
mkdir -p "$STATE"

log() { printf 'kinesis: %s\n' "$*" >&2; }

# Any HTTP answer (kinesalite says 403 to a bare GET) means it is serving requests; without
# curl, an open port is taken as the answer.
answering() {
  if command -v curl >/dev/null; then curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/"
  else (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; fi
}

apt_install() {
  log "installing $* from Debian packages"
  if [ "$(id -u)" = 0 ]; then apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null
  else sudo apt-get update -q >/dev/null && sudo apt-get install -y -q "$@" >/dev/null; fi
}

wait_ready() { # seconds
  local deadline=$((SECONDS + $1))
  until answering; do
    if ((SECONDS >= deadline)); then log "kinesalite did not answer on 127.0.0.1:$PORT (see $LOGFILE)"; return 1; fi
    sleep 0.1
  done
}

install() {
  local stamp=node_modules/.package-lock.json
  if [ ! -d node_modules/kinesalite ] || [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
    command -v npm >/dev/null || apt_install nodejs npm
    log "installing kinesalite (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error >&2
  fi
}

start() {
  if answering; then log "kinesalite already answering on 127.0.0.1:$PORT"; return; fi
  install
  log "starting kinesalite on 127.0.0.1:$PORT"
  nohup node scripts/kinesalite.js "$PORT" ${KINESALITE_DATA:+"$KINESALITE_DATA"} >"$LOGFILE" 2>&1 &
  echo $! >"$PIDFILE"
  wait_ready 30
}

stop() {
  [ -f "$PIDFILE" ] || return 0
  local pid deadline
  pid=$(cat "$PIDFILE")
  if kill "$pid" 2>/dev/null; then
    deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS >= deadline)); then kill -9 "$pid" 2>/dev/null || true; fi
      if ((SECONDS >= deadline + 5)); then log "kinesalite (pid $pid) did not exit"; return 1; fi
      sleep 0.1
    done
  fi
  rm -f "$PIDFILE"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  wait) wait_ready 30 ;;
  *) echo "usage: $0 start|stop|wait [port]" >&2; exit 2 ;;
esac
