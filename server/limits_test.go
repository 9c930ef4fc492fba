package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/redis-proxy/redis-proxy/backend"
)

// The limits that keep one client from exhausting, stalling or ballooning
// the proxy, stepped through on the fake loop. Each test here failed on the
// code before the limit was put in.

// checkQueue asserts that cn.queuedBytes is exactly what its slots hold.
func checkQueue(t *testing.T, cn *conn) {
	t.Helper()
	sum := 0
	for _, sl := range cn.queue[cn.head:] {
		if sl.size != len(sl.out)+sl.partBytes+sl.inFlight {
			t.Fatalf("slot counts %d bytes, holds %d", sl.size, len(sl.out)+sl.partBytes+sl.inFlight)
		}
		sum += sl.size
	}
	if cn.queuedBytes != sum {
		t.Fatalf("queuedBytes %d, slots hold %d", cn.queuedBytes, sum)
	}
}

// A refused connection that says nothing is told why after refuseWait, and
// closed; past maxRefusing waiting at once, more are closed on the spot.
func TestRefusedSilentConnectionsAreClosed(t *testing.T) {
	s, lp := newTestServer(t, nil)
	s.cfg.MaxClients = 1
	lp.open(t)
	silent := lp.open(t) // refused, waits for its first bytes
	start := time.Now()
	lp.runUntil(t, func() bool { return silent.closed })
	if waited := time.Since(start); waited < refuseWait/2 {
		t.Fatalf("closed after %v, before the client could say which protocol it speaks", waited)
	}
	if got := silent.takeOut(); got != "-ERR max number of clients reached\r\n" {
		t.Fatalf("silent refused client got %q", got)
	}

	var waiting []*fakeConn
	closedAtOnce := 0
	for range maxRefusing + 10 {
		c := &fakeConn{loop: lp}
		if _, action := s.OnOpen(c); action == gnet.Close {
			closedAtOnce++
			continue
		}
		waiting = append(waiting, c)
	}
	if len(waiting) != maxRefusing || closedAtOnce != 10 {
		t.Fatalf("%d refused connections held open, %d closed at once; want %d and 10", len(waiting), closedAtOnce, maxRefusing)
	}
	if got := s.refusing.Load(); got != maxRefusing {
		t.Fatalf("refusing = %d", got)
	}
	lp.runUntil(t, func() bool {
		for _, c := range waiting {
			if !c.closed {
				return false
			}
		}
		return true
	})
	if got := s.refusing.Load(); got != 0 {
		t.Fatalf("refusing = %d after every refused connection closed", got)
	}
}

// MGETs queued behind a miss count their parts against the queued-bytes
// bound as they are encoded: eight MGETs naming a 50 KB key a hundred times
// each (5 MB of answer each) stop the parsing after four, and the queue
// never holds much more than maxQueuedBytes.
func TestMGETCountsAgainstQueuedBytes(t *testing.T) {
	redis, s, lp := newTestProxy(t)
	redis.Do("SET", "m", "fetched")
	big := strings.Repeat("x", 50<<10)
	s.cache.Set("big", []byte(big))
	c := lp.open(t)
	cn := c.ctx.(*conn)
	mget := "MGET nothere" + strings.Repeat(" big", 100) + "\r\n"
	c.send("GET m\r\n" + strings.Repeat(mget, 8))
	checkQueue(t, cn)
	if len(c.in) == 0 {
		t.Fatal("parsed every MGET behind the miss")
	}
	if limit := maxQueuedBytes + 100*(len(big)+16); cn.queuedBytes > limit {
		t.Fatalf("%d bytes queued, bound %d", cn.queuedBytes, limit)
	}
	part := "$51200\r\n" + big + "\r\n"
	want := "$7\r\nfetched\r\n" + strings.Repeat("*101\r\n$-1\r\n"+strings.Repeat(part, 100), 8)
	lp.runUntil(t, func() bool { checkQueue(t, cn); return c.out.Len() >= len(want) })
	if got := c.takeOut(); got != want {
		t.Fatalf("got %d bytes, want %d", len(got), len(want))
	}
	if cn.queuedBytes != 0 || len(c.in) != 0 {
		t.Fatalf("after everything: %d bytes queued, %d unparsed", cn.queuedBytes, len(c.in))
	}
}

