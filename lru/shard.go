// A shard: one lock and everything it guards. Entries live in one slice of
// pointer-free structs (mapped outside the Go heap once large, offheap.go); entry 0 is the sentinel of a circular, doubly linked
// LRU list threaded through the entries' prev/next indices (sentinel.next is
// the most recently read entry, sentinel.prev the least). Freed entries are
// chained through next from freeEntry and reused. An entry is at once in the
// LRU list, the index (index.go), the TTL heap (heap.go) and the arena
// (arena.go), and leaves all four together in remove.

package lru

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// maxKeyLen is the longest key the cache holds; longer keys are not cached
// (they are served, just fetched every time).
const maxKeyLen = 1<<16 - 1

// entry is one cached key: 28 bytes, no pointers. Every field is 4 bytes
// or less, so that entries pack at 28 bytes in their slice: one int64 field
// would align them to 8, and pad them to 32.
type entry struct {
	expiryLo uint32 // deadline and time stored, packed (packExpiry): low word
	expiryHi uint32 // high word
	loc      uint32 // the arena location of key‖value
	prev     uint32 // LRU list
	next     uint32 // LRU list, or the free chain
	heapPos  uint32 // position in the TTL heap
	klen     uint16
	// meta is a small record's value length (at most maxClass, 15 bits), or
	// bigLen for a big record (which knows its own length), and in its top
	// bit the suspect flag: cached before a Revalidate, read as a miss (to
	// be fetched again), but still served by GetStale.
	meta uint16
}

const (
	suspectBit = 1 << 15
	bigLen     = suspectBit - 1 // meta's length for a big record; a small value is at most maxClass < bigLen
)

func (e *entry) expiry() int64 { return int64(uint64(e.expiryHi)<<32 | uint64(e.expiryLo)) }

func (e *entry) setExpiry(x int64) { e.expiryLo, e.expiryHi = uint32(x), uint32(uint64(x)>>32) }

func (e *entry) big() bool { return e.meta&^suspectBit == bigLen }

func (e *entry) suspect() bool { return e.meta&suspectBit != 0 }

// smallLen is the value length of a small record.
func (e *entry) smallLen() int { return int(e.meta &^ suspectBit) }

// class is the arena size class of e's record: bigClass, or the class of
// its size, which is the class it was stored in (a rewrite in place keeps
// the class).
func (e *entry) class() uint8 {
	if e.big() {
		return bigClass
	}
	return classOf(int(e.klen) + e.smallLen())
}

// setRecord records where e's key and value of vlen bytes now live, and
// clears the suspect flag.
func (e *entry) setRecord(loc uint32, class uint8, vlen int) {
	e.loc, e.meta = loc, uint16(vlen)
	if class == bigClass {
		e.meta = bigLen
	}
}

// An entry's expiry packs two times on the cache clock into the 8 bytes a
// deadline alone would take: its deadline in whole milliseconds (rounded up,
// so that an entry never expires before its time) in the high 40 bits, and
// the second it was stored, modulo 2^24, in the low 24, from which a hit's
// age is known (HTTP's Age header). Ordered as integers, expiries are ordered
// by deadline. The stored second is right as long as no entry lives 2^24 s
// (194 days): MaxTTL caps lifetimes there. Deadlines saturate at 2^39 ms
// (17 years) on the cache clock, which is "never" for a process.
const (
	storedBits    = 24
	storedMask    = 1<<storedBits - 1
	maxDeadlineMs = 1<<39 - 1
)

// MaxTTL is the longest an entry lives: a longer TTL is taken as MaxTTL.
const MaxTTL = storedMask * time.Second

// packExpiry returns the expiry of an entry stored at now to live for life
// (both in ns on the cache clock).
func packExpiry(now, life int64) int64 {
	deadline := addSat(now, life)
	ms := deadline / 1e6
	if deadline%1e6 > 0 {
		ms++
	}
	return min(ms, maxDeadlineMs)<<storedBits | (now/1e9)&storedMask
}

