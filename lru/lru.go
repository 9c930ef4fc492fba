// Package lru is the proxy's cache: at most Capacity keys (and, optionally, at
// most MaxBytes of keys and values), the least recently read evicted first,
// every entry expiring at its deadline, a fixed TTL after it was stored.
//
// How it works. Keys are spread over shards by xxhash; each shard has its own
// mutex and everything that mutex guards, so readers of different keys rarely
// meet and nothing is process-wide. A shard (shard.go) holds
//   - its entries in one slice of 28-byte pointer-free structs, linked into an
//     intrusive LRU list by uint32 indices inside the entries;
//   - an open-addressing index from key hash to entry (index.go), 8 bytes a
//     slot holding 32 bits of the hash, comparing full keys on a hash match;
//   - a min-heap of entries by deadline (heap.go), each entry knowing its
//     heap position, so expired entries can be reaped actively;
//   - an arena (arena.go): slab chunks of bytes holding every key and value.
//
// Nothing per entry is a Go pointer, so the garbage collector's work does not
// grow with the number of cached keys: it sees a few slices per shard and one
// pointer per arena chunk. See BENCHMARKS.md ("cache engine") for the memory
// per key and the GC measurements.
//
// Expiry happens two ways: Get checks the deadline of what it finds (an
// expired entry is removed and reported as a miss, exactly as if it had never
// been cached), and a reaper goroutine removes due entries from each shard in
// batches of reapBatch, taking and releasing the lock between batches.
//
// Sharding makes LRU order exact per shard and approximate across shards. The
// shard count grows with capacity (one shard per 1024 keys, up to 256, and,
// with MaxBytes, no fewer than 4 MiB a shard), so a small cache is one exact
// LRU, and a large one evicts, from the new key's shard, a key that is among
// the least recently read of the whole cache.
//
// Costs: Get, Set, Invalidate and eviction are O(1) expected (one xxhash of
// the key, a short probe, list moves) plus O(log n) for the heap when an entry
// leaves or changes deadline, plus copying the value. Memory per entry is the
// key and value rounded up to their slab class (at most 1/8 more) plus about
// 42 bytes: the entry (28), its index slot (8 bytes at up to 4/5 load: 10)
// and its heap slot (4).
package lru

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

const (
	keysPerShard = 1024
	// bytesPerShard is the least share of MaxBytes a shard gets, so that a
	// byte limit does not leave each shard too small for ordinary values.
	bytesPerShard = 4 << 20
	maxShards     = 256
	reapBatch     = 64
)

// Config describes a cache.
type Config struct {
	Capacity int           // most keys; 0 caches nothing
	MaxBytes int64         // most bytes of keys and values; 0 means no limit
	TTL      time.Duration // how long an entry lives after it is set; at most MaxTTL (longer is MaxTTL)
	// Now is the clock; nil means the monotonic clock. Tests pass their own.
	Now func() time.Time
	// ReapInterval is how often the reaper runs: 0 derives it from TTL,
	// negative runs no reaper (expired entries then leave when read or evicted).
	ReapInterval time.Duration
	// StaleFor keeps an expired entry this much longer for GetStale (at
	// most what MaxTTL leaves after TTL, so that an age is always right; the
	// stale-if-error idea of RFC 5861); Get never returns it. 0: off.
	StaleFor time.Duration
}

// KeptValueMin is the size from which a value seen by Get or GetStale may be
// kept after the call (see Get).
const KeptValueMin = maxClass + 1

// Cache is a sharded LRU cache with deadlines. It is safe for concurrent use.
// Close stops its reaper. Its memory outside the Go heap goes back to the
// kernel on Clear, or once the GC finds the cache unreachable, which a cache
// whose reaper still runs never is: Close or Clear a cache before dropping it.
type Cache struct {
	shards []shard
	shift  uint // a key's shard is its hash >> shift
	ttl    int64
	clock  func() int64

	stopReaper chan struct{}
	reaperDone chan struct{}
	closeOnce  sync.Once
}

// Stats are the cache's counters, summed over its shards.
type Stats struct {
	Len           int
	Bytes         int64 // key and value bytes held
	ArenaBytes    int64 // bytes the arenas hold, used or free
	Hits          uint64
	Misses        uint64
	Sets          uint64
	Evictions     uint64 // entries dropped to make room
	Expirations   uint64 // entries dropped because their deadline passed
	Invalidations uint64 // entries dropped by Invalidate or Clear
}

// New returns a cache as cfg describes, with its reaper running.
func New(cfg Config) *Cache {
	nshards := 1
	for nshards < maxShards && cfg.Capacity/(nshards*2) >= keysPerShard &&
		(cfg.MaxBytes == 0 || cfg.MaxBytes/int64(nshards*2) >= bytesPerShard) {
		nshards *= 2
	}
	return newCache(cfg, nshards)
}

