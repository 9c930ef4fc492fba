//go:build !race

package lru

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMemoryOverhead fills a cache with 1M keys of 16 bytes holding 100-byte
// values and reports the memory it costs per key beyond the 116 bytes of key
// and value: resident memory, since most of the cache is mapped outside the
// Go heap (measured after the heap's garbage is given back to the kernel).
// (Not under -race, which changes allocation sizes.)
func TestMemoryOverhead(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a million entries")
	}
	const n, keyLen, valueLen = 1_000_000, 16, 100
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key:%012d", i)
	}
	value := make([]byte, valueLen)
	before := residentInUse(t)
	// Keys spread over shards unevenly; 5% headroom lets every shard hold its share.
	c := New(Config{Capacity: n + n/20, TTL: time.Hour, ReapInterval: -1})
	for _, k := range keys {
		c.Set(k, value)
	}
	after := residentInUse(t)
	if st := c.Stats(); st.Len != n {
		t.Fatalf("holds %d keys", st.Len)
	}
	perKey := float64(after-before)/n - keyLen - valueLen
	t.Logf("resident memory per key beyond key+value: %.1f bytes (%d shards, arena %d MiB)", perKey, len(c.shards), c.Stats().ArenaBytes>>20)
	// Entry 28, index slot 10.5 (8 bytes at this capacity's load), heap slot
	// 4, and about 3 of partly used pages and chunks: 45.8 measured.
	if perKey > 52 {
		t.Fatalf("%.1f bytes per key of overhead; the engine is designed for about 46", perKey)
	}
	runtime.KeepAlive(keys) // keys must stay live through both measurements
	c.Clear()               // its mappings go now, not when a GC finds c unreachable
}

// residentInUse is the process's resident memory (VmRSS) once the GC has
// run and given the heap's free pages back.
func residentInUse(t *testing.T) uint64 {
	debug.FreeOSMemory()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status:", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(v, "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Skip("no VmRSS in /proc/self/status")
	return 0
}

// Clear gives the cache's memory back to the kernel at once: the records,
// entries and index live in mappings that are unmapped, not in heap memory
// that a later GC cycle and the scavenger would return.
func TestClearGivesMemoryBack(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a million entries")
	}
	const n = 1_000_000
	value := make([]byte, 100)
	c := New(Config{Capacity: n + n/20, TTL: time.Hour, ReapInterval: -1})
	before := residentInUse(t)
	for i := range n {
		c.Set(fmt.Sprintf("key:%012d", i), value)
	}
	full := residentInUse(t)
	c.Clear()
	cleared := residentInUse(t)
	t.Logf("resident: %d MiB empty, %d MiB full, %d MiB after Clear", before>>20, full>>20, cleared>>20)
	if full-before < n*116 {
		t.Fatalf("a full cache grew resident memory by only %d MiB", (full-before)>>20)
	}
	if cleared > before+(full-before)/10 {
		t.Fatalf("Clear gave back only %d of %d MiB", (full-cleared)>>20, (full-before)>>20)
	}
	c.Set("k", value) // usable after Clear
	if !c.Get([]byte("k"), func([]byte) {}) {
		t.Fatal("the cleared cache does not cache")
	}
}
