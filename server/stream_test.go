package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/lru"
)

// newStreamingProxy is a proxy whose cache keeps nothing, so that a large
// value is fetched on every read: streamed from its second on.
func newStreamingProxy(t *testing.T, timeout time.Duration) (*fakeLoop, *Server, func(args ...any)) {
	redis, s, lp := newTestProxyWith(t, lru.New(lru.Config{Capacity: 0, ReapInterval: -1}), timeout)
	return lp, s, func(args ...any) { redis.Do(args...) }
}

// await runs lp's tasks until c's output ends with suffix.
func await(t *testing.T, lp *fakeLoop, c *fakeConn, suffix string) string {
	t.Helper()
	lp.runUntil(t, func() bool { return strings.HasSuffix(c.out.String(), suffix) })
	return c.takeOut()
}

// A large value the cache does not keep is streamed from its second miss
// on, over RESP and HTTP, in its place among the answers of a pipeline; a
// client that reads nothing is sent no more than a large hit would send it.
// Once the key's value is small, or gone, it is fetched as any key again.
func TestStreamedMiss(t *testing.T) {
	lp, s, redis := newStreamingProxy(t, 10*time.Second)
	value := strings.Repeat("0123456789abcdef", 192<<10) // 3 MiB
	redis("SET", "big", value)
	redis("SET", "small", "small")
	c := lp.open(t)
	bulk := fmt.Sprintf("$%d\r\n%s\r\n", len(value), value)
	c.send("GET big\r\nPING\r\n")
	if got := await(t, lp, c, "+PONG\r\n"); got != bulk+"+PONG\r\n" {
		t.Fatal("the first read, fetched whole, came out wrong")
	}
	if s.streamed.Load() != 0 {
		t.Fatal("a key not yet seen large was streamed")
	}
	c.stuck = true
	c.send("GET small\r\nGET big\r\nGET small\r\nPING\r\n")
	lp.runUntil(t, func() bool { return c.unsent > outputLow })
	if s.streamed.Load() != 1 {
		t.Fatalf("%d values streamed, want 1", s.streamed.Load())
	}
	for range 20 { // the whole value is in by now or soon: none of it goes to a client not reading
		time.Sleep(10 * time.Millisecond)
		for len(lp.tasks) > 0 {
			lp.runTask(t)
		}
	}
	if c.unsent > outputLow+streamChunk+1024 {
		t.Fatalf("%d bytes of a streamed %d-byte value went to a client that reads nothing", c.unsent, len(value))
	}
	c.stuck, c.unsent = false, 0
	s.checkWatched(c.ctx.(*conn).lp)
	if got := await(t, lp, c, "+PONG\r\n"); got != "$5\r\nsmall\r\n"+bulk+"$5\r\nsmall\r\n+PONG\r\n" {
		t.Fatalf("the streamed pipeline came out wrong (%d bytes)", len(got))
	}
	hc := lp.open(t)
	hc.send("GET /big HTTP/1.1\r\n\r\n")
	if got := await(t, lp, hc, value); !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") ||
		!strings.Contains(got, fmt.Sprintf("Content-Length: %d\r\n", len(value))) || !strings.HasSuffix(got, "\r\n\r\n"+value) {
		t.Fatalf("the streamed HTTP answer came out wrong: %.200q", got)
	}
	if s.streamed.Load() != 2 {
		t.Fatalf("%d values streamed, want 2", s.streamed.Load())
	}

	redis("SET", "big", "now small")
	c.send("GET big\r\n")
	if got := await(t, lp, c, "\r\n"); got != "$9\r\nnow small\r\n" {
		t.Fatalf("after the key shrank: %q", got)
	}
	c.send("GET big\r\n")
	await(t, lp, c, "\r\n")
	if s.streamed.Load() != 3 {
		t.Fatalf("%d values streamed, want 3: a key gone small is still streamed", s.streamed.Load())
	}
	redis("SET", "big", value)
	c.send("GET big\r\n")
	await(t, lp, c, "\r\n")
	redis("DEL", "big")
	c.send("GET big\r\nGET big\r\n")
	if got := await(t, lp, c, "$-1\r\n$-1\r\n"); got != "$-1\r\n$-1\r\n" || s.streamed.Load() != 4 {
		t.Fatalf("a deleted key: %q, %d streamed (want 4)", got, s.streamed.Load())
	}
	if s.pending.Load() != 0 || s.streams.Load() != 0 {
		t.Fatalf("%d fetches, %d transfers left", s.pending.Load(), s.streams.Load())
	}
}

// streamingConn returns a connection to lp whose GET of key, a large value,
// is streaming: the header is out.
func streamingConn(t *testing.T, lp *fakeLoop, s *Server, key string) *fakeConn {
	t.Helper()
	c := lp.open(t)
	s.noteLarge(key, streamAt) // as a first read would
	streamed := s.streamed.Load()
	c.send("GET " + key + "\r\n")
	lp.runUntil(t, func() bool { return c.out.Len() > 0 })
	if s.streamed.Load() != streamed+1 {
		t.Fatal("not streamed")
	}
	return c
}

// A client that goes away while its value streams stops the transfer: the
// fetch is accounted for and nothing more is written.
func TestStreamedMissClientGone(t *testing.T) {
	lp, s, redis := newStreamingProxy(t, 10*time.Second)
	redis("SET", "big", strings.Repeat("v", 32<<20))
	c := streamingConn(t, lp, s, "big")
	_ = lp.Close(c)
	written := c.out.Len()
	lp.runUntil(t, func() bool { return s.pending.Load() == 0 })
	if s.streams.Load() != 0 || c.out.Len() != written {
		t.Fatalf("%d transfers left, %d bytes written after the close", s.streams.Load(), c.out.Len()-written)
	}
}

// A value cut short after its header went out (Redis stopped sending it,
// the fetch timed out) closes the connection: its client cannot take what
// it got for the value, and is told so the only way left.
func TestStreamedMissCutShort(t *testing.T) {
	redisServer, s, lp := newTestProxyWith(t, lru.New(lru.Config{Capacity: 0, ReapInterval: -1}), time.Second)
	value := strings.Repeat("v", 64<<20) // far more than the socket buffers hold
	redisServer.Do("SET", "big", value)
	t.Cleanup(redisServer.Resume)
	for try := 0; ; try++ {
		c := streamingConn(t, lp, s, "big")
		redisServer.Pause()
		lp.runUntil(t, func() bool { return s.pending.Load() == 0 })
		redisServer.Resume()
		got := c.takeOut()
		switch {
		case c.closed && strings.HasPrefix(got, fmt.Sprintf("$%d\r\n", len(value))) && len(got) < len(value) &&
			strings.Trim(got[strings.Index(got, "\n")+1:], "v") == "":
			return
		case !c.closed && got == fmt.Sprintf("$%d\r\n%s\r\n", len(value), value) && try < 5:
			continue // all of it came before the pause: again
		}
		t.Fatalf("closed %v after %d bytes: %.100q", c.closed, len(got), got)
	}
}