// One MGET whose answer would pass maxMGETBytes is answered with an error,
// whether its keys are all cached or some are fetched, and the connection
// goes on.
func TestMGETAnswerBound(t *testing.T) {
	redis, s, lp := newTestProxy(t)
	redis.Do("SET", "m", "fetched")
	s.cache.Set("big", []byte(strings.Repeat("x", 1<<20)))
	n := maxMGETBytes>>20 + 1
	c := lp.open(t)
	c.send("MGET" + strings.Repeat(" big", n) + "\r\nPING\r\n")
	if got := c.takeOut(); got != "-"+errMGETTooBig.Error()+"\r\n+PONG\r\n" {
		t.Fatalf("all cached: %.100q", got)
	}
	c.send("MGET m" + strings.Repeat(" big", n) + "\r\nPING\r\n")
	cn := c.ctx.(*conn)
	if cn.queuedBytes > maxMGETBytes+2<<20 {
		t.Fatalf("%d bytes queued for one MGET", cn.queuedBytes)
	}
	lp.runUntil(t, func() bool { return c.out.Len() > 0 })
	if got := c.takeOut(); got != "-"+errMGETTooBig.Error()+"\r\n+PONG\r\n" {
		t.Fatalf("with a miss: %.100q", got)
	}
	checkQueue(t, cn)
}

// Resuming a paused connection costs what it parses, not what it has
// buffered: a pipeline of misses five times the queue limit is looked at
// about once, however many times parsing pauses and resumes.
func TestResumeCostIsProportional(t *testing.T) {
	_, _, lp := newTestProxy(t)
	c := lp.open(t)
	n := 20 * maxQueued
	in := strings.Repeat("GET missing\r\n", n)
	c.send(in)
	lp.runUntil(t, func() bool { return strings.Count(c.out.String(), "$-1\r\n") == n })
	if c.looked > 3*len(in) {
		t.Fatalf("looked at %d bytes to parse %d", c.looked, len(in))
	}
}

// A large command trickled in a few bytes at a time is read once, not again
// from its start on every arrival, and is answered right.
func TestTrickledLargeCommand(t *testing.T) {
	s, lp := newTestServer(t, nil)
	s.cache.Set("k", []byte("v"))
	var cmd strings.Builder
	keys := 40000
	fmt.Fprintf(&cmd, "*%d\r\n$4\r\nMGET\r\n", keys+1)
	for range keys {
		cmd.WriteString("$1\r\nk\r\n")
	}
	in := cmd.String() + "PING\r\n"
	c := lp.open(t)
	for i := 0; i < len(in); i += 50 {
		c.send(in[i:min(i+50, len(in))])
	}
	want := fmt.Sprintf("*%d\r\n", keys) + strings.Repeat("$1\r\nv\r\n", keys) + "+PONG\r\n"
	if got := c.takeOut(); got != want {
		t.Fatalf("got %.80q... (%d bytes), want %d bytes", got, len(got), len(want))
	}
	if c.looked > 3*len(in) {
		t.Fatalf("looked at %d bytes to parse %d", c.looked, len(in))
	}
	if cn := c.ctx.(*conn); cn.held != nil {
		t.Fatal("the connection kept its large-request buffer after using it up")
	}
}

// queuedBytes stays exactly the bytes its slots hold through every mix of
// misses, hits, MGETs, FIFO compaction and deliveries, and is 0 once all is
// answered (it used to drift below zero when the FIFO was compacted as a
// ready answer was pushed).
func TestQueuedBytesExact(t *testing.T) {
	redis, s, lp := newTestProxy(t)
	s.cache.Set("h", []byte("hit"))
	redis.Do("SET", "m0", "v")
	c := lp.open(t)
	cn := c.ctx.(*conn)
	for round := range 30 {
		var b strings.Builder
		for i := range 200 {
			switch (round + i) % 5 {
			case 0:
				fmt.Fprintf(&b, "GET m%d\r\n", i%7)
			case 1:
				b.WriteString("GET h\r\n")
			case 2:
				fmt.Fprintf(&b, "MGET h m%d h\r\n", i%3)
			case 3:
				b.WriteString("PING\r\n")
			default:
				b.WriteString("MGET h h\r\n")
			}
		}
		c.send(b.String())
		checkQueue(t, cn)
		for len(lp.tasks) > 0 {
			lp.runTask(t)
			checkQueue(t, cn)
		}
		s.cache.Invalidate("m0")
	}
	lp.runUntil(t, func() bool { return cn.queued() == 0 && len(c.in) == 0 })
	if cn.queuedBytes != 0 {
		t.Fatalf("queuedBytes %d with nothing queued", cn.queuedBytes)
	}
}

