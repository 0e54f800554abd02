package national

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"google.golang.org/grpc"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/sitesim"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// The sites of the fault run that misbehave other than by silence.
const (
	malformedSite = "N00001"
	abandonSite   = "N00003"
	oversizedSite = "N00005"
)

// FaultRow is what the fault run saw.
type FaultRow struct {
	Patients                int64
	SilentGPs, SilentTrusts int
	Deadline                time.Duration
	// MaxRows is the fault network's uploads.max_rows: twice the largest
	// honest answer and a thousand, so that only the oversized site
	// passes it, without sending so many rows that a loaded host takes
	// longer than the deadline to refuse them.
	MaxRows int64
	Runs    []FaultResult
	PeakRSS int64
}

// FaultResult is one run of the fault network.
type FaultResult struct {
	Run    *havenv1.Run
	Took   time.Duration
	States map[havenv1.SiteState]int
	// Checked says what was checked of the outcome.
	Checked string
}

// t2dmID is the linkage definition the fault run's oversized site
// answers with too many rows.
const t2dmID = "t2dm-emergency-admissions"

// silent reports whether practice or trust k is one of the silent ones:
// one in twenty.
func silent(k int) bool { return k%20 == 19 }

// faultRun runs statins-chd and t2dm-emergency-admissions at once over a
// national network of size patients where sites misbehave, and checks
// that each run still ends with the right coverage and the right answer:
//
//   - one site in twenty (practices and trusts) accepts its tasks and
//     never answers: it times out at the runs' deadline;
//   - one practice first sends a malformed upload (a header that is not
//     Arrow), then its real one;
//   - one practice first starts an upload of its real answer and drops it
//     after the first batch, as a site whose connection fails mid-upload,
//     then uploads again;
//   - one practice answers the linkage run with more rows than
//     uploads.max_rows allows.
//
// The malformed and dropped uploads must not count and the sites' real
// ones must, once; the oversized site fails; the silent ones time out. A
// run released must hold the central answer over the sites that
// answered; one refused must be refused for the trusts missing.
func (o *Options) faultRun(ctx context.Context, size int64) (fr *FaultRow, err error) {
	fr = &FaultRow{Patients: size, Deadline: o.FaultDeadline}
	pop := newPopulation(o.Seed, o.Practices, o.Trusts, size)
	var largest int64
	for p := range o.Practices {
		largest = max(largest, pop.listSize(p))
	}
	for t := range o.Trusts {
		largest = max(largest, pop.trustRowCount(t))
	}
	fr.MaxRows = 2*largest + 1000
	configure := func(s site, st *sitesim.Site) {
		switch {
		case silent(s.index):
			st.Silent = true
			if s.kind == cdm.KindGP {
				fr.SilentGPs++
			} else {
				fr.SilentTrusts++
			}
		case s.ods == malformedSite:
			st.BeforeUpload = func(ctx context.Context, conn *grpc.ClientConn, task *havenv1.Task, _ *arrow.Schema) {
				_ = sitesim.SendRaw(ctx, conn, []*flight.FlightData{{
					FlightDescriptor: havenv1.TaskDescriptor(task.GetTaskId()), DataHeader: []byte("not an Arrow message")}})
			}
		case s.ods == abandonSite:
			answer := st.Answer
			st.BeforeUpload = func(ctx context.Context, conn *grpc.ClientConn, task *havenv1.Task, schema *arrow.Schema) {
				if recs, err := answer(task, schema); err == nil {
					abandonUpload(ctx, conn, task.GetTaskId(), schema, recs)
				}
			}
		case s.ods == oversizedSite:
			answer := st.Answer
			st.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
				if task.GetDefinitionId() == t2dmID {
					return oversized(schema, int(fr.MaxRows)+1), nil
				}
				return answer(task, schema)
			}
		}
	}
	w, err := o.setUp(ctx, filepath.Join(o.Dir, "faults-"+ScaleName(size)), pop,
		netOptions{deadline: o.FaultDeadline, maxRows: fr.MaxRows, budget: o.Budget, limit: o.MemoryLimit, configure: configure})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			w.closeLinks()
			w.coord.kill()
		}
	}()
	if _, err := o.connectAll(ctx, w.nodes, 0); err != nil {
		return nil, err
	}
	c, err := w.client()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	aggregate, err := o.start(ctx, c, "statins-chd", nil)
	if err != nil {
		return nil, err
	}
	linkage, err := o.start(ctx, c, "t2dm-emergency-admissions", indexDate())
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, p := range []*pending{aggregate, linkage} {
		var res FaultResult
		if res.Took, res.Run, err = p.wait(ctx, c); err != nil {
			return nil, err
		}
		var problems []error
		res.Checked, problems = o.checkFaults(ctx, w, c, res.Run, fr)
		errs = append(errs, problems...)
		res.States = map[havenv1.SiteState]int{}
		for _, s := range res.Run.GetCoverage().GetSites() {
			res.States[s.GetState()]++
		}
		fr.Runs = append(fr.Runs, res)
		o.progress("fault run of %s ended %s after %s", res.Run.GetDefinitionId(), res.Run.GetState(), res.Took.Round(time.Millisecond))
	}
	if fr.PeakRSS, err = peakRSS(w.coord.pid()); err != nil {
		return nil, err
	}
	if err := errors.Join(errs...); err != nil {
		return fr, err
	}
	return fr, w.stop()
}

