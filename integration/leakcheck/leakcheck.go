// Package leakcheck scans what a running Haven network wrote — logs,
// audit logs, job stores, node state — for the identifying data of the
// synthetic network it served: every NHS number, every birth date, the
// network linkage secret, the network opt-out key derived from it and the
// run pseudonyms derived from it. A hit is
// a privacy failure; tests assert there are none.
//
// Needles are matched as tokens, not as bare substrings, so that a
// ten-digit stretch of a longer number (a timestamp in nanoseconds) or a
// date inside a longer one is not taken for a patient's: an NHS number
// counts where it stands as ten digits on its own (or written 3-3-4 with
// spaces), a birth date where it stands as an ISO date on its own. Binary
// needles (the secret's bytes, pseudonyms) are matched anywhere.
package leakcheck

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	_ "github.com/duckdb/duckdb-go/v2" // reads the network's Parquet files

	"github.com/havenhealth/haven/demo"
	"github.com/havenhealth/haven/node/pseudonym"
	"github.com/havenhealth/haven/synth"
)

// Scanner holds the needles of one network.
type Scanner struct {
	nhs     map[string]bool
	births  map[string]bool
	secret  []byte       // as nodes hold it
	secrets []secretForm // the secrets' forms to look for
	pseudo  map[[pseudonym.Size]byte]bool
	pseudoH map[[2 * pseudonym.Size]byte]bool
}

// Counts says how many needles of each kind a Scanner looks for.
type Counts struct {
	NHSNumbers, BirthDates, SecretForms, Pseudonyms int
}

// New reads every NHS number and birth date of network n from its Parquet
// files and national opt-out list, and the linkage secret from
// secretFile, read as nodes read it. Pseudonyms are added per run with
// AddRun.
func New(ctx context.Context, n *synth.Network, secretFile string) (*Scanner, error) {
	s := &Scanner{nhs: map[string]bool{}, births: map[string]bool{},
		pseudo: map[[pseudonym.Size]byte]bool{}, pseudoH: map[[2 * pseudonym.Size]byte]bool{}}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		return nil, fmt.Errorf("open duckdb: %w", err)
	}
	defer db.Close()
	files, err := filepath.Glob(filepath.Join(n.Path(synth.SitesDir), "*", "*.parquet"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no Parquet files under %s (%v)", n.Path(synth.SitesDir), err)
	}
	list := make([]string, len(files))
	for i, f := range files {
		list[i] = "'" + strings.ReplaceAll(f, "'", "''") + "'"
	}
	all := "[" + strings.Join(list, ", ") + "]"
	if err := s.collect(ctx, db, `SELECT DISTINCT nhs_number FROM read_parquet(`+all+`, union_by_name = true) WHERE nhs_number IS NOT NULL`, s.nhs); err != nil {
		return nil, fmt.Errorf("read NHS numbers: %w", err)
	}
	patients := filepath.Join(n.Path(synth.SitesDir), "*", "patient.parquet")
	if err := s.collect(ctx, db, `SELECT DISTINCT strftime(birth_date, '%Y-%m-%d') FROM read_parquet('`+
		strings.ReplaceAll(patients, "'", "''")+`') WHERE birth_date IS NOT NULL`, s.births); err != nil {
		return nil, fmt.Errorf("read birth dates: %w", err)
	}
	ndop, err := os.ReadFile(n.Path(n.NationalOptOut.Path))
	if err != nil {
		return nil, fmt.Errorf("national opt-out list: %w", err)
	}
	for _, line := range strings.Split(string(ndop), "\n") {
		if line = strings.TrimSpace(line); len(line) == 10 {
			s.nhs[line] = true
		}
	}
	text, err := os.ReadFile(secretFile)
	if err != nil {
		return nil, fmt.Errorf("linkage secret: %w", err)
	}
	// Nodes use the file's bytes, less one trailing newline, as the
	// secret; look for them, and for the forms a careless log would give.
	secret := bytes.TrimSuffix(text, []byte("\n"))
	if len(secret) < pseudonym.MinSecretSize {
		return nil, fmt.Errorf("linkage secret %s is shorter than %d bytes", secretFile, pseudonym.MinSecretSize)
	}
	s.secret = secret
	s.addForms("linkage secret", secret)
	// The static network opt-out key every node derives from the secret
	// (node/pseudonym), derived here by the published rule: raw, hex and
	// base64. The keyed hashes it makes are meant to travel and be kept;
	// the key is not.
	knet, err := hkdf.Key(sha256.New, secret, []byte("haven.v1.network-optout"), "type1", sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("network opt-out key: %w", err)
	}
	for _, f := range [][]byte{knet, []byte(hex.EncodeToString(knet)), []byte(strings.ToUpper(hex.EncodeToString(knet))),
		[]byte(base64.StdEncoding.EncodeToString(knet))} {
		s.secrets = append(s.secrets, secretForm{what: "linkage secret", b: f})
	}
	return s, nil
}

