package systemtest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// Writes in Redis reach the proxy as invalidations: with a TTL of an hour,
// the new state is served within 50 ms of each kind of change.
func TestInvalidation(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr, "--ttl", "1h")
	rc := dialRESP(t, p.addr)
	eventually(t, "tracking on", func() string {
		if got := proxyInfo(t, p.addr, "invalidation"); got != "on" {
			return got
		}
		return ""
	})
	within50ms := func(what, key, want string) {
		t.Helper()
		start := time.Now()
		for {
			got := respGet(rc, key)
			if got == want {
				return
			}
			if time.Since(start) > 50*time.Millisecond {
				t.Fatalf("%s: %q still served after %v, want %q", what, got, time.Since(start), want)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	cache := func(key, value string) {
		t.Helper()
		redis.Do("SET", key, value)
		if got := respGet(rc, key); got != value {
			t.Fatalf("caching %s: %q", key, got)
		}
	}

	cache("k", "v1")
	redis.Do("SET", "k", "v2")
	within50ms("SET", "k", "v2")

	redis.Do("DEL", "k")
	within50ms("DEL", "k", "(nil)")

	cache("e", "expiring")
	redis.Do("PEXPIRE", "e", "20")
	time.Sleep(30 * time.Millisecond)
	redis.Do("GET", "e") // Redis expires lazily, or in its next cycle; either sends the invalidation
	within50ms("expiry in Redis", "e", "(nil)")

	cache("lua", "before")
	redis.Do("EVAL", "redis.call('SET', KEYS[1], ARGV[1]) return 1", "1", "lua", "after")
	within50ms("a Lua script", "lua", "after")

	for i := range 5 {
		cache(fmt.Sprint("f", i), "x")
	}
	redis.Do("FLUSHALL")
	for i := range 5 {
		within50ms("FLUSHALL", fmt.Sprint("f", i), "(nil)")
	}
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
