// Input held apart from gnet's buffer.
//
// A connection's input normally stays in gnet's buffer and is parsed there
// in place. It is moved into a heldInput, where each byte is copied once as
// it arrives, in two cases:
//   - the request at the front is large (bigAt) and incomplete: re-reading it
//     from gnet's buffer on every arrival would cost its whole size each time
//     (and a copy, once the buffer wraps), quadratic in its size for a client
//     that trickles it in. Here the parse resumes where it stopped
//     (proto.ContinueCommand);
//   - the connection is stalled (its queue is full, or its client does not
//     read) and its client keeps sending: gnet's buffer grows in powers of
//     two from a pool that keeps the smaller ones, which made a client that
//     never reads cost five times what it sent.
//
// The buffer is an anonymous memory mapping outside Go's heap, sized for all
// a client may send ahead (maxInbound): the kernel backs only the pages
// written, no growth leaves garbage behind, nothing is zeroed up front, and
// unmapping gives the memory back at once. Where mapping fails (the
// process's map count is exhausted), a heap slice that grows is used instead.
// Requests behind the first are parsed from here too, until the buffer is
// used up and the connection goes back to parsing gnet's buffer in place.

package server

import (
	"os"
	"slices"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/redis-proxy/redis-proxy/proto"
)

// heldCap is a held buffer's room: all a client may send ahead, and one read.
const heldCap = maxInbound + readWindow

type heldInput struct {
	buf    []byte
	off    int           // bytes of buf parsed and answered
	cmd    proto.Command // the parse progress of the request at buf[off:]
	mapped bool          // buf is a mapping of heldCap bytes, to unmap
}

func newHeldInput() *heldInput {
	b, err := unix.Mmap(-1, 0, heldCap, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
	if err != nil {
		return &heldInput{buf: make([]byte, 0, readWindow)}
	}
	return &heldInput{buf: b[:0], mapped: true}
}

// dropHeld gives cn's held buffer back, if it has one. Nothing may refer to
// the buffer afterwards: parsed arguments that alias it die with the pass.
func (cn *conn) dropHeld() {
	if h := cn.held; h != nil && h.mapped {
		_ = unix.Munmap(h.buf[:cap(h.buf)])
	}
	cn.held = nil
}

// unparsed is how much input h holds that is not parsed yet (h may be nil).
func (h *heldInput) unparsed() int {
	if h == nil {
		return 0
	}
	return len(h.buf) - h.off
}

// take moves whatever gnet holds for c (or, in a mapping, as much as fits:
// the input bound keeps it from being more) to the end of h.buf.
func (h *heldInput) take(c gnet.Conn) {
	n := c.InboundBuffered()
	if n == 0 {
		return
	}
	if h.off > 0 && (h.off >= len(h.buf)/2 || len(h.buf)+n > cap(h.buf)) {
		// The parse progress counts from buf[off:], so moving it is safe.
		end := len(h.buf)
		h.buf = h.buf[:copy(h.buf, h.buf[h.off:])]
		h.off = 0
		h.release(len(h.buf), end)
	}
	if len(h.buf)+n > cap(h.buf) {
		if h.mapped {
			n = cap(h.buf) - len(h.buf)
		} else {
			h.buf = slices.Grow(h.buf, n)
		}
	}
	m, _ := c.Read(h.buf[len(h.buf) : len(h.buf)+n])
	h.buf = h.buf[:len(h.buf)+m]
}

// release gives the kernel back the whole pages of a mapping between from
// and to, which no longer hold input, when there are many of them.
func (h *heldInput) release(from, to int) {
	page := os.Getpagesize()
	from = (from + page - 1) / page * page
	to = to / page * page
	if !h.mapped || to-from < 1<<20 {
		return
	}
	_ = unix.Madvise(h.buf[from:to:to], unix.MADV_DONTNEED)
}
