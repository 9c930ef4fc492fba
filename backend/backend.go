// Package backend fetches cache misses from the backing Redis.
//
// How it works. Fetch hands a key to a fixed pool of MaxParallel worker
// goroutines through a bounded queue and returns at once, so the caller (an
// event loop) never waits on Redis; the worker's GET goes through one shared
// rueidis client and its answer goes to the caller's callback, on the worker.
// Concurrent fetches of one key are coalesced (flight.go): the first starts a
// GET, the others wait for its answer, so a hot key that expires under load
// costs Redis one GET. FetchMany sends the keys it has to fetch as one batch
// (DoMulti). rueidis auto-pipelines: GETs issued concurrently by the workers
// are written to Redis together in one flush and answered in one read, so a
// burst of misses from every loop costs a few round trips, not one each.
//
// The client is built for a proxy rather than an application:
//   - AlwaysPipelining: a timed-out GET is abandoned, not answered by closing
//     the shared connection (rueidis's sync mode would close it);
//   - DisableRetry and a dial timeout no longer than the fetch timeout: a
//     fetch fails within its timeout when Redis is away, instead of retrying
//     until its deadline, so the proxy answers 502 fast and 504 only for a
//     Redis that is there but slow;
//   - DisableCache: the proxy has its own cache, rueidis's would be a second;
//   - no CLIENT SETINFO: an ACL user made for the proxy would need
//     +client|setinfo, or fill Redis's ACL LOG with refusals.
//
// Redis is one server, a Redis Cluster or a primary found through Sentinel
// (Config.Mode; deploy.go). The proxy starts, and serves what it can, while
// Redis is still down: a single server's client is made at once and rueidis
// redials by itself; a cluster's or Sentinel's needs the topology first, so
// while no node named can be reached misses fail with the cause and the
// client is made again in the background.
//
// Every connection, the tracker's included, is dialled with the same
// options: TLS when Addr is a rediss:// URL or Config asks for it (verifying
// Redis's certificate against the system's authorities, or TLSRoots, for the
// address each node is dialled by), and authenticated in the HELLO that opens it when there
// are credentials. A dial that fails (an unknown authority, a certificate
// for another name, a refused password) fails the fetches waiting for it
// with that cause, and the next fetch dials again.
//
// The proxy is read-only: what this package sends Redis is reads (GET, and
// PTTL beside it) and its connections' own commands (HELLO, PING, CLIENT
// TRACKING; CLUSTER SLOTS or SENTINEL queries to learn the topology), never
// a write.
package backend

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// Config says where Redis is and how hard to use it.
type Config struct {
	// Addr is host:port, several (host:port,host:port: a cluster's seed
	// nodes or the sentinels), or a redis://[user:pass@]host:port[/db] or
	// rediss:// URL.
	Addr string
	// Mode is what Addr names: ModeStandalone, ModeCluster, ModeSentinel,
	// or ModeAuto ("" too), which is Sentinel with a SentinelMaster and
	// otherwise a cluster if the node reached first is in one.
	Mode string
	// SentinelMaster is the name the sentinels know the primary by.
	SentinelMaster string
	// User and Password, if set, are the credentials the connections
	// authenticate with, in place of those in an Addr URL; a Password
	// without a User is the default user's.
	User, Password string
	// TLSRoots, if set, are the authorities Redis's certificate is verified
	// against, instead of the system's; TLSInsecure skips the verification
	// (for tests only: anyone between the proxy and Redis could pose as
	// Redis). Either turns TLS on, whatever Addr's scheme.
	TLSRoots    *x509.CertPool
	TLSInsecure bool
	// Timeout bounds one fetch, dialling included.
	Timeout time.Duration
	// MaxParallel is the number of fetches in flight at once.
	MaxParallel int
	// QueueLen is how many jobs (a FetchMany's new GETs, up to 128 a job)
	// may wait for a worker; beyond it Fetch refuses with ErrOverloaded.
	QueueLen int
	// OnReachable, if set, is called when Redis stops or starts answering
	// GETs (the first failure to reach it, the first answer after), with
	// the failure's cause: once per change, from a worker.
	OnReachable func(up bool, err error)
	// Versions, if set, tell a value an invalidation overtook: its Version
	// of a key is taken when a GET of the key is about to be sent and handed
	// to OnResult with the result; and a fetch does not join a GET under way
	// if the key has Changed since that GET's version was taken (its answer
	// may predate a write the new reader has already seen invalidated).
	Versions Versions
	// OnResult, if set, is called once per GET sent, with its result, before
	// the waiters are told and before later fetches of the key stop joining
	// this one: the place to cache the value so that no second GET follows.
	OnResult func(key string, token uint64, r Result)
	// Tracking, if set, subscribes to Redis's invalidation messages
	// (tracking.go).
	Tracking *Tracking
	// FetchTTL sends a PTTL with every GET, in the same pipeline, so that
	// Result.TTL says how long Redis will keep the key.
	FetchTTL bool
}

