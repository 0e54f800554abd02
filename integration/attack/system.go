package attack

import (
	"fmt"
	"strings"
)

// Interval is the set of whole numbers from Lo to Hi; Hi is Unbounded
// when nothing bounds it.
type Interval struct{ Lo, Hi int64 }

// Exact reports whether the interval holds one value.
func (iv Interval) Exact() bool { return iv.Lo == iv.Hi }

// Contains reports whether v lies in the interval.
func (iv Interval) Contains(v int64) bool { return iv.Lo <= v && v <= iv.Hi }

func (iv Interval) String() string {
	switch {
	case iv.Exact():
		return fmt.Sprint(iv.Lo)
	case iv.Hi >= Unbounded:
		return fmt.Sprintf("[%d, ∞)", iv.Lo)
	}
	return fmt.Sprintf("[%d, %d]", iv.Lo, iv.Hi)
}

// add is saturating addition at Unbounded.
func add(a, b int64) int64 { return min(a+b, Unbounded) }

// System is what the attacker has learnt: atoms (true counts of groups
// of patients that no release splits further, each a whole number ≥ 0)
// and sums of atoms, each known to lie in an interval. Propagate narrows
// every atom's interval as far as the sums allow, by interval reasoning
// that is sound (it never drops a value that satisfies every sum) but
// not complete (it may keep values that no solution has).
type System struct {
	names  []string
	index  map[string]int
	bounds []Interval
	sums   []sum
	// le are pairs (a, b) with atom a ≤ atom b: a count of patients with
	// something is at most the count of the patients.
	le [][2]int
}

// sum says that the atoms add up to a value within bound.
type sum struct {
	atoms []int
	bound Interval
	label string
}

// NewSystem returns a system with no atoms.
func NewSystem() *System { return &System{index: map[string]int{}} }

// Atom returns the index of the atom named name, adding it, with no
// bound but 0 below, if it is new.
func (s *System) Atom(name string) int {
	if i, ok := s.index[name]; ok {
		return i
	}
	s.index[name] = len(s.names)
	s.names = append(s.names, name)
	s.bounds = append(s.bounds, Interval{0, Unbounded})
	return len(s.names) - 1
}

// Name is the name of atom i.
func (s *System) Name(i int) string { return s.names[i] }

// Atoms is the number of atoms.
func (s *System) Atoms() int { return len(s.names) }

// Sums is the number of sums known.
func (s *System) Sums() int { return len(s.sums) }

// Bound is atom i's interval as narrowed so far.
func (s *System) Bound(i int) Interval { return s.bounds[i] }

// Know records that the atoms add up to a value in bound; label says
// where that came from, for errors.
func (s *System) Know(atoms []int, bound Interval, label string) {
	s.sums = append(s.sums, sum{atoms: atoms, bound: bound, label: label})
}

// AtMost records that atom a is at most atom b.
func (s *System) AtMost(a, b int) { s.le = append(s.le, [2]int{a, b}) }

// SumBound is the interval of the sum of atoms that the atoms' own
// intervals allow.
func (s *System) SumBound(atoms []int) Interval {
	var iv Interval
	for _, a := range atoms {
		iv.Lo = add(iv.Lo, s.bounds[a].Lo)
		iv.Hi = add(iv.Hi, s.bounds[a].Hi)
	}
	return iv
}

// Propagate narrows the atoms' intervals until no sum narrows them
// further, or maxRounds passes over every sum. It fails, naming a sum, if
// the sums contradict each other: then the attacker's picture of the
// rules or of the definition is wrong.
func (s *System) Propagate(maxRounds int) (rounds int, err error) {
	for rounds = 1; rounds <= maxRounds; rounds++ {
		changed := false
		for _, sm := range s.sums {
			c, err := s.narrow(sm)
			if err != nil {
				return rounds, err
			}
			changed = changed || c
		}
		for _, p := range s.le {
			a, b := &s.bounds[p[0]], &s.bounds[p[1]]
			if a.Hi > b.Hi {
				a.Hi, changed = b.Hi, true
			}
			if b.Lo < a.Lo {
				b.Lo, changed = a.Lo, true
			}
			if a.Lo > a.Hi || b.Lo > b.Hi {
				return rounds, fmt.Errorf("%s ≤ %s cannot hold: %v and %v", s.names[p[0]], s.names[p[1]], *a, *b)
			}
		}
		if !changed {
			return rounds, nil
		}
	}
	return maxRounds, nil
}

// narrow applies one sum: each atom is at least the sum's lower bound
// less the most the others can add, and at most its upper bound less
// the least the others add.
func (s *System) narrow(sm sum) (bool, error) {
	var lo, hi int64
	unbounded := 0 // atoms with no upper bound, which Unbounded saturates
	for _, a := range sm.atoms {
		b := s.bounds[a]
		lo += b.Lo
		if b.Hi >= Unbounded {
			unbounded++
		} else {
			hi += b.Hi
		}
	}
	if lo > sm.bound.Hi || (unbounded == 0 && hi < sm.bound.Lo) {
		return false, s.contradiction(sm, Interval{lo, hi})
	}
	changed := false
	for _, a := range sm.atoms {
		b := &s.bounds[a]
		// The most the other atoms can add.
		othersHi := Unbounded
		switch {
		case unbounded == 0:
			othersHi = hi - b.Hi
		case unbounded == 1 && b.Hi >= Unbounded:
			othersHi = hi
		}
		if othersHi < Unbounded && sm.bound.Lo-othersHi > b.Lo {
			b.Lo, changed = sm.bound.Lo-othersHi, true
		}
		if sm.bound.Hi < Unbounded {
			if h := sm.bound.Hi - (lo - b.Lo); h < b.Hi {
				b.Hi, changed = h, true
			}
		}
		if b.Lo > b.Hi {
			return false, s.contradiction(sm, Interval{lo, hi})
		}
	}
	return changed, nil
}

func (s *System) contradiction(sm sum, have Interval) error {
	var names []string
	for i, a := range sm.atoms {
		if i == 6 {
			names = append(names, fmt.Sprintf("… %d more", len(sm.atoms)-i))
			break
		}
		names = append(names, s.names[a]+"="+s.bounds[a].String())
	}
	return fmt.Errorf("%s: the sum of %s must lie in %v, which its atoms cannot reach",
		sm.label, strings.Join(names, " + "), sm.bound)
}
