package synth

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"

	"github.com/havenhealth/haven/cdm"
)

// treeFiles returns every regular file under dir by slash path.
func treeFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestGenerateIsDeterministic(t *testing.T) {
	ctx := context.Background()
	var trees []map[string][]byte
	for _, workers := range []int{1, 3} {
		out := filepath.Join(t.TempDir(), "net")
		if _, err := Generate(ctx, Config{Out: out, Scale: ScaleSmall, Seed: 42, Sites: 4, Workers: workers}); err != nil {
			t.Fatalf("workers %d: %v", workers, err)
		}
		trees = append(trees, treeFiles(t, out))
	}
	a, b := trees[0], trees[1]
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("runs wrote %d and %d files", len(a), len(b))
	}
	for name, data := range a {
		if !bytes.Equal(data, b[name]) {
			t.Errorf("%s differs between 1 and 3 workers", name)
		}
	}

	// Another seed gives another network.
	out := filepath.Join(t.TempDir(), "net")
	if _, err := Generate(ctx, Config{Out: out, Scale: ScaleSmall, Seed: 43, Sites: 4}); err != nil {
		t.Fatal(err)
	}
	c := treeFiles(t, out)
	if bytes.Equal(a[NDOPFile], c[NDOPFile]) {
		t.Error("seeds 42 and 43 wrote the same opt-out list")
	}
}

func TestSmallNetworkShape(t *testing.T) {
	n := loadSmall(t)
	if n.Scale != ScaleSmall || n.Seed != 1 || n.CDMVersion != cdm.Version {
		t.Errorf("network header: scale %s seed %d cdm %d", n.Scale, n.Seed, n.CDMVersion)
	}
	if got, want := n.ReferenceDate.String(), "2026-03-31"; got != want {
		t.Errorf("reference date %s, want %s", got, want)
	}
	gps, trusts := n.SitesOfKind(cdm.KindGP), n.SitesOfKind(cdm.KindTrust)
	if len(gps) != 8 || len(trusts) != 2 {
		t.Fatalf("%d practices and %d trusts, want 8 and 2", len(gps), len(trusts))
	}
	pop := 0
	for _, s := range gps {
		pop += s.RegisteredPopulation
	}
	if pop < 40_000 || pop > 60_000 {
		t.Errorf("registered population %d, want 40k–60k", pop)
	}

	for _, s := range n.Sites {
		var want []string
		for _, tb := range cdm.TablesFor(s.Kind) {
			want = append(want, tb.Name)
		}
		var got []string
		for table := range s.Files {
			got = append(got, table)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s (%s) has files for %v, want %v", s.ODS, s.Kind, got, want)
		}
		entries, err := os.ReadDir(n.Path(filepath.ToSlash(filepath.Join(SitesDir, s.ODS))))
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != len(want) {
			t.Errorf("%s: directory holds %d files, want %d", s.ODS, len(entries), len(want))
		}
		for table, f := range s.Files {
			tbl := readSiteTable(t, n, s, table)
			wantSchema := mustTable(t, table).Schema()
			if got := parquetSchema(t, n.Path(f.Path)); !sameSchema(got, wantSchema) {
				t.Errorf("%s %s: schema\n%s\nwant\n%s", s.ODS, table, got, wantSchema)
			}
			if tbl.NumRows() != f.Rows {
				t.Errorf("%s %s: %d rows, network.yaml says %d", s.ODS, table, tbl.NumRows(), f.Rows)
			}
			if f.Rows == 0 {
				t.Errorf("%s %s: empty", s.ODS, table)
			}
		}
	}
	// A practice uses the trusts it lists, and a trust serves the practices it lists.
	for _, s := range gps {
		for _, ods := range s.Trusts {
			tr, _ := n.Site(ods)
			if !slices.Contains(tr.Practices, s.ODS) {
				t.Errorf("%s lists trust %s, which does not list it", s.ODS, ods)
			}
		}
	}
}

func mustTable(t testing.TB, name string) cdm.Table {
	t.Helper()
	tb, ok := cdm.Lookup(name)
	if !ok {
		t.Fatalf("no CDM table %s", name)
	}
	return tb
}

// gpView is what the practices of a network hold, merged.
type gpView struct {
	patients   map[string]bool // NHS numbers of every GP patient (registration rows are never spoilt)
	registered map[string]bool // registered on the reference date
	adults     map[string]bool // registered and 18 or over on the reference date
	regs       map[string][]registrationRow
	death      map[string]day
}