// Versions is what the cache keeps of its keys' invalidations.
type Versions interface {
	Version(key string) uint64
	Changed(key string, version uint64) bool
}

// Result is the outcome of one fetch: a value, no such key (Found false, Err
// nil), or an error. TTL is how long Redis will keep the key (with
// Config.FetchTTL; 0 when it has no expiry or was not asked).
type Result struct {
	Value []byte
	Found bool
	TTL   time.Duration
	Err   error
}

// Errors a fetch can end in besides a ReplyError.
var (
	ErrTimeout    = errors.New("backend timeout")
	ErrOverloaded = errors.New("too many backend fetches waiting")
	ErrClosed     = errors.New("backend closed")
)

// ReplyError is an error reply from Redis (such as WRONGTYPE), passed through
// to the client word for word.
type ReplyError string

func (e ReplyError) Error() string { return string(e) }

// AsReply returns err as a ReplyError if it is one. (errors.As with a
// variable of the caller's would put it on the heap on every call, error or
// not: once per miss.)
func AsReply(err error) (ReplyError, bool) {
	if err == nil {
		return "", false
	}
	var reply ReplyError
	ok := errors.As(err, &reply)
	return reply, ok
}

// UnavailableError means Redis could not be reached or the connection failed.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "backend unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// Stats are the client's counters.
type Stats struct {
	Fetches   uint64 // GETs sent
	Errors    uint64 // GETs that ended in an error (not counting a missing key)
	Coalesced uint64 // fetches that joined a GET already under way
	Queued    int    // batches of GETs waiting for a worker now
	Down      bool   // the last GET failed to reach Redis
	Latency   Latency
}

// job is one batch of flights for a worker: one GET, or an MGET's misses.
type job struct {
	flights  []*flight
	deadline time.Time // the fetch's timeout runs from when it was queued
}

// Client fetches keys from Redis. Create it with New, stop it with Close.
type Client struct {
	redis    atomic.Pointer[connection]
	quit     chan struct{}  // closed by Close: stops connect
	dialling sync.WaitGroup // connect
	tls      bool           // the connections are TLS
	user     string         // the ACL user they authenticate as
	timeout  time.Duration
	fetchTTL bool
	versions Versions
	onResult func(string, uint64, Result)
	tracker  *tracker
	jobs     *jobQueue
	queued   atomic.Int64 // jobs reserved in the queue
	queueLen int64
	flights  [flightShards]flightShard
	workers  sync.WaitGroup

	onReachable func(bool, error)
	reachMu     sync.Mutex // orders OnReachable calls
	latency     latencyHistogram
	fetches     atomic.Uint64
	errors      atomic.Uint64
	coalesced   atomic.Uint64
	down        atomic.Bool
	started     time.Time    // the clock lastDown and lastUp count from (monotonic)
	lastDown    atomic.Int64 // when (ns since started) a fetch last failed to reach Redis
	lastUp      atomic.Int64 // when one last reached it, while down
	upPending   atomic.Bool  // settleUp is due
	closing     sync.Once
	// refused is the refusal Redis last gave the proxy's credentials or
	// commands (WRONGPASS, NOPERM...) and until when misses fail with it
	// without asking again: each try is a dial, a TLS handshake and a
	// refused AUTH, from every proxy, on every miss.
	refused atomic.Pointer[cooldown]
}

// cooldown is a refusal and until when (Unix ns) it stands.
type cooldown struct {
	err   *UnavailableError
	until int64
}

