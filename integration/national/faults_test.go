package national

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"google.golang.org/grpc"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/config"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/internal/testutil"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// faultMaxRows is the fault network's uploads.max_rows: far above any
// honest site's answer at the scales the fault run uses, so that only
// the oversized site passes it.
const faultMaxRows = 200_000

// faultRow is what the fault run saw.
type faultRow struct {
	patients                        int64
	silentGPs, silentTrusts         int
	malformed, oversized, abandoned string
	deadline                        time.Duration
	runs                            []faultResult
	peakRSS                         int64
}

// faultResult is one run of the fault network.
type faultResult struct {
	run     *havenv1.Run
	took    time.Duration
	states  map[havenv1.SiteState]int
	checked string
}

// faultRun runs statins-chd and t2dm-emergency-admissions at once over a
// national network at size where sites misbehave, and checks that each
// run still ends with the right coverage and the right answer:
//
//   - one site in twenty (practices and trusts) accepts its tasks and
//     never answers: it times out at the runs' deadline
//     (HAVEN_NATIONAL_FAULT_DEADLINE, default 3m);
//   - one practice first sends a malformed upload (a header that is not
//     Arrow), then its real one;
//   - one practice first starts an upload of its real answer and drops it
//     after the first batch, as a site whose connection fails mid-upload,
//     then uploads again;
//   - one practice answers the linkage run with more rows than
//     uploads.max_rows allows.
//
// The malformed and dropped uploads must not count, the sites' real ones
// must, once; the oversized site fails; the silent ones time out. A run
// released must hold the central answer over the sites that answered;
// one refused must be refused for the trusts missing.
func (nb *bench) faultRun(ctx context.Context, b *testing.B, size int64) *faultRow {
	b.Helper()
	fr := &faultRow{patients: size, deadline: testutil.EnvDuration(b, "HAVEN_NATIONAL_FAULT_DEADLINE", 3*time.Minute),
		malformed: "N00001", abandoned: "N00003", oversized: "N00005"}
	silent := func(k int) bool { return k%20 == 19 }
	var w *network
	configure := func(i int, s config.Site, nd *coordinatortest.NodeDouble) {
		k := i
		if s.Kind == cdm.KindTrust {
			k = i - nb.gps
		}
		switch {
		case silent(k):
			nd.Silent = true
			if s.Kind == cdm.KindGP {
				fr.silentGPs++
			} else {
				fr.silentTrusts++
			}
		case s.ODS == fr.malformed:
			nd.BeforeUpload = func(ctx context.Context, conn *grpc.ClientConn, task *havenv1.Task, _ *arrow.Schema) {
				_ = coordinatortest.SendRaw(ctx, conn, []*flight.FlightData{{
					FlightDescriptor: havenv1.TaskDescriptor(task.GetTaskId()), DataHeader: []byte("not an Arrow message")}})
			}
		case s.ODS == fr.abandoned:
			answer := nd.Answer
			nd.BeforeUpload = func(ctx context.Context, conn *grpc.ClientConn, task *havenv1.Task, schema *arrow.Schema) {
				recs, err := answer(task, schema)
				if err != nil {
					b.Errorf("%s: %v", s.ODS, err)
					return
				}
				abandonUpload(ctx, conn, task.GetTaskId(), schema, recs)
			}
		case s.ODS == fr.oversized:
			answer := nd.Answer
			nd.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
				if task.GetDefinitionId() == w.t2dm.ID {
					return oversized(schema, faultMaxRows+1), nil
				}
				return answer(task, schema)
			}
		}
	}
	w = nb.setUp(ctx, b, size, coordinatortest.Options{Deadline: fr.deadline, MaxRows: faultMaxRows}, nil, configure)
	defer w.stop(b)
	connectAll(b, ctx, w.nodes, nb.dials, 0)
	aggregate := start(b, ctx, w.n, "statins-chd", nil)
	linkage := start(b, ctx, w.n, "t2dm-emergency-admissions", map[string]*havenv1.ParameterValue{
		"index_date": {Value: &havenv1.ParameterValue_DateValue{DateValue: coordinatortest.IndexDate}}})
	for _, p := range []*pending{aggregate, linkage} {
		var res faultResult
		res.took, res.run = p.wait(b, ctx)
		res.checked = w.checkFaults(ctx, b, res.run, fr, silent)
		res.states = map[havenv1.SiteState]int{}
		for _, s := range res.run.GetCoverage().GetSites() {
			res.states[s.GetState()]++
		}
		fr.runs = append(fr.runs, res)
		fmt.Fprintf(os.Stderr, "national: fault run of %s ended %s after %s\n", res.run.GetDefinitionId(), res.run.GetState(), res.took.Round(time.Millisecond))
	}
	fr.peakRSS = peakRSS(b, w.coord.pid())
	return fr
}

