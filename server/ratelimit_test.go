package server

import (
	"net"
	"testing"
)

// A bucket serves its burst (a second's worth) at once, then its rate.
func TestTokenBucket(t *testing.T) {
	b := newTokenBucket(100)
	if got := b.take(0, 1000); got != 100 {
		t.Fatalf("a full bucket gave %d tokens, want its burst of 100", got)
	}
	if got := b.take(0, 1); got != 0 {
		t.Fatalf("an empty bucket gave %d", got)
	}
	if got := b.take(50e6, 1000); got != 5 { // 50 ms at 100/s
		t.Fatalf("after 50 ms: %d tokens, want 5", got)
	}
	if got := b.take(10e9, 1000); got != 100 { // refilled, but never past the burst
		t.Fatalf("after 10 s: %d tokens, want 100", got)
	}
	if b.full(10e9) || !b.full(11e9) {
		t.Fatal("full: wrong")
	}
	if slow := newTokenBucket(0.5); slow.take(0, 5) != 1 { // a rate under one a second still serves one read
		t.Fatal("a bucket of rate 0.5 serves nothing")
	}
}

// A client IP's bucket is shared by its connections and outlives them until
// it is full again; the sweep drops it then, and only then.
func TestClientBuckets(t *testing.T) {
	rl := newRateLimits(0, 10, 2)
	a := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 1000}
	b := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 1001}
	c := &net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.2"), Port: 1002} // the same IP, mapped
	ba, bb, bc := rl.open(a), rl.open(b), rl.open(c)
	if ba != bb || ba != bc {
		t.Fatal("connections from one IP got different buckets")
	}
	if rl.open(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}) == ba {
		t.Fatal("another IP shares the bucket")
	}
	ba.take(rl.now(), 10)
	for _, bucket := range []*clientBucket{ba, bb, bc} {
		rl.close(bucket)
	}
	rl.sweep()
	if rl.clients[a.AddrPort().Addr().Unmap()] != ba {
		t.Fatal("the sweep dropped a spent bucket: reconnecting would refill it")
	}
	ba.last -= 2e9 // two seconds ago: full again
	rl.sweep()
	if len(rl.clients) != 1 { // 127.0.0.3's, still open
		t.Fatalf("%d buckets after the sweep, want 1", len(rl.clients))
	}
	if newRateLimits(0, 0, 2) != nil {
		t.Fatal("limits with both rates 0")
	}
}
