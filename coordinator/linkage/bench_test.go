package linkage_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/duckdb/duckdb-go/v2"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/coordinator/linkage"
)

// ICB scale (DESIGN §12): 1.5M patients in the population at 150
// practices, 600k rows from 4 trusts, two thirds of them for patients in
// the population.
const (
	benchPractices   = 150
	benchPopulation  = 1_500_000
	benchTrusts      = 4
	benchTrustRows   = 600_000
	benchTrustBatch  = 65_536
	benchMatchedPart = 3 // one in benchMatchedPart trust rows is for a patient outside the population
)

// benchData is the uploads of one run, as records and as plain columns for
// DuckDB.
type benchData struct {
	batches []batchOf
	gpKeys  [][16]byte
	gpBand  []string
	gpSex   []string
	trKeys  [][16]byte
	trCount []int64
}

func makeBenchData(b *testing.B, f fixture) *benchData {
	rng := rand.New(rand.NewPCG(7, 7))
	mem := memory.NewGoAllocator()
	gpSchema, _ := f.plan.Schema(cdm.KindGP)
	trSchema, _ := f.plan.Schema(cdm.KindTrust)
	bands := []string{"0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89", "90+"}
	d := &benchData{}
	per := benchPopulation / benchPractices
	for p := range benchPractices {
		bld := array.NewRecordBuilder(mem, gpSchema)
		keys := bld.Field(0).(*array.FixedSizeBinaryBuilder)
		band := bld.Field(1).(*array.StringBuilder)
		sex := bld.Field(2).(*array.StringBuilder)
		for range per {
			k := pseudo(rng)
			bd, sx := bands[2+rng.IntN(8)], cdm.SexValues()[rng.IntN(2)]
			keys.Append(k[:])
			band.Append(bd)
			sex.Append(sx)
			d.gpKeys, d.gpBand, d.gpSex = append(d.gpKeys, k), append(d.gpBand, bd), append(d.gpSex, sx)
		}
		d.batches = append(d.batches, batchOf{linkage.Site{ODS: fmt.Sprintf("P%05d", p), Kind: cdm.KindGP}, bld.NewRecord()})
		bld.Release()
	}
	perTrust := benchTrustRows / benchTrusts
	for t := range benchTrusts {
		// Each trust sends each patient once; different trusts may send
		// the same patient.
		seen := map[[16]byte]bool{}
		site := linkage.Site{ODS: fmt.Sprintf("R%02d", t), Kind: cdm.KindTrust}
		for done := 0; done < perTrust; {
			bld := array.NewRecordBuilder(mem, trSchema)
			keys := bld.Field(0).(*array.FixedSizeBinaryBuilder)
			count := bld.Field(1).(*array.Int64Builder)
			n := min(benchTrustBatch, perTrust-done)
			for i := 0; i < n; {
				var k [16]byte
				if rng.IntN(benchMatchedPart) == 0 {
					k = pseudo(rng)
				} else {
					k = d.gpKeys[rng.IntN(len(d.gpKeys))]
				}
				if seen[k] {
					continue
				}
				seen[k] = true
				c := int64(1 + rng.IntN(4))
				keys.Append(k[:])
				count.Append(c)
				d.trKeys, d.trCount = append(d.trKeys, k), append(d.trCount, c)
				i++
			}
			d.batches = append(d.batches, batchOf{site, bld.NewRecord()})
			bld.Release()
			done += n
		}
	}
	// Uploads arrive interleaved.
	rng.Shuffle(len(d.batches), func(i, j int) { d.batches[i], d.batches[j] = d.batches[j], d.batches[i] })
	return d
}

// heapPeak samples the heap in use until stop is closed.
type heapPeak struct {
	stop chan struct{}
	done chan uint64
}

