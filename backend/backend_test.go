package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
	"github.com/redis/rueidis"
)

func newClient(t *testing.T, addr string, timeout time.Duration) *Client {
	t.Helper()
	return newClientWith(t, Config{Addr: addr, Timeout: timeout, MaxParallel: 8, QueueLen: 64})
}

func newClientWith(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// newConnected returns a client whose connection to Redis is up (so that a
// test can then hang Redis without the dial being what times out).
func newConnected(t *testing.T, cfg Config) *Client {
	t.Helper()
	c := newClientWith(t, cfg)
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

// fetch runs one Fetch and waits for its result.
func fetch(t *testing.T, c *Client, key string) Result {
	t.Helper()
	ch := make(chan Result, 1)
	c.Fetch(key, func(r Result) { ch <- r })
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("fetch never completed")
	}
	return Result{}
}

// awaitSent waits until c has sent n GETs (a worker holds them, past its
// look for more jobs to batch with).
func awaitSent(t *testing.T, c *Client, n uint64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); c.Stats().Fetches != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d GETs not sent: stats %+v", n, c.Stats())
		}
	}
}

func TestFetch(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	redis.Do("SET", "empty", "")
	redis.Do("RPUSH", "list", "x")
	c := newClient(t, redis.Addr, time.Second)

	if r := fetch(t, c, "k"); !r.Found || string(r.Value) != "v" || r.Err != nil {
		t.Fatalf("k: %+v", r)
	}
	if r := fetch(t, c, "empty"); !r.Found || len(r.Value) != 0 || r.Err != nil {
		t.Fatalf("empty: %+v", r)
	}
	if r := fetch(t, c, "missing"); r.Found || r.Err != nil {
		t.Fatalf("missing: %+v", r)
	}
	r := fetch(t, c, "list")
	var reply ReplyError
	if !errors.As(r.Err, &reply) || !strings.HasPrefix(string(reply), "WRONGTYPE ") {
		t.Fatalf("list: %+v", r)
	}
	if st := c.Stats(); st.Fetches != 4 || st.Errors != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFetchURL(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	c := newClient(t, "redis://"+redis.Addr+"/0", time.Second)
	if r := fetch(t, c, "k"); string(r.Value) != "v" {
		t.Fatalf("%+v", r)
	}
}

func TestBadAddress(t *testing.T) {
	for _, addr := range []string{"nohostport", "redis://[::1"} {
		if _, err := New(Config{Addr: addr, Timeout: time.Second, MaxParallel: 1, QueueLen: 1}); err == nil {
			t.Errorf("%q accepted", addr)
		}
	}
}

// With Redis gone, a fetch fails fast as unavailable; once Redis is back, the
// same client serves again without being rebuilt.
func TestRedisDownAndBack(t *testing.T) {
	redis := redistest.Start(t)
	c := newClient(t, redis.Addr, time.Second)
	redis.Do("SET", "k", "v")
	if r := fetch(t, c, "k"); !r.Found {
		t.Fatalf("%+v", r)
	}
	redis.Stop()
	start := time.Now()
	r := fetch(t, c, "k")
	var unavailable *UnavailableError
	if !errors.As(r.Err, &unavailable) {
		t.Fatalf("with Redis down: %+v", r)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("failing took %v; it should not wait for the timeout", d)
	}
	redis.Restart()
	redis.Do("SET", "k", "v2")
	deadline := time.Now().Add(5 * time.Second)
	for {
		r = fetch(t, c, "k")
		if r.Found && string(r.Value) == "v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A Redis that hangs (SIGSTOP) gives ErrTimeout after the fetch timeout.
func TestTimeout(t *testing.T) {
	redis := redistest.Start(t)
	c := newClient(t, redis.Addr, 200*time.Millisecond)
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	redis.Pause()
	defer redis.Resume()
	if r := fetch(t, c, "k"); !errors.Is(r.Err, ErrTimeout) {
		t.Fatalf("%+v", r)
	}
}

// Past its queue, a fetch is refused at once instead of blocking the caller;
// fetches of a key already being fetched join that GET and need no place.
func TestOverloaded(t *testing.T) {
	redis := redistest.Start(t)
	c := newConnected(t, Config{Addr: redis.Addr, Timeout: 2 * time.Second, MaxParallel: 1, QueueLen: 1})
	redis.Pause()
	var mu sync.Mutex
	results := map[string][]error{}
	var wg sync.WaitGroup
	fetch := func(k string) {
		for range 3 {
			wg.Add(1)
			c.Fetch(k, func(r Result) {
				mu.Lock()
				results[k] = append(results[k], r.Err)
				mu.Unlock()
				wg.Done()
			})
		}
	}
	fetch("k0")
	// Wait until the one worker has sent k0's GET and hangs on it. Not until
	// it has taken k0's job off the queue (queued back to 0): it then looks
	// for more jobs to batch with it, and could take k1's too, which would
	// leave k2 a place. A GET counted as sent is past that look.
	awaitSent(t, c, 1)
	fetch("k1") // takes the one place in the queue
	fetch("k2") // finds none
	redis.Resume()
	wg.Wait()
	for k, want := range map[string]error{"k0": nil, "k1": nil, "k2": ErrOverloaded} {
		for _, err := range results[k] {
			if !errors.Is(err, want) {
				t.Fatalf("%s: %v, want %v", k, err, want)
			}
		}
	}
	if st := c.Stats(); st.Fetches != 2 || st.Coalesced != 4 {
		t.Fatalf("stats %+v: want 2 GETs and 4 joins", st)
	}
}

// Concurrent fetches of one key cost one GET, and all see its result.
func TestCoalescing(t *testing.T) {
	redis := redistest.Start(t)
	var cached []string
	redis.Do("SET", "hot", "value")
	c := newConnected(t, Config{Addr: redis.Addr, Timeout: 5 * time.Second, MaxParallel: 8, QueueLen: 64,
		OnResult: func(k string, _ uint64, r Result) { cached = append(cached, k+"="+string(r.Value)) }})
	redis.Pause() // hold the GET so that every fetch below overlaps it
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for range 1000 {
		wg.Add(1)
		c.Fetch("hot", func(r Result) {
			if string(r.Value) != "value" {
				wrong.Add(1)
			}
			wg.Done()
		})
	}
	redis.Resume()
	wg.Wait()
	if st := c.Stats(); wrong.Load() != 0 || st.Fetches != 1 || st.Coalesced != 999 || len(cached) != 1 {
		t.Fatalf("%d wrong answers; stats %+v; OnResult %v", wrong.Load(), st, cached)
	}
}

// An MGET's misses go out as one batch, each key in its own flight.
func TestFetchMany(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "a", "1")
	redis.Do("RPUSH", "list", "x")
	c := newClient(t, redis.Addr, time.Second)
	got := make([]Result, 3)
	var wg sync.WaitGroup
	wg.Add(3)
	c.FetchMany([]string{"a", "missing", "list"}, func(i int, r Result) { got[i] = r; wg.Done() })
	wg.Wait()
	var reply ReplyError
	if string(got[0].Value) != "1" || got[1].Found || got[1].Err != nil || !errors.As(got[2].Err, &reply) {
		t.Fatalf("%+v", got)
	}
}

func TestWithCode(t *testing.T) {
	for in, want := range map[string]string{
		"WRONGTYPE Operation against a key": "WRONGTYPE Operation against a key",
		"unknown command":                   "ERR unknown command",
		"NOAUTH Authentication required.":   "NOAUTH Authentication required.",
	} {
		if got := withCode(in); got != want {
			t.Errorf("withCode(%q) = %q, want %q", in, got, want)
		}
	}
}

// Behind a hung Redis, fetches queued behind a stuck one fail with
// ErrTimeout too, their time in the queue counted; and a fetch whose time ran
// out in the queue is not sent at all.
func TestTimeoutCountsQueueing(t *testing.T) {
	redis := redistest.Start(t)
	c := newConnected(t, Config{Addr: redis.Addr, Timeout: 200 * time.Millisecond, MaxParallel: 1, QueueLen: 16})
	redis.Pause()
	defer redis.Resume()
	results := make(chan Result, 10)
	for i := range 10 { // distinct keys, so no joining
		c.Fetch(fmt.Sprint("k", i), func(r Result) { results <- r })
	}
	for range 10 {
		if r := <-results; !errors.Is(r.Err, ErrTimeout) {
			t.Fatalf("%+v", r)
		}
	}
	sent := c.Stats().Fetches
	if r := c.get([]*flight{{key: "late"}}, []time.Time{time.Now().Add(-time.Millisecond)}, &getScratch{}); !errors.Is(r[0].Err, ErrTimeout) {
		t.Fatalf("expired fetch: %+v", r[0])
	}
	if c.Stats().Fetches != sent {
		t.Fatal("a fetch whose time had run out was sent")
	}
}

// fakeVersions records invalidations as a cache would.
type fakeVersions struct {
	mu      sync.Mutex
	seq     uint64
	changed map[string]uint64
}

func (v *fakeVersions) Version(string) uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.seq
}

func (v *fakeVersions) Changed(key string, version uint64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.changed[key] > version
}

func (v *fakeVersions) invalidate(key string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.seq++
	v.changed[key] = v.seq
}

// A fetch that starts after its key was invalidated does not join a GET
// sent before the invalidation (whose answer may be the value before the
// write): it sends its own. Without an invalidation, fetches still join.
func TestNoJoinAcrossInvalidation(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	versions := &fakeVersions{changed: map[string]uint64{}}
	c := newConnected(t, Config{Addr: redis.Addr, Timeout: 5 * time.Second, MaxParallel: 4, QueueLen: 16, Versions: versions})
	redis.Pause()
	defer redis.Resume()
	results := make(chan Result, 3)
	c.Fetch("k", func(r Result) { results <- r })
	awaitSent(t, c, 1)
	versions.invalidate("k")
	c.Fetch("k", func(r Result) { results <- r }) // must not join the GET sent before
	c.Fetch("k", func(r Result) { results <- r }) // joins the second GET
	redis.Resume()
	for range 3 {
		if r := <-results; r.Err != nil || string(r.Value) != "v" {
			t.Fatalf("%+v", r)
		}
	}
	if st := c.Stats(); st.Fetches != 2 || st.Coalesced != 1 {
		t.Fatalf("stats %+v: want 2 GETs (one after the invalidation) and 1 join", st)
	}
}

// Fetches batched together keep their own deadlines: one that waited out
// its timeout in the queue fails, and a fresh one sent in the same batch is
// answered, instead of failing with it (which fed a backlog under load).
func TestBatchKeepsEachDeadline(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "fresh", "v")
	c := newConnected(t, Config{Addr: redis.Addr, Timeout: time.Second, MaxParallel: 1, QueueLen: 16})
	r := c.get([]*flight{{key: "old"}, {key: "fresh"}},
		[]time.Time{time.Now().Add(-time.Millisecond), time.Now().Add(time.Second)}, &getScratch{})
	if !errors.Is(r[0].Err, ErrTimeout) {
		t.Fatalf("the expired fetch: %+v", r[0])
	}
	if r[1].Err != nil || string(r[1].Value) != "v" {
		t.Fatalf("the fresh fetch batched with it: %+v", r[1])
	}
	if got := c.Stats().Fetches; got != 1 {
		t.Fatalf("%d GETs sent, want 1 (the expired one not sent)", got)
	}
}

