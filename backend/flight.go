// Coalescing: at most one GET per key under way, however many ask.
//
// A flight is one GET in progress. A fetch of a key that has a flight joins
// it as a waiter instead of sending a GET of its own, and every waiter gets
// the flight's result (value, nil or error). Flights live in shards by key
// hash, each with its own mutex, so fetches of different keys rarely meet.
// When a flight lands, OnResult runs first (the caller caches the value
// there), then the flight leaves its shard, then the waiters are told: a
// fetch that arrives in between either finds the value in the cache or joins
// the flight, so a burst of misses for one key costs exactly one GET.
//
// Once landed, a flight is referred to by nothing that reads it (it has left
// its shard, and the batches that held it are spent), so it goes back to a
// pool for the next miss rather than to the garbage collector.

package backend

import (
	"sync"

	"github.com/cespare/xxhash/v2"
)

const flightShards = 64

type flight struct {
	key     string
	token   uint64   // the key's version when the GET was sent (Config.Versions)
	first   waiter   // the fetch that started the flight (inline: no slice for the usual one)
	waiters []waiter // fetches that joined it
}

// waiter is a fetch waiting for a flight: done(i, result). (A pair rather
// than a closure, which would cost an allocation per key.)
type waiter struct {
	done func(int, Result)
	i    int
}

type flightShard struct {
	mu sync.Mutex // guards m
	m  map[string]*flight
}

type joinOutcome uint8

const (
	joinedFlight  joinOutcome = iota // a GET of the key was under way
	startedFlight                    // a new flight was started: send its GET
	refused                          // none under way and no room to start one
)

// join adds done to key's flight; if there is none, or the key has been
// invalidated since its GET was sent (its answer may be older than a write
// this fetch must see), it starts one when canStart (which reserves a place
// in the queue) allows. The flight it replaces lands for its own waiters.
func (c *Client) join(key string, w waiter, canStart func() bool) (*flight, joinOutcome) {
	sh := &c.flights[xxhash.Sum64String(key)%flightShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if f := sh.m[key]; f != nil && (c.versions == nil || !c.versions.Changed(key, f.token)) {
		f.waiters = append(f.waiters, w)
		c.coalesced.Add(1)
		return f, joinedFlight
	}
	if !canStart() {
		return nil, refused
	}
	f := flights.Get().(*flight)
	f.key, f.first = key, w
	if c.versions != nil {
		f.token = c.versions.Version(key)
	}
	sh.m[key] = f
	return f, startedFlight
}

// land delivers a flight's result to its waiters.
func (c *Client) land(f *flight, r Result) {
	if c.onResult != nil {
		c.onResult(f.key, f.token, r)
	}
	sh := &c.flights[xxhash.Sum64String(f.key)%flightShards]
	sh.mu.Lock()
	if sh.m[f.key] == f { // not replaced by a flight started after an invalidation
		delete(sh.m, f.key)
	}
	waiters := f.waiters
	sh.mu.Unlock()
	f.first.done(f.first.i, r)
	for _, w := range waiters {
		w.done(w.i, r)
	}
	if cap(waiters) > keptWaiters {
		waiters = nil
	}
	clear(waiters)
	*f = flight{waiters: waiters[:0]}
	flights.Put(f)
}

// flights holds landed flights for reuse.
var flights = sync.Pool{New: func() any { return new(flight) }}

// keptWaiters is the most joined fetches a reused flight keeps room for.
const keptWaiters = 16
