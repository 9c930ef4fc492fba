package lru

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct{ t atomic.Int64 }

func newFake() *fakeClock                     { c := &fakeClock{}; c.t.Store(1e18); return c }
func (c *fakeClock) now() time.Time           { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) advance(d time.Duration)  { c.t.Add(int64(d)) }
func newTest(t testing.TB, cfg Config) *Cache { c := New(cfg); t.Cleanup(c.Close); return c }

func get(c *Cache, key string) (string, bool) {
	var v string
	ok := c.Get([]byte(key), func(b []byte) { v = string(b) })
	return v, ok
}

func TestGetSet(t *testing.T) {
	c := newTest(t, Config{Capacity: 10, TTL: time.Minute})
	if _, ok := get(c, "a"); ok {
		t.Fatal("hit on empty cache")
	}
	c.Set("a", []byte("1"))
	c.Set("b", []byte{})
	c.Set("", []byte("empty key"))
	if v, ok := get(c, "a"); !ok || v != "1" {
		t.Fatalf("a = %q %v", v, ok)
	}
	if v, ok := get(c, "b"); !ok || v != "" {
		t.Fatalf("b = %q %v", v, ok)
	}
	if v, ok := get(c, ""); !ok || v != "empty key" {
		t.Fatalf("empty key = %q %v", v, ok)
	}
	for _, size := range valueSizes { // in place, to another class, to and from big records
		v := strings.Repeat("x", size)
		c.Set("a", []byte(v))
		if got, _ := get(c, "a"); got != v {
			t.Fatalf("a after a rewrite to %d bytes: %d bytes", size, len(got))
		}
	}
	st := c.Stats()
	if st.Len != 3 || st.Bytes != int64(1+len("b")+len("empty key")+valueSizes[len(valueSizes)-1]) {
		t.Fatalf("stats %+v", st)
	}
}

// The value is copied in: changing the caller's slice afterwards changes nothing.
func TestSetCopiesValue(t *testing.T) {
	c := newTest(t, Config{Capacity: 10, TTL: time.Minute})
	v := []byte("abc")
	c.Set("k", v)
	v[0] = 'X'
	if got, _ := get(c, "k"); got != "abc" {
		t.Fatalf("got %q", got)
	}
}

func TestLRUOrder(t *testing.T) {
	c := newTest(t, Config{Capacity: 3, TTL: time.Minute})
	c.Set("a", []byte("a"))
	c.Set("b", []byte("b"))
	c.Set("c", []byte("c"))
	get(c, "a") // b is now the least recently read
	c.Set("d", []byte("d"))
	if _, ok := get(c, "b"); ok {
		t.Fatal("b should have been evicted")
	}
	for _, k := range []string{"a", "c", "d"} {
		if _, ok := get(c, k); !ok {
			t.Fatalf("%s evicted", k)
		}
	}
	c.Set("e", []byte("e")) // reading order a, c, d: a goes
	if _, ok := get(c, "a"); ok {
		t.Fatal("a should have been evicted")
	}
	if st := c.Stats(); st.Len != 3 || st.Evictions != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTTL(t *testing.T) {
	clk := newFake()
	c := newTest(t, Config{Capacity: 10, TTL: time.Second, Now: clk.now, ReapInterval: -1})
	c.Set("a", []byte("1"))
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
	// A read does not extend the TTL; a new Set restarts it.
	c.Set("b", []byte("1"))
	clk.advance(600 * time.Millisecond)
	get(c, "b")
	clk.advance(600 * time.Millisecond)
	if _, ok := get(c, "b"); ok {
		t.Fatal("a read extended the TTL")
	}
	c.Set("b", []byte("2"))
	clk.advance(600 * time.Millisecond)
	c.Set("b", []byte("3"))
	clk.advance(600 * time.Millisecond)
	if v, ok := get(c, "b"); !ok || v != "3" {
		t.Fatalf("b = %q %v", v, ok)
	}
}

// The reaper removes expired entries nobody reads.
func TestReaper(t *testing.T) {
	clk := newFake()
	c := newTest(t, Config{Capacity: 5000, TTL: time.Second, Now: clk.now, ReapInterval: time.Millisecond})
	for i := range 3000 {
		c.Set(fmt.Sprint("k", i), []byte("v"))
	}
	clk.advance(2 * time.Second)
	c.Set("fresh", []byte("v"))
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Len != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("reaper left %d entries", c.Stats().Len)
		}
		time.Sleep(time.Millisecond)
	}
	if st := c.Stats(); st.Expirations != 3000 {
		t.Fatalf("stats %+v", st)
	}
	if _, ok := get(c, "fresh"); !ok {
		t.Fatal("the reaper took an entry that had not expired")
	}
}

