package systemtest

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// goroutines reads how many goroutines the proxy runs, from the profiles
// --pprof serves on the admin port.
func goroutines(t testing.TB, pprof string) int {
	res, err := http.Get("http://" + pprof + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var n int
	if _, err := fmt.Fscanf(res.Body, "goroutine profile: total %d", &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// proxyInfo returns one field of the proxy's INFO.
// awaitInfo waits (what) until field of the INFO of the proxy at addr is want.
func awaitInfo(t testing.TB, addr, what, field, want string) {
	t.Helper()
	eventually(t, what, func() string {
		if got := proxyInfo(t, addr, field); got != want {
			return field + ":" + got
		}
		return ""
	})
}

func proxyInfo(t testing.TB, addr, field string) string {
	return proxyInfoAs(t, addr, "", field)
}

// proxyInfoAs is proxyInfo from a client that first gives password, if any.
func proxyInfoAs(t testing.TB, addr, password, field string) string {
	rc := dialRESP(t, addr)
	defer rc.c.Close() // at once: --max-clients tests count connections
	if password != "" {
		if got := show(rc.do("AUTH", password)); got != "OK" {
			t.Fatalf("AUTH: %q", got)
		}
	}
	return infoField(t, rc.do("INFO").String(), field)
}

// infoField returns one field of an INFO answer.
func infoField(t testing.TB, info, field string) string {
	t.Helper()
	m := regexp.MustCompile(field + `:(\S+)`).FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("INFO has no %s:\n%s", field, info)
	}
	return m[1]
}

// 1000 clients reading one uncached key at once cost Redis one GET.
func TestCoalescedMisses(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "hot", "value")
	p := startProxy(t, redis.Addr, "--backend-timeout", "30s")
	respGet(dialRESP(t, p.addr), "warm") // the proxy's connection to Redis is up
	redis.Do("CONFIG", "RESETSTAT")

	redis.Pause() // the first GET hangs until every client has asked
	const clients = 1000
	conns := make([]*respConn, clients)
	for i := range conns {
		conns[i] = dialRESP(t, p.addr)
		conns[i].send([]string{"GET", "hot"})
	}
	awaitInfo(t, p.addr, "all clients waiting on one GET", "backend_coalesced", fmt.Sprint(clients-1))
	redis.Resume()
	for i, rc := range conns {
		if got := show(rc.read()); got != "value" {
			t.Fatalf("client %d: %q", i, got)
		}
	}
	stats := redis.Do("INFO", "commandstats").String()
	calls := regexp.MustCompile(`cmdstat_get:calls=(\d+)`).FindStringSubmatch(stats)
	if calls == nil || calls[1] != "1" {
		t.Fatalf("Redis served %v GETs for %d concurrent misses:\n%s", calls, clients, stats)
	}
	t.Logf("%d concurrent misses of one key: %s backend GET", clients, calls[1])
}

// faultLoad runs clients that mix hits and misses through the proxy until
// stop is closed, and checks every answer.
type faultLoad struct {
	answered, errored, wrong, hung atomic.Int64
	hits, missesOK                 atomic.Int64 // cached keys served, uncached keys served
	unavailable, timedOut          atomic.Int64 // misses refused as "backend unavailable" / "backend timeout"
	hitErrors                      atomic.Int64
	lastMissOK                     atomic.Int64 // unix nanos of the latest successful miss
	firstWrong                     atomic.Value
}

var documentedErrors = []string{"ERR: ERR backend unavailable: ", "ERR: ERR backend timeout", "ERR: ERR backend overloaded: "}

func (l *faultLoad) run(t *testing.T, addr string, clients int, readTimeout time.Duration, stop chan struct{}, wg *sync.WaitGroup) {
	var cold atomic.Int64
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc := dialRESP(t, addr)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key, hit := fmt.Sprint("hot:", (c+i)%50), i%2 == 0
				if !hit {
					key = fmt.Sprint("cold:", cold.Add(1)%20000)
				}
				rc.send([]string{"GET", key})
				_ = rc.c.SetReadDeadline(time.Now().Add(readTimeout))
				v, _, err := rc.r.ReadValue()
				if err != nil {
					l.hung.Add(1)
					return
				}
				got := show(v)
				switch {
				case got == "value-of-"+key:
					l.answered.Add(1)
					if hit {
						l.hits.Add(1)
					} else {
						l.missesOK.Add(1)
						l.lastMissOK.Store(time.Now().UnixNano())
					}
				case hasAnyPrefix(got, documentedErrors) && !hit:
					l.errored.Add(1)
					switch {
					case strings.HasPrefix(got, documentedErrors[0]):
						l.unavailable.Add(1)
					case strings.HasPrefix(got, documentedErrors[1]):
						l.timedOut.Add(1)
					}
				case hasAnyPrefix(got, documentedErrors):
					l.hitErrors.Add(1)
				default:
					l.wrong.Add(1)
					l.firstWrong.CompareAndSwap(nil, fmt.Sprintf("%s -> %q", key, got))
				}
			}
		}()
	}
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// Redis killed and restarted, then hung, under a load of hits and misses:
// never a wrong value, every request answered, hits served throughout, and
// service back by itself soon after Redis is.
//
// Each phase lasts until what it is there to show has happened (misses
// refused as unavailable, misses timing out, hits served meanwhile), not for
// a fixed time, so that a slow machine stretches the phases instead of
// failing them.
func TestRedisFaultsUnderLoad(t *testing.T) {
	redis := redistest.Start(t)
	msetFaultKeys(redis.Do)
	redis.Do("SAVE") // a restart loads the same data
	const timeout = 300 * time.Millisecond
	pprof := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	p := startProxy(t, redis.Addr, "--ttl", "1h", "--capacity", "1000000", "--backend-timeout", timeout.String(), "--admin-listen", pprof, "--pprof")
	warm := dialRESP(t, p.addr)
	// cacheHot caches the 50 hot keys, which the load then reads as hits.
	// Two rounds: a GET of the first round may join a fetch that began before
	// the cache was last cleared, whose value is (rightly) not cached; any
	// fetch a second-round GET starts or joins began after that.
	cacheHot := func() {
		t.Helper()
		for range 2 {
			for i := range 50 {
				if got, want := respGet(warm, fmt.Sprint("hot:", i)), fmt.Sprint("value-of-hot:", i); got != want {
					t.Fatalf("caching hot:%d: %q", i, got)
				}
			}
		}
	}
	cacheHot()
	goroutinesBefore := goroutines(t, pprof)
	if res, err := http.Get("http://" + pprof + "/debug/pprof/cmdline"); err != nil || res.StatusCode != 404 {
		t.Fatalf("/debug/pprof/cmdline, which would show --redis's password: %v %v", res.Status, err)
	} else {
		res.Body.Close()
	}

	var load faultLoad
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { close(stop); wg.Wait() }) }
	defer stopLoad() // on a failure below too: no client outlives the test
	const clients = 20
	load.run(t, p.addr, clients, timeout+3*time.Second, stop, &wg)
	// phase waits until, from now on, the load has had at least n more hits
	// served and n more of the misses that misses counts.
	phase := func(what string, n int64, misses *atomic.Int64) {
		t.Helper()
		hits, missed := load.hits.Load(), misses.Load()
		eventually(t, what, func() string {
			if load.hits.Load() < hits+n || misses.Load() < missed+n {
				return fmt.Sprintf("not yet (answered %d, hits %d, unavailable %d, timed out %d, wrong %d, hung %d, hits refused %d)",
					load.answered.Load(), load.hits.Load(), load.unavailable.Load(), load.timedOut.Load(), load.wrong.Load(), load.hung.Load(), load.hitErrors.Load())
			}
			return ""
		})
	}
	phase("the load running, hits and misses served", 10*clients, &load.missesOK)

	redis.Stop() // SIGKILL
	phase("Redis killed: misses refused as unavailable, hits still served", 50*clients, &load.unavailable)
	if got := proxyInfo(t, p.addr, "backend_status"); got != "down" {
		t.Errorf("backend_status with Redis killed: %s", got)
	}
	redis.Restart()
	back := time.Now()
	var recovered time.Duration
	eventually(t, "a miss served after the restart", func() string {
		if ns := load.lastMissOK.Load(); ns > back.UnixNano() {
			recovered = time.Unix(0, ns).Sub(back)
			return ""
		}
		return "not yet"
	})
	// Invalidations may have been lost while Redis was away: once tracking is
	// back on, the proxy clears its cache (by design), and the hot keys are
	// misses until read again. So wait for that, and cache them again, before
	// hanging Redis: the hang must find them cached. (Hanging Redis while the
	// tracker is still reconnecting, as a fixed sleep here used to, let the
	// clear land just before the hang: hot keys then timed out as misses.)
	awaitInfo(t, p.addr, "invalidation tracking back on after the restart", "invalidation", "on")
	cacheHot()

	redis.Pause() // hung: misses time out, each after the backend timeout
	phase("Redis hung: misses timing out, hits still served", 3*clients, &load.timedOut)
	redis.Resume()
	resumed := time.Now()
	eventually(t, "a miss served after Redis resumed", func() string {
		if load.lastMissOK.Load() <= resumed.UnixNano() {
			return "not yet"
		}
		return ""
	})
	stopLoad()

	// No goroutine outlives the faults: once the clients are gone, the proxy
	// runs as many as before the load.
	eventually(t, "the proxy's goroutines back to their number before the load", func() string {
		if n := goroutines(t, pprof); n > goroutinesBefore {
			return fmt.Sprintf("%d goroutines, %d before", n, goroutinesBefore)
		}
		return ""
	})

	t.Logf("answered %d (hits %d), errored %d (documented errors, misses only: unavailable %d, timed out %d), wrong %d, hung %d, hits refused %d; misses served again %v after Redis restarted",
		load.answered.Load(), load.hits.Load(), load.errored.Load(), load.unavailable.Load(), load.timedOut.Load(),
		load.wrong.Load(), load.hung.Load(), load.hitErrors.Load(), recovered)
	switch {
	case load.wrong.Load() != 0:
		t.Fatalf("%d wrong answers, first: %v", load.wrong.Load(), load.firstWrong.Load())
	case load.hung.Load() != 0:
		t.Fatalf("%d requests got no answer within %v", load.hung.Load(), timeout+3*time.Second)
	case load.hitErrors.Load() != 0:
		t.Fatalf("%d cached keys were refused while Redis was away", load.hitErrors.Load())
	case load.errored.Load() == 0:
		t.Fatal("no miss failed while Redis was away: the fault was not exercised")
	case recovered > time.Second:
		t.Fatalf("misses served again only %v after Redis was back", recovered)
	}
}

