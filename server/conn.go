// Per-connection state, the FIFO that keeps answers in request order, and the
// path of a miss to the backend and back.
//
// Every request gets its answer either appended straight to the loop's output
// buffer, when no earlier answer on the connection is still waiting, or in a
// slot at the tail of the connection's FIFO. A slot is ready once its answer
// is encoded; flush writes the ready prefix of the FIFO and stops at the first
// slot still waiting for Redis. Slots are recycled per connection, so a
// pipeline that mixes misses and hits allocates only for the misses.
//
// All of this state belongs to the connection's event loop. Fetch completions
// come back through EventLoop.Execute and check conn.closed first: after
// OnClose the descriptor may already serve another client, and a write to it
// would land there.

package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/redis-proxy/redis-proxy/backend"
	"github.com/redis-proxy/redis-proxy/lru"
	"github.com/redis-proxy/redis-proxy/proto"
)

const (
	// maxQueued and maxQueuedBytes bound the answers waiting on one
	// connection behind a miss; past either, the connection's input is left
	// unparsed until answers drain (the miss at the head will be answered).
	maxQueued      = 1024
	maxQueuedBytes = 16 << 20
	// flushAt is how much output one OnTraffic gathers before writing it, so
	// that a pipeline of large hits does not pile up in memory first.
	flushAt = 256 << 10
	// maxOutbound is how many unsent bytes a client may leave with us before
	// it is dropped (a client that sends without reading), as Redis's
	// client-output-buffer-limit does for its replicas and subscribers.
	maxOutbound = 64 << 20
	// maxInbound is how many unparsed bytes a client may leave with us (gnet
	// cannot stop reading a socket; Redis's client-query-buffer-limit is 1 GiB).
	maxInbound = 1 << 30
	// lingerTimeout bounds how long a closing connection may take to read
	// the answers still queued for it.
	lingerTimeout = 10 * time.Second
	// maxKeptBuffer is the largest slot buffer kept for reuse.
	maxKeptBuffer = 64 << 10
)

// conn is one client connection's state.
type conn struct {
	c  gnet.Conn
	lp *loop

	proto     proto.Protocol
	closed    bool // OnClose has run: never touch c again
	closing   bool // parse nothing more; close once the queued answers are written
	lingering bool // a close is waiting for the socket to take the last bytes
	rejected  bool // over --max-clients: refuse on the first bytes
	resp3     bool // HELLO 3 switched the connection to RESP3
	paused    bool // the FIFO was full when parsing stopped
	need      int  // bytes the incomplete request at the front needs, when known

	queue       []*slot // answers not yet written; queue[head:] are live
	head        int
	queuedBytes int     // bytes of the ready answers in queue
	spare       []*slot // written slots, for reuse

	id   uint64 // the client id HELLO reports
	name string // CLIENT SETNAME
}

type slotKind uint8

const (
	kindGET  slotKind = iota // RESP GET: bulk, null or error
	kindMGET                 // RESP MGET: array of parts
	kindHTTP                 // HTTP GET or HEAD
)

// slot is one answer in a connection's FIFO.
type slot struct {
	out   []byte // the encoded answer
	ready bool   // out is complete
	kind  slotKind
	resp3 bool // kindGET, kindMGET: answer in RESP3

	http proto.ResponseOptions // kindHTTP: the framing of the answer

	parts   [][]byte // kindMGET: one encoded element per key
	waiting int      // kindMGET: fetches not yet back
	failure error    // kindMGET: the first fetch that failed
}

func (cn *conn) queued() int { return len(cn.queue) - cn.head }

// push appends an empty, not-ready slot to the FIFO.
func (cn *conn) push() *slot {
	var sl *slot
	if n := len(cn.spare); n > 0 {
		sl = cn.spare[n-1]
		cn.spare = cn.spare[:n-1]
	} else {
		sl = new(slot)
	}
	if cn.head > 0 && cn.head >= len(cn.queue)/2 {
		// Drop the written prefix now and then, or a connection whose queue
		// never empties would grow it for ever.
		n := copy(cn.queue, cn.queue[cn.head:])
		clear(cn.queue[n:])
		cn.queue, cn.head = cn.queue[:n], 0
	}
	cn.queue = append(cn.queue, sl)
	return sl
}

// answerBuf returns where the next answer is to be appended: the loop's
// output buffer when nothing is queued ahead of it (slot nil), else a new
// slot at the FIFO's tail, marked ready.
func (cn *conn) answerBuf() (*slot, *[]byte) {
	if cn.queued() == 0 {
		return nil, &cn.lp.out
	}
	sl := cn.push()
	sl.ready = true
	return sl, &sl.out
}

func (cn *conn) recycle(sl *slot) {
	if cap(sl.out) > maxKeptBuffer {
		sl.out = nil
	}
	*sl = slot{out: sl.out[:0]}
	cn.spare = append(cn.spare, sl)
}

