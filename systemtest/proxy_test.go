package systemtest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

func TestGetHitAndMiss(t *testing.T) {
	redis := redistest.Start(t)
	// --invalidation=false: values are changed behind the proxy's back to see
	// that it answers from its cache.
	p := startProxy(t, redis.Addr, "--ttl", "1h", "--invalidation=false")
	redis.Do("SET", "r", "resp-value")
	redis.Do("SET", "h", "http-value")
	rc, hc := dialRESP(t, p.addr), dialHTTP(t, p.addr)

	if got := respGet(rc, "r"); got != "resp-value" {
		t.Fatalf("RESP miss: %q", got)
	}
	if status, body := hc.get("h"); status != 200 || body != "http-value" {
		t.Fatalf("HTTP miss: %d %q", status, body)
	}
	// Change both in Redis: the proxy answers from its cache now.
	redis.Do("SET", "r", "changed")
	redis.Do("SET", "h", "changed")
	if got := respGet(rc, "r"); got != "resp-value" {
		t.Fatalf("RESP hit: %q", got)
	}
	if status, body := hc.get("h"); status != 200 || body != "http-value" {
		t.Fatalf("HTTP hit: %d %q", status, body)
	}
	// Each protocol sees what the other cached.
	if got := respGet(rc, "h"); got != "http-value" {
		t.Fatalf("RESP read of an HTTP-cached key: %q", got)
	}
	if got := respGet(rc, "absent"); got != "(nil)" {
		t.Fatalf("RESP absent key: %q", got)
	}
	status, body := hc.get("absent")
	if status != 404 || body != "key not found\n" {
		t.Fatalf("HTTP absent key: %d %q", status, body)
	}
	// A missing key is not cached: once it exists, it is served.
	redis.Do("SET", "absent", "now-here")
	if got := respGet(rc, "absent"); got != "now-here" {
		t.Fatalf("RESP key created after a miss: %q", got)
	}
	res, _ := hc.readAfter(getRequest("r"))
	if ct := res.Header.Get("Content-Type"); ct != "application/octet-stream" || res.ContentLength != int64(len("resp-value")) {
		t.Fatalf("headers: %v", res.Header)
	}
}

func TestSpecialKeys(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr)
	keys := []string{"a key with spaces", "a/b//c/../d", "\xff\xfe\x00bin\r\n", "100%", "?q=1&x#frag", "ключ", "+plus+"}
	for i, k := range keys {
		redis.Do("SET", k, fmt.Sprint("value-", i))
	}
	rc, hc := dialRESP(t, p.addr), dialHTTP(t, p.addr)
	for round := range 2 { // miss, then hit
		for i, k := range keys {
			want := fmt.Sprint("value-", i)
			if got := respGet(rc, k); got != want {
				t.Errorf("round %d RESP %q: %q", round, k, got)
			}
			if status, body := hc.get(k); status != 200 || body != want {
				t.Errorf("round %d HTTP %q: %d %q", round, k, status, body)
			}
		}
	}
}

func TestValueSizes(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr)
	big := make([]byte, 1<<20)
	_, _ = rand.Read(big)
	redis.Do("SET", "empty", "")
	redis.Do("SET", "big", big)
	rc, hc := dialRESP(t, p.addr), dialHTTP(t, p.addr)
	for round := range 2 {
		if v := rc.do("GET", "empty"); v.IsNull() || v.String() != "" {
			t.Fatalf("round %d RESP empty: %v", round, v)
		}
		if status, body := hc.get("empty"); status != 200 || body != "" {
			t.Fatalf("round %d HTTP empty: %d %q", round, status, body)
		}
		if v := rc.do("GET", "big"); !bytes.Equal(v.Bytes(), big) {
			t.Fatalf("round %d RESP 1 MiB value: got %d bytes", round, len(v.Bytes()))
		}
		if status, body := hc.get("big"); status != 200 || body != string(big) {
			t.Fatalf("round %d HTTP 1 MiB value: %d, %d bytes", round, status, len(body))
		}
	}
}

// deadlineResolution is how finely the cache keeps deadlines: to the
// millisecond, rounded up (lru's packExpiry), so an entry is never dropped
// before its TTL and served at most 1 ms past it.
const deadlineResolution = time.Millisecond

