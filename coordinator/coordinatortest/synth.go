package coordinatortest

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

// IndexDate is the index date test runs use, and the day ages are on.
const IndexDate = "2024-04-01"

// Patient is one synthetic patient, with the raw identifiers a site holds
// and the values the test definitions derive from its records.
type Patient struct {
	NHSNumber string
	BirthDate string // YYYY-MM-DD
	// Practice is where the patient is registered; "" for someone a trust
	// saw who is registered nowhere in the network.
	Practice string
	Sex      string
	Age      int // whole years on IndexDate
	// StatinIssues is the number of statin issues in the lookback window
	// (statins-chd).
	StatinIssues int64
	// Admissions are emergency admissions in the follow-up, by trust
	// (t2dm-emergency-admissions).
	Admissions map[string]int64
}

// Patients makes perPractice patients at each practice and a few seen only
// at trusts, deterministically from seed.
func Patients(seed uint64, practices []string, perPractice int, trusts []string) []Patient {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	index, _ := time.Parse(time.DateOnly, IndexDate)
	var out []Patient
	serial := uint32(400_000_000 + seed%1000*10_000)
	mk := func(practice string) Patient {
		nhs, used, err := cdm.NHSNumberFromSerial(serial)
		if err != nil {
			panic(err)
		}
		serial = used + 1
		age := 18 + rng.IntN(78)
		birth := index.AddDate(-age, 0, -rng.IntN(360))
		sex := []string{"F", "M"}[rng.IntN(2)]
		if rng.IntN(50) == 0 {
			sex = "U"
		}
		p := Patient{NHSNumber: nhs, BirthDate: birth.Format(time.DateOnly), Practice: practice, Sex: sex, Age: age,
			Admissions: map[string]int64{}}
		if rng.IntN(10) >= 4 {
			p.StatinIssues = 1 + int64(rng.IntN(12))
		}
		if len(trusts) > 0 && rng.IntN(10) >= 6 {
			p.Admissions[trusts[rng.IntN(len(trusts))]] += 1 + int64(rng.IntN(3))
			if rng.IntN(4) == 0 {
				p.Admissions[trusts[rng.IntN(len(trusts))]]++
			}
		}
		return p
	}
	for _, pr := range practices {
		for range perPractice {
			out = append(out, mk(pr))
		}
	}
	// One patient whose statin issues dominate their group.
	if len(out) > 0 {
		out[0].StatinIssues = 400
	}
	for range len(practices) * 3 {
		p := mk("")
		if len(p.Admissions) == 0 && len(trusts) > 0 {
			p.Admissions[trusts[0]] = 1
		}
		out = append(out, p)
	}
	return out
}

// AgeBand is the label of the band of the age_band variable of def that
// age falls in.
func AgeBand(def *catalog.Definition, age int) string {
	v, ok := def.Variable("age_band")
	if !ok {
		panic("definition " + def.ID + " has no age_band")
	}
	ab, ok := v.Expr.(*catalog.AgeBandVar)
	if !ok {
		panic("age_band of " + def.ID + " is not an age band")
	}
	for _, b := range ab.Bands() {
		if int64(age) >= b.Min && (b.Max < 0 || int64(age) <= b.Max) {
			return b.Label
		}
	}
	panic(fmt.Sprintf("age %d in no band", age))
}

// Pseudonym is the stand-in for the nodes' run pseudonym: a keyed hash of
// the NHS number under a key derived from the run id. The coordinator only
// ever sees the result.
func Pseudonym(secret []byte, runID, nhsNumber string) []byte {
	k := hmac.New(sha256.New, secret)
	k.Write([]byte(runID))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write([]byte(nhsNumber))
	return m.Sum(nil)[:catalog.PseudonymBytes]
}

// RecordKey is the stand-in for the nodes' record key for cell-key
// perturbation: a keyed hash of the NHS number, reduced to [0, keyRange).
// Like the nodes' key it does not depend on the run.
func RecordKey(nhsNumber string, keyRange int) uint64 {
	m := hmac.New(sha256.New, []byte("coordinatortest perturbation secret"))
	m.Write([]byte(nhsNumber))
	return binary.BigEndian.Uint64(m.Sum(nil)[:8]) % uint64(keyRange)
}