// checkFaults checks one run of the fault network: every site's state is
// the one its fault calls for, the coverage counts exactly the sites that
// answered, and the run was released with the central answer over them
// or refused for the trusts missing. It says which.
func (w *network) checkFaults(ctx context.Context, b *testing.B, run *havenv1.Run, fr *faultRow, silent func(int) bool) string {
	b.Helper()
	what := run.GetDefinitionId()
	linkage := what == w.t2dm.ID
	answered := map[string]bool{}
	var gps, trusts int
	var wantPop int64
	for i, s := range w.sites {
		k := i
		if s.Kind == cdm.KindTrust {
			if !linkage {
				continue // an aggregate run asks only practices
			}
			k = i - len(w.pop.first) + 1
		}
		want := havenv1.SiteState_SITE_STATE_DONE
		switch {
		case silent(k):
			want = havenv1.SiteState_SITE_STATE_TIMED_OUT
		case s.ODS == fr.oversized && linkage:
			want = havenv1.SiteState_SITE_STATE_FAILED
		}
		if got := siteState(run, s.ODS); got != want {
			b.Errorf("%s: %s %s ended %s, want %s", what, s.Kind, s.ODS, got, want)
		}
		if want != havenv1.SiteState_SITE_STATE_DONE {
			continue
		}
		answered[s.ODS] = true
		if s.Kind == cdm.KindGP {
			gps++
			wantPop += s.Population
		} else {
			trusts++
		}
	}
	cov := run.GetCoverage()
	if got := cov.GetSitesAnswered() - cov.GetTrustsAnswered(); got != int32(gps) {
		b.Errorf("%s: %d practices answered, want %d", what, got, gps)
	}
	if got := cov.GetTrustsAnswered(); got != int32(trusts) {
		b.Errorf("%s: %d trusts answered, want %d", what, got, trusts)
	}
	if got := cov.GetPopulationAnswered(); got != wantPop {
		b.Errorf("%s: population answered %d, want %d", what, got, wantPop)
	}
	gp := func(p int) bool { return answered[w.sites[p].ODS] }
	switch run.GetState() {
	case havenv1.RunState_RUN_STATE_RELEASED:
		truth := w.statinsTruth(gp)
		if linkage {
			truth = w.t2dmTruth(gp, func(t int) bool { return answered[w.sites[len(w.pop.first)-1+t].ODS] })
		}
		w.check(ctx, b, run, truth, gps, trusts)
		return "released, the table equal to the central answer over the sites that answered"
	case havenv1.RunState_RUN_STATE_REFUSED:
		missing := 0
		for _, r := range run.GetPolicyReasons() {
			if r.GetCode() == "trust_missing" {
				missing++
			}
		}
		if !linkage || missing != fr.silentTrusts {
			b.Errorf("%s: refused for %v, want one trust_missing for each of the %d silent trusts", what, run.GetPolicyReasons(), fr.silentTrusts)
		}
		return fmt.Sprintf("refused by policy: trust_missing for each of the %d trusts that timed out", missing)
	default:
		b.Errorf("%s: ended %s: %v %s", what, run.GetState(), run.GetPolicyReasons(), run.GetError())
		return "ended " + run.GetState().String()
	}
}

// siteState is site ods's state in run.
func siteState(run *havenv1.Run, ods string) havenv1.SiteState {
	for _, s := range run.GetCoverage().GetSites() {
		if s.GetSiteOds() == ods {
			return s.GetState()
		}
	}
	return havenv1.SiteState_SITE_STATE_UNSPECIFIED
}

// abandonUpload starts task's upload of recs and drops it after the first
// batch, as a site whose connection fails mid-upload.
func abandonUpload(ctx context.Context, conn *grpc.ClientConn, taskID string, schema *arrow.Schema, recs []arrow.Record) {
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // resets the stream
	stream, err := flight.NewFlightServiceClient(conn).DoPut(ctx)
	if err != nil || len(recs) == 0 {
		return
	}
	fw := flight.NewRecordWriter(stream, ipc.WithSchema(schema))
	fw.SetFlightDescriptor(havenv1.TaskDescriptor(taskID))
	_ = fw.Write(recs[0])
}

// oversized is an answer of rows rows to schema's t2dm-emergency-admissions
// practice task, each a distinct patient.
func oversized(schema *arrow.Schema, rows int) []arrow.Record {
	w := newRecordWriter(schema)
	ps := w.b.Field(0).(*array.FixedSizeBinaryBuilder)
	var buf [catalog.PseudonymBytes]byte
	for id := range rows {
		pseudonym(buf[:], 1, 2, int64(id))
		ps.Append(buf[:])
		w.b.Field(1).(*array.StringBuilder).Append("18-27")
		w.b.Field(2).(*array.StringBuilder).Append("F")
		w.row()
	}
	return w.records()
}

// print writes what the fault run saw.
func (fr *faultRow) print() {
	fmt.Printf("\nFaults at %s patients: %d practices and %d trusts silent (deadline %s); %s sent a malformed upload first, "+
		"%s dropped an upload after its first batch, %s sent %d rows to the linkage run (max %d)\n",
		scaleName(fr.patients), fr.silentGPs, fr.silentTrusts, fr.deadline, fr.malformed, fr.abandoned, fr.oversized,
		faultMaxRows+1, faultMaxRows)
	for _, r := range fr.runs {
		var states []string
		for st, n := range r.states {
			states = append(states, fmt.Sprintf("%s %d", strings.TrimPrefix(st.String(), "SITE_STATE_"), n))
		}
		slices.Sort(states)
		cov := r.run.GetCoverage()
		fmt.Printf("  %s: %s after %s; sites %s; coverage %d of %d sites, %d of %d trusts, population %d of %d; %s\n",
			r.run.GetDefinitionId(), strings.TrimPrefix(r.run.GetState().String(), "RUN_STATE_"), r.took.Round(100*time.Millisecond),
			strings.Join(states, ", "), cov.GetSitesAnswered(), cov.GetSitesExpected(), cov.GetTrustsAnswered(), cov.GetTrustsExpected(),
			cov.GetPopulationAnswered(), cov.GetPopulationExpected(), r.checked)
	}
	fmt.Printf("  coordinator peak RSS %.0f MiB\n", mib(fr.peakRSS))
}
