// Command bench measures redis-proxy side by side with redis-server itself
// and the peers a user would pick instead, and rewrites the generated section
// of BENCHMARKS.md with the results.
//
// It starts its own redis-server with keys loaded, redis-proxy in front of it
// twice (every GET a hit: the keys are read once beforehand and --ttl is long;
// every GET a miss: --capacity 0, so nothing is cached), twemproxy
// (nutcracker) and webdis if installed, and a bare gnet responder (the
// ceiling), all on loopback, then drives them with redis-benchmark and wrk.
// Each configuration runs -runs times and the median is reported, with its
// ratio to redis-server measured in the same run, since absolute numbers drift
// on shared machines. Missing peers are skipped with a note, never faked.
//
// Usage: go run ./bench [-quick] [-mem] [-out BENCHMARKS.md]   (make bench, make bench-quick, make membench)
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const (
	keys      = 10000
	valueSize = 100
)

// settings are the sizes of one benchmark run.
type settings struct {
	runs                    int // repetitions of each configuration (median reported)
	requestsP1, requestsP16 int // redis-benchmark -n for -P 1 and -P 16
	sweepRequests           int
	wrkDuration             time.Duration
	sweepClients            []int // client counts of the connections sweep
	writes                  int   // writes timed for staleness
}

var (
	quick    = flag.Bool("quick", false, "one run of each configuration, smaller counts (under 2 minutes)")
	memory   = flag.Bool("mem", false, "measure RSS per cached key (proxy and redis-server) instead")
	out      = flag.String("out", "BENCHMARKS.md", "file whose generated section is rewritten")
	proxyBin = flag.String("proxy", "bin/redis-proxy", "the redis-proxy binary")
	ceilBin  = flag.String("ceiling", "bin/ceiling", "the bare gnet responder binary (go build ./bench/ceiling)")
)

// cleanup stops what the benchmark started; fatalf runs it before exiting.
var cleanup = func() {}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	cleanup()
	os.Exit(1)
}