// Behind a hung Redis, every fetch fails with a timeout after about its own
// timeout: not sooner because an older fetch it was sent with ran out, and
// not much later because it was sent with a younger one.
func TestEachFetchWaitsItsOwnTimeout(t *testing.T) {
	redis := redistest.Start(t)
	const timeout = time.Second
	c := newConnected(t, Config{Addr: redis.Addr, Timeout: timeout, MaxParallel: 1, QueueLen: 16})
	redis.Pause()
	defer redis.Resume()
	type outcome struct {
		waited time.Duration
		err    error
	}
	results := make(chan outcome, 3)
	fetch := func(key string) {
		start := time.Now()
		c.Fetch(key, func(r Result) { results <- outcome{time.Since(start), r.Err} })
	}
	fetch("k0") // sent, and hangs: the one worker is busy until it times out
	time.Sleep(timeout / 2)
	fetch("k1") // queued behind it
	time.Sleep(timeout * 45 / 100)
	fetch("k2") // queued too, with a deadline 0.45 s later than k1's
	for range 3 {
		o := <-results
		if !errors.Is(o.err, ErrTimeout) {
			t.Fatalf("%+v", o)
		}
		if o.waited < timeout*9/10 || o.waited > timeout*13/10 {
			t.Fatalf("a fetch timed out after %v; its timeout is %v", o.waited, timeout)
		}
	}
}

