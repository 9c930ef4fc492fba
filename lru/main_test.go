package lru

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: workers,
// reapers and rueidis's connection goroutines must all stop when closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
