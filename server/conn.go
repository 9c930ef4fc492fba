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
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/redis-proxy/redis-proxy/backend"
	"github.com/redis-proxy/redis-proxy/lru"
	"github.com/redis-proxy/redis-proxy/proto"
)

const (
	// maxQueued and maxQueuedBytes bound the answers waiting on one
	// connection behind a miss (ready or not, MGET parts included); past
	// either, the connection's input is left unparsed until answers drain
	// (the miss at the head will be answered).
	maxQueued      = 1024
	maxQueuedBytes = 16 << 20
	// maxMGETBytes bounds one MGET's answer: past it the MGET is answered
	// with an error instead, so that a few bytes of MGET naming a large key
	// many times cannot make the proxy build gigabytes.
	maxMGETBytes = 64 << 20
	// flushAt is how much output one pass gathers before writing it, so that
	// a pipeline of large hits does not pile up in memory first.
	flushAt = 256 << 10
	// outputHigh and outputLow are the unsent bytes (what the socket did not
	// take) at which a connection stops parsing, and below which it resumes:
	// a client that reads slowly slows down its own pipeline, and one that
	// never reads stops being served and is cut off by maxInbound.
	outputHigh = 1 << 20
	outputLow  = 256 << 10
	// maxInbound is how many unparsed bytes a client may leave with us: a
	// request larger than that, or a pipeline that far ahead of its answers,
	// is answered with an error and the connection closed (gnet cannot stop
	// reading a socket; Redis's client-query-buffer-limit is the same idea).
	maxInbound = 64 << 20
	// firstWindow and readWindow are the least and the most input one parse
	// pass looks at (the window doubles while passes use it all up), so
	// that resuming a paused connection costs about what it parses, not
	// what it has buffered.
	firstWindow = 4 << 10
	readWindow  = 128 << 10
	// bigAt is the size from which an incomplete RESP request is moved out
	// of gnet's buffer into the connection's own (heldInput), so that the
	// rest of it, however it trickles in, is copied and parsed once.
	bigAt = 4 << 10
	// lingerTimeout bounds how long a closing connection may take to read
	// the answers still queued for it.
	lingerTimeout = 10 * time.Second
	// watchInterval is how often a loop checks its connections that wait
	// for their clients to read (gnet has no "output drained" callback).
	watchInterval    = time.Millisecond
	maxWatchInterval = 100 * time.Millisecond
	// bodyAt is the value size from which an answer does not copy its value
	// but refers to it (the cache's own copy, or the fetched one: neither is
	// ever written again), and writes it from there in bodyChunk pieces as
	// the client reads, so that a large value costs neither a copy per
	// reader nor its whole size in socket buffers per connection.
	bodyAt    = 64 << 10
	bodyChunk = 256 << 10
	// maxKeptBuffer is the largest slot buffer kept for reuse.
	maxKeptBuffer = 64 << 10
	// maxKeptOut is the largest loop output buffer kept for reuse: more
	// than flushAt, at which it is written, so that long pipelines reuse it.
	maxKeptOut = 2 * flushAt
	// maxKeptBatch is the most fetches of a batch whose slices are kept
	// for reuse (a long pipeline's round can hold many more).
	maxKeptBatch = 4096
	// fetchCost is what a key waiting for Redis costs besides its own bytes
	// (its copy, the flight, the job, the result and the delivery: about
	// 360 bytes measured across server and backend). Keys in flight count
	// against a connection's queued bytes and an MGET's bound at this price,
	// so that MGETs of many missing keys cannot hold gigabytes either.
	fetchCost = 384
)

// Values answered by reference must be ones the cache never writes again:
// this fails to compile otherwise.
const _ = uint(bodyAt - lru.KeptValueMin)