// A FetchMany of many keys goes out as jobs of at most maxBatch GETs, each
// taking its own place in the queue: one caller's batch cannot make one
// huge pipeline (rueidis sends those on connections of their own) nor slip
// past the queue bound.
func TestFetchManyIsCutIntoJobs(t *testing.T) {
	redis := redistest.Start(t)
	c := newConnected(t, Config{Addr: redis.Addr, Timeout: 5 * time.Second, MaxParallel: 1, QueueLen: 2})
	redis.Pause()
	defer redis.Resume()
	blocker := make(chan Result, 1)
	c.Fetch("blocker", func(r Result) { blocker <- r })
	awaitSent(t, c, 1)
	keys := make([]string, 3*maxBatch)
	for i := range keys {
		keys[i] = fmt.Sprint("key", i)
	}
	var mu sync.Mutex
	refused, answered := 0, 0
	var wg sync.WaitGroup
	wg.Add(len(keys))
	c.FetchMany(keys, func(_ int, r Result) {
		mu.Lock()
		if errors.Is(r.Err, ErrOverloaded) {
			refused++
		} else {
			answered++
		}
		mu.Unlock()
		wg.Done()
	})
	redis.Resume()
	wg.Wait()
	<-blocker
	if refused != maxBatch || answered != 2*maxBatch {
		t.Fatalf("%d refused, %d answered: want the third job of %d refused (the queue holds 2)", refused, answered, maxBatch)
	}
}

