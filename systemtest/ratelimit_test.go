// Throttling against the real binary: --rate-limit holds the proxy to its
// rate under a burst far over it, --rate-limit-per-client keeps a noisy
// client from taking a quiet one's share, and both answer what they refuse
// in the request's protocol.

package systemtest

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// readsAnswered sends n GETs of k in pipelines of batch and counts the
// values and the rate-limit refusals among the answers; any other answer
// fails the test.
func readsAnswered(t *testing.T, rc *respConn, n, batch int) (served, refused int) {
	t.Helper()
	cmds := make([][]string, batch)
	for i := range cmds {
		cmds[i] = []string{"GET", "k"}
	}
	for sent := 0; sent < n; sent += batch {
		rc.send(cmds...)
		for range batch {
			switch got := show(rc.read()); got {
			case "v":
				served++
			case "ERR: ERR rate limit exceeded":
				refused++
			default:
				t.Fatalf("GET k: %q", got)
			}
		}
	}
	return served, refused
}

// With --rate-limit 1000, a burst of 20k reads over 3 seconds gets about
// 1000 a second served (once the first second's burst is spent), the rest
// refused; HTTP is refused with 503 and Retry-After; commands that read no
// key pass; refusals are counted.
func TestRateLimit(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	const rate = 1000
	p := startProxy(t, redis.Addr, "--rate-limit", strconv.Itoa(rate))
	rc := dialRESP(t, p.addr)

	// Spend the burst: a second's worth of tokens, which a full bucket holds.
	if served, refused := readsAnswered(t, rc, 2*rate, 100); served < rate || refused == 0 {
		t.Fatalf("the burst: %d served, %d refused; want the first %d served", served, refused, rate)
	}

	// 20k reads spread over 3 s: 100 every 15 ms.
	start := time.Now()
	served, refused := 0, 0
	for i := range 200 {
		time.Sleep(time.Until(start.Add(time.Duration(i) * 15 * time.Millisecond)))
		s, r := readsAnswered(t, rc, 100, 100)
		served, refused = served+s, refused+r
	}
	elapsed := time.Since(start)
	want := rate * elapsed.Seconds()
	t.Logf("%d reads in %v: %d served, %d refused (%.0f expected served)", served+refused, elapsed, served, refused, want)
	if float64(served) < 0.8*want || float64(served) > 1.2*want {
		t.Errorf("%d reads served in %v, want %.0f within 20%%", served, elapsed, want)
	}

	if got := show(rc.do("PING")); got != "PONG" { // reads no key: not limited
		t.Fatalf("PING while limited: %q", got)
	}
	hc := dialHTTP(t, p.addr)
	for _, c := range []struct{ request, body string }{
		{getRequest("k"), "rate limit exceeded\n"},
		{"GET /lookup?key=k HTTP/1.1\r\nHost: proxy\r\n\r\n", `{"key":"k","status":503,"error":"rate limit exceeded"}`},
	} {
		refused := false
		for range 2 * rate { // until the bucket is spent again
			hc.write(c.request)
			res, body := hc.read("GET")
			if res.StatusCode == 200 {
				continue
			}
			if res.StatusCode != 503 || res.Header.Get("Retry-After") != "1" || body != c.body || res.Close {
				t.Fatalf("%q over the limit: %d, Retry-After %q, %q, close %v", c.request, res.StatusCode, res.Header.Get("Retry-After"), body, res.Close)
			}
			refused = true
			break
		}
		if !refused {
			t.Fatalf("%q: never refused", c.request)
		}
	}
	if got := proxyInfo(t, p.addr, "rate_limited_proxy"); got == "0" {
		t.Fatal("no refusal counted in INFO")
	}
}

// With --rate-limit-per-client, a client IP that reads far over its rate is
// refused, on every connection it opens, while another IP reads unhindered.
func TestRateLimitPerClient(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	p := startProxy(t, redis.Addr, "--rate-limit-per-client", "200")
	noisyIP := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}
	noisy := dialRESPFrom(t, p.addr, noisyIP)
	if served, refused := readsAnswered(t, noisy, 5000, 100); served > 400 || refused < 4000 {
		t.Fatalf("the noisy client: %d served, %d refused; want about 200 served", served, refused)
	}
	again := dialRESPFrom(t, p.addr, noisyIP) // a new connection shares its IP's spent bucket
	if served, _ := readsAnswered(t, again, 100, 100); served > 20 {
		t.Fatalf("a new connection from the noisy IP: %d of 100 served", served)
	}
	quiet := dialRESP(t, p.addr) // 127.0.0.1
	if served, refused := readsAnswered(t, quiet, 100, 10); served != 100 {
		t.Fatalf("the quiet client: %d served, %d refused", served, refused)
	}
	if client, proxy := proxyInfo(t, p.addr, "rate_limited_client"), proxyInfo(t, p.addr, "rate_limited_proxy"); client == "0" || proxy != "0" {
		t.Fatalf("rate_limited_client %s, rate_limited_proxy %s (no proxy-wide limit)", client, proxy)
	}
}
