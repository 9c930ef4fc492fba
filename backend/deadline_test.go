package backend

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A batchContext ends each batch at its own deadline, and only then: a
// timer callback that comes late (from a batch already over, or before the
// deadline of the one under way) ends nothing; after a batch that timed out,
// the next starts with a fresh channel.
func TestBatchContext(t *testing.T) {
	b := newBatchContext()
	var _ context.Context = b
	open := func(what string) {
		t.Helper()
		select {
		case <-b.Done():
			t.Fatalf("%s: done", what)
		default:
		}
		if b.Err() != nil {
			t.Fatalf("%s: %v", what, b.Err())
		}
	}
	b.arm(time.Now().Add(time.Hour))
	open("armed")
	b.expire() // a late callback, before the deadline
	open("a callback before the deadline")
	b.disarm()
	b.expire() // a late callback, no batch under way
	open("a callback between batches")

	deadline := time.Now().Add(20 * time.Millisecond)
	b.arm(deadline)
	if d, ok := b.Deadline(); !ok || !d.Equal(deadline) {
		t.Fatalf("deadline %v %v, want %v", d, ok, deadline)
	}
	select {
	case <-b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the deadline passed and the batch did not end")
	}
	if time.Now().Before(deadline) || !errors.Is(b.Err(), context.DeadlineExceeded) {
		t.Fatalf("ended early, or with %v", b.Err())
	}
	b.disarm()
	b.arm(time.Now().Add(time.Hour))
	open("the batch after a timeout")
	b.disarm()
}