// newCache returns a cache of nshards shards (a power of two).
func newCache(cfg Config, nshards int) *Cache {
	shift := uint(64)
	for n := nshards; n > 1; n /= 2 {
		shift--
	}
	c := &Cache{
		shards:     make([]shard, nshards),
		shift:      shift,
		ttl:        int64(min(cfg.TTL, MaxTTL)),
		clock:      monotonicClock(),
		stopReaper: make(chan struct{}),
		reaperDone: make(chan struct{}),
	}
	if now := cfg.Now; now != nil {
		base := now()
		c.clock = func() int64 { return int64(now().Sub(base)) }
	}
	// Every shard's changed slots, in one mapping, which goes when no shard
	// can be reached any more: after the cleanup below, and after the last
	// call that was under way in a shard (Changed reads them without a lock).
	changed := makeSlice[atomic.Uint64](nshards * changedSlots)
	runtime.AddCleanup(&c.shards[0], freeSlice[atomic.Uint64], changed)
	for i := range c.shards {
		c.shards[i].changed = changed[i*changedSlots : (i+1)*changedSlots : (i+1)*changedSlots]
		// Spread the remainders so that the shards add up to the limits.
		capacity := cfg.Capacity/nshards + boolInt(i < cfg.Capacity%nshards)
		maxBytes := cfg.MaxBytes / int64(nshards)
		if cfg.MaxBytes > 0 && i < int(cfg.MaxBytes%int64(nshards)) {
			maxBytes++
		}
		c.shards[i].init(min(capacity, maxEntries-1), maxBytes, min(int64(cfg.StaleFor), int64(MaxTTL)-c.ttl))
	}
	// A cache dropped without Clear gives its mapped memory back when the
	// GC finds it unreachable (tests make many; the proxy makes one). Under
	// the lock, and leaving valid empty shards: a call that was under way
	// when the cache became unreachable may still be using its shard.
	runtime.AddCleanup(c, func(shards []shard) {
		for i := range shards {
			shards[i].mu.Lock()
			shards[i].reset()
			shards[i].mu.Unlock()
		}
	}, c.shards)
	interval := cfg.ReapInterval
	if interval == 0 {
		interval = min(max(cfg.TTL/10, 10*time.Millisecond), 250*time.Millisecond)
	}
	if interval > 0 {
		go c.reapEvery(interval)
	} else {
		close(c.reaperDone)
	}
	return c
}

// monotonicClock reads nanoseconds since the cache was made. time.Since on a
// monotonic base reads only the monotonic clock, half the cost of time.Now,
// which also reads the wall clock.
func monotonicClock() func() int64 {
	base := time.Now()
	return func() int64 { return int64(time.Since(base)) }
}

