package attack

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/havenhealth/haven/release"
)

// MaxAge is the oldest age the attacker tells apart: every age from
// MaxAge up is one atom, since no allowed min_age splits them.
const MaxAge = 120

// Prevalence models t2dm-prevalence from its published definition: the
// patients registered and alive on index_date, aged min_age or over on
// it, by practice, ten-year age band and sex, and those of them with
// type 2 diabetes. So for one index date, the atoms are the patients of
// each practice, sex and exact age, and the t2dm patients among them;
// every count a run releases (a cell, a margin, the total) is the sum of
// the atoms of its practices, sexes and bands whose age is min_age or
// more. Runs at the same index date and different min_ages share atoms,
// which is what lets the attacker subtract them; runs at different index
// dates share none, since nothing in the rules says who came and went.
type Prevalence struct {
	// Group is the measure that counts a cell's patients and Subsets are
	// the measures that count some of them.
	Group   string
	Subsets []string
	// Means names the binary means of the definition: the share of a
	// group's patients in a subset, by the mean measure's name. A run's
	// mean is read with BinaryMean, as what it says of the group's and the
	// subset's counts.
	Means map[string]string
}

// DefinitionID is the definition the model is for.
const DefinitionID = "t2dm-prevalence"

// NewPrevalence is the model of the reference t2dm-prevalence's counts:
// it reads patients and t2dm, not the prevalence mean.
func NewPrevalence() *Prevalence {
	return &Prevalence{Group: "patients", Subsets: []string{"t2dm"}}
}

// NewPrevalenceWithMean is NewPrevalence that also reads the prevalence
// mean (BinaryMean), as a requester who knows its rule can.
func NewPrevalenceWithMean() *Prevalence {
	p := NewPrevalence()
	p.Means = map[string]string{"prevalence": "t2dm"}
	return p
}

// atomName names the atom of index date d, practice, sex, exact age and
// measure.
func atomName(d, practice, sex string, age int, measure string) string {
	return fmt.Sprintf("%s|%s|%s|%d|%s", d, practice, sex, age, measure)
}

// AtomName is the name the model gives the atom of one index date,
// practice, sex and exact age (MaxAge for MaxAge and over), for measure.
func (p *Prevalence) AtomName(d, practice, sex string, age int, measure string) string {
	return atomName(d, practice, sex, min(age, MaxAge), measure)
}

// ageRange reads an age band's label: "40-49" or "90+".
func ageRange(label string) (lo, hi int, err error) {
	if s, ok := strings.CutSuffix(label, "+"); ok {
		lo, err = strconv.Atoi(s)
		return lo, MaxAge, err
	}
	a, b, ok := strings.Cut(label, "-")
	if !ok {
		return 0, 0, fmt.Errorf("age band %q is neither lo-hi nor lo+", label)
	}
	if lo, err = strconv.Atoi(a); err != nil {
		return 0, 0, fmt.Errorf("age band %q: %w", label, err)
	}
	if hi, err = strconv.Atoi(b); err != nil {
		return 0, 0, fmt.Errorf("age band %q: %w", label, err)
	}
	return lo, min(hi, MaxAge), nil
}

// Observation is one count a run released, read as a sum of atoms.
type Observation struct {
	// Params are the run's parameters; Row names the cell, margin or
	// total, Measure the count.
	Params  map[string]string
	Row     string
	Measure string
	Value   release.Value
	// Via, when set, is the mean measure whose value the observation
	// reads: what the mean's rule says of the count Measure.
	Via string
	// Atoms are what the count sums; Known is what the rules say of it.
	Atoms []int
	Known Interval
}

// Label says which value of which run an observation is.
func (o Observation) Label() string {
	via := ""
	if o.Via != "" {
		via = " via " + o.Via
	}
	return fmt.Sprintf("%s %s%s (index_date=%s min_age=%s)", o.Row, o.Measure, via, o.Params["index_date"], o.Params["min_age"])
}

