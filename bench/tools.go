// Driving the standard load generators and reading their results:
// redis-benchmark (--csv) for RESP and wrk (with a Lua script that spreads the
// keys) for HTTP. Every run is bounded: redis-benchmark by its request count
// and a timeout, wrk by its duration.

package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// result is one measurement: throughput and median latency.
type result struct {
	rps   float64
	p50ms float64
	cpuUS float64 // server CPU per request, µs: the target and the Redis behind it (0: not measured)
	err   string  // why there is no number, if there is none
}

func run(timeout time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("timed out after %v", timeout)
	}
	return string(out), err
}

// redisBenchmarkArgs is the redis-benchmark command line for a GET load on t.
func redisBenchmarkArgs(t *target, keys, clients, pipeline, requests int) []string {
	return []string{"redis-benchmark", "-p", t.port(), "-t", "get", "-r", strconv.Itoa(keys),
		"-c", strconv.Itoa(clients), "-P", strconv.Itoa(pipeline), "-n", strconv.Itoa(requests), "--csv"}
}

// redisBenchmark runs redis-benchmark -t get against t and returns its result.
// The server CPU per request is what t and its backend used over the run
// (from /proc), divided by the requests.
func redisBenchmark(t *target, keys, clients, pipeline, requests int) result {
	return redisBenchmarkWith(nil, t, keys, clients, pipeline, requests)
}

// redisBenchmarkWith is redisBenchmark with redis-benchmark's command line
// prefixed (by taskset, say).
func redisBenchmarkWith(prefix []string, t *target, keys, clients, pipeline, requests int) result {
	before := t.cpuTicks()
	out, err := run(3*time.Minute, append(prefix, redisBenchmarkArgs(t, keys, clients, pipeline, requests)...)...)
	if err != nil {
		return result{err: fmt.Sprintf("%v: %s", err, lastLine(out))}
	}
	r := parseRedisBenchmark(out)
	if after := t.cpuTicks(); before >= 0 && after >= 0 {
		r.cpuUS = float64(after-before) * 1e6 / clockTicks / float64(requests)
	}
	return r
}

// parseRedisBenchmark reads redis-benchmark --csv output.
func parseRedisBenchmark(out string) result {
	// The CSV header names the columns: "test","rps",...,"p50_latency_ms",...
	start := strings.Index(out, `"test"`)
	if start < 0 {
		return result{err: "no CSV in output: " + lastLine(out)}
	}
	rows, err := csv.NewReader(strings.NewReader(out[start:])).ReadAll()
	if err != nil || len(rows) < 2 {
		return result{err: fmt.Sprintf("unreadable CSV: %v", err)}
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	rps, _ := strconv.ParseFloat(rows[1][col["rps"]], 64)
	p50, _ := strconv.ParseFloat(rows[1][col["p50_latency_ms"]], 64)
	return result{rps: rps, p50ms: p50}
}

// wrkScript writes a Lua script that GETs a random one of the keys under
// prefix ("/" for the proxy, "/GET/" for webdis).
func wrkScript(dir, prefix string, keys int) string {
	path := filepath.Join(dir, "keys"+strings.ReplaceAll(prefix, "/", "_")+".lua")
	lua := fmt.Sprintf(`math.randomseed(os.time())
request = function()
  return wrk.format("GET", string.format("%skey:%%012d", math.random(0, %d)))
end
`, prefix, keys-1)
	if err := os.WriteFile(path, []byte(lua), 0o644); err != nil {
		fatalf("%v", err)
	}
	return path
}

func wrkArgs(t *target, script string, connections int, d time.Duration) []string {
	return []string{"wrk", "-t2", "-c" + strconv.Itoa(connections), "-d" + d.String(), "--latency",
		"-s", script, "http://" + t.addr + "/"}
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP50 = regexp.MustCompile(`\n\s+50%\s+([0-9.]+)(us|ms|s)`)
	wrkBad = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)|Socket errors: .*`)
)

func wrkRun(t *target, script string, connections int, d time.Duration) result {
	out, err := run(d+time.Minute, wrkArgs(t, script, connections, d)...)
	if err != nil {
		return result{err: fmt.Sprintf("%v: %s", err, lastLine(out))}
	}
	return parseWrk(out)
}

// parseWrk reads wrk --latency output; non-2xx answers or socket errors make
// the run a failure.
func parseWrk(out string) result {
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return result{err: "no Requests/sec in output: " + lastLine(out)}
	}
	if bad := wrkBad.FindString(out); bad != "" && !strings.HasPrefix(bad, "Socket errors: connect 0, read 0, write 0, timeout 0") {
		return result{err: bad}
	}
	r := result{}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if p := wrkP50.FindStringSubmatch(out); p != nil {
		v, _ := strconv.ParseFloat(p[1], 64)
		r.p50ms = v * map[string]float64{"us": 1e-3, "ms": 1, "s": 1e3}[p[2]]
	}
	return r
}

// median runs measure n times and returns the run with the median
// throughput; a failed run fails the whole measurement.
func median(n int, measure func() result) result {
	var runs []result
	for range n {
		r := measure()
		if r.err != "" {
			return r
		}
		runs = append(runs, r)
	}
	return middle(runs)
}

// middle returns the run of median throughput (the first failure, if any).
func middle(runs []result) result {
	for _, r := range runs {
		if r.err != "" {
			return r
		}
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].rps < runs[j].rps })
	return runs[len(runs)/2]
}

func lastLine(s string) string {
	s = strings.TrimSpace(strings.ReplaceAll(s, "\r", "\n"))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