// conn is one client connection's state.
type conn struct {
	c  gnet.Conn
	lp *loop

	proto      proto.Protocol
	closed     bool          // OnClose has run: never touch c again
	closing    bool          // parse nothing more; close once the queued answers are written
	lingering  bool          // closing, and waiting for the socket to take the last bytes
	rejected   refusal       // why the connection is refused on its first bytes, if it is
	authed     bool          // the client gave the password, or none is needed (auth.go)
	resp3      bool          // HELLO 3 switched the connection to RESP3
	paused     bool          // the FIFO was full when parsing stopped
	blocked    bool          // more than outputHigh unsent: parse nothing until it drains
	watched    bool          // on lp.watched
	touched    bool          // on lp.touched: deliveries filled its slots
	unsentSeen int           // OutboundBuffered at the last watch or idle check
	need       int           // bytes the incomplete request at the front needs, when known
	held       *heldInput    // input moved out of gnet's buffer, if any
	limit      *clientBucket // its client's bucket (--rate-limit-per-client), or nil
	stream     *valueStream  // the value being streamed to it from Redis, if any

	queue       []*slot // answers not yet written; queue[head:] are live
	head        int
	queuedBytes int     // bytes held by the slots in queue
	spare       []*slot // written slots, for reuse

	lingerUntil time.Time // when lingering gives up
	lastActive  int64     // Server.clock when the client last sent something or read some of its answers
	index       int       // position in lp.conns

	id   uint64 // the client id HELLO reports
	name string // CLIENT SETNAME
}

// refusal is why a connection is refused as soon as it speaks.
type refusal uint8

const (
	admitted          refusal = iota
	refusedMaxClients         // over --max-clients
	refusedProtected          // a non-loopback client in protected mode
	numRefusals
)

// refusals say, for each refusal, what the client is answered (HTTP status
// and text, RESP error) and what the log says.
var refusals = [numRefusals]struct {
	status    int
	text, err string
	log       string
}{
	refusedMaxClients: {503, "too many clients: --max-clients reached", "ERR max number of clients reached",
		"clients refused: --max-clients reached"},
	refusedProtected: {403, protectedMessage, "DENIED " + protectedMessage,
		"clients refused: protected mode (every interface, no --require-pass) serves loopback clients only"},
}

type slotKind uint8

const (
	kindGET  slotKind = iota // RESP GET: bulk, null or error
	kindMGET                 // RESP MGET: array of parts
	kindHTTP                 // HTTP GET or HEAD
)

