# redis-proxy: build, run, test. `make help` lists the targets.

GO          ?= go
BIN         := bin/redis-proxy
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X github.com/redis-proxy/redis-proxy/server.Version=$(VERSION)
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck

.PHONY: help build run test lint deps fuzz microbench gcbench membench bench bench-quick docker-test clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

build: ## build bin/redis-proxy
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/redis-proxy

run: build ## start redis-server on 6379 if none answers, then the proxy on 6380 (flags: ARGS='--ttl 1m')
	@scripts/run.sh $(ARGS)

# Unit tests and the system tests run under the race detector; then the
# tests that -race would distort (memory sizes: TestMemoryOverhead and
# TestClearGivesMemoryBack, built !race) run without it, and the Dockerfile's
# build step on its own (a full build, kept apart from the timing-sensitive
# tests); the system tests then run once more against a race-enabled build of
# the binary, which exits (code 66) at the first data race in the proxy
# itself. A race is reported when it happens; the race runtime's 1 s wait at
# exit (atexit_sleep_ms) only gives goroutines still running then a chance to
# race, and the proxy has stopped its own by then: 50 ms of it, not a second
# for each of the hundred proxies the system tests start.
test: lint build ## lint, then every test: unit, fuzz seeds, system tests against real redis-server, -race
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run 'TestMemoryOverhead|TestClearGivesMemoryBack' ./lru/
	DOCKER_BUILD_STEP=1 $(GO) test -count=1 -run TestDockerfileBuildStep ./docker/
	$(GO) build -race -o bin/redis-proxy-race ./cmd/redis-proxy
	REDIS_PROXY_BIN=$(CURDIR)/bin/redis-proxy-race GORACE="halt_on_error=1 atexit_sleep_ms=50" $(GO) test -count=1 ./systemtest/

lint: ## gofmt, go vet, staticcheck
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	@test -x $(STATICCHECK) || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	$(STATICCHECK) ./...

deps: ## install redis-server, redis-tools, wrk, stunnel4, nutcracker, webdis (apt-get) and Go modules
	@scripts/deps.sh

FUZZTIME ?= 30s
fuzz: ## run every fuzz target for FUZZTIME each (default 30s); a failing input is saved in testdata/fuzz
	@for target in proto:FuzzParseCommand proto:FuzzParseRequest proto:FuzzJSONAnswer proto:FuzzDetect lru:FuzzOps; do \
	  pkg=$${target%%:*}; name=$${target##*:}; \
	  echo "== $$pkg $$name ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) ./$$pkg/ || exit 1; \
	done

microbench: ## hot-path benchmarks with allocation counts
	$(GO) test -run '^$$' -bench . -benchmem -skip BenchmarkGC ./proto/ ./lru/ ./server/

gcbench: ## GC cost with 1M and 5M cached keys, this cache vs map+list (about a minute)
	$(GO) test -run '^$$' -bench BenchmarkGC -benchtime 5x ./lru/

docker-test: ## build the image and run redis + proxy + a smoke test with docker compose (needs docker and its compose plugin)
	docker compose -f docker/compose.yaml up --build --abort-on-container-exit --exit-code-from smoke

membench: build ## RSS per cached key, the proxy and redis-server with the same 500k keys, then 60 s of churn; rewrites its BENCHMARKS.md section (about 2 min)
	$(GO) run ./bench -mem

bench: build ## side-by-side benchmarks (redis-server, twemproxy, webdis, the proxy); rewrites BENCHMARKS.md (under 20 min)
	$(GO) build -o bin/ceiling ./bench/ceiling
	$(GO) run ./bench

bench-quick: build ## the same, one run each and smaller counts (under 2 min)
	$(GO) build -o bin/ceiling ./bench/ceiling
	$(GO) run ./bench -quick

clean: ## remove build output
	rm -rf bin