// secretForm is one form of a secret a careless log could hold.
type secretForm struct {
	what string
	b    []byte
}

// addForms adds secret as its bytes, hex and base64, and, for a secret
// written as hex, its raw bytes and upper-case hex.
func (s *Scanner) addForms(what string, secret []byte) {
	forms := [][]byte{secret, []byte(hex.EncodeToString(secret)), []byte(base64.StdEncoding.EncodeToString(secret))}
	if raw, err := hex.DecodeString(string(secret)); err == nil {
		forms = append(forms, raw, []byte(strings.ToUpper(string(secret))))
	}
	for _, f := range forms {
		s.secrets = append(s.secrets, secretForm{what: what, b: f})
	}
}

// AddSecretFile adds another network secret, read as nodes read it, to
// look for; what names it in hits.
func (s *Scanner) AddSecretFile(what, path string) error {
	text, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	secret := bytes.TrimSuffix(text, []byte("\n"))
	if len(secret) < pseudonym.MinSecretSize {
		return fmt.Errorf("%s %s is shorter than %d bytes", what, path, pseudonym.MinSecretSize)
	}
	s.addForms(what, secret)
	return nil
}

func (s *Scanner) collect(ctx context.Context, db *sql.DB, q string, into map[string]bool) error {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return err
		}
		into[v] = true
	}
	return rows.Err()
}

// AddRun adds the pseudonym of every NHS number of the network in run
// runID, as nodes derive them with the network's secret.
func (s *Scanner) AddRun(runID string) error {
	secret, err := pseudonym.NewSecret(s.secret)
	if err != nil {
		return err
	}
	d, err := pseudonym.NewDeriver(secret, runID)
	if err != nil {
		return fmt.Errorf("pseudonyms of run %s: %w", runID, err)
	}
	for nhs := range s.nhs {
		p := d.Of(nhs)
		s.pseudo[p] = true
		var h [2 * pseudonym.Size]byte
		hex.Encode(h[:], p[:])
		s.pseudoH[h] = true
	}
	return nil
}

// Allow takes dates off the birth-date needles: a date that the test
// itself typed as a run parameter is in the logs because it was asked
// for, not because a patient was born on it.
func (s *Scanner) Allow(dates ...string) {
	for _, d := range dates {
		delete(s.births, d)
	}
}

// Counts returns how many needles of each kind the scanner holds.
func (s *Scanner) Counts() Counts {
	return Counts{NHSNumbers: len(s.nhs), BirthDates: len(s.births), SecretForms: len(s.secrets), Pseudonyms: len(s.pseudo)}
}

// Hit is one needle found. It names what kind of needle and where, never
// the value.
type Hit struct {
	File   string
	Offset int
	What   string
}

func (h Hit) String() string { return fmt.Sprintf("%s at byte %d: %s", h.File, h.Offset, h.What) }

// Report is the outcome of a scan.
type Report struct {
	Files int
	Bytes int64
	Hits  []Hit
	// Needles are what the scan looked for.
	Needles Counts
}

// String summarises the scan.
func (r Report) String() string {
	c := r.Needles
	return fmt.Sprintf("%d files, %d bytes; needles: %d NHS numbers, %d birth dates, %d forms of the secret, %d pseudonyms; %d hits",
		r.Files, r.Bytes, c.NHSNumbers, c.BirthDates, c.SecretForms, c.Pseudonyms, len(r.Hits))
}