func readGPs(t *testing.T, n *Network) gpView {
	t.Helper()
	v := gpView{patients: map[string]bool{}, registered: map[string]bool{}, adults: map[string]bool{},
		regs: map[string][]registrationRow{}, death: map[string]day{}}
	birth := map[string]day{}
	for _, s := range n.SitesOfKind(cdm.KindGP) {
		pt := readSiteTable(t, n, s, cdm.TablePatient)
		deaths := dates(t, pt, cdm.ColDateOfDeath)
		births := dates(t, pt, cdm.ColBirthDate)
		for i, nhs := range strs(t, pt, cdm.ColNHSNumber) {
			if cdm.ValidNHSNumber(nhs) {
				v.death[nhs] = deaths[i]
				birth[nhs] = births[i]
			}
		}
		rt := readSiteTable(t, n, s, cdm.TableRegistration)
		starts, ends := dates(t, rt, cdm.ColStartDate), dates(t, rt, cdm.ColEndDate)
		odss := strs(t, rt, cdm.ColPracticeODS)
		for i, nhs := range strs(t, rt, cdm.ColNHSNumber) {
			v.patients[nhs] = true
			v.regs[nhs] = append(v.regs[nhs], registrationRow{nhs: nhs, ods: odss[i], start: starts[i], end: ends[i]})
			if ends[i] == noDay {
				v.registered[nhs] = true
			}
		}
	}
	for nhs := range v.registered {
		if b, ok := birth[nhs]; ok && yearsBetween(b, referenceDay) >= 18 {
			v.adults[nhs] = true
		}
	}
	return v
}

func TestPrevalenceAndOptOuts(t *testing.T) {
	n := loadSmall(t)
	v := readGPs(t, n)

	t2dm, htn := map[string]bool{}, map[string]bool{}
	type1 := map[string]bool{}
	for _, s := range n.SitesOfKind(cdm.KindGP) {
		ev := readSiteTable(t, n, s, cdm.TableClinicalEvent)
		codes, when := strs(t, ev, cdm.ColSNOMEDCode), dates(t, ev, cdm.ColEventDate)
		values, null := floats(t, ev, cdm.ColNumericValue)
		for i, nhs := range strs(t, ev, cdm.ColNHSNumber) {
			if when[i] > referenceDay {
				t.Errorf("%s: event on %s, after the reference date", s.ODS, when[i])
			}
			switch codes[i] {
			case SNOMEDType2Diabetes:
				t2dm[nhs] = true
			case SNOMEDHypertension:
				htn[nhs] = true
			}
			switch codes[i] {
			case SNOMEDSystolicBP:
				if null[i] || values[i] < 85 || values[i] > 230 {
					t.Errorf("%s: systolic blood pressure %v (null %v)", s.ODS, values[i], null[i])
				}
			case SNOMEDHbA1c, SNOMEDBMI:
				if null[i] || values[i] <= 0 {
					t.Errorf("%s: %s value %v (null %v)", s.ODS, codes[i], values[i], null[i])
				}
			default:
				if !null[i] {
					t.Errorf("%s: %s carries value %v", s.ODS, codes[i], values[i])
				}
			}
		}
		oo := readSiteTable(t, n, s, cdm.TableOptOut)
		kinds := strs(t, oo, cdm.ColKind)
		for i, nhs := range strs(t, oo, cdm.ColNHSNumber) {
			if kinds[i] != cdm.OptOutType1 {
				t.Errorf("%s: opt_out kind %q in a GP's table", s.ODS, kinds[i])
			}
			type1[nhs] = true
		}
	}
	share := func(of map[string]bool, among map[string]bool) float64 {
		k := 0
		for nhs := range among {
			if of[nhs] {
				k++
			}
		}
		return float64(k) / float64(len(among))
	}
	ndop := readNDOP(t, n)
	checks := []struct {
		name   string
		got    float64
		lo, hi float64
	}{
		{"type 2 diabetes among registered adults", share(t2dm, v.adults), 0.05, 0.09},
		{"hypertension among registered patients", share(htn, v.registered), 0.11, 0.18},
		{"type 1 opt-out among patients", share(type1, v.patients), 0.02, 0.04},
		{"national opt-out among patients", float64(len(ndop)) / float64(len(v.patients)), 0.04, 0.06},
	}
	for _, c := range checks {
		t.Logf("%s: %.2f%%", c.name, 100*c.got)
		if c.got < c.lo || c.got > c.hi {
			t.Errorf("%s %.2f%%, want %.0f%%–%.0f%%", c.name, 100*c.got, 100*c.lo, 100*c.hi)
		}
	}
	both := 0
	for _, nhs := range ndop {
		if !v.patients[nhs] {
			t.Errorf("national opt-out %s is no GP's patient", nhs)
			break
		}
		if type1[nhs] {
			both++
		}
	}
	if both == 0 {
		t.Error("no patient has both a type 1 and a national opt-out")
	}
}

