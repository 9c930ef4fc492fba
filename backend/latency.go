// The round-trip times of GETs to Redis, in a fixed-bucket histogram of
// atomics: workers add to it after each pipeline, and readers (metrics) take
// a snapshot, so the miss path pays a few atomic adds per batch and the hit
// path nothing.

package backend

import (
	"sync/atomic"
	"time"
)

// LatencyBounds are the histogram's upper bounds, in seconds: 100 µs to 5 s.
var LatencyBounds = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

type latencyHistogram struct {
	counts [16]atomic.Uint64 // per bucket of LatencyBounds, the last for longer ones
	sumNs  atomic.Int64
}

// observe records n GETs that took d together.
func (h *latencyHistogram) observe(d time.Duration, n int) {
	i := 0
	for i < len(LatencyBounds) && d.Seconds() > LatencyBounds[i] {
		i++
	}
	h.counts[i].Add(uint64(n))
	h.sumNs.Add(int64(d) * int64(n))
}

// Latency is a snapshot of the histogram: Buckets[i] GETs took at most
// LatencyBounds[i] (cumulative, as Prometheus counts them), Count in all.
type Latency struct {
	Buckets []uint64
	Count   uint64
	Sum     time.Duration
}

func (h *latencyHistogram) snapshot() Latency {
	l := Latency{Buckets: make([]uint64, len(LatencyBounds)), Sum: time.Duration(h.sumNs.Load())}
	for i := range h.counts {
		l.Count += h.counts[i].Load()
		if i < len(LatencyBounds) {
			l.Buckets[i] = l.Count
		}
	}
	return l
}
