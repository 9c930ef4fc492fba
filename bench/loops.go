// The event-loop sweep: the proxy (all hits) with 1..N loops, first sharing
// every CPU with the load generator as in the rest of the run, then with the
// proxy and redis-benchmark on separate CPUs (taskset), so that the curve
// shows what the loops do with CPUs of their own.

package main

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
)

// loopsRow is the proxy with a given number of loops, on the given CPUs.
type loopsRow struct {
	loops         int
	proxyCPUs     string // taskset list for the proxy; "" = all CPUs
	benchCPUs     string // taskset list for redis-benchmark; "" = all CPUs
	p1, p16       result
	defaultChoice bool // the number of loops the proxy picks itself on these CPUs
}

// loopsSweep starts a fresh hit proxy for each layout in turn, loads its
// cache, and drives it at -P 1 and -P 16.
func loopsSweep(lb *lab, redis *target, s settings) []loopsRow {
	n := runtime.NumCPU()
	var rows []loopsRow
	layout := func(proxyCPUs, benchCPUs string, cpus, upTo int) {
		for l := 1; l <= upTo; l++ {
			addr := freeAddr()
			argv := []string{*proxyBin, "--listen", addr, "--redis", redis.addr, "--ttl", "1h", "--capacity", "100000", "--loops", strconv.Itoa(l), "--admin-listen", ""}
			if proxyCPUs != "" {
				argv = append([]string{"taskset", "-c", proxyCPUs}, argv...)
			}
			t := lb.start(fmt.Sprintf("redis-proxy (%d loops on %q)", l, proxyCPUs), addr, argv...)
			t.backend = redis
			load(redis, keys, valueSize, t)
			r := loopsRow{loops: l, proxyCPUs: proxyCPUs, benchCPUs: benchCPUs, defaultChoice: l == max(1, cpus/2)} // server.DefaultLoops' rule, on these CPUs
			r.p1 = median(s.runs, func() result { return pinnedBenchmark(benchCPUs, t, 1, s.requestsP1/2) })
			r.p16 = median(s.runs, func() result { return pinnedBenchmark(benchCPUs, t, 16, s.requestsP16/2) })
			progress("loops %d, proxy on CPUs %q, redis-benchmark on %q: -P 1 %s, -P 16 %s", l, proxyCPUs, benchCPUs, r.p1, r.p16)
			rows = append(rows, r)
			lb.stop(t)
		}
	}
	layout("", "", n, n)
	if n >= 2 {
		// The proxy on the first half of the CPUs, the load generator on
		// the rest; one loop more than the proxy's CPUs shows the cost of
		// oversubscribing them.
		half := n / 2
		layout(cpuList(0, half), cpuList(half, n), half, half+1)
	}
	return rows
}

// pinnedBenchmark is redisBenchmark with redis-benchmark run under taskset
// on cpus ("" = no taskset).
func pinnedBenchmark(cpus string, t *target, pipeline, requests int) result {
	var taskset []string
	if cpus != "" {
		taskset = []string{"taskset", "-c", cpus}
	}
	return redisBenchmarkWith(taskset, t, keys, 50, pipeline, requests)
}

// cpuList is the taskset list "from-(to-1)" of CPU numbers.
func cpuList(from, to int) string {
	if to-from == 1 {
		return strconv.Itoa(from)
	}
	return strconv.Itoa(from) + "-" + strconv.Itoa(to-1)
}

func (rep *report) loopsMarkdown(w func(string, ...any)) {
	if len(rep.loops) == 0 {
		return
	}
	w("\n### Event loops: the proxy (hits) with 1..N loops\n\n")
	w("redis-benchmark -t get -c 50; server CPU is the proxy's, per request. The default row is the loop count the proxy picks by itself on the CPUs it is given (half of them, at least one).\n\n")
	w("| loops | proxy on CPUs | redis-benchmark on CPUs | -P 1 req/s | CPU µs/req | -P 16 req/s | CPU µs/req |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rep.loops {
		name := strconv.Itoa(r.loops)
		if r.defaultChoice {
			name += " (default)"
		}
		w("| %s | %s | %s | %s | %s | %s | %s |\n", name, orAll(r.proxyCPUs), orAll(r.benchCPUs),
			cell(r.p1, r.p1.err == ""), cpuCell(r.p1, r.p1.err == ""), cell(r.p16, r.p16.err == ""), cpuCell(r.p16, r.p16.err == ""))
	}
}

func orAll(cpus string) string {
	if cpus == "" {
		return "all"
	}
	return strings.ReplaceAll(cpus, "-", "–")
}