// A client that reads slowly pauses its own pipeline once outputHigh bytes
// wait unsent, and it resumes when the client has read them; one that never
// reads is closed at once when its unparsed input passes maxInbound, with an
// answer saying so, instead of making the proxy hold its answers.
func TestOutputBackpressure(t *testing.T) {
	s, lp := newTestServer(t, nil)
	big := strings.Repeat("x", 100<<10)
	s.cache.Set("big", []byte(big))
	c := lp.open(t)
	c.stuck = true
	n := 200
	c.send(strings.Repeat("GET big\r\n", n))
	if len(c.in) == 0 {
		t.Fatal("kept answering a client that reads nothing")
	}
	if c.unsent > outputHigh+flushAt+len(big) {
		t.Fatalf("%d bytes left unsent with the client", c.unsent)
	}
	// While the client reads nothing, the loop looks less and less often.
	lpc := c.ctx.(*conn).lp
	for range 8 {
		lp.runTask(t)
	}
	if lpc.watchEvery != maxWatchInterval {
		t.Fatalf("still checking every %v on a client that reads nothing", lpc.watchEvery)
	}
	c.stuck, c.unsent = false, 0 // the client reads everything
	lp.runUntil(t, func() bool { return len(c.in) == 0 })
	if got := strings.Count(c.takeOut(), big); got != n {
		t.Fatalf("%d of %d answers", got, n)
	}
	if c.ctx.(*conn).held != nil {
		t.Fatal("the held input was kept after it was used up")
	}

	// A client that never reads is cut off once it is maxInbound ahead, and
	// told so after the answers it was sent...
	s.cache.Set("medium", make([]byte, bodyAt/2))
	never := cutOff(t, lp, "GET medium\r\n")
	if out := never.out.String(); !strings.HasSuffix(out, "-ERR Protocol error: request or unanswered pipeline over 64 MiB\r\n") {
		t.Fatalf("cut off with %.80q at the end", out[max(0, len(out)-80):])
	}
	// ...unless a large value it has not read is under way: the message
	// cannot follow that, and the connection is just closed.
	never = cutOff(t, lp, "GET big\r\n")
	if out := never.out.String(); strings.Contains(out, "-ERR") || never.unsent > outputLow+bodyChunk+len(big) {
		t.Fatalf("cut off with %.80q at the end, %d bytes unsent", out[max(0, len(out)-80):], never.unsent)
	}
}

// cutOff sends request over and over on a new connection whose client reads
// nothing, until the proxy closes it, and checks that the input went too.
func cutOff(t *testing.T, lp *fakeLoop, request string) *fakeConn {
	t.Helper()
	never := lp.open(t)
	never.stuck = true
	chunk := strings.Repeat(request, 1<<16)
	for sent := 0; !never.send(chunk); sent += len(chunk) {
		if sent > 2*maxInbound {
			t.Fatalf("still reading a client that never reads after %d bytes", sent)
		}
	}
	if len(never.in) != 0 {
		t.Fatalf("kept %d bytes of input from a client being cut off", len(never.in))
	}
	return never
}

// An MGET's keys each count once as a hit or a miss, as GETs of them would
// (a key looked up twice could also be found cached the second time, and
// leave the MGET waiting for nothing).
func TestMGETLooksUpEachKeyOnce(t *testing.T) {
	redis, s, lp := newTestProxy(t)
	redis.Do("SET", "m", "v")
	s.cache.Set("h", []byte("hit"))
	c := lp.open(t)
	before := s.cache.Stats()
	c.send("MGET h m h nope\r\n")
	lp.runUntil(t, func() bool { return c.out.Len() > 0 })
	if got := c.takeOut(); got != "*4\r\n$3\r\nhit\r\n$1\r\nv\r\n$3\r\nhit\r\n$-1\r\n" {
		t.Fatalf("MGET: %q", got)
	}
	after := s.cache.Stats()
	if hits, misses := after.Hits-before.Hits, after.Misses-before.Misses; hits != 2 || misses != 2 {
		t.Fatalf("%d hits and %d misses counted, want 2 and 2", hits, misses)
	}
}

