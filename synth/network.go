package synth

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/havenhealth/haven/cdm"
)

// FormatVersion is the version of the network.yaml layout this package
// writes and reads.
const FormatVersion = 1

// Names of what Generate writes under the output directory. Paths inside
// network.yaml are relative to that directory and slash-separated.
const (
	NetworkFile = "network.yaml"
	SitesDir    = "sites"
	NationalDir = "national"
	NDOPFile    = NationalDir + "/ndop.csv"
)

// Network describes a generated network; it is the content of
// network.yaml.
type Network struct {
	FormatVersion int    `yaml:"format_version"`
	CDMVersion    int    `yaml:"cdm_version"`
	Seed          uint64 `yaml:"seed"`
	Scale         Scale  `yaml:"scale"`
	// SiteLimit is the --sites cut: the number of GP practices kept from
	// the scale, or 0 when the scale is whole.
	SiteLimit int `yaml:"site_limit,omitempty"`
	// ReferenceDate is the extract date: nothing happens after it, and
	// registered populations are counted on it.
	ReferenceDate Date `yaml:"reference_date"`
	// HistoryStart is the first day of generated activity. Diagnoses may
	// be dated earlier: a record carries a patient's whole problem list.
	HistoryStart Date `yaml:"history_start"`
	// Sites lists GP practices in practice order, then trusts.
	Sites          []Site    `yaml:"sites"`
	NationalOptOut File      `yaml:"national_opt_out"`
	DirtyData      DirtyData `yaml:"dirty_data"`

	dir string
}

// Site is one GP practice or trust and the files it holds.
type Site struct {
	ODS  string       `yaml:"ods"`
	Name string       `yaml:"name"`
	Kind cdm.SiteKind `yaml:"kind"`
	// RegisteredPopulation is a GP practice's list size on the reference
	// date: patients whose registration there is open.
	RegisteredPopulation int `yaml:"registered_population,omitempty"`
	// CatchmentPopulation is a trust's expected number of patients who
	// use it as their main trust.
	CatchmentPopulation int `yaml:"catchment_population,omitempty"`
	// Trusts lists, for a GP practice, the ODS codes of the trusts its
	// patients use, main first.
	Trusts []string `yaml:"trusts,omitempty"`
	// Practices lists, for a trust, the ODS codes of its catchment practices.
	Practices []string `yaml:"practices,omitempty"`
	// Files maps each CDM table the site holds to its file.
	Files map[string]File `yaml:"files"`
}

// File is one generated file and what is in it.
type File struct {
	Path string `yaml:"path"`
	Rows int64  `yaml:"rows"`
	// InvalidNHSNumbers counts rows whose nhs_number fails validation on
	// purpose; every other row's number is valid.
	InvalidNHSNumbers int64 `yaml:"invalid_nhs_numbers,omitempty"`
	// DuplicateRows counts rows written twice on purpose (each counted once).
	DuplicateRows int64 `yaml:"duplicate_rows,omitempty"`
	// EventsAfterDeath counts rows dated after the patient's death on purpose.
	EventsAfterDeath int64 `yaml:"events_after_death,omitempty"`
}

// DirtyData documents the defects put into the network on purpose, so
// that tests can check a node counts and excludes exactly these.
type DirtyData struct {
	InvalidNHSNumbers Defect `yaml:"invalid_nhs_numbers"`
	DuplicateRows     Defect `yaml:"duplicate_rows"`
	EventsAfterDeath  Defect `yaml:"events_after_death"`
}

// Defect is one kind of deliberate defect and how often it occurs.
type Defect struct {
	Description string           `yaml:"description"`
	Total       int64            `yaml:"total"`
	ByTable     map[string]int64 `yaml:"by_table"`
}

// Date is a calendar day, written YYYY-MM-DD.
type Date struct{ time.Time }

// DateOf returns the calendar day of t (its year, month and day in t's
// location).
func DateOf(t time.Time) Date {
	y, m, d := t.Date()
	return Date{time.Date(y, m, d, 0, 0, 0, 0, time.UTC)}
}

// String formats d as YYYY-MM-DD.
func (d Date) String() string { return d.Format(time.DateOnly) }

// MarshalYAML writes d as YYYY-MM-DD.
func (d Date) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a YYYY-MM-DD date.
func (d *Date) UnmarshalYAML(n *yaml.Node) error {
	t, err := time.Parse(time.DateOnly, n.Value)
	if err != nil {
		return fmt.Errorf("line %d: date %q: want YYYY-MM-DD", n.Line, n.Value)
	}
	d.Time = t
	return nil
}

