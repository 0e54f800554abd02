package coordinator_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/config"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/coordinator/sitesim"
	"github.com/havenhealth/haven/coordinator/store"
	"github.com/havenhealth/haven/internal/arrowsafe/arrowsafetest"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

const purpose = "service_evaluation"

// An aggregate run through the whole service: three practices answer with
// cells, the coordinator adds them, controls disclosure and releases a
// table equal to one computed directly from the patients. The run and its
// table survive a restart.
func TestAggregateRun(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{})
	odsCodes := practices(3)
	ps := coordinatortest.Patients(1, odsCodes, 150, nil)
	nodes := gpNodes(n, ps, odsCodes...)
	for _, nd := range nodes {
		statinsAnswer(n, ps, nd)
	}
	connect(t, ctx, nodes...)
	conn := analyst(n, "ana")

	run := submit(t, ctx, conn, "statins-chd", purpose, map[string]*havenv1.ParameterValue{
		"index_date": dateParam(coordinatortest.IndexDate), "lookback_days": intParam(365)})
	if run.GetState() != havenv1.RunState_RUN_STATE_RUNNING {
		t.Fatalf("submitted run is %s (%v %s), want RUNNING", run.GetState(), run.GetPolicyReasons(), run.GetError())
	}
	evs := watch(t, ctx, conn, run.GetId())
	checkEvents(t, evs)
	done := evs[len(evs)-1].GetRun()
	if done.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		t.Fatalf("run ended %s: %v %s", done.GetState(), done.GetPolicyReasons(), done.GetError())
	}
	cov := done.GetCoverage()
	var pop int64
	for _, nd := range nodes {
		pop += nd.Population
	}
	if cov.GetSitesExpected() != 3 || cov.GetSitesAnswered() != 3 || cov.GetPopulationExpected() != pop || cov.GetPopulationAnswered() != pop {
		t.Errorf("coverage %v, want 3 of 3 sites and %d of %d people", cov, pop, pop)
	}
	if done.GetRequester().GetId() != "ana" || done.GetRequester().GetOrg() != "QHM" {
		t.Errorf("requester %v, want ana of QHM from the certificate", done.GetRequester())
	}

	// What each node was asked.
	def, _ := n.Catalog.Get("statins-chd")
	schema, _ := def.Plan().Schema(cdm.KindGP)
	taskIDs := map[string]bool{}
	for _, nd := range nodes {
		tasks := nd.Tasks()
		if len(tasks) != 1 {
			t.Fatalf("%s got %d tasks, want 1", nd.ODS, len(tasks))
		}
		task := tasks[0]
		var fields []string
		for _, f := range schema.Fields() {
			fields = append(fields, f.Name)
		}
		switch {
		case task.GetRunId() != run.GetId(), task.GetDefinitionHash() != def.Hash(),
			task.GetMode() != havenv1.PlanMode_PLAN_MODE_AGGREGATE, task.GetSiteKind() != havenv1.SiteKind_SITE_KIND_GP,
			!slices.Equal(task.GetOutputFields(), fields), task.GetLimits().GetMaxRows() <= 0,
			task.GetParameters()["lookback_days"].GetIntValue() != 365, task.GetRequesterOrg() != "QHM",
			task.GetPurpose() != purpose, task.GetDeadline() == nil:
			t.Errorf("%s was sent %v", nd.ODS, task)
		}
		taskIDs[task.GetTaskId()] = true
		s := site(done, nd.ODS)
		if s.GetState() != havenv1.SiteState_SITE_STATE_DONE || s.GetRows() == 0 || s.GetBytes() == 0 {
			t.Errorf("site %s: %v", nd.ODS, s)
		}
		rc := nd.Receipts()
		if len(rc) != 1 || rc[0].GetRows() != s.GetRows() || rc[0].GetBytes() != s.GetBytes() || rc[0].GetBatches() != 2 {
			t.Errorf("%s receipts %v, site status %v", nd.ODS, rc, s)
		}
	}
	if len(taskIDs) != 3 {
		t.Errorf("task ids are not unique: %v", taskIDs)
	}

	got := fetch(t, ctx, conn, run.GetId())
	compareTables(t, got, expectStatins(t, n, ps, odsCodes...))
	if got.Meta.RunID != run.GetId() || got.Meta.SitesAnswered != 3 || got.Meta.MinCellCount != 8 {
		t.Errorf("table metadata %+v", got.Meta)
	}
	if done.GetRelease().GetRows() != int64(len(got.Rows)) || done.GetRelease().GetCellsWithheld() == 0 {
		t.Errorf("release summary %v for %d rows", done.GetRelease(), len(got.Rows))
	}

	// A second run, refused by policy, is stored too.
	refused := submit(t, ctx, conn, "statins-chd", "commissioning", nil)
	if refused.GetState() != havenv1.RunState_RUN_STATE_REFUSED || !hasReason(refused, "purpose_not_permitted") {
		t.Fatalf("run for a purpose the approval lacks: %s %v", refused.GetState(), refused.GetPolicyReasons())
	}

	table := storedTable(t, n, run.GetId())
	n.Restart()
	for _, nd := range nodes {
		nd.Close()
	}
	conn = analyst(n, "ana")
	list, err := havenv1.NewCoordinatorClient(conn).ListRuns(ctx, &havenv1.ListRunsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]havenv1.RunState{}
	for _, r := range list.GetRuns() {
		states[r.GetId()] = r.GetState()
	}
	if states[run.GetId()] != havenv1.RunState_RUN_STATE_RELEASED || states[refused.GetId()] != havenv1.RunState_RUN_STATE_REFUSED {
		t.Errorf("after restart the runs are %v", states)
	}
	compareTables(t, fetch(t, ctx, conn, run.GetId()), expectStatins(t, n, ps, odsCodes...))
	if after := storedTable(t, n, run.GetId()); !bytes.Equal(after, table) {
		t.Errorf("stored table changed across the restart")
	}
	verifyAudit(t, n, run.GetId(), "submission", "decision", "dispatch", "node_response", "release")
}