// readNDOP reads the national opt-out list and checks its form.
func readNDOP(t *testing.T, n *Network) []string {
	t.Helper()
	f, err := os.Open(n.Path(n.NationalOptOut.Path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() || sc.Text() != cdm.ColNHSNumber {
		t.Fatalf("ndop.csv header %q, want %q", sc.Text(), cdm.ColNHSNumber)
	}
	var out []string
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	if int64(len(out)) != n.NationalOptOut.Rows {
		t.Errorf("ndop.csv has %d numbers, network.yaml says %d", len(out), n.NationalOptOut.Rows)
	}
	if !slices.IsSorted(out) {
		t.Error("ndop.csv is not sorted")
	}
	for _, nhs := range out {
		if !cdm.ValidNHSNumber(nhs) {
			t.Fatalf("ndop.csv holds invalid number %q", nhs)
		}
	}
	return out
}

func TestDirtyDataIsCounted(t *testing.T) {
	n := loadSmall(t)
	v := readGPs(t, n)
	invalid, dups, late := map[string]int64{}, map[string]int64{}, map[string]int64{}
	for _, s := range n.Sites {
		for table, f := range s.Files {
			tbl := readSiteTable(t, n, s, table)
			nhs := strs(t, tbl, cdm.ColNHSNumber)
			bad := int64(0)
			for _, x := range nhs {
				if !cdm.ValidNHSNumber(x) {
					bad++
				}
			}
			if bad != f.InvalidNHSNumbers {
				t.Errorf("%s %s: %d invalid NHS numbers, network.yaml says %d", s.ODS, table, bad, f.InvalidNHSNumbers)
			}
			invalid[table] += bad
			if f.DuplicateRows > 0 {
				dups[table] += countExactDuplicates(t, tbl)
			}
			late[table] += countAfterDeath(t, tbl, table, v.death)
		}
	}
	dd := n.DirtyData
	var total int64
	for table, c := range invalid {
		total += c
		if c != dd.InvalidNHSNumbers.ByTable[table] {
			t.Errorf("%s: %d invalid NHS numbers, dirty_data says %d", table, c, dd.InvalidNHSNumbers.ByTable[table])
		}
	}
	if total == 0 || total != dd.InvalidNHSNumbers.Total {
		t.Errorf("%d invalid NHS numbers in all, dirty_data total %d", total, dd.InvalidNHSNumbers.Total)
	}
	for _, table := range []string{cdm.TablePatient, cdm.TableClinicalEvent, cdm.TableMedication, cdm.TableAPCEpisode, cdm.TableAEAttendance} {
		if invalid[table] == 0 {
			t.Errorf("%s has no invalid NHS numbers", table)
		}
	}
	// Exact duplicates can also arise by chance (two equal readings on one
	// day), so the deliberate ones are a lower bound.
	if dd.DuplicateRows.Total == 0 {
		t.Error("no duplicate rows documented")
	}
	for table, c := range dd.DuplicateRows.ByTable {
		if dups[table] < c {
			t.Errorf("%s: %d exact duplicate rows found, dirty_data says %d", table, dups[table], c)
		}
	}
	// Late rows whose NHS number was also spoilt cannot be joined to
	// their patient, so a few may go unseen.
	if dd.EventsAfterDeath.Total == 0 {
		t.Error("no events after death documented")
	}
	for table, c := range dd.EventsAfterDeath.ByTable {
		if late[table] > c || late[table] < c-2 {
			t.Errorf("%s: %d rows after death found, dirty_data says %d", table, late[table], c)
		}
	}
	for table, c := range late {
		if c > 0 && dd.EventsAfterDeath.ByTable[table] == 0 {
			t.Errorf("%s: %d undocumented rows after death", table, c)
		}
	}
}

// countExactDuplicates counts rows equal in every column to an earlier row.
func countExactDuplicates(t *testing.T, tbl arrow.Table) int64 {
	t.Helper()
	keys := make([][]byte, tbl.NumRows())
	for c := range int(tbl.NumCols()) {
		row := 0
		for _, chunk := range tbl.Column(c).Data().Chunks() {
			for i := range chunk.Len() {
				k := append(keys[row], 0)
				switch {
				case chunk.IsNull(i):
					k = append(k, 1)
				default:
					k = append(k, chunk.ValueStr(i)...)
				}
				keys[row] = k
				row++
			}
		}
	}
	seen := make(map[string]bool, len(keys))
	var dups int64
	for _, k := range keys {
		if seen[string(k)] {
			dups++
		}
		seen[string(k)] = true
	}
	return dups
}

// countAfterDeath counts rows of an activity table dated after their
// patient's death.
func countAfterDeath(t *testing.T, tbl arrow.Table, table string, death map[string]day) int64 {
	t.Helper()
	col := map[string]string{
		cdm.TableClinicalEvent: cdm.ColEventDate,
		cdm.TableMedication:    cdm.ColIssueDate,
		cdm.TableAPCEpisode:    cdm.ColAdmissionDate,
		cdm.TableAEAttendance:  cdm.ColArrivalDate,
	}[table]
	if col == "" {
		return 0
	}
	when := dates(t, tbl, col)
	var n int64
	for i, nhs := range strs(t, tbl, cdm.ColNHSNumber) {
		if d, ok := death[nhs]; ok && d != noDay && when[i] > d {
			n++
		}
	}
	return n
}

func TestMoversAndTrusts(t *testing.T) {
	n := loadSmall(t)
	v := readGPs(t, n)

	movers := 0
	for nhs, regs := range v.regs {
		if len(regs) < 2 {
			continue
		}
		if len(regs) > 2 {
			t.Errorf("%s registered %d times", nhs, len(regs))
			continue
		}
		slices.SortFunc(regs, func(a, b registrationRow) int { return int(a.start - b.start) })
		old, cur := regs[0], regs[1]
		if old.ods == cur.ods {
			t.Errorf("%s registered twice at %s", nhs, old.ods)
		}
		if old.end == noDay || old.end >= cur.start {
			t.Errorf("%s: registration at %s (%s–%s) overlaps %s from %s", nhs, old.ods, old.start, old.end, cur.ods, cur.start)
		}
		movers++
	}
	t.Logf("%d movers", movers)
	if movers == 0 {
		t.Error("no patient moved practice")
	}

	trustsOf := map[string]map[string]bool{}
	type stay struct {
		trust      string
		in, out    day
		emergency  bool
		hasOutDate bool
	}
	stays := map[string][]stay{}
	for _, s := range n.SitesOfKind(cdm.KindTrust) {
		pt := readSiteTable(t, n, s, cdm.TablePatient)
		for _, nhs := range strs(t, pt, cdm.ColNHSNumber) {
			if !cdm.ValidNHSNumber(nhs) {
				continue
			}
			if !v.patients[nhs] {
				t.Errorf("%s: patient %s is no GP's patient", s.ODS, nhs)
			}
			if trustsOf[nhs] == nil {
				trustsOf[nhs] = map[string]bool{}
			}
			trustsOf[nhs][s.ODS] = true
		}
		ep := readSiteTable(t, n, s, cdm.TableAPCEpisode)
		ids := strs(t, ep, cdm.ColEpisodeID)
		seen := map[string]bool{}
		for _, id := range ids {
			if seen[id] {
				t.Errorf("%s: episode id %s repeated", s.ODS, id)
			}
			seen[id] = true
		}
		in, out := dates(t, ep, cdm.ColAdmissionDate), dates(t, ep, cdm.ColDischargeDate)
		methods, dx := strs(t, ep, cdm.ColAdmissionMethod), strs(t, ep, cdm.ColPrimaryDiagnosis)
		procs := lists(t, ep, cdm.ColProcedures)
		withProcs := 0
		for i, nhs := range strs(t, ep, cdm.ColNHSNumber) {
			if !cdm.ValidAdmissionMethod(methods[i]) {
				t.Errorf("%s: admission method %q", s.ODS, methods[i])
			}
			if (methods[i] == cdm.AdmissionMaternity) != strings.HasPrefix(dx[i], "O") {
				t.Errorf("%s: %s admission with diagnosis %s", s.ODS, methods[i], dx[i])
			}
			if out[i] != noDay && out[i] < in[i] {
				t.Errorf("%s: discharged %s before admission %s", s.ODS, out[i], in[i])
			}
			if len(procs[i]) > 0 {
				withProcs++
			}
			stays[nhs] = append(stays[nhs], stay{trust: s.ODS, in: in[i], out: out[i],
				emergency: methods[i] == cdm.AdmissionEmergency, hasOutDate: out[i] != noDay})
		}
		if withProcs == 0 || withProcs == len(ids) {
			t.Errorf("%s: %d of %d episodes have procedures; want some, not all", s.ODS, withProcs, len(ids))
		}
	}
	atTwo := 0
	for _, ts := range trustsOf {
		if len(ts) > 1 {
			atTwo++
		}
	}
	t.Logf("%d patients at two trusts", atTwo)
	if atTwo == 0 {
		t.Error("no patient attends two trusts")
	}

	readmits, across := 0, 0
	for _, ss := range stays {
		slices.SortFunc(ss, func(a, b stay) int { return int(a.in - b.in) })
		for k := 1; k < len(ss); k++ {
			prev, cur := ss[k-1], ss[k]
			if prev.hasOutDate && cur.emergency && cur.in > prev.out && cur.in-prev.out <= 30 {
				readmits++
				if cur.trust != prev.trust {
					across++
				}
			}
		}
	}
	t.Logf("%d emergency readmissions within 30 days, %d at the other trust", readmits, across)
	if readmits == 0 || across == 0 {
		t.Errorf("%d readmissions, %d across trusts; want some of both", readmits, across)
	}
}

func TestGenerateRefusesNonEmptyOut(t *testing.T) {
	ctx := context.Background()
	out := t.TempDir()
	mine := filepath.Join(out, "notes.txt")
	if err := os.WriteFile(mine, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Out: out, Scale: ScaleSmall, Seed: 1, Sites: 1}
	_, err := Generate(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("Generate into a non-empty directory: %v, want an error naming --force", err)
	}
	cfg.Force = true
	if _, err := Generate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// A stray file where synth writes goes; the user's file stays.
	stray := filepath.Join(out, SitesDir, "stray.txt")
	if err := os.WriteFile(stray, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stray); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stray file under sites/ survived --force: %v", err)
	}
	if b, err := os.ReadFile(mine); err != nil || string(b) != "mine" {
		t.Errorf("user file after --force: %q, %v", b, err)
	}
	if _, err := LoadNetwork(filepath.Join(out, NetworkFile)); err != nil {
		t.Error(err)
	}
}

func TestGenerateRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Scale: ScaleSmall}, "no output directory"},
		{Config{Out: "x", Scale: "county"}, "small, icb, national"},
		{Config{Out: "x", Scale: ScaleSmall, Sites: 9}, "only 8 practices"},
		{Config{Out: "x", Scale: ScaleSmall, Sites: -1}, "negative"},
		{Config{Out: "x", Scale: ScaleSmall, Workers: -2}, "negative"},
	} {
		t.Run(fmt.Sprint(tc.cfg), func(t *testing.T) {
			cfg := tc.cfg
			if cfg.Out != "" {
				cfg.Out = filepath.Join(t.TempDir(), cfg.Out)
			}
			_, err := Generate(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if cfg.Out != "" {
				if _, err := os.Stat(cfg.Out); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("bad config created %s", cfg.Out)
				}
			}
		})
	}
}

func TestGenerateHonoursCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := filepath.Join(t.TempDir(), "net")
	_, err := Generate(ctx, Config{Out: out, Scale: ScaleSmall, Seed: 1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(out, NetworkFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Error("a cancelled run wrote network.yaml")
	}
}

func TestGenerateReportsProgress(t *testing.T) {
	var calls []int
	total := 0
	cfg := Config{Out: filepath.Join(t.TempDir(), "net"), Scale: ScaleSmall, Seed: 3, Sites: 2, Workers: 2,
		Progress: func(done, n int) { calls = append(calls, done); total = n }}
	sum, err := Generate(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := sum.Practices + sum.Trusts
	if total != want || !slices.Equal(calls, []int{1, 2, 3}[:want]) {
		t.Errorf("progress calls %v of %d, want 1…%d", calls, total, want)
	}
}
