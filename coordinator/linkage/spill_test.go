package linkage_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/coordinator/linkage"
	"github.com/havenhealth/haven/policy/catalog"
)

// spillFiles lists the spill files in dir.
func spillFiles(t testing.TB, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "haven-linkage-*"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// shareRegistrations gives some rows of each practice the pseudonym of a
// row of the next practice, with the row's own values: two practices then
// register one patient with different values, which the smaller ODS code
// must win whatever the order and whether or not the rows were spilled.
func shareRegistrations(rng *rand.Rand, ups []upload) {
	var gps []int
	for i, u := range ups {
		if u.site.Kind == cdm.KindGP && len(u.rows) > 0 {
			gps = append(gps, i)
		}
	}
	for j, i := range gps {
		next := ups[gps[(j+1)%len(gps)]]
		if len(gps) < 2 {
			return
		}
		have := map[[16]byte]bool{}
		for _, r := range ups[i].rows {
			have[r[catalog.FieldNamePseudonym].([16]byte)] = true
		}
		for range len(ups[i].rows) / 20 {
			k := next.rows[rng.IntN(len(next.rows))][catalog.FieldNamePseudonym].([16]byte)
			if have[k] {
				continue
			}
			have[k] = true
			r := ups[i].rows[rng.IntN(len(ups[i].rows))]
			delete(have, r[catalog.FieldNamePseudonym].([16]byte))
			r[catalog.FieldNamePseudonym] = k
		}
	}
}

// TestSpillGivesTheSameTable links many random runs of every linkage
// definition with no budget, with a tiny one (every partition spills) and
// with a middling one (some do), in shuffled arrival orders, one batch at
// a time and from several goroutines: the tables and statistics must be
// identical, the spill files present while the run lives and gone after
// Close.
func TestSpillGivesTheSameTable(t *testing.T) {
	c := loadCatalog(t)
	seeds := 3
	if testing.Short() {
		seeds = 1
	}
	for _, d := range c.Definitions() {
		f := newFixture(t, c, d.ID)
		if f.plan.Mode != catalog.ModeLinkage {
			continue
		}
		for seed := range seeds {
			t.Run(d.ID, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(seed), seedOf(d.ID)))
				mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
				defer mem.AssertSize(t, 0)
				ups := genLinkage(rng, f, 3000)
				shareRegistrations(rng, ups)

				all := makeBatches(t, rng, mem, f, ups)
				defer release(all)
				link := func(opts linkage.Options, concurrent bool) (disclosure.Table, linkage.Stats, *linkage.Run) {
					bs := slices.Clone(all)
					rng.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
					r := f.newRun(t, opts)
					if !concurrent {
						addAll(t, r, bs)
					} else {
						linkage.SetParallelRows(r, 64)
						var wg sync.WaitGroup
						work := make(chan batchOf)
						errs := make(chan error, len(bs))
						for range 4 {
							wg.Go(func() {
								for b := range work {
									if err := r.Add(context.Background(), b.site, b.rec); err != nil {
										errs <- err
									}
								}
							})
						}
						for _, b := range bs {
							work <- b
						}
						close(work)
						wg.Wait()
						close(errs)
						for err := range errs {
							t.Fatalf("Add: %v", err)
						}
					}
					tab, st := tableOf(t, r)
					return tab, st, r
				}
				want, wantStats, _ := link(linkage.Options{Partitions: 4}, false)
				if wantStats.SpilledBytes != 0 || wantStats.SpilledPartitions != 0 {
					t.Fatalf("no budget, yet spilled: %+v", wantStats)
				}
				if _, gp := f.plan.Schema(cdm.KindGP); gp && wantStats.DuplicateRegistrations == 0 {
					t.Fatalf("no duplicate registration to test")
				}
				budgets := []struct {
					name       string
					budget     int64
					partitions int
					concurrent bool
				}{
					{"tiny", 4 << 10, 0, false},
					{"tiny concurrent", 4 << 10, 16, true},
					{"middle", wantStats.MemoryBytes / 2, 16, false},
					{"middle concurrent", wantStats.MemoryBytes / 2, 16, true},
				}
				for _, b := range budgets {
					dir := t.TempDir()
					got, st, r := link(linkage.Options{MemoryBudget: b.budget, SpillDir: dir, RunID: "run_x/1", Partitions: b.partitions}, b.concurrent)
					if !reflect.DeepEqual(got, want) {
						t.Errorf("%s budget: the table differs from the one in memory", b.name)
					}
					if st.SpilledBytes <= 0 || st.SpilledPartitions <= 0 {
						t.Errorf("%s budget: spilled %d bytes in %d partitions", b.name, st.SpilledBytes, st.SpilledPartitions)
					}
					if b.partitions > 0 && strings.HasPrefix(b.name, "middle") && st.SpilledPartitions >= b.partitions {
						t.Errorf("%s budget: all %d partitions spilled", b.name, st.SpilledPartitions)
					}
					// A second Table reads the files again and gives the same.
					again, st2 := tableOf(t, r)
					if !reflect.DeepEqual(again, want) || st2 != st {
						t.Errorf("%s budget: a second Table differs", b.name)
					}
					files := spillFiles(t, dir)
					if len(files) != st.SpilledPartitions {
						t.Errorf("%s budget: %d spill files for %d spilled partitions", b.name, len(files), st.SpilledPartitions)
					}
					for _, name := range files {
						fi, err := os.Stat(name)
						if err != nil {
							t.Fatal(err)
						}
						if fi.Mode().Perm() != 0o600 {
							t.Errorf("spill file %s has mode %v", name, fi.Mode())
						}
						if !strings.Contains(filepath.Base(name), "run_x_1") {
							t.Errorf("spill file %s is not named for the run", name)
						}
					}
					r.Close()
					if files := spillFiles(t, dir); len(files) > 0 {
						t.Errorf("%s budget: files left after Close: %v", b.name, files)
					}
					st.SpilledBytes, st.SpilledPartitions, st.MemoryBytes = 0, 0, 0
					ws := wantStats
					ws.MemoryBytes = 0
					if st != ws {
						t.Errorf("%s budget: stats = %+v; want %+v", b.name, st, ws)
					}
				}
			})
		}
	}
}