func startHeapPeak() *heapPeak {
	h := &heapPeak{stop: make(chan struct{}), done: make(chan uint64)}
	go func() {
		samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
		var peak uint64
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(samples)
			peak = max(peak, samples[0].Value.Uint64()+samples[1].Value.Uint64())
			select {
			case <-h.stop:
				h.done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heapPeak) end() uint64 {
	close(h.stop)
	return <-h.done
}

// cpuTime is the CPU time the process has used, user and system: less
// sensitive than wall time to other work on shared cores.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resetPeakRSS resets the kernel's high-water mark of the process's
// resident memory; peakRSS reads it. Both report false where /proc does
// not allow it.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

func peakRSS() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// BenchmarkLink links ICB-scale uploads for t2dm-emergency-admissions
// with Haven and runs the same join and group-by in DuckDB over the same
// rows (loaded beforehand; only the query is timed), side by side. Run it
// with -cpu 2 for the DESIGN target.
//
// Metrics: haven-s and duckdb-s (wall) per run, their ratio, the CPU
// time each used (haven-cpu-s, duckdb-cpu-s; the process's user and
// system time, so the garbage collector counts for Haven), Haven's peak
// heap and bytes allocated per run, and each one's peak RSS during its
// timed part (the whole process, the loaded input included).
func BenchmarkLink(b *testing.B) {
	if testing.Short() {
		b.Skip("ICB-scale benchmark")
	}
	f := newFixture(b, loadCatalog(b), "t2dm-emergency-admissions")
	data := makeBenchData(b, f)
	defer release(data.batches)
	db, conn := loadDuckDB(b, data)
	defer db.Close()
	defer conn.Close()
	// DuckDB has its copy; drop the Go one so that it does not weigh on
	// Haven's garbage collections.
	data.gpKeys, data.gpBand, data.gpSex, data.trKeys, data.trCount = nil, nil, nil, nil, nil

	for _, tc := range []struct {
		name string
		opts linkage.Options
	}{
		{"default", linkage.Options{}},
		{"expected-patients", linkage.Options{ExpectedPatients: benchPopulation + benchTrustRows/benchMatchedPart}},
	} {
		b.Run(tc.name, func(b *testing.B) { benchLink(b, f, data, conn, tc.opts) })
	}
}

func benchLink(b *testing.B, f fixture, data *benchData, conn *sql.Conn, opts linkage.Options) {
	ctx := context.Background()
	var havenTime, duckTime, havenCPU, duckCPU time.Duration
	var peakHeap, alloc, havenRSS, duckRSS uint64
	var havenCells, duckCells int
	b.ResetTimer()
	for b.Loop() {
		debug.FreeOSMemory()
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		rss := resetPeakRSS()
		peak := startHeapPeak()
		start, cpu := time.Now(), cpuTime()
		tab, st := linkOnce(b, f, data.batches, opts)
		havenTime += time.Since(start)
		havenCPU += cpuTime() - cpu
		peakHeap = max(peakHeap, peak.end())
		runtime.ReadMemStats(&ms1)
		alloc += ms1.TotalAlloc - ms0.TotalAlloc
		if p, ok := peakRSS(); ok && rss {
			havenRSS = max(havenRSS, p)
		}
		havenCells = len(tab.Cells)
		if st.Population != benchPopulation || st.TrustRows != benchTrustRows {
			b.Fatalf("stats = %+v", st)
		}

		debug.FreeOSMemory()
		rss = resetPeakRSS()
		start, cpu = time.Now(), cpuTime()
		duckCells = duckQuery(b, ctx, conn, tab)
		duckTime += time.Since(start)
		duckCPU += cpuTime() - cpu
		if p, ok := peakRSS(); ok && rss {
			duckRSS = max(duckRSS, p)
		}
	}
	if havenCells != duckCells {
		b.Fatalf("Haven made %d cells, DuckDB %d", havenCells, duckCells)
	}
	n := float64(b.N)
	b.ReportMetric(havenTime.Seconds()/n, "haven-s")
	b.ReportMetric(duckTime.Seconds()/n, "duckdb-s")
	b.ReportMetric(havenTime.Seconds()/duckTime.Seconds(), "haven/duckdb")
	b.ReportMetric(havenCPU.Seconds()/n, "haven-cpu-s")
	b.ReportMetric(duckCPU.Seconds()/n, "duckdb-cpu-s")
	b.ReportMetric(float64(peakHeap)/(1<<20), "haven-peak-heap-MiB")
	b.ReportMetric(float64(alloc)/n/(1<<20), "haven-alloc-MiB")
	if havenRSS > 0 {
		b.ReportMetric(float64(havenRSS)/(1<<20), "haven-peak-rss-MiB")
		b.ReportMetric(float64(duckRSS)/(1<<20), "duckdb-peak-rss-MiB")
	}
}

// linkOnce runs one linkage: uploads arrive from several sites at once.
func linkOnce(b *testing.B, f fixture, batches []batchOf, opts linkage.Options) (disclosure.Table, linkage.Stats) {
	r, err := linkage.New(f.plan, f.def, f.bound, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	work := make(chan batchOf)
	var wg sync.WaitGroup
	var failed sync.Once
	var addErr error
	for range 4 {
		wg.Go(func() {
			for bt := range work {
				if err := r.Add(context.Background(), bt.site, bt.rec); err != nil {
					failed.Do(func() { addErr = err })
				}
			}
		})
	}
	for _, bt := range batches {
		work <- bt
	}
	close(work)
	wg.Wait()
	if addErr != nil {
		b.Fatal(addErr)
	}
	tab, st, err := r.Table(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return tab, st
}

// loadDuckDB loads the benchmark's rows into an in-memory DuckDB with the
// appender, pseudonyms as BLOBs, the type Arrow's fixed_size_binary maps to.
func loadDuckDB(b *testing.B, d *benchData) (*sql.DB, *sql.Conn) {
	ctx := context.Background()
	connector, err := duckdb.NewConnector("", nil)
	if err != nil {
		b.Fatal(err)
	}
	db := sql.OpenDB(connector)
	conn, err := db.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, q := range []string{
		fmt.Sprintf("SET threads = %d", runtime.GOMAXPROCS(0)),
		"CREATE TABLE gp (pseudonym BLOB NOT NULL, age_band VARCHAR NOT NULL, sex VARCHAR NOT NULL)",
		"CREATE TABLE trust (pseudonym BLOB NOT NULL, emergency_admissions BIGINT NOT NULL)",
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	err = conn.Raw(func(dc any) error {
		gp, err := duckdb.NewAppenderFromConn(dc.(driver.Conn), "", "gp")
		if err != nil {
			return err
		}
		for i, k := range d.gpKeys {
			if err := gp.AppendRow(k[:], d.gpBand[i], d.gpSex[i]); err != nil {
				return err
			}
		}
		if err := gp.Close(); err != nil {
			return err
		}
		tr, err := duckdb.NewAppenderFromConn(dc.(driver.Conn), "", "trust")
		if err != nil {
			return err
		}
		for i, k := range d.trKeys {
			if err := tr.AppendRow(k[:], d.trCount[i]); err != nil {
				return err
			}
		}
		return tr.Close()
	})
	if err != nil {
		b.Fatalf("load DuckDB: %v", err)
	}
	return db, conn
}

// duckQuery is the same computation as Haven's: sum each patient's
// admissions across trusts, join to the population, and aggregate with the
// same measures (count, count where, sum with its non-zero contributors
// and top 3). It checks the result against Haven's table.
func duckQuery(b *testing.B, ctx context.Context, conn *sql.Conn, want disclosure.Table) int {
	const q = `
WITH h AS (SELECT pseudonym, sum(emergency_admissions) AS ea FROM trust GROUP BY pseudonym)
SELECT g.age_band, g.sex,
       count(*) AS patients,
       count(*) FILTER (WHERE h.ea > 0) AS admitted,
       coalesce(sum(h.ea), 0) AS admissions,
       count(*) FILTER (WHERE h.ea <> 0) AS contributors,
       max(h.ea, 3) AS top
FROM gp g LEFT JOIN h USING (pseudonym)
GROUP BY g.age_band, g.sex`
	rows, err := conn.QueryContext(ctx, q)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	byKey := map[string]disclosure.Cell{}
	for _, c := range want.Cells {
		byKey[strings.Join(c.Key, "|")] = c
	}
	n := 0
	for rows.Next() {
		var band, sex string
		var patients, admitted, contributors int64
		var admissions float64
		var top any
		if err := rows.Scan(&band, &sex, &patients, &admitted, &admissions, &contributors, &top); err != nil {
			b.Fatal(err)
		}
		n++
		c, ok := byKey[band+"|"+sex]
		if !ok || c.Values[0].Count != patients || c.Values[1].Count != admitted || c.Values[2].Sum != admissions || c.Values[2].N != contributors {
			b.Fatalf("DuckDB cell %s|%s = %d %d %v %d; Haven %+v", band, sex, patients, admitted, admissions, contributors, c)
		}
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkSpill links the ICB-scale uploads of BenchmarkLink with no
// memory budget and with one of half the table's memory, which spills
// about half the partitions, side by side on the same partitions: ns/op
// and B/op are the cost of spilling (cpu-s, the process's CPU time, is
// steadier than ns/op on a shared machine), spilled-MiB and
// spilled-partitions what was written, peak-heap-MiB the memory held.
func BenchmarkSpill(b *testing.B) {
	if testing.Short() {
		b.Skip("ICB-scale benchmark")
	}
	f := newFixture(b, loadCatalog(b), "t2dm-emergency-admissions")
	data := makeBenchData(b, f)
	defer release(data.batches)
	data.gpKeys, data.gpBand, data.gpSex, data.trKeys, data.trCount = nil, nil, nil, nil, nil
	const parts = 64
	want, st := linkOnce(b, f, data.batches, linkage.Options{Partitions: parts})
	dir := b.TempDir()
	for _, tc := range []struct {
		name   string
		budget int64
	}{
		{"no-budget", 0},
		{"half-spilled", st.MemoryBytes / 2},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var peakHeap uint64
			var cpu time.Duration
			var spilled linkage.Stats
			for b.Loop() {
				debug.FreeOSMemory()
				peak := startHeapPeak()
				cpu0 := cpuTime()
				tab, st := linkOnce(b, f, data.batches, linkage.Options{Partitions: parts, MemoryBudget: tc.budget, SpillDir: dir})
				cpu += cpuTime() - cpu0
				peakHeap = max(peakHeap, peak.end())
				if len(tab.Cells) != len(want.Cells) {
					b.Fatalf("%d cells; want %d", len(tab.Cells), len(want.Cells))
				}
				spilled = st
			}
			b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s")
			b.ReportMetric(float64(spilled.SpilledBytes)/(1<<20), "spilled-MiB")
			b.ReportMetric(float64(spilled.SpilledPartitions), "spilled-partitions")
			b.ReportMetric(float64(tc.budget)/(1<<20), "budget-MiB")
			b.ReportMetric(float64(st.MemoryBytes)/(1<<20), "table-MiB")
		})
	}
}
