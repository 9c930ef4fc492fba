package lru

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// A reference model of one shard: a map and a slice in LRU order, written
// for obviousness, not speed. The cache is checked against it, and against
// its own structural invariants, after every operation.

type modelEntry struct {
	value    []byte
	expireAt int64 // in ns, rounded up to a whole ms as the cache keeps deadlines
	storedAt int64
}

type modelShard struct {
	capacity int
	maxBytes int64
	entries  map[string]modelEntry
	order    []string // most recently read first
}

func (m *modelShard) bytes() int64 {
	var n int64
	for k, e := range m.entries {
		n += int64(len(k) + len(e.value))
	}
	return n
}

func (m *modelShard) drop(k string) {
	delete(m.entries, k)
	m.order = slices.DeleteFunc(m.order, func(o string) bool { return o == k })
}

func (m *modelShard) touch(k string) {
	m.order = slices.DeleteFunc(m.order, func(o string) bool { return o == k })
	m.order = slices.Insert(m.order, 0, k)
}

// get returns k's value and its age in whole seconds.
func (m *modelShard) get(k string, now int64) ([]byte, int64, bool) {
	e, ok := m.entries[k]
	if !ok {
		return nil, 0, false
	}
	if now >= e.expireAt {
		m.drop(k)
		return nil, 0, false
	}
	m.touch(k)
	return e.value, now/1e9 - e.storedAt/1e9, true
}

func (m *modelShard) set(k string, v []byte, now, life int64) {
	expireAt := (now + life + 1e6 - 1) / 1e6 * 1e6
	size := int64(len(k) + len(v))
	if m.capacity == 0 || len(k) > maxKeyLen || m.maxBytes > 0 && size > m.maxBytes {
		m.drop(k)
		return
	}
	if _, ok := m.entries[k]; ok {
		m.entries[k] = modelEntry{slices.Clone(v), expireAt, now}
		m.touch(k)
		for m.maxBytes > 0 && m.bytes() > m.maxBytes && m.order[len(m.order)-1] != k {
			m.drop(m.order[len(m.order)-1])
		}
		return
	}
	for len(m.entries) >= m.capacity || m.maxBytes > 0 && m.bytes()+size > m.maxBytes {
		m.drop(m.order[len(m.order)-1])
	}
	m.entries[k] = modelEntry{slices.Clone(v), expireAt, now}
	m.touch(k)
}

func (m *modelShard) reap(now int64) {
	for k, e := range m.entries {
		if now >= e.expireAt {
			m.drop(k)
		}
	}
}

// checker drives a cache (with a fake clock and no reaper goroutine) and its
// model side by side.
type checker struct {
	t      testing.TB
	c      *Cache
	models []modelShard
	now    time.Time
	ttl    time.Duration
}

func newChecker(t testing.TB, capacity int, maxBytes int64, nshards int) *checker {
	ch := &checker{t: t, now: time.Unix(1e9, 0), ttl: time.Second}
	ch.c = newCache(Config{Capacity: capacity, MaxBytes: maxBytes, TTL: ch.ttl, Now: func() time.Time { return ch.now }, ReapInterval: -1}, nshards)
	for i := range ch.c.shards {
		ch.models = append(ch.models, modelShard{capacity: ch.c.shards[i].capacity, maxBytes: ch.c.shards[i].maxBytes, entries: map[string]modelEntry{}})
	}
	return ch
}

func (ch *checker) model(k string) *modelShard {
	return &ch.models[xxhash.Sum64String(k)>>ch.c.shift]
}

func (ch *checker) clock() int64 { return ch.c.clock() }

func (ch *checker) get(k string) {
	var got []byte
	var age int64
	ok := ch.c.GetAge([]byte(k), func(v []byte, a int64) { got, age = slices.Clone(v), a })
	want, wantAge, wantOK := ch.model(k).get(k, ch.clock())
	if ok != wantOK || !bytes.Equal(got, want) || age != wantAge {
		ch.t.Fatalf("Get(%q) = %q %v, age %d, model says %q %v, age %d", k, got, ok, age, want, wantOK, wantAge)
	}
}

func (ch *checker) set(k string, v []byte) {
	ch.c.Set(k, v)
	ch.model(k).set(k, v, ch.clock(), int64(ch.ttl))
}

func (ch *checker) invalidate(k string) {
	_, want := ch.model(k).entries[k]
	if got := ch.c.Invalidate(k); got != want {
		ch.t.Fatalf("Invalidate(%q) = %v, model says %v", k, got, want)
	}
	ch.model(k).drop(k)
}

func (ch *checker) reap() {
	ch.c.reapExpired()
	for i := range ch.models {
		ch.models[i].reap(ch.clock())
	}
}

func (ch *checker) clear() {
	ch.c.Clear()
	for i := range ch.models {
		ch.models[i].entries, ch.models[i].order = map[string]modelEntry{}, nil
	}
}

