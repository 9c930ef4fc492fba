// Memory outside the Go heap, for the cache's bulk: arena chunks, and the
// entries, index and TTL heap of every shard once they pass mapMin bytes.
//
// Why: the garbage collector lets the heap grow to twice what is live before
// it collects (GOGC=100), so every byte the cache held on the Go heap cost
// about two bytes of resident memory, and a constant stream of misses kept
// it near that peak. Memory from mmap is outside that rule: it is resident
// only once touched (a slice that doubles costs RSS for what is used, not
// for its capacity), and it goes back to the kernel the moment it is
// unmapped, when a slice grows or the cache is cleared, not when a later GC
// cycle and the scavenger get to it. The Go heap keeps the small things and
// what the rest of the proxy allocates, so GOGC's doubling applies only to
// that.
//
// Only pointer-free types live here: the garbage collector does not look
// inside this memory. A shard's lock guards every use, and nothing that
// points into it is kept past the lock, so unmapping under the lock is safe.

package lru

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapMin is the size from which a shard's slices are mapped rather than
// made: below it the page granularity of mmap would waste more than the
// GC's headroom costs.
const mapMin = 8 << 10

var pageSize = os.Getpagesize()

func roundToPage(n int) int { return (n + pageSize - 1) &^ (pageSize - 1) }

// mapBytes returns n zeroed bytes of fresh anonymous memory.
func mapBytes(n int) unsafe.Pointer {
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(roundToPage(n)), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		// What the Go heap does when the system has no memory left.
		panic(fmt.Sprintf("lru: out of memory mapping %d bytes: %v", n, err))
	}
	return p
}

func unmapBytes(p unsafe.Pointer, n int) {
	if err := unix.MunmapPtr(p, uintptr(roundToPage(n))); err != nil {
		panic(fmt.Sprintf("lru: munmap: %v", err))
	}
}

// makeSlice returns a zeroed slice of n T's: mapped when it is at least
// mapMin bytes, made on the Go heap otherwise. T must hold no pointers.
func makeSlice[T any](n int) []T {
	var zero T
	if size := n * int(unsafe.Sizeof(zero)); size >= mapMin {
		return unsafe.Slice((*T)(mapBytes(size)), n)
	}
	return make([]T, n)
}

// freeSlice gives back a slice from makeSlice (resliced or not: its
// capacity says whether it was mapped). It must not be used afterwards.
func freeSlice[T any](s []T) {
	var zero T
	if size := cap(s) * int(unsafe.Sizeof(zero)); size >= mapMin {
		unmapBytes(unsafe.Pointer(unsafe.SliceData(s[:1])), size)
	}
}

// growSlice returns s with room for one more element, moving it to a slice
// of twice its capacity (at most limit, and at least one more) when full.
func growSlice[T any](s []T, limit int) []T {
	if len(s) < cap(s) {
		return s
	}
	grown := makeSlice[T](max(min(2*cap(s), limit), len(s)+1, 8))[:len(s)]
	copy(grown, s)
	freeSlice(s)
	return grown
}
