// The arena: where a shard keeps its keys and values, in memory the garbage
// collector never has to look inside.
//
// Each record (key bytes followed by value bytes) lives in a slot of a size
// class. Classes are 4 bytes apart up to 128 bytes, then 8 per doubling
// (each 1/8 larger than the one before) up to 16 KiB, so a slot wastes at most
// 1/8 of its size, and a small record (most cached values are small) at most
// 3 bytes: at 8 bytes apart a record of 16+100 bytes took 120, 4 bytes a key
// more than it needs. Slots are cut, bump-allocator style, from chunks; a
// freed slot goes onto its class's free list and is reused by the next record
// of that class. A free list is threaded through the free slots themselves
// (each holds the location of the next in its first 4 bytes; the smallest
// slot is 4 bytes), so it costs nothing on the Go heap however many slots are
// free, where a slice of locations per class cost 4 bytes a free slot and a
// slice header per class and shard for the GC to scan, and grew by copying.
// Chunks are all 16 KiB, the largest class: a shard's newest chunk is on
// average half unused, so chunks are kept small (growing them would leave up
// to half of the newest, largest one unused). Records over 16 KiB get an
// allocation of their own ("big"), tracked in a side slice.
//
// The GC sees one pointer per chunk and one per big record, never one per
// entry: chunks are []byte, and everything else (locations, free list heads)
// is uint32s. Chunks are cut from mapped slabs outside the Go heap (offheap.go);
// big records stay on the heap, one allocation each.
//
// Fragmentation is bounded two ways. Inside a slot, by the class spacing
// (at most 1/8 of the slot, plus up to 3 bytes of 4-byte rounding). Across
// classes, because freed slots are only reused by their own class, the arena
// holds, per class, at most the largest number of slots that class ever had
// live at once; when the mix of record sizes shifts, the old classes' slots
// wait on their free lists for records of their size. The tail of a chunk too
// small for the next slot is cut into smaller slots, not dropped. Clear gives
// every chunk back.

package lru

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"unsafe"
)

const (
	chunkSize = 16 << 10
	maxClass  = chunkSize // larger records are "big"
	offBits   = 12        // a location is chunk<<offBits | offset/4
	// maxChunks is 16 GiB of chunks per shard: one fewer than locations can
	// tell, so that no slot is at noSlot.
	maxChunks = 1<<(32-offBits) - 1
	bigClass  = 255
	// numClasses is len(classSizes), which init checks: the length of a
	// shard's array of free list heads.
	numClasses = 88
	noSlot     = ^uint32(0) // the end of a free list
)

// classSizes lists the slot size of each class; classOfUnits maps a record
// size in 4-byte units to the smallest class that holds it.
var (
	classSizes   []int
	classOfUnits [maxClass/4 + 1]uint8
)

func init() {
	for size := 4; size <= maxClass; {
		classSizes = append(classSizes, size)
		step := 4
		if size >= 128 {
			step = 1 << (bits.Len(uint(size)) - 4) // 8 classes per doubling
		}
		size += step
	}
	if len(classSizes) != numClasses {
		panic(fmt.Sprintf("lru: %d size classes, numClasses says %d", len(classSizes), numClasses))
	}
	c := 0
	for units := range classOfUnits {
		for classSizes[c] < units*4 {
			c++
		}
		classOfUnits[units] = uint8(c)
	}
}

// classOf returns the class for a record of n bytes, or bigClass.
func classOf(n int) uint8 {
	if n > maxClass {
		return bigClass
	}
	return classOfUnits[(n+3)/4]
}

// Chunks are mapped in slabs (offheap.go) so that a large cache needs few
// mappings (the kernel limits them, vm.max_map_count): a slab holds an eighth
// as many chunks as the arena already has, from minSlabChunks (1 MiB) to
// maxSlabChunks (64 MiB). A slab is resident only as far as its chunks have
// been used.
const (
	minSlabChunks = 64
	maxSlabChunks = 4096
)

// slab is one mapping of n chunks.
type slab struct {
	p unsafe.Pointer
	n int
}

type arena struct {
	chunks   [][]byte // cut from slabs
	slabs    []slab
	slabLeft int                // chunks of the last slab not yet handed out
	used     int                // bytes of the last chunk handed out
	free     [numClasses]uint32 // each class's first free slot, or noSlot
	big      []bigRecord
	bigFree  []uint32
	bytes    int64 // bytes held in chunks and big records
}

