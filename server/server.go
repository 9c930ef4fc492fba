// Package server is the proxy's front end: a gnet engine whose event loops
// accept client connections, detect each one's protocol (HTTP or RESP) from
// its first bytes, answer hits from the cache inline, hand misses to the
// backend, and write every answer back in request order.
//
// How it works. gnet runs one acceptor and Loops event loops; each loop owns
// its connections and is the only goroutine that touches their state, so
// nothing on the request path locks anything beyond one cache shard. A
// request's answer is appended either straight to the loop's output buffer
// (when nothing is waiting ahead of it on the connection) or to a slot at the
// tail of the connection's FIFO (conn.go). A miss leaves its slot empty and
// goes to the backend; when the fetch completes, a worker inserts the value
// into the cache and schedules the delivery back onto the connection's loop
// (EventLoop.Execute), where the slot is filled and the FIFO's ready prefix is
// written. All writes happen on the loop, from the head of the FIFO, so the
// order of answers never depends on the order in which fetches complete or in
// which gnet runs its tasks.
//
// The hit path of one request: OnTraffic -> Peek -> proto parse (no copy) ->
// cache.Get copies the value, under its shard lock, into the output buffer as
// a RESP bulk or HTTP body -> one Write per OnTraffic. It allocates nothing.
// A value of 64 KiB or more is not copied but referred to, and written from
// the cache's own copy as the client reads it (conn.go, writeBody).
package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/redis-proxy/redis-proxy/backend"
	"github.com/redis-proxy/redis-proxy/lru"
	"github.com/redis-proxy/redis-proxy/proto"
)

// Config is the front end's part of the proxy configuration.
type Config struct {
	Listen     string // host:port for HTTP and RESP
	Loops      int    // event loops; 0 means DefaultLoops()
	MaxClients int    // open client connections allowed at once
	PinCPUs    bool   // pin each loop's thread to its own CPU
	// IdleTimeout closes a client that has sent nothing for this long and
	// has no answer pending; 0 never does (Redis's timeout 0).
	IdleTimeout time.Duration
	// TCPKeepAlive is the keep-alive period of client sockets (Redis's
	// tcp-keepalive), so that peers that vanished are found and closed; 0 is off.
	TCPKeepAlive time.Duration
	// RateLimit and RateLimitPerClient are the key reads a second served
	// proxy-wide and per client IP; 0 is no limit (ratelimit.go).
	RateLimit          float64
	RateLimitPerClient float64
	// RequirePass, if set, is the password clients must give (auth.go).
	RequirePass string
	// ProtectedMode refuses non-loopback clients of a proxy listening on
	// every interface without RequirePass, as Redis's protected mode does.
	ProtectedMode bool
	Logger        *slog.Logger
}

// Server is the proxy's front end. Create it with New, run it with Serve,
// stop it with Shutdown.
type Server struct {
	gnet.BuiltinEventEngine

	cfg     Config
	cache   *lru.Cache
	backend *backend.Client
	log     *slog.Logger
	started time.Time

	eng      gnet.Engine
	booted   chan struct{} // closed once the engine is up and eng is set
	served   chan struct{} // closed once Serve has returned
	draining atomic.Bool   // set by Shutdown: new connections are closed at once

	clients   atomic.Int64               // open connections counted against MaxClients
	refusing  atomic.Int64               // refused connections waiting to be told so
	refused   [numRefusals]atomic.Uint64 // connections refused, by why
	accepted  atomic.Uint64
	protected bool // protected mode is on (auth.go)
	// passwordDigest is the SHA-256 of cfg.RequirePass (auth.go).
	passwordDigest [sha256.Size]byte
	staleAnswers   atomic.Uint64 // failed fetches answered with a stale value
	// large holds the hashes of keys whose values are streamed (stream.go).
	large    [largeSlots]atomic.Uint64
	streams  atomic.Int64  // transfers under way
	streamed atomic.Uint64 // transfers started
	// refusedLogged is refused as last logged (OnTick's only).
	refusedLogged [numRefusals]uint64
	pending       atomic.Int64 // fetches issued whose answers have not been delivered

	date  atomic.Pointer[[]byte] // the HTTP Date header value, refreshed every second
	clock atomic.Int64           // seconds since started, refreshed every second (idle checks)

	batches sync.Pool   // of *sentBatch, for the loops' misses
	limits  *rateLimits // nil: no throttling

	loopsMu sync.Mutex // protects loops and nextCPU
	loops   map[gnet.EventLoop]*loop
	cpus    []int // CPUs this process may run on, for pinning
	nextCPU int
}