// A value changed in Redis is served stale until the TTL, then fresh.
//
// The entry is stored between start and cached, so it expires between
// start+ttl and cached+ttl, plus the up to 1 ms its deadline is rounded up
// by (deadlineResolution): reads polled across that span must answer the old
// value when answered before start+ttl, the new one when sent after that,
// and either in between. Every read is checked; the first is
// sent a few ms after the caching, far within the TTL.
func TestTTL(t *testing.T) {
	redis := redistest.Start(t)
	const ttl = time.Second
	p := startProxy(t, redis.Addr, "--ttl", ttl.String(), "--invalidation=false") // TTL alone
	redis.Do("SET", "k", "old")
	rc := dialRESP(t, p.addr)
	start := time.Now() // the entry is stored after this...
	if got := respGet(rc, "k"); got != "old" {
		t.Fatal(got)
	}
	cached := time.Now() // ...and before this
	redis.Do("SET", "k", "new")
	var withinTTL, pastTTL int
	for pastTTL == 0 {
		sent := time.Now()
		got := respGet(rc, "k")
		answered := time.Now()
		switch {
		case answered.Before(start.Add(ttl)):
			if got != "old" {
				t.Fatalf("%v after caching, within the TTL of %v: %q, want the cached old value", answered.Sub(cached), ttl, got)
			}
			withinTTL++
		case sent.After(cached.Add(ttl + deadlineResolution)):
			if got != "new" {
				t.Fatalf("%v after caching, past the TTL of %v: %q, want the new value", sent.Sub(cached), ttl, got)
			}
			pastTTL++
		case got != "old" && got != "new": // at the expiry: either
			t.Fatalf("at the expiry: %q", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if withinTTL == 0 {
		t.Fatalf("no read answered within the TTL of %v: the old value was never checked", ttl)
	}
	hc := dialHTTP(t, p.addr)
	if _, body := hc.get("k"); body != "new" {
		t.Fatalf("HTTP after the TTL: %q", body)
	}
	t.Logf("%d reads within the TTL served the cached value; the first read past it, the new one", withinTTL)
}

// With capacity N, reading N+1 keys evicts the least recently read one.
func TestLRUEviction(t *testing.T) {
	redis := redistest.Start(t)
	// --invalidation=false: changed values show which keys stayed cached.
	p := startProxy(t, redis.Addr, "--capacity", "3", "--ttl", "1h", "--invalidation=false")
	for _, k := range []string{"a", "b", "c", "d"} {
		redis.Do("SET", k, "old-"+k)
	}
	rc := dialRESP(t, p.addr)
	for _, k := range []string{"a", "b", "c", "a", "d"} { // b is least recently read when d arrives
		if got := respGet(rc, k); got != "old-"+k {
			t.Fatalf("%s: %q", k, got)
		}
	}
	for _, k := range []string{"a", "b", "c", "d"} {
		redis.Do("SET", k, "new-"+k)
	}
	for _, k := range []string{"a", "c", "d"} {
		if got := respGet(rc, k); got != "old-"+k {
			t.Fatalf("%s was evicted: %q", k, got)
		}
	}
	if got := respGet(rc, "b"); got != "new-b" {
		t.Fatalf("b was not evicted: %q", got)
	}
}

// With --max-memory, the cache evicts by bytes as well as by keys.
func TestMaxMemory(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr, "--max-memory", "4MiB", "--ttl", "1h", "--invalidation=false")
	big := strings.Repeat("x", 1500<<10) // three of these do not fit in 4 MiB
	for _, k := range []string{"a", "b", "c"} {
		redis.Do("SET", k, k+big)
	}
	rc := dialRESP(t, p.addr)
	for _, k := range []string{"a", "b", "c"} { // a is evicted when c arrives
		if got := respGet(rc, k); got != k+big {
			t.Fatalf("%s: %d bytes", k, len(got))
		}
	}
	for _, k := range []string{"a", "b", "c"} {
		redis.Do("SET", k, "new-"+k)
	}
	for k, want := range map[string]string{"b": "b" + big, "c": "c" + big, "a": "new-a"} {
		if got := respGet(rc, k); got != want {
			t.Fatalf("%s: %.20q (%d bytes), want %.20q", k, got, len(got), want)
		}
	}
}

// pipelineKeys sets up 100 keys: every third is cached beforehand, every
// tenth does not exist; it returns the keys and the answers expected.
func pipelineKeys(t *testing.T, redis *redistest.Server, warm func(key string)) ([]string, []string) {
	var keys, want []string
	for i := range 100 {
		k := fmt.Sprint("pipe:", i)
		keys = append(keys, k)
		if i%10 == 0 {
			want = append(want, "")
			continue
		}
		v := fmt.Sprint("value:", i, strings.Repeat("x", i))
		redis.Do("SET", k, v)
		want = append(want, v)
		if i%3 == 0 {
			warm(k)
		}
	}
	return keys, want
}

func TestPipelinedRESP(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr)
	rc := dialRESP(t, p.addr)
	keys, want := pipelineKeys(t, redis, func(k string) { respGet(rc, k) })
	var cmds [][]string
	for _, k := range keys {
		cmds = append(cmds, []string{"GET", k})
	}
	rc.send(cmds...)
	for i := range keys {
		v := rc.read()
		if want[i] == "" && !v.IsNull() || want[i] != "" && v.String() != want[i] {
			t.Fatalf("answer %d: %q, want %q", i, show(v), want[i])
		}
	}
}

func TestPipelinedHTTP(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr)
	hc := dialHTTP(t, p.addr)
	keys, want := pipelineKeys(t, redis, func(k string) { hc.get(k) })
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(getRequest(k))
	}
	hc.write(b.String())
	for i := range keys {
		res, body := hc.read("GET")
		if want[i] == "" && res.StatusCode != 404 || want[i] != "" && (res.StatusCode != 200 || body != want[i]) {
			t.Fatalf("answer %d: %d %q, want %q", i, res.StatusCode, body, want[i])
		}
	}
}

