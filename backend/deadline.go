// The context a worker sends its batches with, reused from batch to batch.
//
// rueidis needs a context that ends at a batch's deadline: in pipelined mode
// it waits for the answers until the context is done, and not otherwise.
// context.WithDeadline costs a context, a timer and a channel for every
// batch, three allocations which at -P 1 (a batch a miss) were a third of a
// miss's garbage. A batchContext belongs to one worker and is re-armed for
// each batch: the timer is reset, and the channel replaced only after it was
// closed (a batch that timed out).
//
// A batch's timer may fire late, after the worker has moved on to the next
// batch (Stop does not wait for a callback under way): expire closes the
// channel only while a batch is armed and its deadline has passed, so a
// late callback cannot end the next batch early. rueidis keeps no context
// past DoMulti's return (its ring ignores it; an abandoned batch's answers
// are awaited on their own channel), so the next arming cannot confuse it.

package backend

import (
	"context"
	"sync"
	"time"
)

type batchContext struct {
	timer *time.Timer // calls expire

	mu       sync.Mutex // guards all below: expire runs on the timer's goroutine
	deadline time.Time
	done     chan struct{}
	armed    bool // a batch is under way
	expired  bool // done is closed
}

func newBatchContext() *batchContext {
	b := &batchContext{done: make(chan struct{})}
	b.timer = time.AfterFunc(time.Hour, b.expire)
	b.timer.Stop()
	return b
}

// arm starts a batch that ends at deadline.
func (b *batchContext) arm(deadline time.Time) {
	b.mu.Lock()
	if b.expired {
		b.done, b.expired = make(chan struct{}), false
	}
	b.deadline, b.armed = deadline, true
	b.mu.Unlock()
	b.timer.Reset(time.Until(deadline))
}

// disarm ends the batch.
func (b *batchContext) disarm() {
	b.timer.Stop()
	b.mu.Lock()
	b.armed = false
	b.mu.Unlock()
}

func (b *batchContext) expire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.armed && !b.expired && !time.Now().Before(b.deadline) {
		close(b.done)
		b.expired = true
	}
}

func (b *batchContext) Deadline() (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.deadline, true
}

func (b *batchContext) Done() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done
}

func (b *batchContext) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.expired {
		return context.DeadlineExceeded
	}
	return nil
}

func (b *batchContext) Value(any) any { return nil }
