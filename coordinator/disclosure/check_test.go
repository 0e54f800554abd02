package disclosure

import (
	"fmt"
	"math/big"
	"slices"
	"strings"
)

// This file holds an independent check of secondary suppression, written
// from the released table alone with none of the package's machinery: it
// writes down every equation an attacker knows (each released margin and
// the total equal the sum of their cells), keeps the withheld values as
// unknowns, and calls an unknown derivable when removing its column lowers
// the rank of the system (the unknown's column is then outside the span of
// the others, so every solution agrees on it). Ranks are computed densely
// over big.Rat.

// derivable returns a description of every withheld value of measure j in
// r that the released values of measure j determine.
func derivable(r *Released, j int) []string {
	var names []string
	index := make(map[string]int) // variable name → unknown column
	unknown := func(name string, v Value) {
		if v.Status == StatusWithheld {
			index[name] = len(names)
			names = append(names, name)
		}
	}
	cellName := func(key []string) string { return "cell " + strings.Join(key, "|") }
	for _, c := range r.Cells {
		unknown(cellName(c.Key), c.Values[j])
	}
	for _, m := range r.Margins {
		unknown("margin "+m.Dim+"="+m.Category, m.Values[j])
	}
	if r.Total != nil {
		unknown("total", r.Total[j])
	}
	if len(names) == 0 {
		return nil
	}

	// One row per equation, over the unknowns only: the released values are
	// constants and do not affect which unknowns are determined.
	var rows [][]*big.Rat
	equation := func(head string, inLine func(key []string) bool) {
		row := make([]*big.Rat, len(names))
		for i := range row {
			row[i] = new(big.Rat)
		}
		if i, ok := index[head]; ok {
			row[i].SetInt64(1)
		}
		for _, c := range r.Cells {
			if i, ok := index[cellName(c.Key)]; ok && inLine(c.Key) {
				row[i].SetInt64(-1)
			}
		}
		rows = append(rows, row)
	}
	for _, m := range r.Margins {
		d := slices.Index(r.Dims, m.Dim)
		equation("margin "+m.Dim+"="+m.Category, func(key []string) bool { return key[d] == m.Category })
	}
	if r.Total != nil {
		equation("total", func([]string) bool { return true })
	}

	full := rank(rows, -1)
	var det []string
	for i, name := range names {
		if rank(rows, i) < full {
			det = append(det, fmt.Sprintf("%s (measure %s)", name, r.Measures[j].Name))
		}
	}
	return det
}

// rank returns the rank of the matrix rows without column skip (none if
// skip < 0), by Gaussian elimination over the rationals.
func rank(rows [][]*big.Rat, skip int) int {
	if len(rows) == 0 {
		return 0
	}
	m := make([][]*big.Rat, len(rows))
	for i, row := range rows {
		m[i] = make([]*big.Rat, 0, len(row))
		for j, v := range row {
			if j != skip {
				m[i] = append(m[i], new(big.Rat).Set(v))
			}
		}
	}
	rk := 0
	tmp := new(big.Rat)
	for col := 0; col < len(m[0]) && rk < len(m); col++ {
		p := -1
		for i := rk; i < len(m); i++ {
			if m[i][col].Sign() != 0 {
				p = i
				break
			}
		}
		if p < 0 {
			continue
		}
		m[rk], m[p] = m[p], m[rk]
		for i := range m {
			if i == rk || m[i][col].Sign() == 0 {
				continue
			}
			f := new(big.Rat).Quo(m[i][col], m[rk][col])
			for c := col; c < len(m[i]); c++ {
				m[i][c].Sub(m[i][c], tmp.Mul(f, m[rk][c]))
			}
		}
		rk++
	}
	return rk
}