// Keys waiting for Redis count against the queue bound too: MGETs of many
// missing keys pause the connection like answers do, and one MGET of more
// keys than its bound allows is refused before anything is fetched.
func TestMGETKeysInFlightCount(t *testing.T) {
	// 60,000 fetches through 4 workers: under -race on a loaded machine some
	// would wait past a 1 s timeout, and their MGETs fail; the bounds, not the
	// speed, are what this tests.
	_, s, lp := newTestProxyWith(t, newTestCache(), 30*time.Second)
	c := lp.open(t)
	cn := c.ctx.(*conn)
	mget := func(prefix string, n int) string {
		var b strings.Builder
		b.WriteString("MGET")
		for i := range n {
			fmt.Fprintf(&b, " %s%d", prefix, i)
		}
		return b.String() + "\r\n"
	}
	keys := 10_000
	c.send(mget("a", keys) + mget("b", keys) + mget("c", keys) + mget("d", keys) + mget("e", keys) + mget("f", keys))
	if len(c.in) == 0 {
		t.Fatalf("parsed six MGETs of %d missing keys each at once", keys)
	}
	if limit := maxQueuedBytes + (fetchCost+len("a0000"))*keys; cn.queuedBytes > limit {
		t.Fatalf("%d bytes queued, bound %d", cn.queuedBytes, limit)
	}
	lp.runUntil(t, func() bool {
		if out := c.out.String(); strings.Contains(out, "-ERR") {
			t.Fatalf("an MGET failed: %.200q", out[strings.Index(out, "-ERR"):])
		}
		return strings.Count(c.out.String(), "*10000\r\n") == 6
	})
	c.takeOut()
	checkQueue(t, cn)

	fetches := s.backend.Stats().Fetches
	var big strings.Builder
	n := maxMGETBytes/fetchCost + 1
	fmt.Fprintf(&big, "*%d\r\n$4\r\nMGET\r\n", n+1)
	for i := range n {
		k := fmt.Sprint("z", i)
		fmt.Fprintf(&big, "$%d\r\n%s\r\n", len(k), k)
	}
	c.send(big.String() + "PING\r\n")
	if got := c.takeOut(); got != "-"+errMGETTooBig.Error()+"\r\n+PONG\r\n" {
		t.Fatalf("an MGET of too many keys: %.100q", got)
	}
	if s.backend.Stats().Fetches != fetches {
		t.Fatal("fetched keys for an MGET that was refused")
	}
}

// --idle-timeout closes a client that has sent nothing for that long, unless
// it waits for an answer; an active client stays.
func TestIdleTimeout(t *testing.T) {
	redis, s, lp := newTestProxy(t)
	s.cfg.IdleTimeout = 2 * time.Second
	redis.Do("SET", "slow", "v")
	idle := lp.open(t)
	active := lp.open(t)
	waiting := lp.open(t)
	waiting.send("GET slow\r\n") // the answer is queued; its delivery is not run yet
	lp0 := idle.ctx.(*conn).lp
	s.clock.Store(1)
	active.send("PING\r\n")
	s.closeIdle(lp0)
	if idle.closed || active.closed || waiting.closed {
		t.Fatal("closed a client before the idle timeout")
	}
	s.clock.Store(2)
	s.closeIdle(lp0)
	if idle.closed {
		t.Fatal("closed a client silent for exactly the idle timeout (the clock counts whole seconds)")
	}
	s.clock.Store(3)
	s.closeIdle(lp0)
	if !idle.closed {
		t.Fatal("an idle client was not closed")
	}
	if active.closed || waiting.closed {
		t.Fatal("closed an active client, or one waiting for its answer")
	}
	if len(lp0.conns) != 2 {
		t.Fatalf("%d connections registered, want 2", len(lp0.conns))
	}

	// A client reading a large answer is active; one that stopped reading is not.
	reading, stopped := lp.open(t), lp.open(t)
	reading.stuck, stopped.stuck = true, true
	reading.unsent, stopped.unsent = 4<<20, 4<<20
	for now := int64(3); now <= 6; now++ {
		s.clock.Store(now)
		reading.unsent -= 1 << 20
		s.closeIdle(lp0)
	}
	if reading.closed {
		t.Fatal("closed a client that was reading its answers")
	}
	if !stopped.closed {
		t.Fatal("a client that read nothing for the idle timeout was not closed")
	}
}

