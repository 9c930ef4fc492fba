package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/redis-proxy/redis-proxy/backend"
	"github.com/redis-proxy/redis-proxy/internal/redistest"
	"github.com/redis-proxy/redis-proxy/lru"
)

// These tests drive the gnet callbacks directly with an in-memory connection
// and loop, so that what happens on a loop (parsing, the FIFO, deliveries) can
// be stepped through deterministically and measured without sockets. The
// black-box tests of the real binary are in systemtest/.

// fakeLoop stands in for a gnet event loop: Execute queues the runnable for
// the test to run, as the loop would, on the test's goroutine.
type fakeLoop struct {
	gnet.EventLoop // methods not defined below are never called
	tasks          chan gnet.Runnable
	srv            *Server
	patience       *time.Timer // runTask's, reused: the miss benchmarks count allocations
}

const taskPatience = 30 * time.Second

func (l *fakeLoop) Execute(_ context.Context, r gnet.Runnable) error {
	l.tasks <- r
	return nil
}

func (l *fakeLoop) Close(c gnet.Conn) error {
	fc := c.(*fakeConn)
	fc.closed = true
	l.srv.OnClose(c, nil)
	return nil
}

// runUntil runs the runnables queued on the loop until done reports true.
func (l *fakeLoop) runUntil(t testing.TB, done func() bool) {
	t.Helper()
	for !done() {
		l.runTask(t)
	}
}

// runTask runs the next runnable queued on the loop. It waits up to
// taskPatience: long enough for a backend starved by a loaded machine under
// -race (10 s once was not, in a CI run beside two compiling builds), short
// enough to name a delivery that is lost.
func (l *fakeLoop) runTask(t testing.TB) {
	t.Helper()
	if l.patience == nil {
		l.patience = time.NewTimer(taskPatience)
	}
	l.patience.Reset(taskPatience)
	select {
	case r := <-l.tasks:
		_ = r.Run(context.Background())
	case <-l.patience.C:
		t.Fatal("no delivery reached the loop")
	}
}

// fakeConn is an in-memory gnet connection: in is what the client sent and
// the server has not consumed, out what the server wrote.
type fakeConn struct {
	gnet.Conn // methods not defined below are never called
	loop      *fakeLoop
	in        []byte
	out       bytes.Buffer
	ctx       any
	closed    bool
	remote    net.Addr // the client's address; nil: an empty one

	looked int  // bytes handed out by Peek and Read: the server's reading work
	stuck  bool // the client reads nothing: written bytes stay unsent
	unsent int  // bytes written while stuck
	// gone, once written up to, fails later writes as a vanished peer
	// does: gnet closes the connection (OnClose) inside the failed Write.
	gone int
}

func (c *fakeConn) Peek(n int) ([]byte, error) {
	if n <= 0 || n > len(c.in) {
		n = len(c.in)
	}
	c.looked += n
	return c.in[:n], nil
}
func (c *fakeConn) Read(p []byte) (int, error) {
	n := copy(p, c.in)
	c.looked += n
	c.in = c.in[:copy(c.in, c.in[n:])]
	return n, nil
}
func (c *fakeConn) Discard(n int) (int, error) {
	if n <= 0 || n >= len(c.in) {
		n = len(c.in)
	}
	c.in = c.in[:copy(c.in, c.in[n:])] // keep the buffer, as gnet keeps its ring
	return n, nil
}
func (c *fakeConn) InboundBuffered() int { return len(c.in) }
func (c *fakeConn) Write(p []byte) (int, error) {
	if c.gone > 0 && c.out.Len() >= c.gone {
		_ = c.loop.Close(c)
		return 0, net.ErrClosed
	}
	if c.stuck {
		c.unsent += len(p)
	}
	return c.out.Write(p)
}
func (c *fakeConn) OutboundBuffered() int     { return c.unsent }
func (c *fakeConn) Context() any              { return c.ctx }
func (c *fakeConn) SetContext(v any)          { c.ctx = v }
func (c *fakeConn) EventLoop() gnet.EventLoop { return c.loop }
func (c *fakeConn) RemoteAddr() net.Addr {
	if c.remote == nil {
		return &net.TCPAddr{}
	}
	return c.remote
}
func (c *fakeConn) send(s string) (closeNow bool) { c.in = append(c.in, s...); return c.traffic() }
func (c *fakeConn) traffic() bool                 { return c.loop.srv.OnTraffic(c) == gnet.Close }
func (c *fakeConn) takeOut() string               { s := c.out.String(); c.out.Reset(); return s }
func (l *fakeLoop) open(t testing.TB) *fakeConn   { return l.openConn(t) }
func (l *fakeLoop) openConn(t testing.TB) *fakeConn {
	t.Helper()
	c := &fakeConn{loop: l}
	if _, action := l.srv.OnOpen(c); action != gnet.None {
		t.Fatal("connection refused")
	}
	return c
}

