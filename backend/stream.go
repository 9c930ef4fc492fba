// Streaming a value from Redis as it arrives.
//
// Fetch hands its caller a value once rueidis has read all of it, into a
// new slice of its size. For a value of megabytes that slice is the cost:
// the runtime zeroes it first, touching every page (a page fault each, as
// the memory a value of the same size used before went back to the system),
// and nothing of the value can go on before its last byte is in. A 50 MB
// value took 0.45 s so where reading it from Redis takes 0.28.
//
// Stream sends its GET on a connection of its own (rueidis DoStream: a
// pool apart from the pipelines misses share, so a long transfer holds up
// no other fetch) and hands the value to a Sink in pieces as they are read,
// into buffers the Sink provides and may reuse. rueidis copies a bulk reply
// to the writer given with io.Copy from an io.LimitedReader of the value's
// length; streamWriter, an io.ReaderFrom, learns the length from it before
// the first byte (a RESP or HTTP answer is framed by it), and reads straight
// into the Sink's buffers.
package backend

import (
	"context"
	"errors"
	"io"
	"time"
)

// Sink receives a value Stream reads.
type Sink interface {
	// Start is told the value's length, before any of its bytes.
	Start(n int)
	// Buffer returns where the next bytes are to be read to (not empty).
	Buffer() []byte
	// Fill takes the bytes read into the last Buffer, b, and reports
	// whether to go on: false stops the transfer (the reader went away).
	Fill(b []byte) bool
}

// errSinkStopped ends a transfer the Sink stopped.
var errSinkStopped = errors.New("value no longer wanted")

// errNoLength is a reply rueidis did not copy from a reader of its length:
// a version that streams otherwise would need streamWriter to follow it.
var errNoLength = errors.New("streamed reply without its length")

// Stream GETs key and hands its value to sink as it arrives, within the
// fetch timeout. The Result says how it ended: Found (the value went to
// sink), not found, or an error; one after sink.Start means the value was
// cut short. A fetch under way is not joined (a streamed value is not
// shared), and Config.OnResult is not called.
func (c *Client) Stream(key string, sink Sink) Result {
	rc, err := c.client()
	if err != nil {
		c.setDown(true, err)
	} else if r := c.refused.Load(); r != nil && time.Now().UnixNano() < r.until {
		err = r.err
	}
	if err != nil {
		c.errors.Add(1)
		return Result{Err: err}
	}
	c.fetches.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	sent := time.Now()
	reply := rc.DoStream(ctx, rc.B().Get().Key(key).Build())
	w := streamWriter{sink: sink}
	_, err = reply.WriteTo(&w)
	c.latency.observe(time.Since(sent), 1)
	switch {
	case w.stopped || errors.Is(err, errNoLength):
		return Result{Err: err} // nothing Redis did
	case err == nil && !w.started: // an empty value: nothing to copy
		sink.Start(0)
	}
	return c.outcome(nil, err)
}

// streamWriter hands what rueidis copies to it to a Sink.
type streamWriter struct {
	sink    Sink
	started bool // Start was called
	stopped bool // Fill said to stop
}

// ReadFrom reads a bulk reply's value, r an io.LimitedReader of its length.
func (w *streamWriter) ReadFrom(r io.Reader) (int64, error) {
	lr, ok := r.(*io.LimitedReader)
	if !ok || w.started { // a RESP3 streamed string, in parts: never for a GET
		return 0, errNoLength
	}
	w.started = true
	w.sink.Start(int(lr.N))
	var total int64
	for lr.N > 0 {
		buf := w.sink.Buffer()
		n, err := lr.Read(buf)
		total += int64(n)
		if n > 0 && !w.sink.Fill(buf[:n]) {
			w.stopped = true
			return total, errSinkStopped
		}
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Write is how rueidis hands over a reply that is not a bulk string (an
// integer, say, if the key's type changed): not a value this streams.
func (w *streamWriter) Write([]byte) (int, error) { return 0, errNoLength }
