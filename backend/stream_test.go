package backend

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// recordingSink keeps what Stream hands it; onFill, if set, runs at each
// Fill and says whether to go on.
type recordingSink struct {
	length  int // -1 until Start
	got     bytes.Buffer
	fills   int
	onFill  func() bool
	scratch []byte
}

func newSink() *recordingSink { return &recordingSink{length: -1, scratch: make([]byte, 100<<10)} }

func (s *recordingSink) Start(n int) {
	if s.length != -1 || s.got.Len() > 0 {
		panic("Start twice, or after bytes")
	}
	s.length = n
}
func (s *recordingSink) Buffer() []byte { return s.scratch }
func (s *recordingSink) Fill(b []byte) bool {
	if s.length == -1 {
		panic("bytes before Start")
	}
	s.fills++
	s.got.Write(b)
	return s.onFill == nil || s.onFill()
}

// Stream hands a value over in pieces, its length first; a missing key, an
// empty value and an error reply end as a Fetch's would.
func TestStream(t *testing.T) {
	redis := redistest.Start(t)
	c := newConnected(t, Config{Addr: redis.Addr, Timeout: 10 * time.Second, MaxParallel: 1, QueueLen: 8})
	value := strings.Repeat("0123456789", 300<<10) // 3 MB: many pieces
	redis.Do("SET", "big", value)
	redis.Do("SET", "empty", "")
	redis.Do("RPUSH", "list", "x")

	sink := newSink()
	if r := c.Stream("big", sink); !r.Found || r.Err != nil {
		t.Fatalf("big: %+v", r)
	}
	if sink.length != len(value) || sink.got.String() != value || sink.fills < 2 {
		t.Fatalf("big: length %d, %d bytes in %d pieces, want %d", sink.length, sink.got.Len(), sink.fills, len(value))
	}
	sink = newSink()
	if r := c.Stream("empty", sink); !r.Found || r.Err != nil || sink.length != 0 || sink.fills != 0 {
		t.Fatalf("empty value: %+v, length %d, %d pieces", r, sink.length, sink.fills)
	}
	sink = newSink()
	if r := c.Stream("missing", sink); r.Found || r.Err != nil || sink.length != -1 {
		t.Fatalf("missing key: %+v, Start(%d)", r, sink.length)
	}
	if r := c.Stream("list", newSink()); r.Err == nil || !strings.HasPrefix(r.Err.Error(), "WRONGTYPE") {
		t.Fatalf("a list: %+v", r)
	}
	if _, isReply := AsReply(c.Stream("list", newSink()).Err); !isReply {
		t.Fatal("WRONGTYPE is not Redis's answer")
	}
	if st := c.Stats(); st.Fetches != 5 || st.Down {
		t.Fatalf("stats %+v", st)
	}
}

// A Sink that stops the transfer ends it, and the next one is whole: the
// connection is left at a reply's end (or closed), not in the middle.
func TestStreamStoppedBySink(t *testing.T) {
	redis := redistest.Start(t)
	c := newConnected(t, Config{Addr: redis.Addr, Timeout: 10 * time.Second, MaxParallel: 1, QueueLen: 8})
	value := strings.Repeat("v", 8<<20)
	redis.Do("SET", "big", value)
	sink := newSink()
	sink.onFill = func() bool { return false }
	if r := c.Stream("big", sink); !errors.Is(r.Err, errSinkStopped) || sink.fills != 1 {
		t.Fatalf("stopped: %+v after %d pieces", r, sink.fills)
	}
	if c.Stats().Down {
		t.Fatal("a stop by the sink counted as Redis down")
	}
	for range 3 {
		sink = newSink()
		if r := c.Stream("big", sink); !r.Found || sink.got.String() != value {
			t.Fatalf("after a stop: %+v, %d bytes", r, sink.got.Len())
		}
	}
}

// A transfer that Redis stops answering half way (paused here) ends at the
// fetch timeout with an error after Start: the value is cut short.
func TestStreamCutShort(t *testing.T) {
	redis := redistest.Start(t)
	c := newConnected(t, Config{Addr: redis.Addr, Timeout: 2 * time.Second, MaxParallel: 1, QueueLen: 8})
	value := strings.Repeat("v", 48<<20) // far more than the socket buffers hold
	redis.Do("SET", "big", value)
	sink := newSink()
	sink.onFill = func() bool {
		if sink.fills == 1 {
			redis.Pause()
		}
		return true
	}
	t.Cleanup(redis.Resume)
	r := c.Stream("big", sink)
	redis.Resume()
	if !errors.Is(r.Err, ErrTimeout) || sink.length != len(value) || sink.got.Len() >= len(value) {
		t.Fatalf("%+v, length %d, %d bytes", r, sink.length, sink.got.Len())
	}
	sink = newSink()
	if r := newConnected(t, Config{Addr: redis.Addr, Timeout: 10 * time.Second, MaxParallel: 1, QueueLen: 8}).Stream("big", sink); !r.Found || sink.got.Len() != len(value) {
		t.Fatalf("after the pause: %+v, %d bytes", r, sink.got.Len())
	}
}
