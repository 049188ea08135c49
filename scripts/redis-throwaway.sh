#!/usr/bin/env bash
# Start (or stop) a throwaway Redis on 127.0.0.1 for the tests (no persistence, no password).
#   scripts/redis-throwaway.sh start DIR PORT   -> prints the Redis URL
#   scripts/redis-throwaway.sh stop DIR
set -euo pipefail
cmd=$1 dir=$2
server=$(command -v redis-server || echo /usr/bin/redis-server)
case "$cmd" in
  start)
    port=$3
    mkdir -p "$dir"
    "$server" --bind 127.0.0.1 --port "$port" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
      --dir "$dir" --save "" --appendonly no --databases 64 --protected-mode yes >/dev/null
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
      sleep 0.05
    done
    echo "redis://127.0.0.1:$port/0"
    ;;
  stop)
    if [ -f "$dir/redis.pid" ]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
