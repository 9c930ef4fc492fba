#!/usr/bin/env bash
# Installs what `make test`, `make run` and the benchmarks need, when missing:
# redis-server, redis-cli/redis-benchmark (redis-tools), wrk, stunnel (the
# TLS front the system tests put before the proxy), and the peers measured
# against, nutcracker (twemproxy) and webdis. Debian/Ubuntu via
# apt-get; elsewhere it says what to install. Then the Go modules and
# staticcheck.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

missing=()
have redis-server || missing+=(redis-server)
{ have redis-cli && have redis-benchmark; } || missing+=(redis-tools)
have wrk || missing+=(wrk)
{ have stunnel4 || have stunnel; } || missing+=(stunnel4)
have nutcracker || missing+=(nutcracker)
have webdis || missing+=(webdis)

if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "please install: ${missing[*]} (no apt-get here)" >&2
    exit 1
  fi
fi

go mod download
staticcheck="$(go env GOPATH)/bin/staticcheck"
[ -x "$staticcheck" ] || go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
echo "deps: all present"
