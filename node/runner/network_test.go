package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/node/audit"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/nodetest"
	"github.com/havenhealth/haven/node/optout"
	"github.com/havenhealth/haven/node/pseudonym"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// publishElsewhere puts nums on the node's network list as if another
// practice, "Z99999", had published them, with the node's own hasher.
func publishElsewhere(t *testing.T, e *env, nums ...string) {
	t.Helper()
	sec, _ := pseudonym.NewSecret(testSecret)
	h, err := pseudonym.NewOptOutHasher(sec)
	if err != nil {
		t.Fatal(err)
	}
	p := optout.Publish(h, optout.Of(nums...))
	cur := e.network.Current().Version()
	err = e.network.Apply(&havenv1.NetworkOptOuts{
		Base:    cur.Wire(),
		Version: &havenv1.NetworkOptOutVersion{Epoch: cur.Epoch, Seq: cur.Seq + 1},
		Sets: []*havenv1.PublisherOptOuts{{PublisherOds: "Z99999", Hashes: optout.HashList(p.Hashes), Digest: p.Digest,
			Seq: cur.Seq + 1, UpdatedAt: timestamppb.Now()}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// sendable returns the NHS numbers the site would send for task with no
// network list: in the unfiltered linkage result, on no other list.
func sendable(t *testing.T, e *env, task *havenv1.Task) []string {
	t.Helper()
	prog := e.compiled(t, task)
	var out []string
	for _, r := range nodetest.Rows(t, e.src.DB, prog.Result.SQL, prog.Result.Args...) {
		out = append(out, r[0].(string))
	}
	if slices.Contains(e.src.Tables, cdm.TableOptOut) {
		type1 := nodetest.Strings(t, e.src.DB, "SELECT nhs_number FROM opt_out WHERE kind = 'type1'")
		out = slices.DeleteFunc(out, func(n string) bool { return slices.Contains(type1, n) })
	}
	slices.Sort(out)
	return out
}

// A patient whose type 1 objection another practice published is left
// out here, at a practice and at a trust: bound into the SQL with the
// national list, not sent, counted as excluded, and the task's audit
// record and status name the list version it used.
func TestNetworkOptOutsLeftOut(t *testing.T) {
	for _, kind := range []string{"gp", "trust"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, envOptions{kind: kind})
			runID := "run-net-" + kind
			task := e.task(t, "t2dm-emergency-admissions", runID, nil)
			would := sendable(t, e, task)
			if len(would) < 3 {
				t.Fatalf("the site sends %d patients; the test needs 3", len(would))
			}
			objectors := would[:2]
			publishElsewhere(t, e, objectors...)
			version := e.network.Current().Version().String()

			prog := e.compiled(t, task)
			const marker = "list-marker"
			slot := slices.IndexFunc(e.compile(t, task, []string{marker}).Result.Args, func(a any) bool {
				l, ok := a.([]string)
				return ok && slices.Equal(l, []string{marker})
			})
			var bound []string
			e.src.Before = func(_ context.Context, q connector.Query) error {
				if q.SQL == prog.Result.SQL {
					bound, _ = q.Args[slot].Any().([]string)
				}
				return nil
			}
			d := done(t, e.run(t, task))
			for _, n := range objectors {
				if !slices.Contains(bound, n) {
					t.Error("a network objector held at the site was not bound into the SQL")
				}
			}

			sec, _ := pseudonym.NewSecret(testSecret)
			der, _ := pseudonym.NewDeriver(sec, runID)
			sent := map[string]bool{}
			u, _ := e.coord.Upload(task.GetTaskId())
			for _, rec := range u.Records {
				col := rec.Column(0).(*array.FixedSizeBinary)
				for i := range col.Len() {
					sent[string(col.Value(i))] = true
				}
			}
			for _, n := range would {
				p := der.Of(n)
				if want := !slices.Contains(objectors, n); sent[string(p[:])] != want {
					t.Errorf("patient sent = %v, want %v", sent[string(p[:])], want)
				}
			}
			if int(d.GetRows()) != len(would)-len(objectors) {
				t.Errorf("sent %d rows, want %d", d.GetRows(), len(would)-len(objectors))
			}

			// The audit record of the task names the list version.
			b, err := os.ReadFile(filepath.Join(e.auditDir, audit.FileName))
			if err != nil {
				t.Fatal(err)
			}
			var found bool
			for _, line := range bytes.Split(b, []byte("\n")) {
				var r audit.Record
				if json.Unmarshal(line, &r) == nil && r.Event == audit.EventDone && r.TaskID == task.GetTaskId() {
					found = r.NetworkOptOutVersion == version
				}
			}
			if !found {
				t.Errorf("no done record naming network list %s", version)
			}
			nodetest.Eventually(t, "status names the list version", func() bool {
				r := e.runner.Recent()
				return len(r) > 0 && r[0].NetworkOptOutVersion == version
			})
			assertNoIdentifiers(t, e)
		})
	}
}

// A node that never received the network list runs nothing.
func TestNoNetworkListNoTask(t *testing.T) {
	e := newEnv(t, envOptions{noNetwork: true})
	task := e.task(t, "t2dm-prevalence", "run-no-network", nil)
	o := e.run(t, task)
	if f := o.GetFailed(); f == nil || !strings.Contains(f.GetMessage(), "network type 1 opt-out list has not been received") {
		t.Fatalf("outcome %v, want failed for want of the network list", o)
	}
	if _, ok := e.coord.Upload(task.GetTaskId()); ok {
		t.Fatal("a node without the network list uploaded")
	}
}

// The check before upload catches a network objector the SQL let
// through, for linkage rows and aggregate members alike.
func TestNetworkOptOutCheckStopsLeak(t *testing.T) {
	for _, tc := range []struct{ name, def, statement string }{
		{"linkage rows", "t2dm-emergency-admissions", "result"},
		{"aggregate members", "t2dm-prevalence", "members"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			// A network objector with no data at this site, so the node
			// binds nothing for them: only the hashed check can stop them.
			held := siteNumbers(t, e, e.src.Tables)
			var stranger string
			for serial := uint32(900_000_001); stranger == ""; serial++ {
				if n, _, err := cdm.NHSNumberFromSerial(serial); err == nil && !held[n] && !slices.Contains(nodetest.NDOP(t, e.n), n) {
					stranger = n
				}
			}
			publishElsewhere(t, e, stranger)
			task := e.task(t, tc.def, "run-netleak-"+tc.def, nil)
			prog := e.compiled(t, task)
			target := prog.Result.SQL
			if tc.statement == "members" {
				// The aggregate's patients come in the last column of the
				// statement that counts them.
				target = prog.CheckedResult.SQL
			}
			leaked := false
			e.src.Rewrite = func(sql string, rows [][]any) [][]any {
				if sql != target || len(rows) == 0 {
					return rows
				}
				leaked = true
				if tc.statement == "members" {
					last := len(rows[0]) - 1
					rows[0][last] = append(slices.Clone(rows[0][last].([]any)), stranger)
					return rows
				}
				row := slices.Clone(rows[0])
				row[0] = stranger
				return append(rows, row)
			}
			o := e.run(t, task)
			if !leaked {
				t.Fatal("the rewrite never ran; the test proves nothing")
			}
			if f := o.GetFailed(); f == nil || !strings.Contains(f.GetMessage(), "1 opted-out patients") {
				t.Fatalf("outcome %v, want failed by the opt-out check", o)
			}
			if _, ok := e.coord.Upload(task.GetTaskId()); ok {
				t.Fatal("the result was uploaded despite the leak")
			}
		})
	}
}
