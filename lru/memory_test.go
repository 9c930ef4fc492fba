//go:build !race

package lru

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// TestMemoryOverhead fills a cache with 1M keys of 16 bytes holding 100-byte
// values and reports the heap it costs per key beyond the 116 bytes of key
// and value. (Not under -race, which changes allocation sizes.)
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
	before := heapInUse()
	// Keys spread over shards unevenly; 5% headroom lets every shard hold its share.
	c := New(Config{Capacity: n + n/20, TTL: time.Hour, ReapInterval: -1})
	for _, k := range keys {
		c.Set(k, value)
	}
	after := heapInUse()
	if st := c.Stats(); st.Len != n {
		t.Fatalf("holds %d keys", st.Len)
	}
	perKey := float64(after-before)/n - keyLen - valueLen
	t.Logf("heap per key beyond key+value: %.1f bytes (%d shards, arena %d MiB)", perKey, len(c.shards), c.Stats().ArenaBytes>>20)
	if perKey > 64 {
		t.Fatalf("%.1f bytes per key of overhead; the engine is designed for about 50", perKey)
	}
	runtime.KeepAlive(c)
	runtime.KeepAlive(keys) // keys must stay live through both measurements
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