// A job a worker takes but cannot add to its pipeline goes back to the queue
// for the next free worker, instead of waiting behind this worker's round
// trip (under load, that made it late).
func TestUnmergeableJobGoesBack(t *testing.T) {
	redis := redistest.Start(t)
	c := newConnected(t, Config{Addr: redis.Addr, Timeout: 5 * time.Second, MaxParallel: 2, QueueLen: 4})
	redis.Pause()
	defer redis.Resume()
	var wg sync.WaitGroup
	wg.Add(1 + 2*maxBatch)
	c.Fetch("a", func(Result) { wg.Done() })
	awaitSent(t, c, 1) // one worker hangs on a
	keys := make([]string, 2*maxBatch)
	for i := range keys {
		keys[i] = fmt.Sprint("key", i)
	}
	c.FetchMany(keys, func(int, Result) { wg.Done() }) // two jobs: too many GETs for one pipeline
	awaitSent(t, c, 1+maxBatch)                        // the other worker sends the first
	if q := c.Stats().Queued; q != 1 {
		t.Fatalf("%d jobs in the queue while both workers are busy, want the second job there", q)
	}
	redis.Resume()
	wg.Wait()
}

// The tracker hears every write (BCAST), tells FLUSHALL apart from a dropped
// connection, and resyncs (flushes) once tracking is back after a drop.
//
// Both end in rueidis calling the invalidation hook with null; a FLUSHALL
// must flush the cache there and then (OnFlush), a drop must not (the cache
// keeps serving while Redis is away) but resync once, when tracking is back
// on (OnResync). So each hook records which it was and the tracking state it
// ran in: "flush on" for a FLUSHALL, "resync reconnecting" as tracking comes
// (back) on; and the drop must add nothing of its own, which would show as
// an extra entry.
func TestTracking(t *testing.T) {
	redis := redistest.Start(t)
	keys := make(chan string, 100)
	flushes := make(chan string, 100) // each OnFlush or OnResync, and the tracking state it ran in
	var c *Client
	ready := make(chan struct{}) // c is set
	c, err := New(Config{Addr: redis.Addr, Timeout: time.Second, MaxParallel: 2, QueueLen: 16, Tracking: &Tracking{
		OnInvalidate: func(ks []string) {
			for _, k := range ks {
				keys <- k
			}
		},
		OnFlush: func() {
			<-ready
			flushes <- "flush " + c.TrackingState()
		},
		OnResync: func(string) {
			<-ready
			flushes <- "resync " + c.TrackingState()
		},
		OnUnsupported: func(err error) { t.Errorf("tracking unsupported: %v", err) },
	}})
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	defer c.Close()
	flush := func(what, wantState string) {
		t.Helper()
		select {
		case state := <-flushes:
			if state != wantState {
				t.Fatalf("%s: %s, want %s", what, state, wantState)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no OnFlush or OnResync: %s", what)
		}
	}
	invalidated := func(key string) {
		t.Helper()
		for k := ""; k != key; {
			select {
			case k = <-keys:
			case <-time.After(10 * time.Second):
				t.Fatalf("no invalidation of %s", key)
			}
		}
	}

	flush("the resync when tracking first comes on", "resync reconnecting")
	trackingOn(t, c)
	redis.Do("SET", "a", "1")
	select {
	case k := <-keys:
		if k != "a" {
			t.Fatalf("invalidated %q, want a", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no invalidation for a SET")
	}
	redis.Do("FLUSHALL")
	flush("FLUSHALL", "flush on") // at once, the connection up: not taken for a drop

	// Drop the tracking connection, and only it (flags t: tracking), once.
	list := redis.Do("CLIENT", "LIST").String()
	var id string
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		fields := map[string]string{}
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			fields[k] = v
		}
		if strings.Contains(fields["flags"], "t") {
			if id != "" {
				t.Fatalf("two tracking connections:\n%s", list)
			}
			id = fields["id"]
		}
	}
	if id == "" {
		t.Fatalf("no tracking connection:\n%s", list)
	}
	redis.Do("CLIENT", "KILL", "ID", id)
	flush("the resync after the connection dropped", "resync reconnecting") // not "on": the drop itself flushed nothing
	trackingOn(t, c)
	redis.Do("SET", "b", "2")
	invalidated("b")
	redis.Do("FLUSHALL")
	flush("FLUSHALL after the reconnect", "flush on") // the next OnFlush: none came from the drop in between
	select {
	case state := <-flushes:
		t.Fatalf("an OnFlush too many (tracking %s)", state)
	default:
	}
}

// With FetchTTL, a fetch also reports how long Redis keeps the key.
func TestFetchTTL(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "expiring", "v", "PX", "5000")
	redis.Do("SET", "forever", "v")
	c := newClientWith(t, Config{Addr: redis.Addr, Timeout: time.Second, MaxParallel: 2, QueueLen: 16, FetchTTL: true})
	if r := fetch(t, c, "expiring"); !r.Found || r.TTL <= 0 || r.TTL > 5*time.Second {
		t.Fatalf("expiring: %+v", r)
	}
	if r := fetch(t, c, "forever"); !r.Found || r.TTL != 0 {
		t.Fatalf("forever: %+v", r)
	}
	if r := fetch(t, c, "missing"); r.Found || r.Err != nil {
		t.Fatalf("missing: %+v", r)
	}
}