// upAfter is how long fetches must reach Redis without a failure before it
// counts as up again.
const upAfter = time.Second

// shutOutCooldown is how long a refusal of the proxy's credentials or
// commands fails misses at once before the next GET tries again.
const shutOutCooldown = 500 * time.Millisecond

// New parses cfg, connects to Redis and starts the workers. It fails only for
// a bad configuration; Redis being down is not an error here (see Ping).
func New(cfg Config) (*Client, error) {
	opt, mode, err := clientOptions(cfg)
	if err != nil {
		return nil, err
	}
	opt.Dialer.Timeout = cfg.Timeout
	opt.Sentinel.Dialer.Timeout = cfg.Timeout
	// Re-read the topology now and then, not only on a MOVED or a dropped
	// connection: a failed replica leaves the slot map (and the tracker's
	// nodes), a missed +switch-master is caught up with.
	opt.ClusterOption.ShardsRefreshInterval = 10 * time.Second
	opt.Sentinel.TopologyRefreshInterval = 5 * time.Second
	// Streamed values (stream.go) take connections of their own from a
	// pool: let those a burst opened go once idle.
	opt.BlockingPoolCleanup = 30 * time.Second
	opt.AlwaysPipelining = true
	opt.DisableRetry = true
	opt.DisableCache = true
	opt.ClientSetInfo = rueidis.DisableClientSetInfo
	c := &Client{quit: make(chan struct{}), started: time.Now(), tls: opt.TLSConfig != nil, user: cmp.Or(opt.Username, "default"),
		timeout: cfg.Timeout, fetchTTL: cfg.FetchTTL, versions: cfg.Versions, onResult: cfg.OnResult,
		onReachable: cfg.OnReachable,
		jobs:        newJobQueue(), queueLen: int64(cfg.QueueLen)}
	for i := range c.flights {
		c.flights[i].m = make(map[string]*flight)
	}
	if !c.dial(opt, mode) {
		if _, err := c.client(); errors.Is(err, errSentinelNode) {
			return nil, err // a configuration error, not Redis being away
		}
		c.dialling.Add(1)
		go c.connect(opt, mode)
	}
	c.workers.Add(cfg.MaxParallel)
	for range cfg.MaxParallel {
		go c.work()
	}
	if cfg.Tracking != nil {
		c.tracker = startTracker(c.nodes, *cfg.Tracking, cfg.Timeout)
	}
	return c, nil
}

// TLS reports whether the connections to Redis are TLS.
func (c *Client) TLS() bool { return c.tls }

// User is the ACL user the connections to Redis authenticate as: "default"
// without credentials, or with a password alone.
func (c *Client) User() string { return c.user }

// Ping checks that Redis answers.
func (c *Client) Ping(ctx context.Context) error {
	rc, err := c.client()
	if err != nil {
		return err
	}
	return rc.Do(ctx, rc.B().Ping().Build()).Error()
}

// Fetch gets key and calls done with the result, on a worker goroutine; or,
// when the queue of fetches is full, at once with ErrOverloaded. If a GET of
// key is under way, Fetch joins it instead of sending another. The timeout
// counts from the GET's queueing, so time waiting for a worker counts too:
// no caller waits much longer than Timeout.
func (c *Client) Fetch(key string, done func(Result)) {
	c.FetchMany([]string{key}, func(_ int, r Result) { done(r) })
}

// FetchMany gets keys as Fetch does, joining GETs under way and sending the
// rest as one batch; done is called once per key, with its index. Once done
// has run for every index, FetchMany reads keys no more: the caller may
// reuse the slice (even before FetchMany returns).
func (c *Client) FetchMany(keys []string, done func(i int, r Result)) {
	deadline := time.Now().Add(c.timeout)
	reserved, overloaded := false, false
	reserve := func() bool { // a place in the queue for the job being filled
		if !reserved && !overloaded {
			if c.queued.Add(1) <= c.queueLen {
				reserved = true
			} else {
				c.queued.Add(-1)
				overloaded = true
			}
		}
		return reserved
	}
	var started []*flight // the job being filled, sized for the keys left
	for i, k := range keys {
		f, outcome := c.join(k, waiter{done, i}, reserve)
		switch outcome {
		case startedFlight:
			if started == nil {
				started = make([]*flight, 0, min(len(keys)-i, maxBatch))
			}
			started = append(started, f)
			if len(started) == maxBatch { // a full job goes; the next needs a place of its own
				c.queue(job{started, deadline})
				started, reserved = nil, false
			}
		case refused:
			done(i, Result{Err: ErrOverloaded})
		}
	}
	if len(started) > 0 {
		c.queue(job{started, deadline}) // its place was reserved
	}
}