func newTestCache() *lru.Cache {
	return lru.New(lru.Config{Capacity: 1000, TTL: time.Minute, ReapInterval: -1})
}

func newTestServer(t testing.TB, be *backend.Client) (*Server, *fakeLoop) {
	return newTestServerWith(t, newTestCache(), be)
}

func newTestServerWith(t testing.TB, cache *lru.Cache, be *backend.Client) (*Server, *fakeLoop) {
	s := New(Config{Listen: "127.0.0.1:0", MaxClients: 10, Loops: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, cache, be)
	return s, &fakeLoop{tasks: make(chan gnet.Runnable, 4096), srv: s}
}

// newTestProxy wires a server to a real Redis through a real backend, as
// main does, with the fake loop in place of gnet's.
func newTestProxy(t testing.TB) (*redistest.Server, *Server, *fakeLoop) {
	return newTestProxyWith(t, newTestCache(), time.Second)
}

// newTestProxyWith is newTestProxy with the given cache and backend timeout.
func newTestProxyWith(t testing.TB, cache *lru.Cache, timeout time.Duration) (*redistest.Server, *Server, *fakeLoop) {
	redis := redistest.Start(t)
	be, err := backend.New(backend.Config{Addr: redis.Addr, Timeout: timeout, MaxParallel: 4, QueueLen: 4096,
		Versions: cache, OnResult: CacheFill(cache)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(be.Close)
	s, lp := newTestServerWith(t, cache, be)
	return redis, s, lp
}

// A hit that follows a pending miss on the same connection waits for it:
// answers leave in request order however the fetches complete.
func TestOrderBehindPendingMiss(t *testing.T) {
	redis, s, lp := newTestProxy(t)
	redis.Do("SET", "m1", "miss-one")
	redis.Do("SET", "m2", "miss-two")
	s.cache.Set("h1", []byte("hit-one"))
	s.cache.Set("h2", []byte("hit-two"))
	c := lp.open(t)

	c.send("GET h1\r\nGET m1\r\nGET h2\r\nGET m2\r\nGET h1\r\n")
	if got := c.takeOut(); got != "$7\r\nhit-one\r\n" {
		t.Fatalf("before any fetch returned, wrote %q", got)
	}
	want := "$8\r\nmiss-one\r\n$7\r\nhit-two\r\n$8\r\nmiss-two\r\n$7\r\nhit-one\r\n"
	lp.runUntil(t, func() bool { return c.out.Len() >= len(want) })
	if got := c.takeOut(); got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	// The misses are cached now: a second round is answered at once.
	c.send("GET m1\r\nGET m2\r\n")
	if got := c.takeOut(); got != "$8\r\nmiss-one\r\n$8\r\nmiss-two\r\n" {
		t.Fatalf("second round: %q", got)
	}
}

func TestHTTPOrderBehindPendingMiss(t *testing.T) {
	redis, s, lp := newTestProxy(t)
	redis.Do("SET", "m", "fetched")
	s.cache.Set("h", []byte("cached"))
	c := lp.open(t)
	c.send("GET /m HTTP/1.1\r\n\r\nGET /h HTTP/1.1\r\n\r\nGET /none HTTP/1.1\r\nConnection: close\r\n\r\n")
	if got := c.takeOut(); got != "" {
		t.Fatalf("wrote %q before the miss returned", got)
	}
	lp.runUntil(t, func() bool { return c.closed })
	got := c.takeOut()
	i1, i2, i3 := strings.Index(got, "\r\n\r\nfetched"), strings.Index(got, "\r\n\r\ncached"), strings.Index(got, "404 Not Found")
	if i1 < 0 || i2 < i1 || i3 < i2 || !strings.Contains(got[i3:], "Connection: close") {
		t.Fatalf("answers out of order or missing:\n%s", got)
	}
	if !c.closed {
		t.Fatal("Connection: close did not close after the last answer")
	}
}

// A fetch that completes after its connection closed writes nothing: the
// descriptor may belong to another client by then.
func TestDeliveryAfterCloseIsDropped(t *testing.T) {
	redis, s, lp := newTestProxy(t)
	redis.Do("SET", "k", "v")
	c := lp.open(t)
	c.send("GET k\r\n")
	s.OnClose(c, nil)
	lp.runUntil(t, func() bool { return s.pending.Load() == 0 }) // the fetch is sent, and its result delivered
	if got := c.takeOut(); got != "" {
		t.Fatalf("wrote %q to a closed connection", got)
	}
}

// Past maxQueued waiting answers, parsing stops; it resumes as answers drain
// and every request is still answered, in order.
func TestBackpressureResumes(t *testing.T) {
	redis, _, lp := newTestProxy(t)
	redis.Do("SET", "k", "v")
	c := lp.open(t)
	var in strings.Builder
	n := maxQueued + 500
	for range n {
		in.WriteString("GET missing\r\n")
	}
	c.send(in.String())
	if len(c.in) == 0 {
		t.Fatal("parsed everything despite the queue limit")
	}
	lp.runUntil(t, func() bool { return strings.Count(c.out.String(), "$-1\r\n") == n })
	got := strings.Count(c.takeOut(), "$-1\r\n")
	if len(c.in) != 0 || got != n {
		t.Fatalf("answered %d of %d, %d bytes left", got, n, len(c.in))
	}
}

// Large answers queued behind a miss stop parsing at maxQueuedBytes, not
// only at maxQueued answers; they all leave, in order, once the miss returns.
func TestBackpressureByBytes(t *testing.T) {
	redis, s, lp := newTestProxy(t)
	redis.Do("SET", "m", "fetched")
	big := strings.Repeat("x", 1<<20)
	s.cache.Set("big", []byte(big))
	c := lp.open(t)
	c.send("GET m\r\n" + strings.Repeat("GET big\r\n", 40))
	if len(c.in) == 0 || c.out.Len() != 0 {
		t.Fatalf("parsed everything (%d bytes left, %d written) despite %d MiB queued", len(c.in), c.out.Len(), 40)
	}
	want := "$7\r\nfetched\r\n" + strings.Repeat("$1048576\r\n"+big+"\r\n", 40)
	lp.runUntil(t, func() bool { return c.out.Len() >= len(want) })
	if got := c.takeOut(); got != want || len(c.in) != 0 {
		t.Fatalf("got %d bytes, want %d; %d bytes unparsed", len(got), len(want), len(c.in))
	}
}

// The backend hooks take the cache's version when a GET starts and store the
// value only if no invalidation came in between: hold a fetch, invalidate its
// key, release it, and the old value stays out of the cache.
func TestFetchOvertakenByInvalidation(t *testing.T) {
	cache := newTestCache()
	prepare, onResult := cache.Version, CacheFill(cache)
	token := prepare("k") // the GET of k is sent
	cache.Invalidate("k") // Redis says k changed, before the reply is in
	onResult("k", token, backend.Result{Value: []byte("old"), Found: true})
	if cache.Get([]byte("k"), func([]byte) {}) {
		t.Fatal("a value overtaken by an invalidation was cached")
	}
	onResult("k", prepare("k"), backend.Result{Value: []byte("new"), Found: true})
	if !cache.Get([]byte("k"), func([]byte) {}) {
		t.Fatal("an undisturbed fetch was not cached")
	}
}

func TestMaxClients(t *testing.T) {
	s, lp := newTestServer(t, nil)
	s.cfg.MaxClients = 1
	first := lp.open(t)
	resp := lp.open(t)
	if !resp.send("PING\r\n") {
		t.Fatal("a refused connection was not closed after its answer")
	}
	if got := resp.takeOut(); got != "-ERR max number of clients reached\r\n" {
		t.Fatalf("RESP refusal: %q", got)
	}
	httpConn := lp.open(t)
	httpConn.send("GET /k HTTP/1.1\r\n\r\n")
	if got := httpConn.takeOut(); !strings.HasPrefix(got, "HTTP/1.1 503 ") {
		t.Fatalf("HTTP refusal: %q", got)
	}
	first.send("PING\r\n")
	if got := first.takeOut(); got != "+PONG\r\n" {
		t.Fatalf("admitted client: %q", got)
	}
}

func TestHitPathDoesNotAllocate(t *testing.T) {
	for name, req := range map[string]string{
		"resp":       "*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000042\r\n",
		"inline":     "GET key:000000000042\r\n",
		"http":       "GET /key:000000000042 HTTP/1.1\r\nHost: x\r\n\r\n",
		"resp-pipe":  strings.Repeat("*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000042\r\n", 16),
		"http-pipe":  strings.Repeat("GET /key:000000000042 HTTP/1.1\r\nHost: x\r\n\r\n", 16),
		"http-head":  "HEAD /key:000000000042 HTTP/1.1\r\n\r\n",
		"json":       "GET /lookup?key=key%3A000000000042 HTTP/1.1\r\nHost: x\r\n\r\n",
		"json-pipe":  strings.Repeat("GET /lookup?key=key:000000000042 HTTP/1.1\r\nHost: x\r\n\r\n", 16),
		"json-head":  "HEAD /lookup?key=key:000000000042 HTTP/1.1\r\n\r\n",
		"resp-ping":  "PING\r\n",
		"resp-split": "*2\r\n$3\r\nGET\r\n$16\r\nkey:0000",
	} {
		for _, limited := range []bool{false, true} {
			s, lp := newTestServer(t, nil)
			if limited { // throttled, far under the limits
				s.limits = newRateLimits(1e9, 1e9, 2)
			}
			s.cache.Set("key:000000000042", make([]byte, 100))
			c := lp.open(t)
			c.send(req) // first use grows the buffers
			allocs := testing.AllocsPerRun(200, func() {
				c.in = append(c.in[:0], req...)
				c.traffic()
				c.out.Reset()
			})
			if allocs != 0 {
				t.Errorf("%s (rate limits %v): %v allocations per request batch", name, limited, allocs)
			}
		}
	}
}

// benchmarkHits measures hits of req (perOp requests in it), with the rate
// limits on but far from limiting when limited.
func benchmarkHits(b *testing.B, req string, perOp int, limited bool) {
	s, lp := newTestServer(b, nil)
	if limited {
		s.limits = newRateLimits(1e9, 1e9, 2)
	}
	// Printable: zero bytes would cost a JSON answer six bytes each (\u0000).
	s.cache.Set("key:000000000042", bytes.Repeat([]byte("v"), 100))
	c := lp.open(b)
	c.send(req)
	b.ReportAllocs()
	for b.Loop() {
		c.in = append(c.in[:0], req...)
		c.traffic()
		c.out.Reset()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perOp), "ns/request")
}

func BenchmarkHitRESP(b *testing.B) {
	benchmarkHits(b, "*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000042\r\n", 1, false)
}

func BenchmarkHitRESPRateLimited(b *testing.B) {
	benchmarkHits(b, "*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000042\r\n", 1, true)
}

func BenchmarkHitRESPPipeline16(b *testing.B) {
	benchmarkHits(b, strings.Repeat("*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000042\r\n", 16), 16, false)
}

func BenchmarkHitHTTP(b *testing.B) {
	benchmarkHits(b, "GET /key:000000000042 HTTP/1.1\r\nHost: 127.0.0.1:6380\r\n\r\n", 1, false)
}

func BenchmarkHitHTTPPipeline16(b *testing.B) {
	benchmarkHits(b, strings.Repeat("GET /key:000000000042 HTTP/1.1\r\nHost: 127.0.0.1:6380\r\n\r\n", 16), 16, false)
}

func BenchmarkHitJSON(b *testing.B) {
	benchmarkHits(b, "GET /lookup?key=key%3A000000000042 HTTP/1.1\r\nHost: 127.0.0.1:6380\r\n\r\n", 1, false)
}

func BenchmarkHitJSONPipeline16(b *testing.B) {
	benchmarkHits(b, strings.Repeat("GET /lookup?key=key%3A000000000042 HTTP/1.1\r\nHost: 127.0.0.1:6380\r\n\r\n", 16), 16, false)
}

// benchmarkMisses measures the miss path end to end, through a real backend
// and Redis, with nothing cached: allocations per miss count those of every
// goroutine on the way (the loop, the backend's worker, rueidis's).
func benchmarkMisses(b *testing.B, req string, perOp int) {
	redis, _, lp := newTestProxyWith(b, lru.New(lru.Config{Capacity: 0, TTL: time.Minute, ReapInterval: -1}), time.Second)
	value := strings.Repeat("v", 100)
	for i := range perOp {
		redis.Do("SET", fmt.Sprintf("key:%012d", i), value)
	}
	c := lp.open(b)
	want := perOp * len("$100\r\n"+value+"\r\n")
	round := func() {
		c.in = append(c.in[:0], req...)
		c.traffic()
		lp.runUntil(b, func() bool { return c.out.Len() >= want })
		c.out.Reset()
	}
	round() // first use grows the buffers and dials Redis
	b.ReportAllocs()
	for b.Loop() {
		round()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perOp), "ns/miss")
}

func BenchmarkMissRESP(b *testing.B) {
	benchmarkMisses(b, "*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000000\r\n", 1)
}

func BenchmarkMissRESPPipeline16(b *testing.B) {
	var req strings.Builder
	for i := range 16 {
		fmt.Fprintf(&req, "*2\r\n$3\r\nGET\r\n$16\r\nkey:%012d\r\n", i)
	}
	benchmarkMisses(b, req.String(), 16)
}

// The misses of every connection a loop serves in one go are handed to the
// backend together, once: one task at the end of the batch, one hand-off.
func TestMissesOfABatchGoTogether(t *testing.T) {
	redis, s, lp := newTestProxy(t)
	redis.Do("SET", "a", "1")
	c1, c2 := lp.open(t), lp.open(t)
	c1.send("GET a\r\nGET b\r\n")
	c2.send("MGET a c\r\n")
	if n := len(lp.tasks); n != 1 {
		t.Fatalf("%d tasks queued for the batch, want 1", n)
	}
	lpc := c1.ctx.(*conn).lp
	if got := lpc.misses.keys; len(got) != 4 {
		t.Fatalf("batch %q, want the 4 misses of both connections", got)
	}
	lp.runUntil(t, func() bool { return s.pending.Load() == 0 })
	if got := c1.takeOut() + "|" + c2.takeOut(); got != "$1\r\n1\r\n$-1\r\n|*2\r\n$1\r\n1\r\n$-1\r\n" {
		t.Fatalf("answers %q", got)
	}
}

// The hot keys are the most read ones, counted from a sample of the loops'
// lookups (GET, MGET keys, HTTP), with no allocation on the way; they age
// out after about a minute without reads.
func TestHotKeys(t *testing.T) {
	s, lp := newTestServer(t, nil)
	s.cache.Set("hot", []byte("v"))
	s.cache.Set("warm", []byte("v"))
	rc, hc := lp.open(t), lp.open(t)
	for i := range 100 * sampleEvery {
		c := rc
		switch {
		case i%10 < 6:
			c.send("GET hot\r\n")
		case i%10 < 8:
			c = hc
			c.send("GET /warm HTTP/1.1\r\n\r\n")
		case i%10 < 9:
			c.send("MGET warm warm\r\n")
		default:
			cold := fmt.Sprintf("cold:%d", i) // many keys read once each
			s.cache.Set(cold, []byte("v"))
			c.send("GET " + cold + "\r\n")
		}
		if c.closed || c.takeOut() == "" {
			t.Fatalf("request %d not answered", i)
		}
	}
	hot := s.HotKeys(2)
	if len(hot) != 2 || hot[0].Key != "hot" || hot[1].Key != "warm" {
		t.Fatalf("hot keys %+v, want hot then warm", hot)
	}
	total := 100 * sampleEvery
	// Lookups: hot 6 of every 11, warm 4 (the MGET looks it up twice).
	if r := hot[0].Reads; r < uint64(total)*5/10 || r > uint64(total)*7/10 {
		t.Fatalf("hot: about %d reads estimated, %d made", r, total*6/10)
	}
	s.clock.Store(s.clock.Load() + 2*hotWindow) // a minute without reads
	if hot := s.HotKeys(2); len(hot) != 0 {
		t.Fatalf("hot keys a minute later: %+v", hot)
	}
}
