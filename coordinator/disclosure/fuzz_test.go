package disclosure

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
)

// byteReader hands out fuzz bytes one at a time, then zeros.
type byteReader []byte

func (b *byteReader) next() byte {
	if len(*b) == 0 {
		return 0
	}
	x := (*b)[0]
	*b = (*b)[1:]
	return x
}

// fuzzTable builds thresholds and a table of up to 3×3×3 cells from data,
// including invalid thresholds, negative counts, NaN sums and a repeated
// cell.
func fuzzTable(data []byte) (Table, Thresholds) {
	b := byteReader(data)
	th := Thresholds{
		MinCount:     int(b.next() % 12),
		RoundingBase: int(b.next() % 11),
		Dominance:    Dominance{N: int(b.next() % 3), K: float64(b.next()%12) / 10},
	}
	k := int(b.next() % 4)
	t := Table{Measures: []Measure{
		{Name: "patients", Kind: KindCount},
		{Name: "cost", Kind: KindSum, Dominance: b.next()%2 == 0},
	}}
	cats := make([]int, k)
	for d := range k {
		t.Dims = append(t.Dims, fmt.Sprintf("d%d", d))
		cats[d] = int(b.next()%3) + 1
	}
	key := make([]int, k)
	for {
		if b.next()%4 != 0 {
			c := Cell{}
			for d := range k {
				c.Key = append(c.Key, fmt.Sprint(key[d]))
			}
			n := int64(int8(b.next()))
			sum := float64(int8(b.next()))
			if sum == -128 {
				sum = math.NaN()
			}
			top := float64(b.next() % 64)
			c.Values = []Input{{Count: int64(int8(b.next()))}, {N: n, Sum: sum, TopContributions: []float64{top}}}
			t.Cells = append(t.Cells, c)
			if b.next() == 255 {
				t.Cells = append(t.Cells, c)
			}
		}
		d := k - 1
		for d >= 0 {
			if key[d]++; key[d] < cats[d] {
				break
			}
			key[d] = 0
			d--
		}
		if d < 0 {
			break
		}
	}
	return t, th
}

// FuzzApply checks that Apply never panics, rejects what it cannot handle
// with ErrTable or ErrThresholds, and otherwise releases no small count and
// nothing derivable.
func FuzzApply(f *testing.F) {
	// Tables of 1, 2 and 3 dimensions with primary and secondary
	// suppression, then bad thresholds and a repeated cell.
	f.Add([]byte("\x08\x05\x01\x08\xed\x03\xac\x32\x2f\x20\x09\x51\x58\xa7\x71\x11\x93\x05\xaa\x1e\x01\x0c\x27\x55\x00\x0c\xe1\x09\x1b\xef\x35\x98\x17\x51\x00\x1a\x9f\x1c\x10\x67\x66\x0f\xaf\xb9\x13\x05\x3b\x24\x3c\x07\x02\x06\x2e\x0e\x27\x6a\xe3\x09\x1e\xba\x50\x08\x13\x15\x1a\x91\x80\x1e\x17\xb6"))
	f.Add([]byte("\x08\x05\x01\x08\x6e\x01\xb2\x25\x13\x2a\x72\x1b\x06\x20\x9b\x02\x00\x26\x13\x0a\x18\x4a\x1b\xfd\x0d\x07\xb5\x11\x4a\x99\xd0\x42\x19\x1f\x22\x0c\x0f\x38\x0b\x1a\x71\x21\x14\x26\x91\x03\x10\x17\x2f\x0b\x52\x91\x56\x62\x12\xe1\xb1\x6a\x22\xb8\x0b\x1f\xb7\xb4\xd3\x0a\xba\x08\x4a\x0c"))
	f.Add([]byte("\x08\x05\x01\x08\x93\x03\xde\x3d\xb0\x70\x11\x17\x55\xe3\x74\x0f\x0e\x0f\x15\x07\x04\x0b\x1c\x24\x7e\x1b\x21\x15\x0a\x4c\xcd\x06\x41\xbe\x80\xe5\x23\xff\x83\x40\x25\x1f\x69\x11\x1f\x0d\x16\x13\xd8\x19\x0d\x24\xc4\x27\x0d\xe9\x3d\x14\x6f\x8f\xfb\xd0\xdb\x18\x4e\x08\x52\x37\x6e\x08"))
	f.Add([]byte{0, 5, 1, 8, 1})
	f.Add([]byte{8, 5, 1, 8, 1, 1, 2, 1, 1, 0, 0, 0, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		table, th := fuzzTable(data)
		r, err := Apply(context.Background(), table, th)
		if err != nil {
			if !errors.Is(err, ErrTable) && !errors.Is(err, ErrThresholds) {
				t.Fatalf("Apply: unexpected error %v", err)
			}
			return
		}
		check := func(where string, v Value) {
			if v.Status == StatusReleased && (v.Value > 0 && v.Value < float64(th.MinCount) || math.Mod(v.Value, float64(th.RoundingBase)) != 0) {
				t.Errorf("%s: released count %v", where, v.Value)
			}
		}
		for _, c := range r.Cells {
			check(fmt.Sprint(c.Key), c.Values[0])
		}
		for _, m := range r.Margins {
			check(m.Dim+"="+m.Category, m.Values[0])
		}
		if r.Total != nil {
			check("total", r.Total[0])
		}
		for j := range r.Measures {
			if det := derivable(r, j); len(det) > 0 {
				t.Errorf("derivable: %v", det)
			}
		}
	})
}
