#!/usr/bin/env bash
# `make run`: runs bin/redis-proxy in the foreground with its defaults (or
# REDIS_PROXY_* and the arguments given). If nothing answers on the Redis
# address (REDIS_PROXY_REDIS, default 127.0.0.1:6379), it first starts a local
# redis-server there, without persistence, and stops it when the proxy exits.
set -euo pipefail
cd "$(dirname "$0")/.."

redis="${REDIS_PROXY_REDIS:-127.0.0.1:6379}"
listen="${REDIS_PROXY_LISTEN:-127.0.0.1:6380}"
hostport="${redis#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
rhost="${hostport%:*}"; rport="${hostport##*:}"

started=""
if ! redis-cli -h "$rhost" -p "$rport" ping >/dev/null 2>&1; then
  if [ "$rhost" != "127.0.0.1" ] && [ "$rhost" != "localhost" ]; then
    echo "Redis at $redis does not answer; start it, or point REDIS_PROXY_REDIS elsewhere." >&2
    exit 1
  fi
  command -v redis-server >/dev/null || { echo "redis-server not found: run 'make deps'" >&2; exit 1; }
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --logfile "${TMPDIR:-/tmp}/redis-proxy-run-redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  started="$rport"
  echo "started redis-server on 127.0.0.1:$rport (stopped again when the proxy exits)"
fi

port="${listen##*:}"
cat <<MSG
redis-proxy on $listen, backed by $redis. Try, from another terminal:
  redis-cli -p $rport SET greeting hello        # write to Redis itself
  redis-cli -p $port GET greeting               # read through the proxy (RESP)
  curl -i http://$listen/greeting        # read through the proxy (HTTP)
  redis-benchmark -p $port -t get -q            # load it
  curl http://127.0.0.1:9380/metrics            # its metrics (the admin server; also /healthz, /readyz)
Ctrl-C stops it.
MSG

status=0
bin/redis-proxy "$@" || status=$?
if [ -n "$started" ]; then redis-cli -p "$started" shutdown nosave >/dev/null 2>&1 || true; fi
exit $status
