package synth

import (
	"math"
	"time"
)

// day is a calendar day counted from 1970-01-01, as Arrow date32 stores it.
type day int32

// noDay marks an absent date (a null in the file).
const noDay day = math.MinInt32

const (
	// historyStart is the first day of generated activity: 2015-01-01.
	historyStart day = 16436
	// referenceDay is the extract date: 2026-03-31. Everyone alive at it
	// and registered is on a practice's list; nothing happens after it.
	referenceDay day = 20543
	// earliestRegistration bounds registration dates of older patients.
	earliestRegistration day = 3652 // 1980-01-01
)

const daysPerYear = 365.2425

func dayOf(t time.Time) day { return day(t.Unix() / 86400) }

// Time returns d as a UTC midnight.
func (d day) Time() time.Time { return time.Unix(int64(d)*86400, 0).UTC() }

// String formats d as YYYY-MM-DD, or "none".
func (d day) String() string {
	if d == noDay {
		return "none"
	}
	return d.Time().Format(time.DateOnly)
}

// yearsBetween returns the (fractional) years from a to b.
func yearsBetween(a, b day) float64 { return float64(b-a) / daysPerYear }

// addYears returns d plus y (fractional) years.
func addYears(d day, y float64) day { return d + day(math.Round(y*daysPerYear)) }