// New returns a server answering from cache and fetching misses through be.
func New(cfg Config, cache *lru.Cache, be *backend.Client) *Server {
	s := &Server{
		cfg:     cfg,
		cache:   cache,
		backend: be,
		log:     cfg.Logger,
		started: time.Now(),
		booted:  make(chan struct{}),
		served:  make(chan struct{}),
		loops:   make(map[gnet.EventLoop]*loop),
	}
	s.batches.New = func() any { return new(sentBatch) }
	if s.cfg.Loops <= 0 {
		s.cfg.Loops = DefaultLoops()
	}
	s.limits = newRateLimits(cfg.RateLimit, cfg.RateLimitPerClient, s.cfg.Loops)
	s.protected = protects(cfg)
	s.passwordDigest = sha256.Sum256([]byte(cfg.RequirePass))
	if cfg.PinCPUs {
		s.cpus = allowedCPUs()
	}
	s.updateDate()
	return s
}

// DefaultLoops is the number of event loops started when none is asked for:
// half the CPUs the Go runtime may use (GOMAXPROCS, which follows the
// affinity mask and, since Go 1.25, a cgroup CPU limit), at least one.
//
// Why half: a loop pinned to a CPU is only fast while that CPU is its own.
// The rest of a request's work runs elsewhere: the kernel's network stack
// (on loopback, in the sending thread), the miss path's goroutines (backend
// workers, rueidis's writer and reader), the GC's workers, and usually Redis
// or the clients themselves. On a 2-CPU box one loop gave 1.4× the
// throughput of two at -P 1 and 1.2× at -P 16, at a third less CPU per
// request (BENCHMARKS.md, "Event loops"); a loop per CPU made every loop
// share its CPU with that work. Where the proxy has the machine to itself
// and the clients are remote, --loops can give it more.
func DefaultLoops() int {
	return max(1, runtime.GOMAXPROCS(0)/2)
}

// Serve listens on cfg.Listen and serves until Shutdown. It returns at once
// with an error if the address cannot be listened on.
func (s *Server) Serve() error {
	defer close(s.served)
	err := gnet.Run(s, "tcp://"+s.cfg.Listen,
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(s.cfg.Loops),
		gnet.WithLockOSThread(true),
		gnet.WithReuseAddr(true), // restart over TIME_WAIT sockets; SO_REUSEPORT stays off so a second proxy fails "in use"
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithTicker(true),
		gnet.WithLogger(gnetLogger{s.log}),
	)
	if err != nil && errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("--listen %s: address already in use", s.cfg.Listen)
	}
	if err != nil {
		return fmt.Errorf("--listen %s: %v", s.cfg.Listen, err)
	}
	return nil
}

// Listening is closed once Serve is listening and serving.
func (s *Server) Listening() <-chan struct{} { return s.booted }

// Shutdown stops taking connections and requests: every connection answers
// what it has received and closes. It waits (bounded by ctx) for the fetches
// in flight to be answered, then stops the loops. Without the stop of
// parsing, a client with a steady stream of misses would keep the fetches in
// flight from ever reaching zero.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	select {
	case <-s.booted:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.loopsMu.Lock()
	for _, lp := range s.loops {
		_ = lp.el.Execute(ctx, lp.drainConns)
	}
	s.loopsMu.Unlock()
	for s.pending.Load() > 0 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	drained := ctx.Err() // nil unless fetches were still out when time ran out
	// gnet's Stop looks whether the engine has stopped only every 500 ms;
	// Serve returns as soon as it has, which is what a SIGTERM waits for.
	stopCtx, cancel := context.WithCancel(ctx)
	defer cancel() // ends Stop's polling once Serve has returned
	stopped := make(chan error, 1)
	go func() { stopped <- s.eng.Stop(stopCtx) }()
	select {
	case <-s.served:
		return drained
	case err := <-stopped:
		return cmp.Or(drained, err)
	}
}

