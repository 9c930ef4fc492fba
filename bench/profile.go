// Looking inside a run: a CPU profile of the all-hit proxy taken through its
// --pprof endpoint while redis-benchmark drives it, reduced to the top entries
// by `go tool pprof -top`; and how well the all-miss proxy batches its GETs,
// read from Redis's own counters.

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const profileSeconds = 3

func profile(t *target, pprofAddr, bin string, s settings) string {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := exec.CommandContext(ctx, "redis-benchmark", redisBenchmarkArgs(t, keys, 50, 16, 100_000_000)[1:]...)
	if err := load.Start(); err != nil {
		return "profile not taken: " + err.Error()
	}
	defer func() { cancel(); _ = load.Wait() }()
	time.Sleep(500 * time.Millisecond) // past redis-benchmark's start-up
	res, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, profileSeconds))
	if err != nil {
		return "profile not taken: " + err.Error()
	}
	defer res.Body.Close()
	file := filepath.Join(os.TempDir(), "redis-proxy-hits.pprof")
	f, err := os.Create(file)
	if err != nil {
		return "profile not taken: " + err.Error()
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return "profile not taken: " + err.Error()
	}
	f.Close()
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=12", bin, file).CombinedOutput()
	if err != nil {
		return "pprof failed: " + err.Error()
	}
	// Keep the table: the header line and the rows after it.
	text := string(out)
	if i := strings.Index(text, "      flat"); i >= 0 {
		text = text[i:]
	}
	return fmt.Sprintf("%s(saved as %s)", text, file)
}

// batching drives the all-miss proxy with redis-benchmark -P 16 and reports,
// from Redis's INFO, how many GETs arrived per read Redis made: the round
// trips a miss costs, inverted.
func batching(redis, miss *target, s settings) string {
	before := redisCounters(redis)
	if r := redisBenchmark(miss, keys, 50, 16, s.requestsP16/4); r.err != "" {
		return "not measured: " + r.err
	}
	after := redisCounters(redis)
	gets, reads := after["get"]-before["get"], after["reads"]-before["reads"]
	if reads == 0 {
		return "not measured: Redis counted no reads"
	}
	return fmt.Sprintf("%d GETs reached Redis in %d reads: %.1f GETs per round trip", gets, reads, float64(gets)/float64(reads))
}

// redisCounters reads GET calls and read events from Redis's INFO.
func redisCounters(redis *target) map[string]int64 {
	out, err := run(10*time.Second, "redis-cli", "-p", redis.port(), "INFO", "all")
	counters := map[string]int64{}
	if err != nil {
		return counters
	}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "total_reads_processed:"); ok {
			counters["reads"], _ = strconv.ParseInt(v, 10, 64)
		}
		if rest, ok := strings.CutPrefix(line, "cmdstat_"); ok { // cmdstat_get:calls=N,...
			name, stats, _ := strings.Cut(rest, ":calls=")
			v, _, _ := strings.Cut(stats, ",")
			counters[name], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return counters
}

// ttlCostRow is the all-miss path with and without a PTTL per GET.
type ttlCostRow struct {
	name        string
	p1, p16     result
	cmdsPerMiss float64
}

// ttlCost measures what --respect-redis-ttl costs the miss path: throughput
// of an all-miss proxy with it and without it, and the commands each miss
// sends to Redis, from Redis's own counters.
func ttlCost(redis *target, s settings, proxies ...*target) []ttlCostRow {
	var rows []ttlCostRow
	for _, p := range proxies {
		before := redisCounters(redis)
		row := ttlCostRow{name: p.name}
		row.p1 = median(s.runs, func() result { return redisBenchmark(p, keys, 50, 1, s.requestsP1/2) })
		row.p16 = median(s.runs, func() result { return redisBenchmark(p, keys, 50, 16, s.requestsP16/4) })
		after := redisCounters(redis)
		gets := after["get"] - before["get"]
		if gets > 0 {
			row.cmdsPerMiss = float64(gets+after["pttl"]-before["pttl"]) / float64(gets)
		}
		rows = append(rows, row)
	}
	return rows
}