// queue hands a job whose place is reserved to the workers. Once the client
// is closed there are none: its fetches fail rather than wait for ever.
func (c *Client) queue(j job) {
	if !c.jobs.push(j) {
		c.queued.Add(-1)
		for _, f := range j.flights {
			c.land(f, Result{Err: ErrClosed})
		}
	}
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{Fetches: c.fetches.Load(), Errors: c.errors.Load(), Coalesced: c.coalesced.Load(),
		Queued: c.jobs.len(), Down: c.down.Load(), Latency: c.latency.snapshot()}
}

// Close finishes the queued fetches, stops the workers and the tracker, and
// closes the connections. A Fetch after Close fails with ErrClosed; a second
// Close does nothing.
func (c *Client) Close() {
	c.closing.Do(c.close)
}

func (c *Client) close() {
	close(c.quit)
	c.dialling.Wait()
	c.jobs.close()
	c.workers.Wait()
	if c.tracker != nil {
		c.tracker.stop()
	}
	if rc, _ := c.client(); rc != nil {
		rc.Close()
	}
}

// maxBatch bounds the GETs of one job, and of one worker's pipeline: past
// 2000 commands rueidis would take a dedicated connection for it.
const maxBatch = 128

// keptWorkerBatch is the largest batch a worker keeps room for between
// batches.
const keptWorkerBatch = 16

// work sends the GETs of queued jobs, taking as many as are waiting (up to
// maxBatch GETs) into one DoMulti, so that a backlog of misses goes to Redis
// in a few large pipelines rather than many small ones. Only jobs whose
// deadlines lie within a tenth of the timeout of each other go together:
// each fetch keeps its own deadline (one that waited out its timeout in the
// queue fails alone, without taking fresh ones with it), and none waits much
// past its own for the others'.
func (c *Client) work() {
	defer c.workers.Done()
	var flights []*flight
	var deadlines []time.Time
	var carry job // taken off the queue but not sent with the last batch
	var scratch getScratch
	for {
		j := carry
		if j.flights == nil {
			var ok bool
			if j, ok = c.jobs.pop(); !ok {
				return
			}
			c.queued.Add(-1)
		}
		carry = job{}
		flights, deadlines = flights[:0], deadlines[:0]
		first := j.deadline
	gather:
		for {
			flights = append(flights, j.flights...)
			for range j.flights {
				deadlines = append(deadlines, j.deadline)
			}
			next, ok := c.jobs.tryPop()
			if !ok {
				break gather
			}
			c.queued.Add(-1)
			if len(flights)+len(next.flights) > maxBatch || next.deadline.Sub(first) > c.timeout/10 {
				carry = next
				break gather
			}
			j = next
		}
		if carry.flights != nil && c.putBack(carry) {
			carry = job{} // another worker, idle or free sooner, sends it
		}
		results := c.get(flights, deadlines, &scratch)
		for i, f := range flights {
			c.land(f, results[i])
		}
		// An idle worker must not keep the landed flights, and through
		// their waiters their callers' batches, alive, nor the values
		// fetched; nor, among hundreds of workers, the room of a large
		// batch.
		clear(flights)
		clear(results)
		if cap(flights) > keptWorkerBatch {
			flights, deadlines, scratch = nil, nil, getScratch{ctx: scratch.ctx}
		}
	}
}

// putBack returns a job a worker took but could not add to its batch to the
// queue, for a worker that is idle now, or done sooner, to send; rather than
// this one sending it only after its own round trip. It reports whether the
// queue had room.
func (c *Client) putBack(j job) bool {
	// Reserve its place, as FetchMany does, so that the queue stays within
	// its bound.
	if c.queued.Add(1) > c.queueLen {
		c.queued.Add(-1)
		return false
	}
	if !c.jobs.push(j) { // closing: this worker sends it
		c.queued.Add(-1)
		return false
	}
	return true
}