// A password in --redis never reaches a message: Redacted hides it, also in
// a URL that does not parse.
func TestRedacted(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:6379":          "127.0.0.1:6379",
		"redis://h:1/0":           "redis://h:1/0",
		"redis://u:s3cret@h:1/0":  "redis://u:xxxxx@h:1/0",
		"rediss://:s3cret@h:1":    "rediss://:xxxxx@h:1",
		"redis://u:s3#cr/et@h:1":  "redis://xxxxx@h:1",
		"redis://u:s3%zzcret@h:1": "redis://xxxxx@h:1",
	} {
		if got := Redacted(in); got != want || strings.Contains(got, "s3") {
			t.Errorf("Redacted(%q) = %q, want %q", in, got, want)
		}
	}
	if _, err := New(Config{Addr: "redis://u:s3%zzcret@h:1", Timeout: time.Second, MaxParallel: 1, QueueLen: 1}); err == nil || strings.Contains(err.Error(), "s3") {
		t.Fatalf("a bad URL's error: %v", err)
	}
}

// An error reply that shuts the proxy out (refused credentials, a command
// its ACL user may not run) is unavailability; one about a key is an
// answer. The texts are Redis 7.0's and 7.2's.
func TestShutOut(t *testing.T) {
	for reply, want := range map[string]bool{
		"NOAUTH Authentication required.":                                                 true,
		"WRONGPASS invalid username-password pair or user is disabled.":                   true,
		"NOPERM this user has no permissions to run the 'get' command":                    true,
		"NOPERM User proxy has no permissions to run the 'get' command":                   true,
		"NOPERM this user has no permissions to access one of the keys used as arguments": false,
		"NOPERM No permissions to access a key":                                           false,
		"WRONGTYPE Operation against a key holding the wrong kind of value":               false,
	} {
		if got := shutOut(reply); got != want {
			t.Errorf("shutOut(%q) = %v, want %v", reply, got, want)
		}
	}
}

