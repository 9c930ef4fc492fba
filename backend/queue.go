// The queue of jobs waiting for a worker.
//
// A FIFO ring under a mutex, grown by doubling as jobs arrive and dropped
// when it empties after a backlog. A channel would do the same work but must be allocated at
// its full length up front: at 1024 jobs per worker that was 12 MB of heap
// (with pointers for the GC to scan) that a proxy with few misses never
// used. How many jobs may wait is bounded by the client's reservations
// (FetchMany, putBack), not here: a push never blocks, since the event
// loops push.

package backend

import "sync"

// keptRing is the largest ring kept while the queue is empty.
const keptRing = 64

type jobQueue struct {
	mu     sync.Mutex
	ready  sync.Cond // a job was pushed, or the queue closed
	ring   []job
	head   int // index of the oldest job
	n      int // jobs queued
	closed bool
}

func newJobQueue() *jobQueue {
	q := &jobQueue{}
	q.ready.L = &q.mu
	return q
}

// push queues j; it reports false, queueing nothing, once the queue is closed.
func (q *jobQueue) push(j job) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	if q.n == len(q.ring) {
		grown := make([]job, max(16, 2*len(q.ring)))
		for i := range q.n {
			grown[i] = q.ring[(q.head+i)%len(q.ring)]
		}
		q.ring, q.head = grown, 0
	}
	q.ring[(q.head+q.n)%len(q.ring)] = j
	q.n++
	q.ready.Signal()
	return true
}

// pop takes the oldest job, waiting for one; ok is false once the queue is
// closed and empty.
func (q *jobQueue) pop() (j job, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n == 0 && !q.closed {
		q.ready.Wait()
	}
	return q.take()
}

// tryPop takes the oldest job if there is one, without waiting.
func (q *jobQueue) tryPop() (job, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.take()
}

func (q *jobQueue) take() (job, bool) {
	if q.n == 0 {
		return job{}, false
	}
	j := q.ring[q.head]
	q.ring[q.head] = job{} // let the flights go
	q.head = (q.head + 1) % len(q.ring)
	if q.n--; q.n == 0 && len(q.ring) > keptRing {
		q.ring, q.head = nil, 0 // a backlog's ring goes once it is worked off
	}
	return j, true
}

// len is the number of jobs waiting.
func (q *jobQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// close wakes every waiting worker; jobs already queued are still taken.
func (q *jobQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.ready.Broadcast()
}
