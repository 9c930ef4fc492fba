package lru

import (
	"math"
	"testing"
	"time"
)

// The longest TTL (and StaleFor) a Config can carry: added to the clock, it
// overflows int64 at once. The deadline must saturate rather than wrap
// around into the past, where nothing would ever be served.
const forever = time.Duration(math.MaxInt64)

// A TTL past MaxTTL is MaxTTL: entries are served (with their right age, up
// to the last second the expiry's stored time can tell) for MaxTTL, and no
// longer.
func TestHugeTTLCachesAndServes(t *testing.T) {
	for _, ttl := range []time.Duration{forever, forever - 1, 2562047 * time.Hour, MaxTTL + time.Second} {
		clk := newFake()
		c := newTest(t, Config{Capacity: 10, TTL: ttl, Now: clk.now, ReapInterval: -1})
		clk.advance(time.Hour) // a clock past 0, so that clock+ttl overflows
		c.Set("k", []byte("v"))
		c.SetIfVersion("redis-ttl", []byte("w"), 0, c.Version("redis-ttl")) // no TTL in Redis: the cache's own
		clk.advance(MaxTTL - time.Second)
		if n := c.reapExpired(); n != 0 {
			t.Errorf("ttl %v: the reaper removed %d entries", ttl, n)
		}
		for k, want := range map[string]string{"k": "v", "redis-ttl": "w"} {
			var v string
			var age int64
			if ok := c.GetAge([]byte(k), func(b []byte, a int64) { v, age = string(b), a }); !ok || v != want || age != int64((MaxTTL-time.Second)/time.Second) {
				t.Errorf("ttl %v: Get(%s) = %q %v, age %ds, want a hit MaxTTL-1s old", ttl, k, v, ok, age)
			}
		}
		if st := c.Stats(); st.Expirations != 0 || st.Len != 2 {
			t.Errorf("ttl %v: %+v", ttl, st)
		}
		clk.advance(time.Second)
		if n := c.reapExpired(); n != 2 {
			t.Errorf("ttl %v: the reaper removed %d entries MaxTTL after they were set, want 2", ttl, n)
		}
	}
}

// A key's TTL in Redis still cuts a huge cache TTL short.
func TestHugeTTLYieldsToRedisTTL(t *testing.T) {
	clk := newFake()
	c := newTest(t, Config{Capacity: 10, TTL: forever, Now: clk.now, ReapInterval: -1})
	clk.advance(time.Second)
	c.SetIfVersion("short", []byte("v"), time.Minute, c.Version("short"))
	c.Set("long", []byte("v"))
	clk.advance(2 * time.Minute)
	if n := c.reapExpired(); n != 1 {
		t.Errorf("reaped %d, want the short-lived key only", n)
	}
	if _, ok := get(c, "short"); ok {
		t.Error("the key Redis expires in a minute is served after two")
	}
	if _, ok := get(c, "long"); !ok {
		t.Error("the key without a Redis TTL expired")
	}
}

// A huge StaleFor keeps an expired entry for GetStale (and from the reaper)
// instead of overflowing into "expired long ago".
func TestHugeStaleFor(t *testing.T) {
	for _, ttl := range []time.Duration{time.Second, forever} {
		clk := newFake()
		c := newTest(t, Config{Capacity: 10, TTL: ttl, StaleFor: forever, Now: clk.now, ReapInterval: -1})
		clk.advance(time.Hour)
		c.Set("k", []byte("v"))
		clk.advance(time.Hour)
		if n := c.reapExpired(); n != 0 {
			t.Errorf("ttl %v: the reaper removed %d entries", ttl, n)
		}
		_, fresh := get(c, "k")
		if fresh != (ttl == forever) {
			t.Errorf("ttl %v: Get an hour on hit = %v", ttl, fresh)
		}
		var v string
		if !c.GetStale([]byte("k"), func(b []byte, _ int64) { v = string(b) }) || v != "v" {
			t.Errorf("ttl %v: GetStale = %q, want the entry", ttl, v)
		}
	}
}

func TestAddSat(t *testing.T) {
	for _, tc := range []struct{ a, b, want int64 }{
		{1, 2, 3},
		{-5, 3, -2},
		{math.MaxInt64 - 1, 1, math.MaxInt64},
		{1, math.MaxInt64, math.MaxInt64},
		{math.MaxInt64, math.MaxInt64, math.MaxInt64},
		{math.MinInt64 + 1, -1, math.MinInt64},
		{-2, math.MinInt64, math.MinInt64},
		{math.MaxInt64, math.MinInt64, -1},
		{7, 0, 7},
	} {
		if got := addSat(tc.a, tc.b); got != tc.want {
			t.Errorf("addSat(%d, %d) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// cmd/redis-proxy refuses a --capacity above what the index can hold: at most
// maxShards shards of maxEntries-1 entries (uint32 indices, entry 0 the
// sentinel). If these limits change, change maxCapacity there too.
func TestCapacityLimit(t *testing.T) {
	if got := int64(maxShards) * (maxEntries - 1); got != 1099511627264 {
		t.Fatalf("the cache holds at most %d keys; cmd/redis-proxy's maxCapacity says 1099511627264", got)
	}
	c := newTest(t, Config{Capacity: maxShards * (maxEntries - 1), TTL: time.Hour, ReapInterval: -1})
	if len(c.shards) != maxShards {
		t.Fatalf("%d shards", len(c.shards))
	}
	for i := range c.shards {
		if c.shards[i].capacity != maxEntries-1 {
			t.Fatalf("shard %d holds %d keys, want %d", i, c.shards[i].capacity, maxEntries-1)
		}
	}
	c.Set("k", []byte("v"))
	if _, ok := get(c, "k"); !ok {
		t.Fatal("miss")
	}
}
