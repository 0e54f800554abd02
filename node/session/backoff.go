package session

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Backoff says how long to wait before the next connection attempt.
type Backoff interface {
	// Next returns the wait before the next attempt and advances.
	Next() time.Duration
	// Reset starts again from the shortest wait, after a healthy link.
	Reset()
}

// Exponential is a capped exponential backoff with jitter: each wait is
// Factor times the last, up to Max, and then shortened by a random part
// of up to Jitter of itself, so that nodes dropped together by a
// coordinator restart do not all come back in the same instant. It is
// safe for concurrent use.
type Exponential struct {
	Min, Max time.Duration
	Factor   float64
	// Jitter is the largest fraction of a wait taken off at random, 0 to 1.
	Jitter float64

	mu   sync.Mutex
	next time.Duration
	rand func() float64 // [0, 1); nil means math/rand/v2
}

// NewExponential returns a backoff from min to max, doubling, with up to
// half of each wait taken off at random.
func NewExponential(min, max time.Duration) *Exponential {
	return &Exponential{Min: min, Max: max, Factor: 2, Jitter: 0.5}
}

// Next returns the wait before the next attempt.
func (b *Exponential) Next() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next < b.Min {
		b.next = b.Min
	}
	d := b.next
	grown := time.Duration(float64(b.next) * max(b.Factor, 1))
	b.next = min(grown, b.Max)
	if b.next < d { // overflow
		b.next = b.Max
	}
	r := rand.Float64
	if b.rand != nil {
		r = b.rand
	}
	jitter := min(max(b.Jitter, 0), 1)
	return d - time.Duration(float64(d)*jitter*r())
}

// Reset makes the next wait Min again.
func (b *Exponential) Reset() {
	b.mu.Lock()
	b.next = b.Min
	b.mu.Unlock()
}

// Constant is a backoff that always waits the same time. Tests use it with
// a millisecond.
type Constant time.Duration

// Next returns the constant wait.
func (c Constant) Next() time.Duration { return time.Duration(c) }

// Reset does nothing.
func (Constant) Reset() {}

// Clock is the time source of a session; tests may replace it.
type Clock interface {
	Now() time.Time
	// After is time.After.
	After(d time.Duration) <-chan time.Time
}

// realClock is the system clock.
type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