// On shutdown every connection answers what it has received and closes;
// what arrives later is not parsed, so a steady stream of misses cannot keep
// fetches in flight for ever.
func TestDrainAnswersWhatWasReceived(t *testing.T) {
	redis, s, lp := newTestProxy(t)
	redis.Do("SET", "m", "v")
	c := lp.open(t)
	idle := lp.open(t)
	c.send("GET m\r\nPING\r\n")
	s.finishConns(c.ctx.(*conn).lp)
	if !idle.closed {
		t.Fatal("an idle connection stayed open on shutdown")
	}
	c.send("GET m\r\n") // after the drain began: not parsed
	lp.runUntil(t, func() bool { return c.closed })
	if got := c.takeOut(); got != "$1\r\nv\r\n+PONG\r\n" {
		t.Fatalf("answers on shutdown: %q", got)
	}
	if n := s.pending.Load(); n != 0 {
		t.Fatalf("%d fetches in flight after the drain", n)
	}
}

// A queue that fills with answers all ready at once (here behind an MGET
// refused for its size, which waits for no fetch) is written and parsing
// goes on: no delivery would come to resume it.
func TestFullQueueOfReadyAnswersResumes(t *testing.T) {
	s, lp := newTestServer(t, nil)
	s.cache.Set("big", []byte(strings.Repeat("x", 1<<20)))
	c := lp.open(t)
	n := maxQueued + 100
	c.send("MGET miss" + strings.Repeat(" big", maxMGETBytes>>20+1) + "\r\n" + strings.Repeat("PING\r\n", n))
	out := c.takeOut()
	if !strings.HasPrefix(out, "-"+errMGETTooBig.Error()) || strings.Count(out, "+PONG\r\n") != n {
		t.Fatalf("%d of %d PINGs answered; %d bytes left unparsed", strings.Count(out, "+PONG\r\n"), n, len(c.in))
	}
}

