package attack

import (
	"strings"
	"testing"
)

func TestPropagate(t *testing.T) {
	for _, tc := range []struct {
		name string
		// atoms are the starting intervals; sums are (atom indices, bound).
		atoms []Interval
		sums  []struct {
			atoms []int
			in    Interval
		}
		le      [][2]int
		want    []Interval
		wantErr string
	}{
		{
			name:  "a margin of many low counts pins each",
			atoms: []Interval{{1, 7}, {1, 7}, {1, 7}, {1, 7}, {1, 7}, {1, 7}, {1, 7}, {1, 7}, {1, 7}, {1, 7}, {1, 7}, {1, 7}},
			sums: []struct {
				atoms []int
				in    Interval
			}{{[]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, Interval{8, 12}}},
			want: []Interval{{1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}},
		},
		{
			name:  "two rounded cells and a rounded sum narrow each other",
			atoms: []Interval{{8, 12}, {8, 12}},
			sums: []struct {
				atoms []int
				in    Interval
			}{{[]int{0, 1}, Interval{13, 17}}},
			want: []Interval{{8, 9}, {8, 9}},
		},
		{
			name:  "an unbounded atom is bounded by its sum, and bounds nothing else from below",
			atoms: []Interval{{0, Unbounded}, {1, 7}},
			sums: []struct {
				atoms []int
				in    Interval
			}{{[]int{0, 1}, Interval{8, 12}}},
			want: []Interval{{1, 11}, {1, 7}},
		},
		{
			name:  "a subset is at most its group",
			atoms: []Interval{{0, Unbounded}, {1, 7}},
			le:    [][2]int{{0, 1}},
			want:  []Interval{{0, 7}, {1, 7}},
		},
		{
			name:  "sums that contradict each other are an error",
			atoms: []Interval{{1, 7}, {1, 7}},
			sums: []struct {
				atoms []int
				in    Interval
			}{{[]int{0, 1}, Interval{18, 22}}},
			wantErr: "cannot reach",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSystem()
			for i, iv := range tc.atoms {
				s.Atom(string(rune('a' + i)))
				s.bounds[i] = iv
			}
			for _, sm := range tc.sums {
				s.Know(sm.atoms, sm.in, "sum")
			}
			for _, p := range tc.le {
				s.AtMost(p[0], p[1])
			}
			_, err := s.Propagate(100)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range tc.want {
				if got := s.Bound(i); got != want {
					t.Errorf("atom %d: %v, want %v", i, got, want)
				}
			}
		})
	}
}
