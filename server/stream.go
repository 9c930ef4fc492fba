// Large values streamed from Redis to the client as they arrive.
//
// A miss's value normally comes back whole (backend.Fetch) and is then
// written to the client. For a value of megabytes that means a new slice of
// its size for every miss, zeroed page by page, and none of it sent before
// all of it is read: a 50 MB value took 1.5× what reading it straight from
// Redis takes. That is every read of a value the cache does not keep (with
// --capacity 0, or larger than --max-memory allows), so such a key is
// remembered (large, a small lossy table of key hashes) once a fetch has
// brought back streamAt bytes or more for it, and its next misses are
// streamed (backend.Stream): the value is read into streamChunk buffers as
// Redis sends it, and the loop writes each piece in the answer's place in
// the connection's FIFO, as fast as the client reads (outputLow, as for a
// value answered by reference), while the transfer from Redis goes on at
// Redis's pace. A key whose value turns out small, or missing, is forgotten.
// A value the cache keeps is not streamed: it is a hit from its second read.
// An error reply before the value (a cluster's MOVED or ASK, which rueidis
// follows for pipelined GETs but not on a streaming connection; WRONGTYPE)
// forgets the key and asks again the usual way.
//
// The transfer runs on a goroutine of its own (it holds a Redis connection
// of its own for its length). At most one runs per key (others reading the
// key meanwhile take the usual path, where concurrent misses of a key share
// one GET), one per client connection until its value is written (so a
// connection buffers at most one streamed value, counted in its queued bytes
// as a value answered by reference is), and maxStreams in all. Hand-offs: the goroutine appends pieces to the valueStream
// under its lock and wakes the loop (at most one wake pending); its last
// word is a delivery through the inbox, as any fetch's, which also keeps
// Shutdown waiting for it. The loop frames the answer once the length is
// known (beginStream). If the connection closes, OnClose stops the stream,
// and the goroutine's next piece ends the transfer. A value cut short after
// its header went out (Redis gone, the fetch timeout) cannot be told to the
// client but by closing the connection, which is what happens. A client
// that goes away stops the transfer at the next piece; rueidis then reads
// the rest of the value to drop it, so that its connection can serve again.
package server

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"github.com/panjf2000/gnet/v2"

	"github.com/redis-proxy/redis-proxy/backend"
	"github.com/redis-proxy/redis-proxy/proto"
)

const (
	// streamAt is the value size from which a key the cache does not keep
	// is streamed on its next misses.
	streamAt = 1 << 20
	// streamChunk is the size of the buffers a streamed value is read into.
	streamChunk = 256 << 10
	// maxStreams bounds the transfers under way at once.
	maxStreams = 64
	// largeSlots is the size of the table of keys seen large.
	largeSlots = 1024
	// streaming marks a key of the table as being streamed.
	streaming = 2
)

// chunks holds streamChunk buffers the loops have written out, for reuse.
var chunks = sync.Pool{New: func() any { return new([streamChunk]byte) }}

// piece is bytes of a streamed value, chunk[from:to].
type piece struct {
	chunk    *[streamChunk]byte
	from, to int
}

// valueStream is one value on its way from Redis to a client.
type valueStream struct {
	cn     *conn
	sl     *slot
	onLoop gnet.Runnable // the loop's wake-up task (streamWoken)

	mu      sync.Mutex
	started bool    // the length is known
	n       int     // the value's length
	pieces  []piece // read, not yet taken by the loop
	woken   bool    // onLoop is queued on the loop
	gone    bool    // the connection closed: stop reading

	// The goroutine's own: the buffer being filled.
	cur  *[streamChunk]byte
	used int

	// The loop's own.
	ended     bool  // the transfer is over (its delivery came)
	err       error // why it ended early, if it did
	unwritten int   // bytes of the value not yet written, once started
}

// largeSlot is where key is kept in s.large, and what is kept for it: its
// hash, bit 0 set (never 0) and the streaming bit clear.
func (s *Server) largeSlot(key string) (*atomic.Uint64, uint64) {
	h := (xxhash.Sum64String(key) | 1) &^ streaming
	return &s.large[h%largeSlots], h
}

// noteLarge remembers key as one to stream if its fetched value, n bytes,
// is large and the cache does not keep it.
func (s *Server) noteLarge(key string, n int) {
	if n >= streamAt && !s.cache.Keeps(key, n) {
		slot, h := s.largeSlot(key)
		if slot.Load() != h|streaming {
			slot.Store(h)
		}
	}
}

// fetchValue fetches key for the answer in sl (a GET's or an HTTP GET's):
// streamed if it is a large key not being streamed already and there is
// room, else as any miss.
func (s *Server) fetchValue(cn *conn, sl *slot, key string) {
	if cn.stream != nil || sl.kind == kindHTTP && !byReference(&sl.http, streamAt) {
		s.fetch(cn, sl, key, 0)
		return
	}
	slot, h := s.largeSlot(key)
	if !slot.CompareAndSwap(h, h|streaming) {
		s.fetch(cn, sl, key, 0)
		return
	}
	if s.streams.Add(1) > maxStreams {
		s.streams.Add(-1)
		slot.CompareAndSwap(h|streaming, h)
		s.fetch(cn, sl, key, 0)
		return
	}
	s.pending.Add(1)
	s.streamed.Add(1)
	sl.inFlight += fetchBytes(key)
	st := &valueStream{cn: cn, sl: sl}
	st.onLoop = gnet.RunnableFunc(func(context.Context) error { s.streamWoken(st); return nil })
	sl.stream, cn.stream = st, st
	go s.stream(st, key)
}