// --stale-if-error: with Redis gone, an entry that expired less than that ago
// is served instead of an error; fresh values return with Redis.
func TestStaleIfError(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "old")
	p := startProxy(t, redis.Addr, "--ttl", "200ms", "--stale-if-error", "1h")
	rc := dialRESP(t, p.addr)
	if got := respGet(rc, "k"); got != "old" {
		t.Fatal(got)
	}
	redis.Stop()
	time.Sleep(300 * time.Millisecond) // past the TTL
	if got := respGet(rc, "k"); got != "old" {
		t.Fatalf("expired entry with Redis down: %q, want the stale value", got)
	}
	hc := dialHTTP(t, p.addr)
	hc.write(getRequest("k"))
	if res, body := hc.read("GET"); res.StatusCode != 200 || body != "old" || res.Header.Get("Cache-Status") != "redis-proxy; fwd=stale" ||
		res.Header.Get("Age") != "0" && res.Header.Get("Age") != "1" { // cached about 300 ms ago
		t.Fatalf("HTTP: %d %q, Cache-Status %q, Age %q", res.StatusCode, body, res.Header.Get("Cache-Status"), res.Header.Get("Age"))
	}
	if got := proxyInfo(t, p.addr, "stale_answers"); got != "2" {
		t.Fatalf("stale_answers %s, want 2", got)
	}
	if got := respGet(rc, "never-cached"); !strings.HasPrefix(got, "ERR: ERR backend unavailable") {
		t.Fatalf("uncached key with Redis down: %q", got)
	}
	redis.Restart() // empty: the key is gone from Redis
	redis.Do("SET", "k", "new")
	eventually(t, "the fresh value", func() string {
		if got := respGet(rc, "k"); got != "new" {
			return got
		}
		return ""
	})
}
