package server

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

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
	if got := await(t, lp, c, "now small\r\n"); got != "$9\r\nnow small\r\n" {
		t.Fatalf("after the key shrank: %q", got)
	}
	c.send("GET big\r\n")
	await(t, lp, c, "now small\r\n")
	if s.streamed.Load() != 3 {
		t.Fatalf("%d values streamed, want 3: a key gone small is still streamed", s.streamed.Load())
	}
	redis("SET", "big", value)
	c.send("GET big\r\n")
	await(t, lp, c, bulk)
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
// has begun to stream: the loop has been told the value's length (its task
// is queued, not run), so the transfer from Redis has only just begun.
func streamingConn(t *testing.T, lp *fakeLoop, s *Server, key string) *fakeConn {
	t.Helper()
	c := lp.open(t)
	s.noteLarge(key, streamAt) // as a first read would
	c.send("GET " + key + "\r\n")
	if s.streamed.Load() != 1 {
		t.Fatal("not streamed")
	}
	for deadline := time.Now().Add(taskPatience); len(lp.tasks) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the transfer never began")
		}
		runtime.Gosched()
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
	redisServer, s, lp := newTestProxyWith(t, lru.New(lru.Config{Capacity: 0, ReapInterval: -1}), 2*time.Second)
	value := strings.Repeat("v", 32<<20) // far more than the socket buffers hold (4-5 MB here)
	redisServer.Do("SET", "big", value)
	t.Cleanup(redisServer.Resume)
	for try := 0; ; try++ {
		s.streamed.Store(0)
		c := streamingConn(t, lp, s, "big")
		redisServer.Pause()
		lp.runUntil(t, func() bool { return s.pending.Load() == 0 })
		redisServer.Resume()
		got := c.takeOut()
		switch {
		case c.closed && strings.HasPrefix(got, fmt.Sprintf("$%d\r\n", len(value))) && len(got) < len(value) &&
			strings.Trim(got[strings.Index(got, "\n")+1:], "v") == "":
			t.Logf("cut short after %d of %d bytes, on try %d", len(got), len(value), try+1)
			return
		case !c.closed && got == fmt.Sprintf("$%d\r\n%s\r\n", len(value), value) && try < 5:
			continue // all of it came before the pause: again
		}
		t.Fatalf("closed %v after %d bytes: %.100q", c.closed, len(got), got)
	}
}

// A connection buffers at most one streamed value, and counts it in its
// queued bytes until it is written; a key streams to one client at a time.
// Other reads of it, on the same connection or another, take the usual path.
func TestStreamedValueIsCounted(t *testing.T) {
	lp, s, redis := newStreamingProxy(t, 10*time.Second)
	value := strings.Repeat("v", 4<<20)
	redis("SET", "big", value)
	c := lp.open(t)
	c.stuck = true
	s.noteLarge("big", streamAt)
	c.send("GET big\r\n")
	cn := c.ctx.(*conn)
	lp.runUntil(t, func() bool { return cn.stream != nil && cn.stream.ended })
	if cn.queuedBytes < len(value)-outputLow-streamChunk {
		t.Fatalf("%d queued bytes while a %d-byte value waits for the client", cn.queuedBytes, len(value))
	}
	bulk := fmt.Sprintf("$%d\r\n%s\r\n", len(value), value)
	slot, h := s.largeSlot("big")
	slot.Store(h | streaming) // as while a transfer of it is under way
	other := lp.open(t)
	other.send("GET big\r\n")
	if got := await(t, lp, other, bulk); got != bulk || s.streamed.Load() != 1 {
		t.Fatalf("another client, while the key streams: %d bytes, %d streamed", len(got), s.streamed.Load())
	}
	slot.Store(h)
	other.send("GET big\r\n")
	if got := await(t, lp, other, bulk); got != bulk || s.streamed.Load() != 2 {
		t.Fatalf("another client: %d bytes, %d streamed", len(got), s.streamed.Load())
	}
	c.send("GET big\r\nGET big\r\n")
	c.stuck, c.unsent = false, 0
	s.checkWatched(cn.lp)
	if got := await(t, lp, c, bulk+bulk+bulk); got != bulk+bulk+bulk {
		t.Fatalf("the pipeline came out wrong (%d bytes)", len(got))
	}
	if n := s.streamed.Load(); n != 2 {
		t.Fatalf("%d values streamed, want 2: the connection's own first, and the other client's", n)
	}
	if cn.queuedBytes != 0 || cn.stream != nil {
		t.Fatalf("%d queued bytes, stream %v, after all was written", cn.queuedBytes, cn.stream)
	}
}

// The delivery that ends a transfer may reach the loop before the wake-up
// that says the value began (gnet may run a loop's tasks out of order): the
// answer is framed and written all the same.
func TestStreamEndBeforeItsStart(t *testing.T) {
	lp, s, redis := newStreamingProxy(t, 10*time.Second)
	value := strings.Repeat("v", 2<<20)
	redis("SET", "big", value)
	c := lp.open(t)
	s.noteLarge("big", streamAt)
	c.send("GET big\r\n")
	deadline := time.Now().Add(30 * time.Second)
	for s.streams.Load() != 0 || len(lp.tasks) < 2 { // the transfer is over: its wake and its delivery are queued
		if time.Now().After(deadline) {
			t.Fatal("the transfer never ended")
		}
		time.Sleep(time.Millisecond)
	}
	var tasks []gnet.Runnable
	for len(lp.tasks) > 0 {
		tasks = append(tasks, <-lp.tasks)
	}
	for i := len(tasks) - 1; i >= 0; i-- {
		_ = tasks[i].Run(context.Background())
	}
	bulk := fmt.Sprintf("$%d\r\n%s\r\n", len(value), value)
	if got := await(t, lp, c, bulk); got != bulk || s.streamed.Load() != 1 {
		t.Fatalf("%d bytes, %d streamed", len(got), s.streamed.Load())
	}
}

// An error reply to a streaming GET (a cluster's MOVED, which only the usual
// path follows; here WRONGTYPE) forgets the key and asks again the usual way.
func TestStreamedErrorReplyAsksAgain(t *testing.T) {
	lp, s, redis := newStreamingProxy(t, 10*time.Second)
	redis("RPUSH", "list", "x")
	c := lp.open(t)
	s.noteLarge("list", streamAt)
	c.send("GET list\r\n")
	if got := await(t, lp, c, "\r\n"); !strings.HasPrefix(got, "-WRONGTYPE") || s.streamed.Load() != 1 {
		t.Fatalf("%q, %d streamed", got, s.streamed.Load())
	}
	if fetches := s.backend.Stats().Fetches; fetches != 2 {
		t.Fatalf("%d GETs, want 2: the streaming one and the usual one", fetches)
	}
	slot, _ := s.largeSlot("list")
	if slot.Load() != 0 {
		t.Fatal("the key is still to be streamed")
	}
}
