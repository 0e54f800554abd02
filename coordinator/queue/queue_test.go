package queue

import (
	"slices"
	"testing"
)

// TestRoundRobin: runs leave in turns by organisation, oldest first
// within one, whatever order they arrived in, and a late organisation's
// single run does not wait behind another's backlog.
func TestRoundRobin(t *testing.T) {
	for _, tc := range []struct {
		name string
		push [][2]string // org, id
		want []string
	}{
		{"empty", nil, nil},
		{"one organisation", [][2]string{{"A", "a1"}, {"A", "a2"}, {"A", "a3"}}, []string{"a1", "a2", "a3"}},
		{"backlog then newcomer", [][2]string{{"A", "a1"}, {"A", "a2"}, {"A", "a3"}, {"A", "a4"}, {"B", "b1"}},
			[]string{"a1", "b1", "a2", "a3", "a4"}},
		{"three organisations", [][2]string{{"A", "a1"}, {"A", "a2"}, {"B", "b1"}, {"B", "b2"}, {"C", "c1"}},
			[]string{"a1", "b1", "c1", "a2", "b2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := New()
			for _, p := range tc.push {
				q.Push(p[0], p[1])
			}
			if got := q.Order(); !slices.Equal(got, tc.want) && len(got)+len(tc.want) > 0 {
				t.Errorf("Order = %v, want %v", got, tc.want)
			}
			var got []string
			for {
				id, ok := q.Pop()
				if !ok {
					break
				}
				got = append(got, id)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Pop order %v, want %v", got, tc.want)
			}
			if q.Len() != 0 {
				t.Errorf("Len %d after popping everything", q.Len())
			}
		})
	}
}

// TestInterleaved pops while runs arrive, as slots free up during a
// burst: an organisation that arrives mid-burst is served within one
// round.
func TestInterleaved(t *testing.T) {
	q := New()
	for _, id := range []string{"a1", "a2", "a3", "a4", "a5", "a6"} {
		q.Push("A", id)
	}
	var got []string
	pop := func() {
		id, ok := q.Pop()
		if !ok {
			t.Fatal("nothing to pop")
		}
		got = append(got, id)
	}
	pop()
	pop()
	q.Push("B", "b1")
	q.Push("B", "b2")
	pop()
	pop()
	q.Push("C", "c1")
	for q.Len() > 0 {
		pop()
	}
	// B arrives during A's turn and waits for that one run (a3); C
	// arrives during A's next turn and waits for one run of A and one of
	// B, then A has the slots to itself.
	want := []string{"a1", "a2", "a3", "b1", "a4", "b2", "c1", "a5", "a6"}
	if !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

// TestRemoveAndPosition: a cancelled run leaves the queue, positions
// close up, and removing the run whose turn it is passes the turn on.
func TestRemoveAndPosition(t *testing.T) {
	q := New()
	for _, p := range [][2]string{{"A", "a1"}, {"A", "a2"}, {"B", "b1"}, {"C", "c1"}} {
		q.Push(p[0], p[1])
	}
	if got := q.Order(); !slices.Equal(got, []string{"a1", "b1", "c1", "a2"}) {
		t.Fatalf("order %v", got)
	}
	if p := q.Position("c1"); p != 3 {
		t.Errorf("c1 at %d, want 3", p)
	}
	if !q.Remove("a1") || q.Remove("a1") || q.Remove("nope") {
		t.Error("Remove of a1 (twice) and of an unknown run")
	}
	if got := q.Order(); !slices.Equal(got, []string{"b1", "c1", "a2"}) {
		t.Errorf("after removing a1: %v", got)
	}
	if !q.Remove("c1") {
		t.Error("c1 not removed")
	}
	if p, n := q.Position("a2"), q.Position("c1"); p != 2 || n != 0 {
		t.Errorf("a2 at %d (want 2), c1 at %d (want 0)", p, n)
	}
	if q.Len() != 2 {
		t.Errorf("Len %d, want 2", q.Len())
	}
}
