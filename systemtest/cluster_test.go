// The proxy in front of a Redis Cluster and of a primary found through
// Sentinel: reads across slots, invalidation from every node, and reads
// that stay right while the cluster reshards or Sentinel fails over.

package systemtest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
	"github.com/tidwall/resp"
)

// faultKeys are the keys faultLoad reads ("hot:N", "cold:N") with their
// values, as pairs.
func faultKeys() []string {
	var kv []string
	for i := range 50 {
		kv = append(kv, fmt.Sprint("hot:", i), fmt.Sprint("value-of-hot:", i))
	}
	for i := range 20000 {
		kv = append(kv, fmt.Sprint("cold:", i), fmt.Sprint("value-of-cold:", i))
	}
	return kv
}

// msetFaultKeys writes faultKeys into one Redis (do: a Server's Do), 1000
// at a time.
func msetFaultKeys(do func(...any) resp.Value) {
	kv := faultKeys()
	for i := 0; i < len(kv); i += 2000 {
		args := []any{"MSET"}
		for _, a := range kv[i:min(i+2000, len(kv))] {
			args = append(args, a)
		}
		do(args...)
	}
}

// checkLoad fails the test if the load got a wrong value, no answer, or an
// error for a key it had cached; errors on misses are allowed up to
// missErrors.
func checkLoad(t *testing.T, load *faultLoad, missErrors int64) {
	t.Helper()
	t.Logf("answered %d (hits %d), misses refused %d (unavailable %d, timed out %d), wrong %d, hung %d, hits refused %d",
		load.answered.Load(), load.hits.Load(), load.errored.Load(), load.unavailable.Load(), load.timedOut.Load(),
		load.wrong.Load(), load.hung.Load(), load.hitErrors.Load())
	switch {
	case load.wrong.Load() != 0:
		t.Fatalf("%d wrong answers, first: %v", load.wrong.Load(), load.firstWrong.Load())
	case load.hung.Load() != 0:
		t.Fatalf("%d requests got no answer", load.hung.Load())
	case load.hitErrors.Load() != 0:
		t.Fatalf("%d reads of cached keys were refused", load.hitErrors.Load())
	case load.errored.Load() > missErrors:
		t.Fatalf("%d misses refused, want at most %d", load.errored.Load(), missErrors)
	case load.hits.Load() == 0 || load.missesOK.Load() == 0:
		t.Fatal("the load had no hits or no misses served")
	}
}