// OnBoot keeps the engine for Shutdown.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	close(s.booted)
	s.log.Info("listening", "addr", s.cfg.Listen, "protocols", "http,resp")
	return gnet.None
}

// OnTick refreshes the Date header and the clock once a second, and has
// every loop close its idle clients. It runs on gnet's ticker goroutine, not
// on a loop.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	s.updateDate()
	s.clock.Store(int64(time.Since(s.started) / time.Second))
	for why := refusedMaxClients; why < numRefusals; why++ { // a line a second at most, each
		if n := s.refused[why].Load(); n != s.refusedLogged[why] {
			attrs := []any{"refused", n - s.refusedLogged[why]}
			if why == refusedMaxClients {
				attrs = append(attrs, "max_clients", s.cfg.MaxClients)
			}
			s.log.Warn(refusals[why].log, attrs...)
			s.refusedLogged[why] = n
		}
	}
	if s.limits != nil {
		s.limits.sweep()
	}
	if s.cfg.IdleTimeout > 0 {
		s.loopsMu.Lock()
		for _, lp := range s.loops {
			_ = lp.el.Execute(context.Background(), lp.idleCheck)
		}
		s.loopsMu.Unlock()
	}
	return time.Second, gnet.None
}

// finishConns has every connection of lp answer the requests it has
// received and close, parsing nothing that arrives later; it runs on lp.
func (s *Server) finishConns(lp *loop) {
	conns := append(lp.picked[:0], lp.conns...) // closing one takes it off lp.conns
	for _, cn := range conns {
		if cn.closed {
			continue
		}
		closeNow := s.process(cn) // what was received, as far as its limits allow
		if !cn.closed && !closeNow {
			cn.closing = true
			cn.dropHeld()
			closeNow = s.flush(cn)
		}
		if closeNow && !cn.closed {
			_ = lp.el.Close(cn.c)
		}
	}
	clear(conns)
	lp.picked = conns[:0]
}

// closeIdle closes lp's clients that have sent nothing for IdleTimeout and
// wait for no answer; it runs on lp.
func (s *Server) closeIdle(lp *loop) {
	limit := int64(s.cfg.IdleTimeout / time.Second)
	if limit < 1 {
		limit = 1
	}
	now := s.clock.Load()
	idle := lp.picked[:0]
	for _, cn := range lp.conns {
		// A client still reading its answers is not idle (Redis counts its
		// writes to a client as interaction too); one that reads nothing is.
		if unsent := cn.c.OutboundBuffered(); unsent != cn.unsentSeen {
			cn.unsentSeen, cn.lastActive = unsent, now
		}
		// As Redis: silent for more than the timeout, in whole seconds, with
		// no answer pending, or only a large value it does not read.
		if now-cn.lastActive > limit && (cn.queued() == 0 || cn.bodyStalled()) {
			idle = append(idle, cn)
		}
	}
	for _, cn := range idle {
		if !cn.closed {
			_ = lp.el.Close(cn.c) // OnClose takes cn off lp.conns
		}
	}
	clear(idle)
	lp.picked = idle[:0]
}

func (s *Server) updateDate() {
	d := []byte(time.Now().UTC().Format(http1123))
	s.date.Store(&d)
}

func (s *Server) dateNow() []byte { return *s.date.Load() }

const http1123 = "Mon, 02 Jan 2006 15:04:05 GMT"

// maxRefusing bounds the refused connections held open at once, each for up
// to refuseWait, to be told why in their own protocol. Past it a refused
// connection is closed at once without a word, so that a client opening
// connections in a loop cannot run the proxy out of descriptors.
const (
	maxRefusing = 64
	refuseWait  = time.Second
)

// OnOpen admits a connection, or marks it to be refused when protected mode
// turns it away or MaxClients are open (the refusal is sent in the client's
// protocol, once its first bytes say which, or as RESP after refuseWait of
// silence).
func (s *Server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	if s.draining.Load() {
		return nil, gnet.Close
	}
	if s.protected && deniedFrom(c.RemoteAddr()) {
		return s.openRefused(c, refusedProtected)
	}
	if s.clients.Add(1) > int64(s.cfg.MaxClients) {
		s.clients.Add(-1)
		return s.openRefused(c, refusedMaxClients)
	}
	cn := s.newConn(c)
	if s.limits != nil {
		cn.limit = s.limits.open(c.RemoteAddr())
	}
	s.keepAlive(c)
	return nil, gnet.None
}

