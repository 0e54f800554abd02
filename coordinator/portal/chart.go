package portal

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strconv"
	"strings"

	"github.com/havenhealth/haven/release"
)

// maxChartBars is the most groups a chart draws; a larger table is read
// in its table.
const maxChartBars = 80

// Chart geometry, in SVG user units.
const (
	chartLabelWidth = 220
	chartBarsWidth  = 420
	chartRight      = 170
	chartBarHeight  = 22
	chartTop        = 36
	chartBottom     = 48
)

// charts draws one horizontal bar chart per measure of t's groups (its
// cell rows), as inline SVG: the groups labelled on the left, the value
// axis below with its ticks and the measure's name, each value printed at
// its bar's end. A withheld value has no bar and says "withheld" and why,
// so it is visibly absent and readable without colour. It draws none for
// a table with more than maxChartBars groups or none at all.
func charts(t *release.Table) []template.HTML {
	var cells []release.Row
	for _, r := range t.Rows {
		if r.Kind == release.RowCell {
			cells = append(cells, r)
		}
	}
	if len(cells) == 0 || len(cells) > maxChartBars {
		return nil
	}
	var out []template.HTML
	for m, measure := range t.Measures {
		out = append(out, chart(t.Dims, measure.Name, m, cells))
	}
	return out
}

func chart(dims []string, measure string, m int, cells []release.Row) template.HTML {
	maxV := 0.0
	for _, r := range cells {
		if v := r.Values[m]; v.Released && v.Value > maxV {
			maxV = v.Value
		}
	}
	top := niceCeil(maxV)
	height := chartTop + len(cells)*chartBarHeight + chartBottom
	width := chartLabelWidth + chartBarsWidth + chartRight
	x := func(v float64) float64 { return chartLabelWidth + chartBarsWidth*v/top }
	esc := html.EscapeString
	var b strings.Builder
	id := "chart-" + sanitizeID(measure)
	fmt.Fprintf(&b, `<svg class="haven-chart" id="%s" role="img" aria-labelledby="%s-title" viewBox="0 0 %d %d" width="100%%" xmlns="http://www.w3.org/2000/svg" font-family="Arial, sans-serif" font-size="14">`,
		id, id, width, height)
	fmt.Fprintf(&b, `<title id="%s-title">%s by %s</title>`, id, esc(measure), esc(strings.Join(dims, ", ")))
	fmt.Fprintf(&b, `<text x="0" y="20" font-weight="bold" fill="#212b32">%s by %s</text>`, esc(measure), esc(strings.Join(dims, ", ")))
	// Grid lines and ticks of the value axis.
	axisY := chartTop + len(cells)*chartBarHeight
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#d8dde0"/>`, x(v), chartTop, x(v), axisY)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#4c6272">%s</text>`, x(v), axisY+18, esc(tick(v)))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#212b32"/>`, chartLabelWidth, axisY, chartLabelWidth+chartBarsWidth, axisY)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#212b32"/>`, chartLabelWidth, chartTop, chartLabelWidth, axisY)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="#212b32">%s</text>`, chartLabelWidth+chartBarsWidth/2, axisY+40, esc(measure))
	for i, r := range cells {
		y := chartTop + i*chartBarHeight
		label := strings.Join(r.Key, ", ")
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" fill="#212b32">%s</text>`, chartLabelWidth-8, y+16, esc(label))
		v := r.Values[m]
		if !v.Released {
			fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#4c6272" font-style="italic" class="haven-chart-withheld">withheld (%s)</text>`,
				chartLabelWidth+6, y+16, esc(string(v.Reason)))
			continue
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="#005eb8"><title>%s: %s</title></rect>`,
			chartLabelWidth, y+3, x(v.Value)-chartLabelWidth, chartBarHeight-6, esc(label), esc(tick(v.Value)))
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#212b32">%s</text>`, x(v.Value)+6, y+16, esc(strconv.FormatFloat(v.Value, 'f', -1, 64)))
	}
	b.WriteString(`</svg>`)
	// Every text in it was escaped above.
	return template.HTML(b.String())
}

// niceCeil is the smallest of 1, 2, 2.5 or 5 times a power of ten at or
// above v, so the axis ends on a round number.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, f := range []float64{1, 2, 2.5, 5, 10} {
		if f*p >= v {
			return f * p
		}
	}
	return 10 * p
}

func tick(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }

// sanitizeID keeps letters, digits, '-' and '_' of s, for an element id.
func sanitizeID(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}
