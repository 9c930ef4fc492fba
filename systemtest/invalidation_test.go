package systemtest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// invalidationBudget bounds how long a write in Redis may take to show
// through the proxy. An invalidation is one push message from Redis to the
// tracker and one cache delete. Measured on a 2-core machine with the proxy
// built with -race and the tests run with -race: 2 to 7 ms, and at most 14 ms
// with a busy loop taking one of the cores. A second leaves ample margin for
// a noisy machine, and is still far below the TTL of an hour: only an
// invalidation can bring the change in time.
const invalidationBudget = time.Second

// Writes in Redis reach the proxy as invalidations: with a TTL of an hour,
// the new state is served within invalidationBudget of each kind of change.
func TestInvalidation(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr, "--ttl", "1h")
	rc := dialRESP(t, p.addr)
	awaitInfo(t, p.addr, "tracking on", "invalidation", "on")
	var slowest time.Duration
	// visible polls until the proxy serves want for key, failing once
	// invalidationBudget has passed since the change (at changed).
	visible := func(what, key, want string, changed time.Time) {
		t.Helper()
		for {
			got := respGet(rc, key)
			took := time.Since(changed)
			if got == want {
				slowest = max(slowest, took)
				return
			}
			if took > invalidationBudget {
				t.Fatalf("%s: %q still served %v after the change, want %q", what, got, took, want)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	// change runs a write in Redis and returns when it was done.
	change := func(args ...any) time.Time {
		t.Helper()
		redis.Do(args...)
		return time.Now()
	}
	cache := func(key, value string) {
		t.Helper()
		redis.Do("SET", key, value)
		if got := respGet(rc, key); got != value {
			t.Fatalf("caching %s: %q", key, got)
		}
	}

	cache("k", "v1")
	visible("SET", "k", "v2", change("SET", "k", "v2"))
	visible("DEL", "k", "(nil)", change("DEL", "k"))

	cache("e", "expiring")
	redis.Do("PEXPIRE", "e", "20")
	// Redis expires lazily, on access, or in its next cycle; either sends the
	// invalidation. EXISTS is an access: poll it until Redis has dropped the key.
	var expired time.Time
	eventually(t, "the key expired in Redis", func() string {
		if n := redis.Do("EXISTS", "e").Integer(); n != 0 {
			return fmt.Sprint("EXISTS ", n)
		}
		expired = time.Now()
		return ""
	})
	visible("expiry in Redis", "e", "(nil)", expired)

	cache("lua", "before")
	visible("a Lua script", "lua", "after", change("EVAL", "redis.call('SET', KEYS[1], ARGV[1]) return 1", "1", "lua", "after"))

	for i := range 5 {
		cache(fmt.Sprint("f", i), "x")
	}
	flushed := change("FLUSHALL")
	for i := range 5 {
		visible("FLUSHALL", fmt.Sprint("f", i), "(nil)", flushed)
	}
	t.Logf("slowest change to show through the proxy: %v (budget %v)", slowest, invalidationBudget)
}

// A Redis restart may have lost invalidations: once tracking is back, the
// cache is cleared and nothing stale is served.
func TestInvalidationAfterRestart(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "before")
	p := startProxy(t, redis.Addr, "--ttl", "1h")
	rc := dialRESP(t, p.addr)
	if got := respGet(rc, "k"); got != "before" {
		t.Fatal(got)
	}
	redis.Stop()
	if got := respGet(rc, "k"); got != "before" {
		t.Fatalf("with Redis down, the cached value should still be served: %q", got)
	}
	redis.Restart() // empty
	redis.Do("SET", "k", "after")
	eventually(t, "the new value after the restart", func() string {
		if got := respGet(rc, "k"); got != "after" {
			return got
		}
		return ""
	})
}

// After a Redis restart, invalidations may have been lost: a cached key is
// not served as fresh until it has been fetched again (a write made while
// tracking was down shows at once), yet while Redis cannot be reached the
// cached value is still served (it used to be cleared, and such reads failed).
func TestRevalidationAfterRestart(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "before")
	redis.Do("SET", "j", "kept")
	p := startProxy(t, redis.Addr, "--ttl", "1h", "--backend-timeout", "300ms")
	rc := dialRESP(t, p.addr)
	for key, want := range map[string]string{"k": "before", "j": "kept"} {
		if got := respGet(rc, key); got != want {
			t.Fatalf("%s: %q", key, got)
		}
	}
	redis.Stop()
	redis.Restart() // empty, and the tracking connection is gone
	redis.Do("SET", "k", "after")
	redis.Do("SET", "j", "kept")
	awaitInfo(t, p.addr, "tracking back on", "invalidation", "on")
	if got := respGet(rc, "k"); got != "after" {
		t.Fatalf("k after the restart: %q (a value from before it, served as fresh)", got)
	}
	redis.Pause()
	defer redis.Resume()
	if got := respGet(rc, "j"); got != "kept" {
		t.Fatalf("j with Redis hung after the restart: %q, want the cached value", got)
	}
	redis.Resume()
	if got := respGet(rc, "j"); got != "kept" {
		t.Fatalf("j once Redis is back: %q", got)
	}
}

// A backend that cannot track (here: another redis-proxy, which refuses
// CLIENT TRACKING) leaves the proxy on TTLs alone, serving as before.
func TestInvalidationUnsupported(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	inner := startProxy(t, redis.Addr)
	outer := startProxy(t, inner.addr, "--ttl", "1h")
	if got := proxyInfo(t, outer.addr, "invalidation"); got != "unsupported" {
		t.Fatalf("invalidation: %s", got)
	}
	if got := respGet(dialRESP(t, outer.addr), "k"); got != "v" {
		t.Fatalf("GET through two proxies: %q", got)
	}
	if !strings.Contains(outer.stderr.String(), "CLIENT TRACKING") {
		t.Fatalf("no warning logged:\n%s", outer.stderr)
	}
}

// An entry never outlives its key in Redis: with a global TTL of an hour and
// invalidation off, a key set to expire in 300 ms is served until then and
// never after.
func TestRespectRedisTTL(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr, "--ttl", "1h", "--invalidation=false")
	rc := dialRESP(t, p.addr)
	redis.Do("SET", "forever", "f")
	redis.Do("SET", "k", "v", "PX", "300")
	set := time.Now()
	if got := respGet(rc, "k"); got != "v" {
		t.Fatal(got)
	}
	v := rc.do("MGET", "forever", "k").Array()
	if len(v) != 2 || v[0].String() != "f" || v[1].String() != "v" {
		t.Fatalf("MGET: %v", v)
	}
	time.Sleep(250*time.Millisecond - time.Since(set))
	if got := respGet(rc, "k"); time.Since(set) < 290*time.Millisecond && got != "v" {
		t.Fatalf("before its expiry in Redis: %q", got)
	}
	time.Sleep(350*time.Millisecond - time.Since(set))
	for time.Since(set) < 600*time.Millisecond {
		if got := respGet(rc, "k"); got != "(nil)" {
			t.Fatalf("%v after the SET, past the key's expiry: %q", time.Since(set), got)
		}
		v := rc.do("MGET", "forever", "k").Array()
		if v[0].String() != "f" || !v[1].IsNull() {
			t.Fatalf("MGET past the expiry: %v", v)
		}
	}
	if status, _ := dialHTTP(t, p.addr).get("k"); status != 404 {
		t.Fatalf("HTTP past the expiry: %d", status)
	}
}