// getScratch is what get needs for a batch, kept by a worker from one batch
// to the next.
type getScratch struct {
	results []Result
	send    []int
	// cmds is nil after a batch that timed out: rueidis may still hold
	// its commands, to write them.
	cmds rueidis.Commands
	ctx  *batchContext // made on first use
}

// get sends the GETs of a batch, together, and returns their results. A
// fetch already past its deadline is not sent: it is a timeout.
func (c *Client) get(flights []*flight, deadlines []time.Time, scratch *getScratch) []Result {
	results := slices.Grow(scratch.results[:0], len(flights))[:len(flights)]
	send := slices.Grow(scratch.send[:0], len(flights)) // the flights still within their deadline
	scratch.results, scratch.send = results, send
	now := time.Now()
	var latest time.Time
	for i, d := range deadlines {
		if now.After(d) {
			results[i] = Result{Err: ErrTimeout}
			continue
		}
		send = append(send, i)
		if d.After(latest) {
			latest = d
		}
	}
	if len(send) == 0 {
		return results
	}
	rc, err := c.client()
	if err != nil {
		c.setDown(true, err)
	} else if r := c.refused.Load(); r != nil && now.UnixNano() < r.until {
		err = r.err
	}
	if err != nil {
		c.errors.Add(uint64(len(send)))
		for _, i := range send {
			results[i] = Result{Err: err}
		}
		return results
	}
	c.fetches.Add(uint64(len(send)))
	if scratch.ctx == nil {
		scratch.ctx = newBatchContext()
	}
	ctx := scratch.ctx
	ctx.arm(latest)
	defer ctx.disarm()
	per := 1 // commands per key: GET, and PTTL with fetchTTL
	if c.fetchTTL {
		per = 2
	}
	cmds := slices.Grow(scratch.cmds[:0], per*len(send))
	for _, i := range send {
		cmds = append(cmds, rc.B().Get().Key(flights[i].key).Build())
		if c.fetchTTL {
			cmds = append(cmds, rc.B().Pttl().Key(flights[i].key).Build())
		}
	}
	sent := time.Now()
	replies := rc.DoMulti(ctx, cmds...)
	c.latency.observe(time.Since(sent), len(send))
	scratch.cmds = nil
	if ctx.Err() == nil { // all answered: rueidis is done with the commands
		clear(cmds)
		scratch.cmds = cmds[:0]
	}
	for n, i := range send {
		results[i] = c.result(replies[per*n])
		if c.fetchTTL && results[i].Found {
			results[i] = withTTL(results[i], replies[per*n+1])
		}
	}
	return results
}

// withTTL adds the key's remaining lifetime from a PTTL reply: -1 means no
// expiry; -2 (or 0) means the key expired or went away between the GET and
// the PTTL, so it is reported missing rather than cached for a moment.
func withTTL(r Result, pttl rueidis.RedisResult) Result {
	ms, err := pttl.AsInt64()
	switch {
	case err != nil || ms == -1:
	case ms <= 0:
		return Result{}
	default:
		r.TTL = time.Duration(ms) * time.Millisecond
	}
	return r
}

func (c *Client) result(res rueidis.RedisResult) Result {
	return c.outcome(res.AsBytes())
}

// outcome is the Result of a GET that read v or ended in err, which it
// counts, and from which it learns whether Redis can be reached.
func (c *Client) outcome(v []byte, err error) Result {
	switch {
	case err == nil:
		c.setDown(false, nil)
		return Result{Value: v, Found: true}
	case rueidis.IsRedisNil(err):
		c.setDown(false, nil)
		return Result{}
	}
	c.errors.Add(1)
	err = classify(err)
	var unavailable *UnavailableError
	_, isReply := AsReply(err)
	switch {
	case errors.As(err, &unavailable):
		if isRefusal(unavailable) { // not letting us in, rather than unreachable
			c.refused.Store(&cooldown{unavailable, time.Now().Add(shutOutCooldown).UnixNano()})
		}
		c.setDown(true, err)
	case isReply:
		c.setDown(false, nil) // an answer (WRONGTYPE...): Redis is there
	}
	// A timeout says nothing either way: the state stands.
	return Result{Err: err}
}

