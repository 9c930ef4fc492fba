// The index: from a key's hash to its entry, an open-addressing table of
// uint32 slots probed linearly.
//
// A slot holds the entry's index in its low 24 bits and 8 further bits of the
// key's hash as a tag in the high 8, so a probe rarely looks at an entry
// whose key does not match; 0 is an empty slot (entry 0 is the LRU sentinel,
// never indexed). A key's home slot is its hash's low 32 bits scaled to the
// table size (Lemire's multiply-shift), so the table need not be a power of
// two and can stay close to its load limit of 3/4. The shard is chosen by the
// hash's top bits, the tag by bits 32-39, the home slot by the low 32: three
// independent parts.
//
// Deletion shifts the rest of the probe cluster back instead of leaving a
// tombstone, so lookups never wade through dead slots. That needs the home
// slot of each entry it moves, which is recomputed from the entry's key: the
// index stores no hashes, keeping it at 4 bytes a slot.

package lru

import "github.com/cespare/xxhash/v2"

const (
	idxBits    = 24
	idxMask    = 1<<idxBits - 1
	maxEntries = idxMask // entries per shard, sentinel included
)

func tagOf(h uint64) uint32 { return uint32(h>>32) &^ idxMask }

func home(h uint64, n int) int { return int(uint64(uint32(h)) * uint64(n) >> 32) }

// find returns the index of key's entry and its slot, or entry 0 and the
// empty slot where key would go.
func (s *shard) find(key []byte, h uint64) (uint32, int) {
	n, tag := len(s.slots), tagOf(h)
	pos := home(h, n)
	for {
		v := s.slots[pos]
		if v == 0 {
			return 0, pos
		}
		if v&^idxMask == tag {
			i := v & idxMask
			if e := &s.entries[i]; int(e.klen) == len(key) && string(s.keyOf(e)) == string(key) {
				return i, pos
			}
		}
		if pos++; pos == n {
			pos = 0
		}
	}
}

// slotOf returns the slot that indexes entry i.
func (s *shard) slotOf(i uint32) int {
	n := len(s.slots)
	pos := home(s.hashOf(i), n)
	for s.slots[pos]&idxMask != i {
		if pos++; pos == n {
			pos = 0
		}
	}
	return pos
}

func (s *shard) hashOf(i uint32) uint64 { return xxhash.Sum64(s.keyOf(&s.entries[i])) }

// unindex empties slot pos and moves later members of its probe cluster back
// so that every key stays reachable from its home slot.
func (s *shard) unindex(pos int) {
	n := len(s.slots)
	for j := pos; ; {
		s.slots[pos] = 0
		for {
			if j++; j == n {
				j = 0
			}
			v := s.slots[j]
			if v == 0 {
				return
			}
			// The entry at j may fill the hole at pos unless its home lies
			// cyclically in (pos, j].
			k := home(s.hashOf(v&idxMask), n)
			if pos <= j && (k <= pos || k > j) || pos > j && k <= pos && k > j {
				s.slots[pos] = v
				pos = j
				break
			}
		}
	}
}

// growIndex makes room for one more key, keeping the load at most 3/4.
func (s *shard) growIndex() {
	if 4*(s.live+1) <= 3*len(s.slots) {
		return
	}
	n := min(2*len(s.slots), s.maxSlots)
	if n == len(s.slots) {
		return
	}
	s.slots = make([]uint32, n)
	for i := s.entries[0].next; i != 0; i = s.entries[i].next {
		h := s.hashOf(i)
		pos := home(h, n)
		for s.slots[pos] != 0 {
			if pos++; pos == n {
				pos = 0
			}
		}
		s.slots[pos] = tagOf(h) | i
	}
}
