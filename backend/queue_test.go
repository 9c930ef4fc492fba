package backend

import (
	"errors"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// Jobs come out in the order they went in, across the ring's growth and
// wrap-around, and an emptied queue gives a backlog's ring back.
func TestJobQueueOrder(t *testing.T) {
	q := newJobQueue()
	next, want := 0, 0
	mark := func(i int) job { return job{deadline: time.Unix(int64(i), 0)} }
	for round := range 50 {
		for range round % 37 {
			q.push(mark(next))
			next++
		}
		for range round % 23 {
			j, ok := q.tryPop()
			if !ok {
				break
			}
			if got := int(j.deadline.Unix()); got != want {
				t.Fatalf("popped job %d, want %d", got, want)
			}
			want++
		}
	}
	for want < next {
		j, _ := q.tryPop()
		if got := int(j.deadline.Unix()); got != want {
			t.Fatalf("popped job %d, want %d", got, want)
		}
		want++
	}
	if _, ok := q.tryPop(); ok || q.len() != 0 || len(q.ring) > keptRing {
		t.Fatalf("empty queue: len %d, ring of %d", q.len(), len(q.ring))
	}
}

// A waiting worker wakes for a push; on close, the jobs already queued are
// still taken, then every waiter is told the queue is done and pushes fail.
func TestJobQueueClose(t *testing.T) {
	q := newJobQueue()
	got := make(chan bool)
	go func() { _, ok := q.pop(); got <- ok }()
	q.push(job{})
	if !<-got {
		t.Fatal("a waiting pop did not get the pushed job")
	}
	q.push(job{})
	q.close()
	if _, ok := q.pop(); !ok {
		t.Fatal("a job queued before close was lost")
	}
	for range 3 {
		go func() { _, ok := q.pop(); got <- ok }()
	}
	for range 3 {
		if <-got {
			t.Fatal("pop on a closed, empty queue returned a job")
		}
	}
	if q.push(job{}) {
		t.Fatal("push after close succeeded")
	}
}

// A fetch that reaches a closed client fails at once with ErrClosed instead
// of waiting for a worker that is gone.
func TestFetchAfterClose(t *testing.T) {
	redis := redistest.Start(t)
	c, err := New(Config{Addr: redis.Addr, Timeout: time.Second, MaxParallel: 2, QueueLen: 8})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if r := fetch(t, c, "k"); !errors.Is(r.Err, ErrClosed) {
		t.Fatalf("fetch after Close: %+v", r)
	}
	if st := c.Stats(); st.Queued != 0 || c.queued.Load() != 0 {
		t.Fatalf("a closed client keeps %d queued (%d reserved)", st.Queued, c.queued.Load())
	}
}