// Through TLS and as an ACL user, fetches and tracking work; a client with
// a password Redis refuses reports WRONGPASS as the reason Redis is
// unreachable, keeps trying tracking (not taking the refusal for a Redis
// without it), and recovers, tracking included, once Redis accepts the
// password; a client that cannot verify the certificate reports why.
func TestTLSAndACL(t *testing.T) {
	redis := redistest.StartWith(t, redistest.Options{TLS: true,
		Config: []string{"--user", "proxy", "on", ">pw", "~*", "+get", "+pttl", "+ping", "+client|tracking"}})
	redis.Do("SET", "k", "v")
	cfg := Config{Addr: redis.Addr, User: "proxy", Password: "pw", TLSRoots: redis.CA.Pool,
		Timeout: 10 * time.Second, MaxParallel: 2, QueueLen: 16, FetchTTL: true} // single fetches must not time out on a loaded machine
	type reach struct {
		up  bool
		err error
	}
	// withTracking is cfg with tracking (its invalidations to keys) and
	// reachability changes to reaches.
	withTracking := func(cfg Config, keys chan<- string, reaches chan<- reach) Config {
		cfg.Tracking = &Tracking{
			OnInvalidate:  func(ks []string) { keys <- ks[0] },
			OnFlush:       func() {},
			OnResync:      func(string) {},
			OnUnsupported: func(err error) { t.Errorf("tracking unsupported: %v", err) },
		}
		cfg.OnReachable = func(up bool, err error) { reaches <- reach{up, err} }
		return cfg
	}

	keys, reaches := make(chan string, 16), make(chan reach, 16)
	c := newClientWith(t, withTracking(cfg, keys, reaches))
	if r := fetch(t, c, "k"); string(r.Value) != "v" {
		t.Fatalf("GET through TLS as proxy: %+v", r)
	}
	if !c.TLS() || c.User() != "proxy" {
		t.Fatalf("TLS %v, user %q", c.TLS(), c.User())
	}
	trackingOn(t, c)
	redis.Do("SET", "k", "v2")
	select {
	case k := <-keys:
		if k != "k" {
			t.Fatalf("invalidated %q", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no invalidation through TLS")
	}

	// nextReach is the next reachability change, failing the test rather
	// than hanging it if none comes.
	nextReach := func() reach {
		t.Helper()
		select {
		case r := <-reaches:
			return r
		case <-time.After(30 * time.Second):
			t.Fatal("no reachability change within 30 s")
			return reach{}
		}
	}
	wrong := cfg
	wrong.Password = "pw2"
	c = newClientWith(t, withTracking(wrong, keys, reaches))
	var unavailable *UnavailableError
	r := fetch(t, c, "k")
	if _, isReply := AsReply(r.Err); !errors.As(r.Err, &unavailable) || !strings.Contains(r.Err.Error(), "WRONGPASS") || isReply {
		t.Fatalf("GET with a wrong password: %+v", r)
	}
	if r := nextReach(); r.up || !strings.Contains(fmt.Sprint(r.err), "WRONGPASS") {
		t.Fatalf("OnReachable with a wrong password: %+v", r)
	}
	if state := c.TrackingState(); state != "reconnecting" {
		t.Fatalf("tracking with a wrong password: %s", state)
	}
	// Refused, the misses of the next moments fail at once, without a
	// dial, a handshake and a refused AUTH each: of 20 misses in a row, at
	// most a couple reach Redis (one each time a cooldown has run out).
	sentBefore := c.Stats().Fetches
	for range 20 {
		if r := fetch(t, c, "k"); !strings.Contains(fmt.Sprint(r.Err), "WRONGPASS") {
			t.Fatalf("GET within the cooldown: %+v", r)
		}
	}
	if sent := c.Stats().Fetches - sentBefore; sent > 2 {
		t.Fatalf("%d of 20 misses while refused were sent to Redis", sent)
	}
	redis.Do("ACL", "SETUSER", "proxy", ">pw2") // Redis now takes it too
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if r := fetch(t, c, "k"); string(r.Value) == "v2" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("not recovered once the password is right: %+v", r)
		}
	}
	if r := nextReach(); !r.up {
		t.Fatalf("OnReachable after the recovery: %+v", r)
	}
	trackingOn(t, c)

	for _, tc := range []struct {
		what string
		cfg  Config
		want string
	}{
		{"another CA", Config{Addr: redis.Addr, TLSRoots: redistest.NewCA(t).Pool}, "certificate signed by unknown authority"},
		{"no CA (the system's)", Config{Addr: "rediss://" + redis.Addr}, "certificate signed by unknown authority"},
	} {
		tc.cfg.Timeout, tc.cfg.MaxParallel, tc.cfg.QueueLen = 10*time.Second, 1, 1
		if r := fetch(t, newClientWith(t, tc.cfg), "k"); !errors.As(r.Err, &unavailable) || !strings.Contains(r.Err.Error(), tc.want) {
			t.Errorf("%s: %+v, want unavailable: %s", tc.what, r, tc.want)
		}
	}
	insecure := newClientWith(t, Config{Addr: "rediss://" + redis.Addr, TLSInsecure: true, Timeout: 10 * time.Second, MaxParallel: 1, QueueLen: 1})
	if r := fetch(t, insecure, "k"); string(r.Value) != "v2" || insecure.User() != "default" {
		t.Fatalf("TLS without verification: %+v, user %q", r, insecure.User())
	}
}

