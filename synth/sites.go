package synth

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/havenhealth/haven/cdm"
)

// Rates of deliberate defects, per row written.
const (
	invalidNHSRate = 0.001
	duplicateRate  = 0.00002
)

// checkEvery is how many patients a site generator handles between looks
// at its context.
const checkEvery = 1024

// siteResult is what generating one site produced.
type siteResult struct {
	files      map[string]File
	bytes      int64
	registered int      // GP: registered population on the reference date
	cohort     int      // GP: patients whose home practice this is
	ndop       []uint64 // GP: national opt-outs among its home patients
}

// siteFiles holds the open files of one site while it is generated.
type siteFiles struct {
	dir   string
	ods   string
	files []*tableFile
}

func (sf *siteFiles) open(table string) (*tableFile, error) {
	t, ok := cdm.Lookup(table)
	if !ok {
		return nil, fmt.Errorf("site %s: no CDM table %q", sf.ods, table)
	}
	tf, err := createTableFile(sf.dir, siteFilePath(sf.ods, t.Name), t)
	if err != nil {
		return nil, fmt.Errorf("site %s: %w", sf.ods, err)
	}
	sf.files = append(sf.files, tf)
	return tf, nil
}

// closeAll closes every file and returns their sizes; after a failure it
// just releases them.
func (sf *siteFiles) closeAll(failed bool) (int64, error) {
	var total int64
	var errs []error
	for _, tf := range sf.files {
		if failed {
			tf.abort()
			continue
		}
		n, err := tf.close()
		total += n
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

// dirtyRNG returns the stream of defects for one table of one site. Site
// ids are practice ids for GP practices and maxPractices + id for trusts.
func dirtyRNG(seed uint64, site int, table string) *rng {
	h := uint64(14695981039346656037) // FNV-1a of the table name
	for i := 0; i < len(table); i++ {
		h = (h ^ uint64(table[i])) * 1099511628211
	}
	r := newRNG()
	r.seed(seed, streamDirty, uint64(site), h)
	return r
}

// gpSite writes the files of practice p: its home patients (including
// those who died, left or moved away, with the records they had here) and
// the patients who moved in from neighbouring practices.
func gpSite(ctx context.Context, t *topology, out string, p int) (res siteResult, err error) {
	pr := &t.practices[p]
	sf := &siteFiles{dir: out, ods: pr.ods}
	defer func() {
		n, cerr := sf.closeAll(err != nil)
		if err == nil {
			err, res.bytes = cerr, n
		}
	}()
	var tfs [5]*tableFile
	for k, name := range []string{cdm.TablePatient, cdm.TableRegistration, cdm.TableClinicalEvent, cdm.TableMedication, cdm.TableOptOut} {
		if tfs[k], err = sf.open(name); err != nil {
			return res, err
		}
	}
	patients := newSink[patientRow](tfs[0], dirtyRNG(t.seed, p, cdm.TablePatient), invalidNHSRate, 0)
	regs := newSink[registrationRow](tfs[1], nil, 0, 0)
	events := newSink[eventRow](tfs[2], dirtyRNG(t.seed, p, cdm.TableClinicalEvent), invalidNHSRate, duplicateRate)
	meds := newSink[medicationRow](tfs[3], dirtyRNG(t.seed, p, cdm.TableMedication), invalidNHSRate, duplicateRate)
	optOuts := newSink[optOutRow](tfs[4], nil, 0, 0)

	pop, care := newPopulation(t), newPrimaryCare(t)
	var per person
	var rec gpRecord

	// write emits a patient's rows as this practice holds them: rows up to
	// until (inclusive), or all when until is noDay. practice_ods is where
	// the patient is registered now, as the spine would tell the practice:
	// the new practice for a mover, none for someone who left the network.
	write := func(per *person, reg registrationRow, lsoa int, until day) error {
		if err := patients.add(patientRow{nhs: per.nhs, birth: per.birth, sex: per.sex, death: per.death,
			lsoa: lsoa, practiceODS: t.currentPracticeODS(per)}); err != nil {
			return err
		}
		if err := regs.add(reg); err != nil {
			return err
		}
		care.record(per, &rec)
		for _, e := range rec.events {
			if until != noDay && e.date > until {
				continue
			}
			if err := events.add(eventRow{nhs: per.nhs, gpEvent: e}); err != nil {
				return err
			}
		}
		for _, m := range rec.issues {
			if until != noDay && m.date > until {
				continue
			}
			if err := meds.add(medicationRow{nhs: per.nhs, gpIssue: m}); err != nil {
				return err
			}
		}
		if per.type1 != noDay && (until == noDay || per.type1 <= until) {
			return optOuts.add(optOutRow{nhs: per.nhs, kind: cdm.OptOutType1, recorded: per.type1})
		}
		return nil
	}

	for i := range pr.cohort {
		if i%checkEvery == 0 && ctx.Err() != nil {
			return res, ctx.Err()
		}
		if err := pop.person(p, i, &per); err != nil {
			return res, err
		}
		res.cohort++
		if per.status == statusRegistered {
			res.registered++
		}
		if per.ndop {
			res.ndop = append(res.ndop, per.nhsValue)
		}
		// A practice keeps the record of a patient who moved on as it
		// stood when they left; everyone else's runs to its end.
		until := noDay
		if per.status == statusMoved {
			until = per.regEnd
		}
		reg := registrationRow{nhs: per.nhs, ods: pr.ods, start: per.regStart, end: per.regEnd}
		if err := write(&per, reg, per.lsoa, until); err != nil {
			return res, err
		}
	}
	// Movers arrive with their whole record (GP2GP transfer).
	for _, s := range pr.moveFrom {
		for i := range t.practices[s].cohort {
			if i%checkEvery == 0 && ctx.Err() != nil {
				return res, ctx.Err()
			}
			if err := pop.person(s, i, &per); err != nil {
				return res, err
			}
			if per.status != statusMoved || per.moveTo != p {
				continue
			}
			res.registered++
			reg := registrationRow{nhs: per.nhs, ods: pr.ods, start: per.newStart, end: noDay}
			if err := write(&per, reg, per.newLSOA, noDay); err != nil {
				return res, err
			}
		}
	}
	res.files = map[string]File{
		cdm.TablePatient:       patients.stats,
		cdm.TableRegistration:  regs.stats,
		cdm.TableClinicalEvent: events.stats,
		cdm.TableMedication:    meds.stats,
		cdm.TableOptOut:        optOuts.stats,
	}
	return res, nil
}

// trustSite writes the files of trust tr: every catchment patient with
// activity at this trust, their admissions and their A&E attendances.
func trustSite(ctx context.Context, t *topology, out string, tr *trust) (res siteResult, err error) {
	sf := &siteFiles{dir: out, ods: tr.ods}
	defer func() {
		n, cerr := sf.closeAll(err != nil)
		if err == nil {
			err, res.bytes = cerr, n
		}
	}()
	var tfs [3]*tableFile
	for k, name := range []string{cdm.TablePatient, cdm.TableAPCEpisode, cdm.TableAEAttendance} {
		if tfs[k], err = sf.open(name); err != nil {
			return res, err
		}
	}
	site := maxPractices + tr.id
	patients := newSink[patientRow](tfs[0], dirtyRNG(t.seed, site, cdm.TablePatient), invalidNHSRate, 0)
	episodes := newSink[episodeRow](tfs[1], dirtyRNG(t.seed, site, cdm.TableAPCEpisode), invalidNHSRate, 0)
	visits := newSink[attendanceRow](tfs[2], dirtyRNG(t.seed, site, cdm.TableAEAttendance), invalidNHSRate, duplicateRate)

	pop, hosp := newPopulation(t), newHospitals(t)
	var per person
	var rec hospitalRecord
	var episodeNo int
	idBuf := make([]byte, 0, 16)
	for _, p := range tr.practices {
		for i := range t.practices[p].cohort {
			if i%checkEvery == 0 && ctx.Err() != nil {
				return res, ctx.Err()
			}
			if err := pop.person(p, i, &per); err != nil {
				return res, err
			}
			hosp.record(&per, &rec)
			seen := false
			for _, ep := range rec.episodes {
				if ep.trust != tr.id {
					continue
				}
				seen = true
				episodeNo++
				idBuf = append(append(idBuf[:0], tr.ods...), '-')
				idBuf = appendPadded(idBuf, episodeNo, 9)
				if err := episodes.add(episodeRow{nhs: per.nhs, id: string(idBuf), hospitalEpisode: ep}); err != nil {
					return res, err
				}
			}
			for _, v := range rec.visits {
				if v.trust != tr.id {
					continue
				}
				seen = true
				if err := visits.add(attendanceRow{nhs: per.nhs, aeVisit: v}); err != nil {
					return res, err
				}
			}
			if !seen {
				continue
			}
			lsoa := per.lsoa
			if per.status == statusMoved {
				lsoa = per.newLSOA
			}
			if err := patients.add(patientRow{nhs: per.nhs, birth: per.birth, sex: per.sex, death: per.death,
				lsoa: lsoa, practiceODS: t.currentPracticeODS(&per)}); err != nil {
				return res, err
			}
		}
	}
	res.files = map[string]File{
		cdm.TablePatient:      patients.stats,
		cdm.TableAPCEpisode:   episodes.stats,
		cdm.TableAEAttendance: visits.stats,
	}
	return res, nil
}

// appendPadded appends n in decimal, zero-padded to width digits.
func appendPadded(b []byte, n, width int) []byte {
	var digits [20]byte
	s := strconv.AppendInt(digits[:0], int64(n), 10)
	for range width - len(s) {
		b = append(b, '0')
	}
	return append(b, s...)
}
