// Package queue is the coordinator's fair queue of admitted runs waiting
// for a slot (issue 13): one requester or organisation submitting many
// runs at once must not push everyone else's runs past their deadlines.
//
// Runs wait in a queue per organisation, first come first served within
// it, and slots go to the organisations in turn (round robin, in the order
// they first queued), so an organisation with one run waiting gets the
// next slot after at most one run of each other organisation. A run's
// deadline starts when it leaves the queue, not when it was submitted.
//
// A Queue is not safe for concurrent use: the dispatcher holds its lock.
package queue

import "slices"

// Queue holds run ids by organisation.
type Queue struct {
	orgs  []string            // organisations with runs waiting, in turn order
	runs  map[string][]string // org → run ids, oldest first
	next  int                 // index in orgs of the organisation whose turn it is
	count int
}

// New returns an empty queue.
func New() *Queue { return &Queue{runs: map[string][]string{}} }

// Len is the number of runs waiting.
func (q *Queue) Len() int { return q.count }

// Push adds run id of organisation org at the back of org's queue.
func (q *Queue) Push(org, id string) {
	if len(q.runs[org]) == 0 {
		// A newcomer takes its turn just before the organisation whose
		// turn it is now, that is last in the current round.
		q.orgs = slices.Insert(q.orgs, q.next, org)
		q.next++
		if q.next == len(q.orgs) {
			q.next = 0
		}
	}
	q.runs[org] = append(q.runs[org], id)
	q.count++
}

// Pop removes and returns the run whose turn it is; ok is false when
// nothing waits.
func (q *Queue) Pop() (id string, ok bool) {
	if q.count == 0 {
		return "", false
	}
	org := q.orgs[q.next]
	id = q.runs[org][0]
	q.removeAt(org, 0)
	return id, true
}

// Remove takes run id out of the queue (a cancelled run) and says whether
// it was there.
func (q *Queue) Remove(id string) bool {
	for _, org := range q.orgs {
		if i := slices.Index(q.runs[org], id); i >= 0 {
			q.removeAt(org, i)
			return true
		}
	}
	return false
}

// removeAt removes the i-th run of org and, when org had its turn,
// passes the turn on.
func (q *Queue) removeAt(org string, i int) {
	oi := slices.Index(q.orgs, org)
	q.runs[org] = slices.Delete(q.runs[org], i, i+1)
	q.count--
	turn := oi == q.next && i == 0
	if len(q.runs[org]) == 0 {
		delete(q.runs, org)
		q.orgs = slices.Delete(q.orgs, oi, oi+1)
		if oi < q.next {
			q.next--
		}
		if q.next >= len(q.orgs) {
			q.next = 0
		}
		return
	}
	if turn {
		q.next = (q.next + 1) % len(q.orgs)
	}
}

// Order returns every waiting run id in the order Pop would give them,
// so a run's position is its index plus one.
func (q *Queue) Order() []string {
	c := &Queue{orgs: slices.Clone(q.orgs), runs: map[string][]string{}, next: q.next, count: q.count}
	for org, ids := range q.runs {
		c.runs[org] = slices.Clone(ids)
	}
	out := make([]string, 0, q.count)
	for {
		id, ok := c.Pop()
		if !ok {
			return out
		}
		out = append(out, id)
	}
}

// Position is run id's place in the queue, from 1, or 0 when it does not
// wait.
func (q *Queue) Position(id string) int {
	return slices.Index(q.Order(), id) + 1
}
