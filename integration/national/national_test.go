// Package national runs the national simulation (demo/national) as a
// benchmark, with every released table checked cell by cell against the
// central answer (integration/releasecheck). It has benchmarks only
// (make bench-national); see BenchmarkNationalLinks.
package national

import (
	"cmp"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/demo/national"
	"github.com/havenhealth/haven/integration/releasecheck"
	"github.com/havenhealth/haven/internal/testutil"
	"github.com/havenhealth/haven/release"
)

// BenchmarkNationalLinks runs the national simulation: HAVEN_NATIONAL_GPS
// practices (default 6,500) and HAVEN_NATIONAL_TRUSTS trusts (default 230)
// linked to one coordinator process at each scale of
// HAVEN_NATIONAL_SCALES (patients, e.g. "1.5M,6M,15M,60M"; default 1.5M),
// and prints its table (see national.Run). HAVEN_NATIONAL_BUDGET sets the
// coordinator's linkage memory budget, HAVEN_NATIONAL_PROFILES a directory
// for its profiles at the last scale, HAVEN_NATIONAL_DIALS and
// HAVEN_NATIONAL_JITTER how the sites dial; HAVEN_NATIONAL_FAULTS=0 skips
// the fault run, whose deadline is HAVEN_NATIONAL_FAULT_DEADLINE.
//
// Run it with -benchtime 1x.
func BenchmarkNationalLinks(b *testing.B) {
	scales, err := national.ParseScales(cmp.Or(strings.TrimSpace(os.Getenv("HAVEN_NATIONAL_SCALES")), "1.5M"))
	if err != nil {
		b.Fatalf("HAVEN_NATIONAL_SCALES: %v", err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		b.Fatal(err)
	}
	opts := national.Options{
		Haven:         buildHaven(b, root),
		BundleSource:  filepath.Join(root, "policy", "bundle"),
		Dir:           b.TempDir(),
		Practices:     testutil.EnvInt(b, "HAVEN_NATIONAL_GPS", 6500, 20),
		Trusts:        testutil.EnvInt(b, "HAVEN_NATIONAL_TRUSTS", 230, 1),
		Scales:        scales,
		Seed:          1,
		Budget:        os.Getenv("HAVEN_NATIONAL_BUDGET"),
		MemoryLimit:   os.Getenv("HAVEN_NATIONAL_MEMORY_LIMIT"),
		Dials:         testutil.EnvInt(b, "HAVEN_NATIONAL_DIALS", 256, 1),
		Jitter:        testutil.EnvDuration(b, "HAVEN_NATIONAL_JITTER", 10*time.Second),
		Idle:          true,
		Profiles:      os.Getenv("HAVEN_NATIONAL_PROFILES"),
		Faults:        os.Getenv("HAVEN_NATIONAL_FAULTS") != "0",
		FaultDeadline: testutil.EnvDuration(b, "HAVEN_NATIONAL_FAULT_DEADLINE", 3*time.Minute),
		Check:         checkTable,
		Progress:      os.Stderr,
	}
	ctx, cancel := context.WithTimeout(b.Context(), 115*time.Minute)
	defer cancel()
	rep, err := national.Run(ctx, opts)
	if rep != nil {
		rep.Print(os.Stdout)
	}
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range rep.Scales {
		b.ReportMetric(s.Linkage.Seconds(), "s/linkage-"+national.ScaleName(s.Patients))
	}
	if i := rep.Idle; i != nil {
		b.ReportMetric(float64(i.RSSIdle-i.RSSBefore)/float64(opts.Practices+opts.Trusts)/1024, "KiB/link")
	}
	b.ReportMetric(rep.Scales[0].Register.Seconds(), "s/register")
}

// checkTable checks every cell of a released table against the central
// answer, as disclosure control releases it.
func checkTable(tab *release.Table, truth national.Truth) []string {
	tt := releasecheck.TrueTable{}
	for k, c := range truth {
		cell := tt.Cell(k[0], k[1])
		for name, v := range c.Values {
			cell.Add(name, v, false)
			cell.N[name] += c.N[name]
		}
	}
	st, problems := releasecheck.Check(tab, tt, nil, nil)
	if st.Problems == 0 && st.Cells == 0 {
		problems = append(problems, "no cells checked")
	}
	return problems
}

// buildHaven builds the haven binary into a temporary directory.
func buildHaven(b *testing.B, root string) string {
	b.Helper()
	dir := b.TempDir()
	cmd := exec.Command("go", "build", "-o", dir, "./cmd/haven")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build haven: %v\n%s", err, out)
	}
	return filepath.Join(dir, "haven")
}