func main() {
	flag.Parse()
	s := settings{runs: 3, requestsP1: 150_000, requestsP16: 1_500_000, sweepRequests: 100_000,
		wrkDuration: 5 * time.Second, sweepClients: []int{1, 8, 50, 200, 1000}, writes: 10000}
	if *quick {
		s = settings{runs: 1, requestsP1: 40_000, requestsP16: 300_000, sweepRequests: 20_000,
			wrkDuration: 2 * time.Second, sweepClients: []int{1, 50, 1000}, writes: 1000}
	}
	for _, tool := range []string{"redis-server", "redis-benchmark", "wrk", *proxyBin, *ceilBin} {
		if _, err := exec.LookPath(tool); err != nil {
			fatalf("%s not found (make deps; make build)", tool)
		}
	}
	if *memory {
		churnFor := 60 * time.Second
		if *quick {
			churnFor = 10 * time.Second
		}
		m := memBench(500_000, churnFor)
		if err := writeSection(*out, memBegin, memEnd, m.markdown()); err != nil {
			fatalf("%v", err)
		}
		fmt.Print(m.markdown())
		return
	}
	dir, err := os.MkdirTemp("", "redis-proxy-bench-")
	if err != nil {
		fatalf("%v", err)
	}
	lb := &lab{dir: dir}
	cleanup = func() { lb.stopAll() } // the logs stay in dir for a look
	defer func() { lb.stopAll(); os.RemoveAll(dir) }()

	started := time.Now()
	redis := lb.startRedis()
	pprofAddr := freeAddr()
	hit := lb.startProxy("redis-proxy (hits)", *proxyBin, redis.addr, "--ttl", "1h", "--capacity", "100000", "--admin-listen", pprofAddr, "--pprof")
	miss := lb.startProxy("redis-proxy (misses)", *proxyBin, redis.addr, "--capacity", "0")
	missNoTTL := lb.startProxy("redis-proxy (misses, --respect-redis-ttl=false)", *proxyBin, redis.addr, "--capacity", "0", "--respect-redis-ttl=false")
	ttlOnly := lb.startProxy("redis-proxy (hits, TTL only)", *proxyBin, redis.addr, "--ttl", "1h", "--capacity", "100000", "--invalidation=false")
	twem := lb.startTwemproxy(redis.addr)
	webdis := lb.startWebdis(redis.addr)
	ceilAddr := freeAddr()
	ceiling := lb.start("gnet ceiling", ceilAddr, *ceilBin, "-listen", ceilAddr)
	for _, t := range compact(hit, miss, missNoTTL, ttlOnly, twem, webdis) {
		t.backend = redis // their server CPU includes what they cost Redis
	}
	load(redis, keys, valueSize, hit, ttlOnly)

	rep := &report{settings: s, started: started, proxyFlags: map[string]string{
		hit.name:  "--ttl 1h --capacity 100000",
		miss.name: "--capacity 0",
	}}
	rep.notes = append(rep.notes, peerNote("twemproxy", "nutcracker", twem), peerNote("webdis", "webdis", webdis))

	// RESP: redis-benchmark -t get, 50 clients, -P 1 and -P 16.
	respTargets := compact(redis, twem, hit, miss, ceiling)
	for _, p := range []int{1, 16} {
		n := s.requestsP1
		if p == 16 {
			n = s.requestsP16
		}
		for _, t := range respTargets {
			r := median(s.runs, func() result { return redisBenchmark(t, keys, 50, p, n) })
			rep.resp = append(rep.resp, row{target: t.name, pipeline: p, clients: 50, result: r})
			progress("RESP -P %d %-24s %s", p, t.name, r)
		}
		rep.commands = append(rep.commands, strings.Join(redisBenchmarkArgs(&target{addr: "127.0.0.1:PORT"}, keys, 50, p, n), " "))
	}

	// HTTP: wrk, 2 threads, 50 connections, random keys.
	proxyScript, webdisScript := wrkScript(dir, "/", keys), wrkScript(dir, "/GET/", keys)
	for _, t := range compact(hit, miss, webdis, ceiling) {
		script := proxyScript
		if t == webdis {
			script = webdisScript
		}
		r := median(s.runs, func() result { return wrkRun(t, script, 50, s.wrkDuration) })
		rep.http = append(rep.http, row{target: t.name, clients: 50, result: r})
		progress("HTTP %-24s %s", t.name, r)
	}
	rep.commands = append(rep.commands, strings.Join(wrkArgs(&target{addr: "127.0.0.1:PORT"}, "keys.lua", 50, s.wrkDuration), " ")+
		"   (keys.lua: GET /key:%012d, a random key of "+fmt.Sprint(keys)+"; /GET/key:... for webdis)")

	// Connections sweep, -P 1.
	for _, c := range s.sweepClients {
		for _, t := range compact(redis, hit, twem) {
			r := median(s.runs, func() result { return redisBenchmark(t, keys, c, 1, max(s.sweepRequests, 50*c)) })
			rep.sweep = append(rep.sweep, row{target: t.name, clients: c, pipeline: 1, result: r})
			progress("sweep -c %-4d %-24s %s", c, t.name, r)
		}
	}

	// Event loops: 1..N, sharing the CPUs and on CPUs of their own.
	rep.loops = loopsSweep(lb, redis, s)
	rep.options = optionsCost(lb, redis, s)
	rep.cluster = clusterCost(lb, redis, s)

	// Coherence: staleness after a write, and the hit path under a write mix.
	rep.staleness = staleness(redis, hit, s.writes)
	progress("coherence: %s", rep.staleness)
	if base, ok := find(rep.resp, hit.name, 1, 50); ok {
		for _, pct := range []int{1, 10} {
			wps := max(1, int(base.rps)*pct/100)
			on := median(s.runs, func() result { return underWrites(redis, hit, wps, s.requestsP1) })
			off := median(s.runs, func() result { return underWrites(redis, ttlOnly, wps, s.requestsP1) })
			rep.writeMix = append(rep.writeMix, writeMixRow{pct, wps, on, off})
			progress("write mix %d%% (%d SET/s): invalidation on %s, off %s", pct, wps, on, off)
		}
	}
	rep.ttlCost = ttlCost(redis, s, miss, missNoTTL)
	for _, r := range rep.ttlCost {
		progress("TTL cost %-48s -P 1 %s, -P 16 %s, %.2f commands per miss", r.name, r.p1, r.p16, r.cmdsPerMiss)
	}
	rep.batching = batching(redis, miss, s)
	progress("all-miss batching: %s", rep.batching)
	rep.profile = profile(hit, pprofAddr, *proxyBin, s)
	rep.finished = time.Now()
	if err := rep.write(*out, filepath.Join(filepath.Dir(*out), "bench", "connections.svg")); err != nil {
		fatalf("%v", err)
	}
	fmt.Printf("bench: wrote %s in %v\n", *out, time.Since(started).Round(time.Second))
}

func (r result) String() string {
	if r.err != "" {
		return "FAILED: " + r.err
	}
	return fmt.Sprintf("%10.0f req/s  p50 %.3f ms", r.rps, r.p50ms)
}

func progress(format string, args ...any) { fmt.Printf(format+"\n", args...) }

// compact drops the peers that are not installed.
func compact(ts ...*target) []*target {
	var out []*target
	for _, t := range ts {
		if t != nil {
			out = append(out, t)
		}
	}
	return out
}

func peerNote(name, binary string, t *target) string {
	if t == nil {
		return fmt.Sprintf("%s skipped: `%s` is not installed (`make deps` installs it).", name, binary)
	}
	return ""
}