// checkFaults checks one run of the fault network: every site's state is
// the one its fault calls for, the coverage counts exactly the sites that
// answered, and the run was released with the central answer over them
// or refused for the trusts missing. It says which.
func (o *Options) checkFaults(ctx context.Context, w *network, c runClient, run *havenv1.Run, fr *FaultRow) (string, []error) {
	what := run.GetDefinitionId()
	linkage := what == w.t2dm.ID
	var errs []error
	answered := map[string]bool{}
	var gps, trusts int
	var wantPop int64
	for _, s := range w.sites {
		if s.kind == cdm.KindTrust && !linkage {
			continue // an aggregate run asks only practices
		}
		want := havenv1.SiteState_SITE_STATE_DONE
		switch {
		case silent(s.index):
			want = havenv1.SiteState_SITE_STATE_TIMED_OUT
		case s.ods == oversizedSite && linkage:
			want = havenv1.SiteState_SITE_STATE_FAILED
		}
		if got := siteState(run, s.ods); got != want {
			errs = append(errs, fmt.Errorf("%s: %s %s ended %s, want %s", what, s.kind, s.ods, got, want))
		}
		if want != havenv1.SiteState_SITE_STATE_DONE {
			continue
		}
		answered[s.ods] = true
		if s.kind == cdm.KindGP {
			gps++
			wantPop += s.population
		} else {
			trusts++
		}
	}
	cov := run.GetCoverage()
	if got := cov.GetSitesAnswered() - cov.GetTrustsAnswered(); got != int32(gps) {
		errs = append(errs, fmt.Errorf("%s: %d practices answered, want %d", what, got, gps))
	}
	if got := cov.GetTrustsAnswered(); got != int32(trusts) {
		errs = append(errs, fmt.Errorf("%s: %d trusts answered, want %d", what, got, trusts))
	}
	if got := cov.GetPopulationAnswered(); got != wantPop {
		errs = append(errs, fmt.Errorf("%s: population answered %d, want %d", what, got, wantPop))
	}
	gp := func(p int) bool { return answered[w.sites[p].ods] }
	switch run.GetState() {
	case havenv1.RunState_RUN_STATE_RELEASED:
		truth := w.pop.statinsTruth(w.statinBands, gp)
		if linkage {
			truth = w.pop.t2dmTruth(w.t2dmBands, gp, func(t int) bool { return answered[w.sites[o.Practices+t].ods] })
		}
		if err := o.checkRun(ctx, w, c, run, truth, gps, trusts); err != nil {
			errs = append(errs, err)
		}
		return "released, the table equal to the central answer over the sites that answered", errs
	case havenv1.RunState_RUN_STATE_REFUSED:
		missing := 0
		for _, r := range run.GetPolicyReasons() {
			if r.GetCode() == "trust_missing" {
				missing++
			}
		}
		if !linkage || missing != fr.SilentTrusts {
			errs = append(errs, fmt.Errorf("%s: refused for %v, want one trust_missing for each of the %d silent trusts",
				what, run.GetPolicyReasons(), fr.SilentTrusts))
		}
		return fmt.Sprintf("refused by policy: trust_missing for each of the %d trusts that timed out", missing), errs
	default:
		errs = append(errs, fmt.Errorf("%s: ended %s: %v %s", what, run.GetState(), run.GetPolicyReasons(), run.GetError()))
		return "ended " + run.GetState().String(), errs
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

// oversized is an answer of rows rows to a t2dm-emergency-admissions
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
func (fr *FaultRow) print(w io.Writer) {
	fmt.Fprintf(w, "\nFaults at %s patients: %d practices and %d trusts silent (deadline %s); %s sent a malformed upload first, "+
		"%s dropped an upload after its first batch, %s sent %d rows to the linkage run (max %d)\n",
		ScaleName(fr.Patients), fr.SilentGPs, fr.SilentTrusts, fr.Deadline, malformedSite, abandonSite, oversizedSite,
		fr.MaxRows+1, fr.MaxRows)
	for _, r := range fr.Runs {
		var states []string
		for st, n := range r.States {
			states = append(states, fmt.Sprintf("%s %d", strings.TrimPrefix(st.String(), "SITE_STATE_"), n))
		}
		slices.Sort(states)
		cov := r.Run.GetCoverage()
		fmt.Fprintf(w, "  %s: %s after %s; sites %s; coverage %d of %d sites, %d of %d trusts, population %d of %d; %s\n",
			r.Run.GetDefinitionId(), strings.TrimPrefix(r.Run.GetState().String(), "RUN_STATE_"), r.Took.Round(100*time.Millisecond),
			strings.Join(states, ", "), cov.GetSitesAnswered(), cov.GetSitesExpected(), cov.GetTrustsAnswered(), cov.GetTrustsExpected(),
			cov.GetPopulationAnswered(), cov.GetPopulationExpected(), r.Checked)
	}
	fmt.Fprintf(w, "  coordinator peak RSS %.0f MiB\n", mib(fr.PeakRSS))
}