// With StaleFor, an expired entry stays available to GetStale, and only to
// it, for that long; then it goes.
func TestStale(t *testing.T) {
	clk := newFake()
	c := newTest(t, Config{Capacity: 10, TTL: time.Second, StaleFor: time.Minute, Now: clk.now, ReapInterval: -1})
	c.Set("k", []byte("v"))
	stale := func() (string, bool) {
		var v string
		ok := c.GetStale([]byte("k"), func(b []byte, _ int64) { v = string(b) })
		return v, ok
	}
	if v, ok := stale(); !ok || v != "v" {
		t.Fatalf("fresh entry through GetStale: %q %v", v, ok)
	}
	clk.advance(2 * time.Second)
	if _, ok := get(c, "k"); ok {
		t.Fatal("Get served an expired entry")
	}
	if v, ok := stale(); !ok || v != "v" {
		t.Fatalf("GetStale within StaleFor: %q %v", v, ok)
	}
	c.reapExpired()
	if _, ok := stale(); !ok {
		t.Fatal("the reaper removed an entry still within StaleFor")
	}
	clk.advance(time.Minute)
	if _, ok := stale(); ok {
		t.Fatal("GetStale past StaleFor")
	}
	c.reapExpired()
	if st := c.Stats(); st.Len != 0 || st.Expirations != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestInvalidateAndClear(t *testing.T) {
	c := newTest(t, Config{Capacity: 100, TTL: time.Minute})
	for i := range 10 {
		c.Set(fmt.Sprint("k", i), []byte("v"))
	}
	if !c.Invalidate("k3") || c.Invalidate("k3") || c.Invalidate("nope") {
		t.Fatal("Invalidate reported wrongly")
	}
	if _, ok := get(c, "k3"); ok {
		t.Fatal("invalidated key served")
	}
	c.Clear()
	if st := c.Stats(); st.Len != 0 || st.Bytes != 0 || st.Invalidations != 10 {
		t.Fatalf("after Clear: %+v", st)
	}
	c.Set("k1", []byte("again"))
	if v, _ := get(c, "k1"); v != "again" {
		t.Fatalf("after Clear: %q", v)
	}
}

// A value fetched before an invalidation of its key must not be cached after
// it: the invalidation may have been for exactly that value.
func TestSetIfVersion(t *testing.T) {
	c := newTest(t, Config{Capacity: 100, TTL: time.Minute})
	v := c.Version("k") // a fetch of k starts
	c.Invalidate("k")   // k changes in Redis meanwhile
	c.SetIfVersion("k", []byte("old"), 0, v)
	if _, ok := get(c, "k"); ok {
		t.Fatal("a value fetched before the invalidation was cached")
	}
	v = c.Version("k")
	c.Clear()
	c.SetIfVersion("k", []byte("old"), 0, v)
	if _, ok := get(c, "k"); ok {
		t.Fatal("a value fetched before a Clear was cached")
	}
	c.SetIfVersion("k", []byte("new"), 0, c.Version("k"))
	if got, ok := get(c, "k"); !ok || got != "new" {
		t.Fatalf("an undisturbed fetch: %q %v", got, ok)
	}
}

// Staleness is per key: writes to other keys of the shard (each one an
// invalidation, cached or not) do not keep a fetched value out of the cache,
// which under a write load left most fetched values uncached.
func TestSetIfVersionPerKey(t *testing.T) {
	c := newTest(t, Config{Capacity: 100, TTL: time.Minute}) // one shard
	slot := func(k string) uint64 { return (xxhash.Sum64String(k) >> 32) % changedSlots }
	var others []string
	for i := 0; len(others) < 100; i++ {
		if k := fmt.Sprint("other", i); slot(k) != slot("k") {
			others = append(others, k)
		}
	}
	v := c.Version("k")
	for _, k := range others {
		c.Invalidate(k)
	}
	if c.Changed("k", v) {
		t.Fatal("writes to other keys changed k")
	}
	c.SetIfVersion("k", []byte("fetched"), 0, v)
	if got, ok := get(c, "k"); !ok || got != "fetched" {
		t.Fatalf("a value fetched while other keys were written: %q %v", got, ok)
	}
	c.Invalidate("k")
	if !c.Changed("k", v) {
		t.Fatal("k's own invalidation did not change it")
	}
}

// An entry expires at the earlier of the cache's TTL and the key's own
// remaining lifetime, and the reaper honours each entry's own deadline.
func TestPerKeyDeadline(t *testing.T) {
	clk := newFake()
	c := newTest(t, Config{Capacity: 10, TTL: time.Hour, Now: clk.now, ReapInterval: -1})
	c.SetIfVersion("short", []byte("v"), 300*time.Millisecond, c.Version("short"))
	c.SetIfVersion("long", []byte("v"), 2*time.Hour, c.Version("long")) // capped at the TTL
	c.SetIfVersion("none", []byte("v"), 0, c.Version("none"))
	clk.advance(250 * time.Millisecond)
	if _, ok := get(c, "short"); !ok {
		t.Fatal("expired before its own deadline")
	}
	clk.advance(100 * time.Millisecond)
	if n := c.reapExpired(); n != 1 {
		t.Fatalf("reaped %d entries, want the short one", n)
	}
	if _, ok := get(c, "short"); ok {
		t.Fatal("served after the key's own deadline")
	}
	clk.advance(time.Hour)
	for _, k := range []string{"long", "none"} {
		if _, ok := get(c, k); ok {
			t.Fatalf("%s served past the cache's TTL", k)
		}
	}
}

func TestMaxBytes(t *testing.T) {
	c := newTest(t, Config{Capacity: 100, MaxBytes: 1000, TTL: time.Minute})
	for i := range 20 {
		c.Set(fmt.Sprintf("k%02d", i), make([]byte, 97)) // 100 bytes a record
	}
	st := c.Stats()
	if st.Len != 10 || st.Bytes != 1000 {
		t.Fatalf("stats %+v", st)
	}
	if _, ok := get(c, "k09"); ok {
		t.Fatal("oldest entries should have gone")
	}
	c.Set("k19", make([]byte, 2000)) // larger than the whole cache: dropped, not kept stale
	if _, ok := get(c, "k19"); ok {
		t.Fatal("a record over MaxBytes was kept")
	}
}

func TestLongKeyNotCached(t *testing.T) {
	c := newTest(t, Config{Capacity: 10, TTL: time.Minute})
	long := strings.Repeat("k", maxKeyLen+1)
	c.Set(long, []byte("v"))
	if _, ok := get(c, long); ok {
		t.Fatal("a key over 64 KiB was cached")
	}
	c.Set(long[:maxKeyLen], []byte("v"))
	if _, ok := get(c, long[:maxKeyLen]); !ok {
		t.Fatal("a 64 KiB key was not cached")
	}
}

func TestZeroCapacity(t *testing.T) {
	c := newTest(t, Config{Capacity: 0, TTL: time.Minute})
	c.Set("a", []byte("1"))
	if _, ok := get(c, "a"); ok {
		t.Fatal("capacity 0 cached a key")
	}
}

// Whatever the shard count, the cache never holds more than its capacity.
func TestCapacityAcrossShards(t *testing.T) {
	for _, capacity := range []int{1, 7, 1024, 5000, 100000} {
		c := newTest(t, Config{Capacity: capacity, TTL: time.Minute})
		total := 0
		for i := range c.shards {
			total += c.shards[i].capacity
		}
		if total != capacity {
			t.Fatalf("capacity %d: shards add up to %d", capacity, total)
		}
		for i := range 2 * capacity {
			c.Set(fmt.Sprint("key", i), []byte("v"))
		}
		if n := c.Stats().Len; n > capacity || n < capacity*9/10 {
			t.Fatalf("capacity %d: holds %d", capacity, n)
		}
	}
	if n := len(New(Config{Capacity: 100000, ReapInterval: -1}).shards); n < 16 {
		t.Fatalf("a 100000-key cache has only %d shards", n)
	}
	if n := len(New(Config{Capacity: 100000, MaxBytes: 8 << 20, ReapInterval: -1}).shards); n != 2 {
		t.Fatalf("an 8 MiB cache has %d shards, want 2 of 4 MiB", n)
	}
}

// Many goroutines mixing every operation: no key ever answers with another
// key's value, and the cache stays within its limits.
func TestConcurrentStress(t *testing.T) {
	c := newTest(t, Config{Capacity: 2048, MaxBytes: 1 << 20, TTL: 5 * time.Millisecond, ReapInterval: time.Millisecond})
	var wg sync.WaitGroup
	var bad atomic.Value
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20000 {
				k := fmt.Sprint("k", (i*7+g*13)%5000)
				switch i % 10 {
				case 0, 1, 2:
					c.Set(k, bytes.Repeat([]byte(k+"|"), 1+i%300))
				case 3:
					c.Invalidate(k)
				case 4:
					if i%5000 == 4 {
						c.Clear()
					}
				default:
					c.Get([]byte(k), func(v []byte) {
						if !bytes.HasPrefix(v, []byte(k+"|")) || len(v)%(len(k)+1) != 0 {
							bad.Store(fmt.Sprintf("%s -> %.40q", k, v))
						}
					})
				}
			}
		}()
	}
	wg.Wait()
	if b := bad.Load(); b != nil {
		t.Fatalf("wrong value: %v", b)
	}
	if st := c.Stats(); st.Len > 2048 || st.Bytes > 1<<20 {
		t.Fatalf("over limits: %+v", st)
	}
}

