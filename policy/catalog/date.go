package catalog

import (
	"fmt"
	"time"
)

// Date is a calendar day counted in days since 1970-01-01: the same
// representation as Arrow's date32, so a node can bind it to SQL and a
// coordinator can compare it with Arrow columns without conversion. It has
// no time of day and no zone, so no clock or locale can shift it.
type Date int32

// The range of dates a definition or a parameter value may name. Four-digit
// years keep the ISO form unambiguous.
var (
	minDate = DateOf(1000, time.January, 1)
	maxDate = DateOf(9999, time.December, 31)
)

const dateLayout = "2006-01-02"

// DateOf returns the Date for a day of the proleptic Gregorian calendar.
func DateOf(year int, month time.Month, day int) Date {
	return Date(time.Date(year, month, day, 0, 0, 0, 0, time.UTC).Unix() / 86400)
}

// ParseDate parses an ISO 8601 calendar date, YYYY-MM-DD, and nothing else:
// no time, no zone, no two-digit year.
func ParseDate(s string) (Date, error) {
	if len(s) != len(dateLayout) {
		return 0, fmt.Errorf("%q is not a date: want YYYY-MM-DD", s)
	}
	t, err := time.Parse(dateLayout, s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a date: want YYYY-MM-DD", s)
	}
	d := Date(t.Unix() / 86400)
	if d < minDate || d > maxDate {
		return 0, fmt.Errorf("%q is outside the years 1000 to 9999", s)
	}
	return d, nil
}

// Time returns midnight UTC at the start of d.
func (d Date) Time() time.Time { return time.Unix(int64(d)*86400, 0).UTC() }

// String returns d as YYYY-MM-DD.
func (d Date) String() string { return d.Time().Format(dateLayout) }

// addDays returns d moved by n days, or false when the result falls outside
// the years a definition may name.
func (d Date) addDays(n int64) (Date, bool) {
	const limit = int64(1) << 30 // far beyond any valid offset; keeps the sum in range
	if n > limit || n < -limit {
		return 0, false
	}
	r := int64(d) + n
	if r < int64(minDate) || r > int64(maxDate) {
		return 0, false
	}
	return Date(r), true
}