func TestConcurrentClients(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr, "--capacity", "300")
	const nkeys = 500
	for i := range nkeys {
		redis.Do("SET", fmt.Sprint("c:", i), fmt.Sprint("value-of-c:", i))
	}
	var wg sync.WaitGroup
	errs := make(chan string, 200)
	for client := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc, hc := dialRESP(t, p.addr), dialHTTP(t, p.addr)
			for j := range 20 {
				n, _ := rand.Int(rand.Reader, big.NewInt(nkeys))
				k := fmt.Sprint("c:", n)
				var got string
				if (client+j)%2 == 0 {
					got = respGet(rc, k)
				} else {
					_, got = hc.get(k)
				}
				if got != "value-of-"+k {
					errs <- fmt.Sprintf("client %d: %s -> %q", client, k, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestMaxClients(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr, "--max-clients", "2")
	// The proxy learns of a closed connection (such as startProxy's probe)
	// asynchronously, so a place may take a moment to come free.
	admit := func() *respConn {
		var rc *respConn
		eventually(t, "an admitted client", func() string {
			rc = dialRESP(t, p.addr)
			if got := show(rc.do("PING")); got != "PONG" {
				return got
			}
			return ""
		})
		return rc
	}
	first, _ := admit(), admit()
	refused := dialRESP(t, p.addr)
	if got := show(refused.do("PING")); got != "ERR: ERR max number of clients reached" {
		t.Fatalf("third RESP client: %q", got)
	}
	refused.expectClosed()
	hc := dialHTTP(t, p.addr)
	if status, body := hc.get("k"); status != 503 || !strings.Contains(body, "max-clients") {
		t.Fatalf("third HTTP client: %d %q", status, body)
	}
	hc.expectClosed()
	first.c.Close()
	admit()
}

// Redis going away: cached keys are still served, misses fail with the
// documented errors, and service comes back by itself with Redis.
func TestRedisDownAndBack(t *testing.T) {
	redis := redistest.Start(t)
	// Written before the proxy starts: the invalidation of a write made just
	// before a read may arrive after it and drop the freshly cached value.
	redis.Do("SET", "hot", "cached")
	p := startProxy(t, redis.Addr, "--ttl", "1h", "--backend-timeout", "500ms")
	rc, hc := dialRESP(t, p.addr), dialHTTP(t, p.addr)
	if got := respGet(rc, "hot"); got != "cached" {
		t.Fatal(got)
	}
	redis.Stop()
	if got := respGet(rc, "hot"); got != "cached" {
		t.Fatalf("cached key with Redis down: %q", got)
	}
	if got := respGet(rc, "cold"); !strings.HasPrefix(got, "ERR: ERR backend unavailable: ") {
		t.Fatalf("RESP miss with Redis down: %q", got)
	}
	if status, body := hc.get("cold"); status != 502 || !strings.HasPrefix(body, "backend unavailable: ") {
		t.Fatalf("HTTP miss with Redis down: %d %q", status, body)
	}
	redis.Restart()
	redis.Do("SET", "cold", "back")
	eventually(t, "RESP after Redis restart", func() string {
		if got := respGet(rc, "cold"); got != "back" {
			return got
		}
		return ""
	})
	if status, body := hc.get("cold"); status != 200 || body != "back" {
		t.Fatalf("HTTP after Redis restart: %d %q", status, body)
	}
}

// A hung Redis: misses answer 504 / backend timeout after --backend-timeout.
func TestBackendTimeout(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr, "--backend-timeout", "300ms")
	rc, hc := dialRESP(t, p.addr), dialHTTP(t, p.addr)
	respGet(rc, "warm") // the connection to Redis is up
	redis.Pause()
	defer redis.Resume()
	if got := respGet(rc, "k"); got != "ERR: ERR backend timeout" {
		t.Fatalf("RESP: %q", got)
	}
	if status, body := hc.get("k"); status != 504 || body != "backend timeout\n" {
		t.Fatalf("HTTP: %d %q", status, body)
	}
}

func TestRedisBenchmark(t *testing.T) {
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		t.Fatal("redis-benchmark not on PATH: run `make deps`")
	}
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr)
	_, port, _ := net.SplitHostPort(p.addr)
	for _, pipeline := range []string{"1", "16"} {
		out, err := exec.Command("redis-benchmark", "-p", port, "-t", "get", "-n", "20000", "-c", "20",
			"-P", pipeline, "-r", "1000", "-q").CombinedOutput()
		if err != nil {
			t.Fatalf("-P %s: %v\n%s", pipeline, err, out)
		}
		text := string(out)
		for _, bad := range []string{"ERR", "rror", "WARNING", "Could not"} {
			if strings.Contains(text, bad) {
				t.Fatalf("-P %s printed %q:\n%s", pipeline, bad, text)
			}
		}
		if !strings.Contains(text, "GET: ") || !strings.Contains(text, "requests per second") {
			t.Fatalf("-P %s: no result line:\n%s", pipeline, text)
		}
	}
}