func TestGetDoesNotAllocate(t *testing.T) {
	c := newTest(t, Config{Capacity: 100000, TTL: time.Minute})
	key := []byte("key:000000000042")
	c.Set(string(key), make([]byte, 100))
	out := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(1000, func() {
		out = out[:0]
		c.Get(key, func(v []byte) { out = append(out, v...) })
	})
	if allocs != 0 {
		t.Fatalf("Get allocates %v times per call", allocs)
	}
}

// benchKeys returns n 16-byte keys, as bytes and as strings, in a random
// order: reading them in sequence must not walk memory in insertion order.
func benchKeys(n int) ([][]byte, []string) {
	keys, strs := make([][]byte, n), make([]string, n)
	for i, j := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
		strs[i] = fmt.Sprintf("key:%012d", j)
		keys[i] = []byte(strs[i])
	}
	return keys, strs
}

func benchCache(b *testing.B, n int) (*Cache, [][]byte, []string) {
	c := New(Config{Capacity: n, TTL: time.Hour, ReapInterval: -1})
	keys, strs := benchKeys(n)
	v := make([]byte, 100)
	for i := range n {
		c.Set(fmt.Sprintf("key:%012d", i), v) // insertion order differs from reading order
	}
	return c, keys, strs
}

func BenchmarkGetHit(b *testing.B) {
	for _, n := range []int{1000, 100000, 1000000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchmarkGetHit(b, n) })
	}
}