// A fetch's "no such key" (or WRONGTYPE) drops an entry being revalidated,
// but not a value a newer fetch cached after the key changed.
func TestMissingKeyDropsOnlyWhatItCovers(t *testing.T) {
	cache := newTestCache()
	fill := CacheFill(cache)
	cache.Set("gone", []byte("old"))
	cache.Set("list", []byte("old"))
	cache.Revalidate()
	fill("gone", cache.Version("gone"), backend.Result{})
	fill("list", cache.Version("list"), backend.Result{Err: backend.ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value")})
	for _, k := range []string{"gone", "list"} {
		if cache.GetStale([]byte(k), func(_ []byte, _ int64) {}) {
			t.Fatalf("%s: the old entry stayed", k)
		}
	}
	early := cache.Version("k")                                                      // a GET of k is sent; k does not exist yet
	cache.Invalidate("k")                                                            // SET k in Redis
	fill("k", cache.Version("k"), backend.Result{Value: []byte("new"), Found: true}) // a newer fetch caches it
	fill("k", early, backend.Result{})                                               // the old GET's nil lands late
	if !cache.Get([]byte("k"), func([]byte) {}) {
		t.Fatal("a late 'no such key' dropped the newer value")
	}
}

// A large value is written from the cache's own copy (or the fetched one) as
// the client reads, not copied into the output whole: a client that reads
// nothing holds at most outputLow plus a chunk of it in socket buffers; what
// it reads later is the value as it was when asked for, even if the key has
// since been rewritten or evicted, followed by the answers behind it in order.
func TestLargeValueIsWrittenAsTheClientReads(t *testing.T) {
	for _, tc := range []struct {
		name, request, small string
		answer               func(v string) string
	}{
		{"resp", "GET big\r\nGET small\r\n", "$5\r\nsmall\r\n", func(v string) string { return fmt.Sprintf("$%d\r\n%s\r\n", len(v), v) }},
		{"http", "GET /big HTTP/1.1\r\n\r\nGET /small HTTP/1.1\r\n\r\n", "\r\n\r\nsmall", func(v string) string { return "\r\n\r\n" + v }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, lp := newTestServer(t, nil)
			old := strings.Repeat("o", 3<<20)
			s.cache.Set("big", []byte(old))
			s.cache.Set("small", []byte("small"))
			c := lp.open(t)
			c.stuck = true
			c.send(tc.request)
			if c.unsent > outputLow+bodyChunk+1024 {
				t.Fatalf("%d bytes of a %d-byte value went to a client that reads nothing", c.unsent, len(old))
			}
			s.cache.Set("big", []byte(strings.Repeat("n", 3<<20))) // rewritten meanwhile
			s.cache.Invalidate("big")
			c.stuck, c.unsent = false, 0 // the client reads
			lp.runUntil(t, func() bool {
				return strings.HasSuffix(c.out.String(), "small") || strings.HasSuffix(c.out.String(), "small\r\n")
			})
			out := c.takeOut()
			i, j := strings.Index(out, tc.answer(old)), strings.Index(out, tc.small)
			if i < 0 || j < i || strings.Contains(out, "nnnnnnnn") {
				t.Fatalf("answers wrong or out of order (%d bytes; value at %d, next answer at %d)", len(out), i, j)
			}
		})
	}
}

// A connection that closes while a large value is under way is let go: the
// rest is not written, and its slot no longer counts.
func TestLargeValueCutShortByClose(t *testing.T) {
	s, lp := newTestServer(t, nil)
	s.cache.Set("big", make([]byte, 4<<20))
	c := lp.open(t)
	c.stuck = true
	c.send("GET big\r\n")
	cn := c.ctx.(*conn)
	if cn.queued() != 1 || cn.queuedBytes == 0 {
		t.Fatalf("the value under way: %d slots, %d bytes queued", cn.queued(), cn.queuedBytes)
	}
	written := c.out.Len()
	_ = lp.Close(c)
	for len(lp.tasks) > 0 { // the watch's checks find it closed
		lp.runTask(t)
	}
	if c.out.Len() != written {
		t.Fatalf("%d bytes written after the close", c.out.Len()-written)
	}
}

// A large value fetched from Redis is answered the same way, by reference to
// the fetched copy.
func TestLargeValueMiss(t *testing.T) {
	redis, _, lp := newTestProxy(t)
	value := strings.Repeat("m", 2<<20)
	redis.Do("SET", "big", value)
	c := lp.open(t)
	c.stuck = true
	c.send("GET big\r\nPING\r\n")
	lp.runUntil(t, func() bool { return c.unsent > 0 })
	if c.unsent > outputLow+bodyChunk+1024 {
		t.Fatalf("%d bytes of a fetched %d-byte value went to a client that reads nothing", c.unsent, len(value))
	}
	c.stuck, c.unsent = false, 0
	want := fmt.Sprintf("$%d\r\n%s\r\n+PONG\r\n", len(value), value)
	lp.runUntil(t, func() bool { return c.out.Len() >= len(want) })
	if c.takeOut() != want {
		t.Fatal("the fetched value or the answer after it came out wrong")
	}
}

// A peer that vanishes in the middle of a large value is let go at once:
// nothing meant for it, such as the value's closing CRLF, is left in the
// loop's output for the next client the loop writes to.
func TestLargeValueToVanishedPeer(t *testing.T) {
	s, lp := newTestServer(t, nil)
	s.cache.Set("big", make([]byte, bodyAt))
	s.cache.Set("small", []byte("small"))
	gone := lp.open(t)
	gone.gone = 1 // the header goes out, the body's first write fails
	gone.send("GET big\r\n")
	if !gone.closed {
		t.Fatal("the failed write did not close the connection")
	}
	next := lp.open(t)
	next.send("GET small\r\n")
	if got := next.takeOut(); got != "$5\r\nsmall\r\n" {
		t.Fatalf("the next client got %q", got)
	}
}

// The idle timeout applies to a client that stopped reading a large value
// half way (its answer stays queued until it is read), and not to one that
// reads it slowly.
func TestIdleTimeoutDuringLargeValue(t *testing.T) {
	s, lp := newTestServer(t, nil)
	s.cfg.IdleTimeout = 2 * time.Second
	s.cache.Set("big", make([]byte, 8<<20))
	reading, stopped := lp.open(t), lp.open(t)
	reading.stuck, stopped.stuck = true, true
	reading.send("GET big\r\n")
	stopped.send("GET big\r\n")
	lp0 := reading.ctx.(*conn).lp
	for now := int64(1); now <= 6; now++ {
		s.clock.Store(now)
		reading.unsent = 0 // it read everything sent so far
		s.checkWatched(lp0)
		s.closeIdle(lp0)
	}
	if reading.closed {
		t.Fatal("closed a client that was reading its large answer")
	}
	if !stopped.closed {
		t.Fatal("a client that stopped reading its large answer was never closed as idle")
	}
}
