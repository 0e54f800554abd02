package coordinator_test

import (
	"cmp"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"google.golang.org/grpc"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/policy/ptable"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// testContext bounds a test so that a broken coordinator fails it instead
// of hanging it. It is a guard, not a timing assertion.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// analyst dials the network as a commissioner with a user certificate.
func analyst(n *coordinatortest.Network, id string, roles ...string) *grpc.ClientConn {
	if len(roles) == 0 {
		roles = []string{"analyst"}
	}
	cert, key := n.UserCert(id, "QHM", roles...)
	return n.Dial(cert, key)
}

func dateParam(s string) *havenv1.ParameterValue {
	return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_DateValue{DateValue: s}}
}

func intParam(v int64) *havenv1.ParameterValue {
	return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_IntValue{IntValue: v}}
}

func submit(t *testing.T, ctx context.Context, conn *grpc.ClientConn, def, purpose string, params map[string]*havenv1.ParameterValue) *havenv1.Run {
	t.Helper()
	resp, err := havenv1.NewCoordinatorClient(conn).SubmitRun(ctx, &havenv1.SubmitRunRequest{
		DefinitionId: def, Purpose: purpose, Parameters: params})
	if err != nil {
		t.Fatalf("SubmitRun %s: %v", def, err)
	}
	return resp.GetRun()
}

// watch follows a run to its final state and returns every event.
func watch(t *testing.T, ctx context.Context, conn *grpc.ClientConn, runID string) []*havenv1.RunEvent {
	t.Helper()
	stream, err := havenv1.NewCoordinatorClient(conn).WatchRun(ctx, &havenv1.WatchRunRequest{RunId: runID})
	if err != nil {
		t.Fatalf("WatchRun: %v", err)
	}
	var evs []*havenv1.RunEvent
	for {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("WatchRun %s after %d events: %v", runID, len(evs), err)
		}
		evs = append(evs, ev)
		if final(ev.GetRun().GetState()) {
			return evs
		}
	}
}

// watchUntil follows a run until cond holds of it and returns it then: a
// test waits on the run's own events rather than polling it.
func watchUntil(t *testing.T, ctx context.Context, conn *grpc.ClientConn, runID string, cond func(*havenv1.Run) bool) *havenv1.Run {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := havenv1.NewCoordinatorClient(conn).WatchRun(ctx, &havenv1.WatchRunRequest{RunId: runID})
	if err != nil {
		t.Fatalf("WatchRun: %v", err)
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("WatchRun %s: %v", runID, err)
		}
		if run := ev.GetRun(); cond(run) {
			return run
		}
		if final(ev.GetRun().GetState()) {
			t.Fatalf("run %s ended %s before the test's condition held: %v", runID, ev.GetRun().GetState(), ev.GetRun().GetCoverage().GetSites())
		}
	}
}

func final(s havenv1.RunState) bool {
	switch s {
	case havenv1.RunState_RUN_STATE_RELEASED, havenv1.RunState_RUN_STATE_REFUSED, havenv1.RunState_RUN_STATE_FAILED,
		havenv1.RunState_RUN_STATE_CANCELLED, havenv1.RunState_RUN_STATE_INTERRUPTED:
		return true
	}
	return false
}

// checkEvents checks the shape of a watch: a snapshot first, then events
// numbered without gaps.
func checkEvents(t *testing.T, evs []*havenv1.RunEvent) {
	t.Helper()
	if len(evs) == 0 || evs[0].GetKind() != havenv1.RunEventKind_RUN_EVENT_KIND_SNAPSHOT {
		t.Fatalf("first event is not a snapshot: %v", evs)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].GetSequence() != evs[i-1].GetSequence()+1 {
			t.Errorf("event %d has sequence %d after %d", i, evs[i].GetSequence(), evs[i-1].GetSequence())
		}
		if evs[i].GetKind() == havenv1.RunEventKind_RUN_EVENT_KIND_SNAPSHOT {
			t.Errorf("event %d is a second snapshot", i)
		}
	}
}