func newArena() arena {
	var a arena
	for c := range a.free {
		a.free[c] = noSlot
	}
	return a
}

// bigRecord is a record over maxClass bytes: allocated on its own (key and
// value together), or, when the cache was given the value to keep, the
// value as given and a copy of the key. Either way never written again.
type bigRecord struct {
	key, value []byte
}

// addBig stores a big record and returns its location; keep adopts value
// instead of copying it.
func (a *arena) addBig(key, value []byte, keep bool) uint32 {
	var r bigRecord
	if keep {
		r = bigRecord{append([]byte(nil), key...), value}
	} else {
		b := make([]byte, len(key)+len(value))
		copy(b, key)
		copy(b[len(key):], value)
		r = bigRecord{b[:len(key):len(key)], b[len(key):]}
	}
	a.bytes += int64(len(key) + len(value))
	if k := len(a.bigFree); k > 0 {
		loc := a.bigFree[k-1]
		a.bigFree = a.bigFree[:k-1]
		a.big[loc] = r
		return loc
	}
	a.big = append(a.big, r)
	return uint32(len(a.big) - 1)
}

// alloc returns a location for a record of n bytes, at most maxClass, and
// its class; ok is false only when the shard has used all its chunk
// addresses (16 GiB).
func (a *arena) alloc(n int) (loc uint32, class uint8, ok bool) {
	class = classOf(n)
	if loc = a.free[class]; loc != noSlot {
		a.free[class] = binary.LittleEndian.Uint32(a.record(loc, 4))
		return loc, class, true
	}
	size := classSizes[class]
	if len(a.chunks) == 0 || a.used+size > chunkSize {
		if len(a.chunks) == maxChunks {
			return 0, 0, false
		}
		a.retireTail()
		a.chunks = append(a.chunks, a.newChunk())
		a.bytes += chunkSize
		a.used = 0
	}
	loc = uint32(len(a.chunks)-1)<<offBits | uint32(a.used/4)
	a.used += size
	return loc, class, true
}

// newChunk returns the next chunk of the current slab, mapping a slab when
// the last one is used up.
func (a *arena) newChunk() []byte {
	if a.slabLeft == 0 {
		n := min(max(len(a.chunks)/8, minSlabChunks), maxSlabChunks)
		a.slabs = append(a.slabs, slab{mapBytes(n * chunkSize), n})
		a.slabLeft = n
	}
	s := a.slabs[len(a.slabs)-1]
	k := s.n - a.slabLeft
	a.slabLeft--
	return unsafe.Slice((*byte)(unsafe.Add(s.p, k*chunkSize)), chunkSize)
}

// unmap gives every slab back; the arena must not be used afterwards.
func (a *arena) unmap() {
	for _, s := range a.slabs {
		unmapBytes(s.p, s.n*chunkSize)
	}
	a.chunks, a.slabs, a.slabLeft = nil, nil, 0
}

// retireTail cuts what is left of the last chunk into free slots of the
// largest classes that fit, before a new chunk is started.
func (a *arena) retireTail() {
	if len(a.chunks) == 0 {
		return
	}
	last := uint32(len(a.chunks) - 1)
	for rest := chunkSize - a.used; rest >= classSizes[0]; rest = chunkSize - a.used {
		c := uint8(len(classSizes) - 1)
		if rest < maxClass {
			if c = classOfUnits[rest/4]; classSizes[c] > rest {
				c--
			}
		}
		a.pushFree(last<<offBits|uint32(a.used/4), c)
		a.used += classSizes[c]
	}
}

// release returns a record's slot to its class (or drops a big record).
func (a *arena) release(loc uint32, class uint8) {
	if class == bigClass {
		a.bytes -= int64(len(a.big[loc].key) + len(a.big[loc].value))
		a.big[loc] = bigRecord{}
		a.bigFree = append(a.bigFree, loc)
		return
	}
	a.pushFree(loc, class)
}

// pushFree puts the slot at loc on its class's free list.
func (a *arena) pushFree(loc uint32, class uint8) {
	binary.LittleEndian.PutUint32(a.record(loc, 4), a.free[class])
	a.free[class] = loc
}

// record returns the n bytes at loc, in a chunk (not a big record).
func (a *arena) record(loc uint32, n int) []byte {
	off := int(loc&(1<<offBits-1)) * 4
	return a.chunks[loc>>offBits][off : off+n : off+n]
}
