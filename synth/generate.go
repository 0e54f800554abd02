package synth

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/havenhealth/haven/cdm"
)

// Config says what network to generate and where.
type Config struct {
	// Out is the output directory. It must be empty or absent unless
	// Force is set.
	Out   string
	Scale Scale
	Seed  uint64
	// Sites, when positive, cuts the scale down to its first Sites GP
	// practices and the trusts they use.
	Sites int
	// Workers is how many sites are generated at once; 0 means GOMAXPROCS.
	// It never changes the output.
	Workers int
	// Force lets Generate replace a network already in Out. Only what
	// Generate writes (network.yaml, sites/, national/) is removed.
	Force bool
	// Progress, if set, is called after each site with the number of sites
	// done and the total. Calls are serialised.
	Progress func(done, total int)
}

// Summary reports what Generate wrote.
type Summary struct {
	Out       string
	Scale     Scale
	Seed      uint64
	Practices int
	Trusts    int
	// Patients is the number of distinct people in the network: everyone
	// ever registered with a practice between the history start and the
	// reference date.
	Patients int64
	// RegisteredPopulation is the sum of the practices' lists on the
	// reference date.
	RegisteredPopulation int64
	// Rows maps each CDM table to the rows written across all sites.
	Rows map[string]int64
	// NationalOptOuts is the number of NHS numbers on the national list.
	NationalOptOuts int64
	// Bytes is the size of everything written.
	Bytes   int64
	Elapsed time.Duration
}

