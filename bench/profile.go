// Profiling the hit path under load: a CPU profile of the all-hit proxy taken
// through its --pprof endpoint while redis-benchmark drives it, reduced to
// the top entries by `go tool pprof -top`.

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