func hasReason(run *havenv1.Run, code string) bool {
	for _, r := range run.GetPolicyReasons() {
		if r.GetCode() == code {
			return true
		}
	}
	return false
}

// storedTable reads a run's released table straight from the job store.
func storedTable(t *testing.T, n *coordinatortest.Network, runID string) []byte {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), n.Config.StorePath())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rel, err := st.GetRelease(context.Background(), runID)
	if err != nil {
		t.Fatal(err)
	}
	return rel.Table
}

// verifyAudit checks the audit chain and that the run has entries of
// every kind named.
func verifyAudit(t *testing.T, n *coordinatortest.Network, runID string, kinds ...string) {
	t.Helper()
	f, err := os.Open(n.Config.AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	if _, err := audit.Scan(f, func(e audit.Entry) {
		if e.RunID == runID {
			seen[string(e.Kind)] = true
		}
	}); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	for _, k := range kinds {
		if !seen[k] {
			t.Errorf("audit has no %s entry for run %s (has %v)", k, runID, seen)
		}
	}
}

// A linkage run: practices send their population under the run pseudonym,
// trusts send admission counts for the patients they admitted, and the
// coordinator links them. Afterwards no NHS number, birth date or
// pseudonym is anywhere in the coordinator's files or logs.
func TestLinkageRun(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{})
	gps := practices(2)
	trusts := []string{"RXA", "RXB"}
	ps := coordinatortest.Patients(2, gps, 200, trusts)
	secret := []byte("network linkage secret held by the key custodian")
	def, _ := n.Catalog.Get("t2dm-emergency-admissions")
	nodes := gpNodes(n, ps, gps...)
	for _, nd := range nodes {
		nd.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
			return coordinatortest.T2DMPractice(def, schema, ps, nd.ODS, task.GetRunId(), secret), nil
		}
	}
	for i, ods := range trusts {
		nd := n.Node(ods, cdm.KindTrust, 50000)
		nd.Activity = int64(1000 * (i + 1))
		nd.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
			return coordinatortest.T2DMTrust(schema, ps, ods, task.GetRunId(), secret), nil
		}
		nodes = append(nodes, nd)
	}
	connect(t, ctx, nodes...)
	conn := analyst(n, "lin")

	run := submit(t, ctx, conn, "t2dm-emergency-admissions", purpose, map[string]*havenv1.ParameterValue{
		"index_date": dateParam(coordinatortest.IndexDate)})
	if run.GetMode() != havenv1.PlanMode_PLAN_MODE_LINKAGE || run.GetParameters()["followup_days"].GetIntValue() != 365 {
		t.Errorf("run %v: want linkage mode and the default follow-up filled in", run)
	}
	evs := watch(t, ctx, conn, run.GetId())
	checkEvents(t, evs)
	done := evs[len(evs)-1].GetRun()
	if done.GetState() != havenv1.RunState_RUN_STATE_RELEASED || done.GetCoverage().GetSitesAnswered() != 4 {
		t.Fatalf("run ended %s with coverage %v: %v %s", done.GetState(), done.GetCoverage(), done.GetPolicyReasons(), done.GetError())
	}
	// Population is counted where the plan evaluates it (the practices'
	// lists); the trusts' catchments are the same people again.
	var gpPop int64
	for _, nd := range nodes[:2] {
		gpPop += nd.Population
	}
	if cov := done.GetCoverage(); cov.GetPopulationExpected() != gpPop || cov.GetPopulationAnswered() != gpPop {
		t.Errorf("linkage coverage population %d/%d, want the practices' %d", cov.GetPopulationAnswered(), cov.GetPopulationExpected(), gpPop)
	}
	// Trusts are counted on their own, with the activity they hold.
	if cov := done.GetCoverage(); cov.GetTrustsExpected() != 2 || cov.GetTrustsAnswered() != 2 ||
		cov.GetActivityExpected() != 3000 || cov.GetActivityAnswered() != 3000 {
		t.Errorf("linkage coverage trusts %d/%d, activity %d/%d; want 2/2 and 3000/3000", cov.GetTrustsAnswered(),
			cov.GetTrustsExpected(), cov.GetActivityAnswered(), cov.GetActivityExpected())
	}
	for _, nd := range nodes[2:] {
		if k := nd.Tasks()[0].GetSiteKind(); k != havenv1.SiteKind_SITE_KIND_TRUST {
			t.Errorf("trust %s was sent a %s task", nd.ODS, k)
		}
	}
	compareTables(t, fetch(t, ctx, conn, run.GetId()), expectT2DM(t, n, ps, gps, trusts))

	// The run is over; nothing identifying may be left behind.
	var needles [][]byte
	for _, p := range ps {
		pseudo := coordinatortest.Pseudonym(secret, run.GetId(), p.NHSNumber)
		needles = append(needles, []byte(p.NHSNumber), []byte(p.BirthDate), pseudo, []byte(hex.EncodeToString(pseudo)))
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	haystacks := map[string][]byte{"coordinator log": []byte(n.Logs.String())}
	err := filepath.WalkDir(n.Config.DataDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		haystacks[p] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(haystacks) < 3 {
		t.Fatalf("scanned only %v", haystacks)
	}
	for name, hay := range haystacks {
		for _, needle := range needles {
			if bytes.Contains(hay, needle) {
				t.Fatalf("%s holds a patient identifier (%q…)", name, needle[:4])
			}
		}
	}
}

// Uploads that are malformed, too big or for the wrong schema are refused
// with a clear error and leave the run untouched: the site's good upload
// afterwards gives exactly the right table.
func TestBadUploadsLeaveTheRunIntact(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{MaxRows: 200, MaxBytes: 256 << 10, MaxBatchBytes: 64 << 10})
	odsCodes := practices(2)
	ps := coordinatortest.Patients(3, odsCodes, 120, nil)
	nodes := gpNodes(n, ps, odsCodes...)
	for _, nd := range nodes {
		statinsAnswer(n, ps, nd)
	}
	type attempt struct {
		name     string
		send     func(context.Context, *grpc.ClientConn, *havenv1.Task, *arrow.Schema) error
		code     codes.Code
		contains string
	}
	upload := func(schema *arrow.Schema, recs ...arrow.Record) func(context.Context, *grpc.ClientConn, *havenv1.Task, *arrow.Schema) error {
		return func(ctx context.Context, conn *grpc.ClientConn, task *havenv1.Task, _ *arrow.Schema) error {
			_, _, err := sitesim.Upload(ctx, conn, task.GetTaskId(), schema, recs)
			return err
		}
	}
	def, _ := n.Catalog.Get("statins-chd")
	gpSchema, _ := def.Plan().Schema(cdm.KindGP)
	wrongSchema := arrow.NewSchema(append(slices.Clone(gpSchema.Fields()[:6]),
		arrow.Field{Name: "statin_issues__top", Type: arrow.PrimitiveTypes.Float64, Nullable: true}), nil)
	tooMany := cellRecord(gpSchema, 201, 1, "F")
	tooWide := cellRecord(gpSchema, 100, 2000, "M")
	// A faulty site puts an NHS number where the sex goes.
	const leaked = "9434765919"
	badSex := cellRecord(gpSchema, 1, 1, leaked)
	attempts := []attempt{
		{"garbage IPC header", func(ctx context.Context, conn *grpc.ClientConn, task *havenv1.Task, schema *arrow.Schema) error {
			return sitesim.SendRaw(ctx, conn, append(schemaMessages(t, schema, task.GetTaskId()),
				&flight.FlightData{DataHeader: []byte("this is not a flatbuffer at all, not even close"), DataBody: []byte{1, 2, 3}}))
		}, codes.InvalidArgument, "malformed"},
		{"wrong schema", upload(wrongSchema, cellRecord(wrongSchema, 1, 1, "F")), codes.InvalidArgument, "statin_issues__top"},
		{"too many rows", upload(gpSchema, tooMany), codes.ResourceExhausted, "limit of 200 rows"},
		{"batch too big", upload(gpSchema, tooWide), codes.ResourceExhausted, "per batch"},
		{"value outside the vocabulary", upload(gpSchema, badSex), codes.InvalidArgument, "sex"},
		// Crafted Arrow: lengths that would have the coordinator allocate
		// what it cannot, or read past what was sent.
		{"lying buffer length", crafted(t, func(m []*flight.FlightData) []*flight.FlightData {
			m[1].DataHeader = arrowsafetest.SetBuffer(t, m[1].DataHeader, 1, 0, 240<<30)
			return m
		}), codes.InvalidArgument, "runs past the body"},
		{"lying field count", crafted(t, func(m []*flight.FlightData) []*flight.FlightData {
			m[0].DataHeader = arrowsafetest.SetFieldCount(t, m[0].DataHeader, 1<<30)
			return m
		}), codes.InvalidArgument, "vector of 1073741824 elements"},
		{"lying null count", crafted(t, func(m []*flight.FlightData) []*flight.FlightData {
			m[1].DataHeader = arrowsafetest.SetNode(t, m[1].DataHeader, 0, 3, 2)
			return m
		}), codes.InvalidArgument, "validity bitmap of 0 bytes for 3 rows"},
		{"truncated body", crafted(t, func(m []*flight.FlightData) []*flight.FlightData {
			m[1].DataBody = m[1].DataBody[:len(m[1].DataBody)-8]
			return m
		}), codes.InvalidArgument, "the metadata says"},
		{"dictionary batch", crafted(t, func(m []*flight.FlightData) []*flight.FlightData {
			meta, body := arrowsafetest.DictionaryBatch(t)
			return []*flight.FlightData{m[0], {DataHeader: meta, DataBody: body}, m[1]}
		}), codes.InvalidArgument, "DictionaryBatch message"},
	}
	var results []error
	target := nodes[0]
	target.BeforeUpload = func(ctx context.Context, conn *grpc.ClientConn, task *havenv1.Task, schema *arrow.Schema) {
		for _, a := range attempts {
			results = append(results, a.send(ctx, conn, task, schema))
		}
	}
	connect(t, ctx, nodes...)
	conn := analyst(n, "bob")
	run := submit(t, ctx, conn, "statins-chd", purpose, nil)
	evs := watch(t, ctx, conn, run.GetId())
	done := evs[len(evs)-1].GetRun()
	if done.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		t.Fatalf("run ended %s: %s", done.GetState(), done.GetError())
	}
	for i, a := range attempts {
		err := results[i]
		if status.Code(err) != a.code || !strings.Contains(status.Convert(err).Message(), a.contains) {
			t.Errorf("%s: got %v, want %s mentioning %q", a.name, err, a.code, a.contains)
		}
	}
	compareTables(t, fetch(t, ctx, conn, run.GetId()), expectStatins(t, n, ps, odsCodes...))
	// The site is told what it sent; the coordinator keeps no copy.
	if !strings.Contains(results[4].Error(), leaked) {
		t.Errorf("the site is not told which value was wrong: %v", results[4])
	}
	auditLog, err := os.ReadFile(n.Config.AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(n.Logs.String(), leaked) || bytes.Contains(auditLog, []byte(leaked)) {
		t.Errorf("a value from a rejected upload reached the log or the audit")
	}
	if !bytes.Contains(auditLog, []byte("upload_rejected")) {
		t.Errorf("rejected uploads are not audited")
	}
	if s := site(done, target.ODS); s.GetRows() != target.Receipts()[0].GetRows() {
		t.Errorf("site %v counts rows other than the good upload's %v", s, target.Receipts())
	}
	for _, r := range []arrow.Record{tooMany, tooWide, badSex} {
		r.Release()
	}
}