// Generate writes the network cfg describes. It stops early, leaving
// partial output and no network.yaml, when ctx is cancelled.
func Generate(ctx context.Context, cfg Config) (*Summary, error) {
	began := time.Now()
	if cfg.Out == "" {
		return nil, errors.New("generate: no output directory")
	}
	if cfg.Workers < 0 {
		return nil, fmt.Errorf("generate: workers %d: must not be negative", cfg.Workers)
	}
	t, err := newTopology(cfg.Seed, cfg.Scale, cfg.Sites)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	if err := prepareOut(cfg.Out, cfg.Force); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}

	// Jobs: every practice, then every trust. Results land by job index,
	// so scheduling order never shows in the output; the biggest jobs go
	// first to keep the workers busy to the end.
	type job struct {
		index int
		cost  int
	}
	nGP := len(t.practices)
	jobs := make([]job, nGP+len(t.trusts))
	for p, pr := range t.practices {
		cost := pr.cohort
		for _, s := range pr.moveFrom {
			cost += t.practices[s].cohort / 4
		}
		jobs[p] = job{p, cost}
	}
	for k, tr := range t.trusts {
		cost := 0
		for _, p := range tr.practices {
			cost += t.practices[p].cohort * 3 / 4
		}
		jobs[nGP+k] = job{nGP + k, cost}
	}
	slices.SortStableFunc(jobs, func(a, b job) int { return cmp.Compare(b.cost, a.cost) })

	workers := cfg.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, len(jobs))
	results := make([]siteResult, len(jobs))
	queue := make(chan job)
	g, gctx := errgroup.WithContext(ctx)
	var mu sync.Mutex
	done := 0
	for range workers {
		g.Go(func() error {
			for j := range queue {
				var res siteResult
				var err error
				if j.index < nGP {
					res, err = gpSite(gctx, t, cfg.Out, j.index)
				} else {
					res, err = trustSite(gctx, t, cfg.Out, &t.trusts[j.index-nGP])
				}
				if err != nil {
					return err
				}
				results[j.index] = res
				if cfg.Progress != nil {
					mu.Lock()
					done++
					cfg.Progress(done, len(jobs))
					mu.Unlock()
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(queue)
		for _, j := range jobs {
			select {
			case queue <- j:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}

	n, sum := assemble(t, cfg, results)
	ndopRows, ndopBytes, err := writeNDOP(cfg.Out, results[:nGP])
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	n.NationalOptOut = File{Path: NDOPFile, Rows: ndopRows}
	netBytes, err := writeNetwork(cfg.Out, n)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	sum.NationalOptOuts = ndopRows
	sum.Bytes += ndopBytes + netBytes
	sum.Elapsed = time.Since(began)
	return sum, nil
}

// assemble builds the network description and summary from the sites'
// results, in practice order then trust order.
func assemble(t *topology, cfg Config, results []siteResult) (*Network, *Summary) {
	n := &Network{
		FormatVersion: FormatVersion,
		CDMVersion:    cdm.Version,
		Seed:          cfg.Seed,
		Scale:         cfg.Scale,
		SiteLimit:     cfg.Sites,
		ReferenceDate: DateOf(referenceDay.Time()),
		HistoryStart:  DateOf(historyStart.Time()),
	}
	sum := &Summary{Out: cfg.Out, Scale: cfg.Scale, Seed: cfg.Seed,
		Practices: len(t.practices), Trusts: len(t.trusts), Rows: map[string]int64{}}
	dirty := DirtyData{
		InvalidNHSNumbers: Defect{
			Description: "rows whose nhs_number is not a valid NHS number (wrong check digit, 9 or 11 digits); every other nhs_number passes the modulus-11 check",
			ByTable:     map[string]int64{}},
		DuplicateRows: Defect{
			Description: "rows written twice, identical in every column; counted once per pair",
			ByTable:     map[string]int64{}},
		EventsAfterDeath: Defect{
			Description: "events and prescriptions dated after the patient's date_of_death",
			ByTable:     map[string]int64{}},
	}
	addFiles := func(s *Site, res siteResult) {
		s.Files = res.files
		for table, f := range res.files {
			sum.Rows[table] += f.Rows
			dirty.InvalidNHSNumbers.ByTable[table] += f.InvalidNHSNumbers
			dirty.DuplicateRows.ByTable[table] += f.DuplicateRows
			dirty.EventsAfterDeath.ByTable[table] += f.EventsAfterDeath
		}
		sum.Bytes += res.bytes
	}
	for p, pr := range t.practices {
		res := results[p]
		s := Site{ODS: pr.ods, Name: pr.name, Kind: cdm.KindGP, RegisteredPopulation: res.registered}
		for _, id := range pr.trusts {
			s.Trusts = append(s.Trusts, t.trusts[t.trustPos[id]].ods)
		}
		addFiles(&s, res)
		sum.Patients += int64(res.cohort)
		sum.RegisteredPopulation += int64(res.registered)
		n.Sites = append(n.Sites, s)
	}
	for k, tr := range t.trusts {
		s := Site{ODS: tr.ods, Name: tr.name, Kind: cdm.KindTrust, CatchmentPopulation: tr.catchment}
		for _, p := range tr.practices {
			s.Practices = append(s.Practices, t.practices[p].ods)
		}
		addFiles(&s, results[len(t.practices)+k])
		n.Sites = append(n.Sites, s)
	}
	for _, d := range []*Defect{&dirty.InvalidNHSNumbers, &dirty.DuplicateRows, &dirty.EventsAfterDeath} {
		for table, c := range d.ByTable {
			if c == 0 {
				delete(d.ByTable, table)
			}
			d.Total += c
		}
	}
	n.DirtyData = dirty
	return n, sum
}

// writeNDOP writes the national data opt-out list: every practice's home
// patients who opted out, sorted.
func writeNDOP(out string, gps []siteResult) (rows, size int64, err error) {
	var all []uint64
	for _, res := range gps {
		all = append(all, res.ndop...)
	}
	slices.Sort(all)
	file := filepath.Join(out, filepath.FromSlash(NDOPFile))
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return 0, 0, fmt.Errorf("write %s: %w", NDOPFile, err)
	}
	f, err := os.Create(file)
	if err != nil {
		return 0, 0, fmt.Errorf("write %s: %w", NDOPFile, err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(cdm.ColNHSNumber + "\n")
	size = int64(len(cdm.ColNHSNumber) + 1)
	var line []byte
	for _, v := range all {
		line = append(appendPadded(line[:0], int(v), 10), '\n')
		w.Write(line)
		size += int64(len(line))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, 0, fmt.Errorf("write %s: %w", NDOPFile, err)
	}
	if err := f.Close(); err != nil {
		return 0, 0, fmt.Errorf("write %s: %w", NDOPFile, err)
	}
	return int64(len(all)), size, nil
}

// prepareOut makes sure dir exists and holds no network: an absent or
// empty directory is fine; otherwise force must be set, and then only what
// Generate writes is removed.
func prepareOut(dir string, force bool) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create output directory: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("output directory: %w", err)
	case len(entries) == 0:
		return nil
	case !force:
		return fmt.Errorf("output directory %s is not empty: use --force to replace the network in it", dir)
	}
	// network.yaml first, so that an interrupted removal never leaves a
	// network.yaml describing files that are gone.
	for _, name := range []string{NetworkFile, NetworkFile + ".tmp", SitesDir, NationalDir} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("remove old network: %w", err)
		}
	}
	return nil
}