// trackingOn waits, up to 10 s, for c's invalidation tracking to be on.
func trackingOn(t *testing.T, c *Client) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); c.TrackingState() != "on"; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("tracking %s, want on", c.TrackingState())
		}
	}
}

// What Config's address and mode make of the client: the mode dial settles
// on, and whether rueidis is told to make a single server's client.
func TestModes(t *testing.T) {
	for _, tc := range []struct {
		cfg    Config
		mode   string // "" when refused
		single bool
	}{
		{Config{Addr: "a:1"}, ModeAuto, true},
		{Config{Addr: "a:1", Mode: ModeStandalone}, ModeStandalone, true},
		{Config{Addr: "a:1", Mode: ModeCluster}, ModeCluster, false},
		{Config{Addr: "a:1, b:2"}, ModeCluster, false},
		{Config{Addr: "a:1,b:2", Mode: ModeStandalone}, "", false},
		{Config{Addr: "a:1,b:2", SentinelMaster: "m"}, ModeSentinel, false},
		{Config{Addr: "a:1", Mode: ModeSentinel, SentinelMaster: "m"}, ModeSentinel, false},
		{Config{Addr: "redis://a:1?master_set=m"}, ModeSentinel, false},
		{Config{Addr: "a:1", Mode: ModeSentinel}, "", false},
		{Config{Addr: "a:1", Mode: ModeCluster, SentinelMaster: "m"}, "", false},
		{Config{Addr: "a:1", Mode: "Cluster"}, "", false},
		{Config{Addr: "a:1,nohostport"}, "", false},
	} {
		opt, mode, err := clientOptions(tc.cfg)
		if mode != tc.mode || (err == nil) != (tc.mode != "") || err == nil && opt.ForceSingleClient != tc.single {
			t.Errorf("%+v: mode %q, single client %v, error %v; want %q, %v", tc.cfg, mode, opt.ForceSingleClient, err, tc.mode, tc.single)
		}
	}
	// Each node is verified under the name it is dialled by, not the URL's
	// host: a cluster's other nodes and a sentinel's primary have their own.
	opt, _, _ := clientOptions(Config{Addr: "rediss://a:1", SentinelMaster: "m"})
	if opt.TLSConfig == nil || opt.TLSConfig.ServerName != "" || opt.Sentinel.TLSConfig != opt.TLSConfig {
		t.Errorf("rediss:// with a sentinel master: TLS %+v, sentinels' %+v", opt.TLSConfig, opt.Sentinel.TLSConfig)
	}
}

// A client made while Redis is down in auto mode, which must ask Redis what
// it is: misses fail at once with the dial's cause, the client is made in
// the background once Redis answers, and tracking follows. Closing a client
// still connecting stops its retries (goleak checks).
func TestConnectsOnceRedisIsUp(t *testing.T) {
	port := redistest.FreePort(t)
	invalidated := make(chan []string, 10)
	c := newClientWith(t, Config{Addr: fmt.Sprint("127.0.0.1:", port), Timeout: time.Second, MaxParallel: 2, QueueLen: 8,
		Tracking: &Tracking{OnInvalidate: func(keys []string) { invalidated <- keys }, OnFlush: func() {}, OnResync: func(string) {},
			OnUnsupported: func(err error) { t.Errorf("tracking unsupported: %v", err) }}})
	var unavailable *UnavailableError
	if r := fetch(t, c, "k"); !errors.As(r.Err, &unavailable) || !strings.Contains(r.Err.Error(), "connection refused") {
		t.Fatalf("with Redis down: %+v", r)
	}
	if c.Mode() != ModeAuto || c.TrackingState() != "reconnecting" || c.Ping(context.Background()) == nil {
		t.Fatalf("with Redis down: mode %s, tracking %s", c.Mode(), c.TrackingState())
	}
	redis := redistest.StartWith(t, redistest.Options{Port: port})
	redis.Do("SET", "k", "v")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if r := fetch(t, c, "k"); r.Found && string(r.Value) == "v" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not connected 10 s after Redis came up")
		}
	}
	if c.Mode() != ModeStandalone {
		t.Fatalf("mode %s once connected to a single server", c.Mode())
	}
	trackingOn(t, c)
	redis.Do("SET", "k", "v2")
	select {
	case keys := <-invalidated:
		if !slices.Contains(keys, "k") {
			t.Fatalf("invalidated %v", keys)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no invalidation of k")
	}

	still, err := New(Config{Addr: fmt.Sprint("127.0.0.1:", redistest.FreePort(t)), Timeout: time.Second, MaxParallel: 1, QueueLen: 1})
	if err != nil {
		t.Fatal(err)
	}
	still.Close() // while connect waits to try again
}

