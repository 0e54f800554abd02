package linkage

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow/go/v17/arrow"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/policy/catalog"
)

// ErrClosed is returned by a Run used after Close.
var ErrClosed = errors.New("linkage: run closed")

// Site is a site that sends a batch.
type Site struct {
	// ODS is the site's ODS code. In linkage mode it becomes the value of
	// a first_trust variable.
	ODS  string
	Kind cdm.SiteKind
}

// Options tune a Run. The zero value is ready to use.
type Options struct {
	// Partitions is the number of hash partitions of the patient table;
	// default runtime.GOMAXPROCS(0).
	Partitions int
	// ExpectedPatients, when known (the registered population of the
	// practices taking part, say), reserves room for that many distinct
	// pseudonyms up front: the table then neither rehashes nor copies
	// itself as batches arrive, which saves time and the transient memory
	// of growing. It is a hint; the table grows past it if need be.
	ExpectedPatients int
	// TopContributions is how many of the largest contributions each cell
	// keeps for a measure with the dominance rule; it must be at least the
	// disclosure thresholds' Dominance.N. Default and minimum 3.
	TopContributions int
	// KeyRange is R of cell-key perturbation when the plan carries record
	// keys (catalog.Plan.RecordKeys): each count's cell key is the sum mod
	// R of its patients' record keys, given to disclosure as Input.Key. In
	// aggregate mode that is the sum of the practices' key sums; in
	// linkage mode, of the record keys on the population's rows. It must
	// be set exactly when the plan has keys.
	KeyRange int
}

// Stats describes what a run received and linked.
type Stats struct {
	Mode catalog.Mode
	// Sites is the number of sites with an accepted batch, Batches the
	// number of accepted batches.
	Sites   int
	Batches int64
	// GPRows and TrustRows count the accepted rows by kind of site: cells
	// in aggregate mode, patients in linkage mode.
	GPRows    int64
	TrustRows int64
	// Patients is the number of distinct pseudonyms received. It and the
	// counts below it, up to DuplicateRegistrations, are for linkage mode;
	// in aggregate mode no patient is seen and they are 0.
	Patients int64
	// Population is the number of patients in the population, each counted
	// once in the table.
	Population int64
	// UnlinkedPatients are patients outside the population: for a GP
	// population, seen at a trust but sent by no practice; for a hospital
	// population, not in it at any trust. They are dropped.
	// UnlinkedRows counts their rows.
	UnlinkedPatients int64
	UnlinkedRows     int64
	// DuplicateRegistrations counts practice rows for a pseudonym that
	// another practice had also sent. Registration is exclusive, so any
	// is a fault at a site; the patient is counted once (see the package
	// doc).
	DuplicateRegistrations int64
	// Cells is the number of cells in the table.
	Cells int
	// MemoryBytes estimates the memory the run holds.
	MemoryBytes int64
}

// Run links and aggregates the uploads of one run. Its methods are safe
// for concurrent use.
type Run struct {
	plan  *catalog.Plan
	def   *catalog.Definition
	bound *catalog.Bound
	mode  catalog.Mode
	opts  Options

	kinds    map[cdm.SiteKind]*kindSpec
	vars     []varSpec
	measures []measureSpec
	dims     []dimSpec
	table    disclosure.Table // dims and measures of the result

	// Linkage mode.
	layout  []storeSpec // the patient table's columns
	popKind cdm.SiteKind
	popCol  int // the combined in_population column, or -1
	// keyCol is the record key column, or -1 when the plan has no
	// record keys: each count's cell key is the sum of its patients' keys.
	keyCol  int
	parts   []*partition
	seed    [2]uint64
	scratch sync.Pool // *scratch
	// parallelRows is the batch size from which Add applies partitions
	// from several goroutines; below it the fan-out costs more than it
	// saves.
	parallelRows int

	// Aggregate mode.
	cells *cellStore

	// state is held for reading by Add and for writing by Table and Close,
	// so that Table sees no half-applied batch.
	state  sync.RWMutex
	closed bool

	sitesMu sync.RWMutex
	sites   map[string]*siteState // by ODS code
	byID    []*siteState

	batches, duplicates atomic.Int64
	rows                map[cdm.SiteKind]*atomic.Int64
}

// siteState is what the run knows of one site.
type siteState struct {
	id   int32
	site Site
	// mu serialises the site's batches, so that a pseudonym (or a cell)
	// the site repeats across two batches is caught exactly.
	mu       sync.Mutex
	applied  int                 // batches applied; guarded by mu
	cellKeys map[string]struct{} // aggregate mode: the groups the site sent; guarded by mu
	accepted atomic.Bool
}