// fetch gets a run's released table with Flight DoGet.
func fetch(t *testing.T, ctx context.Context, conn *grpc.ClientConn, runID string) *release.Table {
	t.Helper()
	tkt, err := havenv1.NewTableTicket(runID)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := flight.NewFlightServiceClient(conn).DoGet(ctx, tkt)
	if err != nil {
		t.Fatalf("DoGet: %v", err)
	}
	rdr, err := flight.NewRecordReader(stream)
	if err != nil {
		t.Fatalf("DoGet %s: %v", runID, err)
	}
	defer rdr.Release()
	tab, err := release.Read(rdr)
	if err != nil {
		t.Fatalf("read table of %s: %v", runID, err)
	}
	return tab
}

// thresholds reads the bundle's default disclosure settings, as the
// policy would give them for a purpose with no overrides.
func thresholds(t *testing.T, n *coordinatortest.Network) disclosure.Thresholds {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.BundleDir, "data.json"))
	if err != nil {
		t.Fatal(err)
	}
	var data struct {
		Disclosure struct {
			MinCellCount int  `json:"min_cell_count"`
			RoundingBase int  `json:"rounding_base"`
			Attribute    bool `json:"attribute_disclosure"`
			Perturbation struct {
				Enabled bool   `json:"enabled"`
				Table   string `json:"table"`
			} `json:"perturbation"`
			Dominance struct {
				N int     `json:"n"`
				K float64 `json:"k"`
			} `json:"dominance"`
		} `json:"disclosure"`
	}
	if err := json.Unmarshal(b, &data); err != nil {
		t.Fatal(err)
	}
	d := data.Disclosure
	th := disclosure.Thresholds{MinCount: d.MinCellCount, RoundingBase: d.RoundingBase,
		Dominance:           disclosure.Dominance{N: d.Dominance.N, K: d.Dominance.K},
		AttributeDisclosure: d.Attribute}
	if d.Perturbation.Enabled {
		f, err := os.Open(filepath.Join(n.BundleDir, d.Perturbation.Table))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		pt, err := ptable.Parse(f, d.Perturbation.Table)
		if err == nil {
			err = pt.Validate(d.MinCellCount, d.RoundingBase)
		}
		if err != nil {
			t.Fatal(err)
		}
		th.Perturbation = pt
	}
	return th
}