// addSat returns a+b, saturated at the ends of int64. Deadlines are sums of
// a clock reading and a lifetime; a lifetime so long that the sum overflows
// (a TTL near Go's longest duration) means "practically never", and must not
// wrap around to a deadline in the past.
func addSat(a, b int64) int64 {
	s := a + b
	if (s > a) != (b > 0) { // overflowed
		if b > 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return s
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (c *Cache) shardOf(h uint64) *shard { return &c.shards[h>>c.shift] }

// Get looks key up. On a hit it marks the entry most recently read, calls
// visit with the value and returns true. The value is a view into the cache,
// valid only until visit returns: visit runs under the shard lock, must copy
// what it keeps, return quickly, and not call the cache. The exception: a
// value of at least KeptValueMin bytes has an allocation of its own that is
// never written again (a new value gets a new one), so visit may keep the
// slice itself, to read after the call.
func (c *Cache) Get(key []byte, visit func(value []byte)) bool {
	h := xxhash.Sum64(key)
	return c.shardOf(h).get(key, h, c.clock(), visit, nil)
}

// GetAge is Get whose visit also learns how long ago the entry was stored,
// in whole seconds (what HTTP's Age header says).
func (c *Cache) GetAge(key []byte, visit func(value []byte, age int64)) bool {
	h := xxhash.Sum64(key)
	return c.shardOf(h).get(key, h, c.clock(), nil, visit)
}

// GetStale is GetAge for when the value cannot be fetched afresh: it also
// returns an entry whose deadline passed less than StaleFor ago. It does not
// change the entry's place in the LRU order.
func (c *Cache) GetStale(key []byte, visit func(value []byte, age int64)) bool {
	h := xxhash.Sum64(key)
	return c.shardOf(h).getStale(key, h, c.clock(), visit)
}

// Set stores copies of key and value, replacing any entry for key, evicting
// least recently read entries of the key's shard as the limits require. Keys
// longer than 64 KiB and records larger than a shard's share of MaxBytes are
// not cached (and any older entry for the key is dropped).
func (c *Cache) Set(key string, value []byte) {
	h := xxhash.Sum64String(key)
	c.shardOf(h).set(bytesOf(key), value, h, c.clock(), c.ttl, anyVersion, false)
}

// Keeps reports whether a value of n bytes for key would be cached: not
// when the cache holds nothing, the key is longer than 64 KiB, or the
// record is larger than its shard's share of MaxBytes.
func (c *Cache) Keeps(key string, n int) bool {
	return c.shardOf(xxhash.Sum64String(key)).keeps(len(key), n)
}

// Version returns a token to take before fetching key's value: store the
// value with SetIfVersion, and a value that an invalidation of key (or a
// Clear) may have made stale while it was in flight is dropped.
func (c *Cache) Version(key string) uint64 {
	return c.shardOf(xxhash.Sum64String(key)).seq.Load()
}

// Changed reports whether key was invalidated, or the cache cleared, since
// version was taken (rarely, another key sharing its hash slot was): a value
// fetched since then may be stale.
func (c *Cache) Changed(key string, version uint64) bool {
	h := xxhash.Sum64String(key)
	return c.shardOf(h).changedSince(h, version)
}

// SetIfVersion is Set, unless Changed(key, version); then it does nothing. A positive ttl
// shorter than the cache's own makes the entry expire that much sooner (the
// key's remaining lifetime in Redis). Unlike Set, it keeps a value of at
// least KeptValueMin bytes as given, without copying it: the caller must
// never write it again (a fetched value, which nothing else writes).
func (c *Cache) SetIfVersion(key string, value []byte, ttl time.Duration, version uint64) {
	h := xxhash.Sum64String(key)
	life := c.ttl
	if ttl > 0 {
		life = min(life, int64(ttl))
	}
	c.shardOf(h).set(bytesOf(key), value, h, c.clock(), life, version, true)
}

// Invalidate drops key's entry, if any, and reports whether there was one.
func (c *Cache) Invalidate(key string) bool {
	h := xxhash.Sum64String(key)
	return c.shardOf(h).invalidate(bytesOf(key), h)
}

// Revalidate marks every entry as possibly out of date, for when
// invalidations may have been lost (the tracking connection dropped): Get
// then reports a miss for each, so it is fetched again, as a miss would be,
// and the fetched value replaces it; GetStale still serves it until its
// deadline, for when Redis cannot be reached. Values of fetches under way
// are not cached.
func (c *Cache) Revalidate() {
	for i := range c.shards {
		c.shards[i].suspectAll()
	}
}

// RemoveIfVersion drops key's entry, if any, unless Changed(key, version)
// (checked under the shard's lock, as SetIfVersion checks it): then a newer
// fetch may have cached the key's new value, which stays. Unlike Invalidate,
// it is not counted and does not keep the values of fetches under way out
// of the cache: it is for a key that Redis has just said it does not hold.
func (c *Cache) RemoveIfVersion(key string, version uint64) {
	h := xxhash.Sum64String(key)
	c.shardOf(h).drop(bytesOf(key), h, version)
}

// Clear drops every entry and gives the arenas' memory back.
func (c *Cache) Clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.clearedAt.Store(s.seq.Add(1))
		s.stats.invalidations += uint64(s.live)
		s.reset()
		s.mu.Unlock()
	}
}

// Stats returns the cache's counters, taking each shard's lock in turn.
func (c *Cache) Stats() Stats {
	var st Stats
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		st.Len += s.live
		st.Bytes += s.stats.bytes
		st.ArenaBytes += s.arena.bytes
		st.Hits += s.stats.hits
		st.Misses += s.stats.misses
		st.Sets += s.stats.sets
		st.Evictions += s.stats.evictions
		st.Expirations += s.stats.expirations
		st.Invalidations += s.stats.invalidations
		s.mu.Unlock()
	}
	return st
}

// Close stops the reaper. The cache stays usable; expired entries then leave
// only when read or evicted.
func (c *Cache) Close() {
	c.closeOnce.Do(func() { close(c.stopReaper) })
	<-c.reaperDone
}

func (c *Cache) reapEvery(interval time.Duration) {
	defer close(c.reaperDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.stopReaper:
			return
		case <-t.C:
			c.reapExpired()
		}
	}
}

// reapExpired removes every entry whose deadline has passed, one shard and
// one batch at a time, and returns how many it removed.
func (c *Cache) reapExpired() int {
	total := 0
	for i := range c.shards {
		s := &c.shards[i]
		for more := true; more; {
			var n int
			s.mu.Lock()
			n, more = s.reap(c.clock(), reapBatch)
			s.mu.Unlock()
			total += n
		}
	}
	return total
}