// process answers every complete request buffered on cn and reports whether
// cn is to be closed now. It runs on cn's loop.
func (s *Server) process(cn *conn) bool {
	c := cn.c
	if cn.closing {
		_, _ = c.Discard(-1) // n <= 0 discards everything: input after the last answer is ignored
		return false
	}
	buffered := c.InboundBuffered()
	if buffered > maxInbound {
		s.log.Warn("closing client: query buffer over limit", "remote", c.RemoteAddr(), "bytes", buffered)
		return true
	}
	if buffered < cn.need {
		return false
	}
	buf, _ := c.Peek(-1)
	if cn.proto == proto.Unknown {
		if cn.proto = proto.Detect(buf); cn.proto == proto.Unknown {
			return false
		}
		if cn.rejected {
			cn.lp.out = s.appendRefusal(cn.lp.out, cn)
			cn.closing = true
			_, _ = c.Discard(-1)
			return s.flush(cn)
		}
	}
	used := 0
	for used < len(buf) && !cn.closing && !cn.full() {
		queued := len(cn.queue)
		var n int
		if cn.proto == proto.HTTP {
			n = s.serveHTTP(cn, buf[used:])
		} else {
			n = s.serveRESP(cn, buf[used:])
		}
		if n == 0 {
			break
		}
		used += n
		if len(cn.queue) > queued && cn.queue[len(cn.queue)-1].ready {
			cn.queuedBytes += len(cn.queue[len(cn.queue)-1].out)
		}
		if len(cn.lp.out) >= flushAt {
			if s.writeOut(cn) {
				return true
			}
			if cn.closed { // the write failed and gnet closed the connection
				return false
			}
		}
	}
	cn.paused = cn.full()
	if used > 0 { // Discard(0) would drop everything
		_, _ = c.Discard(used)
	}
	return s.flush(cn)
}

// flush writes, after whatever the loop's output buffer already holds for
// cn, the ready prefix of cn's FIFO, and reports whether cn is to be closed now.
func (s *Server) flush(cn *conn) bool {
	lp := cn.lp
	for cn.queued() > 0 && cn.queue[cn.head].ready {
		sl := cn.queue[cn.head]
		cn.queue[cn.head] = nil
		cn.head++
		cn.queuedBytes -= len(sl.out)
		lp.out = append(lp.out, sl.out...)
		cn.recycle(sl)
	}
	if cn.queued() == 0 {
		cn.queue, cn.head = cn.queue[:0], 0
	}
	if s.writeOut(cn) || cn.closed {
		return !cn.closed
	}
	if cn.closing && cn.queued() == 0 {
		if cn.c.OutboundBuffered() == 0 {
			return true
		}
		s.closeWhenWritten(cn)
	}
	return false
}

// writeOut writes the loop's output buffer to cn and reports whether cn must
// be closed because its client has left more unread output with us than
// maxOutbound. If the write fails, gnet closes cn itself (cn.closed).
func (s *Server) writeOut(cn *conn) bool {
	lp := cn.lp
	if len(lp.out) > 0 {
		_, _ = cn.c.Write(lp.out) // copies what the socket does not take now
		if cap(lp.out) > maxKeptBuffer {
			lp.out = nil
		}
		lp.out = lp.out[:0]
	}
	if n := cn.c.OutboundBuffered(); !cn.closed && n > maxOutbound {
		s.log.Warn("closing client: output buffer over limit", "remote", cn.c.RemoteAddr(), "bytes", n)
		return true
	}
	return false
}

// full reports whether enough answers wait on cn to stop parsing its input.
func (cn *conn) full() bool { return cn.queued() >= maxQueued || cn.queuedBytes >= maxQueuedBytes }

// closeWhenWritten closes cn once the socket has taken every queued byte (or
// lingerTimeout has passed). gnet's own close gives up at the first EAGAIN,
// which would cut a large last answer short, and it has no callback for "the
// output buffer is empty", so the check is repeated every few milliseconds.
func (s *Server) closeWhenWritten(cn *conn) {
	if cn.lingering {
		return
	}
	cn.lingering = true
	deadline := time.Now().Add(lingerTimeout)
	var check func()
	check = func() {
		time.AfterFunc(5*time.Millisecond, func() {
			_ = cn.lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
				switch {
				case cn.closed:
				case cn.c.OutboundBuffered() == 0 || time.Now().After(deadline):
					_ = cn.lp.el.Close(cn.c)
				default:
					check()
				}
				return nil
			}))
		})
	}
	check()
}

