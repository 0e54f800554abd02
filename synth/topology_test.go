package synth

import (
	"slices"
	"strings"
	"testing"
)

func TestTopologyShapes(t *testing.T) {
	for _, tc := range []struct {
		scale             Scale
		sites             int
		practices, trusts int
	}{
		{ScaleSmall, 0, 8, 2},
		{ScaleSmall, 1, 1, 1},
		{ScaleICB, 0, 150, 4},
		{ScaleICB, 20, 20, 1},
		{ScaleNational, 0, 6500, 230},
	} {
		top, err := newTopology(1, tc.scale, tc.sites)
		if err != nil {
			t.Fatalf("%s/%d: %v", tc.scale, tc.sites, err)
		}
		if len(top.practices) != tc.practices || len(top.trusts) != tc.trusts {
			t.Errorf("%s/%d: %d practices, %d trusts; want %d, %d", tc.scale, tc.sites,
				len(top.practices), len(top.trusts), tc.practices, tc.trusts)
		}
		ods := map[string]bool{}
		dual := 0
		for _, p := range top.practices {
			if ods[p.ods] {
				t.Errorf("%s: ODS %s twice", tc.scale, p.ods)
			}
			ods[p.ods] = true
			if p.listSize < minListSize || p.listSize > maxListSize || p.cohort > maxCohort || p.cohort < p.listSize {
				t.Errorf("%s: practice %s list %d cohort %d", tc.scale, p.ods, p.listSize, p.cohort)
			}
			if len(p.trusts) == 2 {
				dual++
				if p.trustShare < 0.5 || p.trustShare > 0.8 {
					t.Errorf("%s: practice %s main trust share %.2f", tc.scale, p.ods, p.trustShare)
				}
			}
			for _, id := range p.trusts {
				pos, ok := top.trustPos[id]
				if !ok || !slices.Contains(top.trusts[pos].practices, p.id) {
					t.Errorf("%s: practice %s uses trust %d, which does not list it", tc.scale, p.ods, id)
				}
			}
			if len(top.practices) > 1 && (p.moveTo < 0 || p.moveTo == p.id) {
				t.Errorf("%s: practice %s sends movers to %d", tc.scale, p.ods, p.moveTo)
			}
		}
		for _, tr := range top.trusts {
			if ods[tr.ods] || !strings.HasPrefix(tr.ods, "R") || len(tr.ods) != 3 {
				t.Errorf("%s: trust ODS %q", tc.scale, tr.ods)
			}
			ods[tr.ods] = true
			if len(tr.practices) == 0 || tr.catchment <= 0 {
				t.Errorf("%s: trust %s has no catchment", tc.scale, tr.ods)
			}
		}
		if tc.trusts > 1 && dual == 0 {
			t.Errorf("%s: no practice uses two trusts", tc.scale)
		}
	}
}

func TestNationalListSizes(t *testing.T) {
	top, err := newTopology(5, ScaleNational, 0)
	if err != nil {
		t.Fatal(err)
	}
	sizes := make([]int, len(top.practices))
	total := 0
	for i, p := range top.practices {
		sizes[i] = p.listSize
		total += p.listSize
	}
	slices.Sort(sizes)
	median := sizes[len(sizes)/2]
	t.Logf("list sizes: min %d, median %d, max %d, total %d", sizes[0], median, sizes[len(sizes)-1], total)
	if median < 7500 || median > 9500 {
		t.Errorf("median list size %d, want about 8–9k", median)
	}
	if sizes[0] > 3000 || sizes[len(sizes)-1] < 25000 {
		t.Errorf("list sizes span %d–%d, want about 2k–30k", sizes[0], sizes[len(sizes)-1])
	}
	if total < 58_000_000 || total > 62_000_000 {
		t.Errorf("national population %d, want about 60M", total)
	}
}

func TestTopologyCutKeepsPractices(t *testing.T) {
	full, err := newTopology(9, ScaleICB, 0)
	if err != nil {
		t.Fatal(err)
	}
	cut, err := newTopology(9, ScaleICB, 10)
	if err != nil {
		t.Fatal(err)
	}
	for p := range cut.practices {
		a, b := full.practices[p], cut.practices[p]
		if a.ods != b.ods || a.name != b.name || a.listSize != b.listSize || !slices.Equal(a.trusts, b.trusts) {
			t.Errorf("practice %d differs after the cut: %+v vs %+v", p, a, b)
		}
	}
	for _, tr := range cut.trusts {
		if full.trusts[full.trustPos[tr.id]].ods != tr.ods {
			t.Errorf("trust %d renamed by the cut", tr.id)
		}
	}
}

func TestTopologyErrors(t *testing.T) {
	for _, tc := range []struct {
		scale Scale
		sites int
		want  string
	}{
		{"shire", 0, "unknown scale"},
		{ScaleSmall, 9, "only 8 practices"},
		{ScaleSmall, -1, "negative"},
	} {
		if _, err := newTopology(1, tc.scale, tc.sites); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("newTopology(%s, %d) error %v, want %q", tc.scale, tc.sites, err, tc.want)
		}
	}
}

func TestTrustsFor(t *testing.T) {
	for _, tc := range []struct {
		x      float64
		trusts int
		want   []int
	}{
		{0.1, 2, []int{0}},
		{0.49, 2, []int{0, 1}},
		{0.51, 2, []int{1, 0}},
		{0.9, 2, []int{1}},
		{0.01, 4, []int{0}},
		{0.99, 4, []int{3}},
		{0.5, 1, []int{0}},
	} {
		got, share := trustsFor(tc.x, tc.trusts)
		if !slices.Equal(got, tc.want) {
			t.Errorf("trustsFor(%v, %d) = %v, want %v", tc.x, tc.trusts, got, tc.want)
		}
		if share < 0.5 || share > 1 {
			t.Errorf("trustsFor(%v, %d) share %v", tc.x, tc.trusts, share)
		}
	}
}
