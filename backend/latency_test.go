package backend

import (
	"testing"
	"time"
)

// The histogram counts each GET in the first bucket whose bound it does not
// pass, and reads out cumulative counts, as Prometheus expects them.
func TestLatencyHistogram(t *testing.T) {
	var h latencyHistogram
	h.observe(50*time.Microsecond, 2) // <= 100 µs
	h.observe(time.Millisecond, 3)    // exactly the 1 ms bound
	h.observe(time.Minute, 1)         // past the last bound: only in Count
	l := h.snapshot()
	if l.Count != 6 || l.Sum != 2*50*time.Microsecond+3*time.Millisecond+time.Minute {
		t.Fatalf("count %d, sum %v", l.Count, l.Sum)
	}
	for i, b := range LatencyBounds {
		want := uint64(0)
		switch {
		case b >= 0.001:
			want = 5
		case b >= 0.0001:
			want = 2
		}
		if l.Buckets[i] != want {
			t.Errorf("bucket <= %gs: %d, want %d", b, l.Buckets[i], want)
		}
	}
}