// runLoad starts faultLoad's clients against addr; the function it returns
// stops them and waits until they are gone.
func runLoad(t *testing.T, addr string, load *faultLoad) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	var once sync.Once
	load.run(t, addr, 4, 5*time.Second, quit, &wg)
	stop = func() { once.Do(func() { close(quit); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// A cluster of 3 primaries with a replica each: the proxy finds it from
// one seed it can reach (a replica; the other seed is down), tracks the
// primaries only, reads keys of every primary, one MGET across all slots
// answers in order, a write on any primary is invalidated; a resharding and
// then a failover under load never give a wrong answer nor refuse a read,
// and afterwards writes on the moved slots and on the promoted replica are
// invalidated.
func TestClusterBackend(t *testing.T) {
	t.Parallel() // with TestSentinelBackend: each runs servers of its own, mostly waiting
	cluster := redistest.StartCluster(t, 3, 1)
	cluster.Set(faultKeys()...)
	var primaries, replicas []*redistest.Server
	for _, s := range cluster.Nodes {
		if cluster.IsReplica(s) {
			replicas = append(replicas, s)
		} else {
			primaries = append(primaries, s)
		}
	}
	down := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	p := startProxy(t, down+","+replicas[0].Addr, "--ttl", "1h", "--capacity", "1000000", "--backend-timeout", "5s")
	if got := proxyInfo(t, p.addr, "backend_mode"); got != "cluster" {
		t.Fatalf("backend_mode %q, want cluster", got)
	}
	// trackedOnlyBy waits until the primaries (as the test knows them now),
	// and only they, each hold one tracking connection: the proxy's.
	trackedOnlyBy := func() {
		t.Helper()
		eventually(t, "tracking on every primary and no replica", func() string {
			var counts []string
			ok := true
			for _, s := range cluster.Nodes {
				got, want := trackingClients(s), 0
				if slices.Contains(primaries, s) {
					want = 1
				}
				ok = ok && got == want
				counts = append(counts, fmt.Sprintf("%s: %d (want %d)", s.Addr, got, want))
			}
			if !ok || proxyInfo(t, p.addr, "invalidation") != "on" {
				return strings.Join(counts, ", ")
			}
			return ""
		})
	}
	trackedOnlyBy()
	rc := dialRESP(t, p.addr)

	// The hot keys live on every primary; one MGET reads them all, with a
	// missing key among them, in order; then each alone.
	byNode := map[*redistest.Server][]string{}
	mget := []string{"MGET"}
	for i := range 50 {
		key := fmt.Sprint("hot:", i)
		owner := cluster.Owner(key)
		byNode[owner] = append(byNode[owner], key)
		mget = append(mget, key)
		if i == 25 {
			mget = append(mget, "missing")
		}
	}
	if len(byNode) != len(primaries) {
		t.Fatalf("the hot keys are on %d primaries, want all %d", len(byNode), len(primaries))
	}
	for round := range 2 { // fetched, then cached
		answers := rc.do(mget...).Array()
		if len(answers) != len(mget)-1 {
			t.Fatalf("MGET of %d keys: %d answers", len(mget)-1, len(answers))
		}
		for i, key := range mget[1:] {
			want := "value-of-" + key
			if key == "missing" {
				want = "(nil)"
			}
			if got := show(answers[i]); got != want {
				t.Fatalf("round %d: MGET answer %d (%s): %q, want %q", round, i, key, got, want)
			}
		}
	}
	// A write on each primary reaches the cache (TTL 1h: only an
	// invalidation can), and is then written back.
	for _, keys := range byNode {
		key := keys[0]
		servesWithin(t, rc, cluster.Do, key, "new")
		servesWithin(t, rc, cluster.Do, key, "value-of-"+key)
	}

	// Reshard 2,000 slots from one primary to another, under load.
	var load faultLoad
	stop := runLoad(t, p.addr, &load)
	served := func(what string) {
		t.Helper()
		hits, misses := load.hits.Load(), load.missesOK.Load()
		eventually(t, what, func() string {
			if load.hits.Load() < hits+100 || load.missesOK.Load() < misses+100 {
				return "not yet"
			}
			return ""
		})
	}
	served("the load served")
	from, to := primaries[0], primaries[1]
	cluster.Reshard(from, to, 2000)
	served("the load served after the resharding")

	// Fail over the primary that took the slots, under the same load.
	var promoted *redistest.Server
	for _, r := range replicas {
		if strings.Contains(r.Do("INFO", "replication").String(), fmt.Sprintf("master_port:%d", to.Port)) {
			promoted = r
		}
	}
	cluster.Failover(promoted)
	served("the load served after the failover")
	stop()
	checkLoad(t, &load, 0)
	primaries[1] = promoted
	trackedOnlyBy()

	// Keys that moved are invalidated by their new primary, and that is
	// the promoted replica now.
	movedOnes := 0
	for _, key := range byNode[from] {
		if cluster.Owner(key) == promoted {
			movedOnes++
			servesWithin(t, rc, cluster.Do, key, "after-move")
		}
	}
	if movedOnes == 0 {
		t.Fatalf("none of %d keys of %s moved to %s", len(byNode[from]), from.Addr, to.Addr)
	}
	key := byNode[to][0]
	servesWithin(t, rc, cluster.Do, key, "after-failover")
	t.Logf("%d hot keys moved with the resharding, each invalidated by their new primary", movedOnes)
}

// Sentinel: the proxy reads from the primary the sentinel names; a failover
// under load gives no wrong answer and no refused hit; afterwards the proxy
// follows the new primary (the old one killed, misses and invalidations
// still work).
func TestSentinelBackend(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t)
	msetFaultKeys(s.Primary.Do)
	p := startProxy(t, s.Sentinel.Addr, "--sentinel-master", s.Master, "--ttl", "1h", "--capacity", "1000000", "--backend-timeout", "5s")
	if got := proxyInfo(t, p.addr, "backend_mode"); got != "sentinel" {
		t.Fatalf("backend_mode %q, want sentinel", got)
	}
	rc := dialRESP(t, p.addr)
	if got := respGet(rc, "hot:1"); got != "value-of-hot:1" {
		t.Fatalf("GET hot:1: %q", got)
	}
	servesWithin(t, rc, s.Primary.Do, "hot:1", "v2")
	servesWithin(t, rc, s.Primary.Do, "hot:1", "value-of-hot:1")

	var load faultLoad
	stop := runLoad(t, p.addr, &load)
	eventually(t, "the load served", func() string {
		if load.hits.Load() < 100 || load.missesOK.Load() < 100 {
			return "not yet"
		}
		return ""
	})
	old := s.Primary
	s.Failover()
	old.Stop() // from now on only the new primary can answer
	failedOver := time.Now()
	eventually(t, "misses served by the new primary", func() string {
		if load.lastMissOK.Load() <= failedOver.UnixNano() {
			return "not yet"
		}
		return ""
	})
	stop()
	// Misses may fail while the proxy moves to the new primary; hits may not.
	checkLoad(t, &load, load.errored.Load())

	awaitInfo(t, p.addr, "tracking on the new primary", "invalidation", "on")
	s.Primary.Do("SET", "after-failover", "new")
	if got := respGet(rc, "after-failover"); got != "new" {
		t.Fatalf("GET of a key written after the failover: %q", got)
	}
	servesWithin(t, rc, s.Primary.Do, "after-failover", "newer")
	awaitInfo(t, p.addr, "backend_status up after the failover", "backend_status", "up")
}
