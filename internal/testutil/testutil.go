// Package testutil holds the small helpers tests on both sides of the
// network share: a buffer a logger and a test can both use, and a wait
// that polls instead of sleeping a guessed time. It is imported only by
// tests and by the test harnesses (coordinatortest, nodetest).
package testutil

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer a logger and a test can share.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Patience is how long Eventually waits: long, since these machines are
// shared and a loaded host is slow, and a passing test never waits it out.
const Patience = 30 * time.Second

// Eventually polls cond every few milliseconds until it holds, and fails
// the test, saying what it waited for, if it has not within Patience.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", Patience, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
