// The index: from a key's hash to its entry, an open-addressing table probed
// linearly.
//
// A slot is a uint64: the low 32 bits of the key's hash above the entry's
// index; 0 is an empty slot (entry 0 is the LRU sentinel, never indexed). A
// probe compares 32 hash bits before it looks at an entry's key, so it
// dereferences an entry only on a true match (or a 1 in 4 billion collision).
// A key's home slot is its 32 hash bits scaled to the table size (Lemire's
// multiply-shift), so the table need not be a power of two and stays near its
// load limit of 4/5. The shard is chosen by the hash's top bits, the slot by
// its low 32: independent parts.
//
// Deletion shifts the rest of the probe cluster back instead of leaving a
// tombstone, so lookups never wade through dead slots; the hash bits in each
// slot give every entry's home without touching the entry or its key.

package lru

const maxEntries = 1<<32 - 1 // entries per shard, sentinel included

func slotFor(h uint64, i uint32) uint64 { return h<<32 | uint64(i) }

func home(h uint64, n int) int { return int(uint64(uint32(h)) * uint64(n) >> 32) }

// find returns the index of key's entry and its slot, or entry 0 and the
// empty slot where key would go.
func (s *shard) find(key []byte, h uint64) (uint32, int) {
	n, want := len(s.slots), uint32(h)
	pos := home(h, n)
	for {
		v := s.slots[pos]
		if v == 0 {
			return 0, pos
		}
		if uint32(v>>32) == want {
			i := uint32(v)
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
	h := s.hashOf(i)
	n := len(s.slots)
	pos := home(h, n)
	for uint32(s.slots[pos]) != i {
		if pos++; pos == n {
			pos = 0
		}
	}
	return pos
}

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
			k := home(v>>32, n)
			if pos <= j && (k <= pos || k > j) || pos > j && k <= pos && k > j {
				s.slots[pos] = v
				pos = j
				break
			}
		}
	}
}

// insertSlot puts v into the first empty slot from its home on.
func (s *shard) insertSlot(v uint64) {
	n := len(s.slots)
	pos := home(v>>32, n)
	for s.slots[pos] != 0 {
		if pos++; pos == n {
			pos = 0
		}
	}
	s.slots[pos] = v
}

// growIndex makes room for one more key, keeping the load at most 4/5.
func (s *shard) growIndex() {
	if 5*(s.live+1) <= 4*len(s.slots) {
		return
	}
	n := min(2*len(s.slots), s.maxSlots)
	if n == len(s.slots) {
		return
	}
	old := s.slots
	s.slots = makeSlice[uint64](n)
	for _, v := range old {
		if v != 0 {
			s.insertSlot(v)
		}
	}
	freeSlice(old)
}