// verify compares every shard with its model and checks its invariants.
func (ch *checker) verify() {
	t := ch.t
	for si := range ch.c.shards {
		s, m := &ch.c.shards[si], &ch.models[si]
		var order []string
		for i := s.entries[0].next; i != 0; i = s.entries[i].next {
			e := &s.entries[i]
			k := string(s.keyOf(e))
			order = append(order, k)
			me, ok := m.entries[k]
			if !ok || !bytes.Equal(s.valueOf(e), me.value) || e.deadline() != me.expireAt {
				t.Fatalf("shard %d: entry %q = %q (deadline %d), model %q %v (deadline %d)", si, k, s.valueOf(e), e.deadline(), me.value, ok, me.expireAt)
			}
			if j, _ := s.find([]byte(k), xxhash.Sum64String(k)); j != i {
				t.Fatalf("shard %d: index finds %q at entry %d, not %d", si, k, j, i)
			}
			if s.heap[e.heapPos] != i {
				t.Fatalf("shard %d: heap position of %q is wrong", si, k)
			}
		}
		if !slices.Equal(order, m.order) {
			t.Fatalf("shard %d: LRU order %q, model %q", si, order, m.order)
		}
		used := 0
		for _, v := range s.slots {
			if v != 0 {
				used++
			}
		}
		free := 0
		for i := s.freeEntry; i != 0; i = s.entries[i].next {
			free++
		}
		switch {
		case s.live != len(order) || used != s.live || len(s.heap) != s.live:
			t.Fatalf("shard %d: live %d, listed %d, indexed %d, in heap %d", si, s.live, len(order), used, len(s.heap))
		case 1+s.live+free != len(s.entries):
			t.Fatalf("shard %d: %d entries, %d live + %d free + sentinel", si, len(s.entries), s.live, free)
		case s.stats.bytes != m.bytes():
			t.Fatalf("shard %d: %d bytes, model %d", si, s.stats.bytes, m.bytes())
		case s.live > s.capacity || s.maxBytes > 0 && s.stats.bytes > s.maxBytes:
			t.Fatalf("shard %d over its limits: %d keys, %d bytes", si, s.live, s.stats.bytes)
		}
		for p := 1; p < len(s.heap); p++ {
			if s.less(p, (p-1)/2) {
				t.Fatalf("shard %d: heap out of order at %d", si, p)
			}
		}
		// The free lists, threaded through the free slots, end, and hold
		// no live record's slot.
		freeSlots := map[uint32]bool{}
		for c, loc := range s.arena.free {
			for ; loc != noSlot; loc = binary.LittleEndian.Uint32(s.arena.record(loc, 4)) {
				if freeSlots[loc] || len(freeSlots) > len(s.arena.chunks)*chunkSize/4 {
					t.Fatalf("shard %d: the free list of class %d loops at %#x", si, c, loc)
				}
				freeSlots[loc] = true
			}
		}
		for i := s.entries[0].next; i != 0; i = s.entries[i].next {
			if e := &s.entries[i]; !e.big() && freeSlots[e.loc] {
				t.Fatalf("shard %d: the slot of %q is on a free list", si, s.keyOf(e))
			}
		}
	}
}

// valueSizes exercise every kind of slot: empty, small classes, class
// boundaries, large classes, and big (over 16 KiB) records.
var valueSizes = []int{0, 1, 3, 4, 5, 7, 8, 9, 100, 120, 121, 1000, 5000, 16000, 16384, 20000}

// step applies one operation chosen by op and arg to the checker.
func (ch *checker) step(op, arg byte, keys int) {
	k := fmt.Sprint("key-", int(arg)%keys)
	switch op % 8 {
	case 0, 1, 2:
		ch.get(k)
	case 3, 4:
		size := valueSizes[int(op/8)%len(valueSizes)]
		ch.set(k, bytes.Repeat([]byte{arg}, size))
	case 5:
		ch.invalidate(k)
	case 6:
		ch.now = ch.now.Add(time.Duration(arg) * ch.ttl / 128)
		if arg%4 == 0 {
			ch.reap()
		}
	case 7:
		if arg == 0 {
			ch.clear()
		} else {
			ch.get(k)
		}
	}
	ch.verify()
}

func TestModel(t *testing.T) {
	for _, tc := range []struct {
		capacity, shards int
		maxBytes         int64
	}{
		{5, 1, 0},
		{16, 4, 0},
		{8, 1, 30000},
		{40, 4, 60000},
		{1, 1, 0},
	} {
		t.Run(fmt.Sprintf("cap%d-shards%d-bytes%d", tc.capacity, tc.shards, tc.maxBytes), func(t *testing.T) {
			for seed := range uint64(20) {
				rng := rand.New(rand.NewPCG(seed, 1))
				ch := newChecker(t, tc.capacity, tc.maxBytes, tc.shards)
				for range 2000 {
					ch.step(byte(rng.UintN(256)), byte(rng.UintN(256)), 3*tc.capacity)
				}
			}
		})
	}
}

func FuzzOps(f *testing.F) {
	f.Add([]byte{3, 1, 0, 1, 11, 2, 0, 2, 5, 1, 6, 200, 0, 1})
	f.Add([]byte{3, 1, 99, 2, 3, 3, 3, 4, 0, 1, 3, 5, 7, 0, 6, 255, 0, 5})
	f.Fuzz(func(t *testing.T, ops []byte) {
		ch := newChecker(t, 6, 40000, 2)
		for i := 0; i+1 < len(ops); i += 2 {
			ch.step(ops[i], ops[i+1], 12)
		}
	})
}