// Describe returns a line for each of the first max hits, and one saying
// how many more there are.
func (r Report) Describe(max int) []string {
	var out []string
	for i, h := range r.Hits {
		if i == max {
			out = append(out, fmt.Sprintf("… and %d more", len(r.Hits)-max))
			break
		}
		out = append(out, h.String())
	}
	return out
}

// ScanNetwork scans everything the coordinator and the nodes of a demo
// network wrote for the network's identifiers and the pseudonyms of the
// given linkage runs. allowed are the dates typed as run parameters,
// which are in the logs because they were asked for.
func ScanNetwork(ctx context.Context, res *demo.Result, linkageRuns, allowed []string) (Report, error) {
	s, err := New(ctx, res.Network, res.SecretFile())
	if err != nil {
		return Report{}, err
	}
	if err := s.AddSecretFile("perturbation secret", res.PerturbationSecretFile()); err != nil {
		return Report{}, err
	}
	for _, id := range linkageRuns {
		if err := s.AddRun(id); err != nil {
			return Report{}, err
		}
	}
	s.Allow(allowed...)
	return s.Scan(res.Written()...)
}

var (
	digitRun   = regexp.MustCompile(`[0-9]+`)
	spacedNHS  = regexp.MustCompile(`(^|[^0-9])([0-9]{3} [0-9]{3} [0-9]{4})([^0-9]|$)`)
	hexRun     = regexp.MustCompile(`[0-9a-fA-F]{32,}`)
	isoDateRun = regexp.MustCompile(`(^|[^0-9])([0-9]{4}-[0-9]{2}-[0-9]{2})([^0-9]|$)`)
)

// Scan reads every regular file under each root and reports each needle
// found. A root that does not exist is an error: a scan of nothing would
// pass.
func (s *Scanner) Scan(roots ...string) (Report, error) {
	r := Report{Needles: s.Counts()}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			r.Files++
			r.Bytes += int64(len(b))
			r.Hits = append(r.Hits, s.scanBytes(p, b)...)
			return nil
		})
		if err != nil {
			return r, fmt.Errorf("scan %s: %w", root, err)
		}
	}
	if r.Files == 0 {
		return r, errors.New("scan found no files")
	}
	return r, nil
}

func (s *Scanner) scanBytes(name string, b []byte) []Hit {
	var hits []Hit
	hit := func(off int, what string) { hits = append(hits, Hit{File: name, Offset: off, What: what}) }
	for _, loc := range digitRun.FindAllIndex(b, -1) {
		if loc[1]-loc[0] == 10 && s.nhs[string(b[loc[0]:loc[1]])] {
			hit(loc[0], "NHS number")
		}
	}
	for _, m := range spacedNHS.FindAllSubmatchIndex(b, -1) {
		if s.nhs[strings.ReplaceAll(string(b[m[4]:m[5]]), " ", "")] {
			hit(m[4], "NHS number (spaced)")
		}
	}
	for _, m := range isoDateRun.FindAllSubmatchIndex(b, -1) {
		if s.births[string(b[m[4]:m[5]])] {
			hit(m[4], "birth date")
		}
	}
	for _, sec := range s.secrets {
		if i := bytes.Index(b, sec.b); i >= 0 {
			hit(i, sec.what)
		}
	}
	if len(s.pseudo) > 0 {
		var k [pseudonym.Size]byte
		for i := 0; i+pseudonym.Size <= len(b); i++ {
			copy(k[:], b[i:])
			if s.pseudo[k] {
				hit(i, "pseudonym")
			}
		}
		var h [2 * pseudonym.Size]byte
		for _, loc := range hexRun.FindAllIndex(b, -1) {
			run := bytes.ToLower(b[loc[0]:loc[1]])
			for i := 0; i+len(h) <= len(run); i++ {
				copy(h[:], run[i:])
				if s.pseudoH[h] {
					hit(loc[0]+i, "pseudonym (hex)")
				}
			}
		}
	}
	return hits
}
