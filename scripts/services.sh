#!/usr/bin/env bash
# Start (or stop) the local services the test suite talks to, all on 127.0.0.1.
# A service already answering is used as it is; one that is missing is installed and started.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.services
mkdir -p "$STATE"

log() { printf 'services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds name
  local deadline=$((SECONDS + $2))
  until port_open "$1"; do
    if ((SECONDS >= deadline)); then log "$3 did not come up on 127.0.0.1:$1"; return 1; fi
    sleep 0.2
  done
}

apt_install() {
  log "installing $* from Debian packages"
  if [ "$(id -u)" = 0 ]; then apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null
  else sudo apt-get update -q >/dev/null && sudo apt-get install -y -q "$@" >/dev/null; fi
}

start_redis() {
  if port_open 6379; then log "redis already answering on 127.0.0.1:6379"; return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$PWD/$STATE" --pidfile "$PWD/$STATE/redis.pid" --logfile "$PWD/$STATE/redis.log"
  wait_port 6379 20 redis
}

stop_redis() {
  if [ -f "$STATE/redis.pid" ]; then kill "$(cat "$STATE/redis.pid")" 2>/dev/null || true; rm -f "$STATE/redis.pid"; fi
}

case "${1:-start}" in
  start) start_redis; bash scripts/kafka.sh start; bash scripts/kinesis.sh start ;;
  stop) stop_redis; bash scripts/kafka.sh stop; bash scripts/kinesis.sh stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
