#!/usr/bin/env bash
# `make compare`: redis-benchmark -t get -c 50, -P 1 and -P 16, against a
# redis-server and against redis-proxy in front of it with every key cached,
# run back to back on this machine. It starts its own redis-server and proxy
# on REDIS_PORT / PROXY_PORT (default 16379 / 16380) and stops them after.
# (The full side-by-side harness with peers and BENCHMARKS.md output is
# `make bench`, a later issue.)
set -euo pipefail
cd "$(dirname "$0")/.."

rport="${REDIS_PORT:-16379}"
pport="${PROXY_PORT:-16380}"
keys=10000
n1="${N_P1:-300000}"
n16="${N_P16:-2000000}"

redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --logfile "${TMPDIR:-/tmp}/redis-proxy-compare.log" >/dev/null
proxy_pid=""
cleanup() {
  [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
  redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done

# redis-benchmark -r N replaces __rand_int__ with a 12-digit number below N.
seq 0 $((keys - 1)) | awk '{ printf "SET key:%012d xxx\n", $1 }' | redis-cli -p "$rport" --pipe >/dev/null

start_proxy() { # extra flags
  bin/redis-proxy --listen "127.0.0.1:$pport" --redis "127.0.0.1:$rport" --ttl 1h --log-level warn "$@" &
  proxy_pid=$!
  for _ in $(seq 50); do redis-cli -p "$pport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  # Warm the cache: afterwards every key is a hit.
  redis-benchmark -p "$pport" -t get -r "$keys" -n 200000 -c 50 -P 16 -q >/dev/null
}
stop_proxy() { kill "$proxy_pid"; wait "$proxy_pid" || true; proxy_pid=""; }

bench() { # name port pipeline
  local n=$n1 line
  [ "$3" = 16 ] && n=$n16
  line=$(redis-benchmark -p "$2" -t get -r "$keys" -n "$n" -c 50 -P "$3" -q 2>/dev/null | tr '\r' '\n' | grep 'requests per second' | tail -1)
  printf '%-40s -P %-2s %s\n' "$1" "$3" "$line"
}

echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u '+%F %H:%M UTC'), redis-benchmark -t get -c 50 -r $keys"
for p in 1 16; do bench "redis-server direct" "$rport" "$p"; done
for loops in 0 1; do
  start_proxy --loops "$loops"
  name="redis-proxy, all hits, --loops $loops"
  [ "$loops" = 0 ] && name="redis-proxy, all hits, one loop per CPU"
  for p in 1 16; do bench "$name" "$pport" "$p"; done
  stop_proxy
done
