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
	// MemoryBudget, in linkage mode, is how many bytes the patient table
	// may hold in memory; past it, partitions move to files in SpillDir
	// (see the package doc). 0 means no budget: everything stays in
	// memory.
	MemoryBudget int64
	// SpillDir is the directory of the spill files; "" means os.TempDir().
	// New fails if it does not take files.
	SpillDir string
	// RunID names the run's spill files.
	RunID string
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
	// MemoryBytes estimates the memory the run holds: its patient table's
	// partitions in memory, not those spilled.
	MemoryBytes int64
	// SpilledBytes is what the run wrote to spill files to keep within
	// Options.MemoryBudget, SpilledPartitions how many partitions it
	// moved to disk.
	SpilledBytes      int64
	SpilledPartitions int
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
	spill   *spiller // nil without a memory budget
	seed    [2]uint64
	scratch sync.Pool // *scratch
	// parallelRows is the batch size from which Apply applies partitions
	// from several goroutines; below it the fan-out costs more than it
	// saves.
	parallelRows int

	// Aggregate mode.
	cells *cellStore

	// state is held for reading by Apply and for writing by Table and Close,
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
	if opts.MemoryBudget < 0 {
		return nil, fmt.Errorf("linkage: memory budget %d is negative", opts.MemoryBudget)
	}
	partitionsSet := opts.Partitions > 0
	if !partitionsSet {
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
	err := r.compile(plan, def, b)
	if err != nil {
		return nil, err
	}
	for _, k := range cdm.SiteKinds() {
		r.rows[k] = new(atomic.Int64)
	}
	if r.mode == catalog.ModeAggregate {
		r.cells = newCellStore()
		return r, nil
	}
	reserve := opts.ExpectedPatients > 0
	if opts.MemoryBudget > 0 {
		if r.spill, err = newSpiller(opts); err != nil {
			return nil, err
		}
		expected := int64(opts.ExpectedPatients) * r.patientBytes()
		if !partitionsSet {
			opts.Partitions = budgetPartitions(opts.MemoryBudget, expected)
		}
		// Room reserved up front is memory held: only when it fits.
		reserve = reserve && expected <= opts.MemoryBudget/2
	}
	r.opts.Partitions = opts.Partitions
	r.parts = make([]*partition, opts.Partitions)
	per := 0
	if reserve {
		// A little over an even share: partitions fill unevenly.
		per = min(opts.ExpectedPatients, 1<<30)/opts.Partitions*21/20 + 64
	}
	for i := range r.parts {
		r.parts[i] = newPartition(r)
		if per > 0 {
			r.parts[i].reserve(r.layout, per)
			r.parts[i].account(r.spill)
		}
	}
	return r, nil
}

// Add checks one record batch from site and adds it to the run: Decode,
// then Apply. The record's schema must be the plan's schema for the site's
// kind, and every row must pass the checks the package doc lists;
// otherwise Add returns a *BatchError (wrapping ErrBadBatch) and the run is
// unchanged. Add does not retain rec.
//
// Add may be called from several goroutines at once; batches from
// different sites are applied concurrently, those of one site one at a
// time.
func (r *Run) Add(ctx context.Context, site Site, rec arrow.Record) error {
	st, err := r.Decode(ctx, site, rec)
	if err != nil {
		return err
	}
	defer st.Release()
	return r.Apply(ctx, st)
}

// Staged is a record batch that Decode checked and decoded, waiting for
// Apply. It holds the record (its decoded form reads the record's buffers)
// until Release. A Staged belongs to one goroutine at a time.
type Staged struct {
	run     *Run
	rec     arrow.Record // nil once released
	b       *batch
	applied bool
}

// Release drops the record and the decoded batch. A Staged released
// without Apply leaves the run as it was. Release is idempotent, and a
// nil Staged may be released.
func (s *Staged) Release() {
	if s == nil || s.rec == nil {
		return
	}
	s.rec.Release()
	s.rec, s.b = nil, nil
}