// Observe reads a released table of the model's definition, run with
// params, into the system: one sum per count value, one zero sum per
// group the table leaves out (a group with no patients has no row), and
// each subset atom at most its group atom. It returns the observations.
func (p *Prevalence) Observe(s *System, rules Rules, params map[string]string, tab *release.Table) ([]Observation, error) {
	if tab.Meta.DefinitionID != DefinitionID {
		return nil, fmt.Errorf("table of %s, not %s", tab.Meta.DefinitionID, DefinitionID)
	}
	d := params["index_date"]
	minAge, err := strconv.Atoi(params["min_age"])
	if err != nil || d == "" {
		return nil, fmt.Errorf("run %s: index_date %q, min_age %q", tab.Meta.RunID, d, params["min_age"])
	}
	if !slices.Equal(tab.Dims, []string{"practice", "age_band", "sex"}) {
		return nil, fmt.Errorf("run %s: dimensions %v, want practice, age_band, sex", tab.Meta.RunID, tab.Dims)
	}
	measures := map[string]int{}
	for i, m := range tab.Measures {
		measures[m.Name] = i
	}
	counts := append([]string{p.Group}, p.Subsets...)
	for _, m := range counts {
		if _, ok := measures[m]; !ok {
			return nil, fmt.Errorf("run %s: no measure %s", tab.Meta.RunID, m)
		}
	}
	for mean, sub := range p.Means {
		if _, ok := measures[mean]; !ok {
			return nil, fmt.Errorf("run %s: no measure %s", tab.Meta.RunID, mean)
		}
		if !slices.Contains(p.Subsets, sub) {
			return nil, fmt.Errorf("mean %s is of %s, which is not a subset measure", mean, sub)
		}
	}
	groupRules, _ := rules.(GroupRules)
	// The groups of the table: every value each dimension takes.
	var practices, bands, sexes []string
	seen := map[string]bool{}
	for _, row := range tab.Rows {
		if row.Kind != release.RowCell {
			continue
		}
		seen[strings.Join(row.Key, "|")] = true
		for i, list := range []*[]string{&practices, &bands, &sexes} {
			if !slices.Contains(*list, row.Key[i]) {
				*list = append(*list, row.Key[i])
			}
		}
	}
	ages := map[string][]int{}
	for _, b := range bands {
		lo, hi, err := ageRange(b)
		if err != nil {
			return nil, fmt.Errorf("run %s: %w", tab.Meta.RunID, err)
		}
		for a := max(lo, minAge); a <= hi; a++ {
			ages[b] = append(ages[b], a)
		}
	}
	atoms := func(measure string, match func(practice, band, sex string) bool) []int {
		var out []int
		for _, pr := range practices {
			for _, b := range bands {
				for _, sx := range sexes {
					if !match(pr, b, sx) {
						continue
					}
					for _, a := range ages[b] {
						out = append(out, s.Atom(atomName(d, pr, sx, a, measure)))
					}
				}
			}
		}
		return out
	}
	// Every atom of a subset is at most its group's.
	for _, pr := range practices {
		for _, b := range bands {
			for _, sx := range sexes {
				for _, a := range ages[b] {
					g := s.Atom(atomName(d, pr, sx, a, p.Group))
					for _, m := range p.Subsets {
						s.AtMost(s.Atom(atomName(d, pr, sx, a, m)), g)
					}
				}
			}
		}
	}
	var obs []Observation
	for _, row := range tab.Rows {
		var name string
		var match func(pr, b, sx string) bool
		switch row.Kind {
		case release.RowCell:
			name = "cell " + strings.Join(row.Key, " ")
			match = func(pr, b, sx string) bool { return pr == row.Key[0] && b == row.Key[1] && sx == row.Key[2] }
		case release.RowMargin:
			dim, v := row.MarginDim, row.Key[row.MarginDim]
			name = "margin " + tab.Dims[dim] + "=" + v
			match = func(pr, b, sx string) bool { return []string{pr, b, sx}[dim] == v }
		case release.RowTotal:
			name = "total"
			match = func(string, string, string) bool { return true }
		default:
			return nil, fmt.Errorf("run %s: row of kind %q", tab.Meta.RunID, row.Kind)
		}
		for _, m := range counts {
			v := row.Values[measures[m]]
			lo, hi := rules.CountInterval(v)
			if m == p.Group && groupRules != nil {
				lo, hi = groupRules.GroupInterval(v)
			}
			if lo > hi {
				return nil, fmt.Errorf("run %s: %s %s released as %v, which no count gives under the rules", tab.Meta.RunID, name, m, v)
			}
			o := Observation{Params: params, Row: name, Measure: m, Value: v, Atoms: atoms(m, match), Known: Interval{lo, hi}}
			s.Know(o.Atoms, o.Known, o.Label())
			obs = append(obs, o)
		}
		// A mean says something of its group's count and its subset's,
		// read as further observations of the same atoms.
		for _, mean := range slices.Sorted(maps.Keys(p.Means)) {
			v := row.Values[measures[mean]]
			n, sum, ok := BinaryMean(v, rules)
			if !ok {
				continue
			}
			for _, c := range []struct {
				measure string
				in      Interval
			}{{p.Group, n}, {p.Means[mean], sum}} {
				o := Observation{Params: params, Row: name, Measure: c.measure, Value: v, Via: mean, Atoms: atoms(c.measure, match), Known: c.in}
				s.Know(o.Atoms, o.Known, o.Label())
				obs = append(obs, o)
			}
		}
	}
	// A group the table has no row for has no patients.
	for _, pr := range practices {
		for _, b := range bands {
			for _, sx := range sexes {
				if seen[pr+"|"+b+"|"+sx] {
					continue
				}
				for _, m := range counts {
					var group []int
					for _, a := range ages[b] {
						group = append(group, s.Atom(atomName(d, pr, sx, a, m)))
					}
					s.Know(group, Interval{0, 0}, fmt.Sprintf("no row %s %s %s (index_date=%s min_age=%d)", pr, b, sx, d, minAge))
				}
			}
		}
	}
	return obs, nil
}