// openRefused opens a connection only to refuse it, for why; past
// maxRefusing such connections, it closes it at once.
func (s *Server) openRefused(c gnet.Conn, why refusal) ([]byte, gnet.Action) {
	s.refused[why].Add(1)
	if s.refusing.Add(1) > maxRefusing {
		s.refusing.Add(-1)
		return nil, gnet.Close
	}
	cn := s.newConn(c)
	cn.rejected = why
	s.closeIfSilent(cn)
	return nil, gnet.None
}

// keepAlive turns on TCP keep-alive probes for c as Redis does: the first
// after TCPKeepAlive of silence, then every third of it, three times, so a
// peer that vanished is found within twice the period. (gnet's own option
// is not used: it replaces the listener's bind error with its own.)
func (s *Server) keepAlive(c gnet.Conn) {
	if s.cfg.TCPKeepAlive <= 0 {
		return
	}
	idle := max(s.cfg.TCPKeepAlive, time.Second) // the kernel counts in seconds
	if err := c.SetKeepAlive(true, idle, max(idle/3, time.Second), 3); err != nil {
		s.log.Debug("tcp keep-alive not set", "remote", c.RemoteAddr(), "err", err)
	}
}

// newConn creates c's state and registers it with its loop.
func (s *Server) newConn(c gnet.Conn) *conn {
	lp := s.loopOf(c)
	cn := &conn{c: c, lp: lp, id: s.accepted.Add(1), lastActive: s.clock.Load(), index: len(lp.conns), authed: s.cfg.RequirePass == ""}
	lp.conns = append(lp.conns, cn)
	c.SetContext(cn)
	return cn
}

// OnClose marks the connection closed, so that late deliveries skip it: its
// fd may already belong to another client.
func (s *Server) OnClose(c gnet.Conn, _ error) gnet.Action {
	cn, ok := c.Context().(*conn)
	if !ok || cn.closed {
		return gnet.None
	}
	cn.closed = true
	cn.dropHeld()
	if cn.stream != nil {
		cn.stream.stop()
	}
	if cn.limit != nil {
		s.limits.close(cn.limit)
	}
	if cn.rejected != admitted {
		s.refusing.Add(-1)
	} else {
		s.clients.Add(-1)
	}
	lp := cn.lp
	last := lp.conns[len(lp.conns)-1]
	lp.conns[cn.index], last.index = last, cn.index
	lp.conns[len(lp.conns)-1] = nil
	lp.conns = lp.conns[:len(lp.conns)-1]
	return gnet.None
}

// OnTraffic answers every complete request that has arrived.
func (s *Server) OnTraffic(c gnet.Conn) gnet.Action {
	cn := c.Context().(*conn)
	cn.lastActive = s.clock.Load()
	if s.process(cn) {
		return gnet.Close
	}
	return gnet.None
}

// loop is the state one event loop shares among its connections. Only that
// loop's goroutine touches it, except the counters, which others read.
type loop struct {
	el       gnet.EventLoop
	out      []byte        // answers gathered for one Write
	cmd      proto.Command // RESP parse scratch
	req      proto.Request // HTTP parse scratch
	stats    loopStats
	tokens   int64         // reads this loop may still serve of its share of --rate-limit
	tokensAt int64         // when to ask for more, having found none (ratelimit.go's clock)
	inbox    inbox         // fetch results waiting for this loop
	drain    gnet.Runnable // runs drainInbox on this loop

	touched    []*conn       // drainInbox's scratch: the connections it filled slots of
	misses     missBatch     // fetches asked for, to hand over at the end of the batch
	sendMisses gnet.Runnable // runs Server.sendMisses on this loop

	conns      []*conn       // every open connection of this loop (idle checks)
	picked     []*conn       // closeIdle's and finishConns's scratch: the connections they close
	idleCheck  gnet.Runnable // runs Server.closeIdle on this loop
	drainConns gnet.Runnable // runs Server.finishConns on this loop

	watched    []*conn       // connections waiting for their clients to read
	watchSpare []*conn       // the last list checked, for reuse
	watchArmed bool          // a check of watched is scheduled
	watchEvery time.Duration // how long until the next check
	watchCheck gnet.Runnable // runs Server.checkWatched on this loop

	hot hotKeys // a sample of the keys looked up (hotkeys.go)
}

