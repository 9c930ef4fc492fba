package backend

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

func newClient(t *testing.T, addr string, timeout time.Duration) *Client {
	t.Helper()
	c, err := New(Config{Addr: addr, Timeout: timeout, MaxParallel: 8, QueueLen: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// fetch runs one Fetch and waits for its result.
func fetch(t *testing.T, c *Client, key string) Result {
	t.Helper()
	ch := make(chan Result, 1)
	if err := c.Fetch(key, func(r Result) { ch <- r }); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("fetch never completed")
	}
	return Result{}
}

func TestFetch(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	redis.Do("SET", "empty", "")
	redis.Do("RPUSH", "list", "x")
	c := newClient(t, redis.Addr, time.Second)

	if r := fetch(t, c, "k"); !r.Found || string(r.Value) != "v" || r.Err != nil {
		t.Fatalf("k: %+v", r)
	}
	if r := fetch(t, c, "empty"); !r.Found || len(r.Value) != 0 || r.Err != nil {
		t.Fatalf("empty: %+v", r)
	}
	if r := fetch(t, c, "missing"); r.Found || r.Err != nil {
		t.Fatalf("missing: %+v", r)
	}
	r := fetch(t, c, "list")
	var reply ReplyError
	if !errors.As(r.Err, &reply) || !strings.HasPrefix(string(reply), "WRONGTYPE ") {
		t.Fatalf("list: %+v", r)
	}
	if st := c.Stats(); st.Fetches != 4 || st.Errors != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFetchURL(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	c := newClient(t, "redis://"+redis.Addr+"/0", time.Second)
	if r := fetch(t, c, "k"); string(r.Value) != "v" {
		t.Fatalf("%+v", r)
	}
}

func TestBadAddress(t *testing.T) {
	for _, addr := range []string{"nohostport", "redis://[::1"} {
		if _, err := New(Config{Addr: addr, Timeout: time.Second, MaxParallel: 1, QueueLen: 1}); err == nil {
			t.Errorf("%q accepted", addr)
		}
	}
}

// With Redis gone, a fetch fails fast as unavailable; once Redis is back, the
// same client serves again without being rebuilt.
func TestRedisDownAndBack(t *testing.T) {
	redis := redistest.Start(t)
	c := newClient(t, redis.Addr, time.Second)
	redis.Do("SET", "k", "v")
	if r := fetch(t, c, "k"); !r.Found {
		t.Fatalf("%+v", r)
	}
	redis.Stop()
	start := time.Now()
	r := fetch(t, c, "k")
	var unavailable *UnavailableError
	if !errors.As(r.Err, &unavailable) {
		t.Fatalf("with Redis down: %+v", r)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("failing took %v; it should not wait for the timeout", d)
	}
	redis.Restart()
	redis.Do("SET", "k", "v2")
	deadline := time.Now().Add(5 * time.Second)
	for {
		r = fetch(t, c, "k")
		if r.Found && string(r.Value) == "v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A Redis that hangs (SIGSTOP) gives ErrTimeout after the fetch timeout.
func TestTimeout(t *testing.T) {
	redis := redistest.Start(t)
	c := newClient(t, redis.Addr, 200*time.Millisecond)
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	redis.Pause()
	defer redis.Resume()
	if r := fetch(t, c, "k"); !errors.Is(r.Err, ErrTimeout) {
		t.Fatalf("%+v", r)
	}
}

// Past its queue, Fetch refuses at once instead of blocking the caller.
func TestOverloaded(t *testing.T) {
	redis := redistest.Start(t)
	c, err := New(Config{Addr: redis.Addr, Timeout: 2 * time.Second, MaxParallel: 1, QueueLen: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	redis.Pause()
	var wg sync.WaitGroup
	refused := 0
	for range 10 {
		wg.Add(1)
		if err := c.Fetch("k", func(Result) { wg.Done() }); errors.Is(err, ErrOverloaded) {
			refused++
			wg.Done()
		}
	}
	redis.Resume()
	wg.Wait()
	if refused < 8 {
		t.Fatalf("only %d of 10 fetches refused with one worker and a queue of one", refused)
	}
}

func TestWithCode(t *testing.T) {
	for in, want := range map[string]string{
		"WRONGTYPE Operation against a key": "WRONGTYPE Operation against a key",
		"unknown command":                   "ERR unknown command",
		"NOAUTH Authentication required.":   "NOAUTH Authentication required.",
	} {
		if got := withCode(in); got != want {
			t.Errorf("withCode(%q) = %q, want %q", in, got, want)
		}
	}
}

// Time spent waiting for a worker counts against the timeout: behind a hung
// Redis, queued fetches fail as soon as their time is up instead of each
// waiting a full timeout of its own, and they are never sent.
func TestTimeoutCountsQueueing(t *testing.T) {
	redis := redistest.Start(t)
	c, err := New(Config{Addr: redis.Addr, Timeout: 200 * time.Millisecond, MaxParallel: 1, QueueLen: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	redis.Pause()
	defer redis.Resume()
	results := make(chan Result, 10)
	for range 10 {
		if err := c.Fetch("k", func(r Result) { results <- r }); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		if r := <-results; !errors.Is(r.Err, ErrTimeout) {
			t.Fatalf("%+v", r)
		}
	}
	if n := c.Stats().Fetches; n >= 10 {
		t.Fatalf("%d of 10 fetches were sent to a hung Redis; the expired ones should not be", n)
	}
}