// StatinsCells is what practice ods returns for statins-chd: one row per
// (age_band, sex) group of its patients, in two batches. When the schema
// has cell keys (patients__key, on_statin__key), each is the sum mod
// keyRange of the RecordKey of the patients its count counts, and
// statin_issues__n_key that of the patients with statin issues.
func StatinsCells(def *catalog.Definition, schema *arrow.Schema, ps []Patient, ods string, keyRange int) []arrow.Record {
	type key struct{ band, sex string }
	type agg struct{ patients, onStatin, sum, n, top, patientsKey, onStatinKey, nKey int64 }
	cells := map[key]*agg{}
	for _, p := range ps {
		if p.Practice != ods {
			continue
		}
		k := key{AgeBand(def, p.Age), p.Sex}
		a := cells[k]
		if a == nil {
			a = &agg{}
			cells[k] = a
		}
		a.patients++
		var rk int64
		if keyRange > 0 {
			rk = int64(RecordKey(p.NHSNumber, keyRange))
			a.patientsKey = (a.patientsKey + rk) % int64(keyRange)
		}
		if p.StatinIssues > 0 {
			a.onStatin++
			if keyRange > 0 {
				a.onStatinKey = (a.onStatinKey + rk) % int64(keyRange)
			}
		}
		// A sum's n and top count its contributors: the patients who
		// add something to it (catalog.Partial).
		if p.StatinIssues != 0 {
			a.sum += p.StatinIssues
			a.n++
			a.top = max(a.top, p.StatinIssues)
			if keyRange > 0 {
				a.nKey = (a.nKey + rk) % int64(keyRange)
			}
		}
	}
	keys := make([]key, 0, len(cells))
	for k := range cells {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int { return cmp.Or(cmp.Compare(a.band, b.band), cmp.Compare(a.sex, b.sex)) })
	rows := make([]func(b *array.RecordBuilder), len(keys))
	for i, k := range keys {
		a := cells[k]
		rows[i] = func(b *array.RecordBuilder) {
			for f, field := range schema.Fields() {
				switch field.Name {
				case "age_band":
					b.Field(f).(*array.StringBuilder).Append(k.band)
				case "sex":
					b.Field(f).(*array.StringBuilder).Append(k.sex)
				case "patients":
					b.Field(f).(*array.Int64Builder).Append(a.patients)
				case "on_statin":
					b.Field(f).(*array.Int64Builder).Append(a.onStatin)
				case "patients__key":
					b.Field(f).(*array.Int64Builder).Append(a.patientsKey)
				case "on_statin__key":
					b.Field(f).(*array.Int64Builder).Append(a.onStatinKey)
				case "statin_issues__sum":
					b.Field(f).(*array.Int64Builder).Append(a.sum)
				case "statin_issues__n":
					b.Field(f).(*array.Int64Builder).Append(a.n)
				case "statin_issues__n_key":
					b.Field(f).(*array.Int64Builder).Append(a.nKey)
				case "statin_issues__top":
					if a.n == 0 {
						b.Field(f).(*array.Int64Builder).AppendNull()
					} else {
						b.Field(f).(*array.Int64Builder).Append(a.top)
					}
				default:
					panic("unexpected field " + field.Name)
				}
			}
		}
	}
	return batches(schema, rows, 2)
}

// T2DMPractice is what practice ods returns for t2dm-emergency-admissions:
// one row per patient in its population, under the run pseudonym.
func T2DMPractice(def *catalog.Definition, schema *arrow.Schema, ps []Patient, ods, runID string, secret []byte) []arrow.Record {
	var rows []func(b *array.RecordBuilder)
	for _, p := range ps {
		if p.Practice != ods {
			continue
		}
		rows = append(rows, func(b *array.RecordBuilder) {
			b.Field(0).(*array.FixedSizeBinaryBuilder).Append(Pseudonym(secret, runID, p.NHSNumber))
			b.Field(1).(*array.StringBuilder).Append(AgeBand(def, p.Age))
			b.Field(2).(*array.StringBuilder).Append(p.Sex)
		})
	}
	return batches(schema, rows, 2)
}

// T2DMTrust is what trust ods returns for t2dm-emergency-admissions: one
// row per patient it admitted as an emergency, with the count.
func T2DMTrust(schema *arrow.Schema, ps []Patient, ods, runID string, secret []byte) []arrow.Record {
	var rows []func(b *array.RecordBuilder)
	for _, p := range ps {
		n := p.Admissions[ods]
		if n == 0 {
			continue
		}
		rows = append(rows, func(b *array.RecordBuilder) {
			b.Field(0).(*array.FixedSizeBinaryBuilder).Append(Pseudonym(secret, runID, p.NHSNumber))
			b.Field(1).(*array.Int64Builder).Append(n)
		})
	}
	return batches(schema, rows, 1)
}

// batches builds the rows into n record batches of about equal size.
func batches(schema *arrow.Schema, rows []func(*array.RecordBuilder), n int) []arrow.Record {
	if len(rows) == 0 {
		return nil
	}
	per := (len(rows) + n - 1) / n
	var out []arrow.Record
	for start := 0; start < len(rows); start += per {
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		for _, row := range rows[start:min(start+per, len(rows))] {
			row(b)
		}
		out = append(out, b.NewRecord())
		b.Release()
	}
	return out
}
