package main

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseRedisBenchmark(t *testing.T) {
	out := "WARNING: something\n\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n" +
		"\"GET\",\"84602.37\",\"0.3\",\"0.1\",\"0.287\",\"0.5\",\"0.7\",\"2.0\"\n"
	if r := parseRedisBenchmark(out); r.err != "" || r.rps != 84602.37 || r.p50ms != 0.287 {
		t.Fatalf("%+v", r)
	}
	if r := parseRedisBenchmark("Could not connect to Redis\n"); r.err == "" {
		t.Fatal("no CSV should be a failure")
	}
}

func TestParseWrk(t *testing.T) {
	out := `Running 2s test @ http://127.0.0.1:1/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.01us  300.11us   9.10ms   90.00%
  Latency Distribution
     50%  348.00us
     75%  450.00us
  195366 requests in 2.00s, 30.00MB read
Requests/sec:  97683.12
Transfer/sec:     15.00MB
`
	if r := parseWrk(out); r.err != "" || r.rps != 97683.12 || math.Abs(r.p50ms-0.348) > 1e-9 {
		t.Fatalf("%+v", r)
	}
	if r := parseWrk(strings.Replace(out, "Requests/sec", "  Non-2xx or 3xx responses: 12\nRequests/sec", 1)); r.err == "" {
		t.Fatal("non-2xx answers should fail the run")
	}
}

// The generated section is replaced in place; what surrounds it stays.
func TestReportWrite(t *testing.T) {
	dir := t.TempDir()
	md := filepath.Join(dir, "BENCHMARKS.md")
	if err := os.WriteFile(md, []byte("# Hand-written\n\nkept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := &report{settings: settings{runs: 1, sweepClients: []int{1, 50}},
		resp:  []row{{target: "redis-server", pipeline: 1, clients: 50, result: result{rps: 1000}}, {target: "redis-proxy (hits)", pipeline: 1, clients: 50, result: result{rps: 900}}},
		sweep: []row{{target: "redis-server", pipeline: 1, clients: 1, result: result{rps: 10}}, {target: "redis-proxy (hits)", pipeline: 1, clients: 50, result: result{rps: 20}}},
	}
	svg := filepath.Join(dir, "bench", "connections.svg")
	for range 2 {
		if err := rep.write(md, svg); err != nil {
			t.Fatal(err)
		}
	}
	text, _ := os.ReadFile(md)
	if strings.Count(string(text), beginMarker) != 1 || !strings.HasPrefix(string(text), "# Hand-written\n\nkept\n") ||
		!strings.Contains(string(text), "RESP hits / redis-server, -P 1: **0.90**") {
		t.Fatalf("report:\n%s", text)
	}
	if chart, err := os.ReadFile(svg); err != nil || !strings.Contains(string(chart), "<polyline") {
		t.Fatalf("chart: %v\n%s", err, chart)
	}
}

// A target's CPU time is read from /proc: this process has used some.
func TestCPUTicks(t *testing.T) {
	p, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; { // spend some CPU
	}
	self := &target{cmd: &exec.Cmd{Process: p}}
	if n := self.cpuTicks(); n <= 0 {
		t.Fatalf("cpuTicks = %d", n)
	}
	withBackend := &target{cmd: self.cmd, backend: self} // the same process twice
	if one, two := self.cpuTicks(), withBackend.cpuTicks(); two < 2*one {
		t.Fatalf("with a backend: %d, alone %d", two, one)
	}
}