// deadline is when e expires, in ns on the cache clock.
func (e *entry) deadline() int64 { return (e.expiry() >> storedBits) * 1e6 }

// age is how long e has been cached at now, in whole seconds.
func (e *entry) age(now int64) int64 { return (now/1e9 - e.expiry()) & storedMask }

type shardStats struct {
	hits, misses, sets, evictions, expirations, invalidations uint64
	bytes                                                     int64 // key and value bytes held
}

type shard struct {
	// seq counts the shard's invalidations and clears; changed[slot] is the
	// seq of the last invalidation of a key whose hash falls in that slot,
	// clearedAt that of the last clear. A value fetched since version v is
	// stale if its slot changed, or the shard was cleared, after v: per key
	// (up to hash slot collisions, which only cost a value not cached), so
	// writes to other keys of the shard do not keep fetched values out.
	// invalidatedAt is the seq of the last invalidation: while it is older
	// than a version, no slot need be read (nor its page made resident).
	seq           atomic.Uint64
	changed       []atomic.Uint64 // changedSlots of them, mapped (newCache)
	invalidatedAt atomic.Uint64
	clearedAt     atomic.Uint64
	mu            sync.Mutex // guards everything below
	entries       []entry    // entries[0] is the LRU sentinel
	freeEntry     uint32     // first free entry, 0 if none
	slots         []uint64   // the index
	maxSlots      int        // the index's size at full capacity
	live          int        // entries in use
	heap          []uint32   // entry indices by deadline
	arena         arena
	capacity      int   // most entries
	maxBytes      int64 // most key and value bytes; 0 means no limit
	staleFor      int64 // how long past its deadline an entry is kept for GetStale
	stats         shardStats
	_             [64]byte // keep neighbouring shards' locks on separate cache lines
}

func (s *shard) init(capacity int, maxBytes, staleFor int64) {
	s.capacity, s.maxBytes, s.staleFor = capacity, maxBytes, staleFor
	s.maxSlots = capacity + capacity/4 + 1
	s.reset()
}

// reset empties the shard, giving its memory back: what is mapped is
// unmapped, and what it starts again with is small enough for the Go heap.
func (s *shard) reset() {
	freeSlice(s.entries)
	freeSlice(s.slots)
	freeSlice(s.heap)
	s.arena.unmap()
	s.entries = makeSlice[entry](min(16, s.capacity+1))[:1]
	s.freeEntry, s.live = 0, 0
	s.slots = makeSlice[uint64](min(64, s.maxSlots))
	s.heap = nil
	s.arena = newArena()
	s.stats.bytes = 0
}

func (s *shard) hashOf(i uint32) uint64 { return xxhash.Sum64(s.keyOf(&s.entries[i])) }

func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func (s *shard) keyOf(e *entry) []byte {
	if e.big() {
		return s.arena.big[e.loc].key
	}
	return s.arena.record(e.loc, int(e.klen))
}

func (s *shard) valueOf(e *entry) []byte {
	if e.big() {
		return s.arena.big[e.loc].value
	}
	return s.arena.record(e.loc, int(e.klen)+e.smallLen())[e.klen:]
}

// vlen is the length of e's value.
func (s *shard) vlen(e *entry) int {
	if e.big() {
		return len(s.arena.big[e.loc].value)
	}
	return e.smallLen()
}

func (s *shard) get(key []byte, h uint64, now int64, visit func([]byte), visitAge func([]byte, int64)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, pos := s.find(key, h)
	if i == 0 {
		s.stats.misses++
		return false
	}
	e := &s.entries[i]
	if now >= e.deadline() {
		if now >= addSat(e.deadline(), s.staleFor) { // not even kept for GetStale
			s.remove(i, pos)
			s.stats.expirations++
		}
		s.stats.misses++
		return false
	}
	if e.suspect() {
		s.stats.misses++
		return false
	}
	s.moveToFront(i)
	s.stats.hits++
	if visitAge != nil {
		visitAge(s.valueOf(e), e.age(now))
	} else {
		visit(s.valueOf(e))
	}
	return true
}