// fetch asks the backend for keys (copies: the parsed ones alias the read
// buffer); the result for keys[i] fills part parts[i] of sl, on cn's loop.
// The backend coalesces fetches of a key already being fetched and caches
// what it fetches (CacheFill) before anyone is answered.
func (s *Server) fetch(cn *conn, sl *slot, keys []string, parts []int) {
	s.pending.Add(int64(len(keys)))
	s.backend.FetchMany(keys, func(i int, r backend.Result) {
		s.post(delivery{cn: cn, sl: sl, part: parts[i], key: keys[i], r: r})
	})
}

// CacheFill returns the backend hooks that cache every value fetched: the
// cache's version is taken when a GET starts, and the value is stored only if
// no invalidation has touched its shard since (the value may be stale).
func CacheFill(cache *lru.Cache) (prepare func(string) uint64, onResult func(string, uint64, backend.Result)) {
	return cache.Version, func(key string, version uint64, r backend.Result) {
		if r.Found {
			cache.SetIfVersion(key, r.Value, r.TTL, version)
		}
	}
}

// CacheTracking returns the invalidation hooks that keep cache coherent
// with Redis; unsupported is called if Redis cannot track.
func CacheTracking(cache *lru.Cache, prefixes []string, unsupported func(error)) *backend.Tracking {
	return &backend.Tracking{
		Prefixes: prefixes,
		OnInvalidate: func(keys []string) {
			for _, k := range keys {
				cache.Invalidate(k)
			}
		},
		OnFlush:       cache.Clear,
		OnUnsupported: unsupported,
	}
}

// delivery is a fetch result on its way to its connection's loop.
type delivery struct {
	cn   *conn
	sl   *slot
	part int
	key  string
	r    backend.Result
}

// inbox collects a loop's deliveries: fetches complete on backend workers,
// and each loop is woken once per batch of them rather than once per
// result (every wake-up of a loop is a system call).
type inbox struct {
	mu        sync.Mutex // guards items and scheduled
	items     []delivery
	scheduled bool       // a drain is queued on the loop
	spare     []delivery // the loop's: the last batch's slice, for reuse
}

// post hands d to its connection's loop; any goroutine may call it.
func (s *Server) post(d delivery) {
	lp := d.cn.lp
	lp.inbox.mu.Lock()
	lp.inbox.items = append(lp.inbox.items, d)
	wake := !lp.inbox.scheduled
	lp.inbox.scheduled = true
	lp.inbox.mu.Unlock()
	if !wake {
		return
	}
	if err := lp.el.Execute(context.Background(), lp.drain); err != nil {
		// The engine is shutting down, and the connections with it.
		lp.inbox.mu.Lock()
		n := len(lp.inbox.items)
		lp.inbox.items, lp.inbox.scheduled = lp.inbox.items[:0], false
		lp.inbox.mu.Unlock()
		s.pending.Add(-int64(n))
	}
}

// drainInbox delivers everything posted to lp so far; it runs on lp.
func (s *Server) drainInbox(lp *loop) {
	lp.inbox.mu.Lock()
	batch := lp.inbox.items
	lp.inbox.items, lp.inbox.scheduled = lp.inbox.spare[:0], false
	lp.inbox.mu.Unlock()
	for _, d := range batch {
		s.pending.Add(-1)
		s.deliver(d.cn, d.sl, d.part, s.orStale(d.key, d.r))
	}
	clear(batch)
	lp.inbox.spare = batch[:0]
}

// orStale replaces a failed fetch's result by the key's stale value, if the
// cache still has one within --stale-if-error. An error reply from Redis
// (WRONGTYPE) is an answer, not a failure, and stands.
func (s *Server) orStale(key string, r backend.Result) backend.Result {
	var reply backend.ReplyError
	if r.Err == nil || errors.As(r.Err, &reply) {
		return r
	}
	s.cache.GetStale([]byte(key), func(v []byte) {
		r = backend.Result{Value: append([]byte(nil), v...), Found: true}
	})
	return r
}

// deliver fills a slot with a fetch result on cn's loop and writes what is
// now ready; if the FIFO had been full, parsing resumes.
func (s *Server) deliver(cn *conn, sl *slot, part int, r backend.Result) {
	if cn.closed {
		return
	}
	s.fill(sl, part, r)
	if sl.ready {
		cn.queuedBytes += len(sl.out)
	}
	closeNow := s.flush(cn)
	if !closeNow && !cn.closed && cn.paused && !cn.full() {
		closeNow = s.process(cn)
	}
	if closeNow {
		_ = cn.lp.el.Close(cn.c)
	}
}

// fill encodes a fetch result into its slot.
func (s *Server) fill(sl *slot, part int, r backend.Result) {
	switch sl.kind {
	case kindGET:
		sl.out = appendRESPResult(sl.out, r, sl.resp3)
		sl.ready = true
	case kindHTTP:
		sl.http.Date = s.dateNow()
		sl.out = appendHTTPResult(sl.out, &sl.http, r)
		sl.ready = true
	case kindMGET:
		s.fillMGET(sl, part, r)
	}
}