// Decode checks one record batch from site against everything it alone
// can be checked for (everything Add checks but what Apply lists) and
// decodes it, without changing the run: the record's schema must be the
// plan's schema for the site's kind, and every row must pass the checks
// the package doc lists; otherwise Decode returns a *BatchError (wrapping
// ErrBadBatch). The Staged retains rec until it is released; the caller
// keeps its own reference and releases it as usual.
//
// Decode may be called from several goroutines at once, and does not wait
// for Table.
func (r *Run) Decode(ctx context.Context, site Site, rec arrow.Record) (*Staged, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.state.RLock()
	closed := r.closed
	r.state.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if rec == nil {
		return nil, &BatchError{Site: site, Row: -1, Msg: "no record"}
	}
	// The plan's specs are fixed by New, so the record is decoded without
	// the run's lock: a long decode does not hold up Table.
	ks := r.kinds[site.Kind]
	if ks == nil {
		return nil, &BatchError{Site: site, Row: -1, Msg: fmt.Sprintf("%s sites take no part in a run of %s", site.Kind, r.plan.Definition)}
	}
	if err := r.checkSite(site); err != nil {
		return nil, err
	}
	b, err := decode(site, ks, rec)
	if err != nil {
		return nil, err
	}
	if r.mode == catalog.ModeAggregate {
		err = r.checkCells(b)
	} else {
		err = r.checkPatients(b)
	}
	if err != nil {
		return nil, err
	}
	rec.Retain()
	return &Staged{run: r, rec: rec, b: b}, nil
}

// Apply adds a batch that Decode passed to the run. What a batch is
// checked for against what the run received before is checked here, as
// only here is it known: that the site has not sent batches as a site of
// another kind, and has not sent one of the batch's pseudonyms (linkage
// mode) or groups (aggregate mode) in an earlier batch. If one fails,
// Apply returns a *BatchError and the run is unchanged. Apply also fails,
// changing nothing, on a cancelled ctx, a closed run (ErrClosed), and a
// Staged that is released, already applied or another run's.
//
// Apply may be called from several goroutines at once, for different
// Stageds; batches from different sites are applied concurrently, those
// of one site one at a time. The caller still releases st.
func (r *Run) Apply(ctx context.Context, st *Staged) error {
	switch {
	case st == nil || st.b == nil:
		return errors.New("linkage: apply of a released batch")
	case st.run != r:
		return errors.New("linkage: apply of another run's batch")
	case st.applied:
		return errors.New("linkage: batch already applied")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.state.RLock()
	defer r.state.RUnlock()
	if r.closed {
		return ErrClosed
	}
	if err := r.spill.err(); err != nil {
		return err
	}
	b := st.b
	s, err := r.site(b.site)
	if err != nil {
		return err
	}
	b.state = s
	if r.mode == catalog.ModeAggregate {
		err = r.cells.add(r, b)
	} else {
		err = r.addPatients(ctx, b)
	}
	if err != nil {
		return err
	}
	st.applied = true
	s.accepted.Store(true)
	r.batches.Add(1)
	r.rows[b.site.Kind].Add(int64(b.n))
	return nil
}

// checkSite checks, without registering it, that site may send a batch:
// its ODS code is a code, and it has not sent batches as a site of
// another kind (which site checks again when the batch is applied).
func (r *Run) checkSite(site Site) error {
	if !validTokenString(site.ODS) {
		return &BatchError{Site: site, Row: -1, Msg: fmt.Sprintf("site ODS code %q is not a code", site.ODS)}
	}
	r.sitesMu.RLock()
	s := r.sites[site.ODS]
	r.sitesMu.RUnlock()
	return s.sameKind(site)
}

// sameKind checks that site is of the kind the site first sent batches
// as; a nil s has sent none.
func (s *siteState) sameKind(site Site) error {
	if s != nil && s.site.Kind != site.Kind {
		return &BatchError{Site: site, Row: -1, Msg: fmt.Sprintf("site %s already sent batches as a %s site", site.ODS, s.site.Kind)}
	}
	return nil
}

// site returns the state of a site, registering it the first time. Decode
// has checked its code.
func (r *Run) site(site Site) (*siteState, error) {
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
	if err := s.sameKind(site); err != nil {
		return nil, err
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
// far, with its statistics. It may be called more than once; Applies wait
// while it runs.
func (r *Run) Table(ctx context.Context) (disclosure.Table, Stats, error) {
	r.state.Lock()
	defer r.state.Unlock()
	if r.closed {
		return disclosure.Table{}, Stats{}, ErrClosed
	}
	if err := r.spill.err(); err != nil {
		return disclosure.Table{}, Stats{}, err
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

// Close drops everything the run holds. It waits for Applies and Table in
// progress; afterwards they and Decode return ErrClosed. Close is
// idempotent.
func (r *Run) Close() {
	r.state.Lock()
	defer r.state.Unlock()
	r.closed = true
	if r.spill != nil {
		r.removeSpills()
	}
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