// getStale is get for an entry that may be up to staleFor past its deadline.
func (s *shard) getStale(key []byte, h uint64, now int64, visit func([]byte, int64)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := s.find(key, h)
	if i == 0 || now >= addSat(s.entries[i].deadline(), s.staleFor) {
		return false
	}
	e := &s.entries[i]
	visit(s.valueOf(e), e.age(now))
	return true
}

// anyVersion makes set skip the version check.
const anyVersion = ^uint64(0)

// changedSlots is how many hash slots per shard remember their last
// invalidation (8 KiB a shard, mapped: resident only once invalidations
// touch it, and never part of the Go heap that GOGC lets grow by half).
const changedSlots = 1024

// changedSince reports whether the key of hash h was invalidated, or the
// shard cleared, after version was taken.
func (s *shard) changedSince(h, version uint64) bool {
	changed := s.clearedAt.Load() > version ||
		s.invalidatedAt.Load() > version && s.changed[(h>>32)%changedSlots].Load() > version
	// The slots are mapped outside the Go heap and unmapped by a cleanup
	// once the shards are unreachable: keep s alive past the slot's read
	// (a caller without the lock holds no other reference to it).
	runtime.KeepAlive(s)
	return changed
}

// keeps reports whether the shard's limits let it hold a key of klen bytes
// with a value of vlen.
func (s *shard) keeps(klen, vlen int) bool {
	return s.capacity > 0 && klen <= maxKeyLen && (s.maxBytes == 0 || int64(klen+vlen) <= s.maxBytes)
}

// set stores key and value to live for life from now (see Cache.Set); keep
// lets a big record adopt value rather than copy it (Cache.SetIfVersion).
func (s *shard) set(key, value []byte, h uint64, now, life int64, version uint64, keep bool) {
	expiry := packExpiry(now, life)
	size := len(key) + len(value)
	cacheable := s.keeps(len(key), len(value))
	s.mu.Lock()
	defer s.mu.Unlock()
	if version != anyVersion && s.changedSince(h, version) {
		return // fetched before an invalidation of the key: possibly stale
	}
	i, pos := s.find(key, h)
	if i != 0 {
		if !cacheable { // the old value must not outlive the new one
			s.remove(i, pos)
			return
		}
		s.rewrite(i, key, value, expiry, keep)
		return
	}
	if !cacheable {
		return
	}
	for s.live >= s.capacity || s.maxBytes > 0 && s.stats.bytes+int64(size) > s.maxBytes {
		s.evictOldest()
	}
	loc, class, ok := s.store(key, value, keep)
	if !ok {
		return
	}
	i = s.newEntry()
	e := &s.entries[i]
	*e = entry{klen: uint16(len(key))}
	e.setExpiry(expiry)
	e.setRecord(loc, class, len(value))
	s.growIndex()
	s.insertSlot(slotFor(h, i)) // evictions and growth moved slots: probe afresh
	s.live++
	s.linkFront(i)
	s.heapPush(i)
	s.stats.bytes += int64(size)
	s.stats.sets++
}

// store puts key and value in a new record: a slot of their class, or a big
// record of their own.
func (s *shard) store(key, value []byte, keep bool) (loc uint32, class uint8, ok bool) {
	if classOf(len(key)+len(value)) == bigClass {
		return s.arena.addBig(key, value, keep), bigClass, true
	}
	if loc, class, ok = s.arena.alloc(len(key) + len(value)); ok {
		rec := s.arena.record(loc, len(key)+len(value))
		copy(rec, key)
		copy(rec[len(key):], value)
	}
	return loc, class, ok
}

