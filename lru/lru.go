// Package lru is the proxy's cache: at most Capacity keys, least recently read
// evicted first, every entry expiring a fixed TTL after it was stored.
//
// How it works. Keys are spread over shards by xxhash; each shard has its own
// mutex, map and LRU list, so loops reading different keys rarely meet on a
// lock, and nothing is process-wide. A shard keeps its entries in one slice
// and links them into a doubly linked LRU list by uint32 slot indices stored
// in the entries themselves (slot 0 is the list's sentinel), with freed slots
// reused through a free list. Values are copied in on Add and copied out under
// the shard lock on Get (a visitor sees them), so the caller never holds a
// reference into the cache and a slot can be reused the moment it is freed.
//
// Expiry is checked on every read: an expired entry is removed and reported
// as a miss, exactly as if it had never been cached. Expired entries nobody
// reads are pushed out by the LRU order like any cold entry.
//
// Sharding makes LRU order exact per shard and approximate across shards. The
// shard count grows with capacity (one shard per 1024 keys, up to 256), so a
// small cache is one exact LRU and a large one evicts, from one shard, a key
// that is among the least recently read of the whole cache.
//
// Costs: Get, Add and eviction are O(1) plus one xxhash of the key and one map
// operation; memory is the key and value bytes plus a fixed per-entry overhead.
package lru

import (
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
)

const (
	keysPerShard = 1024
	maxShards    = 256

	maxReusedValue = 64 << 10
)

// Cache is a sharded LRU cache with a global TTL. It is safe for concurrent use.
type Cache struct {
	shards []shard
	shift  uint // a key's shard is its hash >> shift
	ttl    int64
	clock  func() int64
}

// Stats are counters over the cache's lifetime, and its current size.
type Stats struct {
	Len         int
	Evictions   uint64 // entries dropped to make room
	Expirations uint64 // entries dropped because their TTL had passed
}

// New returns a cache of capacity keys whose entries expire ttl after they are
// added. now is the clock (nil means time.Now); tests pass their own.
// A capacity of 0 caches nothing.
func New(capacity int, ttl time.Duration, now func() time.Time) *Cache {
	clock := monotonicClock()
	if now != nil {
		base := now()
		clock = func() int64 { return int64(now().Sub(base)) }
	}
	nshards, shift := 1, uint(64)
	for nshards < maxShards && capacity/(nshards*2) >= keysPerShard {
		nshards *= 2
		shift--
	}
	c := &Cache{
		shards: make([]shard, nshards),
		shift:  shift,
		ttl:    int64(ttl),
		clock:  clock,
	}
	for i := range c.shards {
		// Spread the remainder so that the shard capacities add up to capacity.
		c.shards[i].init(capacity/nshards + boolInt(i < capacity%nshards))
	}
	return c
}

// monotonicClock reads nanoseconds since the cache was made. time.Since on a
// monotonic base reads only the monotonic clock, half the cost of time.Now,
// which also reads the wall clock; on the hit path that was 40% of the time.
func monotonicClock() func() int64 {
	base := time.Now()
	return func() int64 { return int64(time.Since(base)) }
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Get looks key up. On a hit it marks the entry most recently read, calls
// visit with the value and returns true. visit runs under the shard lock: it
// must copy what it needs and return quickly, and must not call the cache.
func (c *Cache) Get(key []byte, visit func(value []byte)) bool {
	return c.shards[xxhash.Sum64(key)>>c.shift].get(key, c.clock(), visit)
}

// Add stores key and a copy of value, replacing any entry for key, evicting
// the least recently read entry of the key's shard if it is full.
func (c *Cache) Add(key string, value []byte) {
	c.shards[xxhash.Sum64String(key)>>c.shift].add(key, value, c.clock()+c.ttl)
}

// Stats returns the cache's counters, summed over its shards.
func (c *Cache) Stats() Stats {
	var st Stats
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		st.Len += len(s.index)
		st.Evictions += s.evictions
		st.Expirations += s.expirations
		s.mu.Unlock()
	}
	return st
}

// entry is one cached key. prev and next link it into its shard's LRU list.
type entry struct {
	key        string
	value      []byte
	expireAt   int64 // on the cache clock
	prev, next uint32
}

type shard struct {
	mu          sync.Mutex // protects everything below
	index       map[string]uint32
	entries     []entry // entries[0] is the LRU sentinel: next is the most, prev the least recently read
	free        []uint32
	capacity    int
	evictions   uint64
	expirations uint64
	_           [64]byte // keep shards' locks on separate cache lines
}

func (s *shard) init(capacity int) {
	s.capacity = capacity
	s.index = make(map[string]uint32)
	s.entries = make([]entry, 1, 1+min(capacity, 1<<16))
}

func (s *shard) get(key []byte, now int64, visit func([]byte)) bool {
	s.mu.Lock()
	i, ok := s.index[string(key)]
	if !ok {
		s.mu.Unlock()
		return false
	}
	e := &s.entries[i]
	if now >= e.expireAt {
		s.remove(i)
		s.expirations++
		s.mu.Unlock()
		return false
	}
	s.moveToFront(i)
	visit(e.value)
	s.mu.Unlock()
	return true
}

func (s *shard) add(key string, value []byte, expireAt int64) {
	if s.capacity == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.index[key]; ok {
		e := &s.entries[i]
		e.value = append(e.value[:0], value...)
		e.expireAt = expireAt
		s.moveToFront(i)
		return
	}
	if len(s.index) >= s.capacity {
		s.remove(s.entries[0].prev)
		s.evictions++
	}
	var i uint32
	if n := len(s.free); n > 0 {
		i = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		s.entries = append(s.entries, entry{})
		i = uint32(len(s.entries) - 1)
	}
	e := &s.entries[i]
	e.key = key
	e.value = append(e.value[:0], value...)
	e.expireAt = expireAt
	s.index[e.key] = i
	s.linkFront(i)
}

// remove unlinks entry i, drops it from the index and frees its slot. The
// slot keeps a small value buffer for the next entry to reuse; a large one is
// let go so that a few big values do not pin memory after they leave.
func (s *shard) remove(i uint32) {
	e := &s.entries[i]
	delete(s.index, e.key)
	s.unlink(i)
	e.key = ""
	if cap(e.value) > maxReusedValue {
		e.value = nil
	}
	s.free = append(s.free, i)
}

func (s *shard) moveToFront(i uint32) {
	if s.entries[0].next != i {
		s.unlink(i)
		s.linkFront(i)
	}
}

func (s *shard) unlink(i uint32) {
	e := &s.entries[i]
	s.entries[e.prev].next = e.next
	s.entries[e.next].prev = e.prev
}

func (s *shard) linkFront(i uint32) {
	head := &s.entries[0]
	e := &s.entries[i]
	e.prev, e.next = 0, head.next
	s.entries[head.next].prev = i
	head.next = i
}