// TestSpillDuplicateAcrossBatches: a site that sends one pseudonym in two
// batches is refused by Apply while the partition is in memory; once it is
// spilled, Table finds the repeat when it reads the partition back, and
// fails the run with an error naming the site, removing the files.
func TestSpillDuplicateAcrossBatches(t *testing.T) {
	c := loadCatalog(t)
	f := newFixture(t, c, "t2dm-emergency-admissions")
	mem := memory.NewGoAllocator()
	gpSchema, _ := f.plan.Schema(cdm.KindGP)
	gp := linkage.Site{ODS: "A81001", Kind: cdm.KindGP}
	rng := rand.New(rand.NewPCG(1, 2))
	first := make([]row, 500)
	for i := range first {
		first[i] = row{"pseudonym": pseudo(rng), "age_band": "50-59", "sex": "M"}
	}
	second := []row{{"pseudonym": pseudo(rng), "age_band": "40-49", "sex": "F"}, first[123]}

	for _, tc := range []struct {
		name   string
		budget int64
	}{
		{"in memory", 0},
		{"spilled", 1 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := f.newRun(t, linkage.Options{MemoryBudget: tc.budget, SpillDir: dir})
			rec1, rec2 := buildRecord(t, mem, gpSchema, first), buildRecord(t, mem, gpSchema, second)
			defer rec1.Release()
			defer rec2.Release()
			if err := r.Add(context.Background(), gp, rec1); err != nil {
				t.Fatalf("first batch: %v", err)
			}
			err := r.Add(context.Background(), gp, rec2)
			if tc.budget == 0 {
				if err == nil || !strings.Contains(err.Error(), "earlier batch") {
					t.Fatalf("second batch: %v; want a refusal", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("second batch: %v (the partition should be spilled)", err)
			}
			if len(spillFiles(t, dir)) == 0 {
				t.Fatal("nothing spilled")
			}
			_, _, err = r.Table(context.Background())
			if !errors.Is(err, linkage.ErrBadBatch) || !strings.Contains(err.Error(), gp.ODS) || !strings.Contains(err.Error(), "two batches") {
				t.Fatalf("Table: %v; want the repeat, naming %s", err, gp.ODS)
			}
			if files := spillFiles(t, dir); len(files) > 0 {
				t.Errorf("files left after the failure: %v", files)
			}
			if _, _, err2 := r.Table(context.Background()); err2 == nil {
				t.Error("a second Table of the failed run succeeded")
			}
		})
	}
}

// TestSpillDirUnusable: a spill directory that does not take files fails
// New, naming it; one that goes away during the run fails the Apply that
// needs it and every later call, naming it too.
func TestSpillDirUnusable(t *testing.T) {
	c := loadCatalog(t)
	f := newFixture(t, c, "t2dm-emergency-admissions")
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(t.TempDir(), "missing"), file} {
		_, err := linkage.New(f.plan, f.def, f.bound, linkage.Options{MemoryBudget: 1, SpillDir: dir})
		if err == nil || !strings.Contains(err.Error(), dir) {
			t.Errorf("New with spill dir %s: %v; want an error naming it", dir, err)
		}
	}
	if _, err := linkage.New(f.plan, f.def, f.bound, linkage.Options{MemoryBudget: -1}); err == nil {
		t.Error("New with a negative budget succeeded")
	}

	dir := filepath.Join(t.TempDir(), "spill")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	r := f.newRun(t, linkage.Options{MemoryBudget: 1 << 10, SpillDir: dir})
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	mem := memory.NewGoAllocator()
	ups := genLinkage(rng, f, 500)
	bs := makeBatches(t, rng, mem, f, ups)
	defer release(bs)
	err := r.Add(context.Background(), bs[0].site, bs[0].rec)
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Add with the spill dir gone: %v; want an error naming it", err)
	}
	if err := r.Add(context.Background(), bs[1].site, bs[1].rec); err == nil {
		t.Error("Add after a failed spill succeeded")
	}
	if _, _, err := r.Table(context.Background()); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("Table after a failed spill: %v", err)
	}
}