// rewrite gives entry i a new value and expiry: in place when the record
// keeps its size class, else in a new record. Big records are never written
// in place: readers may still hold the old value (KeptValueMin).
func (s *shard) rewrite(i uint32, key, value []byte, expiry int64, keep bool) {
	e := &s.entries[i]
	oldLen := s.vlen(e)
	s.stats.bytes += int64(len(value) - oldLen)
	if class, old := classOf(len(key)+len(value)), e.class(); class != old || class == bigClass {
		loc, class, ok := s.store(key, value, keep)
		if !ok {
			s.stats.bytes -= int64(len(value) - oldLen)
			s.remove(i, -1)
			return
		}
		s.arena.release(e.loc, old)
		e.setRecord(loc, class, len(value))
	} else { // the same slot: room for the new value
		e.setRecord(e.loc, class, len(value))
		copy(s.valueOf(e), value)
	}
	e.setExpiry(expiry)
	s.heapFix(int(e.heapPos))
	s.moveToFront(i)
	s.stats.sets++
	for s.maxBytes > 0 && s.stats.bytes > s.maxBytes && s.entries[0].prev != i {
		s.evictOldest()
	}
}

// suspectAll marks every entry suspect, and refuses the values of fetches
// under way, which may predate invalidations that were lost.
func (s *shard) suspectAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clearedAt.Store(s.seq.Add(1))
	// In memory order, not LRU order (a hundred times faster on a large
	// shard): free entries get the flag too, and lose it when reused.
	for i := 1; i < len(s.entries); i++ {
		s.entries[i].meta |= suspectBit
	}
}

// drop removes key's entry, if any and unless the key changed since version,
// without counting an invalidation or disturbing fetches under way.
func (s *shard) drop(key []byte, h uint64, version uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changedSince(h, version) {
		return
	}
	if i, pos := s.find(key, h); i != 0 {
		s.remove(i, pos)
	}
}

func (s *shard) invalidate(key []byte, h uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Even if the key is not cached: its fetch may be under way. The slot
	// first, so that whoever sees invalidatedAt sees the slot too.
	v := s.seq.Add(1)
	s.changed[(h>>32)%changedSlots].Store(v)
	s.invalidatedAt.Store(v)
	i, pos := s.find(key, h)
	if i == 0 {
		return false
	}
	s.remove(i, pos)
	s.stats.invalidations++
	return true
}

// reap removes up to max entries whose deadline (plus staleFor) has passed
// and reports whether more are due.
func (s *shard) reap(now int64, max int) (n int, more bool) {
	for len(s.heap) > 0 && addSat(s.entries[s.heap[0]].deadline(), s.staleFor) <= now {
		if n == max {
			return n, true
		}
		s.remove(s.heap[0], -1)
		s.stats.expirations++
		n++
	}
	return n, false
}

func (s *shard) evictOldest() {
	s.remove(s.entries[0].prev, -1)
	s.stats.evictions++
}

// remove takes entry i out of the index (from slot pos, or wherever it is
// when pos < 0), the LRU list, the heap and the arena, and frees it.
func (s *shard) remove(i uint32, pos int) {
	if pos < 0 {
		pos = s.slotOf(i)
	}
	s.unindex(pos)
	e := &s.entries[i]
	s.unlink(i)
	s.heapRemove(int(e.heapPos))
	s.stats.bytes -= int64(int(e.klen) + s.vlen(e))
	s.arena.release(e.loc, e.class())
	s.live--
	*e = entry{next: s.freeEntry}
	s.freeEntry = i
}

// newEntry returns a free entry index, growing the slice no further than
// capacity needs.
func (s *shard) newEntry() uint32 {
	if i := s.freeEntry; i != 0 {
		s.freeEntry = s.entries[i].next
		return i
	}
	s.entries = growSlice(s.entries, s.capacity+1)
	i := len(s.entries)
	s.entries = s.entries[:i+1]
	s.entries[i] = entry{}
	return uint32(i)
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
	first := s.entries[0].next
	s.entries[i].prev, s.entries[i].next = 0, first
	s.entries[first].prev = i
	s.entries[0].next = i
}