func TestRedisCLI(t *testing.T) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatal("redis-cli not on PATH: run `make deps`")
	}
	redis := redistest.Start(t)
	redis.Do("SET", "k", "hello world")
	p := startProxy(t, redis.Addr)
	_, port, _ := net.SplitHostPort(p.addr)
	_, redisPort, _ := net.SplitHostPort(redis.Addr)
	// redis-cli prints the same through the proxy as straight from Redis.
	for _, args := range [][]string{
		{"GET", "k"}, {"GET", "nope"}, {"PING"}, {"PING", "hi"}, {"ECHO", "x"}, {"MGET", "k", "nope", "k"},
		{"SELECT", "0"}, {"FOO", "a", "b"}, {"GET"}, {"CONFIG", "GET", "appendonly"},
	} {
		want, _ := exec.Command("redis-cli", append([]string{"-p", redisPort}, args...)...).CombinedOutput()
		got, err := exec.Command("redis-cli", append([]string{"-p", port}, args...)...).CombinedOutput()
		if err != nil || string(got) != string(want) {
			t.Errorf("redis-cli %v: %q (%v), Redis itself says %q", args, got, err, want)
		}
	}
	out, _ := exec.Command("redis-cli", "-p", port, "SET", "k", "v").CombinedOutput()
	if string(out) != "ERR unknown command 'SET', with args beginning with: 'k' 'v' \n\n" {
		t.Errorf("redis-cli SET: %q", out)
	}
	// Interactive start-up (COMMAND DOCS) and a command, through a pipe.
	cmd := exec.Command("redis-cli", "-p", port)
	cmd.Stdin = strings.NewReader("GET k\n")
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "hello world\n" {
		t.Errorf("redis-cli from stdin: %q (%v)", out, err)
	}
	if v := redis.Do("GET", "k"); v.String() != "hello world" {
		t.Fatalf("a write reached Redis: k = %q", v.String())
	}
}

func TestWrk(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatal("wrk not on PATH: run `make deps`")
	}
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	p := startProxy(t, redis.Addr)
	out, err := exec.Command("wrk", "-t1", "-c10", "-d1s", "http://"+p.addr+"/k").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if strings.Contains(string(out), "Non-2xx") || strings.Contains(string(out), "Socket errors") {
		t.Fatalf("wrk saw errors:\n%s", out)
	}
}

// Many connections each pipelining thousands of GETs, mostly misses: more
// requests waiting for Redis at once than one connection's queue holds, all
// answered in order with the right values.
func TestDeepPipelines(t *testing.T) {
	redis := redistest.Start(t)
	// Queued misses wait their turn within the fetch timeout; under the race
	// detector the proxy is slow enough for 1s to run out.
	p := startProxy(t, redis.Addr, "--backend-timeout", "60s")
	const conns, depth = 40, 3000
	for i := range 500 {
		redis.Do("SET", fmt.Sprint("deep:", i), fmt.Sprint("v", i))
	}
	var wg sync.WaitGroup
	errs := make(chan string, conns)
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc := dialRESP(t, p.addr)
			var b strings.Builder
			for i := range depth {
				k := fmt.Sprint("deep:", (i*7+c)%1000) // half of them exist
				fmt.Fprintf(&b, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(k), k)
			}
			rc.write(b.String())
			for i := range depth {
				n := (i*7 + c) % 1000
				want := "(nil)"
				if n < 500 {
					want = fmt.Sprint("v", n)
				}
				if got := show(rc.read()); got != want {
					errs <- fmt.Sprintf("conn %d answer %d: %q, want %q", c, i, got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
