package systemtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// Bad configuration exits non-zero at once with one line naming the setting.
func TestBadConfiguration(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{args: []string{"--nope"}, want: "--nope"},
		{args: []string{"--capacity", "-1"}, want: "--capacity"},
		{args: []string{"--capacity", "lots"}, want: "-capacity"},
		{args: []string{"--ttl", "abc"}, want: "-ttl"},
		{args: []string{"--ttl", "0s"}, want: "--ttl"},
		{args: []string{"--max-clients", "0"}, want: "--max-clients"},
		{args: []string{"--max-parallel", "0"}, want: "--max-parallel"},
		{args: []string{"--loops", "-1"}, want: "--loops"},
		{args: []string{"--log-level", "loud"}, want: "--log-level"},
		{args: []string{"--redis", "no-port"}, want: "--redis"},
		{args: []string{"stray"}, want: "stray"},
		{env: "REDIS_PROXY_TTL=soon", want: "REDIS_PROXY_TTL (--ttl)"},
		{env: "REDIS_PROXY_CAPACITY=-5", want: "--capacity"},
		// Sizes and durations too large for their type are refused with the range, not wrapped.
		{args: []string{"--max-memory", "99999999TB"}, want: "--max-memory: must be 0 (no limit) to 9223372036854775807 bytes"},
		{env: "REDIS_PROXY_MAX_MEMORY=99999999TB", want: "REDIS_PROXY_MAX_MEMORY (--max-memory): must be 0 (no limit) to 9223372036854775807 bytes"},
		{args: []string{"--ttl", "2562048h"}, want: "--ttl: must be 1ns to 2562047h47m16.854775807s"},
		// The longest TTL is accepted: the binary gets as far as listening.
		{args: []string{"--ttl", "2562047h47m16.854775807s", "--listen", busy.Addr().String(), "--admin-listen", ""}, want: "--listen " + busy.Addr().String() + ": address already in use"},
		{args: []string{"--listen", busy.Addr().String(), "--admin-listen", ""}, want: "--listen " + busy.Addr().String() + ": address already in use"},
		{args: []string{"--admin-listen", "nowhere"}, want: "--admin-listen: must be host:port"},
		{args: []string{"--admin-listen", busy.Addr().String()}, want: "--admin-listen " + busy.Addr().String() + ": listen tcp " + busy.Addr().String() + ": bind: address already in use"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(ctx, binary(t), tc.args...)
		cmd.Env = os.Environ()
		if tc.env != "" {
			cmd.Env = append(cmd.Env, tc.env)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("%v %s: exit %v, want non-zero", tc.args, tc.env, err)
			continue
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], tc.want) || !strings.HasPrefix(lines[0], "redis-proxy: ") {
			t.Errorf("%v %s: stderr %q, want one line naming %q", tc.args, tc.env, stderr.String(), tc.want)
		}
	}
}

// Flags win over the environment.
func TestFlagOverridesEnv(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	port := redistest.FreePort(t)
	cmd := exec.Command(binary(t), "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", "error", "--admin-listen", "")
	cmd.Env = append(os.Environ(), "REDIS_PROXY_REDIS="+redis.Addr, "REDIS_PROXY_LISTEN=127.0.0.1:1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	eventually(t, "the proxy on the flag's port", func() string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err.Error()
		}
		c.Close()
		return ""
	})
	if got := respGet(dialRESP(t, addr), "k"); got != "v" {
		t.Fatalf("GET through REDIS_PROXY_REDIS: %q", got)
	}
}

// Without --loops the proxy starts half as many event loops as it has CPUs
// (GOMAXPROCS, which it inherits from this test), at least one, and INFO
// says how many.
func TestDefaultLoops(t *testing.T) {
	redis := redistest.Start(t)
	want := strconv.Itoa(max(1, runtime.GOMAXPROCS(0)/2))
	if got := proxyInfo(t, startProxy(t, redis.Addr, "--loops", "0").addr, "event_loops"); got != want {
		t.Errorf("default event_loops %s, want %s", got, want)
	}
	if got := proxyInfo(t, startProxy(t, redis.Addr, "--loops", "3").addr, "event_loops"); got != "3" {
		t.Errorf("--loops 3: event_loops %s", got)
	}
}

// SIGTERM: answers in flight are finished, then the process exits 0.
func TestGracefulShutdown(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "slow", "worth-waiting-for")
	p := startProxy(t, redis.Addr, "--backend-timeout", "5s")
	rc := dialRESP(t, p.addr)
	respGet(rc, "warm") // the connection to Redis is up
	other := dialRESP(t, p.addr)
	other.do("PING")
	redis.Pause()
	defer redis.Resume() // on a failure below, not to leave it stopped
	rc.send([]string{"GET", "slow"})
	awaitInfo(t, p.addr, "the fetch in flight, Redis hung", "backend_answers_pending", "1")
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	// Draining: a new connection is closed at once instead of answered.
	eventually(t, "the proxy draining after SIGTERM", func() string {
		probe := dialRESP(t, p.addr)
		defer probe.c.Close()
		probe.send([]string{"PING"})
		_ = probe.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if v, _, err := probe.r.ReadValue(); err == nil {
			return "a new connection answered " + show(v)
		}
		return ""
	})
	// Every connection stops taking requests: one that asks after SIGTERM
	// is closed, not answered (a stream of new misses would otherwise keep
	// the proxy from ever finishing).
	_, _ = other.c.Write([]byte("PING\r\n")) // may fail: the proxy may have closed it already
	other.expectClosed()
	select {
	case err := <-p.exited:
		p.exited <- err
		t.Fatalf("exited (%v) with an answer in flight:\n%s", err, p.stderr)
	default:
	}
	redis.Resume()
	resumed := time.Now()
	if got := show(rc.read()); got != "worth-waiting-for" {
		t.Fatalf("in-flight answer: %q", got)
	}
	if err := p.stop(); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.stderr)
	}
	// Well under the 5 s of --backend-timeout and --shutdown-timeout: the
	// proxy exits once the answer is out, not when a timeout runs out.
	if d := time.Since(resumed); d > 3*time.Second {
		t.Fatalf("exit took %v after the answer could be sent", d)
	}
	if _, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
		t.Fatal("still accepting after exit")
	}
}

// --version prints the version stamped into the build and exits 0.
func TestVersion(t *testing.T) {
	out, err := exec.Command(binary(t), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "redis-proxy ") || len(strings.TrimSpace(string(out))) <= len("redis-proxy ") {
		t.Fatalf("--version: %v %q", err, out)
	}
}