func benchmarkGetHit(b *testing.B, n int) {
	c, keys, _ := benchCache(b, n)
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
	c, keys, _ := benchCache(b, 100000)
	b.ReportAllocs()
	b.ResetTimer()
	var seed atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		out := make([]byte, 0, 256)
		i := int(seed.Add(7919))
		for pb.Next() {
			out = out[:0]
			c.Get(keys[i%len(keys)], func(v []byte) { out = append(out, v...) })
			i++
		}
	})
}

// BenchmarkSet inserts into a full cache: every Set evicts.
func BenchmarkSet(b *testing.B) {
	c, _, _ := benchCache(b, 100000)
	_, strs := benchKeys(400000)
	v := make([]byte, 100)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Set(strs[i%len(strs)], v)
		i++
	}
}

func BenchmarkSetParallel(b *testing.B) {
	c, _, _ := benchCache(b, 100000)
	_, strs := benchKeys(400000)
	v := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	var seed atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(7919))
		for pb.Next() {
			c.Set(strs[i%len(strs)], v)
			i++
		}
	})
}

// After Revalidate (invalidations may have been lost), every entry reads as
// a miss, so it is fetched again, while GetStale still serves it; a value
// fetched from before is not cached, one fetched after replaces the entry.
func TestRevalidate(t *testing.T) {
	c := newTest(t, Config{Capacity: 100, TTL: time.Minute})
	c.Set("k", []byte("cached"))
	c.Set("j", []byte("other"))
	before := c.Version("k")
	c.Revalidate()
	if _, ok := get(c, "k"); ok {
		t.Fatal("an entry was served as fresh after Revalidate")
	}
	var stale string
	if !c.GetStale([]byte("k"), func(v []byte, _ int64) { stale = string(v) }) || stale != "cached" {
		t.Fatalf("GetStale after Revalidate: %q", stale)
	}
	c.SetIfVersion("k", []byte("in flight"), 0, before)
	if c.GetStale([]byte("k"), func(v []byte, _ int64) { stale = string(v) }); stale != "cached" {
		t.Fatalf("a value fetched before Revalidate replaced the entry: %q", stale)
	}
	c.SetIfVersion("k", []byte("fresh"), 0, c.Version("k"))
	if got, ok := get(c, "k"); !ok || got != "fresh" {
		t.Fatalf("after the refetch: %q %v", got, ok)
	}
	c.RemoveIfVersion("j", c.Version("j")) // Redis says it has no j
	if c.GetStale([]byte("j"), func(_ []byte, _ int64) {}) {
		t.Fatal("Remove left the entry")
	}
	if c.Changed("k", c.Version("k")) {
		t.Fatal("Remove disturbed fetches of other keys")
	}
}

