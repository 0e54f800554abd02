// Package optout holds the sets of patients who have objected to their
// data being used: the national data opt-out list, which reaches every node
// as a file, and the type 1 opt-outs a practice records in its own opt_out
// table (DESIGN §4).
//
// The SQL a node runs already leaves these patients out. The node checks
// again in Go, on the way out, against a Set built here: a bug in one place
// must not be enough to send an objector's data. A Set is a sorted slice of
// NHS numbers held as integers, so the national list (millions of numbers)
// costs eight bytes a number and a lookup is a binary search.
package optout

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"

	"github.com/havenhealth/haven/cdm"
)

// Set is an immutable set of valid NHS numbers. The zero Set is empty. It
// is safe for concurrent use.
type Set struct {
	nums []uint64 // sorted, distinct

	// strs is Strings' answer, made once.
	strsOnce sync.Once
	strs     []string
}

// Builder collects NHS numbers for a Set.
type Builder struct {
	nums    []uint64
	invalid int64
}

// Add adds an NHS number. A number that fails the modulus-11 check cannot
// belong to any patient the node sends (those rows are excluded too), so
// it is counted rather than added; Add reports whether it was added.
func (b *Builder) Add(nhsNumber string) bool {
	n, ok := parse(nhsNumber)
	if !ok {
		b.invalid++
		return false
	}
	b.nums = append(b.nums, n)
	return true
}

// Invalid is how many numbers Add refused.
func (b *Builder) Invalid() int64 { return b.invalid }

// Set returns the set of the numbers added so far.
func (b *Builder) Set() *Set {
	nums := slices.Clone(b.nums)
	slices.Sort(nums)
	return &Set{nums: slices.Compact(nums)}
}

// parse reads a valid NHS number as an integer.
func parse(s string) (uint64, bool) {
	if !cdm.ValidNHSNumber(s) {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// Of returns the set of the given numbers, leaving out invalid ones.
func Of(nhsNumbers ...string) *Set {
	var b Builder
	for _, s := range nhsNumbers {
		b.Add(s)
	}
	return b.Set()
}

// Contains reports whether nhsNumber is in the set. A string that is not a
// valid NHS number is in no set.
func (s *Set) Contains(nhsNumber string) bool {
	if s == nil {
		return false
	}
	n, ok := parse(nhsNumber)
	if !ok {
		return false
	}
	_, found := slices.BinarySearch(s.nums, n)
	return found
}

// Len is the number of NHS numbers in the set.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.nums)
}

// Union returns the numbers in s or in o.
func (s *Set) Union(o *Set) *Set {
	if s.Len() == 0 {
		return o.orEmpty()
	}
	if o.Len() == 0 {
		return s
	}
	out := make([]uint64, 0, len(s.nums)+len(o.nums))
	i, j := 0, 0
	for i < len(s.nums) && j < len(o.nums) {
		switch a, b := s.nums[i], o.nums[j]; {
		case a < b:
			out = append(out, a)
			i++
		case b < a:
			out = append(out, b)
			j++
		default:
			out = append(out, a)
			i, j = i+1, j+1
		}
	}
	out = append(out, s.nums[i:]...)
	out = append(out, o.nums[j:]...)
	return &Set{nums: out}
}

// Intersect returns the numbers in both s and o. A node binds the
// intersection of the national list with its own patients into its SQL,
// rather than the whole list.
func (s *Set) Intersect(o *Set) *Set {
	if s.Len() == 0 || o.Len() == 0 {
		return &Set{}
	}
	out := make([]uint64, 0, min(len(s.nums), len(o.nums)))
	i, j := 0, 0
	for i < len(s.nums) && j < len(o.nums) {
		switch a, b := s.nums[i], o.nums[j]; {
		case a < b:
			i++
		case b < a:
			j++
		default:
			out = append(out, a)
			i, j = i+1, j+1
		}
	}
	return &Set{nums: out}
}

func (s *Set) orEmpty() *Set {
	if s == nil {
		return &Set{}
	}
	return s
}

// Strings returns the numbers as 10-digit strings, in order, for binding
// as a query argument. The slice is shared: callers must not change it.
func (s *Set) Strings() []string {
	if s == nil {
		return nil
	}
	s.strsOnce.Do(func() {
		s.strs = make([]string, len(s.nums))
		for i, n := range s.nums {
			s.strs[i] = fmt.Sprintf("%010d", n)
		}
	})
	return s.strs
}

// NDOPHeader is the column the national data opt-out file names its NHS
// numbers by.
const NDOPHeader = cdm.ColNHSNumber

// ReadNDOPFile reads the national data opt-out list at path. See ReadNDOP.
func ReadNDOPFile(path string) (*Set, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("national opt-out list: %w", err)
	}
	defer f.Close()
	s, invalid, err := ReadNDOP(f)
	if err != nil {
		return nil, 0, fmt.Errorf("national opt-out list %s: %w", path, err)
	}
	return s, invalid, nil
}

// ReadNDOP reads a national data opt-out list: CSV whose header has a
// column nhs_number, then one row per patient. Other columns are ignored.
// Numbers that fail the modulus-11 check are counted in invalid and left
// out (no row the node sends can carry one). Errors name the line, never
// the number on it.
func ReadNDOP(r io.Reader) (s *Set, invalid int64, err error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, 0, errors.New("empty file: want a header line with nhs_number")
	}
	if err != nil {
		return nil, 0, fmt.Errorf("header: %w", err)
	}
	col := slices.Index(header, NDOPHeader)
	if col < 0 {
		return nil, 0, fmt.Errorf("header has no %s column", NDOPHeader)
	}
	var b Builder
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, 0, fmt.Errorf("line %d: malformed CSV", pe.Line)
			}
			return nil, 0, err
		}
		if col >= len(rec) {
			return nil, 0, fmt.Errorf("line %d: no %s field", line, NDOPHeader)
		}
		b.Add(rec[col])
	}
	return b.Set(), b.Invalid(), nil
}
