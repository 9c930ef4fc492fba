package lru

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newFake() *fakeClock                    { return &fakeClock{t: time.Unix(1e9, 0)} }
func get(c *Cache, key string) (string, bool) {
	var v string
	ok := c.Get([]byte(key), func(b []byte) { v = string(b) })
	return v, ok
}

func TestGetAdd(t *testing.T) {
	c := New(10, time.Minute, nil)
	if _, ok := get(c, "a"); ok {
		t.Fatal("hit on empty cache")
	}
	c.Add("a", []byte("1"))
	c.Add("b", []byte{})
	if v, ok := get(c, "a"); !ok || v != "1" {
		t.Fatalf("a = %q %v", v, ok)
	}
	if v, ok := get(c, "b"); !ok || v != "" {
		t.Fatalf("b = %q %v", v, ok)
	}
	c.Add("a", []byte("2"))
	if v, _ := get(c, "a"); v != "2" {
		t.Fatalf("a after overwrite = %q", v)
	}
	if st := c.Stats(); st.Len != 2 {
		t.Fatalf("Len = %d", st.Len)
	}
}

// The value is copied in: changing the caller's slice afterwards changes nothing.
func TestAddCopiesValue(t *testing.T) {
	c := New(10, time.Minute, nil)
	v := []byte("abc")
	c.Add("k", v)
	v[0] = 'X'
	if got, _ := get(c, "k"); got != "abc" {
		t.Fatalf("got %q", got)
	}
}

func TestLRUOrder(t *testing.T) {
	c := New(3, time.Minute, nil)
	c.Add("a", []byte("a"))
	c.Add("b", []byte("b"))
	c.Add("c", []byte("c"))
	get(c, "a") // b is now the least recently read
	c.Add("d", []byte("d"))
	if _, ok := get(c, "b"); ok {
		t.Fatal("b should have been evicted")
	}
	for _, k := range []string{"a", "c", "d"} {
		if _, ok := get(c, k); !ok {
			t.Fatalf("%s evicted", k)
		}
	}
	// Reading order now a, c, d: adding e evicts a.
	c.Add("e", []byte("e"))
	if _, ok := get(c, "a"); ok {
		t.Fatal("a should have been evicted")
	}
	if st := c.Stats(); st.Len != 3 || st.Evictions != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// Overwriting counts as a use: the rewritten key moves to the front.
func TestOverwriteMovesToFront(t *testing.T) {
	c := New(2, time.Minute, nil)
	c.Add("a", []byte("1"))
	c.Add("b", []byte("1"))
	c.Add("a", []byte("2"))
	c.Add("c", []byte("1"))
	if _, ok := get(c, "b"); ok {
		t.Fatal("b should have been evicted")
	}
	if v, ok := get(c, "a"); !ok || v != "2" {
		t.Fatalf("a = %q %v", v, ok)
	}
}

func TestTTL(t *testing.T) {
	clk := newFake()
	c := New(10, time.Second, clk.now)
	c.Add("a", []byte("1"))
	clk.advance(999 * time.Millisecond)
	if _, ok := get(c, "a"); !ok {
		t.Fatal("expired early")
	}
	clk.advance(time.Millisecond)
	if _, ok := get(c, "a"); ok {
		t.Fatal("served after its TTL")
	}
	if st := c.Stats(); st.Len != 0 || st.Expirations != 1 {
		t.Fatalf("stats %+v", st)
	}
	// A read does not extend the TTL; a new Add restarts it.
	c.Add("b", []byte("1"))
	clk.advance(600 * time.Millisecond)
	get(c, "b")
	clk.advance(600 * time.Millisecond)
	if _, ok := get(c, "b"); ok {
		t.Fatal("a read extended the TTL")
	}
	c.Add("b", []byte("2"))
	clk.advance(600 * time.Millisecond)
	if v, ok := get(c, "b"); !ok || v != "2" {
		t.Fatalf("b = %q %v", v, ok)
	}
}

func TestZeroCapacity(t *testing.T) {
	c := New(0, time.Minute, nil)
	c.Add("a", []byte("1"))
	if _, ok := get(c, "a"); ok {
		t.Fatal("capacity 0 cached a key")
	}
}

// Whatever the shard count, the cache never holds more than its capacity.
func TestCapacityAcrossShards(t *testing.T) {
	for _, capacity := range []int{1, 7, 1024, 5000, 100000} {
		c := New(capacity, time.Minute, nil)
		total := 0
		for i := range c.shards {
			total += c.shards[i].capacity
		}
		if total != capacity {
			t.Fatalf("capacity %d: shards add up to %d", capacity, total)
		}
		for i := range 2 * capacity {
			c.Add(fmt.Sprint("key", i), []byte("v"))
		}
		if n := c.Stats().Len; n > capacity {
			t.Fatalf("capacity %d: holds %d", capacity, n)
		}
	}
	if n := len(New(100000, time.Minute, nil).shards); n < 16 {
		t.Fatalf("a 100000-key cache has only %d shards", n)
	}
}

func TestConcurrent(t *testing.T) {
	c := New(1000, time.Minute, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				k := fmt.Sprint("k", (i*7+g)%2000)
				if v, ok := get(c, k); ok && v != k {
					t.Errorf("key %s has value %s", k, v)
					return
				}
				c.Add(k, []byte(k))
			}
		}()
	}
	wg.Wait()
	if n := c.Stats().Len; n > 1000 {
		t.Fatalf("holds %d > capacity", n)
	}
}

func TestGetDoesNotAllocate(t *testing.T) {
	c := New(100000, time.Minute, nil)
	key := []byte("key:000000000042")
	c.Add(string(key), make([]byte, 100))
	out := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(1000, func() {
		out = out[:0]
		c.Get(key, func(v []byte) { out = append(out, v...) })
	})
	if allocs != 0 {
		t.Fatalf("Get allocates %v times per call", allocs)
	}
}

func BenchmarkGetHit(b *testing.B) {
	c := New(100000, time.Minute, nil)
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key:%012d", i)
		c.Add(string(keys[i]), make([]byte, 100))
	}
	out := make([]byte, 0, 256)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		out = out[:0]
		c.Get(keys[i%len(keys)], func(v []byte) { out = append(out, v...) })
		i++
	}
}

func BenchmarkGetHitParallel(b *testing.B) {
	c := New(100000, time.Minute, nil)
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key:%012d", i)
		c.Add(string(keys[i]), make([]byte, 100))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		out := make([]byte, 0, 256)
		i := 0
		for pb.Next() {
			out = out[:0]
			c.Get(keys[i%len(keys)], func(v []byte) { out = append(out, v...) })
			i++
		}
	})
}

func BenchmarkAdd(b *testing.B) {
	c := New(100000, time.Minute, nil)
	keys := make([]string, 200000)
	for i := range keys {
		keys[i] = fmt.Sprintf("key:%012d", i)
	}
	v := make([]byte, 100)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Add(keys[i%len(keys)], v)
		i++
	}
}
