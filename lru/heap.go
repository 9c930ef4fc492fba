// The TTL heap: a binary min-heap of entry indices ordered by deadline, with
// each entry's position kept in the entry so it can be removed or moved in
// O(log n) when the entry is evicted, invalidated or rewritten.
//
// Why a heap and not a FIFO: with one global TTL, deadlines would arrive in
// insertion order and a queue would do. Deadlines differ per key once an
// entry may expire earlier than the TTL (a key whose own expiry in Redis is
// sooner), so the next to expire is not the oldest. With the global TTL only,
// every push lands at the bottom and sifts no further: O(1).

package lru

func (s *shard) less(a, b int) bool {
	return s.entries[s.heap[a]].expiry() < s.entries[s.heap[b]].expiry() // by deadline: the high bits
}

func (s *shard) swap(a, b int) {
	s.heap[a], s.heap[b] = s.heap[b], s.heap[a]
	s.entries[s.heap[a]].heapPos = uint32(a)
	s.entries[s.heap[b]].heapPos = uint32(b)
}

func (s *shard) heapPush(i uint32) {
	n := len(s.heap)
	s.entries[i].heapPos = uint32(n)
	s.heap = growSlice(s.heap, s.capacity)[:n+1]
	s.heap[n] = i
	s.siftUp(n)
}

func (s *shard) heapRemove(pos int) {
	last := len(s.heap) - 1
	if pos != last {
		s.swap(pos, last)
	}
	s.heap = s.heap[:last]
	if pos != last {
		s.heapFix(pos)
	}
}

// heapFix restores the order after the deadline at pos changed.
func (s *shard) heapFix(pos int) {
	if !s.siftDown(pos) {
		s.siftUp(pos)
	}
}

func (s *shard) siftUp(j int) {
	for j > 0 {
		parent := (j - 1) / 2
		if !s.less(j, parent) {
			return
		}
		s.swap(j, parent)
		j = parent
	}
}

// siftDown reports whether the element at i moved.
func (s *shard) siftDown(i int) bool {
	start, n := i, len(s.heap)
	for {
		child := 2*i + 1
		if child >= n {
			break
		}
		if right := child + 1; right < n && s.less(right, child) {
			child = right
		}
		if !s.less(child, i) {
			break
		}
		s.swap(i, child)
		i = child
	}
	return i > start
}