// stream runs one transfer, on its own goroutine. A key whose value turned
// out small, missing or not to be had is forgotten; one whose GET got an
// error reply is fetched again the usual way (the reply may be a redirect).
func (s *Server) stream(st *valueStream, key string) {
	r := s.backend.Stream(key, st)
	s.streams.Add(-1)
	slot, h := s.largeSlot(key)
	if r.Found && st.n >= streamAt {
		slot.CompareAndSwap(h|streaming, h)
	} else {
		slot.CompareAndSwap(h|streaming, 0)
	}
	post := func(r backend.Result) { s.post(delivery{cn: st.cn, sl: st.sl, key: key, r: r}) }
	if _, isReply := backend.AsReply(r.Err); isReply && !st.started {
		s.backend.Fetch(key, post)
		return
	}
	post(r)
}

// Start is backend.Sink's: the value is n bytes.
func (st *valueStream) Start(n int) {
	st.mu.Lock()
	st.started, st.n = true, n
	st.wake()
}

// Buffer is backend.Sink's: the rest of the current chunk, or a new one.
func (st *valueStream) Buffer() []byte {
	if st.cur == nil || st.used == streamChunk {
		st.cur, st.used = chunks.Get().(*[streamChunk]byte), 0
	}
	return st.cur[st.used:]
}

// Fill is backend.Sink's: b, read into the last Buffer, is for the loop.
func (st *valueStream) Fill(b []byte) bool {
	p := piece{st.cur, st.used, st.used + len(b)}
	st.used = p.to
	st.mu.Lock()
	if st.gone {
		st.mu.Unlock()
		return false
	}
	st.pieces = append(st.pieces, p)
	st.wake()
	return true
}

// wake queues onLoop unless it is queued, and unlocks st.mu.
func (st *valueStream) wake() {
	queue := !st.woken
	st.woken = true
	st.mu.Unlock()
	if queue {
		// Fails only when the engine is shutting down: the delivery that
		// ends the transfer says so then.
		_ = st.cn.lp.el.Execute(context.Background(), st.onLoop)
	}
}

// stop ends the transfer early: the connection has closed.
func (st *valueStream) stop() {
	st.mu.Lock()
	st.gone = true
	st.pieces = nil
	st.mu.Unlock()
}

// next takes the first piece read and not yet written, if any.
func (st *valueStream) next() (piece, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.pieces) == 0 {
		return piece{}, false
	}
	p := st.pieces[0]
	st.pieces[0] = piece{}
	st.pieces = st.pieces[1:]
	return p, true
}

// streamWoken runs on the loop when the transfer has news: the length, or
// pieces to write.
func (s *Server) streamWoken(st *valueStream) {
	st.mu.Lock()
	st.woken = false
	st.mu.Unlock()
	cn := st.cn
	if cn.closed || st.sl.stream != st { // closed, or answered and its slot reused
		return
	}
	s.beginStream(cn, st.sl)
	s.answer(cn)
}

// beginStream frames sl's streamed answer once the value's length is known.
func (s *Server) beginStream(cn *conn, sl *slot) {
	st := sl.stream
	if sl.ready {
		return
	}
	st.mu.Lock()
	started, n := st.started, st.n
	st.mu.Unlock()
	if !started {
		return
	}
	if sl.kind == kindGET {
		sl.out = proto.AppendBulkHeader(sl.out, n)
		sl.bodyCRLF = true
		cn.lp.stats.count(proto.RESP, ResultMiss)
	} else {
		sl.http.Date = s.dateNow()
		sl.http.CacheStatus, sl.http.Age = cacheMiss, 0
		sl.out = proto.AppendValueHead(sl.out, &sl.http, n)
		cn.lp.stats.count(proto.HTTP, ResultMiss)
	}
	sl.ready = true
	st.unwritten = n
	cn.account(sl)
}

// streamEnded takes the delivery that ends sl's transfer, r its outcome,
// and reports whether it is all the answer needs: false when the transfer
// ended before the value began (missing, an error), to be answered as any
// fetch.
func (s *Server) streamEnded(cn *conn, sl *slot, r backend.Result) bool {
	st := sl.stream
	s.beginStream(cn, sl)
	if !sl.ready {
		sl.stream, cn.stream = nil, nil
		return false
	}
	st.ended, st.err = true, r.Err
	return true
}

// writeStream writes what lp.out holds, then the pieces of sl's value read
// so far while the client keeps up, as writeBody does. It reports whether
// the value is all written; its CRLF, if any, is then in lp.out. A value
// cut short closes the connection, at once: what is left of it is of no use.
func (s *Server) writeStream(cn *conn, sl *slot) bool {
	st := sl.stream
	if st.err != nil {
		_ = cn.lp.el.Close(cn.c)
		return false
	}
	s.writeOut(cn)
	for !cn.closed {
		if s.waitsForReader(cn) {
			return false
		}
		p, ok := st.next()
		if !ok {
			break
		}
		_, _ = cn.c.Write(p.chunk[p.from:p.to]) // copies only what the socket does not take now
		st.unwritten -= p.to - p.from
		if p.to == streamChunk {
			chunks.Put(p.chunk) // the goroutine has moved on to another
		}
		cn.lastActive = s.clock.Load()
	}
	switch {
	case cn.closed || !st.ended:
		return false // the rest when it is read
	case st.err != nil:
		_ = cn.lp.el.Close(cn.c)
		return false
	}
	sl.stream, cn.stream = nil, nil
	if sl.bodyCRLF {
		cn.lp.out = append(cn.lp.out, '\r', '\n')
	}
	return true
}
