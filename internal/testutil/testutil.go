// Package testutil holds the small helpers tests on both sides of the
// network share: a buffer a logger and a test can both use, a wait that
// polls instead of sleeping a guessed time, and sizes read from the
// environment. It is imported only by
// tests and by the test harnesses (coordinatortest, nodetest).
package testutil

import (
	"bytes"
	"os"
	"strconv"
	"strings"
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

// EnvInt reads a whole number of at least least from the environment
// variable name, or returns def when it is unset; anything else fails tb,
// naming the variable. Slow tests and benches take their sizes this way.
func EnvInt(tb testing.TB, name string, def, least int) int {
	tb.Helper()
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		tb.Fatalf("%s=%q: want a whole number of %d or more", name, v, least)
	}
	return n
}

// EnvDuration reads a duration such as 10s from the environment variable
// name, or returns def when it is unset.
func EnvDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	tb.Helper()
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		tb.Fatalf("%s=%q: want a duration such as 10s", name, v)
	}
	return d
}