// isRefusal reports whether e is Redis refusing the proxy's credentials or
// commands (classify made it from such a reply), rather than Redis not being
// reached at all.
func isRefusal(e *UnavailableError) bool {
	_, isReply := e.Err.(refusal)
	return isReply
}

// refusal is the text of a reply that shuts the proxy out.
type refusal string

func (r refusal) Error() string { return string(r) }

// setDown records whether Redis can be read from, and tells OnReachable
// when that changes; under reachMu, so that the lines it logs come in the
// order of the changes. Redis is up again only once a fetch has reached it
// and none has failed to for upAfter (settleUp): behind a cluster with one
// node away, misses to the others succeed between those to it, which would
// flap the state (and the log) many times a second.
func (c *Client) setDown(down bool, err error) {
	switch {
	case down:
		c.lastDown.Store(int64(time.Since(c.started)))
		if c.down.Load() {
			return
		}
	case !c.down.Load():
		return // the common case, without the lock or the clock
	default:
		c.lastUp.Store(int64(time.Since(c.started)))
		if wait := c.upWait(); wait > 0 {
			if !c.upPending.Swap(true) {
				time.AfterFunc(wait, c.settleUp)
			}
			return
		}
	}
	c.reachMu.Lock()
	defer c.reachMu.Unlock()
	if !down && c.upWait() > 0 {
		return // a failure since: settleUp will look again
	}
	if c.down.Swap(down) != down && c.onReachable != nil {
		c.onReachable(!down, err)
	}
}

// upWait is how long until upAfter has passed since the last failure.
func (c *Client) upWait() time.Duration {
	return time.Duration(c.lastDown.Load()) + upAfter - time.Since(c.started)
}

// settleUp, upAfter past the last failure, counts Redis up if a fetch has
// reached it since (and the client is still open).
func (c *Client) settleUp() {
	c.upPending.Store(false)
	select {
	case <-c.quit:
		return
	default:
	}
	if c.lastUp.Load() > c.lastDown.Load() {
		c.setDown(false, nil)
	}
}

// classify turns a rueidis error into ErrTimeout, a ReplyError or an
// *UnavailableError. An error reply that shuts the proxy out is
// unavailability, not an answer: the client did not cause it, and a cached
// value may stand in for it (--stale-if-error) where a WRONGTYPE may not.
func classify(err error) error {
	if re, ok := rueidis.IsRedisErr(err); ok {
		reply := ReplyError(withCode(re.Error()))
		if shutOut(string(reply)) {
			// Not the ReplyError itself: AsReply would find it (Unwrap)
			// and take it for Redis's answer about the key.
			return &UnavailableError{refusal(reply)}
		}
		return reply
	}
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout() {
		return ErrTimeout // Redis is there but too slow: even a dial can time out on a hung Redis
	}
	return &UnavailableError{err}
}

// shutOut reports whether an error reply means Redis serves the proxy
// nothing, rather than answering about one key: its credentials are refused,
// or its ACL user may not run a command it sends ("NOPERM this user has no
// permissions to run the 'get' command"). A NOPERM for a key outside the
// user's key patterns is the answer about that key.
func shutOut(reply string) bool {
	return credentialsRefused(reply) || strings.HasPrefix(reply, "NOPERM") && strings.Contains(reply, "permissions to run")
}

// credentialsRefused reports whether an error reply refuses the proxy's
// credentials: NOAUTH (none given), WRONGPASS (wrong, or the user is
// disabled or does not exist). Every command on the connection fails so
// until the ACL in Redis changes.
func credentialsRefused(reply string) bool {
	return strings.HasPrefix(reply, "NOAUTH") || strings.HasPrefix(reply, "WRONGPASS")
}

// withCode restores the "ERR " that rueidis strips from generic error
// replies: a reply whose first word is not an upper-case code had it.
func withCode(msg string) string {
	code, _, _ := strings.Cut(msg, " ")
	if code == "" || strings.ToUpper(code) != code {
		return "ERR " + msg
	}
	return msg
}
