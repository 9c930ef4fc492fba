package lru

import (
	"container/list"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkGC measures what the garbage collector costs while millions of
// keys are cached, for this engine and for the textbook layout it replaces
// (map[string]*list.Element, one pointer-rich node per key), in one run.
//
// Each sub-benchmark fills the cache (16-byte keys, 100-byte values), then,
// while every CPU runs Get on random keys and one goroutine allocates garbage
// (as a server's other work does), forces b.N full GC cycles. It reports:
//   - ns/op: the wall time of one full GC cycle;
//   - pause-p99-us: the 99th percentile stop-the-world pause
//     (runtime/metrics /gc/pauses:seconds);
//   - gc-cpu-%: the share of all CPU time spent in the GC
//     (/cpu/classes/gc/total over /cpu/classes/total);
//   - scannable-MiB: the heap the GC must scan for pointers on every cycle
//     (/gc/scan/heap:bytes), which is what grows with the key count;
//   - gets/s: the Get throughput of the loop meanwhile.
//
// Run: go test -run '^$' -bench BenchmarkGC -benchtime 5x ./lru/
func BenchmarkGC(b *testing.B) {
	for _, n := range []int{1_000_000, 5_000_000} {
		b.Run(fmt.Sprintf("engine-%dM", n/1_000_000), func(b *testing.B) {
			c := New(Config{Capacity: n + n/20, TTL: time.Hour, ReapInterval: -1})
			value := make([]byte, 100)
			for i := range n {
				c.Set(fmt.Sprintf("key:%012d", i), value)
			}
			benchGC(b, n, func(key []byte) { c.Get(key, func([]byte) {}) })
			runtime.KeepAlive(c)
		})
		b.Run(fmt.Sprintf("map+list-%dM", n/1_000_000), func(b *testing.B) {
			bl := newBaseline()
			for i := range n {
				bl.set(fmt.Sprintf("key:%012d", i), make([]byte, 100))
			}
			benchGC(b, n, func(key []byte) { bl.get(key) })
			runtime.KeepAlive(bl)
		})
	}
}

// baseline is the layout the engine replaces: a map of pointers to list
// nodes, each holding a key string and a value slice.
type baseline struct {
	mu    sync.Mutex
	items map[string]*list.Element
	order *list.List
}

type baselineItem struct {
	key   string
	value []byte
}

func newBaseline() *baseline {
	return &baseline{items: map[string]*list.Element{}, order: list.New()}
}

func (bl *baseline) set(key string, value []byte) {
	bl.mu.Lock()
	bl.items[key] = bl.order.PushFront(&baselineItem{key, value})
	bl.mu.Unlock()
}

func (bl *baseline) get(key []byte) {
	bl.mu.Lock()
	if e, ok := bl.items[string(key)]; ok {
		bl.order.MoveToFront(e)
	}
	bl.mu.Unlock()
}

func benchGC(b *testing.B, n int, get func(key []byte)) {
	runtime.GC()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var gets atomic.Int64
	for w := range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []byte("key:000000000000")
			x := uint64(w + 1)
			for {
				select {
				case <-stop:
					return
				default:
				}
				for range 1000 {
					x ^= x << 13
					x ^= x >> 7
					x ^= x << 17
					copy(key[4:], fmt.Appendf(key[4:4:4], "%012d", x%uint64(n)))
					get(key)
				}
				gets.Add(1000)
			}
		}()
	}
	wg.Add(1)
	go func() { // garbage, as a server makes
		defer wg.Done()
		var sink [][]byte
		for {
			select {
			case <-stop:
				return
			default:
			}
			sink = append(sink, make([]byte, 4096))
			if len(sink) == 256 {
				sink = nil
			}
		}
	}()

	samples := []metrics.Sample{
		{Name: "/gc/pauses:seconds"},
		{Name: "/cpu/classes/gc/total:cpu-seconds"},
		{Name: "/cpu/classes/total:cpu-seconds"},
		{Name: "/gc/scan/heap:bytes"},
	}
	metrics.Read(samples)
	pausesBefore := samples[0].Value.Float64Histogram().Counts
	pausesBefore = append([]uint64(nil), pausesBefore...)
	gcBefore, totalBefore := samples[1].Value.Float64(), samples[2].Value.Float64()

	b.ResetTimer()
	for range b.N {
		runtime.GC()
	}
	b.StopTimer()
	time.Sleep(100 * time.Millisecond) // let the CPU metrics catch up

	metrics.Read(samples)
	hist := samples[0].Value.Float64Histogram()
	close(stop)
	wg.Wait()

	var total uint64
	delta := make([]uint64, len(hist.Counts))
	for i := range hist.Counts {
		delta[i] = hist.Counts[i] - pausesBefore[i]
		total += delta[i]
	}
	var seen uint64
	for i, d := range delta {
		seen += d
		if total > 0 && seen*100 >= total*99 {
			b.ReportMetric(hist.Buckets[i+1]*1e6, "pause-p99-us")
			break
		}
	}
	gcCPU := samples[1].Value.Float64() - gcBefore
	allCPU := samples[2].Value.Float64() - totalBefore
	if allCPU > 0 {
		b.ReportMetric(100*gcCPU/allCPU, "gc-cpu-%")
	}
	b.ReportMetric(float64(gets.Load())/b.Elapsed().Seconds(), "gets/s")
	b.ReportMetric(float64(samples[3].Value.Uint64())/(1<<20), "scannable-MiB")
}