// loopOf returns the state of c's loop, creating it (and pinning the loop's
// thread) on the first connection the loop sees.
func (s *Server) loopOf(c gnet.Conn) *loop {
	el := c.EventLoop()
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	lp, ok := s.loops[el]
	if !ok {
		lp = &loop{el: el}
		lp.drain = gnet.RunnableFunc(func(context.Context) error { s.drainInbox(lp); return nil })
		lp.sendMisses = gnet.RunnableFunc(func(context.Context) error { s.sendMisses(lp); return nil })
		lp.idleCheck = gnet.RunnableFunc(func(context.Context) error { s.closeIdle(lp); return nil })
		lp.drainConns = gnet.RunnableFunc(func(context.Context) error { s.finishConns(lp); return nil })
		lp.watchCheck = gnet.RunnableFunc(func(context.Context) error { s.checkWatched(lp); return nil })
		s.loops[el] = lp
		if s.draining.Load() {
			// Shutdown looked at the loops before this one was created.
			_ = el.Execute(context.Background(), lp.drainConns)
		}
		if len(s.cpus) > 1 {
			s.pinThread(s.cpus[s.nextCPU%len(s.cpus)])
			s.nextCPU++
		}
	}
	return lp
}

// pinThread pins the calling thread, which is the loop's (OnOpen runs on the
// loop), to one CPU. gnet has no affinity setting of its own and creates its
// loops after OnBoot, so the first callback on each loop is the earliest
// place to do it. gnet already locks the loop goroutine to its thread
// (WithLockOSThread); the extra LockOSThread here is never undone, so that
// when the loop ends, its goroutine exits still locked and the runtime
// retires the thread with its narrowed CPU mask instead of reusing it.
// Where affinity is not allowed (a restricted container), the loop simply
// stays unpinned.
func (s *Server) pinThread(cpu int) {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		s.log.Debug("cpu pinning not allowed", "cpu", cpu, "err", err)
		return
	}
	s.log.Debug("event loop pinned", "cpu", cpu)
}

// allowedCPUs lists the CPUs in this process's affinity mask (which honours
// cgroup cpusets), or nil if it cannot be read.
func allowedCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil
	}
	var cpus []int
	for i := 0; i < len(set)*64; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return cpus
}

// closeIfSilent refuses, in RESP (Redis's own words), and closes a refused
// connection that has not said anything within refuseWait, so a client that
// never speaks cannot hold a descriptor.
func (s *Server) closeIfSilent(cn *conn) {
	time.AfterFunc(refuseWait, func() {
		_ = cn.lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			if !cn.closed && !cn.closing && s.refuse(cn) {
				_ = cn.lp.el.Close(cn.c)
			}
			return nil
		}))
	})
}

// refuse answers a connection refused for --max-clients, in its protocol
// (RESP while it is unknown), drops its input, and reports whether it is to
// be closed now (else it closes once its client has read the answer).
func (s *Server) refuse(cn *conn) bool {
	cn.lp.out = s.appendRefusal(cn.lp.out, cn)
	cn.lp.stats.count(cn.proto, ResultRefused)
	cn.closing = true
	_, _ = cn.c.Discard(-1)
	return s.flush(cn)
}

// gnetLogger sends gnet's own log lines to slog, below our level of detail.
type gnetLogger struct{ log *slog.Logger }

func (l gnetLogger) Debugf(f string, a ...any) { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l gnetLogger) Infof(f string, a ...any)  { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l gnetLogger) Warnf(f string, a ...any)  { l.log.Warn(fmt.Sprintf(f, a...)) }
func (l gnetLogger) Errorf(f string, a ...any) { l.log.Error(fmt.Sprintf(f, a...)) }
func (l gnetLogger) Fatalf(f string, a ...any) { l.log.Error(fmt.Sprintf(f, a...)) }