// New prepares a run of plan, the plan of def, with parameters b.
func New(plan *catalog.Plan, def *catalog.Definition, b *catalog.Bound, opts Options) (*Run, error) {
	if opts.Partitions <= 0 {
		opts.Partitions = runtime.GOMAXPROCS(0)
	}
	opts.Partitions = min(opts.Partitions, 1<<12)
	opts.TopContributions = max(opts.TopContributions, 3)
	r := &Run{
		opts:  opts,
		kinds: map[cdm.SiteKind]*kindSpec{},
		sites: map[string]*siteState{},
		rows:  map[cdm.SiteKind]*atomic.Int64{},
		seed:  [2]uint64{rand.Uint64(), rand.Uint64()},

		parallelRows: 8192,
	}
	if err := r.compile(plan, def, b); err != nil {
		return nil, err
	}
	for _, k := range cdm.SiteKinds() {
		r.rows[k] = new(atomic.Int64)
	}
	if r.mode == catalog.ModeAggregate {
		r.cells = newCellStore()
		return r, nil
	}
	r.parts = make([]*partition, opts.Partitions)
	per := 0
	if opts.ExpectedPatients > 0 {
		// A little over an even share: partitions fill unevenly.
		per = min(opts.ExpectedPatients, 1<<30)/opts.Partitions*21/20 + 64
	}
	for i := range r.parts {
		r.parts[i] = newPartition(r)
		if per > 0 {
			r.parts[i].reserve(r.layout, per)
		}
	}
	return r, nil
}

// Add checks one record batch from site and adds it to the run. The
// record's schema must be the plan's schema for the site's kind, and every
// row must pass the checks the package doc lists; otherwise Add returns a
// *BatchError (wrapping ErrBadBatch) and the run is unchanged. Add does not
// retain rec.
//
// Add may be called from several goroutines at once; batches from
// different sites are applied concurrently, those of one site one at a
// time.
func (r *Run) Add(ctx context.Context, site Site, rec arrow.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.state.RLock()
	defer r.state.RUnlock()
	if r.closed {
		return ErrClosed
	}
	if rec == nil {
		return &BatchError{Site: site, Row: -1, Msg: "no record"}
	}
	ks := r.kinds[site.Kind]
	if ks == nil {
		return &BatchError{Site: site, Row: -1, Msg: fmt.Sprintf("%s sites take no part in a run of %s", site.Kind, r.plan.Definition)}
	}
	s, err := r.site(site)
	if err != nil {
		return err
	}
	b, err := decode(s, ks, rec)
	if err != nil {
		return err
	}
	if r.mode == catalog.ModeAggregate {
		err = r.cells.add(r, b)
	} else {
		err = r.addPatients(ctx, b)
	}
	if err != nil {
		return err
	}
	s.accepted.Store(true)
	r.batches.Add(1)
	r.rows[site.Kind].Add(int64(b.n))
	return nil
}

// site returns the state of a site, registering it the first time.
func (r *Run) site(site Site) (*siteState, error) {
	if !validTokenString(site.ODS) {
		return nil, &BatchError{Site: site, Row: -1, Msg: fmt.Sprintf("site ODS code %q is not a code", site.ODS)}
	}
	r.sitesMu.RLock()
	s := r.sites[site.ODS]
	r.sitesMu.RUnlock()
	if s == nil {
		r.sitesMu.Lock()
		if s = r.sites[site.ODS]; s == nil {
			s = &siteState{id: int32(len(r.byID)), site: site}
			r.sites[site.ODS] = s
			r.byID = append(r.byID, s)
		}
		r.sitesMu.Unlock()
	}
	if s.site.Kind != site.Kind {
		return nil, &BatchError{Site: site, Row: -1, Msg: fmt.Sprintf("site %s already sent batches as a %s site", site.ODS, s.site.Kind)}
	}
	return s, nil
}

// siteByID returns a registered site.
func (r *Run) siteByID(id int32) *siteState {
	r.sitesMu.RLock()
	defer r.sitesMu.RUnlock()
	return r.byID[id]
}

// Table computes the run's aggregate table from every batch accepted so
// far, with its statistics. It may be called more than once; Adds wait
// while it runs.
func (r *Run) Table(ctx context.Context) (disclosure.Table, Stats, error) {
	r.state.Lock()
	defer r.state.Unlock()
	if r.closed {
		return disclosure.Table{}, Stats{}, ErrClosed
	}
	st := Stats{
		Mode:                   r.mode,
		Batches:                r.batches.Load(),
		GPRows:                 r.rows[cdm.KindGP].Load(),
		TrustRows:              r.rows[cdm.KindTrust].Load(),
		DuplicateRegistrations: r.duplicates.Load(),
	}
	for _, s := range r.byID {
		if s.accepted.Load() {
			st.Sites++
		}
	}
	var (
		t   disclosure.Table
		err error
	)
	if r.mode == catalog.ModeAggregate {
		t, err = r.cells.table(ctx, r, &st)
	} else {
		t, err = r.patientTable(ctx, &st)
	}
	if err != nil {
		return disclosure.Table{}, Stats{}, err
	}
	st.Cells = len(t.Cells)
	return t, st, nil
}

// Close drops everything the run holds. It waits for Adds and Table in
// progress; afterwards they return ErrClosed. Close is idempotent.
func (r *Run) Close() {
	r.state.Lock()
	defer r.state.Unlock()
	r.closed = true
	r.parts, r.cells = nil, nil
	r.sitesMu.Lock()
	r.sites, r.byID = nil, nil
	r.sitesMu.Unlock()
}

// forEach calls fn(0) … fn(n-1) from up to workers goroutines, handing
// out i from first on (modulo n), so that concurrent callers that start
// apart do not queue on the same partition.
func forEach(n, workers, first int, fn func(i int)) {
	if workers <= 1 || n <= 1 {
		for i := range n {
			fn((first + i) % n)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn((first + i) % n)
			}
		})
	}
	wg.Wait()
}