// expectStatins computes the statins-chd table of the patients of the
// practices in answered, and applies disclosure control to it.
func expectStatins(t *testing.T, n *coordinatortest.Network, ps []coordinatortest.Patient, answered ...string) *disclosure.Released {
	t.Helper()
	def, _ := n.Catalog.Get("statins-chd")
	type agg struct {
		patients, onStatin, sum, top int64
		patientsKey, onStatinKey     uint64
	}
	th := thresholds(t, n)
	cells := map[[2]string]*agg{}
	for _, p := range ps {
		if !slices.Contains(answered, p.Practice) {
			continue
		}
		k := [2]string{coordinatortest.AgeBand(def, p.Age), p.Sex}
		if cells[k] == nil {
			cells[k] = &agg{}
		}
		a := cells[k]
		a.patients++
		var rk uint64
		if th.Perturbation != nil {
			rk = coordinatortest.RecordKey(p.NHSNumber, th.Perturbation.KeyRange())
		}
		a.patientsKey += rk
		if p.StatinIssues > 0 {
			a.onStatin++
			a.onStatinKey += rk
		}
		a.sum += p.StatinIssues
		a.top = max(a.top, p.StatinIssues)
	}
	tab := disclosure.Table{Dims: []string{"age_band", "sex"}, Measures: []disclosure.Measure{
		{Name: "patients", Kind: disclosure.KindCount, GroupTotal: true},
		{Name: "on_statin", Kind: disclosure.KindCount},
		{Name: "statin_issues", Kind: disclosure.KindSum, Dominance: true},
	}}
	for k, a := range cells {
		// A sum's contributors are the patients who add something to it,
		// in aggregate mode as in linkage mode (catalog.Partial): here
		// those on a statin.
		var top []float64
		if a.onStatin > 0 {
			top = []float64{float64(a.top)}
		}
		tab.Cells = append(tab.Cells, disclosure.Cell{Key: k[:], Values: []disclosure.Input{
			{Count: a.patients, Key: mod(a.patientsKey, th)}, {Count: a.onStatin, Key: mod(a.onStatinKey, th)},
			{Sum: float64(a.sum), N: a.onStatin, NKey: mod(a.onStatinKey, th), TopContributions: top},
		}})
	}
	rel, err := disclosure.Apply(context.Background(), tab, th)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// expectT2DM computes the t2dm-emergency-admissions table: the patients
// registered at the answering practices, with their emergency admissions
// at the answering trusts.
func expectT2DM(t *testing.T, n *coordinatortest.Network, ps []coordinatortest.Patient, practices, trusts []string) *disclosure.Released {
	t.Helper()
	def, _ := n.Catalog.Get("t2dm-emergency-admissions")
	type agg struct {
		patients, admitted int64
		contributions      []float64
	}
	cells := map[[2]string]*agg{}
	for _, p := range ps {
		if !slices.Contains(practices, p.Practice) {
			continue
		}
		k := [2]string{coordinatortest.AgeBand(def, p.Age), p.Sex}
		if cells[k] == nil {
			cells[k] = &agg{}
		}
		a := cells[k]
		a.patients++
		var adm int64
		for tr, c := range p.Admissions {
			if slices.Contains(trusts, tr) {
				adm += c
			}
		}
		if adm > 0 {
			a.admitted++
			a.contributions = append(a.contributions, float64(adm))
		}
	}
	tab := disclosure.Table{Dims: []string{"age_band", "sex"}, Measures: []disclosure.Measure{
		{Name: "patients", Kind: disclosure.KindCount, GroupTotal: true},
		{Name: "admitted", Kind: disclosure.KindCount},
		{Name: "admissions", Kind: disclosure.KindSum, Dominance: true},
	}}
	for k, a := range cells {
		sort.Sort(sort.Reverse(sort.Float64Slice(a.contributions)))
		var sum float64
		for _, c := range a.contributions {
			sum += c
		}
		tab.Cells = append(tab.Cells, disclosure.Cell{Key: k[:], Values: []disclosure.Input{
			{Count: a.patients}, {Count: a.admitted},
			{Sum: sum, N: int64(len(a.contributions)), TopContributions: a.contributions},
		}})
	}
	rel, err := disclosure.Apply(context.Background(), tab, thresholds(t, n))
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// compareTables checks a fetched table against an expected release, row by
// row and value by value.
func compareTables(t *testing.T, got *release.Table, want *disclosure.Released) {
	t.Helper()
	if !slices.Equal(got.Dims, want.Dims) {
		t.Fatalf("dims %v, want %v", got.Dims, want.Dims)
	}
	type row struct {
		kind release.RowKind
		key  []string
		vals []disclosure.Value
	}
	var rows []row
	for _, c := range want.Cells {
		rows = append(rows, row{release.RowCell, c.Key, c.Values})
	}
	for _, m := range want.Margins {
		key := make([]string, len(want.Dims))
		key[slices.Index(want.Dims, m.Dim)] = m.Category
		rows = append(rows, row{release.RowMargin, key, m.Values})
	}
	if want.Total != nil {
		rows = append(rows, row{release.RowTotal, make([]string, len(want.Dims)), want.Total})
	}
	if len(got.Rows) != len(rows) {
		t.Fatalf("table has %d rows, want %d", len(got.Rows), len(rows))
	}
	released := 0
	for i, w := range rows {
		g := got.Rows[i]
		if g.Kind != w.kind || !slices.Equal(g.Key, w.key) {
			t.Fatalf("row %d is %s %v, want %s %v", i, g.Kind, g.Key, w.kind, w.key)
		}
		for j, wv := range w.vals {
			gv := g.Values[j]
			wantReleased := wv.Status == disclosure.StatusReleased
			if gv.Released != wantReleased || (wantReleased && gv.Value != wv.Value) || (!wantReleased && gv.Reason != wv.Reason.Code) {
				t.Errorf("row %d %v measure %s: got %+v, want %+v", i, w.key, got.Measures[j].Name, gv, wv)
			}
			if wantReleased {
				released++
			}
		}
	}
	if released == 0 {
		t.Errorf("nothing in the table was released; the test data is too thin to check anything")
	}
}

// site returns a run's status for one site.
func site(run *havenv1.Run, ods string) *havenv1.SiteStatus {
	for _, s := range run.GetCoverage().GetSites() {
		if s.GetSiteOds() == ods {
			return s
		}
	}
	return nil
}

// connect starts node doubles and stops them when the test ends.
func connect(t *testing.T, ctx context.Context, nodes ...*coordinatortest.NodeDouble) {
	t.Helper()
	for _, nd := range nodes {
		if err := nd.Connect(ctx); err != nil {
			t.Fatalf("connect %s: %v", nd.ODS, err)
		}
		t.Cleanup(nd.Close)
	}
}

// practices returns n practice codes.
func practices(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "A8100" + string(rune('1'+i))
	}
	return out
}

func gpNodes(n *coordinatortest.Network, ps []coordinatortest.Patient, codes ...string) []*coordinatortest.NodeDouble {
	var out []*coordinatortest.NodeDouble
	for _, ods := range codes {
		pop := int64(0)
		for _, p := range ps {
			if p.Practice == ods {
				pop++
			}
		}
		nd := n.Node(ods, cdm.KindGP, pop)
		out = append(out, nd)
	}
	slices.SortFunc(out, func(a, b *coordinatortest.NodeDouble) int { return cmp.Compare(a.ODS, b.ODS) })
	return out
}

// statinsAnswer makes a double answer statins-chd from ps.
func statinsAnswer(n *coordinatortest.Network, ps []coordinatortest.Patient, nd *coordinatortest.NodeDouble) {
	def, _ := n.Catalog.Get("statins-chd")
	nd.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
		return coordinatortest.StatinsCells(def, schema, ps, nd.ODS, int(task.GetRecordKeyRange())), nil
	}
}