// Redis counts as down from the first fetch that cannot reach it, and as up
// again only once fetches reach it and none has failed for upAfter: misses
// that alternate between a node that is away and others that answer (a
// cluster) report one change, not one per miss. A failure after the last
// success keeps it down; a success right after a failure brings it up
// upAfter after the failure (settleUp), not at once.
func TestReachabilitySettles(t *testing.T) {
	changes := make(chan bool, 100)
	c := &Client{started: time.Now(), quit: make(chan struct{}), onReachable: func(up bool, _ error) { changes <- up }}
	failed := errors.New("connection refused")
	for range 50 { // misses alternating between a node away and one that answers
		c.setDown(true, failed)
		c.setDown(false, nil)
	}
	if got := <-changes; got {
		t.Fatal("first change reported up")
	}
	c.setDown(true, failed) // the last word: a failure
	select {
	case up := <-changes:
		t.Fatalf("a change (up %v) with the last fetch failed", up)
	case <-time.After(2 * upAfter):
	}
	c.setDown(true, failed)
	lastFailure := time.Now()
	c.setDown(false, nil) // a success right after it: up only upAfter later
	select {
	case up := <-changes:
		if !up {
			t.Fatal("reported down again")
		}
		if waited := time.Since(lastFailure); waited < upAfter-50*time.Millisecond {
			t.Fatalf("up %v after the last failure, before upAfter (%v)", waited, upAfter)
		}
	case <-time.After(upAfter + 5*time.Second):
		t.Fatal("not up 5 s past upAfter after a success with no failure since")
	}
	if c.down.Load() || len(changes) != 0 {
		t.Fatalf("down %v, %d more changes", c.down.Load(), len(changes))
	}
}

// Tracking is on when every node the client has is tracked, bar the cluster
// nodes that need none: those last known to be replicas and those never
// reached. A node still connecting, or one server that cannot be reached,
// keeps it off.
func TestTrackingOnEveryNode(t *testing.T) {
	nodes := map[string]rueidis.Client{"a:1": nil, "b:2": nil, "c:3": nil}
	for _, tc := range []struct {
		name    string
		cluster bool
		set     func(n *nodeTracker) // on the tracker of c:3; a:1 and b:2 track
		want    bool
	}{
		{"all tracked", true, func(n *nodeTracker) { n.active.Store(true) }, true},
		{"one still connecting", true, func(n *nodeTracker) {}, false},
		{"one a replica", true, func(n *nodeTracker) { n.replica.Store(true) }, true},
		{"one never reached", true, func(n *nodeTracker) { n.unreachable.Store(true) }, true},
		{"one reached, then down", true, func(n *nodeTracker) { n.reachedNow() }, false},
		{"Sentinel's primary never reached", false, func(n *nodeTracker) { n.unreachable.Store(true) }, false},
	} {
		mode := rueidis.ClientModeSentinel
		if tc.cluster {
			mode = rueidis.ClientModeCluster
		}
		tr := &tracker{nodes: func() (map[string]rueidis.Client, rueidis.ClientMode) { return nodes, mode },
			following: map[string]*nodeTracker{}}
		for addr := range nodes {
			n := &nodeTracker{addr: addr, primariesOnly: tc.cluster}
			if addr == "c:3" {
				tc.set(n)
			} else {
				n.active.Store(true)
			}
			tr.following[addr] = n
		}
		if got := tr.on(); got != tc.want {
			t.Errorf("%s: on %v, want %v", tc.name, got, tc.want)
		}
	}
}