// cellRecord is a statins-chd cell batch of rows identical cells, with
// band labels padded to width bytes.
func cellRecord(schema *arrow.Schema, rows, width int, sex string) arrow.Record {
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for range rows {
		for f, field := range schema.Fields() {
			switch fb := b.Field(f).(type) {
			case *array.StringBuilder:
				if field.Name == "sex" {
					fb.Append(sex)
				} else {
					fb.Append("18-49" + strings.Repeat(" ", max(0, width-5)))
				}
			case *array.Int64Builder:
				fb.Append(1)
			case *array.Float64Builder:
				fb.Append(1)
			}
		}
	}
	return b.NewRecord()
}

// schemaMessages returns the Flight messages of an upload: the descriptor
// and the schema, then a message for each of recs.
func schemaMessages(t *testing.T, schema *arrow.Schema, taskID string, recs ...arrow.Record) []*flight.FlightData {
	t.Helper()
	var msgs []*flight.FlightData
	w := flight.NewRecordWriter(collect{&msgs}, ipc.WithSchema(schema))
	w.SetFlightDescriptor(havenv1.TaskDescriptor(taskID))
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return msgs
}

// crafted sends, for a task, the messages of an upload of three good
// cells (the schema message, then one batch) as patch changes them.
func crafted(t *testing.T, patch func([]*flight.FlightData) []*flight.FlightData) func(context.Context, *grpc.ClientConn, *havenv1.Task, *arrow.Schema) error {
	return func(ctx context.Context, conn *grpc.ClientConn, task *havenv1.Task, schema *arrow.Schema) error {
		rec := cellRecord(schema, 3, 1, "F")
		defer rec.Release()
		return sitesim.SendRaw(ctx, conn, patch(schemaMessages(t, schema, task.GetTaskId(), rec)))
	}
}