// LoadNetwork reads and checks the network.yaml at path. Unknown fields are
// errors. Relative file paths in it resolve against its directory (see
// Network.Path).
func LoadNetwork(file string) (*Network, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("load network: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var n Network
	if err := dec.Decode(&n); err != nil {
		return nil, fmt.Errorf("load network %s: %w", file, err)
	}
	if err := n.Validate(); err != nil {
		return nil, fmt.Errorf("load network %s: %w", file, err)
	}
	n.dir = filepath.Dir(file)
	return &n, nil
}

// Validate checks that n is complete and consistent: versions, scale,
// unique sites of known kinds, each holding exactly the tables of its kind
// at safe relative paths, and references between practices and trusts.
func (n *Network) Validate() error {
	var errs []error
	if n.FormatVersion != FormatVersion {
		errs = append(errs, fmt.Errorf("format_version %d: this build reads %d", n.FormatVersion, FormatVersion))
	}
	if n.CDMVersion != cdm.Version {
		errs = append(errs, fmt.Errorf("cdm_version %d: this build reads %d", n.CDMVersion, cdm.Version))
	}
	if _, err := ParseScale(string(n.Scale)); err != nil {
		errs = append(errs, fmt.Errorf("scale: %w", err))
	}
	if n.ReferenceDate.IsZero() || n.HistoryStart.IsZero() || !n.HistoryStart.Before(n.ReferenceDate.Time) {
		errs = append(errs, errors.New("history_start and reference_date: want both, history first"))
	}
	if err := checkRelPath(n.NationalOptOut.Path); err != nil {
		errs = append(errs, fmt.Errorf("national_opt_out: %w", err))
	}
	kinds := map[string]cdm.SiteKind{}
	for i, s := range n.Sites {
		if s.ODS == "" {
			errs = append(errs, fmt.Errorf("sites[%d]: no ods code", i))
			continue
		}
		if _, dup := kinds[s.ODS]; dup {
			errs = append(errs, fmt.Errorf("sites[%d]: ods %s listed twice", i, s.ODS))
		}
		kinds[s.ODS] = s.Kind
	}
	for i, s := range n.Sites {
		where := fmt.Sprintf("sites[%d] (%s)", i, s.ODS)
		if _, err := cdm.ParseSiteKind(string(s.Kind)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		var want []string
		for _, t := range cdm.TablesFor(s.Kind) {
			want = append(want, t.Name)
		}
		var got []string
		for table, f := range s.Files {
			got = append(got, table)
			if err := checkRelPath(f.Path); err != nil {
				errs = append(errs, fmt.Errorf("%s: files.%s: %w", where, table, err))
			}
			if f.Rows < 0 || f.InvalidNHSNumbers < 0 || f.DuplicateRows < 0 || f.EventsAfterDeath < 0 {
				errs = append(errs, fmt.Errorf("%s: files.%s: negative count", where, table))
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			errs = append(errs, fmt.Errorf("%s: files for tables %v: a %s holds %v", where, got, s.Kind, want))
		}
		refs, refKind := s.Trusts, cdm.KindTrust
		if s.Kind == cdm.KindTrust {
			refs, refKind = s.Practices, cdm.KindGP
		}
		if len(refs) == 0 {
			errs = append(errs, fmt.Errorf("%s: lists no %s sites", where, refKind))
		}
		for _, ref := range refs {
			if kinds[ref] != refKind {
				errs = append(errs, fmt.Errorf("%s: %s is not a %s in this network", where, ref, refKind))
			}
		}
	}
	return errors.Join(errs...)
}

// checkRelPath accepts a non-empty, slash-separated path that stays inside
// the network directory.
func checkRelPath(p string) error {
	switch {
	case p == "":
		return errors.New("no path")
	case path.IsAbs(p) || filepath.IsAbs(p) || strings.Contains(p, `\`):
		return fmt.Errorf("path %q: want a relative, slash-separated path", p)
	case !filepath.IsLocal(filepath.FromSlash(p)):
		return fmt.Errorf("path %q: leaves the network directory", p)
	}
	return nil
}

// Dir returns the directory network.yaml was loaded from, or "" for a
// Network that was not loaded from a file.
func (n *Network) Dir() string { return n.dir }

// Path resolves a path from network.yaml (a File's Path) to a path on disk.
func (n *Network) Path(rel string) string { return filepath.Join(n.dir, filepath.FromSlash(rel)) }

// Site returns the site with the given ODS code.
func (n *Network) Site(ods string) (Site, bool) {
	for _, s := range n.Sites {
		if s.ODS == ods {
			return s, true
		}
	}
	return Site{}, false
}

// SitesOfKind returns the sites of kind k, in network order.
func (n *Network) SitesOfKind(k cdm.SiteKind) []Site {
	var out []Site
	for _, s := range n.Sites {
		if s.Kind == k {
			out = append(out, s)
		}
	}
	return out
}

// writeNetwork writes n as dir/network.yaml, through a temporary file so
// that a network.yaml is only ever complete.
func writeNetwork(dir string, n *Network) (int64, error) {
	var buf bytes.Buffer
	buf.WriteString("# Synthetic NHS network written by haven synth. Read it with synth.LoadNetwork.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return 0, fmt.Errorf("encode %s: %w", NetworkFile, err)
	}
	if err := enc.Close(); err != nil {
		return 0, fmt.Errorf("encode %s: %w", NetworkFile, err)
	}
	final := filepath.Join(dir, NetworkFile)
	tmp := final + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return 0, fmt.Errorf("write %s: %w", NetworkFile, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return 0, fmt.Errorf("write %s: %w", NetworkFile, err)
	}
	return int64(buf.Len()), nil
}