// The entry stays 28 bytes: 4-byte fields only (no padding to 8), the
// suspect flag in the value length's spare bit.
func TestEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(entry{}); n != 28 {
		t.Fatalf("entry is %d bytes", n)
	}
}

// A value of KeptValueMin bytes or more may be kept after Get returns: it is
// never written again, whatever happens to its key. SetIfVersion keeps such a
// value as given (the fill path: no copy of a large fetched value); Set
// copies it, as it copies everything.
func TestKeptValues(t *testing.T) {
	c := New(Config{Capacity: 10, TTL: time.Minute, ReapInterval: -1})
	big := bytes.Repeat([]byte("a"), KeptValueMin)
	c.Set("k", big)
	var kept []byte
	c.Get([]byte("k"), func(v []byte) { kept = v })
	if &kept[0] == &big[0] {
		t.Fatal("Set kept the caller's value instead of a copy")
	}
	c.Set("k", bytes.Repeat([]byte("b"), KeptValueMin)) // same size, same class
	c.Set("k", bytes.Repeat([]byte("c"), 2*KeptValueMin))
	c.Invalidate("k")
	if !bytes.Equal(kept, big) {
		t.Fatal("a kept value changed after its key was rewritten and dropped")
	}

	fetched := bytes.Repeat([]byte("f"), 3*KeptValueMin)
	c.SetIfVersion("fetched", fetched, 0, c.Version("fetched"))
	var got []byte
	if !c.Get([]byte("fetched"), func(v []byte) { got = v }) || &got[0] != &fetched[0] {
		t.Fatal("SetIfVersion copied a large value it may keep")
	}
	small := []byte("small value")
	c.SetIfVersion("small", small, 0, c.Version("small"))
	small[0] = 'X'
	if !c.Get([]byte("small"), func(v []byte) { got = append(got[:0], v...) }) || string(got) != "small value" {
		t.Fatalf("a small value was not copied: %q", got)
	}
}