type collect struct{ msgs *[]*flight.FlightData }

func (c collect) Send(fd *flight.FlightData) error {
	cp := &flight.FlightData{FlightDescriptor: fd.FlightDescriptor, DataHeader: bytes.Clone(fd.DataHeader),
		DataBody: bytes.Clone(fd.DataBody), AppMetadata: bytes.Clone(fd.AppMetadata)}
	*c.msgs = append(*c.msgs, cp)
	return nil
}

// A DoPut naming a task the node was not given is refused before anything
// is read: an unknown task, another site's task, a malformed descriptor,
// and an upload from a user.
func TestForgedUploadsRefused(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{})
	victim := n.Node("A81001", cdm.KindGP, 100)
	victim.Silent = true
	connect(t, ctx, victim)
	conn := analyst(n, "eve")
	run := submit(t, ctx, conn, "statins-chd", purpose, nil)
	if err := victim.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool { return len(nd.Tasks()) == 1 }); err != nil {
		t.Fatal(err)
	}
	taskID := victim.Tasks()[0].GetTaskId()
	def, _ := n.Catalog.Get("statins-chd")
	schema, _ := def.Plan().Schema(cdm.KindGP)
	rec := cellRecord(schema, 1, 1, "F")
	defer rec.Release()

	cert, key := n.NodeCert("B82005")
	intruder := n.Dial(cert, key)
	ucert, ukey := n.UserCert("mallory", "QHM", "analyst")
	user := n.Dial(ucert, ukey)
	for _, tc := range []struct {
		name     string
		conn     *grpc.ClientConn
		taskID   string
		code     codes.Code
		contains string
	}{
		{"unknown task", intruder, "task-NOTAREALTASKID", codes.NotFound, "no run in progress has task"},
		{"another site's task", intruder, taskID, codes.PermissionDenied, "was not issued to site B82005"},
		{"bad descriptor", intruder, "../etc/passwd", codes.InvalidArgument, "task descriptor"},
		{"a user", user, taskID, codes.PermissionDenied, "for nodes"},
	} {
		_, _, err := sitesim.Upload(ctx, tc.conn, tc.taskID, schema, []arrow.Record{rec})
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.contains) {
			t.Errorf("%s: got %v, want %s mentioning %q", tc.name, err, tc.code, tc.contains)
		}
	}
	got, err := havenv1.NewCoordinatorClient(conn).GetRun(ctx, &havenv1.GetRunRequest{RunId: run.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if s := site(got.GetRun(), "A81001"); s.GetRows() != 0 || got.GetRun().GetState() != havenv1.RunState_RUN_STATE_RUNNING {
		t.Errorf("after forged uploads the run is %s with site %v", got.GetRun().GetState(), s)
	}
}

// A node is the site its certificate names: a Register for another site is
// rejected, as is a site that is not a member, and a user cannot open a
// node link.
func TestNodeIdentity(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{Sites: []config.Site{{ODS: "A81001", Kind: cdm.KindGP, Population: 100}}})
	impostor := n.Node("A81001", cdm.KindGP, 100)
	impostor.RegisterAs = "A81002"
	err := impostor.Connect(ctx)
	rej, ok := err.(*coordinatortest.RejectedError)
	if !ok || rej.Rejected.GetCode() != havenv1.RejectCode_REJECT_CODE_IDENTITY_MISMATCH ||
		!strings.Contains(rej.Rejected.GetMessage(), `certificate names site "A81001", Register says "A81002"`) {
		t.Errorf("Register naming another site: %v", err)
	}
	stranger := n.Node("Y99999", cdm.KindGP, 100)
	if err := stranger.Connect(ctx); err == nil || !strings.Contains(err.Error(), "UNKNOWN_SITE") {
		t.Errorf("a site outside the network: %v", err)
	}
	wrongKind := n.Node("A81001", cdm.KindTrust, 100)
	if err := wrongKind.Connect(ctx); err == nil || !strings.Contains(err.Error(), "is a gp site") {
		t.Errorf("a practice claiming to be a trust: %v", err)
	}
	member := n.Node("A81001", cdm.KindGP, 100)
	connect(t, ctx, member)
	if member.Registered().GetSessionId() == "" || member.Registered().GetHeartbeatInterval().AsDuration() <= 0 {
		t.Errorf("Registered %v", member.Registered())
	}

	stream, err := havenv1.NewNodeLinkClient(analyst(n, "ana")).Connect(ctx)
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("a user opening a node link: %v", err)
	}
	log := n.Logs.String()
	if !strings.Contains(log, "IDENTITY_MISMATCH") {
		t.Errorf("the rejection is not logged")
	}
	// The connection is audited just after Registered is sent, so wait
	// for the entry rather than race it.
	var f []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		f, err = os.ReadFile(n.Config.AuditPath())
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(f), `"event":"rejected"`) && strings.Contains(string(f), `"event":"connected"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit log lacks the node entries:\n%s", f)
		}
	}
}

// A linkage run whose every practice answered but one trust did not:
// the population is whole, yet the trust's hospital activity is missing
// for everyone, so the reference haven/disclose refuses the release,
// naming the trust and its share of the trusts' activity.
func TestMissingTrustRefused(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{})
	gps := practices(2)
	trusts := []string{"RXA", "RXB"}
	ps := coordinatortest.Patients(3, gps, 200, trusts)
	secret := []byte("network linkage secret held by the key custodian")
	def, _ := n.Catalog.Get("t2dm-emergency-admissions")
	nodes := gpNodes(n, ps, gps...)
	for _, nd := range nodes {
		nd.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
			return coordinatortest.T2DMPractice(def, schema, ps, nd.ODS, task.GetRunId(), secret), nil
		}
	}
	for i, ods := range trusts {
		nd := n.Node(ods, cdm.KindTrust, 50000)
		nd.Activity = int64(1000 * (i + 1))
		nd.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
			return coordinatortest.T2DMTrust(schema, ps, ods, task.GetRunId(), secret), nil
		}
		nodes = append(nodes, nd)
	}
	missing := nodes[3]
	missing.Refuse = true
	missing.RefuseReasons = []*havenv1.PolicyReason{{Code: havenv1.ReasonSitePaused, Message: "this site is paused by its provider"}}
	connect(t, ctx, nodes...)
	conn := analyst(n, "lin")

	run := submit(t, ctx, conn, "t2dm-emergency-admissions", purpose, map[string]*havenv1.ParameterValue{
		"index_date": dateParam(coordinatortest.IndexDate)})
	evs := watch(t, ctx, conn, run.GetId())
	done := evs[len(evs)-1].GetRun()
	cov := done.GetCoverage()
	if cov.GetPopulationAnswered() != cov.GetPopulationExpected() || cov.GetTrustsExpected() != 2 || cov.GetTrustsAnswered() != 1 ||
		cov.GetActivityExpected() != 3000 || cov.GetActivityAnswered() != 1000 {
		t.Errorf("coverage %v; want the whole population, 1 of 2 trusts and 1000 of 3000 activity records", cov)
	}
	if done.GetState() != havenv1.RunState_RUN_STATE_REFUSED || len(done.GetPolicyReasons()) != 1 {
		t.Fatalf("run ended %s (%v); want refused for the missing trust", done.GetState(), done.GetPolicyReasons())
	}
	r := done.GetPolicyReasons()[0]
	if r.GetCode() != "trust_missing" || !strings.Contains(r.GetMessage(), "trust RXB did not answer (paused)") ||
		!strings.Contains(r.GetMessage(), "66.7% of the activity") {
		t.Errorf("reason %s: %s; want trust_missing naming RXB and its 66.7%% share", r.GetCode(), r.GetMessage())
	}
}
