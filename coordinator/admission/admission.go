// Package admission is the one place that decides how many submissions a
// requester has made, for haven/submit's rate limits. A requester is an
// (organisation, user) pair, never a user id alone.
//
// Counting and storing must not interleave: if two submissions by one
// requester were both counted before either was stored, both would see
// the same count and a limit of 50 would admit 60. So Begin takes a lock
// per organisation (the limits on runs in progress are per requester and
// per organisation) and returns the counts; the caller decides (haven/submit),
// stores the run, and only then calls the release function. The job store
// is one process's (one coordinator holds a data directory), so an
// in-process lock is enough.
//
// Every submission counts: runs that started (whatever became of them)
// against the bundle's runs-per-day limit, and refused ones against a
// separate, larger limit, so that refused requests cannot fill the job
// store and audit log without bound.
package admission

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/havenhealth/haven/coordinator/store"
)

// Window is how far back submissions are counted.
const Window = 24 * time.Hour

// Counter counts a requester's stored submissions (store.SQLite).
type Counter interface {
	CountSubmissions(ctx context.Context, org, id string, since time.Time) (store.SubmissionCounts, error)
}

// Requester is who submits: an organisation and a user id in it.
type Requester struct {
	Org string
	ID  string
}

// Controller serialises each organisation's submissions and counts them.
// It is safe for concurrent use.
type Controller struct {
	counter Counter

	mu    sync.Mutex
	locks map[string]*lock // by organisation
}

// lock is one organisation's lock; users counts those holding or waiting
// for it, so it is dropped from the map when nobody needs it.
type lock struct {
	mu    sync.Mutex
	users int
}

// New returns a controller counting with c.
func New(c Counter) *Controller {
	return &Controller{counter: c, locks: map[string]*lock{}}
}

// Begin waits for the lock of r's organisation, then counts r's
// submissions in the Window before now and the runs in progress of r and
// of the organisation. The caller must call release once the submission
// is stored (or abandoned), and exactly once; until then no other
// submission of the organisation is counted.
func (c *Controller) Begin(ctx context.Context, r Requester, now time.Time) (counts store.SubmissionCounts, release func(), err error) {
	if r.Org == "" || r.ID == "" {
		return store.SubmissionCounts{}, nil, fmt.Errorf("admission: requester must have an organisation and an id")
	}
	c.mu.Lock()
	l := c.locks[r.Org]
	if l == nil {
		l = &lock{}
		c.locks[r.Org] = l
	}
	l.users++
	c.mu.Unlock()

	l.mu.Lock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			l.mu.Unlock()
			c.mu.Lock()
			l.users--
			if l.users == 0 {
				delete(c.locks, r.Org)
			}
			c.mu.Unlock()
		})
	}
	counts, err = c.counter.CountSubmissions(ctx, r.Org, r.ID, now.Add(-Window))
	if err != nil {
		release()
		return store.SubmissionCounts{}, nil, fmt.Errorf("count submissions of %s of %s: %w", r.ID, r.Org, err)
	}
	return counts, release, nil
}