// getRun returns a run as the coordinator holds it now.
func getRun(t *testing.T, ctx context.Context, conn *grpc.ClientConn, id string) *havenv1.Run {
	t.Helper()
	r, err := havenv1.NewCoordinatorClient(conn).GetRun(ctx, &havenv1.GetRunRequest{RunId: id})
	if err != nil {
		t.Fatalf("get run %s: %v", id, err)
	}
	return r.GetRun()
}

// mod reduces a sum of record keys to a cell key, or 0 without perturbation.
func mod(k uint64, th disclosure.Thresholds) uint64 {
	if th.Perturbation == nil {
		return 0
	}
	return k % uint64(th.Perturbation.KeyRange())
}

// statinsSites connects count practices to n, each answering statins-chd
// from its share of the patients seed makes (perPractice each).
func statinsSites(t *testing.T, ctx context.Context, n *coordinatortest.Network, seed uint64, count, perPractice int) ([]*coordinatortest.NodeDouble, []coordinatortest.Patient) {
	t.Helper()
	odsCodes := practices(count)
	ps := coordinatortest.Patients(seed, odsCodes, perPractice, nil)
	nodes := gpNodes(n, ps, odsCodes...)
	for _, nd := range nodes {
		statinsAnswer(n, ps, nd)
	}
	connect(t, ctx, nodes...)
	return nodes, ps
}

// releaseStatins submits statins-chd with its default parameters as user
// of QHM and waits for it to be released; it returns the final run.
func releaseStatins(t *testing.T, ctx context.Context, n *coordinatortest.Network, user string) *havenv1.Run {
	t.Helper()
	conn := analyst(n, user)
	run := submit(t, ctx, conn, "statins-chd", purpose, nil)
	evs := watch(t, ctx, conn, run.GetId())
	done := evs[len(evs)-1].GetRun()
	if done.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		t.Fatalf("run ended %s: %v %s; sites %v", done.GetState(), done.GetPolicyReasons(), done.GetError(), done.GetCoverage().GetSites())
	}
	return done
}
