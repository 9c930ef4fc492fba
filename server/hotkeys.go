// Hot keys: the keys read most over about the last minute, for operators
// (/debug/hotkeys on the admin port, INFO hotkeys).
//
// How it works. Each loop samples one key lookup in sampleEvery (GET, each
// MGET key, HTTP GET and HEAD) into a fixed table counted by the
// Space-Saving algorithm: a sampled key already in the table counts one
// more; a new one takes a free slot, or else the slot with the smallest
// count, inheriting that count plus one (so counts never undercount a key
// that is in the table, and a key read more than 1/hotSlots of the sample
// is always in it). Nothing is allocated: keys are copied into the slots,
// truncated to hotKeyMax bytes. Tables cover windows of hotWindow; readers
// merge every loop's current and previous window, under each loop's own
// lock, which the loop takes once per sample.

package server

import (
	"sort"
	"sync"
)

const (
	sampleEvery = 64
	hotSlots    = 64
	hotKeyMax   = 128
	hotWindow   = 30 // seconds
)

type hotSlot struct {
	key   [hotKeyMax]byte
	klen  int
	count uint64
}

type hotTable struct {
	slots [hotSlots]hotSlot
	used  int
}

// add counts one sample of key.
func (t *hotTable) add(key []byte) {
	key = key[:min(len(key), hotKeyMax)]
	least := 0
	for i := range t.used {
		sl := &t.slots[i]
		if sl.klen == len(key) && string(sl.key[:sl.klen]) == string(key) {
			sl.count++
			return
		}
		if sl.count < t.slots[least].count {
			least = i
		}
	}
	count := uint64(1)
	if t.used < hotSlots {
		least = t.used
		t.used++
	} else {
		count = t.slots[least].count + 1
	}
	sl := &t.slots[least]
	sl.klen = copy(sl.key[:], key)
	sl.count = count
}

// hotKeys is one loop's sample.
type hotKeys struct {
	countdown int // lookups until the next sample; the loop's alone

	mu          sync.Mutex // guards what follows: the loop writes, readers read
	cur, prev   hotTable
	windowStart int64 // Server.clock at the start of cur
}

// sample counts a key lookup on lp; one in sampleEvery is recorded.
func (s *Server) sample(lp *loop, key []byte) {
	if lp.hot.countdown--; lp.hot.countdown > 0 {
		return
	}
	lp.hot.countdown = sampleEvery
	h := &lp.hot
	now := s.clock.Load()
	h.mu.Lock()
	if now-h.windowStart >= hotWindow {
		h.prev = h.cur
		if now-h.windowStart >= 2*hotWindow { // idle for a whole window: that one is empty
			h.prev = hotTable{}
		}
		h.cur = hotTable{}
		h.windowStart = now
	}
	h.cur.add(key)
	h.mu.Unlock()
}

// HotKey is a key and about how many times it was read over the last
// 30 to 60 seconds (its samples times the sampling interval).
type HotKey struct {
	Key   string
	Reads uint64
}

// HotKeys returns the n keys read most recently and often, most read first.
func (s *Server) HotKeys(n int) []HotKey {
	now := s.clock.Load()
	counts := map[string]uint64{}
	s.loopsMu.Lock()
	for _, lp := range s.loops {
		h := &lp.hot
		h.mu.Lock()
		// cur holds samples since windowStart, prev the window before it:
		// each counts while what it holds is under a minute old.
		for i, t := range []*hotTable{&h.cur, &h.prev} {
			if now-h.windowStart >= int64(2-i)*hotWindow {
				continue
			}
			for _, sl := range t.slots[:t.used] {
				counts[string(sl.key[:sl.klen])] += sl.count * sampleEvery
			}
		}
		h.mu.Unlock()
	}
	s.loopsMu.Unlock()
	hot := make([]HotKey, 0, len(counts))
	for k, c := range counts {
		hot = append(hot, HotKey{k, c})
	}
	sort.Slice(hot, func(i, j int) bool {
		if hot[i].Reads != hot[j].Reads {
			return hot[i].Reads > hot[j].Reads
		}
		return hot[i].Key < hot[j].Key
	})
	return hot[:min(n, len(hot))]
}