// slot is one answer in a connection's FIFO.
type slot struct {
	out   []byte // the encoded answer (kindMGET: its start; parts follow)
	ready bool   // the answer is complete
	kind  slotKind
	resp3 bool // kindGET, kindMGET: answer in RESP3
	size  int  // bytes counted in the connection's queuedBytes
	// inFlight is what the slot's fetches under way cost (fetchCost plus the
	// key, each), counted as queued bytes until they are delivered.
	inFlight int

	http proto.ResponseOptions // kindHTTP: the framing of the answer

	// body is a large value written after out by reference (bodyAt), what
	// is left of it while the client reads; bodyCRLF: a RESP bulk's CRLF
	// follows it.
	body     []byte
	bodyCRLF bool
	// stream is a value streamed from Redis (stream.go), while it is.
	stream *valueStream

	parts     [][]byte // kindMGET: the encoded elements from the first miss on
	partBytes int      // kindMGET: their total length
	waiting   int      // kindMGET: fetches not yet back
	failure   error    // kindMGET: the first fetch that failed
	stale     bool     // kindMGET: a part is a stale value standing in for a failed fetch
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

// account brings cn.queuedBytes up to date with what sl holds now.
func (cn *conn) account(sl *slot) {
	n := len(sl.out) + sl.partBytes + sl.inFlight + len(sl.body)
	if sl.stream != nil {
		n += sl.stream.unwritten
	}
	cn.queuedBytes += n - sl.size
	sl.size = n
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

// stalled reports whether parsing is to stop for now.
func (cn *conn) stalled() bool {
	return cn.closing || cn.closed || cn.blocked || cn.full()
}

// full reports whether enough answers wait on cn to stop parsing its input.
func (cn *conn) full() bool { return cn.queued() >= maxQueued || cn.queuedBytes >= maxQueuedBytes }

// resumable reports whether a connection whose parsing paused on a full
// queue has room enough again: half the queue, so that each resume parses a
// good batch.
func (cn *conn) resumable() bool {
	return cn.paused && !cn.stalled() && cn.queued() <= maxQueued/2 && cn.queuedBytes <= maxQueuedBytes/2
}

// accountTail accounts for the slot at the FIFO's tail, if any: the one the
// last request may have queued its answer in.
func (cn *conn) accountTail() {
	if q := len(cn.queue); q > cn.head {
		cn.account(cn.queue[q-1])
	}
}

// process answers every complete request buffered on cn, as far as its
// limits allow, and reports whether cn is to be closed now. It runs on cn's
// loop.
func (s *Server) process(cn *conn) bool {
	for {
		if closeNow := s.processOnce(cn); closeNow || !cn.resumable() {
			return closeNow
		}
		// The queue filled up, but with answers all ready at once (no fetch
		// to wait for, so no delivery would resume parsing): they are
		// written, parse on.
	}
}

// processOnce parses until cn's input runs out or cn stalls, then writes
// what is ready.
func (s *Server) processOnce(cn *conn) bool {
	c := cn.c
	if cn.closing {
		_, _ = c.Discard(-1) // n <= 0 discards everything: input after the last answer is ignored
		cn.dropHeld()
		return s.flush(cn) // the answers left, a large value's rest among them
	}
	buffered := c.InboundBuffered()                         // what gnet holds; cn.held may hold more
	if n := buffered + cn.held.unparsed(); n > maxInbound { // the client is far ahead of its answers
		s.log.Warn("closing client: query buffer over limit", "remote", c.RemoteAddr(), "bytes", n)
		s.refuseInput(cn)
		return true
	}
	if cn.blocked && c.OutboundBuffered() <= outputLow {
		cn.blocked = false
	}
	if cn.stalled() && buffered > readWindow {
		if cn.held == nil {
			cn.held = newHeldInput()
		}
		cn.held.take(c)
		buffered = 0
	}
	if cn.proto == proto.Unknown {
		buf, _ := c.Peek(min(buffered, readWindow))
		if cn.proto = proto.Detect(buf); cn.proto == proto.Unknown {
			return false
		}
		if cn.rejected != admitted {
			return s.refuse(cn)
		}
	}
	window := firstWindow
parse:
	for !cn.stalled() {
		if cn.held != nil {
			buffered = 0 // serveHeld takes it all
			used := s.serveHeld(cn)
			if cn.closed { // a write failed and gnet closed the connection
				return false
			}
			if !used {
				break
			}
			continue
		}
		if buffered == 0 || buffered < cn.need {
			break
		}
		buf, _ := c.Peek(min(buffered, max(window, cn.need)))
		used := s.serve(cn, buf)
		if cn.closed { // a write failed and gnet closed the connection
			return false
		}
		if used > 0 { // Discard(0) would drop everything
			_, _ = c.Discard(used)
			buffered -= used
		}
		switch {
		case used == len(buf) || cn.stalled():
			window = min(2*window, readWindow)
		case len(buf) < buffered+used: // the window cut the request at the front short
			if used == 0 {
				window = 2 * len(buf)
			}
		case cn.proto == proto.RESP && len(buf)-used >= bigAt:
			cn.held = newHeldInput() // large and incomplete: collect it apart
		default:
			break parse // wait for the rest of the request
		}
	}
	cn.paused = cn.full()
	return s.flush(cn)
}

// serveHeld takes what has arrived into cn.held and answers what is complete
// in it; it reports whether that used anything up.
func (s *Server) serveHeld(cn *conn) bool {
	h := cn.held
	h.take(cn.c)
	used := s.serve(cn, h.buf[h.off:])
	h.off += used
	if h.off == len(h.buf) && !cn.closed {
		cn.dropHeld() // all used: back to gnet's buffer
	}
	return used > 0
}

// serve answers the requests at the front of buf until one is incomplete or
// cn stalls, and returns the bytes used.
func (s *Server) serve(cn *conn, buf []byte) int {
	used := 0
	for used < len(buf) && !cn.stalled() {
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
		cn.accountTail()
		if len(cn.lp.out) >= flushAt {
			s.writeOut(cn)
		}
	}
	return used
}

// refuseInput answers a client that has sent more than maxInbound ahead of
// its answers, after those that are ready, as far as its socket takes it:
// the connection is closed at once, as Redis closes a client over its query
// buffer limit (such a client is most likely not reading). Behind a large
// value the client has not read, which is written only as it reads, the
// answer could never arrive: the connection is closed without it.
func (s *Server) refuseInput(cn *conn) {
	if !cn.bodyQueued() {
		_, dst := cn.answerBuf()
		if cn.proto == proto.HTTP {
			o := proto.ResponseOptions{Date: s.dateNow()}
			*dst = proto.AppendStatus(*dst, &o, nil, 431, "request or unanswered pipeline over 64 MiB")
		} else {
			*dst = proto.AppendError(*dst, "ERR Protocol error: request or unanswered pipeline over 64 MiB")
		}
		cn.lp.stats.count(cn.proto, ResultError)
		cn.accountTail()
	}
	cn.closing = true
	cn.dropHeld()
	_, _ = cn.c.Discard(-1)
	s.flush(cn)
}

// flush writes, after whatever the loop's output buffer already holds for
// cn, the ready prefix of cn's FIFO, and reports whether cn is to be closed now.
func (s *Server) flush(cn *conn) bool {
	lp := cn.lp
	for cn.queued() > 0 && cn.queue[cn.head].ready {
		sl := cn.queue[cn.head]
		lp.out = append(lp.out, sl.out...)
		for _, p := range sl.parts {
			lp.out = append(lp.out, p...)
		}
		if sl.body != nil || sl.stream != nil {
			sl.out, sl.parts = sl.out[:0], nil // gathered: not again when the body resumes
			var done bool
			if sl.stream != nil {
				done = s.writeStream(cn, sl)
			} else {
				done = s.writeBody(cn, sl)
			}
			cn.account(sl)
			if cn.closed {
				lp.out = lp.out[:0] // nothing of cn's may reach the loop's next client
				return false
			}
			if !done {
				break // the rest when the client has read (the watch resumes)
			}
		}
		cn.queue[cn.head] = nil
		cn.head++
		cn.queuedBytes -= sl.size
		cn.recycle(sl)
		if len(lp.out) >= flushAt {
			// Many answers ready at once (a long pipeline whose misses
			// came back together) go out as they are gathered: the
			// loop's buffer stays small instead of growing to hold them
			// all, to be dropped afterwards.
			if s.writeOut(cn); cn.closed {
				return false
			}
		}
	}
	if cn.queued() == 0 {
		cn.queue, cn.head = cn.queue[:0], 0
	}
	s.writeOut(cn)
	if cn.closed {
		return false
	}
	if cn.closing && cn.queued() == 0 {
		if cn.c.OutboundBuffered() == 0 {
			return true
		}
		if !cn.lingering {
			cn.lingering = true
			cn.lingerUntil = time.Now().Add(lingerTimeout)
			s.watch(cn)
		}
	}
	return false
}

// writeOut writes the loop's output buffer to cn. When the client leaves
// more than outputHigh unread, cn stops parsing until it has read most of it.
// If the write fails, gnet closes cn itself (cn.closed).
func (s *Server) writeOut(cn *conn) {
	lp := cn.lp
	if len(lp.out) > 0 {
		_, _ = cn.c.Write(lp.out) // copies what the socket does not take now
		if cap(lp.out) > maxKeptOut {
			lp.out = nil
		}
		lp.out = lp.out[:0]
	}
	if !cn.closed && !cn.blocked && cn.c.OutboundBuffered() > outputHigh {
		cn.blocked = true
		s.watch(cn)
	}
}

// writeBody writes what lp.out holds, then sl's body in bodyChunk pieces
// while the client keeps up: once more than outputLow waits unsent, cn stops
// (blocked) and the watch resumes it when the client has read. It reports
// whether the body is all written; its CRLF, if any, is then in lp.out.
func (s *Server) writeBody(cn *conn, sl *slot) bool {
	s.writeOut(cn)
	for len(sl.body) > 0 {
		if cn.closed {
			return false
		}
		if s.waitsForReader(cn) {
			return false
		}
		n := min(len(sl.body), bodyChunk)
		_, _ = cn.c.Write(sl.body[:n]) // copies only what the socket does not take now
		sl.body = sl.body[n:]
		cn.lastActive = s.clock.Load() // the client reads (or has just asked)
	}
	sl.body = nil
	if cn.closed { // the last write failed: nothing more goes out for cn
		return false
	}
	if sl.bodyCRLF {
		cn.lp.out = append(cn.lp.out, '\r', '\n')
	}
	return true
}

// waitsForReader reports whether more than outputLow of cn's output is
// unsent; cn then stops (blocked) until the watch sees its client read.
func (s *Server) waitsForReader(cn *conn) bool {
	if cn.c.OutboundBuffered() <= outputLow {
		return false
	}
	cn.lp.watchEvery = watchInterval // the client was reading: look again soon
	if !cn.blocked {
		cn.blocked = true
		s.watch(cn)
	}
	return true
}

// bodyStalled reports whether the answer at the head of cn's FIFO is a large
// value waiting for the client to read it (a streamed one may be waiting
// for Redis instead, unless the client has much unread).
func (cn *conn) bodyStalled() bool {
	if cn.queued() == 0 {
		return false
	}
	sl := cn.queue[cn.head]
	return sl.ready && (sl.body != nil || sl.stream != nil && cn.blocked)
}

// large reports whether sl's answer is a large value written as the client
// reads it: by reference, or streamed.
func (sl *slot) large() bool { return sl.body != nil || sl.stream != nil }

// referBulk answers in sl with v as a RESP bulk, v written by reference
// (bodyAt).
func (sl *slot) referBulk(v []byte) {
	sl.out = proto.AppendBulkHeader(sl.out, len(v))
	sl.body, sl.bodyCRLF = v, true
}

// referValue answers in sl with v as an HTTP 200, v written by reference.
func (sl *slot) referValue(o *proto.ResponseOptions, v []byte) {
	sl.out = proto.AppendValueHead(sl.out, o, len(v))
	sl.body = v
}

// byReference reports whether the 200 answer framed by o writes its value,
// n bytes, by reference (bodyAt): only a raw body can be, as it is stored
// (HEAD has none, JSON escapes it).
func byReference(o *proto.ResponseOptions, n int) bool { return n >= bodyAt && !o.Head && !o.JSON }

// fetchBytes is what a fetch of key in flight counts against its
// connection's queued bytes and an MGET's bound.
func fetchBytes[K string | []byte](key K) int { return fetchCost + len(key) }

// bodyQueued reports whether a large value waits in cn's FIFO.
func (cn *conn) bodyQueued() bool {
	for _, sl := range cn.queue[cn.head:] {
		if sl.large() {
			return true
		}
	}
	return false
}

// bodySlot returns the slot a large value is answered from: sl, or, when the
// answer was to go straight to the loop's output (sl nil, nothing queued
// ahead), a new ready slot.
func (cn *conn) bodySlot(sl *slot) *slot {
	if sl == nil {
		sl = cn.push()
		sl.ready = true
	}
	return sl
}

// watch puts cn on its loop's list of connections waiting for their client
// to read: blocked ones resume parsing, lingering ones close, once it has.
// The loop looks at the list every watchInterval while a client on it reads,
// backing off to maxWatchInterval while none does (a client that never
// reads is not worth a thousand wake-ups a second).
func (s *Server) watch(cn *conn) {
	if cn.watched {
		return
	}
	cn.watched = true
	cn.unsentSeen = cn.c.OutboundBuffered()
	lp := cn.lp
	lp.watched = append(lp.watched, cn)
	lp.watchEvery = watchInterval
	armWatch(lp)
}

// armWatch schedules the next check of lp's watch list, unless one is.
func armWatch(lp *loop) {
	if lp.watchArmed {
		return
	}
	lp.watchArmed = true
	time.AfterFunc(lp.watchEvery, func() {
		_ = lp.el.Execute(context.Background(), lp.watchCheck) // fails only when shutting down
	})
}

// checkWatched looks at every watched connection of lp once; it runs on lp.
func (s *Server) checkWatched(lp *loop) {
	lp.watchArmed = false
	list := lp.watched
	lp.watched = lp.watchSpare[:0]
	progress := false
	for _, cn := range list {
		cn.watched = false
		if s.checkOutput(cn) {
			progress = true
		}
	}
	clear(list)
	lp.watchSpare = list[:0]
	if len(lp.watched) == 0 || lp.watchArmed {
		return // nothing left, or a newly blocked connection armed the next check
	}
	if !progress {
		lp.watchEvery = min(2*lp.watchEvery, maxWatchInterval)
	}
	armWatch(lp)
}

// checkOutput acts on how much of cn's output its client has read, keeps cn
// on the watch list while that is still to come, and reports whether the
// client has read anything since the last look.
func (s *Server) checkOutput(cn *conn) bool {
	if cn.closed {
		return false
	}
	unsent := cn.c.OutboundBuffered()
	progress := unsent < cn.unsentSeen
	cn.unsentSeen = unsent
	switch {
	case cn.lingering:
		if unsent == 0 || time.Now().After(cn.lingerUntil) {
			_ = cn.lp.el.Close(cn.c)
			return true
		}
	case cn.blocked:
		if unsent <= outputLow {
			cn.blocked = false
			if s.process(cn) {
				_ = cn.lp.el.Close(cn.c)
			}
			return true
		}
		// A closing connection whose client stopped reading a large value
		// in the middle goes after lingerTimeout without progress, as a
		// lingering one does.
		if cn.closing {
			if now := time.Now(); progress || cn.lingerUntil.IsZero() {
				cn.lingerUntil = now.Add(lingerTimeout)
			} else if now.After(cn.lingerUntil) {
				_ = cn.lp.el.Close(cn.c)
				return true
			}
		}
	default:
		return false
	}
	if !cn.watched {
		cn.watched = true
		cn.lp.watched = append(cn.lp.watched, cn)
	}
	return progress
}

// fetch asks the backend for key (a copy: parsed keys alias the read
// buffer); its result fills part part of sl, on cn's loop. The fetches a loop
// asks for while it serves its ready connections are handed to the backend
// together, once, when it is done with them (sendMisses): one hand-off and
// one pipeline to Redis per batch, not per key. The backend coalesces
// fetches of a key already being fetched and caches what it fetches
// (CacheFill) before anyone is answered.
func (s *Server) fetch(cn *conn, sl *slot, key string, part int) {
	s.pending.Add(1)
	sl.inFlight += fetchBytes(key)
	lp := cn.lp
	if lp.misses.sentBatch == nil {
		lp.misses.sentBatch = s.batches.Get().(*sentBatch)
	}
	lp.misses.keys = append(lp.misses.keys, key)
	lp.misses.dests = append(lp.misses.dests, delivery{cn: cn, sl: sl, part: part})
	if !lp.misses.scheduled {
		lp.misses.scheduled = true
		// A task runs after the loop has served the connections of this
		// round and polled once more (and served those too): their misses
		// all go together. (Called on the loop, Execute does not fail.)
		_ = lp.el.Execute(context.Background(), lp.sendMisses)
	}
}

// missBatch is the fetches a loop has asked for and not yet handed over.
type missBatch struct {
	*sentBatch
	scheduled bool // sendMisses is queued on the loop
}

// sentBatch is a batch of fetches, from when its first miss is added until
// the last of its results is posted; then its slices are reused (the
// server's batches pool) rather than regrown for every batch.
type sentBatch struct {
	keys  []string
	dests []delivery // where each result goes (key and result filled in on return)
	left  atomic.Int64
	done  func(int, backend.Result) // posts result i to its loop; made once per batch struct
}

// sendMisses hands lp's batch of fetches to the backend; it runs on lp.
func (s *Server) sendMisses(lp *loop) {
	b := lp.misses.sentBatch
	lp.misses = missBatch{}
	if b == nil {
		return
	}
	b.left.Store(int64(len(b.keys)))
	if b.done == nil {
		b.done = func(i int, r backend.Result) {
			d := b.dests[i]
			d.key, d.r = b.keys[i], r
			s.post(d)
			if b.left.Add(-1) == 0 && cap(b.keys) <= maxKeptBatch {
				clear(b.keys)
				clear(b.dests)
				b.keys, b.dests = b.keys[:0], b.dests[:0]
				s.batches.Put(b)
			}
		}
	}
	s.backend.FetchMany(b.keys, b.done)
}

// CacheFill returns the backend hook that caches every value fetched (give
// the backend the cache as its Versions too): the value is stored only if
// its key has not been invalidated since its GET was sent (it may be stale).
// A key Redis does not hold as a string (missing, or WRONGTYPE) is not
// cached, and an entry left for it (one being revalidated) goes, unless the
// key has changed since (a newer fetch may have cached its new value).
func CacheFill(cache *lru.Cache) func(string, uint64, backend.Result) {
	return func(key string, version uint64, r backend.Result) {
		_, isReply := backend.AsReply(r.Err)
		switch {
		case r.Found:
			cache.SetIfVersion(key, r.Value, r.TTL, version)
		case r.Err == nil || isReply:
			cache.RemoveIfVersion(key, version)
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
		OnResync:      func(string) { cache.Revalidate() },
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
	// Fill every slot first, then write each connection once: a pipeline's
	// answers that come back together leave in one write, not one each.
	touched := lp.touched[:0]
	for _, d := range batch {
		s.pending.Add(-1)
		if s.deliver(&d) {
			touched = append(touched, d.cn)
		}
	}
	for _, cn := range touched {
		cn.touched = false
		s.answer(cn)
	}
	clear(batch)
	lp.inbox.spare = batch[:0]
	clear(touched)
	lp.touched = touched[:0]
}

// orStale replaces a failed fetch's result by the key's stale value, if the
// cache still has one within --stale-if-error, and reports whether it did,
// and the stale value's age in seconds. An error reply from Redis
// (WRONGTYPE) is an answer, not a failure, and stands.
func (s *Server) orStale(key string, r backend.Result) (_ backend.Result, stale bool, age int64) {
	if _, isReply := backend.AsReply(r.Err); r.Err == nil || isReply {
		return r, false, 0
	}
	stale = s.cache.GetStale([]byte(key), func(v []byte, a int64) {
		if len(v) < lru.KeptValueMin {
			v = append([]byte(nil), v...)
		}
		r, age = backend.Result{Value: v, Found: true}, a
	})
	return r, stale, age
}

// deliver fills a slot with a fetch result on its connection's loop, and
// reports whether the connection was not yet among those to answer.
func (s *Server) deliver(d *delivery) (first bool) {
	cn, sl := d.cn, d.sl
	// A streamed value that has begun is all written already, or on its way.
	streamed := sl.stream != nil && !cn.closed && s.streamEnded(cn, sl, d.r)
	r, stale, age := d.r, false, int64(0)
	if !streamed {
		r, stale, age = s.orStale(d.key, d.r)
	}
	if stale {
		s.staleAnswers.Add(1)
	}
	if cn.closed {
		return false
	}
	sl.inFlight -= fetchBytes(d.key)
	if !streamed {
		s.fill(cn.lp, sl, d.part, d.key, r, stale, age)
	}
	cn.account(sl)
	first = !cn.touched
	cn.touched = true
	return first
}

// answer writes what deliveries made ready on cn; if its FIFO had been full,
// parsing resumes.
func (s *Server) answer(cn *conn) {
	if cn.closed {
		return
	}
	closeNow := s.flush(cn)
	if !closeNow && cn.resumable() {
		closeNow = s.process(cn)
	}
	if closeNow {
		_ = cn.lp.el.Close(cn.c)
	}
}

// fill encodes a fetch result for key (stale: the stale value, age seconds
// old, standing in for a failed fetch) into its slot, and counts the request
// once it is answered.
func (s *Server) fill(lp *loop, sl *slot, part int, key string, r backend.Result, stale bool, age int64) {
	switch sl.kind {
	case kindGET:
		if r.Found && len(r.Value) >= bodyAt {
			s.noteLarge(key, len(r.Value))
			sl.referBulk(r.Value)
		} else {
			sl.out = appendRESPResult(sl.out, r, sl.resp3)
		}
		sl.ready = true
		lp.stats.count(proto.RESP, fetchResult(r.Err, stale))
	case kindHTTP:
		sl.http.Date = s.dateNow()
		sl.http.CacheStatus, sl.http.Age = cacheMiss, 0
		if stale {
			sl.http.CacheStatus, sl.http.Age = cacheStale, age
		}
		if r.Found && byReference(&sl.http, len(r.Value)) {
			s.noteLarge(key, len(r.Value))
			sl.referValue(&sl.http, r.Value)
		} else {
			sl.out = appendHTTPResult(sl.out, &sl.http, []byte(key), r)
		}
		sl.ready = true
		lp.stats.count(proto.HTTP, fetchResult(r.Err, stale))
	case kindMGET:
		s.fillMGET(lp, sl, part, r, stale)
	}
}

// fetchResult is the result of a request answered by a fetch that ended in
// err (nil for a value or a missing key); stale: a stale value stood in for
// a failed fetch. A full backend queue is the proxy refusing more work.
func fetchResult(err error, stale bool) Result {
	switch {
	case errors.Is(err, backend.ErrOverloaded):
		return ResultRefused
	case err != nil: // an MGET that failed, though another of its keys was stale
		return ResultError
	case stale:
		return ResultStale
	}
	return ResultMiss
}
