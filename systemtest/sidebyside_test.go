// Several proxies in front of one Redis, as a TCP load balancer runs them:
// each caches on its own and holds its own tracking connection, so a write
// in Redis must reach every cache. The tests read each proxy's INFO to tell
// a value served from its cache from one fetched.

package systemtest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// Two proxies on one Redis each cache a key; a SET in Redis, then a DEL,
// drops it from both (with a TTL of an hour, only an invalidation can), and
// each counts the entry it dropped. Redis sees one BCAST tracking
// connection per proxy.
func TestProxiesSideBySide(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v1")
	proxies := []*proxy{
		startProxy(t, redis.Addr, "--ttl", "1h"),
		startProxy(t, redis.Addr, "--ttl", "1h"),
	}
	clients := make([]*respConn, len(proxies))
	for i, p := range proxies {
		awaitInfo(t, p.addr, fmt.Sprintf("proxy %d tracking on", i), "invalidation", "on")
		clients[i] = dialRESP(t, p.addr)
	}
	if n := trackingClients(redis); n != len(proxies) {
		t.Fatalf("Redis has %d BCAST tracking connections, want one per proxy (%d)", n, len(proxies))
	}

	// counters returns proxy i's keyspace_misses, keyspace_hits,
	// cached_keys and invalidated_keys, as "misses/hits/cached/invalidated".
	counters := func(i int) string {
		var fields []string
		for _, f := range []string{"keyspace_misses", "keyspace_hits", "cached_keys", "invalidated_keys"} {
			fields = append(fields, proxyInfo(t, proxies[i].addr, f))
		}
		return strings.Join(fields, "/")
	}
	for i, rc := range clients {
		for range 2 {
			if got := respGet(rc, "k"); got != "v1" {
				t.Fatalf("proxy %d: GET k: %q", i, got)
			}
		}
		if got := counters(i); got != "1/1/1/0" {
			t.Fatalf("proxy %d after two reads of k: misses/hits/cached/invalidated %s, want 1/1/1/0 (fetched once, then served from its cache)", i, got)
		}
	}

	// servedByAll waits until every proxy serves want for k, and then checks
	// that each has dropped invalidated entries in all.
	servedByAll := func(what, want string, invalidated int) {
		t.Helper()
		for i, rc := range clients {
			eventually(t, fmt.Sprintf("proxy %d to serve k after the %s", i, what), func() string {
				if got := respGet(rc, "k"); got != want {
					return fmt.Sprintf("%q", got)
				}
				return ""
			})
			if got := proxyInfo(t, proxies[i].addr, "invalidated_keys"); got != fmt.Sprint(invalidated) {
				t.Fatalf("proxy %d after the %s: invalidated_keys %s, want %d", i, what, got, invalidated)
			}
		}
	}
	redis.Do("SET", "k", "v2")
	servedByAll("SET", "v2", 1)
	redis.Do("DEL", "k")
	servedByAll("DEL", "(nil)", 2)
}

// trackingClients counts the connections CLIENT LIST shows with tracking in
// broadcast mode (flags t and B).
func trackingClients(redis *redistest.Server) int {
	n := 0
	for _, line := range strings.Split(redis.Do("CLIENT", "LIST").String(), "\n") {
		for _, field := range strings.Fields(line) {
			if flags, ok := strings.CutPrefix(field, "flags="); ok && strings.Contains(flags, "t") && strings.Contains(flags, "B") {
				n++
			}
		}
	}
	return n
}
