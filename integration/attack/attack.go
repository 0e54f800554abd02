package attack

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/havenhealth/haven/demo"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// Submitter runs approved queries as one requester; demo.Network does,
// against a network of real processes.
type Submitter interface {
	Submit(ctx context.Context, q demo.Query) (demo.RunResult, error)
}

var _ Submitter = (*demo.Network)(nil)

// Request is one run the attacker asks for.
type Request struct {
	IndexDate string
	MinAge    int
}

func (r Request) params() map[string]string {
	return map[string]string{"index_date": r.IndexDate, "min_age": strconv.Itoa(r.MinAge)}
}

// DateSweep asks for days consecutive index dates from from, at one
// min_age.
func DateSweep(from time.Time, days, minAge int) []Request {
	var out []Request
	for i := range days {
		out = append(out, Request{IndexDate: from.AddDate(0, 0, i).Format(time.DateOnly), MinAge: minAge})
	}
	return out
}

// MonthSweep asks for months consecutive month starts from the month of
// from, at one min_age: every index date a month_start grid allows.
func MonthSweep(from time.Time, months, minAge int) []Request {
	first := time.Date(from.Year(), from.Month(), 1, 0, 0, 0, 0, time.UTC)
	var out []Request
	for i := range months {
		out = append(out, Request{IndexDate: first.AddDate(0, i, 0).Format(time.DateOnly), MinAge: minAge})
	}
	return out
}

// AgeSet asks for each of ages at one index date.
func AgeSet(date string, ages ...int) []Request {
	var out []Request
	for _, a := range ages {
		out = append(out, Request{IndexDate: date, MinAge: a})
	}
	return out
}

// AgeSweep asks for every min_age from lo to hi at one index date.
func AgeSweep(date string, lo, hi int) []Request {
	var out []Request
	for a := lo; a <= hi; a++ {
		out = append(out, Request{IndexDate: date, MinAge: a})
	}
	return out
}

// Runner runs an attack's requests and reads what is released.
type Runner struct {
	// Sub submits the runs; Purpose is the purpose stated for each.
	Sub     Submitter
	Purpose string
	// Rules reads the rules a released table was made under from what it
	// states; RoundingOf when nil. A board's perturbation table plugs in
	// here.
	Rules func(release.Meta) (Rules, error)
	// Log, if set, is told of each refusal.
	Log func(format string, args ...any)
	// OnRelease, if set, is given each table released, repeats included.
	OnRelease func(Request, *release.Table)
	// OnRefuse, if set, is given each request refused and the codes of
	// why: the policy's reason codes, or the gRPC code of a submission
	// the coordinator refused outright.
	OnRefuse func(req Request, codes []string)
}

// Run asks for every request in turn (a request seen before is a repeat:
// it is asked again and its table compared with the first) and reads
// each released table into a. A request refused (by policy, or as an
// invalid parameter) is counted and the attack moves on; any other
// failure ends it.
func (r *Runner) Run(ctx context.Context, a *Attack, reqs []Request) error {
	rulesFor := r.Rules
	if rulesFor == nil {
		rulesFor = func(m release.Meta) (Rules, error) { return RoundingOf(m) }
	}
	first := map[Request]*release.Table{}
	for _, req := range reqs {
		q := demo.Query{Definition: a.Model.Definition(), Parameters: req.params(), Purpose: r.Purpose}
		res, err := r.Sub.Submit(ctx, q)
		if st, ok := status.FromError(err); ok && err != nil && refusal(st.Code()) {
			r.refused(a, req, []string{st.Code().String()})
			r.log("%v refused: %s", req, st.Message())
			continue
		}
		if err != nil {
			return fmt.Errorf("request %v: %w", req, err)
		}
		switch res.Run.GetState() {
		case havenv1.RunState_RUN_STATE_RELEASED:
		case havenv1.RunState_RUN_STATE_REFUSED:
			var why, codes []string
			for _, rs := range res.Run.GetPolicyReasons() {
				why = append(why, rs.GetCode()+": "+rs.GetMessage())
				codes = append(codes, rs.GetCode())
			}
			r.refused(a, req, codes)
			r.log("%v refused: %v", req, why)
			continue
		default:
			return fmt.Errorf("request %v: run %s ended %s: %s", req, res.Run.GetId(), res.Run.GetState(), res.Run.GetError())
		}
		if res.Table == nil {
			return fmt.Errorf("request %v: run %s released no table", req, res.Run.GetId())
		}
		if r.OnRelease != nil {
			r.OnRelease(req, res.Table)
		}
		if prev, ok := first[req]; ok {
			a.Repeats++
			if sameValues(prev, res.Table) {
				continue // nothing new to read
			}
			a.RepeatsDiffering++
		} else {
			first[req] = res.Table
		}
		rules, err := rulesFor(res.Table.Meta)
		if err != nil {
			return err
		}
		if err := a.Read(rules, req, res.Table); err != nil {
			return err
		}
	}
	return nil
}

// Read reads a table released for req, under rules, into the attack: it
// is how a table is read again with other rules.
func (a *Attack) Read(rules Rules, req Request, tab *release.Table) error {
	obs, err := a.Model.Observe(a.Sys, rules, req.params(), tab)
	if err != nil {
		return err
	}
	a.observe(rules, obs)
	return nil
}

// refused counts a refusal of req, once in all and once under each of
// its codes.
func (r *Runner) refused(a *Attack, req Request, codes []string) {
	a.Refused++
	if a.RefusedBy == nil {
		a.RefusedBy = map[string]int{}
	}
	for _, c := range slices.Compact(slices.Sorted(slices.Values(codes))) {
		a.RefusedBy[c]++
	}
	if r.OnRefuse != nil {
		r.OnRefuse(req, codes)
	}
}

func (r *Runner) log(format string, args ...any) {
	if r.Log != nil {
		r.Log(format, args...)
	}
}

// refusal reports whether a submission's error is the coordinator saying
// no to the request, rather than something broken.
func refusal(c codes.Code) bool {
	switch c {
	case codes.InvalidArgument, codes.PermissionDenied, codes.ResourceExhausted, codes.FailedPrecondition, codes.OutOfRange:
		return true
	}
	return false
}

// sameValues reports whether two tables release the same rows and
// values.
func sameValues(x, y *release.Table) bool {
	if !slices.Equal(x.Dims, y.Dims) || len(x.Rows) != len(y.Rows) {
		return false
	}
	for i := range x.Rows {
		p, q := x.Rows[i], y.Rows[i]
		if p.Kind != q.Kind || p.MarginDim != q.MarginDim || !slices.Equal(p.Key, q.Key) || !slices.Equal(p.Values, q.Values) {
			return false
		}
	}
	return true
}

// Definition is the definition the model is for.
func (p *Prevalence) Definition() string { return DefinitionID }

// Dates are the index dates the attack has tables for, in order.
func (a *Attack) Dates() []string {
	set := map[string]bool{}
	for _, o := range a.Obs {
		set[o.Params["index_date"]] = true
	}
	return slices.Sorted(maps.Keys(set))
}
